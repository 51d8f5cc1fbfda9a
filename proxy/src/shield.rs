//! Shielding: one origin render per key for the whole cluster.
//!
//! Each cache key has a *home* node, chosen by rendezvous (highest-random-weight) hashing
//! over the live members (this node and the siblings whose last sync succeeded), each
//! named by its `cluster.node_id`, so every node that sees the same members picks the same
//! home. A node that misses a key whose home is another live node asks the home
//! (`POST /shield` on its admin listener, signed) instead of the origin; the home answers
//! from its cache or from its own origin fetch, coalesced with its visitors' misses. See
//! docs/bans-and-cluster.md#shielding.
//!
//! This module holds the pure parts (the home choice, the wire format of a shield request
//! and of the answer's extra fields) and the client that asks a home, with its fallbacks.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use strata_wire::auth;
use strata_wire::ban::Ban;

/// The admin path a node asks a key's home on.
pub const SHIELD_PATH: &str = "/shield";
/// Answer field: how long (ms) what it answers is still fresh at the home; the asking node
/// keeps it fresh no longer.
pub static FRESH_MS: HeaderName = HeaderName::from_static("x-strata-shield-fresh-ms");
/// Answer field: the tags the home gave the object (tag headers are stripped when stored).
pub static TAGS: HeaderName = HeaderName::from_static("x-strata-shield-tags");
/// Answer field: how the home answered (`hit`, `filled`, `pass`), for logs and metrics; what
/// tells a shield answer from an error of the admin listener.
pub static SERVED: HeaderName = HeaderName::from_static("x-strata-shield");
/// `SERVED` of a home's `503` to a background refresh it had no place for.
pub const DEFERRED: &str = "deferred";

/// The answer fields a home adds, never stored nor delivered by the asking node.
pub static ANSWER_FIELDS: [&HeaderName; 3] = [&FRESH_MS, &TAGS, &SERVED];
/// Most bans a shield request lists.
pub const MAX_LISTED_BANS: usize = 256;

/// A fill request sent to a key's home: what the fill would send to the origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShieldRequest {
    /// The normalised path and query.
    pub path: String,
    /// The request headers the fill sends to the origin (the host among them), in order.
    pub headers: Vec<(String, String)>,
    /// The bans the asking node applied within `cluster.shield_window` before asking, with
    /// their ids: the home answers only with an object none of them can have made old.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bans: Vec<Ban>,
    /// More bans were applied in the window than listed: the home answers with a fetch of
    /// its own begun after the request came, never with what it held before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overflow: bool,
    /// A background refresh (a stale copy is being served meanwhile): the home fetches it
    /// under its own budget's background class, and defers it (answers `deferred`) when that
    /// has no place, rather than taking a visitor's place.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub background: bool,
}

impl ShieldRequest {
    /// The shield request for a fill request; `None` when a header value is not text (such
    /// a fill goes to the origin).
    pub fn of<B>(req: &Request<B>) -> Option<ShieldRequest> {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        let headers = req
            .headers()
            .iter()
            .map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect::<Option<Vec<_>>>()?;
        Some(ShieldRequest {
            path,
            headers,
            bans: Vec::new(),
            overflow: false,
            background: false,
        })
    }

    /// Its headers as a map; `None` when one is not a valid header.
    pub fn header_map(&self) -> Option<HeaderMap> {
        let mut map = HeaderMap::with_capacity(self.headers.len());
        for (n, v) in &self.headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            );
        }
        Some(map)
    }
}

/// The home of `key` among `members` (node ids): the member with the highest weight for
/// the key. Every node computes the same home for the same members, in whatever order it
/// lists them; when a member leaves, only the keys it was home of move. `None` when
/// `members` is empty.
pub fn home<'a>(key: &str, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    members.into_iter().map(|m| (weight(m, key), m)).max().map(|(_, m)| m)
}

/// The rendezvous weight of a member for a key: a fixed hash (the same on every node and
/// every build) of both.
fn weight(member: &str, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in member.as_bytes().iter().chain(&[0xff]).chain(key.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV-1a mixes its last bytes poorly: finish with splitmix64's avalanche.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Why a node filled from the origin instead of from a key's home (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The home could not be reached (connection refused, reset, unreachable).
    Down,
    /// The home sent no answer head within `cluster.shield_timeout`.
    Slow,
    /// The home answered 5xx, refused the signature, or broke off its answer.
    Error,
    /// A ban that arrived here while the home was asked selects its answer.
    Banned,
    /// Enough shield requests were in flight already.
    Busy,
    /// A background refresh the home had no place for: not a fallback; the stale copy is
    /// served on and a later request refreshes it.
    Deferred,
}

impl Fallback {
    /// Label for logs and metrics (`strata_proxy_shield_requests_total{result}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Down => "fallback_down",
            Fallback::Slow => "fallback_slow",
            Fallback::Error => "fallback_error",
            Fallback::Banned => "fallback_banned",
            Fallback::Busy => "fallback_busy",
            Fallback::Deferred => "deferred",
        }
    }
}

/// What a home's answer says besides the origin's own fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answered {
    /// Freshness left at the home, when it answered from a stored object.
    pub fresh_for: Option<Duration>,
    /// The object's tags at the home.
    pub tags: Vec<String>,
    /// How the home answered.
    pub served: String,
}

impl Answered {
    /// Takes the answer fields out of a home's answer headers; `None` without the field
    /// saying how the home served it (not a shield answer).
    pub fn take(headers: &mut HeaderMap) -> Option<Answered> {
        let text = |h: &HeaderMap, n: &HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let served = text(headers, &SERVED)?;
        let fresh_for = text(headers, &FRESH_MS)
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis);
        let tags = text(headers, &TAGS)
            .map(|t| t.split(' ').filter(|t| !t.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        for name in ANSWER_FIELDS {
            headers.remove(name);
        }
        Some(Answered {
            fresh_for,
            tags,
            served,
        })
    }
}

/// Asks homes: pooled connections to the siblings' admin listeners, each request signed
/// afresh, at most `limit` in flight.
pub struct ShieldClient {
    client: Client<HttpConnector, http_body_util::Full<bytes::Bytes>>,
    /// Places for shield requests in flight: past them, fills go to the origin, so peer
    /// fills never take all of a home's admin connections.
    permits: Arc<tokio::sync::Semaphore>,
}

/// A place among the shield requests in flight, held until the answer's body is read.
pub type Permit = tokio::sync::OwnedSemaphorePermit;

impl ShieldClient {
    /// A client allowing `limit` shield requests in flight at once.
    pub fn new(limit: usize) -> ShieldClient {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(1)));
        ShieldClient {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .build(http),
            permits: Arc::new(tokio::sync::Semaphore::new(limit.max(1))),
        }
    }

    /// Sends `ask` to the home at `base` (its admin URL), signed with `secret`, and waits at
    /// most `timeout` for the answer head. Errors: why the caller fills from the origin.
    pub async fn ask(
        &self,
        secret: &[u8],
        base: &str,
        ask: &ShieldRequest,
        timeout: Duration,
    ) -> Result<(Response<Incoming>, Answered, Permit), (Fallback, String)> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| (Fallback::Busy, "too many shield requests in flight".to_string()))?;
        let body = serde_json::to_vec(ask).map_err(|e| (Fallback::Error, e.to_string()))?;
        let req = auth::signed_post(secret, base, SHIELD_PATH, body).map_err(|e| (Fallback::Error, e.to_string()))?;
        let resp = match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => return Err((Fallback::Slow, format!("no answer within {timeout:?}"))),
            Ok(Err(e)) => {
                let why = crate::origin::error_chain(&e);
                let kind = if e.is_connect() {
                    Fallback::Down
                } else {
                    Fallback::Error
                };
                return Err((kind, why));
            }
            Ok(Ok(r)) => r,
        };
        let (mut parts, body) = resp.into_parts();
        if parts.status == StatusCode::SERVICE_UNAVAILABLE && parts.headers.get(&SERVED).is_some_and(|v| v == DEFERRED)
        {
            return Err((
                Fallback::Deferred,
                "the home had no place for a background refresh".into(),
            ));
        }
        let answered = match Answered::take(&mut parts.headers) {
            Some(a) if !parts.status.is_server_error() => a,
            _ => return Err((Fallback::Error, refusal(parts.status, body).await)),
        };
        Ok((Response::from_parts(parts, body), answered, permit))
    }
}

/// What a home that refused or failed said, for the log.
async fn refusal(status: StatusCode, body: Incoming) -> String {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, 512).collect();
    let text = match tokio::time::timeout(Duration::from_millis(200), limited).await {
        Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
        _ => String::new(),
    };
    format!("answered {status}: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("example.com/2026/04/post-{i}/")).collect()
    }

    #[test]
    fn every_order_of_the_members_gives_the_same_home() {
        let a = ["node-1", "node-2", "node-3"];
        let b = ["node-3", "node-1", "node-2"];
        for k in keys(200) {
            assert_eq!(home(&k, a), home(&k, b), "{k}");
        }
        assert_eq!(home("k", [] as [&str; 0]), None);
        assert_eq!(home("k", ["only"]), Some("only"));
    }

    #[test]
    fn homes_spread_evenly() {
        let members = ["node-1", "node-2", "node-3", "node-4"];
        let mut count = std::collections::HashMap::new();
        let n = 8_000;
        for k in keys(n) {
            *count.entry(home(&k, members).unwrap()).or_insert(0usize) += 1;
        }
        for m in members {
            let share = count.get(m).copied().unwrap_or(0) as f64 / n as f64;
            assert!(
                (0.2..0.3).contains(&share),
                "{m} is home of {share:.3} of the keys: {count:?}"
            );
        }
    }

    #[test]
    fn when_a_member_leaves_only_its_keys_move() {
        let all = ["a", "b", "c", "d", "e"];
        let without_c = ["a", "b", "d", "e"];
        let mut moved = 0;
        for k in keys(5_000) {
            let before = home(&k, all).unwrap();
            let after = home(&k, without_c).unwrap();
            if before == "c" {
                moved += 1;
                assert_ne!(after, "c");
            } else {
                assert_eq!(before, after, "{k} moved though its home stayed");
            }
        }
        assert!(moved > 700, "c was home of a fair share ({moved})");
        // And when it comes back, the same keys come home.
        for k in keys(500) {
            assert_eq!(home(&k, all), home(&k, ["e", "d", "c", "b", "a"]));
        }
    }

    #[test]
    fn requests_and_answer_fields_round_trip() {
        let req = Request::get("http://origin/a/?b=1")
            .header("host", "example.com")
            .header("x-forwarded-for", "192.0.2.1")
            .body(())
            .unwrap();
        let ask = ShieldRequest::of(&req).unwrap();
        assert_eq!(ask.path, "/a/?b=1");
        let map = ask.header_map().unwrap();
        assert_eq!(map["host"], "example.com");
        assert_eq!(map.len(), 2);
        let json = serde_json::to_string(&ask).unwrap();
        assert!(!json.contains("bans") && !json.contains("overflow"), "{json}");
        assert_eq!(serde_json::from_str::<ShieldRequest>(&json).unwrap(), ask);
        let listed = ShieldRequest {
            bans: vec![Ban {
                id: 42,
                soft: true,
                ..Ban::new(strata_wire::ban::Kind::Tag, "list")
            }],
            overflow: true,
            ..ask.clone()
        };
        let json = serde_json::to_string(&listed).unwrap();
        assert_eq!(serde_json::from_str::<ShieldRequest>(&json).unwrap(), listed);

        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/html"));
        assert_eq!(Answered::take(&mut h.clone()), None, "no shield field: not an answer");
        h.insert(&FRESH_MS, HeaderValue::from_static("1500"));
        h.insert(&TAGS, HeaderValue::from_static("post:5 html"));
        h.insert(&SERVED, HeaderValue::from_static("hit"));
        let a = Answered::take(&mut h).unwrap();
        assert_eq!(a.fresh_for, Some(Duration::from_millis(1500)));
        assert_eq!(a.tags, ["post:5", "html"]);
        assert_eq!(a.served, "hit");
        assert_eq!(h.len(), 1, "the answer fields are taken out");
    }
}
