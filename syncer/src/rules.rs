//! WordPress's comment rules as plain functions over plain data: which submissions are
//! refused (and with which status and message), which are silently ignored, and which
//! status an accepted comment gets (`check_comment`, `wp_check_comment_disallowed_list`).
//!
//! The checks that need the database (duplicates, floods, the author's earlier approved
//! comments, the parent's status) are done by the store, which hands their answers in here.

use strata_wire::php::{is_email, php_int, php_trim};

use crate::format::{self, Filtered};
use crate::kses;
use crate::options::Options;

/// The WordPress version whose behaviour is reproduced, `(major, minor)`.
pub type WpVersion = (u32, u32);

/// What a post row says about commenting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    /// `ID`.
    pub id: u64,
    /// `post_type`.
    pub post_type: String,
    /// `get_post_status()`: the status, attachments resolved through their parent.
    pub status: String,
    /// `comment_status`.
    pub comment_status: String,
    /// `post_password` is set.
    pub has_password: bool,
    /// `post_date_gmt` as Unix seconds; `None` for `0000-00-00 00:00:00`.
    pub date_gmt: Option<i64>,
}

/// Why a submission is not inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// WordPress answers an empty 200 (`WP_Error` without data).
    Ignored(&'static str),
    /// WordPress answers `wp_die()` with this status and message.
    Rejected {
        /// HTTP status.
        http: u16,
        /// The message (HTML) inside `<p>…</p>`.
        message: &'static str,
        /// A short label for logs and metrics.
        reason: &'static str,
    },
}

impl Refusal {
    /// The label used in logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Ignored(r) => r,
            Refusal::Rejected { reason, .. } => reason,
        }
    }
}

const fn rejected(http: u16, message: &'static str, reason: &'static str) -> Refusal {
    Refusal::Rejected { http, message, reason }
}

/// Reply to a missing or unapproved parent (WordPress 6.2 and later).
pub const UNAPPROVED_PARENT: Refusal = rejected(
    403,
    "Sorry, replies to unapproved comments are not allowed.",
    "unapproved_parent",
);
/// Comments are closed.
pub const CLOSED: Refusal = rejected(403, "Sorry, comments are closed for this item.", "closed");
/// `comment_registration` is on.
pub const MUST_LOG_IN: Refusal = rejected(403, "Sorry, you must be logged in to comment.", "must_log_in");
/// Name or e-mail missing.
pub const REQUIRED_FIELDS: Refusal = rejected(
    200,
    "<strong>Error:</strong> Please fill the required fields.",
    "required_fields",
);
/// Invalid e-mail.
pub const INVALID_EMAIL: Refusal = rejected(
    200,
    "<strong>Error:</strong> Please enter a valid email address.",
    "invalid_email",
);
/// Empty comment.
pub const EMPTY_COMMENT: Refusal = rejected(
    200,
    "<strong>Error:</strong> Please type your comment text.",
    "empty_comment",
);
/// Name too long.
pub const AUTHOR_TOO_LONG: Refusal = rejected(200, "<strong>Error:</strong> Your name is too long.", "too_long");
/// E-mail too long.
pub const EMAIL_TOO_LONG: Refusal = rejected(
    200,
    "<strong>Error:</strong> Your email address is too long.",
    "too_long",
);
/// URL too long.
pub const URL_TOO_LONG: Refusal = rejected(200, "<strong>Error:</strong> Your URL is too long.", "too_long");
/// Comment too long.
pub const CONTENT_TOO_LONG: Refusal = rejected(200, "<strong>Error:</strong> Your comment is too long.", "too_long");
/// Duplicate.
pub const DUPLICATE: Refusal = rejected(
    409,
    "Duplicate comment detected; it looks as though you&#8217;ve already said that!",
    "duplicate",
);
/// Flood.
pub const FLOOD: Refusal = rejected(429, "You are posting comments too quickly. Slow down.", "flood");

/// The insert failed.
pub const SAVE_FAILED: Refusal = rejected(
    500,
    "<strong>Error:</strong> The comment could not be saved. Please try again later.",
    "save_failed",
);

/// Largest field sizes in bytes (`wp_get_comment_fields_max_lengths` on the default schema):
/// author, e-mail, URL, content.
pub const MAX_LENGTHS: [usize; 4] = [245, 100, 200, 65525];

/// The raw submission, as `wp_handle_comment_submission` holds it.
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    /// `comment_post_ID`.
    pub post_id: u64,
    /// `author`.
    pub author: &'a str,
    /// `email`.
    pub email: &'a str,
    /// `url`.
    pub url: &'a str,
    /// `comment`.
    pub content: &'a str,
}

/// The checks of `wp_handle_comment_submission` after the parent check, in its order, for
/// an anonymous visitor: post missing / private / closed / trashed / not public / password
/// protected, registration required, required fields, empty comment, lengths.
///
/// `now` is the submission time in Unix seconds (for `close_comments_days_old`).
pub fn check_submission(s: Submission<'_>, post: Option<&Post>, o: &Options, now: i64) -> Result<(), Refusal> {
    let Some(post) = post.filter(|p| !p.comment_status.is_empty()) else {
        return Err(Refusal::Ignored("post_not_found"));
    };
    if post.status == "private" {
        return Err(Refusal::Ignored("private_post"));
    }
    if !comments_open(post, o, now) {
        return Err(CLOSED);
    }
    if post.status == "trash" {
        return Err(Refusal::Ignored("trashed_post"));
    }
    // Registered public and private statuses; every other one (draft, pending, future,
    // auto-draft, inherit without parent…) is not public for an anonymous visitor.
    if post.status != "publish" {
        return Err(Refusal::Ignored("post_not_public"));
    }
    if post.has_password {
        return Err(Refusal::Ignored("password_protected"));
    }
    if o.comment_registration {
        return Err(MUST_LOG_IN);
    }
    if o.require_name_email {
        if s.email.is_empty() || s.author.is_empty() {
            return Err(REQUIRED_FIELDS);
        }
        if !is_email(s.email) {
            return Err(INVALID_EMAIL);
        }
    }
    if s.content.is_empty() {
        return Err(EMPTY_COMMENT);
    }
    let [author, email, url, content] = MAX_LENGTHS;
    if s.author.len() > author {
        return Err(AUTHOR_TOO_LONG);
    }
    if s.email.len() > email {
        return Err(EMAIL_TOO_LONG);
    }
    if s.url.len() > url {
        return Err(URL_TOO_LONG);
    }
    if s.content.len() > content {
        return Err(CONTENT_TOO_LONG);
    }
    Ok(())
}

/// `comments_open()` with core's `_close_comments_for_old_post` filter.
pub fn comments_open(post: &Post, o: &Options, now: i64) -> bool {
    if post.comment_status != "open" {
        return false;
    }
    if !o.close_comments_for_old_posts || o.close_comments_days_old == 0 || post.post_type != "post" {
        return true;
    }
    match post.date_gmt {
        None => true,
        // PHP's product turns float where an i64 would overflow: a huge limit never closes.
        Some(date) => now - date <= o.close_comments_days_old.saturating_mul(86_400),
    }
}

/// `(int) $parent->comment_approved` is non-zero: only '1' (and other numeric strings
/// starting with a non-zero number) count as approved.
pub fn parent_is_approved(approved: Option<&str>) -> bool {
    approved.is_some_and(|a| php_int(a) != 0)
}

/// `wp_new_comment`'s parent normalisation: the parent is kept only when it is approved or
/// held (`wp_get_comment_status` 'approved' / 'unapproved').
pub fn normalize_parent(parent: u64, approved: Option<&str>) -> u64 {
    match approved {
        Some(a) if parent > 0 && (php_loose_eq_int(a, 1) || php_loose_eq_int(a, 0)) && !a.is_empty() => parent,
        _ => 0,
    }
}

/// PHP 8's `$string == $int`: numeric strings compare as numbers, others never equal.
fn php_loose_eq_int(s: &str, n: i64) -> bool {
    let t = s.trim();
    !t.is_empty() && t.parse::<f64>().is_ok_and(|f| f == n as f64)
}

/// What the database said about a comment for `check_comment`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// An approved comment by the same author and e-mail (or by the user owning the e-mail)
    /// exists.
    pub previously_approved: bool,
}

/// `check_comment()`: whether a comment is approved (`true`) or held.
pub fn check_comment(c: &Filtered, o: &Options, history: History, version: WpVersion) -> bool {
    if o.comment_moderation {
        return false;
    }
    if o.comment_max_links > 0 && kses::link_count(&c.content) as u64 >= o.comment_max_links {
        return false;
    }
    let mod_keys = php_trim(&o.moderation_keys);
    if matches_word_list(mod_keys, c, false, version) {
        return false;
    }
    if o.comment_previously_approved {
        if c.author.is_empty() || c.email.is_empty() {
            return false;
        }
        return history.previously_approved && (mod_keys.is_empty() || !c.email.contains(mod_keys));
    }
    true
}

/// `wp_check_comment_disallowed_list()`.
pub fn is_disallowed(c: &Filtered, o: &Options, version: WpVersion) -> bool {
    let keys = php_trim(&o.disallowed_keys);
    !keys.is_empty() && matches_word_list(keys, c, true, version)
}

/// Whether any line of a moderation word list occurs (case-insensitively) in one of the
/// comment's fields.
fn matches_word_list(list: &str, c: &Filtered, with_stripped_content: bool, version: WpVersion) -> bool {
    if list.is_empty() {
        return false;
    }
    let stripped = with_stripped_content.then(|| format::wp_strip_all_tags(&c.content));
    let unicode = version >= (6, 6);
    list.split('\n').map(php_trim).any(|word| {
        // PHP's empty(): '' and '0' are skipped.
        if word.is_empty() || word == "0" {
            return false;
        }
        let needle = fold(word, unicode);
        [&c.author, &c.email, &c.url, &c.content]
            .into_iter()
            .chain(stripped.as_ref())
            .chain([&c.ip, &c.agent])
            .any(|field| fold(field, unicode).contains(&needle))
    })
}

/// Case folding of `preg_match('#…#i')` (ASCII only) or `#…#iu` (Unicode).
fn fold(s: &str, unicode: bool) -> String {
    if unicode {
        s.to_lowercase()
    } else {
        s.to_ascii_lowercase()
    }
}

/// The status WordPress gives an accepted anonymous comment: '1', '0' or 'trash'
/// (`EMPTY_TRASH_DAYS` is non-zero by default).
pub fn approval(c: &Filtered, o: &Options, history: History, version: WpVersion) -> &'static str {
    if is_disallowed(c, o, version) {
        return "trash";
    }
    if check_comment(c, o, history, version) {
        "1"
    } else {
        "0"
    }
}

#[cfg(test)]
mod tests;
