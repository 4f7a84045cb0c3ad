//! `gemba graph --from URL`: a node's view of the grid as text.

use gemba_mesh::link::LossKind;
use gemba_mesh::{Graph, LinkState};

/// Formats a graph for a terminal: nodes by site, then broken links.
pub fn render(g: &Graph, served_by: &str) -> String {
    let mut out = format!(
        "grid as seen by {served_by}: {} nodes, {} links\n\n",
        g.nodes.len(),
        g.edges.len()
    );
    out.push_str(&format!(
        "{:<20} {:<12} {:<10} {:>9}\n",
        "NODE", "SITE", "STATE", "DOWN/OBS"
    ));
    for n in &g.nodes {
        out.push_str(&format!(
            "{:<20} {:<12} {:<10} {:>9}\n",
            n.id,
            n.site,
            n.state.as_str(),
            format!("{}/{}", n.down_votes, n.observers)
        ));
    }
    let broken = g.broken_links();
    if broken.is_empty() {
        out.push_str("\nno broken links\n");
    } else {
        out.push_str(&format!("\n{} broken links:\n", broken.len()));
        for e in broken {
            let loss = match (e.loss_kind, e.loss) {
                (LossKind::Path, _) | (_, None) => String::new(),
                (_, Some(l)) => format!("  loss <={:.0}%", l * 100.0),
            };
            out.push_str(&format!(
                "  {}{}  since {}\n",
                e.describe(),
                loss,
                e.since.map(|s| s.to_string()).unwrap_or_else(|| "?".into())
            ));
        }
    }
    let unknown = g
        .edges
        .iter()
        .filter(|e| e.state == LinkState::Unknown)
        .count();
    if unknown > 0 {
        out.push_str(&format!("{unknown} links not measured yet\n"));
    }
    out
}

/// Formats the sites of a `sites` grid for a terminal: one line per site,
/// then broken links between sites, one line per site pair.
pub fn render_sites(a: &SitesAnswer) -> String {
    if a.sites.is_empty() {
        return format!(
            "{} runs topology \"full\": the grid has no sites level (see gemba graph)\n",
            a.served_by
        );
    }
    let nodes: usize = a.sites.iter().map(|s| s.nodes).sum();
    let up: usize = a.sites.iter().map(|s| s.up).sum();
    let mut out = format!(
        "sites as seen by {} (site {}): {} sites, {nodes} nodes, {up} up\n\n{:<16} {:>9} {:>8} {:>11}  {}\n",
        a.served_by,
        a.site,
        a.sites.len(),
        "SITE",
        "UP/NODES",
        "BROKEN",
        "LINKS DOWN",
        "NOT UP"
    );
    for s in &a.sites {
        let links_troubled = s.links.iter().filter(|l| l.state != LinkState::Up).count();
        let troubled: Vec<String> = s
            .troubled
            .iter()
            .map(|t| format!("{} {}", t.id, t.state.as_str()))
            .collect();
        out.push_str(&format!(
            "{:<16} {:>9} {:>8} {:>11}  {}{}\n",
            s.site,
            format!("{}/{}", s.up, s.nodes),
            s.broken_total,
            links_troubled,
            troubled.join(", "),
            if s.stale { "  (stale)" } else { "" }
        ));
    }
    if a.broken_between_sites.is_empty() {
        out.push_str("\nno broken links between sites\n");
    } else {
        out.push_str(&format!(
            "\n{} site pairs with broken links:\n",
            a.broken_between_sites.len()
        ));
        for p in &a.broken_between_sites {
            out.push_str(&format!(
                "  {} <-> {}  {} ({} loss), {} direction(s), {} representative pair(s) not up\n",
                p.a,
                p.b,
                p.state.as_str(),
                p.loss_kind.as_str(),
                p.directions,
                p.pairs_troubled
            ));
        }
    }
    out
}

/// `GET /api/v1/sites`.
#[derive(Debug, serde::Deserialize)]
pub struct SitesAnswer {
    pub served_by: String,
    pub site: String,
    pub sites: Vec<gemba_core::graph::SiteSummary>,
    pub broken_between_sites: Vec<gemba_core::graph::SitePair>,
}

pub fn run(args: &crate::cli::GraphArgs) -> anyhow::Result<()> {
    let c = crate::client::Client::new(&args.from, None);
    let path = match (&args.site, args.sites) {
        (Some(site), _) => {
            anyhow::ensure!(
                gemba_core::ids::is_name(site),
                "{site:?} is not a site name"
            );
            format!("/api/v1/sites/{site}/graph")
        }
        (None, true) => "/api/v1/sites".to_string(),
        (None, false) => "/api/v1/graph".to_string(),
    };
    if args.json {
        println!("{}", c.get_raw(&path)?);
        return Ok(());
    }
    if args.sites {
        let a: SitesAnswer = c.get(&path)?;
        print!("{}", render_sites(&a));
        return Ok(());
    }
    let a: crate::client::GraphAnswer = c.get(&path)?;
    print!("{}", render(&a.graph, &a.served_by));
    Ok(())
}
