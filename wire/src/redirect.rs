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

/// `wp_validate_redirect()`: `None` when the location leaves the site (another host, another
/// scheme than http/https, malformed).
pub fn validate_redirect(location: &str, home: &str) -> Option<String> {
    let location = location
        .trim_matches([' ', '\t', '\n', '\r', '\0', '\x08', '\x0B'])
        .to_string();
    let test_loc = if location.starts_with("//") {
        format!("http:{location}")
    } else {
        location.clone()
    };
    let test = test_loc.split('?').next().unwrap_or("");
    let (scheme, rest) = match test.split_once(':') {
        Some((s, r)) if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) => {
            (Some(s.to_ascii_lowercase()), r)
        }
        _ => (None, test),
    };
    if let Some(s) = &scheme {
        if s != "http" && s != "https" {
            return None;
        }
    }
    let host = rest.strip_prefix("//").map(|r| {
        let authority = r.split(['/', '#']).next().unwrap_or("");
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        hostport.split(':').next().unwrap_or("").to_string()
    });
    match host {
        None if scheme.is_some() => None,
        // A relative path is made absolute from wp-comments-post.php's directory, "/".
        None if !test.is_empty() && !test.starts_with(['/', '#']) => Some(format!("/{test_loc}")),
        None => Some(test_loc),
        Some(h) => {
            let home_host = home
                .split_once("://")
                .map(|(_, r)| r.split(['/', '?', '#']).next().unwrap_or(""))
                .map(|a| a.rsplit_once('@').map_or(a, |(_, h)| h))
                .map(|a| a.split(':').next().unwrap_or(""))
                .unwrap_or("");
            (h == home_host || h == home_host.to_ascii_lowercase()).then_some(test_loc)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_sanitized_and_validated_like_wordpress() {
        assert_eq!(sanitize_redirect("http://h/ü x?a=<b>"), "http://h/%C3%BC%20x?a=b");
        let home = "http://127.0.0.1:8080";
        assert_eq!(validate_redirect("http://evil.test/x", home), None);
        assert_eq!(validate_redirect("/local", home).as_deref(), Some("/local"));
        assert_eq!(validate_redirect("rel/x", home).as_deref(), Some("/rel/x"));
        assert_eq!(
            validate_redirect("//127.0.0.1:9/x", home).as_deref(),
            Some("http://127.0.0.1:9/x")
        );
        assert_eq!(validate_redirect("javascript:x", home), None);
    }
}
