//! A grid of two sites, in process but served over real loopback HTTP: a
//! node lists every site, and shows another site's grid by asking that
//! site's representative.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use gemba_core::config::Overrides;
use gemba_mesh::{GridKey, MemNet, MeshNode, MeshSettings};
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::common::call;

/// Node `i` of sites `site-a` (even) and `site-b` (odd), one representative
/// each; its mesh address and its HTTP listener share the host 127.0.6.i.
async fn node(net: &MemNet, i: u8) -> (axum::Router, Arc<MeshNode>) {
    let site = if i.is_multiple_of(2) {
        "site-a"
    } else {
        "site-b"
    };
    let mesh_addr = format!("127.0.6.{i}:7946");
    let listener = tokio::net::TcpListener::bind(format!("127.0.6.{i}:0"))
        .await
        .unwrap();
    let http = listener.local_addr().unwrap().to_string();
    let text = "[mesh]\ntopology = \"sites\"\nrepresentatives = 1\nbackbone_seeds = [\"127.0.6.1:7946\", \"127.0.6.2:7946\"]\n";
    let o = Overrides {
        node_id: Some(format!("{site}-{i}")),
        site: Some(site.into()),
        mesh_listen: Some(mesh_addr),
        seeds: if i <= 2 {
            vec![]
        } else {
            vec![format!("127.0.6.{}:7946", 2 - i % 2)]
        },
        ..Default::default()
    };
    let c = gemba_testkit::config_with(text, &o);
    let key = GridKey::new(b"sites-api-grid-key-0123456789ab".to_vec()).unwrap();
    let mesh = Arc::new(
        MeshNode::start(
            MeshSettings::from_config(&c, key, Some(http)),
            Arc::new(net.clone()),
            None,
        )
        .await
        .unwrap(),
    );
    let state = gemba_api::ApiState::new(mesh.clone(), Registry::default(), None);
    let app = gemba_api::router(state.clone());
    tokio::spawn(gemba_api::serve(
        listener,
        state,
        gemba_api::serve::Limits::default(),
        std::future::pending(),
    ));
    (app, mesh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lists_every_site_and_shows_another_sites_grid() {
    let net = MemNet::new();
    let mut nodes = Vec::new();
    for i in 1..=4 {
        nodes.push(node(&net, i).await);
    }
    let (a4, _) = &nodes[3];
    // Real time: the other site's grid is fetched over real HTTP.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let sites = loop {
        let (status, body) = call(a4, Method::GET, "/api/v1/sites", None).await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        let ready = v["sites"].as_array().is_some_and(|s| {
            s.len() == 2
                && s.iter().all(|x| {
                    x["nodes"] == 2
                        && x["up"] == 2
                        && x["stale"] == false
                        && x["links"][0]["state"] == "up"
                })
        });
        if ready {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sites not ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sites["served_by"], "site-a-4");
    assert_eq!(sites["broken_between_sites"], serde_json::json!([]));
    // site-b's grid, as its representative serves it.
    let (status, body) = call(a4, Method::GET, "/api/v1/sites/site-b/graph", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let g: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(g["served_by"], "site-b-1");
    let mut ids: Vec<&str> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["site-b-1", "site-b-3"]);
    // The console: the sites page, and the other site's grid drawn.
    let (status, page) = call(a4, Method::GET, "/sites", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(r#"<tr class="site" data-site="site-b">"#),
        "{page}"
    );
    assert!(page.contains("<svg"), "{page}");
    let (status, page) = call(a4, Method::GET, "/sites/site-b", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("as served by site-b-1"), "{page}");
    // This node's own site is the grid page; names are checked; an
    // unknown site is named.
    let (status, _) = call(a4, Method::GET, "/sites/site-a", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, body) = call(a4, Method::GET, "/api/v1/sites/nowhere/graph", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no site \\\"nowhere\\\""), "{body}");
    let (status, _) = call(a4, Method::GET, "/api/v1/sites/a..b%20c/graph", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for (_, m) in nodes {
        m.shutdown().await;
    }
}
