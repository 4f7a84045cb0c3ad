//! The converge stage's commands: checks, the server, the simulator,
//! escalations, approve and ack.

use super::*;

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
