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
    std::fs::write(&path, SECRET).expect("write secret");
    path.display().to_string()
}

/// A proxy running in this process.
pub struct TestProxy {
    /// Public listener address.
    pub addr: SocketAddr,
    /// Admin listener address.
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Arc<Proxy>>>,
}

impl TestProxy {
    /// Starts a proxy for `origin` with extra TOML appended per section, e.g.
    /// `&[("cache", "default_ttl = \"1s\"")]`.
    pub async fn start(origin: &str, extra: &[(&str, &str)]) -> TestProxy {
        let mut sections: HashMap<&str, Vec<&str>> = HashMap::new();
        for (s, line) in extra {
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
        ] {
            toml.push_str(&format!("[{name}]\n{base}\n"));
            for line in sections.get(name).into_iter().flatten() {
                toml.push_str(line);
                toml.push('\n');
            }
        }
        let cfg = Config::from_toml(&toml, None).unwrap_or_else(|e| panic!("test config invalid: {e}\n{toml}"));
        let public = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(strata_proxy::run(public, admin, cfg, async {
            let _ = rx.await;
        }));
        TestProxy {
            addr,
            admin: admin_addr,
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

/// Signs an admin request the way `strata-proxy ban` does.
pub fn signed_headers(method: &str, path: &str, ts: u64, secret: &str) -> Vec<(&'static str, String)> {
    let sig = strata_wire::auth::sign(
        secret.as_bytes(),
        strata_wire::auth::Signed {
            method,
            path,
            body: b"",
        },
        ts,
    );
    vec![
        (strata_wire::auth::TIMESTAMP_HEADER, ts.to_string()),
        (strata_wire::auth::SIGNATURE_HEADER, sig),
    ]
}

/// Unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
