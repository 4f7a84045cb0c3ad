//! Seats: a participant's seat as their link shows it, and claiming it
//! (the one-time token the starter saw becomes a link only its holder
//! knows).

use super::*;

/// A participant, as their link shows them.
#[derive(Clone, Debug)]
pub struct Seat {
    pub name: String,
    pub postmortem: Postmortem,
    /// Their ballot's token while voting is open.
    pub ballot: Option<String>,
    /// Whether that ballot was cast.
    pub ballot_cast: bool,
}

pub(super) const NOT_A_LINK: &str = "this link is not valid: it is not a participant's link of any post-mortem (check that it was copied whole)";

/// The participant a link token opens.
pub async fn seat(t: &TimelineHandle, token: &str) -> Result<Seat, PmError> {
    let link = token_bytes(token).ok_or_else(|| PmError::NotFound(NOT_A_LINK.into()))?;
    let row = t
        .store()
        .participant(link_hash(&link))
        .await?
        .ok_or_else(|| PmError::NotFound(NOT_A_LINK.into()))?;
    if !row.claimed {
        return Err(PmError::Unclaimed(row.name));
    }
    let postmortem = get(t, row.incident)
        .await?
        .ok_or_else(|| PmError::NotFound(NOT_A_LINK.into()))?;
    let ballot = row.slot.as_deref().and_then(|s| open_slot(s, &link));
    let ballot_cast = match &ballot {
        Some(b) => match token_bytes(b) {
            Some(raw) => t
                .store()
                .ballot(ballot_hash(&raw))
                .await?
                .is_some_and(|(_, cast)| cast),
            None => false,
        },
        None => false,
    };
    let mut postmortem = postmortem;
    if ballot_cast
        && postmortem.phase == Phase::Voting
        && !postmortem.body.voted.contains(&row.name)
    {
        // Cast with the ballot's link alone: the seat's own page puts it
        // on the roll.
        if on_roll(t, postmortem.incident, &row.name).await.is_ok() {
            postmortem.body.voted.push(row.name.clone());
        }
    }
    Ok(Seat {
        name: row.name,
        postmortem,
        ballot,
        ballot_cast,
    })
}

/// Claims a seat with its one-time token: the seat gets a new link, which
/// only this answer shows (and so not whoever started the post-mortem),
/// and the token stops working. While voting, the seat's ballot is
/// resealed to the new link. Returns the seat's name and its new token.
pub async fn claim(t: &TimelineHandle, token: &str) -> Result<(String, String), PmError> {
    let raw = token_bytes(token).ok_or_else(|| PmError::NotFound(NOT_A_LINK.into()))?;
    // Twice at most: voting may open between reading the seat and
    // claiming it, which seals a ballot to the one-time token's key.
    for _ in 0..2 {
        let row = t
            .store()
            .participant(link_hash(&raw))
            .await?
            .ok_or_else(|| PmError::NotFound(NOT_A_LINK.into()))?;
        if row.claimed {
            return Err(PmError::Conflict(format!(
                "{}'s seat is claimed already: use the link you got when you claimed it (if you did not claim it, tell the facilitator)",
                row.name
            )));
        }
        let new = new_token()?;
        let new_key = x25519_dalek::PublicKey::from(&seal_secret(&new)).to_bytes();
        let slot = match row.slot.as_deref().and_then(|s| open_slot(s, &raw)) {
            Some(ballot) => {
                let ballot: [u8; 32] =
                    unhex(&ballot)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| {
                            PmError::Store(StoreError::Query("a stored slot is damaged".into()))
                        })?;
                Some(seal(&ballot, &new_key)?)
            }
            None => None,
        };
        if t.store()
            .claim_seat(
                link_hash(&raw),
                row.slot.clone(),
                link_hash(&new),
                hex(&new_key),
                slot,
            )
            .await?
        {
            return Ok((row.name, hex(&new)));
        }
    }
    Err(PmError::Conflict(
        "the seat changed while it was being claimed; try again".into(),
    ))
}
