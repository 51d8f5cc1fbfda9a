//! The service manager's side of the real binary (systemd's notify protocol, `Type=notify`):
//! a Unix datagram socket stands in for systemd's, and the proxy must say `READY=1` only
//! once it answers on its listeners, `RELOADING=1` on SIGHUP followed by `READY=1` once the
//! new configuration is in force (or refused, the running one still serving), and
//! `STOPPING=1` on SIGTERM.

use std::time::Duration;

use tokio::net::UnixDatagram;

use crate::reload::{config, free_addrs, hup, status_for};

/// The next notification, as text; fails the test after `limit`.
async fn next(socket: &UnixDatagram, limit: Duration) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(limit, socket.recv(&mut buf))
        .await
        .expect("a notification in time")
        .expect("recv");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The value of `key` in a notification.
fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_listening_and_reloading_until_applied_or_refused() {
    let dir = std::env::temp_dir().join(format!("strata-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let secret = dir.join("secret");
    std::fs::write(&secret, crate::harness::SECRET).expect("secret");
    let socket_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let manager = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let path = dir.join("proxy.toml");
    let addrs = free_addrs().await;
    std::fs::write(&path, config(addrs, &secret, "\"a.test\"", "")).expect("config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_strata-proxy"))
        .arg("--config")
        .arg(&path)
        .env("STRATA_LOG", "error")
        .env("NOTIFY_SOCKET", &socket_path)
        .kill_on_drop(true)
        .spawn()
        .expect("start strata-proxy");
    let pid = child.id().expect("pid");

    // READY=1, and at that moment both listeners answer, without any retry.
    let ready = next(&manager, Duration::from_secs(20)).await;
    assert_eq!(field(&ready, "READY"), Some("1"), "{ready:?}");
    assert!(
        field(&ready, "STATUS").is_some_and(|s| s.contains(&addrs[0].to_string())),
        "{ready:?}"
    );
    // The origin does not listen: a served host gets 502, an unknown one 421.
    assert_eq!(status_for(addrs[0], "a.test").await, Some(502));
    assert_eq!(status_for(addrs[0], "b.test").await, Some(421));
    assert!(tokio::net::TcpStream::connect(addrs[1]).await.is_ok(), "admin listener");

    // A good file: RELOADING=1 with the monotonic time, then READY=1 once it is applied,
    // so b.test is served the moment READY=1 arrives.
    std::fs::write(&path, config(addrs, &secret, "\"a.test\", \"b.test\"", "")).expect("config");
    hup(pid);
    let reloading = next(&manager, Duration::from_secs(10)).await;
    assert_eq!(field(&reloading, "RELOADING"), Some("1"), "{reloading:?}");
    let usec: u64 = field(&reloading, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .expect("MONOTONIC_USEC");
    assert!(usec > 0);
    let applied = next(&manager, Duration::from_secs(10)).await;
    assert_eq!(field(&applied, "READY"), Some("1"), "{applied:?}");
    assert_eq!(field(&applied, "STATUS"), Some("configuration reloaded"), "{applied:?}");
    assert_eq!(status_for(addrs[0], "b.test").await, Some(502));

    // A broken file: RELOADING=1, then READY=1 saying it was refused and naming the key;
    // the running configuration still serves b.test.
    std::fs::write(&path, config(addrs, &secret, "\"a.test\"", "default_ttl = \"forever\"")).expect("config");
    hup(pid);
    let reloading = next(&manager, Duration::from_secs(10)).await;
    assert_eq!(field(&reloading, "RELOADING"), Some("1"), "{reloading:?}");
    let refused = next(&manager, Duration::from_secs(10)).await;
    assert_eq!(field(&refused, "READY"), Some("1"), "{refused:?}");
    let status = field(&refused, "STATUS").unwrap_or_default();
    assert!(
        status.contains("refused") && status.contains("cache.default_ttl"),
        "{refused:?}"
    );
    assert_eq!(status_for(addrs[0], "b.test").await, Some(502));

    // SIGTERM: STOPPING=1, then the process exits.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let stopping = next(&manager, Duration::from_secs(10)).await;
    assert_eq!(field(&stopping, "STOPPING"), Some("1"), "{stopping:?}");
    let exited = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    assert!(
        exited.is_ok_and(|s| s.is_ok_and(|s| s.success())),
        "clean exit after SIGTERM"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
