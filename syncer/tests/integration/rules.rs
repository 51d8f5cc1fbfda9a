//! WordPress's rules, end to end: a record applied by the syncer against the row PHP writes
//! for the same form, and each refusal with WordPress's status and message.

use std::time::Duration;

use strata_wire::comment::Status;

use crate::harness::*;

/// The fields that must be equal between a PHP row and a syncer row of the same form.
const SAME: &[&str] = &[
    "comment_author",
    "comment_author_email",
    "comment_author_url",
    "comment_author_IP",
    "comment_content",
    "comment_karma",
    "comment_approved",
    "comment_agent",
    "comment_type",
    "comment_parent",
    "user_id",
];

#[tokio::test(flavor = "multi_thread")]
async fn the_syncer_writes_the_row_php_writes() {
    // PHP's flood check is removed on the test site (mu-plugin): the syncer is told the same.
    let mut env = Env::new("flood_interval = \"0\"").await;
    let t = token();
    let php_post = open_post(&env.db, &format!("{t}php")).await;
    let mut our_post = open_post(&env.db, &format!("{t}ours")).await;
    if our_post == php_post {
        our_post = open_post(&env.db, &format!("{t}ours2")).await;
    }
    let author = format!("Zoë <i>O'Brien</i> & Co {t}");
    let email = format!("zoe+{t}@Example.test");
    let url = "example.test/~zoë/?a=1&b=2 x";
    let content = format!(
        "Hello {t} <b>bold</b> <script>alert(1)</script> & \"quotes\" 'single' \
         <a href=\"http://example.test/\" onclick=\"x()\" title=\"T\">link</a> &copy; &bogus; \
         <!-- note --> 5 > 3 < 4 <em>ü</em>\n\nsecond paragraph"
    );
    let post_id = php_post.to_string();
    let (status, location, body) = post_to_php(&[
        ("comment_post_ID", &post_id),
        ("author", &author),
        ("email", &email),
        ("url", url),
        ("comment", &content),
        ("comment_parent", "0"),
        ("submit", "Post Comment"),
    ])
    .await;
    assert_eq!(status, 302, "PHP refused the comment: {body}");
    let php_id: u64 = location
        .rsplit_once("#comment-")
        .and_then(|(_, id)| id.parse().ok())
        .unwrap_or_else(|| panic!("no comment id in {location:?}"));

    let mut r = record(our_post, &author, &email, url, &content, "127.0.0.1");
    r.consent = true;
    let seq = env.push(r).await;
    env.drain().await;
    let v = env.verdict(seq).await.expect("a verdict");
    assert_eq!(v.http, 302, "{v:?}");
    let ours = env.row(v.comment_id.unwrap()).await;
    let theirs = env.row(php_id).await;
    assert_eq!(v.status, strata_syncer::verdicts::status(&theirs["comment_approved"]));
    for col in SAME {
        assert_eq!(ours[*col], theirs[*col], "column {col} differs");
    }
    assert_eq!(ours["comment_post_ID"], our_post.to_string());
    // The dates: the site's timezone (UTC here) and the record's acceptance time.
    assert_eq!(ours["comment_date"].len(), 19);
    assert_eq!(ours["comment_date"], ours["comment_date_gmt"]);
    // The location is the permalink with the anchor, as PHP sends it.
    let permalink = location.split('#').next().unwrap();
    assert!(permalink.starts_with(&format!("http://{}/", wp_host())), "{location}");
    let ours_loc = v.location.unwrap();
    assert!(
        ours_loc.ends_with(&format!("/#comment-{}", v.comment_id.unwrap())),
        "{ours_loc}"
    );
    assert_eq!(v.cookie_author.as_deref(), Some(ours["comment_author"].as_str()));
    assert_eq!(v.cookie_email.as_deref(), Some(ours["comment_author_email"].as_str()));
    // comment_count is the approved count.
    let count = scalar(
        &env.db,
        "SELECT CAST(comment_count AS CHAR) FROM wp_posts WHERE ID = ?",
        vec![our_post.into()],
    )
    .await
    .unwrap();
    let approved = scalar(
        &env.db,
        "SELECT CAST(COUNT(*) AS CHAR) FROM wp_comments WHERE comment_post_ID = ? AND comment_approved = '1'",
        vec![our_post.into()],
    )
    .await
    .unwrap();
    assert_eq!(count, approved);
    // The published position and settings.
    assert_eq!(env.get("applied").await.as_deref(), Some(seq.to_string().as_str()));
    let key = strata_wire::comment::settings_key(&env.prefix);
    let sealed = env.mc.get(&key).await.unwrap().expect("settings published");
    let settings: strata_wire::comment::Settings =
        strata_wire::comment::unseal_json(&env.secret, &key, &sealed).expect("settings sealed with the cluster secret");
    assert_eq!(settings.home, format!("http://{}", wp_host()));
    assert_eq!(
        settings.cookiehash,
        strata_syncer::site::md5_hex(settings.home.as_bytes())
    );
    env.finish(Some(&t)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn held_comments_link_like_php() {
    let mut env = Env::new("flood_interval = \"0\"").await;
    let t = token();
    let php_post = open_post(&env.db, &format!("{t}a")).await;
    let mut our_post = open_post(&env.db, &format!("{t}b")).await;
    if our_post == php_post {
        our_post = open_post(&env.db, &format!("{t}c")).await;
    }
    // Two links reach the default comment_max_links (2): held for moderation.
    let content = format!("{t} see http://a.example.test/ and <a href=\"http://b.example.test/\">b</a>");
    let email = format!("held-{t}@example.test");
    let post_id = php_post.to_string();
    let (status, php_location, body) = post_to_php(&[
        ("comment_post_ID", &post_id),
        ("author", "Held Author"),
        ("email", &email),
        ("comment", &content),
    ])
    .await;
    assert_eq!(status, 302, "{body}");
    let seq = env
        .push(record(our_post, "Held Author", &email, "", &content, &ip_for(&t)))
        .await;
    env.drain().await;
    let v = env.verdict(seq).await.unwrap();
    assert_eq!(v.status, Status::Held);
    let id = v.comment_id.unwrap();
    let row = env.row(id).await;
    assert_eq!(row["comment_approved"], "0");
    let hash = php_wp_hash(&row["comment_date_gmt"]);
    let loc = v.location.unwrap();
    assert!(
        loc.ends_with(&format!("/?unapproved={id}&moderation-hash={hash}#comment-{id}")),
        "{loc}"
    );
    // PHP's location has the same shape.
    assert!(php_location.contains("/?unapproved=") && php_location.contains("&moderation-hash="));
    let php_id = php_location.rsplit_once("#comment-").unwrap().1;
    assert_eq!(
        env.row(php_id.parse().unwrap()).await["comment_content"],
        row["comment_content"]
    );
    env.finish(Some(&t)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_are_409() {
    let mut env = Env::new("").await;
    let t = token();
    let post = open_post(&env.db, &t).await;
    let content = format!("same words {t}");
    let email = format!("dup-{t}@example.test");
    let first = record(post, "Dup", &email, "", &content, &ip_for(&t));
    let mut second = first.clone();
    // Far enough apart not to be a flood.
    second.accepted_ms += 20_000;
    let a = env.push(first).await;
    let b = env.push(second).await;
    env.drain().await;
    assert_eq!(env.verdict(a).await.unwrap().status, Status::Approved);
    let v = env.verdict(b).await.unwrap();
    assert_eq!((v.status, v.http), (Status::Rejected, 409));
    assert_eq!(
        v.message,
        "Duplicate comment detected; it looks as though you&#8217;ve already said that!"
    );
    let n = scalar(
        &env.db,
        "SELECT CAST(COUNT(*) AS CHAR) FROM wp_comments WHERE comment_content = ?",
        vec![content.into()],
    )
    .await;
    assert_eq!(n.as_deref(), Some("1"));
    env.finish(Some(&t)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn floods_are_429_within_one_batch_and_across() {
    let mut env = Env::new("").await;
    let t = token();
    let post = open_post(&env.db, &t).await;
    let email = format!("flood-{t}@example.test");
    let first = record(post, "Fast", &email, "", &format!("one {t}"), &ip_for(&t));
    let mut second = record(
        post,
        "Fast",
        &email,
        "",
        &format!("two {t}"),
        &ip_for(&format!("{t}other")),
    );
    second.accepted_ms = first.accepted_ms + 1_000;
    let a = env.push(first.clone()).await;
    let b = env.push(second).await;
    env.drain().await;
    assert_eq!(env.verdict(a).await.unwrap().status, Status::Approved);
    let v = env.verdict(b).await.unwrap();
    assert_eq!((v.status, v.http), (Status::Rejected, 429));
    assert_eq!(v.message, "You are posting comments too quickly. Slow down.");
    // Same IP, other e-mail, in a later batch: still a flood.
    let mut third = record(
        post,
        "Fast",
        &format!("x{email}"),
        "",
        &format!("three {t}"),
        &ip_for(&t),
    );
    third.accepted_ms = first.accepted_ms + 2_000;
    let c = env.push(third).await;
    env.drain().await;
    assert_eq!(env.verdict(c).await.unwrap().http, 429);
    // 15 s later it is fine.
    let mut fourth = record(post, "Fast", &email, "", &format!("four {t}"), &ip_for(&t));
    fourth.accepted_ms = first.accepted_ms + 16_000;
    let d = env.push(fourth).await;
    env.drain().await;
    assert_eq!(env.verdict(d).await.unwrap().status, Status::Approved);
    assert!(env.metrics.render().contains("reason=\"flood\""));
    env.finish(Some(&t)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_protected_missing_and_invalid() {
    let mut env = Env::new("").await;
    let t = token();
    let closed = post_by_slug(&env.db, "closed-post").await;
    let protected = post_by_slug(&env.db, "protected-post").await;
    let open = open_post(&env.db, &t).await;
    let email = format!("edge-{t}@example.test");
    let c = env
        .push(record(
            closed,
            "A",
            &email,
            "",
            &format!("c {t}"),
            &ip_for(&format!("{t}1")),
        ))
        .await;
    let p = env
        .push(record(
            protected,
            "A",
            &email,
            "",
            &format!("p {t}"),
            &ip_for(&format!("{t}2")),
        ))
        .await;
    let m = env
        .push(record(
            999_999_999,
            "A",
            &email,
            "",
            &format!("m {t}"),
            &ip_for(&format!("{t}3")),
        ))
        .await;
    let e = env
        .push(record(
            open,
            "A",
            "not-an-email",
            "",
            &format!("e {t}"),
            &ip_for(&format!("{t}4")),
        ))
        .await;
    let r = env
        .push(record(
            open,
            "",
            &email,
            "",
            &format!("r {t}"),
            &ip_for(&format!("{t}5")),
        ))
        .await;
    let mut reply = record(
        open,
        "A",
        &format!("r{email}"),
        "",
        &format!("reply {t}"),
        &ip_for(&format!("{t}6")),
    );
    reply.parent = 999_999_999;
    let reply = env.push(reply).await;
    env.drain().await;
    let v = env.verdict(c).await.unwrap();
    assert_eq!(
        (v.status, v.http, v.message.as_str()),
        (Status::Rejected, 403, "Sorry, comments are closed for this item.")
    );
    for s in [p, m] {
        let v = env.verdict(s).await.unwrap();
        assert_eq!((v.status, v.http, v.message.as_str()), (Status::Ignored, 200, ""));
    }
    let v = env.verdict(e).await.unwrap();
    assert_eq!(
        (v.http, v.message.as_str()),
        (200, "<strong>Error:</strong> Please enter a valid email address.")
    );
    let v = env.verdict(r).await.unwrap();
    assert_eq!(
        (v.http, v.message.as_str()),
        (200, "<strong>Error:</strong> Please fill the required fields.")
    );
    // WordPress 6.1 keeps a reply to a missing parent, as a top-level comment; 6.2+ refuses it.
    let v = env.verdict(reply).await.unwrap();
    let wp = strata_syncer::config::read_wp_version(std::path::Path::new("/usr/share/wordpress"))
        .ok()
        .and_then(|v| strata_syncer::config::parse_wp_version(&v))
        .unwrap_or((6, 9));
    if wp >= (6, 2) {
        assert_eq!((v.status, v.http), (Status::Rejected, 403));
    } else {
        assert_eq!(v.status, Status::Approved);
        assert_eq!(env.row(v.comment_id.unwrap()).await["comment_parent"], "0");
    }
    let n = scalar(
        &env.db,
        "SELECT CAST(COUNT(*) AS CHAR) FROM wp_comments WHERE comment_author_email = ?",
        vec![email.into()],
    )
    .await;
    assert_eq!(n.as_deref(), Some("0"));
    tokio::time::sleep(Duration::from_millis(1)).await;
    env.finish(Some(&t)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tricky_forms_store_like_php() {
    let mut env = Env::new("flood_interval = \"0\"").await;
    let t = token();
    let forms: Vec<(String, String, String, String)> = vec![
        (
            format!("Back\\slash \"Q\" {t}"),
            format!("o'neil+{t}@example.test"),
            "https://example.test/a'b\"c\\d".to_string(),
            format!("{t} quotes ' \" and back\\slashes \\' \\\" and a NUL\0byte"),
        ),
        (
            format!("<b>Bold</b> & <script>x</script>Name {t}"),
            format!("  SPACED-{t}@Example.TEST  "),
            "javascript:alert(1)".to_string(),
            format!(
                "{t} <a href=\"http://t.example.test/\" target=\"_blank\" rel=\"me\">targeted</a> \
                 <a href=\"javascript:alert(1)\">js</a> &#150; &#x41; &bogus; <!-- c ---> <?php x ?>"
            ),
        ),
        (
            format!("Ünïcødé 名前 %41%42 {t}"),
            format!("uni-{t}@example.test"),
            "www.example.test/päth".to_string(),
            format!("{t} mail someone@example.test or www.example.test; <code>http://code.example.test</code>"),
        ),
        (
            format!("Link {t}"),
            format!("link-{t}@example.test"),
            String::new(),
            format!(
                "{t} (http://paren.example.test/x_(y)) and <a href=\"http://{}/own/\">own</a>",
                wp_host()
            ),
        ),
    ];
    for (i, (author, email, url, content)) in forms.iter().enumerate() {
        let php_post = open_post(&env.db, &format!("{t}php{i}")).await;
        let mut our_post = open_post(&env.db, &format!("{t}ours{i}")).await;
        if our_post == php_post {
            our_post = open_post(&env.db, &format!("{t}ours{i}b")).await;
        }
        let post_id = php_post.to_string();
        let (status, location, body) = post_to_php(&[
            ("comment_post_ID", &post_id),
            ("author", author),
            ("email", email),
            ("url", url),
            ("comment", content),
        ])
        .await;
        assert_eq!(status, 302, "form {i}: PHP refused it: {body}");
        let php_id: u64 = location.rsplit_once("#comment-").unwrap().1.parse().unwrap();
        let seq = env
            .push(record(our_post, author, email, url, content, "127.0.0.1"))
            .await;
        env.drain().await;
        let v = env.verdict(seq).await.expect("a verdict");
        assert_eq!(v.http, 302, "form {i}: {v:?}");
        let ours = env.row(v.comment_id.unwrap()).await;
        let theirs = env.row(php_id).await;
        for col in SAME {
            assert_eq!(ours[*col], theirs[*col], "form {i}: column {col} differs");
        }
    }
    env.finish(Some(&t)).await;
}
