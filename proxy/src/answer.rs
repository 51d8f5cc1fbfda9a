//! Building the proxy's own answers and the headers every answer carries: `X-Cache`,
//! RFC 9211 `Cache-Status` and `Age`. The ground floor: every module may use it; it uses
//! nobody in the crate but the body type.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ProxyBody;

/// `X-Cache`: HIT, MISS, PASS or STALE.
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// RFC 9211 `Cache-Status`.
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Adds the headers every delivery sets (with placeholder values) to a stored header map, so
/// that delivering replaces values in place instead of growing the cloned map.
pub fn add_delivery_slots(headers: &mut HeaderMap, compressed: bool) {
    headers.insert(header::AGE, HeaderValue::from_static("0"));
    headers.insert(&CACHE_STATUS, HeaderValue::from_static("Strata"));
    headers.insert(&X_CACHE, HeaderValue::from_static("HIT"));
    if compressed {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("identity"));
    }
}

/// Numbers below this get header values made once (see [`numbered`]).
const NUMBERED_MAX: usize = 4096;

/// `Age: N` and `Cache-Status: Strata; hit; ttl=N` for small N, made once: they are set on
/// every hit, and formatting them each time would cost an allocation per hit.
fn numbered() -> &'static [[HeaderValue; 2]] {
    static VALUES: std::sync::OnceLock<Vec<[HeaderValue; 2]>> = std::sync::OnceLock::new();
    VALUES.get_or_init(|| {
        (0..NUMBERED_MAX)
            .map(|n| [HeaderValue::from(n), cache_status(format_args!("hit; ttl={n}"))])
            .collect()
    })
}

/// The `Age` value for a number of seconds.
pub fn age_value(secs: u64) -> HeaderValue {
    match numbered().get(secs as usize) {
        Some([age, _]) => age.clone(),
        None => HeaderValue::from(secs),
    }
}

/// The `Cache-Status` of a fresh hit with `ttl` seconds of freshness left.
pub fn hit_status(ttl: u64) -> HeaderValue {
    match numbered().get(ttl as usize) {
        Some([_, status]) => status.clone(),
        None => cache_status(format_args!("hit; ttl={ttl}")),
    }
}

/// A `Cache-Status` value naming this cache.
pub fn cache_status(params: std::fmt::Arguments<'_>) -> HeaderValue {
    HeaderValue::from_str(&format!("Strata; {params}")).unwrap_or(HeaderValue::from_static("Strata"))
}

pub fn with_status(mut resp: Response<ProxyBody>, status: HeaderValue) -> Response<ProxyBody> {
    resp.headers_mut().insert(&CACHE_STATUS, status);
    resp
}

/// A response the proxy makes itself, with a one-line reason.
pub fn synth(status: StatusCode, text: &str, detail: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(format!(
        "{} {}: {text}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(&CACHE_STATUS, cache_status(format_args!("detail={detail}")));
    resp
}
