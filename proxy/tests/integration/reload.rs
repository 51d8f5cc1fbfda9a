//! SIGHUP on the real binary: the configuration file is read again and what can change
//! without a restart applies at once, the process and its cache staying; a file with
//! problems is refused and the running configuration stays.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Free loopback ports (bound, then released for the child process to bind).
pub(crate) async fn free_addrs() -> [SocketAddr; 2] {
    let a = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let b = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    [a.local_addr().expect("addr"), b.local_addr().expect("addr")]
}

pub(crate) fn config(addrs: [SocketAddr; 2], secret: &std::path::Path, hosts: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"{}\"\nadmin_listen = \"{}\"\nworkers = 1\nhosts = [{hosts}]\n\
         [origin]\nurl = \"http://127.0.0.1:9\"\n[cache]\n{extra}\n[cluster]\nsecret_file = {:?}\n",
        addrs[0],
        addrs[1],
        secret.display().to_string(),
    )
}

/// The status of a GET for `host` (the origin does not listen: a served host gets 502).
pub(crate) async fn status_for(addr: SocketAddr, host: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1)?.parse().ok()
}

pub(crate) fn hup(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_configuration_and_refuses_a_broken_one() {
    let dir = std::env::temp_dir().join(format!("strata-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let secret = dir.join("secret");
    std::fs::write(&secret, crate::harness::SECRET).expect("secret");
    let path = dir.join("proxy.toml");
    let addrs = free_addrs().await;
    std::fs::write(&path, config(addrs, &secret, "\"a.test\"", "")).expect("config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_strata-proxy"))
        .arg("--config")
        .arg(&path)
        .env("STRATA_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .expect("start strata-proxy");
    let pid = child.id().expect("pid");
    crate::harness::poll("the proxy", Duration::from_secs(20), || async {
        status_for(addrs[0], "a.test").await
    })
    .await;
    // Only a.test is served.
    assert_eq!(status_for(addrs[0], "b.test").await, Some(421));

    // b.test added, and a key that takes a restart changed too: the first applies.
    std::fs::write(
        &path,
        config(addrs, &secret, "\"a.test\", \"b.test\"", "capacity = \"1GiB\""),
    )
    .expect("config");
    hup(pid);
    crate::harness::poll("b.test served after SIGHUP", Duration::from_secs(10), || async {
        (status_for(addrs[0], "b.test").await == Some(502)).then_some(())
    })
    .await;

    // A broken file is refused: the running configuration stays, the process too.
    std::fs::write(&path, config(addrs, &secret, "\"a.test\"", "default_ttl = \"forever\"")).expect("config");
    hup(pid);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_for(addrs[0], "b.test").await, Some(502));
    assert!(
        child.try_wait().expect("child status").is_none(),
        "SIGHUP does not stop the proxy"
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}
