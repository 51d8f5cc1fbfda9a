//! Applying bans to the store: exact URLs (with their variants), prefixes, regular
//! expressions, tags and everything, hard (removed) or soft (stale, refreshed on next use).
//!
//! No ban is kept to be tested at lookup time: a ban finds what it matches when it arrives
//! (tags through the store's tag index, URLs by key, prefixes and expressions by one walk over
//! the keys) and acts on it then, so a lookup costs the same after a million bans as after
//! none. The one thing a ban must still catch later is a fill that was already on its way
//! when the ban arrived; the last few thousand bans are kept, with a generation number, to
//! judge such fills before they are stored.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use strata_wire::ban::{Ban, Kind};

use crate::cache::{Banned, Slot, Store, VARIANT_SEP};
use crate::policy;

/// Bans remembered for judging fills that were in flight when they arrived.
const RECENT_BANS: usize = 4096;
/// Most bytes of ban values a shield request lists (the admin body limit is 64 KiB).
pub const MAX_LISTED_BYTES: usize = 32 * 1024;
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
    /// A patch on a ban that is not of a tag, or larger than a patch may be.
    #[error("a patch rides only on a tag ban, with at most {max} bytes of fields", max = strata_wire::patch::MAX_PATCH_BYTES)]
    BadPatch,
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
    /// A soft ban of a list tag that lets the pages it marks lag: refreshed at most once per
    /// `cache.list_refresh` (see [`Compiled::bounded_by`]).
    pub bounded: bool,
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
        if let Some(p) = &ban.patch {
            if ban.kind != Kind::Tag || p.size() > strata_wire::patch::MAX_PATCH_BYTES {
                return Err(BanError::BadPatch);
            }
        }
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
        Ok(Compiled {
            ban,
            host,
            matcher,
            bounded: false,
        })
    }

    /// Decides whether the ban is bounded here: only a soft tag ban that says it may lag
    /// (`"bounded": true`, as the syncer's list bans do) of a tag in `list_tags` (`name*`
    /// matches a prefix). Hard bans, URL and other kinds, and writes' bans stay exact.
    pub fn bounded_by(mut self, list_tags: &[String]) -> Compiled {
        self.bounded = self.ban.soft
            && self.ban.bounded
            && self.ban.kind == Kind::Tag
            && list_tags.iter().any(|t| tag_matches(t, self.ban.value.trim()));
        self
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

/// One remembered ban.
#[derive(Debug)]
struct Recent {
    /// The generation applying it made.
    generation: u64,
    /// Its cluster-wide id (0: a flush of this node's own, never told to others).
    id: u64,
    /// When it was applied here (this node's monotonic clock, never compared with another
    /// node's): which bans a shield request lists.
    arrived: Instant,
    /// The ban.
    compiled: Arc<Compiled>,
}

/// The remembered bans, and where each id was first applied.
#[derive(Debug, Default)]
struct RecentBans {
    /// Oldest first, at most [`RECENT_BANS`].
    list: VecDeque<Recent>,
    /// Id → the generation its first application here made, for the bans in `list`.
    ids: HashMap<u64, u64>,
}

/// The bans a node applied lately, as a shield request lists them for the key's home.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listed {
    /// The bans (with their ids), oldest first.
    pub bans: Vec<Ban>,
    /// More were applied in the window than are listed (or than are remembered): the home
    /// must not answer from what it held before the request.
    pub overflow: bool,
}

/// Applies bans and remembers the recent ones for in-flight fills and for shielding.
#[derive(Default)]
pub struct Bans {
    /// Counts every ban applied; a fill notes it before asking the origin.
    generation: AtomicU64,
    /// The last bans, with the generation each one made.
    recent: parking_lot::Mutex<RecentBans>,
}

impl Bans {
    /// The current generation, to note before a fill asks the origin.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The generation the first application here of the ban with `id` made, while it is
    /// remembered; `None` for an id not applied here (yet, or too long ago to tell) and for 0.
    pub fn applied_at(&self, id: u64) -> Option<u64> {
        if id == 0 {
            return None;
        }
        self.recent.lock().ids.get(&id).copied()
    }

    /// Applies a ban to the store; returns how many entries it removed or marked stale.
    pub fn apply(&self, store: &Store, c: Arc<Compiled>) -> usize {
        self.apply_patching(store, c, |_, _| false)
    }

    /// Applies a ban as [`Bans::apply`] does, except that each key of a tag ban `patch`
    /// (given the key and the ban's generation) patched in place is neither removed nor
    /// marked; returns how many objects the ban removed or marked.
    pub fn apply_patching(&self, store: &Store, c: Arc<Compiled>, patch: impl Fn(&str, u64) -> bool) -> usize {
        let generation;
        {
            // Recorded before acting, so a fill that finishes meanwhile sees it.
            let mut recent = self.recent.lock();
            generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            if recent.list.len() == RECENT_BANS {
                if let Some(old) = recent.list.pop_front() {
                    if recent.ids.get(&old.id) == Some(&old.generation) {
                        recent.ids.remove(&old.id);
                    }
                }
            }
            let id = c.ban.id;
            if id != 0 {
                recent.ids.entry(id).or_insert(generation);
            }
            recent.list.push_back(Recent {
                generation,
                id,
                arrived: Instant::now(),
                compiled: c.clone(),
            });
        }
        let soft = c.ban.soft;
        let how = if c.bounded { Banned::Bounded } else { Banned::Exact };
        let act = |keys: Vec<Arc<str>>| {
            keys.iter()
                .filter(|k| {
                    if soft {
                        store.mark_stale(k, how)
                    } else {
                        store.remove(k)
                    }
                })
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
                        let own = if soft {
                            store.mark_stale(key, how)
                        } else {
                            store.remove(key)
                        };
                        act(variants) + usize::from(own)
                    })
                    .sum()
            }
            Matcher::Tag(tag) => {
                let keys = store.tags.keys(tag, |k| c.host_ok(k));
                act(keys.into_iter().filter(|k| !patch(k, generation)).collect())
            }
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
        match recent.list.front() {
            Some(oldest) if oldest.generation <= since + 1 => recent
                .list
                .iter()
                .filter(|r| r.generation > since && r.compiled.matches(key, tags))
                .map(|r| match (r.compiled.ban.soft, r.compiled.bounded) {
                    (true, true) => InFlight::SoftBounded,
                    (true, false) => InFlight::Soft,
                    (false, _) => InFlight::Hard,
                })
                .max()
                .unwrap_or(InFlight::Untouched),
            _ => InFlight::Hard,
        }
    }

    /// The bans with an id applied here within `window` (each id once, in the order last
    /// applied), for a shield
    /// request: at most `max` of them and [`MAX_LISTED_BYTES`] of values; past either, or
    /// when bans of the window are no longer remembered, `overflow`.
    pub fn applied_within(&self, window: Duration, max: usize) -> Listed {
        let recent = self.recent.lock();
        let since = Instant::now().checked_sub(window);
        let in_window = |r: &Recent| since.is_none_or(|s| r.arrived >= s);
        let mut listed = Listed {
            overflow: recent.list.len() == RECENT_BANS && recent.list.front().is_some_and(in_window),
            ..Listed::default()
        };
        let mut bytes = 0;
        let mut seen = HashSet::new();
        for r in recent.list.iter().rev().take_while(|r| in_window(r)) {
            if r.id == 0 || !seen.insert(r.id) {
                continue;
            }
            bytes += r.compiled.ban.value.len() + r.compiled.ban.host.as_ref().map_or(0, String::len);
            if listed.bans.len() == max || bytes > MAX_LISTED_BYTES {
                listed.overflow = true;
                break;
            }
            listed.bans.push(r.compiled.ban.clone());
        }
        listed.bans.reverse();
        listed
    }

    /// Whether this node, as a key's home, may answer a sibling with `obj` (stored under
    /// `key`, fetched from generation `fetched_gen` on) given the bans the sibling listed:
    /// each must either be applied here no later than that fetch began, or not select the
    /// object (see [`home_may_answer`]).
    pub fn home_may_answer(&self, listed: &[Arc<Compiled>], key: &str, tags: &[Arc<str>], fetched_gen: u64) -> bool {
        listed
            .iter()
            .all(|b| home_may_answer(self.applied_at(b.ban.id), b.matches(key, tags), fetched_gen))
    }
}

impl Bans {
    /// Whether this node, as a key's home, may answer a sibling with `obj`, a copy that only
    /// bounded list bans made stale here: every listed ban must pass [`home_may_answer`] or
    /// be a bounded soft ban itself (whose pages may lag by `cache.list_refresh`).
    pub fn home_may_lag(&self, listed: &[Arc<Compiled>], key: &str, tags: &[Arc<str>], fetched_gen: u64) -> bool {
        listed.iter().all(|b| {
            (b.ban.soft && b.bounded) || home_may_answer(self.applied_at(b.ban.id), b.matches(key, tags), fetched_gen)
        })
    }
}

/// The home's rule for one ban a sibling listed (it had applied it before asking) and an
/// object the home would answer with, fetched from ban generation `fetched_gen` on: fine
/// when the ban does not select the object, or when the home applied it (at generation
/// `applied_at`) before that fetch began, so the fetch saw the write behind it. Otherwise
/// the object may predate the change, and the home fetches afresh.
pub fn home_may_answer(applied_at: Option<u64>, selects: bool, fetched_gen: u64) -> bool {
    !selects || applied_at.is_some_and(|g| fetched_gen >= g)
}

/// What the bans applied while a fill was at the origin say about the object it brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InFlight {
    /// None selects it: store it.
    Untouched,
    /// Only bounded soft bans select it: store it already stale, refreshed no sooner than
    /// `cache.list_refresh` after it was stored (see [`refresh_due`]).
    SoftBounded,
    /// Only soft bans select it: store it already stale, as the soft ban would have left it
    /// (served while it is fetched again). Were it dropped, a page that takes longer to
    /// render than the time between two soft bans would never be stored again.
    Soft,
    /// A hard ban selects it (it may predate the write behind the ban), or too many bans
    /// arrived to tell: do not store it.
    Hard,
}

/// Whether a list tag pattern (`name`, or `prefix*`) selects a tag.
pub fn tag_matches(pattern: &str, tag: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => tag.starts_with(prefix),
        None => pattern == tag,
    }
}

/// Whether a stale object found by a request should be refreshed now: always, unless only
/// bounded list bans made it stale (`banned`), its own freshness has not run out
/// (`fresh_by_time`) and it was fetched less than `list_refresh` ago (`since_fetch`); then its
/// stale copy is served and a request after the interval refreshes it. However many
/// comments arrive, such a page is fetched at most once per `list_refresh`.
pub fn refresh_due(
    banned: Banned,
    fresh_by_time: bool,
    since_fetch: std::time::Duration,
    list_refresh: std::time::Duration,
) -> bool {
    !(banned == Banned::Bounded && fresh_by_time && since_fetch < list_refresh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{next_object_id, Object};
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
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
            recent: None,
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
            fetched_gen: 0,
            id: next_object_id(),
            banned: crate::cache::BanMark::default(),
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
            bounded: false,
            id: 0,
            patch: None,
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

    fn list_tags() -> Vec<String> {
        crate::config::DEFAULT_LIST_TAGS.iter().map(|t| t.to_string()).collect()
    }

    /// A ban as the syncer sends a list ban (soft, lag allowed), judged by this node's tags.
    fn bounded_ban(kind: Kind, value: &str) -> Arc<Compiled> {
        let b = Ban {
            soft: true,
            bounded: true,
            ..Ban::new(kind, value)
        };
        Arc::new(Compiled::new(b, &strip()).unwrap().bounded_by(&list_tags()))
    }

    #[test]
    fn only_soft_lag_allowing_bans_of_list_tags_are_bounded() {
        let tags = list_tags();
        let compile = |kind: Kind, value: &str, soft: bool, bounded: bool| {
            let b = Ban {
                soft,
                bounded,
                ..Ban::new(kind, value)
            };
            Compiled::new(b, &strip()).unwrap().bounded_by(&tags).bounded
        };
        assert!(compile(Kind::Tag, "list", true, true));
        assert!(compile(Kind::Tag, "list:home", true, true));
        assert!(compile(Kind::Tag, "wp:recent-comments", true, true));
        assert!(compile(Kind::Tag, "wp:recent-posts", true, true));
        assert!(
            !compile(Kind::Tag, "list", true, false),
            "an exact soft ban (an operator's)"
        );
        assert!(!compile(Kind::Tag, "list", false, true), "hard bans are never bounded");
        assert!(!compile(Kind::Tag, "post:12", true, true), "a post's page is exact");
        assert!(!compile(Kind::Tag, "listing", true, true), "\"list\" is not a prefix");
        assert!(!compile(Kind::Tag, "html", true, true));
        assert!(!compile(Kind::Url, "http://a.test/", true, true), "only tag bans");
        let none = Compiled::new(
            Ban {
                soft: true,
                bounded: true,
                ..Ban::new(Kind::Tag, "list")
            },
            &strip(),
        )
        .unwrap();
        assert!(!none.bounded_by(&[]).bounded, "an empty cache.list_tags bounds nothing");
    }

    #[test]
    fn a_bounded_ban_marks_bounded_and_an_exact_one_overrides_it() {
        let (s, b) = (store(), Bans::default());
        b.apply(&s, bounded_ban(Kind::Tag, "list"));
        let mark = |k: &str| match s.get(k) {
            Some(Slot::Object(o)) => o.banned.get(),
            _ => panic!("{k} gone"),
        };
        assert_eq!(mark("a.test/"), Banned::Bounded);
        assert_eq!(mark("a.test/hello/"), Banned::No);
        b.apply(&s, soft_ban(Kind::Tag, "list"));
        assert_eq!(mark("a.test/"), Banned::Exact);
        b.apply(&s, bounded_ban(Kind::Tag, "list"));
        assert_eq!(mark("a.test/"), Banned::Exact, "never lowered");

        // A fill in flight while a bounded ban arrived is stored bounded-stale; an exact soft
        // ban or a hard one outweighs it.
        let tags = [Arc::from("list")];
        let before = b.generation();
        b.apply(&s, bounded_ban(Kind::Tag, "list"));
        assert_eq!(b.since(before, "a.test/", &tags), InFlight::SoftBounded);
        b.apply(&s, soft_ban(Kind::Tag, "list"));
        assert_eq!(b.since(before, "a.test/", &tags), InFlight::Soft);
        b.apply(&s, ban(Kind::Tag, "list", None));
        assert_eq!(b.since(before, "a.test/", &tags), InFlight::Hard);
    }

    #[test]
    fn a_page_marked_by_list_bans_is_refreshed_at_most_once_per_list_refresh() {
        let every = Duration::from_secs(1);
        let ms = Duration::from_millis;
        // Fetched 200 ms ago, fresh by its own TTL, stale only through list bans: wait.
        assert!(!refresh_due(Banned::Bounded, true, ms(200), every));
        assert!(!refresh_due(Banned::Bounded, true, ms(999), every));
        // The interval has passed: the next request refreshes it.
        assert!(refresh_due(Banned::Bounded, true, ms(1000), every));
        // Its own freshness ran out: refreshed as any stale object.
        assert!(refresh_due(Banned::Bounded, false, ms(10), every));
        // An exact soft ban (or none: stale by time) refreshes at once.
        assert!(refresh_due(Banned::Exact, true, ms(10), every));
        assert!(refresh_due(Banned::No, false, ms(10), every));
        // list_refresh = 0: no bound.
        assert!(refresh_due(Banned::Bounded, true, Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn list_tag_patterns() {
        assert!(tag_matches("list", "list"));
        assert!(!tag_matches("list", "list:home"));
        assert!(tag_matches("list:*", "list:home"));
        assert!(!tag_matches("list:*", "list"));
        assert!(tag_matches("wp:recent-*", "wp:recent-comments"));
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
    fn the_home_answers_only_with_what_a_listed_ban_cannot_have_made_old() {
        // (applied at the home, selects the object, object's fetch generation) → may answer.
        assert!(home_may_answer(None, false, 0), "not applied, does not select");
        assert!(
            !home_may_answer(None, true, 99),
            "not applied here yet, selects: fetch afresh"
        );
        assert!(
            home_may_answer(Some(5), false, 1),
            "applied after the fetch, but elsewhere"
        );
        assert!(home_may_answer(Some(5), true, 5), "applied before the fetch began");
        assert!(home_may_answer(Some(5), true, 9));
        assert!(!home_may_answer(Some(5), true, 4), "the fetch began before the ban");
    }

    fn with_id(c: Arc<Compiled>, id: u64) -> Arc<Compiled> {
        let mut b = c.ban.clone();
        b.id = id;
        Arc::new(Compiled::new(b, &strip()).unwrap())
    }

    #[test]
    fn the_home_judges_listed_bans_by_id_and_generation() {
        let (s, b) = (store(), Bans::default());
        let tags = [Arc::from("post:5"), Arc::from("html")];
        let post5 = with_id(ban(Kind::Tag, "post:5", None), 11);
        let post7 = with_id(ban(Kind::Tag, "post:7", None), 12);
        let fetched_before = b.generation();
        b.apply(&s, post5.clone());
        let fetched_after = b.generation();
        assert_eq!(b.applied_at(11), Some(fetched_after));
        assert_eq!(b.applied_at(12), None);
        assert_eq!(b.applied_at(0), None);
        let key = "a.test/hello/";
        assert!(!b.home_may_answer(std::slice::from_ref(&post5), key, &tags, fetched_before));
        assert!(b.home_may_answer(std::slice::from_ref(&post5), key, &tags, fetched_after));
        assert!(
            b.home_may_answer(std::slice::from_ref(&post7), key, &tags, 0),
            "not applied, selects nothing here"
        );
        let soft5 = with_id(soft_ban(Kind::Tag, "post:5"), 13);
        assert!(
            !b.home_may_answer(&[post7, soft5], key, &tags, fetched_after),
            "soft ones count too"
        );
        // A second application of the same id keeps the first one's generation.
        b.apply(&s, post5.clone());
        assert_eq!(b.applied_at(11), Some(fetched_after));
    }

    #[test]
    fn a_home_may_answer_with_a_lagging_list_page_only_for_bounded_list_bans() {
        let b = Bans::default();
        let tags = [
            Arc::from("list:home"),
            Arc::from("wp:recent-comments"),
            Arc::from("html"),
        ];
        let key = "a.test/";
        // The syncer's list ban, not yet applied at the home, selecting the page.
        let list = {
            let mut ban = bounded_ban(Kind::Tag, "wp:recent-comments").ban.clone();
            ban.id = 21;
            Arc::new(Compiled::new(ban, &strip()).unwrap().bounded_by(&list_tags()))
        };
        assert!(
            !b.home_may_answer(std::slice::from_ref(&list), key, &tags, 0),
            "not fresh enough to answer as fresh"
        );
        assert!(
            b.home_may_lag(std::slice::from_ref(&list), key, &tags, 0),
            "but its pages may lag"
        );
        // An exact soft ban or a hard one selecting the page: never answered lagging.
        let soft = with_id(soft_ban(Kind::Tag, "list:home"), 22);
        let hard = with_id(ban(Kind::Tag, "html", None), 23);
        assert!(!b.home_may_lag(&[list.clone(), soft], key, &tags, 0));
        assert!(!b.home_may_lag(&[list.clone(), hard], key, &tags, 0));
        // A hard ban of another page does not stand in the way.
        let other = with_id(ban(Kind::Tag, "post:9", None), 24);
        assert!(b.home_may_lag(&[list, other], key, &tags, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shield_request_lists_the_bans_of_the_window_with_their_ids() {
        let (s, b) = (store(), Bans::default());
        let window = Duration::from_secs(1);
        b.apply(&s, with_id(ban(Kind::Tag, "old", None), 1));
        tokio::time::advance(Duration::from_millis(1500)).await;
        b.apply(&s, ban(Kind::All, "", None)); // a local flush: no id, not listed
        b.apply(&s, with_id(ban(Kind::Tag, "post:5", None), 2));
        b.apply(&s, with_id(soft_ban(Kind::Tag, "list"), 3));
        b.apply(&s, with_id(ban(Kind::Tag, "post:5", None), 2)); // the same ban again
        let listed = b.applied_within(window, 256);
        assert!(!listed.overflow);
        let ids: Vec<u64> = listed.bans.iter().map(|b| b.id).collect();
        assert_eq!(ids, [3, 2], "the window's bans, each once, in the order last applied");
        assert!(listed.bans[0].soft);
        // Past the count limit: as many as fit, and overflow.
        let few = b.applied_within(window, 1);
        assert_eq!((few.bans.len(), few.overflow), (1, true));
        // Past the window, nothing.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.applied_within(window, 256), Listed::default());
        // More bans in the window than remembered: overflow.
        for i in 0..RECENT_BANS as u64 {
            b.apply(&s, with_id(ban(Kind::Tag, "other", None), 100 + i));
        }
        assert!(b.applied_within(window, usize::MAX).overflow);
    }
}
