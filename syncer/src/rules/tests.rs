use super::*;
use std::collections::HashMap;

fn options(pairs: &[(&str, &str)]) -> Options {
    let mut rows: HashMap<String, String> = [
        ("home", "http://127.0.0.1:8080"),
        ("require_name_email", "1"),
        ("comment_max_links", "2"),
        ("comment_previously_approved", "0"),
        ("comment_moderation", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in pairs {
        rows.insert(k.to_string(), v.to_string());
    }
    Options::from_rows(&rows)
}

fn post(status: &str, comment_status: &str) -> Post {
    Post {
        id: 1,
        post_type: "post".into(),
        status: status.into(),
        comment_status: comment_status.into(),
        has_password: false,
        date_gmt: Some(1_000_000),
    }
}

fn sub<'a>(author: &'a str, email: &'a str, content: &'a str) -> Submission<'a> {
    Submission {
        post_id: 1,
        author,
        email,
        url: "",
        content,
    }
}

fn comment(content: &str) -> Filtered {
    Filtered {
        author: "Ann".into(),
        email: "ann@example.test".into(),
        url: "".into(),
        content: content.into(),
        ip: "192.0.2.1".into(),
        agent: "Mozilla".into(),
    }
}

const V61: WpVersion = (6, 1);

#[test]
fn post_state_decides_first() {
    let o = options(&[]);
    let s = sub("Ann", "ann@example.test", "hi");
    let now = 2_000_000;
    assert_eq!(
        check_submission(s, None, &o, now),
        Err(Refusal::Ignored("post_not_found"))
    );
    assert_eq!(
        check_submission(s, Some(&post("private", "open")), &o, now),
        Err(Refusal::Ignored("private_post"))
    );
    assert_eq!(
        check_submission(s, Some(&post("publish", "closed")), &o, now),
        Err(CLOSED)
    );
    // Closed beats trashed.
    assert_eq!(
        check_submission(s, Some(&post("trash", "closed")), &o, now),
        Err(CLOSED)
    );
    assert_eq!(
        check_submission(s, Some(&post("trash", "open")), &o, now),
        Err(Refusal::Ignored("trashed_post"))
    );
    assert_eq!(
        check_submission(s, Some(&post("draft", "open")), &o, now),
        Err(Refusal::Ignored("post_not_public"))
    );
    let mut protected = post("publish", "open");
    protected.has_password = true;
    assert_eq!(
        check_submission(s, Some(&protected), &o, now),
        Err(Refusal::Ignored("password_protected"))
    );
    assert_eq!(check_submission(s, Some(&post("publish", "open")), &o, now), Ok(()));
}

#[test]
fn old_posts_close_when_configured() {
    let o = options(&[("close_comments_for_old_posts", "1"), ("close_comments_days_old", "14")]);
    let p = post("publish", "open");
    let s = sub("Ann", "ann@example.test", "hi");
    assert_eq!(check_submission(s, Some(&p), &o, 1_000_000 + 14 * 86_400), Ok(()));
    assert_eq!(check_submission(s, Some(&p), &o, 1_000_001 + 14 * 86_400), Err(CLOSED));
    let mut page = p.clone();
    page.post_type = "page".into();
    assert_eq!(check_submission(s, Some(&page), &o, 1_000_001 + 14 * 86_400), Ok(()));
    let forever = options(&[
        ("close_comments_for_old_posts", "1"),
        ("close_comments_days_old", "999999999999999"),
    ]);
    assert_eq!(check_submission(s, Some(&p), &forever, 2_000_000_000), Ok(()));
}

#[test]
fn fields_are_checked_in_order() {
    let o = options(&[]);
    let p = post("publish", "open");
    let check = |s| check_submission(s, Some(&p), &o, 0);
    assert_eq!(check(sub("", "ann@example.test", "hi")), Err(REQUIRED_FIELDS));
    assert_eq!(check(sub("Ann", "", "")), Err(REQUIRED_FIELDS));
    assert_eq!(check(sub("Ann", "nope", "hi")), Err(INVALID_EMAIL));
    assert_eq!(check(sub("Ann", "ann@example.test", "")), Err(EMPTY_COMMENT));
    let long = "x".repeat(246);
    assert_eq!(check(sub(&long, "ann@example.test", "hi")), Err(AUTHOR_TOO_LONG));
    let content = "é".repeat(32_763); // 65526 bytes
    assert_eq!(check(sub("Ann", "ann@example.test", &content)), Err(CONTENT_TOO_LONG));
    let registration = options(&[("comment_registration", "1")]);
    assert_eq!(
        check_submission(sub("Ann", "ann@example.test", "hi"), Some(&p), &registration, 0),
        Err(MUST_LOG_IN)
    );
    let optional = options(&[("require_name_email", "")]);
    assert_eq!(check_submission(sub("", "", "hi"), Some(&p), &optional, 0), Ok(()));
}

#[test]
fn parents_are_judged_like_php() {
    assert!(parent_is_approved(Some("1")));
    for s in [None, Some("0"), Some("spam"), Some("trash")] {
        assert!(!parent_is_approved(s));
    }
    assert_eq!(normalize_parent(7, Some("1")), 7);
    assert_eq!(normalize_parent(7, Some("0")), 7);
    assert_eq!(normalize_parent(7, Some("spam")), 0);
    assert_eq!(normalize_parent(7, None), 0);
    assert_eq!(normalize_parent(0, Some("1")), 0);
}

#[test]
fn approval_follows_check_comment() {
    let o = options(&[]);
    let h = History::default();
    assert_eq!(approval(&comment("plain"), &o, h, V61), "1");
    // Two links (one made by make_clickable) reach comment_max_links = 2.
    let two = "<a href=\"http://a.test/\" rel=\"nofollow ugc\">a</a> and http://b.test/";
    assert_eq!(approval(&comment(two), &o, h, V61), "0");
    assert_eq!(approval(&comment("one http://a.test/ link"), &o, h, V61), "1");
    let moderated = options(&[("comment_moderation", "1")]);
    assert_eq!(approval(&comment("plain"), &moderated, h, V61), "0");
    let keys = options(&[("moderation_keys", "  \nViagra\n")]);
    assert_eq!(approval(&comment("buy VIAGRA now"), &keys, h, V61), "0");
    assert_eq!(approval(&comment("fine"), &keys, h, V61), "1");
    let disallowed = options(&[("disallowed_keys", "192.0.2.")]);
    assert_eq!(approval(&comment("fine"), &disallowed, h, V61), "trash");
    let hidden = options(&[("disallowed_keys", "spamword")]);
    assert_eq!(approval(&comment("spam<b></b>word"), &hidden, h, V61), "trash");
}

#[test]
fn previously_approved_authors_pass() {
    let o = options(&[("comment_previously_approved", "1")]);
    assert_eq!(approval(&comment("hi"), &o, History::default(), V61), "0");
    let known = History {
        previously_approved: true,
    };
    assert_eq!(approval(&comment("hi"), &o, known, V61), "1");
    let mut anonymous = comment("hi");
    anonymous.email.clear();
    assert_eq!(approval(&anonymous, &o, known, V61), "0");
}
