//! The comment write-behind queue: what `strata-proxy` puts into memcached, what
//! `strata-syncer` answers, and what the syncer publishes for the proxies.
//!
//! Keys (all under a configurable prefix, default [`DEFAULT_PREFIX`]):
//! - `{prefix}seq`: the last reserved sequence number; proxies `incr` it (after `add`ing it
//!   as `0` when missing) to reserve the next one.
//! - `{prefix}epoch`: a random number `add`ed by whoever creates the queue. When memcached
//!   restarts, the queue, the counter and the epoch are gone together: a different epoch (or
//!   a counter below the syncer's cursor) tells the syncer that queued comments were lost.
//! - `{prefix}c:{seq}`: one [`Record`] (JSON), written once with `add` after its number is
//!   reserved. A syncer that waited too long for it `add`s a skip marker there instead, so
//!   a late proxy's `add` fails and it hands the comment to PHP: never both, never neither.
//!   A proxy that reserved a number beyond its `max_queue` `add`s [`QUEUE_FULL`] there and
//!   hands the comment to PHP; the syncer passes that position without waiting for it.
//! - `{prefix}v:{seq}`: the syncer's [`Verdict`] on record `seq` (JSON), kept [`VERDICT_TTL`].
//! - `{prefix}settings`: the site's [`Settings`] (JSON), refreshed by the syncer every second.
//! - `{prefix}applied`: the last sequence number the syncer has committed (decimal), so a
//!   proxy can tell the queue's depth (`seq − applied`) before adding to it.
//!
//! The syncer's durable cursor (epoch, last applied sequence number) lives in MySQL and
//! moves in the same transaction as the comments it covers.

use serde::{Deserialize, Serialize};

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "strata:";
/// Format version of [`Record`]; a syncer refuses (and logs) records of a newer version.
pub const RECORD_VERSION: u32 = 1;
/// Seconds a verdict is kept in memcached.
pub const VERDICT_TTL: u32 = 600;

/// What a proxy writes (with `add`, no expiry) at a sequence number it reserved but does
/// not use, the queue being deeper than its `max_queue`: the syncer skips the position at
/// once instead of waiting for a record. (A syncer that predates it reads it as an
/// unreadable record, and skips it at once too.)
pub const QUEUE_FULL: &[u8] = b"strata:skipped:queue-full";

/// The key of the sequence counter.
pub fn seq_key(prefix: &str) -> String {
    format!("{prefix}seq")
}

/// The key of the queue's epoch.
pub fn epoch_key(prefix: &str) -> String {
    format!("{prefix}epoch")
}

/// The key of record `seq`.
pub fn record_key(prefix: &str, seq: u64) -> String {
    format!("{prefix}c:{seq}")
}

/// The key of the verdict on record `seq`.
pub fn verdict_key(prefix: &str, seq: u64) -> String {
    format!("{prefix}v:{seq}")
}

/// The key of the syncer's committed position.
pub fn applied_key(prefix: &str) -> String {
    format!("{prefix}applied")
}

/// The key of the published settings.
pub fn settings_key(prefix: &str) -> String {
    format!("{prefix}settings")
}

/// One submitted comment, as the visitor sent it (WordPress's `wp_unslash`ed, trimmed
/// fields; author with tags stripped), plus what PHP would have known about the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`RECORD_VERSION`].
    pub v: u32,
    /// The queue epoch the proxy saw when it reserved `seq`.
    pub epoch: u64,
    /// The reserved sequence number.
    pub seq: u64,
    /// `comment_post_ID` (PHP `(int)` semantics applied).
    pub post_id: u64,
    /// `comment_parent` (`absint`).
    pub parent: u64,
    /// `author`: `trim(strip_tags())`.
    pub author: String,
    /// `email`: trimmed.
    pub email: String,
    /// `url`: trimmed.
    pub url: String,
    /// `comment`: trimmed.
    pub content: String,
    /// The client address PHP would see as `REMOTE_ADDR` (the proxy's trusted view).
    pub ip: String,
    /// `User-Agent`, at most 254 bytes.
    pub agent: String,
    /// When the proxy accepted it: Unix milliseconds, UTC. The comment's date.
    pub accepted_ms: u64,
    /// `wp-comment-cookies-consent` was present.
    pub consent: bool,
    /// `redirect_to`, when the form sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
    /// The node that accepted it.
    pub node: String,
}

/// What became of a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Inserted with `comment_approved = '1'`.
    Approved,
    /// Inserted with `comment_approved = '0'` (held for moderation).
    Held,
    /// Inserted as spam.
    Spam,
    /// Inserted as trash (`disallowed_keys`).
    Trash,
    /// Not inserted: WordPress would have refused it (see `http` and `message`).
    Rejected,
    /// Not inserted, silently: WordPress answers an empty 200 (post missing, not public,
    /// password protected…).
    Ignored,
}

/// Where the syncer pushes the verdicts of each batch to the proxies' admin listeners
/// (`POST`, signed like a ban, body a [`VerdictBatch`]); the proxies still read the verdict
/// keys when a push does not come.
pub const VERDICTS_PATH: &str = "/comments/verdicts";

/// The verdicts of one batch, pushed to every proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictBatch {
    /// The queue epoch the sequence numbers belong to.
    pub epoch: u64,
    /// One verdict per applied record.
    pub verdicts: Vec<Verdict>,
}

/// Where the syncer sends, after a commit, the bans and the verdicts of a batch in one
/// request to each proxy (`POST ?wait=MS`, signed like a ban, body a [`Commit`]): the proxy
/// applies the bans, broadcasts them and waits up to `MS` for its siblings to acknowledge
/// them (as `/ban?wait=MS` does), and only then hands the verdicts to the waiting answers,
/// so a visitor sent to the new comment finds it on every node. Answer: [`Delivered`].
/// A proxy that predates it answers 404; the syncer then sends the two requests.
pub const COMMIT_PATH: &str = "/comments/commit";

/// Where an idle syncer waits for comments (`POST ?since=N&wait=MS&n=NONCE`, signed like a
/// ban, empty body): the proxy answers [`Queued`] at once when it has queued a number of
/// comments other than `N` since it started (or without `since`), else when it queues the
/// next one or `MS` passed. The syncer then looks at the queue at once instead of at its
/// next idle poll. A proxy that predates it answers 404; the syncer then polls.
pub const QUEUED_PATH: &str = "/comments/queued";

/// A proxy's answer on [`QUEUED_PATH`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// How many comments the proxy has queued since it started.
    pub queued: u64,
}

/// The bans and the verdicts of one batch, for one proxy (see [`COMMIT_PATH`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The tag bans, applied before any verdict is handed over (at most
    /// [`crate::ban::MAX_BANS_PER_REQUEST`]).
    pub bans: Vec<crate::ban::Ban>,
    /// The verdicts.
    pub batch: VerdictBatch,
}

/// A proxy's answer to a pushed [`VerdictBatch`]: the verdicts it handed to answers waiting
/// for them. The syncer writes the verdict keys only for the others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// How many verdicts were handed over.
    pub delivered: usize,
    /// Their sequence numbers (absent in the answers of older proxies: then none count as
    /// handed over).
    #[serde(default)]
    pub seqs: Vec<u64>,
}

impl Delivered {
    /// The answer for the verdicts handed over.
    pub fn new(seqs: Vec<u64>) -> Delivered {
        Delivered {
            delivered: seqs.len(),
            seqs,
        }
    }
}

/// The syncer's answer for one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The record's sequence number.
    pub seq: u64,
    /// What became of it.
    pub status: Status,
    /// The HTTP status WordPress would answer: 302 for inserted comments, else 200/403/409/429/500.
    pub http: u16,
    /// For rejections, WordPress's message (HTML, as inside `<p>…</p>` of its error page).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// For inserted comments, the `comment_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<u64>,
    /// For inserted comments, the full `Location` WordPress would send (permalink,
    /// moderation query for held comments without consent, `#comment-ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// For inserted comments, the values of the `comment_author_*` cookies as WordPress sets
    /// them: the stored (filtered) author and email, and `esc_url()` of the stored URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_author: Option<String>,
    /// See `cookie_author`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_email: Option<String>,
    /// See `cookie_author`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_url: Option<String>,
}

/// The site settings the proxies need to check comments and answer like WordPress,
/// published by the syncer from `wp_options`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// `require_name_email`.
    pub require_name_email: bool,
    /// `comment_registration`: anonymous comments are refused (the proxy passes them to PHP).
    pub comment_registration: bool,
    /// `show_comments_cookies_opt_in`.
    pub cookies_opt_in: bool,
    /// `md5(siteurl)`: the suffix of WordPress's cookie names.
    pub cookiehash: String,
    /// `COOKIEPATH`: the path of `home` plus `/`.
    pub cookie_path: String,
    /// Whether `home` is https (cookies get `secure`).
    pub secure: bool,
    /// `home`, for redirects back to a post when no verdict came in time.
    pub home: String,
    /// Largest accepted field sizes in bytes: author, email, url, content.
    pub max_lengths: [usize; 4],
    /// When the syncer published this, Unix milliseconds (proxies ignore stale settings).
    pub published_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_answers_of_older_proxies_name_no_verdict() {
        let old: Delivered = serde_json::from_str(r#"{"delivered":3}"#).unwrap();
        assert_eq!((old.delivered, old.seqs), (3, Vec::new()));
        let new = Delivered::new(vec![4, 9]);
        assert_eq!(new.delivered, 2);
        let json = serde_json::to_string(&new).unwrap();
        assert_eq!(json, r#"{"delivered":2,"seqs":[4,9]}"#);
        assert_eq!(serde_json::from_str::<Delivered>(&json).unwrap(), new);
    }

    #[test]
    fn keys_and_round_trips() {
        assert_eq!(record_key("strata:", 7), "strata:c:7");
        assert_eq!(verdict_key("x/", 7), "x/v:7");
        let v = Verdict {
            seq: 7,
            status: Status::Held,
            http: 302,
            message: String::new(),
            comment_id: Some(12),
            location: Some("http://a/p/?unapproved=12&moderation-hash=ab#comment-12".into()),
            cookie_author: None,
            cookie_email: None,
            cookie_url: None,
        };
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.contains("\"status\":\"held\""));
        assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap(), v);
    }
}
