//! `console`: how long one console page takes to render for a grid of N
//! nodes with every pair probed (N·(N−1) edges): the page every browser
//! polls, with no token needed.

use std::time::Instant;

use gemba_core::graph::{Graph, GraphEdge, GraphNode, LinkState, LossKind, NodeState, TcpPath};

fn grid(n: usize) -> Graph {
    let nodes: Vec<GraphNode> = (0..n)
        .map(|i| GraphNode {
            id: format!("node-{i:04}"),
            site: format!("site-{}", i % 10),
            state: NodeState::Up,
            addr: format!("10.0.{}.{}", i / 250, i % 250),
            http: None,
            live: true,
            observers: n - 1,
            down_votes: 0,
        })
        .collect();
    let mut edges = Vec::with_capacity(n * n);
    for s in &nodes {
        for t in &nodes {
            if s.id != t.id {
                edges.push(GraphEdge {
                    source: s.id.clone(),
                    target: t.id.clone(),
                    state: LinkState::Up,
                    rtt_p50_ms: Some(0.4),
                    rtt_p99_ms: Some(1.1),
                    loss: Some(0.0),
                    loss_kind: LossKind::None,
                    flows_probed: 8,
                    flows_failing: 0,
                    reason: None,
                    tcp: TcpPath::Connects,
                    since: Some(1_800_000_000),
                });
            }
        }
    }
    Graph { nodes, edges }
}

pub fn run(sizes: &[usize], rounds: usize) -> anyhow::Result<()> {
    println!("| nodes | edges | page bytes | render ms (median of {rounds}) |");
    println!("|---:|---:|---:|---:|");
    for &n in sizes {
        let g = grid(n);
        let mut times = Vec::with_capacity(rounds);
        let mut bytes = 0;
        for _ in 0..rounds.max(1) {
            let t = Instant::now();
            let page = gemba_api::render_page("node-0000", "site-0", &g, &[]);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            bytes = page.len();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {n} | {} | {bytes} | {:.1} |",
            g.edges.len(),
            times[times.len() / 2]
        );
    }
    Ok(())
}
