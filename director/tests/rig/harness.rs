//! A test rig of network namespaces: a client, the director and N nodes running the real
//! strata-proxy (each with a small origin), on one bridge, documentation addresses only.
//!
//! `Rig::up` returns `None` (after printing why) when not root, so the tests skip there.
//! Dropping the rig kills every process it started and removes its namespaces, also when a
//! test fails. Work that must happen inside a namespace runs on a thread moved into it
//! (see [`Rig::in_ns`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata_director::sys::enter_netns;

/// The VIP every node has on lo.
pub const VIP: &str = "192.0.2.100";
/// Where the client connects.
pub fn vip_addr() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 100], 80))
}

/// Rig tests share two cores: one at a time keeps the timing assertions meaningful.
static ONE_RIG_AT_A_TIME: Mutex<()> = Mutex::new(());

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The strata-proxy binary: `STRATA_PROXY_BIN`, else next to the director binary (built
/// on demand).
fn proxy_bin() -> PathBuf {
    if let Ok(p) = std::env::var("STRATA_PROXY_BIN") {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_BIN_EXE_strata-director"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace().join("target/debug"));
    let bin = dir.join("strata-proxy");
    if !bin.exists() {
        eprintln!("building strata-proxy for the rig");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run(Command::new(cargo)
            .args(["build", "-p", "strata-proxy", "--bin", "strata-proxy"])
            .current_dir(workspace()));
    }
    assert!(
        bin.exists(),
        "strata-proxy not found at {} (set STRATA_PROXY_BIN)",
        bin.display()
    );
    bin
}

fn director_bin() -> &'static str {
    env!("CARGO_BIN_EXE_strata-director")
}

/// One node's processes.
struct Node {
    origin: Child,
    proxy: Option<Child>,
}

/// A running rig.
pub struct Rig {
    prefix: String,
    dir: PathBuf,
    nodes: Vec<Node>,
    director: Option<Child>,
    /// The data plane the director is started with.
    pub plane: Plane,
    /// Stands in for systemd's notify socket: the director's `READY=1`, `RELOADING=1`, …
    notify: Option<std::os::unix::net::UnixDatagram>,
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// The data plane a rig test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    /// Packet sockets in user space.
    AfPacket,
    /// The XDP program, native mode on the director's veth.
    Xdp,
}

impl Plane {
    /// The `data_plane` config value.
    pub fn config(self) -> &'static str {
        match self {
            Plane::AfPacket => "af_packet",
            Plane::Xdp => "xdp",
        }
    }

    /// What `/metrics` reports as `strata_director_data_plane{plane=…}`.
    pub fn reported(self) -> &'static str {
        match self {
            Plane::AfPacket => "af_packet",
            Plane::Xdp => "xdp-native",
        }
    }
}

/// Per-node weights for the director config (1 = default).
pub fn director_config(weights: &[u32], plane: Plane) -> String {
    let mut s = format!(
        "interface = \"eth0\"\nvip = \"{VIP}\"\nports = [80]\nadmin_listen = \"127.0.0.1:9090\"\nworkers = 2\n\
         data_plane = \"{}\"\n\
         [health]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 3\nrise = 5\n",
        plane.config()
    );
    for (i, w) in weights.iter().enumerate() {
        let ip = format!("192.0.2.{}", 11 + i);
        s += &format!("[[backend]]\naddr = \"{ip}\"\nhealth_url = \"http://{ip}:9080/healthz\"\nweight = {w}\n");
    }
    s
}

impl Rig {
    /// Builds the namespaces and starts `nodes` nodes (origin + strata-proxy each).
    /// `None` when not root: the caller returns, the test passes as skipped.
    pub fn up(tag: &str, nodes: usize, plane: Plane) -> Option<Rig> {
        if !is_root() {
            eprintln!("SKIPPED: the director rig needs root (network namespaces, packet sockets)");
            return None;
        }
        let turn = ONE_RIG_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let plane_tag = if plane == Plane::Xdp { "x" } else { "p" };
        let prefix = format!("sd{}{tag}{plane_tag}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("strata-rig-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut rig = Rig {
            prefix,
            dir,
            nodes: Vec::new(),
            director: None,
            plane,
            notify: None,
            _turn: turn,
        };
        let mut rig_sh = Command::new(workspace().join("director/tests/rig.sh"));
        rig_sh.args(["up", &rig.prefix, &nodes.to_string()]);
        if plane == Plane::Xdp {
            rig_sh.arg("xdp");
        }
        run(&mut rig_sh);
        let proxy = proxy_bin();
        for i in 1..=nodes {
            let d = rig.dir.join(format!("n{i}"));
            let www = d.join("www");
            std::fs::create_dir_all(&www).expect("node dir");
            std::fs::write(www.join("index.html"), format!("node {i}\n")).expect("page");
            std::fs::write(www.join("big.bin"), vec![b'x'; 1 << 20]).expect("big file");
            std::fs::write(d.join("secret"), "rig-cluster-secret-0123456789\n").expect("secret");
            std::fs::write(
                d.join("proxy.toml"),
                format!(
                    "[server]\nlisten = \"0.0.0.0:80\"\nadmin_listen = \"0.0.0.0:9080\"\n\
                     [origin]\nurl = \"http://127.0.0.1:8081\"\n\
                     [cluster]\nnode_id = \"n{i}\"\nsecret_file = {:?}\n",
                    d.join("secret")
                ),
            )
            .expect("proxy config");
            let origin = rig.spawn(
                &format!("n{i}"),
                Command::new("python3")
                    .args(["-m", "http.server", "8081", "--bind", "127.0.0.1", "--directory"])
                    .arg(&www),
                &d.join("origin.log"),
            );
            let p = rig.spawn(
                &format!("n{i}"),
                Command::new(&proxy).arg("--config").arg(d.join("proxy.toml")),
                &d.join("proxy.log"),
            );
            rig.nodes.push(Node { origin, proxy: Some(p) });
        }
        // The director marks a node up from its proxy's health alone; make sure every
        // origin answers too, so the first request through a node cannot meet a 502.
        for i in 1..=nodes {
            let until = Instant::now() + Duration::from_secs(30);
            let local = SocketAddr::from(([127, 0, 0, 1], 80));
            while rig.in_ns(&format!("n{i}"), || get(local, "/index.html").map(|r| r.0).ok()) != Some(200) {
                assert!(
                    Instant::now() < until,
                    "node {i} does not serve its page (see {})",
                    rig.dir.display()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(rig)
    }

    fn ns_path(&self, host: &str) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}-{host}", self.prefix))
    }

    fn spawn(&self, host: &str, cmd: &Command, log: &Path) -> Child {
        let log = File::create(log).expect("log file");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-{host}", self.prefix)])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        c.spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?} in {host}: {e}"))
    }

    /// Writes the director config for `weights` and starts the director.
    pub fn start_director(&mut self, weights: &[u32]) {
        let cfg = self.dir.join("director.toml");
        std::fs::write(&cfg, director_config(weights, self.plane)).expect("director config");
        let bin = director_bin();
        // A path socket: unlike an abstract one, reachable from the director's namespace.
        let socket = self.dir.join("notify.sock");
        let _ = std::fs::remove_file(&socket);
        self.notify = Some(std::os::unix::net::UnixDatagram::bind(&socket).expect("notify socket"));
        let d = self.spawn(
            "dir",
            Command::new(bin)
                .arg("--config")
                .arg(&cfg)
                .env("NOTIFY_SOCKET", &socket),
            &self.dir.join("director.log"),
        );
        self.director = Some(d);
    }

    /// Runs a second director with the running one's config, to its end (bounded by a
    /// timeout); its exit status and output.
    pub fn second_director(&self) -> (std::process::ExitStatus, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &format!("{}-dir", self.prefix), "timeout", "10"])
            .arg(director_bin())
            .arg("--config")
            .arg(self.dir.join("director.toml"))
            .output()
            .expect("run a second director");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status, text)
    }

    /// Kills the director as a crash would (SIGKILL) and waits for it.
    pub fn kill_director(&mut self) {
        if let Some(mut d) = self.director.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// `ip link show eth0` in namespace `host`.
    pub fn link(&self, host: &str) -> String {
        let out = Command::new("ip")
            .args(["-n", &format!("{}-{host}", self.prefix), "link", "show", "eth0"])
            .output()
            .expect("ip link show");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The director's next message to its service manager (`READY=1\nSTATUS=…`); panics
    /// after `limit`.
    pub fn notification(&self, limit: Duration) -> String {
        let socket = self.notify.as_ref().expect("director started");
        socket.set_read_timeout(Some(limit)).expect("timeout");
        let mut buf = [0u8; 4096];
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification within {limit:?} ({e}):\n{}", self.director_log()));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Rewrites the director config and sends SIGHUP.
    pub fn reload(&self, weights: &[u32]) {
        std::fs::write(self.dir.join("director.toml"), director_config(weights, self.plane)).expect("director config");
        let pid = self.director.as_ref().expect("director running").id();
        run(Command::new("kill").args(["-HUP", &pid.to_string()]));
    }

    /// The director's log so far (for failure messages).
    pub fn director_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("director.log")).unwrap_or_default()
    }

    /// Runs `f` on a thread inside namespace `host` ("cli", "dir", "n1", …).
    pub fn in_ns<T: Send>(&self, host: &str, f: impl FnOnce() -> T + Send) -> T {
        let ns = File::open(self.ns_path(host)).expect("namespace file");
        std::thread::scope(|s| {
            s.spawn(move || {
                enter_netns(&ns).expect("setns");
                f()
            })
            .join()
            .expect("namespace thread panicked")
        })
    }

    /// Runs `f` on a background thread inside `host`; join it yourself.
    pub fn spawn_in_ns<T: Send + 'static>(
        &self,
        host: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let ns = File::open(self.ns_path(host)).expect("namespace file");
        std::thread::spawn(move || {
            enter_netns(&ns).expect("setns");
            f()
        })
    }

    /// GET on the director's admin listener.
    pub fn admin(&self, path: &str) -> String {
        let path = path.to_string();
        self.in_ns("dir", move || get(SocketAddr::from(([127, 0, 0, 1], 9090)), &path))
            .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Node states from `/status`: ("192.0.2.11", "up"), …
    pub fn states(&self) -> Vec<(String, String)> {
        self.admin("/status")
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("node ")?.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.to_string()))
            })
            .collect()
    }

    /// If the director has node `addr` down: how long ago it marked it so (from `/status`,
    /// which the director writes from its own clock, so slow polling does not skew it).
    pub fn down_for(&self, addr: &str) -> Option<Duration> {
        let status = self.admin("/status");
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("node {addr} down for ")))?;
        let secs = line.split_whitespace().nth(4)?.strip_suffix('s')?.parse::<f64>().ok()?;
        Some(Duration::from_secs_f64(secs))
    }

    /// Waits until every node is up on the director; panics after `limit`.
    pub fn wait_all_up(&self, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            let s = self.states();
            if !s.is_empty() && s.len() == self.nodes.len() && s.iter().all(|(_, st)| st == "up") {
                return;
            }
            assert!(
                Instant::now() < until,
                "nodes not up after {limit:?}: {s:?}\n{}",
                self.director_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a command inside namespace `host` and waits for it; panics if it fails.
    pub fn exec(&self, host: &str, args: &[&str]) {
        run(Command::new("ip")
            .args(["netns", "exec", &format!("{}-{host}", self.prefix)])
            .args(args));
    }

    /// One per-node counter from `/metrics`, by node address.
    pub fn metric_of(&self, name: &str, node: &str) -> u64 {
        let prefix = format!("{name}{{node=\"{node}\"}} ");
        self.admin("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Sum of a per-node counter from `/metrics`.
    pub fn metric_sum(&self, name: &str) -> u64 {
        self.admin("/metrics")
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Kills node `i`'s proxy (1-based), as a crash would.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i - 1].proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let children = self.director.iter_mut().chain(
            self.nodes
                .iter_mut()
                .flat_map(|n| n.proxy.iter_mut().chain(std::iter::once(&mut n.origin))),
        );
        for c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(workspace().join("director/tests/rig.sh"))
            .args(["down", &self.prefix])
            .status();
        if std::thread::panicking() {
            eprintln!("rig files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Reads one HTTP/1.1 response (Content-Length framed) from `s`.
fn read_response(s: &mut TcpStream) -> io::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the response head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad status line in {head:?}")))?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Content-Length"))?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed mid-body"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok((status, body))
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    Ok(s)
}

/// One GET on a new connection (call from inside a namespace).
pub fn get(addr: SocketAddr, path: &str) -> io::Result<(u16, Vec<u8>)> {
    let mut s = connect(addr)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    read_response(&mut s)
}

/// Which node answered: the "node N" page body → N.
pub fn node_of(body: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(body).trim().strip_prefix("node ")?.parse().ok()
}

/// A keep-alive connection to the VIP.
pub struct KeepAlive {
    stream: TcpStream,
}

impl KeepAlive {
    /// Opens one (call from inside the client namespace).
    pub fn open() -> io::Result<KeepAlive> {
        Ok(KeepAlive {
            stream: connect(vip_addr())?,
        })
    }

    /// The client-side port of this connection.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().map_or(0, |a| a.port())
    }

    /// GET /index.html on this connection; the node that answered.
    pub fn which_node(&mut self) -> io::Result<usize> {
        write!(self.stream, "GET /index.html HTTP/1.1\r\nHost: {VIP}\r\n\r\n")?;
        let (status, body) = read_response(&mut self.stream)?;
        match (status, node_of(&body)) {
            (200, Some(n)) => Ok(n),
            _ => Err(io::Error::other(format!(
                "status {status}, body {:?}",
                String::from_utf8_lossy(&body)
            ))),
        }
    }
}
