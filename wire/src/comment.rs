//! The comment write-behind queue: what `strata-proxy` puts into memcached, what
//! `strata-syncer` answers, and what the syncer publishes for the proxies.
//!
//! Keys (all under a configurable prefix, default [`DEFAULT_PREFIX`]):
//! - `{prefix}seq`: the last reserved sequence number; proxies `incr` it (after `add`ing it
//!   as `0` when missing) to reserve the next one.
//! - `{prefix}epoch`: a random number `add`ed by whoever creates the queue. When memcached
//!   restarts, the queue, the counter and the epoch are gone together: a different epoch (or
//!   a counter below the syncer's cursor) tells the syncer that queued comments were lost.
//! - `{prefix}c:{seq}`: one [`Record`] (JSON, [sealed](seal)), written once with `add` after
//!   its number is reserved. A syncer that waited too long for it `add`s a skip marker there instead, so
//!   a late proxy's `add` fails and it hands the comment to PHP: never both, never neither.
//!   A proxy that reserved a number beyond its `max_queue` `add`s [`QUEUE_FULL`] there and
//!   hands the comment to PHP; the syncer passes that position without waiting for it.
//! - `{prefix}v:{epoch}:{seq}`: the syncer's [`Verdict`] on record `seq` of queue `epoch`
//!   (JSON, sealed), kept [`VERDICT_TTL`].
//! - `{prefix}settings`: the site's [`Settings`] (JSON, sealed), refreshed by the syncer
//!   every second.
//! - `{prefix}applied`: the last sequence number the syncer has committed (decimal), so a
//!   proxy can tell the queue's depth (`seq − applied`) before adding to it.
//!
//! The syncer's durable cursor (epoch, last applied sequence number) lives in MySQL and
//! moves in the same transaction as the comments it covers.
//!
//! memcached authenticates nobody, so whatever a reader acts on is sealed by its writer
//! with the cluster secret ([`seal`]): an HMAC-SHA256 over the key the value is stored
//! under and its bytes. Whoever can write to memcached but lacks the secret can neither
//! make a comment nor answer one; nor can they move a sealed value to another key: a
//! record to another position or queue, a verdict to another comment or queue epoch. The
//! numbers (`seq`, `epoch`, `applied`) and the position markers stay plain: memcached must
//! do arithmetic on the counter, and none of them carries anything a visitor is shown.

use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "strata:";
/// Format version of [`Record`] and of the sealed layout ([`seal`]); a syncer refuses (and
/// logs) records of a newer version. 1: records were not sealed.
pub const RECORD_VERSION: u32 = 2;
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

/// The key of the verdict on record `seq` of queue `epoch`.
pub fn verdict_key(prefix: &str, epoch: u64, seq: u64) -> String {
    format!("{prefix}v:{epoch}:{seq}")
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

type HmacSha256 = Hmac<Sha256>;

/// What a sealed value starts with: `{"v":`[`RECORD_VERSION`]`,"mac":"`, then the MAC (hex).
fn seal_head() -> String {
    format!("{{\"v\":{RECORD_VERSION},\"mac\":\"")
}

/// What follows the MAC in a sealed value, before the data.
const SEAL_MID: &[u8] = b"\",\"data\":";

/// Length of the MAC in hex.
const MAC_HEX: usize = 64;

/// Labels the MAC of a queue value, so that it can never pass for another kind of MAC made
/// with the same secret (an admin request's).
const SEAL_DOMAIN: &[u8] = b"strata-queue-seal\n";

fn seal_mac(secret: &[u8], key: &str, data: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(SEAL_DOMAIN);
    mac.update(key.as_bytes());
    // Keys hold no whitespace (memcached refuses them): the line break ends the key.
    mac.update(b"\n");
    mac.update(data);
    mac
}

/// Why a value read from memcached is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not in the sealed layout: written by a version that did not seal, or by something
    /// else than a Strata program.
    #[error("not sealed with the cluster secret (an older version's value, or not Strata's)")]
    Unsealed,
    /// Sealed, but not with this secret, not for this key, or altered since.
    #[error("the seal does not match (another secret, another key, or altered)")]
    Forged,
}

/// `data` sealed with the cluster `secret` for storing under `key`:
/// `{"v":2,"mac":"<HMAC-SHA256 hex>","data":<data>}`, the MAC over a label, the key and the
/// data's bytes. `data` is JSON, so the whole is JSON too, and a syncer that predates
/// sealing reads a record of a newer version in it (and waits for an upgrade rather than
/// skip it).
pub fn seal(secret: &[u8], key: &str, data: &[u8]) -> Vec<u8> {
    let mac = hex::encode(seal_mac(secret, key, data).finalize().into_bytes());
    let head = seal_head();
    let mut out = Vec::with_capacity(head.len() + MAC_HEX + SEAL_MID.len() + data.len() + 1);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(mac.as_bytes());
    out.extend_from_slice(SEAL_MID);
    out.extend_from_slice(data);
    out.push(b'}');
    out
}

/// The data of a value [`seal`]ed with `secret` for `key`, checked in constant time.
///
/// Errors: [`SealError::Unsealed`] when the value is not in the sealed layout,
/// [`SealError::Forged`] when its MAC does not match or is not spelt as [`seal`] spells it
/// (lower-case hex).
pub fn unseal<'a>(secret: &[u8], key: &str, value: &'a [u8]) -> Result<&'a [u8], SealError> {
    let rest = value.strip_prefix(seal_head().as_bytes()).ok_or(SealError::Unsealed)?;
    let (mac, rest) = rest.split_at_checked(MAC_HEX).ok_or(SealError::Unsealed)?;
    let data = rest
        .strip_prefix(SEAL_MID)
        .and_then(|r| r.strip_suffix(b"}"))
        .ok_or(SealError::Unsealed)?;
    // Only the spelling `seal` writes, lower case: `hex` reads capitals too, and a value
    // whose bytes the secret's holder never wrote must not open.
    if !mac.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(SealError::Forged);
    }
    let mac = hex::decode(mac).map_err(|_| SealError::Forged)?;
    seal_mac(secret, key, data)
        .verify_slice(&mac)
        .map_err(|_| SealError::Forged)?;
    Ok(data)
}

/// Why a sealed JSON value cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Its seal ([`unseal`]).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Sealed rightly, but not JSON of the expected type (a writer of another version).
    #[error("sealed but unreadable: {0}")]
    Json(#[from] serde_json::Error),
}

impl OpenError {
    /// Metric and log label: `unsigned`, `forged` or `unreadable`.
    pub fn as_str(&self) -> &'static str {
        match self {
            OpenError::Seal(SealError::Unsealed) => "unsigned",
            OpenError::Seal(SealError::Forged) => "forged",
            OpenError::Json(_) => "unreadable",
        }
    }
}

/// `value` as JSON, [`seal`]ed for `key`. Errors: it cannot be encoded as JSON (never for
/// the types of this module).
pub fn seal_json<T: Serialize>(secret: &[u8], key: &str, value: &T) -> Result<Vec<u8>, serde_json::Error> {
    Ok(seal(secret, key, &serde_json::to_vec(value)?))
}

/// The value sealed for `key` with [`seal_json`]. Errors: see [`OpenError`].
pub fn unseal_json<T: DeserializeOwned>(secret: &[u8], key: &str, value: &[u8]) -> Result<T, OpenError> {
    Ok(serde_json::from_slice(unseal(secret, key, value)?)?)
}

/// Why the value at a queue position is not a record to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Of a newer format than this version understands: a newer syncer will apply it.
    #[error("a record of format {0}, newer than this version's")]
    Newer(u32),
    /// Not sealed: an older proxy's record, or anything else.
    #[error("not sealed with the cluster secret")]
    Unsigned,
    /// Sealed, but the seal does not match.
    #[error("its seal does not match")]
    Forged,
    /// Sealed rightly, but not a record.
    #[error("sealed but not a record")]
    Unreadable,
    /// A rightly sealed record of another position or queue epoch (a copy of an old one).
    #[error("a record of position {seq} of queue {epoch}")]
    Misplaced {
        /// The record's epoch.
        epoch: u64,
        /// The record's position.
        seq: u64,
    },
}

impl RecordError {
    /// Metric and log label.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordError::Newer(_) => "newer",
            RecordError::Unsigned => "unsigned",
            RecordError::Forged => "forged",
            RecordError::Unreadable => "unreadable",
            RecordError::Misplaced { .. } => "misplaced",
        }
    }
}

impl Record {
    /// The record sealed for its position (`seq`) in the queue under `prefix`, as a proxy
    /// writes it.
    pub fn seal(&self, secret: &[u8], prefix: &str) -> Vec<u8> {
        // A record (strings and numbers) always encodes.
        let json = serde_json::to_vec(self).unwrap_or_default();
        seal(secret, &record_key(prefix, self.seq), &json)
    }

    /// The record stored at position `seq` of queue `epoch` (under `prefix`), checked: its
    /// seal, and that it was sealed for this very position and epoch.
    ///
    /// Errors: see [`RecordError`]; only [`RecordError::Newer`] is worth waiting for.
    pub fn open(secret: &[u8], prefix: &str, epoch: u64, seq: u64, value: &[u8]) -> Result<Record, RecordError> {
        let data = match unseal(secret, &record_key(prefix, seq), value) {
            Ok(data) => data,
            Err(SealError::Forged) => return Err(RecordError::Forged),
            Err(SealError::Unsealed) => {
                #[derive(Deserialize)]
                struct Version {
                    v: u32,
                }
                return match serde_json::from_slice::<Version>(value) {
                    Ok(v) if v.v > RECORD_VERSION => Err(RecordError::Newer(v.v)),
                    _ => Err(RecordError::Unsigned),
                };
            }
        };
        let r: Record = serde_json::from_slice(data).map_err(|_| RecordError::Unreadable)?;
        if (r.epoch, r.seq) != (epoch, seq) {
            return Err(RecordError::Misplaced {
                epoch: r.epoch,
                seq: r.seq,
            });
        }
        Ok(r)
    }
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
        assert_eq!(verdict_key("x/", 3, 7), "x/v:3:7");
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

    const SECRET: &[u8] = b"0123456789abcdef-cluster";

    fn record() -> Record {
        Record {
            v: RECORD_VERSION,
            epoch: 77,
            seq: 5,
            post_id: 12,
            parent: 3,
            author: "Ann".into(),
            email: "ann@example.test".into(),
            url: "http://ann.example".into(),
            content: "Hello \"there\" <b>you</b>\n".into(),
            ip: "203.0.113.9".into(),
            agent: "agent/1.0".into(),
            accepted_ms: 1_795_701_343_000,
            consent: true,
            redirect_to: Some("http://127.0.0.1:8080/thanks/".into()),
            node: "n1".into(),
        }
    }

    /// The data of a sealed value, and the value rebuilt around other data with the same MAC.
    fn reseal_with(sealed: &[u8], data: &[u8]) -> Vec<u8> {
        let head = seal_head().len() + MAC_HEX + SEAL_MID.len();
        let mut out = sealed[..head].to_vec();
        out.extend_from_slice(data);
        out.push(b'}');
        out
    }

    #[test]
    fn a_sealed_record_opens_at_its_own_position_only() {
        let r = record();
        let sealed = r.seal(SECRET, "q:");
        let json: serde_json::Value = serde_json::from_slice(&sealed).expect("a sealed value is JSON");
        assert_eq!(json["v"], RECORD_VERSION);
        assert_eq!(Record::open(SECRET, "q:", 77, 5, &sealed), Ok(r.clone()));
        // Another position, queue or prefix: the key differs, so the seal does not match.
        assert_eq!(Record::open(SECRET, "q:", 77, 6, &sealed), Err(RecordError::Forged));
        assert_eq!(Record::open(SECRET, "other:", 77, 5, &sealed), Err(RecordError::Forged));
        // Another secret.
        assert_eq!(
            Record::open(b"another-secret-0123", "q:", 77, 5, &sealed),
            Err(RecordError::Forged)
        );
        // Sealed rightly for this key, but for another epoch (a copy from before a
        // memcached restart), or naming another position.
        assert_eq!(
            Record::open(SECRET, "q:", 78, 5, &sealed),
            Err(RecordError::Misplaced { epoch: 77, seq: 5 })
        );
        let mut moved = r.clone();
        moved.seq = 9;
        let data = serde_json::to_vec(&moved).unwrap();
        let resealed = seal(SECRET, &record_key("q:", 5), &data);
        assert_eq!(
            Record::open(SECRET, "q:", 77, 5, &resealed),
            Err(RecordError::Misplaced { epoch: 77, seq: 9 })
        );
    }

    #[test]
    fn a_record_changed_in_any_field_is_refused() {
        let sealed = record().seal(SECRET, "q:");
        let data = unseal(SECRET, "q:c:5", &sealed).unwrap();
        let json: serde_json::Value = serde_json::from_slice(data).unwrap();
        let fields = json.as_object().unwrap();
        assert_eq!(fields.len(), 15, "every field of a record is tried");
        for (name, value) in fields {
            let mut changed = json.clone();
            changed[name] = match value {
                serde_json::Value::Number(n) => (n.as_u64().unwrap() + 1).into(),
                serde_json::Value::String(s) => format!("{s}x").into(),
                serde_json::Value::Bool(b) => (!b).into(),
                other => panic!("{name}: {other:?}"),
            };
            let forged = reseal_with(&sealed, &serde_json::to_vec(&changed).unwrap());
            assert_eq!(
                Record::open(SECRET, "q:", 77, 5, &forged),
                Err(RecordError::Forged),
                "{name} changed"
            );
        }
        // A field added, one removed, whitespace added: other bytes, refused too.
        let mut added = json.clone();
        added["extra"] = 1.into();
        let mut removed = json.clone();
        removed.as_object_mut().unwrap().remove("redirect_to");
        let spaced = serde_json::to_vec_pretty(&json).unwrap();
        for data in [
            serde_json::to_vec(&added).unwrap(),
            serde_json::to_vec(&removed).unwrap(),
            spaced,
        ] {
            assert_eq!(
                Record::open(SECRET, "q:", 77, 5, &reseal_with(&sealed, &data)),
                Err(RecordError::Forged)
            );
        }
        // The MAC changed.
        let mut flipped = sealed.clone();
        let at = seal_head().len();
        flipped[at] = if flipped[at] == b'0' { b'1' } else { b'0' };
        assert_eq!(Record::open(SECRET, "q:", 77, 5, &flipped), Err(RecordError::Forged));
        let mut not_hex = sealed.clone();
        not_hex[at] = b'z';
        assert_eq!(Record::open(SECRET, "q:", 77, 5, &not_hex), Err(RecordError::Forged));
    }

    /// Found by fuzzing (`queue_record`): the MAC was read with `hex::decode`, which takes
    /// capitals too, so a sealed record with a letter of its MAC capitalised (bytes the
    /// secret's holder never wrote) opened as the record.
    #[test]
    fn a_seal_opens_only_as_it_was_written() {
        let sealed = record().seal(SECRET, "q:");
        let head = seal_head().len();
        let mut letters = 0;
        for at in head..head + MAC_HEX {
            if sealed[at].is_ascii_lowercase() {
                letters += 1;
                let mut capital = sealed.clone();
                capital[at] = sealed[at].to_ascii_uppercase();
                assert_eq!(
                    Record::open(SECRET, "q:", 77, 5, &capital),
                    Err(RecordError::Forged),
                    "byte {at}"
                );
            }
        }
        assert!(letters > 0, "the MAC of the example has letters");
        let all_capitals = sealed.to_ascii_uppercase();
        let mut capitals = sealed.clone();
        capitals[head..head + MAC_HEX].copy_from_slice(&all_capitals[head..head + MAC_HEX]);
        assert_eq!(unseal(SECRET, "q:c:5", &capitals), Err(SealError::Forged));
    }

    #[test]
    fn unsealed_values_are_told_from_newer_ones() {
        // A record of the unsealed format (an older proxy's), or one forged without a seal.
        let mut old = record();
        old.v = 1;
        let plain = serde_json::to_vec(&old).unwrap();
        assert_eq!(Record::open(SECRET, "q:", 77, 5, &plain), Err(RecordError::Unsigned));
        let mut claims = record();
        claims.v = RECORD_VERSION;
        let plain = serde_json::to_vec(&claims).unwrap();
        assert_eq!(Record::open(SECRET, "q:", 77, 5, &plain), Err(RecordError::Unsigned));
        for junk in [
            &b""[..],
            b"nonsense",
            b"{}",
            QUEUE_FULL,
            b"{\"v\":2,\"mac\":\"ab\",\"data\":{}}",
        ] {
            assert_eq!(
                Record::open(SECRET, "q:", 77, 5, junk),
                Err(RecordError::Unsigned),
                "{junk:?}"
            );
        }
        // A later format: waited for, not skipped.
        assert_eq!(
            Record::open(SECRET, "q:", 77, 5, b"{\"v\":3,\"mac\":\"00\",\"data\":{}}"),
            Err(RecordError::Newer(3))
        );
        // Sealed rightly, but no record inside.
        let sealed = seal(SECRET, "q:c:5", b"{\"hello\":1}");
        assert_eq!(Record::open(SECRET, "q:", 77, 5, &sealed), Err(RecordError::Unreadable));
        let labels = [
            RecordError::Newer(3),
            RecordError::Unsigned,
            RecordError::Forged,
            RecordError::Unreadable,
            RecordError::Misplaced { epoch: 1, seq: 1 },
        ]
        .map(RecordError::as_str);
        assert_eq!(labels, ["newer", "unsigned", "forged", "unreadable", "misplaced"]);
    }

    #[test]
    fn verdicts_and_settings_open_under_their_own_key_only() {
        let v = Verdict {
            seq: 5,
            status: Status::Rejected,
            http: 409,
            message: "Duplicate comment detected".into(),
            comment_id: None,
            location: None,
            cookie_author: None,
            cookie_email: None,
            cookie_url: None,
        };
        let key = verdict_key("q:", 77, 5);
        let sealed = seal_json(SECRET, &key, &v).unwrap();
        assert_eq!(unseal_json::<Verdict>(SECRET, &key, &sealed).unwrap(), v);
        // The same verdict moved to another comment or to the same number of another epoch.
        for other in [verdict_key("q:", 77, 6), verdict_key("q:", 78, 5)] {
            assert!(matches!(
                unseal_json::<Verdict>(SECRET, &other, &sealed),
                Err(OpenError::Seal(SealError::Forged))
            ));
        }
        // A verdict written in plain JSON, as by an older syncer or a forger.
        let plain = serde_json::to_vec(&v).unwrap();
        let e = unseal_json::<Verdict>(SECRET, &key, &plain).unwrap_err();
        assert!(matches!(e, OpenError::Seal(SealError::Unsealed)));
        assert_eq!(e.as_str(), "unsigned");
        // Sealed rightly, but not a verdict.
        let e = unseal_json::<Verdict>(SECRET, &key, &seal(SECRET, &key, b"[1]")).unwrap_err();
        assert_eq!(e.as_str(), "unreadable");
        // A verdict's seal does not open the settings, nor a record.
        assert!(matches!(
            unseal_json::<Settings>(SECRET, &settings_key("q:"), &sealed),
            Err(OpenError::Seal(SealError::Forged))
        ));
        let settings = Settings {
            require_name_email: true,
            comment_registration: false,
            cookies_opt_in: true,
            cookiehash: "ef301f25d1b8e2bca70fafc1316f1a92".into(),
            cookie_path: "/".into(),
            secure: false,
            home: "http://127.0.0.1:8080".into(),
            max_lengths: [245, 100, 200, 65525],
            published_ms: 9,
        };
        let sealed = seal_json(SECRET, &settings_key("q:"), &settings).unwrap();
        assert_eq!(
            unseal_json::<Settings>(SECRET, &settings_key("q:"), &sealed).unwrap(),
            settings
        );
        let data = unseal(SECRET, &settings_key("q:"), &sealed).unwrap();
        let evil = String::from_utf8(data.to_vec())
            .unwrap()
            .replace("127.0.0.1:8080", "evil.example");
        assert!(matches!(
            unseal_json::<Settings>(SECRET, &settings_key("q:"), &reseal_with(&sealed, evil.as_bytes())),
            Err(OpenError::Seal(SealError::Forged))
        ));
    }
}
