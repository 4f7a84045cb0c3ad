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

/// A market on a fresh SQLite store in its own directory, its clock at
/// [`START`]: the directory (to remove), the handle and the clock.
async fn market(name: &str) -> (std::path::PathBuf, service::MarketHandle, Clock) {
    let dir = std::env::temp_dir().join(format!("gemba-market-{name}-{}", std::process::id()));
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
    (dir, handle, clock)
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
    let (dir, handle, clock) = market("publish").await;
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

/// A past day's market is its record: read again after more runs of that
/// day arrived late, after its problem resolved and after someone took it,
/// it lists the same problems with the owner it had, and says what changed.
#[tokio::test(start_paused = true)]
async fn a_past_day_reads_as_it_was_recorded_with_what_changed_since() {
    let (dir, handle, clock) = market("record").await;
    let schedule = Schedule {
        at: (8, 0),
        timezone: "UTC".into(),
    };
    tokio::spawn(publish::record_daily(handle.clone(), schedule, clock));
    let h = 3_600_000;
    let fail = |node: &str, at: u64, what: &str| {
        Parsed::Run(Box::new(failing(
            common::run(node, at),
            "Exec",
            what,
            "returned 1",
        )))
    };
    handle
        .ingest(vec![fail("web-1", START - 5 * h, "migrate")])
        .await
        .unwrap();
    // 08:00 passes: the day is recorded by itself.
    tokio::time::sleep(2 * MIN).await;
    let day = "2026-11-23";
    let (since, until) =
        gemba_market::market::window(Some(day), (8, 0), "UTC", clock.now_ms()).unwrap();
    let first = handle.record(day, since, until).await.unwrap();
    assert_eq!(first.new.len(), 1);
    assert!(first.recorded.is_some());
    assert!(first.changed_since.is_empty());
    let id = first.new[0].id.clone();
    let text = first.to_text();
    assert!(text.contains("Nothing changed since"), "{text}");

    // Later: a run of that night arrives late with another failure, the
    // first problem resolves after clean runs, and alice takes it.
    handle
        .ingest(vec![fail("web-2", START - 4 * h, "seed")])
        .await
        .unwrap();
    for i in 1..=3 {
        handle
            .ingest(vec![Parsed::Run(Box::new(common::run(
                "web-1",
                START + i * h,
            )))])
            .await
            .unwrap();
    }
    let n: u64 = id.trim_start_matches("P-").parse().unwrap();
    handle
        .change(
            n,
            service::ProblemChange {
                owner: Some("alice".into()),
                by: "alice".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let again = handle.record(day, since, until).await.unwrap();
    let ids = |m: &gemba_market::market::Market| {
        m.entries()
            .map(|e| (e.id.clone(), e.status.clone(), e.owner.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&again), ids(&first), "the record does not change");
    assert_eq!(again.recorded, first.recorded);
    let changes = again.changed_since.join("\n");
    assert!(
        changes.contains(&format!("{id}: resolved (was new), owner alice (was —)")),
        "{changes}"
    );
    assert!(
        changes.contains("1 problem(s) of this day arrived later"),
        "{changes}"
    );
    assert!(again.to_text().contains("Changed since:"));
    // A day nothing was known of is not frozen empty.
    let (s0, u0) =
        gemba_market::market::window(Some("2026-11-20"), (8, 0), "UTC", clock.now_ms()).unwrap();
    assert!(handle
        .record("2026-11-20", s0, u0)
        .await
        .unwrap()
        .recorded
        .is_none());
    // Today (its time not passed) is built as it is now.
    let (s2, u2) =
        gemba_market::market::window(Some("2026-11-24"), (8, 0), "UTC", clock.now_ms()).unwrap();
    assert!(handle
        .record("2026-11-24", s2, u2)
        .await
        .unwrap()
        .recorded
        .is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
