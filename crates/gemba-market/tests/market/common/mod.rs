//! Where the shared report fixtures are: `$GEMBA_FIXTURES`, or
//! `../shared/fixtures` beside the repository.

#![allow(dead_code)]

use std::path::PathBuf;

pub fn fixtures() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("GEMBA_FIXTURES") {
        return Some(PathBuf::from(p));
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let p = here.join("../../../shared/fixtures");
    if p.join("SOURCES.txt").exists() {
        return Some(p);
    }
    eprintln!(
        "SKIPPED: the report fixtures are not at {} (set GEMBA_FIXTURES)",
        p.display()
    );
    None
}

pub fn read(rel: &str) -> Vec<u8> {
    let root = fixtures().expect("fixtures");
    std::fs::read(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

pub fn fixture_run(rel: &str) -> gemba_market::Run {
    let (_, mut docs) = gemba_market::parse(&read(rel), gemba_market::Expect::Any)
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    match docs.remove(0) {
        gemba_market::Parsed::Run(r) => *r,
        other => panic!("{rel}: not a run: {other:?}"),
    }
}

// Generated runs for detector and service tests.

use gemba_market::run::*;

pub const H: u64 = 3_600_000;
pub const T0: u64 = 1_800_000_000_000;

pub fn run(node: &str, at: u64) -> gemba_market::run::Run {
    Run {
        key: format!("puppet:{node}@{at}"),
        tool: Tool::Puppet,
        node: node.into(),
        started_ms: at,
        duration_ms: Some(30_000),
        retrieval_ms: Some(2_000),
        status: RunStatus::Unchanged,
        environment: "production".into(),
        code_version: "v1".into(),
        noop: false,
        catalog_failed: false,
        counts: Counts {
            total: 10,
            ..Default::default()
        },
        resources: vec![],
        ok_resources: vec![
            "Service[app]".into(),
            "Exec[fetch-code]".into(),
            "File[/etc/app.conf]".into(),
        ],
        logs: vec![],
        error: None,
        tool_version: "7.23.0".into(),
    }
}

pub fn failing(mut r: gemba_market::run::Run, kind: &str, title: &str, message: &str) -> Run {
    let key = format!("{kind}[{title}]");
    r.ok_resources.retain(|k| *k != key);
    r.resources.push(Resource {
        kind: kind.into(),
        title: title.into(),
        outcome: ResourceOutcome::Failed,
        message: message.into(),
        change: "ensure".into(),
        refresh: false,
        file: Some("/etc/puppet/code/site.pp".into()),
        line: Some(4),
    });
    r.status = RunStatus::Failed;
    r.counts.failed += 1;
    r
}

pub fn changing(
    mut r: gemba_market::run::Run,
    kind: &str,
    title: &str,
    change: &str,
    refresh: bool,
) -> Run {
    r.resources.push(Resource {
        kind: kind.into(),
        title: title.into(),
        outcome: ResourceOutcome::Changed,
        message: "executed successfully".into(),
        change: change.into(),
        refresh,
        file: None,
        line: None,
    });
    if r.status == RunStatus::Unchanged {
        r.status = RunStatus::Changed;
    }
    r
}
