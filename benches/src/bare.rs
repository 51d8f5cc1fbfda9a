//! `bare-server`: the benchmark ceiling.
//!
//! Answers every request with one fixed page held in memory: the gzip bytes
//! (with `Content-Encoding: gzip`) when the request's `Accept-Encoding`
//! mentions gzip, the identity bytes otherwise. HTTP/1.1 with keep-alive on a
//! multi-threaded Tokio runtime; no caching logic, no routing, no logging. Any
//! caching proxy serving the same page over the same loopback connection can
//! at best match it.
//!
//! With `--surrogate-key-per-path` every response also carries
//! `Surrogate-Key: obj:PATH grp:N` (N = a hash of PATH modulo 1000): a tag of its own per
//! path and one of a thousand shared ones, for benchmarks of a cache's tag index.
//!
//! ```text
//! bare-server --listen 127.0.0.1:8083 --identity page.html --gzip page.html.gz \
//!     [--content-type 'text/html; charset=UTF-8'] [--surrogate-key-per-path]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const USAGE: &str =
    "usage: bare-server --listen ADDR --identity FILE --gzip FILE [--content-type T] [--surrogate-key-per-path]";

struct Args {
    listen: SocketAddr,
    identity: PathBuf,
    gzip: PathBuf,
    content_type: String,
    surrogate_key_per_path: bool,
}

fn parse_args() -> Result<Args> {
    let mut listen = None;
    let mut identity = None;
    let mut gzip = None;
    let mut content_type = "text/html; charset=UTF-8".to_owned();
    let mut surrogate_key_per_path = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--surrogate-key-per-path" {
            surrogate_key_per_path = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--listen" => {
                listen = Some(
                    value
                        .parse()
                        .with_context(|| format!("bad --listen address {value:?}"))?,
                )
            }
            "--identity" => identity = Some(PathBuf::from(value)),
            "--gzip" => gzip = Some(PathBuf::from(value)),
            "--content-type" => content_type = value,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(Args {
        listen: listen.context(USAGE)?,
        identity: identity.context(USAGE)?,
        gzip: gzip.context(USAGE)?,
        content_type,
        surrogate_key_per_path,
    })
}

/// Everything a response needs, built once at start-up.
struct Page {
    identity: Bytes,
    gzip: Bytes,
    content_type: HeaderValue,
    /// Whether each response names its path in `Surrogate-Key`.
    surrogate_key_per_path: bool,
}

/// `obj:PATH grp:N`: a tag of the path's own and one of a thousand shared ones (FNV-1a).
fn surrogate_key(path: &str) -> Option<HeaderValue> {
    let hash = path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    HeaderValue::from_str(&format!("obj:{path} grp:{}", hash % 1000)).ok()
}

fn wants_gzip(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(ACCEPT_ENCODING)
        .iter()
        .any(|v| v.as_bytes().windows(4).any(|w| w.eq_ignore_ascii_case(b"gzip")))
}

fn respond(page: &Page, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return resp;
    }
    let gzip = wants_gzip(req);
    let full = if gzip { &page.gzip } else { &page.identity };
    let head = req.method() == Method::HEAD;
    let body = if head { Bytes::new() } else { full.clone() };
    let mut resp = Response::new(Full::new(body));
    let headers = resp.headers_mut();
    if head {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(full.len()));
    }
    headers.insert(CONTENT_TYPE, page.content_type.clone());
    headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if page.surrogate_key_per_path {
        if let Some(v) = surrogate_key(req.uri().path()) {
            headers.insert("surrogate-key", v);
        }
    }
    resp
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let identity = std::fs::read(&args.identity).with_context(|| format!("reading {}", args.identity.display()))?;
    let gzip = std::fs::read(&args.gzip).with_context(|| format!("reading {}", args.gzip.display()))?;
    let page = Arc::new(Page {
        identity: Bytes::from(identity),
        gzip: Bytes::from(gzip),
        content_type: HeaderValue::from_str(&args.content_type).context("bad --content-type value")?,
        surrogate_key_per_path: args.surrogate_key_per_path,
    });

    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args.listen, page))
}

async fn serve(addr: SocketAddr, page: Arc<Page>) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!(
        "bare-server listening on {addr} ({} bytes identity, {} bytes gzip)",
        page.identity.len(),
        page.gzip.len()
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                eprintln!("accept: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let page = Arc::clone(&page);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = respond(&page, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            // Client resets mid-request are normal at the end of a load run.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
