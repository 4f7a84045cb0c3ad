//! `gemba check`: every check of the policy run once from this machine,
//! judged on its own (fall and rise of one), without a running node.

use gemba_checks::placement::{self, NodeEntry};
use gemba_checks::{CheckResult, Clock, MeshView};
use gemba_core::Policy;

/// Runs every check of `policy` once from this machine, as `gemba check`
/// does: this node's own checks and the server's for `nodes`; mesh checks
/// are UNKNOWN unless a graph is given.
pub async fn run_once(
    policy: &Policy,
    me: &NodeEntry,
    nodes: &[NodeEntry],
    mesh: Option<MeshView>,
) -> Vec<CheckResult> {
    let mut instances = placement::agent_instances(policy, me);
    instances.extend(placement::server_instances(policy, nodes));
    let clock = Clock::new();
    let mut set = tokio::task::JoinSet::new();
    for (i, inst) in instances.into_iter().enumerate() {
        let mesh = mesh.clone();
        let observer = me.id.clone();
        set.spawn(async move {
            let obs = gemba_checks::kinds::run(&inst, mesh.as_ref(), None).await;
            // One run, judged on its own: fall and rise of one.
            let mut def = (*inst.def).clone();
            (def.fall, def.rise) = (1, 1);
            let mut t = gemba_checks::CheckTracker::new(&def, clock.now_ms());
            (
                i,
                gemba_checks::result::record(&mut t, &inst, obs, &observer, clock.now_ms()).0,
            )
        });
    }
    let mut out: Vec<(usize, CheckResult)> = set.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}
