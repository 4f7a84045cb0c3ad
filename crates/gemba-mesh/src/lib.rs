//! The connectivity mesh: every node probes its peers, publishes what it
//! measures through authenticated gossip, and computes the same graph of
//! link health as every other node.
//!
//! Layers, bottom up: [`net`] (the network seam: real UDP, in-memory, fault
//! injection), [`wire`] (signed datagrams, replay protection), [`endpoint`]
//! (one socket demultiplexed into gossip and probes), [`gossip_guard`]
//! (every gossip message checked before chitchat sees it), [`link`] (per-link
//! state machine), [`prober`], [`topology`], [`graph`], and [`node`], which
//! wires them with chitchat.

pub mod endpoint;
pub mod gossip_guard;
pub mod graph;
pub mod identity;
pub mod key;
pub mod link;
pub mod link_gossip;
pub mod metrics;
pub mod net;
pub mod node;
pub mod prober;
pub mod sched;
pub mod sites;
pub mod topology;
pub mod wire;

pub use chitchat::ListenerHandle;
pub use graph::{Graph, GraphEdge, GraphNode, NodeState};
pub use link::{LinkState, LinkSummary};
pub use net::{FaultNet, MemNet, Net, UdpNet};
pub use node::{AgentSample, MeshError, MeshNode, MeshSettings, GOSSIP_KEYS};
pub use wire::GridKey;
