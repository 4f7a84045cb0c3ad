//! The timeline's tables behind their own trait: change events (what,
//! when, tags, who) with their tags indexed for queries, and a few named
//! values (the followers' cursors). An event may carry an origin key
//! (`journal:17`, `run:<key>`): a second event with the same origin is
//! not stored, so a follower that replays after a restart adds nothing.

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A stored change event. `tags` are `key=value` or bare words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub id: i64,
    pub at_ms: u64,
    pub end_ms: Option<u64>,
    pub kind: String,
    pub what: String,
    pub tags: Vec<String>,
    pub text: String,
    pub author: String,
    pub link: String,
    /// Where it came from: api, graphite, grafana, escalator, market.
    pub source: String,
    pub origin: Option<String>,
}

/// Which events a query wants: those overlapping `[since_ms, until_ms]`
/// that carry every tag in `tags`, newest first, at most `limit`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFilter {
    pub since_ms: u64,
    pub until_ms: u64,
    pub tags: Vec<String>,
    pub kind: Option<String>,
    pub limit: usize,
}

/// A metric series: one metric of one process (or `host`) on one node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    pub node: String,
    pub process: String,
    pub metric: String,
}

/// How fine a stored point is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tier {
    Raw,
    Minute,
    Hour,
}

impl Tier {
    /// The bucket width in seconds (raw: none).
    pub fn seconds(self) -> u64 {
        match self {
            Tier::Raw => 0,
            Tier::Minute => 60,
            Tier::Hour => 3600,
        }
    }

    pub(crate) fn table(self) -> &'static str {
        match self {
            Tier::Raw => "timeline_raw",
            Tier::Minute => "timeline_minute",
            Tier::Hour => "timeline_hour",
        }
    }
}

/// A point: unix seconds and the value (roll-ups: the average, with the
/// bucket's min and max).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub t: u64,
    pub v: f64,
    pub min: f64,
    pub max: f64,
}

/// How many points each tier holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointCounts {
    pub raw: u64,
    pub minute: u64,
    pub hour: u64,
    pub series: u64,
}

/// A state change a server saw: a check, a node or a link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeRow {
    pub at_ms: u64,
    /// `check`, `node` or `link`.
    pub kind: String,
    /// The check id (`name@scope`), the node id, or `from>to`.
    pub subject: String,
    /// The node it is about (`""` for tier and global checks; a link's
    /// observer).
    pub node: String,
    /// A link's target (`""` otherwise).
    pub peer: String,
    pub state: String,
    pub previous: String,
    pub detail: String,
}

/// A stored incident: indexed fields and the rest as JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentRow {
    pub id: i64,
    pub opened_ms: u64,
    pub closed_ms: Option<u64>,
    /// Bumped by every update; an update names the version it read.
    pub version: i64,
    pub body: String,
    /// The escalations it gathers.
    pub escalations: Vec<u64>,
}

/// A stored post-mortem: its phase (`round`, `voting`, `closed`) and
/// expiry indexed, the rest as JSON; ballots are counted, not listed.
#[derive(Clone, Debug, PartialEq)]
pub struct PostmortemRow {
    pub incident: i64,
    pub phase: String,
    pub expires_ms: u64,
    pub version: i64,
    pub body: String,
    /// Ballots handed out, and how many of them were cast.
    pub ballots: u64,
    pub ballots_cast: u64,
}

/// A participant found by the hash of their link's token.
#[derive(Clone, Debug, PartialEq)]
pub struct ParticipantRow {
    pub token_hash: String,
    pub incident: i64,
    pub name: String,
    /// The public key ballots are sealed to (its secret half is derived
    /// from the link's token, which the store never holds).
    pub seal_key: String,
    /// Their ballot token, sealed to `seal_key`, while voting is open.
    pub slot: Option<String>,
    /// Whether the seat's holder has claimed it: the token the starter was
    /// shown works once, to claim the seat and get a link of its own.
    pub claimed: bool,
}

/// What became of a ballot handed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BallotOutcome {
    /// Counted, for this incident's post-mortem.
    Cast(i64),
    /// This ballot was cast already.
    Repeated,
    /// Its post-mortem is not voting (not yet, or any more, or expired).
    NotOpen,
    /// No such ballot.
    Unknown,
}

/// An action item from a post-mortem's proposal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRow {
    pub id: i64,
    pub incident: i64,
    pub proposal: i64,
    pub text: String,
    pub owner: String,
    pub due_ms: u64,
    pub created_ms: u64,
    pub done_ms: Option<u64>,
    pub done_by: Option<String>,
}

impl ActionRow {
    /// When it is due; `None` when it has no due date (stored as 0).
    pub fn due(&self) -> Option<u64> {
        (self.due_ms > 0).then_some(self.due_ms)
    }
}

/// Whether a ballot row's content is a cast ballot (SQL, the same in
/// SQLite and PostgreSQL): an uncast one holds NULL (before fillers) or a
/// filler starting with `u`.
pub(crate) const CAST: &str = "(content IS NOT NULL AND substr(content, 1, 1) <> 'u')";

/// The timeline's tables, one trait per sub-domain so that each backend
/// keeps them in a file each: events and state changes, metric series,
/// incidents, post-mortems with their ballots and action items.
pub trait TimelineStore: EventStore + SeriesStore + IncidentStore + PostmortemStore {}

impl<T: EventStore + SeriesStore + IncidentStore + PostmortemStore> TimelineStore for T {}

/// Change events, the followers' named values and the grid's state changes.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync {
    /// Stores the events in one transaction; for each, its id, or `None`
    /// when an event with the same origin is stored already.
    async fn add_events(&self, events: Vec<EventRow>) -> Result<Vec<Option<i64>>, StoreError>;
    async fn events(&self, filter: EventFilter) -> Result<Vec<EventRow>, StoreError>;
    async fn event(&self, id: i64) -> Result<Option<EventRow>, StoreError>;
    async fn timeline_value(&self, name: &str) -> Result<Option<String>, StoreError>;
    async fn set_timeline_value(&self, name: &str, value: &str) -> Result<(), StoreError>;
    /// Removes events that ended before `before_ms`; returns how many.
    async fn prune_events(&self, before_ms: u64) -> Result<u64, StoreError>;

    async fn add_changes(&self, changes: Vec<ChangeRow>) -> Result<(), StoreError>;
    /// Changes in `[since_ms, until_ms]` about one of `nodes` (as node or
    /// peer) or about no node, oldest first, at most `limit`.
    async fn changes(
        &self,
        since_ms: u64,
        until_ms: u64,
        nodes: Vec<String>,
        limit: usize,
    ) -> Result<Vec<ChangeRow>, StoreError>;
    async fn prune_changes(&self, before_ms: u64) -> Result<u64, StoreError>;
}

/// Metric series and their points, in tiers.
#[async_trait::async_trait]
pub trait SeriesStore: Send + Sync {
    /// The ids of these series, creating the missing ones while fewer
    /// than `max_series` exist; `None` for those refused by the cap.
    async fn series_ids(
        &self,
        keys: Vec<SeriesKey>,
        max_series: u64,
    ) -> Result<Vec<Option<i64>>, StoreError>;
    /// Every series, with its id.
    async fn series(&self) -> Result<Vec<(i64, SeriesKey)>, StoreError>;
    /// Writes raw points (series, unix seconds, value) in one transaction;
    /// a second value for the same series and second replaces the first.
    /// They land in the head (time order) until [`SeriesStore::compact`].
    async fn write_points(&self, points: Vec<(i64, u64, f64)>) -> Result<(), StoreError>;
    /// Moves head points before `before_s` into the raw tier (series
    /// order); returns how many. Reads see both, before and after.
    async fn compact(&self, before_s: u64) -> Result<u64, StoreError>;
    /// Rolls the points of `from` in `[start_s, end_s)` up into buckets of
    /// `to` (Minute from Raw, Hour from Minute); rolling the same span
    /// again gives the same buckets.
    async fn roll_up(
        &self,
        from: Tier,
        to: Tier,
        start_s: u64,
        end_s: u64,
    ) -> Result<u64, StoreError>;
    /// Removes a tier's points before `before_s`; returns how many.
    async fn prune_points(&self, tier: Tier, before_s: u64) -> Result<u64, StoreError>;
    /// A series' points of one tier in `[since_s, until_s]`, oldest first.
    async fn points(
        &self,
        series: i64,
        tier: Tier,
        since_s: u64,
        until_s: u64,
    ) -> Result<Vec<Point>, StoreError>;
    async fn point_counts(&self) -> Result<PointCounts, StoreError>;
}

/// Incidents and the escalations they gather.
#[async_trait::async_trait]
pub trait IncidentStore: Send + Sync {
    /// A new incident gathering `escalations`: its id and true. If one of
    /// them is in an incident already (another server opened it first),
    /// nothing is written and that incident's id comes back with false;
    /// the check and the write are one step, so two servers opening an
    /// incident for one escalation at once make one incident.
    async fn add_incident(
        &self,
        opened_ms: u64,
        body: String,
        escalations: Vec<u64>,
    ) -> Result<(i64, bool), StoreError>;
    /// Newest first; only open ones when `open_only`.
    async fn incidents(
        &self,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<IncidentRow>, StoreError>;
    async fn incident(&self, id: i64) -> Result<Option<IncidentRow>, StoreError>;
    /// The incident that gathers an escalation.
    async fn incident_of(&self, escalation: u64) -> Result<Option<i64>, StoreError>;
    /// Writes the incident if it is still at `version` (and gathers
    /// `escalations` too); `false` when someone else wrote it first.
    async fn update_incident(
        &self,
        id: i64,
        version: i64,
        closed_ms: Option<u64>,
        body: String,
        escalations: Vec<u64>,
    ) -> Result<bool, StoreError>;
}

/// Post-mortems: their participants, sealed ballots and action items.
#[async_trait::async_trait]
pub trait PostmortemStore: Send + Sync {
    /// A post-mortem for an incident, in phase `round`, with its
    /// participants (their slots empty); `false` when it has one already.
    async fn add_postmortem(
        &self,
        incident: i64,
        expires_ms: u64,
        body: String,
        participants: Vec<ParticipantRow>,
    ) -> Result<bool, StoreError>;
    async fn postmortem(&self, incident: i64) -> Result<Option<PostmortemRow>, StoreError>;
    async fn participant(&self, token_hash: String) -> Result<Option<ParticipantRow>, StoreError>;
    /// A post-mortem's participants, in token-hash order.
    async fn participants(&self, incident: i64) -> Result<Vec<ParticipantRow>, StoreError>;
    /// Writes the body (and phase) if still at `version`; `false` when
    /// someone else wrote first. Leaving `voting` forgets every sealed
    /// ballot slot of the post-mortem in the same transaction, and
    /// overwrites the freed pages.
    async fn update_postmortem(
        &self,
        incident: i64,
        version: i64,
        phase: String,
        body: String,
    ) -> Result<bool, StoreError>;
    /// Moves a post-mortem from `round` to `voting` if still at `version`:
    /// stores the ballots `(token hash, filler)` (and nothing else about
    /// them) and each participant's sealed slot `(participant token hash,
    /// slot)`, all in one transaction. A filler starts with `u` and has the
    /// length of a cast ballot's content, so that casting rewrites a row
    /// in place.
    async fn open_voting(
        &self,
        incident: i64,
        version: i64,
        body: String,
        ballots: Vec<(String, String)>,
        slots: Vec<(String, String)>,
    ) -> Result<bool, StoreError>;
    /// Closes a post-mortem's voting if still at `version` and exactly
    /// `cast` of its ballots were cast (else `false`: read again): writes
    /// the body, forgets every slot, and overwrites every ballot's content
    /// with `scrub_uncast` or `scrub_cast`, all in one transaction, the
    /// freed bytes overwritten.
    async fn close_voting(
        &self,
        incident: i64,
        version: i64,
        body: String,
        cast: u64,
        scrub_uncast: String,
        scrub_cast: String,
    ) -> Result<bool, StoreError>;
    /// Gives an unclaimed seat its own link: the row of `old_hash` (still
    /// unclaimed, its slot still `old_slot`) takes `new_hash`, `seal_key`
    /// and `slot` (its ballot resealed to the new key, while voting);
    /// `false` when there is no such seat.
    async fn claim_seat(
        &self,
        old_hash: String,
        old_slot: Option<String>,
        new_hash: String,
        seal_key: String,
        slot: Option<String>,
    ) -> Result<bool, StoreError>;
    /// Records a ballot's content once (its filler is replaced in place),
    /// while its post-mortem is voting and `now_ms` is before its expiry.
    async fn cast_ballot(
        &self,
        token_hash: String,
        content: String,
        now_ms: u64,
    ) -> Result<BallotOutcome, StoreError>;
    /// A ballot's post-mortem and whether it was cast.
    async fn ballot(&self, token_hash: String) -> Result<Option<(i64, bool)>, StoreError>;
    /// The contents of a post-mortem's cast ballots, in token-hash order.
    async fn ballot_contents(&self, incident: i64) -> Result<Vec<String>, StoreError>;

    async fn add_action(&self, action: ActionRow) -> Result<i64, StoreError>;
    /// Action items, oldest first: only those not done when `open_only`;
    /// only one incident's when given.
    async fn actions(
        &self,
        open_only: bool,
        incident: Option<i64>,
    ) -> Result<Vec<ActionRow>, StoreError>;
    /// Marks an action item done; `false` when there is none or it was.
    async fn finish_action(&self, id: i64, done_ms: u64, by: String) -> Result<bool, StoreError>;
    /// Marks a done action item open again; `false` when there is none or
    /// it is open.
    async fn reopen_action(&self, id: i64) -> Result<bool, StoreError>;
}
