//! Ports of WordPress's escaping functions (`_wp_specialchars` with `esc_html` and
//! `esc_attr`, `esc_url`, `wp_pre_kses_less_than`) and of the kses functions they rest on
//! (`wp_kses_normalize_entities`, `wp_kses_bad_protocol`, `wp_kses_no_null`): the ground
//! both `kses` and `format` stand on, which itself uses neither. The patterns spell PHP's
//! byte-wise classes in ASCII, as kses's do.

use std::sync::LazyLock;

use regex::Regex;
use strata_wire::php::php_trim;

/// `wp_allowed_protocols()`.
const ALLOWED_PROTOCOLS: &[&str] = &[
    "http", "https", "ftp", "ftps", "mailto", "news", "irc", "irc6", "ircs", "gopher", "nntp", "feed", "telnet", "mms",
    "rtsp", "sms", "svn", "tel", "fax", "xmpp", "webcal", "urn",
];

/// `$allowedentitynames`.
pub(crate) const ENTITY_NAMES: &[&str] = &[
    "nbsp", "iexcl", "cent", "pound", "curren", "yen", "brvbar", "sect", "uml", "copy", "ordf", "laquo", "not", "shy",
    "reg", "macr", "deg", "plusmn", "acute", "micro", "para", "middot", "cedil", "ordm", "raquo", "iquest", "Agrave",
    "Aacute", "Acirc", "Atilde", "Auml", "Aring", "AElig", "Ccedil", "Egrave", "Eacute", "Ecirc", "Euml", "Igrave",
    "Iacute", "Icirc", "Iuml", "ETH", "Ntilde", "Ograve", "Oacute", "Ocirc", "Otilde", "Ouml", "times", "Oslash",
    "Ugrave", "Uacute", "Ucirc", "Uuml", "Yacute", "THORN", "szlig", "agrave", "aacute", "acirc", "atilde", "auml",
    "aring", "aelig", "ccedil", "egrave", "eacute", "ecirc", "euml", "igrave", "iacute", "icirc", "iuml", "eth",
    "ntilde", "ograve", "oacute", "ocirc", "otilde", "ouml", "divide", "oslash", "ugrave", "uacute", "ucirc", "uuml",
    "yacute", "thorn", "yuml", "quot", "amp", "lt", "gt", "apos", "OElig", "oelig", "Scaron", "scaron", "Yuml", "circ",
    "tilde", "ensp", "emsp", "thinsp", "zwnj", "zwj", "lrm", "rlm", "ndash", "mdash", "lsquo", "rsquo", "sbquo",
    "ldquo", "rdquo", "bdquo", "dagger", "Dagger", "permil", "lsaquo", "rsaquo", "euro", "fnof", "Alpha", "Beta",
    "Gamma", "Delta", "Epsilon", "Zeta", "Eta", "Theta", "Iota", "Kappa", "Lambda", "Mu", "Nu", "Xi", "Omicron", "Pi",
    "Rho", "Sigma", "Tau", "Upsilon", "Phi", "Chi", "Psi", "Omega", "alpha", "beta", "gamma", "delta", "epsilon",
    "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigmaf", "sigma",
    "tau", "upsilon", "phi", "chi", "psi", "omega", "thetasym", "upsih", "piv", "bull", "hellip", "prime", "Prime",
    "oline", "frasl", "weierp", "image", "real", "trade", "alefsym", "larr", "uarr", "rarr", "darr", "harr", "crarr",
    "lArr", "uArr", "rArr", "dArr", "hArr", "forall", "part", "exist", "empty", "nabla", "isin", "notin", "ni", "prod",
    "sum", "minus", "lowast", "radic", "prop", "infin", "ang", "and", "or", "cap", "cup", "int", "sim", "cong",
    "asymp", "ne", "equiv", "le", "ge", "sub", "sup", "nsub", "sube", "supe", "oplus", "otimes", "perp", "sdot",
    "lceil", "rceil", "lfloor", "rfloor", "lang", "rang", "loz", "spades", "clubs", "hearts", "diams", "sup1", "sup2",
    "sup3", "frac14", "frac12", "frac34", "there4",
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

pattern!(NO_NULL, r"[\x00-\x08\x0B\x0C\x0E-\x1F]");
pattern!(SLASH_ZERO, r"\\+0+");
pattern!(NAMED_ENTITY, r"&amp;([A-Za-z]{2,8}[0-9]{0,2});");
pattern!(DEC_ENTITY, r"&amp;#(0*[0-9]{1,7});");
pattern!(HEX_ENTITY, r"&amp;#[Xx](0*[0-9A-Fa-f]{1,6});");
pattern!(COLON_FIX, r"(?i)(&#0*58|&#x0*3a)([;0-9a-f]?)");
pattern!(COLON_SPLIT, r"(?i):|&#0*58;|&#x0*3a;|&colon;");
pattern!(DEC_DECODE, r"&#([0-9]+);");
pattern!(HEX_DECODE, r"&#[Xx]([0-9A-Fa-f]+);");

/// `wp_kses_no_null`: control characters out; with `remove_slash_zero`, `\0` sequences too.
pub(crate) fn no_null(s: &str, remove_slash_zero: bool) -> String {
    let s = NO_NULL.replace_all(s, "");
    if remove_slash_zero {
        SLASH_ZERO.replace_all(&s, "").into_owned()
    } else {
        s.into_owned()
    }
}

/// `valid_unicode`.
fn valid_unicode(i: u64) -> bool {
    i == 0x9
        || i == 0xa
        || i == 0xd
        || (0x20..=0xd7ff).contains(&i)
        || (0xe000..=0xfffd).contains(&i)
        || (0x10000..=0x10ffff).contains(&i)
}

/// `wp_kses_normalize_entities` (HTML context): every `&` disarmed, then the allowed named,
/// decimal and hexadecimal entities restored.
pub(crate) fn normalize_entities(s: &str) -> String {
    let s = s.replace('&', "&amp;");
    let s = NAMED_ENTITY.replace_all(&s, |c: &regex::Captures<'_>| {
        let name = &c[1];
        if ENTITY_NAMES.contains(&name) {
            format!("&{name};")
        } else {
            format!("&amp;{name};")
        }
    });
    let s = DEC_ENTITY.replace_all(&s, |c: &regex::Captures<'_>| {
        let digits = &c[1];
        // PHP's empty("0") is true: "&#0;" disappears.
        if digits == "0" {
            return String::new();
        }
        match digits.parse::<u64>() {
            Ok(n) if valid_unicode(n) => {
                let trimmed = digits.trim_start_matches('0');
                format!("&#{trimmed:0>3};")
            }
            _ => format!("&amp;#{digits};"),
        }
    });
    let s = HEX_ENTITY.replace_all(&s, |c: &regex::Captures<'_>| {
        let hex = &c[1];
        if hex == "0" {
            return String::new();
        }
        match u64::from_str_radix(hex, 16) {
            Ok(n) if valid_unicode(n) => format!("&#x{};", hex.trim_start_matches('0')),
            _ => format!("&amp;#x{hex};"),
        }
    });
    s.into_owned()
}

/// `wp_kses_bad_protocol`: strips disallowed protocols, repeatedly; `''` if that never settles.
pub(crate) fn bad_protocol(s: &str) -> String {
    let mut s = no_null(s, true);
    let mut iterations = 0;
    loop {
        let original = s.clone();
        s = bad_protocol_once(&s, 1);
        iterations += 1;
        if original == s {
            return s;
        }
        if iterations >= 6 {
            return String::new();
        }
    }
}

/// `wp_kses_bad_protocol_once`.
fn bad_protocol_once(s: &str, count: u32) -> String {
    // '/(&#0*58(?![;0-9])|&#x0*3a(?![;a-f0-9]))/i' → '$1;' (no look-ahead here: the
    // character after is captured and checked by hand).
    let s = COLON_FIX
        .replace_all(s, |c: &regex::Captures<'_>| {
            let head = &c[1];
            let next = c.get(2).map_or("", |g| g.as_str());
            let hex = head.to_ascii_lowercase().starts_with("&#x");
            let blocks = match next.chars().next() {
                None => false,
                Some(';') => true,
                Some(ch) if ch.is_ascii_digit() => true,
                Some(ch) => hex && ch.is_ascii_hexdigit(),
            };
            if blocks {
                format!("{head}{next}")
            } else {
                format!("{head};{next}")
            }
        })
        .into_owned();
    let Some(m) = COLON_SPLIT.find(&s) else {
        return s;
    };
    let (before, after) = (&s[..m.start()], &s[m.end()..]);
    if before.contains("/?") {
        return s;
    }
    let mut rest = php_trim(after).to_string();
    let protocol = bad_protocol_once2(before);
    if protocol == "feed:" {
        if count > 2 {
            return String::new();
        }
        rest = bad_protocol_once(&rest, count + 1);
        if rest.is_empty() {
            return rest;
        }
    }
    format!("{protocol}{rest}")
}

/// `wp_kses_bad_protocol_once2`: the protocol plus `:` if allowed, else `''`.
fn bad_protocol_once2(s: &str) -> String {
    let s = decode_entities(s);
    let s: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r'))
        .collect();
    let s = no_null(&s, true).to_ascii_lowercase();
    if ALLOWED_PROTOCOLS.contains(&s.as_str()) {
        format!("{s}:")
    } else {
        String::new()
    }
}

/// `wp_kses_decode_entities` (`chr()` of the code, i.e. its low byte).
fn decode_entities(s: &str) -> String {
    let chr = |n: Option<u64>| -> String {
        let b = (n.unwrap_or(0) % 256) as u8;
        // A byte ≥ 0x80 alone is not UTF-8; it can never form an allowed protocol name,
        // so any placeholder that is not a protocol character keeps the outcome.
        if b < 0x80 {
            char::from(b).to_string()
        } else {
            "\u{FFFD}".to_string()
        }
    };
    let s = DEC_DECODE.replace_all(s, |c: &regex::Captures<'_>| chr(c[1].parse::<u64>().ok()));
    let s = HEX_DECODE.replace_all(&s, |c: &regex::Captures<'_>| {
        let hex = &c[1];
        // hexdec of a long string is a float; only the low byte matters for chr().
        let tail = &hex[hex.len().saturating_sub(2)..];
        chr(u64::from_str_radix(tail, 16).ok())
    });
    s.into_owned()
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
    let s = normalize_entities(s);
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
    // A valid name is letters, digits and `#`: the `;` must come right after such a run
    // (looking further for it, once per `&`, would be quadratic and find nothing valid).
    let semi = body
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'#'))
        .filter(|&i| body.as_bytes()[i] == b';')?;
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
        url = deep_remove_crlf(&url);
    }
    url = url.replace(";//", "://");
    static PHP_FILE: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^[a-z0-9-]+?\.php"));
    if !url.contains(':') && !url.starts_with(['/', '#', '?']) && !PHP_FILE.is_match(&url) {
        url = format!("http://{url}");
    }
    if display {
        url = normalize_entities(&url)
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
    let good = bad_protocol(&url);
    if good.to_lowercase() != url.to_lowercase() {
        return String::new();
    }
    good
}

/// `_deep_replace(['%0d', '%0a', '%0D', '%0A'], $url)`: the four escapes removed until none
/// is left, including those a removal brings together (`%%0d0a` → `%0a` → ``).
///
/// PHP replaces over the whole string until nothing changes, which is quadratic on nested
/// escapes. No escape can overlap another (none starts where another ends), so every order
/// of removals ends in the same string, and one pass with a stack reaches it: each character
/// is pushed, and an escape completed on top of the stack is popped at once.
fn deep_remove_crlf(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        out.push(c);
        if matches!(out.as_bytes().last_chunk(), Some(b"%0d" | b"%0a" | b"%0D" | b"%0A")) {
            out.truncate(out.len() - 3);
        }
    }
    out
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

#[cfg(test)]
mod tests;
