//! The memcached side of the queue: where the queue stands against the syncer's cursor
//! (including a memcached restart, which loses whatever was queued), fetching the next
//! records in order, and the pure decisions about both. Only records sealed with the
//! cluster secret for their very position and epoch are applied ([`Record::open`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use strata_wire::comment::{self as wire, Record, RecordError};
use strata_wire::memcache::{self, Conn};

/// The syncer's durable position: the queue incarnation and the last sequence number applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// `{prefix}epoch` of the queue the cursor belongs to (0: none seen yet).
    pub epoch: u64,
    /// The last sequence number applied (or skipped).
    pub seq: u64,
}

/// What the syncer must do about the queue's epoch and counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconcile {
    /// Nothing: the queue is the one the cursor belongs to.
    Same,
    /// The cursor has no epoch yet: take the queue's.
    Adopt {
        /// The queue's epoch.
        epoch: u64,
    },
    /// The cursor has no epoch and the queue none either: create one.
    Create,
    /// memcached lost the epoch key alone (the counter is still at or past the cursor): put
    /// the cursor's epoch back.
    RestoreEpoch,
    /// memcached restarted: the queue is new. Queued comments after the cursor are lost.
    Reset {
        /// The new queue's epoch, if it has one already (else the syncer creates one).
        epoch: Option<u64>,
        /// How many queued comments were lost (last counter seen − cursor).
        lost: u64,
    },
}

/// Compares the queue's epoch and counter with the cursor. `last_counter` is the highest
/// counter this process saw for the cursor's epoch (to count what a restart lost).
pub fn reconcile(cursor: Cursor, epoch: Option<u64>, counter: Option<u64>, last_counter: u64) -> Reconcile {
    let lost = last_counter.saturating_sub(cursor.seq);
    match (cursor.epoch, epoch) {
        (0, Some(e)) => Reconcile::Adopt { epoch: e },
        (0, None) => Reconcile::Create,
        (c, Some(e)) if c != e => Reconcile::Reset { epoch: Some(e), lost },
        (_, Some(_)) if counter.unwrap_or(0) < cursor.seq => Reconcile::Reset { epoch: None, lost },
        (_, Some(_)) => Reconcile::Same,
        (_, None) if counter.is_some_and(|n| n >= cursor.seq) && cursor.seq > 0 => Reconcile::RestoreEpoch,
        (_, None) => Reconcile::Reset { epoch: None, lost },
    }
}

/// One position of the queue, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// A record to apply.
    Record(Box<Record>),
    /// The number was reserved but its record never arrived within `missing_wait`
    /// (`missing`), or the proxy that reserved it found the queue full and marked it
    /// ([`wire::QUEUE_FULL`], `queue-full`); or the value there is no record sealed for
    /// this position ([`RecordError::as_str`]: `unsigned`, `forged`, `unreadable`,
    /// `misplaced`): skipped, logged, with the reason.
    Skipped(&'static str),
}

/// Why the queue cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// memcached failed.
    #[error(transparent)]
    Memcached(#[from] memcache::Error),
}

/// A record of a newer format than this syncer understands blocks the queue (it is never
/// skipped: a newer syncer will apply it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    /// Its sequence number.
    pub seq: u64,
    /// Its format version.
    pub version: u32,
}

/// What [`Queue::head`] read.
#[derive(Debug, Default)]
pub struct Head {
    /// The epoch key.
    pub epoch: Option<u64>,
    /// The counter.
    pub counter: Option<u64>,
    /// The records asked for ahead, as stored (`None`: absent).
    pub early: Vec<Option<Vec<u8>>>,
}

/// The memcached connection and what the syncer remembers about missing records.
pub struct Queue {
    addr: String,
    prefix: String,
    timeout: Duration,
    /// The cluster secret records are sealed with.
    secret: Vec<u8>,
    conn: Option<Conn>,
    /// When each reserved-but-absent sequence number was first seen missing.
    missing_since: HashMap<u64, Instant>,
}

/// What the syncer writes (with `add`) at a position it gives up on, so that a record
/// written later with `add` is refused instead of silently never applied.
pub const TOMBSTONE: &[u8] = b"strata:skipped";

/// Reads a decimal memcached value.
fn number(v: &Option<Vec<u8>>) -> Option<u64> {
    v.as_deref()
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.trim().parse().ok())
}

impl Queue {
    /// For the memcached at `addr`, keys under `prefix`, records sealed with `secret`.
    pub fn new(addr: &str, prefix: &str, timeout: Duration, secret: &[u8]) -> Queue {
        Queue {
            addr: addr.to_string(),
            prefix: prefix.to_string(),
            timeout,
            secret: secret.to_vec(),
            conn: None,
            missing_since: HashMap::new(),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Runs `f` on the connection, dialling when needed; a connection error drops it.
    pub async fn with<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut Conn) -> Result<T, memcache::Error>,
    ) -> Result<T, memcache::Error> {
        if self.conn.is_none() {
            self.conn = Some(Conn::connect(&self.addr, self.timeout).await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(memcache::Error::Timeout(self.addr.clone()));
        };
        let r = f(conn).await;
        if let Err(e) = &r {
            if e.is_connection() {
                self.conn = None;
            }
        }
        r
    }

    /// The queue's epoch and counter, and in the same round trip the records at
    /// `from..from + ahead` as they are (see [`Queue::fetch`]): the records a tick will
    /// most likely read next.
    pub async fn head(&mut self, from: u64, ahead: u64) -> Result<Head, QueueError> {
        let mut keys = vec![wire::epoch_key(&self.prefix), wire::seq_key(&self.prefix)];
        keys.extend((from..from.saturating_add(ahead)).map(|s| wire::record_key(&self.prefix, s)));
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut got = self.with(async |c| c.get_many(&refs).await).await?;
        let early = got.split_off(2.min(got.len()));
        Ok(Head {
            epoch: got.first().and_then(number),
            counter: got.get(1).and_then(number),
            early,
        })
    }

    /// Creates the epoch if absent (`add`) and returns the one memcached holds.
    pub async fn ensure_epoch(&mut self, wanted: u64) -> Result<Option<u64>, QueueError> {
        let key = wire::epoch_key(&self.prefix);
        let got = self
            .with(async |c| {
                c.add(&key, wanted.to_string().as_bytes(), 0).await?;
                c.get(&key).await
            })
            .await?;
        Ok(number(&got))
    }

    /// Reads records `from..=to` of queue `epoch` in order, stopping at the first one that
    /// must be waited for (reserved but not written yet, within `missing_wait`) or that is
    /// of a newer format. `early` holds the values of the first positions as
    /// [`Queue::head`] read them; only the rest are read now. A value that is not a record
    /// sealed for its position is skipped (and logged here with what is wrong with it).
    pub async fn fetch(
        &mut self,
        epoch: u64,
        from: u64,
        to: u64,
        missing_wait: Duration,
        mut early: Vec<Option<Vec<u8>>>,
    ) -> Result<(Vec<(u64, Slot)>, Option<Blocked>), QueueError> {
        if to < from {
            return Ok((Vec::new(), None));
        }
        let wanted = usize::try_from(to - from + 1).unwrap_or(usize::MAX);
        early.truncate(wanted);
        let rest = from.saturating_add(early.len() as u64);
        let mut values = early;
        if rest <= to {
            let keys: Vec<String> = (rest..=to).map(|s| wire::record_key(&self.prefix, s)).collect();
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            values.extend(self.with(async |c| c.get_many(&refs).await).await?);
        }
        let mut out = Vec::new();
        let now = Instant::now();
        for (seq, value) in (from..=to).zip(values) {
            match value {
                None => {
                    let since = *self.missing_since.entry(seq).or_insert(now);
                    if now.duration_since(since) < missing_wait {
                        break;
                    }
                    // Claim the position; if the record arrived meanwhile, read it next tick.
                    let key = wire::record_key(&self.prefix, seq);
                    let claimed = match self
                        .with(async |c| c.add(&key, TOMBSTONE, wire::VERDICT_TTL).await)
                        .await
                    {
                        Ok(claimed) => claimed,
                        // The queue must not stall until memcached has room again: its
                        // proxy gave up on this record long ago (it too found no room, most
                        // likely, and passed the comment to PHP).
                        Err(e) if e.is_no_room() => {
                            tracing::error!(seq, error = %e, "no room in memcached for the tombstone of a missing record; skipped without one");
                            true
                        }
                        Err(e) => return Err(e.into()),
                    };
                    if !claimed {
                        break;
                    }
                    self.missing_since.remove(&seq);
                    out.push((seq, Slot::Skipped("missing")));
                }
                Some(bytes) if bytes == TOMBSTONE => {
                    self.missing_since.remove(&seq);
                    out.push((seq, Slot::Skipped("missing")));
                }
                Some(bytes) if bytes == wire::QUEUE_FULL => {
                    self.missing_since.remove(&seq);
                    out.push((seq, Slot::Skipped("queue-full")));
                }
                Some(bytes) => {
                    self.missing_since.remove(&seq);
                    match Record::open(&self.secret, &self.prefix, epoch, seq, &bytes) {
                        Ok(r) => out.push((seq, Slot::Record(Box::new(r)))),
                        Err(RecordError::Newer(version)) => return Ok((out, Some(Blocked { seq, version }))),
                        Err(e) => {
                            tracing::warn!(seq, epoch, error = %e, bytes = bytes.len(), "untrusted value at a queue position");
                            out.push((seq, Slot::Skipped(e.as_str())));
                        }
                    }
                }
            }
        }
        // Forget waits for numbers that are behind us (a reset, another syncer).
        self.missing_since.retain(|s, _| *s >= from);
        Ok((out, None))
    }

    /// Publishes a JSON value under `key` for `ttl` seconds (0: no expiry).
    pub async fn set(&mut self, key: &str, value: &[u8], ttl: u32) -> Result<(), QueueError> {
        Ok(self.with(async |c| c.set(key, value, ttl).await).await?)
    }

    /// Publishes several values, (key, value, ttl in seconds), and deletes the applied
    /// records `seqs`, in one round trip. Deleting is best effort: a record left behind only
    /// costs memory until eviction.
    pub async fn publish(&mut self, items: &[(String, Vec<u8>, u32)], seqs: &[u64]) -> Result<(), QueueError> {
        let refs: Vec<(&str, &[u8], u32)> = items.iter().map(|(k, v, t)| (k.as_str(), v.as_slice(), *t)).collect();
        let keys: Vec<String> = seqs.iter().map(|s| wire::record_key(&self.prefix, *s)).collect();
        let deletes: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.with(async |c| c.set_and_delete(&refs, &deletes).await).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Cursor = Cursor { epoch: 7, seq: 10 };

    #[test]
    fn same_queue_is_left_alone() {
        assert_eq!(reconcile(C, Some(7), Some(12), 12), Reconcile::Same);
        assert_eq!(reconcile(C, Some(7), Some(10), 10), Reconcile::Same);
    }

    #[test]
    fn a_new_cursor_adopts_or_creates_the_epoch() {
        assert_eq!(
            reconcile(Cursor::default(), Some(9), Some(3), 0),
            Reconcile::Adopt { epoch: 9 }
        );
        assert_eq!(reconcile(Cursor::default(), None, None, 0), Reconcile::Create);
    }

    #[test]
    fn a_changed_epoch_is_a_restart_and_counts_the_loss() {
        assert_eq!(
            reconcile(C, Some(8), Some(1), 15),
            Reconcile::Reset {
                epoch: Some(8),
                lost: 5
            }
        );
    }

    #[test]
    fn a_vanished_queue_is_a_restart() {
        assert_eq!(reconcile(C, None, None, 12), Reconcile::Reset { epoch: None, lost: 2 });
        assert_eq!(
            reconcile(C, None, Some(3), 10),
            Reconcile::Reset { epoch: None, lost: 0 }
        );
    }

    #[test]
    fn a_counter_below_the_cursor_is_a_restart() {
        assert_eq!(
            reconcile(C, Some(7), Some(2), 10),
            Reconcile::Reset { epoch: None, lost: 0 }
        );
        assert_eq!(
            reconcile(C, Some(7), None, 11),
            Reconcile::Reset { epoch: None, lost: 1 }
        );
    }

    #[test]
    fn an_evicted_epoch_alone_is_restored() {
        assert_eq!(reconcile(C, None, Some(12), 12), Reconcile::RestoreEpoch);
    }
}
