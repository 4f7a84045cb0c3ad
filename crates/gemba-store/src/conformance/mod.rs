//! The contract of [`Store`] (the escalator's journal, escalations,
//! leases, step claims and notices), as executable checks; the market's
//! and the timeline's contracts are in `market` and `timeline` beside it. Every implementation
//! runs [`run_all`] in its tests (SQLite in `tests/conformance.rs`); a
//! second database passes the same checks before a caller may rely on it.
//!
//! The checks use only the trait. `fresh` must give two handles on one new,
//! empty store: the second stands for another server sharing it, so the
//! checks of leases, step claims and notice claims hold across servers.

use std::future::Future;
use std::sync::Arc;

use crate::{Claim, EscalationRow, Fence, JournalRow, Pruned, Store};

mod market;
mod timeline;

pub use market::*;
pub use timeline::*;

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
    a_step_starts_only_with_its_grace_left_on_the_lease(fresh().await).await;
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
    assert_eq!(
        a.claim_step(&fa, 7, 1, 4, 1, 0).await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        a.claim_step(&fa, 7, 1, 4, 3, 0).await.unwrap(),
        Claim::Taken,
        "step: not twice by its holder"
    );
    assert_eq!(
        a.claim_step(&fa, 7, 2, 4, 3, 0).await.unwrap(),
        Claim::Claimed,
        "step: a new attempt is a new step"
    );
    // The lease passes to b (a's expired): b may not run what a ran.
    let fb = lease(&b, "node:n7", "s2", 40_000).await;
    assert_eq!(
        b.claim_step(&fb, 7, 1, 4, 40_001, 0).await.unwrap(),
        Claim::Taken,
        "step: claimed once across servers"
    );
    assert_eq!(
        b.claim_step(&fb, 7, 1, 5, 40_001, 0).await.unwrap(),
        Claim::Claimed,
        "step: another level is another step"
    );
}

pub async fn a_step_starts_only_with_its_grace_left_on_the_lease((a, _b): Pair) {
    // Taken at 1 s for 30 s: it lapses at 31 s.
    let fa = lease(&a, "node:n8", "s1", 1000).await;
    assert_eq!(
        a.claim_step(&fa, 8, 1, 2, 20_000, 20_000).await.unwrap(),
        Claim::Short,
        "grace: 11 s left is too short for a 20 s grace"
    );
    assert_eq!(
        a.claim_step(&fa, 8, 1, 2, 20_000, 5_000).await.unwrap(),
        Claim::Claimed,
        "grace: 11 s left is enough for 5 s"
    );
    // Renewed, the same step's next attempt has its grace again.
    let renewed = lease(&a, "node:n8", "s1", 20_000).await;
    assert_eq!(renewed.token, fa.token, "a renewal keeps the fence");
    assert_eq!(
        a.claim_step(&renewed, 8, 2, 2, 20_001, 20_000)
            .await
            .unwrap(),
        Claim::Claimed
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
        a.claim_step(&fa, 1, 1, 6, 40_003, 0).await.unwrap(),
        Claim::Fenced,
        "fence: a step claim with a stale fence is refused"
    );
    assert_eq!(
        b.claim_step(&fb, 1, 1, 6, 40_004, 0).await.unwrap(),
        Claim::Claimed,
        "fence: the step stays free for the new holder"
    );
    // The holder's own lease, once expired, claims nothing either.
    assert_eq!(
        b.claim_step(&fb, 1, 1, 7, 70_001, 0).await.unwrap(),
        Claim::Fenced,
        "lease: an expired lease claims no step"
    );
    let forged = Fence {
        token: fb.token + 1,
        ..fb.clone()
    };
    assert_eq!(
        b.claim_step(&forged, 1, 1, 8, 40_005, 0).await.unwrap(),
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
        s.claim_step(&f.unwrap(), 1, 1, 1, 150, 0).await.unwrap(),
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
