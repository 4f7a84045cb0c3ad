//! Chef runs: the data-collector messages chef-client posts natively
//! (`run_start` and `run_converge`, message versions 1.0.0 and 1.1.0), and
//! the JSON file Chef's JsonFile report handler writes after a run.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::run::*;
use crate::time::parse_ms;
use crate::value::{secs_to_ms, Field};

/// The message versions chef-client sends.
pub const MESSAGE_VERSIONS: &[&str] = &["1.0.0", "1.1.0"];

/// A run that started and has not reported its end yet.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RunStart {
    pub run_id: String,
    pub node: String,
    pub started_ms: u64,
}

pub enum Message {
    Start(RunStart),
    Converge(Box<Run>),
}

/// A data-collector message.
pub fn parse_message(v: &Value) -> Result<Message, String> {
    if !v.is_object() {
        return Err("a data-collector message is a JSON object".into());
    }
    let version = v
        .str_of("message_version")
        .ok_or("message_version is missing: not a chef-client data-collector message")?;
    if !MESSAGE_VERSIONS.contains(&version.as_str()) {
        return Err(format!(
            "message_version {:?} is not one gemba reads ({})",
            cut_to(&version, 32),
            MESSAGE_VERSIONS.join(", ")
        ));
    }
    let node = v.str_of("node_name").ok_or("node_name is missing")?;
    crate::check_node(&node)?;
    let run_id = v
        .str_of("run_id")
        .filter(|r| !r.is_empty())
        .ok_or("run_id is missing")?;
    let started_ms = parse_ms(&v.str_of("start_time").ok_or("start_time is missing")?)
        .map_err(|e| format!("start_time: {e}"))?;
    match v.str_of("message_type").as_deref() {
        Some("run_start") => Ok(Message::Start(RunStart {
            run_id: cut_to(&run_id, 128),
            node,
            started_ms,
        })),
        Some("run_converge") => {
            converge(v, node, run_id, started_ms).map(|r| Message::Converge(Box::new(r)))
        }
        Some(other) => Err(format!(
            "message_type {:?} is not run_start or run_converge",
            cut_to(other, 32)
        )),
        None => Err("message_type is missing".into()),
    }
}

fn converge(v: &Value, node: String, run_id: String, started_ms: u64) -> Result<Run, String> {
    let end_ms = match v.str_of("end_time") {
        Some(t) => Some(parse_ms(&t).map_err(|e| format!("end_time: {e}"))?),
        None => None,
    };
    let list: &[Value] = match v.get("resources") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(_) => return Err("resources is not a list".into()),
    };
    let mut resources = Vec::new();
    let mut ok_resources = Vec::new();
    let mut skipped = 0;
    let mut cookbooks = BTreeSet::new();
    let error = v.get("error").filter(|e| e.is_object()).map(|e| RunError {
        class: cut_to(&e.str_of("class").unwrap_or_default(), 256),
        message: cut(&e.str_of("message").unwrap_or_default()),
    });
    for r in list {
        let kind = r.str_of("type").unwrap_or_default();
        let title = r
            .str_of("name")
            .or_else(|| r.str_of("id"))
            .unwrap_or_default();
        if let (Some(c), Some(ver)) = (r.str_of("cookbook_name"), r.str_of("cookbook_version")) {
            if cookbooks.len() < 1_000 {
                cookbooks.insert(format!("{c}@{ver}"));
            }
        }
        let action = r.str_of("result").unwrap_or_default();
        let outcome = match r.str_of("status").as_deref() {
            Some("updated") => ResourceOutcome::Changed,
            Some("failed") => ResourceOutcome::Failed,
            Some("skipped") => {
                skipped += 1;
                ResourceOutcome::Skipped
            }
            Some("unprocessed") => continue,
            _ => {
                if ok_resources.len() < MAX_OK_RESOURCES {
                    ok_resources.push(cut_to(&format!("{kind}[{title}]"), 512));
                }
                continue;
            }
        };
        if resources.len() >= MAX_RESOURCES {
            continue;
        }
        let message = match outcome {
            ResourceOutcome::Failed => r
                .get("error")
                .and_then(|e| e.str_of("message"))
                .or_else(|| error.as_ref().map(|e| e.message.clone()))
                .unwrap_or_else(|| format!("{action} failed")),
            ResourceOutcome::Changed => format!("{action} ({})", changed_keys(r).join(", ")),
            ResourceOutcome::Skipped => r.str_of("conditional").unwrap_or_else(|| "skipped".into()),
        };
        let refresh = outcome == ResourceOutcome::Changed
            && matches!(action.as_str(), "restart" | "reload")
            && (kind.contains("service") || kind == "systemd_unit");
        let mut change = changed_keys(r);
        change.insert(0, action.clone());
        resources.push(Resource {
            kind: cut_to(&kind, 128),
            title: cut_to(&title, 512),
            outcome,
            message: cut(&message),
            change: cut_to(&change.join(","), 512),
            refresh,
            file: None,
            line: None,
        });
    }
    let failed = resources
        .iter()
        .filter(|r| r.outcome == ResourceOutcome::Failed)
        .count() as u64;
    let changed = v.u64_of("updated_resource_count").unwrap_or_else(|| {
        resources
            .iter()
            .filter(|r| r.outcome == ResourceOutcome::Changed)
            .count() as u64
    });
    let run_failed = v.str_of("status").as_deref() == Some("failure") || failed > 0;
    let code_version = v
        .str_of("policy_revision")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            if cookbooks.is_empty() {
                String::new()
            } else {
                format!(
                    "cookbooks:{:016x}",
                    crate::fnv64(cookbooks.iter().map(String::as_str))
                )
            }
        });
    let environment = v
        .get("node")
        .and_then(|n| n.str_of("chef_environment"))
        .or_else(|| v.str_of("policy_group"))
        .unwrap_or_else(|| "_default".into());
    Ok(Run {
        key: format!("chef:{}", cut_to(&run_id, 128)),
        tool: Tool::Chef,
        node,
        started_ms,
        duration_ms: end_ms.and_then(|e| e.checked_sub(started_ms)),
        retrieval_ms: None,
        status: if run_failed {
            RunStatus::Failed
        } else if changed > 0 {
            RunStatus::Changed
        } else {
            RunStatus::Unchanged
        },
        environment: cut_to(&environment, 128),
        code_version: cut_to(&code_version, 128),
        noop: false,
        catalog_failed: run_failed && failed == 0,
        counts: Counts {
            total: v
                .u64_of("total_resource_count")
                .unwrap_or(list.len() as u64),
            changed,
            failed,
            skipped,
        },
        resources,
        ok_resources,
        logs: Vec::new(),
        error: if run_failed { error } else { None },
        tool_version: String::new(),
    })
}

/// The attributes whose value differs between `before` and `after`.
fn changed_keys(r: &Value) -> Vec<String> {
    let (Some(before), Some(after)) = (
        r.get("before").and_then(Value::as_object),
        r.get("after").and_then(Value::as_object),
    ) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k).is_some_and(|b| b != *v))
        .map(|(k, _)| k.clone())
        .take(32)
        .collect();
    keys.sort();
    keys
}

/// The JSON file of Chef's JsonFile handler (`run_status.to_h`): node,
/// success, start_time, end_time, elapsed_time, all_resources,
/// updated_resources, exception, backtrace, run_id.
pub fn parse_json_file(v: &Value) -> Result<Run, String> {
    let node_obj = v.get("node").ok_or("node is missing")?;
    let node = node_obj
        .str_of("name")
        .or_else(|| node_obj.as_str().map(str::to_string))
        .ok_or("node.name is missing")?;
    crate::check_node(&node)?;
    let started_ms = parse_ms(&v.str_of("start_time").ok_or("start_time is missing")?)
        .map_err(|e| format!("start_time: {e}"))?;
    let success = v.bool_of("success").ok_or("success is missing")?;
    let updated: &[Value] = v
        .get("updated_resources")
        .and_then(Value::as_array)
        .map_or(&[], |a| a);
    let all: &[Value] = v
        .get("all_resources")
        .and_then(Value::as_array)
        .map_or(&[], |a| a);
    let exception = v.str_of("exception").filter(|e| !e.is_empty());
    let mut resources = Vec::new();
    let mut ok_resources = Vec::new();
    let mut updated_keys = BTreeSet::new();
    for r in updated.iter().take(MAX_RESOURCES) {
        let (kind, title, action) = handler_resource(r);
        updated_keys.insert(format!("{kind}[{title}]"));
        resources.push(Resource {
            refresh: matches!(action.as_str(), "restart" | "reload") && kind.contains("service"),
            message: format!("{action} (updated)"),
            change: cut_to(&action, 128),
            kind: cut_to(&kind, 128),
            title: cut_to(&title, 512),
            outcome: ResourceOutcome::Changed,
            file: None,
            line: None,
        });
    }
    for r in all.iter().take(MAX_OK_RESOURCES) {
        let (kind, title, _) = handler_resource(r);
        let key = format!("{kind}[{title}]");
        if !updated_keys.contains(&key) {
            ok_resources.push(cut_to(&key, 512));
        }
    }
    let error = (!success).then(|| {
        let text = exception.clone().unwrap_or_else(|| "the run failed".into());
        let (class, message) = match text.split_once(": ") {
            Some((c, m)) if !c.contains(' ') => (c.to_string(), m.to_string()),
            _ => (String::new(), text),
        };
        RunError {
            class: cut_to(&class, 256),
            message: cut(&message),
        }
    });
    let run_id = v
        .str_of("run_id")
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| format!("{node}@{started_ms}"));
    let changed = resources.len() as u64;
    Ok(Run {
        key: format!("chef:{}", cut_to(&run_id, 128)),
        tool: Tool::Chef,
        node,
        started_ms,
        duration_ms: v.f64_of("elapsed_time").and_then(secs_to_ms),
        retrieval_ms: None,
        status: if !success {
            RunStatus::Failed
        } else if changed > 0 {
            RunStatus::Changed
        } else {
            RunStatus::Unchanged
        },
        environment: cut_to(
            &node_obj
                .str_of("chef_environment")
                .unwrap_or_else(|| "_default".into()),
            128,
        ),
        code_version: String::new(),
        noop: false,
        // The handler's file does not say which resource failed: the
        // exception is the run's.
        catalog_failed: !success,
        counts: Counts {
            total: all.len() as u64,
            changed,
            failed: 0,
            skipped: 0,
        },
        resources,
        ok_resources,
        logs: Vec::new(),
        error,
        tool_version: String::new(),
    })
}

/// (type, name, action) of a resource as Chef serializes it:
/// `{json_class: "Chef::Resource::File", instance_vars: {name, declared_type, action, ...}}`.
fn handler_resource(r: &Value) -> (String, String, String) {
    let vars = r.get("instance_vars").unwrap_or(r);
    let kind = vars
        .str_of("declared_type")
        .or_else(|| vars.str_of("resource_name"))
        .or_else(|| {
            r.str_of("json_class")
                .and_then(|c| c.rsplit("::").next().map(|s| s.to_ascii_lowercase()))
        })
        .unwrap_or_default();
    let title = vars
        .str_of("name")
        .or_else(|| vars.str_of("identity"))
        .unwrap_or_default();
    let action = match vars.get("action") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("+"),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    (kind, title, action)
}
