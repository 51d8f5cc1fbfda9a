//! Which bans a successful write implies.
//!
//! RFC 9111 §4.4: an unsafe request that succeeded invalidates its target URI and the
//! same-host `Location` / `Content-Location`. RFC 9875: `Cache-Group-Invalidation` on the
//! response names groups (tags) to invalidate. And for an unmodified WordPress, which never
//! says what a write changed, the request itself tells: the post a form or REST call edits,
//! the post a comment is for. What cannot be narrowed (other admin writes, comment
//! moderation) bans every HTML page and list, safe rather than stale: unless the write's
//! answer says that the WordPress plugin reports that kind of change itself, with precise
//! bans ([`plugin`]); then the guess is left out and the write's own URL and post bans stay.
//!
//! Only a write that can have changed something bans beyond its own URLs ([`Trust`]): one
//! whose login WordPress confirmed, or whose answer proves the change (a comment's redirect
//! to `#comment-N`, a REST 2xx on a write method as WordPress routes it, an XML-RPC write
//! that is not a fault). Anything else an anonymous client sends bans at most the URLs of
//! RFC 9111 §4.4, so it cannot flush the cluster on purpose. Form fields and query
//! parameters are read as PHP reads them: the last of duplicates wins.

use http::{HeaderMap, Method, StatusCode};
use strata_wire::ban::{Ban, Kind};

use crate::tags::{self, HTML, LIST, RECENT_COMMENTS, RECENT_POSTS};
use plugin::{Change, Covers};

pub mod plugin;

/// Largest request body read to find out what a write touches.
pub const MAX_INSPECTED_BODY: u64 = 1 << 20;

/// admin-ajax.php actions that change nothing a visitor sees.
const READ_ONLY_AJAX: &[&str] = &[
    "heartbeat",
    "query-attachments",
    "fetch-list",
    "ajax-tag-search",
    "closed-postboxes",
    "hidden-columns",
    "meta-box-order",
    "wp-remove-post-lock",
    "sample-permalink",
    "dashboard-widgets",
    "get-community-events",
    "wp-compression-test",
    "logged-in",
    "rest-nonce",
    "health-check-site-status-result",
    "get-post-thumbnail-html",
    "parse-embed",
    "parse-media-shortcode",
    "oembed-cache",
    "find_posts",
    "menu-get-metabox",
    "menu-quick-search",
    "wp-link-ajax",
    "autocomplete-user",
    "get-revision-diffs",
    "press-this-add-category",
    "generate-password",
    "save-wporg-username",
    "nopriv_heartbeat",
];

/// A finished write, as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The site (`Host`).
    pub host: &'a str,
    /// Request path.
    pub path: &'a str,
    /// Request query.
    pub query: Option<&'a str>,
    /// Request headers.
    pub req: &'a HeaderMap,
    /// The request body when it was read (small urlencoded or XML bodies of the WordPress
    /// write endpoints), else `None`.
    pub body: Option<&'a [u8]>,
    /// The origin's status.
    pub status: StatusCode,
    /// The origin's response headers.
    pub resp: &'a HeaderMap,
    /// The start of the origin's response body when it was read (XML-RPC writes, whose
    /// faults come with a 200), else `None`.
    pub answer: Option<&'a [u8]>,
    /// WordPress confirmed the request's login cookies ([`needs_login_check`]).
    pub logged_in: bool,
    /// The kinds of change the WordPress plugin announced in the answer, with this
    /// cluster's key, that it reports itself ([`plugin::Covers::announced`]).
    pub plugin: Covers,
}

/// How far writes are trusted: `[bans] wordpress` and `[bans] trust_anonymous_writes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Apply the WordPress rules (tags of the posts and lists a write touches).
    pub wordpress: bool,
    /// Ban beyond a write's own URLs on any successful write, logged in or not (for sites
    /// whose anonymous actions change pages: polls, carts); off by default.
    pub anonymous_writes: bool,
}

/// Why a write may ban beyond its own URLs (metric and log label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// WordPress confirmed the login cookies it came with.
    LoggedIn,
    /// Its answer proves that something changed.
    Proof,
    /// `trust_anonymous_writes` is on.
    Operator,
}

impl Trust {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::LoggedIn => "logged-in",
            Trust::Proof => "proof",
            Trust::Operator => "operator",
        }
    }
}

/// What a finished request invalidates.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Invalidation {
    /// The bans, in order.
    pub bans: Vec<Ban>,
    /// Why the bans reach beyond the write's own URLs; `None` when they do not.
    pub trust: Option<Trust>,
}

/// Whether the body of a request is worth reading for [`bans_for`]: a body of a WordPress
/// write endpoint of known length up to [`MAX_INSPECTED_BODY`], or chunked (read up to that
/// much; a longer one goes on uninspected).
pub fn wants_body(method: &Method, path: &str, content_length: Option<u64>, chunked: bool) -> bool {
    let sized = match content_length {
        Some(n) => n > 0 && n <= MAX_INSPECTED_BODY,
        None => chunked,
    };
    !method.is_safe()
        && sized
        && matches!(
            path,
            "/wp-admin/post.php"
                | "/wp-admin/admin-ajax.php"
                | "/wp-admin/options.php"
                | "/wp-comments-post.php"
                | "/xmlrpc.php"
        )
}

/// The method WordPress's REST server acts on: `?_method=` (last one), else
/// `X-HTTP-Method-Override`, else the request's (`WP_REST_Server::serve_request`). Other
/// endpoints act on the request's method.
fn effective_method<'a>(w: &Write<'a>) -> std::borrow::Cow<'a, Method> {
    use std::borrow::Cow;
    if tags::rest_route(w.path, w.query).is_none() {
        return Cow::Borrowed(w.method);
    }
    let overridden = w.query.and_then(|q| php_param(q.as_bytes(), "_method")).or_else(|| {
        w.req
            .get("x-http-method-override")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    });
    match overridden {
        // An unknown or empty method matches no route: WordPress answers 404.
        Some(m) => Cow::Owned(Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET)),
        None => Cow::Borrowed(w.method),
    }
}

/// Whether a response sends its client to the login form: WordPress turned the request's
/// credentials away (`auth_redirect()`).
fn login_redirect(resp: &HeaderMap) -> bool {
    resp.get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|l| l.contains("/wp-login.php"))
}

/// Whether the request carries WordPress login cookies.
fn has_login_cookies(req: &HeaderMap) -> bool {
    crate::policy::cookie_names(req).any(|n| n.starts_with("wordpress_"))
}

/// Whether the origin's answer proves that the write changed something, whoever sent it: a
/// comment's redirect to `#comment-N`, a REST 2xx on a write method (as WordPress routes
/// it), an XML-RPC write answered without a fault.
fn proves_change(w: &Write<'_>) -> bool {
    if tags::rest_route(w.path, w.query).is_some() {
        return w.status.is_success() && !effective_method(w).is_safe();
    }
    match w.path {
        "/wp-comments-post.php" => w.status == StatusCode::FOUND && comment_anchor(w.resp),
        "/xmlrpc.php" => {
            w.status.is_success()
                && w.answer.is_some_and(|a| {
                    let text = String::from_utf8_lossy(a);
                    text.contains("<methodResponse>") && !text.contains("<fault>")
                })
        }
        _ => false,
    }
}

/// Whether a redirect goes to a comment (`#comment-123`), as WordPress's after a comment.
fn comment_anchor(resp: &HeaderMap) -> bool {
    resp.get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.rsplit_once("#comment-"))
        .is_some_and(|(_, id)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether [`bans_for`] would reach beyond the write's own URLs if WordPress confirmed its
/// login: an admin write (or nonce'd admin GET) that succeeded, came with login cookies,
/// was not sent to the login form, and that nothing else vouches for. The caller then asks
/// WordPress and sets [`Write::logged_in`].
pub fn needs_login_check(w: &Write<'_>, rules: Rules) -> bool {
    rules.wordpress
        && !rules.anonymous_writes
        && w.path.starts_with("/wp-admin/")
        && (w.status.is_success() || w.status.is_redirection())
        && (!w.method.is_safe() || admin_action_get(w))
        && has_login_cookies(w.req)
        && !login_redirect(w.resp)
        && !proves_change(w)
}

/// Whether the start of the origin's answer decides whether [`bans_for`] trusts a write:
/// a successful XML-RPC call of a method that writes (XML-RPC answers its faults with a
/// 200). The caller reads it and sets [`Write::answer`].
pub fn reads_answer(w: &Write<'_>, rules: Rules) -> bool {
    rules.wordpress
        && !rules.anonymous_writes
        && w.path == "/xmlrpc.php"
        && *w.method == Method::POST
        && w.status.is_success()
        && w.body.is_some_and(|b| !xmlrpc_tags(b).is_empty())
}

/// Why a finished write may ban beyond its own URLs, if it may.
fn trust(w: &Write<'_>, rules: Rules) -> Option<Trust> {
    if rules.anonymous_writes {
        Some(Trust::Operator)
    } else if proves_change(w) {
        Some(Trust::Proof)
    } else if w.logged_in && !login_redirect(w.resp) {
        Some(Trust::LoggedIn)
    } else {
        None
    }
}

/// Whether a request is a WordPress nonce-protected admin action done by GET (trash,
/// approve a comment…), which changes state though its method is safe.
fn admin_action_get(w: &Write<'_>) -> bool {
    let q = w.query.unwrap_or("").as_bytes();
    w.path.starts_with("/wp-admin/") && php_param(q, "_wpnonce").is_some() && php_param(q, "action").is_some()
}

/// The bans a finished request implies (none for reads and failures): its own URLs for
/// any successful unsafe request, and beyond them only when it is trusted ([`Trust`]).
pub fn bans_for(w: &Write<'_>, rules: Rules) -> Invalidation {
    let ok = w.status.is_success() || w.status.is_redirection();
    let unsafe_method = !effective_method(w).is_safe() || !w.method.is_safe();
    if !ok || !(unsafe_method || rules.wordpress && admin_action_get(w)) {
        return Invalidation::default();
    }
    let mut out: Vec<Ban> = Vec::new();
    let mut push = |kind: Kind, value: String| {
        let b = Ban {
            kind,
            value,
            host: Some(w.host.to_string()),
            // A write's bans are hard and exact: what an editor or a proven write changed
            // is never served stale, so never subject to `cache.list_refresh`.
            soft: false,
            bounded: false,
            id: 0,
            patch: None,
        };
        if !out.contains(&b) {
            out.push(b);
        }
    };
    if unsafe_method {
        // RFC 9111 §4.4.
        let target = match w.query {
            Some(q) => format!("{}?{q}", w.path),
            None => w.path.to_string(),
        };
        push(Kind::Url, target);
        for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
            if let Some(path) = w
                .resp
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| same_host_path(l, w.host))
            {
                push(Kind::Url, path);
            }
        }
        // RFC 9875.
        for v in w.resp.get_all("cache-group-invalidation") {
            if let Ok(s) = v.to_str() {
                for g in tags::header_tags("cache-group-invalidation", s) {
                    push(Kind::Tag, g);
                }
            }
        }
    }
    let trust = if rules.wordpress { trust(w, rules) } else { None };
    if trust.is_some() {
        for tag in wordpress_tags(w) {
            push(Kind::Tag, tag);
        }
    }
    Invalidation { bans: out, trust }
}

/// A same-host `Location` as a path (relative references resolve against the host).
fn same_host_path(location: &str, host: &str) -> Option<String> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(location.split('#').next().unwrap_or(location).to_string());
    }
    let uri: http::Uri = location.split('#').next()?.parse().ok()?;
    let authority = uri.authority()?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || !authority.as_str().eq_ignore_ascii_case(host) {
        return None;
    }
    Some(uri.path_and_query().map_or("/", |p| p.as_str()).to_string())
}

/// The value PHP reads for `name` from an urlencoded string (`$_GET`, `$_POST`): names and
/// values percent-decoded (`+` as a space), a name's leading spaces dropped and its spaces
/// and dots read as underscores, the last of duplicates winning. `None` when the name is
/// missing or its last value is an array (`name[]=…`), which PHP would not read as a string.
pub fn php_param(data: &[u8], name: &str) -> Option<String> {
    let mut found = None;
    for kv in data.split(|b| *b == b'&').filter(|kv| !kv.is_empty()) {
        let mut it = kv.splitn(2, |b| *b == b'=');
        let raw_key = decode(it.next().unwrap_or(b""));
        let key = raw_key.trim_start_matches(' ');
        let (base, array) = match key.find('[') {
            Some(i) if key[i..].contains(']') => (&key[..i], true),
            _ => (key, false),
        };
        if php_name(base) == name {
            found = (!array).then(|| decode(it.next().unwrap_or(b"")));
        }
    }
    found
}

/// A variable name as PHP registers it: spaces, dots and an unclosed `[` become `_`.
fn php_name(name: &str) -> String {
    name.chars()
        .map(|c| if matches!(c, ' ' | '.' | '[') { '_' } else { c })
        .collect()
}

/// A form field of an urlencoded body, as PHP reads it.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    php_param(body, name)
}

fn decode(b: &[u8]) -> String {
    let plus: Vec<u8> = b.iter().map(|c| if *c == b'+' { b' ' } else { *c }).collect();
    percent_encoding::percent_decode(&plus).decode_utf8_lossy().into_owned()
}

fn id(s: Option<String>) -> Option<u64> {
    s?.trim().parse().ok().filter(|n| *n > 0)
}

/// The tags a WordPress write touches.
fn wordpress_tags(w: &Write<'_>) -> Vec<String> {
    let post = |id: u64| vec![tags::post_tag(id), LIST.to_string(), RECENT_POSTS.to_string()];
    // What cannot be narrowed: every page, unless the plugin reports this kind of change.
    let guess = |change: Option<Change>| match change {
        Some(c) if w.plugin.contains(c) => Vec::new(),
        _ => vec![HTML.to_string(), LIST.to_string()],
    };
    let everything = || guess(None);
    let q = w.query.unwrap_or("");
    let body = w.body.unwrap_or(b"");
    if let Some(route) = tags::rest_route(w.path, w.query) {
        if effective_method(w).is_safe() {
            return Vec::new();
        }
        let route = route.trim_end_matches('/');
        return match tags::rest_item(w.path, w.query) {
            Some(n) => post(n),
            None if route == "/wp/v2/posts" || route == "/wp/v2/pages" => {
                vec![LIST.to_string(), RECENT_POSTS.to_string()]
            }
            None if route.starts_with("/wp/v2/") => guess(rest_change(route)),
            // Other namespaces (plugins, oEmbed, block renderer): nothing a page shows.
            None => Vec::new(),
        };
    }
    match w.path {
        "/wp-comments-post.php" => match id(form_field(body, "comment_post_ID")) {
            Some(n) => vec![tags::post_tag(n), LIST.to_string(), RECENT_COMMENTS.to_string()],
            None => everything(),
        },
        "/xmlrpc.php" => xmlrpc_tags(body),
        "/wp-admin/post.php" => {
            let from_body = id(form_field(body, "post_ID")).or_else(|| id(form_field(body, "post")));
            let from_query = id(php_param(q.as_bytes(), "post"));
            let from_location = w
                .resp
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.split_once('?'))
                .and_then(|(_, lq)| id(php_param(lq.as_bytes(), "post")));
            match from_body.or(from_query).or(from_location) {
                Some(n) => post(n),
                None => guess(Some(Change::Posts)),
            }
        }
        "/wp-admin/admin-ajax.php" => {
            // `$_REQUEST`: the body's fields over the query's.
            let action = form_field(body, "action").or_else(|| php_param(q.as_bytes(), "action"));
            match action.as_deref() {
                Some(a) if READ_ONLY_AJAX.contains(&a) => Vec::new(),
                Some("inline-save") => id(form_field(body, "post_ID")).map_or_else(|| guess(Some(Change::Posts)), post),
                Some("replyto-comment") => id(form_field(body, "comment_post_ID")).map_or_else(
                    || guess(Some(Change::Comments)),
                    |n| vec![tags::post_tag(n), LIST.to_string(), RECENT_COMMENTS.to_string()],
                ),
                a => guess(a.and_then(ajax_change)),
            }
        }
        p if p.starts_with("/wp-admin/") => guess(admin_change(p, q, body)),
        _ => Vec::new(),
    }
}

/// The kind of change a write to a core REST route (`/wp/v2/…`) is, as the plugin names
/// them; `None` for routes whose changes it does not report (users, media, templates,
/// global styles, other post types).
fn rest_change(route: &str) -> Option<Change> {
    let base = route.strip_prefix("/wp/v2/")?.split('/').next()?;
    Some(match base {
        "posts" | "pages" => Change::Posts,
        "comments" => Change::Comments,
        "categories" | "tags" => Change::Terms,
        "menus" | "menu-items" | "menu-locations" => Change::Menus,
        "widgets" | "sidebars" => Change::Widgets,
        "settings" => Change::Options,
        "plugins" => Change::Updates,
        _ => return None,
    })
}

/// The kind of change an `admin-ajax.php` action is; `None` for actions the plugin does
/// not report.
fn ajax_change(action: &str) -> Option<Change> {
    Some(match action {
        "delete-post" | "trash-post" | "untrash-post" | "inline-save" => Change::Posts,
        "dim-comment" | "delete-comment" | "edit-comment" | "replyto-comment" => Change::Comments,
        "add-tag" | "delete-tag" | "inline-save-tax" => Change::Terms,
        "add-menu-item" => Change::Menus,
        "save-widget" | "widgets-order" => Change::Widgets,
        "customize_save" => Change::Customizer,
        "update-plugin" | "update-theme" | "install-plugin" | "install-theme" | "delete-plugin" | "delete-theme" => {
            Change::Updates
        }
        _ => return None,
    })
}

/// Core settings pages whose every option the plugin judges (`option_page` of
/// `options.php`); other plugins' settings pages post there too, and their options are
/// none of the plugin's business.
const CORE_OPTION_PAGES: &[&str] = &["general", "writing", "reading", "discussion", "media"];

/// The kind of change a wp-admin screen's write is; `None` for screens whose changes the
/// plugin does not report (users, media, imports, tools, other plugins' screens). Post
/// lists count only for posts and pages: other post types (reusable blocks, templates)
/// are not the plugin's.
fn admin_change(path: &str, query: &str, body: &[u8]) -> Option<Change> {
    let screen = path.strip_prefix("/wp-admin/")?;
    Some(match screen {
        "edit-comments.php" | "comment.php" => Change::Comments,
        "post.php" | "post-new.php" => Change::Posts,
        "edit.php" => {
            let post_type = php_param(query.as_bytes(), "post_type");
            if !matches!(post_type.as_deref(), None | Some("post" | "page")) {
                return None;
            }
            Change::Posts
        }
        "edit-tags.php" | "term.php" => Change::Terms,
        "nav-menus.php" => Change::Menus,
        "widgets.php" => Change::Widgets,
        "customize.php" => Change::Customizer,
        "themes.php" => Change::Themes,
        "options-permalink.php" | "options-privacy.php" => Change::Options,
        "options.php" => {
            let page = form_field(body, "option_page")?;
            if !CORE_OPTION_PAGES.contains(&page.as_str()) {
                return None;
            }
            Change::Options
        }
        "plugins.php" | "update.php" | "update-core.php" => Change::Updates,
        "admin-post.php" if php_param(query.as_bytes(), "action").as_deref() == Some("strata_purge") => Change::Purges,
        _ => return None,
    })
}

/// What an XML-RPC call touches: a post edit or delete names its post; reads touch nothing;
/// anything else (new posts, pingbacks, comments, options) touches every page.
fn xmlrpc_tags(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let Some(method) = between(&text, "<methodName>", "</methodName>").map(str::trim) else {
        return vec![HTML.to_string(), LIST.to_string()];
    };
    let lower = method.to_ascii_lowercase();
    let read = lower.starts_with("system.")
        || lower.contains(".get")
        || lower == "demo.sayhello"
        || lower == "demo.addtwonumbers";
    if read {
        return Vec::new();
    }
    // Which parameter holds the post id: wp.* (blog, user, pass, id), metaWeblog/mt (id, …),
    // blogger.* (appkey, id, …).
    let index = match lower.as_str() {
        "wp.editpost" | "wp.deletepost" | "wp.editpage" | "wp.deletepage" => Some(3),
        "metaweblog.editpost" | "mt.publishpost" | "mt.setpostcategories" => Some(0),
        "metaweblog.deletepost" | "blogger.deletepost" | "blogger.editpost" => Some(1),
        _ => None,
    };
    let post = index.and_then(|i| {
        let param = text.split("<param>").nth(i + 1)?;
        let value = between(param, "<value>", "</value>")?;
        let mut digits = String::new();
        let mut in_tag = false;
        for c in value.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag && !c.is_whitespace() => digits.push(c),
                _ => {}
            }
        }
        digits.parse::<u64>().ok().filter(|n| *n > 0)
    });
    match post {
        Some(n) => vec![tags::post_tag(n), LIST.to_string(), RECENT_POSTS.to_string()],
        None => vec![HTML.to_string(), LIST.to_string()],
    }
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let end = s[start..].find(close)? + start;
    Some(&s[start..end])
}

#[cfg(test)]
mod tests;
