//! Not idempotent: a resource that changed the same way (same properties
//! or action) in k of a node's last n runs; louder when those runs
//! restarted or refreshed a service.

use super::history::{change_digest, Digest};
use super::{Detector, Pass};
use crate::problem::Kind;

impl Detector {
    /// The same change in k of the node's last n runs.
    pub(super) fn not_idempotent(&mut self, pass: &mut Pass<'_>) {
        let digest = &pass.digest;
        let (run, node, production) = (pass.run, pass.node.as_str(), pass.production);
        if !run.noop && !run.catalog_failed {
            let t = &self.thresholds;
            let previous: Vec<Digest> = self
                .nodes
                .get(node)
                .map(|h| {
                    h.recent
                        .iter()
                        .rev()
                        .filter(|d| d.at_ms < run.started_ms && !d.noop)
                        .take(t.idempotent_runs.saturating_sub(1))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let needed = t.idempotent_changes;
            if previous.len() + 1 >= t.idempotent_runs {
                // Notify resources report a change every run by design:
                // they are messages, not state.
                for r in run
                    .changed_resources()
                    .filter(|r| !r.kind.eq_ignore_ascii_case("notify"))
                {
                    let d = change_digest(r);
                    let with: Vec<&Digest> =
                        previous.iter().filter(|p| p.changes.contains(&d)).collect();
                    if with.len() + 1 < needed {
                        continue;
                    }
                    let refresh =
                        (r.refresh || digest.refreshed) && with.iter().all(|p| p.refreshed);
                    let signature = format!("not-idempotent|{}|{}", r.key(), r.change);
                    pass.hit.insert(signature.clone());
                    let id =
                        self.occurrence(run, Kind::NotIdempotent, &signature, production, |p| {
                            p.resource = Some(r.key());
                            p.sample.resource = Some(r.key());
                            p.sample.message = r.message.clone();
                            p.sample.file = r.file.clone();
                            p.sample.line = r.line;
                            p.refresh |= refresh;
                        });
                    pass.touched.insert(id);
                }
            }
        }
    }
}
