//! Fills and refreshes: the request sent to the origin for a key, turning its answer into
//! a stored object (decoded, compressed, tagged, with validators), storing it under its
//! Vary rule if no ban since forbids it, and the background refresh of a stale object.

use super::shield::{self, FetchError, Source};
use super::*;
use crate::shield::{Answered, Fallback};
use std::time::Duration;

/// The request header a surrogate announces itself with.
static SURROGATE_CAPABILITY: HeaderName = HeaderName::from_static("surrogate-capability");
/// This cache's capabilities: its device token (`freshness::SURROGATE_DEVICE`) and the
/// Surrogate-Control version it reads.
const SURROGATE_CAPABILITY_VALUE: &str = "strata=\"Surrogate/1.0\"";

/// Why an object was not stored: a hard ban arrived while it was fetched.
const BANNED_IN_FLIGHT: &str = "banned-in-flight";
/// Why an object was not stored: its URL's variant budget is spent for now.
const TOO_MANY_VARIANTS: &str = "too-many-variants";
/// Response headers not stored: framing and encoding are decided at delivery, `Age` is
/// computed anew, and a proxy's authentication answer is for the hop it crossed (RFC 9111
/// §3.1).
static NOT_STORED: [HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::AGE,
    HeaderName::from_static("proxy-authentication-info"),
];

impl Proxy {
    /// The request a fill or refresh sends: GET of the normalised URL with the headers
    /// [`origin::fill_headers`] builds (the key's host, the Vary-named request headers of a
    /// URL stored under a Vary rule, forwarding), nothing else of the client's.
    pub(super) fn fill_request(&self, lk: &Lookup, client: SocketAddr) -> Result<Request<ProxyBody>, http::Error> {
        let host = policy::normalise_host(host_of(&lk.parts.uri, &lk.parts.headers).unwrap_or_default());
        let mut vary = match self.store.get(&lk.primary) {
            Some(Slot::Vary(rule)) => rule.names.clone(),
            _ => Vec::new(),
        };
        vary.extend(self.cfg().cache.fill_headers.iter().cloned());
        let mut headers = origin::fill_headers(&host, &vary, &lk.parts.headers, client.ip(), proto(&lk.parts))?;
        // Looked up with `Authorization` (`policy.pass_authorization = false`): the origin
        // decides on the credentials, and the answer is stored only if it says it may be
        // shared (`freshness::Asked`).
        if let Some(auth) = lk.parts.headers.get(header::AUTHORIZATION) {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        if self
            .cfg()
            .cache
            .targeted_fields
            .iter()
            .any(|n| n == "surrogate-control")
        {
            // Tells the origin which device token targets this cache in Surrogate-Control
            // (`max-age=60;strata`), as the Edge Architecture specification has surrogates do.
            headers.insert(
                &SURROGATE_CAPABILITY,
                HeaderValue::from_static(SURROGATE_CAPABILITY_VALUE),
            );
        }
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(self.origin.uri(&lk.origin_path())?)
            .version(Version::HTTP_11)
            .body(ProxyBody::Empty)?;
        *req.headers_mut() = headers;
        Ok(req)
    }

    /// The leader's fetch: ask the key's home node or the origin, store what may be stored,
    /// answer the client. `stale` is the stored object past its grace that this fetch
    /// revalidates: the request carries its validators, and a `304` brings it back to life
    /// under updated headers. A home's answer that a hard ban which arrived here meanwhile
    /// selects is dropped and the origin asked instead.
    pub(super) async fn fill(
        &self,
        lk: &Lookup,
        key: Arc<str>,
        guard: FlightGuard<'_>,
        client: SocketAddr,
        stale: Option<Arc<Object>>,
        mut held: Option<crate::budget::Permit>,
    ) -> Option<Answer> {
        let noted = self.bans.generation();
        let (req, sent) = match self.fill_request(lk, client) {
            Ok(mut r) => {
                if let Some(stale) = stale.as_ref().filter(|o| revalidatable(o)) {
                    add_validators(r.headers_mut(), stale);
                }
                let sent = r.headers().clone();
                (r, sent)
            }
            Err(e) => {
                guard.finish(Flight::Failed(StatusCode::BAD_REQUEST));
                return Some(Answer::new(
                    synth(
                        StatusCode::BAD_REQUEST,
                        &format!("invalid request target: {e}"),
                        "target",
                    ),
                    Outcome::Synth,
                ));
            }
        };
        let target = req.uri().clone();
        // Served instead of an origin failure while its stale-if-error window lasts.
        let fallback = stale.as_ref().filter(|o| Instant::now() < o.error_until).cloned();
        let mut home = self.home_of(&lk.primary, lk.from_peer);
        let mut next = Some(req);
        // At most two rounds: the home's answer, then (when a ban may postdate it) the origin's.
        loop {
            let req = next.take().unwrap_or_else(|| shield::request_again(&target, &sent));
            let (resp, source) = match self.fetch(req, home.as_ref(), &mut held).await {
                Ok(r) => r,
                Err(e) => {
                    guard.finish(Flight::Failed(e.status()));
                    if let Some(o) = fallback {
                        tracing::warn!(url = %lk.origin_path(), error = %e, "origin failed or busy; serving stale (stale-if-error)");
                        return Some(self.stale_on_error(lk, &o, e.status()));
                    }
                    let resp = match &e {
                        FetchError::Origin(e) => self.origin_failure(e, &lk.origin_path()),
                        FetchError::Busy(busy) => self.origin_busy(busy, &lk.origin_path()),
                        FetchError::Deferred => synth(StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), "origin-busy"),
                    };
                    return Some(Answer::new(resp, Outcome::Miss));
                }
            };
            // Judged from the generation noted before asking, whoever answered: the home saw
            // the bans this node had then (listed in the request), and those that arrive here
            // meanwhile are judged here.
            let generation = noted;
            let peer = source.peer_param();
            let (mut parts, body) = resp.into_parts();
            origin::strip_hop_by_hop(&mut parts.headers);
            if let Some(stale) = stale.as_ref().filter(|_| parts.status == StatusCode::NOT_MODIFIED) {
                if matches!(source, Source::Home(..))
                    && self.bans.since(generation, &lk.primary, &stale.tags) == InFlight::Hard
                {
                    self.shield_fallback(
                        Fallback::Banned,
                        &lk.origin_path(),
                        "a ban arrived here while the home was asked",
                    );
                    home = None;
                    continue;
                }
                self.shield_used(&source);
                return Some(self.revalidated_answer(lk, &key, stale, &parts.headers, &sent, guard, generation));
            }
            if let Some(o) = fallback.as_ref().filter(|_| is_error_status(parts.status)) {
                guard.finish(Flight::Failed(parts.status));
                tracing::warn!(url = %lk.origin_path(), status = parts.status.as_u16(), "origin error; serving stale (stale-if-error)");
                return Some(self.stale_on_error(lk, o, parts.status));
            }
            let verdict = freshness::stored_lifetime(
                &self.cfg().cache,
                asked(&sent),
                parts.status,
                &parts.headers,
                SystemTime::now(),
            )
            .and_then(|life| {
                let too_big = content_length(&parts.headers).is_some_and(|n| n > self.cfg().cache.max_object_size);
                if too_big {
                    Err(NoStore::TooLarge)
                } else {
                    Ok(life)
                }
            });
            let mut life = match verdict {
                Ok(life) => life,
                Err(why) => {
                    self.shield_used(&source);
                    self.metrics.not_stored(why.as_str());
                    let flight = self.remember_uncacheable(&key, parts.status, why);
                    guard.finish(flight);
                    let status = cache_status(format_args!(
                        "fwd=uri-miss; fwd-status={}; detail={}{peer}",
                        parts.status.as_u16(),
                        why.as_str()
                    ));
                    return Some(Answer::new(
                        self.stream_back_for(lk, parts, body, None, status),
                        Outcome::Miss,
                    ));
                }
            };
            source.cap_life(&mut life);
            // Read the body, up to the object size limit.
            let limit = self.cfg().cache.max_object_size;
            let mut body = ProxyBody::stream(body, None, self.origin.body_timeout);
            let mut buf = BytesMut::new();
            let mut broke = None;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Ok(data) = f.into_data() {
                            buf.extend_from_slice(&data);
                        }
                        if buf.len() as u64 > limit {
                            self.shield_used(&source);
                            self.metrics.not_stored(NoStore::TooLarge.as_str());
                            guard.finish(self.remember_uncacheable(&key, parts.status, NoStore::TooLarge));
                            let status = cache_status(format_args!(
                                "fwd=uri-miss; fwd-status={}; detail=too-large{peer}",
                                parts.status.as_u16()
                            ));
                            if !lk.from_peer {
                                for name in &self.cfg().cache.targeted_fields {
                                    parts.headers.remove(name);
                                }
                            }
                            let resp = Response::from_parts(parts, chain(buf.freeze(), body));
                            return Some(Answer::new(with_status(resp, status), Outcome::Miss));
                        }
                    }
                    Err(e) => {
                        broke = Some(origin::error_chain(e.as_ref()));
                        break;
                    }
                }
            }
            if let Some(e) = broke {
                if matches!(source, Source::Home(..)) {
                    self.shield_fallback(
                        Fallback::Error,
                        &lk.origin_path(),
                        &format!("the answer broke off: {e}"),
                    );
                    home = None;
                    continue;
                }
                tracing::warn!(url = %lk.origin_path(), error = %e, "origin body failed");
                self.metrics.origin_error("body");
                guard.finish(Flight::Failed(StatusCode::BAD_GATEWAY));
                return Some(Answer::new(
                    synth(
                        StatusCode::BAD_GATEWAY,
                        "the origin's response broke off",
                        "origin-error",
                    ),
                    Outcome::Miss,
                ));
            }
            // Fields the stored copy leaves out still reach the client whose request brought them.
            let withheld: Vec<(HeaderName, HeaderValue)> = life
                .strip
                .iter()
                .flat_map(|n| parts.headers.get_all(n).iter().map(move |v| (n.clone(), v.clone())))
                .collect();
            let built = self
                .build_object(
                    parts,
                    buf.freeze(),
                    life,
                    lk.parts.uri.path(),
                    lk.query.as_deref(),
                    generation,
                )
                .await;
            let mut obj = match built {
                Some(o) => o,
                None => {
                    self.metrics.not_stored(NoStore::Encoding.as_str());
                    guard.finish(Flight::Failed(StatusCode::BAD_GATEWAY));
                    return Some(Answer::new(
                        synth(
                            StatusCode::BAD_GATEWAY,
                            "the origin sent an undecodable gzip body",
                            "origin-error",
                        ),
                        Outcome::Miss,
                    ));
                }
            };
            if let Source::Home(_, answered, _) = &source {
                adopt_home_answer(&mut obj, answered);
                if self.bans.since(generation, &lk.primary, &obj.tags) == InFlight::Hard {
                    self.shield_fallback(
                        Fallback::Banned,
                        &lk.origin_path(),
                        "a ban arrived here while the home was asked",
                    );
                    home = None;
                    continue;
                }
                self.shield_used(&source);
            }
            let stored = self.store_object(&lk.primary, &sent, &obj, generation);
            guard.finish(Flight::Stored(obj.clone(), generation));
            if !fetched_as_asked(&obj.headers, &lk.parts.headers, &sent) {
                // The origin varies on a header this request has but the fill, which knew no
                // Vary rule yet, did not send: what came back is another variant (stored as such).
                return None;
            }
            let status = match stored {
                Ok(()) => cache_status(format_args!(
                    "fwd=uri-miss; fwd-status={}; stored{peer}",
                    obj.status.as_u16()
                )),
                Err(why) => cache_status(format_args!(
                    "fwd=uri-miss; fwd-status={}; detail={why}{peer}",
                    obj.status.as_u16()
                )),
            };
            let mut resp = self.deliver(&lk.parts.method, &lk.parts.headers, &obj, status);
            for (name, value) in withheld {
                resp.headers_mut().append(name, value);
            }
            return Some(Answer::new(resp, Outcome::Miss));
        }
    }

    /// Streams a fill's uncacheable answer back: to a client as [`Proxy::stream_back`] does,
    /// to a node that asked as this key's home with the fields only caches read (it judges
    /// the answer as the origin's).
    fn stream_back_for(
        &self,
        lk: &Lookup,
        parts: http::response::Parts,
        body: Incoming,
        prefix: Option<Bytes>,
        status: HeaderValue,
    ) -> Response<ProxyBody> {
        if lk.from_peer {
            let resp = Response::from_parts(parts, ProxyBody::stream(body, prefix, self.origin.body_timeout));
            return with_status(resp, status);
        }
        self.stream_back(parts, body, prefix, status)
    }

    /// Records a hit-for-pass marker for answers that will not change on the next request,
    /// and says what the waiters should do.
    pub(super) fn remember_uncacheable(&self, key: &Arc<str>, status: StatusCode, why: NoStore) -> Flight {
        if why == NoStore::Authorization {
            // It depends on who asked: anonymous requests for the URL are still looked up.
            return Flight::Uncacheable;
        }
        if status.is_server_error() {
            // A transient failure: don't pin the URL to PASS, and don't send every waiter on.
            return Flight::Failed(status);
        }
        let until = Instant::now() + self.cfg().cache.hit_for_pass_ttl;
        self.store.insert(key.clone(), Slot::HitForPass(until, why.as_str()));
        Flight::Uncacheable
    }

    /// Answers with a stale object because the origin failed (RFC 5861 `stale-if-error`).
    pub(super) fn stale_on_error(&self, lk: &Lookup, o: &Arc<Object>, origin_status: StatusCode) -> Answer {
        let over = Instant::now().saturating_duration_since(o.fresh_until).as_secs();
        let status = cache_status(format_args!(
            "hit; fwd=stale; fwd-status={}; ttl=-{over}; detail=stale-if-error",
            origin_status.as_u16()
        ));
        Answer::new(
            self.deliver(&lk.parts.method, &lk.parts.headers, o, status),
            Outcome::Stale,
        )
    }

    /// Answers a fill that revalidated `stale` and got `304 Not Modified` (from a fetch begun
    /// at ban `generation`): the stale object's
    /// body under the updated headers is stored (when they still allow it; otherwise the key is
    /// dropped and remembered as uncacheable) and delivered to the client.
    #[allow(clippy::too_many_arguments)]
    fn revalidated_answer(
        &self,
        lk: &Lookup,
        key: &Arc<str>,
        stale: &Arc<Object>,
        not_modified: &HeaderMap,
        sent: &HeaderMap,
        guard: FlightGuard<'_>,
        generation: u64,
    ) -> Answer {
        let (obj, verdict) = self.revalidated(stale, not_modified, asked(sent), generation);
        let status = match verdict {
            Ok(()) => {
                let stored = self.store_object(&lk.primary, sent, &obj, generation);
                guard.finish(Flight::Stored(obj.clone(), generation));
                match stored {
                    Ok(()) => cache_status(format_args!("fwd=stale; fwd-status=304; stored")),
                    Err(why) => cache_status(format_args!("fwd=stale; fwd-status=304; detail={why}")),
                }
            }
            Err(why) => {
                self.metrics.not_stored(why.as_str());
                self.store.remove(key);
                guard.finish(self.remember_uncacheable(key, obj.status, why));
                cache_status(format_args!("fwd=stale; fwd-status=304; detail={}", why.as_str()))
            }
        };
        Answer::new(
            self.deliver(&lk.parts.method, &lk.parts.headers, &obj, status),
            Outcome::Miss,
        )
    }

    /// The object a `304 Not Modified` revalidated: the stale object's bodies under its
    /// headers updated by the `304` (RFC 9111 §3.2; see [`freshness::updated_headers`]),
    /// with the lifetime those headers now give, and whether they still allow storing it.
    /// `fetched_gen`: the ban generation noted before the revalidating fetch began.
    pub(super) fn revalidated(
        &self,
        stale: &Object,
        not_modified: &HeaderMap,
        asked: freshness::Asked,
        fetched_gen: u64,
    ) -> (Arc<Object>, Result<(), NoStore>) {
        let cfg = self.cfg();
        let mut stored = stale.headers.clone();
        for (name, value) in &stale.hidden {
            stored.append(name.clone(), value.clone());
        }
        let mut headers = freshness::updated_headers(&stored, not_modified);
        if cfg.bans.strip_tag_headers {
            for name in &cfg.bans.tag_headers {
                headers.remove(name);
            }
        }
        // Judged with the 304's own Age, not the delivery slot the stored headers carry.
        match not_modified.get(header::AGE) {
            Some(age) => headers.insert(header::AGE, age.clone()),
            None => headers.remove(header::AGE),
        };
        let verdict = freshness::stored_lifetime(&cfg.cache, asked, stale.status, &headers, SystemTime::now());
        headers.insert(header::AGE, HeaderValue::from_static("0"));
        for name in verdict.iter().flat_map(|l| &l.strip) {
            headers.remove(name);
        }
        let mut hidden = HeaderMap::new();
        for name in &cfg.cache.targeted_fields {
            if let header::Entry::Occupied(e) = headers.entry(name) {
                let (name, values) = e.remove_entry_mult();
                for v in values {
                    hidden.append(name.clone(), v);
                }
            }
        }
        let now = Instant::now();
        let (fresh_until, grace_until, error_until, keep_until) = match &verdict {
            Ok(life) => self.lifetime_bounds(now, life),
            Err(_) => (now, now, now, now),
        };
        let last_modified = headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s).ok());
        let obj = Arc::new(Object {
            status: stale.status,
            headers,
            hidden,
            identity: stale.identity.clone(),
            gzip: stale.gzip.clone(),
            br: stale.br.clone(),
            recent: stale.recent.clone(),
            etag: stale.etag.clone(),
            last_modified,
            stored_at: now,
            initial_age: verdict.as_ref().map_or(Duration::ZERO, |l| l.initial_age),
            fresh_until,
            grace_until,
            error_until,
            keep_until,
            compressible: stale.compressible,
            tags: stale.tags.clone(),
            fetched_gen,
            id: cache::next_object_id(),
            banned: cache::BanMark::default(),
        });
        (obj, verdict.map(|_| ()))
    }

    /// Stores an object, under a Vary rule when the origin varies on request headers.
    /// `req` are the request headers the object was fetched with (for variant keys);
    /// `generation` is the ban generation noted before the origin was asked: an object that
    /// a hard ban since then selects is not stored (it may predate the write behind the ban),
    /// one that only soft bans select is stored stale. Errors: why it was not stored
    /// (`banned-in-flight`, `too-many-variants`), as counted and told in `Cache-Status`.
    pub(super) fn store_object(
        &self,
        primary: &Arc<str>,
        req: &HeaderMap,
        obj: &Arc<Object>,
        generation: u64,
    ) -> Result<(), &'static str> {
        if !self.judged_in_flight(primary, obj, generation) {
            self.metrics.not_stored(BANNED_IN_FLIGHT);
            return Err(BANNED_IN_FLIGHT);
        }
        let names = cache::vary_names(&obj.headers);
        if names.is_empty() {
            self.store.insert(primary.clone(), Slot::Object(obj.clone()));
            return self.kept_after_insert(primary, primary, obj, generation);
        }
        let rule = match self.store.get(primary) {
            Some(Slot::Vary(rule)) if rule.names == names => rule,
            _ => {
                let rule = Arc::new(VaryRule::new(names));
                self.store.insert(primary.clone(), Slot::Vary(rule.clone()));
                rule
            }
        };
        let vkey: Arc<str> = cache::variant_key(primary, &rule, req).into();
        let plain = rule.names.iter().all(|n| !req.contains_key(n));
        if !rule.admit(&vkey, plain, self.cfg().cache.max_variants, Instant::now()) {
            self.metrics.not_stored(TOO_MANY_VARIANTS);
            return Err(TOO_MANY_VARIANTS);
        }
        self.store.insert(vkey.clone(), Slot::Object(obj.clone()));
        self.kept_after_insert(primary, &vkey, obj, generation)
    }

    /// Judges an object whose fill began at ban `generation` against the bans since: false
    /// when a hard one selects it; marked stale when only soft ones do.
    pub(super) fn judged_in_flight(&self, primary: &Arc<str>, obj: &Object, generation: u64) -> bool {
        match self.bans.since(generation, primary, &obj.tags) {
            InFlight::Untouched => true,
            InFlight::SoftBounded => {
                obj.banned.mark(cache::Banned::Bounded);
                true
            }
            InFlight::Soft => {
                obj.banned.mark(cache::Banned::Exact);
                true
            }
            InFlight::Hard => false,
        }
    }

    /// Checks a just-stored object against the bans again: a ban that arrived between the
    /// check before storing and the insert walked the store before the object was in it, so
    /// the object is taken out again (the next request fetches it anew), or marked stale
    /// when the ban was soft.
    pub(super) fn kept_after_insert(
        &self,
        primary: &Arc<str>,
        key: &Arc<str>,
        obj: &Arc<Object>,
        generation: u64,
    ) -> Result<(), &'static str> {
        if self.judged_in_flight(primary, obj, generation) {
            return Ok(());
        }
        if let Some(Slot::Object(current)) = self.store.get(key) {
            if current.id == obj.id {
                self.store.remove(key);
            }
        }
        self.metrics.not_stored(BANNED_IN_FLIGHT);
        Err(BANNED_IN_FLIGHT)
    }

    /// Turns an origin response into a stored object: decoded, compressed, with validators.
    /// `fetched_gen`: the ban generation noted before the fetch that brought it began.
    pub(super) async fn build_object(
        &self,
        parts: http::response::Parts,
        body: Bytes,
        life: freshness::Lifetime,
        path: &str,
        query: Option<&str>,
        fetched_gen: u64,
    ) -> Option<Arc<Object>> {
        let coding = parts.headers.get(header::CONTENT_ENCODING).map(HeaderValue::as_bytes);
        let gzipped = coding.is_some_and(|c| c.eq_ignore_ascii_case(b"gzip"));
        // A coding the proxy does not decode (br, zstd, a chain, …) is stored as it came,
        // with its Content-Encoding, and served as it came to every client.
        let opaque = coding.is_some_and(|c| !c.eq_ignore_ascii_case(b"gzip") && !c.eq_ignore_ascii_case(b"identity"));
        let compressible = !opaque && compress::compressible(parts.headers.get(header::CONTENT_TYPE));
        let min = self.cfg().cache.compress_min_size as usize;
        let limit = self.cfg().cache.max_object_size;
        let want_br = self.cfg().cache.brotli;
        // The identity body, its gzip and brotli, and where its latest-comments list is.
        type Encoded = (Bytes, Option<Bytes>, Option<Bytes>, Option<cache::ListAt>);
        let work = move || -> Option<Encoded> {
            // A copy of exactly the body's size: `body` may sit in a larger, grown buffer.
            let identity = if gzipped {
                compress::gunzip(&body, limit)?
            } else {
                Bytes::copy_from_slice(&body)
            };
            if !compressible || identity.len() < min {
                return Some((identity, None, None, None));
            }
            let (gz, recent) = cache::gzip_page(&identity);
            let br = if want_br {
                compress::brotli(&identity, gz.as_ref().map_or(identity.len(), |g| g.len()))
            } else {
                None
            };
            Some((identity, gz, br, recent))
        };
        let (identity, gzip, br, recent) = if gzipped || compressible {
            // Compression runs on the blocking pool, a few at a time: each encoder holds
            // hundreds of KiB while it works, and a burst of misses must not multiply that.
            let _permit = self.compress_permits.acquire().await.ok()?;
            tokio::task::spawn_blocking(work).await.ok()??
        } else {
            work()?
        };
        // Copy what is kept into allocations of its own: header values parsed by hyper are
        // slices of the connection's read buffer, which they would otherwise keep alive.
        let tags = tags::object_tags(&self.tag_rules, path, query, parts.status, &parts.headers, &identity);
        let strip_tags = self.cfg().bans.strip_tag_headers;
        let mut headers = HeaderMap::with_capacity(parts.headers.len());
        let mut hidden = HeaderMap::new();
        for (name, value) in parts.headers.iter() {
            if NOT_STORED.contains(name) && !(opaque && name == header::CONTENT_ENCODING)
                || life.strip.contains(name)
                || strip_tags && self.cfg().bans.tag_headers.contains(name)
            {
                continue;
            }
            if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
                if self.cfg().cache.targeted_fields.contains(name) {
                    hidden.append(name.clone(), v);
                } else {
                    headers.append(name.clone(), v);
                }
            }
        }
        // Vary as delivered: the origin's, as it wrote it, plus the encoding we negotiate.
        let names_encoding = headers
            .get_all(header::VARY)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|n| n.trim_ascii().eq_ignore_ascii_case(b"accept-encoding"));
        if (gzip.is_some() || br.is_some()) && !names_encoding {
            headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        let etag = match headers.get(header::ETAG) {
            Some(e) => Some(e.clone()),
            None if parts.status == StatusCode::OK => {
                let tag = HeaderValue::from_str(&cache::body_etag(&identity)).ok();
                if let Some(t) = &tag {
                    headers.insert(header::ETAG, t.clone());
                }
                tag
            }
            None => None,
        };
        let last_modified = headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s).ok());
        add_delivery_slots(&mut headers, gzip.is_some() || br.is_some());
        let now = Instant::now();
        let (fresh_until, grace_until, error_until, keep_until) = self.lifetime_bounds(now, &life);
        Some(Arc::new(Object {
            status: parts.status,
            headers,
            hidden,
            identity,
            gzip,
            br,
            recent,
            etag,
            last_modified,
            stored_at: now,
            initial_age: life.initial_age,
            fresh_until,
            grace_until,
            error_until,
            keep_until,
            compressible,
            tags: tags.into_iter().map(Arc::from).collect(),
            fetched_gen,
            id: cache::next_object_id(),
            banned: cache::BanMark::default(),
        }))
    }

    /// Freshness, grace, stale-if-error and keep ends of an object stored now: while the node
    /// is unconfirmed, freshness at most `confirm_within`, and no grace, stale-if-error or keep.
    pub(super) fn lifetime_bounds(
        &self,
        now: Instant,
        life: &freshness::Lifetime,
    ) -> (Instant, Instant, Instant, Instant) {
        let fresh = now + life.ttl;
        if self.cluster.confirmed(now) {
            let (grace, error) = (fresh + life.grace, fresh + life.stale_if_error);
            (fresh, grace, error, grace.max(error) + life.keep)
        } else {
            let cap = fresh.min(now + self.cluster.unconfirmed_ttl());
            (cap, cap, cap, cap)
        }
    }

    /// Serves stale while one background request refreshes the object. None starts when
    /// only bounded list bans made it stale and it was fetched less than
    /// `cache.list_refresh` ago ([`bans::refresh_due`]), or when the origin budget has no
    /// place for a refresh ([`crate::budget`]): a later request starts it.
    pub(super) fn refresh_in_background(
        self: &Arc<Self>,
        key: Arc<str>,
        lk: &Lookup,
        stale: &Arc<Object>,
        client: SocketAddr,
    ) {
        let now = Instant::now();
        let due = crate::bans::refresh_due(
            stale.banned.get(),
            now < stale.fresh_until,
            now.saturating_duration_since(stale.stored_at),
            self.cfg().cache.list_refresh,
        );
        if !due {
            self.metrics.list_refreshes_deferred.inc();
            return;
        }
        if self.flights.lock().contains_key(&key) {
            return;
        }
        let Some(permit) = self.budget.background() else {
            return;
        };
        let tx = {
            let mut flights = self.flights.lock();
            if flights.contains_key(&key) {
                return;
            }
            let (tx, rx) = watch::channel(None);
            flights.insert(key.clone(), rx);
            tx
        };
        let Ok(mut req) = self.fill_request(lk, client) else {
            return;
        };
        add_validators(req.headers_mut(), stale);
        let this = self.clone();
        let primary = lk.primary.clone();
        let stale = stale.clone();
        let target = (lk.parts.uri.path().to_string(), lk.query.clone());
        self.metrics.background_refreshes.inc();
        tokio::spawn(async move {
            let guard = FlightGuard {
                flights: &this.flights,
                key: key.clone(),
                tx,
                done: false,
            };
            let flight = this.refresh(req, permit, &primary, key, &stale, &target, true).await;
            guard.finish(flight);
        });
    }

    /// A background refresh of `stale`, holding `permit` (its place in the origin budget)
    /// until the origin's answer begins: from the key's home node when it is another live
    /// node and `shielded` (its answer judged as [`Proxy::fill`] judges it), else from the
    /// origin.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn refresh(
        &self,
        req: Request<ProxyBody>,
        permit: crate::budget::Permit,
        primary: &Arc<str>,
        key: Arc<str>,
        stale: &Arc<Object>,
        (path, query): &(String, Option<String>),
        shielded: bool,
    ) -> Flight {
        let mut permit = Some(permit);
        let noted = self.bans.generation();
        let url = req.uri().clone();
        let req_headers = req.headers().clone();
        let mut home = if shielded { self.home_of(primary, false) } else { None };
        let mut next = Some(req);
        // At most two rounds: the home's answer, then (when a ban may postdate it) the origin's.
        loop {
            let req = next.take().unwrap_or_else(|| shield::request_again(&url, &req_headers));
            let (resp, source) = match self.fetch(req, home.as_ref(), &mut permit).await {
                Ok(r) => r,
                Err(FetchError::Deferred) => {
                    // The key's home had no place for it: the stale copy is served on, and a
                    // later request refreshes it.
                    tracing::debug!(%url, "background refresh deferred by the key's home");
                    return Flight::Failed(StatusCode::SERVICE_UNAVAILABLE);
                }
                Err(e) => {
                    // stale-if-error: keep serving the stale copy until its grace ends.
                    tracing::warn!(%url, error = %e, "background refresh failed; serving stale");
                    return Flight::Failed(e.status());
                }
            };
            let generation = noted;
            let (mut parts, body) = resp.into_parts();
            origin::strip_hop_by_hop(&mut parts.headers);
            if parts.status.is_server_error() {
                tracing::warn!(%url, status = parts.status.as_u16(), "origin error on background refresh; serving stale");
                return Flight::Failed(parts.status);
            }
            if parts.status == StatusCode::NOT_MODIFIED {
                if matches!(source, Source::Home(..))
                    && self.bans.since(generation, primary, &stale.tags) == InFlight::Hard
                {
                    self.shield_fallback(Fallback::Banned, path, "a ban arrived here while the home was asked");
                    home = None;
                    continue;
                }
                self.shield_used(&source);
                let (obj, verdict) = self.revalidated(stale, &parts.headers, asked(&req_headers), generation);
                return match verdict {
                    Ok(()) => {
                        let _ = self.store_object(primary, &req_headers, &obj, generation);
                        Flight::Stored(obj, generation)
                    }
                    Err(why) => {
                        self.metrics.not_stored(why.as_str());
                        self.store.remove(&key);
                        self.remember_uncacheable(&key, stale.status, why)
                    }
                };
            }
            let mut life = match freshness::stored_lifetime(
                &self.cfg().cache,
                asked(&req_headers),
                parts.status,
                &parts.headers,
                SystemTime::now(),
            ) {
                Ok(l) => l,
                Err(why) => {
                    // The URL became uncacheable: drop the stale copy.
                    self.shield_used(&source);
                    self.metrics.not_stored(why.as_str());
                    self.store.remove(&key);
                    return self.remember_uncacheable(&key, parts.status, why);
                }
            };
            source.cap_life(&mut life);
            let limit = self.cfg().cache.max_object_size;
            let collected = tokio::time::timeout(
                self.origin.body_timeout,
                http_body_util::Limited::new(body, limit as usize).collect(),
            )
            .await;
            let body = match collected {
                Ok(Ok(c)) => c.to_bytes(),
                _ if matches!(source, Source::Home(..)) => {
                    self.shield_fallback(Fallback::Error, path, "the answer broke off or was too large");
                    home = None;
                    continue;
                }
                _ => {
                    tracing::warn!(%url, "origin body failed or too large on background refresh");
                    return Flight::Failed(StatusCode::BAD_GATEWAY);
                }
            };
            let Some(mut obj) = self
                .build_object(parts, body, life, path, query.as_deref(), generation)
                .await
            else {
                return Flight::Failed(StatusCode::BAD_GATEWAY);
            };
            if let Source::Home(_, answered, _) = &source {
                adopt_home_answer(&mut obj, answered);
                if self.bans.since(generation, primary, &obj.tags) == InFlight::Hard {
                    self.shield_fallback(Fallback::Banned, path, "a ban arrived here while the home was asked");
                    home = None;
                    continue;
                }
                self.shield_used(&source);
            }
            let _ = self.store_object(primary, &req_headers, &obj, generation);
            return Flight::Stored(obj, generation);
        }
    }
}

/// Whether a fill brought the variant its client asked for: the request headers the
/// response's `Vary` names are the same in the client's request and in the fill.
fn fetched_as_asked(resp: &HeaderMap, client: &HeaderMap, sent: &HeaderMap) -> bool {
    cache::vary_names(resp)
        .iter()
        .all(|name| client.get_all(name).iter().eq(sent.get_all(name).iter()))
}

/// Adds the tags a home gave an object to those this node found (the home's include tags
/// from fields it strips before storing). Only on an object not shared yet.
/// Takes what a home's answer says about an object built from it: the home's tags, and, when
/// the home answered with a copy only bounded list bans made stale, the same staleness here.
fn adopt_home_answer(obj: &mut Arc<Object>, answered: &Answered) {
    with_home_tags(obj, &answered.tags);
    if answered.served == shield::LAGGING {
        obj.banned.mark(cache::Banned::Bounded);
    }
}

fn with_home_tags(obj: &mut Arc<Object>, home: &[String]) {
    let Some(o) = Arc::get_mut(obj) else { return };
    let extra: Vec<Arc<str>> = home
        .iter()
        .filter(|t| !o.tags.iter().any(|have| **have == ***t))
        .map(|t| Arc::from(t.as_str()))
        .collect();
    if !extra.is_empty() {
        let mut all = o.tags.to_vec();
        all.extend(extra);
        o.tags = all.into_boxed_slice();
    }
}

/// A body made of bytes already read followed by the rest of a stream.
fn chain(prefix: Bytes, rest: ProxyBody) -> ProxyBody {
    match rest {
        ProxyBody::Stream(mut s) => {
            s.set_prefix(prefix);
            ProxyBody::Stream(s)
        }
        _ => ProxyBody::full(prefix),
    }
}

/// The statuses that count as the origin failing for `stale-if-error` (RFC 5861 §4).
fn is_error_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 500 | 502 | 503 | 504)
}

/// What of a request sent to the origin bears on storing its answer.
fn asked(sent: &HeaderMap) -> freshness::Asked {
    freshness::Asked {
        authorization: sent.contains_key(header::AUTHORIZATION),
    }
}

/// Whether an object has a validator of the origin's (not an `ETag` the proxy derived), so a
/// conditional request can revalidate it.
pub(super) fn revalidatable(o: &Object) -> bool {
    o.headers.contains_key(header::LAST_MODIFIED) || o.etag.as_ref().is_some_and(|e| !is_derived_etag(e))
}

/// Makes a request revalidate a stored object: its origin `ETag` as `If-None-Match`, its
/// `Last-Modified` as `If-Modified-Since` (RFC 9111 §4.3.1).
fn add_validators(req: &mut HeaderMap, stale: &Object) {
    if let Some(etag) = stale
        .headers
        .get(header::ETAG)
        .filter(|_| stale.etag.as_ref().is_some_and(|e| !is_derived_etag(e)))
    {
        req.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(lm) = stale.headers.get(header::LAST_MODIFIED) {
        req.insert(header::IF_MODIFIED_SINCE, lm.clone());
    }
}

fn is_derived_etag(e: &HeaderValue) -> bool {
    e.as_bytes().starts_with(b"W/\"") && e.len() > 20 && e.as_bytes()[19] == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_etags_are_recognised_and_stable() {
        let body = b"hello";
        let tag = cache::body_etag(body);
        assert!(is_derived_etag(&HeaderValue::from_str(&tag).unwrap()));
        assert!(!is_derived_etag(&HeaderValue::from_static("\"origin-etag\"")));
        assert_eq!(tag, cache::body_etag(b"hello"));
    }

    #[test]
    fn a_fill_is_its_clients_variant_when_the_varied_headers_match() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            m
        };
        let resp = h(&[("vary", "X-Device, Accept-Encoding")]);
        let client = h(&[("x-device", "a"), ("accept-encoding", "gzip")]);
        assert!(!fetched_as_asked(&resp, &client, &h(&[])));
        assert!(fetched_as_asked(&resp, &client, &h(&[("x-device", "a")])));
        assert!(fetched_as_asked(&resp, &h(&[]), &h(&[])));
        assert!(fetched_as_asked(&h(&[]), &client, &h(&[])), "no Vary, any request");
    }
}
