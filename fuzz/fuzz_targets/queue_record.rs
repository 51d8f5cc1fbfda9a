//! The comment queue (`strata_wire::comment`): sealed records as the syncer opens them
//! ([`Record::open`]), and the messages around them as the proxy and the syncer read them.
//!
//! memcached authenticates nobody, so a record is sealed with the cluster secret for its
//! queue position. The input is used twice:
//!
//! - as it is, it is what someone without the secret wrote at a queue position (the position,
//!   epoch and prefix chosen as below). Opened there it is never a record, and only for the
//!   reason its bytes give: not in the sealed layout (`Unsigned`, or `Newer` when it is JSON
//!   of a later version), or a seal that does not match (`Forged`); never `Unreadable` nor
//!   `Misplaced`, which only a matching seal gets to. The same bytes, decoded as a verdict
//!   batch, commit, verdict, settings, delivery or queued answer, encode and decode back the
//!   same.
//! - read with `arbitrary::Unstructured`, it chooses a [`Case`]: a record as a proxy writes
//!   it (every field the fuzzer's), a key prefix, another position and epoch, a byte to flip.
//!   The record sealed with the secret opens back to itself at its own position and epoch;
//!   at another position, under another prefix or with another secret it is `Forged`; at
//!   another epoch (a copy from before a memcached restart) it is `Misplaced`, naming its
//!   own; with any one byte changed it is refused, as the layout says for the byte's place.
//!
//! The target knows the secret, but never learns a MAC made with it: the MAC is checked in
//! constant time, so no comparison hands its bytes to libFuzzer, and no input can open.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Unstructured};
use libfuzzer_sys::fuzz_target;
use strata_wire::comment::{
    record_key, unseal, Commit, Delivered, Queued, Record, RecordError, SealError, Settings, Verdict, VerdictBatch,
    DEFAULT_PREFIX, RECORD_VERSION,
};

/// The fuzzed cluster's secret.
const SECRET: &[u8] = b"strata-fuzz-cluster-secret-0123456789";
/// Another cluster's, sharing the memcached.
const OTHER_SECRET: &[u8] = b"strata-fuzz-another-cluster-secret-0";

/// The sealed layout, as `strata_wire::comment::seal` documents it:
/// `{"v":RECORD_VERSION,"mac":"<64 hex digits>","data":<data>}`.
const MAC_HEX: usize = 64;
const SEAL_MID: &[u8] = b"\",\"data\":";

/// What the input chooses besides its own bytes.
#[derive(Debug)]
struct Case {
    /// The queue's key prefix, as the configuration accepts it.
    prefix: String,
    /// A record as a proxy writes it.
    record: Record,
    /// A position other than the record's.
    other_seq: u64,
    /// An epoch other than the record's.
    other_epoch: u64,
    /// Where to change a byte of the sealed record (modulo its length).
    flip_at: usize,
    /// What to change it with (xor, never 0).
    flip: u8,
}

fn case(u: &mut Unstructured) -> arbitrary::Result<Case> {
    // The byte to change first: the strings that follow take what they like of the input,
    // and a change read from what is left would mostly be the default one.
    let flip = u.int_in_range(1..=u8::MAX)?;
    let flip_at = usize::from(u.arbitrary::<u16>()?);
    let prefix: String = u.arbitrary()?;
    // The configuration's rule (syncer `key_prefix`): memcached keys hold no whitespace.
    let prefix = if prefix.len() > 200 || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        DEFAULT_PREFIX.to_string()
    } else {
        prefix
    };
    let record = Record {
        // A proxy writes its own version; only the seal stands between others and the rest.
        v: RECORD_VERSION,
        epoch: u.arbitrary()?,
        seq: u.arbitrary()?,
        post_id: u.arbitrary()?,
        parent: u.arbitrary()?,
        author: u.arbitrary()?,
        email: u.arbitrary()?,
        url: u.arbitrary()?,
        content: u.arbitrary()?,
        ip: u.arbitrary()?,
        agent: u.arbitrary()?,
        accepted_ms: u.arbitrary()?,
        consent: u.arbitrary()?,
        redirect_to: u.arbitrary()?,
        node: u.arbitrary()?,
    };
    let other_seq = record.seq.wrapping_add(u.int_in_range(1..=u64::MAX)?);
    let other_epoch = record.epoch.wrapping_add(u.int_in_range(1..=u64::MAX)?);
    Ok(Case {
        prefix,
        record,
        other_seq,
        other_epoch,
        flip_at,
        flip,
    })
}

/// The format version a value claims, as a syncer of any version reads it first.
fn version(value: &[u8]) -> Option<u32> {
    #[derive(serde::Deserialize)]
    struct Version {
        v: u32,
    }
    serde_json::from_slice::<Version>(value).ok().map(|v| v.v)
}

/// `value`, written by someone without the secret at position `seq` of queue `epoch`: never
/// a record, and refused for what its bytes are.
fn unsealed_never_opens(value: &[u8], prefix: &str, epoch: u64, seq: u64) {
    let seal = unseal(SECRET, &record_key(prefix, seq), value);
    match Record::open(SECRET, prefix, epoch, seq, value) {
        Ok(r) => panic!("opened without the secret: {r:?}"),
        Err(e @ (RecordError::Unreadable | RecordError::Misplaced { .. })) => {
            panic!("{e:?}: the seal of a value made without the secret matched")
        }
        Err(RecordError::Forged) => assert_eq!(seal, Err(SealError::Forged)),
        Err(RecordError::Unsigned) => {
            assert_eq!(seal, Err(SealError::Unsealed));
            assert!(
                version(value).is_none_or(|v| v <= RECORD_VERSION),
                "a newer version missed"
            );
        }
        Err(RecordError::Newer(v)) => {
            assert_eq!(seal, Err(SealError::Unsealed));
            assert!(v > RECORD_VERSION);
            assert_eq!(version(value), Some(v));
        }
    }
}

/// A record sealed with the secret: opens at its own position and epoch only, and not once
/// a byte of it changed.
fn sealed_opens_in_place_only(c: &Case) {
    let r = &c.record;
    let p = c.prefix.as_str();
    let sealed = r.seal(SECRET, p);
    assert_eq!(Record::open(SECRET, p, r.epoch, r.seq, &sealed).as_ref(), Ok(r));
    // JSON of the record's version: a syncer that predates sealing waits for an upgrade.
    assert_eq!(version(&sealed), Some(RECORD_VERSION));

    // Elsewhere: the key differs (position, prefix) or the secret does, so the seal does not
    // match; another epoch shares the key, and the record inside names its own.
    assert_eq!(
        Record::open(SECRET, p, r.epoch, c.other_seq, &sealed),
        Err(RecordError::Forged)
    );
    let other_prefix = format!("{p}x");
    assert_eq!(
        Record::open(SECRET, &other_prefix, r.epoch, r.seq, &sealed),
        Err(RecordError::Forged)
    );
    assert_eq!(
        Record::open(OTHER_SECRET, p, r.epoch, r.seq, &sealed),
        Err(RecordError::Forged)
    );
    assert_eq!(
        Record::open(SECRET, p, c.other_epoch, r.seq, &sealed),
        Err(RecordError::Misplaced {
            epoch: r.epoch,
            seq: r.seq
        })
    );

    // One byte changed: outside the MAC and the data the layout breaks (the version read
    // first, as of an unsealed value); inside them the seal no longer matches.
    let json = serde_json::to_vec(r).unwrap_or_else(|e| panic!("{r:?} does not serialise: {e}"));
    let data_at = sealed.len() - 1 - json.len();
    let mac_at = data_at - SEAL_MID.len() - MAC_HEX;
    assert_eq!(&sealed[data_at..sealed.len() - 1], &json[..], "the layout");
    assert_eq!(&sealed[mac_at + MAC_HEX..data_at], SEAL_MID, "the layout");
    let at = c.flip_at % sealed.len();
    let mut changed = sealed.clone();
    changed[at] ^= c.flip;
    let opened = Record::open(SECRET, p, r.epoch, r.seq, &changed);
    let (place, refused_rightly) = if at < mac_at {
        let newer = matches!(opened, Err(RecordError::Newer(v)) if v > RECORD_VERSION);
        ("the head", newer || opened == Err(RecordError::Unsigned))
    } else if at < mac_at + MAC_HEX {
        ("the MAC", opened == Err(RecordError::Forged))
    } else if at < data_at {
        ("the separator", opened == Err(RecordError::Unsigned))
    } else if at < sealed.len() - 1 {
        ("the data", opened == Err(RecordError::Forged))
    } else {
        ("the closing brace", opened == Err(RecordError::Unsigned))
    };
    assert!(
        refused_rightly,
        "byte {at} ({place}) changed from {:?} to {:?}: {opened:?}",
        sealed[at] as char, changed[at] as char
    );
}

fn round_trips<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_vec(v).unwrap_or_else(|e| panic!("{v:?} does not serialise: {e}"));
    let back: T = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{v:?} does not read back: {e}"));
    assert_eq!(&back, v);
}

fuzz_target!(|data: &[u8]| {
    let Ok(c) = case(&mut Unstructured::new(data)) else {
        return;
    };
    unsealed_never_opens(data, &c.prefix, c.record.epoch, c.record.seq);
    sealed_opens_in_place_only(&c);

    if let Ok(b) = serde_json::from_slice::<VerdictBatch>(data) {
        round_trips(&b);
    }
    if let Ok(c) = serde_json::from_slice::<Commit>(data) {
        round_trips(&c);
    }
    if let Ok(v) = serde_json::from_slice::<Verdict>(data) {
        round_trips(&v);
    }
    if let Ok(s) = serde_json::from_slice::<Settings>(data) {
        round_trips(&s);
    }
    if let Ok(d) = serde_json::from_slice::<Delivered>(data) {
        round_trips(&d);
    }
    if let Ok(q) = serde_json::from_slice::<Queued>(data) {
        round_trips(&q);
    }
});
