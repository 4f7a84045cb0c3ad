//! The agent's checks: this node's own checks run here and their results
//! are published in gossip for every server (and, on a server, handed to
//! its escalator directly).

use std::sync::Arc;

use gemba_checks::pipeline::{result_key, RESULT_PREFIX};
use gemba_checks::placement::{self, NodeEntry};
use gemba_checks::{CheckResult, Runner};
use gemba_core::Config;
use gemba_mesh::MeshNode;
use tokio::sync::{mpsc, watch};

use crate::{NodeError, Phase, Stages};

/// This node as placement sees it.
pub fn entry_of(config: &Config) -> NodeEntry {
    NodeEntry {
        id: config.node.id.to_string(),
        addr: config.mesh.advertise.ip().to_string(),
        tiers: config.node.tags.clone(),
    }
}

pub(crate) fn start(
    config: &Config,
    mesh: &Arc<MeshNode>,
    stages: &mut Stages<'_>,
    to_server: Option<mpsc::Sender<CheckResult>>,
    samples: gemba_core::metrics::RecentSamples,
) -> Result<(), NodeError> {
    stages.gossip_prefix("checks", RESULT_PREFIX)?;
    let me = entry_of(config);
    let agent = placement::agent_instances(&config.policy, &me);
    if agent.is_empty() {
        return Ok(());
    }
    let (inst_tx, inst_rx) = watch::channel(agent);
    let (reports_tx, mut reports_rx) = mpsc::channel(1024);
    stages.drain().spawn(
        Phase::Checks,
        "agent-checks",
        Runner {
            instances: inst_rx,
            reports: reports_tx,
            mesh: None,
            samples: Some(samples),
            observer: me.id.clone(),
            max_concurrent: 16,
            clock: stages.clock(),
        }
        .run(),
    );
    let mesh = mesh.clone();
    stages
        .drain()
        .spawn(Phase::Checks, "publish-results", async move {
            // The instance set lives as long as its publisher.
            let _instances = inst_tx;
            while let Some((r, _)) = reports_rx.recv().await {
                mesh.set_local(&result_key(&r.check), &r.to_gossip()).await;
                if let Some(tx) = &to_server {
                    let _ = tx.send(r).await;
                }
            }
        });
    Ok(())
}
