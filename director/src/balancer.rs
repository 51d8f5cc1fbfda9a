//! Choosing a node for a packet: pinned flow first, else the Maglev slot.
//!
//! A [`Snapshot`] is an immutable picture of the nodes (state, weight, MAC) and the Maglev
//! table built from the eligible ones; the control plane publishes a new one whenever any
//! of that changes, and the data plane reads it without locks. Rules:
//!
//! - a pinned flow keeps its node while that node is up with a resolved MAC, even at
//!   weight 0 (draining);
//! - a flow pinned to a node that went down or left the config is unpinned at once and
//!   re-placed (the new node answers with a RST and the client reconnects);
//! - a new flow takes the node of its Maglev slot (up, MAC resolved, weight > 0) and is pinned;
//! - fragments are placed by (source, VIP, protocol) only and never pinned, so all
//!   fragments of a datagram land together;
//! - ICMP fragmentation-needed follows the flow it quotes, without pinning anything.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::flow::{FlowKey, FlowTable, Pinned};
use crate::health::State;
use crate::maglev::{key_of, Member, Table};
use crate::packet::Mac;

/// Counters of one node, kept across snapshots and reloads while the node stays configured.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Frames forwarded to it.
    pub packets: AtomicU64,
    /// Bytes of those frames.
    pub bytes: AtomicU64,
    /// Flows newly pinned to it.
    pub new_flows: AtomicU64,
    /// Health checks that failed.
    pub check_failures: AtomicU64,
    /// Times it changed state.
    pub transitions: AtomicU64,
}

/// One node as the data plane sees it.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// Stable id: one per node address for the life of the process; what flows are pinned to.
    pub id: u32,
    /// Its address on the segment.
    pub addr: IpAddr,
    /// Its resolved MAC; `None` makes it ineligible.
    pub mac: Option<Mac>,
    /// Health.
    pub state: State,
    /// Share of new flows; 0 drains.
    pub weight: u32,
    /// Shared counters.
    pub counters: Arc<NodeCounters>,
}

impl NodeView {
    /// Whether existing flows may keep going to it.
    pub fn serves_pinned(&self) -> bool {
        self.state == State::Up && self.mac.is_some()
    }

    /// Whether new flows may go to it.
    pub fn takes_new(&self) -> bool {
        self.serves_pinned() && self.weight > 0
    }
}

/// An immutable picture of the nodes plus their Maglev table.
#[derive(Debug)]
pub struct Snapshot {
    /// The nodes, in config order; Maglev slots hold indexes into this.
    pub nodes: Vec<NodeView>,
    /// Node id → index into `nodes`, to resolve pinned flows.
    by_id: Vec<Option<usize>>,
    /// Maglev table over the nodes that take new flows.
    table: Table,
}

/// Why a packet goes where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The flow was pinned to this node; `idle_ms` since its previous packet.
    Pinned {
        /// Milliseconds since the flow's previous packet.
        idle_ms: u64,
    },
    /// New (or unknown) flow: Maglev slot `slot`; now pinned.
    NewFlow {
        /// Maglev slot.
        slot: usize,
    },
    /// Not pinned (fragment, ICMP, or a query about an unknown flow): Maglev slot `slot`.
    Slot {
        /// Maglev slot.
        slot: usize,
    },
}

/// A node index into [`Snapshot::nodes`] and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index into the snapshot's nodes.
    pub node: usize,
    /// Why.
    pub reason: Reason,
}

impl Snapshot {
    /// Builds the snapshot and its Maglev table (only eligible nodes get slots).
    pub fn new(nodes: Vec<NodeView>) -> Snapshot {
        let members: Vec<Member> = nodes
            .iter()
            .map(|n| Member {
                key: key_of(n.addr),
                weight: if n.takes_new() { n.weight } else { 0 },
            })
            .collect();
        let mut by_id = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let id = n.id as usize;
            if by_id.len() <= id {
                by_id.resize(id + 1, None);
            }
            by_id[id] = Some(i);
        }
        Snapshot {
            table: Table::build(&members),
            nodes,
            by_id,
        }
    }

    /// Index of the node with id `id`, if it is still configured.
    pub fn index_of(&self, id: u32) -> Option<usize> {
        self.by_id.get(id as usize).copied().flatten()
    }

    /// The node id owning Maglev slot `slot`, if any (what the XDP plane's table holds).
    pub fn slot_node_id(&self, slot: usize) -> Option<u32> {
        self.table.member_at(slot).map(|i| self.nodes[i].id)
    }

    /// The Maglev choice for a hash.
    pub fn slot_owner(&self, hash: u64) -> Option<(usize, usize)> {
        let slot = Table::slot(hash);
        self.table.member_at(slot).map(|i| (i, slot))
    }

    /// Places a packet of flow `key` (hash `hash`), pinning new flows when `pin`; `syn`
    /// marks a bare TCP SYN (the flow is pinned as half-open).
    /// `None`: no node can take it (the packet is dropped).
    pub fn decide(
        &self,
        flows: &FlowTable,
        key: &FlowKey,
        hash: u64,
        pin: bool,
        syn: bool,
        now_ms: u64,
    ) -> Option<Decision> {
        if pin {
            if let Some(p) = flows.get(key, hash, syn, now_ms) {
                match self.index_of(p.node) {
                    Some(i) if self.nodes[i].serves_pinned() => {
                        return Some(Decision {
                            node: i,
                            reason: Reason::Pinned { idle_ms: p.idle_ms },
                        })
                    }
                    _ => flows.remove(key, hash),
                }
            }
        }
        let (node, slot) = self.slot_owner(hash)?;
        if pin {
            flows.insert(*key, hash, self.nodes[node].id, syn, now_ms);
            Some(Decision {
                node,
                reason: Reason::NewFlow { slot },
            })
        } else {
            Some(Decision {
                node,
                reason: Reason::Slot { slot },
            })
        }
    }

    /// Where a packet of `key` would go now, changing nothing (ICMP errors, admin queries).
    pub fn explain(&self, flows: &FlowTable, key: &FlowKey, hash: u64, now_ms: u64) -> Option<Decision> {
        self.explain_pinned(flows.peek(key, hash, now_ms), hash)
    }

    /// Like [`Snapshot::explain`], for a flow whose pin (if any) was looked up elsewhere (the
    /// XDP plane's flow map).
    pub fn explain_pinned(&self, pinned: Option<Pinned>, hash: u64) -> Option<Decision> {
        if let Some(p) = pinned {
            if let Some(i) = self.index_of(p.node).filter(|&i| self.nodes[i].serves_pinned()) {
                return Some(Decision {
                    node: i,
                    reason: Reason::Pinned { idle_ms: p.idle_ms },
                });
            }
        }
        self.slot_owner(hash).map(|(node, slot)| Decision {
            node,
            reason: Reason::Slot { slot },
        })
    }
}

/// Milliseconds on a monotonic clock shared by the data and control planes.
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

/// Adds to a counter (relaxed: counters are statistics, not synchronisation).
pub fn add(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn node(id: u32, last: u8, state: State, weight: u32) -> NodeView {
        NodeView {
            id,
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)),
            mac: Some(Mac([2, 0, 0, 0, 0, last])),
            state,
            weight,
            counters: Arc::default(),
        }
    }

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src: Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets(),
            dst: Ipv4Addr::new(192, 0, 2, 100).to_ipv6_mapped().octets(),
            sport: port,
            dport: 80,
            proto: 6,
        }
    }

    fn three(states: [State; 3], weights: [u32; 3]) -> Snapshot {
        Snapshot::new(
            (0..3)
                .map(|i| node(i, 11 + i as u8, states[i as usize], weights[i as usize]))
                .collect(),
        )
    }

    const UP3: [State; 3] = [State::Up; 3];

    #[test]
    fn new_flows_are_pinned_and_stay_pinned_across_table_changes() {
        let flows = FlowTable::new(100_000, 60_000);
        let before = three(UP3, [1, 1, 1]);
        let mut placed = Vec::new();
        for p in 0..3000 {
            let k = key(p);
            let d = before.decide(&flows, &k, k.hash(), true, false, 0).unwrap();
            assert!(matches!(d.reason, Reason::NewFlow { .. }));
            placed.push(d.node);
        }
        // Node 0 drains: its flows stay, nobody's flow moves.
        let after = three(UP3, [0, 1, 1]);
        for p in 0..3000 {
            let k = key(p);
            let d = after.decide(&flows, &k, k.hash(), true, false, 1).unwrap();
            assert_eq!(d.node, placed[p as usize]);
            assert!(matches!(d.reason, Reason::Pinned { idle_ms: 1 }));
        }
        // But it takes no new flows.
        for p in 3000..6000 {
            let k = key(p);
            assert_ne!(after.decide(&flows, &k, k.hash(), true, false, 2).unwrap().node, 0);
        }
    }

    #[test]
    fn a_dead_nodes_flows_move_and_only_those() {
        let flows = FlowTable::new(100_000, 60_000);
        let before = three(UP3, [1, 1, 1]);
        let placed: Vec<usize> = (0..3000)
            .map(|p| {
                let k = key(p);
                before.decide(&flows, &k, k.hash(), true, false, 0).unwrap().node
            })
            .collect();
        let after = three([State::Up, State::Down, State::Up], [1, 1, 1]);
        for p in 0..3000 {
            let k = key(p);
            let d = after.decide(&flows, &k, k.hash(), true, false, 1).unwrap();
            if placed[p as usize] == 1 {
                assert_ne!(d.node, 1);
                assert!(matches!(d.reason, Reason::NewFlow { .. }));
            } else {
                assert_eq!(d.node, placed[p as usize]);
            }
        }
        assert_eq!(flows.stats().len_by_node.get(1).copied().unwrap_or(0), 0);
    }

    #[test]
    fn unresolved_mac_is_ineligible() {
        let mut nodes: Vec<NodeView> = (0..2).map(|i| node(i, 11 + i as u8, State::Up, 1)).collect();
        nodes[0].mac = None;
        let s = Snapshot::new(nodes);
        let flows = FlowTable::new(10_000, 60_000);
        for p in 0..500 {
            let k = key(p);
            assert_eq!(s.decide(&flows, &k, k.hash(), true, false, 0).unwrap().node, 1);
        }
    }

    #[test]
    fn nothing_up_drops_and_fragments_are_not_pinned() {
        let flows = FlowTable::new(10_000, 60_000);
        let down = three([State::Down; 3], [1, 1, 1]);
        assert_eq!(down.decide(&flows, &key(1), key(1).hash(), true, true, 0), None);
        let up = three(UP3, [1, 1, 1]);
        let d = up.decide(&flows, &key(1), key(1).hash(), false, false, 0).unwrap();
        assert!(matches!(d.reason, Reason::Slot { .. }));
        assert_eq!(flows.stats().len, 0);
    }

    #[test]
    fn explain_prefers_the_pin_and_changes_nothing() {
        let flows = FlowTable::new(10_000, 60_000);
        let s = three(UP3, [1, 1, 1]);
        let k = key(7);
        let fresh = s.explain(&flows, &k, k.hash(), 0).unwrap();
        assert!(matches!(fresh.reason, Reason::Slot { .. }));
        assert_eq!(flows.stats().len, 0);
        // Pin it to another node than its slot's owner, then ask again.
        let other = (fresh.node + 1) % 3;
        flows.insert(k, k.hash(), other as u32, false, 0);
        assert_eq!(
            s.explain(&flows, &k, k.hash(), 5),
            Some(Decision {
                node: other,
                reason: Reason::Pinned { idle_ms: 5 }
            })
        );
    }
}
