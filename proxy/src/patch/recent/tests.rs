use std::collections::BTreeMap;

use strata_wire::patch::{fields, Patch, Recent, Shown};

use super::*;
use crate::patch::apply;

/// Twenty Twenty-One's sidebar with a latest-comments block of five comments (635, 634, 627,
/// 622, 621), its items as WordPress 6.1's `render_block_core_latest_comments` printed them.
const PAGE: &str = include_str!("../recent.html");
/// The same once comment 636 is the newest: WordPress's own render.
const PAGE_636: &str = include_str!("../recent-636.html");
/// The block showing four comments with avatars and dates.
const AVATARS: &str = include_str!("../recent-avatars.html");
/// The same once comment 636 is the newest: WordPress's own render.
const AVATARS_636: &str = include_str!("../recent-avatars-636.html");

const ADA: &str =
    r#"<a class="wp-block-latest-comments__comment-author" href="https://ada.example.org/">Ada Lovelace</a>"#;

fn span(name: &str) -> String {
    format!(r#"<span class="wp-block-latest-comments__comment-author">{name}</span>"#)
}

/// Comment `id` as the syncer prints it for the block.
fn item(id: u64, author: &str, slug: &str, title: &str, avatar: &str, iso: &str, date: &str) -> Shown {
    let f: BTreeMap<String, String> = [
        (fields::AUTHOR_MARKUP, author.to_string()),
        (fields::LINK, format!("http://127.0.0.1:8080/{slug}/#comment-{id}")),
        (fields::TITLE, title.to_string()),
        (fields::AVATAR, avatar.to_string()),
        (fields::DATE_ISO, iso.to_string()),
        (fields::DATE, date.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Shown { id, fields: f }
}

fn c636() -> Shown {
    item(
        636,
        ADA,
        "field-notes-188-honest-streams-before-breakfast",
        "Field Notes 188: Honest Streams Before Breakfast",
        "http://2.gravatar.com/avatar/2ae3b41136241f0c2d0dceb3f8b806ab",
        "2026-12-07T14:06:29+00:00",
        "December 7, 2026",
    )
}

fn samples() -> Vec<Shown> {
    vec![
        item(
            635,
            ADA,
            "field-notes-036-quiet-mornings-on-a-busy-day",
            "Field Notes 036: Quiet Mornings on a Busy Day",
            "http://2.gravatar.com/avatar/e255c977f9d7d8a1c47c7e8c4fc8d12b",
            "2026-12-07T14:06:18+00:00",
            "December 7, 2026",
        ),
        item(
            634,
            ADA,
            "field-notes-024-gentle-markets-between-releases",
            "Field Notes 024: Gentle Markets Between Releases",
            "http://1.gravatar.com/avatar/a9889ef21475a9a9f340fee1eb83afaf",
            "2026-12-07T14:06:16+00:00",
            "December 7, 2026",
        ),
        item(
            627,
            &span("A"),
            "field-notes-006-careful-gardens-in-the-evening",
            "Field Notes 006: Careful Gardens in the Evening",
            "http://2.gravatar.com/avatar/b418773a2c51fb9777a1648346fa7394",
            "2026-12-07T13:55:23+00:00",
            "December 7, 2026",
        ),
        item(
            622,
            &span("Niklaus Wirth"),
            "field-notes-200-warm-origins-that-stay-fresh",
            "Field Notes 200: Warm Origins That Stay Fresh",
            "http://2.gravatar.com/avatar/ec1a689d0f929dbd11a4f995863b9bce",
            "2025-01-02T12:46:38+00:00",
            "January 2, 2025",
        ),
    ]
}

fn patch(added: Vec<Shown>) -> Recent {
    Recent {
        before: vec![635, 634, 627, 622, 621, 620, 619, 618],
        samples: samples(),
        added,
    }
}

/// Comment 636 on top of the lists of [`PAGE`].
pub(crate) fn patch_636() -> Patch {
    Patch::Recent(patch(vec![c636()]))
}

fn patched(page: &str, r: Recent) -> Result<String, Unpatched> {
    apply(page.as_bytes(), &Patch::Recent(r)).map(|b| String::from_utf8(b).unwrap())
}

#[test]
fn a_new_comment_tops_the_block_as_wordpress_renders_it() {
    assert_eq!(patched(PAGE, patch(vec![c636()])).unwrap(), PAGE_636);
}

#[test]
fn avatars_and_dates_are_filled_from_the_printed_fields() {
    assert_eq!(patched(AVATARS, patch(vec![c636()])).unwrap(), AVATARS_636);
}

#[test]
fn the_list_alone_patches_as_the_page_does() {
    let found = lists(PAGE.as_bytes());
    assert_eq!(found.len(), 1);
    let range = found[0].clone();
    assert!(PAGE[..range.start].ends_with(r#"<ol class="wp-block-latest-comments">"#));
    assert!(PAGE[range.end..].starts_with("</ol>"));
    let list = patch_list(&PAGE[range.clone()], &patch(vec![c636()])).unwrap();
    assert_eq!(
        format!("{}{list}{}", &PAGE[..range.start], &PAGE[range.end..]),
        PAGE_636
    );
}

#[test]
fn more_new_comments_than_items_fill_the_list() {
    let mut newer: Vec<Shown> = (0..6)
        .map(|i| {
            let mut c = c636();
            c.id = 700 - i;
            c.fields.insert(
                fields::LINK.into(),
                format!("http://127.0.0.1:8080/x/#comment-{}", c.id),
            );
            c
        })
        .collect();
    let out = patched(PAGE, patch(newer.clone())).unwrap();
    let range = lists(out.as_bytes())[0].clone();
    let ids: Vec<u64> = runs(&out[range])[0].iter().map(|i| i.id).collect();
    assert_eq!(ids, [700, 699, 698, 697, 696]);
    newer.truncate(2);
    let out = patched(PAGE, patch(newer)).unwrap();
    let range = lists(out.as_bytes())[0].clone();
    let ids: Vec<u64> = runs(&out[range])[0].iter().map(|i| i.id).collect();
    assert_eq!(ids, [700, 699, 635, 634, 627]);
}

#[test]
fn a_list_that_is_not_the_newest_comments_is_not_patched() {
    let mut r = patch(vec![c636()]);
    r.before.remove(1);
    assert_eq!(patched(PAGE, r), Err(Unpatched::NotNewest));
    let mut r = patch(vec![c636()]);
    r.before.insert(0, 636);
    assert_eq!(patched(PAGE, r), Err(Unpatched::NotNewest));
}

#[test]
fn a_list_as_long_as_the_patch_knows_is_ambiguous() {
    let mut r = patch(vec![c636()]);
    r.before.truncate(5);
    assert_eq!(patched(PAGE, r.clone()), Err(Unpatched::Ambiguous));
    r.before.truncate(3);
    assert_eq!(patched(PAGE, r), Err(Unpatched::NotNewest));
}

#[test]
fn a_value_no_item_proves_is_not_filled() {
    // Every sample shows the same title: where a title goes is not proven.
    let mut r = patch(vec![c636()]);
    for s in &mut r.samples {
        s.fields.insert(fields::TITLE.into(), "Same".into());
    }
    assert_eq!(patched(PAGE, r), Err(Unpatched::NoTemplate));
    // No sample the page shows.
    let mut r = patch(vec![c636()]);
    r.samples.truncate(0);
    assert_eq!(patched(PAGE, r), Err(Unpatched::NoTemplate));
}

#[test]
fn unknown_markup_around_a_value_is_not_learnt() {
    // A plugin's markup in one item: the template learnt from it reproduces no other.
    let page = PAGE.replacen("Field Notes 036: Quiet", "Field Notes 036: <em>new</em> Quiet", 1);
    let out = patched(&page, patch(vec![c636()]));
    // The others still agree with each other and with the new comment: the list is patched,
    // the odd item kept as the page had it.
    let out = out.unwrap();
    assert!(out.contains("<em>new</em>"));
    assert!(out.contains("#comment-636\""));
    // A theme that prints the author differently from the fields: the name of an author
    // two items show alike is kept as their text, but no other is filled.
    let page = PAGE.replace("wp-block-latest-comments__comment-author", "author");
    let grace = |mut c: Shown| {
        c.fields.insert(fields::AUTHOR_MARKUP.into(), span("Grace Hopper"));
        c
    };
    assert_eq!(patched(&page, patch(vec![grace(c636())])), Err(Unpatched::NoTemplate));
    assert!(patched(&page, patch(vec![c636()])).unwrap().contains(
        r#"<a class="author" href="https://ada.example.org/">Ada Lovelace</a> on <a class="wp-block-latest-comments__comment-link" href="http://127.0.0.1:8080/field-notes-188"#
    ));
}

#[test]
fn a_page_without_a_list_is_not_patched() {
    assert_eq!(
        patched("<p>No comments</p>", patch(vec![c636()])),
        Err(Unpatched::NoList)
    );
    assert!(lists(b"<ul><li><a href=\"/#respond\">x</a></li></ul>").is_empty());
}

#[test]
fn comments_of_a_thread_are_no_list() {
    let thread = include_str!("../thread.html");
    assert!(lists(thread.as_bytes()).is_empty());
}

#[test]
fn an_item_linking_to_two_comments_is_no_item() {
    let page = PAGE.replacen(
        "Field Notes 036: Quiet Mornings on a Busy Day</a>",
        "Field Notes 036: Quiet Mornings on a Busy Day</a><a href=\"/#comment-1\">1</a>",
        1,
    );
    let found = lists(page.as_bytes());
    assert_eq!(found.len(), 1);
    assert_eq!(runs(&page[found[0].clone()])[0][0].id, 634);
    assert_eq!(patched(&page, patch(vec![c636()])), Err(Unpatched::NotNewest));
}
