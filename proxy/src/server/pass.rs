//! Pass-through: requests sent to the origin without a lookup (personal, unsafe, ranges,
//! hit-for-pass), their bodies, the bans a successful write implies, and the bridge to the
//! comment write-behind.

use super::*;

/// A client's request body on its way to the origin: still streaming, or already read.
pub enum ClientBody {
    /// Not read yet.
    Stream(Incoming),
    /// Read in full (a comment form handed back to PHP).
    Read(Bytes),
}

impl From<Incoming> for ClientBody {
    fn from(b: Incoming) -> Self {
        ClientBody::Stream(b)
    }
}

/// Largest comment body read; larger ones go to PHP as they are.
pub(super) const MAX_COMMENT_BODY: u64 = 2 << 20;

impl Proxy {
    /// Sends to the origin, timing it and counting failures.
    pub(super) async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, OriginError> {
        let t = Instant::now();
        self.metrics.origin_requests.inc();
        let r = self.origin.send(req).await;
        match &r {
            Ok(_) => self.metrics.origin_latency.observe(t.elapsed().as_secs_f64()),
            Err(e) => self.metrics.origin_error(e.as_str()),
        }
        r
    }

    pub(super) fn origin_failure(&self, e: &OriginError, url: &str) -> Response<ProxyBody> {
        tracing::warn!(url, error = %e, "origin request failed");
        let text = match e {
            OriginError::Timeout { .. } => "the origin did not answer in time",
            _ => "the origin could not be reached",
        };
        synth(e.status(), text, "origin-error")
    }

    /// Streams an origin response to the client unchanged (less hop-by-hop headers).
    pub(super) fn stream_back(
        &self,
        parts: http::response::Parts,
        body: Incoming,
        prefix: Option<Bytes>,
        status: HeaderValue,
    ) -> Response<ProxyBody> {
        let resp = Response::from_parts(parts, ProxyBody::stream(body, prefix, self.origin.body_timeout));
        with_status(resp, status)
    }

    /// A comment POST: queued for the syncer and answered here, or handed to PHP.
    pub(super) async fn comment(&self, parts: Parts, body: Incoming, client: SocketAddr) -> Answer {
        let bytes = match self.read_client_body(body, MAX_COMMENT_BODY as usize, "comment").await {
            Ok(b) => b,
            Err(refusal) => return refusal,
        };
        match self.comments.handle(&parts.headers, bytes, client, &self.metrics).await {
            Handled::Answer(mut resp, result) => {
                self.metrics.comment(result);
                let status = cache_status(format_args!("fwd=bypass; detail=comment-{result}"));
                resp.headers_mut().insert(&CACHE_STATUS, status);
                Answer::new(resp, Outcome::Synth)
            }
            Handled::ToPhp(why, bytes) => {
                self.metrics.comment(why.php_label());
                tracing::debug!(reason = why.as_str(), "comment passed to PHP");
                self.pass(parts, ClientBody::Read(bytes), client, PassReason::Method)
                    .await
            }
        }
    }

    /// The body to send to the origin, and the body itself when it was read: the few
    /// WordPress write endpoints whose small form bodies say which post a write touches are
    /// read first (bounded); everything else streams.
    pub(super) async fn body_for_origin(
        &self,
        parts: &Parts,
        body: ClientBody,
    ) -> Result<(ProxyBody, Option<Bytes>), Answer> {
        let body = match body {
            ClientBody::Stream(b) => b,
            ClientBody::Read(bytes) => return Ok((ProxyBody::full(bytes.clone()), Some(bytes))),
        };
        let has_body = !body.is_end_stream();
        if !has_body {
            return Ok((ProxyBody::Empty, None));
        }
        if !writes::wants_body(&parts.method, parts.uri.path(), content_length(&parts.headers)) {
            return Ok((ProxyBody::stream(body, None, self.origin.body_timeout), None));
        }
        let b = self
            .read_client_body(body, writes::MAX_INSPECTED_BODY as usize, "request")
            .await?;
        Ok((ProxyBody::full(b.clone()), Some(b)))
    }

    /// Reads a client's body in full, up to `limit` bytes and `origin.body_timeout`; a
    /// body that breaks off or is too long gets a 400, one that does not arrive in time a
    /// 408, each naming `what` was being read.
    async fn read_client_body(&self, body: Incoming, limit: usize, what: &str) -> Result<Bytes, Answer> {
        let read = tokio::time::timeout(
            self.origin.body_timeout,
            http_body_util::Limited::new(body, limit).collect(),
        )
        .await;
        match read {
            Ok(Ok(b)) => Ok(b.to_bytes()),
            Ok(Err(e)) => Err(Answer::new(
                synth(
                    StatusCode::BAD_REQUEST,
                    &format!("the {what} body could not be read: {e}"),
                    "body",
                ),
                Outcome::Synth,
            )),
            Err(_) => Err(Answer::new(
                synth(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!("the {what} body did not arrive in time"),
                    "body-timeout",
                ),
                Outcome::Synth,
            )),
        }
    }

    /// Sends a request to the origin without a lookup, streaming both bodies.
    pub(super) async fn pass(
        &self,
        parts: Parts,
        body: impl Into<ClientBody>,
        client: SocketAddr,
        reason: PassReason,
    ) -> Answer {
        self.metrics.pass(reason.as_str());
        let (out_body, inspected) = match self.body_for_origin(&parts, body.into()).await {
            Ok(b) => b,
            Err(refusal) => return refusal,
        };
        let mut headers = parts.headers.clone();
        origin::strip_hop_by_hop(&mut headers);
        origin::add_forwarded(&mut headers, client.ip(), proto(&parts));
        // Routed requests all have a Host; `Connection: host` must not take it away.
        if let Some(host) = host_of(&parts.uri, &parts.headers) {
            set_host(&mut headers, host);
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = match self.origin.uri(path) {
            Ok(u) => u,
            Err(e) => {
                return Answer::new(
                    synth(
                        StatusCode::BAD_REQUEST,
                        &format!("invalid request target: {e}"),
                        "target",
                    ),
                    Outcome::Synth,
                )
            }
        };
        let mut req = Request::new(out_body);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let resp = match self.send(req).await {
            Ok(r) => r,
            Err(e) => return Answer::new(self.origin_failure(&e, path), Outcome::Pass),
        };
        let (mut rparts, rbody) = resp.into_parts();
        origin::strip_hop_by_hop(&mut rparts.headers);
        let mut last_seq = None;
        if let Some(host) = host_of(&parts.uri, &parts.headers) {
            let write = writes::Write {
                method: &parts.method,
                host,
                path: parts.uri.path(),
                query: parts.uri.query(),
                req: &parts.headers,
                body: inspected.as_deref(),
                status: rparts.status,
                resp: &rparts.headers,
            };
            for ban in writes::bans_for(&write, self.cfg().bans.wordpress) {
                match self.ban(ban.clone()) {
                    Ok(r) => last_seq = Some(r.seq),
                    Err(e) => {
                        // A rule made a ban that does not compile (say, an odd Location): fall
                        // back to the whole site rather than risk a stale page.
                        tracing::warn!(?ban, error = %e, "write-triggered ban refused; banning the site's HTML instead");
                        let mut site = Ban::new(Kind::Tag, tags::HTML);
                        site.host = Some(host.to_string());
                        last_seq = self.ban(site).ok().map(|r| r.seq).or(last_seq);
                    }
                }
            }
        }
        if let Some(seq) = last_seq {
            // Read-your-writes on every node: the writer's next request may go to a sibling,
            // so the answer waits (briefly, bounded) until reachable siblings have the bans.
            let wait = self.cfg().cluster.write_wait;
            if !wait.is_zero() && !self.cluster.siblings.is_empty() {
                for (sibling, acked, took) in self.cluster.wait_acked(seq, wait, true).await {
                    if !acked {
                        tracing::warn!(%sibling, waited = ?took, seq, "sibling has not acknowledged a write's bans yet; answering anyway");
                    }
                }
            }
        }
        let status = cache_status(format_args!(
            "fwd=bypass; fwd-status={}; detail={}",
            rparts.status.as_u16(),
            reason.as_str()
        ));
        Answer::new(self.stream_back(rparts, rbody, None, status), Outcome::Pass)
    }
}
