//! `/metrics` in the format the scraper asks for. The registry writes
//! OpenMetrics, which Prometheus asks for first; tools that read the
//! older text format (`promtool check metrics`, `curl`, other scrapers)
//! get that one, from the same lines: the metadata of a counter names the
//! sample (`…_total`), and OpenMetrics' `# UNIT` and `# EOF` lines go.

/// Whether the `Accept` header asks for OpenMetrics.
pub(crate) fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// OpenMetrics text as the Prometheus text format (0.0.4).
pub(crate) fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{p}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_and_openmetrics_lines_go() {
        let om = "# HELP gemba_x Things done.\n# TYPE gemba_x counter\ngemba_x_total 3\n# HELP gemba_y Now.\n# TYPE gemba_y gauge\n# UNIT gemba_y bytes\ngemba_y 1.0\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP gemba_x_total Things done.\n# TYPE gemba_x_total counter\ngemba_x_total 3\n# HELP gemba_y Now.\n# TYPE gemba_y gauge\ngemba_y 1.0\n"
        );
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
