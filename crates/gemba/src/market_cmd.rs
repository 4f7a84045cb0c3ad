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

/// What became of one file.
enum Sent {
    /// Stored (or recognised as stored before): the server's counts.
    Answered(Value),
    /// The server read it and refused it: why.
    Refused(String),
    /// Not delivered: the server stayed unavailable or unreachable (why).
    Unsent(String),
}

/// Whether an answer means "not now, try again".
fn try_again(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// Sends one report, again and again while the server is unavailable,
/// until `deadline`; `Err` stops the whole import (a token refused).
fn send_report(
    client: &Client,
    args: &ImportArgs,
    f: &Path,
    deadline: std::time::Instant,
    say: &mut dyn FnMut(&str),
) -> anyhow::Result<Sent> {
    let size = std::fs::metadata(f)?.len();
    if size > MAX_FILE {
        return Ok(Sent::Refused(format!("larger than {} MiB", MAX_FILE >> 20)));
    }
    let body = std::fs::read(f)?;
    let mut wait = std::time::Duration::from_millis(500);
    let mut waiting_since: Option<std::time::Instant> = None;
    loop {
        let why = match client.send("/api/v1/reports", content_type(f, &body), &body) {
            Ok((200, answer)) => {
                if let Some(since) = waiting_since {
                    say(&format!(
                        "the server takes reports again (after {} s)",
                        since.elapsed().as_secs()
                    ));
                }
                return Ok(Sent::Answered(
                    serde_json::from_str(&answer).unwrap_or_default(),
                ));
            }
            Ok((401, answer)) => bail!(
                "{}: HTTP 401: {} (nothing more is sent)",
                args.to,
                Client::error_of(&answer)
            ),
            Ok((s, answer)) if try_again(s) => format!("HTTP {s}: {}", Client::error_of(&answer)),
            Ok((s, answer)) => {
                return Ok(Sent::Refused(format!(
                    "HTTP {s}: {}",
                    Client::error_of(&answer)
                )))
            }
            Err(e) => format!("{e:#}"),
        };
        let now = std::time::Instant::now();
        if now + wait > deadline {
            return Ok(Sent::Unsent(why));
        }
        if waiting_since.is_none() {
            waiting_since = Some(now);
            say(&format!(
                "the server is unavailable ({why}); sending again for up to {} s",
                deadline.saturating_duration_since(now).as_secs()
            ));
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(std::time::Duration::from_secs(10));
    }
}

/// `gemba import`: every report file under the paths, one by one. A server
/// that is unavailable is waited for (`--retry-for`); re-running is safe,
/// since the server knows a run it has stored. Exits non-zero only when
/// something remains unsent.
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
    // Without a terminal the bar draws nothing: counts go to stderr as
    // lines, every 10 s.
    let lines = bar.is_hidden();
    let mut said = std::time::Instant::now();
    let (mut accepted, mut duplicate, mut started) = (0u64, 0u64, 0u64);
    let mut refused: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut unsent: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut deadline = std::time::Instant::now() + args.retry_for;
    let mut stopped: Option<anyhow::Error> = None;
    for (i, f) in files.iter().enumerate() {
        let mut say = |text: &str| {
            if lines {
                eprintln!("gemba import: {text}");
            } else {
                bar.println(format!("gemba import: {text}"));
            }
        };
        match send_report(&client, args, f, deadline, &mut say) {
            Ok(Sent::Answered(v)) => {
                accepted += v["accepted"].as_u64().unwrap_or(0);
                duplicate += v["duplicate"].as_u64().unwrap_or(0);
                started += v["started"].as_u64().unwrap_or(0);
                // The server answers again: a later outage gets its own time.
                deadline = std::time::Instant::now() + args.retry_for;
            }
            Ok(Sent::Refused(why)) => refused.entry(why).or_default().push(f.clone()),
            Ok(Sent::Unsent(why)) => unsent.entry(why).or_default().push(f.clone()),
            Err(e) => {
                for rest in &files[i..] {
                    unsent
                        .entry("not sent: the import stopped".into())
                        .or_default()
                        .push(rest.clone());
                }
                stopped = Some(e);
                break;
            }
        }
        let counts = format!(
            "{accepted} accepted, {duplicate} duplicate, {} refused, {} unsent",
            refused.values().map(Vec::len).sum::<usize>(),
            unsent.values().map(Vec::len).sum::<usize>()
        );
        if lines && said.elapsed() >= std::time::Duration::from_secs(10) {
            eprintln!("gemba import: {}/{} files: {counts}", i + 1, files.len());
            said = std::time::Instant::now();
        }
        bar.set_message(counts);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n_refused: usize = refused.values().map(Vec::len).sum();
    let n_unsent: usize = unsent.values().map(Vec::len).sum();
    println!(
        "{} files: {accepted} runs accepted, {duplicate} duplicate (already stored), {started} Chef run starts, {n_refused} files refused, {n_unsent} unsent",
        files.len()
    );
    for (label, groups) in [("refused", &refused), ("unsent", &unsent)] {
        for (why, list) in groups {
            println!("  {label} {}× {why}", list.len());
            for f in list.iter().take(5) {
                println!("    {}", f.display());
            }
            if list.len() > 5 {
                println!("    … and {} more", list.len() - 5);
            }
        }
    }
    println!("Re-running the same import is safe: runs the server has stored are counted as duplicates, not stored twice.");
    if let Some(e) = stopped {
        return Err(e.context(format!("{n_unsent} of {} files unsent", files.len())));
    }
    if n_unsent > 0 {
        bail!(
            "{n_unsent} of {} files unsent: the server stayed unavailable for --retry-for ({} s); run the import again",
            files.len(),
            args.retry_for.as_secs()
        );
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

/// `gemba node retire NODE`.
pub fn retire(node: &str, write: &WriteArgs) -> anyhow::Result<()> {
    let c = Client::new(&write.server.from, write.token.as_deref());
    let v: Value = c.post_json(
        &format!("/api/v1/market/nodes/{}/retire", urlencode(node)),
        &json!({}),
    )?;
    if write.server.json {
        println!("{v}");
        return Ok(());
    }
    let changed = v["problems"].as_array().cloned().unwrap_or_default();
    println!("retired {node}: it left {} open problem(s)", changed.len());
    for p in &changed {
        println!(
            "  {} {}: {}",
            p["id"].as_str().unwrap_or(""),
            p["status"].as_str().unwrap_or(""),
            p["title"].as_str().unwrap_or("")
        );
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
        ProblemCommand::List {
            all,
            node,
            environment,
            kind,
            severity,
            server,
        } => {
            let mut pairs: Vec<(&str, String)> = Vec::new();
            if !all {
                pairs.push(("status", "unresolved".into()));
            }
            for (k, v) in [
                ("node", node),
                ("environment", environment),
                ("kind", kind),
                ("severity", severity),
            ] {
                if let Some(v) = v {
                    pairs.push((k, v));
                }
            }
            let path = format!(
                "/api/v1/problems?{}",
                crate::event_cmd::query_string(&pairs)
            );
            let path = path.as_str();
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
            for d in s["detail"].as_array().into_iter().flatten() {
                println!("         | {}", d.as_str().unwrap_or(""));
            }
            if let Some(hidden) = s["detail"].as_str() {
                println!("         ({hidden})");
            }
            if let Some(nodes) = p["affected"].as_array().filter(|n| !n.is_empty()) {
                let names: Vec<&str> = nodes.iter().filter_map(|n| n.as_str()).collect();
                println!("       nodes: {}", names.join(", "));
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
        ProblemCommand::Close { id, reason, write } => {
            change(&id, &write, json!({ "close": reason }))
        }
        ProblemCommand::Reopen { id, write } => change(&id, &write, json!({ "reopen": true })),
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
        // HTML is the export: one file, links absolute from the server's
        // [market] base_url.
        "text" | "md" | "json" | "html" => {
            c.get_raw(&format!("/api/v1/market?{date}format={}", args.format))?
        }
        other => bail!("--format {other:?} is not text, md, json or html"),
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(())
}
