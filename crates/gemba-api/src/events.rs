//! The timeline's events over HTTP: gemba's own API, and Graphite's and
//! Grafana's at the paths their clients post to, so a deploy script or CI
//! hook that already sends events needs only a new host. Every shape is
//! checked by the same rules (gemba-timeline's `event`), refused with 400
//! and the reason, and stored before it is answered.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use gemba_store::EventRow;
use gemba_timeline::event::{self, format_ms};
use gemba_timeline::{NewEvent, Query, TimelineError, TimelineHandle};
use serde_json::json;

use crate::converge::{Answer, ApiError};
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

fn timeline(s: &Shared) -> Result<&TimelineHandle, ApiError> {
    s.timeline.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node keeps no timeline: it is not a server, or its store could not be opened"
                .into(),
        )
    })
}

impl From<TimelineError> for ApiError {
    fn from(e: TimelineError) -> ApiError {
        match e {
            TimelineError::Invalid(why) => ApiError(StatusCode::BAD_REQUEST, why.0),
            TimelineError::Store(e) => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not stored, try again: {e}"),
            ),
        }
    }
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
    let e = parse(body, t.now_ms()).map_err(|why| ApiError(StatusCode::BAD_REQUEST, why.0))?;
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

pub(crate) async fn grafana_graphite(State(s): State<Shared>, body: Bytes) -> Answer {
    let (id, _) = store(&s, &body, event::from_graphite).await?;
    Ok(Json(json!({ "message": "Graphite annotation added", "id": id })).into_response())
}

/// `since`, `until`, `kind`, `limit`, and `tag` as often as needed (every
/// tag must match).
pub(crate) fn query_of(raw: Option<&str>) -> Result<Query, ApiError> {
    let mut q = Query::default();
    let raw = raw.unwrap_or("");
    if raw.len() > 8192 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the query string is longer than 8192 bytes".into(),
        ));
    }
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        match k.as_ref() {
            "since" | "from" => q.since = Some(v.into_owned()),
            "until" | "to" => q.until = Some(v.into_owned()),
            "kind" => q.kind = Some(v.into_owned()),
            "tag" => q.tags.push(v.into_owned()),
            "limit" => {
                q.limit = Some(v.parse().map_err(|_| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("limit {v:?} is not a number"),
                    )
                })?)
            }
            other => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown parameter {:?}; known: since, until, tag, kind, limit",
                        other.chars().take(64).collect::<String>()
                    ),
                ))
            }
        }
    }
    Ok(q)
}

pub(crate) async fn list(State(s): State<Shared>, RawQuery(raw): RawQuery) -> Answer {
    let t = timeline(&s)?;
    let q = query_of(raw.as_deref())?;
    let events = t.query(&q).await?;
    Ok(Json(json!({
        "events": events.iter().map(event_json).collect::<Vec<_>>(),
    }))
    .into_response())
}

pub(crate) async fn one(State(s): State<Shared>, Path(id): Path<String>) -> Answer {
    let t = timeline(&s)?;
    let n: i64 = id
        .parse()
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "an event id is a number".into()))?;
    match t.event(n).await? {
        Some(e) => Ok(Json(event_json(&e)).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no event {n}"))),
    }
}
