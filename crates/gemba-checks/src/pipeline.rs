//! How check results travel on a node: an agent publishes its results in
//! gossip under [`RESULT_PREFIX`]; a server takes other nodes' results from
//! gossip ([`from_peer`]), folds per-node results of tier checks into tier
//! verdicts ([`TierFold`]) and hands everything to the escalator.

use std::sync::Arc;

use gemba_core::Policy;
use tokio::sync::{mpsc, watch};

use crate::placement::{NodeEntry, TierVerdicts};
use crate::CheckResult;

/// Gossip keys of check results: `c:<check>`.
pub const RESULT_PREFIX: &str = "c:";

/// The gossip key of one check's result.
pub fn result_key(check: &str) -> String {
    format!("{RESULT_PREFIX}{check}")
}

/// A result published by `node`, as a server takes it from gossip: its
/// own node's results come straight from its runner, so they are skipped
/// here; anything that does not parse is dropped.
pub fn from_peer(node: &str, self_id: &str, value: &str) -> Option<CheckResult> {
    if node == self_id {
        return None;
    }
    CheckResult::from_gossip(value)
}

/// Folds per-node results of `min_passing` tier checks into tier verdicts
/// on their way to the escalator.
pub struct TierFold {
    policy: Arc<Policy>,
    verdicts: TierVerdicts,
}

impl TierFold {
    pub fn new(policy: Arc<Policy>) -> TierFold {
        TierFold {
            policy,
            verdicts: TierVerdicts::default(),
        }
    }

    /// The result itself, then the tier verdict it changes, if any.
    /// `nodes` is the grid as gossip describes it now.
    pub fn take(&mut self, r: CheckResult, nodes: &[NodeEntry]) -> Vec<CheckResult> {
        let size = match &r.scope {
            gemba_core::Scope::Tier(t) => nodes.iter().filter(|n| n.tiers.contains(t)).count(),
            _ => 0,
        };
        let verdict = self.verdicts.fold(&self.policy, &r, size);
        let mut out = vec![r];
        out.extend(verdict);
        out
    }

    /// Forgets nodes that left and checks no longer in the policy.
    pub fn retain(&mut self, nodes: &[NodeEntry]) {
        self.verdicts.retain(&self.policy, nodes);
    }

    /// (check and tier pairs, member results) held.
    pub fn len(&self) -> (usize, usize) {
        self.verdicts.len()
    }

    /// Runs the fold between `input` and `output` until either closes;
    /// membership changes from `nodes` prune it.
    pub async fn run(
        mut self,
        mut input: mpsc::Receiver<CheckResult>,
        output: mpsc::Sender<CheckResult>,
        mut nodes: watch::Receiver<Vec<NodeEntry>>,
    ) {
        loop {
            tokio::select! {
                r = input.recv() => {
                    let Some(r) = r else { return };
                    let now = nodes.borrow().clone();
                    for out in self.take(r, &now) {
                        if output.send(out).await.is_err() {
                            return;
                        }
                    }
                }
                changed = nodes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = nodes.borrow_and_update().clone();
                    self.retain(&now);
                }
            }
        }
    }
}
