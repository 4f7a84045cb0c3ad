//! The learn stage's commands: charts, logs, incidents, post-mortems,
//! action items and events.

use super::*;

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
        /// 2026-12-01 (due by its end, UTC); none: no due date.
        #[arg(long)]
        due: Option<String>,
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
    /// Mark a done one open again (back on the morning market).
    Reopen {
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
