use std::collections::BTreeMap;

use strata_wire::patch::{fields, Patch, Shown, Thread};

use super::*;

/// The comments of a post as WordPress 6 and Twenty Twenty-One print them: five top-level
/// comments, 601 to 605.
const PAGE: &str = include_str!("thread.html");

fn shown(id: u64, author: &str, hash: &str, iso: &str, date: &str, time: &str, content: &str) -> Shown {
    let f: BTreeMap<String, String> = [
        (fields::AUTHOR_LINK, author),
        (fields::AUTHOR_ATTR, author),
        (fields::AVATAR, hash),
        (fields::DATE_ISO, iso),
        (fields::DATE, date),
        (fields::TIME, time),
        (fields::CONTENT, content),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Shown { id, fields: f }
}

fn c603() -> Shown {
    shown(
        603,
        "Leslie Lamport",
        "http://2.gravatar.com/avatar/5a9e6954d85fc10a55adbd5d20ab3b30",
        "2024-12-17T23:21:31+00:00",
        "December 17, 2024",
        "23:21",
        "<p>This always router process they token without measure they signal release checks.</p>\n",
    )
}

fn c604() -> Shown {
    shown(
        604,
        "Frances Allen",
        "http://2.gravatar.com/avatar/e44b8ab3e050d9e8496d9f2ef25bf65e",
        "2024-12-18T06:59:15+00:00",
        "December 18, 2024",
        "06:59",
        "<p>Writer while month warm writer. Reason rarely large river small visitor.</p>\n",
    )
}

fn c605() -> Shown {
    shown(
        605,
        "John Backus",
        "http://1.gravatar.com/avatar/431569069bbc6d2d4b06e93f59e90263",
        "2024-12-19T03:19:15+00:00",
        "December 19, 2024",
        "03:19",
        "<p>Thread which buffer engine idle many moves most gives stream writer.</p>\n",
    )
}

/// The page as WordPress printed it before comment 605: its element cut out, the count 4.
fn before_605() -> String {
    let start = PAGE.find("\t\t<li id=\"comment-605\"").unwrap();
    let end = PAGE.find("\t\t</ol><!-- .comment-list -->").unwrap();
    let cut = format!("{}{}", &PAGE[..start], &PAGE[end..]);
    cut.replacen("5 comments", "4 comments", 1)
}

fn patch_605(samples: Vec<Shown>) -> Patch {
    Patch::Thread(Thread {
        post: 199,
        count_before: 4,
        count_after: 5,
        after: 604,
        samples,
        added: vec![c605()],
    })
}

fn patched(page: &str, p: &Patch) -> Result<String, Unpatched> {
    apply(page.as_bytes(), p).map(|b| String::from_utf8(b).unwrap())
}

#[test]
fn a_new_comment_is_printed_as_wordpress_printed_it() {
    let page = before_605();
    assert_ne!(page, PAGE);
    assert_eq!(patched(&page, &patch_605(vec![c604(), c603()])).unwrap(), PAGE);
}

#[test]
fn two_new_comments_alternate_their_classes() {
    // Without 604 and 605, both added at once.
    let page = before_605();
    let start = page.find("\t\t<li id=\"comment-604\"").unwrap();
    let end = page.find("\t\t</ol><!-- .comment-list -->").unwrap();
    let page = format!("{}{}", &page[..start], &page[end..]).replacen("4 comments", "3 comments", 1);
    let p = Patch::Thread(Thread {
        post: 199,
        count_before: 3,
        count_after: 5,
        after: 603,
        // 603 and 602 were written the same day: 601 proves the date.
        samples: vec![c603(), shown_602(), c601()],
        added: vec![c604(), c605()],
    });
    assert_eq!(patched(&page, &p).unwrap(), PAGE);
}

fn c601() -> Shown {
    shown(
        601,
        "Grace Hopper",
        "http://0.gravatar.com/avatar/c404ee70be8231ce56d64b5497d91b14",
        "2024-12-16T22:34:53+00:00",
        "December 16, 2024",
        "22:34",
        "<p>Change which stream system process market index record after page version which signal.</p>\n",
    )
}

fn shown_602() -> Shown {
    shown(
        602,
        "Radia Perlman",
        "http://1.gravatar.com/avatar/1963dc25d0c9e1ffff2260bb235995b8",
        "2024-12-17T04:04:23+00:00",
        "December 17, 2024",
        "04:04",
        "<p>A detail many shows most record method harbor letter counts serves. Secret sends always record shows second column page.</p>\n",
    )
}

#[test]
fn one_sample_proves_nothing() {
    let page = before_605();
    assert_eq!(patched(&page, &patch_605(vec![c604()])), Err(Unpatched::NoTemplate));
}

#[test]
fn a_sample_whose_fields_are_not_what_the_page_shows_gives_no_template() {
    let mut wrong = c603();
    wrong.fields.insert(fields::DATE.into(), "17 December 2024".into());
    let page = before_605();
    assert_eq!(
        patched(&page, &patch_605(vec![c604(), wrong])),
        Err(Unpatched::NoTemplate)
    );
}

#[test]
fn a_field_two_samples_share_is_filled_only_with_the_same_value() {
    // 603 and 604 written on the same day: the date is not proven by them.
    let mut same_day = c603();
    let page = before_605().replace("December 17, 2024 at 23:21", "December 18, 2024 at 23:21");
    same_day.fields.insert(fields::DATE.into(), "December 18, 2024".into());
    assert_eq!(
        patched(&page, &patch_605(vec![c604(), same_day.clone()])),
        Err(Unpatched::NoTemplate)
    );
    // A third sample of another day proves it.
    let out = patched(&page, &patch_605(vec![c604(), same_day, shown_602()])).unwrap();
    assert!(out.contains("December 19, 2024 at 03:19"));
}

#[test]
fn a_page_that_already_shows_a_later_comment_is_not_patched() {
    let p = Patch::Thread(Thread {
        post: 199,
        count_before: 4,
        count_after: 5,
        after: 604,
        samples: vec![c604(), c603()],
        added: vec![c605()],
    });
    assert_eq!(patched(PAGE, &p), Err(Unpatched::NotLast));
}

#[test]
fn a_page_without_the_preceding_comment_is_not_patched() {
    let Patch::Thread(mut t) = patch_605(vec![c604(), c603()]) else {
        unreachable!()
    };
    t.after = 999;
    assert_eq!(patched(&before_605(), &Patch::Thread(t)), Err(Unpatched::NoThread));
}

#[test]
fn a_count_the_page_does_not_show_is_not_raised() {
    let Patch::Thread(mut t) = patch_605(vec![c604(), c603()]) else {
        unreachable!()
    };
    t.count_before = 7;
    t.count_after = 8;
    assert_eq!(patched(&before_605(), &Patch::Thread(t)), Err(Unpatched::NoCount));
}

#[test]
fn a_count_from_or_to_one_changes_wording() {
    for (before, after) in [(1, 2), (0, 1), (999, 1000)] {
        let Patch::Thread(mut t) = patch_605(vec![c604(), c603()]) else {
            unreachable!()
        };
        t.count_before = before;
        t.count_after = after;
        assert_eq!(patched(&before_605(), &Patch::Thread(t)), Err(Unpatched::Wording));
    }
}

#[test]
fn a_comment_with_replies_is_no_sample_and_the_walker_counts_replies() {
    // 603 gains a reply (604 nested under it): 603 can no longer be a sample, and 605's
    // `even`/`odd` counts the reply.
    let page = before_605();
    let s604 = page.find("\t\t<li id=\"comment-604\"").unwrap();
    let e604 = page.find("\t\t</ol><!-- .comment-list -->").unwrap();
    let reply = page[s604..e604]
        .replace("depth-1", "depth-2")
        .replace("thread-odd thread-alt ", "");
    let end603 = page[..s604].rfind("</li><!-- #comment-## -->").unwrap();
    let page = format!(
        "{}<ol class=\"children\">\n{reply}</ol><!-- .children -->\n{}{}",
        &page[..end603],
        &page[end603..s604],
        &page[e604..]
    )
    .replace(
        "comment even thread-even depth-1\">\n\t\t\t<article id=\"div-comment-603\"",
        "comment even thread-even depth-1 parent\">\n\t\t\t<article id=\"div-comment-603\"",
    );
    let p = Patch::Thread(Thread {
        post: 199,
        count_before: 4,
        count_after: 5,
        after: 603,
        samples: vec![c603(), shown_602(), c604(), c601()],
        added: vec![c605()],
    });
    let out = patched(&page, &p).unwrap();
    // Four comments before it (one a reply): even; three threads before it: odd.
    assert!(
        out.contains("<li id=\"comment-605\" class=\"comment even thread-odd thread-alt depth-1\">"),
        "{out}"
    );
}

#[test]
fn text_that_is_not_utf8_is_not_patched() {
    assert_eq!(apply(b"\xff\xfe", &patch_605(vec![])), Err(Unpatched::NotText));
}

/// The template key of the patch of 605 into `page`.
fn template_of(page: &str) -> u64 {
    super::patched(page.as_bytes(), &patch_605(vec![c604(), c603()]))
        .expect("patched")
        .template
}

#[test]
fn the_template_key_names_the_themes_markup_not_the_post() {
    let page = before_605();
    let key = template_of(&page);
    // Another post of the same theme: another link, another id.
    let other = page
        .replace("field-notes-196-patient-origins-at-the-edge", "a-quiet-morning")
        .replace("data-postid=\"199\"", "data-postid=\"4242\"");
    assert_ne!(other, page);
    assert_eq!(template_of(&other), key);
    // Other markup: another class name in every comment.
    let restyled = page.replace("class=\"comment-body\"", "class=\"comment-box\"");
    assert_ne!(template_of(&restyled), key);
    let reworded = page.replace(
        "<span class=\"says\">says:</span>",
        "<span class=\"says\">wrote:</span>",
    );
    assert_ne!(template_of(&reworded), key);
}

#[test]
fn a_markup_key_ignores_digits_and_links_in_attributes_only() {
    assert_eq!(
        markup_key("<a href='http://x/one-1/'>Reply {id}</a>"),
        markup_key("<a href='https://y/two-22/'>Reply {id}</a>")
    );
    assert_ne!(
        markup_key("<a href='/relative/'>Reply</a>"),
        markup_key("<a href='/other/'>Reply</a>"),
        "a value without a scheme is kept"
    );
    assert_ne!(markup_key("<b>Reply</b>"), markup_key("<b>Answer</b>"));
    assert_eq!(markup_key("<b>Reply 1</b>"), markup_key("<b>Reply 2</b>"));
}
