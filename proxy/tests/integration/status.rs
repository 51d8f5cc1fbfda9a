//! The `/status` page and `/status.json`: HTML for a browser, text for curl, a page that
//! loads nothing from elsewhere, and numbers that agree with `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response};
use serde_json::Value;

use crate::fixture::{full, Fixture, FixtureBody};
use crate::harness::{poll, send, Resp, TestProxy};

/// What Chromium sends for a page load.
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

/// Runs a test body, failing it after `secs` seconds.
async fn bounded(secs: u64, f: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"))
}

/// An origin whose paths say how to treat them: `/keep/…` cacheable, `/nostore/…`
/// uncacheable, `/broken` a 503.
async fn origin() -> Fixture {
    Fixture::start(|req| async move {
        let path = req.uri().path().to_string();
        let (status, cc) = if path.starts_with("/nostore/") {
            (200, "no-store")
        } else if path == "/broken" {
            (503, "no-store")
        } else {
            (200, "max-age=300")
        };
        let body = format!("<html><body>{path} {}</body></html>", "x".repeat(2000));
        Response::builder()
            .status(status)
            .header("cache-control", cc)
            .header("content-type", "text/html")
            .body(full(body))
            .expect("fixture response") as Response<FixtureBody>
    })
    .await
}

async fn admin_get(admin: SocketAddr, path: &str, accept: Option<&str>) -> Resp {
    let headers: Vec<(&str, String)> = accept.map(|a| ("accept", a.to_string())).into_iter().collect();
    send(Method::GET, &format!("http://{admin}{path}"), &headers, Bytes::new()).await
}

async fn status_json(admin: SocketAddr) -> Value {
    let r = admin_get(admin, "/status.json", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/json");
    serde_json::from_slice(&r.body).expect("/status.json is JSON")
}

/// The values of `attr="…"` in an HTML document.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!("{attr}=");
    html.match_indices(&needle)
        .filter_map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            rest[1..].split(quote).next()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_a_page_for_browsers_and_text_for_curl() {
    bounded(30, async {
        let fixture = origin().await;
        let p = TestProxy::start(&fixture.url(), &[]).await;
        p.get("/keep/a", &[]).await;
        p.get("/keep/a", &[]).await;

        let page = admin_get(p.admin, "/status", Some(BROWSER_ACCEPT)).await;
        assert_eq!(page.status, 200);
        assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
        assert_eq!(page.header("vary"), "accept");
        assert!(
            page.header("content-security-policy").contains("default-src 'none'"),
            "the page may load nothing from elsewhere: {:?}",
            page.headers
        );
        let html = page.text();
        assert!(html.starts_with("<!doctype html>"), "{html:.200}");
        assert!(
            html.contains("<script>") && html.contains("fetch(\"status.json\""),
            "embedded script"
        );
        assert!(html.contains("<style>"), "embedded style");
        for attr in ["src", "href", "action"] {
            for v in attribute_values(&html, attr) {
                assert!(
                    !(v.starts_with("http:") || v.starts_with("https:") || v.starts_with("//")),
                    "{attr}={v:?} points elsewhere"
                );
            }
        }
        for external in ["url(http", "url(//", "@import", "<link", "<iframe"] {
            assert!(!html.contains(external), "{external} in the page");
        }
        for id in [
            "req-hit",
            "req-miss",
            "hit-ratio",
            "cache-bytes",
            "cache-objects",
            "p99",
            "chart-rps",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "element #{id}");
        }

        // curl, and anyone asking for text, get today's summary.
        for accept in [None, Some("*/*"), Some("text/plain")] {
            let text = admin_get(p.admin, "/status", accept).await;
            assert_eq!(text.status, 200);
            assert_eq!(
                text.header("content-type"),
                "text/plain; charset=utf-8",
                "Accept {accept:?}"
            );
            assert!(text.text().contains("hit ratio 50.0%"), "{}", text.text());
        }

        let r = send(
            Method::POST,
            &format!("http://{}/status.json", p.admin),
            &[],
            Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 405);
        // Not on the public port.
        let public = p.get("/status.json", &[]).await;
        assert!(!public.text().contains("\"hit_ratio\""));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_agrees_with_metrics() {
    bounded(60, async {
        let fixture = origin().await;
        let p = TestProxy::start(&fixture.url(), &[]).await;
        // The sampler takes its first sample at start; wait for it so the rate has a base.
        poll("a first sample", Duration::from_secs(5), || async {
            let s = status_json(p.admin).await;
            s["requests_per_sec"].is_number().then_some(())
        })
        .await;

        for i in 0..5 {
            for _ in 0..3 {
                p.get(&format!("/keep/{i}"), &[]).await;
            }
        }
        for i in 0..2 {
            p.get(&format!("/nostore/{i}"), &[]).await;
        }
        p.get("/wp-admin/", &[]).await;
        p.get("/broken", &[]).await;

        let s = status_json(p.admin).await;
        let metrics = admin_get(p.admin, "/metrics", None).await.text();
        let metric = |name: &str, labels: &str| -> f64 {
            metrics
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(labels))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        for outcome in ["hit", "stale", "miss", "pass", "synth"] {
            assert_eq!(
                s["requests"][outcome].as_f64(),
                Some(metric("strata_proxy_requests_total", &format!("outcome=\"{outcome}\""))),
                "{outcome}: {s}"
            );
        }
        assert_eq!(s["requests"]["hit"], 10, "{s}");
        assert_eq!(
            s["requests"]["total"].as_f64(),
            Some(metric("strata_proxy_requests_total", ""))
        );
        assert_eq!(s["hit_ratio"].as_f64(), Some(metric("strata_proxy_hit_ratio", "")));
        assert!(s["hit_ratio"].as_f64().unwrap() > 0.5, "{s}");
        assert_eq!(
            s["cache"]["objects"].as_f64(),
            Some(metric("strata_proxy_cache_objects", ""))
        );
        assert_eq!(
            s["cache"]["bytes"].as_f64(),
            Some(metric("strata_proxy_cache_bytes", ""))
        );
        assert!(s["cache"]["bytes"].as_u64().unwrap() > 5 * 2000, "{s}");
        assert_eq!(
            s["cache"]["capacity_bytes"].as_f64(),
            Some(metric("strata_proxy_cache_capacity_bytes", ""))
        );
        assert_eq!(
            s["origin"]["requests"].as_f64(),
            Some(metric("strata_proxy_origin_requests_total", ""))
        );
        assert_eq!(
            s["origin"]["first_byte_count"].as_f64(),
            Some(metric("strata_proxy_origin_first_byte_seconds_count", ""))
        );
        assert!(
            s["origin"]["first_byte_p99_ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "{s}"
        );
        assert!(
            s["origin"]["first_byte_p99_ms_total"]
                .as_f64()
                .is_some_and(|ms| ms > 0.0),
            "{s}"
        );
        assert!(s["requests_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{s}");
        assert!(s["node"].as_str().is_some_and(|n| !n.is_empty()), "{s}");
        assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
        assert!(s["uptime_secs"].is_u64());
        assert_eq!(s["cluster"]["confirmed"], true, "{s}");
        assert_eq!(s["cluster"]["siblings"], serde_json::json!([]));
        assert!(s["comments"].is_null(), "comments are off: {s}");

        // The sampler keeps going: chart points appear, one a second, carrying the traffic.
        let s = poll("chart points", Duration::from_secs(5), || async {
            let s = status_json(p.admin).await;
            (s["history"].as_array().map_or(0, |h| h.len()) >= 2).then_some(s)
        })
        .await;
        for point in s["history"].as_array().expect("history") {
            assert!(point["t"].is_u64() && point["rps"].is_number(), "{point}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_shows_siblings_and_comments_when_configured() {
    bounded(30, async {
        let fixture = origin().await;
        let p = TestProxy::start(
            &fixture.url(),
            &[
                ("cluster", "node_id = \"status-a\""),
                ("cluster", "siblings = [\"http://127.0.0.1:9\"]"),
                ("comments", "enabled = true"),
            ],
        )
        .await;
        let s = poll("the sibling to be tried", Duration::from_secs(10), || async {
            let s = status_json(p.admin).await;
            s["cluster"]["siblings"][0]["last_error"].is_string().then_some(s)
        })
        .await;
        assert_eq!(s["node"], "status-a");
        let sibling = &s["cluster"]["siblings"][0];
        assert_eq!(sibling["url"], "http://127.0.0.1:9", "{s}");
        assert_eq!(sibling["up"], false, "{s}");
        for k in [
            "queued",
            "acked_seq",
            "applied_seq",
            "last_contact_ms",
            "confirmed_ms_ago",
        ] {
            assert!(sibling.get(k).is_some(), "{k} in {sibling}");
        }
        let comments = &s["comments"];
        assert!(comments["results"].is_object(), "{s}");
        assert_eq!(comments["total"], 0, "{s}");
        assert!(comments["verdict_p99_ms"].is_null(), "{s}");
    })
    .await;
}
