//! `gemba graph --from URL`: a node's view of the grid as text.

use anyhow::{bail, Context};
use gemba_mesh::link::LossKind;
use gemba_mesh::{Graph, LinkState};

fn fetch(base: &str) -> anyhow::Result<String> {
    let url = format!("{}/api/v1/graph", base.trim_end_matches('/'));
    let mut response = ureq::get(&url)
        .call()
        .with_context(|| format!("cannot fetch {url}"))?;
    response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("cannot read the answer of {url}"))
}

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
    let body = fetch(&args.from)?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let value: serde_json::Value =
        serde_json::from_str(&body).context("the node's answer is not JSON")?;
    let Some(served_by) = value
        .get("served_by")
        .and_then(|v| v.as_str())
        .map(str::to_string)
    else {
        bail!("{} did not answer with a gemba graph", args.from);
    };
    let g: Graph =
        serde_json::from_value(value).context("the node's graph has an unexpected shape")?;
    print!("{}", render(&g, &served_by));
    Ok(())
}
