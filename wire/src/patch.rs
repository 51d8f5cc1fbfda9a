//! Page patches: what the syncer tells the proxies about the comments it committed, so that a
//! node shows them in the pages it holds instead of asking WordPress to render those pages
//! again.
//!
//! A patch rides on the tag ban it replaces ([`Ban::patch`](crate::ban::Ban::patch)): a node
//! that can apply it to a page keeps the page, patched; a page it cannot patch (markup it
//! does not recognise, a page older or newer than the patch expects) is banned as the ban
//! says. The patch only carries values exactly as WordPress prints them; the markup around
//! them is learnt from the page itself, from comments it already shows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most bytes of comment fields a patch may carry: a larger one is sent as its plain ban.
pub const MAX_PATCH_BYTES: usize = 16 * 1024;

/// One comment as WordPress prints it in a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shown {
    /// `comment_ID`.
    pub id: u64,
    /// Each field's printed value by name (see [`fields`]): the exact bytes a page holds.
    pub fields: BTreeMap<String, String>,
}

/// The names of the printed fields a [`Shown`] comment carries.
pub mod fields {
    /// `get_comment_author_link()`: the name, or the name in a link to the author's URL.
    pub const AUTHOR_LINK: &str = "author_link";
    /// `esc_attr( get_comment_author() )`, as in the reply link's label.
    pub const AUTHOR_ATTR: &str = "author_attr";
    /// The avatar's URL up to its query (`http://0.gravatar.com/avatar/HASH`).
    pub const AVATAR: &str = "avatar";
    /// `get_comment_date( 'c' )`.
    pub const DATE_ISO: &str = "date_iso";
    /// `get_comment_date()` in the site's `date_format`.
    pub const DATE: &str = "date";
    /// `get_comment_time()` in the site's `time_format`.
    pub const TIME: &str = "time";
    /// `comment_text()`: the content through the `comment_text` filters.
    pub const CONTENT: &str = "content";
    /// The latest-comments block's author element: the name in a
    /// `<a class="wp-block-latest-comments__comment-author" href="URL">` link, or in a
    /// `<span>` of that class when the comment has no author URL.
    pub const AUTHOR_MARKUP: &str = "author_markup";
    /// `esc_url( get_comment_link() )`: the post's permalink and `#comment-ID`.
    pub const LINK: &str = "link";
    /// The title of the comment's post as the latest-comments block prints it
    /// (`get_the_title()`, `(no title)` when empty).
    pub const TITLE: &str = "title";
}

/// What a patch changes in a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Patch {
    /// New top-level comments at the end of a post's comment list.
    Thread(Thread),
    /// New comments at the top of the site's latest-comments lists.
    Recent(Recent),
}

impl Patch {
    /// The lower-case name used in logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Patch::Thread(_) => "thread",
            Patch::Recent(_) => "recent",
        }
    }

    /// Bytes of printed fields it carries.
    pub fn size(&self) -> usize {
        match self {
            Patch::Thread(t) => t.samples.iter().chain(&t.added).map(Shown::size).sum(),
            Patch::Recent(r) => {
                r.before.len() * std::mem::size_of::<u64>()
                    + r.samples.iter().chain(&r.added).map(Shown::size).sum::<usize>()
            }
        }
    }
}

impl Shown {
    /// Bytes of printed fields.
    pub fn size(&self) -> usize {
        self.fields.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// New top-level comments on one post, appended after the last one the page shows (the
/// comments shown oldest first, not paged, threaded or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thread {
    /// The post.
    pub post: u64,
    /// Its `comment_count` before the new comments: the page's comment heading shows it.
    pub count_before: u64,
    /// Its `comment_count` after them.
    pub count_after: u64,
    /// The comment the page must show last at the top level (the newest one before these).
    pub after: u64,
    /// Top-level comments without replies the page already shows, newest first: the markup
    /// of a new comment is learnt from one and checked against another.
    pub samples: Vec<Shown>,
    /// The new comments, in the order WordPress shows them.
    pub added: Vec<Shown>,
}

/// Most comments before a batch a [`Recent`] patch lists: a latest-comments block showing
/// as many or more is not patched (whether it grows cannot be told).
pub const RECENT_BEFORE: usize = 20;

/// New comments at the top of every latest-comments list (WordPress's block, newest first:
/// `comment_date_gmt DESC, comment_ID DESC`, approved, on published posts). A list is patched
/// when its items are exactly the first of [`Recent::before`]: the new ones go on top, and as
/// many leave at the bottom. A list showing as many comments as `before` holds (all the
/// site had, or [`RECENT_BEFORE`]) is not patched: whether it grows or stays full cannot be
/// told from the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recent {
    /// The newest approved comments before the batch, newest first (at most
    /// [`RECENT_BEFORE`]): the ids a list of the latest comments shows before it changes.
    pub before: Vec<u64>,
    /// Some of `before` (the newest ones that could be printed), printed as the block
    /// prints them: an item's markup is learnt from one and checked against another.
    pub samples: Vec<Shown>,
    /// The batch's approved comments, newest first, printed as the block prints them.
    pub added: Vec<Shown>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_reads_back_as_written() {
        let shown = Shown {
            id: 7,
            fields: [(fields::CONTENT.to_string(), "<p>Hi</p>\n".to_string())].into(),
        };
        let p = Patch::Thread(Thread {
            post: 3,
            count_before: 2,
            count_after: 3,
            after: 5,
            samples: vec![shown.clone()],
            added: vec![shown],
        });
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.starts_with(r#"{"kind":"thread","#), "{json}");
        assert_eq!(serde_json::from_str::<Patch>(&json).unwrap(), p);
        assert_eq!(p.size(), 2 * ("content".len() + "<p>Hi</p>\n".len()));
    }

    #[test]
    fn a_recent_patch_reads_back_as_written() {
        let shown = Shown {
            id: 9,
            fields: [(fields::TITLE.to_string(), "Hello".to_string())].into(),
        };
        let p = Patch::Recent(Recent {
            before: vec![8, 7],
            samples: vec![shown.clone()],
            added: vec![shown],
        });
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.starts_with(r#"{"kind":"recent","#), "{json}");
        assert_eq!(serde_json::from_str::<Patch>(&json).unwrap(), p);
        assert_eq!(p.size(), 2 * 8 + 2 * ("title".len() + "Hello".len()));
    }

    #[test]
    fn an_unknown_patch_is_refused() {
        assert!(serde_json::from_str::<Patch>(r#"{"kind":"everything"}"#).is_err());
    }
}
