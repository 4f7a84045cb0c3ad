//! The grid at scale: sites as nodes of a graph, each site in short form
//! (its summary, as the backbone carries it), and a site's own grid on
//! drill-down. This node's site is drawn from its own gossip; another
//! site's grid is asked of one of that site's representatives over HTTP,
//! at the address its summary gives.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use gemba_core::graph::{GraphEdge, GraphNode, LinkState, NodeState, SitePair, SiteSummary};
use gemba_mesh::Graph;
use serde_json::json;

use crate::console::shell;
use crate::respond::error;
use crate::svg::{self, esc};
use crate::Shared;

/// How long a site's representative has to answer for its grid.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest graph accepted from another site's node.
const REMOTE_MAX_BYTES: u64 = 32 << 20;

/// Broken links grouped by site pair (between sites, worst first) and
/// counted per site (inside sites): one screen whatever the grid's size.
pub fn broken_by_site_pair(sites: &[SiteSummary]) -> (Vec<SitePair>, Vec<(String, usize)>) {
    let mut pairs: BTreeMap<(String, String), SitePair> = BTreeMap::new();
    for s in sites {
        for l in s.links.iter().filter(|l| l.state != LinkState::Up) {
            let (a, b) = if s.site < l.to {
                (s.site.clone(), l.to.clone())
            } else {
                (l.to.clone(), s.site.clone())
            };
            let p = pairs.entry((a.clone(), b.clone())).or_insert(SitePair {
                a,
                b,
                state: l.state,
                loss_kind: l.loss_kind,
                directions: 0,
                pairs_troubled: 0,
            });
            p.directions += 1;
            p.pairs_troubled += l.pairs_troubled;
            if severity(l.state) > severity(p.state) {
                p.state = l.state;
                p.loss_kind = l.loss_kind;
            }
        }
    }
    let mut between: Vec<SitePair> = pairs.into_values().collect();
    between.sort_by(|x, y| (severity(y.state), &x.a, &x.b).cmp(&(severity(x.state), &y.a, &y.b)));
    let within = sites
        .iter()
        .filter(|s| s.broken_total > 0)
        .map(|s| (s.site.clone(), s.broken_total))
        .collect();
    (between, within)
}

fn severity(s: LinkState) -> u8 {
    match s {
        LinkState::Down => 4,
        LinkState::Degraded => 3,
        LinkState::Stale => 2,
        LinkState::Unknown => 1,
        LinkState::Up => 0,
    }
}

/// `GET /api/v1/sites`: every site's summary as this node knows it, and
/// the broken links grouped by site pair.
pub(crate) async fn sites_api(State(s): State<Shared>) -> Json<serde_json::Value> {
    let sites = s.mesh.sites().await;
    let (between, within) = broken_by_site_pair(&sites);
    Json(json!({
        "served_by": s.mesh.id(),
        "site": s.mesh.settings().site,
        "sites": sites,
        "broken_between_sites": between,
        "broken_within_sites": within.iter().map(|(site, n)| json!({"site": site, "broken": n})).collect::<Vec<_>>(),
    }))
}

/// A site's grid: this node's own, or one asked of the site's
/// representatives. The node that served it comes with it.
async fn site_graph(s: &Shared, site: &str) -> Result<(String, Graph), (StatusCode, String)> {
    if site == s.mesh.settings().site {
        return Ok((s.mesh.id().to_string(), (*s.mesh.graph().await).clone()));
    }
    let sites = s.mesh.sites().await;
    let Some(summary) = sites.into_iter().find(|x| x.site == site) else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no site {site:?} is known to {}", s.mesh.id()),
        ));
    };
    let mut tried = Vec::new();
    for rep in &summary.representatives {
        let Some(url) = graph_url(&rep.addr, rep.http.as_deref()) else {
            continue;
        };
        match fetch_graph(url.clone()).await {
            Ok(g) => return Ok((rep.id.clone(), g)),
            Err(e) => tried.push(format!("{}: {e}", rep.id)),
        }
    }
    Err((
        StatusCode::BAD_GATEWAY,
        if tried.is_empty() {
            format!("no representative of site {site:?} publishes an HTTP address")
        } else {
            format!(
                "no representative of site {site:?} answered: {}",
                tried.join("; ")
            )
        },
    ))
}

/// Where a representative's graph is asked for: only ever its own mesh
/// address's host (an HTTP address elsewhere in a summary is not followed)
/// and the graph's path.
pub fn graph_url(mesh_addr: &str, http: Option<&str>) -> Option<String> {
    let mesh: std::net::SocketAddr = mesh_addr.parse().ok()?;
    let http: std::net::SocketAddr = http?.parse().ok()?;
    let ip = if http.ip().is_unspecified() {
        mesh.ip()
    } else if http.ip() == mesh.ip() {
        http.ip()
    } else {
        return None;
    };
    Some(format!(
        "http://{}/api/v1/graph",
        std::net::SocketAddr::new(ip, http.port())
    ))
}

async fn fetch_graph(url: String) -> Result<Graph, String> {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(REMOTE_TIMEOUT))
            .max_redirects(0)
            .build()
            .into();
        let mut resp = agent.get(&url).call().map_err(|e| e.to_string())?;
        let body = resp
            .body_mut()
            .with_config()
            .limit(REMOTE_MAX_BYTES)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        serde_json::from_slice::<Graph>(&body).map_err(|e| format!("not a graph: {e}"))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `GET /api/v1/sites/{site}/graph`.
pub(crate) async fn site_graph_api(State(s): State<Shared>, Path(site): Path<String>) -> Response {
    if !gemba_core::ids::is_name(&site) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{site:?} is not a site name"),
        );
    }
    match site_graph(&s, &site).await {
        Ok((served_by, g)) => Json(json!({
            "site": site,
            "served_by": served_by,
            "nodes": g.nodes,
            "edges": g.edges,
        }))
        .into_response(),
        Err((code, why)) => error(code, why),
    }
}

/// The sites as a graph the grid's drawing understands: one node per site
/// (its state from its members), one edge per measured site link.
pub fn sites_as_graph(sites: &[SiteSummary]) -> Graph {
    let nodes = sites
        .iter()
        .map(|s| GraphNode {
            id: s.site.clone(),
            site: String::new(),
            state: if s.stale {
                NodeState::Unknown
            } else if s.up == s.nodes {
                NodeState::Up
            } else if s.up * 2 > s.nodes {
                NodeState::Degraded
            } else {
                NodeState::Down
            },
            addr: String::new(),
            http: None,
            live: !s.stale,
            observers: s.nodes,
            down_votes: s.nodes - s.up,
        })
        .collect();
    let edges = sites
        .iter()
        .flat_map(|s| {
            s.links.iter().map(move |l| GraphEdge {
                source: s.site.clone(),
                target: l.to.clone(),
                state: if s.stale { LinkState::Stale } else { l.state },
                rtt_p50_ms: None,
                rtt_p99_ms: None,
                loss: None,
                loss_kind: l.loss_kind,
                flows_probed: 0,
                flows_failing: 0,
                reason: (l.state != LinkState::Up).then(|| {
                    format!(
                        "{} of {} representative pairs not up ({})",
                        l.pairs_troubled,
                        l.pairs,
                        l.loss_kind.as_str()
                    )
                }),
                tcp: gemba_core::graph::TcpPath::Unknown,
                since: None,
            })
        })
        .collect();
    Graph { nodes, edges }
}

/// The sites page: the site graph, every site in a line, and the broken
/// links grouped by site pair.
pub fn render_sites(node: &str, own: &str, sites: &[SiteSummary]) -> String {
    if sites.is_empty() {
        return shell(
            node,
            "Sites",
            r#"<p class="muted">This grid has one level (topology "full"): every node gossips with every node. See <a href="/">the grid</a>.</p>"#,
            None,
        );
    }
    let (between, within) = broken_by_site_pair(sites);
    let nodes: usize = sites.iter().map(|s| s.nodes).sum();
    let up: usize = sites.iter().map(|s| s.up).sum();
    let mut body = format!(
        r#"<p class="muted">{} sites · {nodes} nodes, {up} up · {} site pairs with broken links · this node's site: <a href="/sites/{own}">{own}</a></p>{}"#,
        sites.len(),
        between.len(),
        svg::render(&sites_as_graph(sites)),
        own = esc(own),
    );
    body.push_str(r#"<h2 style="margin-top:1.2em">Broken links between sites</h2>"#);
    if between.is_empty() {
        body.push_str(r#"<p id="no-broken-between" class="muted">None.</p>"#);
    } else {
        body.push_str(r#"<table id="broken-between"><tr><th>sites</th><th>state</th><th>loss</th><th>directions</th><th>representative pairs not up</th></tr>"#);
        for p in &between {
            let _ = write!(
                body,
                r#"<tr class="site-pair" data-a="{a}" data-b="{b}"><td><a href="/sites/{a}">{a}</a> ⇄ <a href="/sites/{b}">{b}</a></td><td class="state state-{st}">{st}</td><td>{kind}</td><td>{d}</td><td>{n}</td></tr>"#,
                a = esc(&p.a),
                b = esc(&p.b),
                st = p.state.as_str(),
                kind = p.loss_kind.as_str(),
                d = p.directions,
                n = p.pairs_troubled,
            );
        }
        body.push_str("</table>");
    }
    body.push_str(r#"<h2 style="margin-top:1.2em">Sites</h2><table id="sites"><tr><th>site</th><th>nodes up</th><th>not up</th><th>broken links inside</th><th>representatives</th><th>summary</th></tr>"#);
    let within: BTreeMap<&str, usize> = within.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    for s in sites {
        let troubled: Vec<String> = s
            .troubled
            .iter()
            .map(|t| format!("{} ({})", esc(&t.id), t.state.as_str()))
            .collect();
        let _ = write!(
            body,
            r#"<tr class="site" data-site="{site}"><td><a href="/sites/{site}">{site}</a></td><td>{up} / {n}</td><td>{troubled}</td><td>{broken}</td><td>{reps}</td><td>{fresh}</td></tr>"#,
            site = esc(&s.site),
            up = s.up,
            n = s.nodes,
            troubled = troubled.join(", "),
            broken = within.get(s.site.as_str()).copied().unwrap_or(0),
            reps = s
                .representatives
                .iter()
                .map(|r| esc(&r.id))
                .collect::<Vec<_>>()
                .join(", "),
            fresh = if s.stale {
                r#"<span class="state state-down">stale</span>"#.to_string()
            } else {
                format!("signed by {}", esc(&s.signer))
            },
        );
    }
    body.push_str("</table>");
    shell(node, "Sites", &body, Some(5))
}

/// `GET /sites`.
pub(crate) async fn sites_page(State(s): State<Shared>) -> Html<String> {
    let sites = s.mesh.sites().await;
    Html(render_sites(s.mesh.id(), &s.mesh.settings().site, &sites))
}

/// `GET /sites/{site}`: this node's own site is the grid page; another
/// site's grid is drawn from what one of its representatives serves.
pub(crate) async fn site_page(State(s): State<Shared>, Path(site): Path<String>) -> Response {
    if !gemba_core::ids::is_name(&site) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{site:?} is not a site name"),
        );
    }
    if site == s.mesh.settings().site {
        return Redirect::to("/").into_response();
    }
    let title = format!("Site {site}");
    match site_graph(&s, &site).await {
        Ok((served_by, g)) => {
            let body = format!(
                r#"<p class="muted">{} nodes · {} links · {} broken · as served by {} (a representative of {}) · <a href="/sites">all sites</a></p>{}<h2 style="margin-top:1.2em">Broken links</h2>{}"#,
                g.nodes.len(),
                g.edges.len(),
                g.broken_links().len(),
                esc(&served_by),
                esc(&site),
                svg::render(&g),
                crate::console::render_broken(&g),
            );
            Html(shell(s.mesh.id(), &title, &body, Some(5))).into_response()
        }
        Err((code, why)) => (
            code,
            Html(shell(
                s.mesh.id(),
                &title,
                &format!(
                    r#"<p class="state state-down">{}</p><p><a href="/sites">all sites</a></p>"#,
                    esc(&why)
                ),
                None,
            )),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemba_core::graph::{LossKind, SiteLink};

    fn site(name: &str, links: &[(&str, LinkState, LossKind, usize)]) -> SiteSummary {
        SiteSummary {
            site: name.into(),
            nodes: 10,
            up: 10,
            links: links
                .iter()
                .map(|(to, state, kind, troubled)| SiteLink {
                    to: to.to_string(),
                    state: *state,
                    loss_kind: *kind,
                    pairs: 9,
                    pairs_troubled: *troubled,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn broken_links_are_one_line_per_site_pair_worst_first() {
        use LinkState::*;
        let sites = vec![
            site(
                "ams",
                &[
                    ("fra", Down, LossKind::Total, 9),
                    ("lon", Degraded, LossKind::Path, 3),
                ],
            ),
            site(
                "fra",
                &[
                    ("ams", Down, LossKind::Total, 9),
                    ("lon", Up, LossKind::None, 0),
                ],
            ),
            site(
                "lon",
                &[
                    ("ams", Up, LossKind::None, 0),
                    ("fra", Up, LossKind::None, 0),
                ],
            ),
        ];
        let (between, _) = broken_by_site_pair(&sites);
        assert_eq!(
            between,
            vec![
                SitePair {
                    a: "ams".into(),
                    b: "fra".into(),
                    state: Down,
                    loss_kind: LossKind::Total,
                    directions: 2,
                    pairs_troubled: 18,
                },
                SitePair {
                    a: "ams".into(),
                    b: "lon".into(),
                    state: Degraded,
                    loss_kind: LossKind::Path,
                    directions: 1,
                    pairs_troubled: 3,
                },
            ]
        );
        let page = render_sites("ams-1", "ams", &sites);
        assert_eq!(
            page.matches(r#"<tr class="site-pair""#).count(),
            2,
            "{page}"
        );
    }

    #[test]
    fn another_sites_grid_is_asked_only_of_its_representatives_own_host() {
        assert_eq!(
            graph_url("10.1.0.5:7946", Some("10.1.0.5:8080")).as_deref(),
            Some("http://10.1.0.5:8080/api/v1/graph")
        );
        assert_eq!(
            graph_url("10.1.0.5:7946", Some("0.0.0.0:8080")).as_deref(),
            Some("http://10.1.0.5:8080/api/v1/graph")
        );
        assert_eq!(graph_url("10.1.0.5:7946", Some("169.254.169.254:80")), None);
        assert_eq!(graph_url("10.1.0.5:7946", None), None);
        assert_eq!(graph_url("10.1.0.5:7946", Some("http://x/")), None);
    }
}
