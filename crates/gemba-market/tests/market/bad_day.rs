//! A bad day at 500 nodes stays one screen: the report path dies overnight
//! for seven hours (every node silent at once), three runs fail a hundred
//! resources each, the package mirror is down for two hours on every node,
//! and the usual handful of node-specific problems go on. The market of
//! that day names each of those once and fits in 60 lines of text.

use gemba_market::detect::{Detector, Thresholds};
use gemba_market::market::Market;
use gemba_market::problem::Kind;
use gemba_market::run::*;

use crate::common::{failing, run, H, T0};

const NODES: u64 = 500;
const SLOT: u64 = 30 * 60_000;

fn node(n: u64) -> String {
    format!("node-{n:03}")
}

#[test]
fn a_bad_day_at_500_nodes_is_one_screen() {
    let mut d = Detector::new(Thresholds::default());
    let mirror_down = |at: u64| (T0 + 40 * H..T0 + 42 * H).contains(&at);
    let gap = |at: u64| (T0 + 24 * H..T0 + 31 * H).contains(&at);
    // Two days, every node every 30 minutes (staggered by 3 s).
    for slot in 0..96 {
        for n in 0..NODES {
            let at = T0 + slot * SLOT + n * 3_000;
            // The market ticks every ten minutes.
            if n == 0 {
                for k in 0..3 {
                    d.tick(at + k * 10 * 60_000);
                }
            }
            if gap(at) {
                continue;
            }
            let mut r = run(&node(n), at);
            r.ok_resources.push("Exec[fetch-release]".into());
            if mirror_down(at) {
                r = failing(
                    r,
                    "Exec",
                    "fetch-release",
                    "'/usr/bin/curl -fsS http://mirror.example.net/pool/app_2.1.deb' returned 22 instead of one of [0]",
                );
                r.logs.push(LogLine {
                    level: "notice".into(),
                    source: "/Stage[main]/App/Exec[fetch-release]/returns".into(),
                    message: "curl: (22) The requested URL returned error: 503".into(),
                    file: None,
                    line: None,
                });
            }
            // Three runs that fail a hundred resources each.
            if slot == 80 && n < 3 {
                for i in 0..100 {
                    r = failing(
                        r,
                        "File",
                        &format!("/etc/app/conf.d/{n}-{i}.conf"),
                        &format!("Could not set 'file' on ensure: No such file or directory - /etc/app/conf.d/{n}-{i}.conf20261206-1234-abc.lock"),
                    );
                }
            }
            // Five nodes with a failure of their own, every run.
            if (10..15).contains(&n) && slot > 60 {
                r = failing(
                    r,
                    "Service",
                    &format!("worker-{n}"),
                    "Could not start Service: returned 1",
                );
            }
            d.apply(&r);
        }
    }
    // The market of the second day: the 24 hours up to its end.
    let (since, until) = (T0 + 24 * H, T0 + 48 * H);
    let m = Market::build(d.problems(), since, until, Default::default());
    let text = m.to_text();
    let lines = text.lines().count();
    let kinds = |k: Kind| d.problems().filter(|p| p.kind == k).count();
    assert_eq!(
        kinds(Kind::SilentNode),
        1,
        "one silence for the whole fleet\n{text}"
    );
    assert_eq!(kinds(Kind::ExternalOutage), 1, "{text}");
    // The three runs' hundred files each, one message: one problem.
    let rolled: Vec<_> = d
        .problems()
        .filter(|p| p.sample.resource_count == 100)
        .collect();
    assert_eq!(rolled.len(), 1, "{text}");
    assert_eq!(rolled[0].nodes.len(), 3);
    assert!(lines <= 60, "{lines} lines:\n{text}");
    assert!(text.contains("external-outage"), "{text}");
    assert!(text.contains("nodes stopped reporting at once"), "{text}");
}
