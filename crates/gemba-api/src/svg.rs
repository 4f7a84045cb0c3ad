//! The grid graph drawn as SVG by gemba itself: sites on a circle, each
//! site's nodes on a small circle around its centre, one line per directed
//! edge (offset to its right so both directions stay visible), coloured by
//! state, broken links drawn last so they are never hidden.

use std::collections::BTreeMap;
use std::f64::consts::TAU;
use std::fmt::Write;

use gemba_mesh::{Graph, LinkState, NodeState};

pub const WIDTH: f64 = 720.0;
pub const HEIGHT: f64 = 520.0;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub fn link_colour(state: LinkState) -> &'static str {
    match state {
        LinkState::Up => "#2e9d4f",
        LinkState::Degraded => "#e69b00",
        LinkState::Down => "#d62728",
        LinkState::Unknown => "#9aa0a6",
        LinkState::Stale => "#5f6368",
    }
}

pub fn node_colour(state: NodeState) -> &'static str {
    match state {
        NodeState::Up => "#2e9d4f",
        NodeState::Degraded => "#e69b00",
        NodeState::Down => "#d62728",
        NodeState::Isolated => "#8e44ad",
        NodeState::Unknown => "#9aa0a6",
    }
}

/// A site's label and the circle its nodes sit on.
struct SiteCircle<'a> {
    site: &'a str,
    x: f64,
    y: f64,
    r: f64,
}

fn positions(g: &Graph) -> (BTreeMap<&str, (f64, f64)>, Vec<SiteCircle<'_>>) {
    let mut sites: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for n in &g.nodes {
        sites
            .entry(n.site.as_str())
            .or_default()
            .push(n.id.as_str());
    }
    let (cx, cy) = (WIDTH / 2.0, HEIGHT / 2.0 + 10.0);
    let big = if sites.len() > 1 { HEIGHT * 0.30 } else { 0.0 };
    let mut pos = BTreeMap::new();
    let mut circles = Vec::new();
    for (si, (site, ids)) in sites.iter().enumerate() {
        let a = TAU * si as f64 / sites.len() as f64 - TAU / 4.0;
        let (sx, sy) = (cx + big * a.cos(), cy + big * a.sin());
        let small = if ids.len() > 1 {
            (18.0 * ids.len() as f64 / TAU * 2.2)
                .clamp(34.0, if sites.len() > 1 { 110.0 } else { 200.0 })
        } else {
            0.0
        };
        circles.push(SiteCircle {
            site,
            x: sx,
            y: sy,
            r: small + 26.0,
        });
        for (ni, id) in ids.iter().enumerate() {
            let b = TAU * ni as f64 / ids.len() as f64 - TAU / 4.0 + a;
            pos.insert(*id, (sx + small * b.cos(), sy + small * b.sin()));
        }
    }
    (pos, circles)
}

/// Renders the graph; element classes and data attributes are stable so
/// people and tests can find nodes and edges.
pub fn render(g: &Graph) -> String {
    let (pos, circles) = positions(g);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg id="grid-graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="grid graph">"##
    );
    for SiteCircle { site, x, y, r } in &circles {
        let _ = write!(
            s,
            r##"<g class="site"><circle cx="{x:.1}" cy="{y:.1}" r="{r:.1}" fill="#f3f5f7" stroke="#d0d5da"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="site-label">{}</text></g>"##,
            y - r - 6.0,
            esc(site)
        );
    }
    let mut edges: Vec<_> = g.edges.iter().collect();
    // Healthy first, broken last: the last drawn is on top.
    edges.sort_by_key(|e| match e.state {
        LinkState::Up => 0,
        LinkState::Unknown | LinkState::Stale => 1,
        LinkState::Degraded => 2,
        LinkState::Down => 3,
    });
    for e in edges {
        let (Some(&(x1, y1)), Some(&(x2, y2))) =
            (pos.get(e.source.as_str()), pos.get(e.target.as_str()))
        else {
            continue;
        };
        let (dx, dy) = (x2 - x1, y2 - y1);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let (ox, oy) = (-dy / len * 2.5, dx / len * 2.5);
        // Stop short of the node circles.
        let (tx, ty) = (dx / len * 13.0, dy / len * 13.0);
        let width = if matches!(e.state, LinkState::Down | LinkState::Degraded) {
            3.0
        } else {
            1.4
        };
        let rtt = e
            .rtt_p50_ms
            .map(|r| format!(", p50 {r:.2} ms"))
            .unwrap_or_default();
        let _ = write!(
            s,
            r##"<line class="edge edge-{st}" data-source="{src}" data-target="{dst}" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="{width}" stroke-opacity="0.85"><title>{src} → {dst}: {st}{rtt}</title></line>"##,
            x1 + ox + tx,
            y1 + oy + ty,
            x2 + ox - tx,
            y2 + oy - ty,
            st = e.state.as_str(),
            src = esc(&e.source),
            dst = esc(&e.target),
            c = link_colour(e.state),
        );
    }
    for n in &g.nodes {
        let Some(&(x, y)) = pos.get(n.id.as_str()) else {
            continue;
        };
        let _ = write!(
            s,
            r##"<g class="node node-{st}" data-id="{id}"><circle cx="{x:.1}" cy="{y:.1}" r="11" fill="{c}" stroke="#ffffff" stroke-width="2"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="node-label">{id}</text><title>{id} ({site}): {st}, {obs} observers, {down} see it down</title></g>"##,
            y + 24.0,
            st = n.state.as_str(),
            id = esc(&n.id),
            site = esc(&n.site),
            c = node_colour(n.state),
            obs = n.observers,
            down = n.down_votes,
        );
    }
    s.push_str("</svg>");
    s
}
