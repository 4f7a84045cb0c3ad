//! The convergence commands: `check`, `plan`, `simulate`, `escalations`,
//! `approve` and `ack`.

use std::io::BufReader;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use gemba_checks::{CheckResult, Status};
use gemba_escalator::engine::Plan;
use gemba_escalator::simulate;

use crate::cli::{AckArgs, ApproveArgs, CheckArgs, EscalationsArgs, ServerArgs, SimulateArgs};
use crate::client::{
    Acknowledged, Approved, Client, EscalationAnswer, EscalationsAnswer, GraphAnswer, PlanAnswer,
};

fn one_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > max {
        let mut t: String = line.chars().take(max - 1).collect();
        t.push('…');
        t
    } else {
        line.to_string()
    }
}

/// Formats results as a table.
pub fn render_checks(results: &[CheckResult]) -> String {
    let mut out = format!(
        "{:<24} {:<18} {:<9} {:>8}  {}\n",
        "CHECK", "SCOPE", "STATUS", "TIME", "OUTPUT"
    );
    for r in results {
        out.push_str(&format!(
            "{:<24} {:<18} {:<9} {:>6}ms  {}\n",
            r.check,
            r.scope.to_string(),
            r.status.as_str(),
            r.duration_ms,
            one_line(&r.output, 100)
        ));
    }
    out
}

/// The worst status, ranked as Nagios ranks them.
pub fn worst(results: &[CheckResult]) -> Status {
    results
        .iter()
        .map(|r| r.status)
        .max_by_key(|s| s.severity())
        .unwrap_or(Status::Unknown)
}

pub fn check(args: &CheckArgs) -> ExitCode {
    let config = match args.node.load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gemba: {e}");
            return ExitCode::from(64);
        }
    };
    if config.policy.checks.is_empty() {
        println!("UNKNOWN - no checks configured (add [[check]] sections to the config)");
        return ExitCode::from(3);
    }
    let me = gemba_node::entry_of(&config);
    let mut nodes = vec![me.clone()];
    let mut mesh = None;
    if let Some(from) = &args.from {
        match fetch_graph(from) {
            Ok((served_by, graph)) => {
                for n in &graph.nodes {
                    if n.id != me.id {
                        nodes.push(gemba_checks::placement::NodeEntry {
                            id: n.id.clone(),
                            addr: n
                                .addr
                                .rsplit_once(':')
                                .map(|(h, _)| h.to_string())
                                .unwrap_or_default(),
                            tiers: vec![],
                        });
                    }
                }
                mesh = Some(gemba_checks::MeshView {
                    graph: Arc::new(graph),
                    self_id: served_by,
                });
            }
            Err(e) => {
                eprintln!("gemba: {e:#}");
                return ExitCode::from(3);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let results = runtime.block_on(crate::check_once::run_once(
        &config.policy,
        &me,
        &nodes,
        mesh,
    ));
    if args.json {
        for r in &results {
            println!("{}", serde_json::to_string(r).expect("result serializes"));
        }
    } else {
        print!("{}", render_checks(&results));
    }
    ExitCode::from(worst(&results).code() as u8)
}

fn fetch_graph(from: &str) -> anyhow::Result<(String, gemba_mesh::Graph)> {
    let a: GraphAnswer = Client::new(from, None).get("/api/v1/graph")?;
    Ok((a.served_by, a.graph))
}

fn client(s: &ServerArgs, token: Option<&str>) -> Client {
    Client::new(&s.from, token)
}

fn time(ms: u64) -> String {
    let s = ms / 1000;
    let d = s % 86_400;
    format!("{:02}:{:02}:{:02}", d / 3600, d % 3600 / 60, d % 60)
}

pub fn render_plan(p: &Plan) -> String {
    let mut out = format!(
        "mode {}; {} scope(s) with failing checks\n",
        p.mode,
        p.scopes.len()
    );
    for s in &p.scopes {
        out.push_str(&format!(
            "\n{}\n  status:    {}{}\n",
            s.scope,
            s.status,
            s.at_ms
                .map(|t| format!(" (at {} UTC)", time(t)))
                .unwrap_or_default()
        ));
        if !s.chain.is_empty() {
            out.push_str(&format!("  would run: {}\n", s.chain.join(" → ")));
        }
        for c in &s.checks {
            let why = match &c.ignored {
                None => format!("requires level {}", c.level),
                Some(i) => format!("ignored: {}", i.as_str()),
            };
            out.push_str(&format!(
                "  because:   {} {} — {}\n",
                c.id,
                why,
                one_line(&c.output, 80)
            ));
        }
    }
    out
}

pub fn plan(args: &ServerArgs) -> anyhow::Result<()> {
    let c = client(args, None);
    if args.json {
        println!("{}", c.get_raw("/api/v1/plan")?);
        return Ok(());
    }
    let a: PlanAnswer = c.get("/api/v1/plan")?;
    print!("{}", render_plan(&a.plan));
    Ok(())
}

pub fn simulate(args: &SimulateArgs) -> anyhow::Result<()> {
    let config = gemba_core::Config::load(
        Some(&args.config),
        &gemba_core::Overrides {
            node_id: Some("simulation".into()),
            ..Default::default()
        },
    )?;
    let file = std::fs::File::open(&args.history)
        .with_context(|| format!("cannot open {}", args.history.display()))?;
    let history =
        simulate::read_history(&args.history.display().to_string(), BufReader::new(file))?;
    if history.is_empty() {
        bail!(
            "{}: no check results in the history",
            args.history.display()
        );
    }
    let unknown: Vec<&str> = history
        .iter()
        .map(|r| {
            r.check
                .split(gemba_checks::placement::MEMBER_SEPARATOR)
                .next()
                .unwrap_or("")
        })
        .filter(|c| config.policy.check(c).is_none())
        .collect();
    if let Some(c) = unknown.first() {
        bail!(
            "{}: check {c:?} is not in the policy of {}",
            args.history.display(),
            args.config.display()
        );
    }
    let policy = Arc::new(config.policy.clone());
    // The policy decides the level, not the recorded result.
    let history: Vec<CheckResult> = history
        .into_iter()
        .map(|mut r| {
            r.level = policy.check(&r.check).and_then(|c| c.level);
            r
        })
        .collect();
    let start = history[0].at_ms;
    let sim = simulate::replay(policy, &history, args.step_duration.as_millis() as u64);
    if args.json {
        for e in &sim.events {
            println!("{}", serde_json::to_string(e)?);
        }
        return Ok(());
    }
    println!(
        "{} results from {} over {} s; policy from {}\n",
        history.len(),
        args.history.display(),
        (history.last().map(|r| r.at_ms).unwrap_or(start) - start) / 1000,
        args.config.display()
    );
    for e in &sim.events {
        let esc = e.escalation.map(|i| format!("#{i}")).unwrap_or_default();
        println!(
            "+{:>6.1}s  {:<14} {:<4} {:<13} {}",
            (e.at_ms - start) as f64 / 1000.0,
            e.scope.to_string(),
            esc,
            e.kind,
            e.text
        );
    }
    println!("\n{} step(s) would run:", sim.runs.len());
    for r in &sim.runs {
        let name = config
            .policy
            .level(r.level)
            .map(|l| l.name.as_str())
            .unwrap_or("?");
        println!(
            "  +{:>6.1}s  escalation #{} attempt {} level {} ({name})",
            (r.at_ms - start) as f64 / 1000.0,
            r.escalation,
            r.attempt,
            r.level
        );
    }
    Ok(())
}

pub fn escalations(args: &EscalationsArgs) -> anyhow::Result<()> {
    // The token, when set, shows step output too.
    let token = std::env::var("GEMBA_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let c = client(&args.server, token.as_deref());
    if let Some(id) = args.id {
        let path = format!("/api/v1/escalations/{id}");
        if args.server.json {
            println!("{}", c.get_raw(&path)?);
            return Ok(());
        }
        let EscalationAnswer {
            escalation: esc,
            journal,
        } = c.get(&path)?;
        println!(
            "escalation {} · {} · {} · attempt {} · checks {}",
            esc.id,
            esc.scope,
            esc.phase.name(),
            esc.attempt,
            esc.checks.join(", ")
        );
        for j in journal {
            println!("  {} UTC  {:<13} {}", time(j.at_ms), j.kind, j.text);
        }
        for s in &esc.steps {
            println!(
                "\n  step: attempt {} level {} ({}) started {} UTC: {}",
                s.attempt,
                s.level,
                s.name,
                time(s.started_ms),
                s.outcome
                    .as_ref()
                    .map(|o| o.describe())
                    .unwrap_or_else(|| "running".into())
            );
            for line in s.output.lines().take(20) {
                println!("    | {line}");
            }
        }
        return Ok(());
    }
    if args.server.json {
        println!("{}", c.get_raw("/api/v1/escalations")?);
        return Ok(());
    }
    let list = c
        .get::<EscalationsAnswer>("/api/v1/escalations")?
        .escalations;
    if list.is_empty() {
        println!("no escalations");
        return Ok(());
    }
    println!(
        "{:>5}  {:<18} {:<18} {:>7}  {:<10} CHECKS",
        "ID", "SCOPE", "PHASE", "ATTEMPT", "OPENED"
    );
    for e in list {
        println!(
            "{:>5}  {:<18} {:<18} {:>7}  {:<10} {}",
            e.id,
            e.scope.to_string(),
            e.phase.name(),
            e.attempt,
            time(e.opened_ms),
            e.checks.join(", ")
        );
    }
    Ok(())
}

pub fn approve(args: &ApproveArgs) -> anyhow::Result<()> {
    let a: Approved = client(&args.server, args.token.as_deref())
        .post(&format!("/api/v1/escalations/{}/approve", args.id))?;
    println!("escalation {} approved", a.approved);
    Ok(())
}

pub fn ack(args: &AckArgs) -> anyhow::Result<()> {
    let scope: gemba_core::Scope = args.scope.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let a: Acknowledged =
        client(&args.server, args.token.as_deref()).post(&format!("/api/v1/scopes/{scope}/ack"))?;
    println!("{scope} acknowledged (escalation {})", a.acknowledged);
    Ok(())
}
