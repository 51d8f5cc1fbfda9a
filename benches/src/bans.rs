//! `bans`: drives a strata-proxy node's ban endpoint for the ban benchmarks.
//!
//! Two modes, both sending signed `POST /ban` requests (tag bans, one distinct tag each, so
//! no two requests carry the same signature) to one node's admin listener:
//!
//! - `propagate`: one ban after another with `?wait=MS`, so each answer arrives once every
//!   sibling acknowledged (or MS passed). Collects the round trip seen by the client and, for
//!   each sibling, the acknowledgement time the node reports in its answer
//!   (`siblings.<url>.ms`), and prints their percentiles.
//! - `flood`: `--count` bans, `--concurrency` at a time, without waiting for the siblings;
//!   prints the rate. With a tag prefix that no object carries, these bans match nothing.
//!
//! ```text
//! bans propagate --admin 127.0.0.1:9104 --secret-file SECRET --count 2000 [--wait 1000] [--prefix bench:]
//! bans flood --admin 127.0.0.1:9104 --secret-file SECRET --count 100000 [--concurrency 4] [--prefix nomatch:]
//! ```
//!
//! Output, one `key=value` line per figure group:
//!
//! ```text
//! sent=2000 ok=2000 errors=0 unacked=0 seconds=3.10
//! rtt_ms p50=1.31 p90=1.80 p99=3.02 max=9.77
//! sibling=http://127.0.0.1:9105 acked=2000 p50=0.61 p90=0.90 p99=1.95 max=8.12
//! ```
//!
//! Only loopback admin addresses are accepted: this is a tool for a local stack.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_wire::auth;
use strata_wire::ban::{Ban, Kind, BAN_PATH};

const USAGE: &str =
    "usage: bans propagate --admin ADDR --secret-file FILE --count N [--wait MS] [--prefix TAG]\n       \
                     bans flood --admin ADDR --secret-file FILE --count N [--concurrency C] [--prefix TAG]";

/// Longest a single ban request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(PartialEq)]
enum Mode {
    Propagate,
    Flood,
}

struct Args {
    mode: Mode,
    admin: SocketAddr,
    secret: Vec<u8>,
    count: u64,
    wait_ms: u64,
    concurrency: usize,
    prefix: String,
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let mode = match it.next().as_deref() {
        Some("propagate") => Mode::Propagate,
        Some("flood") => Mode::Flood,
        Some("-h" | "--help") => {
            println!("{USAGE}");
            std::process::exit(0);
        }
        _ => bail!("{USAGE}"),
    };
    let mut admin: Option<SocketAddr> = None;
    let mut secret_file: Option<PathBuf> = None;
    let mut count = None;
    let mut wait_ms = 1000;
    let mut concurrency = 4;
    let mut prefix = None;
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--admin" => admin = Some(value.parse().with_context(|| format!("bad --admin {value:?}"))?),
            "--secret-file" => secret_file = Some(PathBuf::from(value)),
            "--count" => count = Some(value.parse().with_context(|| format!("bad --count {value:?}"))?),
            "--wait" => wait_ms = value.parse().with_context(|| format!("bad --wait {value:?}"))?,
            "--concurrency" => {
                concurrency = value.parse().with_context(|| format!("bad --concurrency {value:?}"))?;
                if concurrency == 0 {
                    bail!("--concurrency must be at least 1");
                }
            }
            "--prefix" => prefix = Some(value),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let admin = admin.context(USAGE)?;
    if !admin.ip().is_loopback() {
        bail!("--admin must be a loopback address, got {admin}");
    }
    let secret_file = secret_file.context(USAGE)?;
    let secret = auth::load_secret(&secret_file)?;
    let prefix = prefix.unwrap_or_else(|| match mode {
        Mode::Propagate => "bench:".into(),
        Mode::Flood => "nomatch:".into(),
    });
    Ok(Args {
        mode,
        admin,
        secret,
        count: count.context(USAGE)?,
        wait_ms,
        concurrency,
        prefix,
    })
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Sends one signed tag ban; returns the answer's JSON.
async fn ban(client: &HttpClient, args: &Args, tag: &str, wait: Option<u64>) -> Result<serde_json::Value> {
    let path = match wait {
        Some(ms) => format!("{BAN_PATH}?wait={ms}"),
        None => BAN_PATH.to_string(),
    };
    let body = serde_json::to_vec(&Ban::new(Kind::Tag, tag))?;
    let req = auth::signed_post(&args.secret, &format!("http://{}", args.admin), &path, body)?;
    let work = async {
        let resp = client.request(req).await.context("sending the ban")?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        if status != StatusCode::OK {
            bail!("{status}: {}", String::from_utf8_lossy(&body).trim());
        }
        serde_json::from_slice(&body).context("the answer is not JSON")
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}")))
}

/// `p50=… p90=… p99=… max=…` of sorted millisecond samples.
fn percentiles(sorted: &[f64]) -> String {
    if sorted.is_empty() {
        return "p50=n/a p90=n/a p99=n/a max=n/a".into();
    }
    let at = |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    format!(
        "p50={:.3} p90={:.3} p99={:.3} max={:.3}",
        at(0.50),
        at(0.90),
        at(0.99),
        sorted[sorted.len() - 1]
    )
}

async fn propagate(client: HttpClient, args: Args) -> Result<()> {
    let mut rtt = Vec::with_capacity(args.count as usize);
    let mut siblings: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let (mut ok, mut errors, mut unacked) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    let start = Instant::now();
    for i in 0..args.count {
        let t = Instant::now();
        match ban(&client, &args, &format!("{}{i}", args.prefix), Some(args.wait_ms)).await {
            Ok(answer) => {
                rtt.push(t.elapsed().as_secs_f64() * 1000.0);
                ok += 1;
                let Some(map) = answer["siblings"].as_object() else {
                    bail!("the answer has no siblings map: {answer}");
                };
                for (url, s) in map {
                    let entry = siblings.entry(url.clone()).or_default();
                    match (s["acked"].as_bool(), s["ms"].as_f64()) {
                        (Some(true), Some(ms)) => entry.push(ms),
                        _ => unacked += 1,
                    }
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "sent={} ok={ok} errors={errors} unacked={unacked} seconds={seconds:.2}",
        args.count
    );
    rtt.sort_by(f64::total_cmp);
    println!("rtt_ms {}", percentiles(&rtt));
    for (url, mut ms) in siblings {
        ms.sort_by(f64::total_cmp);
        println!("sibling={url} acked={} {}", ms.len(), percentiles(&ms));
    }
    if let Some(e) = first_error {
        eprintln!("bans: first error: {e:#}");
    }
    Ok(())
}

async fn flood(client: HttpClient, args: Args) -> Result<()> {
    let args = Arc::new(args);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(parking_lot::Mutex::new(None::<String>));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, args, next) = (client.clone(), args.clone(), next.clone());
        let (errors, first_error) = (errors.clone(), first_error.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.count {
                    break;
                }
                if let Err(e) = ban(&client, &args, &format!("{}{i}", args.prefix), None).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().get_or_insert_with(|| format!("{e:#}"));
                }
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("worker task failed")?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "sent={} ok={} errors={errors} seconds={seconds:.2} bans_per_s={:.1}",
        args.count,
        args.count - errors,
        args.count as f64 / seconds.max(1e-9)
    );
    if let Some(e) = first_error.lock().take() {
        eprintln!("bans: first error: {e}");
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency.max(1))
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    // One thread is plenty for the client side and leaves the other cores to the nodes.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        match args.mode {
            Mode::Propagate => propagate(client, args).await,
            Mode::Flood => flood(client, args).await,
        }
    })
}
