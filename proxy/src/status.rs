//! The `/status` page's data: every number read from the exposition `/metrics` serves, so
//! the two always agree, plus a ring of per-second samples behind the page's live charts.
//!
//! Nothing here touches the request path. The admin side samples the counters once a second
//! ([`History`]); requests per second and percentiles are differences between samples,
//! computed when someone asks. The p99 shown is the origin's time to first byte
//! (`strata_proxy_origin_first_byte_seconds`): the proxy keeps no per-request latency histogram,
//! which would cost every hit.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::SiblingReport;
use crate::metrics::names;
use crate::outcome::Outcome;

/// The page: one HTML document with its CSS and script inline, no external assets.
pub const PAGE: &str = include_str!("../assets/status.html");

/// Per-second samples kept: five minutes of chart.
pub const HISTORY_LEN: usize = 300;
/// Window of the headline requests per second.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Window of the headline origin first-byte p99.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(60);
/// Samples behind each chart point's p99: one second holds too few fetches to say much.
const CHART_P99_SAMPLES: usize = 10;

/// One series of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A parsed Prometheus text exposition (the body of `/metrics`).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    series: Vec<Series>,
}

impl Scrape {
    /// Parses the text format; comment lines and lines it cannot read are skipped.
    pub fn parse(text: &str) -> Scrape {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_line)
            .collect();
        Scrape { series }
    }

    /// The sum of every series called `name`, whatever its labels; 0 when there is none.
    pub fn total(&self, name: &str) -> f64 {
        self.series.iter().filter(|s| s.name == name).map(|s| s.value).sum()
    }

    /// The series called `name` summed by the value of `label`.
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.series.iter().filter(|s| s.name == name) {
            if let Some((_, v)) = s.labels.iter().find(|(k, _)| k == label) {
                *out.entry(v.clone()).or_insert(0.0) += s.value;
            }
        }
        out
    }

    /// The cumulative buckets of histogram `name` as `(upper bound, count)`, sorted by bound.
    pub fn buckets(&self, name: &str) -> Buckets {
        let bucket = format!("{name}_bucket");
        let mut out: Vec<(f64, f64)> = Vec::new();
        for s in self.series.iter().filter(|s| s.name == bucket) {
            let Some(le) = s.labels.iter().find(|(k, _)| k == "le").and_then(|(_, v)| parse_f64(v)) else {
                continue;
            };
            match out.iter_mut().find(|(b, _)| *b == le) {
                Some((_, c)) => *c += s.value,
                None => out.push((le, s.value)),
            }
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        Buckets(out)
    }
}

fn parse_f64(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// `name{a="x",b="y"} value` or `name value`.
fn parse_line(line: &str) -> Option<Series> {
    let i = line.find(['{', ' '])?;
    let (name, rest) = line.split_at(i);
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inside) => parse_labels(inside)?,
        None => (Vec::new(), rest),
    };
    let value = parse_f64(rest.split_whitespace().next()?)?;
    Some(Series {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y"}…` (after the opening brace): the labels and what follows the closing brace.
fn parse_labels(mut rest: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, quoted) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i + 1,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        rest = &quoted[end..];
    }
}

/// A histogram's cumulative buckets: `(upper bound, observations at or below it)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, f64)>);

impl Buckets {
    /// Observations in all.
    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |b| b.1)
    }

    /// The observations made since `earlier` (same bounds; a reset counts from zero).
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|(le, c)| {
                    let before = earlier.0.iter().find(|(b, _)| b == le).map_or(0.0, |b| b.1);
                    (*le, if *c >= before { c - before } else { *c })
                })
                .collect(),
        )
    }

    /// The `q` quantile, interpolated inside its bucket as Prometheus' `histogram_quantile`
    /// does; `None` without observations. Beyond the last finite bound it answers that bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for (le, count) in &self.0 {
            if *count >= rank {
                if le.is_infinite() {
                    return Some(lower);
                }
                let inside = count - below;
                let share = if inside > 0.0 { (rank - below) / inside } else { 1.0 };
                return Some(lower + (le - lower) * share);
            }
            (lower, below) = (*le, *count);
        }
        Some(lower)
    }
}

/// The counters one chart point needs, taken once a second.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// The same moment in Unix milliseconds, for the charts' time axis.
    pub unix_ms: u64,
    /// `strata_proxy_requests_total`, every outcome.
    pub requests: f64,
    /// Hits and stale hits: lookups answered from memory.
    pub served: f64,
    /// Hits, stale hits and misses: every lookup.
    pub looked_up: f64,
    /// `strata_proxy_origin_first_byte_seconds`.
    pub origin_first_byte: Buckets,
}

impl Sample {
    /// Reads a sample out of a scrape.
    pub fn of(scrape: &Scrape, at: Instant, unix_ms: u64) -> Sample {
        let by = scrape.by_label(&format!("{}_total", names::REQUESTS), "outcome");
        let n = |o: Outcome| by.get(o.as_str()).copied().unwrap_or(0.0);
        let served = n(Outcome::Hit) + n(Outcome::Stale);
        Sample {
            at,
            unix_ms,
            requests: by.values().sum(),
            served,
            looked_up: served + n(Outcome::Miss),
            origin_first_byte: scrape.buckets(names::ORIGIN_LATENCY),
        }
    }
}

/// The last [`HISTORY_LEN`] per-second samples, oldest first.
#[derive(Default)]
pub struct History {
    samples: parking_lot::Mutex<VecDeque<Sample>>,
}

impl History {
    /// Adds a sample, forgetting the oldest beyond [`HISTORY_LEN`].
    pub fn record(&self, s: Sample) {
        let mut samples = self.samples.lock();
        if samples.len() == HISTORY_LEN {
            samples.pop_front();
        }
        samples.push_back(s);
    }

    /// A copy of the samples, oldest first.
    pub fn snapshot(&self) -> Vec<Sample> {
        self.samples.lock().iter().cloned().collect()
    }
}

/// One point of the live charts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// Unix milliseconds at the end of the second.
    pub t: u64,
    /// Requests per second during that second.
    pub rps: f64,
    /// Share of that second's lookups answered from memory; null without lookups.
    pub hit_ratio: Option<f64>,
    /// Origin first-byte p99 over the last ten seconds, milliseconds; null without fetches.
    pub p99_ms: Option<f64>,
}

/// The chart points between consecutive samples.
pub fn points(samples: &[Sample]) -> Vec<Point> {
    (1..samples.len())
        .map(|i| {
            let (a, b) = (&samples[i - 1], &samples[i]);
            let secs = b.at.saturating_duration_since(a.at).as_secs_f64().max(1e-3);
            let looked = (b.looked_up - a.looked_up).max(0.0);
            let window = &samples[i.saturating_sub(CHART_P99_SAMPLES)];
            Point {
                t: b.unix_ms,
                rps: (b.requests - a.requests).max(0.0) / secs,
                hit_ratio: (looked > 0.0).then(|| (b.served - a.served).max(0.0) / looked),
                p99_ms: b
                    .origin_first_byte
                    .since(&window.origin_first_byte)
                    .quantile(0.99)
                    .map(ms),
            }
        })
        .collect()
}

fn ms(secs: f64) -> f64 {
    secs * 1000.0
}

/// The newest sample at least `window` older than `now`, else the oldest one.
fn baseline<'a>(history: &'a [Sample], now: &Sample, window: Duration) -> Option<&'a Sample> {
    history
        .iter()
        .rev()
        .find(|s| now.at.saturating_duration_since(s.at) >= window)
        .or_else(|| history.first())
        .filter(|s| s.at < now.at)
}

/// What the page needs that is not in the exposition.
#[derive(Debug, Clone)]
pub struct Facts {
    /// `cluster.node_id`.
    pub node: String,
    /// The crate version.
    pub version: &'static str,
    /// Time since start.
    pub uptime: Duration,
    /// The origin's URL.
    pub origin: String,
    /// This node's ban sequence.
    pub seq: u64,
    /// Whether this node is proven current with every sibling.
    pub confirmed: bool,
    /// Each sibling's state, as `/cluster` reports it.
    pub siblings: Vec<SiblingReport>,
    /// Distinct tags indexed.
    pub tags: usize,
    /// Whether `[comments] enabled`.
    pub comments_enabled: bool,
}

/// `GET /status.json`: the numbers the page shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `cluster.node_id`.
    pub node: String,
    /// The crate version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Unix milliseconds when this was computed.
    pub now_ms: u64,
    /// `strata_proxy_requests_total` by outcome, and their sum.
    pub requests: Requests,
    /// `strata_proxy_hit_ratio`: (hit + stale) / (hit + stale + miss) since start.
    pub hit_ratio: f64,
    /// Requests per second over the last [`Status::rate_window_secs`]; null right after start.
    pub requests_per_sec: Option<f64>,
    /// Seconds behind `requests_per_sec` (up to ten).
    pub rate_window_secs: f64,
    /// Origin health.
    pub origin: OriginStatus,
    /// Cache occupancy.
    pub cache: CacheStatus,
    /// Ban sequence and siblings.
    pub cluster: ClusterStatus,
    /// Comment results; null unless `[comments] enabled`.
    pub comments: Option<CommentStatus>,
    /// Page patches and their checks against WordPress.
    pub patches: PatchStatus,
    /// Chart points, one per second, oldest first.
    pub history: Vec<Point>,
}

/// Requests by cache outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Requests {
    /// Served fresh from memory.
    pub hit: u64,
    /// Served from memory within grace.
    pub stale: u64,
    /// Looked up and fetched from the origin.
    pub miss: u64,
    /// Sent to the origin without a lookup.
    pub pass: u64,
    /// Answered by the proxy itself (errors, refusals).
    pub synth: u64,
    /// All of them.
    pub total: u64,
}

/// Origin health: fetches, failures, time to first byte.
#[derive(Debug, Clone, Serialize)]
pub struct OriginStatus {
    /// The origin's URL.
    pub url: String,
    /// `strata_proxy_origin_requests_total`.
    pub requests: u64,
    /// `strata_proxy_origin_errors_total`, all reasons.
    pub errors: u64,
    /// `strata_proxy_origin_errors_total` by reason.
    pub errors_by_reason: BTreeMap<String, u64>,
    /// First-byte p99 over the last [`OriginStatus::p99_window_secs`], milliseconds.
    pub first_byte_p99_ms: Option<f64>,
    /// Seconds behind `first_byte_p99_ms` (up to sixty).
    pub p99_window_secs: f64,
    /// First-byte p99 since start, milliseconds.
    pub first_byte_p99_ms_total: Option<f64>,
    /// First-byte fetches observed since start.
    pub first_byte_count: u64,
    /// The origin budget: the queue per class.
    pub budget: BudgetStatus,
}

/// The origin budget (`[origin] concurrency`, `background_max`): the queue per class.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetStatus {
    /// `strata_proxy_origin_in_flight` by class (`foreground`, `background`).
    pub in_flight: BTreeMap<String, u64>,
    /// `strata_proxy_origin_queued` by class (background refreshes are deferred, never queued).
    pub queued: BTreeMap<String, u64>,
    /// Foreground requests that waited in the queue (`strata_proxy_origin_waited_seconds_count`).
    pub waited: u64,
    /// Their wait's p99 since start, milliseconds.
    pub waited_p99_ms: Option<f64>,
    /// `strata_proxy_origin_refused_total`: foreground requests answered 503.
    pub refused: u64,
    /// `strata_proxy_background_refreshes_deferred_total`: refreshes the budget did not start.
    pub refreshes_deferred: u64,
    /// `strata_proxy_list_refreshes_deferred_total`: refreshes `cache.list_refresh` held back.
    pub list_refreshes_deferred: u64,
}

/// Cache occupancy.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStatus {
    /// `strata_proxy_cache_objects`.
    pub objects: u64,
    /// `strata_proxy_cache_bytes`.
    pub bytes: u64,
    /// `strata_proxy_cache_capacity_bytes`.
    pub capacity_bytes: u64,
    /// `strata_proxy_cache_evictions_total`.
    pub evictions: u64,
    /// `strata_proxy_cache_expirations_total`.
    pub expirations: u64,
    /// Distinct tags indexed.
    pub tags: u64,
}

/// Ban sequence and siblings (the `/cluster` data).
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// This node's ban sequence.
    pub seq: u64,
    /// Proven current with every sibling.
    pub confirmed: bool,
    /// Each sibling.
    pub siblings: Vec<SiblingReport>,
    /// `strata_proxy_shield_requests_total` by result: fills asked of keys' home nodes.
    pub shield_requests: BTreeMap<String, u64>,
    /// `strata_proxy_shield_served_total` by result: fills answered as a key's home.
    pub shield_served: BTreeMap<String, u64>,
}

/// Comment write-behind results (the syncer's queue depth is on the syncer's admin).
#[derive(Debug, Clone, Serialize)]
pub struct CommentStatus {
    /// `strata_proxy_comments_total` by reason.
    pub results: BTreeMap<String, u64>,
    /// All results.
    pub total: u64,
    /// Verdicts read (`strata_proxy_comment_verdict_seconds_count`).
    pub verdicts: u64,
    /// Verdict p99 since start, milliseconds.
    pub verdict_p99_ms: Option<f64>,
}

/// Page patches (`strata_proxy_patches_total`) and their checks against WordPress's render
/// (`strata_proxy_patch_checks_total`).
#[derive(Debug, Clone, Serialize)]
pub struct PatchStatus {
    /// Stored pages patched.
    pub patched: u64,
    /// Patched pages compared with WordPress's render (matched or not).
    pub checked: u64,
    /// Patched pages that were not WordPress's render.
    pub mismatched: u64,
    /// Checks by result (`match`, `mismatch`, `error`, `skipped`).
    pub checks: BTreeMap<String, u64>,
    /// Templates a mismatch turned off (`strata_proxy_patch_templates_off`).
    pub templates_off: u64,
}

impl PatchStatus {
    /// The numbers of one scrape.
    pub fn of(scrape: &Scrape) -> PatchStatus {
        let patch_results = counts(scrape.by_label(&format!("{}_total", names::PATCHES), "result"));
        let checks = counts(scrape.by_label(&format!("{}_total", names::PATCH_CHECKS), "result"));
        let check = |r: &str| checks.get(r).copied().unwrap_or(0);
        PatchStatus {
            patched: patch_results.get("patched").copied().unwrap_or(0),
            checked: check("match") + check("mismatch"),
            mismatched: check("mismatch"),
            templates_off: whole(scrape.total(names::PATCH_TEMPLATES_OFF)),
            checks,
        }
    }
}

fn whole(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

fn counts(m: BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    m.into_iter().map(|(k, v)| (k, whole(v))).collect()
}

impl Status {
    /// Computes the page's numbers from one scrape (`now` taken from it), the sample
    /// history and the facts outside the exposition.
    pub fn build(facts: Facts, scrape: &Scrape, now: &Sample, history: &[Sample]) -> Status {
        let total = |name: &str| whole(scrape.total(name));
        let counter = |name: &str| total(&format!("{name}_total"));
        let by = scrape.by_label(&format!("{}_total", names::REQUESTS), "outcome");
        let n = |o: Outcome| whole(by.get(o.as_str()).copied().unwrap_or(0.0));
        let requests = Requests {
            hit: n(Outcome::Hit),
            stale: n(Outcome::Stale),
            miss: n(Outcome::Miss),
            pass: n(Outcome::Pass),
            synth: n(Outcome::Synth),
            total: whole(by.values().sum()),
        };
        let rate = baseline(history, now, RATE_WINDOW).map(|b| {
            let secs = now.at.saturating_duration_since(b.at).as_secs_f64();
            ((now.requests - b.requests).max(0.0) / secs.max(1e-3), secs)
        });
        let latency = baseline(history, now, LATENCY_WINDOW).map(|b| {
            let secs = now.at.saturating_duration_since(b.at).as_secs_f64();
            (now.origin_first_byte.since(&b.origin_first_byte).quantile(0.99), secs)
        });
        let errors_by_reason = counts(scrape.by_label(&format!("{}_total", names::ORIGIN_ERRORS), "reason"));
        let comments = facts.comments_enabled.then(|| {
            let results = counts(scrape.by_label(&format!("{}_total", names::COMMENTS), "reason"));
            let verdict = scrape.buckets(names::COMMENT_VERDICT);
            CommentStatus {
                total: results.values().sum(),
                results,
                verdicts: whole(verdict.count()),
                verdict_p99_ms: verdict.quantile(0.99).map(ms),
            }
        });
        let patches = PatchStatus::of(scrape);
        Status {
            node: facts.node,
            version: facts.version,
            uptime_secs: facts.uptime.as_secs(),
            now_ms: now.unix_ms,
            requests,
            hit_ratio: scrape.total(names::HIT_RATIO),
            requests_per_sec: rate.map(|r| r.0),
            rate_window_secs: rate.map_or(0.0, |r| r.1),
            origin: OriginStatus {
                url: facts.origin,
                requests: counter(names::ORIGIN_REQUESTS),
                errors: errors_by_reason.values().sum(),
                errors_by_reason,
                first_byte_p99_ms: latency.and_then(|l| l.0).map(ms),
                p99_window_secs: latency.map_or(0.0, |l| l.1),
                first_byte_p99_ms_total: now.origin_first_byte.quantile(0.99).map(ms),
                first_byte_count: whole(now.origin_first_byte.count()),
                budget: BudgetStatus {
                    in_flight: counts(scrape.by_label(names::ORIGIN_IN_FLIGHT, "class")),
                    queued: counts(scrape.by_label(names::ORIGIN_QUEUED, "class")),
                    waited: whole(scrape.buckets(names::ORIGIN_WAITED).count()),
                    waited_p99_ms: scrape.buckets(names::ORIGIN_WAITED).quantile(0.99).map(ms),
                    refused: counter(names::ORIGIN_REFUSED),
                    refreshes_deferred: counter(names::BACKGROUND_REFRESHES_DEFERRED),
                    list_refreshes_deferred: counter(names::LIST_REFRESHES_DEFERRED),
                },
            },
            cache: CacheStatus {
                objects: total(names::CACHE_OBJECTS),
                bytes: total(names::CACHE_BYTES),
                capacity_bytes: total(names::CACHE_CAPACITY),
                evictions: counter(names::EVICTIONS),
                expirations: counter(names::EXPIRATIONS),
                tags: facts.tags as u64,
            },
            cluster: ClusterStatus {
                seq: facts.seq,
                confirmed: facts.confirmed,
                siblings: facts.siblings,
                shield_requests: counts(scrape.by_label(&format!("{}_total", names::SHIELD_REQUESTS), "result")),
                shield_served: counts(scrape.by_label(&format!("{}_total", names::SHIELD_SERVED), "result")),
            },
            comments,
            patches,
            history: points(history),
        }
    }
}

/// Whether a request's `Accept` header prefers HTML to plain text: a browser gets the page,
/// curl (`*/*`) and `Accept: text/plain` the text summary.
pub fn wants_html(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let (mut html, mut plain) = (0.0_f64, 0.0_f64);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f64>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" => html = html.max(q),
            "text/plain" => plain = plain.max(q),
            _ => {}
        }
    }
    html > 0.0 && html > plain
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP strata_proxy_requests Client requests by cache outcome.\n\
        # TYPE strata_proxy_requests counter\n\
        strata_proxy_requests_total{outcome=\"hit\"} 6\n\
        strata_proxy_requests_total{outcome=\"miss\"} 2\n\
        strata_proxy_requests_total{outcome=\"pass\"} 1\n\
        strata_proxy_requests_total{outcome=\"stale\"} 0\n\
        strata_proxy_requests_total{outcome=\"synth\"} 0\n\
        strata_proxy_hit_ratio 0.75\n\
        strata_proxy_cache_objects 3\n\
        strata_proxy_sibling_up{sibling=\"http://10.0.0.2:9080\"} 1\n\
        strata_proxy_origin_first_byte_seconds_sum 0.03\n\
        strata_proxy_origin_first_byte_seconds_count 3\n\
        strata_proxy_origin_first_byte_seconds_bucket{le=\"0.01\"} 1\n\
        strata_proxy_origin_first_byte_seconds_bucket{le=\"0.02\"} 3\n\
        strata_proxy_origin_first_byte_seconds_bucket{le=\"+Inf\"} 3\n\
        strata_weird{a=\"x,\\\"y\\\"\",b=\"z\"} 2\n";

    #[test]
    fn patches_checked_and_mismatched_come_from_their_counters() {
        let text = "strata_proxy_patches_total{kind=\"thread\",result=\"patched\"} 7\n\
            strata_proxy_patches_total{kind=\"thread\",result=\"no-template\"} 2\n\
            strata_proxy_patch_checks_total{kind=\"thread\",result=\"match\"} 4\n\
            strata_proxy_patch_checks_total{kind=\"thread\",result=\"mismatch\"} 1\n\
            strata_proxy_patch_checks_total{kind=\"thread\",result=\"skipped\"} 2\n\
            strata_proxy_patch_templates_off 1\n";
        let p = PatchStatus::of(&Scrape::parse(text));
        assert_eq!((p.patched, p.checked, p.mismatched, p.templates_off), (7, 5, 1, 1));
        assert_eq!(p.checks.get("skipped"), Some(&2));
    }

    #[test]
    fn reads_the_exposition() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.total("strata_proxy_requests_total"), 9.0);
        assert_eq!(s.by_label("strata_proxy_requests_total", "outcome")["hit"], 6.0);
        assert_eq!(s.total("strata_proxy_hit_ratio"), 0.75);
        assert_eq!(
            s.by_label("strata_proxy_sibling_up", "sibling")["http://10.0.0.2:9080"],
            1.0
        );
        assert_eq!(s.by_label("strata_weird", "a")["x,\"y\""], 2.0);
        assert_eq!(s.by_label("strata_weird", "b")["z"], 2.0);
        assert_eq!(
            s.buckets("strata_proxy_origin_first_byte_seconds").0,
            vec![(0.01, 1.0), (0.02, 3.0), (f64::INFINITY, 3.0)]
        );
        assert_eq!(s.total("absent"), 0.0);
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let b = Buckets(vec![(0.01, 1.0), (0.02, 3.0), (f64::INFINITY, 3.0)]);
        assert_eq!(b.quantile(0.5), Some(0.0125));
        assert!((b.quantile(0.99).unwrap() - 0.01985).abs() < 1e-9);
        // Beyond the last finite bound: that bound.
        let tail = Buckets(vec![(0.01, 1.0), (f64::INFINITY, 4.0)]);
        assert_eq!(tail.quantile(0.99), Some(0.01));
        assert_eq!(Buckets::default().quantile(0.99), None);
        let earlier = Buckets(vec![(0.01, 1.0), (0.02, 1.0), (f64::INFINITY, 1.0)]);
        assert_eq!(
            b.since(&earlier).0,
            vec![(0.01, 0.0), (0.02, 2.0), (f64::INFINITY, 2.0)]
        );
    }

    fn sample(at: Instant, secs: u64, requests: f64, served: f64, looked_up: f64) -> Sample {
        Sample {
            at: at + Duration::from_secs(secs),
            unix_ms: secs * 1000,
            requests,
            served,
            looked_up,
            origin_first_byte: Buckets(vec![(0.01, looked_up - served), (f64::INFINITY, looked_up - served)]),
        }
    }

    #[test]
    fn charts_and_rates_come_from_sample_differences() {
        let t0 = Instant::now();
        let history = vec![
            sample(t0, 0, 0.0, 0.0, 0.0),
            sample(t0, 1, 100.0, 50.0, 100.0),
            sample(t0, 2, 100.0, 50.0, 100.0),
        ];
        let p = points(&history);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].rps, p[0].hit_ratio), (100.0, Some(0.5)));
        assert!(p[0].p99_ms.is_some());
        assert_eq!((p[1].rps, p[1].hit_ratio), (0.0, None));

        let scrape = Scrape::parse(TEXT);
        let now = sample(t0, 12, 300.0, 150.0, 200.0);
        let s = Status::build(facts(), &scrape, &now, &history);
        // The newest sample at least ten seconds old is the one at 2 s.
        assert_eq!(s.requests_per_sec, Some(20.0));
        assert_eq!(s.rate_window_secs, 10.0);
        assert_eq!((s.requests.hit, s.requests.total, s.hit_ratio), (6, 9, 0.75));
        assert_eq!(s.cache.objects, 3);
        assert!(s.comments.is_none());
        let empty = Status::build(
            Facts {
                comments_enabled: true,
                ..facts()
            },
            &Scrape::default(),
            &now,
            &[],
        );
        assert_eq!(empty.requests_per_sec, None);
        assert_eq!(empty.comments.map(|c| c.total), Some(0));
    }

    fn facts() -> Facts {
        Facts {
            node: "a".into(),
            version: "1",
            uptime: Duration::ZERO,
            origin: String::new(),
            seq: 0,
            confirmed: true,
            siblings: vec![],
            tags: 0,
            comments_enabled: false,
        }
    }

    #[test]
    fn browsers_get_html_and_curl_gets_text() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";
        assert!(wants_html(Some(chrome)));
        assert!(wants_html(Some("text/html")));
        assert!(!wants_html(None));
        assert!(!wants_html(Some("*/*")));
        assert!(!wants_html(Some("text/plain")));
        assert!(!wants_html(Some("text/plain, text/html;q=0.5")));
        assert!(!wants_html(Some("text/html;q=0")));
    }

    #[test]
    fn the_page_is_self_contained() {
        assert!(PAGE.contains("<script>") && PAGE.contains("status.json"));
        for attr in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "url(http",
            "@import",
        ] {
            assert!(!PAGE.contains(attr), "{attr} in the page");
        }
    }
}
