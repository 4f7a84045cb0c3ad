//! Which check instances run where.
//!
//! Node checks run on the agent of their node (and travel in its gossip
//! state); global and tier checks, and mesh checks of any scope, run on
//! servers. A tier check with `min_passing` runs once per node of the tier
//! and its per-node results are folded into one tier verdict.

use std::collections::BTreeMap;
use std::sync::Arc;

use gemba_core::{CheckDef, Policy, Scope, ScopeRule};

use crate::kinds::{Instance, Vars};
use crate::nagios::Status;
use crate::result::CheckResult;
use crate::tracker::HardState;

/// A node as servers know it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeEntry {
    pub id: String,
    /// Address without port.
    pub addr: String,
    pub tiers: Vec<String>,
}

fn in_tier(n: &NodeEntry, tier: &Option<String>) -> bool {
    match tier {
        None => true,
        Some(t) => n.tiers.iter().any(|x| x == t),
    }
}

fn node_instance(def: &Arc<CheckDef>, n: &NodeEntry, tier: &Option<String>) -> Instance {
    let vars = Vars {
        node: Some(n.id.clone()),
        node_addr: Some(n.addr.clone()),
        tier: tier.clone().or_else(|| n.tiers.first().cloned()),
    };
    Instance::new(
        def.clone(),
        Scope::Node(n.id.clone()),
        n.tiers.clone(),
        &vars,
    )
}

/// The instances this node's agent runs for itself.
pub fn agent_instances(policy: &Policy, me: &NodeEntry) -> Vec<Instance> {
    policy
        .checks
        .iter()
        .filter(|c| !c.kind.reads_mesh())
        .filter_map(|c| match &c.scope {
            ScopeRule::Node { tier } if in_tier(me, tier) => {
                Some(node_instance(&Arc::new(c.clone()), me, tier))
            }
            _ => None,
        })
        .collect()
}

/// Marks per-node instances of a `min_passing` tier check.
pub const MEMBER_SEPARATOR: char = '#';

/// The instances a server runs, given the grid's nodes.
pub fn server_instances(policy: &Policy, nodes: &[NodeEntry]) -> Vec<Instance> {
    let mut out = Vec::new();
    for c in &policy.checks {
        let def = Arc::new(c.clone());
        match &c.scope {
            ScopeRule::Global => {
                out.push(Instance::new(def, Scope::Global, vec![], &Vars::default()))
            }
            ScopeRule::Tier {
                tier,
                min_passing: None,
            } => {
                let vars = Vars {
                    tier: Some(tier.clone()),
                    ..Default::default()
                };
                out.push(Instance::new(def, Scope::Tier(tier.clone()), vec![], &vars));
            }
            ScopeRule::Tier {
                tier,
                min_passing: Some(_),
            } => {
                for n in nodes.iter().filter(|n| in_tier(n, &Some(tier.clone()))) {
                    let mut member = (*def).clone();
                    member.name = format!("{}{MEMBER_SEPARATOR}{}", c.name, n.id);
                    // Members are observed; only the tier verdict acts.
                    member.level = None;
                    let vars = Vars {
                        node: Some(n.id.clone()),
                        node_addr: Some(n.addr.clone()),
                        tier: Some(tier.clone()),
                    };
                    out.push(Instance::new(
                        Arc::new(member),
                        Scope::Tier(tier.clone()),
                        vec![],
                        &vars,
                    ));
                }
            }
            ScopeRule::Node { tier } if c.kind.reads_mesh() => {
                for n in nodes.iter().filter(|n| in_tier(n, tier)) {
                    out.push(node_instance(&def, n, tier));
                }
            }
            ScopeRule::Node { .. } => {}
        }
    }
    out
}

/// Folds per-node results of `min_passing` tier checks into tier verdicts.
#[derive(Default)]
pub struct TierVerdicts {
    members: BTreeMap<(String, String), BTreeMap<String, CheckResult>>,
    states: BTreeMap<(String, String), (HardState, u64)>,
}

impl TierVerdicts {
    /// Takes a result; if it is a member result, returns the tier verdict.
    pub fn fold(&mut self, policy: &Policy, r: &CheckResult) -> Option<CheckResult> {
        let (check, node) = r.check.split_once(MEMBER_SEPARATOR)?;
        let Scope::Tier(tier) = &r.scope else {
            return None;
        };
        let def = policy.check(check)?;
        let ScopeRule::Tier {
            min_passing: Some(k),
            ..
        } = def.scope
        else {
            return None;
        };
        let key = (check.to_string(), tier.clone());
        let members = self.members.entry(key.clone()).or_default();
        members.insert(node.to_string(), r.clone());
        let passing = members
            .values()
            .filter(|m| m.state == HardState::Passing)
            .count();
        let decided = members
            .values()
            .filter(|m| m.state != HardState::Pending)
            .count();
        let state = if passing >= k as usize {
            HardState::Passing
        } else if decided == members.len() || decided >= k as usize {
            HardState::Failing
        } else {
            HardState::Pending
        };
        let entry = self.states.entry(key).or_insert((state, r.at_ms));
        if entry.0 != state {
            *entry = (state, r.at_ms);
        }
        let failing: Vec<&str> = members
            .iter()
            .filter(|(_, m)| m.state != HardState::Passing)
            .map(|(n, _)| n.as_str())
            .collect();
        Some(CheckResult {
            check: check.to_string(),
            scope: r.scope.clone(),
            kind: r.kind.clone(),
            status: if state == HardState::Failing {
                Status::Critical
            } else {
                Status::Ok
            },
            state,
            since_ms: entry.1,
            at_ms: r.at_ms,
            interval_ms: r.interval_ms,
            duration_ms: r.duration_ms,
            output: format!(
                "{passing} of {} nodes pass (at least {k} needed){}",
                members.len(),
                if failing.is_empty() {
                    String::new()
                } else {
                    format!("; not passing: {}", failing.join(", "))
                }
            ),
            perf: vec![],
            flapping: false,
            flap_percent: 0.0,
            trusted: true,
            level: def.level,
            tiers: vec![],
            observer: r.observer.clone(),
        })
    }
}
