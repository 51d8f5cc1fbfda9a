//! Metrics: every name in one place, handles created once so a tick only bumps atomics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Metric names (without the `_total` suffix the encoder adds to counters).
pub mod names {
    pub const QUEUE_DEPTH: &str = "strata_syncer_queue_depth";
    pub const CURSOR: &str = "strata_syncer_cursor";
    pub const PROXIES_ANNOUNCING: &str = "strata_syncer_proxies_announcing";
    pub const LAG: &str = "strata_syncer_lag_seconds";
    pub const BATCH_SIZE: &str = "strata_syncer_batch_size";
    pub const VERDICT_LATENCY: &str = "strata_syncer_verdict_latency_seconds";
    pub const COMMENTS: &str = "strata_syncer_comments";
    pub const REJECTIONS: &str = "strata_syncer_rejections";
    pub const SKIPPED: &str = "strata_syncer_skipped_records";
    pub const MEMCACHED_RESETS: &str = "strata_syncer_memcached_resets";
    pub const LOST: &str = "strata_syncer_lost_comments";
    pub const MYSQL_ERRORS: &str = "strata_syncer_mysql_errors";
    pub const MEMCACHED_ERRORS: &str = "strata_syncer_memcached_errors";
    pub const BANS_SENT: &str = "strata_syncer_bans_sent";
    pub const BAN_ERRORS: &str = "strata_syncer_ban_errors";
    pub const BANS_PENDING: &str = "strata_syncer_bans_pending";
    pub const COMMITS: &str = "strata_syncer_commits";
    pub const PATCHES: &str = "strata_syncer_patches";
    pub const LIST_PATCHES: &str = "strata_syncer_list_patches";
    pub const FLOOD_CHECKS: &str = "strata_syncer_flood_checks";
    pub const PAIR_CHECKS: &str = "strata_syncer_pair_checks";
    pub const JUDGED_AHEAD: &str = "strata_syncer_judged_ahead";
    pub const STEP: &str = "strata_syncer_step_seconds";
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: &'static str,
}

/// The steps of a tick that [`Metrics::step`] times.
pub const STEPS: [&str; 5] = ["fetch", "transaction", "patch", "commit", "publish"];

/// Bounds (ms) of the lag and verdict latency histograms: fine around the tens of
/// milliseconds a comment should take, so that a percentile near a target (15 ms) is read
/// to a few milliseconds, then coarser up to a minute (MySQL away).
const LATENCY_MS: [f64; 28] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0, 200.0,
    300.0, 500.0, 750.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, 60000.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_MS.iter().map(|ms| ms / 1000.0))
}

fn step_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByLabel {
    by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The syncer's metrics.
pub struct Metrics {
    registry: Registry,
    /// Reserved sequence numbers not applied yet (counter − cursor).
    pub queue_depth: Gauge,
    /// The last applied sequence number.
    pub cursor: Gauge,
    /// Proxies that announce their queued comments to the idle syncer ([`crate::wake`]).
    pub proxies_announcing: Gauge,
    /// Commit time − accepted time of each applied record.
    pub lag: Histogram,
    /// Records per committed transaction.
    pub batch_size: Histogram,
    /// Accepted time → verdict published.
    pub verdict_latency: Histogram,
    comments: Family<OutcomeLabel, Counter>,
    patches: Family<OutcomeLabel, Counter>,
    list_patches: Family<OutcomeLabel, Counter>,
    rejections: Family<ReasonLabel, Counter>,
    skipped: Family<ReasonLabel, Counter>,
    /// memcached restarts detected.
    pub memcached_resets: Counter,
    /// Queued comments lost to memcached restarts.
    pub lost: Counter,
    /// Failed MySQL steps.
    pub mysql_errors: Counter,
    /// Failed memcached steps.
    pub memcached_errors: Counter,
    /// Bans delivered (one per tag, however many requests carried them).
    pub bans_sent: Counter,
    /// Ban requests no proxy accepted (their tags stay pending and are retried).
    pub ban_errors: Counter,
    /// Bans waiting for a proxy.
    pub bans_pending: Gauge,
    /// Committed transactions.
    pub commits: Counter,
    flood_checks: Family<ByLabel, Counter>,
    pair_checks: Family<ByLabel, Counter>,
    judged_ahead: Family<OutcomeLabel, Counter>,
    steps: Family<StepLabel, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            queue_depth: Gauge::default(),
            cursor: Gauge::default(),
            proxies_announcing: Gauge::default(),
            lag: latency_histogram(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            verdict_latency: latency_histogram(),
            comments: Family::default(),
            patches: Family::default(),
            list_patches: Family::default(),
            rejections: Family::default(),
            skipped: Family::default(),
            memcached_resets: Counter::default(),
            lost: Counter::default(),
            mysql_errors: Counter::default(),
            memcached_errors: Counter::default(),
            bans_sent: Counter::default(),
            ban_errors: Counter::default(),
            bans_pending: Gauge::default(),
            commits: Counter::default(),
            flood_checks: Family::default(),
            pair_checks: Family::default(),
            judged_ahead: Family::default(),
            steps: Family::new_with_constructor(step_histogram),
            registry: Registry::default(),
        };
        registry.register(
            names::QUEUE_DEPTH,
            "Queued comments not applied yet",
            m.queue_depth.clone(),
        );
        registry.register(names::CURSOR, "Last applied queue sequence number", m.cursor.clone());
        registry.register(
            names::PROXIES_ANNOUNCING,
            "Proxies that tell the idle syncer of each comment they queue (while all of [cluster] siblings do, an idle queue is looked at every idle_interval)",
            m.proxies_announcing.clone(),
        );
        registry.register(names::LAG, "Time from acceptance by a proxy to commit", m.lag.clone());
        registry.register(
            names::BATCH_SIZE,
            "Records per committed transaction",
            m.batch_size.clone(),
        );
        registry.register(
            names::VERDICT_LATENCY,
            "Time from acceptance by a proxy to the published verdict",
            m.verdict_latency.clone(),
        );
        registry.register(names::COMMENTS, "Records applied, by outcome", m.comments.clone());
        registry.register(
            names::PATCHES,
            "Commented posts whose pages were sent a patch with their ban (sent), could not be (none), or none could be read for (error); batches whose patches missed patch_wait (late)",
            m.patches.clone(),
        );
        registry.register(
            names::LIST_PATCHES,
            "Batches with approved comments whose latest-comments lists were sent a patch with their ban (sent), could not be (none), or none could be read for (error)",
            m.list_patches.clone(),
        );
        registry.register(
            names::REJECTIONS,
            "Refused or ignored comments, by reason",
            m.rejections.clone(),
        );
        registry.register(names::SKIPPED, "Queue positions skipped, by reason", m.skipped.clone());
        registry.register(
            names::MEMCACHED_RESETS,
            "memcached restarts detected",
            m.memcached_resets.clone(),
        );
        registry.register(
            names::LOST,
            "Queued comments lost to memcached restarts",
            m.lost.clone(),
        );
        registry.register(
            names::MYSQL_ERRORS,
            "Failed MySQL steps (retried)",
            m.mysql_errors.clone(),
        );
        registry.register(
            names::MEMCACHED_ERRORS,
            "Failed memcached steps (retried)",
            m.memcached_errors.clone(),
        );
        registry.register(names::BANS_SENT, "Bans delivered to a proxy", m.bans_sent.clone());
        registry.register(
            names::BAN_ERRORS,
            "Ban requests no proxy accepted (their bans are retried)",
            m.ban_errors.clone(),
        );
        registry.register(names::BANS_PENDING, "Bans waiting for a proxy", m.bans_pending.clone());
        registry.register(names::COMMITS, "Committed transactions", m.commits.clone());
        registry.register(
            names::FLOOD_CHECKS,
            "Flood checks, by what answered them: the in-memory index or WordPress's query",
            m.flood_checks.clone(),
        );
        registry.register(
            names::PAIR_CHECKS,
            "Batches whose comments were compared with each other, by what compared them: the syncer (ASCII text under a checked collation) or a query",
            m.pair_checks.clone(),
        );
        registry.register(
            names::JUDGED_AHEAD,
            "Batches judged ahead of their reads against what earlier batches read, by outcome: kept (the reads agreed) or judged_again",
            m.judged_ahead.clone(),
        );
        registry.register(
            names::STEP,
            "Duration of each step of a tick that applied records (fetch, transaction, commit: bans and verdicts to the proxies, from the commit until their answers are collected, publish: the memcached writes and deletes)",
            m.steps.clone(),
        );
        for step in STEPS {
            let _ = m.steps.get_or_create(&StepLabel { step });
        }
        strata_wire::process::register(&mut registry, "strata-syncer", env!("CARGO_PKG_VERSION"));
        Metrics { registry, ..m }
    }

    /// Counts flood checks answered by the index and by the query.
    pub fn flood_checks(&self, by_index: u64, by_query: u64) {
        self.flood_checks
            .get_or_create(&ByLabel { by: "index" })
            .inc_by(by_index);
        self.flood_checks
            .get_or_create(&ByLabel { by: "query" })
            .inc_by(by_query);
    }

    /// Counts a batch's comparison of its comments with each other, by MySQL or not.
    pub fn pair_check(&self, asked: bool) {
        let by = if asked { "query" } else { "syncer" };
        self.pair_checks.get_or_create(&ByLabel { by }).inc();
    }

    /// Counts a batch judged ahead of its reads: `kept` when the reads agreed.
    pub fn judged_ahead(&self, kept: bool) {
        let outcome = if kept { "kept" } else { "judged_again" };
        self.judged_ahead.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts a commented post by what became of its page patch (sent, none, error), or a
    /// batch whose patches missed `patch_wait` (late).
    pub fn patches(&self, outcome: &'static str) {
        self.patches.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts a batch with approved comments by what became of its latest-comments lists'
    /// patch (sent, none, error).
    pub fn list_patches(&self, outcome: &'static str) {
        self.list_patches.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Records how long a step of a tick took (`step` one of [`STEPS`]).
    pub fn step(&self, step: &'static str, took: std::time::Duration) {
        self.steps
            .get_or_create(&StepLabel { step })
            .observe(took.as_secs_f64());
    }

    /// Counts one applied record by outcome (approved, held, trash, spam, rejected, ignored).
    pub fn comment(&self, outcome: &'static str) {
        self.comments.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts a refusal by reason.
    pub fn rejection(&self, reason: &'static str) {
        self.rejections.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts a skipped position by reason.
    pub fn skip(&self, reason: &'static str) {
        self.skipped.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.comment("approved");
        m.rejection("duplicate");
        m.skip("missing");
        let text = m.render();
        for name in [
            names::QUEUE_DEPTH,
            names::COMMENTS,
            names::REJECTIONS,
            names::SKIPPED,
            names::LAG,
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        assert!(text.contains("reason=\"duplicate\""));
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!(
                "strata_build_info{{program=\"strata-syncer\",version=\"{version}\""
            )),
            "{text}"
        );
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    }

    #[test]
    fn the_dashboard_reads_only_metrics_the_syncer_exports() {
        let m = Metrics::new();
        m.comment("approved");
        m.rejection("duplicate");
        let offered = strata_wire::exposition::offered(&m.render());
        let dashboard = include_str!("../../deploy/grafana/strata.json");
        let wanted = strata_wire::exposition::dashboard_names(dashboard).expect("deploy/grafana/strata.json is JSON");
        let ours: Vec<&String> = wanted
            .iter()
            .filter(|n| n.starts_with("strata_syncer_") || n.starts_with("process_") || *n == "strata_build_info")
            .collect();
        assert!(ours.iter().any(|n| n.starts_with("strata_syncer_")), "{ours:?}");
        let missing: Vec<&&String> = ours.iter().filter(|n| !offered.contains(n.as_str())).collect();
        assert!(
            missing.is_empty(),
            "the dashboard reads {missing:?}, which strata-syncer does not export"
        );
    }
}
