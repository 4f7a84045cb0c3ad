//! The timeline's events over HTTP: gemba's own API, and Graphite's and
//! Grafana's at the paths their clients post to, so a deploy script or CI
//! hook that already sends events needs only a new host. Every shape is
//! checked by the same rules (gemba-timeline's `event`), refused with 400
//! and the reason, and stored before it is answered.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use gemba_store::EventRow;
use gemba_timeline::event::{self, format_ms};
use gemba_timeline::{NewEvent, TimelineError, TimelineHandle};
use serde_json::json;

use crate::params::{self, Query};
use crate::respond::{Answer, ApiError};
use crate::Shared;

/// Paths where events arrive from other tools; their clients may send the
/// token as the password of basic auth (Graphite clients do).
pub(crate) const EVENT_PATHS: &[&str] = &[
    "/api/v1/events",
    "/events",
    "/events/",
    "/api/annotations",
    "/api/annotations/graphite",
];

/// Graphite's paths: its clients post JSON with whatever content type
/// their HTTP library picks (curl -d sends form-urlencoded).
pub(crate) const GRAPHITE_PATHS: &[&str] = &["/events", "/events/", "/api/annotations/graphite"];

pub(crate) fn timeline(s: &Shared) -> Result<&TimelineHandle, ApiError> {
    s.timeline.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "this node keeps no timeline: it is not a server, or its store could not be opened",
        )
    })
}

pub(crate) fn event_json(e: &EventRow) -> serde_json::Value {
    json!({
        "id": e.id,
        "when": format_ms(e.at_ms),
        "when_ms": e.at_ms,
        "end": e.end_ms.map(format_ms),
        "end_ms": e.end_ms,
        "kind": e.kind,
        "what": e.what,
        "tags": e.tags,
        "text": e.text,
        "author": e.author,
        "link": e.link,
        "source": e.source,
    })
}

async fn store(
    s: &Shared,
    body: &[u8],
    parse: fn(&[u8], u64) -> Result<NewEvent, gemba_timeline::EventError>,
) -> Result<(i64, EventRow), ApiError> {
    let t = timeline(s)?;
    let e = parse(body, t.now_ms()).map_err(|why| ApiError::bad(why.0))?;
    let row = e.clone().into_row();
    let id = t.add(e).await?.ok_or_else(|| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the event was not stored".into(),
        )
    })?;
    Ok((id, EventRow { id, ..row }))
}

pub(crate) async fn add(State(s): State<Shared>, body: Bytes) -> Answer {
    let (_, row) = store(&s, &body, event::from_api).await?;
    Ok((StatusCode::CREATED, Json(event_json(&row))).into_response())
}

pub(crate) async fn graphite(State(s): State<Shared>, body: Bytes) -> Answer {
    let (id, _) = store(&s, &body, event::from_graphite).await?;
    Ok(Json(json!({ "id": id })).into_response())
}

pub(crate) async fn grafana(State(s): State<Shared>, body: Bytes) -> Answer {
    let (id, _) = store(&s, &body, event::from_grafana).await?;
    Ok(Json(json!({ "message": "Annotation added", "id": id })).into_response())
}

/// Events in Grafana's annotation shape, newest first, so that a Grafana
/// JSON or annotation data source shows gemba's events on its panels.
/// Tags go out as Grafana writes them (`service:shop`).
pub(crate) async fn grafana_list(
    State(s): State<Shared>,
    Query(p): Query<params::Annotations>,
) -> Answer {
    let t = timeline(&s)?;
    match p.kind.as_deref() {
        None | Some("annotation") => {}
        Some("alert") => return Ok(Json(json!([])).into_response()),
        Some(other) => {
            return Err(ApiError::bad(format!(
                "type {:?} is not annotation or alert",
                other.chars().take(20).collect::<String>()
            )))
        }
    }
    let limit = params::within("limit", p.limit, 1, 5000)?.unwrap_or(100);
    let mut tags = Vec::new();
    for raw in &p.tags {
        tags.push(event::tag(raw).map_err(|e| ApiError::bad(e.0))?);
    }
    let (from, to) = (p.from.unwrap_or(0), p.to.unwrap_or_else(|| t.now_ms()));
    if from > to {
        return Err(ApiError::bad("from must not be after to"));
    }
    let query = |tags: Vec<String>| gemba_timeline::Query {
        since: Some((from / 1000).to_string()),
        until: Some(to.div_ceil(1000).to_string()),
        tags,
        kind: None,
        limit: Some(limit),
    };
    let mut found = Vec::new();
    if p.match_any && tags.len() > 1 {
        for tag in tags {
            for e in t.query(&query(vec![tag])).await? {
                if !found.iter().any(|f: &EventRow| f.id == e.id) {
                    found.push(e);
                }
            }
        }
    } else {
        found = t.query(&query(tags)).await?;
    }
    found.retain(|e| e.end_ms.unwrap_or(e.at_ms) >= from && e.at_ms <= to);
    found.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then(b.id.cmp(&a.id)));
    found.truncate(limit);
    let grafana_tag = |t: &String| match t.split_once('=') {
        Some((k, v)) => format!("{k}:{v}"),
        None => t.clone(),
    };
    let list: Vec<serde_json::Value> = found
        .iter()
        .map(|e| {
            let text = if e.text.is_empty() {
                e.what.clone()
            } else {
                format!("{}\n{}", e.what, e.text)
            };
            json!({
                "id": e.id,
                "time": e.at_ms,
                "timeEnd": e.end_ms.unwrap_or(e.at_ms),
                "tags": e.tags.iter().map(grafana_tag).collect::<Vec<_>>(),
                "text": text,
                "login": e.author,
                "dashboardUID": null,
                "panelId": 0,
                "source": e.source,
            })
        })
        .collect();
    Ok(Json(list).into_response())
}

pub(crate) async fn grafana_graphite(State(s): State<Shared>, body: Bytes) -> Answer {
    let (id, _) = store(&s, &body, event::from_graphite).await?;
    Ok(Json(json!({ "message": "Graphite annotation added", "id": id })).into_response())
}

pub(crate) async fn list(State(s): State<Shared>, Query(p): Query<params::Events>) -> Answer {
    let t = timeline(&s)?;
    let q = p.into();
    let events = t.query(&q).await?;
    Ok(Json(json!({
        "events": events.iter().map(event_json).collect::<Vec<_>>(),
    }))
    .into_response())
}

pub(crate) async fn one(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Answer {
    let t = timeline(&s)?;
    let e = event_of(t, &id).await?;
    let callouts = gemba_timeline::trend::callouts(t, &e)
        .await
        .map_err(TimelineError::from)?;
    let mut v = event_json(&e);
    v["callouts"] = json!(callouts
        .iter()
        .map(|c| json!({
            "text": c.text,
            "process": c.process,
            "metric": c.metric,
            "nodes": c.nodes,
            "started_growing": c.started,
            "rate_per_hour": c.rate_per_h,
        }))
        .collect::<Vec<_>>());
    // The lines around it, for requests that may see them.
    if crate::holds_token(&s, &headers) {
        v["logs"] = crate::grid::logs::json(&crate::grid::logs::around_event(&s, &e).await);
    }
    Ok(Json(v).into_response())
}

/// The event an id in a path names.
pub(crate) async fn event_of(t: &TimelineHandle, id: &str) -> Result<EventRow, ApiError> {
    let n: i64 = id
        .parse()
        .map_err(|_| ApiError::bad("an event id is a number"))?;
    t.event(n)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no event {n}")))
}

/// What a series query names: `node`, `process` (`host` for the machine)
/// and `metric`, each optional but the metric; several of each overlay.
pub(crate) struct SeriesQuery {
    pub nodes: Vec<String>,
    pub processes: Vec<String>,
    pub metric: String,
    pub since: Option<String>,
    pub until: Option<String>,
    /// Charts only: size, marker kinds, marker tags.
    pub width: u32,
    pub height: u32,
    pub events: Option<Vec<String>>,
    pub tags: Vec<String>,
    pub fit: bool,
}

/// A series query built by this node (a page's chart).
pub(crate) fn series_query_of(raw: Option<&str>) -> Result<SeriesQuery, ApiError> {
    series_query(params::parse(raw.unwrap_or(""))?)
}

/// A series query checked: names, sizes, marker kinds and tags.
pub(crate) fn series_query(p: params::Series) -> Result<SeriesQuery, ApiError> {
    if p.node.len() + p.process.len() > 64 {
        return Err(ApiError::bad("at most 64 nodes and processes in one query"));
    }
    let pixels = |what: &str, v: Option<u32>, default: u32| match v {
        None => Ok(default),
        Some(n) if (100..=4000).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad(format!(
            "{what} {n} is not a number of pixels in 100..=4000"
        ))),
    };
    let events = match &p.events {
        None => None,
        Some(v) => {
            let mut kinds = Vec::new();
            for kind in v.split(',').filter(|x| !x.is_empty() && *x != "none") {
                if !event::KINDS.contains(&kind) {
                    return Err(ApiError::bad(format!(
                        "events: {:?} is not one of none, {}",
                        kind.chars().take(64).collect::<String>(),
                        event::KINDS.join(", ")
                    )));
                }
                kinds.push(kind.to_string());
            }
            Some(kinds)
        }
    };
    Ok(SeriesQuery {
        nodes: p
            .node
            .iter()
            .map(|n| params::name("node", n))
            .collect::<Result<_, _>>()?,
        processes: p
            .process
            .iter()
            .map(|n| params::name("process", n))
            .collect::<Result<_, _>>()?,
        metric: if p.metric.is_empty() {
            String::new()
        } else {
            params::name("metric", &p.metric)?
        },
        since: p.since,
        until: p.until,
        width: pixels("width", p.width, 900)?,
        height: pixels("height", p.height, 320)?,
        events,
        tags: p
            .tag
            .iter()
            .map(|t| event::tag(t).map_err(|e| ApiError::bad(e.0)))
            .collect::<Result<_, _>>()?,
        fit: p.fit,
    })
}

/// The series a query names, with their points (the finest tier that
/// holds the window), at most 50.
pub(crate) async fn series_of(
    t: &TimelineHandle,
    q: &SeriesQuery,
) -> Result<(u64, u64, Vec<gemba_timeline::series::Series>), ApiError> {
    let now = t.now_ms();
    let since = match &q.since {
        Some(s) => gemba_timeline::service::point(s, now)
            .map_err(|e| ApiError::bad(format!("since: {}", e.0)))?,
        None => now.saturating_sub(2 * 3600 * 1000),
    };
    let until = match &q.until {
        Some(s) => gemba_timeline::service::point(s, now)
            .map_err(|e| ApiError::bad(format!("until: {}", e.0)))?,
        None => now,
    };
    if since >= until {
        return Err(ApiError::bad("since must be before until"));
    }
    if q.metric.is_empty() {
        return Err(ApiError::bad(
            "metric is missing (e.g. metric=tcp_established, or load1 for the host)",
        ));
    }
    let found = gemba_timeline::series::select(
        t,
        &q.nodes,
        &q.processes,
        &q.metric,
        since / 1000,
        until / 1000,
        50,
    )
    .await?;
    Ok((since, until, found))
}

pub(crate) async fn series(State(s): State<Shared>, Query(p): Query<params::Series>) -> Answer {
    let t = timeline(&s)?;
    let q = series_query(p)?;
    if q.metric.is_empty() {
        // No metric: the catalogue of stored series.
        let all = t.store().series().await.map_err(TimelineError::from)?;
        let list: Vec<_> = all
            .into_iter()
            .filter(|(_, k)| q.nodes.is_empty() || q.nodes.contains(&k.node))
            .filter(|(_, k)| q.processes.is_empty() || q.processes.contains(&k.process))
            .map(|(_, k)| json!({"node": k.node, "process": k.process, "metric": k.metric}))
            .collect();
        return Ok(Json(json!({ "series": list })).into_response());
    }
    let (since, until, found) = series_of(t, &q).await?;
    Ok(Json(json!({
        "since": format_ms(since),
        "until": format_ms(until),
        "series": found.iter().map(|s| json!({
            "node": s.key.node,
            "process": s.key.process,
            "metric": s.key.metric,
            "tier": format!("{:?}", s.tier).to_lowercase(),
            "points": s.points.iter().map(|p| json!([p.t, p.v, p.min, p.max])).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// The newest sample of every process on every node: values, or why it
/// is unavailable.
pub(crate) async fn processes(State(s): State<Shared>) -> Answer {
    let t = timeline(&s)?;
    let latest = t.latest.lock().map(|l| l.clone()).unwrap_or_default();
    let mut rows: Vec<_> = latest.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let stats = &t.stats;
    Ok(Json(json!({
        "processes": rows.iter().map(|((node, name), s)| json!({
            "node": node,
            "process": name,
            "at": format_ms(s.at_ms),
            "unavailable": s.unavailable,
            "partial": s.partial,
            "values": s.values,
        })).collect::<Vec<_>>(),
        "points_written": stats.points.load(std::sync::atomic::Ordering::Relaxed),
        "series_refused": stats.refused_series.load(std::sync::atomic::Ordering::Relaxed),
    }))
    .into_response())
}

/// The chart a query names (see gemba-timeline's `chart::build`).
pub(crate) async fn chart_of(
    t: &TimelineHandle,
    q: &SeriesQuery,
) -> Result<gemba_timeline::chart::Chart, ApiError> {
    let (since, until, found) = series_of(t, q).await?;
    Ok(gemba_timeline::chart::build(
        t,
        gemba_timeline::chart::Request {
            nodes: q.nodes.clone(),
            processes: q.processes.clone(),
            metric: q.metric.clone(),
            since_ms: since,
            until_ms: until,
            width: q.width,
            height: q.height,
            events: q.events.clone(),
            tags: q.tags.clone(),
            fit: q.fit,
        },
        found,
    )
    .await?)
}

pub(crate) async fn chart_svg(State(s): State<Shared>, Query(p): Query<params::Series>) -> Answer {
    let t = timeline(&s)?;
    let q = series_query(p)?;
    let chart = chart_of(t, &q).await?;
    let svg = tokio::task::spawn_blocking(move || chart.svg())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

pub(crate) async fn chart_png(State(s): State<Shared>, Query(p): Query<params::Series>) -> Answer {
    let t = timeline(&s)?;
    let q = series_query(p)?;
    let chart = chart_of(t, &q).await?;
    let png = tokio::task::spawn_blocking(move || chart.png())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "image/png")], png).into_response())
}

/// `POST /api/v1/chart/send?<chart query>` with `{"to": ..., "note": ...}`:
/// the chart as a PNG with the note, to the `[[notify]]` targets named by
/// `to`: a kind (`smtp`, `webhook`, `command`), `all`, or a number (the
/// n-th `[[notify]]`, from 1).
pub(crate) async fn chart_send(
    State(s): State<Shared>,
    Query(p): Query<params::Series>,
    body: Bytes,
) -> Answer {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Send {
        to: String,
        #[serde(default)]
        note: String,
        /// Send the log lines around the newest marker too.
        #[serde(default)]
        logs: bool,
    }
    let t = timeline(&s)?;
    let req: Send = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(format!(
            "the body is not {{\"to\": ..., \"note\": ...}}: {e}"
        ))
    })?;
    if req.note.chars().count() > 4000 {
        return Err(ApiError::bad("the note is longer than 4000 characters"));
    }
    let targets = notify_targets(&s, &req.to)?;
    let q = series_query(p)?;
    let chart = chart_of(t, &q).await?;
    let title = chart.title.clone();
    let newest_marker = chart
        .markers
        .iter()
        .map(|m| m.at_ms)
        .max()
        .unwrap_or(chart.until_ms);
    let png = tokio::task::spawn_blocking(move || chart.png())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let subject = format!("gemba chart: {title}");
    let mut text = if req.note.is_empty() {
        title.clone()
    } else {
        format!("{}\n\n{title}", req.note)
    };
    let mut logs_json = serde_json::Value::Null;
    if req.logs {
        let gathered = chart_logs(&s, &q, newest_marker).await;
        let lines = crate::grid::logs::text(&gathered);
        if !lines.is_empty() {
            text.push_str("\n\n");
            text.push_str(&lines);
        }
        logs_json = crate::grid::logs::json(&gathered);
    }
    let m = gemba_notify::Outgoing {
        subject: subject.clone(),
        text: text.clone(),
        json: json!({"text": text, "subject": subject, "logs": logs_json}),
        stdin: text.clone().into_bytes(),
        env: vec![("GEMBA_CHART".into(), title.clone())],
        images: vec![gemba_notify::Image {
            name: "chart.png".into(),
            png: png.clone(),
        }],
    };
    let (sent, errors) = gemba_notify::fan_out(&targets, &m).await;
    if sent == 0 {
        return Err(ApiError(
            StatusCode::BAD_GATEWAY,
            format!("not sent: {}", errors.join("; ")),
        ));
    }
    Ok(Json(json!({"sent": sent, "failed": errors, "bytes": png.len()})).into_response())
}

/// The log lines sent with a chart: of its process (when it names one),
/// on its nodes (or those sampling the process), around `at_ms` (its
/// newest marker, or its end).
async fn chart_logs(
    s: &Shared,
    q: &SeriesQuery,
    at_ms: u64,
) -> Vec<crate::grid::logs::NodeExcerpts> {
    let process = match q.processes.as_slice() {
        [p] if p != gemba_timeline::sample::HOST => Some(p.clone()),
        _ => None,
    };
    let nodes = if q.nodes.is_empty() {
        process
            .as_deref()
            .map(|p| crate::grid::logs::nodes_sampling(s, p))
            .unwrap_or_default()
    } else {
        q.nodes.clone()
    };
    let mut lq = gemba_timeline::logs::LogQuery::around(
        process,
        at_ms,
        crate::grid::logs::AROUND_EVENT,
        crate::grid::logs::AROUND_EVENT,
    );
    lq.limit = 30;
    crate::grid::logs::gather(s, &nodes, &lq).await
}

/// The [[notify]] targets `to` names (see [`gemba_notify::select`]).
pub(crate) fn notify_targets(
    s: &Shared,
    to: &str,
) -> Result<Vec<gemba_core::policy::NotifyDef>, ApiError> {
    gemba_notify::select(&s.notify, to).map_err(ApiError::bad)
}
