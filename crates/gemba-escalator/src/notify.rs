//! The escalator's notices in words: the headline, the body a person
//! reads on a phone, the webhook's JSON and a command's environment. The
//! channels themselves (webhook, mail, command) are `gemba-notify`'s.
//! Sending never blocks the escalator; a failure is logged and journaled
//! by the caller (the outbox), which retries with a backoff.

use gemba_core::policy::NotifyDef;
use gemba_notify::{deliver, Outgoing};
use serde_json::json;

use crate::engine::Notice;

/// The one-line text every channel carries.
pub fn headline(n: &Notice, node: &str) -> String {
    let esc = n
        .escalation
        .map(|i| format!(" escalation {i}"))
        .unwrap_or_default();
    format!(
        "[gemba {node}] {} {}{esc}: {}",
        n.kind.as_str(),
        n.scope,
        n.text
    )
}

/// The headline and, when the notice has them, the failing checks with
/// their last output, what ran, what happens next and how to acknowledge:
/// what a person reading it on a phone needs.
pub fn body(n: &Notice, node: &str) -> String {
    let mut out = headline(n, node);
    if !n.checks.is_empty() {
        out.push_str("\nfailing:");
        for c in &n.checks {
            let output = c.output.lines().next().unwrap_or("").trim();
            if output.is_empty() {
                out.push_str(&format!("\n  {}", c.id));
            } else {
                out.push_str(&format!("\n  {}: {output}", c.id));
            }
        }
    }
    if !n.ran.is_empty() {
        out.push_str("\nran:");
        for r in &n.ran {
            out.push_str(&format!("\n  {r}"));
        }
    }
    if let Some(next) = &n.next {
        out.push_str(&format!("\nnext: {next}"));
    }
    if let Some(ack) = &n.ack {
        out.push_str(&format!("\nto acknowledge: {ack}"));
    }
    out
}

pub fn payload(n: &Notice, node: &str) -> serde_json::Value {
    json!({
        "text": body(n, node),
        "kind": n.kind.as_str(),
        "scope": n.scope.to_string(),
        "escalation": n.escalation,
        "at_ms": n.at_ms,
        "message": n.text,
        "checks": n.checks,
        "ran": n.ran,
        "next": n.next,
        "ack": n.ack,
        "server": node,
    })
}

/// What a notice carries beside its own words, gathered when it is sent:
/// the log lines around it (the learn stage's excerpts).
#[derive(Clone, Debug, Default)]
pub struct Attachment {
    /// Appended to the mail body and a command's text.
    pub text: String,
    /// The webhook's `logs` field.
    pub json: serde_json::Value,
}

/// Gathers the [`Attachment`] of a notice; `None` when there is nothing
/// to add. Must return within a few seconds (it delays the send).
#[async_trait::async_trait]
pub trait Attach: Send + Sync + 'static {
    async fn attach(&self, n: &Notice) -> Option<Attachment>;
}

/// Sends `n` to `target`; returns a description of the failure, if any.
pub async fn send(
    target: &NotifyDef,
    n: &Notice,
    node: &str,
    extra: Option<&Attachment>,
) -> Result<(), String> {
    let mut text = format!(
        "{}\n\nscope: {}\nescalation: {}\n",
        body(n, node),
        n.scope,
        n.escalation
            .map(|i| i.to_string())
            .unwrap_or_else(|| "-".into())
    );
    let mut json = payload(n, node);
    if let Some(a) = extra {
        text.push('\n');
        text.push_str(&a.text);
        json["logs"] = a.json.clone();
    }
    deliver(
        target,
        Outgoing {
            subject: headline(n, node),
            text,
            stdin: json.to_string().into_bytes(),
            json,
            env: vec![
                ("GEMBA_NOTICE".into(), n.kind.as_str().into()),
                ("GEMBA_SCOPE".into(), n.scope.to_string()),
                (
                    "GEMBA_ESCALATION_ID".into(),
                    n.escalation.map(|i| i.to_string()).unwrap_or_default(),
                ),
                ("GEMBA_NEXT".into(), n.next.clone().unwrap_or_default()),
                ("GEMBA_ACK".into(), n.ack.clone().unwrap_or_default()),
            ],
            images: Vec::new(),
        },
    )
    .await
}
