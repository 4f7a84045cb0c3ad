//! In-process simulation of a large grid with the sites topology: real
//! mesh nodes (chitchat per site and in the backbone, signed transport and
//! values, prober, link trackers) over the in-memory network, in virtual
//! time, one process. Every node is simulated in full: nothing is shared
//! between nodes but the network and the runtime.
//!
//! Reports, in virtual time (protocol time without CPU contention): the
//! time until every node has its site's full green graph and every site's
//! current summary; a black hole between two sites until every sampled
//! node shows it; a node killed until its site shows it down and until
//! every sampled node's summary of its site does. Also the gossip state
//! each node holds, the gossip bytes each sends per second once the grid
//! is steady, and the process's peak RSS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gemba_core::config::{Config, ConfigFile, Overrides};
use gemba_core::graph::{LinkState, NodeState};
use gemba_mesh::metrics::DirectionLabel;
use gemba_mesh::{GridKey, MemNet, MeshNode, MeshSettings};

fn addr(i: usize) -> SocketAddr {
    format!(
        "127.{}.{}.{}:7946",
        100 + i / 65_536,
        (i / 256) % 256,
        i % 256
    )
    .parse()
    .expect("valid address")
}

/// Node `i`: site `i % sites`, an id that sorts its site's first nodes
/// first (they are its representatives), its site's first node as seed and
/// the first nodes of three sites as backbone seeds.
fn settings(i: usize, sites: usize, reps: usize, gossip: Duration) -> anyhow::Result<MeshSettings> {
    let site = i % sites;
    let backbone: Vec<String> = (0..sites.min(3))
        .map(|s| format!("\"{}\"", addr(s)))
        .collect();
    let text = format!(
        "[mesh]\ntopology = \"sites\"\nrepresentatives = {reps}\ngossip_interval = \"{}ms\"\nprobe_interval = \"1s\"\nbackbone_seeds = [{}]\n",
        gossip.as_millis(),
        backbone.join(", ")
    );
    let file = ConfigFile::parse(std::path::Path::new("sim"), &text)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let o = Overrides {
        node_id: Some(format!("s{site:03}-{i:05}")),
        site: Some(format!("site{site:03}")),
        mesh_listen: Some(addr(i).to_string()),
        seeds: if i == site {
            vec![]
        } else {
            vec![addr(site).to_string()]
        },
        ..Default::default()
    };
    let c = Config::from_file(file, &o, "sim").map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(MeshSettings::from_config(
        &c,
        GridKey::new(b"simulation-grid-key-0123456789".to_vec()).map_err(anyhow::Error::msg)?,
        None,
    ))
}

struct Sim {
    net: MemNet,
    nodes: Vec<Option<MeshNode>>,
    sites: usize,
    per_site: Vec<usize>,
}

impl Sim {
    fn site_of(&self, i: usize) -> usize {
        i % self.sites
    }

    /// Node `i` has its own site's full green graph and every site's
    /// current summary, all nodes up and all links up.
    async fn converged(&self, i: usize) -> bool {
        let Some(node) = &self.nodes[i] else {
            return true;
        };
        let m = self.per_site[self.site_of(i)];
        let g = node.graph().await;
        if g.nodes.len() != m
            || g.edges.len() != m * (m - 1)
            || g.edges.iter().any(|e| e.state != LinkState::Up)
        {
            return false;
        }
        let sites = node.sites().await;
        sites.len() == self.sites
            && sites.iter().all(|s| {
                let want = s
                    .site
                    .strip_prefix("site")
                    .and_then(|n| n.parse::<usize>().ok())
                    .map(|n| self.per_site[n]);
                !s.stale
                    && Some(s.nodes) == want
                    && s.up == s.nodes
                    && s.links.len() == self.sites - 1
                    && s.links.iter().all(|l| l.state == LinkState::Up)
            })
    }

    /// Waits, a virtual step at a time, until `ok` holds for every node in
    /// `among`; the virtual time it took, or `None` past `limit`.
    async fn wait_for<F, Fut>(
        &self,
        among: &[usize],
        step: Duration,
        limit: Duration,
        ok: F,
    ) -> Option<Duration>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = tokio::time::Instant::now();
        let mut pending: Vec<usize> = among.to_vec();
        loop {
            let mut still = Vec::new();
            for &i in &pending {
                if !ok(i).await {
                    still.push(i);
                }
            }
            pending = still;
            if pending.is_empty() {
                return Some(start.elapsed());
            }
            if start.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(step).await;
        }
    }

    fn gossip_sent(&self) -> u64 {
        self.nodes
            .iter()
            .flatten()
            .map(|n| {
                n.metrics()
                    .gossip_bytes
                    .get_or_create(&DirectionLabel { direction: "sent" })
                    .get()
            })
            .sum()
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn secs(d: Option<Duration>, limit: Duration) -> String {
    d.map(|d| format!("{:.1}", d.as_secs_f64()))
        .unwrap_or_else(|| format!("not within {} s", limit.as_secs()))
}

pub fn run(n: usize, sites: usize, reps: usize, gossip: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(sites >= 3, "the simulation needs at least 3 sites");
    anyhow::ensure!(
        n >= sites * (reps + 2),
        "at least {} nodes for {sites} sites",
        sites * (reps + 2)
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    rt.block_on(async move {
        let wall = Instant::now();
        let net = MemNet::with_latency(Duration::from_micros(300));
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            nodes.push(Some(
                MeshNode::start(settings(i, sites, reps, gossip)?, Arc::new(net.clone()), None).await?,
            ));
        }
        let per_site: Vec<usize> = (0..sites).map(|s| (s..n).step_by(sites).count()).collect();
        let mut sim = Sim { net, nodes, sites, per_site };
        eprintln!("{n} nodes started ({:.0} s wall)", wall.elapsed().as_secs_f64());

        // Two nodes of every site are watched throughout: its last node and
        // one just past its representatives; every node is checked once at
        // the end of convergence.
        let sample: Vec<usize> = (0..sites)
            .flat_map(|s| [s + sites * reps, s + sites * (sim.per_site[s] - 1)])
            .filter(|&i| i < n)
            .collect();
        let limit = Duration::from_secs(120);
        let converged = sim
            .wait_for(&sample, Duration::from_secs(1), limit, |i| sim.converged(i))
            .await;
        eprintln!("converged on the sample: {converged:?} ({:.0} s wall)", wall.elapsed().as_secs_f64());
        let mut all_ok = 0;
        for i in 0..n {
            all_ok += sim.converged(i).await as usize;
        }
        let mut state = Vec::with_capacity(n);
        let mut backbone = 0;
        for node in sim.nodes.iter().flatten() {
            state.push(node.gossip_state_bytes().await);
            backbone += node.in_backbone().await as usize;
        }

        // Steady state: what gossip sends over 10 virtual seconds.
        let before = sim.gossip_sent();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let sent_per_node_s = (sim.gossip_sent() - before) as f64 / n as f64 / 10.0;

        // A black hole between site 0 and site 1.
        let in_site = |s: usize| (s..n).step_by(sites).collect::<Vec<usize>>();
        for &a in &in_site(0) {
            for &b in &in_site(1) {
                sim.net.set_link(addr(a), addr(b), false);
            }
        }
        let step = Duration::from_millis(100);
        let short = Duration::from_secs(30);
        let black_hole = sim
            .wait_for(&sample, step, short, |i| {
                let sim = &sim;
                async move {
                    let Some(node) = &sim.nodes[i] else { return true };
                    let all = node.sites().await;
                    let link = |a: &str, b: &str| {
                        all.iter()
                            .find(|s| s.site == a)
                            .and_then(|s| s.links.iter().find(|l| l.to == b))
                            .map(|l| l.state)
                    };
                    link("site000", "site001") == Some(LinkState::Down)
                        && link("site001", "site000") == Some(LinkState::Down)
                }
            })
            .await;
        eprintln!("black hole: {black_hole:?}");
        for &a in &in_site(0) {
            for &b in &in_site(1) {
                sim.net.set_link(addr(a), addr(b), true);
            }
        }
        let healed = sim
            .wait_for(&sample, Duration::from_secs(1), limit, |i| sim.converged(i))
            .await;
        eprintln!("healed: {healed:?}");

        // A node killed: the last node of site 2 (not a representative).
        let victim = in_site(2).last().copied().expect("site 2 has nodes");
        let victim_id = sim.nodes[victim].as_ref().map(|v| v.id().to_string()).unwrap_or_default();
        if let Some(v) = sim.nodes[victim].take() {
            v.shutdown().await;
        }
        sim.net.unplug(addr(victim));
        let site2: Vec<usize> = in_site(2).into_iter().filter(|&i| i != victim).collect();
        let killed = tokio::time::Instant::now();
        let in_site_down = sim
            .wait_for(&site2, step, short, |i| {
                let sim = &sim;
                let id = victim_id.clone();
                async move {
                    let Some(node) = &sim.nodes[i] else { return true };
                    node.graph().await.node(&id).is_some_and(|v| v.state == NodeState::Down)
                }
            })
            .await;
        let watchers: Vec<usize> = sample.iter().copied().filter(|&i| i != victim).collect();
        let in_summaries = sim
            .wait_for(&watchers, step, short, |i| {
                let sim = &sim;
                let id = victim_id.clone();
                async move {
                    let Some(node) = &sim.nodes[i] else { return true };
                    node.sites().await.iter().any(|s| {
                        s.site == "site002" && s.troubled.iter().any(|t| t.id == id && t.state == NodeState::Down)
                    })
                }
            })
            .await
            .map(|_| killed.elapsed());
        let rss_gib = peak_rss_kib() as f64 / (1024.0 * 1024.0);
        let mean = state.iter().sum::<usize>() as f64 / state.len().max(1) as f64;
        println!("gemba sites simulation: {n} nodes in {sites} sites, {reps} representatives per site, gossip every {:.1} s, probes 1 s (2 per interval, 8 flows), in-memory network (300 µs one way), virtual time, signed values verified; every node simulated in full", gossip.as_secs_f64());
        println!("| measure | result |");
        println!("|---|---|");
        println!("| every sampled node ({} of them, 2 per site) has its site's full green graph and every site's current summary (s) | {} |", sample.len(), secs(converged, limit));
        println!("| nodes passing that check once, right after | {all_ok} / {n} |");
        println!("| nodes in the backbone | {backbone} |");
        println!("| a black hole between two sites, shown on every sampled node (s) | {} |", secs(black_hole, short));
        println!("| a node killed, shown down on every node of its site (s) | {} |", secs(in_site_down, short));
        println!("| ... and in its site's summary on every sampled node (s) | {} |", secs(in_summaries, short));
        println!(
            "| gossip state per node (KiB, mean / max) | {:.0} / {:.0} |",
            mean / 1024.0,
            *state.iter().max().unwrap_or(&0) as f64 / 1024.0
        );
        println!("| gossip bytes sent per node per s, steady (10 virtual s, both levels) | {sent_per_node_s:.0} |");
        println!("| peak RSS (GiB) | {rss_gib:.2} |");
        println!("| wall time (s) | {:.0} |", wall.elapsed().as_secs_f64());
        for n in sim.nodes.iter().flatten() {
            n.shutdown().await;
        }
        anyhow::Ok(())
    })
}
