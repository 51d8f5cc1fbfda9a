//! Patched pages checked against WordPress: which patched page is due for a check and how
//! many checks may start ([`Schedule`]), which templates a mismatch turned off
//! ([`Templates`]), and the comparison of a patched copy with WordPress's render
//! ([`compare`]), its volatile regions aside. Pure: the fetch and the replacement are the
//! server's (`server/check.rs`).
//!
//! Lifecycle of a check: a page patched here is noted ([`Schedule::patched`]) with the
//! stored object's id and the template of each patch; once per maintenance tick the due
//! pages are taken, as many as `[comments] patch_check_rate` allows, each page at most once
//! per `patch_check_interval`; the page is fetched from the origin as a background refresh
//! would be, stored as any refresh's answer, and compared with the patched copy. A mismatch
//! turns its templates off until restart.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Most pages waiting for a check; a page patched past it is not checked (counted
/// `skipped`).
pub const MAX_PENDING: usize = 4096;

/// After a check found a difference, how long it waits for a ban that says the page changed
/// while WordPress rendered it: such a difference is no mismatch, and the check is dropped.
/// The syncer commits a comment, asks WordPress for the batch's texts (at most a second),
/// then bans: well within this.
pub const SETTLE: Duration = Duration::from_secs(5);

/// Bytes of each side a mismatch's log line shows.
pub const EXCERPT: usize = 100;

/// The markup of one kind of patch on one theme: the patch kind and
/// [`crate::patch::Patched::template`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Template {
    /// The patch kind (`thread`).
    pub kind: &'static str,
    /// The template's key.
    pub key: u64,
}

/// A patched page waiting for its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The stored object the check compares: the page's copy must still be this one when
    /// the check starts (a ban, a fill or another patch since make the check moot).
    pub object: u64,
    /// The templates of the patches applied since the origin's copy, each once.
    pub templates: Vec<Template>,
    /// When it may start.
    pub due: Instant,
}

impl Pending {
    /// The patch kinds applied since the origin's copy, each once.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<&'static str> = Vec::new();
        for t in &self.templates {
            if !kinds.contains(&t.kind) {
                kinds.push(t.kind);
            }
        }
        kinds
    }
}

/// Whether a patched page was noted for a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noted {
    /// It will be checked.
    Queued,
    /// Checks are off (`patch_check_rate = 0`).
    Off,
    /// Too many pages wait already ([`MAX_PENDING`]).
    Full,
}

/// Which patched pages are checked when: each page at most once per `interval`, at most
/// `rate` checks started per second (a token bucket holding at most one second's worth).
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    rate: u32,
    tokens: f64,
    refilled: Instant,
    pending: HashMap<Arc<str>, Pending>,
    /// When each page's last check started, while that is within `interval`.
    last: HashMap<Arc<str>, Instant>,
}

impl Schedule {
    /// An empty schedule; `rate` 0 checks nothing.
    pub fn new(interval: Duration, rate: u32, now: Instant) -> Schedule {
        Schedule {
            interval,
            rate,
            tokens: f64::from(rate.min(1)),
            refilled: now,
            pending: HashMap::new(),
            last: HashMap::new(),
        }
    }

    /// Pages waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Notes that the page under `key` is now the patched object `object`, patched with
    /// `template`: due at once, or `interval` after its last check started; a page already
    /// waiting keeps its time and compares the newer object.
    pub fn patched(&mut self, key: &str, object: u64, template: Template, now: Instant) -> Noted {
        if self.rate == 0 {
            return Noted::Off;
        }
        if let Some(p) = self.pending.get_mut(key) {
            p.object = object;
            if !p.templates.contains(&template) {
                p.templates.push(template);
            }
            return Noted::Queued;
        }
        if self.pending.len() >= MAX_PENDING {
            return Noted::Full;
        }
        let due = self.last.get(key).map_or(now, |&at| (at + self.interval).max(now));
        self.pending.insert(
            Arc::from(key),
            Pending {
                object,
                templates: vec![template],
                due,
            },
        );
        Noted::Queued
    }

    /// The pages due now, earliest first, as many as the rate allows; each one's check
    /// counts as started now.
    pub fn due(&mut self, now: Instant) -> Vec<(Arc<str>, Pending)> {
        let burst = f64::from(self.rate.max(1));
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(burst);
        self.refilled = now;
        let interval = self.interval;
        self.last.retain(|_, at| now.saturating_duration_since(*at) < interval);
        let mut due: Vec<(Instant, Arc<str>)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(k, p)| (p.due, k.clone()))
            .collect();
        due.sort();
        let n = (self.tokens.floor() as usize).min(due.len());
        self.tokens -= n as f64;
        due.into_iter()
            .take(n)
            .filter_map(|(_, key)| {
                let p = self.pending.remove(&key)?;
                self.last.insert(key.clone(), now);
                Some((key, p))
            })
            .collect()
    }

    /// A due page whose check could not start (no place in the origin budget, a fetch of
    /// the page under way): waiting again, due at once, its token given back. A newer note
    /// of the same page keeps its object, with both's templates.
    pub fn put_back(&mut self, key: Arc<str>, mut p: Pending, now: Instant) {
        self.tokens = (self.tokens + 1.0).min(f64::from(self.rate.max(1)));
        self.last.remove(&key);
        p.due = now;
        match self.pending.get_mut(&key) {
            Some(newer) => {
                for t in p.templates {
                    if !newer.templates.contains(&t) {
                        newer.templates.push(t);
                    }
                }
                newer.due = now;
            }
            None => {
                self.pending.insert(key, p);
            }
        }
    }
}

/// The templates a mismatch turned off, until restart.
#[derive(Debug, Default)]
pub struct Templates {
    off: parking_lot::RwLock<HashSet<Template>>,
}

impl Templates {
    /// Whether patches made with `t` are refused.
    pub fn is_off(&self, t: &Template) -> bool {
        self.off.read().contains(t)
    }

    /// Refuses patches made with `t` from now on; false when it was off already.
    pub fn turn_off(&self, t: Template) -> bool {
        self.off.write().insert(t)
    }

    /// How many are off.
    pub fn count(&self) -> usize {
        self.off.read().len()
    }
}

/// A part of a page that may differ between a patched copy and WordPress's render without
/// the patch being wrong: a block no patch of the page's keeps current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Volatile {
    /// Its name, in logs and the documentation.
    pub name: &'static str,
    /// Where it starts.
    pub open: &'static str,
    /// Where it ends: the first occurrence after `open`, included.
    pub close: &'static str,
    /// The patch kind that keeps it current: a page patched with that kind is compared in
    /// this region too.
    pub patched_by: &'static str,
}

/// Every volatile region (see docs/page-patches.md): WordPress's latest-comments block, which
/// a comment changes on every page and a thread patch does not touch.
pub const VOLATILE: &[Volatile] = &[Volatile {
    name: "latest-comments",
    open: "<ol class=\"wp-block-latest-comments",
    close: "</ol>",
    patched_by: "recent",
}];

/// The volatile regions ignored for a page patched with `kinds`: those none of them keeps
/// current.
pub fn ignored(kinds: &[&str]) -> Vec<Volatile> {
    VOLATILE
        .iter()
        .filter(|v| !kinds.contains(&v.patched_by))
        .copied()
        .collect()
}

/// Where a patched copy and WordPress's render first differ, each region of `ignored` cut
/// out of both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// The first differing byte's offset in the patched copy.
    pub at: usize,
    /// The patched copy from there (its volatile regions cut out), up to [`EXCERPT`] bytes.
    pub ours: String,
    /// WordPress's render from the same place, up to [`EXCERPT`] bytes.
    pub theirs: String,
}

/// Compares a patched copy with WordPress's render of the same page: `None` when they are
/// the same byte for byte outside the `ignored` regions (each cut out where it occurs, from
/// its `open` to the first `close` after it).
pub fn compare(ours: &[u8], theirs: &[u8], ignored: &[Volatile]) -> Option<Diff> {
    let ((a, cuts), (b, _)) = (without(ours, ignored), without(theirs, ignored));
    if a == b {
        return None;
    }
    let at = a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count();
    let excerpt = |s: &[u8]| String::from_utf8_lossy(&s[at..(at + EXCERPT).min(s.len())]).into_owned();
    Some(Diff {
        at: uncut(at, &cuts),
        ours: excerpt(&a),
        theirs: excerpt(&b),
    })
}

/// Where a region was cut: its offset in what was left, and its length; one list per
/// region, in the order they were cut.
type Cuts = Vec<Vec<(usize, usize)>>;

/// `page` without the `regions`, and where they were.
fn without(page: &[u8], regions: &[Volatile]) -> (Vec<u8>, Cuts) {
    let mut out = page.to_vec();
    let mut cuts = Vec::with_capacity(regions.len());
    for r in regions {
        let mut from = 0;
        let mut kept = Vec::with_capacity(out.len());
        let mut these = Vec::new();
        while let Some(start) = find(&out[from..], r.open.as_bytes()).map(|i| from + i) {
            let Some(end) = find(&out[start..], r.close.as_bytes()).map(|i| start + i + r.close.len()) else {
                break;
            };
            kept.extend_from_slice(&out[from..start]);
            these.push((kept.len(), end - start));
            from = end;
        }
        kept.extend_from_slice(&out[from..]);
        out = kept;
        cuts.push(these);
    }
    (out, cuts)
}

/// The offset in the page of offset `at` of the page without its cut regions.
fn uncut(mut at: usize, cuts: &Cuts) -> usize {
    for these in cuts.iter().rev() {
        at += these
            .iter()
            .filter(|(pos, _)| *pos <= at)
            .map(|(_, len)| len)
            .sum::<usize>();
    }
    at
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests;
