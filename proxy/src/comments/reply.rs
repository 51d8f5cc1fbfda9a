//! The answers WordPress sends after a comment POST, made here: its redirects with the
//! `comment_author_*` cookies as PHP writes them, its error page, its empty 200.
//!
//! Every `Location` sent from here goes to the site's own host, as `wp_safe_redirect()`
//! allows ([`safe_redirect`] against the published `home`): the visitor's `redirect_to` and
//! a verdict's location alike. Where WordPress would fall back to `admin_url()`, the
//! visitor goes back to the post instead.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use strata_wire::comment::{Settings, Status, Verdict};
use strata_wire::redirect::safe_redirect;

use super::form::Submission;
use crate::body::ProxyBody;

/// The page WordPress's `wp_die()` prints for a comment error (6.1), with `{{MESSAGE}}`.
pub(super) const WP_DIE_PAGE: &str = include_str!("../../assets/wp-die.html");

/// `comment_cookie_lifetime` in WordPress 6.1.
const COOKIE_LIFETIME: u64 = 30_000_000;

/// PHP's `urlencode()`, as `setcookie()` applies it to values.
fn php_urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One `Set-Cookie` as PHP's `setcookie()` writes it.
fn php_cookie(name: &str, value: &str, expires: Option<u64>, settings: &Settings, now: u64) -> String {
    let secure = if settings.secure { "; secure" } else { "" };
    match expires {
        _ if value.is_empty() => {
            format!(
                "{name}=deleted; expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; path={}{secure}",
                settings.cookie_path
            )
        }
        Some(at) => {
            let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(at));
            format!(
                "{name}={}; expires={date}; Max-Age={}; path={}{secure}",
                php_urlencode(value),
                at.saturating_sub(now),
                settings.cookie_path
            )
        }
        None => format!("{name}={}; path={}{secure}", php_urlencode(value), settings.cookie_path),
    }
}

/// The `comment_author_*` cookies WordPress sets after a comment: the values with consent,
/// else the three deleted (set to a space, expired a year ago).
pub fn comment_cookies(
    settings: &Settings,
    consent: bool,
    author: &str,
    email: &str,
    url: &str,
    now: u64,
) -> Vec<String> {
    let h = &settings.cookiehash;
    let names = [
        format!("comment_author_{h}"),
        format!("comment_author_email_{h}"),
        format!("comment_author_url_{h}"),
    ];
    if consent {
        let at = now + COOKIE_LIFETIME;
        names
            .iter()
            .zip([author, email, url])
            .map(|(n, v)| php_cookie(n, v, Some(at), settings, now))
            .collect()
    } else {
        let past = now.saturating_sub(365 * 24 * 3600);
        names
            .iter()
            .map(|n| php_cookie(n, " ", Some(past), settings, now))
            .collect()
    }
}

/// Headers every WordPress comment answer carries (`nocache_headers()`).
fn nocache(resp: &mut Response<ProxyBody>) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    h.insert(
        header::EXPIRES,
        HeaderValue::from_static("Wed, 11 Jan 1984 05:00:00 GMT"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, must-revalidate, max-age=0"),
    );
}

/// WordPress's error page for a comment, with its status.
pub fn error_page(status: u16, message: &str) -> Response<ProxyBody> {
    let body = WP_DIE_PAGE.replacen("{{MESSAGE}}", message, 1);
    let mut r = Response::new(ProxyBody::full(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    nocache(&mut r);
    r
}

/// WordPress's bare `exit`: an empty 200.
pub fn empty_answer() -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::Empty);
    nocache(&mut r);
    r
}

/// A 302 as `wp_safe_redirect()` sends it, with cookies.
pub(super) fn redirect(location: &str, cookies: &[String]) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::Empty);
    *r.status_mut() = StatusCode::FOUND;
    nocache(&mut r);
    let h = r.headers_mut();
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    h.insert("x-redirect-by", HeaderValue::from_static("WordPress"));
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    r
}

/// The answer for a verdict, as WordPress would have sent it.
pub fn answer(v: &Verdict, s: &Submission, settings: &Settings, now: u64) -> (Response<ProxyBody>, &'static str) {
    match v.status {
        Status::Approved | Status::Held | Status::Spam | Status::Trash => {
            let cookies = comment_cookies(
                settings,
                s.consent,
                v.cookie_author.as_deref().unwrap_or(&s.author),
                v.cookie_email.as_deref().unwrap_or(&s.email),
                v.cookie_url.as_deref().unwrap_or(&s.url),
                now,
            );
            let location = match v.location.as_deref() {
                Some(l) => safe_redirect(l, &settings.home).unwrap_or_else(|| {
                    tracing::warn!(
                        seq = v.seq,
                        "a verdict's location leaves the site (or is too long); the visitor goes back to the post"
                    );
                    back_to_post(settings, s)
                }),
                None => back_to_post(settings, s),
            };
            let label = match v.status {
                Status::Approved => "approved",
                Status::Held => "held",
                Status::Spam => "spam",
                _ => "trash",
            };
            (redirect(&location, &cookies), label)
        }
        Status::Rejected => (error_page(v.http, &v.message), "rejected"),
        Status::Ignored => (empty_answer(), "ignored"),
    }
}

/// Where a visitor goes when no verdict came in time: their `redirect_to` when
/// `wp_safe_redirect()` would follow it, else back to the post (`home/?p=ID`, which
/// WordPress redirects to the permalink).
pub(super) fn back_to_post(settings: &Settings, s: &Submission) -> String {
    s.redirect_to
        .as_deref()
        .and_then(|r| safe_redirect(r, &settings.home))
        .unwrap_or_else(|| format!("{}/?p={}", settings.home.trim_end_matches('/'), s.post_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            require_name_email: true,
            comment_registration: false,
            cookies_opt_in: true,
            cookiehash: "ef301f25d1b8e2bca70fafc1316f1a92".into(),
            cookie_path: "/".into(),
            secure: false,
            home: "http://127.0.0.1:8080".into(),
            max_lengths: [245, 100, 200, 65525],
            published_ms: 0,
        }
    }

    #[test]
    fn cookies_are_written_as_php_writes_them() {
        let now = 1_795_701_343; // 2026-11-26T13:55:43Z, as a real WordPress answer was dated
        let c = comment_cookies(&settings(), true, "A b", "a@example.com", "", now);
        assert_eq!(
            c[0],
            "comment_author_ef301f25d1b8e2bca70fafc1316f1a92=A+b; expires=Mon, 08 Nov 2027 19:15:43 GMT; Max-Age=30000000; path=/"
        );
        assert!(c[1].starts_with("comment_author_email_ef301f25d1b8e2bca70fafc1316f1a92=a%40example.com; "));
        assert_eq!(
            c[2],
            "comment_author_url_ef301f25d1b8e2bca70fafc1316f1a92=deleted; expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; path=/"
        );
        let gone = comment_cookies(&settings(), false, "A", "a@example.com", "", now);
        assert!(
            gone.iter()
                .all(|c| c.contains("=+; expires=") && c.contains("Max-Age=0")),
            "{gone:?}"
        );
    }

    #[test]
    fn answers_follow_the_verdict() {
        let sub = Submission {
            post_id: 5,
            parent: 0,
            author: "A".into(),
            email: "a@example.com".into(),
            url: String::new(),
            content: "x".into(),
            consent: false,
            redirect_to: None,
        };
        let v = Verdict {
            seq: 1,
            status: Status::Held,
            http: 302,
            message: String::new(),
            comment_id: Some(9),
            location: Some("http://127.0.0.1:8080/p/?unapproved=9&moderation-hash=ab#comment-9".into()),
            cookie_author: Some("A".into()),
            cookie_email: Some("a@example.com".into()),
            cookie_url: Some(String::new()),
        };
        let (r, label) = answer(&v, &sub, &settings(), 0);
        assert_eq!((r.status(), label), (StatusCode::FOUND, "held"));
        assert_eq!(
            r.headers()["location"],
            "http://127.0.0.1:8080/p/?unapproved=9&moderation-hash=ab#comment-9"
        );
        assert_eq!(r.headers()["x-redirect-by"], "WordPress");
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 3);
        let rejected = Verdict {
            status: Status::Rejected,
            http: 409,
            message: "Duplicate comment detected; it looks as though you&#8217;ve already said that!".into(),
            ..v
        };
        let (r, label) = answer(&rejected, &sub, &settings(), 0);
        assert_eq!((r.status(), label), (StatusCode::CONFLICT, "rejected"));
        assert_eq!(back_to_post(&settings(), &sub), "http://127.0.0.1:8080/?p=5");
    }

    fn submission(redirect_to: Option<&str>) -> Submission {
        Submission {
            post_id: 5,
            parent: 0,
            author: "A".into(),
            email: "a@example.com".into(),
            url: String::new(),
            content: "x".into(),
            consent: false,
            redirect_to: redirect_to.map(str::to_string),
        }
    }

    /// Values a visitor can put in `redirect_to`, and where each sends them: back to the
    /// post, or to a path on the site with what could break the header removed.
    const HOSTILE: &[(&str, &str)] = &[
        ("//evil.example/", POST),
        ("http://evil.example", POST),
        ("https://127.0.0.1:8080@evil.example", POST),
        ("/\\/evil.example", POST),
        ("/\\evil.example", "/evil.example"),
        ("javascript:alert(1)", POST),
        ("/\r\nSet-Cookie: owned=1", "/Set-Cookie:%20owned=1"),
        ("\r\nLocation: http://evil.example/", POST),
    ];

    const POST: &str = "http://127.0.0.1:8080/?p=5";

    #[test]
    fn without_a_verdict_redirect_to_is_followed_only_on_the_site() {
        let s = settings();
        let go = |r: Option<&str>| back_to_post(&s, &submission(r));
        assert_eq!(go(None), POST);
        assert_eq!(
            go(Some("http://127.0.0.1:8080/thanks/")),
            "http://127.0.0.1:8080/thanks/"
        );
        assert_eq!(go(Some("/thanks/")), "/thanks/");
        for (evil, to) in HOSTILE {
            assert_eq!(go(Some(evil)), *to, "{evil:?}");
        }
        let long = format!("http://127.0.0.1:8080/{}", "a".repeat(10_000));
        assert_eq!(go(Some(&long)), POST);
        let r = redirect(&go(Some("//evil.example/")), &[]);
        assert_eq!(r.headers()["location"], POST);
    }

    #[test]
    fn a_verdict_location_off_the_site_is_not_followed() {
        let sub = submission(None);
        let hostile = HOSTILE.iter().chain(&[("http://evil.example/p/#comment-9", POST)]);
        for (evil, to) in hostile {
            let v = Verdict {
                seq: 1,
                status: Status::Approved,
                http: 302,
                message: String::new(),
                comment_id: Some(9),
                location: Some((*evil).to_string()),
                cookie_author: None,
                cookie_email: None,
                cookie_url: None,
            };
            let (r, _) = answer(&v, &sub, &settings(), 0);
            assert_eq!(r.headers()["location"], *to, "{evil:?}");
        }
    }

    #[test]
    fn the_error_page_is_wordpress_own() {
        let r = error_page(403, "Sorry, comments are closed for this item.");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(WP_DIE_PAGE.contains("<title>Comment Submission Failure</title>"));
        assert_eq!(r.headers()["cache-control"], "no-cache, must-revalidate, max-age=0");
    }

    #[test]
    fn php_urlencode_matches() {
        assert_eq!(php_urlencode("a b@c.d/é~"), "a+b%40c.d%2F%C3%A9%7E");
    }
}
