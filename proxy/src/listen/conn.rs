//! How a served connection ends: gracefully when its listener drains (shutdown), and, for
//! HTTP/2, once it has had no open stream for `server.idle_timeout` — a client answering the
//! server's pings keeps a connection alive, not in use.
//!
//! HTTP/1.1 needs no watch of its own: hyper's header-read timeout runs from the end of one
//! response to the next request head, so an idle keep-alive connection is closed by it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;

/// Tells the connections of a listener to finish, and waits until they have.
pub(super) struct Drain {
    /// `true` once draining; every connection holds a receiver until it ends.
    tx: watch::Sender<bool>,
}

/// A connection's end of a [`Drain`].
pub(super) struct Draining(watch::Receiver<bool>);

impl Drain {
    pub(super) fn new() -> Drain {
        Drain {
            tx: watch::Sender::new(false),
        }
    }

    /// What one connection watches.
    pub(super) fn watcher(&self) -> Draining {
        Draining(self.tx.subscribe())
    }

    /// Tells every connection to finish its requests and close, then waits up to `timeout`
    /// for the last one; false if some were still open.
    pub(super) async fn finish(self, timeout: Duration) -> bool {
        self.tx.send_replace(true);
        tokio::time::timeout(timeout, self.tx.closed()).await.is_ok()
    }
}

impl Draining {
    /// Resolves once the listener drains (or is gone).
    async fn fired(&mut self) {
        let _ = self.0.wait_for(|draining| *draining).await;
    }
}

/// Drives a connection to its end. `shutdown` is its graceful shutdown (hyper's, for
/// HTTP/1.1 or HTTP/2: finish what is in progress, take nothing new), started once: when the
/// listener drains or when `idle` resolves.
pub(super) async fn drive<C, E>(
    conn: C,
    shutdown: impl FnOnce(Pin<&mut C>),
    mut draining: Draining,
    idle: impl Future<Output = ()>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    tokio::pin!(idle);
    let mut shutdown = Some(shutdown);
    loop {
        // The connection first: it is what every wake-up is usually for.
        tokio::select! {
            biased;
            ended = conn.as_mut() => return ended,
            () = draining.fired(), if shutdown.is_some() => {}
            () = &mut idle, if shutdown.is_some() => {}
        }
        if let Some(start) = shutdown.take() {
            start(conn.as_mut());
        }
    }
}

/// The open streams of one HTTP/2 connection, counted so that it can be closed once idle.
#[derive(Clone, Default)]
pub(super) struct Streams(Arc<Counts>);

#[derive(Default)]
struct Counts {
    /// Streams whose request arrived and whose response body is not finished.
    open: AtomicUsize,
    /// Streams opened or closed so far: a change between two looks is activity.
    changes: AtomicU64,
}

impl Streams {
    /// Counts a stream as open until the returned guard drops (with its response body, once
    /// sent or reset).
    pub(super) fn open(&self) -> Stream {
        self.0.open.fetch_add(1, Ordering::Relaxed);
        self.0.changes.fetch_add(1, Ordering::Relaxed);
        Stream(self.clone())
    }

    /// Resolves once no stream has been open for `timeout`. It looks four times per
    /// `timeout` (two atomic loads; the request path only bumps counters), so the connection
    /// is closed between 1× and 1.5× `timeout` after its last stream ended.
    pub(super) async fn idle(self, timeout: Duration) {
        let mut tick = tokio::time::interval((timeout / 4).max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quiet_since = tokio::time::Instant::now();
        let mut seen = self.0.changes.load(Ordering::Relaxed);
        loop {
            tick.tick().await;
            let changes = self.0.changes.load(Ordering::Relaxed);
            if changes != seen || self.0.open.load(Ordering::Relaxed) > 0 {
                seen = changes;
                quiet_since = tokio::time::Instant::now();
            } else if quiet_since.elapsed() >= timeout {
                return;
            }
        }
    }
}

/// One open stream of [`Streams`]; closed when dropped.
pub(super) struct Stream(Streams);

impl Drop for Stream {
    fn drop(&mut self) {
        let counts = &(self.0).0;
        counts.open.fetch_sub(1, Ordering::Relaxed);
        counts.changes.fetch_add(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its stream counted as open until hyper drops it.
pub(super) struct Tracked<B> {
    /// The body itself.
    inner: B,
    /// Dropped with the body.
    _stream: Stream,
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, stream: Stream) -> Tracked<B> {
        Tracked { inner, _stream: stream }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_once_no_stream_was_open_for_the_timeout() {
        let streams = Streams::default();
        let idle = tokio::spawn(streams.clone().idle(Duration::from_secs(4)));
        // A stream open for 10 s keeps the connection busy, however long.
        let stream = streams.open();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!idle.is_finished());
        drop(stream);
        let ended = tokio::time::Instant::now();
        // Short streams in between count as activity too.
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(streams.open());
        let last = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(3900)).await;
        assert!(
            !idle.is_finished(),
            "idle before the timeout passed after the last stream"
        );
        idle.await.unwrap();
        let took = last.elapsed();
        assert!(
            took >= Duration::from_secs(4) && took <= Duration::from_secs(6),
            "closed {took:?} after the last stream ({:?} after the long one)",
            ended.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_opens_a_stream_is_idle_after_the_timeout() {
        let start = tokio::time::Instant::now();
        Streams::default().idle(Duration::from_secs(2)).await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took <= Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn draining_shuts_every_connection_down_and_waits_for_them() {
        let drain = Drain::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // A "connection" that ends once its shutdown is started.
        let conn = async move {
            let _ = rx.await;
            Ok::<(), ()>(())
        };
        let mut tx = Some(tx);
        let watcher = drain.watcher();
        let served = tokio::spawn(async move {
            let conn = Box::pin(conn);
            drive(
                conn,
                move |_| {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                },
                watcher,
                std::future::pending(),
            )
            .await
        });
        tokio::task::yield_now().await;
        assert!(!served.is_finished());
        assert!(drain.finish(Duration::from_secs(5)).await);
        assert_eq!(served.await.unwrap(), Ok(()));
    }
}
