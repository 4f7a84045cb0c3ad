//! Problems end when nodes leave: a node retired by hand leaves every
//! open problem, a node that stopped reporting no longer keeps other
//! problems open, and an import that stopped half way opens no silence.

use gemba_market::detect::{Detector, Thresholds, LATE_MS};
use gemba_market::problem::{Kind, Status};

use crate::common::{failing, run, H, T0};

const HALF_HOUR: u64 = 30 * 60_000;

fn broken(node: &str, at: u64) -> gemba_market::run::Run {
    failing(
        run(node, at),
        "File",
        "/etc/app/app.conf",
        "Could not set 'file' on ensure: No such file or directory",
    )
}

#[test]
fn a_retired_node_leaves_its_problems_and_one_only_it_kept_open_resolves() {
    let mut d = Detector::new(Thresholds::default());
    for i in 0..4 {
        d.apply(&run("web-1", T0 + i * HALF_HOUR));
        d.apply(&run("web-2", T0 + i * HALF_HOUR + 1000));
    }
    // web-2 fails on its own; both fail another resource.
    d.apply(&broken("web-2", T0 + 4 * HALF_HOUR));
    let only_web2 = d.problems().next().unwrap().id;
    let mut both = failing(
        run("web-1", T0 + 5 * HALF_HOUR),
        "Exec",
        "migrate",
        "returned 1",
    );
    d.apply(&both);
    both = failing(
        run("web-2", T0 + 5 * HALF_HOUR + 1000),
        "Exec",
        "migrate",
        "returned 1",
    );
    d.apply(&both);
    let shared = d.problems().find(|p| p.id != only_web2).unwrap().id;

    let touched = d.retire("web-2", T0 + 6 * HALF_HOUR, "ana").unwrap();
    assert_eq!(touched.len(), 2);
    let p = d.problem(only_web2).unwrap();
    assert_eq!(p.status, Status::Resolved, "only web-2 kept it open");
    assert!(p.nodes.is_empty());
    assert!(p.notes.iter().any(|n| n.text.contains("retired by ana")));
    let p = d.problem(shared).unwrap();
    assert_ne!(p.status, Status::Resolved, "web-1 still has it");
    assert_eq!(p.nodes.keys().collect::<Vec<_>>(), vec!["web-1"]);
    assert!(p
        .history
        .iter()
        .any(|c| c.field == "nodes" && c.from.as_deref() == Some("web-2") && c.by == "ana"));
    // Retired, it is not missed when it stops reporting.
    d.tick(T0 + 20 * H);
    assert!(d
        .problems()
        .filter(|p| p.kind == Kind::SilentNode)
        .all(|p| !p.nodes.contains_key("web-2")));
    // Twice is refused, and so is a node never seen.
    assert!(d
        .retire("web-2", T0 + 21 * H, "ana")
        .unwrap_err()
        .contains("retired already"));
    assert!(d
        .retire("web-9", T0 + 21 * H, "ana")
        .unwrap_err()
        .contains("no node"));
    // Running again puts it back in service.
    d.apply(&run("web-2", T0 + 22 * H));
    assert!(d.nodes["web-2"].retired.is_none());
}

#[test]
fn a_node_that_stopped_reporting_does_not_keep_a_regressed_problem_open() {
    let mut d = Detector::new(Thresholds::default());
    let nodes = ["app-1", "app-2", "app-3"];
    for i in 0..4 {
        for (k, n) in nodes.iter().enumerate() {
            d.apply(&run(n, T0 + i * HALF_HOUR + k as u64 * 1000));
        }
    }
    // All three fail; app-3 then stops reporting for good.
    for (k, n) in nodes.iter().enumerate() {
        d.apply(&broken(n, T0 + 4 * HALF_HOUR + k as u64 * 1000));
    }
    let id = d.problems().next().unwrap().id;
    // The other two run it cleanly three times.
    for i in 5..8 {
        for n in &nodes[..2] {
            d.apply(&run(n, T0 + i * HALF_HOUR));
        }
    }
    assert_ne!(d.problem(id).unwrap().status, Status::Resolved);
    // Soon app-3 is missed: a silence of its own, and the failure it was
    // the last holdout of resolves.
    d.tick(T0 + 7 * HALF_HOUR + 10 * 60_000);
    let silent: Vec<_> = d
        .problems()
        .filter(|p| p.kind == Kind::SilentNode)
        .collect();
    assert_eq!(silent.len(), 1);
    assert!(silent[0].nodes.contains_key("app-3"));
    let p = d.problem(id).unwrap();
    assert_eq!(p.status, Status::Resolved, "{:?}", p.nodes);
    assert!(p
        .notes
        .iter()
        .any(|n| n.text.contains("app-3 stopped reporting")));
}

#[test]
fn an_import_stopped_half_way_opens_no_silent_node_problem() {
    let mut d = Detector::new(Thresholds::default());
    let now = T0 + 10 * 24 * H;
    // A week of 500 nodes' runs every 30 min, sent today: the import stops
    // after the first two days.
    for i in 0..96 {
        for n in 0..500 {
            let at = T0 + 5 * 24 * H + i * HALF_HOUR + n * 1000;
            d.apply_arrived(&run(&format!("node-{n:03}"), at), Some(now));
        }
    }
    assert!(d.tick(now + H).is_empty());
    assert_eq!(d.problems().count(), 0);

    // A node reporting live that then stops is still missed.
    for i in 0..6 {
        let at = now + i * HALF_HOUR;
        d.apply_arrived(&run("live-1", at), Some(at + 60_000));
    }
    const { assert!(LATE_MS > 60_000) };
    d.tick(now + 6 * HALF_HOUR + 3 * H);
    let silent: Vec<_> = d
        .problems()
        .filter(|p| p.kind == Kind::SilentNode)
        .collect();
    assert_eq!(silent.len(), 1);
    assert_eq!(silent[0].title, "live-1 stopped reporting");
}
