//! Signing of admin requests with the cluster secret.
//!
//! A request is signed with HMAC-SHA256 over `METHOD \n PATH \n TIMESTAMP \n BODY`, where PATH
//! includes the query string and TIMESTAMP is Unix seconds. The receiver recomputes the MAC,
//! compares in constant time and refuses timestamps outside a window (replay protection).

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying the Unix timestamp (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "x-strata-timestamp";
/// Header carrying the hex HMAC-SHA256 signature.
pub const SIGNATURE_HEADER: &str = "x-strata-signature";
/// How far a signed timestamp may be from the receiver's clock, in seconds.
pub const DEFAULT_WINDOW_SECS: u64 = 30;
/// The shortest secret accepted: shorter ones are guessable.
pub const MIN_SECRET_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// The parts of an admin request that the signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// Path and query, e.g. `/purge?url=/hello/`.
    pub path: &'a str,
    /// The request body as sent.
    pub body: &'a [u8],
}

/// Why a signed request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The timestamp or signature header is absent.
    #[error("request is not signed (missing {0})")]
    Missing(&'static str),
    /// A header is present but is not a number / not hex.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The timestamp is outside the accepted window (expired or from the future).
    #[error("timestamp {ts} is outside the ±{window}s window around {now}")]
    Expired { ts: u64, now: u64, window: u64 },
    /// The MAC does not match: wrong secret or a modified request.
    #[error("signature does not match")]
    BadSignature,
}

impl AuthError {
    /// Whether the caller did not authenticate at all (401) rather than authenticating
    /// wrongly (403).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, AuthError::Missing(_) | AuthError::Malformed(_))
    }
}

fn mac(secret: &[u8], req: Signed<'_>, timestamp: u64) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(req.method.as_bytes());
    mac.update(b"\n");
    mac.update(req.path.as_bytes());
    mac.update(b"\n");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(req.body);
    mac
}

/// The hex signature for a request.
pub fn sign(secret: &[u8], req: Signed<'_>, timestamp: u64) -> String {
    hex::encode(mac(secret, req, timestamp).finalize().into_bytes())
}

/// Checks a request's timestamp and signature header values against the secret.
///
/// `now` is the receiver's Unix time in seconds; `window` the accepted skew in seconds.
pub fn verify(
    secret: &[u8],
    req: Signed<'_>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    now: u64,
    window: u64,
) -> Result<u64, AuthError> {
    let ts = timestamp.ok_or(AuthError::Missing(TIMESTAMP_HEADER))?;
    let sig = signature.ok_or(AuthError::Missing(SIGNATURE_HEADER))?;
    let ts: u64 = ts.trim().parse().map_err(|_| AuthError::Malformed(TIMESTAMP_HEADER))?;
    let sig = hex::decode(sig.trim()).map_err(|_| AuthError::Malformed(SIGNATURE_HEADER))?;
    if ts.abs_diff(now) > window {
        return Err(AuthError::Expired { ts, now, window });
    }
    mac(secret, req, ts)
        .verify_slice(&sig)
        .map_err(|_| AuthError::BadSignature)?;
    Ok(ts)
}

/// An admin listener's answer to a [`signed_post`]: its status and its body (empty when the
/// body could not be read to its end).
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

/// A signed JSON `POST` to `base` (an admin URL such as `http://10.0.0.2:9080`) + `path`
/// (path and query), stamped with the current time: what every Strata program sends to an
/// admin listener.
///
/// Errors: `base` + `path` is not a valid URI.
pub fn signed_post(
    secret: &[u8],
    base: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<http::Request<http_body_util::Full<bytes::Bytes>>, http::Error> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let sig = sign(
        secret,
        Signed {
            method: "POST",
            path,
            body: &body,
        },
        ts,
    );
    http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("{}{path}", base.trim_end_matches('/')))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, ts.to_string())
        .header(SIGNATURE_HEADER, sig)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
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

    fn req<'a>(method: &'a str, path: &'a str, body: &'a [u8]) -> Signed<'a> {
        Signed { method, path, body }
    }

    #[test]
    fn signed_posts_verify() {
        let req = signed_post(SECRET, "http://127.0.0.1:9080/", "/ban?wait=5", b"{}".to_vec()).unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:9080/ban?wait=5");
        let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
        let now = h(TIMESTAMP_HEADER).unwrap().parse().unwrap();
        let ok = verify(
            SECRET,
            Signed {
                method: "POST",
                path: "/ban?wait=5",
                body: b"{}",
            },
            h(TIMESTAMP_HEADER),
            h(SIGNATURE_HEADER),
            now,
            30,
        );
        assert_eq!(ok, Ok(now));
        assert_eq!(h("content-type"), Some("application/json"));
    }

    #[test]
    fn signed_request_verifies() {
        let sig = sign(SECRET, req("POST", "/purge", b"{}"), 1000);
        let ok = verify(SECRET, req("POST", "/purge", b"{}"), Some("1000"), Some(&sig), 1010, 30);
        assert_eq!(ok, Ok(1000));
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let sig = sign(SECRET, req("POST", "/purge", b"{}"), 1000);
        for r in [
            req("GET", "/purge", b"{}"),
            req("POST", "/purge?x", b"{}"),
            req("POST", "/purge", b"{ }"),
        ] {
            let got = verify(SECRET, r, Some("1000"), Some(&sig), 1000, 30);
            assert_eq!(got, Err(AuthError::BadSignature));
        }
        let got = verify(
            b"another-secret-value",
            req("POST", "/purge", b"{}"),
            Some("1000"),
            Some(&sig),
            1000,
            30,
        );
        assert_eq!(got, Err(AuthError::BadSignature));
        let got = verify(SECRET, req("POST", "/purge", b"{}"), Some("1001"), Some(&sig), 1000, 30);
        assert_eq!(got, Err(AuthError::BadSignature));
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let sig = sign(SECRET, req("POST", "/purge", b""), 1000);
        for now in [1031, 969] {
            let got = verify(SECRET, req("POST", "/purge", b""), Some("1000"), Some(&sig), now, 30);
            assert!(matches!(got, Err(AuthError::Expired { .. })));
        }
    }

    #[test]
    fn missing_and_malformed_headers_are_unauthenticated() {
        let r = req("POST", "/", b"");
        assert!(verify(SECRET, r, None, Some("ab"), 0, 30)
            .unwrap_err()
            .is_unauthenticated());
        assert!(verify(SECRET, r, Some("x"), Some("ab"), 0, 30)
            .unwrap_err()
            .is_unauthenticated());
        assert!(verify(SECRET, r, Some("0"), Some("zz"), 0, 30)
            .unwrap_err()
            .is_unauthenticated());
        assert!(verify(SECRET, r, Some("0"), None, 0, 30)
            .unwrap_err()
            .is_unauthenticated());
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
