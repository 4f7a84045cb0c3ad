//! Incidents: what happened, gathered in one place. An escalation opens
//! one when it starts (or when the escalator gives up, or never: `[incidents]
//! open_on`); escalations that start within `group_within` of an open
//! incident's newest one join it. It closes by itself when every escalation
//! it gathers has ended, or by hand. Its timeline is assembled from what the
//! store already holds: the state changes servers saw (checks, nodes, links)
//! on its nodes, its escalations' decisions and steps, and the change events
//! around it.

use std::sync::Arc;

use gemba_core::incidents::{IncidentsConfig, OpenOn};
use gemba_core::journal::JournalKind;
use gemba_store::{IncidentRow, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::event::{self, EventError};
use crate::service::{TimelineError, TimelineHandle, FOLLOW_EVERY};

pub const SEVERITIES: &[&str] = &["critical", "major", "minor"];
/// The longest title and summary.
pub const MAX_TITLE: usize = 200;
pub const MAX_SUMMARY: usize = 8000;
/// How far before an incident opened its timeline starts.
pub const LEAD: u64 = 10 * 60_000;
/// How long after it closed its timeline goes on (did it stay fixed?).
pub const TAIL: u64 = 2 * 60_000;
/// Journal lines read per pass.
const FOLLOW_BATCH: usize = 500;
/// The most timeline entries of each source.
pub const MAX_ENTRIES: usize = 2000;

/// What is kept of an incident beside its indexed fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub title: String,
    pub severity: String,
    #[serde(default)]
    pub summary: String,
    /// `escalation 12`, or who opened it by hand.
    pub opened_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    /// The scopes of its escalations (`node:web-1`), and nodes named by hand.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// When its newest escalation started.
    #[serde(default)]
    pub last_start_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Incident {
    pub id: i64,
    pub opened_ms: u64,
    pub closed_ms: Option<u64>,
    pub version: i64,
    pub escalations: Vec<u64>,
    pub body: Body,
}

impl Incident {
    fn of(row: IncidentRow) -> Incident {
        Incident {
            id: row.id,
            opened_ms: row.opened_ms,
            closed_ms: row.closed_ms,
            version: row.version,
            escalations: row.escalations,
            body: serde_json::from_str(&row.body).unwrap_or_default(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.closed_ms.is_none()
    }

    /// The nodes it is about: those of its node scopes.
    pub fn nodes(&self) -> Vec<String> {
        self.body
            .scopes
            .iter()
            .filter_map(|s| s.strip_prefix("node:"))
            .map(str::to_string)
            .collect()
    }
}

/// Checks a title, severity and summary as given by a person.
pub fn check_fields(
    title: Option<&str>,
    severity: Option<&str>,
    summary: Option<&str>,
) -> Result<(), EventError> {
    if let Some(t) = title {
        let n = t.trim().chars().count();
        if n == 0 || n > MAX_TITLE {
            return Err(EventError(format!(
                "title: 1 to {MAX_TITLE} characters, got {n}"
            )));
        }
        event::no_controls("title", t)?;
    }
    if let Some(s) = severity {
        if !SEVERITIES.contains(&s) {
            return Err(EventError(format!(
                "severity {:?} is not one of {}",
                s.chars().take(40).collect::<String>(),
                SEVERITIES.join(", ")
            )));
        }
    }
    if let Some(s) = summary {
        if s.chars().count() > MAX_SUMMARY {
            return Err(EventError(format!(
                "summary: at most {MAX_SUMMARY} characters"
            )));
        }
        event::no_controls_but_lines("summary", s)?;
    }
    Ok(())
}

/// Opens an incident by hand.
pub async fn open(
    t: &TimelineHandle,
    title: &str,
    severity: &str,
    summary: &str,
    by: &str,
    nodes: &[String],
) -> Result<i64, TimelineError> {
    check_fields(Some(title), Some(severity), Some(summary))?;
    if let Some(bad) = nodes.iter().find(|n| !gemba_core::ids::is_name(n)) {
        return Err(EventError(format!(
            "node {:?} is not a name",
            bad.chars().take(64).collect::<String>()
        ))
        .into());
    }
    let now = t.now_ms();
    let body = Body {
        title: title.trim().to_string(),
        severity: severity.to_string(),
        summary: summary.to_string(),
        opened_by: by.to_string(),
        closed_by: None,
        scopes: nodes.iter().map(|n| format!("node:{n}")).collect(),
        last_start_ms: now,
    };
    Ok(t.store()
        .add_incident(
            now,
            serde_json::to_string(&body).unwrap_or_default(),
            Vec::new(),
        )
        .await?
        .0)
}

pub async fn get(t: &TimelineHandle, id: i64) -> Result<Option<Incident>, TimelineError> {
    Ok(t.store().incident(id).await?.map(Incident::of))
}

pub async fn list(
    t: &TimelineHandle,
    open_only: bool,
    limit: usize,
) -> Result<Vec<Incident>, TimelineError> {
    Ok(t.store()
        .incidents(open_only, limit)
        .await?
        .into_iter()
        .map(Incident::of)
        .collect())
}

/// A change a person asks for.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    pub title: Option<String>,
    pub severity: Option<String>,
    pub summary: Option<String>,
    /// `true` closes it, `false` opens it again.
    pub closed: Option<bool>,
}

/// Applies `edit` by `by`; two people editing at once both get their
/// change in (the loser of a race reads again and reapplies).
pub async fn edit(
    t: &TimelineHandle,
    id: i64,
    edit: &Edit,
    by: &str,
) -> Result<Option<Incident>, TimelineError> {
    check_fields(
        edit.title.as_deref(),
        edit.severity.as_deref(),
        edit.summary.as_deref(),
    )?;
    update(t, id, Vec::new(), |i, now| {
        if let Some(x) = &edit.title {
            i.body.title = x.trim().to_string();
        }
        if let Some(x) = &edit.severity {
            i.body.severity = x.clone();
        }
        if let Some(x) = &edit.summary {
            i.body.summary = x.clone();
        }
        match edit.closed {
            Some(true) if i.closed_ms.is_none() => {
                i.closed_ms = Some(now);
                i.body.closed_by = Some(by.to_string());
            }
            Some(false) => {
                i.closed_ms = None;
                i.body.closed_by = None;
            }
            _ => {}
        }
    })
    .await
}

/// Reads, changes and writes an incident until the write is not raced.
async fn update(
    t: &TimelineHandle,
    id: i64,
    gather: Vec<u64>,
    change: impl Fn(&mut Incident, u64),
) -> Result<Option<Incident>, TimelineError> {
    for _ in 0..16 {
        let Some(mut i) = get(t, id).await? else {
            return Ok(None);
        };
        change(&mut i, t.now_ms());
        let body = serde_json::to_string(&i.body).unwrap_or_default();
        if t.store()
            .update_incident(id, i.version, i.closed_ms, body, gather.clone())
            .await?
        {
            return get(t, id).await;
        }
    }
    Err(TimelineError::Store(StoreError::Query(
        "the incident is being changed too often; try again".into(),
    )))
}

/// The lease that lets one server at a time turn escalations into
/// incidents, so that servers sharing a store group escalations as one
/// server would. No check can have this scope (theirs are `global`,
/// `tier:…` or `node:…`).
pub const FOLLOWER_LEASE: &str = "task:incidents";
/// How long a pass holds it: another server follows once it has passed
/// without a renewal (the holder stopped or lost the store).
const FOLLOWER_TTL_MS: u64 = 30_000;

/// One pass over new journal lines: escalations open or join incidents,
/// incidents whose escalations all ended close. Returns lines read; none
/// while another server (`holder` names this one) holds the follower's
/// lease.
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
    let opening = match cfg.open_on {
        OpenOn::Start => Some(JournalKind::Decision),
        OpenOn::GiveUp => Some(JournalKind::GiveUp),
        OpenOn::Never => None,
    };
    for r in &rows {
        let Some(esc) = r.escalation else { continue };
        // The escalator journals an opening, and only an opening, as a
        // decision (held at opening, in plan mode or by a rate limit or a
        // crash loop, has kinds of its own): the kind says it, whatever
        // the words.
        if opening.is_none()
            || JournalKind::parse(&r.kind) != opening
            || store.incident_of(esc).await?.is_some()
        {
            continue;
        }
        gather(t, cfg, esc, &r.scope, r.at_ms, &r.text).await?;
    }
    close_ended(t, journal).await?;
    if let Some(last) = rows.last() {
        store
            .set_timeline_value(CURSOR, &last.seq.to_string())
            .await?;
    }
    Ok(rows.len())
}

/// Puts escalation `esc` into the open incident it started near, or a new one.
async fn gather(
    t: &TimelineHandle,
    cfg: &IncidentsConfig,
    esc: u64,
    scope: &str,
    at_ms: u64,
    why: &str,
) -> Result<(), TimelineError> {
    let near = list(t, true, 50).await?.into_iter().find(|i| {
        i.body.opened_by.starts_with("escalation")
            && at_ms.saturating_sub(i.body.last_start_ms) <= cfg.group_within.as_millis() as u64
    });
    if let Some(i) = near {
        let scope = scope.to_string();
        update(t, i.id, vec![esc], move |i, _| {
            if !i.body.scopes.contains(&scope) {
                i.body.scopes.push(scope.clone());
            }
            i.body.last_start_ms = i.body.last_start_ms.max(at_ms);
        })
        .await?;
        return Ok(());
    }
    let first = why.lines().next().unwrap_or("");
    let body = Body {
        title: format!("{scope}: {first}")
            .chars()
            .take(MAX_TITLE)
            .collect(),
        severity: "major".into(),
        summary: String::new(),
        opened_by: format!("escalation {esc}"),
        closed_by: None,
        scopes: vec![scope.to_string()],
        last_start_ms: at_ms,
    };
    let (id, new) = t
        .store()
        .add_incident(
            at_ms,
            serde_json::to_string(&body).unwrap_or_default(),
            vec![esc],
        )
        .await?;
    if new {
        tracing::info!(incident = id, escalation = esc, scope, "incident opened");
    }
    Ok(())
}

/// Closes open incidents opened by escalations once all of those ended.
async fn close_ended(t: &TimelineHandle, journal: &Arc<dyn Store>) -> Result<(), TimelineError> {
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
        if all_ended {
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

/// One line of an incident's timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    pub at_ms: u64,
    /// `check`, `node`, `link`, `escalation`, `event` or `market`.
    pub source: String,
    pub text: String,
    /// Where to read more, on this server's console.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> TimelineHandle {
        TimelineHandle::new(
            Arc::new(gemba_store::SqliteStore::in_memory().unwrap()),
            gemba_exec::Clock::new(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn edits_made_at_once_are_all_kept() {
        let t = handle();
        let id = open(&t, "checkout slow", "minor", "", "ana", &["web-1".into()])
            .await
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..8 {
            let t = t.clone();
            tasks.spawn(async move {
                let e = match n % 2 {
                    0 => Edit {
                        severity: Some("critical".into()),
                        ..Default::default()
                    },
                    _ => Edit {
                        summary: Some("a slow database replica".into()),
                        ..Default::default()
                    },
                };
                edit(&t, id, &e, "bo").await.unwrap()
            });
        }
        while tasks.join_next().await.is_some() {}
        let i = get(&t, id).await.unwrap().unwrap();
        assert_eq!(i.body.severity, "critical");
        assert_eq!(i.body.summary, "a slow database replica");
        assert_eq!(i.version, 9, "eight writes, none lost");
        assert_eq!(i.nodes(), ["web-1"]);
    }

    #[tokio::test]
    async fn bad_fields_are_refused_by_name() {
        let t = handle();
        for (title, sev, why) in [
            ("", "major", "title"),
            ("a\u{1b}[2Jb", "major", "control character"),
            ("ok", "urgent", "critical, major, minor"),
        ] {
            let e = open(&t, title, sev, "", "ana", &[]).await.unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
        let e = open(&t, "ok", "major", "", "ana", &["../x".into()])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not a name"), "{e}");
        assert!(
            list(&t, false, 10).await.unwrap().is_empty(),
            "nothing stored"
        );
    }
}
