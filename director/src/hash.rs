//! The one fixed hash every director uses, so tables and flow placement agree across hosts,
//! builds and Rust releases (std's `DefaultHasher` promises none of that).
//!
//! `hash64(seed, data)` = FNV-1a 64 (offset basis `0xcbf29ce484222325`, prime
//! `0x100000001b3`) over the 8 little-endian bytes of `seed` followed by `data`, then the
//! MurmurHash3 `fmix64` finaliser to spread FNV's weak low bits. It is not keyed against
//! attackers: a client can at most choose which node its own flows land on.

/// Seed for a backend's Maglev permutation offset.
pub const SEED_OFFSET: u64 = 0x5354_5241_5441_0001;
/// Seed for a backend's Maglev permutation skip.
pub const SEED_SKIP: u64 = 0x5354_5241_5441_0002;
/// Seed for a flow's 5-tuple (or 3-tuple, for fragments).
pub const SEED_FLOW: u64 = 0x5354_5241_5441_0003;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes `data` under `seed` (see the module doc for the exact definition).
pub fn hash64(seed: u64, data: &[u8]) -> u64 {
    fmix64(fnv1a(fnv1a(FNV_OFFSET, &seed.to_le_bytes()), data))
}

/// FNV-1a 64 continued from state `h`.
fn fnv1a(mut h: u64, data: &[u8]) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// MurmurHash3's 64-bit finaliser.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn building_blocks_match_their_published_vectors() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fmix64(0), 0);
    }

    #[test]
    fn fixed_values_never_change() {
        // Golden value: changing it reshuffles every flow on every director.
        assert_eq!(
            hash64(SEED_FLOW, b"192.0.2.1"),
            GOLDEN_FLOW,
            "{:#x}",
            hash64(SEED_FLOW, b"192.0.2.1")
        );
    }

    const GOLDEN_FLOW: u64 = 0x8de5_b110_1df7_38e9;

    #[test]
    fn seeds_separate() {
        assert_ne!(hash64(SEED_OFFSET, b"x"), hash64(SEED_SKIP, b"x"));
    }
}
