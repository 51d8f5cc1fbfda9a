//! The node's origin budget: the most requests this node has at the origin at once
//! (`origin.concurrency`), shared by two classes: **foreground** (a visitor waits: fills of
//! misses, passes) and **background** (refreshes of stale objects, at most
//! `origin.background_max` of them).
//!
//! Lifecycle (the decisions are [`Sched`], plain data; [`Budget`] is its async shell):
//! - a foreground request takes a place at once when no one is queued and one is free; else it
//!   joins the FIFO queue and waits, at most `origin.queue_timeout` (then the caller answers
//!   503 with `Retry-After`);
//! - a background refresh takes a place only when no foreground request is queued, a place is
//!   free and fewer than `background_max` refreshes hold one; otherwise it is *deferred*: it
//!   does not start, the stale object keeps being served and a later request tries again;
//! - a place given back goes to the first queued foreground request, never to a refresh, so a
//!   visitor never waits behind a refresh that had not started when it arrived.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::metrics::OriginBudgetMetrics;

/// Who waits for an origin request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A visitor waits for the answer: the fill of a miss, a pass.
    Foreground,
    /// Nobody waits: the refresh of a stale object that is being served meanwhile.
    Background,
}

impl Class {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Foreground => "foreground",
            Class::Background => "background",
        }
    }

    fn index(self) -> usize {
        match self {
            Class::Foreground => 0,
            Class::Background => 1,
        }
    }
}

/// The budget's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most origin requests in flight at once, both classes together (at least 1).
    pub concurrency: usize,
    /// Most of them that may be background refreshes (1 to `concurrency`).
    pub background_max: usize,
}

/// The scheduling state: places in use per class and the foreground queue, each queued
/// request with its number and what wakes it (`W`).
#[derive(Debug)]
pub struct Sched<W> {
    limits: Limits,
    in_flight: [usize; 2],
    queue: VecDeque<(u64, W)>,
    next: u64,
}

impl<W> Sched<W> {
    /// An idle budget.
    pub fn new(limits: Limits) -> Sched<W> {
        Sched {
            limits,
            in_flight: [0, 0],
            queue: VecDeque::new(),
            next: 0,
        }
    }

    fn total(&self) -> usize {
        self.in_flight[0] + self.in_flight[1]
    }

    /// Places held by a class.
    pub fn in_flight(&self, class: Class) -> usize {
        self.in_flight[class.index()]
    }

    /// Foreground requests waiting for a place.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// A foreground request: `Ok` when it holds a place now (`waiter` is dropped), else the
    /// number it waits under, first come first served.
    pub fn foreground(&mut self, waiter: W) -> Result<(), u64> {
        if self.queue.is_empty() && self.total() < self.limits.concurrency {
            self.in_flight[0] += 1;
            return Ok(());
        }
        self.next += 1;
        self.queue.push_back((self.next, waiter));
        Err(self.next)
    }

    /// A background refresh: whether it holds a place now (else it is deferred). Never while
    /// a foreground request is queued.
    pub fn background(&mut self) -> bool {
        let ok = self.queue.is_empty()
            && self.total() < self.limits.concurrency
            && self.in_flight[1] < self.limits.background_max;
        if ok {
            self.in_flight[1] += 1;
        }
        ok
    }

    /// Gives a place back; returns the queued foreground request that now holds it (already
    /// counted), to be woken.
    pub fn release(&mut self, class: Class) -> Option<W> {
        let i = class.index();
        self.in_flight[i] = self.in_flight[i].saturating_sub(1);
        if self.total() < self.limits.concurrency {
            let (_, w) = self.queue.pop_front()?;
            self.in_flight[0] += 1;
            return Some(w);
        }
        None
    }

    /// Takes a queued request out of the queue (it gave up); false when it is not queued
    /// any more, because a place was given to it meanwhile (the caller then holds one).
    pub fn cancel(&mut self, id: u64) -> bool {
        match self.queue.iter().position(|(n, _)| *n == id) {
            Some(at) => {
                self.queue.remove(at);
                true
            }
            None => false,
        }
    }
}

/// Why a foreground request got no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the origin is busy: {queued} requests were queued for it and none got a place within {waited:?}")]
pub struct Busy {
    /// Requests queued when this one gave up (itself included).
    pub queued: usize,
    /// How long it waited.
    pub waited: Duration,
}

struct Inner {
    sched: parking_lot::Mutex<Sched<oneshot::Sender<()>>>,
    queue_timeout: Duration,
    metrics: OriginBudgetMetrics,
}

impl Inner {
    fn publish(&self, s: &Sched<oneshot::Sender<()>>) {
        let m = &self.metrics;
        m.in_flight(Class::Foreground)
            .set(s.in_flight(Class::Foreground) as i64);
        m.in_flight(Class::Background)
            .set(s.in_flight(Class::Background) as i64);
        m.queued(Class::Foreground).set(s.queued() as i64);
    }

    fn release(&self, class: Class) {
        let mut s = self.sched.lock();
        let mut next = s.release(class);
        while let Some(wake) = next {
            if wake.send(()).is_ok() {
                break;
            }
            // Its waiter is gone (it cannot be, as it takes itself out of the queue under this
            // lock before letting go of its receiver; kept as a safety net): pass it on.
            next = s.release(Class::Foreground);
        }
        self.publish(&s);
    }
}

/// The node's origin budget.
#[derive(Clone)]
pub struct Budget(Arc<Inner>);

/// A place at the origin, given back when dropped.
pub struct Permit {
    inner: Arc<Inner>,
    class: Class,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner.release(self.class);
    }
}

/// A queued foreground request: takes itself out of the queue if dropped before it got a
/// place (its client went away), or gives back the place it got meanwhile.
struct Waiting {
    inner: Arc<Inner>,
    id: u64,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let mut s = self.inner.sched.lock();
        let queued = s.cancel(self.id);
        self.inner.publish(&s);
        drop(s);
        if !queued && rx.try_recv().is_ok() {
            self.inner.release(Class::Foreground);
        }
    }
}

impl Budget {
    /// A budget of `limits`; queued foreground requests wait at most `queue_timeout`.
    pub fn new(limits: Limits, queue_timeout: Duration, metrics: OriginBudgetMetrics) -> Budget {
        let inner = Inner {
            sched: parking_lot::Mutex::new(Sched::new(limits)),
            queue_timeout,
            metrics,
        };
        inner.publish(&inner.sched.lock());
        Budget(Arc::new(inner))
    }

    /// A place for a foreground request: at once, or after the requests queued before it,
    /// waiting at most `origin.queue_timeout`. Errors: [`Busy`] when none came in time
    /// (counted in `strata_proxy_origin_refused_total`).
    pub async fn foreground(&self) -> Result<Permit, Busy> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut s = self.0.sched.lock();
            let admitted = s.foreground(tx);
            self.0.publish(&s);
            match admitted {
                Ok(()) => return Ok(self.permit(Class::Foreground)),
                Err(id) => id,
            }
        };
        let started = Instant::now();
        let mut waiting = Waiting {
            inner: self.0.clone(),
            id,
            rx: Some(rx),
        };
        let rx = waiting.rx.as_mut().expect("set above");
        let got = tokio::time::timeout(self.0.queue_timeout, rx).await;
        let waited = started.elapsed();
        self.0.metrics.waited.observe(waited.as_secs_f64());
        if matches!(got, Ok(Ok(()))) {
            waiting.rx = None;
            return Ok(self.permit(Class::Foreground));
        }
        // Timed out: out of the queue, unless a place came meanwhile.
        let mut s = self.0.sched.lock();
        let queued = s.queued();
        let cancelled = s.cancel(id);
        self.0.publish(&s);
        drop(s);
        let rx = waiting.rx.take();
        if !cancelled && rx.is_some_and(|mut rx| rx.try_recv().is_ok()) {
            return Ok(self.permit(Class::Foreground));
        }
        self.0.metrics.refused.inc();
        Err(Busy { queued, waited })
    }

    /// A place for a background refresh, or `None`: deferred (counted in
    /// `strata_proxy_background_refreshes_deferred_total`).
    pub fn background(&self) -> Option<Permit> {
        let mut s = self.0.sched.lock();
        let ok = s.background();
        self.0.publish(&s);
        drop(s);
        if ok {
            Some(self.permit(Class::Background))
        } else {
            self.0.metrics.deferred.inc();
            None
        }
    }

    fn permit(&self, class: Class) -> Permit {
        Permit {
            inner: self.0.clone(),
            class,
        }
    }

    /// Places held by a class and foreground requests queued, for tests and `/status`.
    pub fn state(&self) -> (usize, usize, usize) {
        let s = self.0.sched.lock();
        (
            s.in_flight(Class::Foreground),
            s.in_flight(Class::Background),
            s.queued(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(concurrency: usize, background_max: usize) -> Sched<&'static str> {
        Sched::new(Limits {
            concurrency,
            background_max,
        })
    }

    #[test]
    fn foreground_takes_free_places_then_queues_in_order() {
        let mut s = sched(2, 1);
        assert_eq!(s.foreground("a"), Ok(()));
        assert_eq!(s.foreground("b"), Ok(()));
        let c = s.foreground("c").unwrap_err();
        let d = s.foreground("d").unwrap_err();
        assert!(c < d);
        assert_eq!(s.queued(), 2);
        assert_eq!(s.release(Class::Foreground), Some("c"), "first come, first served");
        assert_eq!(s.release(Class::Foreground), Some("d"));
        assert_eq!(s.in_flight(Class::Foreground), 2);
        assert_eq!(s.release(Class::Foreground), None);
        assert_eq!(s.release(Class::Foreground), None);
        assert_eq!(s.in_flight(Class::Foreground), 0);
    }

    #[test]
    fn background_stays_within_its_share_and_the_free_places() {
        let mut s = sched(3, 2);
        assert!(s.background());
        assert!(s.background());
        assert!(!s.background(), "background_max reached");
        assert_eq!(s.foreground("a"), Ok(()));
        assert!(!s.background(), "no place left at all");
        s.release(Class::Background);
        assert!(s.background());
        assert_eq!(s.in_flight(Class::Background), 2);
    }

    #[test]
    fn a_queued_visitor_goes_before_any_refresh() {
        // One place, held by a refresh; a visitor queues; refreshes asked for meanwhile are
        // deferred, and the place given back goes to the visitor.
        let mut s = sched(1, 1);
        assert!(s.background());
        let v = s.foreground("visitor").unwrap_err();
        assert!(v > 0);
        assert!(!s.background(), "a foreground request is queued");
        assert_eq!(s.release(Class::Background), Some("visitor"));
        assert_eq!(s.in_flight(Class::Foreground), 1);
        assert!(!s.background(), "the visitor holds the only place");
        assert_eq!(s.release(Class::Foreground), None);
        assert!(s.background(), "free again: refreshes may start");
    }

    #[test]
    fn refreshes_wait_while_anyone_is_queued_even_with_room_in_their_share() {
        let mut s = sched(2, 2);
        assert!(s.background());
        assert!(s.background());
        s.foreground("a").unwrap_err();
        s.foreground("b").unwrap_err();
        assert_eq!(s.release(Class::Background), Some("a"));
        assert!(!s.background(), "b still queued");
        assert_eq!(s.release(Class::Background), Some("b"));
        assert_eq!((s.in_flight(Class::Foreground), s.in_flight(Class::Background)), (2, 0));
    }

    #[test]
    fn a_cancelled_waiter_leaves_the_queue_and_a_granted_one_cannot_cancel() {
        let mut s = sched(1, 1);
        s.foreground("a").unwrap();
        let b = s.foreground("b").unwrap_err();
        let c = s.foreground("c").unwrap_err();
        assert!(s.cancel(b));
        assert!(!s.cancel(b));
        assert_eq!(s.release(Class::Foreground), Some("c"));
        assert!(!s.cancel(c), "c holds a place now: it must give it back itself");
        assert_eq!(s.queued(), 0);
    }

    fn budget(concurrency: usize, background_max: usize, wait: Duration) -> Budget {
        let metrics = crate::metrics::Metrics::new(1 << 20);
        Budget::new(
            Limits {
                concurrency,
                background_max,
            },
            wait,
            metrics.budget.clone(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_shell_wakes_queued_visitors_in_order_and_refuses_after_the_wait() {
        let b = budget(1, 1, Duration::from_secs(5));
        let refresh = b.background().expect("idle");
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for n in 0..3 {
            let (b, order) = (b.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let p = b.foreground().await.expect("a place within the wait");
                order.lock().push(n);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(p);
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(b.state(), (0, 1, 3));
        assert!(b.background().is_none(), "deferred while visitors queue");
        drop(refresh);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock(), vec![0, 1, 2]);
        assert_eq!(b.state(), (0, 0, 0));

        let held = b.foreground().await.unwrap();
        let busy = b.foreground().await.err().expect("refused after the wait");
        assert_eq!(busy.queued, 1);
        assert_eq!(b.state(), (1, 0, 0), "the refused request left the queue");
        drop(held);
        assert!(b.background().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_visitor_that_goes_away_while_queued_gives_its_place_on() {
        let b = budget(1, 1, Duration::from_secs(5));
        let held = b.foreground().await.unwrap();
        let gone = tokio::spawn({
            let b = b.clone();
            async move { b.foreground().await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.state(), (1, 0, 1));
        gone.abort();
        let _ = gone.await;
        assert_eq!(b.state(), (1, 0, 0));
        drop(held);
        assert_eq!(b.state(), (0, 0, 0));
    }
}
