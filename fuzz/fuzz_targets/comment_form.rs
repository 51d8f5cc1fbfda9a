//! The proxy's comment form parser (`strata_proxy::comments::form`): `Form::parse` on an
//! arbitrary `Content-Type` and body, then `form::check` under a few site settings.
//!
//! The input is the `Content-Type` value, a newline, then the body (no newline: the whole
//! input is the body of a form with one of the usual content types). Never a panic; an
//! urlencoded body always parses; an accepted submission has a post, content, fields trimmed
//! as PHP trims them and within the site's lengths, and a name and e-mail when the site
//! requires them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proxy::comments::form::{check, Form};
use strata_wire::comment::Settings;
use strata_wire::php::php_trim;

fn settings(strict: bool) -> Settings {
    Settings {
        require_name_email: strict,
        comment_registration: false,
        cookies_opt_in: strict,
        cookiehash: "ef301f25d1b8e2bca70fafc1316f1a92".into(),
        cookie_path: "/".into(),
        secure: false,
        home: "http://127.0.0.1:8080".into(),
        max_lengths: if strict { [245, 100, 200, 65525] } else { [8, 8, 8, 8] },
        published_ms: 0,
    }
}

const TYPES: &[&str] = &[
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=XyZ",
    "multipart/form-data; boundary=\"a b\"",
];

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|b| *b == b'\n') {
        Some(nl) => (String::from_utf8_lossy(&data[..nl]).into_owned(), &data[nl + 1..]),
        None => (TYPES[data.len() % TYPES.len()].to_string(), data),
    };
    let _ = Form::parse(None, body);
    if content_type
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        assert!(
            Form::parse(Some(&content_type), body).is_ok(),
            "an urlencoded body was refused"
        );
    }
    let Ok(form) = Form::parse(Some(&content_type), body) else {
        return;
    };
    for strict in [true, false] {
        let st = settings(strict);
        let Ok(s) = check(&form, &st) else { continue };
        assert!(s.post_id > 0);
        assert!(!s.content.is_empty());
        for field in [&s.author, &s.email, &s.url, &s.content] {
            assert_eq!(php_trim(field), field.as_str(), "an untrimmed field");
        }
        let [author, email, url, content] = st.max_lengths;
        assert!(s.author.len() <= author && s.email.len() <= email);
        assert!(s.url.len() <= url && s.content.len() <= content);
        if st.require_name_email {
            assert!(!s.author.is_empty() && !s.email.is_empty());
        }
        assert!(!s.consent || st.cookies_opt_in);
        assert!(s.redirect_to.as_deref() != Some(""));
    }
});
