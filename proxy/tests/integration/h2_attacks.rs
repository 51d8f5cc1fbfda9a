//! HTTP/2 attacks on the HTTPS port, sent as raw frames (the usual clients refuse to produce
//! them): a body shorter than its `content-length`, two `content-length`s, rapid reset, a
//! CONTINUATION flood. Each must end in a stream or connection error, reach the origin at
//! most as a bounded amount of work, and leave the proxy serving.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

use crate::fixture::{full, Fixture};
use crate::harness::TestProxy;
use crate::tls::{alpn, connect, start, Pki};

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// Error codes (RFC 9113 §7).
const PROTOCOL_ERROR: u32 = 0x1;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame as sent on the wire.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK header block of literal fields without indexing and without Huffman coding
/// (RFC 7541 §6.2.2): any field, in any order, as the test wants it.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    fn length(out: &mut Vec<u8>, n: usize) {
        // 7-bit prefix integer, H = 0.
        if n < 127 {
            out.push(n as u8);
        } else {
            out.push(127);
            let mut rest = n - 127;
            while rest >= 128 {
                out.push((rest % 128) as u8 | 0x80);
                rest /= 128;
            }
            out.push(rest as u8);
        }
    }
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        length(&mut out, name.len());
        out.extend_from_slice(name.as_bytes());
        length(&mut out, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The header block of a request to the test site: its pseudo-headers, then `extra`.
fn request(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![
        (":method", method),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", path),
    ];
    fields.extend_from_slice(extra);
    block(&fields)
}

/// A frame received: kind, flags, stream and payload.
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// A raw HTTP/2 client connection over TLS.
struct H2 {
    tls: TlsStream<TcpStream>,
}

impl H2 {
    /// Connects, checks ALPN chose h2, and sends the preface with empty SETTINGS.
    async fn open(addr: std::net::SocketAddr, pki: &Pki) -> H2 {
        let tls = connect(addr, "localhost", pki.client(&[b"h2"])).await;
        assert_eq!(alpn(&tls).as_deref(), Some(&b"h2"[..]));
        let mut c = H2 { tls };
        c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        c.send(&frame(SETTINGS, 0, 0, &[])).await;
        c
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The server may already have closed the connection: that is an answer too.
        let _ = self.tls.write_all(bytes).await;
    }

    /// The next frame, or `None` when the connection closed or nothing came within 5 s.
    async fn next(&mut self) -> Option<Frame> {
        let read = async {
            let mut head = [0u8; 9];
            self.tls.read_exact(&mut head).await.ok()?;
            let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            self.tls.read_exact(&mut payload).await.ok()?;
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            Some(Frame {
                kind: head[3],
                flags: head[4],
                stream,
                payload,
            })
        };
        timeout(Duration::from_secs(5), read).await.ok().flatten()
    }

    /// Reads frames (acknowledging the server's SETTINGS) until `done` says what it waited
    /// for, the connection ends, or 5 s pass without a frame; returns that frame.
    async fn until(&mut self, mut done: impl FnMut(&Frame) -> bool) -> Option<Frame> {
        while let Some(f) = self.next().await {
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                self.send(&frame(SETTINGS, ACK, 0, &[])).await;
            }
            if done(&f) {
                return Some(f);
            }
        }
        None
    }
}

fn error_code(f: &Frame) -> u32 {
    let at = if f.kind == GOAWAY { 4 } else { 0 };
    f.payload
        .get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// An origin that answers every request with a small cached page, counting requests.
async fn origin() -> Fixture {
    Fixture::start(|_req| async {
        http::Response::builder()
            .header("cache-control", "max-age=60")
            .body(full("page"))
            .expect("response")
    })
    .await
}

/// A stream the server answered or refused: a response HEADERS, a RST_STREAM, or GOAWAY.
fn answered(stream: u32) -> impl FnMut(&Frame) -> bool {
    move |f| f.kind == GOAWAY || (f.stream == stream && (f.kind == HEADERS || f.kind == RST_STREAM))
}

/// After an attack the proxy still answers a plain HTTP/2 GET on a new connection.
async fn still_serving(addr: std::net::SocketAddr, pki: &Pki) {
    let mut c = H2::open(addr, pki).await;
    let get = request("GET", "/after", &[]);
    c.send(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &get)).await;
    let f = c.until(answered(1)).await.expect("an answer to a plain GET");
    assert_eq!(f.kind, HEADERS, "the proxy serves after the attack");
}

async fn proxy_with_tls(tag: &str) -> (Fixture, Pki, TestProxy, std::net::SocketAddr) {
    let fixture = origin().await;
    let pki = Pki::new(tag);
    let leaf = pki.leaf(&["localhost"], "leaf");
    let (proxy, addr) = start(&fixture.url(), &[&leaf], &[]).await;
    (fixture, pki, proxy, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_content_length_is_reset() {
    let (fixture, pki, _proxy, addr) = proxy_with_tls("h2-cl-short").await;
    let mut c = H2::open(addr, &pki).await;
    let post = request("POST", "/form", &[("content-length", "10")]);
    c.send(&frame(HEADERS, END_HEADERS, 1, &post)).await;
    c.send(&frame(DATA, END_STREAM, 1, b"abc")).await;
    let f = c
        .until(|f| f.kind == GOAWAY || (f.stream == 1 && f.kind == RST_STREAM))
        .await;
    let f = f.expect("the stream is reset");
    assert_eq!(error_code(&f), PROTOCOL_ERROR, "kind {}", f.kind);
    still_serving(addr, &pki).await;
    drop(fixture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_content_lengths_are_refused_before_the_origin() {
    let (fixture, pki, _proxy, addr) = proxy_with_tls("h2-cl-twice").await;
    let mut c = H2::open(addr, &pki).await;
    let post = request("POST", "/form", &[("content-length", "3"), ("content-length", "30")]);
    c.send(&frame(HEADERS, END_HEADERS, 1, &post)).await;
    c.send(&frame(DATA, END_STREAM, 1, b"abc")).await;
    let f = c.until(answered(1)).await.expect("an answer");
    assert!(
        f.kind == RST_STREAM && error_code(&f) == PROTOCOL_ERROR || f.kind == GOAWAY,
        "refused (kind {}, code {})",
        f.kind,
        error_code(&f)
    );
    assert_eq!(fixture.hits.load(Ordering::SeqCst), 0, "nothing reached the origin");
    still_serving(addr, &pki).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_the_connection_with_bounded_origin_work() {
    let (fixture, pki, _proxy, addr) = proxy_with_tls("h2-rapid-reset").await;
    let mut c = H2::open(addr, &pki).await;
    let mut cancel = Vec::new();
    cancel.extend_from_slice(&CANCEL.to_be_bytes());
    let sent = 2000u32;
    let mut batch = Vec::new();
    for i in 0..sent {
        let stream = 1 + 2 * i;
        let get = request("GET", &format!("/reset-{i}"), &[]);
        batch.extend(frame(HEADERS, END_STREAM | END_HEADERS, stream, &get));
        batch.extend(frame(RST_STREAM, 0, stream, &cancel));
        if batch.len() > 16 * 1024 {
            c.send(&batch).await;
            batch.clear();
        }
    }
    c.send(&batch).await;
    let goaway = c.until(|f| f.kind == GOAWAY).await;
    // However the connection ended (GOAWAY, or closed), the origin saw a bounded share.
    let hits = fixture.hits.load(Ordering::SeqCst);
    let goaway = goaway.expect("the connection is told to go away");
    assert_eq!(error_code(&goaway), ENHANCE_YOUR_CALM);
    assert!(
        hits < sent as usize / 4,
        "{hits} of {sent} reset streams reached the origin"
    );
    still_serving(addr, &pki).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off() {
    let (fixture, pki, _proxy, addr) = proxy_with_tls("h2-continuation").await;
    let mut c = H2::open(addr, &pki).await;
    let start = request("GET", "/flood", &[]);
    c.send(&frame(HEADERS, END_STREAM, 1, &start)).await;
    // Header fields without end, 16 KiB at a time, up to 8 MiB: far past max_header_bytes.
    let chunk = block(&[("x-flood", &"a".repeat(16_000))]);
    let mut closed_after = None;
    for i in 0..512 {
        if c.tls.write_all(&frame(CONTINUATION, 0, 1, &chunk)).await.is_err() {
            closed_after = Some(i);
            break;
        }
    }
    let end = c
        .until(|f| f.kind == GOAWAY || (f.stream == 1 && f.kind == RST_STREAM))
        .await;
    let end = end.expect("the connection is told to go away");
    assert_eq!((end.kind, error_code(&end)), (GOAWAY, ENHANCE_YOUR_CALM));
    assert!(
        closed_after.is_some(),
        "the connection is closed before the 8 MiB header block was all sent"
    );
    assert_eq!(fixture.hits.load(Ordering::SeqCst), 0, "nothing reached the origin");
    still_serving(addr, &pki).await;
}
