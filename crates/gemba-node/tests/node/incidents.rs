//! An incident opened by an escalation: a toy service stops answering, its
//! check fails, the escalator restarts it, and the incident the escalation
//! opened holds a timeline in order (the check failing, the decision, the
//! step, a deploy event, the check passing, the resolution) and closes by
//! itself when the escalation ends.

use crate::common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use gemba_mesh::UdpNet;
use gemba_node::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_opens_an_incident_with_its_timeline_in_order_and_closes_it() {
    let dir = temp_dir("incidents");
    let restarted = dir.join("restarted");
    // The toy service: a listener the test drops and binds again.
    let service = TcpListener::bind("127.0.94.1:0").unwrap();
    let port = service.local_addr().unwrap().port();
    let policy = format!(
        r#"
[mesh]
gossip_interval = "100ms"
probe_interval = "200ms"
probe_timeout = "100ms"

[incidents]
# Every escalation opens one, closed as soon as it ends.
open_on = "start"
cool_down = "0s"

[escalator]
quiet_period = "1s"

[[level]]
level = 1
name = "restart"
run = ["/bin/sh", "-c", "touch {restarted}"]
timeout = "5s"
quiesce = "1s"

[[check]]
name = "service"
kind = "tcp"
host = "127.0.94.1"
port = {port}
interval = "1s"
fall = 1
rise = 1
level = 1
"#,
        restarted = restarted.display()
    );
    let c = config("srv", "127.0.94.1", None, &dir, &policy);
    let node = Node::start(&c, Arc::new(UdpNet), key()).await.unwrap();
    let http_addr = node.http_addr().unwrap();
    let get = |path: String| async move {
        let (code, body) = http(http_addr, "GET", &path, true, "").await;
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    wait_for("the check to pass", Duration::from_secs(20), || async {
        get("/api/v1/checks".into())
            .await
            .to_string()
            .contains("\"passing\"")
    })
    .await;
    // Yesterday's configuration run on srv failed: a morning-market
    // problem on the incident's node.
    let report = "--- !ruby/object:Puppet::Transaction::Report\nhost: srv\ntime: '2026-11-22T01:11:57.7+00:00'\ntransaction_uuid: 5c0f0000-0000-4000-8000-000000000001\nreport_format: 12\nstatus: failed\nenvironment: production\nconfiguration_version: 17\nlogs: []\nmetrics: {}\nresource_statuses:\n  Service[shop]:\n    title: shop\n    resource_type: Service\n    file: /etc/puppet/code/site.pp\n    line: 3\n    failed: true\n    changed: false\n    events:\n    - property: ensure\n      status: failure\n      message: \"Could not start Service[shop]: Execution of '/bin/systemctl start shop' returned 1\"\n";
    let (code, body) = http_typed(
        http_addr,
        "/api/v1/reports/puppet",
        "application/x-yaml",
        report,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // Let the recorder see it passing before it breaks.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(service);

    wait_for("an incident", Duration::from_secs(30), || async {
        get("/api/v1/incidents".into()).await["incidents"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    let list = get("/api/v1/incidents".into()).await;
    let inc = &list["incidents"][0];
    assert_eq!(inc["status"], "open", "{inc}");
    assert_eq!(inc["scopes"][0], "node:srv");
    assert!(inc["opened_by"]
        .as_str()
        .unwrap()
        .starts_with("escalation "));
    let id = inc["id"].as_i64().unwrap();
    // The escalation's answer and page name the incident that gathers it.
    let esc = inc["escalations"][0].as_u64().expect("an escalation");
    assert_eq!(
        get(format!("/api/v1/escalations/{esc}")).await["incident"],
        id
    );
    let (code, page) = http(http_addr, "GET", &format!("/escalations/{esc}"), true, "").await;
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains(&format!(r#"<a href="/incidents/{id}">incident I-{id}</a>"#)),
        "{page}"
    );

    // A deploy during the incident joins its timeline.
    let (code, body) = http(
        http_addr,
        "POST",
        "/api/v1/events",
        true,
        r#"{"what": "service v1.0.1 rolled back", "tags": {"host": "srv", "kind": "deploy"}}"#,
    )
    .await;
    assert!(code == 200 || code == 201, "{body}");

    // The restart "fixes" it: the service answers again.
    wait_for("the restart step", Duration::from_secs(30), || async {
        restarted.exists()
    })
    .await;
    // Back at once: within the step's quiescence (1 s), so verification
    // sees it passing. (A check may see it back before the step's end is
    // journaled, so only the decision orders the two.)
    let _service = TcpListener::bind(("127.0.94.1", port)).unwrap();
    wait_for("the incident to close", Duration::from_secs(40), || async {
        get(format!("/api/v1/incidents/{id}")).await["status"] == "closed"
    })
    .await;

    let i = get(format!("/api/v1/incidents/{id}")).await;
    assert_eq!(i["closed_by"], "its escalations ended", "{i}");
    let entries: Vec<(u64, String, String)> = i["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["at_ms"].as_u64().unwrap(),
                e["source"].as_str().unwrap().to_string(),
                e["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let at = |what: &dyn Fn(&(u64, String, String)) -> bool, name: &str| -> usize {
        entries
            .iter()
            .position(what)
            .unwrap_or_else(|| panic!("no {name} in the timeline: {entries:#?}"))
    };
    let failing = at(
        &|e| e.1 == "check" && e.2.starts_with("service@node:srv failing"),
        "check failing",
    );
    let decision = at(
        &|e| e.1 == "escalation" && e.2.contains(" decision: opened"),
        "decision",
    );
    let step = at(
        &|e| e.1 == "escalation" && e.2.contains(" step-start: "),
        "step start",
    );
    let deploy = at(
        &|e| e.1 == "event" && e.2.contains("service v1.0.1 rolled back"),
        "deploy",
    );
    let passing = at(
        &|e| e.1 == "check" && e.2.starts_with("service@node:srv passing"),
        "check passing",
    );
    let resolved = at(
        &|e| e.1 == "escalation" && e.2.contains(" resolved: "),
        "resolution",
    );
    assert!(failing < decision && decision < step, "{entries:#?}");
    assert!(step < passing && passing < resolved, "{entries:#?}");
    assert!(
        entries
            .iter()
            .any(|e| e.2.contains(" step-end: level 1 (restart) succeeded")),
        "{entries:#?}"
    );
    assert!(deploy > failing, "{entries:#?}");
    assert!(
        entries.windows(2).all(|w| w[0].0 <= w[1].0),
        "oldest first: {entries:#?}"
    );

    // The console shows it; a wrong id is a clear error.
    let (code, page) = http(http_addr, "GET", &format!("/incidents/{id}"), true, "").await;
    assert_eq!(code, 200);
    assert!(page.contains("service v1.0.1 rolled back") && page.contains("its escalations ended"));
    let (code, body) = http(http_addr, "GET", "/api/v1/incidents/x1", true, "").await;
    assert_eq!(code, 400, "{body}");

    // By hand: open, edit, close; bad fields are refused with the reason.
    let (code, body) = http(
        http_addr,
        "POST",
        "/api/v1/incidents",
        true,
        r#"{"title": "checkout slow for EU customers", "severity": "minor", "nodes": ["srv"]}"#,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let manual: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mid = manual["id"].as_i64().unwrap();
    let (code, body) = http(
        http_addr,
        "POST",
        &format!("/api/v1/incidents/{mid}"),
        true,
        r#"{"severity": "urgent"}"#,
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("critical, major, minor"), "{body}");
    let (code, _) = http(
        http_addr,
        "POST",
        &format!("/api/v1/incidents/{mid}"),
        false,
        r#"{"closed": true}"#,
    )
    .await;
    assert_eq!(code, 401, "closing needs the token");
    let (code, body) = http(
        http_addr,
        "POST",
        &format!("/api/v1/incidents/{mid}"),
        true,
        r#"{"closed": true, "summary": "a slow database replica"}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let closed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["summary"], "a slow database replica");

    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
