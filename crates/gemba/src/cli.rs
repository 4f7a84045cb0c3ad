//! The command line. Every flag can also come from the environment; both
//! override the config file.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use gemba_core::{Config, ConfigError, HumanDuration, Overrides};

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
pub enum StoreCommand {
    /// Apply this gemba's schema migrations to a store and print each
    /// stage's version (what a server does at start, without starting one).
    Migrate(StoreArgs),
    /// Copy every row of an SQLite store into an empty PostgreSQL database,
    /// in one transaction (stop the servers writing the SQLite file first).
    Copy {
        /// The SQLite store: sqlite:///var/lib/gemba/gemba.db or a path.
        #[arg(long)]
        from: String,
        /// The PostgreSQL database: postgres://user@host:port/db.
        #[arg(long)]
        to: String,
        /// File holding the PostgreSQL password (else the URL's, else
        /// PGPASSWORD).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store: sqlite://<path>, a path, or postgres://user@host:port/db
    /// (default: the config's [store]).
    #[arg(long)]
    pub url: Option<String>,
    /// File holding the PostgreSQL password.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Config file whose [store] to use when no --url is given.
    #[arg(long, short, env = "GEMBA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (where the default SQLite store lives).
    #[arg(long, env = "GEMBA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Report files, or directories to read them from (recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Base URL of the server to send them to.
    #[arg(long, env = "GEMBA_SERVER", default_value = "http://127.0.0.1:8777")]
    pub to: String,
    /// API token (needed when the server has one).
    #[arg(long, env = "GEMBA_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProblemCommand {
    /// Unresolved problems, highest score first (--all: resolved too).
    List {
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One problem with its nodes, runs and notes.
    Show {
        /// P-17 or 17.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Give a problem an owner.
    Assign {
        id: String,
        /// Who works on it (a name: letters, digits, '-', '_', '.').
        owner: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Add a note to a problem.
    Note {
        id: String,
        text: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Record the known cause of a problem.
    Cause {
        id: String,
        text: String,
        #[command(flatten)]
        write: WriteArgs,
    },
}

/// Which chart: shared by `gemba chart` and `gemba send-chart`.
#[derive(Debug, Args)]
pub struct ChartSelect {
    /// The node (repeat to overlay several; default: every node).
    #[arg(long)]
    pub node: Vec<String>,
    /// The [[process]] (repeat to overlay; default: host, the machine).
    #[arg(long)]
    pub process: Vec<String>,
    /// tcp_established, rss_bytes, fds, cpu_percent, ... or a host metric
    /// (load1, mem_available_bytes, ...).
    #[arg(long)]
    pub metric: String,
    /// From when: a duration back (2d), RFC 3339 or unix seconds.
    #[arg(long, default_value = "2h")]
    pub since: String,
    /// Until when (default now).
    #[arg(long)]
    pub until: Option<String>,
    /// Event kinds drawn as markers (deploy,git,note,escalation by default; none for none).
    #[arg(long)]
    pub events: Option<String>,
    /// Only events with this tag (key=value) as markers.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    #[arg(long, default_value_t = 900)]
    pub width: u32,
    #[arg(long, default_value_t = 320)]
    pub height: u32,
    /// Base URL of a server node.
    #[arg(long, env = "GEMBA_SERVER", default_value = "http://127.0.0.1:8777")]
    pub from: String,
}

#[derive(Debug, Args)]
pub struct ChartArgs {
    #[command(flatten)]
    pub select: ChartSelect,
    /// Write a PNG here.
    #[arg(long, conflicts_with = "svg", required_unless_present = "svg")]
    pub png: Option<PathBuf>,
    /// Write an SVG here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SendChartArgs {
    #[command(flatten)]
    pub select: ChartSelect,
    /// Which [[notify]] targets of the server: smtp, webhook, command, all,
    /// or the number of one (from 1).
    #[arg(long)]
    pub to: String,
    /// What to say with the chart.
    #[arg(long, default_value = "")]
    pub note: String,
    /// Send the log lines around the chart's newest marker too.
    #[arg(long)]
    pub logs: bool,
    /// API token (needed when the server has one).
    #[arg(long, env = "GEMBA_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The node whose lines to show (default: the node asked).
    #[arg(long)]
    pub node: Option<String>,
    /// Only this [[process]].
    #[arg(long)]
    pub process: Option<String>,
    /// From when: a duration back (10m), RFC 3339 or unix seconds.
    #[arg(long, default_value = "10m")]
    pub since: String,
    /// Until when (default now).
    #[arg(long)]
    pub until: Option<String>,
    /// The newest this many lines per file.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// API token (needed when the node has one).
    #[arg(long, env = "GEMBA_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// Newest first.
    List {
        /// Only the open ones.
        #[arg(long)]
        open: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One incident with its timeline.
    Show {
        /// I-12 or 12.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Open one by hand.
    Open {
        title: String,
        /// critical, major or minor.
        #[arg(long, default_value = "major")]
        severity: String,
        #[arg(long, default_value = "")]
        summary: String,
        /// A node it is about (repeat for several): its changes, log lines
        /// and charts join the timeline.
        #[arg(long)]
        node: Vec<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Change its title, severity or summary.
    Edit {
        id: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        summary: Option<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Close it (it stays, with its timeline).
    Close {
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum PostmortemCommand {
    /// Start the post-mortem of an incident; prints each participant's
    /// personal link (shown this once).
    Start {
        /// I-12 or 12.
        id: String,
        #[arg(long)]
        facilitator: String,
        #[arg(long)]
        note_keeper: String,
        #[arg(long)]
        time_keeper: String,
        /// Someone taking part (repeat, or separate with commas); the
        /// three roles take part anyway.
        #[arg(long, value_delimiter = ',')]
        participant: Vec<String>,
        /// How long it takes changes (default 14d, at most 90d).
        #[arg(long)]
        open_for: Option<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Its phase, who has shared, proposals, ballots, tally, action items.
    Show {
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Close the proposals and hand everyone a ballot.
    OpenVoting {
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Close the vote and show the tally.
    CloseVoting {
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Make an action item of a proposal, after the vote.
    Action {
        id: String,
        /// The proposal's number.
        #[arg(long)]
        proposal: i64,
        #[arg(long)]
        owner: String,
        /// 2026-12-01 (due by its end, UTC).
        #[arg(long)]
        due: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Write the notes as Markdown (ID.md) with the charts as PNG files
    /// beside them.
    Export {
        id: String,
        /// The directory to write into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Send the notes to the server's [[notify]] targets.
    Send {
        id: String,
        /// all, smtp, webhook, command, or the number of a [[notify]].
        #[arg(long, default_value = "all")]
        to: String,
        #[command(flatten)]
        write: WriteArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ActionsCommand {
    /// Action items not done yet (--all: done ones too).
    List {
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Mark one done.
    Done {
        /// A-3 or 3.
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Record what changed, e.g. `gemba event add --kind deploy --tag
    /// service=shop "v2.3.1 released"`.
    Add {
        /// What changed, in one line.
        what: String,
        /// deploy, puppet, chef, git, escalation or note.
        #[arg(long)]
        kind: Option<String>,
        /// key=value (or a word), as often as needed: service=shop, env=prod, host=web-1.
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// When it happened: RFC 3339, unix seconds, or a duration back from
        /// now (10m); default now.
        #[arg(long)]
        when: Option<String>,
        /// When it ended, for a change that took a while.
        #[arg(long)]
        end: Option<String>,
        /// More words: what, why, how to undo it.
        #[arg(long)]
        text: Option<String>,
        /// Who made the change (default: $USER).
        #[arg(long)]
        author: Option<String>,
        /// A link to the change (pull request, pipeline, ticket).
        #[arg(long)]
        link: Option<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Events, newest first.
    List {
        /// From when: RFC 3339, unix seconds, or a duration back (2d). Default 7d.
        #[arg(long)]
        since: Option<String>,
        /// Until when (default now).
        #[arg(long)]
        until: Option<String>,
        /// Only events with this tag (key=value or a word); repeat to require several.
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Only events of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many (default 500).
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// API token (needed when the server has one).
    #[arg(long, env = "GEMBA_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct MarketArgs {
    /// The market of this day (YYYY-MM-DD): the 24 hours up to its market
    /// time ([market] market_at, timezone).
    #[arg(long)]
    pub date: Option<String>,
    /// text, md, json or html.
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Base URL of a server node.
    #[arg(long, env = "GEMBA_SERVER", default_value = "http://127.0.0.1:8777")]
    pub from: String,
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

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Print results as JSON lines (the format `gemba simulate` reads).
    #[arg(long)]
    pub json: bool,
    /// A running node's URL: mesh checks are judged on the grid as it sees it
    /// (without it they are UNKNOWN).
    #[arg(long)]
    pub from: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of a server node.
    #[arg(long, env = "GEMBA_SERVER", default_value = "http://127.0.0.1:8777")]
    pub from: String,
    /// Print the raw JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Config file with the policy ([[check]], [[level]], [escalator]).
    #[arg(long, short, env = "GEMBA_CONFIG")]
    pub config: PathBuf,
    /// Recorded check results, one JSON object per line.
    #[arg(long)]
    pub history: PathBuf,
    /// How long each simulated step takes.
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub step_duration: Duration,
    /// Print events as JSON lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EscalationsArgs {
    /// Show this escalation with its timeline and step output.
    pub id: Option<u64>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The escalation id.
    pub id: u64,
    #[command(flatten)]
    pub server: ServerArgs,
    /// API token (needed when the server has one).
    #[arg(long, env = "GEMBA_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct AckArgs {
    /// The scope: global, tier:NAME or node:NAME.
    pub scope: String,
    #[command(flatten)]
    pub server: ServerArgs,
    /// API token (needed when the server has one).
    #[arg(long, env = "GEMBA_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
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
