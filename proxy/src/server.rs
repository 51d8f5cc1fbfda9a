//! The public request path: refuse, pass, or look up; on a miss, one origin fetch per key.
//!
//! Lifecycle of a cacheable request (see also docs/proxy.md#how-a-request-flows):
//! 1. `refuse` answers what must never reach the origin (ambiguous framing, CONNECT, …).
//! 2. `policy::pass_reason` sends personal or unsafe requests straight through (`pass`).
//! 3. `lookup` finds the slot for the key: fresh → HIT; stale within grace → STALE plus one
//!    background refresh; hit-for-pass → PASS; nothing → `miss`.
//! 4. `miss` makes the first request for a key the leader of a flight; the others wait on
//!    it (bounded by `cache.lock_timeout`) and are answered from what it stored, unless a
//!    hard ban that arrived while the leader was at the origin selects it (they ask again).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::watch;
use tokio::time::Instant;

use strata_wire::ban::{Ban, Kind};

use crate::bans::{BanError, Bans, Compiled, InFlight};
use crate::body::ProxyBody;
use crate::cache::{self, Object, Slot, Store, VaryRule};
use crate::cluster::{Cluster, FlushReason};
use crate::comments::{self, Comments, Handled};
use crate::compress::{self, Encoding};
use crate::config::Config;
use crate::framing::{AMBIGUOUS_MARKER, DUPLICATE_CL_MARKER};
use crate::freshness::{self, NoStore};
use crate::metrics::Metrics;
use crate::origin::{self, Origin, OriginError};
use crate::outcome::Outcome;
use crate::policy::{self, PassReason};
use crate::tags::{self, TagRules};
use crate::tls;
use crate::writes;

/// How many times a waiter retries after a leader gave up (its client went away) or brought
/// an object that a ban has selected since.
const MAX_FLIGHT_RETRIES: usize = 3;
/// Request headers never sent to the origin on a cache fill: the fill must fetch the full,
/// unconditional, uncompressed object that every client can be served from.
static FILL_DROPPED: [HeaderName; 7] = [
    header::ACCEPT_ENCODING,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];
/// Response headers not stored: framing and encoding are decided at delivery.
static NOT_STORED: [HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::AGE,
    header::VARY,
];

/// `X-Cache`: HIT, MISS, PASS or STALE.
static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// RFC 9211 `Cache-Status`.
static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

thread_local! {
    /// Scratch space for building cache keys without a fresh allocation per request.
    static KEY_BUF: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(256));
}

/// The result of a flight, shared with the requests that waited on it.
#[derive(Debug, Clone)]
enum Flight {
    /// The response was stored: serve this object, unless a hard ban applied since the ban
    /// generation noted before the origin was asked (the second field) selects it: the
    /// waiter may have come after the write behind that ban, so it asks again.
    Stored(Arc<Object>, u64),
    /// The response may not be shared: each waiter goes to the origin itself.
    Uncacheable,
    /// The origin failed with this status; waiters answer the same.
    Failed(StatusCode),
    /// The leader went away before finishing (its client disconnected): retry.
    Abandoned,
}

type FlightRx = watch::Receiver<Option<Flight>>;

/// A taken place among the background refreshes, given back when dropped.
struct RefreshSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for RefreshSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Publishes a flight's result, and `Abandoned` if dropped without one.
struct FlightGuard<'a> {
    flights: &'a parking_lot::Mutex<HashMap<Arc<str>, FlightRx>>,
    key: Arc<str>,
    tx: watch::Sender<Option<Flight>>,
    done: bool,
}

impl FlightGuard<'_> {
    fn finish(mut self, f: Flight) {
        self.flights.lock().remove(&self.key);
        self.tx.send_replace(Some(f));
        self.done = true;
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.flights.lock().remove(&self.key);
            self.tx.send_replace(Some(Flight::Abandoned));
        }
    }
}

/// A response and what happened, before the common headers are added.
struct Answer {
    resp: Response<ProxyBody>,
    outcome: Outcome,
}

impl Answer {
    fn new(resp: Response<ProxyBody>, outcome: Outcome) -> Answer {
        Answer { resp, outcome }
    }
}

/// What the lookup path needs to know about a request.
struct Lookup {
    parts: Parts,
    /// Normalised key of the URL (primary key).
    primary: Arc<str>,
    /// The normalised query, sent to the origin on a fill.
    query: Option<String>,
}

impl Lookup {
    /// Path and normalised query, as sent to the origin on a fill.
    fn origin_path(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.parts.uri.path()),
            None => self.parts.uri.path().to_string(),
        }
    }
}

/// The proxy's shared state.
pub struct Proxy {
    /// The validated configuration; SIGHUP swaps in the parts that apply at once
    /// ([`Proxy::reload`]).
    cfg: arc_swap::ArcSwap<Config>,
    /// The object store.
    pub store: Store,
    /// The origin client.
    pub origin: Origin,
    /// Metric handles.
    pub metrics: Metrics,
    /// Origin fetches in progress, by cache key.
    flights: parking_lot::Mutex<HashMap<Arc<str>, FlightRx>>,
    /// Background refreshes in flight (bounded by `cache.background_refreshes`).
    refreshing: Arc<std::sync::atomic::AtomicUsize>,
    /// When the proxy started, for `/status`.
    pub started: Instant,
    /// Bounds concurrent store-time compressions to the number of cores.
    compress_permits: tokio::sync::Semaphore,
    /// Applies bans to the store and judges in-flight fills against them.
    pub bans: Bans,
    /// Siblings: broadcasting bans, and whether this node holds all of theirs.
    pub cluster: Arc<Cluster>,
    /// How stored objects are tagged.
    tag_rules: TagRules,
    /// Comment POSTs written behind through memcached.
    pub comments: Arc<Comments>,
}

/// A client's request body on its way to the origin: still streaming, or already read.
pub enum ClientBody {
    /// Not read yet.
    Stream(Incoming),
    /// Read in full (a comment form handed back to PHP).
    Read(Bytes),
}

impl From<Incoming> for ClientBody {
    fn from(b: Incoming) -> Self {
        ClientBody::Stream(b)
    }
}

/// Largest comment body read; larger ones go to PHP as they are.
const MAX_COMMENT_BODY: u64 = 2 << 20;

/// What a ban did, for the admin API's answer.
#[derive(Debug, Clone, Copy)]
pub struct BanResult {
    /// The ban's number in this node's sequence.
    pub seq: u64,
    /// Entries removed or marked stale here.
    pub removed: usize,
}

impl Proxy {
    /// Builds the store, the origin pool and the metrics for a configuration.
    pub fn new(cfg: Arc<Config>) -> Proxy {
        Proxy {
            store: Store::new(cfg.cache.capacity),
            origin: Origin::new(&cfg.origin),
            metrics: Metrics::new(cfg.cache.capacity),
            flights: parking_lot::Mutex::new(HashMap::new()),
            refreshing: Arc::default(),
            started: Instant::now(),
            compress_permits: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
            bans: Bans::default(),
            cluster: Arc::new(Cluster::new(&cfg.cluster)),
            comments: Arc::new(Comments::new(&cfg.comments, &cfg.cluster.node_id)),
            tag_rules: TagRules {
                headers: cfg.bans.tag_headers.clone(),
                wordpress: cfg.bans.wordpress,
                max: cfg.bans.max_tags,
            },
            cfg: arc_swap::ArcSwap::new(cfg),
        }
    }

    /// The configuration in force.
    pub fn cfg(&self) -> arc_swap::Guard<Arc<Config>> {
        self.cfg.load()
    }

    /// Applies what can change at once from a configuration read again (SIGHUP); returns
    /// the keys that differ but take a restart (their running values stay).
    pub fn reload(&self, new: Config) -> Vec<&'static str> {
        let (merged, restart) = self.cfg().reloaded(new);
        self.cfg.store(Arc::new(merged));
        restart
    }

    /// Answers one client request. Never fails: every error becomes a response.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, client: SocketAddr) -> Response<ProxyBody> {
        let cfg = self.cfg();
        let log = cfg
            .server
            .access_log
            .then(|| (req.method().clone(), req.uri().clone(), Instant::now()));
        let purge = req.method().as_str() == "PURGE" && cfg.bans.purge_allow.contains(&client.ip());
        drop(cfg);
        let Answer { mut resp, outcome } = match self.refuse(&req) {
            Some(a) if !purge || a.resp.status() == StatusCode::BAD_REQUEST => a,
            _ if purge => self.public_purge(&req),
            _ => self.route(req, client).await,
        };
        self.metrics.request(outcome);
        resp.headers_mut().insert(&X_CACHE, outcome.x_cache());
        if let Some((method, uri, started)) = log {
            tracing::info!(
                target: "strata::access",
                client = %client.ip(),
                method = %method,
                uri = %uri,
                status = resp.status().as_u16(),
                outcome = outcome.as_str(),
                micros = started.elapsed().as_micros() as u64,
            );
        }
        resp
    }

    /// Requests answered without going anywhere near the cache or the origin.
    fn refuse(&self, req: &Request<Incoming>) -> Option<Answer> {
        let (reason, status, text) = self.refusal(req)?;
        self.metrics.client_error(reason);
        let mut resp = synth(status, text, reason);
        if status == StatusCode::BAD_REQUEST {
            // The connection's framing can no longer be trusted.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Some(Answer::new(resp, Outcome::Synth))
    }

    /// Why a request must be refused: metric label, status and the reason given to the client.
    fn refusal(&self, req: &Request<Incoming>) -> Option<(&'static str, StatusCode, &'static str)> {
        let h = req.headers();
        let (reason, status, text) = if h.contains_key(AMBIGUOUS_MARKER) {
            (
                "ambiguous-framing",
                StatusCode::BAD_REQUEST,
                "ambiguous message framing: Content-Length together with Transfer-Encoding",
            )
        } else if h.contains_key(DUPLICATE_CL_MARKER) {
            (
                "ambiguous-framing",
                StatusCode::BAD_REQUEST,
                "ambiguous message framing: more than one Content-Length",
            )
        } else if req.method() == Method::CONNECT {
            (
                "connect",
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported: this is a reverse proxy, not a forward proxy",
            )
        } else if req.method().as_str() == "PURGE" {
            (
                "purge",
                StatusCode::METHOD_NOT_ALLOWED,
                "PURGE is not accepted on the public port; use the signed admin API",
            )
        } else if req.uri().scheme_str().is_some_and(|s| s != "http" && s != "https") {
            ("scheme", StatusCode::BAD_REQUEST, "unsupported URI scheme")
        } else if !req.uri().path().starts_with('/') {
            ("target", StatusCode::BAD_REQUEST, "the request target must be a path")
        } else {
            match host_of(req.uri(), req.headers()) {
                None => ("host", StatusCode::BAD_REQUEST, "missing or invalid Host header"),
                Some(host) if !self.serves_host(host) => (
                    "host",
                    StatusCode::MISDIRECTED_REQUEST,
                    "this server does not serve that host",
                ),
                Some(_) => return None,
            }
        };
        Some((reason, status, text))
    }

    /// The hit path, without an `await`: a request for a fresh stored object is answered
    /// here and now; `None` sends it on to [`Proxy::handle`]. Keeping the hit out
    /// of the request future keeps that (large) future off the most frequent path.
    pub fn try_hit(&self, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
        if self.cfg().server.access_log || self.refusal(req).is_some() || req.headers().contains_key(header::RANGE) {
            return None;
        }
        let (method, uri, headers) = (req.method(), req.uri(), req.headers());
        if policy::pass_reason(&self.cfg().policy, method, uri.path(), uri.query(), headers).is_some() {
            return None;
        }
        let now = Instant::now();
        if !self.cache_trusted(now) {
            return None;
        }
        let slot = self.with_primary_key(uri, headers, tls::is_https(req), |key, _| match self.store.get(key) {
            Some(Slot::Vary(rule)) => self.store.get(&cache::variant_key(key, &rule, headers)),
            slot => slot,
        });
        let Some(Slot::Object(o)) = slot.filter(|s| matches!(s, Slot::Object(o) if o.is_fresh(now))) else {
            return None;
        };
        let ttl = o.ttl_secs(now);
        let mut resp = self.deliver(method, headers, &o, hit_status(ttl));
        self.metrics.request(Outcome::Hit);
        resp.headers_mut().insert(&X_CACHE, Outcome::Hit.x_cache());
        Some(resp)
    }

    fn serves_host(&self, host: &str) -> bool {
        let hosts = &self.cfg().server.hosts;
        if hosts.is_empty() {
            return true;
        }
        let name = strip_port(host).to_ascii_lowercase();
        hosts.contains(&name)
    }

    async fn route(self: &Arc<Self>, req: Request<Incoming>, client: SocketAddr) -> Answer {
        let (parts, body) = req.into_parts();
        if self.comments.enabled()
            && parts.method == Method::POST
            && parts.uri.path() == comments::COMMENT_PATH
            && content_length(&parts.headers).is_some_and(|n| n <= MAX_COMMENT_BODY)
        {
            return self.comment(parts, body, client).await;
        }
        let reason = policy::pass_reason(
            &self.cfg().policy,
            &parts.method,
            parts.uri.path(),
            parts.uri.query(),
            &parts.headers,
        );
        let reason = reason
            .or_else(|| parts.headers.contains_key(header::RANGE).then_some(PassReason::Range))
            .or_else(|| (!self.cache_trusted(Instant::now())).then_some(PassReason::Unconfirmed));
        if let Some(reason) = reason {
            return self.pass(parts, body, client, reason).await;
        }
        let https = parts.extensions.get::<tls::Https>().is_some();
        let (primary, query) = self.with_primary_key(&parts.uri, &parts.headers, https, |key, q| (Arc::from(key), q));
        let lk = Lookup { parts, primary, query };
        self.lookup(lk, body, client).await
    }

    /// Builds a request's primary cache key (normalised host, path and query, and
    /// [`cache::HTTPS_SUFFIX`] for a request that came over TLS) in this thread's key buffer
    /// and hands it to `f` with the normalised query: the one place keys are made,
    /// allocation-free on the hit path.
    fn with_primary_key<R>(
        &self,
        uri: &http::Uri,
        headers: &HeaderMap,
        https: bool,
        f: impl FnOnce(&str, Option<String>) -> R,
    ) -> R {
        let host = host_of(uri, headers).unwrap_or_default();
        let query = policy::normalise_query(uri.query(), &self.cfg().policy.strip_query);
        KEY_BUF.with_borrow_mut(|buf| {
            policy::write_cache_key(buf, host, uri.path(), query.as_deref());
            if https {
                buf.push_str(cache::HTTPS_SUFFIX);
            }
            f(buf, query)
        })
    }

    /// Finds the slot for a request, following a Vary rule to the variant's key.
    fn find(&self, lk: &Lookup) -> (Arc<str>, Option<Slot>) {
        match self.store.get(&lk.primary) {
            Some(Slot::Vary(rule)) => {
                let key: Arc<str> = cache::variant_key(&lk.primary, &rule, &lk.parts.headers).into();
                let slot = self.store.get(&key);
                (key, slot)
            }
            slot => (lk.primary.clone(), slot),
        }
    }

    async fn lookup(self: &Arc<Self>, lk: Lookup, body: Incoming, client: SocketAddr) -> Answer {
        for _ in 0..MAX_FLIGHT_RETRIES {
            let (key, slot) = self.find(&lk);
            let now = Instant::now();
            match slot {
                Some(Slot::Object(o)) if o.is_fresh(now) => {
                    let status = hit_status(o.ttl_secs(now));
                    return Answer::new(
                        self.deliver(&lk.parts.method, &lk.parts.headers, &o, status),
                        Outcome::Hit,
                    );
                }
                Some(Slot::Object(o)) if now < o.grace_until => {
                    self.refresh_in_background(key, &lk, &o, client);
                    let over = now.saturating_duration_since(o.fresh_until.min(now)).as_secs();
                    let status = cache_status(format_args!("hit; fwd=stale; ttl=-{over}"));
                    return Answer::new(
                        self.deliver(&lk.parts.method, &lk.parts.headers, &o, status),
                        Outcome::Stale,
                    );
                }
                Some(Slot::HitForPass(until, _)) if now < until => {
                    return self.pass(lk.parts, body, client, PassReason::HitForPass).await;
                }
                _ => {}
            }
            // A miss: lead a flight for this key, or wait on the one under way.
            let role = {
                let mut flights = self.flights.lock();
                match flights.get(&key) {
                    Some(rx) => Err(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        flights.insert(key.clone(), rx);
                        Ok(tx)
                    }
                }
            };
            match role {
                Ok(tx) => {
                    let guard = FlightGuard {
                        flights: &self.flights,
                        key: key.clone(),
                        tx,
                        done: false,
                    };
                    return self.fill(&lk, key, guard, client).await;
                }
                Err(mut rx) => {
                    let waited = tokio::time::timeout(self.cfg().cache.lock_timeout, async {
                        rx.wait_for(Option::is_some)
                            .await
                            .map(|f| f.clone())
                            .unwrap_or(Some(Flight::Abandoned))
                    })
                    .await;
                    let flight = match waited {
                        Ok(f) => f,
                        Err(_) => return self.pass(lk.parts, body, client, PassReason::LockTimeout).await,
                    };
                    match flight {
                        Some(Flight::Stored(o, generation)) => {
                            if self.bans.since(generation, &lk.primary, &o.tags) == InFlight::Hard {
                                continue;
                            }
                            self.metrics.coalesced.inc();
                            let ttl = o.ttl_secs(Instant::now());
                            let status = cache_status(format_args!("hit; collapsed; ttl={ttl}"));
                            return Answer::new(
                                self.deliver(&lk.parts.method, &lk.parts.headers, &o, status),
                                Outcome::Hit,
                            );
                        }
                        Some(Flight::Uncacheable) => {
                            return self.pass(lk.parts, body, client, PassReason::Uncacheable).await
                        }
                        Some(Flight::Failed(status)) => {
                            let resp = synth(
                                status,
                                "the origin failed for a request collapsed with this one",
                                "origin-error",
                            );
                            return Answer::new(resp, Outcome::Miss);
                        }
                        Some(Flight::Abandoned) | None => continue,
                    }
                }
            }
        }
        self.pass(lk.parts, body, client, PassReason::LockTimeout).await
    }

    /// The request a fill or refresh sends: GET of the normalised URL, the client's headers
    /// minus hop-by-hop, conditional and encoding headers, and minus cookies: a page that
    /// everyone will get must not be shaped by one visitor's cookies (the cookies that make a
    /// page personal already made the request pass). Only a URL whose origin declared
    /// `Vary: Cookie` is fetched with them, each cookie value then being its own variant.
    fn fill_request(&self, lk: &Lookup, client: SocketAddr) -> Result<Request<ProxyBody>, http::Error> {
        let mut headers = lk.parts.headers.clone();
        origin::strip_hop_by_hop(&mut headers);
        for h in &FILL_DROPPED {
            headers.remove(h);
        }
        let varies_on_cookie =
            matches!(self.store.get(&lk.primary), Some(Slot::Vary(rule)) if rule.names.contains(&header::COOKIE));
        if !varies_on_cookie {
            headers.remove(header::COOKIE);
        }
        origin::add_forwarded(&mut headers, client.ip(), proto(&lk.parts));
        set_host(&mut headers, &lk.parts);
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(self.origin.uri(&lk.origin_path())?)
            .version(Version::HTTP_11)
            .body(ProxyBody::Empty)?;
        *req.headers_mut() = headers;
        Ok(req)
    }

    /// The leader's fetch: ask the origin, store what may be stored, answer the client.
    async fn fill(&self, lk: &Lookup, key: Arc<str>, guard: FlightGuard<'_>, client: SocketAddr) -> Answer {
        let generation = self.bans.generation();
        let (req, sent) = match self.fill_request(lk, client) {
            Ok(r) => {
                let sent = r.headers().clone();
                (r, sent)
            }
            Err(e) => {
                guard.finish(Flight::Failed(StatusCode::BAD_REQUEST));
                return Answer::new(
                    synth(
                        StatusCode::BAD_REQUEST,
                        &format!("invalid request target: {e}"),
                        "target",
                    ),
                    Outcome::Synth,
                );
            }
        };
        let resp = match self.send(req).await {
            Ok(r) => r,
            Err(e) => {
                guard.finish(Flight::Failed(e.status()));
                return Answer::new(self.origin_failure(&e, &lk.origin_path()), Outcome::Miss);
            }
        };
        let (mut parts, body) = resp.into_parts();
        origin::strip_hop_by_hop(&mut parts.headers);
        let verdict =
            freshness::lifetime(&self.cfg().cache, parts.status, &parts.headers, SystemTime::now()).and_then(|life| {
                let too_big = content_length(&parts.headers).is_some_and(|n| n > self.cfg().cache.max_object_size);
                let coding = parts
                    .headers
                    .get(header::CONTENT_ENCODING)
                    .map(|v| v.as_bytes().to_ascii_lowercase());
                match coding.as_deref() {
                    _ if too_big => Err(NoStore::TooLarge),
                    None | Some(b"identity") | Some(b"gzip") => Ok(life),
                    Some(_) => Err(NoStore::Encoding),
                }
            });
        let life = match verdict {
            Ok(life) => life,
            Err(why) => {
                self.metrics.not_stored(why.as_str());
                let flight = self.remember_uncacheable(&key, parts.status, why);
                guard.finish(flight);
                let status = cache_status(format_args!(
                    "fwd=uri-miss; fwd-status={}; detail={}",
                    parts.status.as_u16(),
                    why.as_str()
                ));
                return Answer::new(self.stream_back(parts, body, None, status), Outcome::Miss);
            }
        };
        // Read the body, up to the object size limit.
        let limit = self.cfg().cache.max_object_size;
        let mut body = ProxyBody::stream(body, None, self.origin.body_timeout);
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(data) = f.into_data() {
                        buf.extend_from_slice(&data);
                    }
                    if buf.len() as u64 > limit {
                        self.metrics.not_stored(NoStore::TooLarge.as_str());
                        guard.finish(self.remember_uncacheable(&key, parts.status, NoStore::TooLarge));
                        let status = cache_status(format_args!(
                            "fwd=uri-miss; fwd-status={}; detail=too-large",
                            parts.status.as_u16()
                        ));
                        let resp = Response::from_parts(parts, chain(buf.freeze(), body));
                        return Answer::new(with_status(resp, status), Outcome::Miss);
                    }
                }
                Err(e) => {
                    tracing::warn!(url = %lk.origin_path(), error = %origin::error_chain(e.as_ref()), "origin body failed");
                    self.metrics.origin_error("body");
                    guard.finish(Flight::Failed(StatusCode::BAD_GATEWAY));
                    return Answer::new(
                        synth(
                            StatusCode::BAD_GATEWAY,
                            "the origin's response broke off",
                            "origin-error",
                        ),
                        Outcome::Miss,
                    );
                }
            }
        }
        let obj = match self
            .build_object(parts, buf.freeze(), life, lk.parts.uri.path(), lk.query.as_deref())
            .await
        {
            Some(o) => o,
            None => {
                self.metrics.not_stored(NoStore::Encoding.as_str());
                guard.finish(Flight::Failed(StatusCode::BAD_GATEWAY));
                return Answer::new(
                    synth(
                        StatusCode::BAD_GATEWAY,
                        "the origin sent an undecodable gzip body",
                        "origin-error",
                    ),
                    Outcome::Miss,
                );
            }
        };
        let stored = self.store_object(&lk.primary, &sent, &obj, generation);
        guard.finish(Flight::Stored(obj.clone(), generation));
        let status = if stored {
            cache_status(format_args!("fwd=uri-miss; fwd-status={}; stored", obj.status.as_u16()))
        } else {
            cache_status(format_args!(
                "fwd=uri-miss; fwd-status={}; detail=banned-in-flight",
                obj.status.as_u16()
            ))
        };
        Answer::new(
            self.deliver(&lk.parts.method, &lk.parts.headers, &obj, status),
            Outcome::Miss,
        )
    }

    /// Records a hit-for-pass marker for answers that will not change on the next request,
    /// and says what the waiters should do.
    fn remember_uncacheable(&self, key: &Arc<str>, status: StatusCode, why: NoStore) -> Flight {
        if status.is_server_error() {
            // A transient failure: don't pin the URL to PASS, and don't send every waiter on.
            return Flight::Failed(status);
        }
        let until = Instant::now() + self.cfg().cache.hit_for_pass_ttl;
        self.store.insert(key.clone(), Slot::HitForPass(until, why.as_str()));
        Flight::Uncacheable
    }

    /// Stores an object, under a Vary rule when the origin varies on request headers.
    /// `req` are the request headers the object was fetched with (for variant keys);
    /// `generation` is the ban generation noted before the origin was asked: an object that
    /// a hard ban since then selects is not stored (it may predate the write behind the ban),
    /// one that only soft bans select is stored stale. Returns whether it was stored.
    fn store_object(&self, primary: &Arc<str>, req: &HeaderMap, obj: &Arc<Object>, generation: u64) -> bool {
        if !self.judged_in_flight(primary, obj, generation) {
            self.metrics.not_stored("banned-in-flight");
            return false;
        }
        let names = cache::vary_names(&obj.headers);
        if names.is_empty() {
            self.store.insert(primary.clone(), Slot::Object(obj.clone()));
            return self.kept_after_insert(primary, primary, obj, generation);
        }
        let rule = match self.store.get(primary) {
            Some(Slot::Vary(rule)) if rule.names == names => rule,
            _ => {
                let rule = Arc::new(VaryRule {
                    names,
                    variants: Default::default(),
                });
                self.store.insert(primary.clone(), Slot::Vary(rule.clone()));
                rule
            }
        };
        if rule.variants.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= self.cfg().cache.max_variants {
            self.metrics.not_stored("too-many-variants");
            return false;
        }
        let vkey: Arc<str> = cache::variant_key(primary, &rule, req).into();
        self.store.insert(vkey.clone(), Slot::Object(obj.clone()));
        self.kept_after_insert(primary, &vkey, obj, generation)
    }

    /// Judges an object whose fill began at ban `generation` against the bans since: false
    /// when a hard one selects it; marked stale when only soft ones do.
    fn judged_in_flight(&self, primary: &Arc<str>, obj: &Object, generation: u64) -> bool {
        match self.bans.since(generation, primary, &obj.tags) {
            InFlight::Untouched => true,
            InFlight::Soft => {
                obj.banned.store(true, std::sync::atomic::Ordering::Relaxed);
                true
            }
            InFlight::Hard => false,
        }
    }

    /// Checks a just-stored object against the bans again: a ban that arrived between the
    /// check before storing and the insert walked the store before the object was in it, so
    /// the object is taken out again (the next request fetches it anew), or marked stale
    /// when the ban was soft.
    fn kept_after_insert(&self, primary: &Arc<str>, key: &Arc<str>, obj: &Arc<Object>, generation: u64) -> bool {
        if self.judged_in_flight(primary, obj, generation) {
            return true;
        }
        if let Some(Slot::Object(current)) = self.store.get(key) {
            if current.id == obj.id {
                self.store.remove(key);
            }
        }
        self.metrics.not_stored("banned-in-flight");
        false
    }

    /// Turns an origin response into a stored object: decoded, compressed, with validators.
    async fn build_object(
        &self,
        parts: http::response::Parts,
        body: Bytes,
        life: freshness::Lifetime,
        path: &str,
        query: Option<&str>,
    ) -> Option<Arc<Object>> {
        let gzipped = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let compressible = compress::compressible(parts.headers.get(header::CONTENT_TYPE));
        let min = self.cfg().cache.compress_min_size as usize;
        let limit = self.cfg().cache.max_object_size;
        let want_br = self.cfg().cache.brotli;
        let work = move || -> Option<(Bytes, Option<Bytes>, Option<Bytes>)> {
            // A copy of exactly the body's size: `body` may sit in a larger, grown buffer.
            let identity = if gzipped {
                compress::gunzip(&body, limit)?
            } else {
                Bytes::copy_from_slice(&body)
            };
            if !compressible || identity.len() < min {
                return Some((identity, None, None));
            }
            let gz = compress::gzip(&identity);
            let br = if want_br {
                compress::brotli(&identity, gz.as_ref().map_or(identity.len(), |g| g.len()))
            } else {
                None
            };
            Some((identity, gz, br))
        };
        let (identity, gzip, br) = if gzipped || compressible {
            // Compression runs on the blocking pool, a few at a time: each encoder holds
            // hundreds of KiB while it works, and a burst of misses must not multiply that.
            let _permit = self.compress_permits.acquire().await.ok()?;
            tokio::task::spawn_blocking(work).await.ok()??
        } else {
            work()?
        };
        // Copy what is kept into allocations of its own: header values parsed by hyper are
        // slices of the connection's read buffer, which they would otherwise keep alive.
        let vary = cache::vary_names(&parts.headers);
        let tags = tags::object_tags(&self.tag_rules, path, query, parts.status, &parts.headers, &identity);
        let strip_tags = self.cfg().bans.strip_tag_headers;
        let mut headers = HeaderMap::with_capacity(parts.headers.len());
        for (name, value) in parts.headers.iter() {
            if NOT_STORED.contains(name) || strip_tags && self.cfg().bans.tag_headers.contains(name) {
                continue;
            }
            if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
                headers.append(name.clone(), v);
            }
        }
        // Vary as delivered: the origin's request headers plus the encoding we negotiate.
        let mut vary_list: Vec<&str> = vary.iter().map(|n| n.as_str()).collect();
        if gzip.is_some() || br.is_some() {
            vary_list.push("Accept-Encoding");
        }
        if !vary_list.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&vary_list.join(", ")) {
                headers.insert(header::VARY, v);
            }
        }
        let etag = match headers.get(header::ETAG) {
            Some(e) => Some(e.clone()),
            None if parts.status == StatusCode::OK => {
                let tag = HeaderValue::from_str(&format!("W/\"{:016x}-{:x}\"", fnv1a(&identity), identity.len())).ok();
                if let Some(t) = &tag {
                    headers.insert(header::ETAG, t.clone());
                }
                tag
            }
            None => None,
        };
        let last_modified = headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s).ok());
        add_delivery_slots(&mut headers, gzip.is_some() || br.is_some());
        let now = Instant::now();
        let (fresh_until, grace_until) = self.lifetime_bounds(now, &life);
        Some(Arc::new(Object {
            status: parts.status,
            headers,
            identity,
            gzip,
            br,
            etag,
            last_modified,
            stored_at: now,
            initial_age: life.initial_age,
            fresh_until,
            grace_until,
            compressible,
            tags: tags.into_iter().map(Arc::from).collect(),
            id: cache::next_object_id(),
            banned: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Serves a stored object: conditional 304, encoding by `Accept-Encoding`, HEAD.
    fn deliver(&self, method: &Method, req: &HeaderMap, o: &Arc<Object>, status: HeaderValue) -> Response<ProxyBody> {
        let age = age_value(o.age(Instant::now()));
        if o.status == StatusCode::OK && not_modified(req, o) {
            let mut resp = Response::new(ProxyBody::Empty);
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            let h = resp.headers_mut();
            for name in [
                header::ETAG,
                header::CACHE_CONTROL,
                header::EXPIRES,
                header::VARY,
                header::DATE,
                header::LAST_MODIFIED,
                header::CONTENT_LOCATION,
            ] {
                if let Some(v) = o.headers.get(&name) {
                    h.insert(name, v.clone());
                }
            }
            h.insert(header::AGE, age);
            h.insert(&CACHE_STATUS, status);
            return resp;
        }
        let enc = if o.compressible {
            compress::negotiate(req.get(header::ACCEPT_ENCODING), o.gzip.is_some(), o.br.is_some())
        } else {
            Encoding::Identity
        };
        let (enc, body) = o.body(enc);
        let head = *method == Method::HEAD;
        let mut resp = Response::new(if head {
            ProxyBody::Empty
        } else {
            ProxyBody::full(body.clone())
        });
        *resp.status_mut() = o.status;
        let h = resp.headers_mut();
        h.clone_from(&o.headers);
        match enc.header() {
            Some(ce) => h.insert(header::CONTENT_ENCODING, ce),
            None => h.remove(header::CONTENT_ENCODING),
        };
        if head {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        h.insert(header::AGE, age);
        h.insert(&CACHE_STATUS, status);
        resp
    }

    /// Serves stale while one background request refreshes the object (none when
    /// `cache.background_refreshes` are already in flight: a later request starts it).
    fn refresh_in_background(self: &Arc<Self>, key: Arc<str>, lk: &Lookup, stale: &Arc<Object>, client: SocketAddr) {
        use std::sync::atomic::Ordering;
        let cap = self.cfg().cache.background_refreshes;
        if self
            .refreshing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1))
            .is_err()
        {
            self.metrics.background_refreshes_deferred.inc();
            return;
        }
        let slot = RefreshSlot(self.refreshing.clone());
        let tx = {
            let mut flights = self.flights.lock();
            if flights.contains_key(&key) {
                return;
            }
            let (tx, rx) = watch::channel(None);
            flights.insert(key.clone(), rx);
            tx
        };
        let Ok(mut req) = self.fill_request(lk, client) else {
            return;
        };
        // Revalidate when the object has the origin's validators.
        if let Some(etag) = stale
            .headers
            .get(header::ETAG)
            .filter(|_| stale.etag.as_ref().is_some_and(|e| !is_derived_etag(e)))
        {
            req.headers_mut().insert(header::IF_NONE_MATCH, etag.clone());
        }
        if let Some(lm) = stale.headers.get(header::LAST_MODIFIED) {
            req.headers_mut().insert(header::IF_MODIFIED_SINCE, lm.clone());
        }
        let this = self.clone();
        let primary = lk.primary.clone();
        let stale = stale.clone();
        let target = (lk.parts.uri.path().to_string(), lk.query.clone());
        self.metrics.background_refreshes.inc();
        tokio::spawn(async move {
            let _slot = slot;
            let guard = FlightGuard {
                flights: &this.flights,
                key: key.clone(),
                tx,
                done: false,
            };
            let flight = this.refresh(req, &primary, key, &stale, &target).await;
            guard.finish(flight);
        });
    }

    async fn refresh(
        &self,
        req: Request<ProxyBody>,
        primary: &Arc<str>,
        key: Arc<str>,
        stale: &Arc<Object>,
        (path, query): &(String, Option<String>),
    ) -> Flight {
        let generation = self.bans.generation();
        let url = req.uri().clone();
        let req_headers = req.headers().clone();
        let resp = match self.send(req).await {
            Ok(r) => r,
            Err(e) => {
                // stale-if-error: keep serving the stale copy until its grace ends.
                tracing::warn!(%url, error = %e, "background refresh failed; serving stale");
                return Flight::Failed(e.status());
            }
        };
        let (mut parts, body) = resp.into_parts();
        origin::strip_hop_by_hop(&mut parts.headers);
        if parts.status.is_server_error() {
            tracing::warn!(%url, status = parts.status.as_u16(), "origin error on background refresh; serving stale");
            return Flight::Failed(parts.status);
        }
        if parts.status == StatusCode::NOT_MODIFIED {
            let mut headers = stale.headers.clone();
            for (name, value) in parts.headers.iter() {
                if !NOT_STORED.contains(name) {
                    headers.insert(name.clone(), value.clone());
                }
            }
            return match freshness::lifetime(&self.cfg().cache, stale.status, &headers, SystemTime::now()) {
                Ok(life) => {
                    let now = Instant::now();
                    let (fresh_until, grace_until) = self.lifetime_bounds(now, &life);
                    let obj = Arc::new(Object {
                        status: stale.status,
                        headers,
                        identity: stale.identity.clone(),
                        gzip: stale.gzip.clone(),
                        br: stale.br.clone(),
                        etag: stale.etag.clone(),
                        last_modified: stale.last_modified,
                        stored_at: now,
                        initial_age: life.initial_age,
                        fresh_until,
                        grace_until,
                        compressible: stale.compressible,
                        tags: stale.tags.clone(),
                        id: cache::next_object_id(),
                        banned: std::sync::atomic::AtomicBool::new(false),
                    });
                    self.store_object(primary, &req_headers, &obj, generation);
                    Flight::Stored(obj, generation)
                }
                Err(_) => Flight::Uncacheable,
            };
        }
        let life = match freshness::lifetime(&self.cfg().cache, parts.status, &parts.headers, SystemTime::now()) {
            Ok(l) => l,
            Err(why) => {
                // The URL became uncacheable: drop the stale copy.
                self.metrics.not_stored(why.as_str());
                self.store.remove(&key);
                return self.remember_uncacheable(&key, parts.status, why);
            }
        };
        let limit = self.cfg().cache.max_object_size;
        let collected = tokio::time::timeout(
            self.origin.body_timeout,
            http_body_util::Limited::new(body, limit as usize).collect(),
        )
        .await;
        let body = match collected {
            Ok(Ok(c)) => c.to_bytes(),
            _ => {
                tracing::warn!(%url, "origin body failed or too large on background refresh");
                return Flight::Failed(StatusCode::BAD_GATEWAY);
            }
        };
        match self.build_object(parts, body, life, path, query.as_deref()).await {
            Some(obj) => {
                self.store_object(primary, &req_headers, &obj, generation);
                Flight::Stored(obj, generation)
            }
            None => Flight::Failed(StatusCode::BAD_GATEWAY),
        }
    }

    /// Whether cached objects may be served: always on a node that is current with its
    /// siblings; otherwise per `cluster.when_unconfirmed`, after flushing once.
    #[inline]
    pub fn cache_trusted(&self, now: Instant) -> bool {
        if self.cluster.confirmed(now) {
            return true;
        }
        match self.cfg().cluster.when_unconfirmed {
            crate::config::Unconfirmed::Pass => false,
            crate::config::Unconfirmed::Flush => {
                if self.cluster.take_flush() {
                    self.flush(FlushReason::Unconfirmed);
                }
                true
            }
        }
    }

    /// Housekeeping for the cluster, run every maintenance tick: flush when unconfirmed (so
    /// it does not wait for the next request) and publish the cluster's metrics.
    pub fn check_cluster(&self) {
        let now = Instant::now();
        let confirmed = self.cluster.confirmed(now);
        if !confirmed {
            self.cache_trusted(now);
        }
        let m = &self.metrics.cluster;
        m.confirmed.set(i64::from(confirmed));
        m.tags(self.store.tags.len());
        for s in self.cluster.report() {
            let lag = s.confirmed_ms_ago.map_or(f64::INFINITY, |ms| ms as f64 / 1000.0);
            m.sibling(&s.url, s.queued, s.up, lag);
        }
    }

    /// Empties the cache on the cluster's behalf.
    pub fn flush(&self, why: FlushReason) {
        let n = self.store.entry_count();
        if let Ok(all) = Compiled::new(Ban::all(), &[]) {
            self.bans.apply(&self.store, Arc::new(all));
        }
        self.metrics.cluster.flush(why.as_str());
        if n > 0 || why != FlushReason::Unconfirmed {
            tracing::warn!(reason = why.as_str(), objects = n, "flushed the cache");
        }
    }

    /// Freshness and grace ends of an object stored now: while the node is unconfirmed, at
    /// most `confirm_within` and no grace.
    fn lifetime_bounds(&self, now: Instant, life: &freshness::Lifetime) -> (Instant, Instant) {
        let (fresh, grace) = (now + life.ttl, now + life.ttl + life.grace);
        if self.cluster.confirmed(now) {
            (fresh, grace)
        } else {
            let cap = now + self.cluster.unconfirmed_ttl();
            (fresh.min(cap), fresh.min(cap))
        }
    }

    /// Applies a ban here and queues it for every sibling; an invalid ban is neither.
    pub fn ban(&self, ban: Ban) -> Result<BanResult, BanError> {
        let c = Compiled::new(ban, &self.cfg().policy.strip_query)?;
        Ok(self.apply_ban(c))
    }

    /// Applies bans in order, each as [`Proxy::ban`] does, once every one of them is known
    /// to be valid: if one is not, none is applied, and the error is the first invalid
    /// one's index with why.
    pub fn ban_all(&self, bans: Vec<Ban>) -> Result<Vec<BanResult>, (usize, BanError)> {
        let strip = &self.cfg().policy.strip_query;
        let compiled = bans
            .into_iter()
            .enumerate()
            .map(|(i, ban)| Compiled::new(ban, strip).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(compiled.into_iter().map(|c| self.apply_ban(c)).collect())
    }

    /// Applies a checked ban here and queues it for every sibling.
    fn apply_ban(&self, c: Compiled) -> BanResult {
        let c = Arc::new(c);
        let removed = self.bans.apply(&self.store, c.clone());
        self.metrics.cluster.applied(c.kind());
        self.metrics.purges.inc();
        let seq = self.cluster.broadcast(&c.ban);
        tracing::info!(kind = c.kind(), value = %c.ban.value, host = c.ban.host.as_deref().unwrap_or("*"), soft = c.ban.soft, seq, removed, "ban");
        BanResult { seq, removed }
    }

    /// Takes a sibling's sync: applies its bans once and in order (or flushes on a gap or a
    /// restart), then says how far this node got.
    pub fn receive_sync(&self, req: &strata_wire::ban::SyncRequest) -> strata_wire::ban::SyncReply {
        let m = &self.metrics.cluster;
        let admission = self.cluster.admit(req);
        m.received.inc_by(req.bans.len() as u64);
        if let Some(why) = admission.flush {
            tracing::warn!(from = %req.node, reason = why.as_str(), "sibling's ban sequence broke; flushing");
            self.flush(why);
        }
        let now_ms = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for &i in &admission.apply {
            let item = &req.bans[i];
            match Compiled::new(item.ban.clone(), &self.cfg().policy.strip_query) {
                Ok(c) => {
                    let kind = c.kind();
                    let removed = self.bans.apply(&self.store, Arc::new(c));
                    m.applied(kind);
                    tracing::debug!(from = %req.node, seq = item.seq, kind, removed, "sibling's ban applied");
                }
                Err(e) => {
                    tracing::warn!(from = %req.node, seq = item.seq, error = %e, "sibling's ban unreadable; flushing");
                    self.flush(FlushReason::Gap);
                }
            }
            m.propagation.observe(now_ms.saturating_sub(item.at_ms) as f64 / 1000.0);
        }
        self.cluster.reply(admission.applied)
    }

    /// `PURGE` on the public port from an allowlisted address (what WordPress purge plugins
    /// send): `X-Purge-Method: regex` bans the path expression on that host, anything else
    /// the exact URL with its variants. Applied and broadcast like any ban.
    fn public_purge(&self, req: &Request<Incoming>) -> Answer {
        let Some(host) = host_of(req.uri(), req.headers()) else {
            return Answer::new(
                synth(StatusCode::BAD_REQUEST, "missing or invalid Host header", "host"),
                Outcome::Synth,
            );
        };
        let method = req
            .headers()
            .get("x-purge-method")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("default")
            .to_ascii_lowercase();
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut ban = if method == "regex" {
            // The plugin sends a path expression such as `/.*` or `/category/.*`; keys are
            // `host/path?query`.
            Ban::new(Kind::Regex, format!("^[^/]*(?:{path})"))
        } else {
            Ban::new(Kind::Url, path)
        };
        ban.host = Some(host.to_string());
        match self.ban(ban) {
            Ok(r) => {
                let mut resp = Response::new(ProxyBody::full(Bytes::from(format!(
                    "{{\"seq\":{},\"removed\":{}}}\n",
                    r.seq, r.removed
                ))));
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Answer::new(resp, Outcome::Synth)
            }
            Err(e) => Answer::new(synth(StatusCode::BAD_REQUEST, &e.to_string(), "purge"), Outcome::Synth),
        }
    }

    /// Sends to the origin, timing it and counting failures.
    async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, OriginError> {
        let t = Instant::now();
        self.metrics.origin_requests.inc();
        let r = self.origin.send(req).await;
        match &r {
            Ok(_) => self.metrics.origin_latency.observe(t.elapsed().as_secs_f64()),
            Err(e) => self.metrics.origin_error(e.as_str()),
        }
        r
    }

    fn origin_failure(&self, e: &OriginError, url: &str) -> Response<ProxyBody> {
        tracing::warn!(url, error = %e, "origin request failed");
        let text = match e {
            OriginError::Timeout { .. } => "the origin did not answer in time",
            _ => "the origin could not be reached",
        };
        synth(e.status(), text, "origin-error")
    }

    /// Streams an origin response to the client unchanged (less hop-by-hop headers).
    fn stream_back(
        &self,
        parts: http::response::Parts,
        body: Incoming,
        prefix: Option<Bytes>,
        status: HeaderValue,
    ) -> Response<ProxyBody> {
        let resp = Response::from_parts(parts, ProxyBody::stream(body, prefix, self.origin.body_timeout));
        with_status(resp, status)
    }

    /// A comment POST: queued for the syncer and answered here, or handed to PHP.
    async fn comment(&self, parts: Parts, body: Incoming, client: SocketAddr) -> Answer {
        let limit = MAX_COMMENT_BODY as usize;
        let read = tokio::time::timeout(
            self.origin.body_timeout,
            http_body_util::Limited::new(body, limit).collect(),
        )
        .await;
        let bytes = match read {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => {
                return Answer::new(
                    synth(
                        StatusCode::BAD_REQUEST,
                        &format!("the comment body could not be read: {e}"),
                        "body",
                    ),
                    Outcome::Synth,
                )
            }
            Err(_) => {
                return Answer::new(
                    synth(
                        StatusCode::REQUEST_TIMEOUT,
                        "the comment body did not arrive in time",
                        "body-timeout",
                    ),
                    Outcome::Synth,
                )
            }
        };
        match self.comments.handle(&parts.headers, bytes, client, &self.metrics).await {
            Handled::Answer(mut resp, result) => {
                self.metrics.comment(result);
                let status = cache_status(format_args!("fwd=bypass; detail=comment-{result}"));
                resp.headers_mut().insert(&CACHE_STATUS, status);
                Answer::new(resp, Outcome::Synth)
            }
            Handled::ToPhp(why, bytes) => {
                self.metrics.comment(why.php_label());
                tracing::debug!(reason = why.as_str(), "comment passed to PHP");
                self.pass(parts, ClientBody::Read(bytes), client, PassReason::Method)
                    .await
            }
        }
    }

    /// The body to send to the origin, and the body itself when it was read: the few
    /// WordPress write endpoints whose small form bodies say which post a write touches are
    /// read first (bounded); everything else streams.
    async fn body_for_origin(&self, parts: &Parts, body: ClientBody) -> Result<(ProxyBody, Option<Bytes>), Answer> {
        let body = match body {
            ClientBody::Stream(b) => b,
            ClientBody::Read(bytes) => return Ok((ProxyBody::full(bytes.clone()), Some(bytes))),
        };
        let has_body = !body.is_end_stream();
        if !has_body {
            return Ok((ProxyBody::Empty, None));
        }
        if !writes::wants_body(&parts.method, parts.uri.path(), content_length(&parts.headers)) {
            return Ok((ProxyBody::stream(body, None, self.origin.body_timeout), None));
        }
        let limit = writes::MAX_INSPECTED_BODY as usize;
        match tokio::time::timeout(
            self.origin.body_timeout,
            http_body_util::Limited::new(body, limit).collect(),
        )
        .await
        {
            Ok(Ok(b)) => {
                let b = b.to_bytes();
                Ok((ProxyBody::full(b.clone()), Some(b)))
            }
            Ok(Err(e)) => Err(Answer::new(
                synth(
                    StatusCode::BAD_REQUEST,
                    &format!("the request body could not be read: {e}"),
                    "body",
                ),
                Outcome::Synth,
            )),
            Err(_) => Err(Answer::new(
                synth(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                    "body-timeout",
                ),
                Outcome::Synth,
            )),
        }
    }

    /// Sends a request to the origin without a lookup, streaming both bodies.
    async fn pass(&self, parts: Parts, body: impl Into<ClientBody>, client: SocketAddr, reason: PassReason) -> Answer {
        self.metrics.pass(reason.as_str());
        let (out_body, inspected) = match self.body_for_origin(&parts, body.into()).await {
            Ok(b) => b,
            Err(refusal) => return refusal,
        };
        let mut headers = parts.headers.clone();
        origin::strip_hop_by_hop(&mut headers);
        origin::add_forwarded(&mut headers, client.ip(), proto(&parts));
        set_host(&mut headers, &parts);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = match self.origin.uri(path) {
            Ok(u) => u,
            Err(e) => {
                return Answer::new(
                    synth(
                        StatusCode::BAD_REQUEST,
                        &format!("invalid request target: {e}"),
                        "target",
                    ),
                    Outcome::Synth,
                )
            }
        };
        let mut req = Request::new(out_body);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let resp = match self.send(req).await {
            Ok(r) => r,
            Err(e) => return Answer::new(self.origin_failure(&e, path), Outcome::Pass),
        };
        let (mut rparts, rbody) = resp.into_parts();
        origin::strip_hop_by_hop(&mut rparts.headers);
        let mut last_seq = None;
        if let Some(host) = host_of(&parts.uri, &parts.headers) {
            let write = writes::Write {
                method: &parts.method,
                host,
                path: parts.uri.path(),
                query: parts.uri.query(),
                req: &parts.headers,
                body: inspected.as_deref(),
                status: rparts.status,
                resp: &rparts.headers,
            };
            for ban in writes::bans_for(&write, self.cfg().bans.wordpress) {
                match self.ban(ban.clone()) {
                    Ok(r) => last_seq = Some(r.seq),
                    Err(e) => {
                        // A rule made a ban that does not compile (say, an odd Location): fall
                        // back to the whole site rather than risk a stale page.
                        tracing::warn!(?ban, error = %e, "write-triggered ban refused; banning the site's HTML instead");
                        let mut site = Ban::new(Kind::Tag, tags::HTML);
                        site.host = Some(host.to_string());
                        last_seq = self.ban(site).ok().map(|r| r.seq).or(last_seq);
                    }
                }
            }
        }
        if let Some(seq) = last_seq {
            // Read-your-writes on every node: the writer's next request may go to a sibling,
            // so the answer waits (briefly, bounded) until reachable siblings have the bans.
            let wait = self.cfg().cluster.write_wait;
            if !wait.is_zero() && !self.cluster.siblings.is_empty() {
                for (sibling, acked, took) in self.cluster.wait_acked(seq, wait, true).await {
                    if !acked {
                        tracing::warn!(%sibling, waited = ?took, seq, "sibling has not acknowledged a write's bans yet; answering anyway");
                    }
                }
            }
        }
        let status = cache_status(format_args!(
            "fwd=bypass; fwd-status={}; detail={}",
            rparts.status.as_u16(),
            reason.as_str()
        ));
        Answer::new(self.stream_back(rparts, rbody, None, status), Outcome::Pass)
    }
}

/// Adds the headers every delivery sets (with placeholder values) to a stored header map, so
/// that delivering replaces values in place instead of growing the cloned map.
fn add_delivery_slots(headers: &mut HeaderMap, compressed: bool) {
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
fn age_value(secs: u64) -> HeaderValue {
    match numbered().get(secs as usize) {
        Some([age, _]) => age.clone(),
        None => HeaderValue::from(secs),
    }
}

/// The `Cache-Status` of a fresh hit with `ttl` seconds of freshness left.
fn hit_status(ttl: u64) -> HeaderValue {
    match numbered().get(ttl as usize) {
        Some([_, status]) => status.clone(),
        None => cache_status(format_args!("hit; ttl={ttl}")),
    }
}

/// A `Cache-Status` value naming this cache.
fn cache_status(params: std::fmt::Arguments<'_>) -> HeaderValue {
    HeaderValue::from_str(&format!("Strata; {params}")).unwrap_or(HeaderValue::from_static("Strata"))
}

fn with_status(mut resp: Response<ProxyBody>, status: HeaderValue) -> Response<ProxyBody> {
    resp.headers_mut().insert(&CACHE_STATUS, status);
    resp
}

/// A body made of bytes already read followed by the rest of a stream.
fn chain(prefix: Bytes, rest: ProxyBody) -> ProxyBody {
    match rest {
        ProxyBody::Stream(mut s) => {
            s.set_prefix(prefix);
            ProxyBody::Stream(s)
        }
        _ => ProxyBody::full(prefix),
    }
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

/// The target host: the URI's authority in absolute form, else the Host header.
fn host_of<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    if let Some(a) = uri.authority() {
        return Some(a.as_str());
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next()?.to_str().ok()?;
    if hosts.next().is_some() || host.is_empty() || host.contains(['/', ' ', '@']) {
        return None;
    }
    Some(host)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The scheme the client used, for `X-Forwarded-Proto`.
fn proto(parts: &Parts) -> &'static str {
    if parts.extensions.get::<tls::Https>().is_some() {
        "https"
    } else {
        "http"
    }
}

/// Keeps the client's Host (from an absolute-form target if there was one).
fn set_host(headers: &mut HeaderMap, parts: &Parts) {
    if let Some(a) = parts.uri.authority() {
        if let Ok(v) = HeaderValue::from_str(a.as_str()) {
            headers.insert(header::HOST, v);
        }
    }
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Whether a request's validators match the object (RFC 9110 §13.1.1, §13.1.3).
fn not_modified(req: &HeaderMap, o: &Object) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = o.etag.as_ref().and_then(|e| e.to_str().ok()) else {
            return false;
        };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return inm.split(',').any(|t| t.trim() == "*" || weak(t) == weak(etag));
    }
    if let (Some(ims), Some(lm)) = (req.get(header::IF_MODIFIED_SINCE), o.last_modified) {
        if let Some(ims) = ims.to_str().ok().and_then(|s| httpdate::parse_http_date(s).ok()) {
            return lm <= ims;
        }
    }
    false
}

/// FNV-1a: a fixed hash, so every node derives the same ETag for the same body.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn is_derived_etag(e: &HeaderValue) -> bool {
    e.as_bytes().starts_with(b"W/\"") && e.len() > 20 && e.as_bytes()[19] == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn obj(etag: Option<&str>, lm: Option<SystemTime>) -> Object {
        let now = Instant::now();
        Object {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            identity: Bytes::new(),
            gzip: None,
            br: None,
            etag: etag.map(|e| HeaderValue::from_str(e).unwrap()),
            last_modified: lm,
            stored_at: now,
            initial_age: Duration::ZERO,
            fresh_until: now,
            grace_until: now,
            compressible: false,
            tags: Box::default(),
            id: cache::next_object_id(),
            banned: Default::default(),
        }
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn etag_matching_is_weak() {
        let o = obj(Some("W/\"abc\""), None);
        assert!(not_modified(&req(&[("if-none-match", "\"abc\"")]), &o));
        assert!(not_modified(&req(&[("if-none-match", "\"x\", W/\"abc\"")]), &o));
        assert!(not_modified(&req(&[("if-none-match", "*")]), &o));
        assert!(!not_modified(&req(&[("if-none-match", "\"abd\"")]), &o));
        assert!(!not_modified(&HeaderMap::new(), &o));
    }

    #[test]
    fn if_modified_since_compares_dates_and_yields_to_etags() {
        let lm = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let o = obj(Some("\"a\""), Some(lm));
        let same = httpdate::fmt_http_date(lm);
        let before = httpdate::fmt_http_date(lm - Duration::from_secs(1));
        assert!(not_modified(&req(&[("if-modified-since", &same)]), &o));
        assert!(!not_modified(&req(&[("if-modified-since", &before)]), &o));
        assert!(!not_modified(
            &req(&[("if-modified-since", &same), ("if-none-match", "\"b\"")]),
            &o
        ));
    }

    #[test]
    fn hosts_come_from_the_target_or_a_single_host_header() {
        let uri: http::Uri = "/x".parse().unwrap();
        assert_eq!(
            host_of(&uri, &req(&[("host", "a.example:8080")])),
            Some("a.example:8080")
        );
        let abs: http::Uri = "http://b.example/x".parse().unwrap();
        assert_eq!(host_of(&abs, &req(&[("host", "a.example")])), Some("b.example"));
        assert_eq!(host_of(&uri, &HeaderMap::new()), None);
        assert_eq!(host_of(&uri, &req(&[("host", "a/b")])), None);
        assert_eq!(strip_port("a.example:8080"), "a.example");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }

    #[test]
    fn derived_etags_are_recognised_and_stable() {
        let body = b"hello";
        let tag = format!("W/\"{:016x}-{:x}\"", fnv1a(body), body.len());
        assert!(is_derived_etag(&HeaderValue::from_str(&tag).unwrap()));
        assert!(!is_derived_etag(&HeaderValue::from_static("\"origin-etag\"")));
        assert_eq!(fnv1a(body), fnv1a(b"hello"));
    }
}
