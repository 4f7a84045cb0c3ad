//! A grid of sites in one process, under paused time: each site gossips
//! inside itself, its representatives carry one summary per site through
//! the backbone and relay the others' into their site.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gemba_core::config::Overrides;
use gemba_core::graph::{LinkState, NodeState, SiteSummary};
use gemba_mesh::{GridKey, MemNet, MeshNode, MeshSettings};
use tokio::time::Instant;

fn key() -> GridKey {
    GridKey::new(b"sites-test-grid-key-0123456789ab".to_vec()).unwrap()
}

fn addr(i: usize) -> SocketAddr {
    format!("127.2.{}.{}:7946", i / 250, i % 250 + 1)
        .parse()
        .unwrap()
}

/// Node `i` of a grid of `sites` sites: ids `s<site>-<i>` so that the
/// lowest ids of each site (its representatives) are its first nodes; it
/// joins through its site's first node and knows the first node of every
/// site for the backbone.
fn settings(i: usize, sites: usize, reps: usize) -> MeshSettings {
    let site = i % sites;
    let backbone: Vec<String> = (0..sites.min(3)).map(|s| format!("\"{}\"", addr(s))).collect();
    let text = format!(
        "[mesh]\ntopology = \"sites\"\nrepresentatives = {reps}\nbackbone_seeds = [{}]\n",
        backbone.join(", ")
    );
    let o = Overrides {
        node_id: Some(format!("s{site:02}-{i:04}")),
        site: Some(format!("site{site:02}")),
        mesh_listen: Some(addr(i).to_string()),
        seeds: if i == site {
            vec![]
        } else {
            vec![addr(site).to_string()]
        },
        ..Default::default()
    };
    let c = gemba_testkit::config_with(&text, &o);
    MeshSettings::from_config(&c, key(), None)
}

struct Sites {
    net: MemNet,
    nodes: Vec<Option<MeshNode>>,
    sites: usize,
}

impl Sites {
    async fn start(n: usize, sites: usize, reps: usize) -> Sites {
        let net = MemNet::with_latency(Duration::from_micros(200));
        let mut nodes = Vec::new();
        for i in 0..n {
            let node = MeshNode::start(settings(i, sites, reps), Arc::new(net.clone()), None)
                .await
                .unwrap();
            nodes.push(Some(node));
        }
        Sites { net, nodes, sites }
    }

    fn site_of(&self, i: usize) -> String {
        format!("site{:02}", i % self.sites)
    }

    fn members_of(&self, site: &str) -> usize {
        (0..self.nodes.len())
            .filter(|&i| self.site_of(i) == site)
            .count()
    }

    /// Whether node `i` sees its own site whole and green, and every other
    /// site's summary, current, with every node up and every link up.
    async fn converged(&self, i: usize) -> Result<(), String> {
        let node = self.nodes[i].as_ref().unwrap();
        let g = node.graph().await;
        let own = self.site_of(i);
        let m = self.members_of(&own);
        if g.nodes.len() != m || g.edges.len() != m * (m - 1) {
            return Err(format!("{}: site graph {} nodes {} edges", node.id(), g.nodes.len(), g.edges.len()));
        }
        if let Some(e) = g.edges.iter().find(|e| e.state != LinkState::Up) {
            return Err(format!("{}: {} -> {} {}", node.id(), e.source, e.target, e.state));
        }
        let sites = node.sites().await;
        if sites.len() != self.sites {
            return Err(format!("{}: knows {} sites", node.id(), sites.len()));
        }
        for s in &sites {
            let want = self.members_of(&s.site);
            if s.stale || s.nodes != want || s.up != want {
                return Err(format!("{}: {} stale={} {}/{} up", node.id(), s.site, s.stale, s.up, s.nodes));
            }
            if s.links.len() != self.sites - 1 || s.links.iter().any(|l| l.state != LinkState::Up) {
                return Err(format!("{}: {} links {:?}", node.id(), s.site, s.links));
            }
        }
        Ok(())
    }

    /// Waits (virtual time) until every running node passes `ok`; returns
    /// how long it took.
    async fn wait<F, Fut>(&self, limit: Duration, ok: F) -> Duration
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let start = Instant::now();
        loop {
            let mut failed = None;
            for i in 0..self.nodes.len() {
                if self.nodes[i].is_none() {
                    continue;
                }
                if let Err(e) = ok(i).await {
                    failed = Some(e);
                    break;
                }
            }
            match failed {
                None => return start.elapsed(),
                Some(e) => assert!(start.elapsed() < limit, "not reached in {limit:?}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn shutdown(self) {
        for n in self.nodes.into_iter().flatten() {
            n.shutdown().await;
        }
    }
}

fn site<'a>(sites: &'a [SiteSummary], name: &str) -> &'a SiteSummary {
    sites.iter().find(|s| s.site == name).unwrap()
}

#[tokio::test(start_paused = true)]
async fn sites_gossip_inside_and_summaries_reach_every_node() {
    let g = Sites::start(24, 4, 2).await;
    let took = g.wait(Duration::from_secs(30), |i| g.converged(i)).await;
    assert!(took <= Duration::from_secs(10), "{took:?}");
    // Each node holds its own site only, and the backbone holds the
    // representatives only.
    let node = g.nodes[5].as_ref().unwrap();
    assert!(node.members().await.iter().all(|m| m.site == "site01"));
    let mut in_backbone = 0;
    for n in g.nodes.iter().flatten() {
        in_backbone += n.in_backbone().await as usize;
    }
    assert_eq!(in_backbone, 4 * 2);
    g.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_killed_node_shows_in_its_site_and_in_every_summary() {
    let mut g = Sites::start(24, 4, 2).await;
    g.wait(Duration::from_secs(30), |i| g.converged(i)).await;
    // Node 21 (site01, not a representative) dies.
    let victim = g.nodes[21].take().unwrap();
    let id = victim.id().to_string();
    victim.shutdown().await;
    g.net.unplug(addr(21));
    let seen_in_site = g
        .wait(Duration::from_secs(10), |i| {
            let g = &g;
            let id = id.clone();
            async move {
                if g.site_of(i) != "site01" {
                    return Ok(());
                }
                let graph = g.nodes[i].as_ref().unwrap().graph().await;
                match graph.node(&id) {
                    Some(n) if n.state == NodeState::Down => Ok(()),
                    other => Err(format!("{:?}", other.map(|n| n.state))),
                }
            }
        })
        .await;
    let seen_everywhere = g
        .wait(Duration::from_secs(10), |i| {
            let g = &g;
            let id = id.clone();
            async move {
                let sites = g.nodes[i].as_ref().unwrap().sites().await;
                let s = site(&sites, "site01");
                if s.up == s.nodes - 1 && s.troubled.iter().any(|t| t.id == id) {
                    Ok(())
                } else {
                    Err(format!("site01 {}/{} {:?}", s.up, s.nodes, s.troubled))
                }
            }
        })
        .await;
    assert!(seen_in_site <= Duration::from_secs(1), "{seen_in_site:?}");
    assert!(seen_in_site + seen_everywhere <= Duration::from_secs(3), "{seen_everywhere:?}");
    g.shutdown().await;
}

