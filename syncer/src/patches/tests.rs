use super::*;
use crate::site::SiteTz;

fn options() -> Options {
    let rows: HashMap<String, String> = [
        ("home", "http://127.0.0.1:8080"),
        ("date_format", "F j, Y"),
        ("time_format", "H:i"),
        ("timezone_string", "UTC"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Options::from_rows(&rows)
}

fn row(id: u64, date: &str) -> Row {
    Row {
        id,
        parent: 0,
        author: "Grace Hopper".into(),
        email: "Grace.Hopper@example.com ".into(),
        url: String::new(),
        date: date.into(),
        date_gmt: date.into(),
        replies: false,
    }
}

#[test]
fn a_comment_is_printed_as_the_site_prints_it() {
    let o = options();
    let p = Printer {
        options: &o,
        tz: o.timezone(),
        old_links: false,
    };
    let s = p.shown(&row(601, "2024-12-16 22:34:53"), "<p>Hi</p>\n").unwrap();
    let f = |k: &str| s.fields[k].as_str();
    // As WordPress 6 and Twenty Twenty-One printed comment 601 of the demo site.
    assert_eq!(
        f(fields::AVATAR),
        "http://0.gravatar.com/avatar/c404ee70be8231ce56d64b5497d91b14"
    );
    assert_eq!(f(fields::DATE_ISO), "2024-12-16T22:34:53+00:00");
    assert_eq!(f(fields::DATE), "December 16, 2024");
    assert_eq!(f(fields::TIME), "22:34");
    assert_eq!(f(fields::AUTHOR_LINK), "Grace Hopper");
    assert_eq!(f(fields::CONTENT), "<p>Hi</p>\n");
}

#[test]
fn a_named_timezone_gives_the_offset_of_the_comments_date() {
    let mut o = options();
    o.timezone_string = "Europe/Paris".into();
    let p = Printer {
        options: &o,
        tz: o.timezone(),
        old_links: false,
    };
    assert!(matches!(p.tz, SiteTz::Named(_)));
    let winter = p.shown(&row(1, "2024-12-16 22:34:53"), "").unwrap();
    let summer = p.shown(&row(1, "2024-07-16 22:34:53"), "").unwrap();
    assert_eq!(winter.fields[fields::DATE_ISO], "2024-12-16T22:34:53+01:00");
    assert_eq!(summer.fields[fields::DATE_ISO], "2024-07-16T22:34:53+02:00");
}

#[test]
fn author_links() {
    let home = "example.org";
    assert_eq!(author_link("Ann", "", home, false), "Ann");
    assert_eq!(author_link("Ann", "http://", home, false), "Ann");
    assert_eq!(
        author_link("Ann", "https://ann.example/?a=1&b=2", home, false),
        "<a href=\"https://ann.example/?a=1&#038;b=2\" class=\"url\" rel=\"ugc external nofollow\">Ann</a>"
    );
    assert_eq!(
        author_link("Ann", "http://Example.org/about/", home, false),
        "<a href=\"http://Example.org/about/\" class=\"url\" rel=\"ugc\">Ann</a>"
    );
    // Before WordPress 6.2.
    assert_eq!(
        author_link("Ann", "http://Example.org/about/", home, true),
        "<a href='http://Example.org/about/' rel='external nofollow ugc' class='url'>Ann</a>"
    );
}

#[test]
fn avatars_over_https_use_the_secure_host() {
    assert_eq!(
        avatar("grace.hopper@example.com", true),
        "https://secure.gravatar.com/avatar/c404ee70be8231ce56d64b5497d91b14"
    );
}

#[test]
fn a_thread_patch_needs_two_samples_and_new_comments_after_them() {
    let o = options();
    let p = Printer {
        options: &o,
        tz: o.timezone(),
        old_links: false,
    };
    let texts: HashMap<u64, String> = (1..=4).map(|i| (i, format!("<p>{i}</p>\n"))).collect();
    let ctx = Context {
        count: 3,
        newest: vec![row(2, "2024-12-16 10:00:00"), row(1, "2024-12-15 10:00:00")],
    };
    let t = p.thread(9, &ctx, &[row(3, "2024-12-17 10:00:00")], &texts).unwrap();
    assert_eq!((t.post, t.count_before, t.count_after, t.after), (9, 2, 3, 2));
    assert_eq!(t.samples.iter().map(|s| s.id).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(t.added[0].id, 3);
    // A reply, a comment older than one shown, a missing text, one sample: no patch.
    let mut reply = row(3, "2024-12-17 10:00:00");
    reply.parent = 2;
    assert!(p.thread(9, &ctx, &[reply], &texts).is_none());
    assert!(p.thread(9, &ctx, &[row(3, "2024-12-16 09:00:00")], &texts).is_none());
    assert!(p.thread(9, &ctx, &[row(7, "2024-12-17 10:00:00")], &texts).is_none());
    let one = Context {
        count: 2,
        newest: vec![row(2, "2024-12-16 10:00:00")],
    };
    assert!(p.thread(9, &one, &[row(3, "2024-12-17 10:00:00")], &texts).is_none());
    // Comments paged, or newest first: no patch.
    let mut paged = options();
    paged.page_comments = true;
    let q = Printer {
        options: &paged,
        tz: paged.timezone(),
        old_links: false,
    };
    assert!(q.thread(9, &ctx, &[row(3, "2024-12-17 10:00:00")], &texts).is_none());
}

#[test]
fn the_rest_answer_is_read() {
    let body = br#"[{"id":602,"content":{"rendered":"<p>A detail.<\/p>\n"}}]"#;
    assert_eq!(parse_texts(body).unwrap()[&602], "<p>A detail.</p>\n");
    assert!(parse_texts(b"<html>").is_err());
}

fn listed(id: u64, post: u64, author: &str, email: &str, url: &str, date: &str) -> Listed {
    Listed {
        row: Row {
            id,
            parent: 0,
            author: author.into(),
            email: email.into(),
            url: url.into(),
            date: date.into(),
            date_gmt: date.into(),
            replies: false,
        },
        post,
        user: 0,
        post_type: "post".into(),
        password: false,
    }
}

fn described() -> HashMap<u64, PostShown> {
    [
        (
            191,
            "Field Notes 188: Honest Streams Before Breakfast",
            "field-notes-188-honest-streams-before-breakfast",
        ),
        (
            39,
            "Field Notes 036: Quiet Mornings on a Busy Day",
            "field-notes-036-quiet-mornings-on-a-busy-day",
        ),
        (9, "", "field-notes-006-careful-gardens-in-the-evening"),
    ]
    .into_iter()
    .map(|(id, title, slug)| {
        (
            id,
            PostShown {
                title: title.into(),
                link: format!("http://127.0.0.1:8080/{slug}/"),
            },
        )
    })
    .collect()
}

fn c636() -> Listed {
    listed(
        636,
        191,
        "Ada Lovelace",
        "ada-tfdd4352ce71431972x1@example.test",
        "https://ada.example.org/",
        "2026-12-07 14:06:29",
    )
}

#[test]
fn a_comment_is_printed_as_the_latest_comments_block_prints_it() {
    let o = options();
    let p = Printer {
        options: &o,
        tz: o.timezone(),
        old_links: false,
    };
    let s = p.listed(&c636(), &described()).unwrap();
    let f = |k: &str| s.fields[k].as_str();
    // As WordPress 6.1's block printed comment 636 of the demo site.
    assert_eq!(
        f(fields::AUTHOR_MARKUP),
        r#"<a class="wp-block-latest-comments__comment-author" href="https://ada.example.org/">Ada Lovelace</a>"#
    );
    assert_eq!(
        f(fields::LINK),
        "http://127.0.0.1:8080/field-notes-188-honest-streams-before-breakfast/#comment-636"
    );
    assert_eq!(f(fields::TITLE), "Field Notes 188: Honest Streams Before Breakfast");
    assert_eq!(
        f(fields::AVATAR),
        "http://2.gravatar.com/avatar/2ae3b41136241f0c2d0dceb3f8b806ab"
    );
    assert_eq!(f(fields::DATE_ISO), "2026-12-07T14:06:29+00:00");
    assert_eq!(f(fields::DATE), "December 7, 2026");
    // No URL: a span; a post without a title: "(no title)".
    let s = p
        .listed(
            &listed(627, 9, "A", "a@example.com", "http://", "2026-12-07 13:55:23"),
            &described(),
        )
        .unwrap();
    assert_eq!(
        s.fields[fields::AUTHOR_MARKUP],
        r#"<span class="wp-block-latest-comments__comment-author">A</span>"#
    );
    assert_eq!(s.fields[fields::TITLE], "(no title)");
}

#[test]
fn an_author_url_is_escaped_as_the_block_escapes_it() {
    assert_eq!(
        block_author("Bo", "https://example.org/?a=1&b='2'"),
        r#"<a class="wp-block-latest-comments__comment-author" href="https://example.org/?a=1&#038;b=&#039;2&#039;">Bo</a>"#
    );
    assert!(block_author("Bo", "javascript:alert(1)").starts_with("<span"));
    assert!(block_author("Bo", "ftp://example.org/").starts_with("<span"));
}

#[test]
fn a_batch_on_top_of_the_newest_comments_is_a_recent_patch() {
    let o = options();
    let p = Printer {
        options: &o,
        tz: o.timezone(),
        old_links: false,
    };
    let mut newest: Vec<Listed> = vec![c636()];
    for id in (600..636).rev() {
        let mut l = listed(id, 39, "Grace Hopper", "g@example.com", "", "2026-12-07 12:00:00");
        l.user = u64::from(id == 634);
        newest.push(l);
    }
    let r = p.recent(&newest[..22], &[636], &described()).unwrap();
    assert_eq!(r.added.len(), 1);
    assert_eq!(r.added[0].id, 636);
    assert_eq!(r.before, (614..636).rev().take(20).collect::<Vec<_>>());
    // A registered author's comment is no sample.
    assert_eq!(r.samples.iter().map(|s| s.id).collect::<Vec<_>>(), [635, 633, 632, 631]);
    // The same second as the comment before it: its place is not known.
    let mut tie = newest.clone();
    tie[1].row.date_gmt = tie[0].row.date_gmt.clone();
    assert!(p.recent(&tie, &[636], &described()).is_none());
    // Not the newest: no patch.
    assert!(p.recent(&newest, &[635], &described()).is_none());
    // A post WordPress did not describe, or with a password: no patch.
    assert!(p.recent(&newest, &[636], &HashMap::new()).is_none());
    newest[0].password = true;
    assert!(p.recent(&newest, &[636], &described()).is_none());
    // Comments paged: links name pages.
    let mut paged = options();
    paged.page_comments = true;
    let p = Printer {
        options: &paged,
        tz: paged.timezone(),
        old_links: false,
    };
    assert!(p.recent(&newest, &[636], &described()).is_none());
}

#[test]
fn posts_are_read_from_the_rest_api() {
    let body = br#"[{"id":191,"link":"http:\/\/127.0.0.1:8080\/x\/","title":{"rendered":"A &#8220;b&#8221;"}}]"#;
    let posts = parse_posts(body).unwrap();
    assert_eq!(posts[&191].title, "A &#8220;b&#8221;");
    assert_eq!(posts[&191].link, "http://127.0.0.1:8080/x/");
    assert!(parse_posts(b"{}").is_err());
}
