//! Multi-node behaviour in one process: real mesh nodes (chitchat, signed
//! transport, prober) over the in-memory network, under paused tokio time,
//! so partitions, kills and restarts are tested in milliseconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gemba_core::config::Overrides;
use gemba_mesh::graph::Graph;
use gemba_mesh::link::LossKind;
use gemba_mesh::metrics::ReasonLabel;
use gemba_mesh::net::{flow_path, Fault};
use gemba_mesh::{FaultNet, GridKey, LinkState, MemNet, MeshNode, MeshSettings, NodeState};
use tokio::time::Instant;

fn key() -> GridKey {
    GridKey::new(b"cluster-test-grid-key-0123456789".to_vec()).unwrap()
}

fn addr(i: usize) -> SocketAddr {
    format!("127.0.1.{}:7946", i + 1).parse().unwrap()
}

fn settings(i: usize, sites: usize, extra: &str) -> MeshSettings {
    settings_advertising(i, sites, extra, None)
}

/// A node that says it is at `advertise` (where nothing answers, in the
/// tests that use it) while it sends from its own address.
fn settings_advertising(
    i: usize,
    sites: usize,
    extra: &str,
    advertise: Option<SocketAddr>,
) -> MeshSettings {
    let text = format!("[mesh]\n{extra}\n");
    let o = Overrides {
        node_id: Some(format!("n{i}")),
        site: Some(format!("s{}", i % sites)),
        mesh_listen: Some(addr(i).to_string()),
        mesh_advertise: advertise.map(|a| a.to_string()),
        seeds: if i == 0 {
            vec![]
        } else {
            vec![addr(0).to_string()]
        },
        ..Default::default()
    };
    let c = gemba_testkit::config_with(&text, &o);
    // A node keeps its identity across restarts (its node.key).
    MeshSettings::from_config(&c, key(), None).with_identity(
        identity(i),
        Arc::new(gemba_mesh::identity::Pins::default()),
        None,
    )
}

fn identity(i: usize) -> Arc<gemba_mesh::identity::NodeIdentity> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static IDS: OnceLock<Mutex<HashMap<usize, Arc<gemba_mesh::identity::NodeIdentity>>>> =
        OnceLock::new();
    IDS.get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(i)
        .or_insert_with(|| Arc::new(gemba_mesh::identity::NodeIdentity::ephemeral()))
        .clone()
}

struct Grid {
    net: MemNet,
    /// The same network, with faults by flow hash or at random.
    faults: FaultNet<MemNet>,
    nodes: Vec<Option<MeshNode>>,
    sites: usize,
    extra: String,
}

impl Grid {
    async fn start(n: usize, sites: usize, extra: &str) -> Grid {
        let net = MemNet::with_latency(Duration::from_micros(200));
        let faults = FaultNet::new(net.clone());
        let mut nodes = Vec::new();
        for i in 0..n {
            let node = MeshNode::start(settings(i, sites, extra), Arc::new(faults.clone()), None)
                .await
                .unwrap();
            nodes.push(Some(node));
        }
        Grid {
            net,
            faults,
            nodes,
            sites,
            extra: extra.to_string(),
        }
    }

    async fn graphs(&self) -> Vec<Graph> {
        let mut v = Vec::new();
        for n in self.nodes.iter().flatten() {
            v.push((*n.graph().await).clone());
        }
        v
    }

    /// Waits (in virtual time) until `ok` holds for every running node's
    /// graph; returns how long it took.
    async fn wait_all(&self, limit: Duration, ok: impl Fn(&Graph) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            let graphs = self.graphs().await;
            if graphs.iter().all(&ok) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "condition not reached in {limit:?}; first graph: {:#?}",
                graphs[0]
                    .edges
                    .iter()
                    .filter(|e| e.state != LinkState::Up)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn kill(&mut self, i: usize) {
        let node = self.nodes[i].take().unwrap();
        node.shutdown().await;
        self.net.unplug(addr(i));
    }

    async fn restart(&mut self, i: usize) {
        let node = MeshNode::start(
            settings(i, self.sites, &self.extra),
            Arc::new(self.faults.clone()),
            None,
        )
        .await
        .unwrap();
        self.nodes[i] = Some(node);
    }
}

fn all_up(n: usize) -> impl Fn(&Graph) -> bool {
    move |g: &Graph| {
        g.edges.len() == n * (n - 1) && g.edges.iter().all(|e| e.state == LinkState::Up)
    }
}

/// The source ports of `source`'s probe flows to `target`.
fn flow_ports(grid: &Grid, source: usize, target: &str) -> Vec<SocketAddr> {
    let (summary, _) = grid.nodes[source]
        .as_ref()
        .unwrap()
        .link_history(target)
        .unwrap();
    summary
        .flows
        .iter()
        .map(|f| SocketAddr::new(addr(source).ip(), f.port.unwrap()))
        .collect()
}

fn edge_is<'a>(s: &'a str, t: &'a str, state: LinkState) -> impl Fn(&Graph) -> bool + 'a {
    move |g: &Graph| g.edge(s, t).is_some_and(|e| e.state == state)
}

#[tokio::test(start_paused = true)]
async fn five_nodes_converge_to_one_graph_through_a_single_seed() {
    let grid = Grid::start(5, 3, "").await;
    let took = grid.wait_all(Duration::from_secs(10), all_up(5)).await;
    assert!(
        took <= Duration::from_secs(5),
        "converged only after {took:?}"
    );
    let graphs = grid.graphs().await;
    for g in &graphs[1..] {
        assert_eq!(
            g.nodes, graphs[0].nodes,
            "every node must serve the same nodes"
        );
        assert_eq!(
            g.edges, graphs[0].edges,
            "every node must serve the same edges"
        );
    }
    let sites: std::collections::BTreeSet<&str> =
        graphs[0].nodes.iter().map(|n| n.site.as_str()).collect();
    assert_eq!(sites.len(), 3);
    assert!(graphs[0].nodes.iter().all(|n| n.state == NodeState::Up));
}

/// Every value a node publishes reaches each peer many times (gossip
/// rounds, pushes, relays); each peer verifies it once. A healthy grid
/// publishes nothing once it has settled, so it verifies nothing either.
#[tokio::test(start_paused = true)]
async fn each_published_value_is_verified_once_per_node_and_a_quiet_grid_verifies_nothing() {
    let n = 8;
    let grid = Grid::start(n, 2, "").await;
    grid.wait_all(Duration::from_secs(10), all_up(n)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let nodes: Vec<&MeshNode> = grid.nodes.iter().flatten().collect();
    let published = |node: &MeshNode| -> u64 {
        let m = node.metrics();
        ["link", "other"]
            .iter()
            .map(|class| {
                m.values_published
                    .get_or_create(&gemba_mesh::metrics::ClassLabel { class })
                    .get()
            })
            .sum::<u64>()
            // id, site and version published at start, and the role of a
            // server (a node without seeds).
            + 3
            + node.settings().server as u64
    };
    let verified = |node: &MeshNode| node.metrics().signatures_verified.get();
    for (i, node) in nodes.iter().enumerate() {
        let by_others: u64 = nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, o)| published(o))
            .sum();
        let m = node.metrics();
        assert!(
            verified(node) <= by_others,
            "{} verified {} signatures of {by_others} values its peers published",
            node.id(),
            verified(node)
        );
        assert!(
            m.signature_cache_hits.get() > 0,
            "{} received no value twice",
            node.id()
        );
    }
    // Once the first figures (RTT buckets, the first TCP results) went out
    // a minute after start, a healthy grid publishes and verifies nothing.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let before: Vec<(u64, u64)> = nodes.iter().map(|n| (published(n), verified(n))).collect();
    tokio::time::sleep(Duration::from_secs(600)).await;
    for (node, (p, v)) in nodes.iter().zip(before) {
        assert_eq!(
            (published(node), verified(node)),
            (p, v),
            "{} published or verified values on a quiet grid",
            node.id()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn cut_link_turns_red_on_every_node_within_three_seconds_and_green_after_heal() {
    let grid = Grid::start(5, 3, "").await;
    grid.wait_all(Duration::from_secs(10), all_up(5)).await;
    grid.net.set_link(addr(1), addr(2), false);
    let took = grid
        .wait_all(Duration::from_secs(10), |g| {
            edge_is("n1", "n2", LinkState::Down)(g) && edge_is("n2", "n1", LinkState::Down)(g)
        })
        .await;
    assert!(took <= Duration::from_secs(3), "red after {took:?}");
    // One broken link is not a broken node: the other observers still reach both.
    let g = grid.nodes[0].as_ref().unwrap().graph().await;
    assert_eq!(g.node("n1").unwrap().state, NodeState::Degraded);
    assert_eq!(g.broken_links().len(), 2);
    grid.net.set_link(addr(1), addr(2), true);
    let took = grid.wait_all(Duration::from_secs(10), all_up(5)).await;
    assert!(took <= Duration::from_secs(3), "green after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn killed_node_is_down_on_every_survivor_and_rejoins_after_restart() {
    let mut grid = Grid::start(5, 3, "").await;
    grid.wait_all(Duration::from_secs(10), all_up(5)).await;
    grid.kill(3).await;
    let took = grid
        .wait_all(Duration::from_secs(10), |g| {
            g.node("n3").is_some_and(|n| n.state == NodeState::Down)
        })
        .await;
    assert!(took <= Duration::from_secs(3), "down after {took:?}");
    // Survivors are not blamed.
    let g = grid.nodes[0].as_ref().unwrap().graph().await;
    for id in ["n0", "n1", "n2", "n4"] {
        assert_eq!(g.node(id).unwrap().state, NodeState::Up, "{id}");
    }
    grid.restart(3).await;
    let took = grid.wait_all(Duration::from_secs(20), all_up(5)).await;
    assert!(took <= Duration::from_secs(10), "recovered after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn node_cut_off_from_everyone_is_down_and_isolated_nodes_do_not_blame_others() {
    let grid = Grid::start(5, 3, "").await;
    grid.wait_all(Duration::from_secs(10), all_up(5)).await;
    for j in [0, 1, 2, 3] {
        grid.net.set_link(addr(4), addr(j), false);
    }
    // The four others agree n4 is down; n4 (which hears nobody) is isolated
    // in its own view and does not turn the others red.
    let others = &grid.nodes[..4];
    let start = Instant::now();
    loop {
        let mut ok = true;
        for n in others.iter().flatten() {
            ok &= n
                .graph()
                .await
                .node("n4")
                .is_some_and(|n| n.state == NodeState::Down);
        }
        if ok {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let own = grid.nodes[4].as_ref().unwrap().graph().await;
    assert_eq!(
        own.node("n4").unwrap().state,
        NodeState::Isolated,
        "{:?}",
        own.node("n4")
    );
    for id in ["n0", "n1", "n2", "n3"] {
        assert_ne!(
            own.node(id).unwrap().state,
            NodeState::Down,
            "isolated n4 must not blame {id}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn silent_peer_does_not_delay_probes_of_healthy_peers() {
    let grid = Grid::start(4, 1, "window = \"5s\"").await;
    grid.wait_all(Duration::from_secs(10), all_up(4)).await;
    // n3 turns silent: it swallows every datagram and never completes a
    // TCP handshake, like a wedged or half-open host.
    grid.net.set_silent(addr(3), true);
    let n0 = grid.nodes[0].as_ref().unwrap();
    let lost = |t: &str| {
        n0.metrics()
            .probes_lost
            .get_or_create(&gemba_mesh::metrics::TargetLabel { target: t.into() })
            .get()
    };
    let lost_before = lost("n1") + lost("n2");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        lost("n1") + lost("n2"),
        lost_before,
        "healthy peers lost probes"
    );
    assert!(
        lost("n3") >= 18,
        "the silent peer's probes must expire: {}",
        lost("n3")
    );
    let links = n0.local_links();
    let to = |t: &str| links.iter().find(|(id, _)| id == t).unwrap().1.clone();
    assert_eq!(to("n3").state, LinkState::Down);
    for t in ["n1", "n2"] {
        let l = to(t);
        assert_eq!(l.state, LinkState::Up, "{t}");
        assert_eq!(l.loss, 0.0, "{t}");
        // 2 probes a second over the 5 s window, every one answered on time.
        assert!(
            l.samples >= 9,
            "{t}: only {} replies in the window",
            l.samples
        );
        // Two 200 µs hops, rounded up by tokio's 1 ms timer: never the
        // silent peer's 500 ms probe timeout or 1 s connect timeout.
        assert!(
            l.rtt_p99_ms.unwrap() <= 2.5,
            "{t}: p99 {:?} ms",
            l.rtt_p99_ms
        );
        assert_eq!(l.tcp, gemba_mesh::link::TcpPath::Connects);
    }
}

#[tokio::test(start_paused = true)]
async fn forged_garbage_and_replayed_packets_are_dropped_counted_and_harmless() {
    use gemba_mesh::net::Net;
    use gemba_mesh::wire::{self, Kind};
    let grid = Grid::start(3, 1, "").await;
    grid.wait_all(Duration::from_secs(10), all_up(3)).await;
    let attacker = grid
        .net
        .bind("127.0.9.9:7946".parse().unwrap())
        .await
        .unwrap();
    let target = addr(0);
    let now = gemba_mesh::endpoint::unix_ms();
    let mut signed = Vec::new();
    wire::seal(
        &key(),
        &wire::Header {
            kind: Kind::ProbeRequest,
            session: 42,
            counter: 1,
            unix_ms: now,
            frag: (0, 1),
            sender: "n1",
            recipient: "n0",
        },
        &7u64.to_be_bytes(),
        &mut signed,
    );
    let mut wrong_key = Vec::new();
    let other = GridKey::new(b"some-other-grid-key-entirely".to_vec()).unwrap();
    wire::seal(
        &other,
        &wire::Header {
            kind: Kind::Gossip,
            session: 43,
            counter: 1,
            unix_ms: now,
            frag: (0, 1),
            sender: "n1",
            recipient: "n0",
        },
        b"join me",
        &mut wrong_key,
    );
    let mut old = Vec::new();
    wire::seal(
        &key(),
        &wire::Header {
            kind: Kind::ProbeRequest,
            session: 44,
            counter: 1,
            unix_ms: now - 120_000,
            frag: (0, 1),
            sender: "n1",
            recipient: "n0",
        },
        &7u64.to_be_bytes(),
        &mut old,
    );
    let mut bad_gossip = Vec::new();
    wire::seal(
        &key(),
        &wire::Header {
            kind: Kind::Gossip,
            session: 45,
            counter: 1,
            unix_ms: now,
            frag: (0, 1),
            sender: "n1",
            recipient: "n0",
        },
        b"\xff\xff not chitchat",
        &mut bad_gossip,
    );
    // A signed reply to no probe, sent to the mesh socket: probes leave
    // from the flow sockets only, so it measures no path.
    let mut stray_reply = Vec::new();
    wire::seal(
        &key(),
        &wire::Header {
            kind: Kind::ProbeReply,
            session: 46,
            counter: 1,
            unix_ms: now,
            frag: (0, 1),
            sender: "n1",
            recipient: "n0",
        },
        &9u64.to_be_bytes(),
        &mut stray_reply,
    );
    let garbage: Vec<&[u8]> = vec![b"", b"hello", &[0u8; 100], &signed[..signed.len() - 3]];
    for d in &garbage {
        attacker.send_to(d, target).await.unwrap();
    }
    attacker.send_to(&vec![7u8; 70_000], target).await.unwrap();
    attacker.send_to(&signed, target).await.unwrap();
    attacker.send_to(&signed, target).await.unwrap(); // replay
    attacker.send_to(&wrong_key, target).await.unwrap();
    attacker.send_to(&old, target).await.unwrap();
    attacker.send_to(&bad_gossip, target).await.unwrap();
    attacker.send_to(&stray_reply, target).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = grid.nodes[0].as_ref().unwrap().metrics();
    let count = |reason: &'static str| m.dropped.get_or_create(&ReasonLabel { reason }).get();
    assert_eq!(count("truncated"), 2, "empty and short datagrams");
    assert_eq!(count("malformed"), 1, "zeroes");
    assert_eq!(count("oversized"), 1);
    assert_eq!(count("replayed"), 1);
    assert_eq!(
        count("bad_signature"),
        2,
        "the wrong key and the cut-off signature"
    );
    assert_eq!(count("expired"), 1);
    assert_eq!(
        count("undecodable"),
        2,
        "gossip that is not chitchat's, and a probe reply on the mesh socket"
    );
    // The one valid probe was answered, and the grid is unaffected.
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(1), attacker.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, target);
    assert_eq!(
        wire::open(&key(), &buf[..n]).unwrap().kind,
        Kind::ProbeReply
    );
    grid.wait_all(Duration::from_secs(5), all_up(3)).await;
}

#[tokio::test(start_paused = true)]
async fn node_with_the_wrong_grid_key_never_joins() {
    let grid = Grid::start(3, 1, "").await;
    grid.wait_all(Duration::from_secs(10), all_up(3)).await;
    let mut s = settings(5, 1, "");
    s.key = GridKey::new(b"an-intruder-with-a-guessed-key".to_vec()).unwrap();
    let intruder = MeshNode::start(s, Arc::new(grid.net.clone()), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    for g in grid.graphs().await {
        assert_eq!(
            g.nodes.len(),
            3,
            "the intruder must not appear in the graph"
        );
    }
    let m = grid.nodes[0].as_ref().unwrap().metrics();
    assert!(
        m.dropped
            .get_or_create(&ReasonLabel {
                reason: "bad_signature"
            })
            .get()
            > 0
    );
    assert_eq!(intruder.graph().await.nodes.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn black_holed_path_is_path_loss_on_every_node_for_either_half_and_clears() {
    let grid = Grid::start(5, 3, "").await;
    grid.wait_all(Duration::from_secs(10), all_up(5)).await;
    let ports = flow_ports(&grid, 0, "n1");
    assert_eq!(ports.len(), 8, "8 flows by default");
    for dead in [0u32, 1] {
        let failing = ports
            .iter()
            .filter(|p| flow_path(**p, addr(1), 2) == dead)
            .count() as u8;
        assert!((1..8).contains(&failing), "both paths carry flows");
        grid.faults.set_fault(
            addr(0),
            addr(1),
            Some(Fault::Paths {
                paths: 2,
                dead: vec![dead],
            }),
        );
        let took = grid
            .wait_all(Duration::from_secs(20), |g| {
                g.edge("n0", "n1").is_some_and(|e| {
                    e.state == LinkState::Degraded
                        && e.loss_kind == LossKind::Path
                        && e.flows_failing == failing
                        && e.flows_probed == 8
                })
            })
            .await;
        assert!(
            took <= Duration::from_secs(10),
            "path {dead}: seen after {took:?}"
        );
        let g = grid.nodes[3].as_ref().unwrap().graph().await;
        let e = g.edge("n0", "n1").unwrap();
        assert_eq!(
            e.describe(),
            format!("n0 → n1 degraded: {failing} of 8 flows fail (a path is black-holed)")
        );
        assert!((e.loss.unwrap() - f64::from(failing) / 8.0).abs() < 1e-9);
        // A dead path is never a dead link: it stays degraded, no flapping.
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for g in grid.graphs().await {
                let e = g.edge("n0", "n1").unwrap();
                assert_eq!(
                    (e.state, e.loss_kind),
                    (LinkState::Degraded, LossKind::Path),
                    "path {dead}: {e:?}"
                );
            }
        }
        grid.faults.set_fault(addr(0), addr(1), None);
        let took = grid
            .wait_all(Duration::from_secs(20), edge_is("n0", "n1", LinkState::Up))
            .await;
        assert!(
            took <= Duration::from_secs(5),
            "path {dead}: up after {took:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn black_hole_is_down_on_every_node_within_a_second() {
    let grid = Grid::start(5, 3, "").await;
    grid.wait_all(Duration::from_secs(10), all_up(5)).await;
    // Let the links learn their RTT, as a running grid has.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (from, to) in [(0, 1), (2, 4), (3, 0)] {
        grid.faults.set_black_hole(addr(from), addr(to), true);
        let (s, t) = (format!("n{from}"), format!("n{to}"));
        let took = grid
            .wait_all(Duration::from_secs(5), edge_is(&s, &t, LinkState::Down))
            .await;
        eprintln!("{s} -> {t} down on every node after {took:?}");
        assert!(
            took <= Duration::from_secs(1),
            "{s} -> {t} down after {took:?}"
        );
        let g = grid.nodes[1].as_ref().unwrap().graph().await;
        assert_eq!(g.edge(&s, &t).unwrap().loss_kind, LossKind::Total);
        grid.faults.set_black_hole(addr(from), addr(to), false);
        grid.wait_all(Duration::from_secs(10), edge_is(&s, &t, LinkState::Up))
            .await;
    }
}

#[tokio::test(start_paused = true)]
async fn half_the_packets_lost_at_random_is_steadily_degraded_never_down() {
    let grid = Grid::start(4, 1, "").await;
    grid.wait_all(Duration::from_secs(10), all_up(4)).await;
    grid.faults
        .set_fault(addr(0), addr(1), Some(Fault::Random { loss: 0.5 }));
    grid.wait_all(
        Duration::from_secs(10),
        edge_is("n0", "n1", LinkState::Degraded),
    )
    .await;
    let n0 = grid.nodes[0].as_ref().unwrap();
    let mut downs = 0;
    let mut last = LinkState::Degraded;
    let mut not_degraded = 0;
    // Two minutes, looked at every 250 ms.
    for _ in 0..480 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (s, _) = n0.link_history("n1").unwrap();
        if s.state == LinkState::Down && last != LinkState::Down {
            downs += 1;
        }
        if s.state != LinkState::Degraded {
            not_degraded += 1;
        }
        last = s.state;
    }
    assert!(downs <= 1, "{downs} transitions to down");
    assert!(
        not_degraded <= 4,
        "{not_degraded} of 480 looks not degraded"
    );
    let (s, _) = n0.link_history("n1").unwrap();
    assert_eq!(s.loss_kind, LossKind::Random);
    assert!((s.loss - 0.5).abs() < 0.15, "loss {}", s.loss);
    assert_eq!(s.flows_failing, 0);
}

#[tokio::test(start_paused = true)]
async fn ids_claimed_at_addresses_where_nothing_answers_do_not_isolate_real_nodes() {
    let net = MemNet::with_latency(Duration::from_micros(200));
    let mut nodes = Vec::new();
    for i in 0..2 {
        nodes.push(
            MeshNode::start(settings(i, 1, ""), Arc::new(net.clone()), None)
                .await
                .unwrap(),
        );
    }
    // Two more ids join through the seed but name addresses where nothing
    // answers a probe.
    let mut ghosts = Vec::new();
    for i in 2..4 {
        let nowhere: SocketAddr = format!("127.0.1.{}:7946", 100 + i).parse().unwrap();
        ghosts.push(
            MeshNode::start(
                settings_advertising(i, 1, "", Some(nowhere)),
                Arc::new(net.clone()),
                None,
            )
            .await
            .unwrap(),
        );
    }
    let start = Instant::now();
    loop {
        let mut seen_ghosts_down = true;
        for n in &nodes {
            let g = n.graph().await;
            seen_ghosts_down &= ["n2", "n3"]
                .iter()
                .all(|id| g.node(id).is_some_and(|n| n.state == NodeState::Down));
        }
        if seen_ghosts_down {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the ghosts never looked down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // For a while, and after the ghosts stop: the real two stay up.
    for round in 0..2 {
        for _ in 0..20 {
            for n in &nodes {
                let g = n.graph().await;
                for id in ["n0", "n1"] {
                    let s = g.node(id).unwrap().state;
                    assert_eq!(
                        s,
                        NodeState::Up,
                        "{id} in {}'s view (round {round})",
                        n.id()
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for g in ghosts.drain(..) {
            g.shutdown().await;
        }
    }
}
