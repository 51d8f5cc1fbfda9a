//! The MySQL side: the syncer's cursor table, the site's options, and [`Store::apply`], which
//! runs WordPress's rules over a batch of records and inserts the accepted ones, updates
//! `comment_count` and advances the cursor in one transaction.
//!
//! Every check that reads comments (duplicates, floods, the author's approved comments, the
//! parent's status) runs inside that transaction, after the earlier records of the batch
//! were inserted, so they see those records exactly as PHP would have seen them one request
//! after the other, with the table's own collation deciding what is equal.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;
use mysql_async::{Params, Pool, TxOpts, Value};
use strata_wire::comment::Record;

use crate::flood::{Compare, FloodIndex, Lookup};
use crate::format::{self, addslashes, Filtered, Raw};
use crate::queue::{Cursor, Slot};
use crate::rules::{self, History, Post, Refusal, Submission, WpVersion};
use crate::site::{self, Options, OPTION_NAMES};

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
}

/// Why the database step failed. Nothing was committed in any case.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// MySQL failed (connection, server, protocol).
    #[error("mysql: {0}")]
    Mysql(#[from] mysql_async::Error),
    /// The durable cursor is not where this syncer thought (another syncer, or a commit whose
    /// answer was lost): the batch was not applied; continue from `0`.
    #[error("the cursor in MySQL is at {0:?}, not where this syncer expected it")]
    CursorMoved(Cursor),
    /// MySQL did not answer in time (an open transaction is rolled back when dropped).
    #[error("mysql: no answer within {0:?}")]
    Timeout(Duration),
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
    pool: Pool,
    prefix: String,
    /// The queue's name in the cursor table (its memcached key prefix), so that several
    /// queues can share one database.
    queue: String,
    /// The last hour's comments by address and e-mail, so the flood query runs only for
    /// comments that may be floods; one batch uses it at a time.
    flood: Arc<tokio::sync::Mutex<FloodState>>,
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

/// `Y-m-d H:i:s` UTC of Unix seconds.
fn mysql_date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
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

impl Store {
    /// A lazy pool for `url`; tables are `{prefix}comments` etc.; the cursor is the row of
    /// `queue` in `{prefix}strata_syncer`.
    ///
    /// Errors: the URL is not usable (checked by the configuration already).
    pub fn new(url: &str, prefix: &str, queue: &str) -> Result<Store, StoreError> {
        let opts = mysql_async::Opts::from_url(url).map_err(mysql_async::Error::from)?;
        let opts = mysql_async::OptsBuilder::from_opts(opts)
            .pool_opts(
                mysql_async::PoolOpts::default()
                    .with_constraints(mysql_async::PoolConstraints::new(1, 4).unwrap_or_default()),
            )
            .conn_ttl(Some(Duration::from_secs(60)));
        Ok(Store {
            pool: Pool::new(opts),
            prefix: prefix.to_string(),
            queue: queue.to_string(),
            flood: Arc::new(tokio::sync::Mutex::new(FloodState::default())),
        })
    }

    fn t(&self, name: &str) -> String {
        format!("`{}{name}`", self.prefix)
    }

    /// Creates the cursor table (once) and reads the cursor.
    pub async fn load_cursor(&self) -> Result<Cursor, StoreError> {
        let mut c = self.pool.get_conn().await?;
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
        let mut c = self.pool.get_conn().await?;
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
        let mut c = self.pool.get_conn().await?;
        read_options(&mut c, &self.t("options")).await
    }

    /// Closes the pool.
    pub async fn close(self) {
        let _ = self.pool.disconnect().await;
    }

    /// Applies `slots` (consecutive positions after `expected`) in one transaction: every
    /// record judged by WordPress's rules in order, accepted ones inserted, `comment_count`
    /// updated, the cursor moved past the last slot. Nothing is committed on error.
    pub async fn apply(
        &self,
        expected: Cursor,
        epoch: u64,
        slots: Vec<(u64, Slot)>,
        judge: Judge,
    ) -> Result<Applied, StoreError> {
        let mut conn = self.pool.get_conn().await?;
        let mut tx = conn.start_transaction(TxOpts::default()).await?;
        let cursor_table = self.t("strata_syncer");
        let row: Option<(u64, u64)> = tx
            .exec_first(
                format!("SELECT epoch, seq FROM {cursor_table} WHERE queue = ? FOR UPDATE"),
                params(vec![self.queue.clone().into()]),
            )
            .await?;
        let (db_epoch, db_seq) = row.unwrap_or((0, 0));
        let actual = Cursor {
            epoch: db_epoch,
            seq: db_seq,
        };
        if actual != expected {
            return Err(StoreError::CursorMoved(actual));
        }
        let options = read_options(&mut tx, &self.t("options")).await?;
        let tz = options.timezone();
        let home_host = options.home_host();
        let posts = self.posts(&mut tx, &slots).await?;
        let mut flood = self.flood.lock().await;
        (flood.by_index, flood.by_query) = (0, 0);
        if !judge.flood_interval.is_zero() {
            self.refresh_flood(&mut tx, &mut flood).await?;
        }

        let mut outcomes = Vec::with_capacity(slots.len());
        let mut counted_posts = BTreeSet::new();
        let mut last = expected.seq;
        for (seq, slot) in slots {
            last = seq;
            let record = match slot {
                Slot::Skipped(why) => {
                    outcomes.push((seq, Outcome::Skipped(why)));
                    continue;
                }
                Slot::Record(r) => r,
            };
            let outcome = self
                .judge_and_insert(&mut tx, record, &posts, &options, tz, &home_host, judge, &mut flood)
                .await?;
            if let Outcome::Inserted(i) = &outcome {
                if i.approved == "1" {
                    counted_posts.insert(i.record.post_id);
                }
            }
            outcomes.push((seq, outcome));
        }

        let note = if judge.version >= (6, 9) {
            " AND comment_type != 'note'"
        } else {
            ""
        };
        for post in &counted_posts {
            tx.exec_drop(
                format!(
                    "UPDATE {posts} SET comment_count = (SELECT COUNT(*) FROM {comments} \
                     WHERE comment_post_ID = ? AND comment_approved = '1'{note}) WHERE ID = ?",
                    posts = self.t("posts"),
                    comments = self.t("comments"),
                ),
                params(vec![(*post).into(), (*post).into()]),
            )
            .await?;
        }
        let cursor = Cursor { epoch, seq: last };
        tx.exec_drop(
            format!("UPDATE {cursor_table} SET epoch = ?, seq = ?, updated_gmt = UTC_TIMESTAMP() WHERE queue = ?"),
            params(vec![cursor.epoch.into(), cursor.seq.into(), self.queue.clone().into()]),
        )
        .await?;
        tx.commit().await?;
        Ok(Applied {
            outcomes,
            cursor,
            options,
            flood_checks: (flood.by_index, flood.by_query),
        })
    }

    /// Brings the flood index up to date inside the batch's transaction: seeded on first use
    /// (the column collation, the highest id, the last hour's rows), then the rows added since
    /// (above the highest id seen, or skipped over before), old rows dropped once a second.
    async fn refresh_flood(
        &self,
        tx: &mut mysql_async::Transaction<'_>,
        state: &mut FloodState,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        if state.disabled_until.is_some_and(|t| now < t) {
            return Ok(());
        }
        let comments = self.t("comments");
        type Row = (u64, String, String, String);
        let select = format!(
            "SELECT comment_ID, comment_author_IP, comment_author_email, CAST(comment_date_gmt AS CHAR) FROM {comments}"
        );
        let (mut index, rows) = match state.index.take() {
            Some(index) => {
                let (clause, ids) = index.refresh_sql();
                let rows: Vec<Row> = tx
                    .exec(
                        format!("{select} WHERE {clause}"),
                        params(ids.into_iter().map(Value::from).collect()),
                    )
                    .await?;
                (index, rows)
            }
            None => {
                // Off until the seed succeeds: a seed that fails or outlives the batch's
                // deadline is not retried on every batch.
                state.disabled_until = Some(now + FLOOD_INDEX_PAUSE);
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
                    state.disabled_until = Some(now + FLOOD_INDEX_PAUSE);
                    return Ok(());
                };
                let max_id: Option<u64> = tx
                    .query_first(format!("SELECT COALESCE(MAX(comment_ID), 0) FROM {comments}"))
                    .await?;
                let horizon = FloodIndex::seed_horizon(unix_now());
                let rows: Vec<Row> = tx
                    .exec(
                        format!("{select} WHERE comment_date_gmt >= ?"),
                        params(vec![mysql_date(horizon).into()]),
                    )
                    .await?;
                state.disabled_until = None;
                (FloodIndex::new(compare, horizon, max_id.unwrap_or(0)), rows)
            }
        };
        for (id, ip, email, date) in rows {
            if !index.observe(id, &ip, &email, mysql_ts(&date), now) {
                tracing::warn!(
                    keys = index.len(),
                    "flood check: the index outgrew its bound; every comment is checked by query for a while"
                );
                state.disabled_until = Some(now + FLOOD_INDEX_PAUSE);
                return Ok(());
            }
        }
        if state
            .pruned
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            index.prune(unix_now(), now);
            state.pruned = Some(now);
        }
        state.index = Some(index);
        Ok(())
    }

    /// The posts the batch comments on, statuses resolved as `get_post_status()` does.
    async fn posts(
        &self,
        tx: &mut mysql_async::Transaction<'_>,
        slots: &[(u64, Slot)],
    ) -> Result<HashMap<u64, Post>, StoreError> {
        let ids: BTreeSet<u64> = slots
            .iter()
            .filter_map(|(_, s)| match s {
                Slot::Record(r) => Some(r.post_id),
                Slot::Skipped(_) => None,
            })
            .collect();
        let mut out: HashMap<u64, (Post, u64)> = HashMap::new();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        type Row = (u64, String, String, String, i64, String, u64);
        let sql = |ids: &BTreeSet<u64>| {
            format!(
                "SELECT ID, post_type, post_status, comment_status, post_password <> '', \
                 CAST(post_date_gmt AS CHAR), post_parent FROM {} WHERE ID IN ({})",
                self.t("posts"),
                ids.iter().map(|_| "?").collect::<Vec<_>>().join(",")
            )
        };
        let rows: Vec<Row> = tx
            .exec(sql(&ids), params(ids.iter().map(|i| Value::from(*i)).collect()))
            .await?;
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
        if !parents_needed.is_empty() {
            let rows: Vec<Row> = tx
                .exec(
                    sql(&parents_needed),
                    params(parents_needed.iter().map(|i| Value::from(*i)).collect()),
                )
                .await?;
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

    /// One record through `wp_handle_comment_submission` and `wp_new_comment`.
    #[allow(clippy::too_many_arguments)]
    async fn judge_and_insert(
        &self,
        tx: &mut mysql_async::Transaction<'_>,
        r: Box<Record>,
        posts: &HashMap<u64, Post>,
        o: &Options,
        tz: site::SiteTz,
        home_host: &str,
        judge: Judge,
        flood: &mut FloodState,
    ) -> Result<Outcome, StoreError> {
        let comments = self.t("comments");
        let now = i64::try_from(r.accepted_ms / 1000).unwrap_or(i64::MAX);
        let parent_status: Option<String> = if r.parent > 0 {
            tx.exec_first(
                format!("SELECT comment_approved FROM {comments} WHERE comment_ID = ?"),
                params(vec![r.parent.into()]),
            )
            .await?
        } else {
            None
        };
        if judge.version >= (6, 2) && r.parent > 0 && !rules::parent_is_approved(parent_status.as_deref()) {
            return Ok(Outcome::Refused(rules::UNAPPROVED_PARENT));
        }
        let submission = Submission {
            post_id: r.post_id,
            author: &r.author,
            email: &r.email,
            url: &r.url,
            content: &r.content,
        };
        if let Err(refusal) = rules::check_submission(submission, posts.get(&r.post_id), o, now) {
            return Ok(Outcome::Refused(refusal));
        }
        let parent = rules::normalize_parent(r.parent, parent_status.as_deref());
        let (date, date_gmt) = site::comment_dates(r.accepted_ms, tz);
        let raw = Raw {
            author: &r.author,
            email: &r.email,
            url: &r.url,
            content: &r.content,
            ip: &r.ip,
            agent: &r.agent,
        };
        let filtered = format::filter_comment(raw, home_host);
        // Up to 6.6 WordPress filtered the comment before its checks; later versions check
        // the submitted values, then filter and check the approval again.
        let checks_raw = judge.version >= (6, 7);
        let unfiltered = Filtered {
            author: r.author.clone(),
            email: r.email.clone(),
            url: r.url.clone(),
            content: r.content.clone(),
            ip: filtered.ip.clone(),
            agent: filtered.agent.clone(),
        };
        let checked = if checks_raw { &unfiltered } else { &filtered };

        // Duplicate (wp_allow_comment): the same condition WordPress queries. In the common
        // case it is asked by the INSERT itself (`WHERE NOT EXISTS`), saving a round trip; a
        // comment that is also a flood asks it first, since a duplicate answers 409 before
        // the flood check could answer 429.
        let mut dupe_sql = format!(
            "SELECT comment_ID FROM {comments} WHERE comment_post_ID = ? AND comment_parent = ? \
             AND comment_approved != 'trash' AND ( comment_author = ? "
        );
        let mut dupe_params: Vec<Value> = vec![
            r.post_id.into(),
            parent.to_string().into(),
            checked.author.clone().into(),
        ];
        if !checked.email.is_empty() {
            dupe_sql.push_str("AND comment_author_email = ? ");
            dupe_params.push(checked.email.clone().into());
        }
        dupe_sql.push_str(") AND comment_content = ? LIMIT 1");
        dupe_params.push(checked.content.clone().into());

        // Flood (wp_check_comment_flood): the values arrive slashed in the query.
        if !judge.flood_interval.is_zero() {
            let hour_ago = site::comment_dates(r.accepted_ms.saturating_sub(3_600_000), tz).1;
            // wp_handle_comment_submission slashes the data; this query gets it as is.
            let email = addslashes(&checked.email);
            let interval = i64::try_from(judge.flood_interval.as_secs()).unwrap_or(i64::MAX);
            // The index answers "certainly not a flood"; anything else is the query's call.
            let certain = match (flood.index.as_ref(), mysql_ts(&hour_ago), mysql_ts(&date_gmt)) {
                (Some(index), Some(since), Some(new)) => {
                    index.lookup(&filtered.ip, &email, since, new, interval) == Lookup::NotFlood
                }
                _ => false,
            };
            let last: Option<String> = if certain {
                flood.by_index += 1;
                None
            } else {
                flood.by_query += 1;
                tx.exec_first(
                    format!(
                        "SELECT CAST(comment_date_gmt AS CHAR) FROM {comments} WHERE comment_date_gmt >= ? \
                         AND ( comment_author_IP = ? OR comment_author_email = ? ) \
                         ORDER BY comment_date_gmt DESC LIMIT 1"
                    ),
                    params(vec![hour_ago.into(), filtered.ip.clone().into(), email.into()]),
                )
                .await?
            };
            if let (Some(last), Some(new)) = (last.as_deref().and_then(mysql_ts), mysql_ts(&date_gmt)) {
                if new - last < interval {
                    let dupe: Option<u64> = tx.exec_first(dupe_sql, params(dupe_params)).await?;
                    return Ok(Outcome::Refused(if dupe.is_some() {
                        rules::DUPLICATE
                    } else {
                        rules::FLOOD
                    }));
                }
            }
        }

        // Approval (check_comment, wp_check_comment_disallowed_list).
        // check_comment queries with the slashed author and e-mail (so a name with a quote
        // never matches, as in WordPress), and looks the user up by the unslashed e-mail.
        let history = |c: &Filtered| (addslashes(&c.author), addslashes(&c.email), c.email.clone());
        let mut approved = rules::approval(checked, o, self.history(tx, o, history(checked)).await?, judge.version);
        if checks_raw && approved != "trash" {
            approved = rules::approval(
                &filtered,
                o,
                self.history(tx, o, history(&filtered)).await?,
                judge.version,
            );
        }

        let mut insert_params: Vec<Value> = vec![
            r.post_id.into(),
            filtered.ip.clone().into(),
            filtered.author.clone().into(),
            filtered.email.clone().into(),
            filtered.url.clone().into(),
            date.into(),
            date_gmt.clone().into(),
            filtered.content.clone().into(),
            approved.into(),
            filtered.agent.clone().into(),
            parent.into(),
        ];
        insert_params.extend(dupe_params);
        let insert = tx
            .exec_drop(
                format!(
                    "INSERT INTO {comments} (comment_post_ID, comment_author_IP, comment_author, \
                     comment_author_email, comment_author_url, comment_date, comment_date_gmt, comment_content, \
                     comment_karma, comment_approved, comment_agent, comment_type, comment_parent, user_id) \
                     SELECT ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, 'comment', ?, 0 FROM DUAL \
                     WHERE NOT EXISTS ({dupe_sql})"
                ),
                params(insert_params),
            )
            .await;
        match insert {
            Ok(()) if tx.affected_rows() == 0 => return Ok(Outcome::Refused(rules::DUPLICATE)),
            Ok(()) => {}
            // The server refused this row (e.g. a value the column cannot hold): WordPress
            // answers 500 and saves nothing; the batch goes on.
            Err(mysql_async::Error::Server(e)) => {
                tracing::warn!(seq = r.seq, error = %e, "MySQL refused a comment row");
                return Ok(Outcome::Refused(rules::SAVE_FAILED));
            }
            Err(e) => return Err(e.into()),
        }
        let id = tx.last_insert_id().unwrap_or(0);
        if let Some(index) = flood.index.as_mut() {
            if !index.observe(id, &filtered.ip, &filtered.email, mysql_ts(&date_gmt), Instant::now()) {
                // Outgrown: dropped now, rebuilt by the next batch's refresh.
                flood.index = None;
            }
        }
        Ok(Outcome::Inserted(Box::new(Inserted {
            id,
            approved,
            filtered,
            date_gmt,
            record: r,
        })))
    }

    /// Whether the author has an approved comment (`comment_previously_approved`), asked only
    /// when the rule applies. `who` = (author, e-mail) as the query gets them, and the
    /// unslashed e-mail for the user look-up.
    async fn history(
        &self,
        tx: &mut mysql_async::Transaction<'_>,
        o: &Options,
        who: (String, String, String),
    ) -> Result<History, StoreError> {
        let (author, email, plain_email) = who;
        if !o.comment_previously_approved || author.is_empty() || email.is_empty() {
            return Ok(History::default());
        }
        let user: Option<u64> = tx
            .exec_first(
                format!("SELECT ID FROM {} WHERE user_email = ? LIMIT 1", self.t("users")),
                params(vec![plain_email.into()]),
            )
            .await?;
        let comments = self.t("comments");
        let found: Option<String> = match user {
            Some(uid) if uid > 0 => {
                tx.exec_first(
                    format!(
                        "SELECT comment_approved FROM {comments} WHERE user_id = ? AND comment_approved = '1' LIMIT 1"
                    ),
                    params(vec![uid.into()]),
                )
                .await?
            }
            _ => {
                tx.exec_first(
                    format!(
                        "SELECT comment_approved FROM {comments} WHERE comment_author = ? \
                         AND comment_author_email = ? and comment_approved = '1' LIMIT 1"
                    ),
                    params(vec![author.into(), email.into()]),
                )
                .await?
            }
        };
        Ok(History {
            previously_approved: found.as_deref() == Some("1"),
        })
    }
}

async fn read_options(c: &mut impl Queryable, table: &str) -> Result<Options, StoreError> {
    let sql = format!(
        "SELECT option_name, option_value FROM {table} WHERE option_name IN ({})",
        OPTION_NAMES.iter().map(|_| "?").collect::<Vec<_>>().join(",")
    );
    let rows: Vec<(String, String)> = c
        .exec(sql, params(OPTION_NAMES.iter().map(|n| Value::from(*n)).collect()))
        .await?;
    Ok(Options::from_rows(&rows.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_dates_parse_as_utc() {
        assert_eq!(mysql_ts("1970-01-01 00:01:00"), Some(60));
        assert_eq!(mysql_ts("0000-00-00 00:00:00"), None);
    }
}
