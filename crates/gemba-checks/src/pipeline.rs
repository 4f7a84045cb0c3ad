//! How check results travel on a node: an agent publishes its results in
//! gossip under [`RESULT_PREFIX`]; a server takes other nodes' results from
//! gossip ([`from_peer`]), folds per-node results of tier checks into tier
//! verdicts ([`TierFold`]) and hands everything to the escalator.

use std::sync::Arc;

use gemba_core::{Policy, Scope, ScopeRule};
use tokio::sync::{mpsc, watch};

use crate::placement::{NodeEntry, TierVerdicts};
use crate::CheckResult;

/// Gossip keys of check results: `c:<check>`.
pub const RESULT_PREFIX: &str = "c:";

/// The gossip key of one check's result.
pub fn result_key(check: &str) -> String {
    format!("{RESULT_PREFIX}{check}")
}

/// The most a result's gossip value may hold; longer values are not read.
pub const MAX_RESULT_VALUE: usize = 4 * 1024;

/// How far a result's time may lie ahead of this server's clock.
const MAX_CLOCK_AHEAD_MS: u64 = 60_000;

/// Why a server did not believe a result it took from gossip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unbelieved {
    /// The server's own result: it comes straight from its runner.
    Own,
    TooLarge,
    Undecodable,
    /// The check is not in this server's policy.
    UnknownCheck,
    /// Not a node check an agent runs: tier, global and mesh checks are
    /// the servers' own.
    NotAnAgentCheck,
    /// About another node than the one that published it.
    NotAboutPublisher,
    /// The check is for a tier the publisher is not in.
    NotInTier,
    /// Timed ahead of this server's clock by more than a minute.
    FromTheFuture,
}

impl Unbelieved {
    pub fn as_str(self) -> &'static str {
        match self {
            Unbelieved::Own => "own",
            Unbelieved::TooLarge => "too_large",
            Unbelieved::Undecodable => "undecodable",
            Unbelieved::UnknownCheck => "unknown_check",
            Unbelieved::NotAnAgentCheck => "not_an_agent_check",
            Unbelieved::NotAboutPublisher => "not_about_publisher",
            Unbelieved::NotInTier => "not_in_tier",
            Unbelieved::FromTheFuture => "from_the_future",
        }
    }
}

/// A result `publisher` gossiped, as a server believes it.
///
/// A node speaks only for itself: the result must be about `node:<publisher>`
/// and for a node check of this server's policy that the publisher runs.
/// Everything that decides an action comes from the local policy and
/// directory, never from the message: the level, trust, kind and interval
/// are the policy's, the tiers are the directory's (`publisher_tiers`), and
/// the observer is the publisher. What remains from the message is the
/// observation itself: status, state, timing, flapping and output (cut to
/// [`crate::result::GOSSIP_OUTPUT_MAX`]).
pub fn from_peer(
    publisher: &str,
    publisher_tiers: &[String],
    self_id: &str,
    value: &str,
    policy: &Policy,
    now_ms: u64,
) -> Result<CheckResult, Unbelieved> {
    if publisher == self_id {
        return Err(Unbelieved::Own);
    }
    if value.len() > MAX_RESULT_VALUE {
        return Err(Unbelieved::TooLarge);
    }
    let mut r = CheckResult::from_gossip(value).ok_or(Unbelieved::Undecodable)?;
    let def = policy.check(&r.check).ok_or(Unbelieved::UnknownCheck)?;
    let ScopeRule::Node { tier } = &def.scope else {
        return Err(Unbelieved::NotAnAgentCheck);
    };
    if def.kind.reads_mesh() {
        return Err(Unbelieved::NotAnAgentCheck);
    }
    if r.scope != Scope::Node(publisher.to_string()) {
        return Err(Unbelieved::NotAboutPublisher);
    }
    if let Some(t) = tier {
        if !publisher_tiers.contains(t) {
            return Err(Unbelieved::NotInTier);
        }
    }
    if r.at_ms > now_ms + MAX_CLOCK_AHEAD_MS || r.since_ms > now_ms + MAX_CLOCK_AHEAD_MS {
        return Err(Unbelieved::FromTheFuture);
    }
    r.level = def.level;
    r.trusted = true;
    r.kind = def.kind.name().to_string();
    r.interval_ms = def.interval.as_millis() as u64;
    r.tiers = publisher_tiers.to_vec();
    r.observer = publisher.to_string();
    r.make_compact();
    if !r.flap_percent.is_finite() {
        r.flap_percent = 0.0;
    }
    Ok(r)
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use gemba_core::{Config, ConfigFile, Overrides};

    use super::*;
    use crate::result::GOSSIP_OUTPUT_MAX;

    const NOW: u64 = 1_800_000_000_000;

    fn policy() -> Policy {
        let text = r#"
[[level]]
level = 1
name = "reboot"
run = ["/bin/true"]
[[level]]
level = 2
name = "restart"
run = ["/bin/true"]
[[check]]
name = "web"
kind = "tcp"
port = 80
level = 2
[[check]]
name = "disk"
kind = "command"
tier = "db"
command = ["/bin/true"]
[[check]]
name = "lb"
kind = "tcp"
scope = "global"
host = "lb.internal"
port = 443
[[check]]
name = "seen"
kind = "mesh-node"
"#;
        let o = Overrides {
            node_id: Some("srv".into()),
            ..Default::default()
        };
        Config::from_file(ConfigFile::parse(Path::new("t"), text).unwrap(), &o, "t")
            .unwrap()
            .policy
    }

    /// What an agent (or a forger) gossips: `scope` and `check` as given,
    /// a failing state, and the fields a forger would set to steer servers.
    fn gossiped(check: &str, scope: &str) -> String {
        let mut v = serde_json::to_value(CheckResult {
            check: check.into(),
            scope: Scope::Global,
            kind: "process".into(),
            status: crate::nagios::Status::Critical,
            state: crate::tracker::HardState::Failing,
            since_ms: NOW - 5_000,
            at_ms: NOW - 1_000,
            interval_ms: 999_999_999,
            duration_ms: 3,
            output: "x".repeat(1_000),
            perf: vec![],
            flapping: false,
            flap_percent: 0.0,
            flap_changes: 0,
            trusted: false,
            level: Some(1),
            tiers: vec!["db".into(), "app".into()],
            observer: "someone-else".into(),
        })
        .unwrap();
        // Written as text, the way a forger would, so that names the
        // grammar refuses can be tried too.
        v["scope"] = scope.into();
        v.to_string()
    }

    fn take(publisher: &str, tiers: &[&str], value: &str) -> Result<CheckResult, Unbelieved> {
        let tiers: Vec<String> = tiers.iter().map(|t| t.to_string()).collect();
        from_peer(publisher, &tiers, "srv", value, &policy(), NOW)
    }

    #[test]
    fn what_decides_an_action_comes_from_the_local_policy() {
        let r = take("web-1", &[], &gossiped("web", "node:web-1")).unwrap();
        assert_eq!(r.level, Some(2), "the policy's level, not the message's 1");
        assert!(r.trusted);
        assert_eq!(r.kind, "tcp");
        assert_eq!(r.interval_ms, 10_000);
        assert!(r.tiers.is_empty(), "tiers come from the directory");
        assert_eq!(r.observer, "web-1");
        assert!(r.output.chars().count() <= GOSSIP_OUTPUT_MAX + 1);
        assert_eq!(r.state, crate::tracker::HardState::Failing);
    }

    #[test]
    fn a_node_speaks_only_for_itself_and_only_of_agent_checks() {
        // A key holder publishing a failing result about db-1.
        assert_eq!(
            take("rogue", &[], &gossiped("web", "node:db-1")).unwrap_err(),
            Unbelieved::NotAboutPublisher
        );
        // Tier and global results, and mesh checks, are the servers' own.
        assert_eq!(
            take("rogue", &[], &gossiped("lb", "global")).unwrap_err(),
            Unbelieved::NotAnAgentCheck
        );
        assert_eq!(
            take("rogue", &[], &gossiped("seen", "node:rogue")).unwrap_err(),
            Unbelieved::NotAnAgentCheck
        );
        assert_eq!(
            take("rogue", &[], &gossiped("nope", "node:rogue")).unwrap_err(),
            Unbelieved::UnknownCheck
        );
        // A tier's node check only from a node the directory puts in it.
        assert_eq!(
            take("web-1", &["app"], &gossiped("disk", "node:web-1")).unwrap_err(),
            Unbelieved::NotInTier
        );
        assert!(take("db-1", &["db"], &gossiped("disk", "node:db-1")).is_ok());
        assert_eq!(
            take("srv", &[], &gossiped("web", "node:srv")).unwrap_err(),
            Unbelieved::Own
        );
    }

    #[test]
    fn hostile_values_are_not_believed() {
        // A scope name that would read as an option in `{node}`.
        assert_eq!(
            take("web-1", &[], &gossiped("web", "node:--force")).unwrap_err(),
            Unbelieved::Undecodable
        );
        assert_eq!(
            take("web-1", &[], &"x".repeat(MAX_RESULT_VALUE + 1)).unwrap_err(),
            Unbelieved::TooLarge
        );
        let ahead = gossiped("web", "node:web-1").replace(
            &format!("\"at_ms\":{}", NOW - 1_000),
            &format!("\"at_ms\":{}", NOW + 3_600_000),
        );
        assert_eq!(
            take("web-1", &[], &ahead).unwrap_err(),
            Unbelieved::FromTheFuture
        );
    }
}
