//! Prometheus metrics of the mesh. Registered once per node into the
//! registry the HTTP side exposes at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::wire::{DropReason, Kind};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

/// Peers given a label of their own on the expired-packets counter at
/// most; packets from more are counted under `peer="other"`.
const MAX_EXPIRED_PEERS: usize = 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowLabel {
    pub target: String,
    pub flow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LossKindLabel {
    pub target: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkStateLabel {
    pub target: String,
    pub state: &'static str,
}

fn rtt_histogram() -> Histogram {
    // 50 µs to ~1.6 s, doubling.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Every counter and gauge the mesh maintains.
pub struct MeshMetrics {
    pub packets_sent: Family<KindLabel, Counter>,
    pub packets_received: Family<KindLabel, Counter>,
    pub gossip_bytes: Family<DirectionLabel, Counter>,
    pub dropped: Family<ReasonLabel, Counter>,
    /// Packets dropped as expired, by the (authenticated) peer that sent
    /// them: a clock off by more than the packet age limit.
    pub expired: Family<PeerLabel, Counter>,
    expired_peers: std::sync::Mutex<std::collections::HashSet<String>>,
    pub probes_sent: Family<TargetLabel, Counter>,
    pub probes_lost: Family<TargetLabel, Counter>,
    pub probe_rtt: Family<TargetLabel, Histogram, fn() -> Histogram>,
    pub link_loss: Family<TargetLabel, Gauge<f64, AtomicU64>>,
    pub link_state: Family<LinkStateLabel, Gauge>,
    pub tcp_connect_failures: Family<TargetLabel, Counter>,
    pub flow_loss: Family<FlowLabel, Gauge<f64, AtomicU64>>,
    pub failing_flows: Family<TargetLabel, Gauge>,
    pub loss_kind: Family<LossKindLabel, Gauge>,
    pub confirm_bursts: Family<TargetLabel, Counter>,
    pub gossip_refused: Family<ReasonLabel, Counter>,
    pub gossip_self_deltas: Counter,
    /// Ed25519 verifications of peers' gossip values.
    pub signatures_verified: Counter,
    /// Peers' values found already verified (a relayed or re-sent copy).
    pub signature_cache_hits: Counter,
    /// CPU time spent verifying signatures.
    pub signature_cpu_seconds: Counter<f64, AtomicU64>,
    /// Values this node published in its own gossip state, by class.
    pub values_published: Family<ClassLabel, Counter>,
    /// Agents' samples refused (on a server), by reason.
    pub samples_refused: Family<ReasonLabel, Counter>,
    /// Presences verified: a node proved the address it sends from.
    pub presences: Counter,
    /// Nodes whose gossip claims an address other than the one they
    /// proved, or that proved none (a server's directory leaves them out).
    pub addresses_unproven: prometheus_client::metrics::gauge::Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: &'static str,
}

pub fn kind_label(kind: Kind) -> KindLabel {
    KindLabel {
        kind: match kind {
            Kind::Gossip => "gossip",
            Kind::ProbeRequest => "probe_request",
            Kind::ProbeReply => "probe_reply",
            Kind::Samples => "samples",
            Kind::Backbone => "backbone",
        },
    }
}

impl MeshMetrics {
    pub fn new() -> Self {
        MeshMetrics {
            packets_sent: Family::default(),
            packets_received: Family::default(),
            gossip_bytes: Family::default(),
            dropped: Family::default(),
            expired: Family::default(),
            expired_peers: Default::default(),
            probes_sent: Family::default(),
            probes_lost: Family::default(),
            probe_rtt: Family::new_with_constructor(rtt_histogram),
            link_loss: Family::default(),
            link_state: Family::default(),
            tcp_connect_failures: Family::default(),
            flow_loss: Family::default(),
            failing_flows: Family::default(),
            loss_kind: Family::default(),
            confirm_bursts: Family::default(),
            gossip_refused: Family::default(),
            gossip_self_deltas: Counter::default(),
            signatures_verified: Counter::default(),
            signature_cache_hits: Counter::default(),
            signature_cpu_seconds: Counter::default(),
            values_published: Family::default(),
            samples_refused: Family::default(),
            presences: Counter::default(),
            addresses_unproven: Default::default(),
        }
    }

    /// Registers clones of every metric (they share their values) under
    /// `gemba_mesh_*`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("gemba_mesh");
        r.register(
            "packets_sent",
            "Authenticated datagrams sent, by kind",
            self.packets_sent.clone(),
        );
        r.register(
            "gossip_refused",
            "Authenticated gossip messages the guard refused before chitchat saw them, by reason",
            self.gossip_refused.clone(),
        );
        r.register(
            "gossip_self_deltas",
            "Deltas about this node's own id that peers sent and the guard left out",
            self.gossip_self_deltas.clone(),
        );
        r.register(
            "packets_received",
            "Datagrams accepted after verification, by kind",
            self.packets_received.clone(),
        );
        r.register(
            "gossip_bytes",
            "Bytes of gossip datagrams, by direction",
            self.gossip_bytes.clone(),
        );
        r.register(
            "dropped_packets",
            "Datagrams dropped before use, by reason",
            self.dropped.clone(),
        );
        r.register(
            "expired_packets",
            "Signed datagrams dropped as expired, by the peer that sent them (its clock or this node's is off)",
            self.expired.clone(),
        );
        r.register(
            "probes_sent",
            "UDP probes sent, by target node",
            self.probes_sent.clone(),
        );
        r.register(
            "probes_lost",
            "UDP probes without a reply before the timeout, by target node",
            self.probes_lost.clone(),
        );
        r.register(
            "probe_rtt_seconds",
            "Round-trip time of UDP probes, by target node",
            self.probe_rtt.clone(),
        );
        r.register(
            "link_loss_ratio",
            "Probe loss over the window, by target node",
            self.link_loss.clone(),
        );
        r.register(
            "link_state",
            "1 for the current state of the link to each target",
            self.link_state.clone(),
        );
        r.register(
            "tcp_connect_failures",
            "Failed TCP connect probes, by target node",
            self.tcp_connect_failures.clone(),
        );
        r.register(
            "flow_loss_ratio",
            "Probe loss over the window on each probe flow (source port), by target node and flow",
            self.flow_loss.clone(),
        );
        r.register(
            "link_failing_flows",
            "Probe flows called dead (a black-holed path), by target node",
            self.failing_flows.clone(),
        );
        r.register(
            "link_loss_kind",
            "1 for how the link to each target loses probes: none, random, path or total",
            self.loss_kind.clone(),
        );
        r.register(
            "confirm_bursts",
            "Confirmation bursts sent after a lost probe or a dead flow's reply, by target node",
            self.confirm_bursts.clone(),
        );
        r.register(
            "signatures_verified",
            "Ed25519 signatures of peers' gossip values verified (each distinct value once)",
            self.signatures_verified.clone(),
        );
        r.register(
            "signature_cache_hits",
            "Peers' gossip values that arrived again and were already verified",
            self.signature_cache_hits.clone(),
        );
        r.register(
            "signature_verify_cpu_seconds",
            "CPU time spent verifying the signatures of peers' gossip values",
            self.signature_cpu_seconds.clone(),
        );
        r.register(
            "values_published",
            "Values this node published (signed) in its gossip state, by class: link, check, node",
            self.values_published.clone(),
        );
        r.register(
            "presences",
            "Signed presences verified: a node proved to this server the address it sends from",
            self.presences.clone(),
        );
        r.register(
            "addresses_unproven",
            "Members whose advertised address is not the one they proved to this server, or that proved none yet; steps, log fetches and tier checks do not use a claimed address",
            self.addresses_unproven.clone(),
        );
        r.register(
            "samples_refused",
            "Agents' samples a server refused, by reason (unknown_identity, bad_signature, expired, not_a_server, ...)",
            self.samples_refused.clone(),
        );
        for reason in DropReason::ALL {
            // Present from the start, so a scrape shows zero rather than nothing.
            let _ = self.dropped.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
    }

    /// Counts a signed packet from `peer` dropped as expired.
    pub fn expired_from(&self, peer: &str) {
        let peer = match self.expired_peers.lock() {
            Ok(seen) if seen.contains(peer) => peer.to_string(),
            Ok(mut seen) if seen.len() < MAX_EXPIRED_PEERS => {
                seen.insert(peer.to_string());
                peer.to_string()
            }
            _ => "other".to_string(),
        };
        self.expired.get_or_create(&PeerLabel { peer }).inc();
    }

    pub fn drop_packet(&self, reason: DropReason) {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }
}

impl Default for MeshMetrics {
    fn default() -> Self {
        Self::new()
    }
}
