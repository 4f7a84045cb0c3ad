//! A post-mortem as Markdown notes to send or keep: the incident, its
//! timeline, its charts, the round (what each person shared), the notes,
//! the proposals with the tally, and the action items. Text from people
//! and reports is escaped for Markdown, never for HTML.

use std::fmt::Write;

use gemba_core::markdown::{cell as md_cell, item as md_item, text as md};
use gemba_store::ActionRow;

use crate::event::format_ms;
use crate::incident::{Entry, Incident};
use crate::postmortem::{Count, Postmortem};

/// The day of a time, `2026-12-15`.
fn day(ms: u64) -> String {
    format_ms(ms).get(..10).unwrap_or("?").to_string()
}

pub fn markdown(
    i: &Incident,
    pm: &Postmortem,
    entries: &[Entry],
    charts: &[(String, String, Vec<u8>)],
    tally: Option<&[Count]>,
    actions: &[ActionRow],
) -> String {
    let b = &pm.body;
    let mut m = String::new();
    let _ = writeln!(m, "# Post-mortem: I-{} {}\n", i.id, md(&i.body.title));
    let _ = writeln!(
        m,
        "- Incident: I-{}, {}, opened {}{}",
        i.id,
        md(&i.body.severity),
        format_ms(i.opened_ms),
        i.closed_ms
            .map(|c| format!(", closed {}", format_ms(c)))
            .unwrap_or_else(|| ", still open".into())
    );
    if !i.body.scopes.is_empty() {
        let _ = writeln!(m, "- Scopes: {}", md(&i.body.scopes.join(", ")));
    }
    let _ = writeln!(
        m,
        "- Facilitator: {}; note keeper: {}; time keeper: {}",
        md(&b.facilitator),
        md(&b.note_keeper),
        md(&b.time_keeper)
    );
    let shared = b.participants.iter().filter(|p| p.contributed()).count();
    let _ = writeln!(
        m,
        "- Participants: {} ({shared} of {} shared a success, a failure and something to do better)",
        md(&b
            .participants
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")),
        b.participants.len()
    );
    let _ = writeln!(m, "- Post-mortem: {}\n", pm.phase.as_str());
    if !i.body.summary.trim().is_empty() {
        let _ = writeln!(m, "## Summary\n\n{}\n", md(i.body.summary.trim()));
    }
    if !b.notes.trim().is_empty() {
        let _ = writeln!(m, "## Notes\n\n{}\n", md(b.notes.trim()));
    }
    let _ = writeln!(m, "## Timeline\n");
    if entries.is_empty() {
        let _ = writeln!(m, "Nothing was recorded in its window.\n");
    } else {
        let _ = writeln!(m, "| time (UTC) | source | what |\n|---|---|---|");
        for e in entries {
            let _ = writeln!(
                m,
                "| {} | {} | {} |",
                format_ms(e.at_ms),
                md_cell(&e.source),
                md_cell(&e.text)
            );
        }
        m.push('\n');
    }
    if !charts.is_empty() {
        let _ = writeln!(m, "## Charts\n");
        for (name, title, _) in charts {
            let _ = writeln!(m, "![{}]({name})\n", md_cell(title));
        }
    }
    let _ = writeln!(m, "## The round\n");
    for p in &b.participants {
        let roles = pm.roles(&p.name);
        let _ = writeln!(
            m,
            "### {}{}\n",
            md(&p.name),
            if roles.is_empty() {
                String::new()
            } else {
                format!(" ({})", roles.join(", "))
            }
        );
        if !p.contributed() && p.success.is_empty() && p.failure.is_empty() && p.better.is_empty() {
            let _ = writeln!(m, "Did not share.\n");
            continue;
        }
        for (label, v) in [
            ("Success", &p.success),
            ("Failure", &p.failure),
            ("Do better", &p.better),
        ] {
            let text = if v.is_empty() { "-" } else { v.as_str() };
            let _ = writeln!(m, "- **{label}:** {}", md_item(text));
        }
        m.push('\n');
    }
    let _ = writeln!(m, "## The vote\n");
    match tally {
        None if b.vote_skipped => {
            let _ = writeln!(m, "No proposals were made: the vote was skipped.\n");
        }
        None => {
            let _ = writeln!(m, "Proposals ({}), not voted on yet:\n", pm.phase.as_str());
            for p in &b.proposals {
                let _ = writeln!(m, "- {} (by {})", md_item(&p.text), md(&p.by));
            }
            m.push('\n');
        }
        Some(counts) => {
            let _ = writeln!(
                m,
                "{} of {} ballots cast, anonymously; each ballot approves any number of proposals.\n",
                pm.ballots_cast, pm.ballots
            );
            let _ = writeln!(m, "| proposal | approvals |\n|---|---|");
            for c in counts {
                let text = md_cell(&c.text);
                let _ = writeln!(
                    m,
                    "| {} | {} |",
                    if c.winner {
                        format!("**{text}** (chosen)")
                    } else {
                        text
                    },
                    c.approvals
                );
            }
            m.push('\n');
        }
    }
    let _ = writeln!(m, "## Action items\n");
    if actions.is_empty() {
        let _ = writeln!(m, "None yet.");
    }
    for a in actions {
        let _ = writeln!(
            m,
            "- [{}] {}: owner {}{}{}",
            if a.done_ms.is_some() { "x" } else { " " },
            md_item(&a.text),
            md(&a.owner),
            a.due()
                .map(|d| format!(", due {}", day(d)))
                .unwrap_or_default(),
            a.done_ms
                .map(|d| format!(", done {}", day(d)))
                .unwrap_or_default()
        );
    }
    m
}
