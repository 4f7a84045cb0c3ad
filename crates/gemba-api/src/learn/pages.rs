//! Console pages of the learn stage: charts of any sampled metric with
//! change events as markers (pick node, process, metric and window; no
//! script, the chart is inline SVG), the events of the last days, and
//! one event with what changed after it.

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse};
use gemba_timeline::event::format_ms;
use gemba_timeline::sample::{HOST, HOST_METRICS, PROCESS_METRICS};

use crate::learn::events::{chart_of, series_query_of, timeline};
use crate::respond::Answer;
use crate::svg::esc;
use crate::Shared;

const WINDOWS: &[&str] = &["15m", "1h", "6h", "1d", "2d", "7d", "30d"];

fn page(node: &str, title: &str, body: &str) -> String {
    crate::console::shell(node, title, body, None)
}

fn select(name: &str, options: &[String], chosen: &str) -> String {
    let mut s = format!(r#"<select name="{name}">"#);
    for o in options {
        let _ = write!(
            s,
            r#"<option{}>{}</option>"#,
            if o == chosen { " selected" } else { "" },
            esc(o)
        );
    }
    s.push_str("</select>");
    s
}

/// `/charts?node=&process=&metric=&since=`: a form and the chart.
pub(crate) async fn charts_page(
    State(s): State<Shared>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
    crate::params::Query(p): crate::params::Query<crate::params::Series>,
) -> Answer {
    let t = timeline(&s)?;
    let mut q = crate::learn::events::series_query(p)?;
    let all = t
        .store()
        .series()
        .await
        .map_err(gemba_timeline::TimelineError::from)?;
    let mut nodes: Vec<String> = all.iter().map(|(_, k)| k.node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    let node = q
        .nodes
        .first()
        .cloned()
        .or_else(|| nodes.first().cloned())
        .unwrap_or_default();
    let mut processes: Vec<String> = all
        .iter()
        .filter(|(_, k)| k.node == node)
        .map(|(_, k)| k.process.clone())
        .collect();
    processes.sort();
    processes.dedup();
    let process = q
        .processes
        .first()
        .cloned()
        .unwrap_or_else(|| HOST.to_string());
    let metrics: Vec<String> = if process == HOST {
        HOST_METRICS.iter().map(|m| m.to_string()).collect()
    } else {
        PROCESS_METRICS.iter().map(|m| m.to_string()).collect()
    };
    if q.metric.is_empty() || !metrics.contains(&q.metric) {
        q.metric = if process == HOST {
            "load1".into()
        } else {
            "tcp_established".into()
        };
    }
    let since = q.since.clone().unwrap_or_else(|| "1h".into());
    q.since = Some(since.clone());
    if q.nodes.is_empty() && !node.is_empty() {
        q.nodes = vec![node.clone()];
    }
    if q.processes.is_empty() {
        q.processes = vec![process.clone()];
    }
    let windows: Vec<String> = WINDOWS.iter().map(|w| w.to_string()).collect();
    // Each node's processes, so that the form offers the right ones as
    // soon as another node is chosen (forms.js).
    let mut by_node: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (_, k) in &all {
        let list = by_node.entry(k.node.as_str()).or_default();
        if !list.contains(&k.process.as_str()) {
            list.push(k.process.as_str());
        }
    }
    for list in by_node.values_mut() {
        list.sort();
    }
    let options = serde_json::to_string(&by_node).unwrap_or_else(|_| "{}".into());
    let mut body = format!(
        r#"<form id="chart-form" method="get" action="/charts" data-processes="{}">node {} process {} metric {} window {} <button>show</button></form><script src="/assets/forms.js"></script>"#,
        esc(&options),
        select("node", &nodes, &node),
        select("process", &processes, &process),
        select("metric", &metrics, &q.metric),
        select("since", &windows, &since),
    );
    if nodes.is_empty() {
        body.push_str(r#"<p class="muted">No samples yet: agents sample the host and every [[process]] every [metrics] interval.</p>"#);
    } else {
        let chart = chart_of(t, &q).await?;
        body.push_str(r#"<div class="chart">"#);
        body.push_str(&chart.svg());
        body.push_str("</div>");
        let query = raw.unwrap_or_default();
        let _ = write!(
            body,
            r#"<p class="muted">Markers: deploys, git pushes, notes and escalation steps (<a href="/events">events</a>). Download: <a href="/api/v1/chart.png?{q}">PNG</a> · <a href="/api/v1/chart.svg?{q}">SVG</a> · or <code>gemba chart --node {n} --process {p} --metric {m} --since {since} --png chart.png</code></p>"#,
            q = esc(&query),
            n = esc(&node),
            p = esc(&process),
            m = esc(&q.metric),
            since = esc(&since),
        );
    }
    Ok(Html(page(s.mesh.id(), "charts", &body)).into_response())
}

/// `/events?since=&tag=&kind=`: newest first.
pub(crate) async fn events_page(
    State(s): State<Shared>,
    crate::params::Query(p): crate::params::Query<crate::params::Events>,
) -> Answer {
    let t = timeline(&s)?;
    let q = p.into();
    let events = t.query(&q).await?;
    let mut body = String::from(
        r#"<p class="muted">Deploys, configuration runs, escalation steps and notes. Add one with <code>gemba event add --kind deploy --tag service=shop "v2.3.1 released"</code>, or point a Graphite (<code>/events/</code>) or Grafana (<code>/api/annotations</code>) hook here.</p>"#,
    );
    if events.is_empty() {
        body.push_str("<p>No events in this window.</p>");
    } else {
        body.push_str(
            "<table><tr><th>when</th><th>kind</th><th>what</th><th>tags</th><th>by</th></tr>",
        );
        for e in &events {
            let _ = write!(
                body,
                r#"<tr><td class="nw">{}</td><td>{}</td><td><a href="/events/{}">{}</a></td><td class="muted">{}</td><td>{}</td></tr>"#,
                format_ms(e.at_ms),
                esc(&e.kind),
                e.id,
                esc(&e.what),
                esc(&e.tags.join(" ")),
                esc(&e.author),
            );
        }
        body.push_str("</table>");
    }
    Ok(Html(page(s.mesh.id(), "events", &body)).into_response())
}

/// `/events/{id}`: the event, what changed after it, and a chart for each.
pub(crate) async fn event_page(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Answer {
    let t = timeline(&s)?;
    let e = crate::learn::events::event_of(t, &id).await?;
    let n = e.id;
    let mut body = format!(
        r#"<p><b>{}</b></p><table><tr><th>when</th><td>{}{}</td></tr><tr><th>kind</th><td>{}</td></tr><tr><th>tags</th><td>{}</td></tr><tr><th>by</th><td>{}</td></tr><tr><th>source</th><td>{}</td></tr>"#,
        esc(&e.what),
        format_ms(e.at_ms),
        e.end_ms
            .map(|x| format!(" → {}", format_ms(x)))
            .unwrap_or_default(),
        esc(&e.kind),
        e.tags
            .iter()
            .map(|t| match t.strip_prefix("host=") {
                // A node's page: its charts, events and lines.
                Some(n) if gemba_core::ids::is_name(n) => {
                    format!(r#"<a href="/nodes/{0}">host={0}</a>"#, esc(n))
                }
                _ => esc(t),
            })
            .collect::<Vec<_>>()
            .join(" "),
        esc(&e.author),
        esc(&e.source),
    );
    if e.link.starts_with("http://") || e.link.starts_with("https://") || e.link.starts_with('/') {
        let _ = write!(
            body,
            r#"<tr><th>link</th><td><a href="{0}">{0}</a></td></tr>"#,
            esc(&e.link)
        );
    }
    body.push_str("</table>");
    if !e.text.is_empty() {
        let _ = write!(body, "<pre>{}</pre>", esc(&e.text));
    }
    let callouts = gemba_timeline::trend::callouts(t, &e)
        .await
        .map_err(gemba_timeline::TimelineError::from)?;
    body.push_str("<h3>What changed after it</h3>");
    if callouts.is_empty() {
        body.push_str(r#"<p class="muted">No watched metric (connections, fds, threads, ephemeral ports, memory) started or stopped growing around this event.</p>"#);
    }
    let now = t.now_ms();
    for c in callouts.iter().take(12) {
        let _ = write!(body, "<p>{}</p>", esc(&c.text));
        let span = now
            .saturating_sub(e.at_ms)
            .clamp(10 * 60_000, 7 * 86_400_000);
        let since = e.at_ms.saturating_sub(span);
        let raw = format!(
            "metric={}&process={}&since={}&until={}{}",
            c.metric,
            c.process,
            since / 1000,
            (e.at_ms + span).min(now) / 1000,
            c.nodes
                .iter()
                .take(10)
                .map(|n| format!("&node={n}"))
                .collect::<String>()
        );
        let q = series_query_of(Some(&raw))?;
        let chart = chart_of(t, &q).await?;
        body.push_str(r#"<div class="chart">"#);
        body.push_str(&chart.svg());
        body.push_str("</div>");
    }
    let shown = crate::holds_token(&s, &headers);
    let gathered = if shown {
        crate::grid::logs::around_event(&s, &e).await
    } else {
        Vec::new()
    };
    body.push_str(&crate::grid::logs::html(
        &gathered,
        shown,
        "within 2 minutes of the event",
    ));
    Ok(Html(page(s.mesh.id(), &format!("event {n}"), &body)).into_response())
}

/// Charts for an escalation's page: for a node scope, the metric each
/// of its metric checks watches, from ten minutes before it opened, with
/// the escalation's own steps as markers (drawn by gemba-views); a link to
/// all of the node's charts, and the node's logs around the opening when
/// the reader may see them. Empty for a scope that names no node.
pub(crate) async fn escalation_charts(
    s: &Shared,
    x: &gemba_views::escalation::Escalation,
    shows_logs: bool,
) -> String {
    let Some(node) = x.node.as_deref() else {
        return String::new();
    };
    if s.timeline.is_none() {
        return String::new();
    }
    let opened_ms = x.view.escalation.opened_ms;
    let mut out = format!(
        r#"<h2>charts</h2><p class="muted"><a href="/charts?node={n}">every sampled metric of {n}</a></p>"#,
        n = esc(node)
    );
    for chart in &x.charts {
        out.push_str(r#"<div class="chart">"#);
        out.push_str(&chart.svg());
        out.push_str("</div>");
    }
    let gathered = if shows_logs {
        crate::grid::logs::around_escalation(s, node, opened_ms).await
    } else {
        Vec::new()
    };
    out.push_str(&crate::grid::logs::html(
        &gathered,
        shows_logs,
        "from 5 minutes before it opened to 5 minutes after",
    ));
    out
}
