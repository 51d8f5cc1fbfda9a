//! The in-memory object store: byte-bounded, with grace, Vary variants and hit-for-pass.
//!
//! Backed by moka (TinyLFU admission, LRU eviction) with one weight per entry that counts the
//! key, every stored encoding, the headers and a fixed bookkeeping overhead, so `capacity`
//! bounds what the cache really holds. Entries live until the end of their grace; freshness
//! is judged on each lookup against [`Object::fresh_until`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use moka::notification::RemovalCause;
use tokio::time::Instant;

use crate::compress::Encoding;

/// Bytes charged per entry for moka's and our own bookkeeping (moka's entry, deque and
/// timer nodes, the key's `Arc`, the object, its header map), measured generously.
const ENTRY_OVERHEAD: u64 = 1024;
/// Bytes charged per stored header for the header map's entry and the value's allocation.
const HEADER_OVERHEAD: usize = 64;
/// Bytes charged per tag for its place in the tag index (the index's map entry, the key's
/// `Arc`, the id), on top of the tag's text.
const TAG_OVERHEAD: usize = 96;
/// Shards of the tag index, so concurrent stores rarely contend.
const TAG_SHARDS: usize = 16;
/// Lifetime of a Vary rule once its URL's variants are gone.
const VARY_RULE_TTL: Duration = Duration::from_secs(24 * 3600);

/// A stored response.
#[derive(Debug)]
pub struct Object {
    /// The status to replay.
    pub status: StatusCode,
    /// End-to-end headers to replay (no hop-by-hop, no framing, no encoding headers).
    pub headers: HeaderMap,
    /// Fields the cache reads but never delivers (the targeted cache-control fields of
    /// `cache.targeted_fields`), kept for the update a `304` brings. Usually empty.
    pub hidden: HeaderMap,
    /// The body as the origin meant it, uncompressed.
    pub identity: Bytes,
    /// Gzip of `identity`, made at store time when it pays.
    pub gzip: Option<Bytes>,
    /// Brotli of `identity`, made at store time when it pays.
    pub br: Option<Bytes>,
    /// Where the page's list of latest comments is in `identity` and in `gzip`, compressed
    /// on its own: a patch of the list compresses only the list again
    /// ([`Object::patched_list`]). Set when the page has exactly one such list.
    pub recent: Option<ListAt>,
    /// Validator for conditional requests (the origin's, or one derived from the body).
    pub etag: Option<HeaderValue>,
    /// `Last-Modified` as a time, for `If-Modified-Since`.
    pub last_modified: Option<SystemTime>,
    /// When it was stored.
    pub stored_at: Instant,
    /// The origin's `Age` on arrival.
    pub initial_age: Duration,
    /// End of freshness.
    pub fresh_until: Instant,
    /// End of grace: after this it is never served without asking the origin.
    pub grace_until: Instant,
    /// End of `stale-if-error` (at least `grace_until`): until then it is served stale when
    /// the origin, asked first, fails.
    pub error_until: Instant,
    /// End of its stay in the store (`error_until`, or `cache.keep` later for an object with
    /// validators, kept so that its next request revalidates it).
    pub keep_until: Instant,
    /// Whether a client's `Accept-Encoding` selects among stored encodings.
    pub compressible: bool,
    /// Tags for invalidation (see `tags`).
    pub tags: Box<[Arc<str>]>,
    /// This node's ban generation noted before the fetch that brought it began (from the
    /// origin or from the key's home): as a home, this node judges the bans a sibling lists
    /// against it (see `bans::home_may_answer`).
    pub fetched_gen: u64,
    /// Unique per stored object, so the tag index can tell an object from its replacement.
    pub id: u64,
    /// Set by a soft ban: the object is stale from now on (served during grace while it is
    /// refreshed), whatever its freshness said; and whether only bounded bans set it (its
    /// refresh may wait for `cache.list_refresh`).
    pub banned: BanMark,
}

/// What soft bans did to an object, strongest first: an exact ban (refreshed on its next
/// request), only bounded list bans (refreshed at most once per `cache.list_refresh`), none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Banned {
    /// No soft ban selected it.
    No,
    /// Only bounded soft bans of list tags (the comment write-behind's) selected it.
    Bounded,
    /// A soft ban that wants the next request to refresh it selected it.
    Exact,
}

/// An object's [`Banned`] state, raised (never lowered) by soft bans from any thread.
#[derive(Debug, Default)]
pub struct BanMark(AtomicU8);

impl BanMark {
    /// The state now.
    #[inline]
    pub fn get(&self) -> Banned {
        match self.0.load(Ordering::Relaxed) {
            0 => Banned::No,
            1 => Banned::Bounded,
            _ => Banned::Exact,
        }
    }

    /// Whether any soft ban selected it.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed) != 0
    }

    /// Raises the state to `how` (an exact ban after a bounded one stays exact).
    pub fn mark(&self, how: Banned) {
        self.0.fetch_max(how as u8, Ordering::Relaxed);
    }
}

/// A weak validator derived from a body: FNV-1a of its bytes and its length.
pub fn body_etag(body: &[u8]) -> String {
    etag_of(fnv1a_from(FNV_OFFSET, body), body.len())
}

/// The validator of a body of `len` bytes whose FNV-1a hash is `hash`.
fn etag_of(hash: u64, len: usize) -> String {
    format!("W/\"{hash:016x}-{len:x}\"")
}

/// FNV-1a's starting state.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a from the state `h` (of the bytes before `data`): a fixed hash, so every node
/// derives the same validator for the same body.
fn fnv1a_from(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

static NEXT_OBJECT_ID: AtomicU64 = AtomicU64::new(1);

/// Where a page's list of latest comments is, for patches of the list alone
/// ([`Object::patched_list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListAt {
    /// The list's bytes in the identity body, and its deflate blocks in the gzip body.
    pub segment: crate::compress::Segment,
    /// The validator's hash state over the body before the list ([`body_etag`]): a patched
    /// page's validator hashes only the list and what follows it.
    pub prefix_hash: u64,
}

/// Gzip of a page at store time ([`compress::gzip`](crate::compress::gzip)): segmented
/// around its list of latest comments when it has exactly one, so that patches of the list
/// compress only the list ([`Object::patched_list`]); `None` when gzip does not pay.
pub fn gzip_page(identity: &[u8]) -> (Option<Bytes>, Option<ListAt>) {
    let lists = if memchr::memmem::find(identity, b"#comment-").is_some() {
        crate::patch::recent_lists(identity)
    } else {
        Vec::new()
    };
    match lists.as_slice() {
        [one] => match crate::compress::gzip_segmented(identity, one.clone()) {
            Some((gz, segment)) => {
                let prefix_hash = fnv1a_from(FNV_OFFSET, &identity[..segment.identity.start]);
                (Some(gz), Some(ListAt { segment, prefix_hash }))
            }
            None => (None, None),
        },
        _ => (crate::compress::gzip(identity), None),
    }
}

/// A fresh object id.
pub fn next_object_id() -> u64 {
    NEXT_OBJECT_ID.fetch_add(1, Ordering::Relaxed)
}

impl Object {
    /// The body and coding for a negotiated encoding, falling back to identity.
    pub fn body(&self, enc: Encoding) -> (Encoding, &Bytes) {
        match enc {
            Encoding::Brotli if self.br.is_some() => (Encoding::Brotli, self.br.as_ref().unwrap_or(&self.identity)),
            Encoding::Gzip if self.gzip.is_some() => (Encoding::Gzip, self.gzip.as_ref().unwrap_or(&self.identity)),
            _ => (Encoding::Identity, &self.identity),
        }
    }

    /// Whether it may be served without asking the origin.
    #[inline]
    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.fresh_until && !self.banned.is_set()
    }

    /// Seconds of freshness left (0 once soft-banned).
    pub fn ttl_secs(&self, now: Instant) -> u64 {
        if self.banned.is_set() {
            return 0;
        }
        self.fresh_until.saturating_duration_since(now).as_secs()
    }

    /// Seconds since the origin produced it, for the `Age` header.
    pub fn age(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.stored_at) + self.initial_age).as_secs()
    }

    /// This object with `identity` as its body (a patched page): compressed as it was, a
    /// validator derived from the new body, no `Last-Modified` (a client's date would match a
    /// body it never saw), fresh and stale as it was, noted as current with ban generation
    /// `fetched_gen`.
    pub fn patched(&self, identity: Bytes, fetched_gen: u64) -> Object {
        let (gzip, recent) = match self.gzip {
            Some(_) => gzip_page(&identity),
            None => (None, None),
        };
        let br = self
            .br
            .as_ref()
            .and_then(|_| crate::compress::brotli(&identity, gzip.as_ref().map_or(identity.len(), |g| g.len())));
        self.with_body(identity, gzip, br, recent, None, fetched_gen)
    }

    /// This object with its list of latest comments (at `self.recent`) replaced by `list`,
    /// as [`Object::patched`] would make it, except that only the list is compressed again
    /// and brotli is dropped (its clients get gzip). `None` without such a list.
    pub fn patched_list(&self, list: &[u8], fetched_gen: u64) -> Option<Object> {
        let at = self.recent.as_ref()?;
        let range = at.segment.identity.clone();
        let old = self.identity.get(range.clone())?;
        let mut identity = Vec::with_capacity(self.identity.len() - old.len() + list.len());
        identity.extend_from_slice(&self.identity[..range.start]);
        identity.extend_from_slice(list);
        identity.extend_from_slice(&self.identity[range.end..]);
        let spliced = self
            .gzip
            .as_ref()
            .and_then(|gz| crate::compress::splice_gzip(gz, &at.segment, list, &identity));
        Some(match spliced {
            Some((gzip, segment)) => {
                let validator = etag_of(fnv1a_from(at.prefix_hash, &identity[range.start..]), identity.len());
                let recent = ListAt {
                    segment,
                    prefix_hash: at.prefix_hash,
                };
                self.with_body(
                    Bytes::from(identity),
                    Some(gzip),
                    None,
                    Some(recent),
                    Some(validator),
                    fetched_gen,
                )
            }
            None => self.patched(Bytes::from(identity), fetched_gen),
        })
    }

    /// This object with another body, its encodings given, and its validator when it is
    /// known already (else derived from the body, [`body_etag`]).
    fn with_body(
        &self,
        identity: Bytes,
        gzip: Option<Bytes>,
        br: Option<Bytes>,
        recent: Option<ListAt>,
        validator: Option<String>,
        fetched_gen: u64,
    ) -> Object {
        let mut headers = self.headers.clone();
        headers.remove(http::header::LAST_MODIFIED);
        let validator = validator.unwrap_or_else(|| body_etag(&identity));
        let etag = HeaderValue::from_str(&validator).ok();
        if let Some(e) = &etag {
            headers.insert(http::header::ETAG, e.clone());
        }
        let banned = BanMark::default();
        banned.mark(self.banned.get());
        Object {
            status: self.status,
            headers,
            hidden: self.hidden.clone(),
            identity,
            gzip,
            br,
            recent,
            etag,
            last_modified: None,
            stored_at: self.stored_at,
            initial_age: self.initial_age,
            fresh_until: self.fresh_until,
            grace_until: self.grace_until,
            error_until: self.error_until,
            keep_until: self.keep_until,
            compressible: self.compressible,
            tags: self.tags.clone(),
            fetched_gen: fetched_gen.max(self.fetched_gen),
            id: next_object_id(),
            banned,
        }
    }

    fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .chain(self.hidden.iter())
            .map(|(k, v)| k.as_str().len() + v.len() + HEADER_OVERHEAD)
            .sum();
        // Each tag costs its text here and its entry in the tag index.
        let tags: usize = self.tags.iter().map(|t| t.len() + TAG_OVERHEAD).sum();
        self.identity.len() as u64
            + self.gzip.as_ref().map_or(0, |b| b.len() as u64)
            + self.br.as_ref().map_or(0, |b| b.len() as u64)
            + headers as u64
            + tags as u64
    }
}

/// The request header names an origin's `Vary` names (other than Accept-Encoding, which the
/// stored encodings already answer), and which variants it admitted lately.
#[derive(Debug)]
pub struct VaryRule {
    /// Lower-case header names, in the origin's order.
    pub names: Vec<HeaderName>,
    /// The variants admitted in the current budget window.
    admitted: parking_lot::Mutex<Admitted>,
}

/// The distinct variants (by a hash of their key) a rule admitted since `since`.
#[derive(Debug)]
struct Admitted {
    keys: std::collections::HashSet<u64>,
    since: Instant,
}

/// How long the variants a Vary rule admitted count against `cache.max_variants`: then the
/// count starts over, so a budget exhausted (by many `Origin` values, say) is not exhausted
/// for the day.
pub const VARIANT_WINDOW: Duration = Duration::from_secs(300);

impl VaryRule {
    /// A rule for these header names, with nothing admitted yet.
    pub fn new(names: Vec<HeaderName>) -> VaryRule {
        VaryRule {
            names,
            admitted: parking_lot::Mutex::new(Admitted {
                keys: Default::default(),
                since: Instant::now(),
            }),
        }
    }

    /// Whether the variant stored under `vkey` may be: always when it was admitted in the
    /// current window (a refresh of it) or when `plain` (its request sent none of the varied
    /// headers: the variant most visitors get, of which there is one); otherwise while fewer
    /// than `max` distinct variants were admitted in the last [`VARIANT_WINDOW`].
    pub fn admit(&self, vkey: &str, plain: bool, max: usize, now: Instant) -> bool {
        let hash = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = ahash::RandomState::with_seeds(1, 2, 3, 4).build_hasher();
            h.write(vkey.as_bytes());
            h.finish()
        };
        let mut a = self.admitted.lock();
        if now.saturating_duration_since(a.since) >= VARIANT_WINDOW {
            a.keys.clear();
            a.since = now;
        }
        if plain || a.keys.contains(&hash) {
            return true;
        }
        if a.keys.len() >= max {
            return false;
        }
        a.keys.insert(hash);
        true
    }
}

/// What a key maps to.
#[derive(Debug, Clone)]
pub enum Slot {
    /// A stored response.
    Object(Arc<Object>),
    /// The URL varies: look up again with the secondary key.
    Vary(Arc<VaryRule>),
    /// The URL answered uncacheably: pass without waiting, until the instant.
    HitForPass(Instant, &'static str),
}

impl Slot {
    fn lifetime(&self) -> Duration {
        let now = Instant::now();
        match self {
            Slot::Object(o) => o.keep_until.saturating_duration_since(now),
            Slot::Vary(_) => VARY_RULE_TTL,
            Slot::HitForPass(until, _) => until.saturating_duration_since(now),
        }
    }

    fn weight(&self, key: &str) -> u32 {
        let body = match self {
            Slot::Object(o) => o.weight(),
            Slot::Vary(r) => r.names.iter().map(|n| n.as_str().len() as u64 + 16).sum(),
            Slot::HitForPass(..) => 0,
        };
        u32::try_from(key.len() as u64 + body + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
    }
}

struct SlotExpiry;

impl moka::Expiry<Arc<str>, Slot> for SlotExpiry {
    fn expire_after_create(&self, _: &Arc<str>, v: &Slot, _: std::time::Instant) -> Option<Duration> {
        Some(v.lifetime())
    }

    fn expire_after_update(
        &self,
        _: &Arc<str>,
        v: &Slot,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.lifetime())
    }
}

/// Counters the store keeps for metrics.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Entries removed to stay within capacity.
    pub evictions: AtomicU64,
    /// Entries removed because their grace ended.
    pub expirations: AtomicU64,
}

/// Tag → the keys of the objects carrying it (with each object's id). Entries are added when
/// an object is stored and removed when it leaves the store for any reason, so the index never
/// holds more than the stored objects' tags, which the store's byte budget already counts.
#[derive(Default)]
pub struct TagIndex {
    shards: [TagShard; TAG_SHARDS],
}

/// One shard of the tag index: tag → (key → object id).
type TagShard = parking_lot::Mutex<HashMap<Arc<str>, HashMap<Arc<str>, u64>, ahash::RandomState>>;

impl TagIndex {
    fn shard(&self, tag: &str) -> &TagShard {
        let h = tag.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        &self.shards[(h as usize) % TAG_SHARDS]
    }

    fn add(&self, key: &Arc<str>, o: &Object) {
        for tag in o.tags.iter() {
            self.shard(tag)
                .lock()
                .entry(tag.clone())
                .or_default()
                .insert(key.clone(), o.id);
        }
    }

    fn forget(&self, key: &str, o: &Object) {
        for tag in o.tags.iter() {
            let mut shard = self.shard(tag).lock();
            if let Some(keys) = shard.get_mut(&**tag) {
                if keys.get(key) == Some(&o.id) {
                    keys.remove(key);
                }
                if keys.is_empty() {
                    shard.remove(&**tag);
                }
            }
        }
    }

    /// The keys carrying `tag` that `pick` selects.
    pub fn keys(&self, tag: &str, pick: impl Fn(&str) -> bool) -> Vec<Arc<str>> {
        let shard = self.shard(tag).lock();
        shard
            .get(tag)
            .map(|keys| keys.keys().filter(|k| pick(k)).cloned().collect())
            .unwrap_or_default()
    }

    /// Distinct tags indexed.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether no tag is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The object store.
pub struct Store {
    map: moka::sync::Cache<Arc<str>, Slot, ahash::RandomState>,
    /// Which keys carry which tag.
    pub tags: Arc<TagIndex>,
    /// Eviction and expiry counts.
    pub stats: Arc<StoreStats>,
}

impl Store {
    /// A store bounded to `capacity` bytes.
    pub fn new(capacity: u64) -> Store {
        let stats = Arc::new(StoreStats::default());
        let listener_stats = stats.clone();
        let tags = Arc::new(TagIndex::default());
        let listener_tags = tags.clone();
        let map = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|k: &Arc<str>, v: &Slot| v.weight(k))
            .expire_after(SlotExpiry)
            .eviction_listener(move |k: Arc<Arc<str>>, v: Slot, cause| {
                if let Slot::Object(o) = &v {
                    listener_tags.forget(&k, o);
                }
                match cause {
                    RemovalCause::Size => {
                        listener_stats.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                    RemovalCause::Expired => {
                        listener_stats.expirations.fetch_add(1, Ordering::Relaxed);
                    }
                    RemovalCause::Explicit | RemovalCause::Replaced => {}
                }
            })
            .build_with_hasher(ahash::RandomState::new());
        Store { map, tags, stats }
    }

    /// The slot for a key.
    pub fn get(&self, key: &str) -> Option<Slot> {
        self.map.get(key)
    }

    /// Stores or replaces a slot.
    pub fn insert(&self, key: Arc<str>, slot: Slot) {
        if let Slot::Object(o) = &slot {
            self.tags.add(&key, o);
        }
        self.map.insert(key, slot);
    }

    /// Removes one key; true if something was there.
    pub fn remove(&self, key: &str) -> bool {
        self.map.remove(key).is_some()
    }

    /// Removes every entry (O(1); memory is reclaimed lazily).
    pub fn clear(&self) {
        self.map.invalidate_all();
    }

    /// Removes a URL with all its variants: the primary key and every key that extends it
    /// with a variant suffix.
    pub fn purge_url(&self, primary: &str) -> usize {
        let mut n = 0;
        if let Some(Slot::Vary(_)) = self.map.get(primary) {
            let prefix = format!("{primary}{VARIANT_SEP}");
            let keys: Vec<Arc<str>> = self
                .map
                .iter()
                .map(|(k, _)| (*k).clone())
                .filter(|k| k.starts_with(&prefix))
                .collect();
            for k in keys {
                n += usize::from(self.map.remove(&*k).is_some());
            }
        }
        n + usize::from(self.map.remove(primary).is_some())
    }

    /// Every key `pick` selects (a walk over the whole store: for operator bans, not for
    /// requests).
    pub fn keys(&self, pick: impl Fn(&str) -> bool) -> Vec<Arc<str>> {
        self.map.iter().map(|(k, _)| (*k).clone()).filter(|k| pick(k)).collect()
    }

    /// Marks an object stale (a soft ban, bounded or exact); true if an object was there.
    pub fn mark_stale(&self, key: &str, how: Banned) -> bool {
        match self.map.get(key) {
            Some(Slot::Object(o)) => {
                o.banned.mark(how);
                true
            }
            Some(Slot::HitForPass(..)) => self.remove(key),
            _ => false,
        }
    }

    /// Runs moka's pending maintenance (evictions, expiries); call periodically.
    pub fn maintain(&self) {
        self.map.run_pending_tasks();
    }

    /// Objects held (approximate until maintenance runs).
    pub fn entry_count(&self) -> u64 {
        self.map.entry_count()
    }

    /// Bytes held, by the store's weights.
    pub fn weighted_size(&self) -> u64 {
        self.map.weighted_size()
    }
}

/// Separates a primary key from the variant part of a secondary key.
pub const VARIANT_SEP: char = '\u{1}';

/// Ends the primary key of a page requested over HTTPS. WordPress builds its links from the
/// scheme it is told (`X-Forwarded-Proto`), so the HTTPS page is stored apart from the HTTP
/// one; as a variant-style suffix it is ignored by URL, prefix and expression matching, so
/// every ban that selects a URL selects both.
pub const HTTPS_SUFFIX: &str = "\u{1}https";

/// The primary key of the HTTPS page of a URL whose (HTTP) primary key is `primary`.
pub fn https_key(primary: &str) -> String {
    format!("{primary}{HTTPS_SUFFIX}")
}

/// The secondary key of a request under a Vary rule: the primary key plus, for each header
/// the rule names, the request's values normalised by [`push_selecting`] (`=` before them
/// when the request has the header, so an empty value and an absent header differ).
pub fn variant_key(primary: &str, rule: &VaryRule, req: &HeaderMap) -> String {
    let mut key = String::with_capacity(primary.len() + 32);
    key.push_str(primary);
    for name in &rule.names {
        key.push(VARIANT_SEP);
        if req.contains_key(name) {
            key.push('=');
            push_selecting(&mut key, name, req);
        }
    }
    key
}

/// Appends a request's values of a header a Vary rule names, normalised so that spellings of
/// one value share a variant (RFC 9111 §4.1 lets a cache normalise them): all lines and list
/// members joined by `,` without the whitespace around them; lower case for the `Accept`
/// fields, whose values are case-insensitive; `Accept-Language` members ordered by weight,
/// then tag (`en, de` is `de, en`); `Origin` per [`push_origin`].
fn push_selecting(key: &mut String, name: &HeaderName, req: &HeaderMap) {
    let lines = req.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()));
    if *name == http::header::ORIGIN {
        for (i, v) in lines.enumerate() {
            if i > 0 {
                key.push(',');
            }
            push_origin(key, v.trim_matches([' ', '\t']));
        }
        return;
    }
    let lower = [
        http::header::ACCEPT,
        http::header::ACCEPT_CHARSET,
        http::header::ACCEPT_LANGUAGE,
    ]
    .contains(name);
    if *name == http::header::ACCEPT_LANGUAGE {
        let mut langs: Vec<(u32, String)> = lines
            .flat_map(|v| v.split(',').map(language).collect::<Vec<_>>())
            .flatten()
            .collect();
        langs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (i, (q, tag)) in langs.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(tag);
            if *q != 1000 {
                key.push_str(&format!(";q={}", *q as f32 / 1000.0));
            }
        }
        return;
    }
    let mut first = true;
    for line in lines {
        for member in line
            .split(',')
            .map(|m| m.trim_matches([' ', '\t']))
            .filter(|m| !m.is_empty())
        {
            if !first {
                key.push(',');
            }
            first = false;
            if lower {
                key.extend(member.chars().map(|c| c.to_ascii_lowercase()));
            } else {
                key.push_str(member);
            }
        }
    }
}

/// One `Accept-Language` member: its weight in thousandths (RFC 9110 §12.4.2; 1000 without
/// `q`) and its lower-cased tag with any other parameters; `None` for an empty member.
fn language(member: &str) -> Option<(u32, String)> {
    let mut parts = member.split(';').map(|p| p.trim_matches([' ', '\t']));
    let tag = parts.next().filter(|t| !t.is_empty())?.to_ascii_lowercase();
    let mut q = 1000;
    let mut rest = String::new();
    for p in parts {
        match p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
            Some(v) => {
                q = v
                    .parse::<f32>()
                    .map_or(1000, |f| (f.clamp(0.0, 1.0) * 1000.0).round() as u32)
            }
            None => {
                rest.push(';');
                rest.push_str(&p.to_ascii_lowercase());
            }
        }
    }
    Some((q, tag + &rest))
}

/// An `Origin` as variants compare it: scheme and host are case-insensitive, a default port
/// is no port (`HTTPS://Site.Example:443` is `https://site.example`), so spellings of one
/// origin share one variant.
fn push_origin(key: &mut String, origin: &str) {
    let lower = origin.to_ascii_lowercase();
    let lower = lower.trim_end_matches('/');
    let bare = lower
        .strip_prefix("https://")
        .map(|h| ("https://", h.strip_suffix(":443").unwrap_or(h)))
        .or_else(|| {
            lower
                .strip_prefix("http://")
                .map(|h| ("http://", h.strip_suffix(":80").unwrap_or(h)))
        });
    match bare {
        Some((scheme, host)) => {
            key.push_str(scheme);
            key.push_str(host);
        }
        None => key.push_str(lower),
    }
}

/// The header names in a response's `Vary` other than Accept-Encoding, lower-cased and
/// de-duplicated. Invalid names are dropped.
pub fn vary_names(resp: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = Vec::new();
    for v in resp.get_all(http::header::VARY) {
        let Ok(s) = v.to_str() else { continue };
        for n in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let Ok(name) = HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()) else {
                continue;
            };
            if name != http::header::ACCEPT_ENCODING && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(body: &str, ttl: Duration) -> Arc<Object> {
        let now = Instant::now();
        Arc::new(Object {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            hidden: HeaderMap::new(),
            identity: Bytes::from(body.to_string()),
            gzip: None,
            br: None,
            recent: None,
            etag: None,
            last_modified: None,
            stored_at: now,
            initial_age: Duration::from_secs(5),
            fresh_until: now + ttl,
            grace_until: now + ttl * 2,
            error_until: now + ttl * 2,
            keep_until: now + ttl * 2,
            compressible: true,
            tags: vec![Arc::from("t")].into(),
            fetched_gen: 0,
            id: next_object_id(),
            banned: BanMark::default(),
        })
    }

    #[test]
    fn stores_and_purges_with_variants() {
        let s = Store::new(1 << 20);
        let rule = Arc::new(VaryRule::new(vec![HeaderName::from_static("x-device")]));
        s.insert("h/a".into(), Slot::Vary(rule.clone()));
        let mut req = HeaderMap::new();
        req.insert("x-device", "mobile".parse().unwrap());
        let k = variant_key("h/a", &rule, &req);
        s.insert(k.clone().into(), Slot::Object(object("m", Duration::from_secs(60))));
        s.insert("h/ab".into(), Slot::Object(object("other", Duration::from_secs(60))));
        assert!(matches!(s.get(&k), Some(Slot::Object(_))));
        assert_eq!(s.purge_url("h/a"), 2);
        assert!(s.get(&k).is_none());
        assert!(s.get("h/ab").is_some(), "a longer URL is not a variant");
    }

    #[test]
    fn byte_budget_evicts() {
        let s = Store::new(1 << 20);
        let big = "x".repeat(100 * 1024);
        for i in 0..40 {
            s.insert(
                format!("h/{i}").into(),
                Slot::Object(object(&big, Duration::from_secs(60))),
            );
            s.maintain();
        }
        s.maintain();
        assert!(s.weighted_size() <= 1 << 20, "{}", s.weighted_size());
        assert!(s.stats.evictions.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn the_tag_index_follows_the_store() {
        let s = Store::new(1 << 20);
        s.insert("h/a".into(), Slot::Object(object("a", Duration::from_secs(60))));
        s.insert("h/b".into(), Slot::Object(object("b", Duration::from_secs(60))));
        let mut keys = s.tags.keys("t", |_| true);
        keys.sort();
        assert_eq!(keys, [Arc::from("h/a"), Arc::from("h/b")]);
        // Replacing an object keeps the key indexed; removing it forgets it.
        s.insert("h/a".into(), Slot::Object(object("a2", Duration::from_secs(60))));
        s.maintain();
        assert_eq!(s.tags.keys("t", |k| k == "h/a").len(), 1);
        s.remove("h/a");
        s.remove("h/b");
        s.maintain();
        assert!(s.tags.is_empty());
        assert!(s.tags.keys("t", |_| true).is_empty());
    }

    #[test]
    fn soft_bans_make_objects_stale() {
        let s = Store::new(1 << 20);
        let o = object("a", Duration::from_secs(60));
        s.insert("h/a".into(), Slot::Object(o.clone()));
        assert!(o.is_fresh(Instant::now()));
        assert!(s.mark_stale("h/a", Banned::Exact));
        assert!(!o.is_fresh(Instant::now()));
        assert_eq!(o.ttl_secs(Instant::now()), 0);
        assert!(!s.mark_stale("h/none", Banned::Exact));
    }

    #[test]
    fn vary_names_skip_accept_encoding() {
        let mut h = HeaderMap::new();
        h.append(http::header::VARY, "Accept-Encoding, Cookie".parse().unwrap());
        h.append(http::header::VARY, "cookie, X-Device".parse().unwrap());
        let names: Vec<_> = vary_names(&h).iter().map(|n| n.as_str().to_string()).collect();
        assert_eq!(names, ["cookie", "x-device"]);
    }

    #[test]
    fn age_counts_time_held_plus_origin_age() {
        let o = object("a", Duration::from_secs(60));
        assert_eq!(o.age(o.stored_at + Duration::from_secs(10)), 15);
    }

    #[test]
    fn the_variant_budget_counts_distinct_variants_in_a_window() {
        let rule = VaryRule::new(vec![http::header::ORIGIN]);
        let t0 = Instant::now();
        assert!(rule.admit("k\u{1}a", false, 2, t0));
        assert!(rule.admit("k\u{1}b", false, 2, t0));
        assert!(
            !rule.admit("k\u{1}c", false, 2, t0),
            "a third distinct variant is over budget"
        );
        assert!(
            rule.admit("k\u{1}a", false, 2, t0),
            "an admitted variant may be stored again"
        );
        assert!(rule.admit("k\u{1}", true, 2, t0), "the plain variant always may");
        assert!(
            rule.admit("k\u{1}c", false, 2, t0 + VARIANT_WINDOW),
            "the count starts over after the window"
        );
    }

    #[test]
    fn origins_are_keyed_as_the_same_origin_however_spelled() {
        let rule = VaryRule::new(vec![http::header::ORIGIN]);
        let key = |o: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::ORIGIN, o.parse().unwrap());
            variant_key("k", &rule, &h)
        };
        assert_eq!(key("HTTPS://Site.Example:443"), key("https://site.example"));
        assert_eq!(key(" http://site.example:80/"), key("http://site.example"));
        assert_ne!(key("http://site.example"), key("https://site.example"));
        assert_ne!(key("https://site.example:8443"), key("https://site.example"));
        assert_eq!(key("null"), key("NULL"));
    }

    #[test]
    fn selecting_headers_are_normalised_before_they_key_a_variant() {
        let rule = VaryRule::new(vec![HeaderName::from_static("foo"), http::header::ACCEPT_LANGUAGE]);
        let key = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            variant_key("k", &rule, &h)
        };
        // Lines and members combine, whitespace around them does not count.
        assert_eq!(key(&[("foo", "1, 2")]), key(&[("foo", "1"), ("foo", "2")]));
        assert_eq!(key(&[("foo", " 1 ,2 ")]), key(&[("foo", "1,2")]));
        assert_ne!(
            key(&[("foo", "1,2")]),
            key(&[("foo", "2,1")]),
            "order counts for unknown fields"
        );
        assert_ne!(
            key(&[("foo", "A")]),
            key(&[("foo", "a")]),
            "case counts for unknown fields"
        );
        // Accept-Language: case, whitespace and the order of equal weights do not count.
        let en_de = key(&[("accept-language", "en, de")]);
        assert_eq!(en_de, key(&[("accept-language", "de, en")]));
        assert_eq!(en_de, key(&[("accept-language", "eN, De")]));
        assert_eq!(en_de, key(&[("accept-language", " en ,   de")]));
        assert_eq!(en_de, key(&[("accept-language", "de;q=1.0, en")]));
        assert_eq!(
            key(&[("accept-language", "fr;q=0.5, de")]),
            key(&[("accept-language", "de, fr;Q=0.50")])
        );
        assert_ne!(en_de, key(&[("accept-language", "en;q=0.5, de")]), "weights count");
        // An empty value is not an absent header.
        assert_ne!(key(&[("foo", "")]), key(&[]));
    }

    /// A page with a latest-comments list: stored segmented, its list patched alone; the
    /// gzip body decodes to the patched page every time, brotli is dropped. The time a patch
    /// takes (the list's patch, the splice) is printed next to a whole-page gzip's.
    #[test]
    fn a_list_patch_compresses_only_the_list() {
        use strata_wire::patch::Patch;
        let thread = include_str!("patch/thread.html");
        let list = include_str!("patch/recent.html");
        let page = format!("<html><body>{}{list}</body></html>", thread.repeat(5));
        let (gzip, recent) = gzip_page(page.as_bytes());
        let mut o = Arc::try_unwrap(object(&page, Duration::from_secs(60))).unwrap();
        o.gzip = gzip;
        o.recent = recent;
        o.br = Some(Bytes::from_static(b"br"));
        let at = o.recent.clone().expect("the list is a segment of its own").segment;
        assert!(page[at.identity.clone()].starts_with("<li class=\"wp-block-latest-comments__comment\">"));

        let Patch::Recent(r) = crate::patch::recent_test_patch() else {
            unreachable!()
        };
        let rounds = 100u32;
        let started = std::time::Instant::now();
        let mut patched = None;
        for _ in 0..rounds {
            let new_list = crate::patch::recent_list(&page[at.identity.clone()], &r).unwrap();
            patched = o.patched_list(new_list.as_bytes(), 1);
        }
        let each = started.elapsed() / rounds;
        let started = std::time::Instant::now();
        let whole = crate::compress::gzip(page.as_bytes());
        let whole_took = started.elapsed();
        let started = std::time::Instant::now();
        let etag = body_etag(page.as_bytes());
        println!(
            "list patch of a {} B page: {each:?}; its whole gzip: {whole_took:?}; its whole validator: {:?}",
            page.len(),
            started.elapsed()
        );
        assert!(!etag.is_empty());
        assert!(whole.is_some());
        let p = patched.unwrap();
        let expected = crate::patch::apply(page.as_bytes(), &Patch::Recent(r.clone())).unwrap();
        assert_eq!(&p.identity[..], &expected[..]);
        assert_eq!(
            crate::compress::gunzip(p.gzip.as_ref().unwrap(), 1 << 20).unwrap(),
            p.identity
        );
        assert!(p.br.is_none(), "brotli is not made again per patch");
        assert_ne!(p.etag, o.etag);
        // Patched again at the new segment.
        assert_eq!(p.etag, HeaderValue::from_str(&body_etag(&p.identity)).ok());
        let seg = p.recent.clone().unwrap().segment;
        assert!(std::str::from_utf8(&p.identity[seg.identity.clone()])
            .unwrap()
            .contains("#comment-636\""));
        let mut again = r.clone();
        again.before = [636].into_iter().chain(r.before.iter().copied()).collect();
        again.added[0].id = 637;
        let link = again.added[0].fields.get_mut(strata_wire::patch::fields::LINK).unwrap();
        *link = link.replace("#comment-636", "#comment-637");
        let list = std::str::from_utf8(&p.identity[seg.identity.clone()]).unwrap();
        let twice = p
            .patched_list(crate::patch::recent_list(list, &again).unwrap().as_bytes(), 2)
            .unwrap();
        assert_eq!(
            crate::compress::gunzip(twice.gzip.as_ref().unwrap(), 1 << 20).unwrap(),
            twice.identity
        );
        assert!(std::str::from_utf8(&twice.identity).unwrap().contains("#comment-637\""));
    }

    #[test]
    fn a_page_with_no_list_or_two_is_gzipped_whole() {
        let list = include_str!("patch/recent.html");
        assert!(gzip_page(list.repeat(2).as_bytes()).1.is_none());
        let (gz, seg) = gzip_page(include_str!("patch/thread.html").as_bytes());
        assert!(gz.is_some() && seg.is_none());
    }
}
