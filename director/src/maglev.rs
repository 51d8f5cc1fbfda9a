//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights.
//!
//! The table has [`TABLE_SIZE`] = 65537 slots (prime, ≥ 100 × the nodes we expect, so
//! shares stay within about 1%). Each backend is identified by its 16-byte address
//! (IPv4 as IPv4-mapped IPv6); its permutation is `offset = hash64(SEED_OFFSET, key) % M`,
//! `skip = hash64(SEED_SKIP, key) % (M - 1) + 1` (see [`crate::hash`]). Backends are taken
//! in ascending key order, whatever order the caller lists them in, and each takes
//! `weight / gcd(weights)` slots per round. So every director builds a byte-identical table
//! for the same set of backends and weights. Removing one of N backends moves about 1/N of
//! the slots; the rest keep their backend.

use crate::hash::{hash64, SEED_OFFSET, SEED_SKIP};

/// Number of slots (prime).
pub const TABLE_SIZE: usize = 65537;

/// Marks an empty slot (only when no backend has weight).
const EMPTY: u16 = u16::MAX;

/// One backend as Maglev sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Stable identity: the node's address, 16 bytes.
    pub key: [u8; 16],
    /// Relative share of slots; 0 takes none.
    pub weight: u32,
}

/// A built lookup table; slots hold indexes into the member list it was built from.
#[derive(Clone, PartialEq, Eq)]
pub struct Table {
    slots: Vec<u16>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Table({} slots)", self.slots.len())
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Table {
    /// Builds the table for `members` (at most 65535 of them; more are ignored).
    /// With no member of positive weight every lookup answers `None`.
    pub fn build(members: &[Member]) -> Table {
        let m = TABLE_SIZE as u64;
        let members = &members[..members.len().min(usize::from(EMPTY))];
        let mut order: Vec<usize> = (0..members.len()).filter(|&i| members[i].weight > 0).collect();
        order.sort_by_key(|&i| members[i].key);
        let mut slots = vec![EMPTY; TABLE_SIZE];
        if order.is_empty() {
            return Table { slots };
        }
        let g = order.iter().fold(0, |g, &i| gcd(g, members[i].weight));
        // (member index, offset, skip, next permutation step, turns per round)
        let mut perm: Vec<(usize, u64, u64, u64, u32)> = order
            .iter()
            .map(|&i| {
                let k = &members[i].key;
                let offset = hash64(SEED_OFFSET, k) % m;
                let skip = hash64(SEED_SKIP, k) % (m - 1) + 1;
                (i, offset, skip, 0, members[i].weight / g)
            })
            .collect();
        let mut filled = 0;
        'rounds: loop {
            for p in perm.iter_mut() {
                for _ in 0..p.4 {
                    loop {
                        let c = ((p.1 + p.3 * p.2) % m) as usize;
                        p.3 += 1;
                        if slots[c] == EMPTY {
                            // Indexes fit: members were capped at EMPTY entries above.
                            slots[c] = p.0 as u16;
                            filled += 1;
                            break;
                        }
                    }
                    if filled == TABLE_SIZE {
                        break 'rounds;
                    }
                }
            }
        }
        Table { slots }
    }

    /// An empty table (no backend).
    pub fn empty() -> Table {
        Table {
            slots: vec![EMPTY; TABLE_SIZE],
        }
    }

    /// Slot for a flow hash.
    pub fn slot(hash: u64) -> usize {
        (hash % TABLE_SIZE as u64) as usize
    }

    /// Member index owning `slot`, if any.
    pub fn member_at(&self, slot: usize) -> Option<usize> {
        match self.slots.get(slot) {
            Some(&EMPTY) | None => None,
            Some(&i) => Some(usize::from(i)),
        }
    }

    /// The table as bytes (little-endian u16 per slot), for golden comparisons.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.slots.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    /// How many slots each of `n` members owns.
    pub fn shares(&self, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &s in &self.slots {
            if let Some(x) = c.get_mut(usize::from(s)) {
                *x += 1;
            }
        }
        c
    }
}

/// The 16-byte Maglev key of an address (IPv4 is IPv4-mapped).
pub fn key_of(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{hash64, SEED_FLOW};
    use std::net::{IpAddr, Ipv4Addr};

    fn members(n: u8, weight: u32) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                key: key_of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + i))),
                weight,
            })
            .collect()
    }

    /// Golden: the table for 192.0.2.10..=12, weight 1. Any change here changes where every
    /// flow goes on every director, so it must be deliberate. The values were checked
    /// against a separate implementation written from the module doc alone.
    #[test]
    fn golden_table() {
        let t = Table::build(&members(3, 1));
        let digest = hash64(0, &t.to_bytes());
        let head: Vec<usize> = (0..16).filter_map(|s| t.member_at(s)).collect();
        assert_eq!((digest, head), (GOLDEN_DIGEST, GOLDEN_HEAD.to_vec()), "{digest:#x}");
    }

    const GOLDEN_DIGEST: u64 = 0x2a75_56c3_bb8e_2ce6;
    const GOLDEN_HEAD: [usize; 16] = [0, 1, 1, 2, 0, 0, 2, 2, 1, 1, 0, 1, 1, 2, 1, 0];

    #[test]
    fn identical_whatever_the_input_order() {
        let a = members(5, 1);
        let mut b = a.clone();
        b.reverse();
        let (ta, tb) = (Table::build(&a), Table::build(&b));
        for s in 0..TABLE_SIZE {
            let (x, y) = (ta.member_at(s).map(|i| a[i].key), tb.member_at(s).map(|i| b[i].key));
            assert_eq!(x, y);
        }
    }

    #[test]
    fn proportional_weights_give_the_same_table() {
        assert_eq!(Table::build(&members(4, 1)), Table::build(&members(4, 7)));
    }

    #[test]
    fn balanced_within_one_percent() {
        for n in [2u8, 3, 8, 32] {
            let t = Table::build(&members(n, 1));
            let shares = t.shares(usize::from(n));
            let ideal = TABLE_SIZE as f64 / f64::from(n);
            for s in shares {
                assert!((s as f64 - ideal).abs() / ideal < 0.01, "n={n} share {s} ideal {ideal}");
            }
        }
    }

    #[test]
    fn weights_set_shares() {
        let mut m = members(2, 1);
        m[1].weight = 3;
        let shares = Table::build(&m).shares(2);
        let ratio = shares[1] as f64 / shares[0] as f64;
        assert!((ratio - 3.0).abs() < 0.05, "{shares:?}");
    }

    #[test]
    fn zero_weight_takes_nothing_and_empty_answers_none() {
        let mut m = members(3, 1);
        m[2].weight = 0;
        assert_eq!(Table::build(&m).shares(3)[2], 0);
        assert_eq!(Table::build(&[]).member_at(5), None);
        assert_eq!(Table::build(&members(2, 0)).member_at(5), None);
    }

    /// Removing 1 of N moves about 1/N of flows (slots), and only flows of the removed node
    /// plus a small extra churn.
    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        for n in [3u8, 5, 8, 16] {
            let all = members(n, 1);
            let before = Table::build(&all);
            let mut fewer = all.clone();
            fewer.remove(1);
            let after = Table::build(&fewer);
            let mut moved = 0;
            for s in 0..TABLE_SIZE {
                let b = before.member_at(s).map(|i| all[i].key);
                let a = after.member_at(s).map(|i| fewer[i].key);
                if a != b {
                    moved += 1;
                }
            }
            let share = moved as f64 / TABLE_SIZE as f64;
            let ideal = 1.0 / f64::from(n);
            assert!(
                share >= ideal * 0.99 && share < ideal + 0.03,
                "n={n}: moved {share:.4}, ideal {ideal:.4}"
            );
        }
    }

    /// The same, measured on random flows through the flow hash rather than on slots.
    #[test]
    fn statistical_flow_movement() {
        let n = 4u8;
        let all = members(n, 1);
        let mut fewer = all.clone();
        fewer.remove(2);
        let (before, after) = (Table::build(&all), Table::build(&fewer));
        let flows = 200_000u32;
        let mut moved = 0;
        let mut per_node = vec![0u32; usize::from(n)];
        for f in 0..flows {
            let h = hash64(SEED_FLOW, &f.to_le_bytes());
            let b = before.member_at(Table::slot(h)).map(|i| all[i].key);
            let a = after.member_at(Table::slot(h)).map(|i| fewer[i].key);
            if let Some(i) = before.member_at(Table::slot(h)) {
                per_node[i] += 1;
            }
            if a != b {
                moved += 1;
            }
        }
        let share = f64::from(moved) / f64::from(flows);
        assert!((share - 0.25).abs() < 0.02, "moved {share}");
        for c in per_node {
            let s = f64::from(c) / f64::from(flows);
            assert!((s - 0.25).abs() < 0.01, "share {s}");
        }
    }
}
