//! Exactly once across crashes: the real binary is killed with SIGKILL again and again while
//! records arrive; every record ends up in MySQL exactly once.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// The running binary; killed (SIGKILL) when dropped, so a failing test leaves nothing behind.
struct Running(Child);

impl Running {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start(config: &std::path::Path) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_strata-syncer"))
            .arg("--config")
            .arg(config)
            .env("STRATA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start strata-syncer"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_never_loses_or_doubles_a_comment() {
    const RECORDS: u64 = 60;
    let t = token();
    let prefix = format!("strata-test:{t}:");
    let dir = std::env::temp_dir().join(format!("strata-syncer-crash-{t}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("syncer.toml");
    std::fs::write(&config, config_toml(&prefix, "flood_interval = \"0\"\nbatch = 4")).unwrap();
    let cfg = strata_syncer::config::Config::from_toml(&std::fs::read_to_string(&config).unwrap(), None).unwrap();
    let mut env = Env::with_config(prefix.clone(), cfg).await;
    let post = open_post(&env.db, &t).await;

    let mut child = start(&config);
    let mut kills = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(150);
    for i in 0..RECORDS {
        let r = record(
            post,
            "Crash Test",
            &format!("crash-{i}-{t}@example.test"),
            "",
            &format!("{t} record {i}"),
            &ip_for(&format!("{t}{i}")),
        );
        env.push(r).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        if Instant::now() >= next_kill {
            // SIGKILL: no chance to finish anything.
            child.kill();
            kills += 1;
            child = start(&config);
            next_kill = Instant::now() + Duration::from_millis(60 + (i % 5) * 40);
        }
    }
    assert!(kills >= 3, "only {kills} kills");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied: u64 = env.get("applied").await.and_then(|s| s.parse().ok()).unwrap_or(0);
        if applied >= RECORDS {
            break;
        }
        assert!(Instant::now() < deadline, "only {applied} of {RECORDS} applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill();

    let mut c = env.db.get_conn().await.unwrap();
    use mysql_async::prelude::Queryable;
    let rows: Vec<(String, u64)> = c
        .exec(
            "SELECT comment_content, COUNT(*) FROM wp_comments WHERE comment_content LIKE ? GROUP BY comment_content",
            (format!("{t} record %"),),
        )
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, RECORDS, "every record once: {rows:?}");
    assert!(rows.iter().all(|(_, n)| *n == 1), "a record applied twice: {rows:?}");
    let _ = std::fs::remove_dir_all(&dir);
    env.finish(Some(&t)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_syncers_on_one_queue_apply_each_comment_once() {
    const RECORDS: u64 = 30;
    let t = token();
    let prefix = format!("strata-test:{t}:");
    let toml = config_toml(&prefix, "flood_interval = \"0\"\nbatch = 3");
    let cfg = strata_syncer::config::Config::from_toml(&toml, None).unwrap();
    let mut a = Env::with_config(prefix.clone(), cfg.clone()).await;
    let mut b = Env::with_config(prefix.clone(), cfg).await;
    let post = open_post(&a.db, &t).await;
    for i in 0..RECORDS {
        let r = record(
            post,
            "Twin",
            &format!("twin-{i}-{t}@example.test"),
            "",
            &format!("{t} twin {i}"),
            &ip_for(&format!("{t}{i}")),
        );
        a.push(r).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ra, rb) = tokio::join!(a.syncer.tick(), b.syncer.tick());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        if ra.cursor.seq >= RECORDS && rb.cursor.seq >= RECORDS {
            break;
        }
        assert!(Instant::now() < deadline, "stuck at {ra:?} / {rb:?}");
    }
    let mut c = a.db.get_conn().await.unwrap();
    use mysql_async::prelude::Queryable;
    let rows: Vec<(String, u64)> = c
        .exec(
            "SELECT comment_content, COUNT(*) FROM wp_comments WHERE comment_content LIKE ? GROUP BY comment_content",
            (format!("{t} twin %"),),
        )
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, RECORDS, "{rows:?}");
    assert!(rows.iter().all(|(_, n)| *n == 1), "{rows:?}");
    a.finish(Some(&t)).await;
    b.finish(None).await;
}
