//! `ingest`: reports per second into a real `gemba run` server through
//! HTTP, as Puppet's http processor and chef-client send them. Bodies are
//! the shared fixtures with node names and run ids made unique, sent by
//! `--clients` threads over keep-alive connections; every answer must be
//! 200 with the run accepted. Also the store's size per run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

const HTTP: &str = "127.0.17.1:8777";

fn send_all(
    kind: &str,
    path: &str,
    ctype: &str,
    bodies: Vec<Vec<u8>>,
    clients: usize,
) -> anyhow::Result<f64> {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for _ in 0..clients {
            handles.push(s.spawn(|| -> anyhow::Result<()> {
                let agent = ureq::Agent::new_with_defaults();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else {
                        return Ok(());
                    };
                    let mut r = agent
                        .post(&format!("http://{HTTP}{path}"))
                        .header("content-type", ctype)
                        .send(&body[..])?;
                    let text = r.body_mut().read_to_string()?;
                    if !text.contains("\"accepted\":1") {
                        bail!("{kind} report {i} not accepted: {text}");
                    }
                }
            }));
        }
        for h in handles {
            h.join().expect("client thread")?;
        }
        Ok(())
    })?;
    Ok(bodies.len() as f64 / start.elapsed().as_secs_f64())
}

/// The fixtures with node names (1,000 Puppet nodes, 500 Chef nodes) and
/// run ids made unique: `count` Puppet bodies, `count / 4` Chef ones.
/// Report bodies: (Puppet, Chef).
type Bodies = (Vec<Vec<u8>>, Vec<Vec<u8>>);

fn bodies(fixtures: &Path, count: usize) -> anyhow::Result<Bodies> {
    let puppet = std::fs::read_to_string(fixtures.join("puppet7/web1-run1.yaml"))?;
    let chef = std::fs::read_to_string(
        fixtures.join("chef/chefdk-debian-8-tester-79e320_run_converge.json"),
    )?;
    let puppet_bodies: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            puppet
                .replace("web1.example.net", &format!("web{}.example.net", i % 1000))
                .replace(
                    "ec46532d-0667-461c-93a2-933b12fc6dc2",
                    &format!("00000000-0000-4000-8000-{i:012}"),
                )
                .into_bytes()
        })
        .collect();
    let chef_count = count / 4;
    let chef_bodies: Vec<Vec<u8>> = (0..chef_count)
        .map(|i| {
            chef.replace(
                "chefdk-debian-8-tester-79e320",
                &format!("chef-node-{}", i % 500),
            )
            .replace(
                "326cfc2a-c675-4d87-932a-3cc944ad4305",
                &format!("11111111-0000-4000-8000-{i:012}"),
            )
            .into_bytes()
        })
        .collect();
    Ok((puppet_bodies, chef_bodies))
}

/// Where a report's time goes, in one thread: parsing (what the HTTP
/// handler does on a blocking thread) and folding into the detectors plus
/// making the rows to store (what the market task does).
pub fn stages(fixtures: &Path, count: usize) -> anyhow::Result<()> {
    use gemba_market::detect::{Detector, Thresholds};
    let (puppet, chef) = bodies(fixtures, count)?;
    println!("| stage | reports | µs per report (one core) |");
    println!("|---|---|---|");
    for (name, list, expect) in [
        ("parse Puppet 7 YAML", &puppet, gemba_market::Expect::Puppet),
        ("parse Chef run_converge", &chef, gemba_market::Expect::Chef),
    ] {
        let start = Instant::now();
        let mut runs = Vec::with_capacity(list.len());
        for b in list.iter() {
            let (_, parsed) = gemba_market::parse(b, expect).map_err(|e| anyhow::anyhow!("{e}"))?;
            runs.extend(parsed);
        }
        let parse = start.elapsed();
        println!(
            "| {name} | {} | {:.0} |",
            list.len(),
            parse.as_secs_f64() * 1e6 / list.len() as f64
        );
        let mut d = Detector::new(Thresholds::default());
        let start = Instant::now();
        let mut bytes = 0usize;
        for chunk in runs.chunks(4) {
            let mut touched = std::collections::BTreeSet::new();
            for p in chunk {
                if let gemba_market::Parsed::Run(r) = p {
                    touched.extend(d.apply(r));
                    bytes += serde_json::to_string(r)?.len();
                }
            }
            // What the market task writes: each touched problem without
            // its nodes, and the evidence of the nodes that changed.
            let dirty = d.take_dirty();
            for id in touched {
                if let Some(p) = d.problem(id) {
                    let mut shell = p.clone();
                    shell.nodes.clear();
                    bytes += serde_json::to_string(&shell)?.len();
                    let changed: Vec<&String> = match dirty.get(&id) {
                        Some(Some(set)) => set.iter().collect(),
                        Some(None) => p.nodes.keys().collect(),
                        None => Vec::new(),
                    };
                    for n in changed {
                        bytes += serde_json::to_string(&p.nodes[n])?.len();
                    }
                }
            }
        }
        let fold = start.elapsed();
        println!(
            "| detectors + rows, {name} (batches of 4) | {} | {:.0} ({:.1} kB written per report) |",
            runs.len(),
            fold.as_secs_f64() * 1e6 / runs.len() as f64,
            bytes as f64 / 1000.0 / runs.len() as f64
        );
    }
    Ok(())
}

/// With `postgres`, the server keeps its store in a throwaway PostgreSQL
/// server on loopback (started here, removed at the end) instead of SQLite.
pub fn run(
    bin: &str,
    fixtures: &Path,
    count: usize,
    clients: usize,
    postgres: bool,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("gemba-bench-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut cluster = None;
    let mut config_args = Vec::new();
    if postgres {
        let c = gemba_store::throwaway::Cluster::start("bench").map_err(|e| anyhow::anyhow!(e))?;
        let url = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(c.database());
        let file = dir.join("gemba.toml");
        std::fs::write(&file, format!("[store]\nurl = \"{url}\"\n"))?;
        config_args.push(format!("--config={}", file.display()));
        cluster = Some(c);
    }
    let mut server = Command::new(bin)
        .args(["run", &format!("--http={HTTP}"), "--listen=127.0.17.1:7946"])
        .args(&config_args)
        .arg(format!("--data-dir={}", dir.display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {bin}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while ureq::get(&format!("http://{HTTP}/healthz")).call().is_err() {
        if Instant::now() > deadline {
            let _ = server.kill();
            bail!("gemba did not start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (puppet_bodies, chef_bodies) = bodies(fixtures, count)?;
    let chef_count = chef_bodies.len();
    let puppet_size = puppet_bodies[0].len();
    let chef_size = chef_bodies[0].len();
    let pid = server.id();
    let result = (|| -> anyhow::Result<((f64, f64), (f64, f64))> {
        let before = cpu_seconds(pid);
        let p = send_all(
            "puppet",
            "/api/v1/reports/puppet",
            "application/x-yaml",
            puppet_bodies,
            clients,
        )?;
        let middle = cpu_seconds(pid);
        let c = send_all(
            "chef",
            "/api/v1/chef/data-collector",
            "application/json",
            chef_bodies,
            clients,
        )?;
        let after = cpu_seconds(pid);
        let per = |secs: f64, n: usize| secs * 1e6 / n as f64;
        Ok((
            (p, per(middle - before, count)),
            (c, per(after - middle, chef_count)),
        ))
    })();
    let _ = server.kill();
    let _ = server.wait();
    let ((p, p_cpu), (c, c_cpu)) = result?;
    let db = dir.join("gemba.db");
    let mut bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    bytes += std::fs::metadata(dir.join("gemba.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("| what | reports | body | clients | reports/s | server CPU per report |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| Puppet 7 YAML → /api/v1/reports/puppet | {count} | {:.1} kB | {clients} | {p:.0} | {p_cpu:.0} µs |",
        puppet_size as f64 / 1000.0
    );
    println!("| Chef run_converge → /api/v1/chef/data-collector | {chef_count} | {:.1} kB | {clients} | {c:.0} | {c_cpu:.0} µs |", chef_size as f64 / 1000.0);
    if cluster.is_some() {
        println!("(server CPU: the gemba process only; PostgreSQL's backends are not counted)");
    }
    if let Some(c) = &cluster {
        let size = dir_size(&c.dir().join("data"));
        println!(
            "store: PostgreSQL data directory {:.1} MB after {} runs (all databases, WAL included)",
            size as f64 / 1e6,
            count + chef_count
        );
    } else {
        println!(
            "store: {:.1} MB for {} runs = {:.1} kB per run (SQLite file + WAL)",
            bytes as f64 / 1e6,
            count + chef_count,
            bytes as f64 / 1000.0 / (count + chef_count) as f64
        );
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// CPU time (user + system) a process has used, in seconds, from
/// `/proc/<pid>/stat` (0 where it cannot be read).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th of them, in clock ticks.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// Bytes of every file under `dir`.
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}
