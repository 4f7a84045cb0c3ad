//! The console: one page per node, rendered here. The graph (SVG), a
//! latency/loss matrix as a heatmap, and the broken links with since-when.
//! A few lines of JavaScript re-fetch the panel every two seconds; nothing
//! is loaded from anywhere else.

use gemba_mesh::endpoint::skew::Skewed;
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use gemba_mesh::link::LossKind;
use gemba_mesh::{Graph, LinkState};

use crate::svg::{self, esc, link_colour};

pub(crate) const STYLE: &str = r##"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;background:#fff}
header{display:flex;gap:1.5em;align-items:baseline;padding:.7em 1.2em;background:#1f2328;color:#fff}
header h1{font-size:1.2em;margin:0}header span{opacity:.8}
main{padding:1em 1.2em;display:grid;grid-template-columns:minmax(420px,720px) 1fr;gap:1.5em}
section h2{font-size:1em;margin:.2em 0 .6em;text-transform:uppercase;letter-spacing:.05em;color:#57606a}
svg text{font-size:11px;fill:#1f2328}svg .site-label{font-weight:600;fill:#57606a}
table{border-collapse:collapse}#matrix td,#matrix th{border:1px solid #fff;padding:2px 5px;text-align:center;font-size:12px;min-width:2.6em}
#matrix th{background:#f3f5f7;font-weight:600}#matrix td{color:#fff}
#broken-links td,#broken-links th{padding:3px 8px;border-bottom:1px solid #eaeef2;text-align:left}
.state{font-weight:600}.state-down{color:#d62728}.state-degraded{color:#b87a00}
.legend span{display:inline-block;margin-right:1em}.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-1px;border-radius:2px}
.muted{color:#57606a}
header nav a{color:#fff;margin-right:1em}header #who{margin-left:auto}header #who a{color:#fff}
main.page{display:block}.page{padding:1em 1.2em}.nw{white-space:nowrap}table.problems{width:100%;max-width:90em}.page table td,.page table th{padding:3px 8px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
.st-OK,.st-passing,.ph-resolved{color:#1a7f37;font-weight:600}.st-WARNING,.ph-quiescing,.ph-verifying,.ph-backoff,.ph-awaiting-approval{color:#b87a00;font-weight:600}
.st-CRITICAL,.st-failing,.ph-held{color:#d62728;font-weight:600}.st-UNKNOWN,.st-pending{color:#57606a;font-weight:600}.ph-running{color:#0969da;font-weight:600}
pre{background:#f6f8fa;padding:.5em;max-height:16em;overflow:auto;white-space:pre-wrap;margin:.2em 0}
.flap{background:#fff1d6;padding:0 .4em;border-radius:3px}
.charts{display:flex;flex-wrap:wrap;gap:.5em}pre.log{max-height:24em;font-size:12px}
"##;

/// The frame of every console page but the grid's: header, navigation and
/// one titled section. `refresh` reloads the page every so many seconds.
pub(crate) fn shell(node: &str, title: &str, body: &str, refresh: Option<u32>) -> String {
    let refresh = refresh
        .map(|s| format!(r#"<meta http-equiv="refresh" content="{s}">"#))
        .unwrap_or_default();
    format!(
        r##"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">{refresh}<title>gemba · {title} · {node}</title><style>{STYLE}</style></head><body><header><h1>gemba</h1><span>node {node}</span>{NAV}</header><main class="page"><section><h2>{title}</h2>{body}</section></main></body></html>"##,
        node = esc(node),
        title = esc(title),
    )
}

/// The console's script, served as `/assets/console.js`: the pages carry
/// no inline script, so the Content-Security-Policy allows only this
/// node's own files.
pub(crate) const SCRIPT: &str = r##"
(function(){
  async function refresh(){
    try{
      const r=await fetch('/console/panel',{cache:'no-store'});
      if(r.ok){document.getElementById('panel').innerHTML=await r.text();
        document.getElementById('status').textContent='updated '+new Date().toLocaleTimeString();}
      else{document.getElementById('status').textContent='refresh failed: HTTP '+r.status;}
    }catch(e){document.getElementById('status').textContent='refresh failed: node unreachable';}
  }
  setInterval(refresh,2000);
})();
"##;

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn ago(since: u64, now: u64) -> String {
    let s = now.saturating_sub(since);
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

pub(crate) fn utc_time(unix: u64) -> String {
    let d = unix % 86_400;
    format!("{:02}:{:02}:{:02} UTC", d / 3600, d % 3600 / 60, d % 60)
}

fn heat(state: LinkState, rtt_ms: Option<f64>) -> String {
    match (state, rtt_ms) {
        (LinkState::Up, Some(ms)) => {
            // Green for fast links, towards yellow as RTT grows (log scale).
            let hue = 130.0 - (ms.max(0.01).log2() + 6.0).clamp(0.0, 14.0) * 5.0;
            format!("hsl({hue:.0},55%,38%)")
        }
        _ => link_colour(state).to_string(),
    }
}

/// The latency/loss matrix: rows are observers, columns targets.
pub fn render_matrix(g: &Graph) -> String {
    let mut s = String::from(r##"<table id="matrix"><thead><tr><th class="muted">from \ to</th>"##);
    for n in &g.nodes {
        let _ = write!(s, r##"<th scope="col">{}</th>"##, esc(&n.id));
    }
    s.push_str("</tr></thead><tbody>");
    // One index per graph: a scan per cell is O(N^4) at N nodes.
    let edges = g.edge_index();
    for src in &g.nodes {
        let _ = write!(
            s,
            r##"<tr data-source="{0}"><th scope="row"><a href="/nodes/{0}">{0}</a></th>"##,
            esc(&src.id)
        );
        for dst in &g.nodes {
            if src.id == dst.id {
                s.push_str(r##"<td class="self" style="background:#eaeef2;color:#57606a">—</td>"##);
                continue;
            }
            match edges.get(&(src.id.as_str(), dst.id.as_str())) {
                Some(e) => {
                    let text = match e.state {
                        LinkState::Down => "✕".to_string(),
                        LinkState::Unknown => "?".to_string(),
                        LinkState::Stale => "…".to_string(),
                        _ => e
                            .rtt_p50_ms
                            .map(|r| format!("{r:.2}"))
                            .unwrap_or_else(|| "?".into()),
                    };
                    let loss = match (e.loss_kind, e.loss) {
                        (LossKind::Path, _) => String::new(),
                        (_, Some(l)) => format!(", loss ≤{:.0}%", l * 100.0),
                        _ => String::new(),
                    };
                    let why = e
                        .reason
                        .as_deref()
                        .map(|r| format!(": {}", esc(r)))
                        .unwrap_or_default();
                    // A dead path shows its share of failing flows in the cell.
                    let text = match e.loss_kind {
                        LossKind::Path if e.state == LinkState::Degraded => {
                            format!("{}/{}", e.flows_failing, e.flows_probed)
                        }
                        _ => text,
                    };
                    let _ = write!(
                        s,
                        r##"<td class="cell cell-{st}" style="background:{bg}" title="{src} → {dst}: {st}{why}{rtt}{loss}">{text}</td>"##,
                        st = e.state.as_str(),
                        bg = heat(e.state, e.rtt_p50_ms),
                        src = esc(&src.id),
                        dst = esc(&dst.id),
                        rtt = e
                            .rtt_p99_ms
                            .map(|r| format!(", p99 {r:.2} ms"))
                            .unwrap_or_default(),
                    );
                }
                // Not probed under this topology.
                None => s.push_str(
                    r##"<td class="unprobed" style="background:#fff;color:#9aa0a6">·</td>"##,
                ),
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// Links that are down or degraded, with since-when.
pub fn render_broken(g: &Graph) -> String {
    let broken = g.broken_links();
    if broken.is_empty() {
        return r##"<p id="no-broken" class="muted">No broken links.</p><table id="broken-links"><tbody></tbody></table>"##.into();
    }
    let now = now_unix();
    let mut s = String::from(
        r##"<table id="broken-links"><thead><tr><th>link</th><th>state</th><th>why</th><th>loss</th><th>tcp</th><th>since</th></tr></thead><tbody>"##,
    );
    for e in broken {
        let since = e
            .since
            .map(|t| format!("{} ({})", utc_time(t), ago(t, now)))
            .unwrap_or_default();
        let _ = write!(
            s,
            r##"<tr class="broken-link" data-source="{src}" data-target="{dst}" data-loss-kind="{kind}"><td>{src} → {dst}</td><td class="state state-{st}">{st}</td><td class="reason">{why}</td><td>{loss}</td><td>{tcp}</td><td>{since}</td></tr>"##,
            src = esc(&e.source),
            dst = esc(&e.target),
            st = e.state.as_str(),
            kind = e.loss_kind.as_str(),
            why = esc(e.reason.as_deref().unwrap_or("")),
            loss = e
                .loss
                .map(|l| format!("≤{:.0}%", l * 100.0))
                .unwrap_or_default(),
            tcp = serde_json::to_value(e.tcp)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        );
    }
    s.push_str("</tbody></table>");
    s
}

fn legend() -> String {
    let mut s = String::from(r##"<p class="legend">"##);
    for st in LinkState::ALL {
        let _ = write!(
            s,
            r##"<span><i style="background:{}"></i>{}</span>"##,
            link_colour(st),
            st.as_str()
        );
    }
    s.push_str("</p>");
    s
}

/// The part of the page that refreshes.
pub fn render_panel(served_by: &str, g: &Graph, skewed: &[Skewed]) -> String {
    let down = g
        .nodes
        .iter()
        .filter(|n| n.state == gemba_mesh::NodeState::Down)
        .count();
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<main><section><h2>Grid</h2><p class="muted">{} nodes in {} sites · {} links · {} broken · {} nodes down · served by {}</p>{}{}</section>"##,
        g.nodes.len(),
        g.nodes
            .iter()
            .map(|n| n.site.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        g.edges.len(),
        g.broken_links().len(),
        down,
        esc(served_by),
        svg::render(g),
        legend(),
    );
    s.push_str(&render_skewed(skewed));
    let _ = write!(
        s,
        r##"<section><h2>Broken links</h2>{}<h2 style="margin-top:1.2em">Latency matrix (p50 ms)</h2>{}<h2 style="margin-top:1.2em">Consoles</h2><ul id="consoles">"##,
        render_broken(g),
        render_matrix(g),
    );
    for n in &g.nodes {
        match &n.http {
            Some(h) => {
                let _ = write!(
                    s,
                    r##"<li><a href="/nodes/{1}">{1}</a> <span class="muted">console <a href="http://{0}/">{0}</a></span></li>"##,
                    esc(h),
                    esc(&n.id)
                );
            }
            None => {
                let _ = write!(s, r#"<li><a href="/nodes/{0}">{0}</a></li>"#, esc(&n.id));
            }
        }
    }
    s.push_str("</ul></section></main>");
    s
}

/// Links between the console's pages.
pub(crate) const NAV: &str = r#"<nav><a href="/">grid</a><a href="/sites">sites</a><a href="/checks">checks</a><a href="/escalations">escalations</a><a href="/plan">plan</a><a href="/market">market</a><a href="/charts">charts</a><a href="/events">events</a><a href="/incidents">incidents</a></nav>"#;

/// Peers heard from whose packets are dropped as expired: shown as "clock
/// skew", not left to look like nodes that are simply missing.
fn render_skewed(skewed: &[Skewed]) -> String {
    if skewed.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        r#"<h2 style="margin-top:1.2em">Clock skew</h2><p class="muted">These nodes hold the grid key, but their packets are stamped too far from this node's clock and are dropped as expired: they are not in the graph until one of the two clocks is fixed (NTP).</p><table id="clock-skew"><tr><th>node</th><th>state</th><th>dropped</th></tr>"#,
    );
    for k in skewed {
        let _ = write!(
            s,
            r#"<tr class="skewed"><td>{}</td><td class="state state-down">clock skew: {} s {}</td><td>{}</td></tr>"#,
            esc(&k.peer),
            (k.skew_ms.unsigned_abs() + 500) / 1000,
            if k.skew_ms > 0 { "ahead" } else { "behind" },
            k.dropped
        );
    }
    s.push_str("</table>");
    s
}

/// The whole console page.
pub fn render_page(node: &str, site: &str, g: &Graph, skewed: &[Skewed]) -> String {
    format!(
        r##"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>gemba · {node}</title><style>{STYLE}</style></head><body><header><h1>gemba</h1><span>node {node} · site {site}</span>{NAV}<span id="status" class="muted"></span></header><div id="panel">{panel}</div><script src="/assets/console.js"></script></body></html>"##,
        node = esc(node),
        site = esc(site),
        panel = render_panel(node, g, skewed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemba_mesh::{GraphNode, NodeState};

    fn node(id: &str) -> GraphNode {
        GraphNode {
            id: id.into(),
            site: "s".into(),
            state: NodeState::Up,
            addr: "127.0.0.1:7946".into(),
            http: None,
            live: true,
            observers: 1,
            down_votes: 0,
        }
    }

    #[test]
    fn a_dead_path_reads_as_failing_flows_in_the_matrix_and_the_broken_links() {
        let g = Graph {
            nodes: vec![node("ams-1"), node("nyc-1")],
            edges: vec![gemba_mesh::graph::edge_from_gossip(
                "ams-1",
                "nyc-1",
                Some(&"g5,9,5pp4/8@1".parse().unwrap()),
                true,
            )],
        };
        let broken = render_broken(&g);
        assert!(broken.contains(r#"data-loss-kind="path""#), "{broken}");
        assert!(
            broken.contains("<td class=\"reason\">4 of 8 flows fail (a path is black-holed)</td>"),
            "{broken}"
        );
        let panel = render_panel("ams-1", &g, &[]);
        assert!(
            panel.contains(
                "title=\"ams-1 → nyc-1: degraded: 4 of 8 flows fail (a path is black-holed)"
            ),
            "{panel}"
        );
        assert!(panel.contains(">4/8</td>"), "{panel}");
    }

    #[test]
    fn a_node_whose_packets_are_expired_shows_as_clock_skew() {
        let g = Graph {
            nodes: vec![node("ams-1")],
            edges: vec![],
        };
        let mut t = gemba_mesh::endpoint::skew::SkewTable::default();
        t.note("nyc-1", 1_000_000 + 300_000, 1_000_000);
        let panel = render_panel("ams-1", &g, &t.list(1_000_000));
        assert!(panel.contains(r#"<table id="clock-skew">"#), "{panel}");
        assert!(
            panel.contains("<td>nyc-1</td><td class=\"state state-down\">clock skew: 300 s ahead</td><td>1</td>"),
            "{panel}"
        );
        assert!(!render_panel("ams-1", &g, &[]).contains("clock-skew"));
    }
}
