use super::*;

fn secret_file() -> tempfile_path::TempPath {
    tempfile_path::TempPath::with("0123456789abcdef0123456789abcdef")
}

/// A tiny temporary file helper, so tests need no extra crates.
mod tempfile_path {
    use std::path::PathBuf;
    pub struct TempPath(pub PathBuf);
    impl TempPath {
        pub fn with(contents: &str) -> Self {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("strata-cfg-{}-{n}", std::process::id()));
            std::fs::write(&p, contents).unwrap();
            TempPath(p)
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn minimal(secret: &Path) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:9080\"\n[origin]\nurl = \"http://127.0.0.1:8081\"\n[cluster]\nsecret_file = {:?}\n",
        secret.display().to_string()
    )
}

#[test]
fn a_reload_applies_what_can_change_and_names_the_rest() {
    let s = secret_file();
    let running = Config::from_toml(&minimal(&s.0), None).unwrap();
    let text = minimal(&s.0).replace("[server]", "[server]\nhosts = [\"example.test\"]\nworkers = 3")
        + "[cache]\ndefault_ttl = \"7s\"\ncapacity = \"1GiB\"\n";
    let new = Config::from_toml(&text, None).unwrap();
    let (merged, restart) = running.reloaded(new);
    assert_eq!(merged.cache.default_ttl, Duration::from_secs(7));
    assert_eq!(merged.server.hosts, vec!["example.test".to_string()]);
    assert_eq!(merged.cache.capacity, running.cache.capacity);
    assert_eq!(merged.server.workers, running.server.workers);
    assert_eq!(
        restart,
        vec!["cache.capacity", "server (listeners, limits, workers, tls)"]
    );
    // The same file again changes nothing and names nothing.
    let (_, restart) = running.reloaded(running.clone());
    assert!(restart.is_empty());
}

#[test]
fn minimal_file_gets_defaults() {
    let s = secret_file();
    let c = Config::from_toml(&minimal(&s.0), None).unwrap();
    assert_eq!(c.cache.capacity, DEFAULT_CAPACITY);
    assert_eq!(c.cache.grace, DEFAULT_GRACE);
    assert_eq!(c.origin.url.authority().unwrap().as_str(), "127.0.0.1:8081");
    assert!(c.policy.pass_cookies.iter().any(|p| p == "wordpress_logged_in_"));
    assert_eq!(c.cluster.secret.len(), 32);
}

#[test]
fn every_bad_value_is_named_by_its_key() {
    let s = secret_file();
    let text = format!(
        "[server]\nlisten = \"nowhere\"\nadmin_listen = \"127.0.0.1:9080\"\nheader_timeout = \"10 parsecs\"\nworkers = 0\n\
         [origin]\nurl = \"ftp://x\"\n[cache]\ncapacity = \"lots\"\ndefault_ttl = 5\nmax_variants = 0\nbackground_refreshes = 0\n\
         [cluster]\nsecret_file = {:?}\nsiblings = [\"nope\"]\n",
        s.0.display().to_string()
    );
    let err = Config::from_toml(&text, None).unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "server.listen",
        "server.header_timeout",
        "server.workers",
        "origin.url",
        "cache.capacity",
        "cache.default_ttl",
        "cache.max_variants",
        "cache.background_refreshes",
        "cluster.siblings",
    ] {
        assert!(keys.contains(&k), "{k} not reported in {keys:?}");
    }
}

#[test]
fn unknown_keys_and_missing_secret_are_refused() {
    let err = Config::from_toml("[cache]\ncapacityy = 5\n", None).unwrap_err();
    assert!(err.to_string().contains("capacityy"), "{err}");
    let text = minimal(Path::new("/nonexistent/secret"));
    let err = Config::from_toml(&text, None).unwrap_err();
    assert_eq!(err.problems[0].key, "cluster.secret_file");
}

#[test]
fn admin_and_public_ports_must_differ() {
    let s = secret_file();
    let text = minimal(&s.0).replace("127.0.0.1:9080", "127.0.0.1:8080");
    let err = Config::from_toml(&text, None).unwrap_err();
    assert_eq!(err.problems[0].key, "server.admin_listen");
}

#[test]
fn tls_keys_are_checked_together() {
    let s = secret_file();
    let text = minimal(&s.0).replace(
        "[origin]",
        "tls_listen = \"127.0.0.1:8443\"\nhsts = \"forever\"\n[origin]",
    );
    let err = Config::from_toml(&text, None).unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["server.tls_cert", "server.tls_key", "server.hsts"]);

    let text = minimal(&s.0).replace(
        "[origin]",
        "tls_key = \"/nonexistent/key.pem\"\nredirect_https = true\n[origin]",
    );
    let err = Config::from_toml(&text, None).unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["server.tls_key", "server.redirect_https"],
        "both need tls_listen"
    );

    let text = minimal(&s.0).replace(
        "[origin]",
        "tls_listen = \"127.0.0.1:8080\"\n[[server.tls_certificates]]\ncert = \"/nonexistent/c.pem\"\n[origin]",
    );
    let err = Config::from_toml(&text, None).unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["server.tls_listen", "server.tls_certificates[0].key"]);
    assert!(Config::from_toml(&minimal(&s.0), None).unwrap().server.tls.is_none());
}

/// A raw section from TOML text, as serde reads it from a file.
fn raw<T: serde::de::DeserializeOwned>(text: &str) -> T {
    toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// What `validate` returns, with the problems it recorded.
fn checked<T>(validate: impl FnOnce(&mut Checker) -> T) -> (T, Vec<Problem>) {
    let mut c = Checker::default();
    let value = validate(&mut c);
    (value, c.problems)
}

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

/// A self-signed certificate for `name` and its key, written to a fresh directory.
fn cert_files(name: &str) -> PathBuf {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("strata-cfg-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    dir
}

#[test]
fn access_log_format_and_file() {
    let base = "listen = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:9080\"\n";
    let (s, problems) = checked(|c| server_config(c, &raw(base), None));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        (s.access_log_format, s.access_log_file),
        (crate::access::Format::Text, None)
    );

    let dir = std::env::temp_dir().join(format!("strata-access-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!("{base}access_log = true\naccess_log_format = \"combined\"\naccess_log_file = \"access.log\"\n");
    let (s, problems) = checked(|c| server_config(c, &raw(&text), Some(&dir)));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(s.access_log_format, crate::access::Format::Combined);
    assert_eq!(
        s.access_log_file,
        Some(dir.join("access.log")),
        "relative to the config's folder"
    );
    let (s, _) = checked(|c| server_config(c, &raw(&format!("{base}access_log_format = \"json\"\n")), None));
    assert_eq!(
        (s.access_log_format, s.access_log_file),
        (crate::access::Format::Json, None)
    );

    let bad = format!("{base}access_log_format = \"common\"\n");
    let (_, problems) = checked(|c| server_config(c, &raw(&bad), None));
    assert_eq!(keys(&problems), ["server.access_log_format"]);
    assert!(
        problems[0].message.contains("\"common\" is not a format"),
        "{problems:?}"
    );
    let bad = format!("{base}access_log_format = \"json\"\naccess_log_file = \"/nonexistent/dir/access.log\"\n");
    let (_, problems) = checked(|c| server_config(c, &raw(&bad), None));
    assert_eq!(keys(&problems), ["server.access_log_file"]);
    assert!(
        problems[0].message.starts_with("/nonexistent/dir/access.log: "),
        "{problems:?}"
    );
    let bad = format!("{base}access_log_file = \"/tmp/x.log\"\n");
    let (_, problems) = checked(|c| server_config(c, &raw(&bad), None));
    assert_eq!(
        keys(&problems),
        ["server.access_log_file"],
        "a file takes combined or json"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn server_section() {
    let text = "listen = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:9080\"\nhosts = [\"Example.TEST\"]\n";
    let (s, problems) = checked(|c| server_config(c, &raw(text), None));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(s.header_timeout, DEFAULT_HEADER_TIMEOUT);
    assert_eq!(s.max_header_bytes as u64, DEFAULT_MAX_HEADER_BYTES);
    assert_eq!(s.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(s.hosts, ["example.test"]);
    assert!(s.tls.is_none() && !s.access_log);

    let bad = "listen = \"nowhere\"\nadmin_listen = \"127.0.0.1:9080\"\nheader_timeout = \"soon\"\n\
               max_header_bytes = \"512\"\nmax_connections = 0\nworkers = 1025\nshutdown_timeout = 10\n";
    let (_, problems) = checked(|c| server_config(c, &raw(bad), None));
    assert_eq!(
        keys(&problems),
        [
            "server.listen",
            "server.header_timeout",
            "server.max_connections",
            "server.workers",
            "server.shutdown_timeout",
            "server.max_header_bytes",
        ]
    );
    assert!(
        problems[0].message.contains("\"nowhere\" is not an IP:port"),
        "{problems:?}"
    );
    assert_eq!(problems[5].message, "must be at least 1KiB");

    let (_, problems) = checked(|c| server_config(c, &RawServer::default(), None));
    assert_eq!(keys(&problems), ["server.listen", "server.admin_listen"]);
    assert!(problems[0].message.starts_with("missing"), "{problems:?}");
}

#[test]
fn origin_budget_keys() {
    let url = "url = \"http://127.0.0.1:8081\"\n";
    // Defaults: PHP-FPM's 8 workers shared by the nodes, at least 2; a quarter for refreshes.
    for (nodes, concurrency, background) in [(1, 8, 2), (2, 4, 1), (3, 2, 1), (9, 2, 1)] {
        let (o, problems) = checked(|c| origin_config(c, &raw(url), None, nodes));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            (o.concurrency, o.background_max),
            (concurrency, background),
            "{nodes} nodes"
        );
        assert_eq!(o.queue_timeout, DEFAULT_QUEUE_TIMEOUT);
    }
    let set = format!("{url}concurrency = 12\nbackground_max = 5\nqueue_timeout = \"2s\"\n");
    let (o, problems) = checked(|c| origin_config(c, &raw(&set), None, 3));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!((o.concurrency, o.background_max), (12, 5));
    assert_eq!(o.queue_timeout, Duration::from_secs(2));
    // The older key still sets the background share.
    let (o, problems) = checked(|c| origin_config(c, &raw(url), Some(3), 1));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(o.background_max, 3);
    let (_, problems) = checked(|c| origin_config(c, &raw(&format!("{url}background_max = 2\n")), Some(2), 1));
    assert_eq!(keys(&problems), ["cache.background_refreshes"]);
    let (_, problems) = checked(|c| origin_config(c, &raw(url), Some(9), 1));
    assert_eq!(keys(&problems), ["cache.background_refreshes"]);
    assert!(
        problems[0].message.contains("more than origin.concurrency (8)"),
        "{problems:?}"
    );
    let bad = format!("{url}concurrency = 0\nbackground_max = 9\nqueue_timeout = \"0s\"\n");
    let (_, problems) = checked(|c| origin_config(c, &raw(&bad), None, 1));
    assert_eq!(
        keys(&problems),
        ["origin.concurrency", "origin.background_max", "origin.queue_timeout"],
        "{problems:?}"
    );
}

#[test]
fn the_admin_port_and_each_client_have_limits_of_their_own() {
    let base = "listen = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:9080\"\n";
    let (s, problems) = checked(|c| server_config(c, &raw(base), None));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(s.admin_max_connections, DEFAULT_ADMIN_MAX_CONNECTIONS);
    assert_eq!(s.max_connections_per_client, 0, "no per-client limit by default");
    assert_eq!(s.idle_timeout, DEFAULT_IDLE_TIMEOUT);

    let set = format!("{base}admin_max_connections = 16\nmax_connections_per_client = 32\nidle_timeout = \"30s\"\n");
    let (s, problems) = checked(|c| server_config(c, &raw(&set), None));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        (s.admin_max_connections, s.max_connections_per_client, s.idle_timeout),
        (16, 32, Duration::from_secs(30))
    );

    let bad = format!("{base}admin_max_connections = 0\nmax_connections_per_client = -1\nidle_timeout = \"10ms\"\n");
    let (_, problems) = checked(|c| server_config(c, &raw(&bad), None));
    assert_eq!(
        keys(&problems),
        [
            "server.admin_max_connections",
            "server.max_connections_per_client",
            "server.idle_timeout",
        ]
    );
    assert!(
        problems[2].message.starts_with("must be at least 100ms"),
        "{problems:?}"
    );
    // They take a restart, like the other limits.
    let s = secret_file();
    let running = Config::from_toml(&minimal(&s.0), None).unwrap();
    let new = Config::from_toml(
        &minimal(&s.0).replace("[server]", "[server]\nadmin_max_connections = 8"),
        None,
    )
    .unwrap();
    assert_eq!(running.reloaded(new).1, ["server (listeners, limits, workers, tls)"]);
}

#[test]
fn tls_keys_of_the_server_section() {
    let dir = cert_files("one.test");
    let text = "listen = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:9080\"\ntls_listen = \"127.0.0.1:8443\"\n\
                tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\nredirect_https = true\nhsts = \"max-age=60\"\n";
    let (s, problems) = checked(|c| server_config(c, &raw(text), Some(&dir)));
    assert!(problems.is_empty(), "{problems:?}");
    let tls = s.tls.unwrap();
    assert_eq!(tls.listen, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(tls.certificates[0].names, ["one.test"]);
    assert!(tls.redirect_https);
    assert_eq!(tls.hsts.unwrap(), "max-age=60");

    // The first entry of tls_certificates is the default when tls_cert and tls_key are absent.
    let list = "tls_listen = \"127.0.0.1:8443\"\n[[tls_certificates]]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\
                [[tls_certificates]]\ncert = \"cert.pem\"\n";
    let s: RawServer = raw(list);
    let (certs, problems) = checked(|c| tls_certificates(c, &s, Some(&dir)));
    assert_eq!(certs.len(), 1);
    assert_eq!(keys(&problems), ["server.tls_certificates[1].key"]);
    assert!(problems[0].message.starts_with("missing"), "{problems:?}");

    // A key file that holds a certificate is reported under the key's own key.
    let swapped = "tls_listen = \"127.0.0.1:8443\"\ntls_cert = \"cert.pem\"\ntls_key = \"cert.pem\"\n";
    let (certs, problems) = checked(|c| tls_certificates(c, &raw(swapped), Some(&dir)));
    assert!(certs.is_empty());
    assert_eq!(keys(&problems), ["server.tls_key"]);
    let _ = std::fs::remove_dir_all(&dir);

    let (hsts_value, problems) = checked(|c| hsts(c, &Some("forever".into())));
    assert!(hsts_value.is_none());
    assert_eq!(keys(&problems), ["server.hsts"]);
    assert!(problems[0].message.contains("max-age=31536000"), "{problems:?}");
    let (_, problems) = checked(|c| tls_config(c, &raw("hsts = \"max-age=1\"\n"), None, [None, None]));
    assert_eq!(keys(&problems), ["server.hsts"]);
    assert_eq!(problems[0].message, "needs server.tls_listen: HTTPS is off without it");
}

#[test]
fn origin_section() {
    let (o, problems) = checked(|c| {
        origin_config(
            c,
            &raw("url = \"http://127.0.0.1:8081\"\nmax_idle_connections = 0\n"),
            None,
            1,
        )
    });
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(o.url, "http://127.0.0.1:8081/");
    assert_eq!(o.max_idle_connections, 0);
    assert_eq!(
        (o.connect_timeout, o.first_byte_timeout, o.body_timeout),
        (
            DEFAULT_CONNECT_TIMEOUT,
            DEFAULT_FIRST_BYTE_TIMEOUT,
            DEFAULT_BODY_TIMEOUT
        )
    );

    for (url, says) in [
        ("https://127.0.0.1", "expected an http:// URL"),
        ("http://127.0.0.1:8081/blog", "a path prefix is not supported"),
        ("http://exa mple", "is not a URL"),
    ] {
        let (_, problems) = checked(|c| origin_config(c, &raw(&format!("url = {url:?}\n")), None, 1));
        assert_eq!(keys(&problems), ["origin.url"], "{url}");
        assert!(problems[0].message.contains(says), "{url}: {problems:?}");
    }
    let bad = "connect_timeout = \"3\"\nbody_timeout = \"1x\"\nmax_idle_connections = 100001\n";
    let (_, problems) = checked(|c| origin_config(c, &raw(bad), None, 1));
    assert_eq!(
        keys(&problems),
        [
            "origin.url",
            "origin.connect_timeout",
            "origin.body_timeout",
            "origin.max_idle_connections"
        ]
    );
    assert!(problems[0].message.starts_with("missing"), "{problems:?}");
}

#[test]
fn cache_section() {
    let (k, problems) = checked(|c| cache_config(c, &raw("capacity = \"64MiB\"\ncacheable_statuses = [200, 404]\n")));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(k.capacity, 64 << 20);
    assert_eq!(k.cacheable_statuses, [200, 404]);
    assert_eq!((k.default_ttl, k.grace), (DEFAULT_TTL, DEFAULT_GRACE));
    let (k, _) = checked(|c| cache_config(c, &RawCache::default()));
    assert_eq!(k.cacheable_statuses, DEFAULT_CACHEABLE_STATUSES);
    assert_eq!(k.keep, DEFAULT_KEEP);
    assert!(!k.store_any_status && !k.store_set_cookie);
    assert_eq!(k.targeted_fields, ["strata-cache-control", "cdn-cache-control"]);
    let (k, problems) = checked(|c| cache_config(c, &raw("targeted_fields = [\"Surrogate-Control\", \"bad name\"]\n")));
    assert_eq!(k.targeted_fields, ["surrogate-control"]);
    assert_eq!(keys(&problems), ["cache.targeted_fields"]);
    let (k, _) = checked(|c| cache_config(c, &raw("store_any_status = true\nstore_set_cookie = true\n")));
    assert!(k.store_any_status && k.store_set_cookie);
    let (k, problems) = checked(|c| cache_config(c, &raw("keep = \"1h\"\nheuristic_fraction = 0.1\n")));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(k.keep, Duration::from_secs(3600));
    assert_eq!(k.heuristic_fraction, 0.1);
    let (k, _) = checked(|c| cache_config(c, &raw("heuristic_fraction = 1\n")));
    assert_eq!(k.heuristic_fraction, 1.0);
    for bad in [
        "heuristic_fraction = 1.5",
        "heuristic_fraction = -0.1",
        "heuristic_fraction = \"10%\"",
    ] {
        let (k, problems) = checked(|c| cache_config(c, &raw(bad)));
        assert_eq!(keys(&problems), ["cache.heuristic_fraction"], "{bad}");
        assert_eq!(k.heuristic_fraction, DEFAULT_HEURISTIC_FRACTION);
    }

    let bad = "capacity = \"4MiB\"\nmax_object_size = \"2MiB\"\nlock_timeout = \"0\"\nlist_refresh = 1\n\
               list_tags = [\"list\", \"*\", \"a b\"]\nmax_variants = 1025\ncacheable_statuses = [200, 199, 600]\ngrace = \"1 hour\"\nkeep = 5\n";
    let (_, problems) = checked(|c| cache_config(c, &raw(bad)));
    assert_eq!(
        keys(&problems),
        [
            "cache.grace",
            "cache.keep",
            "cache.list_refresh",
            "cache.list_tags",
            "cache.list_tags",
            "cache.max_variants",
            "cache.cacheable_statuses",
            "cache.cacheable_statuses",
            "cache.max_object_size",
            "cache.lock_timeout",
        ]
    );
    assert_eq!(problems[6].message, "199 is not an HTTP status from 200 to 599");
    assert_eq!(problems[8].message, "must be at most a quarter of cache.capacity");
    let (k, _) = checked(|c| cache_config(c, &RawCache::default()));
    assert_eq!(k.list_refresh, DEFAULT_LIST_REFRESH);
    assert_eq!(k.list_tags, DEFAULT_LIST_TAGS);
    let (k, problems) = checked(|c| cache_config(c, &raw("list_refresh = \"0s\"\nlist_tags = [\"list:home\"]\n")));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        (k.list_refresh, k.list_tags),
        (Duration::ZERO, vec!["list:home".to_string()])
    );

    let (_, problems) = checked(|c| cache_config(c, &raw("capacity = 1000\n")));
    assert_eq!(keys(&problems), ["cache.capacity", "cache.max_object_size"]);
    assert_eq!(problems[0].message, "1000 bytes is too small: at least 1MiB");
}

#[test]
fn the_http_preset_changes_the_defaults_and_keys_still_override_it() {
    let (k, problems) = checked(|c| cache_config(c, &raw("preset = \"http\"\n")));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(k.preset, Preset::Http);
    assert_eq!(
        (k.default_ttl, k.grace, k.keep),
        (Duration::ZERO, Duration::ZERO, Duration::from_secs(3600))
    );
    assert_eq!(k.heuristic_fraction, 0.1);
    assert!(k.store_any_status && k.store_set_cookie && k.request_directives);
    assert_eq!(
        k.targeted_fields,
        ["strata-cache-control", "surrogate-control", "cdn-cache-control"]
    );
    let (p, _) = checked(|c| policy_config(c, &RawPolicy::default(), Preset::Http));
    assert!(!p.pass_authorization);

    let (k, _) = checked(|c| {
        cache_config(
            c,
            &raw("preset = \"http\"\ngrace = \"10s\"\nrequest_directives = false\n"),
        )
    });
    assert_eq!((k.grace, k.request_directives), (Duration::from_secs(10), false));
    let (p, _) = checked(|c| policy_config(c, &raw("pass_authorization = true\n"), Preset::Http));
    assert!(p.pass_authorization);

    let (k, _) = checked(|c| cache_config(c, &RawCache::default()));
    assert_eq!(k.preset, Preset::WordPress);
    assert_eq!(
        (k.default_ttl, k.grace, k.keep),
        (DEFAULT_TTL, DEFAULT_GRACE, DEFAULT_KEEP)
    );
    assert!(!k.request_directives && !k.store_set_cookie && !k.store_any_status);
    assert!(k.fill_headers.is_empty());

    let (_, problems) = checked(|c| cache_config(c, &raw("preset = \"varnish\"\n")));
    assert_eq!(keys(&problems), ["cache.preset"]);
    assert_eq!(problems[0].message, "\"varnish\": expected \"wordpress\" or \"http\"");

    // A whole file: the preset reaches [policy] too.
    let s = secret_file();
    let c = Config::from_toml(&(minimal(&s.0) + "[cache]\npreset = \"http\"\n"), None).unwrap();
    assert!(!c.policy.pass_authorization && c.cache.request_directives);
}

#[test]
fn fill_headers_are_header_names_a_fill_may_send() {
    let (k, problems) = checked(|c| cache_config(c, &raw("fill_headers = [\"Traceparent\", \"X-Request-Id\"]\n")));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(k.fill_headers, ["traceparent", "x-request-id"]);
    let (k, problems) = checked(|c| {
        cache_config(
            c,
            &raw("fill_headers = [\"range\", \"if-none-match\", \"a b\", \"x-ok\"]\n"),
        )
    });
    assert_eq!(
        keys(&problems),
        ["cache.fill_headers", "cache.fill_headers", "cache.fill_headers"]
    );
    assert_eq!(k.fill_headers, ["x-ok"]);
}

#[test]
fn policy_section() {
    let text = "pass_cookies = [\"session_\"]\nextra_pass_cookies = [\"cart_\"]\nextra_pass_paths = [\"/shop\"]\n\
                pass_ajax = false\n";
    let (p, problems) = checked(|c| policy_config(c, &raw(text), Preset::WordPress));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(p.pass_cookies, ["session_", "cart_"]);
    assert!(p.pass_paths.starts_with(&["/wp-admin".to_string()]));
    assert!(p.pass_paths.ends_with(&["/shop".to_string()]));
    assert_eq!(p.strip_query.len(), DEFAULT_STRIP_QUERY.len());
    assert!(p.pass_authorization && !p.pass_ajax);

    let bad = "pass_paths = [\"wp-admin\"]\nstrip_query = [\"\"]\n";
    let (_, problems) = checked(|c| policy_config(c, &raw(bad), Preset::WordPress));
    assert_eq!(keys(&problems), ["policy.pass_paths", "policy"]);
    assert_eq!(problems[0].message, "\"wp-admin\" must start with '/'");
}

#[test]
fn cluster_section() {
    let secret = secret_file();
    let name = secret.0.file_name().unwrap().to_str().unwrap();
    let text = format!(
        "node_id = \"web-1\"\nsiblings = [\"http://127.0.0.1:9081\"]\nsecret_file = {name:?}\n\
         admin_allow = [\"::1\"]\nwhen_unconfirmed = \"pass\"\n"
    );
    let (cl, problems) = checked(|c| cluster_config(c, &raw(&text), secret.0.parent()));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(cl.node_id, "web-1");
    assert_eq!(cl.siblings, ["http://127.0.0.1:9081/"]);
    assert_eq!((cl.secret_file, cl.secret.len()), (secret.0.clone(), 32));
    assert_eq!(cl.admin_allow, ["::1".parse::<crate::allow::IpNet>().unwrap()]);
    assert_eq!(cl.when_unconfirmed, Unconfirmed::Pass);
    assert_eq!(cl.confirm_within, DEFAULT_CONFIRM_WITHIN);

    let bad = "node_id = \"web 1\"\nsiblings = [\"https://x:1\"]\nadmin_allow = [\"localhost\"]\n\
               heartbeat_interval = \"1s\"\nwhen_unconfirmed = \"wait\"\nqueue_limit = 0\n";
    let (_, problems) = checked(|c| cluster_config(c, &raw(bad), None));
    assert_eq!(
        keys(&problems),
        [
            "cluster.node_id",
            "cluster.siblings",
            "cluster.admin_allow",
            "cluster.secret_file",
            "cluster.confirm_within",
            "cluster.when_unconfirmed",
            "cluster.queue_limit",
        ]
    );
    assert!(
        problems[2]
            .message
            .starts_with("\"localhost\" is not an IP address or CIDR range"),
        "{problems:?}"
    );
    assert!(problems[3].message.starts_with("missing"), "{problems:?}");

    // The names senders use for this node's admin listener, each host:port.
    let text =
        format!("secret_file = {name:?}\nadmin_hosts = [\"Node1.example.internal:9080\", \"[2001:db8::1]:9080\"]\n");
    let (cl, problems) = checked(|c| cluster_config(c, &raw(&text), secret.0.parent()));
    assert!(problems.is_empty(), "{problems:?}");
    let names: Vec<String> = cl.admin_hosts.iter().map(|a| a.to_string()).collect();
    assert_eq!(names, ["node1.example.internal:9080", "[2001:db8::1]:9080"]);
    let text = format!("secret_file = {name:?}\nadmin_hosts = [\"user@node1:9080\", \"http://node1/\"]\n");
    let (_, problems) = checked(|c| cluster_config(c, &raw(&text), secret.0.parent()));
    assert_eq!(keys(&problems), ["cluster.admin_hosts", "cluster.admin_hosts"]);
    assert!(problems[0].message.contains("is not host:port"), "{problems:?}");

    let (_, problems) = checked(|c| cluster_config(c, &raw("heartbeat_interval = \"0\"\n"), None));
    assert_eq!(keys(&problems), ["cluster.secret_file", "cluster.heartbeat_interval"]);
}

#[test]
fn bans_section() {
    let (b, problems) = checked(|c| {
        bans_config(
            c,
            &raw("tag_headers = [\"X-Key\"]\npurge_allow = [\"10.0.0.1\", \"10.0.0.0/8\", \"2001:db8::/32\"]\n"),
        )
    });
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(b.tag_headers, ["x-key"]);
    assert_eq!(b.purge_allow.len(), 3);
    assert!(b.strip_tag_headers && b.wordpress);
    let (b, _) = checked(|c| bans_config(c, &RawBans::default()));
    assert_eq!(b.tag_headers.len(), DEFAULT_TAG_HEADERS.len());

    let bad =
        "tag_headers = [\"bad header\"]\nmax_tags = 1025\npurge_allow = [\"10.0.0.1/8\", \"10.0.0.0/8\", \"::/129\"]\n";
    let (_, problems) = checked(|c| bans_config(c, &raw(bad)));
    assert_eq!(
        keys(&problems),
        [
            "bans.tag_headers",
            "bans.max_tags",
            "bans.purge_allow",
            "bans.purge_allow"
        ]
    );
    assert_eq!(problems[0].message, "\"bad header\" is not a header name");
    // Each bad entry is named; the good one between them is not reported.
    assert_eq!(
        problems[2].message,
        "\"10.0.0.1/8\" has bits set after its /8 prefix: did you mean \"10.0.0.0/8\"?"
    );
    assert_eq!(problems[3].message, "\"::/129\": the prefix length must be at most 128");

    // The URL form of a purge: off unless named; a path prefix without its final slash.
    assert_eq!(b.purge_path, "");
    let (b, problems) = checked(|c| bans_config(c, &raw("purge_path = \"/purge\"\n")));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(b.purge_path, "/purge");
    for bad in ["purge", "/purge/", "/", "/pur ge", "/purge*", "/purge?x"] {
        let (b, problems) = checked(|c| bans_config(c, &raw(&format!("purge_path = {bad:?}\n"))));
        assert_eq!(keys(&problems), ["bans.purge_path"], "{bad}");
        assert_eq!(b.purge_path, "", "{bad}");
    }
}

#[test]
fn comments_section() {
    let (m, problems) = checked(|c| comments_config(c, &RawComments::default()));
    assert!(problems.is_empty(), "{problems:?}");
    assert!(!m.enabled);
    assert_eq!(m.memcached, ["127.0.0.1:11211"]);
    assert_eq!((m.hold, m.max_hold), (DEFAULT_HOLD, DEFAULT_MAX_HOLD));
    assert_eq!(m.key_prefix, strata_wire::comment::DEFAULT_PREFIX);

    let bad = "memcached = [\"cache:11211\", \"nohost\"]\nmax_hold = \"11s\"\nkey_prefix = \"a b\"\n\
               trusted_proxies = [\"proxy\"]\nmax_queue = 0\n";
    let (_, problems) = checked(|c| comments_config(c, &raw(bad)));
    assert_eq!(
        keys(&problems),
        [
            "comments.max_queue",
            "comments.trusted_proxies",
            "comments.memcached",
            "comments.max_hold",
            "comments.key_prefix",
        ]
    );
    assert_eq!(problems[2].message, "\"nohost\" is not host:port");
    assert_eq!(problems[3].message, "at most 10s: a visitor is waiting");

    let (_, problems) = checked(|c| comments_config(c, &raw("memcached = []\n")));
    assert_eq!(keys(&problems), ["comments.memcached"]);
    assert_eq!(problems[0].message, "give at least one host:port");
    // Checks of patched pages.
    assert_eq!(
        (m.patch_check_interval, m.patch_check_rate),
        (DEFAULT_PATCH_CHECK_INTERVAL, DEFAULT_PATCH_CHECK_RATE)
    );
    let (m, problems) = checked(|c| comments_config(c, &raw("patch_check_interval = \"1m\"\npatch_check_rate = 0\n")));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        (m.patch_check_interval, m.patch_check_rate),
        (Duration::from_secs(60), 0)
    );
    let bad = "patch_check_interval = \"soon\"\npatch_check_rate = 1001\n";
    let (_, problems) = checked(|c| comments_config(c, &raw(bad)));
    assert_eq!(
        keys(&problems),
        ["comments.patch_check_interval", "comments.patch_check_rate"]
    );
    assert_eq!(problems[1].message, "1001 is out of range: expected 0 to 1000");
}

#[test]
fn durations_and_sizes_parse() {
    assert_eq!(parse_duration("5ms"), Ok(Duration::from_millis(5)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("ms").is_err());
    assert!(parse_duration("").is_err());
    assert_eq!(parse_size("512MiB"), Ok(512 << 20));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
    assert!(parse_size("12 parsecs").is_err());
    assert!(parse_size("99999999999999999999TiB").is_err());
}
