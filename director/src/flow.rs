//! The flow table: which node an established flow is pinned to.
//!
//! Bounded (least recently used entries are evicted when full) and idle-expiring (an entry
//! unused for `idle_timeout` is gone). Split into shards, each behind its own lock, chosen by
//! bits of the flow hash that the Maglev slot does not use; a packet takes one uncontended
//! lock. Entries live in a slab threaded on an LRU list, so lookup, touch, insert, eviction
//! and idle expiry (from the cold end) are all O(1) per entry.
//!
//! Flows seen only as a TCP SYN so far ("half-open") sit on their own LRU list and are
//! evicted before any established flow: a SYN flood can only push out other half-open
//! entries, never the flows of connected clients (a lost half-open pin costs nothing while
//! the node set is unchanged: the next packet takes the same Maglev slot).

use std::collections::HashMap;

use parking_lot::Mutex;

/// Number of shards (a power of two).
pub const SHARDS: usize = 64;

/// No slab index.
const NIL: u32 = u32::MAX;

/// A flow's identity in the client → VIP direction. IPv4 addresses are IPv4-mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Client address.
    pub src: [u8; 16],
    /// VIP.
    pub dst: [u8; 16],
    /// Client port (0 for fragments).
    pub sport: u16,
    /// VIP port (0 for fragments).
    pub dport: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
}

impl FlowKey {
    /// The 37 bytes hashed to place this flow (see [`crate::hash`]).
    pub fn hash(&self) -> u64 {
        let mut b = [0u8; 37];
        b[..16].copy_from_slice(&self.src);
        b[16..32].copy_from_slice(&self.dst);
        b[32..34].copy_from_slice(&self.sport.to_be_bytes());
        b[34..36].copy_from_slice(&self.dport.to_be_bytes());
        b[36] = self.proto;
        crate::hash::hash64(crate::hash::SEED_FLOW, &b)
    }
}

/// Counters of one shard, summed by [`FlowTable::stats`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlowStats {
    /// Entries now.
    pub len: u64,
    /// Entries dropped because the table was full.
    pub evictions: u64,
    /// Entries dropped because they were idle too long.
    pub expirations: u64,
    /// Entries dropped because their node went down or left the config.
    pub purges: u64,
    /// Entries per node id.
    pub len_by_node: Vec<u64>,
    /// Capacity evictions per node id.
    pub evictions_by_node: Vec<u64>,
}

impl FlowStats {
    /// Adds `other`'s figures to these.
    pub fn absorb(&mut self, other: &FlowStats) {
        self.len += other.len;
        self.evictions += other.evictions;
        self.expirations += other.expirations;
        self.purges += other.purges;
        for (id, n) in other.len_by_node.iter().enumerate() {
            bump(&mut self.len_by_node, id as u32, *n as i64);
        }
        for (id, n) in other.evictions_by_node.iter().enumerate() {
            bump(&mut self.evictions_by_node, id as u32, *n as i64);
        }
    }
}

fn bump(v: &mut Vec<u64>, id: u32, by: i64) {
    let i = id as usize;
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] = v[i].saturating_add_signed(by);
}

#[derive(Debug, Clone)]
struct Entry {
    /// The flow, to remove it from the map when evicted.
    key: FlowKey,
    /// Node id it is pinned to.
    node: u32,
    /// Time of its latest packet (LRU order and idle expiry).
    last_seen_ms: u64,
    /// Which list it is on: [`HALF_OPEN`] or [`ESTABLISHED`].
    list: usize,
    /// Neighbours on that list (NIL at the ends).
    prev: u32,
    /// See `prev`.
    next: u32,
}

/// List of flows seen only as a SYN.
const HALF_OPEN: usize = 0;
/// List of every other flow.
const ESTABLISHED: usize = 1;

/// One shard: a hash map into a slab threaded on two lists (half-open, established), each
/// ordered most recent (head) → least recent (tail).
#[derive(Debug)]
struct Shard {
    /// Flow → slab index.
    map: HashMap<FlowKey, u32>,
    /// The entries; grows up to `capacity`, then slots are reused.
    slab: Vec<Entry>,
    /// Slab slots free for reuse.
    free: Vec<u32>,
    /// Most recently used entry of each list.
    head: [u32; 2],
    /// Least recently used entry of each list: the next to expire or be evicted.
    tail: [u32; 2],
    /// Most entries this shard holds.
    capacity: usize,
    /// This shard's share of the counters.
    stats: FlowStats,
}

impl Shard {
    fn new(capacity: usize) -> Shard {
        Shard {
            map: HashMap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            head: [NIL; 2],
            tail: [NIL; 2],
            capacity: capacity.max(1),
            stats: FlowStats::default(),
        }
    }

    fn unlink(&mut self, i: u32) {
        let e = &self.slab[i as usize];
        let (prev, next, l) = (e.prev, e.next, e.list);
        if prev == NIL {
            self.head[l] = next;
        } else {
            self.slab[prev as usize].next = next;
        }
        if next == NIL {
            self.tail[l] = prev;
        } else {
            self.slab[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32, l: usize) {
        let head = self.head[l];
        let e = &mut self.slab[i as usize];
        e.list = l;
        e.prev = NIL;
        e.next = head;
        if head != NIL {
            self.slab[head as usize].prev = i;
        }
        self.head[l] = i;
        if self.tail[l] == NIL {
            self.tail[l] = i;
        }
    }

    fn remove_at(&mut self, i: u32) -> u32 {
        self.unlink(i);
        let e = &self.slab[i as usize];
        let (key, node) = (e.key, e.node);
        self.map.remove(&key);
        self.free.push(i);
        self.stats.len -= 1;
        bump(&mut self.stats.len_by_node, node, -1);
        node
    }

    fn expire(&mut self, now_ms: u64, idle_ms: u64, limit: usize) -> usize {
        let mut n = 0;
        for l in [HALF_OPEN, ESTABLISHED] {
            while n < limit && self.tail[l] != NIL && self.slab[self.tail[l] as usize].last_seen_ms + idle_ms <= now_ms
            {
                self.remove_at(self.tail[l]);
                self.stats.expirations += 1;
                n += 1;
            }
        }
        n
    }
}

/// What [`FlowTable::get`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned {
    /// Node id the flow is pinned to.
    pub node: u32,
    /// Milliseconds since the flow's previous packet.
    pub idle_ms: u64,
}

/// The sharded, bounded, idle-expiring flow table.
#[derive(Debug)]
pub struct FlowTable {
    /// One lock each, so workers rarely meet.
    shards: Box<[Mutex<Shard>]>,
    /// Idle time after which a flow is forgotten.
    idle_ms: u64,
}

fn shard_of(hash: u64) -> usize {
    // Top bits: the Maglev slot uses `hash % 65537`, which these do not bias.
    (hash >> 58) as usize & (SHARDS - 1)
}

impl FlowTable {
    /// A table holding at most about `capacity` flows, forgetting flows idle `idle_ms`.
    pub fn new(capacity: usize, idle_ms: u64) -> FlowTable {
        let per = capacity.div_ceil(SHARDS);
        FlowTable {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new(per))).collect(),
            idle_ms: idle_ms.max(1),
        }
    }

    /// The node `key` is pinned to, touching the entry; `None` if absent or idle too long.
    /// `syn_only`: this packet is a bare TCP SYN (a half-open flow stays half-open).
    pub fn get(&self, key: &FlowKey, hash: u64, syn_only: bool, now_ms: u64) -> Option<Pinned> {
        let mut s = self.shards[shard_of(hash)].lock();
        let i = *s.map.get(key)?;
        let e = &s.slab[i as usize];
        let idle = now_ms.saturating_sub(e.last_seen_ms);
        if idle >= self.idle_ms {
            s.remove_at(i);
            s.stats.expirations += 1;
            return None;
        }
        let (node, list) = (e.node, if syn_only { e.list } else { ESTABLISHED });
        s.slab[i as usize].last_seen_ms = now_ms;
        if s.head[list] != i {
            s.unlink(i);
            s.push_front(i, list);
        }
        Some(Pinned { node, idle_ms: idle })
    }

    /// Like [`get`](Self::get) but changes nothing (for the admin's flow query).
    pub fn peek(&self, key: &FlowKey, hash: u64, now_ms: u64) -> Option<Pinned> {
        let s = self.shards[shard_of(hash)].lock();
        let e = &s.slab[*s.map.get(key)? as usize];
        let idle = now_ms.saturating_sub(e.last_seen_ms);
        (idle < self.idle_ms).then_some(Pinned {
            node: e.node,
            idle_ms: idle,
        })
    }

    /// Pins `key` to `node` (`syn_only`: seen only as a bare TCP SYN so far), evicting idle
    /// flows, then the least recently used half-open one, then the least recently used
    /// established one, if the shard is full.
    pub fn insert(&self, key: FlowKey, hash: u64, node: u32, syn_only: bool, now_ms: u64) {
        let list = if syn_only { HALF_OPEN } else { ESTABLISHED };
        let mut s = self.shards[shard_of(hash)].lock();
        if let Some(&i) = s.map.get(&key) {
            let old = s.slab[i as usize].node;
            bump(&mut s.stats.len_by_node, old, -1);
            bump(&mut s.stats.len_by_node, node, 1);
            s.slab[i as usize].node = node;
            s.slab[i as usize].last_seen_ms = now_ms;
            s.unlink(i);
            s.push_front(i, list);
            return;
        }
        s.expire(now_ms, self.idle_ms, 2);
        if s.map.len() >= s.capacity {
            let t = if s.tail[HALF_OPEN] != NIL {
                s.tail[HALF_OPEN]
            } else {
                s.tail[ESTABLISHED]
            };
            let evicted = s.remove_at(t);
            s.stats.evictions += 1;
            bump(&mut s.stats.evictions_by_node, evicted, 1);
        }
        let e = Entry {
            key,
            node,
            last_seen_ms: now_ms,
            list,
            prev: NIL,
            next: NIL,
        };
        let i = match s.free.pop() {
            Some(i) => {
                s.slab[i as usize] = e;
                i
            }
            None => {
                s.slab.push(e);
                (s.slab.len() - 1) as u32
            }
        };
        s.map.insert(key, i);
        s.push_front(i, list);
        s.stats.len += 1;
        bump(&mut s.stats.len_by_node, node, 1);
    }

    /// Forgets `key` (its node went away); counted as a purge.
    pub fn remove(&self, key: &FlowKey, hash: u64) {
        let mut s = self.shards[shard_of(hash)].lock();
        if let Some(&i) = s.map.get(key) {
            s.remove_at(i);
            s.stats.purges += 1;
        }
    }

    /// Drops every flow pinned to a node for which `gone(node)` holds; returns how many.
    pub fn purge(&self, gone: impl Fn(u32) -> bool) -> u64 {
        let mut total = 0;
        for shard in self.shards.iter() {
            let mut s = shard.lock();
            let doomed: Vec<u32> = s
                .map
                .values()
                .copied()
                .filter(|&i| gone(s.slab[i as usize].node))
                .collect();
            for i in doomed {
                s.remove_at(i);
                s.stats.purges += 1;
                total += 1;
            }
        }
        total
    }

    /// Drops idle flows everywhere; returns how many.
    pub fn expire(&self, now_ms: u64) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().expire(now_ms, self.idle_ms, usize::MAX) as u64)
            .sum()
    }

    /// Counters summed over all shards.
    pub fn stats(&self) -> FlowStats {
        let mut t = FlowStats::default();
        for shard in self.shards.iter() {
            t.absorb(&shard.lock().stats);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> FlowKey {
        let mut src = [0u8; 16];
        src[10] = 0xff;
        src[11] = 0xff;
        src[12..].copy_from_slice(&[192, 0, 2, 1]);
        let mut dst = src;
        dst[15] = 100;
        FlowKey {
            src,
            dst,
            sport: (n % 60000) as u16,
            dport: 80,
            proto: 6,
        }
    }

    /// All keys of one shard, so capacity behaviour is visible.
    fn same_shard_keys(count: usize) -> Vec<FlowKey> {
        let want = shard_of(key(0).hash());
        (0..)
            .map(key)
            .filter(|k| shard_of(k.hash()) == want)
            .take(count)
            .collect()
    }

    #[test]
    fn pins_and_touches() {
        let t = FlowTable::new(1000, 10_000);
        let k = key(1);
        assert_eq!(t.get(&k, k.hash(), false, 0), None);
        t.insert(k, k.hash(), 3, false, 0);
        assert_eq!(t.get(&k, k.hash(), false, 500), Some(Pinned { node: 3, idle_ms: 500 }));
        assert_eq!(t.peek(&k, k.hash(), 700), Some(Pinned { node: 3, idle_ms: 200 }));
        assert_eq!(t.stats().len_by_node, vec![0, 0, 0, 1]);
    }

    #[test]
    fn idle_flows_expire() {
        let t = FlowTable::new(1000, 1000);
        let k = key(1);
        t.insert(k, k.hash(), 1, false, 0);
        t.insert(key(2), key(2).hash(), 1, false, 900);
        assert_eq!(t.get(&k, k.hash(), false, 1000), None);
        assert_eq!(t.expire(1899), 0);
        assert_eq!(t.expire(1900), 1);
        let s = t.stats();
        assert_eq!((s.len, s.expirations), (0, 2));
    }

    #[test]
    fn full_shard_evicts_least_recently_used() {
        let t = FlowTable::new(3 * SHARDS, 1_000_000);
        let ks = same_shard_keys(4);
        for (i, k) in ks.iter().take(3).enumerate() {
            t.insert(*k, k.hash(), i as u32, false, i as u64);
        }
        // Touch the oldest so the second becomes least recently used.
        assert!(t.get(&ks[0], ks[0].hash(), false, 10).is_some());
        t.insert(ks[3], ks[3].hash(), 7, false, 11);
        assert!(t.peek(&ks[1], ks[1].hash(), 12).is_none());
        assert!(t.peek(&ks[0], ks[0].hash(), 12).is_some());
        let s = t.stats();
        assert_eq!((s.len, s.evictions), (3, 1));
        assert_eq!(s.evictions_by_node.get(1), Some(&1));
    }

    #[test]
    fn a_syn_flood_evicts_half_open_flows_not_established_ones() {
        let t = FlowTable::new(4 * SHARDS, 1_000_000);
        let ks = same_shard_keys(40);
        // Two established flows (the oldest, so plain LRU would evict them first).
        for k in &ks[..2] {
            t.insert(*k, k.hash(), 1, true, 0);
            assert!(t.get(k, k.hash(), false, 1).is_some()); // the handshake completes
        }
        // A flood of SYNs from new flows.
        for (i, k) in ks[2..].iter().enumerate() {
            t.insert(*k, k.hash(), 2, true, 10 + i as u64);
        }
        for k in &ks[..2] {
            assert_eq!(t.peek(k, k.hash(), 100).map(|p| p.node), Some(1));
        }
        let s = t.stats();
        assert_eq!((s.len, s.evictions), (4, 36));
        // With no half-open flow left, the least recently used established one goes.
        let u = FlowTable::new(2 * SHARDS, 1_000_000);
        for (i, k) in ks[..3].iter().enumerate() {
            u.insert(*k, k.hash(), 0, false, i as u64);
        }
        assert!(u.peek(&ks[0], ks[0].hash(), 5).is_none());
        assert!(u.peek(&ks[2], ks[2].hash(), 5).is_some());
    }

    #[test]
    fn purge_drops_only_the_dead_nodes_flows() {
        let t = FlowTable::new(10_000, 1_000_000);
        for n in 0..300 {
            let k = key(n);
            t.insert(k, k.hash(), n % 3, false, 0);
        }
        assert_eq!(t.purge(|node| node == 1), 100);
        let s = t.stats();
        assert_eq!((s.len, s.purges), (200, 100));
        assert_eq!(s.len_by_node, vec![100, 0, 100]);
        for n in 0..300 {
            let k = key(n);
            assert_eq!(t.peek(&k, k.hash(), 1).is_some(), n % 3 != 1);
        }
    }

    #[test]
    fn slab_slots_are_reused() {
        let t = FlowTable::new(SHARDS, 1_000_000);
        let ks = same_shard_keys(50);
        for (i, k) in ks.iter().enumerate() {
            t.insert(*k, k.hash(), 0, false, i as u64);
        }
        let s = t.shards[shard_of(ks[0].hash())].lock();
        assert_eq!((s.map.len(), s.slab.len()), (1, 1));
    }
}
