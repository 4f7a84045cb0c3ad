//! Benchmarks of checks and the escalator: the planner at 10,000 checks over
//! 1,000 nodes, Nagios plugin throughput, and the reaction time from a
//! killed service to the restart action, side by side with Monit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gemba_checks::exec::{self, ExecSpec};
use gemba_checks::{CheckResult, HardState, Status};
use gemba_core::{Config, ConfigFile, Overrides, Policy};
use gemba_escalator::Engine;

fn policy(text: &str) -> anyhow::Result<Arc<Policy>> {
    let file = ConfigFile::parse(Path::new("bench"), text)?;
    let o = Overrides {
        node_id: Some("bench".into()),
        ..Default::default()
    };
    Ok(Arc::new(Config::from_file(file, &o, "bench")?.policy))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// 10 node checks × `nodes` nodes; after every change (one check flips),
/// the time to decide (`tick`) and to compute the whole plan (`plan`).
pub fn planner(nodes: usize, rounds: usize) -> anyhow::Result<()> {
    let mut text = String::from(
        "[escalator]\nquiet_period = \"30s\"\nmax_running = 1000\n[[level]]\nlevel = 4\nrun = [\"/bin/true\"]\n[[level]]\nlevel = 5\nrun = [\"/bin/true\"]\n[[level]]\nlevel = 6\nrun = [\"/bin/true\"]\n",
    );
    for c in 0..10 {
        text.push_str(&format!(
            "[[check]]\nname = \"c{c}\"\nkind = \"tcp\"\nport = {}\nlevel = {}\n",
            8000 + c,
            4 + c % 3
        ));
    }
    let p = policy(&text)?;
    let mut engine = Engine::new(p.clone());
    let base = 1_700_000_000_000u64;
    let _ = engine.tick(base);
    let result = |node: usize, check: usize, state: HardState, at: u64| CheckResult {
        check: format!("c{check}"),
        scope: gemba_core::Scope::Node(format!("n{node:04}")),
        kind: "tcp".into(),
        status: if state == HardState::Failing {
            Status::Critical
        } else {
            Status::Ok
        },
        state,
        since_ms: at,
        at_ms: at,
        interval_ms: 10_000,
        duration_ms: 1,
        output: "TCP OK".into(),
        perf: vec![],
        flapping: false,
        flap_percent: 0.0,
        flap_changes: 0,
        trusted: true,
        level: p.check(&format!("c{check}")).and_then(|c| c.level),
        tiers: vec!["app".into()],
        observer: format!("n{node:04}"),
    };
    let start = Instant::now();
    for n in 0..nodes {
        for c in 0..10 {
            let _ = engine.observe(result(n, c, HardState::Passing, base));
        }
    }
    let ingest = start.elapsed();
    // 1 % of the nodes failing in the background, so decisions have work.
    for n in (0..nodes).step_by(100) {
        let _ = engine.observe(result(n, 3, HardState::Failing, base));
    }
    let mut ticks = Vec::with_capacity(rounds);
    let mut plans = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let now = base + 1000 + i as u64 * 10;
        let node = (i * 7919) % nodes;
        let state = if i % 2 == 0 {
            HardState::Failing
        } else {
            HardState::Passing
        };
        let t = Instant::now();
        let _ = engine.observe(result(node, i % 10, state, now));
        let _ = engine.tick(now);
        ticks.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let plan = engine.plan(now);
        plans.push(t.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(plan);
    }
    println!(
        "planner: {} checks over {nodes} nodes, {rounds} changes",
        nodes * 10
    );
    println!("| ingest all results (ms) | change → decision p50 / p99 / max (ms) | change → full plan p50 / p99 / max (ms) |");
    println!("|---|---|---|");
    println!(
        "| {:.1} | {:.4} / {:.4} / {:.4} | {:.4} / {:.4} / {:.4} |",
        ingest.as_secs_f64() * 1000.0,
        percentile(&mut ticks, 0.5),
        percentile(&mut ticks, 0.99),
        percentile(&mut ticks, 1.0),
        percentile(&mut plans, 0.5),
        percentile(&mut plans, 0.99),
        percentile(&mut plans, 1.0),
    );
    Ok(())
}

/// Runs `runs` plugin executions, `concurrency` at a time, through the same
/// runner checks use; prints plugins per second.
pub fn plugins(runs: usize, concurrency: usize) -> anyhow::Result<()> {
    let plugins = "/usr/lib/nagios/plugins";
    if !Path::new(plugins).join("check_tcp").exists() {
        bail!("{plugins}/check_tcp is missing: apt-get install monitoring-plugins-basic");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        });
        println!("plugins: {runs} runs, {concurrency} at a time, through gemba_checks::exec (process group, timeout, capped output)");
        println!("| plugin | runs/s | p50 latency (ms) | p99 latency (ms) | non-OK |");
        println!("|---|---|---|---|---|");
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("check_dummy 0", vec![format!("{plugins}/check_dummy"), "0".into(), "ok".into()]),
            ("check_tcp (loopback)", vec![format!("{plugins}/check_tcp"), "-H".into(), "127.0.0.1".into(), "-p".into(), port.to_string()]),
            ("check_procs", vec![format!("{plugins}/check_procs"), "-w".into(), "1000".into()]),
        ];
        for (name, argv) in cases {
            let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
            let mut set = tokio::task::JoinSet::new();
            let start = Instant::now();
            let n = if name == "check_procs" { runs / 5 } else { runs };
            for _ in 0..n {
                let sem = sem.clone();
                let argv = argv.clone();
                set.spawn(async move {
                    let _p = sem.acquire().await.expect("semaphore");
                    let o = exec::run(&ExecSpec { argv, env: vec![], timeout: Duration::from_secs(10), stdin: None }).await;
                    (o.duration, o.success())
                });
            }
            let mut lat = Vec::with_capacity(n);
            let mut bad = 0;
            while let Some(r) = set.join_next().await {
                let (d, ok) = r?;
                lat.push(d.as_secs_f64() * 1000.0);
                if !ok {
                    bad += 1;
                }
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "| {name} | {:.0} | {:.1} | {:.1} | {bad} |",
                n as f64 / secs,
                percentile(&mut lat, 0.5),
                percentile(&mut lat, 0.99)
            );
        }
        Ok::<_, anyhow::Error>(())
    })
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn read_pid(p: &Path) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn wait_listening(addr: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::net::TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn last_stamp(p: &Path) -> Option<f64> {
    std::fs::read_to_string(p)
        .ok()?
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()
}

/// The same service twice (one copy per supervisor), both SIGKILLed at the
/// same instant; the time until each supervisor's restart command starts.
pub fn reaction(gemba: &str, rounds: usize) -> anyhow::Result<()> {
    let monit = "/usr/bin/monit";
    if !Path::new(monit).exists() {
        bail!("{monit} is missing: apt-get install monit");
    }
    let gemba = std::fs::canonicalize(gemba)
        .with_context(|| format!("cannot find {gemba}; build it with cargo build --release"))?;
    let dir: PathBuf =
        std::env::temp_dir().join(format!("gemba-bench-reaction-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let ip = "127.0.8.201";
    let (gport, mport) = (18_201, 18_202);
    let svc = |port: u16, name: &str, log: &str| {
        let script = dir.join(format!("restart-{name}.sh"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ndate +%s.%N >> {log}\nexec {gemba} demo-service --detach --listen {ip}:{port} --pidfile {pid}\n",
                log = dir.join(log).display(),
                gemba = gemba.display(),
                pid = dir.join(format!("{name}.pid")).display()
            ),
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        Ok::<_, anyhow::Error>(script)
    };
    let g_script = svc(gport, "gemba-svc", "gemba.log")?;
    let m_script = svc(mport, "monit-svc", "monit.log")?;
    for s in [&g_script, &m_script] {
        if !std::process::Command::new(s).status()?.success() {
            bail!("cannot start the service with {}", s.display());
        }
    }
    let _ = std::fs::remove_file(dir.join("gemba.log"));
    let _ = std::fs::remove_file(dir.join("monit.log"));
    let config = dir.join("gemba.toml");
    std::fs::write(
        &config,
        format!(
            r#"[node]
id = "bench"
data_dir = "{data}"
tags = ["svc"]
[mesh]
listen = "{ip}:7946"
[http]
listen = "{ip}:8777"
[escalator]
quiet_period = "2s"
backoff = "1s"
max_per_scope_per_hour = 100
# Every round kills the service again: without this the third kill is a
# crash loop, held for a human, and there would be no restart to time.
crash_loop_failures = 1000
[[level]]
level = 1
name = "restart"
run = ["{script}"]
timeout = "10s"
quiesce = "1s"
[[check]]
name = "svc-process"
kind = "process"
tier = "svc"
pidfile = "{pid}"
interval = "1s"
fall = 2
level = 1
# Each round's kill and restart are two state changes: without this the
# fourth round is flapping, held for a human.
flap_changes_high = 1000
flap_high = 100.0
flap_low = 90.0
"#,
            data = dir.join("data").display(),
            script = g_script.display(),
            pid = dir.join("gemba-svc.pid").display()
        ),
    )?;
    let monitrc = dir.join("monitrc");
    std::fs::write(
        &monitrc,
        format!(
            "set daemon 1\nset pidfile {d}/monit.pid\nset idfile {d}/monit.id\nset statefile {d}/monit.state\nset logfile {d}/monit.out\n\ncheck process svc with pidfile {pid}\n  start program = \"{script}\" with timeout 10 seconds\n",
            d = dir.display(),
            pid = dir.join("monit-svc.pid").display(),
            script = m_script.display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&monitrc, std::fs::Permissions::from_mode(0o600))?;
    let mut g = std::process::Command::new(&gemba)
        .args(["run", "--config", &config.display().to_string()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let mut m = std::process::Command::new(monit)
        .args(["-I", "-c", &monitrc.display().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // Both supervisors settle on a healthy service first.
    std::thread::sleep(Duration::from_secs(6));
    let mut gemba_t = Vec::new();
    let mut monit_t = Vec::new();
    for round in 0..rounds {
        let (Some(gp), Some(mp)) = (
            read_pid(&dir.join("gemba-svc.pid")),
            read_pid(&dir.join("monit-svc.pid")),
        ) else {
            bail!("round {round}: a service pidfile is missing");
        };
        let before = (
            last_stamp(&dir.join("gemba.log")),
            last_stamp(&dir.join("monit.log")),
        );
        let killed = now_secs();
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(gp, libc::SIGKILL);
            libc::kill(mp, libc::SIGKILL);
        }
        let start = Instant::now();
        let (mut gt, mut mt) = (None, None);
        while start.elapsed() < Duration::from_secs(30) && (gt.is_none() || mt.is_none()) {
            std::thread::sleep(Duration::from_millis(50));
            if gt.is_none() {
                gt = last_stamp(&dir.join("gemba.log"))
                    .filter(|t| Some(*t) != before.0)
                    .map(|t| t - killed);
            }
            if mt.is_none() {
                mt = last_stamp(&dir.join("monit.log"))
                    .filter(|t| Some(*t) != before.1)
                    .map(|t| t - killed);
            }
        }
        println!("round {round}: gemba {gt:?} s, monit {mt:?} s");
        gemba_t.extend(gt);
        monit_t.extend(mt);
        // Let both verify and settle before the next kill.
        wait_listening(&format!("{ip}:{gport}"), Duration::from_secs(10));
        wait_listening(&format!("{ip}:{mport}"), Duration::from_secs(10));
        std::thread::sleep(Duration::from_secs(6));
    }
    let _ = g.kill();
    let _ = m.kill();
    let _ = g.wait();
    let _ = m.wait();
    for name in ["gemba-svc", "monit-svc"] {
        if let Some(p) = read_pid(&dir.join(format!("{name}.pid"))) {
            // SAFETY: as above.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let fmt = |v: &mut Vec<f64>| {
        if v.is_empty() {
            return "no restart seen".to_string();
        }
        format!(
            "{:.2} / {:.2} / {:.2} ({} of {rounds})",
            percentile(v, 0.0),
            percentile(v, 0.5),
            percentile(v, 1.0),
            v.len()
        )
    };
    println!("reaction: SIGKILL → restart command starts; gemba: interval 1 s, fall 2, quiet period 2 s; monit: cycle 1 s");
    println!("| supervisor | min / median / max (s) |");
    println!("|---|---|");
    println!("| gemba | {} |", fmt(&mut gemba_t));
    println!("| monit | {} |", fmt(&mut monit_t));
    Ok(())
}
