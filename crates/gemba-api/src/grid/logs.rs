//! Log excerpts over HTTP. Every node answers `GET /api/v1/logs` with the
//! lines its agent keeps of its `[[process]]` log files; with `node=` a
//! server asks that node's agent (the CLI's `gemba logs`). Event and
//! escalation pages, notices and sent charts show the lines around them.
//!
//! Log lines may hold anything a program wrote, so, like program output,
//! they are given only to requests that carry the API token (or to any
//! request when none is configured, which only loopback allows).

use std::fmt::Write;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use gemba_timeline::event::format_ms;
use gemba_timeline::logs::{Excerpt, LogQuery, MAX_LIMIT};
use serde_json::json;

use crate::params;
use crate::respond::{Answer, ApiError};
use crate::svg::esc;
use crate::{holds_token, Shared};

/// Lines shown around an event: this long before and after it.
pub(crate) const AROUND_EVENT: Duration = Duration::from_secs(120);
/// Lines shown around an escalation: before it opened, and after.
pub(crate) const BEFORE_ESCALATION: Duration = Duration::from_secs(300);
pub(crate) const AFTER_ESCALATION: Duration = Duration::from_secs(300);
/// Lines per file on a page.
const PAGE_LINES: usize = 40;

pub(crate) const NOT_SHOWN: &str =
    "log lines are shown only to requests with the API token (`Authorization: Bearer <token>`)";

/// What one node gave, or why it gave nothing.
pub(crate) type NodeExcerpts = (String, Result<Vec<Excerpt>, String>);

/// `GET /api/v1/logs?process=&since=&until=&limit=[&node=]`.
pub(crate) async fn logs(
    State(s): State<Shared>,
    headers: HeaderMap,
    params::Query(p): params::Query<params::Logs>,
) -> Answer {
    if !holds_token(&s, &headers) {
        return Err(ApiError(StatusCode::FORBIDDEN, NOT_SHOWN.into()));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let time = |what: &str, v: &Option<String>| {
        v.as_deref()
            .map(|v| {
                gemba_timeline::service::point(v, now)
                    .map_err(|e| ApiError::bad(format!("{what}: {}", e.0)))
            })
            .transpose()
    };
    let since = time("since", &p.since)?;
    let until = time("until", &p.until)?;
    let node = p
        .node
        .as_deref()
        .map(|n| params::name("node", n))
        .transpose()?;
    let mut q = LogQuery {
        process: p
            .process
            .as_deref()
            .map(|n| params::name("process", n))
            .transpose()?,
        since_ms: 0,
        until_ms: 0,
        limit: params::within("limit", p.limit, 1, MAX_LIMIT)?.unwrap_or(100),
    };
    q.until_ms = until.unwrap_or(now);
    // Whole seconds are asked for: the last one counts whole.
    if until.is_some() {
        q.until_ms += 999;
    }
    q.since_ms = since.unwrap_or(q.until_ms.saturating_sub(600_000));
    if q.since_ms > q.until_ms {
        return Err(ApiError::bad("since is after until"));
    }
    let excerpts = match node {
        Some(n) if n != s.mesh.id() => {
            let Some(src) = &s.log_source else {
                return Err(ApiError::unavailable(
                    "this node does not fetch other nodes' log lines",
                ));
            };
            src.excerpts(&n, &q)
                .await
                .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e))?
        }
        _ => s.logs.as_ref().map(|b| b.excerpts(&q)).unwrap_or_default(),
    };
    Ok(Json(json!({ "excerpts": excerpts })).into_response())
}

/// The lines of `process` (or every process) on each of `nodes` in the
/// window of `q`, fetched at once.
pub(crate) async fn gather(s: &Shared, nodes: &[String], q: &LogQuery) -> Vec<NodeExcerpts> {
    match &s.log_source {
        Some(src) => src.of_nodes(nodes, q).await,
        None => Vec::new(),
    }
}

/// The nodes and process an event is about: its `host` tags (or the
/// nodes that sample its `service`) and its `service` tag.
pub(crate) fn event_scope(s: &Shared, tags: &[String]) -> (Vec<String>, Option<String>) {
    let tag = |k: &str| -> Vec<String> {
        tags.iter()
            .filter_map(|t| t.strip_prefix(k)?.strip_prefix('='))
            .filter(|v| gemba_core::ids::is_name(v))
            .map(str::to_string)
            .collect()
    };
    let process = tag("service").into_iter().next();
    let mut nodes = tag("host");
    if nodes.is_empty() {
        if let Some(p) = &process {
            nodes = nodes_sampling(s, p);
        }
    }
    nodes.sort();
    nodes.dedup();
    nodes.truncate(8);
    (nodes, process)
}

/// The nodes whose agents sample `process` (at most 8).
pub(crate) fn nodes_sampling(s: &Shared, process: &str) -> Vec<String> {
    let Some(t) = &s.timeline else {
        return Vec::new();
    };
    let mut nodes: Vec<String> = t
        .latest
        .lock()
        .map(|latest| {
            latest
                .keys()
                .filter(|(_, name)| name == process)
                .map(|(n, _)| n.clone())
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    nodes.truncate(8);
    nodes
}

fn hhmmss(ms: u64) -> String {
    let t = format_ms(ms);
    // RFC 3339: the time of day sits between 'T' and the seconds' end.
    t.split('T')
        .nth(1)
        .map(|x| x.chars().take(8).collect())
        .unwrap_or(t)
}

/// A console section with the lines, file by file.
pub(crate) fn html(gathered: &[NodeExcerpts], shown: bool, what: &str) -> String {
    let mut b = format!(r#"<h2 id="logs">log lines {}</h2>"#, esc(what));
    if !shown {
        let _ = write!(b, r#"<p class="muted">{}</p>"#, esc(NOT_SHOWN));
        return b;
    }
    if gathered.is_empty() {
        b.push_str(r#"<p class="muted">No node to ask: the event names no host and no sampled service.</p>"#);
        return b;
    }
    for (node, r) in gathered {
        match r {
            Err(why) => {
                let _ = write!(b, r#"<p class="muted">{}: {}</p>"#, esc(node), esc(why));
            }
            Ok(list) if list.is_empty() => {
                let _ = write!(
                    b,
                    r#"<p class="muted">{}: no [[process]] log files here</p>"#,
                    esc(node)
                );
            }
            Ok(list) => {
                for e in list {
                    let _ = write!(
                        b,
                        r#"<p><b>{}</b> {} on {}{}{}</p><pre class="log">"#,
                        esc(&e.process),
                        esc(&e.file),
                        esc(&e.node),
                        e.unavailable
                            .as_ref()
                            .map(|u| format!(" — unavailable: {}", esc(u)))
                            .unwrap_or_default(),
                        if e.more > 0 {
                            format!(
                                " — the newest {} lines, {} before them left out",
                                e.lines.len(),
                                e.more
                            )
                        } else {
                            String::new()
                        },
                    );
                    if e.lines.is_empty() {
                        b.push_str("(no lines in this window)");
                    }
                    for l in &e.lines {
                        let _ = writeln!(b, "{}  {}", hhmmss(l.at_ms), esc(&l.text));
                    }
                    b.push_str("</pre>");
                }
            }
        }
    }
    b
}

/// The same as plain text, for mail and commands; empty when there are
/// no lines.
pub(crate) fn text(gathered: &[NodeExcerpts]) -> String {
    gathered
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|list| gemba_timeline::logs::text(list))
        .collect()
}

/// The same as JSON, for the API and webhooks.
pub(crate) fn json(gathered: &[NodeExcerpts]) -> serde_json::Value {
    json!(gathered
        .iter()
        .map(|(node, r)| match r {
            Ok(list) => json!({"node": node, "excerpts": list}),
            Err(why) => json!({"node": node, "error": why}),
        })
        .collect::<Vec<_>>())
}

/// The lines around an event, with the nodes and process it names.
pub(crate) async fn around_event(s: &Shared, e: &gemba_store::EventRow) -> Vec<NodeExcerpts> {
    let (nodes, process) = event_scope(s, &e.tags);
    let mut q = LogQuery::around(process, e.at_ms, AROUND_EVENT, AROUND_EVENT);
    q.limit = PAGE_LINES;
    gather(s, &nodes, &q).await
}

/// The lines of a node around an escalation.
pub(crate) async fn around_escalation(s: &Shared, node: &str, opened_ms: u64) -> Vec<NodeExcerpts> {
    let mut q = LogQuery::around(None, opened_ms, BEFORE_ESCALATION, AFTER_ESCALATION);
    q.limit = PAGE_LINES;
    gather(s, &[node.to_string()], &q).await
}
