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
    /// Address without port: on a server, the address the node proved it
    /// sends from; empty when it proved none.
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
                // A node with no proven address is not checked at an
                // address it merely claims: it counts as not passing.
                for n in nodes
                    .iter()
                    .filter(|n| in_tier(n, &Some(tier.clone())) && !n.addr.is_empty())
                {
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
    /// Forgets the results of nodes that left the grid and of checks no
    /// longer in the policy, so a departed node no longer counts towards a
    /// tier's size and the maps stay bounded by what exists.
    pub fn retain(&mut self, policy: &Policy, nodes: &[NodeEntry]) {
        let ids: std::collections::HashSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        self.members.retain(|(check, _), members| {
            members.retain(|node, _| ids.contains(node.as_str()));
            !members.is_empty() && policy.check(check).is_some()
        });
        let members = &self.members;
        self.states.retain(|key, _| members.contains_key(key));
    }

    /// How many (check, tier) pairs and member results are held.
    pub fn len(&self) -> (usize, usize) {
        (
            self.members.len(),
            self.members.values().map(|m| m.len()).sum(),
        )
    }

    /// Takes a result; if it is a member result, returns the tier verdict.
    /// `tier_size` is how many nodes the tier has now: the tier fails only
    /// once too few nodes are left that could still pass.
    pub fn fold(
        &mut self,
        policy: &Policy,
        r: &CheckResult,
        tier_size: usize,
    ) -> Option<CheckResult> {
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
        let failing = members
            .values()
            .filter(|m| m.state == HardState::Failing)
            .count();
        let size = tier_size.max(members.len());
        let state = if passing >= k as usize {
            HardState::Passing
        } else if size - failing < k as usize {
            HardState::Failing
        } else {
            HardState::Pending
        };
        let entry = self.states.entry(key).or_insert((state, r.at_ms));
        if entry.0 != state {
            *entry = (state, r.at_ms);
        }
        let not_passing: Vec<&str> = members
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
                "{passing} of {size} nodes pass (at least {k} needed){}",
                if not_passing.is_empty() {
                    String::new()
                } else {
                    format!("; not passing: {}", not_passing.join(", "))
                }
            ),
            perf: vec![],
            flapping: false,
            flap_percent: 0.0,
            flap_changes: 0,
            trusted: true,
            level: def.level,
            tiers: vec![],
            observer: r.observer.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use gemba_core::{Config, ConfigFile, Overrides};

    use super::*;

    fn policy() -> Policy {
        let text = r#"
[[level]]
level = 3
run = ["/bin/true"]
[[check]]
name = "smoke"
kind = "http"
scope = "tier"
tier = "app"
min_passing = 2
url = "http://{node_addr}/smoke"
level = 3
[[check]]
name = "disk"
kind = "command"
tier = "db"
command = ["/usr/lib/nagios/plugins/check_disk", "-w", "10%"]
[[check]]
name = "ping"
kind = "mesh-node"
[[check]]
name = "lb"
kind = "tcp"
scope = "global"
host = "lb.internal"
port = 443
"#;
        let o = Overrides {
            node_id: Some("srv".into()),
            ..Default::default()
        };
        Config::from_file(ConfigFile::parse(Path::new("t"), text).unwrap(), &o, "t")
            .unwrap()
            .policy
    }

    fn nodes() -> Vec<NodeEntry> {
        ["a1", "a2", "a3"]
            .iter()
            .map(|n| NodeEntry {
                id: n.to_string(),
                addr: format!("10.0.0.{}", &n[1..]),
                tiers: vec!["app".into()],
            })
            .chain([NodeEntry {
                id: "d1".into(),
                addr: "10.0.1.1".into(),
                tiers: vec!["db".into()],
            }])
            .collect()
    }

    #[test]
    fn agents_run_their_own_node_checks_and_servers_the_rest() {
        let p = policy();
        let n = nodes();
        let db: Vec<String> = agent_instances(&p, &n[3]).iter().map(|i| i.id()).collect();
        assert_eq!(db, ["disk@node:d1"]);
        assert!(
            agent_instances(&p, &n[0]).is_empty(),
            "disk is for tier db only; ping is a server check"
        );
        let mut srv: Vec<String> = server_instances(&p, &n).iter().map(|i| i.id()).collect();
        srv.sort();
        assert_eq!(
            srv,
            [
                "lb@global",
                "ping@node:a1",
                "ping@node:a2",
                "ping@node:a3",
                "ping@node:d1",
                "smoke#a1@tier:app",
                "smoke#a2@tier:app",
                "smoke#a3@tier:app"
            ]
        );
        let smoke = server_instances(&p, &n)
            .into_iter()
            .find(|i| i.def.name == "smoke#a2")
            .unwrap();
        assert_eq!(
            smoke.kind,
            gemba_core::CheckKind::Http {
                url: "http://10.0.0.2/smoke".into(),
                expect_status: 200,
                body_contains: None,
                tls_ca_file: None,
                tls_warn_days: 14,
                tls_crit_days: 3,
            }
        );
        assert_eq!(
            smoke.def.level, None,
            "members are observed; the tier verdict acts"
        );
    }

    fn member(node: &str, state: HardState, at: u64) -> CheckResult {
        CheckResult {
            check: format!("smoke#{node}"),
            scope: Scope::Tier("app".into()),
            kind: "http".into(),
            status: if state == HardState::Failing {
                Status::Critical
            } else {
                Status::Ok
            },
            state,
            since_ms: at,
            at_ms: at,
            interval_ms: 10_000,
            duration_ms: 1,
            output: String::new(),
            perf: vec![],
            flapping: false,
            flap_percent: 0.0,
            flap_changes: 0,
            trusted: true,
            level: None,
            tiers: vec![],
            observer: "srv".into(),
        }
    }

    #[test]
    fn a_departed_node_no_longer_counts_towards_its_tier() {
        let p = policy();
        let mut v = TierVerdicts::default();
        v.fold(&p, &member("a1", HardState::Passing, 1), 3);
        v.fold(&p, &member("a2", HardState::Failing, 2), 3);
        let r = v.fold(&p, &member("a3", HardState::Failing, 3), 3).unwrap();
        assert_eq!(
            r.output,
            "1 of 3 nodes pass (at least 2 needed); not passing: a2, a3"
        );
        // a3 leaves the grid: two nodes are left, and only one passes.
        let left: Vec<NodeEntry> = nodes().into_iter().filter(|n| n.id != "a3").collect();
        v.retain(&p, &left);
        assert_eq!(v.len(), (1, 2), "a3's result is forgotten");
        let r = v.fold(&p, &member("a2", HardState::Failing, 4), 2).unwrap();
        assert_eq!(
            r.output,
            "1 of 2 nodes pass (at least 2 needed); not passing: a2"
        );
        // Every member gone: nothing is held for the tier.
        v.retain(&p, &[]);
        assert_eq!(v.len(), (0, 0));
    }

    #[test]
    fn a_tier_passes_while_at_least_k_nodes_pass() {
        let p = policy();
        let mut v = TierVerdicts::default();
        let r = v.fold(&p, &member("a1", HardState::Passing, 1), 3).unwrap();
        assert_eq!(r.state, HardState::Pending, "one of three reported");
        let r = v.fold(&p, &member("a2", HardState::Passing, 2), 3).unwrap();
        assert_eq!(
            (r.check.as_str(), r.state, r.level),
            ("smoke", HardState::Passing, Some(3))
        );
        let r = v.fold(&p, &member("a3", HardState::Failing, 3), 3).unwrap();
        assert_eq!(r.state, HardState::Passing, "2 of 3 still pass");
        assert_eq!(
            r.output,
            "2 of 3 nodes pass (at least 2 needed); not passing: a3"
        );
        let r = v.fold(&p, &member("a1", HardState::Failing, 4), 3).unwrap();
        assert_eq!((r.state, r.since_ms), (HardState::Failing, 4));
        assert!(v
            .fold(
                &p,
                &CheckResult {
                    check: "lb".into(),
                    ..member("a1", HardState::Passing, 5)
                },
                3
            )
            .is_none());
    }
}
