//! One tick of the syncer, apart from its timer: reconcile the queue with the cursor, read
//! the next records, apply them in one transaction, then tell the world (the committed
//! position, bans, verdicts). Also publishes the site settings for the proxies.
//!
//! Lifecycle of a record: reserved and written by a proxy → read here → judged and inserted
//! (or refused) in the transaction that also moves the cursor past it → after the commit:
//! bans for approved comments, its verdict pushed to the proxies, then in one memcached round
//! trip `{prefix}applied`, the verdict keys no proxy took, and the record deleted. Under
//! [`Syncer::advance`] that follow-up runs while the next batch's transaction does.
//! A crash before the commit leaves the cursor where it was, so the same records are
//! applied on restart; a crash after it leaves them behind the cursor, so they never are
//! again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_wire::comment::{self as wire, VERDICT_TTL};
use strata_wire::ids::{random_u64, unix_ms};

use crate::bans::{self, Banner};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::options::Options;
use crate::patches;
use crate::queue::{self, Cursor, Queue, QueueError, Reconcile, Slot};
use crate::rules::Refusal;
use crate::site::{self, Permalinks, PhpConstants};
use crate::store::{with_deadline, Applied, Judge, Outcome, Store, StoreError};
use crate::verdicts;

/// Why a tick failed. Nothing was lost: the next tick starts over from the cursor.
#[derive(Debug, thiserror::Error)]
pub enum TickError {
    /// memcached failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// MySQL failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Positions applied (records judged plus skipped ones).
    pub applied: usize,
    /// The cursor after the tick.
    pub cursor: Cursor,
    /// Queue depth seen at the start.
    pub depth: u64,
    /// A memcached restart was detected.
    pub reset: bool,
}

/// What `/status` shows.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The cursor.
    pub cursor: Cursor,
    /// The queue's counter at the last tick.
    pub counter: u64,
    /// When the last tick succeeded.
    pub last_ok: Option<Instant>,
    /// The last error, if the last tick failed.
    pub last_error: Option<String>,
    /// Committed transactions.
    pub commits: u64,
    /// Bans waiting for a proxy.
    pub bans_pending: usize,
    /// When settings were last published.
    pub settings_published: Option<Instant>,
}

/// The syncer's state between ticks.
pub struct Syncer {
    cfg: Config,
    queue: Queue,
    store: Store,
    banner: Banner,
    permalinks: Permalinks,
    /// Asks WordPress for new comments' filtered text, for the page patches.
    texts: patches::Texts,
    php: PhpConstants,
    metrics: Arc<Metrics>,
    status: Arc<parking_lot::Mutex<Status>>,
    /// The durable cursor as last read or committed; `None` until loaded.
    cursor: Option<Cursor>,
    /// The highest counter seen for the cursor's epoch (to count losses on a restart).
    last_counter: u64,
    /// When settings were last published.
    settings_at: Option<Instant>,
    /// The options last read (published again while MySQL is unreachable).
    options: Option<Options>,
    /// The position last published as `{prefix}applied`.
    applied_published: Option<u64>,
    /// When a blocked queue was last logged.
    blocked_logged: Option<Instant>,
    /// Posts whose `comment_count` batches raised, recounted once the queue is empty.
    recount: std::collections::BTreeSet<u64>,
    /// When `comment_count` was last recounted (see [`recount_due`]).
    recounted: Option<Instant>,
    /// Since when posts wait in `recount`.
    recount_pending: Option<Instant>,
    /// Since when the queue is empty (none while it is not).
    idle_since: Option<Instant>,
    /// The recount running beside the batches.
    recounting: Option<Recounting>,
    /// The last committed batch, its bans and verdicts sent, while the rest of what
    /// follows its commit has not run yet (see [`Syncer::advance`]).
    unsettled: Option<Unsettled>,
    /// How many records the next tick reads with the queue's head (see [`read_ahead`]).
    read_ahead: u64,
}

/// A recount running beside the batches; it gives back the posts it covered with how many
/// it repaired.
type Recounting = tokio::task::JoinHandle<(std::collections::BTreeSet<u64>, Result<usize, StoreError>)>;

/// How long a batch's page patches wait for WordPress to give its comments' text; past it
/// the post's pages are banned instead.
const PATCH_TEXT_TIMEOUT: Duration = Duration::from_secs(1);

/// Least time between two recounts of `comment_count`. A recount reads every comment of
/// its posts, which under a steady stream of comments (the queue empty between batches)
/// cost MySQL more than the batches themselves; meanwhile each batch adds what it saved.
const RECOUNT_EVERY: Duration = Duration::from_secs(1);
/// How long the queue stays empty before a recount runs: a recount of posts with many
/// comments takes MySQL tens of milliseconds, which under a steady stream of comments
/// would delay the batches running beside it. It waits for a lull instead.
const RECOUNT_LULL: Duration = Duration::from_millis(500);
/// Longest a recount waits for a lull (it then runs at the next empty queue).
const RECOUNT_WAITS_AT_MOST: Duration = Duration::from_secs(60);

/// When the syncer recounts `comment_count` (see [`recount_due`]).
#[derive(Debug, Clone, Copy)]
struct RecountTimes {
    /// The last recount.
    last: Option<Instant>,
    /// Since when posts wait to be recounted.
    pending: Instant,
    /// Since when the queue is empty.
    idle: Instant,
}

/// How many records a tick reads in the same round trip as the queue's head, after a
/// batch of `last`: twice as many (the queue's head moves on while a batch is applied), at
/// least [`READ_AHEAD_LEAST`], at most a batch. A batch beyond them reads the rest after.
fn read_ahead(last: usize, batch: usize) -> u64 {
    (last.saturating_mul(2)).clamp(READ_AHEAD_LEAST.min(batch), batch) as u64
}

/// The fewest records a tick reads with the queue's head.
const READ_AHEAD_LEAST: usize = 8;

/// Whether an empty queue recounts `comment_count` now: after a lull of [`RECOUNT_LULL`]
/// and at most every [`RECOUNT_EVERY`]; or, without a lull, once posts have waited
/// [`RECOUNT_WAITS_AT_MOST`].
fn recount_due(t: RecountTimes, now: Instant) -> bool {
    let since = |at: Instant| now.saturating_duration_since(at);
    let lull = since(t.idle) >= RECOUNT_LULL && t.last.is_none_or(|l| since(l) >= RECOUNT_EVERY);
    lull || since(t.pending) >= RECOUNT_WAITS_AT_MOST
}

/// Verdicts no proxy handed to a waiting answer: sequence number and JSON, for their keys.
type Unclaimed = Vec<(u64, Vec<u8>)>;

/// A committed batch whose bans and verdicts are on their way to the proxies (see
/// [`Syncer::dispatch`]); the answers and the memcached writes are still to come.
struct Unsettled {
    applied: Applied,
    batch: wire::VerdictBatch,
    sending: bans::Sending,
    /// When the bans and verdicts were sent.
    sent_at: Instant,
}

/// The verdicts of `batch` no proxy handed to a waiting answer (`delivered` are those that
/// were), encoded for their verdict keys: the safety net of a proxy that missed the push,
/// whose answers read the keys.
fn unclaimed(batch: &wire::VerdictBatch, delivered: &HashSet<u64>) -> Unclaimed {
    let mut unclaimed = Vec::with_capacity(batch.verdicts.len().saturating_sub(delivered.len()));
    for v in batch.verdicts.iter().filter(|v| !delivered.contains(&v.seq)) {
        match serde_json::to_vec(v) {
            Ok(json) => unclaimed.push((v.seq, json)),
            Err(e) => tracing::error!(seq = v.seq, error = %e, "cannot encode a verdict"),
        }
    }
    unclaimed
}

/// What becomes of the queue positions of a committed batch in memcached.
#[derive(Debug, Default, PartialEq, Eq)]
struct Cleanup {
    /// Deleted: the applied records, and the positions their proxies marked unused (those
    /// marks never expire, and no record can come there any more).
    delete: Vec<u64>,
    /// Overwritten with a tombstone that expires: the values that were no record sealed
    /// for their position, so that a late record is refused there (its proxy hands the
    /// comment to PHP) and a forged value does not stay for ever.
    tombstone: Vec<u64>,
}

/// The [`Cleanup`] of a batch's `outcomes`. The tombstones of missing records stay as
/// they are (they expire), so a record written late is refused.
fn cleanup(outcomes: &[(u64, Outcome)]) -> Cleanup {
    let mut c = Cleanup::default();
    for (seq, o) in outcomes {
        match o {
            Outcome::Inserted(_) | Outcome::Refused(_) | Outcome::Skipped("queue-full") => c.delete.push(*seq),
            Outcome::Skipped("missing" | "unjudged") => {}
            Outcome::Skipped(_) => c.tombstone.push(*seq),
        }
    }
    c
}

/// Whether the answer to a record redirects to its post (no `redirect_to` of its own), so
/// its verdict needs the post's permalink.
fn links_to_post(r: &wire::Record) -> bool {
    r.redirect_to.as_deref().is_none_or(str::is_empty)
}

/// The queue positions a tick reads: those after `cursor`, at most `batch` of the `depth`
/// queued.
fn batch_range(cursor: Cursor, depth: u64, batch: usize) -> RangeInclusive<u64> {
    cursor.seq + 1..=cursor.seq + depth.min(batch as u64)
}

/// The posts whose permalinks the verdicts of `slots` will need.
fn linked_posts(slots: &[(u64, Slot)]) -> impl Iterator<Item = u64> + '_ {
    slots.iter().filter_map(|(_, s)| match s {
        Slot::Record(r) if links_to_post(r) => Some(r.post_id),
        _ => None,
    })
}

/// The label of an inserted comment's status in the metrics and logs.
fn status_label(approved: &str) -> &'static str {
    match verdicts::status(approved) {
        wire::Status::Approved => "approved",
        wire::Status::Held => "held",
        wire::Status::Spam => "spam",
        wire::Status::Trash => "trash",
        _ => "other",
    }
}

/// The posts whose pages a batch changed: those of its comments inserted approved, each
/// once; their cached pages are banned, their `comment_count` recounted later.
fn posts_to_ban(outcomes: &[(u64, Outcome)]) -> BTreeSet<u64> {
    outcomes
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::Inserted(i) if i.approved == "1" => Some(i.record.post_id),
            _ => None,
        })
        .collect()
}

/// Counts and logs what became of queue position `seq` (`commit_ms`: when its batch
/// committed).
fn note_outcome(m: &Metrics, seq: u64, o: &Outcome, commit_ms: u64) {
    match o {
        Outcome::Inserted(i) => {
            let label = status_label(i.approved);
            m.comment(label);
            m.lag
                .observe(commit_ms.saturating_sub(i.record.accepted_ms) as f64 / 1000.0);
            tracing::debug!(
                seq,
                comment = i.id,
                post = i.record.post_id,
                status = label,
                "comment saved"
            );
        }
        Outcome::Refused(r) => {
            m.comment(match r {
                Refusal::Ignored(_) => "ignored",
                Refusal::Rejected { .. } => "rejected",
            });
            m.rejection(r.reason());
            tracing::debug!(seq, reason = r.reason(), "comment refused");
        }
        // A number its proxy marked (the queue was full) held no comment; a missing or
        // unreadable record may have.
        Outcome::Skipped(why @ "queue-full") => {
            m.skip(why);
            tracing::debug!(seq, reason = why, "queue position skipped: marked unused by its proxy");
        }
        // Not sealed for its position with the cluster secret: never inserted.
        Outcome::Skipped(why @ ("unsigned" | "forged" | "unreadable" | "misplaced")) => {
            m.skip(why);
            tracing::error!(
                seq,
                reason = why,
                "queue position skipped: not a record sealed for it with the cluster secret (forged, or queued by a proxy of an older version); nothing inserted"
            );
        }
        Outcome::Skipped(why) => {
            m.skip(why);
            tracing::error!(seq, reason = why, "queue position skipped: its record never arrived");
        }
    }
}

impl Syncer {
    /// A syncer for `cfg`. Reads the PHP configuration for the auth key and salt (a failure
    /// is logged: the options are used instead).
    ///
    /// Errors: the MySQL URL is unusable.
    pub fn new(cfg: Config, metrics: Arc<Metrics>) -> Result<Syncer, StoreError> {
        let store = Store::with_tls(&cfg.mysql, &cfg.table_prefix, &cfg.key_prefix, &cfg.mysql_tls)?;
        let php = site::read_php_constants(&cfg.wp_config).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the WordPress configuration; using the auth_key/auth_salt options");
            PhpConstants::default()
        });
        let addr = cfg.memcached.first().cloned().unwrap_or_default();
        Ok(Syncer {
            queue: Queue::new(&addr, &cfg.key_prefix, cfg.memcached_timeout, &cfg.cluster.secret),
            store,
            banner: Banner::new(
                cfg.cluster.siblings.clone(),
                cfg.cluster.secret.clone(),
                cfg.cluster.ban_wait,
                cfg.cluster.ban_timeout,
            ),
            permalinks: Permalinks::new(cfg.origin.clone()),
            texts: patches::Texts::new(cfg.origin.clone(), PATCH_TEXT_TIMEOUT),
            php,
            metrics,
            status: Arc::new(parking_lot::Mutex::new(Status::default())),
            cursor: None,
            last_counter: 0,
            settings_at: None,
            options: None,
            applied_published: None,
            blocked_logged: None,
            recount: std::collections::BTreeSet::new(),
            recounted: None,
            recount_pending: None,
            idle_since: None,
            recounting: None,
            unsettled: None,
            read_ahead: read_ahead(0, cfg.batch),
            cfg,
        })
    }

    /// The shared status, for the admin listener.
    pub fn status(&self) -> Arc<parking_lot::Mutex<Status>> {
        self.status.clone()
    }

    /// Runs what follows the last commit if it has not run yet, then closes the database
    /// pool.
    pub async fn close(mut self) {
        self.settle().await;
        self.store.close().await;
    }

    /// One round: see the module documentation. Errors leave the cursor where it was.
    pub async fn tick(&mut self) -> Result<TickReport, TickError> {
        let r = self.advance().await;
        self.settle().await;
        r
    }

    /// Whether what follows the last commit (the proxies' answers to its bans and verdicts,
    /// the memcached writes) has yet to run.
    pub fn unsettled(&self) -> bool {
        self.unsettled.is_some()
    }

    /// Runs what follows the last commit, if it has not run yet.
    pub async fn settle(&mut self) {
        if let Some(u) = self.unsettled.take() {
            self.after_commit(u, true).await;
        }
    }

    /// One round like [`Syncer::tick`], except that what follows the commit of the batch it
    /// applies is left unsettled: its bans and verdicts are sent at once, but their answers
    /// are awaited and the memcached writes made by the next call, while MySQL applies the
    /// next batch, so the queue moves on meanwhile. The caller runs [`Syncer::settle`] when
    /// a round applied nothing (an idle queue, or an error) and calls again at once while
    /// [`Syncer::unsettled`].
    pub async fn advance(&mut self) -> Result<TickReport, TickError> {
        let r = self.tick_inner().await;
        let mut st = self.status.lock();
        match &r {
            Ok(report) => {
                st.cursor = report.cursor;
                st.last_ok = Some(Instant::now());
                st.last_error = None;
            }
            Err(e) => {
                match e {
                    TickError::Queue(_) => self.metrics.memcached_errors.inc(),
                    TickError::Store(_) => self.metrics.mysql_errors.inc(),
                };
                st.last_error = Some(e.to_string());
            }
        }
        st.bans_pending = self.banner.pending();
        r
    }

    async fn tick_inner(&mut self) -> Result<TickReport, TickError> {
        let before = self.load_cursor().await?;
        self.publish_settings_if_due().await;
        // The tags of an unsettled batch are on their way.
        if self.banner.pending() > 0 && self.unsettled.is_none() {
            self.flush_bans().await;
        }

        let started = Instant::now();
        let head = self.queue.head(before.seq + 1, self.read_ahead).await?;
        let Some((cursor, reset)) = self.reconcile(before, head.epoch, head.counter).await? else {
            return Ok(TickReport {
                cursor: before,
                ..TickReport::default()
            });
        };
        let mut report = self.take_position(cursor, head.counter.unwrap_or(0), reset);
        // An unsettled batch publishes the position itself.
        if self.unsettled.is_none() && self.applied_published != Some(cursor.seq) {
            self.publish_applied(cursor.seq).await;
        }
        if report.depth == 0 {
            self.idle_since.get_or_insert_with(Instant::now);
            // The last batch's verdicts go out before the recount, not after it.
            self.settle().await;
            self.recount_if_due().await;
            return Ok(report);
        }

        self.idle_since = None;
        // What the head read ahead is good if the cursor stayed where it was read from.
        let early = if cursor == before && !reset {
            head.early
        } else {
            Vec::new()
        };
        let slots = self
            .fetch(
                cursor.epoch,
                batch_range(cursor, report.depth, self.cfg.batch),
                early,
                started,
            )
            .await?;
        if !slots.is_empty() {
            self.apply(cursor, slots, &mut report).await?;
        }
        Ok(report)
    }

    /// The durable cursor, read from MySQL the first time.
    async fn load_cursor(&mut self) -> Result<Cursor, StoreError> {
        if let Some(c) = self.cursor {
            return Ok(c);
        }
        let c = with_deadline(self.cfg.mysql_timeout, self.store.load_cursor()).await?;
        tracing::info!(epoch = c.epoch, seq = c.seq, "cursor loaded");
        self.cursor = Some(c);
        Ok(c)
    }

    /// Brings the cursor (`before`) and the queue's epoch key together as
    /// [`queue::reconcile`] decides from the queue's head (`epoch`, `counter`): the cursor
    /// to go on from, and whether the queue was lost (a memcached restart). `None` when
    /// another syncer moved the cursor first: the tick ends there.
    async fn reconcile(
        &mut self,
        before: Cursor,
        epoch: Option<u64>,
        counter: Option<u64>,
    ) -> Result<Option<(Cursor, bool)>, TickError> {
        let mut cursor = before;
        match queue::reconcile(before, epoch, counter, self.last_counter) {
            Reconcile::Same => {}
            Reconcile::RestoreEpoch => {
                tracing::warn!(
                    epoch = before.epoch,
                    "the queue's epoch key vanished while its counter did not; restored"
                );
                self.queue.ensure_epoch(before.epoch).await?;
            }
            Reconcile::Adopt { epoch } => cursor.epoch = epoch,
            Reconcile::Create => {
                let e = self.queue.ensure_epoch(random_u64()).await?.unwrap_or(0);
                cursor = Cursor { epoch: e, seq: 0 };
            }
            Reconcile::Reset { epoch, lost } => {
                return Ok(self.start_over(before, epoch, lost).await?.map(|c| (c, true)));
            }
        }
        if cursor != before {
            if !self.move_cursor(before, cursor).await? {
                return Ok(None);
            }
            tracing::info!(epoch = cursor.epoch, "queue epoch taken");
        }
        Ok(Some((cursor, false)))
    }

    /// After a memcached restart lost the queue (`lost` comments with it): the cursor moved
    /// from `before` to the start of the new queue (`epoch`, else a new one), counted and
    /// logged. `None` when another syncer moved the cursor first.
    async fn start_over(&mut self, before: Cursor, epoch: Option<u64>, lost: u64) -> Result<Option<Cursor>, TickError> {
        // The last batch's verdict keys and position belong to the lost queue: they
        // must not land in the new one, whose numbers start over.
        if let Some(u) = self.unsettled.take() {
            self.after_commit(u, false).await;
        }
        let e = match epoch {
            Some(e) => e,
            None => self.queue.ensure_epoch(random_u64()).await?.unwrap_or(0),
        };
        let cursor = Cursor { epoch: e, seq: 0 };
        if !self.move_cursor(before, cursor).await? {
            return Ok(None);
        }
        tracing::error!(
            old_epoch = before.epoch,
            new_epoch = e,
            cursor = before.seq,
            last_counter = self.last_counter,
            lost,
            "memcached restarted: the comment queue was lost; {lost} queued comment(s) were never applied"
        );
        self.metrics.memcached_resets.inc();
        self.metrics.lost.inc_by(lost);
        self.last_counter = 0;
        Ok(Some(cursor))
    }

    /// Takes `cursor` as the syncer's position and `counter` as the queue's head (state,
    /// status, metrics); the tick's report so far.
    fn take_position(&mut self, cursor: Cursor, counter: u64, reset: bool) -> TickReport {
        self.cursor = Some(cursor);
        self.last_counter = self.last_counter.max(counter);
        self.status.lock().counter = counter;
        let depth = counter.saturating_sub(cursor.seq);
        self.metrics.queue_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
        self.metrics.cursor.set(i64::try_from(cursor.seq).unwrap_or(i64::MAX));
        TickReport {
            applied: 0,
            cursor,
            depth,
            reset,
        }
    }

    /// Reads the records of `positions` of queue `epoch` (`early`: the first ones as the
    /// head read them; the step timed from `started`), and sets how many the next head reads
    /// ahead. A record of a newer format than this syncer's stops the batch before it; that
    /// is logged at most every 10 s.
    async fn fetch(
        &mut self,
        epoch: u64,
        positions: RangeInclusive<u64>,
        early: Vec<Option<Vec<u8>>>,
        started: Instant,
    ) -> Result<Vec<(u64, Slot)>, TickError> {
        let (slots, blocked) = self
            .queue
            .fetch(
                epoch,
                *positions.start(),
                *positions.end(),
                self.cfg.missing_wait,
                early,
            )
            .await?;
        self.metrics.step("fetch", started.elapsed());
        self.read_ahead = read_ahead(slots.len(), self.cfg.batch);
        if let Some(b) = blocked {
            if self
                .blocked_logged
                .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
            {
                tracing::error!(
                    seq = b.seq,
                    version = b.version,
                    "a queued comment has a newer format than this syncer understands; the queue waits for an upgraded syncer"
                );
                self.blocked_logged = Some(Instant::now());
            }
        }
        Ok(slots)
    }

    /// Applies `slots` (the positions after `cursor`) in one transaction, while the proxies
    /// answer the previous batch's bans and verdicts, then sends this batch's
    /// ([`Syncer::dispatch`]); `report` takes the cursor and the count. A cursor another
    /// syncer moved is followed, not an error.
    async fn apply(
        &mut self,
        cursor: Cursor,
        slots: Vec<(u64, Slot)>,
        report: &mut TickReport,
    ) -> Result<(), TickError> {
        // The verdicts will link to these posts: their look-ups run while MySQL works.
        if let Some(o) = &self.options {
            self.permalinks.prefetch(linked_posts(&slots), &o.home_authority());
        }
        let judge = Judge {
            version: self.cfg.wp_version,
            flood_interval: self.cfg.flood_interval,
        };
        let store = self.store.clone();
        let deadline = self.cfg.mysql_timeout;
        let step = async move {
            let started = Instant::now();
            let r = with_deadline(deadline, store.apply(cursor, cursor.epoch, slots, judge)).await;
            (r, started.elapsed(), unix_ms())
        };
        // The previous batch's bans and verdicts, sent when it committed, are answered while
        // MySQL applies this one; they are done before this batch's are sent, so the order
        // of batches is kept. Their memcached writes are polled first: their request leaves
        // before this batch is judged.
        let previous = self.unsettled.take();
        let ((), (result, took, commit_ms)) = tokio::join!(
            async {
                if let Some(u) = previous {
                    self.after_commit(u, true).await;
                }
            },
            step
        );
        let applied = match result {
            Ok(a) => {
                self.metrics.step("transaction", took);
                a
            }
            Err(StoreError::CursorMoved(actual)) => {
                tracing::warn!(
                    expected = ?cursor,
                    ?actual,
                    "the cursor moved under this syncer (another syncer running, or a lost commit answer); following it"
                );
                self.cursor = Some(actual);
                report.cursor = actual;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.cursor = Some(applied.cursor);
        report.cursor = applied.cursor;
        report.applied = applied.outcomes.len();
        self.unsettled = Some(self.dispatch(applied, commit_ms).await);
        Ok(())
    }

    /// What follows a commit (at `commit_ms`) at once: the batch counted, its bans and
    /// verdicts sent to the proxies (see [`Banner::start_commit`](bans::Banner::start_commit)).
    /// The rest is [`Syncer::after_commit`]'s. Failures are logged, never undo the commit.
    async fn dispatch(&mut self, applied: Applied, commit_ms: u64) -> Unsettled {
        self.count_batch(&applied);
        for (seq, o) in &applied.outcomes {
            note_outcome(&self.metrics, *seq, o, commit_ms);
        }
        // Bans first, so a visitor following the redirect finds the new comment.
        let ban_posts = posts_to_ban(&applied.outcomes);
        if !ban_posts.is_empty() {
            self.recount.extend(&ban_posts);
            self.recount_pending.get_or_insert_with(Instant::now);
        }
        for post in &ban_posts {
            self.banner.add(bans::tags_for_post(*post, self.cfg.cluster.soft_lists));
        }
        if self.cfg.patch_pages && self.banner.enabled() && !ban_posts.is_empty() {
            let started = Instant::now();
            let wait = self.cfg.patch_wait;
            if tokio::time::timeout(wait, self.patch_posts(&applied, &ban_posts))
                .await
                .is_err()
            {
                // WordPress or MySQL too slow for this batch: its bans go plain rather than
                // keep its commenters waiting.
                tracing::debug!(
                    ?wait,
                    posts = ban_posts.len(),
                    "page patches not ready within patch_wait; plain bans"
                );
                self.metrics.patches("late");
            }
            self.metrics.step("patch", started.elapsed());
        }
        // Bans first, then verdicts, each proxy releasing the verdicts only once the bans are
        // applied everywhere: in one request to each (see `Banner::commit`).
        let sent_at = Instant::now();
        let batch = self.verdict_batch(&applied).await;
        let sending = self.banner.start_commit(&batch);
        Unsettled {
            applied,
            batch,
            sending,
            sent_at,
        }
    }

    /// Queues a page patch with the ban of each of `posts`' pages that the batch's comments
    /// only add to, and one with the ban of the latest-comments lists (see [`patches`]); the
    /// others stay plain bans. What fails (MySQL, WordPress's answers) is logged and leaves
    /// the bans plain.
    async fn patch_posts(&mut self, applied: &Applied, posts: &BTreeSet<u64>) {
        let (threads, recent) = tokio::join!(self.thread_patches(applied, posts), self.recent_patch(applied));
        for (post, t) in threads {
            self.banner
                .add_patch(format!("post:{post}"), strata_wire::patch::Patch::Thread(t));
        }
        if let Some(r) = recent {
            self.banner
                .add_patch(bans::RECENT_COMMENTS.to_string(), strata_wire::patch::Patch::Recent(r));
        }
    }

    /// The patch of every latest-comments list for the batch's approved comments: the
    /// newest comments from MySQL, their posts' titles and links from WordPress's REST API;
    /// `None` (counted) when there is none to make or something failed (logged).
    async fn recent_patch(&self, applied: &Applied) -> Option<strata_wire::patch::Recent> {
        let o = &applied.options;
        let printer = patches::Printer {
            options: o,
            tz: o.timezone(),
            old_links: self.cfg.wp_version < (6, 2),
        };
        let added: Vec<u64> = applied
            .outcomes
            .iter()
            .filter_map(|(_, outcome)| match outcome {
                Outcome::Inserted(i) if i.approved == "1" => Some(i.id),
                _ => None,
            })
            .collect();
        if added.is_empty() {
            return None;
        }
        if !printer.lists_patchable() {
            self.metrics.list_patches("none");
            return None;
        }
        let limit = added.len() + strata_wire::patch::RECENT_BEFORE;
        let newest = match with_deadline(
            self.cfg.mysql_timeout,
            self.store.newest_comments(limit, self.cfg.wp_version),
        )
        .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the newest comments; the latest-comments lists are banned");
                self.metrics.list_patches("error");
                return None;
            }
        };
        // The posts of the comments a list may show: the batch's newest, and the ones before.
        let shown = added.len().min(strata_wire::patch::RECENT_BEFORE);
        let mut posts: Vec<(u64, String)> = newest[..shown.min(newest.len())]
            .iter()
            .chain(newest.iter().skip(added.len()))
            .map(|l| (l.post, l.post_type.clone()))
            .collect();
        posts.sort_unstable();
        posts.dedup();
        let described = match self.texts.posts(&posts, &o.home_authority()).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "WordPress did not describe the commented posts; the latest-comments lists are banned");
                self.metrics.list_patches("error");
                return None;
            }
        };
        let patch = printer.recent(&newest, &added, &described);
        self.metrics.list_patches(if patch.is_some() { "sent" } else { "none" });
        patch
    }

    /// The page patches of `posts` that the batch's comments only add to.
    async fn thread_patches(&self, applied: &Applied, posts: &BTreeSet<u64>) -> Vec<(u64, strata_wire::patch::Thread)> {
        let o = &applied.options;
        let printer = patches::Printer {
            options: o,
            tz: o.timezone(),
            old_links: self.cfg.wp_version < (6, 2),
        };
        let mut out = Vec::new();
        if !printer.patchable() {
            return out;
        }
        let mut added: BTreeMap<u64, Vec<patches::Row>> = BTreeMap::new();
        for (_, outcome) in &applied.outcomes {
            if let Outcome::Inserted(i) = outcome {
                if i.approved == "1" {
                    added.entry(i.record.post_id).or_default().push(patches::Row {
                        id: i.id,
                        parent: i.record.parent,
                        author: i.filtered.author.clone(),
                        email: i.filtered.email.clone(),
                        url: i.filtered.url.clone(),
                        date: site::comment_dates(i.record.accepted_ms, printer.tz).0,
                        date_gmt: i.date_gmt.clone(),
                        replies: false,
                    });
                }
            }
        }
        let new_ids: Vec<u64> = added.values().flatten().map(|r| r.id).collect();
        let context = match with_deadline(self.cfg.mysql_timeout, self.store.patch_context(posts, &new_ids)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read what the commented pages show; their pages are banned");
                self.metrics.patches("error");
                return out;
            }
        };
        let mut ids = new_ids;
        ids.extend(
            context
                .values()
                .flat_map(|c| c.newest.iter().filter(|r| !r.replies).map(|r| r.id)),
        );
        let texts = match self.texts.get(&ids, &o.home_authority()).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "WordPress did not give the new comments' text; their pages are banned");
                self.metrics.patches("error");
                return out;
            }
        };
        for (post, rows) in &added {
            let patch = context
                .get(post)
                .and_then(|ctx| printer.thread(*post, ctx, rows, &texts));
            match patch {
                Some(t) => {
                    out.push((*post, t));
                    self.metrics.patches("sent");
                }
                None => self.metrics.patches("none"),
            }
        }
        out
    }

    /// Counts a committed batch: the commit, its size, how its checks were answered.
    fn count_batch(&self, applied: &Applied) {
        let m = &self.metrics;
        m.commits.inc();
        self.status.lock().commits += 1;
        m.batch_size.observe(applied.outcomes.len() as f64);
        m.flood_checks(applied.flood_checks.0, applied.flood_checks.1);
        if let Some(asked) = applied.pairs_asked {
            m.pair_check(asked);
        }
        if let Some(kept) = applied.judged_ahead {
            m.judged_ahead(kept);
        }
    }

    /// What follows a commit once [`Syncer::dispatch`] sent its bans and verdicts: the
    /// proxies' answers, then the verdicts no proxy handed over and the applied position
    /// written to memcached, the applied records deleted there. Failures are logged, never
    /// undo the commit. Without `memcached` (it restarted since), nothing is written there.
    async fn after_commit(&mut self, u: Unsettled, memcached: bool) {
        let m = self.metrics.clone();
        let Unsettled {
            applied,
            batch,
            sending,
            sent_at,
        } = u;
        let (sent, error, delivered) = self.banner.finish_commit(sending).await;
        self.note_bans(sent, error);
        m.step("commit", sent_at.elapsed());
        self.observe_verdicts(&applied, |s| delivered.contains(&s));
        let unclaimed = unclaimed(&batch, &delivered);

        let done = cleanup(&applied.outcomes);
        if memcached {
            let started = Instant::now();
            self.publish(&applied, unclaimed, &done).await;
            m.step("publish", started.elapsed());
        }
        self.options = Some(applied.options);
    }

    /// One memcached round trip after a commit: `{prefix}applied`, the verdict keys of
    /// `unclaimed` (the verdicts no proxy handed to a waiting answer, sealed for their keys),
    /// the positions of `done` cleaned up. A failure is logged: the applied position is
    /// published again by the next tick, the proxies answer the verdicts they do not find
    /// with a redirect to the post, and records not deleted stay until memcached restarts
    /// (the proxies' `max_queue` keeps them from filling it).
    async fn publish(&mut self, applied: &Applied, unclaimed: Unclaimed, done: &Cleanup) {
        let Cursor { epoch, seq } = applied.cursor;
        let prefix = self.queue.prefix().to_string();
        let secret = &self.cfg.cluster.secret;
        let mut items = Vec::with_capacity(unclaimed.len() + done.tombstone.len() + 1);
        items.push((wire::applied_key(&prefix), seq.to_string().into_bytes(), 0));
        let written: HashSet<u64> = unclaimed.iter().map(|(s, _)| *s).collect();
        items.extend(unclaimed.into_iter().map(|(s, json)| {
            let key = wire::verdict_key(&prefix, epoch, s);
            let sealed = wire::seal(secret, &key, &json);
            (key, sealed, VERDICT_TTL)
        }));
        items.extend(
            done.tombstone
                .iter()
                .map(|s| (wire::record_key(&prefix, *s), queue::TOMBSTONE.to_vec(), VERDICT_TTL)),
        );
        match self.queue.publish(&items, &done.delete).await {
            Ok(()) => {
                self.applied_published = Some(seq);
                self.observe_verdicts(applied, |s| written.contains(&s));
            }
            Err(e) => tracing::warn!(
                verdicts = written.len(),
                error = %e,
                "cannot publish the applied position and verdicts (the proxies answer those with a redirect to the post)"
            ),
        }
    }

    /// Observes the verdict latency of the inserted comments whose verdict `published` now.
    fn observe_verdicts(&self, applied: &Applied, published: impl Fn(u64) -> bool) {
        let now = unix_ms();
        for (seq, outcome) in &applied.outcomes {
            if let Outcome::Inserted(i) = outcome {
                if published(*seq) {
                    self.metrics
                        .verdict_latency
                        .observe(now.saturating_sub(i.record.accepted_ms) as f64 / 1000.0);
                }
            }
        }
    }

    /// Recounts the posts batches added comments to, as WordPress counts (see
    /// [`Store::recount`]), when [`recount_due`], on a connection of its own while the
    /// batches go on; a failure leaves them for a later empty queue.
    async fn recount_if_due(&mut self) {
        if self.recounting.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        if let Some(task) = self.recounting.take() {
            match task.await {
                Ok((_, Ok(0))) => {}
                Ok((_, Ok(repaired))) => {
                    tracing::info!(
                        repaired,
                        "comment_count repaired (comments changed behind the syncer's back)"
                    );
                }
                Ok((posts, Err(e))) => {
                    tracing::warn!(error = %e, posts = posts.len(), "cannot recount comment_count; retried later");
                    self.recount.extend(posts);
                    self.recount_pending.get_or_insert_with(Instant::now);
                }
                Err(e) => tracing::warn!(error = %e, "the recount of comment_count failed"),
            }
        }
        let now = Instant::now();
        let times = RecountTimes {
            last: self.recounted,
            pending: self.recount_pending.unwrap_or(now),
            idle: self.idle_since.unwrap_or(now),
        };
        if self.recount.is_empty() || !recount_due(times, now) {
            return;
        }
        self.recounted = Some(now);
        self.recount_pending = None;
        let posts = std::mem::take(&mut self.recount);
        let (store, version, limit) = (self.store.clone(), self.cfg.wp_version, self.cfg.mysql_timeout);
        self.recounting = Some(tokio::spawn(async move {
            let r = with_deadline(limit, store.recount(&posts, version)).await;
            (posts, r)
        }));
    }

    /// Moves the durable cursor with compare-and-set; when another syncer moved it first, the
    /// cursor is read again on the next tick and false is returned.
    async fn move_cursor(&mut self, from: Cursor, to: Cursor) -> Result<bool, StoreError> {
        let moved = with_deadline(self.cfg.mysql_timeout, self.store.move_cursor(from, to)).await?;
        if !moved {
            tracing::warn!(?from, ?to, "the cursor moved under this syncer; reading it again");
            self.cursor = None;
        }
        Ok(moved)
    }

    /// Publishes `{prefix}applied` (the proxies' view of the queue depth).
    async fn publish_applied(&mut self, seq: u64) {
        let key = wire::applied_key(self.queue.prefix());
        match self.queue.set(&key, seq.to_string().as_bytes(), 0).await {
            Ok(()) => self.applied_published = Some(seq),
            Err(e) => tracing::warn!(error = %e, "cannot publish the applied position"),
        }
    }

    async fn flush_bans(&mut self) {
        let (sent, error) = self.banner.flush().await;
        self.note_bans(sent, error);
    }

    /// Counts and logs what a flush of the bans did.
    fn note_bans(&mut self, sent: usize, error: Option<bans::BanError>) {
        self.metrics.bans_sent.inc_by(sent as u64);
        if let Some(e) = error {
            self.metrics.ban_errors.inc();
            tracing::warn!(
                pending = self.banner.pending(),
                error = %e,
                "bans not delivered; retried on the next tick"
            );
        }
        self.metrics
            .bans_pending
            .set(i64::try_from(self.banner.pending()).unwrap_or(i64::MAX));
    }

    /// The verdicts of an applied batch, for the proxies.
    async fn verdict_batch(&mut self, applied: &Applied) -> wire::VerdictBatch {
        let o: &Options = &applied.options;
        if o.page_comments {
            tracing::debug!("page_comments is on: comment links point at the post, without the comment page");
        }
        let salt = site::auth_salt(&self.php, o);
        let host = o.home_authority();
        let mut pushed = Vec::with_capacity(applied.outcomes.len());
        // One wait for the whole batch's permalinks, whatever the number of posts.
        let links_by = tokio::time::Instant::now() + self.cfg.permalink_wait;
        for (seq, outcome) in &applied.outcomes {
            let verdict = match outcome {
                Outcome::Inserted(i) => {
                    let permalink = if links_to_post(&i.record) {
                        self.permalinks.get(i.record.post_id, &o.home, &host, links_by).await
                    } else {
                        String::new()
                    };
                    verdicts::inserted(
                        *seq,
                        i,
                        verdicts::Site {
                            permalink: &permalink,
                            home: &o.home,
                            siteurl: &o.siteurl,
                            auth_salt: salt.as_deref(),
                        },
                    )
                }
                Outcome::Refused(r) => verdicts::refused(*seq, r),
                Outcome::Skipped(_) => continue,
            };
            pushed.push(verdict);
        }
        wire::VerdictBatch {
            epoch: applied.cursor.epoch,
            verdicts: pushed,
        }
    }

    /// Publishes `{prefix}settings` when `settings_interval` has passed. While MySQL cannot
    /// be read, the last options read are published again: the site's settings rarely
    /// change, and fresh settings keep the proxies queueing (the queue waits for MySQL).
    async fn publish_settings_if_due(&mut self) {
        if self
            .settings_at
            .is_some_and(|t| t.elapsed() < self.cfg.settings_interval)
        {
            return;
        }
        self.settings_at = Some(Instant::now());
        match with_deadline(self.cfg.mysql_timeout, self.store.options()).await {
            Ok(o) => self.options = Some(o),
            Err(e) => {
                self.metrics.mysql_errors.inc();
                tracing::warn!(error = %e, "cannot read the site options; publishing the last ones read");
            }
        }
        let Some(options) = &self.options else {
            return;
        };
        let settings = options.settings(unix_ms());
        let key = wire::settings_key(self.queue.prefix());
        match wire::seal_json(&self.cfg.cluster.secret, &key, &settings) {
            Ok(sealed) => match self.queue.set(&key, &sealed, 0).await {
                Ok(()) => self.status.lock().settings_published = Some(Instant::now()),
                Err(e) => {
                    self.metrics.memcached_errors.inc();
                    tracing::warn!(error = %e, "cannot publish the settings");
                }
            },
            Err(e) => tracing::error!(error = %e, "cannot encode the settings"),
        }
    }

    /// Forces the settings out on the next tick (tests, or after an options change).
    pub fn settings_now(&mut self) {
        self.settings_at = None;
    }

    /// The permalink cache, e.g. to clear it.
    pub fn permalinks(&self) -> &Permalinks {
        &self.permalinks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record at `seq` on post `post`, redirecting to `redirect_to` when given.
    fn record(seq: u64, post: u64, redirect_to: Option<&str>) -> Box<wire::Record> {
        Box::new(wire::Record {
            v: 1,
            epoch: 3,
            seq,
            post_id: post,
            parent: 0,
            author: "Ann".into(),
            email: "ann@example.test".into(),
            url: String::new(),
            content: format!("hi {seq}"),
            ip: "192.0.2.1".into(),
            agent: String::new(),
            accepted_ms: 1_000_000,
            consent: false,
            redirect_to: redirect_to.map(str::to_string),
            node: "n1".into(),
        })
    }

    fn inserted(seq: u64, post: u64, approved: &'static str) -> (u64, Outcome) {
        let record = record(seq, post, None);
        let filtered = crate::format::Filtered {
            author: record.author.clone(),
            email: record.email.clone(),
            url: String::new(),
            content: record.content.clone(),
            ip: record.ip.clone(),
            agent: String::new(),
        };
        let i = crate::store::Inserted {
            id: 100 + seq,
            approved,
            filtered,
            date_gmt: "1970-01-01 00:16:40".into(),
            record,
        };
        (seq, Outcome::Inserted(Box::new(i)))
    }

    #[test]
    fn a_tick_reads_at_most_a_batch_after_the_cursor() {
        let cursor = Cursor { epoch: 3, seq: 10 };
        assert_eq!(batch_range(cursor, 5, 500), 11..=15);
        assert_eq!(batch_range(cursor, 900, 500), 11..=510);
    }

    #[test]
    fn the_posts_of_approved_comments_are_banned_once() {
        let outcomes = [
            inserted(1, 4, "1"),
            inserted(2, 4, "1"),
            inserted(3, 5, "0"),
            inserted(4, 6, "trash"),
            (5, Outcome::Refused(crate::rules::DUPLICATE)),
            (6, Outcome::Skipped("missing")),
            inserted(7, 8, "1"),
        ];
        assert_eq!(posts_to_ban(&outcomes), BTreeSet::from([4, 8]));
        assert_eq!(
            ["1", "0", "spam", "trash"].map(status_label),
            ["approved", "held", "spam", "trash"]
        );
    }

    #[test]
    fn applied_and_unused_positions_are_deleted_and_untrusted_ones_tombstoned() {
        let outcomes = [
            inserted(1, 4, "1"),
            (2, Outcome::Refused(crate::rules::DUPLICATE)),
            (3, Outcome::Skipped("queue-full")),
            (4, Outcome::Skipped("missing")),
            (5, Outcome::Skipped("forged")),
            (6, Outcome::Skipped("unsigned")),
            (7, Outcome::Skipped("misplaced")),
            (8, Outcome::Skipped("unreadable")),
            (9, Outcome::Skipped("unjudged")),
        ];
        assert_eq!(
            cleanup(&outcomes),
            Cleanup {
                delete: vec![1, 2, 3],
                tombstone: vec![5, 6, 7, 8],
            }
        );
    }

    #[test]
    fn verdicts_link_to_posts_unless_redirected() {
        let slots = [
            (1, Slot::Record(record(1, 4, None))),
            (2, Slot::Record(record(2, 5, Some("http://127.0.0.1:8080/elsewhere/")))),
            (3, Slot::Skipped("missing")),
            (4, Slot::Record(record(4, 6, Some("")))),
        ];
        assert_eq!(linked_posts(&slots).collect::<Vec<_>>(), [4, 6]);
    }

    #[test]
    fn a_tick_reads_ahead_twice_the_last_batch_within_bounds() {
        assert_eq!(read_ahead(0, 500), 8);
        assert_eq!(read_ahead(31, 500), 62);
        assert_eq!(read_ahead(400, 500), 500);
        assert_eq!(read_ahead(0, 3), 3);
    }

    #[test]
    fn comment_count_is_recounted_in_a_lull_at_most_every_second_and_at_the_latest_after_a_minute() {
        let t = Instant::now();
        let times = |last: Option<Instant>, pending: Instant, idle: Instant| RecountTimes { last, pending, idle };
        // The queue just emptied: not yet; after a lull: at once.
        assert!(!recount_due(times(None, t, t), t));
        assert!(!recount_due(times(None, t, t), t + RECOUNT_LULL / 2));
        assert!(recount_due(times(None, t, t), t + RECOUNT_LULL));
        // After a recount, the next one at most a second later, lull or not.
        let later = t + RECOUNT_LULL;
        assert!(!recount_due(times(Some(later), later, t), later + RECOUNT_EVERY / 2));
        assert!(recount_due(times(Some(later), later, t), later + RECOUNT_EVERY));
        // A steady stream of comments (never a lull): after a minute of waiting.
        let busy = t + RECOUNT_WAITS_AT_MOST;
        assert!(!recount_due(times(Some(t), t + Duration::from_secs(1), busy), busy));
        assert!(recount_due(times(Some(t), t, busy), busy));
    }
}
