//! The classic Prometheus text format (0.0.4) for scrapers that do not ask for OpenMetrics
//! (`curl`, `promtool check metrics`, older agents).
//!
//! prometheus-client writes OpenMetrics, where a counter family is named without `_total`
//! and the exposition ends in `# EOF`. The classic format names the family after its
//! samples (`_total`), has no `# UNIT` or `# EOF`, and knows no `info` or `unknown` types.

use std::collections::HashSet;

/// Content type of the classic text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Converts an OpenMetrics exposition from prometheus-client to the classic text format.
pub fn from_openmetrics(text: &str) -> String {
    let counters: HashSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        out.push_str(&rewrite(line, &counters));
        out.push('\n');
    }
    out
}

fn rewrite(line: &str, counters: &HashSet<&str>) -> String {
    for keyword in ["# HELP ", "# TYPE "] {
        if let Some(rest) = line.strip_prefix(keyword) {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = if counters.contains(name) {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            let tail = match (keyword, tail) {
                ("# TYPE ", "info") => "gauge",
                ("# TYPE ", "unknown") => "untyped",
                _ => tail,
            };
            return format!("{keyword}{name} {tail}");
        }
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_sample_name_and_eof_goes() {
        let open = "# HELP a_jobs Jobs.\n# TYPE a_jobs counter\na_jobs_total{pool=\"x\"} 1\n# HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n# EOF\n";
        let classic = from_openmetrics(open);
        assert_eq!(
            classic,
            "# HELP a_jobs_total Jobs.\n# TYPE a_jobs_total counter\na_jobs_total{pool=\"x\"} 1\n# HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n"
        );
    }

    #[test]
    fn openmetrics_only_types_become_classic_ones() {
        let classic = from_openmetrics("# TYPE b info\nb_info 1\n# UNIT c seconds\n");
        assert_eq!(classic, "# TYPE b gauge\nb_info 1\n");
    }
}
