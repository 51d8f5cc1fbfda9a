//! The admin listener: health, metrics, status and signed purges. Never the public port.
//!
//! Purge requests are signed with the cluster secret (see `strata_wire::auth`): unsigned or
//! malformed → 401, wrong signature, expired timestamp or a replayed signature → 403.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use strata_wire::auth;

use crate::body::ProxyBody;
use crate::outcome::Outcome;
use crate::policy;
use crate::server::Proxy;

/// Largest admin request body accepted.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Signatures seen within the replay window, so each signed request works once.
#[derive(Default)]
pub struct ReplayGuard {
    seen: parking_lot::Mutex<HashMap<String, u64>>,
}

impl ReplayGuard {
    /// Records a signature; false if it was already used.
    pub fn first_use(&self, signature: &str, ts: u64, now: u64) -> bool {
        let mut seen = self.seen.lock();
        seen.retain(|_, t| t.abs_diff(now) <= 2 * auth::DEFAULT_WINDOW_SECS);
        seen.insert(signature.to_string(), ts).is_none()
    }
}

/// Shared state of the admin listener.
pub struct Admin {
    /// The proxy it reports on and purges.
    pub proxy: Arc<Proxy>,
    /// Replay protection for signed requests.
    pub replay: ReplayGuard,
}

fn text(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response<ProxyBody> {
    text(status, body.into() + "\n", "text/plain; charset=utf-8")
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Admin {
    /// Answers one admin request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, client: SocketAddr) -> Response<ProxyBody> {
        let allow = &self.proxy.cfg.cluster.admin_allow;
        if !allow.is_empty() && !allow.contains(&client.ip()) {
            return plain(
                StatusCode::FORBIDDEN,
                format!("{} is not in cluster.admin_allow", client.ip()),
            );
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => plain(StatusCode::OK, "ok"),
            (&Method::GET, "/metrics") => {
                let p = &self.proxy;
                p.store.maintain();
                let body = p.metrics.render(
                    p.store.weighted_size(),
                    p.store.entry_count(),
                    &p.store.stats.evictions,
                    &p.store.stats.expirations,
                );
                text(StatusCode::OK, body, "text/plain; version=0.0.4; charset=utf-8")
            }
            (&Method::GET, "/status") => plain(StatusCode::OK, self.status()),
            (&Method::POST, "/purge") => self.purge(req).await,
            (_, "/healthz" | "/metrics" | "/status") => plain(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
            (_, "/purge") => plain(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
            _ => plain(
                StatusCode::NOT_FOUND,
                "unknown admin path; try /healthz, /metrics, /status, POST /purge",
            ),
        }
    }

    fn status(&self) -> String {
        let p = &self.proxy;
        p.store.maintain();
        let m = &p.metrics;
        let (hit, miss, pass, stale) = (
            m.requests(Outcome::Hit),
            m.requests(Outcome::Miss),
            m.requests(Outcome::Pass),
            m.requests(Outcome::Stale),
        );
        let looked = hit + stale + miss;
        let ratio = if looked == 0 {
            0.0
        } else {
            (hit + stale) as f64 * 100.0 / looked as f64
        };
        format!(
            "strata-proxy {version} node {node}\nuptime {up}s\norigin {origin}\n\
             requests: hit {hit}, stale {stale}, miss {miss}, pass {pass}; hit ratio {ratio:.1}%\n\
             cache: {objects} objects, {bytes} of {cap} bytes, {ev} evictions",
            version = env!("CARGO_PKG_VERSION"),
            node = p.cfg.cluster.node_id,
            up = p.started.elapsed().as_secs(),
            origin = p.cfg.origin.url,
            objects = p.store.entry_count(),
            bytes = p.store.weighted_size(),
            cap = p.cfg.cache.capacity,
            ev = p.store.stats.evictions.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// `POST /purge?url=URL` (one URL with all its variants) or `POST /purge?all=1`.
    async fn purge(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_ADMIN_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("admin request bodies are limited to {MAX_ADMIN_BODY} bytes"),
                )
            }
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let now = now_secs();
        let signed = auth::Signed {
            method: parts.method.as_str(),
            path,
            body: &body,
        };
        let ts = match auth::verify(
            &self.proxy.cfg.cluster.secret,
            signed,
            header(auth::TIMESTAMP_HEADER),
            header(auth::SIGNATURE_HEADER),
            now,
            auth::DEFAULT_WINDOW_SECS,
        ) {
            Ok(ts) => ts,
            Err(e) => {
                tracing::warn!(error = %e, "refused admin request");
                let status = if e.is_unauthenticated() {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::FORBIDDEN
                };
                return plain(status, e.to_string());
            }
        };
        if !self
            .replay
            .first_use(header(auth::SIGNATURE_HEADER).unwrap_or(""), ts, now)
        {
            return plain(StatusCode::FORBIDDEN, "this signed request was already used (replay)");
        }
        let params: HashMap<String, String> = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| {
                (
                    k.to_string(),
                    percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned(),
                )
            })
            .collect();
        let p = &self.proxy;
        if params.contains_key("all") {
            p.store.clear();
            p.metrics.purges.inc();
            tracing::info!("purged everything");
            return text(StatusCode::OK, "{\"purged\":\"all\"}\n", "application/json");
        }
        let Some(url) = params.get("url") else {
            return plain(
                StatusCode::BAD_REQUEST,
                "give url=URL (absolute, or a path with host=HOST) or all=1",
            );
        };
        let Some(key) = purge_key(url, params.get("host").map(String::as_str), &p.cfg.policy.strip_query) else {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("{url:?} is not an http(s) URL or a path with host=HOST"),
            );
        };
        let n = p.store.purge_url(&key);
        p.metrics.purges.inc();
        tracing::info!(url, removed = n, "purged URL");
        text(StatusCode::OK, format!("{{\"purged\":{n}}}\n"), "application/json")
    }
}

/// The primary cache key of a purge target: an absolute URL, or a path plus host.
pub fn purge_key(url: &str, host: Option<&str>, strip: &[String]) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let host = match uri.authority() {
        Some(a) if matches!(uri.scheme_str(), Some("http" | "https")) => a.as_str(),
        Some(_) => return None,
        None => host?,
    };
    if !uri.path().starts_with('/') {
        return None;
    }
    let q = policy::normalise_query(uri.query(), strip);
    Some(policy::cache_key(host, uri.path(), q.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_targets_map_to_cache_keys() {
        let strip = crate::config::PolicyConfig::default().strip_query;
        assert_eq!(
            purge_key("http://Example.com/a/?b=1&a=2&utm_x=1", None, &strip).as_deref(),
            Some("example.com/a/?a=2&b=1")
        );
        assert_eq!(
            purge_key("/a/", Some("127.0.0.1:8080"), &strip).as_deref(),
            Some("127.0.0.1:8080/a/")
        );
        assert_eq!(purge_key("/a/", None, &strip), None);
        assert_eq!(purge_key("ftp://x/a", None, &strip), None);
    }

    #[test]
    fn signatures_work_once() {
        let g = ReplayGuard::default();
        assert!(g.first_use("abc", 100, 100));
        assert!(!g.first_use("abc", 100, 101));
        assert!(g.first_use("abd", 100, 101));
    }
}
