//! The contract of [`crate::MarketStore`], as executable checks: runs
//! stored once, problems with their evidence, reads by node and window,
//! values and pruning, and a commit from an old picture refused.

use std::future::Future;
use std::sync::Arc;

/// The contract of [`crate::MarketStore`]: two handles on one new, empty
/// store (the second stands for another server).
pub type MarketPair = (Arc<dyn crate::MarketStore>, Arc<dyn crate::MarketStore>);

/// Runs every market check on a fresh store each.
pub async fn run_market<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = MarketPair>,
{
    market_runs_are_stored_once_and_read_back(fresh().await).await;
    market_problems_keep_their_evidence_per_node(fresh().await).await;
    market_reads_by_node_time_and_window(fresh().await).await;
    market_values_nodes_fine_and_pruning(fresh().await).await;
    a_market_commit_from_an_old_picture_is_refused(fresh().await).await;
}

pub async fn a_market_commit_from_an_old_picture_is_refused((a, b): MarketPair) {
    assert_eq!(a.generation().await.unwrap(), 0, "a new market");
    let at = |g: u64, key: &str| crate::MarketBatch {
        runs: vec![run(key, "web-1", 1000, "failed")],
        generation: Some(g),
        ..Default::default()
    };
    a.commit(at(0, "r1")).await.unwrap();
    assert_eq!(
        b.generation().await.unwrap(),
        1,
        "one commit, one generation"
    );
    // b built its picture at generation 0, before a's commit.
    let err = b.commit(at(0, "r2")).await.expect_err("refused");
    assert!(
        matches!(err, crate::StoreError::Conflict(_)),
        "a conflict, not a failure: {err}"
    );
    assert!(
        b.run("r2").await.unwrap().is_none(),
        "nothing of a refused batch is stored"
    );
    assert_eq!(a.generation().await.unwrap(), 1);
    b.commit(at(1, "r2")).await.unwrap();
    a.commit(crate::MarketBatch::default()).await.unwrap();
    assert_eq!(
        b.generation().await.unwrap(),
        3,
        "a write without a generation counts too, so others notice it"
    );
}

fn run(key: &str, node: &str, started_ms: u64, status: &str) -> crate::RunRow {
    crate::RunRow {
        id: 0,
        key: key.into(),
        node: node.into(),
        tool: "puppet".into(),
        started_ms,
        duration_ms: Some(1200),
        status: status.into(),
        environment: "production".into(),
        code_version: "17".into(),
        total: 10,
        changed: 1,
        failed: u64::from(status == "failed"),
        digest: format!("digest of {key}"),
        body: format!("{{\"key\":\"{key}\"}}"),
    }
}

pub async fn market_runs_are_stored_once_and_read_back((a, b): MarketPair) {
    // A report may carry anything: a NUL, quotes, other scripts.
    let odd = "uuid-\u{0}-ünï 'x' \"y\"; DROP TABLE market_runs;";
    a.commit(crate::MarketBatch {
        runs: vec![
            run("r1", "web-1", 1000, "changed"),
            run(odd, "web-1", 2000, "failed"),
        ],
        starts: vec![crate::StartRow {
            run_id: "c1".into(),
            node: "web-2".into(),
            started_ms: 1500,
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut known = b
        .known_runs(vec!["r1".into(), "r9".into(), odd.into()])
        .await
        .unwrap();
    known.sort();
    let mut want = vec!["r1".to_string(), odd.to_string()];
    want.sort();
    assert_eq!(known, want, "known runs");
    let got = b.run(odd).await.unwrap().expect("the odd run");
    assert_eq!(got.key, odd);
    assert_eq!(got.body, format!("{{\"key\":\"{odd}\"}}"));
    assert_eq!(
        (got.status.as_str(), got.failed, got.duration_ms),
        ("failed", 1, Some(1200))
    );
    // A run stored already is left as it is.
    let mut again = run("r1", "web-1", 1000, "changed");
    again.body = "{\"changed\":true}".into();
    b.commit(crate::MarketBatch {
        runs: vec![again],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(a.run("r1").await.unwrap().unwrap().body, "{\"key\":\"r1\"}");
    assert_eq!(a.runs_after(0, 10).await.unwrap().len(), 2, "stored once");
    assert!(a.run("r9").await.unwrap().is_none());
}

pub async fn market_problems_keep_their_evidence_per_node((a, b): MarketPair) {
    let problem = |status: &str, nodes: Vec<(&str, &str)>, replace| crate::ProblemRow {
        id: 7,
        signature: "failed Service[shop] \u{0}".into(),
        status: status.into(),
        last_seen_ms: 5000,
        body: format!("{{\"status\":\"{status}\"}}"),
        nodes: nodes
            .into_iter()
            .map(|(n, e)| (n.to_string(), e.to_string()))
            .collect(),
        replace_nodes: replace,
    };
    a.commit(crate::MarketBatch {
        problems: vec![problem(
            "new",
            vec![("web-1", "e1"), ("web-2", "e2")],
            false,
        )],
        ..Default::default()
    })
    .await
    .unwrap();
    // One node's evidence rewritten, the other kept.
    b.commit(crate::MarketBatch {
        problems: vec![problem("open", vec![("web-2", "e2b")], false)],
        ..Default::default()
    })
    .await
    .unwrap();
    let p = &a.problems().await.unwrap()[0];
    assert_eq!((p.id, p.status.as_str()), (7, "open"));
    assert_eq!(p.signature, "failed Service[shop] \u{0}");
    let mut nodes = p.nodes.clone();
    nodes.sort();
    assert_eq!(
        nodes,
        vec![
            ("web-1".into(), "e1".into()),
            ("web-2".into(), "e2b".into())
        ]
    );
    // Replacing drops the rows not given.
    b.commit(crate::MarketBatch {
        problems: vec![problem("resolved", vec![("web-3", "e3")], true)],
        ..Default::default()
    })
    .await
    .unwrap();
    let p = &a.problems().await.unwrap()[0];
    assert_eq!(p.nodes, vec![("web-3".into(), "e3".into())]);
    assert_eq!(p.body, "{\"status\":\"resolved\"}");
}

pub async fn market_reads_by_node_time_and_window((a, b): MarketPair) {
    let mut runs = Vec::new();
    for i in 0..5u64 {
        runs.push(run(&format!("a{i}"), "web-1", 1000 + i * 100, "unchanged"));
        runs.push(run(
            &format!("b{i}"),
            "web-2",
            1050 + i * 100,
            if i == 4 { "failed" } else { "changed" },
        ));
    }
    a.commit(crate::MarketBatch {
        runs,
        nodes: vec![
            crate::NodeRow {
                node: "web-1".into(),
                body: "{}".into(),
            },
            crate::NodeRow {
                node: "web-2".into(),
                body: "{}".into(),
            },
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let newest: Vec<String> = b
        .node_runs("web-1", 2)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(newest, vec!["a4", "a3"], "a node's newest first");
    assert!(
        b.node_runs("web-1", 2).await.unwrap()[0].body.is_empty(),
        "lists leave bodies out"
    );
    // The two newest of each node since 1200, oldest first.
    let digests: Vec<(String, String)> = b.recent_digests(1200, 2).await.unwrap();
    assert_eq!(
        digests,
        vec![
            ("web-1".to_string(), "digest of a3".to_string()),
            ("web-2".into(), "digest of b3".into()),
            ("web-1".into(), "digest of a4".into()),
            ("web-2".into(), "digest of b4".into()),
        ]
    );
    let after = b.runs_after(0, 3).await.unwrap();
    assert_eq!(after.len(), 3);
    let rest = b.runs_after(after[2].id, 100).await.unwrap();
    assert_eq!(rest.len(), 7, "a cursor reads on from where it was");
    assert_eq!(
        b.run_counts(1000, 1400).await.unwrap(),
        crate::RunCounts {
            runs: 8,
            failed: 0,
            nodes: 2
        }
    );
    assert_eq!(b.run_counts(1400, 1500).await.unwrap().failed, 1);
}

pub async fn market_values_nodes_fine_and_pruning((a, b): MarketPair) {
    assert_eq!(a.get_value("cursor").await.unwrap(), None);
    a.set_value("cursor", "2026-11-22T00:00:00Z").await.unwrap();
    b.set_value("cursor", "2026-11-23T00:00:00Z").await.unwrap();
    assert_eq!(
        a.get_value("cursor").await.unwrap().as_deref(),
        Some("2026-11-23T00:00:00Z")
    );
    a.commit(crate::MarketBatch {
        runs: vec![
            run("old", "web-1", 100, "changed"),
            run("new", "web-1", 900, "changed"),
        ],
        starts: vec![crate::StartRow {
            run_id: "s-old".into(),
            node: "web-1".into(),
            started_ms: 100,
        }],
        nodes: vec![crate::NodeRow {
            node: "web-1".into(),
            body: "{\"runs\":1}".into(),
        }],
        fine: vec![("File[/etc/motd]".into(), "{\"n\":1}".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    b.commit(crate::MarketBatch {
        nodes: vec![crate::NodeRow {
            node: "web-1".into(),
            body: "{\"runs\":2}".into(),
        }],
        fine: vec![("File[/etc/motd]".into(), "{\"n\":2}".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(a.nodes().await.unwrap()[0].body, "{\"runs\":2}");
    // One batch naming a node twice: the later row wins.
    a.commit(crate::MarketBatch {
        nodes: vec![
            crate::NodeRow {
                node: "web-9".into(),
                body: "{\"v\":1}".into(),
            },
            crate::NodeRow {
                node: "web-9".into(),
                body: "{\"v\":2}".into(),
            },
        ],
        fine: vec![("k".into(), "1".into()), ("k".into(), "2".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let nodes = b.nodes().await.unwrap();
    assert_eq!(
        nodes.iter().find(|n| n.node == "web-9").unwrap().body,
        "{\"v\":2}"
    );
    assert!(b
        .fine()
        .await
        .unwrap()
        .contains(&("k".to_string(), "2".to_string())));
    let fine = a.fine().await.unwrap();
    assert!(
        fine.contains(&("File[/etc/motd]".to_string(), "{\"n\":2}".to_string())),
        "{fine:?}"
    );
    assert_eq!(fine.len(), 2, "one row per key: {fine:?}");
    assert_eq!(b.prune_runs(500).await.unwrap(), 1);
    assert!(a.run("old").await.unwrap().is_none());
    assert!(a.run("new").await.unwrap().is_some());
    assert_eq!(b.prune_runs(500).await.unwrap(), 0);
}
