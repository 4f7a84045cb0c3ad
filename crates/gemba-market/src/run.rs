//! One configuration-management run, as every parser produces it: the
//! tool-neutral shape detectors read. Only what review needs is kept:
//! resources that changed, failed or were skipped (with their change and
//! message), the names of the resources that were fine, and the logs.
//! Everything is bounded here, so a hostile report costs at most these
//! caps whatever it claims.

use serde::{Deserialize, Serialize};

/// Most resources of one run kept with detail (changed, failed, skipped).
pub const MAX_RESOURCES: usize = 5_000;
/// Most names of resources that were fine.
pub const MAX_OK_RESOURCES: usize = 50_000;
/// Most log lines kept per run.
pub const MAX_LOGS: usize = 1_000;
/// Longest message kept (bytes); longer ones are cut at a char boundary.
pub const MAX_TEXT: usize = 4_096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Puppet,
    Chef,
}

impl Tool {
    pub fn as_str(self) -> &'static str {
        match self {
            Tool::Puppet => "puppet",
            Tool::Chef => "chef",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Unchanged,
    Changed,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Unchanged => "unchanged",
            RunStatus::Changed => "changed",
            RunStatus::Failed => "failed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceOutcome {
    Changed,
    Failed,
    Skipped,
}

/// A resource that did something worth reviewing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Puppet's type (`Exec`, `File`) or Chef's (`execute`, `file`).
    pub kind: String,
    pub title: String,
    pub outcome: ResourceOutcome,
    /// What changed, as the tool said it, or why it failed.
    pub message: String,
    /// The properties or action that changed, in a stable order: two runs
    /// making "the same change" have the same fingerprint even when the
    /// values (a checksum, a timestamp) differ.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub change: String,
    /// The change restarted or refreshed a service.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refresh: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl Resource {
    /// `Type[title]`, the key a resource is known by across runs.
    pub fn key(&self) -> String {
        format!("{}[{}]", self.kind, self.title)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub level: String,
    pub source: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// A failure of the run as a whole (a catalog that did not compile, a
/// Chef exception before or outside a resource).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    /// The error class where the tool names one (`Mixlib::ShellOut::ShellCommandFailed`).
    pub class: String,
    pub message: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub total: u64,
    pub changed: u64,
    pub failed: u64,
    pub skipped: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Unique per run and stable across re-sends: `puppet:<transaction_uuid>`,
    /// `chef:<run_id>`, or for old Puppet reports without a uuid
    /// `puppet:<host>@<time>`.
    pub key: String,
    pub tool: Tool,
    pub node: String,
    /// When the run started (unix ms).
    pub started_ms: u64,
    pub duration_ms: Option<u64>,
    /// Catalog (Puppet) retrieval time, when reported.
    pub retrieval_ms: Option<u64>,
    pub status: RunStatus,
    pub environment: String,
    /// The code the run applied: Puppet's configuration_version or code_id,
    /// Chef's policy revision.
    pub code_version: String,
    pub noop: bool,
    /// The run never applied a fresh catalog: it did not compile, or Puppet
    /// fell back to a cached catalog (`cached_catalog_status = on_failure`),
    /// or Chef failed before converging. Resources in such a run say
    /// nothing about whether a problem is fixed.
    pub catalog_failed: bool,
    pub counts: Counts,
    pub resources: Vec<Resource>,
    /// Keys of resources evaluated without change or failure (not stored;
    /// detectors use them to see a failing resource succeed elsewhere).
    #[serde(default, skip_serializing)]
    pub ok_resources: Vec<String>,
    pub logs: Vec<LogLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// The tool's version (puppet_version, chef version), when given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool_version: String,
}

impl Run {
    pub fn failed_resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources
            .iter()
            .filter(|r| r.outcome == ResourceOutcome::Failed)
    }

    pub fn changed_resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources
            .iter()
            .filter(|r| r.outcome == ResourceOutcome::Changed)
    }
}

/// `s` cut to at most [`MAX_TEXT`] bytes at a char boundary.
pub fn cut(s: &str) -> String {
    cut_to(s, MAX_TEXT)
}

pub fn cut_to(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_char_boundary() {
        let s = "é".repeat(MAX_TEXT);
        let c = cut(&s);
        assert!(c.len() <= MAX_TEXT + '…'.len_utf8());
        assert!(c.ends_with('…'));
    }
}
