//! The one body type used in both directions: empty, in memory, or streamed with an idle
//! timeout, optionally preceded by bytes already read.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Errors surfaced while streaming a body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body went silent for longer than its idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("body idle for more than {0:?}")]
pub struct IdleTimeout(pub Duration);

/// A request or response body.
pub enum ProxyBody {
    /// No body.
    Empty,
    /// A body held in memory (cache hits, synthetic answers).
    Full(Option<Bytes>),
    /// A body streamed from a peer, failing if it stalls longer than the timeout.
    Stream(Box<Streaming>),
}

/// State of a streamed body.
pub struct Streaming {
    /// Bytes already read from `inner` (e.g. while deciding whether to store), sent first.
    prefix: Option<Bytes>,
    inner: Incoming,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl ProxyBody {
    /// A body from bytes in memory.
    pub fn full(b: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Full(Some(b.into()))
    }

    /// A streamed body with an idle timeout, sending `prefix` first.
    pub fn stream(inner: Incoming, prefix: Option<Bytes>, idle: Duration) -> ProxyBody {
        ProxyBody::Stream(Box::new(Streaming {
            prefix: prefix.filter(|p| !p.is_empty()),
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }))
    }
}

impl Streaming {
    /// Puts bytes already read back in front of the stream.
    pub fn set_prefix(&mut self, prefix: Bytes) {
        self.prefix = Some(prefix).filter(|p| !p.is_empty());
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut *self {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream(s) => {
                if let Some(p) = s.prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                match Pin::new(&mut s.inner).poll_frame(cx) {
                    Poll::Ready(frame) => {
                        let deadline = Instant::now() + s.idle;
                        s.timer.as_mut().reset(deadline);
                        Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
                    }
                    Poll::Pending => match s.timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err(IdleTimeout(s.idle).into()))),
                        Poll::Pending => Poll::Pending,
                    },
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Stream(s) => s.prefix.is_none() && s.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Stream(s) => {
                let extra = s.prefix.as_ref().map_or(0, |p| p.len() as u64);
                let inner = s.inner.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(inner.lower() + extra);
                if let Some(u) = inner.upper() {
                    h.set_upper(u + extra);
                }
                h
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A response body streamed over an in-memory connection (no socket: the paused clock
    /// only moves when nothing else can), from a peer that sends "hello" at once, "world"
    /// after `gap`, then falls silent with the connection open.
    async fn silent_after(gap: Duration) -> Incoming {
        let (client, mut peer) = tokio::io::duplex(4096);
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
            .await
            .unwrap();
        tokio::spawn(conn);
        tokio::spawn(async move {
            let mut head = [0u8; 1024];
            let _ = peer.read(&mut head).await;
            let _ = peer
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
                .await;
            tokio::time::sleep(gap).await;
            let _ = peer.write_all(b"5\r\nworld\r\n").await;
            std::future::pending::<()>().await;
        });
        let req = http::Request::new(Empty::<Bytes>::new());
        send.send_request(req).await.unwrap().into_body()
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_fails_exactly_idle_after_its_last_frame() {
        let ms = Duration::from_millis;
        let idle = ms(10_000);
        let start = Instant::now();
        let mut body = ProxyBody::stream(silent_after(idle - ms(1)).await, Some(Bytes::from("pre")), idle);
        let mut seen = Vec::new();
        loop {
            match body.frame().await {
                Some(Ok(f)) => seen.push((start.elapsed(), f.into_data().unwrap())),
                Some(Err(e)) => {
                    assert!(e.is::<IdleTimeout>(), "{e}");
                    break;
                }
                None => panic!("the stream ended"),
            }
        }
        // A frame resets the timer: "world", just inside the first period, starts another.
        assert_eq!(
            seen,
            [
                (ms(0), Bytes::from("pre")),
                (ms(0), Bytes::from("hello")),
                (idle - ms(1), Bytes::from("world")),
            ]
        );
        assert_eq!(start.elapsed(), idle - ms(1) + idle);
    }
}
