//! Comment POSTs written behind: the form is checked here, queued in memcached for
//! `strata-syncer`, and answered as WordPress would once the syncer's verdict arrives.
//!
//! Lifecycle of a comment (see docs/comments-and-syncer.md#comments-written-behind):
//! 1. `/wp-comments-post.php` POSTs from anonymous visitors come here when `[comments]
//!    enabled`; logged-in users, `wp-postpass_*` cookies, sites that require registration,
//!    a missing syncer (no fresh settings), an unreachable memcached or a queue deeper than
//!    `max_queue` send the POST to PHP unchanged instead.
//! 2. The checks that need no database run here ([`form::check`]): WordPress's own answer
//!    (its error page, or an empty 200) is sent at once.
//! 3. A sequence number is reserved (`incr`, with the queue's epoch and depth read in the
//!    same round trip) and the record written; nothing the visitor sent is dropped from here
//!    on. A number reserved beyond `max_queue` is marked unused ([`wire::QUEUE_FULL`]) and
//!    the POST goes to PHP. Comments that arrive on a worker thread while its writer is busy
//!    are reserved and written together ([`Comments::write_pending`]): two round trips for
//!    the lot.
//! 4. The answer is held `hold` from the POST's acceptance (on [`hold::HoldClock`], to a
//!    fraction of a millisecond), then waits up to `max_hold` (from the same moment) for the
//!    syncer's verdict: a 302 to the comment with WordPress's cookies, the held-for-moderation
//!    redirect, or WordPress's error page. Without a verdict in time: a 302 back to the post
//!    (the comment stays queued and lands when the syncer gets to it).

pub mod form;
pub mod hold;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use strata_wire::comment::{self as wire, Record, Settings, Status, Verdict, VerdictBatch};
use strata_wire::ids::{random_u64, unix_ms};
use strata_wire::memcache::{self, Conn};
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::config::CommentsConfig;
use form::{Early, Form, Submission};
use hold::HoldClock;

/// The page WordPress's `wp_die()` prints for a comment error (6.1), with `{{MESSAGE}}`.
const WP_DIE_PAGE: &str = include_str!("../assets/wp-die.html");
/// First pause between reads of the verdict key; each later pause is one step longer, up to
/// [`MAX_POLL`]: a verdict usually comes within a syncer tick or two, and a hundred waiting
/// visitors must not keep memcached busy.
const POLL: Duration = Duration::from_millis(1);
/// Longest pause between reads of the verdict key (the syncer's default tick).
const MAX_POLL: Duration = Duration::from_millis(5);
/// Pause between reads of the verdict key while the syncer pushes verdicts (a push that
/// went missing is then found this late at most).
const PUSHED_POLL: Duration = Duration::from_millis(25);
/// A push within this long means the syncer pushes.
const PUSH_FRESH: Duration = Duration::from_secs(5);
/// How long fetched settings are reused before they are read again.
const SETTINGS_REFRESH: Duration = Duration::from_secs(1);
/// `comment_cookie_lifetime` in WordPress 6.1.
const COOKIE_LIFETIME: u64 = 30_000_000;
/// The path whose POSTs are comments.
pub const COMMENT_PATH: &str = "/wp-comments-post.php";

thread_local! {
    /// Idle memcached connections of this worker thread (each thread runs its own runtime,
    /// and a connection belongs to the runtime that made it).
    static IDLE: RefCell<Vec<Conn>> = const { RefCell::new(Vec::new()) };
}

/// A worker thread's comments waiting to be written, and whether a writer runs for them.
#[derive(Default)]
struct Pending {
    /// The comments that arrived since the writer last took them, in order.
    jobs: Vec<Job>,
    /// A writer task runs for this thread (a comment arriving meanwhile only joins `jobs`).
    running: bool,
}

/// A comment waiting to be written.
struct Job {
    /// Its record; the writer sets the number and the epoch.
    record: Record,
    /// Where the writer says what became of it.
    done: tokio::sync::oneshot::Sender<Written>,
}

/// What became of a comment handed to the writer.
enum Written {
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

/// Why a comment goes to PHP instead of the queue (metric and log label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToPhp {
    /// A `wordpress_logged_in_*` cookie: WordPress must know the user.
    LoggedIn,
    /// A `wp-postpass_*` cookie: the post may be password protected.
    PostPassword,
    /// The site requires registration to comment.
    Registration,
    /// No settings from a running syncer.
    NoSyncer,
    /// memcached did not answer.
    Memcached,
    /// The queue is deeper than `max_queue`.
    QueueFull,
    /// The body could not be read as a form.
    BadForm,
}

impl ToPhp {
    /// Metric label of a comment sent to PHP for this reason.
    pub fn php_label(self) -> &'static str {
        match self {
            ToPhp::LoggedIn => "php-logged-in",
            ToPhp::PostPassword => "php-post-password",
            ToPhp::Registration => "php-registration",
            ToPhp::NoSyncer => "php-no-syncer",
            ToPhp::Memcached => "php-memcached",
            ToPhp::QueueFull => "php-queue-full",
            ToPhp::BadForm => "php-bad-form",
        }
    }

    /// Label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ToPhp::LoggedIn => "logged-in",
            ToPhp::PostPassword => "post-password",
            ToPhp::Registration => "registration",
            ToPhp::NoSyncer => "no-syncer",
            ToPhp::Memcached => "memcached",
            ToPhp::QueueFull => "queue-full",
            ToPhp::BadForm => "bad-form",
        }
    }
}

/// What became of a comment POST.
pub enum Handled {
    /// Answered here.
    Answer(Response<ProxyBody>, &'static str),
    /// Send the POST, with this body, to PHP.
    ToPhp(ToPhp, Bytes),
}

/// The comment queue side of a proxy.
pub struct Comments {
    cfg: CommentsConfig,
    node: String,
    settings: parking_lot::Mutex<Option<(Instant, Arc<Settings>)>>,
    /// Held answers waiting for their verdict, by (queue epoch, sequence number): a verdict
    /// the syncer pushes ([`Comments::deliver`]) wakes its waiter at once.
    waiters: parking_lot::Mutex<HashMap<(u64, u64), tokio::sync::oneshot::Sender<Verdict>>>,
    /// When a pushed verdict last arrived: while pushes come, the verdict keys are read
    /// rarely (a safety net), not every few milliseconds.
    pushed_at: parking_lot::Mutex<Option<Instant>>,
    /// Whether the next reservation reads the queue's depth before it reserves (the queue
    /// was last seen more than half `max_queue` deep, or not seen yet), rather than in the
    /// same round trip: near the bound no number is reserved while the queue is full, so a
    /// stopped syncer does not fill the queue with [`wire::QUEUE_FULL`] marks.
    check_first: AtomicBool,
    /// Comments waiting for their number and their record's write, by the worker thread
    /// they arrived on (see [`Comments::write_pending`]).
    pending: parking_lot::Mutex<HashMap<std::thread::ThreadId, Pending>>,
    /// Comments queued since the proxy started, and its change announced to the syncers
    /// waiting on `/comments/queued` ([`Comments::queued_since`]).
    queued: AtomicU64,
    queued_changed: tokio::sync::Notify,
    /// Ends the holds on time: tokio's millisecond timer overshot a 5 ms hold by a quarter.
    hold: HoldClock,
}

/// Removes a waiter when its answer is done, whichever way.
struct Waiting<'a> {
    waiters: &'a parking_lot::Mutex<HashMap<(u64, u64), tokio::sync::oneshot::Sender<Verdict>>>,
    key: (u64, u64),
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waiters.lock().remove(&self.key);
    }
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

/// Whether the request carries a cookie whose name starts with `prefix`.
fn has_cookie(headers: &HeaderMap, prefix: &str) -> bool {
    crate::policy::cookie_names(headers).any(|n| n.starts_with(prefix))
}

/// The address PHP would see as `REMOTE_ADDR`: the client, or, when the client is a trusted
/// proxy, the last address in `X-Forwarded-For` that is not one.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    chain
        .iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .copied()
        .unwrap_or(peer)
}

/// PHP's `urlencode()`, as `setcookie()` applies it to values.
fn php_urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One `Set-Cookie` as PHP's `setcookie()` writes it.
fn php_cookie(name: &str, value: &str, expires: Option<u64>, settings: &Settings, now: u64) -> String {
    let secure = if settings.secure { "; secure" } else { "" };
    match expires {
        _ if value.is_empty() => {
            format!(
                "{name}=deleted; expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; path={}{secure}",
                settings.cookie_path
            )
        }
        Some(at) => {
            let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(at));
            format!(
                "{name}={}; expires={date}; Max-Age={}; path={}{secure}",
                php_urlencode(value),
                at.saturating_sub(now),
                settings.cookie_path
            )
        }
        None => format!("{name}={}; path={}{secure}", php_urlencode(value), settings.cookie_path),
    }
}

/// The `comment_author_*` cookies WordPress sets after a comment: the values with consent,
/// else the three deleted (set to a space, expired a year ago).
pub fn comment_cookies(
    settings: &Settings,
    consent: bool,
    author: &str,
    email: &str,
    url: &str,
    now: u64,
) -> Vec<String> {
    let h = &settings.cookiehash;
    let names = [
        format!("comment_author_{h}"),
        format!("comment_author_email_{h}"),
        format!("comment_author_url_{h}"),
    ];
    if consent {
        let at = now + COOKIE_LIFETIME;
        names
            .iter()
            .zip([author, email, url])
            .map(|(n, v)| php_cookie(n, v, Some(at), settings, now))
            .collect()
    } else {
        let past = now.saturating_sub(365 * 24 * 3600);
        names
            .iter()
            .map(|n| php_cookie(n, " ", Some(past), settings, now))
            .collect()
    }
}

/// Headers every WordPress comment answer carries (`nocache_headers()`).
fn nocache(resp: &mut Response<ProxyBody>) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    h.insert(
        header::EXPIRES,
        HeaderValue::from_static("Wed, 11 Jan 1984 05:00:00 GMT"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, must-revalidate, max-age=0"),
    );
}

/// WordPress's error page for a comment, with its status.
pub fn error_page(status: u16, message: &str) -> Response<ProxyBody> {
    let body = WP_DIE_PAGE.replacen("{{MESSAGE}}", message, 1);
    let mut r = Response::new(ProxyBody::full(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    nocache(&mut r);
    r
}

/// WordPress's bare `exit`: an empty 200.
pub fn empty_answer() -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::Empty);
    nocache(&mut r);
    r
}

/// A 302 as `wp_safe_redirect()` sends it, with cookies.
fn redirect(location: &str, cookies: &[String]) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::Empty);
    *r.status_mut() = StatusCode::FOUND;
    nocache(&mut r);
    let h = r.headers_mut();
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    h.insert("x-redirect-by", HeaderValue::from_static("WordPress"));
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    r
}

/// The answer for a verdict, as WordPress would have sent it.
pub fn answer(v: &Verdict, s: &Submission, settings: &Settings, now: u64) -> (Response<ProxyBody>, &'static str) {
    match v.status {
        Status::Approved | Status::Held | Status::Spam | Status::Trash => {
            let cookies = comment_cookies(
                settings,
                s.consent,
                v.cookie_author.as_deref().unwrap_or(&s.author),
                v.cookie_email.as_deref().unwrap_or(&s.email),
                v.cookie_url.as_deref().unwrap_or(&s.url),
                now,
            );
            let location = v.location.clone().unwrap_or_else(|| back_to_post(settings, s));
            let label = match v.status {
                Status::Approved => "approved",
                Status::Held => "held",
                Status::Spam => "spam",
                _ => "trash",
            };
            (redirect(&location, &cookies), label)
        }
        Status::Rejected => (error_page(v.http, &v.message), "rejected"),
        Status::Ignored => (empty_answer(), "ignored"),
    }
}

/// Where a visitor goes when no verdict came in time: back to the post.
fn back_to_post(settings: &Settings, s: &Submission) -> String {
    match &s.redirect_to {
        Some(r) => r.clone(),
        None => format!("{}/?p={}", settings.home.trim_end_matches('/'), s.post_id),
    }
}

impl Comments {
    /// The comment queue for a configuration.
    pub fn new(cfg: &CommentsConfig, node: &str) -> Comments {
        Comments {
            cfg: cfg.clone(),
            node: node.to_string(),
            settings: parking_lot::Mutex::new(None),
            waiters: parking_lot::Mutex::new(HashMap::new()),
            pushed_at: parking_lot::Mutex::new(None),
            check_first: AtomicBool::new(true),
            pending: parking_lot::Mutex::new(HashMap::new()),
            queued: AtomicU64::new(0),
            queued_changed: tokio::sync::Notify::new(),
            hold: HoldClock::default(),
        }
    }

    /// Counts `n` comments just queued and wakes the syncers waiting for one.
    fn announce_queued(&self, n: u64) {
        if n > 0 {
            self.queued.fetch_add(n, Ordering::AcqRel);
            self.queued_changed.notify_waiters();
        }
    }

    /// How many comments this proxy queued since it started: at once when that is not
    /// `since` (or without `since`), else once it queues the next one or `wait` passed.
    pub async fn queued_since(&self, since: Option<u64>, wait: Duration) -> u64 {
        let changed = self.queued_changed.notified();
        tokio::pin!(changed);
        // Registered before the count is read: a comment queued in between still wakes it.
        changed.as_mut().enable();
        let now = self.queued.load(Ordering::Acquire);
        if since != Some(now) {
            return now;
        }
        let _ = tokio::time::timeout(wait, changed).await;
        self.queued.load(Ordering::Acquire)
    }

    /// Hands pushed verdicts to the answers waiting for them; returns the sequence numbers
    /// handed over (the others belong to other nodes, or to answers already given). An
    /// answer waits from before its record is written, so a verdict not handed over here
    /// has no waiter on this node.
    pub fn deliver(&self, batch: VerdictBatch) -> Vec<u64> {
        *self.pushed_at.lock() = Some(Instant::now());
        let mut waiters = self.waiters.lock();
        let mut delivered = Vec::new();
        for v in batch.verdicts {
            if let Some(tx) = waiters.remove(&(batch.epoch, v.seq)) {
                let seq = v.seq;
                if tx.send(v).is_ok() {
                    delivered.push(seq);
                }
            }
        }
        delivered
    }

    /// Whether verdicts are being pushed (one arrived within [`PUSH_FRESH`]).
    fn pushing(&self) -> bool {
        self.pushed_at.lock().is_some_and(|t| t.elapsed() < PUSH_FRESH)
    }

    /// How long to wait before reading the verdict key again: growing pauses up to
    /// [`MAX_POLL`], or [`PUSHED_POLL`] while the syncer pushes verdicts.
    fn next_pause(&self, pause: Duration) -> Duration {
        if self.pushing() {
            PUSHED_POLL
        } else {
            (pause + POLL).min(MAX_POLL)
        }
    }

    /// Whether comment POSTs are written behind.
    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// Runs `f` with a pooled connection of this thread; a failed exchange drops it.
    async fn with_conn<T>(
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

    /// The syncer's published settings, when fresh.
    async fn settings(&self) -> Result<Option<Arc<Settings>>, memcache::Error> {
        if let Some((at, s)) = self.settings.lock().as_ref() {
            if at.elapsed() < SETTINGS_REFRESH {
                return Ok(Some(s.clone()));
            }
        }
        let key = wire::settings_key(&self.cfg.key_prefix);
        let raw = self.with_conn(async |c| c.get(&key).await).await?;
        let parsed = raw.and_then(|b| match serde_json::from_slice::<Settings>(&b) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable comment settings in memcached");
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
    async fn write_pending(self: Arc<Self>, thread: std::thread::ThreadId) {
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
                tracing::warn!(error = %e, comments = jobs.len(), "memcached unavailable; comments passed to PHP");
                for job in jobs {
                    let _ = job.done.send(Written::ToPhp(ToPhp::Memcached));
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
            let json = serde_json::to_vec(&job.record).unwrap_or_default();
            writes.push((job.done, seq, key, json, pushed));
        }
        // The numbers are reserved: the records are written with `add`, retrying, so that
        // none is lost. `add` fails when the syncer gave up waiting for a number and marked
        // it skipped: that comment then goes to PHP rather than vanish. After a failed
        // attempt a record may already be ours: an `add` that fails is checked against it.
        let mut written: Vec<Option<bool>> = vec![None; writes.len()];
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
                    let mut stored = c.add_many(&items).await?;
                    let refused: Vec<usize> = (0..items.len()).filter(|j| !stored[*j]).collect();
                    if attempt > 0 && !refused.is_empty() {
                        let keys: Vec<&str> = refused.iter().map(|j| items[*j].0).collect();
                        let found = c.get_many(&keys).await?;
                        for (j, value) in refused.iter().zip(found) {
                            stored[*j] = value.as_deref() == Some(items[*j].1);
                        }
                    }
                    Ok(stored)
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
        self.announce_queued(written.iter().filter(|w| **w == Some(true)).count() as u64);
        for ((done, seq, _, _, pushed), ok) in writes.into_iter().zip(written) {
            let result = match ok {
                Some(true) => Written::Queued { seq, epoch, pushed },
                Some(false) => {
                    tracing::warn!(
                        seq,
                        "queue position already taken (skipped by the syncer); comment passed to PHP"
                    );
                    Written::ToPhp(ToPhp::Memcached)
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

    /// Handles one comment POST whose body was read.
    pub async fn handle(
        self: &Arc<Self>,
        headers: &HeaderMap,
        body: Bytes,
        peer: SocketAddr,
        metrics: &crate::metrics::Metrics,
    ) -> Handled {
        if has_cookie(headers, "wordpress_logged_in_") {
            return Handled::ToPhp(ToPhp::LoggedIn, body);
        }
        if has_cookie(headers, "wp-postpass_") {
            return Handled::ToPhp(ToPhp::PostPassword, body);
        }
        let settings = match self.settings().await {
            Ok(Some(s)) => s,
            Ok(None) => return Handled::ToPhp(ToPhp::NoSyncer, body),
            Err(e) => {
                tracing::warn!(error = %e, "memcached unavailable; comment passed to PHP");
                return Handled::ToPhp(ToPhp::Memcached, body);
            }
        };
        if settings.comment_registration {
            return Handled::ToPhp(ToPhp::Registration, body);
        }
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let form = match Form::parse(ct, &body) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "comment body is not a form; passed to PHP");
                return Handled::ToPhp(ToPhp::BadForm, body);
            }
        };
        let sub = match form::check(&form, &settings) {
            Ok(s) => s,
            Err(Early::Empty) => return Handled::Answer(empty_answer(), "ignored"),
            Err(Early::Error(status, msg)) => return Handled::Answer(error_page(status, msg), "rejected-early"),
        };
        let agent = headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let mut agent_bytes = agent.into_bytes();
        agent_bytes.truncate(254);
        let record = Record {
            v: wire::RECORD_VERSION,
            epoch: 0,
            seq: 0,
            post_id: sub.post_id,
            parent: sub.parent,
            author: sub.author.clone(),
            email: sub.email.clone(),
            url: sub.url.clone(),
            content: sub.content.clone(),
            ip: client_ip(peer.ip(), headers, &self.cfg.trusted_proxies).to_string(),
            agent: String::from_utf8_lossy(&agent_bytes).into_owned(),
            accepted_ms: unix_ms(),
            consent: sub.consent,
            redirect_to: sub.redirect_to.clone(),
            node: self.node.clone(),
        };
        let accepted = Instant::now();
        // The record joins this thread's waiting comments; a writer starts if none runs.
        let (done, written) = tokio::sync::oneshot::channel();
        let thread = std::thread::current().id();
        let start = {
            let mut pending = self.pending.lock();
            let p = pending.entry(thread).or_default();
            p.jobs.push(Job { record, done });
            !std::mem::replace(&mut p.running, true)
        };
        if start {
            tokio::spawn(self.clone().write_pending(thread));
        }
        let (seq, epoch, mut pushed) = match written.await {
            Ok(Written::Queued { seq, epoch, pushed }) => (seq, epoch, pushed),
            Ok(Written::ToPhp(why)) => return Handled::ToPhp(why, body),
            Err(_) => {
                tracing::error!("the comment writer stopped; comment passed to PHP");
                return Handled::ToPhp(ToPhp::Memcached, body);
            }
        };
        let _waiting = Waiting {
            waiters: &self.waiters,
            key: (epoch, seq),
        };
        metrics.comment("queued");
        tracing::debug!(seq, post = sub.post_id, "comment queued");
        // Held `hold` from the POST's acceptance, as `max_hold` is counted: the time spent
        // queueing the record is part of it.
        self.hold.until((accepted + self.cfg.hold).into_std()).await;
        let vkey = wire::verdict_key(&self.cfg.key_prefix, seq);
        let deadline = accepted + self.cfg.max_hold.max(self.cfg.hold);
        let mut pause = POLL;
        let respond = |v: &Verdict| {
            metrics
                .comments
                .verdict_latency
                .observe(accepted.elapsed().as_secs_f64());
            let (resp, label) = answer(v, &sub, &settings, unix_ms() / 1000);
            Handled::Answer(resp, label)
        };
        // While the syncer pushes, the key is first read after a pause, not at once: the
        // push usually comes first, and the read is only a safety net.
        let mut read_key = !self.pushing();
        loop {
            if let Ok(v) = pushed.try_recv() {
                return respond(&v);
            }
            let got = if read_key {
                self.with_conn(async |c| c.get(&vkey).await).await
            } else {
                Ok(None)
            };
            read_key = true;
            match got {
                Ok(Some(b)) => match serde_json::from_slice::<Verdict>(&b) {
                    Ok(v) => return respond(&v),
                    Err(e) => {
                        tracing::warn!(error = %e, seq, "unreadable verdict");
                        break;
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, seq, "reading a verdict failed");
                    break;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            pause = self.next_pause(pause);
            let wake = (Instant::now() + pause).min(deadline);
            tokio::select! {
                v = &mut pushed => {
                    if let Ok(v) = v {
                        return respond(&v);
                    }
                    tokio::time::sleep_until(wake).await;
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        // Queued, no verdict yet: back to the post; the comment lands when the syncer gets to it.
        let now = unix_ms() / 1000;
        let cookies = comment_cookies(&settings, sub.consent, &sub.author, &sub.email, &sub.url, now);
        Handled::Answer(redirect(&back_to_post(&settings, &sub), &cookies), "no-verdict")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comments() -> Comments {
        let cfg = CommentsConfig {
            enabled: true,
            memcached: vec!["127.0.0.1:1".into()],
            hold: Duration::from_millis(5),
            max_hold: Duration::from_millis(200),
            key_prefix: "t:".into(),
            max_queue: 10,
            trusted_proxies: Vec::new(),
            settings_max_age: Duration::from_secs(10),
            memcached_timeout: Duration::from_millis(100),
        };
        Comments::new(&cfg, "n1")
    }

    fn verdict(seq: u64) -> Verdict {
        Verdict {
            seq,
            status: Status::Approved,
            http: 302,
            message: String::new(),
            comment_id: Some(seq + 100),
            location: None,
            cookie_author: None,
            cookie_email: None,
            cookie_url: None,
        }
    }

    #[tokio::test]
    async fn a_wait_for_queued_comments_ends_with_the_next_one() {
        let c = Arc::new(comments());
        assert_eq!(c.queued_since(None, Duration::from_secs(30)).await, 0);
        assert_eq!(c.queued_since(Some(5), Duration::from_secs(30)).await, 0);
        assert_eq!(c.queued_since(Some(0), Duration::from_millis(1)).await, 0);
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.queued_since(Some(0), Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        c.announce_queued(0);
        c.announce_queued(2);
        let n = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(n.expect("woken by the comments").unwrap(), 2);
    }

    #[tokio::test]
    async fn pushed_verdicts_wake_their_waiters_and_only_theirs() {
        let c = comments();
        let (tx, rx) = tokio::sync::oneshot::channel();
        c.waiters.lock().insert((7, 3), tx);
        let (other_tx, mut other_rx) = tokio::sync::oneshot::channel();
        c.waiters.lock().insert((7, 4), other_tx);
        // Another epoch's seq 3, seq 3 of this epoch, and one nobody waits for here.
        let batch = VerdictBatch {
            epoch: 7,
            verdicts: vec![verdict(3), verdict(9)],
        };
        assert_eq!(
            c.deliver(VerdictBatch {
                epoch: 6,
                verdicts: vec![verdict(4)]
            }),
            Vec::<u64>::new()
        );
        assert_eq!(c.deliver(batch), vec![3]);
        assert_eq!(rx.await.unwrap().comment_id, Some(103));
        assert!(other_rx.try_recv().is_err());
        assert_eq!(c.waiters.lock().len(), 1);
        // While pushes come, the verdict key is read rarely.
        assert!(c.pushing());
        assert_eq!(c.next_pause(POLL), PUSHED_POLL);
    }

    #[test]
    fn without_pushes_the_verdict_key_is_read_with_growing_pauses() {
        let c = comments();
        assert!(!c.pushing());
        assert_eq!(c.next_pause(POLL), POLL * 2);
        assert_eq!(c.next_pause(MAX_POLL), MAX_POLL);
    }

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
            comments().check_first.load(Ordering::Relaxed),
            "the first reservation checks first"
        );
    }

    fn settings() -> Settings {
        Settings {
            require_name_email: true,
            comment_registration: false,
            cookies_opt_in: true,
            cookiehash: "ef301f25d1b8e2bca70fafc1316f1a92".into(),
            cookie_path: "/".into(),
            secure: false,
            home: "http://127.0.0.1:8080".into(),
            max_lengths: [245, 100, 200, 65525],
            published_ms: 0,
        }
    }

    #[test]
    fn cookies_are_written_as_php_writes_them() {
        let now = 1_795_701_343; // 2026-11-26T13:55:43Z, as a real WordPress answer was dated
        let c = comment_cookies(&settings(), true, "A b", "a@example.com", "", now);
        assert_eq!(
            c[0],
            "comment_author_ef301f25d1b8e2bca70fafc1316f1a92=A+b; expires=Mon, 08 Nov 2027 19:15:43 GMT; Max-Age=30000000; path=/"
        );
        assert!(c[1].starts_with("comment_author_email_ef301f25d1b8e2bca70fafc1316f1a92=a%40example.com; "));
        assert_eq!(
            c[2],
            "comment_author_url_ef301f25d1b8e2bca70fafc1316f1a92=deleted; expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; path=/"
        );
        let gone = comment_cookies(&settings(), false, "A", "a@example.com", "", now);
        assert!(
            gone.iter()
                .all(|c| c.contains("=+; expires=") && c.contains("Max-Age=0")),
            "{gone:?}"
        );
    }

    #[test]
    fn answers_follow_the_verdict() {
        let sub = Submission {
            post_id: 5,
            parent: 0,
            author: "A".into(),
            email: "a@example.com".into(),
            url: String::new(),
            content: "x".into(),
            consent: false,
            redirect_to: None,
        };
        let v = Verdict {
            seq: 1,
            status: Status::Held,
            http: 302,
            message: String::new(),
            comment_id: Some(9),
            location: Some("http://127.0.0.1:8080/p/?unapproved=9&moderation-hash=ab#comment-9".into()),
            cookie_author: Some("A".into()),
            cookie_email: Some("a@example.com".into()),
            cookie_url: Some(String::new()),
        };
        let (r, label) = answer(&v, &sub, &settings(), 0);
        assert_eq!((r.status(), label), (StatusCode::FOUND, "held"));
        assert_eq!(
            r.headers()["location"],
            "http://127.0.0.1:8080/p/?unapproved=9&moderation-hash=ab#comment-9"
        );
        assert_eq!(r.headers()["x-redirect-by"], "WordPress");
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 3);
        let rejected = Verdict {
            status: Status::Rejected,
            http: 409,
            message: "Duplicate comment detected; it looks as though you&#8217;ve already said that!".into(),
            ..v
        };
        let (r, label) = answer(&rejected, &sub, &settings(), 0);
        assert_eq!((r.status(), label), (StatusCode::CONFLICT, "rejected"));
        assert_eq!(back_to_post(&settings(), &sub), "http://127.0.0.1:8080/?p=5");
    }

    #[test]
    fn the_error_page_is_wordpress_own() {
        let r = error_page(403, "Sorry, comments are closed for this item.");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(WP_DIE_PAGE.contains("<title>Comment Submission Failure</title>"));
        assert_eq!(r.headers()["cache-control"], "no-cache, must-revalidate, max-age=0");
    }

    #[test]
    fn client_addresses_come_from_trusted_proxies_only() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 198.51.100.7".parse().unwrap());
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &[]), peer);
        let trusted: Vec<IpAddr> = vec![peer, "198.51.100.7".parse().unwrap()];
        assert_eq!(client_ip(peer, &h, &trusted), "203.0.113.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn php_urlencode_matches() {
        assert_eq!(php_urlencode("a b@c.d/é~"), "a+b%40c.d%2F%C3%A9%7E");
    }
}
