//! The check kinds and how one instance runs once.
//!
//! A check definition becomes one or more [`Instance`]s: its templates
//! filled for a node, a tier or nothing. Running an instance gives an
//! [`Observation`]: a Nagios status, its text and performance data.

use std::sync::Arc;
use std::time::Duration;

use gemba_core::graph::{Graph, LinkState, NodeState};
use gemba_core::{template, CheckDef, CheckKind, Scope};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::exec::{self, ExecEnd, ExecSpec};
use crate::nagios::{parse_output, Perf, Status};

/// A check with its templates filled for one scope.
#[derive(Clone, Debug)]
pub struct Instance {
    pub def: Arc<CheckDef>,
    pub scope: Scope,
    /// The tiers of the node it runs for (node scope), for supersession.
    pub tiers: Vec<String>,
    pub kind: CheckKind,
}

/// Values a template may use.
#[derive(Clone, Debug, Default)]
pub struct Vars {
    pub node: Option<String>,
    pub node_addr: Option<String>,
    pub tier: Option<String>,
}

impl Vars {
    fn pairs(&self) -> Vec<(&str, &str)> {
        let mut v = Vec::new();
        if let Some(n) = &self.node {
            v.push(("node", n.as_str()));
        }
        if let Some(a) = &self.node_addr {
            v.push(("node_addr", a.as_str()));
        }
        if let Some(t) = &self.tier {
            v.push(("tier", t.as_str()));
        }
        v
    }
}

impl Instance {
    pub fn new(def: Arc<CheckDef>, scope: Scope, tiers: Vec<String>, vars: &Vars) -> Instance {
        let p = vars.pairs();
        let r = |s: &String| template::render(s, &p);
        let kind = match &def.kind {
            CheckKind::Tcp { host, port } => CheckKind::Tcp {
                host: r(host),
                port: *port,
            },
            CheckKind::Http {
                url,
                expect_status,
                body_contains,
                tls_ca_file,
                tls_warn_days,
                tls_crit_days,
            } => CheckKind::Http {
                url: r(url),
                expect_status: *expect_status,
                body_contains: body_contains.as_ref().map(r),
                tls_ca_file: tls_ca_file.clone(),
                tls_warn_days: *tls_warn_days,
                tls_crit_days: *tls_crit_days,
            },
            CheckKind::Command { argv } => CheckKind::Command {
                argv: argv.iter().map(r).collect(),
            },
            CheckKind::Process {
                name,
                pidfile,
                max_rss_mb,
                max_fds,
                max_threads,
            } => CheckKind::Process {
                name: name.clone(),
                pidfile: pidfile.as_ref().map(r),
                max_rss_mb: *max_rss_mb,
                max_fds: *max_fds,
                max_threads: *max_threads,
            },
            CheckKind::Metric { .. } => def.kind.clone(),
            CheckKind::MeshNode { node } => CheckKind::MeshNode { node: r(node) },
            CheckKind::MeshLink { source, target } => CheckKind::MeshLink {
                source: r(source),
                target: r(target),
            },
        };
        Instance {
            def,
            scope,
            tiers,
            kind,
        }
    }

    /// `check@scope`, unique per instance.
    pub fn id(&self) -> String {
        format!("{}@{}", self.def.name, self.scope)
    }
}

/// One run's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub status: Status,
    pub output: String,
    pub perf: Vec<Perf>,
    pub duration_ms: u64,
    /// False when the verdict comes from an observer the mesh does not
    /// trust (an isolated node): shown, never acted on.
    pub trusted: bool,
}

/// The grid as the evaluating node sees it, for mesh checks.
#[derive(Clone)]
pub struct MeshView {
    pub graph: Arc<Graph>,
    pub self_id: String,
}

/// Runs `instance` once. `samples`: this node's recent metric samples,
/// for metric checks (on agents).
pub async fn run(
    instance: &Instance,
    mesh: Option<&MeshView>,
    samples: Option<&gemba_core::metrics::RecentSamples>,
) -> Observation {
    let started = Instant::now();
    let timeout = instance.def.timeout;
    let (status, output, perf, trusted) = match &instance.kind {
        CheckKind::Tcp { host, port } => {
            let (s, o, p) = tcp(host, *port, timeout).await;
            (s, o, p, true)
        }
        CheckKind::Http {
            url,
            expect_status,
            body_contains,
            tls_ca_file,
            tls_warn_days,
            tls_crit_days,
        } => {
            let (s, o, p) = crate::http::probe(crate::http::HttpProbe {
                url,
                expect_status: *expect_status,
                body_contains: body_contains.as_deref(),
                ca_file: tls_ca_file.as_deref(),
                warn_days: *tls_warn_days,
                crit_days: *tls_crit_days,
                timeout,
            })
            .await;
            (s, o, p, true)
        }
        CheckKind::Command { argv } => {
            let (s, o, p) = command(argv, timeout).await;
            (s, o, p, true)
        }
        CheckKind::Process { .. } => {
            let kind = instance.kind.clone();
            let r = tokio::task::spawn_blocking(move || crate::process::check(&kind)).await;
            let (s, o, p) = r.unwrap_or_else(|e| {
                (
                    Status::Unknown,
                    format!("process check failed: {e}"),
                    vec![],
                )
            });
            (s, o, p, true)
        }
        CheckKind::Metric { .. } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let (s, o, p) = crate::metric::check(
                &instance.kind,
                samples,
                now,
                instance.def.interval.as_millis() as u64,
            );
            (s, o, p, true)
        }
        CheckKind::MeshNode { node } => mesh_node(node, mesh),
        CheckKind::MeshLink { source, target } => mesh_link(source, target, mesh),
    };
    Observation {
        status,
        output,
        perf,
        duration_ms: started.elapsed().as_millis() as u64,
        trusted,
    }
}

type Verdict = (Status, String, Vec<Perf>);

async fn tcp(host: &str, port: u16, timeout: Duration) -> Verdict {
    let started = Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => {
            let secs = started.elapsed().as_secs_f64();
            (
                Status::Ok,
                format!("TCP OK - {secs:.3} second response time on {host} port {port}"),
                vec![Perf {
                    label: "time".into(),
                    value: secs,
                    uom: "s".into(),
                    warn: None,
                    crit: None,
                    min: Some(0.0),
                    max: Some(timeout.as_secs_f64()),
                }],
            )
        }
        Ok(Err(e)) => (
            Status::Critical,
            format!("TCP CRITICAL - {host} port {port}: {e}"),
            vec![],
        ),
        Err(_) => (
            Status::Critical,
            format!(
                "TCP CRITICAL - no connection to {host} port {port} within {:.1} s",
                timeout.as_secs_f64()
            ),
            vec![],
        ),
    }
}

async fn command(argv: &[String], timeout: Duration) -> Verdict {
    let o = exec::run(&ExecSpec {
        argv: argv.to_vec(),
        env: vec![],
        timeout,
        stdin: None,
    })
    .await;
    let (text, perf) = parse_output(&o.stdout);
    let with_trunc = |t: String| {
        if o.truncated {
            format!("{t} [output truncated]")
        } else {
            t
        }
    };
    match &o.end {
        ExecEnd::Exited(code) => {
            let mut text = text;
            if text.is_empty() {
                text = o.stderr.lines().next().unwrap_or("(no output)").to_string();
            }
            (Status::from_exit(*code), with_trunc(text), perf)
        }
        ExecEnd::Signalled(s) => (
            Status::Unknown,
            format!("plugin killed by signal {s}"),
            perf,
        ),
        ExecEnd::TimedOut => (
            Status::Unknown,
            format!(
                "plugin timed out after {:.1} s and was killed with its process group",
                timeout.as_secs_f64()
            ),
            perf,
        ),
        ExecEnd::NotStarted(e) => (Status::Unknown, e.clone(), vec![]),
    }
}

fn isolated_self(view: &MeshView) -> bool {
    view.graph
        .node(&view.self_id)
        .is_some_and(|n| n.state == NodeState::Isolated)
}

fn mesh_node(node: &str, mesh: Option<&MeshView>) -> (Status, String, Vec<Perf>, bool) {
    let Some(view) = mesh else {
        return (
            Status::Unknown,
            "mesh checks need a running node (see `gemba plan`)".into(),
            vec![],
            false,
        );
    };
    let trusted = !isolated_self(view);
    let Some(n) = view.graph.node(node) else {
        return (
            Status::Unknown,
            format!("node {node} is not in the grid"),
            vec![],
            trusted,
        );
    };
    let votes = format!(
        "{} of {} observers cannot reach it",
        n.down_votes, n.observers
    );
    let (status, word) = match n.state {
        NodeState::Up => (Status::Ok, "up"),
        NodeState::Degraded => (Status::Warning, "degraded"),
        NodeState::Down => (Status::Critical, "down"),
        NodeState::Isolated => (Status::Warning, "isolated (it cannot reach most peers)"),
        NodeState::Unknown => (Status::Unknown, "unknown"),
    };
    let note = if trusted {
        ""
    } else {
        " [this observer is isolated: not trusted]"
    };
    (
        status,
        format!("node {node} is {word}: {votes}{note}"),
        vec![],
        trusted,
    )
}

fn mesh_link(
    source: &str,
    target: &str,
    mesh: Option<&MeshView>,
) -> (Status, String, Vec<Perf>, bool) {
    let Some(view) = mesh else {
        return (
            Status::Unknown,
            "mesh checks need a running node (see `gemba plan`)".into(),
            vec![],
            false,
        );
    };
    let source_isolated = view
        .graph
        .node(source)
        .is_some_and(|n| n.state == NodeState::Isolated);
    let trusted = !isolated_self(view) && !source_isolated;
    let Some(e) = view.graph.edge(source, target) else {
        return (
            Status::Unknown,
            format!("no link {source} -> {target} in the grid"),
            vec![],
            trusted,
        );
    };
    let status = match e.state {
        LinkState::Up => Status::Ok,
        LinkState::Degraded => Status::Warning,
        LinkState::Down => Status::Critical,
        LinkState::Unknown | LinkState::Stale => Status::Unknown,
    };
    let mut perf = Vec::new();
    if let Some(p99) = e.rtt_p99_ms {
        perf.push(Perf {
            label: "rtt_p99".into(),
            value: p99,
            uom: "ms".into(),
            warn: None,
            crit: None,
            min: Some(0.0),
            max: None,
        });
    }
    if e.flows_probed > 0 {
        perf.push(Perf {
            label: "failing_flows".into(),
            value: f64::from(e.flows_failing),
            uom: String::new(),
            warn: None,
            crit: None,
            min: Some(0.0),
            max: Some(f64::from(e.flows_probed)),
        });
    }
    if let Some(l) = e.loss {
        perf.push(Perf {
            label: "loss".into(),
            value: l * 100.0,
            uom: "%".into(),
            warn: None,
            crit: None,
            min: Some(0.0),
            max: Some(100.0),
        });
    }
    let note = if trusted {
        ""
    } else {
        " [observer isolated: not trusted]"
    };
    (
        status,
        match &e.reason {
            Some(why) => format!(
                "link {source} -> {target} is {}: {why}{note}",
                e.state.as_str()
            ),
            None => format!("link {source} -> {target} is {}{note}", e.state.as_str()),
        },
        perf,
        trusted,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemba_core::graph::{Graph, GraphEdge, LossKind, TcpPath};

    fn view_with(edge: GraphEdge) -> MeshView {
        MeshView {
            graph: Arc::new(Graph {
                nodes: vec![],
                edges: vec![edge],
            }),
            self_id: "ams-1".into(),
        }
    }

    #[test]
    fn mesh_link_names_a_black_holed_path() {
        // As the mesh reports a link with 4 of its 8 flows dead.
        let view = view_with(GraphEdge {
            source: "ams-1".into(),
            target: "nyc-1".into(),
            state: LinkState::Degraded,
            rtt_p50_ms: Some(0.5),
            rtt_p99_ms: Some(1.0),
            loss: Some(0.5),
            loss_kind: LossKind::Path,
            flows_probed: 8,
            flows_failing: 4,
            reason: Some("4 of 8 flows fail (a path is black-holed)".into()),
            tcp: TcpPath::Partial,
            since: Some(1),
        });
        let (status, output, perf, trusted) = mesh_link("ams-1", "nyc-1", Some(&view));
        assert_eq!(status, Status::Warning);
        assert!(trusted);
        assert_eq!(
            output,
            "link ams-1 -> nyc-1 is degraded: 4 of 8 flows fail (a path is black-holed)"
        );
        let failing = perf.iter().find(|p| p.label == "failing_flows").unwrap();
        assert_eq!((failing.value, failing.max), (4.0, Some(8.0)));
    }
}
