//! A node holding the grid key gossips a failing result about another
//! node, with the level and trust it would like: the server does not act
//! on it. The same forger's failing result about itself is believed, so
//! the path from gossip to the escalator is open and the refusal is the
//! trust rule's.

use gemba_testkit::temp_dir;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gemba_checks::{CheckResult, HardState, Status};
use gemba_core::{Config, Overrides, Scope};
use gemba_mesh::{GridKey, MemNet, MeshNode, MeshSettings};
use gemba_node::{HttpListen, Node, NodeOptions};
use tokio::time::Instant;

fn key() -> GridKey {
    GridKey::new(b"trust-test-grid-key-0123456789ab".to_vec()).unwrap()
}

fn config(id: &str, listen: &str, seed: Option<&str>, dir: &Path, toml: &str) -> Config {
    let o = Overrides {
        node_id: Some(id.into()),
        mesh_listen: Some(listen.into()),
        seeds: seed.map(|s| vec![s.to_string()]).unwrap_or_default(),
        data_dir: Some(dir.join(id)),
        ..Default::default()
    };
    gemba_testkit::config_with(toml, &o)
}

/// A result as a forger writes it: failing, with the level and trust it
/// wants servers to use.
fn forged(scope: &str, now_ms: u64) -> String {
    CheckResult {
        check: "web".into(),
        scope: scope.parse().unwrap(),
        kind: "tcp".into(),
        status: Status::Critical,
        state: HardState::Failing,
        since_ms: now_ms - 60_000,
        at_ms: now_ms,
        interval_ms: 1000,
        duration_ms: 1,
        output: "CRITICAL: forged".into(),
        perf: vec![],
        flapping: false,
        flap_percent: 0.0,
        flap_changes: 0,
        trusted: true,
        level: Some(1),
        tiers: vec![],
        observer: "db-1".into(),
    }
    .to_gossip()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_holder_cannot_make_a_server_act_on_another_node() {
    let dir = temp_dir("forged");
    // db-1's service answers: its own check passes.
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = service.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let _ = service.accept().await;
        }
    });
    let policy = format!(
        "[mesh]\ngossip_interval = \"100ms\"\nprobe_interval = \"200ms\"\nprobe_timeout = \"100ms\"\n\
         [escalator]\nquiet_period = \"1s\"\n\
         [[level]]\nlevel = 1\nname = \"reboot\"\nrun = [\"/bin/true\"]\n\
         [[check]]\nname = \"web\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {port}\ninterval = \"1s\"\nlevel = 1\n"
    );
    let net = Arc::new(MemNet::new());
    let opts = || NodeOptions {
        http: HttpListen::Off,
        ..NodeOptions::default()
    };
    let srv_c = config("srv", "10.7.0.1:7946", None, &dir, &policy);
    let server = Node::start_with(&srv_c, net.clone(), key(), opts())
        .await
        .unwrap();
    let db_c = config(
        "db-1",
        "10.7.0.2:7946",
        Some("10.7.0.1:7946"),
        &dir,
        &format!("[node]\nserver = false\n{policy}"),
    );
    let db = Node::start_with(&db_c, net.clone(), key(), opts())
        .await
        .unwrap();
    // The rogue holds the grid key and gossips like any node.
    let rogue_c = config(
        "rogue",
        "10.7.0.3:7946",
        Some("10.7.0.1:7946"),
        &dir,
        &format!("[node]\nserver = false\n{policy}"),
    );
    let rogue = MeshNode::start(
        MeshSettings::from_config(&rogue_c, key(), None),
        net.clone(),
        None,
    )
    .await
    .unwrap();

    let esc = server.escalator().expect("server role on").clone();
    let db_scope: Scope = "node:db-1".parse().unwrap();
    let rogue_scope: Scope = "node:rogue".parse().unwrap();
    let start = Instant::now();
    let mut believed_own = false;
    while start.elapsed() < Duration::from_secs(8) {
        let now = gemba_mesh::endpoint::unix_ms();
        // About db-1 under its own key, and about itself under another.
        rogue.set_local("c:web", &forged("node:db-1", now)).await;
        rogue.set_local("c:other", &forged("node:rogue", now)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        rogue.set_local("c:web", &forged("node:rogue", now)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let checks = esc.checks().await;
        if checks
            .iter()
            .any(|r| r.scope == rogue_scope && r.check == "web" && r.observer == "rogue")
        {
            believed_own = true;
        }
        assert!(
            !checks
                .iter()
                .any(|r| r.scope == db_scope
                    && (r.observer != "db-1" || r.output.contains("forged"))),
            "a result about db-1 from another node was believed: {checks:?}"
        );
    }
    assert!(
        believed_own,
        "the rogue's result about itself never arrived"
    );
    let checks = esc.checks().await;
    let db_web = checks
        .iter()
        .find(|r| r.scope == db_scope && r.check == "web")
        .expect("db-1's own result");
    assert_eq!(db_web.state, HardState::Passing);
    let escalations = esc.escalations(10).await.unwrap();
    assert!(
        escalations.iter().all(|e| e.scope != db_scope),
        "the server acted on db-1: {escalations:?}"
    );
    rogue.shutdown().await;
    db.shutdown().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
