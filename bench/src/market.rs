//! `market`: the morning market over a large generated history on SQLite
//! (or, with `--postgres`, a throwaway PostgreSQL on loopback).
//! Runs for N nodes × R runs a day × D days are folded through the real
//! detectors and written with the rows the market task writes (in large
//! batches, bypassing HTTP), then timed: a market task starting from that
//! store (loading problems, node histories and the index of resources that
//! ran fine), and the market of the last day, built and written as
//! Markdown, as `GET /api/v1/market` does.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use gemba_core::config::StoreLocation;
use gemba_exec::Clock;
use gemba_market::detect::{Detector, Thresholds};
use gemba_market::run::{Counts, Resource, ResourceOutcome, Run, RunStatus, Tool};
use gemba_market::service::{self, problem_rows, run_row};
use gemba_store::{MarketBatch, NodeRow};

/// 2026-11-23T08:00:00Z: the last market's time.
const END: u64 = 1_795_420_800_000;
const DAY: u64 = 86_400_000;

fn resource(kind: &str, title: &str, outcome: ResourceOutcome, message: String) -> Resource {
    Resource {
        kind: kind.into(),
        title: title.into(),
        outcome,
        message,
        change: "ensure".into(),
        refresh: false,
        file: Some("/etc/puppetlabs/code/environments/production/manifests/site.pp".into()),
        line: Some(12),
    }
}

/// One node's run in one slot: mostly clean, with a share of every kind of
/// problem the detectors know.
fn run(n: usize, nodes: usize, slot: u64, slots: u64, at: u64) -> Option<Run> {
    let day = slot * DAY / (DAY * slots / 7).max(1);
    let last_day = slot * 7 >= slots * 6;
    // The newest twenty nodes join on the last day.
    let fresh = n + 20 >= nodes;
    if fresh && !last_day {
        return None;
    }
    let mut r = Run {
        key: format!("puppet:{n:05}-{slot:06}"),
        tool: Tool::Puppet,
        node: format!("node-{n:05}.example.net"),
        started_ms: at,
        duration_ms: Some(40_000 + (n as u64 % 17) * 1000),
        retrieval_ms: Some(3_000),
        status: RunStatus::Unchanged,
        environment: if n.is_multiple_of(3) {
            "staging"
        } else {
            "production"
        }
        .into(),
        code_version: format!("v{day}"),
        noop: false,
        catalog_failed: false,
        counts: Counts {
            total: 120,
            ..Default::default()
        },
        resources: Vec::new(),
        ok_resources: [
            "File[/etc/app.conf]",
            "Service[app]",
            "Package[nginx]",
            "Exec[fetch-code]",
            "Exec[deploy-app]",
            "User[app]",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        logs: Vec::new(),
        error: None,
        tool_version: "7.23.0".into(),
    };
    let mut fail = |kind: &str, title: &str, message: String| {
        let key = format!("{kind}[{title}]");
        r.ok_resources.retain(|k| *k != key);
        r.resources
            .push(resource(kind, title, ResourceOutcome::Failed, message));
        r.counts.failed += 1;
        r.status = RunStatus::Failed;
    };
    // An SCM outage: an hour and a half on day 5 on 5 % of the nodes.
    if day == 5 && (slot % (slots / 7)) / 3 == 4 && n.is_multiple_of(20) {
        fail(
            "Exec",
            "fetch-code",
            "'/usr/bin/git fetch' returned 128 instead of one of [0]".into(),
        );
    }
    // A package that never installs on a few nodes.
    if n.is_multiple_of(500) {
        fail(
            "Package",
            "legacy-tool",
            format!("E: Unable to locate package legacy-tool-1.2.{n}"),
        );
    }
    // A deploy that fails now and then.
    if n % 50 == 7 && slot.is_multiple_of(13) {
        fail(
            "Exec",
            "deploy-app",
            "deploy failed: timeout after 30 s".into(),
        );
    }
    // A service that will not start on fresh nodes' first runs.
    if fresh && slot * 7 < slots * 6 + 3 {
        fail(
            "Service",
            "app",
            "Could not start Service[app]: Execution of '/bin/systemctl start app' returned 1"
                .into(),
        );
    }
    // An exec that runs every time.
    if n % 200 == 1 {
        r.resources.push(resource(
            "Exec",
            "always-restart",
            ResourceOutcome::Changed,
            "executed successfully".into(),
        ));
        r.counts.changed += 1;
        if r.status == RunStatus::Unchanged {
            r.status = RunStatus::Changed;
        }
    }
    // Slow runs on a few nodes on the last day.
    if n % 1000 == 3 && last_day {
        r.duration_ms = Some(600_000);
    }
    Some(r)
}

pub fn run_bench(nodes: usize, per_day: u64, days: u64, postgres: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("gemba-bench-market-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cluster = if postgres {
        Some(gemba_store::throwaway::Cluster::start("bench-market").map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let location = match &cluster {
        Some(c) => StoreLocation::Postgres {
            url: rt.block_on(c.database()),
            password_file: None,
        },
        None => StoreLocation::Sqlite(dir.join("gemba.db")),
    };
    let on_disk = cluster
        .as_ref()
        .map_or(dir.clone(), |c| c.dir().to_path_buf());
    let r = rt.block_on(bench(nodes, per_day, days, location, &on_disk));
    let _ = std::fs::remove_dir_all(&dir);
    r
}

async fn bench(
    nodes: usize,
    per_day: u64,
    days: u64,
    location: StoreLocation,
    on_disk: &std::path::Path,
) -> anyhow::Result<()> {
    let backend = match location {
        StoreLocation::Postgres { .. } => "PostgreSQL",
        _ => "SQLite",
    };
    let store = gemba_store::open_market(&location).await?;
    let slots = per_day * days;
    let interval = DAY / per_day;
    let start = END - days * DAY;
    let mut d = Detector::new(Thresholds::default());
    let mut batch = MarketBatch::default();
    let mut touched = BTreeSet::new();
    let mut runs = 0u64;
    let t = Instant::now();
    for slot in 0..slots {
        for n in 0..nodes {
            let at = start + slot * interval + (n as u64 * 7919) % interval;
            let Some(r) = run(n, nodes, slot, slots, at) else {
                continue;
            };
            touched.extend(d.apply(&r));
            batch.runs.push(run_row(&r));
            runs += 1;
            if batch.runs.len() >= 50_000 {
                batch.problems = problem_rows(&mut d, &touched);
                batch.fine = d.take_fine();
                touched.clear();
                store.commit(std::mem::take(&mut batch)).await?;
            }
        }
    }
    batch.problems = problem_rows(&mut d, &touched);
    batch.fine = d.take_fine();
    batch.nodes = d
        .nodes
        .iter()
        .map(|(n, h)| NodeRow {
            node: n.clone(),
            body: serde_json::to_string(h).unwrap_or_default(),
        })
        .collect();
    store.commit(batch).await?;
    let loading = t.elapsed();
    drop(store);
    let bytes = crate::ingest::dir_size(on_disk);

    // A server starting on that store.
    let store = gemba_store::open_market(&location).await?;
    let t = Instant::now();
    let (handle, task) = service::start(
        store,
        Thresholds::default(),
        Clock::starting_at(END + 60_000),
    )
    .await?;
    let startup = t.elapsed();
    let task = tokio::spawn(task);
    let (since, until) = gemba_market::market::window(Some("2026-11-23"), (8, 0), "UTC", END)
        .map_err(anyhow::Error::msg)?;
    let mut times = Vec::new();
    let mut summary = String::new();
    for _ in 0..5 {
        let t = Instant::now();
        let m = handle.market(since, until).await?;
        let md = m.to_markdown();
        times.push(t.elapsed());
        summary = format!(
            "{} runs ({} failed) on {} nodes; {} new, {} regressed, {} open, {} resolved; {} bytes of Markdown",
            m.runs.runs,
            m.runs.failed,
            m.runs.nodes,
            m.new.len(),
            m.regressed.len(),
            m.open.len(),
            m.resolved.len(),
            md.len()
        );
    }
    times.sort();
    let problems = handle.problems().await?.len();
    drop(handle);
    task.await?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| what | figure |");
    println!("|---|---|");
    println!("| history | {nodes} nodes × {per_day} runs/day × {days} days = {runs} runs, {problems} problems |");
    println!("| store | {backend} |");
    println!("| folding and storing it (detectors + store, batches of 50,000) | {:.1} s ({:.0} runs/s) |", loading.as_secs_f64(), runs as f64 / loading.as_secs_f64());
    println!(
        "| store size | {:.0} MB = {:.0} bytes per run (every file of the store) |",
        bytes as f64 / 1e6,
        bytes as f64 / runs as f64
    );
    println!(
        "| a market task starting on that store | {:.0} ms |",
        ms(startup)
    );
    println!("| the market of the last day, built + Markdown (median of 5; min–max) | {:.0} ms ({:.0}–{:.0}) |", ms(times[2]), ms(times[0]), ms(times[4]));
    println!("\nlast day: {summary}");
    Ok(())
}
