//! Every metric the director exports, rendered as Prometheus text (exposition format 0.0.4).
//!
//! Names live here and nowhere else. Per-node series carry one label, `node` (its address).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::control::NodeInfo;
use crate::dataplane::Counters;
use crate::flow::FlowStats;
use crate::health::State;
use crate::xdp::Stats;

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Which plane forwards IPv4, and the XDP program's counters when it does.
#[derive(Debug, Clone, Copy)]
pub struct Plane {
    /// `af_packet`, `xdp-native` or `xdp-generic`.
    pub name: &'static str,
    /// The program's counters (XDP planes only).
    pub xdp: Option<Stats>,
    /// The program's runs and the nanoseconds they took (with `kernel.bpf_stats_enabled`).
    pub run_time: (u64, u64),
}

/// Renders every metric. `nodes` carry both planes' per-node counters.
pub fn render(nodes: &[NodeInfo], flows: &FlowStats, c: &Counters, plane: Plane) -> String {
    let k = plane.xdp.unwrap_or_default();
    let mut o = String::with_capacity(4096);
    type Per = fn(&NodeInfo, &FlowStats) -> u64;
    let per_node: [(&str, &str, &str, Per); 8] = [
        (
            "strata_director_node_packets_total",
            "counter",
            "Frames forwarded to the node.",
            |n, _| get(&n.counters.packets),
        ),
        (
            "strata_director_node_bytes_total",
            "counter",
            "Bytes of frames forwarded to the node (inbound only: responses never pass the director).",
            |n, _| get(&n.counters.bytes),
        ),
        (
            "strata_director_node_new_flows_total",
            "counter",
            "Flows newly pinned to the node.",
            |n, _| get(&n.counters.new_flows),
        ),
        (
            "strata_director_node_flows",
            "gauge",
            "Flows pinned to the node now.",
            |n, f| f.len_by_node.get(n.id as usize).copied().unwrap_or(0),
        ),
        (
            "strata_director_node_flow_evictions_total",
            "counter",
            "The node's flows evicted because the flow table was full.",
            |n, f| f.evictions_by_node.get(n.id as usize).copied().unwrap_or(0),
        ),
        (
            "strata_director_node_up",
            "gauge",
            "1 if the node passes its health checks.",
            |n, _| u64::from(n.state == State::Up),
        ),
        (
            "strata_director_node_weight",
            "gauge",
            "Configured weight (0 = draining).",
            |n, _| u64::from(n.weight),
        ),
        (
            "strata_director_node_check_failures_total",
            "counter",
            "Failed health checks.",
            |n, _| get(&n.counters.check_failures),
        ),
    ];
    for (name, kind, help, f) in per_node {
        head(&mut o, name, kind, help);
        for n in nodes {
            let _ = writeln!(o, "{name}{{node=\"{}\"}} {}", n.addr, f(n, flows));
        }
    }
    let global = [
        ("strata_director_flows", "gauge", "Flows pinned now.", flows.len),
        (
            "strata_director_flow_evictions_total",
            "counter",
            "Flows evicted because the table was full.",
            flows.evictions,
        ),
        (
            "strata_director_flow_expirations_total",
            "counter",
            "Flows forgotten after being idle.",
            flows.expirations,
        ),
        (
            "strata_director_flow_purges_total",
            "counter",
            "Flows dropped because their node went down or was removed.",
            flows.purges,
        ),
        (
            "strata_director_rx_frames_total",
            "counter",
            "Frames read from the receive rings.",
            get(&c.rx_frames),
        ),
        (
            "strata_director_arp_replies_total",
            "counter",
            "ARP replies sent for the VIP.",
            get(&c.arp_replies),
        ),
        (
            "strata_director_neighbor_adverts_total",
            "counter",
            "Neighbour advertisements sent for the IPv6 VIP.",
            get(&c.neighbor_adverts),
        ),
        (
            "strata_director_icmp_too_big_total",
            "counter",
            "ICMP fragmentation-needed/packet-too-big forwarded to a node.",
            get(&c.icmp_too_big) + k.icmp_too_big,
        ),
        (
            "strata_director_no_node_drops_total",
            "counter",
            "VIP packets dropped because no node was up.",
            get(&c.no_node) + k.no_node,
        ),
        (
            "strata_director_oversize_drops_total",
            "counter",
            "Frames too large to re-send (GRO/GSO super-frames).",
            get(&c.oversize),
        ),
        (
            "strata_director_malformed_total",
            "counter",
            "Frames for the director cut short or contradicting their own lengths (left to the kernel).",
            get(&c.malformed) + k.malformed,
        ),
        (
            "strata_director_checksum_completed_total",
            "counter",
            "Frames whose partial L4 checksum was completed.",
            get(&c.checksum_completed),
        ),
        (
            "strata_director_tx_errors_total",
            "counter",
            "Frames the kernel refused to send.",
            get(&c.tx_errors),
        ),
        (
            "strata_director_xdp_frames_total",
            "counter",
            "Frames the XDP program saw (0 on the AF_PACKET plane).",
            k.frames,
        ),
        (
            "strata_director_xdp_forwarded_total",
            "counter",
            "Frames the XDP program sent to a node.",
            k.tx,
        ),
        (
            "strata_director_xdp_stale_pins_total",
            "counter",
            "Pinned flows the XDP program found idle past flows.idle_timeout and placed again.",
            k.stale,
        ),
        (
            "strata_director_xdp_runs_total",
            "counter",
            "Runs of the XDP program, as the kernel counts them (only while sysctl kernel.bpf_stats_enabled = 1).",
            plane.run_time.0,
        ),
        (
            "strata_director_xdp_run_nanoseconds_total",
            "counter",
            "Time the XDP program ran, in ns (only while sysctl kernel.bpf_stats_enabled = 1).",
            plane.run_time.1,
        ),
    ];
    for (name, kind, help, v) in global {
        head(&mut o, name, kind, help);
        let _ = writeln!(o, "{name} {v}");
    }
    let name = "strata_director_data_plane";
    head(
        &mut o,
        name,
        "gauge",
        "The plane forwarding IPv4 VIP traffic (label plane), always 1.",
    );
    let _ = writeln!(o, "{name}{{plane=\"{}\"}} 1", plane.name);
    strata_wire::process::render_text(&mut o, "strata-director", env!("CARGO_PKG_VERSION"));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const AF_PACKET: Plane = Plane {
        name: "af_packet",
        xdp: None,
        run_time: (0, 0),
    };

    #[test]
    fn the_exposition_says_which_build_runs_and_how_the_process_does() {
        let text = render(&[], &FlowStats::default(), &Counters::default(), AF_PACKET);
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!(
                "strata_build_info{{program=\"strata-director\",version=\"{version}\""
            )),
            "{text}"
        );
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{name} "))),
                "{name} in {text}"
            );
        }
        // Names are unique: one TYPE line each.
        let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let n = types.len();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), n, "{text}");
    }

    #[test]
    fn the_dashboard_reads_only_metrics_the_director_exports() {
        // Per-node families are declared (`# TYPE`) even before a node has a series.
        let offered =
            strata_wire::exposition::offered(&render(&[], &FlowStats::default(), &Counters::default(), AF_PACKET));
        let dashboard = include_str!("../../deploy/grafana/strata.json");
        let wanted = strata_wire::exposition::dashboard_names(dashboard).expect("deploy/grafana/strata.json is JSON");
        let ours: Vec<&String> = wanted
            .iter()
            .filter(|n| n.starts_with("strata_director_") || n.starts_with("process_") || *n == "strata_build_info")
            .collect();
        assert!(ours.iter().any(|n| n.starts_with("strata_director_")), "{ours:?}");
        let missing: Vec<&&String> = ours.iter().filter(|n| !offered.contains(n.as_str())).collect();
        assert!(
            missing.is_empty(),
            "the dashboard reads {missing:?}, which strata-director does not export"
        );
    }
}
