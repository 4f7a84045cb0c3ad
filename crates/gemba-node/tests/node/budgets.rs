//! Budgets that keep a node answering under hostile load: report parsing
//! (nesting checked first, a few parse threads, a fair share per client)
//! and connections (a cap with a reserve, a deadline for request heads).

use crate::common;

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

/// Raises this process's soft limit on open files to `want`, if the hard
/// limit allows.
fn raise_file_limit(want: u64) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_max < want {
            return false;
        }
        lim.rlim_cur = lim.rlim_cur.max(want);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_slow_connections_do_not_stop_healthz_or_the_mesh() {
    // The test's own connections live in the same process as the nodes.
    if !raise_file_limit(12_000) {
        eprintln!("SKIPPED: the hard limit on open files is under 12000 (ulimit -Hn)");
        return;
    }
    let dir = temp_dir("connection-cap");
    let policy = r#"
[mesh]
gossip_interval = "100ms"
probe_interval = "200ms"
probe_timeout = "100ms"

[http]
max_connections = 1000
header_timeout = "3s"
"#;
    let srv = Node::start(
        &config("srv", "127.0.97.11", None, &dir, policy),
        Arc::new(UdpNet),
        key(),
    )
    .await
    .unwrap();
    let web = Node::start(
        &config(
            "web-1",
            "127.0.97.12",
            Some("127.0.97.11:7946"),
            &dir,
            policy,
        ),
        Arc::new(UdpNet),
        key(),
    )
    .await
    .unwrap();
    let addr = srv.http_addr().unwrap();
    let link_states = |n: &Node| -> Vec<String> {
        n.mesh()
            .local_links()
            .into_iter()
            .map(|(_, l)| format!("{:?}", l.state).to_lowercase())
            .collect()
    };
    wait_for("both links up", Duration::from_secs(20), || async {
        link_states(&srv) == ["up"] && link_states(&web) == ["up"]
    })
    .await;

    // 5,000 connections that each send a request head one line at a time,
    // a line a second.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = Vec::new();
    for _ in 0..5_000 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s
            .write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
            .await;
        slow.push(s);
    }
    let flood_started = tokio::time::Instant::now();
    let mut healthz_ok_since = None;
    let mut seen_down = Vec::new();
    for tick in 0..16 {
        // One more header line on every connection still open.
        for s in &mut slow {
            let _ = s
                .write_all(format!("X-Slow-{tick}: 1\r\n").as_bytes())
                .await;
        }
        let code = try_get(addr, "/healthz").await;
        match (code, healthz_ok_since) {
            (200, None) => healthz_ok_since = Some(flood_started.elapsed()),
            (200, Some(_)) => {}
            (_, Some(_)) => panic!("/healthz failed ({code}) after it had answered"),
            (_, None) => {}
        }
        for n in [&srv, &web] {
            let states = link_states(n);
            if states != ["up"] {
                seen_down.push(format!("{}: {states:?}", n.mesh().id()));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let since = healthz_ok_since.expect("/healthz never answered during the flood");
    // The reserve's 32 slots were taken by the flood too; their 2 s head
    // deadline frees them.
    assert!(
        since < Duration::from_secs(4),
        "/healthz answered only after {since:?}"
    );
    assert!(
        seen_down.is_empty(),
        "links not up during the flood: {seen_down:?}"
    );
    // The loopback CLI gets in through the reserve with any path.
    let (code, body) = http(addr, "GET", "/api/v1/links", true, "").await;
    assert_eq!(code, 200, "{body}");

    // Every slow connection has been closed by now: most at once, the
    // ones served once their head passed its deadline.
    let mut closed = 0;
    for s in &mut slow {
        let mut buf = [0u8; 512];
        if matches!(
            tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await,
            Ok(Ok(_)) | Ok(Err(_))
        ) {
            closed += 1;
        }
    }
    assert_eq!(closed, 5_000, "connections still open");
    let (_, metrics) = http(addr, "GET", "/metrics", false, "").await;
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gemba_http_connections_refused_total "))
        .and_then(|v| v.parse().ok())
        .expect("the refused counter");
    assert!(refused >= 3_900.0, "{refused} refused");
    drop(slow);
    srv.shutdown().await;
    web.shutdown().await;
}
