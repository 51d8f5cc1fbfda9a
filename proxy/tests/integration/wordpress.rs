//! Against the real WordPress origin: what a visitor and an operator see.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::fixture::Relay;
use crate::harness::{gunzip, now_ms, post_paths, send, signed_headers, wp_host, wp_origin, TestProxy, SECRET};

fn origin_authority() -> String {
    wp_origin().trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_hit_with_identical_body() {
    let p = TestProxy::start(&wp_origin(), &[]).await;
    let path = &post_paths(1).await[0];
    let first = p.get(path, &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.x_cache(), "MISS");
    assert!(first.header("cache-status").contains("stored"), "{:?}", first.headers);
    assert!(first.text().contains("rel='shortlink'") || first.text().contains("rel=\"shortlink\""));
    let second = p.get(path, &[]).await;
    assert_eq!(second.x_cache(), "HIT");
    assert!(second.header("cache-status").starts_with("Strata; hit"));
    assert_eq!(first.body, second.body);
    assert_eq!(p.metric("strata_proxy_origin_requests_total", "").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_in_and_commenter_cookies_pass() {
    let p = TestProxy::start(&wp_origin(), &[]).await;
    let path = &post_paths(1).await[0];
    p.get(path, &[]).await;
    for cookie in [
        "wordpress_logged_in_0123abcd=admin%7C123",
        "comment_author_0123abcd=Ann",
        "wp-postpass_0123abcd=x",
    ] {
        let r = p.get(path, &[("cookie", cookie)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.x_cache(), "PASS", "{cookie}");
        assert!(r.header("cache-status").contains("detail=cookie"));
    }
    let r = p
        .get(
            path,
            &[("cookie", "_ga=GA1.2.3; wordpress_test_cookie=WP+Cookie+check")],
        )
        .await;
    assert_eq!(r.x_cache(), "HIT", "analytics and test cookies do not bypass the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_login_and_posts_pass() {
    let p = TestProxy::start(&wp_origin(), &[]).await;
    let r = p.get("/wp-login.php", &[]).await;
    assert_eq!((r.status, r.x_cache()), (StatusCode::OK, "PASS"));
    assert!(r.header("cache-status").contains("detail=path"));
    let r = p.get("/wp-admin/", &[]).await;
    assert_eq!(r.x_cache(), "PASS");
    assert!(
        r.status.is_redirection(),
        "wp-admin redirects an anonymous visitor to the login page"
    );
    let body = Bytes::from_static(b"log=nobody&pwd=wrong&wp-submit=Log+In");
    let r = p
        .request(
            Method::POST,
            "/wp-login.php",
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await;
    assert_eq!(r.x_cache(), "PASS");
    assert!(r.header("cache-status").contains("detail=path") || r.header("cache-status").contains("detail=method"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_cold_requests_make_one_origin_request() {
    let p = std::sync::Arc::new(TestProxy::start(&wp_origin(), &[]).await);
    let path = post_paths(3).await[2].clone();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let p = p.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move { p.get(&path, &[]).await }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        bodies.push(r.body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every request got the same page"
    );
    assert_eq!(p.metric("strata_proxy_origin_requests_total", "").await, 1.0);
    assert_eq!(p.metric("strata_proxy_requests_total", "outcome=\"miss\"").await, 1.0);
    assert_eq!(p.metric("strata_proxy_requests_total", "outcome=\"hit\"").await, 99.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_brotli_and_identity_clients_are_all_served_from_memory() {
    let p = TestProxy::start(&wp_origin(), &[]).await;
    let path = &post_paths(2).await[1];
    let plain = p.get(path, &[]).await;
    assert_eq!(plain.header("content-encoding"), "");
    let gz = p.get(path, &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.x_cache(), "HIT");
    assert_eq!(gz.header("content-encoding"), "gzip");
    assert!(gz.body.len() < plain.body.len() / 2);
    assert_eq!(gunzip(&gz.body), plain.body.to_vec());
    let br = p.get(path, &[("accept-encoding", "gzip, deflate, br")]).await;
    assert_eq!((br.x_cache(), br.header("content-encoding")), ("HIT", "br"));
    let again = p.get(path, &[("accept-encoding", "identity")]).await;
    assert_eq!((again.x_cache(), again.header("content-encoding")), ("HIT", ""));
    assert_eq!(again.body, plain.body);
    assert!(plain.header("vary").contains("Accept-Encoding"));
    assert_eq!(p.metric("strata_proxy_origin_requests_total", "").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_get_304_from_memory_and_head_has_no_body() {
    let p = TestProxy::start(&wp_origin(), &[]).await;
    let path = &post_paths(1).await[0];
    let first = p.get(path, &[]).await;
    let etag = first.header("etag").to_string();
    assert!(!etag.is_empty(), "stored pages carry a validator");
    let r = p.get(path, &[("if-none-match", &etag)]).await;
    assert_eq!((r.status, r.x_cache()), (StatusCode::NOT_MODIFIED, "HIT"));
    assert!(r.body.is_empty());
    let r = p.get(path, &[("if-none-match", "\"something-else\"")]).await;
    assert_eq!(r.status, 200);
    let head = p.request(Method::HEAD, path, &[], Bytes::new()).await;
    assert_eq!((head.status, head.x_cache()), (StatusCode::OK, "HIT"));
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), first.body.len().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_parameters_and_query_order_share_one_object() {
    let p = TestProxy::start(&wp_origin(), &[]).await;
    let first = p.get("/?s=notes&paged=1", &[]).await;
    assert_eq!((first.status, first.x_cache()), (StatusCode::OK, "MISS"));
    let r = p.get("/?paged=1&utm_source=newsletter&s=notes&fbclid=abc", &[]).await;
    assert_eq!(r.x_cache(), "HIT");
    assert_eq!(r.body, first.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_within_grace_when_origin_is_down_then_502_after() {
    let relay = Relay::start(origin_authority()).await;
    let p = TestProxy::start(
        &relay.url(),
        &[("cache", "default_ttl = \"1s\""), ("cache", "grace = \"3s\"")],
    )
    .await;
    let path = &post_paths(1).await[0];
    let first = p.get(path, &[]).await;
    assert_eq!(first.x_cache(), "MISS");
    relay.cut();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let stale = p.get(path, &[]).await;
    assert_eq!((stale.status, stale.x_cache()), (StatusCode::OK, "STALE"));
    assert!(stale.header("cache-status").contains("fwd=stale"));
    assert_eq!(stale.body, first.body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still = p.get(path, &[]).await;
    assert_eq!(
        still.x_cache(),
        "STALE",
        "a failed refresh keeps the stale copy (stale-if-error)"
    );
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let gone = p.get(path, &[]).await;
    assert!(gone.status == 502 || gone.status == 503, "after grace: {}", gone.status);
    assert!(
        gone.text().contains("origin"),
        "the answer names the cause: {}",
        gone.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_purge_clears_a_url_and_bad_signatures_are_refused() {
    let p = TestProxy::start(&wp_origin(), &[]).await;
    let path = post_paths(1).await[0].clone();
    p.get(&path, &[]).await;
    assert_eq!(p.get(&path, &[]).await.x_cache(), "HIT");
    let purge = format!("/purge?url={}&host={}", path, wp_host());
    let url = format!("http://{}{purge}", p.admin);
    let unsigned = send(Method::POST, &url, &[], Bytes::new()).await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    let wrong = signed_headers(p.admin, "POST", &purge, now_ms(), "not-the-cluster-secret-at-all");
    assert_eq!(
        send(Method::POST, &url, &wrong, Bytes::new()).await.status,
        StatusCode::FORBIDDEN
    );
    let expired = signed_headers(p.admin, "POST", &purge, now_ms() - 120_000, SECRET);
    assert_eq!(
        send(Method::POST, &url, &expired, Bytes::new()).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        p.get(&path, &[]).await.x_cache(),
        "HIT",
        "refused purges invalidate nothing"
    );
    let good = signed_headers(p.admin, "POST", &purge, now_ms(), SECRET);
    let r = send(Method::POST, &url, &good, Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        send(Method::POST, &url, &good, Bytes::new()).await.status,
        StatusCode::FORBIDDEN,
        "replay"
    );
    assert_eq!(p.get(&path, &[]).await.x_cache(), "MISS");
    let public = p
        .request(Method::from_bytes(b"PURGE").unwrap(), &path, &[], Bytes::new())
        .await;
    assert_eq!(
        public.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "no purge on the public port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_command_signs_and_sends_a_purge() {
    let p = TestProxy::start(&wp_origin(), &[]).await;
    let path = post_paths(1).await[0].clone();
    p.get(&path, &[]).await;
    let cfg = std::env::temp_dir().join(format!("strata-it-ban-{}.toml", std::process::id()));
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\nadmin_listen = \"{}\"\n[origin]\nurl = \"{}\"\n[cluster]\nsecret_file = {:?}\n",
            p.admin,
            wp_origin(),
            crate::harness::secret_file()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_strata-proxy");
    let url = format!("http://{}{}", wp_host(), path);
    let out = tokio::process::Command::new(bin)
        .args(["ban", "--config", cfg.to_str().unwrap(), "--url", &url])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"removed\":1"));
    assert_eq!(p.get(&path, &[]).await.x_cache(), "MISS");
    let out = tokio::process::Command::new(bin)
        .args(["ban", "--config", cfg.to_str().unwrap(), "--all"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(p.get(&path, &[]).await.x_cache(), "MISS");
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer_and_are_not_on_the_public_port() {
    let p = TestProxy::start(&wp_origin(), &[]).await;
    let health = send(Method::GET, &format!("http://{}/healthz", p.admin), &[], Bytes::new()).await;
    assert_eq!(health.status, 200);
    let path = &post_paths(1).await[0];
    p.get(path, &[]).await;
    p.get(path, &[]).await;
    let metrics = send(Method::GET, &format!("http://{}/metrics", p.admin), &[], Bytes::new())
        .await
        .text();
    for name in [
        "strata_proxy_requests_total",
        "strata_proxy_hit_ratio",
        "strata_proxy_origin_first_byte_seconds",
        "strata_proxy_cache_bytes",
        "strata_proxy_cache_objects",
        "strata_proxy_cache_evictions_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // What every program says about itself.
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        metrics.contains(&format!(
            "strata_build_info{{program=\"strata-proxy\",version=\"{version}\""
        )),
        "{metrics}"
    );
    assert!(p.metric("process_resident_memory_bytes", "").await > 0.0);
    assert!(p.metric("process_open_fds", "").await >= 3.0);
    assert!(p.metric("process_start_time_seconds", "").await > 1.6e9);
    assert!(metrics.contains("\nprocess_cpu_seconds_total "), "{metrics}");
    assert_eq!(p.metric("strata_proxy_hit_ratio", "").await, 0.5);
    let status = send(Method::GET, &format!("http://{}/status", p.admin), &[], Bytes::new())
        .await
        .text();
    assert!(status.contains("hit ratio 50.0%"), "{status}");
    let public = p.get("/metrics", &[]).await;
    assert_ne!(
        public.header("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_every_bad_key() {
    let path = std::env::temp_dir().join(format!("strata-it-bad-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[server]\nlisten = \"localhost\"\nadmin_listen = \"127.0.0.1:9\"\n[origin]\nurl = \"ftp://x\"\n\
         [cache]\ncapacity = \"lots\"\ngrace = \"forever\"\n[cluster]\nsecret_file = \"/nonexistent/secret\"\n\
         admin_allow = [\"10.0.0.0/33\"]\n[bans]\npurge_allow = [\"127.0.0.0/8\", \"10.0.0.1/8\"]\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_strata-proxy"))
        .args(["--check-config", "--config", path.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.listen",
        "origin.url",
        "cache.capacity",
        "cache.grace",
        "cluster.secret_file",
    ] {
        assert!(err.contains(key), "{key} not named in:\n{err}");
    }
    // A bad allow-list entry is named with its key; the good one beside it is not.
    for (key, entry) in [
        ("cluster.admin_allow", "10.0.0.0/33"),
        ("bans.purge_allow", "10.0.0.1/8"),
    ] {
        assert!(
            err.lines().any(|l| l.contains(key) && l.contains(entry)),
            "{key} {entry} not named in:\n{err}"
        );
    }
    assert!(!err.contains("127.0.0.0/8"), "{err}");
    std::fs::write(&path, "[cache]\ncapacity = 1\nbogus = true\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_strata-proxy"))
        .args(["--check-config", "--config", path.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_are_the_same_with_the_access_log_on() {
    // With the access log on, hits take the full request path instead of the short one.
    let p = TestProxy::start(&wp_origin(), &[("server", "access_log = true")]).await;
    let path = &post_paths(1).await[0];
    let first = p.get(path, &[("accept-encoding", "gzip")]).await;
    let second = p.get(path, &[("accept-encoding", "gzip")]).await;
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    assert_eq!(first.body, second.body);
    assert_eq!(second.header("content-encoding"), "gzip");
    assert!(second.header("cache-status").starts_with("Strata; hit; ttl="));
    assert_eq!(p.metric("strata_proxy_requests_total", "outcome=\"hit\"").await, 1.0);
}

/// The lines of an access log file once it has `n` of them (the writer flushes in the
/// background; bounded wait).
async fn access_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            return text.lines().map(str::to_string).collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} never had {n} lines: {:?}",
        path.display(),
        std::fs::read_to_string(path)
    );
}

/// A combined-format field as log tools unescape it.
fn unescape(s: &str) -> String {
    s.replace("\\\"", "\"").replace("\\\\", "\\")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_in_combined_format_is_what_log_tools_read() {
    let dir = std::env::temp_dir().join(format!("strata-it-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("combined.log");
    let _ = std::fs::remove_file(&file);
    let p = TestProxy::start(
        &wp_origin(),
        &[
            ("server", "access_log = true"),
            ("server", "access_log_format = \"combined\""),
            ("server", &format!("access_log_file = {:?}", file.display().to_string())),
        ],
    )
    .await;
    let path = &post_paths(1).await[0];
    let agent = "Mozilla/5.0 (X11; Linux) \"quoted\" agent";
    let referer = "http://127.0.0.1:8080/?s=a+b";
    let headers = [("user-agent", agent), ("referer", referer)];
    let miss = p.get(path, &headers).await;
    let hit = p.get(path, &headers).await;
    assert_eq!((miss.x_cache(), hit.x_cache()), ("MISS", "HIT"));
    let head = p.request(Method::HEAD, path, &[], Bytes::new()).await;
    assert_eq!(head.status, 200);
    let lines = access_lines(&file, 3).await;
    assert_eq!(lines.len(), 3, "{lines:?}");

    // remote ident user [time] "request" status bytes "referer" "user-agent"
    let combined = regex::Regex::new(
        r#"^(\S+) (\S+) (\S+) \[([^\]]+)\] "(\S+) (\S+) (HTTP/\d\.\d)" (\d{3}) (\d+|-) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$"#,
    )
    .unwrap();
    let now = chrono::Utc::now();
    for (line, (method, bytes)) in lines
        .iter()
        .zip([("GET", miss.body.len()), ("GET", hit.body.len()), ("HEAD", 0)])
    {
        let c = combined
            .captures(line)
            .unwrap_or_else(|| panic!("not combined format: {line}"));
        assert_eq!(&c[1], "127.0.0.1", "{line}");
        assert_eq!((&c[2], &c[3]), ("-", "-"), "ident and user: {line}");
        let time = chrono::DateTime::parse_from_str(&c[4], "%d/%b/%Y:%H:%M:%S %z")
            .unwrap_or_else(|e| panic!("time {:?}: {e}", &c[4]));
        assert!(
            (now - time.with_timezone(&chrono::Utc)).num_seconds().abs() < 600,
            "{line}"
        );
        assert_eq!((&c[5], &c[6], &c[7]), (method, path.as_str(), "HTTP/1.1"), "{line}");
        assert_eq!(&c[8], "200", "{line}");
        assert_eq!(c[9].parse::<usize>().ok(), Some(bytes), "{line}");
        if method == "GET" {
            assert_eq!(unescape(&c[10]), referer, "{line}");
            assert_eq!(unescape(&c[11]), agent, "{line}");
        } else {
            assert_eq!((&c[10], &c[11]), ("-", "-"), "{line}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_in_json_has_a_field_for_everything() {
    let dir = std::env::temp_dir().join(format!("strata-it-access-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("access.json");
    let _ = std::fs::remove_file(&file);
    let p = TestProxy::start(
        &wp_origin(),
        &[
            ("server", "access_log = true"),
            ("server", "access_log_format = \"json\""),
            ("server", &format!("access_log_file = {:?}", file.display().to_string())),
        ],
    )
    .await;
    let path = &post_paths(1).await[0];
    let first = p.get(path, &[("user-agent", "probe/1")]).await;
    p.get(path, &[]).await;
    let lines = access_lines(&file, 2).await;
    let v: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(v[0]["method"], "GET");
    assert_eq!(v[0]["uri"], path.as_str());
    assert_eq!(v[0]["host"], wp_host().as_str());
    assert_eq!(v[0]["status"], 200);
    assert_eq!(v[0]["bytes"], first.body.len() as u64);
    assert_eq!(v[0]["user_agent"], "probe/1");
    assert_eq!(v[0]["referer"], serde_json::Value::Null);
    assert_eq!(
        (v[0]["cache"].as_str(), v[1]["cache"].as_str()),
        (Some("miss"), Some("hit"))
    );
    assert!(v[0]["time"]
        .as_str()
        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()));
    let _ = std::fs::remove_dir_all(dir);
}
