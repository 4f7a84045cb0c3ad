//! `gemba import`, `gemba problem` and `gemba market`: the review stage
//! from the command line, through a server's HTTP API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cli::{ImportArgs, MarketArgs, ProblemCommand, ServerArgs, WriteArgs};
use crate::client::Client;

/// Largest file `gemba import` reads; the server's own cap
/// (`[market] max_report_size`) may be lower and answers 413.
const MAX_FILE: u64 = 1 << 30;

fn files_under(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let meta = std::fs::metadata(&p).with_context(|| format!("cannot read {}", p.display()))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&p)
                .with_context(|| format!("cannot list {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|e| {
                    !e.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            entries.sort();
            stack.extend(entries.into_iter().rev());
        } else if meta.is_file() {
            out.push(p);
        }
    }
    Ok(out)
}

fn content_type(path: &Path, body: &[u8]) -> &'static str {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b'{') | Some(b'[')) || path.extension().is_some_and(|e| e == "json") {
        "application/json"
    } else {
        "application/x-yaml"
    }
}

pub fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let files = files_under(&args.paths)?;
    if files.is_empty() {
        bail!(
            "no files under {}",
            args.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let client = Client::new(&args.to, args.token.as_deref());
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files · {msg}")
            .expect("template is valid"),
    );
    let (mut accepted, mut duplicate, mut started) = (0u64, 0u64, 0u64);
    let mut rejected: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for f in &files {
        let outcome = (|| -> anyhow::Result<Result<Value, String>> {
            let size = std::fs::metadata(f)?.len();
            if size > MAX_FILE {
                return Ok(Err(format!("larger than {} MiB", MAX_FILE >> 20)));
            }
            let body = std::fs::read(f)?;
            let (status, answer) = client.send("/api/v1/reports", content_type(f, &body), &body)?;
            match status {
                200 => Ok(Ok(serde_json::from_str(&answer).unwrap_or_default())),
                401 => bail!("{}: HTTP 401: {}", args.to, Client::error_of(&answer)),
                503 => bail!("{}: HTTP 503: {}", args.to, Client::error_of(&answer)),
                s => Ok(Err(format!("HTTP {s}: {}", Client::error_of(&answer)))),
            }
        })();
        match outcome? {
            Ok(v) => {
                accepted += v["accepted"].as_u64().unwrap_or(0);
                duplicate += v["duplicate"].as_u64().unwrap_or(0);
                started += v["started"].as_u64().unwrap_or(0);
            }
            Err(why) => rejected.entry(why).or_default().push(f.clone()),
        }
        bar.set_message(format!(
            "{accepted} accepted, {duplicate} duplicate, {} rejected",
            rejected.values().map(Vec::len).sum::<usize>()
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n_rejected: usize = rejected.values().map(Vec::len).sum();
    println!(
        "{} files: {accepted} runs accepted, {duplicate} duplicate (already stored), {started} Chef run starts, {n_rejected} files rejected",
        files.len()
    );
    for (why, list) in &rejected {
        println!("  rejected {}× {why}", list.len());
        for f in list.iter().take(5) {
            println!("    {}", f.display());
        }
        if list.len() > 5 {
            println!("    … and {} more", list.len() - 5);
        }
    }
    if n_rejected > 0 {
        bail!("{n_rejected} of {} files were rejected", files.len());
    }
    Ok(())
}

fn reader(s: &ServerArgs) -> Client {
    let token = std::env::var("GEMBA_API_TOKEN").ok();
    Client::new(&s.from, token.as_deref())
}

fn line(p: &Value) -> String {
    format!(
        "{:<6} {:<9} {:<8} {:<17} {:>5.1}  {}\n       {} · {} node(s) · owner {} · cause {}",
        p["id"].as_str().unwrap_or(""),
        p["status"].as_str().unwrap_or(""),
        p["severity"].as_str().unwrap_or(""),
        p["kind"].as_str().unwrap_or(""),
        p["score"].as_f64().unwrap_or(0.0),
        p["title"].as_str().unwrap_or(""),
        p["why"].as_str().unwrap_or(""),
        p["nodes"],
        p["owner"].as_str().unwrap_or("—"),
        p["cause"].as_str().unwrap_or("unknown"),
    )
}

fn change(id: &str, write: &WriteArgs, body: Value) -> anyhow::Result<()> {
    let c = Client::new(&write.server.from, write.token.as_deref());
    let p: Value = c.post_json(&format!("/api/v1/problems/{}", urlencode(id)), &body)?;
    if write.server.json {
        println!("{p}");
    } else {
        println!("{}", line(&p));
    }
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn problem(cmd: ProblemCommand) -> anyhow::Result<()> {
    match cmd {
        ProblemCommand::List { all, server } => {
            let path = if all {
                "/api/v1/problems"
            } else {
                "/api/v1/problems?status=unresolved"
            };
            let c = reader(&server);
            if server.json {
                println!("{}", c.get_raw(path)?);
                return Ok(());
            }
            let v: Value = c.get(path)?;
            let list = v["problems"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no problems");
            }
            for p in &list {
                println!("{}", line(p));
            }
            Ok(())
        }
        ProblemCommand::Show { id, server } => {
            let c = reader(&server);
            let path = format!("/api/v1/problems/{}", urlencode(&id));
            if server.json {
                println!("{}", c.get_raw(&path)?);
                return Ok(());
            }
            let p: Value = c.get(&path)?;
            println!("{}", line(&p));
            println!(
                "       first seen {} · last seen {} · {} occurrence(s)",
                p["first_seen"].as_str().unwrap_or(""),
                p["last_seen"].as_str().unwrap_or(""),
                p["occurrences"]
            );
            let s = &p["sample"];
            println!(
                "       sample: {} {} {}{}",
                s["node"].as_str().unwrap_or(""),
                s["resource"].as_str().unwrap_or(""),
                s["message"].as_str().unwrap_or(""),
                match (s["file"].as_str(), s["line"].as_u64()) {
                    (Some(f), Some(l)) => format!(" (at {f}:{l})"),
                    _ => String::new(),
                }
            );
            if let Some(nodes) = p["affected"].as_object() {
                println!(
                    "       nodes: {}",
                    nodes.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            for n in p["notes"].as_array().into_iter().flatten() {
                println!("       note: {}", n["text"].as_str().unwrap_or(""));
            }
            Ok(())
        }
        ProblemCommand::Assign { id, owner, write } => {
            change(&id, &write, json!({ "owner": owner }))
        }
        ProblemCommand::Note { id, text, write } => change(&id, &write, json!({ "note": text })),
        ProblemCommand::Cause { id, text, write } => change(&id, &write, json!({ "cause": text })),
    }
}

pub fn market(args: &MarketArgs) -> anyhow::Result<()> {
    let token = std::env::var("GEMBA_API_TOKEN").ok();
    let c = Client::new(&args.from, token.as_deref());
    let date = args
        .date
        .as_deref()
        .map(|d| format!("date={}&", urlencode(d)))
        .unwrap_or_default();
    let text = match args.format.as_str() {
        "text" | "md" | "json" => {
            c.get_raw(&format!("/api/v1/market?{date}format={}", args.format))?
        }
        "html" => c.get_raw(&format!("/market?{date}"))?,
        other => bail!("--format {other:?} is not text, md, json or html"),
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(())
}
