//! `gemba incident`: incidents on a running server.

use anyhow::bail;
use serde_json::{json, Value};

use crate::cli::IncidentCommand;
use crate::client::Client;

fn line(i: &Value) -> String {
    format!(
        "I-{:<4} {:<6} {:<8} {}  opened {}{}",
        i["id"],
        i["status"].as_str().unwrap_or(""),
        i["severity"].as_str().unwrap_or(""),
        i["title"].as_str().unwrap_or(""),
        i["opened"].as_str().unwrap_or(""),
        i["closed"]
            .as_str()
            .map(|c| format!(", closed {c}"))
            .unwrap_or_default()
    )
}

pub(crate) fn id_path(id: &str) -> anyhow::Result<String> {
    let n: u64 = id
        .trim_start_matches(['I', 'i', '-'])
        .parse()
        .map_err(|_| anyhow::anyhow!("{id:?} is not an incident id (12 or I-12)"))?;
    Ok(format!("/api/v1/incidents/{n}"))
}

pub(crate) fn write(client: &Client, path: &str, body: Value, base: &str) -> anyhow::Result<Value> {
    let (status, answer) = client.send(path, "application/json", body.to_string().as_bytes())?;
    if status != 200 && status != 201 {
        bail!(
            "{}{path}: HTTP {status}: {}",
            base.trim_end_matches('/'),
            Client::error_of(&answer)
        );
    }
    Ok(serde_json::from_str(&answer)?)
}

pub fn run(command: IncidentCommand) -> anyhow::Result<()> {
    match command {
        IncidentCommand::List { open, server } => {
            let client = Client::new(&server.from, None);
            let raw = client.get_raw(&format!("/api/v1/incidents?open={open}"))?;
            if server.json {
                println!("{raw}");
                return Ok(());
            }
            let v: Value = serde_json::from_str(&raw)?;
            let all = v["incidents"].as_array().cloned().unwrap_or_default();
            if all.is_empty() {
                println!("no incidents");
            }
            for i in &all {
                println!("{}", line(i));
            }
        }
        IncidentCommand::Show { id, server } => {
            let client = Client::new(&server.from, None);
            let raw = client.get_raw(&id_path(&id)?)?;
            if server.json {
                println!("{raw}");
                return Ok(());
            }
            let i: Value = serde_json::from_str(&raw)?;
            println!("{}", line(&i));
            if let Some(s) = i["summary"].as_str().filter(|s| !s.is_empty()) {
                println!("{s}");
            }
            let scopes: Vec<&str> = i["scopes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            println!("scopes: {}", scopes.join(" "));
            println!("timeline:");
            for e in i["timeline"].as_array().into_iter().flatten() {
                println!(
                    "  {}  {:<10} {}",
                    e["at"].as_str().unwrap_or(""),
                    e["source"].as_str().unwrap_or(""),
                    e["text"].as_str().unwrap_or("")
                );
            }
        }
        IncidentCommand::Open {
            title,
            severity,
            summary,
            node,
            write: w,
        } => {
            let client = Client::new(&w.server.from, w.token.as_deref());
            let v = write(
                &client,
                "/api/v1/incidents",
                json!({"title": title, "severity": severity, "summary": summary, "nodes": node}),
                &w.server.from,
            )?;
            println!("opened {}", line(&v));
        }
        IncidentCommand::Edit {
            id,
            title,
            severity,
            summary,
            write: w,
        } => {
            let client = Client::new(&w.server.from, w.token.as_deref());
            let mut body = json!({});
            for (k, v) in [
                ("title", title),
                ("severity", severity),
                ("summary", summary),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            let v = write(&client, &id_path(&id)?, body, &w.server.from)?;
            println!("{}", line(&v));
        }
        IncidentCommand::Close { id, write: w } => {
            let client = Client::new(&w.server.from, w.token.as_deref());
            let v = write(
                &client,
                &id_path(&id)?,
                json!({"closed": true}),
                &w.server.from,
            )?;
            println!("{}", line(&v));
        }
    }
    Ok(())
}
