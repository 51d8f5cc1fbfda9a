//! The admin listener: health, metrics, status, bans and the node-to-node sync. Never the
//! public port.
//!
//! `/status` is a live page for a browser (text for `Accept: text/plain` and curl) fed by
//! `/status.json`; both read the exposition `/metrics` serves (see [`crate::status`]), and a
//! task samples it once a second for the page's charts.
//!
//! `cluster.admin_allow` limits who may use the listener at all (connections from elsewhere
//! are refused as they are accepted, and again per request, as a reload may change the
//! list). Every request that changes something (`POST /ban`, `POST /purge`,
//! `POST /cluster/sync`, the syncer's `POST /comments/…`), and a sibling's fill of a key this
//! node is home of (`POST /shield`), is signed with the cluster secret
//! for this node (see `strata_wire::auth`): unsigned, malformed or signed with an older
//! scheme → 401; a wrong signature, an expired timestamp, a signature for another node, one
//! made before this node started, or one already used → 403. The reads that show what the
//! cache and the cluster hold (`/lookup`, `/cluster`) take a signature too unless the client
//! is one `cluster.admin_allow` names (a loopback address when it names none); `/healthz`,
//! `/metrics`, `/status` and `/status.json` need none.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use strata_wire::auth;
use strata_wire::ban::{Ban, SyncRequest, BAN_PATH, MAX_BANS_PER_REQUEST, SYNC_PATH};
use strata_wire::comment::{Commit, Delivered, Queued, VerdictBatch, COMMIT_PATH, QUEUED_PATH, VERDICTS_PATH};

use crate::allow::{any_contains, IpNet};
use crate::body::ProxyBody;
use crate::outcome::Outcome;
use crate::policy::purge_key;
use crate::server::Proxy;
use crate::shield::{ShieldRequest, SHIELD_PATH};
use crate::status;

/// Largest admin request body accepted.
const MAX_ADMIN_BODY: usize = 64 * 1024;
/// Period of the samples behind `/status`'s charts.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// What the status page may load: nothing from elsewhere, only its own `/status.json`.
const STATUS_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                          connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'";

/// The signed requests this node accepted within the replay window, so each works once,
/// and the moment it started, before which it takes nothing signed: the process before it
/// may have accepted that request already. Pruned oldest first, so the cost per request
/// stays constant however many arrive.
pub struct ReplayGuard {
    /// Requests signed before this (Unix milliseconds) are refused.
    not_before_ms: u64,
    /// The MACs accepted within the window.
    seen: parking_lot::Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// MACs still inside the window, decoded (any spelling of one signature is one entry).
    set: HashSet<[u8; 32]>,
    /// The same MACs in arrival order, with the time (Unix milliseconds) each arrived.
    order: VecDeque<(u64, [u8; 32])>,
}

/// Why a request with a good signature is refused all the same (a 403).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// Signed before this node started.
    #[error("signed at {ts} ms, before this node started at {started} ms: sign the request again")]
    BeforeStart {
        /// The request's timestamp.
        ts: u64,
        /// When this node started.
        started: u64,
    },
    /// This very signature was accepted before.
    #[error("this signed request was already used (replay)")]
    Replayed,
}

impl ReplayGuard {
    /// A guard for a node that started at `started_ms` (Unix milliseconds).
    pub fn new(started_ms: u64) -> ReplayGuard {
        ReplayGuard {
            not_before_ms: started_ms,
            seen: parking_lot::Mutex::new(Seen::default()),
        }
    }

    /// Records a request [`auth::verify`] accepted at `now_ms`.
    ///
    /// Errors: it was signed before this node started, or its signature was used already.
    pub fn admit(&self, v: &auth::Verified, now_ms: u64) -> Result<(), Refusal> {
        if v.timestamp_ms < self.not_before_ms {
            return Err(Refusal::BeforeStart {
                ts: v.timestamp_ms,
                started: self.not_before_ms,
            });
        }
        let mut seen = self.seen.lock();
        // A signature is only accepted within ±window of its timestamp, so remembering it
        // for twice the window after arrival covers its whole life.
        while seen
            .order
            .front()
            .is_some_and(|(at, _)| at + 2 * auth::DEFAULT_WINDOW_MS < now_ms)
        {
            if let Some((_, mac)) = seen.order.pop_front() {
                seen.set.remove(&mac);
            }
        }
        if !seen.set.insert(v.mac) {
            return Err(Refusal::Replayed);
        }
        seen.order.push_back((now_ms, v.mac));
        Ok(())
    }
}

/// Who an admin request comes from and where it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address.
    pub client: SocketAddr,
    /// The address of this node the connection arrived at: what a signature must name
    /// (besides `cluster.admin_hosts`).
    pub local: SocketAddr,
}

/// Whether `cluster.admin_allow` (`allow`) lets `client` use the admin listener: an empty
/// list lets everyone (an IPv4 client on an IPv6 socket is its IPv4 address).
pub fn admin_allows(allow: &[IpNet], client: IpAddr) -> bool {
    allow.is_empty() || any_contains(allow, client)
}

/// The 403 of a client outside `cluster.admin_allow`.
pub fn not_allowed(client: IpAddr) -> Response<ProxyBody> {
    plain(StatusCode::FORBIDDEN, format!("{client} is not in cluster.admin_allow"))
}

/// Whether `client` may read what the cache and the cluster hold without signing: an
/// address `cluster.admin_allow` names, or, when it names none, a loopback address.
fn reads_unsigned(allow: &[IpNet], client: IpAddr) -> bool {
    if allow.is_empty() {
        client.to_canonical().is_loopback()
    } else {
        admin_allows(allow, client)
    }
}

/// Shared state of the admin listener.
pub struct Admin {
    /// The proxy it reports on and purges.
    pub proxy: Arc<Proxy>,
    /// Replay protection for signed requests.
    pub replay: ReplayGuard,
    /// Per-second samples behind `/status`'s charts.
    pub history: status::History,
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

impl Admin {
    /// The admin state for `proxy`, with its once-a-second sampler for `/status` running on
    /// the current runtime until the admin state is dropped.
    pub fn start(proxy: Arc<Proxy>) -> Arc<Admin> {
        let admin = Arc::new(Admin {
            proxy,
            replay: ReplayGuard::new(strata_wire::ids::unix_ms()),
            history: status::History::default(),
        });
        tokio::spawn(sample(Arc::downgrade(&admin)));
        admin
    }

    /// Answers one admin request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: Peer) -> Response<ProxyBody> {
        if !admin_allows(&self.proxy.cfg().cluster.admin_allow, peer.client.ip()) {
            return not_allowed(peer.client.ip());
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
            (&Method::GET, "/status") => {
                let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
                let mut r = if status::wants_html(accept) {
                    let mut r = text(StatusCode::OK, status::PAGE, "text/html; charset=utf-8");
                    r.headers_mut().insert(
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static(STATUS_CSP),
                    );
                    r
                } else {
                    plain(StatusCode::OK, self.status())
                };
                r.headers_mut().insert(header::VARY, HeaderValue::from_static("accept"));
                r
            }
            (&Method::GET, "/status.json") => json(StatusCode::OK, &self.status_json()),
            (&Method::GET, "/cluster") => match self.reader(req, peer).await {
                Ok(_) => json(StatusCode::OK, &self.cluster_report()),
                Err(refusal) => refusal,
            },
            (&Method::GET, "/lookup") => match self.reader(req, peer).await {
                Ok(parts) => self.lookup(&parts.uri),
                Err(refusal) => refusal,
            },
            (&Method::POST, "/purge") => self.purge(req, peer).await,
            (&Method::POST, BAN_PATH) => self.ban(req, peer).await,
            (&Method::POST, SYNC_PATH) => self.sync(req, peer).await,
            (&Method::POST, VERDICTS_PATH) => self.verdicts(req, peer).await,
            (&Method::POST, COMMIT_PATH) => self.commit(req, peer).await,
            (&Method::POST, QUEUED_PATH) => self.queued(req, peer).await,
            (&Method::POST, SHIELD_PATH) => self.shield(req, peer).await,
            (_, "/healthz" | "/metrics" | "/status" | "/status.json" | "/cluster" | "/lookup") => {
                plain(StatusCode::METHOD_NOT_ALLOWED, "use GET")
            }
            (_, "/purge" | BAN_PATH | SYNC_PATH | VERDICTS_PATH | COMMIT_PATH | QUEUED_PATH | SHIELD_PATH) => {
                plain(StatusCode::METHOD_NOT_ALLOWED, "use POST")
            }
            _ => plain(
                StatusCode::NOT_FOUND,
                "unknown admin path; try /healthz, /metrics, /status, /status.json, /cluster, /lookup?url=, POST /ban, \
                 POST /purge",
            ),
        }
    }

    /// The exposition `/metrics` would serve now, parsed, and the chart sample it makes.
    fn scrape(&self) -> (status::Scrape, status::Sample) {
        let p = &self.proxy;
        let text = p.metrics.render(
            p.store.weighted_size(),
            p.store.entry_count(),
            &p.store.stats.evictions,
            &p.store.stats.expirations,
        );
        let scrape = status::Scrape::parse(&text);
        let sample = status::Sample::of(&scrape, std::time::Instant::now(), strata_wire::ids::unix_ms());
        (scrape, sample)
    }

    /// `GET /status.json`: the page's numbers, from the same sources as `/metrics`.
    fn status_json(&self) -> status::Status {
        let p = &self.proxy;
        p.store.maintain();
        let (scrape, now) = self.scrape();
        let facts = status::Facts {
            node: p.cfg().cluster.node_id.clone(),
            version: env!("CARGO_PKG_VERSION"),
            uptime: p.started.elapsed(),
            origin: p.cfg().origin.url.to_string(),
            seq: p.cluster.latest(),
            confirmed: p.cluster.confirmed(tokio::time::Instant::now()),
            siblings: p.cluster.report(),
            tags: p.store.tags.len(),
            comments_enabled: p.cfg().comments.enabled,
        };
        status::Status::build(facts, &scrape, &now, &self.history.snapshot())
    }

    fn status(&self) -> String {
        let p = &self.proxy;
        p.store.maintain();
        let (scrape, _) = self.scrape();
        let m = &p.metrics;
        let (hit, miss, pass, stale) = (
            m.requests(Outcome::Hit),
            m.requests(Outcome::Miss),
            m.requests(Outcome::Pass),
            m.requests(Outcome::Stale),
        );
        let looked = hit + stale + miss;
        let budget = p.budget.state();
        let patches = status::PatchStatus::of(&scrape);
        let ratio = if looked == 0 {
            0.0
        } else {
            (hit + stale) as f64 * 100.0 / looked as f64
        };
        format!(
            "strata-proxy {version} node {node}\nuptime {up}s\norigin {origin}\n\
             requests: hit {hit}, stale {stale}, miss {miss}, pass {pass}; hit ratio {ratio:.1}%\n\
             cache: {objects} objects, {bytes} of {cap} bytes, {ev} evictions, {tags} tags\n\
             origin budget: foreground {fg} at the origin, {queued} queued; background {bg} at the origin \
             (of {bg_max}; {conc} in all), {deferred} deferred, {list_deferred} held by list_refresh\n\
             cluster: sequence {seq}, {confirmed}{siblings}\n\
             shield: asked of a home: {asked}; served as home: {served}\n\
             page patches: {patched} patched, {checked} checked against WordPress, {mismatched} mismatched, \
             {checks_other} checks dropped or failed, {templates_off} templates off",
            version = env!("CARGO_PKG_VERSION"),
            node = p.cfg().cluster.node_id,
            up = p.started.elapsed().as_secs(),
            origin = p.cfg().origin.url,
            objects = p.store.entry_count(),
            bytes = p.store.weighted_size(),
            cap = p.cfg().cache.capacity,
            ev = p.store.stats.evictions.load(std::sync::atomic::Ordering::Relaxed),
            tags = p.store.tags.len(),
            fg = budget.0,
            bg = budget.1,
            queued = budget.2,
            bg_max = p.cfg().origin.background_max,
            conc = p.cfg().origin.concurrency,
            deferred = m.background_refreshes_deferred.get(),
            list_deferred = m.list_refreshes_deferred.get(),
            patched = patches.patched,
            checked = patches.checked,
            mismatched = patches.mismatched,
            checks_other = patches.checks.values().sum::<u64>() - patches.checked,
            templates_off = patches.templates_off,
            asked = shield_counts(&scrape.by_label("strata_proxy_shield_requests_total", "result")),
            served = shield_counts(&scrape.by_label("strata_proxy_shield_served_total", "result")),
            seq = p.cluster.latest(),
            confirmed = if p.cluster.confirmed(tokio::time::Instant::now()) {
                "confirmed current"
            } else {
                "NOT confirmed current (cached pages may be stale: flushing or passing)"
            },
            siblings = p
                .cluster
                .report()
                .iter()
                .map(|s| format!(
                    "\n  sibling {url} ({node}): {up}, {queued} bans queued, acked {acked}, applied {applied}, \
                     last contact {contact}, confirmed {confirmed}{error}",
                    url = s.url,
                    node = s.node.as_deref().unwrap_or("?"),
                    up = if s.up { "up" } else { "DOWN" },
                    queued = s.queued,
                    acked = s.acked_seq,
                    applied = s.applied_seq.map_or("-".to_string(), |a| a.to_string()),
                    contact = s
                        .last_contact_ms
                        .map_or("never".to_string(), |ms| format!("{ms} ms ago")),
                    confirmed = s
                        .confirmed_ms_ago
                        .map_or("never".to_string(), |ms| format!("{ms} ms ago")),
                    error = s.last_error.as_deref().map_or(String::new(), |e| format!(" ({e})")),
                ))
                .collect::<String>(),
        )
    }

    /// A read of what the cache or the cluster holds: its parts when the client may read
    /// unsigned ([`reads_unsigned`]) or the request is signed for this node, else the
    /// refusal.
    async fn reader(&self, req: Request<Incoming>, peer: Peer) -> Result<http::request::Parts, Response<ProxyBody>> {
        if reads_unsigned(&self.proxy.cfg().cluster.admin_allow, peer.client.ip()) {
            return Ok(req.into_parts().0);
        }
        if !req.headers().contains_key(auth::SIGNATURE_HEADER) {
            return Err(plain(
                StatusCode::UNAUTHORIZED,
                format!(
                    "{} {} shows what this node holds: sign the request, or send it from an address in \
                     cluster.admin_allow (from loopback when the list is empty)",
                    req.method(),
                    req.uri().path()
                ),
            ));
        }
        self.signed(req, peer).await.map(|(parts, _)| parts)
    }

    /// Reads and authenticates a signed request: its parts and body, or the refusal.
    async fn signed(
        &self,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Result<(http::request::Parts, Bytes), Response<ProxyBody>> {
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_ADMIN_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return Err(plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("admin request bodies are limited to {MAX_ADMIN_BODY} bytes"),
                ))
            }
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let now = strata_wire::ids::unix_ms();
        let cfg = self.proxy.cfg();
        let verified = auth::host_header(&parts.headers).and_then(|host| {
            let signed = auth::Signed {
                method: parts.method.as_str(),
                host,
                path,
                body: &body,
            };
            let received = auth::Received::of(&parts.headers);
            let v = auth::verify(&cfg.cluster.secret, signed, received, now, auth::DEFAULT_WINDOW_MS)?;
            auth::check_audience(host, peer.local, &cfg.cluster.admin_hosts)?;
            Ok(v)
        });
        let verified = match verified {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, path, client = %peer.client, "refused admin request");
                let status = if e.is_unauthenticated() {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::FORBIDDEN
                };
                return Err(plain(status, e.to_string()));
            }
        };
        if let Err(e) = self.replay.admit(&verified, now) {
            tracing::warn!(error = %e, path, client = %peer.client, "refused admin request");
            return Err(plain(StatusCode::FORBIDDEN, e.to_string()));
        }
        Ok((parts, body))
    }

    /// `POST /purge?url=URL` (one URL with all its variants) or `POST /purge?all=1`; applied
    /// and broadcast like a ban.
    async fn purge(&self, req: Request<Incoming>, peer: Peer) -> Response<ProxyBody> {
        let (parts, _) = match self.signed(req, peer).await {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        let q = parts.uri.query();
        let ban = if query_param(q, "all").is_some() {
            Ban::all()
        } else if let Some(url) = query_param(q, "url") {
            let mut b = Ban::new(strata_wire::ban::Kind::Url, url);
            b.host = query_param(q, "host");
            b
        } else {
            return plain(
                StatusCode::BAD_REQUEST,
                "give url=URL (absolute, or a path with host=HOST) or all=1",
            );
        };
        match self.proxy.ban(ban) {
            Ok(r) => text(
                StatusCode::OK,
                format!("{{\"purged\":{},\"seq\":{}}}\n", r.removed, r.seq),
                "application/json",
            ),
            Err(e) => plain(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }

    /// `POST /ban[?wait=MS]` with a JSON [`Ban`], or an array of them (see [`read_bans`]):
    /// applies them here in order and broadcasts each; with `wait`, answers once every
    /// sibling acknowledged the last of them or `MS` passed. A body with one invalid ban is a
    /// 400 and applies nothing.
    async fn ban(&self, req: Request<Incoming>, peer: Peer) -> Response<ProxyBody> {
        let (parts, body) = match self.signed(req, peer).await {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        let bans = match read_bans(&body) {
            Ok(b) => b,
            Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let wait = match wait_param(parts.uri.query()) {
            Ok(w) => w,
            Err(why) => return plain(StatusCode::BAD_REQUEST, why),
        };
        let (seq, mut answer) = match bans {
            BanBody::One(ban) => match self.proxy.ban(ban) {
                Ok(r) => (r.seq, serde_json::json!({"seq": r.seq, "removed": r.removed})),
                Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
            },
            BanBody::Many(bans) => match self.proxy.ban_all(bans) {
                Ok(done) => {
                    let seq = done.iter().map(|r| r.seq).max().unwrap_or(0);
                    let removed: usize = done.iter().map(|r| r.removed).sum();
                    (
                        seq,
                        serde_json::json!({"seq": seq, "removed": removed, "bans": done.len()}),
                    )
                }
                Err((index, e)) => return refused_item(index, &e),
            },
        };
        answer["siblings"] = self.siblings_acked(seq, wait).await;
        json(StatusCode::OK, &answer)
    }

    /// With `wait`, waits until every sibling acknowledged this node's sequence `seq` or
    /// `wait` passed; each sibling's acknowledgement and how long it took.
    async fn siblings_acked(&self, seq: u64, wait: Option<Duration>) -> serde_json::Value {
        let mut siblings = serde_json::Map::new();
        if let Some(timeout) = wait {
            for (url, acked, took) in self.proxy.cluster.wait_acked(seq, timeout, false).await {
                siblings.insert(
                    url,
                    serde_json::json!({"acked": acked, "ms": took.as_secs_f64() * 1000.0}),
                );
            }
        }
        serde_json::Value::Object(siblings)
    }

    /// `POST /comments/commit[?wait=MS]` (signed): a batch's bans and verdicts from the
    /// syncer ([`Commit`]). The bans are applied and broadcast as `/ban` does them (all
    /// checked first: one invalid ban is a 400 and applies nothing, delivers nothing); with
    /// `wait`, the verdicts are handed to the waiting answers only once every sibling
    /// acknowledged the bans or `MS` passed. Answers [`Delivered`].
    async fn commit(&self, req: Request<Incoming>, peer: Peer) -> Response<ProxyBody> {
        let (parts, body) = match self.signed(req, peer).await {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        let wait = match wait_param(parts.uri.query()) {
            Ok(w) => w,
            Err(why) => return plain(StatusCode::BAD_REQUEST, why),
        };
        let commit = match serde_json::from_slice::<Commit>(&body) {
            Ok(c) => c,
            Err(e) => return plain(StatusCode::BAD_REQUEST, format!("unreadable commit: {e}")),
        };
        if commit.bans.len() > MAX_BANS_PER_REQUEST {
            return plain(
                StatusCode::BAD_REQUEST,
                BanBodyError::TooMany(commit.bans.len()).to_string(),
            );
        }
        if !commit.bans.is_empty() {
            let seq = match self.proxy.ban_all(commit.bans) {
                Ok(done) => done.iter().map(|r| r.seq).max().unwrap_or(0),
                Err((index, e)) => return refused_item(index, &e),
            };
            self.siblings_acked(seq, wait).await;
        }
        json(
            StatusCode::OK,
            &Delivered::new(self.proxy.comments.deliver(commit.batch)),
        )
    }

    /// `POST /comments/queued?since=N&wait=MS` (signed): how many comments this node queued
    /// since it started, once that is not `N` or `MS` (at most [`MAX_QUEUED_WAIT`]) passed:
    /// an idle syncer waits here instead of polling the queue.
    async fn queued(&self, req: Request<Incoming>, peer: Peer) -> Response<ProxyBody> {
        let (parts, _) = match self.signed(req, peer).await {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        let wait = match wait_param(parts.uri.query()) {
            Ok(w) => w.unwrap_or(Duration::ZERO).min(MAX_QUEUED_WAIT),
            Err(why) => return plain(StatusCode::BAD_REQUEST, why),
        };
        let since = match query_param(parts.uri.query(), "since").map(|s| s.parse::<u64>()) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return plain(StatusCode::BAD_REQUEST, "since must be a number of comments"),
        };
        let queued = self.proxy.comments.queued_since(since, wait).await;
        json(StatusCode::OK, &Queued { queued })
    }

    /// `POST /cluster/sync` from a sibling: its bans and heartbeat; answers how far this
    /// node has applied the sibling's sequence.
    async fn sync(&self, req: Request<Incoming>, peer: Peer) -> Response<ProxyBody> {
        let (_, body) = match self.signed(req, peer).await {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        match serde_json::from_slice::<SyncRequest>(&body) {
            Ok(sync) => json(StatusCode::OK, &self.proxy.receive_sync(&sync)),
            Err(e) => plain(StatusCode::BAD_REQUEST, format!("unreadable sync message: {e}")),
        }
    }

    /// `POST /shield` (signed) from a sibling: a fill of a key this node is home of, answered
    /// as the origin would answer it (see [`Proxy::serve_shield`]).
    async fn shield(&self, req: Request<Incoming>, peer: Peer) -> Response<ProxyBody> {
        let (_, body) = match self.signed(req, peer).await {
            Ok(r) => r,
            Err(refusal) => {
                self.proxy.metrics.shield_served("refused");
                return refusal;
            }
        };
        match serde_json::from_slice::<ShieldRequest>(&body) {
            Ok(ask) => self.proxy.serve_shield(ask).await,
            Err(e) => {
                self.proxy.metrics.shield_served("refused");
                plain(StatusCode::BAD_REQUEST, format!("unreadable shield request: {e}"))
            }
        }
    }

    /// `POST /comments/verdicts` (signed): the syncer's verdicts of a batch, handed to the
    /// comment answers waiting for them here.
    async fn verdicts(&self, req: Request<Incoming>, peer: Peer) -> Response<ProxyBody> {
        let (_, body) = match self.signed(req, peer).await {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        match serde_json::from_slice::<VerdictBatch>(&body) {
            Ok(batch) => json(StatusCode::OK, &Delivered::new(self.proxy.comments.deliver(batch))),
            Err(e) => plain(StatusCode::BAD_REQUEST, format!("unreadable verdicts: {e}")),
        }
    }

    /// `GET /cluster`: this node's sequence, whether it is confirmed current, each sibling.
    fn cluster_report(&self) -> serde_json::Value {
        let c = &self.proxy.cluster;
        serde_json::json!({
            "node": c.node,
            "instance": c.instance,
            "seq": c.latest(),
            "confirmed": c.confirmed(tokio::time::Instant::now()),
            "siblings": c.report(),
        })
    }

    /// `GET /lookup?url=URL[&host=H]`: what the cache holds for a URL (key, tags, lifetimes).
    fn lookup(&self, uri: &http::Uri) -> Response<ProxyBody> {
        let p = &self.proxy;
        let Some(url) = query_param(uri.query(), "url") else {
            return plain(
                StatusCode::BAD_REQUEST,
                "give url=URL (absolute, or a path with host=HOST)",
            );
        };
        let host = query_param(uri.query(), "host");
        let Some(key) = purge_key(&url, host.as_deref(), &p.cfg().policy.strip_query) else {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("{url:?} is not an http(s) URL or a path with host=HOST"),
            );
        };
        let now = tokio::time::Instant::now();
        let describe = |key: &str| match p.store.get(key) {
            Some(crate::cache::Slot::Object(o)) => serde_json::json!({
                "key": key,
                "status": o.status.as_u16(),
                "tags": o.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "fresh": o.is_fresh(now),
                "fresh_for_secs": o.ttl_secs(now),
                "grace_for_secs": o.grace_until.saturating_duration_since(now).as_secs(),
                "age_secs": o.age(now),
                "bytes": o.identity.len(),
                "gzip_bytes": o.gzip.as_ref().map(|b| b.len()),
                "br_bytes": o.br.as_ref().map(|b| b.len()),
            }),
            Some(crate::cache::Slot::HitForPass(until, why)) => serde_json::json!({
                "key": key,
                "hit_for_pass": why,
                "for_secs": until.saturating_duration_since(now).as_secs(),
            }),
            Some(crate::cache::Slot::Vary(rule)) => serde_json::json!({
                "key": key,
                "vary": rule.names.iter().map(|n| n.as_str().to_string()).collect::<Vec<_>>(),
            }),
            None => serde_json::Value::Null,
        };
        let found = describe(&key);
        if found.is_null() {
            return json(StatusCode::NOT_FOUND, &serde_json::json!({"key": key, "cached": false}));
        }
        let mut found = found;
        if found.get("vary").is_some() {
            let prefix = format!("{key}{}", crate::cache::VARIANT_SEP);
            let variants: Vec<_> = p
                .store
                .keys(|k| k.starts_with(&prefix))
                .iter()
                .map(|k| describe(k))
                .collect();
            found["variants"] = serde_json::Value::Array(variants);
        }
        json(StatusCode::OK, &found)
    }
}

/// `result count, …` of a counter's series with a nonzero count (`none` when all are zero).
fn shield_counts(by: &std::collections::BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = by
        .iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

/// Records a chart sample every [`SAMPLE_INTERVAL`] until the admin state is gone.
async fn sample(admin: Weak<Admin>) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(admin) = admin.upgrade() else { return };
        let (_, sample) = admin.scrape();
        admin.history.record(sample);
    }
}

fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<ProxyBody> {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    text(status, body, "application/json")
}

/// What a `POST /ban` body asks for.
#[derive(Debug, PartialEq)]
enum BanBody {
    /// One ban (`{…}`): answered with its own sequence number.
    One(Ban),
    /// Bans to apply in order (`[{…}, …]`): answered with the highest sequence number.
    Many(Vec<Ban>),
}

/// Why a `POST /ban` body is refused (a 400; nothing of it is applied).
#[derive(Debug, thiserror::Error, PartialEq)]
enum BanBodyError {
    /// Not JSON, or JSON that is neither a ban nor an array.
    #[error(
        "the body must be a JSON ban such as {{\"kind\":\"tag\",\"value\":\"post:12\"}} \
         (kinds: url, prefix, regex, tag, all), or an array of them: {0}"
    )]
    Unreadable(String),
    /// `[]`.
    #[error("an empty array bans nothing; give at least one ban")]
    Empty,
    /// More than [`MAX_BANS_PER_REQUEST`] bans.
    #[error("an array of {0} bans; at most {MAX_BANS_PER_REQUEST} are taken in one request")]
    TooMany(usize),
    /// One ban of an array is unreadable or invalid.
    #[error("ban {index} of the array (counting from 0): {cause}; none of the array was applied")]
    Item {
        /// Its position in the array, from 0.
        index: usize,
        /// What is wrong with it.
        cause: String,
    },
}

/// Reads a `POST /ban` body: one JSON ban, or a non-empty array of at most
/// [`MAX_BANS_PER_REQUEST`] of them, every item read before any is applied. Whether each ban
/// is valid (a value where one is needed, a URL, a regular expression that compiles) is
/// checked when it is compiled ([`Proxy::ban`], [`Proxy::ban_all`]).
fn read_bans(body: &[u8]) -> Result<BanBody, BanBodyError> {
    let unreadable = |e: serde_json::Error| BanBodyError::Unreadable(e.to_string());
    let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if !is_array {
        return serde_json::from_slice(body).map(BanBody::One).map_err(unreadable);
    }
    let items: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(unreadable)?;
    if items.is_empty() {
        return Err(BanBodyError::Empty);
    }
    if items.len() > MAX_BANS_PER_REQUEST {
        return Err(BanBodyError::TooMany(items.len()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            serde_json::from_value(item).map_err(|e| BanBodyError::Item {
                index,
                cause: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()
        .map(BanBody::Many)
}

/// Longest wait on `/comments/queued`: the syncer asks again after it.
const MAX_QUEUED_WAIT: Duration = Duration::from_secs(30);

/// The `wait` parameter of a ban: how long to wait for the siblings' acknowledgements (at
/// most a minute); the reason for a 400 when it is not a number of milliseconds.
fn wait_param(query: Option<&str>) -> Result<Option<Duration>, &'static str> {
    match query_param(query, "wait").map(|w| w.parse::<u64>()) {
        None => Ok(None),
        Some(Ok(ms)) => Ok(Some(Duration::from_millis(ms.min(60_000)))),
        Some(Err(_)) => Err("wait must be a number of milliseconds"),
    }
}

/// The 400 for the invalid ban at `index` of a request.
fn refused_item(index: usize, cause: &impl std::fmt::Display) -> Response<ProxyBody> {
    let refusal = BanBodyError::Item {
        index,
        cause: cause.to_string(),
    };
    plain(StatusCode::BAD_REQUEST, refusal.to_string())
}

/// One query parameter, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    crate::tags::query_param(query?, name)
        .map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_bodies_are_one_ban_or_a_bounded_array() {
        use strata_wire::ban::Kind;
        let tag = |v: &str, soft: bool| Ban {
            soft,
            ..Ban::new(Kind::Tag, v)
        };
        assert_eq!(
            read_bans(br#"{"kind":"tag","value":"post:1"}"#),
            Ok(BanBody::One(tag("post:1", false)))
        );
        assert_eq!(
            read_bans(
                b" \n[{\"kind\":\"tag\",\"value\":\"post:1\"},{\"kind\":\"tag\",\"value\":\"list\",\"soft\":true}]"
            ),
            Ok(BanBody::Many(vec![tag("post:1", false), tag("list", true)]))
        );
        assert_eq!(read_bans(b"[]"), Err(BanBodyError::Empty));
        let all = |n: usize| format!("[{}]", vec![r#"{"kind":"all"}"#; n].join(","));
        assert!(matches!(
            read_bans(all(MAX_BANS_PER_REQUEST).as_bytes()),
            Ok(BanBody::Many(b)) if b.len() == MAX_BANS_PER_REQUEST
        ));
        let too_many = read_bans(all(MAX_BANS_PER_REQUEST + 1).as_bytes());
        assert_eq!(too_many, Err(BanBodyError::TooMany(MAX_BANS_PER_REQUEST + 1)));
        assert!(too_many.unwrap_err().to_string().contains("at most 1000"));
        let bad = read_bans(br#"[{"kind":"tag","value":"a"},{"kind":"shout","value":"x"}]"#);
        assert!(
            matches!(&bad, Err(BanBodyError::Item { index: 1, cause }) if cause.contains("shout")),
            "{bad:?}"
        );
        assert!(bad.unwrap_err().to_string().starts_with("ban 1 of the array"));
        assert!(matches!(read_bans(b"[1]"), Err(BanBodyError::Item { index: 0, .. })));
        assert!(matches!(read_bans(b"[{"), Err(BanBodyError::Unreadable(_))));
        assert!(matches!(read_bans(b"{not json"), Err(BanBodyError::Unreadable(_))));
        assert!(matches!(read_bans(b""), Err(BanBodyError::Unreadable(_))));
    }

    fn verified(ts: u64, byte: u8) -> auth::Verified {
        auth::Verified {
            timestamp_ms: ts,
            mac: [byte; 32],
        }
    }

    #[test]
    fn signatures_work_once() {
        let g = ReplayGuard::new(50);
        let window = auth::DEFAULT_WINDOW_MS;
        assert_eq!(g.admit(&verified(100, 1), 100), Ok(()));
        assert_eq!(g.admit(&verified(100, 1), 101), Err(Refusal::Replayed));
        assert_eq!(g.admit(&verified(100, 2), 101), Ok(()));
        // Forgotten only once they could no longer pass the timestamp check.
        assert_eq!(g.admit(&verified(100, 1), 100 + 2 * window), Err(Refusal::Replayed));
        assert_eq!(g.admit(&verified(100, 1), 102 + 2 * window), Ok(()));
        assert_eq!(g.seen.lock().set.len(), 1);
    }

    #[test]
    fn nothing_signed_before_the_start_is_taken() {
        let g = ReplayGuard::new(1_000);
        assert_eq!(
            g.admit(&verified(999, 1), 1_001),
            Err(Refusal::BeforeStart {
                ts: 999,
                started: 1_000
            })
        );
        assert_eq!(g.admit(&verified(1_000, 1), 1_001), Ok(()));
    }

    #[test]
    fn who_may_use_the_admin_listener_and_read_unsigned() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (loopback, outsider, sibling) = (ip("127.0.0.1"), ip("198.51.100.7"), ip("10.0.0.2"));
        // No list: anyone may connect; unsigned reads from loopback only.
        assert!(admin_allows(&[], outsider));
        assert!(reads_unsigned(&[], loopback));
        assert!(reads_unsigned(&[], ip("::1")));
        assert!(reads_unsigned(&[], ip("::ffff:127.0.0.1")));
        assert!(!reads_unsigned(&[], outsider));
        // A list: only its addresses, for everything (an IPv4 client on an IPv6 socket too).
        let allow = [IpNet::from(sibling)];
        assert!(admin_allows(&allow, sibling));
        assert!(admin_allows(&allow, ip("::ffff:10.0.0.2")));
        assert!(!admin_allows(&allow, loopback));
        assert!(reads_unsigned(&allow, sibling));
        assert!(!reads_unsigned(&allow, loopback));
        // Ranges: a whole subnet of nodes.
        let allow: [IpNet; 2] = ["10.0.0.0/24".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
        assert!(admin_allows(&allow, ip("10.0.0.254")) && admin_allows(&allow, ip("::ffff:10.0.0.9")));
        assert!(admin_allows(&allow, ip("2001:db8:1::7")));
        assert!(!admin_allows(&allow, ip("10.0.1.1")) && !reads_unsigned(&allow, loopback));
    }
}
