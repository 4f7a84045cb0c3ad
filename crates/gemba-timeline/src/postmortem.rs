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

use std::collections::BTreeSet;

use gemba_store::{BallotOutcome, ParticipantRow, PostmortemRow, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::{self, EventError};
use crate::incident;
use crate::service::{TimelineError, TimelineHandle};

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
        !self.success.is_empty() && !self.failure.is_empty() && !self.better.is_empty()
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

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn digest(label: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// A token as it travels: 64 lowercase hex digits (32 random bytes).
fn token_bytes(token: &str) -> Option<[u8; 32]> {
    if token.len() != 64 || token.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    unhex(token)?.try_into().ok()
}

fn new_token() -> Result<[u8; 32], PmError> {
    gemba_core::secret::random32()
        .map_err(|e| PmError::Store(StoreError::Task(format!("/dev/urandom: {e}"))))
}

/// What the store knows a participant link by.
fn link_hash(token: &[u8; 32]) -> String {
    hex(&digest("gemba post-mortem link", &[token]))
}

/// What the store knows a ballot by.
fn ballot_hash(token: &[u8; 32]) -> String {
    hex(&digest("gemba post-mortem ballot", &[token]))
}

fn seal_secret(link: &[u8; 32]) -> x25519_dalek::StaticSecret {
    x25519_dalek::StaticSecret::from(digest("gemba post-mortem seal", &[link]))
}

fn pad(shared: &[u8; 32], ephemeral: &[u8; 32]) -> [u8; 32] {
    digest("gemba post-mortem pad", &[shared, ephemeral])
}

/// Seals a ballot token to a participant's public key: an ephemeral
/// key's public half and the token under a pad from the shared secret.
fn seal(ballot: &[u8; 32], to: &[u8; 32]) -> Result<String, PmError> {
    let eph = x25519_dalek::StaticSecret::from(new_token()?);
    let eph_pub = x25519_dalek::PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(*to));
    let k = pad(shared.as_bytes(), &eph_pub);
    let mut ct = [0u8; 32];
    for i in 0..32 {
        ct[i] = ballot[i] ^ k[i];
    }
    Ok(format!("{}{}", hex(&eph_pub), hex(&ct)))
}

/// Opens a slot with the participant's link token.
fn open_slot(slot: &str, link: &[u8; 32]) -> Option<String> {
    let raw = unhex(slot).filter(|r| r.len() == 64)?;
    let eph_pub: [u8; 32] = raw[..32].try_into().ok()?;
    let shared = seal_secret(link).diffie_hellman(&x25519_dalek::PublicKey::from(eph_pub));
    let k = pad(shared.as_bytes(), &eph_pub);
    let ballot: Vec<u8> = raw[32..].iter().zip(k).map(|(c, k)| c ^ k).collect();
    Some(hex(&ballot))
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

const NOT_A_LINK: &str = "this link is not valid: it is not a participant's link of any post-mortem (check that it was copied whole)";

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

/// A vote's content is padded to this many bytes before it is sealed, so
/// that every sealed ballot has the same length.
const VOTE_PLAIN: usize = 256;
/// A sealed ballot's bytes: the ephemeral public key, the ciphertext and
/// its tag.
const VOTE_SEALED: usize = 32 + VOTE_PLAIN + 16;

fn vote_cipher(shared: &[u8; 32], eph_pub: &[u8; 32]) -> chacha20poly1305::ChaCha20Poly1305 {
    use chacha20poly1305::KeyInit;
    let key = digest("gemba post-mortem vote", &[shared, eph_pub]);
    chacha20poly1305::ChaCha20Poly1305::new(&key.into())
}

/// A vote sealed to the voting key: `s` and the sealed bytes in hex. Each
/// vote has a key of its own (a fresh ephemeral key), so the nonce is 0.
fn seal_vote(content: &str, to: &[u8; 32]) -> Result<String, PmError> {
    use chacha20poly1305::aead::Aead;
    if content.len() >= VOTE_PLAIN {
        return Err(invalid("the vote is too long"));
    }
    let mut plain = content.as_bytes().to_vec();
    plain.resize(VOTE_PLAIN, 0);
    let eph = x25519_dalek::StaticSecret::from(new_token()?);
    let eph_pub = x25519_dalek::PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(*to));
    let ct = vote_cipher(shared.as_bytes(), &eph_pub)
        .encrypt(&Default::default(), plain.as_slice())
        .map_err(|_| invalid("the vote could not be sealed"))?;
    Ok(format!("s{}{}", hex(&eph_pub), hex(&ct)))
}

/// A sealed vote's content, with the voting key's secret half.
fn open_vote(sealed: &str, secret: &x25519_dalek::StaticSecret) -> Option<String> {
    use chacha20poly1305::aead::Aead;
    let raw = unhex(sealed.strip_prefix('s')?).filter(|r| r.len() == VOTE_SEALED)?;
    let eph_pub: [u8; 32] = raw[..32].try_into().ok()?;
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(eph_pub));
    let plain = vote_cipher(shared.as_bytes(), &eph_pub)
        .decrypt(&Default::default(), &raw[32..])
        .ok()?;
    let end = plain.iter().position(|b| *b == 0).unwrap_or(plain.len());
    String::from_utf8(plain[..end].to_vec()).ok()
}

/// What a ballot row holds before it is cast (random, `u` first) and after
/// voting closes (`u` or `x` first, then zeros): always a sealed ballot's
/// length, so that no write moves a row.
fn ballot_filler() -> Result<String, PmError> {
    let mut bytes = Vec::with_capacity(VOTE_SEALED + 32);
    while bytes.len() < VOTE_SEALED {
        bytes.extend_from_slice(&new_token()?);
    }
    bytes.truncate(VOTE_SEALED);
    Ok(format!("u{}", hex(&bytes)))
}

fn ballot_scrub(mark: char) -> String {
    format!("{mark}{}", "0".repeat(2 * VOTE_SEALED))
}

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

fn text_field(field: &str, s: &str, max: usize) -> Result<String, PmError> {
    let s = s.trim();
    if s.chars().count() > max {
        return Err(invalid(format!("{field}: at most {max} characters")));
    }
    event::no_controls_but_lines(field, s)?;
    Ok(s.to_string())
}

fn role_needed(pm: &Postmortem, actor: &Actor, who: &str, role: &str) -> Result<(), PmError> {
    match actor {
        Actor::Operator(_) => Ok(()),
        Actor::Participant(n) if n == who => Ok(()),
        Actor::Participant(_) => Err(PmError::Forbidden(format!(
            "only the {role} ({who}) may do this in post-mortem I-{}",
            pm.incident
        ))),
    }
}

fn writable(pm: &Postmortem, now_ms: u64) -> Result<(), PmError> {
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
fn check_change(change: &Change) -> Result<Change, PmError> {
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
        writable(&pm, now)?;
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
                    return Err(PmError::Conflict(
                        "there is nothing to vote on: add a proposal first".into(),
                    ));
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
async fn open_voting(t: &TimelineHandle, pm: &Postmortem) -> Result<bool, PmError> {
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

const NOT_A_BALLOT: &str =
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

/// Casts a ballot: once, while voting is open.
pub async fn cast(t: &TimelineHandle, token: &str, vote: &Vote) -> Result<i64, PmError> {
    let view = ballot(t, token).await?;
    let pm = &view.postmortem;
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
        BallotOutcome::Cast(id) => Ok(id),
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

/// An action item to make of a proposal.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAction {
    pub proposal: i64,
    pub owner: String,
    /// A date (`2026-12-01`, due by its end, UTC) or RFC 3339.
    pub due: String,
}

fn due_ms(text: &str) -> Result<u64, PmError> {
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
    let due = due_ms(&new.due)?;
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
    let known = t.store().actions(false, None).await?;
    match known.iter().find(|a| a.id == id) {
        Some(_) => Err(PmError::Conflict(format!(
            "action item {id} is done already"
        ))),
        None => Err(PmError::NotFound(format!("no action item {id}"))),
    }
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
}
