//! Where WordPress lets a redirect go: ports of `wp_sanitize_redirect()` and
//! `wp_validate_redirect()`, shared by the syncer (the `Location` of a verdict) and the
//! proxy (every `Location` it sends after a comment POST).

/// `wp_sanitize_redirect()`: non-ASCII characters percent-encoded, characters outside the
/// safe set removed, control characters and encoded line breaks removed.
pub fn sanitize_redirect(location: &str) -> String {
    let mut out = String::with_capacity(location.len());
    for c in location.chars() {
        if c == ' ' {
            out.push_str("%20");
        } else if !c.is_ascii() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else if c.is_ascii_alphanumeric() || "-~+_.?#=&;,/:%!*[]()@".contains(c) {
            out.push(c);
        }
    }
    loop {
        let next = out
            .replace("%0d", "")
            .replace("%0a", "")
            .replace("%0D", "")
            .replace("%0A", "");
        if next == out {
            return out;
        }
        out = next;
    }
}

/// `wp_validate_redirect()` (WordPress 6.1, `pluggable.php`): the location as WordPress
/// would send it, or `None` where WordPress falls back to its default: a scheme other than
/// exactly `http` or `https`, a scheme, user, password or port without a host, what PHP's
/// `parse_url()` cannot read (an empty host, a port that is not a number), a user, password
/// or host holding one of `:/?#@` (so no IPv6 literal either), or a host other than `home`'s
/// (the port is not compared, as WordPress does not). The location is trimmed and
/// sanitized first ([`sanitize_redirect`]), as WordPress does; a relative path is made
/// absolute from `wp-comments-post.php`'s directory, `/`.
pub fn validate_redirect(location: &str, home: &str) -> Option<String> {
    let location = sanitize_redirect(location.trim_matches([' ', '\t', '\n', '\r', '\0', '\x08', '\x0B']));
    let test_loc = if location.starts_with("//") {
        format!("http:{location}")
    } else {
        location
    };
    let test = test_loc.split('?').next().unwrap_or("");
    let (scheme, rest) = match test.split_once(':') {
        Some((s, r)) if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) => {
            (Some(s), r)
        }
        _ => (None, test),
    };
    if scheme.is_some_and(|s| s != "http" && s != "https") {
        return None;
    }
    match rest.strip_prefix("//") {
        None if scheme.is_some() => None,
        None if !test.is_empty() && !test.starts_with(['/', '#']) => Some(format!("/{test_loc}")),
        None => Some(test_loc),
        Some(r) => {
            let host = authority_host(r.split(['/', '#']).next().unwrap_or(""))?;
            let home_host = home
                .split_once("://")
                .and_then(|(_, r)| authority_host(r.split(['/', '?', '#']).next().unwrap_or("")))
                .unwrap_or("");
            (!home_host.is_empty() && (host == home_host || host == home_host.to_ascii_lowercase())).then_some(test_loc)
        }
    }
}

/// The host of a URL's authority (`user:pass@host:port`) as `wp_validate_redirect()` reads
/// it; `None` when it refuses the authority (see there).
fn authority_host(authority: &str) -> Option<&str> {
    const REFUSED: [char; 5] = [':', '/', '?', '#', '@'];
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            if user.contains(REFUSED) || pass.contains(REFUSED) {
                return None;
            }
            hostport
        }
        None => authority,
    };
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, ""));
    let port_ok = port.is_empty() || (port.len() <= 5 && port.parse::<u32>().is_ok_and(|p| p <= 65_535));
    (!host.is_empty() && !host.contains(REFUSED) && !host.starts_with('[') && port_ok).then_some(host)
}

/// The longest `Location` [`safe_redirect`] lets through: a permalink with the moderation
/// query is far shorter, and a longer header can exceed what a front server or browser
/// accepts for a response's headers.
pub const MAX_LOCATION: usize = 2048;

/// Where `wp_safe_redirect()` would send a visitor: `location` sanitized, validated against
/// the site's `home` URL, and sanitized again (as `wp_redirect()` does); `None` when
/// WordPress would fall back to its default instead ([`validate_redirect`]), or when the
/// result is empty or longer than [`MAX_LOCATION`]. The caller picks the fallback.
pub fn safe_redirect(location: &str, home: &str) -> Option<String> {
    let location = sanitize_redirect(&validate_redirect(location, home)?);
    (!location.is_empty() && location.len() <= MAX_LOCATION).then_some(location)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "http://127.0.0.1:8080";

    #[test]
    fn redirects_are_sanitized_and_validated_like_wordpress() {
        assert_eq!(sanitize_redirect("http://h/ü x?a=<b>"), "http://h/%C3%BC%20x?a=b");
        assert_eq!(validate_redirect("http://evil.test/x", HOME), None);
        assert_eq!(validate_redirect("/local", HOME).as_deref(), Some("/local"));
        assert_eq!(validate_redirect("rel/x", HOME).as_deref(), Some("/rel/x"));
        assert_eq!(
            validate_redirect("//127.0.0.1:9/x", HOME).as_deref(),
            Some("http://127.0.0.1:9/x")
        );
        assert_eq!(validate_redirect("javascript:x", HOME), None);
    }

    #[test]
    fn the_site_own_locations_pass() {
        for ok in [
            "http://127.0.0.1:8080/hello/?a=1&b=2#comment-5",
            "https://127.0.0.1/x/",
            "http://user:pw@127.0.0.1:8080/",
            "/?p=5",
            "#respond",
        ] {
            assert_eq!(safe_redirect(ok, HOME).as_deref(), Some(ok), "{ok}");
        }
        // The host is compared case-insensitively with home's, as WordPress lowercases it.
        assert!(safe_redirect("http://site.example/", "https://Site.Example/blog").is_some());
    }

    /// Values a visitor can put in `redirect_to` to leave the site, or to break the header.
    #[test]
    fn hostile_locations_never_leave_the_site() {
        for evil in [
            "//evil.example/",
            "http://evil.example",
            "https://127.0.0.1:8080@evil.example",
            "https://127.0.0.1@evil.example/",
            "http://a@b@127.0.0.1:8080/",
            "http://evil.example#@127.0.0.1:8080/",
            "http://evil.example?@127.0.0.1:8080/",
            "http://127.0.0.1:8080.evil.example/",
            "http://127.0.0.1:99999/",
            "/\\/evil.example",
            "\t//evil.example",
            "///evil.example",
            "////evil.example",
            "http:///evil.example",
            "https:evil.example",
            "http:/evil.example",
            "HTTP://127.0.0.1:8080/",
            "javascript:alert(document.cookie)",
            "JavaScript://127.0.0.1:8080/%0aalert(1)",
            "data:text/html,<script>alert(1)</script>",
            "http://[::1]/",
            "http://еvil.example/",
        ] {
            assert_eq!(safe_redirect(evil, HOME), None, "{evil:?}");
        }
        // A backslash is dropped, leaving a path on the site.
        assert_eq!(safe_redirect("/\\evil.example", HOME).as_deref(), Some("/evil.example"));
        // No home, no host to go to.
        assert_eq!(safe_redirect("http://127.0.0.1:8080/", ""), None);
    }

    #[test]
    fn line_breaks_never_reach_the_header() {
        for injected in [
            "/p/\r\nSet-Cookie: owned=1",
            "/p/%0d%0aSet-Cookie:%20owned=1",
            "/p/%0%0dd%0aX: y",
            "http://127.0.0.1:8080/\nLocation: http://evil.example/",
        ] {
            let got = safe_redirect(injected, HOME).expect("a path on the site");
            assert!(
                got.starts_with("/p/") || got.starts_with("http://127.0.0.1:8080/"),
                "{got}"
            );
            assert!(!got.contains(['\r', '\n', ' ']), "{got:?}");
            assert!(
                !got.to_ascii_lowercase().contains("%0d") && !got.to_ascii_lowercase().contains("%0a"),
                "{got}"
            );
            assert!(http::HeaderValue::from_str(&got).is_ok(), "{got:?}");
        }
    }

    #[test]
    fn overlong_locations_are_refused() {
        let long = format!("{HOME}/{}", "a".repeat(MAX_LOCATION));
        assert!(
            validate_redirect(&long, HOME).is_some(),
            "WordPress itself would send it"
        );
        assert_eq!(safe_redirect(&long, HOME), None);
        let fits = format!("{HOME}/{}", "a".repeat(MAX_LOCATION - HOME.len() - 1));
        assert_eq!(safe_redirect(&fits, HOME).map(|l| l.len()), Some(MAX_LOCATION));
        assert_eq!(safe_redirect("", HOME), None);
        assert_eq!(safe_redirect(" \t", HOME), None);
    }
}
