//! The policy as written: `[[check]]`, `[[level]]`, `[escalator]` and
//! `[[notify]]` sections, every field optional, unknown ones refused.

use serde::Deserialize;

/// `[[check]]` as written.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CheckSection {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub scope: Option<String>,
    pub tier: Option<String>,
    pub min_passing: Option<u32>,
    pub level: Option<u32>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub fall: Option<u32>,
    pub rise: Option<u32>,
    pub flap_low: Option<f64>,
    pub flap_high: Option<f64>,
    pub flap_window: Option<String>,
    pub flap_changes_high: Option<u32>,
    pub flap_changes_low: Option<u32>,
    // tcp
    pub host: Option<String>,
    pub port: Option<u16>,
    // http
    pub url: Option<String>,
    pub expect_status: Option<u16>,
    pub body_contains: Option<String>,
    pub tls_ca_file: Option<String>,
    pub tls_warn_days: Option<u32>,
    pub tls_crit_days: Option<u32>,
    // command
    pub command: Option<Vec<String>>,
    // process
    pub process: Option<String>,
    pub pidfile: Option<String>,
    pub max_rss_mb: Option<u64>,
    pub max_fds: Option<u64>,
    pub max_threads: Option<u64>,
    // metric (process as above)
    pub metric: Option<String>,
    pub warn: Option<f64>,
    pub crit: Option<f64>,
    #[serde(rename = "for")]
    pub for_: Option<String>,
    // mesh-node / mesh-link
    pub node: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
}
/// `[[level]]` as written.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LevelSection {
    pub level: Option<u32>,
    pub name: Option<String>,
    pub run: Option<Vec<String>>,
    pub shell: Option<bool>,
    pub timeout: Option<String>,
    pub quiesce: Option<String>,
    pub approve: Option<bool>,
}
/// `[escalator]` as written.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct EscalatorSection {
    pub mode: Option<String>,
    pub quiet_period: Option<String>,
    pub budget: Option<u32>,
    pub backoff: Option<String>,
    pub climb: Option<bool>,
    pub max_per_scope_per_hour: Option<u32>,
    pub max_running: Option<u32>,
    pub lease_ttl: Option<String>,
    pub stale_after_intervals: Option<u32>,
    pub crash_loop_failures: Option<u32>,
    pub crash_loop_window: Option<String>,
    pub step_grace: Option<String>,
    /// Moved to `[store] url`; still parsed so that the error says where.
    pub store: Option<std::path::PathBuf>,
}
/// `[[notify]]` as written.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    pub kind: Option<String>,
    pub url: Option<String>,
    pub run: Option<Vec<String>>,
    pub smtp_server: Option<String>,
    pub from: Option<String>,
    pub to: Option<Vec<String>>,
}
