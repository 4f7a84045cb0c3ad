//! The configuration model: what a `gemba.toml` may say, the defaults for
//! what it leaves out, and the validation that turns it into a [`Config`].
//!
//! Layering follows the order operators expect: file, then environment and
//! command line ([`Overrides`], filled by the binary through clap), then one
//! validation pass that reports *every* invalid setting at once, each with
//! the file and key it came from.
//!
//! The grid's sections have a file each here (`node`, `mesh`, `http`,
//! `store`); the stages' sections sit beside their models (`market.rs`,
//! `incidents.rs`, `policy/`). This file reads the whole file and joins
//! the sections into one [`Config`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::validate::Checker;
pub use crate::validate::Invalid;

mod http;
mod mesh;
mod node;
mod store;

use http::http_config;
pub use http::{HttpConfig, HttpSection};
use mesh::mesh_config;
pub use mesh::{MeshConfig, MeshSection};
use node::node_config;
pub use node::{default_node_id, NodeConfig, NodeSection, RoleOrigin};
use store::store_config;
pub use store::{without_password, StoreConfig, StoreLocation, StoreSection};

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
    pub const BACKBONE_GOSSIP_INTERVAL: &str = "1s";
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
