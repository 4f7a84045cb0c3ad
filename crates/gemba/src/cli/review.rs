//! The review stage's commands: `gemba problem` and `gemba market`.

use super::*;

#[derive(Debug, Subcommand)]
pub enum ProblemCommand {
    /// Unresolved problems, highest score first (--all: resolved too).
    List {
        #[arg(long)]
        all: bool,
        /// Only those affecting this node.
        #[arg(long)]
        node: Option<String>,
        /// Only those affecting a node of this environment (`production`).
        #[arg(long)]
        environment: Option<String>,
        /// Only this kind (run-failure, intermittent, external-outage, …).
        #[arg(long)]
        kind: Option<String>,
        /// Only this severity (low, medium, high, critical).
        #[arg(long)]
        severity: Option<String>,
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
    /// Close a problem by hand; it opens again if it occurs again.
    Close {
        id: String,
        /// wont-fix, fixed-outside, or "duplicate of P-n".
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Open a problem closed by hand again.
    Reopen {
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
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
