//! Serving from the store: finding a request's slot (following Vary), hits, stale hits
//! with a background refresh, waiting on another request's fill, and delivering a stored
//! object (conditional 304, content coding, HEAD).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;

use super::*;

impl Proxy {
    /// Finds the slot for a request, following a Vary rule to the variant's key.
    pub(super) fn find(&self, lk: &Lookup) -> (Arc<str>, Option<Slot>) {
        match self.store.get(&lk.primary) {
            Some(Slot::Vary(rule)) => {
                let key: Arc<str> = cache::variant_key(&lk.primary, &rule, &lk.parts.headers).into();
                let slot = self.store.get(&key);
                (key, slot)
            }
            slot => (lk.primary.clone(), slot),
        }
    }

    pub(super) async fn lookup(self: &Arc<Self>, lk: Lookup, body: Incoming, client: SocketAddr) -> Answer {
        // The client's own directives, when the proxy honours them (`cache.request_directives`).
        let directives = if self.cfg().cache.request_directives {
            freshness::request_directives(&lk.parts.headers)
        } else {
            None
        };
        for _ in 0..MAX_FLIGHT_RETRIES {
            let (key, slot) = self.find(&lk);
            let now = Instant::now();
            // A stored object the fill revalidates (it has validators).
            let mut stale = None;
            match slot {
                Some(Slot::Object(o)) if now < o.keep_until => match self.use_stored(&o, now, directives.as_ref()) {
                    freshness::Use::Fresh => {
                        let status = hit_status(o.ttl_secs(now));
                        return Answer::new(
                            self.deliver(&lk.parts.method, &lk.parts.headers, &o, status),
                            Outcome::Hit,
                        );
                    }
                    used @ (freshness::Use::StaleWhileRevalidate | freshness::Use::Stale) => {
                        if used == freshness::Use::StaleWhileRevalidate {
                            self.refresh_in_background(key, &lk, &o, client);
                        }
                        let over = now.saturating_duration_since(o.fresh_until.min(now)).as_secs();
                        let status = cache_status(format_args!("hit; fwd=stale; ttl=-{over}"));
                        return Answer::new(
                            self.deliver(&lk.parts.method, &lk.parts.headers, &o, status),
                            Outcome::Stale,
                        );
                    }
                    freshness::Use::Revalidate => {
                        stale = Some(o).filter(|o| fill::revalidatable(o) || now < o.error_until)
                    }
                },
                Some(Slot::HitForPass(until, _))
                    if now < until && !directives.as_ref().is_some_and(|d| d.only_if_cached) =>
                {
                    return self.pass(lk.parts, body, client, PassReason::HitForPass).await;
                }
                _ => {}
            }
            if directives.as_ref().is_some_and(|d| d.only_if_cached) {
                // RFC 9111 §5.2.1.7: nothing stored answers it, and the origin may not be asked.
                let resp = synth(
                    StatusCode::GATEWAY_TIMEOUT,
                    "only-if-cached, and no stored response answers the request",
                    "only-if-cached",
                );
                return Answer::new(resp, Outcome::Synth);
            }
            if lk.parts.headers.contains_key(header::RANGE) {
                // Ranges are served from a stored response, not fetched to be stored.
                return self.pass(lk.parts, body, client, PassReason::Range).await;
            }
            if directives.as_ref().is_some_and(|d| d.no_store) {
                // RFC 9111 §5.2.1.5: nothing of this request or its answer may be stored.
                return self.pass(lk.parts, body, client, PassReason::RequestNoStore).await;
            }
            // A miss: lead a flight for this key, or wait on the one under way.
            let role = {
                let mut flights = self.flights.lock();
                match flights.get(&key) {
                    Some(rx) => Err(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        flights.insert(key.clone(), rx);
                        Ok(tx)
                    }
                }
            };
            match role {
                Ok(tx) => {
                    let guard = FlightGuard {
                        flights: &self.flights,
                        key: key.clone(),
                        tx,
                        done: false,
                    };
                    match self.fill(&lk, key, guard, client, stale, None).await {
                        Some(answer) => return answer,
                        None => continue,
                    }
                }
                Err(mut rx) => {
                    let waited = tokio::time::timeout(self.cfg().cache.lock_timeout, async {
                        rx.wait_for(Option::is_some)
                            .await
                            .map(|f| f.clone())
                            .unwrap_or(Some(Flight::Abandoned))
                    })
                    .await;
                    let flight = match waited {
                        Ok(f) => f,
                        Err(_) => return self.pass(lk.parts, body, client, PassReason::LockTimeout).await,
                    };
                    match flight {
                        Some(Flight::Stored(o, generation)) => {
                            if self.bans.since(generation, &lk.primary, &o.tags) == InFlight::Hard {
                                continue;
                            }
                            if !cache::vary_names(&o.headers).is_empty() {
                                // The leader's variant need not be this request's: look again
                                // (its own variant is stored by now, or it leads the next fill).
                                continue;
                            }
                            self.metrics.coalesced.inc();
                            let ttl = o.ttl_secs(Instant::now());
                            let status = cache_status(format_args!("hit; collapsed; ttl={ttl}"));
                            return Answer::new(
                                self.deliver(&lk.parts.method, &lk.parts.headers, &o, status),
                                Outcome::Hit,
                            );
                        }
                        Some(Flight::Uncacheable) => {
                            return self.pass(lk.parts, body, client, PassReason::Uncacheable).await
                        }
                        Some(Flight::Failed(status)) => {
                            if let (_, Some(Slot::Object(o))) = self.find(&lk) {
                                if Instant::now() < o.error_until && !o.is_fresh(Instant::now()) {
                                    return self.stale_on_error(&lk, &o, status);
                                }
                            }
                            let resp = synth(
                                status,
                                "the origin failed for a request collapsed with this one",
                                "origin-error",
                            );
                            return Answer::new(resp, Outcome::Miss);
                        }
                        Some(Flight::Abandoned) | None => continue,
                    }
                }
            }
        }
        self.pass(lk.parts, body, client, PassReason::LockTimeout).await
    }

    /// How a request may use a stored object it found (see [`freshness::use_stored`]).
    fn use_stored(&self, o: &Object, now: Instant, directives: Option<&freshness::CacheControl>) -> freshness::Use {
        let fresh = o.is_fresh(now);
        let held = freshness::Held {
            age: std::time::Duration::from_secs(o.age(now)),
            fresh,
            fresh_left: if fresh {
                o.fresh_until.saturating_duration_since(now)
            } else {
                std::time::Duration::ZERO
            },
            stale_for: if fresh {
                std::time::Duration::ZERO
            } else {
                now.saturating_duration_since(o.fresh_until)
            },
            in_grace: now < o.grace_until,
            // Only a request's max-stale asks; reading the stored directives costs a parse.
            forbids_stale: directives.is_some_and(|d| d.max_stale.is_some())
                && freshness::forbids_stale(&self.cfg().cache, &o.headers, &o.hidden),
        };
        freshness::use_stored(&held, directives)
    }

    /// Serves a stored object: conditional 304, byte ranges (of a 200, for GET), encoding by
    /// `Accept-Encoding`, HEAD.
    pub(super) fn deliver(
        &self,
        method: &Method,
        req: &HeaderMap,
        o: &Arc<Object>,
        status: HeaderValue,
    ) -> Response<ProxyBody> {
        let age = age_value(o.age(Instant::now()));
        if o.status == StatusCode::OK
            && validators::not_modified(req, o.etag.as_ref(), o.last_modified, || o.headers.get(header::DATE))
        {
            let mut resp = Response::new(ProxyBody::Empty);
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            let h = resp.headers_mut();
            for name in [
                header::ETAG,
                header::CACHE_CONTROL,
                header::EXPIRES,
                header::VARY,
                header::DATE,
                header::LAST_MODIFIED,
                header::CONTENT_LOCATION,
            ] {
                if let Some(v) = o.headers.get(&name) {
                    h.insert(name, v.clone());
                }
            }
            h.insert(header::AGE, age);
            h.insert(&CACHE_STATUS, status);
            return resp;
        }
        if o.status == StatusCode::OK && *method == Method::GET {
            if let Some(range) = req.get(header::RANGE) {
                if ranges::if_range_holds(req, o.headers.get(header::ETAG), o.headers.get(header::LAST_MODIFIED)) {
                    match ranges::requested(range, o.identity.len() as u64) {
                        ranges::Ranges::Whole => {}
                        ranges::Ranges::Partial(parts) => return partial(o, &parts, age, status),
                        ranges::Ranges::Unsatisfiable => {
                            let mut resp = Response::new(ProxyBody::Empty);
                            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                            let h = resp.headers_mut();
                            h.insert(
                                header::CONTENT_RANGE,
                                ranges::unsatisfied_range(o.identity.len() as u64),
                            );
                            h.insert(&CACHE_STATUS, status);
                            return resp;
                        }
                    }
                }
            }
        }
        let enc = if o.compressible {
            compress::negotiate(req.get(header::ACCEPT_ENCODING), o.gzip.is_some(), o.br.is_some())
        } else {
            Encoding::Identity
        };
        let (enc, body) = o.body(enc);
        let head = *method == Method::HEAD;
        let mut resp = Response::new(if head {
            ProxyBody::Empty
        } else {
            ProxyBody::full(body.clone())
        });
        *resp.status_mut() = o.status;
        let h = resp.headers_mut();
        h.clone_from(&o.headers);
        if o.gzip.is_some() || o.br.is_some() {
            // The stored headers hold a placeholder for the negotiated coding; an object
            // stored in a coding the proxy does not decode keeps the origin's.
            match enc.header() {
                Some(ce) => h.insert(header::CONTENT_ENCODING, ce),
                None => h.remove(header::CONTENT_ENCODING),
            };
        }
        if head {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        h.insert(header::AGE, age);
        h.insert(&CACHE_STATUS, status);
        resp
    }
}

/// A `206 Partial Content` from a stored object's identity body: one range as it is, several
/// as `multipart/byteranges` (RFC 9110 §14.6).
fn partial(o: &Object, parts: &[(u64, u64)], age: HeaderValue, status: HeaderValue) -> Response<ProxyBody> {
    let len = o.identity.len() as u64;
    let mut headers = o.headers.clone();
    if o.gzip.is_some() || o.br.is_some() {
        // The slot for the negotiated coding: ranges are of the identity body.
        headers.remove(header::CONTENT_ENCODING);
    }
    let body = match parts {
        [(first, last)] => {
            headers.insert(header::CONTENT_RANGE, ranges::content_range(*first, *last, len));
            o.identity.slice(*first as usize..=*last as usize)
        }
        _ => {
            let boundary = format!("strata-{:016x}", o.id);
            let body = ranges::multipart(&o.identity, parts, o.headers.get(header::CONTENT_TYPE), &boundary);
            if let Ok(ct) = HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}")) {
                headers.insert(header::CONTENT_TYPE, ct);
            }
            body
        }
    };
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    *resp.headers_mut() = headers;
    resp.headers_mut().insert(header::AGE, age);
    resp.headers_mut().insert(&CACHE_STATUS, status);
    resp
}
