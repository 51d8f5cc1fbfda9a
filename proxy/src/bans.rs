//! Applying bans to the store: exact URLs (with their variants), prefixes, regular
//! expressions, tags and everything, hard (removed) or soft (stale, refreshed on next use).
//!
//! No ban is kept to be tested at lookup time: a ban finds what it matches when it arrives
//! (tags through the store's tag index, URLs by key, prefixes and expressions by one walk over
//! the keys) and acts on it then, so a lookup costs the same after a million bans as after
//! none. The one thing a ban must still catch later is a fill that was already on its way
//! when the ban arrived; the last few thousand bans are kept, with a generation number, to
//! judge such fills before they are stored.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use strata_wire::ban::{Ban, Kind};

use crate::cache::{Slot, Store, VARIANT_SEP};
use crate::policy;

/// Bans remembered for judging fills that were in flight when they arrived.
const RECENT_BANS: usize = 4096;
/// Compiled size limit of an operator's regular expression.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a ban cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BanError {
    /// `value` is empty for a kind that needs one.
    #[error("a {0} ban needs a value")]
    MissingValue(&'static str),
    /// A URL or prefix that is neither absolute http(s) nor a path with `host`.
    #[error("{0:?} is not an http(s) URL, or a path starting with / (give host for paths)")]
    BadUrl(String),
    /// The regular expression does not compile.
    #[error("invalid regular expression: {0}")]
    BadRegex(String),
}

/// What a compiled ban selects.
#[derive(Debug)]
enum Matcher {
    /// One primary key and its variants.
    Url(String),
    /// Keys whose path (after the host) starts with this.
    Prefix(String),
    /// Keys (without the variant part) the expression matches.
    Regex(regex::Regex),
    /// Objects carrying the tag.
    Tag(String),
    /// Everything.
    All,
}

/// A ban ready to apply.
#[derive(Debug)]
pub struct Compiled {
    /// The ban as received, for logs and for passing on.
    pub ban: Ban,
    /// Only keys of this (normalised) host; `None` for every host.
    host: Option<String>,
    matcher: Matcher,
}

/// The host part of a cache key.
fn key_host(key: &str) -> &str {
    key.find('/').map_or(key, |i| &key[..i])
}

/// A key without its variant part.
fn key_url(key: &str) -> &str {
    key.find(VARIANT_SEP).map_or(key, |i| &key[..i])
}

impl Compiled {
    /// Checks and prepares a ban; `strip` are the query parameters the cache key drops.
    pub fn new(ban: Ban, strip: &[String]) -> Result<Compiled, BanError> {
        let mut host = ban.host.as_deref().map(policy::normalise_host);
        let need = |kind: Kind| {
            if ban.value.trim().is_empty() {
                Err(BanError::MissingValue(kind.as_str()))
            } else {
                Ok(())
            }
        };
        let matcher = match ban.kind {
            Kind::Url => {
                need(Kind::Url)?;
                let key = crate::policy::purge_key(&ban.value, ban.host.as_deref(), strip)
                    .ok_or_else(|| BanError::BadUrl(ban.value.clone()))?;
                host = Some(key_host(&key).to_string());
                Matcher::Url(key)
            }
            Kind::Prefix => {
                need(Kind::Prefix)?;
                let v = ban.value.as_str();
                if v.starts_with('/') {
                    Matcher::Prefix(v.to_string())
                } else {
                    let uri: http::Uri = v.parse().map_err(|_| BanError::BadUrl(v.to_string()))?;
                    let authority = uri
                        .authority()
                        .filter(|_| matches!(uri.scheme_str(), Some("http" | "https")))
                        .ok_or_else(|| BanError::BadUrl(v.to_string()))?;
                    host = Some(policy::normalise_host(authority.as_str()));
                    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
                    Matcher::Prefix(path_and_query.to_string())
                }
            }
            Kind::Regex => {
                need(Kind::Regex)?;
                let re = regex::RegexBuilder::new(&ban.value)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| BanError::BadRegex(e.to_string()))?;
                Matcher::Regex(re)
            }
            Kind::Tag => {
                need(Kind::Tag)?;
                Matcher::Tag(ban.value.trim().to_string())
            }
            Kind::All => Matcher::All,
        };
        Ok(Compiled { ban, host, matcher })
    }

    fn host_ok(&self, key: &str) -> bool {
        self.host.as_deref().is_none_or(|h| key_host(key) == h)
    }

    /// Whether an object stored under `key` with `tags` is selected.
    pub fn matches(&self, key: &str, tags: &[Arc<str>]) -> bool {
        if !self.host_ok(key) {
            return false;
        }
        let url = key_url(key);
        match &self.matcher {
            Matcher::Url(k) => url == k,
            Matcher::Prefix(p) => url[key_host(url).len()..].starts_with(p.as_str()),
            Matcher::Regex(re) => re.is_match(url),
            Matcher::Tag(t) => tags.iter().any(|x| **x == **t),
            Matcher::All => true,
        }
    }

    /// The metric label of its kind.
    pub fn kind(&self) -> &'static str {
        self.ban.kind.as_str()
    }
}

/// Applies bans and remembers the recent ones for in-flight fills.
#[derive(Default)]
pub struct Bans {
    /// Counts every ban applied; a fill notes it before asking the origin.
    generation: AtomicU64,
    /// The last bans with the generation each one made and when it arrived here (Unix
    /// milliseconds, never less than the one before).
    recent: parking_lot::Mutex<VecDeque<(u64, u64, Arc<Compiled>)>>,
}

impl Bans {
    /// The current generation, to note before a fill asks the origin.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Applies a ban to the store; returns how many entries it removed or marked stale.
    pub fn apply(&self, store: &Store, c: Arc<Compiled>) -> usize {
        self.apply_at(store, c, strata_wire::ids::unix_ms())
    }

    /// [`Bans::apply`] for a ban that arrived at `now_ms` (Unix milliseconds).
    pub fn apply_at(&self, store: &Store, c: Arc<Compiled>, now_ms: u64) -> usize {
        {
            // Recorded before acting, so a fill that finishes meanwhile sees it.
            let mut recent = self.recent.lock();
            let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            if recent.len() == RECENT_BANS {
                recent.pop_front();
            }
            // Arrival times never go back, even when the clock does: the judgement of a
            // peer's fill relies on their order.
            let arrived = recent.back().map_or(now_ms, |(_, prev, _)| now_ms.max(*prev));
            recent.push_back((generation, arrived, c.clone()));
        }
        let soft = c.ban.soft;
        let act = |keys: Vec<Arc<str>>| {
            keys.iter()
                .filter(|k| if soft { store.mark_stale(k) } else { store.remove(k) })
                .count()
        };
        match &c.matcher {
            Matcher::Url(key) => {
                // The HTTP page and the HTTPS page, each with its variants.
                [key.clone(), crate::cache::https_key(key)]
                    .iter()
                    .map(|key| {
                        let variants = match store.get(key) {
                            Some(Slot::Vary(_)) => {
                                let prefix = format!("{key}{VARIANT_SEP}");
                                store.keys(|k| k.starts_with(&prefix))
                            }
                            _ => Vec::new(),
                        };
                        let own = if soft { store.mark_stale(key) } else { store.remove(key) };
                        act(variants) + usize::from(own)
                    })
                    .sum()
            }
            Matcher::Tag(tag) => act(store.tags.keys(tag, |k| c.host_ok(k))),
            Matcher::All if c.host.is_none() && !soft => {
                store.maintain();
                let n = store.entry_count() as usize;
                store.clear();
                n
            }
            Matcher::Prefix(_) | Matcher::Regex(_) | Matcher::All => act(store.keys(|k| c.matches(k, &[]))),
        }
    }

    /// How the bans applied since generation `since` judge an object about to be stored
    /// under `key` with `tags` (its fill started before them). When too many bans arrived to
    /// tell, the answer is [`InFlight::Hard`].
    pub fn since(&self, since: u64, key: &str, tags: &[Arc<str>]) -> InFlight {
        if self.generation() == since {
            return InFlight::Untouched;
        }
        let recent = self.recent.lock();
        match recent.front() {
            Some((oldest, _, _)) if *oldest <= since + 1 => recent
                .iter()
                .filter(|(g, _, c)| *g > since && c.matches(key, tags))
                .map(|(_, _, c)| if c.ban.soft { InFlight::Soft } else { InFlight::Hard })
                .max()
                .unwrap_or(InFlight::Untouched),
            _ => InFlight::Hard,
        }
    }
}

impl Bans {
    /// The generation a fill answered by another node must be judged from: every ban that
    /// arrived here later than `after_ms` (the home's origin fetch start minus the allowed
    /// clock skew, Unix milliseconds) counts as applied since that fetch began, so
    /// [`Bans::since`] from the returned generation gives the same hard/soft judgement an
    /// origin fill gets. `None` when the remembered bans cannot tell (treat as hard).
    pub fn generation_before(&self, after_ms: u64) -> Option<u64> {
        let recent = self.recent.lock();
        let arrivals: Vec<(u64, u64)> = recent.iter().map(|(g, at, _)| (*g, *at)).collect();
        generation_before(&arrivals, self.generation(), after_ms)
    }
}

/// The generation before the first ban that arrived after `after_ms`, from the remembered
/// bans' `(generation, arrival)` pairs (oldest first) and the current generation. `None`
/// when bans were forgotten and the oldest one remembered already arrived after `after_ms`:
/// a forgotten one may have too.
pub fn generation_before(arrivals: &[(u64, u64)], current: u64, after_ms: u64) -> Option<u64> {
    match arrivals.iter().find(|(_, at)| *at > after_ms) {
        None => Some(current),
        Some((g, _)) => {
            let forgotten = arrivals.first().is_some_and(|(oldest, _)| *oldest > 1);
            if *g == arrivals[0].0 && forgotten {
                None
            } else {
                Some(g - 1)
            }
        }
    }
}

/// What the bans applied while a fill was at the origin say about the object it brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InFlight {
    /// None selects it: store it.
    Untouched,
    /// Only soft bans select it: store it already stale, as the soft ban would have left it
    /// (served while it is fetched again). Were it dropped, a page that takes longer to
    /// render than the time between two soft bans would never be stored again.
    Soft,
    /// A hard ban selects it (it may predate the write behind the ban), or too many bans
    /// arrived to tell: do not store it.
    Hard,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{next_object_id, Object};
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;
    use tokio::time::Instant;

    fn strip() -> Vec<String> {
        crate::config::PolicyConfig::default().strip_query
    }

    fn object(tags: &[&str]) -> Slot {
        let now = Instant::now();
        Slot::Object(Arc::new(Object {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            hidden: HeaderMap::new(),
            identity: Bytes::from_static(b"x"),
            gzip: None,
            br: None,
            etag: None,
            last_modified: None,
            stored_at: now,
            initial_age: Duration::ZERO,
            fresh_until: now + Duration::from_secs(60),
            grace_until: now + Duration::from_secs(120),
            error_until: now + Duration::from_secs(120),
            keep_until: now + Duration::from_secs(120),
            compressible: false,
            tags: tags.iter().map(|t| Arc::from(*t)).collect(),
            fetched_ms: 0,
            id: next_object_id(),
            banned: AtomicBool::new(false),
        }))
    }

    fn store() -> Store {
        let s = Store::new(1 << 20);
        s.insert("a.test/".into(), object(&["html", "list"]));
        s.insert("a.test/hello/".into(), object(&["html", "post:5"]));
        s.insert("a.test/?p=5".into(), object(&["html", "post:5"]));
        s.insert("a.test/category/news/".into(), object(&["html", "list"]));
        s.insert("a.test/style.css".into(), object(&[]));
        s.insert("b.test/hello/".into(), object(&["html", "post:5"]));
        s
    }

    fn ban(kind: Kind, value: &str, host: Option<&str>) -> Arc<Compiled> {
        let b = Ban {
            kind,
            value: value.into(),
            host: host.map(str::to_string),
            soft: false,
        };
        Arc::new(Compiled::new(b, &strip()).unwrap())
    }

    fn soft_ban(kind: Kind, value: &str) -> Arc<Compiled> {
        let b = Ban {
            soft: true,
            ..Ban::new(kind, value)
        };
        Arc::new(Compiled::new(b, &strip()).unwrap())
    }

    fn left(s: &Store) -> Vec<String> {
        let mut k: Vec<String> = s.keys(|_| true).iter().map(|k| k.to_string()).collect();
        k.sort();
        k
    }

    #[test]
    fn tag_bans_use_the_index_and_respect_the_host() {
        let (s, b) = (store(), Bans::default());
        assert_eq!(b.apply(&s, ban(Kind::Tag, "post:5", Some("A.test"))), 2);
        assert_eq!(
            left(&s),
            ["a.test/", "a.test/category/news/", "a.test/style.css", "b.test/hello/"]
        );
        assert_eq!(b.apply(&s, ban(Kind::Tag, "post:5", None)), 1);
        assert_eq!(b.apply(&s, ban(Kind::Tag, "nothing", None)), 0);
    }

    #[test]
    fn url_prefix_regex_and_all() {
        let (s, b) = (store(), Bans::default());
        assert_eq!(
            b.apply(&s, ban(Kind::Url, "http://a.test/hello/?utm_source=x", None)),
            1
        );
        assert_eq!(b.apply(&s, ban(Kind::Prefix, "http://a.test/cat", None)), 1);
        assert_eq!(b.apply(&s, ban(Kind::Regex, r"\.css$", None)), 1);
        assert_eq!(left(&s), ["a.test/", "a.test/?p=5", "b.test/hello/"]);
        assert_eq!(b.apply(&s, ban(Kind::All, "", Some("b.test"))), 1);
        b.apply(&s, ban(Kind::All, "", None));
        s.maintain();
        assert!(left(&s).is_empty());
    }

    #[test]
    fn soft_bans_keep_objects_but_stale() {
        let (s, b) = (store(), Bans::default());
        let mut c = Compiled::new(Ban::new(Kind::Tag, "list"), &strip()).unwrap();
        c.ban.soft = true;
        assert_eq!(b.apply(&s, Arc::new(c)), 2);
        assert_eq!(left(&s).len(), 6);
        let Some(Slot::Object(o)) = s.get("a.test/") else {
            panic!()
        };
        assert!(!o.is_fresh(Instant::now()));
        let Some(Slot::Object(o)) = s.get("a.test/hello/") else {
            panic!()
        };
        assert!(o.is_fresh(Instant::now()));
    }

    #[test]
    fn bad_bans_are_refused_with_a_reason() {
        let err = |b: Ban| Compiled::new(b, &strip()).unwrap_err();
        assert_eq!(err(Ban::new(Kind::Tag, " ")), BanError::MissingValue("tag"));
        assert!(matches!(err(Ban::new(Kind::Regex, "(")), BanError::BadRegex(_)));
        assert!(matches!(err(Ban::new(Kind::Url, "/no-host/")), BanError::BadUrl(_)));
        assert!(matches!(err(Ban::new(Kind::Prefix, "ftp://x/")), BanError::BadUrl(_)));
        assert!(Compiled::new(Ban::new(Kind::Prefix, "/any-host/"), &strip()).is_ok());
    }

    #[test]
    fn in_flight_fills_are_judged_against_later_bans() {
        let (s, b) = (store(), Bans::default());
        let tags = [Arc::from("post:5"), Arc::from("list")];
        let before = b.generation();
        assert_eq!(b.since(before, "a.test/hello/", &tags), InFlight::Untouched);
        b.apply(&s, ban(Kind::Tag, "post:7", None));
        assert_eq!(b.since(before, "a.test/hello/", &tags), InFlight::Untouched);
        b.apply(&s, soft_ban(Kind::Tag, "list"));
        assert_eq!(b.since(before, "a.test/hello/", &tags), InFlight::Soft);
        let after_soft = b.generation();
        b.apply(&s, ban(Kind::Tag, "post:5", None));
        assert_eq!(
            b.since(before, "a.test/hello/", &tags),
            InFlight::Hard,
            "hard outweighs soft"
        );
        assert_eq!(b.since(after_soft, "a.test/hello/", &tags), InFlight::Hard);
        b.apply(&s, soft_ban(Kind::Tag, "list"));
        assert_eq!(b.since(before, "a.test/hello/", &tags), InFlight::Hard, "in any order");
        assert_eq!(b.since(b.generation(), "a.test/hello/", &tags), InFlight::Untouched);
        // When the bans since are no longer all remembered, assume the worst.
        for _ in 0..RECENT_BANS {
            b.apply(&s, ban(Kind::Tag, "other", None));
        }
        assert_eq!(b.since(before, "a.test/x/", &[]), InFlight::Hard);
    }

    #[test]
    fn the_generation_before_a_time_is_that_of_the_last_ban_not_later() {
        // Nothing remembered: whatever the time, the current generation.
        assert_eq!(generation_before(&[], 0, 1_000), Some(0));
        let arrivals = [(1, 100), (2, 200), (3, 200), (4, 300)];
        assert_eq!(generation_before(&arrivals, 4, 50), Some(0), "all came later");
        assert_eq!(generation_before(&arrivals, 4, 100), Some(1), "not later: the same ms");
        assert_eq!(generation_before(&arrivals, 4, 199), Some(1));
        assert_eq!(generation_before(&arrivals, 4, 250), Some(3));
        assert_eq!(generation_before(&arrivals, 4, 300), Some(4), "none later");
        // Forgotten bans (the window starts at 10): the oldest remembered came later, so a
        // forgotten one may have too; a later time can still be told.
        let window = [(10, 500), (11, 600)];
        assert_eq!(generation_before(&window, 11, 400), None);
        assert_eq!(generation_before(&window, 11, 550), Some(10));
        assert_eq!(generation_before(&window, 11, 600), Some(11));
    }

    #[test]
    fn a_peer_fill_is_judged_against_bans_since_the_homes_fetch_began() {
        let (s, b) = (store(), Bans::default());
        let tags = [Arc::from("post:5"), Arc::from("list")];
        b.apply_at(&s, ban(Kind::Tag, "post:5", None), 1_000);
        b.apply_at(&s, soft_ban(Kind::Tag, "list"), 2_000);
        b.apply_at(&s, ban(Kind::Tag, "post:9", None), 3_000);
        // The ask noted the generation after all three (this node had them before it asked),
        // yet the home fetched before some arrived here: those count as since the fetch.
        let noted = b.generation();
        let judge = |home_fetch_ms: u64, skew_ms: u64| {
            b.generation_before(home_fetch_ms - skew_ms)
                .map_or(InFlight::Hard, |g| b.since(g.min(noted), "a.test/hello/", &tags))
        };
        assert_eq!(judge(500, 0), InFlight::Hard, "fetched before the hard ban");
        assert_eq!(judge(1_500, 0), InFlight::Soft, "after the hard, before the soft ban");
        assert_eq!(judge(2_500, 0), InFlight::Untouched, "only an unrelated ban came later");
        assert_eq!(judge(5_000, 0), InFlight::Untouched);
        // The skew widens what counts as later: a home whose clock runs ahead.
        assert_eq!(judge(1_900, 1_000), InFlight::Hard);
        assert_eq!(judge(2_900, 1_000), InFlight::Soft);
        // Arrival times never go back with the clock.
        b.apply_at(&s, ban(Kind::Tag, "post:5", None), 10);
        assert_eq!(judge(2_999, 0), InFlight::Hard, "arrived after 3000, not at 10");
        // Too many bans since to tell: hard.
        for i in 0..RECENT_BANS {
            b.apply_at(&s, ban(Kind::Tag, "other", None), 4_000 + i as u64);
        }
        assert_eq!(b.generation_before(3_500), None);
    }
}
