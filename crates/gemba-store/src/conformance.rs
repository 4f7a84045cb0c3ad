//! The contract of [`Store`], as executable checks. Every implementation
//! runs [`run_all`] in its tests (SQLite in `tests/conformance.rs`); a
//! second database passes the same checks before a caller may rely on it.
//!
//! The checks use only the trait. `fresh` must give two handles on one new,
//! empty store: the second stands for another server sharing it, so the
//! checks of leases, step claims and notice claims hold across servers.

use std::future::Future;
use std::sync::Arc;

use crate::{Claim, EscalationRow, Fence, JournalRow, Pruned, Store};

/// Two handles on one empty store.
pub type Pair = (Arc<dyn Store>, Arc<dyn Store>);

/// Runs every check on a fresh store each; panics naming the first check
/// that fails.
pub async fn run_all<F, Fut>(backend: crate::Backend, fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Pair>,
{
    journal_is_ordered_and_filtered(fresh().await).await;
    escalation_ids_are_unique_across_servers(fresh().await).await;
    escalation_records_are_upserted_and_listed(fresh().await).await;
    a_lease_has_one_holder_until_it_expires(fresh().await).await;
    a_step_is_claimed_once_across_servers(fresh().await).await;
    a_stale_fence_writes_nothing(fresh().await).await;
    a_due_notice_is_claimed_by_one_server_and_retried_later(fresh().await).await;
    pruning_keeps_open_escalations_and_recent_lines(fresh().await).await;
    text_round_trips_unchanged(fresh().await).await;
    every_stage_reports_a_schema(backend, fresh().await).await;
}

fn line(escalation: Option<u64>, at_ms: u64, text: &str) -> JournalRow {
    JournalRow {
        seq: 0,
        escalation,
        scope: "node:web-1".into(),
        at_ms,
        kind: "decision".into(),
        text: text.into(),
        server: "s1".into(),
    }
}

fn record(id: u64, open: bool, opened_ms: u64, updated_ms: u64) -> EscalationRow {
    EscalationRow {
        id,
        scope: format!("node:n{id}"),
        phase: if open { "quiescing" } else { "resolved" }.into(),
        open,
        opened_ms,
        updated_ms,
        body: format!("{{\"id\":{id}}}"),
    }
}

fn texts(rows: Vec<JournalRow>) -> Vec<String> {
    rows.into_iter().map(|r| r.text).collect()
}

pub async fn journal_is_ordered_and_filtered((s, _): Pair) {
    let a = s.append(line(Some(1), 10, "first")).await.unwrap();
    let b = s.append(line(Some(2), 11, "other")).await.unwrap();
    let c = s.append(line(Some(1), 12, "second")).await.unwrap();
    s.append(line(None, 13, "no escalation")).await.unwrap();
    assert!(
        a < b && b < c,
        "journal: sequence numbers grow: {a} {b} {c}"
    );
    let one = texts(s.journal(1).await.unwrap());
    assert_eq!(
        one,
        ["first", "second"],
        "journal: one escalation's lines, oldest first"
    );
    let recent = texts(s.recent_journal(2).await.unwrap());
    assert_eq!(
        recent,
        ["no escalation", "second"],
        "journal: newest first, limited"
    );
    assert!(
        s.journal(99).await.unwrap().is_empty(),
        "journal: unknown escalation"
    );
}

pub async fn escalation_ids_are_unique_across_servers((a, b): Pair) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(a.next_escalation_id().await.unwrap());
        ids.push(b.next_escalation_id().await.unwrap());
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "escalation ids: unique and growing across servers: {ids:?}"
    );
}

pub async fn escalation_records_are_upserted_and_listed((s, other): Pair) {
    assert!(
        s.escalation(1).await.unwrap().is_none(),
        "unknown escalation"
    );
    for (id, open, opened, updated) in [
        (1, false, 100, 150),
        (2, false, 200, 250),
        (3, true, 300, 300),
    ] {
        s.save_escalation(record(id, open, opened, updated), None)
            .await
            .unwrap();
    }
    let mut changed = record(3, true, 300, 320);
    changed.phase = "running".into();
    s.save_escalation(changed.clone(), None).await.unwrap();
    assert_eq!(
        other.escalation(3).await.unwrap(),
        Some(changed),
        "a saved record replaces the old one, for every server"
    );
    let listed: Vec<u64> = s
        .escalations(1)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        listed,
        [3, 2],
        "every open one and the newest closed, newest id first"
    );
    let since: Vec<u64> = {
        let mut v: Vec<u64> = s
            .opened_since(200)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        v.sort();
        v
    };
    assert_eq!(since, [2, 3], "opened since 200 (and every open one)");
}

pub async fn a_lease_has_one_holder_until_it_expires((a, b): Pair) {
    let first = a.acquire_lease("node:a", "s1", 1000, 30_000).await.unwrap();
    let first = first.expect("lease: a free scope is taken");
    assert_eq!(
        (first.scope.as_str(), first.holder.as_str()),
        ("node:a", "s1")
    );
    assert_eq!(
        b.acquire_lease("node:a", "s2", 2000, 30_000).await.unwrap(),
        None,
        "lease: another server is refused while it is valid"
    );
    assert_eq!(
        a.acquire_lease("node:a", "s1", 20_000, 30_000)
            .await
            .unwrap(),
        Some(first.clone()),
        "lease: the holder renews, keeping its fence"
    );
    assert_eq!(
        b.lease_holder("node:a", 20_001).await.unwrap().as_deref(),
        Some("s1")
    );
    let second = b
        .acquire_lease("node:a", "s2", 50_000, 30_000)
        .await
        .unwrap();
    let second = second.expect("lease: an expired lease goes to the next");
    assert!(
        second.token > first.token,
        "lease: a new holder gets a larger fence ({} after {})",
        second.token,
        first.token
    );
    a.release_lease("node:a", "s1").await.unwrap();
    assert_eq!(
        a.lease_holder("node:a", 50_001).await.unwrap().as_deref(),
        Some("s2"),
        "lease: only the holder releases"
    );
    b.release_lease("node:a", "s2").await.unwrap();
    assert_eq!(a.lease_holder("node:a", 50_002).await.unwrap(), None);
    assert_eq!(a.lease_holder("node:other", 1).await.unwrap(), None);
    let again = b
        .acquire_lease("node:a", "s2", 50_003, 30_000)
        .await
        .unwrap();
    assert_eq!(
        again,
        Some(second.clone()),
        "lease: a released lease is free, and its last holder taking it again keeps its fence"
    );
    b.release_lease("node:a", "s2").await.unwrap();
    let third = a
        .acquire_lease("node:a", "s1", 50_004, 30_000)
        .await
        .unwrap();
    assert!(
        third.expect("lease: a released lease is free").token > second.token,
        "lease: a released lease taken by another server gets a larger fence"
    );
}

async fn lease(s: &Arc<dyn Store>, scope: &str, holder: &str, now: u64) -> Fence {
    s.acquire_lease(scope, holder, now, 30_000)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{holder} cannot take the lease on {scope}"))
}

pub async fn a_step_is_claimed_once_across_servers((a, b): Pair) {
    let fa = lease(&a, "node:n7", "s1", 1).await;
    assert_eq!(a.claim_step(&fa, 7, 1, 4, 1).await.unwrap(), Claim::Claimed);
    assert_eq!(
        a.claim_step(&fa, 7, 1, 4, 3).await.unwrap(),
        Claim::Taken,
        "step: not twice by its holder"
    );
    assert_eq!(
        a.claim_step(&fa, 7, 2, 4, 3).await.unwrap(),
        Claim::Claimed,
        "step: a new attempt is a new step"
    );
    // The lease passes to b (a's expired): b may not run what a ran.
    let fb = lease(&b, "node:n7", "s2", 40_000).await;
    assert_eq!(
        b.claim_step(&fb, 7, 1, 4, 40_001).await.unwrap(),
        Claim::Taken,
        "step: claimed once across servers"
    );
    assert_eq!(
        b.claim_step(&fb, 7, 1, 5, 40_001).await.unwrap(),
        Claim::Claimed,
        "step: another level is another step"
    );
}

pub async fn a_stale_fence_writes_nothing((a, b): Pair) {
    let fa = lease(&a, "node:n1", "s1", 1000).await;
    a.save_escalation(record(1, true, 1000, 1000), Some(&fa))
        .await
        .unwrap();
    // a is paused past its lease; b takes the scope over.
    let fb = lease(&b, "node:n1", "s2", 40_000).await;
    let mut mine = record(1, true, 1000, 40_001);
    mine.phase = "verifying".into();
    assert!(b.save_escalation(mine.clone(), Some(&fb)).await.unwrap());
    // a wakes up and carries on as if it still held the lease.
    let mut stale = record(1, true, 1000, 40_002);
    stale.phase = "running".into();
    assert!(
        !a.save_escalation(stale, Some(&fa)).await.unwrap(),
        "fence: a record write with a stale fence is refused"
    );
    assert_eq!(
        b.escalation(1).await.unwrap(),
        Some(mine),
        "fence: the new holder's record stands"
    );
    assert_eq!(
        a.claim_step(&fa, 1, 1, 6, 40_003).await.unwrap(),
        Claim::Fenced,
        "fence: a step claim with a stale fence is refused"
    );
    assert_eq!(
        b.claim_step(&fb, 1, 1, 6, 40_004).await.unwrap(),
        Claim::Claimed,
        "fence: the step stays free for the new holder"
    );
    // The holder's own lease, once expired, claims nothing either.
    assert_eq!(
        b.claim_step(&fb, 1, 1, 7, 70_001).await.unwrap(),
        Claim::Fenced,
        "lease: an expired lease claims no step"
    );
    let forged = Fence {
        token: fb.token + 1,
        ..fb.clone()
    };
    assert_eq!(
        b.claim_step(&forged, 1, 1, 8, 40_005).await.unwrap(),
        Claim::Fenced,
        "fence: only the current token counts, not a larger one"
    );
}

pub async fn a_due_notice_is_claimed_by_one_server_and_retried_later((a, b): Pair) {
    let first = a.enqueue_notice("hook", "{\"n\":1}", 1000).await.unwrap();
    let second = a.enqueue_notice("mail", "{\"n\":2}", 1001).await.unwrap();
    assert!(
        a.claim_due_notices(999, 60_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let got = a.claim_due_notices(2000, 60_000, 1).await.unwrap();
    assert_eq!(got.len(), 1, "outbox: the limit holds");
    assert_eq!(
        (got[0].id, got[0].target.as_str(), got[0].attempts),
        (first, "hook", 0)
    );
    let got = b.claim_due_notices(2000, 60_000, 10).await.unwrap();
    assert_eq!(
        got.iter().map(|r| r.id).collect::<Vec<_>>(),
        [second],
        "outbox: a claimed notice is not handed to another server"
    );
    a.notice_failed(first, 1, 7000, "http status: 503")
        .await
        .unwrap();
    assert!(b
        .claim_due_notices(6999, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    let again = b.claim_due_notices(7000, 60_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].attempts, again[0].last_error.as_str()),
        (1, "http status: 503")
    );
    a.notice_done(second).await.unwrap();
    let pending = b.pending_notices().await.unwrap();
    assert_eq!(
        pending.iter().map(|r| r.id).collect::<Vec<_>>(),
        [first],
        "done is gone"
    );
    assert_eq!(pending[0].created_ms, 1000);
    // A server that claimed and stopped: the notice is due again after the claim.
    assert_eq!(
        a.claim_due_notices(67_001, 60_000, 10).await.unwrap().len(),
        1
    );
}

pub async fn pruning_keeps_open_escalations_and_recent_lines((s, _): Pair) {
    for r in [
        record(1, false, 100, 200),
        record(2, true, 100, 200),
        record(3, false, 100, 5000),
    ] {
        s.save_escalation(r, None).await.unwrap();
    }
    s.append(line(Some(1), 150, "closed, old")).await.unwrap();
    s.append(line(Some(2), 150, "open, old")).await.unwrap();
    s.append(line(None, 150, "no escalation, old"))
        .await
        .unwrap();
    s.append(line(Some(3), 4000, "closed, recent"))
        .await
        .unwrap();
    let f = s.acquire_lease("node:n1", "s1", 100, 60_000).await.unwrap();
    assert_eq!(
        s.claim_step(&f.unwrap(), 1, 1, 1, 150).await.unwrap(),
        Claim::Claimed
    );
    let pruned = s.prune(1000).await.unwrap();
    assert_eq!(
        pruned,
        Pruned {
            journal: 2,
            escalations: 1
        }
    );
    assert!(
        s.escalation(1).await.unwrap().is_none(),
        "old closed record pruned"
    );
    assert!(s.escalation(2).await.unwrap().is_some(), "open record kept");
    assert!(
        s.escalation(3).await.unwrap().is_some(),
        "recent closed record kept"
    );
    let left = texts(s.recent_journal(10).await.unwrap());
    assert_eq!(left, ["closed, recent", "open, old"]);
    assert_eq!(
        s.prune(1000).await.unwrap(),
        Pruned::default(),
        "pruning twice removes nothing"
    );
}

pub async fn text_round_trips_unchanged((s, other): Pair) {
    let text = format!(
        "ünïcode ✓ 'quotes' \"double\" \\ {{}} ; DROP TABLE journal; {}",
        "x".repeat(100_000)
    );
    s.append(line(Some(9), 1, &text)).await.unwrap();
    assert_eq!(other.journal(9).await.unwrap()[0].text, text);
    let id = s.enqueue_notice("t\u{0}arget", &text, 1).await.unwrap();
    let got = other.pending_notices().await.unwrap();
    assert_eq!(
        (got[0].id, got[0].target.as_str(), got[0].body.as_str()),
        (id, "t\u{0}arget", text.as_str())
    );
}

pub async fn every_stage_reports_a_schema(backend: crate::Backend, (s, _): Pair) {
    let schema = s.schema().await.unwrap();
    for stage in crate::STAGES.iter().filter(|st| st.newest(backend) > 0) {
        assert!(
            schema
                .iter()
                .any(|(name, v)| name == stage.name && *v as usize == stage.newest(backend)),
            "stage {} is at its newest schema: {schema:?}",
            stage.name
        );
    }
}

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

/// The contract of [`crate::TimelineStore`]: two handles on one new,
/// empty store.
pub type TimelinePair = (Arc<dyn crate::TimelineStore>, Arc<dyn crate::TimelineStore>);

/// Runs every timeline check on a fresh store each.
pub async fn run_timeline<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = TimelinePair>,
{
    timeline_events_are_found_by_window_tag_and_kind_once_per_origin(fresh().await).await;
    timeline_points_move_roll_up_and_expire(fresh().await).await;
    timeline_series_stop_at_the_cap(fresh().await).await;
    timeline_changes_are_read_by_window_and_node(fresh().await).await;
    timeline_incident_updates_name_the_version_they_read(fresh().await).await;
    timeline_a_ballot_counts_once_and_only_while_voting(fresh().await).await;
    timeline_action_items_are_done_once(fresh().await).await;
}

fn event(at_ms: u64, kind: &str, tags: &[&str], origin: Option<&str>) -> crate::EventRow {
    crate::EventRow {
        id: 0,
        at_ms,
        end_ms: None,
        kind: kind.into(),
        what: format!("{kind} at {at_ms}"),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        text: "step output\u{0}with a NUL".into(),
        author: "ci".into(),
        link: String::new(),
        source: "api".into(),
        origin: origin.map(str::to_string),
    }
}

pub async fn timeline_events_are_found_by_window_tag_and_kind_once_per_origin(
    (a, b): TimelinePair,
) {
    let ids = a
        .add_events(vec![
            event(1000, "deploy", &["service=shop", "host=web-1"], None),
            event(2000, "escalation", &["host=web-1"], Some("journal:1")),
            event(3000, "deploy", &["service=cart"], None),
        ])
        .await
        .unwrap();
    assert!(ids.iter().all(Option::is_some));
    // A follower replaying after a restart adds nothing.
    let again = b
        .add_events(vec![event(2000, "escalation", &[], Some("journal:1"))])
        .await
        .unwrap();
    assert_eq!(again, vec![None]);
    let all = |f: crate::EventFilter| {
        let b = b.clone();
        async move {
            b.events(f)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.at_ms)
                .collect::<Vec<_>>()
        }
    };
    let base = crate::EventFilter {
        since_ms: 0,
        until_ms: 10_000,
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        all(base.clone()).await,
        vec![3000, 2000, 1000],
        "newest first"
    );
    assert_eq!(
        all(crate::EventFilter {
            tags: vec!["host=web-1".into()],
            ..base.clone()
        })
        .await,
        vec![2000, 1000]
    );
    assert_eq!(
        all(crate::EventFilter {
            kind: Some("deploy".into()),
            since_ms: 1500,
            ..base.clone()
        })
        .await,
        vec![3000]
    );
    let one = b.event(ids[0].unwrap()).await.unwrap().unwrap();
    assert_eq!(one.text, "step output\u{0}with a NUL");
    assert_eq!(one.tags, vec!["service=shop", "host=web-1"]);
    a.set_timeline_value("cursor", "17").await.unwrap();
    assert_eq!(
        b.timeline_value("cursor").await.unwrap().as_deref(),
        Some("17")
    );
    assert_eq!(b.prune_events(2500).await.unwrap(), 2);
    assert_eq!(all(base).await, vec![3000]);
}

pub async fn timeline_points_move_roll_up_and_expire((a, b): TimelinePair) {
    let key = |m: &str| crate::SeriesKey {
        node: "web-1".into(),
        process: "shop".into(),
        metric: m.into(),
    };
    let ids = a
        .series_ids(vec![key("rss"), key("fds")], 100)
        .await
        .unwrap();
    let (rss, fds) = (ids[0].unwrap(), ids[1].unwrap());
    assert_eq!(
        b.series_ids(vec![key("rss")], 100).await.unwrap(),
        vec![Some(rss)]
    );
    // Two minutes of points; a second value for a second replaces it.
    let mut points: Vec<(i64, u64, f64)> = (0..120).map(|s| (rss, 6000 + s, s as f64)).collect();
    points.push((fds, 6000, 5.0));
    a.write_points(points).await.unwrap();
    b.write_points(vec![(fds, 6000, 7.0)]).await.unwrap();
    let raw = b.points(fds, crate::Tier::Raw, 0, 10_000).await.unwrap();
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].v, 7.0);
    // Compaction moves old points out of the head; reads see both.
    assert_eq!(b.compact(6060).await.unwrap(), 61);
    assert_eq!(
        a.points(rss, crate::Tier::Raw, 6000, 6119)
            .await
            .unwrap()
            .len(),
        120
    );
    assert_eq!(
        a.roll_up(crate::Tier::Raw, crate::Tier::Minute, 6000, 6120)
            .await
            .unwrap(),
        3
    );
    // Rolling up again gives the same buckets.
    a.roll_up(crate::Tier::Raw, crate::Tier::Minute, 6000, 6120)
        .await
        .unwrap();
    let minutes = b.points(rss, crate::Tier::Minute, 0, 10_000).await.unwrap();
    let got: Vec<(u64, f64, f64, f64)> = minutes.iter().map(|p| (p.t, p.v, p.min, p.max)).collect();
    assert_eq!(
        got,
        vec![(6000, 29.5, 0.0, 59.0), (6060, 89.5, 60.0, 119.0)]
    );
    a.roll_up(crate::Tier::Minute, crate::Tier::Hour, 3600, 7200)
        .await
        .unwrap();
    let hour = b.points(rss, crate::Tier::Hour, 0, 10_000).await.unwrap();
    assert_eq!((hour[0].t, hour[0].v, hour[0].max), (3600, 59.5, 119.0));
    let counts = b.point_counts().await.unwrap();
    assert_eq!(
        (counts.raw, counts.minute, counts.hour, counts.series),
        (121, 3, 2, 2)
    );
    assert_eq!(a.prune_points(crate::Tier::Raw, 6100).await.unwrap(), 101);
    assert_eq!(
        b.points(rss, crate::Tier::Raw, 0, 10_000)
            .await
            .unwrap()
            .len(),
        20
    );
    assert_eq!(a.prune_points(crate::Tier::Minute, 6060).await.unwrap(), 2);
}

pub async fn timeline_series_stop_at_the_cap((a, b): TimelinePair) {
    let key = |n: usize| crate::SeriesKey {
        node: format!("n{n}"),
        process: "host".into(),
        metric: "load1".into(),
    };
    let got = a.series_ids((0..3).map(key).collect(), 2).await.unwrap();
    assert!(
        got[0].is_some() && got[1].is_some() && got[2].is_none(),
        "{got:?}"
    );
    // Known ones still answer at the cap.
    assert_eq!(b.series_ids(vec![key(1)], 2).await.unwrap(), vec![got[1]]);
    assert_eq!(b.series().await.unwrap().len(), 2);
}

pub async fn timeline_changes_are_read_by_window_and_node((a, b): TimelinePair) {
    let change = |at_ms: u64, node: &str, peer: &str| crate::ChangeRow {
        at_ms,
        kind: if peer.is_empty() { "check" } else { "link" }.into(),
        subject: format!("{node}>{peer}"),
        node: node.into(),
        peer: peer.into(),
        state: "down".into(),
        previous: "up".into(),
        detail: "output \u{0} with a NUL".into(),
    };
    a.add_changes(vec![
        change(100, "web-1", ""),
        change(200, "db-1", "web-1"),
        change(300, "db-1", ""),
        change(400, "", ""),
        change(900, "web-1", ""),
    ])
    .await
    .unwrap();
    let got: Vec<u64> = b
        .changes(0, 500, vec!["web-1".into()], 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.at_ms)
        .collect();
    assert_eq!(
        got,
        vec![100, 200, 400],
        "its node, as observer or target, and none"
    );
    assert_eq!(b.changes(0, 500, vec![], 100).await.unwrap().len(), 1);
    assert_eq!(
        b.changes(0, 1000, vec!["web-1".into()], 2)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        b.changes(0, 100, vec!["web-1".into()], 9).await.unwrap()[0].detail,
        "output \u{0} with a NUL"
    );
    assert_eq!(a.prune_changes(300).await.unwrap(), 2);
}

pub async fn timeline_incident_updates_name_the_version_they_read((a, b): TimelinePair) {
    let (id, new) = a.add_incident(5, "{}".into(), vec![7]).await.unwrap();
    assert!(new);
    assert_eq!(b.incident_of(7).await.unwrap(), Some(id));
    let read = b.incident(id).await.unwrap().unwrap();
    assert_eq!((read.version, read.escalations.clone()), (1, vec![7]));
    assert!(b
        .update_incident(id, 1, None, "{\"a\":1}".into(), vec![8])
        .await
        .unwrap());
    assert!(
        !a.update_incident(id, 1, Some(9), "{\"b\":1}".into(), vec![])
            .await
            .unwrap(),
        "a write from a stale read is refused"
    );
    let now = a.incident(id).await.unwrap().unwrap();
    assert_eq!(
        (now.version, now.body.as_str(), now.escalations.clone()),
        (2, "{\"a\":1}", vec![7, 8])
    );
    // An escalation belongs to one incident: opening another for it (a
    // second server following the same journal) writes nothing and
    // answers with the incident that holds it.
    assert_eq!(
        b.add_incident(6, "{}".into(), vec![9, 8]).await.unwrap(),
        (id, false)
    );
    assert_eq!(a.incident_of(9).await.unwrap(), None);
    let (other, new) = b.add_incident(6, "{}".into(), vec![9]).await.unwrap();
    assert!(new);
    assert_eq!(a.incident_of(8).await.unwrap(), Some(id));
    assert_eq!(a.incident_of(9).await.unwrap(), Some(other));
    // Both servers at once, for one escalation: one incident.
    let (x, y) = tokio::join!(
        a.add_incident(7, "{}".into(), vec![20]),
        b.add_incident(7, "{}".into(), vec![20])
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.0, y.0, "one incident for escalation 20");
    assert!(x.1 != y.1, "exactly one of them opened it");
    let third = x.0;
    assert!(a
        .update_incident(third, 1, Some(11), "{}".into(), vec![])
        .await
        .unwrap());
    assert!(a
        .update_incident(other, 1, Some(10), "{}".into(), vec![])
        .await
        .unwrap());
    let open: Vec<i64> = b
        .incidents(true, 10)
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(open, vec![id]);
    let all: Vec<i64> = b
        .incidents(false, 10)
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(all, vec![third, other, id], "newest first");
    assert!(a.incident(999).await.unwrap().is_none());
}

pub async fn timeline_a_ballot_counts_once_and_only_while_voting((a, b): TimelinePair) {
    let person = |hash: &str, name: &str, claimed: bool| crate::ParticipantRow {
        token_hash: hash.into(),
        incident: 1,
        name: name.into(),
        seal_key: "k".into(),
        slot: None,
        claimed,
    };
    let people = vec![person("h-a", "ana", true), person("c-b", "bo", false)];
    assert!(a
        .add_postmortem(1, 1000, "{}".into(), people.clone())
        .await
        .unwrap());
    assert!(!b
        .add_postmortem(1, 1000, "{}".into(), people)
        .await
        .unwrap());
    // bo claims the seat once: the claim token stops working.
    assert!(b
        .claim_seat("c-b".into(), None, "h-b".into(), "k2".into(), None)
        .await
        .unwrap());
    assert!(!a
        .claim_seat("c-b".into(), None, "h-x".into(), "k3".into(), None)
        .await
        .unwrap());
    assert!(
        !a.claim_seat("h-a".into(), None, "h-y".into(), "k3".into(), None)
            .await
            .unwrap(),
        "a claimed seat is not claimed again"
    );
    let bo = a.participant("h-b".into()).await.unwrap().unwrap();
    assert_eq!(
        (bo.name.as_str(), bo.seal_key.as_str(), bo.claimed),
        ("bo", "k2", true)
    );
    assert!(a.participant("c-b".into()).await.unwrap().is_none());
    assert_eq!(
        a.cast_ballot("b1".into(), "s1111".into(), 5).await.unwrap(),
        crate::BallotOutcome::Unknown
    );
    let slots = vec![
        ("h-a".to_string(), "s-a".to_string()),
        ("h-b".into(), "s-b".into()),
    ];
    let fill = |h: &str| (h.to_string(), "u0000".to_string());
    assert!(!a
        .open_voting(1, 7, "{}".into(), vec![fill("b1")], slots.clone())
        .await
        .unwrap());
    assert!(b
        .open_voting(1, 1, "{}".into(), vec![fill("b2"), fill("b1")], slots)
        .await
        .unwrap());
    assert_eq!(
        a.participant("h-a".into())
            .await
            .unwrap()
            .unwrap()
            .slot
            .as_deref(),
        Some("s-a")
    );
    assert_eq!(a.participants(1).await.unwrap().len(), 2);
    assert_eq!(a.ballot("b1".into()).await.unwrap(), Some((1, false)));
    assert_eq!(
        a.cast_ballot("b1".into(), "s1111".into(), 5).await.unwrap(),
        crate::BallotOutcome::Cast(1)
    );
    assert_eq!(
        b.cast_ballot("b1".into(), "s2222".into(), 5).await.unwrap(),
        crate::BallotOutcome::Repeated
    );
    assert_eq!(
        b.cast_ballot("b2".into(), "s2222".into(), 1000)
            .await
            .unwrap(),
        crate::BallotOutcome::NotOpen,
        "expired"
    );
    let pm = b.postmortem(1).await.unwrap().unwrap();
    assert_eq!(
        (pm.phase.as_str(), pm.ballots, pm.ballots_cast),
        ("voting", 2, 1)
    );
    assert_eq!(
        b.ballot_contents(1).await.unwrap(),
        vec!["s1111".to_string()]
    );
    // Closing counts on the ballots it read: one more cast, read again.
    assert!(!a
        .close_voting(
            1,
            pm.version,
            "{}".into(),
            0,
            "u----".into(),
            "x----".into()
        )
        .await
        .unwrap());
    assert!(a
        .close_voting(
            1,
            pm.version,
            "{}".into(),
            1,
            "u----".into(),
            "x----".into()
        )
        .await
        .unwrap());
    assert!(b
        .participants(1)
        .await
        .unwrap()
        .iter()
        .all(|p| p.slot.is_none()));
    assert_eq!(
        b.cast_ballot("b2".into(), "s2222".into(), 5).await.unwrap(),
        crate::BallotOutcome::NotOpen
    );
    // Every content is overwritten; the count of cast ballots stays.
    assert_eq!(
        b.ballot_contents(1).await.unwrap(),
        vec!["x----".to_string()]
    );
    let pm = b.postmortem(1).await.unwrap().unwrap();
    assert_eq!((pm.phase.as_str(), pm.ballots_cast), ("closed", 1));
    assert_eq!(a.ballot("b2".into()).await.unwrap(), Some((1, false)));
}

pub async fn timeline_action_items_are_done_once((a, b): TimelinePair) {
    let action = |incident: i64| crate::ActionRow {
        id: 0,
        incident,
        proposal: 1,
        text: "a runbook".into(),
        owner: "bo".into(),
        due_ms: 9000,
        created_ms: 1000,
        done_ms: None,
        done_by: None,
    };
    let x = a.add_action(action(1)).await.unwrap();
    let y = b.add_action(action(2)).await.unwrap();
    assert_eq!(a.actions(true, None).await.unwrap().len(), 2);
    assert_eq!(a.actions(false, Some(2)).await.unwrap()[0].id, y);
    assert!(b.finish_action(x, 5000, "bo".into()).await.unwrap());
    assert!(
        !a.finish_action(x, 6000, "cy".into()).await.unwrap(),
        "done once"
    );
    let open: Vec<i64> = a
        .actions(true, None)
        .await
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(open, vec![y]);
    let done = &a.actions(false, Some(1)).await.unwrap()[0];
    assert_eq!(
        (done.done_ms, done.done_by.as_deref()),
        (Some(5000), Some("bo"))
    );
}
