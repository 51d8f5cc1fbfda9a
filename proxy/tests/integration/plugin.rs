//! The WordPress plugin (`wordpress/strata/`): its PHP files parse, its signatures are
//! strata-wire's byte for byte, its rules hold; and in the demo WordPress (where
//! `scripts/wordpress.sh` installs it), with real nodes started here, changes that never pass
//! a node reach every node: a post published by wp-cron, a comment approved from PHP, a ban
//! sent past a node that is down.
//!
//! The WordPress tests run PHP as `www-data` (`runuser`, so as root, like `scripts/test.sh`),
//! point the plugin's node-list option at their nodes for their duration (one test at a
//! time; the previous value is put back even when a test fails), and delete the posts they
//! wrote.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use strata_wire::auth;

use crate::harness::{get_at, metric_at, now_ms, poll, send, wait_confirmed, wp_host, wp_origin};
use crate::nodes::Nodes;

/// One WordPress plugin test at a time: they share the plugin's options.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) fn plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../wordpress/strata")
}

fn php_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read plugin dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            php_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "php") {
            out.push(path);
        }
    }
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is PHP installed?): {e}"))
}

#[test]
fn every_plugin_file_parses() {
    let mut files = Vec::new();
    php_files(&plugin_dir(), &mut files);
    assert!(files.len() >= 10, "plugin files: {files:?}");
    for f in files {
        let out = run(Command::new("php").arg("-l").arg(&f));
        assert!(
            out.status.success(),
            "php -l {}: {}{}",
            f.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn plugin_rules_hold() {
    let out = run(Command::new("php").arg(plugin_dir().join("tests/rules.php")));
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The plugin's signature for the given inputs, computed by PHP.
fn php_sign(secret: &str, method: &str, host: &str, path: &str, ts: u64, nonce: &str, body: &str) -> String {
    let out = run(Command::new("php").arg(plugin_dir().join("tests/sign.php")).args([
        secret,
        method,
        host,
        path,
        &ts.to_string(),
        nonce,
        body,
    ]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("signature is text")
}

#[test]
fn plugin_signatures_are_strata_wire_signatures() {
    let cases = [
        (
            "0123456789abcdef0123",
            "POST",
            "10.0.0.2:9080",
            "/ban",
            1_700_000_000_123u64,
            "00112233445566778899aabbccddeeff",
            r#"[{"kind":"tag","value":"post:12"},{"kind":"tag","value":"list:home"}]"#,
        ),
        (
            "integration-test-secret-0123456789",
            "GET",
            "[::1]:9080",
            "/cluster",
            1,
            "ffeeddccbbaa99887766554433221100",
            "",
        ),
        (
            "a secret with spaces and ünïcode",
            "POST",
            "node1.example.internal",
            "/ban?wait=100",
            1_799_999_999_999,
            "0123456789abcdef0123456789abcdef",
            "{\"kind\":\"url\",\"value\":\"http://h/a b/\"}\n\nline",
        ),
    ];
    for (secret, method, host, path, ts, nonce, body) in cases {
        let req = auth::Signed {
            method,
            host,
            path,
            body: body.as_bytes(),
        };
        let rust = auth::sign(secret.as_bytes(), req, ts, nonce);
        let php = php_sign(secret, method, host, path, ts, nonce, body);
        assert_eq!(php, rust, "{method} {host}{path}");
        let got = auth::Received {
            timestamp: Some(&ts.to_string()),
            nonce: Some(nonce),
            signature: Some(&php),
        };
        assert!(auth::verify(secret.as_bytes(), req, got, ts, 30_000).is_ok());
    }
    // The key of the plugin's announcement is strata-wire's plugin_key.
    for secret in ["0123456789abcdef0123", "a secret with spaces and ünïcode"] {
        let out = run(Command::new("php")
            .arg(plugin_dir().join("tests/sign.php"))
            .arg("plugin-key")
            .arg(secret));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            auth::plugin_key(secret.as_bytes()),
            "{secret:?}"
        );
    }
    // The secret file is read as parse_secret reads it.
    let dir = std::env::temp_dir();
    for (i, contents) in [" 0123456789abcdef0123 \n\n", "\t0123456789abcde\n", "0123456789abcdef"]
        .iter()
        .enumerate()
    {
        let file = dir.join(format!("strata-plugin-secret-{}-{i}", std::process::id()));
        std::fs::write(&file, contents).unwrap();
        let out = run(Command::new("php")
            .arg(plugin_dir().join("tests/sign.php"))
            .arg("parse-secret")
            .arg(&file));
        let _ = std::fs::remove_file(&file);
        let expected = auth::parse_secret(contents).map_or("none".to_string(), |s| String::from_utf8(s).unwrap());
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{contents:?}");
    }
}

/// Runs `wordpress/strata/tests/wp.php ARGS` in the demo WordPress as www-data; returns its
/// JSON and what it logged.
pub(crate) fn wp_cli(args: &[&str]) -> (serde_json::Value, String) {
    let out = run(Command::new("runuser")
        .args(["-u", "www-data", "--", "env"])
        .arg(format!("HTTP_HOST={}", wp_host()))
        .arg("php")
        .arg(plugin_dir().join("tests/wp.php"))
        .args(args)
        .current_dir(std::env::temp_dir()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "wp.php {args:?} (as www-data, which needs root): {stdout}{stderr}"
    );
    let last = stdout.lines().last().unwrap_or("");
    let json = serde_json::from_str(last).unwrap_or_else(|e| panic!("wp.php {args:?} printed {stdout:?}: {e}"));
    (json, stderr)
}

pub(crate) fn wp(args: &[&str]) -> serde_json::Value {
    wp_cli(args).0
}

/// The plugin's node list pointed at test nodes; the previous options are put back on drop.
pub(crate) struct PluginNodes {
    previous: String,
}

impl PluginNodes {
    pub(crate) fn set(urls: &[String]) -> PluginNodes {
        let state = wp(&["state"]);
        assert!(
            state["version"].is_string(),
            "the Strata plugin is not installed in the demo WordPress: run scripts/wordpress.sh up ({state})"
        );
        assert!(
            state["secret_problem"].is_null(),
            "the plugin has no usable secret: {state}"
        );
        assert_eq!(state["nodes_constant"], false, "STRATA_NODES is defined: {state}");
        let mut args = vec!["set-nodes"];
        args.extend(urls.iter().map(String::as_str));
        PluginNodes {
            previous: wp(&args).to_string(),
        }
    }
}

impl Drop for PluginNodes {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "www-data", "--", "env"])
            .arg(format!("HTTP_HOST={}", wp_host()))
            .arg("php")
            .arg(plugin_dir().join("tests/wp.php"))
            .args(["restore", &self.previous])
            .current_dir(std::env::temp_dir())
            .output();
    }
}

/// Posts this test wrote, deleted for good on drop.
pub(crate) struct Posts(pub(crate) Vec<String>);

impl Drop for Posts {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = Command::new("runuser")
                .args(["-u", "www-data", "--", "env"])
                .arg(format!("HTTP_HOST={}", wp_host()))
                .arg("php")
                .arg(plugin_dir().join("tests/wp.php"))
                .args(["delete-post", id])
                .current_dir(std::env::temp_dir())
                .output();
        }
    }
}

/// The secret file the plugin in the demo WordPress signs with.
pub(crate) fn plugin_secret_file() -> String {
    let state = wp(&["state"]);
    state["secret_file"]
        .as_str()
        .unwrap_or_else(|| panic!("STRATA_SECRET_FILE is not defined in the demo WordPress: {state}"))
        .to_string()
}

/// Nodes that share the plugin's secret and keep pages long enough for a test to see
/// whether a ban, and nothing else, removed them.
async fn plugin_nodes(n: usize) -> Nodes {
    let secret_file = plugin_secret_file();
    let nodes = Nodes::start(&wp_origin(), n, move |_| {
        vec![
            ("cluster", format!("secret_file = {secret_file:?}")),
            ("cluster", "confirm_within = \"30s\"".to_string()),
            ("cache", "default_ttl = \"10m\"".to_string()),
        ]
    })
    .await;
    wait_confirmed(&nodes.admins(), Duration::from_secs(20)).await;
    nodes
}

/// The path of a post's link (`/slug/`).
pub(crate) fn path_of(post: &serde_json::Value) -> String {
    let link = post["link"].as_str().expect("post link");
    let rest = link.split_once("://").map_or(link, |(_, r)| r);
    rest.find('/').map_or("/".to_string(), |i| rest[i..].to_string())
}

/// GETs `path` from a node until it answers a HIT (it is stored), at most 10 s.
pub(crate) async fn prime(addr: std::net::SocketAddr, path: &str) -> String {
    poll(
        &format!("{path} to be a HIT on {addr}"),
        Duration::from_secs(10),
        || async move {
            let r = get_at(addr, &wp_host(), path, &[]).await;
            assert_eq!(r.status, 200, "GET {path} on {addr}");
            (r.x_cache() == "HIT").then(|| r.text())
        },
    )
    .await
}

/// Waits (at most 20 s) until `path` on the node shows `text`.
pub(crate) async fn wait_shows(addr: std::net::SocketAddr, path: &str, text: &str) {
    poll(
        &format!("{path} on {addr} to show {text:?}"),
        Duration::from_secs(20),
        || async move {
            let r = get_at(addr, &wp_host(), path, &[]).await;
            r.text().contains(text).then_some(())
        },
    )
    .await;
}

/// The newest entry of the plugin's log whose bans mention `needle`.
pub(crate) fn logged_sending(needle: &str) -> serde_json::Value {
    let log = wp(&["last-bans"]);
    log.as_array()
        .and_then(|l| {
            l.iter()
                .find(|e| e["bans"].as_str().is_some_and(|b| b.contains(needle)))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no sending of {needle} in the plugin's log: {log}"))
}

pub(crate) async fn bans_of_everything(nodes: &Nodes) -> f64 {
    let mut sum = 0.0;
    for admin in nodes.admins() {
        sum += metric_at(admin, "strata_proxy_bans_applied_total", "kind=\"all\"").await;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wp_cron_publishing_and_comment_approval_reach_every_node() {
    let _serial = SERIAL.lock().await;
    let nodes = plugin_nodes(3).await;
    let urls: Vec<String> = nodes.admins().iter().map(|a| format!("http://{a}")).collect();
    let _config = PluginNodes::set(&urls);
    // Words only: WordPress would turn digits-hyphen-digits into an en dash.
    let mark = format!("strataplugin{}x{}", std::process::id(), now_ms());
    let control = wp(&["post", &format!("{mark} control")]);
    let commented = wp(&["post", &format!("{mark} commented")]);
    let scheduled_title = format!("{mark} scheduled");
    let scheduled = wp(&["future-post", &scheduled_title, "3"]);
    let ids: Vec<String> = [&control, &commented, &scheduled]
        .iter()
        .map(|p| p["id"].to_string())
        .collect();
    let _posts = Posts(ids.clone());
    assert_eq!(scheduled["status"], "future", "{scheduled}");
    let comment_text = format!("{mark} approved comment");
    let comment = wp(&["pending-comment", &ids[1], &comment_text]).to_string();
    let commented_path = path_of(&commented);
    // The unrelated post as its REST item: every HTML page of the demo theme shows the
    // latest posts and comments in its footer (tags wp:recent-posts, wp:recent-comments), so
    // a publication or an approval rightly bans them all; the REST item shows neither.
    let control_path = format!("/wp-json/wp/v2/posts/{}", control["id"]);

    for node in &nodes.nodes {
        let home = prime(node.addr, "/").await;
        assert!(
            !home.contains(&scheduled_title),
            "the scheduled post is not on the home page yet"
        );
        prime(node.addr, &control_path).await;
        let page = prime(node.addr, &commented_path).await;
        assert!(!page.contains(&comment_text), "the pending comment is not shown");
    }
    let everything_before = bans_of_everything(&nodes).await;

    // (a) Real wp-cron publishes the post once its time has come: a request to the origin's
    // wp-cron.php, repeated while another run holds WordPress's cron lock.
    let cron = format!("{}/wp-cron.php", wp_origin());
    let id = ids[2].clone();
    poll("wp-cron to publish the scheduled post", Duration::from_secs(60), || {
        let (cron, id) = (cron.clone(), id.clone());
        async move {
            if wp(&["status", &id]) == "publish" {
                return Some(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            send(Method::GET, &cron, &[("host", wp_host())], Bytes::new()).await;
            None
        }
    })
    .await;
    for node in &nodes.nodes {
        wait_shows(node.addr, "/", &scheduled_title).await;
    }
    let sent = logged_sending(&format!("post:{},", ids[2]));
    assert_eq!(sent["ok"], true, "{sent}");
    let bans = sent["bans"].as_str().expect("bans");
    assert!(bans.contains("tag list:home"), "{sent}");
    assert!(
        !bans.contains("html") && !bans.starts_with("all"),
        "not a ban of every page: {sent}"
    );
    for node in &nodes.nodes {
        let r = get_at(node.addr, &wp_host(), &control_path, &[]).await;
        assert_eq!(r.x_cache(), "HIT", "an unrelated post on node {} stays cached", node.id);
    }

    // (b) A comment approved from PHP (no request through a node) shows on every node.
    wp(&["approve", comment.trim_matches('"')]);
    for node in &nodes.nodes {
        wait_shows(node.addr, &commented_path, &comment_text).await;
    }
    for node in &nodes.nodes {
        let r = get_at(node.addr, &wp_host(), &control_path, &[]).await;
        assert_eq!(r.x_cache(), "HIT", "an unrelated post on node {} stays cached", node.id);
    }
    let sent = logged_sending(&format!("post:{}, tag wp:recent-comments", ids[1]));
    assert_eq!(sent["ok"], true, "{sent}");
    assert_eq!(
        sent["count"], 3,
        "the post, the latest-comments blocks and the feeds only: {sent}"
    );
    assert_eq!(bans_of_everything(&nodes).await, everything_before, "no node flushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_skipped_and_recorded() {
    let _serial = SERIAL.lock().await;
    let nodes = plugin_nodes(2).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
        // Closed when dropped here: nothing listens on it.
    };
    let dead_url = format!("http://{dead}");
    let live_url = format!("http://{}", nodes[0].admin);
    let _config = PluginNodes::set(&[dead_url.clone(), live_url.clone()]);
    let mark = format!("strataplugin{}x{}", std::process::id(), now_ms());
    let post = wp(&["post", &format!("{mark} dead node")]);
    let id = post["id"].to_string();
    let _posts = Posts(vec![id.clone()]);
    let text = format!("{mark} comment past a dead node");
    let comment = wp(&["pending-comment", &id, &text]).to_string();
    let path = path_of(&post);
    for node in &nodes.nodes {
        prime(node.addr, &path).await;
    }

    let (_, logged) = wp_cli(&["approve", comment.trim_matches('"')]);
    assert!(
        logged.contains(&format!("not accepted by {dead_url}")),
        "the failure is in the error log: {logged}"
    );
    for node in &nodes.nodes {
        wait_shows(node.addr, &path, &text).await;
    }
    let sent = logged_sending(&format!("post:{id}, tag wp:recent-comments"));
    assert_eq!(sent["ok"], true, "{sent}");
    let tried = sent["nodes"].as_array().expect("nodes tried");
    assert_eq!(tried.len(), 2, "the dead node, then the live one: {sent}");
    assert_eq!(tried[0]["node"], dead_url.as_str());
    assert_eq!(tried[0]["status"], 0);
    assert!(
        tried[0]["error"].as_str().is_some_and(|e| e.contains("cannot connect")),
        "{sent}"
    );
    assert_eq!(tried[1]["node"], live_url.as_str());
    assert_eq!(tried[1]["status"], 200, "{sent}");
}
