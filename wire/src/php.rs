//! Ports of the PHP and WordPress functions that both the proxy and the syncer apply to a
//! comment's fields (`trim`, `(int)`, `strip_tags`, `is_email`): one copy, so the proxy's
//! early checks and the syncer's read a comment exactly as PHP would, and as each other.

/// PHP `trim()` with its default characters.
pub fn php_trim(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\0' | '\x0B'))
}

/// PHP 8's `(int)` cast of a string: leading whitespace skipped, then the number PHP reads
/// there (sign, digits; a fraction or an exponent make it a float), the rest ignored. A
/// float, or an integer too long for `i64`, is truncated towards zero and clamped to the
/// `i64` range; an infinite one is 0, as is a string that starts with no number.
pub fn php_int(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0B', '\x0C']);
    let b = t.as_bytes();
    let digits_end = |from: usize| {
        from + b
            .get(from..)
            .map_or(0, |d| d.iter().take_while(|c| c.is_ascii_digit()).count())
    };
    let sign = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let mut end = digits_end(sign);
    let mut float = false;
    if b.get(end) == Some(&b'.') && (end > sign || digits_end(end + 1) > end + 1) {
        end = digits_end(end + 1);
        float = true;
    }
    if end == sign {
        return 0;
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        let exponent = end + 1 + usize::from(matches!(b.get(end + 1), Some(b'-' | b'+')));
        if digits_end(exponent) > exponent {
            end = digits_end(exponent);
            float = true;
        }
    }
    // Everything up to `end` is ASCII.
    let number = &t[..end];
    if !float {
        if let Ok(n) = number.parse::<i64>() {
            return n;
        }
    }
    match number.parse::<f64>() {
        // `as` truncates and saturates, as PHP's cast of a float string does.
        Ok(f) if f.is_finite() => f as i64,
        _ => 0,
    }
}

/// PHP's `strip_tags` (no allowed tags): a port of the state machine of PHP 8's
/// `php_strip_tags_ex` — text (0), an HTML tag (1: nested `<` counted, quotes honoured),
/// a PHP block (2), `<!…>` (3, `<!DOCTYPE` back to 1) and a comment (4, up to `-->`, the
/// opening dashes included). NUL bytes are dropped; a `<` followed by whitespace is text.
pub fn strip_tags(s: &str) -> String {
    let b: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut state = 0u8;
    let mut depth = 0usize;
    let mut in_q: Option<char> = None;
    let mut lc = '\0';
    let mut br: i64 = 0;
    let mut is_xml = false;
    let at = |i: usize, back: usize| if i >= back { b[i - back] } else { '\0' };
    let next_is_space = |i: usize| b.get(i + 1).is_some_and(|n| is_php_space(*n));
    let toggle = |in_q: &mut Option<char>, c: char| {
        if in_q.is_none_or(|q| q == c) {
            *in_q = if in_q.is_some() { None } else { Some(c) };
        }
    };
    for i in 0..b.len() {
        let c = b[i];
        if c == '\0' {
            continue;
        }
        match state {
            0 => match c {
                '<' if in_q.is_none() => {
                    if next_is_space(i) {
                        out.push(c);
                    } else {
                        lc = '<';
                        state = 1;
                    }
                }
                '<' => {}
                '>' if depth > 0 => depth -= 1,
                '>' if in_q.is_some() => {}
                _ => out.push(c),
            },
            1 => match c {
                '<' if in_q.is_none() && !next_is_space(i) => depth += 1,
                '>' if depth > 0 => depth -= 1,
                '>' if in_q.is_none() => {
                    lc = '>';
                    // In an XML declaration, "->" does not end the tag.
                    if !(is_xml && at(i, 1) == '-') {
                        in_q = None;
                        is_xml = false;
                        state = 0;
                    }
                }
                '"' | '\'' if i > 0 => toggle(&mut in_q, c),
                '!' if in_q.is_none() && at(i, 1) == '<' => {
                    state = 3;
                    lc = c;
                }
                '?' if in_q.is_none() && at(i, 1) == '<' => {
                    br = 0;
                    state = 2;
                }
                _ => {}
            },
            2 => match c {
                '(' if lc != '"' && lc != '\'' => {
                    lc = '(';
                    br += 1;
                }
                ')' if lc != '"' && lc != '\'' => {
                    lc = ')';
                    br -= 1;
                }
                '>' if depth > 0 => depth -= 1,
                '>' if in_q.is_none() && br == 0 && lc != '"' && at(i, 1) == '?' => {
                    in_q = None;
                    state = 0;
                }
                '"' | '\'' => {
                    if i > 0 && at(i, 1) != '\\' {
                        if lc == c {
                            lc = '\0';
                        } else if lc != '\\' {
                            lc = c;
                        }
                    }
                    if i > 0 {
                        toggle(&mut in_q, c);
                    }
                }
                // "<?xml" is markup, not PHP.
                'l' | 'L' if i > 4 && b[i - 4..i].iter().collect::<String>().eq_ignore_ascii_case("<?xm") => {
                    state = 1;
                    is_xml = true;
                }
                _ => {}
            },
            3 => match c {
                '>' if depth > 0 => depth -= 1,
                '>' if in_q.is_none() => {
                    in_q = None;
                    state = 0;
                }
                '"' | '\'' if i > 0 && at(i, 1) != '\\' => toggle(&mut in_q, c),
                '-' if at(i, 1) == '-' && at(i, 2) == '!' => state = 4,
                'E' | 'e' if i >= 7 && b[i - 6..i].iter().collect::<String>().eq_ignore_ascii_case("doctyp") => {
                    state = 1;
                }
                _ => {}
            },
            _ => {
                if c == '>' && at(i, 1) == '-' && at(i, 2) == '-' {
                    in_q = None;
                    state = 0;
                }
            }
        }
    }
    out
}

fn is_php_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r')
}

/// `strpos($email, '@', 1)`: the first `@` at byte 1 or later.
pub fn at_after_first_byte(email: &str) -> Option<usize> {
    email.bytes().skip(1).position(|b| b == b'@').map(|i| i + 1)
}

/// A character `is_email` and `sanitize_email` allow in an address's local part.
pub fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c)
}

/// `is_email`.
pub fn is_email(email: &str) -> bool {
    if email.len() < 6 {
        return false;
    }
    let Some(at) = at_after_first_byte(email) else {
        return false;
    };
    let (local, domain) = (&email[..at], &email[at + 1..]);
    // PHP's `$` also matches before a final newline.
    let local = local.strip_suffix('\n').unwrap_or(local);
    if local.is_empty() || !local.chars().all(is_local_char) {
        return false;
    }
    if domain.contains("..") {
        return false;
    }
    if domain.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\0' | '\x0B' | '.')) != domain {
        return false;
    }
    let subs: Vec<&str> = domain.split('.').collect();
    if subs.len() < 2 {
        return false;
    }
    subs.iter().all(|sub| {
        sub.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\0' | '\x0B' | '-')) == *sub && {
            let s = sub.strip_suffix('\n').unwrap_or(sub);
            !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs with `(int)` of each as PHP 8.2 gives it: PHP's outputs, computed once with
    /// php-cli and written here.
    const PHP_INT: &[(&str, i64)] = &[
        ("12abc", 12),
        (" 12", 12),
        (" -3", -3),
        ("+5", 5),
        ("-", 0),
        ("+", 0),
        ("abc", 0),
        ("", 0),
        ("0", 0),
        ("-0", 0),
        ("007", 7),
        ("1.9", 1),
        ("-1.9", -1),
        (".5", 0),
        ("-.5", 0),
        (".", 0),
        ("5.", 5),
        ("1e3", 1000),
        ("1E3", 1000),
        ("1e3abc", 1000),
        ("1e", 1),
        ("1e+", 1),
        ("1e+2x", 100),
        ("1e-2", 0),
        ("2.5e1", 25),
        ("1.5e3", 1500),
        (" \t\n\r\x0B\x0C42", 42),
        ("\08", 0),
        ("12 ", 12),
        ("0x1A", 0),
        ("9223372036854775807", i64::MAX),
        ("9223372036854775808", i64::MAX),
        ("-9223372036854775808", i64::MIN),
        ("-9223372036854775809", i64::MIN),
        ("99999999999999999999", i64::MAX),
        ("-99999999999999999999", i64::MIN),
        ("1e18", 1000000000000000000),
        ("1e19", i64::MAX),
        ("-1e19", i64::MIN),
        ("1e999", 0),
        ("-1e999", 0),
        ("9223372036854775807.5", i64::MAX),
        ("٣", 0),
    ];

    #[test]
    fn php_int_gives_what_php_gives() {
        for (input, int) in PHP_INT {
            assert_eq!(php_int(input), *int, "(int) {input:?}");
        }
    }

    #[test]
    fn is_email_accepts_what_wordpress_does() {
        assert!(is_email("a@b.example"));
        assert!(is_email("first.last+tag@sub.example.org"));
        assert!(!is_email("a@b"));
        assert!(!is_email("@b.example"));
        assert!(!is_email("a@b..example"));
        assert!(!is_email("a@-b.example"));
        assert!(!is_email("a b@c.example"));
        assert!(!is_email("a@b.ex_ample"));
    }

    /// Inputs with `strip_tags`, `trim` and `trim(strip_tags())` of each as PHP 8.2 gives
    /// them: PHP's outputs, computed once with php-cli and written here.
    const PHP_STRIP_TRIM: &[(&str, &str, &str, &str)] = &[
        ("a < b", "a < b", "a < b", "a < b"),
        ("a > b", "a > b", "a > b", "a > b"),
        ("<b>x</b>", "x", "<b>x</b>", "x"),
        ("x<y", "x", "x<y", "x"),
        ("a <b c", "a ", "a <b c", "a"),
        ("1 <2 and 3> 0", "1  0", "1 <2 and 3> 0", "1  0"),
        ("a<b>c</b><i", "ac", "a<b>c</b><i", "ac"),
        ("<", "", "<", ""),
        ("<<b>>c", "c", "<<b>>c", "c"),
        ("a<\tb", "a<\tb", "a<\tb", "a<\tb"),
        ("<b title='>'>k</b>", "k", "<b title='>'>k</b>", "k"),
        ("<a href=\"x>y\">t</a>", "t", "<a href=\"x>y\">t</a>", "t"),
        ("<!-- c -->d", "d", "<!-- c -->d", "d"),
        ("<!DOCTYPE html>z", "z", "<!DOCTYPE html>z", "z"),
        ("<?php x ?>y", "y", "<?php x ?>y", "y"),
        ("<?xml version=\"1.0\"?>q", "q", "<?xml version=\"1.0\"?>q", "q"),
        (
            "héllo <i>wörld</i> ✓",
            "héllo wörld ✓",
            "héllo <i>wörld</i> ✓",
            "héllo wörld ✓",
        ),
        ("", "", "", ""),
        ("x\0y", "xy", "x\0y", "xy"),
        (" \0\x0B\t\n\r x \r\n\t\x0B\0 ", " \x0B\t\n\r x \r\n\t\x0B ", "x", "x"),
        ("\x0Cx\x0C", "\x0Cx\x0C", "\x0Cx\x0C", "\x0Cx\x0C"),
        ("<b>Ann</b> ", "Ann ", "<b>Ann</b>", "Ann"),
    ];

    #[test]
    fn strip_tags_and_trim_give_what_php_gives() {
        for (input, stripped, trimmed, both) in PHP_STRIP_TRIM {
            assert_eq!(strip_tags(input), *stripped, "strip_tags({input:?})");
            assert_eq!(php_trim(input), *trimmed, "trim({input:?})");
            assert_eq!(php_trim(&strip_tags(input)), *both, "trim(strip_tags({input:?}))");
        }
    }
}
