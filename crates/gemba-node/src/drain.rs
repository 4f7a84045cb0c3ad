//! One drain for every task of a node.
//!
//! Tasks are spawned into a [`Phase`]. Stopping walks the phases in order
//! (HTTP, then checks, then the escalator, then the mesh, then the store's
//! upkeep): each phase's token is cancelled, its tasks are awaited until the
//! phase's grace runs out, and what is still running then is aborted and
//! named. A task that panicked is named too. Nothing is left running when
//! [`Drain::stop`] returns.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// When a task stops, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// The HTTP server: stop accepting, finish in-flight requests.
    Http,
    /// Check runners and the pipelines that carry results.
    Checks,
    /// The escalator: running steps finish (within the step grace).
    Escalator,
    /// Probing and gossip.
    Mesh,
    /// Store upkeep (retention).
    Store,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Http,
        Phase::Checks,
        Phase::Escalator,
        Phase::Mesh,
        Phase::Store,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Http => "http",
            Phase::Checks => "checks",
            Phase::Escalator => "escalator",
            Phase::Mesh => "mesh",
            Phase::Store => "store",
        }
    }
}

struct PhaseTasks {
    token: CancellationToken,
    set: JoinSet<()>,
    names: HashMap<Id, &'static str>,
}

/// The tasks of one node, by phase.
pub struct Drain {
    node: String,
    phases: Mutex<HashMap<Phase, PhaseTasks>>,
}

/// What stopping found, phase by phase.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// (phase, tasks that ended within the grace).
    pub finished: Vec<(Phase, usize)>,
    /// Tasks aborted when their phase's grace ran out.
    pub aborted: Vec<(Phase, &'static str)>,
    /// Tasks that had panicked.
    pub panicked: Vec<(Phase, &'static str)>,
    /// The order phases were stopped in.
    pub order: Vec<Phase>,
}

impl Drain {
    pub fn new(node: &str) -> Drain {
        let phases = Phase::ALL
            .iter()
            .map(|p| {
                (
                    *p,
                    PhaseTasks {
                        token: CancellationToken::new(),
                        set: JoinSet::new(),
                        names: HashMap::new(),
                    },
                )
            })
            .collect();
        Drain {
            node: node.to_string(),
            phases: Mutex::new(phases),
        }
    }

    /// The token cancelled when `phase` stops: for tasks that wind down on
    /// their own (finish a request, journal a step) instead of being cut.
    pub fn token(&self, phase: Phase) -> CancellationToken {
        self.lock()[&phase].token.clone()
    }

    /// Spawns `task` in `phase`, inside a span naming the node, the stage
    /// and the task. The future is dropped when the phase stops, unless it
    /// ended first.
    pub fn spawn<F>(&self, phase: Phase, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_in(
            phase,
            name,
            tracing::info_span!("task", node = %self.node, stage = phase.as_str(), task = name),
            task,
        )
    }

    /// [`Drain::spawn`] with a span of the caller's (with a peer or scope).
    pub fn spawn_in<F>(&self, phase: Phase, name: &'static str, span: tracing::Span, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut phases = self.lock();
        let p = phases.get_mut(&phase).expect("every phase exists");
        let token = p.token.clone();
        let handle = p.set.spawn(
            async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = task => {}
                }
            }
            .instrument(span),
        );
        p.names.insert(handle.id(), name);
    }

    /// Spawns a task that stops itself when `phase`'s token is cancelled
    /// (it holds [`Drain::token`]); it is awaited, not dropped, until the
    /// grace runs out.
    pub fn spawn_graceful<F>(&self, phase: Phase, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let span =
            tracing::info_span!("task", node = %self.node, stage = phase.as_str(), task = name);
        let mut phases = self.lock();
        let p = phases.get_mut(&phase).expect("every phase exists");
        let handle = p.set.spawn(task.instrument(span));
        p.names.insert(handle.id(), name);
    }

    /// How many tasks are running in `phase`.
    pub fn running(&self, phase: Phase) -> usize {
        self.lock()[&phase].set.len()
    }

    /// Every task spawned and not yet stopped, by phase then name.
    pub fn tasks(&self) -> Vec<(Phase, &'static str)> {
        let phases = self.lock();
        let mut out: Vec<(Phase, &'static str)> = phases
            .iter()
            .flat_map(|(phase, p)| p.names.values().map(move |n| (*phase, *n)))
            .collect();
        out.sort();
        out
    }

    /// Stops one phase: cancel, await until `grace`, abort the rest.
    pub async fn stop_phase(&self, phase: Phase, grace: Duration, report: &mut DrainReport) {
        let (token, mut set, names) = {
            let mut phases = self.lock();
            let p = phases.get_mut(&phase).expect("every phase exists");
            (
                p.token.clone(),
                std::mem::take(&mut p.set),
                std::mem::take(&mut p.names),
            )
        };
        token.cancel();
        report.order.push(phase);
        let deadline = tokio::time::Instant::now() + grace;
        let mut finished = 0;
        loop {
            match tokio::time::timeout_at(deadline, set.join_next_with_id()).await {
                Ok(None) => break,
                Ok(Some(Ok(_))) => finished += 1,
                Ok(Some(Err(e))) => {
                    let name = names.get(&e.id()).copied().unwrap_or("unnamed");
                    if e.is_panic() {
                        tracing::error!(stage = phase.as_str(), task = name, "task had panicked");
                        report.panicked.push((phase, name));
                    } else {
                        finished += 1;
                    }
                }
                Err(_) => {
                    set.abort_all();
                    while let Some(r) = set.join_next_with_id().await {
                        let id = match &r {
                            Ok((id, _)) => *id,
                            Err(e) => e.id(),
                        };
                        let name = names.get(&id).copied().unwrap_or("unnamed");
                        tracing::warn!(
                            stage = phase.as_str(),
                            task = name,
                            grace_ms = grace.as_millis() as u64,
                            "task still running after the grace period; aborted"
                        );
                        report.aborted.push((phase, name));
                    }
                    break;
                }
            }
        }
        report.finished.push((phase, finished));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Phase, PhaseTasks>> {
        // A panic while holding this lock would be a bug in this module;
        // the map stays consistent, so keep going.
        self.phases.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn phases_stop_in_order_and_stragglers_are_aborted_by_name() {
        let drain = Drain::new("n1");
        let log = Arc::new(Mutex::new(Vec::new()));
        for (phase, name) in [(Phase::Mesh, "prober"), (Phase::Http, "server")] {
            let token = drain.token(phase);
            let log = log.clone();
            drain.spawn_graceful(phase, name, async move {
                token.cancelled().await;
                log.lock().unwrap().push(name);
            });
        }
        drain.spawn(Phase::Checks, "runner", std::future::pending());
        drain.spawn_graceful(Phase::Escalator, "stuck-step", std::future::pending());
        drain.spawn(Phase::Store, "panics", async { panic!("boom") });
        tokio::task::yield_now().await;
        let mut report = DrainReport::default();
        for phase in Phase::ALL {
            drain
                .stop_phase(phase, Duration::from_secs(2), &mut report)
                .await;
        }
        assert_eq!(
            *log.lock().unwrap(),
            ["server", "prober"],
            "http before mesh"
        );
        assert_eq!(report.order, Phase::ALL);
        assert_eq!(report.aborted, [(Phase::Escalator, "stuck-step")]);
        assert_eq!(report.panicked, [(Phase::Store, "panics")]);
        for phase in Phase::ALL {
            assert_eq!(drain.running(phase), 0, "{phase:?} left nothing running");
        }
    }
}
