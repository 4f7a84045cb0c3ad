//! The HTTP API and console of one node, in process (in-memory network,
//! paused time): JSON shapes, the token rule, rejected requests and what
//! the console page contains.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use gemba_core::config::{Config, ConfigFile, Overrides};
use gemba_mesh::MemNet;

use crate::common::{call, call_with};

const TOKEN: &str = "api-test-token-0123456789";

async fn node(net: &MemNet, i: u8, token: Option<&str>) -> axum::Router {
    let o = Overrides {
        node_id: Some(format!("api{i}")),
        site: Some(if i.is_multiple_of(2) {
            "east".into()
        } else {
            "west".into()
        }),
        mesh_listen: Some(format!("127.0.3.{i}:7946")),
        seeds: if i == 1 {
            vec![]
        } else {
            vec!["127.0.3.1:7946".into()]
        },
        ..Default::default()
    };
    let c = Config::from_file(ConfigFile::default(), &o, "test").unwrap();
    let (mesh, registry) = crate::common::mesh(&c, net.clone()).await;
    gemba_api::router(gemba_api::ApiState::new(
        mesh,
        registry,
        token.map(str::to_string),
    ))
}

#[tokio::test(start_paused = true)]
async fn graph_nodes_and_summary_describe_the_grid() {
    let net = MemNet::with_latency(Duration::from_micros(100));
    let a = node(&net, 1, None).await;
    let _b = node(&net, 2, None).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (status, body) = call(&a, Method::GET, "/api/v1/graph", None).await;
    assert_eq!(status, StatusCode::OK);
    let g: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(g["served_by"], "api1");
    assert_eq!(g["nodes"].as_array().unwrap().len(), 2);
    let edge = &g["edges"][0];
    for field in [
        "source",
        "target",
        "state",
        "rtt_p50_ms",
        "rtt_p99_ms",
        "loss",
        "tcp",
        "since",
    ] {
        assert!(edge.get(field).is_some(), "edge lacks {field}: {edge}");
    }
    assert_eq!(edge["state"], "up");
    let (_, body) = call(&a, Method::GET, "/api/v1/summary", None).await;
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["edge_states"]["up"], 2);
    assert_eq!(s["broken_links"].as_array().unwrap().len(), 0);
    let (_, body) = call(&a, Method::GET, "/api/v1/links", None).await;
    let l: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(l["links"][0]["target"], "api2");
    assert!(l["links"][0]["samples"].as_u64().unwrap() >= 8);
    let (status, body) = call(&a, Method::GET, "/api/v1/links/api2", None).await;
    assert_eq!(status, StatusCode::OK);
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    let probes = h["probes"].as_array().unwrap();
    assert_eq!(
        probes.len() as u64,
        l["links"][0]["samples"].as_u64().unwrap()
    );
    assert!(
        probes.iter().all(|p| p["rtt_ms"].as_f64().is_some()),
        "no probe was lost: {body}"
    );
    let (status, body) = call(&a, Method::GET, "/api/v1/links/nobody", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error"], "api1 does not probe \"nobody\"");
}

#[tokio::test(start_paused = true)]
async fn requests_that_change_state_need_the_token_and_bad_requests_are_counted() {
    let net = MemNet::new();
    let app = node(&net, 1, Some(TOKEN)).await;
    let (status, body) = call(&app, Method::POST, "/api/v1/graph", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Authorization: Bearer"), "{body}");
    let (status, _) = call(
        &app,
        Method::DELETE,
        "/api/v1/graph",
        Some("wrong-token-wrong-token"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // With the right token the request reaches routing, which has no such method.
    let (status, _) = call(&app, Method::POST, "/api/v1/graph", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, body) = call(&app, Method::GET, "/api/v2/everything", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no such endpoint: GET /api/v2/everything"));
    // Reading needs no token.
    let (status, _) = call(&app, Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, metrics) = call(&app, Method::GET, "/metrics", None).await;
    assert!(
        metrics.contains("gemba_http_responses_total{code=\"401\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gemba_http_responses_total{code=\"404\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gemba_mesh_dropped_packets_total{reason=\"replayed\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn console_draws_nodes_by_site_the_matrix_and_no_external_resources() {
    let net = MemNet::with_latency(Duration::from_micros(100));
    let a = node(&net, 1, None).await;
    let _b = node(&net, 2, None).await;
    let _c = node(&net, 3, None).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (status, page) = call(&a, Method::GET, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page.matches("<g class=\"node node-up\"").count(),
        3,
        "{page}"
    );
    assert_eq!(page.matches("<g class=\"site\"").count(), 2);
    assert_eq!(page.matches("class=\"edge edge-up\"").count(), 6);
    assert_eq!(page.matches("<td class=\"cell cell-up\"").count(), 6);
    assert!(page.contains("id=\"no-broken\""));
    // Everything is inline: no scripts, styles or fonts from elsewhere.
    for external in ["src=\"http", "href=\"//", "<link ", "@import", "cdn"] {
        assert!(
            !page.contains(external),
            "console loads something external: {external}"
        );
    }
    let (status, panel) = call(&a, Method::GET, "/console/panel", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(panel.contains("id=\"grid-graph\"") && !panel.contains("<html"));
}

#[tokio::test(start_paused = true)]
async fn a_page_on_another_site_can_neither_change_state_nor_read_through_dns_rebinding() {
    let net = MemNet::new();
    // No token: a node on loopback, where a browser is the attacker's way in.
    let app = node(&net, 1, None).await;
    let post = |headers: &[(&str, &str)]| {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/escalations/1/approve")
            .header(header::HOST, "127.0.0.1:8777");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Body::empty()).unwrap()
    };
    // fetch(url, {method: 'POST', mode: 'no-cors'}) from another site.
    let (status, body) = call_with(
        &app,
        post(&[
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("cross-origin request refused"), "{body}");
    // A browser that sends Sec-Fetch-Site but no Origin.
    let (status, _) = call_with(&app, post(&[("sec-fetch-site", "same-site")])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A form posted from another page: text/plain, urlencoded, multipart.
    for ct in [
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (status, body) = call_with(&app, post(&[("content-type", ct)])).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}: {body}");
    }
    // DNS rebinding: evil.example resolved to 127.0.0.1; reads are refused.
    let rebound = Request::builder()
        .uri("/api/v1/escalations")
        .header(header::HOST, "evil.example:8777")
        .body(Body::empty())
        .unwrap();
    let (status, body) = call_with(&app, rebound).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{body}");
    assert!(body.contains("allowed_hosts"), "{body}");
    // What real clients send still gets through: the CLI (no Origin, no
    // body), the console's own origin, JSON, IPv6 and localhost hosts.
    for headers in [
        &[][..],
        &[
            ("origin", "http://127.0.0.1:8777"),
            ("sec-fetch-site", "same-origin"),
        ][..],
        &[("content-type", "application/json")][..],
        &[("content-type", "application/x-yaml")][..],
    ] {
        let (status, body) = call_with(&app, post(headers)).await;
        assert_ne!(status, StatusCode::FORBIDDEN, "{headers:?}: {body}");
        assert_ne!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{headers:?}");
    }
    for host in ["[::1]:8777", "localhost:8777", "127.0.0.11"] {
        let req = Request::builder()
            .uri("/healthz")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        assert_eq!(call_with(&app, req).await.0, StatusCode::OK, "{host}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_configured_host_name_is_answered() {
    let net = MemNet::new();
    let o = Overrides {
        node_id: Some("named".into()),
        mesh_listen: Some("127.0.3.40:7946".into()),
        ..Default::default()
    };
    let c = Config::from_file(ConfigFile::default(), &o, "test").unwrap();
    let (mesh, registry) = crate::common::mesh(&c, net.clone()).await;
    let app = gemba_api::router(
        gemba_api::ApiState::new(mesh, registry, None)
            .allowing_hosts(vec!["gemba.ops.example".into()]),
    );
    let get = |host: &str| {
        Request::builder()
            .uri("/healthz")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        call_with(&app, get("GEMBA.ops.example")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call_with(&app, get("other.ops.example")).await.0,
        StatusCode::MISDIRECTED_REQUEST
    );
}
