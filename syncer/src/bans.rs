//! Bans: after a commit that approved comments, the post's tag, the lists and the recent
//! comments widgets are banned on the proxies: every pending tag in one signed
//! `POST /ban?wait=MS` (a JSON array of tag bans) to every proxy of `[cluster] siblings` at
//! once, each applying it and broadcasting it to its own siblings.
//!
//! Bans that no proxy accepted stay pending and are sent again on the next tick, so a
//! proxy outage delays invalidation but never drops it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_wire::auth;
use strata_wire::ban::{Ban, Kind, BAN_PATH, MAX_BANS_PER_REQUEST};
use strata_wire::comment::{Commit, Delivered, VerdictBatch, COMMIT_PATH, VERDICTS_PATH};
use strata_wire::patch::Patch;

/// The tag of every list page (home, archives, feeds…).
pub const LIST: &str = "list";
/// The tag of pages showing a recent comments widget or block.
pub const RECENT_COMMENTS: &str = "wp:recent-comments";
/// Most bans the syncer sends in one request: half of what a proxy takes
/// ([`MAX_BANS_PER_REQUEST`]), so that with their ids they stay well within its 64 KiB body
/// limit.
const BANS_PER_REQUEST: usize = MAX_BANS_PER_REQUEST / 2;
/// Most distinct tags kept pending while no proxy answers.
const MAX_PENDING: usize = 10_000;
/// How long a proxy that did not know [`COMMIT_PATH`] (an older version) gets bans and
/// verdicts as two requests before the path is tried again.
const LEGACY_RETRY: Duration = Duration::from_secs(60);

/// The tags an approved comment on `post` invalidates, each with whether its ban is soft:
/// the post's pages always hard (the commenter's next look must show the comment), the
/// lists and recent-comments widgets soft when `soft_lists` (on a theme that shows recent
/// comments on every page, a hard ban would empty the whole cache on every comment).
pub fn tags_for_post(post: u64, soft_lists: bool) -> [(String, bool); 3] {
    [
        (format!("post:{post}"), false),
        (LIST.to_string(), soft_lists),
        (RECENT_COMMENTS.to_string(), soft_lists),
    ]
}

/// Why a ban could not be delivered to one proxy.
#[derive(Debug, thiserror::Error)]
pub enum BanError {
    /// The request could not be built or sent, or timed out.
    #[error("{url}: {cause}")]
    Unreachable {
        /// The proxy's admin URL.
        url: String,
        /// What happened.
        cause: String,
    },
    /// The proxy answered with an error.
    #[error("{url} answered {status}: {body}")]
    Refused {
        /// The proxy's admin URL.
        url: String,
        /// Its status.
        status: http::StatusCode,
        /// Its answer.
        body: String,
    },
}

/// Sends bans to the proxies.
pub struct Banner {
    siblings: Vec<http::Uri>,
    secret: Vec<u8>,
    wait: Duration,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Tags not delivered yet, each with whether its ban is soft.
    pending: BTreeMap<String, bool>,
    /// Makes every signed request unique (the proxies refuse replayed signatures).
    nonce: u64,
    /// Proxies that answered 404 to [`COMMIT_PATH`], and when.
    legacy: std::collections::HashMap<http::Uri, std::time::Instant>,
    /// Patches for the next commit's bans, by tag (see [`Banner::add_patch`]).
    patches: std::collections::HashMap<String, Box<Patch>>,
}

impl Banner {
    /// Bans go to `siblings` (admin URLs), signed with `secret`; each proxy waits up to
    /// `wait` for its siblings, each request is given `timeout`.
    pub fn new(siblings: Vec<http::Uri>, secret: Vec<u8>, wait: Duration, timeout: Duration) -> Banner {
        Banner {
            siblings,
            secret,
            wait,
            timeout,
            client: Client::builder(TokioExecutor::new()).build_http(),
            pending: BTreeMap::new(),
            legacy: std::collections::HashMap::new(),
            patches: std::collections::HashMap::new(),
            nonce: std::process::id() as u64 * 1_000_000,
        }
    }

    /// Whether any proxy is configured.
    pub fn enabled(&self) -> bool {
        !self.siblings.is_empty()
    }

    /// Tags waiting for a proxy.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Queues tags to ban, each with whether softly; a tag queued both ways is banned hard.
    pub fn add(&mut self, tags: impl IntoIterator<Item = (String, bool)>) {
        if !self.enabled() {
            return;
        }
        for (t, soft) in tags {
            if let Some(queued) = self.pending.get_mut(&t) {
                *queued &= soft;
                continue;
            }
            if self.pending.len() >= MAX_PENDING {
                tracing::error!(limit = MAX_PENDING, "too many undelivered bans; dropping {t}");
                continue;
            }
            self.pending.insert(t, soft);
        }
    }

    /// Gives the next commit's ban of `tag` (queued with [`Banner::add`]) a patch: a proxy
    /// keeps each page it can patch instead of dropping it. Patches go only with a commit, to
    /// every proxy at once; a ban sent any other way (retried, to an older proxy) is plain.
    pub fn add_patch(&mut self, tag: String, patch: Patch) {
        if self.enabled() {
            self.patches.insert(tag, Box::new(patch));
        }
    }

    /// Sends every pending tag in one request (more than [`BANS_PER_REQUEST`], after a
    /// long outage, in several, one after the other); the delivered ones are forgotten.
    /// Returns how many tags were delivered and, when a request failed, its error: its tags
    /// and those of the requests after it (not tried) stay pending.
    pub async fn flush(&mut self) -> (usize, Option<BanError>) {
        let tags: Vec<(String, bool)> = self.pending.iter().map(|(t, soft)| (t.clone(), *soft)).collect();
        let mut delivered = 0;
        for chunk in tags.chunks(BANS_PER_REQUEST) {
            if let Err(e) = self.sender().send(chunk).await {
                return (delivered, Some(e));
            }
            for (tag, _) in chunk {
                self.pending.remove(tag);
            }
            delivered += chunk.len();
        }
        (delivered, None)
    }
}

#[derive(Clone)]
struct Sender {
    siblings: Vec<http::Uri>,
    secret: Vec<u8>,
    wait: Duration,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
    nonce: u64,
}

impl Sender {
    /// Bans `tags` (at most [`BANS_PER_REQUEST`]) in one request to every proxy at once,
    /// each applying them before it answers (and broadcasting them to its own siblings): the
    /// verdict that follows must find the comment on every node, not only once a broadcast
    /// arrives. Delivered when one proxy accepted them (a proxy that missed them learns them
    /// from the cluster, or flushes); the error of the last one otherwise.
    async fn send(&self, tags: &[(String, bool)]) -> Result<(), BanError> {
        let body = ban_body(tags).map_err(|e| BanError::Unreachable {
            url: String::new(),
            cause: format!("ban request not encoded: {e}"),
        })?;
        let path = ban_path(self.wait, self.nonce);
        let mut set = tokio::task::JoinSet::new();
        for url in self.siblings.clone() {
            let (me, path, body) = (self.clone(), path.clone(), body.clone());
            set.spawn(async move { me.post_signed(&url, &path, body).await });
        }
        let mut delivered = false;
        let mut last = None;
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok(_)) => delivered = true,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "ban not delivered to one proxy");
                    last = Some(e);
                }
                Err(e) => {
                    last = Some(BanError::Unreachable {
                        url: String::new(),
                        cause: format!("ban task failed: {e}"),
                    })
                }
            }
        }
        if delivered {
            return Ok(());
        }
        Err(last.unwrap_or(BanError::Unreachable {
            url: String::new(),
            cause: "no proxy configured".into(),
        }))
    }

    /// A signed POST of `body` to `path` on the proxy at `url`, within `timeout`: the body
    /// of its successful answer.
    async fn post_signed(&self, url: &http::Uri, path: &str, body: Vec<u8>) -> Result<Bytes, BanError> {
        post_signed(&self.client, &self.secret, url, path, body, self.timeout).await
    }
}

/// A signed POST of `body` to `path` on the proxy admin listener at `url`, within
/// `timeout`: the body of its successful answer. Every request of the syncer to a proxy.
pub(crate) async fn post_signed(
    client: &Client<HttpConnector, Full<Bytes>>,
    secret: &[u8],
    url: &http::Uri,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Bytes, BanError> {
    let base = url.to_string().trim_end_matches('/').to_string();
    let unreachable = |cause: String| BanError::Unreachable {
        url: base.clone(),
        cause,
    };
    let req = auth::signed_post(secret, &base, path, body).map_err(|e| unreachable(e.to_string()))?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| unreachable(e.to_string()))?;
        let (status, body) = auth::answer(resp).await;
        if status.is_success() {
            Ok(body)
        } else {
            Err(BanError::Refused {
                url: base.clone(),
                status,
                body: String::from_utf8_lossy(&body).trim().to_string(),
            })
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
}

impl Banner {
    /// A sender for one request, with a nonce of its own (so no two signatures repeat).
    fn sender(&mut self) -> Sender {
        self.nonce += 1;
        Sender {
            siblings: self.siblings.clone(),
            secret: self.secret.clone(),
            wait: self.wait,
            timeout: self.timeout,
            client: self.client.clone(),
            nonce: self.nonce,
        }
    }

    /// After a commit: bans every pending tag and pushes `batch`, the batch's verdicts, in
    /// one request to each proxy at once ([`COMMIT_PATH`]): each applies the bans,
    /// broadcasts them and waits for its siblings to acknowledge them before it hands the
    /// verdicts to the waiting answers, so a visitor sent to the new comment finds it on
    /// every node, one round trip after the commit instead of two. A proxy that predates
    /// the path gets the bans, then the verdicts (for [`LEGACY_RETRY`], before the path is
    /// tried again). Without pending bans, with more than one request's worth, or without
    /// verdicts, the two go as [`Banner::flush`] and [`Banner::push_verdicts`].
    ///
    /// Returns what [`Banner::flush`] and [`Banner::push_verdicts`] return: how many tags
    /// were delivered (some proxy applied them; the others stay pending), the error when
    /// none did, and the verdicts some proxy handed to a waiting answer.
    pub async fn commit(&mut self, batch: &VerdictBatch) -> (usize, Option<BanError>, HashSet<u64>) {
        let sending = self.start_commit(batch);
        self.finish_commit(sending).await
    }

    /// The first half of [`Banner::commit`]: its requests leave now, on tasks of their
    /// own, so the proxies get the verdicts while the caller goes on; the tags sent stay
    /// pending until [`Banner::finish_commit`] collects the answers (a flush meanwhile
    /// would send them twice). Without pending bans only the verdicts are pushed now; with
    /// more than one request's worth of bans, they and the verdicts go when the answers are
    /// collected, as [`Banner::flush`] and [`Banner::push_verdicts`].
    pub(crate) fn start_commit(&mut self, batch: &VerdictBatch) -> Sending {
        if !self.enabled() || batch.verdicts.is_empty() || self.pending.len() > BANS_PER_REQUEST {
            return Sending::Later(batch.clone());
        }
        if self.pending.is_empty() {
            return Sending::Verdicts(self.spawn_verdicts(batch));
        }
        let tags: Vec<(String, bool)> = self.pending.iter().map(|(t, soft)| (t.clone(), *soft)).collect();
        let mut bans = tag_bans(&tags);
        with_patches(&mut bans, std::mem::take(&mut self.patches));
        let commit = Commit {
            bans,
            batch: batch.clone(),
        };
        let Ok(commit_body) = serde_json::to_vec(&commit) else {
            return Sending::Later(batch.clone());
        };
        // An older proxy gets the two halves as two requests.
        let commit = Arc::new(commit);
        let sender = self.sender();
        let nonce = sender.nonce;
        let wait = self.wait.as_millis();
        self.legacy.retain(|_, since| since.elapsed() < LEGACY_RETRY);
        let mut set = tokio::task::JoinSet::new();
        for url in self.siblings.clone() {
            let legacy = self.legacy.contains_key(&url);
            let me = sender.clone();
            let (commit, commit_body) = (commit.clone(), commit_body.clone());
            set.spawn(async move {
                if !legacy {
                    let path = format!("{COMMIT_PATH}?wait={wait}&n={nonce}");
                    match me.post_signed(&url, &path, commit_body).await {
                        Ok(answer) => return (url, false, (true, delivered_seqs(&answer), None)),
                        Err(BanError::Refused { status, .. }) if status == http::StatusCode::NOT_FOUND => {}
                        Err(e) => return (url, false, (false, Vec::new(), Some(e))),
                    }
                }
                // An older proxy: the bans (without ids, which it predates), then the verdicts.
                let (Ok(bans_body), Ok(verdicts_body)) = (
                    serde_json::to_vec(&without_ids(&commit.bans)),
                    serde_json::to_vec(&commit.batch),
                ) else {
                    return (url, true, (false, Vec::new(), None));
                };
                if let Err(e) = me.post_signed(&url, &ban_path(me.wait, nonce), bans_body).await {
                    return (url, true, (false, Vec::new(), Some(e)));
                }
                let path = format!("{VERDICTS_PATH}?n={nonce}");
                let seqs = match me.post_signed(&url, &path, verdicts_body).await {
                    Ok(answer) => delivered_seqs(&answer),
                    Err(e) => {
                        tracing::debug!(error = %e, "verdicts not pushed to one proxy (it reads them from memcached)");
                        Vec::new()
                    }
                };
                (url, true, (true, seqs, None))
            });
        }
        Sending::Commit { set, tags }
    }

    /// The second half of [`Banner::commit`]: waits for the answers to the requests
    /// [`Banner::start_commit`] sent (or sends those it left for now) and returns what
    /// [`Banner::commit`] returns.
    pub(crate) async fn finish_commit(&mut self, sending: Sending) -> (usize, Option<BanError>, HashSet<u64>) {
        let (mut set, tags) = match sending {
            Sending::Commit { set, tags } => (set, tags),
            Sending::Verdicts(set) => return (0, None, delivered_by(set).await),
            Sending::Later(batch) => {
                let (sent, error) = self.flush().await;
                return (sent, error, self.push_verdicts(&batch).await);
            }
        };
        let mut applied = false;
        let mut last = None;
        let mut delivered = HashSet::new();
        while let Some(joined) = set.join_next().await {
            let (url, legacy, (banned, seqs, error)): (http::Uri, bool, CommitReport) = match joined {
                Ok(r) => r,
                Err(e) => {
                    last = Some(BanError::Unreachable {
                        url: String::new(),
                        cause: format!("commit task failed: {e}"),
                    });
                    continue;
                }
            };
            if legacy && !self.legacy.contains_key(&url) {
                tracing::info!(proxy = %url, "proxy predates {COMMIT_PATH}: bans and verdicts go as two requests");
                self.legacy.insert(url, std::time::Instant::now());
            }
            applied |= banned;
            delivered.extend(seqs);
            if let Some(e) = error {
                tracing::debug!(error = %e, "bans and verdicts not delivered to one proxy");
                last = Some(e);
            }
        }
        if !applied {
            return (0, last, delivered);
        }
        for (tag, _) in &tags {
            self.pending.remove(tag);
        }
        (tags.len(), None, delivered)
    }

    /// Pushes a batch's verdicts to every proxy at once, so the answers waiting for them go
    /// out without reading memcached; best effort (the proxies read the verdict keys when a
    /// push does not come). Returns the sequence numbers some proxy handed to a waiting
    /// answer (see [`Delivered`]).
    pub async fn push_verdicts(&mut self, batch: &VerdictBatch) -> HashSet<u64> {
        if !self.enabled() || batch.verdicts.is_empty() {
            return HashSet::new();
        }
        delivered_by(self.spawn_verdicts(batch)).await
    }

    /// The requests of [`Banner::push_verdicts`], on tasks of their own.
    fn spawn_verdicts(&mut self, batch: &VerdictBatch) -> tokio::task::JoinSet<Result<Bytes, BanError>> {
        let mut set = tokio::task::JoinSet::new();
        let Ok(body) = serde_json::to_vec(batch) else {
            return set;
        };
        let sender = self.sender();
        let path = format!("{VERDICTS_PATH}?n={}", sender.nonce);
        for url in self.siblings.clone() {
            let (me, path, body) = (sender.clone(), path.clone(), body.clone());
            set.spawn(async move { me.post_signed(&url, &path, body).await });
        }
        set
    }
}

/// The requests of a commit in flight: see [`Banner::start_commit`].
pub(crate) enum Sending {
    /// Bans and verdicts in one request to each proxy; the tags it carries.
    Commit {
        set: tokio::task::JoinSet<(http::Uri, bool, CommitReport)>,
        tags: Vec<(String, bool)>,
    },
    /// The verdicts alone (no bans were pending).
    Verdicts(tokio::task::JoinSet<Result<Bytes, BanError>>),
    /// Nothing sent yet: the bans, then the verdicts, when the answers are collected.
    Later(VerdictBatch),
}

/// The sequence numbers some proxy answering a verdict push handed to a waiting answer.
async fn delivered_by(mut set: tokio::task::JoinSet<Result<Bytes, BanError>>) -> HashSet<u64> {
    let mut delivered = HashSet::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(answer)) => delivered.extend(delivered_seqs(&answer)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "verdicts not pushed to one proxy (it reads them from memcached)")
            }
            Err(e) => tracing::debug!(error = %e, "verdict push task failed"),
        }
    }
    delivered
}

/// The body of one ban request: a JSON array with a tag ban per tag, hard or soft as queued,
/// in the order given.
pub fn ban_body(tags: &[(String, bool)]) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&tag_bans(tags))
}

/// A tag ban per tag, hard or soft as queued, in the order given, each with a random id of
/// its own: built once per request and sent alike to every proxy, so every node knows each
/// ban by the same id (a node tells a sibling's shield request which bans it has). The soft
/// ones (lists and recent-comments widgets) are bounded: a proxy may refresh each page they
/// mark at most once per its `[cache] list_refresh`, so a stream of comments does not
/// re-render every list page on every comment; the commented post's own page is banned hard,
/// exactly.
fn tag_bans(tags: &[(String, bool)]) -> Vec<Ban> {
    tags.iter()
        .map(|(tag, soft)| {
            Ban {
                soft: *soft,
                bounded: *soft,
                ..Ban::new(Kind::Tag, tag.as_str())
            }
            .with_id()
        })
        .collect()
}

/// Bans as a proxy older than ban ids reads them (it refuses unknown fields).
fn without_ids(bans: &[Ban]) -> Vec<Ban> {
    bans.iter()
        .map(|b| Ban {
            id: 0,
            patch: None,
            ..b.clone()
        })
        .collect()
}

/// Most bytes of patches one commit carries, so that it stays within a proxy's 64 KiB body
/// limit with its bans and verdicts; the bans past it go plain.
const PATCH_BUDGET: usize = 40 * 1024;

/// Gives each ban of `bans` whose tag has a patch in `patches` that patch, within
/// [`PATCH_BUDGET`].
fn with_patches(bans: &mut [Ban], mut patches: std::collections::HashMap<String, Box<Patch>>) {
    let mut left = PATCH_BUDGET;
    for b in bans.iter_mut() {
        let Some(p) = patches.remove(&b.value) else { continue };
        let size = p.size();
        if size <= left.min(strata_wire::patch::MAX_PATCH_BYTES) {
            left -= size;
            b.patch = Some(p);
        }
    }
}

/// What one proxy made of a commit: whether it applied the bans, the verdicts it handed
/// over, the error that stopped it.
type CommitReport = (bool, Vec<u64>, Option<BanError>);

/// The verdicts a proxy's answer says it handed over; an answer that names none (an older
/// proxy) counts none.
fn delivered_seqs(answer: &[u8]) -> Vec<u64> {
    serde_json::from_slice::<Delivered>(answer).unwrap_or_default().seqs
}

/// `/ban?wait=MS&n=NONCE`: the nonce keeps two bans of the same tag within one second from
/// having the same signature (which a proxy would refuse as a replay); proxies ignore it.
pub fn ban_path(wait: Duration, nonce: u64) -> String {
    format!("{BAN_PATH}?wait={}&n={nonce}", wait.as_millis())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;

    #[test]
    fn tags_and_paths() {
        assert_eq!(
            tags_for_post(12, true),
            [
                ("post:12".to_string(), false),
                ("list".to_string(), true),
                ("wp:recent-comments".to_string(), true)
            ]
        );
        assert!(tags_for_post(12, false).iter().all(|(_, soft)| !soft));
        assert_eq!(ban_path(Duration::from_millis(200), 7), "/ban?wait=200&n=7");
    }

    #[test]
    fn one_request_bans_every_tag_hard_or_soft() {
        let tags = [
            ("list".to_string(), true),
            ("post:12".to_string(), false),
            ("wp:recent-comments".to_string(), true),
        ];
        let body = ban_body(&tags).unwrap();
        let read: Vec<Ban> = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&without_ids(&read)).unwrap()).unwrap(),
            r#"[{"kind":"tag","value":"list","soft":true,"bounded":true},{"kind":"tag","value":"post:12"},{"kind":"tag","value":"wp:recent-comments","soft":true,"bounded":true}]"#
        );
        assert_eq!(
            Ban {
                id: 0,
                ..read[1].clone()
            },
            Ban::new(Kind::Tag, "post:12")
        );
        // Each ban has an id of its own, the same in whatever request carries it.
        let ids: std::collections::HashSet<u64> = read.iter().map(|b| b.id).collect();
        assert!(ids.len() == 3 && !ids.contains(&0), "{ids:?}");
        // The largest request the syncer sends stays well within a proxy's 64 KiB body limit.
        let most: Vec<(String, bool)> = (0..BANS_PER_REQUEST)
            .map(|i| (format!("post:{}", u64::MAX - i as u64), false))
            .collect();
        assert!(ban_body(&most).unwrap().len() < 60 * 1024);
    }

    /// A stand-in proxy admin listener: answers each request by its path (`answers`, a
    /// path prefix and a status with a body; 404 for any other path), closing the
    /// connection; returns its URL and the paths it received.
    async fn fake_proxy(answers: Vec<(&'static str, u16, &'static str)>) -> (http::Uri, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap()).parse().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The head, then as much body as Content-Length says.
                let (head_end, length) = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break (0, 0);
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while head_end > 0 && buf.len() < head_end + length {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let line = String::from_utf8_lossy(&buf)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                let (status, body) = answers
                    .iter()
                    .find(|(prefix, _, _)| path.starts_with(prefix))
                    .map_or((404, "no such path"), |(_, status, body)| (*status, *body));
                log.lock().push(path);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
            }
        });
        (url, seen)
    }

    fn verdict(seq: u64) -> strata_wire::comment::Verdict {
        strata_wire::comment::Verdict {
            seq,
            status: strata_wire::comment::Status::Approved,
            http: 302,
            message: String::new(),
            comment_id: Some(seq),
            location: None,
            cookie_author: None,
            cookie_email: None,
            cookie_url: None,
        }
    }

    /// After a commit the bans and the verdicts go in one request to a proxy that knows
    /// the path, and as two (bans first) to one that predates it, which is then remembered.
    #[tokio::test]
    async fn bans_and_verdicts_go_together_and_as_two_requests_to_an_older_proxy() {
        let (current, current_seen) = fake_proxy(vec![
            (COMMIT_PATH, 200, r#"{"delivered":1,"seqs":[5]}"#),
            (VERDICTS_PATH, 200, r#"{"delivered":1,"seqs":[5]}"#),
        ])
        .await;
        let (older, older_seen) = fake_proxy(vec![
            (BAN_PATH, 200, r#"{"seq":1,"removed":0,"siblings":{}}"#),
            (VERDICTS_PATH, 200, r#"{"delivered":1,"seqs":[6]}"#),
        ])
        .await;
        let mut b = Banner::new(
            vec![current, older],
            b"0123456789abcdef".to_vec(),
            Duration::from_millis(10),
            Duration::from_secs(2),
        );
        let batch = VerdictBatch {
            epoch: 3,
            verdicts: vec![verdict(5), verdict(6), verdict(7)],
        };
        b.add(tags_for_post(1, true));
        let (sent, error, delivered) = b.commit(&batch).await;
        assert_eq!((sent, error.is_none()), (3, true));
        assert_eq!(delivered, HashSet::from([5, 6]));
        assert_eq!(b.pending(), 0);
        let paths = |seen: &Arc<Mutex<Vec<String>>>| -> Vec<String> {
            seen.lock()
                .iter()
                .map(|p| p.split('?').next().unwrap_or_default().to_string())
                .collect()
        };
        assert_eq!(paths(&current_seen), [COMMIT_PATH]);
        assert_eq!(paths(&older_seen), [COMMIT_PATH, BAN_PATH, VERDICTS_PATH]);
        // The older proxy is not asked for the path again; without bans, verdicts alone.
        b.add(tags_for_post(2, true));
        b.commit(&batch).await;
        assert_eq!(paths(&older_seen)[3..], [BAN_PATH, VERDICTS_PATH]);
        assert_eq!(paths(&current_seen)[1..], [COMMIT_PATH]);
        let (sent, _, delivered) = b.commit(&batch).await;
        assert_eq!((sent, delivered), (0, HashSet::from([5, 6])));
        assert_eq!(paths(&current_seen)[2..], [VERDICTS_PATH]);
    }

    #[tokio::test]
    async fn undelivered_bans_stay_pending() {
        // Nothing listens on port 9 of localhost.
        let mut b = Banner::new(
            vec!["http://127.0.0.1:9".parse().unwrap()],
            b"0123456789abcdef".to_vec(),
            Duration::from_millis(10),
            Duration::from_millis(500),
        );
        b.add(tags_for_post(1, true));
        let (sent, error) = b.flush().await;
        assert_eq!(sent, 0);
        assert!(matches!(error, Some(BanError::Unreachable { .. })), "{error:?}");
        assert_eq!(b.pending(), 3);
        // After a long outage, more tags than one request takes: the first request fails,
        // the others are not tried, and every tag stays pending with its softness.
        b.add((2..=MAX_BANS_PER_REQUEST as u64 + 100).flat_map(|p| tags_for_post(p, true)));
        let pending = b.pending();
        assert_eq!(pending, MAX_BANS_PER_REQUEST + 102);
        let (sent, error) = b.flush().await;
        assert_eq!(sent, 0);
        assert!(error.is_some());
        assert_eq!(b.pending(), pending);
        assert_eq!(b.pending.get("list"), Some(&true));
        assert_eq!(b.pending.get("post:2"), Some(&false));
    }
}
