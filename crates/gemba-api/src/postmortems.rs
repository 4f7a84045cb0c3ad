//! Post-mortems over HTTP and in the console.
//!
//! Operators (the API token) start one on an incident, and may do what any
//! role may: `/api/v1/incidents/{id}/postmortem...`. Participants need no
//! account: their personal link's token opens `/pm/{token}` (a form) and
//! `/api/v1/pm/{token}` (the same through the API); a ballot's token opens
//! `/ballots/{token}` and `/api/v1/ballots/{token}`. Those paths carry
//! their own capability and do not need the API token; the browser checks
//! (same origin, JSON bodies) still apply to them.

use gemba_core::markdown::{cell as md_cell, item as md_item, text as md};
use std::fmt::Write;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::Json;
use gemba_store::ActionRow;
use gemba_timeline::event::format_ms;
use gemba_timeline::incident::{self, Incident};
use gemba_timeline::postmortem::{
    self, Actor, Change, Count, NewAction, Phase, PmError, Postmortem, Seat, Setup, Vote,
};
use serde_json::json;

use crate::converge::{Answer, ApiError};
use crate::events::timeline;
use crate::svg::esc;
use crate::Shared;

/// Paths that carry their own capability instead of the API token.
pub(crate) fn capability_path(path: &str) -> bool {
    path.starts_with("/api/v1/pm/") || path.starts_with("/api/v1/ballots/")
}

/// The console pages a participant's link or a ballot opens.
pub(crate) fn capability_page(path: &str) -> bool {
    path.starts_with("/pm/") || path.starts_with("/ballots/")
}

impl From<PmError> for ApiError {
    fn from(e: PmError) -> ApiError {
        let code = match &e {
            PmError::Invalid(_) => StatusCode::BAD_REQUEST,
            PmError::Forbidden(_) => StatusCode::FORBIDDEN,
            PmError::NotFound(_) => StatusCode::NOT_FOUND,
            PmError::Conflict(_) => StatusCode::CONFLICT,
            PmError::Unclaimed(_) => StatusCode::FORBIDDEN,
            PmError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(code, e.to_string())
    }
}

/// The day of a time, `2026-12-15`.
fn day(ms: u64) -> String {
    let t = format_ms(ms);
    t.get(..10).unwrap_or(&t).to_string()
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn operator(s: &Shared, headers: &HeaderMap) -> Actor {
    Actor::Operator(s.actor(headers))
}

/// A change as the API and the forms send it: one of a share (any of
/// success, failure, better), a proposal, notes, a timer (section and
/// minutes), or a phase.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    success: Option<String>,
    failure: Option<String>,
    better: Option<String>,
    proposal: Option<String>,
    notes: Option<String>,
    section: Option<String>,
    minutes: Option<serde_json::Value>,
    phase: Option<String>,
}

fn change_of(body: &[u8]) -> Result<Change, ApiError> {
    const SHAPE: &str = "the body is one of {\"success\", \"failure\", \"better\"}, {\"proposal\"}, {\"notes\"}, {\"section\", \"minutes\"} or {\"phase\": \"voting\" | \"closed\"}";
    let b: ChangeBody = serde_json::from_slice(body).map_err(|e| bad(format!("{SHAPE}: {e}")))?;
    let share = b.success.is_some() || b.failure.is_some() || b.better.is_some();
    let timer = b.section.is_some() || b.minutes.is_some();
    let kinds = [
        share,
        b.proposal.is_some(),
        b.notes.is_some(),
        timer,
        b.phase.is_some(),
    ]
    .iter()
    .filter(|k| **k)
    .count();
    if kinds != 1 {
        return Err(bad(format!("{SHAPE}: one kind of change at a time")));
    }
    if share {
        return Ok(Change::Share {
            success: b.success,
            failure: b.failure,
            better: b.better,
        });
    }
    if let Some(p) = b.proposal {
        return Ok(Change::Propose(p));
    }
    if let Some(n) = b.notes {
        return Ok(Change::Notes(n));
    }
    if timer {
        let minutes = match &b.minutes {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|m| *m <= u64::from(u32::MAX))
        .ok_or_else(|| bad("minutes: a whole number of minutes"))?;
        return Ok(Change::Timer {
            section: b.section.unwrap_or_default(),
            minutes: minutes as u32,
        });
    }
    match b.phase.as_deref() {
        Some("voting") => Ok(Change::OpenVoting),
        Some("closed") => Ok(Change::CloseVoting),
        Some(other) => Err(bad(format!(
            "phase {:?}: say voting (open voting) or closed (close it)",
            other.chars().take(40).collect::<String>()
        ))),
        None => Err(bad(SHAPE)),
    }
}

fn action_of(body: &[u8]) -> Result<NewAction, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "the body is {{\"proposal\": <id>, \"owner\": <name>, \"due\": \"2026-12-01\"}}: {e}"
        ))
    })
}

fn timer_json(pm: &Postmortem) -> serde_json::Value {
    match &pm.body.timer {
        Some(t) => json!({
            "section": t.section,
            "minutes": t.minutes,
            "started": format_ms(t.started_ms),
            "ends": format_ms(t.ends_ms()),
            "ends_ms": t.ends_ms(),
        }),
        None => serde_json::Value::Null,
    }
}

pub(crate) fn action_json(a: &ActionRow) -> serde_json::Value {
    json!({
        "id": a.id,
        "incident": a.incident,
        "proposal": a.proposal,
        "text": a.text,
        "owner": a.owner,
        "due": format_ms(a.due_ms),
        "due_ms": a.due_ms,
        "created": format_ms(a.created_ms),
        "done": a.done_ms.map(format_ms),
        "done_by": a.done_by,
    })
}

/// A post-mortem as JSON; `content` adds what people wrote (for
/// participants and operators, and for everyone once it is closed).
async fn pm_json(
    s: &Shared,
    pm: &Postmortem,
    content: bool,
) -> Result<serde_json::Value, ApiError> {
    let t = timeline(s)?;
    let content = content || pm.phase == Phase::Closed;
    let b = &pm.body;
    let people: Vec<serde_json::Value> = b
        .participants
        .iter()
        .map(|p| {
            let mut v = json!({
                "name": p.name,
                "roles": pm.roles(&p.name),
                "contributed": p.contributed(),
            });
            if content {
                v["success"] = json!(p.success);
                v["failure"] = json!(p.failure);
                v["better"] = json!(p.better);
            }
            v
        })
        .collect();
    let tally = postmortem::tally(t, pm).await?;
    let actions = t
        .store()
        .actions(false, Some(pm.incident))
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let mut v = json!({
        "incident": pm.incident,
        "phase": pm.phase.as_str(),
        "expires": format_ms(pm.expires_ms),
        "expired": pm.expired(t.now_ms()),
        "facilitator": b.facilitator,
        "note_keeper": b.note_keeper,
        "time_keeper": b.time_keeper,
        "participants": people,
        "missing": pm.missing(),
        "proposals": b.proposals.iter().map(|p| json!({"id": p.id, "text": p.text, "by": p.by, "at": format_ms(p.at_ms)})).collect::<Vec<_>>(),
        "timer": timer_json(pm),
        "ballots": pm.ballots,
        "ballots_cast": pm.ballots_cast,
        "voting_opened": b.voting_ms.map(format_ms),
        "closed": b.closed_ms.map(format_ms),
        "tally": tally,
        "actions": actions.iter().map(action_json).collect::<Vec<_>>(),
    });
    if content {
        v["notes"] = json!(b.notes);
    }
    Ok(v)
}

async fn must_get(s: &Shared, id: i64) -> Result<Postmortem, ApiError> {
    postmortem::get(timeline(s)?, id).await?.ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("incident I-{id} has no post-mortem"),
        )
    })
}

/// `POST /api/v1/incidents/{id}/postmortem`: starts it; the answer holds
/// every participant's one-time link, shown this once. Each claims its
/// seat once and gets a link of its own, which the starter never sees.
pub(crate) async fn start(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let t = timeline(&s)?;
    let id = crate::incidents::id_of(&id)?;
    let setup: Setup = serde_json::from_slice(&body).map_err(|e| {
        bad(format!("the body is {{\"facilitator\", \"note_keeper\", \"time_keeper\", \"participants\": [...], \"open_for\": \"14d\"}}: {e}"))
    })?;
    let links = postmortem::start(t, id, &setup, operator(&s, &headers).name()).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "incident": id,
            "links": links.iter().map(|(name, token)| json!({
                "name": name,
                "token": token,
                "path": format!("/pm/{token}"),
            })).collect::<Vec<_>>(),
            "note": "hand each participant theirs: a link works once, to claim the seat, and gives its holder a link of their own (if someone finds theirs claimed already, it was not them who claimed it)",
        })),
    )
        .into_response())
}

/// `GET /api/v1/incidents/{id}/postmortem`
pub(crate) async fn one(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let pm = must_get(&s, crate::incidents::id_of(&id)?).await?;
    let content = crate::holds_token(&s, &headers);
    Ok(Json(pm_json(&s, &pm, content).await?).into_response())
}

/// `POST /api/v1/incidents/{id}/postmortem/change`: an operator's change.
pub(crate) async fn operator_change(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let id = crate::incidents::id_of(&id)?;
    let change = change_of(&body)?;
    let pm = postmortem::change(timeline(&s)?, id, &operator(&s, &headers), &change).await?;
    Ok(Json(pm_json(&s, &pm, true).await?).into_response())
}

/// `POST /api/v1/incidents/{id}/postmortem/actions`
pub(crate) async fn operator_action(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let id = crate::incidents::id_of(&id)?;
    let new = action_of(&body)?;
    let aid = postmortem::add_action(timeline(&s)?, id, &operator(&s, &headers), &new).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": aid}))).into_response())
}

async fn seat_of(s: &Shared, token: &str) -> Result<Seat, ApiError> {
    Ok(postmortem::seat(timeline(s)?, token).await?)
}

fn seat_json(seat: &Seat, mut v: serde_json::Value) -> serde_json::Value {
    v["you"] = json!(seat.name);
    v["your_roles"] = json!(seat.postmortem.roles(&seat.name));
    if let Some(me) = seat
        .postmortem
        .body
        .participants
        .iter()
        .find(|p| p.name == seat.name)
    {
        v["yours"] = json!({"success": me.success, "failure": me.failure, "better": me.better});
    }
    if let Some(b) = &seat.ballot {
        v["ballot"] =
            json!({"token": b, "path": format!("/ballots/{b}"), "cast": seat.ballot_cast});
    }
    v
}

/// `GET /api/v1/pm/{token}`: a participant's view.
pub(crate) async fn seat(State(s): State<Shared>, Path(token): Path<String>) -> Answer {
    let seat = seat_of(&s, &token).await?;
    let v = pm_json(&s, &seat.postmortem, true).await?;
    Ok(Json(seat_json(&seat, v)).into_response())
}

/// `POST /api/v1/pm/{token}/claim`: claims a seat with its one-time
/// token; the answer holds the seat's own link, shown this once.
pub(crate) async fn claim(State(s): State<Shared>, Path(token): Path<String>) -> Answer {
    let (name, new) = postmortem::claim(timeline(&s)?, &token).await?;
    Ok(Json(json!({
        "you": name,
        "token": new,
        "path": format!("/pm/{new}"),
        "note": "this is your link, shown only now: keep it (bookmark it); the one you claimed with no longer works",
    }))
    .into_response())
}

/// `POST /api/v1/pm/{token}`: a participant's change.
pub(crate) async fn seat_change(
    State(s): State<Shared>,
    Path(token): Path<String>,
    body: Bytes,
) -> Answer {
    let seat = seat_of(&s, &token).await?;
    let change = change_of(&body)?;
    let actor = Actor::Participant(seat.name.clone());
    if change == postmortem::Change::CloseVoting {
        // The facilitator's link opens the sealed ballots.
        postmortem::close_with_link(timeline(&s)?, &token).await?;
    } else {
        postmortem::change(timeline(&s)?, seat.postmortem.incident, &actor, &change).await?;
    }
    let seat = seat_of(&s, &token).await?;
    let v = pm_json(&s, &seat.postmortem, true).await?;
    Ok(Json(seat_json(&seat, v)).into_response())
}

/// `POST /api/v1/pm/{token}/actions`: the facilitator makes an action
/// item of a proposal.
pub(crate) async fn seat_action(
    State(s): State<Shared>,
    Path(token): Path<String>,
    body: Bytes,
) -> Answer {
    let seat = seat_of(&s, &token).await?;
    let new = action_of(&body)?;
    let actor = Actor::Participant(seat.name.clone());
    let aid = postmortem::add_action(timeline(&s)?, seat.postmortem.incident, &actor, &new).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": aid}))).into_response())
}

/// `POST /api/v1/pm/{token}/send` with `{"to"}`: the facilitator sends
/// the notes out once the post-mortem is closed.
pub(crate) async fn seat_send(
    State(s): State<Shared>,
    Path(token): Path<String>,
    body: Bytes,
) -> Answer {
    let seat = seat_of(&s, &token).await?;
    let pm = &seat.postmortem;
    if !pm.roles(&seat.name).contains(&"facilitator") {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "only the facilitator ({}) sends the notes out",
                pm.body.facilitator
            ),
        ));
    }
    if pm.phase != Phase::Closed {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "the notes go out once voting is closed".into(),
        ));
    }
    send_notes(&s, pm.incident, &body).await
}

/// `POST /api/v1/incidents/{id}/postmortem/send` with `{"to"}`.
pub(crate) async fn operator_send(
    State(s): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let id = crate::incidents::id_of(&id)?;
    must_get(&s, id).await?;
    send_notes(&s, id, &body).await
}

async fn send_notes(s: &Shared, id: i64, body: &[u8]) -> Answer {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct To {
        to: String,
    }
    let to: To = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is {{\"to\": \"all\" | \"smtp\" | \"webhook\" | \"command\" | <number>}}: {e}")))?;
    let targets = crate::events::notify_targets(s, &to.to)?;
    let export = export(s, id).await?;
    let subject = format!("gemba post-mortem: I-{id} {}", export.title);
    let images: Vec<gemba_escalator::notify::Image> = export
        .charts
        .iter()
        .map(|(name, png)| gemba_escalator::notify::Image {
            name: name.clone(),
            png: png.clone(),
        })
        .collect();
    let mut sent = 0;
    let mut errors = Vec::new();
    for target in targets {
        let m = gemba_escalator::notify::Outgoing {
            subject: subject.clone(),
            text: export.markdown.clone(),
            json: json!({"subject": subject, "text": export.markdown, "markdown": export.markdown, "incident": id}),
            stdin: export.markdown.clone().into_bytes(),
            env: vec![("GEMBA_POSTMORTEM".into(), id.to_string())],
            images: images.clone(),
        };
        match gemba_escalator::notify::deliver(target, m).await {
            Ok(()) => sent += 1,
            Err(e) => errors.push(e),
        }
    }
    if sent == 0 {
        return Err(ApiError(
            StatusCode::BAD_GATEWAY,
            format!("not sent: {}", errors.join("; ")),
        ));
    }
    Ok(Json(json!({"sent": sent, "failed": errors, "charts": images.len()})).into_response())
}

/// `GET /api/v1/ballots/{token}`
pub(crate) async fn ballot(State(s): State<Shared>, Path(token): Path<String>) -> Answer {
    let view = postmortem::ballot(timeline(&s)?, &token).await?;
    let pm = &view.postmortem;
    Ok(Json(json!({
        "incident": pm.incident,
        "phase": pm.phase.as_str(),
        "cast": view.cast,
        "proposals": pm.body.proposals.iter().map(|p| json!({"id": p.id, "text": p.text})).collect::<Vec<_>>(),
        "how": "approve any number of proposals: {\"approve\": [ids]}",
    }))
    .into_response())
}

/// `POST /api/v1/ballots/{token}` with `{"approve": [ids]}`.
pub(crate) async fn cast(
    State(s): State<Shared>,
    Path(token): Path<String>,
    body: Bytes,
) -> Answer {
    let vote: Vote = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("the body is {{\"approve\": [proposal ids]}}: {e}")))?;
    if vote.approve.len() > postmortem::MAX_PROPOSALS {
        return Err(bad(format!(
            "approve: at most {} proposals",
            postmortem::MAX_PROPOSALS
        )));
    }
    postmortem::cast(timeline(&s)?, &token, &vote).await?;
    Ok(
        Json(json!({"cast": true, "note": "counted; the tally is shown when voting closes"}))
            .into_response(),
    )
}

/// `GET /api/v1/actions?open=true`
pub(crate) async fn actions(State(s): State<Shared>, RawQuery(raw): RawQuery) -> Answer {
    let t = timeline(&s)?;
    let mut open_only = false;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "open" => open_only = matches!(v.as_ref(), "true" | "1" | "yes"),
            other => {
                return Err(bad(format!(
                    "unknown parameter {:?}; known: open",
                    other.chars().take(64).collect::<String>()
                )))
            }
        }
    }
    let all = t
        .store()
        .actions(open_only, None)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(json!({"actions": all.iter().map(action_json).collect::<Vec<_>>()})).into_response())
}

/// `POST /api/v1/actions/{id}` with `{"done": true}`.
pub(crate) async fn action_done(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Done {
        done: bool,
    }
    let id: i64 = id
        .trim_start_matches(['A', 'a', '-'])
        .parse()
        .map_err(|_| bad("an action item id is a number (or A-3)"))?;
    let d: Done = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("the body is {{\"done\": true}}: {e}")))?;
    if !d.done {
        return Err(bad("an action item can only be marked done"));
    }
    postmortem::finish_action(timeline(&s)?, id, operator(&s, &headers).name()).await?;
    Ok(Json(json!({"id": id, "done": true})).into_response())
}

/// The Markdown notes and the charts they show, by file name.
pub(crate) struct Export {
    pub title: String,
    pub markdown: String,
    pub charts: Vec<(String, Vec<u8>)>,
}

/// `GET /api/v1/incidents/{id}/postmortem/export`: the notes as Markdown
/// and the charts as PNG (base64), for `gemba postmortem export`.
pub(crate) async fn export_json(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    use base64::Engine;
    let id = crate::incidents::id_of(&id)?;
    may_export(&s, id, &headers).await?;
    let e = export(&s, id).await?;
    Ok(Json(json!({
        "markdown": e.markdown,
        "charts": e.charts.iter().map(|(name, png)| json!({
            "name": name,
            "base64": base64::engine::general_purpose::STANDARD.encode(png),
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `GET /api/v1/incidents/{id}/postmortem.md`
pub(crate) async fn export_markdown(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let id = crate::incidents::id_of(&id)?;
    may_export(&s, id, &headers).await?;
    let e = export(&s, id).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/markdown; charset=utf-8",
        )],
        e.markdown,
    )
        .into_response())
}

/// What people wrote is public once the post-mortem closes; before, the
/// notes go only to holders of the API token.
async fn may_export(s: &Shared, id: i64, headers: &HeaderMap) -> Result<(), ApiError> {
    let pm = must_get(s, id).await?;
    if pm.phase == Phase::Closed || crate::holds_token(s, headers) {
        return Ok(());
    }
    Err(ApiError(
        StatusCode::FORBIDDEN,
        "the notes are public once the post-mortem closes; before that, send the API token".into(),
    ))
}

pub(crate) async fn export(s: &Shared, id: i64) -> Result<Export, ApiError> {
    let t = timeline(s)?;
    let pm = must_get(s, id).await?;
    let (i, entries) = crate::incidents::load(s, id).await?;
    let charts = crate::incidents::charts(s, &i).await;
    let mut pngs = Vec::new();
    for (n, chart) in charts.into_iter().enumerate() {
        let title = chart.title.clone();
        if let Ok(Ok(png)) = tokio::task::spawn_blocking(move || chart.png()).await {
            pngs.push((format!("chart-{}.png", n + 1), title, png));
        }
    }
    let tally = postmortem::tally(t, &pm).await?;
    let actions = t
        .store()
        .actions(false, Some(id))
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let markdown = markdown(&i, &pm, &entries, &pngs, tally.as_deref(), &actions);
    Ok(Export {
        title: i.body.title.clone(),
        markdown,
        charts: pngs.into_iter().map(|(name, _, png)| (name, png)).collect(),
    })
}

fn markdown(
    i: &Incident,
    pm: &Postmortem,
    entries: &[incident::Entry],
    charts: &[(String, String, Vec<u8>)],
    tally: Option<&[Count]>,
    actions: &[ActionRow],
) -> String {
    let b = &pm.body;
    let mut m = String::new();
    let _ = writeln!(m, "# Post-mortem: I-{} {}\n", i.id, md(&i.body.title));
    let _ = writeln!(
        m,
        "- Incident: I-{}, {}, opened {}{}",
        i.id,
        md(&i.body.severity),
        format_ms(i.opened_ms),
        i.closed_ms
            .map(|c| format!(", closed {}", format_ms(c)))
            .unwrap_or_else(|| ", still open".into())
    );
    if !i.body.scopes.is_empty() {
        let _ = writeln!(m, "- Scopes: {}", md(&i.body.scopes.join(", ")));
    }
    let _ = writeln!(
        m,
        "- Facilitator: {}; note keeper: {}; time keeper: {}",
        md(&b.facilitator),
        md(&b.note_keeper),
        md(&b.time_keeper)
    );
    let shared = b.participants.iter().filter(|p| p.contributed()).count();
    let _ = writeln!(
        m,
        "- Participants: {} ({shared} of {} shared a success, a failure and something to do better)",
        md(&b
            .participants
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")),
        b.participants.len()
    );
    let _ = writeln!(m, "- Post-mortem: {}\n", pm.phase.as_str());
    if !i.body.summary.trim().is_empty() {
        let _ = writeln!(m, "## Summary\n\n{}\n", md(i.body.summary.trim()));
    }
    if !b.notes.trim().is_empty() {
        let _ = writeln!(m, "## Notes\n\n{}\n", md(b.notes.trim()));
    }
    let _ = writeln!(m, "## Timeline\n");
    if entries.is_empty() {
        let _ = writeln!(m, "Nothing was recorded in its window.\n");
    } else {
        let _ = writeln!(m, "| time (UTC) | source | what |\n|---|---|---|");
        for e in entries {
            let _ = writeln!(
                m,
                "| {} | {} | {} |",
                format_ms(e.at_ms),
                md_cell(&e.source),
                md_cell(&e.text)
            );
        }
        m.push('\n');
    }
    if !charts.is_empty() {
        let _ = writeln!(m, "## Charts\n");
        for (name, title, _) in charts {
            let _ = writeln!(m, "![{}]({name})\n", md_cell(title));
        }
    }
    let _ = writeln!(m, "## The round\n");
    for p in &b.participants {
        let roles = pm.roles(&p.name);
        let _ = writeln!(
            m,
            "### {}{}\n",
            md(&p.name),
            if roles.is_empty() {
                String::new()
            } else {
                format!(" ({})", roles.join(", "))
            }
        );
        if !p.contributed() && p.success.is_empty() && p.failure.is_empty() && p.better.is_empty() {
            let _ = writeln!(m, "Did not share.\n");
            continue;
        }
        for (label, v) in [
            ("Success", &p.success),
            ("Failure", &p.failure),
            ("Do better", &p.better),
        ] {
            let text = if v.is_empty() { "-" } else { v.as_str() };
            let _ = writeln!(m, "- **{label}:** {}", md_item(text));
        }
        m.push('\n');
    }
    let _ = writeln!(m, "## The vote\n");
    match tally {
        None => {
            let _ = writeln!(m, "Proposals ({}), not voted on yet:\n", pm.phase.as_str());
            for p in &b.proposals {
                let _ = writeln!(m, "- {} (by {})", md_item(&p.text), md(&p.by));
            }
            m.push('\n');
        }
        Some(counts) => {
            let _ = writeln!(
                m,
                "{} of {} ballots cast, anonymously; each ballot approves any number of proposals.\n",
                pm.ballots_cast, pm.ballots
            );
            let _ = writeln!(m, "| proposal | approvals |\n|---|---|");
            for c in counts {
                let text = md_cell(&c.text);
                let _ = writeln!(
                    m,
                    "| {} | {} |",
                    if c.winner {
                        format!("**{text}** (chosen)")
                    } else {
                        text
                    },
                    c.approvals
                );
            }
            m.push('\n');
        }
    }
    let _ = writeln!(m, "## Action items\n");
    if actions.is_empty() {
        let _ = writeln!(m, "None yet.");
    }
    for a in actions {
        let _ = writeln!(
            m,
            "- [{}] {}: owner {}, due {}{}",
            if a.done_ms.is_some() { "x" } else { " " },
            md_item(&a.text),
            md(&a.owner),
            day(a.due_ms),
            a.done_ms
                .map(|d| format!(", done {}", day(d)))
                .unwrap_or_default()
        );
    }
    m
}

/// The little script behind the forms: each `form[data-post]` sends its
/// fields as JSON to that path (checkboxes named alike become a list of
/// numbers, a `data-list` field a list of words), then reloads, goes to
/// `data-done` or to the path the answer names in `data-go`, or shows the
/// answer's links (`data-show="links"`); a
/// refusal is shown beside the form. Timers count down.
pub(crate) const FORMS_JS: &str = r##"
(function(){
  document.querySelectorAll('form[data-post]').forEach(function(f){
    f.addEventListener('submit',async function(e){
      e.preventDefault();
      const o={};
      for(const el of f.elements){
        if(!el.name) continue;
        if(el.type==='checkbox'){o[el.name]=o[el.name]||[];if(el.checked)o[el.name].push(Number(el.value));}
        else if(el.dataset.list!==undefined){o[el.name]=el.value.split(/[\s,]+/).filter(function(x){return x;});}
        else if(el.dataset.number!==undefined){o[el.name]=Number(el.value);}
        else{o[el.name]=el.value;}
      }
      if(f.dataset.extra){Object.assign(o,JSON.parse(f.dataset.extra));}
      const out=f.querySelector('.out');
      out.textContent='sending…';
      let r;
      try{r=await fetch(f.dataset.post,{method:'POST',headers:{'content-type':'application/json'},body:JSON.stringify(o)});}
      catch(err){out.textContent='not sent: the node did not answer';return;}
      const j=await r.json().catch(function(){return {};});
      if(!r.ok){out.textContent=j.error||('refused: HTTP '+r.status);out.className='out refused';return;}
      if(f.dataset.show==='links'){
        out.textContent='';
        const p=document.createElement('p');p.textContent=j.note||'';out.appendChild(p);
        const ul=document.createElement('ul');ul.id='links';
        (j.links||[]).forEach(function(l){const li=document.createElement('li');const a=document.createElement('a');
          a.href=l.path;a.textContent=location.origin+l.path;li.textContent=l.name+': ';li.appendChild(a);ul.appendChild(li);});
        out.appendChild(ul);return;
      }
      if(f.dataset.go&&typeof j[f.dataset.go]==='string'&&j[f.dataset.go].startsWith('/')){location.href=j[f.dataset.go];return;}
      if(f.dataset.done){location.href=f.dataset.done;}else{location.reload();}
    });
  });
  function tick(){
    document.querySelectorAll('[data-ends]').forEach(function(el){
      const left=Math.round((Number(el.dataset.ends)-Date.now())/1000);
      const a=Math.abs(left),t=Math.floor(a/60)+':'+String(a%60).padStart(2,'0');
      el.textContent=left>=0?t+' left':'over by '+t;el.className=left>=0?'clock':'clock over';
    });
  }
  tick();setInterval(tick,1000);
})();
"##;

/// How a page loads [`FORMS_JS`] (served as `/assets/forms.js`).
const FORMS_SCRIPT: &str = r#"<script src="/assets/forms.js"></script>"#;

const PM_STYLE: &str = "<style>textarea{width:100%;max-width:46em;min-height:3.2em;font:inherit}form{margin:.4em 0 1em}.out{margin-left:.6em}.refused{color:#d62728;font-weight:600}.clock{font:600 1.6em ui-monospace,monospace}.over{color:#d62728}.yes{color:#1a7f37;font-weight:600}.no{color:#b87a00;font-weight:600}.card{border:1px solid #d0d7de;border-radius:6px;padding:.5em .8em;margin:.5em 0;max-width:60em}label{display:block;margin-top:.4em;font-weight:600}</style>";

fn page(s: &Shared, title: &str, body: &str) -> axum::response::Response {
    let body = format!("{PM_STYLE}{body}{FORMS_SCRIPT}");
    Html(crate::console::shell(s.mesh.id(), title, &body, None)).into_response()
}

/// A link or ballot refused, as a page with the reason and its status.
fn refused_page(s: &Shared, title: &str, e: PmError) -> axum::response::Response {
    let e = ApiError::from(e);
    let body = format!(r#"<p class="refused">{}</p>"#, esc(&e.1));
    (e.0, page(s, title, &body)).into_response()
}

fn participation_html(pm: &Postmortem) -> String {
    let mut b = String::from(
        r#"<table id="participation"><tr><th>participant</th><th>role</th><th>shared</th></tr>"#,
    );
    for p in &pm.body.participants {
        let _ = write!(
            b,
            r#"<tr class="person"><td>{}</td><td class="muted">{}</td><td class="{}">{}</td></tr>"#,
            esc(&p.name),
            esc(&pm.roles(&p.name).join(", ")),
            if p.contributed() { "yes" } else { "no" },
            if p.contributed() { "yes" } else { "not yet" },
        );
    }
    b.push_str("</table>");
    b
}

fn timer_html(pm: &Postmortem, now_ms: u64) -> String {
    match &pm.body.timer {
        Some(t) => format!(
            r#"<p>Section <b id="section">{}</b> ({} min, started {}): <span data-ends="{}" class="clock">{}</span></p>"#,
            esc(&t.section),
            t.minutes,
            format_ms(t.started_ms),
            t.ends_ms(),
            if now_ms < t.ends_ms() {
                format!("{} min left", (t.ends_ms() - now_ms).div_ceil(60_000))
            } else {
                "over".into()
            }
        ),
        None => r#"<p class="muted">No section timed yet.</p>"#.into(),
    }
}

fn tally_html(tally: &[Count], pm: &Postmortem) -> String {
    let mut b = format!(
        r#"<p>{} of {} ballots cast.</p><table id="tally"><tr><th>proposal</th><th>approvals</th></tr>"#,
        pm.ballots_cast, pm.ballots
    );
    for c in tally {
        let _ = write!(
            b,
            r#"<tr class="{}"><td>{}{}</td><td>{}</td></tr>"#,
            if c.winner { "winner" } else { "" },
            esc(&c.text),
            if c.winner { " <b>(chosen)</b>" } else { "" },
            c.approvals
        );
    }
    b.push_str("</table>");
    b
}

fn actions_html(actions: &[ActionRow]) -> String {
    if actions.is_empty() {
        return r#"<p class="muted">No action items yet.</p>"#.into();
    }
    let mut b = String::from(
        r#"<table id="actions"><tr><th>action</th><th>owner</th><th>due</th><th>done</th></tr>"#,
    );
    for a in actions {
        let _ = write!(
            b,
            r#"<tr class="action"><td>{}</td><td>{}</td><td class="nw">{}</td><td>{}</td></tr>"#,
            esc(&a.text),
            esc(&a.owner),
            day(a.due_ms),
            a.done_ms
                .map(|d| day(d).to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    b.push_str("</table>");
    b
}

/// The post-mortem part of an incident's page: who shared (not what,
/// until it closes), proposals, ballots cast, the tally once closed,
/// action items; or a form to start one.
pub(crate) async fn incident_section(s: &Shared, i: &Incident) -> String {
    let Ok(t) = timeline(s) else {
        return String::new();
    };
    let mut b = String::from(r#"<h2>post-mortem</h2>"#);
    let pm = match postmortem::get(t, i.id).await {
        Ok(Some(pm)) => pm,
        Ok(None) => {
            let _ = write!(
                b,
                r#"{PM_STYLE}<p class="muted">Start the post-mortem: name a facilitator, a note keeper and a time keeper, and everyone taking part. Each gets a personal link to a form (no account needed); the links are shown once.</p>
<form id="start" data-post="/api/v1/incidents/{id}/postmortem" data-show="links">
<label>facilitator <input name="facilitator" required></label>
<label>note keeper <input name="note_keeper" required></label>
<label>time keeper <input name="time_keeper" required></label>
<label>participants (names, separated by spaces or commas) <input name="participants" data-list size="60"></label>
<p><button>start the post-mortem</button><span class="out"></span></p></form>{FORMS_SCRIPT}"#,
                id = i.id
            );
            return b;
        }
        Err(_) => return b,
    };
    let _ = write!(
        b,
        r#"<p>Phase <b id="phase">{}</b>; takes changes until {}. <a href="/api/v1/incidents/{}/postmortem.md">notes as Markdown</a></p>"#,
        pm.phase.as_str(),
        format_ms(pm.expires_ms),
        i.id
    );
    b.push_str(&timer_html(&pm, t.now_ms()));
    b.push_str(&participation_html(&pm));
    b.push_str("<h2>proposals</h2><ol>");
    for p in &pm.body.proposals {
        let _ = write!(
            b,
            "<li>{} <span class=\"muted\">by {}</span></li>",
            esc(&p.text),
            esc(&p.by)
        );
    }
    b.push_str("</ol>");
    match postmortem::tally(t, &pm).await {
        Ok(Some(tally)) => b.push_str(&tally_html(&tally, &pm)),
        _ if pm.phase == Phase::Voting => {
            let _ = write!(
                b,
                r#"<p id="ballots">{} of {} ballots cast; the tally is shown when voting closes.</p>"#,
                pm.ballots_cast, pm.ballots
            );
        }
        _ => {}
    }
    if let Ok(actions) = t.store().actions(false, Some(i.id)).await {
        b.push_str("<h2>action items</h2>");
        b.push_str(&actions_html(&actions));
    }
    b
}

/// `/pm/{token}`: a participant's form.
pub(crate) async fn seat_page(State(s): State<Shared>, Path(token): Path<String>) -> Answer {
    let t = timeline(&s)?;
    let seat = match postmortem::seat(t, &token).await {
        Ok(seat) => seat,
        Err(PmError::Unclaimed(name)) => {
            let body = format!(
                r#"<p>This link is for <b id="claim-for">{name}</b>, and it works once: claim the seat to get a link of your own, which nobody else has seen. This one then stops working.</p>
<form id="claim" data-post="/api/v1/pm/{token}/claim" data-go="path"><p><button>claim {name}'s seat</button><span class="out"></span></p></form>
<p class="muted">If you are not {name}, do not claim it. If {name}'s seat turns out claimed already and {name} did not claim it, tell the facilitator.</p>"#,
                name = esc(&name),
                token = esc(&token),
            );
            return Ok(page(&s, "claim your seat", &body));
        }
        Err(e) => return Ok(refused_page(&s, "post-mortem", e)),
    };
    let pm = &seat.postmortem;
    let i = incident::get(t, pm.incident)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "its incident is gone".into()))?;
    let post = format!("/api/v1/pm/{}", esc(&token));
    let roles = pm.roles(&seat.name);
    let now = t.now_ms();
    let open = pm.phase != Phase::Closed && !pm.expired(now);
    let mut b = format!(
        r#"<p>You are <b id="you">{name}</b>{roles} in the post-mortem of <a href="/incidents/{id}">I-{id} {title}</a>. Phase <b id="phase">{phase}</b>{exp}.</p>"#,
        name = esc(&seat.name),
        roles = if roles.is_empty() {
            String::new()
        } else {
            format!(", <b>{}</b>", esc(&roles.join(", ")))
        },
        id = i.id,
        title = esc(&i.body.title),
        phase = pm.phase.as_str(),
        exp = if pm.expired(now) {
            format!(
                "; it expired at {} and takes no more changes",
                format_ms(pm.expires_ms)
            )
        } else {
            format!("; takes changes until {}", format_ms(pm.expires_ms))
        },
    );
    b.push_str(r#"<p class="muted">This page is yours: whoever has its link writes as you. Who has shared is shown to all; what people wrote is shown to participants, and to everyone once the post-mortem closes.</p>"#);
    // The time keeper's clock, and their controls.
    b.push_str("<h2>timer</h2>");
    b.push_str(&timer_html(pm, now));
    if roles.contains(&"time keeper") && open {
        let _ = write!(
            b,
            r#"<form id="timer" data-post="{post}"><label>section <input name="section" list="sections" value="round"></label><datalist id="sections">{opts}</datalist><label>minutes <input name="minutes" data-number type="number" min="1" max="240" value="10"></label><p><button>start the clock</button><span class="out"></span></p></form>"#,
            opts = postmortem::SECTIONS
                .iter()
                .map(|s| format!(r#"<option value="{s}">"#))
                .collect::<String>()
        );
    }
    // The round.
    b.push_str("<h2>the round</h2>");
    let mine = pm
        .body
        .participants
        .iter()
        .find(|p| p.name == seat.name)
        .cloned()
        .unwrap_or_default();
    if open {
        let _ = write!(
            b,
            r#"<form id="share" data-post="{post}"><p class="muted">Your share: what went well, what did not, and something to do better.</p><label>a success <textarea name="success" maxlength="2000">{}</textarea></label><label>a failure <textarea name="failure" maxlength="2000">{}</textarea></label><label>something to do better <textarea name="better" maxlength="2000">{}</textarea></label><p><button>save my share</button><span class="out"></span></p></form>"#,
            esc(&mine.success),
            esc(&mine.failure),
            esc(&mine.better)
        );
    }
    b.push_str(&participation_html(pm));
    b.push_str("<h2>what everyone shared</h2>");
    for p in &pm.body.participants {
        if p.success.is_empty() && p.failure.is_empty() && p.better.is_empty() {
            continue;
        }
        let _ = write!(
            b,
            r#"<div class="card"><b>{}</b><br>success: {}<br>failure: {}<br>do better: {}</div>"#,
            esc(&p.name),
            esc(&p.success),
            esc(&p.failure),
            esc(&p.better)
        );
    }
    // Notes.
    b.push_str("<h2>notes</h2>");
    if roles.contains(&"note keeper") && open {
        let _ = write!(
            b,
            r#"<form id="notes" data-post="{post}"><textarea name="notes" style="min-height:8em">{}</textarea><p><button>save the notes</button><span class="out"></span></p></form>"#,
            esc(&pm.body.notes)
        );
    } else if pm.body.notes.is_empty() {
        let _ = write!(
            b,
            r#"<p class="muted">The note keeper ({}) has written nothing yet.</p>"#,
            esc(&pm.body.note_keeper)
        );
    } else {
        let _ = write!(b, "<pre>{}</pre>", esc(&pm.body.notes));
    }
    // Proposals and the vote.
    b.push_str(r#"<h2>proposals</h2><ol id="proposals">"#);
    for p in &pm.body.proposals {
        let _ = write!(
            b,
            "<li>{} <span class=\"muted\">by {}</span></li>",
            esc(&p.text),
            esc(&p.by)
        );
    }
    b.push_str("</ol>");
    if pm.phase == Phase::Round && open {
        let _ = write!(
            b,
            r#"<form id="propose" data-post="{post}"><label>what to do next <input name="proposal" maxlength="500" size="60"></label><p><button>propose</button><span class="out"></span></p></form>"#
        );
    }
    let facilitator = roles.contains(&"facilitator");
    match pm.phase {
        Phase::Round if facilitator && open => {
            let _ = write!(
                b,
                r#"<form id="open-voting" data-post="{post}" data-extra='{{"phase":"voting"}}'><p><button>open voting</button> <span class="muted">proposals close; everyone gets one ballot</span><span class="out"></span></p></form>"#
            );
        }
        Phase::Voting => {
            if let Some(ballot) = &seat.ballot {
                let _ = write!(
                    b,
                    r#"<p id="your-ballot">{} <a href="/ballots/{ballot}">your ballot</a> (a separate link: the vote is cast with it alone, and nothing stored ties it to you).</p>"#,
                    if seat.ballot_cast {
                        "You have voted with"
                    } else {
                        "Vote with"
                    },
                    ballot = esc(ballot)
                );
            }
            let _ = write!(
                b,
                r#"<p id="ballots">{} of {} ballots cast; the tally is shown when voting closes.</p>"#,
                pm.ballots_cast, pm.ballots
            );
            if facilitator && open {
                let _ = write!(
                    b,
                    r#"<form id="close-voting" data-post="{post}" data-extra='{{"phase":"closed"}}'><p><button>close voting</button><span class="out"></span></p></form>"#
                );
            }
        }
        Phase::Closed => {
            if let Some(tally) = postmortem::tally(t, pm).await? {
                b.push_str(&tally_html(&tally, pm));
                if facilitator && !pm.expired(now) {
                    let _ = write!(
                        b,
                        r#"<h2>make an action item</h2><form id="action" data-post="{post}/actions"><label>proposal <select name="proposal" data-number>{opts}</select></label><label>owner <input name="owner" required></label><label>due <input name="due" type="date" required></label><p><button>add the action item</button><span class="out"></span></p></form>
<form id="send" data-post="{post}/send" data-extra='{{"to":"all"}}'><p><button>send the notes to everyone</button> <span class="muted">to every [[notify]] target of this server</span><span class="out"></span></p></form>"#,
                        opts = tally
                            .iter()
                            .map(|c| format!(
                                r#"<option value="{}">{}{} ({} approvals)</option>"#,
                                c.proposal,
                                esc(&c.text),
                                if c.winner { " — chosen" } else { "" },
                                c.approvals
                            ))
                            .collect::<String>()
                    );
                }
            }
        }
        _ => {}
    }
    let actions = t
        .store()
        .actions(false, Some(pm.incident))
        .await
        .unwrap_or_default();
    b.push_str("<h2>action items</h2>");
    b.push_str(&actions_html(&actions));
    let _ = write!(
        b,
        r#"<p><a href="/api/v1/incidents/{}/postmortem.md">the notes as Markdown</a></p>"#,
        pm.incident
    );
    Ok(page(&s, &format!("post-mortem of I-{}", pm.incident), &b))
}

/// `/ballots/{token}`: one ballot.
pub(crate) async fn ballot_page(State(s): State<Shared>, Path(token): Path<String>) -> Answer {
    let t = timeline(&s)?;
    let view = match postmortem::ballot(t, &token).await {
        Ok(v) => v,
        Err(e) => return Ok(refused_page(&s, "ballot", e)),
    };
    let pm = &view.postmortem;
    let mut b = format!(
        r#"<p>A ballot of the post-mortem of <a href="/incidents/{id}">I-{id}</a>. Approve every proposal you would have the team do; approving none is a blank vote. One ballot, one vote: it cannot be changed once cast.</p>"#,
        id = pm.incident
    );
    if view.cast {
        b.push_str(r#"<p id="cast" class="yes">This ballot was cast. The tally is shown when voting closes.</p>"#);
    } else if pm.phase != Phase::Voting || pm.expired(t.now_ms()) {
        b.push_str(r#"<p class="refused">Voting is not open.</p>"#);
    } else {
        let _ = write!(
            b,
            r#"<form id="vote" data-post="/api/v1/ballots/{}">"#,
            esc(&token)
        );
        for p in &pm.body.proposals {
            let _ = write!(
                b,
                r#"<p><label style="font-weight:normal"><input type="checkbox" name="approve" value="{}"> {}</label></p>"#,
                p.id,
                esc(&p.text)
            );
        }
        b.push_str(r#"<p><button>cast my ballot</button><span class="out"></span></p></form>"#);
    }
    Ok(page(&s, "ballot", &b))
}

/// The action items not done yet (none when this node keeps no timeline).
pub(crate) async fn open_actions(s: &Shared) -> Vec<ActionRow> {
    match timeline(s) {
        Ok(t) => t.store().actions(true, None).await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// The action items not done yet, for the morning market's page.
pub(crate) async fn market_section(s: &Shared) -> String {
    let Ok(t) = timeline(s) else {
        return String::new();
    };
    let open = open_actions(s).await;
    let now = t.now_ms();
    let mut b = String::from(r#"<h2>action items from post-mortems</h2>"#);
    if open.is_empty() {
        b.push_str(r#"<p class="muted">None open.</p>"#);
        return b;
    }
    b.push_str(r#"<table id="action-items"><tr><th>id</th><th>action</th><th>owner</th><th>due</th><th>from</th></tr>"#);
    for a in &open {
        let _ = write!(
            b,
            r#"<tr class="action"><td>A-{id}</td><td>{text}</td><td>{owner}</td><td class="nw{late}">{due}</td><td><a href="/incidents/{inc}">I-{inc}</a></td></tr>"#,
            id = a.id,
            text = esc(&a.text),
            owner = esc(&a.owner),
            late = if a.due_ms < now { " st-CRITICAL" } else { "" },
            due = day(a.due_ms),
            inc = a.incident,
        );
    }
    b.push_str(
        r#"</table><p class="muted">Mark one done with <code>gemba actions done ID</code>.</p>"#,
    );
    b
}
