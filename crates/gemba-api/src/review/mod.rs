//! The review stage over HTTP: report ingestion in the shapes Puppet,
//! PuppetDB and chef-client send, problems and their owners, the morning
//! market, and the console pages that show them.
//!
//! Report bodies are capped before they are read (`[market]
//! max_report_size`, 413 beyond), parsed on a blocking thread, and
//! acknowledged only once the market has committed them.

pub(crate) mod page;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::Json;
use gemba_market::problem::Problem;
use gemba_market::service::{problem_id, MarketError, MarketHandle, ProblemChange};
use gemba_market::{Expect, ParseError};
use gemba_views::edition::Edition;
use serde_json::json;

use crate::params::{self, Query};
use axum::routing::{get, post};
use axum::Router;

use crate::respond::{Answer, ApiError};
use crate::Shared;

/// Paths that take reports: their senders may put the token in basic
/// auth (Puppet's `reporturl`) or in `x-data-collector-token` (Chef).
pub(crate) const REPORT_PATHS: &[&str] = &[
    "/api/v1/reports",
    "/api/v1/reports/puppet",
    "/api/v1/reports/puppetdb",
    "/api/v1/chef/data-collector",
];

const YAML_TYPES: &[&str] = &[
    "application/x-yaml",
    "application/yaml",
    "text/yaml",
    "text/x-yaml",
];
const JSON_TYPES: &[&str] = &["application/json"];

/// The content types a report path takes (Puppet's http processor sends
/// YAML, or JSON from newer agents; PuppetDB and chef-client JSON).
pub(crate) fn accepted_types(path: &str) -> Option<Vec<&'static str>> {
    match path {
        "/api/v1/reports" | "/api/v1/reports/puppet" => {
            Some(YAML_TYPES.iter().chain(JSON_TYPES).copied().collect())
        }
        "/api/v1/reports/puppetdb" | "/api/v1/chef/data-collector" => Some(JSON_TYPES.to_vec()),
        _ => None,
    }
}

/// What a report path's 415 says.
pub(crate) fn type_refusal(path: &str, sent: &str) -> Option<String> {
    let ok = accepted_types(path)?;
    Some(format!(
        "{path} takes {} (or no content type), not {sent}",
        ok.join(", ")
    ))
}

/// Refuses a report whose content type its path does not take.
fn check_type(path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(essence) = crate::guard::content_type(headers) else {
        return Ok(());
    };
    if accepted_types(path).is_some_and(|ok| ok.contains(&essence.as_str())) {
        return Ok(());
    }
    Err(ApiError(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        type_refusal(path, &essence).unwrap_or_default(),
    ))
}

/// The review stage's routes. Report bodies may be large: their own cap
/// (`[market] max_report_bytes`), checked before reading; the 413 names
/// it.
pub(crate) fn routes(max_report_bytes: usize) -> Router<Shared> {
    let reports = [
        ("/api/v1/reports", Expect::Any),
        ("/api/v1/reports/puppet", Expect::Puppet),
        ("/api/v1/reports/puppetdb", Expect::PuppetDb),
        ("/api/v1/chef/data-collector", Expect::Chef),
    ]
    .into_iter()
    .fold(Router::new(), |r, (path, expect)| {
        r.route(
            path,
            post(
                move |State(s): State<Shared>, peer: Peer, headers: HeaderMap, body: Bytes| {
                    ingest(s, peer, headers, body, path, expect)
                },
            ),
        )
    })
        .layer(axum::extract::DefaultBodyLimit::max(max_report_bytes))
        .layer(axum::middleware::map_response(
            move |r: axum::response::Response| async move {
                if r.status() != StatusCode::PAYLOAD_TOO_LARGE {
                    return r;
                }
                crate::respond::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the report is larger than this server takes: [market] max_report_size is {max_report_bytes} bytes"
                    ),
                )
            },
        ));
    Router::new()
        .route("/api/v1/problems", get(problems))
        .route("/api/v1/problems/{id}", get(problem).post(change_problem))
        .route("/api/v1/market", get(market_report))
        .route("/api/v1/market/nodes", get(nodes_index))
        .route("/api/v1/market/nodes/{node}", get(node_runs))
        .route("/api/v1/market/nodes/{node}/retire", post(retire_node))
        .route("/api/v1/market/runs/{key}", get(run))
        .route("/market", get(market_page))
        .route("/market/problems/{id}", get(problem_page))
        .route("/market/nodes", get(nodes_page))
        .route("/market/nodes/{node}", get(node_page))
        .route("/market/runs/{key}", get(run_page))
        .merge(reports)
}

fn market(s: &Shared) -> Result<&MarketHandle, ApiError> {
    s.market.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "this node runs no market: it is not a server, or its store could not be opened",
        )
    })
}

/// The address a request came from, when it came over a socket.
pub(crate) type Peer = Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>;

/// Counts a report by where it came in and how it ended, and logs a
/// refusal (once a minute, by the log's limit on repeats).
fn count(s: &Shared, source: &'static str, outcome: &'static str, why: Option<&str>) {
    s.reports
        .get_or_create(&crate::ReportLabel { source, outcome })
        .inc();
    if let Some(why) = why {
        tracing::warn!(source, outcome, "a report was refused: {why}");
    }
}

/// A report sent to `path`, which takes `expect`.
async fn ingest(
    s: Shared,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
    path: &'static str,
    expect: Expect,
) -> Answer {
    let source = match expect {
        Expect::Puppet => "puppet",
        Expect::PuppetDb => "puppetdb",
        Expect::Chef => "chef",
        Expect::Any => "any",
    };
    if let Err(e) = check_type(path, &headers) {
        count(&s, source, "refused", Some(&e.1));
        return Err(e);
    }
    let started = std::time::Instant::now();
    let answer = ingest_checked(&s, peer, body, expect).await;
    s.ingest_seconds.observe(started.elapsed().as_secs_f64());
    match &answer {
        Ok(r) if r.status() == StatusCode::OK => count(&s, source, "stored", None),
        Ok(_) => count(&s, source, "unavailable", None),
        Err(e) if e.0 == StatusCode::SERVICE_UNAVAILABLE => count(&s, source, "unavailable", None),
        Err(e) => count(&s, source, "refused", Some(&e.1)),
    }
    answer
}

async fn ingest_checked(s: &Shared, peer: Peer, body: Bytes, expect: Expect) -> Answer {
    let m = market(s)?.clone();
    let client = peer.map(|p| p.0 .0.ip());
    let deadline = crate::parse_budget::PARSE_DEADLINE.as_secs();
    let Ok(parsed) = s
        .parse_budget
        .run(client, move || gemba_market::parse(&body, expect))
        .await
    else {
        let mut r = ApiError::unavailable(format!("the report was not read within {deadline} s (too many reports at once, or one too slow to read); send it again later"))
        .into_response();
        r.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, deadline.into());
        return Ok(r);
    };
    let (format, docs) = parsed.map_err(|ParseError(why)| ApiError::bad(why))?;
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

pub(crate) async fn problems(
    State(s): State<Shared>,
    Query(f): Query<params::Problems>,
    headers: HeaderMap,
) -> Answer {
    let m = market(&s)?;
    // A filter that can match nothing is a mistake to name, not an empty
    // answer.
    use gemba_market::problem::{Kind, Severity, Status};
    let statuses: Vec<&str> = Status::ALL
        .iter()
        .map(|s| s.as_str())
        .chain(["unresolved"])
        .collect();
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    let severities: Vec<&str> = Severity::ALL.iter().map(|v| v.as_str()).collect();
    for (field, value, known) in [
        ("status", &f.status, &statuses),
        ("kind", &f.kind, &kinds),
        ("severity", &f.severity, &severities),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !known.contains(v)) {
            return Err(ApiError::bad(format!(
                "{field} {v:?} is not one of {}",
                known.join(", ")
            )));
        }
    }
    if let Some(n) = &f.node {
        params::name("node", n)?;
    }
    // Environments are the nodes': a problem is in one when a node it
    // affects last ran there.
    let envs: std::collections::HashMap<String, String> = match &f.environment {
        Some(e) => {
            params::name("environment", e)?;
            m.nodes()
                .await?
                .into_iter()
                .map(|(n, h)| (n, h.environment))
                .collect()
        }
        None => Default::default(),
    };
    let now = m.now_ms();
    let output = crate::holds_token(&s, &headers);
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
        .filter(|p| {
            f.severity
                .as_deref()
                .is_none_or(|v| v == p.severity.as_str())
        })
        .filter(|p| f.node.as_deref().is_none_or(|n| p.nodes.contains_key(n)))
        .filter(|p| {
            f.environment
                .as_deref()
                .is_none_or(|e| p.nodes.keys().any(|n| envs.get(n).is_some_and(|x| x == e)))
        })
        .map(|p| problem_json(p, now, false, output))
        .collect();
    Ok(Json(json!({ "problems": list })).into_response())
}

/// A problem as the API shows it. `output`: whether the reader may see
/// what programs printed (the sample's log lines); without it they are
/// replaced by a note, as run logs are.
fn problem_json(p: &Problem, now: u64, full: bool, output: bool) -> serde_json::Value {
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
        "sample": sample_json(p, output),
        "affected": p.nodes.keys().collect::<Vec<_>>(),
        "closed": p.closed.as_ref().map(|c| json!({
            "reason": c.reason,
            "by": c.by,
            "at": gemba_market::time::format_ms(c.at_ms),
        })),
    });
    if full {
        v["signature"] = json!(p.signature);
        v["notes"] = json!(p.notes);
        v["evidence"] = json!(p.nodes);
        v["versions"] = json!(p.versions);
        v["outage"] = json!(p.outage);
        v["runs"] = json!(p.runs);
        v["resource"] = json!(p.resource);
        v["history"] = json!(p
            .history
            .iter()
            .map(|c| json!({
                "at": gemba_market::time::format_ms(c.at_ms),
                "field": c.field,
                "from": c.from,
                "to": c.to,
                "by": c.by,
            }))
            .collect::<Vec<_>>());
    }
    v
}

fn sample_json(p: &Problem, output: bool) -> serde_json::Value {
    let mut v = json!(p.sample);
    if !output && !p.sample.detail.is_empty() {
        v["detail"] = json!("hidden: send the API token to see a run's log lines");
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

pub(crate) async fn problem(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let m = market(&s)?;
    let p = find_problem(m, &id).await?;
    let output = crate::holds_token(&s, &headers);
    Ok(Json(problem_json(&p, m.now_ms(), true, output)).into_response())
}

pub(crate) async fn change_problem(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
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
    let mut change: ProblemChange = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(format!(
            "expected {{\"owner\", \"note\", \"cause\", \"severity\", \"close\": \"wont-fix\" | \"fixed-outside\" | \"duplicate of P-n\", \"reopen\": true}}: {e}"
        ))
    })?;
    change.by = s.actor(&headers);
    let p = m.change(id, change).await?;
    let output = crate::holds_token(&s, &headers);
    Ok(Json(problem_json(&p, m.now_ms(), true, output)).into_response())
}

/// The edition of the day a query names (or of the last 24 hours): the
/// market and the open action items, the one value every form shows.
async fn edition_of(s: &Shared, q: &params::Market) -> Result<Edition, ApiError> {
    let m = market(s)?;
    let cfg = &s.market_config;
    let (since, until) =
        gemba_market::market::window(q.date.as_deref(), cfg.market_at, &cfg.timezone, m.now_ms())
            .map_err(ApiError::bad)?;
    // A past day is its record; without a date, the last 24 hours now.
    let market = match q.date.as_deref() {
        Some(day) => m.record(day, since, until).await?,
        None => m.market(since, until).await?,
    };
    Ok(Edition::with_actions_of(market, s.timeline.as_ref(), m.now_ms()).await)
}

/// Where the links of an exported market point: `[market] base_url`, else
/// the address this request reached (its Host, when it is a plain host
/// and port).
fn export_base(s: &Shared, headers: &HeaderMap) -> String {
    if let Some(b) = &s.market_config.base_url {
        return b.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .unwrap_or("127.0.0.1:8777");
    format!("http://{host}")
}

pub(crate) async fn market_report(
    State(s): State<Shared>,
    Query(q): Query<params::Market>,
    headers: HeaderMap,
) -> Answer {
    let ed = edition_of(&s, &q).await?;
    let text =
        |ctype: &'static str, body: String| ([(header::CONTENT_TYPE, ctype)], body).into_response();
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(ed.to_json()).into_response()),
        "text" => Ok(text("text/plain; charset=utf-8", ed.to_text())),
        "md" => Ok(text("text/markdown; charset=utf-8", ed.to_markdown())),
        "html" => {
            let base = export_base(&s, &headers);
            Ok(Html(page::render_export(s.mesh.id(), &ed, &base)).into_response())
        }
        other => Err(ApiError::bad(format!(
            "format {:?} is not json, text, md or html",
            other.chars().take(20).collect::<String>()
        ))),
    }
}

fn node_name(node: &str) -> Result<(), ApiError> {
    if gemba_core::ids::is_name(node) {
        Ok(())
    } else {
        Err(ApiError::bad("not a node name"))
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

/// The stored run a path names (its key), or a 400 / 404 naming why.
async fn stored_run(m: &MarketHandle, key: &str) -> Result<gemba_store::RunRow, ApiError> {
    if key.len() > 300 {
        return Err(ApiError::bad("not a run key"));
    }
    m.store().run(key).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no run {:?}",
            key.chars().take(80).collect::<String>()
        ))
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
    let r = stored_run(m, &key).await?;
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
pub(crate) async fn market_page(
    State(s): State<Shared>,
    Query(q): Query<params::Market>,
    headers: axum::http::HeaderMap,
) -> Answer {
    let ed = edition_of(&s, &q).await?;
    let controls = crate::may_operate(&s, &headers);
    let days = days(&s, q.date.as_deref())?;
    Ok(Html(crate::review::page::render(
        s.mesh.id(),
        &ed,
        controls,
        Some(&days),
    ))
    .into_response())
}

/// The day a page shows, and the days before and after it.
fn days(s: &Shared, date: Option<&str>) -> Result<page::Days, ApiError> {
    let m = market(s)?;
    let (day, prev, next) =
        gemba_market::market::days_around(date, &s.market_config.timezone, m.now_ms())
            .map_err(ApiError::bad)?;
    Ok(page::Days { day, prev, next })
}

pub(crate) async fn problem_page(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let m = market(&s)?;
    let p = find_problem(m, &id).await?;
    // The sample run's resources, when it is still stored.
    let run = match m.store().run(&p.sample.run).await {
        Ok(r) => r.and_then(|r| serde_json::from_str::<gemba_market::Run>(&r.body).ok()),
        Err(_) => None,
    };
    let who = page::Reader {
        output: crate::holds_token(&s, &headers),
        operate: crate::may_operate(&s, &headers),
    };
    Ok(Html(page::render_problem(
        s.mesh.id(),
        &p,
        run.as_ref(),
        m.now_ms(),
        who,
    ))
    .into_response())
}

pub(crate) async fn node_page(
    State(s): State<Shared>,
    Path(node): Path<String>,
    Query(q): Query<params::Market>,
    headers: HeaderMap,
) -> Answer {
    let m = market(&s)?;
    node_name(&node)?;
    let summary = m.node(&node).await?;
    let problems: Vec<Problem> = m
        .problems()
        .await?
        .into_iter()
        .filter(|p| p.is_open() && p.nodes.contains_key(&node))
        .collect();
    // A day's runs (the newest 100 without a date).
    let runs = match q.date.as_deref() {
        None => m.store().node_runs(&node, 100).await?,
        Some(d) => {
            let cfg = &s.market_config;
            let (since, until) =
                gemba_market::market::window(Some(d), cfg.market_at, &cfg.timezone, m.now_ms())
                    .map_err(ApiError::bad)?;
            m.store()
                .node_runs(&node, 5_000)
                .await?
                .into_iter()
                .filter(|r| r.started_ms >= since && r.started_ms < until)
                .collect()
        }
    };
    let days = days(&s, q.date.as_deref())?;
    Ok(Html(page::render_node(
        s.mesh.id(),
        &node,
        page::NodeView {
            summary: summary.as_ref(),
            problems: &problems,
            runs: &runs,
            days: q.date.is_some().then_some(&days),
            operate: crate::may_operate(&s, &headers),
        },
    ))
    .into_response())
}

/// Every node the market knows, with its last run and open problems.
async fn node_index(m: &MarketHandle) -> Result<Vec<page::NodeLine>, ApiError> {
    let problems = m.problems().await?;
    let mut open: std::collections::HashMap<&str, usize> = Default::default();
    for p in problems.iter().filter(|p| p.is_open()) {
        for n in p.nodes.keys() {
            *open.entry(n.as_str()).or_default() += 1;
        }
    }
    Ok(m.nodes()
        .await?
        .into_iter()
        .map(|(name, h)| page::NodeLine {
            open: open.get(name.as_str()).copied().unwrap_or(0),
            name,
            summary: h,
        })
        .collect())
}

pub(crate) async fn nodes_index(State(s): State<Shared>) -> Answer {
    let m = market(&s)?;
    let list: Vec<serde_json::Value> = node_index(m)
        .await?
        .iter()
        .map(|n| {
            json!({
                "node": n.name,
                "environment": n.summary.environment,
                "first_seen": gemba_market::time::format_ms(n.summary.first_seen_ms),
                "last_seen": gemba_market::time::format_ms(n.summary.last_seen_ms),
                "runs": n.summary.runs,
                "failed_runs": n.summary.failed_runs,
                "open_problems": n.open,
                "retired": n.summary.retired.as_ref().map(|r| json!({
                    "by": r.by,
                    "at": gemba_market::time::format_ms(r.at_ms),
                })),
                "backfilled": n.summary.backfilled,
            })
        })
        .collect();
    Ok(Json(json!({ "nodes": list })).into_response())
}

pub(crate) async fn nodes_page(State(s): State<Shared>) -> Answer {
    let m = market(&s)?;
    let list = node_index(m).await?;
    Ok(Html(page::render_nodes(s.mesh.id(), &list, m.now_ms())).into_response())
}

/// Retires a node: it leaves every open problem, and is not missed when
/// it stops reporting (its runs stay).
pub(crate) async fn retire_node(
    State(s): State<Shared>,
    Path(node): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let m = market(&s)?;
    node_name(&node)?;
    let by = s.actor(&headers);
    let touched = m.retire(&node, &by).await?;
    let mut changed = Vec::new();
    for id in touched {
        if let Some(p) = m.problem(id).await? {
            changed.push(json!({"id": p.label(), "status": p.status.as_str(), "title": p.title}));
        }
    }
    Ok(Json(json!({ "retired": node, "by": by, "problems": changed })).into_response())
}

/// A run's page: its resources, the problems that name it, and its log
/// lines for readers who may see program output.
pub(crate) async fn run_page(
    State(s): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let m = market(&s)?;
    let row = stored_run(m, &key).await?;
    let run = serde_json::from_str::<gemba_market::Run>(&row.body)
        .map_err(|e| ApiError::unavailable(format!("run {key} is stored unreadably: {e}")))?;
    let problems: Vec<Problem> = m
        .problems()
        .await?
        .into_iter()
        .filter(|p| p.runs.contains(&key) || p.sample.run == key)
        .collect();
    Ok(Html(page::render_run(
        s.mesh.id(),
        &run,
        &problems,
        crate::holds_token(&s, &headers),
    ))
    .into_response())
}
