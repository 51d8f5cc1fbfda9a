//! The pure half of a batch: what WordPress would decide for each comment of a batch, in
//! queue order, from facts the database gave for the whole batch at once.
//!
//! WordPress handles comments one request after the other, so a comment sees the ones saved
//! before it. A batch asks MySQL two questions in one go instead: what the table held before
//! the batch (per comment: a duplicate? an approved comment by the same author? the latest
//! comment from the same address or e-mail?) and which earlier comments of the same batch
//! are equal to it under the table's own collation. [`resolve`] then walks the batch in order
//! and counts an earlier comment only if it was decided to be saved, with the status it got,
//! which is exactly what one query per comment after each insert would have seen.
//!
//! The second question is skipped when the syncer can tell that no two comments of the
//! batch could be equal where it compares them ([`pairs_possible`]): text it can compare
//! as MySQL does (ASCII, under a collation checked against the server once), none alike.
//!
//! Also here: SQL literals for the text protocol, and the temporary tables' DDL.

use crate::format::Filtered;
use crate::options::Options;
use crate::rules::{self, History, Refusal, WpVersion};

/// One comment of the batch that passed the checks needing no database.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The values stored (filtered as WordPress filters them).
    pub filtered: Filtered,
    /// The values WordPress checks when they differ from the stored ones (6.7 on checks
    /// the submitted values, then filters).
    pub raw: Option<Filtered>,
    /// `comment_date_gmt` as Unix seconds.
    pub date_gmt: i64,
    /// The flood query's lower bound (one hour before), Unix seconds.
    pub flood_since: i64,
    /// Whether the flood query must run for this comment (the index could not rule it out).
    pub flood_ask: bool,
}

impl Candidate {
    /// The values the duplicate and approval checks look at first.
    pub fn checked(&self) -> &Filtered {
        self.raw.as_ref().unwrap_or(&self.filtered)
    }
}

/// What the table held before the batch, for one candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// A comment equal to it exists (`wp_allow_comment`'s duplicate query).
    pub duplicate: bool,
    /// `comment_previously_approved`'s answer for the checked values, then for the
    /// filtered ones (6.7 on asks twice); `None` when not asked.
    pub approved_before: [Option<bool>; 2],
    /// Whether the e-mail belongs to a registered user (checked, then filtered values):
    /// then only that user's comments count, and the batch's anonymous ones never do.
    pub user: [bool; 2],
    /// The latest `comment_date_gmt` from the same address or e-mail within the hour,
    /// Unix seconds, when the flood query ran and found one.
    pub flood_latest: Option<i64>,
}

/// How a later candidate relates to an earlier one of the same batch, under the table's
/// collation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pair {
    /// Index of the earlier candidate.
    pub earlier: usize,
    /// The later one is a duplicate of it (if it was saved and is not in the trash).
    pub duplicate: bool,
    /// Same author and e-mail as the checked values (counts if it was saved approved).
    pub same_author: bool,
    /// Same author and e-mail as the filtered values.
    pub same_author_filtered: bool,
    /// Same address or e-mail (a flood if it was saved within the interval).
    pub same_sender: bool,
}

/// What WordPress would do with a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Save it with this `comment_approved`.
    Save(&'static str),
    /// Refuse it.
    Refuse(Refusal),
}

/// The rules a batch is judged by.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// The site's options.
    pub options: &'a Options,
    /// The WordPress version reproduced.
    pub version: WpVersion,
    /// The flood interval in seconds (0: no flood check).
    pub flood_interval: i64,
}

/// Decides every candidate in order. `pairs[j]` lists the earlier candidates related to
/// candidate `j`; `facts[j]` is what the table held. `saved` says whether an earlier
/// decision to save really ended in a row (a row MySQL refused does not count); while
/// deciding a whole batch before inserting it, every decision to save counts.
pub fn resolve(
    candidates: &[Candidate],
    facts: &[Facts],
    pairs: &[Vec<Pair>],
    rules: Rules<'_>,
    saved: &dyn Fn(usize) -> bool,
) -> Vec<Decision> {
    let mut out: Vec<Decision> = Vec::with_capacity(candidates.len());
    for (j, c) in candidates.iter().enumerate() {
        // The status an earlier candidate was saved with, if it was.
        let stored_as = |i: usize| -> Option<&'static str> {
            match out.get(i) {
                Some(Decision::Save(status)) if i < j && saved(i) => Some(*status),
                _ => None,
            }
        };
        let facts = facts.get(j).copied().unwrap_or_default();
        let pairs = pairs.get(j).map_or(&[][..], Vec::as_slice);
        out.push(decide(c, facts, pairs, candidates, &stored_as, rules));
    }
    out
}

/// One candidate, as `wp_allow_comment` and `wp_new_comment` go: duplicate, flood (a
/// duplicate that is also a flood answers 409, as the duplicate query runs first), then
/// the approval status.
fn decide(
    c: &Candidate,
    facts: Facts,
    pairs: &[Pair],
    candidates: &[Candidate],
    stored_as: &dyn Fn(usize) -> Option<&'static str>,
    rules: Rules<'_>,
) -> Decision {
    let duplicate = facts.duplicate
        || pairs
            .iter()
            .any(|p| p.duplicate && stored_as(p.earlier).is_some_and(|s| s != "trash"));
    if duplicate {
        return Decision::Refuse(rules::DUPLICATE);
    }
    if rules.flood_interval > 0 {
        let in_batch = pairs
            .iter()
            .filter(|p| p.same_sender && stored_as(p.earlier).is_some())
            .filter_map(|p| candidates.get(p.earlier))
            .map(|e| e.date_gmt)
            .filter(|d| *d >= c.flood_since)
            .max();
        let latest = facts.flood_latest.max(in_batch);
        if latest.is_some_and(|last| c.date_gmt - last < rules.flood_interval) {
            return Decision::Refuse(rules::FLOOD);
        }
    }
    // check_comment: a saved approved comment of the batch by the same author and e-mail
    // counts unless the e-mail is a user's (then only the user's own comments do).
    let approved_before = |which: usize| {
        let in_batch = !facts.user[which]
            && pairs.iter().any(|p| {
                let same = if which == 0 {
                    p.same_author
                } else {
                    p.same_author_filtered
                };
                same && stored_as(p.earlier) == Some("1")
            });
        History {
            previously_approved: facts.approved_before[which].unwrap_or(false) || in_batch,
        }
    };
    let mut status = rules::approval(c.checked(), rules.options, approved_before(0), rules.version);
    if c.raw.is_some() && status != "trash" {
        status = rules::approval(&c.filtered, rules.options, approved_before(1), rules.version);
    }
    Decision::Save(status)
}

/// A string as a literal of the text protocol, read the same whether or not the server runs
/// with `NO_BACKSLASH_ESCAPES`: quotes doubled, or hexadecimal when it holds a backslash or
/// a NUL; in utf8mb4 (the connection's character set, see [`Store::new`](crate::store::Store::new); a
/// hexadecimal one says so itself), so the column's collation decides comparisons.
///
/// The plain form carries no `_utf8mb4` introducer: MySQL would look the character set up
/// by name for every one of a batch's thousands of literals.
pub fn lit(s: &str) -> String {
    if s.bytes().any(|b| b == b'\\' || b == 0) {
        let mut out = String::with_capacity(s.len() * 2 + 12);
        out.push_str("_utf8mb4 X'");
        for b in s.bytes() {
            out.push_str(&format!("{b:02X}"));
        }
        out.push('\'');
        out
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// Unix seconds as a `DATETIME` literal (UTC).
pub fn datetime(secs: i64) -> String {
    format!("'{}'", mysql_date(secs))
}

/// `Y-m-d H:i:s` UTC of Unix seconds.
pub fn mysql_date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A text column's character set and collation, as `information_schema` names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextColumn {
    /// `CHARACTER_SET_NAME`.
    pub charset: String,
    /// `COLLATION_NAME`.
    pub collation: String,
}

impl TextColumn {
    /// The column definition of a scratch column that compares like this one: the same
    /// character set and collation, long enough for any value. `None` for a name that is
    /// not a plain identifier.
    fn definition(&self) -> Option<String> {
        self.plain()
            .then(|| format!("LONGTEXT CHARACTER SET {} COLLATE {}", self.charset, self.collation))
    }

    /// Whether both names are plain identifiers (safe to write into a statement).
    fn plain(&self) -> bool {
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        plain(&self.charset) && plain(&self.collation)
    }
}

/// The columns the batch compares, each with its table's character set and collation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collations {
    /// `comments.comment_author`.
    pub author: TextColumn,
    /// `comments.comment_author_email`.
    pub email: TextColumn,
    /// `comments.comment_author_IP`.
    pub ip: TextColumn,
    /// `comments.comment_content`.
    pub content: TextColumn,
    /// `users.user_email`.
    pub user_email: TextColumn,
}

/// Name of the temporary table holding the values each candidate is checked with.
pub const PROBE_TABLE: &str = "strata_syncer_probe";
/// Name of the temporary table holding the values each candidate would be stored with.
pub const ROWS_TABLE: &str = "strata_syncer_rows";

/// The statements that create the two per-connection temporary tables (if absent) and
/// empty them. Two tables because MySQL cannot open one temporary table twice in a query.
/// `None` when a character set or collation name is not a plain identifier.
pub fn scratch_sql(c: &Collations) -> Option<String> {
    let author = c.author.definition()?;
    let email = c.email.definition()?;
    let ip = c.ip.definition()?;
    let content = c.content.definition()?;
    let user_email = c.user_email.definition()?;
    Some(format!(
        "CREATE TEMPORARY TABLE IF NOT EXISTS {PROBE_TABLE} (
           k INT UNSIGNED NOT NULL PRIMARY KEY,
           post BIGINT UNSIGNED NOT NULL,
           parent BIGINT UNSIGNED NOT NULL,
           author {author} NOT NULL,
           email {email} NOT NULL,
           content {content} NOT NULL,
           h_author {author} NULL,
           h_email {email} NULL,
           h_user {user_email} NULL,
           fh_author {author} NULL,
           fh_email {email} NULL,
           fh_user {user_email} NULL,
           f_ip {ip} NULL,
           f_email {email} NULL,
           f_since DATETIME NULL
         ) ENGINE=InnoDB;
         CREATE TEMPORARY TABLE IF NOT EXISTS {ROWS_TABLE} (
           k INT UNSIGNED NOT NULL PRIMARY KEY,
           post BIGINT UNSIGNED NOT NULL,
           parent BIGINT UNSIGNED NOT NULL,
           author {author} NOT NULL,
           email {email} NOT NULL,
           content {content} NOT NULL,
           ip {ip} NOT NULL
         ) ENGINE=InnoDB;
         DELETE FROM {PROBE_TABLE};
         DELETE FROM {ROWS_TABLE}"
    ))
}

/// The values candidate `k` of a batch is checked with: a row of [`PROBE_TABLE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe<'a> {
    /// `comment_post_ID`.
    pub post: u64,
    /// `comment_parent`.
    pub parent: u64,
    /// The duplicate query's author, e-mail and content.
    pub author: &'a str,
    /// See `author`.
    pub email: &'a str,
    /// See `author`.
    pub content: &'a str,
    /// `comment_previously_approved`'s questions, for the checked then the filtered values,
    /// when asked.
    pub history: [Option<Who>; 2],
    /// The flood check's question, when the flood check is on.
    pub flood: Option<Sender>,
}

/// An author as `check_comment` looks for earlier approved comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// The author, slashed.
    pub author: String,
    /// The e-mail, slashed.
    pub email: String,
    /// The e-mail as given, to look the user up by.
    pub user_email: String,
}

/// A sender as `wp_check_comment_flood` looks for recent comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// `comment_author_IP`.
    pub ip: String,
    /// The e-mail, slashed.
    pub email: String,
    /// The query's lower bound (Unix seconds) when it must run, else `None`.
    pub since: Option<i64>,
}

/// The values candidate `k` would be stored with: a row of [`ROWS_TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored<'a> {
    /// `comment_post_ID`.
    pub post: u64,
    /// `comment_parent`.
    pub parent: u64,
    /// `comment_author`.
    pub author: &'a str,
    /// `comment_author_email`.
    pub email: &'a str,
    /// `comment_content`.
    pub content: &'a str,
    /// `comment_author_IP`.
    pub ip: &'a str,
}

/// Character codes [`fold`] compares itself (0 stands for the empty string).
const FOLDED: [u8; 4] = [0, b'\t', b'\n', b'\r'];

/// What `s` compares as under the collations of WordPress's tables, when the syncer can
/// tell without MySQL: text of printable ASCII, tabs and line breaks, lower-cased, with
/// trailing spaces dropped (collations that pad with spaces ignore them). Two values MySQL
/// finds equal fold the same, provided the collation passed [`fold_check_sql`]; values
/// that fold differently may still be equal under a collation that does not pad, which
/// only makes [`pairs_possible`] ask MySQL more often. `None` for anything else.
pub fn fold(s: &str) -> Option<String> {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) || FOLDED[1..].contains(&b))
        .then(|| s.trim_end_matches(' ').to_ascii_lowercase())
}

/// The character codes the server is asked about: the empty string (0), tab, line
/// feed, carriage return and printable ASCII.
fn fold_codes() -> impl Iterator<Item = u8> {
    FOLDED.into_iter().chain(0x20..0x7f)
}

/// Collations (the part after the character set's name) without a language's tailoring:
/// no contraction or expansion makes two different ASCII strings equal (as Hungarian's
/// make "ccs" equal "cscs"), so comparing each pair of characters, as [`fold_check_sql`]
/// does, checks the comparison of whole strings.
const UNTAILORED: [&str; 23] = [
    "bin",
    "nopad_bin",
    "general_ci",
    "general_cs",
    "general_nopad_ci",
    "general_mysql500_ci",
    "swedish_ci",
    "unicode_ci",
    "unicode_nopad_ci",
    "unicode_520_ci",
    "unicode_520_nopad_ci",
    "0900_ai_ci",
    "0900_as_ci",
    "0900_as_cs",
    "0900_bin",
    "uca1400_ai_ci",
    "uca1400_ai_cs",
    "uca1400_as_ci",
    "uca1400_as_cs",
    "uca1400_nopad_ai_ci",
    "uca1400_nopad_ai_cs",
    "uca1400_nopad_as_ci",
    "uca1400_nopad_as_cs",
];

/// A query for the pairs of one-character values (by code; 0 the empty string) that a
/// column's collation finds equal. `None` for a collation that is not one of
/// [`UNTAILORED`], or a name that is not a plain identifier: MySQL then compares.
pub fn fold_check_sql(column: &TextColumn) -> Option<String> {
    if !column.plain() {
        return None;
    }
    let rest = column.collation.strip_prefix(&column.charset)?.strip_prefix('_')?;
    if !UNTAILORED.contains(&rest) {
        return None;
    }
    let codes = fold_codes().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
    Some(format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 126), \
         c AS (SELECT i, CONVERT(IF(i = 0, '', CHAR(i USING ascii)) USING {cs}) COLLATE {coll} AS ch \
               FROM n WHERE i IN ({codes})) \
         SELECT a.i, b.i FROM c a JOIN c b ON a.ch = b.ch WHERE a.i < b.i",
        cs = column.charset,
        coll = column.collation,
    ))
}

/// Whether every pair of codes the server found equal (the rows of [`fold_check_sql`])
/// folds the same, so that [`fold`] never tells apart values the column finds equal.
pub fn fold_agrees(equal: &[(u8, u8)]) -> bool {
    let one = |c: u8| {
        if c == 0 {
            String::new()
        } else {
            char::from(c).to_string()
        }
    };
    equal.iter().all(|&(a, b)| fold(&one(a)) == fold(&one(b)))
}

/// Whether a later candidate of the batch may relate to an earlier one (the pairs query
/// could return a row): `false` only when every value compared folds ([`fold`]) and no two
/// fold the same where the query compares them. `probes[k]` and `rows[k]` are candidate
/// `k`'s.
pub fn pairs_possible(probes: &[Probe<'_>], rows: &[Stored<'_>]) -> bool {
    use std::collections::HashSet;
    let mut comments: HashSet<(u64, u64, String, String)> = HashSet::new();
    let mut authors: HashSet<(String, String)> = HashSet::new();
    let mut addresses: HashSet<String> = HashSet::new();
    let mut emails: HashSet<String> = HashSet::new();
    for (b, e) in probes.iter().zip(rows) {
        let Some(comment) = fold(b.author).zip(fold(b.content)) else {
            return true;
        };
        if comments.contains(&(b.post, b.parent, comment.0, comment.1)) {
            return true;
        }
        for who in b.history.iter().flatten() {
            let Some(key) = fold(&who.author).zip(fold(&who.email)) else {
                return true;
            };
            if authors.contains(&key) {
                return true;
            }
        }
        if let Some(f) = &b.flood {
            let Some((ip, email)) = fold(&f.ip).zip(fold(&f.email)) else {
                return true;
            };
            if addresses.contains(&ip) || emails.contains(&email) {
                return true;
            }
        }
        let (Some(author), Some(email), Some(content), Some(ip)) =
            (fold(e.author), fold(e.email), fold(e.content), fold(e.ip))
        else {
            return true;
        };
        comments.insert((e.post, e.parent, author.clone(), content));
        authors.insert((author, email.clone()));
        addresses.insert(ip);
        emails.insert(email);
    }
    false
}

/// Statements of at most about `limit` bytes, each `head` followed by as many of `rows` as
/// fit, comma-separated, with the number of rows it holds (every statement holds one at
/// least).
pub fn chunked(head: &str, rows: impl IntoIterator<Item = String>, limit: usize) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut n = 0;
    for row in rows {
        if n > 0 && current.len() + row.len() + 1 > limit {
            out.push((std::mem::take(&mut current), n));
            n = 0;
        }
        if n == 0 {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push(',');
        }
        current.push_str(&row);
        n += 1;
    }
    if n > 0 {
        out.push((current, n));
    }
    out
}

#[cfg(test)]
mod tests;
