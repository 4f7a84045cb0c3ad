//! The grid graph as every stage sees it: nodes with verdicts, directed
//! links with their state, loss and why. The mesh computes it from gossip
//! (`gemba-mesh`); checks, the escalator and the console read it. Only
//! data and the words for it live here, so that readers need not depend on
//! the mesh.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What an observer concludes about a directed link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Up,
    Degraded,
    Down,
    /// Never measured yet.
    Unknown,
    /// The observer's report is too old to trust (the observer is not live).
    Stale,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Degraded => "degraded",
            LinkState::Down => "down",
            LinkState::Unknown => "unknown",
            LinkState::Stale => "stale",
        }
    }
    pub const ALL: [LinkState; 5] = [
        LinkState::Up,
        LinkState::Degraded,
        LinkState::Down,
        LinkState::Unknown,
        LinkState::Stale,
    ];
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a link loses probes (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    #[default]
    None,
    /// Spread over all flows.
    Random,
    /// Some flows lose everything, the others (nearly) nothing.
    Path,
    /// Every flow loses everything.
    Total,
}

impl LossKind {
    pub const ALL: [LossKind; 4] = [
        LossKind::None,
        LossKind::Random,
        LossKind::Path,
        LossKind::Total,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LossKind::None => "none",
            LossKind::Random => "random",
            LossKind::Path => "path",
            LossKind::Total => "total",
        }
    }
}

/// The TCP connects' last results, over all flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpPath {
    Unknown,
    /// The last connect of every flow tried reached the peer.
    Connects,
    /// Some flows connect, others do not.
    Partial,
    /// No flow connects.
    Fails,
}

/// Words for a link that is not up, as people read them: "4 of 8 flows
/// fail (a path is black-holed)". `None` for a link that is up or unmeasured.
pub fn link_reason(
    state: LinkState,
    kind: LossKind,
    failing: u8,
    probed: u8,
    loss: Option<f64>,
) -> Option<String> {
    match (state, kind) {
        (LinkState::Down, _) => Some(if probed > 1 {
            format!("all {probed} flows fail")
        } else {
            "every probe is lost".to_string()
        }),
        (LinkState::Degraded, LossKind::Path) => Some(format!(
            "{failing} of {probed} flows fail (a path is black-holed)"
        )),
        (LinkState::Degraded, LossKind::Random) => Some(match loss {
            Some(l) => format!("random loss ({:.0}% of probes)", l * 100.0),
            None => "random loss".to_string(),
        }),
        (LinkState::Degraded, _) => Some("slow: p99 RTT over the threshold".to_string()),
        _ => None,
    }
}

/// The verdict on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Up,
    /// Some observers cannot reach it, but not a quorum.
    Degraded,
    /// A quorum of trusted observers cannot reach it.
    Down,
    /// It cannot reach most of its peers; its observations are not trusted.
    Isolated,
    Unknown,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Degraded => "degraded",
            NodeState::Down => "down",
            NodeState::Isolated => "isolated",
            NodeState::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GraphNode {
    pub id: String,
    pub site: String,
    pub state: NodeState,
    pub addr: String,
    pub http: Option<String>,
    /// Whether gossip from this node is current (failure detector).
    pub live: bool,
    /// Trusted observers that probe this node, and how many see it down.
    pub observers: usize,
    pub down_votes: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GraphEdge {
    pub source: String,
    pub target: String,
    pub state: LinkState,
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p99_ms: Option<f64>,
    pub loss: Option<f64>,
    /// How the link loses probes: none, random, path (some flows fail: a
    /// black-holed path) or total.
    #[serde(default)]
    pub loss_kind: LossKind,
    /// Flows (source ports) the observer probes, and how many of them fail.
    #[serde(default)]
    pub flows_probed: u8,
    #[serde(default)]
    pub flows_failing: u8,
    /// Why the link is not up, in words.
    #[serde(default)]
    pub reason: Option<String>,
    pub tcp: TcpPath,
    /// Unix seconds since the observer has seen this state.
    pub since: Option<u64>,
}

impl GraphEdge {
    /// One line for people: `ams-1 → nyc-1 degraded: 4 of 8 flows fail (a
    /// path is black-holed)`.
    pub fn describe(&self) -> String {
        match &self.reason {
            Some(r) => format!("{} → {} {}: {r}", self.source, self.target, self.state),
            None => format!("{} → {} {}", self.source, self.target, self.state),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Graph {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

impl Graph {
    /// Links that are down or degraded, worst first, then oldest first.
    pub fn broken_links(&self) -> Vec<&GraphEdge> {
        let mut v: Vec<&GraphEdge> = self
            .edges
            .iter()
            .filter(|e| matches!(e.state, LinkState::Down | LinkState::Degraded))
            .collect();
        v.sort_by(|a, b| {
            (a.state != LinkState::Down, a.since, &a.source, &a.target).cmp(&(
                b.state != LinkState::Down,
                b.since,
                &b.source,
                &b.target,
            ))
        });
        v
    }

    pub fn node(&self, id: &str) -> Option<&GraphNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// One edge, by a scan: for a few look-ups. Many look-ups (a matrix)
    /// go through [`Graph::edge_index`].
    pub fn edge(&self, source: &str, target: &str) -> Option<&GraphEdge> {
        self.edges
            .iter()
            .find(|e| e.source == source && e.target == target)
    }

    /// Every edge by (source, target), built once per graph.
    pub fn edge_index(&self) -> std::collections::HashMap<(&str, &str), &GraphEdge> {
        self.edges
            .iter()
            .map(|e| ((e.source.as_str(), e.target.as_str()), e))
            .collect()
    }
}

/// One site as the backbone carries it: what its representatives publish
/// and relay into every other site, so that every node of a large grid
/// knows every site in short form and its own site in full.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SiteSummary {
    pub site: String,
    /// When the representative that signed it computed it (its clock, ms
    /// since the epoch).
    pub at_ms: u64,
    /// The node that signed it: a representative of the site.
    pub signer: String,
    /// The site's representatives: its members in the backbone.
    pub representatives: Vec<SiteMember>,
    /// Members the site knows of, and how many of them are up.
    pub nodes: usize,
    pub up: usize,
    /// Members that are not up, by state (at most [`SITE_TROUBLED_MAX`]).
    pub troubled: Vec<SiteNode>,
    /// Links to other sites, as the representatives measure them.
    pub links: Vec<SiteLink>,
    /// Broken links inside the site, worst first (at most
    /// [`SITE_BROKEN_MAX`]), and how many there are in all.
    pub broken: Vec<SiteBrokenLink>,
    pub broken_total: usize,
    /// No representative of the site is heard in the backbone any more:
    /// this is the last summary known.
    pub stale: bool,
}

/// Members that are not up, listed in a summary at most.
pub const SITE_TROUBLED_MAX: usize = 64;
/// Broken links inside a site, listed in a summary at most.
pub const SITE_BROKEN_MAX: usize = 32;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SiteMember {
    pub id: String,
    pub addr: String,
    pub http: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SiteNode {
    pub id: String,
    pub state: NodeState,
}

/// The link from a site to another, over every pair of their
/// representatives: `down` when every pair is down, `degraded` (with the
/// worst loss kind) when some pair is not up, `unknown` before any pair
/// was measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SiteLink {
    pub to: String,
    pub state: LinkState,
    pub loss_kind: LossKind,
    /// Representative pairs measured, and how many are not up.
    pub pairs: usize,
    pub pairs_troubled: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SiteBrokenLink {
    pub source: String,
    pub target: String,
    pub state: LinkState,
    pub loss_kind: LossKind,
}

/// Broken links between two sites, both directions together: one line of
/// the broken-link list however many representative pairs fail.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SitePair {
    pub a: String,
    pub b: String,
    /// The worse of the two directions.
    pub state: LinkState,
    pub loss_kind: LossKind,
    /// Directions not up (1 or 2), and representative pairs not up.
    pub directions: usize,
    pub pairs_troubled: usize,
}
