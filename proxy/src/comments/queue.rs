//! Putting comments in the memcached queue: this worker thread's connections, the
//! syncer's settings, reserving sequence numbers within `max_queue`, and writing the
//! records of the comments that arrived together in shared round trips.

use super::*;
use strata_wire::memcache::Added;

thread_local! {
    /// Idle memcached connections of this worker thread (each thread runs its own runtime,
    /// and a connection belongs to the runtime that made it).
    static IDLE: RefCell<Vec<Conn>> = const { RefCell::new(Vec::new()) };
}

/// A worker thread's comments waiting to be written, and whether a writer runs for them.
#[derive(Default)]
pub(super) struct Pending {
    /// The comments that arrived since the writer last took them, in order.
    pub(super) jobs: Vec<Job>,
    /// A writer task runs for this thread (a comment arriving meanwhile only joins `jobs`).
    pub(super) running: bool,
}

/// A comment waiting to be written.
pub(super) struct Job {
    /// Its record; the writer sets the number and the epoch.
    pub(super) record: Record,
    /// Where the writer says what became of it.
    pub(super) done: tokio::sync::oneshot::Sender<Written>,
}

/// What became of a comment handed to the writer.
pub(super) enum Written {
    /// Queued under this number: the receiver of its pushed verdict (registered before the
    /// write).
    Queued {
        seq: u64,
        epoch: u64,
        pushed: tokio::sync::oneshot::Receiver<Verdict>,
    },
    /// Not queued: to PHP.
    ToPhp(ToPhp),
}

/// Reads a decimal memcached value.
fn number(v: &Option<Vec<u8>>) -> Option<u64> {
    v.as_deref()
        .and_then(|b| std::str::from_utf8(b).ok()?.trim().parse().ok())
}

/// Whether sequence number `seq` lies beyond the queue's bound: more than `max_queue`
/// numbers after `applied`, the syncer's position.
fn beyond_bound(seq: u64, applied: u64, max_queue: u64) -> bool {
    seq.saturating_sub(applied) > max_queue
}

/// Whether a queue whose last number is `seq` is near enough its bound (over half
/// `max_queue` deep) for reservations to read its depth first.
fn near_bound(seq: u64, applied: u64, max_queue: u64) -> bool {
    beyond_bound(seq, applied, max_queue / 2)
}

impl Comments {
    /// Counts `n` comments just queued and wakes the syncers waiting for one.
    pub(super) fn announce_queued(&self, n: u64) {
        if n > 0 {
            self.queued.fetch_add(n, Ordering::AcqRel);
            self.queued_changed.notify_waiters();
        }
    }

    /// Runs `f` with a pooled connection of this thread; a failed exchange drops it.
    pub(super) async fn with_conn<T>(
        &self,
        f: impl AsyncFnOnce(&mut Conn) -> Result<T, memcache::Error>,
    ) -> Result<T, memcache::Error> {
        let idle = IDLE.with_borrow_mut(Vec::pop);
        let mut conn = match idle {
            Some(c) => c,
            None => {
                let addr = self.cfg.memcached.first().map_or("127.0.0.1:11211", String::as_str);
                Conn::connect(addr, self.cfg.memcached_timeout).await?
            }
        };
        let r = f(&mut conn).await;
        if !matches!(&r, Err(e) if e.is_connection()) {
            IDLE.with_borrow_mut(|idle| {
                if idle.len() < 16 {
                    idle.push(conn);
                }
            });
        }
        r
    }

    /// The syncer's published settings, when fresh and sealed with the cluster secret.
    /// Settings not sealed with it are ignored (counted, logged), and not read again for
    /// [`SETTINGS_REFRESH`]: without settings, comments go to PHP.
    pub(super) async fn settings(
        &self,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Option<Arc<Settings>>, memcache::Error> {
        if let Some((at, s)) = self.settings.lock().as_ref() {
            if at.elapsed() < SETTINGS_REFRESH {
                return Ok(Some(s.clone()));
            }
        }
        if self
            .settings_refused
            .lock()
            .is_some_and(|at| at.elapsed() < SETTINGS_REFRESH)
        {
            return Ok(None);
        }
        let key = wire::settings_key(&self.cfg.key_prefix);
        let raw = self.with_conn(async |c| c.get(&key).await).await?;
        let parsed = raw.and_then(|b| match wire::unseal_json::<Settings>(&self.secret, &key, &b) {
            Ok(s) => Some(s),
            Err(e) => {
                metrics.comment_untrusted("settings", e.as_str());
                tracing::warn!(error = %e, "comment settings in memcached not sealed with the cluster secret; ignored (comments go to PHP)");
                *self.settings_refused.lock() = Some(Instant::now());
                None
            }
        });
        let max_age = self.cfg.settings_max_age.as_millis() as u64;
        let fresh = parsed
            .filter(|s| unix_ms().saturating_sub(s.published_ms) <= max_age)
            .map(Arc::new);
        if let Some(s) = &fresh {
            *self.settings.lock() = Some((Instant::now(), s.clone()));
        }
        Ok(fresh)
    }

    /// Reserves `count` consecutive sequence numbers, creating the counter and the epoch
    /// when memcached holds none: the first number, the epoch, and how many of them lie
    /// within `max_queue` (always a leading run; the others are marked unused,
    /// [`wire::QUEUE_FULL`], which the syncer skips at once). Refuses when none would.
    ///
    /// Far from the bound, one round trip reads the epoch and the syncer's position and
    /// reserves (a `get` and an `incr`, pipelined); the numbers are checked after. Near the
    /// bound ([`Comments::check_first`]) the depth is read first and only the numbers that
    /// fit are reserved. Errors: memcached failed (numbers reserved meanwhile are skipped by
    /// the syncer after `missing_wait`).
    async fn reserve(&self, count: u64) -> Result<Result<(u64, u64, u64), ToPhp>, memcache::Error> {
        let p = &self.cfg.key_prefix;
        let (seq_key, epoch_key, applied_key) = (wire::seq_key(p), wire::epoch_key(p), wire::applied_key(p));
        let max_queue = self.cfg.max_queue;
        let check_first = self.check_first.load(Ordering::Relaxed);
        self.with_conn(async |c| {
            // `incremented`: the answer of the pipelined `incr`, when there was one.
            let (mut epoch, applied, incremented, count) = if check_first {
                let got = c.get_many(&[&seq_key, &epoch_key, &applied_key]).await?;
                let applied = number(&got[2]).unwrap_or(0);
                let depth = number(&got[0]).map_or(0, |s| s.saturating_sub(applied));
                let room = max_queue.saturating_sub(depth).min(count);
                if room == 0 {
                    return Ok(Err(ToPhp::QueueFull));
                }
                (number(&got[1]), applied, None, room)
            } else {
                let (got, next) = c
                    .get_many_and_incr(&[&epoch_key, &applied_key], &seq_key, count)
                    .await?;
                (number(&got[0]), number(&got[1]).unwrap_or(0), Some(next), count)
            };
            // A new queue (first comment, memcached restarted) gets its epoch before its counter.
            if epoch.is_none() {
                let fresh = random_u64();
                c.add(&epoch_key, fresh.to_string().as_bytes(), 0).await?;
                epoch = number(&c.get(&epoch_key).await?);
            }
            let incremented = match incremented {
                Some(n) => n,
                None => c.incr(&seq_key, count).await?,
            };
            let last = match incremented {
                Some(n) => n,
                None => {
                    c.add(&seq_key, b"0", 0).await?;
                    c.incr(&seq_key, count).await?.unwrap_or(0)
                }
            };
            if last < count {
                return Ok(Err(ToPhp::Memcached));
            }
            let first = last + 1 - count;
            let usable = (first..=last)
                .take_while(|n| !beyond_bound(*n, applied, max_queue))
                .count() as u64;
            if usable < count {
                // Reserved, never to be written: marked, so the syncer does not wait for them.
                let keys: Vec<String> = (first + usable..=last).map(|n| wire::record_key(p, n)).collect();
                let marks: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), wire::QUEUE_FULL)).collect();
                c.add_many(&marks).await?;
                self.check_first.store(true, Ordering::Relaxed);
                tracing::debug!(
                    first = first + usable,
                    last,
                    applied,
                    "queue full: numbers marked unused"
                );
                if usable == 0 {
                    return Ok(Err(ToPhp::QueueFull));
                }
            } else {
                self.check_first
                    .store(near_bound(last, applied, max_queue), Ordering::Relaxed);
            }
            Ok(Ok((first, epoch.unwrap_or(0), usable)))
        })
        .await
    }

    /// Writes the records of the comments waiting on `thread` ([`Comments::pending`]) until none is
    /// left: each round reserves numbers for all the comments waiting then, in one round
    /// trip, and writes their records in a second one. Comments that arrive together (the
    /// answers of one batch of verdicts free their visitors at once) thus share their round
    /// trips instead of queueing for memcached one by one.
    pub(super) async fn write_pending(self: Arc<Self>, thread: std::thread::ThreadId) {
        /// Lets a later comment start a writer if this one ends early.
        struct Running<'a>(&'a Comments, std::thread::ThreadId);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                if let Some(p) = self.0.pending.lock().get_mut(&self.1) {
                    p.running = false;
                }
            }
        }
        let _running = Running(&self, thread);
        loop {
            let jobs = {
                let mut pending = self.pending.lock();
                let p = pending.entry(thread).or_default();
                let jobs = std::mem::take(&mut p.jobs);
                if jobs.is_empty() {
                    // Ends here, under the lock: a comment arriving later starts a writer.
                    p.running = false;
                    return;
                }
                jobs
            };
            self.write_round(jobs).await;
        }
    }

    /// One round of [`Comments::write_pending`].
    async fn write_round(&self, jobs: Vec<Job>) {
        let (first, epoch, usable) = match self.reserve(jobs.len() as u64).await {
            Ok(Ok(r)) => r,
            Ok(Err(why)) => {
                for job in jobs {
                    let _ = job.done.send(Written::ToPhp(why));
                }
                return;
            }
            Err(e) => {
                let why = if e.is_no_room() {
                    ToPhp::MemcachedFull
                } else {
                    ToPhp::Memcached
                };
                tracing::warn!(error = %e, comments = jobs.len(), "memcached unavailable; comments passed to PHP");
                for job in jobs {
                    let _ = job.done.send(Written::ToPhp(why));
                }
                return;
            }
        };
        let mut writes = Vec::with_capacity(jobs.len());
        for (i, mut job) in jobs.into_iter().enumerate() {
            if i as u64 >= usable {
                let _ = job.done.send(Written::ToPhp(ToPhp::QueueFull));
                continue;
            }
            let seq = first + i as u64;
            job.record.seq = seq;
            job.record.epoch = epoch;
            // The answer waits from before the record is written: the syncer cannot have
            // read the record, so cannot push its verdict, before there is a waiter.
            let (tx, pushed) = tokio::sync::oneshot::channel();
            self.waiters.lock().insert((epoch, seq), tx);
            let key = wire::record_key(&self.cfg.key_prefix, seq);
            let sealed = job.record.seal(&self.secret, &self.cfg.key_prefix);
            writes.push((job.done, seq, key, sealed, pushed));
        }
        // The numbers are reserved: the records are written with `add`, retrying, so that
        // none is lost. `add` fails when the syncer gave up waiting for a number and marked
        // it skipped: that comment then goes to PHP rather than vanish; so does one memcached
        // has no room for (it may not evict: queued comments are never thrown out for room).
        // After a failed attempt a record may already be ours: an `add` that fails is
        // checked against it.
        let mut written: Vec<Option<Added>> = vec![None; writes.len()];
        for attempt in 0..3 {
            let todo: Vec<usize> = (0..writes.len()).filter(|i| written[*i].is_none()).collect();
            if todo.is_empty() {
                break;
            }
            let items: Vec<(&str, &[u8])> = todo
                .iter()
                .map(|i| (writes[*i].2.as_str(), writes[*i].3.as_slice()))
                .collect();
            let outcome = self
                .with_conn(async |c| {
                    let mut added = c.add_many(&items).await?;
                    let refused: Vec<usize> = (0..items.len()).filter(|j| added[*j] == Added::Exists).collect();
                    if attempt > 0 && !refused.is_empty() {
                        let keys: Vec<&str> = refused.iter().map(|j| items[*j].0).collect();
                        let found = c.get_many(&keys).await?;
                        for (j, value) in refused.iter().zip(found) {
                            if value.as_deref() == Some(items[*j].1) {
                                added[*j] = Added::Stored;
                            }
                        }
                    }
                    Ok(added)
                })
                .await;
            match outcome {
                Ok(stored) => {
                    for (i, ok) in todo.iter().zip(stored) {
                        written[*i] = Some(ok);
                    }
                }
                Err(e) => tracing::warn!(error = %e, attempt, comments = todo.len(), "writing queued comments failed"),
            }
        }
        self.announce_queued(written.iter().filter(|w| **w == Some(Added::Stored)).count() as u64);
        for ((done, seq, _, _, pushed), ok) in writes.into_iter().zip(written) {
            let result = match ok {
                Some(Added::Stored) => Written::Queued { seq, epoch, pushed },
                Some(Added::Exists) => {
                    tracing::warn!(
                        seq,
                        "queue position already taken (skipped by the syncer); comment passed to PHP"
                    );
                    Written::ToPhp(ToPhp::Memcached)
                }
                Some(Added::NoRoom) => {
                    tracing::warn!(
                        seq,
                        "memcached is out of memory (it may not evict queued comments); comment passed to PHP (the syncer skips its number)"
                    );
                    Written::ToPhp(ToPhp::MemcachedFull)
                }
                None => {
                    tracing::error!(seq, "comment not queued; passed to PHP (the syncer skips its number)");
                    Written::ToPhp(ToPhp::Memcached)
                }
            };
            // Nobody waits for the verdict of a comment not queued, nor of one whose visitor
            // left (it stays queued).
            let queued = matches!(result, Written::Queued { .. });
            let handed = done.send(result).is_ok();
            if !(queued && handed) {
                self.waiters.lock().remove(&(epoch, seq));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_counts_the_number_being_reserved() {
        // max_queue 40, the syncer at 10: numbers up to 50 are used, 51 is not.
        assert!(!beyond_bound(50, 10, 40));
        assert!(beyond_bound(51, 10, 40));
        // A position published ahead of the counter (a restarted memcached) is no depth.
        assert!(!beyond_bound(3, 900, 40));
        // Reservations read the depth first from half the bound on.
        assert!(!near_bound(30, 10, 40));
        assert!(near_bound(31, 10, 40));
        assert!(near_bound(1, 0, 1), "a bound of one is always near");
        assert!(
            super::super::tests::comments().check_first.load(Ordering::Relaxed),
            "the first reservation checks first"
        );
    }
}
