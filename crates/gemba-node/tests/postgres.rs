//! A server on PostgreSQL: the same node as on SQLite, with `[store] url`
//! naming a database (a throwaway server this test starts; skipped with
//! the reason when PostgreSQL is not installed). A failing service opens an
//! escalation and an incident; a Puppet report becomes a morning-market
//! problem; an event is stored; a post-mortem starts — every stage on the
//! shared store, and all of it still there for a second server that opens
//! the same database.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use gemba_mesh::UdpNet;
use gemba_node::Node;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_keeps_everything_in_postgresql() {
    let cluster = match gemba_store::throwaway::Cluster::start("node") {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let url = cluster.database().await;
    let dir = temp_dir("postgres");
    let restarted = dir.join("restarted");
    let service = TcpListener::bind("127.0.96.1:0").unwrap();
    let port = service.local_addr().unwrap().port();
    let policy = format!(
        r#"
[store]
url = "{url}"

[escalator]
quiet_period = "1s"

[[level]]
level = 1
name = "restart"
run = ["/bin/sh", "-c", "echo ran >> {restarted}"]
timeout = "5s"
quiesce = "1s"

[[check]]
name = "service"
kind = "tcp"
host = "127.0.96.1"
port = {port}
interval = "1s"
fall = 1
rise = 1
level = 1
"#,
        restarted = restarted.display()
    );
    let c = config("srv", "127.0.96.1", None, &dir, &policy);
    let node = Node::start(&c, Arc::new(UdpNet), key()).await.unwrap();
    let addr = node.http_addr().unwrap();
    let get = |path: String| async move {
        let (code, body) = http(addr, "GET", &path, true, "").await;
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    wait_for("the check to pass", Duration::from_secs(20), || async {
        get("/api/v1/checks".into())
            .await
            .to_string()
            .contains("\"passing\"")
    })
    .await;
    let report = "--- !ruby/object:Puppet::Transaction::Report\nhost: srv\ntime: '2026-11-22T01:11:57.7+00:00'\ntransaction_uuid: 5c0f0000-0000-4000-8000-000000000002\nreport_format: 12\nstatus: failed\nenvironment: production\nconfiguration_version: 17\nlogs: []\nmetrics: {}\nresource_statuses:\n  Service[shop]:\n    title: shop\n    resource_type: Service\n    file: /etc/puppet/code/site.pp\n    line: 3\n    failed: true\n    changed: false\n    events:\n    - property: ensure\n      status: failure\n      message: \"Could not start Service[shop]\"\n";
    let (code, body) =
        http_typed(addr, "/api/v1/reports/puppet", "application/x-yaml", report).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(
        addr,
        "POST",
        "/api/v1/events",
        true,
        r#"{"what": "shop v2 deployed", "tags": {"host": "srv"}}"#,
    )
    .await;
    assert!(code == 200 || code == 201, "{body}");
    drop(service);
    wait_for("an incident", Duration::from_secs(30), || async {
        get("/api/v1/incidents".into()).await["incidents"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    wait_for("the restart step", Duration::from_secs(30), || async {
        restarted.exists()
    })
    .await;
    let _service = TcpListener::bind(("127.0.96.1", port)).unwrap();
    let id = get("/api/v1/incidents".into()).await["incidents"][0]["id"]
        .as_i64()
        .unwrap();
    wait_for("the incident to close", Duration::from_secs(40), || async {
        get(format!("/api/v1/incidents/{id}")).await["status"] == "closed"
    })
    .await;
    let (code, v) = http(
        addr,
        "POST",
        &format!("/api/v1/incidents/{id}/postmortem"),
        true,
        &json!({"facilitator": "ana", "note_keeper": "bo", "time_keeper": "cy"}).to_string(),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let problems = get("/api/v1/problems".into()).await.to_string();
    assert!(problems.contains("Service[shop]"), "{problems}");
    node.shutdown().await;

    // Another server opening the same database finds all of it.
    let again = gemba_store::open_any(&gemba_core::StoreLocation::Postgres {
        url: url.clone(),
        password_file: None,
    })
    .await
    .unwrap();
    let journal = again.recent_journal(100).await.unwrap();
    assert!(
        journal.iter().any(|l| l.kind == "resolved"),
        "the escalation's journal: {journal:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&restarted).unwrap().lines().count(),
        1,
        "the step ran once"
    );
    assert!(again
        .incident(id)
        .await
        .unwrap()
        .unwrap()
        .closed_ms
        .is_some());
    assert!(again.postmortem(id).await.unwrap().is_some());
    assert!(!again.problems().await.unwrap().is_empty());
    let events = again
        .events(gemba_store::EventFilter {
            since_ms: 0,
            until_ms: u64::MAX / 2,
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(events.iter().any(|e| e.what == "shop v2 deployed"));
    assert!(
        again.point_counts().await.unwrap().series > 0,
        "host samples stored"
    );
}
