//! `comment-load`: a fixed number of keep-alive connections POSTing comment forms to one
//! URL for a fixed time, every comment unique, for the comment benchmark (benches/comments.sh).
//!
//! Each comment has its own text, author and e-mail (`N.C.R.bench-TAG@example.test`; text and
//! e-mail carry `--tag`, so the benchmark can find and delete them afterwards) and, with
//! `--forwarded-for`, its own `X-Forwarded-For` address in the IPv6 documentation prefix
//! (2001:db8::/32), so neither the duplicate nor the flood check refuses it. `--round`
//! (default 1) goes into the text, the e-mail and the address: the runs of a benchmark that
//! come back within WordPress's 15 s flood window use addresses and e-mails of their own.
//! Posts are taken in turn from `--posts`.
//!
//! ```text
//! comment-load --url http://127.0.0.1:8110/wp-comments-post.php --host 127.0.0.1:8080 \
//!     --posts 12,14 --tag benchABC --connections 64 --duration 10s [--forwarded-for] \
//!     [--latencies FILE] [--round N]
//! ```
//!
//! Output, one `key=value` line per figure group:
//!
//! ```text
//! requests=51234 seconds=10.00 rps=5123.4 errors=0
//! latency_ms p50=11.2 p90=13.0 p99=19.8 max=210.3
//! status 302_comment=51200 302_post=34 other=
//! cpu_ticks=412
//! ```
//!
//! `cpu_ticks` is the generator's own CPU time (user + system, in clock ticks). With
//! `--latencies`, every answered request's latency in microseconds goes to FILE, one a line,
//! so that runs can be pooled.
//!
//! `302_comment` is a redirect to `…#comment-ID` (the comment was judged and stored),
//! `302_post` one back to the post (stored later), `other` the remaining statuses with counts.

mod form;

use form::form;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use strata_wire::config::parse_duration;

const USAGE: &str = "usage: comment-load --url URL --host HOST --posts ID[,ID…] --tag TAG \
                     [--connections N] [--duration 10s] [--forwarded-for] [--latencies FILE] [--round N]";

/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

struct Args {
    addr: SocketAddr,
    path: String,
    host: String,
    posts: Vec<u64>,
    tag: String,
    connections: usize,
    duration: Duration,
    forwarded_for: bool,
    latencies: Option<std::path::PathBuf>,
    round: u32,
}

fn parse_args() -> Result<Args> {
    let mut url = None;
    let mut host = None;
    let mut posts = Vec::new();
    let mut tag = None;
    let mut connections = 64;
    let mut duration = Duration::from_secs(10);
    let mut forwarded_for = false;
    let mut latencies = None;
    let mut round = 1;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--url" => url = Some(val()?),
            "--host" => host = Some(val()?),
            "--posts" => {
                for p in val()?.split(',') {
                    posts.push(p.trim().parse().with_context(|| format!("bad post id {p:?}"))?);
                }
            }
            "--tag" => tag = Some(val()?),
            "--connections" => connections = val()?.parse().context("--connections")?,
            "--duration" => duration = parse_duration(&val()?).map_err(anyhow::Error::msg)?,
            "--forwarded-for" => forwarded_for = true,
            "--latencies" => latencies = Some(val()?.into()),
            "--round" => round = val()?.parse().context("--round")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    let url = url.context(USAGE)?;
    let rest = url
        .strip_prefix("http://")
        .context("--url must be http://HOST:PORT/PATH")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("--url needs an IP:port, got {authority:?}"))?;
    if posts.is_empty() || connections == 0 {
        bail!("--posts and a positive --connections are required\n{USAGE}");
    }
    Ok(Args {
        addr,
        path: if path.is_empty() { "/".into() } else { path.into() },
        host: host.unwrap_or_else(|| authority.to_string()),
        posts,
        tag: tag.context(USAGE)?,
        connections,
        duration,
        forwarded_for,
        latencies,
        round,
    })
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    /// Latency of every answered request, in microseconds.
    latencies: Vec<u64>,
    /// Redirects to the stored comment.
    to_comment: u64,
    /// Redirects back to the post.
    to_post: u64,
    /// Other statuses.
    other: BTreeMap<u16, u64>,
    /// Requests that failed or timed out (connection errors included).
    errors: u64,
}

/// One keep-alive connection sending comments until `end`; reconnects after an error.
async fn connection(args: std::sync::Arc<Args>, id: usize, end: Instant) -> Tally {
    let mut t = Tally::default();
    let mut n: u64 = 0;
    'connect: while Instant::now() < end {
        let stream = match tokio::net::TcpStream::connect(args.addr).await {
            Ok(s) => s,
            Err(_) => {
                t.errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
            t.errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < end {
            n += 1;
            let post = args.posts[(id + n as usize) % args.posts.len()].to_string();
            let round = args.round;
            let who = format!("{}-{round}-{id}-{n}", args.tag);
            let body = form(&[
                ("comment_post_ID", &post),
                ("author", &format!("Bench {id}-{n}")),
                // The varying part first: the e-mail index holds only its first 10 characters.
                ("email", &format!("{n}.{id}.{round}.bench-{}@example.test", args.tag)),
                (
                    "comment",
                    &format!("Benchmark comment {who}: a unique line of text for the comment queue."),
                ),
                ("submit", "Post Comment"),
            ]);
            let mut req = Request::builder()
                .method(Method::POST)
                .uri(&args.path)
                .header("host", &args.host)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("user-agent", "strata-comment-load/1.0");
            if args.forwarded_for {
                req = req.header(
                    "x-forwarded-for",
                    format!("2001:db8:{:x}:{round:x}:{:x}::{:x}", 0xb000 + id, n >> 16, n & 0xffff),
                );
            }
            let req = match req.body(Full::new(Bytes::from(body))) {
                Ok(r) => r,
                Err(_) => {
                    t.errors += 1;
                    continue;
                }
            };
            let start = Instant::now();
            let exchange = async {
                let resp = sender.send_request(req).await.ok()?;
                let status = resp.status().as_u16();
                let location = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                resp.into_body().collect().await.ok()?;
                Some((status, location))
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                Ok(Some((status, location))) => {
                    t.latencies.push(start.elapsed().as_micros() as u64);
                    match status {
                        302 if location.contains("#comment-") => t.to_comment += 1,
                        302 => t.to_post += 1,
                        s => *t.other.entry(s).or_default() += 1,
                    }
                }
                _ => {
                    t.errors += 1;
                    continue 'connect;
                }
            }
        }
    }
    t
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = std::sync::Arc::new(parse_args()?);
    let start = Instant::now();
    let end = start + args.duration;
    let tasks: Vec<_> = (0..args.connections)
        .map(|id| tokio::spawn(connection(args.clone(), id, end)))
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.context("a connection task panicked")?;
        all.latencies.extend(t.latencies);
        all.to_comment += t.to_comment;
        all.to_post += t.to_post;
        all.errors += t.errors;
        for (s, c) in t.other {
            *all.other.entry(s).or_default() += c;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    all.latencies.sort_unstable();
    if let Some(path) = &args.latencies {
        let mut text = String::with_capacity(all.latencies.len() * 6);
        for l in &all.latencies {
            text.push_str(&l.to_string());
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let n = all.latencies.len();
    println!(
        "requests={n} seconds={secs:.2} rps={:.1} errors={}",
        n as f64 / secs,
        all.errors
    );
    println!(
        "latency_ms p50={:.2} p90={:.2} p99={:.2} max={:.2}",
        pct(&all.latencies, 50.0),
        pct(&all.latencies, 90.0),
        pct(&all.latencies, 99.0),
        pct(&all.latencies, 100.0)
    );
    let other: Vec<String> = all.other.iter().map(|(s, c)| format!("{s}:{c}")).collect();
    println!(
        "status 302_comment={} 302_post={} other={}",
        all.to_comment,
        all.to_post,
        other.join(",")
    );
    if let Some(ticks) = own_cpu_ticks() {
        println!("cpu_ticks={ticks}");
    }
    Ok(())
}

/// This process's CPU time so far (user + system), in clock ticks, from `/proc/self/stat`.
fn own_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which ends with the last `)`: utime and stime
    // are the 14th and 15th of the line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}
