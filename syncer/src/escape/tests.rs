use super::*;
use crate::golden::check;

#[test]
fn built_in_patterns_compile() {
    for p in [
        &NO_NULL,
        &SLASH_ZERO,
        &NAMED_ENTITY,
        &DEC_ENTITY,
        &HEX_ENTITY,
        &COLON_FIX,
        &COLON_SPLIT,
        &DEC_DECODE,
        &HEX_DECODE,
    ] {
        let _ = p.is_match("");
    }
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
fn bad_protocols_are_removed() {
    assert_eq!(bad_protocol("javascript:alert(1)"), "alert(1)");
    assert_eq!(bad_protocol("http://x"), "http://x");
    assert_eq!(bad_protocol("HTTP://x"), "http://x");
    assert_eq!(bad_protocol("/a:b"), "/a:b".replace("/a:", ""));
}
