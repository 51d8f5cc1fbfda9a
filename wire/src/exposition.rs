//! The metric names a Prometheus text exposition offers and the ones a Grafana dashboard
//! reads: what lets each program's tests check that `deploy/grafana/strata.json` asks only
//! for series the program exports.

use std::collections::BTreeSet;

/// The series names `text` (Prometheus text, 0.0.4 or OpenMetrics) offers: every sample's
/// name, and the names every `# TYPE` line implies, so a family without samples yet still
/// counts (a counter `X` gives `X` and `X_total`; a histogram `X` gives `X_bucket`, `X_sum`
/// and `X_count`).
pub fn offered(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut words = decl.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            match kind {
                "counter" => {
                    names.insert(name.to_string());
                    names.insert(format!("{}_total", name.trim_end_matches("_total")));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_string());
                }
            }
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            if end > 0 {
                names.insert(line[..end].to_string());
            }
        }
    }
    names
}

/// The metric names (`strata_…`, `process_…`) the PromQL of a Grafana dashboard reads: in
/// every `expr` of its panels and every `query`/`definition` of its variables.
pub fn dashboard_names(json: &str) -> Result<BTreeSet<String>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    let mut names = BTreeSet::new();
    walk(&value, &mut names);
    Ok(names)
}

fn walk(v: &serde_json::Value, names: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(promql)) => {
                        names.extend(promql_names(promql));
                    }
                    _ => walk(v, names),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, names)),
        _ => {}
    }
}

/// The identifiers of a PromQL expression that name Strata's or the process's metrics.
fn promql_names(promql: &str) -> impl Iterator<Item = String> + '_ {
    promql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("strata_") || w.starts_with("process_"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_names_come_from_samples_and_type_lines() {
        let text = "# HELP a_requests x\n# TYPE a_requests counter\na_requests_total{outcome=\"hit\"} 1\n\
                    # TYPE a_wait_seconds histogram\n# TYPE a_up gauge\n\
                    # TYPE b_packets_total counter\nplain 3\n# EOF\n";
        let names = offered(text);
        for n in [
            "a_requests_total",
            "a_wait_seconds_bucket",
            "a_wait_seconds_sum",
            "a_wait_seconds_count",
            "a_up",
            "b_packets_total",
            "plain",
        ] {
            assert!(names.contains(n), "{n} in {names:?}");
        }
        assert!(!names.contains("EOF") && !names.contains("a_wait_seconds"));
    }

    #[test]
    fn dashboard_names_are_read_from_expressions_and_variables() {
        let json = r#"{"templating":{"list":[{"query":{"query":"label_values(strata_build_info, instance)"}}]},
            "panels":[{"targets":[{"expr":"sum by (le) (rate(strata_proxy_x_seconds_bucket{instance=~\"$p\"}[5m])) / process_open_fds","legendFormat":"strata_not_a_query"}]}]}"#;
        let names = dashboard_names(json).expect("json");
        let want: BTreeSet<String> = ["strata_build_info", "strata_proxy_x_seconds_bucket", "process_open_fds"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(names, want);
        assert!(dashboard_names("{").is_err());
    }
}
