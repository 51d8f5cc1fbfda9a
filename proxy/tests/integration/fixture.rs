//! A programmable origin for HTTP edge cases, and a relay in front of the real WordPress
//! that a test can cut to simulate the origin going down.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Body type fixture handlers answer with.
pub type FixtureBody = BoxBody<Bytes, std::io::Error>;
/// What a fixture does with a request.
pub type Handler =
    Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<FixtureBody>> + Send>> + Send + Sync>;

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> FixtureBody {
    Full::new(b.into()).map_err(|never: Infallible| match never {}).boxed()
}

/// An origin server running a handler; counts the requests it receives.
pub struct Fixture {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl Fixture {
    /// Serves `handler` on a fresh loopback port.
    pub async fn start<F, Fut>(handler: F) -> Fixture
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<FixtureBody>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |r| Box::pin(handler(r)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Fixture { addr, hits }
    }

    /// The origin URL for a proxy config.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A TCP relay to another address that can be switched off: new connections are refused
/// (the listener is closed) and open ones are cut.
pub struct Relay {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    /// Relays a fresh loopback port to `target` (host:port).
    pub async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    acc = listener.accept() => {
                        let Ok((mut client, _)) = acc else { break };
                        let target = target.clone();
                        let mut cut = stopped.clone();
                        tokio::spawn(async move {
                            let Ok(mut server) = TcpStream::connect(&target).await else { return };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                _ = cut.changed() => {}
                            }
                        });
                    }
                    _ = stopped.changed() => break,
                }
            }
            // Dropping the listener here makes new connections fail with "refused".
        });
        Relay { addr, up, stop }
    }

    /// The origin URL for a proxy config.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops relaying: the port refuses connections from now on.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let _ = self.stop.send(true);
    }
}
