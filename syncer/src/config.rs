//! Configuration: TOML → raw serde structs → validated [`Config`].
//!
//! Raw structs mirror the file (unknown keys are refused); [`Config::from_toml`] turns them
//! into typed values and collects *every* problem with its dotted key, so `--check-config`
//! can print them all at once. Each key group and `[cluster]` has its own validation
//! function: it records a bad value's problem and goes on with a stand-in, so the checks after
//! it still run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
pub use strata_wire::config::{parse_duration, ConfigError, Problem};
use strata_wire::config::{resolve, Checker};

/// How often the queue is drained.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(5);
/// How often an idle queue is looked at while every proxy announces its comments.
pub const DEFAULT_IDLE_INTERVAL: Duration = Duration::from_millis(100);
/// WordPress's table prefix.
pub const DEFAULT_TABLE_PREFIX: &str = "wp_";
/// How long a reserved sequence number whose record never arrives is waited for.
pub const DEFAULT_MISSING_WAIT: Duration = Duration::from_secs(2);
/// Most records applied in one transaction.
pub const DEFAULT_BATCH: usize = 256;
/// Where the WordPress keys and salts are defined (Debian's per-site config).
pub const DEFAULT_WP_CONFIG: &str = "/etc/wordpress/config-127.0.0.1.php";
/// Where WordPress is installed (for its version, `wp-includes/version.php`).
pub const DEFAULT_WORDPRESS_DIR: &str = "/usr/share/wordpress";
/// WordPress's comment flood interval (`wp_throttle_comment_flood`).
pub const DEFAULT_FLOOD_INTERVAL: Duration = Duration::from_secs(15);
/// How long a verdict waits for its post's permalink (looked up in the background).
pub const DEFAULT_PERMALINK_WAIT: Duration = Duration::from_millis(50);
/// How long a batch's page patches may hold its bans and verdicts back.
pub const DEFAULT_PATCH_WAIT: Duration = Duration::from_millis(100);
/// Deadline of one MySQL step (a whole batch transaction included).
pub const DEFAULT_MYSQL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of every memcached exchange.
pub const DEFAULT_MEMCACHED_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a ban request may take (including the proxies' wait for their siblings).
pub const DEFAULT_BAN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the proxy waits for its siblings to acknowledge a ban (`?wait=`).
pub const DEFAULT_BAN_WAIT: Duration = Duration::from_millis(200);
/// How often the site settings are published for the proxies.
pub const DEFAULT_SETTINGS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    memcached: Option<Vec<String>>,
    mysql: Option<String>,
    interval: Option<toml::Value>,
    idle_interval: Option<toml::Value>,
    table_prefix: Option<String>,
    key_prefix: Option<String>,
    admin_listen: Option<String>,
    origin: Option<String>,
    wp_config: Option<String>,
    wordpress_dir: Option<String>,
    wordpress_version: Option<String>,
    missing_wait: Option<toml::Value>,
    batch: Option<i64>,
    flood_interval: Option<toml::Value>,
    memcached_timeout: Option<toml::Value>,
    mysql_timeout: Option<toml::Value>,
    mysql_ssl_mode: Option<String>,
    mysql_ssl_ca: Option<String>,
    settings_interval: Option<toml::Value>,
    permalink_wait: Option<toml::Value>,
    patch_pages: Option<bool>,
    patch_wait: Option<toml::Value>,
    #[serde(default)]
    cluster: RawCluster,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    secret_file: Option<String>,
    siblings: Option<Vec<String>>,
    ban_wait: Option<toml::Value>,
    ban_timeout: Option<toml::Value>,
    list_bans: Option<String>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// memcached servers (`host:port`); the first one holds the queue.
    pub memcached: Vec<String>,
    /// The WordPress database (`mysql://user:pass@host:port/db`).
    pub mysql: String,
    /// Time between two ticks.
    pub interval: Duration,
    /// Time between two ticks of an idle queue while every proxy of `cluster.siblings`
    /// announces its comments ([`crate::wake`]); at least `interval`.
    pub idle_interval: Duration,
    /// WordPress's table prefix (`$table_prefix`).
    pub table_prefix: String,
    /// Prefix of the queue's memcached keys (the proxies' `comments.key_prefix`).
    pub key_prefix: String,
    /// Admin listener (`/healthz`, `/metrics`, `/status`); none when not configured.
    pub admin_listen: Option<SocketAddr>,
    /// The WordPress origin, asked for permalinks.
    pub origin: http::Uri,
    /// PHP file defining `AUTH_KEY` / `AUTH_SALT` (files it includes are read too).
    pub wp_config: PathBuf,
    /// The WordPress version whose behaviour is reproduced (`major.minor`), from
    /// `wordpress_version` or the installation's `wp-includes/version.php`.
    pub wp_version: (u32, u32),
    /// How long a reserved but unwritten record is waited for before it is skipped.
    pub missing_wait: Duration,
    /// Most records per transaction.
    pub batch: usize,
    /// A second comment from the same IP or e-mail within this is a flood (0: no check).
    pub flood_interval: Duration,
    /// Deadline of every memcached exchange.
    pub memcached_timeout: Duration,
    /// Deadline of one MySQL step (a batch's whole transaction included).
    pub mysql_timeout: Duration,
    /// Whether and how the connection to MySQL is encrypted and its certificate checked.
    pub mysql_tls: MysqlTls,
    /// How often the site settings are published.
    pub settings_interval: Duration,
    /// How long a verdict waits for its post's permalink from the origin before linking to
    /// `home/?p=ID` instead (which WordPress redirects to the permalink).
    pub permalink_wait: Duration,
    /// Whether the bans of a commented post's pages carry a patch that shows the new
    /// comments (the proxies then keep the pages, patched, instead of dropping them).
    pub patch_pages: bool,
    /// How long a batch's patches may hold its bans and verdicts back (the comments' texts
    /// asked of WordPress, what the pages show read from MySQL): past it the batch's bans go
    /// plain, so commenters are not kept waiting by a busy WordPress.
    pub patch_wait: Duration,
    /// Where bans are sent.
    pub cluster: ClusterConfig,
}

/// `mysql_ssl_mode`: MySQL's `--ssl-mode` values but `preferred`, which can fall back to
/// plain text without a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// No TLS (the default; a server that requires it refuses the connection).
    #[default]
    Disabled,
    /// TLS, the server's certificate not checked: encrypted, but not proof of who answers.
    Required,
    /// TLS, the certificate signed by `mysql_ssl_ca` (or a public CA without it), any name.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host of the `mysql` URL.
    VerifyIdentity,
}

impl SslMode {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disabled => "disabled",
            SslMode::Required => "required",
            SslMode::VerifyCa => "verify_ca",
            SslMode::VerifyIdentity => "verify_identity",
        }
    }
}

/// `mysql_ssl_mode` and `mysql_ssl_ca`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlTls {
    /// Whether and how.
    pub mode: SslMode,
    /// PEM file of the CA certificates the server's certificate must chain to (`verify_ca`,
    /// `verify_identity`); `None`: the public CAs built in.
    pub ca: Option<PathBuf>,
}

/// `[cluster]`
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The proxies' admin URLs; each ban goes to all of them at once.
    pub siblings: Vec<http::Uri>,
    /// Where the shared secret is read from.
    pub secret_file: PathBuf,
    /// The secret itself, read at load time: it signs the bans and verdicts sent to the
    /// proxies, and seals what the syncer reads from and writes to the queue.
    pub secret: Vec<u8>,
    /// `?wait=` of each ban request: how long the proxy waits for its siblings' acknowledgement.
    pub ban_wait: Duration,
    /// Deadline of one ban request.
    pub ban_timeout: Duration,
    /// Whether an approved comment bans the pages listing posts or recent comments softly
    /// (each served stale once while it is fetched again) rather than removing them; the
    /// post's own pages are always removed.
    pub soft_lists: bool,
}

/// Reads `$wp_version` from a WordPress installation's `wp-includes/version.php`.
pub fn read_wp_version(dir: &Path) -> Result<String, String> {
    let path = dir.join("wp-includes/version.php");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .find_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("$wp_version")?.trim_start().strip_prefix('=')?.trim();
            let q = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
            let inner = &rest[1..];
            inner.find(q).map(|end| inner[..end].to_string())
        })
        .ok_or_else(|| format!("{} defines no $wp_version", path.display()))
}

/// `"6.1.9"` → `(6, 1)`.
pub fn parse_wp_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

impl Config {
    /// Reads and validates a file. The secret file named in it is read too.
    ///
    /// Errors: every problem found, each with its key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                key: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }],
        })?;
        Config::from_toml(&text, path.parent())
    }

    /// Validates TOML text; relative paths resolve against `base`.
    pub fn from_toml(text: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![Problem {
                key: String::new(),
                message: e.to_string(),
            }],
        })?;
        let mut c = Checker::default();

        let memcached = memcached_servers(&mut c, raw.memcached);
        let mysql = mysql_url(&mut c, raw.mysql);
        let (interval, idle_interval) = intervals(&mut c, &raw.interval, &raw.idle_interval);
        let table_prefix = table_prefix(&mut c, raw.table_prefix);
        let key_prefix = key_prefix(&mut c, raw.key_prefix);
        let admin_listen = admin_listen(&mut c, raw.admin_listen);
        let origin = origin_url(&mut c, raw.origin);
        let wp_config = resolve(base, raw.wp_config.as_deref().unwrap_or(DEFAULT_WP_CONFIG));
        let wp_version = wp_version(&mut c, raw.wordpress_version, raw.wordpress_dir.as_deref(), base);
        let missing_wait = c.duration("missing_wait", &raw.missing_wait, DEFAULT_MISSING_WAIT);
        let batch = batch(&mut c, raw.batch);
        let flood_interval = c.duration("flood_interval", &raw.flood_interval, DEFAULT_FLOOD_INTERVAL);
        let memcached_timeout = c.duration("memcached_timeout", &raw.memcached_timeout, DEFAULT_MEMCACHED_TIMEOUT);
        let mysql_timeout = c.duration("mysql_timeout", &raw.mysql_timeout, DEFAULT_MYSQL_TIMEOUT);
        let mysql_tls = mysql_tls(&mut c, raw.mysql_ssl_mode.as_deref(), raw.mysql_ssl_ca.as_deref(), base);
        let settings_interval = c.duration("settings_interval", &raw.settings_interval, DEFAULT_SETTINGS_INTERVAL);
        let permalink_wait = c.duration("permalink_wait", &raw.permalink_wait, DEFAULT_PERMALINK_WAIT);
        let patch_wait = c.duration("patch_wait", &raw.patch_wait, DEFAULT_PATCH_WAIT);
        let cluster = cluster_config(&mut c, raw.cluster, base);

        if !c.problems.is_empty() {
            return Err(ConfigError { problems: c.problems });
        }
        Ok(Config {
            memcached,
            mysql,
            interval,
            idle_interval,
            table_prefix,
            key_prefix,
            admin_listen,
            origin,
            wp_config,
            wp_version,
            missing_wait,
            batch,
            flood_interval,
            memcached_timeout,
            mysql_timeout,
            mysql_tls,
            settings_interval,
            permalink_wait,
            patch_pages: raw.patch_pages.unwrap_or(true),
            patch_wait,
            cluster,
        })
    }
}

/// `memcached`.
fn memcached_servers(c: &mut Checker, list: Option<Vec<String>>) -> Vec<String> {
    let memcached = list.unwrap_or_default();
    if memcached.is_empty() {
        c.problem(
            "memcached",
            "missing: a list of memcached servers such as [\"127.0.0.1:11211\"]",
        );
    }
    for m in &memcached {
        if m.rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            c.problem("memcached", format!("{m:?} is not host:port"));
        }
    }
    memcached
}

/// `mysql_ssl_mode` and `mysql_ssl_ca`: the CA file is read here, so `--check-config`
/// reports one that is missing or holds no certificate.
fn mysql_tls(c: &mut Checker, mode: Option<&str>, ca: Option<&str>, base: Option<&Path>) -> MysqlTls {
    let mode = match mode {
        None | Some("disabled") => SslMode::Disabled,
        Some("required") => SslMode::Required,
        Some("verify_ca") => SslMode::VerifyCa,
        Some("verify_identity") => SslMode::VerifyIdentity,
        Some("preferred") => {
            c.problem(
                "mysql_ssl_mode",
                "\"preferred\" is not offered: it falls back to plain text whenever TLS fails; \
                 choose \"required\", \"verify_ca\" or \"verify_identity\" (or \"disabled\")",
            );
            SslMode::Disabled
        }
        Some(other) => {
            c.problem(
                "mysql_ssl_mode",
                format!("{other:?} is not one of \"disabled\", \"required\", \"verify_ca\", \"verify_identity\""),
            );
            SslMode::Disabled
        }
    };
    let ca = ca.and_then(|file| {
        if !matches!(mode, SslMode::VerifyCa | SslMode::VerifyIdentity) {
            c.problem(
                "mysql_ssl_ca",
                format!(
                    "is only read with mysql_ssl_mode = \"verify_ca\" or \"verify_identity\" (it is {:?})",
                    mode.as_str()
                ),
            );
            return None;
        }
        let path = resolve(base, file);
        match std::fs::read_to_string(&path) {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Some(path),
            Ok(_) => {
                c.problem("mysql_ssl_ca", format!("{}: no PEM certificate in it", path.display()));
                None
            }
            Err(e) => {
                c.problem("mysql_ssl_ca", format!("{}: {e}", path.display()));
                None
            }
        }
    });
    if mode == SslMode::VerifyCa && ca.is_none() && !c.problems.iter().any(|p| p.key == "mysql_ssl_ca") {
        c.problem(
            "mysql_ssl_ca",
            "missing: verify_ca checks the server's certificate against this CA (a PEM file)",
        );
    }
    MysqlTls { mode, ca }
}

/// `mysql`.
fn mysql_url(c: &mut Checker, url: Option<String>) -> String {
    let mysql = url.unwrap_or_default();
    if mysql.is_empty() {
        c.problem(
            "mysql",
            "missing: the WordPress database as mysql://user:pass@host:port/db",
        );
    } else if let Err(e) = mysql_async::Opts::from_url(&mysql) {
        c.problem("mysql", format!("not a usable mysql:// URL: {e}"));
    }
    mysql
}

/// `interval` and `idle_interval`.
fn intervals(
    c: &mut Checker,
    interval: &Option<toml::Value>,
    idle_interval: &Option<toml::Value>,
) -> (Duration, Duration) {
    let interval = c.duration("interval", interval, DEFAULT_INTERVAL);
    if interval.is_zero() {
        c.problem("interval", "must be more than 0");
    }
    let idle_interval = c.duration("idle_interval", idle_interval, DEFAULT_IDLE_INTERVAL.max(interval));
    if idle_interval < interval {
        c.problem("idle_interval", format!("must be at least interval ({interval:?})"));
    }
    (interval, idle_interval)
}

/// `table_prefix`.
fn table_prefix(c: &mut Checker, prefix: Option<String>) -> String {
    let table_prefix = prefix.unwrap_or_else(|| DEFAULT_TABLE_PREFIX.to_string());
    if table_prefix.is_empty() || !table_prefix.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
        c.problem("table_prefix", "letters, digits and _ only, e.g. \"wp_\"");
    }
    table_prefix
}

/// `key_prefix`.
fn key_prefix(c: &mut Checker, prefix: Option<String>) -> String {
    let key_prefix = prefix.unwrap_or_else(|| strata_wire::comment::DEFAULT_PREFIX.to_string());
    if key_prefix.len() > 200 || key_prefix.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        c.problem("key_prefix", "no spaces or control characters, at most 200 bytes");
    }
    key_prefix
}

/// `admin_listen`.
fn admin_listen(c: &mut Checker, addr: Option<String>) -> Option<SocketAddr> {
    addr.and_then(|a| {
        a.parse::<SocketAddr>()
            .map_err(|_| {
                c.problem(
                    "admin_listen",
                    format!("{a:?} is not an address such as \"127.0.0.1:9300\""),
                )
            })
            .ok()
    })
}

/// `origin`.
fn origin_url(c: &mut Checker, url: Option<String>) -> http::Uri {
    match url {
        None => {
            c.problem(
                "origin",
                "missing: the WordPress origin URL, e.g. \"http://127.0.0.1:8081\"",
            );
            http::Uri::from_static("http://127.0.0.1/")
        }
        Some(o) => match o.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => u,
            _ => {
                c.problem("origin", format!("{o:?} is not an http:// URL"));
                http::Uri::from_static("http://127.0.0.1/")
            }
        },
    }
}

/// `wordpress_version`, or else the version of the installation in `wordpress_dir`.
fn wp_version(c: &mut Checker, version: Option<String>, dir: Option<&str>, base: Option<&Path>) -> (u32, u32) {
    match version {
        Some(v) => parse_wp_version(&v).unwrap_or_else(|| {
            c.problem("wordpress_version", format!("{v:?} is not a version such as \"6.1.9\""));
            (0, 0)
        }),
        None => {
            let dir = resolve(base, dir.unwrap_or(DEFAULT_WORDPRESS_DIR));
            match read_wp_version(&dir).map(|v| parse_wp_version(&v).ok_or(v)) {
                Ok(Ok(v)) => v,
                Ok(Err(v)) => {
                    c.problem("wordpress_dir", format!("unreadable version {v:?}"));
                    (0, 0)
                }
                Err(e) => {
                    c.problem(
                        "wordpress_dir",
                        format!("{e}; set wordpress_version (e.g. \"6.1.9\") when WordPress is elsewhere"),
                    );
                    (0, 0)
                }
            }
        }
    }
}

/// `batch`.
fn batch(c: &mut Checker, batch: Option<i64>) -> usize {
    match batch {
        None => DEFAULT_BATCH,
        Some(n) if (1..=10_000).contains(&n) => n as usize,
        Some(n) => {
            c.problem("batch", format!("{n} is out of range 1..=10000"));
            DEFAULT_BATCH
        }
    }
}

/// `[cluster]`; the secret file is read here, relative to `base`: the queue's records,
/// verdicts and settings are sealed with it, so it is always needed.
fn cluster_config(c: &mut Checker, cl: RawCluster, base: Option<&Path>) -> ClusterConfig {
    let mut siblings = Vec::new();
    for s in cl.siblings.unwrap_or_default() {
        match s.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => siblings.push(u),
            _ => c.problem("cluster.siblings", format!("{s:?} is not an http:// admin URL")),
        }
    }
    let ban_wait = c.duration("cluster.ban_wait", &cl.ban_wait, DEFAULT_BAN_WAIT);
    let ban_timeout = c.duration("cluster.ban_timeout", &cl.ban_timeout, DEFAULT_BAN_TIMEOUT);
    let soft_lists = match cl.list_bans.as_deref() {
        None | Some("soft") => true,
        Some("hard") => false,
        Some(other) => {
            c.problem(
                "cluster.list_bans",
                format!("{other:?} is neither \"soft\" nor \"hard\""),
            );
            true
        }
    };
    let (secret_file, secret) = c.secret_file("cluster.secret_file", &cl.secret_file, base);
    ClusterConfig {
        siblings,
        secret_file,
        secret,
        ban_wait,
        ban_timeout,
        soft_lists,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret file for the tests (written once).
    fn secret_file() -> &'static str {
        static FILE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        FILE.get_or_init(|| {
            let path = std::env::temp_dir().join(format!("strata-syncer-config-secret-{}", std::process::id()));
            std::fs::write(&path, "0123456789abcdef0123").unwrap();
            path.display().to_string()
        })
    }

    /// The least a configuration holds (the `[cluster]` table inline, so that keys can
    /// follow).
    fn minimal() -> String {
        format!(
            "memcached = [\"127.0.0.1:11211\"]\nmysql = \"mysql://u:p@127.0.0.1:3306/db\"\norigin = \"http://127.0.0.1:8081\"\nwordpress_version = \"6.1.9\"\ncluster = {{ secret_file = {:?} }}\n",
            secret_file()
        )
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(&minimal(), None).unwrap();
        assert_eq!(c.interval, DEFAULT_INTERVAL);
        assert_eq!(c.idle_interval, DEFAULT_IDLE_INTERVAL);
        assert_eq!(c.table_prefix, "wp_");
        assert_eq!(c.key_prefix, "strata:");
        assert_eq!(c.batch, DEFAULT_BATCH);
        assert_eq!(c.missing_wait, DEFAULT_MISSING_WAIT);
        assert_eq!(c.wp_version, (6, 1));
        assert!(c.cluster.siblings.is_empty());
        assert_eq!(c.cluster.secret, b"0123456789abcdef0123");
    }

    #[test]
    fn the_secret_is_needed_without_siblings_too() {
        let text = minimal().replace(&format!("cluster = {{ secret_file = {:?} }}\n", secret_file()), "");
        let e = Config::from_toml(&text, None).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].key, "cluster.secret_file");
    }

    #[test]
    fn the_idle_interval_is_never_shorter_than_the_interval() {
        let c = Config::from_toml(&(minimal() + "interval = \"250ms\"\n"), None).unwrap();
        assert_eq!(
            c.idle_interval,
            Duration::from_millis(250),
            "the default follows a longer interval"
        );
        let e = Config::from_toml(&(minimal() + "interval = \"20ms\"\nidle_interval = \"10ms\"\n"), None).unwrap_err();
        assert_eq!(e.problems[0].key, "idle_interval");
        assert!(e.problems[0].message.contains("at least interval (20ms)"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = "memcached = [\"nohost\"]\nmysql = \"postgres://x\"\ninterval = \"5 parsecs\"\nbatch = 0\norigin = \"ftp://x\"\nwordpress_version = \"six\"\npatch_wait = \"soon\"\n[cluster]\nsiblings = [\"http://127.0.0.1:9080\"]\nlist_bans = \"maybe\"\n";
        let e = Config::from_toml(text, None).unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "memcached",
            "mysql",
            "interval",
            "batch",
            "origin",
            "wordpress_version",
            "patch_wait",
            "cluster.secret_file",
            "cluster.list_bans",
        ] {
            assert!(keys.contains(&k), "{k} not in {keys:?}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = Config::from_toml(&(minimal() + "intervall = \"5ms\"\n"), None).unwrap_err();
        assert!(e.problems[0].message.contains("intervall"));
    }

    #[test]
    fn the_example_config_is_valid() {
        let secret = std::env::temp_dir().join(format!("strata-syncer-example-secret-{}", std::process::id()));
        std::fs::write(&secret, "0123456789abcdef0123").unwrap();
        let text = include_str!("../../config/syncer.toml")
            .replace("/var/lib/strata/cluster.secret", &secret.display().to_string())
            .replace(
                "wordpress_dir = \"/usr/share/wordpress\"",
                "wordpress_version = \"6.1.9\"",
            );
        let c = Config::from_toml(&text, None).unwrap_or_else(|e| panic!("config/syncer.toml: {e}"));
        assert_eq!(c.interval, DEFAULT_INTERVAL);
        assert_eq!(c.cluster.siblings.len(), 1);
        let _ = std::fs::remove_file(secret);
    }

    /// What `validate` returns, with the keys and messages of the problems it recorded.
    fn checked<T>(validate: impl FnOnce(&mut Checker) -> T) -> (T, Vec<String>) {
        let mut c = Checker::default();
        let value = validate(&mut c);
        (value, c.problems.iter().map(|p| p.to_string()).collect())
    }

    fn strings(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn memcached_and_mysql() {
        let (m, problems) = checked(|c| memcached_servers(c, strings(&["127.0.0.1:11211", "cache:11212"])));
        assert_eq!((m.len(), problems.len()), (2, 0));
        let (_, problems) = checked(|c| memcached_servers(c, None));
        assert!(problems[0].starts_with("memcached: missing"), "{problems:?}");
        let (_, problems) = checked(|c| memcached_servers(c, strings(&["cache", ":11211", "cache:99999"])));
        assert_eq!(
            problems,
            [
                "memcached: \"cache\" is not host:port",
                "memcached: \":11211\" is not host:port",
                "memcached: \"cache:99999\" is not host:port",
            ]
        );

        let (_, problems) = checked(|c| mysql_url(c, Some("mysql://u:p@127.0.0.1:3306/wp".into())));
        assert!(problems.is_empty(), "{problems:?}");
        let (_, problems) = checked(|c| mysql_url(c, None));
        assert!(problems[0].starts_with("mysql: missing"), "{problems:?}");
        let (_, problems) = checked(|c| mysql_url(c, Some("postgres://x".into())));
        assert!(
            problems[0].starts_with("mysql: not a usable mysql:// URL"),
            "{problems:?}"
        );
    }

    #[test]
    fn mysql_tls_modes_and_ca() {
        let (t, problems) = checked(|c| mysql_tls(c, None, None, None));
        assert!(problems.is_empty());
        assert_eq!(t, MysqlTls::default());
        assert_eq!(t.mode, SslMode::Disabled);
        for (text, mode) in [
            ("disabled", SslMode::Disabled),
            ("required", SslMode::Required),
            ("verify_identity", SslMode::VerifyIdentity),
        ] {
            let (t, problems) = checked(|c| mysql_tls(c, Some(text), None, None));
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!((t.mode, t.mode.as_str()), (mode, text));
        }
        let (_, problems) = checked(|c| mysql_tls(c, Some("verify_ca"), None, None));
        assert_eq!(
            problems,
            ["mysql_ssl_ca: missing: verify_ca checks the server's certificate against this CA (a PEM file)"]
        );
        let (_, problems) = checked(|c| mysql_tls(c, Some("preferred"), None, None));
        assert!(
            problems[0].starts_with("mysql_ssl_mode: \"preferred\" is not offered"),
            "{problems:?}"
        );
        let (_, problems) = checked(|c| mysql_tls(c, Some("REQUIRED"), None, None));
        assert!(
            problems[0].starts_with("mysql_ssl_mode: \"REQUIRED\" is not one of"),
            "{problems:?}"
        );

        let dir = std::env::temp_dir().join(format!("strata-syncer-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("ca.pem"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(dir.join("empty.pem"), "").unwrap();
        let (t, problems) = checked(|c| mysql_tls(c, Some("verify_ca"), Some("ca.pem"), Some(&dir)));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(t.ca, Some(dir.join("ca.pem")), "relative to the config's folder");
        let (_, problems) = checked(|c| mysql_tls(c, Some("verify_identity"), Some("empty.pem"), Some(&dir)));
        assert!(
            problems[0].ends_with("empty.pem: no PEM certificate in it"),
            "{problems:?}"
        );
        let (_, problems) = checked(|c| mysql_tls(c, Some("verify_ca"), Some("missing.pem"), Some(&dir)));
        assert!(
            problems[0].starts_with("mysql_ssl_ca: ") && problems[0].contains("missing.pem"),
            "{problems:?}"
        );
        let (_, problems) = checked(|c| mysql_tls(c, Some("required"), Some("ca.pem"), Some(&dir)));
        assert!(
            problems[0].starts_with("mysql_ssl_ca: is only read with"),
            "{problems:?}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_intervals() {
        let d = |s: &str| Some(toml::Value::String(s.into()));
        let (i, problems) = checked(|c| intervals(c, &None, &None));
        assert_eq!((i, problems.len()), ((DEFAULT_INTERVAL, DEFAULT_IDLE_INTERVAL), 0));
        let (i, _) = checked(|c| intervals(c, &d("1s"), &None));
        assert_eq!(i, (Duration::from_secs(1), Duration::from_secs(1)));
        let (_, problems) = checked(|c| intervals(c, &d("0"), &d("fast")));
        assert_eq!(problems[0], "interval: must be more than 0");
        assert!(
            problems[1].starts_with("idle_interval: \"fast\" is not a duration"),
            "{problems:?}"
        );
        let (_, problems) = checked(|c| intervals(c, &d("20ms"), &d("10ms")));
        assert_eq!(problems, ["idle_interval: must be at least interval (20ms)"]);
    }

    #[test]
    fn the_prefixes_and_the_batch() {
        let (p, problems) = checked(|c| table_prefix(c, None));
        assert_eq!((p.as_str(), problems.len()), ("wp_", 0));
        let (_, problems) = checked(|c| table_prefix(c, Some("wp-".into())));
        assert_eq!(problems, ["table_prefix: letters, digits and _ only, e.g. \"wp_\""]);
        let (p, problems) = checked(|c| key_prefix(c, Some("site2:".into())));
        assert_eq!((p.as_str(), problems.len()), ("site2:", 0));
        let (_, problems) = checked(|c| key_prefix(c, Some("a b".into())));
        assert_eq!(
            problems,
            ["key_prefix: no spaces or control characters, at most 200 bytes"]
        );

        let (b, problems) = checked(|c| batch(c, Some(10_000)));
        assert_eq!((b, problems.len()), (10_000, 0));
        let (b, problems) = checked(|c| batch(c, Some(0)));
        assert_eq!(
            (b, problems),
            (DEFAULT_BATCH, vec!["batch: 0 is out of range 1..=10000".to_string()])
        );
    }

    #[test]
    fn the_listener_and_the_origin() {
        let (a, problems) = checked(|c| admin_listen(c, Some("127.0.0.1:9300".into())));
        assert_eq!((a, problems.len()), (Some("127.0.0.1:9300".parse().unwrap()), 0));
        let (a, _) = checked(|c| admin_listen(c, None));
        assert_eq!(a, None);
        let (_, problems) = checked(|c| admin_listen(c, Some("9300".into())));
        assert_eq!(
            problems,
            ["admin_listen: \"9300\" is not an address such as \"127.0.0.1:9300\""]
        );

        let (o, problems) = checked(|c| origin_url(c, Some("http://127.0.0.1:8081".into())));
        assert_eq!((o.to_string().as_str(), problems.len()), ("http://127.0.0.1:8081/", 0));
        let (_, problems) = checked(|c| origin_url(c, None));
        assert!(problems[0].starts_with("origin: missing"), "{problems:?}");
        let (_, problems) = checked(|c| origin_url(c, Some("https://x".into())));
        assert_eq!(problems, ["origin: \"https://x\" is not an http:// URL"]);
    }

    #[test]
    fn the_wordpress_version() {
        let (v, problems) = checked(|c| wp_version(c, Some("6.4.2".into()), Some("/nonexistent"), None));
        assert_eq!(
            (v, problems.len()),
            ((6, 4), 0),
            "wordpress_version wins over wordpress_dir"
        );
        let (_, problems) = checked(|c| wp_version(c, Some("six".into()), None, None));
        assert_eq!(
            problems,
            ["wordpress_version: \"six\" is not a version such as \"6.1.9\""]
        );

        let dir = std::env::temp_dir().join(format!("strata-syncer-wp-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("wp/wp-includes")).unwrap();
        std::fs::write(
            dir.join("wp/wp-includes/version.php"),
            "<?php\n$wp_version = '6.7.1';\n",
        )
        .unwrap();
        let (v, problems) = checked(|c| wp_version(c, None, Some("wp"), Some(&dir)));
        assert_eq!((v, problems.len()), ((6, 7), 0), "{problems:?}");
        std::fs::write(
            dir.join("wp/wp-includes/version.php"),
            "<?php\n$wp_version = 'trunk';\n",
        )
        .unwrap();
        let (_, problems) = checked(|c| wp_version(c, None, Some("wp"), Some(&dir)));
        assert_eq!(problems, ["wordpress_dir: unreadable version \"trunk\""]);
        let (_, problems) = checked(|c| wp_version(c, None, Some("elsewhere"), Some(&dir)));
        assert!(problems[0].starts_with("wordpress_dir: cannot read "), "{problems:?}");
        assert!(problems[0].ends_with("set wordpress_version (e.g. \"6.1.9\") when WordPress is elsewhere"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cluster_section() {
        let raw = |text: &str| -> RawCluster { toml::from_str(text).unwrap() };
        let (cl, problems) = checked(|c| cluster_config(c, raw(""), None));
        assert_eq!(
            problems,
            ["cluster.secret_file: missing: a file holding the cluster secret (at least 16 characters)"],
            "the queue is sealed with the secret: needed without siblings too"
        );
        assert!(cl.siblings.is_empty() && cl.secret.is_empty() && cl.soft_lists);
        assert_eq!((cl.ban_wait, cl.ban_timeout), (DEFAULT_BAN_WAIT, DEFAULT_BAN_TIMEOUT));

        let secret = std::env::temp_dir().join(format!("strata-syncer-cluster-secret-{}", std::process::id()));
        std::fs::write(&secret, "0123456789abcdef0123\n").unwrap();
        let text = format!(
            "siblings = [\"http://127.0.0.1:9080\"]\nsecret_file = {:?}\nlist_bans = \"hard\"\n",
            secret.display().to_string()
        );
        let (cl, problems) = checked(|c| cluster_config(c, raw(&text), None));
        let _ = std::fs::remove_file(&secret);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!((cl.siblings.len(), cl.secret.len(), cl.soft_lists), (1, 20, false));

        let bad = "siblings = [\"http://127.0.0.1:9080\", \"9081\"]\nban_wait = 200\nlist_bans = \"maybe\"\n";
        let (_, problems) = checked(|c| cluster_config(c, raw(bad), None));
        let keys: Vec<&str> = problems.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "cluster.siblings",
                "cluster.ban_wait",
                "cluster.list_bans",
                "cluster.secret_file"
            ]
        );
        assert_eq!(
            problems[2],
            "cluster.list_bans: \"maybe\" is neither \"soft\" nor \"hard\""
        );
        assert_eq!(
            problems[3],
            "cluster.secret_file: missing: a file holding the cluster secret (at least 16 characters)"
        );
    }

    #[test]
    fn durations_and_versions_parse() {
        assert_eq!(parse_duration("5ms"), Ok(Duration::from_millis(5)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_wp_version("6.1.9"), Some((6, 1)));
        assert_eq!(parse_wp_version("6.7-beta1"), Some((6, 7)));
        assert_eq!(parse_wp_version("x"), None);
    }
}
