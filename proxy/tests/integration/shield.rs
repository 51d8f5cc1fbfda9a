//! Shielding: three nodes in front of the real WordPress render each page once.
//!
//! The origin the nodes are given is a counting relay in front of WordPress: it counts the
//! requests for each URL, can hold answers to URLs marked `slow` (so a home node can be
//! killed or paused in the middle of its fetch), and stamps every answer with a generation
//! the test bumps (`X-Origin-Generation`) to tell a page fetched before a change from one
//! fetched after it. Every wait and loop is bounded.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::{sleep, timeout};

use crate::fixture::{full, Fixture, FixtureBody};
use crate::harness::{
    ban_at, ban_json, cluster_state, get_at, metric_at, poll, post_paths, wait_confirmed, wp_host, wp_origin, Resp,
    TestProxy,
};
use crate::nodes::Nodes;

/// How long any propagation may take before a test gives up.
const PROPAGATION: Duration = Duration::from_secs(10);
/// The answer field the relay stamps with its generation.
const GENERATION: &str = "x-origin-generation";

async fn bounded(secs: u64, f: impl Future<Output = ()>) {
    timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"));
}

/// A relay in front of the real WordPress that counts requests per URL.
struct CountingOrigin {
    fixture: Fixture,
    counts: Arc<parking_lot::Mutex<HashMap<String, usize>>>,
    /// When each request for a path and query arrived.
    arrivals: Arc<parking_lot::Mutex<HashMap<String, Vec<std::time::Instant>>>>,
    generation: Arc<AtomicUsize>,
    /// Milliseconds the answers to URLs containing `slow` are held.
    delay_ms: Arc<AtomicU64>,
}

impl CountingOrigin {
    async fn start() -> CountingOrigin {
        let counts: Arc<parking_lot::Mutex<HashMap<String, usize>>> = Arc::default();
        let arrivals: Arc<parking_lot::Mutex<HashMap<String, Vec<std::time::Instant>>>> = Arc::default();
        let generation = Arc::new(AtomicUsize::new(1));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let (c, g, d, t) = (counts.clone(), generation.clone(), delay_ms.clone(), arrivals.clone());
        let fixture = Fixture::start(move |req: Request<Incoming>| {
            let target = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
            *c.lock().entry(target.clone()).or_insert(0) += 1;
            t.lock()
                .entry(target.clone())
                .or_default()
                .push(std::time::Instant::now());
            // The generation as the request arrives: what the page was when it was asked for.
            let generation = g.load(Ordering::SeqCst);
            let delay = if target.contains("slow") {
                d.load(Ordering::SeqCst)
            } else {
                0
            };
            let client = client.clone();
            async move { relay(&client, req, &target, generation, delay).await }
        })
        .await;
        CountingOrigin {
            fixture,
            counts,
            arrivals,
            generation,
            delay_ms,
        }
    }

    fn url(&self) -> String {
        self.fixture.url()
    }

    /// Requests for one path and query so far.
    fn count(&self, target: &str) -> usize {
        self.counts.lock().get(target).copied().unwrap_or(0)
    }

    /// When the requests for one path and query arrived, in order.
    fn arrivals(&self, target: &str) -> Vec<std::time::Instant> {
        self.arrivals.lock().get(target).cloned().unwrap_or_default()
    }

    /// The site changed: answers from now on carry the next generation.
    fn bump(&self) -> usize {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }
}

/// Sends a request on to WordPress and answers with what it said, stamped.
async fn relay(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    req: Request<Incoming>,
    target: &str,
    generation: usize,
    delay: u64,
) -> Response<FixtureBody> {
    let mut b = Request::builder()
        .method(req.method().clone())
        .uri(format!("{}{target}", wp_origin()));
    for (k, v) in req.headers() {
        b = b.header(k, v);
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let answer = async {
        let resp = client.request(b.body(Full::new(body)).ok()?).await.ok()?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        Some((parts, body))
    };
    let Some((parts, body)) = answer.await else {
        return Response::builder()
            .status(502)
            .body(full("relay failed"))
            .expect("response");
    };
    sleep(Duration::from_millis(delay)).await;
    let mut out = Response::builder().status(parts.status);
    for (k, v) in &parts.headers {
        if !matches!(
            k.as_str(),
            "transfer-encoding" | "content-length" | "connection" | "keep-alive"
        ) {
            out = out.header(k, v);
        }
    }
    out.header(GENERATION, generation.to_string())
        .body(full(body))
        .expect("response")
}

fn generation_of(r: &Resp) -> String {
    r.header(GENERATION).to_string()
}

/// Cluster settings: heartbeats often; confirmation loose enough that a busy machine (or a
/// node paused on purpose) does not make nodes flush mid-test.
fn settings(shield_timeout: &'static str) -> impl Fn(usize) -> Vec<(&'static str, String)> {
    move |_| {
        vec![
            ("cluster", "heartbeat_interval = \"100ms\"".into()),
            ("cluster", "confirm_within = \"30s\"".into()),
            ("cluster", format!("shield_timeout = {shield_timeout:?}")),
        ]
    }
}

/// Waits until every node counts every sibling as a live member (its last sync succeeded and
/// it told its node id), and a little longer, so that no node's own startup flush (a ban of
/// everything made while it started unconfirmed) is still arriving when a test begins.
async fn wait_members(admins: &[SocketAddr]) {
    wait_confirmed(admins, PROPAGATION).await;
    for admin in admins {
        poll(
            &format!("{admin} to see every sibling up"),
            PROPAGATION,
            || async move {
                let s = cluster_state(*admin).await;
                s["siblings"]
                    .as_array()?
                    .iter()
                    .all(|sib| sib["up"] == true && sib["node"].is_string())
                    .then_some(())
            },
        )
        .await;
    }
    sleep(Duration::from_millis(500)).await;
}

/// A post's path, and its id (its `post:ID` tag).
async fn a_post() -> (String, u64) {
    let path = post_paths(1).await.into_iter().next().expect("a post");
    let url = format!("{}/wp-json/wp/v2/posts?per_page=1&_fields=id", wp_origin());
    let r = crate::harness::send(http::Method::GET, &url, &[("host", wp_host())], Bytes::new()).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("REST JSON");
    (path, v[0]["id"].as_u64().expect("post id"))
}

/// A URL of the post (a query WordPress ignores) whose home among nodes a, b, c is `home`.
fn url_with_home(path: &str, home: &str, label: &str) -> String {
    (0..1000)
        .map(|i| format!("{path}?shieldtest={label}-{i}"))
        .find(|url| {
            let (p, q) = url.split_once('?').expect("query");
            let key = strata_proxy::policy::cache_key(&wp_host(), p, Some(q));
            strata_proxy::shield::home(&key, ["a", "b", "c"]) == Some(home)
        })
        .expect("a URL with that home")
}

/// The sum of a metric over nodes.
async fn total(admins: &[SocketAddr], name: &str, labels: &str) -> f64 {
    let mut sum = 0.0;
    for a in admins {
        sum += metric_at(*a, name, labels).await;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_missing_a_page_costs_one_origin_render() {
    bounded(120, async {
        let origin = CountingOrigin::start().await;
        let nodes = TestProxy::start_cluster(&origin.url(), 3, settings("2s")).await;
        let admins: Vec<SocketAddr> = nodes.iter().map(|n| n.admin).collect();
        wait_members(&admins).await;
        let (path, _) = a_post().await;
        let host = wp_host();
        // One after the other, on each node; then all at once: every URL once at the origin,
        // whichever node is its home.
        for i in 0..3 {
            let url = format!("{path}?shieldtest=seq-{i}");
            for n in &nodes {
                let r = get_at(n.addr, &host, &url, &[]).await;
                assert_eq!(r.status, 200, "{url} via {}: {}", n.addr, r.text());
            }
            assert_eq!(origin.count(&url), 1, "{url} was rendered once for the three nodes");
            for n in &nodes {
                let r = get_at(n.addr, &host, &url, &[]).await;
                assert_eq!(r.x_cache(), "HIT", "{url} is stored on every node");
            }
        }
        for i in 0..3 {
            let url = format!("{path}?shieldtest=conc-{i}");
            let tasks: Vec<_> = nodes
                .iter()
                .map(|n| {
                    let (addr, host, url) = (n.addr, host.clone(), url.clone());
                    tokio::spawn(async move { get_at(addr, &host, &url, &[]).await })
                })
                .collect();
            for t in tasks {
                let r = t.await.expect("GET task");
                assert_eq!(r.status, 200, "{url}: {}", r.text());
            }
            assert_eq!(
                origin.count(&url),
                1,
                "{url} asked on three nodes at once was rendered once"
            );
        }
        // Two of the three nodes asked the home for each of the six URLs, and it answered.
        let asked = total(&admins, "strata_proxy_shield_requests_total", "result=\"hit\"").await
            + total(&admins, "strata_proxy_shield_requests_total", "result=\"filled\"").await;
        let served = total(&admins, "strata_proxy_shield_served_total", "result=\"hit\"").await
            + total(&admins, "strata_proxy_shield_served_total", "result=\"filled\"").await;
        assert_eq!(
            (asked, served),
            (12.0, 12.0),
            "two peer fills per URL, answered by its home"
        );
        let fallbacks = total(&admins, "strata_proxy_shield_requests_total", "result=\"fallback_").await;
        assert_eq!(fallbacks, 0.0, "no fill fell back to the origin");
        // A peer-filled miss says which node answered it.
        let url = url_with_home(&path, "c", "status");
        let r = get_at(nodes[0].addr, &host, &url, &[]).await;
        let status = r.header("cache-status");
        assert!(
            status.contains("fwd=uri-miss") && status.contains("fwd-peer=\"c\""),
            "Cache-Status of a miss filled by node c: {status}"
        );
        assert!(
            !r.headers.keys().any(|k| k.as_str().starts_with("x-strata-shield")),
            "the home's answer fields are not delivered: {:?}",
            r.headers
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_shielding_every_node_fetches_for_itself() {
    bounded(90, async {
        let origin = CountingOrigin::start().await;
        let nodes = TestProxy::start_cluster(&origin.url(), 3, |i| {
            let mut s = settings("2s")(i);
            s.push(("cluster", "shield = false".into()));
            s
        })
        .await;
        let admins: Vec<SocketAddr> = nodes.iter().map(|n| n.admin).collect();
        wait_members(&admins).await;
        let (path, _) = a_post().await;
        let url = format!("{path}?shieldtest=off");
        for n in &nodes {
            let r = get_at(n.addr, &wp_host(), &url, &[]).await;
            assert_eq!((r.status.as_u16(), r.x_cache()), (200, "MISS"));
        }
        assert_eq!(origin.count(&url), 3, "each node rendered the page itself");
        assert_eq!(total(&admins, "strata_proxy_shield_requests_total", "").await, 0.0);
    })
    .await;
}

/// Three node processes (a, b, c; `shield_timeout` 1 s) and a page whose home is c, its
/// answers held for `delay`; returns once node a's GET of it is under way and c's fetch has
/// reached the origin, with that GET's task.
async fn mid_fill(label: &str, delay: Duration) -> (CountingOrigin, Nodes, String, tokio::task::JoinHandle<Resp>) {
    let origin = CountingOrigin::start().await;
    let nodes = Nodes::start(&origin.url(), 3, settings("1s")).await;
    wait_members(&nodes.admins()).await;
    let (path, _) = a_post().await;
    let url = url_with_home(&path, "c", label);
    origin.set_delay(delay);
    let (from, host, u) = (nodes[0].addr, wp_host(), url.clone());
    let task = tokio::spawn(async move { get_at(from, &host, &u, &[]).await });
    poll("the home's fetch to reach the origin", PROPAGATION, || async {
        (origin.count(&url) >= 1).then_some(())
    })
    .await;
    (origin, nodes, url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_killed_mid_fill_leaves_the_asking_node_to_the_origin() {
    bounded(120, async {
        let (origin, mut nodes, url, task) = mid_fill("killed-slow", Duration::from_millis(1500)).await;
        // The page changes while the home's fetch is under way, and the home dies.
        origin.bump();
        nodes[2].kill();
        let r = task.await.expect("GET task");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            generation_of(&r),
            "2",
            "the asking node fetched the page itself, after the change"
        );
        assert_eq!(origin.count(&url), 2, "the home's fetch, then the asking node's own");
        let fell_back = metric_at(
            nodes[0].admin,
            "strata_proxy_shield_requests_total",
            "result=\"fallback_",
        )
        .await;
        assert_eq!(fell_back, 1.0, "one fallback counted");
        origin.set_delay(Duration::ZERO);
        let again = get_at(nodes[0].addr, &wp_host(), &url, &[]).await;
        assert_eq!((again.x_cache(), generation_of(&again).as_str()), ("HIT", "2"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_paused_mid_fill_is_waited_on_for_the_shield_timeout_only() {
    bounded(120, async {
        let (origin, nodes, _url, task) = mid_fill("paused-slow", Duration::from_millis(500)).await;
        origin.bump();
        nodes[2].pause();
        let r = task.await.expect("GET task");
        nodes[2].resume();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(generation_of(&r), "2", "not the copy the paused home was fetching");
        let slow = metric_at(
            nodes[0].admin,
            "strata_proxy_shield_requests_total",
            "result=\"fallback_slow\"",
        )
        .await;
        assert_eq!(slow, 1.0, "the fallback counted as a slow home");
        assert!(
            r.header("cache-status").contains("fwd=uri-miss") && !r.header("cache-status").contains("fwd-peer"),
            "filled from the origin: {}",
            r.header("cache-status")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_the_home_has_not_seen_keeps_its_older_copy_out() {
    bounded(120, async {
        let origin = CountingOrigin::start().await;
        let nodes = Nodes::start(&origin.url(), 3, settings("20s")).await;
        wait_members(&nodes.admins()).await;
        let (path, id) = a_post().await;
        let url = url_with_home(&path, "c", "banned");
        let host = wp_host();
        // The home holds generation 1.
        let r = get_at(nodes[2].addr, &host, &url, &[]).await;
        assert_eq!((r.status.as_u16(), generation_of(&r).as_str()), (200, "1"));
        // The post changes; the ban reaches node a while the home is paused (it cannot have
        // applied it), then node a is asked for the page.
        origin.bump();
        nodes[2].pause();
        ban_at(
            nodes[0].admin,
            &ban_json("tag", &format!("post:{id}"), None, false),
            None,
        )
        .await;
        let (a, h, u) = (nodes[0].addr, host.clone(), url.clone());
        let task = tokio::spawn(async move { get_at(a, &h, &u, &[]).await });
        sleep(Duration::from_millis(300)).await;
        nodes[2].resume();
        let r = task.await.expect("GET task");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            generation_of(&r),
            "2",
            "a request after the ban never gets the home's older copy ({})",
            r.header("cache-status")
        );
        let again = get_at(nodes[0].addr, &host, &url, &[]).await;
        assert_eq!(
            (again.x_cache(), generation_of(&again).as_str()),
            ("HIT", "2"),
            "and it is not what node a stored"
        );
        // Either the home answered first with its older copy, which node a judged banned and
        // replaced by its own origin fetch, or the home had applied the ban and fetched anew.
        let banned = metric_at(
            nodes[0].admin,
            "strata_proxy_shield_requests_total",
            "result=\"fallback_banned\"",
        )
        .await;
        let refetched = metric_at(nodes[2].admin, "strata_proxy_shield_served_total", "result=\"filled\"").await;
        assert!(
            banned + refetched >= 1.0,
            "banned {banned}, refetched at the home {refetched}"
        );
        eprintln!("peer-side ban judgement used: {}", banned >= 1.0);
    })
    .await;
}

/// What the stand-in home saw: the `bans` each shield request listed, by path.
type Listed = Arc<parking_lot::Mutex<Vec<(String, serde_json::Value)>>>;

/// A sibling that takes every sync (acknowledging its bans without applying them: a home
/// behind on bans) and answers shield requests as the home's rule says: with its old copy
/// of the page (stamped `old`, held `slow`ly for URLs containing `slow`) when none of the
/// bans the request lists selects it, and with a fetch of its own (through `origin`) when
/// one does (every page here is a post's, so a listed `post:` tag ban selects it).
async fn home_behind_on_bans(origin: String) -> (Fixture, Listed) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let listed: Listed = Arc::default();
    let seen = listed.clone();
    let fixture = Fixture::start(move |req: Request<Incoming>| {
        let (client, origin, seen) = (client.clone(), origin.clone(), seen.clone());
        async move {
            let path = req.uri().path().to_string();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if path == strata_wire::ban::SYNC_PATH {
                let reply = serde_json::json!({
                    "node": "z", "instance": 7, "latest": 0, "applied": json["latest"],
                });
                return Response::builder()
                    .header("content-type", "application/json")
                    .body(full(reply.to_string()))
                    .expect("response");
            }
            let target = json["path"].as_str().unwrap_or("/").to_string();
            seen.lock().push((target.clone(), json["bans"].clone()));
            let selects = json["bans"].as_array().is_some_and(|bans| {
                bans.iter()
                    .any(|b| b["value"].as_str().is_some_and(|v| v.starts_with("post:")))
            });
            let base = if selects { origin } else { wp_origin() };
            let wp = Request::get(format!("{base}{target}"))
                .header("host", wp_host())
                .body(Full::new(Bytes::new()))
                .expect("request");
            let Ok(answer) = client.request(wp).await else {
                return Response::builder()
                    .status(502)
                    .body(full("no WordPress"))
                    .expect("response");
            };
            let (parts, body) = answer.into_parts();
            let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            if !selects && target.contains("slow") {
                sleep(Duration::from_millis(1500)).await;
            }
            let mut resp = Response::builder()
                .status(parts.status)
                .body(full(body))
                .expect("response");
            for (k, v) in &parts.headers {
                if !matches!(
                    k.as_str(),
                    "transfer-encoding" | "content-length" | "connection" | "keep-alive"
                ) {
                    resp.headers_mut().append(k, v.clone());
                }
            }
            let h = resp.headers_mut();
            if selects {
                h.insert("x-strata-shield", http::HeaderValue::from_static("filled"));
            } else {
                h.insert("x-strata-shield", http::HeaderValue::from_static("hit"));
                h.insert(GENERATION, http::HeaderValue::from_static("old"));
            }
            resp
        }
    })
    .await;
    (fixture, listed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_behind_on_bans_is_told_them_and_a_ban_during_the_ask_is_judged_here() {
    bounded(90, async {
        let origin = CountingOrigin::start().await;
        let (home, listed) = home_behind_on_bans(origin.url()).await;
        let siblings = format!("siblings = [\"{}\"]", home.url());
        let node = TestProxy::start(
            &origin.url(),
            &[
                ("cluster", &siblings),
                ("cluster", "node_id = \"a\""),
                ("cluster", "heartbeat_interval = \"100ms\""),
                ("cluster", "confirm_within = \"30s\""),
            ],
        )
        .await;
        let admin = node.admin;
        poll("the home to be a live member", PROPAGATION, || async move {
            let s = cluster_state(admin).await;
            (s["siblings"][0]["up"] == true && s["siblings"][0]["node"] == "z").then_some(())
        })
        .await;
        let (path, id) = a_post().await;
        let homed_at_z = |label: &str| {
            (0..1000)
                .map(|i| format!("{path}?shieldtest={label}-{i}"))
                .find(|url| {
                    let (p, q) = url.split_once('?').expect("query");
                    let key = strata_proxy::policy::cache_key(&wp_host(), p, Some(q));
                    strata_proxy::shield::home(&key, ["a", "z"]) == Some("z")
                })
                .expect("a URL whose home is z")
        };
        // Control: no ban here, nothing listed; the home's copy is used and stored.
        let control = homed_at_z("control");
        let r = get_at(node.addr, &wp_host(), &control, &[]).await;
        assert_eq!((r.status.as_u16(), generation_of(&r).as_str()), (200, "old"));
        assert_eq!(
            listed.lock().last().map(|(_, b)| b.is_null()),
            Some(true),
            "no bans listed"
        );
        let again = get_at(node.addr, &wp_host(), &control, &[]).await;
        assert_eq!((again.x_cache(), generation_of(&again).as_str()), ("HIT", "old"));
        // A hard ban arrives here while the home is asked (it holds its answer): the old copy
        // is neither stored nor served; the node fetches from the origin itself.
        let during = homed_at_z("during-slow");
        let (a, h, u) = (node.addr, wp_host(), during.clone());
        let task = tokio::spawn(async move { get_at(a, &h, &u, &[]).await });
        poll("the home to be asked", PROPAGATION, || async {
            listed.lock().iter().any(|(p, _)| *p == during).then_some(())
        })
        .await;
        ban_at(admin, &ban_json("tag", &format!("post:{id}"), None, false), None).await;
        let r = task.await.expect("GET task");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(generation_of(&r), "1", "fetched from the origin after the ban");
        assert_eq!(origin.count(&during), 1);
        let banned = metric_at(
            admin,
            "strata_proxy_shield_requests_total",
            "result=\"fallback_banned\"",
        )
        .await;
        assert_eq!(banned, 1.0);
        // The next request tells the home of the ban (with its id); the home, which has not
        // applied it, fetches afresh and the node stores that.
        let after = homed_at_z("after");
        let r = get_at(node.addr, &wp_host(), &after, &[]).await;
        assert_eq!((r.status.as_u16(), generation_of(&r).as_str()), (200, "1"));
        let told = listed
            .lock()
            .iter()
            .rev()
            .find(|(p, _)| *p == after)
            .map(|(_, b)| b.clone());
        let told = told.expect("the home was asked");
        let ban = told
            .as_array()
            .and_then(|bans| bans.iter().find(|b| b["value"] == format!("post:{id}")))
            .unwrap_or_else(|| panic!("the ban is listed: {told}"));
        assert!(ban["id"].as_u64().is_some_and(|id| id != 0), "with its id: {ban}");
        assert_eq!(origin.count(&after), 1, "the home's own fetch");
        let again = get_at(node.addr, &wp_host(), &after, &[]).await;
        assert_eq!((again.x_cache(), generation_of(&again).as_str()), ("HIT", "1"));
        assert_eq!(
            metric_at(
                admin,
                "strata_proxy_shield_requests_total",
                "result=\"fallback_banned\""
            )
            .await,
            1.0,
            "no second fallback"
        );
    })
    .await;
}

/// Bans `body` on every node as the syncer does: one ban, one id, sent to each node, each
/// answering once its siblings acknowledged what it passed on.
async fn ban_everywhere(admins: &[SocketAddr], kind: &str, value: &str, soft: bool) {
    let id = strata_wire::ids::random_u64();
    let body = serde_json::json!({ "kind": kind, "value": value, "soft": soft, "id": id }).to_string();
    for a in admins {
        ban_at(*a, &body, Some(2000)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_ban_on_every_node_costs_one_render_for_the_cluster() {
    bounded(120, async {
        let origin = CountingOrigin::start().await;
        let nodes = TestProxy::start_cluster(&origin.url(), 3, settings("2s")).await;
        let admins: Vec<SocketAddr> = nodes.iter().map(|n| n.admin).collect();
        wait_members(&admins).await;
        let (path, id) = a_post().await;
        let host = wp_host();
        let one_by_one = format!("{path}?shieldtest=hard-seq");
        let at_once = format!("{path}?shieldtest=hard-conc");
        for url in [&one_by_one, &at_once] {
            for n in &nodes {
                let r = get_at(n.addr, &host, url, &[]).await;
                assert_eq!((r.status.as_u16(), generation_of(&r).as_str()), (200, "1"));
            }
            assert_eq!(origin.count(url), 1);
        }
        // A comment: the page changes, and post:ID is banned on every node.
        origin.bump();
        ban_everywhere(&admins, "tag", &format!("post:{id}"), false).await;
        for n in &nodes {
            let r = get_at(n.addr, &host, &one_by_one, &[]).await;
            assert_eq!(
                (r.status.as_u16(), generation_of(&r).as_str()),
                (200, "2"),
                "via {}",
                n.addr
            );
        }
        assert_eq!(
            origin.count(&one_by_one),
            2,
            "one render after the ban, for the three nodes"
        );
        let tasks: Vec<_> = nodes
            .iter()
            .map(|n| {
                let (addr, host, url) = (n.addr, host.clone(), at_once.clone());
                tokio::spawn(async move { get_at(addr, &host, &url, &[]).await })
            })
            .collect();
        for t in tasks {
            let r = t.await.expect("GET task");
            assert_eq!((r.status.as_u16(), generation_of(&r).as_str()), (200, "2"));
        }
        assert_eq!(origin.count(&at_once), 2, "asked on three nodes at once: one render");
        for n in &nodes {
            let r = get_at(n.addr, &host, &one_by_one, &[]).await;
            assert_eq!((r.x_cache(), generation_of(&r).as_str()), ("HIT", "2"));
        }
        let fallbacks = total(&admins, "strata_proxy_shield_requests_total", "result=\"fallback_").await;
        assert_eq!(fallbacks, 0.0, "no node fell back to the origin");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_soft_ban_a_stale_page_is_refreshed_once_for_the_cluster() {
    bounded(120, async {
        let origin = CountingOrigin::start().await;
        let nodes = TestProxy::start_cluster(&origin.url(), 3, settings("2s")).await;
        let admins: Vec<SocketAddr> = nodes.iter().map(|n| n.admin).collect();
        wait_members(&admins).await;
        let (path, id) = a_post().await;
        let host = wp_host();
        // Node c is the page's home; a and b ask it.
        let url = url_with_home(&path, "c", "soft");
        for n in &nodes {
            let r = get_at(n.addr, &host, &url, &[]).await;
            assert_eq!((r.status.as_u16(), generation_of(&r).as_str()), (200, "1"));
        }
        origin.bump();
        ban_everywhere(&admins, "tag", &format!("post:{id}"), true).await;
        for n in &nodes {
            let first = get_at(n.addr, &host, &url, &[]).await;
            assert_eq!(first.status, 200);
            if generation_of(&first) == "1" {
                assert_eq!(first.x_cache(), "STALE", "the old page only as STALE");
            }
            // Within a bounded number of requests, the new page (as a HIT or a MISS).
            let mut fresh = generation_of(&first) == "2";
            for _ in 0..100 {
                if fresh {
                    break;
                }
                sleep(Duration::from_millis(50)).await;
                let r = get_at(n.addr, &host, &url, &[]).await;
                assert_eq!(r.status, 200);
                fresh = generation_of(&r) == "2" && matches!(r.x_cache(), "HIT" | "MISS");
            }
            assert!(fresh, "{} serves the refreshed page", n.addr);
        }
        assert_eq!(
            origin.count(&url),
            2,
            "one render after the soft ban, for the three nodes"
        );
        let fallbacks = total(&admins, "strata_proxy_shield_requests_total", "result=\"fallback_").await;
        assert_eq!(fallbacks, 0.0, "no node fell back to the origin");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_page_under_a_stream_of_list_bans_is_rendered_once_per_list_refresh_for_the_cluster() {
    bounded(120, async {
        let origin = CountingOrigin::start().await;
        let list_refresh = Duration::from_secs(4);
        let nodes = TestProxy::start_cluster(&origin.url(), 3, |i| {
            let mut s = settings("2s")(i);
            s.push(("cache", "list_refresh = \"4s\"".into()));
            s
        })
        .await;
        let admins: Vec<SocketAddr> = nodes.iter().map(|n| n.admin).collect();
        wait_members(&admins).await;
        let host = wp_host();
        // The home page (a `list` page) with node c (the last) as its home; a and b ask c.
        let url = url_with_home("/", "c", "list");
        // The home stores it first, the others later: their refreshes come due while the
        // home's copy is not yet due, which is when they must not make the home render.
        let r = get_at(nodes[2].addr, &host, &url, &[]).await;
        assert_eq!((r.status.as_u16(), generation_of(&r).as_str()), (200, "1"));
        sleep(list_refresh / 2).await;
        for n in &nodes[..2] {
            let r = get_at(n.addr, &host, &url, &[]).await;
            assert_eq!((r.status.as_u16(), generation_of(&r).as_str()), (200, "1"));
        }
        assert_eq!(origin.count(&url), 1, "the others filled from the home");
        // Comments keep coming: the syncer's list ban (soft, lag allowed) on every node,
        // again and again, while every node is asked for the page; for three intervals.
        let until = std::time::Instant::now() + list_refresh * 3;
        let mut rounds = 0;
        while std::time::Instant::now() < until && rounds < 200 {
            rounds += 1;
            origin.bump();
            let body = serde_json::json!({
                "kind": "tag", "value": "list", "soft": true, "bounded": true,
                "id": strata_wire::ids::random_u64(),
            })
            .to_string();
            for a in &admins {
                ban_at(*a, &body, Some(2000)).await;
            }
            for n in &nodes {
                let r = get_at(n.addr, &host, &url, &[]).await;
                assert_eq!(r.status, 200, "round {rounds} via {}", n.addr);
            }
            sleep(Duration::from_millis(150)).await;
        }
        // Each render at least list_refresh after the one before, for the three nodes
        // together (the fetch that brought a copy ends before it is stored, so the interval
        // between two arrivals at the origin is at least list_refresh less a fetch).
        let arrivals = origin.arrivals(&url);
        assert!(
            arrivals.len() >= 2,
            "refreshed at least once: {} renders",
            arrivals.len()
        );
        for pair in arrivals.windows(2) {
            let gap = pair[1].duration_since(pair[0]);
            assert!(
                gap >= list_refresh.mul_f64(0.9),
                "two renders of the list page {gap:?} apart (list_refresh {list_refresh:?}): {} renders in all",
                arrivals.len()
            );
        }
        let lagging = total(&admins, "strata_proxy_shield_served_total", "result=\"lagging\"").await;
        assert!(lagging >= 1.0, "the home answered with its lagging copy: {lagging}");
        // Each node shows a newer page than the first.
        for n in &nodes {
            let mut newer = false;
            for _ in 0..150 {
                let r = get_at(n.addr, &host, &url, &[]).await;
                if generation_of(&r) != "1" {
                    newer = true;
                    break;
                }
                sleep(Duration::from_millis(100)).await;
            }
            assert!(newer, "{} shows a refreshed list page", n.addr);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_siblings_background_refresh_takes_the_homes_background_class_or_waits() {
    bounded(120, async {
        let origin = CountingOrigin::start().await;
        // One background place per node.
        let nodes = TestProxy::start_cluster(&origin.url(), 2, |i| {
            let mut s = settings("5s")(i);
            s.push(("origin", "concurrency = 2".into()));
            s.push(("origin", "background_max = 1".into()));
            s
        })
        .await;
        let admins: Vec<SocketAddr> = nodes.iter().map(|n| n.admin).collect();
        wait_members(&admins).await;
        let (a, b) = (&nodes[0], &nodes[1]);
        let (path, id) = a_post().await;
        let host = wp_host();
        // Two URLs of the post whose home is b (of the two nodes a and b); the first's
        // answers are held while the test says so.
        let with_home_b = |label: &str| {
            (0..1000)
                .map(|i| format!("{path}?shieldtest={label}-{i}"))
                .find(|url| {
                    let (p, q) = url.split_once('?').expect("query");
                    let key = strata_proxy::policy::cache_key(&wp_host(), p, Some(q));
                    strata_proxy::shield::home(&key, ["a", "b"]) == Some("b")
                })
                .expect("a URL with home b")
        };
        let (held, deferred) = (with_home_b("slow"), with_home_b("defer"));
        for url in [&held, &deferred] {
            for n in [a, b] {
                let r = get_at(n.addr, &host, url, &[]).await;
                assert_eq!((r.status.as_u16(), generation_of(&r).as_str()), (200, "1"));
            }
            assert_eq!(origin.count(url), 1);
        }
        origin.bump();
        ban_everywhere(&admins, "tag", &format!("post:{id}"), true).await;
        // b refreshes `held` in the background: its one background place is taken.
        origin.set_delay(Duration::from_secs(4));
        let r = get_at(b.addr, &host, &held, &[]).await;
        assert_eq!((r.x_cache(), generation_of(&r).as_str()), ("STALE", "1"));
        poll("b's refresh at the origin", PROPAGATION, || async {
            (origin.count(&held) == 2).then_some(())
        })
        .await;
        // a's refresh of `deferred` asks b, which has no background place: deferred, not
        // taken from b's visitors, and not sent to the origin by a either.
        let r = get_at(a.addr, &host, &deferred, &[]).await;
        assert_eq!((r.x_cache(), generation_of(&r).as_str()), ("STALE", "1"));
        poll("the deferral", PROPAGATION, || async {
            (metric_at(a.admin, "strata_proxy_shield_requests_total", "result=\"deferred\"").await >= 1.0).then_some(())
        })
        .await;
        assert!(metric_at(b.admin, "strata_proxy_shield_served_total", "result=\"deferred\"").await >= 1.0);
        assert_eq!(origin.count(&deferred), 1, "nobody rendered it meanwhile");
        assert_eq!(
            total(&admins, "strata_proxy_shield_requests_total", "result=\"fallback_").await,
            0.0,
            "a deferral is no fallback to the origin"
        );
        // Once b's place is free, a later request refreshes it: the new page, one render.
        origin.set_delay(Duration::ZERO);
        let mut fresh = false;
        for _ in 0..100 {
            let r = get_at(a.addr, &host, &deferred, &[]).await;
            if generation_of(&r) != "1" {
                fresh = true;
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
        assert!(fresh, "a serves the refreshed page");
        assert_eq!(origin.count(&deferred), 2, "one render for the refresh");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_ban_the_home_lacks_is_applied_there_at_once_and_not_again_on_arrival() {
    bounded(60, async {
        let origin = CountingOrigin::start().await;
        // One node, asked as a home directly (this test is the asking node).
        let nodes = TestProxy::start_cluster(&origin.url(), 1, settings("2s")).await;
        let home = &nodes[0];
        let (path, id) = a_post().await;
        let host = wp_host();
        let url = format!("{path}?shieldtest=early");
        let r = get_at(home.addr, &host, &url, &[]).await;
        assert_eq!((r.status.as_u16(), generation_of(&r).as_str()), (200, "1"));
        // The post changes; its ban has reached the asking node, not yet the home.
        origin.bump();
        let ban_id = strata_wire::ids::random_u64();
        let ban = serde_json::json!({ "kind": "tag", "value": format!("post:{id}"), "id": ban_id });
        let ask = serde_json::json!({
            "path": url,
            "headers": [["host", host.clone()]],
            "bans": [ban.clone()],
        })
        .to_string();
        let r = crate::harness::admin_signed(home.admin, http::Method::POST, "/shield", &ask).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(generation_of(&r), "2", "never the copy from before the listed ban");
        assert_eq!(
            metric_at(home.admin, "strata_proxy_shield_early_bans_total", "").await,
            1.0
        );
        assert_eq!(origin.count(&url), 2);
        // The ban itself arrives: its id is applied already, so the fresh copy stays.
        let answer = ban_at(home.admin, &ban.to_string(), None).await;
        assert_eq!(answer["removed"], 0, "{answer}");
        let r = get_at(home.addr, &host, &url, &[]).await;
        assert_eq!((r.x_cache(), generation_of(&r).as_str()), ("HIT", "2"));
        assert_eq!(origin.count(&url), 2, "no render more when the ban arrived");
    })
    .await;
}
