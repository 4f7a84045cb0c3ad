//! The morning market: what changed among the problems since the previous
//! market — new, regressed, still open (with owner and age), resolved —
//! most severe first, short enough for one screen on a normal day.

use gemba_core::markdown::cell as md_cell;
use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Status};
use crate::time::format_ms;

/// One problem as the market lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub kind: String,
    pub title: String,
    pub why: String,
    pub category: String,
    pub severity: String,
    pub score: f64,
    pub status: String,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunStats {
    pub runs: u64,
    pub failed: u64,
    pub nodes: u64,
}

/// How many problems the "needs attention" list of a rendered market
/// shows.
pub const ATTENTION: usize = 10;
/// How many problems each section of a rendered market shows besides
/// those needing attention; the rest are counted ("and 12 more").
pub const SECTION_CAP: usize = 8;

/// Problem ids in number order (`P-33` before `P-100`).
pub fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    let n = |s: &str| {
        s.trim_start_matches("P-")
            .parse::<u64>()
            .unwrap_or(u64::MAX)
    };
    n(a).cmp(&n(b)).then_with(|| a.cmp(b))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Market {
    /// The window: since the previous market, until this one.
    pub since: String,
    pub until: String,
    pub runs: RunStats,
    pub new: Vec<Entry>,
    pub regressed: Vec<Entry>,
    pub open: Vec<Entry>,
    pub resolved: Vec<Entry>,
    /// Unresolved problems not seen for longer than the retention (old
    /// history imported today, say): counted, not listed as still open.
    #[serde(default)]
    pub history: usize,
    /// When this day's record was stored, for a past day read from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<String>,
    /// What changed among its problems since it was recorded (status,
    /// owner, cause; problems of its window that arrived later).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_since: Vec<String>,
}

/// The stored value holding a day's market, as it was at its market time.
pub fn record_key(day: &str) -> String {
    format!("market.edition.{day}")
}

/// Most lines of "changed since" a record lists.
const CHANGED_LINES: usize = 20;

impl Market {
    /// The market for the window [`since_ms`, `until_ms`).
    pub fn build<'a>(
        problems: impl Iterator<Item = &'a Problem>,
        since_ms: u64,
        until_ms: u64,
        runs: RunStats,
    ) -> Market {
        Market::build_with(problems, since_ms, until_ms, runs, u64::MAX)
    }

    /// The same, with unresolved problems not seen for `history_after_ms`
    /// counted as history instead of listed as still open.
    pub fn build_with<'a>(
        problems: impl Iterator<Item = &'a Problem>,
        since_ms: u64,
        until_ms: u64,
        runs: RunStats,
        history_after_ms: u64,
    ) -> Market {
        let mut m = Market {
            since: format_ms(since_ms),
            until: format_ms(until_ms),
            runs,
            new: Vec::new(),
            regressed: Vec::new(),
            open: Vec::new(),
            resolved: Vec::new(),
            history: 0,
            recorded: None,
            changed_since: Vec::new(),
        };
        let within = |t: Option<u64>| t.is_some_and(|t| t >= since_ms && t < until_ms);
        for p in problems {
            if p.first_seen_ms >= until_ms {
                continue;
            }
            let e = entry(p, until_ms);
            // By what happened within the window, not by the status now: a
            // problem new that day stays new in that day's market after it
            // resolved.
            if p.status == Status::Resolved && within(p.resolved_ms) {
                m.resolved.push(e);
            } else if within(p.regressed_ms) {
                m.regressed.push(e);
            } else if within(Some(p.first_seen_ms)) {
                m.new.push(e);
            } else if p.status == Status::Resolved && p.resolved_ms.is_some_and(|t| t < since_ms) {
                // Over before the window began.
            } else if until_ms.saturating_sub(p.last_seen_ms) > history_after_ms {
                m.history += 1;
            } else {
                m.open.push(e);
            }
        }
        for list in [&mut m.new, &mut m.regressed, &mut m.open, &mut m.resolved] {
            list.sort_by(|a, b| b.score.total_cmp(&a.score).then(id_order(&a.id, &b.id)));
        }
        m
    }

    /// Every problem listed, whatever its section.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.new
            .iter()
            .chain(&self.regressed)
            .chain(&self.open)
            .chain(&self.resolved)
    }

    /// Lines saying what changed among this record's problems since it was
    /// stored, compared with `now` (the same window built from today's
    /// problems): status, owner and cause, and problems that arrived later.
    pub fn changes_since(&self, now: &Market) -> Vec<String> {
        let current: std::collections::HashMap<&str, &Entry> =
            now.entries().map(|e| (e.id.as_str(), e)).collect();
        let mut lines = Vec::new();
        for e in self.entries() {
            let Some(c) = current.get(e.id.as_str()) else {
                continue;
            };
            let mut what = Vec::new();
            if c.status != e.status {
                what.push(format!("{} (was {})", c.status, e.status));
            }
            if c.owner != e.owner {
                what.push(format!(
                    "owner {} (was {})",
                    c.owner.as_deref().unwrap_or("—"),
                    e.owner.as_deref().unwrap_or("—")
                ));
            }
            if c.cause != e.cause {
                what.push(format!(
                    "cause {}",
                    c.cause
                        .as_deref()
                        .map_or("cleared".to_string(), |x| format!("\"{x}\""))
                ));
            }
            if !what.is_empty() {
                lines.push(format!("{}: {}", e.id, what.join(", ")));
            }
        }
        let recorded: std::collections::HashSet<&str> =
            self.entries().map(|e| e.id.as_str()).collect();
        let late: Vec<&str> = now
            .entries()
            .map(|e| e.id.as_str())
            .filter(|id| !recorded.contains(id))
            .collect();
        if !late.is_empty() {
            lines.push(format!(
                "{} problem(s) of this day arrived later (runs sent late): {}",
                late.len(),
                late.join(", ")
            ));
        }
        lines.sort_by(|a, b| {
            id_order(
                a.split(':').next().unwrap_or(a),
                b.split(':').next().unwrap_or(b),
            )
        });
        let more = lines.len().saturating_sub(CHANGED_LINES);
        lines.truncate(CHANGED_LINES);
        if more > 0 {
            lines.push(format!("… and {more} more changes"));
        }
        lines
    }

    pub fn to_text(&self) -> String {
        self.render(false)
    }

    pub fn to_markdown(&self) -> String {
        self.render(true)
    }

    /// The unresolved problems most worth a look first, by score across
    /// new, regressed and still open: a critical regressed problem comes
    /// before a low new one.
    pub fn needs_attention(&self) -> Vec<&Entry> {
        let mut all: Vec<&Entry> = self
            .new
            .iter()
            .chain(&self.regressed)
            .chain(&self.open)
            .collect();
        all.sort_by(|a, b| b.score.total_cmp(&a.score).then(id_order(&a.id, &b.id)));
        all.truncate(ATTENTION);
        all
    }

    /// What a rendered section lists: its entries not in the attention
    /// list, at most [`SECTION_CAP`], and how many are left out.
    pub fn shown<'a>(list: &'a [Entry], attention: &[&Entry]) -> (Vec<&'a Entry>, usize) {
        let rest: Vec<&Entry> = list
            .iter()
            .filter(|e| !attention.iter().any(|a| a.id == e.id))
            .collect();
        let left = rest.len().saturating_sub(SECTION_CAP);
        (rest.into_iter().take(SECTION_CAP).collect(), left)
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
        if let Some(at) = &self.recorded {
            out.push_str(&format!(
                "{}As recorded at {at}.{}\n",
                if md { "\n" } else { "" },
                if self.changed_since.is_empty() {
                    " Nothing changed since."
                } else {
                    " Changed since:"
                }
            ));
            for line in &self.changed_since {
                out.push_str(&format!("{}{line}\n", if md { "- " } else { "  " }));
            }
        }
        let attention = self.needs_attention();
        let unresolved = self.new.len() + self.regressed.len() + self.open.len();
        let attention_name = format!(
            "Needs attention ({} of {unresolved} unresolved, by score)",
            attention.len()
        );
        let sections: Vec<(&str, Vec<&Entry>, usize, usize)> = std::iter::once((
            attention_name.as_str(),
            attention.clone(),
            0,
            attention.len(),
        ))
        .chain(
            [
                ("New", &self.new),
                ("Regressed", &self.regressed),
                ("Still open", &self.open),
                ("Resolved", &self.resolved),
            ]
            .into_iter()
            .map(|(name, list)| {
                let (shown, left) = Market::shown(list, &attention);
                (name, shown, left, list.len())
            }),
        )
        .collect();
        for (name, list, left, total) in sections {
            if list.is_empty() && left == 0 {
                continue;
            }
            if name.starts_with("Needs attention") {
                out.push_str(&format!("\n{h}{name}\n"));
            } else if total > list.len() + left {
                out.push_str(&format!(
                    "\n{h}{name} ({total}; those above not repeated)\n"
                ));
            } else {
                out.push_str(&format!("\n{h}{name} ({total})\n"));
            }
            if md && !list.is_empty() {
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
                        "  {:<6} {:<8} {:<17} {}\n         {} · {} · {} node(s) · owner {} · {}d old · cause {}\n",
                        e.id, e.severity, e.kind, e.title, e.status, e.why, e.nodes, owner, e.age_days, cause
                    ));
                }
            }
            if left > 0 {
                out.push_str(&format!(
                    "{}… and {left} more (gemba problem list, or GET /api/v1/problems)\n",
                    if md { "\n" } else { "  " }
                ));
            }
        }
        if self.history > 0 {
            out.push_str(&format!(
                "\n{} unresolved problem{} not seen within the retention {} history, not listed (gemba problem list --all)\n",
                self.history,
                if self.history == 1 { "" } else { "s" },
                if self.history == 1 { "is" } else { "are" }
            ));
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
        kind: p.kind.as_str().to_string(),
        title: p.title.clone(),
        why: match &closed {
            Some(c) => format!("{} · {c}", p.why),
            None => p.why.clone(),
        },
        closed,
        category: p.category.clone(),
        severity: p.severity.as_str().to_string(),
        score: p.score(now_ms),
        status: p.status.as_str().to_string(),
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

/// The edition days before and after the one `date` names (today's
/// without it): for a page's "previous day" and "next day"; no next day
/// past today.
pub fn days_around(
    date: Option<&str>,
    timezone: &str,
    now_ms: u64,
) -> Result<(String, String, Option<String>), String> {
    let tz =
        jiff::tz::TimeZone::get(timezone).map_err(|e| format!("time zone {timezone:?}: {e}"))?;
    let today = jiff::Timestamp::from_millisecond(now_ms as i64)
        .map_err(|e| e.to_string())?
        .to_zoned(tz)
        .date();
    let day: jiff::civil::Date = match date {
        None => today,
        Some(d) => d.parse().map_err(|_| {
            format!(
                "date {:?} is not a day such as 2026-11-23",
                crate::run::cut_to(d, 40)
            )
        })?,
    };
    let prev = day.yesterday().map_err(|e| e.to_string())?;
    let next = day.tomorrow().ok().filter(|n| *n <= today);
    Ok((
        day.to_string(),
        prev.to_string(),
        next.map(|n| n.to_string()),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: u64, status: &'static str, severity: &'static str, score: f64) -> Entry {
        Entry {
            id: format!("P-{id}"),
            kind: "run-failure".into(),
            title: format!("problem {id}"),
            why: "why".into(),
            category: "configuration".into(),
            severity: severity.into(),
            score,
            status: status.into(),
            owner: None,
            cause: None,
            nodes: 1,
            occurrences: 1,
            first_seen: String::new(),
            last_seen: String::new(),
            age_days: 0,
            sample_node: "n1".into(),
            resource: None,
            file: None,
            line: None,
            closed: None,
        }
    }

    fn market(new: Vec<Entry>, regressed: Vec<Entry>, open: Vec<Entry>) -> Market {
        Market {
            since: "s".into(),
            until: "u".into(),
            runs: RunStats::default(),
            new,
            regressed,
            open,
            resolved: Vec::new(),
            history: 0,
            recorded: None,
            changed_since: Vec::new(),
        }
    }

    #[test]
    fn the_urgent_comes_first_whatever_its_section_and_ids_sort_as_numbers() {
        let m = market(
            vec![e(100, "new", "low", 1.0), e(33, "new", "low", 1.0)],
            vec![e(7, "regressed", "critical", 9.0)],
            vec![],
        );
        let first: Vec<&str> = m.needs_attention().iter().map(|e| e.id.as_str()).collect();
        assert_eq!(first, vec!["P-7", "P-33", "P-100"]);
        let text = m.to_text();
        let at = |needle: &str| text.find(needle).unwrap_or(usize::MAX);
        assert!(
            at("Needs attention (3 of 3 unresolved") < at("P-7"),
            "{text}"
        );
        assert!(at("P-7") < at("P-33") && at("P-33") < at("P-100"), "{text}");
        // Listed once: not again under New or Regressed.
        assert_eq!(text.matches("problem 33").count(), 1, "{text}");
    }

    #[test]
    fn a_bad_day_stays_one_screen() {
        // 500 silent nodes' worth of problems, all new.
        let new: Vec<Entry> = (1..=500)
            .map(|i| e(i, "new", "medium", 2.0 - i as f64 / 1000.0))
            .collect();
        let m = market(new, vec![e(900, "regressed", "critical", 9.0)], vec![]);
        let text = m.to_text();
        assert!(
            text.lines().count() <= 60,
            "{} lines:\n{text}",
            text.lines().count()
        );
        assert!(
            text.contains("… and 483 more (gemba problem list"),
            "{text}"
        );
        assert!(
            text.contains("New (500; those above not repeated)"),
            "{text}"
        );
    }
}
