//! Spreading bans to every sibling, and knowing whether this node holds all of theirs.
//!
//! Lifecycle of a ban (see docs/bans-and-cluster.md#bans-across-nodes):
//! 1. A node applies a ban locally and gives it the next number of its own sequence; the ban
//!    goes into one bounded queue per sibling (overflow collapses the queue into one ban of
//!    everything, so nothing is silently lost).
//! 2. One task per sibling sends, every `heartbeat_interval` or at once when there is news, a
//!    signed [`SyncRequest`]: the sender's latest sequence number and the queued bans. The
//!    sibling applies them in order and answers how far it got; acknowledged bans leave the
//!    queue, the rest are sent again with backoff.
//! 3. A receiver applies each sender's bans exactly once and in order ([`Peer::admit`]): a
//!    repeat is skipped, a gap in the sequence or a restarted sender (new instance) flushes.
//! 4. Each sync also proves that the receiver is current with the sender (it has applied the
//!    sender's latest). A node that has not had that proof from every sibling within
//!    `confirm_within` is *unconfirmed*: a write elsewhere may have banned pages it holds, so
//!    it flushes (or passes, per `when_unconfirmed`) until it is confirmed again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_wire::auth;
use strata_wire::ban::{Ban, Sequenced, SyncReply, SyncRequest, SYNC_PATH};
use strata_wire::ids::{random_u64, unix_ms};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::config::ClusterConfig;
use crate::metrics::ClusterMetrics;

/// Bans sent in one sync.
const BATCH: usize = 512;
/// First retry delay after a failed sync; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(20);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Why the cluster flushed a node's cache (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// A sender's sequence skipped numbers.
    Gap,
    /// A sender restarted: the bans it had not delivered are unknown.
    Restart,
    /// This node could not confirm it is current.
    Unconfirmed,
}

impl FlushReason {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Gap => "gap",
            FlushReason::Restart => "restart",
            FlushReason::Unconfirmed => "unconfirmed",
        }
    }
}

/// What this node knows of one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The sender's incarnation.
    pub instance: u64,
    /// The highest of its sequence numbers applied here.
    pub applied: u64,
    /// It shut down cleanly after everything it sent was applied here.
    pub left: bool,
}

/// What to do with one sync: flush or not, which of its bans to apply.
#[derive(Debug, PartialEq, Eq)]
pub struct Admission {
    /// Flush everything first (then the bans need not be applied one by one).
    pub flush: Option<FlushReason>,
    /// Indexes into the request's bans to apply, in order.
    pub apply: Vec<usize>,
    /// The sender's sequence applied after this sync.
    pub applied: u64,
    /// Whether this node is now current with the sender.
    pub current: bool,
}

impl Peer {
    /// Decides how to take a sync from a sender this node knew as `known` (None: never heard
    /// of since this node started, so nothing it sent earlier can matter: the cache started
    /// empty).
    pub fn admit(known: Option<Peer>, req: &SyncRequest) -> Admission {
        let first_contact = |req: &SyncRequest| req.bans.first().map_or(req.latest, |b| b.seq.saturating_sub(1));
        let (mut flush, mut applied) = match known {
            None => (None, first_contact(req)),
            Some(p) if p.instance != req.instance && p.left => (None, first_contact(req)),
            Some(p) if p.instance != req.instance => (Some(FlushReason::Restart), first_contact(req)),
            Some(p) => (None, p.applied),
        };
        let mut apply = Vec::new();
        for (i, b) in req.bans.iter().enumerate() {
            if b.seq <= applied {
                continue;
            }
            if b.seq != applied + 1 && flush.is_none() {
                flush = Some(FlushReason::Gap);
            }
            applied = b.seq;
            apply.push(i);
        }
        if req.bans.is_empty() && req.latest > applied {
            // The sender holds nothing more for us yet says it is further along: bans went
            // missing somewhere.
            flush = flush.or(Some(FlushReason::Gap));
            applied = req.latest;
        }
        if flush.is_some() {
            apply.clear();
        }
        Admission {
            flush,
            apply,
            applied,
            current: applied >= req.latest,
        }
    }
}

/// The outgoing side for one sibling.
pub struct Sibling {
    /// Its admin URL, as configured.
    pub url: String,
    queue: parking_lot::Mutex<Queue>,
    wake: Notify,
    /// The highest of our sequence numbers it has acknowledged.
    acked: watch::Sender<u64>,
    state: parking_lot::Mutex<SiblingState>,
}

struct Queue {
    /// Bans not acknowledged yet, with when each was queued.
    items: VecDeque<(Sequenced, Instant)>,
    /// The last sequence number queued here: the `latest` this sibling is told.
    last: u64,
}

/// What this node knows of a sibling, for `/cluster`, `/status` and metrics.
#[derive(Debug, Clone, Default)]
pub struct SiblingState {
    /// Its node id, once it answered.
    pub node: Option<String>,
    /// Whether the last exchange succeeded.
    pub up: bool,
    /// When it last answered.
    pub last_contact: Option<Instant>,
    /// When this node last proved it holds all of the sibling's bans.
    pub confirmed_at: Option<Instant>,
    /// The last failure, for the status page.
    pub last_error: Option<String>,
    /// Times its queue overflowed into a ban of everything.
    pub overflows: u64,
}

/// One sibling's state as `/cluster` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiblingReport {
    /// Admin URL.
    pub url: String,
    /// Node id, once known.
    pub node: Option<String>,
    /// Whether the last exchange succeeded.
    pub up: bool,
    /// Bans waiting for its acknowledgement.
    pub queued: usize,
    /// Highest of our sequence numbers it acknowledged.
    pub acked_seq: u64,
    /// Highest of its sequence numbers applied here.
    pub applied_seq: Option<u64>,
    /// Milliseconds since it last answered.
    pub last_contact_ms: Option<u64>,
    /// Milliseconds since this node last confirmed it holds its bans.
    pub confirmed_ms_ago: Option<u64>,
    /// Queue overflows so far.
    pub overflows: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// The cluster side of a node.
pub struct Cluster {
    /// This node's id.
    pub node: String,
    /// Random per start: tells siblings this node restarted.
    pub instance: u64,
    /// Our own sequence: the number of the last ban this node originated.
    latest: parking_lot::Mutex<u64>,
    /// The siblings, in configuration order.
    pub siblings: Vec<Arc<Sibling>>,
    /// Senders heard from, by node id.
    peers: parking_lot::Mutex<HashMap<String, Peer>>,
    /// When each sender's bans were last proven applied here, by node id.
    proven: parking_lot::Mutex<HashMap<String, Instant>>,
    /// Reference point of `confirmed_until`.
    base: Instant,
    /// Nanoseconds after `base` until which this node is confirmed (read on every hit).
    confirmed_until: AtomicU64,
    /// Whether the cache was flushed for the current unconfirmed period.
    flushed: AtomicBool,
    /// Sync message counter, making every signed sync unique (replay protection).
    messages: AtomicU64,
    cfg: ClusterConfig,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Cluster {
    /// The cluster side for a configuration. Nothing runs until [`Cluster::run`].
    pub fn new(cfg: &ClusterConfig) -> Cluster {
        let siblings = cfg
            .siblings
            .iter()
            .map(|u| {
                let url = u.to_string().trim_end_matches('/').to_string();
                Arc::new(Sibling {
                    url,
                    queue: parking_lot::Mutex::new(Queue {
                        items: VecDeque::new(),
                        last: 0,
                    }),
                    wake: Notify::new(),
                    acked: watch::Sender::new(0),
                    state: parking_lot::Mutex::new(SiblingState::default()),
                })
            })
            .collect::<Vec<_>>();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.confirm_within / 2));
        http.set_nodelay(true);
        Cluster {
            node: cfg.node_id.clone(),
            instance: random_u64(),
            latest: parking_lot::Mutex::new(0),
            confirmed_until: AtomicU64::new(if siblings.is_empty() { u64::MAX } else { 0 }),
            siblings,
            peers: Default::default(),
            proven: Default::default(),
            base: Instant::now(),
            flushed: AtomicBool::new(false),
            messages: AtomicU64::new(0),
            cfg: cfg.clone(),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(http),
        }
    }

    /// Our latest sequence number.
    pub fn latest(&self) -> u64 {
        *self.latest.lock()
    }

    /// Whether this node holds every sibling's bans as of `confirm_within` ago. One atomic
    /// load: this is on the hit path.
    #[inline]
    pub fn confirmed(&self, now: Instant) -> bool {
        let until = self.confirmed_until.load(Ordering::Relaxed);
        until == u64::MAX || (now.saturating_duration_since(self.base).as_nanos() as u64) < until
    }

    /// True once per unconfirmed period: the caller flushes.
    pub fn take_flush(&self) -> bool {
        !self.flushed.swap(true, Ordering::AcqRel)
    }

    /// The longest an object may stay fresh while unconfirmed.
    pub fn unconfirmed_ttl(&self) -> Duration {
        self.cfg.confirm_within
    }

    /// Queues a ban for every sibling under the next sequence number; returns that number.
    pub fn broadcast(&self, ban: &Ban) -> u64 {
        let mut latest = self.latest.lock();
        *latest += 1;
        let seq = *latest;
        let item = Sequenced {
            seq,
            at_ms: unix_ms(),
            ban: ban.clone(),
        };
        let now = Instant::now();
        for s in &self.siblings {
            let mut q = s.queue.lock();
            if q.items.len() >= self.cfg.queue_limit {
                // Collapse: one ban of everything stands for all that was queued. The
                // receiver also sees the jump in the sequence and flushes.
                q.items.clear();
                q.items.push_back((
                    Sequenced {
                        seq,
                        at_ms: item.at_ms,
                        // An id of its own, so a home can be told of it (see shielding).
                        ban: Ban::all().with_id(),
                    },
                    now,
                ));
                s.state.lock().overflows += 1;
                tracing::warn!(sibling = %s.url, limit = self.cfg.queue_limit, "ban queue overflowed; the sibling will be flushed");
            } else {
                q.items.push_back((item.clone(), now));
            }
            q.last = seq;
            drop(q);
            s.wake.notify_one();
        }
        seq
    }

    /// Waits until every sibling (with `reachable_only`, every sibling whose last exchange
    /// succeeded: one that is away cannot confirm it is current, so it does not serve what
    /// the ban covers anyway) acknowledged `seq` or `timeout` passed; per sibling, whether it
    /// did and after how long.
    pub async fn wait_acked(&self, seq: u64, timeout: Duration, reachable_only: bool) -> Vec<(String, bool, Duration)> {
        let start = Instant::now();
        let waits = self
            .siblings
            .iter()
            .filter(|s| !reachable_only || s.state.lock().up)
            .map(|s| {
                let mut rx = s.acked.subscribe();
                let url = s.url.clone();
                async move {
                    let ok = tokio::time::timeout(timeout, rx.wait_for(|a| *a >= seq))
                        .await
                        .is_ok_and(|r| r.is_ok());
                    (url, ok, start.elapsed())
                }
            });
        join_all(waits).await
    }

    /// Decides how to take a sync from a sibling and records the result (the caller applies
    /// the flush or the bans before answering).
    pub fn admit(&self, req: &SyncRequest) -> Admission {
        let mut peers = self.peers.lock();
        let known = peers.get(&req.node).copied();
        let a = Peer::admit(known, req);
        peers.insert(
            req.node.clone(),
            Peer {
                instance: req.instance,
                applied: a.applied,
                left: req.leaving && a.current,
            },
        );
        if req.leaving {
            tracing::info!(node = %req.node, current = a.current, "sibling is shutting down");
        }
        drop(peers);
        if a.current {
            self.prove(&req.node);
        }
        a
    }

    /// The answer to a sync, once its bans are applied.
    pub fn reply(&self, applied: u64) -> SyncReply {
        SyncReply {
            node: self.node.clone(),
            instance: self.instance,
            latest: self.latest(),
            applied,
        }
    }

    /// Records that this node holds all of `node`'s bans as of now.
    fn prove(&self, node: &str) {
        let now = Instant::now();
        self.proven.lock().insert(node.to_string(), now);
        for s in &self.siblings {
            let mut st = s.state.lock();
            if st.node.as_deref() == Some(node) {
                st.confirmed_at = Some(now);
            }
        }
        self.recompute();
    }

    /// Recomputes `confirmed_until` from the siblings' proofs.
    fn recompute(&self) {
        if self.siblings.is_empty() {
            return;
        }
        let proven = self.proven.lock();
        let mut until = u64::MAX;
        for s in &self.siblings {
            let at = s.state.lock().node.as_ref().and_then(|n| proven.get(n).copied());
            let t = at.map_or(0, |t| {
                (t.saturating_duration_since(self.base) + self.cfg.confirm_within).as_nanos() as u64
            });
            until = until.min(t);
        }
        drop(proven);
        let before = self.confirmed_until.swap(until, Ordering::AcqRel);
        let confirmed = (self.base.elapsed().as_nanos() as u64) < until;
        if confirmed && (self.flushed.swap(false, Ordering::AcqRel) || before == 0) {
            tracing::info!(node = %self.node, "confirmed current with every sibling");
        }
    }

    /// The siblings that are members for shielding: their last sync succeeded and they told
    /// their node id. Node id and admin URL of each.
    pub fn live(&self) -> Vec<(String, String)> {
        self.siblings
            .iter()
            .filter_map(|s| {
                let st = s.state.lock();
                st.node.clone().filter(|_| st.up).map(|n| (n, s.url.clone()))
            })
            .collect()
    }

    /// The bans queued for the first sibling, oldest first (for tests of what is passed on).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> Vec<Ban> {
        self.siblings.first().map_or_else(Vec::new, |s| {
            s.queue.lock().items.iter().map(|(b, _)| b.ban.clone()).collect()
        })
    }

    /// Per-sibling state for `/cluster` and `/status`.
    pub fn report(&self) -> Vec<SiblingReport> {
        let now = Instant::now();
        let peers = self.peers.lock().clone();
        self.siblings
            .iter()
            .map(|s| {
                let st = s.state.lock().clone();
                let queued = s.queue.lock().items.len();
                SiblingReport {
                    url: s.url.clone(),
                    applied_seq: st.node.as_ref().and_then(|n| peers.get(n)).map(|p| p.applied),
                    node: st.node,
                    up: st.up,
                    queued,
                    acked_seq: *s.acked.borrow(),
                    last_contact_ms: st
                        .last_contact
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                    confirmed_ms_ago: st
                        .confirmed_at
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                    overflows: st.overflows,
                    last_error: st.last_error,
                }
            })
            .collect()
    }

    /// Runs one task per sibling until `shutdown` fires.
    pub async fn run(self: Arc<Self>, metrics: Arc<ClusterMetrics>, shutdown: watch::Receiver<bool>) {
        let tasks: Vec<_> = self
            .siblings
            .iter()
            .map(|s| tokio::spawn(self.clone().feed(s.clone(), metrics.clone(), shutdown.clone())))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        self.clone().farewell().await;
    }

    /// On a clean shutdown: one last sync to every sibling with whatever is still queued and
    /// `leaving` set, so that this node's restart does not make them flush.
    async fn farewell(self: Arc<Self>) {
        let goodbyes = self.siblings.clone().into_iter().map(|s| {
            let this = self.clone();
            async move { this.goodbye(&s).await }
        });
        join_all(goodbyes).await;
    }

    /// The last sync to one sibling.
    async fn goodbye(&self, s: &Sibling) {
        let req = self.sync_request(s, true);
        if let Err(e) = self.send(s, &req).await {
            tracing::warn!(sibling = %s.url, error = %e, "could not say goodbye; it will flush when this node restarts");
        }
    }

    /// The next sync for a sibling: our latest number and what it has not acknowledged.
    /// `leaving` is only claimed when everything queued fits in this one sync.
    fn sync_request(&self, s: &Sibling, leaving: bool) -> SyncRequest {
        let q = s.queue.lock();
        SyncRequest {
            node: self.node.clone(),
            instance: self.instance,
            latest: q.last,
            bans: q.items.iter().take(BATCH).map(|(b, _)| b.clone()).collect(),
            msg: self.messages.fetch_add(1, Ordering::Relaxed),
            leaving: leaving && q.items.len() <= BATCH,
        }
    }

    /// Keeps one sibling fed: heartbeats, queued bans, retries with backoff.
    async fn feed(self: Arc<Self>, s: Arc<Sibling>, metrics: Arc<ClusterMetrics>, mut shutdown: watch::Receiver<bool>) {
        let mut pace = Pace::new(self.cfg.heartbeat_interval);
        let m = &*metrics;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let req = self.sync_request(&s, false);
            let sent_bans = !req.bans.is_empty();
            let next = match self.send(&s, &req).await {
                Ok(reply) => {
                    let now = Instant::now();
                    let remaining = {
                        let mut q = s.queue.lock();
                        while q.items.front().is_some_and(|(b, _)| b.seq <= reply.applied) {
                            if let Some((_, queued)) = q.items.pop_front() {
                                m.sent.inc();
                                m.ack.observe(now.saturating_duration_since(queued).as_secs_f64());
                            }
                        }
                        q.items.len()
                    };
                    s.acked.send_modify(|a| *a = (*a).max(reply.applied));
                    let current = {
                        let peers = self.peers.lock();
                        let known = peers.get(&reply.node);
                        reply.latest == 0 && known.is_none()
                            || known.is_some_and(|p| p.instance == reply.instance && p.applied >= reply.latest)
                    };
                    {
                        let mut st = s.state.lock();
                        if !st.up {
                            tracing::info!(sibling = %s.url, node = %reply.node, "sibling reachable");
                        }
                        st.up = true;
                        st.node = Some(reply.node.clone());
                        st.last_contact = Some(now);
                        st.last_error = None;
                    }
                    if current {
                        self.prove(&reply.node);
                    } else {
                        self.recompute();
                    }
                    pace.answered(remaining > 0 && sent_bans)
                }
                Err(e) => {
                    {
                        let mut st = s.state.lock();
                        if st.up || st.last_error.is_none() {
                            tracing::warn!(sibling = %s.url, error = %e, "sibling unreachable; bans for it stay queued");
                        }
                        st.up = false;
                        st.last_error = Some(e);
                    }
                    pace.failed()
                }
            };
            if !next.wait(&s.wake, &mut shutdown).await {
                return;
            }
        }
    }

    /// One signed sync to a sibling.
    async fn send(&self, s: &Sibling, req: &SyncRequest) -> Result<SyncReply, String> {
        let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
        let request = auth::signed_post(&self.cfg.secret, &s.url, SYNC_PATH, body).map_err(|e| e.to_string())?;
        let timeout = (self.cfg.confirm_within / 2).max(Duration::from_millis(100));
        let exchange = async {
            let resp = self
                .client
                .request(request)
                .await
                .map_err(|e| crate::origin::error_chain(&e))?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            if !status.is_success() {
                return Err(format!("answered {status}: {}", String::from_utf8_lossy(&bytes).trim()));
            }
            serde_json::from_slice::<SyncReply>(&bytes).map_err(|e| format!("unreadable answer: {e}"))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    }
}

/// When a sibling's feed sends its next sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// At once: the sibling acknowledged a sync that carried bans, and more are queued.
    Now,
    /// After this pause, whatever is queued meanwhile: the sync failed.
    Retry(Duration),
    /// After this pause (the heartbeat), or as soon as a ban is queued.
    Heartbeat(Duration),
}

impl Next {
    /// Waits as this says; false if `shutdown` fired meanwhile.
    async fn wait(self, wake: &Notify, shutdown: &mut watch::Receiver<bool>) -> bool {
        match self {
            Next::Now => true,
            Next::Retry(pause) => tokio::select! {
                _ = tokio::time::sleep(pause) => true,
                _ = shutdown.changed() => false,
            },
            Next::Heartbeat(pause) => tokio::select! {
                _ = wake.notified() => true,
                _ = tokio::time::sleep(pause) => true,
                _ = shutdown.changed() => false,
            },
        }
    }
}

/// The timing of one sibling's feed: a heartbeat every `heartbeat_interval`, retries after
/// [`MIN_BACKOFF`], doubling up to [`MAX_BACKOFF`] while the sibling fails.
#[derive(Debug)]
struct Pace {
    /// Pause between syncs while there is no news.
    heartbeat: Duration,
    /// Pause before the next retry, should the next sync fail.
    backoff: Duration,
}

impl Pace {
    fn new(heartbeat: Duration) -> Pace {
        Pace {
            heartbeat,
            backoff: MIN_BACKOFF,
        }
    }

    /// After a sync the sibling answered; `more` when it carried bans and others are still
    /// queued. The backoff starts over.
    fn answered(&mut self, more: bool) -> Next {
        self.backoff = MIN_BACKOFF;
        if more {
            Next::Now
        } else {
            Next::Heartbeat(self.heartbeat)
        }
    }

    /// After a failed sync: retry after the backoff, which doubles for the next failure.
    fn failed(&mut self) -> Next {
        let pause = self.backoff;
        self.backoff = (pause * 2).min(MAX_BACKOFF);
        Next::Retry(pause)
    }
}

/// Runs futures concurrently, each as its own task, and returns their outputs in order (a
/// tiny `join_all`, to avoid a dependency). A task that panicked is left out.
async fn join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests;
