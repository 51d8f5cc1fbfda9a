//! Refusing requests whose framing is ambiguous, before the HTTP parser sees them.
//!
//! An HTTP/1 parser that tolerates `Content-Length` together with `Transfer-Encoding`, or two
//! `Content-Length` lines, lets a request mean one thing to us and another to the next hop
//! (request smuggling). hyper silently resolves both cases, so this guard watches the bytes
//! of each client connection, follows the message framing to find every request head, and
//! renames the offending header to a marker of the same length ([`AMBIGUOUS_MARKER`]). The
//! request handler answers any request carrying the marker with 400 and closes the
//! connection. Bodies pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Header name that replaces `Transfer-Encoding` (17 bytes) in an ambiguous request head.
pub const AMBIGUOUS_MARKER: &str = "x-ambiguous-frame";
const TE_MARKER: &[u8; 17] = b"X-Ambiguous-Frame";
/// Header name that replaces a second `Content-Length` (14 bytes).
pub const DUPLICATE_CL_MARKER: &str = "x-duplicate-cl";
const CL_MARKER: &[u8; 14] = b"X-Duplicate-CL";

/// Where the scanner is in the byte stream of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Inside a body of known length: this many bytes remain.
    Fixed(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Framing could not be followed (malformed, or the head was refused): bytes pass
    /// unexamined and the HTTP parser rejects what it must.
    Opaque,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line; `lf` after its CR.
    Size { value: u64, digits: bool, ext: bool },
    /// Inside chunk data.
    Data(u64),
    /// Expecting the CRLF after chunk data: bytes left.
    DataEnd(u8),
    /// Reading trailer lines, which (as hyper reads them) end only in CRLF; `empty` when the
    /// current line has no content yet, `cr` after a CR.
    Trailer { empty: bool, cr: bool },
}

/// Follows message framing over a stream of request bytes and marks ambiguous heads.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// An incomplete head, held back until the rest of it arrives.
    held: Vec<u8>,
    /// How much of `held` has been searched for the end of the head already.
    searched: usize,
    max_head: usize,
}

impl Scanner {
    /// A scanner that gives up (passes bytes unexamined) on heads over `max_head` bytes.
    pub fn new(max_head: usize) -> Scanner {
        Scanner {
            state: State::Head,
            held: Vec::new(),
            searched: 0,
            max_head,
        }
    }

    /// Whether an incomplete head is held back.
    pub fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    /// Follows the framing over `data`, marking ambiguous heads in place, and returns how
    /// many leading bytes may go on to the parser. The bytes after that are the start of a
    /// head that is not complete yet. Must only be called when nothing is held.
    pub fn scan_in_place(&mut self, data: &mut [u8]) -> usize {
        debug_assert!(self.held.is_empty());
        let n = self.process(data, 0);
        self.searched = (data.len() - n).saturating_sub(2);
        n
    }

    /// Keeps the start of an incomplete head (the tail `scan_in_place` did not release).
    pub fn hold(&mut self, tail: &[u8]) {
        self.held.extend_from_slice(tail);
    }

    /// Consumes `input`, appending the bytes that may go on to the parser to `out`. Bytes of
    /// an incomplete head are held back until the head is complete.
    pub fn feed(&mut self, input: &[u8], out: &mut BytesMut) {
        let mut held = std::mem::take(&mut self.held);
        held.extend_from_slice(input);
        let n = self.process(&mut held, self.searched);
        out.extend_from_slice(&held[..n]);
        held.drain(..n);
        self.searched = held.len().saturating_sub(2);
        self.held = held;
    }

    /// Releases whatever is held (at end of input), so the parser sees the truncated head.
    pub fn release(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.held);
        self.held.clear();
        self.searched = 0;
    }

    /// The framing walk shared by both paths; `searched` says how much of a head starting at
    /// offset 0 was already searched for its end.
    fn process(&mut self, data: &mut [u8], mut searched: usize) -> usize {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Opaque => return data.len(),
                State::Head => {
                    // Blank lines before a request line are allowed and skipped by parsers.
                    while i < data.len() && (data[i] == b'\r' || data[i] == b'\n') {
                        i += 1;
                    }
                    if i == data.len() {
                        return i;
                    }
                    let from = std::mem::take(&mut searched);
                    match head_end(&data[i + from..]) {
                        Some(e) => {
                            let end = i + from + e;
                            self.state = inspect(&mut data[i..end]);
                            i = end;
                        }
                        None if data.len() - i > self.max_head => {
                            self.state = State::Opaque;
                            return data.len();
                        }
                        None => return i,
                    }
                }
                State::Fixed(n) => {
                    let take = n.min((data.len() - i) as u64);
                    i += take as usize;
                    self.state = if n == take { State::Head } else { State::Fixed(n - take) };
                }
                State::Chunked(c) => {
                    let (used, next) = chunk_step(c, &data[i..]);
                    i += used;
                    self.state = next;
                }
            }
        }
        i
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Where a head ends in `buf`: just past its empty line. Lines end in CRLF or, as the HTTP
/// parser also accepts, a bare LF; so the end is an LF followed by LF or CRLF.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
        let lf = from + i;
        match &buf[lf + 1..] {
            [b'\n', ..] => return Some(lf + 2),
            [b'\r', b'\n', ..] => return Some(lf + 3),
            _ => from = lf + 1,
        }
    }
    None
}

/// Examines one complete head, rewriting ambiguous framing headers, and returns the state
/// for the bytes after it. Lines end in LF, with or without CR (as the parser reads them).
fn inspect(head: &mut [u8]) -> State {
    let mut te_lines = Vec::new();
    let mut cl_lines = Vec::new();
    let mut chunked_last = false;
    let mut cl_value = None;
    let mut pos = match find(head, b"\n") {
        Some(i) => i + 1,
        None => return State::Opaque,
    };
    while pos < head.len() {
        let Some(len) = find(&head[pos..], b"\n") else {
            break;
        };
        let line = &head[pos..pos + len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = &line[..colon];
            let value = std::str::from_utf8(&line[colon + 1..]).unwrap_or("").trim();
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te_lines.push(pos);
                chunked_last = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
            } else if name.eq_ignore_ascii_case(b"content-length") {
                cl_lines.push(pos);
                cl_value = value.parse::<u64>().ok();
            }
        }
        pos += len + 1;
    }
    if !te_lines.is_empty() && !cl_lines.is_empty() {
        for p in te_lines {
            head[p..p + TE_MARKER.len()].copy_from_slice(TE_MARKER);
        }
        return State::Opaque;
    }
    if cl_lines.len() > 1 {
        for p in &cl_lines[1..] {
            head[*p..*p + CL_MARKER.len()].copy_from_slice(CL_MARKER);
        }
        return State::Opaque;
    }
    if !te_lines.is_empty() {
        return if chunked_last {
            State::Chunked(Chunk::Size {
                value: 0,
                digits: false,
                ext: false,
            })
        } else {
            State::Opaque
        };
    }
    match (cl_lines.is_empty(), cl_value) {
        (true, _) => State::Head,
        (false, Some(0)) => State::Head,
        (false, Some(n)) => State::Fixed(n),
        (false, None) => State::Opaque,
    }
}

/// Advances through chunked framing; returns how many bytes of `input` were used.
fn chunk_step(c: Chunk, input: &[u8]) -> (usize, State) {
    match c {
        Chunk::Size {
            mut value,
            mut digits,
            mut ext,
        } => {
            for (i, &b) in input.iter().enumerate() {
                match b {
                    b'\n' => {
                        if !digits {
                            return (i + 1, State::Opaque);
                        }
                        let next = if value == 0 {
                            Chunk::Trailer { empty: true, cr: false }
                        } else {
                            Chunk::Data(value)
                        };
                        return (i + 1, State::Chunked(next));
                    }
                    b'\r' => {}
                    _ if ext => {}
                    b';' | b' ' | b'\t' => ext = true,
                    _ => match (b as char).to_digit(16) {
                        Some(d) if value < (1 << 56) => {
                            value = value * 16 + u64::from(d);
                            digits = true;
                        }
                        _ => return (i + 1, State::Opaque),
                    },
                }
            }
            (input.len(), State::Chunked(Chunk::Size { value, digits, ext }))
        }
        Chunk::Data(n) => {
            let take = n.min(input.len() as u64);
            let next = if take == n {
                Chunk::DataEnd(2)
            } else {
                Chunk::Data(n - take)
            };
            (take as usize, State::Chunked(next))
        }
        Chunk::DataEnd(left) => {
            let take = (left as usize).min(input.len());
            let left = left - take as u8;
            let next = if left == 0 {
                Chunk::Size {
                    value: 0,
                    digits: false,
                    ext: false,
                }
            } else {
                Chunk::DataEnd(left)
            };
            (take, State::Chunked(next))
        }
        Chunk::Trailer { mut empty, mut cr } => {
            for (i, &b) in input.iter().enumerate() {
                if cr {
                    // Only LF may follow CR; a bare LF is part of the line.
                    if b != b'\n' {
                        return (i + 1, State::Opaque);
                    }
                    if empty {
                        return (i + 1, State::Head);
                    }
                    (empty, cr) = (true, false);
                } else if b == b'\r' {
                    cr = true;
                } else {
                    empty = false;
                }
            }
            (input.len(), State::Chunked(Chunk::Trailer { empty, cr }))
        }
    }
}

/// A client connection whose incoming bytes pass through a [`Scanner`].
///
/// Bytes are read straight into the parser's buffer and examined there; only while a head
/// arrives in pieces are they copied aside (`raw`, `ready`).
pub struct Guarded<IO> {
    io: IO,
    scanner: Scanner,
    /// Bytes scanned and ready for the parser (only after a held head completes).
    ready: BytesMut,
    /// Read buffer used while a partial head is held; allocated on first use.
    raw: Vec<u8>,
}

impl<IO> Guarded<IO> {
    /// Wraps a connection; heads over `max_head` bytes are not examined.
    pub fn new(io: IO, max_head: usize) -> Self {
        Guarded {
            io,
            scanner: Scanner::new(max_head),
            ready: BytesMut::new(),
            raw: Vec::new(),
        }
    }
}

/// Size of the side buffer used while a head arrives in pieces.
const RAW_BUF: usize = 8 * 1024;

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if !this.scanner.holds() {
                // The usual case: read into the parser's buffer and examine the bytes there.
                let before = buf.filled().len();
                match Pin::new(&mut this.io).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                }
                let after = buf.filled().len();
                if after == before {
                    return Poll::Ready(Ok(()));
                }
                let released = this.scanner.scan_in_place(&mut buf.filled_mut()[before..]);
                if before + released < after {
                    this.scanner.hold(&buf.filled()[before + released..]);
                    buf.set_filled(before + released);
                }
                if released > 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // A head is arriving in pieces: gather it aside until it is complete.
            if this.raw.is_empty() {
                this.raw = vec![0; RAW_BUF];
            }
            let mut raw = ReadBuf::new(&mut this.raw);
            match Pin::new(&mut this.io).poll_read(cx, &mut raw) {
                Poll::Ready(Ok(())) => {
                    let n = raw.filled().len();
                    if n == 0 {
                        // End of input: release the partial head so the parser sees it end.
                        this.scanner.release(&mut this.ready);
                        if this.ready.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    let (raw_buf, scanner, ready) = (&this.raw, &mut this.scanner, &mut this.ready);
                    scanner.feed(&raw_buf[..n], ready);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

pub fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = Scanner::new(64 * 1024);
        let mut out = BytesMut::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        out.to_vec()
    }

    fn run_bytewise(input: &[u8]) -> Vec<u8> {
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        run(&chunks)
    }

    #[test]
    fn clean_requests_pass_unchanged_in_any_split() {
        let input: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
            POST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nwor\r\n\r\n0\r\nX-T: 1\r\n\r\n\
            GET /after HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nContent-Leng";
        assert_eq!(run(&[input]), input);
        assert_eq!(run_bytewise(input), input);
    }

    #[test]
    fn body_bytes_that_look_like_headers_are_not_touched() {
        let input: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 58\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n";
        assert_eq!(run(&[input]), input);
    }

    #[test]
    fn content_length_with_transfer_encoding_is_marked() {
        let input = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let out = run_bytewise(input);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("X-Ambiguous-Frame: chunked"), "{text}");
        assert!(text.contains("Content-Length: 4"));
    }

    #[test]
    fn duplicate_content_length_is_marked_even_when_equal() {
        let input = b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 4\r\nContent-Length: 4\r\n\r\nabcd";
        let text = String::from_utf8(run(&[input])).unwrap();
        assert!(text.contains("content-length: 4\r\nX-Duplicate-CL: 4"), "{text}");
    }

    #[test]
    fn oversized_heads_are_released_unexamined() {
        let mut s = Scanner::new(32);
        let mut out = BytesMut::new();
        s.feed(b"GET / HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &mut out);
        assert!(!out.is_empty());
    }

    #[test]
    fn bare_lf_line_endings_are_followed_like_the_parser_does() {
        let clean: &[u8] = b"GET /a HTTP/1.1\nHost: a\n\nGET /b HTTP/1.1\r\nHost: a\r\n\n";
        assert_eq!(run(&[clean]), clean);
        assert_eq!(run_bytewise(clean), clean);
        let input = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let text = String::from_utf8(run_bytewise(input)).unwrap();
        assert!(text.contains("X-Ambiguous-Frame: chunked"), "{text}");
        let input = b"POST / HTTP/1.1\nContent-Length: 3\nContent-Length: 3\n\nabc";
        let text = String::from_utf8(run(&[input])).unwrap();
        assert!(text.contains("X-Duplicate-CL: 3"), "{text}");
    }

    #[test]
    fn trailers_end_only_at_an_empty_crlf_line() {
        // A bare LF inside a trailer line does not end it: the "POST /b" lines are trailer
        // too, so "GET /c" is a head (examined), not the body of /b.
        let input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 71\r\n\r\n\
            GET /c HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for out in [run(&[input]), run_bytewise(input)] {
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("X-Ambiguous-Frame: chunked"), "{text}");
        }
    }

    /// A reader that hands out its input in fixed-size pieces.
    struct Pieces {
        data: Vec<u8>,
        at: usize,
        piece: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let n = self.piece.min(self.data.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    async fn through_guard(input: &[u8], piece: usize, read_size: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut g = Guarded::new(
            Pieces {
                data: input.to_vec(),
                at: 0,
                piece,
            },
            64 * 1024,
        );
        let mut out = Vec::new();
        let mut buf = vec![0; read_size];
        loop {
            let n = g.read(&mut buf).await.unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn guard_passes_clean_traffic_and_marks_ambiguous_heads_for_any_read_sizes() {
        let clean: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
            POST /y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nwor\r\n\r\n0\r\n\r\n\
            GET /z HTTP/1.1\r\nHost: a\r\n\r\n";
        let bad: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for piece in [1, 2, 3, 7, 16, 31, 64, 1000] {
            for read_size in [1, 5, 64, 8192] {
                assert_eq!(
                    through_guard(clean, piece, read_size).await,
                    clean,
                    "piece {piece} read {read_size}"
                );
                let out = String::from_utf8(through_guard(bad, piece, read_size).await).unwrap();
                assert!(
                    out.contains("X-Ambiguous-Frame: chunked"),
                    "piece {piece} read {read_size}: {out}"
                );
                assert_eq!(out.len(), bad.len());
            }
        }
    }

    #[tokio::test]
    async fn a_truncated_head_is_released_at_end_of_input() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n";
        assert_eq!(through_guard(input, 4, 8192).await, input);
    }
}
