//! Probes never wait behind gossip: a node whose gossip work is made slow
//! on purpose (the thread that checks gossip is held 200 ms per message, as
//! CPU-bound signature checks would hold it) still answers every probe
//! within a few milliseconds, and no node calls any link lossy or slow.
//!
//! Real UDP on loopback and real time: what is asserted is that probe
//! answers do not queue behind gossip, which in-memory test time cannot
//! show. The bounds are generous (the machine may be busy).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gemba_core::config::Overrides;
use gemba_mesh::identity::{NodeIdentity, Pins};
use gemba_mesh::link::LossKind;
use gemba_mesh::{GridKey, LinkState, MeshNode, MeshSettings, UdpNet};

fn addr(i: usize) -> SocketAddr {
    format!("127.0.77.{}:7946", i + 1).parse().unwrap()
}

fn settings(i: usize) -> MeshSettings {
    let text = "[mesh]\ngossip_interval = \"100ms\"\nprobe_interval = \"200ms\"\nprobe_timeout = \"150ms\"\n";
    let o = Overrides {
        node_id: Some(format!("p{i}")),
        mesh_listen: Some(addr(i).to_string()),
        seeds: if i == 0 {
            vec![]
        } else {
            vec![addr(0).to_string()]
        },
        ..Default::default()
    };
    let c = gemba_testkit::config_with(text, &o);
    MeshSettings::from_config(
        &c,
        GridKey::new(b"probe-path-test-grid-key-0123456".to_vec()).unwrap(),
        None,
    )
    .with_identity(
        Arc::new(NodeIdentity::ephemeral()),
        Arc::new(Pins::default()),
        None,
    )
}

#[tokio::test(flavor = "current_thread")]
async fn probes_are_answered_at_once_while_gossip_is_slow() {
    let stall = Duration::from_millis(200);
    let mut nodes = Vec::new();
    for i in 0..3 {
        let s = settings(i);
        nodes.push(MeshNode::start(s, Arc::new(UdpNet), None).await.unwrap());
    }
    // Every node probes both others.
    let start = std::time::Instant::now();
    loop {
        let ready = nodes.iter().all(|n| {
            let links = n.local_links();
            links.len() == 2 && links.iter().all(|(_, l)| l.samples >= 8)
        });
        if ready {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the nodes did not start probing each other"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then several seconds of probing while the slow node's gossip thread
    // is held for most of the time (the nodes share this test's runtime,
    // so it holds all of their gossip and everything else but the probe
    // paths).
    let gossip_in = || {
        nodes[0]
            .metrics()
            .packets_received
            .get_or_create(&gemba_mesh::metrics::KindLabel { kind: "gossip" })
            .get()
    };
    let before = gossip_in();
    nodes[0].stall_gossip(stall);
    // Real time: the runtime is held, so tokio's timer would only add to it.
    let held = std::time::Instant::now();
    while held.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gossip_in = gossip_in() - before;
    assert!(
        gossip_in >= 20,
        "the slow node got {gossip_in} gossip datagrams: its gossip thread was not kept busy"
    );
    for n in &nodes {
        for (target, l) in n.local_links() {
            let p99 = l.rtt_p99_ms.unwrap_or(f64::INFINITY);
            assert!(
                l.state == LinkState::Up && l.loss_kind == LossKind::None && l.loss == 0.0,
                "{} -> {target}: {:?} {:?}, loss {} ({} probes): probes waited for gossip",
                n.id(),
                l.state,
                l.reason,
                l.loss,
                l.samples
            );
            // Well under the stall: replies did not queue behind gossip.
            assert!(
                p99 < 50.0,
                "{} -> {target}: p99 RTT {p99:.1} ms with gossip held {} ms per message",
                n.id(),
                stall.as_millis()
            );
        }
    }
    for n in &nodes {
        n.shutdown().await;
    }
}
