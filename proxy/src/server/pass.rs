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
    /// Sends to the origin, timing it and counting failures and interim responses (`100`,
    /// `102`, `103 Early Hints`: read and dropped; hyper's server has no way to send a client
    /// a 1xx of its own, so they cannot be relayed, and they are never stored). The
    /// WordPress plugin's announcement is taken out of every answer here, so no path stores
    /// or delivers it: what it covers for this cluster is left in the answer's extensions
    /// ([`writes::plugin::Covers`]).
    pub(super) async fn send(&self, mut req: Request<ProxyBody>) -> Result<Response<Incoming>, OriginError> {
        let t = Instant::now();
        self.metrics.origin_requests.inc();
        let interim = self.metrics.origin_interim.clone();
        hyper::ext::on_informational(&mut req, move |_| {
            interim.inc();
        });
        let mut r = self.origin.send(req).await;
        match &mut r {
            Ok(resp) => {
                self.metrics.origin_latency.observe(t.elapsed().as_secs_f64());
                self.take_announcement(resp);
            }
            Err(e) => self.metrics.origin_error(e.as_str()),
        }
        r
    }

    /// Removes `X-Strata-Plugin` from an origin answer and leaves what it covers for this
    /// cluster in the answer's extensions.
    fn take_announcement(&self, resp: &mut Response<Incoming>) {
        let header = &writes::plugin::HEADER;
        let Some(value) = resp.headers().get(header) else {
            return;
        };
        let secret = &self.cfg().cluster.secret;
        let covers = if secret.len() >= strata_wire::auth::MIN_SECRET_LEN {
            writes::plugin::Covers::announced(value.as_bytes(), &strata_wire::auth::plugin_key(secret))
        } else {
            writes::plugin::Covers::NONE
        };
        resp.headers_mut().remove(header);
        resp.extensions_mut().insert(covers);
    }

    pub(super) fn origin_failure(&self, e: &OriginError, url: &str) -> Response<ProxyBody> {
        tracing::warn!(url, error = %e, "origin request failed");
        let text = match e {
            OriginError::Timeout { .. } => "the origin did not answer in time",
            _ => "the origin could not be reached",
        };
        synth(e.status(), text, "origin-error")
    }

    /// The answer to a miss that got no place in the origin budget in time: 503 with the
    /// reason and `Retry-After`, logged.
    pub(super) fn origin_busy(&self, busy: &crate::budget::Busy, url: &str) -> Response<ProxyBody> {
        tracing::warn!(
            url,
            queued = busy.queued,
            waited_ms = busy.waited.as_millis() as u64,
            "origin budget full; refused"
        );
        let mut resp = synth(StatusCode::SERVICE_UNAVAILABLE, &busy.to_string(), "origin-busy");
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        resp
    }

    /// Streams an origin response to the client unchanged (less hop-by-hop headers and the
    /// targeted cache-control fields, which are for this cache alone).
    pub(super) fn stream_back(
        &self,
        mut parts: http::response::Parts,
        body: Incoming,
        prefix: Option<Bytes>,
        status: HeaderValue,
    ) -> Response<ProxyBody> {
        for name in &self.cfg().cache.targeted_fields {
            parts.headers.remove(name);
        }
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
        let length = content_length(&parts.headers);
        if !writes::wants_body(&parts.method, parts.uri.path(), length, length.is_none()) {
            return Ok((ProxyBody::stream(body, None, self.origin.body_timeout), None));
        }
        let limit = writes::MAX_INSPECTED_BODY as usize;
        if length.is_some() {
            let b = self.read_client_body(body, limit, "request").await?;
            return Ok((ProxyBody::full(b.clone()), Some(b)));
        }
        // Chunked: read up to the limit; a longer body goes on uninspected.
        match read_prefix(body, limit, self.origin.body_timeout).await {
            Ok((b, rest)) if rest.is_end_stream() => Ok((ProxyBody::full(b.clone()), Some(b))),
            Ok((b, rest)) => Ok((ProxyBody::stream(rest, Some(b), self.origin.body_timeout), None)),
            Err(ReadError::Timeout) => Err(Answer::new(
                synth(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                    "body-timeout",
                ),
                Outcome::Synth,
            )),
            Err(ReadError::Broken(e)) => Err(Answer::new(
                synth(
                    StatusCode::BAD_REQUEST,
                    &format!("the request body could not be read: {e}"),
                    "body",
                ),
                Outcome::Synth,
            )),
        }
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

    /// Applies the bans a finished write implies (and counts it); returns the last ban's
    /// number. A trusted write's ban that does not compile (an odd `Location`, say) falls
    /// back on the whole site's HTML rather than risk a stale page; an untrusted one's is
    /// only logged.
    fn apply_write(&self, write: &writes::Write<'_>, rules: writes::Rules, host: &str) -> Option<u64> {
        let inv = writes::bans_for(write, rules);
        if inv.bans.is_empty() {
            return None;
        }
        self.metrics.write(inv.trust.map_or("none", writes::Trust::as_str));
        let mut last_seq = None;
        for ban in inv.bans {
            match self.ban(ban.clone()) {
                Ok(r) => last_seq = Some(r.seq),
                Err(e) if inv.trust.is_some() => {
                    tracing::warn!(?ban, error = %e, "write-triggered ban refused; banning the site's HTML instead");
                    let mut site = Ban::new(Kind::Tag, tags::HTML);
                    site.host = Some(host.to_string());
                    last_seq = self.ban(site).ok().map(|r| r.seq).or(last_seq);
                }
                Err(e) => tracing::warn!(?ban, error = %e, "write-triggered ban refused"),
            }
        }
        last_seq
    }

    /// Whether WordPress takes the `wordpress_*` cookies of a request for a login: asked
    /// with them alone (`admin-ajax.php?action=logged-in` answers `1` to a login, `0` with
    /// a 400 otherwise), the answer remembered per cookie value for [`LOGIN_MEMORY`]. An
    /// origin that cannot answer confirms nothing (the write then bans its own URLs only).
    async fn login_confirmed(&self, parts: &Parts, host: &str) -> bool {
        let cookies: Vec<&str> = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|c| c.starts_with("wordpress_"))
            .collect();
        let cookie = cookies.join("; ");
        let key = self.logins.hash(&(host, &cookie));
        if let Some(known) = self.logins.get(&key) {
            return known;
        }
        let mut req = Request::new(ProxyBody::Empty);
        let Ok(uri) = self.origin.uri(LOGIN_CHECK) else {
            return false;
        };
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        set_host(h, host);
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.insert(header::COOKIE, v);
        }
        h.insert("x-forwarded-proto", HeaderValue::from_static(proto(parts)));
        let answer = match self.send(req).await {
            Ok(resp) => {
                let status = resp.status();
                let body = tokio::time::timeout(
                    self.origin.body_timeout,
                    http_body_util::Limited::new(resp.into_body(), 64).collect(),
                )
                .await;
                match body {
                    Ok(Ok(b)) => Some(status == StatusCode::OK && b.to_bytes().trim_ascii() == b"1"),
                    _ => None,
                }
            }
            Err(_) => None,
        };
        match answer {
            Some(yes) => {
                self.metrics.login_check(if yes { "yes" } else { "no" });
                self.logins.insert(key, yes);
                yes
            }
            None => {
                self.metrics.login_check("error");
                tracing::warn!(
                    host,
                    "could not ask WordPress whether a write's cookies are a login; it bans its own URLs only"
                );
                false
            }
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
        let (mut rparts, mut rbody) = resp.into_parts();
        origin::strip_hop_by_hop(&mut rparts.headers);
        let mut answer_start = None;
        let mut last_seq = None;
        if let Some(host) = host_of(&parts.uri, &parts.headers) {
            let rules = writes::Rules {
                wordpress: self.cfg().bans.wordpress,
                anonymous_writes: self.cfg().bans.trust_anonymous_writes,
            };
            let mut write = writes::Write {
                method: &parts.method,
                host,
                path: parts.uri.path(),
                query: parts.uri.query(),
                req: &parts.headers,
                body: inspected.as_deref(),
                status: rparts.status,
                resp: &rparts.headers,
                answer: None,
                logged_in: false,
                plugin: rparts.extensions.get().copied().unwrap_or_default(),
            };
            if writes::reads_answer(&write, rules) {
                // XML-RPC answers its faults with a 200: the start of the answer decides.
                match read_prefix(rbody, ANSWER_INSPECTED, self.origin.body_timeout).await {
                    Ok((start, rest)) => {
                        answer_start = Some(start);
                        rbody = rest;
                    }
                    Err(e) => {
                        tracing::warn!(path, error = %e, "origin answer broke off while it was read");
                        self.metrics.origin_error("body");
                        let resp = synth(
                            StatusCode::BAD_GATEWAY,
                            "the origin's response broke off",
                            "origin-error",
                        );
                        return Answer::new(resp, Outcome::Pass);
                    }
                }
                write.answer = answer_start.as_deref();
            }
            if writes::needs_login_check(&write, rules) {
                write.logged_in = self.login_confirmed(&parts, host).await;
            }
            last_seq = self.apply_write(&write, rules, host);
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
        Answer::new(self.stream_back(rparts, rbody, answer_start, status), Outcome::Pass)
    }
}

/// How much of an answer is read when its start decides what a write banned (XML-RPC).
const ANSWER_INSPECTED: usize = 64 << 10;
/// Where WordPress says whether a request's cookies are a login.
const LOGIN_CHECK: &str = "/wp-admin/admin-ajax.php?action=logged-in";
/// How long WordPress's answer about a login cookie is reused.
pub(super) const LOGIN_MEMORY: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// No data for longer than the idle timeout.
    #[error("no data within the idle timeout")]
    Timeout,
    /// The peer broke the body off.
    #[error("{0}")]
    Broken(hyper::Error),
}

/// Reads a body until more than `limit` bytes came or it ended, each frame within `idle`:
/// the bytes read, and the body to go on streaming from (ended, when it is
/// `is_end_stream`). Trailers are dropped.
async fn read_prefix(
    mut body: Incoming,
    limit: usize,
    idle: std::time::Duration,
) -> Result<(Bytes, Incoming), ReadError> {
    let mut buf = bytes::BytesMut::new();
    while buf.len() <= limit {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ReadError::Broken(e)),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    Ok((buf.freeze(), body))
}

/// WordPress's recent answers about login cookies, by a hash of host and cookies (bounded
/// in count and in age).
pub(super) struct Logins {
    answers: moka::sync::Cache<u64, bool>,
    hasher: ahash::RandomState,
}

impl Logins {
    /// Answers kept at most.
    const CAPACITY: u64 = 10_000;

    pub(super) fn new() -> Logins {
        Logins {
            answers: moka::sync::Cache::builder()
                .max_capacity(Self::CAPACITY)
                .time_to_live(LOGIN_MEMORY)
                .build(),
            hasher: ahash::RandomState::new(),
        }
    }

    fn hash(&self, what: &(&str, &String)) -> u64 {
        self.hasher.hash_one(what)
    }

    fn get(&self, key: &u64) -> Option<bool> {
        self.answers.get(key)
    }

    fn insert(&self, key: u64, yes: bool) {
        self.answers.insert(key, yes);
    }
}
