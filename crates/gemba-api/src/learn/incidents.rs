//! Incidents over HTTP and in the console: the list, one incident with its
//! timeline (assembled from what the store holds), charts of its nodes'
//! processes and the log lines around it; opening, editing and closing.

use std::fmt::Write;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::Json;
use gemba_timeline::event::format_ms;
use gemba_timeline::incident::Entry;
use gemba_timeline::incident::{self, Edit, Incident};
use serde_json::json;

use crate::learn::events::{chart_of, series_query_of, timeline};
use crate::respond::{Answer, ApiError};
use crate::svg::esc;
use crate::Shared;

pub(crate) fn id_of(raw: &str) -> Result<i64, ApiError> {
    raw.trim_start_matches(['I', 'i', '-'])
        .parse()
        .map_err(|_| ApiError::bad("an incident id is a number (or I-12)"))
}

fn journal(s: &Shared) -> Result<std::sync::Arc<dyn gemba_store::Store>, ApiError> {
    s.escalator
        .as_ref()
        .map(|h| h.store.clone())
        .ok_or_else(|| ApiError::unavailable("this node is not a server: it keeps no incidents"))
}

fn summary_json(i: &Incident) -> serde_json::Value {
    json!({
        "id": i.id,
        "title": i.body.title,
        "severity": i.body.severity,
        "summary": i.body.summary,
        "status": if i.is_open() { "open" } else { "closed" },
        "opened": format_ms(i.opened_ms),
        "opened_ms": i.opened_ms,
        "closed": i.closed_ms.map(format_ms),
        "closed_ms": i.closed_ms,
        "opened_by": i.body.opened_by,
        "closed_by": i.body.closed_by,
        "scopes": i.body.scopes,
        "escalations": i.escalations,
    })
}

/// `GET /api/v1/incidents?open=true&limit=50`
pub(crate) async fn list(
    State(s): State<Shared>,
    crate::params::Query(p): crate::params::Query<crate::params::Listing>,
) -> Answer {
    let t = timeline(&s)?;
    let open_only = p.open;
    let limit = crate::params::within("limit", p.limit, 1, 1000)?.unwrap_or(100);
    let all = incident::list(t, open_only, limit).await?;
    Ok(
        Json(json!({"incidents": all.iter().map(summary_json).collect::<Vec<_>>()}))
            .into_response(),
    )
}

/// `POST /api/v1/incidents` with `{"title", "severity", "summary", "nodes"}`.
pub(crate) async fn open(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Answer {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Open {
        title: String,
        #[serde(default)]
        severity: Option<String>,
        #[serde(default)]
        summary: String,
        #[serde(default)]
        nodes: Vec<String>,
    }
    let t = timeline(&s)?;
    let o: Open = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(format!("the body is not {{\"title\": ..., \"severity\": ..., \"summary\": ..., \"nodes\": [...]}}: {e}"))
    })?;
    if o.nodes.len() > 64 {
        return Err(ApiError::bad("at most 64 nodes"));
    }
    let id = incident::open(
        t,
        &o.title,
        o.severity.as_deref().unwrap_or("major"),
        &o.summary,
        &s.actor(&headers),
        &o.nodes,
    )
    .await?;
    let i = incident::get(t, id).await?;
    Ok((
        StatusCode::CREATED,
        Json(i.as_ref().map(summary_json).unwrap_or(json!({"id": id}))),
    )
        .into_response())
}

/// `POST /api/v1/incidents/{id}` with any of title, severity, summary,
/// closed.
pub(crate) async fn change(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let t = timeline(&s)?;
    let id = id_of(&id)?;
    let e: Edit = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(format!(
            "the body names title, severity, summary or closed: {e}"
        ))
    })?;
    match incident::edit(t, id, &e, &s.actor(&headers)).await? {
        Some(i) => Ok(Json(summary_json(&i)).into_response()),
        None => Err(ApiError::not_found(format!("no incident {id}"))),
    }
}

pub(crate) async fn load(s: &Shared, id: i64) -> Result<(Incident, Vec<Entry>), ApiError> {
    let t = timeline(s)?;
    let Some(i) = incident::get(t, id).await? else {
        return Err(ApiError::not_found(format!("no incident {id}")));
    };
    let entries = gemba_views::incident::timeline(t, &journal(s)?, s.market.as_ref(), &i).await?;
    Ok((i, entries))
}

/// The log lines of its nodes from before it opened to a while after.
async fn lines(s: &Shared, i: &Incident) -> Vec<crate::grid::logs::NodeExcerpts> {
    let mut q = gemba_timeline::logs::LogQuery::around(
        None,
        i.opened_ms,
        crate::grid::logs::BEFORE_ESCALATION,
        crate::grid::logs::AFTER_ESCALATION,
    );
    q.limit = 40;
    crate::grid::logs::gather(s, &i.nodes(), &q).await
}

/// `GET /api/v1/incidents/{id}`: the incident and its timeline.
pub(crate) async fn one(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let (i, entries) = load(&s, id_of(&id)?).await?;
    let mut v = summary_json(&i);
    v["timeline"] = json!(entries
        .iter()
        .map(|e| json!({"at": format_ms(e.at_ms), "at_ms": e.at_ms, "source": e.source, "text": e.text, "link": e.link}))
        .collect::<Vec<_>>());
    if crate::holds_token(&s, &headers) {
        v["logs"] = crate::grid::logs::json(&lines(&s, &i).await);
    }
    Ok(Json(v).into_response())
}

/// `/incidents`: newest first.
pub(crate) async fn list_page(State(s): State<Shared>) -> Answer {
    let t = timeline(&s)?;
    let all = incident::list(t, false, 200).await?;
    let mut b = String::from(
        r#"<p class="muted">An escalation opens an incident when it starts (<code>[incidents] open_on</code>); escalations starting close together share one. Open one by hand with <code>gemba incident open "title"</code>.</p>"#,
    );
    if all.is_empty() {
        b.push_str("<p>No incidents.</p>");
    } else {
        b.push_str("<table><tr><th>id</th><th>status</th><th>severity</th><th>title</th><th>opened</th><th>closed</th><th>scopes</th></tr>");
        for i in &all {
            let _ = write!(
                b,
                r#"<tr><td><a href="/incidents/{id}">I-{id}</a></td><td class="{st}">{st}</td><td>{sev}</td><td><a href="/incidents/{id}">{title}</a></td><td class="nw">{opened}</td><td class="nw">{closed}</td><td class="muted">{scopes}</td></tr>"#,
                id = i.id,
                st = if i.is_open() { "open" } else { "closed" },
                sev = esc(&i.body.severity),
                title = esc(&i.body.title),
                opened = format_ms(i.opened_ms),
                closed = i.closed_ms.map(format_ms).unwrap_or_default(),
                scopes = esc(&i.body.scopes.join(" ")),
            );
        }
        b.push_str("</table>");
    }
    Ok(Html(crate::console::shell(s.mesh.id(), "incidents", &b, None)).into_response())
}

/// `/incidents/{id}`: the incident, its timeline, charts and log lines.
pub(crate) async fn page(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let (i, entries) = load(&s, id_of(&id)?).await?;
    let mut b = format!(
        r#"<p><b>{title}</b></p><table><tr><th>status</th><td>{st}</td></tr><tr><th>severity</th><td>{sev}</td></tr><tr><th>opened</th><td>{opened} by {by}</td></tr><tr><th>closed</th><td>{closed}</td></tr><tr><th>scopes</th><td>{scopes}</td></tr><tr><th>escalations</th><td>{escs}</td></tr></table>"#,
        title = esc(&i.body.title),
        st = if i.is_open() { "open" } else { "closed" },
        sev = esc(&i.body.severity),
        opened = format_ms(i.opened_ms),
        by = esc(&i.body.opened_by),
        closed = i
            .closed_ms
            .map(|c| format!(
                "{} by {}",
                format_ms(c),
                esc(i.body.closed_by.as_deref().unwrap_or("?"))
            ))
            .unwrap_or_else(|| "-".into()),
        scopes = i
            .body
            .scopes
            .iter()
            .map(|sc| match sc.strip_prefix("node:") {
                Some(n) => format!(r#"<a href="/nodes/{0}">{1}</a>"#, esc(n), esc(sc)),
                None => esc(sc),
            })
            .collect::<Vec<_>>()
            .join(" "),
        escs = i
            .escalations
            .iter()
            .map(|e| format!(r#"<a href="/escalations/{e}">#{e}</a>"#))
            .collect::<Vec<_>>()
            .join(" "),
    );
    if !i.body.summary.is_empty() {
        let _ = write!(b, "<pre>{}</pre>", esc(&i.body.summary));
    }
    b.push_str(r#"<h2>timeline</h2><table id="timeline"><tr><th>time</th><th>source</th><th>what</th></tr>"#);
    for e in &entries {
        let text = match &e.link {
            Some(l) => format!(r#"<a href="{}">{}</a>"#, esc(l), esc(&e.text)),
            None => esc(&e.text),
        };
        let _ = write!(
            b,
            r#"<tr class="entry src-{src}"><td class="nw">{at}</td><td>{src}</td><td>{text}</td></tr>"#,
            at = format_ms(e.at_ms),
            src = esc(&e.source),
        );
    }
    b.push_str("</table>");
    b.push_str(r#"<h2>charts</h2><div class="charts">"#);
    let charts = charts(&s, &i).await;
    for chart in &charts {
        b.push_str(&chart.svg());
    }
    b.push_str("</div>");
    if charts.is_empty() {
        b.push_str(r#"<p class="muted">No sampled process on its nodes.</p>"#);
    }
    let shown = crate::holds_token(&s, &headers);
    let gathered = if shown {
        lines(&s, &i).await
    } else {
        Vec::new()
    };
    b.push_str(&crate::grid::logs::html(
        &gathered,
        shown,
        "from 5 minutes before it opened to 5 minutes after",
    ));
    let controls = crate::may_operate(&s, &headers);
    b.push_str(&crate::learn::postmortem_page::incident_section(&s, &i, controls).await);
    Ok(Html(crate::console::shell(
        s.mesh.id(),
        &format!("incident I-{}", i.id),
        &b,
        None,
    ))
    .into_response())
}

/// Charts of its nodes' processes (connections, restarts) over its window:
/// up to 4 nodes, 3 processes each.
pub(crate) async fn charts(s: &Shared, i: &Incident) -> Vec<gemba_timeline::chart::Chart> {
    let Ok(t) = timeline(s) else {
        return Vec::new();
    };
    let (since, until) = gemba_views::incident::window(i, t.now_ms());
    let latest: Vec<(String, String)> = t
        .latest
        .lock()
        .map(|l| l.keys().cloned().collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for n in i.nodes().iter().take(4) {
        let mut procs: Vec<&String> = latest
            .iter()
            .filter(|(node, p)| node == n && p != gemba_timeline::sample::HOST)
            .map(|(_, p)| p)
            .collect();
        procs.sort();
        for p in procs.into_iter().take(3) {
            for m in ["tcp_established", "restarts"] {
                let raw = format!(
                    "node={n}&process={p}&metric={m}&since={}&until={}&width=640&height=240",
                    since / 1000,
                    until / 1000 + 1
                );
                let Ok(q) = series_query_of(Some(&raw)) else {
                    continue;
                };
                if let Ok(chart) = chart_of(t, &q).await {
                    out.push(chart);
                }
            }
        }
    }
    out
}
