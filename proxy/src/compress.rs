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
}
