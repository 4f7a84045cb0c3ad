//! A service killed every minute for ten minutes is one problem, and one
//! incident: it holds every escalation, each crash-loop hold with its
//! notice, and each acknowledgement; it is titled as a person would and
//! closes a cool-down after the last escalation ended.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use gemba_checks::{CheckResult, CheckTracker, Status};
use gemba_core::incidents::IncidentsConfig;
use gemba_core::{Policy, Scope};
use gemba_escalator::engine::Phase;
use gemba_escalator::simulate::Simulator;
use gemba_exec::Clock;
use gemba_store::{JournalRow, SqliteStore, Store};
use gemba_timeline::{incident, TimelineHandle};

const S: u64 = 1000;
const T0: u64 = 1_795_392_000_000; // 2026-11-22T00:00:00Z

const POLICY: &str = r#"
[escalator]
quiet_period = "3s"

[[level]]
level = 1
name = "reboot"
run = ["/opt/ops/reboot", "{node}"]
quiesce = "5s"
[[level]]
level = 2
name = "restart"
run = ["/opt/ops/restart", "{node}"]
quiesce = "5s"

[[check]]
name = "web"
kind = "http"
url = "http://{node_addr}:8080/"
interval = "1s"
fall = 2
level = 2
[[check]]
name = "proc"
kind = "process"
process = "web"
interval = "1s"
fall = 2
level = 2
"#;

/// The service on node n2 and its two checks, seen through the real
/// check trackers; a restart step brings it back.
struct Service {
    up: bool,
    trackers: Vec<(String, CheckTracker)>,
    runs_seen: usize,
}

impl Service {
    fn second(&mut self, sim: &mut Simulator, p: &Policy, t: u64, killed: bool) {
        sim.run_until(t, S);
        if killed {
            self.up = false;
        }
        for (check, tracker) in &mut self.trackers {
            let status = if self.up {
                Status::Ok
            } else {
                Status::Critical
            };
            tracker.record(status, t);
            let def = p.check(check).unwrap();
            sim.observe(CheckResult {
                check: check.clone(),
                scope: "node:n2".parse().unwrap(),
                kind: def.kind.name().into(),
                status,
                state: tracker.state(),
                since_ms: tracker.since_ms(),
                at_ms: t,
                interval_ms: S,
                duration_ms: 1,
                output: format!("{check}: {status:?}"),
                perf: vec![],
                flapping: tracker.flapping(),
                flap_percent: tracker.flap_percent(),
                flap_changes: tracker.flap_changes(),
                trusted: true,
                level: def.level,
                tiers: vec![],
                observer: "n2".into(),
            });
        }
        if sim.runs.len() > self.runs_seen {
            self.runs_seen = sim.runs.len();
            self.up = true;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_service_killed_every_minute_is_one_incident_with_its_holds_and_acks() {
    let p = Arc::new(gemba_testkit::policy("srv", POLICY));
    let cfg = IncidentsConfig::default();
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let journal: Arc<dyn Store> = store.clone();
    let t = TimelineHandle::new(store.clone(), Clock::starting_at(T0));
    let mut sim = Simulator::new(p.clone(), T0);
    let mut svc = Service {
        up: true,
        trackers: ["web", "proc"]
            .iter()
            .map(|c| (c.to_string(), CheckTracker::new(p.check(c).unwrap(), T0)))
            .collect(),
        runs_seen: 0,
    };
    let scope: Scope = "node:n2".parse().unwrap();
    // An older incident about n2, opened and closed by hand: escalations
    // neither join nor reopen it.
    let by_hand = incident::open(&t, "n2 slow earlier", "minor", "", "ana", &["n2".into()])
        .await
        .unwrap();
    let closing = incident::Edit {
        closed: Some(true),
        ..Default::default()
    };
    incident::edit(&t, by_hand, &closing, "ana").await.unwrap();
    let (mut written, mut saved) = (0, 0);
    let mut ack_at: Option<u64> = None;
    let mut acks = 0;
    for s in 0..16 * 60 {
        let now = T0 + s * S;
        svc.second(&mut sim, &p, now, s < 600 && s % 60 == 5);
        // The operator acknowledges a hold 20 s after it.
        let held = sim
            .engine
            .open_escalations()
            .any(|e| matches!(e.phase, Phase::Held { .. }));
        if held && ack_at.is_none() {
            ack_at = Some(now + 20 * S);
        }
        if ack_at.is_some_and(|a| now >= a) {
            let (_, fx) = sim.engine.ack(&scope, "ana", now).unwrap();
            sim.apply(fx);
            ack_at = None;
            acks += 1;
        }
        // What a server would have written.
        for e in &sim.events[written..] {
            let row = JournalRow {
                seq: 0,
                escalation: e.escalation,
                scope: e.scope.to_string(),
                at_ms: e.at_ms,
                kind: e.kind.clone(),
                text: e.text.clone(),
                server: "srv".into(),
            };
            store.append(row).await.unwrap();
        }
        written = sim.events.len();
        for e in &sim.saved[saved..] {
            store.save_escalation(e.row(), None).await.unwrap();
        }
        saved = sim.saved.len();
        tokio::time::advance(Duration::from_secs(1)).await;
        if s % 2 == 0 {
            incident::follow_once(&t, &journal, &cfg, "srv")
                .await
                .unwrap();
        }
    }
    assert!(acks >= 2, "the kills made more than one crash loop: {acks}");

    let all = incident::list(&t, false, 50).await.unwrap();
    let titles: Vec<&str> = all.iter().map(|i| i.body.title.as_str()).collect();
    assert_eq!(all.len(), 2, "one problem, one incident: {titles:?}");
    let hand = all.iter().find(|i| i.id == by_hand).unwrap();
    assert!(hand.escalations.is_empty() && !hand.is_open(), "{hand:?}");
    let i = all.iter().find(|i| i.id != by_hand).unwrap();
    let every: BTreeSet<u64> = sim.saved.iter().map(|e| e.id).collect();
    let held: BTreeSet<u64> = i.escalations.iter().copied().collect();
    assert_eq!(held, every, "every escalation is in it");
    assert!(every.len() >= 6, "{every:?}");
    assert_eq!(
        i.body.title,
        format!(
            "proc, web on n2: crash loop, acknowledged; restart ran {} times",
            sim.runs.len()
        )
    );
    // Held for a human, never at the most fundamental level.
    assert_eq!(i.body.severity, "major");
    // Closed a cool-down (5 min) after the last escalation ended, at the
    // moment it ended.
    let last_end = sim.saved.iter().map(|e| e.updated_ms).max().unwrap();
    assert_eq!(i.closed_ms, Some(last_end));
    assert_eq!(i.body.closed_by.as_deref(), Some("its escalations ended"));

    // Its timeline: every escalation's opening, steps, each crash-loop
    // hold (the line that raised its notice) and each acknowledgement.
    let lines = crate::incident::timeline(&t, &journal, None, i)
        .await
        .unwrap();
    // "escalation 7 crash-loop: …": the kind is the word before the colon.
    let count = |kind: &str| {
        lines
            .iter()
            .filter(|l| l.source == "escalation")
            .filter(|l| {
                l.text
                    .split_once(": ")
                    .is_some_and(|(head, _)| head.ends_with(&format!(" {kind}")))
            })
            .count()
    };
    assert_eq!(count("crash-loop"), acks, "{lines:#?}");
    assert_eq!(count("acknowledged"), acks);
    assert!(count("decision") >= every.len() - acks);
    assert_eq!(count("step-start"), sim.runs.len());
    assert!(lines.iter().any(|l| l.text.contains("acknowledged by ana")));
}
