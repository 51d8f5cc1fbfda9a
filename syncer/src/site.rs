//! What the syncer knows about the WordPress site besides its [`Options`]: its timezone, its
//! authentication key and salt (from the PHP configuration, else the options, as
//! `wp_salt('auth')` does), the settings published for the proxies, and its permalinks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{Datelike, FixedOffset, TimeZone, Timelike, Utc};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use md5::{Digest, Md5};
use regex::Regex;
use strata_wire::comment::Settings;

use crate::options::Options;
use crate::rules::MAX_LENGTHS;

impl Options {
    /// The settings the proxies need, published at `now_ms`.
    pub fn settings(&self, now_ms: u64) -> Settings {
        let home_path = {
            static SCHEME_HOST: LazyLock<Regex> =
                LazyLock::new(|| Regex::new(r"(?i)https?://[^/]+").unwrap_or_else(|e| panic!("{e}")));
            SCHEME_HOST.replace_all(&format!("{}/", self.home), "").into_owned()
        };
        Settings {
            require_name_email: self.require_name_email,
            comment_registration: self.comment_registration,
            cookies_opt_in: self.cookies_opt_in,
            cookiehash: md5_hex(self.siteurl.as_bytes()),
            cookie_path: home_path,
            secure: self.home.to_ascii_lowercase().starts_with("https:"),
            home: self.home.clone(),
            max_lengths: MAX_LENGTHS,
            published_ms: now_ms,
        }
    }

    /// `wp_timezone()`: `timezone_string`, else `gmt_offset`.
    pub fn timezone(&self) -> SiteTz {
        if !self.timezone_string.is_empty() {
            if let Ok(tz) = self.timezone_string.parse::<chrono_tz::Tz>() {
                return SiteTz::Named(tz);
            }
        }
        let secs = (self.gmt_offset * 3600.0).round() as i32;
        SiteTz::Fixed(
            FixedOffset::east_opt(secs).unwrap_or_else(|| FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!())),
        )
    }
}

/// `md5()` as lower-case hex.
pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// The site's timezone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SiteTz {
    /// A named zone (`timezone_string`).
    Named(chrono_tz::Tz),
    /// A fixed offset (`gmt_offset`).
    Fixed(FixedOffset),
}

/// `comment_date` and `comment_date_gmt` (`Y-m-d H:i:s`) for a moment in Unix milliseconds.
pub fn comment_dates(ms: u64, tz: SiteTz) -> (String, String) {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let utc = Utc.timestamp_opt(secs, 0).single().unwrap_or_default();
    let local = match tz {
        SiteTz::Named(z) => mysql_datetime(&utc.with_timezone(&z)),
        SiteTz::Fixed(o) => mysql_datetime(&utc.with_timezone(&o)),
    };
    (local, mysql_datetime(&utc))
}

/// `Y-m-d H:i:s`, written directly (every comment needs four: strftime's parsing of its
/// pattern each time showed in the syncer's profile). Years past 9999, which MySQL's
/// `DATETIME` cannot hold, come out with five digits.
fn mysql_datetime<T: Datelike + Timelike>(t: &T) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Constants read from the PHP configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhpConstants {
    /// Name → value of every `define('X_KEY'|'X_SALT', '…')` found.
    pub values: HashMap<String, String>,
    /// The files read.
    pub files: Vec<PathBuf>,
}

/// Why the PHP configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// The configuration file is unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Reads the `*_KEY` / `*_SALT` constants from a PHP configuration file and the files it
/// `require`s or `include`s with a literal path (or `__DIR__ . '…'`).
///
/// Errors: the main file cannot be read (included files that cannot be read are skipped
/// with a warning).
pub fn read_php_constants(path: &Path) -> Result<PhpConstants, SiteError> {
    let mut out = PhpConstants::default();
    read_php_file(path, &mut out, 0, true)?;
    Ok(out)
}

fn read_php_file(path: &Path, out: &mut PhpConstants, depth: usize, required: bool) -> Result<(), SiteError> {
    static DEFINE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r#"define\s*\(\s*['"]([A-Z_]+_(?:KEY|SALT))['"]\s*,\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\s*\)"#,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    });
    static INCLUDE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?:require|include)(?:_once)?\s*\(?\s*(__DIR__\s*\.\s*)?['"]([^'"]+)['"]"#)
            .unwrap_or_else(|e| panic!("{e}"))
    });
    if depth > 8 || out.files.iter().any(|f| f == path) {
        return Ok(());
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(source) if required => {
            return Err(SiteError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read an included PHP file");
            return Ok(());
        }
    };
    out.files.push(path.to_path_buf());
    // Comments out, so commented-out defines and includes do not count.
    static COMMENTS: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?s)/\*.*?\*/|(?m)^[ \t]*(?://|#)(?-s:.*)$").unwrap_or_else(|e| panic!("{e}")));
    let code = COMMENTS.replace_all(&text, "");
    for c in DEFINE.captures_iter(&code) {
        let value = match (c.get(2), c.get(3)) {
            (Some(v), _) => v.as_str().replace("\\'", "'").replace("\\\\", "\\"),
            (_, Some(v)) => v.as_str().replace("\\\"", "\"").replace("\\\\", "\\"),
            _ => continue,
        };
        // PHP keeps the first definition of a constant.
        out.values.entry(c[1].to_string()).or_insert(value);
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let includes: Vec<PathBuf> = INCLUDE
        .captures_iter(&code)
        .map(|c| {
            let p = PathBuf::from(&c[2]);
            if c.get(1).is_some() || p.is_relative() {
                dir.join(c[2].trim_start_matches('/'))
            } else {
                p
            }
        })
        .collect();
    for inc in includes {
        read_php_file(&inc, out, depth + 1, false)?;
    }
    Ok(())
}

/// `wp_salt('auth')`: `AUTH_KEY . AUTH_SALT` from the constants when they are set and not
/// duplicated or the sample phrase, else `SECRET_KEY` / `SECRET_SALT`, else the `auth_key`
/// / `auth_salt` options. `None` when a part is nowhere (WordPress would generate and store
/// it on its next use).
pub fn auth_salt(consts: &PhpConstants, o: &Options) -> Option<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for first in ["AUTH", "SECURE_AUTH", "LOGGED_IN", "NONCE", "SECRET"] {
        for second in ["KEY", "SALT"] {
            if let Some(v) = consts.values.get(&format!("{first}_{second}")) {
                *seen.entry(v.as_str()).or_default() += 1;
            }
        }
    }
    let usable = |name: &str| {
        consts
            .values
            .get(name)
            .filter(|v| {
                !v.is_empty() && v.as_str() != "put your unique phrase here" && seen.get(v.as_str()) == Some(&1)
            })
            .cloned()
    };
    let mut key = usable("SECRET_KEY").unwrap_or_default();
    let mut salt = usable("SECRET_SALT").unwrap_or_default();
    if let Some(k) = usable("AUTH_KEY") {
        key = k;
    } else if key.is_empty() {
        key = o.auth_key.clone();
    }
    if let Some(s) = usable("AUTH_SALT") {
        salt = s;
    } else if salt.is_empty() {
        salt = o.auth_salt.clone();
    }
    (!key.is_empty() && !salt.is_empty()).then(|| key + &salt)
}

/// `wp_hash($data)` with the auth salt: hex HMAC-MD5.
pub fn wp_hash(data: &str, salt: &str) -> String {
    use hmac::{Hmac, Mac};
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Md5>::new_from_slice(salt.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(data.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Largest number of permalinks remembered.
const PERMALINK_CACHE: usize = 10_000;
/// How long a permalink is trusted (a post's slug may change).
const PERMALINK_TTL: Duration = Duration::from_secs(60);
/// Deadline of a permalink look-up.
const PERMALINK_TIMEOUT: Duration = Duration::from_secs(3);

/// Resolves `get_permalink()` by asking the origin for `/?p=ID` and reading the canonical
/// redirect, remembering the answers for a while. Look-ups run in the background (started
/// as soon as a batch's posts are known), so a busy PHP never stalls the queue: a verdict
/// waits for its post's look-up at most a bounded time, then links to `home/?p=ID`, which
/// WordPress redirects to the permalink.
#[derive(Clone)]
pub struct Permalinks {
    inner: Arc<PermalinkState>,
}

struct PermalinkState {
    origin: http::Uri,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    /// Answers by post id, with when they were learnt (`None`: the plain link is the
    /// permalink).
    cache: parking_lot::Mutex<HashMap<u64, (Instant, Option<String>)>>,
    /// Posts being looked up.
    inflight: parking_lot::Mutex<std::collections::HashSet<u64>>,
    /// Woken whenever a look-up ends.
    done: tokio::sync::Notify,
}

impl Permalinks {
    /// For the origin at `origin` (`http://host:port`).
    pub fn new(origin: http::Uri) -> Permalinks {
        Permalinks {
            inner: Arc::new(PermalinkState {
                origin,
                client: Client::builder(TokioExecutor::new()).build_http(),
                cache: parking_lot::Mutex::new(HashMap::new()),
                inflight: parking_lot::Mutex::new(std::collections::HashSet::new()),
                done: tokio::sync::Notify::new(),
            }),
        }
    }

    fn cached(&self, id: u64) -> Option<Option<String>> {
        self.inner
            .cache
            .lock()
            .get(&id)
            .filter(|(at, _)| at.elapsed() < PERMALINK_TTL)
            .map(|(_, link)| link.clone())
    }

    /// Starts looking up the permalinks of `ids` not known yet (in the background; `host`
    /// is the site's `Host`).
    pub fn prefetch(&self, ids: impl IntoIterator<Item = u64>, host: &str) {
        for id in ids {
            if self.cached(id).is_some() || !self.inner.inflight.lock().insert(id) {
                continue;
            }
            let me = self.clone();
            let host = host.to_string();
            tokio::spawn(async move {
                match tokio::time::timeout(PERMALINK_TIMEOUT, me.ask(id, &host)).await {
                    Ok(Ok(link)) => {
                        let mut cache = me.inner.cache.lock();
                        if cache.len() >= PERMALINK_CACHE {
                            cache.clear();
                        }
                        cache.insert(id, (Instant::now(), link));
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(post = id, error = %e, "permalink look-up failed; using the plain link")
                    }
                    Err(_) => tracing::warn!(post = id, "permalink look-up timed out; using the plain link"),
                }
                me.inner.inflight.lock().remove(&id);
                me.inner.done.notify_waiters();
            });
        }
    }

    /// The permalink of post `id` on the site whose `home` is given, waiting for its
    /// look-up until `deadline` at most; `home/?p=ID` (which redirects to the permalink) when
    /// the origin cannot answer in time.
    pub async fn get(&self, id: u64, home: &str, host: &str, deadline: tokio::time::Instant) -> String {
        let plain = || format!("{}/?p={id}", home.trim_end_matches('/'));
        if let Some(link) = self.cached(id) {
            return link.unwrap_or_else(plain);
        }
        self.prefetch([id], host);
        loop {
            let done = self.inner.done.notified();
            if let Some(link) = self.cached(id) {
                return link.unwrap_or_else(plain);
            }
            if !self.inner.inflight.lock().contains(&id) {
                return plain();
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                return plain();
            }
        }
    }

    /// Forgets every remembered permalink.
    pub fn clear(&self) {
        self.inner.cache.lock().clear();
    }

    /// The permalink WordPress redirects `/?p=ID` to; the plain link when it answers the
    /// page itself (plain permalinks).
    async fn ask(&self, id: u64, host: &str) -> Result<Option<String>, String> {
        let base = self.inner.origin.to_string();
        let uri = format!("{}/?p={id}", base.trim_end_matches('/'));
        let req = http::Request::builder()
            .uri(uri)
            .header(http::header::HOST, host)
            .header(http::header::USER_AGENT, "strata-syncer")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = self.inner.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let location = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Drain the body so the connection can be reused.
        let _ = resp.into_body().collect().await;
        if status.is_redirection() {
            return location.map(Some).ok_or_else(|| format!("{status} without Location"));
        }
        if status.is_success() {
            return Ok(None);
        }
        Err(format!("the origin answered {status}"))
    }
}

#[cfg(test)]
mod tests;
