//! The command line. Every flag can also come from the environment; both
//! override the config file.
//!
//! The node's own commands are here; each stage's are in a file of their
//! own (`converge`, `review`, `learn`, `store`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use gemba_core::{Config, ConfigError, HumanDuration, Overrides};

mod converge;
mod learn;
mod review;
mod store;

pub use converge::*;
pub use learn::*;
pub use review::*;
pub use store::*;

/// gemba: see the grid, converge, review, learn.
#[derive(Debug, Parser)]
#[command(name = "gemba", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (with no config: one node with every role on defaults).
    Run(NodeArgs),
    /// Start a demo grid on 127.0.0.x that breaks and heals links by itself.
    Demo(DemoArgs),
    /// Print a node's view of the grid: nodes and broken links.
    Graph(GraphArgs),
    /// Run every check once from this machine and print a table.
    ///
    /// The exit code is the worst status, as a Nagios plugin's (0 OK,
    /// 1 WARNING, 2 CRITICAL, 3 UNKNOWN), so other monitoring can run it.
    Check(CheckArgs),
    /// What the escalator would run now, for which scope, and why.
    Plan(ServerArgs),
    /// Replay recorded check results against the policy, print what would run.
    ///
    /// The history is JSON lines, one check result each, as `gemba check
    /// --json` and `GET /api/v1/checks` write them.
    Simulate(SimulateArgs),
    /// List escalations, or show one with its timeline.
    Escalations(EscalationsArgs),
    /// Approve the step an escalation is waiting on.
    Approve(ApproveArgs),
    /// Acknowledge a scope the escalator gave up on, so it may escalate again.
    Ack(AckArgs),
    /// The toy service of `gemba demo` (started and restarted by the demo's escalator).
    #[command(hide = true)]
    DemoService(DemoServiceArgs),
    /// Send Puppet and Chef reports (files or directories) to a running gemba.
    ///
    /// The format of each file is detected (Puppet YAML or JSON, PuppetDB,
    /// Chef data-collector messages, Chef JsonFile handler output). A run
    /// already stored is counted as a duplicate, never stored twice. Exits 1
    /// when any file was refused.
    Import(ImportArgs),
    /// List problems, show one, or record who works on it and why it happens.
    Problem {
        #[command(subcommand)]
        command: ProblemCommand,
    },
    /// The morning market: problems new, regressed, still open and resolved
    /// in the 24 hours up to the market time of a day (default: up to now).
    Market(MarketArgs),
    /// Record a change event (a deploy, a config change, a note) or list
    /// events: the markers on charts and the lines of a timeline.
    Event {
        #[command(subcommand)]
        command: EventCommand,
    },
    /// Incidents: list them, show one with its timeline, open one by hand,
    /// change or close one.
    Incident {
        #[command(subcommand)]
        command: IncidentCommand,
    },
    /// An incident's post-mortem: start it (personal links for everyone),
    /// open and close the vote, make action items, export the notes.
    Postmortem {
        #[command(subcommand)]
        command: PostmortemCommand,
    },
    /// Action items from post-mortems (also on the morning market).
    Actions {
        #[command(subcommand)]
        command: ActionsCommand,
    },
    /// Draw a metric over time with change events as markers, as SVG or
    /// PNG (host metrics with no --process, e.g. --metric load1).
    Chart(ChartArgs),
    /// Send a chart (PNG) with a note to the server's [[notify]] targets:
    /// inline in mail, base64 in a webhook, a file for a command.
    SendChart(SendChartArgs),
    /// The newest lines of a node's [[process]] log files, as its agent
    /// keeps them (needs the API token when the node has one).
    Logs(LogsArgs),
    /// Print an example config or validate one.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// This node's key, and the keys of the nodes it believes.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// The store: bring it to this gemba's schema, or move an SQLite
    /// installation into PostgreSQL.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Print `<node-id> <public-key>` for this node, the line a nodes file
    /// enrolls it with (creates `<data_dir>/node.key` on first use: run it
    /// as the user the node runs as).
    Key(Box<NodeArgs>),
    /// Add a node's public key to a nodes file (or replace it); running
    /// nodes re-read the file within seconds.
    Enroll {
        /// The node's id.
        id: String,
        /// Its public key, as `gemba node key` prints it on that node (it
        /// may start with '-').
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// The nodes file (`[mesh] nodes_file`); created if missing.
        #[arg(long)]
        nodes_file: PathBuf,
        /// The tiers the node is in (`app,db`). With enrolled nodes,
        /// servers take a node's tiers from here, never from what the node
        /// declares; without --tags an enrolled node is in no tier.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Stop believing a node's key: remove it from a nodes file, or from a
    /// node's first-seen keys (`--data-dir`). A node reinstalled with a new
    /// key is believed again once its old key is revoked.
    Revoke {
        /// The node's id.
        id: String,
        /// The nodes file to remove it from.
        #[arg(
            long,
            conflicts_with = "data_dir",
            required_unless_present = "data_dir"
        )]
        nodes_file: Option<PathBuf>,
        /// The data directory whose `known_nodes` to remove it from.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Retire a node from the morning market: it leaves every open
    /// problem (its runs stay), problems only it kept open resolve, and it
    /// is not missed when it stops reporting. A new run from it puts it
    /// back.
    Retire {
        /// The node's name, as its reports give it.
        node: String,
        #[command(flatten)]
        write: WriteArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a commented example config with every default.
    Example,
    /// Validate a config (and its overrides) without running anything.
    Check(Box<NodeArgs>),
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Config file (TOML).
    #[arg(long, short, env = "GEMBA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Node id (default: from the config, else the host name).
    #[arg(long, env = "GEMBA_NODE_ID")]
    pub node_id: Option<String>,
    /// Site (location) of this node.
    #[arg(long, env = "GEMBA_SITE")]
    pub site: Option<String>,
    /// Directory for the grid key and local state.
    #[arg(long, env = "GEMBA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// UDP (gossip, probes) and TCP (connect probes) listen address.
    #[arg(long, env = "GEMBA_LISTEN")]
    pub listen: Option<String>,
    /// Address peers use to reach this node.
    #[arg(long, env = "GEMBA_ADVERTISE")]
    pub advertise: Option<String>,
    /// A node to join through (repeatable, or comma-separated in GEMBA_SEEDS).
    #[arg(long = "seed", env = "GEMBA_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// HTTP listen address for the API, console and metrics.
    #[arg(long, env = "GEMBA_HTTP")]
    pub http: Option<String>,
    /// File holding the grid key.
    #[arg(long, env = "GEMBA_GRID_KEY_FILE")]
    pub grid_key_file: Option<PathBuf>,
    /// File holding the API token for endpoints that change state.
    #[arg(long, env = "GEMBA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// agent: the mesh, this node's checks and samples, no store; server:
    /// the agent and the server role (store, escalator, market, timeline).
    /// Default: [node] server, else server for a node without seeds and
    /// agent for one that joins through seeds.
    #[arg(long, env = "GEMBA_ROLE", value_enum)]
    pub role: Option<Role>,
}

/// What a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Agent,
    Server,
}

impl NodeArgs {
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let overrides = Overrides {
            node_id: self.node_id.clone(),
            site: self.site.clone(),
            data_dir: self.data_dir.clone(),
            mesh_listen: self.listen.clone(),
            mesh_advertise: self.advertise.clone(),
            seeds: self.seeds.clone(),
            grid_key_file: self.grid_key_file.clone(),
            http_listen: self.http.clone(),
            token_file: self.token_file.clone(),
            token: std::env::var("GEMBA_API_TOKEN").ok(),
            server: self.role.map(|r| r == Role::Server),
        };
        Config::load(self.config.as_deref(), &overrides)
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    s.parse::<HumanDuration>().map(|d| d.0)
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=200))]
    pub nodes: u16,
    /// Number of sites the nodes are spread over.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub sites: u16,
    /// First node's address; node i uses the i-th next address.
    #[arg(long, default_value = "127.0.0.11")]
    pub first_ip: std::net::Ipv4Addr,
    /// HTTP port of every node's console.
    #[arg(long, default_value_t = 8777)]
    pub http_port: u16,
    /// UDP/TCP mesh port of every node.
    #[arg(long, default_value_t = 7946)]
    pub mesh_port: u16,
    /// Time before the first fault.
    #[arg(long, default_value = "15s", value_parser = duration)]
    pub fault_after: Duration,
    /// How long a fault lasts before it is healed.
    #[arg(long, default_value = "20s", value_parser = duration)]
    pub fault_for: Duration,
    /// Quiet time between a heal and the next fault.
    #[arg(long, default_value = "20s", value_parser = duration)]
    pub fault_gap: Duration,
    /// Stop after this long (default: run until interrupted).
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Base URL of any node, e.g. http://127.0.0.1:8777
    #[arg(long, default_value = "http://127.0.0.1:8777")]
    pub from: String,
    /// Print the raw JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Under the sites topology: every site in short form (nodes up, links
    /// to other sites) and the broken links grouped by site pair.
    #[arg(long, conflicts_with = "site")]
    pub sites: bool,
    /// Under the sites topology: the grid of this site, which the node asks
    /// of one of that site's representatives.
    #[arg(long, value_name = "SITE")]
    pub site: Option<String>,
}

#[derive(Debug, Args)]
pub struct DemoServiceArgs {
    /// Address to answer HTTP on.
    #[arg(long)]
    pub listen: std::net::SocketAddr,
    /// File to write the service's pid to.
    #[arg(long)]
    pub pidfile: PathBuf,
    /// Start in the background and return once it listens.
    #[arg(long)]
    pub detach: bool,
    /// Exit when the process with this pid is gone (the demo that owns it).
    #[arg(long)]
    pub exit_with: Option<u32>,
    /// With --detach: stop a running service first (a restart, not a start).
    #[arg(long)]
    pub restart: bool,
    /// While this file exists the service leaks connections (the demo's
    /// bad release): it opens 4 a second to a backend of its own and never
    /// closes them.
    #[arg(long)]
    pub leak_flag: Option<PathBuf>,
    /// Append the service's log lines to this file.
    #[arg(long)]
    pub log: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_node_key_that_starts_with_a_dash_can_be_enrolled() {
        // One key in 64 starts with '-' in URL-safe base64.
        let cli = Cli::try_parse_from([
            "gemba",
            "node",
            "enroll",
            "web-9",
            "-U9nzoDsSCzEdEsq2lPoVkb_V0P7fCl6SWDQBfLkQZ8",
            "--nodes-file",
            "/tmp/nodes",
        ])
        .unwrap();
        let Command::Node {
            command: NodeCommand::Enroll { key, .. },
        } = cli.command
        else {
            panic!("not an enrol command");
        };
        assert_eq!(key, "-U9nzoDsSCzEdEsq2lPoVkb_V0P7fCl6SWDQBfLkQZ8");
    }
}
