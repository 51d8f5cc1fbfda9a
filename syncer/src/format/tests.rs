use super::*;
use crate::golden::{check, Golden};
use strata_wire::php::is_email;

#[test]
fn sanitize_text_field_matches_wordpress() {
    check("sanitize_text_field", |g| {
        (g.sanitize_text_field.clone(), sanitize_text_field(&g.input))
    });
}

#[test]
fn sanitize_email_matches_wordpress() {
    check("sanitize_email", |g| {
        (g.sanitize_email.clone(), sanitize_email(&g.input))
    });
}

#[test]
fn is_email_matches_wordpress() {
    check("is_email", |g| (g.is_email.to_string(), is_email(&g.input).to_string()));
}

#[test]
fn strip_all_tags_matches_wordpress() {
    check("wp_strip_all_tags", |g| {
        (g.strip_all_tags.clone(), wp_strip_all_tags(&g.input))
    });
}

#[test]
fn filtered_comment_matches_wordpress() {
    for (name, pick) in [
        (
            "author",
            (|g: &Golden, f: &Filtered| (g.author.clone(), f.author.clone()))
                as fn(&Golden, &Filtered) -> (String, String),
        ),
        ("email", |g, f| (g.email.clone(), f.email.clone())),
        ("url", |g, f| (g.url.clone(), f.url.clone())),
        ("content", |g, f| (g.content.clone(), f.content.clone())),
    ] {
        check(name, |g| {
            let f = filter_comment(
                Raw {
                    author: &g.input,
                    email: &g.input,
                    url: &g.input,
                    content: &g.input,
                    ip: "",
                    agent: "",
                },
                "127.0.0.1",
            );
            pick(g, &f)
        });
    }
}

#[test]
fn ip_and_agent_are_normalised() {
    let f = filter_comment(
        Raw {
            author: "a",
            email: "",
            url: "",
            content: "c",
            ip: "2001:db8::1%eth0<x>",
            agent: &"é".repeat(200),
        },
        "h",
    );
    assert_eq!(f.ip, "2001:db8::1e0");
    assert_eq!(f.agent.len(), 254);
}

#[test]
fn invalid_entities_are_converted() {
    assert_eq!(convert_invalid_entities("&#128;&#129;x&#160;"), "&#8364;x&#160;");
}

#[test]
fn slashes_round_trip_like_php() {
    let s = "O'Brien \"x\" \\ \0 end";
    assert_eq!(addslashes(s), "O\\'Brien \\\"x\\\" \\\\ \\0 end");
    assert_eq!(stripslashes(&addslashes(s)), s);
    assert_eq!(stripslashes("a\\"), "a");
}

/// `sanitize_text_field`'s octet loop as PHP runs it: the first octet found removed
/// everywhere, until none is left.
fn remove_octets_reference(s: &str) -> (String, bool) {
    static OCTET: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)%[a-f0-9]{2}"));
    let octet = &*OCTET;
    let mut filtered = s.to_string();
    let mut found = false;
    while let Some(m) = octet.find(&filtered) {
        let o = m.as_str().to_string();
        filtered = filtered.replace(&o, "");
        found = true;
    }
    (filtered, found)
}

#[test]
fn one_pass_octet_removal_ends_where_the_loop_does() {
    let mut inputs = crate::golden::mixtures(5_000, 17);
    inputs.extend(["%%4141", "%4%41%41", "%%%4a4A4a", "%g1%41", "%%4", "%41%"].map(String::from));
    for s in inputs {
        assert_eq!(remove_octets(&s), remove_octets_reference(&s), "{s:?}");
    }
}
