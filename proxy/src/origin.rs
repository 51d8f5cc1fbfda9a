//! The origin client: pooled keep-alive connections, timeouts, and errors that say what
//! failed and which status the client gets for it.

use std::net::IpAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::ProxyBody;
use crate::config::OriginConfig;
use crate::tls;

/// Why the origin did not answer.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// No connection could be made (refused, unreachable, connect timeout).
    #[error("cannot connect to origin {addr}: {cause}")]
    Connect { addr: String, cause: String },
    /// The origin took longer than `origin.first_byte_timeout` to send its response head.
    #[error("origin {addr} sent no response within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// The connection broke or the origin sent something that is not HTTP.
    #[error("origin {addr} failed: {cause}")]
    Protocol { addr: String, cause: String },
}

impl OriginError {
    /// The status a client gets: 504 for a timeout, 502 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            OriginError::Timeout { .. } => http::StatusCode::GATEWAY_TIMEOUT,
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }

    /// Label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            OriginError::Connect { .. } => "connect",
            OriginError::Timeout { .. } => "timeout",
            OriginError::Protocol { .. } => "protocol",
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(n);
    }
}

/// Adds the client to `X-Forwarded-For` and sets `X-Forwarded-Proto`.
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, proto: &'static str) {
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {client}"),
        None => client.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
}

/// A pooled HTTP/1.1 client bound to the one origin.
#[derive(Clone)]
pub struct Origin {
    client: Client<HttpConnector, ProxyBody>,
    scheme_authority: String,
    first_byte_timeout: Duration,
    /// Longest silence between body chunks, for streamed bodies.
    pub body_timeout: Duration,
}

impl Origin {
    /// A client for `cfg.url` with its pool and timeouts.
    pub fn new(cfg: &OriginConfig) -> Origin {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(cfg.max_idle_connections)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        let scheme = cfg.url.scheme_str().unwrap_or("http");
        let authority = cfg.url.authority().map_or("127.0.0.1", |a| a.as_str());
        Origin {
            client,
            scheme_authority: format!("{scheme}://{authority}"),
            first_byte_timeout: cfg.first_byte_timeout,
            body_timeout: cfg.body_timeout,
        }
    }

    /// The absolute URI of a path and query on the origin.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Ok(Uri::try_from(format!("{}{}", self.scheme_authority, path_and_query))?)
    }

    /// Sends a request and waits for the response head, within the first-byte timeout.
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, OriginError> {
        let addr = &self.scheme_authority;
        match tokio::time::timeout(self.first_byte_timeout, self.client.request(req)).await {
            Err(_) => Err(OriginError::Timeout {
                addr: addr.clone(),
                timeout: self.first_byte_timeout,
            }),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => Err(OriginError::Connect {
                addr: addr.clone(),
                cause: error_chain(&e),
            }),
            Ok(Err(e)) => Err(OriginError::Protocol {
                addr: addr.clone(),
                cause: error_chain(&e),
            }),
        }
    }
}

/// An error and its causes on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The scheme the client used, for `X-Forwarded-Proto`.
pub fn proto(parts: &Parts) -> &'static str {
    if parts.extensions.get::<tls::Https>().is_some() {
        "https"
    } else {
        "http"
    }
}

/// Sets the Host the origin gets: the request's target host (from an absolute-form target
/// if there was one, else its one Host header), whatever `Connection` named.
pub fn set_host(headers: &mut HeaderMap, host: &str) {
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(header::HOST, v);
    }
}

/// The headers of a cache fill, built rather than copied: the object it brings is served to
/// everyone, so only what the cache key (or the object's own `Vary`) accounts for may shape
/// it. `host` is the key's normalised host; `vary` the request headers the stored Vary rule
/// names, sent with the client's values (each value its own variant); then the forwarding
/// headers. Never a body, `Content-Length`, cookie (unless varied on), conditional, range,
/// encoding, method-override or forwarding header of the client's: the validators a
/// refresh adds are its own.
pub fn fill_headers(
    host: &str,
    vary: &[HeaderName],
    req: &HeaderMap,
    client: IpAddr,
    proto: &'static str,
) -> Result<HeaderMap, http::header::InvalidHeaderValue> {
    let mut headers = HeaderMap::with_capacity(4 + vary.len());
    headers.insert(header::HOST, HeaderValue::from_str(host)?);
    for name in vary.iter().filter(|n| !FILL_NEVER.contains(n)) {
        for v in req.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    add_forwarded(&mut headers, client, proto);
    Ok(headers)
}

/// Whether a request header is one a fill never sends (see [`FILL_NEVER`]).
pub fn never_filled(name: &HeaderName) -> bool {
    FILL_NEVER.contains(name)
}

/// Request headers a fill never sends, even when an origin's `Vary` names them: they would
/// change how the answer is framed, encoded or routed rather than which variant it is.
static FILL_NEVER: [HeaderName; 12] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::ACCEPT_ENCODING,
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::EXPECT,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::HOST, "a".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::HOST));
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "192.0.2.1".parse().unwrap(), "http");
        add_forwarded(&mut h, "192.0.2.2".parse().unwrap(), "http");
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 192.0.2.2");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    fn client_headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn fills_carry_the_keyed_host_and_nothing_unkeyed_of_the_client() {
        let client = client_headers(&[
            ("host", "Site.Example:80"),
            ("content-length", "30"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "host=evil.example"),
            ("x-original-url", "/wp-admin/"),
            ("x-rewrite-url", "/wp-admin/"),
            ("x-http-method-override", "PATCH"),
            ("x-forwarded-for", "203.0.113.66"),
            ("cookie", "a=1"),
            ("user-agent", "Mobile"),
            ("if-none-match", "\"x\""),
            ("range", "bytes=0-1"),
            ("accept-encoding", "br"),
        ]);
        let h = fill_headers("site.example", &[], &client, "192.0.2.1".parse().unwrap(), "https").unwrap();
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["host", "x-forwarded-for", "x-forwarded-proto"]);
        assert_eq!(h["host"], "site.example");
        assert_eq!(h["x-forwarded-for"], "192.0.2.1", "not the client's own chain");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn fills_send_the_headers_the_vary_rule_names_but_never_framing_ones() {
        let client = client_headers(&[
            ("accept-language", "de"),
            ("accept-language", "fr"),
            ("cookie", "theme=dark"),
            ("content-length", "5"),
            ("accept-encoding", "br"),
        ]);
        let vary = [
            header::ACCEPT_LANGUAGE,
            header::COOKIE,
            header::CONTENT_LENGTH,
            header::ACCEPT_ENCODING,
            HeaderName::from_static("x-absent"),
        ];
        let h = fill_headers("site.example", &vary, &client, "192.0.2.1".parse().unwrap(), "http").unwrap();
        let langs: Vec<&str> = h
            .get_all("accept-language")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(langs, ["de", "fr"]);
        assert_eq!(h["cookie"], "theme=dark");
        assert!(!h.contains_key("content-length") && !h.contains_key("accept-encoding"));
        assert!(!h.contains_key("x-absent"));
    }

    #[test]
    fn a_host_the_connection_header_named_is_put_back() {
        let mut h = client_headers(&[("host", "site.example"), ("connection", "host, close")]);
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key("host"));
        set_host(&mut h, "site.example");
        assert_eq!(h["host"], "site.example");
    }
}
