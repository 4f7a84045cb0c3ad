//! `gemba event add` and `gemba event list`: change events through a
//! server's HTTP API.

use anyhow::bail;
use serde_json::{json, Value};

use crate::cli::{ChartArgs, ChartSelect, EventCommand, LogsArgs, SendChartArgs};
use crate::client::Client;

/// A time the user typed: a duration back from now (`10m`) becomes RFC
/// 3339 here, so the server reads one clock; anything else goes as typed
/// and the server names what is wrong with it.
fn time_arg(t: &str) -> Value {
    if let Ok(d) = t
        .trim_start_matches('-')
        .parse::<gemba_core::HumanDuration>()
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let at = now.saturating_sub(d.0);
        return json!(at.as_secs_f64());
    }
    match t.parse::<f64>() {
        Ok(n) => json!(n),
        Err(_) => json!(t),
    }
}

pub(crate) fn query_string(pairs: &[(&str, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

fn print_event(e: &Value) {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    let tags: Vec<&str> = e["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let end = e["end"]
        .as_str()
        .map(|x| format!(" → {x}"))
        .unwrap_or_default();
    println!(
        "{:<6} {}{end}  {:<10} {}",
        e["id"],
        s("when"),
        s("kind"),
        s("what")
    );
    let mut more = Vec::new();
    if !tags.is_empty() {
        more.push(tags.join(" "));
    }
    if !s("author").is_empty() {
        more.push(format!("by {}", s("author")));
    }
    if !s("link").is_empty() {
        more.push(s("link"));
    }
    if !more.is_empty() {
        println!("       {}", more.join(" · "));
    }
}

pub fn event(cmd: EventCommand) -> anyhow::Result<()> {
    match cmd {
        EventCommand::Add {
            what,
            kind,
            tags,
            when,
            end,
            text,
            author,
            link,
            write,
        } => {
            let mut body = json!({ "what": what, "tags": tags });
            if let Some(k) = kind {
                body["kind"] = json!(k);
            }
            if let Some(w) = when {
                body["when"] = time_arg(&w);
            }
            if let Some(e) = end {
                body["end"] = time_arg(&e);
            }
            if let Some(t) = text {
                body["text"] = json!(t);
            }
            let author = author.or_else(|| std::env::var("USER").ok());
            if let Some(a) = author {
                body["author"] = json!(a);
            }
            if let Some(l) = link {
                body["link"] = json!(l);
            }
            let client = Client::new(&write.server.from, write.token.as_deref());
            let (status, answer) = client.send(
                "/api/v1/events",
                "application/json",
                body.to_string().as_bytes(),
            )?;
            if status != 201 {
                bail!(
                    "{}/api/v1/events: HTTP {status}: {}",
                    write.server.from.trim_end_matches('/'),
                    Client::error_of(&answer)
                );
            }
            if write.server.json {
                println!("{answer}");
            } else {
                let e: Value = serde_json::from_str(&answer)?;
                print_event(&e);
            }
            Ok(())
        }
        EventCommand::List {
            since,
            until,
            tags,
            kind,
            limit,
            server,
        } => {
            let mut pairs = Vec::new();
            for (k, v) in [("since", since), ("until", until), ("kind", kind)] {
                if let Some(v) = v {
                    pairs.push((k, v));
                }
            }
            if let Some(l) = limit {
                pairs.push(("limit", l.to_string()));
            }
            for t in tags {
                pairs.push(("tag", t));
            }
            let client = Client::new(&server.from, None);
            let path = format!("/api/v1/events?{}", query_string(&pairs));
            let raw = client.get_raw(&path)?;
            if server.json {
                println!("{raw}");
                return Ok(());
            }
            let v: Value = serde_json::from_str(&raw)?;
            let events = v["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                println!("no events");
            }
            for e in &events {
                print_event(e);
            }
            Ok(())
        }
    }
}

/// The query string of a chart.
fn chart_query(a: &ChartSelect) -> String {
    let mut pairs: Vec<(&str, String)> = vec![
        ("metric", a.metric.clone()),
        ("since", a.since.clone()),
        ("width", a.width.to_string()),
        ("height", a.height.to_string()),
    ];
    for n in &a.node {
        pairs.push(("node", n.clone()));
    }
    if a.process.is_empty() {
        pairs.push(("process", "host".into()));
    }
    for p in &a.process {
        pairs.push(("process", p.clone()));
    }
    if let Some(u) = &a.until {
        pairs.push(("until", u.clone()));
    }
    if let Some(e) = &a.events {
        pairs.push(("events", e.clone()));
    }
    for t in &a.tags {
        pairs.push(("tag", t.clone()));
    }
    query_string(&pairs)
}

/// Fails, naming what is missing, when the server stores no series the
/// chart could draw: a node, process or metric that does not exist is an
/// error a script sees, not an empty chart.
fn require_series(a: &ChartSelect) -> anyhow::Result<()> {
    let mut pairs: Vec<(&str, String)> = a.node.iter().map(|n| ("node", n.clone())).collect();
    if a.process.is_empty() {
        pairs.push(("process", "host".into()));
    }
    pairs.extend(a.process.iter().map(|p| ("process", p.clone())));
    let client = Client::new(&a.from, None);
    let raw = client.get_raw(&format!("/api/v1/series?{}", query_string(&pairs)))?;
    let v: Value = serde_json::from_str(&raw)?;
    let stored = v["series"].as_array().cloned().unwrap_or_default();
    if stored.iter().any(|s| s["metric"] == a.metric.as_str()) {
        return Ok(());
    }
    let processes = if a.process.is_empty() {
        "the host".to_string()
    } else {
        format!("process {}", a.process.join(", "))
    };
    let nodes = if a.node.is_empty() {
        "any node".to_string()
    } else {
        format!("node {}", a.node.join(", "))
    };
    let mut known: Vec<&str> = stored.iter().filter_map(|s| s["metric"].as_str()).collect();
    known.sort();
    known.dedup();
    if known.is_empty() {
        bail!("no series is stored for {processes} on {nodes} (check the names: `curl {}/api/v1/series` lists every series)", a.from.trim_end_matches('/'));
    }
    bail!(
        "no series of metric {:?} for {processes} on {nodes}; stored there: {}",
        a.metric,
        known.join(", ")
    )
}

/// `gemba chart`: asks the server for the drawing and writes it.
pub fn chart(a: &ChartArgs) -> anyhow::Result<()> {
    require_series(&a.select)?;
    let (ext, out) = match (&a.png, &a.svg) {
        (Some(p), _) => ("png", p),
        (None, Some(s)) => ("svg", s),
        (None, None) => bail!("say where to write the chart: --png FILE or --svg FILE"),
    };
    let url = format!(
        "{}/api/v1/chart.{ext}?{}",
        a.select.from.trim_end_matches('/'),
        chart_query(&a.select)
    );
    let mut r = ureq::get(&url)
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}"))?;
    let status = r.status().as_u16();
    let body = r
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()
        .map_err(|e| anyhow::anyhow!("cannot read the answer of {url}: {e}"))?;
    if status != 200 {
        bail!(
            "{url}: HTTP {status}: {}",
            Client::error_of(&String::from_utf8_lossy(&body))
        );
    }
    std::fs::write(out, &body)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    println!("{} ({} bytes)", out.display(), body.len());
    Ok(())
}

/// `gemba send-chart`: the server draws the chart and sends it.
pub fn send_chart(a: &SendChartArgs) -> anyhow::Result<()> {
    require_series(&a.select)?;
    let client = Client::new(&a.select.from, a.token.as_deref());
    let path = format!("/api/v1/chart/send?{}", chart_query(&a.select));
    let body = json!({"to": a.to, "note": a.note, "logs": a.logs});
    let (status, answer) = client.send(&path, "application/json", body.to_string().as_bytes())?;
    if status != 200 {
        bail!(
            "{}{path}: HTTP {status}: {}",
            a.select.from.trim_end_matches('/'),
            Client::error_of(&answer)
        );
    }
    let v: Value = serde_json::from_str(&answer)?;
    println!(
        "sent to {} target(s){}",
        v["sent"],
        v["failed"]
            .as_array()
            .filter(|f| !f.is_empty())
            .map(|f| format!(
                "; failed: {}",
                f.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
            .unwrap_or_default()
    );
    Ok(())
}

/// `gemba logs`: a node's log lines, file by file.
pub fn logs(a: &LogsArgs) -> anyhow::Result<()> {
    let mut pairs = vec![("since", a.since.clone()), ("limit", a.limit.to_string())];
    if let Some(n) = &a.node {
        pairs.push(("node", n.clone()));
    }
    if let Some(p) = &a.process {
        pairs.push(("process", p.clone()));
    }
    if let Some(u) = &a.until {
        pairs.push(("until", u.clone()));
    }
    let client = Client::new(&a.server.from, a.token.as_deref());
    let raw = client.get_raw(&format!("/api/v1/logs?{}", query_string(&pairs)))?;
    if a.server.json {
        println!("{raw}");
        return Ok(());
    }
    let v: Value = serde_json::from_str(&raw)?;
    let excerpts = v["excerpts"].as_array().cloned().unwrap_or_default();
    if excerpts.is_empty() {
        // Nothing by that name: an error, so that scripts notice.
        let node = a.node.as_deref().unwrap_or("that node");
        match &a.process {
            Some(p) => anyhow::bail!("no [[process]] named {p:?} with log files on {node}"),
            None => anyhow::bail!("no [[process]] log files on {node}"),
        }
    }
    for e in &excerpts {
        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
        let mut head = format!("== {} {} on {}", s("process"), s("file"), s("node"));
        if let Some(u) = e["unavailable"].as_str() {
            head.push_str(&format!(" (unavailable: {u})"));
        }
        if let Some(m) = e["more"].as_u64().filter(|m| *m > 0) {
            head.push_str(&format!(" ({m} older lines left out; --limit shows more)"));
        }
        println!("{head}");
        for l in e["lines"].as_array().into_iter().flatten() {
            let at = l["at_ms"].as_u64().unwrap_or(0);
            println!(
                "{}  {}",
                gemba_timeline::event::format_ms(at),
                l["text"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}
