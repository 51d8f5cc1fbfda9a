//! Cluster-wide bans: three nodes on loopback that spread every invalidation to each other.
//!
//! In front of the real WordPress: an edit through one node shows on every node, and
//! `strata-proxy ban --tag post:ID` clears a post everywhere. In front of a programmable
//! origin: tag headers, write-triggered bans, prefix/regex/soft bans, arrays of bans, a ban
//! racing a fill, public PURGE, signatures, the ban answer, `/cluster` and metrics. With real
//! processes: a sibling paused, killed and restarted, a sibling whose outgoing queue
//! overflowed, and a node that cannot confirm it is current (flush and pass modes).
//!
//! Propagation is asynchronous, so a check that depends on it first waits — bounded — until
//! the sending node reports that every sibling acknowledged its bans (`GET /cluster`), or
//! sends the ban with `?wait=MS`; the GET that follows is then the *first* one after the
//! acknowledgement and must already see the change. Every wait and loop is bounded.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep, timeout};

use crate::fixture::{full, Fixture, FixtureBody};
use crate::harness::{
    admin_signed, ban_at, ban_json, cluster_state, get_at, lookup, metric_at, now, now_ms, poll, regex_escape, send,
    signed_headers_with_body, wait_acked, wait_confirmed, wp_host, wp_origin, Resp, TestProxy, SECRET,
};
use crate::nodes::{Nodes, BIN};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// How long any propagation may take before a test gives up.
const PROPAGATION: Duration = Duration::from_secs(5);

/// Runs a test body, failing it if it takes longer than `secs`.
async fn bounded(secs: u64, f: impl Future<Output = ()>) {
    timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"));
}

/// Cluster settings for in-process nodes: heartbeats often, and a confirmation bound loose
/// enough that a busy test machine does not make nodes flush in the middle of a test.
fn relaxed(_: usize) -> Vec<(&'static str, String)> {
    vec![
        ("cluster", "heartbeat_interval = \"100ms\"".into()),
        ("cluster", "confirm_within = \"5s\"".into()),
    ]
}

/// [`relaxed`] with shielding off, for tests of what bans do to each node's own cache: with
/// shielding a node's miss is filled from the key's home, so a page may already be cached,
/// new, on a node that was never asked for it, and a per-node MISS proves nothing.
fn per_node(i: usize) -> Vec<(&'static str, String)> {
    let mut e = relaxed(i);
    e.push(("cluster", "shield = false".into()));
    e
}

/// Requests the nodes sent to the origin so far, together.
async fn origin_requests(admins: &[SocketAddr]) -> f64 {
    let mut sum = 0.0;
    for a in admins {
        sum += metric_at(*a, "strata_proxy_origin_requests_total", "").await;
    }
    sum
}

fn admins(nodes: &[TestProxy]) -> Vec<SocketAddr> {
    nodes.iter().map(|n| n.admin).collect()
}

/// Starts `n` in-process nodes in front of `origin` and waits until all are confirmed.
async fn cluster(origin: &str, n: usize, extra: impl Fn(usize) -> Vec<(&'static str, String)>) -> Vec<TestProxy> {
    let nodes = TestProxy::start_cluster(origin, n, extra).await;
    wait_confirmed(&admins(&nodes), PROPAGATION).await;
    nodes
}

/// The site's Host (cache keys are `host/path?query`).
fn host() -> String {
    wp_host()
}

/// GET twice and check the second one is a hit: the object is cached on that node.
async fn warm(addr: SocketAddr, host: &str, path: &str) -> Resp {
    get_at(addr, host, path, &[]).await;
    let r = get_at(addr, host, path, &[]).await;
    assert_eq!(r.status, 200, "GET {path} via {addr}: {}", r.text());
    assert_eq!(r.x_cache(), "HIT", "{path} via {addr} is cached after two GETs");
    r
}

/// Warms every path on every node (see [`warm`]).
async fn warm_everywhere(addrs: &[SocketAddr], paths: &[&str]) {
    for addr in addrs {
        for path in paths {
            warm(*addr, &host(), path).await;
        }
    }
}

/// Asserts the X-Cache of the next GET of each path on each node.
async fn expect_cache(addrs: &[SocketAddr], host: &str, path: &str, want: &str, why: &str) {
    for addr in addrs {
        let r = get_at(*addr, host, path, &[]).await;
        assert_eq!(r.status, 200, "GET {host}{path} via {addr}");
        assert_eq!(r.x_cache(), want, "GET {host}{path} via {addr}: {why}");
    }
}

fn publics(nodes: &[TestProxy]) -> Vec<SocketAddr> {
    nodes.iter().map(|n| n.addr).collect()
}

/// Every sibling in a ban answer acknowledged it.
fn all_acked(answer: &serde_json::Value, siblings: usize) {
    let map = answer["siblings"]
        .as_object()
        .unwrap_or_else(|| panic!("ban answer has a siblings map: {answer}"));
    assert_eq!(map.len(), siblings, "one entry per sibling: {answer}");
    for (url, s) in map {
        assert_eq!(s["acked"], true, "sibling {url} acknowledged: {answer}");
        assert!(s["ms"].is_number(), "sibling {url} has its ack time in ms: {answer}");
    }
}

// ---------------------------------------------------------------------------------------
// A programmable site
// ---------------------------------------------------------------------------------------

/// An origin whose pages carry tag headers chosen by their path, and whose bodies name a
/// generation the test can bump (the site was "edited").
///
/// GET routes (first path segment): `/sk/…` Surrogate-Key `k-sk all-tags`; `/xkey/…` xkey
/// `k-xkey all-tags`; `/ct/…` Cache-Tag `k-ct,all-tags`; `/cg/…` Cache-Groups
/// `"k-cg", "all-tags"`; `/ls/…` X-LiteSpeed-Tag `k-ls,all-tags`; `/g/NAME` Cache-Groups
/// `"NAME"`; `/t/NAME` Surrogate-Key `NAME`; `/slow/NAME` the same after 500 ms; anything else
/// untagged. Every page is `max-age=300`.
///
/// `/wp/post-N` a WordPress singular page (`Link: <http://HOST/?p=N>; rel=shortlink`).
///
/// POST routes: `/write?group=G` 200 with `Cache-Group-Invalidation: G`; `/t/posted` 303 to
/// `http://HOST/t/moved`; `/fail?group=G` 500 with `Cache-Group-Invalidation: G`; anything
/// under `/wp-admin/` or `/wp-json/` 200.
/// The login cookie the programmable site takes for a logged-in editor.
const LOGIN_COOKIE: &str = "wordpress_logged_in_site=editor%7C1%7Ctoken";

struct Site {
    fixture: Fixture,
    generation: Arc<AtomicUsize>,
}

fn reply(status: u16, headers: &[(&str, String)], body: String) -> Response<FixtureBody> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(full(body)).expect("fixture response")
}

fn query_param(req: &Request<Incoming>, name: &str) -> String {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

impl Site {
    async fn start() -> Site {
        let generation = Arc::new(AtomicUsize::new(1));
        let g = generation.clone();
        let fixture = Fixture::start(move |req: Request<Incoming>| {
            let generation = g.load(Ordering::SeqCst);
            async move {
                let path = req.uri().path().to_string();
                if req.method() == Method::POST {
                    return match path.as_str() {
                        "/write" => reply(
                            200,
                            &[("cache-group-invalidation", query_param(&req, "group"))],
                            "written".into(),
                        ),
                        "/t/posted" => reply(
                            303,
                            &[("location", format!("http://{}/t/moved", host()))],
                            String::new(),
                        ),
                        "/fail" => reply(
                            500,
                            &[("cache-group-invalidation", query_param(&req, "group"))],
                            "failed".into(),
                        ),
                        p if p.starts_with("/wp-admin/") || p.starts_with("/wp-json/") => {
                            reply(200, &[("content-type", "application/json".into())], "{}".into())
                        }
                        _ => reply(404, &[], "no such write".into()),
                    };
                }
                if path == "/wp-admin/admin-ajax.php" && query_param(&req, "action") == "logged-in" {
                    // WordPress's own login check: `1` for the one login this site knows.
                    let cookie = req.headers().get("cookie").and_then(|v| v.to_str().ok()).unwrap_or("");
                    return if cookie.split("; ").any(|c| c == LOGIN_COOKIE) {
                        reply(200, &[], "1".into())
                    } else {
                        reply(400, &[], "0".into())
                    };
                }
                let mut segments = path.trim_start_matches('/').split('/');
                let first = segments.next().unwrap_or("");
                let last = path.rsplit('/').next().unwrap_or("").to_string();
                let tag: Option<(&str, String)> = match first {
                    "sk" => Some(("surrogate-key", "k-sk all-tags".into())),
                    "xkey" => Some(("xkey", "k-xkey all-tags".into())),
                    "ct" => Some(("cache-tag", "k-ct,all-tags".into())),
                    "cg" => Some(("cache-groups", "\"k-cg\", \"all-tags\"".into())),
                    "ls" => Some(("x-litespeed-tag", "k-ls,all-tags".into())),
                    "g" => Some(("cache-groups", format!("\"{last}\""))),
                    "t" | "slow" => Some(("surrogate-key", last)),
                    "wp" => Some((
                        "link",
                        format!(
                            "<http://{}/?p={}>; rel=shortlink",
                            host(),
                            last.trim_start_matches("post-")
                        ),
                    )),
                    _ => None,
                };
                if first == "slow" {
                    sleep(Duration::from_millis(500)).await;
                }
                let mut headers = vec![
                    ("content-type", "text/html; charset=utf-8".to_string()),
                    ("cache-control", "max-age=300".to_string()),
                ];
                headers.extend(tag);
                reply(
                    200,
                    &headers,
                    format!("<!doctype html><title>{path}</title><p>{path} generation {generation}</p>"),
                )
            }
        })
        .await;
        Site { fixture, generation }
    }

    fn url(&self) -> String {
        self.fixture.url()
    }

    /// "Edits" the site: pages fetched from now on carry the next generation.
    fn bump(&self) -> usize {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }
}

fn generation_of(r: &Resp) -> String {
    let text = r.text();
    text.rsplit("generation ")
        .next()
        .map(|s| s.trim_end_matches("</p>").to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The real WordPress: edits and the ban command
// ---------------------------------------------------------------------------------------

/// The post the edit test changes: on the home page's list, but not in the theme's Latest
/// Posts block (so other tests' pages do not change), and used by no other test.
const EDIT_SLUG: &str = "field-notes-193-busy-lanterns-and-the-long-tail";
/// The post the ban command test bans.
const BAN_SLUG: &str = "field-notes-192-busy-bridges-on-a-busy-day";
/// What the edit test appends to the title (and strips again, even after an interrupted run).
const EDITED: &str = " (edited ";

struct WpPost {
    id: u64,
    path: String,
    title: String,
}

async fn wp_post(slug: &str) -> WpPost {
    let url = format!(
        "{}/wp-json/wp/v2/posts?slug={slug}&context=view&_fields=id,link,title",
        wp_origin()
    );
    let r = send(Method::GET, &url, &[("host", host())], Bytes::new()).await;
    assert_eq!(r.status, 200, "WordPress origin not answering at {}", wp_origin());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("REST JSON");
    let p = &v[0];
    let prefix = format!("http://{}", host());
    WpPost {
        id: p["id"].as_u64().unwrap_or_else(|| panic!("post {slug} exists: {v}")),
        path: p["link"]
            .as_str()
            .expect("link")
            .trim_start_matches(&prefix)
            .to_string(),
        title: p["title"]["rendered"].as_str().expect("title").to_string(),
    }
}

/// A logged-in WordPress session, made through a proxy node.
struct WpSession {
    cookie: String,
    nonce: String,
}

impl WpSession {
    /// Logs in as admin through `node` (the login passes) and fetches a REST nonce.
    async fn login(node: &TestProxy) -> WpSession {
        let test_cookie = "wordpress_test_cookie=WP%20Cookie%20check";
        let r = node
            .request(
                Method::POST,
                "/wp-login.php",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("cookie", test_cookie),
                ],
                Bytes::from_static(b"log=admin&pwd=admin&wp-submit=Log+In&redirect_to=%2Fwp-admin%2F&testcookie=1"),
            )
            .await;
        assert_eq!(r.status, 302, "login as admin through the proxy: {}", r.text());
        let mut cookies = vec![test_cookie.to_string()];
        for v in r.headers.get_all("set-cookie") {
            let v = v.to_str().expect("ascii cookie");
            let pair = v.split(';').next().unwrap_or("").trim();
            if !pair.is_empty() && !pair.ends_with('=') {
                cookies.push(pair.to_string());
            }
        }
        let cookie = cookies.join("; ");
        assert!(cookie.contains("wordpress_logged_in_"), "logged in: {cookie}");
        let r = node
            .get("/wp-admin/admin-ajax.php?action=rest-nonce", &[("cookie", &cookie)])
            .await;
        assert_eq!(r.status, 200, "REST nonce: {}", r.text());
        WpSession {
            cookie,
            nonce: r.text().trim().to_string(),
        }
    }

    /// Sets a post's title with a REST write through `node`.
    async fn set_title(&self, node: &TestProxy, id: u64, title: &str) {
        let body = serde_json::json!({ "title": title }).to_string();
        let r = node
            .request(
                Method::POST,
                &format!("/wp-json/wp/v2/posts/{id}"),
                &[
                    ("content-type", "application/json"),
                    ("cookie", &self.cookie),
                    ("x-wp-nonce", &self.nonce),
                ],
                Bytes::from(body),
            )
            .await;
        assert_eq!(r.status, 200, "REST edit of post {id}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordpress_edit_through_one_node_shows_on_every_node() {
    bounded(90, async {
        let nodes = cluster(&wp_origin(), 3, relaxed).await;
        let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
        let post = wp_post(EDIT_SLUG).await;
        let base = post.title.split(EDITED).next().unwrap_or(&post.title).to_string();
        let session = WpSession::login(a).await;
        if base != post.title {
            // An earlier run was interrupted between its edit and its restore.
            session.set_title(a, post.id, &base).await;
        }
        // B and C hold the old title: the post and the home page are hits.
        for node in [b, c] {
            for path in [post.path.as_str(), "/"] {
                let r = warm(node.addr, &host(), path).await;
                assert!(r.text().contains(&base), "{path} shows {base:?} before the edit");
            }
        }
        let before = cluster_state(a.admin).await["seq"].as_u64().expect("seq");
        let edited = format!("{base}{EDITED}{})", now());
        session.set_title(a, post.id, &edited).await;
        // The edit made node A ban (post:ID, list, wp:recent-posts) and broadcast it; once both
        // siblings acknowledged, the very next GET on each node must show the new title.
        let seq = wait_acked(a.admin, PROPAGATION).await;
        let mut problems = Vec::new();
        if seq <= before {
            problems.push(format!("the edit through A made no ban (seq {before} → {seq})"));
        }
        // With shielding, each page is rendered once for the cluster (by its home), and a
        // node may answer it as a HIT from what its home fetched after the edit.
        let rendered = origin_requests(&admins(&nodes)).await;
        for node in [b, c, a] {
            for path in [post.path.as_str(), "/"] {
                let r = node.get(path, &[]).await;
                if r.status != 200 || !r.text().contains(&edited) {
                    problems.push(format!(
                        "first GET of {path} via {} after the edit: status {}, X-Cache {}, new title {} \
                         (want 200, shown)",
                        node.addr,
                        r.status,
                        r.x_cache(),
                        if r.text().contains(&edited) { "shown" } else { "missing" }
                    ));
                }
            }
        }
        let renders = origin_requests(&admins(&nodes)).await - rendered;
        if renders != 2.0 {
            problems.push(format!(
                "{renders} origin requests for the two pages on three nodes after the edit (want 2)"
            ));
        }
        // Restore the title whatever happened, then report.
        session.set_title(a, post.id, &base).await;
        wait_acked(a.admin, PROPAGATION).await;
        let r = b.get(&post.path, &[]).await;
        assert!(r.text().contains(&base), "the restored title shows on B");
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    })
    .await;
}

/// A config file for `strata-proxy ban` that points at an admin listener, with its secret
/// file; both are removed when it is dropped.
struct BanConfig {
    path: std::path::PathBuf,
    secret: std::path::PathBuf,
}

impl Drop for BanConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(&self.secret);
    }
}

fn ban_config(name: &str, admin: SocketAddr, secret: &str) -> BanConfig {
    let dir = std::env::temp_dir();
    let secret_path = dir.join(format!("strata-it-{name}-secret-{}", std::process::id()));
    std::fs::write(&secret_path, secret).expect("write secret");
    let path = dir.join(format!("strata-it-{name}-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\nadmin_listen = \"{admin}\"\n[origin]\nurl = \"{}\"\n\
             [cluster]\nsecret_file = {:?}\n",
            wp_origin(),
            secret_path.display().to_string()
        ),
    )
    .expect("write config");
    BanConfig {
        path,
        secret: secret_path,
    }
}

async fn ban_command(cfg: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("ban").arg("--config").arg(cfg).args(args);
    timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("ban command finishes within 30 s")
        .expect("run strata-proxy ban")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_command_by_post_tag_clears_the_post_on_every_node() {
    bounded(90, async {
        // Each node's own cache is the subject: shielding off (see `per_node`).
        let nodes = cluster(&wp_origin(), 3, per_node).await;
        let post = wp_post(BAN_SLUG).await;
        let other = wp_post(EDIT_SLUG).await;
        for node in &nodes {
            warm(node.addr, &host(), &post.path).await;
            warm(node.addr, &host(), &other.path).await;
        }
        let cfg = ban_config("ban-cmd", nodes[0].admin, SECRET);
        let tag = format!("post:{}", post.id);
        let out = ban_command(&cfg.path, &["--tag", &tag, "--wait", "3000"]).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ban --tag {tag}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("ban prints its JSON answer ({e}): {stdout}"));
        assert!(
            answer["removed"].as_u64().unwrap_or(0) >= 1,
            "A removed the post: {answer}"
        );
        all_acked(&answer, 2);
        for node in &nodes {
            let r = node.get(&post.path, &[]).await;
            assert_eq!(r.x_cache(), "MISS", "{tag} via {} after the ban command", node.addr);
            let r = node.get(&other.path, &[]).await;
            assert_eq!(r.x_cache(), "HIT", "another post via {} is untouched", node.addr);
        }
        // A refused ban: wrong secret → non-zero exit with a message; nothing invalidated.
        let wrong = ban_config("ban-cmd-wrong", nodes[0].admin, "another-secret-entirely-0123");
        let out = ban_command(&wrong.path, &["--tag", &tag]).await;
        assert!(!out.status.success(), "a refused ban exits non-zero");
        assert!(!out.stderr.is_empty(), "a refused ban says why");
        // Unreachable node: non-zero with a message.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let gone = ban_config("ban-cmd-gone", closed, SECRET);
        let out = ban_command(&gone.path, &["--all"]).await;
        assert!(!out.status.success(), "an unreachable node makes the ban command fail");
        assert!(!out.stderr.is_empty(), "and say why");
        for node in &nodes {
            assert_eq!(node.get(&post.path, &[]).await.x_cache(), "HIT");
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Tags, writes, ban kinds, soft bans, fills in flight
// ---------------------------------------------------------------------------------------

/// The paths of [`Site`] carrying tag headers, with the tag each one names alone.
const TAGGED: [(&str, &str); 5] = [
    ("/sk/1", "k-sk"),
    ("/xkey/1", "k-xkey"),
    ("/ct/1", "k-ct"),
    ("/cg/1", "k-cg"),
    ("/ls/1", "k-ls"),
];
const TAG_HEADERS: [&str; 5] = ["surrogate-key", "xkey", "cache-tag", "cache-groups", "x-litespeed-tag"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_headers_tag_objects_and_a_tag_ban_removes_exactly_those_on_every_node() {
    bounded(90, async {
        let site = Site::start().await;
        // Each node's own cache is the subject: shielding off (see `per_node`).
        let nodes = cluster(&site.url(), 3, per_node).await;
        let addrs = publics(&nodes);
        let paths: Vec<&str> = TAGGED.iter().map(|(p, _)| *p).chain(["/plain/1"]).collect();
        for addr in &addrs {
            for path in &paths {
                let first = get_at(*addr, &host(), path, &[]).await;
                let hit = warm(*addr, &host(), path).await;
                for r in [&first, &hit] {
                    for h in TAG_HEADERS {
                        assert_eq!(r.header(h), "", "{h} is stripped before delivery of {path}");
                    }
                }
            }
        }
        for (path, tag) in TAGGED {
            let url = format!("http://{}{path}", host());
            let found = lookup(nodes[0].admin, &url)
                .await
                .unwrap_or_else(|| panic!("{url} is cached"));
            let tags: Vec<&str> = found["tags"]
                .as_array()
                .expect("tags")
                .iter()
                .filter_map(|t| t.as_str())
                .collect();
            assert!(
                tags.contains(&tag) && tags.contains(&"all-tags"),
                "{path} is tagged {tag} and all-tags: {found}"
            );
            assert!(found["key"].as_str().is_some_and(|k| k.contains(path)), "{found}");
        }
        let absent = format!("http://{}/never/fetched", host());
        assert!(
            lookup(nodes[0].admin, &absent).await.is_none(),
            "lookup of an uncached URL is 404"
        );
        let answer = ban_at(
            nodes[0].admin,
            &ban_json("tag", "all-tags", Some("other.example.test"), false),
            Some(3000),
        )
        .await;
        assert_eq!(answer["removed"], 0, "a tag ban limited to another host: {answer}");
        for (banned, tag) in TAGGED {
            let answer = ban_at(nodes[0].admin, &ban_json("tag", tag, None, false), Some(3000)).await;
            assert_eq!(answer["removed"], 1, "ban of {tag} removes one object on A: {answer}");
            all_acked(&answer, 2);
            for path in &paths {
                let want = if *path == banned { "MISS" } else { "HIT" };
                expect_cache(&addrs, &host(), path, want, &format!("after the ban of tag {tag}")).await;
            }
        }
        let answer = ban_at(nodes[0].admin, &ban_json("tag", "all-tags", None, false), Some(3000)).await;
        assert_eq!(answer["removed"], 5, "{answer}");
        for (path, _) in TAGGED {
            expect_cache(&addrs, &host(), path, "MISS", "after the ban of all-tags").await;
        }
        expect_cache(&addrs, &host(), "/plain/1", "HIT", "an untagged page survives tag bans").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_headers_are_delivered_when_stripping_is_off() {
    bounded(30, async {
        let site = Site::start().await;
        let nodes = cluster(&site.url(), 1, |i| {
            let mut e = relaxed(i);
            e.push(("bans", "strip_tag_headers = false".into()));
            e
        })
        .await;
        let r = nodes[0].get("/sk/keep", &[]).await;
        assert_eq!(r.header("surrogate-key"), "k-sk all-tags");
        let r = nodes[0].get("/sk/keep", &[]).await;
        assert_eq!((r.x_cache(), r.header("surrogate-key")), ("HIT", "k-sk all-tags"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_invalidate_their_group_target_and_location_on_every_node() {
    bounded(90, async {
        let site = Site::start().await;
        // Each node's own cache is the subject: shielding off (see `per_node`).
        let nodes = cluster(&site.url(), 3, per_node).await;
        let addrs = publics(&nodes);
        let a = &nodes[0];
        let paths = ["/g/grp-1", "/g/grp-2", "/t/posted", "/t/moved", "/t/bystander"];
        for addr in &addrs {
            for path in paths {
                warm(*addr, &host(), path).await;
            }
        }
        // A failed write invalidates nothing.
        let r = a.request(Method::POST, "/fail?group=grp-2", &[], Bytes::new()).await;
        assert_eq!(r.status, 500);
        wait_acked(a.admin, PROPAGATION).await;
        expect_cache(&addrs, &host(), "/g/grp-2", "HIT", "a 500 write bans nothing").await;
        // Cache-Group-Invalidation on a successful POST response.
        let r = a.request(Method::POST, "/write?group=grp-1", &[], Bytes::new()).await;
        assert_eq!(r.status, 200);
        wait_acked(a.admin, PROPAGATION).await;
        expect_cache(&addrs, &host(), "/g/grp-1", "MISS", "Cache-Group-Invalidation: grp-1").await;
        expect_cache(&addrs, &host(), "/g/grp-2", "HIT", "another group is untouched").await;
        // The target URL and its same-host Location.
        let r = a.request(Method::POST, "/t/posted", &[], Bytes::new()).await;
        assert_eq!(r.status, 303);
        wait_acked(a.admin, PROPAGATION).await;
        expect_cache(
            &addrs,
            &host(),
            "/t/posted",
            "MISS",
            "the URL a successful POST went to",
        )
        .await;
        expect_cache(&addrs, &host(), "/t/moved", "MISS", "the Location of a successful POST").await;
        expect_cache(&addrs, &host(), "/t/bystander", "HIT", "other pages are untouched").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordpress_write_rules_ban_the_post_lists_and_html_but_not_for_heartbeats() {
    bounded(90, async {
        let site = Site::start().await;
        // Each node's own cache is the subject: shielding off (see `per_node`).
        let nodes = cluster(&site.url(), 2, per_node).await;
        let addrs = publics(&nodes);
        let a = &nodes[0];
        // Singular pages (tagged post:N from their shortlink) and a list page (no shortlink).
        let paths = ["/wp/post-77", "/wp/post-78", "/t/listing"];
        warm_everywhere(&addrs, &paths).await;
        let url = format!("http://{}/wp/post-77", host());
        let found = lookup(a.admin, &url).await.expect("cached");
        assert!(
            found["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == "post:77")),
            "the shortlink tags the page post:77: {found}"
        );
        // A REST write to post 77: post:77, list, wp:recent-posts.
        let r = a
            .request(
                Method::POST,
                "/wp-json/wp/v2/posts/77",
                &[("content-type", "application/json")],
                Bytes::from_static(b"{\"title\":\"x\"}"),
            )
            .await;
        assert_eq!(r.status, 200);
        wait_acked(a.admin, PROPAGATION).await;
        expect_cache(&addrs, &host(), "/wp/post-77", "MISS", "REST write to post 77").await;
        expect_cache(&addrs, &host(), "/t/listing", "MISS", "a REST write bans the lists").await;
        expect_cache(&addrs, &host(), "/wp/post-78", "HIT", "another post stays").await;
        // An admin-ajax heartbeat changes nothing a visitor sees.
        warm_everywhere(&addrs, &paths).await;
        let form = [("content-type", "application/x-www-form-urlencoded")];
        let r = a
            .request(
                Method::POST,
                "/wp-admin/admin-ajax.php",
                &form,
                Bytes::from_static(b"action=heartbeat&interval=60"),
            )
            .await;
        assert_eq!(r.status, 200);
        wait_acked(a.admin, PROPAGATION).await;
        for path in paths {
            expect_cache(&addrs, &host(), path, "HIT", "a heartbeat bans nothing").await;
        }
        // A wp-admin write from nobody, or with a login cookie WordPress does not take:
        // it cannot have changed anything, so it bans nothing a visitor sees.
        for cookie in [None, Some("wordpress_logged_in_site=forged")] {
            let mut headers = form.to_vec();
            headers.extend(cookie.map(|c| ("cookie", c)));
            let r = a
                .request(
                    Method::POST,
                    "/wp-admin/options.php",
                    &headers,
                    Bytes::from_static(b"option_page=general&blogname=x"),
                )
                .await;
            assert_eq!(r.status, 200);
            wait_acked(a.admin, PROPAGATION).await;
            for path in paths {
                expect_cache(
                    &addrs,
                    &host(),
                    path,
                    "HIT",
                    "an unconfirmed wp-admin write bans no page",
                )
                .await;
            }
        }
        assert_eq!(
            metric_at(a.admin, "strata_proxy_login_checks_total", "result=\"no\"").await,
            1.0
        );
        // The same write from a confirmed login: html and list.
        let mut headers = form.to_vec();
        headers.push(("cookie", LOGIN_COOKIE));
        let r = a
            .request(
                Method::POST,
                "/wp-admin/options.php",
                &headers,
                Bytes::from_static(b"option_page=general&blogname=x"),
            )
            .await;
        assert_eq!(r.status, 200);
        wait_acked(a.admin, PROPAGATION).await;
        for path in paths {
            expect_cache(&addrs, &host(), path, "MISS", "a wp-admin write bans html and lists").await;
        }
        assert_eq!(
            metric_at(a.admin, "strata_proxy_login_checks_total", "result=\"yes\"").await,
            1.0
        );
        assert_eq!(
            metric_at(a.admin, "strata_proxy_writes_total", "trust=\"logged-in\"").await,
            1.0
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_command_sends_every_kind() {
    bounded(60, async {
        let site = Site::start().await;
        // Each node's own cache is the subject: shielding off (see `per_node`).
        let nodes = cluster(&site.url(), 2, |i| {
            let mut e = per_node(i);
            e.push(("cache", "grace = \"60s\"".into()));
            e
        })
        .await;
        let addrs = publics(&nodes);
        let cfg = ban_config("ban-kinds", nodes[0].admin, SECRET);
        let h = host();
        let paths = ["/k/a1", "/k/a2", "/k/b1", "/k/c1"];
        for addr in &addrs {
            for path in paths {
                warm(*addr, &h, path).await;
            }
        }
        let run = |args: Vec<String>| {
            let cfg = cfg.path.clone();
            async move {
                let mut all = args.clone();
                all.extend(["--wait".to_string(), "3000".to_string()]);
                let args: Vec<&str> = all.iter().map(String::as_str).collect();
                let out = ban_command(&cfg, &args).await;
                let stdout = String::from_utf8_lossy(&out.stdout).to_string();
                assert!(
                    out.status.success(),
                    "ban {args:?}: {}\n{stdout}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let answer: serde_json::Value = serde_json::from_str(stdout.trim())
                    .unwrap_or_else(|e| panic!("ban {args:?} prints JSON ({e}): {stdout}"));
                all_acked(&answer, 1);
                answer
            }
        };
        let answer = run(vec!["--prefix".into(), "/k/a".into(), "--host".into(), h.clone()]).await;
        assert_eq!(answer["removed"], 2, "{answer}");
        expect_cache(&addrs, &h, "/k/a1", "MISS", "ban --prefix /k/a --host").await;
        expect_cache(&addrs, &h, "/k/b1", "HIT", "outside the prefix").await;
        let answer = run(vec!["--regex".into(), format!("^{}/k/b", regex_escape(&h))]).await;
        assert_eq!(answer["removed"], 1, "{answer}");
        expect_cache(&addrs, &h, "/k/b1", "MISS", "ban --regex").await;
        site.bump();
        let answer = run(vec!["--url".into(), format!("http://{h}/k/c1"), "--soft".into()]).await;
        assert_eq!(answer["removed"], 1, "{answer}");
        for addr in &addrs {
            let r = get_at(*addr, &h, "/k/c1", &[]).await;
            assert_eq!(r.x_cache(), "STALE", "ban --url --soft via {addr}");
        }
        run(vec!["--all".into()]).await;
        expect_cache(&addrs, &h, "/k/a2", "MISS", "ban --all").await;
        let out = ban_command(&cfg.path, &["--regex", "^(unclosed"]).await;
        assert!(!out.status.success(), "a refused regex exits non-zero");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("400") || !out.stderr.is_empty(),
            "and says why"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_prefix_regex_and_all_bans() {
    bounded(90, async {
        let site = Site::start().await;
        // Each node's own cache is the subject: shielding off (see `per_node`).
        let nodes = cluster(&site.url(), 2, per_node).await;
        let addrs = publics(&nodes);
        let a = nodes[0].admin;
        let h = host();
        let other = "other.example.test";
        let paths = ["/p/one", "/p/two", "/q/one", "/q/two"];
        let check = |misses: &'static [&'static str], why: &'static str| {
            let (addrs, h) = (addrs.clone(), h.clone());
            async move {
                for path in paths {
                    let want = if misses.contains(&path) { "MISS" } else { "HIT" };
                    expect_cache(&addrs, &h, path, want, why).await;
                }
                expect_cache(&addrs, other, "/p/one", "HIT", "another host is untouched").await;
            }
        };
        for addr in &addrs {
            for path in paths {
                warm(*addr, &h, path).await;
            }
            warm(*addr, other, "/p/one").await;
        }
        let answer = ban_at(a, &ban_json("prefix", "/p/", Some(&h), false), Some(3000)).await;
        assert_eq!(answer["removed"], 2, "{answer}");
        all_acked(&answer, 1);
        check(&["/p/one", "/p/two"], "prefix /p/ with host").await;

        let answer = ban_at(
            a,
            &ban_json("prefix", &format!("http://{h}/q/o"), None, false),
            Some(3000),
        )
        .await;
        assert_eq!(answer["removed"], 1, "{answer}");
        check(&["/q/one"], "absolute prefix http://HOST/q/o").await;

        let re = format!("^{}/(p|q)/t", regex_escape(&h));
        let answer = ban_at(a, &ban_json("regex", &re, None, false), Some(3000)).await;
        assert_eq!(answer["removed"], 2, "{answer}");
        check(&["/p/two", "/q/two"], "regex on host/path").await;

        let answer = ban_at(a, &ban_json("url", "/q/one", Some(&h), false), Some(3000)).await;
        assert_eq!(answer["removed"], 1, "{answer}");
        check(&["/q/one"], "url: a path with host").await;

        let answer = ban_at(
            a,
            &ban_json("url", &format!("http://{h}/p/one"), None, false),
            Some(3000),
        )
        .await;
        assert_eq!(answer["removed"], 1, "{answer}");
        check(&["/p/one"], "url: an absolute URL").await;

        let answer = ban_at(a, &ban_json("all", "", None, false), Some(3000)).await;
        all_acked(&answer, 1);
        for path in paths {
            expect_cache(&addrs, &h, path, "MISS", "after a ban of everything").await;
        }
        expect_cache(&addrs, other, "/p/one", "MISS", "everything means every host").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_all_answer_counts_the_objects_it_removed() {
    bounded(30, async {
        let site = Site::start().await;
        let nodes = cluster(&site.url(), 1, relaxed).await;
        for path in ["/t/all-1", "/t/all-2", "/t/all-3"] {
            warm(nodes[0].addr, &host(), path).await;
        }
        let answer = ban_at(nodes[0].admin, &ban_json("all", "", None, false), None).await;
        assert_eq!(
            answer["removed"], 3,
            "removed counts the three cached objects: {answer}"
        );
        assert_eq!(nodes[0].get("/t/all-1", &[]).await.x_cache(), "MISS");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bans_get_400_with_a_reason() {
    bounded(30, async {
        let site = Site::start().await;
        let nodes = cluster(&site.url(), 1, relaxed).await;
        for body in [
            "{not json".to_string(),
            r#"{"kind":"tag"}"#.to_string(),
            r#"{"kind":"shout","value":"x"}"#.to_string(),
            ban_json("regex", "^(unclosed", None, false),
            ban_json("url", "/a/path/without/host", None, false),
        ] {
            let r = admin_signed(nodes[0].admin, Method::POST, "/ban", &body).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body} → {}", r.text());
            assert!(!r.text().trim().is_empty(), "400 for {body} says why");
        }
    })
    .await;
}

/// A `POST /ban` body carrying several bans (a JSON array).
fn bans_json(bans: &[String]) -> String {
    format!("[{}]", bans.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_array_of_bans_applies_each_hard_or_soft_here_and_on_every_sibling() {
    bounded(90, async {
        let site = Site::start().await;
        // Each node's own cache is the subject: shielding off (see `per_node`).
        let nodes = cluster(&site.url(), 3, |i| {
            let mut e = per_node(i);
            e.push(("cache", "grace = \"60s\"".into()));
            e
        })
        .await;
        let addrs = publics(&nodes);
        let a = nodes[0].admin;
        warm_everywhere(&addrs, &["/t/array-hard", "/t/array-soft", "/t/array-kept"]).await;
        let seq0 = cluster_state(a).await["seq"].as_u64().expect("seq");
        site.bump();
        let body = bans_json(&[
            ban_json("tag", "array-hard", None, false),
            ban_json("tag", "array-soft", None, true),
        ]);
        let answer = ban_at(a, &body, Some(3000)).await;
        assert_eq!(answer["bans"], 2, "{answer}");
        assert_eq!(
            answer["seq"].as_u64(),
            Some(seq0 + 2),
            "the highest of the two sequence numbers: {answer}"
        );
        assert_eq!(
            answer["removed"], 2,
            "one object removed, one marked stale, on this node: {answer}"
        );
        all_acked(&answer, 2);
        for addr in &addrs {
            let r = get_at(*addr, &host(), "/t/array-hard", &[]).await;
            assert_eq!(
                (r.x_cache(), generation_of(&r).as_str()),
                ("MISS", "2"),
                "the hard ban removed the page via {addr}"
            );
            let r = get_at(*addr, &host(), "/t/array-soft", &[]).await;
            assert_eq!(
                (r.x_cache(), generation_of(&r).as_str()),
                ("STALE", "1"),
                "the soft ban marked the page stale via {addr}: served once while refreshed"
            );
        }
        expect_cache(&addrs, &host(), "/t/array-kept", "HIT", "a tag no ban named").await;
        for node in &nodes[1..] {
            assert!(
                metric_at(node.admin, "strata_proxy_bans_applied_total", "kind=\"tag\"").await >= 2.0,
                "both bans applied on {}",
                node.admin
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_array_or_one_bad_ban_in_an_array_is_a_400_and_applies_nothing() {
    bounded(60, async {
        let site = Site::start().await;
        let nodes = cluster(&site.url(), 2, relaxed).await;
        let addrs = publics(&nodes);
        let a = nodes[0].admin;
        warm_everywhere(&addrs, &["/t/array-refused"]).await;
        let seq0 = cluster_state(a).await["seq"].as_u64().expect("seq");
        let good = ban_json("tag", "array-refused", None, false);
        let too_many = vec![good.clone(); strata_wire::ban::MAX_BANS_PER_REQUEST + 1];
        for (body, why) in [
            ("[]".to_string(), "empty array"),
            (
                bans_json(&[good.clone(), r#"{"kind":"shout","value":"x"}"#.to_string()]),
                "ban 1 of the array",
            ),
            (
                bans_json(&[good.clone(), good.clone(), ban_json("regex", "^(unclosed", None, false)]),
                "ban 2 of the array",
            ),
            (
                bans_json(&[good.clone(), ban_json("url", "/a/path/without/host", None, false)]),
                "ban 1 of the array",
            ),
            (bans_json(&too_many), "at most 1000"),
            (format!("[{good},"), "or an array of them"),
        ] {
            let r = admin_signed(a, Method::POST, "/ban?wait=1000", &body).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}: {}", r.text());
            assert!(r.text().contains(why), "the 400 says {why:?}: {}", r.text());
        }
        let url = format!("http://{a}/ban?wait=1000");
        let unsigned = send(
            Method::POST,
            &url,
            &[],
            Bytes::from(bans_json(std::slice::from_ref(&good))),
        )
        .await;
        assert_eq!(
            unsigned.status,
            StatusCode::UNAUTHORIZED,
            "unsigned: {}",
            unsigned.text()
        );
        assert_eq!(
            cluster_state(a).await["seq"].as_u64(),
            Some(seq0),
            "no ban of a refused array was broadcast"
        );
        sleep(Duration::from_millis(500)).await;
        expect_cache(
            &addrs,
            &host(),
            "/t/array-refused",
            "HIT",
            "a refused array applies nothing",
        )
        .await;
    })
    .await;
}

/// An idle syncer's wait for comments: signed only; answers at once without `since` or
/// with a `since` other than the node's count, else when `wait` passes (nothing was queued
/// here); bad parameters are a 400 with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queued_comments_wait_is_signed_and_answers_with_the_count() {
    bounded(60, async {
        let site = Site::start().await;
        let nodes = cluster(&site.url(), 1, relaxed).await;
        let a = nodes[0].admin;
        let unsigned = send(
            Method::POST,
            &format!("http://{a}/comments/queued?wait=10"),
            &[],
            Bytes::new(),
        )
        .await;
        assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED, "{}", unsigned.text());
        for (path, why) in [
            ("/comments/queued?since=many", "since must be a number"),
            ("/comments/queued?wait=soon", "wait must be a number"),
        ] {
            let r = admin_signed(a, Method::POST, path, "").await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text());
            assert!(r.text().contains(why), "the 400 says {why:?}: {}", r.text());
        }
        let queued = |r: &Resp| -> serde_json::Value { serde_json::from_str(&r.text()).expect("JSON") };
        let r = admin_signed(a, Method::POST, "/comments/queued?wait=30000", "").await;
        assert_eq!(
            (r.status, queued(&r)),
            (StatusCode::OK, serde_json::json!({"queued": 0}))
        );
        let r = admin_signed(a, Method::POST, "/comments/queued?since=3&wait=30000", "").await;
        assert_eq!(queued(&r)["queued"], 0, "a count other than since: at once");
        let started = std::time::Instant::now();
        let r = admin_signed(a, Method::POST, "/comments/queued?since=0&wait=200", "").await;
        assert_eq!(queued(&r)["queued"], 0);
        assert!(started.elapsed() >= Duration::from_millis(200), "waited for a comment");
        let wrong = admin_signed(a, Method::GET, "/comments/queued", "").await;
        assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    })
    .await;
}

/// The syncer's commit: a batch's bans and verdicts in one signed request. The bans are
/// applied here and acknowledged by every sibling before the answer (which names the
/// verdicts handed over: none, nobody waits here); a bad ban refuses the whole commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_applies_its_bans_on_every_node_before_it_answers() {
    bounded(60, async {
        let site = Site::start().await;
        let nodes = cluster(&site.url(), 3, relaxed).await;
        let addrs = publics(&nodes);
        let a = nodes[0].admin;
        warm_everywhere(&addrs, &["/t/commit-post", "/t/commit-kept"]).await;
        let seq0 = cluster_state(a).await["seq"].as_u64().expect("seq");
        let commit = |bans: &[String]| format!(r#"{{"bans":{},"batch":{{"epoch":7,"verdicts":[]}}}}"#, bans_json(bans));

        // Refused, applying nothing: unsigned, a bad ban, not a commit, a bad wait.
        let url = format!("http://{a}/comments/commit?wait=3000");
        let body = commit(&[ban_json("tag", "commit-post", None, false)]);
        let unsigned = send(Method::POST, &url, &[], Bytes::from(body.clone())).await;
        assert_eq!(
            unsigned.status,
            StatusCode::UNAUTHORIZED,
            "unsigned: {}",
            unsigned.text()
        );
        for (path, body, why) in [
            (
                "/comments/commit?wait=3000",
                commit(&[
                    ban_json("tag", "commit-post", None, false),
                    ban_json("regex", "^(unclosed", None, false),
                ]),
                "ban 1 of the array",
            ),
            ("/comments/commit?wait=3000", "[]".to_string(), "unreadable commit"),
            ("/comments/commit?wait=soon", body.clone(), "wait must be a number"),
        ] {
            let r = admin_signed(a, Method::POST, path, &body).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}: {}", r.text());
            assert!(r.text().contains(why), "the 400 says {why:?}: {}", r.text());
        }
        assert_eq!(cluster_state(a).await["seq"].as_u64(), Some(seq0), "nothing broadcast");

        site.bump();
        let r = admin_signed(a, Method::POST, "/comments/commit?wait=3000", &body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let answer: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
        assert_eq!(answer["delivered"], 0, "nobody waits here: {answer}");
        // Every sibling acknowledged before the answer: no wait needed here. With shielding
        // the page is fetched once for the cluster (a node may answer from its home's copy).
        let rendered = origin_requests(&admins(&nodes)).await;
        for addr in &addrs {
            let r = get_at(*addr, &host(), "/t/commit-post", &[]).await;
            assert_eq!(
                generation_of(&r),
                "2",
                "the commit's ban reached {addr} before its answer ({})",
                r.x_cache()
            );
        }
        assert_eq!(
            origin_requests(&admins(&nodes)).await - rendered,
            1.0,
            "one origin fetch for the three nodes"
        );
        expect_cache(&addrs, &host(), "/t/commit-kept", "HIT", "a tag no ban named").await;
        let wrong = admin_signed(a, Method::GET, "/comments/commit", "").await;
        assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_ban_serves_stale_once_while_refreshing_then_fresh() {
    bounded(60, async {
        let site = Site::start().await;
        let nodes = cluster(&site.url(), 2, |i| {
            let mut e = relaxed(i);
            e.push(("cache", "grace = \"60s\"".into()));
            e
        })
        .await;
        for node in &nodes {
            let r = warm(node.addr, &host(), "/t/soft").await;
            assert_eq!(generation_of(&r), "1");
        }
        site.bump();
        let answer = ban_at(nodes[0].admin, &ban_json("tag", "soft", None, true), Some(3000)).await;
        all_acked(&answer, 1);
        for node in &nodes {
            let r = node.get("/t/soft", &[]).await;
            assert_eq!(
                (r.x_cache(), generation_of(&r).as_str()),
                ("STALE", "1"),
                "first GET after a soft ban via {}: the old page, served while it is refreshed",
                node.addr
            );
            poll("the refreshed page", PROPAGATION, move || async move {
                let r = node.get("/t/soft", &[]).await;
                assert!(
                    ["STALE", "HIT"].contains(&r.x_cache()),
                    "while refreshing: {}",
                    r.x_cache()
                );
                (r.x_cache() == "HIT" && generation_of(&r) == "2").then_some(())
            })
            .await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_in_flight_when_a_ban_arrives_is_not_stored() {
    bounded(60, async {
        let site = Site::start().await;
        // Each node's own cache is the subject: shielding off (see `per_node`).
        let nodes = cluster(&site.url(), 2, per_node).await;
        let a = nodes[0].addr;
        // The origin takes 500 ms on /slow/…; the bans arrive while both fills wait on it.
        let f1 = tokio::spawn(async move { get_at(a, &host(), "/slow/f1", &[]).await });
        let f2 = tokio::spawn(async move { get_at(a, &host(), "/slow/f2", &[]).await });
        let fixture = &site.fixture;
        poll("both fills to reach the origin", PROPAGATION, move || async move {
            (fixture.hits() >= 2).then_some(())
        })
        .await;
        ban_at(nodes[0].admin, &ban_json("tag", "f1", None, false), None).await;
        ban_at(nodes[1].admin, &ban_json("url", "/slow/f2", Some(&host()), false), None).await;
        for f in [f1, f2] {
            let r = f.await.expect("GET task");
            assert_eq!((r.status.as_u16(), r.x_cache()), (200, "MISS"));
        }
        for path in ["/slow/f1", "/slow/f2"] {
            let r = get_at(a, &host(), path, &[]).await;
            assert_eq!(
                r.x_cache(),
                "MISS",
                "{path}: a fill that was in flight when a matching ban arrived is not stored"
            );
        }
        // Control: without a ban, the same slow fill is stored.
        get_at(a, &host(), "/slow/f3", &[]).await;
        assert_eq!(get_at(a, &host(), "/slow/f3", &[]).await.x_cache(), "HIT");
    })
    .await;
}

/// Starts a GET of `path` (a `/slow/…` page) through `a` and returns once its fill reached
/// the origin, the GET still waiting for the answer.
async fn fill_at_origin(site: &Site, a: SocketAddr, path: &'static str) -> tokio::task::JoinHandle<Resp> {
    let before = site.fixture.hits();
    let leader = tokio::spawn(async move { get_at(a, &host(), path, &[]).await });
    let fixture = &site.fixture;
    poll("the fill to reach the origin", PROPAGATION, move || async move {
        (fixture.hits() > before).then_some(())
    })
    .await;
    leader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_a_ban_is_not_answered_from_a_fill_that_started_before_it() {
    bounded(60, async {
        let site = Site::start().await;
        // Each node's own cache is the subject: shielding off (see `per_node`).
        let nodes = cluster(&site.url(), 2, per_node).await;
        let a = nodes[0].addr;
        // The leader's fill reads generation 1, then the origin takes 500 ms.
        let leader = fill_at_origin(&site, a, "/slow/w1").await;
        // The site is edited and the page banned while that fill is still at the origin, so a
        // request made after the ban (it would wait on the same fill) must see the edit.
        site.bump();
        ban_at(nodes[0].admin, &ban_json("tag", "w1", None, false), None).await;
        let after = get_at(a, &host(), "/slow/w1", &[]).await;
        assert_eq!(
            generation_of(&after),
            "2",
            "a request after the ban (X-Cache {})",
            after.x_cache()
        );
        let r = leader.await.expect("GET task");
        assert_eq!(generation_of(&r), "1", "the leader asked before the edit");
        assert_eq!(get_at(a, &host(), "/slow/w1", &[]).await.x_cache(), "HIT");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_in_flight_when_a_soft_ban_arrives_is_stored_stale() {
    bounded(60, async {
        let site = Site::start().await;
        // Each node's own cache is the subject: shielding off (see `per_node`).
        let nodes = cluster(&site.url(), 2, per_node).await;
        let a = nodes[0].addr;
        let leader = fill_at_origin(&site, a, "/slow/s1").await;
        site.bump();
        ban_at(nodes[0].admin, &ban_json("tag", "s1", None, true), None).await;
        let r = leader.await.expect("GET task");
        assert_eq!((r.x_cache(), generation_of(&r).as_str()), ("MISS", "1"));
        // Stored, but already stale (as the soft ban leaves a stored page): served at once
        // while it is fetched again, so a page slower to render than the time between two
        // soft bans still gets cached.
        let r = get_at(a, &host(), "/slow/s1", &[]).await;
        assert_eq!((r.x_cache(), generation_of(&r).as_str()), ("STALE", "1"));
        poll("the refreshed page", PROPAGATION, move || async move {
            let r = get_at(a, &host(), "/slow/s1", &[]).await;
            (r.x_cache() == "HIT" && generation_of(&r) == "2").then_some(())
        })
        .await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Signatures, the answer, /cluster and metrics
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_wrong_expired_and_replayed_bans_are_refused_and_invalidate_nothing() {
    bounded(60, async {
        let site = Site::start().await;
        let nodes = cluster(&site.url(), 2, relaxed).await;
        let addrs = publics(&nodes);
        let a = nodes[0].admin;
        for addr in &addrs {
            warm(*addr, &host(), "/t/auth").await;
        }
        let body = ban_json("tag", "auth", None, false);
        let url = format!("http://{a}/ban?wait=2000");
        let path = "/ban?wait=2000";
        let post = |headers: Vec<(&'static str, String)>, body: String| {
            let url = url.clone();
            async move { send(Method::POST, &url, &headers, Bytes::from(body)).await }
        };
        let r = post(vec![], body.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "unsigned: {}", r.text());
        let r = post(
            vec![
                ("x-strata-timestamp", "yesterday".into()),
                ("x-strata-signature", "zz".into()),
            ],
            body.clone(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "malformed: {}", r.text());
        let wrong = signed_headers_with_body(
            a,
            "POST",
            path,
            body.as_bytes(),
            now_ms(),
            "not-the-cluster-secret-at-all",
        );
        let r = post(wrong, body.clone()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "wrong secret: {}", r.text());
        let expired = signed_headers_with_body(a, "POST", path, body.as_bytes(), now_ms() - 120_000, SECRET);
        let r = post(expired, body.clone()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "120 s old: {}", r.text());
        let other = signed_headers_with_body(
            a,
            "POST",
            path,
            ban_json("tag", "x", None, false).as_bytes(),
            now_ms(),
            SECRET,
        );
        let r = post(other, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "signature of another body: {}",
            r.text()
        );
        let sync = send(
            Method::POST,
            &format!("http://{a}/cluster/sync"),
            &[],
            Bytes::from_static(b"{}"),
        )
        .await;
        assert_eq!(sync.status, StatusCode::UNAUTHORIZED, "unsigned node-to-node sync");
        // Pushed verdicts are signed like bans; a signed body that is no verdict batch is a 400.
        let verdicts_url = format!("http://{a}/comments/verdicts");
        let pushed = send(Method::POST, &verdicts_url, &[], Bytes::from_static(b"{}")).await;
        assert_eq!(pushed.status, StatusCode::UNAUTHORIZED, "unsigned verdicts");
        let junk = signed_headers_with_body(a, "POST", "/comments/verdicts", b"[1,2]", now_ms(), SECRET);
        let pushed = send(Method::POST, &verdicts_url, &junk, Bytes::from_static(b"[1,2]")).await;
        assert_eq!(
            pushed.status,
            StatusCode::BAD_REQUEST,
            "not a verdict batch: {}",
            pushed.text()
        );
        let batch = br#"{"epoch":1,"verdicts":[]}"#;
        let fine = signed_headers_with_body(a, "POST", "/comments/verdicts", batch, now_ms(), SECRET);
        let pushed = send(Method::POST, &verdicts_url, &fine, Bytes::from_static(batch)).await;
        assert_eq!(pushed.status, StatusCode::OK, "a verdict batch: {}", pushed.text());
        // A refused ban must not have been applied or broadcast.
        sleep(Duration::from_millis(500)).await;
        expect_cache(&addrs, &host(), "/t/auth", "HIT", "refused bans invalidate nothing").await;

        let good = signed_headers_with_body(a, "POST", path, body.as_bytes(), now_ms(), SECRET);
        let r = post(good.clone(), body.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "signed: {}", r.text());
        expect_cache(&addrs, &host(), "/t/auth", "MISS", "the signed ban").await;
        for addr in &addrs {
            warm(*addr, &host(), "/t/auth").await;
        }
        let r = post(good, body.clone()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "replayed: {}", r.text());
        sleep(Duration::from_millis(500)).await;
        expect_cache(&addrs, &host(), "/t/auth", "HIT", "a replayed ban invalidates nothing").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_answer_cluster_status_and_metrics_describe_the_siblings() {
    bounded(60, async {
        let site = Site::start().await;
        let nodes = cluster(&site.url(), 3, relaxed).await;
        let (a, b) = (&nodes[0], &nodes[1]);
        for node in &nodes {
            warm(node.addr, &host(), "/t/status").await;
        }
        let s = cluster_state(a.admin).await;
        assert_eq!(s["node"], "a", "{s}");
        assert_eq!(s["confirmed"], true, "{s}");
        let seq0 = s["seq"].as_u64().expect("seq");
        let siblings = s["siblings"].as_array().expect("siblings");
        assert_eq!(siblings.len(), 2, "{s}");
        for sib in siblings {
            let url = sib["url"].as_str().expect("url");
            assert!(
                url == format!("http://{}", nodes[1].admin) || url == format!("http://{}", nodes[2].admin),
                "{sib}"
            );
            assert!(["b", "c"].contains(&sib["node"].as_str().unwrap_or("")), "{sib}");
            assert_eq!(sib["up"], true, "{sib}");
            assert_eq!(sib["queued"], 0, "{sib}");
            for k in ["acked_seq", "applied_seq", "last_contact_ms"] {
                assert!(sib[k].is_u64(), "{k} in {sib}");
            }
        }
        let answer = ban_at(a.admin, &ban_json("tag", "status", None, false), Some(3000)).await;
        assert_eq!(answer["seq"].as_u64(), Some(seq0 + 1), "{answer}");
        assert_eq!(answer["removed"], 1, "{answer}");
        all_acked(&answer, 2);
        let s = cluster_state(a.admin).await;
        for sib in s["siblings"].as_array().expect("siblings") {
            assert_eq!(sib["acked_seq"].as_u64(), Some(seq0 + 1), "{sib}");
        }
        assert!(metric_at(a.admin, "strata_proxy_bans_sent_total", "").await >= 1.0);
        assert!(metric_at(b.admin, "strata_proxy_bans_received_total", "").await >= 1.0);
        assert!(metric_at(b.admin, "strata_proxy_bans_applied_total", "kind=\"tag\"").await >= 1.0);
        // Sibling and confirmation gauges are published on the housekeeping tick.
        poll(
            "strata_proxy_sibling_up = 1 for both siblings",
            PROPAGATION,
            move || async move { (metric_at(a.admin, "strata_proxy_sibling_up", "sibling=").await == 2.0).then_some(()) },
        )
        .await;
        poll("strata_proxy_cluster_confirmed = 1", PROPAGATION, move || async move {
            (metric_at(a.admin, "strata_proxy_cluster_confirmed", "").await == 1.0).then_some(())
        })
        .await;
        let mut propagations = 0.0;
        for node in &nodes {
            propagations += metric_at(node.admin, "strata_proxy_ban_propagation_seconds_count", "").await;
        }
        assert!(propagations >= 1.0, "strata_proxy_ban_propagation_seconds counts the ban");
        let text = send(Method::GET, &format!("http://{}/metrics", a.admin), &[], Bytes::new())
            .await
            .text();
        for name in ["strata_proxy_sibling_queue{", "strata_proxy_cluster_flushes"] {
            assert!(text.contains(name), "{name} on /metrics");
        }
        // Admin endpoints are not on the public port.
        let r = a.request(Method::GET, "/cluster", &[], Bytes::new()).await;
        assert!(
            !r.text().contains("\"siblings\""),
            "/cluster is not served on the public port"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Public PURGE
// ---------------------------------------------------------------------------------------

/// Sends `PURGE path` to `addr` from the local address `from`; returns the status code.
async fn purge_from(from: &str, addr: SocketAddr, path: &str, method: &str) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind source");
    let mut s = timeout(Duration::from_secs(5), socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let req = format!(
        "PURGE {path} HTTP/1.1\r\nHost: {}\r\nX-Purge-Method: {method}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        host()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let head = String::from_utf8_lossy(&buf);
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_purge_is_refused_by_default_and_from_addresses_not_allowed() {
    bounded(60, async {
        let site = Site::start().await;
        let closed = cluster(&site.url(), 1, relaxed).await;
        let allowed = cluster(&site.url(), 1, |i| {
            let mut e = relaxed(i);
            e.push(("bans", "purge_allow = [\"127.0.0.1\"]".into()));
            e
        })
        .await;
        for (node, from, why) in [
            (&closed[0], "127.0.0.1", "PURGE is off by default"),
            (&allowed[0], "127.0.0.2", "127.0.0.2 is not in bans.purge_allow"),
        ] {
            warm(node.addr, &host(), "/t/purge").await;
            for method in ["exact", "regex"] {
                let path = if method == "regex" { "/.*" } else { "/t/purge" };
                assert_eq!(purge_from(from, node.addr, path, method).await, 405, "{why}");
            }
            sleep(Duration::from_millis(200)).await;
            assert_eq!(
                node.get("/t/purge", &[]).await.x_cache(),
                "HIT",
                "{why}: nothing purged"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_purge_from_an_allowed_address_reaches_every_node() {
    bounded(90, async {
        let site = Site::start().await;
        // Each node's own cache is the subject: shielding off (see `per_node`).
        let nodes = cluster(&site.url(), 3, |i| {
            let mut e = per_node(i);
            e.push(("bans", "purge_allow = [\"127.0.0.1\"]".into()));
            e
        })
        .await;
        let addrs = publics(&nodes);
        let a = &nodes[0];
        let other = "other.example.test";
        let paths = ["/t/e1", "/t/e2", "/t/e3"];
        for addr in &addrs {
            for path in paths {
                warm(*addr, &host(), path).await;
            }
            warm(*addr, other, "/t/e1").await;
        }
        assert_eq!(purge_from("127.0.0.1", a.addr, "/t/e1", "exact").await, 200);
        wait_acked(a.admin, PROPAGATION).await;
        expect_cache(&addrs, &host(), "/t/e1", "MISS", "PURGE exact via A").await;
        expect_cache(&addrs, &host(), "/t/e2", "HIT", "other URLs stay").await;
        expect_cache(&addrs, other, "/t/e1", "HIT", "the same path on another host stays").await;

        assert_eq!(purge_from("127.0.0.1", a.addr, "/t/e2", "default").await, 200);
        wait_acked(a.admin, PROPAGATION).await;
        expect_cache(&addrs, &host(), "/t/e2", "MISS", "PURGE default via A").await;
        expect_cache(&addrs, &host(), "/t/e3", "HIT", "other URLs stay").await;

        assert_eq!(purge_from("127.0.0.1", a.addr, "/.*", "regex").await, 200);
        wait_acked(a.admin, PROPAGATION).await;
        for path in paths {
            expect_cache(&addrs, &host(), path, "MISS", "PURGE regex /.* clears the host").await;
        }
        expect_cache(&addrs, other, "/t/e1", "HIT", "another host is untouched by /.*").await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Faults, with real processes
// ---------------------------------------------------------------------------------------

/// Process cluster settings: quick heartbeats; `confirm` is each node's confirmation bound.
fn process_settings(confirm: &'static str) -> impl Fn(usize) -> Vec<(&'static str, String)> {
    move |_| {
        vec![
            ("cluster", "heartbeat_interval = \"250ms\"".into()),
            ("cluster", format!("confirm_within = \"{confirm}\"")),
            ("cluster", "when_unconfirmed = \"flush\"".into()),
        ]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_sibling_never_serves_the_banned_page_after_resuming() {
    bounded(90, async {
        let site = Site::start().await;
        let nodes = Nodes::start(&site.url(), 3, process_settings("1s")).await;
        wait_confirmed(&nodes.admins(), Duration::from_secs(10)).await;
        let (a, b) = (&nodes[0], &nodes[1]);
        let r = warm(b.addr, &host(), "/t/paused").await;
        assert_eq!(generation_of(&r), "1");
        site.bump();
        b.pause();
        let sent = std::time::Instant::now();
        let answer = ban_at(a.admin, &ban_json("tag", "paused", None, false), Some(500)).await;
        assert!(
            sent.elapsed() >= Duration::from_millis(450),
            "?wait=500 answers after 500 ms when a sibling does not acknowledge (took {:?})",
            sent.elapsed()
        );
        let b_url = format!("http://{}", b.admin);
        let c_url = format!("http://{}", nodes[1 + 1].admin);
        assert_eq!(
            answer["siblings"][&b_url]["acked"], false,
            "a paused node cannot ack: {answer}"
        );
        assert_eq!(answer["siblings"][&c_url]["acked"], true, "{answer}");
        // Stay paused for longer than confirm_within: B cannot know what it missed.
        sleep(Duration::from_millis(1500)).await;
        b.resume();
        let first = get_at(b.addr, &host(), "/t/paused", &[]).await;
        assert_eq!(first.status, 200);
        assert_ne!(
            generation_of(&first),
            "1",
            "the first GET on B after SIGCONT must not be the banned page (X-Cache {})",
            first.x_cache()
        );
        // Nor any later one, while the cluster catches up.
        for _ in 0..20 {
            let r = get_at(b.addr, &host(), "/t/paused", &[]).await;
            assert_eq!(generation_of(&r), "2", "B after resuming (X-Cache {})", r.x_cache());
            sleep(Duration::from_millis(100)).await;
        }
        wait_acked(a.admin, Duration::from_secs(10)).await;
        wait_confirmed(&nodes.admins(), Duration::from_secs(10)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_sibling_restarts_empty_and_the_cluster_confirms_again() {
    bounded(90, async {
        let site = Site::start().await;
        let mut nodes = Nodes::start(&site.url(), 3, process_settings("1s")).await;
        wait_confirmed(&nodes.admins(), Duration::from_secs(10)).await;
        warm(nodes[1].addr, &host(), "/t/killed").await;
        nodes[1].kill();
        let (a_admin, b_admin) = (nodes[0].admin, nodes[1].admin);
        let b_url = format!("http://{b_admin}");
        poll("A to see B down", Duration::from_secs(10), || {
            let b_url = b_url.clone();
            async move {
                let s = cluster_state(a_admin).await;
                let sib = s["siblings"]
                    .as_array()?
                    .iter()
                    .find(|x| x["url"] == b_url.as_str())?
                    .clone();
                (sib["up"] == false).then_some(())
            }
        })
        .await;
        // A ban while B is down cannot reach it.
        let answer = ban_at(a_admin, &ban_json("tag", "nothing-here", None, false), Some(300)).await;
        assert_eq!(answer["siblings"][&b_url]["acked"], false, "{answer}");
        nodes[1].spawn();
        nodes[1].wait_healthy(Duration::from_secs(10)).await;
        let first = get_at(nodes[1].addr, &host(), "/t/killed", &[]).await;
        assert_eq!(first.x_cache(), "MISS", "a restarted node starts empty");
        // The cluster recovers: every node confirmed again, A sees B up and current.
        wait_confirmed(&nodes.admins(), Duration::from_secs(10)).await;
        wait_acked(a_admin, Duration::from_secs(10)).await;
        let s = cluster_state(a_admin).await;
        let sib = s["siblings"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["url"] == b_url.as_str()).cloned())
            .unwrap_or_default();
        assert_eq!(sib["up"], true, "{s}");
        let r = get_at(nodes[1].addr, &host(), "/t/killed", &[]).await;
        assert_eq!(r.x_cache(), "HIT", "the restarted node caches again");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_overflow_flushes_the_sibling_instead_of_losing_bans() {
    bounded(90, async {
        let site = Site::start().await;
        // A generous confirmation bound: the only reason B may flush here is the overflow.
        let settings = process_settings("10s");
        let nodes = Nodes::start(&site.url(), 3, |i| {
            let mut e = settings(i);
            if i == 0 {
                e.push(("cluster", "queue_limit = 5".into()));
            }
            e
        })
        .await;
        wait_confirmed(&nodes.admins(), Duration::from_secs(10)).await;
        let (a, b) = (&nodes[0], &nodes[1]);
        warm(b.addr, &host(), "/t/over-x").await;
        warm(b.addr, &host(), "/t/over-y").await;
        let flushes = |admin| async move {
            metric_at(admin, "strata_proxy_cluster_flushes_total", "reason=\"overflow\"").await
                + metric_at(admin, "strata_proxy_cluster_flushes_total", "reason=\"gap\"").await
        };
        let before = flushes(b.admin).await;
        b.pause();
        // The first ban matches a page B holds; the other 19 match nothing.
        ban_at(a.admin, &ban_json("tag", "over-x", None, false), None).await;
        for i in 0..19 {
            ban_at(
                a.admin,
                &ban_json("tag", &format!("over-nothing-{i}"), None, false),
                None,
            )
            .await;
        }
        let b_url = format!("http://{}", b.admin);
        let s = cluster_state(a.admin).await;
        let queued = s["siblings"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["url"] == b_url.as_str()).cloned())
            .unwrap_or_default();
        assert!(
            queued["queued"].as_u64().is_some_and(|q| q <= 6),
            "A's queue for B stays within queue_limit (plus the everything ban): {queued}"
        );
        sleep(Duration::from_millis(300)).await;
        b.resume();
        poll(
            "B to flush after the overflow",
            Duration::from_secs(10),
            move || async move { (flushes(b.admin).await > before).then_some(()) },
        )
        .await;
        for path in ["/t/over-x", "/t/over-y"] {
            let r = get_at(b.addr, &host(), path, &[]).await;
            assert_eq!(r.x_cache(), "MISS", "{path} on B after the overflow flush");
        }
        wait_acked(a.admin, Duration::from_secs(10)).await;
    })
    .await;
}

/// Polls a node's `GET /cluster` until its `confirmed` equals `want` (at most `limit`).
async fn wait_confirmation(admin: SocketAddr, want: bool, limit: Duration) {
    poll(
        &format!("{admin} to report confirmed = {want}"),
        limit,
        move || async move { (cluster_state(admin).await["confirmed"] == want).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_node_in_flush_mode_flushes_once_and_caps_freshness() {
    bounded(90, async {
        let site = Site::start().await;
        let nodes = Nodes::start(&site.url(), 3, process_settings("1s")).await;
        wait_confirmed(&nodes.admins(), Duration::from_secs(10)).await;
        let (a, b) = (&nodes[0], &nodes[1]);
        warm(a.addr, &host(), "/t/unconfirmed").await;
        let reason = "reason=\"unconfirmed\"";
        let before = metric_at(a.admin, "strata_proxy_cluster_flushes_total", reason).await;
        b.pause();
        // A cannot hear from B, so after confirm_within it cannot prove it holds B's bans.
        wait_confirmation(a.admin, false, Duration::from_secs(10)).await;
        let first = get_at(a.addr, &host(), "/t/unconfirmed", &[]).await;
        assert_eq!(first.x_cache(), "MISS", "A flushed when it became unconfirmed");
        let flushed = metric_at(a.admin, "strata_proxy_cluster_flushes_total", reason).await;
        assert_eq!(flushed, before + 1.0, "one flush per unconfirmed period");
        let url = format!("http://{}/t/unconfirmed", host());
        let found = lookup(a.admin, &url).await.expect("stored again while unconfirmed");
        assert!(
            found["fresh_for_secs"].as_u64().is_some_and(|s| s <= 1),
            "objects stored while unconfirmed are fresh for at most confirm_within: {found}"
        );
        get_at(a.addr, &host(), "/t/other", &[]).await;
        let still = metric_at(a.admin, "strata_proxy_cluster_flushes_total", reason).await;
        assert_eq!(still, flushed, "no second flush within the same unconfirmed period");
        b.resume();
        wait_confirmed(&nodes.admins(), Duration::from_secs(10)).await;
        poll(
            "strata_proxy_cluster_confirmed = 1 on A",
            Duration::from_secs(5),
            move || async move { (metric_at(a.admin, "strata_proxy_cluster_confirmed", "").await == 1.0).then_some(()) },
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_node_in_pass_mode_passes_until_confirmed_again() {
    bounded(90, async {
        let site = Site::start().await;
        let nodes = Nodes::start(&site.url(), 3, |i| {
            let mut e = process_settings("1s")(i);
            e.retain(|(_, l)| !l.starts_with("when_unconfirmed"));
            e.push(("cluster", "when_unconfirmed = \"pass\"".into()));
            e
        })
        .await;
        wait_confirmed(&nodes.admins(), Duration::from_secs(10)).await;
        let (a, b) = (&nodes[0], &nodes[1]);
        warm(a.addr, &host(), "/t/pass").await;
        b.pause();
        wait_confirmation(a.admin, false, Duration::from_secs(10)).await;
        let hits_before = site.fixture.hits();
        for _ in 0..3 {
            let r = get_at(a.addr, &host(), "/t/pass", &[]).await;
            assert_eq!(r.x_cache(), "PASS", "an unconfirmed node in pass mode asks the origin");
        }
        assert_eq!(site.fixture.hits() - hits_before, 3, "every request went to the origin");
        b.resume();
        wait_confirmed(&nodes.admins(), Duration::from_secs(10)).await;
        let r = get_at(a.addr, &host(), "/t/pass", &[]).await;
        assert!(
            ["HIT", "MISS"].contains(&r.x_cache()),
            "confirmed again: the cache is used ({})",
            r.x_cache()
        );
        assert_eq!(get_at(a.addr, &host(), "/t/pass", &[]).await.x_cache(), "HIT");
    })
    .await;
}
