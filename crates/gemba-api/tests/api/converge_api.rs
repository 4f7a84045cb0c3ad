//! Checks, the plan and escalations over HTTP: an escalation that waits for
//! approval, the token rule on approve and ack, the journal and the
//! console pages, with a real escalator service on an in-memory store.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use gemba_checks::{CheckResult, HardState, Status};
use gemba_core::config::{Config, ConfigFile, Overrides};
use gemba_escalator::{Directory, ServiceConfig};
use gemba_mesh::MemNet;
use gemba_store::SqliteStore;
use tokio::sync::{mpsc, watch};

const TOKEN: &str = "converge-test-token-0123456789";

const POLICY: &str = r#"
[escalator]
quiet_period = "0s"
[[level]]
level = 1
name = "restart"
run = ["/bin/echo", "restarting {node} at level {level}"]
timeout = "5s"
quiesce = "0s"
approve = true
[[check]]
name = "web"
kind = "tcp"
port = 80
level = 1
"#;

async fn server() -> (axum::Router, mpsc::Sender<CheckResult>) {
    let o = Overrides {
        node_id: Some("srv".into()),
        mesh_listen: Some("127.0.3.101:7946".into()),
        ..Default::default()
    };
    let c = gemba_testkit::config_with(POLICY, &o);
    let (mesh, mut registry) = crate::common::mesh(&c, MemNet::new()).await;
    let (_dir_tx, dir_rx) = watch::channel(Directory::new());
    std::mem::forget(_dir_tx);
    let (handle, results, _task) = gemba_escalator::spawn(
        ServiceConfig {
            policy: Arc::new(c.policy.clone()),
            store: Arc::new(SqliteStore::in_memory().unwrap()),
            holder: "srv".into(),
            directory: dir_rx,
            clock: gemba_checks::Clock::new(),
            tick: Duration::from_millis(20),
            attach: None,
        },
        Some(&mut registry),
    );
    let app = gemba_api::router(gemba_api::ApiState::with_escalator(
        mesh,
        registry,
        Some(TOKEN.into()),
        Some(handle),
    ));
    (app, results)
}

/// A request with the token when `auth`.
async fn call(app: &axum::Router, method: Method, uri: &str, auth: bool) -> (StatusCode, String) {
    crate::common::call(app, method, uri, auth.then_some(TOKEN)).await
}

fn failing(at_ms: u64) -> CheckResult {
    CheckResult {
        check: "web".into(),
        scope: "node:web-1".parse().unwrap(),
        kind: "tcp".into(),
        status: Status::Critical,
        state: HardState::Failing,
        since_ms: at_ms,
        at_ms,
        interval_ms: 60_000,
        duration_ms: 2,
        output: "TCP CRITICAL - connection refused".into(),
        perf: vec![],
        flapping: false,
        flap_percent: 0.0,
        flap_changes: 0,
        trusted: true,
        level: Some(1),
        tiers: vec![],
        observer: "web-1".into(),
    }
}

async fn until(app: &axum::Router, uri: &str, want: &str) -> String {
    for _ in 0..200 {
        let (_, body) = call(app, Method::GET, uri, true).await;
        if body.contains(want) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{uri} never contained {want:?}");
}

#[tokio::test]
async fn an_escalation_waits_for_approval_through_the_api() {
    let (app, results) = server().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    results.send(failing(now)).await.unwrap();

    let checks = until(&app, "/api/v1/checks", "TCP CRITICAL").await;
    let v: serde_json::Value = serde_json::from_str(&checks).unwrap();
    assert_eq!(v["checks"][0]["state"], "failing");
    // This node has a token: program output is for those who send it.
    let (_, checks) = call(&app, Method::GET, "/api/v1/checks", false).await;
    let v: serde_json::Value = serde_json::from_str(&checks).unwrap();
    assert_eq!(v["checks"][0]["state"], "failing");
    assert!(
        v["checks"][0]["output"]
            .as_str()
            .unwrap()
            .starts_with("(output hidden"),
        "{v}"
    );
    let plan = until(&app, "/api/v1/plan", "awaiting-approval").await;
    let v: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(v["plan"]["scopes"][0]["scope"], "node:web-1");
    assert_eq!(v["plan"]["scopes"][0]["chain"][0], "1:restart");

    // Approving changes state: no token, no approval.
    let (code, _) = call(&app, Method::POST, "/api/v1/escalations/1/approve", false).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, body) = call(&app, Method::POST, "/api/v1/escalations/1/approve", true).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let esc = until(&app, "/api/v1/escalations/1", "restarting web-1 at level 1").await;
    let v: serde_json::Value = serde_json::from_str(&esc).unwrap();
    let kinds: Vec<&str> = v["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        &kinds[..5],
        ["decision", "approval", "approved", "step-start", "step-end"],
        "{v:#}"
    );
    assert!(v["journal"][2]["text"]
        .as_str()
        .unwrap()
        .contains("approved by api"));

    // Wrong requests say what is wrong.
    let (code, body) = call(&app, Method::POST, "/api/v1/escalations/1/approve", true).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(body.contains("not awaiting approval"), "{body}");
    let (code, body) = call(&app, Method::POST, "/api/v1/scopes/node:web-1/ack", true).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(body.contains("scope node:web-1 is not held"), "{body}");
    let (code, body) = call(&app, Method::POST, "/api/v1/scopes/host:x/ack", true).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("global, tier:NAME or node:NAME"), "{body}");
    let (code, body) = call(&app, Method::GET, "/api/v1/escalations/x", false).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, _) = call(&app, Method::GET, "/api/v1/escalations/99", false).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // Console pages and metrics.
    let (_, page) = call(&app, Method::GET, "/checks", false).await;
    assert!(page.contains(r#"class="st-CRITICAL""#), "{page}");
    let (_, page) = call(&app, Method::GET, "/escalations", false).await;
    assert!(page.contains(r#"<a href="/escalations/1">1</a>"#), "{page}");
    let (_, page) = call(&app, Method::GET, "/escalations/1", false).await;
    assert!(!page.contains("restarting web-1"), "{page}");
    assert!(page.contains("output hidden"), "{page}");
    let (_, page) = call(&app, Method::GET, "/escalations/1", true).await;
    assert!(page.contains("restarting web-1 at level 1"), "{page}");
    let (_, esc) = call(&app, Method::GET, "/api/v1/escalations", false).await;
    assert!(!esc.contains("restarting web-1"), "{esc}");
    let (_, page) = call(&app, Method::GET, "/checks", false).await;
    assert!(!page.contains("TCP CRITICAL"), "{page}");
    let (_, page) = call(&app, Method::GET, "/plan", false).await;
    assert!(page.contains("node:web-1"), "{page}");
    assert!(page.contains(r#"<table id="journal">"#), "{page}");
    let (_, journal) = call(&app, Method::GET, "/api/v1/journal?limit=2", false).await;
    let v: serde_json::Value = serde_json::from_str(&journal).unwrap();
    assert_eq!(v["journal"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["journal"][0]["server"], "srv");
    let (_, metrics) = call(&app, Method::GET, "/metrics", false).await;
    assert!(
        metrics.contains("gemba_escalations_started_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gemba_check_failing{check="web",scope="node:web-1"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("gemba_escalation_step_duration_seconds_count{level=\"1\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_agent_without_the_server_role_says_so() {
    let o = Overrides {
        node_id: Some("agent".into()),
        mesh_listen: Some("127.0.3.102:7946".into()),
        ..Default::default()
    };
    let c = Config::from_file(ConfigFile::default(), &o, "t").unwrap();
    let (mesh, registry) = crate::common::mesh(&c, MemNet::new()).await;
    let app = gemba_api::router(gemba_api::ApiState::new(mesh, registry, None));
    let (code, body) = call(&app, Method::GET, "/api/v1/plan", false).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("runs no server role"), "{body}");
    let (code, page) = call(&app, Method::GET, "/escalations", false).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.contains(r#"id="agent-only""#), "{page}");
}
