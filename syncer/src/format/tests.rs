use super::*;

/// One case of `tests/golden/cases.json`, produced by the real WordPress functions.
pub(crate) struct Golden {
    pub input: String,
    pub kses: String,
    pub author: String,
    pub email: String,
    pub url: String,
    pub content: String,
    pub sanitize_text_field: String,
    pub sanitize_email: String,
    pub is_email: bool,
    pub esc_url_raw: String,
    pub esc_url: String,
    pub esc_html: String,
    pub specialchars: String,
    pub strip_all_tags: String,
    pub links: usize,
}

pub(crate) fn goldens() -> Vec<Golden> {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/golden/cases.json")).expect("cases.json is JSON");
    let s = |c: &serde_json::Value, k: &str| c[k].as_str().unwrap_or_else(|| panic!("{k} missing")).to_string();
    v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Golden {
            input: s(c, "in"),
            kses: s(c, "kses"),
            author: s(c, "author"),
            email: s(c, "email"),
            url: s(c, "url"),
            content: s(c, "content"),
            sanitize_text_field: s(c, "sanitize_text_field"),
            sanitize_email: s(c, "sanitize_email"),
            is_email: c["is_email"].as_bool().expect("is_email"),
            esc_url_raw: s(c, "esc_url_raw"),
            esc_url: s(c, "esc_url"),
            esc_html: s(c, "esc_html"),
            specialchars: s(c, "specialchars"),
            strip_all_tags: s(c, "strip_all_tags"),
            links: c["links"].as_u64().expect("links") as usize,
        })
        .collect()
}

fn check(name: &str, f: impl Fn(&Golden) -> (String, String)) {
    let mut failures = Vec::new();
    for g in goldens() {
        let (php, rust) = f(&g);
        if php != rust {
            failures.push(format!("{:?}\n  php:  {php:?}\n  rust: {rust:?}", g.input));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

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
fn esc_url_matches_wordpress() {
    check("esc_url_raw", |g| (g.esc_url_raw.clone(), esc_url(&g.input, false)));
    check("esc_url", |g| (g.esc_url.clone(), esc_url(&g.input, true)));
}

#[test]
fn specialchars_match_wordpress() {
    check("esc_html", |g| (g.esc_html.clone(), esc_html(&g.input)));
    check("_wp_specialchars", |g| {
        (g.specialchars.clone(), specialchars(&g.input, Quotes::None))
    });
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
