//! The MySQL side: the syncer's cursor table, the site's options, and [`Store::apply`], which
//! runs WordPress's rules over a batch of records and inserts the accepted ones, updates
//! `comment_count` and advances the cursor in one transaction.
//!
//! Every check that reads comments (duplicates, floods, the author's approved comments, the
//! parent's status) runs inside that transaction, for the whole batch at once: MySQL says
//! what the table held and which records of the batch equal earlier ones (its own collation
//! deciding what is equal), and [`batch::resolve`] walks the batch in order, so each record
//! is judged as PHP would have judged it one request after the other.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Pool, Value};
use strata_wire::comment::Record;

use crate::flood::{Compare, FloodIndex, Lookup};
use crate::format::{self, addslashes, Filtered, Raw};
use crate::options::{Options, OPTION_NAMES};
use crate::queue::{Cursor, Slot};
use crate::rules::{self, Post, Refusal, Submission, WpVersion};
use crate::site;

mod batch;
pub mod tls;

use batch::{Candidate, Collations, Decision, Facts, Pair, TextColumn};

/// What became of one queue position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Inserted into `wp_comments`.
    Inserted(Box<Inserted>),
    /// Not inserted: WordPress would have refused it or ignored it.
    Refused(Refusal),
    /// The position held no usable record.
    Skipped(&'static str),
}

/// An inserted comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// `comment_ID`.
    pub id: u64,
    /// `comment_approved`: '1', '0' or 'trash'.
    pub approved: &'static str,
    /// The stored fields.
    pub filtered: Filtered,
    /// `comment_date_gmt`.
    pub date_gmt: String,
    /// The record it came from.
    pub record: Box<Record>,
}

/// The result of one committed batch.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Each position's outcome, in sequence order.
    pub outcomes: Vec<(u64, Outcome)>,
    /// The cursor now committed.
    pub cursor: Cursor,
    /// The options the batch was judged with.
    pub options: Options,
    /// Flood checks answered by the index, and by the query.
    pub flood_checks: (u64, u64),
    /// Whether MySQL was asked which comments of the batch relate to each other (else the
    /// syncer could tell that none do); `None` when no comment reached the database's
    /// checks.
    pub pairs_asked: Option<bool>,
    /// Whether the batch was judged ahead of its reads, against what earlier batches read,
    /// and that judgement kept; `None` when it was not judged ahead.
    pub judged_ahead: Option<bool>,
}

/// Why the database step failed. Nothing was committed in any case.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// MySQL failed (connection, server, protocol).
    #[error("mysql: {0}")]
    Mysql(#[from] mysql_async::Error),
    /// The TLS handshake with MySQL failed, said with what to check.
    #[error("mysql: {0}")]
    Tls(String),
    /// The durable cursor is not where this syncer thought (another syncer, or a commit whose
    /// answer was lost): the batch was not applied; continue from `0`.
    #[error("the cursor in MySQL is at {0:?}, not where this syncer expected it")]
    CursorMoved(Cursor),
    /// MySQL did not answer in time (an open transaction is rolled back when dropped).
    #[error("mysql: no answer within {0:?}")]
    Timeout(Duration),
    /// The WordPress tables are not what WordPress creates.
    #[error("mysql: {0}")]
    Schema(String),
}

/// Runs a database step with a deadline.
pub async fn with_deadline<T>(
    deadline: Duration,
    step: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(deadline, step)
        .await
        .map_err(|_| StoreError::Timeout(deadline))?
}

/// Extra rules for [`Store::apply`].
#[derive(Debug, Clone, Copy)]
pub struct Judge {
    /// The WordPress version reproduced.
    pub version: WpVersion,
    /// The flood interval (zero: no flood check).
    pub flood_interval: Duration,
}

/// The WordPress database.
#[derive(Clone)]
pub struct Store {
    /// Made at the first connection: [`mysql_opts`] may ask the server for its certificate.
    pool: tokio::sync::OnceCell<Pool>,
    /// The `mysql` URL.
    url: String,
    prefix: String,
    /// The queue's name in the cursor table (its memcached key prefix), so that several
    /// queues can share one database.
    queue: String,
    /// The last hour's comments by address and e-mail, so the flood query runs only for
    /// comments that may be floods; one batch uses it at a time.
    flood: Arc<tokio::sync::Mutex<FloodState>>,
    /// The tables' collations and numbering, read once (again after a batch failed).
    setup: Arc<parking_lot::Mutex<Option<Arc<Setup>>>>,
    /// Connections (by id) that hold the batch's temporary tables.
    scratch_conns: Arc<parking_lot::Mutex<std::collections::HashSet<u32>>>,
    /// What the batches so far read of the options, posts and parents: the next batch is
    /// judged against it ahead of its reads (see [`Basis`]).
    basis: Arc<parking_lot::Mutex<Option<Basis>>>,
    /// TLS to MySQL, for saying why a handshake failed.
    tls: crate::config::MysqlTls,
}

/// The flood index and when it may be (re)built.
#[derive(Debug, Default)]
struct FloodState {
    /// The index, once seeded.
    index: Option<FloodIndex>,
    /// No index before this (it outgrew its bound, or the collation is unknown): the query
    /// decides every comment meanwhile.
    disabled_until: Option<Instant>,
    /// When old rows were last dropped.
    pruned: Option<Instant>,
    /// Flood checks of the current batch the index answered.
    by_index: u64,
    /// Flood checks of the current batch that ran the query.
    by_query: u64,
}

/// How long the flood index stays off after it outgrew its bound or could not be built.
const FLOOD_INDEX_PAUSE: Duration = Duration::from_secs(60);

/// Unix seconds now.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn params(values: Vec<Value>) -> Params {
    Params::Positional(values)
}

/// Parses `Y-m-d H:i:s` as UTC Unix seconds.
fn mysql_ts(s: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|d| d.and_utc().timestamp())
}

/// The driver's options for `url`, with TLS as `tls` says: the syncer's pool is made of
/// them. For `verify_ca` the name the server's certificate holds is learned first
/// ([`tls::certificate_name`]).
///
/// Errors: the URL is not usable (checked by the configuration already); for `verify_ca`,
/// the server's certificate could not be read or its chain is not signed by the CA.
pub async fn mysql_opts(url: &str, tls: &crate::config::MysqlTls) -> Result<mysql_async::Opts, StoreError> {
    let opts = mysql_async::Opts::from_url(url).map_err(mysql_async::Error::from)?;
    let name = match (&tls.mode, &tls.ca) {
        (crate::config::SslMode::VerifyCa, Some(ca)) => Some(
            tls::certificate_name(opts.ip_or_hostname(), opts.tcp_port(), ca, Duration::from_secs(10))
                .await
                .map_err(StoreError::Tls)?,
        ),
        _ => None,
    };
    mysql_opts_named(url, tls, name.as_deref())
}

/// [`mysql_opts`] with the name a `verify_ca` certificate holds given.
fn mysql_opts_named(
    url: &str,
    tls: &crate::config::MysqlTls,
    name: Option<&str>,
) -> Result<mysql_async::Opts, StoreError> {
    let opts = mysql_async::Opts::from_url(url).map_err(mysql_async::Error::from)?;
    let prefer_socket = opts.prefer_socket() && tls.mode == crate::config::SslMode::Disabled;
    Ok(mysql_async::OptsBuilder::from_opts(opts)
        .pool_opts(
            mysql_async::PoolOpts::default()
                .with_constraints(mysql_async::PoolConstraints::new(1, 4).unwrap_or_default())
                // A reset would drop the batch's temporary tables, made once per
                // connection; the syncer leaves no other session state behind.
                .with_reset_connection(false),
        )
        .conn_ttl(Some(Duration::from_secs(60)))
        // Literals are written without a character set of their own (see
        // `batch::lit`): the connection's is utf8mb4, whatever the server's default.
        .setup(vec!["SET NAMES utf8mb4"])
        // With TLS asked for, the encrypted TCP connection is the one used: the driver
        // would otherwise move a local server's connections to its (unencrypted) socket.
        .prefer_socket(prefer_socket)
        .ssl_opts(tls::ssl_opts(tls, name))
        .into())
}

impl Store {
    /// A lazy pool for `url`; tables are `{prefix}comments` etc.; the cursor is the row of
    /// `queue` in `{prefix}strata_syncer`.
    ///
    /// Errors: the URL is not usable (checked by the configuration already).
    pub fn new(url: &str, prefix: &str, queue: &str) -> Result<Store, StoreError> {
        Store::with_tls(url, prefix, queue, &crate::config::MysqlTls::default())
    }

    /// [`Store::new`] with TLS to MySQL as `tls` says.
    pub fn with_tls(url: &str, prefix: &str, queue: &str, tls: &crate::config::MysqlTls) -> Result<Store, StoreError> {
        // Checked now, used at the first connection (`verify_ca` asks the server first).
        mysql_opts_named(url, tls, None)?;
        Ok(Store {
            pool: tokio::sync::OnceCell::new(),
            url: url.to_string(),
            prefix: prefix.to_string(),
            queue: queue.to_string(),
            flood: Arc::new(tokio::sync::Mutex::new(FloodState::default())),
            setup: Arc::new(parking_lot::Mutex::new(None)),
            scratch_conns: Arc::default(),
            basis: Arc::default(),
            tls: tls.clone(),
        })
    }

    fn t(&self, name: &str) -> String {
        format!("`{}{name}`", self.prefix)
    }

    /// A connection from the pool; a failed TLS handshake is said with what to check.
    async fn conn(&self) -> Result<Conn, StoreError> {
        let pool = self
            .pool
            .get_or_try_init(|| async { Ok::<_, StoreError>(Pool::new(mysql_opts(&self.url, &self.tls).await?)) })
            .await?;
        pool.get_conn().await.map_err(|e| match tls::explain(&e, &self.tls) {
            Some(why) => StoreError::Tls(why),
            None => StoreError::Mysql(e),
        })
    }

    /// Creates the cursor table (once) and reads the cursor.
    pub async fn load_cursor(&self) -> Result<Cursor, StoreError> {
        let mut c = self.conn().await?;
        let t = self.t("strata_syncer");
        c.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {t} (
               queue VARCHAR(191) NOT NULL PRIMARY KEY,
               epoch BIGINT UNSIGNED NOT NULL DEFAULT 0,
               seq BIGINT UNSIGNED NOT NULL DEFAULT 0,
               updated_gmt DATETIME NOT NULL DEFAULT '2000-01-01 00:00:00'
             ) ENGINE=InnoDB COMMENT='strata-syncer: last comment queue position applied'"
        ))
        .await?;
        c.exec_drop(
            format!("INSERT IGNORE INTO {t} (queue, epoch, seq) VALUES (?, 0, 0)"),
            params(vec![self.queue.clone().into()]),
        )
        .await?;
        let row: Option<(u64, u64)> = c
            .exec_first(
                format!("SELECT epoch, seq FROM {t} WHERE queue = ?"),
                params(vec![self.queue.clone().into()]),
            )
            .await?;
        let (epoch, seq) = row.unwrap_or((0, 0));
        Ok(Cursor { epoch, seq })
    }

    /// Moves the cursor from `from` to `to` (a new queue epoch, after a memcached restart):
    /// false when the cursor in MySQL is no longer at `from` (another syncer moved it), and
    /// then nothing changed.
    pub async fn move_cursor(&self, from: Cursor, to: Cursor) -> Result<bool, StoreError> {
        if from == to {
            return Ok(true);
        }
        let mut c = self.conn().await?;
        c.exec_drop(
            format!(
                "UPDATE {} SET epoch = ?, seq = ?, updated_gmt = UTC_TIMESTAMP() \
                 WHERE queue = ? AND epoch = ? AND seq = ?",
                self.t("strata_syncer")
            ),
            params(vec![
                to.epoch.into(),
                to.seq.into(),
                self.queue.clone().into(),
                from.epoch.into(),
                from.seq.into(),
            ]),
        )
        .await?;
        Ok(c.affected_rows() == 1)
    }

    /// The site's options.
    pub async fn options(&self) -> Result<Options, StoreError> {
        let mut c = self.conn().await?;
        let rows: Vec<(String, String)> = c.query(options_sql(&self.t("options"))).await?;
        Ok(Options::from_rows(&rows.into_iter().collect()))
    }

    /// Closes the pool.
    pub async fn close(self) {
        if let Some(pool) = self.pool.into_inner() {
            let _ = pool.disconnect().await;
        }
    }

    /// Seeds the flood index inside the batch's transaction when it has none (the column
    /// collation, the highest id, the last hour's rows); later batches only read the rows
    /// added since ([`flood_refresh_sql`]).
    async fn seed_flood(&self, tx: &mut mysql_async::Conn, state: &mut FloodState) -> Result<(), StoreError> {
        let now = Instant::now();
        if state.index.is_some() || state.disabled_until.is_some_and(|t| now < t) {
            return Ok(());
        }
        // Off until the seed succeeds: a seed that fails or outlives the batch's deadline is
        // not retried on every batch.
        state.disabled_until = Some(now + FLOOD_INDEX_PAUSE);
        let comments = self.t("comments");
        let collations: Vec<String> = tx
            .exec(
                "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME = ? AND COLUMN_NAME IN ('comment_author_IP', 'comment_author_email')",
                params(vec![format!("{}comments", self.prefix).into()]),
            )
            .await?;
        let compare: Vec<Option<Compare>> = collations.iter().map(|c| Compare::for_collation(c)).collect();
        let Some(Some(compare)) = compare
            .first()
            .copied()
            .filter(|_| compare.len() == 2 && compare[0] == compare[1])
        else {
            tracing::info!(
                ?collations,
                "flood check: unknown collation; every comment is checked by query"
            );
            return Ok(());
        };
        let max_id: Option<u64> = tx
            .query_first(format!("SELECT COALESCE(MAX(comment_ID), 0) FROM {comments}"))
            .await?;
        let horizon = FloodIndex::seed_horizon(unix_now());
        let rows: Vec<FloodRow> = tx
            .exec(
                format!("{} WHERE comment_date_gmt >= ?", self.flood_select()),
                params(vec![batch::mysql_date(horizon).into()]),
            )
            .await?;
        state.disabled_until = None;
        state.index = Some(FloodIndex::new(compare, horizon, max_id.unwrap_or(0)));
        absorb_flood_rows(state, rows);
        Ok(())
    }

    fn flood_select(&self) -> String {
        format!(
            "SELECT comment_ID, comment_author_IP, comment_author_email, CAST(comment_date_gmt AS CHAR) FROM {}",
            self.t("comments")
        )
    }

    /// The query for the rows added since the flood index last looked (above the highest id
    /// seen, or skipped over before); `None` without an index.
    fn flood_refresh_sql(&self, state: &FloodState) -> Option<String> {
        let index = state.index.as_ref()?;
        let (clause, ids) = index.refresh_sql();
        let mut ids = ids.into_iter();
        let clause: String = clause
            .split('?')
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part.to_string()
                } else {
                    format!("{}{part}", ids.next().unwrap_or(0))
                }
            })
            .collect();
        Some(format!("{} WHERE {clause}", self.flood_select()))
    }

    /// The query for the posts the batch comments on; `None` when it comments on none.
    fn posts_sql(&self, ids: &BTreeSet<u64>) -> Option<String> {
        (!ids.is_empty()).then(|| {
            format!(
                "SELECT ID, post_type, post_status, comment_status, post_password <> '', \
                 CAST(post_date_gmt AS CHAR), post_parent FROM {} WHERE ID IN ({})",
                self.t("posts"),
                ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
            )
        })
    }

    /// The posts of `rows`, statuses resolved as `get_post_status()` does (an attachment
    /// inherits its parent's, read here when needed).
    async fn posts(&self, tx: &mut mysql_async::Conn, rows: Vec<PostRow>) -> Result<HashMap<u64, Post>, StoreError> {
        let mut out: HashMap<u64, (Post, u64)> = HashMap::new();
        let mut parents_needed = BTreeSet::new();
        for (id, post_type, status, comment_status, has_password, date, parent) in rows {
            if post_type == "attachment" && status == "inherit" && parent > 0 {
                parents_needed.insert(parent);
            }
            out.insert(
                id,
                (
                    Post {
                        id,
                        post_type,
                        status,
                        comment_status,
                        has_password: has_password != 0,
                        date_gmt: mysql_ts(&date),
                    },
                    parent,
                ),
            );
        }
        let mut parent_status = HashMap::new();
        if let Some(sql) = self.posts_sql(&parents_needed) {
            let rows: Vec<PostRow> = tx.query(sql).await?;
            for (id, _, status, ..) in rows {
                parent_status.insert(id, status);
            }
        }
        Ok(out
            .into_iter()
            .map(|(id, (mut post, parent))| {
                if post.post_type == "attachment" && post.status == "inherit" {
                    post.status = if parent == 0 {
                        "publish".to_string()
                    } else {
                        parent_status
                            .get(&parent)
                            .cloned()
                            .unwrap_or_else(|| "publish".to_string())
                    };
                }
                (id, post)
            })
            .collect())
    }

    /// Applies `slots` (consecutive positions after `expected`) in one transaction: every
    /// record judged by WordPress's rules in order, accepted ones inserted, `comment_count`
    /// updated, the cursor moved past the last slot. Nothing is committed on error.
    ///
    /// The batch costs a fixed number of round trips whatever its size (three once the flood
    /// index is seeded: begin with the reads; the candidates with the checks; the inserts
    /// with the updates and commit; two when the batch is judged ahead, its candidates and
    /// checks sent with the reads, see [`Basis`]): the checks that need the database are
    /// asked for all records at once (see [`batch`]), and the accepted comments go in with
    /// one multi-row INSERT. On an error the transaction is rolled back (or its connection
    /// closed).
    pub async fn apply(
        &self,
        expected: Cursor,
        epoch: u64,
        slots: Vec<(u64, Slot)>,
        judge: Judge,
    ) -> Result<Applied, StoreError> {
        let mut conn = self.conn().await?;
        let setup = self.setup(&mut conn).await?;
        let conn_id = conn.id();
        let mut tx = OpenTx(Some(conn));
        let result = match tx.conn() {
            Some(conn) => self.apply_on(conn, &setup, expected, epoch, slots, judge).await,
            None => Err(StoreError::Schema("no connection".into())),
        };
        match &result {
            // Committed by its last statement.
            Ok(_) => tx.ended(),
            Err(_) => {
                if let Some(conn) = tx.conn() {
                    if conn.query_drop("ROLLBACK").await.is_ok() {
                        tx.ended();
                    }
                }
                // The scratch tables are made again next time, the collations read again
                // (the tables may have changed).
                self.scratch_conns.lock().remove(&conn_id);
                *self.setup.lock() = None;
            }
        }
        result
    }

    async fn apply_on(
        &self,
        conn: &mut Conn,
        setup: &Setup,
        expected: Cursor,
        epoch: u64,
        slots: Vec<(u64, Slot)>,
        judge: Judge,
    ) -> Result<Applied, StoreError> {
        self.prepare(conn, setup).await?;
        let tx = conn;
        let mut flood = self.flood.lock().await;
        (flood.by_index, flood.by_query) = (0, 0);
        let flood_on = !judge.flood_interval.is_zero();
        // `START TRANSACTION` goes with the reads, unless seeding the flood index reads first.
        let begin_in_reads = !(flood_on && flood.index.is_none());
        if !begin_in_reads {
            tx.query_drop(BEGIN).await?;
            self.seed_flood(tx, &mut flood).await?;
        }
        let flood_sql = if flood_on { self.flood_refresh_sql(&flood) } else { None };
        let reads = self.reads(&slots, begin_in_reads, flood_sql);
        let guess = self.judge_ahead(setup, &reads, &slots, judge, &mut flood);
        let (rows, asked_ahead) = read_batch(tx, &reads, guess.as_ref()).await?;
        if rows.cursor != expected {
            return Err(StoreError::CursorMoved(rows.cursor));
        }
        let options = Options::from_rows(&rows.options.into_iter().collect());
        let posts = self.posts(tx, rows.posts).await?;
        let parents: HashMap<u64, String> = rows.parents.into_iter().collect();
        let foreign_rows = !rows.flood.is_empty();
        if reads.flood {
            absorb_flood_rows(&mut flood, rows.flood);
        }
        let read = Basis::read(options, &reads.post_ids, posts, &reads.parent_ids, parents);
        let guessed_right = learn_basis(&mut self.basis.lock(), &read, foreign_rows);

        // The checks that need no database; the rest become candidates.
        let ctx = read.context(judge);
        let judged_ahead = guess.as_ref().map(|_| guessed_right);
        let (judged, asked) = match kept_judgement(guess, guessed_right, asked_ahead) {
            Some(kept) => kept,
            None => {
                (flood.by_index, flood.by_query) = (0, 0);
                (judge_slots(&slots, &ctx, &mut flood), Ahead::Unasked)
            }
        };

        let cursor = batch_cursor(expected, epoch, &slots);
        // The cursor's update ends the batch, and `COMMIT` rides with it.
        let cursor_sql = self.cursor_sql(cursor);
        let (saved, pairs_asked) = if judged.pending.is_empty() {
            tx.query_drop(cursor_sql).await?;
            (Vec::new(), None)
        } else {
            let (saved, asked) = self
                .judge_and_insert(tx, setup, &judged, &ctx, asked, &cursor_sql)
                .await?;
            (saved, Some(asked))
        };
        Ok(Applied {
            outcomes: outcomes_of(judged, slots, saved, &mut flood),
            cursor,
            options: read.options,
            flood_checks: (flood.by_index, flood.by_query),
            pairs_asked,
            judged_ahead,
        })
    }

    /// Makes the batch's temporary tables on a connection that has none yet (after asking it
    /// to estimate `IN` lists from statistics, see [`ESTIMATE_FROM_STATISTICS`]).
    async fn prepare(&self, conn: &mut Conn, setup: &Setup) -> Result<(), StoreError> {
        if !self.scratch_conns.lock().contains(&conn.id()) {
            if let Err(e) = conn.query_drop(ESTIMATE_FROM_STATISTICS).await {
                tracing::debug!(error = %e, "the server keeps its index dives for IN lists");
            }
            conn.query_drop(setup.scratch.as_str()).await?;
            self.scratch_conns.lock().insert(conn.id());
        }
        Ok(())
    }

    /// What a batch reads first, in one round trip: the cursor (locked), the options, the
    /// posts and the parents' statuses its records name, and `flood_sql` (the rows new to
    /// the flood index); `START TRANSACTION` first when `begin`.
    fn reads(&self, slots: &[(u64, Slot)], begin: bool, flood_sql: Option<String>) -> Reads {
        let records = || {
            slots.iter().filter_map(|(_, s)| match s {
                Slot::Record(r) => Some(r),
                Slot::Skipped(_) => None,
            })
        };
        let post_ids: BTreeSet<u64> = records().map(|r| r.post_id).collect();
        let parent_ids: BTreeSet<u64> = records().map(|r| r.parent).filter(|p| *p > 0).collect();
        let mut statements = Vec::new();
        if begin {
            statements.push(BEGIN.to_string());
        }
        statements.extend([
            format!(
                "SELECT epoch, seq FROM {} WHERE queue = {} FOR UPDATE",
                self.t("strata_syncer"),
                batch::lit(&self.queue)
            ),
            options_sql(&self.t("options")),
        ]);
        let posts_sql = self.posts_sql(&post_ids);
        let parents_sql = (!parent_ids.is_empty()).then(|| {
            format!(
                "SELECT comment_ID, comment_approved FROM {} WHERE comment_ID IN ({})",
                self.t("comments"),
                parent_ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
            )
        });
        let (posts, parents, flood) = (posts_sql.is_some(), parents_sql.is_some(), flood_sql.is_some());
        statements.extend(posts_sql);
        statements.extend(parents_sql);
        statements.extend(flood_sql);
        Reads {
            post_ids,
            parent_ids,
            statements,
            begin,
            posts,
            parents,
            flood,
        }
    }

    /// The batch judged ahead against what earlier batches read (a site's options and posts
    /// rarely change), with its questions when they can ride with the reads: one round trip
    /// less. It stands only if the reads find exactly what it was judged against (see
    /// [`learn_basis`]). `None` when what earlier batches read does not cover the batch.
    fn judge_ahead(
        &self,
        setup: &Setup,
        reads: &Reads,
        slots: &[(u64, Slot)],
        judge: Judge,
        flood: &mut FloodState,
    ) -> Option<Guess> {
        self.basis
            .lock()
            .as_ref()
            .filter(|b| b.covers(&reads.post_ids, &reads.parent_ids))
            .map(|b| {
                let ctx = b.context(judge);
                let judged = judge_slots(slots, &ctx, flood);
                let plan = (!judged.pending.is_empty())
                    .then(|| self.ask_plan(setup, &judged.pending, &judged.candidates, &ctx, true))
                    .filter(|plan| plan.ahead.is_empty());
                (judged, plan)
            })
    }

    /// The statement that moves the cursor to `cursor` and commits the batch.
    fn cursor_sql(&self, cursor: Cursor) -> String {
        format!(
            "UPDATE {} SET epoch = {}, seq = {}, updated_gmt = UTC_TIMESTAMP() WHERE queue = {};\nCOMMIT",
            self.t("strata_syncer"),
            cursor.epoch,
            cursor.seq,
            batch::lit(&self.queue)
        )
    }

    /// `comment_count` of the posts raised by the approved comments the batch saves (post
    /// id → how many). WordPress recounts the post's approved comments after each one,
    /// which reads every comment of the post; the batch adds what it saved instead, and
    /// [`Store::recount`] recounts as WordPress does once the queue is empty.
    fn count_sql<N: std::fmt::Display>(&self, added: &BTreeMap<u64, N>) -> Option<String> {
        if added.is_empty() {
            return None;
        }
        let cases: String = added.iter().map(|(post, n)| format!(" WHEN {post} THEN {n}")).collect();
        Some(format!(
            "UPDATE {} SET comment_count = comment_count + CASE ID{cases} ELSE 0 END WHERE ID IN ({})",
            self.t("posts"),
            added.keys().map(u64::to_string).collect::<Vec<_>>().join(","),
        ))
    }

    /// What the pages of `posts` show of their comments, for page patches: each post's
    /// `comment_count` and its newest approved top-level comments (the ones in `exclude`,
    /// just committed, left out), newest first, each with whether approved replies hang
    /// under it.
    pub async fn patch_context(
        &self,
        posts: &BTreeSet<u64>,
        exclude: &[u64],
    ) -> Result<BTreeMap<u64, crate::patches::Context>, StoreError> {
        use crate::patches::{Context, Row};
        let mut out = BTreeMap::new();
        if posts.is_empty() {
            return Ok(out);
        }
        let ids = |s: &mut dyn Iterator<Item = u64>| s.map(|n| n.to_string()).collect::<Vec<_>>().join(",");
        let mut c = self.conn().await?;
        let counts: Vec<(u64, u64)> = c
            .query(format!(
                "SELECT ID, comment_count FROM {} WHERE ID IN ({})",
                self.t("posts"),
                ids(&mut posts.iter().copied())
            ))
            .await?;
        let skip = if exclude.is_empty() {
            String::new()
        } else {
            format!(" AND c.comment_ID NOT IN ({})", ids(&mut exclude.iter().copied()))
        };
        for (post, count) in counts {
            type Fields = (u64, String, String, String, String, String, u8);
            let rows: Vec<Fields> = c
                .query(format!(
                    "SELECT c.comment_ID, c.comment_author, c.comment_author_email, c.comment_author_url, \
                     DATE_FORMAT(c.comment_date, '%Y-%m-%d %H:%i:%s'), DATE_FORMAT(c.comment_date_gmt, '%Y-%m-%d %H:%i:%s'), \
                     EXISTS (SELECT 1 FROM {comments} r WHERE r.comment_parent = c.comment_ID AND r.comment_approved = '1') \
                     FROM {comments} c WHERE c.comment_post_ID = {post} AND c.comment_approved = '1' \
                     AND c.comment_parent = 0{skip} ORDER BY c.comment_date_gmt DESC, c.comment_ID DESC LIMIT 8",
                    comments = self.t("comments"),
                ))
                .await?;
            let rows = rows
                .into_iter()
                .map(|(id, author, email, url, date, date_gmt, replies)| Row {
                    id,
                    parent: 0,
                    author,
                    email,
                    url,
                    date,
                    date_gmt,
                    replies: replies != 0,
                })
                .collect();
            out.insert(post, Context { count, newest: rows });
        }
        Ok(out)
    }

    /// The newest `limit` comments a latest-comments block lists (approved, on published
    /// posts; from 6.9 on, notes excluded), newest first (`comment_date_gmt DESC`, as the
    /// block orders them, then `comment_ID DESC`: the block leaves comments of the same second
    /// in MySQL's order), each with its post's type and whether the post has a password, for
    /// page patches.
    ///
    /// Errors: MySQL failed.
    pub async fn newest_comments(
        &self,
        limit: usize,
        version: WpVersion,
    ) -> Result<Vec<crate::patches::Listed>, StoreError> {
        let note = if version >= (6, 9) {
            " AND c.comment_type != 'note'"
        } else {
            ""
        };
        let mut c = self.conn().await?;
        type Fields = (u64, u64, String, String, String, u64, String, String, String, u8);
        let rows: Vec<Fields> = c
            .query(format!(
                "SELECT c.comment_ID, c.comment_post_ID, c.comment_author, c.comment_author_email, \
                 c.comment_author_url, c.user_id, DATE_FORMAT(c.comment_date, '%Y-%m-%d %H:%i:%s'), \
                 DATE_FORMAT(c.comment_date_gmt, '%Y-%m-%d %H:%i:%s'), p.post_type, p.post_password != '' \
                 FROM {comments} c JOIN {posts} p ON p.ID = c.comment_post_ID \
                 WHERE c.comment_approved = '1' AND p.post_status = 'publish'{note} \
                 ORDER BY c.comment_date_gmt DESC, c.comment_ID DESC LIMIT {limit}",
                comments = self.t("comments"),
                posts = self.t("posts"),
            ))
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, post, author, email, url, user, date, date_gmt, post_type, password)| crate::patches::Listed {
                    row: crate::patches::Row {
                        id,
                        parent: 0,
                        author,
                        email,
                        url,
                        date,
                        date_gmt,
                        replies: false,
                    },
                    post,
                    user,
                    post_type,
                    password: password != 0,
                },
            )
            .collect())
    }

    /// Brings `comment_count` of `posts` to what `wp_update_comment_count_now` counts (the
    /// approved comments; from 6.9 on, notes excluded) without a lock held while counting:
    /// one statement reads, from one snapshot, each post's stored count and its approved
    /// comments, and only a post whose count drifted gets the difference added. Batches
    /// committed in between raise both by the same amount, so the difference stays right;
    /// a post nobody changed behind the syncer's back is not written at all.
    ///
    /// Returns how many posts were repaired. Errors: MySQL failed (the posts stay to recount).
    pub async fn recount(&self, posts: &BTreeSet<u64>, version: WpVersion) -> Result<usize, StoreError> {
        if posts.is_empty() {
            return Ok(0);
        }
        let note = if version >= (6, 9) {
            " AND c.comment_type != 'note'"
        } else {
            ""
        };
        let mut c = self.conn().await?;
        let rows: Vec<(u64, i64, i64)> = c
            .query(format!(
                "SELECT p.ID, p.comment_count, (SELECT COUNT(*) FROM {comments} c \
                 WHERE c.comment_post_ID = p.ID AND c.comment_approved = '1'{note}) FROM {posts_table} p \
                 WHERE p.ID IN ({ids})",
                posts_table = self.t("posts"),
                comments = self.t("comments"),
                ids = posts.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
            ))
            .await?;
        let drift: BTreeMap<u64, i64> = rows
            .into_iter()
            .filter(|(_, stored, counted)| stored != counted)
            .map(|(post, stored, counted)| (post, counted - stored))
            .collect();
        if let Some(sql) = self.count_sql(&drift) {
            c.query_drop(sql).await?;
        }
        Ok(drift.len())
    }

    /// What a batch needs to know about the tables once: the collations its checks compare
    /// with, and whether one multi-row INSERT numbers its rows consecutively.
    async fn setup(&self, conn: &mut mysql_async::Conn) -> Result<Arc<Setup>, StoreError> {
        if let Some(s) = self.setup.lock().clone() {
            return Ok(s);
        }
        let rows: Vec<(String, String, Option<String>, Option<String>)> = conn
            .exec(
                "SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND ((TABLE_NAME = ? AND COLUMN_NAME IN \
                 ('comment_author', 'comment_author_email', 'comment_author_IP', 'comment_content')) \
                 OR (TABLE_NAME = ? AND COLUMN_NAME = 'user_email'))",
                params(vec![
                    format!("{}comments", self.prefix).into(),
                    format!("{}users", self.prefix).into(),
                ]),
            )
            .await?;
        let column = |name: &str| {
            rows.iter().find_map(|(_, c, cs, coll)| match (cs, coll) {
                (Some(charset), Some(collation)) if c.eq_ignore_ascii_case(name) => Some(TextColumn {
                    charset: charset.clone(),
                    collation: collation.clone(),
                }),
                _ => None,
            })
        };
        let collations = match (
            column("comment_author"),
            column("comment_author_email"),
            column("comment_author_IP"),
            column("comment_content"),
            column("user_email"),
        ) {
            (Some(author), Some(email), Some(ip), Some(content), Some(user_email)) => Collations {
                author,
                email,
                ip,
                content,
                user_email,
            },
            _ => {
                return Err(StoreError::Schema(
                    "the comments and users tables lack text columns WordPress has".into(),
                ))
            }
        };
        let scratch = batch::scratch_sql(&collations).ok_or_else(|| {
            StoreError::Schema(format!("unexpected character set or collation names: {collations:?}"))
        })?;
        let (lock_mode, increment): (Option<u64>, Option<u64>) = conn
            .query_first("SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment")
            .await?
            .unwrap_or((None, None));
        // Lock modes 0 and 1 number a multi-row INSERT's rows consecutively (by the
        // increment); mode 2 may interleave them with other writers, so rows go one by one.
        let multi_row = lock_mode.is_some_and(|m| m <= 1);
        if !multi_row {
            tracing::info!(
                ?lock_mode,
                "innodb_autoinc_lock_mode is not 0 or 1: comments are inserted one statement each"
            );
        }
        let email_index: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME = ? AND INDEX_NAME = 'comment_author_email' AND SEQ_IN_INDEX = 1 \
                 AND COLUMN_NAME = 'comment_author_email'",
                params(vec![format!("{}comments", self.prefix).into()]),
            )
            .await?;
        let folds = folds_agree(conn, &collations).await;
        let setup = Arc::new(Setup {
            scratch,
            multi_row,
            increment: increment.unwrap_or(1).max(1),
            email_index: email_index.unwrap_or(0) > 0,
            folds,
        });
        *self.setup.lock() = Some(setup.clone());
        Ok(setup)
    }

    /// Asks the database about every candidate at once (unless `asked` already), decides
    /// them in order, inserts the accepted ones and runs `tail` (the cursor's update) with `comment_count`'s: for each
    /// candidate, its `(comment_ID, comment_approved)` or why it was refused; and whether
    /// the pairs were asked of MySQL.
    async fn judge_and_insert(
        &self,
        tx: &mut mysql_async::Conn,
        setup: &Setup,
        judged: &Judged,
        ctx: &Context<'_>,
        asked: Ahead,
        tail: &str,
    ) -> Result<(Vec<Saved>, bool), StoreError> {
        let (pending, candidates) = (&judged.pending[..], &judged.candidates[..]);
        let Asked {
            facts,
            pairs,
            pairs_asked,
        } = match asked {
            Ahead::Answered(asked) => asked,
            Ahead::Unasked => self.ask(tx, setup, pending, candidates, ctx, true).await?,
            Ahead::PossibleDuplicate => self.ask(tx, setup, pending, candidates, ctx, false).await?,
        };
        let rules = batch::Rules {
            options: ctx.options,
            version: ctx.judge.version,
            flood_interval: i64::try_from(ctx.judge.flood_interval.as_secs()).unwrap_or(i64::MAX),
        };
        let mut decisions = batch::resolve(candidates, &facts, &pairs, rules, &|_| true);
        let mut saved: Vec<Option<u64>> = vec![None; pending.len()];
        let (from, tail_done) = if setup.multi_row {
            self.insert_together(tx, setup, judged, &decisions, &mut saved, tail)
                .await?
        } else {
            (0, false)
        };
        for j in from..pending.len() {
            let is_saved = |i: usize| saved[i].is_some();
            decisions[j] = batch::resolve(&candidates[..=j], &facts, &pairs, rules, &is_saved)
                .pop()
                .unwrap_or(Decision::Refuse(rules::SAVE_FAILED));
            if let Decision::Save(approved) = decisions[j] {
                saved[j] = self.insert_one(tx, &pending[j], &candidates[j], approved).await?;
            }
        }
        if !tail_done {
            let counts = self.count_sql(&approved_posts(pending, &decisions, &saved, false));
            let text: Vec<&str> = counts.iter().map(String::as_str).chain([tail]).collect();
            tx.query_drop(text.join(";\n")).await?;
        }
        Ok((saved_results(decisions, &saved), pairs_asked))
    }

    /// The fast path of [`Store::judge_and_insert`]: every accepted comment in multi-row
    /// INSERTs, the last one sent with the updates (`comment_count`'s, then `tail`), each
    /// saved row's id noted in `saved`. A statement MySQL refuses (a value a column cannot
    /// hold) inserts nothing and stops the ones after it; from its first row on, rows go one
    /// by one so the refused one is found and the ones after it judged without it.
    ///
    /// Returns the candidate from which on rows go one by one (all of them done: their
    /// number), and whether `tail` ran.
    async fn insert_together(
        &self,
        tx: &mut mysql_async::Conn,
        setup: &Setup,
        judged: &Judged,
        decisions: &[Decision],
        saved: &mut [Option<u64>],
        tail: &str,
    ) -> Result<(usize, bool), StoreError> {
        let (pending, candidates) = (&judged.pending[..], &judged.candidates[..]);
        let accepted = accepted(decisions);
        let rows = accepted
            .iter()
            .map(|(j, approved)| comment_row(&pending[*j], &candidates[*j], approved));
        let chunks = batch::chunked(&self.insert_head(), rows, STATEMENT_BYTES);
        let count = chunks.len();
        let mut done = 0;
        for (i, (mut statement, n)) in chunks.into_iter().enumerate() {
            let last = i + 1 == count;
            if last {
                let counts = self.count_sql(&approved_posts(pending, decisions, saved, true));
                for extra in counts.iter().map(String::as_str).chain([tail]) {
                    statement.push_str(";\n");
                    statement.push_str(extra);
                }
            }
            match tx.query_iter(statement).await {
                Ok(r) => {
                    let first = r.last_insert_id().unwrap_or(0);
                    r.drop_result().await?;
                    for (k, (j, _)) in accepted[done..done + n].iter().enumerate() {
                        saved[*j] = Some(first + k as u64 * setup.increment);
                    }
                    done += n;
                    if last {
                        return Ok((pending.len(), true));
                    }
                }
                Err(mysql_async::Error::Server(e)) if refused_row(&e) => {
                    tracing::warn!(error = %e, "MySQL refused a batch of comments; inserting them one by one");
                    return Ok((accepted.get(done).map_or(pending.len(), |(j, _)| *j), false));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok((pending.len(), false))
    }

    /// Inserts one comment; its `comment_ID`, or `None` when the server refused the row
    /// (e.g. a value the column cannot hold): WordPress answers 500 and saves nothing, and
    /// the batch goes on.
    async fn insert_one(
        &self,
        tx: &mut mysql_async::Conn,
        p: &Pending,
        c: &Candidate,
        approved: &str,
    ) -> Result<Option<u64>, StoreError> {
        let statement = format!("{} {}", self.insert_head(), comment_row(p, c, approved));
        match tx.query_drop(statement).await {
            Ok(()) => Ok(tx.last_insert_id()),
            Err(mysql_async::Error::Server(e)) if refused_row(&e) => {
                tracing::warn!(seq = p.seq, error = %e, "MySQL refused a comment row");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Fills the temporary tables with the candidates and asks the questions of [`batch`],
    /// in one round trip when the candidates fit in one statement's size. With `direct`,
    /// asks first without the temporary tables when that can answer ([`Store::ask_plan`]).
    async fn ask(
        &self,
        tx: &mut mysql_async::Conn,
        setup: &Setup,
        pending: &[Pending],
        candidates: &[Candidate],
        ctx: &Context<'_>,
        direct: bool,
    ) -> Result<Asked, StoreError> {
        let mut direct = direct;
        loop {
            let plan = self.ask_plan(setup, pending, candidates, ctx, direct);
            for statement in &plan.ahead {
                tx.query_drop(statement.as_str()).await?;
            }
            let mut r = tx.query_iter(plan.text.as_str()).await?;
            let asked = read_asked(&mut r, &plan, pending.len()).await?;
            r.drop_result().await?;
            match asked {
                Some(asked) => return Ok(asked),
                // Some candidate may have a duplicate: which one, the probe table says.
                None if direct => direct = false,
                None => return Err(StoreError::Schema("the exact questions gave no answer".into())),
            }
        }
    }

    /// The statements of [`Store::ask`]; the pairs only when two candidates may relate
    /// ([`batch::pairs_possible`]).
    ///
    /// With `direct`, a batch whose only question is the duplicate one is asked it straight
    /// of the comments table ([`Store::direct_sql`]), without filling the probe table: the
    /// answer then only says whether some candidate may have a duplicate
    /// ([`read_asked`] gives `None`), and the batch is asked again without `direct`.
    fn ask_plan(
        &self,
        setup: &Setup,
        pending: &[Pending],
        candidates: &[Candidate],
        ctx: &Context<'_>,
        direct: bool,
    ) -> AskPlan {
        let (probes, stored) = batch_values(pending, candidates, ctx);
        let pairs = !setup.folds || batch::pairs_possible(&probes, &stored);
        if let Some(queries) = direct
            .then(|| self.direct_sql(setup, &probes))
            .flatten()
            .filter(|_| !pairs)
        {
            return AskPlan {
                ahead: Vec::new(),
                facts: vec![FactQuery::AnyDuplicate; queries.len()],
                text: queries.join(";\n"),
                writes: 0,
                pairs: false,
            };
        }
        let mut statements = vec![format!("DELETE FROM {}", batch::PROBE_TABLE)];
        statements.extend(probe_statements(&probes));
        if pairs {
            statements.push(format!("DELETE FROM {}", batch::ROWS_TABLE));
            statements.extend(stored_statements(&stored));
        }
        let mut plan = AskPlan {
            ahead: Vec::new(),
            text: String::new(),
            writes: 0,
            facts: Vec::new(),
            pairs,
        };
        for statement in statements {
            if plan.writes > 0 && plan.text.len() + statement.len() > STATEMENT_BYTES {
                plan.ahead.push(std::mem::take(&mut plan.text));
                plan.writes = 0;
            }
            if plan.writes > 0 {
                plan.text.push_str(";\n");
            }
            plan.text.push_str(&statement);
            plan.writes += 1;
        }
        for (kind, query) in self.facts_sql(setup, &probes) {
            plan.text.push_str(";\n");
            plan.text.push_str(&query);
            plan.facts.push(kind);
        }
        if pairs {
            plan.text.push_str(";\n");
            plan.text.push_str(&pairs_sql());
        }
        plan
    }

    /// `wp_allow_comment`'s duplicate question for every candidate at once, asked of the
    /// comments table with the candidates' values in the query: one query for the
    /// candidates with an e-mail (through the e-mail index), one for those without. Each
    /// returns a row when some candidate has a duplicate, without saying which.
    ///
    /// `None` when a candidate needs another question (the author's history, the flood
    /// query), which the probe table answers, or when the queries would not fit in one
    /// statement's size.
    fn direct_sql(&self, setup: &Setup, probes: &[batch::Probe<'_>]) -> Option<Vec<String>> {
        let other_questions = probes
            .iter()
            .any(|b| b.history.iter().any(Option::is_some) || b.flood.as_ref().is_some_and(|f| f.since.is_some()));
        if other_questions || probes.is_empty() {
            return None;
        }
        let c = self.t("comments");
        let hint = if setup.email_index {
            "FORCE INDEX (comment_author_email) "
        } else {
            ""
        };
        let list = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>().join(",");
        // The values WordPress's query compares, the e-mail only for those that have one.
        let tuples = |group: &[&batch::Probe<'_>], email: bool| {
            list(&mut group.iter().map(|b| {
                let email = if email {
                    format!("{},", batch::lit(b.email))
                } else {
                    String::new()
                };
                let (author, content) = (batch::lit(b.author), batch::lit(b.content));
                format!("({},{},{author},{email}{content})", b.post, b.parent)
            }))
        };
        let (with_email, without): (Vec<_>, Vec<_>) = probes.iter().partition(|b| !b.email.is_empty());
        let mut out = Vec::new();
        if !with_email.is_empty() {
            let emails: BTreeSet<&str> = with_email.iter().map(|b| b.email).collect();
            out.push(format!(
                "SELECT 1 FROM {c} c {hint}WHERE c.comment_author_email IN ({}) AND c.comment_approved != 'trash' \
                 AND (c.comment_post_ID, c.comment_parent, c.comment_author, c.comment_author_email, c.comment_content) \
                 IN ({}) LIMIT 1",
                list(&mut emails.into_iter().map(batch::lit)),
                tuples(&with_email, true)
            ));
        }
        if !without.is_empty() {
            let posts: BTreeSet<u64> = without.iter().map(|b| b.post).collect();
            out.push(format!(
                "SELECT 1 FROM {c} c WHERE c.comment_post_ID IN ({}) AND c.comment_approved != 'trash' \
                 AND (c.comment_post_ID, c.comment_parent, c.comment_author, c.comment_content) IN ({}) LIMIT 1",
                list(&mut posts.into_iter().map(|p| p.to_string())),
                tuples(&without, false)
            ));
        }
        (out.iter().map(String::len).sum::<usize>() <= STATEMENT_BYTES).then_some(out)
    }

    fn insert_head(&self) -> String {
        format!(
            "INSERT INTO {} (comment_post_ID, comment_author_IP, comment_author, comment_author_email, \
             comment_author_url, comment_date, comment_date_gmt, comment_content, comment_karma, comment_approved, \
             comment_agent, comment_type, comment_parent, user_id) VALUES",
            self.t("comments")
        )
    }

    /// The queries for what the table held before the batch (see [`Facts`]), only those
    /// some candidate needs: duplicates (by e-mail, or for candidates without one by
    /// author), then the author's earlier approved comments, then the latest comment from
    /// the same sender; each returns a row per candidate it found something for.
    fn facts_sql(&self, setup: &Setup, probes: &[batch::Probe<'_>]) -> Vec<(FactQuery, String)> {
        let c = self.t("comments");
        let u = self.t("users");
        let probe = batch::PROBE_TABLE;
        let mut out = Vec::new();
        // With the values correlated, MySQL cannot see that the e-mail index narrows the
        // duplicate query down far better than the post's (it would read every comment of
        // the post); WordPress's query, with constants, gets the e-mail index.
        let email_hint = if setup.email_index {
            "FORCE INDEX (comment_author_email) "
        } else {
            ""
        };
        let dupe = |hint: &str, email: &str, which: &str| {
            format!(
                "SELECT DISTINCT b.k FROM {probe} b JOIN {c} c {hint}ON c.comment_post_ID = b.post \
                 AND c.comment_parent = b.parent AND c.comment_approved != 'trash' AND c.comment_author = b.author \
                 {email}AND c.comment_content = b.content WHERE {which}"
            )
        };
        if probes.iter().any(|b| !b.email.is_empty()) {
            out.push((
                FactQuery::Duplicates,
                dupe(email_hint, "AND c.comment_author_email = b.email ", "b.email != ''"),
            ));
        }
        if probes.iter().any(|b| b.email.is_empty()) {
            out.push((FactQuery::Duplicates, dupe("", "", "b.email = ''")));
        }
        if probes.iter().any(|b| b.history.iter().any(Option::is_some)) {
            let history = |h: &str| {
                format!(
                    "CASE WHEN b.{h}_author IS NULL THEN NULL \
                     WHEN b.{h}_uid > 0 THEN EXISTS(SELECT 1 FROM {c} c WHERE c.user_id = b.{h}_uid AND c.comment_approved = '1') \
                     ELSE EXISTS(SELECT 1 FROM {c} c WHERE c.comment_author = b.{h}_author \
                     AND c.comment_author_email = b.{h}_email AND c.comment_approved = '1') END"
                )
            };
            out.push((
                FactQuery::History,
                format!(
                    "SELECT b.k, {h}, COALESCE(b.h_uid, 0), {fh}, COALESCE(b.fh_uid, 0) \
                     FROM (SELECT p.*, (SELECT u.ID FROM {u} u WHERE u.user_email = p.h_user LIMIT 1) AS h_uid, \
                     (SELECT u.ID FROM {u} u WHERE u.user_email = p.fh_user LIMIT 1) AS fh_uid FROM {probe} p \
                     WHERE p.h_author IS NOT NULL OR p.fh_author IS NOT NULL) b",
                    h = history("h"),
                    fh = history("fh"),
                ),
            ));
        }
        if probes
            .iter()
            .any(|b| b.flood.as_ref().is_some_and(|f| f.since.is_some()))
        {
            out.push((
                FactQuery::Flood,
                format!(
                    "SELECT b.k, (SELECT CAST(c.comment_date_gmt AS CHAR) FROM {c} c \
                     WHERE c.comment_date_gmt >= b.f_since AND (c.comment_author_IP = b.f_ip OR c.comment_author_email = b.f_email) \
                     ORDER BY c.comment_date_gmt DESC LIMIT 1) FROM {probe} b WHERE b.f_since IS NOT NULL"
                ),
            ));
        }
        out
    }
}

/// The candidates decided to be saved, with the `comment_approved` each gets, in order.
fn accepted(decisions: &[Decision]) -> Vec<(usize, &'static str)> {
    decisions
        .iter()
        .enumerate()
        .filter_map(|(j, d)| match d {
            Decision::Save(approved) => Some((j, *approved)),
            Decision::Refuse(_) => None,
        })
        .collect()
}

/// How much `comment_count` rises per post: by the approved comments saved (`saved`: the
/// ids of the rows inserted), or with `all` by those decided to be saved.
fn approved_posts(pending: &[Pending], decisions: &[Decision], saved: &[Option<u64>], all: bool) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for (j, d) in decisions.iter().enumerate() {
        if *d == Decision::Save("1") && (all || saved[j].is_some()) {
            *out.entry(pending[j].post_id).or_default() += 1;
        }
    }
    out
}

/// What became of each candidate: saved with its id and status, refused as decided, or
/// refused because its row was (decided to be saved, yet no row inserted).
fn saved_results(decisions: Vec<Decision>, saved: &[Option<u64>]) -> Vec<Saved> {
    decisions
        .into_iter()
        .enumerate()
        .map(|(j, d)| match (d, saved[j]) {
            (Decision::Save(approved), Some(id)) => Ok((id, approved)),
            (Decision::Save(_), None) => Err(rules::SAVE_FAILED),
            (Decision::Refuse(r), _) => Err(r),
        })
        .collect()
}

/// Whether [`batch::fold`] agrees with the collation of every column the pairs query
/// compares, asked of the server (a server that cannot answer: no).
async fn folds_agree(conn: &mut mysql_async::Conn, c: &Collations) -> bool {
    let mut checked: Vec<&TextColumn> = Vec::new();
    for column in [&c.author, &c.email, &c.ip, &c.content] {
        if checked.contains(&column) {
            continue;
        }
        let Some(sql) = batch::fold_check_sql(column) else {
            return false;
        };
        match conn.query::<(u8, u8), _>(sql).await {
            Ok(equal) if batch::fold_agrees(&equal) => checked.push(column),
            Ok(_) => {
                tracing::info!(
                    collation = column.collation,
                    "the collation finds characters equal that the syncer tells apart: MySQL compares every batch's comments"
                );
                return false;
            }
            Err(e) => {
                tracing::info!(error = %e, "cannot check the collations: MySQL compares every batch's comments");
                return false;
            }
        }
    }
    true
}

/// The statements that ask MySQL about a batch's candidates.
struct AskPlan {
    /// Statements filling the temporary tables that did not fit in `text`, sent first.
    ahead: Vec<String>,
    /// The last (or only) writes, then the questions.
    text: String,
    /// How many writes `text` begins with.
    writes: usize,
    /// The questions of `text`, in order.
    facts: Vec<FactQuery>,
    /// Whether `text` ends with the pairs question.
    pairs: bool,
}

/// Reads the answers to `plan.text` (the result sets from the current one on) for `n`
/// candidates.
///
/// `None` when a question of [`Store::direct_sql`] found that some candidate may have a
/// duplicate: the batch must then be asked which through the probe table.
async fn read_asked(
    r: &mut mysql_async::QueryResult<'_, '_, mysql_async::TextProtocol>,
    plan: &AskPlan,
    n: usize,
) -> Result<Option<Asked>, StoreError> {
    for _ in 0..plan.writes {
        let _: Vec<mysql_async::Row> = next_set(r).await?;
    }
    let mut fact_rows = FactRows::default();
    let mut inexact = false;
    for kind in &plan.facts {
        match kind {
            FactQuery::AnyDuplicate => inexact |= !next_set::<u64>(r).await?.is_empty(),
            FactQuery::Duplicates => fact_rows.duplicates.extend(next_set::<u64>(r).await?),
            FactQuery::History => fact_rows.history = next_set(r).await?,
            FactQuery::Flood => fact_rows.flood = next_set(r).await?,
        }
    }
    let pair_rows: Vec<(u64, u64, i64, i64, i64, i64)> = if plan.pairs { next_set(r).await? } else { Vec::new() };
    Ok((!inexact).then(|| Asked {
        facts: facts_of(fact_rows, n),
        pairs: pairs_of(pair_rows, n),
        pairs_asked: plan.pairs,
    }))
}

/// What a batch reads first (see [`Store::reads`]).
struct Reads {
    /// The posts its records comment on.
    post_ids: BTreeSet<u64>,
    /// The comments they answer.
    parent_ids: BTreeSet<u64>,
    /// The statements, in the order their answers come.
    statements: Vec<String>,
    /// `START TRANSACTION` leads them.
    begin: bool,
    /// The posts are read (some record names one).
    posts: bool,
    /// The parents are read (some record answers one).
    parents: bool,
    /// The rows new to the flood index are read.
    flood: bool,
}

/// What a batch's first reads found.
struct ReadRows {
    /// The cursor in MySQL.
    cursor: Cursor,
    options: Vec<(String, String)>,
    posts: Vec<PostRow>,
    /// `comment_ID` and `comment_approved` of the parents.
    parents: Vec<(u64, String)>,
    flood: Vec<FloodRow>,
}

/// A batch judged ahead of its reads, with the questions to send with them (`None`: they
/// do not fit in one statement, or it has no candidate).
type Guess = (Judged, Option<AskPlan>);

/// Sends a batch's first reads, with the questions of `guess` when it has them, and reads
/// their answers: the rows, and what the questions got (see [`read_asked`]).
async fn read_batch(
    tx: &mut Conn,
    reads: &Reads,
    guess: Option<&Guess>,
) -> Result<(ReadRows, Option<Option<Asked>>), StoreError> {
    let mut text = reads.statements.join(";\n");
    if let Some((_, Some(plan))) = guess {
        text.push_str(";\n");
        text.push_str(&plan.text);
    }
    let mut r = tx.query_iter(text).await?;
    if reads.begin {
        let _: Vec<mysql_async::Row> = next_set(&mut r).await?;
    }
    let cursor_rows: Vec<(u64, u64)> = next_set(&mut r).await?;
    let options: Vec<(String, String)> = next_set(&mut r).await?;
    let posts: Vec<PostRow> = if reads.posts {
        next_set(&mut r).await?
    } else {
        Vec::new()
    };
    let parents: Vec<(u64, String)> = if reads.parents {
        next_set(&mut r).await?
    } else {
        Vec::new()
    };
    let flood: Vec<FloodRow> = if reads.flood {
        next_set(&mut r).await?
    } else {
        Vec::new()
    };
    let asked_ahead = match guess {
        Some((judged, Some(plan))) => Some(read_asked(&mut r, plan, judged.pending.len()).await?),
        _ => None,
    };
    r.drop_result().await?;
    let (epoch, seq) = cursor_rows.first().copied().unwrap_or((0, 0));
    let rows = ReadRows {
        cursor: Cursor { epoch, seq },
        options,
        posts,
        parents,
        flood,
    };
    Ok((rows, asked_ahead))
}

/// What the questions asked with a batch's reads got.
enum Ahead {
    /// Their answers.
    Answered(Asked),
    /// Not asked (or judged on what the reads no longer find).
    Unasked,
    /// Asked without the temporary tables ([`Store::direct_sql`]), they found that some
    /// candidate may have a duplicate: which one, the temporary tables must tell.
    PossibleDuplicate,
}

/// The judgement made ahead of the reads, with what its questions got (`asked_ahead`, see
/// [`read_batch`]), when it stands (`guessed_right`); `None`: the batch is judged again.
fn kept_judgement(
    guess: Option<Guess>,
    guessed_right: bool,
    asked_ahead: Option<Option<Asked>>,
) -> Option<(Judged, Ahead)> {
    match guess {
        Some((judged, _)) if guessed_right => {
            let asked = match asked_ahead {
                Some(Some(asked)) => Ahead::Answered(asked),
                // A direct question found a possible duplicate: not asked directly again.
                Some(None) => Ahead::PossibleDuplicate,
                None => Ahead::Unasked,
            };
            Some((judged, asked))
        }
        _ => None,
    }
}

/// What MySQL said of a batch's candidates.
struct Asked {
    /// What the table held, per candidate.
    facts: Vec<Facts>,
    /// The earlier candidates each one relates to.
    pairs: Vec<Vec<Pair>>,
    /// Whether the pairs were asked (else none could exist).
    pairs_asked: bool,
}

/// The questions [`Store::facts_sql`] may ask, in the order they are asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FactQuery {
    /// The candidates that have a duplicate: `k`.
    Duplicates,
    /// Whether some candidate may have a duplicate ([`Store::direct_sql`]): a row if so.
    AnyDuplicate,
    /// `comment_previously_approved`'s answers: `k`, then per checked and filtered values
    /// the answer (NULL: not asked) and the user's id (0: none).
    History,
    /// The latest comment from the same address or e-mail: `k`, its date (NULL: none).
    Flood,
}

/// A row of the history query: `k`, then for the checked and the filtered values the
/// answer (NULL: not asked) and the user's id (0: none).
type HistoryRow = (u64, Option<i64>, u64, Option<i64>, u64);

/// What MySQL answered to [`Store::facts_sql`]'s queries.
#[derive(Debug, Default)]
struct FactRows {
    duplicates: Vec<u64>,
    history: Vec<HistoryRow>,
    flood: Vec<(u64, Option<String>)>,
}

/// A row of the posts query.
type PostRow = (u64, String, String, String, i64, String, u64);

/// A row of the flood index's queries: id, address, e-mail, date.
type FloodRow = (u64, String, String, String);

/// Candidate `k`'s facts, if `k` is one.
fn fact_of(facts: &mut [Facts], k: u64) -> Option<&mut Facts> {
    usize::try_from(k).ok().and_then(|k| facts.get_mut(k))
}

fn facts_of(rows: FactRows, n: usize) -> Vec<Facts> {
    let mut out = vec![Facts::default(); n];
    for k in rows.duplicates {
        if let Some(f) = fact_of(&mut out, k) {
            f.duplicate = true;
        }
    }
    for (k, h, h_uid, fh, fh_uid) in rows.history {
        if let Some(f) = fact_of(&mut out, k) {
            f.approved_before = [h.map(|v| v != 0), fh.map(|v| v != 0)];
            f.user = [h_uid > 0, fh_uid > 0];
        }
    }
    for (k, latest) in rows.flood {
        if let Some(f) = fact_of(&mut out, k) {
            f.flood_latest = latest.as_deref().and_then(mysql_ts);
        }
    }
    out
}

/// The query for which earlier candidates each candidate equals, under the tables'
/// collations.
fn pairs_sql() -> String {
    let dupe = "(e.post = b.post AND e.parent = b.parent AND e.author = b.author \
                AND (b.email = '' OR e.email = b.email) AND e.content = b.content)";
    let h = "(e.author = b.h_author AND e.email = b.h_email)";
    let fh = "(e.author = b.fh_author AND e.email = b.fh_email)";
    let f = "(e.ip = b.f_ip OR e.email = b.f_email)";
    format!(
        "SELECT b.k, e.k, COALESCE({dupe}, 0), COALESCE({h}, 0), COALESCE({fh}, 0), COALESCE({f}, 0) \
         FROM {probe} b JOIN {rows} e ON e.k < b.k WHERE {dupe} OR {h} OR {fh} OR {f}",
        probe = batch::PROBE_TABLE,
        rows = batch::ROWS_TABLE,
    )
}

fn pairs_of(rows: Vec<(u64, u64, i64, i64, i64, i64)>, n: usize) -> Vec<Vec<Pair>> {
    let mut out = vec![Vec::new(); n];
    for (later, earlier, d, h, fh, f) in rows {
        let (Ok(later), Ok(earlier)) = (usize::try_from(later), usize::try_from(earlier)) else {
            continue;
        };
        if let Some(list) = out.get_mut(later) {
            list.push(Pair {
                earlier,
                duplicate: d != 0,
                same_author: h != 0,
                same_author_filtered: fh != 0,
                same_sender: f != 0,
            });
        }
    }
    out
}

/// Reads the current result set of a multi-statement query and moves to the next.
async fn next_set<T: mysql_async::prelude::FromRow + Send + 'static>(
    r: &mut mysql_async::QueryResult<'_, '_, mysql_async::TextProtocol>,
) -> Result<Vec<T>, StoreError> {
    r.try_collect::<T>()
        .await?
        .into_iter()
        .collect::<Result<Vec<T>, _>>()
        .map_err(|e| StoreError::Schema(format!("a row of unexpected shape: {e}")))
}

/// Feeds rows new to the flood index (observed in id order) and prunes once a second.
fn absorb_flood_rows(state: &mut FloodState, rows: Vec<FloodRow>) {
    let now = Instant::now();
    let Some(index) = state.index.as_mut() else {
        return;
    };
    for (id, ip, email, date) in rows {
        if !index.observe(id, &ip, &email, mysql_ts(&date), now) {
            tracing::warn!(
                keys = index.len(),
                "flood check: the index outgrew its bound; every comment is checked by query for a while"
            );
            state.index = None;
            state.disabled_until = Some(now + FLOOD_INDEX_PAUSE);
            return;
        }
    }
    if state
        .pruned
        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
    {
        index.prune(unix_now(), now);
        state.pruned = Some(now);
    }
}

/// MySQL's deadlock and lock-wait errors: the whole transaction is retried, not a row.
const ER_LOCK_DEADLOCK: u16 = 1213;
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;

/// Whether a server error refuses the rows of a statement (WordPress's 500 for them), rather
/// than the transaction (retried whole).
fn refused_row(e: &mysql_async::ServerError) -> bool {
    e.code != ER_LOCK_DEADLOCK && e.code != ER_LOCK_WAIT_TIMEOUT
}

/// Sent once on each connection of the syncer: the optimizer estimates the rows of an
/// `IN (…)` list from the index statistics instead of two B-tree descents a value. The
/// plans of the batch's queries do not depend on the estimate (primary and unique keys, and
/// the direct duplicate question forces its index), but the descents of its list of
/// e-mails showed as a tenth of MariaDB's time. A server that does not know the variable
/// answers with an error, which is ignored.
const ESTIMATE_FROM_STATISTICS: &str = "SET SESSION eq_range_index_dive_limit = 1";

/// Begins a batch's transaction; sent with the batch's first reads, as `COMMIT` is sent with
/// its last writes, so a batch costs no round trip of its own for either.
const BEGIN: &str = "START TRANSACTION";

/// A pooled connection whose transaction was begun by a statement of the batch (not by the
/// driver, which would spend a round trip on it): dropped before [`OpenTx::ended`] (an
/// error whose `ROLLBACK` failed, or a batch past its deadline), the connection is closed,
/// so the server rolls the transaction back, instead of going back to the pool with it open.
struct OpenTx(Option<Conn>);

impl OpenTx {
    fn conn(&mut self) -> Option<&mut Conn> {
        self.0.as_mut()
    }

    /// The transaction is over (committed or rolled back): the connection may be reused.
    fn ended(&mut self) {
        self.0 = None;
    }
}

impl Drop for OpenTx {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        let _ = conn.disconnect().await;
                    });
                }
                // Without a runtime the connection cannot be closed cleanly; leaking it
                // keeps it out of the pool (the server rolls back when it times out).
                Err(_) => std::mem::forget(conn),
            }
        }
    }
}

/// Upper bound of one statement's size, well under any `max_allowed_packet` (1 MiB at least).
const STATEMENT_BYTES: usize = 512 * 1024;

/// What a batch needs to know once per database (see [`Store::setup`]).
#[derive(Debug)]
struct Setup {
    /// Creates and empties the temporary tables.
    scratch: String,
    /// One multi-row INSERT numbers its rows consecutively.
    multi_row: bool,
    /// `auto_increment_increment`.
    increment: u64,
    /// WordPress's `comment_author_email` index exists.
    email_index: bool,
    /// [`batch::fold`] agrees with the collations of the columns the pairs compare.
    folds: bool,
}

/// What every record of a batch is judged against.
struct Context<'a> {
    options: &'a Options,
    /// The batch's posts (`None`: no such post).
    posts: &'a HashMap<u64, Option<Post>>,
    /// The batch's parents' `comment_approved` (`None`: no such comment).
    parents: &'a HashMap<u64, Option<String>>,
    tz: site::SiteTz,
    home_host: String,
    judge: Judge,
}

/// What a batch is judged against besides its records: the options, and the posts and
/// parent comments it names, as read in its transaction.
///
/// The syncer keeps what earlier batches read and judges the next batch against it before
/// its own reads, sending that judgement's questions with them. It stands only when the
/// reads find the same (and the flood index learnt of no comment from another writer);
/// otherwise the batch is judged again and asked again in the same transaction, so the
/// outcome is always that of its own reads.
#[derive(Debug, Clone)]
struct Basis {
    options: Options,
    posts: HashMap<u64, Option<Post>>,
    parents: HashMap<u64, Option<String>>,
}

/// Most posts and parents a [`Basis`] remembers; beyond, it starts over from one batch.
const BASIS_KEEPS: usize = 4096;

impl Basis {
    /// What one batch read of `post_ids` and `parent_ids`.
    fn read(
        options: Options,
        post_ids: &BTreeSet<u64>,
        mut posts: HashMap<u64, Post>,
        parent_ids: &BTreeSet<u64>,
        parents: HashMap<u64, String>,
    ) -> Basis {
        Basis {
            options,
            posts: post_ids.iter().map(|id| (*id, posts.remove(id))).collect(),
            parents: parent_ids.iter().map(|id| (*id, parents.get(id).cloned())).collect(),
        }
    }

    /// Whether it knows every post and parent of a batch.
    fn covers(&self, post_ids: &BTreeSet<u64>, parent_ids: &BTreeSet<u64>) -> bool {
        post_ids.iter().all(|id| self.posts.contains_key(id))
            && parent_ids.iter().all(|id| self.parents.contains_key(id))
    }

    /// Whether a batch's reads found what it holds.
    fn agrees(&self, read: &Basis) -> bool {
        self.options == read.options
            && read.posts.iter().all(|(id, p)| self.posts.get(id) == Some(p))
            && read.parents.iter().all(|(id, c)| self.parents.get(id) == Some(c))
    }

    /// Takes in a batch's reads.
    fn learn(&mut self, read: &Basis) {
        if self.posts.len() + read.posts.len() > BASIS_KEEPS || self.parents.len() + read.parents.len() > BASIS_KEEPS {
            self.posts.clear();
            self.parents.clear();
        }
        self.options = read.options.clone();
        self.posts.extend(read.posts.iter().map(|(id, p)| (*id, p.clone())));
        self.parents.extend(read.parents.iter().map(|(id, c)| (*id, c.clone())));
    }

    fn context(&self, judge: Judge) -> Context<'_> {
        Context {
            options: &self.options,
            posts: &self.posts,
            parents: &self.parents,
            tz: self.options.timezone(),
            home_host: self.options.home_host(),
            judge,
        }
    }
}

/// Takes a batch's reads into what the next batch is judged ahead against; whether the
/// judgement made ahead of them stands: the reads found what it was made against, and the
/// flood index learnt of no comment from another writer (`foreign_rows`).
fn learn_basis(basis: &mut Option<Basis>, read: &Basis, foreign_rows: bool) -> bool {
    let agrees = basis.as_ref().is_some_and(|b| b.agrees(read));
    match basis.as_mut() {
        Some(b) => b.learn(read),
        None => *basis = Some(read.clone()),
    }
    agrees && !foreign_rows
}

/// What became of a candidate: its `(comment_ID, comment_approved)`, or why it was refused.
type Saved = Result<(u64, &'static str), Refusal>;

/// A batch after the checks that need no database.
struct Judged {
    /// Each position's outcome so far, in order (`None`: a candidate).
    outcomes: Vec<(u64, Option<Outcome>)>,
    pending: Vec<Pending>,
    candidates: Vec<Candidate>,
}

/// Runs [`prejudge`] over a batch's positions.
fn judge_slots(slots: &[(u64, Slot)], ctx: &Context<'_>, flood: &mut FloodState) -> Judged {
    let mut judged = Judged {
        outcomes: Vec::with_capacity(slots.len()),
        pending: Vec::new(),
        candidates: Vec::new(),
    };
    for (seq, slot) in slots {
        let outcome = match slot {
            Slot::Skipped(why) => Some(Outcome::Skipped(why)),
            Slot::Record(r) => match prejudge(r, ctx, flood) {
                Ok((p, c)) => {
                    judged.pending.push(Pending {
                        slot: judged.outcomes.len(),
                        ..p
                    });
                    judged.candidates.push(c);
                    None
                }
                Err(refusal) => Some(Outcome::Refused(refusal)),
            },
        };
        judged.outcomes.push((*seq, outcome));
    }
    judged
}

/// Where the cursor goes once a batch of `slots` after `expected` is applied: past its last
/// position, in `epoch`.
fn batch_cursor(expected: Cursor, epoch: u64, slots: &[(u64, Slot)]) -> Cursor {
    let last = slots.last().map_or(expected.seq, |(seq, _)| *seq);
    Cursor { epoch, seq: last }
}

/// Each position's outcome, in order: a candidate's from what became of it (`saved`, one
/// per candidate: its `(comment_ID, comment_approved)` or why it was refused), the others'
/// as [`judge_slots`] decided; each saved comment shown to the flood index.
fn outcomes_of(
    judged: Judged,
    slots: Vec<(u64, Slot)>,
    saved: Vec<Saved>,
    flood: &mut FloodState,
) -> Vec<(u64, Outcome)> {
    let Judged {
        mut outcomes,
        pending,
        candidates,
    } = judged;
    // Each record goes to its outcome; a candidate always came from one.
    let mut records: Vec<Option<Box<Record>>> = slots
        .into_iter()
        .map(|(_, slot)| match slot {
            Slot::Record(r) => Some(r),
            Slot::Skipped(_) => None,
        })
        .collect();
    for ((p, c), result) in pending.into_iter().zip(candidates).zip(saved) {
        let record = records.get_mut(p.slot).and_then(Option::take);
        let outcome = match (result, record) {
            (Err(refusal), _) => Outcome::Refused(refusal),
            (Ok(_), None) => continue,
            (Ok((id, approved)), Some(record)) => {
                if let Some(index) = flood.index.as_mut() {
                    if !index.observe(id, &c.filtered.ip, &c.filtered.email, Some(c.date_gmt), Instant::now()) {
                        // Outgrown: dropped now, rebuilt by the next batch's refresh.
                        flood.index = None;
                    }
                }
                Outcome::Inserted(Box::new(Inserted {
                    id,
                    approved,
                    filtered: c.filtered,
                    date_gmt: p.date_gmt,
                    record,
                }))
            }
        };
        outcomes[p.slot].1 = Some(outcome);
    }
    outcomes
        .into_iter()
        .map(|(seq, o)| (seq, o.unwrap_or(Outcome::Skipped("unjudged"))))
        .collect()
}

/// A record that passed the checks needing no database.
struct Pending {
    /// Its index among the batch's positions and outcomes (where its record stays).
    slot: usize,
    /// The record's position in the queue.
    seq: u64,
    /// `comment_post_ID`.
    post_id: u64,
    /// `comment_parent` as saved.
    parent: u64,
    /// `comment_date`.
    date: String,
    /// `comment_date_gmt`.
    date_gmt: String,
}

/// `wp_handle_comment_submission`'s and `wp_new_comment`'s checks that need no database
/// (the parent's status was read for the whole batch), and the values to check and store.
fn prejudge(r: &Record, ctx: &Context<'_>, flood: &mut FloodState) -> Result<(Pending, Candidate), Refusal> {
    let judge = ctx.judge;
    let now = i64::try_from(r.accepted_ms / 1000).unwrap_or(i64::MAX);
    let parent_status = (r.parent > 0)
        .then(|| ctx.parents.get(&r.parent).and_then(Option::as_deref))
        .flatten();
    if judge.version >= (6, 2) && r.parent > 0 && !rules::parent_is_approved(parent_status) {
        return Err(rules::UNAPPROVED_PARENT);
    }
    let submission = Submission {
        post_id: r.post_id,
        author: &r.author,
        email: &r.email,
        url: &r.url,
        content: &r.content,
    };
    rules::check_submission(
        submission,
        ctx.posts.get(&r.post_id).and_then(Option::as_ref),
        ctx.options,
        now,
    )?;
    let parent = rules::normalize_parent(r.parent, parent_status);
    let (date, date_gmt) = site::comment_dates(r.accepted_ms, ctx.tz);
    let raw = Raw {
        author: &r.author,
        email: &r.email,
        url: &r.url,
        content: &r.content,
        ip: &r.ip,
        agent: &r.agent,
    };
    let filtered = format::filter_comment(raw, &ctx.home_host);
    // Up to 6.6 WordPress filtered the comment before its checks; later versions check
    // the submitted values, then filter and check the approval again.
    let unfiltered = (judge.version >= (6, 7)).then(|| Filtered {
        author: r.author.clone(),
        email: r.email.clone(),
        url: r.url.clone(),
        content: r.content.clone(),
        ip: filtered.ip.clone(),
        agent: filtered.agent.clone(),
    });
    let date_ts = mysql_ts(&date_gmt).unwrap_or(now);
    let hour_ago = site::comment_dates(r.accepted_ms.saturating_sub(3_600_000), ctx.tz).1;
    let flood_since = mysql_ts(&hour_ago).unwrap_or(date_ts - 3600);
    let mut candidate = Candidate {
        filtered,
        raw: unfiltered,
        date_gmt: date_ts,
        flood_since,
        flood_ask: false,
    };
    if !judge.flood_interval.is_zero() {
        // The index answers "certainly not a flood" against what the table held before the
        // batch; anything else is the query's call. The batch's own comments are compared
        // by the batch's pair query.
        let email = addslashes(&candidate.checked().email);
        let interval = i64::try_from(judge.flood_interval.as_secs()).unwrap_or(i64::MAX);
        let certain = flood.index.as_ref().is_some_and(|index| {
            index.lookup(&candidate.filtered.ip, &email, flood_since, date_ts, interval) == Lookup::NotFlood
        });
        if certain {
            flood.by_index += 1;
        } else {
            flood.by_query += 1;
            candidate.flood_ask = true;
        }
    }
    let pending = Pending {
        slot: 0,
        seq: r.seq,
        post_id: r.post_id,
        parent,
        date,
        date_gmt,
    };
    Ok((pending, candidate))
}

/// The values each candidate is checked with and would be stored with (the rows of the
/// two temporary tables), in batch order.
fn batch_values<'a>(
    pending: &'a [Pending],
    candidates: &'a [Candidate],
    ctx: &Context<'_>,
) -> (Vec<batch::Probe<'a>>, Vec<batch::Stored<'a>>) {
    let history_wanted = ctx.options.comment_previously_approved;
    let flood = !ctx.judge.flood_interval.is_zero();
    pending
        .iter()
        .zip(candidates)
        .map(|(p, c)| {
            let checked = c.checked();
            // check_comment queries with the slashed author and e-mail (so a name with a
            // quote never matches, as in WordPress), and looks the user up by the unslashed
            // e-mail.
            let who = |f: &Filtered| {
                (history_wanted && !f.author.is_empty() && !f.email.is_empty()).then(|| batch::Who {
                    author: addslashes(&f.author),
                    email: addslashes(&f.email),
                    user_email: f.email.clone(),
                })
            };
            let probe = batch::Probe {
                post: p.post_id,
                parent: p.parent,
                author: &checked.author,
                email: &checked.email,
                content: &checked.content,
                history: [who(checked), c.raw.as_ref().and_then(|_| who(&c.filtered))],
                // wp_check_comment_flood gets the e-mail slashed.
                flood: flood.then(|| batch::Sender {
                    ip: c.filtered.ip.clone(),
                    email: addslashes(&checked.email),
                    since: c.flood_ask.then_some(c.flood_since),
                }),
            };
            let f = &c.filtered;
            let stored = batch::Stored {
                post: p.post_id,
                parent: p.parent,
                author: &f.author,
                email: &f.email,
                content: &f.content,
                ip: &f.ip,
            };
            (probe, stored)
        })
        .unzip()
}

/// The statements that fill the probe table.
fn probe_statements(probes: &[batch::Probe<'_>]) -> Vec<String> {
    let part = |w: &Option<batch::Who>| match w {
        Some(w) => format!(
            "{},{},{}",
            batch::lit(&w.author),
            batch::lit(&w.email),
            batch::lit(&w.user_email)
        ),
        None => "NULL,NULL,NULL".to_string(),
    };
    let rows = probes.iter().enumerate().map(|(k, b)| {
        let (f_ip, f_email, f_since) = match &b.flood {
            Some(f) => (
                batch::lit(&f.ip),
                batch::lit(&f.email),
                f.since.map_or_else(|| "NULL".to_string(), batch::datetime),
            ),
            None => ("NULL".into(), "NULL".into(), "NULL".into()),
        };
        format!(
            "({k},{post},{parent},{author},{email},{content},{h},{fh},{f_ip},{f_email},{f_since})",
            post = b.post,
            parent = b.parent,
            author = batch::lit(b.author),
            email = batch::lit(b.email),
            content = batch::lit(b.content),
            h = part(&b.history[0]),
            fh = part(&b.history[1]),
        )
    });
    let head = format!(
        "INSERT INTO {} (k, post, parent, author, email, content, h_author, h_email, h_user, \
         fh_author, fh_email, fh_user, f_ip, f_email, f_since) VALUES",
        batch::PROBE_TABLE
    );
    batch::chunked(&head, rows, STATEMENT_BYTES)
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

/// The statements that fill the rows table.
fn stored_statements(stored: &[batch::Stored<'_>]) -> Vec<String> {
    let rows = stored.iter().enumerate().map(|(k, e)| {
        format!(
            "({k},{post},{parent},{author},{email},{content},{ip})",
            post = e.post,
            parent = e.parent,
            author = batch::lit(e.author),
            email = batch::lit(e.email),
            content = batch::lit(e.content),
            ip = batch::lit(e.ip),
        )
    });
    let head = format!(
        "INSERT INTO {} (k, post, parent, author, email, content, ip) VALUES",
        batch::ROWS_TABLE
    );
    batch::chunked(&head, rows, STATEMENT_BYTES)
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

/// One `wp_comments` row of the multi-row INSERT.
fn comment_row(p: &Pending, c: &Candidate, approved: &str) -> String {
    let f = &c.filtered;
    format!(
        "({post},{ip},{author},{email},{url},{date},{date_gmt},{content},0,{approved},{agent},'comment',{parent},0)",
        post = p.post_id,
        ip = batch::lit(&f.ip),
        author = batch::lit(&f.author),
        email = batch::lit(&f.email),
        url = batch::lit(&f.url),
        date = batch::lit(&p.date),
        date_gmt = batch::lit(&p.date_gmt),
        content = batch::lit(&f.content),
        approved = batch::lit(approved),
        agent = batch::lit(&f.agent),
        parent = p.parent,
    )
}

/// The query for the options the rules read.
fn options_sql(table: &str) -> String {
    format!(
        "SELECT option_name, option_value FROM {table} WHERE option_name IN ({})",
        OPTION_NAMES.iter().map(|n| batch::lit(n)).collect::<Vec<_>>().join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_raises_comment_count_by_what_it_saved() {
        let store = Store::new("mysql://u:p@127.0.0.1:3306/wp", "wp_", "q").unwrap();
        assert_eq!(store.count_sql(&BTreeMap::<u64, u64>::new()), None);
        assert_eq!(
            store.count_sql(&BTreeMap::from([(4, 2), (9, 1)])).unwrap(),
            "UPDATE `wp_posts` SET comment_count = comment_count + CASE ID WHEN 4 THEN 2 WHEN 9 THEN 1 ELSE 0 END \
             WHERE ID IN (4,9)"
        );
    }

    #[tokio::test]
    async fn the_duplicate_question_goes_straight_to_the_table_only_when_it_is_the_only_one() {
        let store = Store::new("mysql://u:p@127.0.0.1:3306/wp", "wp_", "q").unwrap();
        let setup = Setup {
            scratch: String::new(),
            multi_row: true,
            increment: 1,
            email_index: true,
            folds: true,
        };
        let probe = |email: &'static str, content: &'static str| batch::Probe {
            post: 4,
            parent: 0,
            author: "Ann",
            email,
            content,
            history: [None, None],
            flood: Some(batch::Sender {
                ip: "192.0.2.1".into(),
                email: email.into(),
                since: None,
            }),
        };
        let probes = [probe("a@example.test", "it's"), probe("", "hi")];
        assert_eq!(
            store.direct_sql(&setup, &probes).unwrap(),
            [
                "SELECT 1 FROM `wp_comments` c FORCE INDEX (comment_author_email) WHERE c.comment_author_email \
                 IN ('a@example.test') AND c.comment_approved != 'trash' AND (c.comment_post_ID, c.comment_parent, \
                 c.comment_author, c.comment_author_email, c.comment_content) IN ((4,0,'Ann','a@example.test','it''s')) \
                 LIMIT 1",
                "SELECT 1 FROM `wp_comments` c WHERE c.comment_post_ID IN (4) AND c.comment_approved != 'trash' \
                 AND (c.comment_post_ID, c.comment_parent, c.comment_author, c.comment_content) IN ((4,0,'Ann','hi')) \
                 LIMIT 1",
            ]
        );
        // The flood query, or the author's history, needs the probe table.
        let mut flood = probe("a@example.test", "x");
        flood.flood = Some(batch::Sender {
            ip: "192.0.2.1".into(),
            email: "a@example.test".into(),
            since: Some(1_800_000_000),
        });
        assert_eq!(store.direct_sql(&setup, &[probe("", "y"), flood]), None);
        let mut history = probe("a@example.test", "x");
        history.history[0] = Some(batch::Who {
            author: "Ann".into(),
            email: "a@example.test".into(),
            user_email: "a@example.test".into(),
        });
        assert_eq!(store.direct_sql(&setup, &[history]), None);
        assert_eq!(store.direct_sql(&setup, &[]), None);
    }

    fn post(id: u64, comment_status: &str) -> Post {
        Post {
            id,
            post_type: "post".into(),
            status: "publish".into(),
            comment_status: comment_status.into(),
            has_password: false,
            date_gmt: Some(0),
        }
    }

    /// What one batch read: posts by id (`None`: absent), parents by id, with
    /// `comment_moderation` as given.
    fn read(moderation: &str, posts: &[(u64, Option<&str>)], parents: &[(u64, Option<&str>)]) -> Basis {
        let options = Options::from_rows(&HashMap::from([("comment_moderation".into(), moderation.into())]));
        let ids = |l: &[(u64, Option<&str>)]| l.iter().map(|(id, _)| *id).collect::<BTreeSet<u64>>();
        Basis::read(
            options,
            &ids(posts),
            posts
                .iter()
                .filter_map(|(id, s)| s.map(|s| (*id, post(*id, s))))
                .collect(),
            &ids(parents),
            parents
                .iter()
                .filter_map(|(id, a)| a.map(|a| (*id, a.to_string())))
                .collect(),
        )
    }

    #[test]
    fn a_basis_holds_only_while_the_reads_find_the_same() {
        let mut basis = read("0", &[(1, Some("open")), (2, None)], &[(7, Some("1"))]);
        let ids = |l: &[u64]| l.iter().copied().collect::<BTreeSet<u64>>();
        assert!(basis.covers(&ids(&[1, 2]), &ids(&[7])));
        // A post or parent it never read: not covered, nothing judged ahead.
        assert!(!basis.covers(&ids(&[1, 3]), &ids(&[])));
        assert!(!basis.covers(&ids(&[1]), &ids(&[8])));

        assert!(basis.agrees(&read("0", &[(1, Some("open"))], &[(7, Some("1"))])));
        // A missing post stays missing; one that appeared is a change.
        assert!(basis.agrees(&read("0", &[(2, None)], &[])));
        assert!(!basis.agrees(&read("0", &[(2, Some("open"))], &[])));
        assert!(!basis.agrees(&read("0", &[(1, Some("closed"))], &[])));
        assert!(!basis.agrees(&read("0", &[(1, Some("open"))], &[(7, Some("0"))])));
        assert!(!basis.agrees(&read("1", &[(1, Some("open"))], &[])));

        // It learns what later batches read, and starts over past its bound.
        basis.learn(&read("1", &[(3, Some("open"))], &[]));
        assert!(basis.covers(&ids(&[1, 2, 3]), &ids(&[7])));
        assert!(basis.agrees(&read("1", &[(1, Some("open"))], &[])));
        let many: Vec<(u64, Option<&str>)> = (100..100 + BASIS_KEEPS as u64).map(|id| (id, Some("open"))).collect();
        basis.learn(&read("1", &many, &[]));
        assert!(!basis.covers(&ids(&[1]), &ids(&[])));
        assert!(basis.covers(&ids(&[100]), &ids(&[])));
    }

    /// A record at `seq` on post `post`, answering `parent`.
    fn record(seq: u64, post: u64, parent: u64) -> Slot {
        Slot::Record(Box::new(Record {
            v: 1,
            epoch: 3,
            seq,
            post_id: post,
            parent,
            author: "Ann".into(),
            email: "ann@example.test".into(),
            url: String::new(),
            content: format!("hi {seq}"),
            ip: "192.0.2.1".into(),
            agent: String::new(),
            accepted_ms: 1_000_000,
            consent: false,
            redirect_to: None,
            node: "n1".into(),
        }))
    }

    #[tokio::test]
    async fn a_batch_reads_what_its_records_name_and_moves_the_cursor_past_its_last_position() {
        let store = Store::new("mysql://u:p@127.0.0.1:3306/wp", "wp_", "q").unwrap();
        let slots = vec![
            (5, Slot::Skipped("missing")),
            (6, record(6, 4, 0)),
            (7, record(7, 4, 9)),
        ];
        let reads = store.reads(&slots, true, Some("SELECT 'flood'".into()));
        assert_eq!(reads.post_ids, BTreeSet::from([4]));
        assert_eq!(reads.parent_ids, BTreeSet::from([9]));
        assert!(reads.begin && reads.posts && reads.parents && reads.flood);
        assert_eq!(
            reads.statements,
            [
                "START TRANSACTION".to_string(),
                "SELECT epoch, seq FROM `wp_strata_syncer` WHERE queue = 'q' FOR UPDATE".into(),
                options_sql("`wp_options`"),
                store.posts_sql(&BTreeSet::from([4])).unwrap(),
                "SELECT comment_ID, comment_approved FROM `wp_comments` WHERE comment_ID IN (9)".into(),
                "SELECT 'flood'".into(),
            ]
        );
        // Nothing but skipped positions, the transaction begun already: the cursor and the
        // options only.
        let reads = store.reads(&slots[..1], false, None);
        assert!(!reads.begin && !reads.posts && !reads.parents && !reads.flood);
        assert_eq!(reads.statements.len(), 2);

        let cursor = batch_cursor(Cursor { epoch: 3, seq: 4 }, 3, &slots);
        assert_eq!(cursor, Cursor { epoch: 3, seq: 7 });
        assert_eq!(
            store.cursor_sql(cursor),
            "UPDATE `wp_strata_syncer` SET epoch = 3, seq = 7, updated_gmt = UTC_TIMESTAMP() WHERE queue = 'q';\nCOMMIT"
        );
    }

    #[test]
    fn a_judgement_made_ahead_stands_only_when_the_reads_found_what_it_was_made_against() {
        let mut basis = None;
        let open = read("0", &[(1, Some("open"))], &[]);
        // Nothing was read before: nothing to agree with.
        assert!(!learn_basis(&mut basis, &open, false));
        assert!(learn_basis(&mut basis, &open, false));
        // The flood index learnt of a comment from another writer.
        assert!(!learn_basis(&mut basis, &open, true));
        assert!(!learn_basis(&mut basis, &read("0", &[(1, Some("closed"))], &[]), false));

        let judged = || Judged {
            outcomes: Vec::new(),
            pending: Vec::new(),
            candidates: Vec::new(),
        };
        let asked = || Asked {
            facts: Vec::new(),
            pairs: Vec::new(),
            pairs_asked: false,
        };
        assert!(kept_judgement(None, true, None).is_none());
        assert!(kept_judgement(Some((judged(), None)), false, Some(Some(asked()))).is_none());
        assert!(matches!(
            kept_judgement(Some((judged(), None)), true, None),
            Some((_, Ahead::Unasked))
        ));
        assert!(matches!(
            kept_judgement(Some((judged(), None)), true, Some(None)),
            Some((_, Ahead::PossibleDuplicate))
        ));
        assert!(matches!(
            kept_judgement(Some((judged(), None)), true, Some(Some(asked()))),
            Some((_, Ahead::Answered(_)))
        ));
    }

    #[test]
    fn each_position_gets_its_outcome_and_saved_comments_reach_the_flood_index() {
        let filtered = |seq: u64| Filtered {
            author: "Ann".into(),
            email: "ann@example.test".into(),
            url: String::new(),
            content: format!("hi {seq}"),
            ip: "192.0.2.1".into(),
            agent: String::new(),
        };
        let candidate = |seq: u64| Candidate {
            filtered: filtered(seq),
            raw: None,
            date_gmt: 1_000,
            flood_since: 0,
            flood_ask: false,
        };
        let pending = |slot: usize, seq: u64| Pending {
            slot,
            seq,
            post_id: 4,
            parent: 0,
            date: "1970-01-01 00:16:40".into(),
            date_gmt: "1970-01-01 00:16:40".into(),
        };
        let slots = vec![
            (10, Slot::Skipped("queue-full")),
            (11, record(11, 4, 0)),
            (12, record(12, 4, 0)),
            (13, record(13, 4, 0)),
        ];
        let judged = Judged {
            outcomes: vec![
                (10, Some(Outcome::Skipped("queue-full"))),
                (11, None),
                (12, Some(Outcome::Refused(rules::CLOSED))),
                (13, None),
            ],
            pending: vec![pending(1, 11), pending(3, 13)],
            candidates: vec![candidate(11), candidate(13)],
        };
        let mut flood = FloodState {
            index: Some(FloodIndex::new(Compare::Exact, 0, 99)),
            ..FloodState::default()
        };
        let looks_like_flood = |flood: &FloodState| {
            flood
                .index
                .as_ref()
                .map(|i| i.lookup("192.0.2.1", "b@example.test", 900, 1_005, 15))
        };
        assert_eq!(looks_like_flood(&flood), Some(Lookup::NotFlood));
        let Slot::Record(first) = slots[1].1.clone() else {
            unreachable!()
        };
        let outcomes = outcomes_of(judged, slots, vec![Ok((100, "1")), Err(rules::DUPLICATE)], &mut flood);
        assert_eq!(
            outcomes,
            [
                (10, Outcome::Skipped("queue-full")),
                (
                    11,
                    Outcome::Inserted(Box::new(Inserted {
                        id: 100,
                        approved: "1",
                        filtered: filtered(11),
                        date_gmt: "1970-01-01 00:16:40".into(),
                        record: first,
                    }))
                ),
                (12, Outcome::Refused(rules::CLOSED)),
                (13, Outcome::Refused(rules::DUPLICATE)),
            ]
        );
        assert_eq!(looks_like_flood(&flood), Some(Lookup::Ask));

        // A candidate nothing became of stays unjudged.
        let judged = Judged {
            outcomes: vec![(14, None)],
            pending: vec![pending(0, 14)],
            candidates: vec![candidate(14)],
        };
        let outcomes = outcomes_of(judged, vec![(14, record(14, 4, 0))], Vec::new(), &mut flood);
        assert_eq!(outcomes, [(14, Outcome::Skipped("unjudged"))]);
    }

    #[test]
    fn comment_count_rises_by_the_approved_comments_saved() {
        let pending = |post_id: u64| Pending {
            slot: 0,
            seq: 1,
            post_id,
            parent: 0,
            date: String::new(),
            date_gmt: String::new(),
        };
        let pending = [pending(4), pending(4), pending(5), pending(6)];
        let decisions = vec![
            Decision::Save("1"),
            Decision::Save("0"),
            Decision::Save("1"),
            Decision::Refuse(rules::FLOOD),
        ];
        // The third row was refused by MySQL.
        let saved = [Some(100), Some(101), None, None];
        assert_eq!(accepted(&decisions), [(0, "1"), (1, "0"), (2, "1")]);
        assert_eq!(
            approved_posts(&pending, &decisions, &saved, true),
            BTreeMap::from([(4, 1), (5, 1)])
        );
        assert_eq!(
            approved_posts(&pending, &decisions, &saved, false),
            BTreeMap::from([(4, 1)])
        );
        assert_eq!(
            saved_results(decisions, &saved),
            [
                Ok((100, "1")),
                Ok((101, "0")),
                Err(rules::SAVE_FAILED),
                Err(rules::FLOOD)
            ]
        );
    }

    #[test]
    fn mysql_dates_parse_as_utc() {
        assert_eq!(mysql_ts("1970-01-01 00:01:00"), Some(60));
        assert_eq!(mysql_ts("0000-00-00 00:00:00"), None);
    }
}
