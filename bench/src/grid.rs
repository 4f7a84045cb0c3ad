//! The multi-process grid benchmark.
//!
//! Why one file: one benchmark from start to end (spawn the nodes, wait
//! for the grid, measure steady state, inject a fault, tear down), kept in
//! the order it runs so that what each figure measures reads in order.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

const STEADY: Duration = Duration::from_secs(20);

/// How often the harness polls each node: 100 ms up to 20 nodes; 250 ms
/// beyond, so that polling 50 nodes does not load the 2 cores it measures.
fn poll_every(n: usize) -> Duration {
    if n <= 20 {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(250)
    }
}

static POLL_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(250);

pub(crate) struct Proc {
    pub(crate) id: String,
    pub(crate) ip: String,
    pub(crate) child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into()
}

fn fetch(agent: &ureq::Agent, url: &str) -> Option<String> {
    agent.get(url).call().ok()?.body_mut().read_to_string().ok()
}

fn summary(agent: &ureq::Agent, p: &Proc) -> Option<Value> {
    serde_json::from_str(&fetch(
        agent,
        &format!("http://{}:8777/api/v1/summary", p.ip),
    )?)
    .ok()
}

/// Polls every node in its own thread until `ok` holds for it; returns
/// the time by which the last node got there (each node's own first
/// sighting, so the figure does not depend on how long a polling pass over
/// all nodes takes).
fn wait_all(
    agent: &ureq::Agent,
    procs: &[&Proc],
    limit: Duration,
    ok: impl Fn(&Value) -> bool + Sync,
) -> Option<Duration> {
    wait_each(agent, procs, limit, ok).map(|(_, last)| last)
}

/// Like [`wait_all`], returning (first node, last node) times.
fn wait_each(
    _agent: &ureq::Agent,
    procs: &[&Proc],
    limit: Duration,
    ok: impl Fn(&Value) -> bool + Sync,
) -> Option<(Duration, Duration)> {
    let start = Instant::now();
    let ok = &ok;
    std::thread::scope(|scope| {
        let handles: Vec<_> = procs
            .iter()
            .map(|p| {
                scope.spawn(move || {
                    let agent = agent();
                    while start.elapsed() < limit {
                        if summary(&agent, p).is_some_and(|s| ok(&s)) {
                            return Some(start.elapsed());
                        }
                        std::thread::sleep(Duration::from_millis(
                            POLL_MS.load(std::sync::atomic::Ordering::Relaxed),
                        ));
                    }
                    None
                })
            })
            .collect();
        let mut first = limit;
        let mut last = Duration::ZERO;
        for h in handles {
            let t = h.join().ok()??;
            first = first.min(t);
            last = last.max(t);
        }
        Some((first, last))
    })
}

/// utime + stime in seconds, and RSS in bytes, from /proc.
pub(crate) fn cpu_and_rss(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks / 100.0, rss_kb * 1024))
}

/// An application's view of a link: `count` TCP connections opened at
/// once from `from` (ephemeral source ports, so they hash over the paths
/// like any client's) to `to`; how many failed within `timeout`.
fn app_connections(from: &str, to: &str, count: usize, timeout: Duration) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let from: std::net::SocketAddr = format!("{from}:0").parse().expect("address");
        let to: std::net::SocketAddr = to.parse().expect("address");
        let tries: Vec<_> = (0..count)
            .map(|_| {
                tokio::spawn(async move {
                    let socket = tokio::net::TcpSocket::new_v4().ok()?;
                    socket.bind(from).ok()?;
                    let stream = tokio::time::timeout(timeout, socket.connect(to))
                        .await
                        .ok()?
                        .ok()?;
                    let _ = stream.set_zero_linger();
                    Some(())
                })
            })
            .collect();
        let mut failed = 0;
        for t in tries {
            if !matches!(t.await, Ok(Some(()))) {
                failed += 1;
            }
        }
        failed
    })
}

fn path_edge<'a>(s: &'a Value, src: &str, dst: &str) -> Option<&'a Value> {
    s["broken_links"]
        .as_array()?
        .iter()
        .find(|e| e["source"] == src && e["target"] == dst && e["loss_kind"] == "path")
}

fn link_is_up(s: &Value, src: &str, dst: &str) -> bool {
    s["broken_links"]
        .as_array()
        .is_some_and(|v| !v.iter().any(|e| e["source"] == src && e["target"] == dst))
}

fn nft(args: &str) -> bool {
    Command::new("nft")
        .args(args.split_whitespace())
        .output()
        .is_ok_and(|o| o.status.success())
}

fn broken_link_is_down(s: &Value, src: &str, dst: &str) -> bool {
    s["broken_links"].as_array().is_some_and(|v| {
        v.iter()
            .any(|e| e["source"] == src && e["target"] == dst && e["state"] == "down")
    })
}

fn all_up(s: &Value, n: usize) -> bool {
    let e = n * (n - 1);
    s["nodes"] == n && s["edges"] == e && s["edge_states"]["up"] == e
}

/// Every edge measured and passing traffic: up or degraded, none down,
/// unknown or stale.
fn all_measured(s: &Value, n: usize) -> bool {
    let e = n * (n - 1);
    let up = s["edge_states"]["up"].as_u64().unwrap_or(0);
    let degraded = s["edge_states"]["degraded"].as_u64().unwrap_or(0);
    s["nodes"] == n && s["edges"] == e && (up + degraded) as usize == e
}

/// Median p50 and largest p99 RTT (ms) of one node's links.
fn rtt_of(agent: &ureq::Agent, p: &Proc) -> (f64, f64) {
    let Some(v) = fetch(agent, &format!("http://{}:8777/api/v1/links", p.ip))
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    else {
        return (f64::NAN, f64::NAN);
    };
    let links = v["links"].as_array().cloned().unwrap_or_default();
    let mut p50: Vec<f64> = links
        .iter()
        .filter_map(|l| l["rtt_p50_ms"].as_f64())
        .collect();
    p50.sort_by(f64::total_cmp);
    let p99 = links
        .iter()
        .filter_map(|l| l["rtt_p99_ms"].as_f64())
        .fold(0.0, f64::max);
    (p50.get(p50.len() / 2).copied().unwrap_or(f64::NAN), p99)
}

/// The largest p99 RTT (ms) of `p`'s links over the UDP replies of the
/// last `within`, from each link's probe history.
fn steady_p99(agent: &ureq::Agent, p: &Proc, within: Duration) -> f64 {
    let Some(links) = fetch(agent, &format!("http://{}:8777/api/v1/links", p.ip))
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    else {
        return f64::NAN;
    };
    let mut worst = 0.0f64;
    for l in links["links"].as_array().cloned().unwrap_or_default() {
        let Some(target) = l["target"].as_str() else {
            continue;
        };
        let Some(h) = fetch(
            agent,
            &format!("http://{}:8777/api/v1/links/{target}", p.ip),
        )
        .and_then(|t| serde_json::from_str::<Value>(&t).ok()) else {
            continue;
        };
        let mut rtts: Vec<f64> = h["probes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|x| {
                x["path"] == "udp"
                    && x["age_ms"]
                        .as_f64()
                        .is_some_and(|a| a <= within.as_secs_f64() * 1000.0)
            })
            .filter_map(|x| x["rtt_ms"].as_f64())
            .collect();
        if rtts.is_empty() {
            continue;
        }
        rtts.sort_by(f64::total_cmp);
        let rank = ((0.99 * rtts.len() as f64).ceil() as usize).clamp(1, rtts.len());
        worst = worst.max(rtts[rank - 1]);
    }
    worst
}

struct Row {
    n: usize,
    converge: Option<Duration>,
    all_up: Option<Duration>,
    rtt: (f64, f64),
    blackhole: Option<(Duration, Duration)>,
    blackhole_note: &'static str,
    /// One of two paths black-holed: seen as path loss on the first /
    /// every node, then up again on every node after the repair.
    path: Option<(Duration, Duration)>,
    path_repaired: Option<Duration>,
    /// Flows failing / probed as node 0 shows them, and the application's
    /// failed / tried connections over the same dead path.
    path_flows: Option<(u64, u64)>,
    app_failed: Option<(usize, usize)>,
    kill: Option<Duration>,
    /// Edge-seconds shown down or degraded before every node first showed
    /// every edge up, summed over the nodes' views, and how many nodes
    /// ever showed one.
    false_alarms: (f64, usize),
    /// The largest p99 RTT of any node's links over the steady window
    /// (ms).
    worst_p99: f64,
    agents: Steady,
    server: Steady,
}

/// One role's figures over the steady window, one entry per node.
#[derive(Default)]
struct Steady {
    cpu: Vec<f64>,
    rss: Vec<f64>,
    gossip: Vec<f64>,
    probes: Vec<f64>,
    verified: Vec<f64>,
    /// % of one core spent verifying signatures.
    verify_cpu: Vec<f64>,
    published: Vec<f64>,
}

/// Counters read from a node's /metrics.
#[derive(Default)]
struct Counters {
    gossip_sent: f64,
    probes_sent: f64,
    verified: f64,
    verify_cpu: f64,
    published: f64,
}

fn counters(agent: &ureq::Agent, p: &Proc) -> Counters {
    let Some(text) = fetch(agent, &format!("http://{}:8777/metrics", p.ip)) else {
        return Counters::default();
    };
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    };
    Counters {
        gossip_sent: sum("gemba_mesh_gossip_bytes_total{direction=\"sent\"}"),
        probes_sent: sum("gemba_mesh_probes_sent_total{"),
        verified: sum("gemba_mesh_signatures_verified_total"),
        verify_cpu: sum("gemba_mesh_signature_verify_cpu_seconds_total"),
        published: sum("gemba_mesh_values_published_total"),
    }
}

/// What the start of a grid looked like from every node.
struct StartUp {
    /// Start → every node shows every edge up or degraded.
    measured: Option<Duration>,
    /// Start → every node has shown every edge up.
    all_up: Option<Duration>,
    false_alarms: (f64, usize),
}

/// When one node first measured every edge, and when it first saw them all up.
type Times = (Option<Duration>, Option<Duration>);

/// Polls every node in its own thread from the start until every node has
/// shown every edge up (or `limit`), adding up the edge-seconds each node
/// showed down or degraded on the way: on a healthy grid, each is a false
/// alarm.
fn watch_start(procs: &[&Proc], n: usize, start: Instant, limit: Duration) -> StartUp {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let up_nodes = AtomicUsize::new(0);
    let alarm = Mutex::new((0.0f64, 0usize));
    let every = Duration::from_millis(POLL_MS.load(Ordering::Relaxed));
    let times: Vec<(Option<Duration>, Option<Duration>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = procs
            .iter()
            .map(|p| {
                let (up_nodes, alarm) = (&up_nodes, &alarm);
                scope.spawn(move || {
                    let agent = agent();
                    let (mut measured, mut up) = (None, None);
                    let mut last = start;
                    let mut alarmed = false;
                    while start.elapsed() < limit && up_nodes.load(Ordering::Relaxed) < n {
                        if let Some(s) = summary(&agent, p) {
                            let now = Instant::now();
                            let states = &s["edge_states"];
                            let bad = states["down"].as_u64().unwrap_or(0)
                                + states["degraded"].as_u64().unwrap_or(0);
                            if bad > 0 {
                                let mut a = alarm.lock().expect("alarm lock");
                                a.0 += bad as f64 * now.duration_since(last).as_secs_f64();
                                if !alarmed {
                                    a.1 += 1;
                                    alarmed = true;
                                }
                                if let Some(links) = s["broken_links"].as_array() {
                                    for l in links.iter().filter(|l| {
                                        l["state"] != "stale" && l["state"] != "unknown"
                                    }) {
                                        eprintln!(
                                            "false alarm at {:.2} s on {}: {} -> {} {} ({})",
                                            start.elapsed().as_secs_f64(),
                                            p.id,
                                            l["source"].as_str().unwrap_or("?"),
                                            l["target"].as_str().unwrap_or("?"),
                                            l["state"].as_str().unwrap_or("?"),
                                            l["reason"].as_str().unwrap_or("")
                                        );
                                    }
                                }
                            }
                            last = now;
                            if measured.is_none() && all_measured(&s, n) {
                                measured = Some(start.elapsed());
                            }
                            if up.is_none() && all_up(&s, n) {
                                up = Some(start.elapsed());
                                up_nodes.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        std::thread::sleep(every);
                    }
                    (measured, up)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((None, None)))
            .collect()
    });
    let last = |pick: fn(&Times) -> Option<Duration>| {
        times
            .iter()
            .map(pick)
            .try_fold(Duration::ZERO, |m, t| t.map(|t| m.max(t)))
    };
    let false_alarms = *alarm.lock().expect("alarm lock");
    StartUp {
        measured: last(|t| t.0),
        all_up: last(|t| t.1),
        false_alarms,
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2}", d.as_secs_f64()))
        .unwrap_or_else(|| "-".into())
}

fn one(bin: &str, n: usize) -> anyhow::Result<Row> {
    let dir = std::env::temp_dir().join(format!("gemba-bench-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let key: PathBuf = dir.join("grid.key");
    std::fs::write(&key, "benchmark-grid-key-0123456789abcdef\n")?;
    // gemba refuses a key file its group or others can read.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let agent = agent();
    POLL_MS.store(
        poll_every(n).as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let start = Instant::now();
    let mut procs = Vec::new();
    for i in 0..n {
        let ip = format!("127.0.8.{}", i + 1);
        let id = format!("b{i:02}");
        let mut cmd = Command::new(bin);
        cmd.args([
            "run",
            &format!("--node-id={id}"),
            &format!("--site=site{}", i % 5),
            // The first node is the grid's server, the others agents.
            if i == 0 {
                "--role=server"
            } else {
                "--role=agent"
            },
        ])
        .arg(format!("--listen={ip}:7946"))
        .arg(format!("--http={ip}:8777"))
        .arg(format!("--grid-key-file={}", key.display()))
        .arg(format!("--data-dir={}", dir.join(&id).display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
        if i > 0 {
            cmd.arg("--seed=127.0.8.1:7946");
        }
        let child = cmd.spawn().with_context(|| format!("cannot start {bin}"))?;
        procs.push(Proc { id, ip, child });
    }
    let refs: Vec<&Proc> = procs.iter().collect();
    let start_up = watch_start(&refs, n, start, Duration::from_secs(120));
    let converge = start_up.measured;
    if converge.is_none() {
        bail!("N={n}: the grid did not converge within 120 s");
    }
    let all_up = start_up.all_up;

    // Steady state: nobody polls the nodes during the window.
    std::thread::sleep(Duration::from_secs(3));
    let before: Vec<(f64, u64, Counters)> = procs
        .iter()
        .map(|p| {
            let (cpu, rss) = cpu_and_rss(p.child.id()).unwrap_or_default();
            (cpu, rss, counters(&agent, p))
        })
        .collect();
    std::thread::sleep(STEADY);
    let secs = STEADY.as_secs_f64();
    let mut agents = Steady::default();
    let mut server = Steady::default();
    for (i, (p, (c0, _, k0))) in procs.iter().zip(&before).enumerate() {
        let (c1, r1) = cpu_and_rss(p.child.id()).unwrap_or_default();
        let k1 = counters(&agent, p);
        let into = if i == 0 { &mut server } else { &mut agents };
        into.cpu.push((c1 - c0) / secs * 100.0);
        into.rss.push(r1 as f64 / 1_048_576.0);
        into.gossip.push((k1.gossip_sent - k0.gossip_sent) / secs);
        into.probes
            .push((k1.probes_sent - k0.probes_sent) / secs / (n - 1) as f64);
        into.verified.push((k1.verified - k0.verified) / secs);
        into.verify_cpu
            .push((k1.verify_cpu - k0.verify_cpu) / secs * 100.0);
        into.published.push((k1.published - k0.published) / secs);
    }
    let rtt = rtt_of(&agent, &procs[0]);
    let worst_p99 = procs
        .iter()
        .map(|p| steady_p99(&agent, p, STEADY))
        .fold(0.0, f64::max);

    // One of two ECMP paths b01 -> b02 black-holed at the kernel: drop what
    // 127.0.8.2 sends to 127.0.8.3 whose flow hash is in one half.
    let (src, dst) = (&procs[1], &procs[2]);
    let (mut path, mut path_repaired, mut path_flows, mut app_failed) = (None, None, None, None);
    if nft("add table inet gemba_bench")
        && nft("add chain inet gemba_bench out { type filter hook output priority 0 ; }")
        && nft(&format!(
            "add rule inet gemba_bench out ip saddr {} ip daddr {} meta l4proto {{ tcp, udp }} jhash ip saddr . ip daddr . th sport . th dport mod 2 seed 0x1 == 0 drop",
            src.ip, dst.ip
        ))
    {
        path = wait_each(&agent, &refs, Duration::from_secs(30), |s| {
            path_edge(s, &src.id, &dst.id).is_some()
        });
        // Let every flow be called, then compare with an application.
        std::thread::sleep(Duration::from_secs(10));
        path_flows = summary(&agent, &procs[0]).and_then(|s| {
            let e = path_edge(&s, &src.id, &dst.id)?;
            Some((e["flows_failing"].as_u64()?, e["flows_probed"].as_u64()?))
        });
        let tried = 200;
        app_failed = Some((
            app_connections(&src.ip, &format!("{}:7946", dst.ip), tried, Duration::from_secs(2)),
            tried,
        ));
        nft("delete table inet gemba_bench");
        let t0 = Instant::now();
        path_repaired = wait_all(&agent, &refs, Duration::from_secs(30), |s| {
            link_is_up(s, &src.id, &dst.id)
        })
        .map(|_| t0.elapsed());
        wait_all(&agent, &refs, Duration::from_secs(60), |s| all_measured(s, n));
    }
    nft("delete table inet gemba_bench");

    // Black-hole b03 -> b04 at the kernel: drop what 127.0.8.4 sends to
    // 127.0.8.5. Another link than the path fault's, whose window still
    // holds that episode.
    let (src, dst) = (&procs[3], &procs[4]);
    let (blackhole, blackhole_note) = if nft("add table inet gemba_bench")
        && nft("add chain inet gemba_bench out { type filter hook output priority 0 ; }")
        && nft(&format!(
            "add rule inet gemba_bench out ip saddr {} ip daddr {} drop",
            src.ip, dst.ip
        )) {
        let t = wait_each(&agent, &refs, Duration::from_secs(30), |s| {
            broken_link_is_down(s, &src.id, &dst.id)
        });
        nft("delete table inet gemba_bench");
        wait_all(&agent, &refs, Duration::from_secs(60), |s| {
            all_measured(s, n)
        });
        (t, "")
    } else {
        nft("delete table inet gemba_bench");
        (None, " (nft unavailable: needs root and nftables)")
    };

    // SIGKILL the last node.
    let mut victim = procs.pop().expect("n >= 2");
    let victim_id = victim.id.clone();
    victim.child.kill()?;
    let t0 = Instant::now();
    let survivors: Vec<&Proc> = procs.iter().collect();
    let kill = wait_all(&agent, &survivors, Duration::from_secs(30), |s| {
        s["nodes_not_up"].as_array().is_some_and(|v| {
            v.iter()
                .any(|x| x["id"] == victim_id.as_str() && x["state"] == "down")
        })
    })
    .map(|_| t0.elapsed());
    drop(victim);
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Row {
        n,
        converge,
        all_up,
        rtt,
        blackhole,
        blackhole_note,
        path,
        path_repaired,
        path_flows,
        app_failed,
        kill,
        false_alarms: start_up.false_alarms,
        worst_p99,
        agents,
        server,
    })
}

fn mean_max(v: &[f64]) -> (f64, f64) {
    (
        v.iter().sum::<f64>() / v.len().max(1) as f64,
        v.iter().cloned().fold(0.0, f64::max),
    )
}

pub fn run(bin: &str, sizes: &[usize]) -> anyhow::Result<()> {
    anyhow::ensure!(
        std::path::Path::new(bin).exists(),
        "{bin} not found: run `cargo build --release` first"
    );
    println!("gemba grid benchmark: nodes as processes on 127.0.8.x, default config (probe interval 1 s, 2 probes per interval over 8 flows, gossip interval 1 s); b00 is the server, every other node an agent (--role agent); steady window {}s; each node polled in its own thread every 100 ms (N <= 20) or 250 ms (N > 20)", STEADY.as_secs());
    let pair = |d: Option<(Duration, Duration)>| {
        d.map(|(a, b)| format!("{:.2} / {:.2}", a.as_secs_f64(), b.as_secs_f64()))
            .unwrap_or_else(|| "-".into())
    };
    let mut rows = Vec::new();
    for &n in sizes {
        rows.push(one(bin, n)?);
    }
    println!();
    println!("| N | start → every edge measured on every node (s) | start → every edge up on every node (s) | false down/degraded edge-seconds before that (nodes that showed one) | RTT of node 0's links, median p50 / max p99 (ms) | largest p99 RTT of any link over the steady window (ms) | one of two paths black-holed → path loss on the first / every node (s) | path repaired → up on every node (s) | flows failing (node 0's view) / application connections failing | black-holed link → down on the first / on every node (s) | SIGKILL → down on every survivor (s) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} ({}) | {:.2} / {:.1} | {:.1} | {}{} | {} | {} | {}{} | {} |",
            r.n,
            secs(r.converge),
            r.all_up
                .map(|d| format!("{:.2}", d.as_secs_f64()))
                .unwrap_or_else(|| "not within 120 s".into()),
            r.false_alarms.0,
            r.false_alarms.1,
            r.rtt.0,
            r.rtt.1,
            r.worst_p99,
            pair(r.path),
            r.blackhole_note,
            secs(r.path_repaired),
            match (r.path_flows, r.app_failed) {
                (Some((f, p)), Some((a, t))) => format!(
                    "{f}/{p} = {:.0} % / {a}/{t} = {:.0} %",
                    f as f64 * 100.0 / p as f64,
                    a as f64 * 100.0 / t as f64
                ),
                (None, Some((a, t))) => format!("- / {a}/{t}"),
                _ => "-".into(),
            },
            pair(r.blackhole),
            r.blackhole_note,
            secs(r.kill),
        );
    }
    println!();
    println!("| N | role | nodes | CPU % of one core (mean / max) | signature verification, % of one core (mean / max) | signatures verified per s (mean / max) | values published per s (mean / max) | RSS MB (mean / max) | gossip bytes sent per s (mean / max) | UDP probes per peer per s (mean / max) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        for (role, st) in [("agent", &r.agents), ("server", &r.server)] {
            let (c, vc, v, p, m, g, pr) = (
                mean_max(&st.cpu),
                mean_max(&st.verify_cpu),
                mean_max(&st.verified),
                mean_max(&st.published),
                mean_max(&st.rss),
                mean_max(&st.gossip),
                mean_max(&st.probes),
            );
            println!(
                "| {} | {role} | {} | {:.2} / {:.2} | {:.3} / {:.3} | {:.1} / {:.1} | {:.2} / {:.2} | {:.1} / {:.1} | {:.0} / {:.0} | {:.2} / {:.2} |",
                r.n,
                st.cpu.len(),
                c.0, c.1, vc.0, vc.1, v.0, v.1, p.0, p.1, m.0, m.1, g.0, g.1, pr.0, pr.1
            );
        }
    }
    Ok(())
}
