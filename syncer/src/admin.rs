//! The admin listener: `GET /healthz`, `GET /metrics` (Prometheus text), `GET /status`.
//! Read-only; never the public port.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::syncer::Status;

/// A syncer whose last successful tick is older than this is reported unhealthy.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(10);

/// What the admin listener reports on.
#[derive(Clone)]
pub struct Admin {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The syncer's status.
    pub status: Arc<parking_lot::Mutex<Status>>,
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

impl Admin {
    /// Answers one request.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        const PLAIN: &str = "text/plain; charset=utf-8";
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => {
                let st = self.status.lock();
                match (st.last_ok, &st.last_error) {
                    (Some(t), None) if t.elapsed() < HEALTHY_WITHIN => text(StatusCode::OK, "ok\n".into(), PLAIN),
                    (_, Some(e)) => text(StatusCode::SERVICE_UNAVAILABLE, format!("failing: {e}\n"), PLAIN),
                    _ => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no successful tick yet\n".into(),
                        PLAIN,
                    ),
                }
            }
            (&Method::GET, "/metrics") => text(
                StatusCode::OK,
                self.metrics.render(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
            (&Method::GET, "/status") => text(StatusCode::OK, self.status_page(), PLAIN),
            (_, "/healthz" | "/metrics" | "/status") => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into(), PLAIN),
            _ => text(
                StatusCode::NOT_FOUND,
                "unknown admin path; try /healthz, /metrics, /status\n".into(),
                PLAIN,
            ),
        }
    }

    fn status_page(&self) -> String {
        let st = self.status.lock().clone();
        let ago = |t: Option<std::time::Instant>| t.map_or("never".to_string(), |t| format!("{:?} ago", t.elapsed()));
        format!(
            "strata-syncer\n\
             cursor:             epoch {} seq {}\n\
             queue counter:      {}\n\
             queue depth:        {}\n\
             last good tick:     {}\n\
             last error:         {}\n\
             commits:            {}\n\
             bans pending:       {}\n\
             settings published: {}\n",
            st.cursor.epoch,
            st.cursor.seq,
            st.counter,
            st.counter.saturating_sub(st.cursor.seq),
            ago(st.last_ok),
            st.last_error.as_deref().unwrap_or("none"),
            st.commits,
            st.bans_pending,
            ago(st.settings_published),
        )
    }

    /// Serves the admin API on `listener` until `shutdown` completes.
    pub async fn serve(self, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let admin = self.clone();
                        tokio::spawn(async move {
                            let svc = service_fn(move |req: Request<Incoming>| {
                                let resp = admin.handle(&req);
                                async move { Ok::<_, std::convert::Infallible>(resp) }
                            });
                            let conn = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc);
                            if let Err(e) = tokio::time::timeout(Duration::from_secs(30), conn).await.unwrap_or(Ok(())) {
                                tracing::debug!(error = %e, "admin connection failed");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_the_ticks() {
        let admin = Admin {
            metrics: Arc::new(Metrics::new()),
            status: Arc::new(parking_lot::Mutex::new(Status::default())),
        };
        let get = |path: &str| Request::get(path).body(()).unwrap();
        assert_eq!(admin.handle(&get("/healthz")).status(), StatusCode::SERVICE_UNAVAILABLE);
        admin.status.lock().last_ok = Some(std::time::Instant::now());
        assert_eq!(admin.handle(&get("/healthz")).status(), StatusCode::OK);
        admin.status.lock().last_error = Some("mysql down".into());
        assert_eq!(admin.handle(&get("/healthz")).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(admin.handle(&get("/metrics")).status(), StatusCode::OK);
        assert_eq!(admin.handle(&get("/status")).status(), StatusCode::OK);
        assert_eq!(admin.handle(&get("/nope")).status(), StatusCode::NOT_FOUND);
    }
}
