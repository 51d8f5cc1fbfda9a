//! HTTP caching by the book (RFC 9111, 9110, 9213, 9211) against a programmable origin:
//! revalidation and 304 updates, what is stored, freshness parsing, targeted cache control,
//! ranges, request directives, Vary. Each test names the behaviour it pins.
//!
//! Every test is bounded in time; none asserts on how fast something happened. Tests that
//! need a response to expire use `max-age=1` and wait a little over a second.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Response};
use tokio::time::{sleep, timeout};

use crate::fixture::{full, Fixture, FixtureBody};
use crate::harness::{Resp, TestProxy};

/// Runs a test body, failing it if it takes longer than `secs`.
async fn bounded(secs: u64, f: impl Future<Output = ()>) {
    timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"));
}

/// An origin response with headers and a body.
fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<FixtureBody> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(full(body)).expect("fixture response")
}

/// A request as the origin saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// A programmable origin that answers the n-th request it gets (from 1) with `answer(n, seen)`
/// and remembers every request.
struct Origin {
    fixture: Fixture,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    async fn start(answer: impl Fn(usize, &Seen) -> Response<FixtureBody> + Send + Sync + 'static) -> Origin {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let answer = Arc::new(answer);
        let fixture = Fixture::start(move |req| {
            let log = log.clone();
            let answer = answer.clone();
            async move {
                let s = Seen {
                    path: req.uri().path().to_string(),
                    headers: req.headers().clone(),
                };
                let n = {
                    let mut l = log.lock().unwrap();
                    l.push(s.clone());
                    l.len()
                };
                answer(n, &s)
            }
        })
        .await;
        Origin { fixture, seen }
    }

    fn url(&self) -> String {
        self.fixture.url()
    }

    /// The requests received so far.
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// The exact HTTP cache preset: no default TTL, no grace, objects with validators kept an
/// hour to be revalidated, heuristic freshness, any status with explicit freshness stored,
/// clients' directives honoured.
const EXACT: &[(&str, &str)] = &[("cache", "preset = \"http\"")];

/// The freshness left that a hit's `Cache-Status` reports (`ttl=N`).
fn ttl_of(r: &Resp) -> u64 {
    r.header("cache-status")
        .split(';')
        .find_map(|p| p.trim().strip_prefix("ttl="))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// Waits until a `max-age=1` response has expired.
async fn expire() {
    sleep(Duration::from_millis(1200)).await;
}

// ---------------------------------------------------------------------------------------
// Revalidation (RFC 9111 §4.3) and updating stored headers from a 304 (§3.2)
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_response_with_an_etag_is_revalidated_and_a_304_updates_its_headers() {
    bounded(30, async {
        let origin = Origin::start(|_, req| {
            if req.header("if-none-match") == "\"v1\"" {
                reply(
                    304,
                    &[
                        ("etag", "\"v1-changed\""),
                        ("cache-control", "max-age=60"),
                        ("content-type", "text/plain;charset=utf-8"),
                        ("x-updated", "by-304"),
                    ],
                    "",
                )
            } else {
                reply(
                    200,
                    &[
                        ("etag", "\"v1\""),
                        ("cache-control", "max-age=1"),
                        ("content-type", "text/plain"),
                        ("x-updated", "no"),
                        ("x-kept", "stored"),
                    ],
                    "version one",
                )
            }
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;

        let first = proxy.get("/page", &[]).await;
        assert_eq!((first.status.as_u16(), first.x_cache()), (200, "MISS"));
        expire().await;
        let second = proxy.get("/page", &[]).await;
        assert_eq!(second.status, 200);
        assert_eq!(second.text(), "version one", "the stored body, revalidated");
        assert!(
            second.header("cache-status").contains("fwd=stale; fwd-status=304"),
            "{:?}",
            second.headers
        );
        assert_eq!(second.header("x-updated"), "by-304");
        assert_eq!(second.header("cache-control"), "max-age=60");
        assert_eq!(second.header("content-type"), "text/plain;charset=utf-8");
        assert_eq!(second.header("x-kept"), "stored", "fields the 304 omits are kept");
        assert_eq!(second.header("etag"), "\"v1\"", "the validator is not replaced");
        let seen = origin.requests();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].header("if-none-match"), "\"v1\"", "a conditional request");

        let third = proxy.get("/page", &[]).await;
        assert_eq!((third.x_cache(), third.text().as_str()), ("HIT", "version one"));
        assert_eq!(third.header("x-updated"), "by-304", "the stored headers were updated");
        assert_eq!(origin.count(), 2, "fresh again for 60 s");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_response_with_last_modified_is_revalidated_with_if_modified_since() {
    bounded(30, async {
        const LM: &str = "Wed, 01 Jan 2020 00:00:00 GMT";
        let origin = Origin::start(|_, req| {
            if req.header("if-modified-since") == LM {
                reply(304, &[("cache-control", "max-age=60")], "")
            } else {
                reply(200, &[("last-modified", LM), ("cache-control", "max-age=1")], "dated")
            }
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        proxy.get("/dated", &[]).await;
        expire().await;
        let r = proxy.get("/dated", &[]).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "dated"));
        assert_eq!(origin.requests()[1].header("if-modified-since"), LM);
        assert_eq!(proxy.get("/dated", &[]).await.x_cache(), "HIT");
        assert_eq!(origin.count(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_responses_are_stored_and_revalidated_on_every_use() {
    bounded(30, async {
        let origin = Origin::start(|_, req| {
            if req.header("if-none-match") == "\"nc\"" {
                reply(304, &[], "")
            } else {
                reply(
                    200,
                    &[("etag", "\"nc\""), ("cache-control", "no-cache, max-age=3600")],
                    "body",
                )
            }
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        for _ in 0..3 {
            let r = proxy.get("/nc", &[]).await;
            assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "body"));
        }
        let seen = origin.requests();
        assert_eq!(seen.len(), 3, "every use asks the origin");
        assert_eq!(seen[0].header("if-none-match"), "");
        assert_eq!(seen[1].header("if-none-match"), "\"nc\"");
        assert_eq!(seen[2].header("if-none-match"), "\"nc\"");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_revalidate_is_never_served_stale_even_with_grace() {
    bounded(30, async {
        let origin = Origin::start(|n, req| {
            if req.header("if-none-match") == "\"mr\"" {
                reply(304, &[("x-revalidation", n.to_string().as_str())], "")
            } else {
                reply(
                    200,
                    &[("etag", "\"mr\""), ("cache-control", "max-age=1, must-revalidate")],
                    "mr",
                )
            }
        })
        .await;
        // The WordPress defaults (an hour of grace) with a keep.
        let proxy = TestProxy::start(&origin.url(), &[("cache", "keep = \"1h\"")]).await;
        proxy.get("/mr", &[]).await;
        expire().await;
        let r = proxy.get("/mr", &[]).await;
        assert_eq!(r.x_cache(), "MISS", "not STALE: revalidated before use");
        assert_eq!(r.header("x-revalidation"), "2");
        assert_eq!(origin.requests()[1].header("if-none-match"), "\"mr\"");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_that_forbids_storing_drops_the_stored_response() {
    bounded(30, async {
        let origin = Origin::start(|_, req| {
            if req.header("if-none-match") == "\"x\"" {
                reply(304, &[("cache-control", "no-store")], "")
            } else {
                reply(200, &[("etag", "\"x\""), ("cache-control", "max-age=1")], "x")
            }
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        proxy.get("/x", &[]).await;
        expire().await;
        let r = proxy.get("/x", &[]).await;
        assert_eq!(
            (r.status.as_u16(), r.text().as_str()),
            (200, "x"),
            "this client still gets it"
        );
        assert!(r.header("cache-status").contains("detail=no-store"), "{:?}", r.headers);
        let again = proxy.get("/x", &[]).await;
        assert_ne!(again.x_cache(), "HIT");
        assert_eq!(
            origin.requests()[2].header("if-none-match"),
            "",
            "nothing left to revalidate"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_conditionals_are_answered_from_the_store_by_weak_comparison() {
    bounded(30, async {
        let origin =
            Origin::start(|_, _| reply(200, &[("etag", "W/\"abc\""), ("cache-control", "max-age=60")], "b")).await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        proxy.get("/c", &[]).await;
        for (inm, status) in [
            ("\"abc\"", 304),
            ("\"x\", W/\"abc\"", 304),
            ("\"1\", \"2\"", 200),
            ("*", 304),
        ] {
            let r = proxy.get("/c", &[("if-none-match", inm)]).await;
            assert_eq!(r.status.as_u16(), status, "{inm}");
            if status == 304 {
                assert_eq!(r.header("etag"), "W/\"abc\"", "a 304 carries the ETag");
            }
        }
        assert_eq!(origin.count(), 1);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Freshness (RFC 9111 §4.2, §5.1, §5.2; RFC 9110 §5.6.7)
// ---------------------------------------------------------------------------------------

/// A path and the response headers the origin answers it with.
type Case = (&'static str, Vec<(&'static str, String)>);

/// Two requests to each path of an origin that answers with the path's headers: whether the
/// second was served from the store.
async fn reused(paths: &[Case], cfg: &[(&str, &str)]) -> Vec<(String, bool)> {
    let table: Arc<Vec<Case>> = Arc::new(paths.to_vec());
    let t = table.clone();
    let origin = Origin::start(move |_, req| {
        let headers = t
            .iter()
            .find(|(p, _)| *p == req.path)
            .map(|(_, h)| h.clone())
            .unwrap_or_default();
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        reply(200, &pairs, "x")
    })
    .await;
    let proxy = TestProxy::start(&origin.url(), cfg).await;
    let mut out = Vec::new();
    for (path, _) in table.iter() {
        proxy.get(path, &[]).await;
        let again = proxy.get(path, &[]).await;
        out.push((path.to_string(), again.x_cache() == "HIT"));
    }
    out
}

fn http_date_ago(secs: i64) -> String {
    let now = std::time::SystemTime::now();
    let t = if secs >= 0 {
        now - Duration::from_secs(secs as u64)
    } else {
        now + Duration::from_secs(secs.unsigned_abs())
    };
    httpdate::fmt_http_date(t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_is_read_as_rfc_9111_says() {
    bounded(30, async {
        let in_an_hour = http_date_ago(-3600);
        let cases = vec![
            ("/max-age", vec![("cache-control", "max-age=3600".to_string())], true),
            (
                "/max-age-quoted",
                vec![("cache-control", "max-age=\"3600\"".to_string())],
                true,
            ),
            (
                "/max-age-case",
                vec![("cache-control", "MaX-AgE=3600".to_string())],
                true,
            ),
            (
                "/max-age-100a",
                vec![("cache-control", "max-age=3600a".to_string())],
                false,
            ),
            (
                "/max-age-space",
                vec![("cache-control", "max-age =3600".to_string())],
                false,
            ),
            (
                "/max-age-single-quoted",
                vec![("cache-control", "max-age='3600'".to_string())],
                false,
            ),
            (
                "/max-age-in-quotes",
                vec![("cache-control", "foo=\"max-age=3600\", max-age=0".to_string())],
                false,
            ),
            (
                "/max-age-twice",
                vec![("cache-control", "max-age=3600, max-age=0".to_string())],
                false,
            ),
            (
                "/age-invalid",
                vec![
                    ("cache-control", "max-age=3600".to_string()),
                    ("age", "abc".to_string()),
                ],
                false,
            ),
            (
                "/age-list",
                vec![
                    ("cache-control", "max-age=3600".to_string()),
                    ("age", "0, 0".to_string()),
                ],
                false,
            ),
            (
                "/age-old",
                vec![
                    ("cache-control", "max-age=3600".to_string()),
                    ("age", "7200".to_string()),
                ],
                false,
            ),
            ("/expires", vec![("expires", in_an_hour.clone())], true),
            (
                "/expires-rfc850",
                vec![("expires", "Sunday, 06-Nov-44 08:49:37 GMT".to_string())],
                true,
            ),
            (
                "/expires-asctime",
                vec![("expires", "Sun Nov  6 08:49:37 2044".to_string())],
                true,
            ),
            ("/expires-invalid", vec![("expires", "0".to_string())], false),
            ("/expires-past", vec![("expires", http_date_ago(10))], false),
            ("/heuristic", vec![("last-modified", http_date_ago(100_000))], true),
            ("/nothing", vec![], false),
        ];
        let paths: Vec<_> = cases.iter().map(|(p, h, _)| (*p, h.clone())).collect();
        let got = reused(&paths, EXACT).await;
        for ((path, reused), (_, _, want)) in got.iter().zip(&cases) {
            assert_eq!(reused, want, "{path}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_named_by_private_are_not_stored_but_reach_the_first_client() {
    bounded(30, async {
        let origin = Origin::start(|_, _| {
            reply(
                200,
                &[
                    ("cache-control", "max-age=60, private=\"Set-Cookie\""),
                    ("set-cookie", "session=first"),
                    ("x-shared", "yes"),
                ],
                "page",
            )
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        let first = proxy.get("/p", &[]).await;
        assert_eq!(first.header("set-cookie"), "session=first");
        let second = proxy.get("/p", &[]).await;
        assert_eq!(second.x_cache(), "HIT");
        assert_eq!(second.header("set-cookie"), "", "not stored");
        assert_eq!(second.header("x-shared"), "yes");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// What may be stored (RFC 9111 §3, §3.5, §5.2.2.3)
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_final_status_with_explicit_freshness_is_stored_when_allowed() {
    bounded(30, async {
        let origin = Origin::start(|_, req| {
            let code: u16 = req.path.trim_start_matches('/').parse().unwrap_or(200);
            let mut h = vec![("cache-control", "max-age=60")];
            if (300..400).contains(&code) {
                h.push(("location", "/elsewhere"));
            }
            reply(code, &h, format!("status {code}"))
        })
        .await;
        let exact = TestProxy::start(&origin.url(), EXACT).await;
        let wordpress = TestProxy::start(&origin.url(), &[]).await;
        for code in ["302", "307", "404", "410", "500", "503"] {
            let path = format!("/{code}");
            exact.get(&path, &[]).await;
            let again = exact.get(&path, &[]).await;
            assert_eq!(again.status.as_str(), code);
            assert_eq!(again.x_cache(), "HIT", "{code}");
            assert_eq!(again.text(), format!("status {code}"));
        }
        // The WordPress defaults store only their list of statuses.
        wordpress.get("/302", &[]).await;
        assert_ne!(wordpress.get("/302", &[]).await.x_cache(), "HIT");
        wordpress.get("/404", &[]).await;
        assert_eq!(wordpress.get("/404", &[]).await.x_cache(), "HIT");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_to_authorized_requests_are_shared_only_when_the_origin_says_so() {
    bounded(30, async {
        let origin = Origin::start(|_, req| {
            let cc = match req.path.as_str() {
                "/public" => "public, max-age=60",
                "/s-maxage" => "s-maxage=60",
                "/must-revalidate" => "max-age=60, must-revalidate",
                _ => "max-age=60",
            };
            reply(200, &[("cache-control", cc)], req.header("authorization").to_string())
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        for (path, shared) in [
            ("/private-by-default", false),
            ("/public", true),
            ("/s-maxage", true),
            ("/must-revalidate", true),
        ] {
            let first = proxy.get(path, &[("authorization", "Basic Zm9vOmJhcg==")]).await;
            assert_eq!(
                first.text(),
                "Basic Zm9vOmJhcg==",
                "{path}: the origin got the credentials"
            );
            let anonymous = proxy.get(path, &[]).await;
            assert_eq!(anonymous.x_cache() == "HIT", shared, "{path}");
            if !shared {
                assert_eq!(anonymous.text(), "", "{path}: nobody else gets the answer");
            }
        }
        // Not remembered as uncacheable: an anonymous answer is stored as usual.
        assert_eq!(proxy.get("/private-by-default", &[]).await.x_cache(), "HIT");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_is_stored_only_when_allowed_and_clear_site_data_never() {
    bounded(30, async {
        let origin = Origin::start(|_, req| match req.path.as_str() {
            "/cookie" => reply(200, &[("cache-control", "max-age=60"), ("set-cookie", "a=b")], "c"),
            _ => reply(
                200,
                &[
                    ("cache-control", "public, max-age=60"),
                    ("clear-site-data", "\"cookies\""),
                ],
                "logged out",
            ),
        })
        .await;
        let exact = TestProxy::start(&origin.url(), EXACT).await;
        let wordpress = TestProxy::start(&origin.url(), &[]).await;
        exact.get("/cookie", &[]).await;
        let again = exact.get("/cookie", &[]).await;
        assert_eq!((again.x_cache(), again.header("set-cookie")), ("HIT", "a=b"));
        wordpress.get("/cookie", &[]).await;
        assert_ne!(wordpress.get("/cookie", &[]).await.x_cache(), "HIT");
        for p in [&exact, &wordpress] {
            let first = p.get("/logout", &[]).await;
            assert_eq!(first.header("clear-site-data"), "\"cookies\"");
            assert!(
                first.header("cache-status").contains("clear-site-data"),
                "{:?}",
                first.headers
            );
            assert_ne!(p.get("/logout", &[]).await.x_cache(), "HIT");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_coding_the_proxy_does_not_decode_is_stored_as_it_came() {
    bounded(30, async {
        let origin = Origin::start(|_, _| {
            reply(
                200,
                &[("cache-control", "max-age=60"), ("content-encoding", "zstd")],
                "zzz",
            )
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        proxy.get("/z", &[]).await;
        let again = proxy.get("/z", &[("accept-encoding", "gzip")]).await;
        assert_eq!(again.x_cache(), "HIT");
        assert_eq!(
            (again.header("content-encoding"), again.text().as_str()),
            ("zstd", "zzz")
        );
        assert_eq!(origin.count(), 1);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Vary (RFC 9111 §4.1)
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_is_delivered_as_the_origin_wrote_it_and_selecting_values_are_normalised() {
    bounded(30, async {
        let origin = Origin::start(|_, req| {
            let body = format!("{}|{}", req.header("foo"), req.header("accept-language"));
            reply(
                200,
                &[("vary", "Foo, Accept-Language"), ("cache-control", "max-age=60")],
                body,
            )
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        let first = proxy.get("/v", &[("foo", "1, 2"), ("accept-language", "en, de")]).await;
        assert_eq!(first.header("vary"), "Foo, Accept-Language", "the origin's bytes");
        let fetched = origin.count();
        for same in [
            [("foo", "1,2"), ("accept-language", "de, en")],
            [("foo", " 1 , 2 "), ("accept-language", "eN, De")],
            [("foo", "1, 2"), ("accept-language", " en ,   de")],
        ] {
            let r = proxy.get("/v", &same).await;
            assert_eq!(r.x_cache(), "HIT", "{same:?}");
            assert_eq!(r.text(), "1, 2|en, de");
            assert_eq!(r.header("vary"), "Foo, Accept-Language");
        }
        assert_eq!(origin.count(), fetched);
        let other = proxy.get("/v", &[("foo", "2, 1"), ("accept-language", "en, de")]).await;
        assert_ne!(other.x_cache(), "HIT", "another Foo is another variant");
        assert_eq!(other.text(), "2, 1|en, de");
        let absent = proxy.get("/v", &[("accept-language", "en, de")]).await;
        assert_ne!(absent.x_cache(), "HIT", "no Foo is another variant");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Targeted cache control (RFC 9213)
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_cache_control_governs_this_cache_and_is_not_delivered() {
    bounded(30, async {
        let origin = Origin::start(|_, req| match req.path.as_str() {
            "/edge-hour" => reply(
                200,
                &[("cache-control", "max-age=60"), ("cdn-cache-control", "max-age=3600")],
                "a",
            ),
            "/browser-only" => reply(
                200,
                &[("cache-control", "no-store"), ("cdn-cache-control", "max-age=3600")],
                "b",
            ),
            "/edge-never" => reply(
                200,
                &[("cache-control", "max-age=3600"), ("cdn-cache-control", "no-store")],
                "c",
            ),
            _ => reply(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("cdn-cache-control", "max-age=10"),
                    ("strata-cache-control", "max-age=600"),
                ],
                "d",
            ),
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        for (path, ttl) in [
            ("/edge-hour", Some(3600)),
            ("/browser-only", Some(3600)),
            ("/edge-never", None),
            ("/own-field", Some(600)),
        ] {
            let first = proxy.get(path, &[]).await;
            assert_eq!(first.header("cdn-cache-control"), "", "{path}: removed on delivery");
            assert_eq!(first.header("strata-cache-control"), "", "{path}");
            let again = proxy.get(path, &[]).await;
            assert_eq!(again.x_cache() == "HIT", ttl.is_some(), "{path}");
            if let Some(ttl) = ttl {
                assert!((ttl - 5..=ttl).contains(&ttl_of(&again)), "{path}: {:?}", again.headers);
            }
            assert_eq!(again.header("cdn-cache-control"), "", "{path}");
            assert!(
                !again.header("cache-control").is_empty(),
                "{path}: Cache-Control is for browsers, delivered"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_updates_the_targeted_field_too() {
    bounded(30, async {
        let origin = Origin::start(|_, req| {
            if req.header("if-none-match") == "\"t\"" {
                reply(304, &[("cdn-cache-control", "max-age=600")], "")
            } else {
                reply(
                    200,
                    &[
                        ("etag", "\"t\""),
                        ("cache-control", "max-age=3600"),
                        ("cdn-cache-control", "max-age=1"),
                    ],
                    "t",
                )
            }
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        proxy.get("/t", &[]).await;
        expire().await;
        let r = proxy.get("/t", &[]).await;
        assert!(r.header("cache-status").contains("fwd-status=304"), "{:?}", r.headers);
        assert_eq!(r.header("cdn-cache-control"), "");
        let hit = proxy.get("/t", &[]).await;
        assert_eq!(hit.x_cache(), "HIT");
        assert!((595..=600).contains(&ttl_of(&hit)), "{:?}", hit.headers);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Ranges (RFC 9110 §14, §13.1.5)
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_of_a_stored_response_are_served_from_memory() {
    bounded(30, async {
        let body = "0123456789".repeat(40);
        let b = body.clone();
        let origin = Origin::start(move |_, req| {
            if req.headers.contains_key("range") {
                reply(500, &[], "the origin was asked for a range")
            } else {
                reply(
                    200,
                    &[
                        ("cache-control", "max-age=60"),
                        ("etag", "\"strong\""),
                        ("content-type", "text/plain"),
                        ("last-modified", "Wed, 01 Jan 2020 00:00:00 GMT"),
                    ],
                    b.clone(),
                )
            }
        })
        .await;
        for cfg in [EXACT, &[]] {
            let proxy = TestProxy::start(&origin.url(), cfg).await;
            proxy.get("/r", &[("accept-encoding", "gzip")]).await;
            let asked = origin.count();

            let one = proxy
                .get("/r", &[("range", "bytes=10-19"), ("accept-encoding", "gzip")])
                .await;
            assert_eq!(one.status, 206);
            assert_eq!(one.header("content-range"), "bytes 10-19/400");
            assert_eq!(one.header("content-encoding"), "", "ranges of the identity body");
            assert_eq!(one.text(), "0123456789");
            assert_eq!(one.x_cache(), "HIT");

            let suffix = proxy.get("/r", &[("range", "bytes=-5")]).await;
            assert_eq!((suffix.status.as_u16(), suffix.text().as_str()), (206, "56789"));
            let open = proxy.get("/r", &[("range", "bytes=395-")]).await;
            assert_eq!(
                (open.header("content-range"), open.text().as_str()),
                ("bytes 395-399/400", "56789")
            );

            let many = proxy.get("/r", &[("range", "bytes=0-1, 398-399")]).await;
            assert_eq!(many.status, 206);
            let ct = many.header("content-type").to_string();
            let boundary = ct.strip_prefix("multipart/byteranges; boundary=").expect("multipart");
            let text = many.text();
            assert!(text.contains("Content-Range: bytes 0-1/400\r\n\r\n01\r\n"), "{text}");
            assert!(
                text.contains("Content-Range: bytes 398-399/400\r\n\r\n89\r\n"),
                "{text}"
            );
            assert!(text.ends_with(&format!("--{boundary}--\r\n")));

            let none = proxy.get("/r", &[("range", "bytes=400-")]).await;
            assert_eq!(none.status, 416);
            assert_eq!(none.header("content-range"), "bytes */400");

            let matching = proxy
                .get("/r", &[("range", "bytes=0-0"), ("if-range", "\"strong\"")])
                .await;
            assert_eq!((matching.status.as_u16(), matching.text().as_str()), (206, "0"));
            let dated = proxy
                .get(
                    "/r",
                    &[("range", "bytes=0-0"), ("if-range", "Wed, 01 Jan 2020 00:00:00 GMT")],
                )
                .await;
            assert_eq!(dated.status, 206);
            let changed = proxy
                .get("/r", &[("range", "bytes=0-0"), ("if-range", "\"other\"")])
                .await;
            assert_eq!(
                (changed.status.as_u16(), changed.text().len()),
                (200, 400),
                "the whole body"
            );
            let head = proxy
                .request(Method::HEAD, "/r", &[("range", "bytes=0-0")], Bytes::new())
                .await;
            assert_eq!(head.status, 200, "no ranges for HEAD");
            assert_eq!(origin.count(), asked, "every range from memory");
        }
        // A range of what is not stored goes to the origin as it is, and stores nothing.
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        let miss = proxy.get("/elsewhere", &[("range", "bytes=0-1")]).await;
        assert_eq!((miss.status.as_u16(), miss.x_cache()), (500, "PASS"));
        assert!(
            miss.header("cache-status").contains("detail=range"),
            "{:?}",
            miss.headers
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Request directives (RFC 9111 §5.2.1) and the presets
// ---------------------------------------------------------------------------------------

/// An origin whose answers carry `ETag: "e"` and `max-age=<path's number>`, answering a
/// matching conditional request with 304.
async fn etag_origin() -> Origin {
    Origin::start(|n, req| {
        let max_age = req.path.trim_start_matches('/').parse::<u64>().unwrap_or(60);
        let cc = format!("max-age={max_age}");
        if req.header("if-none-match") == "\"e\"" {
            reply(304, &[("cache-control", cc.as_str())], "")
        } else {
            reply(
                200,
                &[("etag", "\"e\""), ("cache-control", cc.as_str())],
                format!("answer {n}"),
            )
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wordpress_preset_ignores_what_clients_ask_of_the_cache() {
    bounded(30, async {
        let origin = etag_origin().await;
        let proxy = TestProxy::start(&origin.url(), &[]).await;
        proxy.get("/60", &[]).await;
        for asks in [
            ("cache-control", "no-cache"),
            ("cache-control", "max-age=0"),
            ("cache-control", "no-store"),
            ("pragma", "no-cache"),
        ] {
            let r = proxy.get("/60", &[asks]).await;
            assert_eq!(r.x_cache(), "HIT", "{asks:?}: a forced reload never reaches the origin");
        }
        assert_eq!(origin.count(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_preset_honours_what_clients_ask_of_the_cache() {
    bounded(30, async {
        let origin = etag_origin().await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        proxy.get("/60", &[]).await;
        for asks in [("cache-control", "no-cache"), ("cache-control", "min-fresh=120")] {
            let before = origin.count();
            let r = proxy.get("/60", &[asks]).await;
            assert_eq!(r.text(), "answer 1", "{asks:?}: revalidated, the stored body");
            assert_eq!(origin.count(), before + 1, "{asks:?}");
            assert_eq!(origin.requests()[before].header("if-none-match"), "\"e\"", "{asks:?}");
        }
        let before = origin.count();
        for asks in [
            ("cache-control", "max-age=3600"),
            ("cache-control", "min-fresh=10"),
            ("pragma", "no-cache"),
        ] {
            assert_eq!(proxy.get("/60", &[asks]).await.x_cache(), "HIT", "{asks:?}");
        }
        assert_eq!(origin.count(), before);

        // only-if-cached: what is stored, or a 504 without asking the origin.
        assert_eq!(
            proxy.get("/60", &[("cache-control", "only-if-cached")]).await.x_cache(),
            "HIT"
        );
        let none = proxy.get("/30", &[("cache-control", "only-if-cached")]).await;
        assert_eq!(none.status, 504);
        assert_eq!(origin.count(), before);

        // no-store: fetched for this client, stored for nobody.
        let r = proxy.get("/30", &[("cache-control", "no-store")]).await;
        assert_eq!((r.status.as_u16(), r.x_cache()), (200, "PASS"));
        assert!(r.header("cache-status").contains("request-no-store"), "{:?}", r.headers);
        assert_eq!(
            proxy.get("/30", &[("cache-control", "only-if-cached")]).await.status,
            504
        );

        // max-stale: a stale response is acceptable to this client.
        let stored = proxy.get("/1", &[]).await.text();
        expire().await;
        let before = origin.count();
        let r = proxy.get("/1", &[("cache-control", "max-stale")]).await;
        assert_eq!((r.x_cache(), r.text()), ("STALE", stored));
        let r = proxy.get("/1", &[("cache-control", "max-stale=3600")]).await;
        assert_eq!(r.x_cache(), "STALE");
        assert_eq!(origin.count(), before);
        let r = proxy.get("/1", &[]).await;
        assert!(r.header("cache-status").contains("fwd-status=304"), "{:?}", r.headers);

        // max-age: /60 was last validated more than a second ago.
        let before = origin.count();
        assert_eq!(
            proxy.get("/60", &[("cache-control", "max-age=3600")]).await.x_cache(),
            "HIT"
        );
        let r = proxy.get("/60", &[("cache-control", "max-age=0")]).await;
        assert_eq!(origin.count(), before + 1, "older than the client accepts");
        assert_eq!(r.text(), "answer 1");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_carry_the_headers_the_operator_lists_and_no_other_unkeyed_one() {
    bounded(30, async {
        let origin = Origin::start(|_, req| {
            let body = format!("{}|{}", req.header("traceparent"), req.header("x-other"));
            reply(200, &[("cache-control", "max-age=60")], body)
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), &[("cache", "fill_headers = [\"Traceparent\"]")]).await;
        let r = proxy
            .get("/f", &[("traceparent", "00-abc-01"), ("x-other", "no")])
            .await;
        assert_eq!(r.text(), "00-abc-01|");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surrogate_control_targets_this_cache_by_the_device_token_it_announces() {
    bounded(30, async {
        let origin = Origin::start(|_, req| {
            let token = req
                .header("surrogate-capability")
                .split('=')
                .next()
                .unwrap_or("")
                .to_string();
            let sc = match req.path.as_str() {
                "/mine" => format!("max-age=3600;{token}"),
                _ => "max-age=3600;another-device".to_string(),
            };
            reply(
                200,
                &[("cache-control", "no-store"), ("surrogate-control", sc.as_str())],
                "s",
            )
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        proxy.get("/mine", &[]).await;
        let mine = proxy.get("/mine", &[]).await;
        assert_eq!(mine.x_cache(), "HIT");
        assert_eq!(mine.header("surrogate-control"), "", "not delivered");
        assert_eq!(
            origin.requests()[0].header("surrogate-capability"),
            "strata=\"Surrogate/1.0\""
        );
        proxy.get("/theirs", &[]).await;
        assert_ne!(proxy.get("/theirs", &[]).await.x_cache(), "HIT");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Serving stale (RFC 9111 §4.2.4, RFC 5861)
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_stale_only_when_the_origin_fails() {
    bounded(30, async {
        let origin = Origin::start(|n, _| match n {
            2 => reply(503, &[], "down"),
            _ => reply(
                200,
                &[("cache-control", "max-age=1, stale-if-error=60")],
                format!("v{n}"),
            ),
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        assert_eq!(proxy.get("/sie", &[]).await.text(), "v1");
        expire().await;
        let failed = proxy.get("/sie", &[]).await;
        assert_eq!((failed.status.as_u16(), failed.text().as_str()), (200, "v1"));
        assert_eq!(failed.x_cache(), "STALE");
        assert!(
            failed.header("cache-status").contains("fwd-status=503")
                && failed.header("cache-status").contains("stale-if-error"),
            "{:?}",
            failed.headers
        );
        // The origin answers again: no stale copy while it does (no stale-while-revalidate).
        let ok = proxy.get("/sie", &[]).await;
        assert_eq!((ok.x_cache(), ok.text().as_str()), ("MISS", "v3"));

        // A connection that cannot be made is an error too.
        let relay = crate::fixture::Relay::start(origin.fixture.addr.to_string()).await;
        let proxy = TestProxy::start(&relay.url(), EXACT).await;
        let stored = proxy.get("/sie2", &[]).await.text();
        expire().await;
        relay.cut();
        let r = proxy.get("/sie2", &[]).await;
        assert_eq!((r.status.as_u16(), r.x_cache(), r.text()), (200, "STALE", stored));
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Interim responses (RFC 9110 §15.2; RFC 8297 103 Early Hints)
// ---------------------------------------------------------------------------------------

/// An origin on raw TCP that answers every request with `interim` (one or more 1xx heads)
/// followed by a final `200` that may be stored.
async fn interim_origin(interim: &'static str) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    let Ok(n) = conn.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let reply = format!(
                    "{interim}HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 5\r\nconnection: close\r\n\r\nfinal"
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_from_the_origin_are_read_and_never_stored() {
    bounded(30, async {
        let (addr, count) = interim_origin(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n\
             HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n",
        )
        .await;
        for cfg in [EXACT, &[]] {
            let proxy = TestProxy::start(&format!("http://{addr}"), cfg).await;
            let first = proxy.get("/hinted", &[]).await;
            assert_eq!((first.status.as_u16(), first.text().as_str()), (200, "final"));
            assert_eq!(
                first.header("link"),
                "",
                "an early hint is not part of the final response"
            );
            let again = proxy.get("/hinted", &[]).await;
            assert_eq!(
                (again.x_cache(), again.text().as_str()),
                ("HIT", "final"),
                "the final response was stored"
            );
            assert_eq!(again.header("link"), "");
            assert_eq!(
                proxy.metric("strata_proxy_origin_interim_responses_total", "").await,
                3.0
            );
        }
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_stale_is_answered_from_a_kept_response_without_validators() {
    bounded(30, async {
        let origin = Origin::start(|n, _| reply(200, &[("cache-control", "max-age=1")], format!("v{n}"))).await;
        let proxy = TestProxy::start(&origin.url(), EXACT).await;
        proxy.get("/ms", &[]).await;
        expire().await;
        let r = proxy.get("/ms", &[("cache-control", "max-stale=60")]).await;
        assert_eq!((r.x_cache(), r.text().as_str()), ("STALE", "v1"));
        let r = proxy.get("/ms", &[]).await;
        assert_eq!(
            (r.x_cache(), r.text().as_str()),
            ("MISS", "v2"),
            "without max-stale, fetched anew"
        );
    })
    .await;
}
