//! Byte ranges of a stored response (RFC 9110 §14): reading a `Range` request against a body
//! of known length, `If-Range`, and the parts of a `206 Partial Content` answer.
//!
//! Pure: what to send is decided here; the body slices are shared, never copied, except to
//! build a `multipart/byteranges` body.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};

use crate::validators::EntityTag;

/// More ranges than this in one request are not served piecewise: the whole body is sent
/// instead (RFC 9110 §14.2 lets a server ignore a Range it finds abusive).
pub const MAX_RANGES: usize = 32;

/// What a `Range` request asks of a body of a given length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// Serve the whole body with `200`: no `Range`, a unit other than `bytes`, a field that
    /// does not parse, too many ranges, or an `If-Range` that does not match.
    Whole,
    /// Serve these inclusive `(first, last)` byte positions with `206`.
    Partial(Vec<(u64, u64)>),
    /// None of the ranges overlaps the body: `416` with `Content-Range: bytes */length`.
    Unsatisfiable,
}

/// Reads the `Range` field of a request (RFC 9110 §14.1.2) against a body of `len` bytes.
/// A range whose first position is past the end is dropped; one that runs past the end is
/// cut at it; a suffix range (`-500`) takes the last bytes.
pub fn requested(range: &HeaderValue, len: u64) -> Ranges {
    let Ok(s) = range.to_str() else {
        return Ranges::Whole;
    };
    let Some((unit, set)) = s.split_once('=') else {
        return Ranges::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ranges::Whole;
    }
    let mut out = Vec::new();
    let mut any = false;
    for spec in set.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        any = true;
        let Some((first, last)) = spec.split_once('-') else {
            return Ranges::Whole;
        };
        let (first, last) = (first.trim(), last.trim());
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        let range = if first.is_empty() {
            // A suffix: the last `n` bytes.
            if !digits(last) {
                return Ranges::Whole;
            }
            let n = last.parse::<u64>().unwrap_or(u64::MAX);
            (n > 0 && len > 0).then(|| (len.saturating_sub(n), len - 1))
        } else {
            if !digits(first) || !(last.is_empty() || digits(last)) {
                return Ranges::Whole;
            }
            let a = first.parse::<u64>().unwrap_or(u64::MAX);
            let b = if last.is_empty() {
                u64::MAX
            } else {
                last.parse::<u64>().unwrap_or(u64::MAX)
            };
            if b < a {
                return Ranges::Whole;
            }
            (a < len).then(|| (a, b.min(len - 1)))
        };
        out.extend(range);
        if out.len() > MAX_RANGES {
            return Ranges::Whole;
        }
    }
    match (any, out.is_empty()) {
        (false, _) => Ranges::Whole,
        (true, true) => Ranges::Unsatisfiable,
        (true, false) => Ranges::Partial(out),
    }
}

/// Whether an `If-Range` precondition (RFC 9110 §13.1.5) holds for the stored response, so its
/// `Range` applies: an entity tag must match the response's strongly; a date must equal its
/// `Last-Modified` exactly. Without `If-Range` it holds.
pub fn if_range_holds(req: &HeaderMap, etag: Option<&HeaderValue>, last_modified: Option<&HeaderValue>) -> bool {
    let Some(cond) = req.get(header::IF_RANGE) else {
        return true;
    };
    let raw = cond.as_bytes().trim_ascii();
    if raw.starts_with(b"\"") || raw.starts_with(b"W/") {
        let stored = etag.and_then(|e| EntityTag::parse(e.as_bytes()));
        return match (EntityTag::parse(raw), stored) {
            (Some(asked), Some(stored)) => asked.strong_eq(&stored),
            _ => false,
        };
    }
    let date = |v: &HeaderValue| v.to_str().ok().and_then(|s| httpdate::parse_http_date(s).ok());
    match (date(cond), last_modified.and_then(date)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `Content-Range` of one part.
pub fn content_range(first: u64, last: u64, len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")).unwrap_or(HeaderValue::from_static("bytes */0"))
}

/// `Content-Range` of a `416`.
pub fn unsatisfied_range(len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes */{len}")).unwrap_or(HeaderValue::from_static("bytes */0"))
}

/// The body of a `206` for several ranges: `multipart/byteranges` (RFC 9110 §14.6) with
/// `boundary`, each part carrying `content_type` (when the response has one) and its
/// `Content-Range`.
pub fn multipart(body: &Bytes, ranges: &[(u64, u64)], content_type: Option<&HeaderValue>, boundary: &str) -> Bytes {
    let len = body.len() as u64;
    let mut out = BytesMut::new();
    for &(first, last) in ranges {
        out.extend_from_slice(b"\r\n--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(ct) = content_type {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(ct.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Content-Range: ");
        out.extend_from_slice(content_range(first, last, len).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&body[first as usize..=last as usize]);
    }
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &str, len: u64) -> Ranges {
        requested(&HeaderValue::from_str(v).unwrap(), len)
    }

    #[test]
    fn byte_ranges_are_read_against_the_length() {
        assert_eq!(r("bytes=0-4", 10), Ranges::Partial(vec![(0, 4)]));
        assert_eq!(r("bytes=5-", 10), Ranges::Partial(vec![(5, 9)]));
        assert_eq!(r("bytes=-3", 10), Ranges::Partial(vec![(7, 9)]));
        assert_eq!(
            r("bytes=-30", 10),
            Ranges::Partial(vec![(0, 9)]),
            "a suffix longer than the body"
        );
        assert_eq!(r("bytes=8-100", 10), Ranges::Partial(vec![(8, 9)]), "cut at the end");
        assert_eq!(
            r("Bytes = 0-0, 2-3 ,-1", 10),
            Ranges::Partial(vec![(0, 0), (2, 3), (9, 9)])
        );
        assert_eq!(r("bytes=10-", 10), Ranges::Unsatisfiable);
        assert_eq!(r("bytes=20-30, 15-", 10), Ranges::Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), Ranges::Unsatisfiable);
        assert_eq!(
            r("bytes=20-30, 0-1", 10),
            Ranges::Partial(vec![(0, 1)]),
            "the unsatisfiable ones dropped"
        );
        assert_eq!(r("bytes=0-", 0), Ranges::Unsatisfiable);
    }

    #[test]
    fn ranges_that_do_not_parse_mean_the_whole_body() {
        for v in [
            "items=0-1",
            "bytes=5-4",
            "bytes=a-b",
            "bytes=0-1x",
            "bytes=",
            "bytes 0-1",
            "bytes=1",
            "bytes=--1",
        ] {
            assert_eq!(r(v, 10), Ranges::Whole, "{v}");
        }
        let many = format!(
            "bytes={}",
            (0..=MAX_RANGES)
                .map(|i| format!("{i}-{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(r(&many, 100), Ranges::Whole, "too many ranges");
        assert_eq!(r("bytes=99999999999999999999999-", 10), Ranges::Unsatisfiable);
    }

    #[test]
    fn if_range_needs_a_strong_match_or_the_exact_date() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::IF_RANGE, HeaderValue::from_str(v).unwrap());
            m
        };
        let strong = HeaderValue::from_static("\"v1\"");
        let weak = HeaderValue::from_static("W/\"v1\"");
        let lm = HeaderValue::from_static("Wed, 01 Jan 2020 00:00:00 GMT");
        assert!(if_range_holds(&HeaderMap::new(), None, None));
        assert!(if_range_holds(&h("\"v1\""), Some(&strong), None));
        assert!(!if_range_holds(&h("\"v2\""), Some(&strong), None));
        assert!(
            !if_range_holds(&h("W/\"v1\""), Some(&weak), None),
            "weak tags never match"
        );
        assert!(!if_range_holds(&h("\"v1\""), Some(&weak), None));
        assert!(if_range_holds(&h("Wed, 01 Jan 2020 00:00:00 GMT"), None, Some(&lm)));
        assert!(!if_range_holds(&h("Thu, 02 Jan 2020 00:00:00 GMT"), None, Some(&lm)));
        assert!(!if_range_holds(&h("Wed, 01 Jan 2020 00:00:00 GMT"), None, None));
        assert!(!if_range_holds(&h("garbage"), Some(&strong), Some(&lm)));
    }

    #[test]
    fn several_ranges_make_a_multipart_body() {
        let body = Bytes::from_static(b"0123456789");
        let ct = HeaderValue::from_static("text/plain");
        let m = multipart(&body, &[(0, 1), (8, 9)], Some(&ct), "B");
        assert_eq!(
            &m[..],
            &b"\r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
               \r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 8-9/10\r\n\r\n89\r\n--B--\r\n"[..]
        );
    }
}
