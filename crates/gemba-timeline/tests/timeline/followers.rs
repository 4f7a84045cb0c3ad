//! The followers: escalation decisions and steps, and configuration runs
//! that changed or failed something, become events by themselves; lines
//! and runs that are no change do not; a follower started again (a
//! restart) adds nothing twice.

use std::sync::Arc;
use std::time::Duration;

use gemba_exec::Clock;
use gemba_store::{
    EventFilter, EventStore, JournalRow, MarketBatch, MarketStore, RunRow, SqliteStore, Store,
};
use gemba_timeline::{service, TimelineHandle};

const T0: u64 = 1_795_400_000_000;

fn line(kind: &str, at_ms: u64, text: &str) -> JournalRow {
    JournalRow {
        seq: 0,
        escalation: Some(7),
        scope: "node:web-1".into(),
        at_ms,
        kind: kind.into(),
        text: text.into(),
        server: "srv-1".into(),
    }
}

fn run(key: &str, node: &str, changed: u64, failed: u64, at_ms: u64) -> RunRow {
    RunRow {
        id: 0,
        key: key.into(),
        node: node.into(),
        tool: "puppet".into(),
        started_ms: at_ms,
        duration_ms: Some(12_000),
        status: if failed > 0 {
            "failed"
        } else if changed > 0 {
            "changed"
        } else {
            "unchanged"
        }
        .into(),
        environment: "production".into(),
        code_version: "17".into(),
        total: 20,
        changed,
        failed,
        digest: "{}".into(),
        body: "{}".into(),
    }
}

async fn all(t: &TimelineHandle) -> Vec<gemba_store::EventRow> {
    let mut v = t
        .filtered(EventFilter {
            since_ms: 0,
            until_ms: u64::MAX / 2,
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    v.sort_by_key(|e| e.at_ms);
    v
}

#[tokio::test(start_paused = true)]
async fn escalation_steps_and_changing_runs_become_events_once() {
    let db = Arc::new(SqliteStore::in_memory().unwrap());
    let journal: Arc<dyn Store> = db.clone();
    let market: Arc<dyn MarketStore> = db.clone();
    for l in [
        line("quiet", T0, "web-process failing; quiet period of 30 s"),
        line(
            "decision",
            T0 + 30_000,
            "opened: web-process failing; running levels 2:restart",
        ),
        line(
            "step-start",
            T0 + 30_100,
            "attempt 1: running level 2 (restart)",
        ),
        line(
            "step-end",
            T0 + 31_000,
            "level 2 (restart) succeeded\nexit 0",
        ),
        line("verify", T0 + 40_000, "waiting for fresh results"),
        line("resolved", T0 + 45_000, "passing again after attempt 1"),
    ] {
        journal.append(l).await.unwrap();
    }
    market
        .commit(MarketBatch {
            runs: vec![
                run("r1", "web-1", 0, 0, T0 + 60_000),
                run("r2", "web-1", 3, 0, T0 + 120_000),
                run("r3", "web-2", 1, 1, T0 + 180_000),
            ],
            ..Default::default()
        })
        .await
        .unwrap();

    let timeline = TimelineHandle::new(db.clone(), Clock::starting_at(T0 + 200_000));
    let j = tokio::spawn(service::follow_journal(timeline.clone(), journal.clone()));
    let r = tokio::spawn(service::follow_runs(timeline.clone(), market.clone()));
    tokio::time::sleep(Duration::from_secs(10)).await;

    let events = all(&timeline).await;
    let whats: Vec<&str> = events.iter().map(|e| e.what.as_str()).collect();
    assert_eq!(
        whats,
        [
            "node:web-1: opened: web-process failing; running levels 2:restart",
            "node:web-1: attempt 1: running level 2 (restart)",
            "node:web-1: level 2 (restart) succeeded",
            "node:web-1: passing again after attempt 1",
            "puppet run on web-1: 3 changed, 0 failed",
            "puppet run on web-2: 1 changed, 1 failed",
        ],
        "quiet and verify lines and the unchanged run are no change"
    );
    let decision = &events[0];
    assert_eq!(decision.kind, "escalation");
    assert!(
        decision.tags.contains(&"host=web-1".to_string()),
        "{:?}",
        decision.tags
    );
    assert!(decision.tags.contains(&"escalation=7".to_string()));
    assert_eq!(events[2].text, "level 2 (restart) succeeded\nexit 0");
    let failed = &events[5];
    assert_eq!(failed.kind, "puppet");
    assert_eq!(failed.end_ms, Some(T0 + 192_000));
    assert!(failed.tags.contains(&"status=failed".to_string()));
    assert!(failed.tags.contains(&"env=production".to_string()));

    // New lines and runs are picked up; a restarted follower repeats none.
    j.abort();
    r.abort();
    journal
        .append(line("acknowledged", T0 + 300_000, "acknowledged by alice"))
        .await
        .unwrap();
    market
        .commit(MarketBatch {
            runs: vec![run("r4", "web-3", 2, 0, T0 + 310_000)],
            ..Default::default()
        })
        .await
        .unwrap();
    // Forget the cursors: the origins alone must keep events single.
    db.set_timeline_value("cursor.journal", "0").await.unwrap();
    db.set_timeline_value("cursor.runs", "0").await.unwrap();
    let _j = tokio::spawn(service::follow_journal(timeline.clone(), journal));
    let _r = tokio::spawn(service::follow_runs(timeline.clone(), market));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let events = all(&timeline).await;
    assert_eq!(
        events.len(),
        8,
        "{:?}",
        events.iter().map(|e| &e.what).collect::<Vec<_>>()
    );
    assert_eq!(events[6].what, "node:web-1: acknowledged by alice");
    assert_eq!(events[7].what, "puppet run on web-3: 2 changed, 0 failed");
}
