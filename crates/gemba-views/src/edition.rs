//! The morning market as every reader sees it: the review stage's market
//! of a day and, after its problems, the action items of post-mortems that
//! are not done yet (they stay on the market until done). One value, built
//! once per answer, rendered as text, Markdown and JSON here and as HTML by
//! the console: the `/market` page, `GET /api/v1/market?format=…`,
//! `gemba market` (which reads that answer) and the daily publication all
//! show the same edition.

use gemba_market::market::Market;
use gemba_market::service::{MarketError, MarketHandle};
use gemba_store::ActionRow;
use gemba_timeline::event::format_ms;
use gemba_timeline::TimelineHandle;
use serde_json::json;

/// A market and the open action items beside it.
#[derive(Clone, Debug)]
pub struct Edition {
    pub market: Market,
    /// Not done yet, oldest first.
    pub actions: Vec<ActionRow>,
    /// Why the action items are missing, when they could not be read: the
    /// edition says so instead of looking as if there were none.
    pub actions_unread: Option<String>,
    /// When it was built: an item due before is overdue.
    pub now_ms: u64,
}

impl Edition {
    /// The market of `since..until` and the open action items of the
    /// node's timeline (none on a node that keeps none).
    pub async fn of(
        market: &MarketHandle,
        timeline: Option<&TimelineHandle>,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Edition, MarketError> {
        let m = market.market(since_ms, until_ms).await?;
        Ok(Edition::with_actions_of(m, timeline, market.now_ms()).await)
    }

    /// `market` with the open action items of `timeline`.
    pub async fn with_actions_of(
        market: Market,
        timeline: Option<&TimelineHandle>,
        now_ms: u64,
    ) -> Edition {
        let (actions, actions_unread) = match timeline {
            Some(t) => match t.store().actions(true, None).await {
                Ok(a) => (a, None),
                Err(e) => (
                    Vec::new(),
                    Some(format!("action items cannot be read: {e}")),
                ),
            },
            None => (Vec::new(), None),
        };
        Edition::new(market, actions, now_ms).unread(actions_unread)
    }

    /// `market` with `actions`; those done are left out.
    pub fn new(market: Market, mut actions: Vec<ActionRow>, now_ms: u64) -> Edition {
        actions.retain(|a| a.done_ms.is_none());
        actions.sort_by_key(|a| a.id);
        Edition {
            market,
            actions,
            actions_unread: None,
            now_ms,
        }
    }

    fn unread(mut self, why: Option<String>) -> Edition {
        self.actions_unread = why;
        self
    }

    /// Whether an action item is past its due time (one without a due
    /// date never is).
    pub fn overdue(&self, a: &ActionRow) -> bool {
        a.due().is_some_and(|d| d < self.now_ms)
    }

    pub fn to_text(&self) -> String {
        self.market.to_text() + &self.actions_section(false)
    }

    pub fn to_markdown(&self) -> String {
        self.market.to_markdown() + &self.actions_section(true)
    }

    /// The market's JSON with `actions` (each as [`action_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.market).unwrap_or_default();
        v["actions"] = json!(self.actions.iter().map(action_json).collect::<Vec<_>>());
        if let Some(why) = &self.actions_unread {
            v["actions_unread"] = json!(why);
        }
        v
    }

    /// The lines after the problems; empty when nothing is open.
    fn actions_section(&self, markdown: bool) -> String {
        let (heading, bullet) = if markdown {
            ("\n## Action items from post-mortems\n\n", "- ")
        } else {
            ("\nAction items from post-mortems\n", "  ")
        };
        if let Some(why) = &self.actions_unread {
            return format!("{heading}{bullet}{why}\n");
        }
        if self.actions.is_empty() {
            return String::new();
        }
        let mut out = String::from(heading);
        for a in &self.actions {
            let line = a.text.replace(['\n', '\r'], " ");
            let (text, owner) = if markdown {
                (
                    gemba_core::markdown::text(&line),
                    gemba_core::markdown::text(&a.owner),
                )
            } else {
                (line, a.owner.clone())
            };
            let late = if self.overdue(a) { ", overdue" } else { "" };
            let due = a
                .due()
                .map(|d| format!(", due {}", day(d)))
                .unwrap_or_default();
            out.push_str(&format!(
                "{bullet}A-{} {text} (owner {owner}{due}{late}, from I-{})\n",
                a.id, a.incident
            ));
        }
        out
    }
}

/// What the daily publication sends: the edition of a day under its
/// subject line. Markdown for mail and commands (stdin), JSON with a
/// Slack-compatible `text` for webhooks.
pub fn outgoing(ed: &Edition, date: &str, subject: &str) -> gemba_notify::Outgoing {
    let markdown = ed.to_markdown();
    gemba_notify::Outgoing {
        subject: subject.to_string(),
        text: markdown.clone(),
        json: json!({
            "text": markdown,
            "date": date,
            "subject": subject,
            "market": ed.market,
            "actions": ed.actions.iter().map(action_json).collect::<Vec<_>>(),
        }),
        stdin: markdown.into_bytes(),
        env: vec![("GEMBA_MARKET_DATE".into(), date.to_string())],
        images: Vec::new(),
    }
}

/// The day of a time, `2026-12-15`.
pub fn day(ms: u64) -> String {
    format_ms(ms).get(..10).unwrap_or("?").to_string()
}

/// An action item as the API answers it.
pub fn action_json(a: &ActionRow) -> serde_json::Value {
    json!({
        "id": a.id,
        "incident": a.incident,
        "proposal": a.proposal,
        "text": a.text,
        "owner": a.owner,
        "due": a.due().map(format_ms),
        "due_ms": a.due(),
        "created": format_ms(a.created_ms),
        "done": a.done_ms.map(format_ms),
        "done_by": a.done_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(id: i64, text: &str, done: bool) -> ActionRow {
        ActionRow {
            id,
            incident: 3,
            proposal: 1,
            text: text.into(),
            owner: "bo".into(),
            due_ms: 1_796_947_200_000, // 2026-12-11
            created_ms: 0,
            done_ms: done.then_some(1),
            done_by: None,
        }
    }

    fn empty_market() -> Market {
        Market::build(std::iter::empty(), 0, 1, Default::default())
    }

    #[test]
    fn every_form_carries_the_open_items_and_none_done() {
        let ed = Edition::new(
            empty_market(),
            vec![
                action(2, "already done", true),
                action(1, "a runbook for [restarts](javascript:x)", false),
            ],
            1_796_947_200_000 + 86_400_000,
        );
        let md = ed.to_markdown();
        assert!(
            md.contains("## Action items from post-mortems\n\n- A-1 a runbook for [restarts\\](javascript:x) (owner bo, due 2026-12-11, overdue, from I-3)"),
            "{md}"
        );
        assert!(!md.contains("already done"));
        let text = ed.to_text();
        assert!(
            text.contains("  A-1 a runbook for [restarts](javascript:x) (owner bo"),
            "{text}"
        );
        let v = ed.to_json();
        assert_eq!(v["actions"].as_array().unwrap().len(), 1);
        assert_eq!(v["actions"][0]["id"], 1);
        assert_eq!(v["actions"][0]["owner"], "bo");
    }

    #[test]
    fn unreadable_items_are_said_not_hidden() {
        let ed = Edition::new(empty_market(), Vec::new(), 0)
            .unread(Some("action items cannot be read: disk I/O error".into()));
        assert!(ed.to_markdown().contains("cannot be read: disk I/O error"));
        assert_eq!(
            ed.to_json()["actions_unread"],
            "action items cannot be read: disk I/O error"
        );
        assert!(
            Edition::new(empty_market(), Vec::new(), 0)
                .to_markdown()
                .find("Action items")
                .is_none(),
            "no section when nothing is open"
        );
    }
}
