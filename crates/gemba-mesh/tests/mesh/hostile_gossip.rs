//! A peer holding the grid key sends crafted gossip; the node it targets
//! keeps gossiping, keeps its own state and keeps answering probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gemba_core::{Config, ConfigFile, Overrides};
use gemba_mesh::net::Net;
use gemba_mesh::wire::{self, Kind};
use gemba_mesh::{GridKey, MemNet, MeshNode, MeshSettings};
use prometheus_client::registry::Registry;

const KEY: &[u8] = b"hostile-gossip-test-grid-key-0123";

fn addr(i: usize) -> SocketAddr {
    format!("127.0.6.{}:7946", i + 1).parse().unwrap()
}

fn settings(i: usize) -> MeshSettings {
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
    MeshSettings::from_config(&c, GridKey::new(KEY.to_vec()).unwrap(), None)
}

fn str_bytes(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A chitchat delta operation naming a node (chitchat 0.11's encoding).
fn node_op(out: &mut Vec<u8>, id: &str, generation: u64, gossip: SocketAddr) {
    out.push(0);
    str_bytes(out, id);
    out.extend_from_slice(&generation.to_le_bytes());
    let SocketAddr::V4(v4) = gossip else {
        unreachable!()
    };
    out.push(4);
    out.extend_from_slice(&v4.ip().octets());
    out.extend_from_slice(&v4.port().to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // last gc version
    out.extend_from_slice(&0u64.to_le_bytes()); // from version
}

fn kv_op(out: &mut Vec<u8>, key: &str, value: &str, version: u64) {
    out.push(1);
    str_bytes(out, key);
    str_bytes(out, value);
    out.extend_from_slice(&version.to_le_bytes());
    out.push(0);
}

/// A SynAck whose digest names `digest` (heartbeat 1, versions 0) and
/// whose delta holds `ops` in one plain block. chitchat applies a delta
/// only to nodes it knows, and learns nodes from digests.
fn syn_ack(digest: &[(&str, u64, SocketAddr)], ops: &[u8]) -> Vec<u8> {
    let mut m = 45_139u16.to_le_bytes().to_vec();
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(&(digest.len() as u16).to_le_bytes());
    for (id, generation, gossip) in digest {
        let mut node = Vec::new();
        node_op(&mut node, id, *generation, *gossip);
        // The node op's encoding without its tag and its two versions is
        // the chitchat id.
        m.extend_from_slice(&node[1..node.len() - 16]);
        m.extend_from_slice(&1u64.to_le_bytes()); // heartbeat
        m.extend_from_slice(&0u64.to_le_bytes()); // last gc version
        m.extend_from_slice(&0u64.to_le_bytes()); // max version
    }
    m.push(2);
    m.extend_from_slice(&(ops.len() as u16).to_le_bytes());
    m.extend_from_slice(ops);
    m.push(0);
    m
}

async fn send_gossip(net: &MemNet, from: SocketAddr, to: SocketAddr, message: &[u8], counter: u64) {
    let socket = net.bind(from).await.unwrap();
    let key = GridKey::new(KEY.to_vec()).unwrap();
    let mut buf = Vec::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    wire::seal(
        &key,
        &wire::Header {
            kind: Kind::Gossip,
            session: 77,
            counter,
            unix_ms: now,
            frag: (0, 1),
            sender: "rogue",
            recipient: "n0",
        },
        message,
        &mut buf,
    );
    socket.send_to(&buf, to).await.unwrap();
}

async fn value_of(node: &MeshNode, observer: &str, key: &str) -> Option<String> {
    node.values_with_prefix(key)
        .await
        .into_iter()
        .find(|(n, rest, _, _)| n == observer && rest.is_empty())
        .map(|(_, _, v, _)| v)
}

#[tokio::test(start_paused = true)]
async fn crafted_gossip_neither_stops_a_node_nor_rewrites_its_state() {
    let net = Arc::new(MemNet::new());
    let mut registry = Registry::default();
    let n0 = MeshNode::start(settings(0), net.clone(), Some(&mut registry))
        .await
        .unwrap();
    let n1 = MeshNode::start(settings(1), net.clone(), None)
        .await
        .unwrap();
    n0.set_local("mark", "mine").await;
    let mut waited = Duration::ZERO;
    while value_of(&n1, "n0", "mark").await.is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += Duration::from_millis(200);
        assert!(waited < Duration::from_secs(30), "the grid never formed");
    }
    let rogue: SocketAddr = "127.0.6.99:7946".parse().unwrap();
    let generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;

    // 1. A key at version 5 with a max version of 1: chitchat 0.11 asserts
    //    max_version >= every key's version and its task ends.
    let mut ops = Vec::new();
    node_op(&mut ops, "ghost", generation, rogue);
    kv_op(&mut ops, "site", "x", 5);
    ops.push(2);
    ops.extend_from_slice(&1u64.to_le_bytes());
    let ghost = [("ghost", generation, rogue)];
    send_gossip(&net, rogue, addr(0), &syn_ack(&ghost, &ops), 1).await;

    // 2. A compressed bomb: 40 blocks of 64 KiB of zeros in 2 KiB.
    let block = zstd::bulk::compress(&vec![0u8; 65_535], 3).unwrap();
    let mut bomb = 45_139u16.to_le_bytes().to_vec();
    bomb.extend_from_slice(&[0, 2]);
    for _ in 0..40 {
        bomb.push(1);
        bomb.extend_from_slice(&(block.len() as u16).to_le_bytes());
        bomb.extend_from_slice(&block);
    }
    bomb.push(0);
    send_gossip(&net, rogue, addr(0), &bomb, 2).await;

    // 3. A delta about n0 itself, and one about n1 under a generation in
    //    the far future (which would take the id over).
    let mut ops = Vec::new();
    node_op(&mut ops, "n0", generation, addr(0));
    kv_op(&mut ops, "mark", "forged", 1_000_000);
    send_gossip(&net, rogue, addr(0), &syn_ack(&[], &ops), 3).await;
    let mut ops = Vec::new();
    node_op(&mut ops, "n1", u64::MAX, rogue);
    kv_op(&mut ops, "mark", "forged", 1);
    send_gossip(&net, rogue, addr(0), &syn_ack(&[], &ops), 4).await;

    // n0 still gossips: a value n1 sets now reaches it, and n0's own value
    // is still its own.
    tokio::time::sleep(Duration::from_secs(1)).await;
    n1.set_local("mark", "after").await;
    let mut waited = Duration::ZERO;
    while value_of(&n0, "n1", "mark").await.as_deref() != Some("after") {
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += Duration::from_millis(200);
        assert!(
            waited < Duration::from_secs(20),
            "n0 stopped taking gossip after the crafted messages"
        );
    }
    assert_eq!(value_of(&n0, "n0", "mark").await.as_deref(), Some("mine"));
    assert_eq!(value_of(&n1, "n0", "mark").await.as_deref(), Some("mine"));
    assert_eq!(value_of(&n0, "ghost", "site").await, None);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for reason in ["versions", "inflation", "future_generation"] {
        assert!(
            text.contains(&format!(
                "gemba_mesh_gossip_refused_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason} not counted:\n{}",
            text.lines()
                .filter(|l| l.contains("gossip"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(text.contains("gemba_mesh_gossip_self_deltas_total 1"));
    // And n1 still sees its link to n0 up: n0 kept answering probes.
    let graph = n1.graph().await;
    assert!(graph
        .edges
        .iter()
        .any(|e| e.source == "n1" && e.target == "n0" && e.state == gemba_mesh::LinkState::Up));
    n0.shutdown().await;
    n1.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_gossip_ends_says_so_instead_of_staying_half_alive() {
    let net = Arc::new(MemNet::new());
    let n0 = MeshNode::start(settings(0), net.clone(), None)
        .await
        .unwrap();
    // Nothing has failed yet.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), n0.gossip_failed())
            .await
            .is_err()
    );
    // The mesh socket goes away under the node: chitchat's task ends.
    net.unplug(addr(0));
    let why = tokio::time::timeout(Duration::from_secs(5), n0.gossip_failed())
        .await
        .expect("the end of gossip was not reported");
    assert!(why.starts_with("gossip stopped"), "{why}");
    n0.shutdown().await;

    // A node stopped on purpose reports nothing.
    let n1 = MeshNode::start(settings(1), net.clone(), None)
        .await
        .unwrap();
    n1.shutdown().await;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), n1.gossip_failed())
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn a_captured_datagram_is_good_once_and_for_its_recipient_only() {
    let net = Arc::new(MemNet::new());
    let mut registry = Registry::default();
    let n0 = MeshNode::start(settings(0), net.clone(), Some(&mut registry))
        .await
        .unwrap();
    let key = GridKey::new(KEY.to_vec()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let probe = |recipient: &'static str, counter: u64| {
        let mut buf = Vec::new();
        wire::seal(
            &key,
            &wire::Header {
                kind: Kind::ProbeRequest,
                session: 5,
                counter,
                unix_ms: now,
                frag: (0, 1),
                sender: "n1",
                recipient,
            },
            &9u64.to_be_bytes(),
            &mut buf,
        );
        buf
    };
    // What n1 sent n0, captured on the path.
    let captured = probe("n0", 1);
    let first = net.bind("127.0.6.50:7946".parse().unwrap()).await.unwrap();
    first.send_to(&captured, addr(0)).await.unwrap();
    // Resent from another address: the window is n1's, not the address's.
    let elsewhere = net.bind("127.0.6.51:7946".parse().unwrap()).await.unwrap();
    elsewhere.send_to(&captured, addr(0)).await.unwrap();
    // Signed for another node, and for "any" outside gossip.
    elsewhere.send_to(&probe("n2", 2), addr(0)).await.unwrap();
    elsewhere.send_to(&probe("*", 3), addr(0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "gemba_mesh_dropped_packets_total{reason=\"replayed\"} 1",
        "gemba_mesh_dropped_packets_total{reason=\"misdirected\"} 2",
        "gemba_mesh_packets_received_total{kind=\"probe_request\"} 1",
    ] {
        assert!(
            text.contains(line),
            "{line} missing:\n{}",
            text.lines()
                .filter(|l| l.contains("packets"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // The one accepted request was answered, to where it came from.
    let mut buf = [0u8; 512];
    let (len, _) = tokio::time::timeout(Duration::from_secs(1), first.recv_from(&mut buf))
        .await
        .expect("no reply")
        .unwrap();
    let reply = wire::open(&key, &buf[..len]).unwrap();
    assert_eq!((reply.sender, reply.recipient), ("n0", "n1"));
    n0.shutdown().await;
}
