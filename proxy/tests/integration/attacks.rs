//! The adversarial suite: what an anonymous client can try against one strata-proxy in front
//! of the real WordPress (or, where WordPress cannot show it, a recording origin), each with
//! the answer it must get and a check that nothing else changed: other pages still HIT, no
//! tag ban counted, the next request on the same origin connection intact.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response};
use tokio::time::timeout;

use crate::fixture::{full, Fixture, FixtureBody};
use crate::harness::{post_paths, send, wp_host, wp_origin, Resp, TestProxy};
use crate::raw::Raw;

/// Runs a test body, failing it if it takes longer than `secs`.
async fn bounded(secs: u64, f: impl Future<Output = ()>) {
    timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"));
}

/// Pages that must stay cached through every attack: the home page and a post, each under a
/// query of this suite's own, so that no other suite's writes reach them.
async fn witnesses() -> Vec<String> {
    let post = post_paths(1).await.pop().expect("a published post");
    vec!["/?witness=attacks".to_string(), format!("{post}?witness=attacks")]
}

/// GETs each witness until it is a HIT.
async fn warm(proxy: &TestProxy) {
    for path in witnesses().await {
        proxy.get(&path, &[]).await;
        let r = proxy.get(&path, &[]).await;
        assert_eq!((r.status.as_u16(), r.x_cache()), (200, "HIT"), "{path} is cached");
    }
}

/// Asserts every witness is still a HIT and no tag ban was applied since `tag_bans`.
async fn nothing_else_changed(proxy: &TestProxy, tag_bans: f64, after: &str) {
    for path in witnesses().await {
        let r = proxy.get(&path, &[]).await;
        assert_eq!(r.x_cache(), "HIT", "{path} after {after}");
    }
    assert_eq!(
        proxy.metric("strata_proxy_bans_applied_total", "kind=\"tag\"").await,
        tag_bans,
        "no tag ban after {after}"
    );
}

/// One attack: what it is, method, path, headers and body.
type Attack = (
    &'static str,
    Method,
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static [u8],
);

/// A proxy in front of the real WordPress, write-behind off (comment POSTs go to PHP).
async fn wordpress_proxy() -> TestProxy {
    TestProxy::start(&wp_origin(), &[("server", "workers = 1")]).await
}

// ---------------------------------------------------------------------------------------
// Reads with a body: the origin connection must never get out of step
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_a_body_is_refused_and_the_next_visitor_is_answered() {
    bounded(60, async {
        let proxy = wordpress_proxy().await;
        warm(&proxy).await;
        let host = wp_host();
        let smuggled = "GET /?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n";
        let cases = [
            format!(
                "GET /?desync=1 HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
            format!(
                "GET /wp-login.php HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
            format!(
                "GET /?desync=2 HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
                smuggled.len()
            ),
        ];
        for case in cases {
            let mut c = Raw::connect(proxy.addr).await;
            c.write(case.as_bytes()).await;
            let r = c.response().await;
            assert_eq!(r.status, 400, "{case:?}: {r:?}");
            assert!(r.text().contains("must not carry a body"), "{}", r.text());
            assert_eq!(r.header("connection").as_deref(), Some("close"), "{case:?}");
            // The next visitor, on whatever origin connection is pooled, gets their page.
            let next = proxy.get("/?after-desync=1", &[]).await;
            assert_eq!(next.status, 200, "the request after {case:?}");
            assert!(next.text().contains("<html"), "a WordPress page after {case:?}");
        }
        assert_eq!(proxy.metric("strata_proxy_client_errors_total", "reason=\"body-on-read\"").await, 3.0);
        nothing_else_changed(&proxy, 0.0, "reads with bodies").await;
        // An empty body is no body.
        let r = proxy
            .request(Method::GET, "/?witness=attacks", &[("content-length", "0")], Bytes::new())
            .await;
        assert_eq!((r.status.as_u16(), r.x_cache()), (200, "HIT"));
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Anonymous writes cannot flush the cache
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_writes_that_change_nothing_flush_nothing() {
    bounded(90, async {
        let proxy = wordpress_proxy().await;
        warm(&proxy).await;
        let tag_bans = proxy.metric("strata_proxy_bans_applied_total", "kind=\"tag\"").await;
        let form = ("content-type", "application/x-www-form-urlencoded");
        let forged = (
            "cookie",
            "wordpress_logged_in_0123456789abcdef=admin%7C4102444800%7Cforged%7Cforged",
        );
        let attacks: Vec<Attack> = vec![
            (
                "a chunked comment POST that is no comment",
                Method::POST,
                "/wp-comments-post.php",
                vec![form, ("transfer-encoding", "chunked")],
                b"this=is&not=a+comment",
            ),
            (
                "admin-ajax with a duplicated action (PHP reads the last)",
                Method::POST,
                "/wp-admin/admin-ajax.php",
                vec![form],
                b"action=x&action=heartbeat",
            ),
            (
                "a REST read sent as a POST",
                Method::POST,
                "/wp-json/wp/v2/types?_method=GET",
                vec![],
                b"",
            ),
            (
                "an empty admin-post",
                Method::POST,
                "/wp-admin/admin-post.php",
                vec![form],
                b"",
            ),
            (
                "an empty admin-post with a forged login cookie",
                Method::POST,
                "/wp-admin/admin-post.php",
                vec![form, forged],
                b"",
            ),
            (
                "an options form with a forged login cookie",
                Method::POST,
                "/wp-admin/options.php",
                vec![form, forged],
                b"option_page=general&blogname=pwned",
            ),
        ];
        for (what, method, path, headers, body) in attacks {
            let r = proxy.request(method, path, &headers, Bytes::from_static(body)).await;
            assert!(r.status.as_u16() < 500, "{what}: {} {}", r.status, r.text());
            nothing_else_changed(&proxy, tag_bans, what).await;
        }
        assert!(proxy.metric("strata_proxy_writes_total", "trust=\"none\"").await >= 3.0);
        assert_eq!(
            proxy.metric("strata_proxy_writes_total", "trust=\"logged-in\"").await,
            0.0
        );
        assert!(
            proxy.metric("strata_proxy_login_checks_total", "result=\"no\"").await >= 1.0,
            "the forged cookie was put to WordPress and refused"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Request headers the key ignores cannot make a URL uncacheable
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_origins_cannot_make_a_rest_url_uncacheable() {
    bounded(120, async {
        let proxy = wordpress_proxy().await;
        let path = "/wp-json/wp/v2/posts?per_page=1&attack=origins";
        for i in 0..24 {
            let origin = format!("https://a{i}.example");
            let r = proxy.get(path, &[("origin", &origin)]).await;
            assert_eq!(r.status, 200);
            assert_eq!(
                r.header("access-control-allow-origin"),
                origin,
                "each origin its own answer"
            );
            assert!(
                !r.header("cache-status").contains("banned-in-flight"),
                "no ban happened: {}",
                r.header("cache-status")
            );
        }
        assert!(
            proxy
                .metric("strata_proxy_not_stored_total", "reason=\"too-many-variants\"")
                .await
                >= 1.0,
            "the budget was spent"
        );
        let plain = proxy.get(path, &[]).await;
        assert_eq!(plain.status, 200);
        let again = proxy.get(path, &[]).await;
        assert_eq!(
            again.x_cache(),
            "HIT",
            "the plain URL is still cached: {:?}",
            again.headers
        );
        assert!(again.header("access-control-allow-origin").is_empty());
        // An origin spelled differently is the same variant.
        let first = proxy.get(path, &[("origin", "HTTPS://A0.example:443")]).await;
        assert_eq!(first.x_cache(), "HIT");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_override_cannot_pin_a_url_as_pass() {
    bounded(60, async {
        let proxy = wordpress_proxy().await;
        let path = "/wp-json/wp/v2/posts?per_page=1&attack=override";
        for method in ["PATCH", "DELETE"] {
            let r = proxy.get(path, &[("x-http-method-override", method)]).await;
            assert_eq!(r.status, 200, "the override never reaches WordPress on a fill");
        }
        let r = proxy.get(path, &[]).await;
        assert_eq!((r.status.as_u16(), r.x_cache()), (200, "HIT"));
        // `_method` is part of the URL: its answer is its own URL's, not the plain one's.
        let odd = proxy.get(&format!("{path}&_method=PATCH"), &[]).await;
        assert_eq!(odd.status, 404);
        let r = proxy.get(path, &[]).await;
        assert_eq!(r.x_cache(), "HIT");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_cannot_poison_a_cached_page() {
    bounded(60, async {
        let proxy = wordpress_proxy().await;
        let path = "/?attack=forwarded-host";
        let r = proxy
            .get(
                path,
                &[
                    ("x-forwarded-host", "evil.example"),
                    ("forwarded", "host=evil.example;proto=https"),
                    ("x-forwarded-proto", "https"),
                    ("x-original-url", "/wp-admin/"),
                    ("x-rewrite-url", "/wp-admin/"),
                ],
            )
            .await;
        assert_eq!(r.status, 200);
        let clean = proxy.get(path, &[]).await;
        assert_eq!(clean.x_cache(), "HIT");
        assert!(
            !clean.text().contains("evil.example"),
            "the stored page names no foreign host"
        );
        assert!(
            !clean.text().contains("https://127.0.0.1:8080"),
            "nor a scheme the client made up"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Path confusion
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disguised_admin_paths_are_passed_like_the_real_ones() {
    bounded(60, async {
        let proxy = wordpress_proxy().await;
        for path in [
            "//wp-admin/",
            "/%2e/wp-admin/",
            "/./wp-admin/",
            "/x/../wp-admin/",
            "/wp-adm%69n/",
        ] {
            let mut c = Raw::connect(proxy.addr).await;
            c.write(
                format!(
                    "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    wp_host()
                )
                .as_bytes(),
            )
            .await;
            let r = c.response().await;
            assert_eq!(r.status, 302, "{path}: WordPress sends visitors to log in: {}", r.head);
            assert_eq!(r.header("x-cache").as_deref(), Some("PASS"), "{path}");
            assert!(
                r.header("cache-status").is_some_and(|s| s.contains("detail=path")),
                "{path}: {:?}",
                r.header("cache-status")
            );
        }
        // `;` is no separator to nginx or WordPress: its own (404) URL, not the admin.
        let r = proxy.get("/wp-admin;/", &[]).await;
        assert_eq!(r.status, 404);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// What the origin gets: a recording origin
// ---------------------------------------------------------------------------------------

/// Every request the origin got: method, path, and its headers.
type Seen = Arc<Mutex<Vec<(String, String, http::HeaderMap)>>>;

async fn recording_origin() -> (Fixture, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let fixture = Fixture::start(move |req| {
        let log = log.clone();
        async move {
            log.lock().expect("log").push((
                req.method().to_string(),
                req.uri().path().to_string(),
                req.headers().clone(),
            ));
            let resp: Response<FixtureBody> = Response::builder()
                .header("cache-control", "max-age=60")
                .header("content-type", "text/html")
                .body(full("page"))
                .expect("response");
            resp
        }
    })
    .await;
    (fixture, seen)
}

async fn get_as(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    let headers: Vec<(&str, String)> = headers.iter().map(|(k, v)| (*k, v.to_string())).collect();
    send(Method::GET, &format!("http://{addr}{path}"), &headers, Bytes::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_carry_the_keyed_host_and_nothing_the_key_ignores() {
    bounded(30, async {
        let (fixture, seen) = recording_origin().await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;
        let r = get_as(
            proxy.addr,
            "/page",
            &[
                ("host", "Site.Example:80"),
                ("x-forwarded-host", "evil.example"),
                ("forwarded", "host=evil.example"),
                ("x-original-url", "/wp-admin/"),
                ("x-rewrite-url", "/wp-admin/"),
                ("x-http-method-override", "DELETE"),
                ("x-forwarded-for", "203.0.113.66"),
                ("user-agent", "attacker"),
                ("cookie", "_ga=1"),
                ("accept-language", "de"),
            ],
        )
        .await;
        assert_eq!(r.status, 200);
        let again = get_as(proxy.addr, "/page", &[("host", "site.example")]).await;
        assert_eq!(again.x_cache(), "HIT", "Host spellings of one site share the key");
        let seen = seen.lock().expect("log");
        assert_eq!(seen.len(), 1, "one fill");
        let (method, path, h) = &seen[0];
        assert_eq!((method.as_str(), path.as_str()), ("GET", "/page"));
        assert_eq!(h["host"], "site.example", "the key's host, normalised");
        for absent in [
            "x-forwarded-host",
            "forwarded",
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
            "user-agent",
            "cookie",
            "accept-language",
            "content-length",
            "transfer-encoding",
        ] {
            assert!(!h.contains_key(absent), "{absent} reached the origin on a fill: {h:?}");
        }
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "the proxy's own word on the client");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_header_cannot_take_the_host_off_a_passed_request() {
    bounded(30, async {
        let (fixture, seen) = recording_origin().await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;
        let mut c = Raw::connect(proxy.addr).await;
        c.write(b"POST /form HTTP/1.1\r\nHost: site.example\r\nConnection: host, x-secret\r\nX-Secret: 1\r\nContent-Length: 2\r\n\r\nok")
            .await;
        let r = c.response().await;
        assert_eq!(r.status, 200, "{r:?}");
        let seen = seen.lock().expect("log");
        let (_, _, h) = seen.last().expect("the POST reached the origin");
        assert_eq!(h["host"], "site.example");
        assert!(!h.contains_key("x-secret"), "what Connection names is hop-by-hop");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Classic request smuggling and malformed heads
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_and_malformed_heads_are_refused_before_the_origin() {
    bounded(60, async {
        let (fixture, seen) = recording_origin().await;
        let proxy = TestProxy::start(&fixture.url(), &[("server", "header_timeout = \"3s\"")]).await;
        let cases: [(&str, &[u8]); 11] = [
            (
                "CL.TE",
                b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            ),
            (
                "TE.CL",
                b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
            ),
            (
                "TE.TE, a second Transfer-Encoding",
                b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            ),
            (
                "TE with a space before the colon",
                b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            ),
            (
                "TE xchunked",
                b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "TE chunked, then identity",
                b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            ),
            (
                "two Content-Lengths",
                b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            ),
            ("obs-fold", b"GET /a HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n"),
            ("two Hosts", b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
            ("no Host", b"GET /a HTTP/1.1\r\n\r\n"),
            ("a space in the target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
        ];
        for (what, bytes) in cases {
            let mut c = Raw::connect(proxy.addr).await;
            c.write(bytes).await;
            let r = c.response().await;
            assert!(
                (400..500).contains(&r.status),
                "{what}: refused with a 4xx, got {}",
                r.status
            );
            // The connection is not used again: whatever follows cannot be read as a request.
            let rest = timeout(Duration::from_secs(5), c.read_to_close())
                .await
                .unwrap_or_else(|_| panic!("{what}: the connection is closed"));
            assert!(
                !String::from_utf8_lossy(&rest).contains("HTTP/1.1 200"),
                "{what}: nothing more was answered"
            );
        }
        assert!(seen.lock().expect("log").is_empty(), "none of them reached the origin");
        // The proxy still serves, and its origin connections are intact.
        let ok = get_as(proxy.addr, "/after", &[("host", "x")]).await;
        assert_eq!(ok.status, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_targets_for_other_hosts_are_not_proxied_there() {
    bounded(30, async {
        let (fixture, seen) = recording_origin().await;
        let proxy = TestProxy::start(&fixture.url(), &[("server", "hosts = [\"site.example\"]")]).await;
        let mut c = Raw::connect(proxy.addr).await;
        c.write(b"GET http://evil.example/x HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n")
            .await;
        let r = c.response().await;
        assert_eq!(r.status, 421, "not this site's: {r:?}");
        let mut c = Raw::connect(proxy.addr).await;
        c.write(b"GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
            .await;
        assert_eq!(c.response().await.status, 421);
        assert!(
            seen.lock().expect("log").is_empty(),
            "an open proxy forwards; this one did not"
        );
    })
    .await;
}
