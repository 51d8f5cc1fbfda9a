//! Metrics: every name in one place, handles created once so the hot path only bumps atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::outcome::Outcome;

/// Metric names (without the `_total` suffix the encoder adds to counters).
pub mod names {
    pub const REQUESTS: &str = "strata_proxy_requests";
    pub const PASSES: &str = "strata_proxy_passes";
    pub const NOT_STORED: &str = "strata_proxy_not_stored";
    pub const CLIENT_ERRORS: &str = "strata_proxy_client_errors";
    pub const COALESCED: &str = "strata_proxy_coalesced_requests";
    pub const ORIGIN_REQUESTS: &str = "strata_proxy_origin_requests";
    pub const ORIGIN_ERRORS: &str = "strata_proxy_origin_errors";
    pub const ORIGIN_LATENCY: &str = "strata_proxy_origin_first_byte_seconds";
    pub const ORIGIN_INTERIM: &str = "strata_proxy_origin_interim_responses";
    pub const HIT_RATIO: &str = "strata_proxy_hit_ratio";
    pub const CACHE_BYTES: &str = "strata_proxy_cache_bytes";
    pub const CACHE_CAPACITY: &str = "strata_proxy_cache_capacity_bytes";
    pub const CACHE_OBJECTS: &str = "strata_proxy_cache_objects";
    pub const EVICTIONS: &str = "strata_proxy_cache_evictions";
    pub const EXPIRATIONS: &str = "strata_proxy_cache_expirations";
    pub const PURGES: &str = "strata_proxy_purges";
    pub const BACKGROUND_REFRESHES: &str = "strata_proxy_background_refreshes";
    pub const BACKGROUND_REFRESHES_DEFERRED: &str = "strata_proxy_background_refreshes_deferred";
    pub const LIST_REFRESHES_DEFERRED: &str = "strata_proxy_list_refreshes_deferred";
    pub const ORIGIN_IN_FLIGHT: &str = "strata_proxy_origin_in_flight";
    pub const ORIGIN_QUEUED: &str = "strata_proxy_origin_queued";
    pub const ORIGIN_WAITED: &str = "strata_proxy_origin_waited_seconds";
    pub const ORIGIN_REFUSED: &str = "strata_proxy_origin_refused";
    /// `strata_proxy_origin_fetches_total{class}`: fills and refreshes sent to the origin (not to a
    /// home node), by budget class.
    pub const ORIGIN_FETCHES: &str = "strata_proxy_origin_fetches";
    pub const BANS_SENT: &str = "strata_proxy_bans_sent";
    pub const BANS_RECEIVED: &str = "strata_proxy_bans_received";
    pub const BANS_APPLIED: &str = "strata_proxy_bans_applied";
    pub const BAN_PROPAGATION: &str = "strata_proxy_ban_propagation_seconds";
    pub const BAN_ACK: &str = "strata_proxy_ban_ack_seconds";
    pub const SIBLING_QUEUE: &str = "strata_proxy_sibling_queue";
    pub const SIBLING_UP: &str = "strata_proxy_sibling_up";
    pub const SIBLING_LAG: &str = "strata_proxy_sibling_lag_seconds";
    pub const CLUSTER_CONFIRMED: &str = "strata_proxy_cluster_confirmed";
    pub const CLUSTER_FLUSHES: &str = "strata_proxy_cluster_flushes";
    pub const TAGS_INDEXED: &str = "strata_proxy_tags_indexed";
    pub const COMMENTS: &str = "strata_proxy_comments";
    pub const COMMENT_UNTRUSTED: &str = "strata_proxy_comment_queue_untrusted";
    pub const WRITES: &str = "strata_proxy_writes";
    pub const LOGIN_CHECKS: &str = "strata_proxy_login_checks";
    pub const COMMENT_VERDICT: &str = "strata_proxy_comment_verdict_seconds";
    pub const CONNECTIONS_REFUSED: &str = "strata_proxy_connections_refused";
    pub const SHIELD_REQUESTS: &str = "strata_proxy_shield_requests";
    pub const SHIELD_SERVED: &str = "strata_proxy_shield_served";
    pub const SHIELD_EARLY_BANS: &str = "strata_proxy_shield_early_bans";
    pub const ACCESS_LOG_DROPPED: &str = "strata_proxy_access_log_dropped";
    pub const PATCHES: &str = "strata_proxy_patches";
    pub const PATCH_CHECKS: &str = "strata_proxy_patch_checks";
    pub const PATCH_TEMPLATES_OFF: &str = "strata_proxy_patch_templates_off";
}

/// `strata_proxy_patch_checks_total{kind,result}`: how checks of patched pages against WordPress's
/// render ended.
pub const PATCH_CHECK_RESULTS: [&str; 4] = ["match", "mismatch", "error", "skipped"];

/// `strata_proxy_shield_requests_total{result}`: fills of keys whose home is another node, by how
/// they ended (`hit`, `filled`, `pass` at the home, or why this node asked the origin).
pub const SHIELD_REQUEST_RESULTS: [&str; 8] = [
    "hit",
    "filled",
    "pass",
    "fallback_down",
    "fallback_slow",
    "fallback_error",
    "fallback_banned",
    "fallback_busy",
];
/// `strata_proxy_shield_served_total{result}`: shield requests this node answered as a home.
pub const SHIELD_SERVED_RESULTS: [&str; 7] = ["hit", "filled", "pass", "lagging", "deferred", "error", "refused"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UntrustedLabel {
    what: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrustLabel {
    trust: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PatchLabel {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

/// The origin budget's metrics (see [`crate::budget`]).
#[derive(Clone)]
pub struct OriginBudgetMetrics {
    in_flight: Family<ClassLabel, Gauge>,
    queued: Family<ClassLabel, Gauge>,
    fetches: Family<ClassLabel, Counter>,
    /// How long foreground requests waited in the queue (those that never queued are not
    /// observed).
    pub waited: Histogram,
    /// Foreground requests answered 503 because no place came within `origin.queue_timeout`.
    pub refused: Counter,
    /// Background refreshes not started: no place within `origin.background_max`, or a
    /// foreground request was queued.
    pub deferred: Counter,
}

impl OriginBudgetMetrics {
    /// Origin requests in flight of a class.
    pub fn in_flight(&self, class: crate::budget::Class) -> Gauge {
        self.in_flight
            .get_or_create(&ClassLabel { class: class.as_str() })
            .clone()
    }

    /// Counts a fill or refresh sent to the origin under a class's place.
    pub fn fetched(&self, class: crate::budget::Class) {
        self.fetches.get_or_create(&ClassLabel { class: class.as_str() }).inc();
    }

    /// Requests of a class waiting for a place (background refreshes never wait: always 0).
    pub fn queued(&self, class: crate::budget::Class) -> Gauge {
        self.queued.get_or_create(&ClassLabel { class: class.as_str() }).clone()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiblingLabel {
    sibling: String,
}

/// Comment write-behind metrics.
pub struct CommentMetrics {
    results: Family<ReasonLabel, Counter>,
    /// Values read from the comment queue that were not sealed with the cluster secret.
    untrusted: Family<UntrustedLabel, Counter>,
    /// Time from queueing a comment to reading its verdict.
    pub verdict_latency: Histogram,
}

/// Cluster metrics: bans sent, received and applied, and each sibling's state.
pub struct ClusterMetrics {
    /// Bans acknowledged by a sibling.
    pub sent: Counter,
    /// Bans received from siblings.
    pub received: Counter,
    applied: Family<KindLabel, Counter>,
    /// Time from a ban's application on its node to its application here.
    pub propagation: Histogram,
    /// Time from queueing a ban for a sibling to the sibling's acknowledgement.
    pub ack: Histogram,
    queue: Family<SiblingLabel, Gauge>,
    up: Family<SiblingLabel, Gauge>,
    lag: Family<SiblingLabel, Gauge<f64, AtomicU64>>,
    /// 1 while this node has confirmed it holds every sibling's bans.
    pub confirmed: Gauge,
    flushes: Family<ReasonLabel, Counter>,
    tags: Gauge,
}

impl ClusterMetrics {
    fn register(registry: &mut Registry) -> ClusterMetrics {
        let m = ClusterMetrics {
            sent: Counter::default(),
            received: Counter::default(),
            applied: Family::default(),
            propagation: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            ack: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            queue: Family::default(),
            up: Family::default(),
            lag: Family::default(),
            confirmed: Gauge::default(),
            flushes: Family::default(),
            tags: Gauge::default(),
        };
        registry.register(names::BANS_SENT, "Bans acknowledged by siblings", m.sent.clone());
        registry.register(names::BANS_RECEIVED, "Bans received from siblings", m.received.clone());
        registry.register(names::BANS_APPLIED, "Bans applied here, by kind", m.applied.clone());
        registry.register(
            names::BAN_PROPAGATION,
            "Time from a ban's application on the node it started on to its application here",
            m.propagation.clone(),
        );
        registry.register(
            names::BAN_ACK,
            "Time from queueing a ban for a sibling to its acknowledgement",
            m.ack.clone(),
        );
        registry.register(
            names::SIBLING_QUEUE,
            "Bans waiting for a sibling's acknowledgement",
            m.queue.clone(),
        );
        registry.register(
            names::SIBLING_UP,
            "1 when the last exchange with a sibling succeeded",
            m.up.clone(),
        );
        registry.register(
            names::SIBLING_LAG,
            "Seconds since this node last confirmed it holds a sibling's bans",
            m.lag.clone(),
        );
        registry.register(
            names::CLUSTER_CONFIRMED,
            "1 while this node has confirmed it holds every sibling's bans",
            m.confirmed.clone(),
        );
        registry.register(
            names::CLUSTER_FLUSHES,
            "Whole-cache flushes forced by the cluster, by reason",
            m.flushes.clone(),
        );
        registry.register(names::TAGS_INDEXED, "Distinct tags in the tag index", m.tags.clone());
        // Every series exists from the start (at 0), so dashboards and alerts see them.
        for reason in ["gap", "restart", "unconfirmed"] {
            let _ = m.flushes.get_or_create(&ReasonLabel { reason });
        }
        for kind in ["url", "prefix", "regex", "tag", "all"] {
            let _ = m.applied.get_or_create(&KindLabel { kind });
        }
        m
    }

    /// Counts a ban applied here.
    pub fn applied(&self, kind: &'static str) {
        self.applied.get_or_create(&KindLabel { kind }).inc();
    }

    /// Counts a flush the cluster forced.
    pub fn flush(&self, reason: &'static str) {
        self.flushes.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Publishes one sibling's state.
    pub fn sibling(&self, url: &str, queued: usize, up: bool, lag_secs: f64) {
        let l = SiblingLabel {
            sibling: url.to_string(),
        };
        self.queue
            .get_or_create(&l)
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
        self.up.get_or_create(&l).set(i64::from(up));
        self.lag.get_or_create(&l).set(lag_secs);
    }

    /// Publishes the tag index's size.
    pub fn tags(&self, n: usize) {
        self.tags.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// All metrics of a proxy.
pub struct Metrics {
    registry: Registry,
    /// Requests by outcome, indexed by [`Outcome`] as usize.
    outcomes: Vec<Counter>,
    passes: Family<ReasonLabel, Counter>,
    not_stored: Family<ReasonLabel, Counter>,
    client_errors: Family<ReasonLabel, Counter>,
    origin_errors: Family<ReasonLabel, Counter>,
    /// Successful writes by why they may ban beyond their own URLs (`none`: they did not).
    writes: Family<TrustLabel, Counter>,
    /// Login cookies WordPress was asked about, by answer.
    login_checks: Family<ResultLabel, Counter>,
    /// Requests answered from another request's origin fetch.
    pub coalesced: Counter,
    /// Requests sent to the origin.
    pub origin_requests: Counter,
    /// Interim (1xx) responses the origin sent before a final one: read and dropped, since
    /// the HTTP server the proxy is built on cannot send them on.
    pub origin_interim: Counter,
    /// Time from sending to the origin's response head.
    pub origin_latency: Histogram,
    hit_ratio: Gauge<f64, AtomicU64>,
    cache_bytes: Gauge,
    cache_objects: Gauge,
    evictions: Counter,
    expirations: Counter,
    /// Purges applied through the admin API.
    pub purges: Counter,
    /// Stale objects refreshed in the background.
    pub background_refreshes: Counter,
    /// Stale objects served without a refresh because the origin budget had no place for it.
    pub background_refreshes_deferred: Counter,
    /// Stale objects served without a refresh because a bounded (list) ban marked them and
    /// they were fetched less than `cache.list_refresh` ago.
    pub list_refreshes_deferred: Counter,
    /// The origin budget: places in flight and queued per class, waits, refusals.
    pub budget: OriginBudgetMetrics,
    /// Bans and siblings.
    pub cluster: Arc<ClusterMetrics>,
    /// Comments written behind.
    pub comments: CommentMetrics,
    /// Connections closed as they were accepted, by reason.
    connections_refused: Family<ReasonLabel, Counter>,
    /// Fills asked of a key's home node, by result.
    shield_requests: Family<ResultLabel, Counter>,
    /// Shield requests answered as a home, by result.
    shield_served: Family<ResultLabel, Counter>,
    /// Bans a sibling listed in a shield request before they reached this node, applied here.
    pub shield_early_bans: Counter,
    patches: Family<PatchLabel, Counter>,
    /// Access log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    /// Checks of patched pages against WordPress's render, by patch kind and result.
    patch_checks: Family<PatchLabel, Counter>,
    /// Patch templates a check's mismatch turned off.
    pub patch_templates_off: Gauge,
}

impl Metrics {
    /// Registers every metric; `capacity` is published as a constant gauge.
    pub fn new(capacity: u64) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<OutcomeLabel, Counter>::default();
        registry.register(names::REQUESTS, "Client requests by cache outcome", requests.clone());
        let outcomes = Outcome::ALL
            .iter()
            .map(|o| requests.get_or_create(&OutcomeLabel { outcome: o.as_str() }).clone())
            .collect();
        let passes = Family::default();
        registry.register(
            names::PASSES,
            "Requests passed to the origin without lookup, by reason",
            passes.clone(),
        );
        let writes = Family::default();
        registry.register(
            names::WRITES,
            "Successful writes passed to the origin, by why they banned beyond their own URLs (trust; none: they did not)",
            writes.clone(),
        );
        let login_checks = Family::default();
        registry.register(
            names::LOGIN_CHECKS,
            "Login cookies of admin writes checked with WordPress, by result (yes, no, error)",
            login_checks.clone(),
        );
        let not_stored = Family::default();
        registry.register(
            names::NOT_STORED,
            "Origin responses not stored, by reason",
            not_stored.clone(),
        );
        let client_errors = Family::default();
        registry.register(
            names::CLIENT_ERRORS,
            "Client requests refused, by reason",
            client_errors.clone(),
        );
        let origin_errors = Family::default();
        registry.register(
            names::ORIGIN_ERRORS,
            "Origin fetches that failed, by kind",
            origin_errors.clone(),
        );
        let coalesced = Counter::default();
        registry.register(
            names::COALESCED,
            "Requests answered by another request's origin fetch",
            coalesced.clone(),
        );
        let origin_requests = Counter::default();
        registry.register(
            names::ORIGIN_REQUESTS,
            "Requests sent to the origin",
            origin_requests.clone(),
        );
        let origin_interim = Counter::default();
        registry.register(
            names::ORIGIN_INTERIM,
            "Interim (1xx) responses from the origin, such as 103 Early Hints, not relayed",
            origin_interim.clone(),
        );
        let origin_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            names::ORIGIN_LATENCY,
            "Origin time to response head",
            origin_latency.clone(),
        );
        let hit_ratio = Gauge::<f64, AtomicU64>::default();
        registry.register(
            names::HIT_RATIO,
            "Share of cacheable lookups answered from memory (hit + stale)",
            hit_ratio.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register(
            names::CACHE_BYTES,
            "Bytes held by the cache, metadata included",
            cache_bytes.clone(),
        );
        let cache_capacity = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        cache_capacity.set(i64::try_from(capacity).unwrap_or(i64::MAX));
        registry.register(names::CACHE_CAPACITY, "Configured cache byte budget", cache_capacity);
        let cache_objects = Gauge::default();
        registry.register(names::CACHE_OBJECTS, "Entries held by the cache", cache_objects.clone());
        let evictions = Counter::default();
        registry.register(
            names::EVICTIONS,
            "Entries evicted to stay within capacity",
            evictions.clone(),
        );
        let expirations = Counter::default();
        registry.register(
            names::EXPIRATIONS,
            "Entries removed at the end of their grace",
            expirations.clone(),
        );
        let purges = Counter::default();
        registry.register(names::PURGES, "Purges applied", purges.clone());
        let background_refreshes = Counter::default();
        registry.register(
            names::BACKGROUND_REFRESHES,
            "Background refreshes of stale objects",
            background_refreshes.clone(),
        );
        let background_refreshes_deferred = Counter::default();
        registry.register(
            names::BACKGROUND_REFRESHES_DEFERRED,
            "Stale objects served without starting a refresh: no place for it in the origin budget (origin.background_max in flight, or visitors queued)",
            background_refreshes_deferred.clone(),
        );
        let list_refreshes_deferred = Counter::default();
        registry.register(
            names::LIST_REFRESHES_DEFERRED,
            "Stale objects served without starting a refresh: a bounded list ban marked them and they were fetched less than cache.list_refresh ago",
            list_refreshes_deferred.clone(),
        );
        let budget = OriginBudgetMetrics {
            in_flight: Family::default(),
            queued: Family::default(),
            fetches: Family::default(),
            waited: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            refused: Counter::default(),
            deferred: background_refreshes_deferred.clone(),
        };
        for class in [crate::budget::Class::Foreground, crate::budget::Class::Background] {
            budget.in_flight(class);
            budget.queued(class);
            let _ = budget.fetches.get_or_create(&ClassLabel { class: class.as_str() });
        }
        registry.register(
            names::ORIGIN_FETCHES,
            "Fills and refreshes sent to the origin (not to a key's home node), by class (foreground: a visitor waits; background: refreshes)",
            budget.fetches.clone(),
        );
        registry.register(
            names::ORIGIN_IN_FLIGHT,
            "Requests at the origin now, by class (foreground: a visitor waits; background: refreshes)",
            budget.in_flight.clone(),
        );
        registry.register(
            names::ORIGIN_QUEUED,
            "Requests waiting for a place in the origin budget, by class (background refreshes are deferred, never queued)",
            budget.queued.clone(),
        );
        registry.register(
            names::ORIGIN_WAITED,
            "Time foreground requests waited in the origin budget's queue",
            budget.waited.clone(),
        );
        registry.register(
            names::ORIGIN_REFUSED,
            "Foreground requests answered 503: no place in the origin budget within origin.queue_timeout",
            budget.refused.clone(),
        );
        let cluster = Arc::new(ClusterMetrics::register(&mut registry));
        strata_wire::process::register(&mut registry, "strata-proxy", env!("CARGO_PKG_VERSION"));
        let comments = CommentMetrics {
            results: Family::default(),
            untrusted: Family::default(),
            verdict_latency: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        };
        registry.register(
            names::COMMENTS,
            "Comment POSTs by result (queued, approved, held, rejected, no-verdict, php-*)",
            comments.results.clone(),
        );
        registry.register(
            names::COMMENT_UNTRUSTED,
            "Values read from the comment queue and ignored, not sealed with the cluster secret (what: verdict, settings; reason: unsigned, forged, unreadable)",
            comments.untrusted.clone(),
        );
        registry.register(
            names::COMMENT_VERDICT,
            "Time from queueing a comment to reading the syncer's verdict",
            comments.verdict_latency.clone(),
        );
        let connections_refused = Family::default();
        registry.register(
            names::CONNECTIONS_REFUSED,
            "Connections closed as they were accepted, by reason (limit, per-client, admin-limit, admin-allow)",
            connections_refused.clone(),
        );
        let shield_requests = Family::default();
        registry.register(
            names::SHIELD_REQUESTS,
            "Fills of keys whose home is another node, by result (hit, filled, pass at the home; fallback_* filled from the origin, and why)",
            shield_requests.clone(),
        );
        let shield_served = Family::default();
        registry.register(
            names::SHIELD_SERVED,
            "Shield requests answered as a key's home, by result (hit, filled, pass, lagging, deferred, error, refused)",
            shield_served.clone(),
        );
        let shield_early_bans = Counter::default();
        registry.register(
            names::SHIELD_EARLY_BANS,
            "Bans a sibling's shield request listed that had not reached this node yet, applied here at once",
            shield_early_bans.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            names::ACCESS_LOG_DROPPED,
            "Access log lines (combined, json) dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let patches = Family::default();
        registry.register(
            names::PATCHES,
            "Stored pages a comment patch selected, by patch kind and result (patched, or why the page was banned instead)",
            patches.clone(),
        );
        // Every series exists from the start (at 0), so dashboards and alerts see them.
        let _ = patches.get_or_create(&PatchLabel {
            kind: "thread",
            result: "patched",
        });
        let patch_checks = Family::default();
        registry.register(
            names::PATCH_CHECKS,
            "Patched pages checked against WordPress's render, by patch kind and result (match, mismatch, error, skipped)",
            patch_checks.clone(),
        );
        for result in PATCH_CHECK_RESULTS {
            let _ = patch_checks.get_or_create(&PatchLabel { kind: "thread", result });
        }
        let patch_templates_off = Gauge::default();
        registry.register(
            names::PATCH_TEMPLATES_OFF,
            "Patch templates a check's mismatch turned off until restart",
            patch_templates_off.clone(),
        );
        for result in SHIELD_REQUEST_RESULTS {
            let _ = shield_requests.get_or_create(&ResultLabel { result });
        }
        for result in SHIELD_SERVED_RESULTS {
            let _ = shield_served.get_or_create(&ResultLabel { result });
        }
        Metrics {
            patches,
            access_log_dropped,
            patch_checks,
            patch_templates_off,
            shield_requests,
            shield_served,
            shield_early_bans,
            connections_refused,
            cluster,
            comments,
            registry,
            outcomes,
            passes,
            not_stored,
            client_errors,
            origin_errors,
            writes,
            login_checks,
            coalesced,
            origin_requests,
            origin_interim,
            origin_latency,
            hit_ratio,
            cache_bytes,
            cache_objects,
            evictions,
            expirations,
            purges,
            background_refreshes,
            background_refreshes_deferred,
            list_refreshes_deferred,
            budget,
        }
    }

    /// Counts one request by outcome.
    pub fn request(&self, o: Outcome) {
        self.outcomes[o as usize].inc();
    }

    /// The count of one outcome so far.
    pub fn requests(&self, o: Outcome) -> u64 {
        self.outcomes[o as usize].get()
    }

    /// Counts a pass by reason.
    pub fn pass(&self, reason: &'static str) {
        self.passes.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts a response not stored, by reason.
    pub fn not_stored(&self, reason: &'static str) {
        self.not_stored.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts a successful write by why it banned beyond its own URLs (`none`: it did not).
    pub fn write(&self, trust: &'static str) {
        self.writes.get_or_create(&TrustLabel { trust }).inc();
    }

    /// Counts a login check by result (`yes`, `no`, `error`).
    pub fn login_check(&self, result: &'static str) {
        self.login_checks.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts a fill asked of a key's home, by result (see [`SHIELD_REQUEST_RESULTS`]).
    pub fn shield_request(&self, result: &'static str) {
        self.shield_requests.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts a stored page a patch of `kind` selected, by `result`.
    pub fn patch(&self, kind: &'static str, result: &'static str) {
        self.patches.get_or_create(&PatchLabel { kind, result }).inc();
    }

    /// Counts a check of a page patched with `kind`, by `result`.
    pub fn patch_check(&self, kind: &'static str, result: &'static str) {
        self.patch_checks.get_or_create(&PatchLabel { kind, result }).inc();
    }

    /// Counts a shield request answered as a home, by result (see [`SHIELD_SERVED_RESULTS`]).
    pub fn shield_served(&self, result: &'static str) {
        self.shield_served.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts a refused client request.
    pub fn client_error(&self, reason: &'static str) {
        self.client_errors.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts a connection closed as it was accepted (`limit`: `server.max_connections`,
    /// `per-client`: `server.max_connections_per_client`, `admin-limit`:
    /// `server.admin_max_connections`, `admin-allow`: not in `cluster.admin_allow`).
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts a comment POST by result.
    pub fn comment(&self, result: &'static str) {
        self.comments
            .results
            .get_or_create(&ReasonLabel { reason: result })
            .inc();
    }

    /// Counts a value read from the comment queue and ignored: `what` it should have been
    /// (`verdict`, `settings`), and why (`unsigned`, `forged`, `unreadable`).
    pub fn comment_untrusted(&self, what: &'static str, reason: &'static str) {
        self.comments
            .untrusted
            .get_or_create(&UntrustedLabel { what, reason })
            .inc();
    }

    /// Counts a failed origin fetch.
    pub fn origin_error(&self, kind: &'static str) {
        self.origin_errors.get_or_create(&ReasonLabel { reason: kind }).inc();
    }

    /// The Prometheus text exposition, after refreshing the gauges from the store.
    pub fn render(&self, bytes: u64, objects: u64, evictions: &AtomicU64, expirations: &AtomicU64) -> String {
        self.cache_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.cache_objects.set(i64::try_from(objects).unwrap_or(i64::MAX));
        sync_counter(&self.evictions, evictions);
        sync_counter(&self.expirations, expirations);
        let served = self.requests(Outcome::Hit) + self.requests(Outcome::Stale);
        let looked_up = served + self.requests(Outcome::Miss);
        self.hit_ratio.set(if looked_up == 0 {
            0.0
        } else {
            served as f64 / looked_up as f64
        });
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Brings a counter up to a total kept elsewhere.
fn sync_counter(c: &Counter, total: &AtomicU64) {
    let t = total.load(Ordering::Relaxed);
    let have = c.get();
    if t > have {
        c.inc_by(t - have);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DASHBOARD: &str = include_str!("../../deploy/grafana/strata.json");

    /// Every family with at least one series, as a running proxy with siblings has them.
    fn exercised() -> String {
        let m = Metrics::new(1 << 20);
        m.pass("cookie");
        m.not_stored("status");
        m.client_error("host");
        m.origin_error("connect");
        m.comment("queued");
        m.comment_untrusted("verdict", "unsigned");
        m.cluster.sibling("http://10.0.0.2:9080", 0, true, 0.1);
        m.render(0, 0, &AtomicU64::new(0), &AtomicU64::new(0))
    }

    #[test]
    fn the_dashboard_reads_only_metrics_the_proxy_exports() {
        let offered = strata_wire::exposition::offered(&exercised());
        let wanted = strata_wire::exposition::dashboard_names(DASHBOARD).expect("deploy/grafana/strata.json is JSON");
        let ours: Vec<&String> = wanted
            .iter()
            .filter(|n| n.starts_with("strata_proxy_") || n.starts_with("process_") || *n == "strata_build_info")
            .collect();
        assert!(ours.len() > 20, "{ours:?}");
        let missing: Vec<&&String> = ours.iter().filter(|n| !offered.contains(n.as_str())).collect();
        assert!(
            missing.is_empty(),
            "the dashboard reads {missing:?}, which strata-proxy does not export"
        );
        // Every name it reads belongs to one of the three programs or to every program.
        let strays: Vec<&String> = wanted
            .iter()
            .filter(|n| {
                !["strata_proxy_", "strata_syncer_", "strata_director_", "process_"]
                    .iter()
                    .any(|p| n.starts_with(p))
                    && *n != "strata_build_info"
            })
            .collect();
        assert!(strays.is_empty(), "{strays:?}");
    }

    #[test]
    fn the_dashboard_asks_the_prometheus_it_is_given() {
        let d: serde_json::Value = serde_json::from_str(DASHBOARD).expect("JSON");
        let vars = d["templating"]["list"].as_array().expect("variables");
        assert!(
            vars.iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"),
            "a Prometheus data source variable"
        );
        let panels = d["panels"].as_array().expect("panels");
        let mut ids: Vec<i64> = panels.iter().filter_map(|p| p["id"].as_i64()).collect();
        assert_eq!(ids.len(), panels.len(), "every panel has an id");
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), panels.len(), "ids are unique");
        for p in panels.iter().filter(|p| p["type"] != "row") {
            let title = p["title"].as_str().unwrap_or_default();
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{title}");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
                assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
            }
        }
        for topic in [
            "Hit ratio",
            "Requests by outcome",
            "Origin fetches by class",
            "Origin budget: queue and in flight",
            "Bans applied by kind",
            "Comment queue depth",
            "Syncer batches",
            "Packets per node",
            "Node health",
        ] {
            assert!(panels.iter().any(|p| p["title"] == topic), "a panel {topic:?}");
        }
    }
}
