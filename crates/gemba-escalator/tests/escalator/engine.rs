//! The escalator's rules in virtual time: every test drives the engine
//! through the simulator, which is also what `gemba simulate` runs.

use std::sync::Arc;

use gemba_checks::{CheckResult, HardState, Status};
use gemba_core::{Policy, Scope};
use gemba_escalator::engine::{NoticeKind, Phase, StepOutcome};
use gemba_escalator::simulate::Simulator;

const S: u64 = 1000;

const PATTERN: &str = r#"
[escalator]
quiet_period = "30s"
budget = 2
backoff = "10s"

[[level]]
level = 1
name = "iaas"
run = ["/opt/ops/iaas"]
[[level]]
level = 4
name = "vm"
run = ["/opt/ops/create-vm", "{node}"]
quiesce = "2m"
[[level]]
level = 5
name = "converge"
run = ["/opt/ops/converge", "{node}"]
quiesce = "1m"
[[level]]
level = 6
name = "redeploy"
run = ["/opt/ops/redeploy", "{node}"]
quiesce = "30s"

[[check]]
name = "ping"
kind = "mesh-node"
level = 4
[[check]]
name = "smoke"
kind = "http"
url = "http://{node_addr}/smoke"
level = 6
[[check]]
name = "app-lb"
kind = "tcp"
scope = "tier"
tier = "app"
host = "lb"
port = 80
level = 5
"#;

fn policy(extra: &str) -> Arc<Policy> {
    let text = format!("{PATTERN}{extra}");
    Arc::new(gemba_testkit::policy("srv", &text))
}

fn policy_with(escalator: &str) -> Arc<Policy> {
    let mut text = PATTERN.to_string();
    if escalator.contains("budget") {
        text = text.replace("budget = 2\n", "");
    }
    let text = text.replace("[escalator]\n", &format!("[escalator]\n{escalator}\n"));
    Arc::new(gemba_testkit::policy("srv", &text))
}

fn result(p: &Policy, check: &str, scope: &str, state: HardState, at: u64) -> CheckResult {
    let def = p.check(check).unwrap();
    CheckResult {
        check: check.into(),
        scope: scope.parse().unwrap(),
        kind: def.kind.name().into(),
        status: if state == HardState::Failing {
            Status::Critical
        } else {
            Status::Ok
        },
        state,
        since_ms: at,
        at_ms: at,
        interval_ms: 10 * S,
        duration_ms: 1,
        output: String::new(),
        perf: vec![],
        flapping: false,
        flap_percent: 0.0,
        flap_changes: 0,
        trusted: true,
        level: def.level,
        tiers: if scope.starts_with("node:") {
            vec!["app".into()]
        } else {
            vec![]
        },
        observer: "srv".into(),
    }
}

/// Feeds `check@scope` in `state` every 10 s from `from` to `to`.
fn feed(sim: &mut Simulator, check: &str, scope: &str, state: HardState, from: u64, to: u64) {
    let p = sim.engine.policy().clone();
    let mut t = from;
    while t <= to {
        sim.run_until(t, S);
        sim.observe(result(&p, check, scope, state, t));
        t += 10 * S;
    }
}

fn levels_run(sim: &Simulator) -> Vec<(u64, u32)> {
    sim.runs.iter().map(|r| (r.at_ms / S, r.level)).collect()
}

fn kinds(sim: &Simulator) -> Vec<String> {
    sim.events.iter().map(|e| e.kind.clone()).collect()
}

#[test]
fn node_down_runs_vm_converge_redeploy_after_the_quiet_period_with_quiescence() {
    let p = policy("");
    let mut sim = Simulator::new(p.clone(), 0);
    // ping and smoke both fail; ping needs the more fundamental level 4.
    feed(&mut sim, "ping", "node:web-1", HardState::Failing, 0, 0);
    feed(
        &mut sim,
        "smoke",
        "node:web-1",
        HardState::Failing,
        5 * S,
        5 * S,
    );
    sim.run_until(29 * S, S);
    assert!(sim.runs.is_empty(), "nothing runs during the quiet period");
    sim.run_until(30 * S, S);
    assert_eq!(levels_run(&sim), [(30, 4)]);
    // Level 4 quiesces 2 min, level 5 1 min.
    sim.run_until(149 * S, S);
    assert_eq!(levels_run(&sim).len(), 1);
    sim.run_until(150 * S, S);
    sim.run_until(210 * S, S);
    assert_eq!(levels_run(&sim), [(30, 4), (150, 5), (210, 6)]);
    // After level 6's 30 s quiescence the checks are verified.
    sim.run_until(240 * S, S);
    feed(
        &mut sim,
        "ping",
        "node:web-1",
        HardState::Passing,
        245 * S,
        245 * S,
    );
    feed(
        &mut sim,
        "smoke",
        "node:web-1",
        HardState::Passing,
        246 * S,
        246 * S,
    );
    sim.run_until(247 * S, S);
    let k = kinds(&sim);
    assert!(k.ends_with(&["verify".into(), "resolved".into()]), "{k:?}");
    assert_eq!(sim.notices.last().unwrap().kind, NoticeKind::Resolved);
    assert_eq!(sim.engine.open_escalations().count(), 0);
}

#[test]
fn smoke_failure_alone_redeploys_only() {
    let p = policy("");
    let mut sim = Simulator::new(p, 0);
    feed(
        &mut sim,
        "smoke",
        "node:web-2",
        HardState::Failing,
        0,
        30 * S,
    );
    sim.run_until(31 * S, S);
    assert_eq!(levels_run(&sim), [(30, 6)]);
}

#[test]
fn a_failure_that_clears_within_the_quiet_period_runs_nothing() {
    let p = policy("");
    let mut sim = Simulator::new(p, 0);
    feed(
        &mut sim,
        "smoke",
        "node:web-2",
        HardState::Failing,
        0,
        10 * S,
    );
    feed(
        &mut sim,
        "smoke",
        "node:web-2",
        HardState::Passing,
        20 * S,
        60 * S,
    );
    sim.run_until(120 * S, S);
    assert!(sim.runs.is_empty());
}

#[test]
fn a_post_condition_that_fails_retries_with_backoff_then_gives_up_and_holds() {
    let p = policy("");
    let mut sim = Simulator::new(p, 0);
    feed(
        &mut sim,
        "smoke",
        "node:web-3",
        HardState::Failing,
        0,
        400 * S,
    );
    // attempt 1: 30 s; quiesce 30 s; verify at 70 s; backoff 10 s; attempt 2
    // at 80 s; verify at 120 s; give up.
    assert_eq!(levels_run(&sim), [(30, 6), (80, 6)]);
    let held = sim.engine.open_escalations().next().unwrap();
    assert!(matches!(held.phase, Phase::Held { .. }), "{:?}", held.phase);
    assert_eq!(
        sim.notices
            .iter()
            .filter(|n| n.kind == NoticeKind::GaveUp)
            .count(),
        1
    );
    // Held: nothing more runs, however long it fails.
    feed(
        &mut sim,
        "smoke",
        "node:web-3",
        HardState::Failing,
        410 * S,
        2000 * S,
    );
    assert_eq!(sim.runs.len(), 2);
    // Acknowledging frees the scope: a new quiet period, a new escalation.
    let (id, fx) = sim
        .engine
        .ack(&"node:web-3".parse().unwrap(), "ops", sim.now)
        .unwrap();
    sim.apply(fx);
    assert_eq!(id, 1);
    feed(
        &mut sim,
        "smoke",
        "node:web-3",
        HardState::Failing,
        2010 * S,
        2050 * S,
    );
    assert_eq!(sim.runs.len(), 3);
    assert_eq!(sim.runs[2].escalation, 2);
}

#[test]
fn climbing_starts_each_attempt_one_level_more_fundamental() {
    let p = policy_with("climb = true\nbudget = 3");
    let mut sim = Simulator::new(p, 0);
    feed(
        &mut sim,
        "smoke",
        "node:web-4",
        HardState::Failing,
        0,
        1000 * S,
    );
    let levels: Vec<u32> = sim.runs.iter().map(|r| r.level).collect();
    assert_eq!(levels, [6, 5, 6, 4, 5, 6]);
}

#[test]
fn a_failing_step_ends_the_chain_and_costs_an_attempt() {
    let p = policy("");
    let mut sim = Simulator::new(p, 0);
    sim.outcomes
        .insert(4, vec![StepOutcome::Failed("exit 1".into())].into());
    feed(
        &mut sim,
        "ping",
        "node:web-5",
        HardState::Failing,
        0,
        35 * S,
    );
    assert_eq!(
        levels_run(&sim),
        [(30, 4)],
        "5 and 6 do not run after 4 failed"
    );
    assert_eq!(sim.notices[0].kind, NoticeKind::StepFailed);
    sim.run_until(41 * S, S);
    assert_eq!(
        levels_run(&sim),
        [(30, 4), (40, 4)],
        "attempt 2 after a 10 s backoff"
    );
}

#[test]
fn flapping_checks_never_act_and_a_flapping_failure_is_held_with_one_notice() {
    let p = policy("");
    let mut sim = Simulator::new(p.clone(), 0);
    for i in 0..40u64 {
        sim.run_until(i * 10 * S, S);
        let mut r = result(
            &p,
            "smoke",
            "node:web-6",
            if i % 2 == 0 {
                HardState::Failing
            } else {
                HardState::Passing
            },
            i * 10 * S,
        );
        r.flapping = true;
        r.state = HardState::Failing;
        r.flap_percent = 95.0;
        sim.observe(r);
    }
    sim.run_until(500 * S, S);
    assert!(sim.runs.is_empty());
    assert_eq!(
        sim.notices
            .iter()
            .filter(|n| n.kind == NoticeKind::Flapping)
            .count(),
        1
    );
    // It kept failing past the quiet period: held for a human, once.
    let plan = sim.engine.plan(sim.now);
    assert!(
        plan.scopes[0]
            .status
            .contains("held (smoke@node:web-6 is flapping (95 % weighted state change"),
        "{:?}",
        plan.scopes[0]
    );
    assert_eq!(sim.notices[0].ack.as_deref(), Some("gemba ack node:web-6"));
}

#[test]
fn stale_and_untrusted_results_trigger_nothing() {
    let p = policy("");
    let mut sim = Simulator::new(p.clone(), 0);
    // One failing result, then silence: stale after 3 intervals (15 s),
    // before the quiet period ends.
    let mut silent = result(&p, "smoke", "node:web-7", HardState::Failing, 0);
    silent.interval_ms = 5 * S;
    sim.observe(silent);
    let mut r = result(&p, "ping", "node:web-8", HardState::Failing, 0);
    r.trusted = false;
    sim.observe(r.clone());
    for t in (10..200).step_by(10) {
        sim.run_until(t * S, S);
        r.at_ms = t * S;
        sim.observe(r.clone());
    }
    assert!(sim.runs.is_empty(), "{:?}", sim.runs);
}

#[test]
fn a_tier_escalation_folds_in_its_nodes() {
    let p = policy("");
    let mut sim = Simulator::new(p, 0);
    // The node's smoke test fails first and escalates.
    feed(
        &mut sim,
        "smoke",
        "node:web-9",
        HardState::Failing,
        0,
        30 * S,
    );
    assert_eq!(sim.runs.len(), 1);
    // Then the whole tier fails; its escalation supersedes the node's.
    feed(
        &mut sim,
        "app-lb",
        "tier:app",
        HardState::Failing,
        31 * S,
        70 * S,
    );
    let tier_runs: Vec<u64> = sim.runs.iter().map(|r| r.escalation).collect();
    assert_eq!(tier_runs, [1, 2]);
    assert!(sim
        .events
        .iter()
        .any(|e| e.kind == "superseded" && e.escalation == Some(1)));
    // A second node failing while the tier escalates folds in, no new escalation.
    feed(
        &mut sim,
        "smoke",
        "node:web-10",
        HardState::Failing,
        71 * S,
        120 * S,
    );
    assert!(sim.runs.iter().all(|r| r.escalation <= 2), "{:?}", sim.runs);
    assert!(sim
        .events
        .iter()
        .any(|e| e.kind == "folded" && e.scope == Scope::Node("web-10".into())));
}

#[test]
fn over_max_running_a_scope_waits_with_one_notice_and_runs_when_a_slot_frees() {
    let p = policy_with("max_running = 1\nbudget = 1");
    let mut sim = Simulator::new(p, 0);
    feed(&mut sim, "smoke", "node:a", HardState::Failing, 0, 30 * S);
    feed(
        &mut sim,
        "smoke",
        "node:b",
        HardState::Failing,
        31 * S,
        61 * S,
    );
    // a runs; b is over the limit of one running escalation and waits.
    assert_eq!(sim.runs.len(), 1);
    let waits: Vec<_> = sim
        .events
        .iter()
        .filter(|e| e.kind == "rate-limited" && e.scope == Scope::Node("b".into()))
        .collect();
    assert_eq!(waits.len(), 1, "journaled once: {waits:?}");
    let notices: Vec<_> = sim
        .notices
        .iter()
        .filter(|n| n.kind == NoticeKind::RateLimited)
        .collect();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].scope, Scope::Node("b".into()));
    assert_eq!(notices[0].checks[0].id, "smoke@node:b");
    assert!(notices[0].next.as_deref().unwrap().contains("as soon as"));
    assert_eq!(notices[0].ack, None, "waiting is not held");
    // a gives up (held, not running); b starts without a human.
    feed(
        &mut sim,
        "smoke",
        "node:a",
        HardState::Failing,
        71 * S,
        100 * S,
    );
    feed(
        &mut sim,
        "smoke",
        "node:b",
        HardState::Failing,
        71 * S,
        100 * S,
    );
    assert_eq!(sim.runs.len(), 2);
    assert_eq!(sim.runs[1].escalation, 2);
}

#[test]
fn past_the_hourly_limit_a_scope_is_held_with_one_notice_until_acknowledged() {
    let p = policy_with("max_per_scope_per_hour = 2\ncrash_loop_failures = 50");
    let mut sim = Simulator::new(p, 0);
    // smoke fails for 10 s every 5 min; each escalation resolves it.
    for k in 0..8u64 {
        let t = k * 300 * S;
        feed(
            &mut sim,
            "smoke",
            "node:a",
            HardState::Failing,
            t,
            t + 40 * S,
        );
        feed(
            &mut sim,
            "smoke",
            "node:a",
            HardState::Passing,
            t + 50 * S,
            t + 290 * S,
        );
    }
    assert_eq!(
        sim.runs.len(),
        2,
        "two escalations ran, then the limit held the scope"
    );
    let held = sim.engine.open_escalations().next().expect("held");
    assert!(matches!(held.phase, Phase::Held { .. }));
    let notices: Vec<_> = sim
        .notices
        .iter()
        .filter(|n| n.kind == NoticeKind::RateLimited)
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    let n = notices[0];
    assert!(
        n.text
            .contains("2 escalations of node:a in the last hour (max 2)"),
        "{}",
        n.text
    );
    assert!(n.text.contains("would run levels 6:redeploy"), "{}", n.text);
    assert_eq!(n.ack.as_deref(), Some("gemba ack node:a"));
    assert_eq!(n.ran.len(), 2, "{:?}", n.ran);
    assert_eq!(
        sim.events
            .iter()
            .filter(|e| e.kind == "rate-limited")
            .count(),
        1,
        "one journal entry, not one per failure"
    );
    let plan = sim.engine.plan(sim.now);
    assert!(
        plan.scopes[0].status.contains("held (rate limit"),
        "{:?}",
        plan.scopes[0]
    );
    // A human acknowledges: the counts start afresh and it escalates again.
    let (_, fx) = sim
        .engine
        .ack(&"node:a".parse().unwrap(), "ops", sim.now)
        .unwrap();
    sim.apply(fx);
    let t = sim.now + 10 * S;
    feed(
        &mut sim,
        "smoke",
        "node:a",
        HardState::Failing,
        t,
        t + 40 * S,
    );
    assert_eq!(sim.runs.len(), 3);
}

#[test]
fn a_recovery_after_the_quiet_period_is_not_called_within_it() {
    let p = policy_with("mode = \"plan\"");
    let mut sim = Simulator::new(p, 0);
    feed(&mut sim, "smoke", "node:a", HardState::Failing, 0, 60 * S);
    feed(
        &mut sim,
        "smoke",
        "node:a",
        HardState::Passing,
        70 * S,
        70 * S,
    );
    let recovered: Vec<&str> = sim
        .events
        .iter()
        .filter(|e| e.kind == "recovered")
        .map(|e| e.text.as_str())
        .collect();
    assert_eq!(recovered.len(), 1);
    assert!(
        recovered[0].starts_with("passing again after 70 s; nothing ran (plan mode"),
        "{recovered:?}"
    );
}

#[test]
fn approval_holds_the_step_until_a_human_approves() {
    let p = policy("");
    let mut sim = {
        let mut pol = (*p).clone();
        pol.levels
            .iter_mut()
            .find(|l| l.level == 6)
            .unwrap()
            .approve = true;
        Simulator::new(Arc::new(pol), 0)
    };
    feed(
        &mut sim,
        "smoke",
        "node:web-11",
        HardState::Failing,
        0,
        100 * S,
    );
    assert!(sim.runs.is_empty());
    assert_eq!(sim.notices[0].kind, NoticeKind::ApprovalNeeded);
    let fx = sim.engine.approve(1, "ops", sim.now).unwrap();
    sim.apply(fx);
    assert_eq!(sim.runs.len(), 1);
    assert!(
        sim.engine.approve(1, "ops", sim.now).is_err(),
        "approving twice is an error"
    );
}

#[test]
fn plan_mode_decides_and_journals_but_runs_nothing() {
    let p = policy_with("mode = \"plan\"");
    let mut sim = Simulator::new(p, 0);
    feed(
        &mut sim,
        "ping",
        "node:web-12",
        HardState::Failing,
        0,
        200 * S,
    );
    assert!(sim.runs.is_empty());
    let plans: Vec<&String> = sim
        .events
        .iter()
        .filter(|e| e.kind == "plan")
        .map(|e| &e.text)
        .collect();
    assert_eq!(plans.len(), 1, "journaled once, not every tick");
    assert!(
        plans[0].contains("4:vm → 5:converge → 6:redeploy"),
        "{}",
        plans[0]
    );
}

#[test]
fn a_restart_during_a_step_verifies_after_its_quiescence_instead_of_re_running_it() {
    let p = policy("");
    let mut sim = Simulator::new(p.clone(), 0);
    sim.step_duration_ms = 60 * S;
    feed(
        &mut sim,
        "smoke",
        "node:web-15",
        HardState::Failing,
        0,
        40 * S,
    );
    let esc = sim.engine.open_escalations().next().unwrap().clone();
    assert!(matches!(esc.phase, Phase::Running { level: 6, .. }));
    let mut after = Simulator::new(p.clone(), 45 * S);
    let fx = after.engine.adopt(esc, 45 * S);
    after.apply(fx);
    // Still failing just after the take-over: the step may have ended a
    // moment ago, and level 6 quiesces 30 s.
    after.observe(result(
        &p,
        "smoke",
        "node:web-15",
        HardState::Failing,
        50 * S,
    ));
    after.run_until(70 * S, S);
    assert!(
        !after
            .events
            .iter()
            .any(|e| e.kind == "verify" || e.kind == "retry"),
        "not judged within the quiescence: {:#?}",
        after.events
    );
    after.observe(result(
        &p,
        "smoke",
        "node:web-15",
        HardState::Passing,
        80 * S,
    ));
    after.run_until(90 * S, S);
    assert!(after.runs.is_empty(), "the interrupted step is not re-run");
    assert!(
        after.events.iter().any(|e| e.kind == "resolved"),
        "{:#?}",
        after.events
    );
}

#[test]
fn the_plan_says_what_would_run_and_why() {
    let p = policy("");
    let mut sim = Simulator::new(p, 0);
    feed(
        &mut sim,
        "ping",
        "node:web-14",
        HardState::Failing,
        0,
        10 * S,
    );
    let plan = sim.engine.plan(sim.now);
    let s = &plan.scopes[0];
    assert_eq!(s.scope, Scope::Node("web-14".into()));
    assert_eq!(s.level, Some(4));
    assert_eq!(s.chain, ["4:vm", "5:converge", "6:redeploy"]);
    assert_eq!(s.status, "quiet period");
    assert_eq!(s.at_ms, Some(30 * S));
}

#[test]
fn a_restart_during_quiescence_keeps_its_deadline() {
    let p = policy("");
    let mut sim = Simulator::new(p.clone(), 0);
    feed(
        &mut sim,
        "smoke",
        "node:web-15",
        HardState::Failing,
        0,
        35 * S,
    );
    let esc = sim.engine.open_escalations().next().unwrap().clone();
    assert_eq!(
        esc.phase,
        Phase::Quiescing {
            level: 6,
            until_ms: 60 * S
        }
    );
    let mut after = Simulator::new(p.clone(), 40 * S);
    let fx = after.engine.adopt(esc, 40 * S);
    after.apply(fx);
    after.run_until(59 * S, S);
    let open = after.engine.open_escalations().next().unwrap();
    assert!(
        matches!(open.phase, Phase::Quiescing { .. }),
        "still quiescing at 59 s"
    );
    after.run_until(60 * S, S);
    assert!(matches!(
        after.engine.open_escalations().next().unwrap().phase,
        Phase::Verifying { .. }
    ));
    after.observe(result(
        &p,
        "smoke",
        "node:web-15",
        HardState::Passing,
        62 * S,
    ));
    assert!(after.runs.is_empty(), "nothing re-ran");
    assert!(after.events.iter().any(|e| e.kind == "resolved"));
}

#[test]
fn a_node_that_left_the_grid_is_forgotten_unless_its_escalation_is_open() {
    let p = policy("");
    let mut sim = Simulator::new(p.clone(), 0);
    sim.observe(result(&p, "smoke", "node:a", HardState::Passing, 0));
    sim.observe(result(&p, "smoke", "node:c", HardState::Passing, 0));
    // b fails long enough to open an escalation (its step runs at 30 s).
    feed(&mut sim, "smoke", "node:b", HardState::Failing, 0, 30 * S);
    sim.run_until(31 * S, S);
    assert_eq!(sim.engine.open_escalations().count(), 1);
    assert_eq!(sim.engine.held_state().0, 3);
    // b and c leave the grid; a stays.
    let members: std::collections::BTreeSet<String> = ["a".to_string()].into();
    let forgotten = sim.engine.forget_departed(&members);
    assert_eq!(
        forgotten,
        [("smoke".to_string(), "node:c".parse().unwrap())],
        "c is forgotten; b is kept while its escalation is open"
    );
    let (results, _, _, tiers) = sim.engine.held_state();
    assert_eq!(results, 2);
    assert_eq!(tiers, 1, "only a's tiers are kept");
    assert!(sim
        .engine
        .results()
        .all(|r| r.scope.to_string() != "node:c"));
}
