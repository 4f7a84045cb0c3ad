//! The daily publication in paused time: the market goes out once at the
//! market time, not again after a restart, once on return when the server
//! was down at the hour, and again later when no target took it.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::failing;
use gemba_core::config::StoreLocation;
use gemba_exec::Clock;
use gemba_market::detect::Thresholds;
use gemba_market::publish::{self, Edition, Schedule};
use gemba_market::{service, Parsed};

/// 2026-11-23T07:59:00Z.
const START: u64 = 1_795_420_740_000;
const MIN: Duration = Duration::from_secs(60);

type Sent = Arc<Mutex<Vec<Edition>>>;

fn publisher(
    handle: service::MarketHandle,
    clock: Clock,
    sent: Sent,
    works: Arc<Mutex<bool>>,
) -> tokio::task::JoinHandle<()> {
    let schedule = Schedule {
        at: (8, 0),
        timezone: "UTC".into(),
    };
    tokio::spawn(publish::run(
        handle,
        schedule,
        "srv".into(),
        clock,
        move |ed| {
            let sent = sent.clone();
            let works = works.clone();
            async move {
                sent.lock().unwrap().push(ed);
                if *works.lock().unwrap() {
                    (1, Vec::new())
                } else {
                    (
                        0,
                        vec!["webhook http://127.0.0.1:9/: connection refused".into()],
                    )
                }
            }
        },
    ))
}

fn dates(sent: &Sent) -> Vec<String> {
    sent.lock()
        .unwrap()
        .iter()
        .map(|e| e.date.clone())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_market_goes_out_once_a_day_at_its_time() {
    let dir = std::env::temp_dir().join(format!("gemba-market-publish-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = gemba_store::open_market(&StoreLocation::Sqlite(dir.join("m.db")))
        .await
        .unwrap();
    let clock = Clock::starting_at(START);
    let (handle, task) = service::start(store, Thresholds::default(), clock)
        .await
        .unwrap();
    tokio::spawn(task);
    // A failure during the night before.
    let run = failing(
        common::run("web-1", START - 5 * 3_600_000),
        "Exec",
        "fetch-code",
        "'/usr/bin/git fetch' returned 128 instead of one of [0]",
    );
    handle
        .ingest(vec![Parsed::Run(Box::new(run))])
        .await
        .unwrap();

    let sent: Sent = Arc::default();
    let works = Arc::new(Mutex::new(true));
    let p = publisher(handle.clone(), clock, sent.clone(), works.clone());
    // Configured at 07:59: nothing goes out for the day before.
    tokio::time::sleep(30 * Duration::from_secs(1)).await;
    assert!(dates(&sent).is_empty());
    // 08:00: today's market, as Markdown naming the problem.
    tokio::time::sleep(MIN).await;
    assert_eq!(dates(&sent), ["2026-11-23"]);
    {
        let s = sent.lock().unwrap();
        assert!(
            s[0].market.to_markdown().contains("Exec[fetch-code]"),
            "{}",
            s[0].market.to_markdown()
        );
        assert!(
            s[0].subject.contains("morning market 2026-11-23: 1 new"),
            "{}",
            s[0].subject
        );
    }
    // Not again that day, nor after a restart.
    tokio::time::sleep(60 * MIN).await;
    p.abort();
    let p = publisher(handle.clone(), clock, sent.clone(), works.clone());
    tokio::time::sleep(5 * MIN).await;
    assert_eq!(dates(&sent), ["2026-11-23"]);
    // Down over the next market time: sent on return, once.
    p.abort();
    tokio::time::sleep(24 * 60 * MIN).await;
    let p = publisher(handle.clone(), clock, sent.clone(), works.clone());
    tokio::time::sleep(MIN).await;
    assert_eq!(dates(&sent), ["2026-11-23", "2026-11-24"]);
    // The next day no target takes it: tried again every five minutes
    // (08:00, 08:05, 08:10) until one does (08:15), then left alone.
    *works.lock().unwrap() = false;
    tokio::time::sleep(23 * 60 * MIN).await;
    let tries = |day: &str| dates(&sent).iter().filter(|d| *d == day).count();
    assert_eq!(tries("2026-11-25"), 2);
    tokio::time::sleep(5 * MIN).await;
    assert_eq!(tries("2026-11-25"), 3);
    *works.lock().unwrap() = true;
    tokio::time::sleep(5 * MIN).await;
    assert_eq!(tries("2026-11-25"), 4);
    tokio::time::sleep(60 * MIN).await;
    assert_eq!(tries("2026-11-25"), 4);
    p.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
