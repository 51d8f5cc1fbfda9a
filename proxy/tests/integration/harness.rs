//! Starting proxies and talking to them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_proxy::config::Config;
use strata_proxy::server::Proxy;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The secret every test proxy uses.
pub const SECRET: &str = "integration-test-secret-0123456789";

/// The real WordPress origin, as `scripts/test.sh` exports it.
pub fn wp_origin() -> String {
    std::env::var("STRATA_WP_ORIGIN").unwrap_or_else(|_| "http://127.0.0.1:8081".into())
}

/// The Host WordPress serves (its site URL's host).
pub fn wp_host() -> String {
    std::env::var("STRATA_WP_HOST").unwrap_or_else(|_| "127.0.0.1:8080".into())
}

/// Writes the shared secret to a file and returns its path.
pub fn secret_file() -> String {
    let path = std::env::temp_dir().join(format!("strata-it-secret-{}", std::process::id()));
    // Written once per test process, atomically: tests start proxies concurrently.
    static WRITTEN: std::sync::Once = std::sync::Once::new();
    WRITTEN.call_once(|| {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, SECRET).expect("write secret");
        std::fs::rename(&tmp, &path).expect("install secret");
    });
    path.display().to_string()
}

/// A proxy running in this process.
pub struct TestProxy {
    /// Public listener address.
    pub addr: SocketAddr,
    /// Admin listener address.
    pub admin: SocketAddr,
    /// HTTPS listener address and its certificates, when the config sets `server.tls_listen`.
    pub tls: Option<(SocketAddr, Arc<strata_proxy::tls::Certs>)>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Arc<Proxy>>>,
}

impl TestProxy {
    /// Starts a proxy for `origin` with extra TOML appended per section, e.g.
    /// `&[("cache", "default_ttl = \"1s\"")]`. A `server.tls_listen` line (any address) adds
    /// an HTTPS listener on a fresh loopback port.
    pub async fn start(origin: &str, extra: &[(&str, &str)]) -> TestProxy {
        let public = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        TestProxy::start_on(public, origin, extra).await
    }

    /// [`TestProxy::start`] with the public listener bound by the caller (e.g. a dual-stack
    /// `[::]:0`, where IPv4 clients arrive as IPv4-mapped IPv6 addresses).
    pub async fn start_on(public: TcpListener, origin: &str, extra: &[(&str, &str)]) -> TestProxy {
        let mut sections: HashMap<&str, Vec<&str>> = HashMap::new();
        let known = ["server", "origin", "cache", "policy", "cluster", "bans", "comments"];
        for (s, line) in extra {
            assert!(known.contains(s), "TestProxy::start knows no [{s}] section");
            sections.entry(s).or_default().push(line);
        }
        let mut toml = String::new();
        for (name, base) in [
            (
                "server",
                "listen = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:2\"".to_string(),
            ),
            ("origin", format!("url = {origin:?}")),
            ("cache", String::new()),
            ("policy", String::new()),
            ("cluster", format!("secret_file = {:?}", secret_file())),
            ("bans", String::new()),
            ("comments", String::new()),
        ] {
            toml.push_str(&format!("[{name}]\n{base}\n"));
            for line in sections.get(name).into_iter().flatten() {
                toml.push_str(line);
                toml.push('\n');
            }
        }
        let cfg = Config::from_toml(&toml, None).unwrap_or_else(|e| panic!("test config invalid: {e}\n{toml}"));
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let tls = match &cfg.server.tls {
            None => None,
            Some(t) => Some(strata_proxy::TlsListener {
                listener: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
                certs: Arc::new(strata_proxy::tls::Certs::new(&t.certificates).expect("certificates")),
            }),
        };
        let tls_info = tls
            .as_ref()
            .map(|t| (t.listener.local_addr().unwrap(), t.certs.clone()));
        let listeners = strata_proxy::Listeners { public, admin, tls };
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(strata_proxy::run_with(listeners, cfg, async {
            let _ = rx.await;
        }));
        wait_running(admin_addr).await;
        TestProxy {
            addr,
            admin: admin_addr,
            tls: tls_info,
            stop: Some(tx),
            done: Some(done),
        }
    }

    /// Stops the proxy gracefully and returns its state.
    pub async fn stop(mut self) -> Arc<Proxy> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.done.take().expect("running").await.expect("proxy task")
    }

    /// GET through the proxy with the WordPress Host and extra headers.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request(Method::GET, path, headers, Bytes::new()).await
    }

    /// Any request through the proxy with the WordPress Host.
    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Resp {
        let mut all = vec![("host", wp_host())];
        all.extend(headers.iter().map(|(k, v)| (*k, v.to_string())));
        send(method, &format!("http://{}{path}", self.addr), &all, body).await
    }

    /// A metric's value from `/metrics` (sum over label sets containing `labels`).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let r = send(
            Method::GET,
            &format!("http://{}/metrics", self.admin),
            &[],
            Bytes::new(),
        )
        .await;
        r.text()
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(labels) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A response with its body read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// A header as a string ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// `X-Cache`.
    pub fn x_cache(&self) -> &str {
        self.header("x-cache")
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request on a fresh client (no pooling between tests).
pub async fn send(method: Method, url: &str, headers: &[(&str, String)], body: Bytes) -> Resp {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req.body(Full::new(body)).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("response within 30 s")
        .unwrap_or_else(|e| panic!("request to {url} failed: {e}"));
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Published post paths (`/slug/`) from the origin's REST API.
pub async fn post_paths(n: usize) -> Vec<String> {
    let url = format!("{}/wp-json/wp/v2/posts?per_page={n}&_fields=link", wp_origin());
    let r = send(Method::GET, &url, &[("host", wp_host())], Bytes::new()).await;
    assert_eq!(
        r.status,
        200,
        "WordPress origin not answering at {}: run scripts/wordpress.sh",
        wp_origin()
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("REST JSON");
    let prefix = format!("http://{}", wp_host());
    v.as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["link"].as_str())
        .map(|l| l.trim_start_matches(&prefix).to_string())
        .collect()
}

/// Decodes a gzip body.
pub fn gunzip(b: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// Signs a request without a body to the admin listener at `admin` the way `strata-proxy
/// ban` does, at `ts_ms` (Unix milliseconds).
pub fn signed_headers(
    admin: SocketAddr,
    method: &str,
    path: &str,
    ts_ms: u64,
    secret: &str,
) -> Vec<(&'static str, String)> {
    signed_headers_with_body(admin, method, path, b"", ts_ms, secret)
}

/// Unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Unix time in milliseconds, as signatures are stamped.
pub fn now_ms() -> u64 {
    strata_wire::ids::unix_ms()
}

// ---------------------------------------------------------------------------------------
// Clusters: several proxies that know each other, signed admin calls, cluster state
// ---------------------------------------------------------------------------------------

/// Names of cluster nodes, in order.
pub const NODE_IDS: [&str; 5] = ["a", "b", "c", "d", "e"];

/// The TOML of one cluster node: listeners, origin, node id, siblings' admin URLs and the
/// shared secret, plus extra lines per section (`server`, `origin`, `cache`, `policy`,
/// `cluster`, `bans`). A section is written only when it has lines.
pub fn node_toml(
    listen: SocketAddr,
    admin: SocketAddr,
    origin: &str,
    node_id: &str,
    siblings: &[SocketAddr],
    extra: &[(&str, String)],
) -> String {
    let siblings: Vec<String> = siblings.iter().map(|a| format!("\"http://{a}\"")).collect();
    // A `secret_file` among the extra cluster lines replaces the tests' shared secret.
    let own_secret = extra
        .iter()
        .any(|(s, l)| *s == "cluster" && l.trim_start().starts_with("secret_file"));
    let secret = if own_secret {
        String::new()
    } else {
        format!("\nsecret_file = {:?}", secret_file())
    };
    let mut toml = String::new();
    for (name, base) in [
        (
            "server",
            format!("listen = \"{listen}\"\nadmin_listen = \"{admin}\"\nworkers = 1"),
        ),
        ("origin", format!("url = {origin:?}")),
        ("cache", String::new()),
        ("policy", String::new()),
        (
            "cluster",
            format!("node_id = {node_id:?}\nsiblings = [{}]{secret}", siblings.join(", ")),
        ),
        ("bans", String::new()),
    ] {
        let lines: Vec<&str> = extra
            .iter()
            .filter(|(s, _)| *s == name)
            .map(|(_, l)| l.as_str())
            .collect();
        if base.is_empty() && lines.is_empty() {
            continue;
        }
        toml.push_str(&format!("[{name}]\n"));
        if !base.is_empty() {
            toml.push_str(&base);
            toml.push('\n');
        }
        for line in lines {
            toml.push_str(line);
            toml.push('\n');
        }
    }
    toml
}

impl TestProxy {
    /// Starts `n` proxies in this process that are each other's siblings (node ids `a`, `b`,
    /// `c`…). All listeners are bound first, so every config can name the others' admin URLs.
    /// `extra(i)` gives node `i`'s extra TOML lines per section.
    pub async fn start_cluster(
        origin: &str,
        n: usize,
        extra: impl Fn(usize) -> Vec<(&'static str, String)>,
    ) -> Vec<TestProxy> {
        assert!(n <= NODE_IDS.len(), "at most {} nodes", NODE_IDS.len());
        let mut listeners = Vec::new();
        for _ in 0..n {
            let public = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listeners.push((public, admin));
        }
        let addrs: Vec<(SocketAddr, SocketAddr)> = listeners
            .iter()
            .map(|(p, a)| (p.local_addr().unwrap(), a.local_addr().unwrap()))
            .collect();
        let mut nodes = Vec::new();
        for (i, (public, admin)) in listeners.into_iter().enumerate() {
            let siblings: Vec<SocketAddr> = (0..n).filter(|j| *j != i).map(|j| addrs[j].1).collect();
            let toml = node_toml(addrs[i].0, addrs[i].1, origin, NODE_IDS[i], &siblings, &extra(i));
            let cfg = Config::from_toml(&toml, None).unwrap_or_else(|e| panic!("test config invalid: {e}\n{toml}"));
            let (tx, rx) = oneshot::channel::<()>();
            let done = tokio::spawn(strata_proxy::run(public, admin, cfg, async {
                let _ = rx.await;
            }));
            nodes.push(TestProxy {
                addr: addrs[i].0,
                admin: addrs[i].1,
                tls: None,
                stop: Some(tx),
                done: Some(done),
            });
        }
        for node in &nodes {
            wait_running(node.admin).await;
        }
        nodes
    }
}

/// Waits until the proxy whose admin listener is `admin` answers there (whatever its
/// answer): its listeners are bound before it runs, and a node refuses what was signed
/// before it started, so a test signs only once this returns.
async fn wait_running(admin: SocketAddr) {
    let answered = try_send(
        Method::GET,
        &format!("http://{admin}/healthz"),
        &[],
        Bytes::new(),
        Duration::from_secs(10),
    )
    .await;
    if let Err(e) = answered {
        panic!("the proxy at {admin} does not answer: {e}");
    }
}

/// Sends one request, or says why it failed, within `limit`.
pub async fn try_send(
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Bytes,
    limit: Duration,
) -> Result<Resp, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let work = async {
        let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}

/// GET `path` from the public listener at `addr` with a `Host` and extra headers.
pub async fn get_at(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut all = vec![("host", host.to_string())];
    all.extend(headers.iter().map(|(k, v)| (*k, v.to_string())));
    send(Method::GET, &format!("http://{addr}{path}"), &all, Bytes::new()).await
}

/// The signing headers (`Host` included: the signature names the node it is for) of a
/// request with a body to the admin listener at `admin`, signed at `ts_ms` with a fresh
/// nonce.
pub fn signed_headers_with_body(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    ts_ms: u64,
    secret: &str,
) -> Vec<(&'static str, String)> {
    use strata_wire::auth;
    let host = admin.to_string();
    let nonce = auth::nonce();
    let signed = auth::Signed {
        method,
        host: &host,
        path,
        body,
    };
    let sig = auth::sign(secret.as_bytes(), signed, ts_ms, &nonce);
    vec![
        ("host", host),
        (auth::TIMESTAMP_HEADER, ts_ms.to_string()),
        (auth::NONCE_HEADER, nonce),
        (auth::SIGNATURE_HEADER, sig),
    ]
}

/// A signed admin request (signed now, with the cluster secret) to the admin listener.
pub async fn admin_signed(admin: SocketAddr, method: Method, path: &str, body: &str) -> Resp {
    let headers = signed_headers_with_body(admin, method.as_str(), path, body.as_bytes(), now_ms(), SECRET);
    send(
        method,
        &format!("http://{admin}{path}"),
        &headers,
        Bytes::copy_from_slice(body.as_bytes()),
    )
    .await
}

/// The JSON body of a ban (`kind` tag, url, prefix, regex or all).
pub fn ban_json(kind: &str, value: &str, host: Option<&str>, soft: bool) -> String {
    serde_json::json!({ "kind": kind, "value": value, "host": host, "soft": soft }).to_string()
}

/// Sends a signed ban to a node's admin listener (`wait` = `?wait=MS`) and returns its
/// answer; panics unless the node answers 200 with JSON.
pub async fn ban_at(admin: SocketAddr, body: &str, wait: Option<u64>) -> serde_json::Value {
    let path = match wait {
        Some(ms) => format!("/ban?wait={ms}"),
        None => "/ban".to_string(),
    };
    let r = admin_signed(admin, Method::POST, &path, body).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "POST {path} {body} → {}: {}",
        r.status,
        r.text()
    );
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("ban answer is not JSON ({e}): {}", r.text()))
}

/// GET an admin path that answers JSON; `None` on 404.
pub async fn admin_json(admin: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let r = send(Method::GET, &format!("http://{admin}{path}"), &[], Bytes::new()).await;
    if r.status == StatusCode::NOT_FOUND {
        return None;
    }
    assert_eq!(r.status, StatusCode::OK, "GET {path}: {}", r.text());
    Some(serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {}", r.text())))
}

/// `GET /cluster` of a node.
pub async fn cluster_state(admin: SocketAddr) -> serde_json::Value {
    admin_json(admin, "/cluster").await.expect("GET /cluster answers 200")
}

/// `GET /lookup?url=…` of a node: the object's description, or `None` when not cached.
pub async fn lookup(admin: SocketAddr, url: &str) -> Option<serde_json::Value> {
    let q = percent_encoding::utf8_percent_encode(url, percent_encoding::NON_ALPHANUMERIC);
    admin_json(admin, &format!("/lookup?url={q}")).await
}

/// A metric's value from a node's `/metrics` (sum over label sets containing `labels`).
pub async fn metric_at(admin: SocketAddr, name: &str, labels: &str) -> f64 {
    let r = send(Method::GET, &format!("http://{admin}/metrics"), &[], Bytes::new()).await;
    r.text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`; panics naming
/// `what` otherwise.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most `limit`) until every node says it is confirmed current with its siblings.
pub async fn wait_confirmed(admins: &[SocketAddr], limit: Duration) {
    for admin in admins {
        poll(&format!("{admin} to report confirmed"), limit, || async move {
            let s = cluster_state(*admin).await;
            (s["confirmed"] == true).then_some(())
        })
        .await;
    }
}

/// Waits (at most `limit`) until every sibling of the node at `admin` has acknowledged all of
/// the node's bans so far; returns the node's sequence number.
pub async fn wait_acked(admin: SocketAddr, limit: Duration) -> u64 {
    poll(
        &format!("the siblings of {admin} to acknowledge its bans"),
        limit,
        || async move {
            let s = cluster_state(admin).await;
            let seq = s["seq"].as_u64()?;
            let siblings = s["siblings"].as_array()?;
            siblings
                .iter()
                .all(|sib| sib["acked_seq"].as_u64().is_some_and(|a| a >= seq))
                .then_some(seq)
        },
    )
    .await
}

/// Escapes regular-expression metacharacters.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
