//! The validation of each section of the proxy's configuration: raw values in, typed values
//! out, every problem recorded under its key (the [`Checker`] goes on past a bad value with a
//! stand-in, so the checks after it still run).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use strata_wire::config::{resolve, Checker};

use super::*;

/// An allow list of addresses and CIDR ranges; each entry that is neither is reported under
/// `key`, naming the entry, and left out.
pub(super) fn ip_nets(c: &mut Checker, key: &str, list: &Option<Vec<String>>) -> Vec<crate::allow::IpNet> {
    list.iter()
        .flatten()
        .filter_map(|s| match s.parse() {
            Ok(net) => Some(net),
            Err(e) => {
                c.problem(key, format!("{e}"));
                None
            }
        })
        .collect()
}

/// The machine's host name, the default node id.
pub(super) fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)))
        .unwrap_or_else(|| "node-1".to_string())
}

/// The HTTPS part of `[server]`: present when `tls_listen` is; every certificate and key
/// file is read and checked here, so `--check-config` reports a bad one.
pub(super) fn tls_config(
    c: &mut Checker,
    s: &RawServer,
    base: Option<&Path>,
    others: [Option<SocketAddr>; 2],
) -> Option<TlsConfig> {
    let Some(listen_text) = &s.tls_listen else {
        let stray = [
            ("server.tls_cert", s.tls_cert.is_some()),
            ("server.tls_key", s.tls_key.is_some()),
            ("server.tls_certificates", s.tls_certificates.is_some()),
            ("server.redirect_https", s.redirect_https == Some(true)),
            ("server.hsts", s.hsts.is_some()),
        ];
        for (key, set) in stray {
            if set {
                c.problem(key, "needs server.tls_listen: HTTPS is off without it");
            }
        }
        return None;
    };
    let listen = c.addr("server.tls_listen", &Some(listen_text.clone()));
    if let Some(l) = listen {
        if others.contains(&Some(l)) {
            c.problem(
                "server.tls_listen",
                "must differ from server.listen and server.admin_listen",
            );
        }
    }
    let certificates = tls_certificates(c, s, base);
    let hsts = hsts(c, &s.hsts);
    Some(TlsConfig {
        listen: listen.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
        certificates,
        redirect_https: s.redirect_https.unwrap_or(false),
        hsts,
    })
}

/// The certificates of `[server]`: `tls_cert` and `tls_key`, then each entry of
/// `tls_certificates` (whose first is the default when `tls_cert` and `tls_key` are absent),
/// each file read and checked; a missing or bad file is reported under its own key.
pub(super) fn tls_certificates(c: &mut Checker, s: &RawServer, base: Option<&Path>) -> Vec<crate::tls::Certificate> {
    let mut pairs: Vec<(String, String, Option<&String>, Option<&String>)> = vec![(
        "server.tls_cert".into(),
        "server.tls_key".into(),
        s.tls_cert.as_ref(),
        s.tls_key.as_ref(),
    )];
    for (i, e) in s.tls_certificates.iter().flatten().enumerate() {
        pairs.push((
            format!("server.tls_certificates[{i}].cert"),
            format!("server.tls_certificates[{i}].key"),
            e.cert.as_ref(),
            e.key.as_ref(),
        ));
    }
    if s.tls_cert.is_none() && s.tls_key.is_none() && s.tls_certificates.as_ref().is_some_and(|l| !l.is_empty()) {
        // The first entry of the list is then the default certificate.
        pairs.remove(0);
    }
    let mut certificates = Vec::new();
    for (cert_key, key_key, cert, key) in pairs {
        let (Some(cert), Some(key)) = (cert, key) else {
            if cert.is_none() {
                c.problem(&cert_key, "missing: a PEM certificate file (with its chain)");
            }
            if key.is_none() {
                c.problem(&key_key, "missing: the PEM private key file of the certificate");
            }
            continue;
        };
        let files = crate::tls::CertFiles {
            cert: resolve(base, cert),
            key: resolve(base, key),
        };
        match crate::tls::load(&files) {
            Ok(cert) => certificates.push(cert),
            Err(crate::tls::TlsError::Key { path, cause }) => c.problem(&key_key, format!("{path}: {cause}")),
            Err(e) => c.problem(&cert_key, e.to_string()),
        }
    }
    certificates
}

/// `server.hsts`: a `Strict-Transport-Security` value, which starts with `max-age=`.
pub(super) fn hsts(c: &mut Checker, hsts: &Option<String>) -> Option<http::HeaderValue> {
    hsts.as_ref().and_then(|v| match http::HeaderValue::from_str(v.trim()) {
        Ok(h) if v.trim().to_ascii_lowercase().starts_with("max-age=") => Some(h),
        _ => {
            c.problem(
                "server.hsts",
                format!("{v:?}: expected a Strict-Transport-Security value such as \"max-age=31536000\""),
            );
            None
        }
    })
}

/// `server.access_log_format`: `text` when absent.
fn access_log_format(c: &mut Checker, f: &Option<String>) -> crate::access::Format {
    let Some(f) = f else {
        return crate::access::Format::default();
    };
    crate::access::Format::parse(f).unwrap_or_else(|| {
        c.problem(
            "server.access_log_format",
            format!("{f:?} is not a format: \"text\" (a log event), \"combined\" or \"json\""),
        );
        crate::access::Format::default()
    })
}

/// `server.access_log_file`: opened here (created if need be, appended to), as the proxy
/// will, so `--check-config` reports a file it cannot write; only with `combined` or `json`.
fn access_log_file(
    c: &mut Checker,
    file: &Option<String>,
    format: crate::access::Format,
    base: Option<&Path>,
) -> Option<std::path::PathBuf> {
    let file = file.as_ref()?;
    if format == crate::access::Format::Text {
        c.problem(
            "server.access_log_file",
            "takes server.access_log_format = \"combined\" or \"json\" (text lines go to the log)",
        );
        return None;
    }
    let path = resolve(base, file);
    match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        Ok(_) => Some(path),
        Err(e) => {
            c.problem("server.access_log_file", format!("{}: {e}", path.display()));
            None
        }
    }
}

/// `[server]`, its HTTPS keys included.
pub(super) fn server_config(c: &mut Checker, s: &RawServer, base: Option<&Path>) -> ServerConfig {
    let listen = c.addr("server.listen", &s.listen);
    let admin_listen = c.addr("server.admin_listen", &s.admin_listen);
    if let (Some(a), Some(b)) = (listen, admin_listen) {
        if a == b {
            c.problem(
                "server.admin_listen",
                "must differ from server.listen: the admin API is never on the public port",
            );
        }
    }
    let mut server = ServerConfig {
        listen: listen.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
        admin_listen: admin_listen.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
        access_log: s.access_log.unwrap_or(false),
        access_log_format: access_log_format(c, &s.access_log_format),
        access_log_file: None,
        header_timeout: c.duration("server.header_timeout", &s.header_timeout, DEFAULT_HEADER_TIMEOUT),
        max_header_bytes: c.size("server.max_header_bytes", &s.max_header_bytes, DEFAULT_MAX_HEADER_BYTES) as usize,
        max_connections: c.count(
            "server.max_connections",
            s.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            1..=10_000_000,
        ),
        admin_max_connections: c.count(
            "server.admin_max_connections",
            s.admin_max_connections,
            DEFAULT_ADMIN_MAX_CONNECTIONS,
            1..=1_000_000,
        ),
        max_connections_per_client: c.count(
            "server.max_connections_per_client",
            s.max_connections_per_client,
            0,
            0..=10_000_000,
        ),
        idle_timeout: c.duration("server.idle_timeout", &s.idle_timeout, DEFAULT_IDLE_TIMEOUT),
        workers: c.count("server.workers", s.workers, default_workers(), 1..=1024),
        shutdown_timeout: c.duration("server.shutdown_timeout", &s.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT),
        hosts: s
            .hosts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        tls: None,
    };
    if server.max_header_bytes < 1024 {
        c.problem("server.max_header_bytes", "must be at least 1KiB");
    }
    if server.idle_timeout < Duration::from_millis(100) {
        c.problem(
            "server.idle_timeout",
            "must be at least 100ms: a client needs time to send its next request",
        );
    }
    server.tls = tls_config(c, s, base, [listen, admin_listen]);
    server.access_log_file = access_log_file(c, &s.access_log_file, server.access_log_format, base);
    server
}

/// `origin.concurrency` when it is not set: the origin's workers
/// ([`DEFAULT_ORIGIN_WORKERS`]) shared by the `nodes` of the cluster, at least 2.
pub fn default_concurrency(nodes: usize) -> usize {
    (DEFAULT_ORIGIN_WORKERS / nodes.max(1)).max(2)
}

/// `origin.background_max` when neither it nor `cache.background_refreshes` is set: a
/// quarter of `concurrency`, at least 1 (2 of 8).
pub fn default_background_max(concurrency: usize) -> usize {
    (concurrency / 4).max(1)
}

/// `[origin]`; `background_refreshes` is `[cache] background_refreshes`, the older name of
/// `background_max`, and `nodes` this node and its siblings (for the default concurrency).
pub(super) fn origin_config(
    c: &mut Checker,
    o: &RawOrigin,
    background_refreshes: Option<i64>,
    nodes: usize,
) -> OriginConfig {
    let url = match &o.url {
        None => {
            c.problem(
                "origin.url",
                "missing: the origin's base URL, e.g. \"http://127.0.0.1:8081\"",
            );
            None
        }
        Some(u) => match u.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => {
                if uri.path() != "/" && !uri.path().is_empty() {
                    c.problem(
                        "origin.url",
                        format!("{u:?}: a path prefix is not supported; give scheme://host:port"),
                    );
                }
                Some(uri)
            }
            Ok(_) => {
                c.problem(
                    "origin.url",
                    format!("{u:?}: expected an http:// URL with a host, e.g. \"http://127.0.0.1:8081\""),
                );
                None
            }
            Err(e) => {
                c.problem("origin.url", format!("{u:?} is not a URL: {e}"));
                None
            }
        },
    };
    let mut origin = OriginConfig {
        url: url.unwrap_or_else(|| http::Uri::from_static("http://127.0.0.1:1")),
        connect_timeout: c.duration("origin.connect_timeout", &o.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
        first_byte_timeout: c.duration(
            "origin.first_byte_timeout",
            &o.first_byte_timeout,
            DEFAULT_FIRST_BYTE_TIMEOUT,
        ),
        body_timeout: c.duration("origin.body_timeout", &o.body_timeout, DEFAULT_BODY_TIMEOUT),
        max_idle_connections: c.count(
            "origin.max_idle_connections",
            o.max_idle_connections,
            DEFAULT_MAX_IDLE_PER_HOST,
            0..=100_000,
        ),
        concurrency: 0,
        background_max: 0,
        queue_timeout: c.duration("origin.queue_timeout", &o.queue_timeout, DEFAULT_QUEUE_TIMEOUT),
    };
    origin.concurrency = c.count(
        "origin.concurrency",
        o.concurrency,
        default_concurrency(nodes),
        1..=100_000,
    );
    let (key, set) = match (o.background_max, background_refreshes) {
        (Some(_), Some(_)) => {
            c.problem(
                "cache.background_refreshes",
                "is the older name of origin.background_max: set only origin.background_max",
            );
            ("origin.background_max", o.background_max)
        }
        (None, Some(n)) => ("cache.background_refreshes", Some(n)),
        (n, None) => ("origin.background_max", n),
    };
    let fallback = default_background_max(origin.concurrency);
    origin.background_max = c.count(key, set, fallback, 1..=100_000);
    if origin.background_max > origin.concurrency {
        c.problem(
            key,
            format!(
                "{} is more than origin.concurrency ({}): background refreshes share its places",
                origin.background_max, origin.concurrency
            ),
        );
        origin.background_max = fallback;
    }
    if origin.queue_timeout.is_zero() {
        c.problem("origin.queue_timeout", "must be greater than zero");
    }
    origin
}

/// A list of header names (lower-cased), or `default` when absent; a name that is not one is
/// reported and left out.
pub(super) fn header_names(
    c: &mut Checker,
    key: &str,
    list: &Option<Vec<String>>,
    default: &[&'static str],
) -> Vec<http::HeaderName> {
    let Some(list) = list else {
        return default.iter().map(|n| http::HeaderName::from_static(n)).collect();
    };
    list.iter()
        .filter_map(
            |h| match http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                Ok(n) => Some(n),
                Err(_) => {
                    c.problem(key, format!("{h:?} is not a header name"));
                    None
                }
            },
        )
        .collect()
}

/// A number from 0 to 1 (`0.1`, or `0` or `1`), or `default` when absent.
pub(super) fn fraction(c: &mut Checker, key: &str, v: &Option<toml::Value>, default: f64) -> f64 {
    let n = match v {
        None => return default,
        Some(toml::Value::Float(f)) => *f,
        Some(toml::Value::Integer(i)) => *i as f64,
        Some(_) => f64::NAN,
    };
    if (0.0..=1.0).contains(&n) {
        n
    } else {
        c.problem(key, "expected a number from 0 to 1, such as 0.1");
        default
    }
}

/// `[cache]`.
pub(super) fn cache_config(c: &mut Checker, k: &RawCache) -> CacheConfig {
    let preset = match k.preset.as_deref() {
        None => Preset::default(),
        Some(name) => Preset::parse(name).unwrap_or_else(|| {
            c.problem("cache.preset", format!("{name:?}: expected \"wordpress\" or \"http\""));
            Preset::default()
        }),
    };
    let d = preset.defaults();
    let fill_headers = header_names(c, "cache.fill_headers", &k.fill_headers, &[]);
    for name in &fill_headers {
        if crate::origin::never_filled(name) {
            c.problem(
                "cache.fill_headers",
                format!(
                    "{name:?} is never sent on a fill: it would change how the answer is framed, encoded or validated"
                ),
            );
        }
    }
    let cache = CacheConfig {
        preset,
        capacity: c.size("cache.capacity", &k.capacity, DEFAULT_CAPACITY),
        default_ttl: c.duration("cache.default_ttl", &k.default_ttl, d.default_ttl),
        grace: c.duration("cache.grace", &k.grace, d.grace),
        keep: c.duration("cache.keep", &k.keep, d.keep),
        heuristic_fraction: fraction(
            c,
            "cache.heuristic_fraction",
            &k.heuristic_fraction,
            d.heuristic_fraction,
        ),
        store_any_status: k.store_any_status.unwrap_or(d.store_any_status),
        store_set_cookie: k.store_set_cookie.unwrap_or(d.store_set_cookie),
        targeted_fields: header_names(c, "cache.targeted_fields", &k.targeted_fields, d.targeted_fields),
        request_directives: k.request_directives.unwrap_or(d.request_directives),
        fill_headers: fill_headers
            .into_iter()
            .filter(|n| !crate::origin::never_filled(n))
            .collect(),
        max_object_size: c.size("cache.max_object_size", &k.max_object_size, DEFAULT_MAX_OBJECT_SIZE),
        lock_timeout: c.duration("cache.lock_timeout", &k.lock_timeout, DEFAULT_LOCK_TIMEOUT),
        list_refresh: c.duration("cache.list_refresh", &k.list_refresh, DEFAULT_LIST_REFRESH),
        list_tags: match &k.list_tags {
            None => DEFAULT_LIST_TAGS.iter().map(|t| t.to_string()).collect(),
            Some(list) => list
                .iter()
                .filter(|t| {
                    let ok = !t.trim().is_empty() && *t != "*" && !t.contains(char::is_whitespace);
                    if !ok {
                        c.problem(
                            "cache.list_tags",
                            format!("{t:?} is not a tag (or a prefix ending in *) without spaces"),
                        );
                    }
                    ok
                })
                .cloned()
                .collect(),
        },
        hit_for_pass_ttl: c.duration("cache.hit_for_pass_ttl", &k.hit_for_pass_ttl, DEFAULT_HIT_FOR_PASS_TTL),
        max_variants: c.count("cache.max_variants", k.max_variants, DEFAULT_MAX_VARIANTS, 1..=1024),
        compress_min_size: c.size(
            "cache.compress_min_size",
            &k.compress_min_size,
            DEFAULT_COMPRESS_MIN_SIZE,
        ),
        brotli: k.brotli.unwrap_or(true),
        cacheable_statuses: match &k.cacheable_statuses {
            None => DEFAULT_CACHEABLE_STATUSES.to_vec(),
            Some(list) => list
                .iter()
                .filter_map(|&n| match u16::try_from(n) {
                    Ok(s) if (200..600).contains(&s) => Some(s),
                    _ => {
                        c.problem(
                            "cache.cacheable_statuses",
                            format!("{n} is not an HTTP status from 200 to 599"),
                        );
                        None
                    }
                })
                .collect(),
        },
    };
    if cache.capacity < 1 << 20 {
        c.problem(
            "cache.capacity",
            format!("{} bytes is too small: at least 1MiB", cache.capacity),
        );
    }
    if cache.max_object_size > cache.capacity / 4 {
        c.problem("cache.max_object_size", "must be at most a quarter of cache.capacity");
    }
    if cache.lock_timeout.is_zero() {
        c.problem("cache.lock_timeout", "must be greater than zero");
    }
    cache
}

/// `[policy]`.
pub(super) fn policy_config(c: &mut Checker, p: &RawPolicy, preset: Preset) -> PolicyConfig {
    let mut policy = PolicyConfig::default();
    if let Some(v) = &p.pass_cookies {
        policy.pass_cookies = v.clone();
    }
    policy
        .pass_cookies
        .extend(p.extra_pass_cookies.iter().flatten().cloned());
    if let Some(v) = &p.pass_paths {
        policy.pass_paths = v.clone();
    }
    policy.pass_paths.extend(p.extra_pass_paths.iter().flatten().cloned());
    for path in &policy.pass_paths {
        if !path.starts_with('/') {
            c.problem("policy.pass_paths", format!("{path:?} must start with '/'"));
        }
    }
    if let Some(v) = &p.pass_query {
        policy.pass_query = v.clone();
    }
    if let Some(v) = &p.strip_query {
        policy.strip_query = v.clone();
    }
    for name in policy
        .pass_cookies
        .iter()
        .chain(&policy.pass_query)
        .chain(&policy.strip_query)
    {
        if name.is_empty() {
            c.problem("policy", "empty names are not allowed in cookie or query lists");
        }
    }
    policy.pass_authorization = p.pass_authorization.unwrap_or(preset.defaults().pass_authorization);
    policy.pass_ajax = p.pass_ajax.unwrap_or(true);
    policy
}

/// `[cluster]`; the secret file is read here, relative to `base`.
pub(super) fn cluster_config(c: &mut Checker, cl: &RawCluster, base: Option<&Path>) -> ClusterConfig {
    let node_id = cl.node_id.clone().unwrap_or_else(default_node_id);
    if node_id.is_empty()
        || !node_id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    {
        c.problem(
            "cluster.node_id",
            format!("{node_id:?}: use letters, digits, '-', '_' or '.'"),
        );
    }
    let siblings: Vec<http::Uri> = cl
        .siblings
        .iter()
        .flatten()
        .filter_map(|s| match s.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => Some(u),
            _ => {
                c.problem("cluster.siblings", format!("{s:?} is not an http:// admin URL"));
                None
            }
        })
        .collect();
    let admin_allow = ip_nets(c, "cluster.admin_allow", &cl.admin_allow);
    let admin_hosts = cl
        .admin_hosts
        .iter()
        .flatten()
        .filter_map(|h| {
            let name = strata_wire::auth::Audience::parse(h);
            if name.is_none() {
                c.problem(
                    "cluster.admin_hosts",
                    format!("{h:?} is not host:port, e.g. \"node2.example.internal:9080\""),
                );
            }
            name
        })
        .collect();
    let (secret_file, secret) = c.secret_file("cluster.secret_file", &cl.secret_file, base);
    let heartbeat_interval = c.duration(
        "cluster.heartbeat_interval",
        &cl.heartbeat_interval,
        DEFAULT_HEARTBEAT_INTERVAL,
    );
    let confirm_within = c.duration("cluster.confirm_within", &cl.confirm_within, DEFAULT_CONFIRM_WITHIN);
    if heartbeat_interval.is_zero() {
        c.problem("cluster.heartbeat_interval", "must be greater than zero");
    }
    if confirm_within < heartbeat_interval * 2 {
        c.problem(
            "cluster.confirm_within",
            "must be at least twice cluster.heartbeat_interval, or every missed heartbeat flushes",
        );
    }
    let when_unconfirmed = match cl.when_unconfirmed.as_deref() {
        None | Some("flush") => Unconfirmed::Flush,
        Some("pass") => Unconfirmed::Pass,
        Some(other) => {
            c.problem(
                "cluster.when_unconfirmed",
                format!("{other:?}: expected \"flush\" or \"pass\""),
            );
            Unconfirmed::Flush
        }
    };
    let queue_limit = c.count(
        "cluster.queue_limit",
        cl.queue_limit,
        DEFAULT_QUEUE_LIMIT,
        1..=10_000_000,
    );
    let shield_timeout = c.duration("cluster.shield_timeout", &cl.shield_timeout, DEFAULT_SHIELD_TIMEOUT);
    if shield_timeout < Duration::from_millis(10) {
        c.problem(
            "cluster.shield_timeout",
            "must be at least 10ms: shorter, every peer fill would fall back to the origin",
        );
    }
    let shield_window = c.duration("cluster.shield_window", &cl.shield_window, confirm_within);
    if shield_window < confirm_within {
        c.problem(
            "cluster.shield_window",
            "must be at least cluster.confirm_within: a ban older than the window may not have \
             reached a home that is still confirmed current",
        );
    }
    let shield = cl.shield.unwrap_or(!siblings.is_empty());
    ClusterConfig {
        shield,
        shield_timeout,
        shield_window,
        node_id,
        siblings,
        secret_file,
        secret,
        admin_allow,
        admin_hosts,
        heartbeat_interval,
        confirm_within,
        when_unconfirmed,
        queue_limit,
        write_wait: c.duration("cluster.write_wait", &cl.write_wait, DEFAULT_WRITE_WAIT),
    }
}

/// `[bans]`.
pub(super) fn bans_config(c: &mut Checker, b: &RawBans) -> BansConfig {
    let mut bans = BansConfig::default();
    if let Some(list) = &b.tag_headers {
        bans.tag_headers = list
            .iter()
            .filter_map(
                |h| match http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        c.problem("bans.tag_headers", format!("{h:?} is not a header name"));
                        None
                    }
                },
            )
            .collect();
    }
    bans.strip_tag_headers = b.strip_tag_headers.unwrap_or(true);
    bans.max_tags = c.count("bans.max_tags", b.max_tags, DEFAULT_MAX_TAGS, 1..=1024);
    bans.wordpress = b.wordpress.unwrap_or(true);
    bans.trust_anonymous_writes = b.trust_anonymous_writes.unwrap_or(false);
    bans.purge_allow = ip_nets(c, "bans.purge_allow", &b.purge_allow);
    if let Some(p) = &b.purge_path {
        let fine = p.is_empty()
            || (p.len() <= 100
                && p.starts_with('/')
                && !p.ends_with('/')
                && p.bytes().all(|b| b.is_ascii_graphic() && !b"?#*%".contains(&b)));
        if fine {
            bans.purge_path = p.clone();
        } else {
            c.problem(
                "bans.purge_path",
                format!("{p:?} is not a path prefix such as \"/purge\" (a leading /, no trailing /, no ? # * %; \"\" = off)"),
            );
        }
    }
    bans
}

/// `[comments]`.
pub(super) fn comments_config(c: &mut Checker, m: &RawComments) -> CommentsConfig {
    let comments = CommentsConfig {
        enabled: m.enabled.unwrap_or(false),
        memcached: m
            .memcached
            .clone()
            .unwrap_or_else(|| vec!["127.0.0.1:11211".to_string()]),
        hold: c.duration("comments.hold", &m.hold, DEFAULT_HOLD),
        max_hold: c.duration("comments.max_hold", &m.max_hold, DEFAULT_MAX_HOLD),
        key_prefix: m
            .key_prefix
            .clone()
            .unwrap_or_else(|| strata_wire::comment::DEFAULT_PREFIX.to_string()),
        max_queue: c.count(
            "comments.max_queue",
            m.max_queue,
            DEFAULT_MAX_QUEUE as usize,
            1..=100_000_000,
        ) as u64,
        trusted_proxies: ip_nets(c, "comments.trusted_proxies", &m.trusted_proxies),
        settings_max_age: c.duration(
            "comments.settings_max_age",
            &m.settings_max_age,
            DEFAULT_SETTINGS_MAX_AGE,
        ),
        memcached_timeout: c.duration(
            "comments.memcached_timeout",
            &m.memcached_timeout,
            DEFAULT_MEMCACHED_TIMEOUT,
        ),
        patch_pages: m.patch_pages.unwrap_or(true),
        patch_check_interval: c.duration(
            "comments.patch_check_interval",
            &m.patch_check_interval,
            DEFAULT_PATCH_CHECK_INTERVAL,
        ),
        patch_check_rate: c.int(
            "comments.patch_check_rate",
            m.patch_check_rate,
            i64::from(DEFAULT_PATCH_CHECK_RATE),
            0,
            1000,
        ) as u32,
    };
    if comments.memcached.is_empty() {
        c.problem("comments.memcached", "give at least one host:port");
    }
    for a in &comments.memcached {
        if a.rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            c.problem("comments.memcached", format!("{a:?} is not host:port"));
        }
    }
    if comments.max_hold > Duration::from_secs(10) {
        c.problem("comments.max_hold", "at most 10s: a visitor is waiting");
    }
    if comments.key_prefix.is_empty()
        || comments.key_prefix.len() > 100
        || comments.key_prefix.bytes().any(|b| b <= b' ')
    {
        c.problem(
            "comments.key_prefix",
            "1 to 100 characters, no spaces or control characters",
        );
    }
    comments
}
