//! Ports of the WordPress formatting functions a comment goes through on its way into
//! `wp_comments` (`sanitize_text_field`, `sanitize_email`, `wp_strip_all_tags`,
//! `convert_invalid_entities`), and [`filter_comment`], which applies them, with those of
//! [`escape`](crate::escape) and [`kses`], in `wp_filter_comment`'s order for
//! an anonymous commenter.

use std::sync::LazyLock;

use regex::Regex;
use strata_wire::php::{at_after_first_byte, is_local_char, php_trim, strip_tags};

use crate::escape::{esc_url, pre_kses_less_than, specialchars, Quotes};
use crate::kses;

/// A comment's fields as WordPress stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// `comment_author`.
    pub author: String,
    /// `comment_author_email`.
    pub email: String,
    /// `comment_author_url`.
    pub url: String,
    /// `comment_content`.
    pub content: String,
    /// `comment_author_IP`.
    pub ip: String,
    /// `comment_agent`.
    pub agent: String,
}

/// The raw fields of a submitted comment (as `wp_handle_comment_submission` holds them).
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a> {
    /// Author, `trim(strip_tags())`ed.
    pub author: &'a str,
    /// E-mail, trimmed.
    pub email: &'a str,
    /// URL, trimmed.
    pub url: &'a str,
    /// Content, trimmed.
    pub content: &'a str,
    /// `REMOTE_ADDR`.
    pub ip: &'a str,
    /// `User-Agent`.
    pub agent: &'a str,
}

/// `wp_new_comment`'s normalisation plus `wp_filter_comment` for an anonymous commenter
/// (the default filters of WordPress 6.x; `home_host` is the host of `home_url()`, whose
/// links get no `rel="nofollow ugc"`).
pub fn filter_comment(raw: Raw<'_>, home_host: &str) -> Filtered {
    let ip: String = raw
        .ip
        .chars()
        .filter(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | ',' | ' '))
        .collect();
    // The filters run on slashed data (wp_handle_comment_submission slashes it, each
    // wp_filter_kses unslashes, filters and slashes again, wp_insert_comment unslashes):
    // that only shows with backslashes and NUL bytes, which the ports keep faithful.
    let kses_slashed = |slashed: &str| kses::wp_kses(&stripslashes(slashed));
    Filtered {
        author: specialchars(
            &kses_slashed(&sanitize_text_field(&addslashes(raw.author))),
            Quotes::None,
        ),
        email: kses_slashed(&sanitize_email(php_trim(&addslashes(raw.email)))),
        url: kses_slashed(&esc_url(&wp_strip_all_tags(&addslashes(raw.url)), false)),
        content: kses::rel_ugc(
            &kses_slashed(&kses::targeted_link_rel(&convert_invalid_entities(&addslashes(
                raw.content,
            )))),
            home_host,
        ),
        ip,
        agent: truncate_bytes(raw.agent, 254).to_string(),
    }
}

/// PHP `addslashes`: `\\`, `'`, `"` and NUL escaped with a backslash.
pub fn addslashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            '\'' | '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\0"),
            _ => out.push(c),
        }
    }
    out
}

/// PHP `stripslashes`: `\\0` is NUL, `\\x` is `x`, a lone trailing backslash goes.
pub fn stripslashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('\0'),
            Some(n) => out.push(n),
            None => {}
        }
    }
    out
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in pattern {pattern:?}: {e}"))
}

/// `sanitize_text_field`: tags stripped, whitespace collapsed, `%XX` octets removed, trimmed.
pub fn sanitize_text_field(s: &str) -> String {
    let mut filtered = s.to_string();
    if filtered.contains('<') {
        filtered = pre_kses_less_than(&filtered);
        filtered = wp_strip_all_tags(&filtered);
        filtered = filtered.replace("<\n", "&lt;\n");
    }
    static WS: LazyLock<Regex> = LazyLock::new(|| re(r"[\r\n\t ]+"));
    static SPACES: LazyLock<Regex> = LazyLock::new(|| re(r" +"));
    let collapsed = WS.replace_all(&filtered, " ");
    let (mut filtered, found) = remove_octets(php_trim(&collapsed));
    if found {
        filtered = php_trim(&SPACES.replace_all(&filtered, " ")).to_string();
    }
    filtered
}

/// `sanitize_text_field`'s octet loop: `%XX` (hex, either case) removed until none is left,
/// including those a removal brings together (`%%4141` → `%41` → ``); whether any was.
///
/// PHP removes every copy of the first one found and searches again, which is quadratic on
/// nested octets. No octet can overlap another (none starts where another ends: a hex digit
/// is never `%`), so every order of removals ends in the same string, and one pass with a
/// stack reaches it: each character is pushed, and an octet completed on top is popped.
fn remove_octets(s: &str) -> (String, bool) {
    let mut out = String::with_capacity(s.len());
    let mut found = false;
    for c in s.chars() {
        out.push(c);
        if let Some([b'%', h, l]) = out.as_bytes().last_chunk::<3>() {
            if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() {
                out.truncate(out.len() - 3);
                found = true;
            }
        }
    }
    (out, found)
}

/// `wp_strip_all_tags`: `script`/`style` elements with their content, then every tag, trimmed.
pub fn wp_strip_all_tags(s: &str) -> String {
    static SCRIPT: LazyLock<Regex> = LazyLock::new(|| re(r"(?is)<(script|style)[^>]*?>.*?</(script|style)>"));
    // The pattern requires the same element to close (`\1`); check that by hand.
    let mut out = String::new();
    let mut last = 0;
    for c in SCRIPT.captures_iter(s) {
        let (Some(all), Some(open), Some(close)) = (c.get(0), c.get(1), c.get(2)) else {
            continue;
        };
        if open.as_str().eq_ignore_ascii_case(close.as_str()) {
            out.push_str(&s[last..all.start()]);
            last = all.end();
        }
    }
    out.push_str(&s[last..]);
    php_trim(&strip_tags(&out)).to_string()
}

/// `sanitize_email`.
pub fn sanitize_email(email: &str) -> String {
    if email.len() < 6 {
        return String::new();
    }
    let Some(at) = at_after_first_byte(email) else {
        return String::new();
    };
    let (local, domain) = (&email[..at], &email[at + 1..]);
    let local: String = local.chars().filter(|c| is_local_char(*c)).collect();
    if local.is_empty() {
        return String::new();
    }
    static DOTS: LazyLock<Regex> = LazyLock::new(|| re(r"\.{2,}"));
    let domain = DOTS.replace_all(domain, "");
    let domain = domain.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\0' | '\x0B' | '.'));
    if domain.is_empty() {
        return String::new();
    }
    let subs: Vec<&str> = domain.split('.').collect();
    if subs.len() < 2 {
        return String::new();
    }
    let new_subs: Vec<String> = subs
        .iter()
        .map(|sub| {
            sub.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\0' | '\x0B' | '-'))
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .collect();
    if new_subs.len() < 2 {
        return String::new();
    }
    format!("{local}@{}", new_subs.join("."))
}

/// `convert_invalid_entities`: Windows-1252 references `&#128;`–`&#159;` to their Unicode ones.
pub fn convert_invalid_entities(s: &str) -> String {
    if !s.contains("&#1") {
        return s.to_string();
    }
    const MAP: [&str; 32] = [
        "&#8364;", "", "&#8218;", "&#402;", "&#8222;", "&#8230;", "&#8224;", "&#8225;", "&#710;", "&#8240;", "&#352;",
        "&#8249;", "&#338;", "", "&#381;", "", "", "&#8216;", "&#8217;", "&#8220;", "&#8221;", "&#8226;", "&#8211;",
        "&#8212;", "&#732;", "&#8482;", "&#353;", "&#8250;", "&#339;", "", "&#382;", "&#376;",
    ];
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find("&#1") {
        out.push_str(&rest[..p]);
        let tail = &rest[p..];
        let hit = tail
            .get(2..6)
            .filter(|d| d.ends_with(';'))
            .and_then(|d| d[..3].parse::<usize>().ok())
            .filter(|n| (128..=159).contains(n));
        match hit {
            Some(n) => {
                out.push_str(MAP[n - 128]);
                rest = &tail[6..];
            }
            None => {
                out.push_str("&#1");
                rest = &tail[3..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
