//! The proxy's freshness rules (`strata_proxy::freshness`): `CacheControl::parse` and
//! `lifetime` on arbitrary response header values.
//!
//! Input: a status selector byte, four bytes of clock, then header lines, each a name
//! selector byte followed by the value. Never a panic, and a stored lifetime is usable: the
//! proxy adds `ttl` and `grace` to the monotonic clock and `initial_age` to an age, so each
//! stays within 2^31 seconds (RFC 9111 §1.2.2) and their sum can be added to any `Instant`;
//! a response a shared cache may not store (`no-store` without `must-understand`,
//! `private`, `Set-Cookie` in the WordPress preset) never gets one; `must-revalidate`
//! leaves no grace.
#![no_main]

use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use strata_proxy::config::{CacheConfig, DEFAULT_CACHEABLE_STATUSES, DEFAULT_GRACE, DEFAULT_TTL};
use strata_proxy::freshness::{lifetime, CacheControl};

const NAMES: &[&str] = &[
    "cache-control",
    "expires",
    "date",
    "age",
    "vary",
    "set-cookie",
    "cache-control",
    "expires",
];
const STATUSES: &[u16] = &[200, 203, 204, 206, 300, 301, 302, 304, 308, 404, 410, 500, 501, 503];
/// RFC 9111's "greatest integer it can represent" for delta-seconds.
const MAX_DELTA: Duration = Duration::from_secs(1 << 31);

fn config() -> CacheConfig {
    // The WordPress preset's values: a default TTL and an hour of grace.
    CacheConfig {
        default_ttl: DEFAULT_TTL,
        grace: DEFAULT_GRACE,
        cacheable_statuses: DEFAULT_CACHEABLE_STATUSES.to_vec(),
        ..CacheConfig::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let [selector, c0, c1, c2, c3, rest @ ..] = data else {
        return;
    };
    let status = StatusCode::from_u16(STATUSES[usize::from(*selector) % STATUSES.len()]).unwrap_or(StatusCode::OK);
    // Any moment from 1970 to 2106, with a second's worth of sub-second noise.
    let clock = u32::from_le_bytes([*c0, *c1, *c2, *c3]);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(clock)) + Duration::from_micros(u64::from(*c0));
    let mut headers = HeaderMap::new();
    for line in rest.split(|b| *b == b'\n') {
        let Some((&n, value)) = line.split_first() else {
            continue;
        };
        let name = HeaderName::from_static(NAMES[usize::from(n) % NAMES.len()]);
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name, v);
        }
    }
    let cfg = config();
    let cc = CacheControl::parse(&headers);
    let result = lifetime(&cfg, status, &headers, now);
    let Ok(life) = result else { return };
    // What a shared cache never stores: no-store (unless must-understand of a known status
    // overrides it, RFC 9111 §5.2.2.3), private, and, in this preset, Set-Cookie.
    assert!(!cc.no_store || cc.must_understand);
    assert!(!cc.private);
    assert!(!headers.contains_key(http::header::SET_COOKIE));
    assert!(life.ttl <= MAX_DELTA, "ttl {:?}", life.ttl);
    assert!(life.grace <= MAX_DELTA, "grace {:?}", life.grace);
    assert!(
        life.stale_if_error <= MAX_DELTA,
        "stale-if-error {:?}",
        life.stale_if_error
    );
    assert!(life.initial_age <= MAX_DELTA, "age {:?}", life.initial_age);
    let longest = life.ttl + life.grace.max(life.stale_if_error).max(life.keep);
    assert!(Instant::now().checked_add(longest).is_some());
    if cc.must_revalidate {
        assert!(life.grace.is_zero(), "must-revalidate is never served stale");
    }
});
