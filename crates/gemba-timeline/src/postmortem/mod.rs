//! Post-mortems: the team looks back at an incident together.
//!
//! A post-mortem names a facilitator, a note keeper, a time keeper and its
//! participants. Each participant gets a personal link (a capability token:
//! whoever holds it acts as that participant; no accounts). The phases:
//!
//! 1. `round`: everyone adds a success, a failure and something to do
//!    better (who has not yet is public, what they wrote is not until the
//!    post-mortem closes); anyone adds proposals for what to do next; the
//!    note keeper keeps notes; the time keeper runs a timer per section.
//! 2. `voting` (the facilitator opens it): every participant gets one
//!    ballot and approves any of the proposals.
//! 3. `closed` (the facilitator closes it): the tally is shown, and the
//!    facilitator turns winning proposals into action items with an owner
//!    and a due date; they stay in the morning market until done.
//!
//! ## Anonymous ballots: how, and against whom
//!
//! Seats are claimed: the starter is shown one-time tokens, and each
//! claims its seat once, giving the seat a link token the starter never
//! sees ([`claim`]). When voting opens the server draws one random ballot
//! token per participant and, in the same step, seals each to one
//! participant's public key (X25519; the secret half is derived from the
//! participant's link token, which the store never holds, only its hash).
//! It also draws a voting key: each cast ballot is sealed to it (padded to
//! one length), and its secret half is sealed to the facilitator's link.
//! The store keeps, in one transaction: the SHA-256 of every ballot token
//! (a table keyed and ordered by that hash, with no time, no sequence and
//! no participant), each row holding a filler of a sealed ballot's length
//! until it is cast, so casting rewrites the row in place and storage
//! order stays hash order; and each participant's sealed slot. Raw ballot
//! tokens are not kept anywhere. A participant's page opens their slot
//! with the token in their link and shows their ballot's own link; a
//! ballot is cast with the ballot token alone. Closing takes the
//! facilitator's link ([`close_with_link`]): it opens the voting key,
//! counts, keeps only the counts, and overwrites every ballot and slot
//! (the freed bytes too, and the write-ahead log is emptied).
//!
//! So, from the stored data alone (a backup, a stolen disk, a curious
//! administrator with `sqlite3`), no ballot can be tied to a participant,
//! and no ballot can be read, during voting or after; copies taken over
//! time show when anonymous rows were cast, nothing more. What this does
//! not protect against, said plainly: someone holding a participant's
//! link can open their slot and vote as them (the link is the identity);
//! a server process that is modified or watched while it runs sees which
//! slot it opens and which ballot then arrives, and could log it (the
//! code does not; request paths are not logged); whoever watches the
//! network or the browser at the moment a person votes sees who sends
//! which ballot; the facilitator's link with a copy of the store taken
//! during voting reads each anonymous ballot.
//!
//! Here: the model and starting a post-mortem; `seal` (the cryptography),
//! `seats` (claiming a link), `change` (the round), `vote` (ballots,
//! casting, the tally, closing) and `actions` (action items).

use std::collections::BTreeSet;

use gemba_store::{BallotOutcome, ParticipantRow, PostmortemRow, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::{self, EventError};
use crate::incident;
use crate::service::{TimelineError, TimelineHandle};

mod actions;
mod change;
mod seal;
mod seats;
mod vote;

pub use actions::*;
pub use change::*;
use seal::*;
pub use seats::*;
pub use vote::*;

/// The longest success, failure or do-better.
pub const MAX_FIELD: usize = 2000;
pub const MAX_PROPOSAL: usize = 500;
pub const MAX_PROPOSALS: usize = 50;
pub const MAX_NOTES: usize = 20_000;
pub const MAX_PARTICIPANTS: usize = 100;
pub const MAX_SECTION: usize = 60;
pub const MAX_MINUTES: u32 = 240;
/// How long a post-mortem takes writes unless told otherwise.
pub const DEFAULT_OPEN_FOR_MS: u64 = 14 * 86_400_000;
pub const MAX_OPEN_FOR_MS: u64 = 90 * 86_400_000;
/// The sections a time keeper usually times; any other name is fine too.
pub const SECTIONS: &[&str] = &["timeline", "round", "proposals", "vote"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Round,
    Voting,
    Closed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Round => "round",
            Phase::Voting => "voting",
            Phase::Closed => "closed",
        }
    }

    fn of(s: &str) -> Phase {
        match s {
            "voting" => Phase::Voting,
            "closed" => Phase::Closed,
            _ => Phase::Round,
        }
    }
}

/// One participant's share of the round.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Person {
    pub name: String,
    #[serde(default)]
    pub success: String,
    #[serde(default)]
    pub failure: String,
    #[serde(default)]
    pub better: String,
}

impl Person {
    /// Whether they shared all three.
    pub fn contributed(&self) -> bool {
        self.missing().is_empty()
    }

    /// What their share lacks: `success`, `failure`, `do-better`.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (&self.success, "success"),
            (&self.failure, "failure"),
            (&self.better, "do-better"),
        ]
        .into_iter()
        .filter(|(v, _)| v.trim().is_empty())
        .map(|(_, n)| n)
        .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: i64,
    pub text: String,
    pub by: String,
    pub at_ms: u64,
}

/// The time keeper's clock for one section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timer {
    pub section: String,
    pub started_ms: u64,
    pub minutes: u32,
}

impl Timer {
    pub fn ends_ms(&self) -> u64 {
        self.started_ms + u64::from(self.minutes) * 60_000
    }
}

/// What is kept of a post-mortem beside its phase and expiry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub facilitator: String,
    pub note_keeper: String,
    pub time_keeper: String,
    pub participants: Vec<Person>,
    #[serde(default)]
    pub proposals: Vec<Proposal>,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub timer: Option<Timer>,
    pub created_ms: u64,
    pub created_by: String,
    #[serde(default)]
    pub voting_ms: Option<u64>,
    #[serde(default)]
    pub closed_ms: Option<u64>,
    #[serde(default)]
    pub closed_by: Option<String>,
    /// While voting: the public key ballots are sealed to (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_key: Option<String>,
    /// While voting: the secret half of `vote_key`, sealed to the
    /// facilitator's link (only their link closes the vote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_secret: Option<String>,
    /// Once closed: approvals per proposal id, counted when the vote
    /// closed (the ballots themselves are then overwritten).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally: Option<Vec<(i64, u64)>>,
    /// Closed without a vote: nobody proposed anything.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vote_skipped: bool,
    /// When the notes were first sent: after the vote the note keeper
    /// writes on until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes_sent_ms: Option<u64>,
    /// The roll: the seats known to have voted, by name. It says who
    /// voted, never with which ballot (a ballot row knows no seat).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voted: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Postmortem {
    pub incident: i64,
    pub phase: Phase,
    pub expires_ms: u64,
    pub version: i64,
    pub body: Body,
    /// Ballots handed out, and cast.
    pub ballots: u64,
    pub ballots_cast: u64,
}

impl Postmortem {
    fn of(row: PostmortemRow) -> Postmortem {
        Postmortem {
            incident: row.incident,
            phase: Phase::of(&row.phase),
            expires_ms: row.expires_ms,
            version: row.version,
            body: serde_json::from_str(&row.body).unwrap_or_default(),
            ballots: row.ballots,
            ballots_cast: row.ballots_cast,
        }
    }

    /// The roles a name holds, in the order they are listed.
    pub fn roles(&self, name: &str) -> Vec<&'static str> {
        let b = &self.body;
        [
            (b.facilitator.as_str(), "facilitator"),
            (b.note_keeper.as_str(), "note keeper"),
            (b.time_keeper.as_str(), "time keeper"),
        ]
        .into_iter()
        .filter(|(who, _)| *who == name)
        .map(|(_, role)| role)
        .collect()
    }

    /// Who has not shared all of a success, a failure and a do-better.
    pub fn missing(&self) -> Vec<&str> {
        self.body
            .participants
            .iter()
            .filter(|p| !p.contributed())
            .map(|p| p.name.as_str())
            .collect()
    }

    /// Once voting opened: the seats not on the roll of those who voted.
    pub fn not_voted(&self) -> Vec<&str> {
        let voted = match self.phase {
            Phase::Voting => true,
            Phase::Closed => self.body.voting_ms.is_some() && !self.body.vote_skipped,
            _ => false,
        };
        if !voted {
            return Vec::new();
        }
        self.body
            .participants
            .iter()
            .map(|p| p.name.as_str())
            .filter(|n| !self.body.voted.iter().any(|v| v == n))
            .collect()
    }

    /// What the facilitator is told before closing the vote: how many
    /// ballots are out and, by seat, who has not voted.
    pub fn waiting(&self) -> String {
        let out = self.ballots.saturating_sub(self.ballots_cast);
        if out == 0 {
            return "Every ballot is cast.".into();
        }
        let names = self.not_voted();
        let ballots = if out == 1 {
            format!(
                "1 of {} ballots is not cast yet; it will not count.",
                self.ballots
            )
        } else {
            format!(
                "{out} of {} ballots are not cast yet; they will not count.",
                self.ballots
            )
        };
        if names.is_empty() {
            return ballots;
        }
        if names.len() as u64 == out {
            format!("{ballots} Not voted: {}.", names.join(", "))
        } else {
            // Someone voted with the ballot's link alone: the roll could
            // not name them.
            format!(
                "{ballots} Not seen voting: {} (a ballot cast with its own link alone names no seat).",
                names.join(", ")
            )
        }
    }

    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_ms
    }
}

/// Why a post-mortem request was refused; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum PmError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The post-mortem's phase or expiry does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// A seat's one-time token, not claimed yet: the seat's name.
    #[error("this link is {0}'s one-time link: claim the seat (POST .../claim, or open it in a browser) to get a link of your own; this one then stops working")]
    Unclaimed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<EventError> for PmError {
    fn from(e: EventError) -> Self {
        PmError::Invalid(e.0)
    }
}

impl From<TimelineError> for PmError {
    fn from(e: TimelineError) -> Self {
        match e {
            TimelineError::Invalid(e) => PmError::Invalid(e.0),
            TimelineError::Store(e) => PmError::Store(e),
        }
    }
}

fn invalid(s: impl Into<String>) -> PmError {
    PmError::Invalid(s.into())
}

/// Who sets up a post-mortem and with whom.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    pub facilitator: String,
    pub note_keeper: String,
    pub time_keeper: String,
    /// Everyone taking part; the three roles are added when missing.
    #[serde(default)]
    pub participants: Vec<String>,
    /// How long it takes writes, e.g. `14d` (the default), at most 90d.
    #[serde(default)]
    pub open_for: Option<String>,
}

fn check_person(field: &str, name: &str) -> Result<(), PmError> {
    if !gemba_core::ids::is_name(name) {
        return Err(invalid(format!(
            "{field} {:?} is not a name (1-64 letters, digits, '-', '_' or '.', starting with a letter or a digit)",
            name.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// Starts the post-mortem of an incident; each participant's one-time
/// token, which only this answer ever shows. A token claims its seat once
/// ([`claim`]): the seat then has a link its starter never saw.
pub async fn start(
    t: &TimelineHandle,
    incident_id: i64,
    setup: &Setup,
    by: &str,
) -> Result<Vec<(String, String)>, PmError> {
    check_person("facilitator", &setup.facilitator)?;
    check_person("note_keeper", &setup.note_keeper)?;
    check_person("time_keeper", &setup.time_keeper)?;
    if setup.participants.len() > MAX_PARTICIPANTS {
        return Err(invalid(format!(
            "at most {MAX_PARTICIPANTS} participants, got {}",
            setup.participants.len()
        )));
    }
    let mut names: Vec<String> = Vec::new();
    // The roles first, then everyone else in the order given.
    for n in [&setup.facilitator, &setup.note_keeper, &setup.time_keeper]
        .into_iter()
        .chain(&setup.participants)
    {
        check_person("participant", n)?;
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    if names.len() > MAX_PARTICIPANTS {
        return Err(invalid(format!("at most {MAX_PARTICIPANTS} participants")));
    }
    let open_for = match &setup.open_for {
        None => DEFAULT_OPEN_FOR_MS,
        Some(text) => {
            let d: gemba_core::duration::HumanDuration = text
                .parse()
                .map_err(|e| invalid(format!("open_for: {e}")))?;
            let ms = d.0.as_millis() as u64;
            if ms == 0 || ms > MAX_OPEN_FOR_MS {
                return Err(invalid("open_for: more than 0 and at most 90d"));
            }
            ms
        }
    };
    if incident::get(t, incident_id).await?.is_none() {
        return Err(PmError::NotFound(format!("no incident I-{incident_id}")));
    }
    let now = t.now_ms();
    let mut links = Vec::with_capacity(names.len());
    let mut rows = Vec::with_capacity(names.len());
    for name in &names {
        let token = new_token()?;
        rows.push(ParticipantRow {
            token_hash: link_hash(&token),
            incident: incident_id,
            name: name.clone(),
            seal_key: hex(x25519_dalek::PublicKey::from(&seal_secret(&token)).as_bytes()),
            slot: None,
            claimed: false,
        });
        links.push((name.clone(), hex(&token)));
    }
    let body = Body {
        facilitator: setup.facilitator.clone(),
        note_keeper: setup.note_keeper.clone(),
        time_keeper: setup.time_keeper.clone(),
        participants: names
            .iter()
            .map(|n| Person {
                name: n.clone(),
                ..Person::default()
            })
            .collect(),
        created_ms: now,
        created_by: by.to_string(),
        ..Body::default()
    };
    let json = serde_json::to_string(&body).unwrap_or_default();
    if !t
        .store()
        .add_postmortem(incident_id, now + open_for, json, rows)
        .await?
    {
        return Err(PmError::Conflict(format!(
            "incident I-{incident_id} has a post-mortem already"
        )));
    }
    Ok(links)
}

pub async fn get(t: &TimelineHandle, incident_id: i64) -> Result<Option<Postmortem>, PmError> {
    Ok(t.store().postmortem(incident_id).await?.map(Postmortem::of))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_ballot_opens_with_its_link_only() {
        let link = [7u8; 32];
        let other = [8u8; 32];
        let key = x25519_dalek::PublicKey::from(&seal_secret(&link)).to_bytes();
        let ballot = [42u8; 32];
        let slot = seal(&ballot, &key).unwrap();
        assert_eq!(
            open_slot(&slot, &link).as_deref(),
            Some(hex(&ballot).as_str())
        );
        assert_ne!(
            open_slot(&slot, &other).as_deref(),
            Some(hex(&ballot).as_str())
        );
        // Sealing twice gives different slots (a fresh ephemeral key).
        assert_ne!(seal(&ballot, &key).unwrap(), slot);
        assert_eq!(open_slot("zz", &link), None);
    }

    #[test]
    fn tokens_are_64_lowercase_hex_digits() {
        assert!(token_bytes(&"ab".repeat(32)).is_some());
        assert!(token_bytes(&"AB".repeat(32)).is_none());
        assert!(token_bytes(&"ab".repeat(31)).is_none());
        assert!(token_bytes(&"g0".repeat(32)).is_none());
        assert!(token_bytes("").is_none());
    }

    #[test]
    fn a_due_date_is_due_by_its_end() {
        let ms = due_ms("2026-12-01").unwrap();
        assert_eq!(event::format_ms(ms), "2026-12-01T23:59:59Z");
        assert!(due_ms("next week").is_err());
        assert_eq!(
            due_ms("2026-12-01T10:00:00Z").unwrap(),
            event::parse_time("2026-12-01T10:00:00Z").unwrap()
        );
    }

    #[test]
    fn closing_the_vote_names_by_seat_who_has_not_voted() {
        let person = |n: &str| Person {
            name: n.into(),
            ..Person::default()
        };
        let mut pm = Postmortem {
            incident: 4,
            phase: Phase::Voting,
            expires_ms: u64::MAX,
            version: 3,
            body: Body {
                participants: vec![person("ana"), person("bo"), person("cy")],
                voting_ms: Some(1),
                voted: vec!["ana".into()],
                ..Body::default()
            },
            ballots: 3,
            ballots_cast: 1,
        };
        assert_eq!(pm.not_voted(), vec!["bo", "cy"]);
        assert_eq!(
            pm.waiting(),
            "2 of 3 ballots are not cast yet; they will not count. Not voted: bo, cy."
        );
        // A ballot cast with its link alone is counted but names no seat.
        pm.ballots_cast = 2;
        assert_eq!(
            pm.waiting(),
            "1 of 3 ballots is not cast yet; it will not count. Not seen voting: bo, cy (a ballot cast with its own link alone names no seat)."
        );
        pm.ballots_cast = 3;
        assert_eq!(pm.waiting(), "Every ballot is cast.");
        // Before the vote nobody is "not voted"; after it, the roll stays.
        pm.phase = Phase::Round;
        assert!(pm.not_voted().is_empty());
        pm.phase = Phase::Closed;
        assert_eq!(pm.not_voted(), vec!["bo", "cy"]);
        pm.body.vote_skipped = true;
        assert!(pm.not_voted().is_empty());
    }
}
