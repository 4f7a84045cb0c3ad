//! In-process simulation of a large grid with the sites topology: real
//! mesh nodes (chitchat per site and in the backbone, signed transport and
//! values, prober, link trackers) over the in-memory network, in virtual
//! time, one process. Every simulated node is a whole node: nothing is
//! shared between nodes but the network and the runtime.
//!
//! With `--full-sites K` (fewer than the sites), only the first K sites are
//! simulated with all their nodes; every other site runs its
//! representatives alone (a site of that many members). The backbone, the
//! summaries it carries, the relays into every site and the probes between
//! sites are then those of the whole grid of sites, and the full sites are
//! measured as they would be in it; what the partial sites' own members
//! would cost is not simulated (each such site costs a full one's).
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

/// What every simulated node is configured with.
struct Shape {
    reps: usize,
    gossip: Duration,
    backbone_gossip: Duration,
    /// Nodes (global indices) a representative first reaches the backbone
    /// through.
    backbone_seeds: Vec<usize>,
}

/// The simulated nodes, by site: global indices (their addresses). Site
/// `s` has `per_site[s]` nodes, its first ones its representatives.
fn layout(per_site: &[usize]) -> Vec<Vec<usize>> {
    let mut next = 0;
    per_site
        .iter()
        .map(|&m| {
            let ids = (next..next + m).collect();
            next += m;
            ids
        })
        .collect()
}

/// Node `j` of site `site` at global index `i`: an id that sorts its
/// site's first nodes first (they are its representatives), its site's
/// first node (`seed`) as seed and the first nodes of three sites as
/// backbone seeds.
fn settings(
    i: usize,
    site: usize,
    j: usize,
    seed: usize,
    grid: &Shape,
) -> anyhow::Result<MeshSettings> {
    let Shape {
        reps,
        gossip,
        backbone_gossip,
        ref backbone_seeds,
    } = *grid;
    let backbone: Vec<String> = backbone_seeds
        .iter()
        .map(|&s| format!("\"{}\"", addr(s)))
        .collect();
    let text = format!(
        "[mesh]\ntopology = \"sites\"\nrepresentatives = {reps}\ngossip_interval = \"{}ms\"\nbackbone_gossip_interval = \"{}ms\"\nprobe_interval = \"1s\"\nbackbone_seeds = [{}]\n",
        gossip.as_millis(),
        backbone_gossip.as_millis(),
        backbone.join(", ")
    );
    let file = ConfigFile::parse(std::path::Path::new("sim"), &text)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let o = Overrides {
        node_id: Some(format!("s{site:03}-{j:05}")),
        site: Some(format!("site{site:03}")),
        mesh_listen: Some(addr(i).to_string()),
        seeds: if i == seed {
            vec![]
        } else {
            vec![addr(seed).to_string()]
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
    site_of: Vec<usize>,
}

impl Sim {
    fn site_of(&self, i: usize) -> usize {
        self.site_of[i]
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
            if start.elapsed().as_secs() / 10 != (start.elapsed() + step).as_secs() / 10 {
                eprintln!(
                    "  {:.0} s virtual: {} of {} not yet",
                    start.elapsed().as_secs_f64(),
                    pending.len(),
                    among.len()
                );
            }
            tokio::time::sleep(step).await;
        }
    }

    /// Gossip bytes each node has sent so far.
    fn gossip_sent(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| {
                n.as_ref().map_or(0, |n| {
                    n.metrics()
                        .gossip_bytes
                        .get_or_create(&DirectionLabel { direction: "sent" })
                        .get()
                })
            })
            .collect()
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

/// Mean of `xs` over the nodes `among`.
fn mean_over(xs: &[f64], among: &[usize]) -> f64 {
    among.iter().map(|&i| xs[i]).sum::<f64>() / among.len().max(1) as f64
}

pub fn run(
    n: usize,
    sites: usize,
    reps: usize,
    gossip: Duration,
    backbone_gossip: Duration,
    full_sites: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(sites >= 3, "the simulation needs at least 3 sites");
    anyhow::ensure!(
        (3..=sites).contains(&full_sites),
        "--full-sites must be between 3 and the number of sites ({sites})"
    );
    anyhow::ensure!(
        n >= sites * (reps + 2),
        "at least {} nodes for {sites} sites",
        sites * (reps + 2)
    );
    // The grid's nodes spread over its sites; sites past the full ones run
    // their representatives alone.
    let grid_per_site: Vec<usize> = (0..sites).map(|s| (s..n).step_by(sites).count()).collect();
    let per_site: Vec<usize> = grid_per_site
        .iter()
        .enumerate()
        .map(|(s, &m)| if s < full_sites { m } else { reps })
        .collect();
    let by_site = layout(&per_site);
    let site_of: Vec<usize> = by_site
        .iter()
        .enumerate()
        .flat_map(|(s, ids)| ids.iter().map(move |_| s))
        .collect();
    let simulated = site_of.len();
    let full: Vec<usize> = by_site[..full_sites].iter().flatten().copied().collect();
    let partial: Vec<usize> = by_site[full_sites..].iter().flatten().copied().collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    rt.block_on(async move {
        let wall = Instant::now();
        let net = MemNet::with_latency(Duration::from_micros(300));
        let shape = Shape {
            reps,
            gossip,
            backbone_gossip,
            backbone_seeds: by_site.iter().take(3).map(|ids| ids[0]).collect(),
        };
        let mut nodes = Vec::with_capacity(simulated);
        for (site, ids) in by_site.iter().enumerate() {
            for (j, &i) in ids.iter().enumerate() {
                let settings = settings(i, site, j, ids[0], &shape)?;
                nodes.push(Some(MeshNode::start(settings, Arc::new(net.clone()), None).await?));
            }
        }
        let mut sim = Sim { net, nodes, sites, per_site, site_of };
        eprintln!("{simulated} nodes started ({:.0} s wall)", wall.elapsed().as_secs_f64());

        // Two nodes of every full site are watched throughout: its last
        // node and one just past its representatives; of every other site,
        // its last representative. Every node is checked once at the end of
        // convergence.
        let sample: Vec<usize> = by_site
            .iter()
            .enumerate()
            .flat_map(|(s, ids)| {
                let last = *ids.last().expect("a site has nodes");
                if s < full_sites {
                    vec![ids[reps], last]
                } else {
                    vec![last]
                }
            })
            .collect();
        let limit = Duration::from_secs(120);
        let converged = sim
            .wait_for(&sample, Duration::from_secs(1), limit, |i| sim.converged(i))
            .await;
        eprintln!("converged on the sample: {converged:?} ({:.0} s wall)", wall.elapsed().as_secs_f64());
        let mut all_ok = 0;
        for i in 0..simulated {
            all_ok += sim.converged(i).await as usize;
        }
        let mut state = Vec::with_capacity(simulated);
        let mut backbone = 0;
        for node in sim.nodes.iter().flatten() {
            state.push(node.gossip_state_bytes().await);
            backbone += node.in_backbone().await as usize;
        }

        // Steady state: what gossip sends over 10 virtual seconds, once the
        // news of the start has settled for 20.
        tokio::time::sleep(Duration::from_secs(20)).await;
        // Steady state: what gossip sends over 10 virtual seconds.
        let before = sim.gossip_sent();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let sent: Vec<f64> = sim
            .gossip_sent()
            .iter()
            .zip(&before)
            .map(|(a, b)| (a - b) as f64 / 10.0)
            .collect();
        let reps_of_full: Vec<usize> = by_site[..full_sites]
            .iter()
            .flat_map(|ids| ids[..reps].iter().copied())
            .collect();
        let plain: Vec<usize> = by_site[..full_sites]
            .iter()
            .flat_map(|ids| ids[reps..].iter().copied())
            .collect();
        eprintln!("steady state measured ({:.0} s wall)", wall.elapsed().as_secs_f64());

        // A black hole between site 0 and site 1.
        for &a in &by_site[0] {
            for &b in &by_site[1] {
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
        for &a in &by_site[0] {
            for &b in &by_site[1] {
                sim.net.set_link(addr(a), addr(b), true);
            }
        }
        let healed = sim
            .wait_for(&sample, Duration::from_secs(1), limit, |i| sim.converged(i))
            .await;
        eprintln!("healed: {healed:?}");

        // A node killed: the last node of site 2 (not a representative).
        let victim = *by_site[2].last().expect("site 2 has nodes");
        let victim_id = sim.nodes[victim].as_ref().map(|v| v.id().to_string()).unwrap_or_default();
        if let Some(v) = sim.nodes[victim].take() {
            v.shutdown().await;
        }
        sim.net.unplug(addr(victim));
        let site2: Vec<usize> = by_site[2].iter().copied().filter(|&i| i != victim).collect();
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
        let state_f: Vec<f64> = state.iter().map(|&b| b as f64 / 1024.0).collect();
        let max_over = |xs: &[f64], among: &[usize]| among.iter().map(|&i| xs[i]).fold(0.0, f64::max);
        let m = grid_per_site[0];
        let how = if full_sites == sites {
            "every node simulated".to_string()
        } else {
            format!(
                "{full_sites} sites simulated in full ({} nodes), the other {} sites as their {reps} representatives alone ({} nodes; their summaries count {reps} nodes); {simulated} nodes simulated",
                full.len(),
                sites - full_sites,
                partial.len()
            )
        };
        println!("gemba sites simulation: a grid of {n} nodes in {sites} sites (~{m} a site), {reps} representatives per site, gossip every {:.1} s in sites and {:.1} s in the backbone, probes 1 s (2 per interval, 8 flows), in-memory network (300 µs one way), virtual time, signed values verified; {how}", gossip.as_secs_f64(), backbone_gossip.as_secs_f64());
        println!("| measure | result |");
        println!("|---|---|");
        println!("| every sampled node ({} of them: 2 per full site, 1 per other site) has its site's full green graph and every site's current summary (s) | {} |", sample.len(), secs(converged, limit));
        println!("| nodes passing that check once, right after | {all_ok} / {simulated} |");
        println!("| nodes in the backbone | {backbone} |");
        println!("| a black hole between two sites, shown on every sampled node (s) | {} |", secs(black_hole, short));
        println!("| a node killed, shown down on every node of its site (s) | {} |", secs(in_site_down, short));
        println!("| ... and in its site's summary on every sampled node (s) | {} |", secs(in_summaries, short));
        println!(
            "| gossip state per node of a full site (KiB, mean / max) | {:.0} / {:.0} |",
            mean_over(&state_f, &full),
            max_over(&state_f, &full)
        );
        println!(
            "| gossip bytes sent per node per s, steady (10 virtual s from 20 s after convergence, both levels): full sites' plain nodes, mean / max | {:.0} / {:.0} |",
            mean_over(&sent, &plain),
            max_over(&sent, &plain)
        );
        println!(
            "| ... full sites' representatives, mean / max | {:.0} / {:.0} |",
            mean_over(&sent, &reps_of_full),
            max_over(&sent, &reps_of_full)
        );
        println!(
            "| ... every full site's node, mean | {:.0} |",
            mean_over(&sent, &full)
        );
        if !partial.is_empty() {
            println!(
                "| ... representatives of the other sites, mean (gossip state KiB, mean) | {:.0} ({:.0}) |",
                mean_over(&sent, &partial),
                mean_over(&state_f, &partial)
            );
        }
        println!("| peak RSS (GiB) | {rss_gib:.2} |");
        println!("| wall time (s) | {:.0} |", wall.elapsed().as_secs_f64());
        for n in sim.nodes.iter().flatten() {
            n.shutdown().await;
        }
        anyhow::Ok(())
    })
}
