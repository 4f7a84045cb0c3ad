//! From the file form to the model in one pass that names every mistake:
//! levels, the escalator's settings, notify targets; each check is
//! validated in `checks`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::template;
use crate::validate::Checker;

use super::checks::validate_checks;
use super::*;

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
