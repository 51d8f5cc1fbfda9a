//! Ports of the WordPress formatting functions a comment goes through on its way into
//! `wp_comments` (`sanitize_text_field`, `sanitize_email`, `esc_url`,
//! `_wp_specialchars`, `wp_strip_all_tags`, `convert_invalid_entities`), and
//! [`filter_comment`], which applies them in `wp_filter_comment`'s order for an anonymous
//! commenter.

use std::sync::LazyLock;

use regex::Regex;
use strata_wire::php::{at_after_first_byte, is_local_char, php_trim, strip_tags};

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
    static OCTET: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)%[a-f0-9]{2}"));
    static SPACES: LazyLock<Regex> = LazyLock::new(|| re(r" +"));
    let collapsed = WS.replace_all(&filtered, " ");
    let mut filtered = php_trim(&collapsed).to_string();
    let mut found = false;
    while let Some(m) = OCTET.find(&filtered) {
        let octet = m.as_str().to_string();
        filtered = filtered.replace(&octet, "");
        found = true;
    }
    if found {
        filtered = php_trim(&SPACES.replace_all(&filtered, " ")).to_string();
    }
    filtered
}

/// `wp_pre_kses_less_than`: a `<` that does not open a complete tag is escaped.
pub(crate) fn pre_kses_less_than(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        // '%<[^>]*?((?=<)|>|$)%': up to the next '<' (excluded) or '>' (included) or the end.
        let mut end = tail.len();
        let mut closed = false;
        for (i, c) in tail.char_indices().skip(1) {
            if c == '<' {
                end = i;
                break;
            }
            if c == '>' {
                end = i + 1;
                closed = true;
                break;
            }
        }
        let piece = &tail[..end];
        if closed {
            out.push_str(piece);
        } else {
            out.push_str(&specialchars(piece, Quotes::Both));
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
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

/// Which quotes `specialchars` encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quotes {
    /// `ENT_NOQUOTES`.
    None,
    /// `ENT_QUOTES`.
    Both,
}

/// `_wp_specialchars($s, $quotes, false, false)`: `&`, `<`, `>` (and quotes) encoded, existing
/// valid entities kept.
pub fn specialchars(s: &str, quotes: Quotes) -> String {
    if s.is_empty() || !s.contains(['&', '<', '>', '"', '\'']) {
        return s.to_string();
    }
    let s = kses::normalize_entities(s);
    let mut out = String::with_capacity(s.len() + 16);
    let mut rest = s.as_str();
    while let Some(c) = rest.chars().next() {
        let len = c.len_utf8();
        match c {
            '&' => {
                if let Some(n) = entity_len(rest) {
                    out.push_str(&rest[..n]);
                    rest = &rest[n..];
                    continue;
                }
                out.push_str("&amp;");
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if quotes == Quotes::Both => out.push_str("&quot;"),
            '\'' if quotes == Quotes::Both => out.push_str("&#039;"),
            _ => out.push(c),
        }
        rest = &rest[len..];
    }
    out
}

/// The length of a valid entity at the start of `s` (for `htmlspecialchars` without double
/// encoding: HTML 4.01 names, decimal and hexadecimal references).
fn entity_len(s: &str) -> Option<usize> {
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
        name != "apos" && kses::ENTITY_NAMES.contains(&name)
    };
    ok.then_some(semi + 2)
}

/// `esc_attr`.
pub fn esc_attr(s: &str) -> String {
    specialchars(s, Quotes::Both)
}

/// `esc_html`.
pub fn esc_html(s: &str) -> String {
    specialchars(s, Quotes::Both)
}

/// Characters `esc_url` keeps (ASCII; every non-ASCII character is kept too).
fn url_char(c: char) -> bool {
    !c.is_ascii() || c.is_ascii_alphanumeric() || "-~+_.?#=!&;,/:%@$|*'()[]".contains(c)
}

/// `esc_url($url, null, $display ? 'display' : 'db')` (`esc_url_raw` / `sanitize_url` for the
/// database): unsafe characters and disallowed protocols out, `http://` added when there is
/// no scheme; `''` when nothing safe is left.
pub fn esc_url(url: &str, display: bool) -> String {
    if url.is_empty() {
        return String::new();
    }
    let url = url
        .trim_start_matches([' ', '\t', '\n', '\r', '\0', '\x0B'])
        .replace(' ', "%20");
    let mut url: String = url.chars().filter(|c| url_char(*c)).collect();
    if url.is_empty() {
        return url;
    }
    if !url.to_ascii_lowercase().starts_with("mailto:") {
        // _deep_replace: until none is left.
        loop {
            let next = url
                .replace("%0d", "")
                .replace("%0a", "")
                .replace("%0D", "")
                .replace("%0A", "");
            if next == url {
                break;
            }
            url = next;
        }
    }
    url = url.replace(";//", "://");
    static PHP_FILE: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^[a-z0-9-]+?\.php"));
    if !url.contains(':') && !url.starts_with(['/', '#', '?']) && !PHP_FILE.is_match(&url) {
        url = format!("http://{url}");
    }
    if display {
        url = kses::normalize_entities(&url)
            .replace("&amp;", "&#038;")
            .replace('\'', "&#039;");
    }
    if url.contains(['[', ']']) {
        let front = url_front(&url);
        let end_dirty = url.replacen(&front, "", 1);
        let end_clean = end_dirty.replace('[', "%5B").replace(']', "%5D");
        if !end_dirty.is_empty() {
            url = url.replace(&end_dirty, &end_clean);
        }
    }
    if url.starts_with('/') {
        return url;
    }
    let good = kses::bad_protocol(&url);
    if good.to_lowercase() != url.to_lowercase() {
        return String::new();
    }
    good
}

/// The scheme, user info, host and port of a URL, as `esc_url` rebuilds them.
fn url_front(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) => {
            (Some(s), r)
        }
        _ => (None, url.strip_prefix("//").unwrap_or(url)),
    };
    let mut front = String::new();
    match scheme {
        Some(s) => front.push_str(&format!("{s}://")),
        None if url.starts_with('/') => front.push_str("//"),
        None => {}
    }
    if scheme.is_some() || url.starts_with("//") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        front.push_str(authority);
    }
    front
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
