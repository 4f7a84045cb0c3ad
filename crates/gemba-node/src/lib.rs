//! A gemba node, assembled in one place.
//!
//! [`Node::start`] builds every stage a configuration asks for, in order:
//! the mesh (probing and gossip), the server role (store, escalator), the
//! checks (this node's own, and a server's), then HTTP. Each stage
//! registers with the node through [`Stages`]: its tasks (spawned into one
//! [`Drain`]), its gossip keys and its metrics. HTTP routes are not
//! registered here: each stage's are listed in its module of `gemba-api`
//! (`grid`, `converge`, `review`, `learn`), next to the handlers. `gemba
//! run`, `gemba demo` and the tests all start nodes this way, and
//! [`Node::shutdown`] stops everything in one order with bounded grace.
//!
//! A server whose store cannot be opened does not take the agent down with
//! it: the node keeps probing and checking, logs why its server role is
//! off, and `/healthz` says so.

mod checks;
pub mod drain;
mod logs;
mod server;

pub use checks::entry_of;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gemba_core::Config;
use gemba_escalator::EscalatorHandle;
use gemba_mesh::{GridKey, MeshNode, MeshSettings, Net};
use prometheus_client::registry::Registry;

pub use drain::{Drain, DrainReport, Phase};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mesh(#[from] gemba_mesh::MeshError),
    /// The node's key, or the list of keys it believes, cannot be read.
    #[error("node identity: {0}")]
    Identity(String),
    #[error("stage {stage} wants gossip key {key:?}, which overlaps {other:?} of stage {owner}")]
    GossipKey {
        stage: &'static str,
        key: String,
        owner: &'static str,
        other: String,
    },
}

/// The node's own key (`<data_dir>/node.key`, created on first start) and
/// whom it believes: the enrolled nodes of `[mesh] nodes_file`, or keys
/// pinned when first seen, kept in `<data_dir>/known_nodes`.
fn identity_of(
    config: &Config,
) -> Result<
    (
        Arc<gemba_mesh::identity::NodeIdentity>,
        Arc<gemba_mesh::identity::Pins>,
        std::path::PathBuf,
    ),
    NodeError,
> {
    use gemba_mesh::identity::{NodeIdentity, Pins};
    let dir = &config.node.data_dir;
    let (identity, created) = NodeIdentity::load_or_create(dir).map_err(NodeError::Identity)?;
    if created {
        tracing::info!(
            path = %dir.join("node.key").display(),
            public_key = %identity.public(),
            "created this node's key"
        );
    }
    let (pins, file) = match &config.mesh.nodes_file {
        Some(f) => (Pins::enrolled(f), f.clone()),
        None => {
            let known = dir.join("known_nodes");
            (Pins::first_seen(Some(known.clone())), known)
        }
    };
    let pins = pins.map_err(NodeError::Identity)?;
    Ok((Arc::new(identity), Arc::new(pins), file))
}

/// How the node serves HTTP.
pub enum HttpListen {
    /// Bind `config.http.listen`.
    FromConfig,
    /// Serve on a listener the caller bound.
    Listener(tokio::net::TcpListener),
    /// No HTTP (in-process tests that read the node directly).
    Off,
}

/// What the configuration does not say.
pub struct NodeOptions {
    pub http: HttpListen,
    /// How often the escalator checks its timers.
    pub escalator_tick: Duration,
    /// The longest each of HTTP, checks and mesh may take to stop.
    pub phase_grace: Duration,
    /// Shifts the clock every stage decides by, in ms (tests of a server
    /// whose clock is off; 0 in production).
    pub clock_offset_ms: i64,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            http: HttpListen::FromConfig,
            escalator_tick: Duration::from_millis(250),
            phase_grace: Duration::from_secs(5),
            clock_offset_ms: 0,
        }
    }
}

/// The server role of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerRole {
    /// Not configured (`[node] server = false`).
    None,
    On,
    /// Configured, but off: why.
    Off(String),
}

/// What a stage registers with the node.
pub struct Stages<'a> {
    drain: &'a Drain,
    registry: &'a mut Registry,
    gossip: Vec<(&'static str, String)>,
    /// One clock for every stage of the node: a check's time and the
    /// escalation step it ends are read from the same clock, so they never
    /// come out of order by a rounding.
    clock: gemba_exec::Clock,
}

impl<'a> Stages<'a> {
    fn new(drain: &'a Drain, registry: &'a mut Registry, clock_offset_ms: i64) -> Self {
        let now = gemba_exec::Clock::new().now_ms();
        let mut s = Stages {
            drain,
            registry,
            gossip: Vec::new(),
            clock: gemba_exec::Clock::starting_at(now.saturating_add_signed(clock_offset_ms)),
        };
        for key in gemba_mesh::GOSSIP_KEYS {
            s.gossip.push(("mesh", key.to_string()));
        }
        s
    }

    /// The node's clock, shared by its stages.
    pub fn clock(&self) -> gemba_exec::Clock {
        self.clock
    }

    /// The node's drain, to spawn the stage's tasks into.
    pub fn drain(&self) -> &Drain {
        self.drain
    }

    /// The node's metrics registry.
    pub fn metrics(&mut self) -> &mut Registry {
        self.registry
    }

    /// Claims a gossip key prefix for a stage. Two stages whose keys
    /// overlap would read each other's values: refused at start.
    pub fn gossip_prefix(&mut self, stage: &'static str, key: &str) -> Result<(), NodeError> {
        if let Some((owner, other)) = self
            .gossip
            .iter()
            .find(|(_, k)| k.starts_with(key) || key.starts_with(k.as_str()))
        {
            return Err(NodeError::GossipKey {
                stage,
                key: key.to_string(),
                owner,
                other: other.clone(),
            });
        }
        self.gossip.push((stage, key.to_string()));
        Ok(())
    }

    /// Every claimed gossip key, with its stage.
    pub fn gossip_keys(&self) -> &[(&'static str, String)] {
        &self.gossip
    }
}

/// The agent's metrics: host and `[[process]]` samples every `[metrics]
/// interval`, sent to the grid's servers (not gossiped), on /metrics, and
/// to this node's own server when it is one.
fn start_sampling(
    config: &Config,
    mesh: &Arc<MeshNode>,
    stages: &mut Stages<'_>,
    to_server: Option<tokio::sync::mpsc::Sender<(String, gemba_timeline::sample::Sample)>>,
    recent: gemba_core::metrics::RecentSamples,
) -> Result<(), NodeError> {
    let exporter = gemba_timeline::agent::Exporter::register(stages.metrics());
    let mesh = mesh.clone();
    stages.drain().spawn(
        Phase::Checks,
        "sampling",
        gemba_timeline::agent::run(
            config.metrics.clone(),
            stages.clock(),
            Some(exporter),
            move |name, value| {
                let mesh = mesh.clone();
                async move { mesh.send_sample(&name, &value).await }
            },
            to_server,
            Some(recent),
            config.node.id.to_string(),
        ),
    );
    Ok(())
}

/// A running node.
pub struct Node {
    id: String,
    mesh: Arc<MeshNode>,
    escalator: Option<EscalatorHandle>,
    market: Option<gemba_market::service::MarketHandle>,
    timeline: Option<gemba_timeline::TimelineHandle>,
    server: ServerRole,
    http_addr: Option<SocketAddr>,
    drain: Drain,
    step_grace: Duration,
    phase_grace: Duration,
    gossip_keys: Vec<(&'static str, String)>,
    _subscriptions: Vec<gemba_mesh::ListenerHandle>,
}

impl Node {
    /// Starts a node with default options (HTTP on `config.http.listen`).
    pub async fn start(
        config: &Config,
        net: Arc<dyn Net>,
        key: GridKey,
    ) -> Result<Node, NodeError> {
        Self::start_with(config, net, key, NodeOptions::default()).await
    }

    pub async fn start_with(
        config: &Config,
        net: Arc<dyn Net>,
        key: GridKey,
        options: NodeOptions,
    ) -> Result<Node, NodeError> {
        let id = config.node.id.to_string();
        let drain = Drain::new(&id);
        let mut registry = Registry::default();
        // Bind HTTP first: a port in use is an error before anything runs.
        let listener = match options.http {
            HttpListen::FromConfig => Some(
                tokio::net::TcpListener::bind(config.http.listen)
                    .await
                    .map_err(|source| NodeError::Http {
                        addr: config.http.listen,
                        source,
                    })?,
            ),
            HttpListen::Listener(l) => Some(l),
            HttpListen::Off => None,
        };
        let http_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let (identity, pins, pins_file) = identity_of(config)?;
        let settings = MeshSettings::from_config(config, key, http_addr.map(|a| a.to_string()))
            .with_identity(identity, pins, Some(pins_file));
        let mesh = Arc::new(MeshNode::start(settings, net, Some(&mut registry)).await?);

        // The agent's log excerpts, and where other nodes' are asked for.
        let book = gemba_timeline::logs::LogBook::new(&id, &config.metrics);
        let log_source = gemba_timeline::logs::LogSource::new(
            &id,
            Some(book.clone()),
            config.http.token.clone(),
            logs::resolver(mesh.clone()),
        );
        let mut stages = Stages::new(&drain, &mut registry, options.clock_offset_ms);
        let clock = stages.clock();
        if !book.is_empty() {
            stages.drain().spawn(
                Phase::Checks,
                "log-excerpts",
                book.clone().run(stages.clock()),
            );
        }
        let mut server = if config.node.server {
            server::start(
                config,
                &mesh,
                &mut stages,
                options.escalator_tick,
                log_source.clone(),
            )
            .await
        } else {
            server::Server::none()
        };
        // The sampler writes this node's recent samples; metric checks read them.
        let recent = gemba_core::metrics::RecentSamples::default();
        checks::start(
            config,
            &mesh,
            &mut stages,
            server.results.take(),
            recent.clone(),
        )?;
        start_sampling(config, &mesh, &mut stages, server.samples.take(), recent)?;
        let subscriptions = std::mem::take(&mut server.subscriptions);
        let gossip_keys = stages.gossip.clone();
        drop(stages);

        if let Some(listener) = listener {
            let state = match &server.role {
                ServerRole::Off(why) => gemba_api::ApiState::with_server_off(
                    mesh.clone(),
                    registry,
                    config.http.token.clone(),
                    why.clone(),
                ),
                _ => gemba_api::ApiState::with_escalator(
                    mesh.clone(),
                    registry,
                    config.http.token.clone(),
                    server.escalator.clone(),
                ),
            }
            .with_scoped_tokens(&config.http.scoped_tokens)
            .allowing_hosts(config.http.allowed_hosts.clone())
            .with_store(server.store.clone(), clock)
            .with_market(server.market.clone(), config.market.clone())
            .with_timeline(server.timeline.clone())
            .with_logs(Some(book), Some(log_source))
            .with_notify(config.policy.notify.clone());
            let stop = drain.token(Phase::Http);
            let limits = gemba_api::serve::Limits {
                max_connections: config.http.max_connections,
                header_timeout: config.http.header_timeout,
            };
            drain.spawn_graceful(Phase::Http, "http", async move {
                if let Err(e) =
                    gemba_api::serve(listener, state, limits, stop.cancelled_owned()).await
                {
                    tracing::error!(error = %e, "the HTTP server stopped");
                }
            });
        }
        Ok(Node {
            id,
            mesh,
            escalator: server.escalator,
            market: server.market,
            timeline: server.timeline,
            server: server.role,
            http_addr,
            drain,
            step_grace: config.policy.escalator.step_grace,
            phase_grace: options.phase_grace,
            gossip_keys,
            _subscriptions: subscriptions,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn mesh(&self) -> &Arc<MeshNode> {
        &self.mesh
    }

    /// The escalator, on a node whose server role is on.
    pub fn escalator(&self) -> Option<&EscalatorHandle> {
        self.escalator.as_ref()
    }

    /// The review stage, on a server whose store opened.
    pub fn market(&self) -> Option<&gemba_market::service::MarketHandle> {
        self.market.as_ref()
    }

    /// The learn stage's events, on a server whose store opened.
    pub fn timeline(&self) -> Option<&gemba_timeline::TimelineHandle> {
        self.timeline.as_ref()
    }

    pub fn server_role(&self) -> &ServerRole {
        &self.server
    }

    /// Where HTTP is served, when it is.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Every gossip key claimed, by stage.
    pub fn gossip_keys(&self) -> &[(&'static str, String)] {
        &self.gossip_keys
    }

    /// Tasks running in `phase`.
    pub fn running(&self, phase: Phase) -> usize {
        self.drain.running(phase)
    }

    /// The node's tasks, by phase then name (what `gemba run` logs at
    /// start).
    pub fn tasks(&self) -> Vec<(Phase, &'static str)> {
        self.drain.tasks()
    }

    /// Stops the node: HTTP stops accepting and finishes in-flight
    /// requests; checks stop; running escalation steps get the configured
    /// `step_grace` to finish and be journaled; the mesh leaves; store
    /// upkeep stops. Each phase is bounded; what outlives it is aborted and
    /// named in the report.
    pub async fn shutdown(self) -> DrainReport {
        let mut report = DrainReport::default();
        let grace = self.phase_grace;
        self.drain.stop_phase(Phase::Http, grace, &mut report).await;
        self.drain
            .stop_phase(Phase::Checks, grace, &mut report)
            .await;
        if let Some(h) = &self.escalator {
            let left = h.drain(self.step_grace).await;
            if left > 0 {
                tracing::warn!(steps = left, "stopped with escalation steps still running");
            }
        }
        self.drain
            .stop_phase(Phase::Escalator, grace, &mut report)
            .await;
        self.drain.stop_phase(Phase::Mesh, grace, &mut report).await;
        self.mesh.shutdown().await;
        self.drain
            .stop_phase(Phase::Store, grace, &mut report)
            .await;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_may_not_claim_overlapping_gossip_keys() {
        let drain = Drain::new("n1");
        let mut registry = Registry::default();
        let mut stages = Stages::new(&drain, &mut registry, 0);
        stages.gossip_prefix("checks", "c:").unwrap();
        stages.gossip_prefix("market", "m:").unwrap();
        for (stage, key, owner) in [
            ("timeline", "c:deploy", "checks"),
            ("timeline", "e", "mesh"),
            ("timeline", "sitemap", "mesh"),
        ] {
            let err = stages.gossip_prefix(stage, key).unwrap_err().to_string();
            assert!(err.contains(&format!("of stage {owner}")), "{key}: {err}");
        }
        let mine: Vec<&str> = stages
            .gossip_keys()
            .iter()
            .filter(|(s, _)| *s != "mesh")
            .map(|(_, k)| k.as_str())
            .collect();
        assert_eq!(mine, ["c:", "m:"]);
    }
}
