//! Verdicts: what the proxy answers for each record, built as `wp-comments-post.php` builds
//! its answer — the `Location` of the 302 (permalink or `redirect_to`, moderation query for
//! held comments without cookie consent, `#comment-ID`, then `wp_safe_redirect`'s cleaning),
//! the cookie values, or the status and message of a refusal.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use strata_wire::comment::{Status, Verdict};
use strata_wire::redirect::{sanitize_redirect, validate_redirect};

use crate::escape;
use crate::rules::Refusal;
use crate::site;
use crate::store::Inserted;

/// The verdict on a refused submission.
pub fn refused(seq: u64, r: &Refusal) -> Verdict {
    match r {
        Refusal::Ignored(_) => Verdict {
            seq,
            status: Status::Ignored,
            http: 200,
            message: String::new(),
            comment_id: None,
            location: None,
            cookie_author: None,
            cookie_email: None,
            cookie_url: None,
        },
        Refusal::Rejected { http, message, .. } => Verdict {
            seq,
            status: Status::Rejected,
            http: *http,
            message: (*message).to_string(),
            comment_id: None,
            location: None,
            cookie_author: None,
            cookie_email: None,
            cookie_url: None,
        },
    }
}

/// The status of an inserted comment.
pub fn status(approved: &str) -> Status {
    match approved {
        "1" => Status::Approved,
        "spam" => Status::Spam,
        "trash" => Status::Trash,
        _ => Status::Held,
    }
}

/// What the answer to an inserted comment needs from the site.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// `get_permalink()` of the comment's post.
    pub permalink: &'a str,
    /// `home`, for the redirect host check.
    pub home: &'a str,
    /// `siteurl`, for the `admin_url()` fallback.
    pub siteurl: &'a str,
    /// `wp_salt('auth')`, for the moderation hash; `None` when unknown.
    pub auth_salt: Option<&'a str>,
}

/// The verdict on an inserted comment.
pub fn inserted(seq: u64, c: &Inserted, site: Site<'_>) -> Verdict {
    Verdict {
        seq,
        status: status(c.approved),
        http: 302,
        message: String::new(),
        comment_id: Some(c.id),
        location: Some(location(c, site)),
        cookie_author: Some(c.filtered.author.clone()),
        cookie_email: Some(c.filtered.email.clone()),
        // wp_set_comment_cookies stores esc_url() of the URL.
        cookie_url: Some(escape::esc_url(&c.filtered.url, true)),
    }
}

/// The `Location` WordPress sends after saving the comment.
pub fn location(c: &Inserted, site: Site<'_>) -> String {
    let id = c.id;
    let mut location = match c.record.redirect_to.as_deref().filter(|r| !r.is_empty()) {
        Some(r) => format!("{r}#comment-{id}"),
        None => format!("{}#comment-{id}", site.permalink),
    };
    if !c.record.consent && c.approved == "0" && !c.filtered.email.is_empty() {
        match site.auth_salt {
            Some(salt) => {
                let hash = site::wp_hash(&c.date_gmt, salt);
                location = add_query_args(
                    &location,
                    &[("unapproved", &id.to_string()), ("moderation-hash", &hash)],
                );
            }
            None => tracing::error!(
                comment = id,
                "no AUTH_KEY/AUTH_SALT known: the held comment's link lacks its moderation hash"
            ),
        }
    }
    let fallback = format!("{}/wp-admin/", site.siteurl.trim_end_matches('/'));
    let location = validate_redirect(&sanitize_redirect(&location), site.home).unwrap_or(fallback);
    sanitize_redirect(&location)
}

/// PHP `urlencode`: everything but `A-Za-z0-9-_.` encoded, spaces as `+`.
fn urlencode(s: &str) -> String {
    const SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b' ');
    utf8_percent_encode(s, SET).to_string().replace(' ', "+")
}

/// PHP `urldecode` (`+` is a space).
fn urldecode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// `add_query_arg()` with several keys: the existing query re-encoded, the keys set (in
/// place when present, else appended), the fragment kept.
pub fn add_query_args(uri: &str, args: &[(&str, &str)]) -> String {
    let (uri, frag) = match uri.find('#') {
        Some(i) => (&uri[..i], &uri[i..]),
        None => (uri, ""),
    };
    let lower = uri.to_ascii_lowercase();
    let (protocol, uri) = if lower.starts_with("http://") {
        (&uri[..7], &uri[7..])
    } else if lower.starts_with("https://") {
        (&uri[..8], &uri[8..])
    } else {
        ("", uri)
    };
    let (base, query) = match uri.split_once('?') {
        Some((b, q)) => (format!("{b}?"), q.to_string()),
        None if !protocol.is_empty() || !uri.contains('=') => (format!("{uri}?"), String::new()),
        None => (String::new(), uri.to_string()),
    };
    let mut qs: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (urldecode(k), urldecode(v));
        if k.is_empty() {
            continue;
        }
        let v = urlencode(&v);
        match qs.iter_mut().find(|(key, _)| *key == k) {
            Some(slot) => slot.1 = v,
            None => qs.push((k, v)),
        }
    }
    for (k, v) in args {
        match qs.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = (*v).to_string(),
            None => qs.push(((*k).to_string(), (*v).to_string())),
        }
    }
    let ret: Vec<String> = qs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{}={v}", urlencode(k))
            }
        })
        .collect();
    let ret = ret.join("&");
    let ret = ret.trim_matches('?');
    let out = format!("{protocol}{base}{ret}{frag}");
    let out = if frag.is_empty() {
        out.trim_end_matches('?').to_string()
    } else {
        out
    };
    out.replace("?#", "#")
}

#[cfg(test)]
mod tests;
