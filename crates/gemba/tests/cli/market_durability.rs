//! Durability of report ingestion: a `gemba run` server is killed with
//! SIGKILL while 10,000 Puppet reports stream in from several clients.
//! Every report it acknowledged before the kill must be in the store after
//! a restart, and nothing may be stored twice: re-sending all 10,000 then
//! answers "duplicate" for each acknowledged one, and the store ends with
//! exactly 10,000 runs, each once.

use crate::common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{get, TempDir, BIN};

const HTTP: &str = "127.0.18.1:8777";
const REPORTS: usize = 10_000;
const CLIENTS: usize = 4;
/// Acknowledged reports before the kill: well inside the stream.
const KILL_AFTER: usize = 3_000;

fn report(i: usize) -> (String, String) {
    let node = format!("node-{}", i % 200);
    let uuid = format!("9d1f0c3e-0000-4000-8000-{i:012}");
    // Every 7th run fails the same way, so problems are written in the same
    // transactions as the runs.
    let (status, resource) = if i.is_multiple_of(7) {
        (
            "failed",
            "  Exec[fetch-from-scm]:\n    title: fetch-from-scm\n    resource_type: Exec\n    failed: true\n    changed: false\n    events:\n    - property: returns\n      status: failure\n      message: \"'/usr/bin/git fetch' returned 128 instead of one of [0]\"\n",
        )
    } else {
        (
            "unchanged",
            "  Exec[fetch-from-scm]:\n    title: fetch-from-scm\n    resource_type: Exec\n    failed: false\n    changed: false\n    events: []\n",
        )
    };
    // One run per node every 30 minutes from 2026-11-18 on.
    let minutes = (i / 200) * 30;
    let at = format!(
        "'2026-11-{}T{:02}:{:02}:00+00:00'",
        18 + minutes / 1440,
        (minutes % 1440) / 60,
        minutes % 60
    );
    let body = format!(
        "--- !ruby/object:Puppet::Transaction::Report\nhost: {node}\ntime: {at}\ntransaction_uuid: {uuid}\nreport_format: 12\nstatus: {status}\nenvironment: production\nconfiguration_version: 17\nlogs: []\nmetrics: {{}}\nresource_statuses:\n{resource}"
    );
    (format!("puppet:{uuid}"), body)
}

struct Server(Option<Child>);

impl Server {
    fn start(data: &std::path::Path) -> Server {
        let child = Command::new(BIN)
            .args([
                "run",
                &format!("--http={HTTP}"),
                "--listen=127.0.18.1:7946",
                &format!("--data-dir={}", data.display()),
                "--node-id=srv",
            ])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start gemba");
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(&format!("http://{HTTP}/healthz")).is_err() {
            assert!(Instant::now() < deadline, "gemba did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server(Some(child))
    }

    /// SIGKILL: no drain, no flush, as a crash or the OOM killer.
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

enum Answer {
    Accepted,
    Duplicate,
    /// The connection broke or the server refused: not acknowledged.
    Lost,
}

fn send(agent: &ureq::Agent, body: &str) -> Answer {
    let url = format!("http://{HTTP}/api/v1/reports/puppet");
    let Ok(mut r) = agent
        .post(&url)
        .header("content-type", "application/x-yaml")
        .send(body)
    else {
        return Answer::Lost;
    };
    let Ok(text) = r.body_mut().read_to_string() else {
        return Answer::Lost;
    };
    if text.contains("\"accepted\":1") {
        Answer::Accepted
    } else if text.contains("\"duplicate\":1") {
        Answer::Duplicate
    } else {
        panic!("unexpected answer: {text}");
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(false)
        .build()
        .into()
}

#[test]
fn acknowledged_reports_survive_a_kill_and_none_is_stored_twice() {
    let dir = TempDir::new("market-durability");
    let data = dir.path().join("data");
    let reports: Vec<(String, String)> = (0..REPORTS).map(report).collect();

    let mut server = Server::start(&data);
    let next = AtomicUsize::new(0);
    let acked = Mutex::new(Vec::new());
    let acked_count = AtomicUsize::new(0);
    let killed = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let agent = agent();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((key, body)) = reports.get(i) else {
                        return;
                    };
                    match send(&agent, body) {
                        Answer::Accepted => {
                            acked.lock().unwrap().push(key.clone());
                            acked_count.fetch_add(1, Ordering::SeqCst);
                        }
                        Answer::Duplicate => panic!("{key} was never sent before"),
                        // Once the server is gone every send fails; stop.
                        Answer::Lost if killed.load(Ordering::SeqCst) => return,
                        Answer::Lost => panic!("report {key} failed while the server ran"),
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while acked_count.load(Ordering::SeqCst) < KILL_AFTER {
            assert!(Instant::now() < deadline, "reports arrive too slowly");
            std::thread::sleep(Duration::from_millis(1));
        }
        killed.store(true, Ordering::SeqCst);
        server.kill();
    });
    let acked: HashSet<String> = acked.into_inner().unwrap().into_iter().collect();
    let sent = next.load(Ordering::SeqCst).min(REPORTS);
    assert!(
        acked.len() >= KILL_AFTER && sent < REPORTS,
        "the kill must fall inside the stream: {} acknowledged, {sent} sent",
        acked.len()
    );

    // After a restart every acknowledged report is there: sending it again
    // is a duplicate. Reports in flight at the kill may or may not have
    // been stored, but never half: they are accepted now or duplicates.
    let _server = Server::start(&data);
    let next = AtomicUsize::new(0);
    let accepted_again = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let agent = agent();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((key, body)) = reports.get(i) else {
                        return;
                    };
                    match send(&agent, body) {
                        Answer::Accepted => {
                            assert!(
                                !acked.contains(key),
                                "{key} was acknowledged before the kill but is not stored"
                            );
                            accepted_again.fetch_add(1, Ordering::SeqCst);
                        }
                        Answer::Duplicate => {}
                        Answer::Lost => panic!("report {key} failed after the restart"),
                    }
                }
            });
        }
    });
    assert!(
        accepted_again.load(Ordering::SeqCst) <= REPORTS - acked.len(),
        "more reports accepted again than were unacknowledged"
    );

    // The store: every run once.
    let (code, body) = get(&format!(
        "http://{HTTP}/api/v1/market?date=2026-11-20&format=json"
    ))
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let db = rusqlite::Connection::open_with_flags(
        data.join("gemba.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (rows, keys): (i64, i64) = db
        .query_row(
            "SELECT count(*), count(DISTINCT key) FROM market_runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(rows, REPORTS as i64, "runs stored");
    assert_eq!(keys, REPORTS as i64, "distinct runs stored");
    // The problem the failing runs make survived too, with its runs counted
    // once each.
    let (code, body) = get(&format!("http://{HTTP}/api/v1/problems")).unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let scm = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["sample"]["resource"] == "Exec[fetch-from-scm]")
        .expect("the SCM problem");
    assert_eq!(scm["nodes"], 200, "{scm}");
    let failing = (0..REPORTS).filter(|i| i.is_multiple_of(7)).count();
    assert_eq!(scm["occurrences"], failing, "{scm}");
}
