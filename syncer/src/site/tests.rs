use super::*;

fn rows(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn settings_match_wordpress_constants() {
    let o = Options::from_rows(&rows(&[
        ("siteurl", "http://127.0.0.1:8080"),
        ("home", "https://Example.test/blog"),
    ]));
    let s = o.settings(7);
    // md5("http://127.0.0.1:8080") in PHP.
    assert_eq!(s.cookiehash, "ef301f25d1b8e2bca70fafc1316f1a92");
    assert_eq!(s.cookie_path, "/blog/");
    assert!(s.secure);
    assert_eq!(s.max_lengths, [245, 100, 200, 65525]);
    assert_eq!(s.published_ms, 7);
    let o = Options::from_rows(&rows(&[("home", "http://127.0.0.1:8080")]));
    assert_eq!(o.settings(0).cookie_path, "/");
}

#[test]
fn dates_use_the_site_timezone() {
    // 2026-01-01 00:00:00 UTC; PHP DateTime gives 01:00 in Berlin and 05:30 at +05:30.
    let ms = 1_767_225_600_000;
    let named = Options::from_rows(&rows(&[("timezone_string", "Europe/Berlin"), ("gmt_offset", "0")]));
    assert_eq!(
        comment_dates(ms, named.timezone()),
        ("2026-01-01 01:00:00".to_string(), "2026-01-01 00:00:00".to_string())
    );
    let offset = Options::from_rows(&rows(&[("timezone_string", ""), ("gmt_offset", "5.5")]));
    assert_eq!(comment_dates(ms, offset.timezone()).0, "2026-01-01 05:30:00");
    let utc = Options::from_rows(&rows(&[("timezone_string", "UTC")]));
    assert_eq!(comment_dates(ms + 999, utc.timezone()).0, "2026-01-01 00:00:00");
    // Every field zero-padded, as PHP's `Y-m-d H:i:s`.
    assert_eq!(
        comment_dates(1_772_600_767_000, utc.timezone()).1,
        "2026-03-04 05:06:07"
    );
    assert_eq!(comment_dates(5_000, utc.timezone()).1, "1970-01-01 00:00:05");
}

#[test]
fn moderation_hash_is_wp_hash() {
    // hash_hmac('md5', '2026-11-26 14:03:07', 'abcKEYdefSALT') in PHP.
    assert_eq!(
        wp_hash("2026-11-26 14:03:07", "abcKEYdefSALT"),
        "8c25859fdb03272c6cd695707223c200"
    );
}

#[test]
fn salts_come_from_the_config_files_then_the_options() {
    let dir = std::env::temp_dir().join(format!("strata-syncer-salts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.php"),
        "<?php\n// define('AUTH_KEY', 'commented');\ndefine('DB_NAME', 'x');\nrequire __DIR__ . '/salts.php';\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("salts.php"),
        "<?php\ndefine( 'AUTH_KEY', 'k\\'ey' );\ndefine(\"AUTH_SALT\", \"salt\");\ndefine('NONCE_KEY', 'other');\n",
    )
    .unwrap();
    let consts = read_php_constants(&dir.join("main.php")).unwrap();
    assert_eq!(consts.files.len(), 2);
    let o = Options::from_rows(&rows(&[("auth_key", "optkey"), ("auth_salt", "optsalt")]));
    assert_eq!(auth_salt(&consts, &o).as_deref(), Some("k'eysalt"));
    // The sample phrase, or a value shared by two constants, is not used.
    std::fs::write(
        dir.join("salts.php"),
        "<?php\ndefine('AUTH_KEY', 'put your unique phrase here');\ndefine('AUTH_SALT', 'same');\ndefine('NONCE_SALT', 'same');\n",
    )
    .unwrap();
    let consts = read_php_constants(&dir.join("main.php")).unwrap();
    assert_eq!(auth_salt(&consts, &o).as_deref(), Some("optkeyoptsalt"));
    assert_eq!(
        auth_salt(&PhpConstants::default(), &Options::from_rows(&HashMap::new())),
        None
    );
    assert!(read_php_constants(&dir.join("missing.php")).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_slow_origin_gets_the_plain_link_in_time_and_the_permalink_later() {
    // An origin that accepts and answers only after 300 ms.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = s
                    .write_all(b"HTTP/1.1 301 Moved\r\nLocation: http://site.test/hello/\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    let links = Permalinks::new(format!("http://{addr}").parse().unwrap());
    let soon = tokio::time::Instant::now() + Duration::from_millis(50);
    // Had it waited for the answer, it would have the permalink.
    assert_eq!(
        links.get(7, "http://site.test", "site.test", soon).await,
        "http://site.test/?p=7"
    );
    // The look-up went on in the background.
    let later = tokio::time::Instant::now() + Duration::from_secs(2);
    assert_eq!(
        links.get(7, "http://site.test", "site.test", later).await,
        "http://site.test/hello/"
    );
}
