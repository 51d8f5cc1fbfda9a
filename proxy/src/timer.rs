//! A coarse timer for hyper's header-read timeout (the slowloris guard).
//!
//! hyper arms that timer when it starts waiting for a request head and drops it when the
//! head is complete: with tokio's timer that is a timer-wheel insertion and removal on every
//! request. Here arming is an atomic store, and one watchdog task per connection checks the
//! deadline a few times per timeout period, so a stalled client is cut off between 1× and
//! 1.25× the timeout.
//!
//! hyper's timer API speaks `std::time::Instant`; "now" (here and for hyper's deadlines) is
//! read from tokio's clock, which is the same outside tests and lets tests pause it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// No deadline armed.
const DISARMED: u64 = 0;

struct Shared {
    /// When the connection started: deadlines are stored as nanoseconds since then.
    epoch: Instant,
    /// The armed deadline, or [`DISARMED`].
    deadline: AtomicU64,
    /// The task waiting on the deadline.
    waker: parking_lot::Mutex<Option<Waker>>,
}

/// Now, on tokio's clock.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Shared {
    fn nanos(&self, t: Instant) -> u64 {
        // +1 keeps an instant at the epoch distinct from DISARMED.
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }
}

/// One connection's timer, given to hyper's connection builder.
#[derive(Clone)]
pub struct CoarseTimer {
    shared: Arc<Shared>,
}

impl CoarseTimer {
    /// A timer whose watchdog checks every `tick`; the watchdog ends with the connection.
    pub fn new(tick: Duration) -> CoarseTimer {
        let shared = Arc::new(Shared {
            epoch: now(),
            deadline: AtomicU64::new(DISARMED),
            waker: parking_lot::Mutex::new(None),
        });
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                let d = shared.deadline.load(Ordering::Acquire);
                if d != DISARMED && shared.nanos(now()) >= d {
                    if let Some(w) = shared.waker.lock().take() {
                        w.wake();
                    }
                }
            }
        });
        CoarseTimer { shared }
    }
}

/// A deadline armed on a [`CoarseTimer`].
pub struct CoarseSleep {
    shared: Arc<Shared>,
    deadline: u64,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.nanos(now()) >= self.deadline {
            return Poll::Ready(());
        }
        let mut w = self.shared.waker.lock();
        if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *w = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        // Disarm, unless a newer deadline has replaced this one.
        let _ = self
            .shared
            .deadline
            .compare_exchange(self.deadline, DISARMED, Ordering::AcqRel, Ordering::Relaxed);
    }
}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let d = self.shared.nanos(deadline);
        self.shared.deadline.store(d, Ordering::Release);
        Box::pin(CoarseSleep {
            shared: self.shared.clone(),
            deadline: d,
        })
    }

    fn now(&self) -> Instant {
        now()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        *sleep = self.sleep_until(new_deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    #[tokio::test(start_paused = true)]
    async fn a_deadline_fires_on_the_first_watchdog_tick_at_or_after_it() {
        let ms = Duration::from_millis;
        let timeout = ms(10_000);
        // As the listener sets it up: four checks per timeout period.
        let tick = timeout / 4;
        // Armed this long after the connection started; fires this long after it was armed.
        for (armed, fires) in [(0, 10_000), (1, 12_499), (2_499, 10_001), (2_500, 10_000)] {
            let t = CoarseTimer::new(tick);
            tokio::time::sleep(ms(armed)).await;
            let start = tokio::time::Instant::now();
            tokio::time::timeout(2 * timeout, t.sleep(timeout))
                .await
                .expect("fires");
            let took = start.elapsed();
            assert_eq!(took, ms(fires), "armed {armed} ms in");
            assert!(timeout <= took && took <= timeout * 5 / 4);
        }
    }

    #[tokio::test]
    async fn dropping_disarms_and_a_new_deadline_replaces_the_old() {
        let t = CoarseTimer::new(Duration::from_millis(10));
        drop(t.sleep(Duration::from_millis(1)));
        assert_eq!(t.shared.deadline.load(Ordering::Acquire), DISARMED);
        let first = t.sleep(Duration::from_millis(1));
        let second = t.sleep(Duration::from_secs(60));
        drop(first);
        assert_ne!(
            t.shared.deadline.load(Ordering::Acquire),
            DISARMED,
            "the newer deadline stays armed"
        );
        drop(second);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_ends_at_its_first_tick_after_the_connection() {
        let tick = Duration::from_millis(5);
        let alive = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let t = CoarseTimer::new(tick);
        let weak = Arc::downgrade(&t.shared);
        tokio::time::sleep(tick * 10).await;
        assert_eq!(alive(), 1, "the watchdog runs while the connection lives");
        drop(t);
        assert!(
            weak.upgrade().is_none(),
            "the watchdog holds no reference between ticks"
        );
        tokio::time::sleep(tick).await;
        assert_eq!(alive(), 0);
    }
}
