//! The proxies' word that a comment was queued, so that an idle syncer need not poll the
//! queue every `interval`.
//!
//! While the queue is idle, one task per proxy of `[cluster] siblings` waits on its
//! `/comments/queued` ([`QUEUED_PATH`]), which answers as soon as the proxy queues a comment.
//! The syncer then looks at the queue at once, and otherwise only every `idle_interval`.
//! While some proxy does not answer (down, or a version without the path), the syncer polls
//! every `interval` as it would without proxies.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_wire::comment::{Queued, QUEUED_PATH};
use tokio::sync::{watch, Notify};

/// How long one request waits at the proxy; it is sent again after.
const WAIT: Duration = Duration::from_secs(25);
/// Pause before a proxy that did not answer is asked again.
const RETRY: Duration = Duration::from_secs(1);

/// The waits on the proxies, and what they tell the syncer's loop.
pub struct Wake {
    idle: watch::Sender<bool>,
    queued: Arc<Notify>,
    /// Proxies whose last answer came (each then announces its next comment at once).
    answering: Arc<AtomicUsize>,
    proxies: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Wake {
    /// Waits on `proxies` (admin URLs), signing with `secret`; each request may take its
    /// wait plus `timeout`.
    pub fn new(proxies: &[http::Uri], secret: &[u8], timeout: Duration) -> Wake {
        let (idle, watched) = watch::channel(false);
        let queued = Arc::new(Notify::new());
        let answering = Arc::new(AtomicUsize::new(0));
        let client = Client::builder(TokioExecutor::new()).build_http();
        let tasks = proxies
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let proxy = Proxy {
                    url: url.clone(),
                    secret: secret.to_vec(),
                    client: client.clone(),
                    timeout: WAIT + timeout,
                    nonce: (u64::from(std::process::id()) << 32) | ((i as u64) << 24),
                };
                tokio::spawn(proxy.watch(watched.clone(), queued.clone(), answering.clone()))
            })
            .collect();
        Wake {
            idle,
            queued,
            answering,
            proxies: proxies.len(),
            tasks,
        }
    }

    /// Says whether the queue is idle: the proxies are waited on only then.
    pub fn set_idle(&self, idle: bool) {
        self.idle.send_if_modified(|was| std::mem::replace(was, idle) != idle);
    }

    /// Whether every proxy announces its comments: the queue can then be looked at every
    /// `idle_interval` instead of every `interval`.
    pub fn announced(&self) -> bool {
        self.proxies > 0 && self.announcing() == self.proxies
    }

    /// How many proxies announce their comments.
    pub fn announcing(&self) -> usize {
        self.answering.load(Ordering::Acquire)
    }

    /// Completes when a proxy queued a comment (or at once if one did since the last call).
    pub async fn queued(&self) {
        self.queued.notified().await;
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One proxy's `/comments/queued`.
struct Proxy {
    url: http::Uri,
    secret: Vec<u8>,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    nonce: u64,
}

impl Proxy {
    /// While `idle`, asks the proxy again and again; tells `queued` when its count of
    /// queued comments is new (the first answer included: a comment may have come before
    /// it), and counts itself in `answering` while its answers come.
    async fn watch(mut self, mut idle: watch::Receiver<bool>, queued: Arc<Notify>, answering: Arc<AtomicUsize>) {
        let mut since: Option<u64> = None;
        let mut counted = false;
        // A failure is logged once, until the proxy answers again.
        let mut reported = false;
        let count = |on: bool, counted: &mut bool| {
            if on != *counted {
                if on {
                    answering.fetch_add(1, Ordering::AcqRel);
                } else {
                    answering.fetch_sub(1, Ordering::AcqRel);
                }
                *counted = on;
            }
        };
        loop {
            if idle.wait_for(|idle| *idle).await.is_err() {
                return;
            }
            match self.ask(since).await {
                Ok(n) => {
                    if since != Some(n) {
                        queued.notify_one();
                    }
                    since = Some(n);
                    count(true, &mut counted);
                    reported = false;
                }
                Err(e) => {
                    if !std::mem::replace(&mut reported, true) {
                        tracing::warn!(proxy = %self.url, error = %e, "the proxy does not announce queued comments; the queue is polled every interval");
                    }
                    since = None;
                    count(false, &mut counted);
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// One signed request: the proxy's count of queued comments once it is not `since`, or
    /// after [`WAIT`].
    async fn ask(&mut self, since: Option<u64>) -> Result<u64, String> {
        self.nonce += 1;
        let mut path = format!("{QUEUED_PATH}?wait={}&n={}", WAIT.as_millis(), self.nonce);
        if let Some(n) = since {
            path.push_str(&format!("&since={n}"));
        }
        let body = crate::bans::post_signed(&self.client, &self.secret, &self.url, &path, Vec::new(), self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice::<Queued>(&body)
            .map(|q| q.queued)
            .map_err(|e| format!("unreadable answer: {e}"))
    }
}
