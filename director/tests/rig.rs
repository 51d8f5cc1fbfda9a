//! End-to-end tests of strata-director in a rig of network namespaces with real
//! strata-proxy nodes (see `rig/harness.rs`). They need root; without it they skip.
//!
//! Every test runs on both data planes: `af_packet::…` and `xdp::…` (native XDP on the
//! director's veth); `xdp_only::…` are about loading the program.

#[path = "rig/harness.rs"]
mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{get, node_of, vip_addr, KeepAlive, Plane, Rig};
use strata_director::balancer::{NodeView, Snapshot};
use strata_director::flow::FlowKey;
use strata_director::health::State;
use strata_director::maglev::key_of;
use strata_director::packet::Mac;

const START: Duration = Duration::from_secs(20);

/// GETs /index.html on `n` new connections from the client; the answering node per request.
fn spread(rig: &Rig, n: usize) -> Vec<Result<usize, String>> {
    rig.in_ns("cli", move || {
        (0..n)
            .map(|_| match get(vip_addr(), "/index.html") {
                Ok((200, body)) => node_of(&body).ok_or_else(|| format!("odd body {body:?}")),
                Ok((s, _)) => Err(format!("status {s}")),
                Err(e) => Err(e.to_string()),
            })
            .collect()
    })
}

fn requests_spread_over_the_nodes_and_responses_bypass_the_director(plane: Plane) {
    let Some(mut rig) = Rig::up("a", 3, plane) else { return };
    rig.start_director(&[1, 1, 1]);
    rig.wait_all_up(START);
    assert_eq!(rig.admin("/healthz").trim(), "ok");

    let answers = spread(&rig, 240);
    let mut per_node = [0usize; 3];
    for a in &answers {
        match a {
            Ok(n) => per_node[n - 1] += 1,
            Err(e) => panic!("request through the VIP failed: {e}\n{}", rig.director_log()),
        }
    }
    // Maglev gives each node a third of the flows; allow wide statistical slack.
    for (i, c) in per_node.iter().enumerate() {
        assert!(*c >= 40, "node {} got {c} of 240: {per_node:?}", i + 1);
    }
    let new_flows = rig.metric_sum("strata_director_node_new_flows_total");
    assert!(new_flows >= 240, "director counted {new_flows} new flows");

    // 4 MiB of responses; the director must see only the requests and ACKs going in.
    let before = rig.metric_sum("strata_director_node_bytes_total");
    let downloaded: usize = rig.in_ns("cli", || {
        (0..4)
            .map(|_| match get(vip_addr(), "/big.bin") {
                Ok((200, b)) => b.len(),
                other => panic!("big download failed: {other:?}"),
            })
            .sum()
    });
    let through = rig.metric_sum("strata_director_node_bytes_total") - before;
    assert_eq!(downloaded, 4 << 20);
    assert!(
        (through as usize) < downloaded / 10,
        "{through} bytes passed the director for {downloaded} bytes of responses"
    );
    eprintln!("director carried {through} bytes for {downloaded} response bytes");

    // Both planes place a new flow where the shared Maglev table says: the node the
    // library computes for each connection's 5-tuple is the one that answers it.
    let table = Snapshot::new(
        (0..3u8)
            .map(|i| NodeView {
                id: u32::from(i),
                addr: std::net::IpAddr::from([192, 0, 2, 11 + i]),
                mac: Some(Mac([2, 0, 0, 0, 0, 11 + i])),
                state: State::Up,
                weight: 1,
                counters: Arc::default(),
            })
            .collect(),
    );
    let placed: Vec<(u16, usize)> = rig.in_ns("cli", || {
        (0..30)
            .map(|_| {
                let mut c = KeepAlive::open().expect("connect to the VIP");
                (c.local_port(), c.which_node().expect("request"))
            })
            .collect()
    });
    for (port, node) in placed {
        let key = FlowKey {
            src: key_of(std::net::IpAddr::from([192, 0, 2, 1])),
            dst: key_of(std::net::IpAddr::from([192, 0, 2, 100])),
            sport: port,
            dport: 80,
            proto: 6,
        };
        let expected = table.slot_owner(key.hash()).map(|(i, _)| i + 1);
        assert_eq!(
            Some(node),
            expected,
            "client port {port}: the plane and the Maglev table disagree"
        );
    }
    assert_eq!(
        rig.metric_sum(&format!("strata_director_data_plane{{plane=\"{}\"}}", plane.reported())),
        1,
        "{}",
        rig.admin("/metrics")
    );

    // The flow query answers for any flow, pinned or not (port 1234 is outside the
    // client's ephemeral range, so that flow was never pinned).
    let why = rig.admin("/flow?src=192.0.2.1:1234&dst=192.0.2.100:80&proto=tcp");
    assert!(why.contains("node 192.0.2.1") && why.contains("maglev slot"), "{why}");
}

fn a_killed_node_leaves_within_a_second_and_other_flows_are_undisturbed(plane: Plane) {
    let Some(mut rig) = Rig::up("b", 3, plane) else { return };
    rig.start_director(&[1, 1, 1]);
    rig.wait_all_up(START);

    // Keep-alive connections, so we hold flows pinned to every node.
    let victim = 2;
    let mut conns: Vec<(KeepAlive, usize)> = rig.in_ns("cli", || {
        let mut v = Vec::new();
        for _ in 0..30 {
            let mut c = KeepAlive::open().expect("connect to the VIP");
            let n = c.which_node().expect("first request");
            v.push((c, n));
        }
        v
    });
    let survivors = conns.iter().filter(|(_, n)| *n != victim).count();
    assert!(survivors >= 5, "too few connections on the surviving nodes");

    // Bounded background load of new connections while the node dies.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let load = rig.spawn_in_ns("cli", move || {
        let t0 = Instant::now();
        let mut log = Vec::new();
        while !stop2.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(8) && log.len() < 5000 {
            let at = Instant::now();
            let r = get(vip_addr(), "/index.html");
            log.push((at, r.ok().filter(|(s, _)| *s == 200).and_then(|(_, b)| node_of(&b))));
            std::thread::sleep(Duration::from_millis(5));
        }
        log
    });
    std::thread::sleep(Duration::from_millis(300));

    let killed = Instant::now();
    rig.kill_node(victim);
    let down_after = loop {
        let asked = Instant::now();
        if let Some(ago) = rig.down_for("192.0.2.12") {
            // When the director marked it down, by its own account, minus the kill time.
            break asked.saturating_duration_since(killed).saturating_sub(ago);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "node never marked down:\n{}",
            rig.director_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("node marked down {down_after:?} after the kill");
    // Nominal: fall (3) × interval (200 ms) after the last good check, under 1 s; the slack
    // is for a busy 2-core machine.
    assert!(down_after < Duration::from_millis(1500), "removal took {down_after:?}");
    let removed_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let log = load.join().expect("load thread");

    // Every new connection after the removal succeeded, on a surviving node.
    let after: Vec<_> = log.iter().filter(|(at, _)| *at > removed_at).collect();
    assert!(!after.is_empty(), "no load after the removal");
    for (_, r) in &after {
        assert!(matches!(r, Some(n) if *n != victim), "request after removal: {r:?}");
    }
    let fresh = spread(&rig, 60);
    assert!(fresh.iter().all(|r| matches!(r, Ok(n) if *n != victim)), "{fresh:?}");

    // Established connections on the surviving nodes are untouched: same node, still working.
    let checked: Vec<(usize, Result<usize, String>)> = rig.in_ns("cli", move || {
        conns
            .iter_mut()
            .filter(|(_, n)| *n != victim)
            .map(|(c, n)| (*n, c.which_node().map_err(|e| e.to_string())))
            .collect()
    });
    for (was, now) in checked {
        assert_eq!(now, Ok(was), "a surviving flow was disturbed");
    }
    assert!(
        rig.metric_sum("strata_director_flow_purges_total") > 0,
        "the dead node's flows were not purged"
    );
}

fn draining_by_reload_keeps_pinned_flows_and_takes_no_new_ones(plane: Plane) {
    let Some(mut rig) = Rig::up("c", 3, plane) else { return };
    rig.start_director(&[1, 1, 1]);
    // READY=1 (what a Type=notify unit's start waits for): the admin listener answers then.
    let ready = rig.notification(START);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(rig.admin("/status").contains("node 192.0.2.11"), "admin at READY=1");
    rig.wait_all_up(START);

    let mut conns: Vec<(KeepAlive, usize)> = rig.in_ns("cli", || {
        (0..24)
            .map(|_| {
                let mut c = KeepAlive::open().expect("connect to the VIP");
                let n = c.which_node().expect("first request");
                (c, n)
            })
            .collect()
    });
    let drained = 1;
    assert!(
        conns.iter().any(|(_, n)| *n == drained),
        "no connection on node {drained}"
    );

    rig.reload(&[0, 1, 1]);
    // RELOADING=1, then READY=1 only once the new weights are in force: no waiting after it.
    let reloading = rig.notification(Duration::from_secs(5));
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading:?}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    let applied = rig.notification(Duration::from_secs(5));
    assert!(applied.lines().any(|l| l == "READY=1"), "{applied:?}");
    assert!(applied.contains("STATUS=configuration reloaded"), "{applied:?}");
    assert!(
        rig.admin("/status").contains("(draining)"),
        "reload not applied at READY=1:\n{}",
        rig.director_log()
    );

    let fresh = spread(&rig, 60);
    assert!(fresh.iter().all(|r| matches!(r, Ok(n) if *n != drained)), "{fresh:?}");
    let checked: Vec<(usize, Result<usize, String>)> = rig.in_ns("cli", move || {
        conns
            .iter_mut()
            .map(|(c, n)| (*n, c.which_node().map_err(|e| e.to_string())))
            .collect()
    });
    for (was, now) in checked {
        assert_eq!(now, Ok(was), "a pinned flow moved on reload");
    }
    assert!(rig.director_log().contains("configuration reloaded"));
}

/// An ICMP "fragmentation needed" about the VIP → client direction of a flow, as a router
/// on the path would send it; built and sent with a raw socket from the client namespace.
const SEND_FRAG_NEEDED: &str = r#"
import socket, struct, sys
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
vip, client, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1500, 0, 0x4000, 64, 6, 0,
                 socket.inet_aton(vip), socket.inet_aton(client))
tcp8 = struct.pack("!HHI", 80, port, 1)
body = struct.pack("!BBHHH", 3, 4, 0, 0, 1280) + ip + tcp8
body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.sendto(body, (vip, 0))
"#;

fn icmp_fragmentation_needed_goes_to_the_node_that_owns_the_flow(plane: Plane) {
    let Some(mut rig) = Rig::up("d", 3, plane) else { return };
    // Only the flow's own packets and the ICMP error cross the director in this test.
    rig.start_director(&[1, 1, 1]);
    rig.wait_all_up(START);

    let (conn, node) = rig.in_ns("cli", || {
        let mut c = KeepAlive::open().expect("connect to the VIP");
        let n = c.which_node().expect("first request");
        (c, n)
    });
    let owner = format!("192.0.2.{}", 10 + node);
    // Let the client's delayed ACK of that response pass before counting.
    std::thread::sleep(Duration::from_millis(300));
    let before: Vec<u64> = (11..14)
        .map(|i| rig.metric_of("strata_director_node_packets_total", &format!("192.0.2.{i}")))
        .collect();
    let port = conn.local_port().to_string();
    rig.exec(
        "cli",
        &["python3", "-c", SEND_FRAG_NEEDED, harness::VIP, "192.0.2.1", &port],
    );

    // Per-node counters are added after each block of frames: wait for both to show it.
    let total_before: u64 = before.iter().sum();
    let until = Instant::now() + Duration::from_secs(5);
    while rig.metric_sum("strata_director_icmp_too_big_total") == 0
        || rig.metric_sum("strata_director_node_packets_total") == total_before
    {
        assert!(
            Instant::now() < until,
            "the ICMP error was not forwarded:\n{}",
            rig.admin("/metrics")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (i, was) in (11..14).zip(before) {
        let addr = format!("192.0.2.{i}");
        let now = rig.metric_of("strata_director_node_packets_total", &addr);
        if addr == owner {
            assert!(now > was, "the flow owner {addr} did not get the ICMP error");
        } else {
            assert_eq!(
                now, was,
                "packets to {addr}, which does not own the flow ({owner} does)"
            );
        }
    }
    drop(conn);
}

#[test]
fn xdp_only_a_second_director_is_refused_and_a_crash_detaches_the_program() {
    let Some(mut rig) = Rig::up("e", 3, Plane::Xdp) else {
        return;
    };
    rig.start_director(&[1, 1, 1]);
    rig.wait_all_up(START);
    assert!(rig.link("dir").contains("prog/xdp"), "{}", rig.link("dir"));

    let (status, out) = rig.second_director();
    assert!(!status.success(), "a second director started: {out}");
    assert!(out.contains("another strata-director is already running"), "{out}");
    // The first still forwards.
    assert!(spread(&rig, 10).iter().all(Result::is_ok));

    rig.kill_director();
    let until = Instant::now() + Duration::from_secs(5);
    while rig.link("dir").contains("prog/xdp") {
        assert!(
            Instant::now() < until,
            "the program outlived the director: {}",
            rig.link("dir")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Each scenario above, once per data plane.
macro_rules! on_both_planes {
    ($($name:ident),* $(,)?) => {
        mod af_packet {
            $(#[test] fn $name() { super::$name(super::Plane::AfPacket) })*
        }
        mod xdp {
            $(#[test] fn $name() { super::$name(super::Plane::Xdp) })*
        }
    };
}

on_both_planes!(
    requests_spread_over_the_nodes_and_responses_bypass_the_director,
    a_killed_node_leaves_within_a_second_and_other_flows_are_undisturbed,
    draining_by_reload_keeps_pinned_flows_and_takes_no_new_ones,
    icmp_fragmentation_needed_goes_to_the_node_that_owns_the_flow,
);
