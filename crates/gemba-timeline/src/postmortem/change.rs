//! Changes to a post-mortem during its round: who may make each (by the
//! role their link holds), the checks on what they write, and opening the
//! vote.

use super::*;

/// Who writes: a participant through their link, or an operator holding
/// the API token (who may do what any role may).
#[derive(Clone, Debug, PartialEq)]
pub enum Actor {
    Participant(String),
    Operator(String),
}

impl Actor {
    pub fn name(&self) -> &str {
        match self {
            Actor::Participant(n) | Actor::Operator(n) => n,
        }
    }
}

/// A change to a post-mortem.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A participant's own share; fields left out stay as they were.
    Share {
        success: Option<String>,
        failure: Option<String>,
        better: Option<String>,
    },
    Propose(String),
    Notes(String),
    Timer {
        section: String,
        minutes: u32,
    },
    OpenVoting,
    CloseVoting,
}

pub(super) fn text_field(field: &str, s: &str, max: usize) -> Result<String, PmError> {
    let s = s.trim();
    if s.chars().count() > max {
        return Err(invalid(format!("{field}: at most {max} characters")));
    }
    event::no_controls_but_lines(field, s)?;
    Ok(s.to_string())
}

pub(super) fn role_needed(
    pm: &Postmortem,
    actor: &Actor,
    who: &str,
    role: &str,
) -> Result<(), PmError> {
    match actor {
        Actor::Operator(_) => Ok(()),
        Actor::Participant(n) if n == who => Ok(()),
        Actor::Participant(_) => Err(PmError::Forbidden(format!(
            "only the {role} ({who}) may do this in post-mortem I-{}",
            pm.incident
        ))),
    }
}

pub(super) fn writable(pm: &Postmortem, now_ms: u64) -> Result<(), PmError> {
    if pm.expired(now_ms) {
        return Err(PmError::Conflict(format!(
            "post-mortem I-{} expired at {}: it takes no more changes",
            pm.incident,
            event::format_ms(pm.expires_ms)
        )));
    }
    if pm.phase == Phase::Closed {
        return Err(PmError::Conflict(format!(
            "post-mortem I-{} is closed: it takes no more changes",
            pm.incident
        )));
    }
    Ok(())
}

/// Checks a change's fields before anything is read.
pub(super) fn check_change(change: &Change) -> Result<Change, PmError> {
    Ok(match change {
        Change::Share {
            success,
            failure,
            better,
        } => {
            if success.is_none() && failure.is_none() && better.is_none() {
                return Err(invalid("give at least one of success, failure and better"));
            }
            let f = |name: &str, v: &Option<String>| {
                v.as_deref()
                    .map(|s| text_field(name, s, MAX_FIELD))
                    .transpose()
            };
            Change::Share {
                success: f("success", success)?,
                failure: f("failure", failure)?,
                better: f("better", better)?,
            }
        }
        Change::Propose(text) => {
            let text = text_field("proposal", text, MAX_PROPOSAL)?;
            if text.is_empty() {
                return Err(invalid("proposal: say what to do"));
            }
            Change::Propose(text)
        }
        Change::Notes(text) => Change::Notes(text_field("notes", text, MAX_NOTES)?),
        Change::Timer { section, minutes } => {
            let section = section.trim();
            let n = section.chars().count();
            if n == 0 || n > MAX_SECTION {
                return Err(invalid(format!(
                    "section: 1 to {MAX_SECTION} characters (e.g. {})",
                    SECTIONS.join(", ")
                )));
            }
            event::no_controls("section", section)?;
            if !(1..=MAX_MINUTES).contains(minutes) {
                return Err(invalid(format!("minutes: 1 to {MAX_MINUTES}")));
            }
            Change::Timer {
                section: section.to_string(),
                minutes: *minutes,
            }
        }
        other => other.clone(),
    })
}

/// Applies a change; two people writing at once both get theirs in (the
/// loser of a race reads again and reapplies).
pub async fn change(
    t: &TimelineHandle,
    incident_id: i64,
    actor: &Actor,
    change: &Change,
) -> Result<Postmortem, PmError> {
    let change = check_change(change)?;
    for _ in 0..32 {
        let mut pm = get(t, incident_id).await?.ok_or_else(|| {
            PmError::NotFound(format!("incident I-{incident_id} has no post-mortem"))
        })?;
        let now = t.now_ms();
        // After the vote the notes stay open until they are sent.
        let notes_after_vote = matches!(change, Change::Notes(_))
            && pm.phase == Phase::Closed
            && pm.body.notes_sent_ms.is_none()
            && !pm.expired(now);
        if !notes_after_vote {
            writable(&pm, now)?;
        }
        let mut phase = pm.phase;
        match &change {
            Change::Share {
                success,
                failure,
                better,
            } => {
                let Actor::Participant(name) = actor else {
                    return Err(PmError::Forbidden(
                        "a share is a participant's own: send it through their link".into(),
                    ));
                };
                if pm.phase != Phase::Round {
                    return Err(PmError::Conflict(format!(
                        "post-mortem I-{incident_id} is voting: the round was locked when voting opened"
                    )));
                }
                let Some(p) = pm.body.participants.iter_mut().find(|p| &p.name == name) else {
                    return Err(PmError::Forbidden(format!("{name} is not a participant")));
                };
                for (slot, v) in [
                    (&mut p.success, success),
                    (&mut p.failure, failure),
                    (&mut p.better, better),
                ] {
                    if let Some(v) = v {
                        *slot = v.clone();
                    }
                }
            }
            Change::Propose(text) => {
                if pm.phase != Phase::Round {
                    return Err(PmError::Conflict(format!(
                        "post-mortem I-{incident_id} is voting: proposals were closed when voting opened"
                    )));
                }
                if pm.body.proposals.len() >= MAX_PROPOSALS {
                    return Err(PmError::Conflict(format!(
                        "post-mortem I-{incident_id} has {MAX_PROPOSALS} proposals, the most it takes"
                    )));
                }
                if pm
                    .body
                    .proposals
                    .iter()
                    .any(|p| p.text.eq_ignore_ascii_case(text))
                {
                    return Err(PmError::Conflict("that proposal is there already".into()));
                }
                let id = pm.body.proposals.iter().map(|p| p.id).max().unwrap_or(0) + 1;
                pm.body.proposals.push(Proposal {
                    id,
                    text: text.clone(),
                    by: actor.name().to_string(),
                    at_ms: now,
                });
            }
            Change::Notes(text) => {
                let keeper = pm.body.note_keeper.clone();
                role_needed(&pm, actor, &keeper, "note keeper")?;
                pm.body.notes = text.clone();
            }
            Change::Timer { section, minutes } => {
                let keeper = pm.body.time_keeper.clone();
                role_needed(&pm, actor, &keeper, "time keeper")?;
                pm.body.timer = Some(Timer {
                    section: section.clone(),
                    started_ms: now,
                    minutes: *minutes,
                });
            }
            Change::OpenVoting => {
                let f = pm.body.facilitator.clone();
                role_needed(&pm, actor, &f, "facilitator")?;
                if pm.phase != Phase::Round {
                    return Err(PmError::Conflict(format!(
                        "post-mortem I-{incident_id} is voting already"
                    )));
                }
                if pm.body.proposals.is_empty() {
                    // Nothing to vote on: the vote is skipped and the
                    // post-mortem closes (the notes say so).
                    pm.body.vote_skipped = true;
                    pm.body.closed_ms = Some(now);
                    pm.body.closed_by = Some(actor.name().to_string());
                    let json = serde_json::to_string(&pm.body).unwrap_or_default();
                    if t.store()
                        .update_postmortem(
                            incident_id,
                            pm.version,
                            Phase::Closed.as_str().into(),
                            json,
                        )
                        .await?
                    {
                        return Ok(get(t, incident_id).await?.unwrap_or(pm));
                    }
                    continue;
                }
                pm.body.voting_ms = Some(now);
                if open_voting(t, &pm).await? {
                    return Ok(get(t, incident_id).await?.unwrap_or(pm));
                }
                continue;
            }
            Change::CloseVoting => {
                let f = pm.body.facilitator.clone();
                role_needed(&pm, actor, &f, "facilitator")?;
                if pm.phase != Phase::Voting {
                    return Err(PmError::Conflict(format!(
                        "post-mortem I-{incident_id} is not voting: open voting first"
                    )));
                }
                if pm.body.vote_key.is_some() {
                    return Err(PmError::Forbidden(format!(
                        "closing the vote opens the sealed ballots, which only the facilitator's own link can: {f} closes it from their page"
                    )));
                }
                pm.body.closed_ms = Some(now);
                pm.body.closed_by = Some(actor.name().to_string());
                phase = Phase::Closed;
            }
        }
        let json = serde_json::to_string(&pm.body).unwrap_or_default();
        if t.store()
            .update_postmortem(incident_id, pm.version, phase.as_str().into(), json)
            .await?
        {
            return Ok(get(t, incident_id).await?.unwrap_or(pm));
        }
    }
    Err(PmError::Conflict(
        "the post-mortem is being changed too often; try again".into(),
    ))
}

/// Draws a ballot per participant and seals each to one of them, all
/// handed to the store in one step; `false` when raced.
pub(super) async fn open_voting(t: &TimelineHandle, pm: &Postmortem) -> Result<bool, PmError> {
    let people = t.store().participants(pm.incident).await?;
    let seal_key_of = |p: &ParticipantRow| -> Result<[u8; 32], PmError> {
        unhex(&p.seal_key)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| PmError::Store(StoreError::Query("a stored seal key is damaged".into())))
    };
    // Ballots are sealed to a voting key whose secret half only the
    // facilitator's link opens: nobody reads a ballot before the vote
    // closes, not even with the whole store.
    let facilitator = people
        .iter()
        .find(|p| p.name == pm.body.facilitator)
        .ok_or_else(|| PmError::Conflict("the facilitator has no seat".into()))?;
    if !facilitator.claimed {
        return Err(PmError::Conflict(format!(
            "{} has not claimed the facilitator's seat yet: voting opens once they have (only their link closes the vote)",
            pm.body.facilitator
        )));
    }
    let vote_secret = new_token()?;
    let vote_key = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(vote_secret));
    let mut pm = pm.clone();
    pm.body.vote_key = Some(hex(vote_key.as_bytes()));
    pm.body.vote_secret = Some(seal(&vote_secret, &seal_key_of(facilitator)?)?);
    let mut ballots = Vec::with_capacity(people.len());
    let mut slots = Vec::with_capacity(people.len());
    for p in &people {
        let key = seal_key_of(p)?;
        let ballot = new_token()?;
        ballots.push((ballot_hash(&ballot), ballot_filler()?));
        slots.push((p.token_hash.clone(), seal(&ballot, &key)?));
    }
    // The store keys ballots by hash; sorting here too means the order
    // handed over says nothing about who got which.
    ballots.sort();
    let json = serde_json::to_string(&pm.body).unwrap_or_default();
    Ok(t.store()
        .open_voting(pm.incident, pm.version, json, ballots, slots)
        .await?)
}

/// Records that the notes went out (the first time): from then on the
/// post-mortem takes no more notes.
pub async fn notes_sent(t: &TimelineHandle, incident_id: i64) -> Result<(), PmError> {
    let now = t.now_ms();
    let found = amend(t, incident_id, |pm| {
        if pm.body.notes_sent_ms.is_some() {
            return false;
        }
        pm.body.notes_sent_ms = Some(now);
        true
    })
    .await?;
    if !found {
        return Err(PmError::NotFound(format!(
            "incident I-{incident_id} has no post-mortem"
        )));
    }
    Ok(())
}

/// Changes a post-mortem's body in its phase, read again and retried when
/// someone else changed it meanwhile. `edit` says whether it changed
/// anything; `false` when there is no post-mortem.
pub(super) async fn amend(
    t: &TimelineHandle,
    incident_id: i64,
    edit: impl Fn(&mut Postmortem) -> bool,
) -> Result<bool, PmError> {
    for _ in 0..16 {
        let Some(mut pm) = get(t, incident_id).await? else {
            return Ok(false);
        };
        if !edit(&mut pm) {
            return Ok(true);
        }
        let json = serde_json::to_string(&pm.body).unwrap_or_default();
        if t.store()
            .update_postmortem(incident_id, pm.version, pm.phase.as_str().into(), json)
            .await?
        {
            return Ok(true);
        }
    }
    Err(PmError::Conflict(
        "the post-mortem is being changed too often; try again".into(),
    ))
}
