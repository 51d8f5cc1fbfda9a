//! The timing of the syncer's loop ([`crate::run`]) as plain data, apart from its timers:
//! when the queue is looked at next, how long to pause after a failure, which failures to log.
//! Instants are on tokio's clock, like the loop's timers (the same as std's outside tests).

use std::time::Duration;

use tokio::time::Instant;

/// First pause after a failed round.
pub const MIN_BACKOFF: Duration = Duration::from_millis(20);
/// Longest pause between retries while MySQL or memcached fail.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often the queue is looked at for `interval` after a round that applied records: the
/// visitors whose verdicts just went out often comment again at once, and a round that
/// found the queue empty would otherwise leave their comments waiting a whole `interval`.
pub const QUICK_LOOK: Duration = Duration::from_millis(1);
/// The same error is logged at most this often while it lasts.
pub const LOG_AGAIN: Duration = Duration::from_secs(10);

/// What the loop waits for before its next round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Nothing: a batch is unsettled, and the next one starts while the proxies answer it.
    Nothing,
    /// This pause: a round applied records less than `interval` ago.
    Quick(Duration),
    /// The queue is idle: the next tick of `interval` (or of `idle_interval`, while every
    /// proxy announces its comments), or a proxy's word that a comment was queued.
    Idle,
}

/// What to do after a failed round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// The pause before the next round.
    pub pause: Duration,
    /// Whether to log the error: it is new, or it was last logged [`LOG_AGAIN`] ago.
    pub log: bool,
}

/// The loop's timing state.
#[derive(Debug)]
pub struct Pace {
    /// The configured `interval`: the tick of an idle queue, and how long the queue is looked
    /// at every [`QUICK_LOOK`] after a round that applied records.
    interval: Duration,
    /// Until when the queue is looked at every [`QUICK_LOOK`].
    busy_until: Option<Instant>,
    /// The pause after the last failure; zero after a success.
    backoff: Duration,
    /// The error last logged, and when: repeats are not logged for [`LOG_AGAIN`].
    logged: Option<(String, Instant)>,
}

impl Pace {
    /// The timing of a loop with this `interval`.
    pub fn new(interval: Duration) -> Pace {
        Pace {
            interval,
            busy_until: None,
            backoff: Duration::ZERO,
            logged: None,
        }
    }

    /// What to wait for at `now` before the next round; `unsettled` when the last batch's
    /// bans and verdicts are still out.
    pub fn wait(&self, now: Instant, unsettled: bool) -> Wait {
        if unsettled {
            Wait::Nothing
        } else if self.busy_until.is_some_and(|t| now < t) {
            Wait::Quick(QUICK_LOOK.min(self.interval))
        } else {
            Wait::Idle
        }
    }

    /// A round succeeded at `now` and applied `applied` records (then the queue is looked at
    /// every [`QUICK_LOOK`] for `interval`); true if it ends a run of failures.
    pub fn succeeded(&mut self, now: Instant, applied: usize) -> bool {
        if applied > 0 {
            self.busy_until = Some(now + self.interval);
        }
        self.backoff = Duration::ZERO;
        self.logged.take().is_some()
    }

    /// A round failed at `now` with `error`: the pause grows from [`MIN_BACKOFF`], doubling
    /// up to [`MAX_BACKOFF`].
    pub fn failed(&mut self, now: Instant, error: &str) -> Retry {
        let repeat = self
            .logged
            .as_ref()
            .is_some_and(|(e, at)| e == error && now.saturating_duration_since(*at) < LOG_AGAIN);
        if !repeat {
            self.logged = Some((error.to_string(), now));
        }
        self.backoff = (self.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
        Retry {
            pause: self.backoff,
            log: !repeat,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn after_a_round_that_applied_records_quick_looks_for_exactly_interval() {
        let interval = 5 * MS;
        let mut p = Pace::new(interval);
        let t0 = Instant::now();
        assert_eq!(p.wait(t0, false), Wait::Idle);
        assert_eq!(p.wait(t0, true), Wait::Nothing);
        assert!(!p.succeeded(t0, 3));
        assert_eq!(p.wait(t0, false), Wait::Quick(QUICK_LOOK));
        assert_eq!(
            p.wait(t0 + interval - Duration::from_nanos(1), false),
            Wait::Quick(QUICK_LOOK)
        );
        assert_eq!(p.wait(t0 + interval, false), Wait::Idle);
        // An unsettled batch goes first in any case.
        assert_eq!(p.wait(t0, true), Wait::Nothing);
        // A round that applied nothing does not extend the quick looks; one that did does.
        assert!(!p.succeeded(t0 + 2 * MS, 0));
        assert_eq!(p.wait(t0 + interval, false), Wait::Idle);
        assert!(!p.succeeded(t0 + 2 * MS, 1));
        assert_eq!(p.wait(t0 + interval, false), Wait::Quick(QUICK_LOOK));
        assert_eq!(p.wait(t0 + 2 * MS + interval, false), Wait::Idle);
        // A quick look is never longer than the interval itself.
        let mut fast = Pace::new(Duration::from_micros(300));
        fast.succeeded(t0, 1);
        assert_eq!(fast.wait(t0, false), Wait::Quick(Duration::from_micros(300)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_round_brings_one_look_a_millisecond_for_interval_on_the_loops_clock() {
        let interval = 5 * MS;
        let mut p = Pace::new(interval);
        let start = Instant::now();
        p.succeeded(start, 1);
        // As the loop waits, each round taking no time.
        let mut looks = 0;
        while let Wait::Quick(pause) = p.wait(Instant::now(), false) {
            tokio::time::sleep(pause).await;
            looks += 1;
        }
        assert_eq!((looks, start.elapsed()), (5, interval));
    }

    #[test]
    fn failures_back_off_from_min_doubling_to_max_and_a_success_starts_over() {
        // The schedule below is for these.
        assert_eq!((MIN_BACKOFF, MAX_BACKOFF), (20 * MS, 2000 * MS));
        let mut p = Pace::new(5 * MS);
        let t0 = Instant::now();
        let pauses: Vec<_> = (0..9).map(|_| p.failed(t0, "down").pause.as_millis()).collect();
        assert_eq!(pauses, [20, 40, 80, 160, 320, 640, 1280, 2000, 2000]);
        assert!(p.succeeded(t0, 0), "a success after failures is a recovery");
        assert!(!p.succeeded(t0, 0), "…once");
        assert_eq!(p.failed(t0, "down").pause, MIN_BACKOFF);
        assert_eq!(p.failed(t0, "down").pause, 2 * MIN_BACKOFF);
    }

    #[test]
    fn the_same_error_is_logged_again_only_after_log_again() {
        let mut p = Pace::new(5 * MS);
        let t0 = Instant::now();
        assert!(p.failed(t0, "down").log);
        assert!(!p.failed(t0 + LOG_AGAIN - MS, "down").log);
        assert!(p.failed(t0 + LOG_AGAIN, "down").log);
        // Counted from when it was last logged, not from the last failure.
        assert!(!p.failed(t0 + 2 * LOG_AGAIN - MS, "down").log);
        assert!(p.failed(t0 + 2 * LOG_AGAIN, "down").log);
        // Another error is logged at once, and then is the one repeats are compared with.
        let t1 = t0 + 2 * LOG_AGAIN;
        assert!(p.failed(t1, "refused").log);
        assert!(p.failed(t1, "down").log);
        // A success in between forgets it.
        p.succeeded(t1, 0);
        assert!(p.failed(t1, "down").log);
    }
}
