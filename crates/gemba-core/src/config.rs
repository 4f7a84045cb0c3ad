//! The configuration model: what a `gemba.toml` may say, the defaults for
//! what it leaves out, and the validation that turns it into a [`Config`].
//!
//! Layering follows the order operators expect: file, then environment and
//! command line ([`Overrides`], filled by the binary through clap), then one
//! validation pass that reports *every* invalid setting at once, each with
//! the file and key it came from.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration::HumanDuration;
use crate::ids::{NodeId, SiteName};
use crate::validate::Checker;
pub use crate::validate::Invalid;

/// Defaults, in one place so that the example config and the validation
/// agree by construction.
pub mod defaults {
    pub const HTTP_LISTEN: &str = "127.0.0.1:8777";
    pub const MESH_LISTEN: &str = "127.0.0.1:7946";
    pub const DATA_DIR: &str = "./gemba-data";
    pub const JOURNAL_RETENTION: &str = "90d";
    pub const SITE: &str = "default";
    pub const CLUSTER: &str = "gemba";
    pub const PROBE_INTERVAL: &str = "1s";
    pub const PROBES_PER_INTERVAL: u32 = 2;
    pub const PROBE_FLOWS: u32 = 8;
    pub const PROBE_TIMEOUT: &str = "500ms";
    pub const TCP_PROBE_INTERVAL: &str = "5s";
    pub const TCP_TIMEOUT: &str = "1s";
    pub const GOSSIP_INTERVAL: &str = "1s";
    pub const WINDOW: &str = "30s";
    pub const DOWN_AFTER_LOST: u32 = 3;
    pub const UP_AFTER_REPLIES: u32 = 2;
    pub const DEGRADED_LOSS_PERCENT: f64 = 5.0;
    pub const DEGRADED_RTT_P99: &str = "100ms";
    pub const ISOLATED_PERCENT: f64 = 50.0;
    pub const PACKET_MAX_AGE: &str = "30s";
    pub const TOPOLOGY: &str = "full";
    pub const REPRESENTATIVES: u32 = 3;
}

/// A config file as written. Every field is optional; absent means default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub node: Option<NodeSection>,
    pub mesh: Option<MeshSection>,
    pub http: Option<HttpSection>,
    pub escalator: Option<crate::policy::EscalatorSection>,
    pub store: Option<StoreSection>,
    pub market: Option<crate::market::MarketSection>,
    pub metrics: Option<crate::metrics::MetricsSection>,
    pub incidents: Option<crate::incidents::IncidentsSection>,
    #[serde(default)]
    pub process: Vec<crate::metrics::ProcessSection>,
    #[serde(default)]
    pub check: Vec<crate::policy::CheckSection>,
    #[serde(default)]
    pub level: Vec<crate::policy::LevelSection>,
    #[serde(default)]
    pub notify: Vec<crate::policy::NotifySection>,
}

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
    pub window: Option<String>,
    pub down_after_lost: Option<u32>,
    pub up_after_replies: Option<u32>,
    pub degraded_loss_percent: Option<f64>,
    pub degraded_rtt_p99: Option<String>,
    pub isolated_percent: Option<f64>,
    pub packet_max_age: Option<String>,
    pub topology: Option<String>,
    pub representatives: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub listen: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Host names (besides IP addresses and localhost) browsers may use to
    /// reach this node, e.g. behind a reverse proxy.
    pub allowed_hosts: Option<Vec<String>>,
    /// Tokens with one purpose, each in its own private file: `ingest`
    /// (reports and events only: what agents and CI hold), `operator`
    /// (every change, and what programs printed), `read` (what programs
    /// printed, and log lines).
    pub ingest_token_file: Option<PathBuf>,
    pub operator_token_file: Option<PathBuf>,
    pub read_token_file: Option<PathBuf>,
    /// Connections served at once (besides a small reserve); by default
    /// half the process's file limit, at most 16384.
    pub max_connections: Option<u32>,
    /// How long a connection may take to send a request's head, or stay
    /// idle between requests.
    pub header_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite:///var/lib/gemba/gemba.db`, a plain path, or
    /// `postgres://user@host:port/db`.
    pub url: Option<String>,
    /// PostgreSQL's password, in a file readable by gemba only (else the
    /// URL's, else `PGPASSWORD`).
    pub password_file: Option<PathBuf>,
    /// Journal lines and closed escalations older than this are removed.
    pub journal_retention: Option<String>,
}

/// Settings given on the command line or in the environment; they win over
/// the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub node_id: Option<String>,
    pub site: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub mesh_listen: Option<String>,
    pub mesh_advertise: Option<String>,
    pub seeds: Vec<String>,
    pub grid_key_file: Option<PathBuf>,
    pub http_listen: Option<String>,
    pub token_file: Option<PathBuf>,
    /// The token itself, from `GEMBA_API_TOKEN`.
    pub token: Option<String>,
    /// `--role server` (true) or `--role agent` (false).
    pub server: Option<bool>,
}

/// Which peers a node probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Every node probes every other node.
    Full,
    /// Full mesh inside a site; between sites only `representatives` nodes
    /// of each site probe the representatives of the others.
    Sites { representatives: u32 },
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub node: NodeConfig,
    pub mesh: MeshConfig,
    pub http: HttpConfig,
    pub store: StoreConfig,
    pub market: crate::market::MarketConfig,
    pub metrics: crate::metrics::MetricsConfig,
    pub incidents: crate::incidents::IncidentsConfig,
    pub policy: crate::policy::Policy,
}

/// Where the server role keeps what must survive a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file. Its WAL needs every server on one host.
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by servers on any number of hosts.
    Postgres {
        /// `postgres://user@host:port/db` (libpq's URL form).
        url: String,
        password_file: Option<PathBuf>,
    },
}

/// A URL with its password (if it holds one) replaced by `***`.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            StoreLocation::Postgres { url, .. } => f.write_str(&without_password(url)),
        }
    }
}

impl StoreLocation {
    /// `sqlite://<path>` (so `sqlite:///var/lib/gemba/gemba.db` is
    /// absolute), a plain path, or `postgres://user@host:port/db`.
    pub fn parse(text: &str) -> Result<StoreLocation, String> {
        let path = match text.split_once("://") {
            Some(("sqlite", path)) => path,
            Some(("postgres" | "postgresql", rest)) => {
                if rest.is_empty() || rest.starts_with('/') {
                    return Err(
                        "no host: use postgres://user@host:port/db".into(),
                    );
                }
                return Ok(StoreLocation::Postgres {
                    url: text.to_string(),
                    password_file: None,
                });
            }
            Some((scheme, _)) => {
                return Err(format!(
                    "unknown store scheme {scheme:?}; use sqlite://<path>, postgres://user@host:port/db or a plain path"
                ))
            }
            None => text,
        };
        if path.is_empty() {
            return Err("no path: use sqlite:///var/lib/gemba/gemba.db or a plain path".into());
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(path)))
    }
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub location: StoreLocation,
    pub journal_retention: Duration,
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

#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub cluster: String,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub seeds: Vec<String>,
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
    pub window: Duration,
    pub down_after_lost: u32,
    pub up_after_replies: u32,
    pub degraded_loss: f64,
    pub degraded_rtt_p99: Duration,
    pub isolated_fraction: f64,
    pub packet_max_age: Duration,
    pub topology: Topology,
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Bearer token required by endpoints that change state.
    pub token: Option<String>,
    /// Host names a request's `Host` may carry besides IP addresses and
    /// localhost (lowercase).
    pub allowed_hosts: Vec<String>,
    /// `(scope, token)`: `ingest`, `operator` or `read`, from their files.
    pub scoped_tokens: Vec<(String, String)>,
    /// `[http] max_connections`, if set.
    pub max_connections: Option<usize>,
    pub header_timeout: std::time::Duration,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{}", render_invalid(origin, errors))]
    Invalid {
        origin: String,
        errors: Vec<Invalid>,
    },
}

fn render_invalid(origin: &str, errors: &[Invalid]) -> String {
    let mut out = format!("{} invalid setting(s) in {origin}:", errors.len());
    for e in errors {
        out.push_str(&format!("\n  {origin}: {}: {}", e.key, e.reason));
    }
    out
}

impl ConfigFile {
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(&e, text),
        })
    }

    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }
}

fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim_end().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {msg}")
        }
        None => msg,
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

impl Config {
    /// Reads `path` (if given), applies `overrides`, and validates.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match path {
            Some(p) => ConfigFile::read(p)?,
            None => ConfigFile::default(),
        };
        let origin = match path {
            Some(p) => p.display().to_string(),
            None => "command-line settings".to_string(),
        };
        Config::from_file(file, overrides, &origin)
    }

    /// Validates a parsed file with overrides; `origin` names the file in
    /// error messages.
    pub fn from_file(file: ConfigFile, o: &Overrides, origin: &str) -> Result<Config, ConfigError> {
        let mut c = Checker { errors: Vec::new() };
        let mut node = node_config(&mut c, file.node.unwrap_or_default(), o);
        let policy = crate::policy::validate(
            &mut c,
            file.check,
            file.level,
            file.escalator.unwrap_or_default(),
            file.notify,
        );
        let mesh = mesh_config(&mut c, file.mesh.unwrap_or_default(), o);
        if let Some(m) = &mesh {
            if node.role_origin != RoleOrigin::Set && !m.seeds.is_empty() {
                node.server = false;
                node.role_origin = RoleOrigin::Joining;
            }
        }
        let http = http_config(&mut c, file.http.unwrap_or_default(), o);
        let store = store_config(&mut c, file.store.unwrap_or_default(), &node.data_dir);
        let market = crate::market::market_config(&mut c, file.market.unwrap_or_default());
        let metrics =
            crate::metrics::metrics_config(&mut c, file.metrics.unwrap_or_default(), file.process);
        let incidents =
            crate::incidents::incidents_config(&mut c, file.incidents.unwrap_or_default());
        // The key a node creates in its data directory is checked like a
        // configured one once it exists: someone may have copied it in.
        if let Some(m) = &mesh {
            let default_key = node.data_dir.join("grid.key");
            if m.grid_key_file.is_none() && default_key.exists() {
                if let Err(why) = crate::secret::read_key_file(&default_key) {
                    c.fail("node.data_dir", why);
                }
            }
        }
        match (mesh, http) {
            (Some(mesh), Some(http)) if c.errors.is_empty() => Ok(Config {
                node,
                mesh,
                http,
                store,
                market,
                metrics,
                incidents,
                policy,
            }),
            _ => Err(ConfigError::Invalid {
                origin: origin.to_string(),
                errors: c.errors,
            }),
        }
    }
}

/// `[node]`, with the command line's overrides.
fn node_config(c: &mut Checker, node: NodeSection, o: &Overrides) -> NodeConfig {
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

/// `[mesh]`, with the command line's overrides. `None` when an address
/// does not parse (the error is recorded).
fn mesh_config(c: &mut Checker, mesh: MeshSection, o: &Overrides) -> Option<MeshConfig> {
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

/// `[http]`, with the command line's overrides and the token from the
/// environment. `None` when the address does not parse.
fn http_config(c: &mut Checker, http: HttpSection, o: &Overrides) -> Option<HttpConfig> {
    let http_text = o
        .http_listen
        .clone()
        .or(http.listen)
        .unwrap_or_else(|| defaults::HTTP_LISTEN.into());
    let http_listen = c.socket_addr("http.listen", &http_text);
    let token_file = o.token_file.clone().or(http.token_file);
    let mut token = o.token.clone().filter(|t| !t.is_empty());
    if let Some(t) = &token {
        if t.trim().len() < 16 {
            c.fail(
                "GEMBA_API_TOKEN",
                "the token must be at least 16 characters",
            );
        }
    }
    if token.is_none() {
        if let Some(p) = &token_file {
            match read_token_file(p) {
                Ok(t) => token = Some(t),
                Err(e) => c.fail("http.token_file", e),
            }
        }
    }
    let mut scoped_tokens: Vec<(String, String)> = Vec::new();
    for (scope, file) in [
        ("ingest", &http.ingest_token_file),
        ("operator", &http.operator_token_file),
        ("read", &http.read_token_file),
    ] {
        let Some(p) = file else { continue };
        let key = format!("http.{scope}_token_file");
        match read_token_file(p) {
            Ok(t) => {
                if token.as_deref() == Some(t.as_str())
                    || scoped_tokens.iter().any(|(_, other)| *other == t)
                {
                    c.fail(
                        &key,
                        format!(
                            "{}: the same token as another scope; each scope needs its own",
                            p.display()
                        ),
                    );
                } else {
                    scoped_tokens.push((scope.to_string(), t));
                }
            }
            Err(e) => c.fail(&key, e),
        }
    }
    if let Some(addr) = http_listen {
        if !addr.ip().is_loopback() && token.is_none() && scoped_tokens.is_empty() {
            c.fail("http.listen", format!(
                "{addr} is reachable beyond loopback; set http.token_file (or GEMBA_API_TOKEN) so that endpoints that change state require a token"
            ));
        }
    }

    let mut allowed_hosts = Vec::new();
    for (i, h) in http
        .allowed_hosts
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let valid = !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
            });
        if valid {
            allowed_hosts.push(h.to_ascii_lowercase());
        } else {
            c.fail(
                &format!("http.allowed_hosts[{i}]"),
                format!("{h:?} is not a host name (without port)"),
            );
        }
    }
    let max_connections = http
        .max_connections
        .map(|n| c.count("http.max_connections", Some(n), n, 16..=1_000_000) as usize);
    let header_timeout = c.duration(
        "http.header_timeout",
        http.header_timeout.as_deref(),
        "10s",
        std::time::Duration::from_millis(100),
    );
    Some(HttpConfig {
        listen: http_listen?,
        token,
        allowed_hosts,
        scoped_tokens,
        max_connections,
        header_timeout,
    })
}

/// The token a token file holds: private, as the keys are, and at least
/// 16 characters once trimmed.
fn read_token_file(p: &Path) -> Result<String, String> {
    crate::secret::check_private(p)?;
    let t = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    let t = t.trim();
    if t.len() < 16 {
        return Err(format!(
            "{}: the token must be at least 16 characters",
            p.display()
        ));
    }
    Ok(t.to_string())
}

/// `[store]`; the default file lives in the data directory.
fn store_config(c: &mut Checker, store: StoreSection, data_dir: &Path) -> StoreConfig {
    let mut location = match store.url.as_deref() {
        None => StoreLocation::Sqlite(data_dir.join("gemba.db")),
        Some(text) => StoreLocation::parse(text).unwrap_or_else(|reason| {
            c.fail(
                "store.url",
                format!("{:?}: {reason}", without_password(text)),
            );
            StoreLocation::Sqlite(data_dir.join("gemba.db"))
        }),
    };
    if let Some(file) = store.password_file {
        match &mut location {
            StoreLocation::Postgres { password_file, .. } => *password_file = Some(file),
            StoreLocation::Sqlite(_) => c.fail(
                "store.password_file",
                "only a postgres:// store takes a password",
            ),
        }
    }
    let journal_retention = c.duration(
        "store.journal_retention",
        store.journal_retention.as_deref(),
        defaults::JOURNAL_RETENTION,
        Duration::from_secs(3600),
    );

    StoreConfig {
        location,
        journal_retention,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let file = ConfigFile::parse(Path::new("gemba.toml"), text)?;
        Config::from_file(file, &Overrides::default(), "gemba.toml")
    }

    #[test]
    fn empty_file_gives_loopback_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8777");
        assert_eq!(c.mesh.probe_interval, Duration::from_secs(1));
        assert_eq!(c.mesh.topology, Topology::Full);
        assert!(c.http.token.is_none());
    }

    #[test]
    fn the_store_is_a_url_or_a_path_under_the_data_dir_by_default() {
        let c = load("[node]\ndata_dir = \"/srv/g\"\n").unwrap();
        assert_eq!(
            c.store.location,
            StoreLocation::Sqlite("/srv/g/gemba.db".into())
        );
        assert_eq!(c.store.journal_retention, Duration::from_secs(90 * 86_400));
        for (url, path) in [
            (
                "sqlite:///var/lib/gemba/gemba.db",
                "/var/lib/gemba/gemba.db",
            ),
            ("sqlite://rel/g.db", "rel/g.db"),
            ("/plain/g.db", "/plain/g.db"),
        ] {
            let c = load(&format!("[store]\nurl = \"{url}\"\n")).unwrap();
            assert_eq!(
                c.store.location,
                StoreLocation::Sqlite(path.into()),
                "{url}"
            );
        }
        let c = load("[store]\nurl = \"postgres://gemba:s3cret@db:5433/gemba\"\npassword_file = \"/etc/gemba/pg\"\n").unwrap();
        assert_eq!(
            c.store.location,
            StoreLocation::Postgres {
                url: "postgres://gemba:s3cret@db:5433/gemba".into(),
                password_file: Some("/etc/gemba/pg".into())
            }
        );
        assert_eq!(
            c.store.location.to_string(),
            "postgres://gemba:***@db:5433/gemba",
            "shown without its password"
        );
        let err = load("[store]\nurl = \"postgres:///gemba\"\njournal_retention = \"1m\"\npassword_file = \"/p\"\n[escalator]\nstore = \"/old/g.db\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("store.url: \"postgres:///gemba\": no host"),
            "{err}"
        );
        assert!(
            err.contains("store.password_file: only a postgres:// store takes a password"),
            "{err}"
        );
        assert!(
            err.contains("store.journal_retention: 1m is too short"),
            "{err}"
        );
        assert!(
            err.contains("escalator.store: the store is the node's now: write [store] url = \"sqlite:///old/g.db\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = load("[mesh]\nprobe_intervall = \"1s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("gemba.toml: line 2"), "{err}");
        assert!(err.contains("probe_intervall"), "{err}");
    }

    #[test]
    fn every_invalid_setting_is_listed_at_once() {
        let err = load(
            "[node]\nid = \"a b\"\n[mesh]\nprobe_interval = \"1 fortnight\"\nprobes_per_interval = 0\ntopology = \"ring\"\n[http]\nlisten = \"0.0.0.0:8777\"\n",
        )
        .unwrap_err();
        let ConfigError::Invalid { errors, .. } = &err else {
            panic!("{err}")
        };
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "node.id",
                "mesh.probe_interval",
                "mesh.probes_per_interval",
                "mesh.topology",
                "http.listen"
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("gemba.toml: http.listen: 0.0.0.0:8777 is reachable beyond loopback"),
            "{text}"
        );
    }

    #[test]
    fn probe_flows_and_ports_are_checked() {
        let c = load("").unwrap();
        assert_eq!((c.mesh.probe_flows, c.mesh.probe_ports), (8, None));
        let c = load("[mesh]\nprobe_flows = 4\nprobe_ports = \"40000-40003\"\n").unwrap();
        assert_eq!(c.mesh.probe_ports, Some((40000, 40003)));
        for (text, why) in [
            ("probe_flows = 0", "0 is out of range 1..=64"),
            ("probe_flows = 65", "65 is out of range 1..=64"),
            (
                "probe_ports = \"40000-40003\"",
                "holds 4 ports but mesh.probe_flows is 8",
            ),
            ("probe_ports = \"40010-40000\"", "is not a port range"),
            ("probe_ports = \"ports\"", "is not a port range"),
            ("probe_ports = \"7940-7950\"", "includes the mesh port 7946"),
        ] {
            let err = load(&format!("[mesh]\n{text}\n")).unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn overrides_win_over_the_file() {
        let file = ConfigFile::parse(Path::new("x"), "[node]\nid = \"from-file\"\n").unwrap();
        let o = Overrides {
            node_id: Some("from-cli".into()),
            ..Default::default()
        };
        assert_eq!(
            Config::from_file(file, &o, "x").unwrap().node.id.as_str(),
            "from-cli"
        );
    }

    #[test]
    fn a_short_token_from_the_environment_and_bad_host_names_are_refused() {
        let o = Overrides {
            token: Some("short".into()),
            ..Default::default()
        };
        let err = Config::from_file(ConfigFile::default(), &o, "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("GEMBA_API_TOKEN") && err.contains("at least 16"),
            "{err}"
        );
        let file = ConfigFile::parse(
            Path::new("t"),
            "[http]\nallowed_hosts = [\"Gemba.Ops.Example\", \"evil.example:80\"]\n",
        )
        .unwrap();
        let err = Config::from_file(file, &Overrides::default(), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.allowed_hosts[1]"), "{err}");
        assert!(!err.contains("http.allowed_hosts[0]"), "{err}");
    }

    #[test]
    fn public_http_with_token_is_accepted() {
        let file =
            ConfigFile::parse(Path::new("x"), "[http]\nlisten = \"0.0.0.0:8777\"\n").unwrap();
        let o = Overrides {
            token: Some("0123456789abcdef".into()),
            ..Default::default()
        };
        assert!(Config::from_file(file, &o, "x").is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_token_file_others_can_read_is_refused_like_a_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("gemba-token-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.token");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        let load_with = |mode: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let text = format!(
                "[http]\nlisten = \"0.0.0.0:8777\"\ntoken_file = \"{}\"\n",
                path.display()
            );
            let file = ConfigFile::parse(Path::new("x"), &text).unwrap();
            Config::from_file(file, &Overrides::default(), "x")
        };
        let err = load_with(0o644).unwrap_err().to_string();
        assert!(
            err.contains("http.token_file")
                && err.contains("mode 0644")
                && err.contains("chmod 600"),
            "{err}"
        );
        let c = load_with(0o600).unwrap();
        assert_eq!(c.http.token.as_deref(), Some("0123456789abcdef0123"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sites_topology_takes_representatives() {
        let c = load("[mesh]\ntopology = \"sites\"\nrepresentatives = 2\n").unwrap();
        assert_eq!(c.mesh.topology, Topology::Sites { representatives: 2 });
    }
}
