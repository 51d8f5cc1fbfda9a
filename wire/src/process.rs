//! What every program says about itself on `/metrics`: `strata_build_info` and the standard
//! process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`, …), read
//! from `/proc/self` at each scrape. Parsing is plain functions over the files' text; the
//! Prometheus text (for the director, which writes its own) and, with the `prometheus`
//! feature, a `prometheus-client` collector (for the proxy and the syncer) are built on it.

use std::fmt::Write;

/// Clock ticks per second of the times in `/proc/<pid>/stat`: the kernel reports them in
/// `USER_HZ`, 100 on every architecture Strata runs on.
const USER_HZ: f64 = 100.0;

/// One reading of the process's own state; a field the kernel did not give is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time since start, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    /// Threads.
    pub threads: Option<u64>,
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    /// utime + stime, clock ticks.
    cpu_ticks: u64,
    threads: u64,
    /// Clock ticks after boot.
    start_ticks: u64,
    virtual_bytes: u64,
}

/// Parses `/proc/<pid>/stat`: fields counted after the command name, which is in
/// parentheses and may itself hold spaces and parentheses.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 (index 0 here), so field N is at index N - 3.
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: num(14)? + num(15)?,
        threads: num(20)?,
        start_ticks: num(22)?,
        virtual_bytes: num(23)?,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        _ => None,
    }
}

/// The soft `Max open files` limit of `/proc/<pid>/limits` (`None` when unlimited).
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// `btime` of `/proc/stat`: boot time, seconds since the Unix epoch.
fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

impl ProcessStats {
    /// Reads this process's state from `/proc` (all `None` where there is no `/proc`).
    pub fn read() -> ProcessStats {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let stat = read("/proc/self/stat").as_deref().and_then(parse_stat);
        let btime = read("/proc/stat").as_deref().and_then(parse_btime);
        ProcessStats {
            cpu_seconds: stat.map(|s| s.cpu_ticks as f64 / USER_HZ),
            resident_bytes: read("/proc/self/status").as_deref().and_then(parse_rss),
            virtual_bytes: stat.map(|s| s.virtual_bytes),
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64),
            max_fds: read("/proc/self/limits").as_deref().and_then(parse_max_fds),
            start_time_seconds: stat.zip(btime).map(|(s, b)| b as f64 + s.start_ticks as f64 / USER_HZ),
            threads: stat.map(|s| s.threads),
        }
    }

    /// Each reading as (name, type, help, value), in exposition order; readings that are
    /// missing are left out.
    pub fn samples(&self) -> Vec<(&'static str, &'static str, &'static str, f64)> {
        let u = |v: Option<u64>| v.map(|n| n as f64);
        [
            (
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                self.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                u(self.resident_bytes),
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                u(self.virtual_bytes),
            ),
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                u(self.open_fds),
            ),
            (
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                u(self.max_fds),
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                self.start_time_seconds,
            ),
            (
                "process_threads",
                "gauge",
                "Number of OS threads in the process.",
                u(self.threads),
            ),
        ]
        .into_iter()
        .filter_map(|(name, kind, help, v)| Some((name, kind, help, v?)))
        .collect()
    }
}

/// The commit a build was made from, when the build said (`STRATA_COMMIT` at compile time).
pub const COMMIT: Option<&str> = option_env!("STRATA_COMMIT");

/// The labels of `strata_build_info`: the program, its version and, when known, the commit.
pub fn build_labels(program: &str, version: &str) -> Vec<(&'static str, String)> {
    let mut labels = vec![("program", program.to_string()), ("version", version.to_string())];
    if let Some(c) = COMMIT.filter(|c| !c.is_empty()) {
        labels.push(("commit", c.to_string()));
    }
    labels
}

/// Appends `strata_build_info` and the process metrics to `out` as Prometheus text
/// (exposition format 0.0.4).
pub fn render_text(out: &mut String, program: &str, version: &str) {
    let labels: Vec<String> = build_labels(program, version)
        .into_iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(&v)))
        .collect();
    let _ = writeln!(
        out,
        "# HELP strata_build_info The program and the build it runs: always 1.\n\
         # TYPE strata_build_info gauge\nstrata_build_info{{{}}} 1",
        labels.join(",")
    );
    for (name, kind, help, v) in ProcessStats::read().samples() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
}

/// A label value as the text format writes it.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(feature = "prometheus")]
pub use collector::{register, ProcessCollector};

#[cfg(feature = "prometheus")]
mod collector {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
    use prometheus_client::registry::Registry;

    use super::ProcessStats;

    /// The process metrics, read from `/proc` at each scrape.
    #[derive(Debug, Default)]
    pub struct ProcessCollector;

    impl Collector for ProcessCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            for (name, kind, help, v) in ProcessStats::read().samples() {
                // The encoder adds a counter's `_total` itself.
                if let Some(base) = name.strip_suffix("_total").filter(|_| kind == "counter") {
                    let c = ConstCounter::new(v);
                    c.encode(encoder.encode_descriptor(base, help, None, c.metric_type())?)?;
                } else {
                    let g = ConstGauge::new(v);
                    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
                }
            }
            Ok(())
        }
    }

    /// Registers `strata_build_info{program,version[,commit]} 1` and the process metrics.
    pub fn register(registry: &mut Registry, program: &str, version: &str) {
        let info = Family::<Vec<(&'static str, String)>, Gauge>::default();
        info.get_or_create(&super::build_labels(program, version)).set(1);
        registry.register("strata_build_info", "The program and the build it runs: always 1", info);
        registry.register_collector(Box::new(ProcessCollector));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A name with spaces and a parenthesis in it.
        let text = "1337 (strata (x) 1) S 1 1337 1337 0 -1 4194304 101 0 0 0 250 50 0 0 20 0 \
                    7 0 119295 3133440 417 18446744073709551615 1 2 3 4 5";
        let s = parse_stat(text).expect("parsed");
        assert_eq!(s.cpu_ticks, 300);
        assert_eq!(s.threads, 7);
        assert_eq!(s.start_ticks, 119_295);
        assert_eq!(s.virtual_bytes, 3_133_440);
        assert_eq!(parse_stat("1337 (cut short) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn status_limits_and_boot_time() {
        let status = "Name:\tstrata-proxy\nVmSize:\t  20000 kB\nVmRSS:\t    4352 kB\nThreads:\t3\n";
        assert_eq!(parse_rss(status), Some(4352 * 1024));
        assert_eq!(parse_rss("Name:\tx\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        let unlimited = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), None);
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1796650569\nprocesses 5\n"),
            Some(1_796_650_569)
        );
    }

    #[test]
    fn this_process_reads_itself() {
        let s = ProcessStats::read();
        assert!(s.resident_bytes.is_some_and(|b| b > 0), "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3), "{s:?}");
        assert!(s.threads.is_some_and(|n| n >= 1), "{s:?}");
        let start = s.start_time_seconds.expect("start time");
        let now = crate::ids::unix_ms() as f64 / 1000.0;
        assert!(start <= now + 1.0 && start > now - 86_400.0 * 365.0, "{start} vs {now}");
        assert_eq!(s.samples().len(), 7);
    }

    #[test]
    fn the_text_has_build_info_and_every_process_metric() {
        let mut out = String::new();
        render_text(&mut out, "strata-director", "1.2.3");
        assert!(
            out.contains("strata_build_info{program=\"strata-director\",version=\"1.2.3\""),
            "{out}"
        );
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(out.contains(&format!("# TYPE {name} ")), "{name} in {out}");
            assert!(
                out.lines().any(|l| l.starts_with(&format!("{name} "))),
                "{name} in {out}"
            );
        }
    }

    #[cfg(feature = "prometheus")]
    #[test]
    fn the_collector_encodes_the_same_names() {
        let mut registry = prometheus_client::registry::Registry::default();
        register(&mut registry, "strata-proxy", "1.2.3");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        assert!(
            out.contains("strata_build_info{program=\"strata-proxy\",version=\"1.2.3\""),
            "{out}"
        );
        assert!(out.contains("# TYPE strata_build_info gauge"), "{out}");
        for (name, kind, _, _) in ProcessStats::read().samples() {
            assert!(
                out.lines().any(|l| l.starts_with(&format!("{name} "))),
                "{name} in {out}"
            );
            let family = if kind == "counter" {
                name.trim_end_matches("_total")
            } else {
                name
            };
            assert!(out.contains(&format!("# TYPE {family} {kind}")), "{name} in {out}");
        }
    }
}
