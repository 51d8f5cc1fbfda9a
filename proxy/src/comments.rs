//! Comment POSTs written behind: the form is checked here, queued in memcached for
//! `strata-syncer`, and answered as WordPress would once the syncer's verdict arrives.
//!
//! Lifecycle of a comment (see docs/comments-and-syncer.md#comments-written-behind):
//! 1. `/wp-comments-post.php` POSTs from anonymous visitors come here when `[comments]
//!    enabled`; logged-in users, `wp-postpass_*` cookies, sites that require registration,
//!    a missing syncer (no fresh settings), an unreachable memcached or a queue deeper than
//!    `max_queue` send the POST to PHP unchanged instead; so does a memcached out of memory
//!    when the record is written.
//! 2. The checks that need no database run here ([`form::check`]): WordPress's own answer
//!    (its error page, or an empty 200) is sent at once.
//! 3. A sequence number is reserved (`incr`, with the queue's epoch and depth read in the
//!    same round trip) and the record written; nothing the visitor sent is dropped from here
//!    on. A number reserved beyond `max_queue` is marked unused ([`wire::QUEUE_FULL`]) and
//!    the POST goes to PHP. Comments that arrive on a worker thread while its writer is busy
//!    are reserved and written together ([`Comments::write_pending`]): two round trips for
//!    the lot.
//!    Records are sealed with the cluster secret ([`wire::seal`]); the syncer's settings and
//!    verdicts are read only when sealed with it (anything else is ignored, logged and
//!    counted): memcached authenticates nobody.
//! 4. The answer is held `hold` from the POST's acceptance (on [`hold::HoldClock`], to a
//!    fraction of a millisecond), then waits up to `max_hold` (from the same moment) for the
//!    syncer's verdict: a 302 to the comment with WordPress's cookies, the held-for-moderation
//!    redirect, or WordPress's error page. Without a verdict in time: a 302 back to the post
//!    (the comment stays queued and lands when the syncer gets to it).

pub mod form;
pub mod hold;
mod queue;
mod reply;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::Response;
use strata_wire::comment::{self as wire, Record, Settings, Verdict, VerdictBatch};
use strata_wire::ids::{random_u64, unix_ms};
use strata_wire::memcache::{self, Conn};
use tokio::time::Instant;

use crate::allow::{any_contains, IpNet};
use crate::body::ProxyBody;
use crate::config::CommentsConfig;
use form::{Early, Form, Submission};
use hold::HoldClock;
use queue::{Job, Pending, Written};
pub use reply::{answer, comment_cookies, empty_answer, error_page};
use reply::{back_to_post, redirect};

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
/// The path whose POSTs are comments.
pub const COMMENT_PATH: &str = "/wp-comments-post.php";

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
    /// memcached had no room for the record (out of memory: it is run with `-M`, so it
    /// refuses new values rather than evict queued comments).
    MemcachedFull,
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
            ToPhp::MemcachedFull => "php-memcached-full",
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
            ToPhp::MemcachedFull => "memcached-full",
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
    /// The cluster secret: seals the records written, opens the settings and verdicts read.
    secret: Vec<u8>,
    settings: parking_lot::Mutex<Option<(Instant, Arc<Settings>)>>,
    /// When settings not sealed with the secret were last read: for [`SETTINGS_REFRESH`]
    /// after, they are not read again (nor logged).
    settings_refused: parking_lot::Mutex<Option<Instant>>,
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

/// Whether the request carries a cookie whose name starts with `prefix`.
fn has_cookie(headers: &HeaderMap, prefix: &str) -> bool {
    crate::policy::cookie_names(headers).any(|n| n.starts_with(prefix))
}

/// The address PHP would see as `REMOTE_ADDR`: the client, or, when the client is a trusted
/// proxy, the last address in `X-Forwarded-For` that is not one.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !any_contains(trusted, peer) {
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
        .find(|&&ip| !any_contains(trusted, ip))
        .copied()
        .unwrap_or(peer)
}

/// What the checks that need no database decide about a comment POST.
enum Screened {
    /// A comment to queue.
    Queue(Submission),
    /// WordPress's own answer, given at once (an empty 200, or its error page).
    Answer(Response<ProxyBody>, &'static str),
    /// To PHP, for this reason.
    ToPhp(ToPhp),
}

/// Whether the visitor must be known to WordPress (logged in, or a password-protected
/// post's cookie), so that the POST goes to PHP whatever the form says.
fn visitor_to_php(headers: &HeaderMap) -> Option<ToPhp> {
    if has_cookie(headers, "wordpress_logged_in_") {
        Some(ToPhp::LoggedIn)
    } else if has_cookie(headers, "wp-postpass_") {
        Some(ToPhp::PostPassword)
    } else {
        None
    }
}

/// The comment form screened as WordPress screens it before its database is asked, under
/// the syncer's published `settings`.
fn screen(headers: &HeaderMap, body: &[u8], settings: &Settings) -> Screened {
    if settings.comment_registration {
        return Screened::ToPhp(ToPhp::Registration);
    }
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let form = match Form::parse(ct, body) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(error = %e, "comment body is not a form; passed to PHP");
            return Screened::ToPhp(ToPhp::BadForm);
        }
    };
    match form::check(&form, settings) {
        Ok(sub) => Screened::Queue(sub),
        Err(Early::Empty) => Screened::Answer(empty_answer(), "ignored"),
        Err(Early::Error(status, msg)) => Screened::Answer(error_page(status, msg), "rejected-early"),
    }
}

/// The queue record of a screened comment from `ip`, accepted at `accepted_ms` by `node`;
/// the writer sets its number and epoch.
fn record(sub: &Submission, headers: &HeaderMap, ip: IpAddr, node: &str, accepted_ms: u64) -> Record {
    let agent = headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let mut agent_bytes = agent.into_bytes();
    agent_bytes.truncate(254);
    Record {
        v: wire::RECORD_VERSION,
        epoch: 0,
        seq: 0,
        post_id: sub.post_id,
        parent: sub.parent,
        author: sub.author.clone(),
        email: sub.email.clone(),
        url: sub.url.clone(),
        content: sub.content.clone(),
        ip: ip.to_string(),
        agent: String::from_utf8_lossy(&agent_bytes).into_owned(),
        accepted_ms,
        consent: sub.consent,
        redirect_to: sub.redirect_to.clone(),
        node: node.to_string(),
    }
}

/// The answer for a comment queued without a verdict in time: back to the post, with the
/// visitor's cookies; the comment lands when the syncer gets to it.
fn no_verdict(settings: &Settings, sub: &Submission, now: u64) -> Response<ProxyBody> {
    let cookies = comment_cookies(settings, sub.consent, &sub.author, &sub.email, &sub.url, now);
    redirect(&back_to_post(settings, sub), &cookies)
}

impl Comments {
    /// The comment queue for a configuration, on node `node`, sealed with the cluster
    /// `secret`.
    pub fn new(cfg: &CommentsConfig, node: &str, secret: &[u8]) -> Comments {
        Comments {
            cfg: cfg.clone(),
            node: node.to_string(),
            secret: secret.to_vec(),
            settings: parking_lot::Mutex::new(None),
            settings_refused: parking_lot::Mutex::new(None),
            waiters: parking_lot::Mutex::new(HashMap::new()),
            pushed_at: parking_lot::Mutex::new(None),
            check_first: AtomicBool::new(true),
            pending: parking_lot::Mutex::new(HashMap::new()),
            queued: AtomicU64::new(0),
            queued_changed: tokio::sync::Notify::new(),
            hold: HoldClock::default(),
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

    /// Handles one comment POST whose body was read: screened here, queued, held, and
    /// answered with the syncer's verdict, or handed to PHP (with its body) when it cannot be
    /// written behind.
    pub async fn handle(
        self: &Arc<Self>,
        headers: &HeaderMap,
        body: Bytes,
        peer: SocketAddr,
        metrics: &crate::metrics::Metrics,
    ) -> Handled {
        if let Some(why) = visitor_to_php(headers) {
            return Handled::ToPhp(why, body);
        }
        let settings = match self.settings(metrics).await {
            Ok(Some(s)) => s,
            Ok(None) => return Handled::ToPhp(ToPhp::NoSyncer, body),
            Err(e) => {
                tracing::warn!(error = %e, "memcached unavailable; comment passed to PHP");
                return Handled::ToPhp(ToPhp::Memcached, body);
            }
        };
        let sub = match screen(headers, &body, &settings) {
            Screened::Queue(sub) => sub,
            Screened::Answer(resp, label) => return Handled::Answer(resp, label),
            Screened::ToPhp(why) => return Handled::ToPhp(why, body),
        };
        let ip = client_ip(peer.ip(), headers, &self.cfg.trusted_proxies);
        let record = record(&sub, headers, ip, &self.node, unix_ms());
        let accepted = Instant::now();
        let (seq, epoch, pushed) = match self.enqueue(record).await {
            Ok(queued) => queued,
            Err(why) => return Handled::ToPhp(why, body),
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
        let deadline = accepted + self.cfg.max_hold.max(self.cfg.hold);
        match self.verdict(epoch, seq, pushed, deadline, metrics).await {
            Some(v) => {
                metrics
                    .comments
                    .verdict_latency
                    .observe(accepted.elapsed().as_secs_f64());
                let (resp, label) = answer(&v, &sub, &settings, unix_ms() / 1000);
                Handled::Answer(resp, label)
            }
            None => Handled::Answer(no_verdict(&settings, &sub, unix_ms() / 1000), "no-verdict"),
        }
    }

    /// Hands a record to this thread's writer (starting one if none runs) and waits until
    /// it is written: its number, its queue's epoch and the receiver of its pushed verdict,
    /// or why it goes to PHP instead.
    async fn enqueue(
        self: &Arc<Self>,
        record: Record,
    ) -> Result<(u64, u64, tokio::sync::oneshot::Receiver<Verdict>), ToPhp> {
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
        match written.await {
            Ok(Written::Queued { seq, epoch, pushed }) => Ok((seq, epoch, pushed)),
            Ok(Written::ToPhp(why)) => Err(why),
            Err(_) => {
                tracing::error!("the comment writer stopped; comment passed to PHP");
                Err(ToPhp::Memcached)
            }
        }
    }

    /// Waits until `deadline` for the verdict on comment `seq` of queue `epoch`: pushed by
    /// the syncer, or read from its memcached key at growing pauses. `None` when none came
    /// in time, or the key could not be read. A value there not sealed with the cluster
    /// secret for this key is ignored (logged once, counted each time it is read): the
    /// wait goes on for the syncer's.
    async fn verdict(
        &self,
        epoch: u64,
        seq: u64,
        mut pushed: tokio::sync::oneshot::Receiver<Verdict>,
        deadline: Instant,
        metrics: &crate::metrics::Metrics,
    ) -> Option<Verdict> {
        let vkey = wire::verdict_key(&self.cfg.key_prefix, epoch, seq);
        let mut pause = POLL;
        // While the syncer pushes, the key is first read after a pause, not at once: the
        // push usually comes first, and the read is only a safety net.
        let mut read_key = !self.pushing();
        // Whether an untrusted value at the key was logged already.
        let mut refused = false;
        loop {
            if let Ok(v) = pushed.try_recv() {
                return Some(v);
            }
            let got = if read_key {
                self.with_conn(async |c| c.get(&vkey).await).await
            } else {
                Ok(None)
            };
            read_key = true;
            match got {
                Ok(Some(b)) => match wire::unseal_json::<Verdict>(&self.secret, &vkey, &b) {
                    Ok(v) => return Some(v),
                    Err(e) => {
                        metrics.comment_untrusted("verdict", e.as_str());
                        if !refused {
                            tracing::warn!(error = %e, seq, epoch, "verdict not sealed with the cluster secret; ignored");
                            refused = true;
                        }
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, seq, "reading a verdict failed");
                    return None;
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            pause = self.next_pause(pause);
            let wake = (Instant::now() + pause).min(deadline);
            tokio::select! {
                v = &mut pushed => {
                    if let Ok(v) = v {
                        return Some(v);
                    }
                    tokio::time::sleep_until(wake).await;
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use strata_wire::comment::Status;

    pub(super) fn comments() -> Comments {
        let cfg = CommentsConfig {
            enabled: true,
            memcached: vec!["127.0.0.1:1".into()],
            hold: Duration::from_millis(5),
            max_hold: Duration::from_millis(200),
            key_prefix: "t:".into(),
            max_queue: 10,
            patch_pages: true,
            patch_check_interval: Duration::from_secs(10),
            patch_check_rate: 2,
            trusted_proxies: Vec::new(),
            settings_max_age: Duration::from_secs(10),
            memcached_timeout: Duration::from_millis(100),
        };
        Comments::new(&cfg, "n1", b"0123456789abcdef")
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
    fn client_addresses_come_from_trusted_proxies_only() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 198.51.100.7".parse().unwrap());
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &[]), peer);
        let trusted: Vec<IpNet> = vec![peer.into(), "198.51.100.0/24".parse().unwrap()];
        assert_eq!(client_ip(peer, &h, &trusted), "203.0.113.9".parse::<IpAddr>().unwrap());
        // The peer seen on an IPv6 socket as its IPv4-mapped address is still trusted.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            client_ip(mapped, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    fn site() -> Settings {
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

    fn form_headers(extra: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        for (k, v) in extra {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    const GOOD: &[u8] = b"comment_post_ID=5&comment_parent=2&author=A%20%3C%20b&email=a%40example.com&url=&comment=Hello&wp-comment-cookies-consent=yes";

    #[test]
    fn logged_in_and_post_password_visitors_go_to_php() {
        let h = |c: &str| form_headers(&[("cookie", c)]);
        assert_eq!(visitor_to_php(&h("wordpress_logged_in_abc=x")), Some(ToPhp::LoggedIn));
        assert_eq!(visitor_to_php(&h("a=1; wp-postpass_abc=x")), Some(ToPhp::PostPassword));
        assert_eq!(visitor_to_php(&h("comment_author_abc=A")), None);
        assert_eq!(visitor_to_php(&HeaderMap::new()), None);
    }

    #[test]
    fn the_form_is_screened_as_wordpress_screens_it() {
        let h = form_headers(&[]);
        match screen(&h, GOOD, &site()) {
            Screened::Queue(sub) => {
                assert_eq!((sub.post_id, sub.parent), (5, 2));
                assert_eq!((sub.email.as_str(), sub.content.as_str()), ("a@example.com", "Hello"));
                assert!(sub.consent);
            }
            _ => panic!("a good comment is queued"),
        }
        let registration = Settings {
            comment_registration: true,
            ..site()
        };
        assert!(matches!(
            screen(&h, GOOD, &registration),
            Screened::ToPhp(ToPhp::Registration)
        ));
        let mut no_boundary = HeaderMap::new();
        no_boundary.insert(header::CONTENT_TYPE, "multipart/form-data".parse().unwrap());
        assert!(matches!(
            screen(&no_boundary, GOOD, &site()),
            Screened::ToPhp(ToPhp::BadForm)
        ));
        assert!(matches!(
            screen(&h, b"comment_post_ID=0&comment=x", &site()),
            Screened::Answer(_, "ignored")
        ));
        match screen(&h, b"comment_post_ID=5&comment=x", &site()) {
            Screened::Answer(r, "rejected-early") => assert_eq!(r.status(), StatusCode::OK),
            _ => panic!("a comment without name and email gets WordPress's error page"),
        }
    }

    #[test]
    fn records_carry_the_submission_the_client_and_a_bounded_agent() {
        let long_agent = "é".repeat(200);
        let h = form_headers(&[("user-agent", &long_agent)]);
        let Screened::Queue(sub) = screen(&h, GOOD, &site()) else {
            panic!("a good comment is queued");
        };
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let r = record(&sub, &h, ip, "n1", 1234);
        assert_eq!((r.post_id, r.parent, r.accepted_ms), (5, 2, 1234));
        assert_eq!((r.ip.as_str(), r.node.as_str()), ("203.0.113.9", "n1"));
        assert_eq!((r.seq, r.epoch), (0, 0), "the writer numbers the record");
        assert!(r.agent.len() <= 254, "{}", r.agent.len());
        assert!(r.agent.starts_with("éé"));
    }

    #[test]
    fn without_a_verdict_the_visitor_goes_back_to_the_post_with_cookies() {
        let Screened::Queue(sub) = screen(&form_headers(&[]), GOOD, &site()) else {
            panic!("a good comment is queued");
        };
        let r = no_verdict(&site(), &sub, 1_795_701_343);
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()["location"], "http://127.0.0.1:8080/?p=5");
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 3);
    }
}
