//! Bans: after a commit that approved comments, the post's tag, the lists and the recent
//! comments widgets are banned on the proxies: every pending tag in one signed
//! `POST /ban?wait=MS` (a JSON array of tag bans) to every proxy of `[cluster] siblings` at
//! once, each applying it and broadcasting it to its own siblings.
//!
//! Bans that no proxy accepted stay pending and are sent again on the next tick, so a
//! proxy outage delays invalidation but never drops it.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_wire::auth;
use strata_wire::ban::{Ban, Kind, BAN_PATH, MAX_BANS_PER_REQUEST};
use strata_wire::comment::{Delivered, VerdictBatch, VERDICTS_PATH};

/// The tag of every list page (home, archives, feeds…).
pub const LIST: &str = "list";
/// The tag of pages showing a recent comments widget or block.
pub const RECENT_COMMENTS: &str = "wp:recent-comments";
/// Most distinct tags kept pending while no proxy answers.
const MAX_PENDING: usize = 10_000;

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

    /// Sends every pending tag in one request (more than [`MAX_BANS_PER_REQUEST`], after a
    /// long outage, in several, one after the other); the delivered ones are forgotten.
    /// Returns how many tags were delivered and, when a request failed, its error: its tags
    /// and those of the requests after it (not tried) stay pending.
    pub async fn flush(&mut self) -> (usize, Option<BanError>) {
        let tags: Vec<(String, bool)> = self.pending.iter().map(|(t, soft)| (t.clone(), *soft)).collect();
        let mut delivered = 0;
        for chunk in tags.chunks(MAX_BANS_PER_REQUEST) {
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
    /// Bans `tags` (at most [`MAX_BANS_PER_REQUEST`]) in one request to every proxy at once,
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
        let base = url.to_string().trim_end_matches('/').to_string();
        let unreachable = |cause: String| BanError::Unreachable {
            url: base.clone(),
            cause,
        };
        let req = auth::signed_post(&self.secret, &base, path, body).map_err(|e| unreachable(e.to_string()))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
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
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))?
    }
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

    /// Pushes a batch's verdicts to every proxy at once, so the answers waiting for them go
    /// out without reading memcached; best effort (the proxies read the verdict keys when a
    /// push does not come). Returns the sequence numbers some proxy handed to a waiting
    /// answer (see [`Delivered`]).
    pub async fn push_verdicts(&mut self, batch: &VerdictBatch) -> HashSet<u64> {
        let mut delivered = HashSet::new();
        if !self.enabled() || batch.verdicts.is_empty() {
            return delivered;
        }
        let Ok(body) = serde_json::to_vec(batch) else {
            return delivered;
        };
        let sender = self.sender();
        let path = format!("{VERDICTS_PATH}?n={}", sender.nonce);
        let mut set = tokio::task::JoinSet::new();
        for url in self.siblings.clone() {
            let (me, path, body) = (sender.clone(), path.clone(), body.clone());
            set.spawn(async move { me.post_signed(&url, &path, body).await });
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                // An answer that names no verdict (an older proxy) counts none as delivered.
                Ok(Ok(answer)) => {
                    delivered.extend(serde_json::from_slice::<Delivered>(&answer).unwrap_or_default().seqs)
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "verdicts not pushed to one proxy (it reads them from memcached)")
                }
                Err(e) => tracing::debug!(error = %e, "verdict push task failed"),
            }
        }
        delivered
    }
}

/// The body of one ban request: a JSON array with a tag ban per tag, hard or soft as queued,
/// in the order given.
pub fn ban_body(tags: &[(String, bool)]) -> serde_json::Result<Vec<u8>> {
    let bans: Vec<Ban> = tags
        .iter()
        .map(|(tag, soft)| Ban {
            soft: *soft,
            ..Ban::new(Kind::Tag, tag.as_str())
        })
        .collect();
    serde_json::to_vec(&bans)
}

/// `/ban?wait=MS&n=NONCE`: the nonce keeps two bans of the same tag within one second from
/// having the same signature (which a proxy would refuse as a replay); proxies ignore it.
pub fn ban_path(wait: Duration, nonce: u64) -> String {
    format!("{BAN_PATH}?wait={}&n={nonce}", wait.as_millis())
}

#[cfg(test)]
mod tests {
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
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            r#"[{"kind":"tag","value":"list","soft":true},{"kind":"tag","value":"post:12"},{"kind":"tag","value":"wp:recent-comments","soft":true}]"#
        );
        let read: Vec<Ban> = serde_json::from_slice(&body).unwrap();
        assert_eq!(read[1], Ban::new(Kind::Tag, "post:12"));
        // The largest request the syncer sends stays well within a proxy's 64 KiB body limit.
        let most: Vec<(String, bool)> = (0..MAX_BANS_PER_REQUEST)
            .map(|i| (format!("post:{}", u64::MAX - i as u64), false))
            .collect();
        assert!(ban_body(&most).unwrap().len() < 60 * 1024);
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
