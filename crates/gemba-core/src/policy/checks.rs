//! Validating `[[check]]` sections: scope, templates, the settings each
//! kind takes (a setting of another kind is refused by name), timing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::ids::is_name;
use crate::template;
use crate::validate::Checker;

use super::*;

const CHECK_VARS: &[&str] = &["node", "node_addr", "tier"];
/// `[[check]]` sections; `level_defs` are the levels they may name.
pub(super) fn validate_checks(
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
fn scope_word(s: &ScopeRule) -> &'static str {
    match s {
        ScopeRule::Global => "global",
        ScopeRule::Tier { .. } => "tier",
        ScopeRule::Node { .. } => "node",
    }
}
