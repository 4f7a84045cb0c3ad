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
fn settings(i: usize, sites: usize, reps: usize, extra: &str) -> MeshSettings {
    let site = i % sites;
    let backbone: Vec<String> = (0..sites.min(3))
        .map(|s| format!("\"{}\"", addr(s)))
        .collect();
    let text = format!(
        "[mesh]\ntopology = \"sites\"\nrepresentatives = {reps}\nbackbone_seeds = [{}]\n{extra}\n",
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
        Self::start_with(n, sites, reps, "").await
    }

    async fn start_with(n: usize, sites: usize, reps: usize, extra: &str) -> Sites {
        let net = MemNet::with_latency(Duration::from_micros(200));
        let mut nodes = Vec::new();
        for i in 0..n {
            let node =
                MeshNode::start(settings(i, sites, reps, extra), Arc::new(net.clone()), None)
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
            return Err(format!(
                "{}: site graph {} nodes {} edges",
                node.id(),
                g.nodes.len(),
                g.edges.len()
            ));
        }
        if let Some(e) = g.edges.iter().find(|e| e.state != LinkState::Up) {
            return Err(format!(
                "{}: {} -> {} {}",
                node.id(),
                e.source,
                e.target,
                e.state
            ));
        }
        let sites = node.sites().await;
        if sites.len() != self.sites {
            return Err(format!("{}: knows {} sites", node.id(), sites.len()));
        }
        for s in &sites {
            let want = self.members_of(&s.site);
            if s.stale || s.nodes != want || s.up != want {
                return Err(format!(
                    "{}: {} stale={} {}/{} up",
                    node.id(),
                    s.site,
                    s.stale,
                    s.up,
                    s.nodes
                ));
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
        // Nodes started all at once saw their sites' lower ids late, but
        // none of them joined the backbone meanwhile: its digests list
        // the representatives alone.
        if n.in_backbone().await {
            assert_eq!(n.backbone_members().await, 4 * 2, "{}", n.id());
        }
    }
    assert_eq!(in_backbone, 4 * 2);
    // A node probes its own site; a representative also probes the other
    // sites' representatives, and nobody else there.
    let probed = |i: usize| -> Vec<String> {
        let mut v: Vec<String> = g.nodes[i]
            .as_ref()
            .unwrap()
            .local_links()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        v.sort();
        v
    };
    let plain = probed(21);
    assert_eq!(plain.len(), 5);
    assert!(plain.iter().all(|t| t.starts_with("s01-")), "{plain:?}");
    let rep = probed(1);
    let elsewhere: Vec<&String> = rep.iter().filter(|t| !t.starts_with("s01-")).collect();
    assert_eq!(elsewhere.len(), 3 * 2, "{rep:?}");
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
    assert!(
        seen_in_site + seen_everywhere <= Duration::from_secs(3),
        "{seen_everywhere:?}"
    );
    g.shutdown().await;
}

/// The link from site `a` to site `b` in `a`'s summary, as node `i` knows it.
async fn site_link(g: &Sites, i: usize, a: &str, b: &str) -> Option<LinkState> {
    let sites = g.nodes[i].as_ref()?.sites().await;
    let s = sites.iter().find(|s| s.site == a)?;
    s.links.iter().find(|l| l.to == b).map(|l| l.state)
}

#[tokio::test(start_paused = true)]
async fn a_black_hole_between_two_sites_shows_on_every_node() {
    let g = Sites::start(24, 4, 2).await;
    g.wait(Duration::from_secs(30), |i| g.converged(i)).await;
    // Nothing passes between site00 and site01 any more.
    for a in (0..24).filter(|i| i % 4 == 0) {
        for b in (0..24).filter(|i| i % 4 == 1) {
            g.net.set_link(addr(a), addr(b), false);
        }
    }
    let took = g
        .wait(Duration::from_secs(10), |i| {
            let g = &g;
            async move {
                let ab = site_link(g, i, "site00", "site01").await;
                let ba = site_link(g, i, "site01", "site00").await;
                if ab == Some(LinkState::Down) && ba == Some(LinkState::Down) {
                    Ok(())
                } else {
                    Err(format!("node {i}: site00->site01 {ab:?}, back {ba:?}"))
                }
            }
        })
        .await;
    assert!(took <= Duration::from_secs(2), "{took:?}");
    // The other sites' links are untouched.
    assert_eq!(
        site_link(&g, 10, "site02", "site03").await,
        Some(LinkState::Up)
    );
    assert_eq!(
        site_link(&g, 10, "site00", "site02").await,
        Some(LinkState::Up)
    );
    g.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_killed_representative_is_replaced_and_no_summary_goes_stale() {
    let mut g = Sites::start(24, 4, 2).await;
    g.wait(Duration::from_secs(30), |i| g.converged(i)).await;
    // s01-0001, the lowest id of site01, is one of its representatives.
    let victim = g.nodes[1].take().unwrap();
    assert!(victim.in_backbone().await);
    victim.shutdown().await;
    g.net.unplug(addr(1));
    // Every virtual 100 ms until the site has a new representative, every
    // node still knows every site, none of them stale.
    let start = Instant::now();
    loop {
        let mut replaced = true;
        for (i, n) in g.nodes.iter().enumerate() {
            let Some(n) = n else { continue };
            let sites = n.sites().await;
            assert_eq!(sites.len(), 4, "node {i} lost a site");
            for s in &sites {
                assert!(!s.stale, "node {i}: {} went stale", s.site);
            }
            let reps: Vec<&str> = site(&sites, "site01")
                .representatives
                .iter()
                .map(|r| r.id.as_str())
                .collect();
            replaced &= reps.len() == 2 && !reps.contains(&"s01-0001");
        }
        if replaced {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not replaced in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new representative is in the backbone, and the grid converges
    // again: links between sites measured by it.
    let mut in_backbone = 0;
    for n in g.nodes.iter().flatten() {
        in_backbone += n.in_backbone().await as usize;
    }
    assert_eq!(in_backbone, 4 * 2);
    let fewer = |i: usize| {
        let g = &g;
        async move {
            let sites = g.nodes[i].as_ref().unwrap().sites().await;
            let s = site(&sites, "site01");
            let links_up = sites
                .iter()
                .all(|s| s.links.iter().all(|l| l.state == LinkState::Up));
            if s.nodes == 6 && s.up == 5 && links_up && !s.stale {
                Ok(())
            } else {
                Err(format!(
                    "node {i}: site01 {}/{} links up {links_up}",
                    s.up, s.nodes
                ))
            }
        }
    };
    g.wait(Duration::from_secs(30), fewer).await;
    g.shutdown().await;
}

/// 500 nodes in 10 sites of 50 in one process: every node ends with its
/// site's full green graph and every site's current summary. Two flows and
/// one probe a second keep the test's CPU down; the benchmark
/// (`gemba-bench sim`) runs the default 8 flows and 2 probes.
#[tokio::test(start_paused = true)]
async fn five_hundred_nodes_in_ten_sites_converge() {
    let g = Sites::start_with(500, 10, 3, "probe_flows = 2\nprobes_per_interval = 1").await;
    let took = g.wait(Duration::from_secs(60), |i| g.converged(i)).await;
    assert!(took <= Duration::from_secs(20), "{took:?}");
    let mut in_backbone = 0;
    for n in g.nodes.iter().flatten() {
        in_backbone += n.in_backbone().await as usize;
    }
    assert_eq!(in_backbone, 10 * 3);
    g.shutdown().await;
}
