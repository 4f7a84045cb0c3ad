//! An escalation as its page and its API answer show it: the record and
//! journal (converge), the incident that gathers it and the charts of its
//! metric checks around the time it opened (learn).

use gemba_core::ids::is_name;
use gemba_core::{CheckKind, Policy};
use gemba_escalator::{EscalationView, EscalatorError, EscalatorHandle};
use gemba_timeline::chart::{self, Chart};
use gemba_timeline::{series, TimelineHandle};

/// How far before an escalation opened its charts start.
pub const CHART_LEAD_MS: u64 = 10 * 60_000;
/// Series drawn per chart at most.
const SERIES_PER_CHART: usize = 50;

/// One escalation with what the other stages know about it.
pub struct Escalation {
    pub view: EscalationView,
    /// The node its scope names (`node:web-1`), when it names one.
    pub node: Option<String>,
    /// The incident that gathers it, when the learn stage runs and has one.
    pub incident: Option<i64>,
    /// A chart per metric check of the escalation, from [`CHART_LEAD_MS`]
    /// before it opened until now, after [`Escalation::with_charts`]; a
    /// check whose series cannot be read is left out.
    pub charts: Vec<Chart>,
}

/// Escalation `id` joined with the timeline (without its charts, which
/// only the page draws); `None` when there is none.
pub async fn escalation(
    h: &EscalatorHandle,
    t: Option<&TimelineHandle>,
    id: u64,
) -> Result<Option<Escalation>, EscalatorError> {
    let Some(view) = h.escalation(id).await? else {
        return Ok(None);
    };
    let scope = view.escalation.scope.to_string();
    let node = scope
        .strip_prefix("node:")
        .filter(|n| is_name(n))
        .map(str::to_string);
    let incident = match t {
        Some(t) => t.store().incident_of(id).await.ok().flatten(),
        None => None,
    };
    Ok(Some(Escalation {
        view,
        node,
        incident,
        charts: Vec::new(),
    }))
}

impl Escalation {
    /// The same, with the charts of its metric checks on its node.
    pub async fn with_charts(mut self, t: &TimelineHandle, policy: &Policy) -> Escalation {
        if let Some(node) = &self.node {
            let e = &self.view.escalation;
            self.charts = metric_charts(t, policy, node, &e.checks, e.opened_ms).await;
        }
        self
    }
}

/// The charts of the metric checks among `checks` (`name@scope`) on
/// `node`, from [`CHART_LEAD_MS`] before `opened_ms` until now, with the
/// timeline's default markers.
pub async fn metric_charts(
    t: &TimelineHandle,
    policy: &Policy,
    node: &str,
    checks: &[String],
    opened_ms: u64,
) -> Vec<Chart> {
    let since_ms = opened_ms.saturating_sub(CHART_LEAD_MS);
    let until_ms = t.now_ms().max(since_ms + 1000);
    let mut out = Vec::new();
    for id in checks {
        let name = id.split('@').next().unwrap_or("");
        let Some(def) = policy.checks.iter().find(|c| c.name == name) else {
            continue;
        };
        let CheckKind::Metric {
            process, metric, ..
        } = &def.kind
        else {
            continue;
        };
        let nodes = vec![node.to_string()];
        let processes = vec![process.clone()];
        let Ok(found) = series::select(
            t,
            &nodes,
            &processes,
            metric,
            since_ms / 1000,
            until_ms / 1000,
            SERIES_PER_CHART,
        )
        .await
        else {
            continue;
        };
        let request = chart::Request {
            nodes,
            processes,
            metric: metric.clone(),
            since_ms,
            until_ms,
            width: 900,
            height: 320,
            events: None,
            tags: Vec::new(),
            fit: false,
        };
        if let Ok(c) = chart::build(t, request, found).await {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gemba_exec::Clock;
    use gemba_store::{SeriesKey, SeriesStore, SqliteStore};

    use super::*;

    const T0: u64 = 1_795_392_000_000; // 2026-11-22T00:00:00Z

    fn policy() -> Policy {
        let text = r#"
[[level]]
level = 1
name = "restart"
run = ["/bin/true"]

[[check]]
name = "conns"
kind = "metric"
process = "shop"
metric = "tcp_established"
crit = 300
interval = "2s"
level = 1

[[check]]
name = "port"
kind = "tcp"
host = "127.0.0.1"
port = 8080
interval = "2s"
level = 1
"#;
        gemba_testkit::policy("web-1", text)
    }

    #[tokio::test]
    async fn an_escalation_charts_its_metric_checks_from_before_it_opened() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let key = |node: &str| SeriesKey {
            node: node.into(),
            process: "shop".into(),
            metric: "tcp_established".into(),
        };
        let ids = store
            .series_ids(vec![key("web-1"), key("web-2")], 100)
            .await
            .unwrap();
        let (web1, web2) = (ids[0].unwrap(), ids[1].unwrap());
        // A climb on web-1 over the 20 minutes before the escalation
        // opened (at T0 + 20 min), and the same metric on another node.
        let points: Vec<(i64, u64, f64)> = (0..120)
            .flat_map(|i| {
                let t = T0 / 1000 + i * 10;
                [(web1, t, i as f64 * 3.0), (web2, t, 12.0)]
            })
            .collect();
        store.write_points(points).await.unwrap();
        let t = TimelineHandle::new(store, Clock::starting_at(T0 + 25 * 60_000));
        let opened = T0 + 20 * 60_000;
        let checks = vec!["conns@node:web-1".to_string(), "port@node:web-1".into()];

        let charts = metric_charts(&t, &policy(), "web-1", &checks, opened).await;
        // One chart: the tcp check has no metric to draw.
        assert_eq!(charts.len(), 1);
        let c = &charts[0];
        assert_eq!(c.metric, "tcp_established");
        assert_eq!(c.since_ms, opened - CHART_LEAD_MS);
        // Only the escalation's node, and only from ten minutes before.
        assert_eq!(c.lines.len(), 1, "{:?}", c.lines);
        assert_eq!(c.lines[0].label, "web-1 shop");
        let first = c.lines[0].points.first().unwrap().0;
        assert!(first * 1000 >= opened - CHART_LEAD_MS, "{first}");
        assert!(c.svg().contains("tcp_established"));

        // A check that is not in the policy (renamed since) draws nothing.
        let gone = vec!["old-name@node:web-1".to_string()];
        assert!(metric_charts(&t, &policy(), "web-1", &gone, opened)
            .await
            .is_empty());
    }
}
