//! Real `strata-proxy` processes on loopback, for what an in-process proxy cannot show: a
//! node paused (SIGSTOP), killed (SIGKILL) and restarted with the same configuration.
//!
//! Ports are chosen by binding port 0 and releasing it just before the processes start, so
//! every node's config can name its siblings' admin URLs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::Method;

use crate::harness::{node_toml, try_send, NODE_IDS};

/// The strata-proxy binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_strata-proxy");

/// One strata-proxy process.
pub struct Node {
    /// Node id (`a`, `b`…).
    pub id: &'static str,
    /// Public listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// Its configuration file (also usable by `strata-proxy ban --config`).
    pub config: PathBuf,
    /// Where its log goes (appended across restarts).
    pub log: PathBuf,
    /// The running process, if any.
    child: Option<Child>,
}

/// Several strata-proxy processes that are each other's siblings.
pub struct Nodes {
    /// The nodes, in id order.
    pub nodes: Vec<Node>,
    /// Temporary directory holding configs and logs.
    dir: PathBuf,
}

impl Nodes {
    /// Writes `n` configs for `origin` (node `i` gets `extra(i)` per section), starts the
    /// processes and waits for each to answer `/healthz`.
    pub async fn start(origin: &str, n: usize, extra: impl Fn(usize) -> Vec<(&'static str, String)>) -> Nodes {
        assert!(n <= NODE_IDS.len());
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "strata-it-nodes-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // Hold every port until all are chosen, so no two nodes get the same one.
        let held: Vec<(std::net::TcpListener, std::net::TcpListener)> = (0..n)
            .map(|_| {
                (
                    std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
                    std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
                )
            })
            .collect();
        let addrs: Vec<(SocketAddr, SocketAddr)> = held
            .iter()
            .map(|(p, a)| (p.local_addr().unwrap(), a.local_addr().unwrap()))
            .collect();
        drop(held);
        let mut nodes = Vec::new();
        for i in 0..n {
            let siblings: Vec<SocketAddr> = (0..n).filter(|j| *j != i).map(|j| addrs[j].1).collect();
            let toml = node_toml(addrs[i].0, addrs[i].1, origin, NODE_IDS[i], &siblings, &extra(i));
            let config = dir.join(format!("{}.toml", NODE_IDS[i]));
            std::fs::write(&config, toml).expect("write config");
            nodes.push(Node {
                id: NODE_IDS[i],
                addr: addrs[i].0,
                admin: addrs[i].1,
                config,
                log: dir.join(format!("{}.log", NODE_IDS[i])),
                child: None,
            });
        }
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_healthy(Duration::from_secs(10)).await;
        }
        Nodes { nodes, dir }
    }

    /// The admin addresses of all nodes.
    pub fn admins(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.admin).collect()
    }
}

impl std::ops::Index<usize> for Nodes {
    type Output = Node;
    fn index(&self, i: usize) -> &Node {
        &self.nodes[i]
    }
}

impl std::ops::IndexMut<usize> for Nodes {
    fn index_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        if std::thread::panicking() {
            eprintln!("node configs and logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Node {
    /// Starts the process (again) with its config.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .env("STRATA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        self.child = Some(child);
    }

    /// Waits (at most `limit`) for `/healthz` to answer 200; panics with the log otherwise.
    pub async fn wait_healthy(&mut self, limit: Duration) {
        let start = std::time::Instant::now();
        let url = format!("http://{}/healthz", self.admin);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("node {} exited with {status}:\n{}", self.id, self.log_tail());
                }
            }
            let r = try_send(Method::GET, &url, &[], Bytes::new(), Duration::from_secs(1)).await;
            if r.is_ok_and(|r| r.status == 200) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "node {} not healthy within {limit:?}:\n{}",
                self.id,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id of the running node.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is running").id()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Freezes the process (SIGSTOP): its sockets stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of the node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}
