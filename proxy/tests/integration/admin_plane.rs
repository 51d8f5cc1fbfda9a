//! The admin plane against an attacker: a signed request works once and on the node it was
//! signed for only, whatever the spelling of its signature; what the cache holds is shown to
//! allowed clients only; the admin port keeps its own connection limit, so a full public port
//! leaves siblings and health checks alone; idle connections and greedy clients are cut on
//! the public port.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout};

use crate::fixture::{full, Fixture};
use crate::harness::{
    ban_at, ban_json, cluster_state, metric_at, now_ms, poll, send, signed_headers, signed_headers_with_body,
    wait_confirmed, Resp, TestProxy, SECRET,
};
use crate::tls;

/// Runs a test body, failing it if it takes longer than `secs`.
async fn bounded(secs: u64, f: impl Future<Output = ()>) {
    timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"));
}

/// An origin with a cacheable page at every path; `/slow` answers after 2.5 s.
async fn origin() -> Fixture {
    Fixture::start(|req| async move {
        if req.uri().path() == "/slow" {
            sleep(Duration::from_millis(2500)).await;
        }
        http::Response::builder()
            .header("cache-control", "max-age=60")
            .header("content-type", "text/html")
            .body(full("<p>page</p>"))
            .expect("response")
    })
    .await
}

/// The signing headers of a request signed for the admin listener named `host`.
fn signed_for(host: &str, method: &str, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    use strata_wire::auth;
    let (ts, nonce) = (now_ms(), auth::nonce());
    let signed = auth::Signed {
        method,
        host,
        path,
        body,
    };
    let sig = auth::sign(SECRET.as_bytes(), signed, ts, &nonce);
    vec![
        ("host", host.to_string()),
        (auth::TIMESTAMP_HEADER, ts.to_string()),
        (auth::NONCE_HEADER, nonce),
        (auth::SIGNATURE_HEADER, sig),
    ]
}

/// `headers` with the value of `name` replaced by `f` of it.
fn with(headers: &[(&'static str, String)], name: &str, f: impl Fn(&str) -> String) -> Vec<(&'static str, String)> {
    headers
        .iter()
        .map(|(k, v)| (*k, if *k == name { f(v) } else { v.clone() }))
        .collect()
}

/// POSTs `body` to `path` on the admin listener at `admin` with `headers`.
async fn post(admin: SocketAddr, path: &str, headers: &[(&'static str, String)], body: &str) -> Resp {
    send(
        Method::POST,
        &format!("http://{admin}{path}"),
        headers,
        Bytes::copy_from_slice(body.as_bytes()),
    )
    .await
}

/// Sends `GET /page` on a raw connection and reads the answer; its status, or `None` when
/// the connection was closed (or reset) before a whole answer came, within 5 s.
async fn exchange(c: &mut TcpStream) -> Option<u16> {
    let work = async {
        c.write_all(b"GET /page HTTP/1.1\r\nhost: site.test\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = c.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return head.get(9..12)?.parse().ok();
            }
        }
    };
    timeout(Duration::from_secs(5), work).await.ok().flatten()
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("address"))
        .expect("bind");
    socket.connect(to).await.expect("connect")
}

/// A node's own sequence number: how many bans it applied and broadcast.
async fn seq(admin: SocketAddr) -> u64 {
    cluster_state(admin).await["seq"].as_u64().expect("seq")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_ban_is_refused_in_any_spelling_of_its_signature() {
    bounded(30, async {
        let origin = origin().await;
        let p = TestProxy::start(&origin.url(), &[]).await;
        let body = ban_json("tag", "replay", None, false);
        let captured = signed_headers_with_body(p.admin, "POST", "/ban", body.as_bytes(), now_ms(), SECRET);
        let r = post(p.admin, "/ban", &captured, &body).await;
        assert_eq!(r.status, StatusCode::OK, "the first use: {}", r.text());

        let sig = strata_wire::auth::SIGNATURE_HEADER;
        let upper = with(&captured, sig, |v| format!("v2={}", v[3..].to_ascii_uppercase()));
        let mixed = with(&captured, sig, |v| {
            let hex: String = v[3..]
                .chars()
                .enumerate()
                .map(|(i, c)| if i % 3 == 0 { c.to_ascii_uppercase() } else { c })
                .collect();
            format!("v2={hex}")
        });
        for (what, headers) in [
            ("as captured", &captured),
            ("upper-cased", &upper),
            ("mixed-case", &mixed),
        ] {
            let r = post(p.admin, "/ban", headers, &body).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "replayed {what}: {}", r.text());
            assert!(
                r.text().contains("already used (replay)"),
                "replayed {what}: {}",
                r.text()
            );
        }
        assert_eq!(seq(p.admin).await, 1, "no replay applied a ban");

        let fresh = signed_headers_with_body(p.admin, "POST", "/ban", body.as_bytes(), now_ms(), SECRET);
        let r = post(p.admin, "/ban", &fresh, &body).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "a fresh signature of the same ban: {}",
            r.text()
        );
        assert_eq!(seq(p.admin).await, 2);

        // A request of the older scheme is told what is wrong.
        let old = with(&fresh, sig, |v| v[3..].to_string());
        let r = post(p.admin, "/ban", &old, &body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
        assert!(r.text().contains("older scheme"), "{}", r.text());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_signed_for_one_node_is_refused_by_another() {
    bounded(30, async {
        let origin = origin().await;
        let a = TestProxy::start(&origin.url(), &[]).await;
        let b = TestProxy::start(
            &origin.url(),
            &[("cluster", "admin_hosts = [\"admin.node-b.test:9080\"]")],
        )
        .await;
        let body = ban_json("tag", "target", None, false);
        let for_a = signed_headers_with_body(a.admin, "POST", "/ban", body.as_bytes(), now_ms(), SECRET);

        let r = post(b.admin, "/ban", &for_a, &body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "A's request at B: {}", r.text());
        assert!(
            r.text()
                .contains(&format!("signed for {}, which is not this node", a.admin)),
            "{}",
            r.text()
        );
        let readdressed = with(&for_a, "host", |_| b.admin.to_string());
        let r = post(b.admin, "/ban", &readdressed, &body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "A's request with B's Host: {}",
            r.text()
        );
        assert!(r.text().contains("signature does not match"), "{}", r.text());
        assert_eq!(seq(b.admin).await, 0, "B applied nothing");

        let r = post(a.admin, "/ban", &for_a, &body).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "the request where it was meant to go: {}",
            r.text()
        );
        assert_eq!(seq(a.admin).await, 1);

        // A name in cluster.admin_hosts names B as well as its address does.
        let named = signed_for("admin.node-b.test:9080", "POST", "/ban", body.as_bytes());
        let r = post(b.admin, "/ban", &named, &body).await;
        assert_eq!(r.status, StatusCode::OK, "signed for B's configured name: {}", r.text());
        let r = post(a.admin, "/ban", &named, &body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "B's name at A: {}", r.text());
        assert_eq!((seq(a.admin).await, seq(b.admin).await), (1, 1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_and_cluster_answer_only_clients_in_admin_allow() {
    bounded(30, async {
        let origin = origin().await;
        let lookup = "/lookup?url=http%3A%2F%2Fsite.test%2Fpage";
        let outside = TestProxy::start(&origin.url(), &[("cluster", "admin_allow = [\"192.0.2.1\"]")]).await;
        let get = |admin: SocketAddr, path: &'static str, headers: Vec<(&'static str, String)>| async move {
            send(Method::GET, &format!("http://{admin}{path}"), &headers, Bytes::new()).await
        };
        for path in [lookup, "/cluster", "/healthz"] {
            let r = get(outside.admin, path, vec![]).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "GET {path}: {}", r.text());
            assert_eq!(r.text(), "127.0.0.1 is not in cluster.admin_allow\n");
        }
        // A signature does not open the listener to an address the list leaves out.
        let signed = signed_headers(outside.admin, "GET", lookup, now_ms(), SECRET);
        let r = get(outside.admin, lookup, signed).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "signed, from outside: {}", r.text());
        // The public port is not the admin listener's business.
        let r = crate::harness::get_at(outside.addr, "site.test", "/page", &[]).await;
        assert_eq!(r.status, StatusCode::OK);

        let inside = TestProxy::start(&origin.url(), &[("cluster", "admin_allow = [\"127.0.0.1\"]")]).await;
        crate::harness::get_at(inside.addr, "site.test", "/page", &[]).await;
        let r = get(inside.admin, lookup, vec![]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(r.text().contains("site.test/page"), "{}", r.text());
        let r = get(inside.admin, "/cluster", vec![]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_public_port_leaves_the_admin_port_to_siblings_and_health_checks() {
    bounded(40, async {
        let origin = origin().await;
        let nodes = TestProxy::start_cluster(&origin.url(), 2, |i| {
            let mut extra = vec![
                ("cluster", "heartbeat_interval = \"100ms\"".to_string()),
                ("cluster", "confirm_within = \"1s\"".to_string()),
            ];
            if i == 0 {
                extra.push(("server", "max_connections = 4".to_string()));
                extra.push(("server", "header_timeout = \"30s\"".to_string()));
            }
            extra
        })
        .await;
        let (a, b) = (&nodes[0], &nodes[1]);
        let admins = [a.admin, b.admin];
        wait_confirmed(&admins, Duration::from_secs(5)).await;

        // Four idle connections fill node a's public port; the fifth is closed unanswered.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(TcpStream::connect(a.addr).await.expect("connect"));
        }
        let refused = poll("a's public port to be full", Duration::from_secs(5), || async {
            let mut fifth = TcpStream::connect(a.addr).await.ok()?;
            exchange(&mut fifth).await.is_none().then_some(())
        });
        refused.await;
        assert!(metric_at(a.admin, "strata_proxy_connections_refused_total", "reason=\"limit\"").await >= 1.0);

        // The admin port answers health checks and takes a signed ban, which the sibling
        // acknowledges.
        let r = send(Method::GET, &format!("http://{}/healthz", a.admin), &[], Bytes::new()).await;
        assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok\n"));
        let answer = ban_at(a.admin, &ban_json("tag", "full", None, false), Some(3000)).await;
        let siblings = answer["siblings"].as_object().expect("siblings");
        assert_eq!(siblings.len(), 1);
        assert!(siblings.values().all(|s| s["acked"] == true), "{answer}");

        // Both nodes stay confirmed through several confirmation periods while the public
        // port stays full.
        for _ in 0..3 {
            sleep(Duration::from_millis(600)).await;
            for admin in admins {
                let state = cluster_state(admin).await;
                assert_eq!(state["confirmed"], true, "{admin}: {state}");
            }
        }
        let r = send(Method::GET, &format!("http://{}/healthz", a.admin), &[], Bytes::new()).await;
        assert_eq!(r.status, StatusCode::OK);

        // Once connections close, the public port serves again.
        drop(held);
        poll("a's public port to serve again", Duration::from_secs(5), || async {
            let mut c = TcpStream::connect(a.addr).await.ok()?;
            (exchange(&mut c).await == Some(200)).then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_although_it_answers_pings() {
    bounded(30, async {
        let origin = origin().await;
        let pki = tls::Pki::new("idle");
        let leaf = pki.leaf(&["site.test", "127.0.0.1"], "site");
        // The server pings every 500 ms; the connection may stay idle 1 s.
        let (_p, addr) = tls::start(
            &origin.url(),
            &[&leaf],
            &[
                ("server", "idle_timeout = \"1s\""),
                ("server", "header_timeout = \"500ms\""),
            ],
        )
        .await;
        let stream = tls::connect(addr, "site.test", pki.client(&[b"h2"])).await;
        assert_eq!(tls::alpn(&stream).as_deref(), Some(&b"h2"[..]));
        // The client answers the server's pings, and pings it every 100 ms besides.
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(100))
            .keep_alive_while_idle(true)
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .expect("h2 handshake");
        let conn = tokio::spawn(conn);
        let get = |path: &str| {
            http::Request::builder()
                .uri(format!("https://site.test{path}"))
                .body(Empty::new())
                .expect("request")
        };

        // A stream open longer than the idle timeout keeps the connection.
        let started = Instant::now();
        send.ready().await.expect("ready");
        let r = send.send_request(get("/slow")).await.expect("an answer after 2.5 s");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(2400));
        drop(r);
        assert!(!conn.is_finished(), "closed while a stream was open");

        // Then nothing: the server closes the connection within 1× to 1.5× the timeout.
        let idle_since = Instant::now();
        let ended = timeout(Duration::from_secs(5), conn)
            .await
            .expect("the idle connection is closed within 5 s")
            .expect("connection task");
        let idle = idle_since.elapsed();
        assert!(ended.is_ok(), "closed gracefully (GOAWAY): {ended:?}");
        // Not before the timeout; the 5 s bound above only keeps a loaded machine from
        // failing the test (the close comes within 1× to 1.5× the timeout when a core is free).
        assert!(idle >= Duration::from_millis(900), "closed after {idle:?} idle");
        assert!(send.ready().await.is_err(), "no new stream on a closed connection");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    bounded(20, async {
        let origin = origin().await;
        let p = TestProxy::start(&origin.url(), &[("server", "idle_timeout = \"1s\"")]).await;
        let mut c = TcpStream::connect(p.addr).await.expect("connect");
        assert_eq!(exchange(&mut c).await, Some(200));
        let idle_since = Instant::now();
        let mut rest = [0u8; 16];
        let read = timeout(Duration::from_secs(5), c.read(&mut rest)).await;
        let idle = idle_since.elapsed();
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
        // Not before the timeout, and well before `header_timeout` (10 s) would have.
        assert!(
            idle >= Duration::from_millis(900) && idle < Duration::from_secs(5),
            "closed after {idle:?} idle (header_timeout is 10 s)"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_client_cap_refuses_the_next_connection_from_one_address() {
    bounded(30, async {
        let origin = origin().await;
        let p = TestProxy::start(&origin.url(), &[("server", "max_connections_per_client = 3")]).await;
        let mut held = Vec::new();
        for i in 0..3 {
            let mut c = connect_from("127.0.0.1", p.addr).await;
            assert_eq!(exchange(&mut c).await, Some(200), "connection {i}");
            held.push(c);
        }
        let mut fourth = connect_from("127.0.0.1", p.addr).await;
        assert_eq!(exchange(&mut fourth).await, None, "the fourth from one address");
        assert_eq!(
            p.metric("strata_proxy_connections_refused_total", "reason=\"per-client\"")
                .await,
            1.0
        );
        // Another address has a count of its own.
        let mut other = connect_from("127.0.0.2", p.addr).await;
        assert_eq!(exchange(&mut other).await, Some(200), "from 127.0.0.2");
        // The held connections still serve, and a closed one frees its place.
        assert_eq!(exchange(&mut held[0]).await, Some(200));
        drop(held.pop());
        poll("a freed place", Duration::from_secs(5), || async {
            let mut c = connect_from("127.0.0.1", p.addr).await;
            (exchange(&mut c).await == Some(200)).then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_never_finished_on_the_admin_port_is_cut_off() {
    bounded(40, async {
        let origin = origin().await;
        let p = TestProxy::start(&origin.url(), &[]).await;
        // Slowloris on the admin port: a head begun, never ended, a byte now and then.
        let mut c = TcpStream::connect(p.admin).await.expect("connect");
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let started = Instant::now();
        let cut = timeout(Duration::from_secs(30), async {
            let mut buf = [0u8; 256];
            loop {
                if c.write_all(b"X-A: b\r\n").await.is_err() {
                    return;
                }
                match timeout(Duration::from_secs(1), c.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    _ => {}
                }
            }
        })
        .await;
        assert!(cut.is_ok(), "the admin port let a head go on for 30 s");
        assert!(
            started.elapsed() >= Duration::from_secs(9),
            "cut by the admin head timeout (10 s), not earlier: {:?}",
            started.elapsed()
        );
        // And the port still answers whoever speaks properly.
        let r = send(Method::GET, &format!("http://{}/healthz", p.admin), &[], Bytes::new()).await;
        assert_eq!(r.status, StatusCode::OK);
    })
    .await;
}
