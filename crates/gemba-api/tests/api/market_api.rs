//! The review stage over HTTP, in process: reports as Puppet's http
//! processor and chef-client send them (with their ways of carrying the
//! token), the refusals (400, 401, 413), duplicates, problems with owners,
//! and the market.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use gemba_core::config::{Config, ConfigFile, Overrides};
use gemba_mesh::MemNet;

use crate::common::{basic, send};

const TOKEN: &str = "market-test-token-0123456789";

fn report(node: &str, uuid: &str, failing: bool) -> String {
    let (status, res) = if failing {
        ("failed", "  Exec[fetch-from-scm]:\n    title: fetch-from-scm\n    resource_type: Exec\n    file: /etc/puppet/code/site.pp\n    line: 3\n    failed: true\n    changed: false\n    events:\n    - property: returns\n      status: failure\n      message: \"change from 'notrun' to ['0'] failed: '/usr/bin/git fetch' returned 128 instead of one of [0]\"\n")
    } else {
        ("unchanged", "  Exec[fetch-from-scm]:\n    title: fetch-from-scm\n    resource_type: Exec\n    failed: false\n    changed: false\n    events: []\n")
    };
    format!("--- !ruby/object:Puppet::Transaction::Report\nhost: {node}\ntime: '2026-11-22T01:11:57.7+00:00'\ntransaction_uuid: {uuid}\nreport_format: 12\nstatus: {status}\nenvironment: production\nconfiguration_version: 17\nlogs: []\nmetrics: {{}}\nresource_statuses:\n{res}")
}

/// A GET without headers.
async fn get(app: &axum::Router, uri: &str) -> (StatusCode, serde_json::Value) {
    send(app, Method::GET, uri, &[], Body::empty()).await
}

async fn app(max: Option<&str>) -> axum::Router {
    let o = Overrides {
        node_id: Some("srv".into()),
        mesh_listen: Some("127.0.4.1:7946".into()),
        ..Default::default()
    };
    let mut file = ConfigFile::default();
    if let Some(m) = max {
        file.market = Some(gemba_core::market::MarketSection {
            max_report_size: Some(m.into()),
            ..Default::default()
        });
    }
    let c = Config::from_file(file, &o, "test").unwrap();
    let (mesh, registry) =
        crate::common::mesh(&c, MemNet::with_latency(Duration::from_micros(100))).await;
    let store: Arc<dyn gemba_store::MarketStore> =
        Arc::new(gemba_store::SqliteStore::in_memory().unwrap());
    let (handle, task) = gemba_market::service::start(
        store,
        gemba_market::detect::Thresholds::default(),
        // An hour after the runs these tests send.
        gemba_checks::Clock::starting_at(
            gemba_market::time::parse_ms("2026-11-22T02:00:00Z").unwrap(),
        ),
    )
    .await
    .unwrap();
    tokio::spawn(task);
    gemba_api::router(
        gemba_api::ApiState::new(mesh, registry, Some(TOKEN.into()))
            .with_market(Some(handle), c.market.clone()),
    )
}

const YAML: (&str, &str) = ("content-type", "application/x-yaml");
const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn puppet_reports_need_the_token_and_take_it_in_basic_auth() {
    let app = app(None).await;
    let body = report("web-1", "0e1f7c1c-0000-4000-8000-000000000001", true);
    let (status, v) = send(
        &app,
        Method::POST,
        "/api/v1/reports/puppet",
        &[YAML],
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let wrong = basic("puppet", "wrong");
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/reports/puppet",
        &[YAML, ("authorization", &wrong)],
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // What Puppet sends for reporturl = http://puppet:TOKEN@host:8777/api/v1/reports/puppet
    let good = basic("puppet", TOKEN);
    let (status, v) = send(
        &app,
        Method::POST,
        "/api/v1/reports/puppet",
        &[YAML, ("authorization", &good)],
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["accepted"], 1);
    assert_eq!(v["format"], "puppet-yaml");
    // Sent again: acknowledged, not stored twice.
    let bearer = format!("Bearer {TOKEN}");
    let (status, v) = send(
        &app,
        Method::POST,
        "/api/v1/reports/puppet",
        &[YAML, ("authorization", &bearer)],
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicate"].as_u64()),
        (Some(0), Some(1))
    );
    // Basic auth is only for report endpoints.
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/problems/P-1",
        &[JSON, ("authorization", &good)],
        r#"{"owner":"alice"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Counted by source and outcome (the first, without a token, is the
    // guard's 401 and never reaches the market).
    let (_, metrics) = get(&app, "/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains(r#"gemba_market_reports_total{source="puppet",outcome="stored"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("gemba_market_ingest_seconds_count 2"),
        "{metrics}"
    );
    // The failing run made one problem; the market counts it when scraped.
    let problems: i64 = metrics
        .lines()
        .filter(|l| l.starts_with("gemba_market_problems{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum();
    assert_eq!(problems, 1, "{metrics}");
}

#[tokio::test]
async fn bad_and_oversized_reports_are_refused_with_the_reason() {
    let app = app(Some("2KiB")).await;
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("authorization", bearer.as_str());
    let (status, v) = send(
        &app,
        Method::POST,
        "/api/v1/reports/puppet",
        &[YAML, auth],
        "--- !ruby/object:Puppet::Transaction::Report\nlogs: []\n",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("names no node"),
        "{v}"
    );
    let big = format!(
        "{}\n# {}\n",
        report("web-1", "u-big", false),
        "x".repeat(4096)
    );
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/reports/puppet",
        &[YAML, auth],
        big,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // The 413 names the limit; a content type the path does not take is a
    // 415 that names what it takes.
    let (_, v) = send(
        &app,
        Method::POST,
        "/api/v1/reports/puppet",
        &[YAML, auth],
        format!(
            "{}\n# {}\n",
            report("web-1", "u-big", false),
            "x".repeat(4096)
        ),
    )
    .await;
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("[market] max_report_size is 2048 bytes"),
        "{v}"
    );
    for (path, sent, takes) in [
        (
            "/api/v1/reports/puppet",
            "application/xml",
            "application/x-yaml",
        ),
        ("/api/v1/reports/puppet", "text/plain", "application/x-yaml"),
        (
            "/api/v1/chef/data-collector",
            "application/x-yaml",
            "takes application/json",
        ),
    ] {
        let (status, v) = send(
            &app,
            Method::POST,
            path,
            &[("content-type", sent), auth],
            report("web-1", "u-type", false),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path} {sent}");
        let why = v["error"].as_str().unwrap();
        assert!(why.contains(takes) && why.contains(sent), "{why}");
    }
    let (status, v) = send(
        &app,
        Method::POST,
        "/api/v1/chef/data-collector",
        &[JSON, ("x-data-collector-token", TOKEN)],
        r#"{"message_type":"run_converge","node_name":"n"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("message_version is missing"),
        "{v}"
    );
    // Nothing of that was stored.
    let (_, v) = get(&app, "/api/v1/problems").await;
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn chef_runs_arrive_with_the_data_collector_token() {
    let app = app(None).await;
    let start = r#"{"message_version":"1.1.0","message_type":"run_start","node_name":"db-1","run_id":"r-1","start_time":"2026-11-22T01:00:00Z","entity_uuid":"e"}"#;
    let (status, v) = send(
        &app,
        Method::POST,
        "/api/v1/chef/data-collector",
        &[JSON, ("x-data-collector-token", TOKEN)],
        start,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["started"], 1);
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/chef/data-collector",
        &[JSON, ("x-data-collector-token", "nope")],
        start,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let converge = r#"{"message_version":"1.1.0","message_type":"run_converge","node_name":"db-1","run_id":"r-1","start_time":"2026-11-22T01:00:00Z","end_time":"2026-11-22T01:00:30Z","status":"failure","resources":[{"type":"service","name":"postgresql","id":"postgresql","status":"failed","result":"start"}],"error":{"class":"Mixlib::ShellOut::ShellCommandFailed","message":"Expected process to exit with [0], but received '1'"}}"#;
    let (status, v) = send(
        &app,
        Method::POST,
        "/api/v1/chef/data-collector",
        &[JSON, ("x-data-collector-token", TOKEN)],
        converge,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["accepted"], 1);
    let (_, v) = get(&app, "/api/v1/problems").await;
    let p = &v["problems"][0];
    assert_eq!(
        p["title"].as_str().unwrap().split(':').next(),
        Some("service[postgresql]")
    );
    assert_eq!(p["status"], "new");
}

#[tokio::test]
async fn problems_get_owners_notes_and_causes_and_the_market_lists_them() {
    let app = app(None).await;
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("authorization", bearer.as_str());
    // Two runs each of three nodes, all failing: six in a row.
    for (i, node) in ["web-1", "web-2", "web-3", "web-1", "web-2", "web-3"]
        .iter()
        .enumerate()
    {
        let body = report(
            node,
            &format!("5c0f0000-0000-4000-8000-00000000000{i}"),
            true,
        );
        let (status, _) = send(
            &app,
            Method::POST,
            "/api/v1/reports/puppet",
            &[YAML, auth],
            body,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, v) = get(&app, "/api/v1/problems").await;
    let p = &v["problems"][0];
    assert_eq!(p["kind"], "external-outage", "{p}");
    assert_eq!(p["category"], "scm");
    // Filters: by a node it affects, by kind and severity; one that can
    // match nothing is named.
    let count = |v: &serde_json::Value| v["problems"].as_array().map_or(0, Vec::len);
    for (query, n) in [
        ("node=web-2", 1),
        ("environment=production", 1),
        ("environment=staging", 0),
        ("node=db-9", 0),
        ("kind=external-outage&severity=critical", 1),
        ("kind=run-failure", 0),
    ] {
        let (status, v) = get(&app, &format!("/api/v1/problems?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {v}");
        assert_eq!(count(&v), n, "{query}: {v}");
    }
    for (query, says) in [
        ("kind=outage", "kind \"outage\" is not one of run-failure"),
        ("severity=urgent", "severity \"urgent\" is not one of low"),
        ("status=closed", "status \"closed\" is not one of new"),
        ("team=ops", "unknown parameter"),
        ("environment=../x", "environment"),
        ("node=../x", "node"),
    ] {
        let (status, v) = get(&app, &format!("/api/v1/problems?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{query}: {v}");
    }
    let id = p["id"].as_str().unwrap().to_string();
    let uri = format!("/api/v1/problems/{id}");
    let (status, v) = send(&app, Method::POST, &uri, &[JSON, auth], r#"{"owner":"alice","note":"git mirror down since 01:00","cause":"the git mirror's disk is full"}"#).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["owner"], "alice");
    assert_eq!(v["status"], "open");
    assert_eq!(v["notes"][0]["text"], "git mirror down since 01:00");
    let (status, v) = send(
        &app,
        Method::POST,
        &uri,
        &[JSON, auth],
        r#"{"owner":"--rm -rf"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("owner"), "{v}");
    let (status, _) = send(
        &app,
        Method::POST,
        &uri,
        &[("content-type", "text/plain"), auth],
        r#"{"owner":"bob"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = get(&app, "/api/v1/problems/P-999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, m) = get(&app, "/api/v1/market?date=2026-11-22").await;
    assert_eq!(status, StatusCode::OK, "{m}");
    // The runs of 01:11 on the 22nd belong to the market of the 22nd at 08:00 UTC.
    assert_eq!(m["new"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["new"][0]["owner"], "alice");
    assert_eq!(m["runs"]["runs"], 6);
    let (_, text) = get(&app, "/api/v1/market?date=2026-11-22&format=text").await;
    assert!(text.as_str().unwrap().contains("external-outage"), "{text}");
    // The HTML export stands alone: links absolute, no script.
    let (_, html) = get(&app, "/api/v1/market?date=2026-11-22&format=html").await;
    let html = html.as_str().unwrap();
    assert!(
        html.contains("href=\"http://127.0.0.1:8777/market/problems/P-1\""),
        "{html}"
    );
    assert!(
        !html.contains("href=\"/") && !html.contains("<script"),
        "{html}"
    );
    let (status, _) = get(&app, "/api/v1/market?date=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, page) = get(&app, "/market?date=2026-11-22").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("Exec[fetch-from-scm]"));
    let (status, page) = get(&app, &format!("/market/problems/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("web-3"));
    let (_, runs) = get(&app, "/api/v1/market/nodes/web-1").await;
    assert_eq!(runs["runs"][0]["status"], "failed");

    // Closed by hand, with a reason; the market lists it as resolved and
    // says so. It stays closed until it occurs again.
    let post = |body: &'static str| {
        let (app, uri, auth) = (app.clone(), uri.clone(), auth);
        async move { send(&app, Method::POST, &uri, &[JSON, auth], body).await }
    };
    for (body, says) in [
        (
            r#"{"close":"meh"}"#,
            "is not a reason: wont-fix, fixed-outside or duplicate of P-n",
        ),
        (r#"{"reopen":true}"#, "was not closed by hand"),
        (r#"{"close":"wont-fix","reopen":true}"#, "one or the other"),
        (
            r#"{"close":"wont-fix","by":"mallory"}"#,
            "unknown field `by`",
        ),
    ] {
        let (status, v) = post(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    let (status, v) = post(r#"{"close":"wont-fix"}"#).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "resolved");
    assert_eq!(v["closed"]["reason"], "wont-fix");
    assert!(!v["closed"]["by"].as_str().unwrap().is_empty(), "{v}");
    let (status, v) = post(r#"{"close":"fixed-outside"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("closed already"),
        "{v}"
    );
    let (_, text) = get(&app, "/api/v1/market?date=2026-11-22&format=text").await;
    assert!(
        text.as_str().unwrap().contains("closed by hand: wont-fix"),
        "{text}"
    );
    let (status, v) = post(r#"{"reopen":true}"#).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["status"].as_str(), &v["closed"]),
        (Some("open"), &serde_json::Value::Null)
    );
    // Closed again, then the failure comes back on a node: open again,
    // as regressed.
    let (status, _) = post(r#"{"close":"fixed-outside"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let again = report("web-1", "5c0f0000-0000-4000-8000-0000000000a1", true)
        .replace("2026-11-22T01:11:57.7", "2026-11-22T01:40:00.0");
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/reports/puppet",
        &[YAML, auth],
        again,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, v) = get(&app, &uri).await;
    assert_eq!(v["status"], "regressed", "{v}");
    assert_eq!(v["closed"], serde_json::Value::Null, "{v}");
    // Its history: who changed what, when, people and detectors alike.
    let history: Vec<(String, String, String)> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap().to_string(),
                c["to"].as_str().unwrap_or("—").to_string(),
                c["by"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let fields: Vec<(&str, &str)> = history
        .iter()
        .map(|(f, to, _)| (f.as_str(), to.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("owner", "alice"),
            ("cause", "the git mirror's disk is full"),
            ("status", "open"),
            ("status", "resolved"),
            ("status", "open"),
            ("status", "resolved"),
            ("status", "regressed"),
        ],
        "{v}"
    );
    assert_eq!(
        history.last().unwrap().2,
        "gemba",
        "the detectors regressed it"
    );
    assert_ne!(history[0].2, "gemba", "a person set the owner");
    let (_, page) = get(&app, &format!("/market/problems/{id}")).await;
    assert!(page.as_str().unwrap().contains(r#"<table id="history">"#));
}

/// `POST /api/v1/market/nodes/{node}/retire` with these headers.
async fn retire(
    app: &axum::Router,
    node: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, serde_json::Value) {
    let uri = format!("/api/v1/market/nodes/{node}/retire");
    send(app, Method::POST, &uri, headers, "{}").await
}

/// A report whose exec failed, with the command's output in its logs.
fn report_with_logs(node: &str, uuid: &str, time: &str) -> String {
    format!("--- !ruby/object:Puppet::Transaction::Report\nhost: {node}\ntime: '{time}'\ntransaction_uuid: {uuid}\nreport_format: 12\nstatus: failed\nenvironment: production\nconfiguration_version: 17\nlogs:\n- level: notice\n  source: /Stage[main]/App/Exec[deploy]/returns\n  message: \"curl: (7) Failed to connect to 10.0.0.5 port 8081: Connection refused\"\n  time: '{time}'\nmetrics: {{}}\nresource_statuses:\n  Exec[deploy]:\n    title: deploy\n    resource_type: Exec\n    failed: true\n    changed: false\n    events:\n    - property: returns\n      status: failure\n      message: \"change from 'notrun' to ['0'] failed: 'curl -fsS http://10.0.0.5:8081/app.tar' returned 7 instead of one of [0]\"\n")
}

#[tokio::test]
async fn the_why_is_shown_to_readers_with_the_token_and_nodes_retire() {
    let app = app(None).await;
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("authorization", bearer.as_str());
    for (i, node) in ["web-1", "web-2"].iter().enumerate() {
        let body = report_with_logs(
            node,
            &format!("6d0f0000-0000-4000-8000-00000000000{i}"),
            "2026-11-22T01:11:57.7+00:00",
        );
        let (status, v) = send(
            &app,
            Method::POST,
            "/api/v1/reports/puppet",
            &[YAML, auth],
            body,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let (_, v) = get(&app, "/api/v1/problems").await;
    let p = &v["problems"][0];
    let id = p["id"].as_str().unwrap().to_string();
    assert_eq!(p["category"], "network", "from the command's output: {p}");
    assert!(
        p["sample"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("hidden"),
        "no token, no log lines: {p}"
    );
    assert_eq!(p["affected"], serde_json::json!(["web-1", "web-2"]));
    let (_, v) = send(
        &app,
        Method::GET,
        &format!("/api/v1/problems/{id}"),
        &[auth],
        Body::empty(),
    )
    .await;
    assert!(
        v["sample"]["detail"][0]
            .as_str()
            .unwrap()
            .contains("Failed to connect to 10.0.0.5 port 8081"),
        "{v}"
    );
    // The console: hidden without the token; shown, with the forms to
    // act, to a reader holding it.
    let (_, page) = get(&app, &format!("/market/problems/{id}")).await;
    let page = page.as_str().unwrap();
    assert!(
        page.contains("Hidden: log lines may hold anything"),
        "{page}"
    );
    assert!(!page.contains("id=\"assign\""));
    let (_, page) = send(
        &app,
        Method::GET,
        &format!("/market/problems/{id}"),
        &[auth],
        Body::empty(),
    )
    .await;
    let page = page.as_str().unwrap();
    assert!(
        page.contains("Failed to connect to 10.0.0.5 port 8081"),
        "{page}"
    );
    for form in ["assign", "cause", "severity", "close", "duplicate", "note"] {
        assert!(
            page.contains(&format!(
                "id=\"{form}\" data-post=\"/api/v1/problems/{id}\""
            )),
            "{form}: {page}"
        );
    }
    // The run page, linked from the problem, with its logs for the token.
    let run = "puppet:6d0f0000-0000-4000-8000-000000000001";
    assert!(page.contains(&format!("/market/runs/{run}")), "{page}");
    let (status, rp) = get(&app, &format!("/market/runs/{run}")).await;
    assert_eq!(status, StatusCode::OK);
    let rp = rp.as_str().unwrap();
    assert!(
        rp.contains(&id) && rp.contains("Exec[deploy]") && rp.contains("Hidden: a run's logs"),
        "{rp}"
    );
    let (_, rp) = send(
        &app,
        Method::GET,
        &format!("/market/runs/{run}"),
        &[auth],
        Body::empty(),
    )
    .await;
    assert!(rp.as_str().unwrap().contains("Connection refused"));
    let (status, _) = get(&app, "/market/runs/puppet:nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The node index, and retiring web-2 (not without the token).
    let (_, nodes) = get(&app, "/api/v1/market/nodes").await;
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 2, "{nodes}");
    assert_eq!(nodes["nodes"][1]["open_problems"], 1);
    let (status, _) = retire(&app, "web-2", &[JSON]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, v) = retire(&app, "web-2", &[JSON, auth]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["problems"][0]["id"], id.as_str());
    let (_, p) = get(&app, &format!("/api/v1/problems/{id}")).await;
    assert_eq!(p["affected"], serde_json::json!(["web-1"]), "{p}");
    let (status, v) = retire(&app, "web-2", &[JSON, auth]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("retired already"),
        "{v}"
    );
    let (status, v) = retire(&app, "db-7", &[JSON, auth]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (_, page) = get(&app, "/market/nodes").await;
    let page = page.as_str().unwrap();
    assert!(page.contains("retired by"), "{page}");
    let (_, page) = send(
        &app,
        Method::GET,
        "/market/nodes/web-1",
        &[auth],
        Body::empty(),
    )
    .await;
    let page = page.as_str().unwrap();
    assert!(
        page.contains("id=\"retire\"") && page.contains(&id),
        "{page}"
    );
    // Days: the market and a node's runs by day, with the days around.
    let (_, page) = get(&app, "/market?date=2026-11-22").await;
    let page = page.as_str().unwrap();
    assert!(page.contains("href=\"/market?date=2026-11-21\""), "{page}");
    assert!(
        !page.contains("id=\"next-day\""),
        "no day after today: {page}"
    );
    let run = "puppet:6d0f0000-0000-4000-8000-000000000000";
    let (_, page) = get(&app, "/market/nodes/web-1?date=2026-11-22").await;
    let page = page.as_str().unwrap();
    assert!(
        page.contains(run) && page.contains("?date=2026-11-21"),
        "{page}"
    );
    let (_, page) = get(&app, "/market/nodes/web-1?date=2026-11-21").await;
    assert!(!page.as_str().unwrap().contains(run));
}
