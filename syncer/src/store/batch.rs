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
//! Also here: SQL literals for the text protocol, and the temporary tables' DDL.

use crate::format::Filtered;
use crate::rules::{self, History, Refusal, WpVersion};
use crate::site::Options;

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
/// a NUL; always in utf8mb4 so the column's collation decides comparisons.
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
        format!("_utf8mb4'{}'", s.replace('\'', "''"))
    }
}

/// Unix seconds as a `DATETIME` literal (UTC).
pub fn datetime(secs: i64) -> String {
    format!("'{}'", super::mysql_date(secs))
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
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        (plain(&self.charset) && plain(&self.collation))
            .then(|| format!("LONGTEXT CHARACTER SET {} COLLATE {}", self.charset, self.collation))
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
