//! The proxy's ambiguous-framing guard (`strata_proxy::framing`) on arbitrary client byte
//! streams, alone and in front of hyper exactly as the proxy runs it.
//!
//! The input's first byte picks how the stream is cut into reads; the rest is what the
//! client sends. Checked:
//! - the guard changes no byte count and only renames a `Transfer-Encoding` or
//!   `Content-Length` header name to its marker of the same length;
//! - how the stream is cut into pieces changes nothing;
//! - in front of hyper (same `max_buf_size` as the guard's head limit, keep-alive), every
//!   request hyper hands to the handler either carries a marker (and is answered 400 with
//!   `Connection: close`, as the proxy does) or was sent with unambiguous framing: never
//!   `Transfer-Encoding` together with `Content-Length`, never two `Content-Length`s.
//!
//! hyper resolves those cases before the handler sees the headers (it drops a second
//! `Content-Length`, and one next to `Transfer-Encoding`), so the raw heads are found by
//! [`raw_heads`], a model of how hyper 1.x walks a connection (httparse for heads, its
//! length and chunked rules for bodies), run over the bytes the guard passes on. The model
//! is checked against hyper itself: the requests hyper handed over are the model's first
//! heads, same method and target, in order. `FRAMING_DEBUG=1` prints both for an input.
#![no_main]

use std::cell::RefCell;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use strata_proxy::framing::{Guarded, Scanner, AMBIGUOUS_MARKER, DUPLICATE_CL_MARKER};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The proxy's smallest head limit (hyper's smallest `max_buf_size`).
const MAX_HEAD: usize = 8192;

/// Read sizes a stream is cut into, picked by the input's first byte.
fn pieces(selector: u8) -> Vec<usize> {
    match selector % 8 {
        0 => vec![usize::MAX],
        1 => vec![1],
        2 => vec![2, 3],
        3 => vec![7, 1, 13],
        4 => vec![64],
        5 => vec![1000, 1],
        6 => vec![3, 100, 5, 1],
        _ => vec![usize::from(selector / 8).max(1)],
    }
}

/// The scanner's output for `input` fed in pieces (`feed`, as the guard does with a held head).
fn scan_fed(input: &[u8], sizes: &[usize], max_head: usize) -> Vec<u8> {
    let mut s = Scanner::new(max_head);
    let mut out = BytesMut::new();
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at == input.len() {
            break;
        }
        let end = at + (*size).min(input.len() - at);
        s.feed(&input[at..end], &mut out);
        at = end;
    }
    s.release(&mut out);
    out.to_vec()
}

/// The scanner's output the way the guard's fast path drives it: in place while nothing is
/// held, `feed` once a head is held.
fn scan_in_place(input: &[u8], sizes: &[usize], max_head: usize) -> Vec<u8> {
    let mut s = Scanner::new(max_head);
    let mut out = BytesMut::new();
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at == input.len() {
            break;
        }
        let end = at + (*size).min(input.len() - at);
        if s.holds() {
            s.feed(&input[at..end], &mut out);
        } else {
            let mut piece = input[at..end].to_vec();
            let n = s.scan_in_place(&mut piece);
            out.extend_from_slice(&piece[..n]);
            if n < piece.len() {
                s.hold(&piece[n..]);
            }
        }
        at = end;
    }
    s.release(&mut out);
    out.to_vec()
}

/// Every changed byte lies in a header name replaced by a marker of the same length.
fn only_names_renamed(input: &[u8], out: &[u8]) {
    assert_eq!(input.len(), out.len(), "the guard changed the length of the stream");
    let mut i = 0;
    while i < input.len() {
        if input[i] == out[i] {
            i += 1;
            continue;
        }
        let renamed = [
            (&b"transfer-encoding"[..], &b"X-Ambiguous-Frame"[..]),
            (&b"content-length"[..], &b"X-Duplicate-CL"[..]),
        ]
        .iter()
        .any(|(name, marker)| {
            input.len() >= i + name.len()
                && input[i..i + name.len()].eq_ignore_ascii_case(name)
                && &out[i..i + name.len()] == *marker
                && i > 0
                && input[i - 1] == b'\n'
        });
        assert!(
            renamed,
            "byte {i} changed outside a header name: {:?}",
            String::from_utf8_lossy(out)
        );
        i += 1;
        while i < input.len() && input[i] != b':' {
            i += 1;
        }
    }
}

/// A client: hands the input out in pieces, swallows what the server writes.
struct Client {
    data: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    reads: usize,
}

impl AsyncRead for Client {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let size = self.sizes[self.reads % self.sizes.len()];
        self.reads += 1;
        let n = size.min(self.data.len() - self.at).min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Client {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What the handler saw of one request.
#[derive(Debug)]
struct Seen {
    method: String,
    /// Path and query (for an origin-form target).
    target: Option<String>,
    marked: bool,
    transfer_encoding: usize,
    content_length: Vec<String>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    })
}

/// The requests hyper hands to the handler when the client sends `input` in `sizes` reads.
fn through_hyper(input: &[u8], sizes: Vec<usize>) -> Vec<Seen> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let h = req.headers();
            let marked = h.contains_key(AMBIGUOUS_MARKER) || h.contains_key(DUPLICATE_CL_MARKER);
            log.borrow_mut().push(Seen {
                method: req.method().to_string(),
                target: req.uri().path_and_query().map(|p| p.to_string()),
                marked,
                transfer_encoding: h.get_all(hyper::header::TRANSFER_ENCODING).iter().count(),
                content_length: h
                    .get_all(hyper::header::CONTENT_LENGTH)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect(),
            });
            let mut resp = Response::new(Full::new(Bytes::new()));
            if marked {
                // The proxy's answer: 400 and the connection closed, the rest unread.
                *resp.status_mut() = hyper::StatusCode::BAD_REQUEST;
                resp.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            } else {
                // Read the body, so the next request on the connection is parsed.
                let _ = req.into_body().collect().await;
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let client = Client {
        data: input.to_vec(),
        at: 0,
        sizes,
        reads: 0,
    };
    let io = TokioIo::new(Guarded::new(client, MAX_HEAD));
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .keep_alive(true)
        .serve_connection(io, service);
    let result = runtime().block_on(conn);
    if std::env::var_os("FRAMING_DEBUG").is_some() {
        eprintln!("connection: {result:?}");
    }
    seen.take()
}

/// One request head as sent, found by [`raw_heads`].
#[derive(Debug)]
struct RawHead {
    method: String,
    target: String,
    marked: bool,
    transfer_encoding: usize,
    content_length: usize,
}

/// Why [`raw_heads`] stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// A definite end: the input ran out, or hyper would refuse or close here.
    End,
    /// A place the model does not follow hyper exactly (a head near the size limit, an
    /// upgrade): what hyper does after it is not checked.
    Unsure,
}

/// hyper's `Content-Length` rule for requests: every line's value only decimal digits (no
/// sign, no list), all the same number.
fn content_length(values: &[&[u8]]) -> Option<u64> {
    let mut len = None;
    for v in values {
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = std::str::from_utf8(v).ok()?.parse::<u64>().ok()?;
        if len.is_some_and(|l| l != n) {
            return None;
        }
        len = Some(n);
    }
    len
}

/// Where a chunked body starting at `at` ends, by hyper's decoder (sizes, CRLFs,
/// extensions, trailers); `None` where hyper would fail or the input ends.
fn chunked_end(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        // Size: at least one hex digit, no overflow; then LWS, an extension, or CR LF.
        let mut size: u64 = 0;
        let mut digits = 0;
        while let Some(d) = b.get(at).and_then(|c| (*c as char).to_digit(16)) {
            size = size.checked_mul(16)?.checked_add(u64::from(d))?;
            digits += 1;
            at += 1;
        }
        if digits == 0 {
            return None;
        }
        while matches!(b.get(at), Some(b' ' | b'\t')) {
            at += 1;
        }
        if b.get(at) == Some(&b';') {
            while *b.get(at)? != b'\r' {
                if b[at] == b'\n' {
                    return None;
                }
                at += 1;
            }
        }
        if b.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        at += 2;
        if size == 0 {
            break;
        }
        at = at.checked_add(usize::try_from(size).ok()?)?;
        if b.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        at += 2;
    }
    // Trailer lines end in CR LF (a bare LF is part of the line); an empty one ends the body.
    loop {
        if b.get(at..at + 2)? == b"\r\n" {
            return Some(at + 2);
        }
        while *b.get(at)? != b'\r' {
            at += 1;
        }
        if b.get(at + 1)? != &b'\n' {
            return None;
        }
        at += 2;
    }
}

/// The request heads hyper would find in `b`, in order, and why the walk stopped.
fn raw_heads(b: &[u8]) -> (Vec<RawHead>, Stop) {
    let mut heads = Vec::new();
    let mut at = 0;
    loop {
        if at >= b.len() {
            return (heads, Stop::End);
        }
        let mut storage = [httparse::EMPTY_HEADER; 100];
        let mut req = httparse::Request::new(&mut storage);
        let len = match httparse::ParserConfig::default().parse_request(&mut req, &b[at..]) {
            Ok(httparse::Status::Complete(len)) => len,
            // hyper's read buffer holds at most MAX_HEAD bytes: near it, don't guess.
            _ if b.len() - at >= MAX_HEAD - 64 => return (heads, Stop::Unsure),
            _ => return (heads, Stop::End),
        };
        if len >= MAX_HEAD - 64 {
            return (heads, Stop::Unsure);
        }
        let method = req.method.unwrap_or("").to_string();
        let named = |name: &str| -> Vec<&[u8]> {
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
                .collect()
        };
        let te = named("transfer-encoding");
        let cl = named("content-length");
        let marked = !named(AMBIGUOUS_MARKER).is_empty() || !named(DUPLICATE_CL_MARKER).is_empty();
        let http10 = req.version == Some(0);
        let connection = named("connection");
        let has_token = |token: &str| {
            connection.iter().any(|v| {
                std::str::from_utf8(v).is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            })
        };
        let closes = if http10 {
            !has_token("keep-alive")
        } else {
            has_token("close")
        };
        let upgrade = method == "CONNECT" || !named("upgrade").is_empty();
        heads.push(RawHead {
            method,
            target: req.path.unwrap_or("").to_string(),
            marked,
            transfer_encoding: te.len(),
            content_length: cl.len(),
        });
        if marked || closes || (!te.is_empty() && !cl.is_empty()) {
            // Answered and closed (the proxy's 400; `Connection: close`; hyper closes after
            // a request with both framing headers).
            return (heads, Stop::End);
        }
        if upgrade {
            return (heads, Stop::Unsure);
        }
        at += len;
        if let Some(last) = te.last() {
            let chunked = std::str::from_utf8(last)
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
            if http10 || !chunked {
                return (heads, Stop::End);
            }
            match chunked_end(b, at) {
                Some(end) => at = end,
                None => return (heads, Stop::End),
            }
        } else if !cl.is_empty() {
            match content_length(&cl).and_then(|n| usize::try_from(n).ok()) {
                Some(n) if n <= b.len() - at => at += n,
                _ => return (heads, Stop::End),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let sizes = pieces(selector);
    // With a head limit beyond the input, every head is examined however it arrives.
    let whole = scan_fed(input, &[usize::MAX], usize::MAX);
    only_names_renamed(input, &whole);
    assert_eq!(
        scan_fed(input, &sizes, usize::MAX),
        whole,
        "feeding in pieces changed the output"
    );
    assert_eq!(
        scan_in_place(input, &sizes, usize::MAX),
        whole,
        "scanning in place changed the output"
    );
    let passed = scan_fed(input, &sizes, MAX_HEAD);
    let (heads, stop) = raw_heads(&passed);
    let seen = through_hyper(input, sizes);
    if std::env::var_os("FRAMING_DEBUG").is_some() {
        eprintln!("{stop:?}\n{heads:#?}\n{seen:#?}");
    }
    if stop == Stop::End {
        assert!(
            seen.len() <= heads.len(),
            "hyper handed over {} requests, the model found {}: {seen:?} {heads:?}",
            seen.len(),
            heads.len()
        );
    }
    for (r, h) in seen.iter().zip(&heads) {
        assert_eq!(
            r.method, h.method,
            "hyper and the model disagree on the heads: {seen:?} {heads:?}"
        );
        if h.target.starts_with('/') {
            // hyper keeps no fragment.
            let target = h.target.split('#').next();
            assert_eq!(r.target.as_deref(), target, "{seen:?} {heads:?}");
        }
        assert_eq!(r.marked, h.marked);
        if h.marked {
            break;
        }
        assert!(
            h.transfer_encoding == 0 || h.content_length == 0,
            "Transfer-Encoding with Content-Length reached the handler unmarked: {h:?}"
        );
        assert!(
            h.content_length <= 1,
            "two Content-Lengths reached the handler unmarked: {h:?}"
        );
        assert!(r.content_length.len() <= 1 && (r.transfer_encoding == 0 || r.content_length.is_empty()));
    }
});
