use super::*;

#[test]
fn built_in_patterns_compile() {
    for p in [
        &SPLIT,
        &MALFORMED,
        &XHTML_SLASH,
        &ATTR_NAME,
        &ATTR_EQ,
        &ATTR_WS,
        &VAL_DQ,
        &VAL_DQ_CUT,
        &VAL_SQ,
        &VAL_SQ_CUT,
        &VAL_BARE,
        &VAL_BARE_CUT,
        &HTML_ERROR,
        &REL_A,
        &MAKE_CLICKABLE_SPLIT,
    ] {
        let _ = p.is_match("");
    }
}

#[test]
fn kses_matches_wordpress() {
    let mut failures = Vec::new();
    for case in crate::golden::goldens() {
        let got = wp_kses(&case.input);
        if got != case.kses {
            failures.push(format!("{:?}\n  php:  {:?}\n  rust: {:?}", case.input, case.kses, got));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn link_counts_match_wordpress() {
    let mut failures = Vec::new();
    for case in crate::golden::goldens() {
        let got = link_count(&case.content);
        if got != case.links {
            failures.push(format!("{:?}: php {} rust {}", case.content, case.links, got));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn own_links_get_no_rel() {
    assert_eq!(
        rel_ugc("<a href=\"http://127.0.0.1:8080/x/\">a</a>", "127.0.0.1"),
        "<a href=\"http://127.0.0.1:8080/x/\">a</a>"
    );
    assert_eq!(
        rel_ugc("<a href=\"http://e.test/\">a</a>", "127.0.0.1"),
        "<a href=\"http://e.test/\" rel=\"nofollow ugc\">a</a>"
    );
}
