//! Five real `gemba run` processes on loopback: they converge through one
//! seed, notice a SIGKILLed node, and take it back when it restarts.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn five_processes_converge_detect_a_kill_and_recover_after_restart() {
    let dir = TempDir::new("processes");
    let key = write_key(dir.path());
    let seed = "127.0.2.1:7946";
    let mut nodes: Vec<NodeProcess> = (0..5)
        .map(|i| {
            let ip = format!("127.0.2.{}", i + 1);
            let s = (i > 0).then_some(seed);
            NodeProcess::start(
                &format!("p{i}"),
                &format!("site{}", i % 3),
                &ip,
                s,
                &key,
                dir.path(),
            )
        })
        .collect();

    let all: Vec<&NodeProcess> = nodes.iter().collect();
    let took = wait_all(&all, Duration::from_secs(30), |g| edges_all_up(g, 5)).unwrap();
    eprintln!("converged in {took:?}");
    // Every node serves the same graph (node states and edge states).
    let view = |g: &serde_json::Value| {
        let mut v: Vec<String> = g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{}>{}:{}", e["source"], e["target"], e["state"]))
            .collect();
        v.extend(
            g["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| format!("{}:{}:{}", n["id"], n["site"], n["state"])),
        );
        v.sort();
        v
    };
    let first = view(&graph(&nodes[0].http).unwrap());
    for n in &nodes[1..] {
        assert_eq!(
            view(&graph(&n.http).unwrap()),
            first,
            "{} serves another graph",
            n.id
        );
    }

    nodes[3].kill();
    let survivors: Vec<&NodeProcess> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, n)| n)
        .collect();
    let took = wait_all(&survivors, Duration::from_secs(15), |g| {
        node_state(g, "p3") == Some("down")
    })
    .unwrap();
    eprintln!("kill detected by every survivor in {took:?}");
    for n in &survivors {
        let g = graph(&n.http).unwrap();
        for id in ["p0", "p1", "p2", "p4"] {
            assert_eq!(node_state(&g, id), Some("up"), "{} blames {id}", n.id);
        }
    }

    nodes[3].restart();
    let all: Vec<&NodeProcess> = nodes.iter().collect();
    let took = wait_all(&all, Duration::from_secs(30), |g| {
        edges_all_up(g, 5) && g["nodes"].as_array().is_some_and(|n| n.len() == 5)
    })
    .unwrap();
    eprintln!("restarted node rejoined and every edge recovered in {took:?}");
}
