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

use crate::answer::{
    add_delivery_slots, age_value, cache_status, hit_status, synth, with_status, CACHE_STATUS, X_CACHE,
};
use crate::bans::{BanError, Bans, Compiled, InFlight};
use crate::body::ProxyBody;
use crate::cache::{self, Object, Slot, Store, VaryRule};
use crate::cluster::{Cluster, FlushReason};
use crate::comments::{self, Comments, Handled};
use crate::compress::{self, Encoding};
use crate::config::Config;
use crate::framing::{content_length, AMBIGUOUS_MARKER, DUPLICATE_CL_MARKER};
use crate::freshness::{self, NoStore};
use crate::metrics::Metrics;
use crate::origin::{self, proto, set_host, Origin, OriginError};
use crate::outcome::Outcome;
use crate::policy::{self, host_of, strip_port, PassReason};
use crate::ranges;
use crate::tags::{self, TagRules};
use crate::tls;
use crate::validators;
use crate::writes;

mod check;
mod fill;
mod flight;
mod invalidate;
mod lookup;
mod pass;
mod shield;

use flight::{Flight, FlightGuard, FlightRx, MAX_FLIGHT_RETRIES};

pub use invalidate::{purge_url_ban, purge_url_target, BanResult, PurgeForm};
pub use pass::ClientBody;
use pass::MAX_COMMENT_BODY;

/// Most shield requests a node has in flight at once: together the other nodes take at
/// most half of a home's admin connections (`server.admin_max_connections`, assumed alike
/// on every node), the rest stay free for syncs, the syncer and health checks; past it,
/// fills go to the origin (`fallback_busy`).
fn shield_limit(cfg: &Config) -> usize {
    let siblings = cfg.cluster.siblings.len().max(1);
    (cfg.server.admin_max_connections / (2 * siblings)).max(8)
}

thread_local! {
    /// Scratch space for building cache keys without a fresh allocation per request.
    static KEY_BUF: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(256));
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
    /// Asked by another node as this key's home: filled from the origin, never from
    /// another node (no loops).
    from_peer: bool,
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
    /// The origin budget: places for fills (foreground, queued) and refreshes (background,
    /// deferred).
    pub budget: crate::budget::Budget,
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
    /// WordPress's recent answers on whether a write's cookies are a login.
    logins: pass::Logins,
    /// Asks keys' home nodes for fills (`cluster.shield`).
    shield: crate::shield::ShieldClient,
    /// Writes `combined` and `json` access log lines (`server.access_log_format`).
    access: Option<crate::access::Writer>,
    /// Patched pages waiting for their check against WordPress's render.
    patch_checks: parking_lot::Mutex<crate::patch_checks::Schedule>,
    /// Patch templates a check's mismatch turned off.
    patch_templates: crate::patch_checks::Templates,
    /// Siblings' copies of bounded soft bans not applied here yet, each with when it is
    /// applied at the latest: the syncer's own copy, which may carry a page patch, usually
    /// arrives meanwhile (see `Proxy::receive_sync`).
    held_soft: parking_lot::Mutex<Vec<(Instant, crate::bans::Compiled)>>,
}

impl Proxy {
    /// Builds the store, the origin pool and the metrics for a configuration.
    pub fn new(cfg: Arc<Config>) -> Proxy {
        let metrics = Metrics::new(cfg.cache.capacity);
        let access = (cfg.server.access_log_format != crate::access::Format::Text)
            .then(|| {
                let path = cfg.server.access_log_file.clone();
                crate::access::Writer::start(path.clone(), metrics.access_log_dropped.clone())
                    .map_err(|e| {
                        // The configuration check opened it; it went away since.
                        tracing::error!(error = %e, ?path, "access log: cannot open; its lines go to the log instead");
                    })
                    .ok()
            })
            .flatten();
        Proxy {
            access,
            store: Store::new(cfg.cache.capacity),
            origin: Origin::new(&cfg.origin),
            budget: crate::budget::Budget::new(
                crate::budget::Limits {
                    concurrency: cfg.origin.concurrency,
                    background_max: cfg.origin.background_max,
                },
                cfg.origin.queue_timeout,
                metrics.budget.clone(),
            ),
            metrics,
            flights: parking_lot::Mutex::new(HashMap::new()),
            started: Instant::now(),
            compress_permits: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
            bans: Bans::default(),
            cluster: Arc::new(Cluster::new(&cfg.cluster)),
            comments: Arc::new(Comments::new(&cfg.comments, &cfg.cluster.node_id, &cfg.cluster.secret)),
            logins: pass::Logins::new(),
            shield: crate::shield::ShieldClient::new(shield_limit(&cfg)),
            patch_checks: parking_lot::Mutex::new(crate::patch_checks::Schedule::new(
                cfg.comments.patch_check_interval,
                cfg.comments.patch_check_rate,
                Instant::now(),
            )),
            patch_templates: crate::patch_checks::Templates::default(),
            held_soft: parking_lot::Mutex::new(Vec::new()),
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
        if let Some(w) = &self.access {
            // After logrotate moved the file away.
            w.reopen();
        }
        restart
    }

    /// Answers one client request. Never fails: every error becomes a response.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, client: SocketAddr) -> Response<ProxyBody> {
        let cfg = self.cfg();
        let log = cfg.server.access_log.then(|| AccessStart::of(&req, client));
        let purge = PurgeForm::of(&req, &cfg.bans.purge_path)
            .filter(|_| crate::allow::any_contains(&cfg.bans.purge_allow, client.ip()));
        drop(cfg);
        let Answer { mut resp, outcome } = match (self.refuse(&req), purge) {
            (Some(a), p) if p.is_none() || a.resp.status() == StatusCode::BAD_REQUEST => a,
            (_, Some(form)) => self.public_purge(&req, form),
            _ => self.route(req, client).await,
        };
        self.metrics.request(outcome);
        resp.headers_mut().insert(&X_CACHE, outcome.x_cache());
        if let Some(start) = log {
            self.access_log(start, &resp, outcome);
        }
        resp
    }

    /// Writes a request's access log line in the configured format.
    fn access_log(&self, start: AccessStart, resp: &Response<ProxyBody>, outcome: Outcome) {
        let entry = start.finish(resp, outcome);
        match &self.access {
            Some(w) => {
                let mut line = String::with_capacity(256);
                match self.cfg().server.access_log_format {
                    crate::access::Format::Json => crate::access::json(&mut line, &entry),
                    _ => crate::access::combined(&mut line, &entry),
                }
                w.send(line);
            }
            None => tracing::info!(
                target: "strata::access",
                client = %entry.client,
                method = %entry.method,
                uri = %entry.uri,
                status = entry.status,
                outcome = entry.outcome,
                micros = entry.elapsed.as_micros() as u64,
            ),
        }
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
        } else if (req.method() == Method::GET || req.method() == Method::HEAD)
            && (!req.body().is_end_stream() || h.contains_key(header::TRANSFER_ENCODING))
        {
            // A body on a read has no meaning (RFC 9110 §9.3.1), and half-forwarding it is how a
            // pooled origin connection gets out of step: refused, and the connection closed.
            (
                "body-on-read",
                StatusCode::BAD_REQUEST,
                "a GET or HEAD request must not carry a body",
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
        } else if PurgeForm::of(req, &self.cfg().bans.purge_path).is_some() {
            // Refused like `PURGE`; `handle` answers it instead for a `bans.purge_allow` client.
            (
                "purge",
                StatusCode::METHOD_NOT_ALLOWED,
                "purge URLs (bans.purge_path) are not accepted from this address; use the signed admin API",
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
        let cfg = self.cfg();
        if cfg.server.access_log
            || self.refusal(req).is_some()
            || cfg.cache.request_directives && req.headers().contains_key(header::CACHE_CONTROL)
        {
            return None;
        }
        drop(cfg);
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
        let reason = reason.or_else(|| (!self.cache_trusted(Instant::now())).then_some(PassReason::Unconfirmed));
        if let Some(reason) = reason {
            return self.pass(parts, body, client, reason).await;
        }
        let https = parts.extensions.get::<tls::Https>().is_some();
        let (primary, query) = self.with_primary_key(&parts.uri, &parts.headers, https, |key, q| (Arc::from(key), q));
        let lk = Lookup {
            parts,
            primary,
            query,
            from_peer: false,
        };
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
}

/// What the access log keeps of a request until its answer is known.
struct AccessStart {
    entry: crate::access::Entry,
    started: Instant,
}

impl AccessStart {
    fn of(req: &Request<Incoming>, client: SocketAddr) -> AccessStart {
        let text = |name: header::HeaderName| {
            req.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        AccessStart {
            entry: crate::access::Entry {
                time: SystemTime::now(),
                client: client.ip(),
                method: req.method().clone(),
                uri: req.uri().clone(),
                version: req.version(),
                host: host_of(req.uri(), req.headers()).map(str::to_string),
                referer: text(header::REFERER),
                user_agent: text(header::USER_AGENT),
                status: 0,
                bytes: None,
                outcome: "",
                elapsed: std::time::Duration::ZERO,
            },
            started: Instant::now(),
        }
    }

    /// The entry, with what the answer says: status, declared body length (none for a
    /// `HEAD`, `204` or `304`), outcome and time to the response head.
    fn finish(self, resp: &Response<ProxyBody>, outcome: Outcome) -> crate::access::Entry {
        let status = resp.status();
        let bodiless =
            self.entry.method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let bytes = if bodiless {
            Some(0)
        } else {
            content_length(resp.headers()).or_else(|| resp.body().size_hint().exact())
        };
        crate::access::Entry {
            status: status.as_u16(),
            bytes,
            outcome: outcome.as_str(),
            elapsed: self.started.elapsed(),
            ..self.entry
        }
    }
}
