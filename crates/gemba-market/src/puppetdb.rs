//! Pulling runs from a PuppetDB that a site already runs: its v4 query API,
//! `GET /pdb/query/v4/reports`, asked for the reports PuppetDB received at
//! or after a cursor, oldest first, a page at a time. The cursor (the
//! newest `receive_time` taken) is stored after the page's runs are
//! committed, so a restart asks again from there; reports seen twice are
//! answered as duplicates and stored once. Reports received in the same
//! millisecond as the cursor's newest are skipped by count (`offset`, with
//! ties ordered by hash), so a page boundary inside a tie loses nothing and
//! nothing is asked twice. A report that cannot be read is logged and
//! skipped: one bad report must not stop the feed.

use std::time::Duration;

use gemba_exec::Clock;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::format::Parsed;
use crate::service::MarketHandle;
use crate::time::{format_ms, parse_ms};
use crate::value::Field;

/// Most bytes read from one answer.
const MAX_ANSWER: u64 = 256 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(60);

/// One `[[market.source]] kind = "puppetdb"`.
#[derive(Clone, Debug)]
pub struct Source {
    /// Base URL, without a trailing slash.
    pub url: String,
    pub interval: Duration,
    /// Reports per request.
    pub page: u32,
    /// The largest answer taken (bytes).
    pub max_bytes: u64,
}

/// Where the next request starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// PuppetDB's `receive_time` of the newest report taken, as it wrote it.
    pub received: String,
    /// Reports taken that were received at that very time: skipped next.
    #[serde(default)]
    pub offset: u64,
}

/// What one request brought.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Polled {
    pub fetched: usize,
    pub accepted: u32,
    pub duplicate: u32,
    /// Reports that could not be read, with why.
    pub rejected: Vec<String>,
    /// The page was full: ask again at once.
    pub full: bool,
}

fn cursor_key(url: &str) -> String {
    format!("puppetdb.cursor {url}")
}

/// Asks PuppetDB every `interval` (at once while pages come back full)
/// until the task is dropped.
pub async fn run(market: MarketHandle, source: Source, clock: Clock) {
    loop {
        let wait = match poll(&market, &source, clock.now_ms()).await {
            Ok(p) => {
                if p.accepted > 0 || !p.rejected.is_empty() {
                    tracing::info!(
                        url = %source.url,
                        accepted = p.accepted,
                        duplicate = p.duplicate,
                        rejected = p.rejected.len(),
                        "runs pulled from PuppetDB"
                    );
                }
                for r in &p.rejected {
                    tracing::warn!(url = %source.url, reason = %r, "a PuppetDB report was skipped");
                }
                if p.full {
                    Duration::ZERO
                } else {
                    source.interval
                }
            }
            Err(e) => {
                tracing::warn!(url = %source.url, error = %e, "cannot pull reports from PuppetDB");
                source.interval
            }
        };
        if wait.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(wait).await;
        }
    }
}

/// One request: the page after the stored cursor, committed, and the
/// cursor moved past it. Without a cursor, it starts a day before `now_ms`.
pub async fn poll(market: &MarketHandle, source: &Source, now_ms: u64) -> Result<Polled, String> {
    let key = cursor_key(&source.url);
    let cursor = match market
        .store()
        .get_value(&key)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(text) => serde_json::from_str(&text).map_err(|e| format!("stored cursor: {e}"))?,
        None => Cursor {
            received: format_ms(now_ms.saturating_sub(86_400_000)),
            offset: 0,
        },
    };
    let (src, cur) = (source.clone(), cursor.clone());
    let list = tokio::task::spawn_blocking(move || fetch(&src, &cur))
        .await
        .map_err(|e| e.to_string())??;
    if list.len() > source.page as usize {
        return Err(format!(
            "PuppetDB answered {} reports to a request for at most {}",
            list.len(),
            source.page
        ));
    }
    let (runs, rejected, newest, at_newest) = tokio::task::spawn_blocking(move || read(&list))
        .await
        .map_err(|e| e.to_string())?;
    let fetched = runs.len() + rejected.len();
    let got = if runs.is_empty() {
        Default::default()
    } else {
        market.ingest(runs).await.map_err(|e| e.to_string())?
    };
    let next = match newest {
        Some(n) if parse_ms(&n).ok() > parse_ms(&cursor.received).ok() => Cursor {
            received: n,
            offset: at_newest,
        },
        // Everything fetched was received at the cursor's own time.
        Some(_) => Cursor {
            offset: cursor.offset + at_newest,
            ..cursor.clone()
        },
        None => cursor.clone(),
    };
    if next != cursor {
        let text = serde_json::to_string(&next).map_err(|e| e.to_string())?;
        market
            .store()
            .set_value(&key, &text)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(Polled {
        fetched,
        accepted: got.accepted,
        duplicate: got.duplicate,
        rejected,
        full: fetched == source.page as usize,
    })
}

/// The request PuppetDB's documentation describes: an AST query on
/// `receive_time`, ordered by it (and by hash, so that ties come in one
/// order), a limit and an offset.
fn fetch(source: &Source, cursor: &Cursor) -> Result<Vec<Value>, String> {
    let query = json!([">=", "receive_time", cursor.received]).to_string();
    let order = json!([
        {"field": "receive_time", "order": "asc"},
        {"field": "hash", "order": "asc"}
    ])
    .to_string();
    let url = format!("{}/pdb/query/v4/reports", source.url);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut answer = agent
        .get(&url)
        .query("query", &query)
        .query("order_by", &order)
        .query("limit", source.page.to_string())
        .query("offset", cursor.offset.to_string())
        .header("accept", "application/json")
        .call()
        .map_err(|e| format!("{url}: {e}"))?;
    let limit = source.max_bytes.min(MAX_ANSWER);
    let status = answer.status();
    let body = answer
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| format!("{url}: reading the answer (at most {limit} bytes): {e}"))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(format!(
            "{url}: HTTP {status}: {}",
            crate::run::cut_to(text.trim(), 200)
        ));
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(list)) => Ok(list),
        Ok(_) => Err(format!("{url}: the answer is not a list of reports")),
        Err(e) => Err(format!("{url}: the answer is not JSON: {e}")),
    }
}

/// Runs from the reports; the unreadable ones with why; the newest
/// `receive_time` among all of them and how many were received then.
fn read(list: &[Value]) -> (Vec<Parsed>, Vec<String>, Option<String>, u64) {
    let mut runs = Vec::new();
    let mut rejected = Vec::new();
    let mut newest: Option<(u64, String)> = None;
    let mut at_newest = 0;
    for (i, v) in list.iter().enumerate() {
        if let Some(t) = v.str_of("receive_time") {
            if let Ok(ms) = parse_ms(&t) {
                match &newest {
                    Some((n, _)) if ms < *n => {}
                    Some((n, _)) if ms == *n => at_newest += 1,
                    _ => {
                        newest = Some((ms, crate::run::cut_to(&t, 64)));
                        at_newest = 1;
                    }
                }
            }
        }
        match crate::puppet::parse(v) {
            Ok(run) => runs.push(Parsed::Run(Box::new(run))),
            Err(e) => {
                let who = v
                    .str_of("certname")
                    .map(|c| crate::run::cut_to(&c, 64))
                    .unwrap_or_else(|| format!("report {i}"));
                rejected.push(format!("{who}: {e}"));
            }
        }
    }
    (runs, rejected, newest.map(|(_, t)| t), at_newest)
}
