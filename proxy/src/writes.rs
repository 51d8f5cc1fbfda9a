//! Which bans a successful write implies.
//!
//! RFC 9111 §4.4: an unsafe request that succeeded invalidates its target URI and the
//! same-host `Location` / `Content-Location`. RFC 9875: `Cache-Group-Invalidation` on the
//! response names groups (tags) to invalidate. And for an unmodified WordPress, which never
//! says what a write changed, the request itself tells: the post a form or REST call edits,
//! the post a comment is for. What cannot be narrowed (other admin writes, comment
//! moderation) bans every HTML page and list, safe rather than stale.

use http::{HeaderMap, Method, StatusCode};
use strata_wire::ban::{Ban, Kind};

use crate::tags::{self, HTML, LIST, RECENT_COMMENTS, RECENT_POSTS};

/// Largest request body read to find out what a write touches.
pub const MAX_INSPECTED_BODY: u64 = 1 << 20;

/// admin-ajax.php actions that change nothing a visitor sees.
const READ_ONLY_AJAX: &[&str] = &[
    "heartbeat",
    "query-attachments",
    "fetch-list",
    "ajax-tag-search",
    "closed-postboxes",
    "hidden-columns",
    "meta-box-order",
    "wp-remove-post-lock",
    "sample-permalink",
    "dashboard-widgets",
    "get-community-events",
    "wp-compression-test",
    "logged-in",
    "rest-nonce",
    "health-check-site-status-result",
    "get-post-thumbnail-html",
    "parse-embed",
    "parse-media-shortcode",
    "oembed-cache",
    "find_posts",
    "menu-get-metabox",
    "menu-quick-search",
    "wp-link-ajax",
    "autocomplete-user",
    "get-revision-diffs",
    "press-this-add-category",
    "generate-password",
    "save-wporg-username",
    "nopriv_heartbeat",
];

/// A finished write, as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The site (`Host`).
    pub host: &'a str,
    /// Request path.
    pub path: &'a str,
    /// Request query.
    pub query: Option<&'a str>,
    /// Request headers.
    pub req: &'a HeaderMap,
    /// The request body when it was read (small urlencoded or XML bodies of the WordPress
    /// write endpoints), else `None`.
    pub body: Option<&'a [u8]>,
    /// The origin's status.
    pub status: StatusCode,
    /// The origin's response headers.
    pub resp: &'a HeaderMap,
}

/// Whether the body of a request is worth reading for [`bans_for`]: a bounded, known-length
/// body of a WordPress write endpoint.
pub fn wants_body(method: &Method, path: &str, content_length: Option<u64>) -> bool {
    !method.is_safe()
        && content_length.is_some_and(|n| n > 0 && n <= MAX_INSPECTED_BODY)
        && matches!(
            path,
            "/wp-admin/post.php" | "/wp-admin/admin-ajax.php" | "/wp-comments-post.php" | "/xmlrpc.php"
        )
}

/// Whether a request is a WordPress nonce-protected admin action done by GET (trash,
/// approve a comment…), which changes state though its method is safe.
fn admin_action_get(w: &Write<'_>) -> bool {
    let q = w.query.unwrap_or("");
    w.path.starts_with("/wp-admin/")
        && tags::query_param(q, "_wpnonce").is_some()
        && tags::query_param(q, "action").is_some()
}

/// The bans a finished request implies (none for reads and failures).
pub fn bans_for(w: &Write<'_>, wordpress: bool) -> Vec<Ban> {
    let ok = w.status.is_success() || w.status.is_redirection();
    let unsafe_method = !w.method.is_safe();
    if !ok || !(unsafe_method || wordpress && admin_action_get(w)) {
        return Vec::new();
    }
    let mut out: Vec<Ban> = Vec::new();
    let mut push = |kind: Kind, value: String| {
        let b = Ban {
            kind,
            value,
            host: Some(w.host.to_string()),
            soft: false,
        };
        if !out.contains(&b) {
            out.push(b);
        }
    };
    if unsafe_method {
        // RFC 9111 §4.4.
        let target = match w.query {
            Some(q) => format!("{}?{q}", w.path),
            None => w.path.to_string(),
        };
        push(Kind::Url, target);
        for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
            if let Some(path) = w
                .resp
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| same_host_path(l, w.host))
            {
                push(Kind::Url, path);
            }
        }
        // RFC 9875.
        for v in w.resp.get_all("cache-group-invalidation") {
            if let Ok(s) = v.to_str() {
                for g in tags::header_tags("cache-group-invalidation", s) {
                    push(Kind::Tag, g);
                }
            }
        }
    }
    if wordpress {
        for tag in wordpress_tags(w) {
            push(Kind::Tag, tag);
        }
    }
    out
}

/// A same-host `Location` as a path (relative references resolve against the host).
fn same_host_path(location: &str, host: &str) -> Option<String> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(location.split('#').next().unwrap_or(location).to_string());
    }
    let uri: http::Uri = location.split('#').next()?.parse().ok()?;
    let authority = uri.authority()?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || !authority.as_str().eq_ignore_ascii_case(host) {
        return None;
    }
    Some(uri.path_and_query().map_or("/", |p| p.as_str()).to_string())
}

/// A form field of an urlencoded body (decoded).
fn form_field(body: &[u8], name: &str) -> Option<String> {
    body.split(|b| *b == b'&').find_map(|kv| {
        let mut it = kv.splitn(2, |b| *b == b'=');
        let k = it.next()?;
        let v = it.next().unwrap_or(b"");
        (decode(k) == name).then(|| decode(v))
    })
}

fn decode(b: &[u8]) -> String {
    let plus: Vec<u8> = b.iter().map(|c| if *c == b'+' { b' ' } else { *c }).collect();
    percent_encoding::percent_decode(&plus).decode_utf8_lossy().into_owned()
}

fn id(s: Option<String>) -> Option<u64> {
    s?.trim().parse().ok().filter(|n| *n > 0)
}

/// The tags a WordPress write touches.
fn wordpress_tags(w: &Write<'_>) -> Vec<String> {
    let post = |id: u64| vec![tags::post_tag(id), LIST.to_string(), RECENT_POSTS.to_string()];
    let everything = || vec![HTML.to_string(), LIST.to_string()];
    let q = w.query.unwrap_or("");
    let body = w.body.unwrap_or(b"");
    if let Some(route) = tags::rest_route(w.path, w.query) {
        if w.method.is_safe() {
            return Vec::new();
        }
        let route = route.trim_end_matches('/');
        return match tags::rest_item(w.path, w.query) {
            Some(n) => post(n),
            None if route == "/wp/v2/posts" || route == "/wp/v2/pages" => {
                vec![LIST.to_string(), RECENT_POSTS.to_string()]
            }
            None if route.starts_with("/wp/v2/") => everything(),
            // Other namespaces (plugins, oEmbed, block renderer): nothing a page shows.
            None => Vec::new(),
        };
    }
    match w.path {
        "/wp-comments-post.php" => match id(form_field(body, "comment_post_ID")) {
            Some(n) => vec![tags::post_tag(n), LIST.to_string(), RECENT_COMMENTS.to_string()],
            None => everything(),
        },
        "/xmlrpc.php" => xmlrpc_tags(body),
        "/wp-admin/post.php" => {
            let from_body = id(form_field(body, "post_ID")).or_else(|| id(form_field(body, "post")));
            let from_query = id(tags::query_param(q, "post").map(str::to_string));
            let from_location = w
                .resp
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.split_once('?'))
                .and_then(|(_, lq)| id(tags::query_param(lq, "post").map(str::to_string)));
            match from_body.or(from_query).or(from_location) {
                Some(n) => post(n),
                None => everything(),
            }
        }
        "/wp-admin/admin-ajax.php" => {
            let action = form_field(body, "action").or_else(|| tags::query_param(q, "action").map(str::to_string));
            match action.as_deref() {
                Some(a) if READ_ONLY_AJAX.contains(&a) => Vec::new(),
                Some("inline-save") => id(form_field(body, "post_ID")).map_or_else(everything, post),
                Some("replyto-comment") => id(form_field(body, "comment_post_ID")).map_or_else(everything, |n| {
                    vec![tags::post_tag(n), LIST.to_string(), RECENT_COMMENTS.to_string()]
                }),
                _ => everything(),
            }
        }
        p if p.starts_with("/wp-admin/") => everything(),
        _ => Vec::new(),
    }
}

/// What an XML-RPC call touches: a post edit or delete names its post; reads touch nothing;
/// anything else (new posts, pingbacks, comments, options) touches every page.
fn xmlrpc_tags(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let Some(method) = between(&text, "<methodName>", "</methodName>").map(str::trim) else {
        return vec![HTML.to_string(), LIST.to_string()];
    };
    let lower = method.to_ascii_lowercase();
    let read = lower.starts_with("system.")
        || lower.contains(".get")
        || lower == "demo.sayhello"
        || lower == "demo.addtwonumbers";
    if read {
        return Vec::new();
    }
    // Which parameter holds the post id: wp.* (blog, user, pass, id), metaWeblog/mt (id, …),
    // blogger.* (appkey, id, …).
    let index = match lower.as_str() {
        "wp.editpost" | "wp.deletepost" | "wp.editpage" | "wp.deletepage" => Some(3),
        "metaweblog.editpost" | "mt.publishpost" | "mt.setpostcategories" => Some(0),
        "metaweblog.deletepost" | "blogger.deletepost" | "blogger.editpost" => Some(1),
        _ => None,
    };
    let post = index.and_then(|i| {
        let param = text.split("<param>").nth(i + 1)?;
        let value = between(param, "<value>", "</value>")?;
        let mut digits = String::new();
        let mut in_tag = false;
        for c in value.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag && !c.is_whitespace() => digits.push(c),
                _ => {}
            }
        }
        digits.parse::<u64>().ok().filter(|n| *n > 0)
    });
    match post {
        Some(n) => vec![tags::post_tag(n), LIST.to_string(), RECENT_POSTS.to_string()],
        None => vec![HTML.to_string(), LIST.to_string()],
    }
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let end = s[start..].find(close)? + start;
    Some(&s[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write<'a>(
        method: &'a Method,
        path: &'a str,
        query: Option<&'a str>,
        body: Option<&'a [u8]>,
        resp: &'a HeaderMap,
    ) -> Write<'a> {
        static EMPTY: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
        Write {
            method,
            host: "site.test",
            path,
            query,
            req: EMPTY.get_or_init(HeaderMap::new),
            body,
            status: StatusCode::FOUND,
            resp,
        }
    }

    fn tags_of(bans: &[Ban]) -> Vec<&str> {
        bans.iter()
            .filter(|b| b.kind == Kind::Tag)
            .map(|b| b.value.as_str())
            .collect()
    }

    fn urls_of(bans: &[Ban]) -> Vec<&str> {
        bans.iter()
            .filter(|b| b.kind == Kind::Url)
            .map(|b| b.value.as_str())
            .collect()
    }

    #[test]
    fn rfc_9111_target_location_and_content_location() {
        let mut resp = HeaderMap::new();
        resp.insert("location", "http://site.test/done/#x".parse().unwrap());
        resp.insert("content-location", "http://elsewhere.test/x".parse().unwrap());
        resp.insert("cache-group-invalidation", "\"g1\", \"g2\"".parse().unwrap());
        let bans = bans_for(&write(&Method::POST, "/form/", Some("a=1"), None, &resp), false);
        assert_eq!(urls_of(&bans), ["/form/?a=1", "/done/"]);
        assert_eq!(tags_of(&bans), ["g1", "g2"]);
        assert!(bans.iter().all(|b| b.host.as_deref() == Some("site.test") && !b.soft));
    }

    #[test]
    fn reads_and_failures_ban_nothing() {
        let resp = HeaderMap::new();
        assert!(bans_for(
            &write(&Method::GET, "/wp-admin/post.php", Some("post=5"), None, &resp),
            true
        )
        .is_empty());
        let mut w = write(&Method::POST, "/wp-admin/post.php", None, Some(b"post_ID=5"), &resp);
        w.status = StatusCode::FORBIDDEN;
        assert!(bans_for(&w, true).is_empty());
    }

    #[test]
    fn wordpress_post_edits_name_their_post() {
        let resp = HeaderMap::new();
        let body = b"_wpnonce=x&action=editpost&post_ID=42&post_title=Hi";
        let bans = bans_for(
            &write(&Method::POST, "/wp-admin/post.php", None, Some(body), &resp),
            true,
        );
        assert_eq!(tags_of(&bans), ["post:42", "list", "wp:recent-posts"]);
        // Without the body, the redirect names the post.
        let mut resp = HeaderMap::new();
        resp.insert("location", "post.php?post=43&action=edit&message=1".parse().unwrap());
        let bans = bans_for(&write(&Method::POST, "/wp-admin/post.php", None, None, &resp), true);
        assert_eq!(tags_of(&bans), ["post:43", "list", "wp:recent-posts"]);
        // Trash by nonce'd GET link.
        let resp = HeaderMap::new();
        let bans = bans_for(
            &write(
                &Method::GET,
                "/wp-admin/post.php",
                Some("post=44&action=trash&_wpnonce=abc"),
                None,
                &resp,
            ),
            true,
        );
        assert_eq!(tags_of(&bans), ["post:44", "list", "wp:recent-posts"]);
    }

    #[test]
    fn rest_writes() {
        let resp = HeaderMap::new();
        let t = |m: &Method, path: &str, q: Option<&str>| {
            tags_of(&bans_for(&write(m, path, q, None, &resp), true))
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            t(&Method::POST, "/wp-json/wp/v2/posts/7", None),
            ["post:7", "list", "wp:recent-posts"]
        );
        assert_eq!(
            t(&Method::DELETE, "/wp-json/wp/v2/pages/8", None),
            ["post:8", "list", "wp:recent-posts"]
        );
        assert_eq!(
            t(&Method::POST, "/", Some("rest_route=/wp/v2/posts/9")),
            ["post:9", "list", "wp:recent-posts"]
        );
        assert_eq!(
            t(&Method::POST, "/wp-json/wp/v2/posts", None),
            ["list", "wp:recent-posts"]
        );
        assert_eq!(t(&Method::POST, "/wp-json/wp/v2/comments/3", None), ["html", "list"]);
        assert!(t(&Method::POST, "/wp-json/contact-form/v1/send", None).is_empty());
    }

    #[test]
    fn comments_and_admin_ajax() {
        let resp = HeaderMap::new();
        let t = |path: &str, body: &[u8]| {
            tags_of(&bans_for(&write(&Method::POST, path, None, Some(body), &resp), true))
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            t(
                "/wp-comments-post.php",
                b"comment=Hi+there&comment_post_ID=12&comment_parent=0"
            ),
            ["post:12", "list", "wp:recent-comments"]
        );
        assert!(t("/wp-admin/admin-ajax.php", b"action=heartbeat&data=x").is_empty());
        assert_eq!(
            t("/wp-admin/admin-ajax.php", b"action=inline-save&post_ID=5"),
            ["post:5", "list", "wp:recent-posts"]
        );
        assert_eq!(
            t("/wp-admin/admin-ajax.php", b"action=dim-comment&id=9"),
            ["html", "list"]
        );
        assert_eq!(t("/wp-admin/options.php", b"blogname=x"), ["html", "list"]);
        assert!(t("/wp-login.php", b"log=a&pwd=b").is_empty());
    }

    #[test]
    fn xmlrpc_calls() {
        let call = |method: &str, params: &[&str]| {
            let ps: String = params
                .iter()
                .map(|p| format!("<param><value>{p}</value></param>"))
                .collect();
            format!("<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{ps}</params></methodCall>")
        };
        let t = |body: String| xmlrpc_tags(body.as_bytes());
        assert_eq!(
            t(call(
                "wp.editPost",
                &[
                    "<int>1</int>",
                    "<string>u</string>",
                    "<string>p</string>",
                    "<int>77</int>"
                ]
            )),
            ["post:77", "list", "wp:recent-posts"]
        );
        assert_eq!(
            t(call(
                "metaWeblog.editPost",
                &["<string>78</string>", "<string>u</string>"]
            )),
            ["post:78", "list", "wp:recent-posts"]
        );
        assert!(t(call("wp.getPosts", &[])).is_empty());
        assert_eq!(
            t(call("pingback.ping", &["<string>http://a/</string>"])),
            ["html", "list"]
        );
        assert_eq!(t("garbage".into()), ["html", "list"]);
    }

    #[test]
    fn only_small_bodies_of_write_endpoints_are_read() {
        assert!(wants_body(&Method::POST, "/wp-admin/post.php", Some(100)));
        assert!(!wants_body(&Method::POST, "/wp-admin/post.php", None));
        assert!(!wants_body(
            &Method::POST,
            "/wp-admin/post.php",
            Some(MAX_INSPECTED_BODY + 1)
        ));
        assert!(!wants_body(&Method::POST, "/contact/", Some(100)));
        assert!(!wants_body(&Method::GET, "/xmlrpc.php", Some(100)));
    }
}
