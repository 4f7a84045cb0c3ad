//! A node as `gemba run` assembles it: one drain stops every task and frees
//! every port; a store that cannot be opened turns the server role off but
//! not the agent; opening a store that another server holds locked does not
//! stall the probes this node answers.

use gemba_testkit::temp_dir;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gemba_core::{Config, Overrides};
use gemba_mesh::{GridKey, LinkState, MemNet, Net, UdpNet};
use gemba_node::{HttpListen, Node, NodeOptions, Phase, ServerRole};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

fn key() -> GridKey {
    GridKey::new(b"node-test-grid-key-0123456789abc".to_vec()).unwrap()
}

fn config(
    id: &str,
    listen: SocketAddr,
    seed: Option<SocketAddr>,
    dir: &Path,
    toml: &str,
) -> Config {
    let o = Overrides {
        node_id: Some(id.into()),
        mesh_listen: Some(listen.to_string()),
        seeds: seed.map(|s| vec![s.to_string()]).unwrap_or_default(),
        data_dir: Some(dir.join(id)),
        ..Default::default()
    };
    gemba_testkit::config_with(toml, &o)
}

const FAST_MESH: &str =
    "[mesh]\ngossip_interval = \"100ms\"\nprobe_interval = \"200ms\"\nprobe_timeout = \"100ms\"\n";

/// A check that fails at once (nothing listens on port 1).
const CLOSED_PORT_CHECK: &str =
    "[[check]]\nname = \"closed\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 1\ninterval = \"1s\"\n";

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_leaves_nothing_running_and_frees_its_ports() {
    let dir = temp_dir("drain");
    let listen: SocketAddr = "127.0.91.1:7946".parse().unwrap();
    let c = config(
        "n1",
        listen,
        None,
        &dir,
        &format!("{FAST_MESH}[http]\nlisten = \"127.0.91.1:0\"\n{CLOSED_PORT_CHECK}"),
    );
    for round in 0..2 {
        let node = Node::start(&c, Arc::new(UdpNet), key()).await.unwrap();
        assert_eq!(node.server_role(), &ServerRole::On);
        // Wait until a result went the whole way: runner, fold, escalator.
        let h = node.escalator().unwrap().clone();
        let start = Instant::now();
        while h.checks().await.is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no check result reached the escalator"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let http = node.http_addr().unwrap();
        assert!(http_get(http, "/healthz")
            .await
            .contains("\"server_role\":\"on\""));
        for phase in [Phase::Http, Phase::Checks, Phase::Escalator, Phase::Store] {
            assert!(
                node.running(phase) > 0,
                "round {round}: {phase:?} has tasks"
            );
        }
        let report = node.shutdown().await;
        assert_eq!(
            report.order,
            Phase::ALL,
            "HTTP first, the store's upkeep last"
        );
        assert!(
            report.aborted.is_empty(),
            "every task stopped within its grace: {report:?}"
        );
        assert!(report.panicked.is_empty(), "{report:?}");
        // Every socket is free again: UDP and the TCP probe listener on the
        // mesh port, and HTTP.
        drop(
            tokio::net::UdpSocket::bind(listen)
                .await
                .expect("mesh UDP port freed"),
        );
        drop(
            tokio::net::TcpListener::bind(listen)
                .await
                .expect("TCP probe listener stopped"),
        );
        drop(
            tokio::net::TcpListener::bind(http)
                .await
                .expect("HTTP port freed"),
        );
        assert!(h.plan().await.is_none(), "the escalator stopped");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A node whose `[store]` is the damaged file `store`: it starts, its
/// server role off, and why.
async fn start_on_a_bad_store(
    dir: &Path,
    store: &Path,
    listen: &str,
    checks: &str,
) -> (Node, String) {
    let c = config(
        "n1",
        listen.parse().unwrap(),
        None,
        dir,
        &format!(
            "[store]\nurl = \"sqlite://{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n{checks}",
            store.display()
        ),
    );
    let node = Node::start(&c, Arc::new(MemNet::new()), key())
        .await
        .unwrap();
    let ServerRole::Off(why) = node.server_role().clone() else {
        panic!("server role should be off: {:?}", node.server_role());
    };
    (node, why)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_opened_turns_the_server_role_off_and_the_agent_keeps_going() {
    let dir = temp_dir("badstore");
    let bad = dir.join("corrupt.db");
    std::fs::write(&bad, vec![b'x'; 8192]).unwrap();
    let (node, why) = start_on_a_bad_store(&dir, &bad, "10.9.0.1:7946", CLOSED_PORT_CHECK).await;
    // The damage is named, with the way to recover.
    assert!(
        why.contains(&format!(
            "store {} is damaged: the file cannot be read as a store",
            bad.display()
        )) && why.contains("To recover: restore"),
        "{why}"
    );
    assert!(node.escalator().is_none());
    let health = http_get(node.http_addr().unwrap(), "/healthz").await;
    // Unhealthy, with the reason: systemd or a load balancer acts on it.
    assert!(health.starts_with("HTTP/1.0 503"), "{health}");
    assert!(
        health.contains("\"status\":\"failing\"")
            && health.contains("\"server\":{\"reason\"")
            && health.contains("is damaged"),
        "{health}"
    );
    // The agent still runs its checks and publishes them.
    let start = Instant::now();
    loop {
        let published = node.mesh().values_with_prefix("c:").await;
        if published
            .iter()
            .any(|(n, k, _, _)| n == "n1" && k == "closed")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the agent published nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = node.shutdown().await;
    assert!(
        report.aborted.is_empty() && report.panicked.is_empty(),
        "{report:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// One runtime thread, as `gemba run` has: a store open that blocked it
/// would stop this node from answering probes while it waits.
#[tokio::test(flavor = "current_thread")]
async fn probes_keep_answering_while_the_store_waits_for_another_servers_lock() {
    let dir = temp_dir("locked");
    let net: Arc<dyn Net> = Arc::new(MemNet::new());
    let a_addr: SocketAddr = "10.9.1.1:7946".parse().unwrap();
    let b_addr: SocketAddr = "10.9.1.2:7946".parse().unwrap();
    let a = Node::start_with(
        &config(
            "a",
            a_addr,
            None,
            &dir,
            &format!("{FAST_MESH}[node]\nserver = false\n"),
        ),
        net.clone(),
        key(),
        NodeOptions {
            http: HttpListen::Off,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let b_config = config(
        "b",
        b_addr,
        Some(a_addr),
        &dir,
        &format!("{FAST_MESH}[node]\nserver = true\n"),
    );
    let gemba_core::StoreLocation::Sqlite(db) = b_config.store.location.clone() else {
        panic!("the default store is SQLite")
    };
    drop(gemba_store::SqliteStore::open(&db).unwrap());
    // Another server holds the write lock for 4 s.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(4));
        c.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let b_start = tokio::spawn({
        let net = net.clone();
        async move {
            Node::start_with(
                &b_config,
                net,
                key(),
                NodeOptions {
                    http: HttpListen::Off,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
        }
    });
    let start = Instant::now();
    let mut seen_up_while_b_starts = false;
    while !b_start.is_finished() {
        let g = a.mesh().graph().await;
        if g.edges
            .iter()
            .any(|e| e.source == "a" && e.target == "b" && e.state == LinkState::Up)
        {
            seen_up_while_b_starts = true;
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen_up_while_b_starts,
        "a saw b's link up only after b's store opened: the open blocked b's runtime"
    );
    let b = b_start.await.unwrap();
    assert_eq!(
        b.server_role(),
        &ServerRole::On,
        "the store opened once the lock was released"
    );
    holder.join().unwrap();
    b.shutdown().await;
    a.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// An agent is the mesh, its own checks and its samples: it opens no
/// store and runs nothing of the server's stages, which a server does.
#[tokio::test(flavor = "current_thread")]
async fn an_agent_starts_no_store_market_or_timeline_task() {
    let dir = temp_dir("agent-tasks");
    let net: Arc<dyn Net> = Arc::new(MemNet::new());
    let server_addr: SocketAddr = "10.9.2.1:7946".parse().unwrap();
    let agent_addr: SocketAddr = "10.9.2.2:7946".parse().unwrap();
    let opts = || NodeOptions {
        http: HttpListen::Off,
        ..Default::default()
    };
    let server = Node::start_with(
        &config("srv", server_addr, None, &dir, FAST_MESH),
        net.clone(),
        key(),
        opts(),
    )
    .await
    .unwrap();
    // Joining through a seed without a word on its role: an agent.
    let agent_config = config(
        "agent",
        agent_addr,
        Some(server_addr),
        &dir,
        &format!("{FAST_MESH}{CLOSED_PORT_CHECK}[[process]]\nname = \"init\"\npidfile = \"/nonexistent.pid\"\n"),
    );
    assert!(!agent_config.node.server);
    let agent = Node::start_with(&agent_config, net.clone(), key(), opts())
        .await
        .unwrap();
    assert_eq!(agent.server_role(), &ServerRole::None);
    let tasks = agent.tasks();
    let names: Vec<&str> = tasks.iter().map(|(_, n)| *n).collect();
    for (phase, name) in &tasks {
        assert!(
            !matches!(phase, Phase::Store | Phase::Escalator),
            "an agent runs {name} in {phase:?}: {names:?}"
        );
    }
    assert!(
        names.contains(&"agent-checks") && names.contains(&"sampling"),
        "{names:?}"
    );
    // The server runs its stages; none of them runs on the agent.
    let server_tasks: Vec<&str> = server.tasks().iter().map(|(_, n)| *n).collect();
    for stage_task in [
        "market",
        "metrics-writer",
        "incidents",
        "escalator",
        "samples-from-agents",
    ] {
        assert!(server_tasks.contains(&stage_task), "{server_tasks:?}");
        assert!(!names.contains(&stage_task), "the agent runs {stage_task}");
    }
    assert!(
        !dir.join("agent").join("gemba.db").exists(),
        "the agent created a store"
    );
    agent.shutdown().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A small tmpfs mounted for a test, unmounted when it ends.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts one of `mib` MiB, or says why it cannot (not root, no mount).
    fn mount(name: &str, mib: u32) -> Result<Tmpfs, String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting a tmpfs needs root".into());
        }
        let dir = temp_dir(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .map_err(|e| format!("mount: {e}"))?
            .success();
        if !ok {
            return Err("mount -t tmpfs failed".into());
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server whose SQLite store's disk fills up: `/healthz` answers 503
/// naming the full disk, and 200 again once there is room, without a
/// restart. (On a 16 MiB tmpfs; skipped, saying why, where it cannot be
/// mounted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_when_the_stores_disk_is_full() {
    let disk = match Tmpfs::mount("fulldisk", 16) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let c = config(
        "n1",
        "10.9.0.3:7946".parse().unwrap(),
        None,
        &disk.0,
        "[http]\nlisten = \"127.0.0.1:0\"\n",
    );
    let node = Node::start(&c, Arc::new(MemNet::new()), key())
        .await
        .unwrap();
    let http = node.http_addr().unwrap();
    let health = |path: &'static str| async move { http_get(http, path).await };
    assert!(
        health("/healthz").await.starts_with("HTTP/1.0 200"),
        "{}",
        health("/healthz").await
    );
    // Fill the disk but for a MiB.
    let filler = disk.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
    }
    let start = Instant::now();
    let full = loop {
        let h = health("/healthz").await;
        if h.starts_with("HTTP/1.0 503") {
            break h;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(full.contains("the store's disk is full"), "{full}");
    std::fs::remove_file(&filler).unwrap();
    let start = Instant::now();
    loop {
        let h = health("/healthz").await;
        if h.starts_with("HTTP/1.0 200") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.shutdown().await;
}

/// A store with garbage written in the middle of the file (one page of the
/// journal): the server role does not start, and says which table is
/// damaged and how to recover; the agent runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_damaged_in_the_middle_keeps_the_server_role_off_naming_the_table() {
    let dir = temp_dir("midstore");
    let db = dir.join("gemba.db");
    {
        let store = gemba_store::open(&gemba_core::StoreLocation::Sqlite(db.clone()))
            .await
            .unwrap();
        for i in 0..3000u64 {
            store
                .append(gemba_store::JournalRow {
                    seq: 0,
                    escalation: Some(1),
                    scope: "node:n1".into(),
                    at_ms: 1_000 + i,
                    kind: "step-end".into(),
                    text: format!("restart {i} finished: exit 0, and words enough to fill pages"),
                    server: "n1".into(),
                })
                .await
                .unwrap();
        }
    }
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096 * (bytes.len() / 4096 / 2);
    for (i, b) in bytes[page..page + 4096].iter_mut().enumerate() {
        *b = (i * 13 + 5) as u8;
    }
    std::fs::write(&db, &bytes).unwrap();
    let (node, why) = start_on_a_bad_store(&dir, &db, "10.9.0.4:7946", "").await;
    assert!(
        why.contains("is damaged: damaged table journal (") && why.contains("To recover"),
        "{why}"
    );
    let health = http_get(node.http_addr().unwrap(), "/healthz").await;
    assert!(
        health.starts_with("HTTP/1.0 503") && health.contains("damaged table journal"),
        "{health}"
    );
    node.shutdown().await;
}
