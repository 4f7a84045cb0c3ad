//! A node that leaves the grid for good is forgotten: once gossip drops it
//! (after the dead-node grace period), its peers hold no link tracker,
//! gossip state or metric series about it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gemba_core::{Config, ConfigFile, Overrides};
use gemba_mesh::{GridKey, MemNet, MeshNode, MeshSettings};
use prometheus_client::registry::Registry;

fn settings(i: usize) -> MeshSettings {
    let addr = |i: usize| -> SocketAddr { format!("127.0.5.{}:7946", i + 1).parse().unwrap() };
    let o = Overrides {
        node_id: Some(format!("n{i}")),
        mesh_listen: Some(addr(i).to_string()),
        seeds: if i == 0 {
            vec![]
        } else {
            vec![addr(0).to_string()]
        },
        ..Default::default()
    };
    let c = Config::from_file(ConfigFile::default(), &o, "test").unwrap();
    let key = GridKey::new(b"departure-test-grid-key-01234567".to_vec()).unwrap();
    MeshSettings::from_config(&c, key, None)
}

fn metrics_text(r: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, r).unwrap();
    out
}

#[tokio::test(start_paused = true)]
async fn a_node_gone_for_good_leaves_no_trace_on_its_peers() {
    let net = Arc::new(MemNet::new());
    let mut registry = Registry::default();
    let n0 = MeshNode::start(settings(0), net.clone(), Some(&mut registry))
        .await
        .unwrap();
    let n1 = MeshNode::start(settings(1), net.clone(), None)
        .await
        .unwrap();
    let n2 = MeshNode::start(settings(2), net.clone(), None)
        .await
        .unwrap();
    let mut waited = Duration::ZERO;
    while n0.local_links().len() < 2 || n0.observers_seen() < 3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        waited += Duration::from_millis(500);
        assert!(waited < Duration::from_secs(30), "the grid never formed");
    }
    assert!(metrics_text(&registry).contains("target=\"n2\""));
    n2.shutdown().await;
    // Gossip keeps a dead node for its grace period (an hour), then drops it.
    let mut gone_after = None;
    for minute in 1..=120 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        if n0.members().await.iter().all(|m| m.id != "n2") {
            gone_after = Some(minute);
            break;
        }
    }
    let minutes = gone_after.expect("gossip never dropped n2");
    // One more maintenance round.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        minutes >= 60,
        "dropped after {minutes} min, before its grace period"
    );
    assert_eq!(
        n0.local_links()
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>(),
        ["n1"]
    );
    assert_eq!(
        n0.observers_seen(),
        2,
        "n2's gossiped link states are forgotten"
    );
    let text = metrics_text(&registry);
    assert!(
        !text.contains("target=\"n2\""),
        "no metric series about n2 is left:\n{}",
        text.lines()
            .filter(|l| l.contains("n2"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    n1.shutdown().await;
    n0.shutdown().await;
}
