//! The convergence policy: checks (what the environment should look like),
//! the escalation pattern (how to converge it, most fundamental level
//! first), the escalator's safety settings and where notifications go.
//!
//! Like the rest of the config, every field of the file form is optional
//! and validated in one pass, so `gemba config check` lists every mistake
//! in a policy at once instead of the first one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::template;
use crate::validate::Checker;

pub mod defaults {
    pub const CHECK_INTERVAL: &str = "10s";
    pub const CHECK_TIMEOUT: &str = "5s";
    pub const FALL: u32 = 1;
    pub const RISE: u32 = 1;
    pub const FLAP_LOW: f64 = 20.0;
    pub const FLAP_HIGH: f64 = 30.0;
    pub const FLAP_WINDOW: &str = "1h";
    pub const FLAP_CHANGES_HIGH: u32 = 6;
    pub const FLAP_CHANGES_LOW: u32 = 2;
    pub const TLS_WARN_DAYS: u32 = 14;
    pub const TLS_CRIT_DAYS: u32 = 3;
    pub const LEVEL_TIMEOUT: &str = "5m";
    pub const LEVEL_QUIESCE: &str = "30s";
    pub const MODE: &str = "act";
    pub const QUIET_PERIOD: &str = "30s";
    pub const BUDGET: u32 = 2;
    pub const BACKOFF: &str = "1m";
    pub const CLIMB: bool = false;
    pub const MAX_PER_SCOPE_PER_HOUR: u32 = 3;
    pub const MAX_RUNNING: u32 = 2;
    pub const LEASE_TTL: &str = "30s";
    pub const STALE_AFTER_INTERVALS: u32 = 3;
    pub const CRASH_LOOP_FAILURES: u32 = 3;
    pub const CRASH_LOOP_WINDOW: &str = "10m";
    pub const STEP_GRACE: &str = "20s";
}

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

/// Where a check runs and what it speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "lowercase")]
pub enum ScopeRule {
    /// One instance, run by the server.
    Global,
    /// One verdict for a tier, run by the server. With `min_passing` the
    /// check runs once per node of the tier and the tier passes when at
    /// least that many nodes pass.
    Tier {
        tier: String,
        min_passing: Option<u32>,
    },
    /// One instance per node (of `tier`, or of the grid), run by that
    /// node's agent.
    Node { tier: Option<String> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CheckKind {
    Tcp {
        host: String,
        port: u16,
    },
    Http {
        url: String,
        expect_status: u16,
        body_contains: Option<String>,
        /// PEM bundle of extra CAs to trust (private CAs).
        tls_ca_file: Option<String>,
        /// Certificate days left under which the check warns / fails.
        tls_warn_days: u32,
        tls_crit_days: u32,
    },
    Command {
        argv: Vec<String>,
    },
    Process {
        name: Option<String>,
        pidfile: Option<String>,
        max_rss_mb: Option<u64>,
        max_fds: Option<u64>,
        max_threads: Option<u64>,
    },
    /// A sampled metric of a `[[process]]` (or `host`) on this node over
    /// thresholds, for a while.
    Metric {
        process: String,
        metric: String,
        warn: Option<f64>,
        crit: Option<f64>,
        /// How long every sample must be over a threshold (0: the newest).
        #[serde(with = "millis")]
        for_: Duration,
    },
    MeshNode {
        node: String,
    },
    MeshLink {
        source: String,
        target: String,
    },
}

impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Http { .. } => "http",
            CheckKind::Command { .. } => "command",
            CheckKind::Process { .. } => "process",
            CheckKind::Metric { .. } => "metric",
            CheckKind::MeshNode { .. } => "mesh-node",
            CheckKind::MeshLink { .. } => "mesh-link",
        }
    }

    /// Mesh checks read the gossip state and are evaluated by servers.
    pub fn reads_mesh(&self) -> bool {
        matches!(
            self,
            CheckKind::MeshNode { .. } | CheckKind::MeshLink { .. }
        )
    }
}

/// A validated check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckDef {
    pub name: String,
    pub kind: CheckKind,
    pub scope: ScopeRule,
    /// The escalation level this check requires when it fails; `None`:
    /// observed and reported, never acted on.
    pub level: Option<u32>,
    #[serde(with = "millis")]
    pub interval: Duration,
    #[serde(with = "millis")]
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    pub flap_low: f64,
    pub flap_high: f64,
    /// Flapping over time: hard-state changes within `flap_window` start
    /// flapping at `flap_changes_high` and stop it at `flap_changes_low`.
    #[serde(with = "millis")]
    pub flap_window: Duration,
    pub flap_changes_high: u32,
    pub flap_changes_low: u32,
}

/// A validated level of the escalation pattern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LevelDef {
    pub level: u32,
    pub name: String,
    pub run: Vec<String>,
    /// Run `run` through `/bin/sh -c` (template values still go in the
    /// environment, never into the shell text).
    pub shell: bool,
    #[serde(with = "millis")]
    pub timeout: Duration,
    #[serde(with = "millis")]
    pub quiesce: Duration,
    pub approve: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Decide and run.
    Act,
    /// Decide and journal; run nothing.
    Plan,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EscalatorConfig {
    pub mode: Mode,
    #[serde(with = "millis")]
    pub quiet_period: Duration,
    pub budget: u32,
    #[serde(with = "millis")]
    pub backoff: Duration,
    pub climb: bool,
    pub max_per_scope_per_hour: u32,
    pub max_running: u32,
    #[serde(with = "millis")]
    pub lease_ttl: Duration,
    pub stale_after_intervals: u32,
    /// This many failure episodes of one scope within `crash_loop_window`
    /// are a crash loop.
    pub crash_loop_failures: u32,
    #[serde(with = "millis")]
    pub crash_loop_window: Duration,
    /// When the node stops, running steps get this long to finish (so
    /// their outcome is journaled) before they are cut off.
    #[serde(with = "millis")]
    pub step_grace: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NotifyDef {
    /// POST JSON (with a Slack-compatible `text`).
    Webhook { url: String },
    /// Mail through an SMTP relay (no TLS, no auth: a local relay).
    Smtp {
        server: String,
        from: String,
        to: Vec<String>,
    },
    /// Run a command with the notice in its environment and on stdin.
    Command { run: Vec<String> },
}

/// Checks, levels, escalator settings and notification targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub checks: Vec<CheckDef>,
    /// Sorted by level, most fundamental (1) first.
    pub levels: Vec<LevelDef>,
    pub escalator: EscalatorConfig,
    pub notify: Vec<NotifyDef>,
}

impl Policy {
    pub fn level(&self, n: u32) -> Option<&LevelDef> {
        self.levels.iter().find(|l| l.level == n)
    }

    pub fn check(&self, name: &str) -> Option<&CheckDef> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Levels from `from` (inclusive) to the last one, in order.
    pub fn chain_from(&self, from: u32) -> Vec<u32> {
        self.levels
            .iter()
            .filter(|l| l.level >= from)
            .map(|l| l.level)
            .collect()
    }

    /// The level one step more fundamental than `level`, if any.
    pub fn more_fundamental(&self, level: u32) -> Option<u32> {
        self.levels
            .iter()
            .rev()
            .find(|l| l.level < level)
            .map(|l| l.level)
    }
}

/// Durations as milliseconds in JSON.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

const CHECK_VARS: &[&str] = &["node", "node_addr", "tier"];
const LEVEL_VARS: &[&str] = &["node", "node_addr", "tier", "scope", "level"];

use crate::ids::is_name;

pub(crate) fn validate(
    c: &mut Checker,
    checks: Vec<CheckSection>,
    levels: Vec<LevelSection>,
    esc: EscalatorSection,
    notify: Vec<NotifySection>,
) -> Policy {
    // Levels first: checks refer to them.
    let level_defs = validate_levels(c, levels);
    Policy {
        checks: validate_checks(c, checks, &level_defs),
        levels: level_defs.into_values().collect(),
        escalator: validate_escalator(c, esc),
        notify: validate_notify(c, notify),
    }
}

/// `[[level]]` sections, by level number.
fn validate_levels(c: &mut Checker, levels: Vec<LevelSection>) -> BTreeMap<u32, LevelDef> {
    use defaults as d;
    let ms = Duration::from_millis;
    let mut level_defs: BTreeMap<u32, LevelDef> = BTreeMap::new();
    let mut level_names = BTreeSet::new();
    for (i, l) in levels.into_iter().enumerate() {
        let key = |k: &str| format!("level[{i}].{k}");
        let n = match l.level {
            Some(0) | None => {
                c.fail(
                    &key("level"),
                    "required: a number from 1 (most fundamental) up",
                );
                continue;
            }
            Some(n) => n,
        };
        let name = l.name.unwrap_or_else(|| format!("level-{n}"));
        if !is_name(&name) {
            c.fail(
                &key("name"),
                format!("{name:?} must be 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"),
            );
        }
        if !level_names.insert(name.clone()) {
            c.fail(&key("name"), format!("duplicate level name {name:?}"));
        }
        let run = l.run.unwrap_or_default();
        if run.is_empty() || run[0].trim().is_empty() {
            c.fail(&key("run"), format!("level {n} ({name}) has no action: give the command to run as a list, e.g. [\"/opt/ops/restart\", \"{{node}}\"]"));
        }
        for (j, arg) in run.iter().enumerate() {
            if let Err(e) = template::check(arg, LEVEL_VARS) {
                c.fail(&key(&format!("run[{j}]")), e);
            }
        }
        let shell = l.shell.unwrap_or(false);
        if shell && run.iter().any(|a| template::check(a, &[]).is_err()) {
            c.fail(&key("run"), "with shell = true, templates would become shell text: use $GEMBA_NODE, $GEMBA_TIER, $GEMBA_SCOPE and $GEMBA_LEVEL from the environment instead");
        }
        let timeout = c.duration(
            &key("timeout"),
            l.timeout.as_deref(),
            d::LEVEL_TIMEOUT,
            ms(10),
        );
        let quiesce = c.duration(
            &key("quiesce"),
            l.quiesce.as_deref(),
            d::LEVEL_QUIESCE,
            ms(0),
        );
        let def = LevelDef {
            level: n,
            name,
            run,
            shell,
            timeout,
            quiesce,
            approve: l.approve.unwrap_or(false),
        };
        if level_defs.insert(n, def).is_some() {
            c.fail(&key("level"), format!("duplicate level {n}: each level number appears once, which also rules out cycles in the order"));
        }
    }

    level_defs
}

/// `[[check]]` sections; `level_defs` are the levels they may name.
fn validate_checks(
    c: &mut Checker,
    checks: Vec<CheckSection>,
    level_defs: &BTreeMap<u32, LevelDef>,
) -> Vec<CheckDef> {
    let mut check_defs = Vec::new();
    let mut check_names = BTreeSet::new();
    for (i, s) in checks.into_iter().enumerate() {
        let key = |k: &str| format!("check[{i}].{k}");
        let name = match s.name.clone() {
            Some(n) if is_name(&n) => n,
            Some(n) => {
                c.fail(
                    &key("name"),
                    format!("{n:?} must be 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"),
                );
                n
            }
            None => {
                c.fail(&key("name"), "required");
                format!("check-{i}")
            }
        };
        if !check_names.insert(name.clone()) {
            c.fail(&key("name"), format!("duplicate check name {name:?}"));
        }
        let scope = validate_check_scope(c, &key, &s);
        let kind = validate_check_kind(c, &key, &s, &scope);
        if let Some(level) = s.level {
            if !level_defs.contains_key(&level) {
                let known: Vec<String> = level_defs.keys().map(|l| l.to_string()).collect();
                c.fail(
                    &key("level"),
                    format!(
                        "unknown level {level}; defined levels: {}",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
        let timing = validate_check_timing(c, &key, &s);
        if let Some(kind) = kind {
            check_defs.push(CheckDef {
                name,
                kind,
                scope,
                level: s.level,
                interval: timing.interval,
                timeout: timing.timeout,
                fall: timing.fall,
                rise: timing.rise,
                flap_low: timing.flap_low,
                flap_high: timing.flap_high,
                flap_window: timing.flap_window,
                flap_changes_high: timing.flap_changes_high,
                flap_changes_low: timing.flap_changes_low,
            });
        }
    }
    check_defs
}

/// A check's `scope`, `tier` and `min_passing`.
fn validate_check_scope(
    c: &mut Checker,
    key: &dyn Fn(&str) -> String,
    s: &CheckSection,
) -> ScopeRule {
    let scope = match s.scope.as_deref().unwrap_or("node") {
        "global" => {
            if s.tier.is_some() {
                c.fail(&key("tier"), "a global check has no tier");
            }
            ScopeRule::Global
        }
        "tier" => match &s.tier {
            Some(t) if is_name(t) => ScopeRule::Tier {
                tier: t.clone(),
                min_passing: s.min_passing,
            },
            Some(t) => {
                c.fail(&key("tier"), format!("{t:?} is not a valid tier name"));
                ScopeRule::Global
            }
            None => {
                c.fail(&key("tier"), "required for scope = \"tier\"");
                ScopeRule::Global
            }
        },
        "node" => {
            if let Some(t) = &s.tier {
                if !is_name(t) {
                    c.fail(&key("tier"), format!("{t:?} is not a valid tier name"));
                }
            }
            ScopeRule::Node {
                tier: s.tier.clone(),
            }
        }
        other => {
            c.fail(
                &key("scope"),
                format!("unknown scope {other:?}; use \"global\", \"tier\" or \"node\""),
            );
            ScopeRule::Global
        }
    };
    if s.min_passing == Some(0) {
        c.fail(&key("min_passing"), "must be at least 1");
    }
    if s.min_passing.is_some() && !matches!(scope, ScopeRule::Tier { .. }) {
        c.fail(&key("min_passing"), "only tier checks count passing nodes");
    }
    scope
}

/// Checks a templated setting against the variables its scope can fill.
struct Templates<'a> {
    key: &'a dyn Fn(&str) -> String,
    scope: &'a ScopeRule,
    vars: &'static [&'static str],
}

impl Templates<'_> {
    fn new<'a>(key: &'a dyn Fn(&str) -> String, scope: &'a ScopeRule) -> Templates<'a> {
        let vars: &'static [&'static str] = match scope {
            ScopeRule::Global => &[],
            ScopeRule::Tier {
                min_passing: None, ..
            } => &["tier"],
            ScopeRule::Tier { .. } => CHECK_VARS,
            ScopeRule::Node { tier: Some(_) } => CHECK_VARS,
            ScopeRule::Node { tier: None } => &["node", "node_addr"],
        };
        Templates { key, scope, vars }
    }

    fn can_fill(&self, var: &str) -> bool {
        self.vars.contains(&var)
    }

    fn check(&self, c: &mut Checker, k: &str, v: &str) {
        if let Err(e) = template::check(v, self.vars) {
            let usable = if self.vars.is_empty() {
                "none".to_string()
            } else {
                self.vars
                    .iter()
                    .map(|v| format!("{{{v}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            c.fail(
                &(self.key)(k),
                format!("{e} (a {} check can use: {usable})", scope_word(self.scope)),
            );
        }
    }
}

/// The settings that belong to one kind of check, and which kinds use
/// each: a setting the check's kind does not use is refused, not ignored.
fn kind_settings(s: &CheckSection) -> [(&'static str, bool, &'static [&'static str]); 20] {
    [
        ("host", s.host.is_some(), &["tcp"]),
        ("port", s.port.is_some(), &["tcp"]),
        ("url", s.url.is_some(), &["http"]),
        ("expect_status", s.expect_status.is_some(), &["http"]),
        ("body_contains", s.body_contains.is_some(), &["http"]),
        ("tls_ca_file", s.tls_ca_file.is_some(), &["http"]),
        ("tls_warn_days", s.tls_warn_days.is_some(), &["http"]),
        ("tls_crit_days", s.tls_crit_days.is_some(), &["http"]),
        ("command", s.command.is_some(), &["command"]),
        ("process", s.process.is_some(), &["process", "metric"]),
        ("pidfile", s.pidfile.is_some(), &["process"]),
        ("max_rss_mb", s.max_rss_mb.is_some(), &["process"]),
        ("max_fds", s.max_fds.is_some(), &["process"]),
        ("max_threads", s.max_threads.is_some(), &["process"]),
        ("metric", s.metric.is_some(), &["metric"]),
        ("warn", s.warn.is_some(), &["metric"]),
        ("crit", s.crit.is_some(), &["metric"]),
        ("for", s.for_.is_some(), &["metric"]),
        ("node", s.node.is_some(), &["mesh-node"]),
        (
            "source",
            s.source.is_some() || s.target.is_some(),
            &["mesh-link"],
        ),
    ]
}

/// Refuses each setting given that the check's kind does not use.
fn refuse_foreign_settings(c: &mut Checker, key: &dyn Fn(&str) -> String, s: &CheckSection) {
    let Some(kind) = s.kind.as_deref() else {
        return;
    };
    let settings = kind_settings(s);
    if !settings.iter().any(|(_, _, kinds)| kinds.contains(&kind)) {
        return; // an unknown kind is reported on its own
    }
    let own: Vec<&str> = settings
        .iter()
        .filter(|(_, _, kinds)| kinds.contains(&kind))
        .map(|(name, _, _)| {
            if *name == "source" {
                "source, target"
            } else {
                *name
            }
        })
        .collect();
    for (name, given, kinds) in settings {
        if given && !kinds.contains(&kind) {
            let name = if name == "source" && s.source.is_none() {
                "target"
            } else {
                name
            };
            c.fail(
                &key(name),
                format!(
                    "a {kind} check does not use `{name}` (it belongs to {} checks); a {kind} check takes {}",
                    kinds.join(" and "),
                    own.join(", ")
                ),
            );
        }
    }
}

/// A check's `kind` and the settings of that kind.
fn validate_check_kind(
    c: &mut Checker,
    key: &dyn Fn(&str) -> String,
    s: &CheckSection,
    scope: &ScopeRule,
) -> Option<CheckKind> {
    refuse_foreign_settings(c, key, s);
    let t = Templates::new(key, scope);
    let kind_name = s.kind.clone().unwrap_or_default();
    match kind_name.as_str() {
        "tcp" => {
            let host = s.host.clone().unwrap_or_else(|| {
                if t.can_fill("node_addr") {
                    "{node_addr}".into()
                } else {
                    String::new()
                }
            });
            t.check(c, "host", &host);
            if host.is_empty() {
                c.fail(&key("host"), "required for a tcp check outside node scope");
            }
            let port = s.port.unwrap_or_else(|| {
                c.fail(&key("port"), "required for a tcp check");
                0
            });
            Some(CheckKind::Tcp { host, port })
        }
        "http" => {
            let url = s.url.clone().unwrap_or_default();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                c.fail(
                    &key("url"),
                    format!("{url:?} is not an http:// or https:// URL"),
                );
            }
            t.check(c, "url", &url);
            if let Some(b) = &s.body_contains {
                t.check(c, "body_contains", b);
            }
            let tls_warn_days = s.tls_warn_days.unwrap_or(defaults::TLS_WARN_DAYS);
            let tls_crit_days = s.tls_crit_days.unwrap_or(defaults::TLS_CRIT_DAYS);
            if tls_crit_days > tls_warn_days {
                c.fail(
                    &key("tls_crit_days"),
                    format!("{tls_crit_days} must not exceed tls_warn_days ({tls_warn_days})"),
                );
            }
            if let Some(ca) = &s.tls_ca_file {
                if let Err(e) = std::fs::metadata(ca) {
                    c.fail(&key("tls_ca_file"), format!("cannot read {ca}: {e}"));
                }
            }
            Some(CheckKind::Http {
                url,
                expect_status: s.expect_status.unwrap_or(200),
                body_contains: s.body_contains.clone(),
                tls_ca_file: s.tls_ca_file.clone(),
                tls_warn_days,
                tls_crit_days,
            })
        }
        "command" => {
            let argv = s.command.clone().unwrap_or_default();
            if argv.is_empty() {
                c.fail(
                    &key("command"),
                    "required: the plugin and its arguments as a list",
                );
            }
            for (j, a) in argv.iter().enumerate() {
                t.check(c, &format!("command[{j}]"), a);
            }
            Some(CheckKind::Command { argv })
        }
        "process" => {
            if s.process.is_none() && s.pidfile.is_none() {
                c.fail(
                    &key("process"),
                    "a process check needs `process` (a name) or `pidfile`",
                );
            }
            if let Some(p) = &s.pidfile {
                t.check(c, "pidfile", p);
            }
            Some(CheckKind::Process {
                name: s.process.clone(),
                pidfile: s.pidfile.clone(),
                max_rss_mb: s.max_rss_mb,
                max_fds: s.max_fds,
                max_threads: s.max_threads,
            })
        }
        "metric" => {
            if !matches!(scope, ScopeRule::Node { .. }) {
                c.fail(
                    &key("scope"),
                    "a metric check reads the samples of the node it runs on: use scope = \"node\"",
                );
            }
            let process = s
                .process
                .clone()
                .unwrap_or_else(|| crate::metrics::HOST.into());
            if !crate::ids::is_name(&process) {
                c.fail(
                    &key("process"),
                    format!("{process:?} is not a [[process]] name"),
                );
            }
            let metric = s.metric.clone().unwrap_or_default();
            let known = if process == crate::metrics::HOST {
                crate::metrics::HOST_METRICS
            } else {
                crate::metrics::PROCESS_METRICS
            };
            if !known.contains(&metric.as_str()) {
                c.fail(
                    &key("metric"),
                    format!(
                        "{metric:?} is not a metric of {}; use one of {}",
                        if process == crate::metrics::HOST {
                            "the host"
                        } else {
                            "a process"
                        },
                        known.join(", ")
                    ),
                );
            }
            if s.warn.is_none() && s.crit.is_none() {
                c.fail(&key("crit"), "a metric check needs `warn`, `crit` or both");
            }
            for (k, v) in [("warn", s.warn), ("crit", s.crit)] {
                if v.is_some_and(|x| !x.is_finite()) {
                    c.fail(&key(k), "must be a finite number");
                }
            }
            if let (Some(w), Some(cr)) = (s.warn, s.crit) {
                if w > cr {
                    c.fail(&key("warn"), format!("{w} is above crit ({cr})"));
                }
            }
            let for_ = match s.for_.as_deref() {
                None => Duration::ZERO,
                Some(text) => match text.parse::<crate::HumanDuration>() {
                    Ok(d) if d.0 <= Duration::from_secs(3600) => d.0,
                    Ok(_) => {
                        c.fail(&key("for"), "at most 1h (agents keep an hour of samples)");
                        Duration::ZERO
                    }
                    Err(e) => {
                        c.fail(&key("for"), e);
                        Duration::ZERO
                    }
                },
            };
            Some(CheckKind::Metric {
                process,
                metric,
                warn: s.warn,
                crit: s.crit,
                for_,
            })
        }
        "mesh-node" => {
            let node = s.node.clone().unwrap_or_else(|| {
                if t.can_fill("node") {
                    "{node}".into()
                } else {
                    String::new()
                }
            });
            if node.is_empty() {
                c.fail(
                    &key("node"),
                    "required for a mesh-node check outside node scope",
                );
            }
            t.check(c, "node", &node);
            Some(CheckKind::MeshNode { node })
        }
        "mesh-link" => {
            let source = s.source.clone().unwrap_or_default();
            let target = s.target.clone().unwrap_or_default();
            if source.is_empty() || target.is_empty() {
                c.fail(
                    &key("source"),
                    "a mesh-link check needs `source` and `target` node ids",
                );
            }
            t.check(c, "source", &source);
            t.check(c, "target", &target);
            Some(CheckKind::MeshLink { source, target })
        }
        "" => {
            c.fail(
                &key("kind"),
                "required: tcp, http, command, process, metric, mesh-node or mesh-link",
            );
            None
        }
        other => {
            c.fail(&key("kind"), format!("unknown check kind {other:?}; use tcp, http, command, process, metric, mesh-node or mesh-link"));
            None
        }
    }
}

/// A check's interval, timeout, fall/rise and flap settings.
struct CheckTiming {
    interval: Duration,
    timeout: Duration,
    fall: u32,
    rise: u32,
    flap_low: f64,
    flap_high: f64,
    flap_window: Duration,
    flap_changes_high: u32,
    flap_changes_low: u32,
}

fn validate_check_timing(
    c: &mut Checker,
    key: &dyn Fn(&str) -> String,
    s: &CheckSection,
) -> CheckTiming {
    use defaults as d;
    let ms = Duration::from_millis;
    let interval = c.duration(
        &key("interval"),
        s.interval.as_deref(),
        d::CHECK_INTERVAL,
        ms(100),
    );
    let timeout = c.duration(
        &key("timeout"),
        s.timeout.as_deref(),
        d::CHECK_TIMEOUT,
        ms(10),
    );
    let fall = c.count(&key("fall"), s.fall, d::FALL, 1..=100);
    let rise = c.count(&key("rise"), s.rise, d::RISE, 1..=100);
    let flap_low = s.flap_low.unwrap_or(d::FLAP_LOW);
    let flap_high = s.flap_high.unwrap_or(d::FLAP_HIGH);
    if !(0.0..=100.0).contains(&flap_low)
        || !(0.0..=100.0).contains(&flap_high)
        || flap_low >= flap_high
    {
        c.fail(
            &key("flap_low"),
            format!(
                "flap_low ({flap_low}) must be below flap_high ({flap_high}), both percentages"
            ),
        );
    }
    let flap_window = c.duration(
        &key("flap_window"),
        s.flap_window.as_deref(),
        d::FLAP_WINDOW,
        ms(1000),
    );
    let flap_changes_high = c.count(
        &key("flap_changes_high"),
        s.flap_changes_high,
        d::FLAP_CHANGES_HIGH,
        2..=10_000,
    );
    let flap_changes_low = s.flap_changes_low.unwrap_or(d::FLAP_CHANGES_LOW);
    if flap_changes_low >= flap_changes_high {
        c.fail(
            &key("flap_changes_low"),
            format!("flap_changes_low ({flap_changes_low}) must be below flap_changes_high ({flap_changes_high})"),
        );
    }
    CheckTiming {
        interval,
        timeout,
        fall,
        rise,
        flap_low,
        flap_high,
        flap_window,
        flap_changes_high,
        flap_changes_low,
    }
}

/// `[escalator]`.
fn validate_escalator(c: &mut Checker, esc: EscalatorSection) -> EscalatorConfig {
    use defaults as d;
    let ms = Duration::from_millis;
    let mode = match esc.mode.as_deref().unwrap_or(d::MODE) {
        "act" => Mode::Act,
        "plan" => Mode::Plan,
        other => {
            c.fail(
                "escalator.mode",
                format!("unknown mode {other:?}; use \"act\" or \"plan\""),
            );
            Mode::Plan
        }
    };
    let escalator = EscalatorConfig {
        mode,
        quiet_period: c.duration(
            "escalator.quiet_period",
            esc.quiet_period.as_deref(),
            d::QUIET_PERIOD,
            ms(0),
        ),
        budget: c.count("escalator.budget", esc.budget, d::BUDGET, 1..=20),
        backoff: c.duration(
            "escalator.backoff",
            esc.backoff.as_deref(),
            d::BACKOFF,
            ms(0),
        ),
        climb: esc.climb.unwrap_or(d::CLIMB),
        max_per_scope_per_hour: c.count(
            "escalator.max_per_scope_per_hour",
            esc.max_per_scope_per_hour,
            d::MAX_PER_SCOPE_PER_HOUR,
            1..=1000,
        ),
        max_running: c.count(
            "escalator.max_running",
            esc.max_running,
            d::MAX_RUNNING,
            1..=1000,
        ),
        lease_ttl: c.duration(
            "escalator.lease_ttl",
            esc.lease_ttl.as_deref(),
            d::LEASE_TTL,
            ms(1000),
        ),
        stale_after_intervals: c.count(
            "escalator.stale_after_intervals",
            esc.stale_after_intervals,
            d::STALE_AFTER_INTERVALS,
            1..=100,
        ),
        crash_loop_failures: c.count(
            "escalator.crash_loop_failures",
            esc.crash_loop_failures,
            d::CRASH_LOOP_FAILURES,
            2..=1000,
        ),
        crash_loop_window: c.duration(
            "escalator.crash_loop_window",
            esc.crash_loop_window.as_deref(),
            d::CRASH_LOOP_WINDOW,
            ms(1000),
        ),
        step_grace: c.duration(
            "escalator.step_grace",
            esc.step_grace.as_deref(),
            d::STEP_GRACE,
            ms(0),
        ),
    };
    if let Some(old) = &esc.store {
        c.fail(
            "escalator.store",
            format!(
                "the store is the node's now: write [store] url = \"sqlite://{}\" instead",
                old.display()
            ),
        );
    }

    escalator
}

/// `[[notify]]` sections.
fn validate_notify(c: &mut Checker, notify: Vec<NotifySection>) -> Vec<NotifyDef> {
    validate_targets(c, "notify", notify)
}

/// Notification targets under `section` (`notify`, `market.publish`).
pub(crate) fn validate_targets(
    c: &mut Checker,
    section: &str,
    notify: Vec<NotifySection>,
) -> Vec<NotifyDef> {
    let mut notify_defs = Vec::new();
    for (i, n) in notify.into_iter().enumerate() {
        let key = |k: &str| format!("{section}[{i}].{k}");
        match n.kind.as_deref() {
            Some("webhook") => match n.url {
                Some(u) if u.starts_with("http://") => notify_defs.push(NotifyDef::Webhook { url: u }),
                Some(u) => c.fail(&key("url"), format!("{u:?} is not an http:// URL (https webhooks need a TLS relay in this build)")),
                None => c.fail(&key("url"), "required for a webhook"),
            },
            Some("smtp") => {
                let server = n.smtp_server.unwrap_or_default();
                if !server.contains(':') {
                    c.fail(&key("smtp_server"), "required: host:port of an SMTP relay");
                }
                let from = n.from.unwrap_or_default();
                if !from.contains('@') {
                    c.fail(&key("from"), "required: a mail address");
                }
                let to = n.to.unwrap_or_default();
                if to.is_empty() || to.iter().any(|t| !t.contains('@')) {
                    c.fail(&key("to"), "required: a list of mail addresses");
                }
                notify_defs.push(NotifyDef::Smtp { server, from, to });
            }
            Some("command") => {
                let run = n.run.unwrap_or_default();
                if run.is_empty() {
                    c.fail(&key("run"), "required: the command as a list");
                }
                notify_defs.push(NotifyDef::Command { run });
            }
            Some(other) => c.fail(&key("kind"), format!("unknown notification kind {other:?}; use webhook, smtp or command")),
            None => c.fail(&key("kind"), "required: webhook, smtp or command"),
        }
    }

    notify_defs
}

fn scope_word(s: &ScopeRule) -> &'static str {
    match s {
        ScopeRule::Global => "global",
        ScopeRule::Tier { .. } => "tier",
        ScopeRule::Node { .. } => "node",
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{Config, ConfigError, ConfigFile, Overrides};

    fn load(text: &str) -> Result<Config, ConfigError> {
        let file = ConfigFile::parse(Path::new("p.toml"), text)?;
        Config::from_file(file, &Overrides::default(), "p.toml")
    }

    #[test]
    fn a_setting_of_another_kind_of_check_is_refused_naming_both() {
        let err = load(
            "[[check]]\nname = \"web\"\nkind = \"tcp\"\nport = 80\nurl = \"http://x/\"\n\n[[check]]\nname = \"p\"\nkind = \"process\"\nprocess = \"shop\"\nwarn = 3.0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("check[0].url")
                && err.contains("a tcp check does not use `url`")
                && err.contains("http checks"),
            "{err}"
        );
        assert!(
            err.contains("check[1].warn") && err.contains("metric checks"),
            "{err}"
        );
        // The settings of its own kind are fine.
        assert!(load(
            "[[check]]\nname = \"web\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 80\n"
        )
        .is_ok());
    }

    #[test]
    fn a_valid_pattern_is_ordered_most_fundamental_first() {
        let c = load(
            r#"
[[level]]
level = 6
name = "redeploy"
run = ["/opt/ops/redeploy", "{node}"]
[[level]]
level = 4
name = "vm"
run = ["/opt/ops/create-vm", "{node}"]
timeout = "20m"
quiesce = "2m"
[[check]]
name = "ping"
kind = "mesh-node"
level = 4
[[check]]
name = "web"
kind = "tcp"
tier = "app"
port = 80
level = 6
fall = 2
"#,
        )
        .unwrap();
        let p = &c.policy;
        assert_eq!(p.levels.iter().map(|l| l.level).collect::<Vec<_>>(), [4, 6]);
        assert_eq!(p.chain_from(4), [4, 6]);
        assert_eq!(p.chain_from(5), [6]);
        assert_eq!(p.more_fundamental(6), Some(4));
        assert_eq!(
            p.checks[0].kind,
            super::CheckKind::MeshNode {
                node: "{node}".into()
            }
        );
        assert_eq!(
            p.checks[1].kind,
            super::CheckKind::Tcp {
                host: "{node_addr}".into(),
                port: 80
            }
        );
        assert_eq!(p.levels[0].timeout.as_secs(), 1200);
    }

    #[test]
    fn every_policy_error_is_listed_with_its_key() {
        let err = load(
            r#"
[[level]]
level = 2
name = "a"
run = ["/bin/true", "{nod}"]
[[level]]
level = 2
name = "b"
run = []
[[check]]
name = "x"
kind = "snmp"
[[check]]
name = "y"
kind = "tcp"
scope = "global"
host = "{node}"
port = 1
level = 9
[[check]]
name = "y"
kind = "command"
command = ["/bin/true"]
[escalator]
mode = "yolo"
"#,
        )
        .unwrap_err();
        let ConfigError::Invalid { errors, .. } = &err else {
            panic!("{err}")
        };
        let text = err.to_string();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "level[0].run[1]",
                "level[1].run",
                "level[1].level",
                "check[0].kind",
                "check[1].host",
                "check[1].level",
                "check[2].name",
                "escalator.mode"
            ],
            "{text}"
        );
        assert!(text.contains("bad template variable {nod}"), "{text}");
        assert!(text.contains("has no action"), "{text}");
        assert!(text.contains("duplicate level 2"), "{text}");
        assert!(text.contains("unknown check kind \"snmp\""), "{text}");
        assert!(
            text.contains("unknown level 9; defined levels: 2"),
            "{text}"
        );
    }

    #[test]
    fn flap_and_crash_loop_settings_are_checked() {
        let err = load(
            r#"
[escalator]
crash_loop_failures = 1
crash_loop_window = "10ms"
[[check]]
name = "x"
kind = "command"
command = ["/bin/true"]
flap_window = "2h"
flap_changes_high = 4
flap_changes_low = 4
"#,
        )
        .unwrap_err();
        let ConfigError::Invalid { errors, .. } = &err else {
            panic!("{err}")
        };
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "check[0].flap_changes_low",
                "escalator.crash_loop_failures",
                "escalator.crash_loop_window"
            ],
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("must be below flap_changes_high (4)"),
            "{err}"
        );
        let ok = load(
            "[escalator]\ncrash_loop_failures = 4\ncrash_loop_window = \"30m\"\n[[check]]\nname = \"x\"\nkind = \"command\"\ncommand = [\"/bin/true\"]\nflap_window = \"2h\"\n",
        )
        .unwrap();
        assert_eq!(ok.policy.escalator.crash_loop_failures, 4);
        assert_eq!(
            ok.policy.escalator.crash_loop_window,
            Duration::from_secs(1800)
        );
        assert_eq!(ok.policy.checks[0].flap_window, Duration::from_secs(7200));
        assert_eq!(ok.policy.checks[0].flap_changes_high, 6);
    }
}
