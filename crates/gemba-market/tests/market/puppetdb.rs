//! The PuppetDB pull source against a small stub of PuppetDB's v4 query
//! API (PuppetDB itself cannot run here). The stub answers
//! `GET /pdb/query/v4/reports` as PuppetDB's documentation describes: an
//! AST `query` on `receive_time`, `order_by`, `limit` and `offset`; each
//! report with its `metrics`, `logs` and `resource_events` wrapped as
//! `{href, data}`. Its reports are the shared PuppetDB fixtures, reshaped
//! so, with receive times of their own.

use crate::common;

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use gemba_core::config::StoreLocation;
use gemba_exec::Clock;
use gemba_market::detect::Thresholds;
use gemba_market::puppetdb::{self, Source};
use gemba_market::service;
use serde_json::{json, Value};

#[derive(Default)]
struct Stub {
    /// (receive_time ms, report in the v4 shape).
    reports: Vec<(u64, Value)>,
    /// The queries asked, as sent.
    asked: Vec<String>,
}

type Shared = Arc<Mutex<Stub>>;

fn rfc3339(ms: u64) -> String {
    gemba_market::time::format_ms(ms)
}

/// A report of PuppetDB's wire format reshaped as a v4 query answer.
fn v4(mut wire: Value, hash: &str, received_ms: u64) -> Value {
    let href = |what: &str| format!("/pdb/query/v4/reports/{hash}/{what}");
    let mut events = Vec::new();
    for r in wire["resources"].as_array().cloned().unwrap_or_default() {
        for e in r["events"].as_array().cloned().unwrap_or_default() {
            events.push(json!({
                "certname": wire["certname"],
                "report": hash,
                "resource_type": r["resource_type"],
                "resource_title": r["resource_title"],
                "containment_path": r["containment_path"],
                "file": r["file"],
                "line": r["line"],
                "status": e["status"],
                "timestamp": e["timestamp"],
                "property": e["property"],
                "name": e.get("name").cloned().unwrap_or(Value::Null),
                "new_value": e["new_value"],
                "old_value": e["old_value"],
                "message": e["message"],
                "corrective_change": e["corrective_change"],
            }));
        }
    }
    let o = wire.as_object_mut().unwrap();
    o.remove("resources");
    let metrics = o.remove("metrics").unwrap_or(json!([]));
    let logs = o.remove("logs").unwrap_or(json!([]));
    o.insert("hash".into(), json!(hash));
    o.insert("receive_time".into(), json!(rfc3339(received_ms)));
    o.insert("producer_timestamp".into(), o["end_time"].clone());
    o.insert("type".into(), json!("agent"));
    o.insert(
        "metrics".into(),
        json!({"href": href("metrics"), "data": metrics}),
    );
    o.insert("logs".into(), json!({"href": href("logs"), "data": logs}));
    o.insert(
        "resource_events".into(),
        json!({"href": href("events"), "data": events}),
    );
    wire
}

#[derive(serde::Deserialize)]
struct Params {
    query: Option<String>,
    order_by: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn reports(
    State(s): State<Shared>,
    Query(p): Query<Params>,
) -> Result<Json<Vec<Value>>, (StatusCode, String)> {
    let bad = |m: &str| (StatusCode::BAD_REQUEST, m.to_string());
    let query: Value = serde_json::from_str(p.query.as_deref().ok_or(bad("no query"))?)
        .map_err(|e| bad(&format!("query is not JSON: {e}")))?;
    let (op, field, since) = match query.as_array().map(Vec::as_slice) {
        Some([op, field, value]) => (op.as_str(), field.as_str(), value.as_str()),
        _ => return Err(bad("query must be [op, field, value]")),
    };
    if field != Some("receive_time") || !matches!(op, Some(">=") | Some(">")) {
        return Err(bad("this stub answers receive_time >= or > queries"));
    }
    let since = gemba_market::time::parse_ms(since.unwrap_or(""))
        .map_err(|e| bad(&format!("bad timestamp: {e}")))?;
    let order: Value = serde_json::from_str(p.order_by.as_deref().unwrap_or("[]"))
        .map_err(|e| bad(&format!("order_by is not JSON: {e}")))?;
    if order[0] != json!({"field": "receive_time", "order": "asc"}) {
        return Err(bad("expected to be asked oldest first"));
    }
    let mut s = s.lock().unwrap();
    s.asked.push(query.to_string());
    let mut list: Vec<&(u64, Value)> = s
        .reports
        .iter()
        .filter(|(t, _)| {
            if op == Some(">") {
                *t > since
            } else {
                *t >= since
            }
        })
        .collect();
    list.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1["hash"].as_str().cmp(&b.1["hash"].as_str()))
    });
    Ok(Json(
        list.into_iter()
            .skip(p.offset.unwrap_or(0))
            .take(p.limit.unwrap_or(usize::MAX))
            .map(|(_, v)| v.clone())
            .collect(),
    ))
}

async fn stub(state: Shared) -> String {
    let app = Router::new()
        .route("/pdb/query/v4/reports", get(reports))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn poll_until_caught_up(
    m: &service::MarketHandle,
    src: &Source,
    now: u64,
) -> (usize, u32, u32, Vec<String>, usize) {
    let (mut fetched, mut accepted, mut duplicate, mut rejected, mut requests) =
        (0, 0, 0, Vec::new(), 0);
    loop {
        let p = puppetdb::poll(m, src, now).await.expect("poll");
        requests += 1;
        fetched += p.fetched;
        accepted += p.accepted;
        duplicate += p.duplicate;
        rejected.extend(p.rejected);
        if !p.full {
            return (fetched, accepted, duplicate, rejected, requests);
        }
        assert!(requests < 20, "the cursor does not move");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_pulled_page_by_page_from_the_cursor_and_stored_once() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let now = 1_795_420_800_000; // 2026-11-23T08:00:00Z
    let state: Shared = Arc::default();
    let mut files: Vec<_> = std::fs::read_dir(root.join("puppetdb"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut uuids = Vec::new();
    {
        let mut s = state.lock().unwrap();
        for (i, f) in files.iter().enumerate() {
            let wire: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
            uuids.push(format!(
                "puppet:{}",
                wire["transaction_uuid"].as_str().unwrap()
            ));
            let hash = f
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .rsplit('-')
                .next()
                .unwrap();
            // The first five arrived in the same millisecond: more than a
            // page of ties.
            let t = now - 3_600_000 + if i < 5 { 0 } else { i as u64 * 1000 };
            s.reports.push((t, v4(wire, hash, t)));
        }
        // A report PuppetDB holds for a node name gemba refuses.
        let mut bad = s.reports[6].1.clone();
        bad["certname"] = json!("bad name!");
        bad["hash"] = json!("ffff");
        bad["receive_time"] = json!(rfc3339(now - 1_800_000));
        s.reports.push((now - 1_800_000, bad));
    }
    assert_eq!(files.len(), 10, "the shared PuppetDB fixtures");
    let url = stub(state.clone()).await;

    let dir = std::env::temp_dir().join(format!("gemba-puppetdb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = gemba_store::open_market(&StoreLocation::Sqlite(dir.join("m.db")))
        .await
        .unwrap();
    let start = |store| async move {
        let (h, task) = service::start(store, Thresholds::default(), Clock::starting_at(now))
            .await
            .unwrap();
        (h, tokio::spawn(task))
    };
    let (m, task) = start(store.clone()).await;
    let src = Source {
        url: url.clone(),
        interval: std::time::Duration::from_secs(60),
        page: 4,
        max_bytes: 64 << 20,
    };

    // Everything received in the last day, a page of four at a time.
    let (fetched, accepted, _, rejected, requests) = poll_until_caught_up(&m, &src, now).await;
    assert_eq!(accepted, 10, "every readable report is stored");
    assert_eq!((fetched, requests), (11, 3), "pages of 4, 4 and 3");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].contains("node name"), "{rejected:?}");
    assert_eq!(store.known_runs(uuids.clone()).await.unwrap().len(), 10);
    // The first request started a day back, as the AST PuppetDB reads.
    let first = state.lock().unwrap().asked[0].clone();
    assert_eq!(
        first,
        json!([">=", "receive_time", rfc3339(now - 86_400_000)]).to_string()
    );

    // Nothing new: nothing fetched again.
    let (fetched, _, _, _, _) = poll_until_caught_up(&m, &src, now).await;
    assert_eq!(fetched, 0);

    // Two new reports arrive at PuppetDB.
    {
        let mut s = state.lock().unwrap();
        for (i, k) in [7usize, 8].into_iter().enumerate() {
            let mut r = s.reports[k].1.clone();
            r["transaction_uuid"] = json!(format!("00000000-0000-4000-8000-00000000000{i}"));
            r["hash"] = json!(format!("aaaa{i}"));
            let t = now - 60_000 + i as u64;
            r["receive_time"] = json!(rfc3339(t));
            s.reports.push((t, r));
        }
    }
    let (_, accepted, _, _, _) = poll_until_caught_up(&m, &src, now).await;
    assert_eq!(accepted, 2);

    // A restarted market asks from the stored cursor: nothing comes back.
    drop(m);
    task.await.unwrap();
    let (m, task) = start(store.clone()).await;
    let asked_before = state.lock().unwrap().asked.len();
    let (fetched, _, _, _, _) = poll_until_caught_up(&m, &src, now).await;
    assert_eq!(fetched, 0);
    let resumed = state.lock().unwrap().asked[asked_before].clone();
    assert!(resumed.contains(&rfc3339(now - 60_000 + 1)), "{resumed}");

    // A PuppetDB that answers an error is reported by status and text.
    let broken = Source {
        url: format!("{url}/nowhere"),
        ..src.clone()
    };
    let err = puppetdb::poll(&m, &broken, now).await.unwrap_err();
    assert!(err.contains("HTTP 404"), "{err}");

    drop(m);
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
