//! `[mesh]`: the grid's gossip, probing and their limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{defaults, Overrides, Topology};
use crate::duration::HumanDuration;
use crate::validate::Checker;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshSection {
    pub cluster: Option<String>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub seeds: Option<Vec<String>>,
    pub grid_key_file: Option<PathBuf>,
    /// Enrolled nodes and their public keys: with it, only they are
    /// believed.
    pub nodes_file: Option<PathBuf>,
    pub probe_interval: Option<String>,
    pub probes_per_interval: Option<u32>,
    pub probe_flows: Option<u32>,
    pub probe_ports: Option<String>,
    pub probe_timeout: Option<String>,
    pub tcp_probe_interval: Option<String>,
    pub tcp_timeout: Option<String>,
    pub gossip_interval: Option<String>,
    pub backbone_gossip_interval: Option<String>,
    pub window: Option<String>,
    pub down_after_lost: Option<u32>,
    pub up_after_replies: Option<u32>,
    pub degraded_loss_percent: Option<f64>,
    pub degraded_rtt_p99: Option<String>,
    pub isolated_percent: Option<f64>,
    pub packet_max_age: Option<String>,
    pub topology: Option<String>,
    pub representatives: Option<u32>,
    pub backbone_seeds: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub cluster: String,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub seeds: Vec<String>,
    /// Under the `sites` topology: nodes of other sites (likely
    /// representatives) a representative first reaches the backbone
    /// through; once in, it learns the rest from the summaries.
    pub backbone_seeds: Vec<String>,
    pub grid_key_file: Option<PathBuf>,
    /// Enrolled nodes (`node-id public-key` lines); `None`: a node's key
    /// is pinned when first seen.
    pub nodes_file: Option<PathBuf>,
    pub probe_interval: Duration,
    pub probes_per_interval: u32,
    /// Flows (source ports) each peer is probed over.
    pub probe_flows: u32,
    /// A fixed range of source ports for the flows, for firewalls.
    pub probe_ports: Option<(u16, u16)>,
    pub probe_timeout: Duration,
    pub tcp_probe_interval: Duration,
    pub tcp_timeout: Duration,
    pub gossip_interval: Duration,
    /// Under the `sites` topology: the backbone's gossip rounds (the
    /// site's are `gossip_interval`).
    pub backbone_gossip_interval: Duration,
    pub window: Duration,
    pub down_after_lost: u32,
    pub up_after_replies: u32,
    pub degraded_loss: f64,
    pub degraded_rtt_p99: Duration,
    pub isolated_fraction: f64,
    pub packet_max_age: Duration,
    pub topology: Topology,
}

/// `[mesh]`, with the command line's overrides. `None` when an address
/// does not parse (the error is recorded).
pub(super) fn mesh_config(c: &mut Checker, mesh: MeshSection, o: &Overrides) -> Option<MeshConfig> {
    let cluster = mesh.cluster.unwrap_or_else(|| defaults::CLUSTER.into());
    if cluster.is_empty() || cluster.len() > 64 {
        c.fail("mesh.cluster", "must be 1 to 64 characters");
    }
    let listen_text = o
        .mesh_listen
        .clone()
        .or(mesh.listen)
        .unwrap_or_else(|| defaults::MESH_LISTEN.into());
    let listen = c.socket_addr("mesh.listen", &listen_text);
    let advertise = match o.mesh_advertise.clone().or(mesh.advertise) {
        Some(text) => c.socket_addr("mesh.advertise", &text),
        None => match listen {
            Some(l) if l.ip().is_unspecified() => {
                c.fail("mesh.advertise", format!("required when mesh.listen is {l}: peers need an address to reach this node"));
                None
            }
            other => other,
        },
    };
    let mut seeds = mesh.seeds.unwrap_or_default();
    seeds.extend(o.seeds.iter().cloned());
    for (i, s) in seeds.iter().enumerate() {
        if !s.contains(':') {
            c.fail(
                &format!("mesh.seeds[{i}]"),
                format!("{s:?} is not a host:port address"),
            );
        }
    }
    let backbone_seeds = mesh.backbone_seeds.unwrap_or_default();
    for (i, s) in backbone_seeds.iter().enumerate() {
        if !s.contains(':') {
            c.fail(
                &format!("mesh.backbone_seeds[{i}]"),
                format!("{s:?} is not a host:port address"),
            );
        }
    }
    let grid_key_file = o.grid_key_file.clone().or(mesh.grid_key_file);
    if let Some(p) = &grid_key_file {
        if let Err(why) = crate::secret::read_key_file(p) {
            c.fail("mesh.grid_key_file", why);
        }
    }
    let nodes_file = mesh.nodes_file;
    if let Some(p) = &nodes_file {
        if let Err(e) = std::fs::metadata(p) {
            c.fail(
                "mesh.nodes_file",
                format!("cannot read {}: {e}", p.display()),
            );
        }
    }
    let ms = Duration::from_millis;
    let probe_interval = c.duration(
        "mesh.probe_interval",
        mesh.probe_interval.as_deref(),
        defaults::PROBE_INTERVAL,
        ms(100),
    );
    let probes_per_interval = c.count(
        "mesh.probes_per_interval",
        mesh.probes_per_interval,
        defaults::PROBES_PER_INTERVAL,
        1..=20,
    );
    let probe_flows = c.count(
        "mesh.probe_flows",
        mesh.probe_flows,
        defaults::PROBE_FLOWS,
        1..=64,
    );
    let probe_ports = mesh
        .probe_ports
        .as_deref()
        .and_then(|text| match parse_port_range(text) {
            Ok((first, last)) => {
                if u32::from(last - first) + 1 < probe_flows {
                    c.fail(
                        "mesh.probe_ports",
                        format!(
                            "{text:?} holds {} ports but mesh.probe_flows is {probe_flows}",
                            last - first + 1
                        ),
                    );
                }
                Some((first, last))
            }
            Err(reason) => {
                c.fail("mesh.probe_ports", reason);
                None
            }
        });
    let probe_timeout = c.duration(
        "mesh.probe_timeout",
        mesh.probe_timeout.as_deref(),
        defaults::PROBE_TIMEOUT,
        ms(10),
    );
    let tcp_probe_interval = c.duration(
        "mesh.tcp_probe_interval",
        mesh.tcp_probe_interval.as_deref(),
        defaults::TCP_PROBE_INTERVAL,
        ms(500),
    );
    let tcp_timeout = c.duration(
        "mesh.tcp_timeout",
        mesh.tcp_timeout.as_deref(),
        defaults::TCP_TIMEOUT,
        ms(10),
    );
    let gossip_interval = c.duration(
        "mesh.gossip_interval",
        mesh.gossip_interval.as_deref(),
        defaults::GOSSIP_INTERVAL,
        ms(20),
    );
    let backbone_gossip_interval = c.duration(
        "mesh.backbone_gossip_interval",
        mesh.backbone_gossip_interval.as_deref(),
        defaults::BACKBONE_GOSSIP_INTERVAL,
        ms(20),
    );
    let window = c.duration(
        "mesh.window",
        mesh.window.as_deref(),
        defaults::WINDOW,
        ms(1000),
    );
    let down_after_lost = c.count(
        "mesh.down_after_lost",
        mesh.down_after_lost,
        defaults::DOWN_AFTER_LOST,
        1..=1000,
    );
    let up_after_replies = c.count(
        "mesh.up_after_replies",
        mesh.up_after_replies,
        defaults::UP_AFTER_REPLIES,
        1..=1000,
    );
    let degraded_loss = c.percent(
        "mesh.degraded_loss_percent",
        mesh.degraded_loss_percent,
        defaults::DEGRADED_LOSS_PERCENT,
    );
    let degraded_rtt_p99 = c.duration(
        "mesh.degraded_rtt_p99",
        mesh.degraded_rtt_p99.as_deref(),
        defaults::DEGRADED_RTT_P99,
        ms(1),
    );
    let isolated_fraction = c.percent(
        "mesh.isolated_percent",
        mesh.isolated_percent,
        defaults::ISOLATED_PERCENT,
    );
    let packet_max_age = c.duration(
        "mesh.packet_max_age",
        mesh.packet_max_age.as_deref(),
        defaults::PACKET_MAX_AGE,
        ms(1000),
    );
    if probe_timeout >= probe_interval && !probe_interval.is_zero() {
        c.fail(
            "mesh.probe_timeout",
            format!(
                "{} must be shorter than mesh.probe_interval ({})",
                HumanDuration(probe_timeout),
                HumanDuration(probe_interval)
            ),
        );
    }
    if let (Some((first, last)), Some(l)) = (probe_ports, listen) {
        if (first..=last).contains(&l.port()) {
            c.fail(
                "mesh.probe_ports",
                format!("{first}-{last} includes the mesh port {}", l.port()),
            );
        }
    }
    if window < probe_interval * 2 {
        c.fail("mesh.window", "must cover at least two probe intervals");
    }
    let representatives = c.count(
        "mesh.representatives",
        mesh.representatives,
        defaults::REPRESENTATIVES,
        1..=64,
    );
    let topology = match mesh.topology.as_deref().unwrap_or(defaults::TOPOLOGY) {
        "full" => Topology::Full,
        "sites" => Topology::Sites { representatives },
        other => {
            c.fail(
                "mesh.topology",
                format!("unknown topology {other:?}; use \"full\" or \"sites\""),
            );
            Topology::Full
        }
    };

    Some(MeshConfig {
        cluster,
        listen: listen?,
        advertise: advertise?,
        seeds,
        backbone_seeds,
        grid_key_file,
        nodes_file,
        probe_interval,
        probes_per_interval,
        probe_flows,
        probe_ports,
        probe_timeout,
        tcp_probe_interval,
        tcp_timeout,
        gossip_interval,
        backbone_gossip_interval,
        window,
        down_after_lost,
        up_after_replies,
        degraded_loss,
        degraded_rtt_p99,
        isolated_fraction,
        packet_max_age,
        topology,
    })
}

/// Parses a port range such as "40000-40007".
fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{text:?} is not a port range such as \"40000-40007\"");
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let first: u16 = a.trim().parse().map_err(|_| bad())?;
    let last: u16 = b.trim().parse().map_err(|_| bad())?;
    if first == 0 || last < first {
        return Err(bad());
    }
    Ok((first, last))
}
