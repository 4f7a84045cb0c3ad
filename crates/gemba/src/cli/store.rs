//! `gemba store`: migrating, checking and copying the store.

use super::*;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Apply this gemba's schema migrations to a store and print each
    /// stage's version (what a server does at start, without starting one).
    Migrate(StoreArgs),
    /// Look for damage in an SQLite store without changing it (SQLite's
    /// quick_check; --full: integrity_check, slower); exits 1 naming the
    /// damaged tables and how to recover.
    Check {
        #[command(flatten)]
        store: StoreArgs,
        /// Check indexes against their tables too.
        #[arg(long)]
        full: bool,
    },
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
    /// How long to keep sending a file again while the server is
    /// unavailable (HTTP 503, 502, 504, 429) or cannot be reached, backing
    /// off up to 10 s between tries: 5m, 30s, 0 (never).
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub retry_for: std::time::Duration,
}
