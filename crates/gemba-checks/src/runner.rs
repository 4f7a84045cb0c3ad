//! Runs a set of check instances on their intervals and reports results.
//!
//! Each instance is a task that owns its tracker, so fall/rise and flap
//! state need no locks; a semaphore bounds how many checks run at once so
//! a thousand plugins due in the same second queue instead of forking at
//! once. The set is replaced as membership changes; unchanged instances
//! keep their tasks and their history.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

pub use gemba_exec::Clock;

use crate::kinds::{self, Instance, MeshView};
use crate::result::{self, CheckResult};
use crate::tracker::{CheckTracker, Transition};

/// Where mesh checks get the graph from.
#[async_trait::async_trait]
pub trait MeshSource: Send + Sync {
    async fn view(&self) -> MeshView;
}

/// A result and what it changed.
pub type Report = (CheckResult, Transition);

pub struct Runner {
    pub instances: watch::Receiver<Vec<Instance>>,
    pub reports: mpsc::Sender<Report>,
    pub mesh: Option<Arc<dyn MeshSource>>,
    /// This node's recent metric samples (agents), for metric checks.
    pub samples: Option<gemba_core::metrics::RecentSamples>,
    pub observer: String,
    pub max_concurrent: usize,
    pub clock: Clock,
}

impl Runner {
    pub async fn run(mut self) {
        let permits = Arc::new(Semaphore::new(self.max_concurrent.max(1)));
        let mut tasks: HashMap<String, (String, JoinHandle<()>)> = HashMap::new();
        loop {
            let set = self.instances.borrow_and_update().clone();
            let mut keep = HashMap::new();
            for inst in set {
                let id = inst.id();
                // Same id and same definition: keep the running task.
                let fingerprint = format!("{:?}{:?}", inst.def, inst.kind);
                if let Some((fp, handle)) = tasks.remove(&id) {
                    if fp == fingerprint && !handle.is_finished() {
                        keep.insert(id, (fp, handle));
                        continue;
                    }
                    handle.abort();
                }
                let span = tracing::info_span!("check", check = %id, node = %self.observer);
                let handle = tokio::spawn(
                    run_instance(
                        inst,
                        self.reports.clone(),
                        self.mesh.clone(),
                        self.samples.clone(),
                        permits.clone(),
                        self.observer.clone(),
                        self.clock,
                    )
                    .instrument(span),
                );
                keep.insert(id, (fingerprint, handle));
            }
            for (_, (_, h)) in tasks.drain() {
                h.abort();
            }
            tasks = keep;
            if self.instances.changed().await.is_err() {
                break;
            }
        }
        for (_, (_, h)) in tasks {
            h.abort();
        }
    }
}

fn first_offset(id: &str, interval: Duration) -> Duration {
    // Spread first runs over up to one second so a restart does not fork
    // every plugin in the same instant.
    let h = std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(id);
    let window = interval.min(Duration::from_secs(1)).as_millis().max(1) as u64;
    Duration::from_millis(h % window)
}

async fn run_instance(
    inst: Instance,
    reports: mpsc::Sender<Report>,
    mesh: Option<Arc<dyn MeshSource>>,
    samples: Option<gemba_core::metrics::RecentSamples>,
    permits: Arc<Semaphore>,
    observer: String,
    clock: Clock,
) {
    let def = &inst.def;
    let mut tracker = CheckTracker::new(def, clock.now_ms());
    let mut next = Instant::now() + first_offset(&inst.id(), def.interval);
    loop {
        tokio::time::sleep_until(next).await;
        let Ok(_permit) = permits.acquire().await else {
            return;
        };
        let view = match &mesh {
            Some(m) if inst.kind.reads_mesh() => Some(m.view().await),
            _ => None,
        };
        let obs = kinds::run(&inst, view.as_ref(), samples.as_ref()).await;
        drop(_permit);
        let report = result::record(&mut tracker, &inst, obs, &observer, clock.now_ms());
        if reports.send(report).await.is_err() {
            return;
        }
        next += def.interval;
        let now = Instant::now();
        if next < now {
            // Ran late (a slow check or a busy machine): skip missed rounds
            // rather than running them back to back.
            next = now + def.interval;
        }
    }
}
