//! The command-line side of the admin API: sign a ban and send it to a node.

use std::net::SocketAddr;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_wire::auth;
use strata_wire::ban::{Ban, BAN_PATH};

/// Why a ban could not be delivered.
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

/// The path and query of the ban request.
pub fn ban_path(wait_ms: Option<u64>) -> String {
    match wait_ms {
        Some(ms) => format!("{BAN_PATH}?wait={ms}"),
        None => BAN_PATH.to_string(),
    }
}

/// Signs a ban with `secret` and sends it to the admin listener at `addr`, which applies it
/// and broadcasts it; with `wait_ms`, the node answers once every sibling acknowledged it
/// (or the time passed). Returns the node's JSON answer.
pub async fn send_ban(addr: SocketAddr, secret: &[u8], ban: &Ban, wait_ms: Option<u64>) -> Result<String, SendError> {
    let unreachable = |cause: String| SendError::Unreachable { addr, cause };
    let path = ban_path(wait_ms);
    let body = serde_json::to_vec(ban).map_err(|e| unreachable(e.to_string()))?;
    let req =
        auth::signed_post(secret, &format!("http://{addr}"), &path, body).map_err(|e| unreachable(e.to_string()))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .request(req)
        .await
        .map_err(|e| unreachable(crate::origin::error_chain(&e)))?;
    let (status, body) = auth::answer(resp).await;
    let body = String::from_utf8_lossy(&body).trim().to_string();
    if status.is_success() {
        Ok(body)
    } else {
        Err(SendError::Refused { addr, status, body })
    }
}
