//! What every answer of the HTTP API and console holds to, walked over
//! every GET route the HTTP crate registers.
//!
//! The output rule: whatever a program printed (a check plugin, an
//! escalation step, a shop's log file, a configuration run's log) is shown
//! only to requests that send the API token. The test walks the routes
//! without the token and then with it, on a server that has all four
//! kinds of output to show.
//!
//! Browser headers: a Content-Security-Policy that allows no inline
//! script and no framing, nosniff, no referrer, and no caching of
//! capability pages.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gemba_mesh::UdpNet;
use gemba_node::Node;

const CHECK_OUT: &str = "CHECK-OUT-q7w";
const STEP_OUT: &str = "STEP-OUT-q7w";
const LOG_OUT: &str = "LOG-OUT-q7w";
const RUN_OUT: &str = "RUN-OUT-q7w";

/// Every `.route("PATH", get(...))` of the HTTP crate's router (the
/// node's own and each stage's list), so that a route added later is
/// walked without anyone remembering to add it here.
fn get_routes() -> Vec<String> {
    let src = [
        include_str!("../../../gemba-api/src/lib.rs"),
        include_str!("../../../gemba-api/src/grid/mod.rs"),
        include_str!("../../../gemba-api/src/converge/mod.rs"),
        include_str!("../../../gemba-api/src/review/mod.rs"),
        include_str!("../../../gemba-api/src/learn/mod.rs"),
    ]
    .concat();
    let src = src.as_str();
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        let call = &rest[..rest.find("))").unwrap_or(rest.len())];
        let Some(path) = call.split('"').nth(1) else {
            continue;
        };
        if call.contains("get(") {
            out.push(path.to_string());
        }
    }
    out
}

/// A route with its parameters filled in with things that exist.
fn concrete(route: &str, run_key: &str) -> String {
    route
        .replace("{id}", "1")
        .replace("{target}", "srv")
        .replace("{node}", "srv")
        .replace("{scope}", "node:srv")
        .replace("{key}", run_key)
        .replace("{token}", "not-a-capability")
        .replace("{site}", "default")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_shows_program_output_only_with_the_token() {
    let dir = temp_dir("output-rule");
    let shop_log = dir.join("shop.log");
    std::fs::write(&shop_log, format!("ERROR {LOG_OUT} pool exhausted\n")).unwrap();
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
run = ["/bin/echo", "{STEP_OUT}"]
timeout = "5s"
quiesce = "1s"

[[check]]
name = "plugin"
kind = "command"
command = ["/bin/sh", "-c", "echo 'CRITICAL {CHECK_OUT}'; exit 2"]
interval = "1s"
fall = 1
level = 1

[[process]]
name = "shop"
logs = ["{log}"]
"#,
        log = shop_log.display()
    );
    let c = config("srv", "127.0.96.3", None, &dir, &policy);
    let node = Node::start(&c, Arc::new(UdpNet), key()).await.unwrap();
    let addr = node.http_addr().unwrap();

    let report = format!("--- !ruby/object:Puppet::Transaction::Report\nhost: srv\ntime: '2026-11-22T01:11:57.7+00:00'\ntransaction_uuid: 5c0f0000-0000-4000-8000-000000000002\nreport_format: 12\nstatus: changed\nenvironment: production\nconfiguration_version: 17\nlogs:\n- level: notice\n  source: Puppet\n  message: \"Applied catalog {RUN_OUT}\"\n  time: '2026-11-22T01:11:58.0+00:00'\nmetrics: {{}}\nresource_statuses: {{}}\n");
    let (code, body) = http_typed(
        addr,
        "/api/v1/reports/puppet",
        "application/x-yaml",
        &report,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // The escalation's step has run: every kind of output now exists.
    wait_for("the step's output", Duration::from_secs(30), || async {
        http(addr, "GET", "/api/v1/escalations/1", true, "")
            .await
            .1
            .contains(STEP_OUT)
    })
    .await;
    let (_, runs) = http(addr, "GET", "/api/v1/market/nodes/srv", true, "").await;
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    let run_key = runs["runs"][0]["key"]
        .as_str()
        .expect("the run")
        .to_string();
    let run_key = form_urlencoded::byte_serialize(run_key.as_bytes()).collect::<String>();

    let routes = get_routes();
    assert!(routes.len() > 40, "the router's routes: {routes:?}");
    let mut seen_with_token = std::collections::BTreeMap::new();
    for route in &routes {
        let path = concrete(route, &run_key);
        assert!(!path.contains('{'), "a route parameter to fill in: {route}");
        let path = match route.as_str() {
            "/api/v1/logs" => format!("{path}?process=shop&since=1h"),
            "/api/v1/chart.svg" | "/api/v1/chart.png" => format!("{path}?node=srv"),
            _ => path,
        };
        let (code, body) = http(addr, "GET", &path, false, "").await;
        for marker in [CHECK_OUT, STEP_OUT, LOG_OUT, RUN_OUT] {
            assert!(
                !body.contains(marker),
                "GET {path} without the token ({code}) shows {marker}: {body}"
            );
        }
        let (_, body) = http(addr, "GET", &path, true, "").await;
        for marker in [CHECK_OUT, STEP_OUT, LOG_OUT, RUN_OUT] {
            if body.contains(marker) {
                seen_with_token
                    .entry(marker)
                    .or_insert_with(Vec::new)
                    .push(path.clone());
            }
        }
    }
    // With the token each kind of output is shown somewhere, so the walk
    // above looked at pages that carry it.
    for marker in [CHECK_OUT, STEP_OUT, LOG_OUT, RUN_OUT] {
        assert!(
            seen_with_token.contains_key(marker),
            "{marker} is on no page even with the token: {seen_with_token:?}"
        );
    }
    for must in ["/api/v1/checks", "/api/v1/plan", "/checks"] {
        assert!(
            seen_with_token[CHECK_OUT].iter().any(|p| p == must),
            "{must} shows the check's output to a token holder: {seen_with_token:?}"
        );
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_tells_browsers_no_inline_script_no_framing_no_referrer() {
    let dir = temp_dir("browser-headers");
    let c = config("srv", "127.0.96.2", None, &dir, "");
    let node = Node::start(&c, Arc::new(UdpNet), key()).await.unwrap();
    let addr = node.http_addr().unwrap();
    let mut paths: Vec<String> = get_routes().iter().map(|r| concrete(r, "x")).collect();
    paths.extend(["/no-such-page".into(), "/pm/not-a-link".into()]);
    for path in &paths {
        let answer = get_raw(addr, path).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let head = head.to_ascii_lowercase();
        for want in [
            "content-security-policy: default-src 'none'; script-src 'self';",
            "frame-ancestors 'none'",
            "x-frame-options: deny",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
        ] {
            assert!(head.contains(want), "GET {path}: no {want:?} in\n{head}");
        }
        let capability = path.starts_with("/pm/")
            || path.starts_with("/api/v1/pm/")
            || path.starts_with("/ballots/")
            || path.starts_with("/api/v1/ballots/");
        assert_eq!(
            head.contains("cache-control: no-store"),
            capability,
            "GET {path}: cache-control\n{head}"
        );
        // The pages carry no inline script: each script is a file of
        // this node's, which the policy allows.
        let mut rest = body;
        while let Some(i) = rest.find("<script") {
            rest = &rest[i..];
            let tag = &rest[..rest.find('>').unwrap()];
            assert!(
                tag.contains(r#"src="/assets/"#),
                "GET {path}: inline script {tag}"
            );
            let src = tag.split('"').nth(1).unwrap();
            let js = get_raw(addr, src).await;
            assert!(
                js.starts_with("HTTP/1.0 200") && js.contains("text/javascript"),
                "{src}: {js}"
            );
            rest = &rest[1..];
        }
    }
    node.shutdown().await;
}
