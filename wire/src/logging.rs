//! Log set-up shared by the Strata programs: events at the level `STRATA_LOG` asks for
//! (`info` without it), on stderr, as text or as JSON lines (`STRATA_LOG_FORMAT=json`).

use tracing_subscriber::EnvFilter;

/// Environment variable holding the filter, in `EnvFilter` syntax (`debug`,
/// `info,strata::access=off`, …).
pub const FILTER_VAR: &str = "STRATA_LOG";
/// Environment variable choosing the format: `json` for one JSON object per line, anything
/// else (or nothing) for text.
pub const FORMAT_VAR: &str = "STRATA_LOG_FORMAT";
/// The filter when [`FILTER_VAR`] is unset or cannot be parsed.
pub const DEFAULT_FILTER: &str = "info";

/// Installs the process's log subscriber, configured from [`FILTER_VAR`] and [`FORMAT_VAR`].
///
/// Panics if a global subscriber is installed already: call it once, at the start of `main`.
pub fn init() {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(std::env::var(FILTER_VAR).ok().as_deref()))
        .with_writer(std::io::stderr);
    if json(std::env::var(FORMAT_VAR).ok().as_deref()) {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The filter `value` (the content of [`FILTER_VAR`]) describes; [`DEFAULT_FILTER`] when it
/// is absent or not a filter.
fn filter(value: Option<&str>) -> EnvFilter {
    value
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER))
}

/// Whether `value` (the content of [`FORMAT_VAR`]) asks for JSON lines.
fn json(value: Option<&str>) -> bool {
    value == Some("json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_falls_back_to_info() {
        assert_eq!(filter(None).to_string(), "info");
        assert_eq!(filter(Some("debug,hyper=warn")).to_string(), "hyper=warn,debug");
        assert_eq!(filter(Some("strata=[")).to_string(), "info");
    }

    #[test]
    fn only_json_asks_for_json() {
        assert!(json(Some("json")));
        for other in [None, Some(""), Some("JSON"), Some("text")] {
            assert!(!json(other), "{other:?}");
        }
    }
}
