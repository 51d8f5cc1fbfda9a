//! What happened to a request, as one enum feeding `X-Cache`, `Cache-Status`, logs and metrics.

/// The cache outcome of one client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served fresh from memory.
    Hit,
    /// Looked up, not found (or expired past grace), fetched from the origin.
    Miss,
    /// Sent to the origin without a lookup (policy, hit-for-pass, lock timeout).
    Pass,
    /// Served from memory past its freshness, within grace.
    Stale,
    /// Answered by the proxy itself (errors, refusals).
    Synth,
}

impl Outcome {
    /// Every outcome, in `as usize` order.
    pub const ALL: [Outcome; 5] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Pass,
        Outcome::Stale,
        Outcome::Synth,
    ];

    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Pass => "pass",
            Outcome::Stale => "stale",
            Outcome::Synth => "synth",
        }
    }

    /// The `X-Cache` value.
    pub fn x_cache(self) -> http::HeaderValue {
        http::HeaderValue::from_static(match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Pass | Outcome::Synth => "PASS",
            Outcome::Stale => "STALE",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
    }
}
