//! The ban side of the proxy: applying bans here and queueing them for the siblings,
//! taking a sibling's sync, flushing, whether the cache may be trusted, and the public
//! `PURGE` of allowlisted addresses (and its URL form, `GET /purge/PATH`).

use super::*;

/// The two shapes of a public purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeForm {
    /// `PURGE /PATH`, with `X-Purge-Method` saying how to read the path.
    Method,
    /// nginx Helper's `GET {bans.purge_path}/PATH` (or `HEAD`): the path after the prefix
    /// starts at this byte of the request target.
    Url(usize),
}

impl PurgeForm {
    /// Whether `req` is a public purge; the URL form only when `purge_path` is set.
    pub fn of<B>(req: &Request<B>, purge_path: &str) -> Option<PurgeForm> {
        if req.method().as_str() == "PURGE" {
            return Some(PurgeForm::Method);
        }
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return None;
        }
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        purge_url_target(purge_path, target).map(|t| PurgeForm::Url(target.len() - t.len()))
    }
}

/// The URL a purge URL names: `{prefix}/PATH?QUERY` → `/PATH?QUERY`; `None` when `prefix` is
/// empty (the form is off) or `target` does not start with `prefix/`.
pub fn purge_url_target<'a>(prefix: &str, target: &'a str) -> Option<&'a str> {
    if prefix.is_empty() {
        return None;
    }
    target.strip_prefix(prefix).filter(|rest| rest.starts_with('/'))
}

/// The ban a purge URL's target asks for: a path ending in `*` (and no query) is a prefix,
/// anything else the exact URL.
pub fn purge_url_ban(target: &str) -> Ban {
    match target.strip_suffix('*') {
        Some(prefix) if !target.contains('?') => Ban::new(Kind::Prefix, prefix),
        _ => Ban::new(Kind::Url, target),
    }
}

/// What a ban did, for the admin API's answer.
#[derive(Debug, Clone, Copy)]
pub struct BanResult {
    /// The ban's number in this node's sequence.
    pub seq: u64,
    /// Entries removed or marked stale here.
    pub removed: usize,
}

/// How long a sibling's copy of a bounded soft ban waits for the syncer's own copy (which
/// may carry a page patch) before it is applied.
const SIBLING_SOFT_HOLD: std::time::Duration = std::time::Duration::from_secs(1);

impl Proxy {
    /// Whether cached objects may be served: always on a node that is current with its
    /// siblings; otherwise per `cluster.when_unconfirmed`, after flushing once.
    #[inline]
    pub fn cache_trusted(&self, now: Instant) -> bool {
        if self.cluster.confirmed(now) {
            return true;
        }
        match self.cfg().cluster.when_unconfirmed {
            crate::config::Unconfirmed::Pass => false,
            crate::config::Unconfirmed::Flush => {
                if self.cluster.take_flush() {
                    self.flush(FlushReason::Unconfirmed);
                }
                true
            }
        }
    }

    /// Housekeeping for the cluster, run every maintenance tick: flush when unconfirmed (so
    /// it does not wait for the next request) and publish the cluster's metrics.
    pub fn check_cluster(&self) {
        let now = Instant::now();
        self.apply_held_soft(now);
        let confirmed = self.cluster.confirmed(now);
        if !confirmed {
            self.cache_trusted(now);
        }
        let m = &self.metrics.cluster;
        m.confirmed.set(i64::from(confirmed));
        m.tags(self.store.tags.len());
        for s in self.cluster.report() {
            let lag = s.confirmed_ms_ago.map_or(f64::INFINITY, |ms| ms as f64 / 1000.0);
            m.sibling(&s.url, s.queued, s.up, lag);
        }
    }

    /// Empties the cache on the cluster's behalf.
    pub fn flush(&self, why: FlushReason) {
        let n = self.store.entry_count();
        if let Ok(all) = Compiled::new(Ban::all(), &[]) {
            self.bans.apply(&self.store, Arc::new(all));
        }
        self.metrics.cluster.flush(why.as_str());
        if n > 0 || why != FlushReason::Unconfirmed {
            tracing::warn!(reason = why.as_str(), objects = n, "flushed the cache");
        }
    }

    /// Applies a ban here and queues it for every sibling; an invalid ban is neither. A ban
    /// without an id gets one here, which its siblings receive with it.
    pub fn ban(&self, ban: Ban) -> Result<BanResult, BanError> {
        let c = self.compile(ban)?;
        Ok(self.apply_ban(c))
    }

    /// Checks and prepares a ban as this node applies it: bounded when it is a soft ban
    /// that allows lag of a tag in `cache.list_tags` ([`Compiled::bounded_by`]).
    fn compile(&self, ban: Ban) -> Result<Compiled, BanError> {
        let cfg = self.cfg();
        Ok(Compiled::new(ban, &cfg.policy.strip_query)?.bounded_by(&cfg.cache.list_tags))
    }

    /// Applies bans in order, each as [`Proxy::ban`] does, once every one of them is known
    /// to be valid: if one is not, none is applied, and the error is the first invalid
    /// one's index with why.
    pub fn ban_all(&self, bans: Vec<Ban>) -> Result<Vec<BanResult>, (usize, BanError)> {
        let compiled = bans
            .into_iter()
            .enumerate()
            .map(|(i, ban)| self.compile(ban).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(compiled.into_iter().map(|c| self.apply_ban(c)).collect())
    }

    /// Applies a checked ban here and queues it for every sibling: given an id first when it
    /// has none; one whose id this node applied already (the syncer sends each ban to every
    /// node, and every node passes it on) is neither applied nor passed on again.
    pub(super) fn apply_ban(&self, mut c: Compiled) -> BanResult {
        if self.bans.applied_at(c.ban.id).is_some() {
            return BanResult {
                seq: self.cluster.latest(),
                removed: 0,
            };
        }
        c.ban = std::mem::replace(&mut c.ban, Ban::all()).with_id();
        let c = Arc::new(c);
        let patched = std::sync::atomic::AtomicUsize::new(0);
        let removed = match c.ban.patch.as_deref() {
            Some(p) => self.bans.apply_patching(&self.store, c.clone(), |key, generation| {
                let done = self.patch_stored(key, p, generation);
                patched.fetch_add(usize::from(done), std::sync::atomic::Ordering::Relaxed);
                done
            }),
            None => self.bans.apply(&self.store, c.clone()),
        };
        self.metrics.cluster.applied(c.kind());
        self.metrics.purges.inc();
        // Siblings get the ban without its patch: the syncer sends the patch to each of them,
        // and one that missed it bans (sync messages stay small).
        let seq = match &c.ban.patch {
            Some(_) => self.cluster.broadcast(&Ban {
                patch: None,
                ..c.ban.clone()
            }),
            None => self.cluster.broadcast(&c.ban),
        };
        let patched = patched.into_inner();
        tracing::info!(kind = c.kind(), value = %c.ban.value, host = c.ban.host.as_deref().unwrap_or("*"), soft = c.ban.soft, id = c.ban.id, seq, removed, patched, "ban");
        BanResult { seq, removed }
    }

    /// Replaces the page stored under `key` with itself patched as `patch` says, noted as
    /// current with ban `generation` and noted for a check against WordPress's render; false
    /// when patching is off, the page cannot be patched or a check found the patch's
    /// template wrong (the ban then applies to it), with why counted.
    fn patch_stored(&self, key: &str, patch: &strata_wire::patch::Patch, generation: u64) -> bool {
        let kind = patch.as_str();
        if !self.cfg().comments.patch_pages {
            self.metrics.patch(kind, "off");
            return false;
        }
        let Some(Slot::Object(o)) = self.store.get(key) else {
            return false;
        };
        if o.status != StatusCode::OK {
            self.metrics.patch(kind, "not-ok");
            return false;
        }
        // A list of latest comments stored on its own is patched alone: the page around it is
        // neither read nor compressed again.
        // The template is judged before the patched page is compressed: a template a check
        // turned off costs no compression.
        let template_off = |template: u64| {
            let off = self.template_off(&crate::patch_checks::Template { kind, key: template });
            if off {
                tracing::debug!(key, kind, "page not patched: a check found this template wrong; banned");
                self.metrics.patch(kind, "template-off");
            }
            off
        };
        let done = match (patch, &o.recent) {
            (strata_wire::patch::Patch::Recent(r), Some(at)) => {
                if template_off(crate::patch::RECENT_TEMPLATE) {
                    return false;
                }
                o.identity
                    .get(at.segment.identity.clone())
                    .and_then(|list| std::str::from_utf8(list).ok())
                    .ok_or(crate::patch::Unpatched::NotText)
                    .and_then(|list| crate::patch::recent_list(list, r))
                    .and_then(|list| {
                        o.patched_list(list.as_bytes(), generation)
                            .ok_or(crate::patch::Unpatched::NoList)
                    })
                    .map(|patched| (patched, crate::patch::RECENT_TEMPLATE))
            }
            _ => match crate::patch::patched(&o.identity, patch) {
                Ok(p) if template_off(p.template) => return false,
                Ok(p) => Ok((o.patched(Bytes::from(p.body), generation), p.template)),
                Err(why) => Err(why),
            },
        };
        match done {
            Ok((patched, template)) => {
                let template = crate::patch_checks::Template { kind, key: template };
                let fresh = Arc::new(patched);
                let id = fresh.id;
                self.store.insert(Arc::from(key), Slot::Object(fresh));
                self.metrics.patch(kind, "patched");
                self.patched_for_check(key, id, template);
                true
            }
            Err(why) => {
                tracing::debug!(key, kind, reason = why.as_str(), "page not patched: {why}; banned");
                self.metrics.patch(kind, why.as_str());
                false
            }
        }
    }

    /// Applies the siblings' soft bans held until `now` whose copy from the syncer did not
    /// come (see [`Proxy::receive_sync`]).
    fn apply_held_soft(&self, now: Instant) {
        let due: Vec<crate::bans::Compiled> = {
            let mut held = self.held_soft.lock();
            if held.iter().all(|(at, _)| *at > now) {
                return;
            }
            let (due, kept) = std::mem::take(&mut *held).into_iter().partition(|(at, _)| *at <= now);
            *held = kept;
            due.into_iter().map(|(_, c)| c).collect()
        };
        for c in due {
            if self.bans.applied_at(c.ban.id).is_none() {
                let kind = c.kind();
                let removed = self.bans.apply(&self.store, Arc::new(c));
                self.metrics.cluster.applied(kind);
                tracing::debug!(kind, removed, "sibling's held soft ban applied");
            }
        }
    }

    /// Takes a sibling's sync: applies its bans once and in order (or flushes on a gap or a
    /// restart), then says how far this node got.
    pub fn receive_sync(&self, req: &strata_wire::ban::SyncRequest) -> strata_wire::ban::SyncReply {
        let m = &self.metrics.cluster;
        let admission = self.cluster.admit(req);
        m.received.inc_by(req.bans.len() as u64);
        if let Some(why) = admission.flush {
            tracing::warn!(from = %req.node, reason = why.as_str(), "sibling's ban sequence broke; flushing");
            self.flush(why);
        }
        let now_ms = strata_wire::ids::unix_ms();
        for &i in &admission.apply {
            let item = &req.bans[i];
            if self.bans.applied_at(item.ban.id).is_some() {
                // Had already, from the syncer or another sibling.
                tracing::debug!(from = %req.node, seq = item.seq, id = item.ban.id, "sibling's ban applied before");
                m.propagation.observe(now_ms.saturating_sub(item.at_ms) as f64 / 1000.0);
                continue;
            }
            // An older sibling's ban without an id gets one of this node's: it can still be
            // listed to a home, which then judges it by what it selects.
            match self.compile(item.ban.clone().with_id()) {
                Ok(c) if c.ban.soft && c.bounded && c.ban.id == item.ban.id => {
                    // A bounded soft ban lets pages lag (up to `cache.list_refresh`): its
                    // copy from the syncer, which may patch the pages instead, is waited for
                    // a moment; without it, this copy is applied then.
                    tracing::debug!(from = %req.node, seq = item.seq, id = c.ban.id, "sibling's soft ban held for the syncer's copy");
                    self.held_soft.lock().push((Instant::now() + SIBLING_SOFT_HOLD, c));
                }
                Ok(c) => {
                    let kind = c.kind();
                    let removed = self.bans.apply(&self.store, Arc::new(c));
                    m.applied(kind);
                    tracing::debug!(from = %req.node, seq = item.seq, kind, removed, "sibling's ban applied");
                }
                Err(e) => {
                    tracing::warn!(from = %req.node, seq = item.seq, error = %e, "sibling's ban unreadable; flushing");
                    self.flush(FlushReason::Gap);
                }
            }
            m.propagation.observe(now_ms.saturating_sub(item.at_ms) as f64 / 1000.0);
        }
        self.cluster.reply(admission.applied)
    }

    /// `PURGE` on the public port from an allowlisted address (what WordPress purge plugins
    /// send): `X-Purge-Method: regex` bans the path expression on that host, anything else
    /// the exact URL with its variants. The URL form bans the URL after `bans.purge_path`
    /// (a prefix when it ends in `*`). Applied and broadcast like any ban.
    pub(super) fn public_purge(&self, req: &Request<Incoming>, form: PurgeForm) -> Answer {
        let Some(host) = host_of(req.uri(), req.headers()) else {
            return Answer::new(
                synth(StatusCode::BAD_REQUEST, "missing or invalid Host header", "host"),
                Outcome::Synth,
            );
        };
        let method = req
            .headers()
            .get("x-purge-method")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("default")
            .to_ascii_lowercase();
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut ban = if let PurgeForm::Url(start) = form {
            purge_url_ban(&path[start..])
        } else if method == "regex" {
            // The plugin sends a path expression such as `/.*` or `/category/.*`; keys are
            // `host/path?query`.
            Ban::new(Kind::Regex, format!("^[^/]*(?:{path})"))
        } else {
            Ban::new(Kind::Url, path)
        };
        ban.host = Some(host.to_string());
        match self.ban(ban) {
            Ok(r) => {
                let mut resp = Response::new(ProxyBody::full(Bytes::from(format!(
                    "{{\"seq\":{},\"removed\":{}}}\n",
                    r.seq, r.removed
                ))));
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Answer::new(resp, Outcome::Synth)
            }
            Err(e) => Answer::new(synth(StatusCode::BAD_REQUEST, &e.to_string(), "purge"), Outcome::Synth),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_wire::ban::{Sequenced, SyncRequest};

    #[test]
    fn purge_urls_name_the_path_after_the_prefix() {
        assert_eq!(purge_url_target("/purge", "/purge/hello/"), Some("/hello/"));
        assert_eq!(purge_url_target("/purge", "/purge/"), Some("/"));
        assert_eq!(purge_url_target("/purge", "/purge/a/?p=5&x=1"), Some("/a/?p=5&x=1"));
        assert_eq!(purge_url_target("/cache/purge", "/cache/purge/a/"), Some("/a/"));
        // Not the prefix followed by a slash: an ordinary page.
        for target in ["/purge", "/purged/", "/purge?x=1", "/a/purge/b/", "/"] {
            assert_eq!(purge_url_target("/purge", target), None, "{target}");
        }
        assert_eq!(purge_url_target("", "/purge/hello/"), None, "off");
    }

    #[test]
    fn purge_urls_are_exact_or_prefix_bans() {
        let b = purge_url_ban("/hello/");
        assert_eq!((b.kind, b.value.as_str()), (Kind::Url, "/hello/"));
        let b = purge_url_ban("/category/news/*");
        assert_eq!((b.kind, b.value.as_str()), (Kind::Prefix, "/category/news/"));
        let b = purge_url_ban("/*");
        assert_eq!((b.kind, b.value.as_str()), (Kind::Prefix, "/"));
        // A star in a query is part of the URL.
        let b = purge_url_ban("/?s=a*");
        assert_eq!((b.kind, b.value.as_str()), (Kind::Url, "/?s=a*"));
    }

    #[test]
    fn which_requests_are_public_purges() {
        let req = |m: &str, t: &str| Request::builder().method(m).uri(t).body(()).unwrap();
        assert_eq!(PurgeForm::of(&req("PURGE", "/a/"), ""), Some(PurgeForm::Method));
        assert_eq!(
            PurgeForm::of(&req("GET", "/purge/a/"), "/purge"),
            Some(PurgeForm::Url(6))
        );
        assert_eq!(
            PurgeForm::of(&req("HEAD", "/purge/a/"), "/purge"),
            Some(PurgeForm::Url(6))
        );
        assert_eq!(PurgeForm::of(&req("GET", "/purge/a/"), ""), None, "the URL form is off");
        assert_eq!(PurgeForm::of(&req("POST", "/purge/a/"), "/purge"), None);
        assert_eq!(PurgeForm::of(&req("GET", "/a/"), "/purge"), None);
    }

    /// A node with one sibling (never reached: its queue only fills).
    fn node() -> (Proxy, std::path::PathBuf) {
        let secret = std::env::temp_dir().join(format!("strata-ban-ids-{}", std::process::id()));
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:2\"\n\
             [origin]\nurl = \"http://127.0.0.1:3\"\n\
             [cluster]\nsecret_file = {:?}\nsiblings = [\"http://127.0.0.1:4\"]\n",
            secret.display().to_string()
        );
        let cfg = crate::config::Config::from_toml(&text, None).unwrap();
        (Proxy::new(Arc::new(cfg)), secret)
    }

    #[tokio::test]
    async fn a_ban_gets_an_id_once_and_keeps_it_when_passed_on() {
        let (p, secret) = node();
        let _ = std::fs::remove_file(secret);
        p.ban(Ban::new(Kind::Tag, "post:1")).unwrap();
        let queued = p.cluster.queued();
        let id = queued[0].id;
        assert_ne!(id, 0, "given an id before it is applied and passed on");
        assert!(p.bans.applied_at(id).is_some(), "applied here under that id");
        // A ban that has an id (the syncer's) keeps it.
        let syncer = Ban {
            id: 77,
            ..Ban::new(Kind::Tag, "post:2")
        };
        p.ban(syncer.clone()).unwrap();
        assert_eq!(p.cluster.queued()[1].id, 77);
        // The same ban again (from the syncer and from a sibling): applied and passed on once.
        let generation = p.bans.generation();
        p.ban(syncer.clone()).unwrap();
        p.receive_sync(&SyncRequest {
            node: "b".into(),
            instance: 1,
            latest: 1,
            bans: vec![Sequenced {
                seq: 1,
                at_ms: 0,
                ban: syncer,
            }],
            msg: 1,
            leaving: false,
        });
        assert_eq!(p.bans.generation(), generation, "not applied again");
        assert_eq!(p.cluster.queued().len(), 2, "nor passed on again");
        // An older sibling's ban without an id gets one here.
        p.receive_sync(&SyncRequest {
            node: "b".into(),
            instance: 1,
            latest: 2,
            bans: vec![Sequenced {
                seq: 2,
                at_ms: 0,
                ban: Ban::new(Kind::Tag, "post:3"),
            }],
            msg: 2,
            leaving: false,
        });
        assert_eq!(p.bans.generation(), generation + 1);
        let listed = p.bans.applied_within(std::time::Duration::from_secs(60), 256);
        assert!(
            listed.bans.iter().all(|b| b.id != 0) && listed.bans.len() == 3,
            "{listed:?}"
        );
    }
}
