//! `fill`: fills a cache with many distinct objects.
//!
//! Sends exactly `--count` GET requests for the distinct paths `{prefix}0` …
//! `{prefix}{count-1}`, `--concurrency` at a time over keep-alive connections,
//! and reads every body to the end. Stops after the last request or at the
//! timeout, whichever comes first, and prints one summary line:
//!
//! ```text
//! sent=100000 ok=100000 errors=0 seconds=41.20 req_per_s=2427.2 non2xx=0 x_cache_hit=0 x_cache_miss=100000 ...
//! ```
//!
//! `ok` counts 2xx responses whose body was read in full; `errors` counts
//! requests that failed (connection, protocol or body errors, or cut short by
//! the timeout); `non2xx` counts complete responses with another status.
//! `x_cache_*` count the `X-Cache` response header (`other` when absent).
//!
//! Only loopback targets are accepted: this is a load tool for a local stack.
//!
//! ```text
//! fill --target http://127.0.0.1:8094 --host example.test --count 100000 --concurrency 32 \
//!     [--prefix /fill/] [--timeout 300s] [--gzip-odd]
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, HOST};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use strata_wire::config::parse_duration;

const USAGE: &str = "usage: fill --target http://127.0.0.1:PORT --host HOST --count N --concurrency C \
                     [--prefix /fill/] [--timeout 300s] [--gzip-odd]";

struct Args {
    target: Uri,
    host: String,
    count: u64,
    concurrency: usize,
    prefix: String,
    timeout: Duration,
    gzip_odd: bool,
}

/// `"300s"`, `"5m"`, `"1h"`, `"1500ms"` or a bare number of seconds.
fn parse_target(value: &str) -> Result<Uri> {
    let uri: Uri = value.parse().with_context(|| format!("bad --target {value:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--target must be an http:// URL, got {value:?}");
    }
    let host = uri.host().context("--target has no host")?;
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("--target must be a loopback address (127.0.0.1, [::1] or localhost), got {value:?}");
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        bail!("--target takes no path (use --prefix), got {value:?}");
    }
    Ok(uri)
}

fn parse_args() -> Result<Args> {
    let mut target = None;
    let mut host = None;
    let mut count = None;
    let mut concurrency = None;
    let mut prefix = "/fill/".to_owned();
    let mut timeout = Duration::from_secs(300);
    let mut gzip_odd = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--gzip-odd" => {
                gzip_odd = true;
                continue;
            }
            _ => {}
        }
        let value = it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--target" => target = Some(parse_target(&value)?),
            "--host" => host = Some(value),
            "--count" => count = Some(value.parse().with_context(|| format!("bad --count {value:?}"))?),
            "--concurrency" => {
                let c: usize = value.parse().with_context(|| format!("bad --concurrency {value:?}"))?;
                if c == 0 {
                    bail!("--concurrency must be at least 1");
                }
                concurrency = Some(c);
            }
            "--prefix" => {
                if !value.starts_with('/') {
                    bail!("--prefix must start with '/', got {value:?}");
                }
                prefix = value;
            }
            "--timeout" => timeout = parse_duration(&value).map_err(anyhow::Error::msg)?,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(Args {
        target: target.context(USAGE)?,
        host: host.context(USAGE)?,
        count: count.context(USAGE)?,
        concurrency: concurrency.context(USAGE)?,
        prefix,
        timeout,
        gzip_odd,
    })
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    non2xx: AtomicU64,
    body_bytes: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
    x_cache: Mutex<BTreeMap<String, u64>>,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock();
        if first.is_none() {
            *first = Some(what);
        }
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// One request: send, read the body to the end, count the outcome.
async fn one(client: &HttpClient, args: &Args, authority: &str, i: u64, tally: &Tally) {
    let uri = format!("http://{authority}{}{i}", args.prefix);
    let mut req = Request::get(uri).header(HOST, args.host.as_str());
    if args.gzip_odd && i % 2 == 1 {
        req = req.header(ACCEPT_ENCODING, "gzip");
    }
    let req = match req.body(Empty::new()) {
        Ok(r) => r,
        Err(e) => return tally.error(format!("building request {i}: {e}")),
    };
    tally.sent.fetch_add(1, Ordering::Relaxed);
    let resp = match client.request(req).await {
        Ok(r) => r,
        Err(e) => return tally.error(format!("request {i}: {e:?}")),
    };
    let status = resp.status();
    let x_cache = resp
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| "other".to_owned(), |v| v.to_ascii_lowercase());
    let body = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return tally.error(format!("body {i}: {e}")),
    };
    tally.body_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    *tally.statuses.lock().entry(status.as_u16()).or_default() += 1;
    *tally.x_cache.lock().entry(x_cache).or_default() += 1;
    if status.is_success() {
        tally.ok.fetch_add(1, Ordering::Relaxed);
    } else {
        tally.non2xx.fetch_add(1, Ordering::Relaxed);
    }
}

async fn run(args: Args) -> Result<()> {
    let args = Arc::new(args);
    let authority = args
        .target
        .authority()
        .context("--target has no host:port")?
        .as_str()
        .to_owned();
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency)
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + args.timeout;

    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, args, authority) = (client.clone(), args.clone(), authority.clone());
        let (tally, next) = (tally.clone(), next.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.count || tokio::time::Instant::now() >= deadline {
                    break;
                }
                let req = one(&client, &args, &authority, i, &tally);
                if tokio::time::timeout_at(deadline, req).await.is_err() {
                    // Sent but cut short by the overall timeout.
                    tally.error(format!("request {i}: timed out"));
                    break;
                }
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("worker task failed")?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let timed_out = tokio::time::Instant::now() >= deadline && tally.sent.load(Ordering::Relaxed) < args.count;

    let sent = tally.sent.load(Ordering::Relaxed);
    let mut line = format!(
        "sent={sent} ok={} errors={} seconds={seconds:.2} req_per_s={:.1} non2xx={} body_mib={:.1}",
        tally.ok.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
        sent as f64 / seconds.max(1e-9),
        tally.non2xx.load(Ordering::Relaxed),
        tally.body_bytes.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0),
    );
    for (v, n) in tally.x_cache.lock().iter() {
        let v: String = v
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        line.push_str(&format!(" x_cache_{v}={n}"));
    }
    let statuses: Vec<String> = tally.statuses.lock().iter().map(|(s, n)| format!("{s}:{n}")).collect();
    line.push_str(&format!(" statuses={}", statuses.join(",")));
    if timed_out {
        line.push_str(" timed_out=1");
    }
    println!("{line}");
    if let Some(e) = tally.first_error.lock().take() {
        eprintln!("fill: first error: {e}");
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    // One thread is plenty for the client side and leaves the other cores to the server.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}
