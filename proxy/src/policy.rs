//! Request policy: whether a request may be served from the cache, and under which key.
//!
//! Pure functions over the request line and headers, so every WordPress rule is unit tested
//! without sockets. The defaults follow the usual WordPress VCL (login, post-password and
//! commenter cookies, `/wp-admin`, previews, non-GET methods) and are all overridable in
//! `[policy]`.

use http::{header, HeaderMap, Method};

use crate::config::PolicyConfig;

/// Why a request goes to the origin without a cache lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassReason {
    /// Any method but GET and HEAD.
    Method,
    /// A path that is never cached (`/wp-admin`, `/wp-login.php`, …).
    Path,
    /// A cookie that makes the page personal (logged in, commenter, cart, …).
    Cookie,
    /// An `Authorization` header.
    Authorization,
    /// An XMLHttpRequest.
    Ajax,
    /// A query parameter that marks a preview or a cart action.
    Query,
    /// The URL was remembered as uncacheable (hit-for-pass).
    HitForPass,
    /// Waiting for another request's fetch took longer than `cache.lock_timeout`.
    LockTimeout,
    /// Another request's fetch found the answer uncacheable.
    Uncacheable,
    /// A `Range` request that no stored response answers: ranges are served from a stored
    /// response, not fetched to be stored.
    Range,
    /// This node cannot confirm it holds every sibling's bans (`when_unconfirmed = "pass"`).
    Unconfirmed,
    /// The client's `Cache-Control: no-store` (with `cache.request_directives`): nothing of
    /// the request or its answer may be stored.
    RequestNoStore,
}

impl PassReason {
    /// Label for logs, the `Cache-Status` `detail` parameter and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PassReason::Method => "method",
            PassReason::Path => "path",
            PassReason::Cookie => "cookie",
            PassReason::Authorization => "authorization",
            PassReason::Ajax => "ajax",
            PassReason::Query => "query",
            PassReason::HitForPass => "hit-for-pass",
            PassReason::LockTimeout => "lock-timeout",
            PassReason::Uncacheable => "uncacheable",
            PassReason::Range => "range",
            PassReason::Unconfirmed => "cluster-unconfirmed",
            PassReason::RequestNoStore => "request-no-store",
        }
    }
}

/// Decides whether a request may use the cache; `None` means look it up.
pub fn pass_reason(
    cfg: &PolicyConfig,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Option<PassReason> {
    if method != Method::GET && method != Method::HEAD {
        return Some(PassReason::Method);
    }
    let path = resolved_path(path);
    if cfg.pass_paths.iter().any(|p| path.starts_with(p.as_str())) {
        return Some(PassReason::Path);
    }
    if cfg.pass_authorization && headers.contains_key(header::AUTHORIZATION) {
        return Some(PassReason::Authorization);
    }
    if cfg.pass_ajax
        && headers
            .get("x-requested-with")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"xmlhttprequest"))
    {
        return Some(PassReason::Ajax);
    }
    if let Some(q) = query {
        let named = |name: &str| {
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            cfg.pass_query.iter().any(|p| *p == name)
        };
        if query_pairs(q).any(|(name, _)| named(name)) {
            return Some(PassReason::Query);
        }
    }
    let personal = cookie_names(headers)
        .filter(|name| *name != "wordpress_test_cookie")
        .any(|name| cfg.pass_cookies.iter().any(|p| name.starts_with(p.as_str())));
    personal.then_some(PassReason::Cookie)
}

/// A path as the origin's web server resolves it before it routes the request (nginx:
/// percent-decoded, `.` and `..` segments resolved, repeated slashes merged), so that
/// `//wp-admin/`, `/%2e/wp-admin/`, `/x/../wp-admin/` or `/wp-adm%69n/` meet the rules
/// written for `/wp-admin/`. Borrowed, at no cost, when there is nothing to resolve.
pub fn resolved_path(path: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    if !path.contains("//") && !path.contains('%') && !path.contains("/.") {
        return Cow::Borrowed(path);
    }
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    let last = decoded.rsplit('/').next().unwrap_or("");
    if out.is_empty() || decoded.ends_with('/') || last == "." || last == ".." {
        out.push('/');
    }
    Cow::Owned(out)
}

/// The names of the cookies a request carries.
pub fn cookie_names(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.split('=').next())
        .map(str::trim)
}

/// The `name=value` pairs of a query string, undecoded.
pub fn query_pairs(q: &str) -> impl Iterator<Item = (&str, &str)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

fn stripped(strip: &[String], name: &str) -> bool {
    strip.iter().any(|s| match s.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => s == name,
    })
}

/// The query as the cache sees it: tracking parameters removed, the rest sorted (stable, so
/// repeated names keep their order). `None` when nothing is left.
pub fn normalise_query(query: Option<&str>, strip: &[String]) -> Option<String> {
    let q = query?;
    let mut pairs: Vec<&str> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| !stripped(strip, p.split('=').next().unwrap_or(p)))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    pairs.sort_by(|a, b| a.split('=').next().cmp(&b.split('=').next()));
    Some(pairs.join("&"))
}

/// Appends the host part of a cache key: lower-cased, a default `:80` dropped.
/// A host as cache keys spell it: lower case, without `:80`.
pub fn normalise_host(host: &str) -> String {
    let mut s = String::with_capacity(host.len());
    push_host(&mut s, host);
    s
}

fn push_host(buf: &mut String, host: &str) {
    let h = host.trim();
    let h = h.strip_suffix(":80").unwrap_or(h);
    buf.extend(h.chars().map(|c| c.to_ascii_lowercase()));
}

/// Writes the primary cache key into `buf` (cleared first): normalised host, path and
/// normalised query. Reusing one buffer keeps the hit path free of key allocations.
pub fn write_cache_key(buf: &mut String, host: &str, path: &str, query: Option<&str>) {
    buf.clear();
    push_host(buf, host);
    buf.push_str(path);
    if let Some(q) = query {
        buf.push('?');
        buf.push_str(q);
    }
}

/// The primary cache key: normalised host, path and normalised query.
pub fn cache_key(host: &str, path: &str, query: Option<&str>) -> String {
    let mut key = String::with_capacity(host.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    write_cache_key(&mut key, host, path, query);
    key
}

/// The target host: the URI's authority in absolute form, else the Host header.
pub fn host_of<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    if let Some(a) = uri.authority() {
        return Some(a.as_str());
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next()?.to_str().ok()?;
    if hosts.next().is_some() || host.is_empty() || host.contains(['/', ' ', '@']) {
        return None;
    }
    Some(host)
}

pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The primary cache key of a purge target: an absolute URL, or a path plus host.
pub fn purge_key(url: &str, host: Option<&str>, strip: &[String]) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let host = match uri.authority() {
        Some(a) if matches!(uri.scheme_str(), Some("http" | "https")) => a.as_str(),
        Some(_) => return None,
        None => host?,
    };
    if !uri.path().starts_with('/') {
        return None;
    }
    let q = normalise_query(uri.query(), strip);
    Some(cache_key(host, uri.path(), q.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PolicyConfig {
        PolicyConfig::default()
    }

    fn with_cookie(c: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, c.parse().unwrap());
        h
    }

    #[test]
    fn anonymous_get_is_looked_up() {
        let h = with_cookie("_ga=GA1.1; wordpress_test_cookie=WP+Cookie+check");
        assert_eq!(pass_reason(&cfg(), &Method::GET, "/hello-world/", None, &h), None);
        assert_eq!(
            pass_reason(&cfg(), &Method::HEAD, "/", Some("s=x"), &HeaderMap::new()),
            None
        );
    }

    #[test]
    fn wordpress_personal_cookies_pass() {
        for c in [
            "wordpress_logged_in_abc=admin%7C1",
            "a=b; wordpress_sec_abc=x",
            "wp-postpass_0123=hash",
            "comment_author_0123=Ann",
            "woocommerce_items_in_cart=1",
            "PHPSESSID=1",
        ] {
            let got = pass_reason(&cfg(), &Method::GET, "/", None, &with_cookie(c));
            assert_eq!(got, Some(PassReason::Cookie), "{c}");
        }
    }

    #[test]
    fn admin_paths_methods_and_headers_pass() {
        let none = HeaderMap::new();
        for p in [
            "/wp-admin/",
            "/wp-admin/post.php",
            "/wp-login.php",
            "/wp-cron.php",
            "/xmlrpc.php",
            "/wp-comments-post.php",
        ] {
            assert_eq!(
                pass_reason(&cfg(), &Method::GET, p, None, &none),
                Some(PassReason::Path),
                "{p}"
            );
        }
        assert_eq!(
            pass_reason(&cfg(), &Method::POST, "/", None, &none),
            Some(PassReason::Method)
        );
        assert_eq!(
            pass_reason(&cfg(), &Method::GET, "/", Some("p=1&preview=true"), &none),
            Some(PassReason::Query)
        );
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic eA==".parse().unwrap());
        assert_eq!(
            pass_reason(&cfg(), &Method::GET, "/", None, &h),
            Some(PassReason::Authorization)
        );
        let mut h = HeaderMap::new();
        h.insert("x-requested-with", "XMLHttpRequest".parse().unwrap());
        assert_eq!(pass_reason(&cfg(), &Method::GET, "/", None, &h), Some(PassReason::Ajax));
    }

    #[test]
    fn policy_is_overridable() {
        let mut c = cfg();
        c.pass_paths.push("/members/".into());
        c.pass_cookies.clear();
        let none = HeaderMap::new();
        assert_eq!(
            pass_reason(&c, &Method::GET, "/members/x", None, &none),
            Some(PassReason::Path)
        );
        let h = with_cookie("wordpress_logged_in_x=1");
        assert_eq!(pass_reason(&c, &Method::GET, "/", None, &h), None);
    }

    #[test]
    fn query_is_sorted_and_tracking_stripped() {
        let strip = cfg().strip_query;
        assert_eq!(
            normalise_query(Some("b=2&a=1&utm_source=x&fbclid=y"), &strip).as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(normalise_query(Some("utm_medium=a&gclid=b"), &strip), None);
        assert_eq!(normalise_query(Some("p=1&&p=0"), &strip).as_deref(), Some("p=1&p=0"));
        assert_eq!(normalise_query(None, &strip), None);
    }

    #[test]
    fn keys_ignore_host_case_and_default_port() {
        assert_eq!(cache_key("Example.COM:80", "/", None), "example.com/");
        assert_eq!(cache_key("127.0.0.1:8080", "/", None), "127.0.0.1:8080/");
        assert_eq!(cache_key("h", "/a/", Some("x=1")), "h/a/?x=1");
        assert_eq!(cache_key("H:80", "/a/", None), "h/a/");
    }

    #[test]
    fn purge_targets_map_to_cache_keys() {
        let strip = crate::config::PolicyConfig::default().strip_query;
        assert_eq!(
            purge_key("http://Example.com/a/?b=1&a=2&utm_x=1", None, &strip).as_deref(),
            Some("example.com/a/?a=2&b=1")
        );
        assert_eq!(
            purge_key("/a/", Some("127.0.0.1:8080"), &strip).as_deref(),
            Some("127.0.0.1:8080/a/")
        );
        assert_eq!(purge_key("/a/", None, &strip), None);
        assert_eq!(purge_key("ftp://x/a", None, &strip), None);
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hosts_come_from_the_target_or_a_single_host_header() {
        let uri: http::Uri = "/x".parse().unwrap();
        assert_eq!(
            host_of(&uri, &req(&[("host", "a.example:8080")])),
            Some("a.example:8080")
        );
        let abs: http::Uri = "http://b.example/x".parse().unwrap();
        assert_eq!(host_of(&abs, &req(&[("host", "a.example")])), Some("b.example"));
        assert_eq!(host_of(&uri, &HeaderMap::new()), None);
        assert_eq!(host_of(&uri, &req(&[("host", "a/b")])), None);
        assert_eq!(strip_port("a.example:8080"), "a.example");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }

    #[test]
    fn paths_are_resolved_as_the_web_server_resolves_them() {
        for (raw, resolved) in [
            ("/wp-admin/", "/wp-admin/"),
            ("//wp-admin/", "/wp-admin/"),
            ("/%2e/wp-admin/", "/wp-admin/"),
            ("/./wp-admin/", "/wp-admin/"),
            ("/x/../wp-admin/", "/wp-admin/"),
            ("/../../wp-admin", "/wp-admin"),
            ("/wp-adm%69n/post.php", "/wp-admin/post.php"),
            ("/a//b/.", "/a/b/"),
            ("/", "/"),
            ("//", "/"),
            ("/%2F%2Fwp-login.php", "/wp-login.php"),
        ] {
            assert_eq!(resolved_path(raw), resolved, "{raw}");
        }
        assert!(matches!(resolved_path("/a/b?c"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn disguised_admin_paths_and_query_names_still_pass() {
        let cfg = PolicyConfig::default();
        let h = HeaderMap::new();
        for path in [
            "//wp-admin/",
            "/%2e/wp-admin/",
            "/x/../wp-admin/",
            "/wp-adm%69n/",
            "//wp-login.php",
        ] {
            assert_eq!(
                pass_reason(&cfg, &Method::GET, path, None, &h),
                Some(PassReason::Path),
                "{path}"
            );
        }
        assert_eq!(
            pass_reason(&cfg, &Method::GET, "/", Some("%70review=true"), &h),
            Some(PassReason::Query)
        );
    }
}
