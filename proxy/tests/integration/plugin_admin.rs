//! Admin changes made through a node while the WordPress plugin reports them: the write
//! rules leave out their guess (a ban of every HTML page and list) for the kinds the
//! plugin's `X-Strata-Plugin` answer covers with this cluster's key, and the plugin's own
//! bans make exactly the affected pages fresh on every node. Nodes with another secret see
//! the same answers without a matching key and still ban broadly.
//!
//! Every test logs in as `admin` through a node, drives wp-admin or the REST API there,
//! holds [`SERIAL`] (it points the plugin's node list at its nodes), runs its nodes with
//! shielding off (each node's own cache is what it looks at), and puts back what it changed
//! in WordPress even when it fails. Unaffected pages are REST items where possible: every
//! HTML page of the demo theme shows the latest posts and comments, which changes elsewhere
//! (other tests, other developers) may ban at any moment.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Method;

use crate::harness::{get_at, metric_at, poll, secret_file, send, wait_confirmed, wp_host, wp_origin, Resp};
use crate::nodes::Nodes;
use crate::plugin::{
    bans_of_everything, logged_sending, path_of, plugin_secret_file, prime, wait_shows, wp, PluginNodes, Posts, SERIAL,
};

/// `n` nodes with `secret` (a file), long TTLs and shielding off.
async fn nodes_with(secret: String, n: usize) -> Nodes {
    let nodes = Nodes::start(&wp_origin(), n, move |_| {
        vec![
            ("cluster", format!("secret_file = {secret:?}")),
            ("cluster", "confirm_within = \"30s\"".to_string()),
            ("cluster", "shield = false".to_string()),
            ("cache", "default_ttl = \"10m\"".to_string()),
        ]
    })
    .await;
    wait_confirmed(&nodes.admins(), Duration::from_secs(20)).await;
    nodes
}

/// Nodes the plugin reports to: they share its secret, and its node list names them.
async fn reporting_nodes(n: usize) -> (Nodes, PluginNodes) {
    let nodes = nodes_with(plugin_secret_file(), n).await;
    let urls: Vec<String> = nodes.admins().iter().map(|a| format!("http://{a}")).collect();
    let config = PluginNodes::set(&urls);
    (nodes, config)
}

/// A logged-in WordPress admin session.
struct Admin {
    cookie: String,
}

impl Admin {
    /// Logs in as admin through the node at `addr`.
    async fn login(addr: SocketAddr) -> Admin {
        let test_cookie = "wordpress_test_cookie=WP%20Cookie%20check";
        let r = send(
            Method::POST,
            &format!("http://{addr}/wp-login.php"),
            &[
                ("host", wp_host()),
                ("content-type", "application/x-www-form-urlencoded".into()),
                ("cookie", test_cookie.into()),
            ],
            Bytes::from_static(b"log=admin&pwd=admin&wp-submit=Log+In&redirect_to=%2Fwp-admin%2F&testcookie=1"),
        )
        .await;
        assert_eq!(r.status, 302, "login as admin through {addr}: {}", r.text());
        let mut cookies = vec![test_cookie.to_string()];
        for v in r.headers.get_all("set-cookie") {
            let pair = v.to_str().unwrap_or("").split(';').next().unwrap_or("").trim();
            if !pair.is_empty() && !pair.ends_with('=') {
                cookies.push(pair.to_string());
            }
        }
        let cookie = cookies.join("; ");
        assert!(cookie.contains("wordpress_logged_in_"), "logged in: {cookie}");
        Admin { cookie }
    }

    async fn request(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Resp {
        let mut all = vec![("host", wp_host()), ("cookie", self.cookie.clone())];
        all.extend(headers.iter().cloned());
        let r = send(method, &format!("http://{addr}{path}"), &all, body).await;
        assert!(
            r.header("x-strata-plugin").is_empty(),
            "the node removes the plugin's announcement from {path}"
        );
        r
    }

    async fn get(&self, addr: SocketAddr, path: &str) -> Resp {
        self.request(addr, Method::GET, path, &[], Bytes::new()).await
    }

    /// An admin-ajax.php or options.php form.
    async fn form(&self, addr: SocketAddr, path: &str, body: &str) -> Resp {
        let ct = ("content-type", "application/x-www-form-urlencoded".to_string());
        self.request(addr, Method::POST, path, &[ct], Bytes::from(body.to_string()))
            .await
    }

    /// A REST write with a fresh REST nonce; asserts it succeeded.
    async fn rest(&self, addr: SocketAddr, method: Method, route: &str, json: serde_json::Value) -> Resp {
        let nonce = self.get(addr, "/wp-admin/admin-ajax.php?action=rest-nonce").await;
        assert_eq!(nonce.status, 200, "REST nonce: {}", nonce.text());
        let headers = [
            ("content-type", "application/json".to_string()),
            ("x-wp-nonce", nonce.text().trim().to_string()),
        ];
        let r = self
            .request(
                addr,
                method,
                &format!("/wp-json{route}"),
                &headers,
                Bytes::from(json.to_string()),
            )
            .await;
        assert!(r.status.is_success(), "REST {route}: {} {}", r.status, r.text());
        r
    }
}

/// The hex digits that follow `marker` in `html`.
fn hex_after(html: &str, marker: &str) -> String {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} is not in the page: {}", &html[..html.len().min(2000)]));
    html[at + marker.len()..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect()
}

/// Waits (at most 20 s) until `path` on the node no longer shows `text`.
async fn wait_hides(addr: SocketAddr, path: &str, text: &str) {
    poll(
        &format!("{path} on {addr} to stop showing {text:?}"),
        Duration::from_secs(20),
        || async move {
            let r = get_at(addr, &wp_host(), path, &[]).await;
            (r.status == 200 && !r.text().contains(text)).then_some(())
        },
    )
    .await;
}

/// Waits (at most 20 s) until `path` on the node is not a HIT: something banned it.
async fn wait_banned(addr: SocketAddr, path: &str) {
    poll(
        &format!("{path} on {addr} to be banned"),
        Duration::from_secs(20),
        || async move { (get_at(addr, &wp_host(), path, &[]).await.x_cache() != "HIT").then_some(()) },
    )
    .await;
}

/// Asserts that `path` is still a HIT on every node.
async fn still_hit(nodes: &Nodes, path: &str, after: &str) {
    for node in &nodes.nodes {
        let r = get_at(node.addr, &wp_host(), path, &[]).await;
        assert_eq!(r.x_cache(), "HIT", "{path} on node {} after {after}", node.id);
    }
}

/// A comment's status in WordPress.
fn comment_status(id: &str) -> String {
    wp(&["comment-status", id]).as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_in_wp_admin_bans_the_post_and_latest_comments_not_every_page() {
    let _serial = SERIAL.lock().await;
    let (nodes, _config) = reporting_nodes(3).await;
    // Nodes the plugin does not report to: its answers' key is not theirs.
    let others = nodes_with(secret_file(), 2).await;
    let mark = format!("stratamoderation{}x{}", std::process::id(), crate::harness::now_ms());
    let post = wp(&["post", &format!("{mark} moderated")]);
    let control = wp(&["post", &format!("{mark} control")]);
    let _posts = Posts(vec![post["id"].to_string(), control["id"].to_string()]);
    let text = format!("{mark} moderated comment");
    let comment = wp(&["pending-comment", &post["id"].to_string(), &text])
        .to_string()
        .trim_matches('"')
        .to_string();
    let page = path_of(&post);
    // Lists that no comment changes (the demo theme's HTML pages all show the latest
    // comments), and an unrelated post as its REST item.
    let list = "/wp-json/wp/v2/posts?per_page=2&_fields=id".to_string();
    let item = format!("/wp-json/wp/v2/posts/{}", control["id"]);
    for addr in nodes.nodes.iter().chain(&others.nodes).map(|n| n.addr) {
        assert!(
            !prime(addr, &page).await.contains(&text),
            "the pending comment is not shown"
        );
        prime(addr, &list).await;
        prime(addr, &item).await;
    }
    let everything_before = bans_of_everything(&nodes).await;
    let a = nodes[0].addr;
    let admin = Admin::login(a).await;
    let screen = admin
        .get(
            a,
            &format!("/wp-admin/edit-comments.php?p={}&comment_status=all", post["id"]),
        )
        .await;
    assert_eq!(screen.status, 200, "{}", screen.text());
    let screen = screen.text();
    let approve_nonce = hex_after(
        &screen,
        &format!("comment.php?c={comment}&#038;action=approvecomment&#038;_wpnonce="),
    );
    let delete_nonce = hex_after(
        &screen,
        &format!("comment.php?c={comment}&#038;action=spamcomment&#038;_wpnonce="),
    );
    let bulk_nonce = hex_after(&screen, "name=\"_wpnonce\" value=\"");

    // (1) Approve: the row action's link (a nonce'd GET of comment.php).
    let r = admin
        .get(
            a,
            &format!("/wp-admin/comment.php?c={comment}&action=approvecomment&_wpnonce={approve_nonce}"),
        )
        .await;
    assert_eq!(r.status, 302, "approve: {}", r.text());
    assert_eq!(comment_status(&comment), "approved");
    for node in &nodes.nodes {
        wait_shows(node.addr, &page, &text).await;
    }
    still_hit(&nodes, &list, "an approval in edit-comments.php").await;
    still_hit(&nodes, &item, "an approval in edit-comments.php").await;
    let sent = logged_sending(&format!("tag post:{}, tag wp:recent-comments", post["id"]));
    assert_eq!(sent["ok"], true, "{sent}");
    assert_eq!(sent["count"], 3, "post, latest comments, feeds: {sent}");

    // (2) Unapprove through a node the plugin does not report to (admin-ajax dim-comment):
    // the reporting nodes get the plugin's bans, the others guess as before: every list.
    let r = admin
        .form(
            others[0].addr,
            "/wp-admin/admin-ajax.php",
            &format!("action=dim-comment&id={comment}&new=unapproved&_wpnonce={approve_nonce}"),
        )
        .await;
    assert_eq!(r.status, 200, "dim-comment: {}", r.text());
    assert_eq!(comment_status(&comment), "unapproved");
    for node in &nodes.nodes {
        wait_hides(node.addr, &page, &text).await;
    }
    still_hit(&nodes, &list, "an unapproval through another cluster's node").await;
    for node in &others.nodes {
        wait_banned(node.addr, &list).await;
        wait_hides(node.addr, &page, &text).await;
    }

    // (3) Approve over REST.
    let route = format!("/wp/v2/comments/{comment}");
    admin
        .rest(a, Method::POST, &route, serde_json::json!({ "status": "approved" }))
        .await;
    for node in &nodes.nodes {
        wait_shows(node.addr, &page, &text).await;
    }
    still_hit(&nodes, &list, "an approval over REST").await;

    // (4) Spam: admin-ajax delete-comment.
    let r = admin
        .form(
            a,
            "/wp-admin/admin-ajax.php",
            &format!("action=delete-comment&id={comment}&spam=1&_wpnonce={delete_nonce}"),
        )
        .await;
    assert_eq!(r.status, 200, "delete-comment spam: {}", r.text());
    assert_eq!(comment_status(&comment), "spam");
    for node in &nodes.nodes {
        wait_hides(node.addr, &page, &text).await;
    }
    still_hit(&nodes, &list, "marking as spam").await;

    // (5) Approved again over REST, then trashed with edit-comments.php's bulk action.
    admin
        .rest(a, Method::POST, &route, serde_json::json!({ "status": "approved" }))
        .await;
    for node in &nodes.nodes {
        wait_shows(node.addr, &page, &text).await;
    }
    let r = admin
        .get(
            a,
            &format!(
                "/wp-admin/edit-comments.php?action=trash&delete_comments%5B%5D={comment}&_wpnonce={bulk_nonce}&_wp_http_referer=%2Fwp-admin%2Fedit-comments.php"
            ),
        )
        .await;
    assert_eq!(r.status, 302, "bulk trash: {}", r.text());
    assert_eq!(comment_status(&comment), "trash");
    for node in &nodes.nodes {
        wait_hides(node.addr, &page, &text).await;
    }
    still_hit(&nodes, &list, "a bulk trash").await;
    still_hit(&nodes, &item, "five moderation steps").await;
    assert_eq!(bans_of_everything(&nodes).await, everything_before, "no node flushed");
}

/// A category this test made, deleted on drop.
struct Category(String);

impl Drop for Category {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| wp(&["delete-term", &self.0]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_term_edit_freshens_its_posts_and_lists_and_leaves_other_posts_cached() {
    let _serial = SERIAL.lock().await;
    let (nodes, _config) = reporting_nodes(2).await;
    let mark = format!("strataterm{}x{}", std::process::id(), crate::harness::now_ms());
    let term = wp(&["category", &format!("{mark} before")]);
    let _term = Category(term["id"].to_string());
    let filed = wp(&["post", &format!("{mark} filed"), &term["id"].to_string()]);
    let other = wp(&["post", &format!("{mark} other")]);
    let _posts = Posts(vec![filed["id"].to_string(), other["id"].to_string()]);
    // The term as a list (the demo's category archives answer 404: its rewrite rules have
    // none), which a term edit bans with every list.
    let listed = format!("/wp-json/wp/v2/categories?include={}&_fields=name", term["id"]);
    let filed_path = path_of(&filed);
    let other_path = path_of(&other);
    for node in &nodes.nodes {
        assert!(prime(node.addr, &listed).await.contains(&format!("{mark} before")));
        assert!(
            prime(node.addr, &filed_path).await.contains(&format!("{mark} before")),
            "a post page names its categories"
        );
        prime(node.addr, &other_path).await;
    }
    let a = nodes[0].addr;
    let admin = Admin::login(a).await;
    let renamed = format!("{mark} after");
    admin
        .rest(
            a,
            Method::POST,
            &format!("/wp/v2/categories/{}", term["id"]),
            serde_json::json!({ "name": renamed }),
        )
        .await;
    for node in &nodes.nodes {
        wait_shows(node.addr, &listed, &renamed).await;
        wait_shows(node.addr, &filed_path, &renamed).await;
    }
    let sent = logged_sending(&format!("tag in-term:{}", term["id"]));
    assert_eq!(sent["ok"], true, "{sent}");
    // The HTML page of a post in another category: only the demo theme's latest-posts and
    // latest-comments blocks could change it, and a term edit changes neither.
    still_hit(&nodes, &other_path, "a term edit").await;
}

/// A navigation menu this test made, deleted on drop.
struct Menu(String);

impl Drop for Menu {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| wp(&["delete-menu", &self.0]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_menu_edit_bans_html_pages_only() {
    let _serial = SERIAL.lock().await;
    let (nodes, _config) = reporting_nodes(2).await;
    let mark = format!("stratamenu{}x{}", std::process::id(), crate::harness::now_ms());
    // A menu in no location: renaming it changes no page, so other tests' pages stay the
    // same; the plugin still bans every HTML page, as for any menu.
    let menu = wp(&["menu", &format!("{mark} menu")]).to_string();
    let _menu = Menu(menu.clone());
    let post = wp(&["post", &format!("{mark} post")]);
    let _posts = Posts(vec![post["id"].to_string()]);
    let page = path_of(&post);
    let item = format!("/wp-json/wp/v2/posts/{}", post["id"]);
    let feed = "/feed/";
    for node in &nodes.nodes {
        prime(node.addr, &page).await;
        prime(node.addr, &item).await;
        prime(node.addr, feed).await;
    }
    let a = nodes[0].addr;
    let admin = Admin::login(a).await;
    admin
        .rest(
            a,
            Method::POST,
            &format!("/wp/v2/menus/{menu}"),
            serde_json::json!({ "name": format!("{mark} renamed") }),
        )
        .await;
    for node in &nodes.nodes {
        wait_banned(node.addr, &page).await;
    }
    let sent = logged_sending("tag html");
    assert_eq!(sent["ok"], true, "{sent}");
    // Not every list (the rules' guess): feeds and REST items show no menu.
    still_hit(&nodes, feed, "a menu edit").await;
    still_hit(&nodes, &item, "a menu edit").await;
}

/// Options this test changed, put back on drop.
struct Options(Vec<(String, String)>);

impl Drop for Options {
    fn drop(&mut self) {
        for (name, value) in &self.0 {
            let _ = std::panic::catch_unwind(|| wp(&["set-option", name, value]));
        }
    }
}

fn items_in(feed: &str) -> usize {
    feed.matches("<item>").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_setting_saved_in_wp_admin_freshens_the_feeds() {
    let _serial = SERIAL.lock().await;
    let (nodes, _config) = reporting_nodes(2).await;
    // posts_per_rss shows in feeds only, which no other test reads.
    let names = [
        "posts_per_page",
        "posts_per_rss",
        "rss_use_excerpt",
        "show_on_front",
        "page_on_front",
        "page_for_posts",
        "blog_public",
    ];
    let current = wp(&["get-options"].iter().chain(&names).copied().collect::<Vec<_>>());
    let value = |name: &str| match &current[name] {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let before = value("posts_per_rss");
    let _restore = Options(vec![("posts_per_rss".into(), before.clone())]);
    let fewer = if before == "2" { "3" } else { "2" };
    let feed = "/feed/";
    for node in &nodes.nodes {
        let text = prime(node.addr, feed).await;
        assert_ne!(
            items_in(&text),
            fewer.parse::<usize>().unwrap(),
            "{before} posts per feed first"
        );
    }
    let a = nodes[0].addr;
    let admin = Admin::login(a).await;
    let screen = admin.get(a, "/wp-admin/options-reading.php").await;
    let nonce = hex_after(&screen.text(), "name=\"_wpnonce\" value=\"");
    let mut body = format!(
        "option_page=reading&action=update&_wpnonce={nonce}&_wp_http_referer=%2Fwp-admin%2Foptions-reading.php"
    );
    for name in names {
        let v = if name == "posts_per_rss" {
            fewer.to_string()
        } else {
            value(name)
        };
        body.push_str(&format!("&{name}={}", v.replace(' ', "+")));
    }
    let r = admin.form(a, "/wp-admin/options.php", &body).await;
    assert_eq!(r.status, 302, "options.php: {}", r.text());
    assert_eq!(wp(&["get-options", "posts_per_rss"])["posts_per_rss"], fewer);
    for node in &nodes.nodes {
        poll(
            &format!("the feed on {} to list {fewer} posts", node.addr),
            Duration::from_secs(20),
            || async move {
                let r = get_at(node.addr, &wp_host(), feed, &[]).await;
                (items_in(&r.text()) == fewer.parse::<usize>().unwrap_or(0)).then_some(())
            },
        )
        .await;
    }
    let sent = logged_sending("tag list");
    assert_eq!(sent["ok"], true, "{sent}");
}

/// The `href` of the admin bar item `id`, as a path (`&amp;` decoded).
fn admin_bar_link(html: &str, id: &str) -> String {
    // WordPress writes the admin bar's attributes in single quotes.
    let at = [format!("id='wp-admin-bar-{id}'"), format!("id=\"wp-admin-bar-{id}\"")]
        .iter()
        .find_map(|m| html.find(m.as_str()))
        .unwrap_or_else(|| panic!("no admin bar item {id} in the page"));
    let rest = &html[at..];
    let start = rest.find("href=").expect("href") + 5;
    let quote = rest[start..].chars().next().expect("quote");
    let start = start + 1;
    let href = &rest[start..start + rest[start..].find(quote).expect("href end")];
    let href = href.replace("&amp;", "&").replace("&#038;", "&");
    let after_scheme = href.split_once("://").map_or(href.as_str(), |(_, r)| r);
    after_scheme[after_scheme.find('/').unwrap_or(0)..].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_bar_purges_the_page_or_everything_on_every_node() {
    let _serial = SERIAL.lock().await;
    let (nodes, _config) = reporting_nodes(2).await;
    let mark = format!("stratapurge{}x{}", std::process::id(), crate::harness::now_ms());
    let post = wp(&["post", &format!("{mark} purged")]);
    let other = wp(&["post", &format!("{mark} other")]);
    let _posts = Posts(vec![post["id"].to_string(), other["id"].to_string()]);
    let page = path_of(&post);
    let item = format!("/wp-json/wp/v2/posts/{}", other["id"]);
    for node in &nodes.nodes {
        prime(node.addr, &page).await;
        prime(node.addr, &item).await;
    }
    let a = nodes[0].addr;
    let admin = Admin::login(a).await;
    let viewed = admin.get(a, &page).await;
    assert_eq!(viewed.status, 200);
    let viewed = viewed.text();
    let purge_page = admin_bar_link(&viewed, "strata-purge-page");
    let purge_all = admin_bar_link(&viewed, "strata-purge-all");

    let r = admin.get(a, &purge_page).await;
    assert_eq!(r.status, 302, "Purge this page: {}", r.text());
    for node in &nodes.nodes {
        wait_banned(node.addr, &page).await;
    }
    still_hit(&nodes, &item, "Purge this page").await;
    let sent = logged_sending(&format!("url http://{}{page}", wp_host()));
    assert_eq!(sent["ok"], true, "{sent}");

    let mut before = Vec::new();
    for admin_addr in nodes.admins() {
        before.push(metric_at(admin_addr, "strata_proxy_bans_applied_total", "kind=\"all\"").await);
    }
    let r = admin.get(a, &purge_all).await;
    assert_eq!(r.status, 302, "Purge everything: {}", r.text());
    for node in &nodes.nodes {
        wait_banned(node.addr, &item).await;
    }
    for (admin_addr, before) in nodes.admins().into_iter().zip(before) {
        let after = metric_at(admin_addr, "strata_proxy_bans_applied_total", "kind=\"all\"").await;
        assert!(after > before, "{admin_addr} applied a ban of everything");
    }
}
