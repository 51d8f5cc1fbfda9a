//! Binding the listeners, the accept loop, and the worker threads that serve public
//! connections (plain HTTP, and HTTPS with HTTP/2 or HTTP/1.1), each on one core from
//! accept to close; the admin listener on the caller's runtime.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::admin::{Admin, Peer};
use crate::config::Config;
use crate::server::Proxy;
use crate::{answer, framing, timer, tls};

/// How often the store's pending maintenance (evictions, expiries) runs.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(250);
/// Smallest read buffer hyper accepts.
const MIN_BUF: usize = 8192;

/// Serves the public and admin listeners until `shutdown` resolves, then lets in-flight
/// requests finish for up to `server.shutdown_timeout`.
///
/// Public connections are accepted here and handed, each to the least busy, to
/// `server.workers` threads that each run a single-threaded runtime of their own: a
/// connection lives on one core from accept to close (no work stealing, no cross-core
/// wake-ups on the hit path), while the cache, the origin pool and the metrics are shared.
/// The admin listener and housekeeping run on the caller's runtime.
///
/// The caller binds the listeners, so tests can bind port 0. Returns the proxy's shared
/// state once everything has stopped. Plain HTTP only; [`run_with`] adds HTTPS.
pub async fn run(
    public: TcpListener,
    admin: TcpListener,
    cfg: Config,
    shutdown: impl Future<Output = ()>,
) -> Arc<Proxy> {
    let listeners = Listeners {
        public,
        admin,
        tls: None,
    };
    run_with(listeners, cfg, shutdown).await
}

/// The listeners a proxy serves, bound by the caller.
pub struct Listeners {
    /// Plain HTTP.
    pub public: TcpListener,
    /// The admin API.
    pub admin: TcpListener,
    /// HTTPS (HTTP/2 or HTTP/1.1, by ALPN), with the certificates it serves.
    pub tls: Option<TlsListener>,
}

/// The HTTPS listener and its certificates.
pub struct TlsListener {
    /// Where TLS connections are accepted.
    pub listener: TcpListener,
    /// The certificates, shared with whoever reloads them (SIGHUP, tests).
    pub certs: Arc<tls::Certs>,
}

/// What the workers need to know about the two public listeners.
struct Front {
    /// The certificates HTTPS connections are accepted with.
    certs: Option<Arc<tls::Certs>>,
    /// `server.redirect_https`: the HTTPS port plain-HTTP requests are sent to.
    redirect_port: Option<u16>,
    /// `Strict-Transport-Security` for HTTPS responses.
    hsts: Option<http::HeaderValue>,
}

/// Like [`run`], with an HTTPS listener when `listeners.tls` is set: TLS connections go to
/// the same workers and the same request path as plain ones.
pub async fn run_with(listeners: Listeners, cfg: Config, shutdown: impl Future<Output = ()>) -> Arc<Proxy> {
    let (_, reloads) = tokio::sync::mpsc::unbounded_channel();
    run_reloadable(listeners, cfg, shutdown, reloads).await
}

/// Like [`run_with`]; every configuration received on `reloads` (read again on SIGHUP) is
/// applied as [`Proxy::reload`] says, the keys that take a restart logged.
pub async fn run_reloadable(
    listeners: Listeners,
    cfg: Config,
    shutdown: impl Future<Output = ()>,
    mut reloads: tokio::sync::mpsc::UnboundedReceiver<Config>,
) -> Arc<Proxy> {
    let Listeners { public, admin, tls } = listeners;
    let (tls_listener, certs) = match tls {
        Some(t) => (Some(t.listener), Some(t.certs)),
        None => (None, None),
    };
    let tls_port = tls_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.port());
    let front = Arc::new(Front {
        redirect_port: tls_port.filter(|_| cfg.server.tls.as_ref().is_some_and(|t| t.redirect_https)),
        hsts: cfg.server.tls.as_ref().and_then(|t| t.hsts.clone()),
        certs,
    });
    let cfg = Arc::new(cfg);
    let proxy = Arc::new(Proxy::new(cfg.clone()));
    let admin_state = Admin::start(proxy.clone());
    let reloader = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            while let Some(new) = reloads.recv().await {
                let restart = proxy.reload(new);
                if restart.is_empty() {
                    tracing::info!("configuration reloaded");
                } else {
                    tracing::warn!(
                        keep_running_values = ?restart,
                        "configuration reloaded; these settings changed but take a restart, the running ones stay"
                    );
                }
            }
        })
    };
    let permits = Arc::new(Semaphore::new(cfg.server.max_connections));

    let maintenance = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                proxy.store.maintain();
                proxy.check_cluster();
            }
        })
    };
    let (stop_cluster, cluster_stopped) = tokio::sync::watch::channel(false);
    let cluster = tokio::spawn(
        proxy
            .cluster
            .clone()
            .run(proxy.metrics.cluster.clone(), cluster_stopped),
    );

    tracing::info!(
        public = %public.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        admin = %admin.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        origin = %cfg.origin.url,
        node = %cfg.cluster.node_id,
        workers = cfg.server.workers,
        "strata-proxy listening"
    );
    if let Some(l) = &tls_listener {
        tracing::info!(
            https = %l.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            redirect_https = front.redirect_port.is_some(),
            "strata-proxy listening for HTTPS (h2, http/1.1)"
        );
    }
    let workers = start_workers(&proxy, &cfg, &front);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = public.accept() => match accepted {
                Ok((stream, peer)) => dispatch(&workers, &permits, stream, peer, Transport::Plain),
                Err(e) => accept_error(e).await,
            },
            accepted = accept_on(tls_listener.as_ref()) => match accepted {
                Ok((stream, peer)) => dispatch(&workers, &permits, stream, peer, Transport::Tls),
                Err(e) => accept_error(e).await,
            },
            accepted = admin.accept() => match accepted {
                Ok((stream, client)) => {
                    let Ok(local) = stream.local_addr() else { continue };
                    let peer = Peer { client, local };
                    let admin = admin_state.clone();
                    let svc = service_fn(move |req| {
                        let admin = admin.clone();
                        async move { Ok::<_, std::convert::Infallible>(admin.handle(req, peer).await) }
                    });
                    let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
                    serve(&graceful, &cfg, stream, svc, permit);
                }
                Err(e) => accept_error(e).await,
            },
            () = &mut shutdown => break,
        }
    }
    drop(public);
    drop(tls_listener);
    drop(admin);
    tracing::info!(timeout = ?cfg.server.shutdown_timeout, "shutting down: finishing in-flight requests");
    let mut done = Vec::new();
    for w in workers {
        // Closing a worker's queue tells it to stop once its connections are done.
        drop(w.queue);
        done.push(w.done);
    }
    if tokio::time::timeout(cfg.server.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached; closing remaining admin connections");
    }
    for d in done {
        let _ = d.await;
    }
    maintenance.abort();
    reloader.abort();
    let _ = stop_cluster.send(true);
    let _ = cluster.await;
    proxy
}

/// A connection on its way to a worker, with its connection-limit permit.
type Handover = (
    std::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
    Transport,
);

/// Which listener a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// Plain HTTP/1.1.
    Plain,
    /// TLS, then HTTP/2 or HTTP/1.1 as ALPN decides.
    Tls,
}

/// Accepts on a listener that may not exist (then never resolves).
async fn accept_on(l: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Takes a connection-limit permit and sends a public connection to a worker.
fn dispatch(workers: &[Worker], permits: &Arc<Semaphore>, stream: TcpStream, peer: SocketAddr, t: Transport) {
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "connection limit reached; closing new connection");
        return;
    };
    match stream.into_std() {
        Ok(stream) => hand_over(workers, stream, peer, permit, t),
        Err(e) => tracing::warn!(%peer, error = %e, "cannot hand a connection to a worker"),
    }
}

/// A worker thread as the acceptor sees it.
struct Worker {
    /// Where accepted connections are sent.
    queue: tokio::sync::mpsc::UnboundedSender<Handover>,
    /// Connections the worker serves now, to pick the least busy.
    active: Arc<AtomicUsize>,
    /// Completes when the worker has stopped.
    done: tokio::sync::oneshot::Receiver<()>,
}

/// Counts a connection as active on its worker while it lives.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends a connection to the worker with the fewest active connections.
fn hand_over(
    workers: &[Worker],
    stream: std::net::TcpStream,
    peer: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
    transport: Transport,
) {
    let Some(w) = workers.iter().min_by_key(|w| w.active.load(Ordering::Relaxed)) else {
        tracing::error!(%peer, "no worker is running; closing connection");
        return;
    };
    w.active.fetch_add(1, Ordering::Relaxed);
    if w.queue.send((stream, peer, permit, transport)).is_err() {
        w.active.fetch_sub(1, Ordering::Relaxed);
        tracing::error!(%peer, "a worker has stopped; closing connection");
    }
}

/// Starts the worker threads that serve public connections.
fn start_workers(proxy: &Arc<Proxy>, cfg: &Arc<Config>, front: &Arc<Front>) -> Vec<Worker> {
    let mut workers = Vec::new();
    for i in 0..cfg.server.workers {
        let (queue, rx) = tokio::sync::mpsc::unbounded_channel();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let active = Arc::new(AtomicUsize::new(0));
        let (proxy, cfg, counter, front) = (proxy.clone(), cfg.clone(), active.clone(), front.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("strata-worker-{i}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt.block_on(serve_public(rx, proxy, cfg, counter, front)),
                    Err(e) => tracing::error!(error = %e, worker = i, "cannot start a worker runtime"),
                }
                let _ = done_tx.send(());
            });
        match spawned {
            Ok(_) => workers.push(Worker { queue, active, done }),
            Err(e) => tracing::error!(error = %e, worker = i, "cannot start a worker thread"),
        }
    }
    workers
}

/// One worker: serves the connections it is handed until its queue closes, then lets its
/// in-flight requests finish for up to `server.shutdown_timeout`.
async fn serve_public(
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Handover>,
    proxy: Arc<Proxy>,
    cfg: Arc<Config>,
    active: Arc<AtomicUsize>,
    front: Arc<Front>,
) {
    let graceful = GracefulShutdown::new();
    while let Some((stream, peer, permit, transport)) = queue.recv().await {
        let guard = (permit, Active(active.clone()));
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "worker cannot register a connection");
                continue;
            }
        };
        if transport == Transport::Tls {
            if let Some(certs) = &front.certs {
                serve_tls(&graceful, &cfg, &front, certs, stream, proxy.clone(), guard);
            }
            continue;
        }
        let proxy = proxy.clone();
        let redirect_port = front.redirect_port;
        let svc = service_fn(move |req| {
            if let Some(resp) = redirect_port.and_then(|port| tls::redirect(&req, port)) {
                return Answering::Ready(Some(resp));
            }
            answer(&proxy, req, peer)
        });
        serve(&graceful, &cfg, stream, svc, guard);
    }
    if tokio::time::timeout(cfg.server.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached; closing remaining connections");
    }
}

fn serve<S>(graceful: &GracefulShutdown, cfg: &Config, stream: TcpStream, svc: S, permit: impl Send + 'static)
where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::body::ProxyBody>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let max_head = max_head(cfg);
    let io = TokioIo::new(framing::Guarded::new(stream, max_head));
    let conn = h1_builder(cfg).serve_connection(io, svc);
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(peer = ?peer, error = %e, "client connection ended with an error");
        }
        drop(permit);
    });
}

/// The largest request head: the framing guard must examine every head the parser can
/// accept, so both use this one limit.
fn max_head(cfg: &Config) -> usize {
    cfg.server.max_header_bytes.max(MIN_BUF)
}

/// The HTTP/1.1 server settings of public connections, plain or TLS.
fn h1_builder(cfg: &Config) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(timer::CoarseTimer::new(cfg.server.header_timeout / 4))
        .header_read_timeout(cfg.server.header_timeout)
        .max_buf_size(max_head(cfg))
        .keep_alive(true);
    b
}

/// One public request: answered by [`Proxy::try_hit`] if it can be, else the full path.
fn answer(proxy: &Arc<Proxy>, req: http::Request<hyper::body::Incoming>, peer: SocketAddr) -> Answering {
    match proxy.try_hit(&req) {
        Some(resp) => Answering::Ready(Some(resp)),
        None => {
            let proxy = proxy.clone();
            Answering::Full(Box::pin(async move { proxy.handle(req, peer).await }))
        }
    }
}

/// Serves one TLS connection on this worker: the handshake (bounded by
/// `server.header_timeout`), then HTTP/2 when ALPN chose `h2`, HTTP/1.1 otherwise, through
/// the same request path as plain HTTP. Requests are marked [`tls::Https`]; responses get
/// `server.hsts`.
///
/// HTTP/1.1 over TLS keeps the ambiguous-framing guard (it wraps the decrypted stream);
/// HTTP/2 frames every message itself, so there is nothing for it to guard.
fn serve_tls(
    graceful: &GracefulShutdown,
    cfg: &Arc<Config>,
    front: &Arc<Front>,
    certs: &tls::Certs,
    stream: TcpStream,
    proxy: Arc<Proxy>,
    permit: impl Send + 'static,
) {
    let _ = stream.set_nodelay(true);
    let Ok(peer) = stream.peer_addr() else { return };
    let acceptor = certs.acceptor();
    let watcher = graceful.watcher();
    let (cfg, hsts) = (cfg.clone(), front.hsts.clone());
    tokio::spawn(async move {
        let stream = match tokio::time::timeout(cfg.server.header_timeout, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                proxy.metrics.client_error("tls-handshake");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                proxy.metrics.client_error("tls-handshake-timeout");
                return;
            }
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(tls::Https);
            if req.version() == http::Version::HTTP_2 {
                tls::merge_cookies(req.headers_mut());
            }
            Secured {
                inner: answer(&proxy, req, peer),
                hsts: hsts.clone(),
            }
        });
        let ended = if h2 {
            let mut b = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            b.timer(hyper_util::rt::TokioTimer::new())
                .max_header_list_size(u32::try_from(max_head(&cfg)).unwrap_or(u32::MAX))
                .keep_alive_interval(Some(cfg.server.header_timeout))
                .keep_alive_timeout(cfg.server.header_timeout);
            watcher.watch(b.serve_connection(TokioIo::new(stream), svc)).await
        } else {
            let io = TokioIo::new(framing::Guarded::new(stream, max_head(&cfg)));
            watcher.watch(h1_builder(&cfg).serve_connection(io, svc)).await
        };
        if let Err(e) = ended {
            tracing::debug!(%peer, error = %e, "TLS client connection ended with an error");
        }
        drop(permit);
    });
}

/// An HTTPS answer: the request's future, then `Strict-Transport-Security` on its response.
struct Secured {
    /// The request path's future.
    inner: Answering,
    /// `server.hsts`, if set.
    hsts: Option<http::HeaderValue>,
}

impl Future for Secured {
    type Output = Result<http::Response<crate::body::ProxyBody>, std::convert::Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        std::pin::Pin::new(&mut this.inner).poll(cx).map(|r| {
            r.map(|mut resp| {
                if let Some(v) = &this.hsts {
                    resp.headers_mut()
                        .insert(http::header::STRICT_TRANSPORT_SECURITY, v.clone());
                }
                resp
            })
        })
    }
}

/// The future of one public request: a hit answered on the spot, or the full request path.
enum Answering {
    /// Answered by [`Proxy::try_hit`]; taken on the first poll.
    Ready(Option<http::Response<crate::body::ProxyBody>>),
    /// Everything that needs the origin, a lock or a refusal.
    Full(std::pin::Pin<Box<dyn Future<Output = http::Response<crate::body::ProxyBody>> + Send>>),
}

impl Future for Answering {
    type Output = Result<http::Response<crate::body::ProxyBody>, std::convert::Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            Answering::Ready(resp) => std::task::Poll::Ready(Ok(resp.take().unwrap_or_else(|| {
                answer::synth(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "response already sent",
                    "internal",
                )
            }))),
            Answering::Full(fut) => fut.as_mut().poll(cx).map(Ok),
        }
    }
}

/// Accept errors (e.g. too many open files) are transient: log and pause briefly.
async fn accept_error(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Binds the configured listeners.
pub async fn bind(cfg: &Config) -> std::io::Result<(TcpListener, TcpListener)> {
    let public = listen(cfg.server.listen)?;
    let admin = listen(cfg.server.admin_listen)?;
    Ok((public, admin))
}

/// Accept queue asked of the kernel; it caps the queue at `net.core.somaxconn`, so raising
/// that sysctl (see `sysctl/proxy-node.conf`) takes effect.
const LISTEN_BACKLOG: u32 = 65_535;

/// A listening socket with a deep accept queue.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds every configured listener, HTTPS included when `server.tls_listen` is set, with the
/// certificates the configuration loaded.
pub async fn bind_all(cfg: &Config) -> std::io::Result<Listeners> {
    let (public, admin) = bind(cfg).await?;
    let tls = match &cfg.server.tls {
        None => None,
        Some(t) => Some(TlsListener {
            listener: listen(t.listen)?,
            certs: Arc::new(tls::Certs::new(&t.certificates).map_err(std::io::Error::other)?),
        }),
    };
    Ok(Listeners { public, admin, tls })
}

/// Where a local client reaches a listener: an unspecified bind address becomes loopback.
pub fn local_target(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip: std::net::IpAddr = if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}
