//! The grid stage over HTTP: the graph every node can draw, its nodes and
//! links, a summary for scripts, one link's full-resolution history, a
//! node's page, and the log lines agents keep.

pub(crate) mod logs;
pub(crate) mod node_page;
pub mod sites;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::respond::error;
use crate::Shared;

/// The grid's routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/graph", get(graph))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/links", get(links))
        .route("/api/v1/summary", get(summary))
        .route("/api/v1/links/{target}", get(link_history))
        .route("/api/v1/logs", get(logs::logs))
        .route("/nodes/{node}", get(node_page::node_page))
        .route("/api/v1/sites", get(sites::sites_api))
        .route("/api/v1/sites/{site}/graph", get(sites::site_graph_api))
        .route("/sites", get(sites::sites_page))
        .route("/sites/{site}", get(sites::site_page))
}

async fn graph(State(s): State<Shared>) -> Json<serde_json::Value> {
    let g = s.mesh.graph().await;
    Json(json!({
        "served_by": s.mesh.id(),
        "nodes": g.nodes,
        "edges": g.edges,
        // Nodes whose packets are dropped as expired (a clock is off).
        "clock_skew": s.mesh.clock_skewed_peers().iter().map(|k| json!({
            "node": k.peer,
            "skew_ms": k.skew_ms,
            "dropped": k.dropped,
        })).collect::<Vec<_>>(),
    }))
}

async fn nodes(State(s): State<Shared>) -> Json<serde_json::Value> {
    let g = s.mesh.graph().await;
    Json(json!({ "nodes": g.nodes }))
}

/// Counts by state, the nodes that are not up and the broken links: what a
/// script or a dashboard needs without the whole graph.
async fn summary(State(s): State<Shared>) -> Json<serde_json::Value> {
    let g = s.mesh.graph().await;
    let node_states = count_by(g.nodes.iter().map(|n| n.state.as_str()));
    let edge_states = count_by(g.edges.iter().map(|e| e.state.as_str()));
    let troubled: Vec<serde_json::Value> = g
        .nodes
        .iter()
        .filter(|n| n.state != gemba_mesh::NodeState::Up)
        .map(|n| json!({ "id": n.id, "state": n.state }))
        .collect();
    // Broken links as the graph has them: state, loss kind, failing
    // flows and the reason in words.
    let broken = g.broken_links();
    Json(json!({
        "served_by": s.mesh.id(),
        "nodes": g.nodes.len(),
        "edges": g.edges.len(),
        "node_states": node_states,
        "edge_states": edge_states,
        "nodes_not_up": troubled,
        "broken_links": broken,
    }))
}

async fn links(State(s): State<Shared>) -> Json<serde_json::Value> {
    let links: Vec<serde_json::Value> = s
        .mesh
        .local_links()
        .into_iter()
        .map(|(target, summary)| {
            let mut v = serde_json::to_value(summary).unwrap_or_default();
            v["source"] = json!(s.mesh.id());
            v["target"] = json!(target);
            v
        })
        .collect();
    Json(json!({ "observer": s.mesh.id(), "links": links }))
}

fn count_by<'a>(keys: impl Iterator<Item = &'a str>) -> std::collections::BTreeMap<&'a str, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for k in keys {
        *counts.entry(k).or_insert(0) += 1;
    }
    counts
}

/// Every probe outcome of one outgoing link in the window, oldest first:
/// the full-resolution history that never travels in gossip.
async fn link_history(State(s): State<Shared>, Path(target): Path<String>) -> Response {
    let Some((summary, history)) = s.mesh.link_history(&target) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("{} does not probe {target:?}", s.mesh.id()),
        );
    };
    Json(json!({ "source": s.mesh.id(), "target": target, "summary": summary, "probes": history }))
        .into_response()
}
