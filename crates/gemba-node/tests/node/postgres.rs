//! A server on PostgreSQL: the same node as on SQLite, with `[store] url`
//! naming a database (a throwaway server this test starts; skipped with
//! the reason when PostgreSQL is not installed). A failing service opens an
//! escalation and an incident; a Puppet report becomes a morning-market
//! problem; an event is stored; a post-mortem starts — every stage on the
//! shared store, and all of it still there for a second server that opens
//! the same database.

use crate::common;

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

[incidents]
# Every escalation opens one, closed as soon as it ends.
open_on = "start"
cool_down = "0s"

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

/// A Puppet report of node `n`, failing, unique by node and time.
fn report(n: usize) -> String {
    format!(
        "--- !ruby/object:Puppet::Transaction::Report\nhost: node-{n}\ntime: '2026-11-22T01:{:02}:{:02}.0+00:00'\ntransaction_uuid: 5c0f0000-0000-4000-8000-{n:012}\nreport_format: 12\nstatus: failed\nenvironment: production\nconfiguration_version: 17\nlogs: []\nmetrics: {{}}\nresource_statuses:\n  Service[shop]:\n    title: shop\n    resource_type: Service\n    file: /etc/puppet/code/site.pp\n    line: 3\n    failed: true\n    changed: false\n    events:\n    - property: ensure\n      status: failure\n      message: \"Could not start Service[shop]\"\n",
        n / 60,
        n % 60
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_acknowledged_across_a_postgresql_outage_are_stored_once() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("GEMBA_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let cluster = match gemba_store::throwaway::Cluster::start("outage") {
        Ok(c) => Arc::new(c),
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let url = cluster.database().await;
    let dir = temp_dir("postgres-outage");
    let c = config(
        "srv",
        "127.0.97.1",
        None,
        &dir,
        &format!("[store]\nurl = \"{url}\"\n"),
    );
    let node = Node::start(&c, Arc::new(UdpNet), key()).await.unwrap();
    let addr = node.http_addr().unwrap();
    const REPORTS: usize = 240;
    let acked = Arc::new(std::sync::Mutex::new(Vec::<usize>::new()));
    let refusals = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // Two senders, each posting its reports one by one and sending again
    // what was not acknowledged (as a Puppet agent's next run would).
    let sender = |first: usize| {
        let (acked, refusals) = (acked.clone(), refusals.clone());
        async move {
            for n in (first..REPORTS).step_by(2) {
                let start = tokio::time::Instant::now();
                loop {
                    let (code, body) = http_typed(
                        addr,
                        "/api/v1/reports/puppet",
                        "application/x-yaml",
                        &report(n),
                    )
                    .await;
                    if code == 200 {
                        acked.lock().unwrap().push(n);
                        break;
                    }
                    refusals.lock().unwrap().push(format!("{code} {body}"));
                    assert!(
                        start.elapsed() < Duration::from_secs(60),
                        "report {n} never acknowledged: {code} {body}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    let senders = tokio::spawn({
        let (a, b) = (sender(0), sender(1));
        async move {
            tokio::join!(a, b);
        }
    });
    let at = |count: usize| {
        let acked = acked.clone();
        async move {
            wait_for(
                &format!("{count} acknowledged"),
                Duration::from_secs(60),
                || async { acked.lock().unwrap().len() >= count },
            )
            .await
        }
    };
    // An outage of a second and a half: requests meanwhile fail...
    at(60).await;
    eprintln!("stopping PostgreSQL");
    let pg = cluster.clone();
    tokio::task::spawn_blocking(move || pg.stop().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pg = cluster.clone();
    tokio::task::spawn_blocking(move || pg.start_again().unwrap())
        .await
        .unwrap();
    // ...then a crash and restart in the middle of the stream.
    eprintln!("started again");
    at(150).await;
    eprintln!("restarting PostgreSQL");
    let pg = cluster.clone();
    tokio::task::spawn_blocking(move || pg.restart().unwrap())
        .await
        .unwrap();
    senders.await.unwrap();
    let refusals = refusals.lock().unwrap().clone();
    eprintln!("{} refusals, e.g. {:?}", refusals.len(), refusals.first());
    assert!(!refusals.is_empty(), "the outage was seen by the senders");
    for r in &refusals {
        assert!(
            r.starts_with("503 ") && r.contains("PostgreSQL"),
            "a refusal is 503 and names the store: {r}"
        );
    }
    // Everything acknowledged is stored, once.
    let mut acked = acked.lock().unwrap().clone();
    acked.sort();
    assert_eq!(
        acked,
        (0..REPORTS).collect::<Vec<_>>(),
        "every report acknowledged once"
    );
    let store = gemba_store::open_any(&gemba_core::StoreLocation::Postgres {
        url: url.clone(),
        password_file: None,
    })
    .await
    .unwrap();
    let runs = store.runs_after(0, 10_000).await.unwrap();
    let mut nodes: Vec<String> = runs.iter().map(|r| r.node.clone()).collect();
    nodes.sort();
    let mut want: Vec<String> = (0..REPORTS).map(|n| format!("node-{n}")).collect();
    want.sort();
    assert_eq!(nodes, want, "each report stored exactly once");
    // And the server works on, its memory as the store: one problem, every
    // report counted once, though batches failed and were sent again.
    let (code, body) = http(addr, "GET", "/api/v1/problems", true, "").await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{body}");
    assert_eq!(problems[0]["occurrences"], REPORTS, "{body}");
    assert_eq!(problems[0]["nodes"], REPORTS, "{body}");
    node.shutdown().await;
}

/// `/healthz` tells the truth about the store: 200 with the store's
/// latency and this host's clock against PostgreSQL's; 503 with the
/// reason (and `Retry-After`) while PostgreSQL is stopped, as are the
/// endpoints that need the store; 200 again once it is back, without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_when_postgresql_is_down_and_when_it_is_back() {
    let cluster = match gemba_store::throwaway::Cluster::start("health") {
        Ok(c) => Arc::new(c),
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let url = cluster.database().await;
    let dir = temp_dir("postgres-health");
    // A short lease: the escalator looks at the store every second.
    let c = config(
        "srv",
        "127.0.97.2",
        None,
        &dir,
        &format!("[store]\nurl = \"{url}\"\n[escalator]\nlease_ttl = \"3s\"\n"),
    );
    let node = Node::start(&c, Arc::new(UdpNet), key()).await.unwrap();
    let addr = node.http_addr().unwrap();
    let health = || async move {
        let raw = get_raw(addr, "/healthz").await;
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        (head.to_string(), v)
    };
    let (head, v) = health().await;
    assert!(head.starts_with("HTTP/1.0 200"), "{head} {v}");
    assert_eq!(v["roles"]["server"]["store"]["state"], "ok", "{v}");
    assert!(
        v["roles"]["server"]["store"]["clock_skew_ms"]
            .as_i64()
            .is_some_and(|s| s.abs() < 1000),
        "this host and PostgreSQL share a clock here: {v}"
    );

    let pg = cluster.clone();
    tokio::task::spawn_blocking(move || pg.stop().unwrap())
        .await
        .unwrap();
    wait_for(
        "/healthz to say the store is down",
        Duration::from_secs(20),
        || async { health().await.0.starts_with("HTTP/1.0 503") },
    )
    .await;
    let (head, v) = health().await;
    assert!(head.contains("retry-after: 5"), "{head}");
    assert_eq!(v["status"], "failing", "{v}");
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .contains("the store cannot be reached"),
        "{v}"
    );
    // The endpoints that need the store say the same, with a time to
    // try again.
    for path in ["/api/v1/escalations", "/api/v1/events", "/api/v1/incidents"] {
        let raw = get_raw(addr, path).await;
        assert!(
            raw.starts_with("HTTP/1.0 503") && raw.contains("retry-after: 5"),
            "{path}: {raw}"
        );
    }

    let pg = cluster.clone();
    tokio::task::spawn_blocking(move || pg.start_again().unwrap())
        .await
        .unwrap();
    wait_for(
        "/healthz to be ok again",
        Duration::from_secs(30),
        || async { health().await.0.starts_with("HTTP/1.0 200") },
    )
    .await;
    // The outage is in the journal: since when, then that it is back.
    let store = gemba_store::open_any(&gemba_core::StoreLocation::Postgres {
        url: url.clone(),
        password_file: None,
    })
    .await
    .unwrap();
    let outage_lines = || async {
        let mut lines: Vec<_> = store
            .recent_journal(500)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.kind == "store-outage" && l.server == "srv")
            .collect();
        lines.sort_by_key(|l| l.seq);
        lines
    };
    wait_for(
        "the outage's two journal lines",
        Duration::from_secs(20),
        || async { outage_lines().await.len() == 2 },
    )
    .await;
    let lines = outage_lines().await;
    assert!(
        lines[0]
            .text
            .contains("the store could not be reached from"),
        "{lines:?}"
    );
    assert!(
        lines[1].text.contains("the store is back after"),
        "{lines:?}"
    );
    node.shutdown().await;
}

/// Two servers on one PostgreSQL, the second with its clock 5 minutes
/// ahead. The first converges its failing check as usual. The second sees
/// the skew at once: it says so (a journal line, `/healthz` 503 with the
/// reason) and takes no lease, so it runs nothing. The journal, stamped on
/// the database's clock, is in time order along its sequence, with no line
/// from the future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_clock_is_ahead_says_so_and_takes_no_lease() {
    a_server_whose_clock_is_off_says_so_and_takes_no_lease(5 * 60 * 1000, "ahead of").await;
}

/// The same, the second server's clock 5 minutes behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_clock_is_behind_says_so_and_takes_no_lease() {
    a_server_whose_clock_is_off_says_so_and_takes_no_lease(-5 * 60 * 1000, "behind").await;
}

async fn a_server_whose_clock_is_off_says_so_and_takes_no_lease(offset_ms: i64, words: &str) {
    let cluster = match gemba_store::throwaway::Cluster::start(if offset_ms > 0 {
        "skew-ahead"
    } else {
        "skew-behind"
    }) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let url = cluster.database().await;
    let dir = temp_dir(if offset_ms > 0 {
        "postgres-skew-ahead"
    } else {
        "postgres-skew-behind"
    });
    let (ip_a, ip_b) = if offset_ms > 0 {
        ("127.0.97.3", "127.0.97.4")
    } else {
        ("127.0.97.5", "127.0.97.6")
    };
    let ran = dir.join("ran");
    let policy = format!(
        r#"
[store]
url = "{url}"

[escalator]
quiet_period = "1s"

[[level]]
level = 1
name = "restart"
run = ["/bin/sh", "-c", "echo {{node}} >> {ran}"]
timeout = "5s"
quiesce = "1s"

[[check]]
name = "closed"
kind = "tcp"
host = "127.0.0.1"
port = 1
interval = "1s"
fall = 1
level = 1
"#,
        ran = ran.display()
    );
    let a = Node::start(
        &config("srv-a", ip_a, None, &dir, &policy),
        Arc::new(UdpNet),
        key(),
    )
    .await
    .unwrap();
    let b = Node::start_with(
        &config("srv-b", ip_b, None, &dir, &policy),
        Arc::new(UdpNet),
        key(),
        gemba_node::NodeOptions {
            clock_offset_ms: offset_ms,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait_for(
        "srv-a to run its restart",
        Duration::from_secs(30),
        || async { std::fs::read_to_string(&ran).is_ok_and(|t| t.contains("srv-a")) },
    )
    .await;
    let store = gemba_store::open_any(&gemba_core::StoreLocation::Postgres {
        url: url.clone(),
        password_file: None,
    })
    .await
    .unwrap();
    wait_for(
        "srv-b to defer for its clock",
        Duration::from_secs(30),
        || async {
            store.recent_journal(500).await.unwrap().iter().any(|l| {
                l.server == "srv-b"
                    && l.kind == "deferred"
                    && l.text.contains("takes no new leases")
            })
        },
    )
    .await;
    let journal = store.recent_journal(500).await.unwrap();
    let skew_line = journal
        .iter()
        .find(|l| l.server == "srv-b" && l.kind == "clock-skew")
        .expect("srv-b journals its skew");
    let said = format!("300 s {words} the store's");
    assert!(skew_line.text.contains(&said), "{}", skew_line.text);
    assert!(
        !journal
            .iter()
            .any(|l| l.server == "srv-b" && l.kind == "step-start"),
        "the skewed server ran nothing"
    );
    // Every step ran once: no step-start line twice for one escalation.
    let mut starts: Vec<(Option<u64>, &str)> = journal
        .iter()
        .filter(|l| l.kind == "step-start")
        .map(|l| (l.escalation, l.text.as_str()))
        .collect();
    let all = starts.len();
    assert!(all > 0, "srv-a ran its restart");
    starts.sort();
    starts.dedup();
    assert_eq!(starts.len(), all, "a step started twice: {journal:?}");
    let ran_text = std::fs::read_to_string(&ran).unwrap();
    assert!(!ran_text.contains("srv-b"), "{ran_text}");
    // Its /healthz says why; the other server's is fine.
    let (code, body) = http(b.http_addr().unwrap(), "GET", "/healthz", false, "").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(&said), "{body}");
    let (code, body) = http(a.http_addr().unwrap(), "GET", "/healthz", false, "").await;
    assert_eq!(code, 200, "{body}");
    // The journal's times follow its sequence, on the database's clock.
    let mut lines = journal.clone();
    lines.sort_by_key(|l| l.seq);
    let real_now = gemba_exec::Clock::new().now_ms();
    for pair in lines.windows(2) {
        assert!(
            pair[0].at_ms <= pair[1].at_ms,
            "out of time order: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    assert!(
        lines.iter().all(|l| l.at_ms <= real_now + 1000),
        "no line from the future"
    );
    a.shutdown().await;
    b.shutdown().await;
}
