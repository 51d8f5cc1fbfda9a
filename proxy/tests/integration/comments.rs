//! The proxy's half of comment write-behind, against the real memcached and WordPress: what
//! it queues, how it answers a verdict, and when it hands the POST to PHP. Each test uses a
//! queue of its own (a unique key prefix) and plays the syncer's part by hand.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, StatusCode};
use strata_wire::comment::{self as wire, Record, Settings, Status, Verdict};
use strata_wire::memcache::Conn;

use crate::harness::{wp_origin, Resp, TestProxy, SECRET};

const MEMCACHED: &str = "127.0.0.1:11211";

fn prefix(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("it-{}-{test}-{nanos}:", std::process::id())
}

async fn memcached() -> Conn {
    Conn::connect(MEMCACHED, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("memcached not reachable ({e}): run scripts/memcached.sh"))
}

fn settings() -> Settings {
    Settings {
        require_name_email: true,
        comment_registration: false,
        cookies_opt_in: true,
        cookiehash: "ef301f25d1b8e2bca70fafc1316f1a92".into(),
        cookie_path: "/".into(),
        secure: false,
        home: "http://127.0.0.1:8080".into(),
        max_lengths: [245, 100, 200, 65525],
        published_ms: SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64,
    }
}

/// Publishes the site settings as the syncer does: sealed with the cluster secret.
async fn publish_settings(p: &str, s: &Settings) {
    let key = wire::settings_key(p);
    memcached()
        .await
        .set(&key, &wire::seal_json(SECRET.as_bytes(), &key, s).unwrap(), 60)
        .await
        .unwrap();
}

/// The record a proxy wrote at `seq`, its seal checked as the syncer checks it.
fn open_record(p: &str, seq: u64, raw: &[u8]) -> Record {
    wire::unseal_json(SECRET.as_bytes(), &wire::record_key(p, seq), raw)
        .unwrap_or_else(|e| panic!("record {seq} not sealed with the cluster secret: {e}"))
}

/// Writes a verdict as the syncer does: sealed for its key.
async fn publish_verdict(mc: &mut Conn, p: &str, epoch: u64, v: &Verdict) {
    let key = wire::verdict_key(p, epoch, v.seq);
    mc.set(&key, &wire::seal_json(SECRET.as_bytes(), &key, v).unwrap(), 60)
        .await
        .unwrap();
}

async fn proxy(p: &str, extra: &[(&str, &str)]) -> TestProxy {
    let key = format!("key_prefix = {p:?}");
    let mut lines: Vec<(&str, &str)> = vec![
        ("comments", "enabled = true"),
        ("comments", "memcached = [\"127.0.0.1:11211\"]"),
        ("comments", "max_hold = \"300ms\""),
    ];
    lines.push(("comments", &key));
    lines.extend_from_slice(extra);
    TestProxy::start(&wp_origin(), &lines).await
}

async fn post_comment(p: &TestProxy, form: &str, headers: &[(&str, &str)]) -> Resp {
    let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
    h.extend_from_slice(headers);
    p.request(Method::POST, "/wp-comments-post.php", &h, Bytes::from(form.to_string()))
        .await
}

async fn counter(p: &str) -> Option<u64> {
    memcached()
        .await
        .get(&wire::seq_key(p))
        .await
        .unwrap()
        .and_then(|b| String::from_utf8(b).ok()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_comment_is_answered_from_the_verdict() {
    let p = prefix("verdict");
    publish_settings(&p, &settings()).await;
    let proxy = proxy(&p, &[]).await;
    // Play the syncer: answer the first record when it appears.
    let fake_syncer = {
        let p = p.clone();
        tokio::spawn(async move {
            let mut mc = memcached().await;
            for _ in 0..400 {
                if let Some(raw) = mc.get(&wire::record_key(&p, 1)).await.unwrap() {
                    let r = open_record(&p, 1, &raw);
                    let v = Verdict {
                        seq: r.seq,
                        status: Status::Approved,
                        http: 302,
                        message: String::new(),
                        comment_id: Some(4242),
                        location: Some("http://127.0.0.1:8080/some-post/#comment-4242".into()),
                        cookie_author: Some("Ann &amp; Bob".into()),
                        cookie_email: Some(r.email.clone()),
                        cookie_url: Some("http://ann.example".into()),
                    };
                    publish_verdict(&mut mc, &p, r.epoch, &v).await;
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("the proxy queued nothing");
        })
    };
    let resp = post_comment(
        &proxy,
        "comment_post_ID=7&author=+Ann+%26+Bob+&email=ann%40example.com&url=ann.example&comment=Hello+%3Cb%3Ethere%3C%2Fb%3E&comment_parent=0&wp-comment-cookies-consent=yes",
        &[("user-agent", "it-agent/1.0")],
    )
    .await;
    let record = fake_syncer.await.unwrap();
    assert_eq!(resp.status, StatusCode::FOUND, "{}", resp.text());
    assert_eq!(resp.header("location"), "http://127.0.0.1:8080/some-post/#comment-4242");
    assert_eq!(resp.header("x-redirect-by"), "WordPress");
    assert_eq!(resp.header("cache-control"), "no-cache, must-revalidate, max-age=0");
    let cookies: Vec<&str> = resp
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies.len(), 3);
    assert!(
        cookies[0].starts_with("comment_author_ef301f25d1b8e2bca70fafc1316f1a92=Ann+%26amp%3B+Bob; expires="),
        "{cookies:?}"
    );
    assert!(cookies[2].starts_with("comment_author_url_ef301f25d1b8e2bca70fafc1316f1a92=http%3A%2F%2Fann.example;"));
    // The record holds what WordPress reads, cleaned as WordPress cleans it before its checks.
    assert_eq!((record.post_id, record.parent, record.seq), (7, 0, 1));
    assert_eq!(record.author, "Ann & Bob");
    assert_eq!(record.email, "ann@example.com");
    assert_eq!(record.url, "ann.example");
    assert_eq!(record.content, "Hello <b>there</b>");
    assert_eq!(record.ip, "127.0.0.1");
    assert_eq!(record.agent, "it-agent/1.0");
    assert!(record.consent);
    assert_eq!(
        proxy.metric("strata_proxy_comments_total", "reason=\"approved\"").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_verdict_in_time_the_visitor_goes_back_to_the_post() {
    let p = prefix("late");
    publish_settings(&p, &settings()).await;
    let proxy = proxy(&p, &[("comments", "hold = \"5ms\"")]).await;
    let resp = post_comment(
        &proxy,
        "comment_post_ID=9&author=A&email=a%40example.com&comment=late",
        &[],
    )
    .await;
    assert_eq!(resp.status, StatusCode::FOUND);
    assert_eq!(resp.header("location"), "http://127.0.0.1:8080/?p=9");
    // Still queued: nothing a visitor sent is dropped.
    assert_eq!(counter(&p).await, Some(1));
    let raw = memcached()
        .await
        .get(&wire::record_key(&p, 1))
        .await
        .unwrap()
        .expect("record kept");
    let r = open_record(&p, 1, &raw);
    assert_eq!(r.content, "late");
    // Without consent the comment cookies are deleted, as WordPress does.
    let cookies: Vec<&str> = resp
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(cookies.iter().all(|c| c.contains("Max-Age=0")), "{cookies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_free_checks_answer_at_once_with_wordpress_page() {
    let p = prefix("early");
    publish_settings(&p, &settings()).await;
    let proxy = proxy(&p, &[]).await;
    let resp = post_comment(&proxy, "comment_post_ID=5&author=&email=&comment=hi", &[]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp
        .text()
        .contains("<p><strong>Error:</strong> Please fill the required fields.</p>"));
    assert!(resp.text().contains("<title>Comment Submission Failure</title>"));
    let resp = post_comment(&proxy, "comment_post_ID=5&author=A&email=not-an-email&comment=hi", &[]).await;
    assert!(resp.text().contains("Please enter a valid email address."));
    let resp = post_comment(
        &proxy,
        "comment_post_ID=5&author=A&email=a%40example.com&comment=+",
        &[],
    )
    .await;
    assert!(resp.text().contains("Please type your comment text."));
    let resp = post_comment(&proxy, "author=A&email=a%40example.com&comment=x", &[]).await;
    assert_eq!(
        (resp.status, resp.body.len()),
        (StatusCode::OK, 0),
        "no post: an empty 200"
    );
    assert_eq!(counter(&p).await, None, "nothing was queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_gets_what_only_php_can_answer() {
    // No syncer (no settings published): every comment goes to PHP, unchanged.
    let p = prefix("nosyncer");
    let proxy = proxy(&p, &[]).await;
    let resp = post_comment(&proxy, "comment_post_ID=5&author=&email=&comment=hi", &[]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.text().contains("Please fill the required fields."), "PHP answered");
    assert_eq!(resp.x_cache(), "PASS");
    assert_eq!(
        proxy
            .metric("strata_proxy_comments_total", "reason=\"php-no-syncer\"")
            .await,
        1.0
    );

    // With a syncer: logged-in users and post passwords still go to PHP.
    publish_settings(&p, &settings()).await;
    let resp = post_comment(
        &proxy,
        "comment_post_ID=5&author=&email=&comment=hi",
        &[("cookie", "wordpress_logged_in_abc=x")],
    )
    .await;
    assert!(resp.text().contains("Please fill the required fields."));
    assert_eq!(
        proxy
            .metric("strata_proxy_comments_total", "reason=\"php-logged-in\"")
            .await,
        1.0
    );
    let _ = post_comment(
        &proxy,
        "comment_post_ID=5&author=&email=&comment=hi",
        &[("cookie", "wp-postpass_abc=x")],
    )
    .await;
    assert_eq!(
        proxy
            .metric("strata_proxy_comments_total", "reason=\"php-post-password\"")
            .await,
        1.0
    );
    assert_eq!(counter(&p).await, None, "nothing was queued");

    // A queue deeper than max_queue: PHP takes the comment.
    let mut mc = memcached().await;
    mc.set(&wire::seq_key(&p), b"50", 60).await.unwrap();
    mc.set(&wire::applied_key(&p), b"10", 60).await.unwrap();
    let full = proxy_with_limit(&p).await;
    // A post that does not exist: PHP answers an empty 200 and stores nothing.
    let resp = post_comment(
        &full,
        "comment_post_ID=999999&author=A&email=a%40example.com&comment=hi",
        &[],
    )
    .await;
    assert_eq!((resp.status, resp.body.len()), (StatusCode::OK, 0));
    assert_eq!(
        full.metric("strata_proxy_comments_total", "reason=\"php-queue-full\"")
            .await,
        1.0
    );
    assert_eq!(counter(&p).await, Some(50), "no number reserved");
}

/// The record queued at `seq`, if any.
async fn queued(p: &str, seq: u64) -> Option<Record> {
    let raw = memcached().await.get(&wire::record_key(p, seq)).await.unwrap()?;
    Some(open_record(p, seq, &raw))
}

async fn set_numbers(p: &str, seq: u64, applied: u64) {
    let mut mc = memcached().await;
    mc.set(&wire::seq_key(p), seq.to_string().as_bytes(), 60).await.unwrap();
    mc.set(&wire::applied_key(p), applied.to_string().as_bytes(), 60)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_reserved_beyond_max_queue_is_marked_and_php_takes_the_comment() {
    let p = prefix("bound");
    publish_settings(&p, &settings()).await;
    let proxy = proxy_with_limit(&p).await;
    // Far from the bound (max_queue 40): queued, and the next reservation reads the depth in
    // the round trip that reserves.
    set_numbers(&p, 5, 0).await;
    let resp = post_comment(
        &proxy,
        "comment_post_ID=9&author=A&email=a%40example.com&comment=room",
        &[],
    )
    .await;
    assert_eq!(resp.status, StatusCode::FOUND);
    assert_eq!(queued(&p, 6).await.unwrap().content, "room");

    // The queue fills behind its back: the number it reserves (51) lies beyond 10 + 40. It
    // is marked, so the syncer passes it without waiting, and PHP takes the comment (a post
    // that does not exist: PHP answers an empty 200 and stores nothing).
    set_numbers(&p, 50, 10).await;
    let to_php = "comment_post_ID=999999&author=A&email=a%40example.com&comment=full";
    let resp = post_comment(&proxy, to_php, &[]).await;
    assert_eq!((resp.status, resp.body.len()), (StatusCode::OK, 0));
    assert_eq!(counter(&p).await, Some(51));
    let mark = memcached().await.get(&wire::record_key(&p, 51)).await.unwrap();
    assert_eq!(mark.as_deref(), Some(wire::QUEUE_FULL));
    assert_eq!(
        proxy
            .metric("strata_proxy_comments_total", "reason=\"php-queue-full\"")
            .await,
        1.0
    );

    // Now near the bound, the depth is read before reserving: no number while it is full.
    let resp = post_comment(&proxy, to_php, &[]).await;
    assert_eq!((resp.status, resp.body.len()), (StatusCode::OK, 0));
    assert_eq!(counter(&p).await, Some(51), "no number reserved");
    assert_eq!(
        proxy
            .metric("strata_proxy_comments_total", "reason=\"php-queue-full\"")
            .await,
        2.0
    );

    // The syncer catches up: comments are queued again.
    set_numbers(&p, 51, 45).await;
    let resp = post_comment(
        &proxy,
        "comment_post_ID=9&author=A&email=a%40example.com&comment=again",
        &[],
    )
    .await;
    assert_eq!(resp.status, StatusCode::FOUND);
    assert_eq!(queued(&p, 52).await.unwrap().content, "again");
    assert_eq!(
        proxy.metric("strata_proxy_comments_total", "reason=\"queued\"").await,
        2.0
    );
}

/// POSTs `forms` to the proxy's comment path all at once; their statuses, in order.
async fn post_together(proxy: &TestProxy, forms: impl Iterator<Item = String>) -> Vec<StatusCode> {
    let sends: Vec<_> = forms
        .map(|form| {
            let url = format!("http://{}/wp-comments-post.php", proxy.addr);
            tokio::spawn(async move {
                let headers = [
                    ("host", crate::harness::wp_host()),
                    ("content-type", "application/x-www-form-urlencoded".to_string()),
                ];
                crate::harness::send(Method::POST, &url, &headers, Bytes::from(form))
                    .await
                    .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for s in sends {
        statuses.push(s.await.unwrap());
    }
    statuses
}

/// Comments arriving together share their memcached round trips (one reservation of
/// several numbers, one pipelined write of their records): each still gets a number of its
/// own, no number is left unwritten, and near the bound the ones that do not fit go to PHP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_arriving_together_are_queued_together_each_under_its_own_number() {
    let p = prefix("together");
    publish_settings(&p, &settings()).await;
    let proxy = proxy_with_limit(&p).await;
    set_numbers(&p, 0, 0).await;
    let texts: Vec<String> = (0..30).map(|i| format!("together-{i}")).collect();
    let forms = texts
        .iter()
        .map(|t| format!("comment_post_ID=9&author=A&email=a%40example.com&comment={t}"));
    let statuses = post_together(&proxy, forms).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::FOUND), "{statuses:?}");
    assert_eq!(counter(&p).await, Some(30));
    let mut found = Vec::new();
    for seq in 1..=30 {
        let r = queued(&p, seq).await.unwrap_or_else(|| panic!("number {seq} written"));
        assert_eq!(r.seq, seq);
        found.push(r.content);
    }
    found.sort();
    let mut want = texts;
    want.sort();
    assert_eq!(found, want, "every comment once");

    // 35 deep with room for 5 more: 5 of the next 12 are queued, 7 go to PHP (a post that
    // does not exist: PHP answers an empty 200).
    set_numbers(&p, 35, 0).await;
    let forms = (0..12).map(|i| format!("comment_post_ID=999999&author=A&email=a%40example.com&comment=near-{i}"));
    let statuses = post_together(&proxy, forms).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::FOUND).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        7,
        "{statuses:?}"
    );
    let last = counter(&p).await.unwrap();
    let mut queued_near = 0;
    for seq in 36..=last {
        match memcached().await.get(&wire::record_key(&p, seq)).await.unwrap() {
            Some(v) if v == wire::QUEUE_FULL => {}
            Some(v) => {
                let r = open_record(&p, seq, &v);
                assert!(r.content.starts_with("near-"));
                queued_near += 1;
            }
            None => panic!("number {seq} reserved and neither written nor marked"),
        }
    }
    assert_eq!(queued_near, 5);
    assert_eq!(
        proxy
            .metric("strata_proxy_comments_total", "reason=\"php-queue-full\"")
            .await,
        7.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_without_an_epoch_gets_one() {
    let p = prefix("epoch");
    publish_settings(&p, &settings()).await;
    let proxy = proxy(&p, &[]).await;
    let epoch = async || -> Option<u64> {
        let raw = memcached().await.get(&wire::epoch_key(&p)).await.unwrap()?;
        String::from_utf8(raw).ok()?.parse().ok()
    };
    let form = |text: &str| format!("comment_post_ID=9&author=A&email=a%40example.com&comment={text}");
    // The first comment ever creates the queue: epoch, then counter.
    let resp = post_comment(&proxy, &form("first"), &[]).await;
    assert_eq!(resp.status, StatusCode::FOUND);
    let first = epoch().await.expect("an epoch");
    let r = queued(&p, 1).await.unwrap();
    assert_eq!((r.seq, r.epoch, r.content.as_str()), (1, first, "first"));

    // The epoch alone evicted: a new one, the counter goes on.
    memcached().await.delete(&wire::epoch_key(&p)).await.unwrap();
    let _ = post_comment(&proxy, &form("second"), &[]).await;
    let second = epoch().await.expect("an epoch again");
    let r = queued(&p, 2).await.unwrap();
    assert_eq!((r.seq, r.epoch, r.content.as_str()), (2, second, "second"));

    // memcached restarted (everything gone): a new queue from 1.
    let mut mc = memcached().await;
    for k in [
        wire::seq_key(&p),
        wire::epoch_key(&p),
        wire::record_key(&p, 1),
        wire::record_key(&p, 2),
    ] {
        mc.delete(&k).await.unwrap();
    }
    let _ = post_comment(&proxy, &form("third"), &[]).await;
    let third = epoch().await.expect("a new queue's epoch");
    let r = queued(&p, 1).await.unwrap();
    assert_eq!((r.seq, r.epoch, r.content.as_str()), (1, third, "third"));
    assert_eq!(counter(&p).await, Some(1));
    assert_eq!(
        proxy.metric("strata_proxy_comments_total", "reason=\"queued\"").await,
        3.0
    );
}

async fn proxy_with_limit(p: &str) -> TestProxy {
    proxy(p, &[("comments", "max_queue = 40")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_memcached_sends_comments_to_php() {
    let lines = [
        ("comments", "enabled = true"),
        ("comments", "memcached = [\"127.0.0.1:1\"]"),
    ];
    let down = TestProxy::start(&wp_origin(), &lines).await;
    let resp = post_comment(&down, "comment_post_ID=5&author=&email=&comment=hi", &[]).await;
    assert!(resp.text().contains("Please fill the required fields."), "PHP answered");
    assert_eq!(
        down.metric("strata_proxy_comments_total", "reason=\"php-memcached\"")
            .await,
        1.0
    );
}

/// The `Set-Cookie` values of an answer.
fn cookies(r: &Resp) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// Waits (at most 2 s) for the proxy to queue record `seq`; its epoch.
async fn epoch_of_record(mc: &mut Conn, p: &str, seq: u64) -> u64 {
    for _ in 0..2000 {
        if let Some(raw) = mc.get(&wire::record_key(p, seq)).await.unwrap() {
            return open_record(p, seq, &raw).epoch;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the proxy queued no record {seq}");
}

/// Whoever can write to memcached but lacks the cluster secret cannot answer a comment: a
/// verdict in plain JSON (as a forger, or a syncer of an older version, writes it) or sealed
/// with another secret is ignored. Its `Location`, message, status and cookies never reach
/// the visitor, who gets the answer for no verdict: back to the post, with their own cookies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_verdict_is_never_shown_to_the_visitor() {
    let p = prefix("forged");
    publish_settings(&p, &settings()).await;
    let proxy = proxy(&p, &[]).await;
    let mut mc = memcached().await;
    let form = |text: &str| {
        format!("comment_post_ID=9&author=Ann&email=ann%40example.com&comment={text}&wp-comment-cookies-consent=yes")
    };

    // A verdict in plain JSON: approved, off to another site, with cookies of its own.
    let post = {
        let proxy_addr = proxy.addr;
        let body = form("first");
        tokio::spawn(async move {
            let headers = [
                ("host", crate::harness::wp_host()),
                ("content-type", "application/x-www-form-urlencoded".to_string()),
            ];
            let url = format!("http://{proxy_addr}/wp-comments-post.php");
            crate::harness::send(Method::POST, &url, &headers, Bytes::from(body)).await
        })
    };
    let epoch = epoch_of_record(&mut mc, &p, 1).await;
    let plain = Verdict {
        seq: 1,
        status: Status::Approved,
        http: 302,
        message: String::new(),
        comment_id: Some(1),
        location: Some("http://127.0.0.1:8080/taken-over/#comment-1".into()),
        cookie_author: Some("owned".into()),
        cookie_email: Some("owned@evil.example".into()),
        cookie_url: Some("http://evil.example".into()),
    };
    let key = wire::verdict_key(&p, epoch, 1);
    mc.set(&key, &serde_json::to_vec(&plain).unwrap(), 60).await.unwrap();
    let resp = post.await.unwrap();
    assert_eq!(resp.status, StatusCode::FOUND);
    assert_eq!(
        resp.header("location"),
        "http://127.0.0.1:8080/?p=9",
        "the no-verdict answer"
    );
    let set = cookies(&resp);
    assert_eq!(set.len(), 3);
    assert!(
        set[0].starts_with("comment_author_ef301f25d1b8e2bca70fafc1316f1a92=Ann;"),
        "{set:?}"
    );
    assert!(
        set.iter().all(|c| !c.contains("owned") && !c.contains("evil")),
        "{set:?}"
    );
    assert!(
        proxy
            .metric(
                "strata_proxy_comment_queue_untrusted_total",
                "what=\"verdict\",reason=\"unsigned\""
            )
            .await
            >= 1.0,
        "the plain verdict was read and refused"
    );

    // Sealed with another secret: a refusal with a message of its own.
    let post = {
        let proxy_addr = proxy.addr;
        let body = form("second");
        tokio::spawn(async move {
            let headers = [
                ("host", crate::harness::wp_host()),
                ("content-type", "application/x-www-form-urlencoded".to_string()),
            ];
            let url = format!("http://{proxy_addr}/wp-comments-post.php");
            crate::harness::send(Method::POST, &url, &headers, Bytes::from(body)).await
        })
    };
    let epoch = epoch_of_record(&mut mc, &p, 2).await;
    let rejected = Verdict {
        seq: 2,
        status: Status::Rejected,
        http: 403,
        message: "<script>alert('owned')</script>".into(),
        comment_id: None,
        location: None,
        cookie_author: None,
        cookie_email: None,
        cookie_url: None,
    };
    let key = wire::verdict_key(&p, epoch, 2);
    let forged = wire::seal_json(b"not-the-cluster-secret-0123", &key, &rejected).unwrap();
    mc.set(&key, &forged, 60).await.unwrap();
    let resp = post.await.unwrap();
    assert_eq!((resp.status, resp.body.len()), (StatusCode::FOUND, 0));
    assert_eq!(resp.header("location"), "http://127.0.0.1:8080/?p=9");
    assert!(
        proxy
            .metric(
                "strata_proxy_comment_queue_untrusted_total",
                "what=\"verdict\",reason=\"forged\""
            )
            .await
            >= 1.0
    );
    assert_eq!(
        proxy
            .metric("strata_proxy_comments_total", "reason=\"no-verdict\"")
            .await,
        2.0
    );
    // Both comments stay queued, for the syncer to judge.
    assert_eq!(queued(&p, 1).await.unwrap().content, "first");
    assert_eq!(queued(&p, 2).await.unwrap().content, "second");
}

/// A visitor's `redirect_to` that leaves the site, or would break the header, never
/// becomes the `Location`: the visitor goes back to the post. One on the site is followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_redirect_to_never_becomes_the_location() {
    let p = prefix("redirect");
    publish_settings(&p, &settings()).await;
    let proxy = proxy(&p, &[]).await;
    let post = "http://127.0.0.1:8080/?p=9";
    let long = format!("http://127.0.0.1:8080/{}", "a".repeat(5000));
    let cases: [(&str, &str); 8] = [
        ("%2F%2Fevil.example%2F", post),
        ("http%3A%2F%2Fevil.example", post),
        ("https%3A%2F%2F127.0.0.1%3A8080%40evil.example%2F", post),
        ("%2F%5C%2Fevil.example", post),
        ("javascript%3Aalert(document.cookie)", post),
        (
            "%2Fthanks%2F%0D%0ASet-Cookie%3A%20owned%3D1",
            "/thanks/Set-Cookie:%20owned=1",
        ),
        (&long, post),
        (
            "http%3A%2F%2F127.0.0.1%3A8080%2Fthanks%2F",
            "http://127.0.0.1:8080/thanks/",
        ),
    ];
    for (i, (redirect_to, want)) in cases.iter().enumerate() {
        let form =
            format!("comment_post_ID=9&author=A&email=a%40example.com&comment=redirect-{i}&redirect_to={redirect_to}");
        let resp = post_comment(&proxy, &form, &[]).await;
        assert_eq!(resp.status, StatusCode::FOUND, "{redirect_to}");
        assert_eq!(resp.header("location"), *want, "{redirect_to}");
        assert!(cookies(&resp).iter().all(|c| !c.contains("owned")), "{redirect_to}");
    }
    assert_eq!(
        proxy
            .metric("strata_proxy_comments_total", "reason=\"no-verdict\"")
            .await,
        8.0
    );
}

/// Settings in memcached that are not sealed with the cluster secret (a syncer of an older
/// version, or a forger's, e.g. another `home` to redirect to) are ignored: comments go to
/// PHP as without a syncer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_not_sealed_with_the_secret_send_comments_to_php() {
    let p = prefix("plain-settings");
    let mut forged = settings();
    forged.home = "http://evil.example".into();
    memcached()
        .await
        .set(&wire::settings_key(&p), &serde_json::to_vec(&forged).unwrap(), 60)
        .await
        .unwrap();
    let proxy = proxy(&p, &[]).await;
    let resp = post_comment(&proxy, "comment_post_ID=5&author=&email=&comment=hi", &[]).await;
    assert!(resp.text().contains("Please fill the required fields."), "PHP answered");
    assert_eq!(resp.x_cache(), "PASS");
    assert_eq!(
        proxy
            .metric("strata_proxy_comments_total", "reason=\"php-no-syncer\"")
            .await,
        1.0
    );
    assert_eq!(
        proxy
            .metric(
                "strata_proxy_comment_queue_untrusted_total",
                "what=\"settings\",reason=\"unsigned\""
            )
            .await,
        1.0
    );
    assert_eq!(counter(&p).await, None, "nothing was queued");
}

/// A memcached of one test's own, run as the queue's memcached must be: `-M` (out of
/// memory, it refuses new values instead of evicting queued comments), here with 2 MiB.
/// Stopped when dropped.
struct TinyMemcached {
    child: std::process::Child,
    addr: String,
}

impl TinyMemcached {
    async fn start() -> TinyMemcached {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("memcached")
            .args(["-M", "-m", "2", "-U", "0", "-t", "1", "-l", "127.0.0.1", "-u", "nobody"])
            .args(["-p", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start memcached (installed by scripts/memcached.sh): {e}"));
        let m = TinyMemcached {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if let Ok(mut c) = Conn::connect(&m.addr, Duration::from_secs(1)).await {
                if c.version().await.is_ok() {
                    return m;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("memcached on {} did not answer", m.addr);
    }

    async fn conn(&self) -> Conn {
        Conn::connect(&self.addr, Duration::from_secs(2)).await.unwrap()
    }

    /// Stores values of every size from 32 bytes to 24 KiB until memcached has no room for
    /// one more of each (every slab class full); how many it stored. Bounded: 2 MiB hold
    /// at most some 65 000 values.
    async fn fill(&self) -> usize {
        let mut c = self.conn().await;
        let mut stored = 0;
        let mut size = 32usize;
        while size <= 24 * 1024 {
            let value = vec![b'x'; size];
            for n in 0..100_000 {
                match c.set(&format!("fill:{size}:{n}"), &value, 0).await {
                    Ok(()) => stored += 1,
                    Err(e) if e.is_no_room() => break,
                    Err(e) => panic!("filling memcached: {e}"),
                }
            }
            size = size * 9 / 8 + 1;
        }
        stored
    }
}

impl Drop for TinyMemcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The id of a published page whose comments are closed (WordPress refuses comments on it
/// with its own 403).
async fn closed_page() -> u64 {
    let url = format!(
        "{}/wp-json/wp/v2/pages?per_page=50&_fields=id,comment_status",
        wp_origin()
    );
    let r = crate::harness::send(Method::GET, &url, &[("host", crate::harness::wp_host())], Bytes::new()).await;
    let pages: serde_json::Value = serde_json::from_slice(&r.body).expect("REST JSON");
    pages
        .as_array()
        .expect("pages")
        .iter()
        .find(|p| p["comment_status"] == "closed")
        .and_then(|p| p["id"].as_u64())
        .expect("a page with comments closed (scripts/wordpress.sh provisions some)")
}

/// memcached out of memory refuses the record rather than evict anything: the proxy hands
/// that comment to PHP, whole (here WordPress answers it refuses comments on that page,
/// which it can only say having read the POST), counts it, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memcached_out_of_memory_sends_the_comment_to_php() {
    let mc = TinyMemcached::start().await;
    let p = prefix("no-room");
    let key = format!("key_prefix = {p:?}");
    let server = format!("memcached = [{:?}]", mc.addr);
    let lines = [
        ("comments", "enabled = true"),
        ("comments", server.as_str()),
        ("comments", key.as_str()),
    ];
    {
        let mut c = mc.conn().await;
        let settings_key = wire::settings_key(&p);
        c.set(
            &settings_key,
            &wire::seal_json(SECRET.as_bytes(), &settings_key, &settings()).unwrap(),
            0,
        )
        .await
        .unwrap();
        // A queue that exists (its counter at four digits: incremented in place, it needs no
        // room), so the first value to find none is the record.
        c.set(&wire::epoch_key(&p), b"7", 0).await.unwrap();
        c.set(&wire::seq_key(&p), b"1000", 0).await.unwrap();
    }
    let stored = mc.fill().await;
    assert!(stored > 100, "{stored}");
    let proxy = TestProxy::start(&wp_origin(), &lines).await;
    let page = closed_page().await;
    let resp = post_comment(
        &proxy,
        &format!("comment_post_ID={page}&author=A&email=a%40example.com&comment=no+room+for+me"),
        &[],
    )
    .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text());
    assert!(
        resp.text().contains("Sorry, comments are closed for this item."),
        "PHP answered"
    );
    assert_eq!(resp.x_cache(), "PASS");
    assert_eq!(
        proxy
            .metric("strata_proxy_comments_total", "reason=\"php-memcached-full\"")
            .await,
        1.0
    );
    let mut c = mc.conn().await;
    assert_eq!(c.get(&wire::seq_key(&p)).await.unwrap().as_deref(), Some(&b"1001"[..]));
    assert_eq!(
        c.get(&wire::record_key(&p, 1001)).await.unwrap(),
        None,
        "nothing written"
    );
    // Nothing queued before was evicted for it.
    assert!(c.get(&wire::settings_key(&p)).await.unwrap().is_some());
    assert_eq!(c.get("fill:32:0").await.unwrap().map(|v| v.len()), Some(32));
}
