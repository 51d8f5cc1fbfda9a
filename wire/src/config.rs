//! The configuration conventions every Strata program shares: every problem of a file
//! collected with its dotted key (so `--check-config` prints them all), and the duration and
//! size notations of the TOML files.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `cache.capacity`; empty for file-level problems.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// All problems of one file.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ConfigError {
    /// Every problem found, in file order.
    pub problems: Vec<Problem>,
}

/// Collects problems while validating.
#[derive(Default)]
pub struct Checker {
    /// Every problem found so far, in the order found.
    pub problems: Vec<Problem>,
}

impl Checker {
    /// Records a problem under `key`.
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// A duration string (see [`parse_duration`]), or `default` when absent.
    pub fn duration(&mut self, key: &str, v: &Option<toml::Value>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(toml::Value::String(s)) => parse_duration(s).unwrap_or_else(|e| {
                self.problem(key, e);
                default
            }),
            Some(_) => {
                self.problem(
                    key,
                    "expected a duration string such as \"5ms\", \"30s\", \"5m\", \"1h\"",
                );
                default
            }
        }
    }

    /// A byte size (string, see [`parse_size`], or whole number), or `default` when absent.
    pub fn size(&mut self, key: &str, v: &Option<toml::Value>, default: u64) -> u64 {
        match v {
            None => default,
            Some(toml::Value::Integer(n)) if *n >= 0 => *n as u64,
            Some(toml::Value::String(s)) => parse_size(s).unwrap_or_else(|e| {
                self.problem(key, e);
                default
            }),
            Some(_) => {
                self.problem(
                    key,
                    "expected a byte size such as \"512MiB\", \"64KiB\" or a whole number of bytes",
                );
                default
            }
        }
    }

    /// A whole number within `range`, or `default` when absent.
    pub fn count(
        &mut self,
        key: &str,
        v: Option<i64>,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> usize {
        let Some(n) = v else { return default };
        match usize::try_from(n) {
            Ok(n) if range.contains(&n) => n,
            _ => {
                self.problem(key, format!("{n} is out of range {}..={}", range.start(), range.end()));
                default
            }
        }
    }

    /// A required `IP:port`.
    pub fn addr(&mut self, key: &str, v: &Option<String>) -> Option<SocketAddr> {
        let Some(s) = v else {
            self.problem(key, "missing: an address such as \"127.0.0.1:8080\"");
            return None;
        };
        match s.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    key,
                    format!("{s:?} is not an IP:port address such as \"127.0.0.1:8080\""),
                );
                None
            }
        }
    }

    /// The cluster secret in the file named under `key`, with the file's path (resolved
    /// against `base`, see [`resolve`]).
    ///
    /// Errors are recorded under `key`, and give an empty secret: the key is absent, the file
    /// cannot be read, or its secret is too short (see [`auth::load_secret`]).
    pub fn secret_file(&mut self, key: &str, v: &Option<String>, base: Option<&Path>) -> (PathBuf, Vec<u8>) {
        let Some(file) = v else {
            self.problem(
                key,
                format!(
                    "missing: a file holding the cluster secret (at least {} characters)",
                    auth::MIN_SECRET_LEN
                ),
            );
            return (PathBuf::new(), Vec::new());
        };
        let path = resolve(base, file);
        let secret = auth::load_secret(&path).unwrap_or_else(|e| {
            self.problem(key, e.to_string());
            Vec::new()
        });
        (path, secret)
    }

    /// A whole number from `min` to `max`, or `default` when absent.
    pub fn int(&mut self, key: &str, v: Option<i64>, default: i64, min: i64, max: i64) -> i64 {
        match v {
            None => default,
            Some(n) if (min..=max).contains(&n) => n,
            Some(n) => {
                self.problem(key, format!("{n} is out of range: expected {min} to {max}"));
                default
            }
        }
    }
}

/// A path written in a configuration file: relative ones are taken from `base`, the file's
/// directory, when there is one.
pub fn resolve(base: Option<&Path>, path: &str) -> PathBuf {
    match base {
        Some(b) if Path::new(path).is_relative() => b.join(path),
        _ => PathBuf::from(path),
    }
}

/// Parses `"5ms"`, `"30s"`, `"5m"`, `"1h"`, `"2d"` (also `us`, combinations like `"1m30s"`,
/// and a bare `"0"`). Errors: anything else, and durations too large to represent.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration: use a number with a unit (us, ms, s, m, h, d), e.g. \"5ms\"");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let secs = match unit {
            "us" | "µs" => n / 1e6,
            "ms" => n / 1e3,
            "s" | "sec" => n,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => return Err(bad()),
        };
        total = Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| total.checked_add(d))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// Parses `"512MiB"`, `"64KiB"`, `"1GB"`, `"4096"` into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a byte size: use e.g. \"512MiB\", \"64KiB\", \"2GiB\" or \"4096\"");
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if split == 0 {
        return Err(bad());
    }
    let n: u64 = t[..split].parse().map_err(|_| bad())?;
    let mult: u64 = match t[split..].trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5ms"), Ok(Duration::from_millis(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["5", "ms", "", "-1s", "fast", "99999999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn relative_paths_resolve_against_the_files_directory() {
        let base = Path::new("/etc/strata");
        assert_eq!(
            resolve(Some(base), "cluster.secret"),
            Path::new("/etc/strata/cluster.secret")
        );
        assert_eq!(resolve(Some(base), "/var/lib/s"), Path::new("/var/lib/s"));
        assert_eq!(resolve(None, "cluster.secret"), Path::new("cluster.secret"));
    }

    #[test]
    fn secret_files_are_read_or_reported_under_their_key() {
        let dir = std::env::temp_dir();
        let name = format!("strata-wire-checker-secret-{}", std::process::id());
        std::fs::write(dir.join(&name), "0123456789abcdef\n").unwrap();
        let mut c = Checker::default();
        let (path, secret) = c.secret_file("cluster.secret_file", &Some(name.clone()), Some(&dir));
        let _ = std::fs::remove_file(dir.join(&name));
        assert_eq!((path, secret), (dir.join(&name), b"0123456789abcdef".to_vec()));
        assert!(c.problems.is_empty());

        let (path, secret) = c.secret_file("cluster.secret_file", &None, Some(&dir));
        assert_eq!((path, secret), (PathBuf::new(), Vec::new()));
        let (path, secret) = c.secret_file("x.secret", &Some(name.clone()), Some(&dir));
        assert_eq!((path, secret), (dir.join(&name), Vec::new()));
        let problems: Vec<String> = c.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            problems[0],
            "cluster.secret_file: missing: a file holding the cluster secret (at least 16 characters)"
        );
        assert!(
            problems[1].starts_with(&format!("x.secret: cannot read {}: ", dir.join(&name).display())),
            "{problems:?}"
        );
    }

    #[test]
    fn checkers_collect_every_problem_with_its_key() {
        let mut c = Checker::default();
        let d = c.duration("a.b", &Some(toml::Value::Integer(5)), Duration::from_secs(1));
        assert_eq!(d, Duration::from_secs(1));
        assert_eq!(c.count("a.c", Some(-1), 3, 1..=9), 3);
        assert_eq!(c.addr("a.d", &Some("nope".into())), None);
        let keys: Vec<&str> = c.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["a.b", "a.c", "a.d"]);
    }
}
