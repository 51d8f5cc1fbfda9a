//! Reading the fields freshness is decided from, as RFC 9111 §4.2.1 and §5 tell a cache to:
//! `Cache-Control` (and fields with its syntax: RFC 9213's targeted fields, `Surrogate-Control`),
//! `Expires` and `Age`. Invalid or conflicting freshness information reads as "stale", never
//! as "fresh".

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The greatest delta-seconds a cache needs to represent: larger values, and the results of
/// calculations that would overflow, are taken as 2^31 (RFC 9111 §1.2.2).
pub const MAX_DELTA: u64 = 1 << 31;

/// The directives of a `Cache-Control` field (response or request) that matter to a shared
/// cache; unknown directives are ignored.
///
/// Numeric directives whose argument is not delta-seconds (`max-age=1.5`, `max-age=a100`,
/// `max-age =60`, `max-age='60'`), or that appear twice with different values, read as `0`
/// (stale: RFC 9111 §4.2.1 encourages it); the quoted form (`max-age="60"`) is accepted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` without field names: never used without revalidation.
    pub no_cache: bool,
    /// `no-cache="Field, …"`: those fields are not reused without revalidation (Strata does
    /// not store them).
    pub no_cache_fields: Vec<HeaderName>,
    /// `private` without field names: a shared cache must not store the response.
    pub private: bool,
    /// `private="Field, …"`: a shared cache must not store those fields.
    pub private_fields: Vec<HeaderName>,
    /// `public`.
    pub public: bool,
    /// `must-revalidate` or `proxy-revalidate` (the same to a shared cache): never served
    /// stale.
    pub must_revalidate: bool,
    /// `must-revalidate` itself (which, unlike `proxy-revalidate`, lets a response to a
    /// request with `Authorization` be shared: RFC 9111 §3.5).
    pub must_revalidate_only: bool,
    /// `must-understand`: store only if the status code is understood, then ignore `no-store`.
    pub must_understand: bool,
    /// `max-age` in seconds (request or response).
    pub max_age: Option<u64>,
    /// `s-maxage` in seconds.
    pub s_maxage: Option<u64>,
    /// `stale-while-revalidate` in seconds (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` in seconds (RFC 5861).
    pub stale_if_error: Option<u64>,
    /// Request `max-stale`: `Some(None)` accepts any staleness, `Some(Some(n))` up to `n` s.
    pub max_stale: Option<Option<u64>>,
    /// Request `min-fresh` in seconds.
    pub min_fresh: Option<u64>,
    /// Request `only-if-cached`.
    pub only_if_cached: bool,
}

/// What a field makes of the `;parameters` after a directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Params<'a> {
    /// `Cache-Control`: there are none (a `;` makes the argument invalid).
    None,
    /// A targeted field (RFC 9213: a structured-field dictionary): parameters are ignored.
    Ignored,
    /// `Surrogate-Control`: a parameter names the device a directive is for
    /// (`max-age=60;edge`); the directive applies only when one of them is this device.
    Device(&'a str),
}

/// A directive's argument.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg<'a> {
    /// No `=`.
    None,
    /// A token or quoted-string argument (quotes and escapes removed).
    Value(Cow<'a, str>),
    /// Something after `=` that is neither (whitespace around `=`, a stray quote, …).
    Invalid,
}

/// One list member of a field value: `name[=arg][;params]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Directive<'a> {
    name: &'a str,
    arg: Arg<'a>,
    /// The member's parameters (`;x`), kept only when the caller asks for them.
    params: Option<&'a str>,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The members of a comma-separated field value: commas inside quoted strings do not
/// separate; empty members are skipped.
fn members(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = value;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let (mut quoted, mut escaped) = (false, false);
        let mut end = rest.len();
        for (i, &b) in rest.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == b',' && !quoted {
                end = i;
                break;
            }
        }
        let member = rest[..end].trim_ascii();
        rest = rest.get(end + 1..).unwrap_or_default();
        if !member.is_empty() {
            return Some(member);
        }
    })
}

/// A quoted-string's content, unescaped; `None` when it does not end with its closing quote.
fn unquote(q: &[u8]) -> Option<Cow<'_, str>> {
    let inner = q.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let mut out: Option<Vec<u8>> = None;
    let mut escaped = false;
    for (i, &b) in inner.iter().enumerate() {
        if escaped {
            escaped = false;
            out.get_or_insert_with(|| inner[..i - 1].to_vec()).push(b);
        } else if b == b'\\' {
            escaped = true;
            out.get_or_insert_with(|| inner[..i].to_vec());
        } else if b == b'"' {
            return None;
        } else if let Some(o) = out.as_mut() {
            o.push(b);
        }
    }
    if escaped {
        return None;
    }
    match out {
        None => std::str::from_utf8(inner).ok().map(Cow::Borrowed),
        Some(o) => String::from_utf8(o).ok().map(Cow::Owned),
    }
}

/// Reads one member. `with_params` splits `;params` off first (targeted fields, whose
/// members are structured-field dictionary members). A member whose name is not a token is
/// no directive (`None`).
fn directive(member: &[u8], with_params: bool) -> Option<Directive<'_>> {
    let (member, params) = match with_params {
        true => match member.iter().position(|&b| b == b';') {
            Some(i) if !member[..i].contains(&b'"') => {
                (member[..i].trim_ascii_end(), std::str::from_utf8(&member[i + 1..]).ok())
            }
            _ => (member, None),
        },
        false => (member, None),
    };
    let (name, arg) = match member.iter().position(|&b| b == b'=') {
        Some(i) => (&member[..i], Some(&member[i + 1..])),
        None => (member, None),
    };
    // No whitespace may surround `=` (RFC 9111 §5.2: `token [ "=" ( token / quoted-string ) ]`).
    let spaced = name.last().is_some_and(|&b| ows(b)) || arg.and_then(|a| a.first()).is_some_and(|&b| ows(b));
    let name = name.trim_ascii_end();
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    let name = std::str::from_utf8(name).ok()?;
    let arg = match arg {
        None => Arg::None,
        Some(_) if spaced => Arg::Invalid,
        Some(a) if a.first() == Some(&b'"') => unquote(a).map_or(Arg::Invalid, Arg::Value),
        Some(a) if !a.is_empty() && a.iter().all(|&b| is_tchar(b)) => {
            std::str::from_utf8(a).map_or(Arg::Invalid, |s| Arg::Value(Cow::Borrowed(s)))
        }
        Some(_) => Arg::Invalid,
    };
    Some(Directive { name, arg, params })
}

/// delta-seconds (`1*DIGIT`), capped at [`MAX_DELTA`]; `None` for anything else.
fn delta_seconds(arg: &Arg<'_>) -> Option<u64> {
    let Arg::Value(v) = arg else { return None };
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().map_or(MAX_DELTA, |n| n.min(MAX_DELTA)))
}

/// Records a freshness directive: an invalid argument, or a second occurrence with another
/// value, makes it 0 (stale).
fn set_strict(slot: &mut Option<u64>, arg: &Arg<'_>) {
    let v = delta_seconds(arg).unwrap_or(0);
    *slot = match *slot {
        Some(prev) if prev != v => Some(0),
        _ => Some(v),
    };
}

/// Records a directive that only ever widens what is allowed: an invalid one is ignored,
/// the first valid one kept.
fn set_lenient(slot: &mut Option<u64>, arg: &Arg<'_>) {
    if slot.is_none() {
        *slot = delta_seconds(arg);
    }
}

/// The field names of a qualified `no-cache="…"`/`private="…"`.
fn field_names(v: &str) -> impl Iterator<Item = HeaderName> + '_ {
    v.split(',')
        .map(str::trim)
        .filter_map(|n| HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).ok())
}

impl CacheControl {
    /// Parses every `Cache-Control` line of a response or request.
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        CacheControl::parse_lines(headers.get_all(header::CACHE_CONTROL), Params::None)
    }

    /// Parses every line of a field with `Cache-Control`'s directives; `params` says what
    /// the field makes of a member's `;parameters`.
    pub fn parse_lines<'a>(lines: impl IntoIterator<Item = &'a HeaderValue>, params: Params<'_>) -> CacheControl {
        let mut cc = CacheControl::default();
        let split = !matches!(params, Params::None);
        let target = match params {
            Params::Device(d) => Some(d),
            _ => None,
        };
        for line in lines {
            for member in members(line.as_bytes()) {
                let Some(d) = directive(member, split) else {
                    continue;
                };
                if let (Some(target), Some(params)) = (target, d.params) {
                    let names = params.split(';').map(|p| p.split('=').next().unwrap_or("").trim());
                    if !names.clone().any(|n| n.eq_ignore_ascii_case(target)) && names.clone().any(|n| !n.is_empty()) {
                        continue;
                    }
                }
                cc.apply(&d);
            }
        }
        cc
    }

    fn apply(&mut self, d: &Directive<'_>) {
        let is = |n: &str| d.name.eq_ignore_ascii_case(n);
        if is("no-store") {
            self.no_store = true;
        } else if is("no-cache") {
            match &d.arg {
                Arg::Value(v) => self.no_cache_fields.extend(field_names(v)),
                _ => self.no_cache = true,
            }
        } else if is("private") {
            match &d.arg {
                Arg::Value(v) => self.private_fields.extend(field_names(v)),
                _ => self.private = true,
            }
        } else if is("public") {
            self.public = true;
        } else if is("must-revalidate") {
            self.must_revalidate = true;
            self.must_revalidate_only = true;
        } else if is("proxy-revalidate") {
            self.must_revalidate = true;
        } else if is("must-understand") {
            self.must_understand = true;
        } else if is("max-age") {
            set_strict(&mut self.max_age, &d.arg);
        } else if is("s-maxage") {
            set_strict(&mut self.s_maxage, &d.arg);
        } else if is("stale-while-revalidate") {
            set_lenient(&mut self.stale_while_revalidate, &d.arg);
        } else if is("stale-if-error") {
            set_lenient(&mut self.stale_if_error, &d.arg);
        } else if is("max-stale") {
            if self.max_stale.is_none() {
                self.max_stale = match d.arg {
                    Arg::None => Some(None),
                    _ => delta_seconds(&d.arg).map(Some),
                };
            }
        } else if is("min-fresh") {
            set_lenient(&mut self.min_fresh, &d.arg);
        } else if is("only-if-cached") {
            self.only_if_cached = true;
        }
    }
}

/// `Expires`: `None` when absent; `Some(None)` when it cannot be used (not an HTTP-date in one
/// of RFC 9110 §5.6.7's three formats, such as `0`, or several lines that disagree), which
/// means already expired.
pub fn expires(headers: &HeaderMap) -> Option<Option<SystemTime>> {
    let mut lines = headers.get_all(header::EXPIRES).iter();
    let first = lines.next()?;
    if lines.any(|l| l != first) {
        return Some(None);
    }
    Some(http_date(first))
}

/// An HTTP-date in any of its three formats (IMF-fixdate, RFC 850, asctime).
pub fn http_date(v: &HeaderValue) -> Option<SystemTime> {
    v.to_str().ok().and_then(|s| httpdate::parse_http_date(s).ok())
}

/// `Age` from the origin: zero when absent; `None` when it cannot be trusted (not
/// delta-seconds, a list, several lines), which makes the response stale: an intermediary
/// held it for an unknown time.
pub fn age(headers: &HeaderMap) -> Option<Duration> {
    let mut lines = headers.get_all(header::AGE).iter();
    let Some(first) = lines.next() else {
        return Some(Duration::ZERO);
    };
    if lines.next().is_some() {
        return None;
    }
    let v = first.as_bytes().trim_ascii();
    let arg = Arg::Value(Cow::Borrowed(std::str::from_utf8(v).ok()?));
    delta_seconds(&arg).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(lines: &[&str]) -> CacheControl {
        let values: Vec<HeaderValue> = lines.iter().map(|l| HeaderValue::from_str(l).unwrap()).collect();
        CacheControl::parse_lines(values.iter(), Params::None)
    }

    #[test]
    fn max_age_must_be_delta_seconds() {
        for (line, want) in [
            ("max-age=3600", Some(3600)),
            ("MaX-AgE=3600", Some(3600)),
            ("max-age=003600", Some(3600)),
            ("max-age=\"3600\"", Some(3600)),
            ("max-age=2147483648", Some(MAX_DELTA)),
            ("max-age=99999999999999999999999", Some(MAX_DELTA)),
            ("max-age=100a", Some(0)),
            ("max-age=a100", Some(0)),
            ("max-age=1.5", Some(0)),
            ("max-age=3600.0", Some(0)),
            ("max-age=-1", Some(0)),
            ("max-age='3600'", Some(0)),
            ("max-age =3600", Some(0)),
            ("max-age= 3600", Some(0)),
            ("max-age", Some(0)),
            ("max-age=", Some(0)),
            ("foo, max-age=60, bar=1", Some(60)),
            ("no-store", None),
        ] {
            assert_eq!(cc(&[line]).max_age, want, "{line}");
        }
    }

    #[test]
    fn repeated_directives_agree_or_read_as_stale() {
        assert_eq!(cc(&["max-age=60, max-age=60"]).max_age, Some(60));
        assert_eq!(cc(&["max-age=60", "max-age=60"]).max_age, Some(60));
        assert_eq!(cc(&["max-age=1, max-age=3600"]).max_age, Some(0));
        assert_eq!(cc(&["max-age=3600", "max-age=1"]).max_age, Some(0));
        assert_eq!(cc(&["s-maxage=10", "s-maxage=20"]).s_maxage, Some(0));
    }

    #[test]
    fn quoted_strings_hide_what_they_contain() {
        let c = cc(&["foo=\"max-age=3600\", max-age=0"]);
        assert_eq!(c.max_age, Some(0));
        let c = cc(&["max-age=0, foo=\"max-age=3600, no-store\""]);
        assert_eq!((c.max_age, c.no_store), (Some(0), false));
        let c = cc(&["foo=\"a\\\"b, max-age=5\", max-age=7"]);
        assert_eq!(c.max_age, Some(7), "an escaped quote does not end the string");
    }

    #[test]
    fn qualified_no_cache_and_private_name_fields() {
        let c = cc(&["no-cache=\"Set-Cookie, X-Foo\", private=\"x-bar\", max-age=60"]);
        assert!(!c.no_cache && !c.private);
        assert_eq!(
            c.no_cache_fields,
            [header::SET_COOKIE, HeaderName::from_static("x-foo")]
        );
        assert_eq!(c.private_fields, [HeaderName::from_static("x-bar")]);
        let c = cc(&["No-CaChE, PRIVATE"]);
        assert!(c.no_cache && c.private);
        assert!(cc(&["no-cache=\"unterminated"]).no_cache, "unreadable: unqualified");
    }

    #[test]
    fn revalidation_and_request_directives() {
        let c = cc(&["proxy-revalidate"]);
        assert!(c.must_revalidate && !c.must_revalidate_only);
        let c = cc(&["must-revalidate, must-understand, public"]);
        assert!(c.must_revalidate && c.must_revalidate_only && c.must_understand && c.public);
        let c = cc(&["max-stale, min-fresh=5, only-if-cached"]);
        assert_eq!(
            (c.max_stale, c.min_fresh, c.only_if_cached),
            (Some(None), Some(5), true)
        );
        assert_eq!(cc(&["max-stale=30"]).max_stale, Some(Some(30)));
        assert_eq!(cc(&["max-stale=x"]).max_stale, None);
        assert_eq!(
            cc(&["stale-while-revalidate=x, stale-if-error=9"]).stale_if_error,
            Some(9)
        );
        assert_eq!(cc(&["stale-while-revalidate=x"]).stale_while_revalidate, None);
    }

    #[test]
    fn targeted_fields_ignore_parameters_but_device_targets() {
        let values = |s: &str| vec![HeaderValue::from_str(s).unwrap()];
        let t = |s: &str| CacheControl::parse_lines(values(s).iter(), Params::Device("strata"));
        assert_eq!(t("max-age=3600;not-for-you").max_age, None, "another device's");
        assert_eq!(t("max-age=3600;strata").max_age, Some(3600));
        assert_eq!(t("max-age=3600").max_age, Some(3600));
        assert!(!t("max-age=60, no-store;other").no_store);
        assert_eq!(t("foo, MaX-aGe=3600").max_age, Some(3600));
        let cdn = |s: &str| CacheControl::parse_lines(values(s).iter(), Params::Ignored);
        assert_eq!(cdn("max-age=3600;foo").max_age, Some(3600), "parameters ignored");
        assert!(cdn("max-age=3600, no-store;x").no_store);
    }

    #[test]
    fn no_header_value_panics() {
        let junk: [&[u8]; 9] = [
            b"\"",
            b"=",
            b",,,",
            b"a=\"\\",
            b"\xff\xfe=\"\x80\"",
            b"max-age=\"",
            b";",
            b"=;=",
            b"\\\"",
        ];
        for j in junk {
            let Ok(v) = HeaderValue::from_bytes(j) else { continue };
            let _ = CacheControl::parse_lines([&v], Params::None);
            let _ = CacheControl::parse_lines([&v], Params::Ignored);
            let _ = CacheControl::parse_lines([&v], Params::Device("x"));
        }
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

    #[test]
    fn expires_in_the_three_date_formats_else_expired() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(expires(&h(&[("expires", form)])), Some(Some(t)), "{form}");
        }
        for bad in [
            "0",
            "-1",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "sun, 06 nov 1994 08:49:37 gmt",
            "tomorrow",
        ] {
            assert_eq!(expires(&h(&[("expires", bad)])), Some(None), "{bad}");
        }
        let two = h(&[
            ("expires", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("expires", "Mon, 07 Nov 1994 08:49:37 GMT"),
        ]);
        assert_eq!(expires(&two), Some(None), "two lines that disagree");
        assert_eq!(expires(&HeaderMap::new()), None);
    }

    #[test]
    fn age_is_one_delta_seconds_or_untrusted() {
        assert_eq!(age(&HeaderMap::new()), Some(Duration::ZERO));
        assert_eq!(age(&h(&[("age", "30")])), Some(Duration::from_secs(30)));
        assert_eq!(age(&h(&[("age", " 030 ")])), Some(Duration::from_secs(30)));
        assert_eq!(
            age(&h(&[("age", "99999999999999")])),
            Some(Duration::from_secs(MAX_DELTA))
        );
        for bad in ["abc", "-7200", "7200.0", "7200,0", "0,7200", "0, 0", "7200;foo=bar", ""] {
            assert_eq!(age(&h(&[("age", bad)])), None, "{bad:?}");
        }
        assert_eq!(age(&h(&[("age", "0"), ("age", "0")])), None, "two lines");
    }
}
