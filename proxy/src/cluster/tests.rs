use super::*;
use strata_wire::ban::Kind;

fn req(instance: u64, latest: u64, seqs: &[u64]) -> SyncRequest {
    SyncRequest {
        node: "a".into(),
        instance,
        latest,
        bans: seqs
            .iter()
            .map(|&seq| Sequenced {
                seq,
                at_ms: 0,
                ban: Ban::new(Kind::Tag, "t"),
            })
            .collect(),
        msg: 0,
        leaving: false,
    }
}

fn peer(instance: u64, applied: u64) -> Option<Peer> {
    Some(Peer {
        instance,
        applied,
        left: false,
    })
}

#[test]
fn in_order_bans_apply_once() {
    let a = Peer::admit(peer(1, 2), &req(1, 4, &[3, 4]));
    assert_eq!((a.flush, a.apply, a.applied, a.current), (None, vec![0, 1], 4, true));
    // A resend of what was applied is skipped.
    let a = Peer::admit(peer(1, 4), &req(1, 5, &[3, 4, 5]));
    assert_eq!((a.flush, a.apply, a.applied), (None, vec![2], 5));
    // A heartbeat that says nothing new.
    let a = Peer::admit(peer(1, 5), &req(1, 5, &[]));
    assert_eq!((a.flush, a.apply.len(), a.current), (None, 0, true));
}

#[test]
fn gaps_and_restarts_flush() {
    let a = Peer::admit(peer(1, 2), &req(1, 9, &[5, 6]));
    assert_eq!((a.flush, a.applied, a.current), (Some(FlushReason::Gap), 6, false));
    assert!(a.apply.is_empty(), "the flush covers them");
    let a = Peer::admit(peer(1, 2), &req(1, 7, &[]));
    assert_eq!((a.flush, a.applied, a.current), (Some(FlushReason::Gap), 7, true));
    let a = Peer::admit(peer(1, 9), &req(2, 1, &[1]));
    assert_eq!((a.flush, a.applied), (Some(FlushReason::Restart), 1));
    // A sender that said goodbye after everything was applied restarts without a flush.
    let gone = Some(Peer {
        instance: 1,
        applied: 9,
        left: true,
    });
    let a = Peer::admit(gone, &req(2, 0, &[]));
    assert_eq!((a.flush, a.applied, a.current), (None, 0, true));
}

#[test]
fn first_contact_starts_where_the_sender_is() {
    let a = Peer::admit(None, &req(1, 50, &[]));
    assert_eq!((a.flush, a.applied, a.current), (None, 50, true));
    let a = Peer::admit(None, &req(1, 50, &[48, 49, 50]));
    assert_eq!((a.flush, a.apply, a.applied), (None, vec![0, 1, 2], 50));
    // A batch that does not reach the sender's latest is not yet current.
    let a = Peer::admit(None, &req(1, 900, &[1, 2]));
    assert_eq!((a.applied, a.current), (2, false));
}

#[test]
fn retries_back_off_from_min_doubling_to_max_and_an_answer_starts_over() {
    let ms = Duration::from_millis;
    // The schedule below is for these.
    assert_eq!((MIN_BACKOFF, MAX_BACKOFF), (ms(20), ms(1000)));
    let mut pace = Pace::new(ms(250));
    let pauses: Vec<_> = (0..9).map(|_| pace.failed()).collect();
    let expected: Vec<_> = [20, 40, 80, 160, 320, 640, 1000, 1000, 1000]
        .map(|p| Next::Retry(ms(p)))
        .to_vec();
    assert_eq!(pauses, expected);
    assert_eq!(pace.answered(false), Next::Heartbeat(ms(250)));
    assert_eq!(pace.failed(), Next::Retry(MIN_BACKOFF));
    assert_eq!(pace.failed(), Next::Retry(2 * MIN_BACKOFF));
    // Bans left queued after an acknowledged batch go at once, and also start over.
    assert_eq!(pace.answered(true), Next::Now);
    assert_eq!(pace.failed(), Next::Retry(MIN_BACKOFF));
}

/// How long `next` waits, on the paused clock, with a ban queued `ban_after` from now.
async fn waited(next: Next, ban_after: Option<Duration>) -> Duration {
    let wake = Arc::new(Notify::new());
    if let Some(after) = ban_after {
        let wake = wake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            wake.notify_one();
        });
    }
    let (_stop, mut shutdown) = watch::channel(false);
    let start = Instant::now();
    assert!(next.wait(&wake, &mut shutdown).await);
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn heartbeats_wait_the_interval_or_a_ban_and_retries_wait_their_backoff() {
    let ms = Duration::from_millis;
    assert_eq!(waited(Next::Now, None).await, Duration::ZERO);
    assert_eq!(waited(Next::Heartbeat(ms(250)), None).await, ms(250));
    assert_eq!(waited(Next::Heartbeat(ms(250)), Some(ms(70))).await, ms(70));
    // A retry does not hurry for a ban: the sibling failed, the ban waits with the rest.
    assert_eq!(waited(Next::Retry(ms(40)), Some(ms(5))).await, ms(40));
}

#[tokio::test(start_paused = true)]
async fn a_failing_sibling_is_retried_on_the_backoff_schedule() {
    let wake = Notify::new();
    let (_stop, mut shutdown) = watch::channel(false);
    let mut pace = Pace::new(Duration::from_millis(250));
    let start = Instant::now();
    let mut sends = Vec::new();
    for _ in 0..9 {
        assert!(pace.failed().wait(&wake, &mut shutdown).await);
        sends.push(start.elapsed().as_millis());
    }
    // The first retry 20 ms after the failure, the second 2 × 20 ms after the first…
    assert_eq!(sends, [20, 60, 140, 300, 620, 1260, 2260, 3260, 4260]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_any_wait_at_once() {
    let wake = Notify::new();
    for next in [Next::Retry(MAX_BACKOFF), Next::Heartbeat(Duration::from_secs(5))] {
        let (stop, mut shutdown) = watch::channel(false);
        let start = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            let _ = stop.send(true);
        });
        assert!(!next.wait(&wake, &mut shutdown).await);
        assert_eq!(start.elapsed(), Duration::from_millis(3));
    }
}

fn cfg(limit: usize) -> ClusterConfig {
    ClusterConfig {
        node_id: "me".into(),
        siblings: vec!["http://127.0.0.1:1".parse().unwrap()],
        secret_file: Default::default(),
        secret: b"0123456789abcdef".to_vec(),
        admin_allow: vec![],
        admin_hosts: vec![],
        heartbeat_interval: Duration::from_millis(250),
        confirm_within: Duration::from_secs(1),
        when_unconfirmed: crate::config::Unconfirmed::Flush,
        queue_limit: limit,
        write_wait: Duration::from_millis(500),
        shield: true,
        shield_timeout: Duration::from_secs(2),
        shield_window: Duration::from_secs(1),
    }
}

#[tokio::test]
async fn queues_collapse_into_one_ban_of_everything() {
    let c = Cluster::new(&cfg(3));
    for i in 0..5 {
        c.broadcast(&Ban::new(Kind::Tag, format!("t{i}")));
    }
    let q = c.siblings[0].queue.lock();
    let items: Vec<_> = q.items.iter().map(|(b, _)| (b.seq, b.ban.kind)).collect();
    assert_eq!(items, [(4, Kind::All), (5, Kind::Tag)]);
    assert_eq!(q.last, 5);
}

#[tokio::test]
async fn a_node_with_siblings_starts_unconfirmed() {
    let c = Cluster::new(&cfg(3));
    assert!(!c.confirmed(Instant::now()));
    assert!(c.take_flush());
    assert!(!c.take_flush(), "once per unconfirmed period");
    c.siblings[0].state.lock().node = Some("a".into());
    c.admit(&req(1, 0, &[]));
    assert!(c.confirmed(Instant::now()));
    let mut alone = cfg(3);
    alone.siblings.clear();
    assert!(Cluster::new(&alone).confirmed(Instant::now()));
}

/// A cluster with two siblings that answered as nodes "a" and "b".
fn two_siblings() -> Cluster {
    let mut c = cfg(3);
    c.siblings.push("http://127.0.0.1:2".parse().unwrap());
    let c = Cluster::new(&c);
    c.siblings[0].state.lock().node = Some("a".into());
    c.siblings[1].state.lock().node = Some("b".into());
    c
}

/// A sync from `node` that says it is at `latest`, carrying `seqs`.
fn sync_from(node: &str, latest: u64, seqs: &[u64]) -> SyncRequest {
    SyncRequest {
        node: node.into(),
        ..req(1, latest, seqs)
    }
}

#[tokio::test(start_paused = true)]
async fn confirmed_for_confirm_within_after_the_oldest_proof_to_the_nanosecond() {
    let c = two_siblings();
    let window = c.unconfirmed_ttl();
    let nano = Duration::from_nanos(1);
    let t0 = Instant::now();
    c.admit(&sync_from("a", 0, &[]));
    assert!(!c.confirmed(t0), "b has proven nothing yet");
    tokio::time::advance(Duration::from_millis(300)).await;
    c.admit(&sync_from("b", 0, &[]));
    // a's proof is the older: it sets the end.
    assert!(c.confirmed(t0 + window - nano));
    assert!(!c.confirmed(t0 + window));
    // b keeps syncing, a falls silent: unconfirmed exactly `confirm_within` after a's
    // last proof.
    tokio::time::advance(Duration::from_millis(600)).await;
    c.admit(&sync_from("b", 0, &[]));
    assert!(c.confirmed(Instant::now()));
    tokio::time::advance(Duration::from_millis(100) - nano).await;
    assert!(c.confirmed(Instant::now()));
    tokio::time::advance(nano).await;
    assert_eq!(Instant::now(), t0 + window);
    assert!(!c.confirmed(Instant::now()));
    assert!(c.take_flush());
    assert!(!c.take_flush(), "once per unconfirmed period");
    // A sync that leaves this node behind a's latest proves nothing.
    c.admit(&sync_from("a", 5, &[1, 2]));
    assert!(!c.confirmed(Instant::now()));
    // The rest does: confirmed again, until `confirm_within` after b's last proof at
    // t0 + 900 ms; the next unconfirmed period flushes again.
    tokio::time::advance(Duration::from_millis(250)).await;
    c.admit(&sync_from("a", 5, &[3, 4, 5]));
    let b_proof = t0 + Duration::from_millis(900);
    assert!(c.confirmed(b_proof + window - nano));
    assert!(!c.confirmed(b_proof + window));
    assert!(c.take_flush());
    // The report counts from the proofs too.
    let report = c.report();
    let ago: Vec<_> = report.iter().map(|s| s.confirmed_ms_ago).collect();
    assert_eq!(ago, [Some(0), Some(350)]);
}

#[tokio::test(start_paused = true)]
async fn wait_acked_says_who_acknowledged_and_after_how_long() {
    let c = two_siblings();
    let first = c.siblings[0].clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        first.acked.send_modify(|a| *a = 1);
        tokio::time::sleep(Duration::from_millis(30)).await;
        first.acked.send_modify(|a| *a = 2);
    });
    let ms = Duration::from_millis;
    let (a, b) = (c.siblings[0].url.clone(), c.siblings[1].url.clone());
    assert_eq!(
        c.wait_acked(1, ms(500), false).await,
        [(a.clone(), true, ms(30)), (b.clone(), false, ms(500))]
    );
    // An acknowledgement already in counts at once; only reachable siblings are waited for.
    c.siblings[0].state.lock().up = true;
    assert_eq!(c.wait_acked(2, ms(500), true).await, [(a.clone(), true, ms(0))]);
    assert_eq!(c.wait_acked(3, ms(500), true).await, [(a, false, ms(500))]);
}
