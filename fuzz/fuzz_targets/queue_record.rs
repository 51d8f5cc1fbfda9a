//! The comment queue's records and the messages around them (`strata_wire::comment`) from
//! arbitrary bytes, decoded as the syncer decodes a queued record and as the proxy decodes a
//! pushed verdict batch or commit.
//!
//! Never a panic; whatever decodes encodes and decodes back the same (so nothing a proxy
//! writes can read differently at the syncer), and a record of a newer format version is
//! recognised as such. The record decoding lives in [`decode_record`] alone: when the
//! record's format or the syncer's decoding changes (a signature, a new field), this is the
//! one place to follow it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_wire::comment::{Commit, Delivered, Queued, Record, Settings, Verdict, VerdictBatch, RECORD_VERSION};

/// What the syncer makes of a queued record's bytes.
#[derive(Debug)]
enum Decoded {
    Record(Box<Record>),
    Newer(u32),
    Garbage,
}

/// The syncer's decoding of a queued record: the version first, then the record.
fn decode_record(bytes: &[u8]) -> Decoded {
    #[derive(serde::Deserialize)]
    struct Version {
        v: u32,
    }
    match serde_json::from_slice::<Version>(bytes) {
        Ok(v) if v.v > RECORD_VERSION => return Decoded::Newer(v.v),
        Ok(_) => {}
        Err(_) => return Decoded::Garbage,
    }
    match serde_json::from_slice::<Record>(bytes) {
        Ok(r) => Decoded::Record(Box::new(r)),
        Err(_) => Decoded::Garbage,
    }
}

/// The bytes a proxy writes for a record.
fn encode_record(r: &Record) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_else(|e| panic!("{r:?} does not serialise: {e}"))
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
    match decode_record(data) {
        Decoded::Record(r) => {
            assert!(r.v <= RECORD_VERSION);
            match decode_record(&encode_record(&r)) {
                Decoded::Record(back) => assert_eq!(back, r),
                other => panic!("{r:?} decodes back as {other:?}"),
            }
        }
        Decoded::Newer(v) => assert!(v > RECORD_VERSION),
        Decoded::Garbage => {}
    }
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
