//! Compression done once, when an object is stored, so hits never compress.
//!
//! Also: choosing the encoding a client gets from its `Accept-Encoding`, and decoding a gzip
//! body the origin sent anyway.

use std::io::{Read, Write};

use bytes::Bytes;
use http::HeaderValue;

/// The content codings the cache holds for an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

impl Encoding {
    /// The `Content-Encoding` value, `None` for identity.
    pub fn header(self) -> Option<HeaderValue> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some(HeaderValue::from_static("gzip")),
            Encoding::Brotli => Some(HeaderValue::from_static("br")),
        }
    }
}

/// Which of the held encodings a client accepts, best first: br, gzip, identity.
///
/// `q=0` excludes a coding; `*` stands for any coding not named.
pub fn negotiate(accept: Option<&HeaderValue>, have_gzip: bool, have_br: bool) -> Encoding {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return Encoding::Identity;
    };
    let (mut gzip, mut br, mut star) = (None, None, None);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
            .filter_map(|q| q.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        let ok = q > 0.0;
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(ok);
        } else if name.eq_ignore_ascii_case("br") {
            br = Some(ok);
        } else if name == "*" {
            star = Some(ok);
        }
    }
    if have_br && br.or(star).unwrap_or(false) {
        Encoding::Brotli
    } else if have_gzip && gzip.or(star).unwrap_or(false) {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

/// Whether a `Content-Type` is worth compressing (text and structured text).
pub fn compressible(content_type: Option<&HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    ct.starts_with("text/")
        || matches!(
            ct.as_str(),
            "application/json"
                | "application/ld+json"
                | "application/javascript"
                | "application/xml"
                | "application/rss+xml"
                | "application/atom+xml"
                | "application/rdf+xml"
                | "application/xhtml+xml"
                | "image/svg+xml"
                | "application/manifest+json"
        )
}

/// Gzip at level 6 (the usual trade-off); `None` when it does not make the body smaller.
pub fn gzip(body: &[u8]) -> Option<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 3), flate2::Compression::new(6));
    enc.write_all(body).ok()?;
    let out = enc.finish().ok()?;
    (out.len() < body.len()).then(|| exact(out))
}

/// Brotli at quality 5 (fast enough at store time, smaller than gzip); `None` when it does
/// not beat `than` bytes.
pub fn brotli(body: &[u8], than: usize) -> Option<Bytes> {
    let mut out = Vec::with_capacity(body.len() / 4);
    // A window no larger than the body (its buffers are sized from it), but at least 2^18:
    // below that, quality 5 switches to a hasher with far larger tables.
    let lgwin = (usize::BITS - body.len().leading_zeros()).clamp(18, 22) as i32;
    let params = brotli::enc::BrotliEncoderParams {
        quality: 5,
        lgwin,
        size_hint: body.len(),
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &body[..], &mut out, &params).ok()?;
    (out.len() < than).then(|| exact(out))
}

/// Bytes in an allocation of exactly their size: stored objects live long, and the spare
/// capacity of a grown buffer would be memory the cache's byte budget does not see.
pub fn exact(mut v: Vec<u8>) -> Bytes {
    v.shrink_to_fit();
    Bytes::from(v)
}

/// Decodes a gzip body, refusing to produce more than `limit` bytes.
pub fn gunzip(body: &[u8], limit: u64) -> Option<Bytes> {
    let mut out = Vec::new();
    let mut dec = flate2::read::MultiGzDecoder::new(body).take(limit + 1);
    dec.read_to_end(&mut out).ok()?;
    (out.len() as u64 <= limit).then(|| exact(out))
}

/// A gzip body whose bytes `identity` of the uncompressed body were compressed on their own
/// (a full flush before and after them): their deflate blocks are `gzip`, replaceable without
/// compressing the rest again ([`splice_gzip`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The segment's bytes in the identity body.
    pub identity: std::ops::Range<usize>,
    /// Its deflate blocks in the gzip body.
    pub gzip: std::ops::Range<usize>,
}

/// The gzip header [`gzip_segmented`] writes: no name, no time, unknown system.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Gzip of `body` (level 6) in one member whose bytes `cut` are compressed on their own,
/// with where their blocks are; `None` when it does not make the body smaller.
pub fn gzip_segmented(body: &[u8], cut: std::ops::Range<usize>) -> Option<(Bytes, Segment)> {
    let mut out = Vec::with_capacity(body.len() / 3 + 64);
    out.extend_from_slice(&GZIP_HEADER);
    let mut c = flate2::Compress::new(flate2::Compression::new(6), false);
    deflate(&mut c, body.get(..cut.start)?, flate2::FlushCompress::Full, &mut out)?;
    let from = out.len();
    deflate(&mut c, body.get(cut.clone())?, flate2::FlushCompress::Full, &mut out)?;
    let to = out.len();
    deflate(&mut c, body.get(cut.end..)?, flate2::FlushCompress::Finish, &mut out)?;
    trailer(body, &mut out);
    (out.len() < body.len()).then(|| {
        (
            exact(out),
            Segment {
                identity: cut,
                gzip: from..to,
            },
        )
    })
}

/// `gzip` (made by [`gzip_segmented`], its segment `at`) with that segment's bytes replaced
/// by `part`: only `part` is compressed, the trailer's checksum is computed over `body` (the
/// identity body with `part` in place). Returns the new gzip body and segment.
pub fn splice_gzip(gzip: &[u8], at: &Segment, part: &[u8], body: &[u8]) -> Option<(Bytes, Segment)> {
    let start = at.identity.start;
    if body.get(start..start + part.len())? != part || gzip.len() < at.gzip.end + 8 {
        return None;
    }
    let mut blocks = Vec::with_capacity(part.len() / 2 + 64);
    // A compressor's state is hundreds of KiB to set up: each thread keeps one for splices.
    thread_local! {
        static SPLICER: std::cell::RefCell<flate2::Compress> =
            std::cell::RefCell::new(flate2::Compress::new(flate2::Compression::new(6), false));
    }
    SPLICER.with_borrow_mut(|c| {
        c.reset();
        deflate(c, part, flate2::FlushCompress::Full, &mut blocks)
    })?;
    let mut out = Vec::with_capacity(gzip.len() - at.gzip.len() + blocks.len());
    out.extend_from_slice(&gzip[..at.gzip.start]);
    out.extend_from_slice(&blocks);
    out.extend_from_slice(&gzip[at.gzip.end..gzip.len() - 8]);
    trailer(body, &mut out);
    let from = at.gzip.start;
    Some((
        exact(out),
        Segment {
            identity: start..start + part.len(),
            gzip: from..from + blocks.len(),
        },
    ))
}

/// Appends the gzip trailer of `body`: its CRC-32 and its length modulo 2^32.
fn trailer(body: &[u8], out: &mut Vec<u8>) {
    let mut crc = flate2::Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
}

/// Compresses all of `input` into `out` with `c`, then flushes as `flush` says (`Full`: the
/// blocks end on a byte, and later ones refer to nothing before; `Finish`: the last block).
fn deflate(c: &mut flate2::Compress, mut input: &[u8], flush: flate2::FlushCompress, out: &mut Vec<u8>) -> Option<()> {
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let before = c.total_in();
        let status = c.compress_vec(input, out, flush).ok()?;
        input = &input[(c.total_in() - before) as usize..];
        let room_left = out.len() < out.capacity();
        match (status, flush) {
            (flate2::Status::StreamEnd, _) => return Some(()),
            (_, flate2::FlushCompress::Full) if input.is_empty() && room_left => return Some(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn negotiation_prefers_br_then_gzip_and_honours_q0() {
        assert_eq!(negotiate(None, true, true), Encoding::Identity);
        assert_eq!(negotiate(Some(&hv("gzip, deflate")), true, true), Encoding::Gzip);
        assert_eq!(negotiate(Some(&hv("gzip, deflate, br")), true, true), Encoding::Brotli);
        assert_eq!(negotiate(Some(&hv("gzip, deflate, br")), true, false), Encoding::Gzip);
        assert_eq!(negotiate(Some(&hv("br;q=0, gzip;q=0.5")), true, true), Encoding::Gzip);
        assert_eq!(negotiate(Some(&hv("gzip;q=0")), true, true), Encoding::Identity);
        assert_eq!(negotiate(Some(&hv("*")), true, false), Encoding::Gzip);
        assert_eq!(negotiate(Some(&hv("identity")), true, true), Encoding::Identity);
        assert_eq!(negotiate(Some(&hv("gzip")), false, false), Encoding::Identity);
    }

    #[test]
    fn compress_round_trips() {
        let body = "<p>hello WordPress</p>".repeat(200);
        let gz = gzip(body.as_bytes()).unwrap();
        assert!(gz.len() < body.len());
        assert_eq!(gunzip(&gz, 1 << 20).unwrap(), body.as_bytes());
        assert!(gunzip(&gz, 10).is_none(), "limit is enforced");
        let br = brotli(body.as_bytes(), gz.len()).unwrap();
        let mut out = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut out).unwrap();
        assert_eq!(out, body.as_bytes());
        assert!(gzip(b"x").is_none(), "incompressible bodies are not stored twice");
    }

    #[test]
    fn text_types_are_compressible() {
        assert!(compressible(Some(&hv("text/html; charset=UTF-8"))));
        assert!(compressible(Some(&hv("application/rss+xml; charset=UTF-8"))));
        assert!(!compressible(Some(&hv("image/png"))));
        assert!(!compressible(None));
    }

    /// A page whose middle changes: the segmented gzip, spliced, decodes to the new page
    /// (with flate2 and with `gzip -d`), and the splice's cost is printed.
    #[test]
    fn a_spliced_segment_decodes_to_the_new_body() {
        let head = "<html><body><p>Steady journals at the edge. </p>".repeat(400);
        let list = "<li class=\"item\"><a href=\"/p/#comment-1\">One</a></li>".repeat(5);
        let tail = "<footer>Proudly powered by WordPress.</footer></body></html>".repeat(300);
        let body = format!("{head}{list}{tail}");
        let cut = head.len()..head.len() + list.len();
        let (gz, seg) = gzip_segmented(body.as_bytes(), cut.clone()).unwrap();
        assert_eq!(gunzip(&gz, 1 << 20).unwrap(), body.as_bytes());
        assert_eq!(seg.identity, cut);

        let new_list = format!(
            "<li class=\"item\"><a href=\"/q/#comment-2\">Two ü</a></li>{}",
            &list[..list.len() / 5 * 4]
        );
        let new_body = format!("{head}{new_list}{tail}");
        let started = std::time::Instant::now();
        let rounds = 200;
        let mut spliced = None;
        for _ in 0..rounds {
            spliced = splice_gzip(&gz, &seg, new_list.as_bytes(), new_body.as_bytes());
        }
        let each = started.elapsed() / rounds;
        let (gz2, seg2) = spliced.unwrap();
        println!(
            "splice of a {} B list in a {} B page: {each:?} (whole gzip: {:?})",
            new_list.len(),
            new_body.len(),
            {
                let t = std::time::Instant::now();
                gzip(new_body.as_bytes());
                t.elapsed()
            }
        );
        let mut dec = Vec::new();
        flate2::read::GzDecoder::new(&gz2[..]).read_to_end(&mut dec).unwrap();
        assert_eq!(dec, new_body.as_bytes());
        assert_eq!(seg2.identity, head.len()..head.len() + new_list.len());

        // Spliced again at the new segment, and read by gzip(1).
        let third = format!("{head}{list}{tail}");
        let (gz3, _) = splice_gzip(&gz2, &seg2, list.as_bytes(), third.as_bytes()).unwrap();
        let mut child = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip(1) runs");
        child.stdin.take().unwrap().write_all(&gz3).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, third.as_bytes());
    }

    #[test]
    fn a_splice_that_does_not_fit_the_body_is_refused() {
        let body = "abc".repeat(1000);
        let (gz, seg) = gzip_segmented(body.as_bytes(), 10..20).unwrap();
        assert!(splice_gzip(&gz, &seg, b"xyz", body.as_bytes()).is_none());
        assert!(gzip_segmented(body.as_bytes(), 10..5000).is_none());
    }
}
