//! Sent notices are not lost: stored, retried with backoff until
//! delivered, kept across a restart, given up on after a day. Virtual
//! time; a fake receiver that refuses for a while.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gemba_core::policy::NotifyDef;
use gemba_escalator::engine::{Notice, NoticeKind};
use gemba_escalator::outbox::{self, Deliver, OutboxConfig};
use gemba_exec::Clock;
use gemba_store::{SqliteStore, Store};

/// Refuses until `refuse_until_ms` (on the shared clock), then accepts;
/// records when each try came and whether it was accepted.
struct Receiver {
    clock: Clock,
    refuse_until_ms: u64,
    tries: Mutex<Vec<(u64, bool)>>,
}

impl Receiver {
    fn new(clock: Clock, refuse_until_ms: u64) -> Arc<Receiver> {
        Arc::new(Receiver {
            clock,
            refuse_until_ms,
            tries: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl Deliver for Receiver {
    async fn deliver(&self, _target: &NotifyDef, _n: &Notice) -> Result<(), String> {
        let now = self.clock.now_ms();
        let ok = now >= self.refuse_until_ms;
        self.tries.lock().unwrap().push((now, ok));
        if ok {
            Ok(())
        } else {
            Err("webhook http://127.0.0.1:9/hook: connection refused".into())
        }
    }
}

fn notice() -> Notice {
    Notice {
        kind: NoticeKind::CrashLoop,
        escalation: Some(3),
        scope: "node:n2".parse().unwrap(),
        at_ms: 0,
        text: "crash loop: 3 failures in 43 s, 2:restart ran 2 times".into(),
        checks: vec![],
        ran: vec![],
        next: None,
        ack: Some("gemba ack node:n2".into()),
    }
}

fn target() -> NotifyDef {
    NotifyDef::Webhook {
        url: "http://127.0.0.1:9/hook".into(),
    }
}

fn start(
    store: &Arc<dyn Store>,
    clock: &Clock,
    rx: &Arc<Receiver>,
) -> (
    tokio::sync::mpsc::Sender<Notice>,
    tokio::task::JoinHandle<()>,
) {
    outbox::spawn(OutboxConfig {
        store: store.clone(),
        targets: vec![target()],
        deliver: rx.clone(),
        clock: *clock,
        holder: "srv".into(),
    })
}

async fn journal_kinds(store: &Arc<dyn Store>) -> Vec<(String, String)> {
    let mut j = store.recent_journal(100).await.unwrap();
    j.reverse();
    j.into_iter().map(|r| (r.kind, r.text)).collect()
}

#[tokio::test(start_paused = true)]
async fn a_receiver_that_refuses_for_30_s_gets_the_notice_once_afterwards() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let clock = Clock::starting_at(0);
    let rx = Receiver::new(clock, 30_000);
    let (tx, _task) = start(&store, &clock, &rx);
    tx.send(notice()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;

    let tries = rx.tries.lock().unwrap().clone();
    let secs: Vec<u64> = tries.iter().map(|(t, _)| t / 1000).collect();
    // Backoff 5, 10, 20 s (found by a once-a-second poll).
    assert_eq!(secs.len(), 4, "{tries:?}");
    assert_eq!(secs[0], 0);
    assert!((5..=6).contains(&secs[1]), "{secs:?}");
    assert!((15..=17).contains(&secs[2]), "{secs:?}");
    assert!((35..=38).contains(&secs[3]), "{secs:?}");
    assert_eq!(tries.iter().filter(|(_, ok)| *ok).count(), 1);
    assert!(store.pending_notices().await.unwrap().is_empty());

    let j = journal_kinds(&store).await;
    let kinds: Vec<&str> = j.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["notify-failed", "notify-delivered"], "{j:?}");
    assert!(j[0].1.contains("connection refused"), "{j:?}");
    assert!(
        j[1].1.starts_with("crash-loop notice delivered on try 4"),
        "{j:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_undelivered_notice_survives_a_restart() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let clock = Clock::starting_at(0);
    let down = Receiver::new(clock, u64::MAX);
    let (tx, task) = start(&store, &clock, &down);
    tx.send(notice()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The server stops.
    drop(tx);
    task.await.unwrap();
    let pending = store.pending_notices().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].attempts, 1);

    // It starts again; the receiver is back.
    let up = Receiver::new(clock, 0);
    let (_tx, _task) = start(&store, &clock, &up);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(up.tries.lock().unwrap().len(), 1);
    assert!(store.pending_notices().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_notice_nobody_takes_for_a_day_is_dropped_and_journaled() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let clock = Clock::starting_at(0);
    let down = Receiver::new(clock, u64::MAX);
    let (tx, _task) = start(&store, &clock, &down);
    tx.send(notice()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(25 * 3600)).await;
    assert!(store.pending_notices().await.unwrap().is_empty());
    let tries = down.tries.lock().unwrap().len();
    // 5 s doubling to 5 min apart: about 290 tries in a day, not thousands.
    assert!((280..=300).contains(&tries), "{tries} tries");
    let j = journal_kinds(&store).await;
    let kinds: Vec<&str> = j.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["notify-failed", "notify-expired"], "{j:?}");
    assert!(j[1].1.contains("over a day"), "{j:?}");
}

/// A notice that asks a human to act is journaled when it goes out, on
/// its first try too (the incident's timeline shows the page went out); a
/// routine one delivered at once is not.
#[tokio::test(start_paused = true)]
async fn a_hold_notice_is_journaled_when_it_goes_out() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let clock = Clock::starting_at(0);
    let rx = Receiver::new(clock, 0);
    let (tx, _task) = start(&store, &clock, &rx);
    tx.send(notice()).await.unwrap();
    let mut routine = notice();
    routine.kind = NoticeKind::Resolved;
    routine.ack = None;
    tx.send(routine).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(rx.tries.lock().unwrap().len(), 2);
    let j = journal_kinds(&store).await;
    assert_eq!(
        j,
        [(
            "notify-delivered".to_string(),
            "crash-loop notice delivered, 0 s after it was raised".to_string()
        )],
        "{j:?}"
    );
}
