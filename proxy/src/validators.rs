//! Validators and conditional requests (RFC 9110 §8.8, §13.1): comparing entity tags, and
//! whether a stored response answers a client's conditional GET with `304 Not Modified`.
//!
//! Pure functions over header values; nothing here allocates.

use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};

/// An entity tag: its weakness flag and its opaque part (between the quotes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityTag<'a> {
    /// `W/` prefixed: the tag identifies a semantically, not byte-for-byte, equal body.
    pub weak: bool,
    /// The characters between the double quotes.
    pub opaque: &'a [u8],
}

impl<'a> EntityTag<'a> {
    /// Reads one entity tag (`"xyz"`, `W/"xyz"`), surrounding whitespace ignored. Tags without
    /// their double quotes (`xyz`, which origins do send) are read as if quoted, so that an
    /// unquoted stored tag and an unquoted client tag still compare; anything else with a
    /// quote in the wrong place (`W\"x"`, `W"x"`, `"x`) is not a tag (`None`).
    pub fn parse(raw: &'a [u8]) -> Option<EntityTag<'a>> {
        let raw = raw.trim_ascii();
        let (weak, rest) = match raw.strip_prefix(b"W/") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let opaque = match rest {
            [b'"', inner @ .., b'"'] => inner,
            _ => rest,
        };
        if opaque.is_empty() && rest.len() != 2 || opaque.contains(&b'"') {
            return None;
        }
        Some(EntityTag { weak, opaque })
    }

    /// Weak comparison (RFC 9110 §8.8.3.2): the opaque parts are equal, whatever the
    /// weakness flags. `If-None-Match` compares this way.
    pub fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }

    /// Strong comparison: neither tag is weak and the opaque parts are equal. `If-Range`
    /// compares this way.
    pub fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }
}

/// The members of an `If-None-Match`/`If-Match` list: `*`, or entity tags separated by
/// commas (a comma inside a quoted tag does not separate).
fn members(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = list;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let mut quoted = false;
        let end = rest
            .iter()
            .position(|&b| {
                if b == b'"' {
                    quoted = !quoted;
                }
                b == b',' && !quoted
            })
            .unwrap_or(rest.len());
        let member = rest[..end].trim_ascii();
        rest = rest.get(end + 1..).unwrap_or_default();
        if !member.is_empty() {
            return Some(member);
        }
    })
}

/// Whether an `If-None-Match` field (all its lines) matches a response with entity tag
/// `etag`: `*` matches any response, a tag matches by weak comparison.
pub fn none_match_matches<'a>(lines: impl IntoIterator<Item = &'a HeaderValue>, etag: Option<&HeaderValue>) -> bool {
    let stored = etag.and_then(|e| EntityTag::parse(e.as_bytes()));
    lines
        .into_iter()
        .flat_map(|l| members(l.as_bytes()))
        .any(|m| m == b"*" || stored.is_some_and(|s| EntityTag::parse(m).is_some_and(|t| t.weak_eq(&s))))
}

/// Whether a stored response answers a GET or HEAD with `304 Not Modified` (RFC 9110 §13.1.2,
/// §13.1.3, §13.2.2; RFC 9111 §4.3.2): with `If-None-Match`, when one of its tags matches
/// `etag` (weakly); otherwise with `If-Modified-Since` (one valid HTTP-date), when the
/// response was last modified at or before it: `last_modified`, else the response's `Date`
/// field (`date`, asked for only then).
pub fn not_modified<'a>(
    req: &HeaderMap,
    etag: Option<&HeaderValue>,
    last_modified: Option<SystemTime>,
    date: impl FnOnce() -> Option<&'a HeaderValue>,
) -> bool {
    if req.contains_key(header::IF_NONE_MATCH) {
        return none_match_matches(req.get_all(header::IF_NONE_MATCH), etag);
    }
    let mut ims = req.get_all(header::IF_MODIFIED_SINCE).iter();
    let (Some(since), None) = (ims.next(), ims.next()) else {
        return false;
    };
    let Some(since) = since.to_str().ok().and_then(|s| httpdate::parse_http_date(s).ok()) else {
        return false;
    };
    let date = || {
        date()
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
    };
    last_modified.or_else(date).is_some_and(|modified| modified <= since)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tag(s: &str) -> EntityTag<'_> {
        EntityTag::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn entity_tags_parse_with_their_weakness() {
        assert_eq!(
            tag("\"abc\""),
            EntityTag {
                weak: false,
                opaque: b"abc"
            }
        );
        assert_eq!(
            tag(" W/\"abc\" "),
            EntityTag {
                weak: true,
                opaque: b"abc"
            }
        );
        assert_eq!(
            tag("\"\""),
            EntityTag {
                weak: false,
                opaque: b""
            }
        );
        assert_eq!(
            tag("abc"),
            EntityTag {
                weak: false,
                opaque: b"abc"
            },
            "unquoted, read as quoted"
        );
        for bad in ["W\\\"abc\"", "W\"abc\"", "\"abc", "a\"bc", ""] {
            assert_eq!(EntityTag::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn weak_and_strong_comparison_follow_rfc_9110() {
        // RFC 9110 §8.8.3.2's table.
        let cases = [
            ("W/\"1\"", "W/\"1\"", false, true),
            ("W/\"1\"", "W/\"2\"", false, false),
            ("W/\"1\"", "\"1\"", false, true),
            ("\"1\"", "\"1\"", true, true),
        ];
        for (a, b, strong, weak) in cases {
            assert_eq!(tag(a).strong_eq(&tag(b)), strong, "{a} {b}");
            assert_eq!(tag(a).weak_eq(&tag(b)), weak, "{a} {b}");
        }
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn if_none_match_matches_any_member_weakly() {
        let etag = HeaderValue::from_static("\"abcdef\"");
        let weak = HeaderValue::from_static("W/\"abcdef\"");
        let inm = |v: &str, e: &HeaderValue| not_modified(&h(&[("if-none-match", v)]), Some(e), None, || None);
        assert!(inm("\"abcdef\"", &etag));
        assert!(inm("\"1234\", \"5678\", \"abcdef\"", &etag), "last of three");
        assert!(inm("\"abcdef\", \"5678\"", &etag), "first of two");
        assert!(
            inm("W/\"abcdef\"", &etag) && inm("\"abcdef\"", &weak),
            "weak comparison"
        );
        assert!(inm("*", &etag));
        assert!(
            inm("\"a,b\", \"abcdef\"", &etag),
            "a comma inside a tag separates nothing"
        );
        assert!(!inm("\"abcdeg\"", &etag));
        assert!(!inm("\"ab", &etag));
        // Two lines are one list.
        assert!(not_modified(
            &h(&[("if-none-match", "\"x\""), ("if-none-match", "\"abcdef\"")]),
            Some(&etag),
            None,
            || None
        ));
        assert!(!not_modified(&h(&[("if-none-match", "\"x\"")]), None, None, || None));
        assert!(not_modified(&h(&[("if-none-match", "*")]), None, None, || None));
    }

    #[test]
    fn if_modified_since_compares_dates_and_yields_to_if_none_match() {
        let lm = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let same = httpdate::fmt_http_date(lm);
        let before = httpdate::fmt_http_date(lm - Duration::from_secs(1));
        let etag = HeaderValue::from_static("\"a\"");
        let ims = |v: &str, lm, date: Option<&HeaderValue>| {
            not_modified(&h(&[("if-modified-since", v)]), Some(&etag), lm, || date)
        };
        assert!(ims(&same, Some(lm), None));
        assert!(!ims(&before, Some(lm), None));
        assert!(ims("Monday, 12-Jan-70 13:46:40 GMT", Some(lm), None), "RFC 850 form");
        let date = HeaderValue::from_str(&same).unwrap();
        assert!(ims(&same, None, Some(&date)), "no Last-Modified: the response's Date");
        assert!(!ims(&same, None, None));
        assert!(!ims("yesterday", Some(lm), None));
        let both = h(&[("if-modified-since", &same), ("if-none-match", "\"b\"")]);
        assert!(
            !not_modified(&both, Some(&etag), Some(lm), || None),
            "If-None-Match decides"
        );
        let two = h(&[("if-modified-since", &same), ("if-modified-since", &same)]);
        assert!(
            !not_modified(&two, Some(&etag), Some(lm), || None),
            "more than one member"
        );
    }
}
