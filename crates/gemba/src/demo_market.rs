//! Sample configuration-management runs for `gemba demo`, so that its
//! morning market is not empty: a day of Puppet runs every 30 minutes for
//! the demo's nodes plus a freshly bootstrapped one, in the shape real
//! reports have, with one of each kind of problem the market names — a
//! non-idempotent exec that restarts a service, an SCM fetch failing on
//! every node for 90 minutes (the Git host's name does not resolve), a
//! service that fails only on the new node, and a deploy that fails now
//! and then at one code version.

use gemba_market::run::{Counts, Resource, ResourceOutcome, Run, RunStatus, Tool};
use gemba_market::service::MarketHandle;
use gemba_market::Parsed;

const MIN: u64 = 60_000;

fn base(node: &str, at: u64, i: u64) -> Run {
    Run {
        key: format!("puppet:demo-{node}-{i}"),
        tool: Tool::Puppet,
        node: node.to_string(),
        started_ms: at,
        duration_ms: Some(18_000 + (i % 5) * 900),
        retrieval_ms: Some(2_100 + (i % 3) * 200),
        status: RunStatus::Unchanged,
        environment: "production".into(),
        code_version: format!("{}", 1_795_000_000 + (at / (6 * 60 * MIN)) * 60),
        noop: false,
        catalog_failed: false,
        counts: Counts {
            total: 42,
            ..Default::default()
        },
        resources: Vec::new(),
        ok_resources: [
            "Service[app]",
            "Exec[fetch-from-scm]",
            "Exec[deploy-app]",
            "File[/etc/app/app.conf]",
            "Package[app]",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        logs: Vec::new(),
        error: None,
        tool_version: "7.23.0".into(),
    }
}

fn with(
    mut r: Run,
    kind: &str,
    title: &str,
    outcome: ResourceOutcome,
    message: &str,
    change: &str,
    line: u32,
) -> Run {
    let key = format!("{kind}[{title}]");
    r.ok_resources.retain(|k| *k != key);
    r.resources.push(Resource {
        kind: kind.into(),
        title: title.into(),
        outcome,
        message: message.into(),
        change: change.into(),
        refresh: change == "restarted",
        file: Some("/etc/puppetlabs/code/environments/production/manifests/site.pp".into()),
        line: Some(line),
    });
    match outcome {
        ResourceOutcome::Failed => {
            r.status = RunStatus::Failed;
            r.counts.failed += 1;
        }
        ResourceOutcome::Changed => {
            if r.status == RunStatus::Unchanged {
                r.status = RunStatus::Changed;
            }
            r.counts.changed += 1;
        }
        ResourceOutcome::Skipped => r.counts.skipped += 1,
    }
    r
}

/// The sample runs for `nodes` (at least one), over the day before `now_ms`.
pub fn sample_runs(nodes: &[String], now_ms: u64) -> Vec<Run> {
    let mut runs = Vec::new();
    let day = 24 * 60 * MIN;
    let every = 30 * MIN;
    let start = now_ms - day;
    let outage = now_ms - 3 * 60 * MIN;
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..48u64 {
            let at = start + i * every + n as u64 * 37_000;
            let mut r = base(node, at, i);
            if n == 0 {
                r = with(
                    r,
                    "Exec",
                    "reload-app-config",
                    ResourceOutcome::Changed,
                    "executed successfully",
                    "returns",
                    12,
                );
                r = with(
                    r,
                    "Service",
                    "app",
                    ResourceOutcome::Changed,
                    "Triggered 'refresh' from 1 event",
                    "restarted",
                    20,
                );
            }
            if at >= outage && at < outage + 3 * every {
                r = with(r, "Exec", "fetch-from-scm", ResourceOutcome::Failed, "change from 'notrun' to ['0'] failed: 'git fetch origin' returned 128 instead of one of [0]: fatal: unable to access 'https://git.example.com/shop.git/': Could not resolve host: git.example.com", "returns", 31);
            }
            if n == nodes.len() - 1 && nodes.len() > 1 && i % 5 == 2 {
                r = with(r, "Exec", "deploy-app", ResourceOutcome::Failed, "change from 'notrun' to ['0'] failed: '/opt/shop/bin/deploy --release 2.3.1' returned 1 instead of one of [0]", "returns", 44);
            }
            runs.push(r);
        }
    }
    // A node bootstrapped two hours ago whose service will not start.
    for i in 0..4u64 {
        let at = now_ms - 2 * 60 * MIN + i * every;
        runs.push(with(
            base("web-new", at, i),
            "Service",
            "app",
            ResourceOutcome::Failed,
            "change from 'stopped' to 'running' failed: Could not start Service[app]: Execution of '/usr/bin/systemctl start app' returned 1: Job for app.service failed",
            "ensure", 20,
        ));
    }
    runs.sort_by_key(|r| r.started_ms);
    runs
}

/// Feeds the sample runs to the market; returns how many were stored.
pub async fn feed(market: &MarketHandle, nodes: &[String], now_ms: u64) -> anyhow::Result<u32> {
    let docs = sample_runs(nodes, now_ms)
        .into_iter()
        .map(|r| Parsed::Run(Box::new(r)))
        .collect();
    Ok(market.ingest(docs).await?.accepted)
}

#[cfg(test)]
mod tests {
    use gemba_market::detect::{Detector, Thresholds};

    /// The demo's market shows each kind of problem it promises (the exec
    /// that changes every run and the service it restarts are two).
    #[test]
    fn the_demo_runs_make_each_kind_of_problem() {
        let nodes: Vec<String> = ["ams-1", "ams-2", "fra-1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut d = Detector::new(Thresholds::default());
        for r in super::sample_runs(&nodes, 1_795_420_800_000) {
            d.apply(&r);
        }
        let mut kinds: Vec<&str> = d.problems().map(|p| p.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(
            kinds,
            vec![
                "bootstrap-failure",
                "external-outage",
                "intermittent",
                "not-idempotent"
            ]
        );
    }
}
