//! `gemba demo`: a grid of N nodes in S sites on 127.0.0.x, all in this
//! process, each with its own mesh socket and console. After a while it
//! breaks one directed link, reports when every node shows it, heals it,
//! reports when every node shows it up again, and repeats with another
//! link. Faults alternate: one of two ECMP paths black-holed (the flows
//! hashed onto it are dropped, the others pass: every node shows the link
//! degraded with path loss, "k of n flows fail"), then a full black hole
//! (everything that node sends to the other is dropped, as a broken route
//! would: every node shows the link down).
//!
//! The demo also converges a service: node 2 runs a toy web service
//! (`gemba demo-service`) watched by an `http` and a `process` check; the
//! first node is the server, with an escalator whose restart level brings
//! the service back. The demo kills the service every minute and prints
//! the escalator's journal as it decides, restarts and verifies; the third
//! kill within ten minutes is a crash loop, which holds the scope with one
//! notice, and the demo acknowledges it 20 s later as an operator would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gemba_core::config::{Config, ConfigFile, Overrides};
use gemba_mesh::link::LossKind;
use gemba_mesh::net::Fault;
use gemba_mesh::{FaultNet, GraphEdge, GridKey, LinkState, MeshNode, UdpNet};
use tokio::time::Instant;

use crate::cli::DemoArgs;

mod converge;
mod learn;

use converge::*;
use learn::*;

const SITE_NAMES: [&str; 20] = [
    "ams", "nyc", "sin", "fra", "sfo", "syd", "gru", "tyo", "lhr", "ord", "bom", "jnb", "yyz",
    "mad", "waw", "icn", "dub", "mex", "hel", "scl",
];

struct DemoNode {
    id: String,
    mesh_addr: SocketAddr,
    mesh: Arc<MeshNode>,
    node: gemba_node::Node,
}

/// Port of the demo's toy web service.
const SERVICE_PORT: u16 = 18080;

/// The demo's checks and escalation pattern. Each service node keeps its
/// pidfile (and, for the leaking one, its leak flag) under `dir` by node.
fn demo_policy(exe: &str, dir: &std::path::Path) -> String {
    format!(
        r#"
[escalator]
quiet_period = "3s"
backoff = "5s"

# A crash loop held for a human opens an incident; the restarts that
# worked at once are only on the node's timeline and charts. The demo
# closes an incident 30 s after its escalations end, so that its
# post-mortem starts within minutes.
[incidents]
cool_down = "30s"

# 1 = most fundamental. The demo cannot create machines, so level 1 only says
# what it would do; level 2 restarts the service for real.
[[level]]
level = 1
name = "reprovision"
run = ["/bin/echo", "would reprovision {{node}} here"]
timeout = "10s"
quiesce = "5s"

[[level]]
level = 2
name = "restart"
run = ["{exe}", "demo-service", "--detach", "--restart", "--listen", "{{node_addr}}:{SERVICE_PORT}", "--pidfile", "{dir}/{{node}}.pid", "--leak-flag", "{dir}/{{node}}.leak", "--log", "{dir}/{{node}}.log", "--exit-with", "{owner}"]
timeout = "10s"
quiesce = "2s"

[[check]]
name = "web-http"
kind = "http"
tier = "web"
url = "http://{{node_addr}}:{SERVICE_PORT}/"
body_contains = "ok"
interval = "1s"
fall = 2
level = 2

[[check]]
name = "web-process"
kind = "process"
tier = "web"
pidfile = "{dir}/{{node}}.pid"
interval = "1s"
fall = 2
level = 2

[[check]]
name = "web-reachable"
kind = "mesh-node"
tier = "web"
interval = "1s"
fall = 3
level = 1

# The shop leaks connections after a bad release: restart it when its
# connections stay over 300 for 10 s (one check, one level).
[[check]]
name = "shop-connections"
kind = "metric"
tier = "shop"
process = "shop"
metric = "tcp_established"
warn = 150
crit = {SHOP_CRIT}
for = "10s"
interval = "2s"
fall = 1
level = 2
"#,
        dir = dir.display(),
        owner = std::process::id(),
    )
}

/// Connections at which the demo's metric check restarts the shop.
const SHOP_CRIT: u32 = 300;

fn demo_key() -> GridKey {
    // The demo lives in one process; a fresh random key per run keeps it
    // from ever talking to a real grid.
    let mut raw = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut raw);
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    GridKey::new(format!("demo-{hex}").into_bytes()).expect("long enough")
}

fn nth_ip(first: Ipv4Addr, i: u16) -> anyhow::Result<Ipv4Addr> {
    let n = u32::from(first)
        .checked_add(i as u32)
        .context("address range overflow")?;
    let ip = Ipv4Addr::from(n);
    anyhow::ensure!(
        ip.is_loopback(),
        "demo addresses must stay on loopback (127.0.0.0/8), {ip} is not"
    );
    Ok(ip)
}

fn elapsed(start: Instant) -> String {
    format!("[{:>6.1}s]", start.elapsed().as_secs_f64())
}

async fn all_agree(
    nodes: &[DemoNode],
    source: &str,
    target: &str,
    want: impl Fn(&GraphEdge) -> bool,
) -> bool {
    for n in nodes {
        let g = n.mesh.graph().await;
        if !g.edge(source, target).is_some_and(&want) {
            return false;
        }
    }
    true
}

async fn wait_until_all(
    nodes: &[DemoNode],
    source: &str,
    target: &str,
    limit: Duration,
    want: impl Fn(&GraphEdge) -> bool + Copy,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if all_agree(nodes, source, target, want).await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let net = FaultNet::new(UdpNet);
    let key = demo_key();
    let sites = args.sites.min(args.nodes);
    let mut nodes = Vec::new();
    let first_mesh = SocketAddr::new(IpAddr::V4(nth_ip(args.first_ip, 0)?), args.mesh_port);
    println!(
        "gemba demo: {} nodes in {} sites on {}..",
        args.nodes, sites, args.first_ip
    );
    let mut consoles = Vec::new();
    let work = std::env::temp_dir().join(format!("gemba-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let exe = std::env::current_exe().context("cannot find the gemba executable")?;
    let policy = demo_policy(&exe.display().to_string(), &work);
    let id_of = |i: u16| format!("{}-{}", SITE_NAMES[(i % sites) as usize], i / sites + 1);
    let service_node = 1u16.min(args.nodes - 1);
    // The shop (the leak story) runs on a node of its own when there is one.
    let shop_node = match args.nodes {
        0..=2 => None,
        3 => Some(2),
        _ => Some(3),
    };
    let start_service = |i: u16, restart: bool| -> anyhow::Result<u32> {
        let addr = SocketAddr::new(IpAddr::V4(nth_ip(args.first_ip, i)?), SERVICE_PORT);
        crate::demo_service::start_detached(
            addr,
            &work.join(format!("{}.pid", id_of(i))),
            &crate::demo_service::Start {
                exit_with: Some(std::process::id()),
                restart,
                leak_flag: Some(work.join(format!("{}.leak", id_of(i)))),
                log: Some(work.join(format!("{}.log", id_of(i)))),
            },
        )
    };
    let pidfile = work.join(format!("{}.pid", id_of(service_node)));
    let mut escalator = None;
    let mut timeline = None;
    // The services run before their checks start, so the demo opens healthy.
    let pid = start_service(service_node, false)?;
    if let Some(s) = shop_node {
        start_service(s, false)?;
    }
    for i in 0..args.nodes {
        let ip = IpAddr::V4(nth_ip(args.first_ip, i)?);
        let site = SITE_NAMES[(i % sites) as usize];
        let id = id_of(i);
        let mesh_addr = SocketAddr::new(ip, args.mesh_port);
        let http_addr = SocketAddr::new(ip, args.http_port);
        let overrides = Overrides {
            node_id: Some(id.clone()),
            site: Some(site.to_string()),
            mesh_listen: Some(mesh_addr.to_string()),
            http_listen: Some(http_addr.to_string()),
            seeds: if i == 0 {
                vec![]
            } else {
                vec![first_mesh.to_string()]
            },
            ..Default::default()
        };
        // The service nodes sample their service as a [[process]].
        let (tag, process) = if i == service_node {
            ("\"web\"", "web")
        } else if Some(i) == shop_node {
            ("\"shop\"", "shop")
        } else {
            ("", "")
        };
        let mut node_text = format!(
            "[metrics]\ninterval = \"2s\"\n\n[node]\nserver = {}\ntags = [{tag}]\ndata_dir = \"{}\"\n{policy}",
            i == 0,
            work.join(&id).display()
        );
        if !process.is_empty() {
            node_text.push_str(&format!(
                "\n[[process]]\nname = \"{process}\"\npidfile = \"{}\"\nlogs = [\"{}\"]\n",
                work.join(format!("{id}.pid")).display(),
                work.join(format!("{id}.log")).display()
            ));
        }
        let file = ConfigFile::parse(std::path::Path::new("demo settings"), &node_text)?;
        let config = Config::from_file(file, &overrides, "demo settings")?;
        let listener = tokio::net::TcpListener::bind(http_addr)
            .await
            .with_context(|| {
                format!("cannot listen for HTTP on {http_addr} (is another demo running?)")
            })?;
        let node = gemba_node::Node::start_with(
            &config,
            Arc::new(net.clone()),
            key.clone(),
            gemba_node::NodeOptions {
                http: gemba_node::HttpListen::Listener(listener),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("cannot start demo node {id}"))?;
        if let Some(h) = node.escalator() {
            escalator = Some(h.clone());
        }
        if let Some(t) = node.timeline() {
            timeline = Some(t.clone());
        }
        let mesh = node.mesh().clone();
        consoles.push(format!(
            "  {id:<8} site {site:<4} console http://{http_addr}/"
        ));
        nodes.push(DemoNode {
            id,
            mesh_addr,
            mesh,
            node,
        });
    }
    for c in &consoles {
        println!("{c}");
    }
    println!(
        "  service  web on {} (pid {pid}), checked by web-http and web-process; escalations at http://{}/escalations",
        nodes[service_node as usize].id,
        SocketAddr::new(IpAddr::V4(args.first_ip), args.http_port)
    );
    if let Some(i) = shop_node {
        let http = SocketAddr::new(IpAddr::V4(args.first_ip), args.http_port);
        println!(
            "  shop     on {} (sampled as a [[process]], checked by shop-connections); a bad release is deployed {}s after the faults start: http://{http}/events, http://{http}/charts?node={}&process=shop&metric=tcp_established&since=15m",
            id_of(i),
            args.fault_after.as_secs() + 15,
            id_of(i)
        );
    }
    if let Some(market) = nodes[0].node.market() {
        let names: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let stored = crate::demo_market::feed(market, &names, market.now_ms()).await?;
        println!(
            "  market   {stored} sample Puppet runs fed; the morning market is at http://{}/market (or `gemba market --from http://{}`)",
            SocketAddr::new(IpAddr::V4(args.first_ip), args.http_port),
            SocketAddr::new(IpAddr::V4(args.first_ip), args.http_port)
        );
    }
    println!(
        "{} all nodes started; open any console above, they all draw the same graph",
        elapsed(start)
    );

    let total = args.nodes as usize * (args.nodes as usize - 1);
    let limit = Duration::from_secs(60);
    let faults = {
        let nodes = &nodes;
        async move {
            let mut round = 0usize;
            match wait_for_full_mesh(nodes, total, limit).await {
                Some(t) => println!(
                    "{} every node sees all {total} links up ({:.1}s after start)",
                    elapsed(start),
                    t.as_secs_f64()
                ),
                None => println!(
                    "{} not every link came up within {}s; faults start anyway",
                    elapsed(start),
                    limit.as_secs()
                ),
            }
            tokio::time::sleep(args.fault_after).await;
            loop {
                // Walk through pairs from different sites first.
                let n = nodes.len();
                let a = round % n;
                let b = (a + 1 + (round / n) % (n - 1)) % n;
                let (src, dst) = (&nodes[a], &nodes[b]);
                round += 1;
                // Faults alternate: one of two ECMP paths black-holed (only
                // the flows hashed onto it die: the link is degraded with
                // path loss), then a black hole (the link is down).
                let path_fault = round.is_multiple_of(2);
                if path_fault {
                    println!(
                        "{} FAULT  black-holed one of two paths {} -> {}: the flows hashed onto it are dropped",
                        elapsed(start),
                        src.id,
                        dst.id,
                    );
                    net.set_fault(
                        src.mesh_addr,
                        dst.mesh_addr,
                        Some(Fault::Paths {
                            paths: 2,
                            dead: vec![0],
                        }),
                    );
                } else {
                    println!(
                        "{} FAULT  black-holed {} -> {}: everything {} sends to {} is dropped",
                        elapsed(start),
                        src.id,
                        dst.id,
                        src.mesh_addr,
                        dst.mesh_addr
                    );
                    net.set_black_hole(src.mesh_addr, dst.mesh_addr, true);
                }
                let fault_start = Instant::now();
                let seen = wait_until_all(nodes, &src.id, &dst.id, args.fault_for, |e| {
                    if path_fault {
                        e.loss_kind == LossKind::Path
                    } else {
                        e.state == LinkState::Down
                    }
                })
                .await;
                let shown = nodes[0]
                    .mesh
                    .graph()
                    .await
                    .edge(&src.id, &dst.id)
                    .map(|e| e.describe())
                    .unwrap_or_default();
                match seen {
                    Some(t) => println!(
                        "{} seen  every node shows {shown} after {:.1}s",
                        elapsed(start),
                        t.as_secs_f64()
                    ),
                    None => println!(
                        "{} not every node showed {} -> {} {} within {:.0}s (now: {shown})",
                        elapsed(start),
                        src.id,
                        dst.id,
                        if path_fault { "with path loss" } else { "down" },
                        args.fault_for.as_secs_f64()
                    ),
                }
                tokio::time::sleep_until(fault_start + args.fault_for).await;
                net.set_fault(src.mesh_addr, dst.mesh_addr, None);
                println!("{} HEALED {} -> {}", elapsed(start), src.id, dst.id);
                match wait_until_all(
                    nodes,
                    &src.id,
                    &dst.id,
                    args.fault_gap.max(Duration::from_secs(10)),
                    |e| e.state == LinkState::Up,
                )
                .await
                {
                    Some(t) => println!(
                        "{} seen  every node shows {} -> {} up after {:.1}s",
                        elapsed(start),
                        src.id,
                        dst.id,
                        t.as_secs_f64()
                    ),
                    None => println!(
                        "{} not every node showed {} -> {} up again yet",
                        elapsed(start),
                        src.id,
                        dst.id
                    ),
                }
                tokio::time::sleep(args.fault_gap).await;
            }
        }
    };
    let stop = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => crate::node::shutdown_signal().await,
        }
    };
    let http0 = SocketAddr::new(IpAddr::V4(args.first_ip), args.http_port);
    let shop = async {
        match (shop_node, &timeline, &escalator) {
            (Some(i), Some(t), Some(e)) => {
                shop_story(
                    t,
                    e,
                    &id_of(i),
                    &work,
                    || start_service(i, true).map(|_| ()),
                    http0,
                    start,
                    args.fault_after,
                )
                .await
            }
            _ => std::future::pending().await,
        }
    };
    let converge = service_kills(
        escalator.clone(),
        &pidfile,
        &nodes[service_node as usize].id,
        start,
        args.fault_after,
    );
    let incidents = tell_incidents(timeline.clone(), http0, start);
    tokio::select! {
        _ = faults => {}
        _ = converge => {}
        _ = shop => {}
        _ = incidents => {}
        _ = stop => {}
    }
    // Leave nothing running behind: every node drains (the server's
    // running steps get their grace), then the service goes.
    for n in nodes {
        drop(n.mesh);
        n.node.shutdown().await;
    }
    for i in std::iter::once(service_node).chain(shop_node) {
        let file = work.join(format!("{}.pid", id_of(i)));
        if let Ok(pid) = std::fs::read_to_string(&file) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    println!("{} demo stopped", elapsed(start));
    Ok(())
}

async fn wait_for_full_mesh(nodes: &[DemoNode], total: usize, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let mut ok = true;
        for n in nodes {
            let g = n.mesh.graph().await;
            if g.edges.len() != total || g.edges.iter().any(|e| e.state != LinkState::Up) {
                ok = false;
                break;
            }
        }
        if ok {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
