//! The review stage over HTTP: report ingestion in the shapes Puppet,
//! PuppetDB and chef-client send, problems and their owners, the morning
//! market, and the console pages that show them.
//!
//! Report bodies are capped before they are read (`[market]
//! max_report_size`, 413 beyond), parsed on a blocking thread, and
//! acknowledged only once the market has committed them.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use gemba_market::problem::Problem;
use gemba_market::service::{problem_id, MarketError, MarketHandle, ProblemChange};
use gemba_market::{Expect, ParseError};
use serde::Deserialize;
use serde_json::json;

use crate::{error, Shared};

/// Paths that take reports: their senders may put the token in basic
/// auth (Puppet's `reporturl`) or in `x-data-collector-token` (Chef).
pub(crate) const REPORT_PATHS: &[&str] = &[
    "/api/v1/reports",
    "/api/v1/reports/puppet",
    "/api/v1/reports/puppetdb",
    "/api/v1/chef/data-collector",
];

fn market(s: &Shared) -> Result<&MarketHandle, Box<Response>> {
    s.market.as_ref().ok_or_else(|| {
        Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs no market: it is not a server, or its store could not be opened",
        ))
    })
}

fn market_error(e: MarketError) -> Response {
    match e {
        MarketError::NoProblem(id) => error(StatusCode::NOT_FOUND, format!("no problem {id}")),
        MarketError::Invalid(why) => error(StatusCode::BAD_REQUEST, why),
        MarketError::Store(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not stored, try again: {e}"),
        ),
        MarketError::Stopped => error(StatusCode::SERVICE_UNAVAILABLE, "the market is stopping"),
    }
}

async fn ingest(s: Shared, body: Bytes, expect: Expect) -> Response {
    let m = match market(&s) {
        Ok(m) => m.clone(),
        Err(r) => return *r,
    };
    let parsed = tokio::task::spawn_blocking(move || gemba_market::parse(&body, expect)).await;
    let (format, docs) = match parsed {
        Ok(Ok(p)) => p,
        Ok(Err(ParseError(why))) => return error(StatusCode::BAD_REQUEST, why),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the report could not be read: {e}"),
            )
        }
    };
    match m.ingest(docs).await {
        Ok(done) => Json(json!({
            "format": format,
            "accepted": done.accepted,
            "duplicate": done.duplicate,
            "started": done.started,
            "runs": done.runs.iter().map(|(k, new)| json!({"key": k, "new": new})).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => market_error(e),
    }
}

pub(crate) async fn puppet(State(s): State<Shared>, body: Bytes) -> Response {
    ingest(s, body, Expect::Puppet).await
}

pub(crate) async fn puppetdb(State(s): State<Shared>, body: Bytes) -> Response {
    ingest(s, body, Expect::PuppetDb).await
}

pub(crate) async fn chef(State(s): State<Shared>, body: Bytes) -> Response {
    ingest(s, body, Expect::Chef).await
}

pub(crate) async fn any(State(s): State<Shared>, body: Bytes) -> Response {
    ingest(s, body, Expect::Any).await
}

#[derive(Deserialize)]
pub(crate) struct ProblemFilter {
    status: Option<String>,
    kind: Option<String>,
}

pub(crate) async fn problems(State(s): State<Shared>, Query(f): Query<ProblemFilter>) -> Response {
    let m = match market(&s) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    match m.problems().await {
        Ok(list) => {
            let now = m.now_ms();
            let list: Vec<serde_json::Value> = list
                .iter()
                .filter(|p| {
                    f.status.as_deref().is_none_or(|st| {
                        st == p.status.as_str() || (st == "unresolved" && p.is_open())
                    })
                })
                .filter(|p| f.kind.as_deref().is_none_or(|k| k == p.kind.as_str()))
                .map(|p| problem_json(p, now, false))
                .collect();
            Json(json!({ "problems": list })).into_response()
        }
        Err(e) => market_error(e),
    }
}

fn problem_json(p: &Problem, now: u64, full: bool) -> serde_json::Value {
    let mut v = json!({
        "id": p.label(),
        "kind": p.kind.as_str(),
        "title": p.title,
        "why": p.why,
        "category": p.category,
        "severity": p.severity.as_str(),
        "score": p.score(now),
        "status": p.status.as_str(),
        "owner": p.owner,
        "cause": p.cause,
        "cause_known": p.cause.is_some(),
        "nodes": p.nodes_total,
        "occurrences": p.occurrences,
        "first_seen": gemba_market::time::format_ms(p.first_seen_ms),
        "last_seen": gemba_market::time::format_ms(p.last_seen_ms),
        "production": p.production,
        "sample": p.sample,
    });
    if full {
        v["signature"] = json!(p.signature);
        v["notes"] = json!(p.notes);
        v["affected"] = json!(p.nodes);
        v["runs"] = json!(p.runs);
        v["resource"] = json!(p.resource);
    }
    v
}

pub(crate) async fn problem(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let m = match market(&s) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let id = match problem_id(&id) {
        Ok(id) => id,
        Err(e) => return market_error(e),
    };
    match m.problem(id).await {
        Ok(Some(p)) => Json(problem_json(&p, m.now_ms(), true)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no problem P-{id}")),
        Err(e) => market_error(e),
    }
}

pub(crate) async fn change_problem(
    State(s): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let m = match market(&s) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let id = match problem_id(&id) {
        Ok(id) => id,
        Err(e) => return market_error(e),
    };
    if body.len() > 16 * 1024 {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "a problem change is at most 16 KiB",
        );
    }
    let change: ProblemChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"owner\", \"note\", \"cause\", \"severity\"}}: {e}"),
            )
        }
    };
    match m.change(id, change).await {
        Ok(p) => Json(problem_json(&p, m.now_ms(), true)).into_response(),
        Err(e) => market_error(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct MarketQuery {
    date: Option<String>,
    format: Option<String>,
}

pub(crate) async fn market_report(
    State(s): State<Shared>,
    Query(q): Query<MarketQuery>,
) -> Response {
    let m = match market(&s) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let cfg = &s.market_config;
    let (since, until) = match gemba_market::market::window(
        q.date.as_deref(),
        cfg.market_at,
        &cfg.timezone,
        m.now_ms(),
    ) {
        Ok(w) => w,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let report = match m.market(since, until).await {
        Ok(r) => r,
        Err(e) => return market_error(e),
    };
    match q.format.as_deref().unwrap_or("json") {
        "json" => Json(report).into_response(),
        "text" => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            report.to_text(),
        )
            .into_response(),
        "md" => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            report.to_markdown(),
        )
            .into_response(),
        other => error(
            StatusCode::BAD_REQUEST,
            format!(
                "format {:?} is not json, text or md",
                other.chars().take(20).collect::<String>()
            ),
        ),
    }
}

pub(crate) async fn node_runs(State(s): State<Shared>, Path(node): Path<String>) -> Response {
    let m = match market(&s) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if !gemba_core::ids::is_name(&node) {
        return error(StatusCode::BAD_REQUEST, "not a node name");
    }
    let runs = match m.store().node_runs(&node, 200).await {
        Ok(r) => r,
        Err(e) => return market_error(e.into()),
    };
    let history = m.node(&node).await.ok().flatten();
    Json(json!({ "node": node, "summary": history, "runs": runs.iter().map(run_json).collect::<Vec<_>>() })).into_response()
}

fn run_json(r: &gemba_store::RunRow) -> serde_json::Value {
    json!({
        "key": r.key,
        "tool": r.tool,
        "started": gemba_market::time::format_ms(r.started_ms),
        "duration_ms": r.duration_ms,
        "status": r.status,
        "environment": r.environment,
        "code_version": r.code_version,
        "total": r.total,
        "changed": r.changed,
        "failed": r.failed,
    })
}

/// One run with its resources and logs. Logs may carry whatever a
/// manifest printed: like program output, shown only to token holders.
pub(crate) async fn run(
    State(s): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let m = match market(&s) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if key.len() > 300 {
        return error(StatusCode::BAD_REQUEST, "not a run key");
    }
    match m.store().run(&key).await {
        Ok(Some(r)) => {
            let mut v = run_json(&r);
            let mut body: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            if !crate::holds_token(&s, &headers) {
                body["logs"] = json!("hidden: send the API token to see a run's logs");
            }
            v["node"] = json!(r.node);
            v["run"] = body;
            Json(v).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no run {:?}", key.chars().take(80).collect::<String>()),
        ),
        Err(e) => market_error(e.into()),
    }
}

/// The console's market page: today's market and every unresolved problem.
pub(crate) async fn market_page(State(s): State<Shared>, Query(q): Query<MarketQuery>) -> Response {
    let m = match market(&s) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let cfg = &s.market_config;
    let (since, until) = match gemba_market::market::window(
        q.date.as_deref(),
        cfg.market_at,
        &cfg.timezone,
        m.now_ms(),
    ) {
        Ok(w) => w,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match m.market(since, until).await {
        Ok(report) => Html(crate::market_page::render(s.mesh.id(), &report)).into_response(),
        Err(e) => market_error(e),
    }
}

pub(crate) async fn problem_page(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let m = match market(&s) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let id = match problem_id(&id) {
        Ok(id) => id,
        Err(e) => return market_error(e),
    };
    let p = match m.problem(id).await {
        Ok(Some(p)) => p,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no problem P-{id}")),
        Err(e) => return market_error(e),
    };
    let run = match m.store().run(&p.sample.run).await {
        Ok(r) => r.and_then(|r| serde_json::from_str::<gemba_market::Run>(&r.body).ok()),
        Err(_) => None,
    };
    Html(crate::market_page::render_problem(
        s.mesh.id(),
        &p,
        run.as_ref(),
        m.now_ms(),
    ))
    .into_response()
}

pub(crate) async fn node_page(State(s): State<Shared>, Path(node): Path<String>) -> Response {
    let m = match market(&s) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if !gemba_core::ids::is_name(&node) {
        return error(StatusCode::BAD_REQUEST, "not a node name");
    }
    match m.store().node_runs(&node, 100).await {
        Ok(runs) => {
            Html(crate::market_page::render_node(s.mesh.id(), &node, &runs)).into_response()
        }
        Err(e) => market_error(e.into()),
    }
}
