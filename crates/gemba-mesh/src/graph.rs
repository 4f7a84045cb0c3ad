//! The grid graph every node serves, computed from gossip alone.
//!
//! Given the same membership and gossip state, every node computes the same
//! graph: edges as their observers published them (stale when the observer
//! is no longer live, unknown when expected but not yet reported), and node
//! verdicts by quorum: a node is `down` when most of its trusted observers
//! cannot reach it; an observer that cannot reach most of its peers is
//! `isolated` and does not count as a witness.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use gemba_core::Topology;

use crate::link::{
    link_reason, loss_bucket_value, rtt_bucket_ms, EdgeValue, LinkState, LossKind, TcpPath,
};
use crate::topology::{self, Placed};

/// One node as gossip describes it.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: String,
    pub site: String,
    pub addr: SocketAddr,
    pub http: Option<String>,
    pub live: bool,
    pub generation: u64,
    /// Tiers the node belongs to.
    pub tags: Vec<String>,
    /// Whether it says it runs the server role.
    pub server: bool,
    /// Outgoing links by target id.
    pub edges: BTreeMap<String, EdgeValue>,
}

impl Placed for Member {
    fn id(&self) -> &str {
        &self.id
    }
    fn site(&self) -> &str {
        &self.site
    }
    fn live(&self) -> bool {
        self.live
    }
}

pub use gemba_core::graph::{Graph, GraphEdge, GraphNode, NodeState};

/// The edge `source` → `target` as `source` gossiped it (`None`: not
/// yet reported); an observer that is no longer live makes it stale.
pub fn edge_from_gossip(
    source: &str,
    target: &str,
    value: Option<&EdgeValue>,
    observer_live: bool,
) -> GraphEdge {
    let Some(v) = value else {
        return GraphEdge {
            source: source.to_string(),
            target: target.to_string(),
            state: if observer_live {
                LinkState::Unknown
            } else {
                LinkState::Stale
            },
            rtt_p50_ms: None,
            rtt_p99_ms: None,
            loss: None,
            loss_kind: LossKind::None,
            flows_probed: 0,
            flows_failing: 0,
            reason: None,
            tcp: TcpPath::Unknown,
            since: None,
        };
    };
    let state = if observer_live {
        v.state
    } else {
        LinkState::Stale
    };
    let loss = match v.kind {
        // For path loss the share of failing flows is known exactly;
        // the bucket only bounds it.
        LossKind::Path if v.probed > 0 => Some(f64::from(v.failing) / f64::from(v.probed)),
        _ => (v.state != LinkState::Unknown).then(|| loss_bucket_value(v.loss)),
    };
    GraphEdge {
        source: source.to_string(),
        target: target.to_string(),
        state,
        rtt_p50_ms: rtt_bucket_ms(v.p50),
        rtt_p99_ms: rtt_bucket_ms(v.p99),
        loss,
        loss_kind: v.kind,
        flows_probed: v.probed,
        flows_failing: v.failing,
        // Buckets only bound random loss, so its words name no figure.
        reason: link_reason(state, v.kind, v.failing, v.probed, None),
        tcp: v.tcp,
        since: Some(v.since),
    }
}

/// Builds the graph. `members` must hold one entry per node id (the
/// newest generation).
pub fn build(members: &[Member], topology: Topology, isolated_fraction: f64) -> Graph {
    let mut members: Vec<&Member> = members.iter().collect();
    members.sort_by(|a, b| (&a.site, &a.id).cmp(&(&b.site, &b.id)));

    let mut edges = Vec::new();
    for m in &members {
        let expected = topology::targets(&m.id, &members, topology);
        for t in expected {
            let target = members[t];
            let edge = edge_from_gossip(&m.id, &target.id, m.edges.get(&target.id), m.live);
            edges.push(edge);
        }
    }

    // Isolation: a live observer that has measured at least two peers and
    // sees more than `isolated_fraction` of them down. A peer counts
    // against an observer only if another member reaches it: a node nobody
    // reaches (down, or an id claimed at an address where nothing answers)
    // is evidence against itself, not against everyone who probes it.
    // Witnesses use what each member last published, live or not: a
    // node cut off from everyone still knows its peers answered each other.
    let mut reached_by: HashMap<&str, Vec<&str>> = HashMap::new();
    for m in &members {
        for (target, v) in &m.edges {
            if matches!(v.state, LinkState::Up | LinkState::Degraded) && *target != m.id {
                reached_by
                    .entry(target.as_str())
                    .or_default()
                    .push(m.id.as_str());
            }
        }
    }
    // A witness that `target` answers is a member other than the one
    // judged, itself reached by someone other than `target`: two claimed
    // ids vouching for each other witness nothing.
    let reached_by_another = |source: &str, target: &str| {
        reached_by.get(target).is_some_and(|by| {
            by.iter().any(|o| {
                *o != source
                    && reached_by
                        .get(o)
                        .is_some_and(|by_o| by_o.iter().any(|w| *w != target))
            })
        })
    };
    let mut measured: HashMap<&str, (usize, usize)> = HashMap::new();
    for e in &edges {
        let counts = match e.state {
            LinkState::Up | LinkState::Degraded => true,
            LinkState::Down => reached_by_another(&e.source, &e.target),
            _ => false,
        };
        if counts {
            let c = measured.entry(e.source.as_str()).or_default();
            c.0 += 1;
            if e.state == LinkState::Down {
                c.1 += 1;
            }
        }
    }
    let isolated = |id: &str| {
        measured
            .get(id)
            .is_some_and(|(n, down)| *n >= 2 && (*down as f64) > isolated_fraction * *n as f64)
    };
    let live: HashMap<&str, bool> = members.iter().map(|m| (m.id.as_str(), m.live)).collect();

    let mut votes: HashMap<&str, (usize, usize, usize)> = HashMap::new(); // observers, down, troubled
    for e in &edges {
        let trusted = live.get(e.source.as_str()).copied().unwrap_or(false) && !isolated(&e.source);
        if !trusted
            || !matches!(
                e.state,
                LinkState::Up | LinkState::Degraded | LinkState::Down
            )
        {
            continue;
        }
        let v = votes.entry(e.target.as_str()).or_default();
        v.0 += 1;
        if e.state == LinkState::Down {
            v.1 += 1;
        }
        if e.state != LinkState::Up {
            v.2 += 1;
        }
    }

    let nodes = members
        .iter()
        .map(|m| {
            let (observers, down_votes, troubled) =
                votes.get(m.id.as_str()).copied().unwrap_or_default();
            let state = if observers == 0 {
                // Nobody trusted measures it: gossip liveness is all we have.
                if isolated(&m.id) {
                    NodeState::Isolated
                } else if m.live {
                    if edges.iter().any(|e| e.target == m.id) {
                        NodeState::Unknown
                    } else {
                        NodeState::Up
                    }
                } else {
                    NodeState::Down
                }
            } else if down_votes * 2 > observers {
                NodeState::Down
            } else if isolated(&m.id) {
                NodeState::Isolated
            } else if troubled > 0 {
                NodeState::Degraded
            } else {
                NodeState::Up
            };
            GraphNode {
                id: m.id.clone(),
                site: m.site.clone(),
                state,
                addr: m.addr.to_string(),
                http: m.http.clone(),
                live: m.live,
                observers,
                down_votes,
            }
        })
        .collect();
    Graph { nodes, edges }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, site: &str, live: bool, edges: &[(&str, LinkState)]) -> Member {
        Member {
            id: id.into(),
            site: site.into(),
            addr: "127.0.0.1:7946".parse().unwrap(),
            http: None,
            live,
            generation: 1,
            tags: vec![],
            server: false,
            edges: edges
                .iter()
                .map(|(t, s)| {
                    (
                        t.to_string(),
                        EdgeValue {
                            state: *s,
                            p50: 3,
                            p99: 4,
                            loss: 0,
                            tcp: TcpPath::Connects,
                            kind: LossKind::None,
                            failing: 0,
                            probed: 8,
                            since: 10,
                        },
                    )
                })
                .collect(),
        }
    }

    use LinkState::{Down as D, Up as U};

    fn five(e_down_for: &[&str]) -> Vec<Member> {
        let ids = ["a", "b", "c", "d", "e"];
        ids.iter()
            .map(|me| {
                let edges: Vec<(&str, LinkState)> = ids
                    .iter()
                    .filter(|t| *t != me)
                    .map(|t| {
                        (
                            *t,
                            if *t == "e" && e_down_for.contains(me) {
                                D
                            } else {
                                U
                            },
                        )
                    })
                    .collect();
                member(me, "s1", true, &edges)
            })
            .collect()
    }

    #[test]
    fn node_is_down_only_with_a_quorum_of_observers() {
        let g = build(&five(&["a", "b"]), Topology::Full, 0.5);
        assert_eq!(g.node("e").unwrap().state, NodeState::Degraded);
        let g = build(&five(&["a", "b", "c"]), Topology::Full, 0.5);
        let e = g.node("e").unwrap();
        assert_eq!(
            (e.state, e.observers, e.down_votes),
            (NodeState::Down, 4, 3)
        );
        assert_eq!(g.node("a").unwrap().state, NodeState::Up);
    }

    #[test]
    fn observer_that_loses_most_peers_is_isolated_and_not_a_witness() {
        let mut m = five(&[]);
        // a cannot reach anyone; everyone else still reaches a.
        m[0] = member("a", "s1", true, &[("b", D), ("c", D), ("d", D), ("e", D)]);
        let g = build(&m, Topology::Full, 0.5);
        assert_eq!(g.node("a").unwrap().state, NodeState::Isolated);
        for id in ["b", "c", "d", "e"] {
            let n = g.node(id).unwrap();
            assert_eq!(
                n.state,
                NodeState::Up,
                "{id} must not be blamed by an isolated observer"
            );
            assert_eq!(n.observers, 3);
        }
    }

    #[test]
    fn ids_nobody_reaches_do_not_isolate_the_nodes_that_probe_them() {
        // Two real nodes reach each other; two claimed ids answer nobody
        // (live in gossip, kept alive by whoever claims them).
        let real = |me: &str, other: &str| {
            member(
                me,
                "s1",
                true,
                &[(other, U), ("ghost-1", D), ("ghost-2", D)],
            )
        };
        let m = vec![
            real("a", "b"),
            real("b", "a"),
            member("ghost-1", "s1", true, &[]),
            member("ghost-2", "s1", true, &[]),
        ];
        let g = build(&m, Topology::Full, 0.5);
        for id in ["a", "b"] {
            let n = g.node(id).unwrap();
            assert_eq!((n.state, n.observers), (NodeState::Up, 1), "{id}");
        }
        assert_eq!(g.node("ghost-1").unwrap().state, NodeState::Down);
        // Nor when the two claim to reach each other: a witness must be
        // reached by someone besides the node it vouches for.
        let mut m2 = m.clone();
        m2[2] = member("ghost-1", "s1", true, &[("ghost-2", U)]);
        m2[3] = member("ghost-2", "s1", true, &[("ghost-1", U)]);
        let g = build(&m2, Topology::Full, 0.5);
        assert_eq!(g.node("a").unwrap().state, NodeState::Up);
        assert_eq!(g.node("b").unwrap().state, NodeState::Up);
    }

    #[test]
    fn a_node_cut_off_long_enough_to_judge_everyone_dead_is_still_isolated() {
        // a's own view: it hears nobody (all others not live), and what
        // they last published says they reached each other.
        let mut m = five(&[]);
        m[0] = member("a", "s1", true, &[("b", D), ("c", D), ("d", D), ("e", D)]);
        for o in &mut m[1..] {
            o.live = false;
        }
        let g = build(&m, Topology::Full, 0.5);
        assert_eq!(g.node("a").unwrap().state, NodeState::Isolated);
    }

    #[test]
    fn edges_of_a_dead_observer_are_stale_and_missing_ones_unknown() {
        let mut m = five(&[]);
        m[4].live = false;
        m[0].edges.remove("b");
        let g = build(&m, Topology::Full, 0.5);
        assert_eq!(g.edge("e", "a").unwrap().state, LinkState::Stale);
        assert_eq!(g.edge("a", "b").unwrap().state, LinkState::Unknown);
        assert_eq!(g.edges.len(), 20);
    }

    #[test]
    fn broken_links_lists_down_before_degraded() {
        let mut m = five(&["c"]);
        m[0].edges.get_mut("b").unwrap().state = LinkState::Degraded;
        let g = build(&m, Topology::Full, 0.5);
        let broken: Vec<(&str, &str)> = g
            .broken_links()
            .iter()
            .map(|e| (e.source.as_str(), e.target.as_str()))
            .collect();
        assert_eq!(broken, [("c", "e"), ("a", "b")]);
    }

    #[test]
    fn single_live_node_without_observers_is_up() {
        let g = build(&[member("solo", "s", true, &[])], Topology::Full, 0.5);
        assert_eq!(g.node("solo").unwrap().state, NodeState::Up);
        assert!(g.edges.is_empty());
    }
}
