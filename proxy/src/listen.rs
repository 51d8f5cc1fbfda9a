//! Binding the listeners, the accept loop, and the worker threads that serve public
//! connections (plain HTTP, and HTTPS with HTTP/2 or HTTP/1.1), each on one core from
//! accept to close; the admin listener on the caller's runtime, with its own connection
//! limit and timeouts, so a full public port never keeps siblings, the syncer or health
//! checks out.

mod clients;
mod conn;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::admin::{admin_allows, not_allowed, Admin, Peer};
use crate::config::Config;
use crate::server::Proxy;
use crate::{answer, framing, timer, tls};
use clients::{ClientSlot, PerClient};
use conn::{drive, Drain, Draining, Streams, Tracked};

/// How often the store's pending maintenance (evictions, expiries) runs.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(250);
/// Smallest read buffer hyper accepts.
const MIN_BUF: usize = 8192;
/// Deadline for an admin client to send a request head, counted from the end of the
/// previous response on a keep-alive connection (so it also closes idle ones). Its own, not
/// `server.header_timeout`: tightening the public port under attack leaves siblings alone.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest admin request head (admin requests carry a handful of short headers).
const ADMIN_MAX_HEAD: usize = 16 * 1024;
/// Most connections from outside `cluster.admin_allow` being answered at once (their 403
/// takes no admin connection slot); past it, such connections are closed without an answer.
const MAX_REFUSING: usize = 64;
/// How long a connection from outside `cluster.admin_allow` has to send its request head
/// before it is closed without its 403.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2: most streams a client may have open at once on one connection.
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// HTTP/2: most streams a client may open and reset before the server accepts them
/// (rapid reset, CVE-2023-44487) before the connection is closed with GOAWAY.
const H2_MAX_PENDING_RESETS: usize = 20;
/// HTTP/2: most streams the server may reset for a client's protocol errors before the
/// connection is closed with GOAWAY.
const H2_MAX_LOCAL_RESETS: usize = 256;

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

/// A configuration read again (on SIGHUP), for the running proxy to apply.
pub struct Reload {
    /// The new configuration, already validated.
    pub config: Config,
    /// Told, once what can change at once is applied, the keys that changed but take a
    /// restart: whoever asked for the reload (the SIGHUP handler telling the service
    /// manager) learns when it is done.
    pub applied: Option<tokio::sync::oneshot::Sender<Vec<&'static str>>>,
}

/// Like [`run_with`]; every configuration received on `reloads` (read again on SIGHUP) is
/// applied as [`Proxy::reload`] says, the keys that take a restart logged.
pub async fn run_reloadable(
    listeners: Listeners,
    cfg: Config,
    shutdown: impl Future<Output = ()>,
    mut reloads: tokio::sync::mpsc::UnboundedReceiver<Reload>,
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
                let restart = proxy.reload(new.config);
                if restart.is_empty() {
                    tracing::info!("configuration reloaded");
                } else {
                    tracing::warn!(
                        keep_running_values = ?restart,
                        "configuration reloaded; these settings changed but take a restart, the running ones stay"
                    );
                }
                if let Some(applied) = new.applied {
                    let _ = applied.send(restart);
                }
            }
        })
    };
    let gate = Gate {
        permits: Arc::new(Semaphore::new(cfg.server.max_connections)),
        clients: PerClient::new(cfg.server.max_connections_per_client),
        proxy: proxy.clone(),
    };
    let admin_gate = AdminGate {
        admin: admin_state.clone(),
        permits: Arc::new(Semaphore::new(cfg.server.admin_max_connections)),
        refusals: Arc::new(Semaphore::new(MAX_REFUSING)),
        drain: Drain::new(),
    };

    let maintenance = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                proxy.store.maintain();
                proxy.check_cluster();
                proxy.start_patch_checks();
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
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = public.accept() => match accepted {
                Ok((stream, peer)) => dispatch(&workers, &gate, stream, peer, Transport::Plain),
                Err(e) => accept_error(e).await,
            },
            accepted = accept_on(tls_listener.as_ref()) => match accepted {
                Ok((stream, peer)) => dispatch(&workers, &gate, stream, peer, Transport::Tls),
                Err(e) => accept_error(e).await,
            },
            accepted = admin.accept() => match accepted {
                Ok((stream, peer)) => admin_gate.serve(stream, peer),
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
    if !admin_gate.drain.finish(cfg.server.shutdown_timeout).await {
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

/// A connection on its way to a worker.
struct Handover {
    /// The accepted socket.
    stream: std::net::TcpStream,
    /// The client's address.
    peer: SocketAddr,
    /// Its place under `server.max_connections` and `server.max_connections_per_client`,
    /// held until it closes.
    held: Held,
    /// Which listener accepted it.
    transport: Transport,
}

/// What a public connection holds while it is open: its connection-limit permit and its
/// client's slot.
type Held = (tokio::sync::OwnedSemaphorePermit, ClientSlot);

/// The limits a public connection passes as it is accepted.
struct Gate {
    /// `server.max_connections`, shared by the plain and TLS listeners.
    permits: Arc<Semaphore>,
    /// `server.max_connections_per_client`.
    clients: Arc<PerClient>,
    /// Where refusals are counted.
    proxy: Arc<Proxy>,
}

/// The admin listener's own limits and connections.
struct AdminGate {
    /// The state every admin request is answered from.
    admin: Arc<Admin>,
    /// `server.admin_max_connections`: the admin port's own limit.
    permits: Arc<Semaphore>,
    /// Connections from outside `cluster.admin_allow` being answered.
    refusals: Arc<Semaphore>,
    /// Finishes the admin connections on shutdown.
    drain: Drain,
}

impl AdminGate {
    /// Serves an admin connection on this runtime, or refuses it: a client outside
    /// `cluster.admin_allow` gets a 403 to its first request and the connection closes, all
    /// within [`REFUSAL_TIMEOUT`] and without taking an admin connection slot; past
    /// `server.admin_max_connections` new connections are closed.
    fn serve(&self, stream: TcpStream, client: SocketAddr) {
        let proxy = &self.admin.proxy;
        if !admin_allows(&proxy.cfg().cluster.admin_allow, client.ip()) {
            proxy.metrics.connection_refused("admin-allow");
            tracing::debug!(%client, "admin connection from outside cluster.admin_allow refused");
            let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
                return;
            };
            let ip = client.ip();
            let svc = service_fn(move |_| async move { Ok::<_, std::convert::Infallible>(not_allowed(ip)) });
            serve_h1(
                refusal_h1_builder(),
                ADMIN_MAX_HEAD,
                self.drain.watcher(),
                stream,
                svc,
                permit,
            );
            return;
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            proxy.metrics.connection_refused("admin-limit");
            tracing::warn!(%client, "admin connection limit reached; closing new connection");
            return;
        };
        let Ok(local) = stream.local_addr() else { return };
        let admin = self.admin.clone();
        let peer = Peer { client, local };
        let svc = service_fn(move |req| {
            let admin = admin.clone();
            async move { Ok::<_, std::convert::Infallible>(admin.handle(req, peer).await) }
        });
        serve_h1(
            admin_h1_builder(),
            ADMIN_MAX_HEAD,
            self.drain.watcher(),
            stream,
            svc,
            permit,
        );
    }
}

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

/// Takes the connection's place under its client's limit and under the connection limit,
/// and sends it to a worker; closes it when either is full.
fn dispatch(workers: &[Worker], gate: &Gate, stream: TcpStream, peer: SocketAddr, transport: Transport) {
    let Some(slot) = gate.clients.admit(peer.ip()) else {
        gate.proxy.metrics.connection_refused("per-client");
        tracing::debug!(%peer, "per-client connection limit reached; closing new connection");
        return;
    };
    let Ok(permit) = gate.permits.clone().try_acquire_owned() else {
        gate.proxy.metrics.connection_refused("limit");
        tracing::warn!(%peer, "connection limit reached; closing new connection");
        return;
    };
    match stream.into_std() {
        Ok(stream) => hand_over(
            workers,
            Handover {
                stream,
                peer,
                held: (permit, slot),
                transport,
            },
        ),
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
fn hand_over(workers: &[Worker], h: Handover) {
    let peer = h.peer;
    let Some(w) = workers.iter().min_by_key(|w| w.active.load(Ordering::Relaxed)) else {
        tracing::error!(%peer, "no worker is running; closing connection");
        return;
    };
    w.active.fetch_add(1, Ordering::Relaxed);
    if w.queue.send(h).is_err() {
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
    let drain = Drain::new();
    while let Some(Handover {
        stream,
        peer,
        held,
        transport,
    }) = queue.recv().await
    {
        let guard = (held, Active(active.clone()));
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "worker cannot register a connection");
                continue;
            }
        };
        if transport == Transport::Tls {
            if let Some(certs) = &front.certs {
                serve_tls(drain.watcher(), &cfg, &front, certs, stream, proxy.clone(), guard);
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
        serve_h1(h1_builder(&cfg), max_head(&cfg), drain.watcher(), stream, svc, guard);
    }
    if !drain.finish(cfg.server.shutdown_timeout).await {
        tracing::warn!("shutdown timeout reached; closing remaining connections");
    }
}

/// Serves one HTTP/1.1 connection with `builder`'s settings behind the ambiguous-framing
/// guard (heads up to `max_head` bytes), on a task of its own that holds `permit` until the
/// connection ends.
fn serve_h1<S>(
    builder: http1::Builder,
    max_head: usize,
    draining: Draining,
    stream: TcpStream,
    svc: S,
    permit: impl Send + 'static,
) where
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
    let io = TokioIo::new(framing::Guarded::new(stream, max_head));
    let conn = builder.serve_connection(io, svc);
    tokio::spawn(async move {
        let ended = drive(conn, |c| c.graceful_shutdown(), draining, std::future::pending()).await;
        if let Err(e) = ended {
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

/// The HTTP/1.1 server settings of public connections, plain or TLS. The header-read
/// timeout runs from the end of one response to the next request head, so it is the
/// keep-alive idle timeout too: the shorter of `server.header_timeout` and
/// `server.idle_timeout`.
fn h1_builder(cfg: &Config) -> http1::Builder {
    let timeout = cfg.server.header_timeout.min(cfg.server.idle_timeout);
    let mut b = http1::Builder::new();
    b.timer(timer::CoarseTimer::new(timeout / 4))
        .header_read_timeout(timeout)
        .max_buf_size(max_head(cfg))
        .keep_alive(true);
    b
}

/// The HTTP/1.1 server settings of admin connections: their own head limit and timeout.
fn admin_h1_builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(timer::CoarseTimer::new(ADMIN_HEADER_TIMEOUT / 4))
        .header_read_timeout(ADMIN_HEADER_TIMEOUT)
        .max_buf_size(ADMIN_MAX_HEAD)
        .keep_alive(true);
    b
}

/// The HTTP/1.1 server settings of a connection refused its requests: one request, read
/// within [`REFUSAL_TIMEOUT`], answered, then the connection closes.
fn refusal_h1_builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(timer::CoarseTimer::new(REFUSAL_TIMEOUT / 4))
        .header_read_timeout(REFUSAL_TIMEOUT)
        .max_buf_size(ADMIN_MAX_HEAD)
        .keep_alive(false);
    b
}

/// The HTTP/2 server settings of public connections: pings every `server.header_timeout`
/// (a client that stops answering is dropped), bounded streams, header lists and resets.
fn h2_builder(cfg: &Config) -> http2::Builder<hyper_util::rt::TokioExecutor> {
    let mut b = http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    b.timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(u32::try_from(max_head(cfg)).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS)
        .keep_alive_interval(Some(cfg.server.header_timeout))
        .keep_alive_timeout(cfg.server.header_timeout);
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
/// HTTP/2 frames every message itself, so there is nothing for it to guard. An HTTP/2
/// connection with no open stream for `server.idle_timeout` is shut down (GOAWAY), however
/// faithfully its client answers pings.
fn serve_tls(
    draining: Draining,
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
        let secured = move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(tls::Https);
            if req.version() == http::Version::HTTP_2 {
                tls::merge_cookies(req.headers_mut());
            }
            Secured {
                inner: answer(&proxy, req, peer),
                hsts: hsts.clone(),
            }
        };
        let ended = if h2 {
            let streams = Streams::default();
            let counted = streams.clone();
            let svc = service_fn(move |req| {
                let stream = counted.open();
                let answering = secured(req);
                async move { answering.await.map(|resp| resp.map(|body| Tracked::new(body, stream))) }
            });
            let conn = h2_builder(&cfg).serve_connection(TokioIo::new(stream), svc);
            let idle = streams.idle(cfg.server.idle_timeout);
            drive(conn, |c| c.graceful_shutdown(), draining, idle).await
        } else {
            let io = TokioIo::new(framing::Guarded::new(stream, max_head(&cfg)));
            let conn = h1_builder(&cfg).serve_connection(io, service_fn(secured));
            drive(conn, |c| c.graceful_shutdown(), draining, std::future::pending()).await
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
