//! Checks, the plan and escalations: JSON under `/api/v1` and console
//! pages. Served by nodes with the server role; an agent answers 503 with
//! a message saying so.

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use gemba_escalator::{EscalatorHandle, Phase};
use serde_json::json;

use crate::console::{ago, now_unix, utc_time};
use axum::routing::{get, post};
use axum::Router;

use crate::respond::{Answer, ApiError};
use crate::svg::esc;
use crate::{holds_token, Shared};

/// The converge stage's routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/checks", get(checks))
        .route("/api/v1/plan", get(plan))
        .route("/api/v1/journal", get(journal))
        .route("/api/v1/escalations", get(escalations))
        .route("/api/v1/escalations/{id}", get(escalation))
        .route("/api/v1/escalations/{id}/approve", post(approve))
        .route("/api/v1/scopes/{scope}/ack", post(ack))
        .route("/checks", get(checks_page))
        .route("/escalations", get(escalations_page))
        .route("/escalations/{id}", get(escalation_page))
        .route("/plan", get(plan_page))
}

fn server(s: &Shared) -> Result<&EscalatorHandle, ApiError> {
    s.escalator.as_ref().ok_or_else(|| {
        ApiError::unavailable(format!("node {} runs no server role (node.server = false): ask a server for checks and escalations", s.mesh.id()))
    })
}

/// On an agent, console pages explain where the server's pages are.
fn agent_page(s: &Shared) -> Response {
    {
        let mut r = page(
            s,
            "no server role",
            &format!(
                r#"<p id="agent-only">Node {} is an agent: it runs its own checks and publishes their results in gossip, but it runs no escalator (<code>node.server = false</code>). Open the console of a server node for checks, escalations and the plan.</p>"#,
                esc(s.mesh.id())
            ),
        );
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r
    }
}

/// What stands in for program output a request may not see.
const OUTPUT_HIDDEN: &str =
    "(output hidden: this node has an API token and the request did not send it)";

fn hide_check_output(checks: &mut [gemba_escalator::CheckResult]) {
    for c in checks {
        c.output = OUTPUT_HIDDEN.into();
        c.perf.clear();
    }
}

fn hide_step_output(e: &mut gemba_escalator::Escalation) {
    for st in &mut e.steps {
        if !st.output.is_empty() {
            st.output = OUTPUT_HIDDEN.into();
        }
    }
}

pub async fn checks(State(s): State<Shared>, headers: HeaderMap) -> Answer {
    let h = server(&s)?;
    let mut checks = h.checks().await;
    checks.sort_by(|a, b| (b.state, &a.scope, &a.check).cmp(&(a.state, &b.scope, &b.check)));
    if !holds_token(&s, &headers) {
        hide_check_output(&mut checks);
    }
    Ok(Json(json!({ "served_by": s.mesh.id(), "checks": checks })).into_response())
}

pub async fn plan(State(s): State<Shared>, headers: HeaderMap) -> Answer {
    let h = server(&s)?;
    match h.plan().await {
        Some(mut p) => {
            if !holds_token(&s, &headers) {
                for c in p.scopes.iter_mut().flat_map(|sp| sp.checks.iter_mut()) {
                    c.output = OUTPUT_HIDDEN.into();
                }
            }
            Ok(Json(json!({ "served_by": s.mesh.id(), "plan": p })).into_response())
        }
        None => Err(ApiError::unavailable("the escalator is not running")),
    }
}

pub async fn escalations(State(s): State<Shared>, headers: HeaderMap) -> Answer {
    let h = server(&s)?;
    match h.escalations(100).await {
        Ok(mut list) => {
            if !holds_token(&s, &headers) {
                list.iter_mut().for_each(hide_step_output);
            }
            Ok(Json(json!({ "served_by": s.mesh.id(), "escalations": list })).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn journal(
    State(s): State<Shared>,
    crate::params::Query(q): crate::params::Query<crate::params::Journal>,
) -> Answer {
    let h = server(&s)?;
    let limit = q.limit.unwrap_or(100).min(1000);
    match h.journal(limit).await {
        Ok(rows) => Ok(Json(json!({ "served_by": s.mesh.id(), "journal": rows })).into_response()),
        Err(e) => Err(e.into()),
    }
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad(format!("{id:?} is not an escalation id (a number)")))
}

/// An escalation with its journal, and the incident that gathers it
/// (`incident`: its number, or null).
pub async fn escalation(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let h = server(&s)?;
    let id = parse_id(&id)?;
    let Some(mut v) = gemba_views::escalation::escalation(h, s.timeline.as_ref(), id).await? else {
        return Err(ApiError::not_found(format!("no escalation {id}")));
    };
    if !holds_token(&s, &headers) {
        hide_step_output(&mut v.view.escalation);
    }
    /// The escalator's record with what the timeline knows of it.
    #[derive(serde::Serialize)]
    struct Joined<'a> {
        #[serde(flatten)]
        view: &'a gemba_escalator::EscalationView,
        incident: Option<i64>,
    }
    Ok(Json(Joined {
        view: &v.view,
        incident: v.incident,
    })
    .into_response())
}

pub async fn approve(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let h = server(&s)?;
    let id = parse_id(&id)?;
    match h.approve(id, &s.actor(&headers)).await {
        Ok(()) => Ok(Json(json!({ "approved": id })).into_response()),
        Err(e) => Err(e.into()),
    }
}

pub async fn ack(State(s): State<Shared>, Path(scope): Path<String>, headers: HeaderMap) -> Answer {
    let h = server(&s)?;
    let scope = match scope.parse() {
        Ok(sc) => sc,
        Err(e) => return Err(ApiError::bad(e)),
    };
    match h.ack(scope, &s.actor(&headers)).await {
        Ok(id) => Ok(Json(json!({ "acknowledged": id })).into_response()),
        Err(e) => Err(e.into()),
    }
}

fn page(s: &Shared, title: &str, body: &str) -> Response {
    Html(crate::console::shell(s.mesh.id(), title, body, Some(5))).into_response()
}

fn when(ms: u64) -> String {
    let now = now_unix();
    format!("{} ({})", utc_time(ms / 1000), ago(ms / 1000, now))
}

pub async fn checks_page(State(s): State<Shared>, headers: HeaderMap) -> Answer {
    let Some(h) = s.escalator.as_ref() else {
        return Ok(agent_page(&s));
    };
    let mut checks = h.checks().await;
    if !holds_token(&s, &headers) {
        hide_check_output(&mut checks);
    }
    checks.sort_by(|a, b| (b.state, &a.scope, &a.check).cmp(&(a.state, &b.scope, &b.check)));
    let mut t = String::from(
        r#"<table id="checks"><tr><th>check</th><th>scope</th><th>status</th><th>state</th><th>since</th><th>level</th><th>output</th><th>observer</th></tr>"#,
    );
    for c in &checks {
        let flap = if c.flapping {
            format!(
                r#" <span class="flap">flapping {:.0} %</span>"#,
                c.flap_percent
            )
        } else {
            String::new()
        };
        let trust = if c.trusted {
            ""
        } else {
            r#" <span class="flap">untrusted observer</span>"#
        };
        let _ = write!(
            t,
            r#"<tr class="check"><td>{}</td><td>{}</td><td class="st-{st}">{st}</td><td class="st-{hs}">{hs}{flap}{trust}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&c.check),
            esc(&c.scope.to_string()),
            when(c.since_ms),
            c.level.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
            esc(&c.output),
            esc(&c.observer),
            st = c.status.as_str(),
            hs = c.state.as_str(),
        );
    }
    t.push_str("</table>");
    if checks.is_empty() {
        t = r#"<p id="no-checks" class="muted">no check results yet</p>"#.into();
    }
    Ok(page(&s, "checks", &t))
}

pub async fn escalations_page(State(s): State<Shared>) -> Answer {
    let Some(h) = s.escalator.as_ref() else {
        return Ok(agent_page(&s));
    };
    let list = match h.escalations(100).await {
        Ok(l) => l,
        Err(e) => return Err(e.into()),
    };
    let mut t = String::from(
        r#"<table id="escalations"><tr><th>id</th><th>scope</th><th>phase</th><th>attempt</th><th>levels</th><th>checks</th><th>opened</th></tr>"#,
    );
    for e in &list {
        let _ = write!(
            t,
            r#"<tr class="escalation"><td><a href="/escalations/{id}">{id}</a></td><td>{}</td><td class="ph-{ph}">{ph}{why}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&e.scope.to_string()),
            e.attempt,
            e.chain
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(" → "),
            esc(&e.checks.join(", ")),
            when(e.opened_ms),
            id = e.id,
            ph = e.phase.name(),
            why = match (&e.phase, &e.held_because) {
                (Phase::Held { .. }, Some(w)) => format!(": {}", esc(w)),
                _ => String::new(),
            },
        );
    }
    t.push_str("</table>");
    if list.is_empty() {
        t = r#"<p id="no-escalations" class="muted">no escalations yet</p>"#.into();
    }
    Ok(page(&s, "escalations", &t))
}

pub async fn escalation_page(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let Some(h) = s.escalator.as_ref() else {
        return Ok(agent_page(&s));
    };
    let id = parse_id(&id)?;
    let Some(mut x) = gemba_views::escalation::escalation(h, s.timeline.as_ref(), id).await? else {
        return Err(ApiError::not_found(format!("no escalation {id}")));
    };
    let shows_output = holds_token(&s, &headers);
    if !shows_output {
        hide_step_output(&mut x.view.escalation);
    }
    if let Some(t) = s.timeline.as_ref() {
        x = x.with_charts(t, &h.policy).await;
    }
    let v = &x.view;
    let e = &v.escalation;
    let mut b = format!(
        r#"<p>scope <b>{}</b> · phase <b class="ph-{ph}">{ph}</b> · attempt {} · checks {}</p>"#,
        esc(&e.scope.to_string()),
        e.attempt,
        esc(&e.checks.join(", ")),
        ph = e.phase.name(),
    );
    if let Some(n) = x.incident {
        let _ = write!(
            b,
            r#"<p id="incident">part of <a href="/incidents/{n}">incident I-{n}</a></p>"#
        );
    }
    if let Phase::AwaitingApproval { level } = e.phase {
        let _ = write!(
            b,
            "<p>level {level} waits for approval: <code>gemba approve {id}</code></p>"
        );
    }
    if let Phase::Held { .. } = e.phase {
        let why = e
            .held_because
            .as_deref()
            .map(|w| format!(r#"<b class="ph-held">{}</b>; "#, esc(w)))
            .unwrap_or_default();
        let _ = write!(
            b,
            r#"<p id="held">{why}held until acknowledged: <code>gemba ack {}</code></p>"#,
            esc(&e.scope.to_string())
        );
    }
    b.push_str(
        r#"<h2>timeline</h2><table id="timeline"><tr><th>time</th><th>what</th><th></th></tr>"#,
    );
    for j in &v.journal {
        let _ = write!(
            b,
            r#"<tr class="entry"><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            when(j.at_ms),
            esc(&j.kind),
            esc(&j.text)
        );
    }
    b.push_str(r#"</table><h2>steps</h2><table id="steps"><tr><th>attempt</th><th>level</th><th>started</th><th>outcome</th><th>output</th></tr>"#);
    for st in &e.steps {
        let outcome = st
            .outcome
            .as_ref()
            .map(|o| o.describe())
            .unwrap_or_else(|| "running".into());
        let _ = write!(
            b,
            r#"<tr class="step"><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>"#,
            st.attempt,
            st.level,
            esc(&st.name),
            when(st.started_ms),
            esc(&outcome),
            esc(&st.output),
        );
    }
    b.push_str("</table>");
    b.push_str(&crate::learn::pages::escalation_charts(&s, &x, shows_output).await);
    Ok(page(&s, &format!("escalation {id}"), &b))
}

pub async fn plan_page(State(s): State<Shared>) -> Answer {
    let Some(h) = s.escalator.as_ref() else {
        return Ok(agent_page(&s));
    };
    let Some(p) = h.plan().await else {
        return Err(ApiError::unavailable("the escalator is not running"));
    };
    let mut b = format!("<p>mode <b>{}</b></p>", esc(&p.mode));
    if p.scopes.is_empty() {
        b.push_str(
            r#"<p id="no-plan" class="muted">nothing to do: no failing checks with a level</p>"#,
        );
    } else {
        b.push_str(r#"<table id="plan"><tr><th>scope</th><th>would run</th><th>status</th><th>when</th><th>because</th></tr>"#);
        for sp in &p.scopes {
            let because: Vec<String> = sp
                .checks
                .iter()
                .map(|c| match &c.ignored {
                    None => format!("{} (level {})", c.id, c.level),
                    Some(i) => format!("{} (ignored: {})", c.id, i.as_str()),
                })
                .collect();
            let _ = write!(
                b,
                r#"<tr class="scope-plan"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                esc(&sp.scope.to_string()),
                esc(&sp.chain.join(" → ")),
                esc(&sp.status),
                sp.at_ms.map(when).unwrap_or_default(),
                esc(&because.join(", ")),
            );
        }
        b.push_str("</table>");
    }
    if let Ok(rows) = h.journal(20).await {
        b.push_str(r#"<h2>recent decisions</h2><table id="journal"><tr><th>time</th><th>scope</th><th>what</th><th></th></tr>"#);
        for j in &rows {
            let esc_link = j
                .escalation
                .map(|i| format!(r#" <a href="/escalations/{i}">#{i}</a>"#))
                .unwrap_or_default();
            let _ = write!(
                b,
                r#"<tr class="entry"><td>{}</td><td>{}{esc_link}</td><td>{}</td><td>{}</td></tr>"#,
                when(j.at_ms),
                esc(&j.scope),
                esc(&j.kind),
                esc(&j.text)
            );
        }
        b.push_str("</table>");
    }
    Ok(page(&s, "plan", &b))
}
