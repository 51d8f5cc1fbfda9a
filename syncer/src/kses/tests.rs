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

/// The inputs the rewritten parts are checked on: the golden inputs, then generated ones.
fn inputs() -> Vec<String> {
    let mut v: Vec<String> = crate::golden::goldens().into_iter().map(|g| g.input).collect();
    v.extend(crate::golden::mixtures(5_000, 7));
    v
}

/// `wp_kses_split`'s pattern, as the regular expression the hand-written split replaces.
static SPLIT: LazyLock<Regex> = LazyLock::new(|| re(r"(<!--(?-s:.)*?(-->|\n?\z))|(<[^>]*(>|\n?\z)|>)"));

/// The split before it was written by hand: the regular expression's matches.
fn split_reference(s: &str) -> String {
    SPLIT
        .replace_all(s, |c: &regex::Captures<'_>| split2(&c[0]))
        .into_owned()
}

/// `wp_kses_hair` before it walked an offset: the rest of the list copied at every step.
fn hair_reference(attr: &str) -> Vec<Attr> {
    let mut out: Vec<Attr> = Vec::new();
    let mut attr = attr.to_string();
    let mut mode = 0;
    let mut name = String::new();
    let add = |out: &mut Vec<Attr>, a: Attr| {
        if !out.iter().any(|x| x.name == a.name) {
            out.push(a);
        }
    };
    let value = |name: &str, v: &str| {
        if URI_ATTRIBUTES.contains(&name.to_ascii_lowercase().as_str()) {
            bad_protocol(v)
        } else {
            v.to_string()
        }
    };
    while !attr.is_empty() {
        let mut working = false;
        match mode {
            0 => {
                if let Some(m) = ATTR_NAME.find(&attr) {
                    name = m.as_str().to_string();
                    attr = attr[m.end()..].to_string();
                    working = true;
                    mode = 1;
                }
            }
            1 => {
                if let Some(m) = ATTR_EQ.find(&attr) {
                    attr = attr[m.end()..].to_string();
                    working = true;
                    mode = 2;
                } else if let Some(m) = ATTR_WS.find(&attr) {
                    working = true;
                    mode = 0;
                    add(
                        &mut out,
                        Attr {
                            name: name.clone(),
                            value: String::new(),
                            whole: name.clone(),
                            vless: true,
                        },
                    );
                    attr = attr[m.end()..].to_string();
                }
            }
            _ => {
                let quoted = [(&VAL_DQ, &VAL_DQ_CUT, '"'), (&VAL_SQ, &VAL_SQ_CUT, '\'')];
                for (matcher, cut, q) in quoted {
                    if let Some(c) = matcher.captures(&attr) {
                        let v = value(&name, &c[1]);
                        add(
                            &mut out,
                            Attr {
                                name: name.clone(),
                                whole: format!("{name}={q}{v}{q}"),
                                value: v,
                                vless: false,
                            },
                        );
                        working = true;
                        mode = 0;
                        attr = cut.replace(&attr, "").into_owned();
                        break;
                    }
                }
                if !working {
                    if let Some(c) = VAL_BARE.captures(&attr) {
                        let v = value(&name, &c[1]);
                        add(
                            &mut out,
                            Attr {
                                name: name.clone(),
                                whole: format!("{name}=\"{v}\""),
                                value: v,
                                vless: false,
                            },
                        );
                        working = true;
                        mode = 0;
                        attr = VAL_BARE_CUT.replace(&attr, "").into_owned();
                    }
                }
            }
        }
        if !working {
            let cut = HTML_ERROR.find(&attr).map_or(0, |m| m.end());
            if cut == 0 {
                attr.remove(0);
            } else {
                attr = attr[cut..].to_string();
            }
            mode = 0;
        }
    }
    if mode == 1 {
        add(
            &mut out,
            Attr {
                name: name.clone(),
                value: String::new(),
                whole: name,
                vless: true,
            },
        );
    }
    out
}

/// `wp_targeted_link_rel`'s split around `<script>`/`<style>` before it remembered absent
/// closing tags.
fn targeted_link_rel_reference(text: &str) -> String {
    let low = text.to_ascii_lowercase();
    if !low.contains("target") || !low.contains("<a ") {
        return text.to_string();
    }
    static OPEN: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)<(script|style)"));
    let mut out = String::with_capacity(text.len() + 32);
    let mut pos = 0;
    let mut search = 0;
    while let Some(c) = OPEN.captures_at(text, search) {
        let (Some(all), Some(name)) = (c.get(0), c.get(1)) else {
            break;
        };
        let close = format!("</{}>", name.as_str().to_ascii_lowercase());
        match low[all.end()..].find(&close) {
            Some(rel_end) => {
                let end = all.end() + rel_end + close.len();
                out.push_str(&targeted_part(&text[pos..all.start()]));
                out.push_str(&text[all.start()..end]);
                pos = end;
                search = end;
            }
            None => search = all.end(),
        }
    }
    out.push_str(&targeted_part(&text[pos..]));
    out
}

/// The `$url_clickable` pass before its look-ahead and resumption were made linear.
fn make_url_clickable_reference(s: &str) -> String {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut out = String::with_capacity(s.len() + 64);
    let mut copied = 0;
    let mut i = 0;
    while i + 1 < chars.len() {
        let lead = chars[i].1;
        if !(is_php_space(lead) || "(<.,;:!?".contains(lead)) {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut j = start;
        while j < chars.len() && (chars[j].1.is_ascii_alphanumeric() || chars[j].1 == '_') {
            j += 1;
        }
        let word = j - start;
        let has_sep = chars.get(j).map(|c| c.1) == Some(':')
            && chars.get(j + 1).map(|c| c.1) == Some('/')
            && chars.get(j + 2).map(|c| c.1) == Some('/');
        if !(1..=20).contains(&word) || !has_sep {
            i += 1;
            continue;
        }
        let body = j + 3;
        let mut k = body;
        let mut bytes = 0;
        while k < chars.len() && !is_php_space(chars[k].1) {
            bytes += chars[k].1.len_utf8();
            k += 1;
        }
        if k == body || bytes > 2000 || k >= chars.len() {
            i += 1;
            continue;
        }
        let mut e = body;
        while e < chars.len() && is_url_char(chars[e].1) {
            e += 1;
        }
        loop {
            if e < chars.len() && "'.,;:!?)".contains(chars[e].1) {
                let mut f = e + 1;
                while f < chars.len() && is_url_char(chars[f].1) {
                    f += 1;
                }
                if f > e + 1 {
                    e = f;
                    continue;
                }
            }
            break;
        }
        let trailing_paren = chars.get(e).map(|c| c.1) == Some(')');
        let url_start = chars[start].0;
        let url_end = chars.get(e).map_or(s.len(), |c| c.0);
        let mut url = s[url_start..url_end].to_string();
        let mut suffix = String::new();
        let mut end = url_end;
        if trailing_paren {
            end += 1;
            if url.find('(').is_some_and(|p| p > 0) {
                url.push(')');
            } else {
                suffix.push(')');
            }
        }
        while url.matches('(').count() < url.matches(')').count() {
            let Some(p) = url.rfind(')') else { break };
            suffix = format!("{}{suffix}", &url[p..]);
            url.truncate(p);
        }
        let escaped = esc_url(&url, true);
        out.push_str(&s[copied..url_start]);
        if escaped.is_empty() {
            out.push_str(&s[url_start..end]);
        } else {
            out.push_str(&format!(
                "<a href=\"{escaped}\" rel=\"nofollow ugc\">{escaped}</a>{suffix}"
            ));
        }
        copied = end;
        i = chars.iter().position(|c| c.0 >= end).unwrap_or(chars.len());
    }
    out.push_str(&s[copied..]);
    out
}

#[test]
fn the_hand_written_split_cuts_where_the_pattern_does() {
    for s in inputs() {
        assert_eq!(split(&s), split_reference(&s), "{s:?}");
    }
    // Long lines of comment openers, with and without a last newline or a closing arrow.
    for tail in ["", "\n", "\nX", "-->", "\n-->"] {
        let s = format!("{}{tail}", "<!--a>".repeat(50));
        assert_eq!(split(&s), split_reference(&s), "{s:?}");
    }
}

/// Attribute lists built from their grammar's pieces (names, `=` with spaces around it,
/// double-, single- and unquoted values, separators, slashes, garbage), the same for the
/// same `seed`.
fn attribute_lists(count: usize, seed: u64) -> Vec<String> {
    const NAMES: &[&str] = &[
        "href", "title", "HREF", "cite", "a", "_x", "data-y", "on:click", "1bad", "", "-",
    ];
    const EQ: &[&str] = &["=", " = ", "\t=", "= ", ""];
    const VALUES: &[&str] = &[
        "\"x\"",
        "'y'",
        "z",
        "\"\"",
        "''",
        "\"a b\"",
        "'a\"b'",
        "\"javascript:alert(1)\"",
        "http://e.test/",
        "\"x",
        "'y",
        "\"x\"/",
        "'y'/",
        "z/",
        "\"x\"\n",
        "&#58;",
        "",
    ];
    const SEPARATORS: &[&str] = &[" ", "", "  ", "\t", "\n", "/", " /", "/ ", "\"", "'", "<", ">", "é"];
    let mut state = seed | 1;
    let mut next = move |n: usize| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    };
    (0..count)
        .map(|_| {
            let mut s = String::new();
            for _ in 0..next(6) {
                s.push_str(SEPARATORS[next(SEPARATORS.len())]);
                s.push_str(NAMES[next(NAMES.len())]);
                if next(4) > 0 {
                    s.push_str(EQ[next(EQ.len())]);
                    s.push_str(VALUES[next(VALUES.len())]);
                }
            }
            if next(2) == 0 {
                s.push_str(SEPARATORS[next(SEPARATORS.len())]);
            }
            s
        })
        .collect()
}

#[test]
fn hair_walking_an_offset_reads_what_copying_read() {
    for s in attribute_lists(10_000, 3) {
        assert_eq!(hair(&s), hair_reference(&s), "{s:?}");
        let tag = format!("<a {s}>");
        assert_eq!(split(&tag), split_reference(&tag), "{tag:?}");
    }
    for s in inputs() {
        assert_eq!(hair(&s), hair_reference(&s), "{s:?}");
        // As an attribute list after a tag name.
        let list = format!(" {s}");
        assert_eq!(hair(&list), hair_reference(&list), "{list:?}");
    }
}

#[test]
fn link_rel_and_clickable_links_are_unchanged_by_the_linear_rewrite() {
    for s in inputs() {
        assert_eq!(targeted_link_rel(&s), targeted_link_rel_reference(&s), "{s:?}");
        let padded = format!(" {s} ");
        assert_eq!(
            make_url_clickable(&padded),
            make_url_clickable_reference(&padded),
            "{s:?}"
        );
    }
    let s = format!("<a target=x href=y>{}", "<script".repeat(30));
    assert_eq!(targeted_link_rel(&s), targeted_link_rel_reference(&s));
    let s = " http://e.test/a)b)c)(d))) (http://e.test/(x)) ";
    assert_eq!(make_url_clickable(s), make_url_clickable_reference(s));
}

#[test]
fn thousands_of_attributes_and_tags_filter_like_a_few() {
    // The shapes that were quadratic, at a size the reference still handles quickly.
    let attrs = format!("<a href=x title=y {}>x</a>", "t=z title=w ".repeat(300));
    let out = wp_kses(&attrs);
    assert_eq!(out, "<a href=\"x\" title=\"y\">x</a>");
    let tags = "<a href=x title=y>".repeat(300);
    assert_eq!(wp_kses(&tags), "<a href=\"x\" title=\"y\">".repeat(300));
}
