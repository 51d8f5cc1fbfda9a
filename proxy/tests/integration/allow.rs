//! Who may purge and use the admin plane, against the real WordPress: allow lists with CIDR
//! ranges and IPv4-mapped IPv6 clients, and the URL form of a purge (nginx Helper's
//! `GET /purge/PATH`). Loopback only: `127.0.0.0/8` gives a test many source addresses.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::harness::{post_paths, send, wp_host, wp_origin, TestProxy};

/// Sends `method path` to `addr` from the local address `from` (an IPv4 loopback address),
/// with the WordPress Host; returns the status code and the body.
pub async fn request_from(from: &str, addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind source");
    let mut s = timeout(Duration::from_secs(5), socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        wp_host()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    (status, body)
}

/// The `X-Cache` of a GET of `path` on `addr`.
async fn x_cache(addr: SocketAddr, path: &str) -> String {
    let r = crate::harness::get_at(addr, &wp_host(), path, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "GET {path}");
    r.x_cache().to_string()
}

/// GETs `path` until it is a HIT on `addr`.
async fn warm(addr: SocketAddr, path: &str) {
    for _ in 0..3 {
        if x_cache(addr, path).await == "HIT" {
            return;
        }
    }
    panic!("{path} never became a HIT on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_allow_takes_ranges_and_refuses_clients_outside_them() {
    let paths = post_paths(2).await;
    let (page, other) = (&paths[0], &paths[1]);

    // 127.0.0.0/8 lets 127.0.0.2 purge.
    let p = TestProxy::start(&wp_origin(), &[("bans", "purge_allow = [\"127.0.0.0/8\"]")]).await;
    warm(p.addr, page).await;
    warm(p.addr, other).await;
    let (status, body) = request_from("127.0.0.2", p.addr, "PURGE", page).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        x_cache(p.addr, page).await,
        "MISS",
        "purged by a client inside the range"
    );
    assert_eq!(x_cache(p.addr, other).await, "HIT", "only the purged URL");

    // Ranges that do not hold the client: refused exactly like PURGE from anywhere else.
    let q = TestProxy::start(
        &wp_origin(),
        &[(
            "bans",
            "purge_allow = [\"10.0.0.0/8\", \"127.0.1.0/24\", \"2001:db8::/32\"]",
        )],
    )
    .await;
    warm(q.addr, page).await;
    let (status, body) = request_from("127.0.0.1", q.addr, "PURGE", page).await;
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("PURGE is not accepted"), "{body}");
    assert_eq!(x_cache(q.addr, page).await, "HIT", "nothing purged");
    // 127.0.1.9 is in 127.0.1.0/24.
    assert_eq!(request_from("127.0.1.9", q.addr, "PURGE", page).await.0, 200);
    assert_eq!(x_cache(q.addr, page).await, "MISS");

    // An entry in the IPv4-mapped form names the IPv4 client.
    let r = TestProxy::start(&wp_origin(), &[("bans", "purge_allow = [\"::ffff:127.0.0.1\"]")]).await;
    warm(r.addr, page).await;
    assert_eq!(request_from("127.0.0.1", r.addr, "PURGE", page).await.0, 200);
    assert_eq!(x_cache(r.addr, page).await, "MISS");
    assert_eq!(request_from("127.0.0.3", r.addr, "PURGE", page).await.0, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_clients_on_a_dual_stack_listener_match_ipv4_entries() {
    // On a `[::]` listener an IPv4 client's address is `::ffff:127.0.0.1`.
    let Ok(public) = tokio::net::TcpListener::bind("[::]:0").await else {
        eprintln!("no IPv6 on this machine: dual-stack case skipped");
        return;
    };
    let port = public.local_addr().expect("addr").port();
    let v4: SocketAddr = ([127, 0, 0, 1], port).into();
    let page = &post_paths(1).await[0];
    let p = TestProxy::start_on(
        public,
        &wp_origin(),
        &[
            ("bans", "purge_allow = [\"127.0.0.1\"]"),
            ("cluster", "admin_allow = [\"::ffff:127.0.0.0/104\"]"),
        ],
    )
    .await;
    warm(v4, page).await;
    let (status, body) = request_from("127.0.0.1", v4, "PURGE", page).await;
    assert_eq!(status, 200, "an IPv4-mapped peer matches its IPv4 entry: {body}");
    assert_eq!(x_cache(v4, page).await, "MISS");
    assert_eq!(
        request_from("127.0.0.2", v4, "PURGE", page).await.0,
        405,
        "another address"
    );

    // The admin listener, with its allow list written in the mapped form.
    let r = send(Method::GET, &format!("http://{}/cluster", p.admin), &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_allow_ranges_open_and_close_the_admin_listener() {
    let inside = TestProxy::start(&wp_origin(), &[("cluster", "admin_allow = [\"127.0.0.0/8\"]")]).await;
    let r = send(
        Method::GET,
        &format!("http://{}/cluster", inside.admin),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let outside = TestProxy::start(
        &wp_origin(),
        &[("cluster", "admin_allow = [\"192.0.2.0/24\", \"2001:db8::/32\"]")],
    )
    .await;
    let r = send(
        Method::GET,
        &format!("http://{}/healthz", outside.admin),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.text(), "127.0.0.1 is not in cluster.admin_allow\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_urls_from_allowed_addresses_purge_their_page_and_no_other() {
    let paths = post_paths(3).await;
    let p = TestProxy::start(
        &wp_origin(),
        &[
            ("bans", "purge_allow = [\"127.0.0.1\"]"),
            ("bans", "purge_path = \"/purge\""),
        ],
    )
    .await;
    for path in paths.iter().map(String::as_str).chain(["/"]) {
        warm(p.addr, path).await;
    }
    let (page, other, third) = (&paths[0], &paths[1], &paths[2]);

    // nginx Helper's GET, from an allowed address: that page only.
    let (status, body) = request_from("127.0.0.1", p.addr, "GET", &format!("/purge{page}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"removed\":"), "{body}");
    assert_eq!(x_cache(p.addr, page).await, "MISS", "the purged page");
    assert_eq!(x_cache(p.addr, other).await, "HIT", "another post");
    assert_eq!(x_cache(p.addr, "/").await, "HIT", "the home page");

    // From an address outside purge_allow: refused exactly like PURGE, nothing purged.
    let (status, body) = request_from("127.0.0.2", p.addr, "GET", &format!("/purge{other}")).await;
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("bans.purge_path"), "{body}");
    assert_eq!(request_from("127.0.0.2", p.addr, "PURGE", other).await.0, 405);
    assert_eq!(x_cache(p.addr, other).await, "HIT", "nothing purged from outside");

    // A trailing * purges every URL under the prefix: this one's, not the others'.
    let wildcard = format!("/purge{}*", &other[..other.len() - 3]);
    assert_eq!(request_from("127.0.0.1", p.addr, "GET", &wildcard).await.0, 200);
    assert_eq!(x_cache(p.addr, other).await, "MISS", "under the prefix");
    for path in [third.as_str(), "/"] {
        assert_eq!(x_cache(p.addr, path).await, "HIT", "{path} is not under the prefix");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_urls_are_ordinary_pages_unless_purge_path_is_set() {
    let page = &post_paths(1).await[0];
    let p = TestProxy::start(&wp_origin(), &[("bans", "purge_allow = [\"127.0.0.1\"]")]).await;
    warm(p.addr, page).await;
    // WordPress answers the path itself (its redirect to the post it guesses); nothing is
    // purged.
    let (status, body) = request_from("127.0.0.1", p.addr, "GET", &format!("/purge{page}")).await;
    assert!(status == 301 || status == 404, "WordPress's answer: {status} {body}");
    assert!(!body.contains("\"removed\":"), "{body}");
    assert_eq!(x_cache(p.addr, page).await, "HIT");
}
