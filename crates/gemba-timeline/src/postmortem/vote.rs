//! The vote: a participant's ballot, casting it, counting, and closing
//! with the facilitator's link (the counts kept, every ballot and slot
//! overwritten).

use super::*;

/// What a ballot approves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vote {
    /// Proposal ids; none is a blank ballot.
    pub approve: Vec<i64>,
}

/// A ballot as its holder sees it.
#[derive(Clone, Debug)]
pub struct BallotView {
    pub postmortem: Postmortem,
    pub cast: bool,
}

pub(super) const NOT_A_BALLOT: &str =
    "this ballot is not valid: no post-mortem handed it out (check that the link was copied whole)";

pub async fn ballot(t: &TimelineHandle, token: &str) -> Result<BallotView, PmError> {
    let raw = token_bytes(token).ok_or_else(|| PmError::NotFound(NOT_A_BALLOT.into()))?;
    let (incident_id, cast) = t
        .store()
        .ballot(ballot_hash(&raw))
        .await?
        .ok_or_else(|| PmError::NotFound(NOT_A_BALLOT.into()))?;
    let postmortem = get(t, incident_id)
        .await?
        .ok_or_else(|| PmError::NotFound(NOT_A_BALLOT.into()))?;
    Ok(BallotView { postmortem, cast })
}

/// Casts a ballot: once, while voting is open. With the link of the seat
/// the ballot was handed to (the console sends it), the seat goes on the
/// roll of those who voted.
pub async fn cast(
    t: &TimelineHandle,
    token: &str,
    vote: &Vote,
    seat_link: Option<&str>,
) -> Result<i64, PmError> {
    let view = ballot(t, token).await?;
    let pm = &view.postmortem;
    let voter = match seat_link {
        Some(link) => {
            let s = seat(t, link)
                .await
                .map_err(|_| invalid("seat: this is not a participant's link"))?;
            if s.postmortem.incident != pm.incident || s.ballot.as_deref() != Some(token) {
                return Err(invalid("seat: this ballot was not handed to that seat"));
            }
            Some(s.name)
        }
        None => None,
    };
    let known: BTreeSet<i64> = pm.body.proposals.iter().map(|p| p.id).collect();
    let mut seen = BTreeSet::new();
    for id in &vote.approve {
        if !known.contains(id) {
            return Err(invalid(format!("approve: there is no proposal {id}")));
        }
        if !seen.insert(*id) {
            return Err(invalid(format!("approve: proposal {id} is named twice")));
        }
    }
    let content = serde_json::to_string(&Vote {
        approve: seen.into_iter().collect(),
    })
    .unwrap_or_default();
    // Sealed to the voting key (a vote opened before sealing existed is
    // stored as it was then).
    let content = match pm.body.vote_key.as_deref().and_then(unhex) {
        Some(key) => {
            let key: [u8; 32] = key.try_into().map_err(|_| {
                PmError::Store(StoreError::Query("the voting key is damaged".into()))
            })?;
            seal_vote(&content, &key)?
        }
        None => content,
    };
    let raw = token_bytes(token).ok_or_else(|| PmError::NotFound(NOT_A_BALLOT.into()))?;
    match t
        .store()
        .cast_ballot(ballot_hash(&raw), content, t.now_ms())
        .await?
    {
        BallotOutcome::Cast(id) => {
            if let Some(name) = voter {
                // The vote is counted either way; a seat left off the roll
                // here is put on it when its page is next read.
                if let Err(e) = on_roll(t, id, &name).await {
                    tracing::warn!(incident = id, "the roll of voters was not updated: {e}");
                }
            }
            Ok(id)
        }
        BallotOutcome::Repeated => Err(PmError::Conflict(
            "this ballot was cast already: one ballot, one vote".into(),
        )),
        BallotOutcome::NotOpen => Err(PmError::Conflict(match pm.phase {
            Phase::Closed => format!("voting in post-mortem I-{} is closed", pm.incident),
            _ if pm.expired(t.now_ms()) => {
                format!(
                    "post-mortem I-{} expired: it takes no more votes",
                    pm.incident
                )
            }
            _ => format!("post-mortem I-{} is not voting", pm.incident),
        })),
        BallotOutcome::Unknown => Err(PmError::NotFound(NOT_A_BALLOT.into())),
    }
}

/// Puts a seat on the roll of those who voted, while voting is open.
pub(super) async fn on_roll(
    t: &TimelineHandle,
    incident_id: i64,
    name: &str,
) -> Result<(), PmError> {
    amend(t, incident_id, |pm| {
        if pm.phase != Phase::Voting || pm.body.voted.iter().any(|n| n == name) {
            return false;
        }
        pm.body.voted.push(name.to_string());
        pm.body.voted.sort();
        true
    })
    .await
    .map(|_| ())
}

/// A proposal's approvals, once voting is closed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Count {
    pub proposal: i64,
    pub text: String,
    pub approvals: u64,
    /// Among those with the most approvals (and at least one).
    pub winner: bool,
}

/// The tally, most approved first; `None` before voting closes.
pub async fn tally(t: &TimelineHandle, pm: &Postmortem) -> Result<Option<Vec<Count>>, PmError> {
    if pm.phase != Phase::Closed {
        return Ok(None);
    }
    let mut counts: Vec<Count> = pm
        .body
        .proposals
        .iter()
        .map(|p| Count {
            proposal: p.id,
            text: p.text.clone(),
            approvals: 0,
            winner: false,
        })
        .collect();
    match &pm.body.tally {
        Some(counted) => {
            for (id, n) in counted {
                if let Some(c) = counts.iter_mut().find(|c| c.proposal == *id) {
                    c.approvals = *n;
                }
            }
        }
        // Voting closed before ballots were sealed: they are in the store.
        None => {
            for content in t.store().ballot_contents(pm.incident).await? {
                let Ok(v) = serde_json::from_str::<Vote>(&content) else {
                    continue;
                };
                for id in v.approve.iter().collect::<BTreeSet<_>>() {
                    if let Some(c) = counts.iter_mut().find(|c| c.proposal == *id) {
                        c.approvals += 1;
                    }
                }
            }
        }
    }
    let top = counts.iter().map(|c| c.approvals).max().unwrap_or(0);
    for c in &mut counts {
        c.winner = top > 0 && c.approvals == top;
    }
    counts.sort_by(|a, b| {
        b.approvals
            .cmp(&a.approvals)
            .then(a.proposal.cmp(&b.proposal))
    });
    Ok(Some(counts))
}

/// Closes the vote with the facilitator's link: opens the voting key's
/// secret with it, counts the sealed ballots, keeps only the counts, and
/// overwrites every ballot and slot, in one step that fails (and is read
/// again) if a ballot arrived meanwhile.
pub async fn close_with_link(t: &TimelineHandle, token: &str) -> Result<Postmortem, PmError> {
    let seat = seat(t, token).await?;
    let link = token_bytes(token).ok_or_else(|| PmError::NotFound(NOT_A_LINK.into()))?;
    let incident_id = seat.postmortem.incident;
    for _ in 0..32 {
        let mut pm = get(t, incident_id)
            .await?
            .ok_or_else(|| PmError::NotFound(NOT_A_LINK.into()))?;
        let f = pm.body.facilitator.clone();
        role_needed(
            &pm,
            &Actor::Participant(seat.name.clone()),
            &f,
            "facilitator",
        )?;
        writable(&pm, t.now_ms())?;
        if pm.phase != Phase::Voting {
            return Err(PmError::Conflict(format!(
                "post-mortem I-{incident_id} is not voting: open voting first"
            )));
        }
        let Some(sealed) = pm.body.vote_secret.clone() else {
            // Voting opened before ballots were sealed.
            return change(
                t,
                incident_id,
                &Actor::Participant(seat.name.clone()),
                &Change::CloseVoting,
            )
            .await;
        };
        let secret: [u8; 32] = open_slot(&sealed, &link)
            .and_then(|h| unhex(&h))
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| PmError::Forbidden("this link does not open the voting key".into()))?;
        let secret = x25519_dalek::StaticSecret::from(secret);
        let contents = t.store().ballot_contents(incident_id).await?;
        let mut counted: std::collections::BTreeMap<i64, u64> =
            pm.body.proposals.iter().map(|p| (p.id, 0)).collect();
        for c in &contents {
            let Some(v) = open_vote(c, &secret).and_then(|j| serde_json::from_str::<Vote>(&j).ok())
            else {
                continue;
            };
            for id in v.approve.iter().collect::<BTreeSet<_>>() {
                if let Some(n) = counted.get_mut(id) {
                    *n += 1;
                }
            }
        }
        let now = t.now_ms();
        pm.body.tally = Some(counted.into_iter().collect());
        pm.body.vote_secret = None;
        pm.body.closed_ms = Some(now);
        pm.body.closed_by = Some(seat.name.clone());
        let json = serde_json::to_string(&pm.body).unwrap_or_default();
        if t.store()
            .close_voting(
                incident_id,
                pm.version,
                json,
                contents.len() as u64,
                ballot_scrub('u'),
                ballot_scrub('x'),
            )
            .await?
        {
            return Ok(get(t, incident_id).await?.unwrap_or(pm));
        }
    }
    Err(PmError::Conflict(
        "ballots kept arriving while the vote was being closed; try again".into(),
    ))
}
