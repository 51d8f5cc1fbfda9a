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
    head: BytesMut,
    max_head: usize,
}

impl Scanner {
    /// A scanner that gives up (passes bytes unexamined) on heads over `max_head` bytes.
    pub fn new(max_head: usize) -> Scanner {
        Scanner {
            state: State::Head,
            head: BytesMut::new(),
            max_head,
        }
    }

    /// Consumes `input`, appending the bytes that may go on to the parser to `out`. Bytes of
    /// an incomplete head are held back until the head is complete.
    pub fn feed(&mut self, mut input: &[u8], out: &mut BytesMut) {
        while !input.is_empty() {
            match self.state {
                State::Opaque => {
                    out.extend_from_slice(input);
                    return;
                }
                State::Head => {
                    if self.head.is_empty() {
                        // Blank lines before a request line are allowed and skipped by parsers.
                        let skip = input.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                        out.extend_from_slice(&input[..skip]);
                        input = &input[skip..];
                        if input.is_empty() {
                            return;
                        }
                    }
                    let searched_from = self.head.len().saturating_sub(2);
                    self.head.extend_from_slice(input);
                    input = &[];
                    match head_end(&self.head[searched_from..]) {
                        Some(i) => {
                            let end = searched_from + i;
                            let mut head = self.head.split_to(end);
                            let rest = std::mem::take(&mut self.head);
                            self.state = inspect(&mut head);
                            out.extend_from_slice(&head);
                            // Whatever followed the head goes round the loop again.
                            self.feed(&rest, out);
                            return;
                        }
                        None if self.head.len() > self.max_head => {
                            out.extend_from_slice(&self.head);
                            self.head.clear();
                            self.state = State::Opaque;
                        }
                        None => {}
                    }
                }
                State::Fixed(n) => {
                    let take = (n.min(input.len() as u64)) as usize;
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.state = if n == take as u64 {
                        State::Head
                    } else {
                        State::Fixed(n - take as u64)
                    };
                }
                State::Chunked(c) => {
                    let (used, next) = chunk_step(c, input);
                    out.extend_from_slice(&input[..used]);
                    input = &input[used..];
                    self.state = next;
                }
            }
        }
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
pub struct Guarded<IO> {
    io: IO,
    scanner: Scanner,
    /// Bytes scanned and ready for the parser.
    ready: BytesMut,
    /// Read buffer for the underlying connection.
    raw: Box<[u8]>,
}

impl<IO> Guarded<IO> {
    /// Wraps a connection; heads over `max_head` bytes are not examined.
    pub fn new(io: IO, max_head: usize) -> Self {
        Guarded {
            io,
            scanner: Scanner::new(max_head),
            ready: BytesMut::new(),
            raw: vec![0; 16 * 1024].into_boxed_slice(),
        }
    }
}

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
            let mut raw = ReadBuf::new(&mut this.raw);
            match Pin::new(&mut this.io).poll_read(cx, &mut raw) {
                Poll::Ready(Ok(())) => {
                    let filled = raw.filled();
                    if filled.is_empty() {
                        // EOF: release any held partial head so the parser sees it end.
                        let held = std::mem::take(&mut this.scanner.head);
                        if held.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        this.ready.extend_from_slice(&held);
                        continue;
                    }
                    let n = filled.len();
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
}
