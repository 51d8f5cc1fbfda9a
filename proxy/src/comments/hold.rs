//! A clock for held answers that keeps time to a fraction of a millisecond.
//!
//! tokio's timer counts whole milliseconds: a deadline is rounded up to the next one, and a
//! worker with nothing to do sleeps whole milliseconds too. A comment's answer held 5 ms
//! left, on average, 6.3 ms after its acceptance; at 64 connections the comment benchmark
//! made 9–17 % more comments a second without that overshoot. Here one thread of the
//! proxy's own sleeps until the earliest deadline on the kernel's high-resolution timer,
//! then wakes the holds due, on the first [`GRAIN`] tick after their deadlines: an answer is
//! never released before its deadline and, when a core is free, within 0.2 ms after it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The clock's tick: the thread wakes on multiples of it, so holds due within one tick are
/// woken together (fewer wake-ups of the thread and the runtime's workers).
const GRAIN: Duration = Duration::from_micros(200);

/// The holds of one proxy; the thread that wakes them starts with the first hold and ends
/// when the clock is dropped.
#[derive(Default)]
pub struct HoldClock {
    /// Shared with the waking thread, which is started on first use (a proxy without
    /// comments written behind never holds an answer); `None` if it could not start.
    shared: OnceLock<Option<Arc<Shared>>>,
}

struct Shared {
    state: parking_lot::Mutex<State>,
    /// Signalled when a hold becomes the earliest, or the clock closes.
    changed: parking_lot::Condvar,
}

#[derive(Default)]
struct State {
    /// The holds not yet woken, earliest first, by deadline and then by a number of their
    /// own (which tells apart holds with the same deadline).
    due: BTreeMap<(Instant, u64), Arc<Alarm>>,
    /// The next hold's number.
    next: u64,
    /// The clock was dropped: the thread ends.
    closed: bool,
}

/// What a hold and the thread share: whether it is due, and whom to wake.
struct Alarm {
    rung: AtomicBool,
    waker: parking_lot::Mutex<Option<Waker>>,
}

impl Alarm {
    fn ring(&self) {
        self.rung.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().take() {
            w.wake();
        }
    }
}

impl HoldClock {
    /// A future that completes at `at`, not before.
    pub fn until(&self, at: Instant) -> Hold<'_> {
        Hold {
            clock: self,
            at,
            wait: Wait::New,
        }
    }

    /// The state shared with the waking thread, which starts on first use; `None` if it
    /// could not start (the holds then fall back on tokio's timer).
    fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared
            .get_or_init(|| {
                let shared = Arc::new(Shared {
                    state: parking_lot::Mutex::new(State::default()),
                    changed: parking_lot::Condvar::new(),
                });
                let thread = Arc::clone(&shared);
                match std::thread::Builder::new()
                    .name("strata-hold".into())
                    .spawn(move || wake_due(&thread))
                {
                    Ok(_) => Some(shared),
                    Err(e) => {
                        tracing::error!(error = %e, "the thread waking held answers did not start; holds use tokio's timer");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Queues an alarm for `at` that wakes `waker`; `None` without a waking thread.
    fn enqueue(&self, at: Instant, waker: &Waker) -> Option<Arc<Alarm>> {
        let shared = self.shared()?;
        let alarm = Arc::new(Alarm {
            rung: AtomicBool::new(false),
            waker: parking_lot::Mutex::new(Some(waker.clone())),
        });
        let mut state = shared.state.lock();
        let key = (at, state.next);
        state.next += 1;
        state.due.insert(key, Arc::clone(&alarm));
        let earliest = state.due.first_key_value().is_some_and(|(k, _)| *k == key);
        drop(state);
        if earliest {
            shared.changed.notify_one();
        }
        Some(alarm)
    }
}

impl Drop for HoldClock {
    fn drop(&mut self) {
        if let Some(Some(shared)) = self.shared.get() {
            shared.state.lock().closed = true;
            shared.changed.notify_one();
        }
    }
}

/// The waking thread: sleeps until the earliest deadline, then rings every alarm due.
fn wake_due(shared: &Shared) {
    let epoch = Instant::now();
    let grain = GRAIN.as_nanos();
    // The first tick at or after `at`.
    let tick = |at: Instant| {
        let ticks = at.saturating_duration_since(epoch).as_nanos().div_ceil(grain);
        let since = Duration::from_nanos(u64::try_from(ticks * grain).unwrap_or(u64::MAX));
        epoch.checked_add(since).unwrap_or(at)
    };
    let mut rung = Vec::new();
    let mut state = shared.state.lock();
    loop {
        if state.closed {
            return;
        }
        let now = Instant::now();
        while let Some(entry) = state.due.first_entry().filter(|e| e.key().0 <= now) {
            rung.push(entry.remove());
        }
        if !rung.is_empty() {
            // Woken outside the lock: a hold being queued meanwhile does not wait for them.
            parking_lot::MutexGuard::unlocked(&mut state, || {
                for alarm in rung.drain(..) {
                    alarm.ring();
                }
            });
            continue;
        }
        match state.due.first_key_value().map(|((at, _), _)| *at) {
            Some(at) => {
                shared.changed.wait_until(&mut state, tick(at));
            }
            None => shared.changed.wait(&mut state),
        }
    }
}

/// A held answer's wait; see [`HoldClock::until`].
pub struct Hold<'a> {
    clock: &'a HoldClock,
    at: Instant,
    wait: Wait,
}

/// Where a hold's wait stands.
enum Wait {
    /// Not polled yet while its deadline was ahead.
    New,
    /// In the waking thread's queue.
    Queued(Arc<Alarm>),
    /// On tokio's timer: the waking thread did not start.
    Fallback(Pin<Box<tokio::time::Sleep>>),
}

impl Future for Hold<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let at = self.at;
        let clock = self.clock;
        match &mut self.wait {
            Wait::New => {
                self.wait = match clock.enqueue(at, cx.waker()) {
                    Some(alarm) => Wait::Queued(alarm),
                    None => {
                        let mut sleep = Box::pin(tokio::time::sleep_until(at.into()));
                        if sleep.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(());
                        }
                        Wait::Fallback(sleep)
                    }
                };
                Poll::Pending
            }
            Wait::Fallback(sleep) => sleep.as_mut().poll(cx),
            Wait::Queued(alarm) => {
                if alarm.rung.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                let mut waker = alarm.waker.lock();
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                drop(waker);
                // Rung between the check and the new waker: the old one was woken.
                if alarm.rung.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hold_never_ends_before_its_deadline() {
        let clock = HoldClock::default();
        for ms in [0u64, 1, 2, 3, 5] {
            let at = Instant::now() + Duration::from_micros(ms * 700);
            clock.until(at).await;
            assert!(Instant::now() >= at, "a hold of {ms}×0.7 ms ended early");
        }
    }

    #[tokio::test]
    async fn holds_end_in_the_order_of_their_deadlines() {
        let clock = Arc::new(HoldClock::default());
        let start = Instant::now() + Duration::from_millis(2);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        // Queued latest first, so that each new one becomes the earliest.
        for i in (0..20u64).rev() {
            let clock = Arc::clone(&clock);
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                clock.until(start + Duration::from_micros(i * 400)).await;
                let _ = tx.send(i);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        drop(tx);
        let mut order = Vec::new();
        while let Some(i) = rx.recv().await {
            order.push(i);
        }
        assert_eq!(order, (0..20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_dropped_hold_leaves_the_others_on_time() {
        let clock = HoldClock::default();
        let soon = Instant::now() + Duration::from_millis(1);
        // Polled once (so queued), then dropped before it is due.
        let dropped = tokio::time::timeout(
            Duration::from_micros(10),
            clock.until(soon - Duration::from_micros(500)),
        );
        let _ = dropped.await;
        clock.until(soon).await;
        assert!(Instant::now() >= soon);
        clock.until(soon + Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn without_its_thread_a_clock_falls_back_on_tokios_timer() {
        let clock = HoldClock {
            shared: OnceLock::from(None),
        };
        // On tokio's clock, paused: the hold ends exactly at its deadline, and at once. An
        // hour ahead, the check on the real clock cannot end it first.
        let at = tokio::time::Instant::now() + Duration::from_secs(3600);
        clock.until(at.into_std()).await;
        assert_eq!(tokio::time::Instant::now(), at);
    }

    #[test]
    fn the_waking_thread_ends_with_the_clock() {
        let clock = HoldClock::default();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(clock.until(Instant::now() + Duration::from_millis(1)));
        let shared = Arc::clone(clock.shared.get().unwrap().as_ref().unwrap());
        drop(clock);
        // The thread holds the other reference until it ends.
        for _ in 0..1000 {
            if Arc::strong_count(&shared) == 1 {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the waking thread outlived its clock");
    }
}
