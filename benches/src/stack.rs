//! `stack-load`: the load generator of the full-stack benchmark (benches/stack.sh): a mixed
//! load of page GETs and comment POSTs spread over the nodes of a cache cluster, with a
//! read-your-writes check after every accepted comment; plus the cache warmer and the SVG plot.
//!
//! ```text
//! stack-load run --system strata --nodes 127.0.0.1:8211,127.0.0.1:8212 --host 127.0.0.1:8080 \
//!     --paths paths.txt --posts 12,14,… --tag benchABC --connections 32 --duration 20s \
//!     --post-share 0.01 --series strata.csv [--max-requests 5000000]
//! stack-load warm --nodes 127.0.0.1:8211,127.0.0.1:8212 --host 127.0.0.1:8080 --paths paths.txt
//! stack-load plot --out stack.svg --series Strata=strata.csv --series Varnish=varnish.csv
//! stack-load sweep-plot --out stack.svg --table sweep.csv [--title TEXT]
//! ```
//!
//! `run`: CONNECTIONS clients in a closed loop, each with one keep-alive connection per node;
//! every request goes to the next node (round-robin per request, as a director would spread
//! new flows). Behind a real director, `--nodes` lists its VIP once per node: each client then
//! keeps that many connections to the VIP, which the director spreads over the nodes. A request is a comment POST with probability `--post-share`, else a GET of the
//! next path of `--paths` (with `Accept-Encoding: gzip`, as browsers send). A POST answered
//! 302 to `…#comment-ID` is followed by a *check*: the same client GETs the post through the
//! next node, without cookies, and the page must contain `id="comment-ID"`; a page without it
//! is a read-your-writes violation. Each violated page is fetched again one second later from
//! the same node, to tell late pages from pages that stay stale. A 302 without `#comment-` (no
//! verdict in time, or held for moderation) is counted as `held`, not as a violation. Any
//! other status, a connection error or a request over 10 s is an error.
//!
//! Output (stdout), one `key=value` per figure, keys unique:
//! `get_rps`, `post_rps`, `violations`, `errors`, `get_p50_ms`, … (see [`report`]), and
//! `example=` lines describing a few violations. `--series` gets one CSV row per second.
//! Progress goes to stderr: one line updated in place on a terminal, a line every 5 s otherwise.
//!
//! `sweep-plot`: the figures of a sweep over comment shares (one CSV row per share: the share,
//! GET/s of Strata and of Varnish, PHP renders per comment of each, empty without comments)
//! as two panels, GET/s on a logarithmic axis and renders per comment, one line per system.
//!
//! Only loopback addresses and the documentation ranges (192.0.2.0/24, 198.51.100.0/24,
//! 203.0.113.0/24, used by the benchmark's own network namespaces) are accepted: this is a
//! load tool for a local stack.

mod form;

use form::form;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use strata_wire::config::parse_duration;

const USAGE: &str = "usage:
  stack-load run --system NAME --nodes IP:PORT[,IP:PORT…] --host HOST --paths FILE --posts ID[,ID…]
                 --tag TAG [--connections 32] [--duration 20s] [--post-share 0.01]
                 [--max-requests 5000000] [--series FILE] [--examples 5]
  stack-load warm --nodes IP:PORT[,IP:PORT…] --host HOST --paths FILE [--concurrency 4]
  stack-load plot --out FILE.svg --series LABEL=FILE.csv [--series LABEL=FILE.csv…] [--title TEXT]
  stack-load sweep-plot --out FILE.svg --table FILE.csv [--title TEXT]";

/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after a violation the page is fetched again.
const RECHECK_AFTER: Duration = Duration::from_secs(1);
/// At most this many violations are fetched again (the rest are only counted).
const MAX_RECHECKS: u64 = 1000;
/// Columns of the per-second series, in CSV order after `second`.
const SERIES: [&str; 5] = ["get", "post", "check", "violations", "errors"];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the Tokio runtime")?;
    match cmd.as_str() {
        "run" => rt.block_on(run(RunArgs::parse(&rest)?)),
        "warm" => rt.block_on(warm(WarmArgs::parse(&rest)?)),
        "plot" => plot(PlotArgs::parse(&rest)?),
        "sweep-plot" => sweep_plot(SweepPlotArgs::parse(&rest)?),
        "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown command {cmd:?}\n{USAGE}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments

/// `"20s"`, `"1500ms"`, `"2m"` or a bare number of seconds.
/// Whether `ip` is loopback or in an IPv4 documentation range (the benchmark's own network
/// namespaces): the only places this tool sends load to.
fn local_target(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback() || matches!((a, b, c), (192, 0, 2) | (198, 51, 100) | (203, 0, 113))
        }
        std::net::IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// A comma-separated list of `IP:PORT`s, each loopback or in a documentation range; the
/// same address may be listed more than once (a VIP in front of several nodes).
fn parse_nodes(s: &str) -> Result<Vec<SocketAddr>> {
    let mut nodes = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let addr: SocketAddr = part
            .parse()
            .with_context(|| format!("--nodes: {part:?} is not IP:PORT"))?;
        if !local_target(addr.ip()) {
            bail!(
                "--nodes: {addr} is neither loopback nor in 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 \
                 (this tool only loads a local stack)"
            );
        }
        nodes.push(addr);
    }
    if nodes.is_empty() {
        bail!("--nodes needs at least one IP:PORT");
    }
    Ok(nodes)
}

/// The paths of a file, one per line (blank lines and lines not starting with `/` skipped).
fn read_paths(file: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let paths: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .map(String::from)
        .collect();
    if paths.is_empty() {
        bail!("{} holds no path (one per line, each starting with /)", file.display());
    }
    Ok(paths)
}

/// Pairs `--flag value` of a sub-command.
fn pairs(rest: &[String]) -> Result<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        out.push((flag.as_str(), value.as_str()));
    }
    Ok(out)
}

struct RunArgs {
    /// Name shown in the progress line and the output (`strata`, `varnish`).
    system: String,
    nodes: Vec<SocketAddr>,
    host: String,
    paths: Vec<String>,
    /// Posts open for comments: the POSTs pick one at random.
    posts: Vec<u64>,
    /// Carried by every comment's text and e-mail, so the script can find and delete them.
    tag: String,
    connections: usize,
    duration: Duration,
    /// Fraction of the requests that are comment POSTs.
    post_share: f64,
    /// Upper bound on the number of requests, whatever the duration.
    max_requests: u64,
    series: Option<PathBuf>,
    /// How many violations are described in the output.
    examples: usize,
}

impl RunArgs {
    fn parse(rest: &[String]) -> Result<RunArgs> {
        let (mut system, mut nodes, mut host, mut paths, mut posts, mut tag) = (None, None, None, None, None, None);
        let mut a = RunArgs {
            system: String::new(),
            nodes: Vec::new(),
            host: String::new(),
            paths: Vec::new(),
            posts: Vec::new(),
            tag: String::new(),
            connections: 32,
            duration: Duration::from_secs(20),
            post_share: 0.01,
            max_requests: 5_000_000,
            series: None,
            examples: 5,
        };
        for (flag, v) in pairs(rest)? {
            match flag {
                "--system" => system = Some(v.to_string()),
                "--nodes" => nodes = Some(parse_nodes(v)?),
                "--host" => host = Some(v.to_string()),
                "--paths" => paths = Some(read_paths(Path::new(v))?),
                "--posts" => {
                    let mut ids = Vec::new();
                    for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        ids.push(
                            p.parse::<u64>()
                                .with_context(|| format!("--posts: bad post id {p:?}"))?,
                        );
                    }
                    posts = Some(ids);
                }
                "--tag" => tag = Some(v.to_string()),
                "--connections" => a.connections = v.parse().with_context(|| format!("--connections {v:?}"))?,
                "--duration" => a.duration = parse_duration(v).map_err(anyhow::Error::msg)?,
                "--post-share" => a.post_share = v.parse().with_context(|| format!("--post-share {v:?}"))?,
                "--max-requests" => a.max_requests = v.parse().with_context(|| format!("--max-requests {v:?}"))?,
                "--series" => a.series = Some(PathBuf::from(v)),
                "--examples" => a.examples = v.parse().with_context(|| format!("--examples {v:?}"))?,
                _ => bail!("run: unknown argument {flag:?}\n{USAGE}"),
            }
        }
        a.system = system.context("run needs --system")?;
        a.nodes = nodes.context("run needs --nodes")?;
        a.host = host.context("run needs --host")?;
        a.paths = paths.context("run needs --paths")?;
        a.posts = posts.context("run needs --posts")?;
        a.tag = tag.context("run needs --tag")?;
        if a.posts.is_empty() {
            bail!("--posts needs at least one post id");
        }
        if a.connections == 0 || a.max_requests == 0 || a.duration.is_zero() {
            bail!("--connections, --max-requests and --duration must be positive");
        }
        if !(0.0..=1.0).contains(&a.post_share) {
            bail!("--post-share must be between 0 and 1, got {}", a.post_share);
        }
        Ok(a)
    }
}

struct WarmArgs {
    nodes: Vec<SocketAddr>,
    host: String,
    paths: Vec<String>,
    concurrency: usize,
}

impl WarmArgs {
    fn parse(rest: &[String]) -> Result<WarmArgs> {
        let (mut nodes, mut host, mut paths, mut concurrency) = (None, None, None, 4);
        for (flag, v) in pairs(rest)? {
            match flag {
                "--nodes" => nodes = Some(parse_nodes(v)?),
                "--host" => host = Some(v.to_string()),
                "--paths" => paths = Some(read_paths(Path::new(v))?),
                "--concurrency" => concurrency = v.parse().with_context(|| format!("--concurrency {v:?}"))?,
                _ => bail!("warm: unknown argument {flag:?}\n{USAGE}"),
            }
        }
        if concurrency == 0 {
            bail!("--concurrency must be positive");
        }
        Ok(WarmArgs {
            nodes: nodes.context("warm needs --nodes")?,
            host: host.context("warm needs --host")?,
            paths: paths.context("warm needs --paths")?,
            concurrency,
        })
    }
}

struct PlotArgs {
    out: PathBuf,
    /// (legend label, CSV file written by `run --series`).
    series: Vec<(String, PathBuf)>,
    title: String,
}

impl PlotArgs {
    fn parse(rest: &[String]) -> Result<PlotArgs> {
        let mut out = None;
        let mut series = Vec::new();
        let mut title = "Throughput over time".to_string();
        for (flag, v) in pairs(rest)? {
            match flag {
                "--out" => out = Some(PathBuf::from(v)),
                "--series" => {
                    let (label, file) = v
                        .split_once('=')
                        .with_context(|| format!("--series {v:?}: use LABEL=FILE"))?;
                    series.push((label.to_string(), PathBuf::from(file)));
                }
                "--title" => title = v.to_string(),
                _ => bail!("plot: unknown argument {flag:?}\n{USAGE}"),
            }
        }
        if series.is_empty() {
            bail!("plot needs at least one --series LABEL=FILE");
        }
        Ok(PlotArgs {
            out: out.context("plot needs --out")?,
            series,
            title,
        })
    }
}

struct SweepPlotArgs {
    out: PathBuf,
    /// `share,strata_get_rps,varnish_get_rps,strata_renders,varnish_renders`, a header line
    /// and one row per share.
    table: PathBuf,
    title: String,
}

impl SweepPlotArgs {
    fn parse(rest: &[String]) -> Result<SweepPlotArgs> {
        let (mut out, mut table) = (None, None);
        let mut title = "GET/s and PHP renders per comment by comment share".to_string();
        for (flag, v) in pairs(rest)? {
            match flag {
                "--out" => out = Some(PathBuf::from(v)),
                "--table" => table = Some(PathBuf::from(v)),
                "--title" => title = v.to_string(),
                _ => bail!("sweep-plot: unknown argument {flag:?}\n{USAGE}"),
            }
        }
        Ok(SweepPlotArgs {
            out: out.context("sweep-plot needs --out")?,
            table: table.context("sweep-plot needs --table")?,
            title,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// One answered request.
struct Answer {
    status: u16,
    location: String,
    x_cache: String,
    body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Connect,
    Timeout,
    Broken,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Broken => "broken",
        }
    }
}

/// A keep-alive HTTP/1.1 connection to one node, opened on first use and after a failure.
struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn { addr, sender: None }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(self.addr))
            .await
            .map_err(|_| Failure::Connect)?
            .map_err(|_| Failure::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect)?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// Sends `req` and reads the whole answer; on any failure the connection is dropped.
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, Failure> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        let exchange = async {
            sender.ready().await.map_err(|_| Failure::Broken)?;
            let resp = sender.send_request(req).await.map_err(|_| Failure::Broken)?;
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let (status, location, x_cache) = (resp.status().as_u16(), header("location"), header("x-cache"));
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|_| Failure::Broken)?
                .to_bytes();
            Ok(Answer {
                status,
                location,
                x_cache,
                body,
            })
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| Failure::Timeout)??;
        self.sender = Some(sender);
        Ok(answer)
    }
}

fn get_request(path: &str, host: &str, gzip: bool) -> Option<Request<Full<Bytes>>> {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", host)
        .header("user-agent", "strata-stack-load/1.0");
    if gzip {
        req = req.header("accept-encoding", "gzip");
    }
    req.body(Full::new(Bytes::new())).ok()
}

/// A unique comment on `post` from client `client`, its `n`th.
fn comment_request(args: &RunArgs, post: u64, client: usize, n: u64) -> Option<Request<Full<Bytes>>> {
    let who = format!("{}-{client}-{n}", args.tag);
    let body = form(&[
        ("comment_post_ID", &post.to_string()),
        ("author", &format!("Stack {client}-{n}")),
        // The varying part first: the e-mail index holds only its first 10 characters.
        ("email", &format!("{n}.{client}.bench-{}@example.test", args.tag)),
        (
            "comment",
            &format!("Full-stack benchmark comment {who}: a unique line of text, read back at once."),
        ),
        ("submit", "Post Comment"),
    ]);
    Request::builder()
        .method(Method::POST)
        .uri("/wp-comments-post.php")
        .header("host", &args.host)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("user-agent", "strata-stack-load/1.0")
        // Its own address per comment (IPv6 documentation prefix): no flood check refuses it.
        .header(
            "x-forwarded-for",
            format!("2001:db8:{:x}:{:x}::{:x}", 0xc000 + client, n >> 16, n & 0xffff),
        )
        .body(Full::new(Bytes::from(body)))
        .ok()
}

/// Most redirects a read-your-writes check follows.
const MAX_REDIRECTS: usize = 4;

/// The path (and query) of a `Location`, without its fragment.
fn location_path(location: &str) -> String {
    let url = location.split('#').next().unwrap_or_default();
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    };
    if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    }
}

/// The comment id and the path of the page of a `Location: http://host/path/#comment-ID`.
fn comment_location(location: &str) -> Option<(u64, String)> {
    let (url, fragment) = location.split_once('#')?;
    let id: u64 = fragment.strip_prefix("comment-")?.parse().ok()?;
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    };
    Some((
        id,
        if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        },
    ))
}

/// Whether the page shows the comment (WordPress's comment list gives each `<li>` its id).
fn shows_comment(body: &[u8], id: u64) -> bool {
    let needle = format!("id=\"comment-{id}\"");
    body.windows(needle.len()).any(|w| w == needle.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// The run

/// Small, fast, deterministic per client; good enough to pick posts and request kinds.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Counters shared by all clients, read by the progress line and written to the series.
struct Shared {
    start: Instant,
    /// Requests started, for `--max-requests`.
    started: AtomicU64,
    /// One row per second of the run (the last row also takes anything later), columns [`SERIES`].
    seconds: Vec<[AtomicU64; 5]>,
    violations: AtomicU64,
    errors: AtomicU64,
    examples: Mutex<Vec<String>>,
    /// Violations fetched again a second later: (still missing the comment, showing it now).
    rechecks: Mutex<Vec<tokio::task::JoinHandle<Option<bool>>>>,
}

impl Shared {
    fn count(&self, column: usize) {
        let s = (self.start.elapsed().as_secs() as usize).min(self.seconds.len() - 1);
        self.seconds[s][column].fetch_add(1, Ordering::Relaxed);
    }
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    /// Latencies in microseconds: GETs, comment POSTs, read-your-writes checks.
    get: Vec<u64>,
    post: Vec<u64>,
    check: Vec<u64>,
    /// POSTs answered with a redirect to the comment.
    accepted: u64,
    /// POSTs answered with a redirect without `#comment-` (no verdict in time, or held).
    held: u64,
    /// Checks whose page showed the comment.
    check_ok: u64,
    violations: u64,
    /// "KIND STATUS" or "KIND failure" → count.
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.get.extend(o.get);
        self.post.extend(o.post);
        self.check.extend(o.check);
        self.accepted += o.accepted;
        self.held += o.held;
        self.check_ok += o.check_ok;
        self.violations += o.violations;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

const COL_GET: usize = 0;
const COL_POST: usize = 1;
const COL_CHECK: usize = 2;
const COL_VIOLATION: usize = 3;
const COL_ERROR: usize = 4;

/// One client of the closed loop, until `end` or until `--max-requests` requests started.
async fn client(args: Arc<RunArgs>, shared: Arc<Shared>, id: usize, end: Instant) -> Tally {
    let mut t = Tally::default();
    let mut conns: Vec<Conn> = args.nodes.iter().map(|a| Conn::new(*a)).collect();
    let n_nodes = conns.len();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ ((id as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9)));
    let mut node = id % n_nodes;
    // Each client starts at its own place in the paths, so they do not move in lockstep.
    let mut cursor = id * args.paths.len() / args.connections.max(1);
    let mut n: u64 = 0;
    let error = |t: &mut Tally, kind: &str, what: &str| {
        *t.errors.entry(format!("{kind} {what}")).or_default() += 1;
        shared.errors.fetch_add(1, Ordering::Relaxed);
        shared.count(COL_ERROR);
    };
    while Instant::now() < end && shared.started.fetch_add(1, Ordering::Relaxed) < args.max_requests {
        let this = node;
        node = (node + 1) % n_nodes;
        if rng.unit() >= args.post_share {
            let path = &args.paths[cursor % args.paths.len()];
            cursor = cursor.wrapping_add(1);
            let Some(req) = get_request(path, &args.host, true) else {
                error(&mut t, "GET", "unbuildable");
                continue;
            };
            let start = Instant::now();
            match conns[this].send(req).await {
                Ok(a) if (200..400).contains(&a.status) => {
                    t.get.push(start.elapsed().as_micros() as u64);
                    shared.count(COL_GET);
                }
                Ok(a) => error(&mut t, "GET", &a.status.to_string()),
                Err(f) => error(&mut t, "GET", f.as_str()),
            }
            continue;
        }
        n += 1;
        let post = args.posts[(rng.next() % args.posts.len() as u64) as usize];
        let Some(req) = comment_request(&args, post, id, n) else {
            error(&mut t, "POST", "unbuildable");
            continue;
        };
        let start = Instant::now();
        let answer = match conns[this].send(req).await {
            Ok(a) => a,
            Err(f) => {
                error(&mut t, "POST", f.as_str());
                continue;
            }
        };
        if answer.status != 302 {
            error(&mut t, "POST", &answer.status.to_string());
            continue;
        }
        t.post.push(start.elapsed().as_micros() as u64);
        shared.count(COL_POST);
        let Some((comment, path)) = comment_location(&answer.location) else {
            t.held += 1;
            continue;
        };
        t.accepted += 1;
        // Read your write through the next node, as a reload would land after a director.
        let other = node;
        node = (node + 1) % n_nodes;
        let answered = Instant::now();
        // A browser follows redirects: `/?p=ID` (the link a verdict gives while the
        // permalink is being looked up) redirects to the permalink.
        let mut target = path.clone();
        let mut check = None;
        for _ in 0..MAX_REDIRECTS {
            let Some(req) = get_request(&target, &args.host, false) else {
                error(&mut t, "check", "unbuildable");
                break;
            };
            match conns[other].send(req).await {
                Ok(a) if a.status == 200 => {
                    check = Some(a);
                    break;
                }
                Ok(a) if matches!(a.status, 301 | 302 | 307 | 308) && !a.location.is_empty() => {
                    target = location_path(&a.location);
                }
                Ok(a) => {
                    error(&mut t, "check", &a.status.to_string());
                    break;
                }
                Err(f) => {
                    error(&mut t, "check", f.as_str());
                    break;
                }
            }
        }
        let Some(check) = check else {
            continue;
        };
        t.check.push(answered.elapsed().as_micros() as u64);
        shared.count(COL_CHECK);
        if shows_comment(&check.body, comment) {
            t.check_ok += 1;
            continue;
        }
        t.violations += 1;
        let seen = shared.violations.fetch_add(1, Ordering::Relaxed);
        shared.count(COL_VIOLATION);
        if (seen as usize) < args.examples {
            shared.examples.lock().push(format!(
                "t={:.1}s comment {comment} on post {post} accepted by node {} ({}); node {} answered {path} \
                 without it {:.1} ms later (X-Cache: {})",
                shared.start.elapsed().as_secs_f64(),
                this + 1,
                args.nodes[this],
                other + 1,
                answered.elapsed().as_secs_f64() * 1000.0,
                if check.x_cache.is_empty() {
                    "none"
                } else {
                    &check.x_cache
                },
            ));
        }
        if seen < MAX_RECHECKS {
            let (addr, host) = (args.nodes[other], args.host.clone());
            shared.rechecks.lock().push(tokio::spawn(async move {
                tokio::time::sleep(RECHECK_AFTER).await;
                let req = get_request(&path, &host, false)?;
                let a = Conn::new(addr).send(req).await.ok()?;
                Some(a.status == 200 && shows_comment(&a.body, comment))
            }));
        }
    }
    t
}

/// Milliseconds at percentile `p` of sorted microseconds.
fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// The progress line, every 250 ms on a terminal, every 5 s otherwise, until `done` is set.
/// A progress bar `width` cells wide, `done` (0 to 1) of it filled.
fn bar(done: f64, width: usize) -> String {
    let filled = ((done.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

async fn progress(args: Arc<RunArgs>, shared: Arc<Shared>, done: Arc<tokio::sync::Notify>) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(5)
    };
    let total = args.duration.as_secs_f64();
    loop {
        tokio::select! {
            _ = done.notified() => break,
            _ = tokio::time::sleep(every) => {}
        }
        let elapsed = shared.start.elapsed().as_secs_f64();
        // Rates of the last complete second.
        let s = (elapsed as usize).saturating_sub(1).min(shared.seconds.len() - 1);
        let rate = |c: usize| shared.seconds[s][c].load(Ordering::Relaxed);
        let line = format!(
            "[{}] {} {:5.1}/{:.0}s  GET/s {:6}  POST/s {:5}  violations {}  errors {}",
            args.system,
            bar(elapsed / total, 20),
            elapsed.min(total),
            total,
            rate(COL_GET),
            rate(COL_POST),
            shared.violations.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed),
        );
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r\x1b[K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
    if tty {
        let _ = writeln!(std::io::stderr());
    }
}

async fn run(args: RunArgs) -> Result<()> {
    let args = Arc::new(args);
    let rows = args.duration.as_secs() as usize + 2;
    let shared = Arc::new(Shared {
        start: Instant::now(),
        started: AtomicU64::new(0),
        seconds: (0..rows).map(|_| Default::default()).collect(),
        violations: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        examples: Mutex::new(Vec::new()),
        rechecks: Mutex::new(Vec::new()),
    });
    let end = shared.start + args.duration;
    let done = Arc::new(tokio::sync::Notify::new());
    let bar = tokio::spawn(progress(args.clone(), shared.clone(), done.clone()));
    let tasks: Vec<_> = (0..args.connections)
        .map(|id| tokio::spawn(client(args.clone(), shared.clone(), id, end)))
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        all.merge(task.await.context("a client task panicked")?);
    }
    let secs = shared.start.elapsed().as_secs_f64();
    done.notify_one();
    bar.await.context("the progress task panicked")?;
    let rechecks: Vec<_> = std::mem::take(&mut *shared.rechecks.lock());
    let (mut still, mut late, mut unknown) = (0u64, 0u64, 0u64);
    for r in rechecks {
        match r.await.context("a recheck task panicked")? {
            Some(true) => late += 1,
            Some(false) => still += 1,
            None => unknown += 1,
        }
    }
    if let Some(file) = &args.series {
        let mut csv = format!("second,{}\n", SERIES.join(","));
        // Whole seconds of the load only: answers to requests still in flight at the end land
        // in the rows after `--duration` and are left out of the series (not of the totals).
        let whole = (secs.floor() as usize).min(args.duration.as_secs() as usize);
        for (i, row) in shared.seconds.iter().enumerate().take(whole) {
            let _ = write!(csv, "{}", i + 1);
            for c in row {
                let _ = write!(csv, ",{}", c.load(Ordering::Relaxed));
            }
            csv.push('\n');
        }
        std::fs::write(file, csv).with_context(|| format!("cannot write {}", file.display()))?;
    }
    report(&args, &mut all, secs, (late, still, unknown), &shared.examples.lock());
    Ok(())
}

/// Prints the figures of the run as `key=value` lines.
fn report(args: &RunArgs, all: &mut Tally, secs: f64, rechecked: (u64, u64, u64), examples: &[String]) {
    all.get.sort_unstable();
    all.post.sort_unstable();
    all.check.sort_unstable();
    let errors: u64 = all.errors.values().sum();
    println!("system={}", args.system);
    println!("nodes={}", args.nodes.len());
    println!("seconds={secs:.2}");
    println!("gets={}", all.get.len());
    println!("posts={}", all.post.len());
    println!("checks={}", all.check.len());
    println!("get_rps={:.1}", all.get.len() as f64 / secs);
    println!("post_rps={:.1}", all.post.len() as f64 / secs);
    println!("accepted={}", all.accepted);
    println!("held={}", all.held);
    println!("check_ok={}", all.check_ok);
    println!("violations={}", all.violations);
    println!("violations_late={}", rechecked.0);
    println!("violations_stale={}", rechecked.1);
    println!("violations_unchecked={}", rechecked.2);
    println!("errors={errors}");
    let by: Vec<String> = all.errors.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "errors_by={}",
        if by.is_empty() {
            "none".into()
        } else {
            by.join(",").replace(' ', "_")
        }
    );
    for (kind, l) in [("get", &all.get), ("post", &all.post), ("check", &all.check)] {
        println!("{kind}_p50_ms={:.2}", pct(l, 50.0));
        println!("{kind}_p99_ms={:.2}", pct(l, 99.0));
        println!("{kind}_max_ms={:.2}", pct(l, 100.0));
    }
    for e in examples {
        println!("example={e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Warming

/// GETs every path once on every node (with `Accept-Encoding: gzip`), `--concurrency` at a time.
async fn warm(args: WarmArgs) -> Result<()> {
    let args = Arc::new(args);
    let next = Arc::new(AtomicU64::new(0));
    let total = (args.nodes.len() * args.paths.len()) as u64;
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (args, next) = (args.clone(), next.clone());
            tokio::spawn(async move {
                let mut conns: Vec<Conn> = args.nodes.iter().map(|a| Conn::new(*a)).collect();
                let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let (node, path) = ((i as usize) % conns.len(), &args.paths[(i as usize) / conns.len()]);
                    let key = match get_request(path, &args.host, true) {
                        None => "unbuildable".to_string(),
                        Some(req) => match conns[node].send(req).await {
                            Ok(a) => a.status.to_string(),
                            Err(f) => f.as_str().to_string(),
                        },
                    };
                    *statuses.entry(key).or_default() += 1;
                }
                statuses
            })
        })
        .collect();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await.context("a warming task panicked")? {
            *statuses.entry(k).or_default() += v;
        }
    }
    let list: Vec<String> = statuses.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "warmed={total} seconds={:.1} statuses={}",
        start.elapsed().as_secs_f64(),
        list.join(",")
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The plot

/// Colours of the series, in order.
const COLOURS: [&str; 4] = ["#1f6fb4", "#e0661a", "#2b9a3c", "#a23aa8"];

/// Per second of a run: (GET/s, POST/s, violations).
type Rows = Vec<(f64, f64, f64)>;

/// Reads a CSV written by `run --series`.
fn read_series(file: &Path) -> Result<Rows> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let cols: Vec<f64> = line
            .split(',')
            .map(|c| c.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}:{}: not a row of numbers", file.display(), i + 1))?;
        if cols.len() != SERIES.len() + 1 {
            bail!("{}:{}: expected {} columns", file.display(), i + 1, SERIES.len() + 1);
        }
        rows.push((cols[1], cols[2], cols[4]));
    }
    Ok(rows)
}

/// A "nice" step (1, 2 or 5 × 10^k) giving about `ticks` ticks up to `max`.
fn nice_step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

fn fmt_tick(v: f64) -> String {
    if v >= 10_000.0 && v % 1000.0 == 0.0 {
        format!("{}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One panel: a line per series of `value(row)` against seconds, axes, ticks and a y label.
#[allow(clippy::too_many_arguments)]
fn panel(
    svg: &mut String,
    top: f64,
    height: f64,
    (left, width): (f64, f64),
    label: &str,
    all: &[(String, Rows)],
    value: fn(&(f64, f64, f64)) -> f64,
    max_x: f64,
) {
    let max_y = all
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(value))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.1;
    let step = nice_step(max_y, 5.0);
    let top_y = (max_y / step).ceil() * step;
    let x = |s: f64| left + width * s / max_x;
    let y = |v: f64| top + height - height * v / top_y;
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="#fafafa" stroke="#999"/>"##
    );
    let mut v = 0.0;
    while v <= top_y + step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">{}</text>"##,
            left + width,
            left - 6.0,
            yy + 4.0,
            fmt_tick(v)
        );
        v += step;
    }
    let xstep = nice_step(max_x, 8.0).max(1.0);
    let mut s = 0.0;
    while s <= max_x + 1e-9 {
        let xx = x(s);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"##,
            top + height,
            top + height + 16.0,
            fmt_tick(s)
        );
        s += xstep;
    }
    let _ = writeln!(
        svg,
        r##"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle" font-size="13">{}</text>"##,
        left - 52.0,
        top + height / 2.0,
        xml_escape(label)
    );
    for (i, (_, rows)) in all.iter().enumerate() {
        let points: Vec<String> = rows
            .iter()
            .enumerate()
            .map(|(s, r)| format!("{:.1},{:.1}", x(s as f64 + 1.0), y(value(r))))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"##,
            COLOURS[i % COLOURS.len()],
            points.join(" ")
        );
    }
}

fn plot(args: PlotArgs) -> Result<()> {
    let mut all = Vec::new();
    for (label, file) in &args.series {
        all.push((label.clone(), read_series(file)?));
    }
    let max_x = all.iter().map(|(_, r)| r.len()).max().unwrap_or(1).max(1) as f64;
    let (w, h) = (900.0, 560.0);
    let (left, width) = (80.0, w - 80.0 - 30.0);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">"##
    );
    let _ = writeln!(svg, r##"<rect width="{w}" height="{h}" fill="white"/>"##);
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"##,
        w / 2.0,
        xml_escape(&args.title)
    );
    // Legend: one colour per system; violations marked in red on the GET panel.
    let mut lx = left;
    for (i, (label, rows)) in all.iter().enumerate() {
        let violations: f64 = rows.iter().map(|r| r.2).sum();
        let text = format!("{label} ({violations:.0} read-your-writes violations)");
        let _ = writeln!(
            svg,
            r##"<line x1="{lx}" y1="44" x2="{:.1}" y2="44" stroke="{}" stroke-width="3"/><text x="{:.1}" y="48" font-size="13">{}</text>"##,
            lx + 24.0,
            COLOURS[i % COLOURS.len()],
            lx + 30.0,
            xml_escape(&text)
        );
        lx += 30.0 + 7.5 * text.len() as f64 + 24.0;
    }
    panel(
        &mut svg,
        64.0,
        200.0,
        (left, width),
        "page GETs per second",
        &all,
        |r| r.0,
        max_x,
    );
    panel(
        &mut svg,
        310.0,
        200.0,
        (left, width),
        "comment POSTs per second",
        &all,
        |r| r.1,
        max_x,
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">seconds since the start of the load</text>"##,
        left + width / 2.0,
        h - 12.0
    );
    svg.push_str("</svg>\n");
    std::fs::write(&args.out, svg).with_context(|| format!("cannot write {}", args.out.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The sweep plot

/// The systems of a sweep, in the columns' order.
const SYSTEMS: [&str; 2] = ["Strata", "Varnish"];

/// One comment share of a sweep: GET/s and PHP renders per comment, per system.
#[derive(Debug, PartialEq)]
struct SweepRow {
    share: f64,
    get_rps: [f64; 2],
    /// `None` without comments.
    renders: [Option<f64>; 2],
}

/// Parses the table `stack.sh` writes for `sweep-plot` (a header line, then one row per share;
/// an empty renders cell means no comment was accepted).
fn parse_sweep(text: &str) -> Result<Vec<SweepRow>> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if cols.len() != 5 {
            bail!("line {}: expected 5 columns, got {}", i + 1, cols.len());
        }
        let number = |c: &str| -> Result<f64> {
            c.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .with_context(|| format!("line {}: {c:?} is not a number", i + 1))
        };
        let maybe = |c: &str| -> Result<Option<f64>> {
            if c.is_empty() || c == "n/a" {
                Ok(None)
            } else {
                number(c).map(Some)
            }
        };
        rows.push(SweepRow {
            share: number(cols[0])?,
            get_rps: [number(cols[1])?, number(cols[2])?],
            renders: [maybe(cols[3])?, maybe(cols[4])?],
        });
    }
    if rows.is_empty() {
        bail!("the table holds no share");
    }
    Ok(rows)
}

/// A share as a percentage, without float noise: 0.001 → "0.1 %".
fn share_label(share: f64) -> String {
    format!("{} %", (share * 100.0 * 1e6).round() / 1e6)
}

/// The decades that hold every positive value: (10^floor(log10 min), 10^ceil(log10 max)),
/// at least one decade apart; (1, 10) when there is none.
fn decades(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi <= 0.0 {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    (lo, hi)
}

/// One panel of the sweep plot: per system a line through its values at each share (`None`
/// leaves a gap), each point labelled, on a logarithmic (`log`) or linear y axis.
fn sweep_panel(
    svg: &mut String,
    (top, height): (f64, f64),
    (left, width): (f64, f64),
    label: &str,
    shares: &[f64],
    values: &[Vec<Option<f64>>; 2],
    log: bool,
) {
    let n = shares.len().max(1) as f64;
    let x = |i: usize| left + width * (i as f64 + 0.5) / n;
    let all = || values.iter().flatten().flatten().copied();
    let (lo, hi) = if log {
        decades(all())
    } else {
        let max = all().fold(0.0f64, f64::max).max(1.0) * 1.15;
        let step = nice_step(max, 5.0);
        (0.0, (max / step).ceil() * step)
    };
    let y = |v: f64| {
        let f = if log {
            (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10())
        } else {
            v / hi
        };
        top + height - height * f
    };
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="#fafafa" stroke="#999"/>"##
    );
    let mut ticks = Vec::new();
    if log {
        let mut t = lo;
        while t <= hi * 1.000_001 {
            ticks.push(t);
            t *= 10.0;
        }
    } else {
        let step = nice_step(hi, 5.0);
        let mut t = 0.0;
        while t <= hi + step / 2.0 {
            ticks.push(t);
            t += step;
        }
    }
    for t in ticks {
        let yy = y(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">{}</text>"##,
            left + width,
            left - 6.0,
            yy + 4.0,
            fmt_tick(t)
        );
    }
    for (i, share) in shares.iter().enumerate() {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"##,
            x(i),
            top + height + 16.0,
            xml_escape(&share_label(*share))
        );
    }
    let _ = writeln!(
        svg,
        r##"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle" font-size="13">{}</text>"##,
        left - 52.0,
        top + height / 2.0,
        xml_escape(label)
    );
    if !log {
        for i in (0..shares.len()).filter(|&i| values.iter().all(|v| v.get(i).is_none_or(Option::is_none))) {
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="#888">no comments</text>"##,
                x(i),
                y(0.0) - 8.0
            );
        }
    }
    for (s, series) in values.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        // Consecutive shares with a value are joined; a share without one breaks the line.
        let mut run: Vec<String> = Vec::new();
        let mut lines = Vec::new();
        for (i, v) in series.iter().enumerate() {
            match v {
                Some(v) => run.push(format!("{:.1},{:.1}", x(i), y(*v))),
                None => lines.push(std::mem::take(&mut run)),
            }
        }
        lines.push(run);
        for points in lines.iter().filter(|p| p.len() > 1) {
            let _ = writeln!(
                svg,
                r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"##,
                points.join(" ")
            );
        }
        for (i, v) in series.iter().enumerate() {
            let Some(v) = v else { continue };
            let text = if log { format!("{v:.0}") } else { format!("{v:.2}") };
            // Strata's labels above its points, Varnish's below, so that close points stay legible.
            let dy = if s == 0 { -8.0 } else { 16.0 };
            let _ = writeln!(
                svg,
                r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{colour}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{colour}">{}</text>"##,
                x(i),
                y(*v),
                x(i),
                y(*v) + dy,
                text
            );
        }
    }
}

fn sweep_plot(args: SweepPlotArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.table).with_context(|| format!("cannot read {}", args.table.display()))?;
    let rows = parse_sweep(&text).with_context(|| format!("{}", args.table.display()))?;
    let shares: Vec<f64> = rows.iter().map(|r| r.share).collect();
    let gets = [0, 1].map(|s| rows.iter().map(|r| Some(r.get_rps[s])).collect::<Vec<_>>());
    let renders = [0, 1].map(|s| rows.iter().map(|r| r.renders[s]).collect::<Vec<_>>());
    let (w, h) = (900.0, 560.0);
    let (left, width) = (80.0, w - 80.0 - 30.0);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">"##
    );
    let _ = writeln!(svg, r##"<rect width="{w}" height="{h}" fill="white"/>"##);
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"##,
        w / 2.0,
        xml_escape(&args.title)
    );
    let mut lx = left;
    for (i, label) in SYSTEMS.iter().enumerate() {
        let _ = writeln!(
            svg,
            r##"<line x1="{lx}" y1="44" x2="{:.1}" y2="44" stroke="{}" stroke-width="3"/><text x="{:.1}" y="48" font-size="13">{}</text>"##,
            lx + 24.0,
            COLOURS[i % COLOURS.len()],
            lx + 30.0,
            label
        );
        lx += 30.0 + 7.5 * label.len() as f64 + 24.0;
    }
    sweep_panel(
        &mut svg,
        (64.0, 200.0),
        (left, width),
        "page GETs per second (log)",
        &shares,
        &gets,
        true,
    );
    sweep_panel(
        &mut svg,
        (310.0, 200.0),
        (left, width),
        "PHP renders per comment",
        &shares,
        &renders,
        false,
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">share of the requests that are comment POSTs</text>"##,
        left + width / 2.0,
        h - 12.0
    );
    svg.push_str("</svg>\n");
    std::fs::write(&args.out, svg).with_context(|| format!("cannot write {}", args.out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_followed_by_path() {
        assert_eq!(location_path("http://127.0.0.1:8080/a-post/#comment-1"), "/a-post/");
        assert_eq!(location_path("/?p=7"), "/?p=7");
        assert_eq!(location_path("http://h"), "/");
    }

    #[test]
    fn locations_of_comments() {
        assert_eq!(
            comment_location("http://127.0.0.1:8080/a-post/#comment-123"),
            Some((123, "/a-post/".to_string()))
        );
        assert_eq!(comment_location("/?p=7#comment-9"), Some((9, "/?p=7".to_string())));
        assert_eq!(comment_location("http://127.0.0.1:8080/a-post/"), None);
        assert_eq!(comment_location("http://127.0.0.1:8080/a-post/#respond"), None);
    }

    #[test]
    fn pages_show_comments() {
        assert!(shows_comment(br#"<li id="comment-12" class="comment">"#, 12));
        assert!(!shows_comment(br#"<li id="comment-123" class="comment">"#, 12));
    }

    #[test]
    fn only_local_nodes() {
        assert!(parse_nodes("127.0.0.1:8211,[::1]:8212").is_ok());
        assert_eq!(parse_nodes("192.0.2.100:80,192.0.2.100:80").unwrap().len(), 2);
        assert!(parse_nodes("198.51.100.7:80,203.0.113.9:80").is_ok());
        assert!(parse_nodes("192.0.3.1:80").is_err());
        assert!(parse_nodes("10.0.0.1:80").is_err());
        assert!(parse_nodes("[2001:db8::1]:80").is_err());
        assert!(parse_nodes("").is_err());
    }

    #[test]
    fn progress_bars() {
        assert_eq!(bar(0.0, 4), "[....]");
        assert_eq!(bar(0.5, 4), "[##..]");
        assert_eq!(bar(1.7, 4), "[####]");
        assert_eq!(bar(f64::NAN, 4), "[....]");
    }

    #[test]
    fn sweep_tables() {
        let rows = parse_sweep(
            "share,strata_get_rps,varnish_get_rps,strata_renders,varnish_renders\n\
             0,58944.2,41600.0,,\n0.01,1639.0,275.5,3.27,n/a\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].renders, [None, None]);
        assert_eq!(rows[1].get_rps, [1639.0, 275.5]);
        assert_eq!(rows[1].renders, [Some(3.27), None]);
        assert!(parse_sweep("header\n").is_err());
        assert!(parse_sweep("header\n0,1,2,3\n").is_err());
        assert!(parse_sweep("header\n0,1,x,3,4\n").is_err());
    }

    #[test]
    fn share_labels_and_decades() {
        assert_eq!(share_label(0.0), "0 %");
        assert_eq!(share_label(0.001), "0.1 %");
        assert_eq!(share_label(0.05), "5 %");
        assert_eq!(decades([275.0, 58944.0].into_iter()), (100.0, 100_000.0));
        assert_eq!(decades([500.0].into_iter()), (100.0, 1000.0));
        assert_eq!(decades([0.0].into_iter()), (1.0, 10.0));
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(1000.0, 5.0), 200.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
    }
}
