//! The last hour's comments by address and by e-mail (the latest `comment_date_gmt` of each),
//! so that WordPress's flood check — a query that scans the last hour's comments, as
//! `comment_author_IP` has no index — needs MySQL only when a comment may be a flood.
//!
//! The index holds every row MySQL could return to the flood query and possibly more (rows
//! deleted since, rows of a rolled-back batch). So "no entry recent enough" proves the query
//! would find nothing recent enough either, and the comment is not a flood; anything else
//! ([`Lookup::Ask`]) is decided by the query itself, so results never change. Rows reach the
//! index from one query at start ([`FloodIndex::seed`]), from the syncer's own inserts, and,
//! on each batch, from the rows with a `comment_ID` above the highest one seen (comments PHP
//! wrote for logged-in users) plus the ids skipped over that were not yet visible
//! ([`FloodIndex::refresh_sql`]). Values the index cannot compare the way the column's
//! collation does (anything but printable ASCII without spaces) send the decision to MySQL.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Rows older than an hour plus this margin are dropped; records accepted that long ago
/// (a queue backlog) are judged by the query.
pub const MARGIN_SECS: i64 = 600;
/// Most keys per map; beyond, the index is dropped and the query used for a while.
pub const MAX_KEYS: usize = 500_000;
/// How long an id skipped over is looked for (an insert not yet committed by another writer).
pub const GAP_TTL: Duration = Duration::from_secs(30);
/// Most skipped ids looked for at once (the oldest are forgotten first).
pub const MAX_GAPS: usize = 4096;
/// WordPress's flood window.
const HOUR: i64 = 3600;

/// How the column's collation compares printable ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Case-insensitive (`*_ci`).
    FoldCase,
    /// Byte for byte (`*_bin`, `*_cs`).
    Exact,
}

impl Compare {
    /// The comparison for a collation name; `None` for one the index does not know (the
    /// query then decides every time).
    pub fn for_collation(name: &str) -> Option<Compare> {
        if name.ends_with("_ci") {
            Some(Compare::FoldCase)
        } else if name.ends_with("_bin") || name.ends_with("_cs") {
            Some(Compare::Exact)
        } else {
            None
        }
    }
}

/// The index's answer for one comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// No comment from this address or e-mail since `since` could be recent enough: not a
    /// flood, without asking MySQL.
    NotFlood,
    /// Run WordPress's query.
    Ask,
}

/// The latest comment date per address and per e-mail.
#[derive(Debug)]
pub struct FloodIndex {
    /// How keys compare.
    compare: Compare,
    /// Address → latest `comment_date_gmt` (Unix seconds).
    by_ip: HashMap<Box<str>, i64>,
    /// E-mail → latest `comment_date_gmt`.
    by_email: HashMap<Box<str>, i64>,
    /// Rows dated before this are not in the index.
    horizon: i64,
    /// Latest date of a row whose address or e-mail the index cannot compare.
    unclean_latest: Option<i64>,
    /// Highest `comment_ID` seen.
    max_id: u64,
    /// Ids below `max_id` not seen yet, with when they were skipped over.
    gaps: BTreeMap<u64, Instant>,
}

/// A value the index can compare as the collation does: printable ASCII, no spaces (padding,
/// ignorable and accented characters are the collation's business).
fn key(compare: Compare, s: &str) -> Option<Box<str>> {
    if !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return None;
    }
    Some(match compare {
        Compare::FoldCase => s.to_ascii_lowercase().into(),
        Compare::Exact => s.into(),
    })
}

impl FloodIndex {
    /// An empty index holding rows dated from `horizon` on, of which the highest id is
    /// `max_id`.
    pub fn new(compare: Compare, horizon: i64, max_id: u64) -> FloodIndex {
        FloodIndex {
            compare,
            by_ip: HashMap::new(),
            by_email: HashMap::new(),
            horizon,
            unclean_latest: None,
            max_id,
            gaps: BTreeMap::new(),
        }
    }

    /// The query that seeds the index at `now` (rows from `now` − 1 h − margin on); its
    /// parameter is that date as `Y-m-d H:i:s` UTC, and the highest id comes from
    /// `SELECT MAX(comment_ID)` read in the same transaction.
    pub fn seed_horizon(now: i64) -> i64 {
        now - HOUR - MARGIN_SECS
    }

    /// Records a row; `date` is `None` for a date MySQL would not compare as recent (zero).
    /// Returns false when the index grew past [`MAX_KEYS`] and must be dropped.
    pub fn observe(&mut self, id: u64, ip: &str, email: &str, date: Option<i64>, now: Instant) -> bool {
        self.see_id(id, now);
        let Some(date) = date else {
            return true;
        };
        if date < self.horizon {
            return true;
        }
        match (key(self.compare, ip), key(self.compare, email)) {
            (Some(ip), Some(email)) => {
                let slot = self.by_ip.entry(ip).or_insert(date);
                *slot = (*slot).max(date);
                let slot = self.by_email.entry(email).or_insert(date);
                *slot = (*slot).max(date);
            }
            _ => self.unclean_latest = Some(self.unclean_latest.map_or(date, |d| d.max(date))),
        }
        self.by_ip.len() <= MAX_KEYS && self.by_email.len() <= MAX_KEYS
    }

    fn see_id(&mut self, id: u64, now: Instant) {
        if id > self.max_id {
            // Ids skipped over may belong to inserts another writer has not committed yet.
            let from = (self.max_id + 1).max(id.saturating_sub(MAX_GAPS as u64));
            for gap in from..id {
                self.gaps.insert(gap, now);
            }
            self.max_id = id;
            while self.gaps.len() > MAX_GAPS {
                self.gaps.pop_first();
            }
        } else {
            self.gaps.remove(&id);
        }
    }

    /// Whether a comment dated `new` from `ip` / `email` is certainly not a flood under an
    /// interval of `interval` seconds, WordPress looking at rows dated from `since` on.
    pub fn lookup(&self, ip: &str, email: &str, since: i64, new: i64, interval: i64) -> Lookup {
        if since < self.horizon || self.unclean_latest.is_some_and(|d| d >= since) {
            return Lookup::Ask;
        }
        let (Some(ip), Some(email)) = (key(self.compare, ip), key(self.compare, email)) else {
            return Lookup::Ask;
        };
        let latest = self.by_ip.get(&ip).copied().max(self.by_email.get(&email).copied());
        match latest {
            Some(last) if last >= since && new - last < interval => Lookup::Ask,
            _ => Lookup::NotFlood,
        }
    }

    /// Drops rows dated before `now` − 1 h − margin and ids skipped over more than
    /// [`GAP_TTL`] ago.
    pub fn prune(&mut self, now: i64, now_instant: Instant) {
        let cutoff = now - HOUR - MARGIN_SECS;
        if cutoff > self.horizon {
            self.horizon = cutoff;
            self.by_ip.retain(|_, d| *d >= cutoff);
            self.by_email.retain(|_, d| *d >= cutoff);
            if self.unclean_latest.is_some_and(|d| d < cutoff) {
                self.unclean_latest = None;
            }
        }
        self.gaps
            .retain(|_, at| now_instant.saturating_duration_since(*at) < GAP_TTL);
    }

    /// The `WHERE` clause (and its parameters) of the rows to read before a batch: above the
    /// highest id seen, or among the ids skipped over, as ranges of consecutive ids (rows
    /// deleted before their ids were seen leave long runs of them).
    pub fn refresh_sql(&self) -> (String, Vec<u64>) {
        let mut sql = "comment_ID > ?".to_string();
        let mut params = vec![self.max_id];
        let mut run: Option<(u64, u64)> = None;
        let close = |(from, to): (u64, u64), sql: &mut String, params: &mut Vec<u64>| {
            sql.push_str(" OR comment_ID BETWEEN ? AND ?");
            params.extend([from, to]);
        };
        for id in self.gaps.keys().copied() {
            run = match run {
                Some((from, to)) if id == to + 1 => Some((from, id)),
                Some(done) => {
                    close(done, &mut sql, &mut params);
                    Some((id, id))
                }
                None => Some((id, id)),
            };
        }
        if let Some(done) = run {
            close(done, &mut sql, &mut params);
        }
        (sql, params)
    }

    /// Keys held (addresses + e-mails), for the metrics.
    pub fn len(&self) -> usize {
        self.by_ip.len() + self.by_email.len()
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn index() -> FloodIndex {
        FloodIndex::new(Compare::FoldCase, FloodIndex::seed_horizon(NOW), 100)
    }

    #[test]
    fn a_recent_comment_from_the_address_or_email_means_ask() {
        let mut i = index();
        let t = Instant::now();
        assert!(i.observe(101, "192.0.2.1", "a@example.test", Some(NOW - 5), t));
        let since = NOW - HOUR;
        assert_eq!(i.lookup("192.0.2.1", "b@example.test", since, NOW, 15), Lookup::Ask);
        assert_eq!(i.lookup("192.0.2.2", "A@Example.TEST", since, NOW, 15), Lookup::Ask);
        assert_eq!(
            i.lookup("192.0.2.2", "b@example.test", since, NOW, 15),
            Lookup::NotFlood
        );
        // Older than the interval, or before the window: not a flood.
        assert_eq!(
            i.lookup("192.0.2.1", "a@example.test", since, NOW + 10, 15),
            Lookup::NotFlood
        );
        assert_eq!(
            i.lookup("192.0.2.1", "a@example.test", NOW - 4, NOW, 15),
            Lookup::NotFlood
        );
        // A comment dated in the future is a flood for WordPress: ask.
        assert_eq!(
            i.lookup("192.0.2.1", "x@example.test", since, NOW - 10, 15),
            Lookup::Ask
        );
    }

    #[test]
    fn the_latest_date_per_key_wins() {
        let mut i = index();
        let t = Instant::now();
        i.observe(101, "192.0.2.1", "a@example.test", Some(NOW - 5), t);
        i.observe(102, "192.0.2.1", "a@example.test", Some(NOW - 500), t);
        assert_eq!(i.lookup("192.0.2.1", "", NOW - HOUR, NOW, 15), Lookup::Ask);
    }

    #[test]
    fn exact_collations_keep_case() {
        let mut i = FloodIndex::new(Compare::Exact, FloodIndex::seed_horizon(NOW), 0);
        i.observe(1, "192.0.2.1", "a@example.test", Some(NOW), Instant::now());
        assert_eq!(
            i.lookup("192.0.2.9", "A@example.test", NOW - HOUR, NOW, 15),
            Lookup::NotFlood
        );
        assert_eq!(
            Compare::for_collation("utf8mb4_unicode_520_ci"),
            Some(Compare::FoldCase)
        );
        assert_eq!(Compare::for_collation("utf8mb4_bin"), Some(Compare::Exact));
        assert_eq!(Compare::for_collation("weird"), None);
    }

    #[test]
    fn values_the_collation_may_compare_differently_go_to_mysql() {
        let mut i = index();
        let t = Instant::now();
        // Asked with a value the index cannot compare.
        assert_eq!(
            i.lookup("192.0.2.1", "zoë@example.test", NOW - HOUR, NOW, 15),
            Lookup::Ask
        );
        assert_eq!(
            i.lookup("192.0.2.1", "a@example.test ", NOW - HOUR, NOW, 15),
            Lookup::Ask
        );
        // A stored row the index cannot compare: every look-up whose window holds it asks.
        i.observe(101, "192.0.2.1", "a@example.test  ", Some(NOW - 100), t);
        assert_eq!(
            i.lookup("192.0.2.7", "q@example.test", NOW - HOUR, NOW, 15),
            Lookup::Ask
        );
        assert_eq!(
            i.lookup("192.0.2.7", "q@example.test", NOW - 50, NOW, 15),
            Lookup::NotFlood
        );
        // The empty e-mail is a key like any other (it matches every e-mail-less comment).
        i.observe(102, "192.0.2.3", "", Some(NOW - 1), t);
        assert_eq!(i.lookup("192.0.2.8", "", NOW - 50, NOW, 15), Lookup::Ask);
    }

    #[test]
    fn before_the_horizon_the_query_decides() {
        let i = index();
        assert_eq!(
            i.lookup("192.0.2.1", "a@example.test", NOW - HOUR - MARGIN_SECS - 1, NOW, 15),
            Lookup::Ask
        );
    }

    #[test]
    fn pruning_drops_old_rows_and_old_gaps() {
        let mut i = index();
        let t = Instant::now();
        i.observe(105, "192.0.2.1", "a@example.test", Some(NOW - 100), t);
        assert_eq!(
            i.refresh_sql(),
            (
                "comment_ID > ? OR comment_ID BETWEEN ? AND ?".into(),
                vec![105, 101, 104]
            )
        );
        i.observe(102, "192.0.2.2", "b@example.test", Some(NOW - 90), t);
        assert_eq!(
            i.refresh_sql(),
            (
                "comment_ID > ? OR comment_ID BETWEEN ? AND ? OR comment_ID BETWEEN ? AND ?".into(),
                vec![105, 101, 101, 103, 104]
            )
        );
        i.prune(NOW + HOUR + MARGIN_SECS - 95, t + GAP_TTL);
        assert_eq!(i.refresh_sql().1, vec![105]);
        assert_eq!(i.len(), 2);
        assert_eq!(
            i.lookup("192.0.2.2", "b@example.test", NOW + 10, NOW + 10, 15),
            Lookup::NotFlood
        );
        i.prune(NOW + HOUR + MARGIN_SECS, t + GAP_TTL);
        assert!(i.is_empty());
    }

    #[test]
    fn gaps_are_bounded() {
        let mut i = index();
        i.observe(
            100 + 10 * MAX_GAPS as u64,
            "192.0.2.1",
            "a@example.test",
            Some(NOW),
            Instant::now(),
        );
        let (sql, params) = i.refresh_sql();
        assert_eq!(sql, "comment_ID > ? OR comment_ID BETWEEN ? AND ?");
        assert_eq!(params[2] - params[1] + 1, MAX_GAPS as u64);
    }
}
