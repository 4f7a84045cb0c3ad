//! A crash loop reaches a human. A service dies every 20 s; two checks
//! (an http and a process check, 1 s interval, fall 2) watch it through
//! the real check trackers, and each `restart` step the engine runs brings
//! it back, until the next kill. All in virtual time.

use std::sync::Arc;

use gemba_checks::{CheckResult, CheckTracker, HardState, Status};
use gemba_core::{Policy, Scope};
use gemba_escalator::engine::{NoticeKind, Phase};
use gemba_escalator::simulate::Simulator;

const S: u64 = 1000;

fn policy(escalator: &str) -> Arc<Policy> {
    let text = format!(
        r#"
[escalator]
quiet_period = "3s"
{escalator}

[[level]]
level = 1
name = "reboot"
run = ["/opt/ops/reboot", "{{node}}"]
quiesce = "5s"
[[level]]
level = 2
name = "restart"
run = ["/opt/ops/restart", "{{node}}"]
quiesce = "5s"

[[check]]
name = "web"
kind = "http"
url = "http://{{node_addr}}:8080/"
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
"#
    );
    Arc::new(gemba_testkit::policy("srv", &text))
}

/// The toy service and its two checks.
struct Service {
    up: bool,
    trackers: Vec<(String, CheckTracker)>,
    runs_seen: usize,
    /// Restarts gemba ran (levels 1 and 2 both bring it back).
    restarts: usize,
}

impl Service {
    fn new(p: &Policy) -> Service {
        Service {
            up: true,
            trackers: ["web", "proc"]
                .iter()
                .map(|c| (c.to_string(), CheckTracker::new(p.check(c).unwrap(), 0)))
                .collect(),
            runs_seen: 0,
            restarts: 0,
        }
    }

    /// One second of life: maybe a kill, the checks, the engine's steps.
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
            sim.observe(CheckResult {
                check: check.clone(),
                scope: "node:n2".parse().unwrap(),
                kind: p.check(check).unwrap().kind.name().into(),
                status,
                state: tracker.state(),
                since_ms: tracker.since_ms(),
                at_ms: t,
                interval_ms: S,
                duration_ms: 1,
                output: if self.up {
                    "OK".into()
                } else {
                    format!("CRITICAL: {check} is down")
                },
                perf: vec![],
                flapping: tracker.flapping(),
                flap_percent: tracker.flap_percent(),
                flap_changes: tracker.flap_changes(),
                trusted: true,
                level: p.check(check).unwrap().level,
                tiers: vec![],
                observer: "n2".into(),
            });
        }
        if sim.runs.len() > self.runs_seen {
            self.restarts += sim.runs.len() - self.runs_seen;
            self.runs_seen = sim.runs.len();
            self.up = true;
        }
    }

    /// Kills the service every `every` s from `from` to `to` (seconds).
    fn kill_loop(&mut self, sim: &mut Simulator, p: &Policy, from: u64, to: u64, every: u64) {
        for s in from..to {
            self.second(sim, p, s * S, s % every == 5);
        }
    }
}

fn held(sim: &Simulator) -> Option<String> {
    sim.engine
        .open_escalations()
        .find(|e| matches!(e.phase, Phase::Held { .. }))
        .map(|e| e.held_because.clone().unwrap_or_default())
}

#[test]
fn a_service_dying_every_20_s_is_held_as_a_crash_loop_with_one_notice() {
    let p = policy("");
    let mut sim = Simulator::new(p.clone(), 0);
    let mut svc = Service::new(&p);
    svc.kill_loop(&mut sim, &p, 0, 600, 20);

    // Two restarts, then the third failure in 10 min is a crash loop.
    assert_eq!(svc.restarts, 2, "{:?}", sim.runs);
    let escalations: std::collections::BTreeSet<u64> =
        sim.runs.iter().map(|r| r.escalation).collect();
    assert_eq!(escalations.len(), 2);
    let why = held(&sim).expect("the scope is held");
    assert!(why.starts_with("crash loop: 3 failures in "), "{why}");
    assert!(why.ends_with("2:restart ran 2 times"), "{why}");

    let loud: Vec<_> = sim
        .notices
        .iter()
        .filter(|n| matches!(n.kind, NoticeKind::CrashLoop | NoticeKind::RateLimited))
        .collect();
    assert_eq!(loud.len(), 1, "exactly one notice: {loud:?}");
    let n = loud[0];
    assert_eq!(n.kind, NoticeKind::CrashLoop);
    assert_eq!(n.ack.as_deref(), Some("gemba ack node:n2"));
    let ids: Vec<&str> = n.checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["proc@node:n2", "web@node:n2"]);
    assert!(n.checks[0].output.contains("CRITICAL"));
    assert_eq!(n.ran.len(), 2, "{:?}", n.ran);
    assert!(
        n.ran[0].contains("level 2 (restart) succeeded"),
        "{:?}",
        n.ran
    );
    assert!(n
        .next
        .as_deref()
        .unwrap()
        .contains("until a human acknowledges"));
    // Nothing else went out after the hold: no flapping notice, no
    // repeated rate-limit notice.
    let after: Vec<_> = sim.notices.iter().filter(|x| x.at_ms > n.at_ms).collect();
    assert!(after.is_empty(), "{after:?}");

    // The journal: one entry per episode, nothing repeated while held.
    let held_at = n.at_ms;
    let later: Vec<_> = sim
        .events
        .iter()
        .filter(|e| e.at_ms > held_at && e.kind != "flapping")
        .collect();
    assert!(later.is_empty(), "{later:?}");
    assert_eq!(
        sim.events.iter().filter(|e| e.kind == "crash-loop").count(),
        1
    );
    assert_eq!(sim.events.iter().filter(|e| e.kind == "quiet").count(), 3);
    assert!(sim.events.iter().all(|e| e.kind != "rate-limited"));

    // The plan says it.
    let plan = sim.engine.plan(sim.now);
    assert!(
        plan.scopes[0]
            .status
            .contains("held (crash loop: 3 failures"),
        "{:?}",
        plan.scopes[0].status
    );

    // gemba ack frees the scope: it escalates (and restarts) again.
    let (_, fx) = sim
        .engine
        .ack(&Scope::Node("n2".into()), "ops", sim.now)
        .unwrap();
    sim.apply(fx);
    assert!(held(&sim).is_none());
    let before = svc.restarts;
    svc.kill_loop(&mut sim, &p, 600, 660, 1000);
    assert_eq!(svc.restarts, before + 1, "restarted after the ack");
    assert!(svc.up);
}

#[test]
fn with_climb_a_crash_loop_runs_the_more_fundamental_level_then_holds() {
    let p = policy("climb = true");
    let mut sim = Simulator::new(p.clone(), 0);
    let mut svc = Service::new(&p);
    svc.kill_loop(&mut sim, &p, 0, 600, 20);
    let levels: Vec<u32> = sim.runs.iter().map(|r| r.level).collect();
    // restart, restart, then reboot → restart; then nothing is left to
    // climb to and the scope is held.
    assert_eq!(&levels[..4], [2, 2, 1, 2], "{levels:?}");
    let loops: Vec<_> = sim
        .notices
        .iter()
        .filter(|n| n.kind == NoticeKind::CrashLoop)
        .collect();
    assert!(
        loops[0].text.contains("climbing to level 1:reboot"),
        "{}",
        loops[0].text
    );
    let why = held(&sim).expect("held once no level is left");
    assert!(why.contains("no more fundamental level"), "{why}");
    assert_eq!(loops.len(), 2, "one notice per climb or hold: {loops:?}");
}

#[test]
fn failures_spread_wider_than_the_window_are_no_crash_loop_but_flapping_holds() {
    let p = policy("");
    let mut sim = Simulator::new(p.clone(), 0);
    let mut svc = Service::new(&p);
    // A kill every 5 min: two failures in any 10 min window, but the
    // third recovery is the sixth state change within the hour: the
    // checks flap by time, and the fourth failure holds the scope.
    svc.kill_loop(&mut sim, &p, 0, 1800, 300);
    assert_eq!(svc.restarts, 3);
    let why = held(&sim).expect("held");
    assert!(why.contains("web@node:n2 is flapping ("), "{why}");
    assert!(
        why.contains("6 state changes within its flap window"),
        "{why}"
    );
    assert!(sim.notices.iter().all(|n| n.kind != NoticeKind::CrashLoop));
    let flapping: Vec<_> = sim
        .notices
        .iter()
        .filter(|n| n.kind == NoticeKind::Flapping)
        .collect();
    assert_eq!(flapping.len(), 1, "{flapping:?}");
    assert_eq!(flapping[0].ack.as_deref(), Some("gemba ack node:n2"));

    // The operator acknowledges: the checks still flap, but the human said
    // go ahead, so the service is restarted again.
    let (_, fx) = sim
        .engine
        .ack(&Scope::Node("n2".into()), "ops", sim.now)
        .unwrap();
    sim.apply(fx);
    svc.kill_loop(&mut sim, &p, 1800, 1860, 1000);
    assert_eq!(svc.restarts, 4, "restarted after the ack");
    assert!(svc.up);
}

#[test]
fn a_failing_state_that_persists_is_one_episode() {
    let p = policy("");
    let mut sim = Simulator::new(p.clone(), 0);
    let mut svc = Service::new(&p);
    // The restart does not help: the service stays down.
    sim.outcomes.insert(
        2,
        std::iter::repeat_n(
            gemba_escalator::engine::StepOutcome::Failed("exit 1".into()),
            10,
        )
        .collect(),
    );
    for s in 0..600 {
        svc.second(&mut sim, &p, s * S, s == 5);
        svc.up = false;
    }
    // It gives up after its budget; that is not a crash loop.
    let why = held(&sim).expect("held");
    assert!(why.starts_with("gave up after 2 attempt(s)"), "{why}");
    assert!(sim.notices.iter().all(|n| n.kind != NoticeKind::CrashLoop));
    let _ = HardState::Failing;
}
