//! Shielding on the request path: asking a key's home node instead of the origin (the
//! asking side), and answering such requests as the home (see [`crate::shield`]).
//!
//! Asking: a fill or background refresh of a key whose home is another live node sends the
//! fill request to the home; when the home is down, slow, failing or refuses the signature,
//! the fill goes to the origin once. The request lists the bans this node applied within
//! `cluster.shield_window` (with their ids); the home's answer is judged here against the
//! bans that arrive while it is asked, as an origin answer is.
//!
//! Answering: the home treats the request as a miss on its own cache, never as a reason to
//! ask another node: a fresh object is answered from memory; anything else joins or leads
//! the key's flight (coalesced with the home's own visitors) and is answered once stored.
//! Before it answers with an object it held or a flight it joined, every listed ban must
//! be one it applied before that object's fetch began, or one that does not select it;
//! otherwise it leads a fetch of its own, begun after the request came (so after the
//! asking node had the ban, and the write behind it). The answer is what the origin sent
//! (status, stored fields, identity body), plus `Age`, the freshness left and the tags.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::bans::Compiled;
use crate::shield::{self, Answered, Fallback, ShieldRequest, MAX_LISTED_BANS};

/// Where a fill's answer came from.
pub(super) enum Source {
    /// The origin.
    Origin,
    /// A key's home node (its node id), with what its answer said; the permit is the place
    /// among the shield requests in flight, held until the answer is read.
    Home(String, Answered, #[allow(dead_code)] shield::Permit),
}

impl Source {
    /// Never fresh here for longer than at the home that answered.
    pub(super) fn cap_life(&self, life: &mut freshness::Lifetime) {
        if let Source::Home(
            _,
            Answered {
                fresh_for: Some(left), ..
            },
            _,
        ) = self
        {
            life.ttl = life.ttl.min(*left);
        }
    }

    /// The `Cache-Status` parameter naming the home node that answered, if one did.
    pub(super) fn peer_param(&self) -> String {
        match self {
            Source::Origin => String::new(),
            Source::Home(node, _, _) => format!("; fwd-peer=\"{node}\""),
        }
    }
}

/// How a home serves a copy that only bounded list bans made stale, fetched less than
/// `cache.list_refresh` ago (the `served` of its answer): the asking node stores it as
/// stale in the same way, so a list page is rendered once per `list_refresh` for the
/// cluster, not once per node.
pub(super) const LAGGING: &str = "lagging";

/// Why a fill got no answer: the origin failed, or no place in the origin budget came in
/// time.
#[derive(Debug)]
pub(super) enum FetchError {
    /// The origin did not answer.
    Origin(OriginError),
    /// The node's origin budget was full for `origin.queue_timeout`.
    Busy(crate::budget::Busy),
    /// A background refresh the key's home had no place for.
    Deferred,
}

impl FetchError {
    /// The status a client gets.
    pub(super) fn status(&self) -> StatusCode {
        match self {
            FetchError::Origin(e) => e.status(),
            FetchError::Busy(_) | FetchError::Deferred => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Origin(e) => e.fmt(f),
            FetchError::Busy(b) => b.fmt(f),
            FetchError::Deferred => f.write_str("the key's home had no place for a background refresh"),
        }
    }
}

/// A request for the origin again: the same target and headers as a fill already built.
pub(super) fn request_again(uri: &http::Uri, headers: &HeaderMap) -> Request<ProxyBody> {
    let mut req = Request::new(ProxyBody::Empty);
    *req.uri_mut() = uri.clone();
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers.clone();
    req
}

impl Proxy {
    /// The admin URL and node id of the home of `primary`, when shielding is on, the request
    /// did not come from another node, and the home is another live node.
    pub(super) fn home_of(&self, primary: &str, from_peer: bool) -> Option<(String, String)> {
        if from_peer || !self.cfg().cluster.shield {
            return None;
        }
        let live = self.cluster.live();
        if live.is_empty() {
            return None;
        }
        let me = self.cluster.node.as_str();
        let home = shield::home(primary, live.iter().map(|(n, _)| n.as_str()).chain([me]))?;
        live.iter().find(|(n, _)| n == home && home != me).cloned()
    }

    /// Sends a fill: to `home` (node id, admin URL) when given, with the bans this node
    /// applied within `cluster.shield_window`, falling back to the origin (counted, logged)
    /// when the home cannot answer; else to the origin. The caller notes the ban generation
    /// before: the listed bans are those up to it, or later. A request for the origin holds
    /// a place in the origin budget until the answer's head arrives: `held` when the caller
    /// took one (a background refresh), else a foreground place, waited for in turn.
    pub(super) async fn fetch(
        &self,
        req: Request<ProxyBody>,
        home: Option<&(String, String)>,
        held: &mut Option<crate::budget::Permit>,
    ) -> Result<(Response<Incoming>, Source), FetchError> {
        if let Some((node, base)) = home {
            if let Some(mut ask) = ShieldRequest::of(&req) {
                let (secret, timeout, window) = {
                    let cfg = self.cfg();
                    (
                        cfg.cluster.secret.clone(),
                        cfg.cluster.shield_timeout,
                        cfg.cluster.shield_window,
                    )
                };
                let listed = self.bans.applied_within(window, MAX_LISTED_BANS);
                (ask.bans, ask.overflow) = (listed.bans, listed.overflow);
                ask.background = held.is_some();
                match self.shield.ask(&secret, base, &ask, timeout).await {
                    Ok((resp, answered, permit)) => return Ok((resp, Source::Home(node.clone(), answered, permit))),
                    Err((Fallback::Deferred, _)) => {
                        self.metrics.shield_request(Fallback::Deferred.as_str());
                        return Err(FetchError::Deferred);
                    }
                    Err((why, detail)) => self.shield_fallback(why, &ask.path, &detail),
                }
            }
        }
        let (permit, class) = match held.take() {
            Some(p) => (p, crate::budget::Class::Background),
            None => (
                self.budget.foreground().await.map_err(FetchError::Busy)?,
                crate::budget::Class::Foreground,
            ),
        };
        self.metrics.budget.fetched(class);
        let answered = self.send(req).await;
        drop(permit);
        answered.map(|r| (r, Source::Origin)).map_err(FetchError::Origin)
    }

    /// Counts and logs a fill that goes to the origin instead of the key's home.
    pub(super) fn shield_fallback(&self, why: Fallback, url: &str, detail: &str) {
        self.metrics.shield_request(why.as_str());
        tracing::warn!(
            url,
            reason = why.as_str(),
            error = detail,
            "filling from the origin instead of the key's home"
        );
    }

    /// Counts a home's answer that was used.
    pub(super) fn shield_used(&self, source: &Source) {
        if let Source::Home(_, a, _) = source {
            let result = match a.served.as_str() {
                "hit" => "hit",
                "pass" => "pass",
                LAGGING => LAGGING,
                _ => "filled",
            };
            self.metrics.shield_request(result);
        }
    }

    /// Answers a shield request as the key's home (`POST /shield`).
    pub async fn serve_shield(self: &Arc<Self>, ask: ShieldRequest) -> Response<ProxyBody> {
        let refused = |status: StatusCode, text: &str| {
            self.metrics.shield_served("refused");
            synth(status, text, "shield")
        };
        let Some(headers) = ask.header_map() else {
            return refused(StatusCode::BAD_REQUEST, "a header of the shield request is invalid");
        };
        let Ok(uri) = ask.path.parse::<http::Uri>() else {
            return refused(StatusCode::BAD_REQUEST, "the shield request's path is invalid");
        };
        if !uri.path().starts_with('/') || uri.authority().is_some() {
            return refused(StatusCode::BAD_REQUEST, "the shield request's path must start with /");
        }
        if host_of(&uri, &headers).is_none() {
            return refused(StatusCode::BAD_REQUEST, "the shield request names no host");
        }
        // The bans the asking node had applied: `None` when it had more than it listed (or
        // one does not compile here), and only a fetch begun now may answer.
        let listed: Option<Vec<Arc<Compiled>>> = if ask.overflow {
            None
        } else {
            let cfg = self.cfg();
            ask.bans
                .iter()
                .map(|b| {
                    Compiled::new(b.clone(), &cfg.policy.strip_query)
                        .ok()
                        .map(|c| Arc::new(c.bounded_by(&cfg.cache.list_tags)))
                })
                .collect()
        };
        let background = ask.background;
        // A listed ban this node has not applied yet is on its way here (its sender, the
        // syncer or a sibling, delivers it to every node): applied now, here only, so the
        // fetch this request leads is stored and not removed again when the ban arrives,
        // which then finds its id applied and is skipped.
        for c in listed.iter().flatten() {
            if c.ban.id != 0 && self.bans.applied_at(c.ban.id).is_none() {
                self.bans.apply(&self.store, c.clone());
                self.metrics.cluster.applied(c.kind());
                self.metrics.shield_early_bans.inc();
            }
        }
        if !self.cache_trusted(Instant::now()) {
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "this node is not confirmed current with its siblings",
            );
        }
        let https = headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        // The visitor the fill is for, as the asking node's fill named it.
        let visitor = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let client = SocketAddr::new(visitor, 0);
        let mut parts = Request::new(()).into_parts().0;
        parts.uri = uri;
        parts.headers = headers;
        if https {
            parts.extensions.insert(tls::Https);
        }
        let (primary, query) = self.with_primary_key(&parts.uri, &parts.headers, https, |k, q| (Arc::from(k), q));
        let lk = Lookup {
            parts,
            primary,
            query,
            from_peer: true,
        };
        for _ in 0..MAX_FLIGHT_RETRIES {
            let (key, slot) = self.find(&lk);
            let now = Instant::now();
            let mut stale = None;
            // An object the home held or a flight it joined may answer only when no listed
            // ban can have made it old; a fetch this request leads began after them all.
            let may_answer = |o: &Object| {
                listed
                    .as_ref()
                    .is_some_and(|l| self.bans.home_may_answer(l, &lk.primary, &o.tags, o.fetched_gen))
            };
            // A copy only bounded list bans made stale, stored less than `list_refresh` ago,
            // may answer when every listed ban that could have made it old is such a ban.
            let may_lag = |o: &Object| {
                let list_refresh = self.cfg().cache.list_refresh;
                let since = now.saturating_duration_since(o.stored_at);
                !crate::bans::refresh_due(o.banned.get(), now < o.fresh_until, since, list_refresh)
                    && listed
                        .as_ref()
                        .is_some_and(|l| self.bans.home_may_lag(l, &lk.primary, &o.tags, o.fetched_gen))
            };
            match slot {
                Some(Slot::Object(o)) if o.is_fresh(now) && may_answer(&o) => {
                    return self.shield_answer(&lk, &o, "hit")
                }
                Some(Slot::Object(o)) if o.banned.get() == cache::Banned::Bounded && may_lag(&o) => {
                    return self.shield_answer(&lk, &o, LAGGING)
                }
                Some(Slot::Object(o)) if o.is_fresh(now) => {
                    // Perhaps older than a ban the asking node had: fetched afresh.
                }
                Some(Slot::Object(o)) if now < o.keep_until => {
                    // Stale here (past freshness, or soft-banned): fetched again first.
                    stale = Some(o).filter(|o| fill::revalidatable(o) || now < o.error_until);
                }
                Some(Slot::HitForPass(until, _)) if now < until => return self.shield_pass(&lk, client).await,
                _ => {}
            }
            let role = {
                let mut flights = self.flights.lock();
                match flights.get(&key) {
                    Some(rx) => Err(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        flights.insert(key.clone(), rx.clone());
                        Ok((tx, rx))
                    }
                }
            };
            let led = role.is_ok();
            let (answer, flight) = match role {
                Ok((tx, rx)) => {
                    let guard = FlightGuard {
                        flights: &self.flights,
                        key: key.clone(),
                        tx,
                        done: false,
                    };
                    // A sibling's background refresh takes this node's background class: a
                    // place when there is one, else deferred (the sibling serves its stale
                    // copy on), never a visitor's place.
                    let held = if background {
                        match self.budget.background() {
                            Some(p) => Some(p),
                            None => {
                                drop(guard);
                                self.metrics.budget.deferred.inc();
                                self.metrics.shield_served(shield::DEFERRED);
                                let resp = synth(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "no place for a background refresh in the origin budget",
                                    "origin-busy",
                                );
                                return shield_fields(resp, shield::DEFERRED);
                            }
                        }
                    } else {
                        None
                    };
                    let answer = self.fill(&lk, key, guard, client, stale, held).await;
                    let flight = rx.borrow().clone();
                    (answer, flight)
                }
                Err(mut rx) => {
                    let waited = tokio::time::timeout(self.cfg().cache.lock_timeout, async {
                        rx.wait_for(Option::is_some)
                            .await
                            .map(|f| f.clone())
                            .unwrap_or(Some(Flight::Abandoned))
                    })
                    .await;
                    match waited {
                        Ok(flight) => (None, flight),
                        Err(_) => {
                            self.metrics.shield_served("error");
                            return synth(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "the fill this request waited on took too long",
                                "shield",
                            );
                        }
                    }
                }
            };
            match flight {
                Some(Flight::Stored(o, generation)) => {
                    if self.bans.since(generation, &lk.primary, &o.tags) == InFlight::Hard
                        || !cache::vary_names(&o.headers).is_empty() && answer.is_none()
                        || !led && !may_answer(&o)
                    {
                        // Banned since the fetch began, perhaps another variant, or a flight
                        // begun before a listed ban: look again.
                        continue;
                    }
                    return self.shield_answer(&lk, &o, "filled");
                }
                Some(Flight::Uncacheable) => match answer {
                    Some(a) if a.outcome != Outcome::Synth => {
                        self.metrics.shield_served("pass");
                        return shield_fields(a.resp, "pass");
                    }
                    _ => return self.shield_pass(&lk, client).await,
                },
                Some(Flight::Failed(status)) => {
                    self.metrics.shield_served("error");
                    return synth(status, "the origin failed for this shield request", "origin-error");
                }
                Some(Flight::Abandoned) | None => continue,
            }
        }
        self.metrics.shield_served("error");
        synth(
            StatusCode::SERVICE_UNAVAILABLE,
            "no stored answer after retries",
            "shield",
        )
    }

    /// A home's answer from a stored object: as the origin sent it (status, stored fields,
    /// the fields only this cache reads, identity body), with `Age`, the freshness it has
    /// left here and its tags.
    fn shield_answer(&self, lk: &Lookup, o: &Arc<Object>, served: &'static str) -> Response<ProxyBody> {
        self.metrics.shield_served(served);
        let mut resp = self.deliver(&Method::GET, &lk.parts.headers, o, HeaderValue::from_static("Strata"));
        let h = resp.headers_mut();
        h.remove(&CACHE_STATUS);
        h.remove(&X_CACHE);
        for (name, value) in &o.hidden {
            h.append(name.clone(), value.clone());
        }
        let fresh_ms = o.fresh_until.saturating_duration_since(Instant::now()).as_millis() as u64;
        h.insert(&shield::FRESH_MS, HeaderValue::from(fresh_ms));
        let tags = o.tags.iter().map(|t| &**t).collect::<Vec<&str>>().join(" ");
        if let Ok(v) = HeaderValue::from_str(&tags) {
            h.insert(&shield::TAGS, v);
        }
        shield_fields(resp, served)
    }

    /// A home's answer for a key remembered as uncacheable: the origin's answer to the fill
    /// request, streamed as it comes.
    async fn shield_pass(&self, lk: &Lookup, client: SocketAddr) -> Response<ProxyBody> {
        let req = match self.fill_request(lk, client) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.shield_served("refused");
                return synth(
                    StatusCode::BAD_REQUEST,
                    &format!("invalid request target: {e}"),
                    "shield",
                );
            }
        };
        match self.send(req).await {
            Ok(resp) => {
                self.metrics.shield_served("pass");
                let (mut parts, body) = resp.into_parts();
                origin::strip_hop_by_hop(&mut parts.headers);
                let resp = Response::from_parts(parts, ProxyBody::stream(body, None, self.origin.body_timeout));
                shield_fields(resp, "pass")
            }
            Err(e) => {
                self.metrics.shield_served("error");
                self.origin_failure(&e, &lk.origin_path())
            }
        }
    }
}

/// Adds how the home served it to a home's answer.
fn shield_fields(mut resp: Response<ProxyBody>, served: &'static str) -> Response<ProxyBody> {
    resp.headers_mut()
        .insert(&shield::SERVED, HeaderValue::from_static(served));
    resp
}
