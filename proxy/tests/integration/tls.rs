//! HTTPS and HTTP/2: TLS in front of the same request path, SNI, ALPN, certificate reload,
//! the HTTPS redirect and configuration errors. Certificates come from a throwaway CA made
//! for each test; clients trust that CA only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

use crate::fixture::{full, Fixture};
use crate::harness::{get_at, post_paths, wp_host, wp_origin, Resp, TestProxy};

/// A throwaway certificate authority and the directory its files go to.
pub(crate) struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

/// A certificate's files and its DER, to recognise it in a handshake.
pub(crate) struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Pki {
    pub(crate) fn new(tag: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        let dir = std::env::temp_dir().join(format!("strata-it-tls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Pki { ca, dir }
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by the CA, written as
    /// `<file>.pem` and `<file>.key`.
    pub(crate) fn leaf(&self, names: &[&str], file: &str) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &self.ca)
            .expect("sign");
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            der: cert.der().clone(),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }

    /// A client configuration trusting only this CA, offering `alpn`.
    pub(crate) fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `[server]` lines that turn HTTPS on with these certificates (the first is the default).
fn tls_lines(leaves: &[&Leaf]) -> Vec<String> {
    let mut lines = vec![
        "tls_listen = \"127.0.0.1:3\"".to_string(),
        format!("tls_cert = {:?}", leaves[0].cert.display().to_string()),
        format!("tls_key = {:?}", leaves[0].key.display().to_string()),
    ];
    let more: Vec<String> = leaves[1..]
        .iter()
        .map(|l| {
            format!(
                "{{ cert = {:?}, key = {:?} }}",
                l.cert.display().to_string(),
                l.key.display().to_string()
            )
        })
        .collect();
    if !more.is_empty() {
        lines.push(format!("tls_certificates = [{}]", more.join(", ")));
    }
    lines
}

/// Starts a proxy with HTTPS; `extra` as for [`TestProxy::start`].
pub(crate) async fn start(origin: &str, leaves: &[&Leaf], extra: &[(&str, &str)]) -> (TestProxy, SocketAddr) {
    let lines = tls_lines(leaves);
    let mut all: Vec<(&str, &str)> = lines.iter().map(|l| ("server", l.as_str())).collect();
    all.extend_from_slice(extra);
    let p = TestProxy::start(origin, &all).await;
    let addr = p.tls.as_ref().expect("TLS listener").0;
    (p, addr)
}

/// A TLS connection to `addr` asking for `name` (a DNS name, or an IP address: no SNI).
pub(crate) async fn connect(addr: SocketAddr, name: &str, cfg: Arc<rustls::ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(name.to_string()).expect("server name");
    timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
    )
    .await
    .expect("handshake within 10 s")
    .expect("TLS handshake")
}

/// The certificate the server presented.
fn presented(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().expect("server certificate")[0].clone()
}

/// The protocol ALPN settled on.
pub(crate) fn alpn(tls: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// An HTTP/2 or HTTP/1.1 client over an established TLS connection.
enum Conn {
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
}

impl Conn {
    /// Speaks what ALPN chose (HTTP/1.1 when nothing was chosen).
    async fn open(tls: TlsStream<TcpStream>) -> Conn {
        if alpn(&tls).as_deref() == Some(b"h2") {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            Conn::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .expect("http/1.1 handshake");
            tokio::spawn(conn);
            Conn::H1(send)
        }
    }

    /// GET `path` for `host`.
    async fn get(&mut self, host: &str, path: &str) -> Resp {
        let work = async {
            let resp = match self {
                Conn::H2(s) => {
                    let req = Request::builder()
                        .method(Method::GET)
                        .uri(format!("https://{host}{path}"))
                        .body(Empty::new())
                        .expect("request");
                    s.ready().await.expect("h2 ready");
                    s.send_request(req).await.expect("h2 response")
                }
                Conn::H1(s) => {
                    let req = Request::builder()
                        .method(Method::GET)
                        .uri(path)
                        .header("host", host)
                        .body(Empty::new())
                        .expect("request");
                    s.ready().await.expect("http/1.1 ready");
                    s.send_request(req).await.expect("http/1.1 response")
                }
            };
            let (parts, body) = resp.into_parts();
            Resp {
                status: parts.status,
                headers: parts.headers,
                body: body.collect().await.expect("body").to_bytes(),
            }
        };
        timeout(Duration::from_secs(30), work)
            .await
            .expect("answer within 30 s")
    }
}

/// An origin that answers a cacheable page and records each request's `X-Forwarded-Proto`.
async fn recording_origin() -> (Fixture, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let origin = Fixture::start(move |req| {
        let proto = req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        log.lock().unwrap().push(proto.clone());
        async move {
            http::Response::builder()
                .header("cache-control", "max-age=60")
                .header("content-type", "text/html")
                .body(full(format!("<a href=\"{proto}://site/\">page</a>")))
                .expect("response")
        }
    })
    .await;
    (origin, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_and_http1_over_tls_share_the_request_path() {
    let pki = Pki::new("paths");
    let leaf = pki.leaf(&["site.test", "127.0.0.1"], "site");
    let (origin, seen) = recording_origin().await;
    let (p, tls) = start(&origin.url(), &[&leaf], &[("server", "hsts = \"max-age=31536000\"")]).await;

    let h2 = connect(tls, "site.test", pki.client(&[b"h2", b"http/1.1"])).await;
    assert_eq!(alpn(&h2).as_deref(), Some(&b"h2"[..]));
    let mut h2 = Conn::open(h2).await;
    let first = h2.get("site.test", "/page").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(first.header("strict-transport-security"), "max-age=31536000");
    let second = h2.get("site.test", "/page").await;
    assert_eq!(second.x_cache(), "HIT", "the fast path serves HTTP/2 hits too");
    assert_eq!(second.body, first.body);
    assert_eq!(first.text(), "<a href=\"https://site/\">page</a>");

    let h1 = connect(tls, "site.test", pki.client(&[b"http/1.1"])).await;
    assert_eq!(alpn(&h1).as_deref(), Some(&b"http/1.1"[..]));
    let r = Conn::open(h1).await.get("site.test", "/page").await;
    assert_eq!(
        (r.x_cache(), &r.body),
        ("HIT", &first.body),
        "one HTTPS page for h2 and http/1.1"
    );

    let plain = get_at(p.addr, "site.test", "/page", &[]).await;
    assert_eq!(
        plain.x_cache(),
        "MISS",
        "the HTTP page is stored apart from the HTTPS one"
    );
    assert_eq!(plain.text(), "<a href=\"http://site/\">page</a>");
    assert_eq!(plain.header("strict-transport-security"), "", "HSTS only over TLS");
    assert_eq!(*seen.lock().unwrap(), vec!["https".to_string(), "http".to_string()]);

    // A client that offers no ALPN gets HTTP/1.1.
    let none = connect(tls, "site.test", pki.client(&[])).await;
    assert_eq!(alpn(&none), None);
    let r = Conn::open(none).await.get("site.test", "/page").await;
    assert_eq!(r.x_cache(), "HIT");
    assert_eq!(origin.hits(), 2);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_keeps_the_framing_guard() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new("framing");
    let leaf = pki.leaf(&["site.test"], "site");
    let (origin, _) = recording_origin().await;
    let (p, tls) = start(&origin.url(), &[&leaf], &[]).await;
    let mut conn = connect(tls, "site.test", pki.client(&[b"http/1.1"])).await;
    conn.write_all(
        b"POST /x HTTP/1.1\r\nHost: site.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    let _ = timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("ambiguous"),
        "{answer}"
    );
    assert_eq!(origin.hits(), 0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordpress_over_https_is_cached_with_https_links() {
    let pki = Pki::new("wp");
    let host = wp_host();
    let name = host.split(':').next().unwrap_or("127.0.0.1").to_string();
    let leaf = pki.leaf(&["wp.test", &name], "wp");
    let (p, tls) = start(&wp_origin(), &[&leaf], &[]).await;
    let path = &post_paths(1).await[0];

    let mut h2 = Conn::open(connect(tls, &name, pki.client(&[b"h2"])).await).await;
    let first = h2.get(&host, path).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.x_cache(), "MISS");
    let second = h2.get(&host, path).await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.body, first.body);
    let https_links = format!("https://{host}/");
    assert!(
        first.text().contains(&https_links),
        "WordPress was told the visitor uses HTTPS (X-Forwarded-Proto)"
    );

    let mut h1 = Conn::open(connect(tls, &name, pki.client(&[b"http/1.1"])).await).await;
    let r = h1.get(&host, path).await;
    assert_eq!((r.x_cache(), &r.body), ("HIT", &first.body));

    let plain = p.get(path, &[]).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(
        plain.x_cache(),
        "MISS",
        "the HTTP page has http:// links and its own key"
    );
    assert!(!plain.text().contains(&https_links));
    assert!(p.get(path, &[]).await.x_cache() == "HIT");

    // A URL ban selects both pages.
    let ban = crate::harness::ban_json("url", path, Some(&host), false);
    crate::harness::ban_at(p.admin, &ban, None).await;
    assert_eq!(h2.get(&host, path).await.x_cache(), "MISS");
    assert_eq!(p.get(path, &[]).await.x_cache(), "MISS");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_among_certificates() {
    let pki = Pki::new("sni");
    let a = pki.leaf(&["a.test", "127.0.0.1"], "a");
    let b = pki.leaf(&["b.test", "*.b.test"], "b");
    let (origin, _) = recording_origin().await;
    let (p, tls) = start(&origin.url(), &[&a, &b], &[]).await;
    let client = pki.client(&[b"h2", b"http/1.1"]);
    assert_eq!(presented(&connect(tls, "a.test", client.clone()).await), a.der);
    assert_eq!(presented(&connect(tls, "b.test", client.clone()).await), b.der);
    assert_eq!(presented(&connect(tls, "www.b.test", client.clone()).await), b.der);
    // An IP address sends no SNI: the default (first) certificate.
    let mut conn = Conn::open(connect(tls, "127.0.0.1", client).await).await;
    assert_eq!(conn.get("b.test", "/x").await.status, StatusCode::OK);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_serves_new_certificates_and_keeps_connections() {
    let pki = Pki::new("reload");
    let old = pki.leaf(&["site.test"], "site");
    let (origin, _) = recording_origin().await;
    let (p, tls) = start(&origin.url(), &[&old], &[]).await;
    let client = pki.client(&[b"h2"]);
    let before = connect(tls, "site.test", client.clone()).await;
    assert_eq!(presented(&before), old.der);
    let mut kept = Conn::open(before).await;
    assert_eq!(kept.get("site.test", "/a").await.status, StatusCode::OK);

    let new = pki.leaf(&["site.test"], "site"); // same files, new certificate
    assert_ne!(new.der, old.der);
    let certs = p.tls.as_ref().expect("TLS").1.clone();
    assert_eq!(certs.reload().expect("reload"), 1);
    assert_eq!(presented(&connect(tls, "site.test", client.clone()).await), new.der);
    let r = kept.get("site.test", "/b").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "an established HTTP/2 connection outlives the reload"
    );

    // A broken key file is refused and the certificate in use stays.
    std::fs::write(&new.key, "garbage").expect("write");
    assert!(certs.reload().is_err());
    assert_eq!(presented(&connect(tls, "site.test", client).await), new.der);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_and_slow_handshakes_are_cut() {
    let pki = Pki::new("redirect");
    let leaf = pki.leaf(&["site.test"], "site");
    let (origin, _) = recording_origin().await;
    let (p, tls) = start(
        &origin.url(),
        &[&leaf],
        &[
            ("server", "redirect_https = true"),
            ("server", "header_timeout = \"1s\""),
        ],
    )
    .await;
    let r = get_at(p.addr, "site.test:8080", "/a/b?c=1", &[]).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        r.header("location"),
        format!("https://site.test:{}/a/b?c=1", tls.port())
    );
    let acme = get_at(p.addr, "site.test", "/.well-known/acme-challenge/t", &[]).await;
    assert_ne!(acme.status, StatusCode::MOVED_PERMANENTLY, "ACME HTTP-01 stays on HTTP");
    let post = crate::harness::send(
        Method::POST,
        &format!("http://{}/form", p.addr),
        &[("host", "site.test".to_string())],
        Bytes::from_static(b"a=1"),
    )
    .await;
    assert_eq!(post.status, StatusCode::OK, "only GET and HEAD are redirected");
    assert_eq!(origin.hits(), 2);

    // A client that connects and never says hello is dropped after header_timeout.
    let mut idle = TcpStream::connect(tls).await.expect("connect");
    let mut buf = [0u8; 16];
    let closed = timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut idle, &mut buf),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "handshake timeout closes: {closed:?}"
    );
    p.stop().await;
}

/// A config file for the binary with HTTPS on, in `dir`.
fn binary_config(dir: &Path, leaf: &Leaf, listen: [SocketAddr; 3]) -> PathBuf {
    let secret = dir.join("secret");
    std::fs::write(&secret, crate::harness::SECRET).expect("secret");
    let text = format!(
        "[server]\nlisten = \"{}\"\nadmin_listen = \"{}\"\ntls_listen = \"{}\"\ntls_cert = {:?}\ntls_key = {:?}\nworkers = 1\n\
         [origin]\nurl = \"http://127.0.0.1:9\"\n[cluster]\nsecret_file = {:?}\n",
        listen[0],
        listen[1],
        listen[2],
        leaf.cert.display().to_string(),
        leaf.key.display().to_string(),
        secret.display().to_string(),
    );
    let path = dir.join("proxy.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Free loopback ports (bound, then released for the child process to bind).
async fn free_addrs() -> [SocketAddr; 3] {
    let mut out = Vec::new();
    for _ in 0..3 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        out.push(l.local_addr().expect("addr"));
    }
    [out[0], out[1], out[2]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_a_bad_tls_key() {
    let pki = Pki::new("check");
    let leaf = pki.leaf(&["site.test"], "site");
    let path = binary_config(&pki.dir, &leaf, free_addrs().await);
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_strata-proxy"))
        .args(["--check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run strata-proxy");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(
        &path,
        text.replace(&leaf.key.display().to_string(), "/nonexistent/key.pem"),
    )
    .expect("write");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_strata-proxy"))
        .args(["--check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run strata-proxy");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("server.tls_key") && err.contains("/nonexistent/key.pem"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificates_in_the_binary() {
    let pki = Pki::new("sighup");
    let old = pki.leaf(&["site.test"], "site");
    let addrs = free_addrs().await;
    let path = binary_config(&pki.dir, &old, addrs);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_strata-proxy"))
        .arg("--config")
        .arg(&path)
        .env("STRATA_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .expect("start strata-proxy");
    let client = pki.client(&[b"h2"]);
    let first = crate::harness::poll("the HTTPS listener", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let tcp = TcpStream::connect(addrs[2]).await.ok()?;
            let name = ServerName::try_from("site.test").ok()?;
            tokio_rustls::TlsConnector::from(client).connect(name, tcp).await.ok()
        }
    })
    .await;
    assert_eq!(presented(&first), old.der);
    let mut kept = Conn::open(first).await;
    // No origin listens: the answer is a 502, which is enough to show the connection works.
    assert!(!kept.get("site.test", "/").await.x_cache().is_empty());

    let new = pki.leaf(&["site.test"], "site");
    let pid = child.id().expect("pid");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    crate::harness::poll("the new certificate after SIGHUP", Duration::from_secs(10), || {
        let (client, want) = (client.clone(), new.der.clone());
        async move {
            let tcp = TcpStream::connect(addrs[2]).await.ok()?;
            let name = ServerName::try_from("site.test").ok()?;
            let tls = tokio_rustls::TlsConnector::from(client).connect(name, tcp).await.ok()?;
            (presented(&tls) == want).then_some(())
        }
    })
    .await;
    assert!(
        !kept.get("site.test", "/").await.x_cache().is_empty(),
        "the HTTP/2 connection made before SIGHUP still works"
    );
    assert!(
        child.try_wait().expect("child status").is_none(),
        "SIGHUP does not stop the proxy"
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
}
