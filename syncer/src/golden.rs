//! The golden cases of `tests/golden/cases.json` (each input through the real WordPress
//! functions the syncer ports), for the unit tests of those ports.

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
        serde_json::from_str(include_str!("../tests/golden/cases.json")).expect("cases.json is JSON");
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

pub(crate) fn check(name: &str, f: impl Fn(&Golden) -> (String, String)) {
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

/// `count` strings mixed from the pieces the WordPress ports treat specially (tags,
/// attributes, quotes, comments, newlines, entities, URLs, parentheses, `%0d`/`%41` escapes,
/// `<script>`), the same for the same `seed`: inputs for checking a rewritten port against
/// the code it replaces.
pub(crate) fn mixtures(count: usize, seed: u64) -> Vec<String> {
    const PIECES: &[&str] = &[
        "<",
        ">",
        "<!--",
        "-->",
        "--->",
        "\n",
        " ",
        "\t",
        "a",
        "B",
        "x",
        "é",
        "<a ",
        "<A\t",
        "</a>",
        "<b>",
        "<abbr ",
        "<q",
        "href",
        "title",
        "cite",
        "target",
        "rel",
        "=",
        "\"",
        "'",
        "\\\"",
        "/",
        "/>",
        "http://",
        "HTTPS://",
        "javascript:",
        "www.",
        "ftp.",
        "e.test",
        "@",
        ".",
        ",",
        ";",
        ":",
        "!",
        "?",
        "(",
        ")",
        "&",
        "&amp;",
        "&#58;",
        "&#x3a;",
        "&nbsp;",
        "&bogus;",
        "#",
        "%",
        "0",
        "d",
        "A",
        "%0d",
        "%0A",
        "%41",
        "1",
        "<script",
        "</script>",
        "<style>",
        "</style>",
        "<code>",
        "</code>",
        "mailto:",
        "_blank",
        "nofollow",
        "\0",
        "\u{b}",
    ];
    let mut state = seed | 1;
    let mut next = move || {
        // xorshift64*: deterministic, no dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..count)
        .map(|_| {
            let len = next() % 48;
            (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect()
        })
        .collect()
}
