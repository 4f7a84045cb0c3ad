//! The commented example configuration printed by `gemba config example`.
//!
//! It is generated from [`crate::config::defaults`], so the values shown are
//! the values used; a test keeps the committed `gemba.example.toml` equal to
//! this output and checks that it loads to exactly the defaults.

use crate::config::defaults as d;

/// Returns the example configuration as TOML text.
pub fn example_toml() -> String {
    format!(
        r#"# gemba configuration. Every setting is optional; the values shown are the
# defaults. Durations take ms, s, m, h or d ("500ms", "1m30s").

[node]
# Unique name of this node on the grid. Default: the host name.
# id = "web-1"
# Location of this node (datacenter, region); groups nodes in the graph.
site = "{site}"
# Where this node keeps its grid key and local state.
data_dir = "{data_dir}"

[mesh]
# Nodes only talk to nodes of the same cluster name.
cluster = "{cluster}"
# UDP address for gossip and probes; the same port on TCP answers connect probes.
listen = "{mesh_listen}"
# Address peers use to reach this node. Default: listen (required if listen is 0.0.0.0).
# advertise = "10.0.0.5:7946"
# Any one existing node is enough to join; nodes learn the rest by gossip.
seeds = []
# File holding the shared grid key (at least 16 bytes) that signs every packet.
# Default: <data_dir>/grid.key, created on first start (copy it to the other nodes).
# grid_key_file = "/etc/gemba/grid.key"
# How often each peer is probed, and how many UDP probes each round sends.
probe_interval = "{probe_interval}"
probes_per_interval = {probes_per_interval}
# A probe without a reply after this long counts as lost.
probe_timeout = "{probe_timeout}"
# The second path: a TCP connect to the peer's mesh port.
tcp_probe_interval = "{tcp_probe_interval}"
tcp_timeout = "{tcp_timeout}"
# How often gossip rounds run; sets how fast link changes reach every node.
gossip_interval = "{gossip_interval}"
# RTT percentiles and loss are computed over this window.
window = "{window}"
# Consecutive lost probes that make a link down, and replies that bring it back.
down_after_lost = {down_after_lost}
up_after_replies = {up_after_replies}
# A link is degraded when loss or p99 RTT over the window exceeds these.
degraded_loss_percent = {degraded_loss:.1}
degraded_rtt_p99 = "{degraded_rtt_p99}"
# A node that cannot reach more than this share of its peers is isolated:
# its own observations are not trusted.
isolated_percent = {isolated:.1}
# Packets older than this (or from further in the future) are dropped as replays.
packet_max_age = "{packet_max_age}"
# "full": every node probes every node. "sites": full mesh inside a site,
# and `representatives` nodes per site probe the other sites' representatives.
topology = "{topology}"
representatives = {representatives}

[http]
# The API, the console and /metrics. Listening beyond loopback requires a token.
listen = "{http_listen}"
# File holding the bearer token for endpoints that change state (or set GEMBA_API_TOKEN).
# token_file = "/etc/gemba/api.token"
"#,
        site = d::SITE,
        data_dir = d::DATA_DIR,
        cluster = d::CLUSTER,
        mesh_listen = d::MESH_LISTEN,
        probe_interval = d::PROBE_INTERVAL,
        probes_per_interval = d::PROBES_PER_INTERVAL,
        probe_timeout = d::PROBE_TIMEOUT,
        tcp_probe_interval = d::TCP_PROBE_INTERVAL,
        tcp_timeout = d::TCP_TIMEOUT,
        gossip_interval = d::GOSSIP_INTERVAL,
        window = d::WINDOW,
        down_after_lost = d::DOWN_AFTER_LOST,
        up_after_replies = d::UP_AFTER_REPLIES,
        degraded_loss = d::DEGRADED_LOSS_PERCENT,
        degraded_rtt_p99 = d::DEGRADED_RTT_P99,
        isolated = d::ISOLATED_PERCENT,
        packet_max_age = d::PACKET_MAX_AGE,
        topology = d::TOPOLOGY,
        representatives = d::REPRESENTATIVES,
        http_listen = d::HTTP_LISTEN,
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigFile, Overrides};

    const COMMITTED: &str = include_str!("../../../gemba.example.toml");

    #[test]
    fn committed_example_matches_generated_one() {
        assert!(
            COMMITTED == example_toml(),
            "gemba.example.toml is out of date: regenerate it with `cargo run -- config example > gemba.example.toml`"
        );
    }

    #[test]
    fn example_loads_to_exactly_the_defaults() {
        let o = Overrides {
            node_id: Some("n".into()),
            ..Default::default()
        };
        let from_example = Config::from_file(
            ConfigFile::parse(Path::new("ex"), &example_toml()).unwrap(),
            &o,
            "ex",
        )
        .unwrap();
        let from_nothing = Config::from_file(ConfigFile::default(), &o, "none").unwrap();
        assert_eq!(format!("{from_example:?}"), format!("{from_nothing:?}"));
    }
}

#[cfg(test)]
mod readme {
    use std::path::Path;

    use crate::config::{Config, ConfigFile, Overrides};

    const README: &str = include_str!("../../../README.md");

    /// Every ```toml block of the README is a valid config.
    #[test]
    fn readme_configs_are_valid() {
        let mut blocks = 0;
        for (i, part) in README.split("```toml\n").enumerate().skip(1) {
            let text = part.split("```").next().unwrap();
            let o = Overrides {
                node_id: Some("n".into()),
                grid_key_file: None,
                token: Some("a-token-of-enough-length".into()),
                ..Default::default()
            };
            let mut file = ConfigFile::parse(Path::new("README.md"), text)
                .unwrap_or_else(|e| panic!("README toml block {i}: {e}"));
            // Paths in examples point at a production machine.
            if let Some(m) = file.mesh.as_mut() {
                m.grid_key_file = None;
            }
            if let Some(h) = file.http.as_mut() {
                h.token_file = None;
            }
            Config::from_file(file, &o, "README.md")
                .unwrap_or_else(|e| panic!("README toml block {i}: {e}"));
            blocks += 1;
        }
        assert!(blocks >= 2, "found {blocks} toml blocks");
    }
}
