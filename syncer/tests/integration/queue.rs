//! The queue: memcached restarts, records that never arrive, records of a newer format,
//! values not sealed with the cluster secret (skipped, never inserted), and MySQL failures
//! (nothing moves, nothing is lost).

use std::time::Duration;

use strata_syncer::config::Config;
use strata_wire::comment::{self as wire, Status};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_memcached_restart_is_detected_and_the_new_queue_applied() {
    let mut env = Env::new("").await;
    let t = token();
    let post = open_post(&env.db, &t).await;
    let a = env
        .push(record(
            post,
            "R",
            &format!("r1-{t}@example.test"),
            "",
            &format!("before {t}"),
            &ip_for(&format!("{t}a")),
        ))
        .await;
    let report = env.drain().await;
    assert_eq!(report.cursor.seq, a);
    let old_epoch = report.cursor.epoch;
    // A number reserved but never written: the syncer sees the counter at 2 and waits.
    let _ = env.reserve().await;
    env.syncer.tick().await.unwrap();
    // memcached restarts: everything is gone; a proxy starts a new queue.
    env.wipe(2).await;
    let b = env
        .push(record(
            post,
            "R",
            &format!("r2-{t}@example.test"),
            "",
            &format!("after {t}"),
            &ip_for(&format!("{t}b")),
        ))
        .await;
    assert_eq!(b, 1);
    let report = env.syncer.tick().await.unwrap();
    assert!(report.reset, "{report:?}");
    assert_ne!(report.cursor.epoch, old_epoch);
    let report = env.drain().await;
    assert_eq!(report.cursor.seq, 1);
    assert_eq!(env.verdict(b).await.unwrap().status, Status::Approved);
    let text = env.metrics.render();
    assert!(text.contains("strata_syncer_memcached_resets_total 1"), "{text}");
    assert!(text.contains("strata_syncer_lost_comments_total 1"), "{text}");
    env.finish(Some(&t)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_never_arrives_is_skipped_after_missing_wait() {
    let mut env = Env::new("").await;
    let t = token();
    let post = open_post(&env.db, &t).await;
    let (hole, _) = env.reserve().await;
    let next = env
        .push(record(
            post,
            "S",
            &format!("s-{t}@example.test"),
            "",
            &format!("after the hole {t}"),
            &ip_for(&t),
        ))
        .await;
    assert_eq!(next, hole + 1);
    let report = env.syncer.tick().await.unwrap();
    assert_eq!(report.applied, 0, "waits for the missing record first");
    assert_eq!(report.cursor.seq, hole - 1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let report = env.drain().await;
    assert_eq!(report.cursor.seq, next);
    assert!(env.verdict(hole).await.is_none());
    // The position is claimed: a proxy writing its record late (with add) is refused.
    let late = wire::record_key(&env.prefix, hole);
    assert!(!env.mc.add(&late, b"{}", 0).await.unwrap());
    assert_eq!(env.verdict(next).await.unwrap().status, Status::Approved);
    assert!(env.metrics.render().contains("reason=\"missing\""));
    env.finish(Some(&t)).await;
}

/// A proxy that reserved a number beyond its `max_queue` marks it: the syncer passes it in
/// the same tick, without waiting `missing_wait` for a record.
#[tokio::test(flavor = "multi_thread")]
async fn a_position_marked_queue_full_is_skipped_without_waiting() {
    let mut env = Env::new("").await;
    let t = token();
    let post = open_post(&env.db, &t).await;
    let (marked, _) = env.reserve().await;
    let key = wire::record_key(&env.prefix, marked);
    assert!(env.mc.add(&key, wire::QUEUE_FULL, 0).await.unwrap());
    let next = env
        .push(record(
            post,
            "Q",
            &format!("q-{t}@example.test"),
            "",
            &format!("after a queue-full mark {t}"),
            &ip_for(&t),
        ))
        .await;
    assert_eq!(next, marked + 1);
    let report = env.syncer.tick().await.unwrap();
    assert_eq!((report.applied, report.cursor.seq), (2, next), "{report:?}");
    assert!(env.verdict(marked).await.is_none());
    assert_eq!(env.verdict(next).await.unwrap().status, Status::Approved);
    assert!(env.metrics.render().contains("reason=\"queue-full\""));
    assert_eq!(
        env.mc.get(&key).await.unwrap(),
        None,
        "the mark, which never expires, is deleted"
    );
    env.finish(Some(&t)).await;
}

/// Whoever can write to memcached but lacks the cluster secret cannot make a comment:
/// values that are not a record sealed for their very position and epoch are skipped
/// (logged, counted, overwritten with a tombstone), nothing of theirs is inserted, and the
/// queue goes on with the next real record in the same tick.
#[tokio::test(flavor = "multi_thread")]
async fn records_not_sealed_for_their_position_are_skipped_never_inserted() {
    let mut env = Env::new("").await;
    let t = token();
    let post = open_post(&env.db, &t).await;
    let comment = |n: &str| {
        record(
            post,
            "F",
            &format!("{n}-{t}@example.test"),
            "",
            &format!("{n} {t}"),
            &ip_for(&format!("{t}{n}")),
        )
    };
    let first = env.push(comment("real-first")).await;
    let first_sealed = env
        .mc
        .get(&wire::record_key(&env.prefix, first))
        .await
        .unwrap()
        .unwrap();

    // As a proxy of the unsealed format (or anyone) writes it: plain JSON, version 1.
    let mut plain = comment("forged-unsigned");
    plain.v = 1;
    let (seq, epoch) = env.reserve().await;
    (plain.seq, plain.epoch) = (seq, epoch);
    let key = wire::record_key(&env.prefix, seq);
    env.mc.set(&key, &serde_json::to_vec(&plain).unwrap(), 0).await.unwrap();
    let unsigned = seq;

    // Sealed with another secret.
    let (seq, epoch) = env.reserve().await;
    let mut other = comment("forged-secret");
    (other.seq, other.epoch) = (seq, epoch);
    env.mc
        .set(
            &wire::record_key(&env.prefix, seq),
            &other.seal(b"not-the-cluster-secret", &env.prefix),
            0,
        )
        .await
        .unwrap();
    let wrong_secret = seq;

    // The first record's sealed value copied to another position (a replay).
    let (replayed, _) = env.push_raw(&first_sealed).await;

    // Sealed rightly for its position, but for a queue epoch gone by (a copy kept from before
    // a memcached restart).
    let (seq, epoch) = env.reserve().await;
    let mut stale = comment("forged-epoch");
    (stale.seq, stale.epoch) = (seq, epoch.wrapping_add(1));
    env.mc
        .set(
            &wire::record_key(&env.prefix, seq),
            &stale.seal(&env.secret, &env.prefix),
            0,
        )
        .await
        .unwrap();
    let misplaced = seq;

    // A real record whose text was changed in memcached.
    let (seq, epoch) = env.reserve().await;
    let mut real = comment("real-tampered");
    (real.seq, real.epoch) = (seq, epoch);
    let sealed = String::from_utf8(real.seal(&env.secret, &env.prefix)).unwrap();
    let tampered_value = sealed.replace("real-tampered", "forged-tampered");
    env.mc
        .set(&wire::record_key(&env.prefix, seq), tampered_value.as_bytes(), 0)
        .await
        .unwrap();
    let tampered = seq;

    let last = env.push(comment("real-last")).await;
    let report = env.syncer.tick().await.unwrap();
    assert_eq!(
        (report.applied as u64, report.cursor.seq),
        (last - first + 1, last),
        "{report:?}"
    );
    env.syncer.settle().await;

    // Only the two real records became comments; none of the others' text is anywhere.
    let like = format!("% {t}");
    let rows: Vec<String> = {
        use mysql_async::prelude::Queryable;
        let mut c = env.db.get_conn().await.unwrap();
        c.exec(
            "SELECT comment_content FROM wp_comments WHERE comment_content LIKE ? ORDER BY comment_ID",
            (like,),
        )
        .await
        .unwrap()
    };
    assert_eq!(rows, [format!("real-first {t}"), format!("real-last {t}")]);
    assert_eq!(env.verdict(first).await.unwrap().status, Status::Approved);
    assert_eq!(env.verdict(last).await.unwrap().status, Status::Approved);
    for seq in [unsigned, wrong_secret, replayed, misplaced, tampered] {
        assert!(env.verdict(seq).await.is_none(), "no verdict for position {seq}");
        let value = env.mc.get(&wire::record_key(&env.prefix, seq)).await.unwrap();
        assert_eq!(
            value.as_deref(),
            Some(strata_syncer::queue::TOMBSTONE),
            "position {seq} tombstoned"
        );
    }
    let text = env.metrics.render();
    for (reason, n) in [("unsigned", 1), ("forged", 3), ("misplaced", 1)] {
        let line = format!("strata_syncer_skipped_records_total{{reason=\"{reason}\"}} {n}");
        assert!(text.contains(&line), "{line} not in\n{text}");
    }
    env.finish(Some(&t)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_of_a_newer_format_waits_for_a_newer_syncer() {
    let mut env = Env::new("").await;
    let (seq, _) = env.reserve().await;
    let key = wire::record_key(&env.prefix, seq);
    env.mc.set(&key, br#"{"v":99,"whatever":true}"#, 0).await.unwrap();
    for _ in 0..3 {
        let report = env.syncer.tick().await.unwrap();
        assert_eq!((report.applied, report.cursor.seq), (0, seq - 1));
    }
    env.mc.delete(&key).await.unwrap();
    env.finish(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_down_moves_nothing_and_loses_nothing() {
    let t = token();
    let prefix = format!("strata-test:{t}:");
    let bad = config_toml(&prefix, "").replace(":3306/", ":1/");
    let cfg = Config::from_toml(&bad, None).unwrap();
    let mut env = Env::with_config(prefix.clone(), cfg).await;
    let post = open_post(&env.db, &t).await;
    let seq = env
        .push(record(
            post,
            "M",
            &format!("m-{t}@example.test"),
            "",
            &format!("while mysql is down {t}"),
            &ip_for(&t),
        ))
        .await;
    for _ in 0..3 {
        assert!(env.syncer.tick().await.is_err());
    }
    assert!(env.metrics.render().contains("strata_syncer_mysql_errors_total"));
    assert!(env.verdict(seq).await.is_none());
    assert!(
        env.get(&format!("c:{seq}")).await.is_some(),
        "the record is still queued"
    );
    // MySQL is back (a syncer with the right address): the record is applied.
    let good = Config::from_toml(&config_toml(&prefix, ""), None).unwrap();
    let mut env = Env::with_config(prefix, good).await;
    env.drain().await;
    assert_eq!(env.verdict(seq).await.unwrap().status, Status::Approved);
    env.finish(Some(&t)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memcached_down_is_a_retried_error() {
    let t = token();
    let prefix = format!("strata-test:{t}:");
    let cfg = Config::from_toml(&config_toml(&prefix, "").replace(&memcached(), "127.0.0.1:9"), None).unwrap();
    let mut env = Env::with_config(prefix, cfg).await;
    assert!(env.syncer.tick().await.is_err());
    assert!(env.syncer.tick().await.is_err());
    let text = env.metrics.render();
    let errors: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("strata_syncer_memcached_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(errors >= 2.0, "{text}");
    env.finish(Some(&t)).await;
}

/// `advance` leaves what follows a commit (the verdict keys, the applied position) for the
/// next round, which runs it while MySQL applies the next batch; `settle` runs it at once.
#[tokio::test(flavor = "multi_thread")]
async fn an_advanced_batch_is_settled_by_the_next_round() {
    let mut env = Env::new("").await;
    let t = token();
    let post = open_post(&env.db, &t).await;
    let rec = |n: &str| own_sender(post, n, &t);
    let a = env.push(rec("a")).await;
    let report = env.syncer.advance().await.unwrap();
    assert_eq!((report.applied, report.cursor.seq), (1, a));
    assert!(env.syncer.unsettled());
    assert!(env.verdict(a).await.is_none(), "the verdict waits for the next round");
    let b = env.push(rec("b")).await;
    let report = env.syncer.advance().await.unwrap();
    assert_eq!((report.applied, report.cursor.seq), (1, b));
    assert_eq!(env.verdict(a).await.unwrap().status, Status::Approved);
    assert_eq!(env.get("applied").await.as_deref(), Some(a.to_string().as_str()));
    assert!(env.verdict(b).await.is_none());
    env.syncer.settle().await;
    assert!(!env.syncer.unsettled());
    assert_eq!(env.verdict(b).await.unwrap().status, Status::Approved);
    assert_eq!(env.get("applied").await.as_deref(), Some(b.to_string().as_str()));
    env.finish(Some(&t)).await;
}
