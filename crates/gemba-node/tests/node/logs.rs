//! Log excerpts across two nodes: the agent on web-1 keeps the lines of
//! its shop's log file; the server shows them on an event about web-1's
//! shop, on web-1's escalation page and in the notice its failing step
//! sends, and only to requests with the API token.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gemba_mesh::UdpNet;
use gemba_node::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shows_and_sends_the_log_lines_of_another_node_only_with_the_token() {
    let dir = temp_dir("logs");
    let shop_log = dir.join("shop.log");
    let notices = dir.join("notices");
    // The policy both nodes share: web-1's shop port is closed, its one
    // level fails, and the failed step is a notice run by a command.
    let policy = format!(
        r#"
[mesh]
gossip_interval = "100ms"
probe_interval = "200ms"
probe_timeout = "100ms"

[escalator]
quiet_period = "1s"

[[level]]
level = 1
name = "restart"
run = ["/bin/false"]
timeout = "5s"
quiesce = "1s"

[[check]]
name = "shop-port"
kind = "tcp"
tier = "shop"
host = "127.0.0.1"
port = 1
interval = "1s"
fall = 1
level = 1

[[notify]]
kind = "command"
run = ["/bin/sh", "-c", "cat >> {notices}"]
"#,
        notices = notices.display()
    );
    let server = config("srv", "127.0.93.1", None, &dir, &policy);
    let agent = config(
        "web-1",
        "127.0.93.2",
        Some("127.0.93.1:7946"),
        &dir,
        &format!(
            "[node]\nserver = false\ntags = [\"shop\"]\n{policy}\n[[process]]\nname = \"shop\"\nlogs = [\"{}\"]\n",
            shop_log.display()
        ),
    );
    std::fs::write(&shop_log, "shop v2.3.1 starting\n").unwrap();
    let srv = Node::start(&server, Arc::new(UdpNet), key()).await.unwrap();
    let web = Node::start(&agent, Arc::new(UdpNet), key()).await.unwrap();
    let (srv_http, web_http) = (srv.http_addr().unwrap(), web.http_addr().unwrap());
    std::fs::OpenOptions::new()
        .append(true)
        .open(&shop_log)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(b"ERROR pool exhausted: 512 connections open, none released\n")
        })
        .unwrap();

    // The agent's own endpoint: lines to token holders only.
    let (code, body) = http(web_http, "GET", "/api/v1/logs?process=shop", false, "").await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("API token"), "{body}");
    wait_for(
        "the agent to read the new line",
        Duration::from_secs(10),
        || async {
            http(web_http, "GET", "/api/v1/logs?process=shop", true, "")
                .await
                .1
                .contains("pool exhausted")
        },
    )
    .await;

    // The server asks web-1's agent once web-1 is a member with its
    // HTTP address.
    wait_for(
        "the server to fetch web-1's lines",
        Duration::from_secs(20),
        || async {
            let (code, body) = http(
                srv_http,
                "GET",
                "/api/v1/logs?node=web-1&since=10m",
                true,
                "",
            )
            .await;
            code == 200 && body.contains("pool exhausted")
        },
    )
    .await;
    let (code, _) = http(srv_http, "GET", "/api/v1/logs?node=web-1", false, "").await;
    assert_eq!(code, 403);
    let (code, body) = http(srv_http, "GET", "/api/v1/logs?node=../etc", true, "").await;
    assert_eq!(code, 400, "{body}");

    // An event about web-1's shop carries the lines around it.
    let (code, body) = http(
        srv_http,
        "POST",
        "/api/v1/events",
        true,
        r#"{"what": "shop v2.3.1 released", "tags": {"service": "shop", "host": "web-1", "kind": "deploy"}}"#,
    )
    .await;
    assert!(code == 200 || code == 201, "{code} {body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();
    let (_, body) = http(srv_http, "GET", &format!("/api/v1/events/{id}"), true, "").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let excerpt = &v["logs"][0]["excerpts"][0];
    assert_eq!(v["logs"][0]["node"], "web-1", "{v}");
    assert_eq!(excerpt["process"], "shop");
    assert_eq!(excerpt["file"], shop_log.display().to_string());
    let lines: Vec<&str> = excerpt["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert!(
        lines.contains(&"ERROR pool exhausted: 512 connections open, none released"),
        "{lines:?}"
    );
    let (_, body) = http(srv_http, "GET", &format!("/api/v1/events/{id}"), false, "").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v.get("logs").is_none(), "no lines without the token: {v}");
    let (_, page) = http(srv_http, "GET", &format!("/events/{id}"), true, "").await;
    assert!(page.contains("pool exhausted"), "the event page shows them");
    let (_, page) = http(srv_http, "GET", &format!("/events/{id}"), false, "").await;
    assert!(!page.contains("pool exhausted") && page.contains("API token"));

    // The failing shop-port check escalates web-1; the failed step's
    // notice carries web-1's lines.
    wait_for(
        "the step-failed notice",
        Duration::from_secs(30),
        || async { std::fs::read_to_string(&notices).is_ok_and(|n| n.contains("step-failed")) },
    )
    .await;
    let sent = std::fs::read_to_string(&notices).unwrap();
    let notice: serde_json::Value = serde_json::from_str(sent.lines().next().unwrap()).unwrap();
    assert_eq!(notice["scope"], "node:web-1", "{notice}");
    assert!(
        notice["logs"][0]["excerpts"][0]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["text"].as_str().unwrap().contains("pool exhausted")),
        "{notice}"
    );
    let escalation = notice["escalation"].as_u64().unwrap();
    let (_, page) = http(
        srv_http,
        "GET",
        &format!("/escalations/{escalation}"),
        true,
        "",
    )
    .await;
    assert!(
        page.contains("pool exhausted"),
        "the escalation page shows them"
    );

    // web-1's page on the server: its processes now (the shop is not
    // running: unavailable, with why), its charts, the event, its lines.
    wait_for(
        "web-1's samples on the server",
        Duration::from_secs(30),
        || async {
            http(srv_http, "GET", "/nodes/web-1", true, "")
                .await
                .1
                .contains("unavailable: ")
        },
    )
    .await;
    let (code, page) = http(srv_http, "GET", "/nodes/web-1", true, "").await;
    assert_eq!(code, 200);
    assert!(page.contains("<td>shop</td>"), "{page}");
    assert!(page.contains("<svg"), "charts are drawn");
    assert!(page.contains("shop v2.3.1 released"), "the event is listed");
    assert!(
        page.contains("pool exhausted"),
        "the newest lines are shown"
    );
    let (code, _) = http(srv_http, "GET", "/nodes/..%2Fetc", true, "").await;
    assert_eq!(code, 400);

    web.shutdown().await;
    srv.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
