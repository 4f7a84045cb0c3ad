//! Budgets that keep a node answering under hostile load: report parsing
//! (nesting checked first, a few parse threads, a fair share per client)
//! and connections (a cap with a reserve, a deadline for request heads).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gemba_mesh::UdpNet;
use gemba_node::Node;

const ORDINARY: &str = "--- !ruby/object:Puppet::Transaction::Report\nhost: web-1\ntime: '2026-11-22T01:11:57.7+00:00'\ntransaction_uuid: 5c0f0000-0000-4000-8000-000000000003\nreport_format: 12\nstatus: unchanged\nenvironment: production\nconfiguration_version: 17\nlogs: []\nmetrics: {}\nresource_statuses: {}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_nesting_bombs_at_once_get_a_clear_400_and_the_node_keeps_answering() {
    let dir = temp_dir("parse-budget");
    let c = config("srv", "127.0.97.1", None, &dir, "");
    let node = Node::start(&c, Arc::new(UdpNet), key()).await.unwrap();
    let addr = node.http_addr().unwrap();
    // 200 KB of unclosed flow sequences: before the nesting check the
    // YAML loader spent minutes on a body like this.
    let bomb = Arc::new(format!("logs: {}", "[".repeat(200_000)));
    let started = tokio::time::Instant::now();
    let bombs: Vec<_> = (0..8)
        .map(|_| {
            let bomb = bomb.clone();
            tokio::spawn(async move {
                http_typed(addr, "/api/v1/reports/puppet", "application/x-yaml", &bomb).await
            })
        })
        .collect();
    let (code, body) = http(addr, "GET", "/healthz", false, "").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_typed(
        addr,
        "/api/v1/reports/puppet",
        "application/x-yaml",
        ORDINARY,
    )
    .await;
    assert_eq!(code, 200, "an ordinary report is read: {body}");
    for b in bombs {
        let (code, body) = b.await.unwrap();
        assert_eq!(code, 400, "{body}");
        assert!(body.contains("nest deeper than 64"), "{body}");
    }
    // A guard against a hang, not a speed figure (BENCHMARKS.md has it).
    assert!(started.elapsed() < Duration::from_secs(10));
    node.shutdown().await;
}
