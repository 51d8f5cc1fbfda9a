//! Bans reach a proxy's admin API, signed, for approved comments only, every tag of a batch
//! in one request with the batch's verdicts; an unreachable proxy does not keep them from
//! the others.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use strata_syncer::config::Config;
use strata_wire::auth;
use strata_wire::ban::Ban;
use strata_wire::comment::{Commit, COMMIT_PATH};

use crate::harness::*;

const SECRET: &str = "syncer-test-secret-0123456789";

/// A stand-in for a proxy's admin listener that checks signatures and records each request
/// carrying bans (`/ban`, `/comments/commit`: its path and its bans).
async fn fake_proxy() -> (String, Arc<parking_lot::Mutex<Vec<(String, Vec<Ban>)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let path = parts.uri.path_and_query().unwrap().as_str().to_string();
                        // As a proxy checks it: signed with the secret, for this listener.
                        let ok = auth::host_header(&parts.headers).and_then(|host| {
                            let signed = auth::Signed {
                                method: parts.method.as_str(),
                                host,
                                path: &path,
                                body: &body,
                            };
                            let received = auth::Received::of(&parts.headers);
                            auth::verify(
                                SECRET.as_bytes(),
                                signed,
                                received,
                                strata_wire::ids::unix_ms(),
                                auth::DEFAULT_WINDOW_MS,
                            )?;
                            auth::check_audience(host, addr, &[])
                        });
                        let status = if ok.is_ok() { 200 } else { 403 };
                        if ok.is_ok() && parts.uri.path() == "/ban" {
                            let bans = serde_json::from_slice::<Vec<Ban>>(&body)
                                .unwrap_or_else(|e| panic!("a ban request is an array of bans ({e})"));
                            seen.lock().push((path, bans));
                        } else if ok.is_ok() && parts.uri.path() == COMMIT_PATH {
                            let commit = serde_json::from_slice::<Commit>(&body)
                                .unwrap_or_else(|e| panic!("a commit carries bans and verdicts ({e})"));
                            assert!(!commit.batch.verdicts.is_empty(), "a commit carries the verdicts");
                            seen.lock().push((path, commit.bans));
                        }
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"{\"seq\":1}")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

/// A test's syncer sending to the proxies at `siblings`, and the file of their secret.
async fn env_with_proxies(t: &str, siblings: &[&str]) -> (Env, std::path::PathBuf) {
    let secret_file = std::env::temp_dir().join(format!("strata-syncer-secret-{t}"));
    std::fs::write(&secret_file, SECRET).unwrap();
    let prefix = format!("strata-test:{t}:");
    let extra = format!(
        "[cluster]\nsiblings = {siblings:?}\nsecret_file = \"{}\"\nban_wait = \"50ms\"\nban_timeout = \"1s\"\n",
        secret_file.display()
    );
    let cfg = Config::from_toml(&config_toml(&prefix, &extra), None).unwrap();
    (Env::with_config(prefix, cfg).await, secret_file)
}

#[tokio::test(flavor = "multi_thread")]
async fn approved_comments_ban_their_post_and_the_lists() {
    let (url, seen) = fake_proxy().await;
    let t = token();
    let (mut env, secret_file) = env_with_proxies(&t, &["http://127.0.0.1:9", &url]).await;
    let post = open_post(&env.db, &t).await;
    env.push(record(
        post,
        "B",
        &format!("b-{t}@example.test"),
        "",
        &format!("ban me {t}"),
        &ip_for(&t),
    ))
    .await;
    // Held (two links): no ban.
    env.push(record(
        post,
        "H",
        &format!("h-{t}@example.test"),
        "",
        &format!("{t} http://a.test/ http://b.test/"),
        &ip_for(&format!("{t}h")),
    ))
    .await;
    env.drain().await;
    let got = seen.lock().clone();
    assert_eq!(got.len(), 1, "one request for the batch's bans and verdicts: {got:?}");
    let (path, bans) = &got[0];
    assert!(path.starts_with("/comments/commit?wait=50&n="), "{path}");
    let mut tags: Vec<String> = bans.iter().map(|b| b.value.clone()).collect();
    tags.sort();
    assert_eq!(
        tags,
        vec![
            "list".to_string(),
            format!("post:{post}"),
            "wp:recent-comments".to_string()
        ]
    );
    for ban in bans {
        assert_eq!(ban.kind, strata_wire::ban::Kind::Tag);
        // The post's pages are removed; the lists are served stale once while refreshed
        // (`list_bans = "soft"`, the default).
        assert_eq!(ban.soft, !ban.value.starts_with("post:"), "{ban:?}");
    }
    let _ = std::fs::remove_file(secret_file);
    tokio::time::sleep(Duration::from_millis(1)).await;
    env.finish(Some(&t)).await;
}

/// A batch's bans and verdicts leave the moment it commits, before the next round: the
/// round after it only collects the answers, and does not send the batch's tags again.
#[tokio::test(flavor = "multi_thread")]
async fn an_advanced_batch_sends_its_bans_and_verdicts_at_once_and_once() {
    let (url, seen) = fake_proxy().await;
    let t = token();
    let (mut env, secret_file) = env_with_proxies(&t, &[&url]).await;
    let post = open_post(&env.db, &t).await;
    let rec = |n: &str| own_sender(post, n, &t);
    env.push(rec("a")).await;
    let report = env.syncer.advance().await.unwrap();
    assert_eq!(report.applied, 1);
    assert!(env.syncer.unsettled());
    // Sent on a task of its own: it arrives without another round.
    let arrived = async {
        while seen.lock().is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), arrived)
        .await
        .expect("the batch's bans and verdicts reach the proxy before the next round");

    env.push(rec("b")).await;
    let report = env.syncer.advance().await.unwrap();
    assert_eq!(report.applied, 1);
    env.syncer.settle().await;
    let got = seen.lock().clone();
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        got.len(),
        2,
        "one request per batch, none repeating a batch's tags: {paths:?}"
    );
    for (path, bans) in &got {
        assert!(path.starts_with("/comments/commit?"), "{path}");
        assert!(bans.iter().any(|b| b.value == format!("post:{post}")), "{bans:?}");
    }
    let _ = std::fs::remove_file(secret_file);
    env.finish(Some(&t)).await;
}
