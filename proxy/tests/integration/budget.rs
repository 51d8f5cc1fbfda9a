//! The origin budget (`[origin] concurrency`, `background_max`): a visitor's miss never
//! waits behind background refreshes, refreshes that find no place are deferred, and a miss
//! that gets no place in time is refused with a 503. Against a programmable origin that
//! holds its answers behind a gate the test opens, and logs the order requests arrive in:
//! the order is proven by that log and the budget's counters, never by timing.

use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use tokio::sync::watch;

use crate::fixture::{full, Fixture};
use crate::harness::{ban_at, ban_json, metric_at, poll, wp_host, TestProxy};

/// An origin whose answers wait while its gate is closed; `log` has each request's path in
/// the order they arrived.
struct Gated {
    fixture: Fixture,
    log: Arc<parking_lot::Mutex<Vec<String>>>,
    gate: watch::Sender<bool>,
}

impl Gated {
    async fn start() -> Gated {
        let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (gate, open) = watch::channel(true);
        let seen = log.clone();
        let fixture = Fixture::start(move |req| {
            let (seen, mut open) = (seen.clone(), open.clone());
            async move {
                let path = req.uri().path().to_string();
                seen.lock().push(path.clone());
                // Bounded: the test opens the gate; 30 s is only a safety limit.
                let _ = tokio::time::timeout(Duration::from_secs(30), open.wait_for(|o| *o)).await;
                Response::builder()
                    .header("cache-control", "max-age=3600")
                    .header("content-type", "text/plain")
                    .body(full(format!("page {path}")))
                    .unwrap()
            }
        })
        .await;
        Gated { fixture, log, gate }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().clone()
    }

    fn close(&self) {
        self.gate.send_replace(false);
    }

    fn open(&self) {
        self.gate.send_replace(true);
    }
}

/// One place at the origin, held by a refresh: the visitor's miss that arrives next queues,
/// refreshes asked for while it waits are deferred (served stale, nothing sent), and the
/// place the refresh gives back goes to the visitor. Only then do refreshes start again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitors_miss_goes_before_refreshes_that_wait_for_the_origin() {
    let origin = Gated::start().await;
    let proxy = TestProxy::start(
        &origin.fixture.url(),
        &[
            ("origin", "concurrency = 1"),
            ("origin", "background_max = 1"),
            ("origin", "queue_timeout = \"30s\""),
        ],
    )
    .await;
    for path in ["/a", "/c", "/d"] {
        let r = proxy.get(path, &[]).await;
        assert_eq!((r.status, r.x_cache()), (StatusCode::OK, "MISS"), "{path}");
    }
    assert_eq!(origin.log(), ["/a", "/c", "/d"]);

    // The origin now holds its answers; every stored page becomes stale.
    origin.close();
    ban_at(proxy.admin, &ban_json("prefix", "/", Some(&wp_host()), true), None).await;
    let r = proxy.get("/a", &[]).await;
    assert_eq!(r.x_cache(), "STALE");
    poll("the refresh of /a at the origin", Duration::from_secs(10), || async {
        (origin.log().len() == 4).then_some(())
    })
    .await;
    let fg = "class=\"foreground\"";
    let bg = "class=\"background\"";
    assert_eq!(metric_at(proxy.admin, "strata_proxy_origin_in_flight", bg).await, 1.0);

    // A visitor's miss: no place, so it queues.
    let miss = tokio::spawn({
        let addr = proxy.addr;
        async move { crate::harness::get_at(addr, &wp_host(), "/b", &[]).await }
    });
    poll("the miss of /b queued", Duration::from_secs(10), || async {
        (metric_at(proxy.admin, "strata_proxy_origin_queued", fg).await == 1.0).then_some(())
    })
    .await;

    // Refreshes asked for while it waits do not start: served stale, nothing sent.
    let deferred = metric_at(proxy.admin, "strata_proxy_background_refreshes_deferred_total", "").await;
    for path in ["/c", "/d"] {
        let r = proxy.get(path, &[]).await;
        assert_eq!((r.x_cache(), r.text()), ("STALE", format!("page {path}")), "{path}");
    }
    assert_eq!(
        metric_at(proxy.admin, "strata_proxy_background_refreshes_deferred_total", "").await,
        deferred + 2.0
    );
    assert_eq!(
        origin.log(),
        ["/a", "/c", "/d", "/a"],
        "only the first refresh reached the origin"
    );
    assert_eq!(metric_at(proxy.admin, "strata_proxy_origin_queued", fg).await, 1.0);

    // The refresh answers: its place goes to the queued miss, before any refresh.
    origin.open();
    let r = tokio::time::timeout(Duration::from_secs(20), miss)
        .await
        .expect("the miss answered")
        .unwrap();
    assert_eq!(
        (r.status, r.x_cache(), r.text()),
        (StatusCode::OK, "MISS", "page /b".to_string())
    );
    assert_eq!(origin.log(), ["/a", "/c", "/d", "/a", "/b"]);
    assert!(metric_at(proxy.admin, "strata_proxy_origin_waited_seconds_count", "").await >= 1.0);

    // Nobody waits now: the next stale request's refresh starts.
    let r = proxy.get("/c", &[]).await;
    assert_eq!(r.x_cache(), "STALE");
    poll("the refresh of /c at the origin", Duration::from_secs(10), || async {
        (origin.log().len() == 6).then_some(())
    })
    .await;
    assert_eq!(origin.log()[5], "/c");
    poll("the budget idle", Duration::from_secs(10), || async {
        let busy = metric_at(proxy.admin, "strata_proxy_origin_in_flight", "").await;
        (busy == 0.0).then_some(())
    })
    .await;
    let status = crate::harness::admin_json(proxy.admin, "/status.json").await.unwrap();
    let budget = &status["origin"]["budget"];
    assert_eq!(budget["queued"]["foreground"], 0, "{budget}");
    assert!(budget["refreshes_deferred"].as_u64().unwrap() >= 2, "{budget}");
}

/// A miss that gets no place within `origin.queue_timeout` is answered 503 with a reason and
/// `Retry-After`, counted; the one holding the place is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_that_finds_no_place_in_time_gets_a_503_with_retry_after() {
    let origin = Gated::start().await;
    let proxy = TestProxy::start(
        &origin.fixture.url(),
        &[("origin", "concurrency = 1"), ("origin", "queue_timeout = \"300ms\"")],
    )
    .await;
    origin.close();
    let first = tokio::spawn({
        let addr = proxy.addr;
        async move { crate::harness::get_at(addr, &wp_host(), "/held", &[]).await }
    });
    poll("the first miss at the origin", Duration::from_secs(10), || async {
        (origin.log().len() == 1).then_some(())
    })
    .await;
    let r = proxy.get("/refused", &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.header("retry-after"), "1");
    assert!(r.text().contains("the origin is busy"), "{}", r.text());
    assert!(
        r.header("cache-status").contains("origin-busy"),
        "{}",
        r.header("cache-status")
    );
    assert_eq!(
        metric_at(proxy.admin, "strata_proxy_origin_refused_total", "").await,
        1.0
    );
    assert_eq!(origin.log(), ["/held"], "the refused miss never reached the origin");
    origin.open();
    let r = tokio::time::timeout(Duration::from_secs(20), first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.status, r.x_cache()), (StatusCode::OK, "MISS"));
}
