//! The site's options as the comment rules read them: the rows of `wp_options` the syncer
//! reads, typed with PHP's truthiness and WordPress's defaults.

use std::collections::HashMap;

use strata_wire::php::php_int;

/// The options the comment rules and answers depend on.
pub const OPTION_NAMES: &[&str] = &[
    "siteurl",
    "home",
    "require_name_email",
    "comment_registration",
    "comment_moderation",
    "comment_max_links",
    "moderation_keys",
    "disallowed_keys",
    "comment_previously_approved",
    "close_comments_for_old_posts",
    "close_comments_days_old",
    "show_comments_cookies_opt_in",
    "page_comments",
    "timezone_string",
    "gmt_offset",
    "auth_key",
    "auth_salt",
    "date_format",
    "time_format",
    "comment_order",
    "WPLANG",
];

/// The site's options, typed with PHP's truthiness.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `siteurl`.
    pub siteurl: String,
    /// `home`.
    pub home: String,
    /// `require_name_email`.
    pub require_name_email: bool,
    /// `comment_registration`.
    pub comment_registration: bool,
    /// `comment_moderation` (`1 ==`).
    pub comment_moderation: bool,
    /// `comment_max_links` (0: no limit).
    pub comment_max_links: u64,
    /// `moderation_keys`.
    pub moderation_keys: String,
    /// `disallowed_keys`.
    pub disallowed_keys: String,
    /// `comment_previously_approved` (`1 ==`).
    pub comment_previously_approved: bool,
    /// `close_comments_for_old_posts`.
    pub close_comments_for_old_posts: bool,
    /// `close_comments_days_old`.
    pub close_comments_days_old: i64,
    /// `show_comments_cookies_opt_in`.
    pub cookies_opt_in: bool,
    /// `page_comments` (comment pages in links are not reproduced; logged once).
    pub page_comments: bool,
    /// `timezone_string`.
    pub timezone_string: String,
    /// `gmt_offset`, hours.
    pub gmt_offset: f64,
    /// `auth_key` (used when the configuration defines no `AUTH_KEY`).
    pub auth_key: String,
    /// `auth_salt`.
    pub auth_salt: String,
    /// `date_format`.
    pub date_format: String,
    /// `time_format`.
    pub time_format: String,
    /// `comment_order`: `asc` (oldest first) or `desc`.
    pub comment_order: String,
    /// `WPLANG`: the site's locale, empty for `en_US`.
    pub locale: String,
}

/// PHP's truthiness of an option string: `''` and `'0'` are false.
fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|s| !s.is_empty() && s != "0")
}

/// PHP 8's `1 == $option`.
fn is_one(v: Option<&String>) -> bool {
    v.and_then(|s| s.trim().parse::<f64>().ok()).is_some_and(|f| f == 1.0)
}

impl Options {
    /// From `option_name → option_value` rows; missing options take WordPress's defaults.
    pub fn from_rows(rows: &HashMap<String, String>) -> Options {
        let get = |k: &str| rows.get(k);
        // A missing option takes the install default `on`.
        let on_by_default = |k: &str, test: fn(Option<&String>) -> bool| get(k).is_none() || test(get(k));
        let text = |k: &str| get(k).cloned().unwrap_or_default();
        Options {
            siteurl: text("siteurl"),
            home: text("home"),
            require_name_email: on_by_default("require_name_email", truthy),
            comment_registration: truthy(get("comment_registration")),
            comment_moderation: is_one(get("comment_moderation")),
            comment_max_links: get("comment_max_links").map_or(2, |v| php_int(v).max(0) as u64),
            moderation_keys: text("moderation_keys"),
            disallowed_keys: text("disallowed_keys"),
            comment_previously_approved: on_by_default("comment_previously_approved", is_one),
            close_comments_for_old_posts: truthy(get("close_comments_for_old_posts")),
            close_comments_days_old: get("close_comments_days_old").map_or(14, |v| php_int(v)),
            cookies_opt_in: on_by_default("show_comments_cookies_opt_in", truthy),
            page_comments: truthy(get("page_comments")),
            timezone_string: text("timezone_string"),
            gmt_offset: get("gmt_offset").and_then(|v| v.trim().parse().ok()).unwrap_or(0.0),
            auth_key: text("auth_key"),
            auth_salt: text("auth_salt"),
            date_format: get("date_format").cloned().unwrap_or_else(|| "F j, Y".to_string()),
            time_format: get("time_format").cloned().unwrap_or_else(|| "g:i a".to_string()),
            comment_order: get("comment_order").cloned().unwrap_or_else(|| "asc".to_string()),
            locale: text("WPLANG"),
        }
    }

    /// The host of `home` (without port), as `wp_parse_url(home_url(), PHP_URL_HOST)`.
    pub fn home_host(&self) -> String {
        authority(&self.home)
            .map(|a| {
                let hostport = a.rsplit_once('@').map_or(a, |(_, h)| h);
                if let Some(v6) = hostport.strip_prefix('[') {
                    v6.split(']').next().unwrap_or("").to_string()
                } else {
                    hostport.split(':').next().unwrap_or("").to_string()
                }
            })
            .unwrap_or_default()
    }

    /// The `Host` the site is served under: the authority of `home`.
    pub fn home_authority(&self) -> String {
        authority(&self.home).unwrap_or("").to_string()
    }
}

/// The authority part of an absolute URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(""))
}

#[cfg(test)]
mod tests;
