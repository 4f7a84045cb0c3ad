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
use axum::response::{Html, IntoResponse};
use axum::Json;
use gemba_market::market::Market;
use gemba_market::problem::Problem;
use gemba_market::service::{problem_id, MarketError, MarketHandle, ProblemChange};
use gemba_market::{Expect, ParseError};
use serde::Deserialize;
use serde_json::json;

use crate::converge::{Answer, ApiError};
use crate::Shared;

/// Paths that take reports: their senders may put the token in basic
/// auth (Puppet's `reporturl`) or in `x-data-collector-token` (Chef).
pub(crate) const REPORT_PATHS: &[&str] = &[
    "/api/v1/reports",
    "/api/v1/reports/puppet",
    "/api/v1/reports/puppetdb",
    "/api/v1/chef/data-collector",
];

fn market(s: &Shared) -> Result<&MarketHandle, ApiError> {
    s.market.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs no market: it is not a server, or its store could not be opened".into(),
        )
    })
}

impl From<MarketError> for ApiError {
    fn from(e: MarketError) -> ApiError {
        match e {
            MarketError::NoProblem(id) => {
                ApiError(StatusCode::NOT_FOUND, format!("no problem {id}"))
            }
            MarketError::Invalid(why) => ApiError(StatusCode::BAD_REQUEST, why),
            MarketError::Store(e) => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not stored, try again: {e}"),
            ),
            MarketError::Stopped => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the market is stopping".into(),
            ),
        }
    }
}

impl From<gemba_store::StoreError> for ApiError {
    fn from(e: gemba_store::StoreError) -> ApiError {
        MarketError::from(e).into()
    }
}

fn bad_request(why: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, why.into())
}

/// The address a request came from, when it came over a socket.
pub(crate) type Peer = Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>;

async fn ingest(s: Shared, peer: Peer, body: Bytes, expect: Expect) -> Answer {
    let m = market(&s)?.clone();
    let client = peer.map(|p| p.0 .0.ip());
    let deadline = crate::parse_budget::PARSE_DEADLINE.as_secs();
    let Ok(parsed) = s
        .parse_budget
        .run(client, move || gemba_market::parse(&body, expect))
        .await
    else {
        let mut r = ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the report was not read within {deadline} s (too many reports at once, or one too slow to read); send it again later"),
        )
        .into_response();
        r.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, deadline.into());
        return Ok(r);
    };
    let (format, docs) = parsed.map_err(|ParseError(why)| bad_request(why))?;
    let done = m.ingest(docs).await?;
    Ok(Json(json!({
        "format": format,
        "accepted": done.accepted,
        "duplicate": done.duplicate,
        "started": done.started,
        "runs": done.runs.iter().map(|(k, new)| json!({"key": k, "new": new})).collect::<Vec<_>>(),
    }))
    .into_response())
}

pub(crate) async fn puppet(State(s): State<Shared>, peer: Peer, body: Bytes) -> Answer {
    ingest(s, peer, body, Expect::Puppet).await
}

pub(crate) async fn puppetdb(State(s): State<Shared>, peer: Peer, body: Bytes) -> Answer {
    ingest(s, peer, body, Expect::PuppetDb).await
}

pub(crate) async fn chef(State(s): State<Shared>, peer: Peer, body: Bytes) -> Answer {
    ingest(s, peer, body, Expect::Chef).await
}

pub(crate) async fn any(State(s): State<Shared>, peer: Peer, body: Bytes) -> Answer {
    ingest(s, peer, body, Expect::Any).await
}

#[derive(Deserialize)]
pub(crate) struct ProblemFilter {
    status: Option<String>,
    kind: Option<String>,
}

pub(crate) async fn problems(State(s): State<Shared>, Query(f): Query<ProblemFilter>) -> Answer {
    let m = market(&s)?;
    let now = m.now_ms();
    let list: Vec<serde_json::Value> = m
        .problems()
        .await?
        .iter()
        .filter(|p| {
            f.status
                .as_deref()
                .is_none_or(|st| st == p.status.as_str() || (st == "unresolved" && p.is_open()))
        })
        .filter(|p| f.kind.as_deref().is_none_or(|k| k == p.kind.as_str()))
        .map(|p| problem_json(p, now, false))
        .collect();
    Ok(Json(json!({ "problems": list })).into_response())
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

/// The problem a path names (`P-17` or `17`).
async fn find_problem(m: &MarketHandle, id: &str) -> Result<Problem, ApiError> {
    let id = problem_id(id)?;
    m.problem(id)
        .await?
        .ok_or_else(|| MarketError::NoProblem(format!("P-{id}")).into())
}

pub(crate) async fn problem(State(s): State<Shared>, Path(id): Path<String>) -> Answer {
    let m = market(&s)?;
    let p = find_problem(m, &id).await?;
    Ok(Json(problem_json(&p, m.now_ms(), true)).into_response())
}

pub(crate) async fn change_problem(
    State(s): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let m = market(&s)?;
    let id = problem_id(&id)?;
    if body.len() > 16 * 1024 {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "a problem change is at most 16 KiB".into(),
        ));
    }
    let change: ProblemChange = serde_json::from_slice(&body).map_err(|e| {
        bad_request(format!(
            "expected {{\"owner\", \"note\", \"cause\", \"severity\"}}: {e}"
        ))
    })?;
    let p = m.change(id, change).await?;
    Ok(Json(problem_json(&p, m.now_ms(), true)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct MarketQuery {
    date: Option<String>,
    format: Option<String>,
}

/// The market of the day a query names (or of the last 24 hours).
async fn market_of(s: &Shared, q: &MarketQuery) -> Result<Market, ApiError> {
    let m = market(s)?;
    let cfg = &s.market_config;
    let (since, until) =
        gemba_market::market::window(q.date.as_deref(), cfg.market_at, &cfg.timezone, m.now_ms())
            .map_err(bad_request)?;
    Ok(m.market(since, until).await?)
}

pub(crate) async fn market_report(State(s): State<Shared>, Query(q): Query<MarketQuery>) -> Answer {
    let report = market_of(&s, &q).await?;
    let text =
        |ctype: &'static str, body: String| ([(header::CONTENT_TYPE, ctype)], body).into_response();
    // Action items from post-mortems stay on the market until done.
    let actions = crate::postmortems::open_actions(&s).await;
    match q.format.as_deref().unwrap_or("json") {
        "json" => {
            let mut v = serde_json::to_value(&report).unwrap_or_default();
            v["actions"] = json!(actions
                .iter()
                .map(crate::postmortems::action_json)
                .collect::<Vec<_>>());
            Ok(Json(v).into_response())
        }
        "text" => Ok(text(
            "text/plain; charset=utf-8",
            report.to_text() + &gemba_timeline::postmortem::open_actions_section(&actions, false),
        )),
        "md" => Ok(text(
            "text/markdown; charset=utf-8",
            report.to_markdown()
                + &gemba_timeline::postmortem::open_actions_section(&actions, true),
        )),
        other => Err(bad_request(format!(
            "format {:?} is not json, text or md",
            other.chars().take(20).collect::<String>()
        ))),
    }
}

fn node_name(node: &str) -> Result<(), ApiError> {
    if gemba_core::ids::is_name(node) {
        Ok(())
    } else {
        Err(bad_request("not a node name"))
    }
}

pub(crate) async fn node_runs(State(s): State<Shared>, Path(node): Path<String>) -> Answer {
    let m = market(&s)?;
    node_name(&node)?;
    let runs = m.store().node_runs(&node, 200).await?;
    let history = m.node(&node).await.ok().flatten();
    Ok(Json(json!({ "node": node, "summary": history, "runs": runs.iter().map(run_json).collect::<Vec<_>>() })).into_response())
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
) -> Answer {
    let m = market(&s)?;
    if key.len() > 300 {
        return Err(bad_request("not a run key"));
    }
    let r = m.store().run(&key).await?.ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no run {:?}", key.chars().take(80).collect::<String>()),
        )
    })?;
    let mut v = run_json(&r);
    let mut body: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    if !crate::holds_token(&s, &headers) {
        body["logs"] = json!("hidden: send the API token to see a run's logs");
    }
    v["node"] = json!(r.node);
    v["run"] = body;
    Ok(Json(v).into_response())
}

/// The console's market page.
pub(crate) async fn market_page(State(s): State<Shared>, Query(q): Query<MarketQuery>) -> Answer {
    let report = market_of(&s, &q).await?;
    let actions = crate::postmortems::market_section(&s).await;
    Ok(Html(crate::market_page::render(s.mesh.id(), &report, &actions)).into_response())
}

pub(crate) async fn problem_page(State(s): State<Shared>, Path(id): Path<String>) -> Answer {
    let m = market(&s)?;
    let p = find_problem(m, &id).await?;
    // The sample run's resources, when it is still stored.
    let run = match m.store().run(&p.sample.run).await {
        Ok(r) => r.and_then(|r| serde_json::from_str::<gemba_market::Run>(&r.body).ok()),
        Err(_) => None,
    };
    Ok(Html(crate::market_page::render_problem(
        s.mesh.id(),
        &p,
        run.as_ref(),
        m.now_ms(),
    ))
    .into_response())
}

pub(crate) async fn node_page(State(s): State<Shared>, Path(node): Path<String>) -> Answer {
    let m = market(&s)?;
    node_name(&node)?;
    let runs = m.store().node_runs(&node, 100).await?;
    Ok(Html(crate::market_page::render_node(s.mesh.id(), &node, &runs)).into_response())
}
