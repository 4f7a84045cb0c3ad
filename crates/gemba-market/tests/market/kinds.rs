//! The kind of a failure comes from evidence, not from how many nodes it
//! hit: fleets of 4 to 50 nodes running every 30 minutes, each scenario a
//! fault a team meets (a flaky deploy, a code bug a commit fixed, a mirror
//! down for two hours, a failure pinned to two nodes), named as the
//! README's "How the market names a problem" says.

use gemba_market::detect::{Detector, Thresholds};
use gemba_market::problem::{Kind, Problem};
use gemba_market::run::*;

use crate::common::{failing, run, T0};

const INTERVAL: u64 = 30 * 60_000;

/// A fleet of `n` nodes, each running every 30 minutes (staggered by a
/// minute), with `Exec[deploy]` in every catalog.
struct Fleet {
    d: Detector,
    nodes: Vec<String>,
    round: u64,
}

impl Fleet {
    fn new(n: usize) -> Fleet {
        Fleet {
            d: Detector::new(Thresholds::default()),
            nodes: (0..n).map(|i| format!("app-{i:02}")).collect(),
            round: 0,
        }
    }

    /// One round: `fault(node index, round)` says whether and how the
    /// node's run of `Exec[deploy]` fails, and at which code version.
    fn round(&mut self, fault: impl Fn(usize, u64) -> (Option<Run>, &'static str)) {
        for (i, node) in self.nodes.clone().iter().enumerate() {
            let at = T0 + self.round * INTERVAL + i as u64 * 60_000;
            let (failed, version) = fault(i, self.round);
            let mut r = match failed {
                Some(f) => f,
                None => {
                    let mut r = run(node, at);
                    r.ok_resources.push("Exec[deploy]".into());
                    r
                }
            };
            r.node = node.clone();
            r.key = format!("puppet:{node}@{at}");
            r.started_ms = at;
            r.code_version = version.into();
            self.d.apply(&r);
        }
        self.round += 1;
    }

    fn rounds(&mut self, n: u64, fault: impl Fn(usize, u64) -> (Option<Run>, &'static str)) {
        for _ in 0..n {
            self.round(&fault);
        }
    }

    fn the_problem(&self) -> Problem {
        let all: Vec<&Problem> = self.d.problems().collect();
        assert_eq!(all.len(), 1, "one problem: {all:#?}");
        all[0].clone()
    }
}

/// A run of `Exec[deploy]` that failed with `message`, its log lines
/// saying why.
fn deploy_failed(message: &str, output: &str) -> Option<Run> {
    let mut r = failing(run("x", 0), "Exec", "deploy", message);
    r.logs.push(LogLine {
        level: "notice".into(),
        source: "/Stage[main]/App/Exec[deploy]/returns".into(),
        message: output.into(),
        file: None,
        line: None,
    });
    r.logs.push(LogLine {
        level: "err".into(),
        source: "/Stage[main]/App/Exec[deploy]/returns".into(),
        message: format!("change from 'notrun' to ['0'] failed: {message}"),
        file: None,
        line: None,
    });
    Some(r)
}

/// The same pseudo-random numbers on every run of the test.
fn chance(seed: u64) -> f64 {
    let mut x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x632B_E59B);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    (x % 10_000) as f64 / 10_000.0
}

#[test]
fn a_flaky_deploy_on_four_of_twelve_nodes_is_intermittent_not_an_outage() {
    let mut f = Fleet::new(12);
    f.rounds(4, |_, _| (None, "v7"));
    // Nodes 0–3 fetch from a flaky service: 30 % of their runs fail with a
    // network error, for three days.
    f.rounds(3 * 48, |i, round| {
        let fails = i < 4 && chance(round * 100 + i as u64) < 0.3;
        let failure = fails.then(|| {
            deploy_failed(
                "'/usr/bin/curl -fsS http://10.0.0.5:8081/app.tar' returned 7 instead of one of [0]",
                "curl: (7) Failed to connect to 10.0.0.5 port 8081: Connection refused",
            )
        });
        (failure.flatten(), "v7")
    });
    let p = f.the_problem();
    assert_eq!(p.kind, Kind::Intermittent, "{}", p.why);
    assert_eq!(p.category, "network", "the category comes from the output");
    assert!(p.outage.is_none(), "{:?}", p.outage);
    assert!(p.why.contains("same code version"), "{}", p.why);
    assert_eq!(p.nodes.len(), 4);
}

#[test]
fn a_code_bug_on_seven_nodes_that_a_commit_fixed_is_a_run_failure_of_that_version() {
    let mut f = Fleet::new(7);
    f.rounds(3, |_, _| (None, "2026-12-01-a1f3"));
    // Version b7c2 writes a file into a directory that does not exist:
    // every node fails every run until c9d0 fixes it.
    let bug = || {
        deploy_failed(
            "Could not set 'file' on ensure: No such file or directory - /srv/app/releases/current/config.yml",
            "",
        )
    };
    f.rounds(6, |_, _| (bug(), "2026-12-02-b7c2"));
    f.rounds(4, |_, _| (None, "2026-12-03-c9d0"));
    let p = f.the_problem();
    assert_eq!(p.kind, Kind::RunFailure, "{}", p.why);
    assert_eq!(p.category, "configuration");
    assert!(
        p.why.contains("at code version 2026-12-02-b7c2")
            && p.why.contains("runs fine since 2026-12-03-c9d0"),
        "{}",
        p.why
    );
    let v = p.versions.as_ref().unwrap();
    assert_eq!(
        (v.first.as_str(), v.fixed_in.as_deref()),
        ("2026-12-02-b7c2", Some("2026-12-03-c9d0"))
    );
    assert_eq!(p.status, gemba_market::problem::Status::Resolved);
}

#[test]
fn a_package_mirror_down_for_two_hours_on_every_node_is_an_outage() {
    let mut f = Fleet::new(10);
    f.rounds(4, |_, _| (None, "v7"));
    let mirror = || {
        deploy_failed(
            "'/usr/bin/curl -fsS http://mirror.example.net/pool/app_2.1.deb' returned 22 instead of one of [0]",
            "curl: (22) The requested URL returned error: 503",
        )
    };
    f.rounds(4, |_, _| (mirror(), "v7"));
    f.rounds(4, |_, _| (None, "v7"));
    let p = f.the_problem();
    assert_eq!(p.kind, Kind::ExternalOutage, "{}", p.why);
    assert_eq!(p.category, "package-repo");
    let o = p.outage.as_ref().unwrap();
    assert_eq!((o.nodes, o.ran, o.runs), (10, 10, 40));
    assert!(
        p.why.contains("40 runs on 10 of the 10 nodes running it"),
        "{}",
        p.why
    );
    // It went down a second time: still an outage, regressed.
    f.rounds(3, |_, _| (mirror(), "v7"));
    let p = f.the_problem();
    assert_eq!(p.kind, Kind::ExternalOutage, "{}", p.why);
}

#[test]
fn the_same_outside_error_on_every_node_but_only_once_is_not_yet_an_outage() {
    // One failed run per node could be chance on a small fleet: an outage
    // needs six failed runs in a row.
    let mut f = Fleet::new(4);
    f.rounds(2, |_, _| (None, "v7"));
    f.round(|_, _| {
        (
            deploy_failed(
                "returned 6 instead of one of [0]",
                "curl: (6) Could not resolve host: mirror.example.net",
            ),
            "v7",
        )
    });
    f.rounds(2, |_, _| (None, "v7"));
    let p = f.the_problem();
    assert_eq!(p.category, "dns");
    assert_ne!(p.kind, Kind::ExternalOutage, "{}", p.why);
}

#[test]
fn a_failure_on_the_same_two_nodes_has_one_kind_whatever_the_fleet_size() {
    let mut kinds = Vec::new();
    for size in [5, 9, 50] {
        let mut f = Fleet::new(size);
        f.rounds(2, |_, _| (None, "v7"));
        // Two nodes lack a directory the others have: they fail every run.
        f.rounds(8, |i, _| {
            let failure = (i < 2).then(|| {
                deploy_failed(
                    "Could not set 'file' on ensure: No such file or directory - /opt/app/conf.d/app.conf",
                    "",
                )
            });
            (failure.flatten(), "v7")
        });
        let p = f.the_problem();
        assert!(
            p.why.contains("while") && p.why.contains("run it fine at the same code version"),
            "{size} nodes: {}",
            p.why
        );
        kinds.push((size, p.kind));
    }
    assert_eq!(
        kinds,
        vec![
            (5, Kind::RunFailure),
            (9, Kind::RunFailure),
            (50, Kind::RunFailure)
        ]
    );
}

#[test]
fn an_outside_error_on_two_nodes_while_the_rest_run_it_fine_is_not_an_outage() {
    // The two nodes cannot reach the mirror (a firewall on their rack);
    // eight others fetch from it fine at the same time.
    let mut f = Fleet::new(10);
    f.rounds(2, |_, _| (None, "v7"));
    f.rounds(8, |i, _| {
        let failure = (i < 2).then(|| {
            deploy_failed(
                "returned 7 instead of one of [0]",
                "curl: (7) Failed to connect to mirror.example.net port 80: Connection timed out",
            )
        });
        (failure.flatten(), "v7")
    });
    let p = f.the_problem();
    assert_eq!(p.category, "package-repo");
    assert_eq!(p.kind, Kind::RunFailure, "{}", p.why);
}

#[test]
fn a_hundred_resources_failing_with_one_message_in_a_run_are_one_problem() {
    let mut d = Detector::new(Thresholds::default());
    d.apply(&run("web-1", T0));
    let mut r = run("web-1", T0 + INTERVAL);
    for i in 0..100 {
        r = failing(
            r,
            "Package",
            &format!("lib{i}-dev"),
            &format!("Execution of '/usr/bin/apt-get -q -y install lib{i}-dev' returned 100: E: Unable to locate package lib{i}-dev"),
        );
    }
    // One other failure with its own message stays its own problem.
    r = failing(
        r,
        "Service",
        "app",
        "Could not start Service[app]: returned 1",
    );
    for i in 0..30 {
        r.logs.push(LogLine {
            level: "warning".into(),
            source: format!("/Stage[main]/App/File[/etc/app/{i}.conf]"),
            message: "Skipping because of failed dependencies".into(),
            file: None,
            line: None,
        });
    }
    d.apply(&r);
    assert_eq!(d.problems().count(), 2);
    let p = d
        .problems()
        .find(|p| p.sample.resource_count > 0)
        .unwrap()
        .clone();
    assert_eq!(p.sample.resource_count, 100);
    assert_eq!(p.sample.skipped_dependents, 30);
    assert_eq!(p.category, "package-repo");
    assert!(
        p.title
            .starts_with("100 resources (Package[lib0-dev], Package[lib1-dev], …): "),
        "{}",
        p.title
    );
    assert!(p.title.chars().count() <= 100, "{}", p.title);
    assert!(!p.title.contains("web-1"), "{}", p.title);
    assert!(
        p.why
            .contains("100 resources failed with this message in one run")
            && p.why
                .contains("30 more were skipped because of failed dependencies"),
        "{}",
        p.why
    );
    // The next runs are clean: it resolves like any failure.
    for i in 2..5 {
        d.apply(&run("web-1", T0 + i * INTERVAL));
    }
    let p = d.problem(p.id).unwrap();
    assert_eq!(p.status, gemba_market::problem::Status::Resolved);
}
