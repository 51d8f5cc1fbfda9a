//! The fill lock: one origin fetch per key at a time, its result shared with the
//! requests that waited on it.

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use tokio::sync::watch;

use crate::cache::Object;

/// How many times a waiter retries after a leader gave up (its client went away) or brought
/// an object that a ban has selected since.
pub(super) const MAX_FLIGHT_RETRIES: usize = 3;

/// The result of a flight, shared with the requests that waited on it.
#[derive(Debug, Clone)]
pub(super) enum Flight {
    /// The response was stored: serve this object, unless a hard ban applied since the ban
    /// generation noted before the origin was asked (the second field) selects it: the
    /// waiter may have come after the write behind that ban, so it asks again.
    Stored(Arc<Object>, u64),
    /// The response may not be shared: each waiter goes to the origin itself.
    Uncacheable,
    /// The origin failed with this status; waiters answer the same.
    Failed(StatusCode),
    /// The leader went away before finishing (its client disconnected): retry.
    Abandoned,
}

pub(super) type FlightRx = watch::Receiver<Option<Flight>>;

/// Publishes a flight's result, and `Abandoned` if dropped without one.
pub(super) struct FlightGuard<'a> {
    pub(super) flights: &'a parking_lot::Mutex<HashMap<Arc<str>, FlightRx>>,
    pub(super) key: Arc<str>,
    pub(super) tx: watch::Sender<Option<Flight>>,
    pub(super) done: bool,
}

impl FlightGuard<'_> {
    pub(super) fn finish(mut self, f: Flight) {
        self.flights.lock().remove(&self.key);
        self.tx.send_replace(Some(f));
        self.done = true;
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.flights.lock().remove(&self.key);
            self.tx.send_replace(Some(Flight::Abandoned));
        }
    }
}
