//! Detectors over generated histories: each kind of problem from the runs
//! that show it, with time given by the runs (and by `tick`), never by the
//! wall clock.

use crate::common;

use gemba_market::detect::{Detector, Thresholds};
use gemba_market::problem::{Kind, Severity, Status};
use gemba_market::run::*;

use common::{changing, failing, run, H, T0};

fn only(d: &Detector, kind: Kind) -> Vec<&gemba_market::problem::Problem> {
    d.problems().filter(|p| p.kind == kind).collect()
}

#[test]
fn the_same_failure_on_two_nodes_is_one_problem_and_resolves_after_clean_runs() {
    let mut d = Detector::new(Thresholds::default());
    d.apply(&failing(
        run("web-1", T0),
        "Exec",
        "migrate",
        "'/usr/bin/migrate --id 4411' returned 1 instead of one of [0]",
    ));
    d.apply(&failing(
        run("web-2", T0 + 3 * H),
        "Exec",
        "migrate",
        "'/usr/bin/migrate --id 9' returned 2 instead of one of [0]",
    ));
    let p = d.problems().next().unwrap();
    assert_eq!(d.problems().count(), 1);
    assert_eq!(p.kind, Kind::RunFailure);
    assert_eq!(p.nodes_total, 2);
    assert_eq!(p.severity, Severity::High);
    assert_eq!(p.status, Status::New);
    assert_eq!(p.sample.node, "web-2");
    assert_eq!(p.sample.line, Some(4));
    let id = p.id;
    // Three clean runs on web-1 are not enough: web-2 has not recovered.
    for i in 1..=3 {
        d.apply(&run("web-1", T0 + 3 * H + i * H));
    }
    assert_eq!(d.problem(id).unwrap().status, Status::New);
    for i in 1..=2 {
        d.apply(&run("web-2", T0 + 3 * H + i * H));
    }
    assert_ne!(d.problem(id).unwrap().status, Status::Resolved);
    d.apply(&run("web-2", T0 + 7 * H));
    assert_eq!(d.problem(id).unwrap().status, Status::Resolved);
    // It comes back: regressed, the same id.
    d.apply(&failing(
        run("web-1", T0 + 9 * H),
        "Exec",
        "migrate",
        "'/usr/bin/migrate --id 1' returned 1 instead of one of [0]",
    ));
    let p = d.problem(id).unwrap();
    assert_eq!(p.status, Status::Regressed);
    assert_eq!(p.regressed_ms, Some(T0 + 9 * H));
}

#[test]
fn a_run_that_applied_no_catalog_does_not_count_as_clean() {
    let mut d = Detector::new(Thresholds::default());
    d.apply(&failing(
        run("web-1", T0),
        "Service",
        "app",
        "Could not start Service[app]",
    ));
    for i in 1..=5 {
        let mut r = run("web-1", T0 + i * H);
        r.catalog_failed = true;
        r.status = RunStatus::Failed;
        r.error = Some(RunError {
            class: "catalog".into(),
            message: "Could not retrieve catalog from remote server".into(),
        });
        d.apply(&r);
    }
    let svc = d
        .problems()
        .find(|p| p.resource.as_deref() == Some("Service[app]"))
        .unwrap();
    assert_eq!(svc.status, Status::New);
    // The catalog failure is a problem of its own.
    assert!(d.problems().any(|p| p
        .signature
        .starts_with("failure|catalog|Could not retrieve catalog")));
}

#[test]
fn a_resource_that_changes_on_every_run_is_not_idempotent_and_louder_when_it_restarts() {
    let mut d = Detector::new(Thresholds::default());
    for i in 0..2 {
        d.apply(&changing(
            run("web-1", T0 + i * H),
            "Exec",
            "always-restart-app",
            "returns",
            false,
        ));
    }
    assert!(
        only(&d, Kind::NotIdempotent).is_empty(),
        "2 of 3 is not enough"
    );
    d.apply(&changing(
        run("web-1", T0 + 2 * H),
        "Exec",
        "always-restart-app",
        "returns",
        false,
    ));
    let p = only(&d, Kind::NotIdempotent);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].resource.as_deref(), Some("Exec[always-restart-app]"));
    assert_eq!(p[0].severity, Severity::Medium);
    assert!(p[0].title.contains("changes on every run"));

    // A config file rewritten every run that restarts the service each time.
    for i in 0..3 {
        let r = changing(
            run("db-1", T0 + i * H),
            "File",
            "/etc/db.conf",
            "content",
            false,
        );
        d.apply(&changing(r, "Service", "db", "restarted", true));
    }
    let conf = d
        .problems()
        .find(|p| {
            p.kind == Kind::NotIdempotent && p.resource.as_deref() == Some("File[/etc/db.conf]")
        })
        .unwrap();
    assert!(conf.refresh);
    assert_eq!(conf.severity, Severity::High);
    assert!(conf.why.contains("restarts a service"));

    // A change that happens once (a real fix being applied) is fine.
    d.apply(&changing(
        run("web-2", T0),
        "File",
        "/etc/motd",
        "content",
        false,
    ));
    d.apply(&run("web-2", T0 + H));
    d.apply(&run("web-2", T0 + 2 * H));
    assert!(!d
        .problems()
        .any(|p| p.resource.as_deref() == Some("File[/etc/motd]")));
}

#[test]
fn failures_spread_over_days_are_not_an_outage() {
    let mut d = Detector::new(Thresholds::default());
    for n in 0..4 {
        d.apply(&failing(
            run(&format!("app-{n}"), T0 + n * 24 * H),
            "Exec",
            "fetch-code",
            "returned 128",
        ));
    }
    let p = d.problems().next().unwrap();
    assert_ne!(p.kind, Kind::ExternalOutage);
}

#[test]
fn a_service_failing_only_on_fresh_nodes_is_a_bootstrap_failure() {
    let mut d = Detector::new(Thresholds::default());
    // Established nodes run the service fine.
    for n in 0..3 {
        for i in 0..3 {
            d.apply(&run(&format!("web-{n}"), T0 + i * H));
        }
    }
    // A new node fails it from its first run.
    d.apply(&failing(
        run("web-new", T0 + 5 * H),
        "Service",
        "app",
        "Could not start Service[app]: Execution of '/usr/sbin/service app start' returned 1",
    ));
    d.apply(&failing(
        run("web-new", T0 + 6 * H),
        "Service",
        "app",
        "Could not start Service[app]: Execution of '/usr/sbin/service app start' returned 1",
    ));
    d.apply(&run("web-0", T0 + 7 * H));
    let p = d.problems().next().unwrap();
    assert_eq!(p.kind, Kind::BootstrapFailure, "{}", p.why);
    assert!(p.why.contains("new node"), "{}", p.why);

    // The same failure on an established node is not a bootstrap failure.
    d.apply(&failing(
        run("web-1", T0 + 8 * H),
        "Service",
        "app",
        "Could not start Service[app]: Execution of '/usr/sbin/service app start' returned 1",
    ));
    let p = d.problems().next().unwrap();
    assert_ne!(p.kind, Kind::BootstrapFailure);
}

#[test]
fn a_failure_that_comes_and_goes_is_intermittent() {
    let mut d = Detector::new(Thresholds::default());
    let deploy = |r| {
        failing(
            r,
            "Exec",
            "deploy-app",
            "'/opt/deploy.sh' returned 1 instead of one of [0]",
        )
    };
    d.apply(&deploy(run("app-1", T0)));
    let mut fine = run("app-1", T0 + H);
    fine.ok_resources.push("Exec[deploy-app]".into());
    d.apply(&fine);
    d.apply(&deploy(run("app-1", T0 + 2 * H)));
    let p = d.problems().next().unwrap();
    assert_eq!(p.kind, Kind::Intermittent);
    assert!(p.why.contains("came back"), "{}", p.why);

    // It moves: fails on app-0, which then runs it fine, then on app-1,
    // all at one code version.
    let mut d = Detector::new(Thresholds::default());
    for n in 0..4 {
        d.apply(&run(&format!("app-{n}"), T0));
    }
    d.apply(&deploy(run("app-0", T0 + 3 * H)));
    let p = d.problems().next().unwrap();
    assert_eq!(p.kind, Kind::RunFailure, "{}", p.why);
    let mut fine = run("app-0", T0 + 4 * H);
    fine.ok_resources.push("Exec[deploy-app]".into());
    d.apply(&fine);
    d.apply(&deploy(run("app-1", T0 + 5 * H)));
    let p = d.problems().next().unwrap();
    assert_eq!(p.kind, Kind::Intermittent, "{}", p.why);
    assert!(p.why.contains("moves between nodes"), "{}", p.why);
}

#[test]
fn a_node_that_stops_reporting_is_silent_until_it_reports_again() {
    let mut d = Detector::new(Thresholds::default());
    for i in 0..6 {
        d.apply(&run("web-1", T0 + i * 30 * 60_000));
    }
    let last = T0 + 5 * 30 * 60_000;
    assert!(
        d.tick(last + 80 * 60_000).is_empty(),
        "80 min is under 3× 30 min"
    );
    let touched = d.tick(last + 100 * 60_000);
    assert_eq!(touched.len(), 1);
    let p = only(&d, Kind::SilentNode)[0].clone();
    assert_eq!(p.title, "web-1 stopped reporting");
    assert!(p.why.contains("usually every 30m"), "{}", p.why);
    // A second tick changes nothing.
    assert!(d.tick(last + 110 * 60_000).is_empty());
    d.apply(&run("web-1", last + 120 * 60_000));
    assert_eq!(d.problem(p.id).unwrap().status, Status::Resolved);
}

#[test]
fn a_run_far_slower_than_the_nodes_own_baseline_is_slow() {
    let mut d = Detector::new(Thresholds::default());
    for i in 0..6 {
        d.apply(&run("web-1", T0 + i * H));
    }
    let mut slow = run("web-1", T0 + 7 * H);
    slow.duration_ms = Some(50_000);
    d.apply(&slow);
    assert!(only(&d, Kind::SlowRun).is_empty(), "50 s is under 2× 30 s");
    slow.key = "k2".into();
    slow.started_ms = T0 + 8 * H;
    slow.duration_ms = Some(95_000);
    d.apply(&slow);
    let p = only(&d, Kind::SlowRun);
    assert_eq!(p.len(), 1);
    assert!(p[0].why.contains("95.0 s"), "{}", p[0].why);
}

#[test]
fn rules_record_what_a_team_already_knows() {
    let mut t = Thresholds::default();
    t.rules.push(gemba_market::detect::Rule {
        pattern: regex::Regex::new("Exec\\[fetch-code\\]").unwrap(),
        category: Some("scm".into()),
        cause: Some("the git mirror is rebuilt nightly at 02:00".into()),
        severity: Some(Severity::Low),
    });
    let mut d = Detector::new(t);
    d.apply(&failing(
        run("app-1", T0),
        "Exec",
        "fetch-code",
        "returned 128",
    ));
    let p = d.problems().next().unwrap();
    assert_eq!(p.category, "scm");
    assert_eq!(p.severity, Severity::Low);
    assert_eq!(
        p.cause.as_deref(),
        Some("the git mirror is rebuilt nightly at 02:00")
    );
}

#[test]
fn the_shared_puppet_and_chef_fixtures_show_their_problems() {
    if common::fixtures().is_none() {
        return;
    }
    let mut d = Detector::new(Thresholds::default());
    for f in [
        "puppet7/web1-run1.yaml",
        "puppet7/web1-run2.yaml",
        "puppet7/web1-run3.yaml",
    ] {
        d.apply(&common::fixture_run(f));
    }
    let ni = only(&d, Kind::NotIdempotent);
    assert_eq!(ni.len(), 1);
    assert_eq!(ni[0].resource.as_deref(), Some("Exec[always-restart-app]"));
    let failing: Vec<String> = d
        .problems()
        .filter(|p| p.kind.is_failure())
        .filter_map(|p| p.resource.clone())
        .collect();
    assert_eq!(failing.len(), 2, "{failing:?}");
    assert!(failing.contains(&"Exec[fetch-from-scm]".to_string()));

    // The Chef file rewritten on every run: the success report replayed as
    // three runs of one node.
    let base = common::fixture_run("chef/converge-success-report.json");
    let mut d = Detector::new(Thresholds::default());
    for i in 0..3 {
        let mut r = base.clone();
        r.key = format!("chef:replay-{i}");
        r.started_ms += i * 30 * 60_000;
        d.apply(&r);
    }
    assert!(d.problems().any(|p| p.kind == Kind::NotIdempotent
        && p.resource.as_deref() == Some("file[/tmp/always-updated.txt]")));
}

#[test]
fn a_run_where_the_failed_resource_runs_fine_counts_as_clean() {
    let mut d = Detector::new(Thresholds::default());
    d.apply(&failing(run("web-1", T0), "Exec", "migrate", "returned 1"));
    let id = d.problems().next().unwrap().id;
    for i in 1..=3 {
        let mut fine = run("web-1", T0 + i * H);
        fine.ok_resources.push("Exec[migrate]".into());
        d.apply(&fine);
        let status = d.problem(id).unwrap().status;
        assert_eq!(
            status == Status::Resolved,
            i == 3,
            "after {i} fine run(s): {status:?}"
        );
    }
}

/// An overnight gap on a whole fleet is one problem naming how many nodes
/// and since when, not one per node; it ends when every node has
/// reported again. Two nodes quiet at once are still one problem each.
#[test]
fn nodes_that_go_quiet_at_once_are_one_problem() {
    let mut d = Detector::new(Thresholds::default());
    let nodes: Vec<String> = (0..11).map(|i| format!("web-{i}")).collect();
    for i in 0..6 {
        for (k, n) in nodes.iter().enumerate() {
            d.apply(&run(n, T0 + i * 30 * 60_000 + k as u64 * 60_000));
        }
    }
    let last = T0 + 5 * 30 * 60_000;
    d.tick(last + 7 * H);
    let silent = only(&d, Kind::SilentNode);
    assert_eq!(silent.len(), 1, "one problem for the fleet's silence");
    let p = silent[0].clone();
    assert_eq!(p.nodes_total, 11);
    assert_eq!(p.title, "11 nodes stopped reporting at once");
    assert!(
        p.why.starts_with("no reports from 11 nodes since"),
        "{}",
        p.why
    );
    // Ticks go on: still one problem, unchanged.
    assert!(d.tick(last + 7 * H + 60_000).is_empty());
    assert_eq!(only(&d, Kind::SilentNode).len(), 1);
    // Ten report again: still open; the last one ends it.
    for (k, n) in nodes.iter().enumerate().take(10) {
        d.apply(&run(n, last + 8 * H + k as u64 * 1000));
    }
    assert_ne!(d.problem(p.id).unwrap().status, Status::Resolved);
    d.apply(&run(&nodes[10], last + 8 * H + 20_000));
    assert_eq!(d.problem(p.id).unwrap().status, Status::Resolved);

    // Two nodes quiet at once: below the roll-up, one problem each.
    let mut d = Detector::new(Thresholds::default());
    for i in 0..6 {
        d.apply(&run("db-1", T0 + i * 30 * 60_000));
        d.apply(&run("db-2", T0 + i * 30 * 60_000 + 1000));
    }
    d.tick(last + 5 * H);
    assert_eq!(only(&d, Kind::SilentNode).len(), 2);
}

/// A failure from years ago, imported today, is history: the market counts
/// it but does not list it as still open every day.
#[test]
fn old_history_imported_today_is_not_still_open() {
    let mut d = Detector::new(Thresholds::default());
    let long_ago = T0 - 5_000 * 24 * H;
    d.apply(&failing(
        run("web-1", long_ago),
        "Exec",
        "old-thing",
        "it failed in 2013",
    ));
    let (since, until) = (T0, T0 + 24 * H);
    let m = gemba_market::market::Market::build_with(
        d.problems(),
        since,
        until,
        Default::default(),
        Thresholds::default().history_after_ms,
    );
    assert!(m.open.is_empty(), "{:?}", m.open);
    assert_eq!(m.history, 1);
    assert!(
        m.to_text()
            .contains("1 unresolved problem not seen within the retention is history"),
        "{}",
        m.to_text()
    );
    // Seen within the retention, it is still open.
    let m = gemba_market::market::Market::build_with(
        d.problems(),
        since,
        until,
        Default::default(),
        u64::MAX,
    );
    assert_eq!(m.open.len(), 1);
}
