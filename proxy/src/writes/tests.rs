use super::*;
use plugin::Change;

const WP: Rules = Rules {
    wordpress: true,
    anonymous_writes: false,
};
const RFC_ONLY: Rules = Rules {
    wordpress: false,
    anonymous_writes: false,
};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    h
}

/// A write by a visitor whose login WordPress confirmed.
fn write<'a>(
    method: &'a Method,
    path: &'a str,
    query: Option<&'a str>,
    body: Option<&'a [u8]>,
    resp: &'a HeaderMap,
) -> Write<'a> {
    static LOGGED_IN: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
    Write {
        method,
        host: "site.test",
        path,
        query,
        req: LOGGED_IN.get_or_init(|| headers(&[("cookie", "wordpress_logged_in_abc=admin%7C1%7Cx")])),
        body,
        status: StatusCode::FOUND,
        resp,
        answer: None,
        logged_in: true,
        plugin: Covers::NONE,
    }
}

/// The same write from an anonymous client.
fn anonymous(w: Write<'_>) -> Write<'_> {
    static NONE: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
    Write {
        req: NONE.get_or_init(HeaderMap::new),
        logged_in: false,
        ..w
    }
}

fn tags_of(bans: &[Ban]) -> Vec<&str> {
    bans.iter()
        .filter(|b| b.kind == Kind::Tag)
        .map(|b| b.value.as_str())
        .collect()
}

fn urls_of(bans: &[Ban]) -> Vec<&str> {
    bans.iter()
        .filter(|b| b.kind == Kind::Url)
        .map(|b| b.value.as_str())
        .collect()
}

#[test]
fn rfc_9111_target_location_and_content_location() {
    let resp = headers(&[
        ("location", "http://site.test/done/#x"),
        ("content-location", "http://elsewhere.test/x"),
        ("cache-group-invalidation", "\"g1\", \"g2\""),
    ]);
    let inv = bans_for(
        &anonymous(write(&Method::POST, "/form/", Some("a=1"), None, &resp)),
        RFC_ONLY,
    );
    assert_eq!(urls_of(&inv.bans), ["/form/?a=1", "/done/"]);
    assert_eq!(tags_of(&inv.bans), ["g1", "g2"]);
    assert!(inv
        .bans
        .iter()
        .all(|b| b.host.as_deref() == Some("site.test") && !b.soft));
    assert_eq!(inv.trust, None);
}

#[test]
fn reads_and_failures_ban_nothing() {
    let resp = HeaderMap::new();
    assert_eq!(
        bans_for(
            &write(&Method::GET, "/wp-admin/post.php", Some("post=5"), None, &resp),
            WP
        ),
        Invalidation::default()
    );
    let mut w = write(&Method::POST, "/wp-admin/post.php", None, Some(b"post_ID=5"), &resp);
    w.status = StatusCode::FORBIDDEN;
    assert_eq!(bans_for(&w, WP), Invalidation::default());
}

#[test]
fn wordpress_post_edits_name_their_post() {
    let resp = HeaderMap::new();
    let body = b"_wpnonce=x&action=editpost&post_ID=42&post_title=Hi";
    let inv = bans_for(&write(&Method::POST, "/wp-admin/post.php", None, Some(body), &resp), WP);
    assert_eq!(tags_of(&inv.bans), ["post:42", "list", "wp:recent-posts"]);
    assert_eq!(inv.trust, Some(Trust::LoggedIn));
    // Without the body, the redirect names the post.
    let resp = headers(&[("location", "post.php?post=43&action=edit&message=1")]);
    let inv = bans_for(&write(&Method::POST, "/wp-admin/post.php", None, None, &resp), WP);
    assert_eq!(tags_of(&inv.bans), ["post:43", "list", "wp:recent-posts"]);
    // Trash by nonce'd GET link.
    let resp = HeaderMap::new();
    let inv = bans_for(
        &write(
            &Method::GET,
            "/wp-admin/post.php",
            Some("post=44&action=trash&_wpnonce=abc"),
            None,
            &resp,
        ),
        WP,
    );
    assert_eq!(tags_of(&inv.bans), ["post:44", "list", "wp:recent-posts"]);
}

#[test]
fn rest_writes() {
    let resp = HeaderMap::new();
    let t = |m: &Method, path: &str, q: Option<&str>| {
        let mut w = anonymous(write(m, path, q, None, &resp));
        w.status = StatusCode::OK;
        tags_of(&bans_for(&w, WP).bans)
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        t(&Method::POST, "/wp-json/wp/v2/posts/7", None),
        ["post:7", "list", "wp:recent-posts"]
    );
    assert_eq!(
        t(&Method::DELETE, "/wp-json/wp/v2/pages/8", None),
        ["post:8", "list", "wp:recent-posts"]
    );
    assert_eq!(
        t(&Method::POST, "/", Some("rest_route=/wp/v2/posts/9")),
        ["post:9", "list", "wp:recent-posts"]
    );
    assert_eq!(
        t(&Method::POST, "/wp-json/wp/v2/posts", None),
        ["list", "wp:recent-posts"]
    );
    assert_eq!(t(&Method::POST, "/wp-json/wp/v2/comments/3", None), ["html", "list"]);
    assert!(t(&Method::POST, "/wp-json/contact-form/v1/send", None).is_empty());
    // A read, as WordPress routes it, however it was sent.
    assert!(t(&Method::POST, "/wp-json/wp/v2/types", Some("_method=GET")).is_empty());
    assert!(t(
        &Method::POST,
        "/wp-json/wp/v2/posts/7",
        Some("_method=PATCH&_method=GET")
    )
    .is_empty());
    // A write, however it was sent: `GET` overridden to `DELETE`.
    let del = headers(&[("x-http-method-override", "delete")]);
    let mut w = anonymous(write(&Method::GET, "/wp-json/wp/v2/posts/7", None, None, &resp));
    w.req = &del;
    w.status = StatusCode::OK;
    let inv = bans_for(&w, WP);
    assert_eq!(tags_of(&inv.bans), ["post:7", "list", "wp:recent-posts"]);
    assert_eq!(inv.trust, Some(Trust::Proof));
    // `_method` wins over the header, as in WordPress.
    let mut w = anonymous(write(
        &Method::POST,
        "/wp-json/wp/v2/posts/7",
        Some("_method=GET"),
        None,
        &resp,
    ));
    w.req = &del;
    w.status = StatusCode::OK;
    assert_eq!(bans_for(&w, WP).trust, None);
}

#[test]
fn a_failed_or_refused_rest_call_proves_nothing() {
    let resp = HeaderMap::new();
    let mut w = anonymous(write(&Method::POST, "/wp-json/wp/v2/posts/7", None, None, &resp));
    w.status = StatusCode::UNAUTHORIZED;
    assert_eq!(bans_for(&w, WP), Invalidation::default());
    w.status = StatusCode::FOUND;
    assert_eq!(bans_for(&w, WP).trust, None, "a redirect is no REST success");
}

#[test]
fn comments_and_admin_ajax() {
    let to_comment = headers(&[("location", "http://site.test/p/#comment-77")]);
    let inv = bans_for(
        &anonymous(write(
            &Method::POST,
            "/wp-comments-post.php",
            None,
            Some(b"comment=Hi+there&comment_post_ID=12&comment_parent=0"),
            &to_comment,
        )),
        WP,
    );
    assert_eq!(tags_of(&inv.bans), ["post:12", "list", "wp:recent-comments"]);
    assert_eq!(inv.trust, Some(Trust::Proof));
    let resp = HeaderMap::new();
    let t = |path: &str, body: &[u8]| {
        tags_of(&bans_for(&write(&Method::POST, path, None, Some(body), &resp), WP).bans)
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    assert!(t("/wp-admin/admin-ajax.php", b"action=heartbeat&data=x").is_empty());
    assert!(
        t("/wp-admin/admin-ajax.php", b"action=dim-comment&action=heartbeat").is_empty(),
        "PHP reads the last action"
    );
    assert_eq!(
        t("/wp-admin/admin-ajax.php", b"action=heartbeat&action=dim-comment"),
        ["html", "list"]
    );
    assert_eq!(
        t("/wp-admin/admin-ajax.php", b"action=inline-save&post_ID=5"),
        ["post:5", "list", "wp:recent-posts"]
    );
    assert_eq!(
        t("/wp-admin/admin-ajax.php", b"action=dim-comment&id=9"),
        ["html", "list"]
    );
    assert_eq!(t("/wp-admin/options.php", b"blogname=x"), ["html", "list"]);
    assert!(t("/wp-login.php", b"log=a&pwd=b").is_empty());
}

#[test]
fn anonymous_writes_ban_only_their_own_urls() {
    let resp = HeaderMap::new();
    // Not a comment (no redirect to one), an unknown AJAX action, an admin form: each
    // succeeded, none proves a change, nobody logged in.
    for (path, body) in [
        ("/wp-comments-post.php", &b"not a comment"[..]),
        ("/wp-comments-post.php", b"comment_post_ID=12&comment=x"),
        ("/wp-admin/admin-ajax.php", b"action=x&action=heartbeat"),
        ("/wp-admin/admin-post.php", b""),
        ("/wp-admin/options.php", b"blogname=x"),
    ] {
        let mut w = anonymous(write(&Method::POST, path, None, Some(body), &resp));
        w.status = StatusCode::OK;
        let inv = bans_for(&w, WP);
        assert_eq!(inv.trust, None, "{path}");
        assert_eq!(tags_of(&inv.bans), Vec::<&str>::new(), "{path}");
        assert_eq!(urls_of(&inv.bans), [path], "{path}");
    }
    // The operator may trust them all again.
    let mut w = anonymous(write(&Method::POST, "/wp-admin/admin-post.php", None, None, &resp));
    w.status = StatusCode::OK;
    let all = Rules {
        anonymous_writes: true,
        ..WP
    };
    let inv = bans_for(&w, all);
    assert_eq!(
        (tags_of(&inv.bans), inv.trust),
        (vec!["html", "list"], Some(Trust::Operator))
    );
}

#[test]
fn login_cookies_are_checked_only_when_they_decide() {
    let resp = HeaderMap::new();
    let w = write(&Method::POST, "/wp-admin/admin-post.php", None, None, &resp);
    assert!(needs_login_check(&w, WP));
    assert!(!needs_login_check(&anonymous(w), WP), "no cookies, nothing to check");
    let all = Rules {
        anonymous_writes: true,
        ..WP
    };
    assert!(!needs_login_check(&w, all));
    // Sent to the login form: WordPress already said no.
    let to_login = headers(&[("location", "http://site.test/wp-login.php?redirect_to=x&reauth=1")]);
    let w = write(&Method::POST, "/wp-admin/options.php", None, None, &to_login);
    assert!(!needs_login_check(&w, WP));
    assert_eq!(bans_for(&w, WP).trust, None);
    // Outside wp-admin the answer decides.
    let w = write(&Method::POST, "/wp-json/wp/v2/posts/1", None, None, &resp);
    assert!(!needs_login_check(&w, WP));
    // A login cookie WordPress did not confirm is no login.
    let mut w = write(&Method::POST, "/wp-admin/admin-post.php", None, None, &resp);
    w.logged_in = false;
    assert_eq!(bans_for(&w, WP).trust, None);
}

#[test]
fn xmlrpc_writes_are_trusted_when_answered_without_a_fault() {
    let body = b"<?xml version=\"1.0\"?><methodCall><methodName>wp.editPost</methodName><params><param><value><int>1</int></value></param><param><value>u</value></param><param><value>p</value></param><param><value><int>77</int></value></param></params></methodCall>";
    let resp = HeaderMap::new();
    let mut w = anonymous(write(&Method::POST, "/xmlrpc.php", None, Some(body), &resp));
    w.status = StatusCode::OK;
    w.answer = Some(b"<?xml version=\"1.0\"?><methodResponse><fault><value>403</value></fault></methodResponse>");
    assert_eq!(bans_for(&w, WP).trust, None);
    w.answer = Some(b"<?xml version=\"1.0\"?><methodResponse><params><param><value><boolean>1</boolean></value></param></params></methodResponse>");
    let inv = bans_for(&w, WP);
    assert_eq!(tags_of(&inv.bans), ["post:77", "list", "wp:recent-posts"]);
    w.answer = None;
    assert_eq!(bans_for(&w, WP).trust, None, "an unread answer proves nothing");
}

#[test]
fn xmlrpc_calls() {
    let call = |method: &str, params: &[&str]| {
        let ps: String = params
            .iter()
            .map(|p| format!("<param><value>{p}</value></param>"))
            .collect();
        format!(
            "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{ps}</params></methodCall>"
        )
    };
    let t = |body: String| xmlrpc_tags(body.as_bytes());
    assert_eq!(
        t(call(
            "wp.editPost",
            &[
                "<int>1</int>",
                "<string>u</string>",
                "<string>p</string>",
                "<int>77</int>"
            ]
        )),
        ["post:77", "list", "wp:recent-posts"]
    );
    assert_eq!(
        t(call(
            "metaWeblog.editPost",
            &["<string>78</string>", "<string>u</string>"]
        )),
        ["post:78", "list", "wp:recent-posts"]
    );
    assert!(t(call("wp.getPosts", &[])).is_empty());
    assert_eq!(
        t(call("pingback.ping", &["<string>http://a/</string>"])),
        ["html", "list"]
    );
    assert_eq!(t("garbage".into()), ["html", "list"]);
}

#[test]
fn parameters_are_read_as_php_reads_them() {
    assert_eq!(php_param(b"a=1&a=2", "a").as_deref(), Some("2"));
    assert_eq!(php_param(b"%61ction=x+y%21", "action").as_deref(), Some("x y!"));
    assert_eq!(php_param(b"post.ID=5", "post_ID").as_deref(), Some("5"));
    assert_eq!(php_param(b"+post ID=6", "post_ID").as_deref(), Some("6"));
    assert_eq!(php_param(b"a=1&a[]=2", "a"), None, "the last is an array");
    assert_eq!(php_param(b"a[]=2&a=1", "a").as_deref(), Some("1"));
    assert_eq!(php_param(b"a[=1", "a_").as_deref(), Some("1"));
    assert_eq!(php_param(b"a", "a").as_deref(), Some(""));
    assert_eq!(php_param(b"", "a"), None);
}

#[test]
fn only_small_or_chunked_bodies_of_write_endpoints_are_read() {
    assert!(wants_body(&Method::POST, "/wp-admin/post.php", Some(100), false));
    assert!(!wants_body(&Method::POST, "/wp-admin/post.php", None, false));
    assert!(wants_body(&Method::POST, "/wp-comments-post.php", None, true));
    assert!(!wants_body(
        &Method::POST,
        "/wp-admin/post.php",
        Some(MAX_INSPECTED_BODY + 1),
        false
    ));
    assert!(!wants_body(&Method::POST, "/contact/", Some(100), false));
    assert!(!wants_body(&Method::GET, "/xmlrpc.php", Some(100), false));
}

#[test]
fn the_plugins_announcement_replaces_the_guess_for_the_kinds_it_covers() {
    let resp = HeaderMap::new();
    let all = Change::ALL.iter().fold(Covers::NONE, |c, k| c.with(*k));
    let comments_only = Covers::NONE.with(Change::Comments);
    let t = |m: &Method, path: &str, q: Option<&str>, body: &[u8], plugin: Covers| {
        let mut w = write(m, path, q, Some(body), &resp);
        w.plugin = plugin;
        let inv = bans_for(&w, WP);
        (
            tags_of(&inv.bans).iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            urls_of(&inv.bans).iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    let guess = vec!["html".to_string(), "list".to_string()];
    // Moderation: a nonce'd GET link, admin-ajax, REST, bulk actions.
    let moderation: [(&Method, &str, Option<&str>, &[u8]); 5] = [
        (
            &Method::GET,
            "/wp-admin/comment.php",
            Some("c=5&action=approvecomment&_wpnonce=abc"),
            b"",
        ),
        (
            &Method::POST,
            "/wp-admin/admin-ajax.php",
            None,
            b"action=dim-comment&id=5&_wpnonce=abc",
        ),
        (
            &Method::POST,
            "/wp-admin/admin-ajax.php",
            None,
            b"action=delete-comment&id=5&spam=1",
        ),
        (&Method::POST, "/wp-json/wp/v2/comments/5", None, b"{}"),
        (
            &Method::GET,
            "/wp-admin/edit-comments.php",
            Some("action=trash&delete_comments%5B%5D=5&_wpnonce=abc"),
            b"",
        ),
    ];
    for (m, path, q, body) in moderation {
        assert_eq!(t(m, path, q, body, Covers::NONE).0, guess, "{path} without the plugin");
        let (tags, _) = t(m, path, q, body, comments_only);
        assert!(tags.is_empty(), "{path} with the plugin: {tags:?}");
    }
    // The write's own URL bans stay.
    let (tags, urls) = t(&Method::POST, "/wp-json/wp/v2/comments/5", None, b"{}", comments_only);
    assert!(tags.is_empty());
    assert_eq!(urls, ["/wp-json/wp/v2/comments/5"]);
    // Other kinds are still guessed when only comments are covered, and each kind is
    // recognised when covered.
    let kinds: [(&Method, &str, Option<&str>, &[u8]); 9] = [
        (&Method::POST, "/wp-json/wp/v2/categories/3", None, b"{}"),
        (&Method::POST, "/wp-admin/edit-tags.php", None, b"action=editedtag"),
        (&Method::POST, "/wp-json/wp/v2/menus/4", None, b"{}"),
        (&Method::POST, "/wp-admin/admin-ajax.php", None, b"action=save-widget"),
        (
            &Method::POST,
            "/wp-admin/admin-ajax.php",
            None,
            b"action=customize_save",
        ),
        (
            &Method::GET,
            "/wp-admin/themes.php",
            Some("action=activate&stylesheet=x&_wpnonce=abc"),
            b"",
        ),
        (
            &Method::POST,
            "/wp-admin/options.php",
            None,
            b"option_page=reading&posts_per_rss=3",
        ),
        (
            &Method::GET,
            "/wp-admin/edit.php",
            Some("action=trash&post%5B%5D=4&_wpnonce=abc"),
            b"",
        ),
        (
            &Method::GET,
            "/wp-admin/admin-post.php",
            Some("action=strata_purge&what=all&_wpnonce=abc"),
            b"",
        ),
    ];
    for (m, path, q, body) in kinds {
        assert_eq!(
            t(m, path, q, body, comments_only).0,
            guess,
            "{path} {q:?} is not comments"
        );
        assert!(t(m, path, q, body, all).0.is_empty(), "{path} {q:?} is covered");
    }
    // Writes the plugin does not report are guessed whatever it covers: users, media,
    // another plugin's settings, reusable blocks, other plugins' admin-post actions.
    let not_covered: [(&Method, &str, Option<&str>, &[u8]); 5] = [
        (&Method::POST, "/wp-admin/profile.php", None, b"description=x"),
        (&Method::POST, "/wp-json/wp/v2/media/9", None, b"{}"),
        (
            &Method::POST,
            "/wp-admin/options.php",
            None,
            b"option_page=seo-plugin&x=1",
        ),
        (
            &Method::GET,
            "/wp-admin/edit.php",
            Some("post_type=wp_block&action=trash&post%5B%5D=4&_wpnonce=abc"),
            b"",
        ),
        (
            &Method::GET,
            "/wp-admin/admin-post.php",
            Some("action=other_purge&_wpnonce=abc"),
            b"",
        ),
    ];
    for (m, path, q, body) in not_covered {
        assert_eq!(t(m, path, q, body, all).0, guess, "{path} {q:?} is not the plugin's");
    }
    // What the rules name exactly is kept: a post edit, a reply that names its post.
    assert_eq!(
        t(&Method::POST, "/wp-admin/post.php", None, b"post_ID=42", all).0,
        ["post:42", "list", "wp:recent-posts"]
    );
    assert_eq!(
        t(
            &Method::POST,
            "/wp-admin/admin-ajax.php",
            None,
            b"action=replyto-comment&comment_post_ID=12",
            all
        )
        .0,
        ["post:12", "list", "wp:recent-comments"]
    );
}
