//! Storability and freshness of origin responses (RFC 9111, RFC 5861).
//!
//! Given the origin's status and headers, decide whether a shared cache may store the
//! response and for how long it is fresh, then how long it may be served stale, and what a
//! `304` changes in a stored response. Pure: the caller supplies the current time. Reading
//! the fields themselves is [`directives`]'s part.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName};
use http::StatusCode;

use crate::config::CacheConfig;

mod directives;

pub use directives::{age, expires, http_date, CacheControl, Params, MAX_DELTA};

/// `Clear-Site-Data` (W3C Clear Site Data).
static CLEAR_SITE_DATA: HeaderName = HeaderName::from_static("clear-site-data");

/// Heuristic freshness never exceeds this, however old `Last-Modified` is.
pub const HEURISTIC_MAX: Duration = Duration::from_secs(24 * 3600);

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoStore {
    /// `Cache-Control: no-store`.
    NoStoreDirective,
    /// `Cache-Control: private` (a shared cache must not store it).
    Private,
    /// The response sets a cookie: it is someone's, not everyone's (unless
    /// `cache.store_set_cookie` and the response gives explicit freshness).
    SetCookie,
    /// The status may not be stored: not in `cache.cacheable_statuses` (and, with
    /// `cache.store_any_status`, no explicit freshness or `public` either), or never storable
    /// (1xx, `206`, `304`).
    Status,
    /// `Vary: *` never matches a later request.
    VaryStar,
    /// Freshness is zero (`max-age=0`, `no-cache`, an `Expires` in the past).
    Expired,
    /// The body is larger than `cache.max_object_size`.
    TooLarge,
    /// The origin's gzip body could not be decoded.
    Encoding,
    /// The request carried `Authorization` and the response does not say it may be shared
    /// (`public`, `s-maxage` or `must-revalidate`: RFC 9111 §3.5).
    Authorization,
    /// `must-understand` with a status code the cache does not know.
    MustUnderstand,
    /// `Clear-Site-Data`: an instruction to one client's browser, never to be replayed.
    ClearSiteData,
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
            NoStore::Authorization => "authorization",
            NoStore::MustUnderstand => "must-understand",
            NoStore::ClearSiteData => "clear-site-data",
        }
    }
}

/// How long a stored response lives, and what of it is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifetime {
    /// Time it is fresh from now (already net of the origin's `Age`). Zero for a response
    /// stored only to be revalidated on its next use (`no-cache`, `max-age=0` with a
    /// validator), which `keep` then holds.
    pub ttl: Duration,
    /// Time past `ttl` it may be served stale while it is refreshed (grace: `cache.grace`,
    /// or a longer `stale-while-revalidate`).
    pub grace: Duration,
    /// Time past `ttl` it may be served stale when the origin fails (a connection error or a
    /// 500, 502, 503 or 504): at least `grace`, or a longer `stale-if-error` (RFC 5861 §4).
    pub stale_if_error: Duration,
    /// Time past `ttl` and both stale windows it is kept: `cache.keep`, so that its next use
    /// revalidates it (when it has a validator: `ETag`, `Last-Modified`) or a client's
    /// `max-stale` can accept it; zero for a response stored without freshness and without a
    /// validator (which is not stored at all).
    pub keep: Duration,
    /// The origin's `Age` when it arrived, carried on into our `Age` header.
    pub initial_age: Duration,
    /// Fields the stored copy leaves out: those `private="…"` and `no-cache="…"` name (the
    /// client whose request brought the response still gets them).
    pub strip: Vec<HeaderName>,
}

/// Whether a response carries a validator a conditional request can use.
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

/// Heuristic freshness (RFC 9111 §4.2.2): `fraction` of the time between `Last-Modified` and
/// the response's `Date` (or `now`), at most [`HEURISTIC_MAX`]; zero without a usable
/// `Last-Modified`.
pub fn heuristic(headers: &HeaderMap, fraction: f64, now: SystemTime) -> Duration {
    let Some(modified) = headers.get(header::LAST_MODIFIED).and_then(http_date) else {
        return Duration::ZERO;
    };
    let date = headers.get(header::DATE).and_then(http_date).unwrap_or(now);
    let age = date.duration_since(modified).unwrap_or(Duration::ZERO);
    Duration::try_from_secs_f64(age.as_secs_f64() * fraction.clamp(0.0, 1.0))
        .unwrap_or(HEURISTIC_MAX)
        .min(HEURISTIC_MAX)
}

/// The device name this cache answers to in `Surrogate-Control`'s targeting
/// (`max-age=60;strata`).
pub const SURROGATE_DEVICE: &str = "strata";

/// The directives that govern this cache (RFC 9213 §2.1): those of the first field of
/// `cache.targeted_fields` the response has (`Strata-Cache-Control`, `CDN-Cache-Control`,
/// `Surrogate-Control`…), which then stand instead of `Cache-Control` and `Expires`; `None`
/// when it has none of them.
pub fn targeted(cfg: &CacheConfig, headers: &HeaderMap) -> Option<CacheControl> {
    let name = cfg.targeted_fields.iter().find(|n| headers.contains_key(*n))?;
    let params = if name == "surrogate-control" {
        Params::Device(SURROGATE_DEVICE)
    } else {
        Params::Ignored
    };
    Some(CacheControl::parse_lines(headers.get_all(name), params))
}

/// What of the request a response answers bears on storing it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    /// The request (as sent to the origin) carried `Authorization`.
    pub authorization: bool,
}

/// Whether the cache knows a status code's semantics well enough to store it under
/// `must-understand` (RFC 9111 §5.2.2.3): the codes RFC 9110 and its registry define.
pub fn understood(status: StatusCode) -> bool {
    status.canonical_reason().is_some()
}

/// Decides whether a response may be stored and for how long, for a request without
/// `Authorization` (see [`stored_lifetime`]).
pub fn lifetime(
    cfg: &CacheConfig,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Lifetime, NoStore> {
    stored_lifetime(cfg, Asked::default(), status, headers, now)
}

/// Decides whether a response may be stored and for how long.
///
/// The directives are those of a targeted field when the response has one of
/// `cache.targeted_fields` ([`targeted`]; RFC 9213), else `Cache-Control`'s and `Expires`.
///
/// Storable (RFC 9111 §3): a final status in `cache.cacheable_statuses`, or, with
/// `cache.store_any_status`, any final status (but `206` and `304`) when the response gives
/// explicit freshness or says `public`; not `no-store` (unless `must-understand` with a status
/// the cache understands), `private`, `Vary: *`, `Clear-Site-Data`; `Set-Cookie` only with
/// `cache.store_set_cookie` and explicit freshness (or when `private="Set-Cookie"` keeps the
/// cookie out of the stored copy); an answer to a request with `Authorization` only with
/// `public`, `s-maxage` or `must-revalidate` (§3.5).
///
/// Freshness order (RFC 9111 §4.2.1): `s-maxage` > `max-age` > `Expires` − `Date` (an
/// `Expires` that is not an HTTP-date means already expired; without a valid `Date`, the
/// time of receipt stands in) > `cache.default_ttl` > heuristic freshness (a
/// `cache.heuristic_fraction` of the time since `Last-Modified`, when `default_ttl` is zero),
/// minus the origin's `Age` (an `Age` that is not one delta-seconds makes the response
/// stale). Grace is `cache.grace`, or a longer `stale-while-revalidate`; the stale-if-error
/// window at least grace, or a longer `stale-if-error`; `must-revalidate`,
/// `proxy-revalidate`, `s-maxage` and `no-cache` forbid serving stale, so both are zero. A response with no freshness left (`no-cache`,
/// `max-age=0`, an `Age` past its lifetime) is stored only when it has a validator and
/// `cache.keep` is set: its next use revalidates it; otherwise it is not stored
/// ([`NoStore::Expired`]). Fields named by `private="…"` or `no-cache="…"` are left out of
/// the stored copy ([`Lifetime::strip`]).
pub fn stored_lifetime(
    cfg: &CacheConfig,
    asked: Asked,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Lifetime, NoStore> {
    let listed = cfg.cacheable_statuses.contains(&status.as_u16());
    if !listed && !cfg.store_any_status
        || status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(NoStore::Status);
    }
    let (cc, expires) = match targeted(cfg, headers) {
        Some(cc) => (cc, None),
        None => (CacheControl::parse(headers), expires(headers)),
    };
    let explicit = cc.s_maxage.is_some() || cc.max_age.is_some() || expires.is_some();
    if !listed && !explicit && !cc.public {
        return Err(NoStore::Status);
    }
    if cc.must_understand && !understood(status) {
        return Err(NoStore::MustUnderstand);
    }
    if cc.no_store && !cc.must_understand {
        return Err(NoStore::NoStoreDirective);
    }
    if cc.private {
        return Err(NoStore::Private);
    }
    if asked.authorization && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate_only) {
        return Err(NoStore::Authorization);
    }
    let strip: Vec<HeaderName> = cc.private_fields.iter().chain(&cc.no_cache_fields).cloned().collect();
    if headers.contains_key(header::SET_COOKIE)
        && !strip.contains(&header::SET_COOKIE)
        && !(cfg.store_set_cookie && explicit)
    {
        return Err(NoStore::SetCookie);
    }
    if headers.contains_key(&CLEAR_SITE_DATA) {
        return Err(NoStore::ClearSiteData);
    }
    if headers
        .get_all(header::VARY)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim() == "*")))
    {
        return Err(NoStore::VaryStar);
    }
    let lifetime = if let Some(s) = cc.s_maxage.or(cc.max_age) {
        Duration::from_secs(s)
    } else if let Some(expires) = expires {
        let date = headers.get(header::DATE).and_then(http_date).unwrap_or(now);
        expires.map_or(Duration::ZERO, |e| e.duration_since(date).unwrap_or(Duration::ZERO))
    } else if !cfg.default_ttl.is_zero() {
        cfg.default_ttl
    } else {
        heuristic(headers, cfg.heuristic_fraction, now)
    };
    // An Age that cannot be read: held somewhere for an unknown time, so stale.
    let age = age(headers);
    // `no-cache`: stored, but never used without revalidating it first.
    let ttl = match age {
        Some(age) if !cc.no_cache => lifetime.saturating_sub(age).min(Duration::from_secs(MAX_DELTA)),
        _ => Duration::ZERO,
    };
    // Kept past its stale windows: to be revalidated when it has a validator, else only for
    // clients whose `max-stale` accepts it; one with nothing to offer either is not stored.
    let validator = has_validator(headers);
    let keep = if validator || !ttl.is_zero() {
        cfg.keep
    } else {
        Duration::ZERO
    };
    if ttl.is_zero() && (keep.is_zero() || !validator) {
        return Err(NoStore::Expired);
    }
    let forbids_stale = cc.must_revalidate || cc.s_maxage.is_some() || cc.no_cache;
    let (grace, stale_if_error) = if forbids_stale {
        (Duration::ZERO, Duration::ZERO)
    } else {
        let grace = cc
            .stale_while_revalidate
            .map_or(cfg.grace, |s| Duration::from_secs(s).max(cfg.grace));
        (
            grace,
            cc.stale_if_error.map_or(grace, |s| Duration::from_secs(s).max(grace)),
        )
    };
    Ok(Lifetime {
        ttl,
        grace,
        stale_if_error,
        keep,
        initial_age: age.unwrap_or(Duration::ZERO),
        strip,
    })
}

/// Where a stored response stands when a request finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Its age (what `Age` would say).
    pub age: Duration,
    /// Whether it is still fresh.
    pub fresh: bool,
    /// Freshness left (zero when stale).
    pub fresh_left: Duration,
    /// How long it has been stale (zero when fresh).
    pub stale_for: Duration,
    /// Within its grace: it may be served stale while one request refreshes it.
    pub in_grace: bool,
    /// Its directives forbid serving it stale (`must-revalidate`, `proxy-revalidate`,
    /// `s-maxage`, `no-cache`).
    pub forbids_stale: bool,
}

/// What a request does with a stored response it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Serve it: fresh (and fresh enough for the request).
    Fresh,
    /// Serve it stale and refresh it in the background (grace).
    StaleWhileRevalidate,
    /// Serve it stale: the request's `max-stale` allows it.
    Stale,
    /// Ask the origin first (conditionally, when it has a validator).
    Revalidate,
}

/// Whether a request may be answered with a stored response (RFC 9111 §4.2.4, §5.2.1),
/// given the request's `Cache-Control` (`None` when the proxy ignores clients' directives, or
/// the request has none): `no-cache` always revalidates; `max-age=N` does when the response
/// is older than N, `min-fresh=N` when it has less than N of freshness left, and either when
/// it is stale, unless `max-stale` (without a value, or at least as long as it has been
/// stale) accepts it, which the response's own revalidation directives overrule. Without
/// directives: fresh is served, stale within grace served while it is refreshed, anything
/// else revalidated.
pub fn use_stored(held: &Held, req: Option<&CacheControl>) -> Use {
    let Some(req) = req else {
        return match held {
            h if h.fresh => Use::Fresh,
            h if h.in_grace => Use::StaleWhileRevalidate,
            _ => Use::Revalidate,
        };
    };
    if req.no_cache || req.max_age.is_some_and(|max| held.age.as_secs() > max) {
        return Use::Revalidate;
    }
    if held.fresh {
        if req.min_fresh.is_some_and(|min| held.fresh_left.as_secs() < min) {
            return Use::Revalidate;
        }
        return Use::Fresh;
    }
    let accepted = req
        .max_stale
        .is_some_and(|max| max.is_none_or(|n| held.stale_for.as_secs() <= n));
    if accepted && !held.forbids_stale {
        return Use::Stale;
    }
    if req.max_age.is_some() || req.min_fresh.is_some() || !held.in_grace {
        return Use::Revalidate;
    }
    Use::StaleWhileRevalidate
}

/// A request's directives as a cache reads them: its `Cache-Control`; `None` without one.
/// `Pragma: no-cache` means nothing: RFC 9111 §5.4 deprecates `Pragma`, and browsers that
/// send it send `Cache-Control` too.
pub fn request_directives(headers: &HeaderMap) -> Option<CacheControl> {
    headers
        .contains_key(header::CACHE_CONTROL)
        .then(|| CacheControl::parse(headers))
}

/// Whether a stored response's directives forbid serving it stale (see [`Held`]).
pub fn forbids_stale(cfg: &CacheConfig, headers: &HeaderMap, hidden: &HeaderMap) -> bool {
    let cc = targeted(cfg, hidden).unwrap_or_else(|| CacheControl::parse(headers));
    cc.must_revalidate || cc.s_maxage.is_some() || cc.no_cache
}

/// Response fields a `304` never changes in the stored response: framing and content coding
/// (the stored body is what they describe), the validator the `304` was selected by (RFC 9111
/// §3.2, §4.3.4), `Age` (computed anew) and the proxy's own delivery fields.
static NOT_UPDATED: [&str; 10] = [
    "content-length",
    "content-encoding",
    "content-md5",
    "content-range",
    "transfer-encoding",
    "etag",
    "age",
    "vary",
    "cache-status",
    "x-cache",
];

/// The stored response's header fields updated by a `304 Not Modified` (RFC 9111 §3.2): every
/// field the `304` carries replaces all stored lines of that name, but those in
/// [`NOT_UPDATED`]; the rest are kept.
pub fn updated_headers(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut out = stored.clone();
    let mut replaced: Vec<&header::HeaderName> = Vec::new();
    for (name, value) in not_modified {
        if NOT_UPDATED.contains(&name.as_str()) {
            continue;
        }
        if !replaced.contains(&name) {
            out.remove(name);
            replaced.push(name);
        }
        out.append(name.clone(), value.clone());
    }
    out
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
        assert_eq!(l.stale_if_error, Duration::from_secs(86400), "at least grace");
        // stale-if-error widens only what may be served when the origin fails.
        let l = lifetime(
            &c,
            StatusCode::OK,
            &h(&[("cache-control", "max-age=10, stale-if-error=86400")]),
            NOW,
        )
        .unwrap();
        assert_eq!(
            (l.grace, l.stale_if_error),
            (Duration::from_secs(3600), Duration::from_secs(86400))
        );
        let l = lifetime(
            &c,
            StatusCode::OK,
            &h(&[("cache-control", "max-age=10, stale-if-error=86400, proxy-revalidate")]),
            NOW,
        )
        .unwrap();
        assert_eq!((l.grace, l.stale_if_error), (Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn responses_without_freshness_are_kept_to_be_revalidated_when_they_have_a_validator() {
        let mut c = cfg();
        c.keep = Duration::from_secs(600);
        for cc in [
            "no-cache",
            "no-cache, max-age=3600",
            "max-age=0",
            "max-age=0, must-revalidate",
        ] {
            let l = lifetime(
                &c,
                StatusCode::OK,
                &h(&[("cache-control", cc), ("etag", "\"v1\"")]),
                NOW,
            )
            .unwrap();
            assert_eq!((l.ttl, l.keep), (Duration::ZERO, Duration::from_secs(600)), "{cc}");
            if cc.starts_with("no-cache") {
                assert_eq!(l.grace, Duration::ZERO, "{cc}: never served without revalidation");
            }
            let lm = h(&[
                ("cache-control", cc),
                ("last-modified", "Wed, 01 Jan 2020 00:00:00 GMT"),
            ]);
            assert_eq!(
                lifetime(&c, StatusCode::OK, &lm, NOW).unwrap().ttl,
                Duration::ZERO,
                "{cc}"
            );
            // Without a validator there is nothing to revalidate with.
            let bare = h(&[("cache-control", cc)]);
            assert_eq!(lifetime(&c, StatusCode::OK, &bare, NOW), Err(NoStore::Expired), "{cc}");
        }
        let l = lifetime(
            &c,
            StatusCode::OK,
            &h(&[("cache-control", "max-age=60, must-revalidate"), ("etag", "\"v\"")]),
            NOW,
        )
        .unwrap();
        assert_eq!(
            (l.ttl, l.grace, l.keep),
            (Duration::from_secs(60), Duration::ZERO, Duration::from_secs(600))
        );
        assert_eq!(
            lifetime(&c, StatusCode::OK, &h(&[("cache-control", "max-age=60")]), NOW)
                .unwrap()
                .keep,
            Duration::from_secs(600),
            "no validator: kept for max-stale"
        );
        // The default keeps nothing: a no-cache response is not stored.
        assert_eq!(
            lifetime(
                &cfg(),
                StatusCode::OK,
                &h(&[("cache-control", "no-cache"), ("etag", "\"v\"")]),
                NOW
            ),
            Err(NoStore::Expired)
        );
    }

    #[test]
    fn a_304_updates_every_field_it_carries_but_framing_coding_and_the_validator() {
        let stored = h(&[
            ("cache-control", "max-age=1"),
            ("content-type", "text/plain"),
            ("etag", "\"abcdef\""),
            ("x-keep", "kept"),
            ("x-multi", "a"),
            ("x-multi", "b"),
            ("content-encoding", "identity"),
            ("age", "0"),
            ("cache-status", "Strata"),
        ]);
        let not_modified = h(&[
            ("cache-control", "max-age=3600"),
            ("content-type", "text/plain;charset=utf-8"),
            ("etag", "\"ghijkl\""),
            ("x-multi", "c"),
            ("set-cookie", "a=c"),
            ("content-length", "10"),
            ("content-encoding", "gzip"),
            ("content-range", "bytes 0-1/2"),
            ("age", "30"),
        ]);
        let u = updated_headers(&stored, &not_modified);
        let all = |n: &str| u.get_all(n).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
        assert_eq!(all("cache-control"), ["max-age=3600"]);
        assert_eq!(all("content-type"), ["text/plain;charset=utf-8"]);
        assert_eq!(all("x-multi"), ["c"], "all stored lines of a field are replaced");
        assert_eq!(all("set-cookie"), ["a=c"]);
        assert_eq!(all("x-keep"), ["kept"]);
        assert_eq!(all("etag"), ["\"abcdef\""], "the validator is not updated");
        assert_eq!(all("content-encoding"), ["identity"]);
        assert_eq!(all("age"), ["0"]);
        assert_eq!(all("cache-status"), ["Strata"]);
        assert!(!u.contains_key("content-length") && !u.contains_key("content-range"));
    }

    #[test]
    fn heuristic_freshness_is_a_fraction_of_the_time_since_last_modified_when_there_is_no_default_ttl() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut c = cfg();
        c.default_ttl = Duration::ZERO;
        c.heuristic_fraction = 0.1;
        let lm = |ago: u64| httpdate::fmt_http_date(now - Duration::from_secs(ago));
        let l = lifetime(&c, StatusCode::OK, &h(&[("last-modified", &lm(3600))]), now).unwrap();
        assert_eq!(l.ttl, Duration::from_secs(360));
        let old = lifetime(&c, StatusCode::OK, &h(&[("last-modified", &lm(900_000))]), now).unwrap();
        assert_eq!(old.ttl, HEURISTIC_MAX, "capped");
        // Measured from the response's Date when it has one.
        let dated = h(&[("last-modified", &lm(3600)), ("date", &lm(1800))]);
        assert_eq!(
            lifetime(&c, StatusCode::OK, &dated, now).unwrap().ttl,
            Duration::from_secs(180)
        );
        // Explicit freshness, a default TTL, no Last-Modified, or no fraction: no heuristic.
        let explicit = h(&[("last-modified", &lm(3600)), ("cache-control", "max-age=5")]);
        assert_eq!(
            lifetime(&c, StatusCode::OK, &explicit, now).unwrap().ttl,
            Duration::from_secs(5)
        );
        assert_eq!(
            lifetime(&c, StatusCode::OK, &HeaderMap::new(), now),
            Err(NoStore::Expired)
        );
        assert_eq!(
            lifetime(&cfg(), StatusCode::OK, &h(&[("last-modified", &lm(3600))]), now)
                .unwrap()
                .ttl,
            Duration::from_secs(120),
            "the default TTL comes first"
        );
        c.heuristic_fraction = 0.0;
        assert_eq!(
            lifetime(&c, StatusCode::OK, &h(&[("last-modified", &lm(3600))]), now),
            Err(NoStore::Expired)
        );
        // Only heuristically cacheable statuses.
        c.heuristic_fraction = 0.1;
        for status in [201, 202, 403, 502, 503, 504] {
            let s = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                lifetime(&c, s, &h(&[("last-modified", &lm(3600))]), now),
                Err(NoStore::Status),
                "{status}"
            );
        }
    }

    #[test]
    fn expires_is_read_in_any_date_format_and_an_unreadable_one_is_past() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777 - 100);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            let l = lifetime(&cfg(), StatusCode::OK, &h(&[("expires", form)]), now).unwrap();
            assert_eq!(l.ttl, Duration::from_secs(100), "{form}");
        }
        for bad in ["0", "Sun, 06 Nov 1994 08:49:37 UTC", "never"] {
            assert_eq!(
                lifetime(&cfg(), StatusCode::OK, &h(&[("expires", bad)]), now),
                Err(NoStore::Expired),
                "{bad}"
            );
        }
        // A Date that is not a date: the time of receipt stands in.
        let l = lifetime(
            &cfg(),
            StatusCode::OK,
            &h(&[("expires", "Sun, 06 Nov 1994 08:49:37 GMT"), ("date", "garbage")]),
            now,
        )
        .unwrap();
        assert_eq!(l.ttl, Duration::from_secs(100));
        // max-age wins over any Expires, even an invalid one.
        let l = lifetime(
            &cfg(),
            StatusCode::OK,
            &h(&[("cache-control", "max-age=7"), ("expires", "0")]),
            now,
        )
        .unwrap();
        assert_eq!(l.ttl, Duration::from_secs(7));
    }

    #[test]
    fn an_unreadable_age_or_freshness_directive_means_stale() {
        for age in ["abc", "-7200", "7200.0", "0, 0", "7200;foo=bar"] {
            let hdrs = h(&[("cache-control", "max-age=3600"), ("age", age)]);
            assert_eq!(
                lifetime(&cfg(), StatusCode::OK, &hdrs, NOW),
                Err(NoStore::Expired),
                "{age}"
            );
        }
        for cc in [
            "max-age=3600a",
            "max-age=1.5",
            "max-age='3600'",
            "max-age =3600",
            "max-age=3600, max-age=1",
        ] {
            assert_eq!(
                lifetime(&cfg(), StatusCode::OK, &h(&[("cache-control", cc)]), NOW),
                Err(NoStore::Expired),
                "{cc}"
            );
        }
        let huge = lifetime(
            &cfg(),
            StatusCode::OK,
            &h(&[("cache-control", "max-age=99999999999")]),
            NOW,
        )
        .unwrap();
        assert_eq!(huge.ttl, Duration::from_secs(MAX_DELTA));
    }

    #[test]
    fn fields_named_by_private_or_no_cache_are_left_out_of_the_stored_copy() {
        let hdrs = h(&[
            (
                "cache-control",
                "max-age=60, private=\"Set-Cookie\", no-cache=\"x-user\"",
            ),
            ("set-cookie", "a=b"),
            ("x-user", "ann"),
        ]);
        let l = lifetime(&cfg(), StatusCode::OK, &hdrs, NOW).unwrap();
        assert_eq!(l.strip, [header::SET_COOKIE, HeaderName::from_static("x-user")]);
        assert_eq!(l.ttl, Duration::from_secs(60), "the rest is stored as usual");
    }

    fn status(n: u16) -> StatusCode {
        StatusCode::from_u16(n).unwrap()
    }

    #[test]
    fn with_store_any_status_any_final_status_with_explicit_freshness_is_stored() {
        let mut c = cfg();
        for n in [302, 303, 307, 400, 403, 499, 500, 502, 503, 504, 599, 299] {
            let hdrs = h(&[("cache-control", "max-age=60")]);
            assert_eq!(
                lifetime(&c, status(n), &hdrs, NOW),
                Err(NoStore::Status),
                "{n}: WordPress's list only"
            );
            c.store_any_status = true;
            assert_eq!(
                lifetime(&c, status(n), &hdrs, NOW).unwrap().ttl,
                Duration::from_secs(60),
                "{n}"
            );
            let exp = h(&[("expires", "Thu, 01 Jan 1970 00:01:00 GMT")]);
            assert_eq!(
                lifetime(&c, status(n), &exp, NOW).unwrap().ttl,
                Duration::from_secs(60),
                "{n}"
            );
            assert_eq!(
                lifetime(&c, status(n), &HeaderMap::new(), NOW),
                Err(NoStore::Status),
                "{n}: no freshness"
            );
            c.store_any_status = false;
        }
        c.store_any_status = true;
        // `public` makes it storable under the default TTL or heuristics too.
        let l = lifetime(&c, status(599), &h(&[("cache-control", "public")]), NOW).unwrap();
        assert_eq!(l.ttl, Duration::from_secs(120));
        for never in [100, 206, 304] {
            let hdrs = h(&[("cache-control", "max-age=60")]);
            assert_eq!(lifetime(&c, status(never), &hdrs, NOW), Err(NoStore::Status), "{never}");
        }
    }

    #[test]
    fn must_understand_stores_only_known_statuses_and_then_overrides_no_store() {
        let mut c = cfg();
        c.store_any_status = true;
        let hdrs = h(&[("cache-control", "must-understand, no-store, max-age=60")]);
        assert_eq!(lifetime(&c, status(599), &hdrs, NOW), Err(NoStore::MustUnderstand));
        assert_eq!(
            lifetime(&c, status(200), &hdrs, NOW).unwrap().ttl,
            Duration::from_secs(60)
        );
        assert_eq!(
            lifetime(&c, status(200), &h(&[("cache-control", "no-store, max-age=60")]), NOW),
            Err(NoStore::NoStoreDirective)
        );
    }

    #[test]
    fn answers_to_authorized_requests_are_stored_only_when_they_say_they_may_be_shared() {
        let c = cfg();
        let authorized = Asked { authorization: true };
        for (cc, ok) in [
            ("max-age=60", false),
            ("proxy-revalidate, max-age=60", false),
            ("public, max-age=60", true),
            ("s-maxage=60", true),
            ("must-revalidate, max-age=60", true),
        ] {
            let got = stored_lifetime(&c, authorized, StatusCode::OK, &h(&[("cache-control", cc)]), NOW);
            assert_eq!(got.is_ok(), ok, "{cc}: {got:?}");
            if !ok {
                assert_eq!(got, Err(NoStore::Authorization));
            }
        }
        let expires = h(&[("expires", "Thu, 01 Jan 1970 01:00:00 GMT")]);
        assert_eq!(
            stored_lifetime(&c, authorized, StatusCode::OK, &expires, NOW),
            Err(NoStore::Authorization)
        );
    }

    #[test]
    fn set_cookie_is_stored_only_when_allowed_and_explicitly_fresh_and_clear_site_data_never() {
        let mut c = cfg();
        let explicit = h(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]);
        let implicit = h(&[("set-cookie", "a=b")]);
        assert_eq!(lifetime(&c, StatusCode::OK, &explicit, NOW), Err(NoStore::SetCookie));
        c.store_set_cookie = true;
        assert!(lifetime(&c, StatusCode::OK, &explicit, NOW).is_ok());
        assert_eq!(
            lifetime(&c, StatusCode::OK, &implicit, NOW),
            Err(NoStore::SetCookie),
            "the default TTL is no permission"
        );
        for csd in [
            &[("clear-site-data", "\"cache\"")][..],
            &[
                ("clear-site-data", "\"cookies\""),
                ("cache-control", "public, max-age=60"),
            ],
        ] {
            assert_eq!(lifetime(&c, StatusCode::OK, &h(csd), NOW), Err(NoStore::ClearSiteData));
        }
    }

    #[test]
    fn a_targeted_field_stands_instead_of_cache_control_and_expires() {
        let c = cfg();
        let ttl = |pairs: &[(&str, &str)]| lifetime(&c, StatusCode::OK, &h(pairs), NOW).map(|l| l.ttl);
        let hour = Ok(Duration::from_secs(3600));
        assert_eq!(
            ttl(&[("cache-control", "max-age=60"), ("cdn-cache-control", "max-age=3600")]),
            hour
        );
        assert_eq!(
            ttl(&[("cache-control", "no-store"), ("cdn-cache-control", "max-age=3600")]),
            hour
        );
        assert_eq!(
            ttl(&[("cache-control", "private"), ("cdn-cache-control", "max-age=3600")]),
            hour
        );
        assert_eq!(
            ttl(&[("cache-control", "max-age=3600"), ("cdn-cache-control", "no-store")]),
            Err(NoStore::NoStoreDirective)
        );
        assert_eq!(
            ttl(&[
                ("expires", "Thu, 01 Jan 1970 01:00:00 GMT"),
                ("cdn-cache-control", "max-age=0")
            ]),
            Err(NoStore::Expired)
        );
        // The most specific field wins.
        assert_eq!(
            ttl(&[
                ("cdn-cache-control", "max-age=60"),
                ("strata-cache-control", "max-age=3600")
            ]),
            hour
        );
        // A targeted field without freshness: the default TTL, not Cache-Control's max-age.
        assert_eq!(
            ttl(&[("cache-control", "max-age=5"), ("cdn-cache-control", "public")]),
            Ok(Duration::from_secs(120))
        );
        // Fields not in the list are plain headers.
        assert_eq!(
            ttl(&[("cache-control", "max-age=5"), ("surrogate-control", "max-age=3600")]),
            Ok(Duration::from_secs(5))
        );
        let mut sc = cfg();
        sc.targeted_fields = vec![HeaderName::from_static("surrogate-control")];
        let ttl = |v: &str| {
            lifetime(
                &sc,
                StatusCode::OK,
                &h(&[("cache-control", "max-age=5"), ("surrogate-control", v)]),
                NOW,
            )
            .map(|l| l.ttl)
        };
        assert_eq!(ttl("max-age=3600"), hour);
        assert_eq!(ttl("max-age=3600;strata"), hour);
        assert_eq!(
            ttl("max-age=3600;another-device"),
            Ok(Duration::from_secs(120)),
            "not for this cache"
        );
    }

    fn held(fresh_left: u64, stale_for: u64, in_grace: bool) -> Held {
        Held {
            age: Duration::from_secs(100),
            fresh: fresh_left > 0,
            fresh_left: Duration::from_secs(fresh_left),
            stale_for: Duration::from_secs(stale_for),
            in_grace,
            forbids_stale: false,
        }
    }

    fn req(cc: &str) -> CacheControl {
        CacheControl::parse(&h(&[("cache-control", cc)]))
    }

    #[test]
    fn without_request_directives_fresh_serves_grace_refreshes_the_rest_revalidates() {
        assert_eq!(use_stored(&held(10, 0, false), None), Use::Fresh);
        assert_eq!(use_stored(&held(0, 10, true), None), Use::StaleWhileRevalidate);
        assert_eq!(use_stored(&held(0, 10, false), None), Use::Revalidate);
    }

    #[test]
    fn request_directives_narrow_or_widen_what_a_stored_response_may_answer() {
        let fresh = held(50, 0, false);
        let stale = held(0, 30, false);
        let graced = held(0, 30, true);
        assert_eq!(use_stored(&fresh, Some(&req("no-cache"))), Use::Revalidate);
        assert_eq!(
            use_stored(&fresh, Some(&req("max-age=0"))),
            Use::Revalidate,
            "age 100 > 0"
        );
        assert_eq!(use_stored(&fresh, Some(&req("max-age=100"))), Use::Fresh);
        assert_eq!(use_stored(&fresh, Some(&req("min-fresh=60"))), Use::Revalidate);
        assert_eq!(use_stored(&fresh, Some(&req("min-fresh=50"))), Use::Fresh);
        assert_eq!(use_stored(&fresh, Some(&req("only-if-cached"))), Use::Fresh);
        assert_eq!(use_stored(&stale, Some(&req("max-stale"))), Use::Stale);
        assert_eq!(use_stored(&stale, Some(&req("max-stale=30"))), Use::Stale);
        assert_eq!(use_stored(&stale, Some(&req("max-stale=29"))), Use::Revalidate);
        assert_eq!(
            use_stored(&graced, Some(&req("max-age=3600"))),
            Use::Revalidate,
            "stale is not acceptable"
        );
        assert_eq!(
            use_stored(&graced, Some(&req("max-stale=1"))),
            Use::StaleWhileRevalidate
        );
        let strict = Held {
            forbids_stale: true,
            ..stale
        };
        assert_eq!(
            use_stored(&strict, Some(&req("max-stale"))),
            Use::Revalidate,
            "must-revalidate wins"
        );
    }

    #[test]
    fn a_request_without_cache_control_has_no_directives_whatever_its_pragma() {
        assert!(request_directives(&h(&[("pragma", "no-cache")])).is_none());
        let both = h(&[("pragma", "no-cache"), ("cache-control", "max-age=60")]);
        assert!(request_directives(&both).is_some_and(|c| !c.no_cache && c.max_age == Some(60)));
        assert!(request_directives(&HeaderMap::new()).is_none());
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
            let bound = Duration::from_secs(MAX_DELTA);
            assert!(l.ttl <= bound && l.grace <= bound, "{hdrs:?}: {l:?}");
            assert!(std::time::Instant::now().checked_add(l.ttl + l.grace).is_some());
        }
    }
}
