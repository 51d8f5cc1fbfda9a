//! Checks of patched pages against WordPress (see [`crate::patch_checks`]): a page patched
//! here is fetched from the origin in the background, as a refresh of it would be (a place of
//! the origin budget's background class, the fill lock, the refresh's storing rules), never
//! from a key's home (whose copy may be patched too); WordPress's render replaces the patched
//! copy, and the two are compared. A mismatch turns the page's templates off until restart.

use super::*;
use crate::patch_checks::{self, Diff, Noted, Pending, Template};

/// Where a check's request says it comes from: the node itself.
const CHECK_CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// How a check ended (the `result` label of `strata_proxy_patch_checks_total`, see
/// [`crate::metrics::PATCH_CHECK_RESULTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    /// WordPress's render is the patched copy, byte for byte outside the volatile regions.
    Match,
    /// It is not: the page's templates are turned off.
    Mismatch,
    /// WordPress's render could not be had (an error, an uncacheable answer).
    Error,
    /// Dropped: the copy was banned, replaced or patched again before or while WordPress
    /// rendered it, the page is stored under a Vary rule, or too many pages waited.
    Skipped,
}

impl CheckResult {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Match => "match",
            CheckResult::Mismatch => "mismatch",
            CheckResult::Error => "error",
            CheckResult::Skipped => "skipped",
        }
    }
}

impl Proxy {
    /// Whether patches made with `template` are refused here (a check found one wrong).
    pub(super) fn template_off(&self, template: &Template) -> bool {
        self.patch_templates.is_off(template)
    }

    /// Notes the page under `key`, just patched into the stored object `object` with
    /// `template`, for a check.
    pub(super) fn patched_for_check(&self, key: &str, object: u64, template: Template) {
        let noted = self.patch_checks.lock().patched(key, object, template, Instant::now());
        if noted == Noted::Full {
            self.metrics.patch_check(template.kind, CheckResult::Skipped.as_str());
        }
    }

    /// Starts the checks that are due, as many as `[comments] patch_check_rate` allows and
    /// the origin budget has background places for (a page that finds none, or whose fetch
    /// is under way, waits for the next call). Called every maintenance tick.
    pub fn start_patch_checks(self: &Arc<Self>) {
        let now = Instant::now();
        let due = self.patch_checks.lock().due(now);
        for (key, pending) in due {
            // Noted before the copy is looked at: a ban from here on makes the check moot.
            let noted = self.bans.generation();
            let patched = match self.store.get(&key) {
                Some(Slot::Object(o)) if o.id == pending.object => o,
                _ => {
                    // Banned, filled again or patched again since: nothing to check.
                    self.count_check(&pending, CheckResult::Skipped);
                    continue;
                }
            };
            let Some(lk) = check_lookup(&key) else {
                self.count_check(&pending, CheckResult::Skipped);
                continue;
            };
            let Ok(req) = self.fill_request(&lk, CHECK_CLIENT) else {
                self.count_check(&pending, CheckResult::Skipped);
                continue;
            };
            if self.flights.lock().contains_key(&key) {
                self.patch_checks.lock().put_back(key, pending, now);
                continue;
            }
            let Some(permit) = self.budget.background() else {
                self.patch_checks.lock().put_back(key, pending, now);
                continue;
            };
            let tx = {
                let mut flights = self.flights.lock();
                if flights.contains_key(&key) {
                    drop(flights);
                    self.patch_checks.lock().put_back(key, pending, now);
                    continue;
                }
                let (tx, rx) = watch::channel(None);
                flights.insert(key.clone(), rx);
                tx
            };
            let this = self.clone();
            tokio::spawn(async move {
                let guard = FlightGuard {
                    flights: &this.flights,
                    key: key.clone(),
                    tx,
                    done: false,
                };
                let target = (lk.parts.uri.path().to_string(), lk.query.clone());
                let flight = this
                    .refresh(req, permit, &lk.primary, key.clone(), &patched, &target, false)
                    .await;
                guard.finish(flight.clone());
                let result = this.judge_check(&key, &patched, &pending, noted, flight).await;
                this.count_check(&pending, result);
            });
        }
    }

    /// Judges a check whose fetch began at ban generation `noted` and ended as `flight`
    /// (WordPress's render, stored as a refresh stores it when no ban forbade it).
    async fn judge_check(
        &self,
        key: &str,
        patched: &Object,
        pending: &Pending,
        noted: u64,
        flight: Flight,
    ) -> CheckResult {
        let Flight::Stored(rendered, _) = flight else {
            tracing::debug!(key, "patched page not checked: WordPress's render could not be had");
            return CheckResult::Error;
        };
        let changed = || self.bans.since(noted, key, &patched.tags) == InFlight::Hard;
        if changed() {
            // The page changed while WordPress rendered it: the render is not of the patched
            // copy's state, and was not stored.
            return CheckResult::Skipped;
        }
        if rendered.status != StatusCode::OK {
            return CheckResult::Error;
        }
        let kinds = pending.kinds();
        let Some(diff) = patch_checks::compare(&patched.identity, &rendered.identity, &patch_checks::ignored(&kinds))
        else {
            return CheckResult::Match;
        };
        // A comment committed just before WordPress rendered the page is banned here just
        // after: that is no mismatch.
        tokio::time::sleep(patch_checks::SETTLE).await;
        if changed() {
            return CheckResult::Skipped;
        }
        self.mismatch(key, pending, &diff);
        CheckResult::Mismatch
    }

    /// A patched copy that was not WordPress's render: its templates are turned off.
    fn mismatch(&self, key: &str, pending: &Pending, diff: &Diff) {
        for t in &pending.templates {
            if self.patch_templates.turn_off(*t) {
                tracing::warn!(
                    kind = t.kind,
                    template = format_args!("{:016x}", t.key),
                    "patching turned off for this template until restart"
                );
            }
        }
        self.metrics
            .patch_templates_off
            .set(self.patch_templates.count() as i64);
        tracing::warn!(
            key,
            kinds = ?pending.kinds(),
            at = diff.at,
            patched = ?diff.ours,
            wordpress = ?diff.theirs,
            "a patched page differs from WordPress's render; WordPress's copy replaces it"
        );
    }

    fn count_check(&self, pending: &Pending, result: CheckResult) {
        for kind in pending.kinds() {
            self.metrics.patch_check(kind, result.as_str());
        }
    }
}

/// The lookup a check's fetch is made for: the stored key's host, path and query (already
/// normalised), over HTTPS for an HTTPS key; `None` for a variant of a Vary rule (which
/// request headers chose it is not in the key's text).
fn check_lookup(key: &Arc<str>) -> Option<Lookup> {
    let (plain, https) = match key.strip_suffix(cache::HTTPS_SUFFIX) {
        Some(k) => (k, true),
        None => (&**key, false),
    };
    if plain.contains(cache::VARIANT_SEP) {
        return None;
    }
    let slash = plain.find('/')?;
    let (host, target) = plain.split_at(slash);
    let query = target.split_once('?').map(|(_, q)| q.to_string());
    let mut req = Request::get(target).header(header::HOST, host).body(()).ok()?;
    if https {
        req.extensions_mut().insert(tls::Https);
    }
    let (parts, ()) = req.into_parts();
    Some(Lookup {
        parts,
        primary: key.clone(),
        query,
        from_peer: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checks_request_is_made_from_the_stored_key() {
        let lk = check_lookup(&Arc::from("example.org/a/b/?p=1&q=2")).expect("a plain key");
        assert_eq!(lk.parts.uri.path(), "/a/b/");
        assert_eq!(lk.origin_path(), "/a/b/?p=1&q=2");
        assert_eq!(lk.parts.headers[header::HOST], "example.org");
        assert_eq!(origin::proto(&lk.parts), "http");
        let key = format!("example.org:8080/x/{}", cache::HTTPS_SUFFIX);
        let lk = check_lookup(&Arc::from(key.as_str())).expect("an https key");
        assert_eq!(lk.origin_path(), "/x/");
        assert_eq!(&*lk.primary, key.as_str());
        assert_eq!(origin::proto(&lk.parts), "https");
        let variant = format!("example.org/x/{}mobile", cache::VARIANT_SEP);
        assert!(check_lookup(&Arc::from(variant.as_str())).is_none());
    }
}
