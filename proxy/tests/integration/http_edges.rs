//! HTTP edge cases against a programmable origin: what is stored and what is not, request
//! framing, streaming memory, origin failures, open-proxy refusal, slow clients, Vary,
//! stale-if-error, coalescing, graceful shutdown and HEAD.
//!
//! Every test is bounded in time; none asserts on how fast something happened.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

use crate::fixture::{full, Fixture, FixtureBody};
use crate::harness::{send, Resp, TestProxy};
use crate::raw::Raw;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Runs a test body, failing it if it takes longer than `secs`.
async fn bounded(secs: u64, f: impl Future<Output = ()>) {
    timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"));
}

/// Waits (at most 10 s) until `cond` holds.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let waited = timeout(Duration::from_secs(10), async {
        while !cond() {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

/// An origin response with headers and a body.
fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<FixtureBody> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(full(body)).expect("fixture response")
}

fn header(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Reads a request body to the end, returning its length and a byte sum.
async fn drain(req: Request<Incoming>) -> (u64, u64) {
    let mut body = req.into_body();
    let (mut len, mut sum) = (0u64, 0u64);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            len += data.len() as u64;
            sum = data.iter().fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
        }
    }
    (len, sum)
}

/// A body that yields `left` copies of one chunk without holding more than that chunk.
struct Chunks {
    left: usize,
    chunk: Bytes,
    /// Whether the length is announced (Content-Length) or left open (chunked).
    exact: bool,
}

impl Chunks {
    fn new(count: usize, chunk_size: usize, exact: bool) -> Chunks {
        Chunks {
            left: count,
            chunk: Bytes::from(vec![b'x'; chunk_size]),
            exact,
        }
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact((self.left * self.chunk.len()) as u64)
        } else {
            SizeHint::default()
        }
    }
}

/// Sends `count` concurrent GETs to one URL and returns the responses.
async fn burst(proxy: &TestProxy, path: &str, count: usize) -> Vec<Resp> {
    let url = format!("http://{}{path}", proxy.addr);
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { send(Method::GET, &url, &[], Bytes::new()).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

// ---------------------------------------------------------------------------------------
// 1, 2: storability
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_responses_are_not_stored_and_become_hit_for_pass() {
    bounded(30, async {
        let fixture = Fixture::start(|_| async {
            reply(
                200,
                &[("set-cookie", "session=abc; Path=/"), ("cache-control", "max-age=60")],
                "mine",
            )
        })
        .await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;

        let first = proxy.get("/account-page", &[]).await;
        assert_eq!(first.status, 200);
        assert_eq!(first.x_cache(), "MISS");
        assert!(
            first.header("cache-status").contains("set-cookie"),
            "{:?}",
            first.headers
        );
        assert_eq!(
            first.header("set-cookie"),
            "session=abc; Path=/",
            "the cookie reaches its owner"
        );

        let second = proxy.get("/account-page", &[]).await;
        assert_eq!(second.status, 200);
        assert_eq!(second.text(), "mine");
        assert_eq!(second.x_cache(), "PASS");
        let cs = second.header("cache-status");
        assert!(cs.contains("hit-for-pass") || cs.contains("set-cookie"), "{cs}");
        assert_eq!(fixture.hits(), 2, "nothing was served from the cache");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_no_store_are_not_stored_but_max_age_is() {
    bounded(30, async {
        let fixture = Fixture::start(|req| async move {
            let cc = match req.uri().path() {
                "/private" => "private, max-age=60",
                "/no-store" => "no-store",
                _ => "max-age=60",
            };
            reply(200, &[("cache-control", cc)], req.uri().path().to_string())
        })
        .await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;

        for (path, why) in [("/private", "private"), ("/no-store", "no-store")] {
            let before = fixture.hits();
            let a = proxy.get(path, &[]).await;
            let b = proxy.get(path, &[]).await;
            assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
            assert_eq!(b.text(), path);
            assert_eq!(a.x_cache(), "MISS", "{path}");
            assert!(a.header("cache-status").contains(why), "{path}: {:?}", a.headers);
            assert_eq!(b.x_cache(), "PASS", "{path}");
            assert_eq!(fixture.hits() - before, 2, "{path} must not be stored");
        }

        let before = fixture.hits();
        let a = proxy.get("/max-age", &[]).await;
        let b = proxy.get("/max-age", &[]).await;
        assert_eq!(a.x_cache(), "MISS");
        assert_eq!(b.x_cache(), "HIT");
        assert_eq!(b.text(), "/max-age");
        assert_eq!(fixture.hits() - before, 1, "max-age=60 is stored");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 3: request framing
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_before_the_origin() {
    bounded(30, async {
        let fixture = Fixture::start(|_| async { reply(200, &[], "should not be reached") }).await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;

        let cases: [(&str, &[u8]); 4] = [
            (
                "Content-Length with Transfer-Encoding",
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "Transfer-Encoding first, lower case",
                b"POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
            ),
            (
                "two identical Content-Length lines",
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            ),
            (
                "a GET smuggling a POST",
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 42\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST /x HTTP/1.1\r\nHost: x\r\n\r\nabcdefgh",
            ),
        ];
        for (what, bytes) in cases {
            let mut c = Raw::connect(proxy.addr).await;
            c.write(bytes).await;
            let r = c.response().await;
            assert!(r.head.starts_with("HTTP/1.1 400"), "{what}: {}", r.head);
            assert!(r.text().contains("ambiguous"), "{what}: {}", r.text());
            assert_eq!(
                r.header("connection").as_deref(),
                Some("close"),
                "{what}: the connection must not be reused"
            );
            let rest = timeout(Duration::from_secs(5), c.read_to_close())
                .await
                .expect("connection closed after a 400");
            assert!(
                !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
                "{what}: a second response followed: {rest:?}"
            );
        }
        assert_eq!(fixture.hits(), 0, "no ambiguous request reached the origin");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_pipelines_and_chunked_uploads_pass_the_framing_guard() {
    bounded(30, async {
        let fixture = Fixture::start(|req| async move {
            if req.uri().path() == "/echo" {
                let (len, sum) = drain(req).await;
                reply(200, &[], format!("len={len} sum={sum}"))
            } else {
                reply(200, &[("cache-control", "max-age=60")], format!("path={}", req.uri().path()))
            }
        })
        .await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;

        // Two GETs written at once on one keep-alive connection.
        let mut c = Raw::connect(proxy.addr).await;
        c.write(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let one = c.response().await;
        let two = c.response().await;
        assert_eq!((one.status, two.status), (200, 200), "{one:?}\n{two:?}");
        assert_eq!(one.text(), "path=/one");
        assert_eq!(two.text(), "path=/two");

        // A chunked POST whose data looks like a request with duplicate Content-Length, in
        // chunks that span the guard's reads, followed by a GET on the same connection.
        let trap = b"\r\n\r\nGET /evil HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n";
        let big = vec![b'y'; 40_000];
        let pieces: [&[u8]; 3] = [b"hello ", trap, &big];
        let mut req = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let (mut len, mut sum) = (0u64, 0u64);
        for p in pieces {
            req.extend_from_slice(format!("{:x};note=1\r\n", p.len()).as_bytes());
            req.extend_from_slice(p);
            req.extend_from_slice(b"\r\n");
            len += p.len() as u64;
            sum = p.iter().fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
        }
        req.extend_from_slice(b"0\r\n\r\nGET /three HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut c = Raw::connect(proxy.addr).await;
        // Written in odd-sized pieces so heads and chunk sizes straddle reads.
        for part in req.chunks(7_001) {
            c.write(part).await;
            tokio::task::yield_now().await;
        }
        let echo = c.response().await;
        assert_eq!(echo.status, 200, "{echo:?}");
        assert_eq!(echo.text(), format!("len={len} sum={sum}"), "the body arrived intact");
        let three = c.response().await;
        assert_eq!(three.status, 200, "{three:?}");
        assert_eq!(three.text(), "path=/three");
        assert_eq!(fixture.hits(), 4, "/one, /two, /echo and /three; nothing from the body");
    })
    .await;
}

/// An origin that records `METHOD path` of every request it gets.
async fn recording_fixture() -> (Fixture, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let fixture = Fixture::start(move |req| {
        let log = log.clone();
        async move {
            log.lock()
                .expect("log")
                .push(format!("{} {}", req.method(), req.uri().path()));
            let (len, _) = drain(req).await;
            reply(200, &[], format!("len={len}"))
        }
    })
    .await;
    (fixture, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_heads_are_answered_and_guarded() {
    bounded(30, async {
        let (fixture, seen) = recording_fixture().await;
        let proxy = TestProxy::start(&fixture.url(), &[("server", "header_timeout = \"3s\"")]).await;

        // The parser accepts lines ending in a bare LF, so the guard must find such heads too.
        let mut c = Raw::connect(proxy.addr).await;
        c.write(b"GET /lf HTTP/1.1\nHost: x\n\n").await;
        let r = c.response().await;
        assert_eq!(r.status, 200, "{r:?}");

        let cases: [(&str, &[u8]); 3] = [
            (
                "bare LF between Content-Length and Transfer-Encoding",
                b"POST /te HTTP/1.1\r\nHost: x\r\nContent-Length: 5\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "an LF-only head with both",
                b"POST /te HTTP/1.1\nHost: x\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\r\n\r\n",
            ),
            (
                "duplicate Content-Length split by a bare LF",
                b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 3\nContent-Length: 3\r\n\r\nabc",
            ),
        ];
        for (what, bytes) in cases {
            let mut c = Raw::connect(proxy.addr).await;
            c.write(bytes).await;
            let r = c.response().await;
            assert_eq!(r.status, 400, "{what}: {r:?}");
        }
        assert_eq!(*seen.lock().expect("log"), ["GET /lf"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_trailers_cannot_hide_a_request_from_the_guard() {
    bounded(30, async {
        let (fixture, seen) = recording_fixture().await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;

        // A trailer line ending in a bare LF is not ended by it (the parser reads on to CRLF),
        // so "POST /b" below is trailer, and "GET /hidden" is a head, not /b's body.
        let hidden =
            b"GET /hidden HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let mut req = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\n\r\n".to_vec();
        req.extend_from_slice(
            format!(
                "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                hidden.len()
            )
            .as_bytes(),
        );
        req.extend_from_slice(hidden);
        let mut c = Raw::connect(proxy.addr).await;
        c.write(&req).await;
        let mut statuses = Vec::new();
        loop {
            let r = c.response().await;
            statuses.push(r.status);
            if r.header("connection").as_deref() == Some("close") {
                break;
            }
        }
        assert!(statuses.contains(&400), "the ambiguous head was refused: {statuses:?}");
        let seen = seen.lock().expect("log").clone();
        assert!(!seen.iter().any(|r| r.contains("/hidden")), "origin saw {seen:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_max_header_bytes_still_guards_every_head() {
    bounded(30, async {
        let (fixture, seen) = recording_fixture().await;
        let proxy = TestProxy::start(&fixture.url(), &[("server", "max_header_bytes = \"1KiB\"")]).await;

        // 2 KB head, sent in two writes so the guard sees more than 1 KiB without its end.
        let pad = "a".repeat(2000);
        let req = format!(
            "POST /padded HTTP/1.1\r\nHost: x\r\nX-Pad: {pad}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        );
        let mut c = Raw::connect(proxy.addr).await;
        c.write(&req.as_bytes()[..1500]).await;
        sleep(Duration::from_millis(100)).await;
        c.write(&req.as_bytes()[1500..]).await;
        let got = timeout(Duration::from_secs(10), c.read_to_close())
            .await
            .expect("answered and closed within 10 s");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 4"), "refused (400 or 431): {text}");
        assert!(seen.lock().expect("log").is_empty(), "origin saw {:?}", seen.lock().expect("log"));
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 4: streaming with flat memory (the real binary)
// ---------------------------------------------------------------------------------------

/// The proxy binary as a child process, killed when dropped (also on panic).
struct ProxyProcess {
    child: std::process::Child,
    dir: std::path::PathBuf,
    addr: SocketAddr,
}

impl ProxyProcess {
    async fn start(origin: &str) -> ProxyProcess {
        let dir = std::env::temp_dir().join(format!(
            "strata-edges-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let secret = dir.join("secret");
        std::fs::write(&secret, "streaming-test-secret-0123456789").expect("secret");
        let (listen, admin) = (closed_port(), closed_port());
        let config = dir.join("proxy.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{listen}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
                 [origin]\nurl = {origin:?}\n[cluster]\nsecret_file = {:?}\n",
                secret.display().to_string()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.join("stderr")).expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_strata-proxy"))
            .arg("--config")
            .arg(&config)
            .env("STRATA_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn strata-proxy");
        let mut p = ProxyProcess {
            child,
            dir,
            addr: ([127, 0, 0, 1], listen).into(),
        };
        for _ in 0..200 {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("strata-proxy exited early ({status}): {}", p.stderr());
            }
            if TcpStream::connect(p.addr).await.is_ok() {
                return p;
            }
            sleep(Duration::from_millis(50)).await;
        }
        panic!("strata-proxy did not listen on {}: {}", p.addr, p.stderr());
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// Peak resident set size of the process, in KiB.
    fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("VmHWM in /proc status")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const MIB: u64 = 1 << 20;
const STREAM_CHUNK: usize = 64 * 1024;
const STREAM_CHUNKS: usize = 1600;
const STREAM_BYTES: u64 = (STREAM_CHUNK * STREAM_CHUNKS) as u64;
const HWM_LIMIT_KIB: u64 = 80 * 1024;
const _: () = assert!(STREAM_BYTES >= 100 * MIB);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_download_and_upload_stream_with_flat_memory() {
    bounded(240, async {
        let uploaded = Arc::new(AtomicUsize::new(0));
        let seen = uploaded.clone();
        let fixture = Fixture::start(move |req| {
            let seen = seen.clone();
            async move {
                if req.method() == Method::POST {
                    let (len, _) = drain(req).await;
                    seen.store(len as usize, Ordering::SeqCst);
                    return reply(200, &[], len.to_string());
                }
                // Cacheable, but of unknown length: the proxy starts buffering to store it
                // and must switch to streaming past cache.max_object_size.
                Response::builder()
                    .header("cache-control", "max-age=60")
                    .header("content-type", "application/octet-stream")
                    .body(Chunks::new(STREAM_CHUNKS, STREAM_CHUNK, false).boxed())
                    .expect("streamed response")
            }
        })
        .await;
        let proxy = ProxyProcess::start(&fixture.url()).await;
        let baseline = proxy.vm_hwm_kib();

        // Download, counting bytes as they arrive.
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let req = Request::get(format!("http://{}/big.bin", proxy.addr))
            .body(Empty::new())
            .expect("request");
        let resp = timeout(Duration::from_secs(30), client.request(req))
            .await
            .expect("download head within 30 s")
            .expect("download request");
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()
                .get("cache-status")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|s| s.contains("too-large")),
            "{:?}",
            resp.headers()
        );
        let mut body = resp.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("download body");
            if let Some(d) = frame.data_ref() {
                received += d.len() as u64;
            }
        }
        assert_eq!(received, STREAM_BYTES, "every byte arrived");
        let after_download = proxy.vm_hwm_kib();

        // Upload, streamed from a body that never holds more than one chunk.
        let client = Client::builder(TokioExecutor::new()).build_http::<Chunks>();
        let req = Request::post(format!("http://{}/upload", proxy.addr))
            .body(Chunks::new(STREAM_CHUNKS, STREAM_CHUNK, true))
            .expect("request");
        let resp = timeout(Duration::from_secs(120), client.request(req))
            .await
            .expect("upload answered within 120 s")
            .expect("upload request");
        assert_eq!(resp.status(), 200);
        let answer = resp.into_body().collect().await.expect("upload answer").to_bytes();
        assert_eq!(String::from_utf8_lossy(&answer), STREAM_BYTES.to_string());
        assert_eq!(uploaded.load(Ordering::SeqCst) as u64, STREAM_BYTES);
        let after_upload = proxy.vm_hwm_kib();

        eprintln!(
            "strata-proxy VmHWM: {baseline} KiB at start, {after_download} KiB after 100 MiB download, \
             {after_upload} KiB after 100 MiB upload"
        );
        assert!(
            after_download < HWM_LIMIT_KIB,
            "download: VmHWM {after_download} KiB ≥ {} MiB",
            HWM_LIMIT_KIB / 1024
        );
        assert!(
            after_upload < HWM_LIMIT_KIB,
            "upload: VmHWM {after_upload} KiB ≥ {} MiB",
            HWM_LIMIT_KIB / 1024
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 5: origin failures
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_origin_is_504_and_refused_origin_is_502() {
    bounded(30, async {
        let fixture = Fixture::start(|_| async {
            sleep(Duration::from_secs(3)).await;
            reply(200, &[], "too late")
        })
        .await;
        let proxy = TestProxy::start(&fixture.url(), &[("origin", "first_byte_timeout = \"300ms\"")]).await;
        let r = proxy.get("/slow", &[]).await;
        assert_eq!(r.status, 504, "{}", r.text());
        assert!(r.text().contains("did not answer in time"), "{}", r.text());
        assert!(r.header("content-type").starts_with("text/plain"));
        assert_eq!(r.header("cache-control"), "no-store");

        let down = TestProxy::start(&format!("http://127.0.0.1:{}", closed_port()), &[]).await;
        let r = down.get("/", &[]).await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(r.text().contains("could not be reached"), "{}", r.text());
        // A pass (POST) fails the same way.
        let r = down
            .request(Method::POST, "/form", &[], Bytes::from_static(b"a=1"))
            .await;
        assert_eq!(r.status, 502, "{}", r.text());
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 6: not an open proxy
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_targets_go_to_the_configured_origin_only() {
    bounded(30, async {
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let log = seen.clone();
        let fixture = Fixture::start(move |req| {
            log.lock()
                .expect("log")
                .push((header(&req, "host"), req.uri().to_string()));
            async { reply(200, &[], "from the fixture") }
        })
        .await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;

        let mut c = Raw::connect(proxy.addr).await;
        c.write(b"GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n")
            .await;
        let r = c.response().await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "from the fixture");
        assert_eq!(
            *seen.lock().expect("log"),
            [("example.com".to_string(), "/x".to_string())],
            "the configured origin got the request, with the client's Host"
        );

        let mut c = Raw::connect(proxy.addr).await;
        c.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
            .await;
        let r = c.response().await;
        assert_eq!(r.status, 405, "{r:?}");
        assert!(r.text().contains("CONNECT"), "{}", r.text());

        let mut c = Raw::connect(proxy.addr).await;
        c.write(b"PURGE / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let r = c.response().await;
        assert_eq!(r.status, 405, "{r:?}");
        assert!(r.text().contains("admin"), "{}", r.text());
        assert_eq!(fixture.hits(), 1, "CONNECT and PURGE never reach the origin");

        // With server.hosts set, a foreign absolute target is refused outright.
        let strict = TestProxy::start(&fixture.url(), &[("server", "hosts = [\"www.example.org\"]")]).await;
        let mut c = Raw::connect(strict.addr).await;
        c.write(b"GET http://example.com/y HTTP/1.1\r\nHost: www.example.org\r\n\r\n")
            .await;
        let r = c.response().await;
        assert_eq!(r.status, 421, "{r:?}");
        assert_eq!(fixture.hits(), 1);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 7: slowloris
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_finish_their_head_are_disconnected() {
    bounded(30, async {
        let fixture = Fixture::start(|_| async { reply(200, &[("cache-control", "max-age=60")], "ok") }).await;
        let proxy = TestProxy::start(&fixture.url(), &[("server", "header_timeout = \"500ms\"")]).await;

        let mut c = Raw::connect(proxy.addr).await;
        c.write(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
        let got = timeout(Duration::from_secs(5), c.read_to_close())
            .await
            .expect("the proxy closed the connection within 5 s");
        let text = String::from_utf8_lossy(&got);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text:?}");

        // A connection that sends nothing at all is closed as well.
        let mut idle = Raw::connect(proxy.addr).await;
        let got = timeout(Duration::from_secs(5), idle.read_to_close())
            .await
            .expect("an idle connection is closed within 5 s");
        assert!(got.is_empty() || got.starts_with(b"HTTP/1.1 408"), "{got:?}");

        assert_eq!(fixture.hits(), 0);
        // The proxy still serves well-behaved clients.
        assert_eq!(proxy.get("/", &[]).await.status, 200);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 8: Vary
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_one_variant_per_header_value() {
    bounded(30, async {
        let fixture = Fixture::start(|req| async move {
            let device = header(&req, "x-device");
            reply(200, &[("vary", "X-Device"), ("cache-control", "max-age=60")], device)
        })
        .await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;

        let a = proxy.get("/page", &[("x-device", "a")]).await;
        let b = proxy.get("/page", &[("x-device", "b")]).await;
        let a2 = proxy.get("/page", &[("x-device", "a")]).await;
        assert_eq!((a.text(), b.text(), a2.text()), ("a".into(), "b".into(), "a".into()));
        assert_eq!(a.x_cache(), "MISS");
        assert_eq!(b.x_cache(), "MISS");
        assert_eq!(a2.x_cache(), "HIT");
        assert!(
            a2.header("vary").to_ascii_lowercase().contains("x-device"),
            "{:?}",
            a2.headers
        );
        // The first fill knows no Vary rule, so it sends no X-Device (a fill carries only
        // what the key accounts for): it brings the variant without one, stored as such, and
        // `a` is fetched again with its header. Three fetches for three variants.
        assert_eq!(fixture.hits(), 3);
        let none = proxy.get("/page", &[]).await;
        assert_eq!((none.text(), none.x_cache()), ("".into(), "HIT"));
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 9: stale-if-error
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_refresh_keeps_the_stale_copy() {
    bounded(30, async {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let fixture = Fixture::start(move |_| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    reply(200, &[], "v1")
                } else {
                    reply(500, &[], "broken")
                }
            }
        })
        .await;
        let proxy = TestProxy::start(
            &fixture.url(),
            &[("cache", "default_ttl = \"1s\""), ("cache", "grace = \"30s\"")],
        )
        .await;

        let first = proxy.get("/post", &[]).await;
        assert_eq!((first.x_cache(), first.text().as_str()), ("MISS", "v1"));
        sleep(Duration::from_millis(1200)).await;

        let stale = proxy.get("/post", &[]).await;
        assert_eq!(stale.status, 200);
        assert_eq!((stale.x_cache(), stale.text().as_str()), ("STALE", "v1"));
        // The background refresh reaches the origin and gets its 500.
        wait_until("the background refresh", || fixture.hits() >= 2).await;
        sleep(Duration::from_millis(300)).await;

        let again = proxy.get("/post", &[]).await;
        assert_eq!(again.status, 200, "the 500 did not replace the stale copy");
        assert_eq!((again.x_cache(), again.text().as_str()), ("STALE", "v1"));
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 10: coalescing and hit-for-pass
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncacheable_urls_are_not_serialised_behind_a_lock() {
    bounded(60, async {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (now, max) = (in_flight.clone(), peak.clone());
        let fixture = Fixture::start(move |_| {
            let (now, max) = (now.clone(), max.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                sleep(Duration::from_millis(200)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                reply(200, &[("set-cookie", "cart=1")], "personal")
            }
        })
        .await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;

        let first = burst(&proxy, "/shop", 20).await;
        for r in &first {
            assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "personal"));
            assert!(matches!(r.x_cache(), "MISS" | "PASS"), "{:?}", r.headers);
        }
        assert_eq!(
            first.iter().filter(|r| r.x_cache() == "MISS").count(),
            1,
            "one request led the fetch"
        );
        assert_eq!(fixture.hits(), 20, "every request got its own answer from the origin");

        peak.store(0, Ordering::SeqCst);
        let second = burst(&proxy, "/shop", 20).await;
        for r in &second {
            assert_eq!(r.status, 200);
            assert_eq!(r.x_cache(), "PASS", "{:?}", r.headers);
            assert!(r.header("cache-status").contains("hit-for-pass"), "{:?}", r.headers);
        }
        assert_eq!(fixture.hits(), 40);
        assert!(
            peak.load(Ordering::SeqCst) > 1,
            "hit-for-pass requests reached the origin one at a time"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 11: graceful shutdown
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    bounded(30, async {
        let fixture = Fixture::start(|_| async {
            sleep(Duration::from_secs(1)).await;
            reply(200, &[], "finished")
        })
        .await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;
        let addr = proxy.addr;
        let url = format!("http://{addr}/slow");
        let in_flight = tokio::spawn(async move { send(Method::GET, &url, &[], Bytes::new()).await });
        wait_until("the request to reach the origin", || fixture.hits() == 1).await;

        timeout(Duration::from_secs(15), proxy.stop())
            .await
            .expect("the proxy stopped within 15 s");
        let r = timeout(Duration::from_secs(5), in_flight)
            .await
            .expect("the request finished")
            .expect("request task");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "finished");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no new connections after shutdown"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 12: HEAD
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_of_a_cached_object_has_its_length_and_no_body() {
    bounded(30, async {
        let fixture = Fixture::start(|req| async move {
            reply(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("content-type", "application/octet-stream"),
                ],
                format!("the body of {}", req.uri().path()),
            )
        })
        .await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;

        let get = proxy.get("/a", &[]).await;
        assert_eq!(get.x_cache(), "MISS");
        let head = proxy.request(Method::HEAD, "/a", &[], Bytes::new()).await;
        assert_eq!(head.status, 200);
        assert_eq!(head.x_cache(), "HIT");
        assert!(head.body.is_empty());
        assert_eq!(head.header("content-length"), get.body.len().to_string());
        assert_eq!(fixture.hits(), 1);

        // A HEAD miss fills with a GET; the following GET is a hit with the full body.
        let head = proxy.request(Method::HEAD, "/b", &[], Bytes::new()).await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        let get = proxy.get("/b", &[]).await;
        assert_eq!(get.x_cache(), "HIT");
        assert_eq!(get.text(), "the body of /b");
        assert_eq!(head.header("content-length"), get.body.len().to_string());
        assert_eq!(fixture.hits(), 2);

        // On a raw connection: the HEAD answer has no body bytes, so a pipelined GET follows.
        let mut c = Raw::connect(proxy.addr).await;
        c.write(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let line = c.line().await;
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        while !c.line().await.is_empty() {}
        let get = c.response().await;
        assert_eq!(get.status, 200);
        assert_eq!(get.text(), "the body of /a");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 13: cacheable statuses
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_stored_and_redirects_are_not() {
    bounded(30, async {
        let fixture = Fixture::start(|req| async move {
            match req.uri().path() {
                "/moved" => reply(302, &[("location", "/elsewhere")], ""),
                _ => reply(404, &[], "no such page"),
            }
        })
        .await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;

        let a = proxy.get("/missing", &[]).await;
        let b = proxy.get("/missing", &[]).await;
        assert_eq!((a.status.as_u16(), b.status.as_u16()), (404, 404));
        assert_eq!((a.x_cache(), b.x_cache()), ("MISS", "HIT"));
        assert_eq!(b.text(), "no such page");
        assert_eq!(fixture.hits(), 1);

        let a = proxy.get("/moved", &[]).await;
        let b = proxy.get("/moved", &[]).await;
        assert_eq!((a.status.as_u16(), b.status.as_u16()), (302, 302));
        assert_eq!(b.header("location"), "/elsewhere");
        assert_eq!(a.x_cache(), "MISS");
        assert_eq!(b.x_cache(), "PASS");
        assert_eq!(fixture.hits(), 3, "the 302 was fetched twice");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Cache poisoning through cookies
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_pages_are_fetched_without_the_visitors_cookies() {
    bounded(30, async {
        // An origin that would personalise a page by any cookie it sees.
        let fixture = Fixture::start(|req| async move {
            let cookie = header(&req, "cookie");
            reply(200, &[("cache-control", "max-age=60")], format!("cookie=[{cookie}]"))
        })
        .await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;
        let first = proxy.get("/page", &[("cookie", "lang=evil; _ga=1")]).await;
        assert_eq!(first.text(), "cookie=[]", "the fill carried no cookie");
        let other = proxy.get("/page", &[]).await;
        assert_eq!((other.x_cache(), other.text()), ("HIT", "cookie=[]".to_string()));
        assert_eq!(fixture.hits(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_varies_on_cookie_gets_them_per_variant() {
    bounded(30, async {
        let fixture = Fixture::start(|req| async move {
            let cookie = header(&req, "cookie");
            reply(
                200,
                &[("cache-control", "max-age=60"), ("vary", "Cookie")],
                format!("cookie=[{cookie}]"),
            )
        })
        .await;
        let proxy = TestProxy::start(&fixture.url(), &[]).await;
        proxy.get("/page", &[]).await;
        let a = proxy.get("/page", &[("cookie", "theme=a")]).await;
        let a2 = proxy.get("/page", &[("cookie", "theme=a")]).await;
        let b = proxy.get("/page", &[("cookie", "theme=b")]).await;
        assert_eq!(a.text(), "cookie=[theme=a]");
        assert_eq!((a2.x_cache(), a2.text()), ("HIT", "cookie=[theme=a]".to_string()));
        assert_eq!(b.text(), "cookie=[theme=b]");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Header size limit
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_refused_before_the_origin() {
    bounded(30, async {
        let fixture = Fixture::start(|_| async { reply(200, &[], "ok") }).await;
        let proxy = TestProxy::start(&fixture.url(), &[("server", "max_header_bytes = \"16KiB\"")]).await;
        let mut raw = Raw::connect(proxy.addr).await;
        let big = "a".repeat(64 * 1024);
        raw.write(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
            .await;
        let status = raw.line().await;
        assert!(status.starts_with("HTTP/1.1 431"), "{status}");
        assert_eq!(fixture.hits(), 0);
    })
    .await;
}
