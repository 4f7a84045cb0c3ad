//! The morning market: what changed among the problems since the previous
//! market — new, regressed, still open (with owner and age), resolved —
//! most severe first, short enough for one screen on a normal day.

use gemba_core::markdown::cell as md_cell;
use serde::Serialize;

use crate::problem::{Problem, Status};
use crate::time::format_ms;

/// One problem as the market lists it.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub id: String,
    pub kind: &'static str,
    pub title: String,
    pub why: String,
    pub category: String,
    pub severity: &'static str,
    pub score: f64,
    pub status: &'static str,
    pub owner: Option<String>,
    pub cause: Option<String>,
    pub nodes: u64,
    pub occurrences: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// Days since first seen.
    pub age_days: u64,
    pub sample_node: String,
    pub resource: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Closed by hand: the reason and who.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RunStats {
    pub runs: u64,
    pub failed: u64,
    pub nodes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Market {
    /// The window: since the previous market, until this one.
    pub since: String,
    pub until: String,
    pub runs: RunStats,
    pub new: Vec<Entry>,
    pub regressed: Vec<Entry>,
    pub open: Vec<Entry>,
    pub resolved: Vec<Entry>,
}

impl Market {
    /// The market for the window [`since_ms`, `until_ms`).
    pub fn build<'a>(
        problems: impl Iterator<Item = &'a Problem>,
        since_ms: u64,
        until_ms: u64,
        runs: RunStats,
    ) -> Market {
        let mut m = Market {
            since: format_ms(since_ms),
            until: format_ms(until_ms),
            runs,
            new: Vec::new(),
            regressed: Vec::new(),
            open: Vec::new(),
            resolved: Vec::new(),
        };
        let within = |t: Option<u64>| t.is_some_and(|t| t >= since_ms && t < until_ms);
        for p in problems {
            if p.first_seen_ms >= until_ms {
                continue;
            }
            let e = entry(p, until_ms);
            if p.status == Status::Resolved {
                if within(p.resolved_ms) {
                    m.resolved.push(e);
                }
            } else if p.status == Status::Regressed && within(p.regressed_ms) {
                m.regressed.push(e);
            } else if within(Some(p.first_seen_ms)) {
                m.new.push(e);
            } else {
                m.open.push(e);
            }
        }
        for list in [&mut m.new, &mut m.regressed, &mut m.open, &mut m.resolved] {
            list.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        }
        m
    }

    pub fn to_text(&self) -> String {
        self.render(false)
    }

    pub fn to_markdown(&self) -> String {
        self.render(true)
    }

    fn render(&self, md: bool) -> String {
        let mut out = String::new();
        let h = if md { "## " } else { "" };
        out.push_str(&format!(
            "{}Morning market {} → {}\n",
            if md { "# " } else { "" },
            self.since,
            self.until
        ));
        out.push_str(&format!(
            "{} runs from {} nodes, {} failed · {} new, {} regressed, {} still open, {} resolved\n",
            self.runs.runs,
            self.runs.nodes,
            self.runs.failed,
            self.new.len(),
            self.regressed.len(),
            self.open.len(),
            self.resolved.len()
        ));
        for (name, list) in [
            ("New", &self.new),
            ("Regressed", &self.regressed),
            ("Still open", &self.open),
            ("Resolved", &self.resolved),
        ] {
            if list.is_empty() {
                continue;
            }
            out.push_str(&format!("\n{h}{name} ({})\n", list.len()));
            if md {
                out.push_str("\n| id | severity | kind | problem | nodes | owner | age | cause |\n|---|---|---|---|---|---|---|---|\n");
            }
            for e in list {
                let owner = e.owner.as_deref().unwrap_or("—");
                let cause = e.cause.as_deref().unwrap_or("unknown");
                if md {
                    out.push_str(&format!(
                        "| {} | {} | {} | {} ({}) | {} | {} | {}d | {} |\n",
                        e.id,
                        e.severity,
                        e.kind,
                        md_cell(&e.title),
                        md_cell(&e.why),
                        e.nodes,
                        md_cell(owner),
                        e.age_days,
                        md_cell(cause)
                    ));
                } else {
                    out.push_str(&format!(
                        "  {:<6} {:<8} {:<17} {}\n         {} · {} node(s) · owner {} · {}d old · cause {}\n",
                        e.id, e.severity, e.kind, e.title, e.why, e.nodes, owner, e.age_days, cause
                    ));
                }
            }
        }
        if self.new.len() + self.regressed.len() + self.open.len() + self.resolved.len() == 0 {
            out.push_str("\nNo problems: every run was clean.\n");
        }
        out
    }
}

fn entry(p: &Problem, now_ms: u64) -> Entry {
    let closed = p
        .closed
        .as_ref()
        .map(|c| format!("closed by hand: {} ({})", c.reason, c.by));
    Entry {
        id: p.label(),
        kind: p.kind.as_str(),
        title: p.title.clone(),
        why: match &closed {
            Some(c) => format!("{} · {c}", p.why),
            None => p.why.clone(),
        },
        closed,
        category: p.category.clone(),
        severity: p.severity.as_str(),
        score: p.score(now_ms),
        status: p.status.as_str(),
        owner: p.owner.clone(),
        cause: p.cause.clone(),
        nodes: p.nodes_total,
        occurrences: p.occurrences,
        first_seen: format_ms(p.first_seen_ms),
        last_seen: format_ms(p.last_seen_ms),
        age_days: now_ms.saturating_sub(p.first_seen_ms) / 86_400_000,
        sample_node: p.sample.node.clone(),
        resource: p.sample.resource.clone(),
        file: p.sample.file.clone(),
        line: p.sample.line,
    }
}

/// `1h`, `36m`, `2d 3h`: a span for people.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s}s"),
        _ if s.is_multiple_of(3600) && s < 172_800 => format!("{}h", s / 3600),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The window of the market of `date` (`YYYY-MM-DD`): the 24 hours up to
/// that day's market time in `timezone`. Without a date: the 24 hours up
/// to now.
pub fn window(
    date: Option<&str>,
    at: (u8, u8),
    timezone: &str,
    now_ms: u64,
) -> Result<(u64, u64), String> {
    let until = match date {
        None => now_ms,
        Some(d) => {
            let day: jiff::civil::Date = d.parse().map_err(|_| {
                format!(
                    "date {:?} is not a day such as 2026-11-23",
                    crate::run::cut_to(d, 40)
                )
            })?;
            let tz = jiff::tz::TimeZone::get(timezone)
                .map_err(|e| format!("time zone {timezone:?}: {e}"))?;
            let zoned = day
                .at(at.0 as i8, at.1 as i8, 0, 0)
                .to_zoned(tz)
                .map_err(|e| format!("{d} {}:{}: {e}", at.0, at.1))?;
            let ms = zoned.timestamp().as_millisecond();
            if ms < 86_400_000 {
                return Err(format!("date {d} is too early"));
            }
            ms as u64
        }
    };
    Ok((until.saturating_sub(86_400_000), until))
}
