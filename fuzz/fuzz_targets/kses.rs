//! The syncer's ports of WordPress's comment filters (`strata_syncer::kses`, and
//! `format::filter_comment`, which applies them in `wp_filter_comment`'s order) on arbitrary
//! comment text.
//!
//! Never a panic or a hang, and what kses lets through is only the anonymous commenter's
//! allowed tags with their allowed attributes: every `<` of its output opens an allowed
//! element (or an HTML comment), and every attribute of those elements is allowed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_syncer::format::{filter_comment, Raw};
use strata_syncer::kses;

/// `$allowedtags`: element and its attributes.
const ALLOWED: &[(&str, &[&str])] = &[
    ("a", &["href", "title"]),
    ("abbr", &["title"]),
    ("acronym", &["title"]),
    ("b", &[]),
    ("blockquote", &["cite"]),
    ("cite", &[]),
    ("code", &[]),
    ("del", &["datetime"]),
    ("em", &[]),
    ("i", &[]),
    ("q", &["cite"]),
    ("s", &[]),
    ("strike", &[]),
    ("strong", &[]),
];

/// Checks every tag of kses output; `extra` are attributes of `a` a later filter adds.
fn only_allowed_tags(out: &str, extra: &[&str]) {
    let b = out.as_bytes();
    let mut i = 0;
    while let Some(off) = out[i..].find('<') {
        let at = i + off;
        let rest = &out[at + 1..];
        if rest.starts_with("!--") {
            i = at + 4;
            continue;
        }
        let closing = rest.starts_with('/');
        let name_start = at + 1 + usize::from(closing);
        let name_len = b[name_start..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'-')
            .count();
        let name = &out[name_start..name_start + name_len];
        let Some((_, attrs)) = ALLOWED.iter().find(|(t, _)| t.eq_ignore_ascii_case(name)) else {
            panic!("element {name:?} let through at {at} of {out:?}");
        };
        let mut j = name_start + name_len;
        if closing {
            assert_eq!(b.get(j), Some(&b'>'), "odd closing tag at {at} of {out:?}");
            i = j + 1;
            continue;
        }
        // ( " " | "/" | name | name="v" | name='v' )* ">"
        loop {
            match b.get(j) {
                Some(b'>') => break,
                // A stray `/` between attributes is ignored by browsers (`rel_ugc` writes
                // `<a / rel=…>` for `<a />`, as WordPress does).
                Some(b' ' | b'/') => j += 1,
                Some(_) => {
                    let n = b[j..]
                        .iter()
                        .take_while(|c| !matches!(c, b'=' | b' ' | b'>' | b'/'))
                        .count();
                    let attr = &out[j..j + n];
                    let is_a = name.eq_ignore_ascii_case("a");
                    assert!(
                        n > 0
                            && (attrs.iter().any(|a| a.eq_ignore_ascii_case(attr))
                                || (is_a && extra.iter().any(|a| a.eq_ignore_ascii_case(attr)))),
                        "attribute {attr:?} of {name:?} let through at {at} of {out:?}"
                    );
                    j += n;
                    if b.get(j) == Some(&b'=') {
                        let q = *b.get(j + 1).unwrap_or_else(|| panic!("cut attribute in {out:?}"));
                        assert!(q == b'"' || q == b'\'', "unquoted value at {j} of {out:?}");
                        let len = b[j + 2..]
                            .iter()
                            .position(|c| *c == q)
                            .unwrap_or_else(|| panic!("unterminated value at {j} of {out:?}"));
                        j += 2 + len + 1;
                    }
                }
                None => panic!("unterminated tag at {at} of {out:?}"),
            }
        }
        i = j + 1;
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let out = kses::wp_kses(&text);
    only_allowed_tags(&out, &[]);
    let _ = kses::link_count(&text);
    let _ = kses::targeted_link_rel(&text);
    let _ = kses::rel_ugc(&text, "127.0.0.1");
    let raw = Raw {
        author: &text,
        email: &text,
        url: &text,
        content: &text,
        ip: &text,
        agent: &text,
    };
    let f = filter_comment(raw, "127.0.0.1");
    // rel_ugc rewrites links after kses, adding rel="nofollow ugc".
    only_allowed_tags(&f.content, &["rel"]);
    assert!(f.agent.len() <= 254);
});
