//! Page patches for committed comments (see [`strata_wire::patch`]): each new comment, and
//! the comments its post's page already shows, printed as WordPress prints them, so that the
//! proxies insert the new ones into the pages they hold instead of banning them.
//!
//! A comment's text goes through WordPress's own `comment_text` filters: it is asked of
//! WordPress (its REST API, one request for every comment of a batch), never re-implemented
//! here. The rest (author link, avatar, dates) is printed from the stored fields and the
//! site's options; a value printed wrongly only keeps a proxy from patching (the markup it
//! learns from one comment must reproduce another byte for byte), never shows wrong.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_wire::patch::{fields, Recent, Shown, Thread, RECENT_BEFORE};

use crate::date::php_date;
use crate::escape::{esc_attr, esc_url};
use crate::options::Options;
use crate::site::{md5_hex, SiteTz};

/// Most comments one REST request asks for (WordPress's `per_page` limit).
const PER_REQUEST: usize = 100;
/// Samples a thread patch carries: enough that two of them differ in every field.
const SAMPLES: usize = 4;

/// A stored comment, as the patches need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `comment_ID`.
    pub id: u64,
    /// `comment_parent`.
    pub parent: u64,
    /// `comment_author`.
    pub author: String,
    /// `comment_author_email`.
    pub email: String,
    /// `comment_author_url`.
    pub url: String,
    /// `comment_date` (`Y-m-d H:i:s`, the site's time).
    pub date: String,
    /// `comment_date_gmt`.
    pub date_gmt: String,
    /// Whether approved replies hang under it.
    pub replies: bool,
}

/// What a post's page shows of its comments before a batch's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// `comment_count` after the batch.
    pub count: u64,
    /// The newest approved top-level comments before the batch's, newest first.
    pub newest: Vec<Row>,
}

/// A comment a latest-comments block may list, with what the block prints of its post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The comment.
    pub row: Row,
    /// `comment_post_ID`.
    pub post: u64,
    /// `user_id`: a registered author's name and link come from the user's profile.
    pub user: u64,
    /// The post's `post_type`.
    pub post_type: String,
    /// Whether the post has a password (its title is printed `Protected: …`).
    pub password: bool,
}

/// What a latest-comments block prints of a post: its title and its permalink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostShown {
    /// `get_the_title()`.
    pub title: String,
    /// `get_permalink()`.
    pub link: String,
}

/// Samples a recent patch carries: the newest comments a block shows, two of which differ
/// in every field more often than not.
const RECENT_SAMPLES: usize = 4;

/// Prints comments' fields as a page of the site shows them.
pub struct Printer<'a> {
    /// The site's options.
    pub options: &'a Options,
    /// Its timezone.
    pub tz: SiteTz,
    /// Whether WordPress prints author links as before 6.2 (single quotes, `rel` always
    /// `external nofollow ugc`).
    pub old_links: bool,
}

impl Printer<'_> {
    /// Whether pages print comments as the patches expect: oldest first, on one page, in
    /// the `en_US` locale (month names).
    pub fn patchable(&self) -> bool {
        let o = self.options;
        !o.page_comments && o.comment_order == "asc" && (o.locale.is_empty() || o.locale == "en_US")
    }

    /// `row` as a page shows it, its text `content` as WordPress filtered it; `None` when a
    /// field cannot be printed.
    pub fn shown(&self, row: &Row, content: &str) -> Option<Shown> {
        let local = chrono::NaiveDateTime::parse_from_str(&row.date, "%Y-%m-%d %H:%M:%S").ok()?;
        let offset = offset_at(self.tz, local)?;
        let o = self.options;
        let author = if row.author.is_empty() {
            "Anonymous"
        } else {
            row.author.as_str()
        };
        let f: BTreeMap<String, String> = [
            (
                fields::AUTHOR_LINK,
                author_link(author, &row.url, &o.home_host(), self.old_links),
            ),
            (fields::AUTHOR_ATTR, esc_attr(author)),
            (fields::AVATAR, avatar(&row.email, o.home.starts_with("https:"))),
            (fields::DATE_ISO, php_date("c", local, offset)?),
            (fields::DATE, php_date(&o.date_format, local, offset)?),
            (fields::TIME, php_date(&o.time_format, local, offset)?),
            (fields::CONTENT, content.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Some(Shown { id: row.id, fields: f })
    }

    /// The patch of `post`'s page for its new comments `added` (in the order committed),
    /// with `ctx` what the page showed before them; `None` when the page's change is not a
    /// patch of this kind (a reply, a page of comments, too few comments to learn from, a
    /// text WordPress did not give).
    pub fn thread(&self, post: u64, ctx: &Context, added: &[Row], contents: &HashMap<u64, String>) -> Option<Thread> {
        if !self.patchable() || added.is_empty() || added.iter().any(|r| r.parent != 0) {
            return None;
        }
        let after = ctx.newest.first()?;
        // Shown oldest first: the new ones must come after every comment shown.
        if added.iter().any(|r| r.date_gmt < after.date_gmt) {
            return None;
        }
        let shown = |r: &Row| self.shown(r, contents.get(&r.id)?);
        let samples: Vec<Shown> = ctx
            .newest
            .iter()
            .filter(|r| !r.replies)
            .filter_map(shown)
            .take(SAMPLES)
            .collect();
        if samples.len() < 2 {
            return None;
        }
        let added = added.iter().map(shown).collect::<Option<Vec<_>>>()?;
        Some(Thread {
            post,
            count_before: ctx.count.checked_sub(added.len() as u64)?,
            count_after: ctx.count,
            after: after.id,
            samples,
            added,
        })
    }
}

impl Printer<'_> {
    /// Whether the latest-comments block links comments as the patches print them: on one
    /// page (with `page_comments`, a link names the comment's page), in `en_US` (the
    /// `(no title)` of a post without one).
    pub fn lists_patchable(&self) -> bool {
        let o = self.options;
        !o.page_comments && (o.locale.is_empty() || o.locale == "en_US")
    }

    /// The patch of every latest-comments list for a batch: `newest` the comments a block
    /// may list now, newest first (the batch's and up to [`RECENT_BEFORE`] more), `added`
    /// the ids of the batch's approved comments, `posts` what the block prints of their
    /// posts. `None` when the batch's comments are not the newest (the lists change below
    /// their top), one of them was written in the same second as the next (their order is
    /// MySQL's to choose), or one of them cannot be printed.
    pub fn recent(&self, newest: &[Listed], added: &[u64], posts: &HashMap<u64, PostShown>) -> Option<Recent> {
        if !self.lists_patchable() || added.is_empty() || newest.len() < added.len() {
            return None;
        }
        let (top, before) = newest.split_at(added.len());
        if top.iter().any(|l| !added.contains(&l.row.id)) {
            return None;
        }
        // The block orders by `comment_date_gmt` alone: comments of the same second come in
        // whatever order MySQL gives (two renders may differ), so a new one's place among
        // them is not known.
        let dates: Vec<&str> = top
            .iter()
            .chain(before.first())
            .map(|l| l.row.date_gmt.as_str())
            .collect();
        if dates.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
        let added = top.iter().map(|l| self.listed(l, posts)).collect::<Option<Vec<_>>>()?;
        let before = &before[..before.len().min(RECENT_BEFORE)];
        let samples = before
            .iter()
            .filter_map(|l| self.listed(l, posts))
            .take(RECENT_SAMPLES)
            .collect();
        Some(Recent {
            before: before.iter().map(|l| l.row.id).collect(),
            samples,
            added,
        })
    }

    /// `l` as WordPress 6.1's latest-comments block prints it (`render_block_core_latest_comments`):
    /// the author's name in a link to their URL or in a span, the comment's link, its post's
    /// title, and the avatar and dates a block may show; `None` for a registered author's
    /// comment (their profile's link), a post with a password, or a post WordPress did not
    /// describe.
    pub fn listed(&self, l: &Listed, posts: &HashMap<u64, PostShown>) -> Option<Shown> {
        if l.user != 0 || l.password {
            return None;
        }
        let post = posts.get(&l.post)?;
        let r = &l.row;
        let local = chrono::NaiveDateTime::parse_from_str(&r.date, "%Y-%m-%d %H:%M:%S").ok()?;
        let offset = offset_at(self.tz, local)?;
        let o = self.options;
        let author = if r.author.is_empty() {
            "Anonymous"
        } else {
            r.author.as_str()
        };
        let title = if post.title.is_empty() {
            "(no title)"
        } else {
            post.title.as_str()
        };
        let f: BTreeMap<String, String> = [
            (fields::AUTHOR_MARKUP, block_author(author, &r.url)),
            (fields::LINK, esc_url(&format!("{}#comment-{}", post.link, r.id), true)),
            (fields::TITLE, title.to_string()),
            (fields::AVATAR, avatar(&r.email, o.home.starts_with("https:"))),
            (fields::DATE_ISO, php_date("c", local, offset)?),
            (fields::DATE, php_date(&o.date_format, local, offset)?),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Some(Shown { id: r.id, fields: f })
    }
}

/// The latest-comments block's author markup: `get_comment_author_url()` (`http://` alone is
/// none; only http and https links) through `esc_url` again, around the name.
pub fn block_author(author: &str, url: &str) -> String {
    let url = if url == "http://" { "" } else { url };
    let url = esc_url(url, true);
    let lower = url.to_ascii_lowercase();
    let url = if lower.starts_with("http://") || lower.starts_with("https://") {
        esc_url(&url, true)
    } else {
        String::new()
    };
    if url.is_empty() {
        format!(r#"<span class="wp-block-latest-comments__comment-author">{author}</span>"#)
    } else {
        format!(r#"<a class="wp-block-latest-comments__comment-author" href="{url}">{author}</a>"#)
    }
}

/// Seconds east of UTC of `tz` at the wall-clock time `local`.
fn offset_at(tz: SiteTz, local: chrono::NaiveDateTime) -> Option<i32> {
    use chrono::{Offset, TimeZone};
    Some(match tz {
        SiteTz::Named(z) => z.offset_from_local_datetime(&local).earliest()?.fix().local_minus_utc(),
        SiteTz::Fixed(o) => o.local_minus_utc(),
    })
}

/// `get_comment_author_link()`: the name, or a link to the author's URL (from WordPress
/// 6.2, `rel="ugc"` only for a link into the site itself, as `wp_is_internal_link` tells;
/// before, `old`, always `rel='external nofollow ugc'`).
pub fn author_link(author: &str, url: &str, home_host: &str, old: bool) -> String {
    let url = if url == "http://" { "" } else { url };
    let url = esc_url(url, true);
    if url.is_empty() {
        return author.to_string();
    }
    if old {
        return format!("<a href='{url}' rel='external nofollow ugc' class='url'>{author}</a>");
    }
    let host = url
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#', ':']).next().unwrap_or(""))
        .unwrap_or("")
        .to_ascii_lowercase();
    let rel = if !host.is_empty() && host == home_host.to_ascii_lowercase() {
        "ugc"
    } else {
        "ugc external nofollow"
    };
    format!("<a href=\"{url}\" class=\"url\" rel=\"{rel}\">{author}</a>")
}

/// The Gravatar URL of an e-mail address, up to its query (`get_avatar_url()`).
pub fn avatar(email: &str, https: bool) -> String {
    let hash = md5_hex(email.trim().to_lowercase().as_bytes());
    if https {
        return format!("https://secure.gravatar.com/avatar/{hash}");
    }
    let server = u8::from_str_radix(&hash[..1], 16).unwrap_or(0) % 3;
    format!("http://{server}.gravatar.com/avatar/{hash}")
}

/// Asks WordPress for comments' filtered text.
#[derive(Clone)]
pub struct Texts {
    origin: http::Uri,
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl Texts {
    /// WordPress at `origin`; each request given `timeout`.
    pub fn new(origin: http::Uri, timeout: Duration) -> Texts {
        Texts {
            origin,
            client: Client::builder(TokioExecutor::new()).build_http(),
            timeout,
        }
    }

    /// The `comment_text` of each of `ids` WordPress shows publicly (approved comments of
    /// public posts), by id; `host` is the site's `Host`. Errors say what failed.
    pub async fn get(&self, ids: &[u64], host: &str) -> Result<HashMap<u64, String>, String> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(PER_REQUEST) {
            let got = tokio::time::timeout(self.timeout, self.ask(chunk, host))
                .await
                .map_err(|_| format!("no answer within {:?}", self.timeout))??;
            out.extend(got);
        }
        Ok(out)
    }

    /// The title and permalink of each of `posts` (id, `post_type`) WordPress shows publicly,
    /// by id: one request for the posts, one for the pages (other types are not asked). Errors
    /// say what failed.
    pub async fn posts(&self, posts: &[(u64, String)], host: &str) -> Result<HashMap<u64, PostShown>, String> {
        let ask = |route: &'static str, kind: &'static str| {
            let ids: Vec<u64> = posts.iter().filter(|(_, t)| t == kind).map(|(id, _)| *id).collect();
            async move {
                if ids.is_empty() {
                    return Ok(HashMap::new());
                }
                let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
                let query = format!("rest_route={route}&include={list}&per_page={PER_REQUEST}&_fields=id,title,link");
                let body = tokio::time::timeout(self.timeout, self.get_json(&query, host))
                    .await
                    .map_err(|_| format!("no answer within {:?}", self.timeout))??;
                parse_posts(&body)
            }
        };
        let (posts_of, pages) = tokio::join!(ask("/wp/v2/posts", "post"), ask("/wp/v2/pages", "page"));
        let mut out = posts_of?;
        out.extend(pages?);
        Ok(out)
    }

    /// The body of WordPress's answer to `/?QUERY`; an error unless it is a success.
    async fn get_json(&self, query: &str, host: &str) -> Result<Bytes, String> {
        let uri = format!("{}/?{query}", self.origin.to_string().trim_end_matches('/'));
        let req = http::Request::builder()
            .uri(uri)
            .header(http::header::HOST, host)
            .header(http::header::USER_AGENT, "strata-syncer")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("the origin answered {status}"));
        }
        Ok(body)
    }

    async fn ask(&self, ids: &[u64], host: &str) -> Result<HashMap<u64, String>, String> {
        let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        // `rest_route` works whatever the permalink structure.
        let query = format!("rest_route=/wp/v2/comments&include={list}&per_page={PER_REQUEST}&_fields=id,content");
        parse_texts(&self.get_json(&query, host).await?)
    }
}

/// The REST API's answer: `[{"id": N, "content": {"rendered": "…"}}, …]`.
pub fn parse_texts(body: &[u8]) -> Result<HashMap<u64, String>, String> {
    #[derive(serde::Deserialize)]
    struct Item {
        id: u64,
        content: Content,
    }
    #[derive(serde::Deserialize)]
    struct Content {
        rendered: String,
    }
    let items: Vec<Item> = serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    Ok(items.into_iter().map(|i| (i.id, i.content.rendered)).collect())
}

/// The REST API's answer about posts: `[{"id": N, "link": "…", "title": {"rendered": "…"}}, …]`.
pub fn parse_posts(body: &[u8]) -> Result<HashMap<u64, PostShown>, String> {
    #[derive(serde::Deserialize)]
    struct Item {
        id: u64,
        link: String,
        title: Title,
    }
    #[derive(serde::Deserialize)]
    struct Title {
        rendered: String,
    }
    let items: Vec<Item> = serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    Ok(items
        .into_iter()
        .map(|i| {
            (
                i.id,
                PostShown {
                    title: i.title.rendered,
                    link: i.link,
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests;
