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
pub use strata_wire::config::{parse_duration, parse_size, ConfigError, Problem};
use strata_wire::config::{resolve, Checker};

/// Default cache byte budget: 512 MiB.
pub const DEFAULT_CAPACITY: u64 = 512 << 20;
/// TTL for responses without freshness information (WordPress HTML sends none).
pub const DEFAULT_TTL: Duration = Duration::from_secs(120);
/// How long an expired object is kept to be served stale.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
/// Largest body the cache stores; larger ones stream through.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 8 << 20;
/// How long requests wait for another request's origin fetch of the same key.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Most background refreshes in flight at once (a few of PHP-FPM's workers).
pub const DEFAULT_BACKGROUND_REFRESHES: usize = 2;
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
/// How long a write's answer waits for reachable siblings to acknowledge its bans.
pub const DEFAULT_WRITE_WAIT: Duration = Duration::from_millis(500);
/// Bans queued per sibling before collapsing into one ban of everything.
pub const DEFAULT_QUEUE_LIMIT: usize = 10_000;
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
    header_timeout: Option<toml::Value>,
    max_header_bytes: Option<toml::Value>,
    max_connections: Option<i64>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    capacity: Option<toml::Value>,
    default_ttl: Option<toml::Value>,
    grace: Option<toml::Value>,
    max_object_size: Option<toml::Value>,
    lock_timeout: Option<toml::Value>,
    background_refreshes: Option<i64>,
    hit_for_pass_ttl: Option<toml::Value>,
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
    heartbeat_interval: Option<toml::Value>,
    confirm_within: Option<toml::Value>,
    when_unconfirmed: Option<String>,
    queue_limit: Option<i64>,
    write_wait: Option<toml::Value>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBans {
    tag_headers: Option<Vec<String>>,
    strip_tag_headers: Option<bool>,
    max_tags: Option<i64>,
    wordpress: Option<bool>,
    purge_allow: Option<Vec<String>>,
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
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Settings older than this mean no syncer runs: comments then go to PHP.
    pub settings_max_age: Duration,
    /// Deadline of every memcached exchange.
    pub memcached_timeout: Duration,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Public HTTP listener.
    pub listen: SocketAddr,
    /// Admin listener (health, metrics, signed purges); must differ from `listen`.
    pub admin_listen: SocketAddr,
    /// Whether one log line per request is written (target `strata::access`).
    pub access_log: bool,
    /// Deadline for a client to send a request head, counted from the end of the previous
    /// response on a keep-alive connection (so it also bounds idle connections).
    pub header_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Most concurrent client connections.
    pub max_connections: usize,
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
}

impl Config {
    /// What a running proxy takes from `new` on SIGHUP, and the keys that differ but take a
    /// restart (their running values are kept): `[cache]` but `capacity`, `[policy]`,
    /// `[bans] purge_allow` and `strip_tag_headers`, `[server] hosts` and `access_log`,
    /// `[cluster] admin_allow`, `write_wait` and `when_unconfirmed` apply at once; listeners,
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
        merged.bans.strip_tag_headers = new.bans.strip_tag_headers;
        let tag_rules = |b: &BansConfig| format!("{:?} {} {}", b.tag_headers, b.max_tags, b.wordpress);
        differs(
            "bans (tag_headers, max_tags, wordpress)",
            tag_rules(&self.bans),
            tag_rules(&new.bans),
        );
        merged.server.hosts = new.server.hosts.clone();
        merged.server.access_log = new.server.access_log;
        let server = |s: &ServerConfig| {
            format!(
                "{} {} {:?} {} {} {} {:?} {:?}",
                s.listen,
                s.admin_listen,
                s.header_timeout,
                s.max_header_bytes,
                s.max_connections,
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
        merged.cluster.write_wait = new.cluster.write_wait;
        merged.cluster.when_unconfirmed = new.cluster.when_unconfirmed;
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
    /// Byte budget, counting bodies, headers and bookkeeping.
    pub capacity: u64,
    /// TTL when the response has no freshness information.
    pub default_ttl: Duration,
    /// How long past expiry an object may be served stale.
    pub grace: Duration,
    /// Largest body stored.
    pub max_object_size: u64,
    /// How long a request waits on another's fetch of the same key.
    pub lock_timeout: Duration,
    /// Most background refreshes of stale objects in flight at once; past it a stale
    /// object is served without starting one (a later request does), so refreshes never
    /// take the origin's workers from visitors waiting on a miss.
    pub background_refreshes: usize,
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
    /// Client addresses allowed on the admin API besides signature checks; empty = any.
    pub admin_allow: Vec<std::net::IpAddr>,
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
    /// Client addresses whose `PURGE` requests on the public port are obeyed; empty = none.
    pub purge_allow: Vec<std::net::IpAddr>,
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
            purge_allow: Vec::new(),
        }
    }
}

/// A list of IP addresses; each entry that is not one is reported under `key` and left out.
fn ip_addrs(c: &mut Checker, key: &str, list: &Option<Vec<String>>) -> Vec<std::net::IpAddr> {
    list.iter()
        .flatten()
        .filter_map(|s| match s.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                c.problem(key, format!("{s:?} is not an IP address"));
                None
            }
        })
        .collect()
}

/// The machine's host name, the default node id.
fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)))
        .unwrap_or_else(|| "node-1".to_string())
}

/// The HTTPS part of `[server]`: present when `tls_listen` is; every certificate and key
/// file is read and checked here, so `--check-config` reports a bad one.
fn tls_config(
    c: &mut Checker,
    s: &RawServer,
    base: Option<&Path>,
    others: [Option<SocketAddr>; 2],
) -> Option<TlsConfig> {
    let Some(listen_text) = &s.tls_listen else {
        let stray = [
            ("server.tls_cert", s.tls_cert.is_some()),
            ("server.tls_key", s.tls_key.is_some()),
            ("server.tls_certificates", s.tls_certificates.is_some()),
            ("server.redirect_https", s.redirect_https == Some(true)),
            ("server.hsts", s.hsts.is_some()),
        ];
        for (key, set) in stray {
            if set {
                c.problem(key, "needs server.tls_listen: HTTPS is off without it");
            }
        }
        return None;
    };
    let listen = c.addr("server.tls_listen", &Some(listen_text.clone()));
    if let Some(l) = listen {
        if others.contains(&Some(l)) {
            c.problem(
                "server.tls_listen",
                "must differ from server.listen and server.admin_listen",
            );
        }
    }
    let certificates = tls_certificates(c, s, base);
    let hsts = hsts(c, &s.hsts);
    Some(TlsConfig {
        listen: listen.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
        certificates,
        redirect_https: s.redirect_https.unwrap_or(false),
        hsts,
    })
}

/// The certificates of `[server]`: `tls_cert` and `tls_key`, then each entry of
/// `tls_certificates` (whose first is the default when `tls_cert` and `tls_key` are absent),
/// each file read and checked; a missing or bad file is reported under its own key.
fn tls_certificates(c: &mut Checker, s: &RawServer, base: Option<&Path>) -> Vec<crate::tls::Certificate> {
    let mut pairs: Vec<(String, String, Option<&String>, Option<&String>)> = vec![(
        "server.tls_cert".into(),
        "server.tls_key".into(),
        s.tls_cert.as_ref(),
        s.tls_key.as_ref(),
    )];
    for (i, e) in s.tls_certificates.iter().flatten().enumerate() {
        pairs.push((
            format!("server.tls_certificates[{i}].cert"),
            format!("server.tls_certificates[{i}].key"),
            e.cert.as_ref(),
            e.key.as_ref(),
        ));
    }
    if s.tls_cert.is_none() && s.tls_key.is_none() && s.tls_certificates.as_ref().is_some_and(|l| !l.is_empty()) {
        // The first entry of the list is then the default certificate.
        pairs.remove(0);
    }
    let mut certificates = Vec::new();
    for (cert_key, key_key, cert, key) in pairs {
        let (Some(cert), Some(key)) = (cert, key) else {
            if cert.is_none() {
                c.problem(&cert_key, "missing: a PEM certificate file (with its chain)");
            }
            if key.is_none() {
                c.problem(&key_key, "missing: the PEM private key file of the certificate");
            }
            continue;
        };
        let files = crate::tls::CertFiles {
            cert: resolve(base, cert),
            key: resolve(base, key),
        };
        match crate::tls::load(&files) {
            Ok(cert) => certificates.push(cert),
            Err(crate::tls::TlsError::Key { path, cause }) => c.problem(&key_key, format!("{path}: {cause}")),
            Err(e) => c.problem(&cert_key, e.to_string()),
        }
    }
    certificates
}

/// `server.hsts`: a `Strict-Transport-Security` value, which starts with `max-age=`.
fn hsts(c: &mut Checker, hsts: &Option<String>) -> Option<http::HeaderValue> {
    hsts.as_ref().and_then(|v| match http::HeaderValue::from_str(v.trim()) {
        Ok(h) if v.trim().to_ascii_lowercase().starts_with("max-age=") => Some(h),
        _ => {
            c.problem(
                "server.hsts",
                format!("{v:?}: expected a Strict-Transport-Security value such as \"max-age=31536000\""),
            );
            None
        }
    })
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
        let origin = origin_config(&mut c, &raw.origin);
        let cache = cache_config(&mut c, &raw.cache);
        let policy = policy_config(&mut c, &raw.policy);
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

/// `[server]`, its HTTPS keys included.
fn server_config(c: &mut Checker, s: &RawServer, base: Option<&Path>) -> ServerConfig {
    let listen = c.addr("server.listen", &s.listen);
    let admin_listen = c.addr("server.admin_listen", &s.admin_listen);
    if let (Some(a), Some(b)) = (listen, admin_listen) {
        if a == b {
            c.problem(
                "server.admin_listen",
                "must differ from server.listen: the admin API is never on the public port",
            );
        }
    }
    let mut server = ServerConfig {
        listen: listen.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
        admin_listen: admin_listen.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
        access_log: s.access_log.unwrap_or(false),
        header_timeout: c.duration("server.header_timeout", &s.header_timeout, DEFAULT_HEADER_TIMEOUT),
        max_header_bytes: c.size("server.max_header_bytes", &s.max_header_bytes, DEFAULT_MAX_HEADER_BYTES) as usize,
        max_connections: c.count(
            "server.max_connections",
            s.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            1..=10_000_000,
        ),
        workers: c.count("server.workers", s.workers, default_workers(), 1..=1024),
        shutdown_timeout: c.duration("server.shutdown_timeout", &s.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT),
        hosts: s
            .hosts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        tls: None,
    };
    if server.max_header_bytes < 1024 {
        c.problem("server.max_header_bytes", "must be at least 1KiB");
    }
    server.tls = tls_config(c, s, base, [listen, admin_listen]);
    server
}

/// `[origin]`.
fn origin_config(c: &mut Checker, o: &RawOrigin) -> OriginConfig {
    let url = match &o.url {
        None => {
            c.problem(
                "origin.url",
                "missing: the origin's base URL, e.g. \"http://127.0.0.1:8081\"",
            );
            None
        }
        Some(u) => match u.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => {
                if uri.path() != "/" && !uri.path().is_empty() {
                    c.problem(
                        "origin.url",
                        format!("{u:?}: a path prefix is not supported; give scheme://host:port"),
                    );
                }
                Some(uri)
            }
            Ok(_) => {
                c.problem(
                    "origin.url",
                    format!("{u:?}: expected an http:// URL with a host, e.g. \"http://127.0.0.1:8081\""),
                );
                None
            }
            Err(e) => {
                c.problem("origin.url", format!("{u:?} is not a URL: {e}"));
                None
            }
        },
    };
    OriginConfig {
        url: url.unwrap_or_else(|| http::Uri::from_static("http://127.0.0.1:1")),
        connect_timeout: c.duration("origin.connect_timeout", &o.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
        first_byte_timeout: c.duration(
            "origin.first_byte_timeout",
            &o.first_byte_timeout,
            DEFAULT_FIRST_BYTE_TIMEOUT,
        ),
        body_timeout: c.duration("origin.body_timeout", &o.body_timeout, DEFAULT_BODY_TIMEOUT),
        max_idle_connections: c.count(
            "origin.max_idle_connections",
            o.max_idle_connections,
            DEFAULT_MAX_IDLE_PER_HOST,
            0..=100_000,
        ),
    }
}

/// `[cache]`.
fn cache_config(c: &mut Checker, k: &RawCache) -> CacheConfig {
    let cache = CacheConfig {
        capacity: c.size("cache.capacity", &k.capacity, DEFAULT_CAPACITY),
        default_ttl: c.duration("cache.default_ttl", &k.default_ttl, DEFAULT_TTL),
        grace: c.duration("cache.grace", &k.grace, DEFAULT_GRACE),
        max_object_size: c.size("cache.max_object_size", &k.max_object_size, DEFAULT_MAX_OBJECT_SIZE),
        lock_timeout: c.duration("cache.lock_timeout", &k.lock_timeout, DEFAULT_LOCK_TIMEOUT),
        background_refreshes: c.count(
            "cache.background_refreshes",
            k.background_refreshes,
            DEFAULT_BACKGROUND_REFRESHES,
            1..=10_000,
        ),
        hit_for_pass_ttl: c.duration("cache.hit_for_pass_ttl", &k.hit_for_pass_ttl, DEFAULT_HIT_FOR_PASS_TTL),
        max_variants: c.count("cache.max_variants", k.max_variants, DEFAULT_MAX_VARIANTS, 1..=1024),
        compress_min_size: c.size(
            "cache.compress_min_size",
            &k.compress_min_size,
            DEFAULT_COMPRESS_MIN_SIZE,
        ),
        brotli: k.brotli.unwrap_or(true),
        cacheable_statuses: match &k.cacheable_statuses {
            None => DEFAULT_CACHEABLE_STATUSES.to_vec(),
            Some(list) => list
                .iter()
                .filter_map(|&n| match u16::try_from(n) {
                    Ok(s) if (200..600).contains(&s) => Some(s),
                    _ => {
                        c.problem(
                            "cache.cacheable_statuses",
                            format!("{n} is not an HTTP status from 200 to 599"),
                        );
                        None
                    }
                })
                .collect(),
        },
    };
    if cache.capacity < 1 << 20 {
        c.problem(
            "cache.capacity",
            format!("{} bytes is too small: at least 1MiB", cache.capacity),
        );
    }
    if cache.max_object_size > cache.capacity / 4 {
        c.problem("cache.max_object_size", "must be at most a quarter of cache.capacity");
    }
    if cache.lock_timeout.is_zero() {
        c.problem("cache.lock_timeout", "must be greater than zero");
    }
    cache
}

/// `[policy]`.
fn policy_config(c: &mut Checker, p: &RawPolicy) -> PolicyConfig {
    let mut policy = PolicyConfig::default();
    if let Some(v) = &p.pass_cookies {
        policy.pass_cookies = v.clone();
    }
    policy
        .pass_cookies
        .extend(p.extra_pass_cookies.iter().flatten().cloned());
    if let Some(v) = &p.pass_paths {
        policy.pass_paths = v.clone();
    }
    policy.pass_paths.extend(p.extra_pass_paths.iter().flatten().cloned());
    for path in &policy.pass_paths {
        if !path.starts_with('/') {
            c.problem("policy.pass_paths", format!("{path:?} must start with '/'"));
        }
    }
    if let Some(v) = &p.pass_query {
        policy.pass_query = v.clone();
    }
    if let Some(v) = &p.strip_query {
        policy.strip_query = v.clone();
    }
    for name in policy
        .pass_cookies
        .iter()
        .chain(&policy.pass_query)
        .chain(&policy.strip_query)
    {
        if name.is_empty() {
            c.problem("policy", "empty names are not allowed in cookie or query lists");
        }
    }
    policy.pass_authorization = p.pass_authorization.unwrap_or(true);
    policy.pass_ajax = p.pass_ajax.unwrap_or(true);
    policy
}

/// `[cluster]`; the secret file is read here, relative to `base`.
fn cluster_config(c: &mut Checker, cl: &RawCluster, base: Option<&Path>) -> ClusterConfig {
    let node_id = cl.node_id.clone().unwrap_or_else(default_node_id);
    if node_id.is_empty()
        || !node_id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    {
        c.problem(
            "cluster.node_id",
            format!("{node_id:?}: use letters, digits, '-', '_' or '.'"),
        );
    }
    let siblings = cl
        .siblings
        .iter()
        .flatten()
        .filter_map(|s| match s.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => Some(u),
            _ => {
                c.problem("cluster.siblings", format!("{s:?} is not an http:// admin URL"));
                None
            }
        })
        .collect();
    let admin_allow = ip_addrs(c, "cluster.admin_allow", &cl.admin_allow);
    let (secret_file, secret) = c.secret_file("cluster.secret_file", &cl.secret_file, base);
    let heartbeat_interval = c.duration(
        "cluster.heartbeat_interval",
        &cl.heartbeat_interval,
        DEFAULT_HEARTBEAT_INTERVAL,
    );
    let confirm_within = c.duration("cluster.confirm_within", &cl.confirm_within, DEFAULT_CONFIRM_WITHIN);
    if heartbeat_interval.is_zero() {
        c.problem("cluster.heartbeat_interval", "must be greater than zero");
    }
    if confirm_within < heartbeat_interval * 2 {
        c.problem(
            "cluster.confirm_within",
            "must be at least twice cluster.heartbeat_interval, or every missed heartbeat flushes",
        );
    }
    let when_unconfirmed = match cl.when_unconfirmed.as_deref() {
        None | Some("flush") => Unconfirmed::Flush,
        Some("pass") => Unconfirmed::Pass,
        Some(other) => {
            c.problem(
                "cluster.when_unconfirmed",
                format!("{other:?}: expected \"flush\" or \"pass\""),
            );
            Unconfirmed::Flush
        }
    };
    let queue_limit = c.count(
        "cluster.queue_limit",
        cl.queue_limit,
        DEFAULT_QUEUE_LIMIT,
        1..=10_000_000,
    );
    ClusterConfig {
        node_id,
        siblings,
        secret_file,
        secret,
        admin_allow,
        heartbeat_interval,
        confirm_within,
        when_unconfirmed,
        queue_limit,
        write_wait: c.duration("cluster.write_wait", &cl.write_wait, DEFAULT_WRITE_WAIT),
    }
}

/// `[bans]`.
fn bans_config(c: &mut Checker, b: &RawBans) -> BansConfig {
    let mut bans = BansConfig::default();
    if let Some(list) = &b.tag_headers {
        bans.tag_headers = list
            .iter()
            .filter_map(
                |h| match http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        c.problem("bans.tag_headers", format!("{h:?} is not a header name"));
                        None
                    }
                },
            )
            .collect();
    }
    bans.strip_tag_headers = b.strip_tag_headers.unwrap_or(true);
    bans.max_tags = c.count("bans.max_tags", b.max_tags, DEFAULT_MAX_TAGS, 1..=1024);
    bans.wordpress = b.wordpress.unwrap_or(true);
    bans.purge_allow = ip_addrs(c, "bans.purge_allow", &b.purge_allow);
    bans
}

/// `[comments]`.
fn comments_config(c: &mut Checker, m: &RawComments) -> CommentsConfig {
    let comments = CommentsConfig {
        enabled: m.enabled.unwrap_or(false),
        memcached: m
            .memcached
            .clone()
            .unwrap_or_else(|| vec!["127.0.0.1:11211".to_string()]),
        hold: c.duration("comments.hold", &m.hold, DEFAULT_HOLD),
        max_hold: c.duration("comments.max_hold", &m.max_hold, DEFAULT_MAX_HOLD),
        key_prefix: m
            .key_prefix
            .clone()
            .unwrap_or_else(|| strata_wire::comment::DEFAULT_PREFIX.to_string()),
        max_queue: c.count(
            "comments.max_queue",
            m.max_queue,
            DEFAULT_MAX_QUEUE as usize,
            1..=100_000_000,
        ) as u64,
        trusted_proxies: ip_addrs(c, "comments.trusted_proxies", &m.trusted_proxies),
        settings_max_age: c.duration(
            "comments.settings_max_age",
            &m.settings_max_age,
            DEFAULT_SETTINGS_MAX_AGE,
        ),
        memcached_timeout: c.duration(
            "comments.memcached_timeout",
            &m.memcached_timeout,
            DEFAULT_MEMCACHED_TIMEOUT,
        ),
    };
    if comments.memcached.is_empty() {
        c.problem("comments.memcached", "give at least one host:port");
    }
    for a in &comments.memcached {
        if a.rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            c.problem("comments.memcached", format!("{a:?} is not host:port"));
        }
    }
    if comments.max_hold > Duration::from_secs(10) {
        c.problem("comments.max_hold", "at most 10s: a visitor is waiting");
    }
    if comments.key_prefix.is_empty()
        || comments.key_prefix.len() > 100
        || comments.key_prefix.bytes().any(|b| b <= b' ')
    {
        c.problem(
            "comments.key_prefix",
            "1 to 100 characters, no spaces or control characters",
        );
    }
    comments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_file() -> tempfile_path::TempPath {
        tempfile_path::TempPath::with("0123456789abcdef0123456789abcdef")
    }

    /// A tiny temporary file helper, so tests need no extra crates.
    mod tempfile_path {
        use std::path::PathBuf;
        pub struct TempPath(pub PathBuf);
        impl TempPath {
            pub fn with(contents: &str) -> Self {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir().join(format!("strata-cfg-{}-{n}", std::process::id()));
                std::fs::write(&p, contents).unwrap();
                TempPath(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn minimal(secret: &Path) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:9080\"\n[origin]\nurl = \"http://127.0.0.1:8081\"\n[cluster]\nsecret_file = {:?}\n",
            secret.display().to_string()
        )
    }

    #[test]
    fn a_reload_applies_what_can_change_and_names_the_rest() {
        let s = secret_file();
        let running = Config::from_toml(&minimal(&s.0), None).unwrap();
        let text = minimal(&s.0).replace("[server]", "[server]\nhosts = [\"example.test\"]\nworkers = 3")
            + "[cache]\ndefault_ttl = \"7s\"\ncapacity = \"1GiB\"\n";
        let new = Config::from_toml(&text, None).unwrap();
        let (merged, restart) = running.reloaded(new);
        assert_eq!(merged.cache.default_ttl, Duration::from_secs(7));
        assert_eq!(merged.server.hosts, vec!["example.test".to_string()]);
        assert_eq!(merged.cache.capacity, running.cache.capacity);
        assert_eq!(merged.server.workers, running.server.workers);
        assert_eq!(
            restart,
            vec!["cache.capacity", "server (listeners, limits, workers, tls)"]
        );
        // The same file again changes nothing and names nothing.
        let (_, restart) = running.reloaded(running.clone());
        assert!(restart.is_empty());
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let s = secret_file();
        let c = Config::from_toml(&minimal(&s.0), None).unwrap();
        assert_eq!(c.cache.capacity, DEFAULT_CAPACITY);
        assert_eq!(c.cache.grace, DEFAULT_GRACE);
        assert_eq!(c.origin.url.authority().unwrap().as_str(), "127.0.0.1:8081");
        assert!(c.policy.pass_cookies.iter().any(|p| p == "wordpress_logged_in_"));
        assert_eq!(c.cluster.secret.len(), 32);
    }

    #[test]
    fn every_bad_value_is_named_by_its_key() {
        let s = secret_file();
        let text = format!(
            "[server]\nlisten = \"nowhere\"\nadmin_listen = \"127.0.0.1:9080\"\nheader_timeout = \"10 parsecs\"\nworkers = 0\n\
             [origin]\nurl = \"ftp://x\"\n[cache]\ncapacity = \"lots\"\ndefault_ttl = 5\nmax_variants = 0\nbackground_refreshes = 0\n\
             [cluster]\nsecret_file = {:?}\nsiblings = [\"nope\"]\n",
            s.0.display().to_string()
        );
        let err = Config::from_toml(&text, None).unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "server.listen",
            "server.header_timeout",
            "server.workers",
            "origin.url",
            "cache.capacity",
            "cache.default_ttl",
            "cache.max_variants",
            "cache.background_refreshes",
            "cluster.siblings",
        ] {
            assert!(keys.contains(&k), "{k} not reported in {keys:?}");
        }
    }

    #[test]
    fn unknown_keys_and_missing_secret_are_refused() {
        let err = Config::from_toml("[cache]\ncapacityy = 5\n", None).unwrap_err();
        assert!(err.to_string().contains("capacityy"), "{err}");
        let text = minimal(Path::new("/nonexistent/secret"));
        let err = Config::from_toml(&text, None).unwrap_err();
        assert_eq!(err.problems[0].key, "cluster.secret_file");
    }

    #[test]
    fn admin_and_public_ports_must_differ() {
        let s = secret_file();
        let text = minimal(&s.0).replace("127.0.0.1:9080", "127.0.0.1:8080");
        let err = Config::from_toml(&text, None).unwrap_err();
        assert_eq!(err.problems[0].key, "server.admin_listen");
    }

    #[test]
    fn tls_keys_are_checked_together() {
        let s = secret_file();
        let text = minimal(&s.0).replace(
            "[origin]",
            "tls_listen = \"127.0.0.1:8443\"\nhsts = \"forever\"\n[origin]",
        );
        let err = Config::from_toml(&text, None).unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["server.tls_cert", "server.tls_key", "server.hsts"]);

        let text = minimal(&s.0).replace(
            "[origin]",
            "tls_key = \"/nonexistent/key.pem\"\nredirect_https = true\n[origin]",
        );
        let err = Config::from_toml(&text, None).unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["server.tls_key", "server.redirect_https"],
            "both need tls_listen"
        );

        let text = minimal(&s.0).replace(
            "[origin]",
            "tls_listen = \"127.0.0.1:8080\"\n[[server.tls_certificates]]\ncert = \"/nonexistent/c.pem\"\n[origin]",
        );
        let err = Config::from_toml(&text, None).unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["server.tls_listen", "server.tls_certificates[0].key"]);
        assert!(Config::from_toml(&minimal(&s.0), None).unwrap().server.tls.is_none());
    }

    /// A raw section from TOML text, as serde reads it from a file.
    fn raw<T: serde::de::DeserializeOwned>(text: &str) -> T {
        toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// What `validate` returns, with the problems it recorded.
    fn checked<T>(validate: impl FnOnce(&mut Checker) -> T) -> (T, Vec<Problem>) {
        let mut c = Checker::default();
        let value = validate(&mut c);
        (value, c.problems)
    }

    fn keys(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    /// A self-signed certificate for `name` and its key, written to a fresh directory.
    fn cert_files(name: &str) -> PathBuf {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("strata-cfg-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        dir
    }

    #[test]
    fn server_section() {
        let text = "listen = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:9080\"\nhosts = [\"Example.TEST\"]\n";
        let (s, problems) = checked(|c| server_config(c, &raw(text), None));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.header_timeout, DEFAULT_HEADER_TIMEOUT);
        assert_eq!(s.max_header_bytes as u64, DEFAULT_MAX_HEADER_BYTES);
        assert_eq!(s.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(s.hosts, ["example.test"]);
        assert!(s.tls.is_none() && !s.access_log);

        let bad = "listen = \"nowhere\"\nadmin_listen = \"127.0.0.1:9080\"\nheader_timeout = \"soon\"\n\
                   max_header_bytes = \"512\"\nmax_connections = 0\nworkers = 1025\nshutdown_timeout = 10\n";
        let (_, problems) = checked(|c| server_config(c, &raw(bad), None));
        assert_eq!(
            keys(&problems),
            [
                "server.listen",
                "server.header_timeout",
                "server.max_connections",
                "server.workers",
                "server.shutdown_timeout",
                "server.max_header_bytes",
            ]
        );
        assert!(
            problems[0].message.contains("\"nowhere\" is not an IP:port"),
            "{problems:?}"
        );
        assert_eq!(problems[5].message, "must be at least 1KiB");

        let (_, problems) = checked(|c| server_config(c, &RawServer::default(), None));
        assert_eq!(keys(&problems), ["server.listen", "server.admin_listen"]);
        assert!(problems[0].message.starts_with("missing"), "{problems:?}");
    }

    #[test]
    fn tls_keys_of_the_server_section() {
        let dir = cert_files("one.test");
        let text = "listen = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:9080\"\ntls_listen = \"127.0.0.1:8443\"\n\
                    tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\nredirect_https = true\nhsts = \"max-age=60\"\n";
        let (s, problems) = checked(|c| server_config(c, &raw(text), Some(&dir)));
        assert!(problems.is_empty(), "{problems:?}");
        let tls = s.tls.unwrap();
        assert_eq!(tls.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(tls.certificates[0].names, ["one.test"]);
        assert!(tls.redirect_https);
        assert_eq!(tls.hsts.unwrap(), "max-age=60");

        // The first entry of tls_certificates is the default when tls_cert and tls_key are absent.
        let list = "tls_listen = \"127.0.0.1:8443\"\n[[tls_certificates]]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\
                    [[tls_certificates]]\ncert = \"cert.pem\"\n";
        let s: RawServer = raw(list);
        let (certs, problems) = checked(|c| tls_certificates(c, &s, Some(&dir)));
        assert_eq!(certs.len(), 1);
        assert_eq!(keys(&problems), ["server.tls_certificates[1].key"]);
        assert!(problems[0].message.starts_with("missing"), "{problems:?}");

        // A key file that holds a certificate is reported under the key's own key.
        let swapped = "tls_listen = \"127.0.0.1:8443\"\ntls_cert = \"cert.pem\"\ntls_key = \"cert.pem\"\n";
        let (certs, problems) = checked(|c| tls_certificates(c, &raw(swapped), Some(&dir)));
        assert!(certs.is_empty());
        assert_eq!(keys(&problems), ["server.tls_key"]);
        let _ = std::fs::remove_dir_all(&dir);

        let (hsts_value, problems) = checked(|c| hsts(c, &Some("forever".into())));
        assert!(hsts_value.is_none());
        assert_eq!(keys(&problems), ["server.hsts"]);
        assert!(problems[0].message.contains("max-age=31536000"), "{problems:?}");
        let (_, problems) = checked(|c| tls_config(c, &raw("hsts = \"max-age=1\"\n"), None, [None, None]));
        assert_eq!(keys(&problems), ["server.hsts"]);
        assert_eq!(problems[0].message, "needs server.tls_listen: HTTPS is off without it");
    }

    #[test]
    fn origin_section() {
        let (o, problems) =
            checked(|c| origin_config(c, &raw("url = \"http://127.0.0.1:8081\"\nmax_idle_connections = 0\n")));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(o.url, "http://127.0.0.1:8081/");
        assert_eq!(o.max_idle_connections, 0);
        assert_eq!(
            (o.connect_timeout, o.first_byte_timeout, o.body_timeout),
            (
                DEFAULT_CONNECT_TIMEOUT,
                DEFAULT_FIRST_BYTE_TIMEOUT,
                DEFAULT_BODY_TIMEOUT
            )
        );

        for (url, says) in [
            ("https://127.0.0.1", "expected an http:// URL"),
            ("http://127.0.0.1:8081/blog", "a path prefix is not supported"),
            ("http://exa mple", "is not a URL"),
        ] {
            let (_, problems) = checked(|c| origin_config(c, &raw(&format!("url = {url:?}\n"))));
            assert_eq!(keys(&problems), ["origin.url"], "{url}");
            assert!(problems[0].message.contains(says), "{url}: {problems:?}");
        }
        let bad = "connect_timeout = \"3\"\nbody_timeout = \"1x\"\nmax_idle_connections = 100001\n";
        let (_, problems) = checked(|c| origin_config(c, &raw(bad)));
        assert_eq!(
            keys(&problems),
            [
                "origin.url",
                "origin.connect_timeout",
                "origin.body_timeout",
                "origin.max_idle_connections"
            ]
        );
        assert!(problems[0].message.starts_with("missing"), "{problems:?}");
    }

    #[test]
    fn cache_section() {
        let (k, problems) =
            checked(|c| cache_config(c, &raw("capacity = \"64MiB\"\ncacheable_statuses = [200, 404]\n")));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(k.capacity, 64 << 20);
        assert_eq!(k.cacheable_statuses, [200, 404]);
        assert_eq!((k.default_ttl, k.grace), (DEFAULT_TTL, DEFAULT_GRACE));
        let (k, _) = checked(|c| cache_config(c, &RawCache::default()));
        assert_eq!(k.cacheable_statuses, DEFAULT_CACHEABLE_STATUSES);

        let bad = "capacity = \"4MiB\"\nmax_object_size = \"2MiB\"\nlock_timeout = \"0\"\nbackground_refreshes = 0\n\
                   max_variants = 1025\ncacheable_statuses = [200, 199, 600]\ngrace = \"1 hour\"\n";
        let (_, problems) = checked(|c| cache_config(c, &raw(bad)));
        assert_eq!(
            keys(&problems),
            [
                "cache.grace",
                "cache.background_refreshes",
                "cache.max_variants",
                "cache.cacheable_statuses",
                "cache.cacheable_statuses",
                "cache.max_object_size",
                "cache.lock_timeout",
            ]
        );
        assert_eq!(problems[3].message, "199 is not an HTTP status from 200 to 599");
        assert_eq!(problems[5].message, "must be at most a quarter of cache.capacity");

        let (_, problems) = checked(|c| cache_config(c, &raw("capacity = 1000\n")));
        assert_eq!(keys(&problems), ["cache.capacity", "cache.max_object_size"]);
        assert_eq!(problems[0].message, "1000 bytes is too small: at least 1MiB");
    }

    #[test]
    fn policy_section() {
        let text = "pass_cookies = [\"session_\"]\nextra_pass_cookies = [\"cart_\"]\nextra_pass_paths = [\"/shop\"]\n\
                    pass_ajax = false\n";
        let (p, problems) = checked(|c| policy_config(c, &raw(text)));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(p.pass_cookies, ["session_", "cart_"]);
        assert!(p.pass_paths.starts_with(&["/wp-admin".to_string()]));
        assert!(p.pass_paths.ends_with(&["/shop".to_string()]));
        assert_eq!(p.strip_query.len(), DEFAULT_STRIP_QUERY.len());
        assert!(p.pass_authorization && !p.pass_ajax);

        let bad = "pass_paths = [\"wp-admin\"]\nstrip_query = [\"\"]\n";
        let (_, problems) = checked(|c| policy_config(c, &raw(bad)));
        assert_eq!(keys(&problems), ["policy.pass_paths", "policy"]);
        assert_eq!(problems[0].message, "\"wp-admin\" must start with '/'");
    }

    #[test]
    fn cluster_section() {
        let secret = secret_file();
        let name = secret.0.file_name().unwrap().to_str().unwrap();
        let text = format!(
            "node_id = \"web-1\"\nsiblings = [\"http://127.0.0.1:9081\"]\nsecret_file = {name:?}\n\
             admin_allow = [\"::1\"]\nwhen_unconfirmed = \"pass\"\n"
        );
        let (cl, problems) = checked(|c| cluster_config(c, &raw(&text), secret.0.parent()));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(cl.node_id, "web-1");
        assert_eq!(cl.siblings, ["http://127.0.0.1:9081/"]);
        assert_eq!((cl.secret_file, cl.secret.len()), (secret.0.clone(), 32));
        assert_eq!(cl.admin_allow, ["::1".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(cl.when_unconfirmed, Unconfirmed::Pass);
        assert_eq!(cl.confirm_within, DEFAULT_CONFIRM_WITHIN);

        let bad = "node_id = \"web 1\"\nsiblings = [\"https://x:1\"]\nadmin_allow = [\"localhost\"]\n\
                   heartbeat_interval = \"1s\"\nwhen_unconfirmed = \"wait\"\nqueue_limit = 0\n";
        let (_, problems) = checked(|c| cluster_config(c, &raw(bad), None));
        assert_eq!(
            keys(&problems),
            [
                "cluster.node_id",
                "cluster.siblings",
                "cluster.admin_allow",
                "cluster.secret_file",
                "cluster.confirm_within",
                "cluster.when_unconfirmed",
                "cluster.queue_limit",
            ]
        );
        assert_eq!(problems[2].message, "\"localhost\" is not an IP address");
        assert!(problems[3].message.starts_with("missing"), "{problems:?}");

        let (_, problems) = checked(|c| cluster_config(c, &raw("heartbeat_interval = \"0\"\n"), None));
        assert_eq!(keys(&problems), ["cluster.secret_file", "cluster.heartbeat_interval"]);
    }

    #[test]
    fn bans_section() {
        let (b, problems) =
            checked(|c| bans_config(c, &raw("tag_headers = [\"X-Key\"]\npurge_allow = [\"10.0.0.1\"]\n")));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(b.tag_headers, ["x-key"]);
        assert_eq!(b.purge_allow.len(), 1);
        assert!(b.strip_tag_headers && b.wordpress);
        let (b, _) = checked(|c| bans_config(c, &RawBans::default()));
        assert_eq!(b.tag_headers.len(), DEFAULT_TAG_HEADERS.len());

        let bad = "tag_headers = [\"bad header\"]\nmax_tags = 1025\npurge_allow = [\"10.0.0.0/8\"]\n";
        let (_, problems) = checked(|c| bans_config(c, &raw(bad)));
        assert_eq!(
            keys(&problems),
            ["bans.tag_headers", "bans.max_tags", "bans.purge_allow"]
        );
        assert_eq!(problems[0].message, "\"bad header\" is not a header name");
    }

    #[test]
    fn comments_section() {
        let (m, problems) = checked(|c| comments_config(c, &RawComments::default()));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!m.enabled);
        assert_eq!(m.memcached, ["127.0.0.1:11211"]);
        assert_eq!((m.hold, m.max_hold), (DEFAULT_HOLD, DEFAULT_MAX_HOLD));
        assert_eq!(m.key_prefix, strata_wire::comment::DEFAULT_PREFIX);

        let bad = "memcached = [\"cache:11211\", \"nohost\"]\nmax_hold = \"11s\"\nkey_prefix = \"a b\"\n\
                   trusted_proxies = [\"proxy\"]\nmax_queue = 0\n";
        let (_, problems) = checked(|c| comments_config(c, &raw(bad)));
        assert_eq!(
            keys(&problems),
            [
                "comments.max_queue",
                "comments.trusted_proxies",
                "comments.memcached",
                "comments.max_hold",
                "comments.key_prefix",
            ]
        );
        assert_eq!(problems[2].message, "\"nohost\" is not host:port");
        assert_eq!(problems[3].message, "at most 10s: a visitor is waiting");

        let (_, problems) = checked(|c| comments_config(c, &raw("memcached = []\n")));
        assert_eq!(keys(&problems), ["comments.memcached"]);
        assert_eq!(problems[0].message, "give at least one host:port");
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("5ms"), Ok(Duration::from_millis(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999999999TiB").is_err());
    }
}
