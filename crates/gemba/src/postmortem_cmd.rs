//! `gemba postmortem` and `gemba actions`: post-mortems on a running
//! server.

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cli::{ActionsCommand, PostmortemCommand};
use crate::client::Client;
use crate::incident_cmd::{id_path, write};

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn print(base: &str, pm: &Value) {
    println!(
        "post-mortem of I-{}: {} (takes changes until {})",
        pm["incident"],
        pm["phase"].as_str().unwrap_or(""),
        pm["expires"].as_str().unwrap_or("")
    );
    println!(
        "facilitator {}, note keeper {}, time keeper {}",
        pm["facilitator"].as_str().unwrap_or(""),
        pm["note_keeper"].as_str().unwrap_or(""),
        pm["time_keeper"].as_str().unwrap_or("")
    );
    if let Some(t) = pm["timer"].as_object() {
        println!(
            "timer: {} ({} min), ends {}",
            t["section"].as_str().unwrap_or(""),
            t["minutes"],
            t["ends"].as_str().unwrap_or("")
        );
    }
    let missing = strs(&pm["missing"]);
    println!(
        "shared: {} of {}{}",
        pm["participants"].as_array().map_or(0, Vec::len) - missing.len(),
        pm["participants"].as_array().map_or(0, Vec::len),
        if missing.is_empty() {
            String::new()
        } else {
            format!(" (not yet: {})", missing.join(", "))
        }
    );
    println!("proposals:");
    for p in pm["proposals"].as_array().into_iter().flatten() {
        println!(
            "  {:>2}. {} (by {})",
            p["id"],
            p["text"].as_str().unwrap_or(""),
            p["by"].as_str().unwrap_or("")
        );
    }
    if pm["phase"] != "round" {
        let not_voted = strs(&pm["not_voted"]);
        println!(
            "ballots: {} of {} cast{}",
            pm["ballots_cast"],
            pm["ballots"],
            if not_voted.is_empty() {
                String::new()
            } else {
                format!(" (not voted: {})", not_voted.join(", "))
            }
        );
    }
    if let Some(tally) = pm["tally"].as_array() {
        println!("tally:");
        for c in tally {
            println!(
                "  {:>3}  {}{}",
                c["approvals"],
                c["text"].as_str().unwrap_or(""),
                if c["winner"] == true {
                    "  (chosen)"
                } else {
                    ""
                }
            );
        }
    }
    let actions = pm["actions"].as_array().cloned().unwrap_or_default();
    if !actions.is_empty() {
        println!("action items:");
        for a in &actions {
            println!("  {}", action_line(a));
        }
    }
    println!(
        "page: {}/incidents/{}",
        base.trim_end_matches('/'),
        pm["incident"]
    );
}

fn action_line(a: &Value) -> String {
    format!(
        "A-{:<4} {}  owner {}{}{}  (I-{})",
        a["id"],
        a["text"].as_str().unwrap_or(""),
        a["owner"].as_str().unwrap_or(""),
        a["due"]
            .as_str()
            .map(|d| format!(", due {}", d.get(..10).unwrap_or(d)))
            .unwrap_or_default(),
        a["done"]
            .as_str()
            .map(|d| format!(", done {}", d.get(..10).unwrap_or(d)))
            .unwrap_or_default(),
        a["incident"]
    )
}

pub fn run(command: PostmortemCommand) -> anyhow::Result<()> {
    match command {
        PostmortemCommand::Start {
            id,
            facilitator,
            note_keeper,
            time_keeper,
            participant,
            open_for,
            write: w,
        } => {
            let client = Client::new(&w.server.from, w.token.as_deref());
            let mut body = json!({
                "facilitator": facilitator,
                "note_keeper": note_keeper,
                "time_keeper": time_keeper,
                "participants": participant,
            });
            if let Some(o) = open_for {
                body["open_for"] = json!(o);
            }
            let path = format!("{}/postmortem", id_path(&id)?);
            let v = write(&client, &path, body, &w.server.from)?;
            if w.server.json {
                println!("{v}");
                return Ok(());
            }
            println!(
                "post-mortem of I-{} started; hand each participant their link (shown only now; it works once, to claim the seat, and gives its holder a link of their own):",
                v["incident"]
            );
            for l in v["links"].as_array().into_iter().flatten() {
                println!(
                    "  {:<16} {}{}",
                    l["name"].as_str().unwrap_or(""),
                    w.server.from.trim_end_matches('/'),
                    l["path"].as_str().unwrap_or("")
                );
            }
        }
        PostmortemCommand::Show { id, write: w } => {
            let client = Client::new(&w.server.from, w.token.as_deref());
            let raw = client.get_raw(&format!("{}/postmortem", id_path(&id)?))?;
            if w.server.json {
                println!("{raw}");
                return Ok(());
            }
            print(&w.server.from, &serde_json::from_str(&raw)?);
        }
        PostmortemCommand::OpenVoting { id, write: w } => phase(&id, "voting", &w)?,
        PostmortemCommand::CloseVoting { id, write: w } => phase(&id, "closed", &w)?,
        PostmortemCommand::Action {
            id,
            proposal,
            owner,
            due,
            write: w,
        } => {
            let client = Client::new(&w.server.from, w.token.as_deref());
            let path = format!("{}/postmortem/actions", id_path(&id)?);
            let v = write(
                &client,
                &path,
                json!({"proposal": proposal, "owner": owner, "due": due}),
                &w.server.from,
            )?;
            println!("action item A-{} made of proposal {proposal}", v["id"]);
        }
        PostmortemCommand::Export { id, out, write: w } => {
            use base64::Engine;
            let client = Client::new(&w.server.from, w.token.as_deref());
            let raw = client.get_raw(&format!("{}/postmortem/export", id_path(&id)?))?;
            let v: Value = serde_json::from_str(&raw)?;
            let Some(md) = v["markdown"].as_str() else {
                bail!("the server sent no notes: {raw}");
            };
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let n = id.trim_start_matches(['I', 'i', '-']);
            let file = out.join(format!("postmortem-I-{n}.md"));
            std::fs::write(&file, md)
                .with_context(|| format!("cannot write {}", file.display()))?;
            println!("{}", file.display());
            for c in v["charts"].as_array().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or("");
                // Only the names the server makes (I-<incident>-chart-N.png):
                // nothing it sends may name a path outside `out`.
                let safe = name
                    .strip_prefix(&format!("I-{n}-chart-"))
                    .and_then(|r| r.strip_suffix(".png"));
                if !safe.is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())) {
                    bail!("the server named a chart {name:?}; expected I-{n}-chart-N.png");
                }
                let png = base64::engine::general_purpose::STANDARD
                    .decode(c["base64"].as_str().unwrap_or(""))
                    .context("a chart is not base64")?;
                let path = out.join(name);
                std::fs::write(&path, png)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("{}", path.display());
            }
        }
        PostmortemCommand::Send { id, to, write: w } => {
            let client = Client::new(&w.server.from, w.token.as_deref());
            let path = format!("{}/postmortem/send", id_path(&id)?);
            let v = write(&client, &path, json!({"to": to}), &w.server.from)?;
            println!(
                "sent to {} target(s) with {} chart(s){}",
                v["sent"],
                v["charts"],
                strs(&v["failed"])
                    .iter()
                    .map(|e| format!("\nfailed: {e}"))
                    .collect::<String>()
            );
        }
    }
    Ok(())
}

fn phase(id: &str, phase: &str, w: &crate::cli::WriteArgs) -> anyhow::Result<()> {
    let client = Client::new(&w.server.from, w.token.as_deref());
    let path = format!("{}/postmortem/change", id_path(id)?);
    let v = write(&client, &path, json!({"phase": phase}), &w.server.from)?;
    print(&w.server.from, &v);
    Ok(())
}

pub fn actions(command: ActionsCommand) -> anyhow::Result<()> {
    match command {
        ActionsCommand::List { all, server } => {
            let client = Client::new(&server.from, None);
            let raw = client.get_raw(&format!("/api/v1/actions?open={}", !all))?;
            if server.json {
                println!("{raw}");
                return Ok(());
            }
            let v: Value = serde_json::from_str(&raw)?;
            let list = v["actions"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no action items{}", if all { "" } else { " open" });
            }
            for a in &list {
                println!("{}", action_line(a));
            }
        }
        ActionsCommand::Done { id, write: w } => mark(&id, &w, true)?,
        ActionsCommand::Reopen { id, write: w } => mark(&id, &w, false)?,
    }
    Ok(())
}

/// Marks action item `id` done, or open again.
fn mark(id: &str, w: &crate::cli::WriteArgs, done: bool) -> anyhow::Result<()> {
    let client = Client::new(&w.server.from, w.token.as_deref());
    let n: u64 = id
        .trim_start_matches(['A', 'a', '-'])
        .parse()
        .map_err(|_| anyhow::anyhow!("{id:?} is not an action item id (3 or A-3)"))?;
    write(
        &client,
        &format!("/api/v1/actions/{n}"),
        json!({"done": done}),
        &w.server.from,
    )?;
    println!("A-{n} {}", if done { "done" } else { "open again" });
    Ok(())
}
