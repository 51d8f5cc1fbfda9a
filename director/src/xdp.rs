//! The XDP data plane's control side: loads the program `build.rs` compiles from
//! `bpf/director.bpf.c`, attaches it to the interface and keeps its maps in step with the
//! published plan.
//!
//! The program forwards IPv4 VIP traffic at the driver (what it decides is described in the
//! C file); ARP, IPv6 and whatever it passes stay with the AF_PACKET workers. Here:
//! - each plan is written into the idle half of `NODES` (MAC, may keep pinned flows, may
//!   take new ones) and `MAGLEV` (node id per slot, the same table the user-space plane
//!   uses), then `SERVICE.active` flips to it: a packet sees one whole table, old or new.
//!   Only entries that differ from what that half last held are written;
//! - the per-CPU counters are read for `/metrics` and `/status`, pins for `/flow`;
//! - a dead or removed node's flows are deleted from the flow maps at once (the program
//!   already ignores pins to a node that is not up), idle ones on a sweep.
//!
//! The program stays attached while [`Xdp`] lives: dropping it, or the process ending in any
//! way, closes the BPF link and so detaches it.

use std::io;
use std::net::Ipv4Addr;

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use aya::programs::{ProgramError, Xdp as XdpProgram, XdpMode};
use aya::{Ebpf, EbpfError, EbpfLoader};
use parking_lot::Mutex;

use crate::balancer::Snapshot;
use crate::flow::{FlowKey, FlowStats, Pinned};
use crate::maglev::TABLE_SIZE;
use crate::packet::{Mac, Service};
use crate::sys::monotonic_ns;

/// The compiled program; empty when clang was missing at build time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/director.bpf.o"));

/// The program's name in the object.
const PROGRAM: &str = "strata_director";
/// Node ids the program can address (`MAX_NODES` in the C file).
pub const MAX_NODES: u32 = 4096;
/// An empty Maglev slot.
const NO_NODE: u32 = u32::MAX;
/// `NODES` flag: pinned flows may stay.
const SERVES_PINNED: u8 = 1;
/// `NODES` flag: new flows may come.
const TAKES_NEW: u8 = 2;
/// `STATS` slots, in the C file's order.
const STAT_SLOTS: usize = 6;

/// How the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In the driver, before any socket buffer exists.
    Native,
    /// In the kernel's receive path, after the socket buffer is built (any driver).
    Generic,
}

impl Mode {
    /// For logs, `/status` and the `data_plane` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Native => "xdp-native",
            Mode::Generic => "xdp-generic",
        }
    }
}

/// Why the XDP plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The binary was built without clang.
    #[error("this strata-director was built without its XDP program (clang was missing at build time: apt-get install clang, then rebuild)")]
    NotBuilt,
    /// The object could not be read or its maps created.
    #[error("cannot load the XDP program's object: {0}")]
    Object(#[source] EbpfError),
    /// The kernel refused to load the program (the verifier, or no BPF permission).
    #[error("the kernel refused the XDP program ({cause}){log}")]
    Refused {
        /// The bpf(2) error.
        cause: io::Error,
        /// The verifier's last lines, when it said anything.
        log: String,
    },
    /// Another XDP program is attached to the interface.
    #[error("{interface} already has an XDP program attached (another director, or another tool): detach it first (ip link set dev {interface} xdp off)")]
    Busy {
        /// The interface.
        interface: String,
    },
    /// The interface does not take XDP in this mode.
    #[error("cannot attach XDP ({mode}) to {interface}: {cause}")]
    Attach {
        /// The interface.
        interface: String,
        /// The mode tried.
        mode: &'static str,
        /// What the kernel said.
        cause: String,
    },
    /// A map is missing or has another shape than this code expects.
    #[error("XDP map {name}: {cause}")]
    Map {
        /// The map.
        name: &'static str,
        /// What went wrong.
        cause: String,
    },
}

impl XdpError {
    /// Whether falling back to another plane would hide a conflict rather than a missing
    /// feature.
    pub fn is_busy(&self) -> bool {
        matches!(self, XdpError::Busy { .. })
    }
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> XdpError {
    move |e| XdpError::Map {
        name,
        cause: e.to_string(),
    }
}

/// The kernel-side counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Frames the program saw.
    pub frames: u64,
    /// Frames it forwarded to a node.
    pub tx: u64,
    /// VIP packets it dropped because no node was up.
    pub no_node: u64,
    /// ICMP fragmentation-needed it forwarded.
    pub icmp_too_big: u64,
    /// VIP frames with inconsistent headers it left to the kernel.
    pub malformed: u64,
    /// Pins found idle past `flows.idle_timeout` and placed again.
    pub stale: u64,
}

/// Per node: frames, bytes, new flows.
pub type NodeStats = [u64; 3];

/// The maps and what the program last saw written into each table half.
struct Maps {
    service: Array<MapData, [u8; 24]>,
    ports: Array<MapData, u8>,
    maglev: Array<MapData, u32>,
    nodes: Array<MapData, [u8; 8]>,
    flows: HashMap<MapData, [u8; 16], [u8; 16]>,
    half_open: HashMap<MapData, [u8; 16], [u8; 16]>,
    node_stats: PerCpuArray<MapData, NodeStats>,
    stats: PerCpuArray<MapData, u64>,
    /// The live half (0 or 1).
    active: u32,
    /// Each half's Maglev table as last written.
    tables: [Vec<u32>; 2],
    /// Each half's node entries as last written (index = node id).
    entries: [Vec<[u8; 8]>; 2],
    /// Ports as last written.
    served: Vec<u16>,
    /// Our address and VIP, rewritten with every flip.
    service_head: (Ipv4Addr, Mac, u64),
    /// Flow-map counters kept here: the kernel counts neither purges nor expiries.
    flow_stats: FlowStats,
}

/// The loaded, attached program and its maps.
pub struct Xdp {
    /// Holds the program and its link: dropping it detaches.
    ebpf: Ebpf,
    /// How it is attached.
    mode: Mode,
    maps: Mutex<Maps>,
}

impl std::fmt::Debug for Xdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Xdp({})", self.mode.as_str())
    }
}

/// The program's flow key for an IPv4 flow (`struct flow_key`), `None` for IPv6.
pub fn flow_key(k: &FlowKey) -> Option<[u8; 16]> {
    let (src, dst) = (v4(&k.src)?, v4(&k.dst)?);
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&src.octets());
    b[4..8].copy_from_slice(&dst.octets());
    b[8..10].copy_from_slice(&k.sport.to_be_bytes());
    b[10..12].copy_from_slice(&k.dport.to_be_bytes());
    b[12] = k.proto;
    Some(b)
}

fn v4(mapped: &[u8; 16]) -> Option<Ipv4Addr> {
    std::net::Ipv6Addr::from(*mapped).to_ipv4_mapped()
}

/// `struct pin`: (last packet, ns on CLOCK_MONOTONIC; node id).
fn pin_of(v: &[u8; 16]) -> (u64, u32) {
    let mut last = [0u8; 8];
    last.copy_from_slice(&v[..8]);
    let mut node = [0u8; 4];
    node.copy_from_slice(&v[8..12]);
    (u64::from_ne_bytes(last), u32::from_ne_bytes(node))
}

/// `struct node` for one node of a snapshot.
fn node_entry(mac: Option<Mac>, serves_pinned: bool, takes_new: bool) -> [u8; 8] {
    let mut e = [0u8; 8];
    if let Some(m) = mac {
        e[..6].copy_from_slice(&m.0);
    }
    e[6] = if serves_pinned { SERVES_PINNED } else { 0 } | if takes_new { TAKES_NEW } else { 0 };
    e
}

/// The `NODES` half and `MAGLEV` half for a snapshot.
pub fn tables(snapshot: &Snapshot) -> (Vec<[u8; 8]>, Vec<u32>) {
    let mut entries = vec![[0u8; 8]; MAX_NODES as usize];
    for n in &snapshot.nodes {
        if let Some(e) = entries.get_mut(n.id as usize) {
            *e = node_entry(n.mac, n.serves_pinned(), n.takes_new());
        }
    }
    let table = (0..TABLE_SIZE)
        .map(|slot| {
            snapshot
                .slot_node_id(slot)
                .filter(|&id| id < MAX_NODES)
                .unwrap_or(NO_NODE)
        })
        .collect();
    (entries, table)
}

/// `struct service`.
fn service_bytes(vip: Ipv4Addr, mac: Mac, idle_ns: u64, active: u32) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..4].copy_from_slice(&vip.octets());
    b[4..8].copy_from_slice(&active.to_ne_bytes());
    b[8..16].copy_from_slice(&idle_ns.to_ne_bytes());
    b[16..22].copy_from_slice(&mac.0);
    b
}

impl Xdp {
    /// Loads the program (the kernel's verifier checks it here), attaches it to
    /// `interface` in the first of `modes` the interface takes, and writes the service.
    /// `flow_capacity` sizes the flow maps; `idle_ns` is `flows.idle_timeout`.
    pub fn start(
        interface: &str,
        modes: &[Mode],
        svc: &Service,
        flow_capacity: usize,
        idle_ns: u64,
    ) -> Result<Xdp, XdpError> {
        if OBJECT.is_empty() {
            return Err(XdpError::NotBuilt);
        }
        let Some(vip) = svc.vip4 else {
            return Err(XdpError::Attach {
                interface: interface.into(),
                mode: "any",
                cause: "no IPv4 VIP: the XDP plane forwards IPv4 only".into(),
            });
        };
        let capacity = u32::try_from(flow_capacity).unwrap_or(u32::MAX);
        // Flows seen only as a SYN get a quarter of the room: a flood of them cannot push
        // established flows out.
        let half_open = (capacity / 4).max(1024);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("FLOWS", capacity)
            .map_max_entries("HALF_OPEN", half_open)
            .load(OBJECT)
            .map_err(XdpError::Object)?;
        let program: &mut XdpProgram = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| XdpError::Map {
                name: PROGRAM,
                cause: "program missing from the object".into(),
            })?
            .try_into()
            .map_err(|e: ProgramError| XdpError::Map {
                name: PROGRAM,
                cause: e.to_string(),
            })?;
        program.load().map_err(refused)?;
        let mut attached = None;
        let mut last = None;
        for &mode in modes {
            let flags = match mode {
                Mode::Native => XdpMode::Driver,
                Mode::Generic => XdpMode::Skb,
            };
            match program.attach(interface, flags) {
                Ok(_) => {
                    attached = Some(mode);
                    break;
                }
                Err(e) => {
                    let e = attach_error(interface, mode, e);
                    if e.is_busy() {
                        return Err(e);
                    }
                    tracing::info!(error = %e, "XDP {} not available", mode.as_str());
                    last = Some(e);
                }
            }
        }
        let Some(mode) = attached else {
            return Err(last.unwrap_or(XdpError::Attach {
                interface: interface.into(),
                mode: "none",
                cause: "no mode to try".into(),
            }));
        };
        let mut take = |name: &'static str| {
            ebpf.take_map(name).ok_or(XdpError::Map {
                name,
                cause: "missing from the object".into(),
            })
        };
        let mut maps = Maps {
            service: Array::try_from(take("SERVICE")?).map_err(map_err("SERVICE"))?,
            ports: Array::try_from(take("PORTS")?).map_err(map_err("PORTS"))?,
            maglev: Array::try_from(take("MAGLEV")?).map_err(map_err("MAGLEV"))?,
            nodes: Array::try_from(take("NODES")?).map_err(map_err("NODES"))?,
            flows: HashMap::try_from(take("FLOWS")?).map_err(map_err("FLOWS"))?,
            half_open: HashMap::try_from(take("HALF_OPEN")?).map_err(map_err("HALF_OPEN"))?,
            node_stats: PerCpuArray::try_from(take("NODE_STATS")?).map_err(map_err("NODE_STATS"))?,
            stats: PerCpuArray::try_from(take("STATS")?).map_err(map_err("STATS"))?,
            active: 0,
            // What a fresh array holds: zeros.
            tables: [vec![0; TABLE_SIZE], vec![0; TABLE_SIZE]],
            entries: [vec![[0; 8]; MAX_NODES as usize], vec![[0; 8]; MAX_NODES as usize]],
            served: Vec::new(),
            service_head: (vip, svc.mac, idle_ns),
            flow_stats: FlowStats::default(),
        };
        // Until the first plan: our MAC and VIP, no node (every VIP packet dropped, as the
        // user-space plane does with no node up).
        let empty = (vec![[0u8; 8]; MAX_NODES as usize], vec![NO_NODE; TABLE_SIZE]);
        maps.write(&empty, &svc.ports)?;
        Ok(Xdp {
            ebpf,
            mode,
            maps: Mutex::new(maps),
        })
    }

    /// How the program is attached.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Writes a plan's nodes, Maglev table and ports; the program uses them from its next
    /// packet.
    pub fn publish(&self, snapshot: &Snapshot, svc: &Service) -> Result<(), XdpError> {
        let t = tables(snapshot);
        self.maps.lock().write(&t, &svc.ports)
    }

    /// The kernel-side counters.
    pub fn stats(&self) -> Stats {
        let m = self.maps.lock();
        let mut v = [0u64; STAT_SLOTS];
        for (slot, x) in v.iter_mut().enumerate() {
            *x = m.stats.get(&(slot as u32), 0).map_or(0, |c| c.iter().sum());
        }
        let [frames, tx, no_node, icmp_too_big, malformed, stale] = v;
        Stats {
            frames,
            tx,
            no_node,
            icmp_too_big,
            malformed,
            stale,
        }
    }

    /// The kernel's account of the program's runs: (runs, nanoseconds spent in them), from
    /// its fdinfo. Zero unless `kernel.bpf_stats_enabled` is 1 (it costs two clock reads
    /// per run, so the kernel keeps it off by default).
    pub fn run_time(&self) -> (u64, u64) {
        use std::os::fd::{AsFd, AsRawFd};
        let Some(fd) = self.ebpf.program(PROGRAM).and_then(|p| p.fd().ok()) else {
            return (0, 0);
        };
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd())).unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        (field("run_cnt:"), field("run_time_ns:"))
    }

    /// One node's frames, bytes and new flows forwarded by the program.
    pub fn node_stats(&self, id: u32) -> NodeStats {
        let m = self.maps.lock();
        m.node_stats.get(&id, 0).map_or([0; 3], |v| {
            v.iter().fold([0; 3], |a, s| [a[0] + s[0], a[1] + s[1], a[2] + s[2]])
        })
    }

    /// The pin of an IPv4 flow, as the program would find it now.
    pub fn peek(&self, key: &FlowKey) -> Option<Pinned> {
        let k = flow_key(key)?;
        let m = self.maps.lock();
        let v = m.flows.get(&k, 0).or_else(|_| m.half_open.get(&k, 0)).ok()?;
        let (last, node) = pin_of(&v);
        let idle_ns = monotonic_ns().saturating_sub(last);
        (idle_ns <= m.service_head.2).then_some(Pinned {
            node,
            idle_ms: idle_ns / 1_000_000,
        })
    }

    /// Deletes the flows pinned to nodes `dead` says are gone; how many.
    pub fn purge(&self, dead: impl Fn(u32) -> bool) -> u64 {
        let mut m = self.maps.lock();
        let n = m.sweep(|_, node| dead(node));
        m.flow_stats.purges += n;
        n
    }

    /// Deletes flows idle past the timeout and recounts the rest; the flow-map figures.
    pub fn sweep_idle(&self) -> u64 {
        let mut m = self.maps.lock();
        let (now, idle) = (monotonic_ns(), m.service_head.2);
        let n = m.sweep(|last, _| now.saturating_sub(last) > idle);
        m.flow_stats.expirations += n;
        n
    }

    /// The flow maps' figures: size and size per node at the last sweep, purges and expiries.
    pub fn flow_stats(&self) -> FlowStats {
        self.maps.lock().flow_stats.clone()
    }
}

impl Maps {
    /// Writes `NODES` and `MAGLEV` into the idle half, flips to it, then updates ports.
    fn write(&mut self, (entries, table): &(Vec<[u8; 8]>, Vec<u32>), ports: &[u16]) -> Result<(), XdpError> {
        let half = 1 - self.active;
        let base = half * MAX_NODES;
        for (id, e) in entries.iter().enumerate() {
            if self.entries[half as usize][id] != *e {
                self.nodes.set(base + id as u32, e, 0).map_err(map_err("NODES"))?;
                self.entries[half as usize][id] = *e;
            }
        }
        let base = half * TABLE_SIZE as u32;
        for (slot, id) in table.iter().enumerate() {
            if self.tables[half as usize][slot] != *id {
                self.maglev.set(base + slot as u32, id, 0).map_err(map_err("MAGLEV"))?;
                self.tables[half as usize][slot] = *id;
            }
        }
        let (vip, mac, idle) = self.service_head;
        self.service
            .set(0, service_bytes(vip, mac, idle, half), 0)
            .map_err(map_err("SERVICE"))?;
        self.active = half;
        for &p in &self.served {
            if ports.binary_search(&p).is_err() {
                self.ports.set(u32::from(p), 0, 0).map_err(map_err("PORTS"))?;
            }
        }
        for &p in ports {
            if self.served.binary_search(&p).is_err() {
                self.ports.set(u32::from(p), 1, 0).map_err(map_err("PORTS"))?;
            }
        }
        self.served = ports.to_vec();
        Ok(())
    }

    /// Deletes every pin `gone(last_ns, node)` picks, from both flow maps, and recounts the
    /// rest per node; how many were deleted.
    fn sweep(&mut self, gone: impl Fn(u64, u32) -> bool) -> u64 {
        let mut deleted = 0;
        let mut len = 0;
        let mut by_node: Vec<u64> = Vec::new();
        for map in [&mut self.flows, &mut self.half_open] {
            // Keys first: deleting while walking would restart the walk.
            let pins: Vec<([u8; 16], [u8; 16])> = map.iter().filter_map(Result::ok).collect();
            for (k, v) in pins {
                let (last, node) = pin_of(&v);
                if gone(last, node) {
                    if map.remove(&k).is_ok() {
                        deleted += 1;
                    }
                } else {
                    len += 1;
                    let i = node as usize;
                    if by_node.len() <= i {
                        by_node.resize(i + 1, 0);
                    }
                    by_node[i] += 1;
                }
            }
        }
        self.flow_stats.len = len;
        self.flow_stats.len_by_node = by_node;
        deleted
    }
}

fn refused(e: ProgramError) -> XdpError {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => XdpError::Refused {
            cause: io_error,
            log: verifier_tail(&verifier_log.to_string()),
        },
        other => XdpError::Refused {
            cause: io::Error::other(other.to_string()),
            log: String::new(),
        },
    }
}

/// The verifier's last lines (where it says what it refused), on one line.
fn verifier_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    match lines.len() {
        0 => String::new(),
        n => format!("; verifier: {}", lines[n.saturating_sub(VERIFIER_LINES)..].join(" | ")),
    }
}

/// Lines of the verifier's log kept in the start-up error.
const VERIFIER_LINES: usize = 12;

fn attach_error(interface: &str, mode: Mode, e: ProgramError) -> XdpError {
    let errno = match &e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    };
    // EBUSY: a program (or link) holds this mode; EEXIST: one is attached in the other mode.
    if matches!(errno, Some(libc::EBUSY) | Some(libc::EEXIST)) {
        return XdpError::Busy {
            interface: interface.into(),
        };
    }
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        cause = format!("{cause}: {s}");
        source = s.source();
    }
    XdpError::Attach {
        interface: interface.into(),
        mode: mode.as_str(),
        cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::NodeView;
    use crate::health::State;
    use std::net::IpAddr;
    use std::sync::Arc;

    #[test]
    fn flow_keys_are_the_c_struct_and_ipv6_has_none() {
        let k = FlowKey {
            src: Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets(),
            dst: Ipv4Addr::new(192, 0, 2, 100).to_ipv6_mapped().octets(),
            sport: 40000,
            dport: 80,
            proto: 6,
        };
        assert_eq!(
            flow_key(&k),
            Some([192, 0, 2, 1, 192, 0, 2, 100, 0x9c, 0x40, 0, 80, 6, 0, 0, 0])
        );
        let v6 = FlowKey {
            src: "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets(),
            ..k
        };
        assert_eq!(flow_key(&v6), None);
    }

    #[test]
    fn tables_hold_node_ids_and_flags() {
        let node = |id: u32, last: u8, state: State, weight: u32, mac: bool| NodeView {
            id,
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)),
            mac: mac.then_some(Mac([2, 0, 0, 0, 0, last])),
            state,
            weight,
            counters: Arc::default(),
        };
        // Ids are not indexes: 7 and 3, up; 5 draining; 9 down; 4 up without a MAC.
        let s = Snapshot::new(vec![
            node(7, 11, State::Up, 1, true),
            node(3, 12, State::Up, 1, true),
            node(5, 13, State::Up, 0, true),
            node(9, 14, State::Down, 1, true),
            node(4, 15, State::Up, 1, false),
        ]);
        let (entries, table) = tables(&s);
        assert_eq!(entries[7], [2, 0, 0, 0, 0, 11, SERVES_PINNED | TAKES_NEW, 0]);
        assert_eq!(entries[5][6], SERVES_PINNED);
        assert_eq!(entries[9][6], 0);
        assert_eq!(entries[4][6], 0);
        assert_eq!(entries[0], [0; 8]);
        // Every slot is 7 or 3, as the user-space table says, about half each.
        let sevens = table.iter().filter(|&&id| id == 7).count();
        assert_eq!(sevens + table.iter().filter(|&&id| id == 3).count(), TABLE_SIZE);
        assert!(
            (TABLE_SIZE / 2 - 400..TABLE_SIZE / 2 + 400).contains(&sevens),
            "{sevens}"
        );
        for slot in [0, 1, 100, 65536] {
            assert_eq!(Some(table[slot]), s.slot_node_id(slot));
        }
        // No node up: every slot empty.
        let (_, none) = tables(&Snapshot::new(vec![node(1, 11, State::Down, 1, true)]));
        assert!(none.iter().all(|&id| id == NO_NODE));
    }

    #[test]
    fn a_refusal_names_the_verifiers_last_words() {
        assert_eq!(verifier_tail(""), "");
        let log: String = (1..=20).map(|i| format!("{i}: insn\n")).collect::<String>()
            + "\ninvalid access to packet, off=14 size=2\nprocessed 30 insns\n";
        let tail = verifier_tail(&log);
        assert!(tail.starts_with("; verifier: 11: insn | "), "{tail}");
        assert!(
            tail.ends_with("invalid access to packet, off=14 size=2 | processed 30 insns"),
            "{tail}"
        );
        let e = XdpError::Refused {
            cause: io::Error::from_raw_os_error(libc::EACCES),
            log: tail,
        };
        assert!(
            e.to_string()
                .starts_with("the kernel refused the XDP program (Permission denied"),
            "{e}"
        );
    }

    #[test]
    fn service_layout() {
        let b = service_bytes(Ipv4Addr::new(192, 0, 2, 100), Mac([2, 0, 0, 0, 0, 2]), 5, 1);
        assert_eq!(&b[..4], &[192, 0, 2, 100]);
        assert_eq!(u32::from_ne_bytes([b[4], b[5], b[6], b[7]]), 1);
        assert_eq!(&b[16..22], &[2, 0, 0, 0, 0, 2]);
    }
}
