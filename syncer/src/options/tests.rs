use super::*;

fn rows(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn options_follow_php_truthiness_and_defaults() {
    let o = Options::from_rows(&rows(&[
        ("siteurl", "http://127.0.0.1:8080"),
        ("home", "http://127.0.0.1:8080"),
        ("require_name_email", "1"),
        ("comment_moderation", "0"),
        ("comment_max_links", "2"),
        ("comment_previously_approved", ""),
        ("show_comments_cookies_opt_in", "1"),
    ]));
    assert!(o.require_name_email);
    assert!(!o.comment_moderation);
    assert_eq!(o.comment_max_links, 2);
    assert!(!o.comment_previously_approved);
    assert_eq!(o.close_comments_days_old, 14);
    assert_eq!(o.home_host(), "127.0.0.1");
    assert_eq!(o.home_authority(), "127.0.0.1:8080");
    let empty = Options::from_rows(&HashMap::new());
    assert!(empty.require_name_email && empty.comment_previously_approved && empty.cookies_opt_in);
}
