//! Reading a comment form as PHP would (`$_POST` from urlencoded or multipart bodies) and
//! the checks WordPress makes that need no database.

use std::collections::HashMap;

use strata_wire::comment::Settings;
use strata_wire::php::{is_email, php_int, php_trim, strip_tags};

/// The form fields PHP would put in `$_POST`, by name; a field sent as an array
/// (`name[]`, `name[key]`) is not a string and is recorded as such.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    fields: HashMap<String, Field>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Text(String),
    Array,
}

/// Why a body is not a form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormError {
    /// multipart without a boundary, or a malformed part.
    #[error("malformed multipart body: {0}")]
    Multipart(&'static str),
}

impl Form {
    /// A field as WordPress reads it: `Some` only when it is a string.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.fields.get(name) {
            Some(Field::Text(s)) => Some(s),
            _ => None,
        }
    }

    /// Whether the field is present at all (`isset`).
    pub fn has(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    fn insert(&mut self, name: &str, value: String) {
        // PHP: `a[]` and `a[x]` make arrays; a later plain `a` replaces whatever was there.
        match name.find('[') {
            Some(i) if i > 0 => {
                self.fields.insert(name[..i].to_string(), Field::Array);
            }
            _ => {
                self.fields.insert(name.to_string(), Field::Text(value));
            }
        }
    }

    /// Parses a body by its `Content-Type`; anything but urlencoded and multipart is an empty
    /// form, as PHP leaves `$_POST` empty.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Form, FormError> {
        let ct = content_type.unwrap_or("").trim();
        let lower = ct.to_ascii_lowercase();
        if lower.starts_with("application/x-www-form-urlencoded") {
            return Ok(Form::urlencoded(body));
        }
        if lower.starts_with("multipart/form-data") {
            return Form::multipart(ct, body);
        }
        Ok(Form::default())
    }

    fn urlencoded(body: &[u8]) -> Form {
        let mut f = Form::default();
        for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let name = decode(it.next().unwrap_or_default());
            let value = decode(it.next().unwrap_or_default());
            if !name.is_empty() {
                f.insert(&name, value);
            }
        }
        f
    }

    fn multipart(content_type: &str, body: &[u8]) -> Result<Form, FormError> {
        let boundary = content_type
            .split(';')
            .map(str::trim)
            .find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("boundary")
                    .then(|| v.trim().trim_matches('"').to_string())
            })
            .filter(|b| !b.is_empty() && b.len() <= 200)
            .ok_or(FormError::Multipart("no boundary"))?;
        let delim = format!("--{boundary}");
        let mut f = Form::default();
        let mut rest = body;
        let start = memchr::memmem::find(rest, delim.as_bytes()).ok_or(FormError::Multipart("no first boundary"))?;
        rest = &rest[start + delim.len()..];
        loop {
            if rest.starts_with(b"--") {
                return Ok(f);
            }
            rest = rest
                .strip_prefix(b"\r\n")
                .ok_or(FormError::Multipart("boundary not followed by CRLF"))?;
            let head_end =
                memchr::memmem::find(rest, b"\r\n\r\n").ok_or(FormError::Multipart("part without headers"))?;
            let head = String::from_utf8_lossy(&rest[..head_end]);
            let content = &rest[head_end + 4..];
            let end = memchr::memmem::find(content, format!("\r\n{delim}").as_bytes())
                .ok_or(FormError::Multipart("part without closing boundary"))?;
            let value = &content[..end];
            rest = &content[end + 2 + delim.len()..];
            let mut name = None;
            let mut file = false;
            for line in head.split("\r\n") {
                let Some((k, v)) = line.split_once(':') else { continue };
                if !k.trim().eq_ignore_ascii_case("content-disposition") {
                    continue;
                }
                for param in v.split(';').map(str::trim) {
                    if let Some((pk, pv)) = param.split_once('=') {
                        let pv = pv.trim().trim_matches('"').to_string();
                        match pk.trim().to_ascii_lowercase().as_str() {
                            "name" => name = Some(pv),
                            "filename" => file = true,
                            _ => {}
                        }
                    }
                }
            }
            // Files go to `$_FILES`, not `$_POST`.
            if let (Some(n), false) = (name, file) {
                f.insert(&n, String::from_utf8_lossy(value).into_owned());
            }
        }
    }
}

/// `+` is a space, then percent-decoding; invalid UTF-8 is kept as replacement characters
/// (WordPress's own sanitising then drops it).
fn decode(b: &[u8]) -> String {
    let plus: Vec<u8> = b.iter().map(|c| if *c == b'+' { b' ' } else { *c }).collect();
    percent_encoding::percent_decode(&plus).decode_utf8_lossy().into_owned()
}

/// A comment as the proxy queues it: the fields WordPress reads, cleaned as it cleans them
/// before its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// `comment_post_ID`.
    pub post_id: u64,
    /// `comment_parent`.
    pub parent: u64,
    /// `trim(strip_tags(author))`.
    pub author: String,
    /// `trim(email)`.
    pub email: String,
    /// `trim(url)`.
    pub url: String,
    /// `trim(comment)`.
    pub content: String,
    /// `wp-comment-cookies-consent` was sent (and the site shows the checkbox).
    pub consent: bool,
    /// `redirect_to`.
    pub redirect_to: Option<String>,
}

/// How WordPress would answer without touching its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Early {
    /// An empty 200 (no such post: `comment_post_ID` 0 or missing).
    Empty,
    /// Its error page with this status and message.
    Error(u16, &'static str),
}

/// WordPress's messages, as 6.1 prints them.
pub mod messages {
    pub const REQUIRED: &str = "<strong>Error:</strong> Please fill the required fields.";
    pub const BAD_EMAIL: &str = "<strong>Error:</strong> Please enter a valid email address.";
    pub const EMPTY: &str = "<strong>Error:</strong> Please type your comment text.";
    pub const AUTHOR_LONG: &str = "<strong>Error:</strong> Your name is too long.";
    pub const EMAIL_LONG: &str = "<strong>Error:</strong> Your email address is too long.";
    pub const URL_LONG: &str = "<strong>Error:</strong> Your URL is too long.";
    pub const CONTENT_LONG: &str = "<strong>Error:</strong> Your comment is too long.";
}

/// Reads the submission and makes WordPress's database-free checks, in WordPress's order
/// (required fields, email syntax, empty comment, lengths).
pub fn check(form: &Form, settings: &Settings) -> Result<Submission, Early> {
    let text = |n: &str| form.text(n).map(php_trim).unwrap_or("").to_string();
    let int = |n: &str| form.text(n).map_or(0, php_int);
    // `(int)`: a negative id names no post.
    let post_id = u64::try_from(int("comment_post_ID")).unwrap_or(0);
    if post_id == 0 {
        return Err(Early::Empty);
    }
    let s = Submission {
        post_id,
        // `absint`.
        parent: int("comment_parent").unsigned_abs(),
        author: form
            .text("author")
            .map(|a| php_trim(&strip_tags(a)).to_string())
            .unwrap_or_default(),
        email: text("email"),
        url: text("url"),
        content: text("comment"),
        consent: settings.cookies_opt_in && form.has("wp-comment-cookies-consent"),
        redirect_to: form.text("redirect_to").filter(|r| !r.is_empty()).map(str::to_string),
    };
    if settings.require_name_email {
        if s.email.is_empty() || s.author.is_empty() {
            return Err(Early::Error(200, messages::REQUIRED));
        }
        if !is_email(&s.email) {
            return Err(Early::Error(200, messages::BAD_EMAIL));
        }
    }
    if s.content.is_empty() {
        return Err(Early::Error(200, messages::EMPTY));
    }
    let [author, email, url, content] = settings.max_lengths;
    if s.author.len() > author {
        return Err(Early::Error(200, messages::AUTHOR_LONG));
    }
    if s.email.len() > email {
        return Err(Early::Error(200, messages::EMAIL_LONG));
    }
    if s.url.len() > url {
        return Err(Early::Error(200, messages::URL_LONG));
    }
    if s.content.len() > content {
        return Err(Early::Error(200, messages::CONTENT_LONG));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn settings() -> Settings {
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
    fn urlencoded_forms_read_like_php() {
        let f = Form::parse(
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            b"comment_post_ID=12abc&author=%3Cb%3EAnn%3C%2Fb%3E+&email=+a%40b.example&comment=Hi+there%21&arr[]=1&wp-comment-cookies-consent=",
        )
        .unwrap();
        assert_eq!(f.text("comment_post_ID"), Some("12abc"));
        assert_eq!(f.text("author"), Some("<b>Ann</b> "));
        assert!(f.text("arr").is_none() && f.has("arr"));
        let s = check(&f, &settings()).unwrap();
        assert_eq!(s.post_id, 12);
        assert_eq!(s.author, "Ann");
        assert_eq!(s.email, "a@b.example");
        assert_eq!(s.content, "Hi there!");
        assert!(s.consent);
        assert_eq!(Form::parse(Some("application/json"), b"{}").unwrap(), Form::default());
    }

    #[test]
    fn multipart_forms() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"comment_post_ID\"\r\n\r\n7\r\n--XyZ\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nline1\r\nline2\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nfile\r\n--XyZ--\r\n";
        let f = Form::parse(Some("multipart/form-data; boundary=XyZ"), body).unwrap();
        assert_eq!(f.text("comment_post_ID"), Some("7"));
        assert_eq!(f.text("comment"), Some("line1\r\nline2"));
        assert!(!f.has("f"));
        assert!(Form::parse(Some("multipart/form-data"), body).is_err());
        assert!(Form::parse(Some("multipart/form-data; boundary=XyZ"), b"--XyZ\r\nno headers").is_err());
    }

    #[test]
    fn database_free_checks_in_wordpress_order() {
        let form = |body: &str| Form::parse(Some("application/x-www-form-urlencoded"), body.as_bytes()).unwrap();
        let st = settings();
        assert_eq!(check(&form("comment=x"), &st), Err(Early::Empty));
        assert_eq!(
            check(&form("comment_post_ID=5&comment=x"), &st),
            Err(Early::Error(200, messages::REQUIRED))
        );
        assert_eq!(
            check(&form("comment_post_ID=5&author=A&email=nope&comment=x"), &st),
            Err(Early::Error(200, messages::BAD_EMAIL))
        );
        assert_eq!(
            check(&form("comment_post_ID=5&author=A&email=a@b.example&comment=+"), &st),
            Err(Early::Error(200, messages::EMPTY))
        );
        let long = format!(
            "comment_post_ID=5&author={}&email=a@b.example&comment=x",
            "a".repeat(246)
        );
        assert_eq!(check(&form(&long), &st), Err(Early::Error(200, messages::AUTHOR_LONG)));
        let mut lax = settings();
        lax.require_name_email = false;
        assert!(check(&form("comment_post_ID=5&comment=x"), &lax).is_ok());
        lax.cookies_opt_in = false;
        assert!(
            !check(
                &form("comment_post_ID=5&comment=x&wp-comment-cookies-consent=yes"),
                &lax
            )
            .unwrap()
            .consent
        );
    }

    #[test]
    fn ids_and_author_read_as_php_reads_them() {
        let form = |body: &str| Form::parse(Some("application/x-www-form-urlencoded"), body.as_bytes()).unwrap();
        let mut lax = settings();
        lax.require_name_email = false;
        assert_eq!(check(&form("comment_post_ID=-5&comment=x"), &lax), Err(Early::Empty));
        assert_eq!(check(&form("comment_post_ID=abc&comment=x"), &lax), Err(Early::Empty));
        let s = check(
            &form("comment_post_ID=+7&comment_parent=-3&author=a+%3C+b+&comment=x"),
            &lax,
        )
        .unwrap();
        assert_eq!((s.post_id, s.parent), (7, 3));
        // PHP's strip_tags keeps a `<` followed by whitespace.
        assert_eq!(s.author, "a < b");
    }
}
