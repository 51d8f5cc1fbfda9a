//! The command-line side of the admin API: sign a purge and send it to a node.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_wire::auth;

/// What to invalidate.
#[derive(Debug, Clone)]
pub enum Target {
    /// One URL (absolute, or a path with a host) with all its variants.
    Url { url: String, host: Option<String> },
    /// Everything.
    All,
}

/// Why a purge could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The node could not be reached.
    #[error("cannot reach {addr}: {cause}")]
    Unreachable { addr: SocketAddr, cause: String },
    /// The node refused or failed the request.
    #[error("{addr} answered {status}: {body}")]
    Refused {
        addr: SocketAddr,
        status: StatusCode,
        body: String,
    },
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The path and query of the admin request for a target.
pub fn purge_path(target: &Target) -> String {
    match target {
        Target::All => "/purge?all=1".to_string(),
        Target::Url { url, host: None } => format!("/purge?url={}", encode(url)),
        Target::Url { url, host: Some(h) } => {
            format!("/purge?url={}&host={}", encode(url), encode(h))
        }
    }
}

/// Signs a purge with `secret` and sends it to the admin listener at `addr`; returns the
/// node's answer.
pub async fn send_purge(addr: SocketAddr, secret: &[u8], target: &Target) -> Result<String, SendError> {
    let path = purge_path(target);
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let sig = auth::sign(
        secret,
        auth::Signed {
            method: "POST",
            path: &path,
            body: b"",
        },
        ts,
    );
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{path}"))
        .header(auth::TIMESTAMP_HEADER, ts.to_string())
        .header(auth::SIGNATURE_HEADER, sig)
        .body(Full::new(Bytes::new()))
        .map_err(|e| SendError::Unreachable {
            addr,
            cause: e.to_string(),
        })?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client.request(req).await.map_err(|e| SendError::Unreachable {
        addr,
        cause: crate::origin::error_chain(&e),
    })?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).trim().to_string();
    if status.is_success() {
        Ok(body)
    } else {
        Err(SendError::Refused { addr, status, body })
    }
}
