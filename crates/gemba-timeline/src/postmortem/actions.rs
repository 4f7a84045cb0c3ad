//! Action items: winning proposals turned into work with an owner and a
//! due date, on the morning market until done.

use super::*;

/// An action item to make of a proposal.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAction {
    pub proposal: i64,
    pub owner: String,
    /// A date (`2026-12-01`, due by its end, UTC) or RFC 3339; none (or
    /// blank) for an item without a due date.
    #[serde(default)]
    pub due: Option<String>,
}

pub(super) fn due_ms(text: &str) -> Result<u64, PmError> {
    let text = text.trim();
    if let Ok(d) = text.parse::<jiff::civil::Date>() {
        let end = d
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .and_then(|z| z.checked_add(jiff::Span::new().days(1)).ok())
            .map(|z| z.timestamp().as_millisecond() - 1);
        if let Some(ms) = end.filter(|ms| *ms > 0) {
            return Ok(ms as u64);
        }
    }
    event::parse_time(text).map_err(|_| {
        invalid(format!(
            "due {:?} is not a date: use 2026-12-01 or RFC 3339",
            text.chars().take(40).collect::<String>()
        ))
    })
}

/// Makes an action item of a proposal, once voting has closed.
pub async fn add_action(
    t: &TimelineHandle,
    incident_id: i64,
    actor: &Actor,
    new: &NewAction,
) -> Result<i64, PmError> {
    check_person("owner", &new.owner)?;
    // 0: no due date (see `ActionRow::due`).
    let due = match new.due.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(d) => due_ms(d)?,
    };
    let pm = get(t, incident_id)
        .await?
        .ok_or_else(|| PmError::NotFound(format!("incident I-{incident_id} has no post-mortem")))?;
    role_needed(&pm, actor, &pm.body.facilitator.clone(), "facilitator")?;
    if pm.phase != Phase::Closed {
        return Err(PmError::Conflict(
            "action items come from the vote: close voting first".into(),
        ));
    }
    if pm.expired(t.now_ms()) {
        return Err(PmError::Conflict(format!(
            "post-mortem I-{incident_id} expired: it takes no more changes"
        )));
    }
    let proposal = pm
        .body
        .proposals
        .iter()
        .find(|p| p.id == new.proposal)
        .ok_or_else(|| invalid(format!("there is no proposal {}", new.proposal)))?;
    if t.store()
        .actions(false, Some(incident_id))
        .await?
        .iter()
        .any(|a| a.proposal == new.proposal)
    {
        return Err(PmError::Conflict(format!(
            "proposal {} is an action item already",
            new.proposal
        )));
    }
    Ok(t.store()
        .add_action(gemba_store::ActionRow {
            id: 0,
            incident: incident_id,
            proposal: new.proposal,
            text: proposal.text.clone(),
            owner: new.owner.clone(),
            due_ms: due,
            created_ms: t.now_ms(),
            done_ms: None,
            done_by: None,
        })
        .await?)
}

/// Marks an action item done.
pub async fn finish_action(t: &TimelineHandle, id: i64, by: &str) -> Result<(), PmError> {
    if t.store()
        .finish_action(id, t.now_ms(), by.to_string())
        .await?
    {
        return Ok(());
    }
    Err(refused(t, id, "done").await?)
}

/// Marks a done action item open again (it is back on the market).
pub async fn reopen_action(t: &TimelineHandle, id: i64) -> Result<(), PmError> {
    if t.store().reopen_action(id).await? {
        return Ok(());
    }
    Err(refused(t, id, "open").await?)
}

/// Why marking item `id` done or open changed nothing: it is `state`
/// already, or there is no such item.
async fn refused(t: &TimelineHandle, id: i64, state: &str) -> Result<PmError, PmError> {
    let known = t.store().actions(false, None).await?;
    Ok(if known.iter().any(|a| a.id == id) {
        PmError::Conflict(format!("action item {id} is {state} already"))
    } else {
        PmError::NotFound(format!("no action item {id}"))
    })
}
