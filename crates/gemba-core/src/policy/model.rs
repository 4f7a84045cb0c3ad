//! The policy as gemba uses it once validated: checks with their kind and
//! scope, levels, the escalator's settings, notify targets.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a check runs and what it speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "lowercase")]
pub enum ScopeRule {
    /// One instance, run by the server.
    Global,
    /// One verdict for a tier, run by the server. With `min_passing` the
    /// check runs once per node of the tier and the tier passes when at
    /// least that many nodes pass.
    Tier {
        tier: String,
        min_passing: Option<u32>,
    },
    /// One instance per node (of `tier`, or of the grid), run by that
    /// node's agent.
    Node { tier: Option<String> },
}
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CheckKind {
    Tcp {
        host: String,
        port: u16,
    },
    Http {
        url: String,
        expect_status: u16,
        body_contains: Option<String>,
        /// PEM bundle of extra CAs to trust (private CAs).
        tls_ca_file: Option<String>,
        /// Certificate days left under which the check warns / fails.
        tls_warn_days: u32,
        tls_crit_days: u32,
    },
    Command {
        argv: Vec<String>,
    },
    Process {
        name: Option<String>,
        pidfile: Option<String>,
        max_rss_mb: Option<u64>,
        max_fds: Option<u64>,
        max_threads: Option<u64>,
    },
    /// A sampled metric of a `[[process]]` (or `host`) on this node over
    /// thresholds, for a while.
    Metric {
        process: String,
        metric: String,
        warn: Option<f64>,
        crit: Option<f64>,
        /// How long every sample must be over a threshold (0: the newest).
        #[serde(with = "millis")]
        for_: Duration,
    },
    MeshNode {
        node: String,
    },
    MeshLink {
        source: String,
        target: String,
    },
}
impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Http { .. } => "http",
            CheckKind::Command { .. } => "command",
            CheckKind::Process { .. } => "process",
            CheckKind::Metric { .. } => "metric",
            CheckKind::MeshNode { .. } => "mesh-node",
            CheckKind::MeshLink { .. } => "mesh-link",
        }
    }

    /// Mesh checks read the gossip state and are evaluated by servers.
    pub fn reads_mesh(&self) -> bool {
        matches!(
            self,
            CheckKind::MeshNode { .. } | CheckKind::MeshLink { .. }
        )
    }
}
/// A validated check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckDef {
    pub name: String,
    pub kind: CheckKind,
    pub scope: ScopeRule,
    /// The escalation level this check requires when it fails; `None`:
    /// observed and reported, never acted on.
    pub level: Option<u32>,
    #[serde(with = "millis")]
    pub interval: Duration,
    #[serde(with = "millis")]
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    pub flap_low: f64,
    pub flap_high: f64,
    /// Flapping over time: hard-state changes within `flap_window` start
    /// flapping at `flap_changes_high` and stop it at `flap_changes_low`.
    #[serde(with = "millis")]
    pub flap_window: Duration,
    pub flap_changes_high: u32,
    pub flap_changes_low: u32,
}
/// A validated level of the escalation pattern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LevelDef {
    pub level: u32,
    pub name: String,
    pub run: Vec<String>,
    /// Run `run` through `/bin/sh -c` (template values still go in the
    /// environment, never into the shell text).
    pub shell: bool,
    #[serde(with = "millis")]
    pub timeout: Duration,
    #[serde(with = "millis")]
    pub quiesce: Duration,
    pub approve: bool,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Decide and run.
    Act,
    /// Decide and journal; run nothing.
    Plan,
}
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EscalatorConfig {
    pub mode: Mode,
    #[serde(with = "millis")]
    pub quiet_period: Duration,
    pub budget: u32,
    #[serde(with = "millis")]
    pub backoff: Duration,
    pub climb: bool,
    pub max_per_scope_per_hour: u32,
    pub max_running: u32,
    #[serde(with = "millis")]
    pub lease_ttl: Duration,
    pub stale_after_intervals: u32,
    /// This many failure episodes of one scope within `crash_loop_window`
    /// are a crash loop.
    pub crash_loop_failures: u32,
    #[serde(with = "millis")]
    pub crash_loop_window: Duration,
    /// When the node stops, running steps get this long to finish (so
    /// their outcome is journaled) before they are cut off.
    #[serde(with = "millis")]
    pub step_grace: Duration,
}
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NotifyDef {
    /// POST JSON (with a Slack-compatible `text`).
    Webhook { url: String },
    /// Mail through an SMTP relay (no TLS, no auth: a local relay).
    Smtp {
        server: String,
        from: String,
        to: Vec<String>,
    },
    /// Run a command with the notice in its environment and on stdin.
    Command { run: Vec<String> },
}
/// Checks, levels, escalator settings and notification targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub checks: Vec<CheckDef>,
    /// Sorted by level, most fundamental (1) first.
    pub levels: Vec<LevelDef>,
    pub escalator: EscalatorConfig,
    pub notify: Vec<NotifyDef>,
}
impl Policy {
    pub fn level(&self, n: u32) -> Option<&LevelDef> {
        self.levels.iter().find(|l| l.level == n)
    }

    pub fn check(&self, name: &str) -> Option<&CheckDef> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Levels from `from` (inclusive) to the last one, in order.
    pub fn chain_from(&self, from: u32) -> Vec<u32> {
        self.levels
            .iter()
            .filter(|l| l.level >= from)
            .map(|l| l.level)
            .collect()
    }

    /// The level one step more fundamental than `level`, if any.
    pub fn more_fundamental(&self, level: u32) -> Option<u32> {
        self.levels
            .iter()
            .rev()
            .find(|l| l.level < level)
            .map(|l| l.level)
    }
}
/// Durations as milliseconds in JSON.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
