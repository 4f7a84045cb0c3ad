//! Turning escalations into incidents, one per problem.
//!
//! Each pass reads the journal's new lines and looks at every escalation
//! they name, then sweeps the escalations still open:
//! - one on a scope (or node) an open incident covers joins it, and so
//!   does one on a scope an incident covered that closed less than
//!   `group_within` ago, which reopens it: a service that keeps dying is
//!   one incident, however often it is restarted in between;
//! - otherwise one that `open_on` says needs an incident opens one (or
//!   joins the open incident whose newest escalation started within
//!   `group_within`: one outage, one incident), taking with it the earlier
//!   escalations of its scope from `group_within` before that are in no
//!   incident, so its timeline shows how it came to need a human;
//! - an incident closes `cool_down` after all its escalations ended.
//!
//! Whether an escalation needs a human is read from its stored record
//! (held, or waiting for approval longer than `approval_wait`), never from
//! the words of its journal; what it is called and how severe it is come
//! from the records and the journal's kinds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gemba_core::incidents::{IncidentsConfig, OpenOn};
use gemba_core::journal::JournalKind;
use gemba_store::{EscalationRow, Store};
use serde::Deserialize;

use super::{list, update, Body, Incident, MAX_TITLE};
use crate::service::{TimelineError, TimelineHandle, FOLLOW_EVERY};

/// The lease that lets one server at a time turn escalations into
/// incidents, so that servers sharing a store group escalations as one
/// server would. No check can have this scope (theirs are `global`,
/// `tier:…` or `node:…`).
pub const FOLLOWER_LEASE: &str = "task:incidents";
/// How long a pass holds it: another server follows once it has passed
/// without a renewal (the holder stopped or lost the store).
const FOLLOWER_TTL_MS: u64 = 30_000;
/// Journal lines read per pass.
const FOLLOW_BATCH: usize = 500;
/// Escalation records swept per pass (the open ones come first).
const SWEEP: usize = 200;
/// Escalations read to title an incident, at most.
const DESCRIBED: usize = 50;

/// What an incident needs to know of an escalation's stored record: a
/// typed reading of the escalator's record, not of its prose.
#[derive(Default, Deserialize)]
struct Facts {
    #[serde(default)]
    checks: Vec<String>,
    #[serde(default)]
    chain: Vec<u32>,
    #[serde(default)]
    steps: Vec<StepFact>,
    #[serde(default)]
    held_because: Option<String>,
}

#[derive(Deserialize)]
struct StepFact {
    level: u32,
    #[serde(default)]
    name: String,
}

fn facts(row: &EscalationRow) -> Facts {
    serde_json::from_str(&row.body).unwrap_or_default()
}

/// Whether the escalation waits for a human: held (crash loop, rate
/// limit, spent budget), acknowledged after a hold, or waiting for an
/// approval longer than `approval_wait`.
fn needs_human(row: &EscalationRow, cfg: &IncidentsConfig, now_ms: u64) -> bool {
    match row.phase.as_str() {
        "held" | "acknowledged" => true,
        "awaiting-approval" => {
            now_ms.saturating_sub(row.updated_ms) >= cfg.approval_wait.as_millis() as u64
        }
        _ => facts(row).held_because.is_some(),
    }
}

/// The node a scope names (`node:web-1`), if it names one.
fn node_of(scope: &str) -> Option<&str> {
    scope.strip_prefix("node:")
}

/// Whether incident `i` covers `scope`: the same scope, or the same node.
fn covers(i: &Incident, scope: &str) -> bool {
    i.body
        .scopes
        .iter()
        .any(|s| s == scope || (node_of(s).is_some() && node_of(s) == node_of(scope)))
}

/// One pass over new journal lines and open escalations: escalations
/// open, join or reopen incidents; incidents whose escalations all ended
/// a cool-down ago close. Returns lines read; none while another server
/// (`holder` names this one) holds the follower's lease.
pub async fn follow_once(
    t: &TimelineHandle,
    journal: &Arc<dyn Store>,
    cfg: &IncidentsConfig,
    holder: &str,
) -> Result<usize, TimelineError> {
    const CURSOR: &str = "cursor.incidents";
    if journal
        .acquire_lease(FOLLOWER_LEASE, holder, t.now_ms(), FOLLOWER_TTL_MS)
        .await?
        .is_none()
    {
        return Ok(0);
    }
    let store = t.store();
    let cursor: i64 = store
        .timeline_value(CURSOR)
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let rows = journal.journal_after(cursor, FOLLOW_BATCH).await?;
    // Each escalation once per pass, with the kinds of its new lines and
    // when it first showed (its start, for an opening).
    let mut seen: BTreeMap<u64, (String, u64, BTreeSet<JournalKind>)> = BTreeMap::new();
    for r in &rows {
        let Some(esc) = r.escalation else { continue };
        let e = seen
            .entry(esc)
            .or_insert_with(|| (r.scope.clone(), r.at_ms, BTreeSet::new()));
        if let Some(k) = JournalKind::parse(&r.kind) {
            e.2.insert(k);
        }
    }
    // Open escalations, also those whose lines came before this pass (an
    // approval that has now waited long enough, a record saved after its
    // line was read).
    for row in journal.escalations(SWEEP).await? {
        if row.open {
            seen.entry(row.id)
                .or_insert_with(|| (row.scope.clone(), row.opened_ms, BTreeSet::new()));
        }
    }
    let mut changed = BTreeSet::new();
    for (esc, (scope, at_ms, kinds)) in seen {
        if let Some(id) = store.incident_of(esc).await? {
            if !kinds.is_empty() {
                changed.insert(id);
            }
            continue;
        }
        let row = journal.escalation(esc).await?;
        if let Some(id) = place(t, journal, cfg, esc, &scope, at_ms, &kinds, row).await? {
            changed.insert(id);
        }
    }
    for id in changed {
        describe(t, journal, cfg, id).await?;
    }
    close_ended(t, journal, cfg).await?;
    if let Some(last) = rows.last() {
        store
            .set_timeline_value(CURSOR, &last.seq.to_string())
            .await?;
    }
    Ok(rows.len())
}

/// Puts escalation `esc` where it belongs: the incident covering its scope,
/// or a new one when `open_on` asks for it. The incident it went to.
#[allow(clippy::too_many_arguments)]
async fn place(
    t: &TimelineHandle,
    journal: &Arc<dyn Store>,
    cfg: &IncidentsConfig,
    esc: u64,
    scope: &str,
    at_ms: u64,
    kinds: &BTreeSet<JournalKind>,
    row: Option<EscalationRow>,
) -> Result<Option<i64>, TimelineError> {
    let now = t.now_ms();
    let group = cfg.group_within.as_millis() as u64;
    let start_ms = row.as_ref().map_or(at_ms, |r| r.opened_ms);
    // Covered: an open incident on its scope or node, or one that closed
    // within `group_within` (reopened).
    let recent = list(t, false, 50).await?;
    if let Some(i) = recent.iter().find(|i| {
        covers(i, scope)
            && i.closed_ms.is_none_or(|c| {
                i.body.opened_by.starts_with("escalation")
                    && start_ms.saturating_sub(c) <= group
                    && c <= now
            })
    }) {
        join(t, i.id, vec![esc], scope, start_ms).await?;
        return Ok(Some(i.id));
    }
    let human = row.as_ref().is_some_and(|r| needs_human(r, cfg, now));
    let opens = match cfg.open_on {
        OpenOn::Hold => human,
        OpenOn::Start => {
            human || kinds.contains(&JournalKind::Decision) || row.as_ref().is_some_and(|r| r.open)
        }
        OpenOn::GiveUp => kinds.contains(&JournalKind::GiveUp),
        OpenOn::Never => false,
    };
    if !opens {
        return Ok(None);
    }
    // One outage, one incident: an open incident whose newest escalation
    // started within `group_within`.
    if let Some(i) = recent.iter().find(|i| {
        i.is_open()
            && i.body.opened_by.starts_with("escalation")
            && start_ms.saturating_sub(i.body.last_start_ms) <= group
    }) {
        join(t, i.id, vec![esc], scope, start_ms).await?;
        return Ok(Some(i.id));
    }
    // Its scope's earlier escalations, in no incident yet: how it came to
    // need a human.
    let mut gathered = Vec::new();
    let mut first_ms = start_ms;
    for e in journal.opened_since(start_ms.saturating_sub(group)).await? {
        if e.id != esc
            && e.scope == scope
            && e.opened_ms <= start_ms
            && t.store().incident_of(e.id).await?.is_none()
        {
            first_ms = first_ms.min(e.opened_ms);
            gathered.push(e.id);
        }
    }
    gathered.push(esc);
    let body = Body {
        title: format!("{scope}: escalation {esc}"),
        severity: if human { "major" } else { "minor" }.into(),
        summary: String::new(),
        opened_by: format!("escalation {esc}"),
        closed_by: None,
        scopes: vec![scope.to_string()],
        last_start_ms: start_ms,
        set_by_hand: Vec::new(),
    };
    let (id, new) = t
        .store()
        .add_incident(
            first_ms,
            serde_json::to_string(&body).unwrap_or_default(),
            gathered,
        )
        .await?;
    if new {
        tracing::info!(incident = id, escalation = esc, scope, "incident opened");
    }
    Ok(Some(id))
}

/// Gathers `escs` into incident `id` (reopening it if it was closed).
async fn join(
    t: &TimelineHandle,
    id: i64,
    escs: Vec<u64>,
    scope: &str,
    start_ms: u64,
) -> Result<(), TimelineError> {
    let scope = scope.to_string();
    update(t, id, escs, move |i, _| {
        if !i.body.scopes.contains(&scope) {
            i.body.scopes.push(scope.clone());
        }
        i.body.last_start_ms = i.body.last_start_ms.max(start_ms);
        if i.closed_ms.is_some() && i.body.opened_by.starts_with("escalation") {
            i.closed_ms = None;
            i.body.closed_by = None;
        }
    })
    .await?;
    Ok(())
}

/// What a person would call the incident, and how severe it is, from
/// what it gathers: the failing checks, where, what holds it for a human,
/// and which levels ran how often ("web-http, web-process on nyc-1: crash
/// loop, acknowledged; restart ran 3 times"). Severity: `critical` when a
/// human is needed and the most fundamental level (1) is involved, `major`
/// when a human is needed, else `minor`. A field a person set is kept.
async fn describe(
    t: &TimelineHandle,
    journal: &Arc<dyn Store>,
    cfg: &IncidentsConfig,
    id: i64,
) -> Result<(), TimelineError> {
    let Some(row) = t.store().incident(id).await? else {
        return Ok(());
    };
    let i = Incident::of(row);
    if i.escalations.is_empty() {
        return Ok(());
    }
    let now = t.now_ms();
    let mut checks: Vec<String> = Vec::new();
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    let mut human = false;
    let mut lowest_level = u32::MAX;
    let mut states: BTreeSet<&'static str> = BTreeSet::new();
    let mut held = 0usize;
    let mut acked = 0usize;
    for esc in i.escalations.iter().rev().take(DESCRIBED) {
        let Some(row) = journal.escalation(*esc).await? else {
            continue;
        };
        let f = facts(&row);
        for c in &f.checks {
            let name = c.split('@').next().unwrap_or(c).to_string();
            if !checks.contains(&name) {
                checks.push(name);
            }
        }
        for s in &f.steps {
            *ran.entry(s.name.clone()).or_default() += 1;
            lowest_level = lowest_level.min(s.level);
        }
        if let Some(l) = f.chain.iter().min() {
            lowest_level = lowest_level.min(*l);
        }
        if !needs_human(&row, cfg, now) {
            continue;
        }
        human = true;
        held += 1;
        if row.phase == "acknowledged" {
            acked += 1;
        }
        let kinds: BTreeSet<JournalKind> = journal
            .journal(*esc)
            .await?
            .iter()
            .filter_map(|r| JournalKind::parse(&r.kind))
            .collect();
        let state = if row.phase == "awaiting-approval" {
            "waiting for approval"
        } else if kinds.contains(&JournalKind::GiveUp) {
            "gave up"
        } else if kinds.contains(&JournalKind::CrashLoop) {
            "crash loop"
        } else if kinds.contains(&JournalKind::RateLimited) {
            "rate limited"
        } else {
            "held"
        };
        states.insert(state);
    }
    let title = title(&i, &checks, &states, held, acked, &ran);
    let severity = match (human, lowest_level <= 1) {
        (true, true) => "critical",
        (true, false) => "major",
        (false, _) => "minor",
    };
    let keep_title = i.body.is_set_by_hand("title");
    let keep_severity = i.body.is_set_by_hand("severity");
    if (keep_title || i.body.title == title) && (keep_severity || i.body.severity == severity) {
        return Ok(());
    }
    update(t, id, Vec::new(), move |i, _| {
        if !i.body.is_set_by_hand("title") {
            i.body.title = title.clone();
        }
        if !i.body.is_set_by_hand("severity") {
            i.body.severity = severity.to_string();
        }
    })
    .await?;
    Ok(())
}

/// "web-http, web-process on nyc-1: crash loop, acknowledged; restart ran
/// 3 times", at most [`MAX_TITLE`] characters.
fn title(
    i: &Incident,
    checks: &[String],
    states: &BTreeSet<&'static str>,
    held: usize,
    acked: usize,
    ran: &BTreeMap<String, usize>,
) -> String {
    let list = |v: Vec<String>| {
        let more = v.len().saturating_sub(3);
        let mut s = v.into_iter().take(3).collect::<Vec<_>>().join(", ");
        if more > 0 {
            s.push_str(&format!(" and {more} more"));
        }
        s
    };
    let places: Vec<String> = i
        .body
        .scopes
        .iter()
        .map(|s| node_of(s).unwrap_or(s).to_string())
        .collect();
    let what = if checks.is_empty() {
        "checks".to_string()
    } else {
        list(checks.to_vec())
    };
    let mut how: Vec<String> = states.iter().map(|s| s.to_string()).collect();
    if held > 0 && acked == held {
        how.push("acknowledged".into());
    }
    if how.is_empty() {
        how.push("failing".into());
    }
    let mut steps: Vec<String> = ran
        .iter()
        .map(|(name, n)| match n {
            1 => format!("{name} ran once"),
            n => format!("{name} ran {n} times"),
        })
        .collect();
    steps.sort();
    let mut t = format!("{what} on {}: {}", list(places), how.join(", "));
    if !steps.is_empty() {
        t.push_str("; ");
        t.push_str(&steps.join(", "));
    }
    t.chars().take(MAX_TITLE).collect()
}

/// Closes open incidents opened by escalations once all of those ended at
/// least `cool_down` ago; closed at the moment the last one ended.
async fn close_ended(
    t: &TimelineHandle,
    journal: &Arc<dyn Store>,
    cfg: &IncidentsConfig,
) -> Result<(), TimelineError> {
    let now = t.now_ms();
    let cool = cfg.cool_down.as_millis() as u64;
    for i in list(t, true, 200).await? {
        if i.escalations.is_empty() || !i.body.opened_by.starts_with("escalation") {
            continue;
        }
        let mut ended_ms = 0;
        let mut all_ended = true;
        for e in &i.escalations {
            match journal.escalation(*e).await? {
                Some(row) if !row.open => ended_ms = ended_ms.max(row.updated_ms),
                Some(_) => all_ended = false,
                // Pruned: it ended long ago.
                None => {}
            }
        }
        if all_ended && now.saturating_sub(ended_ms) >= cool {
            update(t, i.id, Vec::new(), move |i, now| {
                if i.closed_ms.is_none() {
                    i.closed_ms = Some(if ended_ms > 0 { ended_ms } else { now });
                    i.body.closed_by = Some("its escalations ended".into());
                }
            })
            .await?;
        }
    }
    Ok(())
}

/// Follows the journal until dropped, while this server (`holder`) holds
/// the follower's lease.
pub async fn follow(
    t: TimelineHandle,
    journal: Arc<dyn Store>,
    cfg: IncidentsConfig,
    holder: String,
) {
    if cfg.open_on == OpenOn::Never {
        // Incidents opened by hand still close by hand only.
        return;
    }
    loop {
        match follow_once(&t, &journal, &cfg, &holder).await {
            Ok(FOLLOW_BATCH) => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot follow escalations into incidents"),
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}
