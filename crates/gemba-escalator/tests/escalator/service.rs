//! The running service on an in-memory store: a stopping server lets a
//! running step finish and journals it; a step whose task panics fails
//! instead of running for ever; failed notifications are journaled; a
//! server whose lease went to another while it was stuck in a step writes
//! and runs nothing more (fencing).

use std::sync::Arc;
use std::time::Duration;

use gemba_checks::{CheckResult, HardState, Status};
use gemba_escalator::{Directory, EscalatorHandle, ServiceConfig};
use gemba_exec::Clock;
use gemba_exec::{self as exec, ExecSpec};
use gemba_store::SqliteStore;
use tokio::sync::{mpsc, watch};

fn start(policy: &str) -> (EscalatorHandle, mpsc::Sender<CheckResult>) {
    start_with(
        policy,
        Arc::new(|spec: ExecSpec| Box::pin(async move { exec::run(&spec).await })),
    )
}

fn start_with(
    policy: &str,
    runner: gemba_escalator::StepRunner,
) -> (EscalatorHandle, mpsc::Sender<CheckResult>) {
    start_on(policy, runner, Arc::new(SqliteStore::in_memory().unwrap()))
}

fn start_on(
    policy: &str,
    runner: gemba_escalator::StepRunner,
    store: Arc<dyn gemba_store::Store>,
) -> (EscalatorHandle, mpsc::Sender<CheckResult>) {
    let c = gemba_testkit::config("srv", policy);
    let (dir_tx, dir_rx) = watch::channel(Directory::new());
    std::mem::forget(dir_tx);
    let (h, tx, _) = gemba_escalator::spawn_with(
        ServiceConfig {
            policy: Arc::new(c.policy),
            store,
            holder: "srv".into(),
            directory: dir_rx,
            clock: Clock::new(),
            tick: Duration::from_millis(20),
            attach: None,
        },
        None,
        runner,
    );
    (h, tx)
}

fn failing() -> CheckResult {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    CheckResult {
        check: "web".into(),
        scope: "node:web-1".parse().unwrap(),
        kind: "tcp".into(),
        status: Status::Critical,
        state: HardState::Failing,
        since_ms: now,
        at_ms: now,
        interval_ms: 60_000,
        duration_ms: 1,
        output: "refused".into(),
        perf: vec![],
        flapping: false,
        flap_percent: 0.0,
        flap_changes: 0,
        trusted: true,
        level: Some(1),
        tiers: vec![],
        observer: "web-1".into(),
    }
}

async fn until_phase(h: &EscalatorHandle, phase: &str) -> serde_json::Value {
    for _ in 0..300 {
        if let Ok(Some(v)) = h.escalation(1).await {
            if v.phase_name == phase {
                return serde_json::to_value(&v).unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("escalation 1 never reached {phase}");
}

const BASE: &str = "[escalator]\nquiet_period = \"0s\"\nbudget = 1\n[[check]]\nname = \"web\"\nkind = \"tcp\"\nport = 80\nlevel = 1\n";

#[tokio::test]
async fn a_stopping_server_lets_a_running_step_finish_and_journals_it() {
    let (h, tx) = start(&format!("{BASE}[[level]]\nlevel = 1\nrun = [\"/bin/sh\", \"-c\", \"sleep 0.5; echo restarted\"]\nquiesce = \"1m\"\n"));
    tx.send(failing()).await.unwrap();
    until_phase(&h, "running").await;
    assert_eq!(
        h.drain(Duration::from_secs(5)).await,
        0,
        "the step finished within the grace period"
    );
    let v = h.escalation(1).await.unwrap().unwrap();
    assert_eq!(v.phase_name, "quiescing");
    assert_eq!(v.escalation.steps[0].output.trim(), "restarted");
    assert!(v
        .journal
        .iter()
        .any(|j| j.kind == "step-end" && j.text.contains("succeeded")));
}

#[tokio::test]
async fn a_step_past_the_grace_period_is_left_for_verification() {
    let (h, tx) = start(&format!(
        "{BASE}[[level]]\nlevel = 1\nrun = [\"/bin/sleep\", \"30\"]\n"
    ));
    tx.send(failing()).await.unwrap();
    until_phase(&h, "running").await;
    assert_eq!(h.drain(Duration::from_millis(200)).await, 1);
    // The record still says running: a new server adopts it and verifies.
    assert_eq!(
        h.escalation(1).await.unwrap().unwrap().phase_name,
        "running"
    );
}

#[tokio::test]
async fn failed_notifications_are_journaled() {
    let (h, tx) = start(&format!("{BASE}[[level]]\nlevel = 1\nrun = [\"/bin/false\"]\n[[notify]]\nkind = \"command\"\nrun = [\"/bin/false\"]\n"));
    tx.send(failing()).await.unwrap();
    until_phase(&h, "held").await;
    for _ in 0..100 {
        let j = h.journal(50).await.unwrap();
        let failed: Vec<_> = j.iter().filter(|r| r.kind == "notify-failed").collect();
        if failed.len() == 2 {
            assert!(
                failed[0].text.contains("/bin/false") && failed[0].text.contains("exit 1"),
                "{:?}",
                failed[0]
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the step-failed and gave-up notices' failures were not journaled");
}

#[tokio::test]
async fn a_step_whose_task_panics_fails_and_the_escalation_moves_on() {
    let (h, tx) = start_with(
        &format!("{BASE}[[level]]\nlevel = 1\nrun = [\"/bin/true\"]\n"),
        Arc::new(|_spec: ExecSpec| Box::pin(async { panic!("runner bug") })),
    );
    tx.send(failing()).await.unwrap();
    // Budget 1: a failed step gives up and holds the scope for a human.
    let v = until_phase(&h, "held").await;
    let journal = v["journal"].as_array().unwrap();
    assert!(
        journal.iter().any(|j| j["kind"] == "step-end"
            && j["text"]
                .as_str()
                .is_some_and(|t| t.contains("the step's task panicked: runner bug"))),
        "{journal:#?}"
    );
}

#[tokio::test]
async fn a_server_whose_lease_was_taken_over_mid_step_runs_and_writes_nothing_more() {
    use gemba_store::Store;
    // A lease long enough that this server never notices on its own: only
    // the store's fence stops it.
    let policy = "[escalator]\nquiet_period = \"0s\"\nlease_ttl = \"1h\"\n\
        [[check]]\nname = \"web\"\nkind = \"tcp\"\nport = 80\nlevel = 1\n\
        [[level]]\nlevel = 1\nrun = [\"/bin/true\"]\nquiesce = \"0s\"\n\
        [[level]]\nlevel = 2\nrun = [\"/bin/true\"]\nquiesce = \"0s\"\n";
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let release_rx = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
    let ran = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let runner: gemba_escalator::StepRunner = {
        let ran = ran.clone();
        Arc::new(move |spec: ExecSpec| {
            let (ran, release_rx) = (ran.clone(), release_rx.clone());
            Box::pin(async move {
                let level = spec
                    .env
                    .iter()
                    .find(|(k, _)| k == "GEMBA_LEVEL")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                ran.lock().unwrap().push(level.clone());
                if level == "1" {
                    // Stuck in level 1 (a pause, a partition) until told.
                    if let Some(rx) = release_rx.lock().await.take() {
                        let _ = rx.await;
                    }
                }
                exec::run(&spec).await
            })
        })
    };
    let (h, tx) = start_on(policy, runner, store.clone());
    tx.send(failing()).await.unwrap();
    until_phase(&h, "running").await;
    // Another server finds the lease expired (its clock is past it) and
    // takes the escalation over, writing its own record.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 2 * 3_600_000;
    let theirs = store
        .acquire_lease("node:web-1", "srv-2", later, 60_000)
        .await
        .unwrap()
        .expect("the expired lease goes to srv-2");
    let mut record = store.escalation(1).await.unwrap().unwrap();
    record.phase = "verifying".into();
    record.body = record.body.replace("\"running\"", "\"verifying\"");
    assert!(store
        .save_escalation(record.clone(), Some(&theirs))
        .await
        .unwrap());
    // The stuck step ends; its server carries on as if it still led.
    release_tx.send(()).unwrap();
    // Level 1's end is journaled in the same pass that would claim level 2;
    // a command answered after it shows that pass is over.
    let mut ended = false;
    for _ in 0..250 {
        let j = store.journal(1).await.unwrap();
        if j.iter().any(|j| j.kind == "step-end") {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ended, "level 1 ended");
    h.plan().await;
    assert_eq!(
        ran.lock().unwrap().clone(),
        ["1"],
        "level 2 never ran: its claim carried a stale fence"
    );
    assert_eq!(
        store.escalation(1).await.unwrap().unwrap(),
        record,
        "the record srv-2 wrote was not overwritten by the fenced server"
    );
    assert!(
        store
            .journal(1)
            .await
            .unwrap()
            .iter()
            .all(|j| !(j.kind == "step-start" && j.text.contains("level 2"))),
        "no start of level 2 was journaled"
    );
}
