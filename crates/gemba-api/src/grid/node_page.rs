//! `/nodes/{node}`: one node as the grid sees it: its state, what its
//! processes do now, charts of each over a window with change events as
//! markers, the events about it, and its newest log lines.

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse};
use gemba_timeline::event::format_ms;
use gemba_timeline::logs::LogQuery;
use gemba_timeline::sample::HOST;

use crate::learn::events::{chart_of, series_query_of};
use crate::respond::{Answer, ApiError};
use crate::svg::esc;
use crate::Shared;

/// The metrics charted for each process, and for the host.
const PROCESS_CHARTS: &[&str] = &["tcp_established", "fds", "rss_bytes"];
const HOST_CHARTS: &[&str] = &["load1", "mem_available_bytes", "ephemeral_ports"];
/// Processes charted on the page at most (all are listed).
const CHARTED_PROCESSES: usize = 6;
const WINDOWS: &[&str] = &["1h", "6h", "1d", "2d", "7d", "30d"];

fn value(metric: &str, v: f64) -> String {
    if metric.ends_with("_bytes") {
        format!("{:.1} MiB", v / (1024.0 * 1024.0))
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

pub(crate) async fn node_page(
    State(s): State<Shared>,
    Path(node): Path<String>,
    crate::params::Query(p): crate::params::Query<crate::params::NodeWindow>,
    headers: HeaderMap,
) -> Answer {
    if !gemba_core::ids::is_name(&node) {
        return Err(ApiError::bad(
            "a node id is a name (letters, digits, '-', '_', '.')",
        ));
    }
    let chosen = p.since.is_some();
    let since = p.since.unwrap_or_else(|| "1h".into());
    if !WINDOWS.contains(&since.as_str()) {
        return Err(ApiError::bad(format!(
            "window {:?} is not one of since={}",
            since.chars().take(64).collect::<String>(),
            WINDOWS.join("|")
        )));
    }
    let graph = s.mesh.graph().await;
    let me = graph.nodes.iter().find(|n| n.id == node);
    let mut b = String::new();
    match me {
        Some(n) => {
            let _ = write!(
                b,
                r#"<table><tr><th>state</th><td class="{st}">{st}</td></tr><tr><th>site</th><td>{site}</td></tr><tr><th>mesh</th><td>{addr}</td></tr><tr><th>console</th><td>{http}</td></tr><tr><th>observers</th><td>{obs}, {down} see it down</td></tr></table>"#,
                st = n.state.as_str(),
                site = esc(&n.site),
                addr = esc(&n.addr),
                http = n
                    .http
                    .as_deref()
                    .map(|h| format!(r#"<a href="http://{0}/">{0}</a>"#, esc(h)))
                    .unwrap_or_else(|| "-".into()),
                obs = n.observers,
                down = n.down_votes,
            );
        }
        None => {
            let _ = write!(
                b,
                r#"<p class="muted">{} is not a member of the grid this node sees; what the timeline kept of it is below.</p>"#,
                esc(&node)
            );
        }
    }
    let _ = write!(
        b,
        r#"<p class="muted"><a href="/escalations">escalations</a> · <a href="/market/nodes/{n}">configuration runs</a> · <a href="/charts?node={n}">every metric</a> · <a href="/events?tag=host={n}">events</a></p>"#,
        n = esc(&node)
    );
    let windows: String = WINDOWS
        .iter()
        .map(|w| {
            if *w == since {
                format!("<b>{w}</b> ")
            } else {
                format!(r#"<a href="/nodes/{}?since={w}">{w}</a> "#, esc(&node))
            }
        })
        .collect();
    let Some(t) = s.timeline.as_ref() else {
        b.push_str(r#"<p class="muted">This node keeps no timeline (not a server, or its store could not be opened): no metrics or events here.</p>"#);
        return Ok(Html(crate::console::shell(
            s.mesh.id(),
            &format!("node {node}"),
            &b,
            None,
        ))
        .into_response());
    };
    // What each process does now.
    let mut latest: Vec<(String, gemba_timeline::sample::Sample)> = t
        .latest
        .lock()
        .map(|l| {
            l.iter()
                .filter(|((n, _), _)| *n == node)
                .map(|((_, p), v)| (p.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    latest.sort_by(|a, b| (a.0 != HOST, &a.0).cmp(&(b.0 != HOST, &b.0)));
    b.push_str("<h2>now</h2>");
    if latest.is_empty() {
        b.push_str(r#"<p class="muted">No samples from this node yet: its agent samples the host and every [[process]] every [metrics] interval.</p>"#);
    } else {
        b.push_str("<table><tr><th>process</th><th>sampled</th><th>values</th></tr>");
        for (p, smp) in &latest {
            let shown = if let Some(why) = &smp.unavailable {
                format!("unavailable: {}", esc(why))
            } else {
                let keys: &[&str] = if p == HOST {
                    &[
                        "load1",
                        "mem_available_bytes",
                        "tcp_established",
                        "ephemeral_ports",
                        "file_handles",
                    ]
                } else {
                    &[
                        "processes",
                        "rss_bytes",
                        "fds",
                        "threads",
                        "cpu_percent",
                        "tcp_established",
                        "ephemeral_ports",
                        "restarts",
                    ]
                };
                keys.iter()
                    .filter_map(|k| smp.values.get(k).map(|v| format!("{k} {}", value(k, *v))))
                    .collect::<Vec<_>>()
                    .join(" · ")
            };
            let _ = write!(
                b,
                "<tr><td>{}</td><td class=\"nw\">{}</td><td>{}</td></tr>",
                esc(p),
                format_ms(smp.at_ms),
                shown
            );
        }
        b.push_str("</table>");
    }
    // Charts, with change events as markers.
    let _ = write!(b, "<h2>charts</h2><p>window {windows}</p>");
    for (p, _) in latest.iter().take(CHARTED_PROCESSES + 1) {
        let metrics = if p == HOST {
            HOST_CHARTS
        } else {
            PROCESS_CHARTS
        };
        let _ = write!(b, "<h3>{}</h3><div class=\"charts\">", esc(p));
        for m in metrics {
            // The default window fits what there is: a fresh leak is not
            // a sliver at the right edge.
            let fit = if chosen { "" } else { "&fit=true" };
            let raw = format!(
                "node={node}&process={p}&metric={m}&since={since}&width=640&height=240{fit}"
            );
            let Ok(q) = series_query_of(Some(&raw)) else {
                continue;
            };
            if let Ok(chart) = chart_of(t, &q).await {
                let _ = write!(
                    b,
                    r#"<a class="chart" href="/charts?{}">{}</a>"#,
                    esc(&format!("node={node}&process={p}&metric={m}&since={since}")),
                    chart.svg()
                );
            }
        }
        b.push_str("</div>");
    }
    // The events about it.
    let q = gemba_timeline::Query {
        since: Some("7d".into()),
        tags: vec![format!("host={node}")],
        limit: Some(20),
        ..Default::default()
    };
    let events = t.query(&q).await.unwrap_or_default();
    b.push_str("<h2>events of the last 7 days</h2>");
    if events.is_empty() {
        b.push_str(r#"<p class="muted">None tagged host=this node.</p>"#);
    } else {
        b.push_str("<table><tr><th>when</th><th>kind</th><th>what</th></tr>");
        for e in &events {
            let _ = write!(
                b,
                r#"<tr><td class="nw">{}</td><td>{}</td><td><a href="/events/{}">{}</a></td></tr>"#,
                format_ms(e.at_ms),
                esc(&e.kind),
                e.id,
                esc(&e.what)
            );
        }
        b.push_str("</table>");
    }
    // Its newest log lines.
    let shown = crate::holds_token(&s, &headers);
    let gathered = if shown {
        let now = t.now_ms();
        let q = LogQuery {
            process: None,
            since_ms: now.saturating_sub(3_600_000),
            until_ms: now,
            limit: 20,
        };
        crate::grid::logs::gather(&s, std::slice::from_ref(&node), &q).await
    } else {
        Vec::new()
    };
    b.push_str(&crate::grid::logs::html(
        &gathered,
        shown,
        "of the last hour",
    ));
    Ok(Html(crate::console::shell(
        s.mesh.id(),
        &format!("node {node}"),
        &b,
        None,
    ))
    .into_response())
}
