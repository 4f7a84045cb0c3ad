//! Puppet reports: the YAML dump of `Puppet::Transaction::Report` that the
//! `http` report processor posts (report formats 0.25 to 12), the same
//! report as JSON, and PuppetDB's report shapes (its wire and export
//! format, whose resources carry their events, and its v4 query answers,
//! whose events, logs and metrics come wrapped in `{href, data}`).
//!
//! Fields moved between versions, so each is read where any version puts
//! it: counts from the `resources` metric (older reports count changes in
//! the `changes` metric), durations from the `time` metric or the start and
//! end times, resources from `resource_statuses`, from PuppetDB's
//! `resources` or `resource_events`, or, for 0.25 reports that have none,
//! from the logs whose source names a resource.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::run::*;
use crate::time::parse_ms;
use crate::value::{secs_to_ms, Field};

/// Whether a configuration_version is Puppet's default: the catalog's
/// compile time in seconds, within a day of the run.
fn is_compile_time(version: &str, started_ms: u64) -> bool {
    version
        .trim()
        .parse::<u64>()
        .is_ok_and(|s| s.abs_diff(started_ms / 1000) <= 86_400)
}

/// A Puppet report document (YAML already reduced to JSON).
pub fn parse(v: &Value) -> Result<Run, String> {
    if !v.is_object() {
        return Err("a Puppet report is a mapping of fields".into());
    }
    let node = v
        .str_of("host")
        .or_else(|| v.str_of("certname"))
        .ok_or("the report names no node: it has neither host nor certname")?;
    crate::check_node(&node)?;
    let time_text = v
        .str_of("time")
        .or_else(|| v.str_of("start_time"))
        .ok_or("the report has no time (nor start_time)")?;
    let started_ms = parse_ms(&time_text).map_err(|e| format!("time: {e}"))?;
    let metrics = metrics_of(v);
    let mut logs = logs_of(v);
    let mut resources = Vec::new();
    let mut ok_resources = Vec::new();
    if let Some(statuses) = v.get("resource_statuses").and_then(Value::as_object) {
        for (key, st) in statuses {
            resource_status(key, st, &mut resources, &mut ok_resources);
        }
    } else if let Some(list) = v.get("resources").and_then(Value::as_array) {
        for r in list {
            puppetdb_resource(r, &mut resources, &mut ok_resources);
        }
    } else if let Some(events) = wrapped(v, "resource_events") {
        puppetdb_events(events, &mut resources, &mut ok_resources);
    } else {
        resources_from_logs(&logs, &mut resources);
    }
    mark_refreshes(&logs, &mut resources);
    resources.truncate(MAX_RESOURCES);
    ok_resources.truncate(MAX_OK_RESOURCES);

    let metric = |cat: &str, name: &str| metrics.get(&(cat.to_string(), name.to_string())).copied();
    let counted = |name: &str| metric("resources", name).map(|f| f.max(0.0) as u64);
    let changed_now = resources
        .iter()
        .filter(|r| r.outcome == ResourceOutcome::Changed)
        .count() as u64;
    let failed_now = resources
        .iter()
        .filter(|r| r.outcome == ResourceOutcome::Failed)
        .count() as u64;
    let counts = Counts {
        total: counted("total").unwrap_or((resources.len() + ok_resources.len()) as u64),
        changed: counted("changed")
            .or_else(|| metric("changes", "total").map(|f| f.max(0.0) as u64))
            .unwrap_or(changed_now),
        failed: counted("failed").unwrap_or(failed_now),
        skipped: counted("skipped").unwrap_or(0),
    };
    let cached_on_failure = v.str_of("cached_catalog_status").as_deref() == Some("on_failure");
    let catalog_failed = cached_on_failure || catalog_error(&logs, &resources).is_some();
    let error = catalog_error(&logs, &resources).map(|message| RunError {
        class: "catalog".into(),
        message,
    });
    let status = match v.str_of("status").as_deref() {
        _ if failed_now > 0 => RunStatus::Failed,
        Some("failed") => RunStatus::Failed,
        Some("changed") => RunStatus::Changed,
        Some("unchanged") => RunStatus::Unchanged,
        _ if counts.failed > 0 || error.is_some() => RunStatus::Failed,
        _ if counts.changed > 0 => RunStatus::Changed,
        _ => RunStatus::Unchanged,
    };
    let duration_ms = metric("time", "total")
        .and_then(secs_to_ms)
        .or_else(|| {
            let end = parse_ms(&v.str_of("end_time")?).ok()?;
            end.checked_sub(started_ms)
        })
        .or_else(|| {
            let sum: f64 = metrics
                .iter()
                .filter(|((c, _), _)| c == "time")
                .map(|(_, f)| *f)
                .sum();
            (sum > 0.0).then_some(sum).and_then(secs_to_ms)
        });
    let retrieval_ms = metric("time", "config_retrieval")
        .or_else(|| v.get("external_times")?.f64_of("config_retrieval"))
        .and_then(secs_to_ms);
    let key = match v.str_of("transaction_uuid") {
        Some(u) if !u.is_empty() => format!("puppet:{}", cut_to(&u, 128)),
        _ => format!("puppet:{node}@{started_ms}"),
    };
    // Puppet's configuration_version is, unless a site sets a script for
    // it, the time the catalog was compiled: it changes every run and
    // names no code. Such a value is no code version at all.
    let code_version = v
        .str_of("code_id")
        .filter(|s| !s.is_empty())
        .or_else(|| {
            v.str_of("configuration_version")
                .filter(|c| !is_compile_time(c, started_ms))
        })
        .unwrap_or_default();
    logs.truncate(MAX_LOGS);
    Ok(Run {
        key,
        tool: Tool::Puppet,
        node,
        started_ms,
        duration_ms,
        retrieval_ms,
        status,
        environment: cut_to(
            &v.str_of("environment")
                .unwrap_or_else(|| "production".into()),
            128,
        ),
        code_version: cut_to(&code_version, 128),
        noop: v.bool_of("noop").unwrap_or(false),
        catalog_failed,
        counts,
        resources,
        ok_resources,
        logs,
        error,
        tool_version: cut_to(&v.str_of("puppet_version").unwrap_or_default(), 64),
    })
}

/// A list that PuppetDB's query API wraps as `{href, data}`; plain lists
/// pass as they are.
fn wrapped<'a>(v: &'a Value, key: &str) -> Option<&'a Vec<Value>> {
    match v.get(key)? {
        Value::Array(a) => Some(a),
        Value::Object(o) => o.get("data")?.as_array(),
        _ => None,
    }
}

/// (category, name) → value, from either shape: Puppet's
/// `{resources: {values: [[name, label, value], ...]}}` or PuppetDB's
/// `[{category, name, value}]`.
fn metrics_of(v: &Value) -> HashMap<(String, String), f64> {
    let mut out = HashMap::new();
    if let Some(list) = wrapped(v, "metrics") {
        for m in list.iter().take(10_000) {
            if let (Some(c), Some(n), Some(x)) =
                (m.str_of("category"), m.str_of("name"), m.f64_of("value"))
            {
                out.insert((c, n), x);
            }
        }
    } else if let Some(obj) = v.get("metrics").and_then(Value::as_object) {
        for (cat, m) in obj.iter().take(1_000) {
            let Some(values) = m.get("values").and_then(Value::as_array) else {
                continue;
            };
            for row in values.iter().take(1_000) {
                let Some(row) = row.as_array() else { continue };
                let name = row.first().and_then(|n| match n {
                    Value::String(s) => Some(s.trim_start_matches(':').to_string()),
                    _ => None,
                });
                let value = row.get(2).and_then(|x| match x {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.parse().ok(),
                    _ => None,
                });
                if let (Some(n), Some(x)) = (name, value.filter(|f| f.is_finite())) {
                    out.insert((cat.clone(), n), x);
                }
            }
        }
    }
    out
}

fn logs_of(v: &Value) -> Vec<LogLine> {
    let Some(list) = wrapped(v, "logs") else {
        return Vec::new();
    };
    list.iter()
        .take(MAX_LOGS * 4)
        .filter_map(|l| {
            Some(LogLine {
                level: cut_to(&l.str_of("level")?, 16),
                source: cut(&l.str_of("source").unwrap_or_default()),
                message: cut(&l.str_of("message").unwrap_or_default()),
                file: l.str_of("file").map(|f| cut_to(&f, 512)),
                line: l.u64_of("line").map(|n| n.min(u32::MAX as u64) as u32),
            })
        })
        .collect()
}

/// One entry of `resource_statuses`.
fn resource_status(key: &str, st: &Value, out: &mut Vec<Resource>, ok: &mut Vec<String>) {
    let (kind_from_key, title_from_key) =
        split_key(key).unwrap_or((key.to_string(), String::new()));
    let kind = st.str_of("resource_type").unwrap_or(kind_from_key);
    let title = st.str_of("title").unwrap_or(title_from_key);
    from_events(kind, title, st, &events_of(st), out, ok);
}

fn events_of(v: &Value) -> Vec<&Value> {
    v.get("events")
        .and_then(Value::as_array)
        .map_or_else(Vec::new, |e| e.iter().collect())
}

/// A resource and its events, however the report holds them
/// (`resource_statuses`, PuppetDB's `resources`, PuppetDB's event rows):
/// what happened comes from the events; the status flags of `flags` only
/// where there are none (Puppet 2.6.0 set `failed: true` on resources whose
/// every event succeeded). A resource that did nothing is only named in
/// `ok`.
fn from_events(
    kind: String,
    title: String,
    flags: &Value,
    events: &[&Value],
    out: &mut Vec<Resource>,
    ok: &mut Vec<String>,
) {
    let status_is =
        |e: &&Value, s: &[&str]| e.str_of("status").is_some_and(|x| s.contains(&x.as_str()));
    let failed_event = events.iter().find(|e| status_is(e, &["failure"]));
    let flag = |name: &str| flags.bool_of(name).unwrap_or(false);
    let failed = failed_event.is_some()
        || flag("failed_to_restart")
        || (events.is_empty() && flag("failed"));
    let changed =
        events.iter().any(|e| status_is(e, &["success"])) || (events.is_empty() && flag("changed"));
    let skipped = flag("skipped") || events.iter().any(|e| status_is(e, &["skipped", "noop"]));
    let outcome = if failed {
        ResourceOutcome::Failed
    } else if changed {
        ResourceOutcome::Changed
    } else if skipped {
        ResourceOutcome::Skipped
    } else {
        if ok.len() < MAX_OK_RESOURCES {
            ok.push(cut_to(&format!("{kind}[{title}]"), 512));
        }
        return;
    };
    let first = failed_event.or(events.first()).copied();
    let refresh = events.iter().any(|e| {
        e.str_of("name").as_deref() == Some("restarted")
            || e.str_of("message")
                .is_some_and(|m| m.starts_with("Triggered 'refresh'"))
    });
    let located = if flags.get("file").is_some() {
        Some(flags)
    } else {
        first
    };
    push(
        out,
        Resource {
            kind,
            title,
            outcome,
            message: first.and_then(|e| e.str_of("message")).unwrap_or_default(),
            change: fingerprint(events.iter().map(|e| event_name(e))),
            refresh,
            file: located.and_then(|v| v.str_of("file")),
            line: located
                .and_then(|v| v.u64_of("line"))
                .map(|n| n.min(u32::MAX as u64) as u32),
        },
    );
}

/// What an event changed: its property, or its name when it has none
/// (`restarted`).
fn event_name(e: &Value) -> String {
    e.str_of("property")
        .filter(|p| !p.is_empty())
        .or_else(|| e.str_of("name"))
        .unwrap_or_default()
}

fn fingerprint(names: impl Iterator<Item = String>) -> String {
    let set: BTreeSet<String> = names.filter(|n| !n.is_empty()).take(64).collect();
    cut_to(&set.into_iter().collect::<Vec<_>>().join(","), 512)
}

/// PuppetDB's wire/export format: `resources` with their `events`.
fn puppetdb_resource(r: &Value, out: &mut Vec<Resource>, ok: &mut Vec<String>) {
    let kind = r.str_of("resource_type").unwrap_or_default();
    let title = r.str_of("resource_title").unwrap_or_default();
    from_events(kind, title, r, &events_of(r), out, ok);
}

/// PuppetDB's query answers: one event per row, grouped here by resource.
fn puppetdb_events(events: &[Value], out: &mut Vec<Resource>, ok: &mut Vec<String>) {
    let mut by_key: Vec<(String, String, Vec<&Value>)> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    for e in events.iter().take(MAX_RESOURCES * 4) {
        let kind = e.str_of("resource_type").unwrap_or_default();
        let title = e.str_of("resource_title").unwrap_or_default();
        match index.get(&(kind.clone(), title.clone())) {
            Some(&i) => by_key[i].2.push(e),
            None if by_key.len() < MAX_RESOURCES => {
                index.insert((kind.clone(), title.clone()), by_key.len());
                by_key.push((kind, title, vec![e]));
            }
            None => {}
        }
    }
    for (kind, title, evs) in by_key {
        // An event row carries the resource's file and line itself.
        from_events(kind, title, evs[0], &evs, out, ok);
    }
}

/// 0.25 reports list no resources: an `err` log whose source names a
/// resource is that resource failing, a `notice` one a change.
fn resources_from_logs(logs: &[LogLine], out: &mut Vec<Resource>) {
    for l in logs {
        let outcome = match l.level.as_str() {
            "err" | "crit" | "alert" | "emerg" => ResourceOutcome::Failed,
            "notice" => ResourceOutcome::Changed,
            _ => continue,
        };
        let Some((kind, title, property)) = resource_in_source(&l.source) else {
            continue;
        };
        if let Some(r) = out.iter_mut().find(|r| r.kind == kind && r.title == title) {
            if outcome == ResourceOutcome::Failed {
                r.outcome = outcome;
                r.message = l.message.clone();
            }
            continue;
        }
        push(
            out,
            Resource {
                kind,
                title,
                outcome,
                message: l.message.clone(),
                change: property,
                refresh: false,
                file: l.file.clone(),
                line: l.line,
            },
        );
    }
}

/// Logs that say a resource refreshed (`Triggered 'refresh' from 1 event`)
/// mark that resource.
fn mark_refreshes(logs: &[LogLine], resources: &mut [Resource]) {
    for l in logs
        .iter()
        .filter(|l| l.message.starts_with("Triggered 'refresh'"))
    {
        if let Some((kind, title, _)) = resource_in_source(&l.source) {
            if let Some(r) = resources
                .iter_mut()
                .find(|r| r.kind == kind && r.title == title)
            {
                r.refresh = true;
            }
        }
    }
}

/// The error that kept the catalog from being applied, if the run had one:
/// an error logged by Puppet itself (not by a resource) in a run where no
/// resource failed — a compile error, an unreachable server, or an error
/// in an otherwise unchanged run.
fn catalog_error(logs: &[LogLine], resources: &[Resource]) -> Option<String> {
    if resources
        .iter()
        .any(|r| r.outcome == ResourceOutcome::Failed)
    {
        return None;
    }
    logs.iter()
        .find(|l| {
            matches!(l.level.as_str(), "err" | "crit" | "alert" | "emerg")
                && resource_in_source(&l.source).is_none()
        })
        .map(|l| l.message.clone())
}

fn push(out: &mut Vec<Resource>, mut r: Resource) {
    if out.len() >= MAX_RESOURCES {
        return;
    }
    r.kind = cut_to(&r.kind, 128);
    r.title = cut_to(&r.title, 512);
    r.message = cut(&r.message);
    r.file = r.file.map(|f| cut_to(&f, 512));
    out.push(r);
}

/// `Type[title]` → (Type, title).
fn split_key(key: &str) -> Option<(String, String)> {
    let open = key.find('[')?;
    let title = key[open + 1..].strip_suffix(']')?;
    Some((key[..open].to_string(), title.to_string()))
}

/// The innermost resource a log source names, with the property after it:
/// `/Stage[main]/Main/File[/etc/x]/ensure` → (File, /etc/x, ensure).
/// Titles may hold `/` and `[`, so brackets are matched, not split.
pub fn resource_in_source(source: &str) -> Option<(String, String, String)> {
    let b = source.as_bytes();
    let mut found = None;
    let mut i = 0;
    while i < b.len() {
        let starts = (i == 0 || b[i - 1] == b'/') && b[i].is_ascii_uppercase();
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b':') {
            j += 1;
        }
        if j >= b.len() || b[j] != b'[' {
            i = j.max(i + 1);
            continue;
        }
        let mut depth = 0usize;
        let mut k = j;
        let mut close = None;
        while k < b.len() {
            match b[k] {
                b'[' => depth += 1,
                b']' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(k);
                        break;
                    }
                }
                _ => {}
            }
            k += 1;
        }
        let Some(close) = close else { break };
        let kind = &source[i..j];
        if kind != "Stage" && kind != "Node" && kind != "Class" {
            let property = source[close + 1..].trim_start_matches('/').to_string();
            found = Some((kind.to_string(), source[j + 1..close].to_string(), property));
        }
        i = close + 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_resource_of_a_source_is_found() {
        assert_eq!(
            resource_in_source("/Stage[main]/Main/File[/etc/a[1]/b]/ensure"),
            Some(("File".into(), "/etc/a[1]/b".into(), "ensure".into()))
        );
        assert_eq!(
            resource_in_source("//Node[default]/Exec[/bin/false]/returns"),
            Some(("Exec".into(), "/bin/false".into(), "returns".into()))
        );
        assert_eq!(
            resource_in_source("/Stage[main]/Apache::Mod[dav]/File[x]"),
            Some(("File".into(), "x".into(), "".into()))
        );
        assert_eq!(resource_in_source("Puppet"), None);
        assert_eq!(resource_in_source("Filebucket[/tmp/x"), None);
    }

    #[test]
    fn a_compile_time_is_no_code_version() {
        // 2026-12-06T10:00:00Z
        let run = 1_796_551_200_000;
        assert!(is_compile_time("1796551195", run));
        assert!(!is_compile_time("1796551195", run + 3 * 86_400_000));
        assert!(!is_compile_time("a1f3c9e", run));
        assert!(!is_compile_time("production-2026-12-06", run));
    }
}
