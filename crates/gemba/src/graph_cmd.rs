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

pub fn run(args: &crate::cli::GraphArgs) -> anyhow::Result<()> {
    let c = crate::client::Client::new(&args.from, None);
    if args.json {
        println!("{}", c.get_raw("/api/v1/graph")?);
        return Ok(());
    }
    let a: crate::client::GraphAnswer = c.get("/api/v1/graph")?;
    print!("{}", render(&a.graph, &a.served_by));
    Ok(())
}
