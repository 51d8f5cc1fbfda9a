//! Shared helpers: the real MariaDB, memcached and WordPress origin of the test machine
//! (scripts/wordpress.sh, scripts/memcached.sh), a queue of its own per test (a unique key
//! prefix), records written the way strata-proxy writes them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mysql_async::prelude::Queryable;
use strata_syncer::config::Config;
use strata_syncer::metrics::Metrics;
use strata_syncer::syncer::{Syncer, TickReport};
use strata_wire::comment::{self as wire, Record, Verdict};
use strata_wire::memcache::Conn;

/// The WordPress database.
pub fn mysql_url() -> String {
    std::env::var("STRATA_MYSQL").unwrap_or_else(|_| "mysql://strata_wp:strata_wp@127.0.0.1:3306/strata_wp".into())
}

/// The memcached holding the queues.
pub fn memcached() -> String {
    std::env::var("STRATA_MEMCACHED").unwrap_or_else(|_| "127.0.0.1:11211".into())
}

/// The WordPress origin.
pub fn wp_origin() -> String {
    std::env::var("STRATA_WP_ORIGIN").unwrap_or_else(|_| "http://127.0.0.1:8081".into())
}

/// The Host WordPress is served under.
pub fn wp_host() -> String {
    std::env::var("STRATA_WP_HOST").unwrap_or_else(|_| "127.0.0.1:8080".into())
}

/// A string unique to this call across test runs.
pub fn token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!(
        "t{:x}{}x{}",
        nanos % (1 << 48),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A documentation-prefix IPv6 address unique to `token`.
pub fn ip_for(token: &str) -> String {
    let h = strata_syncer::site::md5_hex(token.as_bytes());
    format!("2001:db8:{}:{}::{}", &h[0..4], &h[4..8], &h[8..12])
}

/// The cluster secret of the test syncers (those whose `extra` has no `[cluster]`).
pub const SECRET: &str = "syncer-integration-secret-0123456789";

/// Writes [`SECRET`] to a file (once per test process) and returns its path.
pub fn secret_file() -> String {
    let path = std::env::temp_dir().join(format!("strata-syncer-it-secret-{}", std::process::id()));
    // Written once, atomically: tests start syncers concurrently.
    static WRITTEN: std::sync::Once = std::sync::Once::new();
    WRITTEN.call_once(|| {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, SECRET).expect("write secret");
        std::fs::rename(&tmp, &path).expect("install secret");
    });
    path.display().to_string()
}

/// The TOML of a test syncer on queue `prefix`, plus `extra` lines; a `[cluster]` table
/// with [`secret_file`] follows unless `extra` has one.
pub fn config_toml(prefix: &str, extra: &str) -> String {
    let cluster = if extra.contains("[cluster]") {
        String::new()
    } else {
        format!("[cluster]\nsecret_file = {:?}\n", secret_file())
    };
    format!(
        "memcached = [\"{mc}\"]\nmysql = \"{my}\"\norigin = \"{origin}\"\nkey_prefix = \"{prefix}\"\nmissing_wait = \"300ms\"\npermalink_wait = \"5s\"\n{extra}\n{cluster}",
        mc = memcached(),
        my = mysql_url(),
        origin = wp_origin(),
    )
}

/// A test's queue, database and syncer.
pub struct Env {
    /// The queue's key prefix.
    pub prefix: String,
    /// memcached.
    pub mc: Conn,
    /// MySQL.
    pub db: mysql_async::Pool,
    /// The syncer under test.
    pub syncer: Syncer,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// The cluster secret its records are sealed with.
    pub secret: Vec<u8>,
}

impl Env {
    /// A fresh queue with a syncer configured by `extra` TOML lines.
    pub async fn new(extra: &str) -> Env {
        let prefix = format!("strata-test:{}:", token());
        let cfg = Config::from_toml(&config_toml(&prefix, extra), None).unwrap_or_else(|e| panic!("test config: {e}"));
        Env::with_config(prefix, cfg).await
    }

    /// A syncer for an explicit configuration.
    pub async fn with_config(prefix: String, cfg: Config) -> Env {
        let mc = Conn::connect(&memcached(), Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("memcached at {} is required (scripts/memcached.sh): {e}", memcached()));
        let db = mysql_async::Pool::new(mysql_url().as_str());
        let metrics = Arc::new(Metrics::new());
        let secret = cfg.cluster.secret.clone();
        let syncer = Syncer::new(cfg, metrics.clone()).unwrap();
        Env {
            prefix,
            mc,
            db,
            syncer,
            metrics,
            secret,
        }
    }

    /// Reserves a sequence number as the proxy does (epoch created if missing).
    pub async fn reserve(&mut self) -> (u64, u64) {
        let p = &self.prefix;
        let (seq_key, epoch_key) = (wire::seq_key(p), wire::epoch_key(p));
        if self.mc.get(&epoch_key).await.unwrap().is_none() {
            let e = now_ms() ^ 0x5eed;
            self.mc.add(&epoch_key, e.to_string().as_bytes(), 0).await.unwrap();
        }
        let epoch: u64 = String::from_utf8(self.mc.get(&epoch_key).await.unwrap().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let seq = match self.mc.incr(&seq_key, 1).await.unwrap() {
            Some(n) => n,
            None => {
                self.mc.add(&seq_key, b"0", 0).await.unwrap();
                self.mc.incr(&seq_key, 1).await.unwrap().unwrap()
            }
        };
        (seq, epoch)
    }

    /// Queues a record (its `seq` and `epoch` are filled in) sealed as a proxy seals it;
    /// returns its sequence number.
    pub async fn push(&mut self, mut r: Record) -> u64 {
        let (seq, epoch) = self.reserve().await;
        r.seq = seq;
        r.epoch = epoch;
        let key = wire::record_key(&self.prefix, seq);
        self.mc.set(&key, &r.seal(&self.secret, &self.prefix), 0).await.unwrap();
        seq
    }

    /// Reserves a position and writes `value` there as is; its sequence number and epoch.
    pub async fn push_raw(&mut self, value: &[u8]) -> (u64, u64) {
        let (seq, epoch) = self.reserve().await;
        let key = wire::record_key(&self.prefix, seq);
        self.mc.set(&key, value, 0).await.unwrap();
        (seq, epoch)
    }

    /// Ticks until a tick finds the queue empty (at most 100 ticks); that tick's report.
    pub async fn drain(&mut self) -> TickReport {
        let mut last = TickReport::default();
        for _ in 0..100 {
            last = self.syncer.tick().await.unwrap_or_else(|e| panic!("tick failed: {e}"));
            if last.depth == 0 {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        last
    }

    /// The verdict on `seq` of the queue's current epoch.
    pub async fn verdict(&mut self, seq: u64) -> Option<Verdict> {
        let epoch = self.get("epoch").await?.parse().ok()?;
        let key = wire::verdict_key(&self.prefix, epoch, seq);
        let v = self.mc.get(&key).await.unwrap()?;
        Some(wire::unseal_json(&self.secret, &key, &v).unwrap_or_else(|e| panic!("verdict {seq}: {e}")))
    }

    /// A memcached value under this queue's prefix.
    pub async fn get(&mut self, suffix: &str) -> Option<String> {
        let v = self.mc.get(&format!("{}{suffix}", self.prefix)).await.unwrap()?;
        Some(String::from_utf8(v).unwrap())
    }

    /// Deletes the queue's keys, as a memcached restart would.
    pub async fn wipe(&mut self, up_to: u64) {
        let p = self.prefix.clone();
        for k in [
            wire::seq_key(&p),
            wire::epoch_key(&p),
            wire::applied_key(&p),
            wire::settings_key(&p),
        ] {
            self.mc.delete(&k).await.unwrap();
        }
        for s in 1..=up_to {
            self.mc.delete(&wire::record_key(&p, s)).await.unwrap();
        }
    }

    /// Removes what the test left: the comments whose text contains `token` (and the
    /// `comment_count` of their posts is recomputed), the queue's cursor row and its keys.
    pub async fn finish(mut self, token: Option<&str>) {
        let mut c = self.db.get_conn().await.unwrap();
        if let Some(token) = token {
            assert!(token.len() >= 10, "a token that short could match other comments");
            let like = format!("%{token}%");
            let posts: Vec<u64> = c
                .exec(
                    "SELECT DISTINCT comment_post_ID FROM wp_comments WHERE comment_content LIKE ?",
                    (like.clone(),),
                )
                .await
                .unwrap();
            c.exec_drop("DELETE FROM wp_comments WHERE comment_content LIKE ?", (like,))
                .await
                .unwrap();
            for post in posts {
                c.exec_drop(
                    "UPDATE wp_posts SET comment_count = (SELECT COUNT(*) FROM wp_comments \
                     WHERE comment_post_ID = ? AND comment_approved = '1') WHERE ID = ?",
                    (post, post),
                )
                .await
                .unwrap();
            }
        }
        c.exec_drop("DELETE FROM wp_strata_syncer WHERE queue = ?", (self.prefix.clone(),))
            .await
            .unwrap();
        let top: u64 = self.get("seq").await.and_then(|s| s.parse().ok()).unwrap_or(0);
        self.wipe(top).await;
    }

    /// A comment row as text columns.
    pub async fn row(&self, id: u64) -> HashMap<String, String> {
        let mut c = self.db.get_conn().await.unwrap();
        row(&mut c, id).await
    }
}

/// One `wp_comments` row, every column as text.
pub async fn row(c: &mut mysql_async::Conn, id: u64) -> HashMap<String, String> {
    let cols = [
        "comment_ID",
        "comment_post_ID",
        "comment_author",
        "comment_author_email",
        "comment_author_url",
        "comment_author_IP",
        "comment_date",
        "comment_date_gmt",
        "comment_content",
        "comment_karma",
        "comment_approved",
        "comment_agent",
        "comment_type",
        "comment_parent",
        "user_id",
    ];
    let sql = format!(
        "SELECT {} FROM wp_comments WHERE comment_ID = ?",
        cols.iter()
            .map(|c| format!("CAST({c} AS CHAR)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let row: mysql_async::Row = c
        .exec_first(sql, (id,))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("comment {id} not found"));
    cols.iter()
        .enumerate()
        .map(|(i, name)| {
            (
                name.to_string(),
                row.get::<Option<String>, _>(i).flatten().unwrap_or_default(),
            )
        })
        .collect()
}

/// A single value from MySQL.
pub async fn scalar(db: &mysql_async::Pool, sql: &str, params: Vec<mysql_async::Value>) -> Option<String> {
    let mut c = db.get_conn().await.unwrap();
    c.exec_first::<Option<String>, _, _>(sql, mysql_async::Params::Positional(params))
        .await
        .unwrap()
        .flatten()
}

/// A published post open for comments, picked by `token` so tests spread over the posts.
pub async fn open_post(db: &mysql_async::Pool, token: &str) -> u64 {
    let mut c = db.get_conn().await.unwrap();
    let ids: Vec<u64> = c
        .query(
            "SELECT ID FROM wp_posts WHERE post_type = 'post' AND post_status = 'publish' \
             AND post_password = '' AND comment_status = 'open' ORDER BY ID",
        )
        .await
        .unwrap();
    assert!(!ids.is_empty(), "no open post: run scripts/wordpress.sh");
    let h = u64::from_str_radix(&strata_syncer::site::md5_hex(token.as_bytes())[..8], 16).unwrap();
    ids[(h as usize) % ids.len()]
}

/// The ID of the post with slug `slug`.
pub async fn post_by_slug(db: &mysql_async::Pool, slug: &str) -> u64 {
    scalar(
        db,
        "SELECT CAST(ID AS CHAR) FROM wp_posts WHERE post_name = ?",
        vec![slug.into()],
    )
    .await
    .unwrap_or_else(|| panic!("post {slug} not provisioned: run scripts/wordpress.sh"))
    .parse()
    .unwrap()
}

/// A record as the proxy would write it for an anonymous visitor.
/// A comment on `post_id` of a sender of its own, `n` of the test `token`: the author "A",
/// e-mail and address of its own, text `"{n} {token}"`.
pub fn own_sender(post_id: u64, n: &str, token: &str) -> Record {
    record(
        post_id,
        "A",
        &format!("{n}-{token}@example.test"),
        "",
        &format!("{n} {token}"),
        &ip_for(&format!("{token}{n}")),
    )
}

pub fn record(post_id: u64, author: &str, email: &str, url: &str, content: &str, ip: &str) -> Record {
    Record {
        v: wire::RECORD_VERSION,
        epoch: 0,
        seq: 0,
        post_id,
        parent: 0,
        author: strata_wire::php::strip_tags(author).trim().to_string(),
        email: email.trim().to_string(),
        url: url.trim().to_string(),
        content: content.trim().to_string(),
        ip: ip.to_string(),
        agent: "strata-syncer-test/1.0".into(),
        accepted_ms: now_ms(),
        consent: false,
        redirect_to: None,
        node: "test".into(),
    }
}

/// POSTs a comment form straight to PHP; the status and `Location`.
pub async fn post_to_php(fields: &[(&str, &str)]) -> (u16, String, String) {
    let body: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                k,
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::post(format!("{}/wp-comments-post.php", wp_origin()))
        .header("host", wp_host())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("user-agent", "strata-syncer-test/1.0")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client
        .request(req)
        .await
        .expect("the WordPress origin is required (scripts/wordpress.sh)");
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, location, String::from_utf8_lossy(&body).into_owned())
}

/// `wp_hash($data)` computed by the installed WordPress.
pub fn php_wp_hash(data: &str) -> String {
    let out = std::process::Command::new("php")
        .env("HTTP_HOST", wp_host())
        .arg("-r")
        .arg("require '/usr/share/wordpress/wp-load.php'; echo wp_hash($argv[1]);")
        .arg(data)
        .output()
        .expect("php is required (installed by scripts/wordpress.sh)");
    assert!(
        out.status.success(),
        "php failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
