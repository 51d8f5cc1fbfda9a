//! A port of WordPress's `wp_kses` with the anonymous commenter's allowed tags
//! (`$allowedtags`), plus the two content filters around it that decide what a comment
//! looks like in the database: `wp_rel_ugc` and the link count of `make_clickable`.
//!
//! PHP's regular expressions here work on bytes in the "C" locale: `\s` is
//! `[ \t\n\x0B\f\r]` and `\w` is `[A-Za-z0-9_]`, so every pattern spells those out in ASCII.
//! The port follows the PHP functions step by step (same names, same order) so it can be
//! checked against the source line by line.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;
use strata_wire::php::php_trim;

use crate::escape::{bad_protocol, esc_attr, esc_url, no_null, normalize_entities, pre_kses_less_than};

/// Elements an anonymous commenter may use, with their allowed attributes.
const ALLOWED_TAGS: &[(&str, &[&str])] = &[
    ("a", &["href", "title"]),
    ("abbr", &["title"]),
    ("acronym", &["title"]),
    ("b", &[]),
    ("blockquote", &["cite"]),
    ("cite", &[]),
    ("code", &[]),
    ("del", &["datetime"]),
    ("em", &[]),
    ("i", &[]),
    ("q", &["cite"]),
    ("s", &[]),
    ("strike", &[]),
    ("strong", &[]),
];

/// `wp_kses_uri_attributes()`.
const URI_ATTRIBUTES: &[&str] = &[
    "action",
    "archive",
    "background",
    "cite",
    "classid",
    "codebase",
    "data",
    "formaction",
    "href",
    "icon",
    "longdesc",
    "manifest",
    "poster",
    "profile",
    "src",
    "usemap",
    "xmlns",
];

fn re(pattern: &str) -> Regex {
    // The patterns are constants of this file, checked by the unit tests.
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in pattern {pattern:?}: {e}"))
}

macro_rules! pattern {
    ($name:ident, $re:expr) => {
        static $name: LazyLock<Regex> = LazyLock::new(|| re($re));
    };
}

// PHP's `$` (no D modifier) also matches before a final newline: `\n?\z` where the newline's
// consumption does not matter.
pattern!(MALFORMED, r"^<(?-u:\s)*(/(?-u:\s)*)?([a-zA-Z0-9-]+)([^>]*)>?\n?\z");
pattern!(XHTML_SLASH, r"(?-u:\s)*/(?-u:\s)*\n?\z");
pattern!(ATTR_NAME, r"^[_a-zA-Z][-_a-zA-Z0-9:.]*");
pattern!(ATTR_EQ, r"^(?-u:\s)*=(?-u:\s)*");
pattern!(ATTR_WS, r"^(?-u:\s)+");
pattern!(VAL_DQ, r#"^"([^"]*)"((?-u:\s)+|/?\n?\z)"#);
pattern!(VAL_DQ_CUT, r#"^"[^"]*"((?-u:\s)+|\z)"#);
pattern!(VAL_SQ, r"^'([^']*)'((?-u:\s)+|/?\n?\z)");
pattern!(VAL_SQ_CUT, r"^'[^']*'((?-u:\s)+|\z)");
pattern!(VAL_BARE, r#"^([^\t\n\x0B\x0C\r "']+)((?-u:\s)+|/?\n?\z)"#);
pattern!(VAL_BARE_CUT, r#"^[^\t\n\x0B\x0C\r "']+((?-u:\s)+|\z)"#);
pattern!(
    HTML_ERROR,
    r#"^("[^"]*("|\z)|'[^']*('|\z)|[^\t\n\x0B\x0C\r ])*(?-u:\s)*"#
);
pattern!(REL_A, r"(?i)<a ((?-s:.)+?)>");
pattern!(MAKE_CLICKABLE_SPLIT, r"<[^<>]+>");

/// `wp_kses($string, $allowedtags)` with the default protocols.
pub fn wp_kses(s: &str) -> String {
    let s = no_null(s, false);
    let s = normalize_entities(&s);
    // The `pre_kses` filters: `wp_pre_kses_less_than`, then `wp_pre_kses_block_attributes`,
    // of which only the repair of "--->" comment endings is reproduced (block attributes in
    // `<!-- wp:… -->` comments are not filtered here).
    let s = pre_kses_less_than(&s);
    let s = repair_comment_endings(&s);
    split(&s)
}

/// `filter_block_content`'s first step: `<!--x--->` becomes `<!--x-->`.
fn repair_comment_endings(s: &str) -> String {
    static ENDING: LazyLock<Regex> = LazyLock::new(|| re(r"<!--((?-s:.)*?)--->"));
    if !s.contains("<!--") || !s.contains("--->") {
        return s.to_string();
    }
    ENDING
        .replace_all(s, |c: &regex::Captures<'_>| {
            format!("<!--{}-->", c[1].trim_end_matches('-'))
        })
        .into_owned()
}

/// `wp_kses_split`: every tag, comment or stray `>` goes through [`split2`].
///
/// The pieces are those PHP's pattern `%(<!--.*?(-->|$))|(<[^>]*(>|$)|>)%` matches, found by
/// hand: a regular expression engine, for each `<!--x>` piece, looks ahead to the end of
/// the line for the comment alternative it prefers before settling for the tag, which is
/// quadratic on a long line of them. Here the next `\n` and `-->` are found once and reused.
fn split(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut newline = NextOf::new(s, "\n");
    let mut arrow = NextOf::new(s, "-->");
    let mut last = 0;
    while let Some(off) = s[last..].find(['<', '>']) {
        let start = last + off;
        let end = split_piece_end(s, start, &mut newline, &mut arrow);
        out.push_str(&s[last..start]);
        out.push_str(&split2(&s[start..end]));
        last = end;
    }
    out.push_str(&s[last..]);
    out
}

/// Where the piece that pattern matches at `start` (a `<` or a `>`) ends: for `<!--`, at the
/// first `-->` on its line, or at the end of the string if its line is the last (PHP's
/// `.*?(-->|$)`); otherwise for `<`, just past the next `>` or at the end (`<[^>]*(>|$)`);
/// for `>`, just past it.
fn split_piece_end(s: &str, start: usize, newline: &mut NextOf<'_>, arrow: &mut NextOf<'_>) -> usize {
    let rest = &s[start..];
    if rest.starts_with('>') {
        return start + 1;
    }
    if rest.starts_with("<!--") {
        let from = start + 4;
        let nl = newline.at(from);
        match arrow.at(from) {
            Some(a) if nl.is_none_or(|n| a < n) => return a + 3,
            _ if nl.is_none_or(|n| n + 1 == s.len()) => return s.len(),
            _ => {}
        }
    }
    rest[1..].find('>').map_or(s.len(), |i| start + 1 + i + 1)
}

/// The next occurrence of `needle` in `hay` at or after a position, for positions that
/// never go down: every byte is searched about once, however many times it is asked.
struct NextOf<'a> {
    hay: &'a str,
    needle: &'static str,
    /// The last answer (`None` inside: no occurrence at or after the position asked).
    last: Option<Option<usize>>,
}

impl<'a> NextOf<'a> {
    fn new(hay: &'a str, needle: &'static str) -> NextOf<'a> {
        NextOf {
            hay,
            needle,
            last: None,
        }
    }

    /// The first occurrence at or after `from` (a character boundary, not below any earlier
    /// `from`).
    fn at(&mut self, from: usize) -> Option<usize> {
        match self.last {
            Some(Some(p)) if p >= from => return Some(p),
            Some(None) => return None,
            _ => {}
        }
        let found = self.hay.get(from..).and_then(|h| h.find(self.needle)).map(|i| from + i);
        self.last = Some(found);
        found
    }
}

/// `wp_kses_split2`: one tag-like piece.
fn split2(piece: &str) -> String {
    // wp_kses_stripslashes.
    let piece = piece.replace("\\\"", "\"");
    if !piece.starts_with('<') {
        return "&gt;".to_string();
    }
    if piece.starts_with("<!--") {
        let mut s = piece.replace("<!--", "").replace("-->", "");
        loop {
            let next = wp_kses(&s);
            if next == s {
                break;
            }
            s = next;
        }
        if s.is_empty() {
            return String::new();
        }
        let s = collapse_dashes(&s);
        let s = s.strip_suffix('-').unwrap_or(&s);
        return format!("<!--{s}-->");
    }
    let Some(m) = MALFORMED.captures(&piece) else {
        return String::new();
    };
    let slash = m.get(1).map_or("", |g| g.as_str()).trim();
    let elem = &m[2];
    let attrlist = m.get(3).map_or("", |g| g.as_str());
    let Some((_, allowed)) = ALLOWED_TAGS.iter().find(|(t, _)| t.eq_ignore_ascii_case(elem)) else {
        return String::new();
    };
    if !slash.is_empty() {
        return format!("</{elem}>");
    }
    attr(elem, attrlist, allowed)
}

/// `preg_replace('/--+/', '-', $s)`.
fn collapse_dashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_dash = false;
    for ch in s.chars() {
        if ch == '-' && prev_dash {
            continue;
        }
        prev_dash = ch == '-';
        out.push(ch);
    }
    out
}

/// `wp_kses_attr`: the element with only its allowed attributes.
fn attr(elem: &str, attrlist: &str, allowed: &[&str]) -> String {
    let xhtml_slash = if XHTML_SLASH.is_match(attrlist) { " /" } else { "" };
    if allowed.is_empty() {
        return format!("<{elem}{xhtml_slash}>");
    }
    let mut attr2 = String::new();
    for a in hair(attrlist) {
        if allowed.iter().any(|n| n.eq_ignore_ascii_case(&a.name)) {
            attr2.push(' ');
            attr2.push_str(&a.whole);
        }
    }
    let attr2: String = attr2.chars().filter(|c| *c != '<' && *c != '>').collect();
    format!("<{elem}{attr2}{xhtml_slash}>")
}

/// One attribute as `wp_kses_hair` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attr {
    /// The name as written.
    pub name: String,
    /// The value (after `wp_kses_bad_protocol` for URI attributes).
    pub value: String,
    /// The attribute as it will be written back.
    pub whole: String,
    /// No value was given.
    pub vless: bool,
}

/// `wp_kses_hair`: an attribute list parsed the way kses does it (first occurrence of a name
/// wins; garbage is skipped with `wp_kses_html_error`).
///
/// PHP cuts each parsed piece off the front of the string; this walks an offset through it
/// instead, and remembers the names seen in a set, so the work is linear in the length of
/// the list however many attributes it holds.
pub(crate) fn hair(attr: &str) -> Vec<Attr> {
    let mut out: Vec<Attr> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    // `&attr[pos..]` is what PHP's `$attr` holds at each step.
    let mut pos = 0;
    let mut mode = 0;
    let mut name = String::new();
    let mut add = |out: &mut Vec<Attr>, a: Attr| {
        if seen.insert(a.name.clone()) {
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
    while pos < attr.len() {
        let rest = &attr[pos..];
        let mut working = false;
        match mode {
            0 => {
                if let Some(m) = ATTR_NAME.find(rest) {
                    name = m.as_str().to_string();
                    pos += m.end();
                    working = true;
                    mode = 1;
                }
            }
            1 => {
                if let Some(m) = ATTR_EQ.find(rest) {
                    pos += m.end();
                    working = true;
                    mode = 2;
                } else if let Some(m) = ATTR_WS.find(rest) {
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
                    pos += m.end();
                }
            }
            _ => {
                let quoted = [(&VAL_DQ, &VAL_DQ_CUT, '"'), (&VAL_SQ, &VAL_SQ_CUT, '\'')];
                for (matcher, cut, q) in quoted {
                    if let Some(c) = matcher.captures(rest) {
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
                        // preg_replace of the anchored cut: nothing when it does not match.
                        pos += cut.find(rest).map_or(0, |m| m.end());
                        break;
                    }
                }
                if !working {
                    if let Some(c) = VAL_BARE.captures(rest) {
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
                        pos += VAL_BARE_CUT.find(rest).map_or(0, |m| m.end());
                    }
                }
            }
        }
        if !working {
            // wp_kses_html_error: drop the next word (quoted parts included).
            let cut = HTML_ERROR.find(rest).map_or(0, |m| m.end());
            // Cannot be 0 (the pattern consumes at least one character of a non-empty
            // string), but never loop forever: then one character goes.
            pos += if cut == 0 {
                rest.chars().next().map_or(1, char::len_utf8)
            } else {
                cut
            };
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

/// `wp_targeted_link_rel` on slashed content (as `pre_comment_content` gets it): links with a
/// `target` are rebuilt from their parsed attributes with `rel="noopener"` added, outside
/// `script` and `style` elements. kses later drops `target` and `rel`, but the rebuilt tag is
/// what it sees.
pub fn targeted_link_rel(text: &str) -> String {
    let low = text.to_ascii_lowercase();
    if !low.contains("target") || !low.contains("<a ") {
        return text.to_string();
    }
    // Split out <script>…</script> and <style>…</style> (first closing tag of the same name).
    static OPEN: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)<(script|style)"));
    let mut out = String::with_capacity(text.len() + 32);
    let mut pos = 0;
    let mut search = 0;
    // Where each closing tag is known to be absent from (searching again after every
    // `<script` with no `</script>` would be quadratic).
    let mut absent: [(&str, usize); 2] = [("</script>", usize::MAX), ("</style>", usize::MAX)];
    while let Some(c) = OPEN.captures_at(text, search) {
        let (Some(all), Some(name)) = (c.get(0), c.get(1)) else {
            break;
        };
        let close = format!("</{}>", name.as_str().to_ascii_lowercase());
        let known_absent = absent.iter().any(|(tag, from)| *tag == close && *from <= all.end());
        let found = if known_absent {
            None
        } else {
            low[all.end()..].find(&close)
        };
        if found.is_none() {
            for (tag, from) in &mut absent {
                if *tag == close {
                    *from = (*from).min(all.end());
                }
            }
        }
        match found {
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

fn targeted_part(part: &str) -> String {
    static LINK: LazyLock<Regex> =
        LazyLock::new(|| re(r"(?i)<a[\t\n\x0B\x0C\r ]([^>]*target[\t\n\x0B\x0C\r ]*=[^>]*)>"));
    static UNESCAPED_QUOTE: LazyLock<Regex> = LazyLock::new(|| re(r#"(^|[^\\])['"]"#));
    static ESCAPED_QUOTE: LazyLock<Regex> = LazyLock::new(|| re(r#"\\(['"])"#));
    LINK.replace_all(part, |c: &regex::Captures<'_>| {
        let original = &c[1];
        let escaped = !UNESCAPED_QUOTE.is_match(original);
        let link_html = if escaped {
            ESCAPED_QUOTE.replace_all(original, "$1").into_owned()
        } else {
            original.to_string()
        };
        let mut atts = hair(&link_html);
        if !atts.iter().any(|a| a.name == "target") {
            return format!("<a {original}>");
        }
        let mut rel = "noopener".to_string();
        if let Some(existing) = atts.iter().find(|a| a.name == "rel") {
            let mut parts: Vec<&str> = Vec::new();
            for p in existing.value.split(is_php_space).chain(std::iter::once("noopener")) {
                if !p.is_empty() && !parts.contains(&p) {
                    parts.push(p);
                }
            }
            rel = parts.join(" ");
        }
        let whole = format!("rel=\"{}\"", esc_attr(&rel));
        match atts.iter_mut().find(|a| a.name == "rel") {
            Some(a) => a.whole = whole,
            None => atts.push(Attr {
                name: "rel".into(),
                value: String::new(),
                whole,
                vless: false,
            }),
        }
        let mut html = atts.iter().map(|a| a.whole.as_str()).collect::<Vec<_>>().join(" ");
        if escaped {
            html = html.replace('\'', "\\'").replace('"', "\\\"");
        }
        format!("<a {html}>")
    })
    .into_owned()
}

/// `wp_rel_ugc`: `rel="nofollow ugc"` on every link that does not point at the site itself
/// (`home_host`: the host of `home_url()`).
pub fn rel_ugc(s: &str, home_host: &str) -> String {
    REL_A
        .replace_all(s, |c: &regex::Captures<'_>| {
            let text = &c[1];
            let atts = hair(text);
            if let Some(href) = atts.iter().find(|a| a.name == "href").filter(|a| !a.value.is_empty()) {
                let (scheme, host) = url_scheme_host(&href.value);
                if matches!(scheme.as_deref(), Some("http" | "https"))
                    && host.is_some_and(|h| h.eq_ignore_ascii_case(home_host))
                {
                    return format!("<a {text}>");
                }
            }
            if let Some(rel) = atts.iter().find(|a| a.name == "rel").filter(|a| !a.value.is_empty()) {
                let mut parts: Vec<String> = rel.value.split(' ').map(|p| php_trim(p).to_string()).collect();
                for r in ["nofollow", "ugc"] {
                    if !parts.iter().any(|p| p == r) {
                        parts.push(r.to_string());
                    }
                }
                let mut dedup: Vec<String> = Vec::new();
                for p in parts {
                    if !dedup.contains(&p) {
                        dedup.push(p);
                    }
                }
                let mut html = String::new();
                for a in atts.iter().filter(|a| a.name != "rel") {
                    if a.vless {
                        html.push_str(&a.name);
                        html.push(' ');
                    } else {
                        html.push_str(&format!("{}=\"{}\" ", a.name, esc_attr(&a.value)));
                    }
                }
                return format!("<a {} rel=\"{}\">", php_trim(&html), esc_attr(&dedup.join(" ")));
            }
            format!("<a {text} rel=\"nofollow ugc\">")
        })
        .into_owned()
}

/// Scheme and host of a URL as `wp_parse_url` would find them (lower-cased scheme).
fn url_scheme_host(url: &str) -> (Option<String>, Option<&str>) {
    let Some((scheme, rest)) = url.split_once(':') else {
        return (None, None);
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return (None, None);
    }
    let scheme = Some(scheme.to_ascii_lowercase());
    let Some(rest) = rest.strip_prefix("//") else {
        return (scheme, None);
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if hostport.starts_with('[') {
        hostport
            .split_once(']')
            .map_or(hostport, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    (scheme, (!host.is_empty()).then_some(host))
}

/// The number of links `check_comment` counts in a comment: `<a …href` after the
/// `comment_text` filters, of which only `make_clickable` adds links (bare URLs, `www.` /
/// `ftp.` hosts and e-mail addresses outside tags and outside `code`/`pre`).
pub fn link_count(content: &str) -> usize {
    count_a_href(&make_clickable(content))
}

/// `preg_match_all('/<a [^>]*href/i', …)`.
fn count_a_href(s: &str) -> usize {
    static A_HREF: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)<a [^>]*href"));
    A_HREF.find_iter(s).count()
}

/// A port of `make_clickable`, close enough to count the links it makes.
pub fn make_clickable(text: &str) -> String {
    let mut r = String::with_capacity(text.len() + 64);
    let mut nested = 0usize;
    let mut pieces: Vec<&str> = Vec::new();
    let mut last = 0;
    for m in MAKE_CLICKABLE_SPLIT.find_iter(text) {
        pieces.push(&text[last..m.start()]);
        pieces.push(m.as_str());
        last = m.end();
    }
    pieces.push(&text[last..]);
    for piece in pieces {
        let low = piece.to_ascii_lowercase();
        let opens = ["<code", "<pre", "<script", "<style"].iter().any(|t| {
            low.strip_prefix(t)
                .and_then(|rest| rest.chars().next())
                .is_some_and(|c| c == '>' || is_php_space(c))
        });
        if opens {
            nested += 1;
        } else if nested > 0 && matches!(low.as_str(), "</code>" | "</pre>" | "</script>" | "</style>") {
            nested -= 1;
        }
        if nested > 0 || piece.is_empty() || (piece.starts_with('<') && !tag_is_url(piece)) {
            r.push_str(piece);
            continue;
        }
        // Pieces over 10000 bytes are split at whitespace by WordPress; links in them are
        // made the same way chunk by chunk, which this single pass approximates.
        let padded = format!(" {piece} ");
        let s = make_url_clickable(&padded);
        let s = make_web_ftp_clickable(&s);
        let s = make_email_clickable(&s);
        r.push_str(&s[1..s.len() - 1]);
    }
    static NESTED: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)(<a([ \r\n\t]+[^>]+?>|>))<a [^>]+?>([^>]+?)</a></a>"));
    NESTED.replace_all(&r, "$1$3</a>").into_owned()
}

fn is_php_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r')
}

/// `preg_match('|^<\s*[\w]{1,20}+://|', $piece)`.
fn tag_is_url(piece: &str) -> bool {
    let rest = piece[1..].trim_start_matches(is_php_space);
    let word: usize = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    (1..=20).contains(&word) && rest[word..].starts_with("://")
}

fn is_url_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || !c.is_ascii() || "_#%~/@[]*(+=&$-".contains(c)
}

/// The `$url_clickable` pass of `make_clickable` (scheme://… after whitespace or punctuation).
fn make_url_clickable(s: &str) -> String {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    // For each character, where the run of non-space characters from it ends (the
    // look-ahead below, answered once for the whole string instead of once per candidate).
    let mut run_end = vec![chars.len(); chars.len() + 1];
    for k in (0..chars.len()).rev() {
        run_end[k] = if is_php_space(chars[k].1) { k } else { run_end[k + 1] };
    }
    let byte_at = |k: usize| chars.get(k).map_or(s.len(), |c| c.0);
    let mut out = String::with_capacity(s.len() + 64);
    let mut copied = 0; // byte offset copied so far
    let mut i = 0; // char index
    while i + 1 < chars.len() {
        let lead = chars[i].1;
        if !(is_php_space(lead) || "(<.,;:!?".contains(lead)) {
            i += 1;
            continue;
        }
        // Scheme: 1-20 word characters, possessive, then "://".
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
        // (?=\S{1,2000}\s): 1 to 2000 non-space characters (bytes, in PHP) then a space.
        let k = run_end[body];
        let bytes = byte_at(k) - byte_at(body);
        if k == body || bytes > 2000 || k >= chars.len() {
            i += 1;
            continue;
        }
        // URL characters, with punctuation only when followed by a URL character.
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
        // Unbalanced closing parentheses go to the suffix, from the last one back.
        let (mut open, mut close) = (url.matches('(').count(), url.matches(')').count());
        let mut moved: Vec<String> = Vec::new();
        while open < close {
            let Some(p) = url.rfind(')') else { break };
            open -= url[p..].matches('(').count();
            close -= 1;
            moved.push(url[p..].to_string());
            url.truncate(p);
        }
        if !moved.is_empty() {
            moved.reverse();
            moved.push(suffix);
            suffix = moved.concat();
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
        // Continue after the match (the next lead character must be at or after `end`).
        i = chars.partition_point(|c| c.0 < end);
    }
    out.push_str(&s[copied..]);
    out
}

/// The `www.` / `ftp.` pass of `make_clickable`.
fn make_web_ftp_clickable(s: &str) -> String {
    static WEB: LazyLock<Regex> = LazyLock::new(|| {
        re(r"(?is)([\t\n\x0B\x0C\r >])((www|ftp)\.[A-Za-z0-9_\x{80}-\x{10FFFF}#$%&~/.\-;:=,?@\[\]+]+)")
    });
    WEB.replace_all(s, |c: &regex::Captures<'_>| {
        let mut dest = format!("http://{}", &c[2]);
        let mut ret = String::new();
        if let Some(last) = dest.chars().last().filter(|ch| ".,;:)".contains(*ch)) {
            ret.push(last);
            dest.pop();
        }
        let dest = esc_url(&dest, true);
        if dest.is_empty() {
            return c[0].to_string();
        }
        format!("{}<a href=\"{dest}\" rel=\"nofollow ugc\">{dest}</a>{ret}", &c[1])
    })
    .into_owned()
}

/// The e-mail pass of `make_clickable`.
fn make_email_clickable(s: &str) -> String {
    static EMAIL: LazyLock<Regex> =
        LazyLock::new(|| re(r"(?i)([\t\n\x0B\x0C\r >])([.0-9a-z_+-]+)@(([0-9a-z-]+\.)+[0-9a-z]{2,})"));
    EMAIL
        .replace_all(s, |c: &regex::Captures<'_>| {
            let email = format!("{}@{}", &c[2], &c[3]);
            format!("{}<a href=\"mailto:{email}\">{email}</a>", &c[1])
        })
        .into_owned()
}

#[cfg(test)]
mod tests;
