//! Storability and freshness of origin responses (RFC 9111, RFC 5861).
//!
//! Given the origin's status and headers, decide whether a shared cache may store the
//! response and for how long it is fresh, then how long it may be served stale. Pure: the
//! caller supplies the current time.

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, StatusCode};

use crate::config::CacheConfig;

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoStore {
    /// `Cache-Control: no-store`.
    NoStoreDirective,
    /// `Cache-Control: private` (a shared cache must not store it).
    Private,
    /// The response sets a cookie: it is someone's, not everyone's.
    SetCookie,
    /// The status is not in `cache.cacheable_statuses`.
    Status,
    /// `Vary: *` never matches a later request.
    VaryStar,
    /// Freshness is zero (`max-age=0`, `no-cache`, an `Expires` in the past).
    Expired,
    /// The body is larger than `cache.max_object_size`.
    TooLarge,
    /// The origin used a content coding the proxy does not decode.
    Encoding,
}

impl NoStore {
    /// Label for logs, `Cache-Status` `detail` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            NoStore::NoStoreDirective => "no-store",
            NoStore::Private => "private",
            NoStore::SetCookie => "set-cookie",
            NoStore::Status => "status",
            NoStore::VaryStar => "vary-star",
            NoStore::Expired => "expired",
            NoStore::TooLarge => "too-large",
            NoStore::Encoding => "encoding",
        }
    }
}

/// The greatest delta-seconds a cache must represent (RFC 9111 §1.2.2): larger values, and
/// lifetimes computed past it, count as 2^31 seconds (68 years).
pub const MAX_DELTA: Duration = Duration::from_secs(1 << 31);

/// How long a stored response lives. Each duration is at most [`MAX_DELTA`], so the caller
/// can add `ttl + grace` to any `Instant` and `initial_age` to any age without overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Time it is fresh from now (already net of the origin's `Age`).
    pub ttl: Duration,
    /// Time past `ttl` it may be served stale (grace).
    pub grace: Duration,
    /// The origin's `Age` when it arrived, carried on into our `Age` header.
    pub initial_age: Duration,
}

/// The directives of a `Cache-Control` header that matter to a shared cache.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` header line; unknown directives are ignored.
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(v) = value.to_str() else { continue };
            for d in v.split(',') {
                let (name, arg) = match d.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (d.trim(), None),
                };
                let secs = || arg.and_then(delta_seconds);
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    // `no-cache="Set-Cookie"` only restricts that field; treated like no-cache.
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                    "max-age" => cc.max_age = secs().or(Some(0)),
                    "s-maxage" => cc.s_maxage = secs().or(Some(0)),
                    "stale-while-revalidate" => cc.stale_while_revalidate = secs(),
                    "stale-if-error" => cc.stale_if_error = secs(),
                    _ => {}
                }
            }
        }
        cc
    }
}

/// A delta-seconds value (RFC 9111 §1.2.2), at most 2^31: a number too large to represent
/// counts as 2^31. `None` if it is not a number.
fn delta_seconds(s: &str) -> Option<u64> {
    let max = MAX_DELTA.as_secs();
    match s.parse::<u64>() {
        Ok(n) => Some(n.min(max)),
        Err(_) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Some(max),
        Err(_) => None,
    }
}

fn header_date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok())
}

/// Decides whether a response may be stored and for how long.
///
/// Freshness order: `s-maxage` > `max-age` > `Expires` − `Date` > `cache.default_ttl`. Grace is
/// `cache.grace`, or the larger `stale-while-revalidate`/`stale-if-error` the origin asks for;
/// `must-revalidate`, `proxy-revalidate` and `s-maxage` forbid serving stale, so grace is zero.
pub fn lifetime(
    cfg: &CacheConfig,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Lifetime, NoStore> {
    if !cfg.cacheable_statuses.contains(&status.as_u16()) {
        return Err(NoStore::Status);
    }
    let cc = CacheControl::parse(headers);
    if cc.no_store {
        return Err(NoStore::NoStoreDirective);
    }
    if cc.private {
        return Err(NoStore::Private);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NoStore::SetCookie);
    }
    if headers
        .get_all(header::VARY)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim() == "*")))
    {
        return Err(NoStore::VaryStar);
    }
    if cc.no_cache {
        return Err(NoStore::Expired);
    }
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| delta_seconds(s.trim()))
        .map_or(Duration::ZERO, Duration::from_secs);
    let lifetime = if let Some(s) = cc.s_maxage.or(cc.max_age) {
        Duration::from_secs(s)
    } else if let Some(expires) = headers.get(header::EXPIRES) {
        // An invalid Expires (e.g. "0") means already expired.
        let date = header_date(headers, header::DATE).unwrap_or(now);
        match expires.to_str().ok().and_then(|s| httpdate::parse_http_date(s).ok()) {
            Some(e) => e.duration_since(date).unwrap_or(Duration::ZERO),
            None => Duration::ZERO,
        }
    } else {
        cfg.default_ttl
    };
    let ttl = lifetime.min(MAX_DELTA).saturating_sub(age);
    if ttl.is_zero() {
        return Err(NoStore::Expired);
    }
    let grace = if cc.must_revalidate || cc.s_maxage.is_some() {
        Duration::ZERO
    } else {
        let asked = cc
            .stale_while_revalidate
            .max(cc.stale_if_error)
            .map(Duration::from_secs);
        asked.map_or(cfg.grace, |a| a.max(cfg.grace)).min(MAX_DELTA)
    };
    Ok(Lifetime {
        ttl,
        grace,
        initial_age: age,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg() -> CacheConfig {
        // The defaults, taken through the real config pipeline.
        // Written once: tests run in parallel and must not see a half-written file.
        static SECRET: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
        let secret = SECRET.get_or_init(|| {
            let p = std::env::temp_dir().join(format!("strata-fresh-{}", std::process::id()));
            std::fs::write(&p, "0123456789abcdef0123").unwrap();
            p
        });
        let text = format!(
            "[server]\nlisten=\"127.0.0.1:1\"\nadmin_listen=\"127.0.0.1:2\"\n[origin]\nurl=\"http://127.0.0.1:3\"\n\
             [cache]\ndefault_ttl=\"2m\"\ngrace=\"1h\"\n[cluster]\nsecret_file={:?}\n",
            secret.display().to_string()
        );
        Config::from_toml(&text, None).unwrap().cache
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

    const NOW: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn wordpress_html_without_headers_gets_the_default_ttl() {
        let l = lifetime(&cfg(), StatusCode::OK, &h(&[("content-type", "text/html")]), NOW).unwrap();
        assert_eq!(l.ttl, Duration::from_secs(120));
        assert_eq!(l.grace, Duration::from_secs(3600));
    }

    #[test]
    fn s_maxage_beats_max_age_beats_expires() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let date = httpdate::fmt_http_date(now);
        let exp = httpdate::fmt_http_date(now + Duration::from_secs(50));
        let hdrs = h(&[
            ("cache-control", "max-age=30, s-maxage=60"),
            ("date", &date),
            ("expires", &exp),
        ]);
        assert_eq!(
            lifetime(&cfg(), StatusCode::OK, &hdrs, now).unwrap().ttl,
            Duration::from_secs(60)
        );
        let hdrs = h(&[("cache-control", "max-age=30"), ("date", &date), ("expires", &exp)]);
        assert_eq!(
            lifetime(&cfg(), StatusCode::OK, &hdrs, now).unwrap().ttl,
            Duration::from_secs(30)
        );
        let hdrs = h(&[("date", &date), ("expires", &exp)]);
        assert_eq!(
            lifetime(&cfg(), StatusCode::OK, &hdrs, now).unwrap().ttl,
            Duration::from_secs(50)
        );
        let hdrs = h(&[("date", &date), ("expires", "0")]);
        assert_eq!(lifetime(&cfg(), StatusCode::OK, &hdrs, now), Err(NoStore::Expired));
    }

    #[test]
    fn age_is_subtracted() {
        let hdrs = h(&[("cache-control", "max-age=100"), ("age", "40")]);
        let l = lifetime(&cfg(), StatusCode::OK, &hdrs, NOW).unwrap();
        assert_eq!(
            (l.ttl, l.initial_age),
            (Duration::from_secs(60), Duration::from_secs(40))
        );
        let hdrs = h(&[("cache-control", "max-age=100"), ("age", "400")]);
        assert_eq!(lifetime(&cfg(), StatusCode::OK, &hdrs, NOW), Err(NoStore::Expired));
    }

    #[test]
    fn personal_and_forbidden_responses_are_not_stored() {
        let c = cfg();
        let cases = [
            (h(&[("set-cookie", "a=b")]), NoStore::SetCookie),
            (h(&[("cache-control", "private, max-age=60")]), NoStore::Private),
            (h(&[("cache-control", "no-store")]), NoStore::NoStoreDirective),
            (
                h(&[("cache-control", "no-cache, must-revalidate, max-age=0")]),
                NoStore::Expired,
            ),
            (h(&[("vary", "Accept-Encoding, *")]), NoStore::VaryStar),
        ];
        for (hdrs, want) in cases {
            assert_eq!(lifetime(&c, StatusCode::OK, &hdrs, NOW), Err(want), "{hdrs:?}");
        }
        assert_eq!(
            lifetime(&c, StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new(), NOW),
            Err(NoStore::Status)
        );
        assert_eq!(
            lifetime(&c, StatusCode::FOUND, &HeaderMap::new(), NOW),
            Err(NoStore::Status)
        );
    }

    #[test]
    fn lifetimes_are_bounded_so_the_clock_can_take_them() {
        // Found by fuzzing: an Expires in the year 9999, or a max-age of u64::MAX, once gave
        // lifetimes the proxy added to its monotonic clock (a panic for u64::MAX).
        let c = cfg();
        let huge = u64::MAX.to_string();
        let cases = [
            h(&[("cache-control", &format!("max-age={huge}"))]),
            h(&[("cache-control", "s-maxage=99999999999999999999999")]),
            h(&[("cache-control", &format!("max-age=60, stale-while-revalidate={huge}"))]),
            h(&[("cache-control", "max-age=60, stale-if-error=18446744073709551616")]),
            h(&[("expires", "Fri, 31 Dec 9999 23:59:59 GMT")]),
        ];
        for hdrs in cases {
            let l = lifetime(&c, StatusCode::OK, &hdrs, NOW).unwrap();
            assert!(l.ttl <= MAX_DELTA && l.grace <= MAX_DELTA, "{hdrs:?}: {l:?}");
            assert!(std::time::Instant::now().checked_add(l.ttl + l.grace).is_some());
        }
        let l = lifetime(&c, StatusCode::OK, &h(&[("cache-control", "max-age=3000000000")]), NOW).unwrap();
        assert_eq!(l.ttl, MAX_DELTA);
        // An Age past the bound counts as 2^31 seconds too: older than any lifetime.
        let hdrs = h(&[("cache-control", "max-age=100"), ("age", &huge)]);
        assert_eq!(lifetime(&c, StatusCode::OK, &hdrs, NOW), Err(NoStore::Expired));
        let hdrs = h(&[
            ("expires", "Fri, 31 Dec 9999 23:59:59 GMT"),
            ("age", "99999999999999999999"),
        ]);
        assert_eq!(lifetime(&c, StatusCode::OK, &hdrs, NOW), Err(NoStore::Expired));
        assert_eq!(delta_seconds("12"), Some(12));
        assert_eq!(delta_seconds(""), None);
        assert_eq!(delta_seconds("1.5"), None);
    }

    #[test]
    fn revalidation_directives_remove_grace_and_swr_extends_it() {
        let c = cfg();
        let l = lifetime(
            &c,
            StatusCode::OK,
            &h(&[("cache-control", "max-age=10, must-revalidate")]),
            NOW,
        )
        .unwrap();
        assert_eq!(l.grace, Duration::ZERO);
        let l = lifetime(&c, StatusCode::OK, &h(&[("cache-control", "s-maxage=10")]), NOW).unwrap();
        assert_eq!(l.grace, Duration::ZERO);
        let l = lifetime(
            &c,
            StatusCode::OK,
            &h(&[("cache-control", "max-age=10, stale-while-revalidate=86400")]),
            NOW,
        )
        .unwrap();
        assert_eq!(l.grace, Duration::from_secs(86400));
    }
}
