//! A real partition: three gemba processes in three network namespaces
//! created here, each pair joined by its own veth link, so that cutting
//! the A–B link (`ip link set down`) breaks exactly that path while gossip
//! still flows through C. Every node must agree that A→B and B→A are down,
//! and agree again that they are up once the link is restored.
//!
//! Needs root and iproute2; skips with a message otherwise. Namespaces and
//! links are removed afterwards, even when the test fails.

use crate::common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Netns {
    names: Vec<String>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct NsNode {
    ns: String,
    id: &'static str,
    addr: &'static str,
    child: std::process::Child,
}

impl Drop for NsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn graph_in(ns: &str, addr: &str) -> Option<serde_json::Value> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            BIN,
            "graph",
            "--json",
            "--from",
            &format!("http://{addr}:8777"),
        ])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn wait_agree(
    nodes: &[NsNode],
    limit: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if nodes
            .iter()
            .all(|n| graph_in(&n.ns, n.addr).is_some_and(|g| ok(&g)))
        {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let views: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}: {:?}", n.id, graph_in(&n.ns, n.addr)))
                .collect();
            panic!(
                "nodes did not agree within {limit:?}:\n{}",
                views.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn partitioned_link_is_red_on_every_node_then_green_after_restore() {
    if !is_root() {
        eprintln!("SKIPPED: the partition test creates network namespaces and needs root");
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIPPED: the partition test needs iproute2 (apt-get install iproute2)");
        return;
    }
    let tag = std::process::id() % 100_000;
    let (a, b, c) = (
        format!("gmbA{tag}"),
        format!("gmbB{tag}"),
        format!("gmbC{tag}"),
    );
    for n in [&a, &b, &c] {
        let _ = Command::new("ip").args(["netns", "del", n]).output();
        ip(&["netns", "add", n]);
    }
    let _cleanup = Netns {
        names: vec![a.clone(), b.clone(), c.clone()],
    };
    // One veth per pair; each node advertises an address on one of its
    // links and the others route to it over their direct link only.
    let links = [
        (&a, "vab", "10.201.1.1/30", &b, "vba", "10.201.1.2/30"),
        (&a, "vac", "10.201.2.1/30", &c, "vca", "10.201.2.2/30"),
        (&b, "vbc", "10.201.3.1/30", &c, "vcb", "10.201.3.2/30"),
    ];
    for (n1, i1, a1, n2, i2, a2) in links {
        ip(&[
            "link", "add", i1, "netns", n1, "type", "veth", "peer", "name", i2, "netns", n2,
        ]);
        ip(&["-n", n1, "addr", "add", a1, "dev", i1]);
        ip(&["-n", n2, "addr", "add", a2, "dev", i2]);
        ip(&["-n", n1, "link", "set", i1, "up"]);
        ip(&["-n", n2, "link", "set", i2, "up"]);
    }
    for n in [&a, &b, &c] {
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    let (addr_a, addr_b, addr_c) = ("10.201.1.1", "10.201.3.1", "10.201.2.2");
    let route_a_to_b = [
        "-n",
        a.as_str(),
        "route",
        "replace",
        "10.201.3.1/32",
        "via",
        "10.201.1.2",
        "dev",
        "vab",
    ];
    ip(&route_a_to_b);
    ip(&[
        "-n",
        &b,
        "route",
        "replace",
        "10.201.2.2/32",
        "via",
        "10.201.3.2",
        "dev",
        "vbc",
    ]);
    ip(&[
        "-n",
        &c,
        "route",
        "replace",
        "10.201.1.1/32",
        "via",
        "10.201.2.1",
        "dev",
        "vca",
    ]);

    let dir = TempDir::new("netns");
    let key = write_key(dir.path());
    let start = |ns: &String, id: &'static str, addr: &'static str, seed: &str| NsNode {
        ns: ns.clone(),
        id,
        addr,
        child: Command::new("ip")
            .args(["netns", "exec", ns, BIN, "run"])
            .args([
                format!("--node-id={id}"),
                format!("--site=site-{id}"),
                format!("--listen={addr}:7946"),
                format!("--http={addr}:8777"),
                format!("--seed={seed}:7946"),
                format!("--grid-key-file={}", key.display()),
                format!("--data-dir={}", dir.path().join(id).display()),
            ])
            .env("RUST_LOG", "warn")
            // The API listens on a non-loopback address, so it needs a token.
            .env("GEMBA_API_TOKEN", "partition-test-token-0123456789")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    };
    let nodes = vec![
        start(&a, "A", addr_a, addr_c),
        start(&b, "B", addr_b, addr_c),
        start(&c, "C", addr_c, addr_a),
    ];
    let took = wait_agree(&nodes, Duration::from_secs(30), |g| edges_all_up(g, 3));
    eprintln!("3 namespaced nodes converged in {took:?}");

    ip(&["-n", &a, "link", "set", "vab", "down"]);
    let took = wait_agree(&nodes, Duration::from_secs(15), |g| {
        edge_state(g, "A", "B") == Some("down")
            && edge_state(g, "B", "A") == Some("down")
            && edge_state(g, "A", "C") == Some("up")
            && edge_state(g, "C", "B") == Some("up")
    });
    eprintln!("every node agreed A<->B is down {took:?} after the cut");

    ip(&["-n", &a, "link", "set", "vab", "up"]);
    // Taking a link down flushes the routes through it.
    ip(&route_a_to_b);
    let took = wait_agree(&nodes, Duration::from_secs(15), |g| edges_all_up(g, 3));
    eprintln!("every node agreed all links are up {took:?} after the restore");
}
