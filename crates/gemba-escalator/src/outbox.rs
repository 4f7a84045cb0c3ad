//! Notices are not lost: each one is stored in the outbox, one row per
//! target, before it is sent, and retried with backoff (5 s, doubling, at
//! most 5 min apart) until it is delivered or a day old. A webhook that is
//! down for a minute receives the notice afterwards; a server that
//! restarts sends what it had not delivered.
//!
//! The outbox runs as its own task, so a slow target never holds up the
//! escalator. Servers sharing a store claim a notice before sending it
//! (one sender each); a claim lapses after a minute if its sender stops.
//! What matters to people is journaled: a first failure, a delivery after
//! failures, and a notice given up on.

use std::sync::Arc;
use std::time::Duration;

use gemba_core::policy::NotifyDef;
use gemba_exec::Clock;
use gemba_store::{JournalRow, OutboxRow, Store};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::engine::{JournalKind, Notice};
use crate::notify;

/// First retry after a failure; each further one waits twice as long.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// A notice older than this is given up on.
pub const EXPIRE: Duration = Duration::from_secs(24 * 3600);
/// How long a sender owns a notice it took (longer than any send).
const CLAIM: Duration = Duration::from_secs(60);
/// How often the outbox looks for due notices.
const POLL: Duration = Duration::from_secs(1);
const BATCH: usize = 64;

/// Sends one notice to one target.
#[async_trait::async_trait]
pub trait Deliver: Send + Sync + 'static {
    async fn deliver(&self, target: &NotifyDef, n: &Notice) -> Result<(), String>;
}

/// The real channels: webhook, mail, command.
pub struct Channels {
    /// This server's name, in every notice.
    pub node: String,
    /// What is sent along (log lines around the notice).
    pub attach: Option<Arc<dyn notify::Attach>>,
}

#[async_trait::async_trait]
impl Deliver for Channels {
    async fn deliver(&self, target: &NotifyDef, n: &Notice) -> Result<(), String> {
        let extra = match &self.attach {
            Some(a) => a.attach(n).await,
            None => None,
        };
        notify::send(target, n, &self.node, extra.as_ref()).await
    }
}

/// The wait before try `attempts + 1`, after `attempts` failed tries.
pub fn backoff(attempts: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
        .min(MAX_RETRY)
}

pub struct OutboxConfig {
    pub store: Arc<dyn Store>,
    pub targets: Vec<NotifyDef>,
    pub deliver: Arc<dyn Deliver>,
    pub clock: Clock,
    /// This server's name in the journal.
    pub holder: String,
}

/// Starts the outbox; notices sent to the returned channel are stored,
/// then delivered. The task ends (after a last round of at most 2 s) when
/// every sender is dropped; what is left stays stored for the next start.
pub fn spawn(cfg: OutboxConfig) -> (mpsc::Sender<Notice>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1024);
    let task = tokio::spawn(run(cfg, rx));
    (tx, task)
}

type Sent = (OutboxRow, Notice, Result<(), String>);

async fn run(cfg: OutboxConfig, mut rx: mpsc::Receiver<Notice>) {
    let mut sending: JoinSet<Sent> = JoinSet::new();
    // Notices the store would not take, sent once without retries.
    let mut unstored: JoinSet<()> = JoinSet::new();
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = rx.recv() => {
                let Some(n) = n else { break };
                enqueue(&cfg, &n, &mut unstored).await;
                // Others may be queued behind it; store them too, then send.
                while let Ok(n) = rx.try_recv() {
                    enqueue(&cfg, &n, &mut unstored).await;
                }
                send_due(&cfg, &mut sending).await;
            }
            _ = poll.tick() => send_due(&cfg, &mut sending).await,
            Some(done) = sending.join_next() => {
                if let Ok(done) = done {
                    report(&cfg, done).await;
                }
            }
            Some(_) = unstored.join_next() => {}
        }
    }
    // Stopping: a last round for what is due now, briefly.
    send_due(&cfg, &mut sending).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(done) = sending.join_next().await {
            if let Ok(done) = done {
                report(&cfg, done).await;
            }
        }
    })
    .await;
}

/// At most this many unstored notices are in flight; past it they are
/// logged and dropped (the store is failing and the journal says so).
const UNSTORED_MAX: usize = 32;

async fn enqueue(cfg: &OutboxConfig, n: &Notice, unstored: &mut JoinSet<()>) {
    let body = serde_json::to_string(n).expect("notice serializes");
    for t in &cfg.targets {
        let target = serde_json::to_string(t).expect("target serializes");
        if let Err(e) = cfg
            .store
            .enqueue_notice(&target, &body, cfg.clock.now_ms())
            .await
        {
            // Not stored: send it once anyway rather than lose it.
            tracing::error!(error = %e, "cannot store a notice for delivery; sending it once");
            if unstored.len() >= UNSTORED_MAX {
                tracing::error!(notice = %n.text, "too many unstored notices in flight; dropped");
                continue;
            }
            let (t, n, d) = (t.clone(), n.clone(), cfg.deliver.clone());
            unstored.spawn(async move {
                if let Err(e) = d.deliver(&t, &n).await {
                    tracing::warn!(error = %e, "notification failed");
                }
            });
        }
    }
}

async fn send_due(cfg: &OutboxConfig, sending: &mut JoinSet<Sent>) {
    let now = cfg.clock.now_ms();
    let rows = match cfg
        .store
        .claim_due_notices(now, CLAIM.as_millis() as u64, BATCH)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox");
            return;
        }
    };
    for row in rows {
        let Ok(n) = serde_json::from_str::<Notice>(&row.body) else {
            drop_row(cfg, &row, None, "the stored notice is unreadable").await;
            continue;
        };
        // Only targets still configured: the policy may have changed
        // since the notice was stored.
        let target = cfg
            .targets
            .iter()
            .find(|t| serde_json::to_string(t).ok().as_deref() == Some(row.target.as_str()))
            .cloned();
        let Some(target) = target else {
            drop_row(cfg, &row, Some(&n), "its target is no longer configured").await;
            continue;
        };
        if now.saturating_sub(row.created_ms) >= EXPIRE.as_millis() as u64 {
            let why = format!(
                "not delivered after {} tries over a day; last error: {}",
                row.attempts, row.last_error
            );
            drop_row(cfg, &row, Some(&n), &why).await;
            continue;
        }
        let deliver = cfg.deliver.clone();
        sending.spawn(async move {
            let r = deliver.deliver(&target, &n).await;
            (row, n, r)
        });
    }
}

async fn report(cfg: &OutboxConfig, (row, n, r): Sent) {
    let now = cfg.clock.now_ms();
    match r {
        Ok(()) => {
            if let Err(e) = cfg.store.notice_done(row.id).await {
                tracing::warn!(error = %e, "cannot clear a delivered notice");
            }
            // A delivery is journaled when it took retries, and always
            // for a notice that asks a human to act (a hold): whether that
            // page went out belongs on the incident's timeline.
            if row.attempts > 0 || n.ack.is_some() {
                let tries = if row.attempts > 0 {
                    format!(" on try {}", row.attempts + 1)
                } else {
                    String::new()
                };
                journal(
                    cfg,
                    &n,
                    JournalKind::NotifyDelivered,
                    format!(
                        "{} notice delivered{tries}, {} s after it was raised",
                        n.kind.as_str(),
                        now.saturating_sub(row.created_ms) / 1000
                    ),
                )
                .await;
            }
        }
        Err(e) => {
            let attempts = row.attempts + 1;
            let next = now + backoff(attempts).as_millis() as u64;
            tracing::warn!(attempts, error = %e, "notification failed");
            if let Err(se) = cfg.store.notice_failed(row.id, attempts, next, &e).await {
                tracing::warn!(error = %se, "cannot record a failed notice");
            }
            if attempts == 1 {
                journal(
                    cfg,
                    &n,
                    JournalKind::NotifyFailed,
                    format!(
                        "{e}; retrying with backoff (first in {} s) for up to a day",
                        backoff(attempts).as_secs()
                    ),
                )
                .await;
            }
        }
    }
}

async fn drop_row(cfg: &OutboxConfig, row: &OutboxRow, n: Option<&Notice>, why: &str) {
    if let Err(e) = cfg.store.notice_done(row.id).await {
        tracing::warn!(error = %e, "cannot drop a notice");
    }
    tracing::warn!(id = row.id, "notice dropped: {why}");
    if let Some(n) = n {
        journal(
            cfg,
            n,
            JournalKind::NotifyExpired,
            format!("{} notice dropped: {why}", n.kind.as_str()),
        )
        .await;
    }
}

async fn journal(cfg: &OutboxConfig, n: &Notice, kind: JournalKind, text: String) {
    let row = JournalRow {
        seq: 0,
        escalation: n.escalation,
        scope: n.scope.to_string(),
        at_ms: cfg.clock.now_ms(),
        kind: kind.as_str().to_string(),
        text,
        server: cfg.holder.clone(),
    };
    if let Err(e) = cfg.store.append(row).await {
        tracing::error!(error = %e, "cannot write the journal");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_to_five_minutes() {
        let waits: Vec<u64> = (1..=9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }
}
