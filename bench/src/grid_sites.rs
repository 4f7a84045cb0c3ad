//! A real grid of sites: N `gemba run` processes on loopback
//! (127.0.9.x), `topology = "sites"`, in S sites. Measures the wall time
//! from the first start until every node shows its own site's graph all up
//! and every site's summary current and green, then each process's CPU
//! (share of one core), RSS and gossip bytes sent over a steady window.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::grid::{agent, cpu_and_rss, Proc};

const STEADY: Duration = Duration::from_secs(30);

fn get(agent: &ureq::Agent, url: &str) -> Option<Value> {
    let text = agent
        .get(url)
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// The node at `ip` sees its site (of `m` nodes) all up and `sites` sites,
/// each current, every node up and every link up.
fn ready(agent: &ureq::Agent, ip: &str, m: usize, sites: usize) -> bool {
    let Some(s) = get(agent, &format!("http://{ip}:8777/api/v1/summary")) else {
        return false;
    };
    let e = m * (m - 1);
    if s["nodes"] != m || s["edges"] != e || s["edge_states"]["up"] != e {
        return false;
    }
    let Some(v) = get(agent, &format!("http://{ip}:8777/api/v1/sites")) else {
        return false;
    };
    v["sites"].as_array().is_some_and(|all| {
        all.len() == sites
            && all.iter().all(|x| {
                x["stale"] == false
                    && x["up"] == x["nodes"]
                    && x["links"].as_array().is_some_and(|l| {
                        l.len() == sites - 1 && l.iter().all(|l| l["state"] == "up")
                    })
            })
    })
}

fn gossip_sent(agent: &ureq::Agent, ip: &str) -> f64 {
    agent
        .get(&format!("http://{ip}:8777/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .map(|text| {
            text.lines()
                .filter(|l| l.starts_with("gemba_mesh_gossip_bytes_total{direction=\"sent\"}"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0)
}

fn mean_max(v: &[f64]) -> String {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{mean:.2} / {max:.2}")
}

pub fn run(bin: &str, n: usize, sites: usize) -> anyhow::Result<()> {
    anyhow::ensure!(n <= 250, "at most 250 nodes (one loopback /24)");
    anyhow::ensure!(
        sites >= 2 && n >= sites * 4,
        "at least 4 nodes in each of 2 or more sites"
    );
    let dir = std::env::temp_dir().join(format!("gemba-bench-sites-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("grid.key");
    std::fs::write(&key, "benchmark-grid-key-0123456789abcdef\n")?;
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let ip = |i: usize| format!("127.0.9.{}", i + 1);
    // Node i is in site i % sites; each site's first node is its seed, and
    // the first node of three sites are the backbone seeds.
    let backbone: Vec<String> = (0..sites.min(3))
        .map(|s| format!("\"{}:7946\"", ip(s)))
        .collect();
    let config = dir.join("gemba.toml");
    std::fs::write(
        &config,
        format!(
            "[mesh]\ntopology = \"sites\"\nrepresentatives = 3\nbackbone_seeds = [{}]\n",
            backbone.join(", ")
        ),
    )?;
    let per_site: Vec<usize> = (0..sites).map(|s| (s..n).step_by(sites).count()).collect();
    let start = Instant::now();
    let mut procs = Vec::with_capacity(n);
    for i in 0..n {
        let site = i % sites;
        let id = format!("s{site:02}-{i:03}");
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg(format!("--config={}", config.display()))
            .arg(format!("--node-id={id}"))
            .arg(format!("--site=site{site:02}"))
            .arg(if i == 0 {
                "--role=server"
            } else {
                "--role=agent"
            })
            .arg(format!("--listen={}:7946", ip(i)))
            .arg(format!("--http={}:8777", ip(i)))
            .arg(format!("--grid-key-file={}", key.display()))
            .arg(format!("--data-dir={}", dir.join(&id).display()))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        if i != site {
            cmd.arg(format!("--seed={}:7946", ip(site)));
        }
        let child = cmd.spawn().with_context(|| format!("cannot start {bin}"))?;
        procs.push(Proc {
            id,
            ip: ip(i),
            child,
        });
    }
    let started = start.elapsed();
    // Every node polled in its own thread, every 500 ms.
    let limit = Duration::from_secs(120);
    let times: Vec<Option<Duration>> = std::thread::scope(|scope| {
        let handles: Vec<_> = procs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let m = per_site[i % sites];
                scope.spawn(move || {
                    let agent = agent();
                    while start.elapsed() < limit {
                        if ready(&agent, &p.ip, m, sites) {
                            return Some(start.elapsed());
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    None
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect()
    });
    let Some(all_up) = times
        .iter()
        .try_fold(Duration::ZERO, |m, t| t.map(|t| m.max(t)))
    else {
        let missing = times.iter().filter(|t| t.is_none()).count();
        bail!("{missing} of {n} nodes did not see the whole grid up within {limit:?}");
    };
    // Steady state, nobody polling.
    std::thread::sleep(Duration::from_secs(5));
    let agent = agent();
    let before: Vec<(f64, f64)> = procs
        .iter()
        .map(|p| {
            (
                cpu_and_rss(p.child.id()).map(|c| c.0).unwrap_or(0.0),
                gossip_sent(&agent, &p.ip),
            )
        })
        .collect();
    std::thread::sleep(STEADY);
    let secs = STEADY.as_secs_f64();
    let (mut cpu, mut rss, mut gossip) = (Vec::new(), Vec::new(), Vec::new());
    for (p, (c0, g0)) in procs.iter().zip(&before) {
        let (c1, r1) = cpu_and_rss(p.child.id()).unwrap_or_default();
        cpu.push((c1 - c0) / secs * 100.0);
        rss.push(r1 as f64 / 1_048_576.0);
        gossip.push((gossip_sent(&agent, &p.ip) - g0) / secs / 1024.0);
    }
    println!("gemba grid of sites: {n} `gemba run` processes on loopback in {sites} sites (topology \"sites\", 3 representatives, gossip 1 s, probes 1 s), 2 cores; the harness polls each node every 500 ms until it is up, and not at all during the {} s steady window", STEADY.as_secs());
    println!("| nodes | sites | processes started (s) | every node: its site all up and every site's summary current and green (s, wall) | CPU per node, % of one core (mean / max) | RSS per node, MiB (mean / max) | gossip sent per node, KiB/s (mean / max) |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {sites} | {:.1} | {:.1} | {} | {} | {} |",
        started.as_secs_f64(),
        all_up.as_secs_f64(),
        mean_max(&cpu),
        mean_max(&rss),
        mean_max(&gossip)
    );
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
