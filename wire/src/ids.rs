//! Numbers that tell things apart across processes, restarts and nodes: random ids and the
//! wall clock in milliseconds, as every Strata program stamps and names what it sends.

use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh random number, never zero (zero means "none" wherever an id is kept).
///
/// From the standard hasher's random keys, the time and the process id: no extra crate,
/// and two processes started in the same nanosecond still differ.
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish() | 1
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_nonzero_and_differ() {
        let ids: std::collections::HashSet<u64> = (0..64).map(|_| random_u64()).collect();
        assert_eq!(ids.len(), 64);
        assert!(!ids.contains(&0));
    }

    #[test]
    fn the_clock_is_past_2020() {
        assert!(unix_ms() > 1_577_836_800_000);
    }
}
