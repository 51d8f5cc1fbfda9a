//! Which tags a stored response carries: from the origin's tag headers, and, for an
//! unmodified WordPress, from what its pages say about themselves.
//!
//! WordPress labels every singular page with `Link: <…?p=ID>; rel=shortlink`, so the page is
//! tagged `post:ID` whatever its URL. Lists (home, archives, search, feeds, sitemaps, REST
//! collections, 404s) are tagged `list` plus a kind. Pages that show WordPress's latest-posts
//! or latest-comments blocks or widgets are tagged `wp:recent-posts` / `wp:recent-comments`
//! (as is the REST list of comments), because a write elsewhere changes them too. Every HTML page is tagged `html`.

use http::{HeaderMap, HeaderName, StatusCode};
use memchr::memmem;

/// Tag of every HTML object.
pub const HTML: &str = "html";
/// Tag of every list page.
pub const LIST: &str = "list";
/// Tag of pages showing the latest posts.
pub const RECENT_POSTS: &str = "wp:recent-posts";
/// Tag of pages showing the latest comments.
pub const RECENT_COMMENTS: &str = "wp:recent-comments";

/// How tags are read from responses.
#[derive(Debug, Clone)]
pub struct TagRules {
    /// Response headers that carry tags (Surrogate-Key, xkey, Cache-Tag, Cache-Groups, …).
    pub headers: Vec<HeaderName>,
    /// Derive WordPress tags.
    pub wordpress: bool,
    /// At most this many tags per object; the rest are dropped (and `html` ensures that a
    /// site-wide ban still reaches the object).
    pub max: usize,
}

/// The tag naming one post.
pub fn post_tag(id: u64) -> String {
    format!("post:{id}")
}

/// The tags of a response to `GET path?query` about to be stored, without duplicates.
pub fn object_tags(
    rules: &TagRules,
    path: &str,
    query: Option<&str>,
    status: StatusCode,
    resp: &HeaderMap,
    body: &[u8],
) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let mut add = |t: &str| {
        let t = t.trim();
        if !t.is_empty() && t.len() <= 256 && !tags.iter().any(|x| x == t) {
            tags.push(t.to_string());
        }
    };
    let html = resp
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("text/html"));
    if html {
        add(HTML);
    }
    if rules.wordpress {
        let shortlink = shortlink_post(resp);
        if let Some(id) = shortlink.or_else(|| rest_item(path, query)) {
            add(&post_tag(id));
        }
        if let Some(kind) = list_kind(path, query, status, shortlink.is_some(), html) {
            add(LIST);
            add(kind);
        }
        if rest_route(path, query).is_some_and(|r| r.trim_end_matches('/') == "/wp/v2/comments") {
            // The REST list of comments is the latest comments too.
            add(RECENT_COMMENTS);
        }
        if html {
            if memmem::find(body, b"wp-block-latest-posts").is_some()
                || memmem::find(body, b"widget_recent_entries").is_some()
            {
                add(RECENT_POSTS);
            }
            if memmem::find(body, b"wp-block-latest-comments").is_some()
                || memmem::find(body, b"widget_recent_comments").is_some()
            {
                add(RECENT_COMMENTS);
            }
        }
    }
    for name in &rules.headers {
        for v in resp.get_all(name) {
            let Ok(s) = v.to_str() else { continue };
            for t in header_tags(name.as_str(), s) {
                add(&t);
            }
        }
    }
    tags.truncate(rules.max.max(1));
    tags
}

/// Splits one tag header's value: Cache-Groups and Cache-Group-Invalidation are structured
/// lists of strings (RFC 9875), Cache-Tag and X-LiteSpeed-Tag are comma-separated, the rest
/// (Surrogate-Key, xkey) space-separated.
pub fn header_tags(name: &str, value: &str) -> Vec<String> {
    match name {
        "cache-groups" | "cache-group-invalidation" => sf_strings(value),
        "cache-tag" | "x-litespeed-tag" => value
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        _ => value
            .split([' ', ',', '\t'])
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

/// The strings of a Structured Fields list (`"a", "b";param`); tokens are taken as they are.
fn sf_strings(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == ',' || *c == '\t') {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        let mut item = String::new();
        if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            item.push(n);
                        }
                    }
                    '"' => break,
                    c => item.push(c),
                }
            }
        } else {
            while chars.peek().is_some_and(|c| *c != ',' && *c != ';') {
                item.extend(chars.next());
            }
        }
        // Parameters are not part of the group name.
        while chars.peek().is_some_and(|c| *c != ',') {
            chars.next();
        }
        let item = item.trim().to_string();
        if !item.is_empty() {
            out.push(item);
        }
    }
    out
}

/// The post id in `Link: <…?p=ID>; rel=shortlink`.
pub fn shortlink_post(resp: &HeaderMap) -> Option<u64> {
    for v in resp.get_all(http::header::LINK) {
        let Ok(s) = v.to_str() else { continue };
        for link in s.split(',') {
            let Some((target, params)) = link.split_once(';') else {
                continue;
            };
            let rel = params.split(';').any(|p| {
                let p = p.trim().to_ascii_lowercase();
                p == "rel=shortlink" || p == "rel=\"shortlink\""
            });
            if !rel {
                continue;
            }
            let target = target.trim().trim_start_matches('<').trim_end_matches('>');
            let query = target.split_once('?').map(|(_, q)| q)?;
            return query_param(query, "p").and_then(|v| v.parse().ok());
        }
    }
    None
}

/// One parameter of a query string (undecoded); a bare `name` counts, with an empty value.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    crate::policy::query_pairs(query)
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The REST route of a request: the path under `/wp-json`, or `?rest_route=`.
pub fn rest_route<'a>(path: &'a str, query: Option<&'a str>) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(r) = path.strip_prefix("/wp-json") {
        return Some(std::borrow::Cow::Borrowed(if r.is_empty() { "/" } else { r }));
    }
    let raw = query_param(query?, "rest_route")?;
    Some(percent_encoding::percent_decode_str(raw).decode_utf8_lossy())
}

/// The post id of a REST item route (`/wp/v2/posts/ID`, `/wp/v2/pages/ID`).
pub fn rest_item(path: &str, query: Option<&str>) -> Option<u64> {
    let route = rest_route(path, query)?;
    let rest = route.trim_end_matches('/');
    let rest = rest
        .strip_prefix("/wp/v2/posts/")
        .or_else(|| rest.strip_prefix("/wp/v2/pages/"))?;
    rest.parse().ok()
}

/// The list tag of a page, if it is a list: WordPress singular pages carry a shortlink;
/// HTML without one is a list (home, archive, search, 404); feeds, sitemaps and REST
/// collections are recognised by URL.
fn list_kind(path: &str, query: Option<&str>, status: StatusCode, singular: bool, html: bool) -> Option<&'static str> {
    // A redirect lists nothing (WordPress's `/?p=ID` → permalink, `/page/1/` → `/`): what it
    // says does not change when a comment or a post is added, so list bans leave it alone.
    if status.is_redirection() {
        return None;
    }
    let q = query.unwrap_or("");
    let has = |name: &str| query_param(q, name).is_some();
    if let Some(route) = rest_route(path, query) {
        let r = route.trim_end_matches('/');
        let collection = r.starts_with("/wp/v2/") && r.matches('/').count() == 3;
        return collection.then_some("list:rest");
    }
    if path.ends_with("/feed/") || path.ends_with("/feed") || path.contains("/feed/") || has("feed") {
        return Some("list:feed");
    }
    if path.starts_with("/wp-sitemap") || has("sitemap") {
        return Some("list:sitemap");
    }
    if singular || !html {
        return None;
    }
    if status == StatusCode::NOT_FOUND {
        return Some("list:404");
    }
    if has("s") {
        return Some("list:search");
    }
    if path.starts_with("/category/") || has("cat") || has("category_name") {
        return Some("list:category");
    }
    if path.starts_with("/tag/") || has("tag") {
        return Some("list:tag");
    }
    if path.starts_with("/author/") || has("author") {
        return Some("list:author");
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if (first.len() == 4 && first.bytes().all(|b| b.is_ascii_digit())) || has("m") || has("year") {
        return Some("list:date");
    }
    if path == "/" || path.starts_with("/page/") {
        return Some("list:home");
    }
    Some("list:other")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> TagRules {
        TagRules {
            headers: ["surrogate-key", "xkey", "cache-tag", "cache-groups", "x-litespeed-tag"]
                .iter()
                .map(|n| HeaderName::from_static(n))
                .collect(),
            wordpress: true,
            max: 64,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    const HTML_CT: (&str, &str) = ("content-type", "text/html; charset=UTF-8");

    #[test]
    fn redirects_are_no_lists() {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, "text/html; charset=UTF-8".parse().unwrap());
        h.insert(http::header::LOCATION, "http://site.example/a-post/".parse().unwrap());
        for status in [
            StatusCode::MOVED_PERMANENTLY,
            StatusCode::FOUND,
            StatusCode::TEMPORARY_REDIRECT,
        ] {
            let tags = object_tags(&rules(), "/", Some("p=12"), status, &h, b"");
            assert_eq!(tags, vec!["html".to_string()], "{status}");
        }
        let tags = object_tags(&rules(), "/", Some("s=x"), StatusCode::OK, &h, b"");
        assert!(tags.contains(&"list".to_string()), "{tags:?}");
    }

    #[test]
    fn singular_pages_are_tagged_by_shortlink() {
        let h = headers(&[
            HTML_CT,
            ("link", "<http://x/wp-json/>; rel=\"https://api.w.org/\""),
            (
                "link",
                "<http://x/wp-json/wp/v2/posts/5>; rel=\"alternate\"; type=\"application/json\"",
            ),
            ("link", "<http://x/?p=5>; rel=shortlink"),
        ]);
        let body = b"<ul class=\"wp-block-latest-posts__list\"></ul><ol class=\"wp-block-latest-comments\">";
        let tags = object_tags(&rules(), "/hello/", None, StatusCode::OK, &h, body);
        assert_eq!(tags, ["html", "post:5", RECENT_POSTS, RECENT_COMMENTS]);
    }

    #[test]
    fn lists_are_recognised() {
        let h = headers(&[HTML_CT]);
        let kind = |path: &str, q: Option<&str>| {
            let t = object_tags(&rules(), path, q, StatusCode::OK, &h, b"");
            t.iter().find(|t| t.starts_with("list:")).cloned()
        };
        assert_eq!(kind("/", None).as_deref(), Some("list:home"));
        assert_eq!(kind("/page/2/", None).as_deref(), Some("list:home"));
        assert_eq!(kind("/category/news/", None).as_deref(), Some("list:category"));
        assert_eq!(kind("/tag/x/", None).as_deref(), Some("list:tag"));
        assert_eq!(kind("/author/admin/", None).as_deref(), Some("list:author"));
        assert_eq!(kind("/2026/11/", None).as_deref(), Some("list:date"));
        assert_eq!(kind("/", Some("s=hello")).as_deref(), Some("list:search"));
        assert_eq!(kind("/feed/", None).as_deref(), Some("list:feed"));
        assert_eq!(kind("/hello/feed/", None).as_deref(), Some("list:feed"));
        assert_eq!(kind("/wp-sitemap.xml", None).as_deref(), Some("list:sitemap"));
        let json = headers(&[("content-type", "application/json")]);
        let t = object_tags(
            &rules(),
            "/wp-json/wp/v2/posts",
            Some("per_page=5"),
            StatusCode::OK,
            &json,
            b"",
        );
        assert_eq!(t, ["list", "list:rest"]);
        let t = object_tags(
            &rules(),
            "/wp-json/wp/v2/comments/",
            Some("post=9"),
            StatusCode::OK,
            &json,
            b"",
        );
        assert_eq!(t, ["list", "list:rest", "wp:recent-comments"]);
        let t = object_tags(&rules(), "/wp-json/wp/v2/posts/9", None, StatusCode::OK, &json, b"");
        assert_eq!(t, ["post:9"]);
        let t = object_tags(
            &rules(),
            "/",
            Some("rest_route=%2Fwp%2Fv2%2Fpages%2F4"),
            StatusCode::OK,
            &json,
            b"",
        );
        assert_eq!(t, ["post:4"]);
        let t = object_tags(&rules(), "/nope/", None, StatusCode::NOT_FOUND, &h, b"");
        assert_eq!(t, ["html", "list", "list:404"]);
        let css = headers(&[("content-type", "text/css")]);
        assert!(object_tags(&rules(), "/style.css", None, StatusCode::OK, &css, b"").is_empty());
    }

    #[test]
    fn tag_headers_of_every_flavour() {
        let h = headers(&[
            ("surrogate-key", "a b  c"),
            ("xkey", "d"),
            ("cache-tag", "e, f"),
            ("cache-groups", "\"g\", \"h \\\"q\\\"\";p=1, tok"),
            ("x-litespeed-tag", "i,j"),
        ]);
        let mut r = rules();
        r.wordpress = false;
        let t = object_tags(&r, "/x", None, StatusCode::OK, &h, b"");
        assert_eq!(t, ["a", "b", "c", "d", "e", "f", "g", "h \"q\"", "tok", "i", "j"]);
        r.max = 3;
        assert_eq!(object_tags(&r, "/x", None, StatusCode::OK, &h, b"").len(), 3);
    }

    #[test]
    fn wordpress_rules_can_be_off() {
        let h = headers(&[HTML_CT, ("link", "<http://x/?p=5>; rel=shortlink")]);
        let mut r = rules();
        r.wordpress = false;
        assert_eq!(object_tags(&r, "/", None, StatusCode::OK, &h, b""), ["html"]);
    }
}
