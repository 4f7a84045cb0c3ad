//! An incident's timeline: what happened on its nodes and scopes from a
//! while before it opened to a while after it closed. It reads three
//! stages at once, which is why it lives here: the escalator's journal of
//! its escalations (converge), state changes and change events (learn),
//! and the morning market's problems on its nodes (review). The incident
//! page, its API answer and the post-mortem's export all use [`timeline`].

use std::collections::BTreeSet;
use std::sync::Arc;

use gemba_market::service::MarketHandle;
use gemba_store::Store;
use gemba_timeline::event::format_ms;
use gemba_timeline::incident::{Entry, Incident, LEAD, MAX_ENTRIES, TAIL};
use gemba_timeline::{TimelineError, TimelineHandle};

/// The window an incident's timeline covers: from `LEAD` before it opened
/// to `TAIL` after it closed (or now, while it is open).
pub fn window(i: &Incident, now_ms: u64) -> (u64, u64) {
    let until = i
        .closed_ms
        .map(|c| c + TAIL)
        .unwrap_or(now_ms)
        .min(now_ms.max(i.opened_ms));
    (i.opened_ms.saturating_sub(LEAD), until)
}

/// The timeline of `i`, oldest first: state changes on its nodes and of
/// its scopes' checks, its escalations' journal, change events about its
/// nodes (or about no node in particular, like a deploy to everything).
pub async fn timeline(
    t: &TimelineHandle,
    journal: &Arc<dyn Store>,
    market: Option<&MarketHandle>,
    i: &Incident,
) -> Result<Vec<Entry>, TimelineError> {
    let (since, until) = window(i, t.now_ms());
    let nodes: BTreeSet<String> = i.nodes().into_iter().collect();
    let scopes: BTreeSet<&str> = i.body.scopes.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    let asked: Vec<String> = nodes.iter().cloned().collect();
    for c in t.store().changes(since, until, asked, MAX_ENTRIES).await? {
        // What is about no node: only the checks of its own scopes.
        let about_us = !c.node.is_empty()
            || c.subject
                .split_once('@')
                .is_some_and(|(_, s)| scopes.contains(s));
        if !about_us {
            continue;
        }
        // A first sighting is no change: a link or check seen healthy for
        // the first time (at start-up, or after a restart) is noise here.
        let first_sighting = matches!(c.previous.as_str(), "" | "stale" | "unknown" | "pending");
        if first_sighting && matches!(c.state.as_str(), "up" | "passing" | "ok" | "alive") {
            continue;
        }
        let text = match c.kind.as_str() {
            "check" => format!("{} {} (was {})", c.subject, c.state, c.previous),
            "node" => format!("node {} {} (was {})", c.subject, c.state, c.previous),
            _ => format!(
                "link {} {} (was {})",
                c.subject.replace('>', " → "),
                c.state,
                c.previous
            ),
        };
        let text = if c.detail.is_empty() {
            text
        } else {
            format!("{text}: {}", c.detail)
        };
        out.push(Entry {
            at_ms: c.at_ms,
            source: c.kind.clone(),
            text,
            link: (!c.node.is_empty()).then(|| format!("/nodes/{}", c.node)),
        });
    }
    for e in &i.escalations {
        // Every line, the notices' deliveries too: whether the page went
        // out is part of what happened.
        for r in journal.journal(*e).await?.into_iter().take(MAX_ENTRIES) {
            out.push(Entry {
                at_ms: r.at_ms,
                source: "escalation".into(),
                text: format!("escalation {e} {}: {}", r.kind, r.text),
                link: Some(format!("/escalations/{e}")),
            });
        }
    }
    let filter = gemba_timeline::Query {
        since: Some((since / 1000).to_string()),
        until: Some((until / 1000 + 1).to_string()),
        limit: Some(MAX_ENTRIES),
        ..Default::default()
    };
    for e in t.query(&filter).await? {
        // Escalation steps are already in from the journal.
        if e.kind == "escalation" {
            continue;
        }
        let hosts: Vec<&str> = e
            .tags
            .iter()
            .filter_map(|t| t.strip_prefix("host="))
            .collect();
        if !hosts.is_empty() && !hosts.iter().any(|h| nodes.contains(*h)) {
            continue;
        }
        out.push(Entry {
            at_ms: e.at_ms,
            source: "event".into(),
            text: format!("{}: {}", e.kind, e.what),
            link: Some(format!("/events/{}", e.id)),
        });
    }
    if let Some(m) = market {
        out.extend(market_entries(m, i, since, until).await);
    }
    out.sort_by_key(|e| e.at_ms);
    Ok(out)
}

/// Morning-market problems on its nodes that were not resolved before
/// its window began: at when they were first seen, or at the window's
/// start for older ones ("open since ..."). At most 50; none when the
/// market cannot answer (the rest of the timeline still shows).
async fn market_entries(m: &MarketHandle, i: &Incident, since: u64, until: u64) -> Vec<Entry> {
    let nodes = i.nodes();
    if nodes.is_empty() {
        return Vec::new();
    }
    let Ok(problems) = m.problems().await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in problems {
        let on: Vec<&String> = nodes.iter().filter(|n| p.nodes.contains_key(*n)).collect();
        let resolved_before = p
            .resolved_ms
            .is_some_and(|r| r < since && p.status == gemba_market::problem::Status::Resolved);
        if on.is_empty() || resolved_before || p.first_seen_ms > until {
            continue;
        }
        let (at_ms, when) = if p.first_seen_ms >= since {
            (p.first_seen_ms, "first seen".to_string())
        } else {
            (since, format!("open since {}", format_ms(p.first_seen_ms)))
        };
        out.push(Entry {
            at_ms,
            source: "market".into(),
            text: format!(
                "problem P-{} {} ({}, {when}) on {}: {}",
                p.id,
                p.status.as_str(),
                p.severity.as_str(),
                on.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", "),
                p.title
            ),
            link: Some(format!("/market/problems/{}", p.id)),
        });
        if out.len() >= 50 {
            break;
        }
    }
    out
}
