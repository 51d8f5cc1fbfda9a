//! The packet loop: one thread per worker, each with its own receive ring in a fanout group
//! and its own send socket. It only moves bytes: every decision is in [`crate::packet`] and
//! [`crate::balancer`].
//!
//! Per round (one wait, then every block the kernel has already filled) a worker reads the
//! published [`Plan`] once (an `Arc` clone when it changed), takes at most one uncontended
//! flow-table shard lock per frame, sends with one `sendmmsg` per 64 frames, and adds its
//! counters to the shared ones once.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::balancer::{add, now_ms, NodeCounters, Reason, Snapshot};
use crate::flow::{FlowStats, FlowTable};
use crate::packet::{self, Class, Service};
use crate::sys::{RingConfig, RxFrame, RxRing, TxBatch, TxSocket, STATUS_CSUM_NOT_READY};
use crate::xdp::Xdp;

/// What the data plane acts on; replaced as a whole by the control plane.
#[derive(Debug)]
pub struct Plan {
    /// VIPs, ports and our MAC.
    pub service: Service,
    /// Nodes and the Maglev table.
    pub snapshot: Snapshot,
}

/// Counters not tied to one node.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames read from the rings.
    pub rx_frames: AtomicU64,
    /// ARP replies sent for the VIP.
    pub arp_replies: AtomicU64,
    /// Neighbour advertisements sent for the IPv6 VIP.
    pub neighbor_adverts: AtomicU64,
    /// ICMP fragmentation-needed / packet-too-big forwarded to a node.
    pub icmp_too_big: AtomicU64,
    /// VIP packets dropped because no node was up.
    pub no_node: AtomicU64,
    /// Frames too large to re-send (GRO/GSO super-frames, truncated captures).
    pub oversize: AtomicU64,
    /// Frames for the director whose headers are cut short or contradict each other
    /// ([`Class::Malformed`]): not forwarded, left to the kernel.
    pub malformed: AtomicU64,
    /// Frames whose L4 checksum had to be completed (veth senders).
    pub checksum_completed: AtomicU64,
    /// Frames the kernel refused to send.
    pub tx_errors: AtomicU64,
}

/// State shared by the workers, the control plane and the admin listener.
#[derive(Debug)]
pub struct Shared {
    /// The current plan; read by workers only when `generation` moved.
    plan: RwLock<Arc<Plan>>,
    /// Bumped on every publish, so workers notice a new plan with one atomic load.
    generation: AtomicU64,
    /// Pinned flows.
    pub flows: FlowTable,
    /// Global counters.
    pub counters: Counters,
    /// Set to stop the workers.
    pub shutdown: AtomicBool,
    /// The XDP program, when it forwards the IPv4 VIP traffic: then the workers leave IPv4
    /// alone and handle ARP and IPv6 only.
    pub xdp: Option<Arc<Xdp>>,
}

impl Shared {
    /// Shared state starting with `plan`, forwarding in user space only.
    pub fn new(plan: Plan, flows: FlowTable) -> Shared {
        Shared {
            plan: RwLock::new(Arc::new(plan)),
            generation: AtomicU64::new(0),
            flows,
            counters: Counters::default(),
            shutdown: AtomicBool::new(false),
            xdp: None,
        }
    }

    /// Shared state starting with `plan`, IPv4 forwarded by the XDP program `xdp`.
    pub fn with_xdp(plan: Plan, flows: FlowTable, xdp: Arc<Xdp>) -> Shared {
        let shared = Shared {
            xdp: Some(xdp),
            ..Shared::new(plan, flows)
        };
        shared.publish_to_xdp(&shared.plan());
        shared
    }

    fn publish_to_xdp(&self, plan: &Plan) {
        if let Some(x) = &self.xdp {
            if let Err(e) = x.publish(&plan.snapshot, &plan.service) {
                tracing::error!(error = %e, "cannot write the plan into the XDP maps; the program keeps the previous one");
            }
        }
    }

    /// Removes the flows pinned to the nodes `dead` picks, in both planes; how many.
    pub fn purge(&self, dead: impl Fn(u32) -> bool) -> u64 {
        let mut n = self.flows.purge(&dead);
        if let Some(x) = &self.xdp {
            n += x.purge(&dead);
        }
        n
    }

    /// Flow figures of both planes together.
    pub fn flow_stats(&self) -> FlowStats {
        let mut s = self.flows.stats();
        if let Some(x) = &self.xdp {
            s.absorb(&x.flow_stats());
        }
        s
    }

    /// A node's frames, bytes and new flows, from both planes.
    pub fn node_totals(&self, id: u32, c: &NodeCounters) -> [u64; 3] {
        let k = self.xdp.as_ref().map_or([0; 3], |x| x.node_stats(id));
        [
            c.packets.load(Ordering::Relaxed) + k[0],
            c.bytes.load(Ordering::Relaxed) + k[1],
            c.new_flows.load(Ordering::Relaxed) + k[2],
        ]
    }

    /// The current plan.
    pub fn plan(&self) -> Arc<Plan> {
        self.plan.read().clone()
    }

    /// Replaces the plan; workers pick it up at their next block.
    pub fn publish(&self, plan: Plan) {
        self.publish_to_xdp(&plan);
        *self.plan.write() = Arc::new(plan);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// How long a worker waits for a block before checking for shutdown and new plans.
const POLL: Duration = Duration::from_millis(100);
/// Frames per `sendmmsg`.
const BATCH: usize = 64;
/// Blocks handled between two looks at the plan and two counter flushes.
const MAX_BLOCKS_PER_ROUND: usize = 256;

/// One data-plane worker: its sockets and buffers.
pub struct Worker {
    /// Plan, flows and counters shared with the other workers and the control plane.
    shared: Arc<Shared>,
    /// This worker's receive ring (one member of the fanout group).
    rx: RxRing,
    /// This worker's send socket.
    tx: TxSocket,
    /// Frames waiting for the next `sendmmsg`.
    batch: TxBatch,
}

impl Worker {
    /// Opens the worker's ring (in fanout group `group`) and send socket on `ifindex`.
    /// `max_frame` is the largest frame it will re-send (MTU + Ethernet and VLAN headers).
    pub fn open(shared: Arc<Shared>, ifindex: u32, group: u16, max_frame: usize) -> io::Result<Worker> {
        Ok(Worker {
            rx: RxRing::open(ifindex, &RingConfig::for_frames(max_frame), Some(group))?,
            tx: TxSocket::open(ifindex)?,
            batch: TxBatch::new(BATCH, max_frame),
            shared,
        })
    }

    /// Runs until `shared.shutdown` is set. Errors of the ring end the worker.
    pub fn run(mut self) -> io::Result<()> {
        let shared = self.shared.clone();
        let mut generation = shared.generation.load(Ordering::Acquire);
        let mut plan = shared.plan();
        // Per-node (packets, bytes, new flows), added to the shared counters once per round.
        let mut local: Vec<[u64; 3]> = vec![[0; 3]; plan.snapshot.nodes.len()];
        while !shared.shutdown.load(Ordering::Relaxed) {
            let mut now = 0;
            let mut rx = 0;
            let mut blocks = 0;
            // Wait for one block, then drain every block already filled before sending, so
            // one sendmmsg carries up to BATCH frames however small the blocks are.
            loop {
                let block = if blocks == 0 {
                    self.rx.next_block(POLL)?
                } else if blocks < MAX_BLOCKS_PER_ROUND {
                    self.rx.try_next_block()
                } else {
                    None
                };
                let Some(mut block) = block else { break };
                if blocks == 0 {
                    now = now_ms();
                    // Checked after the wait, so a block is never handled with a plan older
                    // than the moment it arrived.
                    let g = shared.generation.load(Ordering::Acquire);
                    if g != generation {
                        generation = g;
                        plan = shared.plan();
                        local = vec![[0; 3]; plan.snapshot.nodes.len()];
                    }
                }
                blocks += 1;
                while let Some(frame) = block.next_frame() {
                    rx += 1;
                    handle(&shared, &plan, &mut self.batch, &mut local, &frame, now);
                    if self.batch.is_full() {
                        flush(&shared, &self.tx, &mut self.batch);
                    }
                }
            }
            if blocks == 0 {
                continue;
            }
            flush(&shared, &self.tx, &mut self.batch);
            add(&shared.counters.rx_frames, rx);
            for (i, c) in local.iter_mut().enumerate() {
                if let Some(n) = plan.snapshot.nodes.get(i) {
                    add(&n.counters.packets, c[0]);
                    add(&n.counters.bytes, c[1]);
                    add(&n.counters.new_flows, c[2]);
                }
                *c = [0; 3];
            }
        }
        Ok(())
    }
}

fn flush(shared: &Shared, tx: &TxSocket, batch: &mut TxBatch) {
    if batch.is_empty() {
        return;
    }
    let sent = tx.send_batch(batch).unwrap_or(0);
    add(&shared.counters.tx_errors, (batch.len() - sent) as u64);
    batch.clear();
}

/// Decides what to do with one received frame and queues what must be sent.
fn handle(shared: &Shared, plan: &Plan, batch: &mut TxBatch, local: &mut [[u64; 3]], frame: &RxFrame<'_>, now: u64) {
    let (data, vlan) = (frame.data, frame.vlan);
    if shared.xdp.is_some() && packet::is_ipv4(data) {
        return; // the program's business; it passed this one to the kernel
    }
    let svc = &plan.service;
    let snap = &plan.snapshot;
    let decision = match packet::classify(data, svc) {
        Class::Other => return,
        Class::Malformed => {
            // A capture the ring cut short (a GRO super-frame) reads as malformed too: it is
            // counted as what it is, too large to re-send.
            let counter = if data.len() < frame.wire_len as usize {
                &shared.counters.oversize
            } else {
                &shared.counters.malformed
            };
            add(counter, 1);
            return;
        }
        Class::ArpRequest { mac, ip } => {
            if let Some(vip) = svc.vip4 {
                if batch
                    .push_tagged(&packet::arp_reply(svc.mac, vip, mac, ip), vlan)
                    .is_some()
                {
                    add(&shared.counters.arp_replies, 1);
                }
            }
            return;
        }
        Class::NeighborSolicit { mac, ip } => {
            if let Some(vip) = svc.vip6 {
                if batch
                    .push_tagged(&packet::neighbor_advert(svc.mac, vip, Some((mac, ip))), vlan)
                    .is_some()
                {
                    add(&shared.counters.neighbor_adverts, 1);
                }
            }
            return;
        }
        Class::Flow { key, pin, syn } => snap.decide(&shared.flows, &key, key.hash(), pin, syn, now),
        Class::TooBig { key } => {
            let d = snap.explain(&shared.flows, &key, key.hash(), now);
            if d.is_some() {
                add(&shared.counters.icmp_too_big, 1);
            }
            d
        }
    };
    let Some(d) = decision else {
        add(&shared.counters.no_node, 1);
        return;
    };
    let Some(mac) = snap.nodes.get(d.node).and_then(|n| n.mac) else {
        return;
    };
    if data.len() < frame.wire_len as usize || data.len() + 4 > batch.slot_size() {
        add(&shared.counters.oversize, 1);
        return;
    }
    let Some(out) = batch.push_tagged(data, vlan) else {
        add(&shared.counters.oversize, 1);
        return;
    };
    packet::rewrite_macs(out, mac, svc.mac);
    if frame.status & STATUS_CSUM_NOT_READY != 0 && packet::complete_checksum(out) {
        add(&shared.counters.checksum_completed, 1);
    }
    if let Some(c) = local.get_mut(d.node) {
        c[0] += 1;
        c[1] += data.len() as u64;
        if matches!(d.reason, Reason::NewFlow { .. }) {
            c[2] += 1;
        }
    }
}

/// Sends a gratuitous ARP (and an unsolicited neighbour advertisement) for the VIPs.
pub fn announce(tx: &TxSocket, svc: &Service) -> io::Result<()> {
    if let Some(vip) = svc.vip4 {
        tx.send(&packet::gratuitous_arp(svc.mac, vip))?;
    }
    if let Some(vip) = svc.vip6 {
        tx.send(&packet::neighbor_advert(svc.mac, vip, None))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::{NodeCounters, NodeView};
    use crate::health::State;
    use crate::packet::tests::{frag_needed, svc, tcp4, CLIENT, CLIENT_IP, DIRECTOR, VIP};
    use crate::packet::Mac;
    use std::net::{IpAddr, Ipv4Addr};

    fn shared(states: [State; 3]) -> Shared {
        let nodes = (0..3u8)
            .map(|i| NodeView {
                id: u32::from(i),
                addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11 + i)),
                mac: Some(Mac([2, 0, 0, 0, 0, 11 + i])),
                state: states[usize::from(i)],
                weight: 1,
                counters: Arc::new(NodeCounters::default()),
            })
            .collect();
        Shared::new(
            Plan {
                service: svc(),
                snapshot: Snapshot::new(nodes),
            },
            FlowTable::new(10_000, 60_000),
        )
    }

    /// Runs one frame through the worker's decision path; the frames it would send.
    fn run(shared: &Shared, frame: &[u8], status: u32) -> Vec<Vec<u8>> {
        run_tagged(shared, frame, status, None)
    }

    fn run_tagged(shared: &Shared, frame: &[u8], status: u32, vlan: Option<(u16, u16)>) -> Vec<Vec<u8>> {
        run_captured(shared, frame, frame.len(), status, vlan)
    }

    /// Like `run_tagged`, for a frame that had `wire_len` bytes on the wire.
    fn run_captured(
        shared: &Shared,
        frame: &[u8],
        wire_len: usize,
        status: u32,
        vlan: Option<(u16, u16)>,
    ) -> Vec<Vec<u8>> {
        let plan = shared.plan();
        let mut batch = TxBatch::new(8, 1600);
        let mut local = vec![[0u64; 3]; 3];
        let rx = RxFrame {
            data: frame,
            wire_len: wire_len as u32,
            status,
            vlan,
        };
        handle(shared, &plan, &mut batch, &mut local, &rx, 0);
        batch.frames().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn a_stripped_vlan_tag_is_put_back() {
        let s = shared([State::Up; 3]);
        let syn = tcp4(CLIENT_IP, 40000, VIP, 80, 0x02, b"");
        let out = run_tagged(&s, &syn, 0, Some((0x8100, 42)));
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0][12..16], &[0x81, 0x00, 0x00, 42]);
        assert_eq!(&out[0][16..], &syn[12..]);
    }

    #[test]
    fn answers_arp_for_the_vip() {
        let s = shared([State::Up; 3]);
        let mut req = packet::gratuitous_arp(CLIENT, CLIENT_IP).to_vec();
        req[38..42].copy_from_slice(&VIP.octets()); // who-has VIP, tell client
        let out = run(&s, &req, 0);
        assert_eq!(out, vec![packet::arp_reply(DIRECTOR, VIP, CLIENT, CLIENT_IP).to_vec()]);
    }

    #[test]
    fn forwards_with_only_the_macs_changed_and_icmp_follows_the_flow() {
        let s = shared([State::Up; 3]);
        let syn = tcp4(CLIENT_IP, 40000, VIP, 80, 0x02, b"");
        let out = run(&s, &syn, 0);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0][6..12], &DIRECTOR.0);
        assert_eq!(&out[0][12..], &syn[12..]);
        let node_mac = out[0][..6].to_vec();

        // Fragmentation needed for the VIP → client direction of that flow.
        let icmp = frag_needed(&tcp4(VIP, 80, CLIENT_IP, 40000, 0x10, b""));
        let out = run(&s, &icmp, 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0][..6], node_mac[..]);
        assert_eq!(s.counters.icmp_too_big.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn completes_partial_checksums_only_when_told() {
        let s = shared([State::Up; 3]);
        let mut partial = tcp4(CLIENT_IP, 40001, VIP, 80, 0x02, b"");
        let good = partial[50..52].to_vec();
        partial[50..52].copy_from_slice(&[0, 0]);
        assert_eq!(run(&s, &partial, 0)[0][50..52], [0, 0]);
        assert_eq!(run(&s, &partial, STATUS_CSUM_NOT_READY)[0][50..52], good[..]);
    }

    #[test]
    fn malformed_frames_are_counted_and_never_forwarded() {
        let s = shared([State::Up; 3]);
        let syn = tcp4(CLIENT_IP, 40000, VIP, 80, 0x02, b"GET / HTTP/1.1\r\n");
        // Every prefix, with CSUM_NOT_READY so the checksum path runs too.
        for n in 0..syn.len() {
            assert!(run(&s, &syn[..n], STATUS_CSUM_NOT_READY).is_empty(), "cut to {n}");
        }
        assert_eq!(s.counters.malformed.load(Ordering::Relaxed), syn.len() as u64);
        assert_eq!(s.counters.oversize.load(Ordering::Relaxed), 0);
        // A capture the ring cut short is counted as too large to re-send.
        assert!(run_captured(&s, &syn[..40], syn.len(), 0, None).is_empty());
        assert_eq!(s.counters.oversize.load(Ordering::Relaxed), 1);
        assert_eq!(s.counters.malformed.load(Ordering::Relaxed), syn.len() as u64);
        assert_eq!(run(&s, &syn, 0).len(), 1);
    }

    #[test]
    fn drops_and_counts_when_no_node_is_up() {
        let s = shared([State::Down; 3]);
        assert!(run(&s, &tcp4(CLIENT_IP, 40000, VIP, 80, 0x02, b""), 0).is_empty());
        assert_eq!(s.counters.no_node.load(Ordering::Relaxed), 1);
        // Not ours at all: silently left to the kernel.
        assert!(run(
            &s,
            &tcp4(CLIENT_IP, 40000, Ipv4Addr::new(192, 0, 2, 2), 22, 0x02, b""),
            0
        )
        .is_empty());
        assert_eq!(s.counters.no_node.load(Ordering::Relaxed), 1);
    }
}
