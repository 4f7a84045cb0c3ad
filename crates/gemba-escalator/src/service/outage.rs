//! A store that cannot be reached. The first failed write starts an
//! outage: it is logged once (then once a minute, by the log's limit on
//! repeats), and journal lines are held back in memory, in order, instead
//! of being lost. When the store answers again, the journal gets one line
//! saying since when it could not be reached, the lines held back, and one
//! line saying it is back and how many were held back.

use super::*;

/// Journal lines held back at most; older ones beyond are counted and
/// dropped.
const MAX_HELD: usize = 10_000;

#[derive(Debug, Default)]
pub(super) struct Outage {
    /// When the store stopped answering (this server's clock).
    since_ms: Option<u64>,
    first_error: String,
    held: VecDeque<JournalRow>,
    dropped: u64,
}

impl Outage {
    pub fn is_on(&self) -> bool {
        self.since_ms.is_some()
    }

    fn hold(&mut self, row: JournalRow) {
        if self.held.len() >= MAX_HELD {
            self.held.pop_front();
            self.dropped += 1;
        }
        self.held.push_back(row);
    }
}

impl Service {
    /// The store failed: an outage starts, if none is on.
    pub(super) fn store_failed(&mut self, e: &gemba_store::StoreError) {
        if self.outage.is_on() {
            return;
        }
        self.outage.since_ms = Some(self.clock.now_ms());
        self.outage.first_error = e.to_string();
        tracing::error!(error = %e, "the store cannot be reached: journal lines are held back until it answers again");
    }

    /// Writes a journal line, or holds it back during an outage.
    pub(super) async fn append_journal(&mut self, row: JournalRow) {
        if self.outage.is_on() {
            self.outage.hold(row);
            return;
        }
        if let Err(e) = self.store.append(row.clone()).await {
            self.store_failed(&e);
            self.outage.hold(row);
        }
    }

    /// The store answered: an outage ends with its two lines and what was
    /// held back between them.
    pub(super) async fn store_back(&mut self) {
        let Some(since) = self.outage.since_ms else {
            return;
        };
        let now = self.clock.now_ms();
        let line = |text: String, at_ms: u64| JournalRow {
            seq: 0,
            escalation: None,
            scope: Scope::Global.to_string(),
            at_ms,
            kind: crate::engine::JournalKind::StoreOutage.as_str().to_string(),
            text,
            server: self.holder.clone(),
        };
        let start = line(
            format!(
                "{}: the store could not be reached from {} (this server's clock): {}",
                self.holder,
                utc(since),
                self.outage.first_error
            ),
            since,
        );
        if self.store.append(start).await.is_err() {
            return;
        }
        let held = self.outage.held.len();
        while let Some(mut row) = self.outage.held.pop_front() {
            row.text = format!(
                "{} [held back during the outage; it happened at {} by this server's clock]",
                row.text,
                utc(row.at_ms)
            );
            if self.store.append(row.clone()).await.is_err() {
                // Down again: what is left waits for the next return.
                self.outage.held.push_front(row);
                return;
            }
        }
        let dropped = std::mem::take(&mut self.outage.dropped);
        let end = line(
            format!(
                "{}: the store is back after {} s; {held} journal line{} held back meanwhile {} written above{}",
                self.holder,
                now.saturating_sub(since).div_ceil(1000),
                if held == 1 { "" } else { "s" },
                if held == 1 { "is" } else { "are" },
                if dropped > 0 {
                    format!(" ({dropped} older ones were dropped: more than {MAX_HELD} were held)")
                } else {
                    String::new()
                }
            ),
            now,
        );
        let _ = self.store.append(end).await;
        tracing::warn!(
            seconds = now.saturating_sub(since) / 1000,
            held,
            "the store answers again; the journal lines held back are written"
        );
        self.outage = Outage::default();
    }
}

/// An instant as RFC 3339 (UTC, seconds).
fn utc(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}
