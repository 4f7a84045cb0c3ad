//! This server's clock against the store's. Leases are judged on the
//! store's clock, but a server whose own clock is off still decides its
//! quiet periods, budgets and journal by it: beyond
//! [`gemba_store::MAX_CLOCK_SKEW_MS`] it says so (an error at every look,
//! which the log's limit on repeats writes once a minute; a journal line
//! when it starts and when it ends, and one notice) and takes no new leases
//! until its clock is back.

use super::*;

/// What the server knows of its clock.
#[derive(Debug, Default)]
pub(super) struct ClockWatch {
    /// This server's clock minus the store's, while beyond the bound.
    pub skew_ms: Option<i64>,
}

impl ClockWatch {
    /// Why a new lease is not taken now, if it is not.
    pub fn refusal(&self) -> Option<String> {
        self.skew_ms.map(gemba_store::clock_skew_words)
    }
}

impl Service {
    /// Compares this server's clock with the store's, and says so when it
    /// drifts past the bound or comes back.
    pub(super) async fn watch_clock(&mut self) {
        let clock = self.clock;
        let skew = match gemba_store::clock_skew(&*self.store, || clock.now_ms()).await {
            Ok((skew, _)) => {
                self.store_back().await;
                match skew {
                    Some(s) => s,
                    // No clock of its own (SQLite).
                    None => return,
                }
            }
            Err(e) => {
                self.store_failed(&e);
                return;
            }
        };
        let now = self.clock.now_ms();
        let beyond = skew.abs() > gemba_store::MAX_CLOCK_SKEW_MS;
        let was = self.clock_watch.skew_ms;
        self.clock_watch.skew_ms = beyond.then_some(skew);
        if beyond {
            let text = gemba_store::clock_skew_words(skew);
            tracing::error!(server = %self.holder, skew_ms = skew, "{text}");
            if was.is_none() {
                self.say_clock(now, format!("{}: {text}", self.holder), true)
                    .await;
            }
        } else if was.is_some() {
            let text = format!(
                "{}: this server's clock is back within {} s of the store's ({} ms off): it takes leases again",
                self.holder,
                gemba_store::MAX_CLOCK_SKEW_MS / 1000,
                skew
            );
            tracing::warn!(server = %self.holder, skew_ms = skew, "{text}");
            self.say_clock(now, text, false).await;
        }
    }

    /// A journal line, and (when it starts) one notice.
    async fn say_clock(&mut self, now: u64, text: String, notice: bool) {
        let mut fx = vec![Effect::Journal(crate::engine::Entry {
            escalation: None,
            scope: Scope::Global,
            at_ms: now,
            kind: crate::engine::JournalKind::ClockSkew,
            text: text.clone(),
        })];
        if notice {
            fx.push(Effect::Notify(Notice {
                kind: crate::engine::NoticeKind::ClockSkew,
                escalation: None,
                scope: Scope::Global,
                at_ms: now,
                text,
                checks: Vec::new(),
                ran: Vec::new(),
                next: Some(format!("fix this server's clock (NTP); it takes leases again once it is within {} s of the store's", gemba_store::MAX_CLOCK_SKEW_MS / 1000)),
                ack: None,
            }));
        }
        self.apply(fx).await;
    }
}
