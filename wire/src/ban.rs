//! Bans: what an invalidation names, and the messages nodes exchange to spread them.
//!
//! A [`Ban`], or a JSON array of at most [`MAX_BANS_PER_REQUEST`] of them applied in order,
//! is what `POST /ban` carries (from `strata-proxy ban`, the syncer or an operator's script).
//! Between nodes, a [`SyncRequest`] carries the sender's latest sequence number (a heartbeat)
//! and the bans a sibling has not acknowledged yet, each with its sequence number; the
//! [`SyncReply`] says how far the receiver has applied and where the receiver itself is.

use serde::{Deserialize, Serialize};

/// Path of the ban endpoint on the admin listener.
pub const BAN_PATH: &str = "/ban";
/// Most bans one `POST /ban` may carry as an array: a proxy refuses a longer one with a 400
/// (applying none of it), and the syncer sends more pending tags than this in several
/// requests. A thousand tag bans (about 50 bytes each) fit well within the admin listener's
/// 64 KiB body limit.
pub const MAX_BANS_PER_REQUEST: usize = 1000;
/// Path of the node-to-node exchange on the admin listener.
pub const SYNC_PATH: &str = "/cluster/sync";

/// What a ban selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One URL with all its variants: an absolute URL, or a path with `host`.
    Url,
    /// Every URL starting with a prefix: an absolute URL prefix, or a path prefix with `host`.
    Prefix,
    /// Every cache key (`host/path?query`) a regular expression matches.
    Regex,
    /// Every object carrying a tag.
    Tag,
    /// Everything.
    All,
}

impl Kind {
    /// The lower-case name used in JSON, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Url => "url",
            Kind::Prefix => "prefix",
            Kind::Regex => "regex",
            Kind::Tag => "tag",
            Kind::All => "all",
        }
    }
}

/// One invalidation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ban {
    /// What `value` means.
    pub kind: Kind,
    /// The URL, prefix, regular expression or tag; ignored for `all`.
    #[serde(default)]
    pub value: String,
    /// Limits the ban to one site (`Host`), and gives paths their host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Mark matching objects stale (served while refreshed) instead of removing them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub soft: bool,
    /// A soft ban whose pages may lag: a node refreshes each page it marks at most once per
    /// its `[cache] list_refresh`, when the ban is of a tag in its `[cache] list_tags` (the
    /// syncer's list and recent-comments bans). Ignored on hard bans and other kinds. Absent
    /// means `false`, so older senders' bans stay exact; a proxy older than this field
    /// refuses bans that carry it (upgrade the proxies before the syncer).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bounded: bool,
    /// The ban's identity across the cluster: random and non-zero, given once by the node
    /// that takes the ban first (or by the syncer, the same to every proxy) and kept as it
    /// is passed on, so every node can tell which bans another has applied (shielding
    /// relies on it). `0`: none yet (a ban from an older sender, or from a person).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: u64,
    /// Instead of dropping a page the ban selects, change it so (a tag ban's only): a page
    /// the patch cannot be applied to is banned as the rest of the ban says. Only the syncer
    /// sends patches, to every proxy; a node passes the ban on to its siblings without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Box<crate::patch::Patch>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Ban {
    /// A hard ban of one kind and value, for every host.
    pub fn new(kind: Kind, value: impl Into<String>) -> Ban {
        Ban {
            kind,
            value: value.into(),
            host: None,
            soft: false,
            bounded: false,
            id: 0,
            patch: None,
        }
    }

    /// This ban with a fresh random id when it has none yet.
    pub fn with_id(mut self) -> Ban {
        if self.id == 0 {
            self.id = crate::ids::random_u64();
        }
        self
    }

    /// A hard ban of everything.
    pub fn all() -> Ban {
        Ban::new(Kind::All, "")
    }
}

/// A ban on its way to a sibling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequenced {
    /// The sender's sequence number for this ban (1, 2, 3… per sender incarnation).
    pub seq: u64,
    /// When the sender applied it, Unix milliseconds (for propagation latency).
    pub at_ms: u64,
    /// The ban.
    pub ban: Ban,
}

/// Node-to-node exchange: a heartbeat carrying any bans the receiver has not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The sender's node id.
    pub node: String,
    /// Random per start of the sender: a new value means the sender restarted.
    pub instance: u64,
    /// The sender's latest sequence number: the receiver is current with the sender when it
    /// has applied this far.
    pub latest: u64,
    /// Bans in sequence order, oldest first.
    #[serde(default)]
    pub bans: Vec<Sequenced>,
    /// Counts the sender's syncs, so that no two signed syncs are alike (replay protection).
    #[serde(default)]
    pub msg: u64,
    /// The sender is shutting down cleanly: once this sync is applied, the receiver holds
    /// everything it will ever send, so its restart need not flush anyone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
}

/// The receiver's answer to a [`SyncRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReply {
    /// The receiver's node id.
    pub node: String,
    /// The receiver's incarnation.
    pub instance: u64,
    /// The receiver's own latest sequence number.
    pub latest: u64,
    /// The highest of the sender's sequence numbers the receiver has applied.
    pub applied: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_read_the_documented_json() {
        let b: Ban = serde_json::from_str(r#"{"kind":"tag","value":"post:12"}"#).unwrap();
        assert_eq!(b, Ban::new(Kind::Tag, "post:12"));
        let b: Ban = serde_json::from_str(r#"{"kind":"all"}"#).unwrap();
        assert_eq!(b, Ban::all());
        let b: Ban = serde_json::from_str(r#"{"kind":"url","value":"/a/","host":"x","soft":true}"#).unwrap();
        assert!(b.soft);
        assert!(!b.bounded, "absent: exact");
        assert_eq!(b.host.as_deref(), Some("x"));
        let b: Ban = serde_json::from_str(r#"{"kind":"tag","value":"list","soft":true,"bounded":true}"#).unwrap();
        assert!(b.soft && b.bounded);
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"kind":"tag","value":"list","soft":true,"bounded":true}"#
        );
        assert_eq!(
            serde_json::to_string(&Ban::new(Kind::Tag, "post:1")).unwrap(),
            r#"{"kind":"tag","value":"post:1"}"#,
            "an exact ban reads as it did before the field"
        );
        assert!(serde_json::from_str::<Ban>(r#"{"kind":"nope","value":"x"}"#).is_err());
        assert!(serde_json::from_str::<Ban>(r#"{"kind":"tag","value":"x","extra":1}"#).is_err());
    }

    #[test]
    fn ids_round_trip_and_are_left_out_when_none() {
        let none = Ban::new(Kind::Tag, "post:12");
        let json = serde_json::to_string(&none).unwrap();
        assert_eq!(json, r#"{"kind":"tag","value":"post:12"}"#, "as older nodes write it");
        assert_eq!(serde_json::from_str::<Ban>(&json).unwrap().id, 0);
        let with = Ban {
            id: 0x8000_0000_0000_0001,
            ..none.clone()
        };
        let json = serde_json::to_string(&with).unwrap();
        assert_eq!(json, r#"{"kind":"tag","value":"post:12","id":9223372036854775809}"#);
        assert_eq!(serde_json::from_str::<Ban>(&json).unwrap(), with);
        // An id is given once, and kept after.
        let given = none.with_id();
        assert_ne!(given.id, 0);
        assert_eq!(given.clone().with_id().id, given.id);
    }

    #[test]
    fn sync_messages_round_trip() {
        let m = SyncRequest {
            node: "a".into(),
            instance: 7,
            latest: 3,
            bans: vec![Sequenced {
                seq: 3,
                at_ms: 1,
                ban: Ban::new(Kind::Prefix, "/x"),
            }],
            msg: 9,
            leaving: false,
        };
        let back: SyncRequest = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            serde_json::to_string(&Ban::all()).unwrap(),
            r#"{"kind":"all","value":""}"#
        );
    }
}
