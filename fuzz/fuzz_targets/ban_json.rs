//! Ban messages (`strata_wire::ban`) from arbitrary bytes, read as `POST /ban` reads them
//! (one ban or an array of them) and as a sibling's sync message, then compiled into the
//! proxy's `bans::Compiled` and matched.
//!
//! Never a panic; what reads back writes out and reads back the same; a compiled ban with a
//! host never selects another host's keys, `all` without one selects everything, a tag ban
//! selects exactly the objects carrying its tag.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use strata_proxy::bans::Compiled;
use strata_proxy::policy::normalise_host;
use strata_wire::ban::{Ban, Kind, SyncReply, SyncRequest};

/// Round trip: serialised and read back, the same value.
fn round_trips<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_vec(v).unwrap_or_else(|e| panic!("{v:?} does not serialise: {e}"));
    let back: T = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{v:?} does not read back: {e}"));
    assert_eq!(&back, v);
}

fn compile_and_match(ban: &Ban) {
    round_trips(ban);
    let strip = ["utm_*".to_string(), "fbclid".to_string()];
    let Ok(c) = Compiled::new(ban.clone(), &strip) else {
        return;
    };
    let tag: Arc<str> = Arc::from(ban.value.trim());
    let other: Arc<str> = Arc::from("strata-fuzz-no-such-tag");
    let keys = [
        "example.test/".to_string(),
        format!("example.test{}", ban.value),
        format!("{}/", ban.host.as_deref().unwrap_or("elsewhere.test")),
        "another-host.invalid/x?y".to_string(),
    ];
    for key in &keys {
        let hit = c.matches(key, std::slice::from_ref(&tag));
        let _ = c.matches(key, &[]);
        if ban.host.is_none() && ban.kind == Kind::All {
            assert!(hit);
        }
        if ban.kind == Kind::Tag && ban.host.is_none() {
            assert!(hit, "a tag ban missed its own tag");
            assert!(
                !c.matches(key, std::slice::from_ref(&other)) || *other == *tag,
                "a tag ban hit another tag"
            );
        }
    }
    // Where the host comes from `host` alone (URLs and absolute prefixes bring their own).
    let own_host = match ban.kind {
        Kind::Url => false,
        Kind::Prefix => ban.value.starts_with('/'),
        _ => true,
    };
    if let (Some(h), true) = (&ban.host, own_host) {
        let selected = c.matches("another-host.invalid/x?y", std::slice::from_ref(&tag));
        assert!(
            !selected || normalise_host(h) == "another-host.invalid",
            "a ban for host {h:?} selected another host's key"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // POST /ban: one ban, or an array of them.
    let is_array = data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if is_array {
        if let Ok(items) = serde_json::from_slice::<Vec<serde_json::Value>>(data) {
            for item in items.into_iter().take(64) {
                if let Ok(ban) = serde_json::from_value::<Ban>(item) {
                    compile_and_match(&ban);
                }
            }
        }
    } else if let Ok(ban) = serde_json::from_slice::<Ban>(data) {
        compile_and_match(&ban);
    }
    // Between nodes.
    if let Ok(sync) = serde_json::from_slice::<SyncRequest>(data) {
        round_trips(&sync);
        for s in sync.bans.iter().take(64) {
            compile_and_match(&s.ban);
        }
    }
    if let Ok(reply) = serde_json::from_slice::<SyncReply>(data) {
        round_trips(&reply);
    }
});
