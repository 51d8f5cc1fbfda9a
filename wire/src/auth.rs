//! Signing of admin requests with the cluster secret (scheme `v2`).
//!
//! A signed request carries three headers: `X-Strata-Timestamp` (Unix milliseconds),
//! `X-Strata-Nonce` (random, new for every request: 32 hex digits) and
//! `X-Strata-Signature: v2=HEX`, where HEX is the HMAC-SHA256, keyed with the cluster
//! secret, of
//!
//! ```text
//! strata-admin-v2 \n METHOD \n HOST \n PATH \n TIMESTAMP \n NONCE \n BODY
//! ```
//!
//! (`\n` a line feed, none after BODY): METHOD as sent (`POST`); HOST the request's `Host`
//! header, which the sender sets to the authority of the admin URL it sends to
//! (`10.0.0.2:9080`); PATH the path and query as sent; TIMESTAMP and NONCE the headers'
//! values; BODY the body's bytes.
//!
//! The receiver ([`verify`]) recomputes the MAC and compares it in constant time, refuses a
//! timestamp more than the window away from its clock, and refuses a `Host` that names
//! another node ([`check_audience`]): a request signed for one node is good on that node
//! only. It then remembers the MAC it accepted ([`Verified::mac`], the decoded bytes, so the
//! hex in any case is one signature) for as long as the timestamp could pass, so each signed
//! request is accepted once. The nonce makes two requests alike in everything else, within
//! the same millisecond, two signatures; a sender retrying a request signs it again.
//!
//! The first scheme signed `METHOD \n PATH \n TIMESTAMP \n BODY` (Unix seconds, no host, no
//! nonce) and sent bare hex: this one refuses such a request as [`AuthError::OldScheme`],
//! and a receiver of the first one refuses `v2=…` as a malformed signature, so nodes of the
//! two releases refuse each other with a 401 that says why.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying the Unix time (milliseconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "x-strata-timestamp";
/// Header carrying the request's nonce.
pub const NONCE_HEADER: &str = "x-strata-nonce";
/// Header carrying the signature: [`SCHEME`], `=`, the hex HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "x-strata-signature";
/// The signing scheme, named before the signature's hex.
pub const SCHEME: &str = "v2";
/// How far a signed timestamp may be from the receiver's clock, in milliseconds.
pub const DEFAULT_WINDOW_MS: u64 = 30_000;
/// The shortest secret accepted: shorter ones are guessable.
pub const MIN_SECRET_LEN: usize = 16;
/// The first line of the signed string: it names the scheme, so no other MAC made with the
/// secret can pass for an admin request's.
const DOMAIN: &[u8] = b"strata-admin-v2";
/// Length bounds of a nonce (ASCII letters and digits).
const NONCE_LEN: std::ops::RangeInclusive<usize> = 16..=64;

type HmacSha256 = Hmac<Sha256>;

/// The parts of an admin request that the signature covers besides its timestamp and nonce.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The `Host` header: the authority of the admin URL the request is sent to.
    pub host: &'a str,
    /// Path and query, e.g. `/purge?url=/hello/`.
    pub path: &'a str,
    /// The request body as sent.
    pub body: &'a [u8],
}

/// The signing headers of a received request, as they came.
#[derive(Debug, Clone, Copy, Default)]
pub struct Received<'a> {
    /// `X-Strata-Timestamp`.
    pub timestamp: Option<&'a str>,
    /// `X-Strata-Nonce`.
    pub nonce: Option<&'a str>,
    /// `X-Strata-Signature`.
    pub signature: Option<&'a str>,
}

impl<'a> Received<'a> {
    /// The signing headers of `headers` (a header that is not text counts as absent).
    pub fn of(headers: &'a http::HeaderMap) -> Received<'a> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Received {
            timestamp: get(TIMESTAMP_HEADER),
            nonce: get(NONCE_HEADER),
            signature: get(SIGNATURE_HEADER),
        }
    }
}

/// A request whose signature [`verify`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// When it was signed, in Unix milliseconds.
    pub timestamp_ms: u64,
    /// Its MAC, decoded: what a receiver remembers to accept it once.
    pub mac: [u8; 32],
}

/// Why a signed request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// A signing header, or the `Host` header, is absent.
    #[error("request is not signed (missing {0})")]
    Missing(&'static str),
    /// A header is present but is not of its form (a number, a nonce, `v2=` and 64 hex
    /// digits, an authority).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Bare hex: signed by a release that predates this scheme.
    #[error(
        "signed with an older scheme (no target node, no nonce); this node takes only {SCHEME}: \
         upgrade the sender"
    )]
    OldScheme,
    /// The timestamp is outside the accepted window (expired or from the future).
    #[error("timestamp {ts} ms is outside the ±{window} ms window around {now} ms")]
    Expired {
        /// The request's timestamp.
        ts: u64,
        /// The receiver's clock.
        now: u64,
        /// The window.
        window: u64,
    },
    /// The MAC does not match: wrong secret or a modified request.
    #[error("signature does not match")]
    BadSignature,
    /// Signed for another node: its `Host` names neither this node's address nor one of its
    /// configured names.
    #[error("signed for {0}, which is not this node (its address, or a name in cluster.admin_hosts)")]
    OtherNode(String),
}

impl AuthError {
    /// Whether the caller did not authenticate at all, or not in a form this node reads
    /// (401), rather than authenticating wrongly (403).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            AuthError::Missing(_) | AuthError::Malformed(_) | AuthError::OldScheme
        )
    }
}

fn mac(secret: &[u8], req: Signed<'_>, timestamp_ms: u64, nonce: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    for part in [
        DOMAIN,
        req.method.as_bytes(),
        req.host.as_bytes(),
        req.path.as_bytes(),
        timestamp_ms.to_string().as_bytes(),
        nonce.as_bytes(),
    ] {
        mac.update(part);
        mac.update(b"\n");
    }
    mac.update(req.body);
    mac
}

/// The `X-Strata-Signature` value for a request: `v2=` and the hex MAC.
pub fn sign(secret: &[u8], req: Signed<'_>, timestamp_ms: u64, nonce: &str) -> String {
    format!(
        "{SCHEME}={}",
        hex::encode(mac(secret, req, timestamp_ms, nonce).finalize().into_bytes())
    )
}

/// What [`plugin_key`] is the MAC of: names its use, so it is no signature of a request.
const PLUGIN_KEY_DOMAIN: &[u8] = b"strata-plugin-key";

/// The `key=` of the WordPress plugin's `X-Strata-Plugin` header: the first 16 hex digits of
/// the HMAC-SHA256 of `strata-plugin-key` keyed with the cluster secret. A node that
/// computes the same key from its own secret knows the plugin signs its bans for this
/// cluster; the key gives away no more of the secret than a signed request does.
pub fn plugin_key(secret: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(PLUGIN_KEY_DOMAIN);
    let mut out = hex::encode(mac.finalize().into_bytes());
    out.truncate(16);
    out
}

/// A fresh nonce: 32 hex digits.
pub fn nonce() -> String {
    format!("{:016x}{:016x}", crate::ids::random_u64(), crate::ids::random_u64())
}

/// Checks a request's signing headers against the secret.
///
/// `now_ms` is the receiver's Unix time in milliseconds; `window_ms` the accepted skew.
/// Errors: see [`AuthError`]; the checks that need no secret come first.
pub fn verify(
    secret: &[u8],
    req: Signed<'_>,
    got: Received<'_>,
    now_ms: u64,
    window_ms: u64,
) -> Result<Verified, AuthError> {
    let signature = got.signature.ok_or(AuthError::Missing(SIGNATURE_HEADER))?;
    let Some(hex_mac) = signature.strip_prefix(SCHEME).and_then(|s| s.strip_prefix('=')) else {
        let bare_hex = signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_hexdigit());
        return Err(if bare_hex {
            AuthError::OldScheme
        } else {
            AuthError::Malformed(SIGNATURE_HEADER)
        });
    };
    let ts = got.timestamp.ok_or(AuthError::Missing(TIMESTAMP_HEADER))?;
    let nonce = got.nonce.ok_or(AuthError::Missing(NONCE_HEADER))?;
    let ts: u64 = Some(ts)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or(AuthError::Malformed(TIMESTAMP_HEADER))?;
    if !NONCE_LEN.contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AuthError::Malformed(NONCE_HEADER));
    }
    let mut given = [0u8; 32];
    hex::decode_to_slice(hex_mac, &mut given).map_err(|_| AuthError::Malformed(SIGNATURE_HEADER))?;
    if ts.abs_diff(now_ms) > window_ms {
        return Err(AuthError::Expired {
            ts,
            now: now_ms,
            window: window_ms,
        });
    }
    mac(secret, req, ts, nonce)
        .verify_slice(&given)
        .map_err(|_| AuthError::BadSignature)?;
    Ok(Verified {
        timestamp_ms: ts,
        mac: given,
    })
}

/// A request's `Host` header, the host its signature names.
///
/// Errors: absent ([`AuthError::Missing`]) or not text ([`AuthError::Malformed`]).
pub fn host_header(headers: &http::HeaderMap) -> Result<&str, AuthError> {
    let host = headers.get(http::header::HOST).ok_or(AuthError::Missing("host"))?;
    host.to_str().map_err(|_| AuthError::Malformed("host"))
}

/// An admin listener as a sender names it: a host (name or IP address) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    /// Lower case; an IPv6 address without its brackets.
    host: String,
    /// The port, 80 when the authority gives none.
    port: u16,
}

impl Audience {
    /// Reads an authority (`host[:port]`, `[v6][:port]`, as in a URL or a `Host` header);
    /// `None` when it is not one, or carries user information.
    pub fn parse(authority: &str) -> Option<Audience> {
        if authority.contains('@') {
            return None;
        }
        let a: http::uri::Authority = authority.parse().ok()?;
        let host = a.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return None;
        }
        Some(Audience {
            host: host.to_ascii_lowercase(),
            port: a.port_u16().unwrap_or(80),
        })
    }

    /// Whether this names the socket address `local` (an IPv4 address and its IPv6-mapped
    /// form are one).
    pub fn is_address(&self, local: SocketAddr) -> bool {
        self.port == local.port()
            && self
                .host
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.to_canonical() == local.ip().to_canonical())
    }
}

impl std::fmt::Display for Audience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Checks that a request's `Host` names this node: the address its connection arrived at
/// (`local`), or one of `names` (what else senders call this node's admin listener).
///
/// Errors: [`AuthError::Malformed`] when `host` is no authority, [`AuthError::OtherNode`]
/// when it names something else.
pub fn check_audience(host: &str, local: SocketAddr, names: &[Audience]) -> Result<(), AuthError> {
    let audience = Audience::parse(host).ok_or(AuthError::Malformed("host"))?;
    if audience.is_address(local) || names.contains(&audience) {
        Ok(())
    } else {
        Err(AuthError::OtherNode(audience.to_string()))
    }
}

/// An admin listener's answer to a [`signed_request`]: its status and its body (empty when
/// the body could not be read to its end).
pub async fn answer<B: http_body_util::BodyExt>(resp: http::Response<B>) -> (http::StatusCode, bytes::Bytes) {
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, body)
}

/// Why a signed request could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// `base` + `path` is not a URI.
    #[error("{0}")]
    Http(#[from] http::Error),
    /// The URL names no host to sign for.
    #[error("{0:?} is not an admin URL with a host, such as http://10.0.0.2:9080")]
    NoHost(String),
}

/// A signed request to `base` (an admin URL such as `http://10.0.0.2:9080`) + `path` (path
/// and query), stamped with the current time and a fresh nonce, its `Host` set to the URL's
/// authority: what every Strata program sends to an admin listener. A body is sent as JSON.
///
/// Errors: `base` + `path` is not a valid URI, or names no host.
pub fn signed_request(
    secret: &[u8],
    method: http::Method,
    base: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<http::Request<http_body_util::Full<bytes::Bytes>>, RequestError> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let uri: http::Uri = url.parse().map_err(http::Error::from)?;
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .ok_or(RequestError::NoHost(url))?;
    let ts = crate::ids::unix_ms();
    let nonce = nonce();
    let sig = sign(
        secret,
        Signed {
            method: method.as_str(),
            host: &host,
            path,
            body: &body,
        },
        ts,
        &nonce,
    );
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::HOST, host)
        .header(TIMESTAMP_HEADER, ts.to_string())
        .header(NONCE_HEADER, nonce)
        .header(SIGNATURE_HEADER, sig);
    if !body.is_empty() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    Ok(req.body(http_body_util::Full::new(bytes::Bytes::from(body)))?)
}

/// A [`signed_request`] `POST`.
///
/// Errors: as [`signed_request`].
pub fn signed_post(
    secret: &[u8],
    base: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<http::Request<http_body_util::Full<bytes::Bytes>>, RequestError> {
    signed_request(secret, http::Method::POST, base, path, body)
}

/// Reads a secret from the contents of a secret file: surrounding whitespace is ignored.
pub fn parse_secret(contents: &str) -> Option<Vec<u8>> {
    let s = contents.trim();
    (s.len() >= MIN_SECRET_LEN).then(|| s.as_bytes().to_vec())
}

/// Why a secret file gave no secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("cannot read {}: {cause}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        cause: std::io::Error,
    },
    /// The file holds fewer than [`MIN_SECRET_LEN`] characters once surrounding whitespace is
    /// dropped.
    #[error("{} holds fewer than {MIN_SECRET_LEN} characters", path.display())]
    TooShort {
        /// The file.
        path: PathBuf,
    },
}

/// Reads the cluster secret from the file at `path` (see [`parse_secret`]).
///
/// Errors: the file cannot be read, or its secret is too short.
pub fn load_secret(path: &Path) -> Result<Vec<u8>, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|cause| SecretError::Unreadable {
        path: path.to_path_buf(),
        cause,
    })?;
    parse_secret(&text).ok_or_else(|| SecretError::TooShort {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123";
    const NONCE: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn plugin_key_is_a_truncated_mac_of_its_domain() {
        // hmac.new(SECRET, b"strata-plugin-key", sha256).hexdigest()[:16] in Python.
        assert_eq!(plugin_key(SECRET), "0f9be4e5213846a9");
        assert_ne!(plugin_key(b"another-secret-0123456789"), plugin_key(SECRET));
    }

    fn req<'a>(method: &'a str, path: &'a str, body: &'a [u8]) -> Signed<'a> {
        Signed {
            method,
            host: "10.0.0.2:9080",
            path,
            body,
        }
    }

    fn got<'a>(ts: &'a str, nonce: &'a str, signature: &'a str) -> Received<'a> {
        Received {
            timestamp: Some(ts),
            nonce: Some(nonce),
            signature: Some(signature),
        }
    }

    #[test]
    fn signed_requests_verify_where_they_are_sent() {
        let req = signed_post(SECRET, "http://127.0.0.1:9080/", "/ban?wait=5", b"{}".to_vec()).unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:9080/ban?wait=5");
        let host = host_header(req.headers()).unwrap();
        assert_eq!(host, "127.0.0.1:9080");
        let received = Received::of(req.headers());
        let now = received.timestamp.unwrap().parse().unwrap();
        let signed = Signed {
            method: "POST",
            host,
            path: "/ban?wait=5",
            body: b"{}",
        };
        let ok = verify(SECRET, signed, received, now, DEFAULT_WINDOW_MS).unwrap();
        assert_eq!(ok.timestamp_ms, now);
        assert!(received.signature.unwrap().starts_with("v2="));
        assert_eq!(received.nonce.map(str::len), Some(32));
        let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
        assert_eq!(h("content-type"), Some("application/json"));
        // Every request gets its own nonce, so its own signature.
        let again = signed_post(SECRET, "http://127.0.0.1:9080", "/ban?wait=5", b"{}".to_vec()).unwrap();
        assert_ne!(Received::of(again.headers()).nonce, received.nonce);
        assert_ne!(Received::of(again.headers()).signature, received.signature);
        // A GET is signed the same way, without a content type.
        let get = signed_request(
            SECRET,
            http::Method::GET,
            "http://[::1]:9080",
            "/lookup?url=/",
            Vec::new(),
        )
        .unwrap();
        assert_eq!(host_header(get.headers()), Ok("[::1]:9080"));
        assert!(get.headers().get("content-type").is_none());
        assert!(matches!(
            signed_post(SECRET, "/no-host", "/ban", Vec::new()),
            Err(RequestError::NoHost(_))
        ));
    }

    #[test]
    fn the_signed_string_is_the_documented_one() {
        let mut m = HmacSha256::new_from_slice(SECRET).unwrap();
        m.update(b"strata-admin-v2\nPOST\n10.0.0.2:9080\n/purge\n1000\n00112233445566778899aabbccddeeff\n{}");
        let expected = format!("v2={}", hex::encode(m.finalize().into_bytes()));
        assert_eq!(sign(SECRET, req("POST", "/purge", b"{}"), 1000, NONCE), expected);
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let sig = sign(SECRET, req("POST", "/purge", b"{}"), 1000, NONCE);
        let ok = verify(
            SECRET,
            req("POST", "/purge", b"{}"),
            got("1000", NONCE, &sig),
            1010,
            30_000,
        );
        assert_eq!(ok.map(|v| v.timestamp_ms), Ok(1000));
        let other_host = Signed {
            host: "10.0.0.3:9080",
            ..req("POST", "/purge", b"{}")
        };
        for r in [
            req("GET", "/purge", b"{}"),
            req("POST", "/purge?x", b"{}"),
            req("POST", "/purge", b"{ }"),
            other_host,
        ] {
            let got = verify(SECRET, r, got("1000", NONCE, &sig), 1000, 30_000);
            assert_eq!(got, Err(AuthError::BadSignature));
        }
        let r = req("POST", "/purge", b"{}");
        let wrong_secret = verify(b"another-secret-value", r, got("1000", NONCE, &sig), 1000, 30_000);
        assert_eq!(wrong_secret, Err(AuthError::BadSignature));
        let other_ts = verify(SECRET, r, got("1001", NONCE, &sig), 1000, 30_000);
        assert_eq!(other_ts, Err(AuthError::BadSignature));
        let other_nonce = verify(
            SECRET,
            r,
            got("1000", "00112233445566778899aabbccddeefe", &sig),
            1000,
            30_000,
        );
        assert_eq!(other_nonce, Err(AuthError::BadSignature));
    }

    #[test]
    fn the_hex_in_any_case_is_one_signature() {
        let r = req("POST", "/ban", b"{}");
        let sig = sign(SECRET, r, 1000, NONCE);
        let lower = verify(SECRET, r, got("1000", NONCE, &sig), 1000, 30_000).unwrap();
        let upper = format!("v2={}", sig[3..].to_ascii_uppercase());
        let mixed: String = sig
            .chars()
            .enumerate()
            .map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c })
            .collect::<String>()
            .replacen("V2=", "v2=", 1);
        for variant in [upper, mixed] {
            assert_ne!(variant, sig);
            let v = verify(SECRET, r, got("1000", NONCE, &variant), 1000, 30_000).unwrap();
            assert_eq!(v.mac, lower.mac, "{variant}");
        }
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let sig = sign(SECRET, req("POST", "/purge", b""), 100_000, NONCE);
        for now in [130_001, 69_999] {
            let got = verify(
                SECRET,
                req("POST", "/purge", b""),
                got("100000", NONCE, &sig),
                now,
                30_000,
            );
            assert!(matches!(got, Err(AuthError::Expired { .. })), "{got:?}");
        }
    }

    #[test]
    fn missing_malformed_and_old_headers_are_unauthenticated() {
        let r = req("POST", "/", b"");
        let sig = sign(SECRET, r, 0, NONCE);
        let cases = [
            (Received::default(), AuthError::Missing(SIGNATURE_HEADER)),
            (
                Received {
                    timestamp: None,
                    ..got("0", NONCE, &sig)
                },
                AuthError::Missing(TIMESTAMP_HEADER),
            ),
            (
                Received {
                    nonce: None,
                    ..got("0", NONCE, &sig)
                },
                AuthError::Missing(NONCE_HEADER),
            ),
            (got("x", NONCE, &sig), AuthError::Malformed(TIMESTAMP_HEADER)),
            (got("+0", NONCE, &sig), AuthError::Malformed(TIMESTAMP_HEADER)),
            (got("0", "short", &sig), AuthError::Malformed(NONCE_HEADER)),
            (
                got("0", "0011223344556677-899aabbccddeeff", &sig),
                AuthError::Malformed(NONCE_HEADER),
            ),
            (got("0", NONCE, "v2=zz"), AuthError::Malformed(SIGNATURE_HEADER)),
            (
                got("0", NONCE, &sig[..sig.len() - 2]),
                AuthError::Malformed(SIGNATURE_HEADER),
            ),
            (got("0", NONCE, "v3=00"), AuthError::Malformed(SIGNATURE_HEADER)),
            (got("0", NONCE, &sig[3..]), AuthError::OldScheme),
        ];
        for (received, expected) in cases {
            let e = verify(SECRET, r, received, 0, 30_000).unwrap_err();
            assert_eq!(e, expected, "{received:?}");
            assert!(e.is_unauthenticated(), "{e}");
        }
        assert!(!AuthError::BadSignature.is_unauthenticated());
        assert!(!AuthError::OtherNode("x:1".into()).is_unauthenticated());
    }

    #[test]
    fn a_request_is_for_the_node_its_host_names() {
        let local: SocketAddr = "10.0.0.2:9080".parse().unwrap();
        assert_eq!(check_audience("10.0.0.2:9080", local, &[]), Ok(()));
        let mapped: SocketAddr = "[::ffff:10.0.0.2]:9080".parse().unwrap();
        assert_eq!(check_audience("10.0.0.2:9080", mapped, &[]), Ok(()));
        assert_eq!(
            check_audience("10.0.0.3:9080", local, &[]),
            Err(AuthError::OtherNode("10.0.0.3:9080".into()))
        );
        assert!(check_audience("10.0.0.2:9081", local, &[]).is_err());
        assert!(check_audience("10.0.0.2", local, &[]).is_err(), "port 80 by default");
        let on_80: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert_eq!(check_audience("10.0.0.2", on_80, &[]), Ok(()));
        let names = [Audience::parse("Node2.example.internal:9080").unwrap()];
        assert_eq!(check_audience("node2.EXAMPLE.internal:9080", local, &names), Ok(()));
        assert!(check_audience("node3.example.internal:9080", local, &names).is_err());
        let v6: SocketAddr = "[::1]:9080".parse().unwrap();
        assert_eq!(check_audience("[::1]:9080", v6, &[]), Ok(()));
        assert_eq!(check_audience("", local, &[]), Err(AuthError::Malformed("host")));
        assert_eq!(Audience::parse("user@10.0.0.2:9080"), None);
        assert_eq!(
            Audience::parse("[::1]:9080").map(|a| a.to_string()),
            Some("[::1]:9080".into())
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(parse_secret("short\n"), None);
        assert_eq!(parse_secret(" 0123456789abcdef \n"), Some(b"0123456789abcdef".to_vec()));
    }

    /// A file under the temporary directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn with(name: &str, contents: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!("strata-wire-{name}-{}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn secret_files_are_trimmed_and_checked() {
        let good = TempFile::with("secret-good", "  0123456789abcdef0123\n\n");
        assert_eq!(load_secret(&good.0).unwrap(), b"0123456789abcdef0123".to_vec());

        let short = TempFile::with("secret-short", " 0123456789abcde \n");
        let e = load_secret(&short.0).unwrap_err();
        assert!(matches!(e, SecretError::TooShort { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("{} holds fewer than 16 characters", short.0.display())
        );

        let missing = std::env::temp_dir().join("strata-wire-no-such-secret");
        let e = load_secret(&missing).unwrap_err();
        assert!(matches!(e, SecretError::Unreadable { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read {}: ", missing.display())),
            "{e}"
        );
    }
}
