//! Post-mortems over HTTP (the console's pages are `postmortem_page`).
//!
//! Operators (the API token) start one on an incident, and may do what any
//! role may: `/api/v1/incidents/{id}/postmortem...`. Participants need no
//! account: their personal link's token opens `/pm/{token}` (a form) and
//! `/api/v1/pm/{token}` (the same through the API); a ballot's token opens
//! `/ballots/{token}` and `/api/v1/ballots/{token}`. Those paths carry
//! their own capability and do not need the API token; the browser checks
//! (same origin, JSON bodies) still apply to them.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use gemba_timeline::event::format_ms;
use gemba_timeline::postmortem::{
    self, Actor, Change, NewAction, Phase, Postmortem, Seat, Setup, Vote,
};
use serde_json::json;

use crate::learn::events::timeline;
use crate::respond::{Answer, ApiError};
use crate::Shared;

/// Paths that carry their own capability instead of the API token.
pub(crate) fn capability_path(path: &str) -> bool {
    path.starts_with("/api/v1/pm/") || path.starts_with("/api/v1/ballots/")
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
    let b: ChangeBody =
        serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("{SHAPE}: {e}")))?;
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
        return Err(ApiError::bad(format!(
            "{SHAPE}: one kind of change at a time"
        )));
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
        .ok_or_else(|| ApiError::bad("minutes: a whole number of minutes"))?;
        return Ok(Change::Timer {
            section: b.section.unwrap_or_default(),
            minutes: minutes as u32,
        });
    }
    match b.phase.as_deref() {
        Some("voting") => Ok(Change::OpenVoting),
        Some("closed") => Ok(Change::CloseVoting),
        Some(other) => Err(ApiError::bad(format!(
            "phase {:?}: say voting (open voting) or closed (close it)",
            other.chars().take(40).collect::<String>()
        ))),
        None => Err(ApiError::bad(SHAPE)),
    }
}

fn action_of(body: &[u8]) -> Result<NewAction, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(format!(
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

use gemba_views::edition::action_json;

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
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
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
        "voted": b.voted,
        "not_voted": pm.not_voted(),
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
    postmortem::get(timeline(s)?, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("incident I-{id} has no post-mortem")))
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
    let id = crate::learn::incidents::id_of(&id)?;
    let setup: Setup = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(format!("the body is {{\"facilitator\", \"note_keeper\", \"time_keeper\", \"participants\": [...], \"open_for\": \"14d\"}}: {e}"))
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
    let pm = must_get(&s, crate::learn::incidents::id_of(&id)?).await?;
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
    let id = crate::learn::incidents::id_of(&id)?;
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
    let id = crate::learn::incidents::id_of(&id)?;
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
    let id = crate::learn::incidents::id_of(&id)?;
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
        .map_err(|e| ApiError::bad(format!("the body is {{\"to\": \"all\" | \"smtp\" | \"webhook\" | \"command\" | <number>}}: {e}")))?;
    let targets = crate::learn::events::notify_targets(s, &to.to)?;
    let pm = must_get(s, id).await?;
    if pm.body.participants.iter().all(|p| p.missing().len() == 3) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "nobody has shared anything yet: the notes would say nothing; send them after the round".into(),
        ));
    }
    let export = export(s, id).await?;
    let subject = format!("gemba post-mortem: I-{id} {}", export.title);
    let images: Vec<gemba_notify::Image> = export
        .charts
        .iter()
        .map(|(name, png)| gemba_notify::Image {
            name: name.clone(),
            png: png.clone(),
        })
        .collect();
    let m = gemba_notify::Outgoing {
        subject: subject.clone(),
        text: export.markdown.clone(),
        json: json!({"subject": subject, "text": export.markdown, "markdown": export.markdown, "incident": id}),
        stdin: export.markdown.clone().into_bytes(),
        env: vec![("GEMBA_POSTMORTEM".into(), id.to_string())],
        images: images.clone(),
    };
    let (sent, errors) = gemba_notify::fan_out(&targets, &m).await;
    if sent > 0 {
        // Sent: the notes are final.
        if let Ok(t) = timeline(s) {
            if let Err(e) = postmortem::notes_sent(t, id).await {
                tracing::warn!(incident = id, error = %e, "cannot record that the notes were sent");
            }
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
    /// The vote, and the link of the seat it was handed to when the
    /// console sends it (that seat goes on the roll of those who voted).
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cast {
        approve: Vec<i64>,
        #[serde(default)]
        seat: Option<String>,
    }
    let cast: Cast = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(format!(
            "the body is {{\"approve\": [proposal ids], \"seat\": the seat's link (optional)}}: {e}"
        ))
    })?;
    let vote = Vote {
        approve: cast.approve,
    };
    if vote.approve.len() > postmortem::MAX_PROPOSALS {
        return Err(ApiError::bad(format!(
            "approve: at most {} proposals",
            postmortem::MAX_PROPOSALS
        )));
    }
    postmortem::cast(timeline(&s)?, &token, &vote, cast.seat.as_deref()).await?;
    Ok(
        Json(json!({"cast": true, "note": "counted; the tally is shown when voting closes"}))
            .into_response(),
    )
}

/// `GET /api/v1/actions?open=true&limit=100`
pub(crate) async fn actions(
    State(s): State<Shared>,
    crate::params::Query(p): crate::params::Query<crate::params::Listing>,
) -> Answer {
    let t = timeline(&s)?;
    let limit = crate::params::within("limit", p.limit, 1, 1000)?.unwrap_or(1000);
    let mut all = t
        .store()
        .actions(p.open, None)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    all.truncate(limit);
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
        .map_err(|_| ApiError::bad("an action item id is a number (or A-3)"))?;
    let d: Done = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body is {{\"done\": true}}: {e}")))?;
    let t = timeline(&s)?;
    if d.done {
        postmortem::finish_action(t, id, operator(&s, &headers).name()).await?;
    } else {
        postmortem::reopen_action(t, id).await?;
    }
    Ok(Json(json!({"id": id, "done": d.done})).into_response())
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
    let id = crate::learn::incidents::id_of(&id)?;
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
    let id = crate::learn::incidents::id_of(&id)?;
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
    let (i, entries) = crate::learn::incidents::load(s, id).await?;
    let charts = crate::learn::incidents::charts(s, &i).await;
    let mut pngs = Vec::new();
    for (n, chart) in charts.into_iter().enumerate() {
        let title = chart.title.clone();
        if let Ok(Ok(png)) = tokio::task::spawn_blocking(move || chart.png()).await {
            // Named after the incident: notes of two incidents exported
            // into one directory keep their own charts.
            pngs.push((format!("I-{id}-chart-{}.png", n + 1), title, png));
        }
    }
    let tally = postmortem::tally(t, &pm).await?;
    let actions = t
        .store()
        .actions(false, Some(id))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let markdown = gemba_timeline::postmortem_export::markdown(
        &i,
        &pm,
        &entries,
        &pngs,
        tally.as_deref(),
        &actions,
    );
    Ok(Export {
        title: i.body.title.clone(),
        markdown,
        charts: pngs.into_iter().map(|(name, _, png)| (name, png)).collect(),
    })
}
