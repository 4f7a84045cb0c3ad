//! The daily publication: at `[market] market_at` in its time zone, the
//! market of that day goes to every `[[market.publish]]` target as
//! Markdown. The last day sent is stored, so a restart neither sends a day
//! twice nor skips one: a server that was down at the hour sends the day's
//! market when it comes back (only the latest day, never a backlog). A
//! server publishing for the first time starts with the next market time,
//! rather than sending yesterday's market the moment it is configured.
//!
//! Every server also records each day's market at its time
//! ([`record_daily`]): a past day read later is that record.

use std::future::Future;
use std::time::Duration;

use gemba_exec::Clock;

use crate::market::{window, Market};
use crate::service::MarketHandle;

/// The stored value naming the last day published.
pub const PUBLISHED: &str = "market.published";
/// Wait this long before trying again when no target took the market.
const RETRY: Duration = Duration::from_secs(300);
/// Look at the clock at least this often (it may be changed under us).
const AT_MOST: Duration = Duration::from_secs(3600);

/// When and where the market is cut.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub at: (u8, u8),
    pub timezone: String,
}

impl Schedule {
    /// The newest day whose market time has passed at `now_ms`, and when
    /// the next day's market time is (unix ms).
    pub fn latest(&self, now_ms: u64) -> Result<(String, u64), String> {
        let tz = jiff::tz::TimeZone::get(&self.timezone)
            .map_err(|e| format!("time zone {:?}: {e}", self.timezone))?;
        let now = jiff::Timestamp::from_millisecond(now_ms as i64)
            .map_err(|e| e.to_string())?
            .to_zoned(tz.clone());
        let cut = |d: jiff::civil::Date| -> Result<u64, String> {
            d.at(self.at.0 as i8, self.at.1 as i8, 0, 0)
                .to_zoned(tz.clone())
                .map(|z| z.timestamp().as_millisecond().max(0) as u64)
                .map_err(|e| e.to_string())
        };
        let today = now.date();
        let (day, next) = if now_ms >= cut(today)? {
            (today, cut(today.tomorrow().map_err(|e| e.to_string())?)?)
        } else {
            (today.yesterday().map_err(|e| e.to_string())?, cut(today)?)
        };
        Ok((day.to_string(), next))
    }
}

/// The market of a day that is due: its date, a subject line with its
/// counts, and the market. What goes out beside it (the open action items)
/// and in which form is the sender's (`gemba-views` builds the edition).
#[derive(Clone, Debug)]
pub struct Edition {
    pub date: String,
    pub subject: String,
    pub market: Market,
}

/// Publishes every day until the task is dropped. `send` delivers one
/// edition to every target and answers how many took it and the errors of
/// the others.
pub async fn run<F, Fut>(
    market: MarketHandle,
    schedule: Schedule,
    node: String,
    clock: Clock,
    send: F,
) where
    F: Fn(Edition) -> Fut,
    Fut: Future<Output = (usize, Vec<String>)>,
{
    loop {
        let now = clock.now_ms();
        let (day, next) = match schedule.latest(now) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "cannot work out the market's time; not publishing");
                return;
            }
        };
        let mut wait = Duration::from_millis(next.saturating_sub(now)).min(AT_MOST);
        let done = market.store().get_value(PUBLISHED).await;
        let due = match &done {
            Ok(None) => {
                if let Err(e) = market.store().set_value(PUBLISHED, &day).await {
                    tracing::warn!(error = %e, "cannot record where publication starts");
                }
                false
            }
            Ok(Some(last)) => last.as_str() < day.as_str(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read when the market was last published");
                false
            }
        };
        if due {
            match edition(&market, &schedule, &node, &day, now).await {
                Ok(ed) => {
                    let (took, errors) = send(ed).await;
                    for e in &errors {
                        tracing::warn!(date = %day, error = %e, "the market did not reach a target");
                    }
                    if took > 0 {
                        tracing::info!(date = %day, targets = took, "published the morning market");
                        if let Err(e) = market.store().set_value(PUBLISHED, &day).await {
                            tracing::warn!(error = %e, "cannot record the market's publication");
                        }
                    } else {
                        wait = wait.min(RETRY);
                    }
                }
                Err(e) => {
                    tracing::warn!(date = %day, error = %e, "cannot build the market to publish");
                    wait = wait.min(RETRY);
                }
            }
        }
        tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
    }
}

/// Records each day's market when its time passes, so that reading a past
/// day later shows it as it was (its problems, owners and causes then),
/// whether or not it is published. A server that was down at the hour
/// records the day when it is back.
pub async fn record_daily(market: MarketHandle, schedule: Schedule, clock: Clock) {
    loop {
        let now = clock.now_ms();
        let (day, next) = match schedule.latest(now) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "cannot work out the market's time; not recording days");
                return;
            }
        };
        let mut wait = Duration::from_millis(next.saturating_sub(now)).min(AT_MOST);
        let recorded = match window(Some(&day), schedule.at, &schedule.timezone, now) {
            Ok((since, until)) => market
                .record(&day, since, until)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            tracing::warn!(date = %day, error = %e, "cannot record the day's market");
            wait = wait.min(RETRY);
        }
        tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
    }
}

async fn edition(
    market: &MarketHandle,
    schedule: &Schedule,
    node: &str,
    day: &str,
    now_ms: u64,
) -> Result<Edition, String> {
    let (since, until) = window(Some(day), schedule.at, &schedule.timezone, now_ms)?;
    let m = market
        .record(day, since, until)
        .await
        .map_err(|e| e.to_string())?;
    let counts = format!(
        "{} new, {} regressed, {} open, {} resolved",
        m.new.len(),
        m.regressed.len(),
        m.open.len(),
        m.resolved.len()
    );
    Ok(Edition {
        date: day.to_string(),
        subject: format!("[gemba {node}] morning market {day}: {counts}"),
        market: m,
    })
}
