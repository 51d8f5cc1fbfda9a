//! Configuration: TOML → raw serde structs → validated [`Config`].
//!
//! Raw structs mirror the file (unknown keys are refused); [`Config::from_toml`] turns them
//! into typed values (`Duration`, `SocketAddr`, byte counts) and collects *every* problem
//! with the key it belongs to, so `--check-config` can print them all at once. Each section
//! has its own validation function (`server_config`, `cache_config`, …): it records a bad
//! value's problem and goes on with a stand-in, so the checks after it still run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use strata_wire::config::Checker;
pub use strata_wire::config::{parse_duration, parse_size, ConfigError, Problem};

mod sections;

use sections::*;

/// Default cache byte budget: 512 MiB.
pub const DEFAULT_CAPACITY: u64 = 512 << 20;
/// TTL for responses without freshness information (WordPress HTML sends none).
pub const DEFAULT_TTL: Duration = Duration::from_secs(120);
/// How long an expired object is kept to be served stale.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
/// How long past its grace an object with validators is kept to be revalidated (WordPress
/// pages carry none, and grace already revalidates the assets that do).
pub const DEFAULT_KEEP: Duration = Duration::ZERO;
/// Heuristic freshness, as a fraction of the time since `Last-Modified`, for responses
/// without explicit freshness when `default_ttl` is zero (0: none; WordPress's default TTL
/// decides instead).
pub const DEFAULT_HEURISTIC_FRACTION: f64 = 0.0;
/// Largest body the cache stores; larger ones stream through.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 8 << 20;
/// How long requests wait for another request's origin fetch of the same key.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// The origin workers `origin.concurrency`'s default is derived from: `pm.max_children` of
/// the project's PHP-FPM pool (scripts/origin/php-fpm.conf), shared by the cluster's nodes.
pub const DEFAULT_ORIGIN_WORKERS: usize = 8;
/// How long a visitor's request may wait for a place in the origin budget before a 503.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often, at most, a page marked stale by a bounded (list) ban is refreshed.
pub const DEFAULT_LIST_REFRESH: Duration = Duration::from_secs(1);
/// Tags whose bounded soft bans are refreshed at most once per `list_refresh` (a trailing
/// `*` matches a prefix): lists and the latest-comments and latest-posts widgets.
pub const DEFAULT_LIST_TAGS: &[&str] = &["list", "list:*", "wp:recent-*"];
/// How long an uncacheable answer is remembered so its URL is passed without waiting.
pub const DEFAULT_HIT_FOR_PASS_TTL: Duration = Duration::from_secs(120);
/// Variants stored under one URL when the origin sends `Vary`.
pub const DEFAULT_MAX_VARIANTS: usize = 16;
/// Time allowed for a client to send complete request headers (slowloris guard).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted from a client.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 << 10;
/// Time in-flight requests get to finish after SIGTERM.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Worker threads serving the public listener when `server.workers` is not set: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}
/// Most client connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Most admin connections served at once (siblings, the syncer, health checks, operators).
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 256;
/// How long a public connection may stay open without a request in progress.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Origin TCP connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time from sending a request to the origin's response head.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence allowed between two chunks of an origin body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle keep-alive connections kept to the origin.
pub const DEFAULT_MAX_IDLE_PER_HOST: usize = 64;
/// Bodies smaller than this are not compressed (the headers would outweigh the gain).
pub const DEFAULT_COMPRESS_MIN_SIZE: u64 = 256;

/// Cookie name prefixes that make a request personal (passed, never cached).
pub const DEFAULT_PASS_COOKIES: &[&str] = &[
    "wordpress_logged_in_",
    "wordpress_sec_",
    "wp-postpass_",
    "comment_author_",
    "woocommerce_cart_hash",
    "woocommerce_items_in_cart",
    "wp_woocommerce_session_",
    "PHPSESSID",
];
/// Path prefixes that are never cached.
pub const DEFAULT_PASS_PATHS: &[&str] = &[
    "/wp-admin",
    "/wp-login.php",
    "/wp-cron.php",
    "/wp-comments-post.php",
    "/wp-activate.php",
    "/wp-signup.php",
    "/wp-mail.php",
    "/xmlrpc.php",
    "/cart",
    "/checkout",
    "/my-account",
    "/wc-api",
    "/.well-known/acme-challenge/",
];
/// Query parameters whose presence makes a request uncacheable.
pub const DEFAULT_PASS_QUERY: &[&str] = &["preview", "p_preview", "add-to-cart", "wc-api", "_wpnonce"];
/// Query parameters removed from the cache key (tracking); a trailing `*` matches a prefix.
pub const DEFAULT_STRIP_QUERY: &[&str] = &[
    "utm_*",
    "fbclid",
    "gclid",
    "gclsrc",
    "dclid",
    "msclkid",
    "mc_cid",
    "mc_eid",
    "_ga",
    "_gl",
    "yclid",
    "igshid",
    "twclid",
    "li_fat_id",
    "_hsenc",
    "_hsmi",
    "mkt_tok",
    "ref_src",
    "replytocom",
];
/// Headers an origin tags responses with.
pub const DEFAULT_TAG_HEADERS: &[&str] = &["surrogate-key", "xkey", "cache-tag", "cache-groups", "x-litespeed-tag"];
/// Tags kept per object.
pub const DEFAULT_MAX_TAGS: usize = 64;
/// Heartbeat period towards each sibling.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
/// Bound within which a node must confirm it has every sibling's bans.
pub const DEFAULT_CONFIRM_WITHIN: Duration = Duration::from_secs(1);
/// Least time a comment answer is held.
pub const DEFAULT_HOLD: Duration = Duration::from_millis(5);
/// Longest wait for a comment's verdict.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_millis(200);
/// Queue depth beyond which comments go to PHP.
pub const DEFAULT_MAX_QUEUE: u64 = 100_000;
/// Age beyond which the syncer's settings are considered gone.
pub const DEFAULT_SETTINGS_MAX_AGE: Duration = Duration::from_secs(10);
/// Deadline of a memcached exchange.
pub const DEFAULT_MEMCACHED_TIMEOUT: Duration = Duration::from_millis(100);
/// Default `[comments] patch_check_interval`: a patched page is checked at most this often.
pub const DEFAULT_PATCH_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Default `[comments] patch_check_rate`: checks started per second per node.
pub const DEFAULT_PATCH_CHECK_RATE: u32 = 2;
/// How long a write's answer waits for reachable siblings to acknowledge its bans.
pub const DEFAULT_WRITE_WAIT: Duration = Duration::from_millis(500);
/// How long a node waits for the home node's answer head before asking the origin itself:
/// longer than nearly every WordPress render, short enough that a hung home costs a visitor
/// little.
pub const DEFAULT_SHIELD_TIMEOUT: Duration = Duration::from_secs(2);
/// Bans queued per sibling before collapsing into one ban of everything.
pub const DEFAULT_QUEUE_LIMIT: usize = 10_000;
/// Targeted cache-control fields (RFC 9213) obeyed, most specific first.
pub const DEFAULT_TARGETED_FIELDS: &[&str] = &["strata-cache-control", "cdn-cache-control"];

/// `[cache] preset`: which defaults the keys that make the proxy a WordPress cache or an exact
/// HTTP cache take. A key set in the file overrides its preset's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Preset {
    /// For WordPress, which sends no cache headers with its pages: a default TTL, an hour of
    /// grace, clients' directives ignored (a flood of forced reloads never reaches PHP),
    /// `Authorization` passed, cookies never stored.
    #[default]
    WordPress,
    /// An exact shared HTTP cache (RFC 9111) for any origin: no default TTL and no grace,
    /// heuristic freshness, objects with validators kept to be revalidated, any status with
    /// explicit freshness stored, clients' directives honoured, `Authorization` looked up,
    /// `Surrogate-Control` obeyed.
    Http,
}

/// The defaults a [`Preset`] gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PresetDefaults {
    pub default_ttl: Duration,
    pub grace: Duration,
    pub keep: Duration,
    pub heuristic_fraction: f64,
    pub store_any_status: bool,
    pub store_set_cookie: bool,
    pub request_directives: bool,
    pub targeted_fields: &'static [&'static str],
    /// `[policy] pass_authorization`.
    pub pass_authorization: bool,
}

impl Preset {
    /// The preset a `[cache] preset` value names (`"wordpress"`, `"http"`).
    pub fn parse(name: &str) -> Option<Preset> {
        match name {
            "wordpress" => Some(Preset::WordPress),
            "http" => Some(Preset::Http),
            _ => None,
        }
    }

    /// Its name in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::WordPress => "wordpress",
            Preset::Http => "http",
        }
    }

    /// The defaults it gives.
    pub fn defaults(self) -> PresetDefaults {
        match self {
            Preset::WordPress => PresetDefaults {
                default_ttl: DEFAULT_TTL,
                grace: DEFAULT_GRACE,
                keep: DEFAULT_KEEP,
                heuristic_fraction: DEFAULT_HEURISTIC_FRACTION,
                store_any_status: false,
                store_set_cookie: false,
                request_directives: false,
                targeted_fields: DEFAULT_TARGETED_FIELDS,
                pass_authorization: true,
            },
            Preset::Http => PresetDefaults {
                default_ttl: Duration::ZERO,
                grace: Duration::ZERO,
                keep: Duration::from_secs(3600),
                heuristic_fraction: 0.1,
                store_any_status: true,
                store_set_cookie: true,
                request_directives: true,
                targeted_fields: &["strata-cache-control", "surrogate-control", "cdn-cache-control"],
                pass_authorization: false,
            },
        }
    }
}
/// Status codes stored when the response is otherwise cacheable.
pub const DEFAULT_CACHEABLE_STATUSES: &[u16] = &[200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    origin: RawOrigin,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    bans: RawBans,
    #[serde(default)]
    comments: RawComments,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    admin_listen: Option<String>,
    access_log: Option<bool>,
    access_log_format: Option<String>,
    access_log_file: Option<String>,
    header_timeout: Option<toml::Value>,
    max_header_bytes: Option<toml::Value>,
    max_connections: Option<i64>,
    admin_max_connections: Option<i64>,
    max_connections_per_client: Option<i64>,
    idle_timeout: Option<toml::Value>,
    workers: Option<i64>,
    shutdown_timeout: Option<toml::Value>,
    hosts: Option<Vec<String>>,
    tls_listen: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_certificates: Option<Vec<RawCertificate>>,
    redirect_https: Option<bool>,
    hsts: Option<String>,
}

/// One `[[server.tls_certificates]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrigin {
    url: Option<String>,
    connect_timeout: Option<toml::Value>,
    first_byte_timeout: Option<toml::Value>,
    body_timeout: Option<toml::Value>,
    max_idle_connections: Option<i64>,
    concurrency: Option<i64>,
    background_max: Option<i64>,
    queue_timeout: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    preset: Option<String>,
    capacity: Option<toml::Value>,
    default_ttl: Option<toml::Value>,
    grace: Option<toml::Value>,
    max_object_size: Option<toml::Value>,
    lock_timeout: Option<toml::Value>,
    background_refreshes: Option<i64>,
    list_refresh: Option<toml::Value>,
    list_tags: Option<Vec<String>>,
    hit_for_pass_ttl: Option<toml::Value>,
    keep: Option<toml::Value>,
    heuristic_fraction: Option<toml::Value>,
    store_any_status: Option<bool>,
    store_set_cookie: Option<bool>,
    targeted_fields: Option<Vec<String>>,
    request_directives: Option<bool>,
    fill_headers: Option<Vec<String>>,
    max_variants: Option<i64>,
    compress_min_size: Option<toml::Value>,
    brotli: Option<bool>,
    cacheable_statuses: Option<Vec<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    pass_cookies: Option<Vec<String>>,
    extra_pass_cookies: Option<Vec<String>>,
    pass_paths: Option<Vec<String>>,
    extra_pass_paths: Option<Vec<String>>,
    pass_query: Option<Vec<String>>,
    strip_query: Option<Vec<String>>,
    pass_authorization: Option<bool>,
    pass_ajax: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    node_id: Option<String>,
    siblings: Option<Vec<String>>,
    secret_file: Option<String>,
    admin_allow: Option<Vec<String>>,
    admin_hosts: Option<Vec<String>>,
    heartbeat_interval: Option<toml::Value>,
    confirm_within: Option<toml::Value>,
    when_unconfirmed: Option<String>,
    queue_limit: Option<i64>,
    write_wait: Option<toml::Value>,
    shield: Option<bool>,
    shield_timeout: Option<toml::Value>,
    shield_window: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComments {
    enabled: Option<bool>,
    memcached: Option<Vec<String>>,
    hold: Option<toml::Value>,
    max_hold: Option<toml::Value>,
    key_prefix: Option<String>,
    max_queue: Option<i64>,
    trusted_proxies: Option<Vec<String>>,
    settings_max_age: Option<toml::Value>,
    memcached_timeout: Option<toml::Value>,
    patch_pages: Option<bool>,
    patch_check_interval: Option<toml::Value>,
    patch_check_rate: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBans {
    tag_headers: Option<Vec<String>>,
    strip_tag_headers: Option<bool>,
    max_tags: Option<i64>,
    wordpress: Option<bool>,
    trust_anonymous_writes: Option<bool>,
    purge_allow: Option<Vec<String>>,
    purge_path: Option<String>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listeners and client-side limits.
    pub server: ServerConfig,
    /// The single origin everything is fetched from.
    pub origin: OriginConfig,
    /// Cache sizing and lifetimes.
    pub cache: CacheConfig,
    /// What is passed and how keys are normalised.
    pub policy: PolicyConfig,
    /// Node identity, siblings and the secret that authenticates admin requests.
    pub cluster: ClusterConfig,
    /// Tags and invalidation rules.
    pub bans: BansConfig,
    /// Comment write-behind.
    pub comments: CommentsConfig,
}

/// `[comments]`
#[derive(Debug, Clone)]
pub struct CommentsConfig {
    /// Whether comment POSTs are queued in memcached instead of going to PHP.
    pub enabled: bool,
    /// memcached servers (`host:port`); the first one holds the queue.
    pub memcached: Vec<String>,
    /// How long every answer is held, at least.
    pub hold: Duration,
    /// How long an answer waits for the syncer's verdict before a 302 back to the post.
    pub max_hold: Duration,
    /// Prefix of the queue's memcached keys (the syncer's `key_prefix`).
    pub key_prefix: String,
    /// Queue depth beyond which comments go to PHP.
    pub max_queue: u64,
    /// Addresses whose `X-Forwarded-For` names the real client (the director, a TLS front).
    pub trusted_proxies: Vec<crate::allow::IpNet>,
    /// Settings older than this mean no syncer runs: comments then go to PHP.
    pub settings_max_age: Duration,
    /// Deadline of every memcached exchange.
    pub memcached_timeout: Duration,
    /// Whether the syncer's comment patches are applied to stored pages (else those pages
    /// are banned as the patch's ban says).
    pub patch_pages: bool,
    /// The shortest time between two checks of one patched page against WordPress's render.
    pub patch_check_interval: Duration,
    /// Most checks of patched pages started per second on this node (0: none).
    pub patch_check_rate: u32,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Public HTTP listener.
    pub listen: SocketAddr,
    /// Admin listener (health, metrics, signed purges); must differ from `listen`.
    pub admin_listen: SocketAddr,
    /// Whether one log line per request is written.
    pub access_log: bool,
    /// How: a log event (target `strata::access`), combined format or JSON lines.
    pub access_log_format: crate::access::Format,
    /// Where `combined` and `json` lines go; stdout when `None`.
    pub access_log_file: Option<PathBuf>,
    /// Deadline for a client to send a request head, counted from the end of the previous
    /// response on a keep-alive connection (so it also bounds idle connections).
    pub header_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Most concurrent client connections.
    pub max_connections: usize,
    /// Most concurrent admin connections: a limit of their own, so a full public port never
    /// keeps siblings, the syncer or health checks out.
    pub admin_max_connections: usize,
    /// Most concurrent public connections from one client address (an IPv6 client counted
    /// by its /64); 0 = no such limit.
    pub max_connections_per_client: usize,
    /// How long a public connection may stay open with no request in progress: an HTTP/2
    /// connection with no open stream (pings answered or not), an HTTP/1.1 keep-alive
    /// connection (bounded by `header_timeout` too).
    pub idle_timeout: Duration,
    /// Threads serving the public listener, each with its own single-threaded runtime.
    pub workers: usize,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// Host names (without port) served; empty = any Host goes to the one origin.
    pub hosts: Vec<String>,
    /// HTTPS, when `server.tls_listen` is set.
    pub tls: Option<TlsConfig>,
}

/// `[server]` HTTPS keys: `tls_listen`, `tls_cert`, `tls_key`, `tls_certificates`,
/// `redirect_https`, `hsts`.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Public HTTPS listener.
    pub listen: SocketAddr,
    /// Every certificate, read and checked at load; the first (`tls_cert`) is served when
    /// the client's SNI names none of them.
    pub certificates: Vec<crate::tls::Certificate>,
    /// Whether plain-HTTP requests get a 301 to the same URL on HTTPS.
    pub redirect_https: bool,
    /// `Strict-Transport-Security` value sent on HTTPS responses.
    pub hsts: Option<http::HeaderValue>,
}

/// `[origin]`
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// Base URL of the origin, e.g. `http://127.0.0.1:8081`.
    pub url: http::Uri,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time to the response head.
    pub first_byte_timeout: Duration,
    /// Longest pause between body chunks.
    pub body_timeout: Duration,
    /// Idle pooled connections kept open to the origin.
    pub max_idle_connections: usize,
    /// Most requests this node has at the origin at once, foreground and background (the
    /// origin budget, [`crate::budget`]).
    pub concurrency: usize,
    /// Most of them that may be background refreshes of stale objects.
    pub background_max: usize,
    /// How long a foreground request waits for a place before it is answered 503.
    pub queue_timeout: Duration,
}

impl Config {
    /// What a running proxy takes from `new` on SIGHUP, and the keys that differ but take a
    /// restart (their running values are kept): `[cache]` but `capacity`, `[policy]`,
    /// `[bans] purge_allow`, `purge_path` and `strip_tag_headers`, `[server] hosts` and `access_log`,
    /// `[cluster] admin_allow`, `admin_hosts`, `write_wait` and `when_unconfirmed` apply at once; listeners,
    /// workers and timeouts, the origin, the cache's capacity, the cluster's membership and
    /// secret, tag extraction and `[comments]` are built at start.
    pub fn reloaded(&self, new: Config) -> (Config, Vec<&'static str>) {
        let mut merged = self.clone();
        let mut restart = Vec::new();
        let mut differs = |key: &'static str, a: String, b: String| {
            if a != b {
                restart.push(key);
            }
        };
        merged.cache = CacheConfig {
            capacity: self.cache.capacity,
            ..new.cache.clone()
        };
        differs(
            "cache.capacity",
            format!("{:?}", self.cache.capacity),
            format!("{:?}", new.cache.capacity),
        );
        merged.policy = new.policy.clone();
        merged.bans.purge_allow = new.bans.purge_allow.clone();
        merged.bans.purge_path = new.bans.purge_path.clone();
        merged.bans.strip_tag_headers = new.bans.strip_tag_headers;
        let tag_rules = |b: &BansConfig| format!("{:?} {} {}", b.tag_headers, b.max_tags, b.wordpress);
        differs(
            "bans (tag_headers, max_tags, wordpress)",
            tag_rules(&self.bans),
            tag_rules(&new.bans),
        );
        merged.server.hosts = new.server.hosts.clone();
        merged.server.access_log = new.server.access_log;
        differs(
            "server.access_log_format",
            format!("{:?}", self.server.access_log_format),
            format!("{:?}", new.server.access_log_format),
        );
        differs(
            "server.access_log_file",
            format!("{:?}", self.server.access_log_file),
            format!("{:?}", new.server.access_log_file),
        );
        let server = |s: &ServerConfig| {
            format!(
                "{} {} {:?} {} {} {} {} {:?} {} {:?} {:?}",
                s.listen,
                s.admin_listen,
                s.header_timeout,
                s.max_header_bytes,
                s.max_connections,
                s.admin_max_connections,
                s.max_connections_per_client,
                s.idle_timeout,
                s.workers,
                s.shutdown_timeout,
                s.tls
            )
        };
        differs(
            "server (listeners, limits, workers, tls)",
            server(&self.server),
            server(&new.server),
        );
        differs("origin", format!("{:?}", self.origin), format!("{:?}", new.origin));
        merged.cluster.admin_allow = new.cluster.admin_allow.clone();
        merged.cluster.admin_hosts = new.cluster.admin_hosts.clone();
        merged.cluster.write_wait = new.cluster.write_wait;
        merged.cluster.when_unconfirmed = new.cluster.when_unconfirmed;
        merged.cluster.shield = new.cluster.shield;
        merged.cluster.shield_timeout = new.cluster.shield_timeout;
        merged.cluster.shield_window = new.cluster.shield_window;
        let cluster = |c: &ClusterConfig| {
            format!(
                "{} {:?} {:?} {:?} {:?} {}",
                c.node_id, c.siblings, c.secret, c.heartbeat_interval, c.confirm_within, c.queue_limit
            )
        };
        differs(
            "cluster (node_id, siblings, secret, heartbeat_interval, confirm_within, queue_limit)",
            cluster(&self.cluster),
            cluster(&new.cluster),
        );
        differs(
            "comments",
            format!("{:?}", self.comments),
            format!("{:?}", new.comments),
        );
        (merged, restart)
    }
}

/// `[cache]`
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Which defaults the keys below took.
    pub preset: Preset,
    /// Byte budget, counting bodies, headers and bookkeeping.
    pub capacity: u64,
    /// TTL when the response has no freshness information.
    pub default_ttl: Duration,
    /// How long past expiry an object may be served stale.
    pub grace: Duration,
    /// How long past its grace an object that has validators (`ETag`, `Last-Modified`) is
    /// kept, so that the next request revalidates it (a conditional request, answered `304`
    /// when unchanged) instead of fetching it again.
    pub keep: Duration,
    /// Freshness of a response without explicit freshness, when `default_ttl` is zero: this
    /// fraction of the time since its `Last-Modified` (RFC 9111 §4.2.2), at most a day.
    pub heuristic_fraction: f64,
    /// Store any final status (but `206` and `304`) when the response gives explicit
    /// freshness (`s-maxage`, `max-age`, `Expires`) or says `public`, not only
    /// `cacheable_statuses` (RFC 9111 §3: a `302`, `307` or `503` with `max-age` is storable).
    pub store_any_status: bool,
    /// Store a response that sets a cookie when it gives explicit freshness (RFC 9111 lets a
    /// shared cache; every client then gets the cookie). Off for WordPress, whose cookies
    /// are a visitor's own.
    pub store_set_cookie: bool,
    /// Response fields that carry cache directives for this cache alone (RFC 9213), most
    /// specific first (lower case): the first one a response has stands instead of its
    /// `Cache-Control` and `Expires`; all of them are removed before delivery.
    pub targeted_fields: Vec<http::HeaderName>,
    /// Honour the `Cache-Control` a client sends (`no-cache`, `max-age`, `min-fresh`,
    /// `max-stale`, `only-if-cached`, `no-store`). Off for WordPress: a
    /// flood of forced reloads must not reach PHP.
    pub request_directives: bool,
    /// Request headers a fill forwards as the client sent them, besides the ones the key
    /// accounts for (the host, those the origin's `Vary` names): headers the operator knows
    /// the origin's answer does not depend on (a trace id, …). Empty by default: nothing a
    /// client sends that the key ignores may shape a stored object.
    pub fill_headers: Vec<http::HeaderName>,
    /// Largest body stored.
    pub max_object_size: u64,
    /// How long a request waits on another's fetch of the same key.
    pub lock_timeout: Duration,
    /// A page marked stale only by bounded soft bans of `list_tags` (the comment
    /// write-behind's list bans) is refreshed at most once per this: fetched less than this
    /// ago, its stale copy is served without a refresh. Zero: no bound.
    pub list_refresh: Duration,
    /// The tags whose bounded soft bans `list_refresh` applies to (`name*` = prefix).
    pub list_tags: Vec<String>,
    /// How long an uncacheable answer is remembered.
    pub hit_for_pass_ttl: Duration,
    /// Variants kept per URL when the origin sends `Vary`.
    pub max_variants: usize,
    /// Smallest body that is compressed.
    pub compress_min_size: u64,
    /// Whether a brotli variant is made at store time.
    pub brotli: bool,
    /// Status codes that may be stored.
    pub cacheable_statuses: Vec<u16>,
}

impl Default for CacheConfig {
    /// The WordPress preset's values and the other keys' defaults.
    fn default() -> Self {
        let mut c = Checker::default();
        sections::cache_config(&mut c, &RawCache::default())
    }
}

/// `[policy]`
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Cookie name prefixes that make a request pass.
    pub pass_cookies: Vec<String>,
    /// Path prefixes that always pass.
    pub pass_paths: Vec<String>,
    /// Query parameter names that make a request pass.
    pub pass_query: Vec<String>,
    /// Query parameter names (or `prefix*`) dropped from the cache key and the origin request.
    pub strip_query: Vec<String>,
    /// Whether a request with `Authorization` passes.
    pub pass_authorization: bool,
    /// Whether `X-Requested-With: XMLHttpRequest` passes.
    pub pass_ajax: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        PolicyConfig {
            pass_cookies: own(DEFAULT_PASS_COOKIES),
            pass_paths: own(DEFAULT_PASS_PATHS),
            pass_query: own(DEFAULT_PASS_QUERY),
            strip_query: own(DEFAULT_STRIP_QUERY),
            pass_authorization: true,
            pass_ajax: true,
        }
    }
}

/// `[cluster]`
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's name in logs, metrics and ban messages.
    pub node_id: String,
    /// Admin URLs of the other nodes.
    pub siblings: Vec<http::Uri>,
    /// Where the shared secret is read from.
    pub secret_file: PathBuf,
    /// The secret itself, read at load time.
    pub secret: Vec<u8>,
    /// Client addresses and ranges allowed on the admin API besides signature checks; empty
    /// = any (then `/lookup` and `/cluster` answer loopback clients and signed requests only).
    pub admin_allow: Vec<crate::allow::IpNet>,
    /// What else senders call this node's admin listener (`host:port` of their URLs), besides
    /// the address a connection arrives at: a signed request whose `Host` names neither is
    /// refused (it was signed for another node).
    pub admin_hosts: Vec<strata_wire::auth::Audience>,
    /// How often each sibling is sent a heartbeat (with any bans it has not acknowledged).
    pub heartbeat_interval: Duration,
    /// A node that has not confirmed, within this, that it has applied every sibling's bans
    /// treats its cache as possibly stale.
    pub confirm_within: Duration,
    /// What a node does while it cannot confirm it is current.
    pub when_unconfirmed: Unconfirmed,
    /// Bans queued per sibling before the queue collapses into one ban of everything.
    pub queue_limit: usize,
    /// How long the answer to a write waits for reachable siblings to acknowledge its bans.
    pub write_wait: Duration,
    /// Fill a missed key from its home node (rendezvous over the live members) instead of the
    /// origin, so the cluster renders a page once.
    pub shield: bool,
    /// Longest wait for the home node's answer head before filling from the origin.
    pub shield_timeout: Duration,
    /// A shield request lists the bans this node applied within this (default
    /// `confirm_within`: a ban older than that has reached every node still serving from
    /// its cache), so the home never answers with a copy one of them made old.
    pub shield_window: Duration,
}

/// What a node does while it cannot confirm that it has every sibling's bans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unconfirmed {
    /// Flush the cache once, then keep caching with freshness capped to `confirm_within`.
    Flush,
    /// Serve nothing from the cache (pass every request) until confirmed again.
    Pass,
}

/// `[bans]`
#[derive(Debug, Clone)]
pub struct BansConfig {
    /// Response headers whose values tag the object (lower case).
    pub tag_headers: Vec<http::HeaderName>,
    /// Remove the tag headers before delivering a response.
    pub strip_tag_headers: bool,
    /// Most tags kept per object.
    pub max_tags: usize,
    /// WordPress tags (shortlink, lists, widgets) and WordPress write rules.
    pub wordpress: bool,
    /// Ban beyond a write's own URLs on any successful write, anonymous ones included (for
    /// sites whose anonymous actions change pages); off: only confirmed logins and answers
    /// that prove a change do.
    pub trust_anonymous_writes: bool,
    /// Client addresses and ranges whose `PURGE` requests on the public port are obeyed;
    /// empty = none.
    pub purge_allow: Vec<crate::allow::IpNet>,
    /// The URL form of a public purge (nginx Helper's `/purge`): a GET or HEAD of
    /// `{purge_path}/PATH` from a `purge_allow` address purges `/PATH`; empty = off.
    pub purge_path: String,
}

impl Default for BansConfig {
    fn default() -> Self {
        BansConfig {
            tag_headers: DEFAULT_TAG_HEADERS
                .iter()
                .map(|h| http::HeaderName::from_static(h))
                .collect(),
            strip_tag_headers: true,
            max_tags: DEFAULT_MAX_TAGS,
            wordpress: true,
            trust_anonymous_writes: false,
            purge_allow: Vec::new(),
            purge_path: String::new(),
        }
    }
}

impl Config {
    /// Reads and validates a file. The secret file named in it is read too.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                key: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }],
        })?;
        Self::from_toml(&text, path.parent())
    }

    /// Validates TOML text; relative paths (the secret file, the TLS files) resolve against
    /// `base`.
    ///
    /// Errors: every problem of every section, each with its key; text that is not TOML of
    /// this shape (an unknown key, a wrong type) gives the parser's one problem instead.
    pub fn from_toml(text: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![Problem {
                key: String::new(),
                message: e.to_string().trim_end().to_string(),
            }],
        })?;
        let mut c = Checker::default();
        let server = server_config(&mut c, &raw.server, base);
        let nodes = raw.cluster.siblings.as_ref().map_or(0, Vec::len) + 1;
        let origin = origin_config(&mut c, &raw.origin, raw.cache.background_refreshes, nodes);
        let cache = cache_config(&mut c, &raw.cache);
        let policy = policy_config(&mut c, &raw.policy, cache.preset);
        let cluster = cluster_config(&mut c, &raw.cluster, base);
        let bans = bans_config(&mut c, &raw.bans);
        let comments = comments_config(&mut c, &raw.comments);

        if c.problems.is_empty() {
            Ok(Config {
                server,
                origin,
                cache,
                policy,
                cluster,
                bans,
                comments,
            })
        } else {
            Err(ConfigError { problems: c.problems })
        }
    }
}

#[cfg(test)]
mod tests;
