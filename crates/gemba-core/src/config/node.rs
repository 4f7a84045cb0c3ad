//! `[node]`: who this node is, its data directory and its roles.

use std::path::PathBuf;

use serde::Deserialize;

use super::{defaults, Overrides};
use crate::ids::{NodeId, SiteName};
use crate::validate::Checker;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub id: Option<String>,
    pub site: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Tiers (groups) this node belongs to.
    pub tags: Option<Vec<String>>,
    /// Whether this node runs the server role (store, escalator, market,
    /// timeline) besides the agent. Default: yes for a node without seeds,
    /// no for a node that joins a grid through seeds.
    pub server: Option<bool>,
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub site: SiteName,
    pub data_dir: PathBuf,
    pub tags: Vec<String>,
    /// Whether the node runs the server role besides the agent.
    pub server: bool,
    /// How the role was decided.
    pub role_origin: RoleOrigin,
}

/// Why a node has the role it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleOrigin {
    /// `[node] server` or `--role` said so.
    Set,
    /// Not said, and the node has no seeds: on its own, it is its own
    /// server.
    Alone,
    /// Not said, and the node joins a grid through seeds: an agent.
    Joining,
}

impl RoleOrigin {
    /// Why, in words for the log.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleOrigin::Set => "set by [node] server or --role",
            RoleOrigin::Alone => "no seeds: a node on its own runs every role",
            RoleOrigin::Joining => {
                "joins a grid through seeds: an agent unless told otherwise (--role server)"
            }
        }
    }
}

/// The host name of this machine, used as the default node id.
pub fn default_node_id() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "node-1".to_string()
    } else {
        cleaned
    }
}

/// `[node]`, with the command line's overrides.
pub(super) fn node_config(c: &mut Checker, node: NodeSection, o: &Overrides) -> NodeConfig {
    let id_text = o
        .node_id
        .clone()
        .or(node.id)
        .unwrap_or_else(default_node_id);
    let id = NodeId::new(&id_text).unwrap_or_else(|e| {
        c.fail("node.id", e);
        NodeId::new("invalid").expect("literal id is valid")
    });
    let site_text = o
        .site
        .clone()
        .or(node.site)
        .unwrap_or_else(|| defaults::SITE.into());
    let site = SiteName::new(&site_text).unwrap_or_else(|e| {
        c.fail("node.site", e);
        SiteName::new("invalid").expect("literal site is valid")
    });
    let data_dir = o
        .data_dir
        .clone()
        .or(node.data_dir)
        .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR));
    let tags = node.tags.unwrap_or_default();
    for (i, t) in tags.iter().enumerate() {
        if SiteName::new(t).is_err() {
            c.fail(
                &format!("node.tags[{i}]"),
                format!("{t:?} is not a valid tier name"),
            );
        }
    }
    // Without a word on it, the role follows the seeds (see from_file).
    let (server, role_origin) = match o.server.or(node.server) {
        Some(s) => (s, RoleOrigin::Set),
        None => (true, RoleOrigin::Alone),
    };
    NodeConfig {
        id,
        site,
        data_dir,
        tags,
        server,
        role_origin,
    }
}
