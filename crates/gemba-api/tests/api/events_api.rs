//! Change events over HTTP, in process: gemba's own shape, Graphite's and
//! Grafana's bodies as their clients send them (with their ways of
//! carrying the token and their content types), queries by time, tag and
//! kind, and the refusals — each with its reason, none storing anything.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use gemba_core::config::{Config, ConfigFile, Overrides};
use gemba_mesh::MemNet;
use serde_json::{json, Value};

use crate::common::basic;

const TOKEN: &str = "events-test-token-0123456789";

async fn app() -> axum::Router {
    app_with(
        Arc::new(gemba_store::SqliteStore::in_memory().unwrap()),
        Vec::new(),
    )
    .await
}

/// A server's router over `store`, with `notify` as its [[notify]] targets.
async fn app_with(
    store: Arc<gemba_store::SqliteStore>,
    notify: Vec<gemba_core::policy::NotifyDef>,
) -> axum::Router {
    app_with_logs(store, notify, None).await
}

/// [`app_with`], with this node's log lines.
async fn app_with_logs(
    store: Arc<gemba_store::SqliteStore>,
    notify: Vec<gemba_core::policy::NotifyDef>,
    logs: Option<gemba_timeline::logs::LogBook>,
) -> axum::Router {
    let o = Overrides {
        node_id: Some("srv".into()),
        mesh_listen: Some("127.0.4.2:7946".into()),
        ..Default::default()
    };
    let c = Config::from_file(ConfigFile::default(), &o, "test").unwrap();
    let (mesh, registry) =
        crate::common::mesh(&c, MemNet::with_latency(Duration::from_micros(100))).await;
    let timeline = gemba_timeline::TimelineHandle::new(store, gemba_exec::Clock::new());
    gemba_api::router(
        gemba_api::ApiState::new(mesh, registry, Some(TOKEN.into()))
            .with_timeline(Some(timeline))
            .with_notify(notify)
            .with_logs(
                logs.clone(),
                Some(gemba_timeline::logs::LogSource::new(
                    "srv",
                    logs,
                    None,
                    Arc::new(|n: String| {
                        Box::pin(async move { Err(format!("{n} is not a member of the grid")) })
                    }),
                )),
            ),
    )
}

/// A request as a browser or client on this host sends it.
async fn send(
    app: &axum::Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let mut all = vec![("host", "127.0.0.1:8777")];
    all.extend_from_slice(headers);
    crate::common::send(app, method, uri, &all, body).await
}

const BEARER: (&str, &str) = ("authorization", "Bearer events-test-token-0123456789");
const JSON: (&str, &str) = ("content-type", "application/json");

async fn list(app: &axum::Router, query: &str) -> Vec<Value> {
    let (s, v) = send(
        app,
        Method::GET,
        &format!("/api/v1/events?{query}"),
        &[],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn gembas_own_events_are_stored_and_found_by_time_tag_and_kind() {
    let app = app().await;
    let (s, v) = send(
        &app,
        Method::POST,
        "/api/v1/events",
        &[BEARER, JSON],
        json!({
            "what": "shop v2.3.1 released",
            "kind": "deploy",
            "tags": {"service": "shop", "env": "prod"},
            "author": "alice",
            "link": "https://ci.example.net/pipelines/812",
            "text": "release notes:\n- connection pool rewritten",
        })
        .to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["kind"], "deploy");
    assert_eq!(
        v["tags"],
        json!(["env=prod", "kind=deploy", "service=shop"])
    );
    let id = v["id"].as_i64().unwrap();

    // A note an hour ago, on another service, tags as a list.
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let (s, v) = send(
        &app,
        Method::POST,
        "/api/v1/events",
        &[BEARER, JSON],
        json!({"what": "cache flushed", "tags": ["service=cart"], "when": an_hour_ago}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["kind"], "note");

    assert_eq!(list(&app, "").await.len(), 2);
    let shop = list(&app, "tag=service%3Dshop").await;
    assert_eq!(shop.len(), 1);
    assert_eq!(shop[0]["what"], "shop v2.3.1 released");
    assert_eq!(shop[0]["author"], "alice");
    assert!(list(&app, "tag=service%3Dshop&tag=env%3Dstaging")
        .await
        .is_empty());
    assert_eq!(list(&app, "kind=note").await[0]["what"], "cache flushed");
    // The last 30 minutes hold only the release.
    let recent = list(&app, "since=30m").await;
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0]["id"], id);
    let (s, v) = send(&app, Method::GET, &format!("/api/v1/events/{id}"), &[], "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["text"], "release notes:\n- connection pool rewritten");
}

#[tokio::test]
async fn graphite_clients_post_as_they_always_have() {
    let app = app().await;
    // curl -u deploy:TOKEN -X POST http://HOST/events/ -d '{...}' sends
    // form-urlencoded and basic auth; tags as one string of words.
    let auth = basic("deploy", TOKEN);
    let (s, v) = send(
        &app,
        Method::POST,
        "/events/",
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        r#"{"what": "Deploy shop 2.3.1", "tags": "deploy shop", "data": "deploy of master branch"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["id"].as_i64().is_some());
    // Python requests with json=: a list of tags and a `when` in seconds.
    let (s, v) = send(
        &app,
        Method::POST,
        "/events/",
        &[BEARER, JSON],
        r#"{"what": "Testing graphite events api", "tags": ["test", "epoch"], "when": 1795400000, "data": "at noon"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let all = list(&app, "since=2026-11-01T00:00:00Z").await;
    let deploy = all
        .iter()
        .find(|e| e["what"] == "Deploy shop 2.3.1")
        .unwrap();
    assert_eq!(deploy["kind"], "deploy");
    assert_eq!(deploy["tags"], json!(["deploy", "shop"]));
    assert_eq!(deploy["text"], "deploy of master branch");
    assert_eq!(deploy["source"], "graphite");
    let test = all
        .iter()
        .find(|e| e["what"] == "Testing graphite events api")
        .unwrap();
    assert_eq!(test["when_ms"], 1_795_400_000_000u64);
}

#[tokio::test]
async fn grafana_annotations_are_events() {
    let app = app().await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (s, v) = send(
        &app,
        Method::POST,
        "/api/annotations",
        &[BEARER, JSON],
        json!({
            "dashboardUID": "jcIIG-07z",
            "panelId": 2,
            "time": now_ms - 60_000,
            "timeEnd": now_ms,
            "tags": ["deploy", "service:shop"],
            "text": "Annotation Description\nmore words",
        })
        .to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["message"], "Annotation added");
    let e = &list(&app, "tag=service%3Dshop").await[0];
    assert_eq!(e["what"], "Annotation Description");
    assert_eq!(e["text"], "more words");
    assert_eq!(e["kind"], "deploy");
    assert_eq!(e["end_ms"], now_ms);
    // Grafana's Graphite-shaped variant.
    let (s, v) = send(
        &app,
        Method::POST,
        "/api/annotations/graphite",
        &[BEARER, JSON],
        r#"{"what": "Event - deploy", "tags": ["deploy", "production"], "data": "deploy of master branch"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["message"], "Graphite annotation added");

    // Grafana reads them back in its own shape: a time range in unix ms,
    // tags as it writes them (all must match, or any with matchAny).
    let get = |q: String| {
        let app = app.clone();
        async move {
            let (s, v) = send(&app, Method::GET, &format!("/api/annotations?{q}"), &[], "").await;
            assert_eq!(s, StatusCode::OK, "{q}: {v}");
            v.as_array().cloned().unwrap()
        }
    };
    let range = format!("from={}&to={}", now_ms - 120_000, now_ms + 60_000);
    let shop = get(format!(
        "{range}&tags=service:shop&dashboardUID=x&panelId=2&type=annotation"
    ))
    .await;
    assert_eq!(shop.len(), 1, "{shop:?}");
    let a = &shop[0];
    assert_eq!(a["time"], now_ms - 60_000);
    assert_eq!(a["timeEnd"], now_ms);
    assert_eq!(a["text"], "Annotation Description\nmore words");
    let tags: Vec<&str> = a["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tags.contains(&"service:shop") && tags.contains(&"deploy"),
        "{tags:?}"
    );
    // Both tags of one event, or either of two events.
    assert_eq!(
        get(format!("{range}&tags=service:shop&tags=production"))
            .await
            .len(),
        0
    );
    assert_eq!(
        get(format!(
            "{range}&tags=service:shop&tags=production&matchAny=true"
        ))
        .await
        .len(),
        2
    );
    // Newest first, limited; a range that misses them finds none.
    let two = get(format!("{range}&limit=1")).await;
    assert_eq!(two.len(), 1);
    assert_eq!(two[0]["text"], "Event - deploy\ndeploy of master branch");
    assert!(
        get(format!("from={}&to={}", now_ms - 600_000, now_ms - 300_000))
            .await
            .is_empty()
    );
    assert!(get(format!("{range}&type=alert")).await.is_empty());
    let (s, v) = send(&app, Method::GET, "/api/annotations?from=x", &[], "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn bad_events_are_refused_with_the_reason_and_nothing_is_stored() {
    let app = app().await;
    let cases: &[(&str, &str, &str)] = &[
        ("/api/v1/events", r#"{"tags": ["x"]}"#, "what is missing"),
        (
            "/api/v1/events",
            r#"{"what": "x", "colour": "red"}"#,
            "unknown field \"colour\"",
        ),
        (
            "/api/v1/events",
            r#"{"what": "x", "tags": ["service=sh op"]}"#,
            "\"sh op\"",
        ),
        (
            "/api/v1/events",
            r#"{"what": "x", "when": "yesterday"}"#,
            "RFC 3339",
        ),
        (
            "/api/v1/events",
            r#"{"what": "x", "when": 1, "end": 0.5}"#,
            "before 2000",
        ),
        (
            "/api/v1/events",
            r#"{"what": "x", "link": "javascript:alert(1)"}"#,
            "not an http",
        ),
        ("/api/v1/events", r#"["what"]"#, "not a JSON object"),
        ("/api/v1/events", "{", "not JSON"),
        ("/events/", r#"{"what": "x", "tags": "a;b"}"#, "\"a;b\""),
        (
            "/events/",
            r#"{"what": "x", "who": "me"}"#,
            "unknown field \"who\"",
        ),
        (
            "/events/",
            r#"{"what": "x", "when": 1795400000000}"#,
            "milliseconds",
        ),
        (
            "/api/annotations",
            r#"{"text": "x", "time": 1795400000}"#,
            "looks like seconds",
        ),
        (
            "/api/annotations",
            r#"{"text": "x", "dashboard": 1}"#,
            "unknown field `dashboard`",
        ),
        (
            "/api/annotations",
            r#"{"tags": ["deploy"]}"#,
            "what is missing",
        ),
    ];
    for (path, body, why) in cases {
        let (s, v) = send(&app, Method::POST, path, &[BEARER, JSON], *body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(why), "{path} {body}: {e:?} should say {why:?}");
    }
    // Over the size cap, before it is read.
    let big = format!(r#"{{"what": "x", "text": "{}"}}"#, "a".repeat(70_000));
    let (s, _) = send(&app, Method::POST, "/api/v1/events", &[BEARER, JSON], big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // No token, a wrong one, a page on another site.
    let ok = r#"{"what": "x"}"#;
    let (s, _) = send(&app, Method::POST, "/api/v1/events", &[JSON], ok).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let wrong = basic("deploy", "guess");
    let (s, _) = send(
        &app,
        Method::POST,
        "/events/",
        &[("authorization", &wrong)],
        ok,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = send(
        &app,
        Method::POST,
        "/events/",
        &[
            BEARER,
            ("origin", "http://evil.example"),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        ok,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A browser's form post (it sends Sec-Fetch-Site) is no Graphite client.
    let (s, _) = send(
        &app,
        Method::POST,
        "/events/",
        &[
            BEARER,
            ("sec-fetch-site", "same-origin"),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        ok,
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Nothing was stored by any of them.
    assert!(list(&app, "since=3650d").await.is_empty());
    // Bad queries are named too.
    for (q, why) in [
        ("since=soon", "since:"),
        ("tag=a%3Bb", "\"a;b\""),
        ("limit=0", "limit 0"),
        ("colour=red", "unknown parameter"),
        ("kind=party", "kind \"party\""),
    ] {
        let (s, v) = send(&app, Method::GET, &format!("/api/v1/events?{q}"), &[], "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert!(v["error"].as_str().unwrap().contains(why), "{q}: {v}");
    }
}

#[tokio::test]
async fn a_chart_goes_out_with_its_note_to_a_notify_command() {
    let store = Arc::new(gemba_store::SqliteStore::in_memory().unwrap());
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    use gemba_store::SeriesStore;
    let id = store
        .series_ids(
            vec![gemba_store::SeriesKey {
                node: "web-1".into(),
                process: "shop".into(),
                metric: "tcp_established".into(),
            }],
            10,
        )
        .await
        .unwrap()[0]
        .unwrap();
    store
        .write_points(
            (0..60)
                .map(|i| (id, now_s - 600 + i * 10, i as f64 * 4.0))
                .collect(),
        )
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("gemba-send-chart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "cp \"$GEMBA_IMAGE\" {d}/got.png && cat > {d}/got.txt",
        d = dir.display()
    );
    let app = app_with(
        store,
        vec![gemba_core::policy::NotifyDef::Command {
            run: vec!["/bin/sh".into(), "-c".into(), script],
        }],
    )
    .await;
    let uri = "/api/v1/chart/send?node=web-1&process=shop&metric=tcp_established&since=15m";
    let (s, v) = send(
        &app,
        Method::POST,
        uri,
        &[BEARER, JSON],
        r#"{"to": "command", "note": "connections never released since v2.3.1"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["sent"], 1);
    let png = std::fs::read(dir.join("got.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG went out");
    assert!(png.len() > 2000);
    let text = std::fs::read_to_string(dir.join("got.txt")).unwrap();
    assert!(
        text.starts_with(
            "connections never released since v2.3.1\n\ntcp_established of shop on web-1"
        ),
        "{text}"
    );
    // No token, or a target the server does not have: refused, nothing sent.
    let (s, _) = send(&app, Method::POST, uri, &[JSON], r#"{"to": "command"}"#).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = send(
        &app,
        Method::POST,
        uri,
        &[BEARER, JSON],
        r#"{"to": "smtp"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no [[notify]] target"),
        "{v}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_chart_sent_with_logs_carries_the_lines_around_its_newest_marker() {
    let store = Arc::new(gemba_store::SqliteStore::in_memory().unwrap());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    use gemba_store::SeriesStore;
    let id = store
        .series_ids(
            vec![gemba_store::SeriesKey {
                node: "srv".into(),
                process: "shop".into(),
                metric: "tcp_established".into(),
            }],
            10,
        )
        .await
        .unwrap()[0]
        .unwrap();
    store
        .write_points(
            (0..60)
                .map(|i| (id, now_ms / 1000 - 600 + i * 10, i as f64 * 4.0))
                .collect(),
        )
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("gemba-send-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("shop.log");
    std::fs::write(&log, "").unwrap();
    let config = gemba_core::metrics::MetricsConfig {
        processes: vec![gemba_core::metrics::ProcessDef {
            name: "shop".into(),
            selector: gemba_core::metrics::Selector::Program("shop".into()),
            logs: vec![log.display().to_string()],
        }],
        ..Default::default()
    };
    // The agent has read the file once (empty), then the line arrives.
    let book = gemba_timeline::logs::LogBook::new("srv", &config);
    book.poll(now_ms);
    std::fs::write(
        &log,
        "WARN backend pool: 240 connections open, 0 released\n",
    )
    .unwrap();
    book.poll(now_ms);
    let app = app_with_logs(
        store,
        vec![gemba_core::policy::NotifyDef::Command {
            run: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("cat > {d}/got.txt", d = dir.display()),
            ],
        }],
        Some(book),
    )
    .await;
    let uri = "/api/v1/chart/send?node=srv&process=shop&metric=tcp_established&since=15m";
    let (s, v) = send(
        &app,
        Method::POST,
        uri,
        &[BEARER, JSON],
        r#"{"to": "command", "note": "the pool never releases", "logs": true}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let text = std::fs::read_to_string(dir.join("got.txt")).unwrap();
    assert!(text.starts_with("the pool never releases"), "{text}");
    assert!(
        text.contains("log lines (shop, ")
            && text.contains("WARN backend pool: 240 connections open, 0 released"),
        "{text}"
    );
    // Without `logs`, none.
    let (s, _) = send(
        &app,
        Method::POST,
        uri,
        &[BEARER, JSON],
        r#"{"to": "command", "note": "just the chart"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let text = std::fs::read_to_string(dir.join("got.txt")).unwrap();
    assert!(!text.contains("backend pool"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
