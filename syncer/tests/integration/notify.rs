//! The service manager's side of the real binary (systemd's notify protocol, `Type=notify`):
//! a Unix datagram socket stands in for systemd's; the syncer says `READY=1` once its admin
//! listener answers, and `STOPPING=1` on SIGTERM.

use std::time::Duration;

use tokio::net::UnixDatagram;

use crate::harness::*;

/// The next notification, as text; fails the test after `limit`.
async fn next(socket: &UnixDatagram, limit: Duration) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(limit, socket.recv(&mut buf))
        .await
        .expect("a notification in time")
        .expect("recv");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_once_the_admin_listener_answers_and_stopping_on_sigterm() {
    let t = token();
    let dir = std::env::temp_dir().join(format!("strata-syncer-notify-{t}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let socket_path = dir.join("notify.sock");
    let manager = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let config = dir.join("syncer.toml");
    let prefix = format!("strata-test:{t}:");
    std::fs::write(&config, config_toml(&prefix, &format!("admin_listen = \"{admin}\""))).expect("config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_strata-syncer"))
        .arg("--config")
        .arg(&config)
        .env("STRATA_LOG", "error")
        .env("NOTIFY_SOCKET", &socket_path)
        .kill_on_drop(true)
        .spawn()
        .expect("start strata-syncer");

    let ready = next(&manager, Duration::from_secs(20)).await;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(ready.contains(&admin.to_string()), "{ready:?}");
    // At that moment the admin listener answers, without any retry.
    let health = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: syncer\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(String::from_utf8_lossy(&out).into_owned())
    })
    .await
    .ok()
    .flatten()
    .expect("an answer from the admin listener");
    assert!(health.starts_with("HTTP/1.1 "), "{health}");

    let pid = child.id().expect("pid");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let stopping = next(&manager, Duration::from_secs(10)).await;
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let exited = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    assert!(exited.is_ok_and(|s| s.is_ok()), "exit after SIGTERM");
    let _ = std::fs::remove_dir_all(&dir);
}
