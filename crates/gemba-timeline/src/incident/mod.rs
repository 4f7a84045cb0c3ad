//! Incidents: what happened, gathered in one place. By default an
//! escalation held for a human opens one (a crash loop, a rate limit, a
//! spent budget, an approval waiting too long); `[incidents] open_on` can
//! make every escalation open one, only a give-up, or none. Escalations on
//! the scopes an incident covers join it, and so do those that start within
//! `group_within` of its newest one; it closes by itself `cool_down` after
//! every escalation it gathers has ended, or by hand. Its title and
//! severity follow what it gathers until a person sets them. Its timeline
//! is assembled from what the store already holds: the state changes
//! servers saw (checks, nodes, links) on its nodes, its escalations'
//! decisions, steps, holds, notices and acknowledgements, and the change
//! events around it (see gemba-views).

use gemba_store::{IncidentRow, StoreError};
use serde::{Deserialize, Serialize};

use crate::event::{self, EventError};
use crate::service::{TimelineError, TimelineHandle};

mod follow;

pub use follow::{follow, follow_once, FOLLOWER_LEASE};

pub const SEVERITIES: &[&str] = &["critical", "major", "minor"];
/// The longest title and summary.
pub const MAX_TITLE: usize = 200;
pub const MAX_SUMMARY: usize = 8000;
/// How far before an incident opened its timeline starts.
pub const LEAD: u64 = 10 * 60_000;
/// How long after it closed its timeline goes on (did it stay fixed?).
pub const TAIL: u64 = 2 * 60_000;
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
    /// Fields a person set (`title`, `severity`): derived no more.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_by_hand: Vec<String>,
}

impl Body {
    fn set_by_hand(&mut self, field: &str) {
        if !self.set_by_hand.iter().any(|f| f == field) {
            self.set_by_hand.push(field.to_string());
        }
    }

    /// Whether a person set `field`.
    pub fn is_set_by_hand(&self, field: &str) -> bool {
        self.set_by_hand.iter().any(|f| f == field)
    }
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
    pub(crate) fn of(row: IncidentRow) -> Incident {
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
        // A person chose them.
        set_by_hand: vec!["title".into(), "severity".into()],
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
            i.body.set_by_hand("title");
        }
        if let Some(x) = &edit.severity {
            i.body.severity = x.clone();
            i.body.set_by_hand("severity");
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
pub(crate) async fn update(
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
    use std::sync::Arc;

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
