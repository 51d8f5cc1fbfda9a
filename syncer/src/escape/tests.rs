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

/// `_deep_replace` as PHP runs it: replace over the whole string until nothing changes.
fn deep_replace_reference(url: &str) -> String {
    let mut url = url.to_string();
    loop {
        let next = url
            .replace("%0d", "")
            .replace("%0a", "")
            .replace("%0D", "")
            .replace("%0A", "");
        if next == url {
            return url;
        }
        url = next;
    }
}

/// The entity length before the scan for `;` stopped at the first character no entity has.
fn entity_len_reference(s: &str) -> Option<usize> {
    let body = s.strip_prefix('&')?;
    let semi = body.find(';')?;
    let name = &body[..semi];
    let ok = if let Some(num) = name.strip_prefix('#') {
        if let Some(hex) = num.strip_prefix(['x', 'X']) {
            !hex.is_empty()
                && hex.chars().all(|c| c.is_ascii_hexdigit())
                && u64::from_str_radix(hex, 16).is_ok_and(|n| n <= 0x10FFFF)
        } else {
            !num.is_empty()
                && num.chars().all(|c| c.is_ascii_digit())
                && num.parse::<u64>().is_ok_and(|n| n <= 0x10FFFF)
        }
    } else {
        name != "apos" && ENTITY_NAMES.contains(&name)
    };
    ok.then_some(semi + 2)
}

#[test]
fn one_pass_removal_of_crlf_escapes_ends_where_repeated_replacing_does() {
    let mut inputs = crate::golden::mixtures(5_000, 11);
    inputs.extend(
        [
            "%%0d0a",
            "%%%0d0d0d",
            "%0%0dd",
            "%0D%0a%0A%0d",
            "%%0a0A%0",
            "%%%%0a0a0a0a",
            "%0",
        ]
        .map(String::from),
    );
    for s in inputs {
        assert_eq!(deep_remove_crlf(&s), deep_replace_reference(&s), "{s:?}");
    }
    assert_eq!(deep_remove_crlf("http://a/%%0d0a"), "http://a/");
}

#[test]
fn entity_lengths_are_unchanged_by_the_bounded_scan() {
    for s in crate::golden::mixtures(5_000, 13) {
        for (i, _) in s.match_indices('&') {
            assert_eq!(entity_len(&s[i..]), entity_len_reference(&s[i..]), "{:?}", &s[i..]);
        }
    }
    for s in [
        "&amp;",
        "&#65;",
        "&#x41;",
        "&#X41;",
        "&apos;",
        "&nbsp",
        "&a b;",
        "&#;",
        "&é;",
        "&&amp;",
        "&#0000065;",
    ] {
        assert_eq!(entity_len(s), entity_len_reference(s), "{s:?}");
    }
}
