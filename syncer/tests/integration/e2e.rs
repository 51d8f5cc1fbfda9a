//! End to end: three real `strata-proxy` processes that are each other's siblings, the
//! syncer draining their queue into the real MariaDB, the real WordPress behind them. A
//! comment POSTed through one node gets WordPress's answer and row, and the other nodes show
//! it on their next GET; refusals get WordPress's statuses; logged-in users reach PHP; and a
//! MySQL outage (a relay in front of MariaDB that refuses everything for 5 s) loses nothing.
//!
//! Ports are chosen by binding port 0 and releasing it just before the processes start, so
//! every node's config can name its siblings' admin URLs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_syncer::config::Config;
use strata_syncer::patches;
use strata_wire::comment as wire;
use strata_wire::memcache::Conn;
use tokio::sync::watch;

use crate::harness::*;

/// The columns that must be equal between the row PHP writes and the row written through
/// the proxies (ids, post, dates and the client address aside).
const SAME: &[&str] = &[
    "comment_author",
    "comment_author_email",
    "comment_author_url",
    "comment_content",
    "comment_karma",
    "comment_approved",
    "comment_agent",
    "comment_type",
    "comment_parent",
    "user_id",
];

/// The user agent of every request, so PHP's and the syncer's `comment_agent` agree.
const AGENT: &str = "strata-syncer-test/1.0";

/// The strata-proxy binary: `STRATA_PROXY_BIN`, else the workspace's debug build (built
/// here if it is missing).
fn proxy_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("STRATA_PROXY_BIN") {
        return PathBuf::from(bin);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), PathBuf::from);
    let bin = target.join("debug").join("strata-proxy");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "strata-proxy", "--bin", "strata-proxy"])
            .current_dir(&root)
            .status()
            .expect("run cargo build -p strata-proxy");
        assert!(status.success(), "cargo build -p strata-proxy failed");
    }
    assert!(
        bin.exists(),
        "{} not found: build it (cargo build -p strata-proxy) or set STRATA_PROXY_BIN",
        bin.display()
    );
    bin
}

/// One strata-proxy process.
struct Node {
    /// Public listener.
    addr: SocketAddr,
    /// Admin listener.
    admin: SocketAddr,
    /// Where its log goes.
    log: PathBuf,
    /// The running process.
    child: Child,
}

/// Three proxies, their shared secret and queue, and a syncer draining that queue.
struct Cluster {
    /// The nodes `a`, `b`, `c`.
    nodes: Vec<Node>,
    /// The queue's key prefix (proxies' and syncer's).
    prefix: String,
    /// The cluster secret file.
    secret_file: PathBuf,
    /// Configs and logs.
    dir: PathBuf,
    /// The syncer's admin listener.
    syncer_admin: SocketAddr,
    /// Stops the syncer.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The syncer task.
    syncer: Option<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    /// Starts the proxies and a syncer whose MySQL URL is `mysql`; returns once the nodes
    /// answer `/healthz` and the syncer has published the site settings.
    async fn start(mysql: &str) -> Cluster {
        Cluster::start_with(mysql, "").await
    }

    /// [`Cluster::start`] with `extra` top-level keys in the syncer's configuration.
    async fn start_with(mysql: &str, extra_keys: &str) -> Cluster {
        Cluster::start_nodes(mysql, extra_keys, 3, &|_| wp_origin(), "1s").await
    }

    /// [`Cluster::start_with`] with `n` nodes (1 to 3), node `i`'s origin URL `origin(i)`,
    /// and the nodes' `[comments] max_hold`.
    async fn start_nodes(
        mysql: &str,
        extra_keys: &str,
        n: usize,
        origin: &dyn Fn(usize) -> String,
        max_hold: &str,
    ) -> Cluster {
        Cluster::start_nodes_with(mysql, extra_keys, n, origin, max_hold, "").await
    }

    /// [`Cluster::start_nodes`] with `proxy_extra` (TOML sections) in each proxy's config.
    async fn start_nodes_with(
        mysql: &str,
        extra_keys: &str,
        n: usize,
        origin: &dyn Fn(usize) -> String,
        max_hold: &str,
        proxy_extra: &str,
    ) -> Cluster {
        let t = token();
        let prefix = format!("strata-e2e:{t}:");
        let dir = std::env::temp_dir().join(format!("strata-e2e-{t}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let secret_file = dir.join("cluster.secret");
        std::fs::write(&secret_file, format!("e2e-secret-{t}-0123456789")).expect("write secret");
        let held: Vec<(std::net::TcpListener, std::net::TcpListener)> = (0..n)
            .map(|_| {
                (
                    std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
                    std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
                )
            })
            .collect();
        let addrs: Vec<(SocketAddr, SocketAddr)> = held
            .iter()
            .map(|(p, a)| (p.local_addr().unwrap(), a.local_addr().unwrap()))
            .collect();
        drop(held);
        let bin = proxy_bin();
        let mut nodes = Vec::new();
        for (i, id) in ["a", "b", "c"].iter().take(n).enumerate() {
            let siblings: Vec<String> = (0..n)
                .filter(|j| *j != i)
                .map(|j| format!("\"http://{}\"", addrs[j].1))
                .collect();
            let toml = format!(
                "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\nworkers = 1\n\
                 [origin]\nurl = \"{origin}\"\n\
                 [cluster]\nnode_id = \"{id}\"\nsiblings = [{siblings}]\nsecret_file = {secret:?}\n\
                 [comments]\nenabled = true\nmemcached = [\"{mc}\"]\nkey_prefix = \"{prefix}\"\n\
                 hold = \"5ms\"\nmax_hold = \"{max_hold}\"\ntrusted_proxies = [\"127.0.0.1\"]\n{proxy_extra}\n",
                listen = addrs[i].0,
                admin = addrs[i].1,
                origin = origin(i),
                siblings = siblings.join(", "),
                secret = secret_file.display().to_string(),
                mc = memcached(),
            );
            let config = dir.join(format!("{id}.toml"));
            std::fs::write(&config, toml).expect("write config");
            let log = dir.join(format!("{id}.log"));
            let out = std::fs::File::create(&log).expect("create log");
            let child = Command::new(&bin)
                .arg("--config")
                .arg(&config)
                .env("STRATA_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log handle"))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            nodes.push(Node {
                addr: addrs[i].0,
                admin: addrs[i].1,
                log,
                child,
            });
        }
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let syncer_admin = admin.local_addr().unwrap();
        let siblings: Vec<String> = addrs.iter().map(|a| format!("\"http://{}\"", a.1)).collect();
        let extra = format!(
            "[cluster]\nsiblings = [{}]\nsecret_file = {:?}\nban_wait = \"2s\"\nban_timeout = \"5s\"\n",
            siblings.join(", "),
            secret_file.display().to_string()
        );
        let toml = config_toml(&prefix, &format!("{extra_keys}\n{extra}"))
            .replace(&format!("\"{}\"", mysql_url()), &format!("\"{mysql}\""));
        let cfg = Config::from_toml(&toml, None).unwrap_or_else(|e| panic!("syncer config: {e}"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let syncer = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = strata_syncer::run(cfg, Some(admin), shutdown).await {
                panic!("syncer: {e}");
            }
        });
        let mut cluster = Cluster {
            nodes,
            prefix,
            secret_file,
            dir,
            syncer_admin,
            stop: Some(stop),
            syncer: Some(syncer),
        };
        for i in 0..n {
            cluster.wait_healthy(i).await;
        }
        cluster.wait_settings().await;
        cluster
    }

    /// Waits (at most 15 s) for node `i` to answer `/healthz`.
    async fn wait_healthy(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let url = format!("http://{}/healthz", self.nodes[i].admin);
        loop {
            if let Ok(Some(status)) = self.nodes[i].child.try_wait() {
                panic!("node {i} exited with {status}:\n{}", self.log_tail(i));
            }
            if get(&url, &[]).await.is_some_and(|r| r.status == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "node {i} not healthy:\n{}", self.log_tail(i));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (at most 15 s) for the syncer's settings in memcached: until then the proxies
    /// send comments to PHP.
    async fn wait_settings(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut mc = Conn::connect(&memcached(), Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("memcached at {} is required (scripts/memcached.sh): {e}", memcached()));
        while mc.get(&wire::settings_key(&self.prefix)).await.ok().flatten().is_none() {
            assert!(
                Instant::now() < deadline,
                "the syncer published no settings within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of node `i`'s log.
    fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The public URL of node `i` for `path`.
    fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.nodes[i].addr)
    }

    /// POSTs a comment form through node `i` from `client_ip` (as a trusted proxy's
    /// `X-Forwarded-For`), with extra headers.
    async fn post(&self, i: usize, fields: &[(&str, &str)], client_ip: &str, headers: &[(&str, &str)]) -> Resp {
        let mut h = vec![
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-forwarded-for", client_ip),
        ];
        h.extend_from_slice(headers);
        send(
            http::Method::POST,
            &self.url(i, "/wp-comments-post.php"),
            &h,
            Bytes::from(form(fields)),
        )
        .await
        .unwrap_or_else(|| panic!("node {i} did not answer the comment POST:\n{}", self.log_tail(i)))
    }

    /// Stops the syncer and the proxies; removes the queue's keys and cursor row.
    async fn finish(mut self, token: &str) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.syncer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
        let env = Env::with_config(
            self.prefix.clone(),
            Config::from_toml(&config_toml(&self.prefix, ""), None).unwrap(),
        )
        .await;
        env.finish(Some(token)).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        if let Some(task) = self.syncer.take() {
            task.abort();
        }
        if std::thread::panicking() {
            eprintln!("node configs and logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_file(&self.secret_file);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A response, fully read.
struct Resp {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// An urlencoded form.
fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                k,
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// One request with `Host` = the WordPress host; `None` when nothing answers within 10 s.
async fn send(method: http::Method, url: &str, headers: &[(&str, &str)], body: Bytes) -> Option<Resp> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("host", wp_host())
        .header("user-agent", AGENT);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).unwrap();
    let exchange = async {
        let resp = client.request(req).await.ok()?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Option<Resp> {
    send(http::Method::GET, url, headers, Bytes::new()).await
}

/// The permalink of post `id`, as WordPress redirects `/?p=ID` to it.
async fn permalink(id: u64) -> String {
    let r = get(&format!("{}/?p={id}", wp_origin()), &[])
        .await
        .expect("the WordPress origin is required (scripts/wordpress.sh)");
    match r.status {
        301 | 302 => r.header("location").to_string(),
        _ => format!("http://{}/?p={id}", wp_host()),
    }
}

/// The path (and query) of an absolute URL.
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/".to_string(), |i| rest[i..].to_string())
}

/// GETs `path` on node `i` until it is a cache HIT (at most 10 s).
async fn warm(c: &Cluster, i: usize, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&c.url(i, path), &[]).await.expect("GET through the proxy");
        assert_eq!(r.status, 200, "GET {path} on node {i}");
        if r.header("x-cache") == "HIT" {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never became a HIT on node {i}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The comment id at the end of a `Location`.
fn comment_id(location: &str) -> u64 {
    location
        .rsplit_once("#comment-")
        .and_then(|(_, id)| id.parse().ok())
        .unwrap_or_else(|| panic!("no comment id in {location:?}"))
}

/// A counter's value in a Prometheus text.
fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// An idle syncer that would look at the queue only every 30 s applies a comment at once:
/// the proxy that queued it tells it (`/comments/queued`), and the visitor gets the
/// comment's own redirect, not the one back to the post that `max_hold` (1 s) would give.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_syncer_is_woken_by_the_proxy_that_queued_a_comment() {
    let c = Cluster::start_with(&mysql_url(), "idle_interval = \"30s\"").await;
    let db = mysql_async::Pool::new(mysql_url().as_str());
    let t = token();
    let post = open_post(&db, &format!("{t}wake")).await.to_string();
    let metrics_url = format!("http://{}/metrics", c.syncer_admin);
    for (i, node) in [0, 2, 1].into_iter().enumerate() {
        // Idle again, every proxy waited on.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let text = get(&metrics_url, &[]).await.map(|r| r.body).unwrap_or_default();
            if metric(&text, "strata_syncer_proxies_announcing ") == Some(3.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the proxies do not announce comments:\n{text}"
            );
        }
        let who = format!("{t}w{i}");
        let r = c
            .post(
                node,
                &[
                    ("comment_post_ID", &post),
                    ("author", &format!("Woken {i}")),
                    ("email", &format!("woken-{who}@example.test")),
                    ("comment", &format!("Woken {i} {t}")),
                ],
                &ip_for(&who),
                &[],
            )
            .await;
        assert_eq!(r.status, 302, "{}", r.body);
        assert!(
            r.header("location").contains("#comment-"),
            "comment {i} through node {node} was applied within max_hold: {}\n{}",
            r.header("location"),
            c.log_tail(node)
        );
    }
    c.finish(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn comments_through_the_cluster_answer_and_write_like_wordpress() {
    let c = Cluster::start(&mysql_url()).await;
    let db = mysql_async::Pool::new(mysql_url().as_str());
    let t = token();
    let php_post = open_post(&db, &format!("{t}php")).await;
    let mut post = open_post(&db, &format!("{t}e2e")).await;
    if post == php_post {
        post = open_post(&db, &format!("{t}e2e2")).await;
    }
    let link = permalink(post).await;
    let path = path_of(&link);
    warm(&c, 1, &path).await;
    warm(&c, 2, &path).await;

    // The same form, straight to PHP and through node a (different text, same shape).
    let author = format!("E2E <b>Author</b> & Co {t}");
    // Each its own email: PHP's comment must not make ours a flood.
    let email = |who: &str| format!("e2e-{who}+{t}@Example.test");
    let url = "example.test/~e2e/?a=1&b=2";
    let text = |who: &str| format!("End to end {who} {t} <em>hi</em> & <a href=\"http://x.example.test/\">one</a>");
    let php_text = text("php");
    let (status, php_location, body) = post_to_php(&[
        ("comment_post_ID", &php_post.to_string()),
        ("author", &author),
        ("email", &email("php")),
        ("url", url),
        ("comment", &php_text),
        ("wp-comment-cookies-consent", "yes"),
    ])
    .await;
    assert_eq!(status, 302, "PHP refused the comment: {body}");
    let php_id = comment_id(&php_location);

    let ours_text = text("strata");
    let email = email("strata");
    let ip = ip_for(&t);
    let post_id = post.to_string();
    let r = c
        .post(
            0,
            &[
                ("comment_post_ID", &post_id),
                ("author", &author),
                ("email", &email),
                ("url", url),
                ("comment", &ours_text),
                ("wp-comment-cookies-consent", "yes"),
            ],
            &ip,
            &[],
        )
        .await;
    assert_eq!(r.status, 302, "{}\n{}", r.body, c.log_tail(0));
    let location = r.header("location").to_string();
    let id = comment_id(&location);
    assert_eq!(location, format!("{link}#comment-{id}"));
    assert_eq!(r.header("x-redirect-by"), "WordPress");
    let cookies: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for name in ["comment_author_", "comment_author_email_", "comment_author_url_"] {
        assert!(
            cookies.iter().any(|c| c.starts_with(name) && !c.contains("=+;")),
            "no {name} cookie in {cookies:?}"
        );
    }

    // The rows agree column by column; the text differs only by its word.
    let mut conn = db.get_conn().await.unwrap();
    let ours = row(&mut conn, id).await;
    let theirs = row(&mut conn, php_id).await;
    for col in SAME {
        let (a, b) = (&ours[*col], &theirs[*col]);
        if *col == "comment_content" || *col == "comment_author_email" {
            assert_eq!(a.replace("strata", "php"), *b, "column {col} differs");
        } else {
            assert_eq!(a, b, "column {col} differs");
        }
    }
    assert_eq!(ours["comment_approved"], "1");
    assert_eq!(ours["comment_post_ID"], post_id);
    assert_eq!(
        ours["comment_author_IP"].parse::<std::net::IpAddr>().ok(),
        ip.parse().ok(),
        "the address from X-Forwarded-For"
    );
    let count_sql = "SELECT CAST(comment_count AS CHAR) FROM wp_posts WHERE ID = ?";
    let approved_sql =
        "SELECT CAST(COUNT(*) AS CHAR) FROM wp_comments WHERE comment_post_ID = ? AND comment_approved = '1'";
    assert_eq!(
        scalar(&db, count_sql, vec![post.into()]).await,
        scalar(&db, approved_sql, vec![post.into()]).await
    );

    // The next GET on the other nodes, without cookies, shows the comment.
    let shown = format!("End to end strata {t}");
    for i in [1, 2] {
        let r = get(&c.url(i, &path), &[]).await.expect("GET through the proxy");
        assert_eq!(r.status, 200);
        assert!(
            r.body.contains(&shown),
            "node {i} ({}) does not show the comment",
            r.header("x-cache")
        );
    }

    // The same comment again: WordPress's duplicate page.
    let r = c
        .post(
            1,
            &[
                ("comment_post_ID", &post_id),
                ("author", &author),
                ("email", &email),
                ("url", url),
                ("comment", &ours_text),
            ],
            &ip,
            &[],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("Duplicate comment detected"), "{}", r.body);
    assert!(
        r.body.contains("<title>Comment Submission Failure</title>"),
        "{}",
        r.body
    );

    // Same email and address a second later, other text: a flood.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let flood_text = format!("Flood {t}");
    let r = c
        .post(
            2,
            &[
                ("comment_post_ID", &post_id),
                ("author", &author),
                ("email", &email),
                ("comment", &flood_text),
            ],
            &ip,
            &[],
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("You are posting comments too quickly"), "{}", r.body);

    // A closed post: 403.
    let closed = post_by_slug(&db, "closed-post").await.to_string();
    let t2 = format!("{t}closed");
    let r = c
        .post(
            0,
            &[
                ("comment_post_ID", &closed),
                ("author", "Closed"),
                ("email", &format!("closed-{t}@example.test")),
                ("comment", &format!("Closed {t}")),
            ],
            &ip_for(&t2),
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("Sorry, comments are closed for this item."),
        "{}",
        r.body
    );

    // Two links: held for moderation, PHP's moderation link.
    let t3 = format!("{t}held");
    let r = c
        .post(
            1,
            &[
                ("comment_post_ID", &post_id),
                ("author", "Held"),
                ("email", &format!("held-{t}@example.test")),
                (
                    "comment",
                    &format!("Held {t} http://a.example.test/ <a href=\"http://b.example.test/\">b</a>"),
                ),
            ],
            &ip_for(&t3),
            &[],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    let location = r.header("location");
    let held = comment_id(location);
    let hash = php_wp_hash(&row(&mut conn, held).await["comment_date_gmt"]);
    assert_eq!(
        location,
        format!("{link}?unapproved={held}&moderation-hash={hash}#comment-{held}")
    );

    // A logged-in user's comment goes to PHP (an unknown cookie: PHP treats it as anonymous).
    let t4 = format!("{t}login");
    let r = c
        .post(
            0,
            &[
                ("comment_post_ID", &post_id),
                ("author", "Logged"),
                ("email", &format!("logged-{t}@example.test")),
                ("comment", &format!("Logged in {t}")),
            ],
            &ip_for(&t4),
            &[("cookie", "wordpress_logged_in_x=y")],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    let metrics = get(&format!("http://{}/metrics", c.nodes[0].admin), &[])
        .await
        .expect("node a's /metrics");
    assert!(
        metric(&metrics.body, "strata_proxy_comments_total{reason=\"php-logged-in\"}").is_some_and(|n| n >= 1.0),
        "{}",
        metrics.body
    );
    // The syncer's own metrics saw the approved one.
    let sm = get(&format!("http://{}/metrics", c.syncer_admin), &[])
        .await
        .expect("syncer /metrics");
    assert!(sm.body.contains("strata_syncer_lag_seconds"), "{}", sm.body);

    drop(conn);
    db.disconnect().await.unwrap();
    c.finish(&t).await;
}

/// A TCP relay to MariaDB that can be taken down: while down it closes every connection,
/// old and new.
struct Relay {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    kill: watch::Sender<u64>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let (kill, _) = watch::channel(0u64);
        let (down2, kill2) = (down.clone(), kill.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if down2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut killed = kill2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = killed.changed() => {}
                    }
                });
            }
        });
        Relay { addr, down, kill }
    }

    /// Closes every connection and refuses new ones until [`Relay::up`].
    fn down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.kill.send_modify(|n| *n += 1);
    }

    fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_comment_lands_after_a_mysql_outage() {
    const N: usize = 20;
    let relay = Relay::start("127.0.0.1:3306".parse().unwrap()).await;
    // Without prefer_socket=false the client would find the server's Unix socket and use it.
    let relayed = mysql_url().replace("127.0.0.1:3306", &relay.addr.to_string()) + "?prefer_socket=false";
    assert_ne!(
        relayed,
        mysql_url(),
        "STRATA_MYSQL must point at 127.0.0.1:3306 for this test"
    );
    let c = Arc::new(Cluster::start(&relayed).await);
    let db = mysql_async::Pool::new(mysql_url().as_str());
    let t = token();
    let post = open_post(&db, &format!("{t}outage")).await;
    let back = format!("http://{}/?p={post}", wp_host());

    relay.down();
    let outage = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..N {
        let c = c.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let tk = format!("{t}o{k}");
            let r = c
                .post(
                    k % 3,
                    &[
                        ("comment_post_ID", &post.to_string()),
                        ("author", &format!("Outage {k}")),
                        ("email", &format!("outage-{tk}@example.test")),
                        ("comment", &format!("Outage {k} {t} #{tk}#")),
                    ],
                    &ip_for(&tk),
                    &[],
                )
                .await;
            (r.status, r.header("location").to_string())
        }));
    }
    for task in tasks {
        let (status, location) = task.await.unwrap();
        // No verdict while MySQL is away: the visitor goes back to the post.
        assert_eq!(status, 302);
        assert_eq!(location, back);
    }
    let left = Duration::from_secs(5).saturating_sub(outage.elapsed());
    tokio::time::sleep(left).await;
    let mut conn = db.get_conn().await.unwrap();
    let none: Vec<u64> = mysql_async::prelude::Queryable::exec(
        &mut conn,
        "SELECT comment_ID FROM wp_comments WHERE comment_content LIKE ?",
        (format!("%{t}%"),),
    )
    .await
    .unwrap();
    assert!(none.is_empty(), "comments landed while MySQL was unreachable");
    relay.up();

    // Every comment lands exactly once, within 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut missing = Vec::new();
        for k in 0..N {
            let n: u64 = scalar(
                &db,
                "SELECT CAST(COUNT(*) AS CHAR) FROM wp_comments WHERE comment_content LIKE ?",
                vec![format!("%#{t}o{k}#%").into()],
            )
            .await
            .unwrap()
            .parse()
            .unwrap();
            assert!(n <= 1, "comment {k} stored {n} times");
            if n == 0 {
                missing.push(k);
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "comments {missing:?} not in MySQL 30 s after it came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a duplicate a chance to show, then count once more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total: u64 = scalar(
        &db,
        "SELECT CAST(COUNT(*) AS CHAR) FROM wp_comments WHERE comment_content LIKE ?",
        vec![format!("%{t}%").into()],
    )
    .await
    .unwrap()
    .parse()
    .unwrap();
    assert_eq!(total, N as u64);

    drop(conn);
    db.disconnect().await.unwrap();
    let c = Arc::try_unwrap(c).unwrap_or_else(|_| panic!("cluster still shared"));
    c.finish(&t).await;
}

/// An HTTP forwarder in front of the WordPress origin that counts the GETs of one path (the
/// node's origin fetches of that page) and passes every request on as it is.
struct CountingOrigin {
    /// The URL to give a node as its origin.
    url: String,
    /// GETs of the path so far.
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingOrigin {
    async fn start(path: &'static str) -> CountingOrigin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let client = Client::builder(TokioExecutor::new()).build_http::<hyper::body::Incoming>();
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (client, seen) = (client.clone(), seen.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                        let client = client.clone();
                        if req.method() == http::Method::GET && req.uri().path() == path {
                            seen.fetch_add(1, Ordering::SeqCst);
                        }
                        let target = format!(
                            "{}{}",
                            wp_origin(),
                            req.uri().path_and_query().map_or("/", |p| p.as_str())
                        );
                        *req.uri_mut() = target.parse().expect("origin URL");
                        async move { client.request(req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        CountingOrigin {
            url: format!("http://{addr}"),
            count,
        }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Fifty comments in about a second, each on a post of its own, through a node whose home
/// page (a list with the latest-comments widget) is requested all the while: each comment
/// soft-bans `list` and `wp:recent-comments` (bounded), yet the home page is fetched from the
/// origin at most once per `cache.list_refresh` (1 s by default), so at most
/// ceil(duration / 1 s) + 1 times; and each commenter's own post page (banned hard, exactly),
/// fetched right after the comment's 302, shows the comment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_comments_refreshes_lists_at_a_bounded_rate_and_posts_exactly() {
    let _quiet = LATEST_COMMENTS.lock().await;
    let home = CountingOrigin::start("/").await;
    // A generous max_hold: on a busy machine a verdict may take over a second, and only an
    // accepted comment (a 302 to its #comment-N) promises read-your-writes.
    let c = Arc::new(Cluster::start_nodes(&mysql_url(), "", 1, &|_| home.url.clone(), "8s").await);
    let db = mysql_async::Pool::new(mysql_url().as_str());
    let t = token();
    let mut posts = Vec::new();
    for i in 0..400 {
        let id = open_post(&db, &format!("{t}burst{i}")).await;
        if !posts.contains(&id) {
            posts.push(id);
        }
        if posts.len() == 50 {
            break;
        }
    }
    assert_eq!(posts.len(), 50, "50 open posts (scripts/wordpress.sh provisions 200)");
    let mut paths = Vec::new();
    for &id in &posts {
        let path = path_of(&permalink(id).await);
        warm(&c, 0, &path).await;
        paths.push(path);
    }
    warm(&c, 0, "/").await;

    let started = Instant::now();
    let before = home.count();
    let done = Arc::new(AtomicBool::new(false));
    // The home page, requested every 20 ms until the comments are in (at most 30 s).
    let reader = tokio::spawn({
        let (c, done) = (c.clone(), done.clone());
        async move {
            let mut n = 0;
            while !done.load(Ordering::SeqCst) && n < 1500 {
                let r = get(&c.url(0, "/"), &[]).await.expect("GET / through the node");
                assert_eq!(r.status, 200);
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        }
    });
    let mut commenters = Vec::new();
    for (i, (&post, path)) in posts.iter().zip(&paths).enumerate() {
        let (c, t, path) = (c.clone(), t.clone(), path.clone());
        commenters.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20 * i as u64)).await;
            let who = format!("{t}b{i}");
            let text = format!("Burst comment {i} {t}");
            let r = c
                .post(
                    0,
                    &[
                        ("comment_post_ID", &post.to_string()),
                        ("author", &format!("Burst {i}")),
                        ("email", &format!("burst-{who}@example.test")),
                        ("comment", &text),
                    ],
                    &ip_for(&who),
                    &[],
                )
                .await;
            assert_eq!(r.status, 302, "comment {i}: {}", r.body);
            let location = r.header("location").to_string();
            assert!(
                location.contains("#comment-"),
                "comment {i} accepted within max_hold: {location}"
            );
            // Read-your-writes: the post's page, right after the 302, without the cookies.
            let page = get(&c.url(0, &path), &[]).await.expect("GET the post");
            assert_eq!(page.status, 200);
            assert!(
                page.body.contains(&text),
                "comment {i} not on its post's page right after its 302 (X-Cache {})",
                page.header("x-cache")
            );
        }));
    }
    for task in commenters {
        task.await.expect("commenter");
    }
    done.store(true, Ordering::SeqCst);
    let reads = reader.await.expect("reader");
    let took = started.elapsed();
    let fetched = home.count() - before;
    let bound = took.as_secs_f64().ceil() as usize + 1;
    eprintln!("{reads} GETs of / in {took:?} while 50 comments came in: {fetched} origin fetches (bound {bound})");
    assert!(
        fetched <= bound,
        "the home page was fetched {fetched} times in {took:?}: more than once per list_refresh (bound {bound})"
    );
    assert!(fetched >= 1, "the home page was never refreshed");

    // The lists lag by at most list_refresh: a request after it brings the new comments.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&c.url(0, "/"), &[]).await.expect("GET /");
        if (0..50).any(|i| r.body.contains(&format!("Burst {i}"))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the home page's latest comments never showed the burst"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = get(&format!("http://{}/metrics", c.nodes[0].admin), &[])
        .await
        .map(|r| r.body)
        .unwrap_or_default();
    assert!(
        metric(&metrics, "strata_proxy_list_refreshes_deferred_total ").is_some_and(|n| n > 0.0),
        "refreshes held back by list_refresh are counted"
    );
    match Arc::try_unwrap(c) {
        Ok(c) => c.finish(&t).await,
        Err(_) => panic!("the cluster is still shared"),
    }
}

/// The page without its latest-comments block, and that block.
fn split_recent(page: &str) -> (String, String) {
    // The demo site's widget whole, heading to section end: a render made while another
    // test's comments come and go may even show the block empty, without its list.
    const WIDGET: &str = "<h2>Recent Comments</h2>";
    if let Some(a) = page.find(WIDGET) {
        let b = a + page[a..].find("</section>").unwrap_or(page.len() - a);
        return (format!("{}{}", &page[..a], &page[b..]), page[a..b].to_string());
    }
    const OPEN: &str = "<ol class=\"wp-block-latest-comments\">";
    match page.find(OPEN) {
        Some(a) => {
            let b = a + page[a..].find("</ol>").map_or(page.len() - a, |i| i + 5);
            (format!("{}{}", &page[..a], &page[b..]), page[a..b].to_string())
        }
        None => (page.to_string(), String::new()),
    }
}

/// A post with at least three approved top-level comments and none of them answered: its
/// page has comments to learn a new one's markup from.
async fn patchable_post(db: &mysql_async::Pool, t: &str) -> u64 {
    use mysql_async::prelude::Queryable;
    for i in 0..400 {
        let id = open_post(db, &format!("{t}patch{i}")).await;
        let mut conn = db.get_conn().await.expect("mysql");
        let (top, replies, linked): (u64, u64, u64) = conn
            .query_first(format!(
                "SELECT SUM(comment_parent = 0), SUM(comment_parent != 0), SUM(comment_author_url != '') \
                 FROM wp_comments WHERE comment_post_ID = {id} AND comment_approved = '1'"
            ))
            .await
            .expect("count comments")
            .map(|(a, b, l): (Option<u64>, Option<u64>, Option<u64>)| (a.unwrap_or(0), b.unwrap_or(0), l.unwrap_or(0)))
            .unwrap_or((0, 0, 0));
        // No author with a website either: the test's last comment needs a page that shows none.
        if top >= 3 && replies == 0 && linked == 0 {
            return id;
        }
    }
    panic!("no open post with three comments (scripts/wordpress.sh provisions 200 posts with comments)");
}

/// Held by a test that writes a burst of comments, and by the test that compares the site's
/// latest comments with what the nodes show: not both at once.
static LATEST_COMMENTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A comment is shown on every node without WordPress rendering a page again: each node
/// patches the post's page it holds (the comment in its thread) and every page with a
/// latest-comments block (the comment on top of the block), and the patched pages, whole,
/// are byte for byte what WordPress renders after the comment; the nodes still serve them
/// from memory. A reply, and an author link no comment of the page shows the shape of, are
/// not patched into the thread: the post's page is banned and rendered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_comment_is_patched_into_its_post_page_on_every_node_as_wordpress_renders_it() {
    let _quiet = LATEST_COMMENTS.lock().await;
    // Pages the list bans mark are not refreshed, nor patched pages checked against
    // WordPress (whose copy would replace them), during the test: what a node serves is
    // what it holds.
    let c = Cluster::start_nodes_with(
        &mysql_url(),
        // Patches never late on a busy test machine.
        "patch_wait = \"10s\"",
        3,
        &|_| wp_origin(),
        "8s",
        "patch_check_rate = 0\n[cache]\nlist_refresh = \"1h\"",
    )
    .await;
    let db = mysql_async::Pool::new(mysql_url().as_str());
    let t = token();
    let post = patchable_post(&db, &t).await;
    let path = path_of(&permalink(post).await);
    let mut other = open_post(&db, &format!("{t}other")).await;
    for i in 0..100 {
        if other != post {
            break;
        }
        other = open_post(&db, &format!("{t}other{i}")).await;
    }
    let other_path = path_of(&permalink(other).await);
    // A third post, for a comment by an author with a website: the post's own page shows
    // none (see the end of the test).
    let mut third = open_post(&db, &format!("{t}third")).await;
    for i in 0..100 {
        if third != post && third != other {
            break;
        }
        third = open_post(&db, &format!("{t}third{i}")).await;
    }
    let admins: Vec<String> = (0..3).map(|i| format!("http://{}/metrics", c.nodes[i].admin)).collect();
    let metric_of = |labels: &'static str| {
        let admins = admins.clone();
        move |i: usize| {
            let url = admins[i].clone();
            async move {
                let text = get(&url, &[]).await.expect("a node's /metrics").body;
                metric(&text, &format!("strata_proxy_patches_total{{{labels}}}")).unwrap_or(0.0)
            }
        }
    };
    let thread_patched = metric_of("kind=\"thread\",result=\"patched\"");
    let recent_patched = metric_of("kind=\"recent\",result=\"patched\"");
    // The newest comments of the site, which the block's items are learnt from, by authors
    // with and without a website, on two posts; each in a second of its own (the block
    // orders by the second alone: a tie is in MySQL's order), as many as the block shows.
    for (n, (author, url, on)) in [
        ("Grace Hopper", "", other),
        ("Edsger Dijkstra", "https://edsger.example.org/", third),
        ("Barbara Liskov", "", other),
        ("Edsger Dijkstra", "https://edsger.example.org/", third),
        ("Grace Hopper", "", other),
    ]
    .into_iter()
    .enumerate()
    {
        let r = c
            .post(
                n % 3,
                &[
                    ("comment_post_ID", &on.to_string()),
                    ("author", author),
                    ("email", &format!("seed{n}-{t}@example.test")),
                    ("url", url),
                    ("comment", &format!("Seed {n} {t}")),
                ],
                &ip_for(&format!("{t}seed{n}")),
                &[("user-agent", AGENT)],
            )
            .await;
        assert_eq!(r.status, 302, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let paths = [path.as_str(), other_path.as_str()];
    // Another test's comment between the pages held and this one changes the block below
    // its top: the pages are then banned, rightly; the test tries again.
    let mut tries = 0;
    let (id, before, after, recent_before, recent_after) = loop {
        tries += 1;
        let mut held = Vec::new();
        for p in paths {
            for i in 0..3 {
                warm(&c, i, p).await;
                held.push(get(&c.url(i, p), &[]).await.expect("GET a page").body);
            }
        }
        let before: Vec<f64> = futures_join(&thread_patched).await;
        let recent_before: Vec<f64> = futures_join(&recent_patched).await;
        let syncer_lists = list_patches(&c).await;
        let mut recent_tried = Vec::new();
        for admin in &admins {
            let text = get(admin, &[]).await.expect("a node's /metrics").body;
            recent_tried.push(
                text.lines()
                    .filter(|l| l.starts_with("strata_proxy_patches_total{kind=\"recent\""))
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum::<f64>(),
            );
        }
        // Unicode, a link WordPress makes clickable, a smiley, paragraphs.
        let text = format!("Ünïcødé “quotes” – see https://example.org/{t} :) \n\nSecond paragraph {t} {tries}");
        let r = c
            .post(
                0,
                &[
                    ("comment_post_ID", &post.to_string()),
                    ("author", "Ada Lovelace"),
                    ("email", &format!("ada-{t}-{tries}@example.test")),
                    ("comment", &text),
                ],
                &ip_for(&format!("{t}patch{tries}")),
                &[("user-agent", AGENT)],
            )
            .await;
        assert_eq!(r.status, 302, "{}", r.body);
        let id = comment_id(r.header("location"));
        // The syncer's list patch for it: none when another test's comment was written in
        // the same second (their order is MySQL's), then the test tries again.
        let deadline = Instant::now() + Duration::from_secs(10);
        let sent = loop {
            let (sent, none) = list_patches(&c).await;
            if sent + none > syncer_lists.0 + syncer_lists.1 || Instant::now() > deadline {
                break sent;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if sent == syncer_lists.0 && tries < 6 {
            eprintln!("no list patch (a comment of the same second?); trying again");
            // The pages the lists' ban marked are not refreshed in this test: dropped.
            ban_tags(&c, &[format!("post:{post}"), format!("post:{other}")]);
            tokio::time::sleep(Duration::from_millis(1100)).await;
            continue;
        }
        // The answer may come before the bans are applied (past `max_hold`): wait until
        // every node has tried to patch both pages' blocks.
        let deadline = Instant::now() + Duration::from_secs(10);
        for (i, admin) in admins.iter().enumerate() {
            loop {
                let text = get(admin, &[]).await.expect("a node's /metrics").body;
                let tried: f64 = text
                    .lines()
                    .filter(|l| l.starts_with("strata_proxy_patches_total{kind=\"recent\""))
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum();
                if tried >= recent_tried[i] + 2.0 || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // WordPress's own render of the pages now.
        let mut php = Vec::new();
        for p in paths {
            php.push(
                get(&format!("{}{p}", wp_origin()), &[])
                    .await
                    .expect("a page from WordPress")
                    .body,
            );
        }
        assert!(
            php[0].contains(&format!("id=\"comment-{id}\"")),
            "WordPress shows comment {id}"
        );
        // The block WordPress shows: this comment on top of the ones the nodes held.
        let items = |page: &str| -> Vec<u64> {
            split_recent(page)
                .1
                .split("#comment-")
                .skip(1)
                .filter_map(|s| s.split('"').next()?.parse().ok())
                .collect()
        };
        let held_items = items(&held[0]);
        let php_items = items(&php[0]);
        let expected: Vec<u64> = std::iter::once(id)
            .chain(held_items.iter().copied())
            .take(held_items.len())
            .collect();
        if php_items != expected && tries < 6 {
            eprintln!("another comment came in ({php_items:?}, expected {expected:?}); trying again");
            ban_tags(&c, &[format!("post:{post}"), format!("post:{other}")]);
            continue;
        }
        assert_eq!(php_items, expected, "WordPress's block shows the comment on top");
        for (k, p) in paths.iter().enumerate() {
            for i in 0..3 {
                let r = get(&c.url(i, p), &[]).await.expect("GET a page");
                let cache = r.header("x-cache").to_string();
                let page = r.body;
                if page != php[k] {
                    let at = page.bytes().zip(php[k].bytes()).take_while(|(a, b)| a == b).count();
                    let counts = get(&admins[i], &[]).await.map(|r| r.body).unwrap_or_default();
                    let syncer = get(&format!("http://{}/metrics", c.syncer_admin), &[])
                        .await
                        .map(|r| r.body)
                        .unwrap_or_default();
                    let counts: Vec<&str> = counts
                        .lines()
                        .chain(syncer.lines())
                        .filter(|l| l.contains("patches_total"))
                        .collect();
                    panic!(
                        "node {i}: the patched {p} differs from WordPress's at byte {at}:\npatched: {:?}\nphp:     {:?}\n{counts:#?}\n{}",
                        &page[at.saturating_sub(80)..(at + 120).min(page.len())],
                        &php[k][at.saturating_sub(80)..(at + 120).min(php[k].len())],
                        c.log_tail(i)
                    );
                }
                // Not rendered again: served from memory, patched.
                if cache != "HIT" {
                    let counts = get(&admins[i], &[]).await.map(|r| r.body).unwrap_or_default();
                    let counts: Vec<&str> = counts.lines().filter(|l| l.contains("patches_total")).collect();
                    panic!("node {i} serves {p} from memory, not {cache}: {counts:#?}");
                }
                assert_ne!(page, held[k * 3 + i], "node {i}'s {p} changed");
            }
        }
        let after: Vec<f64> = futures_join(&thread_patched).await;
        let recent_after: Vec<f64> = futures_join(&recent_patched).await;
        break (id, before, after, recent_before, recent_after);
    };
    for i in 0..3 {
        assert_eq!(after[i] - before[i], 1.0, "node {i} patched the post's thread once");
        assert!(
            recent_after[i] - recent_before[i] >= 2.0,
            "node {i} patched the block of both pages"
        );
    }

    // A reply: banned, rendered again with it.
    let r = c
        .post(
            1,
            &[
                ("comment_post_ID", &post.to_string()),
                ("comment_parent", &id.to_string()),
                ("author", "Charles Babbage"),
                ("email", &format!("charles-{t}@example.test")),
                ("comment", &format!("A reply {t}")),
            ],
            &ip_for(&format!("{t}reply")),
            &[("user-agent", AGENT)],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    for i in 0..3 {
        let page = get(&c.url(i, &path), &[]).await.expect("GET the post").body;
        assert!(page.contains(&format!("A reply {t}")), "node {i} shows the reply");
    }
    // An author with a website, where the page shows none: no template proves the link.
    let r = c
        .post(
            2,
            &[
                ("comment_post_ID", &post.to_string()),
                ("author", "Alan Turing"),
                ("email", &format!("alan-{t}@example.test")),
                ("url", "https://alan.example.org/"),
                ("comment", &format!("With a link {t}")),
            ],
            &ip_for(&format!("{t}link")),
            &[("user-agent", AGENT)],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    for i in 0..3 {
        let page = get(&c.url(i, &path), &[]).await.expect("GET the post").body;
        assert!(
            page.contains(
                "<a href='https://alan.example.org/' rel='external nofollow ugc' class='url'>Alan Turing</a>"
            ) || page.contains("href=\"https://alan.example.org/\""),
            "node {i} shows the linked author as WordPress prints it"
        );
    }
    let last: Vec<f64> = futures_join(&thread_patched).await;
    assert_eq!(last, after, "neither the reply nor the linked author was patched");
    c.finish(&t).await;
}

/// Bans `tags` on every node, through `strata-proxy ban` on the first.
fn ban_tags(c: &Cluster, tags: &[String]) {
    for tag in tags {
        let status = Command::new(proxy_bin())
            .arg("ban")
            .arg("--config")
            .arg(c.nodes[0].log.with_extension("toml"))
            .arg("--tag")
            .arg(tag)
            .stdout(Stdio::null())
            .status()
            .expect("strata-proxy ban runs");
        assert!(status.success(), "strata-proxy ban --tag {tag}");
    }
}

/// The syncer's list patches: how many it sent, and for how many batches it sent none.
async fn list_patches(c: &Cluster) -> (f64, f64) {
    let text = get(&format!("http://{}/metrics", c.syncer_admin), &[])
        .await
        .expect("the syncer's /metrics")
        .body;
    let count = |outcome: &str| {
        metric(
            &text,
            &format!("strata_syncer_list_patches_total{{outcome=\"{outcome}\"}}"),
        )
        .unwrap_or(0.0)
    };
    (count("sent"), count("none"))
}

/// `f(0)`, `f(1)`, `f(2)` one after the other.
async fn futures_join<F, Fut>(f: &F) -> Vec<f64>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let mut out = Vec::new();
    for i in 0..3 {
        out.push(f(i).await);
    }
    out
}

/// A comment written into WordPress's tables behind the cluster's back (no ban reaches a
/// node), by `author` with the text `text`, dated a second after the previous one of the
/// test: its row as the patches read it.
async fn insert_comment(db: &mysql_async::Pool, post: u64, author: &str, text: &str, n: u64) -> patches::Row {
    use mysql_async::prelude::Queryable;
    let store_cfg = Config::from_toml(&config_toml("strata-e2e-check:", ""), None).expect("syncer config");
    let options = syncer_store(&store_cfg).options().await.expect("site options");
    let (date, date_gmt) = strata_syncer::site::comment_dates(now_ms() + n * 1000, options.timezone());
    let email = format!("{}@example.test", author.to_lowercase().replace(' ', "."));
    let mut c = db.get_conn().await.expect("mysql");
    c.exec_drop(
        "INSERT INTO wp_comments (comment_post_ID, comment_author, comment_author_email, \
         comment_author_url, comment_author_IP, comment_date, comment_date_gmt, comment_content, \
         comment_karma, comment_approved, comment_agent, comment_type, comment_parent, user_id) \
         VALUES (?, ?, ?, '', '192.0.2.7', ?, ?, ?, 0, '1', 'strata-e2e', 'comment', 0, 0)",
        (post, author, email.as_str(), date.as_str(), date_gmt.as_str(), text),
    )
    .await
    .expect("insert a comment");
    let id = c.last_insert_id().expect("comment id");
    c.exec_drop(
        "UPDATE wp_posts SET comment_count = comment_count + 1 WHERE ID = ?",
        (post,),
    )
    .await
    .expect("count it");
    patches::Row {
        id,
        parent: 0,
        author: author.to_string(),
        email,
        url: String::new(),
        date,
        date_gmt,
        replies: false,
    }
}

fn syncer_store(cfg: &Config) -> strata_syncer::store::Store {
    strata_syncer::store::Store::new(&mysql_url(), &cfg.table_prefix, "strata-e2e-check:").expect("store")
}

/// The thread patch the syncer would send for `row`, just written on `post`: its fields
/// printed by the syncer's own printer, its text WordPress's.
async fn thread_patch(post: u64, row: &patches::Row) -> strata_wire::patch::Thread {
    let cfg = Config::from_toml(&config_toml("strata-e2e-check:", ""), None).expect("syncer config");
    let store = syncer_store(&cfg);
    let options = store.options().await.expect("site options");
    let printer = patches::Printer {
        options: &options,
        tz: options.timezone(),
        old_links: cfg.wp_version < (6, 2),
    };
    let posts = std::collections::BTreeSet::from([post]);
    let context = store.patch_context(&posts, &[row.id]).await.expect("patch context");
    let ctx = &context[&post];
    let mut ids = vec![row.id];
    ids.extend(ctx.newest.iter().filter(|r| !r.replies).map(|r| r.id));
    let texts = patches::Texts::new(cfg.origin.clone(), Duration::from_secs(5))
        .get(&ids, &options.home_authority())
        .await
        .expect("the comments' texts from WordPress");
    printer
        .thread(post, ctx, std::slice::from_ref(row), &texts)
        .expect("a thread patch for the new comment")
}

/// Sends node `i` the ban of `post:ID` carrying `patch`, signed as the syncer signs.
async fn send_patch(c: &Cluster, i: usize, post: u64, patch: strata_wire::patch::Thread) {
    use strata_wire::auth;
    let ban = strata_wire::ban::Ban {
        patch: Some(Box::new(strata_wire::patch::Patch::Thread(patch))),
        ..strata_wire::ban::Ban::new(strata_wire::ban::Kind::Tag, format!("post:{post}"))
    };
    let body = serde_json::to_vec(&ban).expect("ban JSON");
    let secret = auth::load_secret(&c.secret_file).expect("cluster secret");
    let req = auth::signed_post(&secret, &format!("http://{}", c.nodes[i].admin), "/ban", body).expect("a signed ban");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("the node answers the ban within 10 s")
        .expect("the node answers the ban");
    let status = resp.status();
    let answer = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
}

/// Node 0's `/metrics`.
async fn node_metrics(c: &Cluster) -> String {
    let url = format!("http://{}/metrics", c.nodes[0].admin);
    get(&url, &[]).await.expect("the node's /metrics").body
}

/// A `{kind="thread",result}` counter of `name` in a `/metrics` text.
fn check_counter(text: &str, name: &str, result: &str) -> f64 {
    metric(text, &format!("{name}{{kind=\"thread\",result=\"{result}\"}}")).unwrap_or(0.0)
}

/// Node 0's `/metrics` once a check was counted `result` (at most 30 s).
async fn wait_for_check(c: &Cluster, result: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = node_metrics(c).await;
        if check_counter(&text, "strata_proxy_patch_checks_total", result) >= 1.0 {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no check counted {result} within 30 s:\n{}",
            c.log_tail(0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Patched pages are checked against WordPress's render, which replaces them: the syncer's
/// patch of a comment posted through the node is counted `match`; a patch whose new comment's text is not what WordPress stores (its
/// samples right, so the node applies it) is counted `mismatch`, the page is WordPress's
/// again, and the next patch made with that template is refused (`template-off`): the page
/// is banned and rendered again, with the comment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn patched_pages_are_checked_against_wordpress_and_a_wrong_template_is_turned_off() {
    // Checked as soon as patched; pages the list bans mark are not refreshed meanwhile.
    let c = Cluster::start_nodes_with(
        &mysql_url(),
        // Patches never late on a busy test machine.
        "patch_wait = \"10s\"",
        1,
        &|_| wp_origin(),
        "8s",
        "patch_check_interval = \"0s\"\n[cache]\nlist_refresh = \"1h\"",
    )
    .await;
    let db = mysql_async::Pool::new(mysql_url().as_str());
    let t = token();
    let post = patchable_post(&db, &t).await;
    let path = path_of(&permalink(post).await);
    let wordpress = || async {
        get(&format!("{}{path}", wp_origin()), &[])
            .await
            .expect("the post from WordPress")
            .body
    };
    warm(&c, 0, &path).await;

    // A comment through the node: the syncer's patch applied, checked, counted `match`
    // (the latest-comments block, which the patch leaves as it was, aside); WordPress's copy
    // is stored, its block showing the comment.
    let first = format!("A first comment, checked {t}");
    let r = c
        .post(
            0,
            &[
                ("comment_post_ID", &post.to_string()),
                ("author", "Check Zero"),
                ("email", &format!("check-{t}@example.test")),
                ("comment", &first),
            ],
            &ip_for(&format!("{t}check")),
            &[("user-agent", AGENT)],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    let id = comment_id(r.header("location"));
    let text = node_metrics(&c).await;
    assert_eq!(
        check_counter(&text, "strata_proxy_patches_total", "patched"),
        1.0,
        "patched"
    );
    let text = wait_for_check(&c, "match").await;
    assert_eq!(check_counter(&text, "strata_proxy_patch_checks_total", "mismatch"), 0.0);
    let served = get(&c.url(0, &path), &[]).await.expect("GET the post");
    assert_ne!(served.header("x-cache"), "MISS", "WordPress's render is stored");
    assert_eq!(split_recent(&served.body).0, split_recent(&wordpress().await).0);
    assert!(served.body.contains(&first));
    assert!(
        split_recent(&served.body).1.contains(&format!("#comment-{id}\"")),
        "the stored copy is WordPress's render, not the patched one"
    );

    // A wrong patch: its new comment's text is not WordPress's.
    let second = format!("A second comment, as stored {t}");
    let row = insert_comment(&db, post, "Check Two", &format!("{second}\n"), 2).await;
    let mut wrong = thread_patch(post, &row).await;
    let stated = format!("<p>Not what WordPress stores {t}</p>\n");
    wrong.added[0].fields.insert("content".to_string(), stated.clone());
    send_patch(&c, 0, post, wrong).await;
    let text = wait_for_check(&c, "mismatch").await;
    assert_eq!(check_counter(&text, "strata_proxy_patches_total", "patched"), 2.0);
    assert_eq!(metric(&text, "strata_proxy_patch_templates_off").unwrap_or(0.0), 1.0);
    let served = get(&c.url(0, &path), &[]).await.expect("GET the post").body;
    assert!(!served.contains(stated.trim_end()), "the wrong copy is gone");
    assert!(served.contains(&second), "WordPress's copy replaced it");
    assert_eq!(split_recent(&served).0, split_recent(&wordpress().await).0);
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap_or_default();
    assert!(
        log.contains("a patched page differs from WordPress's render") && log.contains("Not what WordPress stores"),
        "the node applied the wrong patch, and the mismatch is logged with both sides:\n{}",
        c.log_tail(0)
    );

    // The next patch made with that template: refused, the page banned and rendered again.
    let third = format!("A third comment {t}");
    let row = insert_comment(&db, post, "Check Three", &format!("{third}\n"), 3).await;
    send_patch(&c, 0, post, thread_patch(post, &row).await).await;
    let text = node_metrics(&c).await;
    assert_eq!(check_counter(&text, "strata_proxy_patches_total", "template-off"), 1.0);
    assert_eq!(
        check_counter(&text, "strata_proxy_patches_total", "patched"),
        2.0,
        "not patched"
    );
    let served = get(&c.url(0, &path), &[]).await.expect("GET the post");
    assert_eq!(served.header("x-cache"), "MISS", "banned, rendered again");
    assert!(served.body.contains(&third));

    // `/status` tells the same.
    let status = get(&format!("http://{}/status.json", c.nodes[0].admin), &[])
        .await
        .expect("/status.json");
    let status: serde_json::Value = serde_json::from_str(&status.body).expect("JSON");
    let p = &status["patches"];
    // Every kind: the posted comment's latest-comments patches count too.
    let all = |result: &str| {
        text.lines()
            .filter(|l| l.starts_with("strata_proxy_patches_total{") && l.contains(&format!("result=\"{result}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let checks = |result: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with("strata_proxy_patch_checks_total{") && l.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    assert_eq!(
        (p["patched"].as_u64(), p["checked"].as_u64()),
        (Some(all("patched")), Some(checks("match") + checks("mismatch"))),
        "{p}"
    );
    assert_eq!(
        (p["mismatched"].as_u64(), p["templates_off"].as_u64()),
        (Some(1), Some(1)),
        "{p}"
    );
    c.finish(&t).await;
}
