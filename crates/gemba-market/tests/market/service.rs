//! The market task over a real SQLite store: what it remembers across a
//! restart must be what it had in memory. Two markets take the same runs;
//! one keeps running, the other is stopped and started again from its
//! store after every hour of runs. Their problems — kinds, statuses,
//! evidence per node, counts — must stay the same at every step, through
//! an outage that resolves and regresses, a failure that flaps, a
//! non-idempotent resource and a failure on fresh nodes only. Then two
//! servers share one store, each taking half of every hour's runs at the
//! same time: the market stored must be the one a single server builds.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::{changing, failing, run, H, T0};
use gemba_core::config::StoreLocation;
use gemba_exec::Clock;
use gemba_market::detect::Thresholds;
use gemba_market::run::Run;
use gemba_market::service::{self, MarketHandle};
use gemba_market::Parsed;
use gemba_store::MarketStore;

async fn open(path: &Path) -> Arc<dyn MarketStore> {
    gemba_store::open_market(&StoreLocation::Sqlite(path.to_path_buf()))
        .await
        .expect("open the store")
}

struct Market {
    handle: MarketHandle,
    task: tokio::task::JoinHandle<()>,
}

async fn start(store: Arc<dyn MarketStore>) -> Market {
    let (handle, task) = service::start(store, Thresholds::default(), Clock::starting_at(T0))
        .await
        .expect("start the market");
    Market {
        handle,
        task: tokio::spawn(task),
    }
}

impl Market {
    async fn stop(self) {
        drop(self.handle);
        self.task.await.expect("the market task ends");
    }

    /// Every problem as the API shows it, plus what is derived and not
    /// stored (flaps), by id.
    async fn snapshot(&self) -> BTreeMap<u64, (serde_json::Value, u32)> {
        self.handle
            .problems()
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.id, (serde_json::to_value(&p).unwrap(), p.flaps)))
            .collect()
    }
}

/// One hour of runs: every node runs once; what fails where is decided by
/// the hour.
fn hour(h: u64) -> Vec<Run> {
    let at = |n: u64| T0 + h * H + n * 60_000;
    let mut runs = Vec::new();
    for n in 0..30u64 {
        let name = format!("node-{n}");
        // Fresh nodes join at hour 3.
        if n >= 26 && h < 3 {
            continue;
        }
        let mut r = run(&name, at(n));
        r.ok_resources.push("Exec[deploy-app]".into());
        // An SCM outage on ten nodes at hour 1, back on node 3 at hour 7.
        if (n < 10 && h == 1) || (n == 3 && h == 7) {
            r = failing(
                r,
                "Exec",
                "fetch-code",
                "'/usr/bin/git fetch' returned 128 instead of one of [0]",
            );
        }
        // A deploy that fails on node 12 now and then.
        if n == 12 && (h == 2 || h == 5 || h == 8) {
            r = failing(r, "Exec", "deploy-app", "deploy failed: timeout after 30 s");
        }
        // A service that will not start on fresh nodes' first two runs.
        if n >= 26 && h < 5 {
            r = failing(r, "Service", "app", "Could not start Service[app]: exit 1");
        }
        // An exec that runs every time on the web nodes.
        if (20..25).contains(&n) {
            r = changing(r, "Exec", "always-restart-app", "returns", n == 20);
        }
        runs.push(r);
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_market_restarted_from_its_store_keeps_every_problem_as_it_was() {
    let dir = std::env::temp_dir().join(format!("gemba-market-service-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let steady = start(open(&dir.join("steady.db")).await).await;
    let mut restarted = start(open(&dir.join("restarted.db")).await).await;

    for h in 0..10 {
        let runs = hour(h);
        // Documents of one to five runs, as several senders would post them.
        for (i, chunk) in runs.chunks(1 + (h as usize % 5)).enumerate() {
            for m in [&steady, &restarted] {
                let docs: Vec<Parsed> = chunk
                    .iter()
                    .map(|r| Parsed::Run(Box::new(r.clone())))
                    .collect();
                let got = m.handle.ingest(docs).await.unwrap();
                assert_eq!(got.accepted as usize, chunk.len(), "hour {h} chunk {i}");
            }
        }
        restarted.stop().await;
        restarted = start(open(&dir.join("restarted.db")).await).await;
        let (a, b) = (steady.snapshot().await, restarted.snapshot().await);
        assert_eq!(a.len(), b.len(), "hour {h}: problems");
        for (id, want) in &a {
            let got = b.get(id).expect("the problem after a restart");
            assert_eq!(want.1, got.1, "hour {h}: P-{id} flaps");
            for (field, value) in want.0.as_object().unwrap() {
                assert_eq!(
                    Some(value),
                    got.0.get(field),
                    "hour {h}: P-{id} {field} differs after a restart"
                );
            }
            assert_eq!(want.0, got.0, "hour {h}: P-{id}");
        }
    }

    // The history made each kind, and the statuses moved.
    let end = steady.snapshot().await;
    let kind_of = |resource: &str| {
        end.values()
            .find(|(p, _)| p["sample"]["resource"] == resource)
            .map(|(p, _)| (p["kind"].clone(), p["status"].clone()))
    };
    assert_eq!(
        kind_of("Exec[fetch-code]"),
        Some(("external-outage".into(), "regressed".into()))
    );
    assert_eq!(
        kind_of("Exec[deploy-app]").map(|k| k.0),
        Some("intermittent".into())
    );
    assert_eq!(
        kind_of("Service[app]").map(|k| k.0),
        Some("bootstrap-failure".into())
    );
    assert_eq!(
        kind_of("Exec[always-restart-app]").map(|k| k.0),
        Some("not-idempotent".into())
    );
    let outage = end
        .values()
        .find(|(p, _)| p["sample"]["resource"] == "Exec[fetch-code]")
        .unwrap();
    assert_eq!(outage.0["nodes"].as_object().map(|n| n.len()), Some(10));

    steady.stop().await;
    restarted.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Problems by signature, without their ids (one server and two number
/// them in another order).
async fn by_signature(m: &Market) -> BTreeMap<String, serde_json::Value> {
    m.handle
        .problems()
        .await
        .unwrap()
        .into_iter()
        .map(|p| {
            let mut v = serde_json::to_value(&p).unwrap();
            v.as_object_mut().unwrap().remove("id");
            (p.signature.clone(), v)
        })
        .collect()
}

fn docs(runs: &[Run]) -> Vec<Parsed> {
    runs.iter()
        .map(|r| Parsed::Run(Box::new(r.clone())))
        .collect()
}

/// Two servers share `shared()`: first they take turns, run by run, in the
/// order one server gets them (the market stored must be exactly that
/// server's: each write from an old picture is refused, reloaded, redone);
/// then they take half of every hour each at the same time (arrival order
/// differs, so details do; what problems exist, on which nodes, must not,
/// and no run or id may be lost or doubled).
async fn two_servers_build_the_market_one_server_builds(
    shared: impl Fn() -> Arc<dyn MarketStore>,
    dir: &Path,
) {
    let one = start(open(&dir.join("one.db")).await).await;
    let a = start(shared()).await;
    let b = start(shared()).await;
    let check = |h: u64, exact: bool| {
        let (one, shared) = (&one, &shared);
        async move {
            // A server started now reads the shared store.
            let reader = start(shared()).await;
            let (want, got) = (by_signature(one).await, by_signature(&reader).await);
            assert_eq!(
                want.keys().collect::<Vec<_>>(),
                got.keys().collect::<Vec<_>>(),
                "hour {h}: the same problems"
            );
            for (sig, w) in &want {
                let g = &got[sig];
                if exact {
                    assert_eq!(w, g, "hour {h}: problem {sig}");
                } else {
                    let nodes = |v: &serde_json::Value| {
                        v["nodes"]
                            .as_object()
                            .unwrap()
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(nodes(w), nodes(g), "hour {h}: nodes of {sig}");
                    assert_eq!(w["occurrences"], g["occurrences"], "hour {h}: {sig}");
                }
            }
            let ids: std::collections::BTreeSet<u64> = reader
                .handle
                .problems()
                .await
                .unwrap()
                .iter()
                .map(|p| p.id)
                .collect();
            assert_eq!(ids.len(), got.len(), "hour {h}: problem ids are unique");
            let stored = reader.handle.store().runs_after(0, 100_000).await.unwrap();
            let local = one.handle.store().runs_after(0, 100_000).await.unwrap();
            assert_eq!(stored.len(), local.len(), "hour {h}: every run stored once");
            reader.stop().await;
        }
    };
    for h in 0..5 {
        for (i, r) in hour(h).iter().enumerate() {
            one.handle
                .ingest(docs(std::slice::from_ref(r)))
                .await
                .unwrap();
            let m = if i % 2 == 0 { &a } else { &b };
            let got = m
                .handle
                .ingest(docs(std::slice::from_ref(r)))
                .await
                .unwrap();
            assert_eq!(got.accepted, 1, "hour {h}: run {i} acknowledged");
        }
        check(h, true).await;
    }
    for h in 5..10 {
        let runs = hour(h);
        one.handle.ingest(docs(&runs)).await.unwrap();
        let half = |odd: bool| -> Vec<Run> {
            runs.iter()
                .enumerate()
                .filter(|(i, _)| (i % 2 == 1) == odd)
                .map(|(_, r)| r.clone())
                .collect()
        };
        let send = |m: &MarketHandle, runs: Vec<Run>| {
            let m = m.clone();
            async move {
                for r in runs {
                    let got = m.ingest(docs(&[r])).await.expect("acknowledged");
                    assert_eq!(got.accepted, 1);
                }
            }
        };
        tokio::join!(send(&a.handle, half(false)), send(&b.handle, half(true)));
        check(h, false).await;
    }
    for m in [one, a, b] {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_sqlite_file_build_the_market_one_server_builds() {
    let dir = std::env::temp_dir().join(format!("gemba-market-shared-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shared.db");
    let stores: Vec<Arc<dyn MarketStore>> =
        vec![open(&path).await, open(&path).await, open(&path).await];
    let next = std::sync::Mutex::new(stores.into_iter().cycle());
    two_servers_build_the_market_one_server_builds(|| next.lock().unwrap().next().unwrap(), &dir)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgresql_build_the_market_one_server_builds() {
    let cluster = match gemba_store::throwaway::Cluster::start("market-two") {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let url = cluster.database().await;
    let mut stores: Vec<Arc<dyn MarketStore>> = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(
            gemba_store::PgStore::connect(&url, None).await.unwrap(),
        ));
    }
    let next = std::sync::Mutex::new(stores.into_iter().cycle());
    let dir = std::env::temp_dir().join(format!("gemba-market-shared-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    two_servers_build_the_market_one_server_builds(|| next.lock().unwrap().next().unwrap(), &dir)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn problems_stored_whole_by_an_earlier_version_are_read_and_split_on_the_next_commit() {
    let dir = std::env::temp_dir().join(format!("gemba-market-whole-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = open(&dir.join("m.db")).await;
    // A problem on two nodes, its evidence inside its record.
    let m = start(store.clone()).await;
    for n in ["node-a", "node-b"] {
        let r = failing(run(n, T0), "Exec", "fetch-code", "git fetch failed");
        m.handle
            .ingest(vec![Parsed::Run(Box::new(r))])
            .await
            .unwrap();
    }
    let p = m.handle.problems().await.unwrap().remove(0);
    m.stop().await;
    let whole = gemba_store::ProblemRow {
        id: p.id,
        signature: p.signature.clone(),
        status: p.status.as_str().into(),
        last_seen_ms: p.last_seen_ms,
        body: serde_json::to_string(&p).unwrap(),
        nodes: Vec::new(),
        replace_nodes: true,
    };
    store
        .commit(gemba_store::MarketBatch {
            problems: vec![whole],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(store.problems().await.unwrap()[0].nodes.is_empty());

    let m = start(store.clone()).await;
    let read = m.handle.problem(p.id).await.unwrap().unwrap();
    assert_eq!(
        read.nodes.keys().collect::<Vec<_>>(),
        vec!["node-a", "node-b"]
    );
    m.handle
        .ingest(vec![Parsed::Run(Box::new(run("node-c", T0 + H)))])
        .await
        .unwrap();
    let rows = store.problems().await.unwrap();
    let nodes: Vec<&str> = rows[0].nodes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(nodes, vec!["node-a", "node-b"], "evidence now in rows");
    m.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
