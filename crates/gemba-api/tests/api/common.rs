//! What the API's tests share: a node's mesh on the in-memory network,
//! and requests sent to a router in process.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use gemba_core::Config;
use gemba_mesh::{GridKey, MemNet, MeshNode, MeshSettings};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tower::ServiceExt;

/// The mesh of the node `c` configures, on `net`, with the registry its
/// metrics went into: what every router here is built on.
pub async fn mesh(c: &Config, net: MemNet) -> (Arc<MeshNode>, Registry) {
    let key = GridKey::new(b"api-test-grid-key-0123456789".to_vec()).unwrap();
    let mut registry = Registry::default();
    let mesh = MeshNode::start(
        MeshSettings::from_config(c, key, None),
        Arc::new(net),
        Some(&mut registry),
    )
    .await
    .unwrap();
    (Arc::new(mesh), registry)
}

/// Sends `req`; the status and the body as text.
pub async fn call_with(app: &axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A request without a body, with `bearer` as its token if given.
pub async fn call(
    app: &axum::Router,
    method: Method,
    uri: &str,
    bearer: Option<&str>,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = bearer {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    call_with(app, req.body(Body::empty()).unwrap()).await
}

/// A request with these headers and body; the answer as JSON (a string
/// when it is not JSON).
pub async fn send(
    app: &axum::Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

/// HTTP basic credentials, as Graphite and report processors send them.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
