//! Three `gemba run` processes on loopback: a server that enrolls `srv-1`
//! and `db-1` in its nodes file, the real `db-1`, and a rogue that holds
//! the grid key, calls itself `db-1` and checks a service that is down.
//! The rogue's failing results never reach the server's escalator: the
//! server neither shows them nor acts on `db-1`.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{get, write_key, NodeProcess, TempDir, BIN};

/// `gemba node key` for a node id and data dir: `<id> <public-key>`.
fn node_key(id: &str, data: &Path) -> String {
    let out = Command::new(BIN)
        .args([
            "node",
            "key",
            &format!("--node-id={id}"),
            &format!("--data-dir={}", data.display()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn policy(port: u16, quiet: &str) -> String {
    format!(
        "[mesh]\ngossip_interval = \"200ms\"\n\
         [escalator]\nquiet_period = \"{quiet}\"\n\
         [[level]]\nlevel = 1\nname = \"reboot\"\nrun = [\"/bin/true\"]\n\
         [[check]]\nname = \"web\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {port}\ninterval = \"1s\"\nlevel = 1\n"
    )
}

#[test]
fn a_rogue_with_the_grid_key_but_not_db1s_identity_cannot_make_a_server_act_on_db1() {
    let dir = TempDir::new("impostor");
    let key = write_key(dir.path());
    // db-1's service answers; the port the rogue checks does not.
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = service.local_addr().unwrap().port();
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::thread::spawn(move || for _ in service.incoming() {});

    let data = |id: &str| dir.path().join(id);
    // Enrol the server and the real db-1, as an operator would.
    let nodes_file = dir.path().join("nodes");
    for id in ["srv-1", "db-1"] {
        let line = node_key(id, &data(id));
        let (_, pk) = line.split_once(' ').unwrap();
        let out = Command::new(BIN)
            .args([
                "node",
                "enroll",
                id,
                pk,
                &format!("--nodes-file={}", nodes_file.display()),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    // The rogue has a data dir of its own, so a key of its own.
    let rogue_key = node_key("db-1", &data("rogue"));
    assert_ne!(rogue_key, node_key("db-1", &data("db-1")));

    let config = |name: &str, text: String| {
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    };
    let srv_cfg = config(
        "srv-1",
        format!(
            "[node]\nserver = true\n{}\n",
            policy(up, "1s").replacen(
                "[mesh]\n",
                &format!("[mesh]\nnodes_file = \"{}\"\n", nodes_file.display()),
                1
            )
        ),
    );
    let db_cfg = config(
        "db-1",
        format!("[node]\nserver = false\n{}", policy(up, "1s")),
    );
    let rogue_cfg = config(
        "rogue",
        format!("[node]\nserver = false\n{}", policy(down, "1s")),
    );
    let start = |id: &str, ip: &str, cfg: &Path, data_dir: &Path| {
        let mut args = vec![
            "run".to_string(),
            format!("--config={}", cfg.display()),
            format!("--node-id={id}"),
            format!("--listen={ip}:7946"),
            format!("--http={ip}:8777"),
            format!("--grid-key-file={}", key.display()),
            format!("--data-dir={}", data_dir.display()),
        ];
        if ip != "127.0.14.1" {
            args.push("--seed=127.0.14.1:7946".to_string());
        }
        NodeProcess::with_args(id, ip, args)
    };
    let srv = start("srv-1", "127.0.14.1", &srv_cfg, &data("srv-1"));
    let _db = start("db-1", "127.0.14.2", &db_cfg, &data("db-1"));

    // The server sees db-1's own result, passing.
    let checks = |base: &str| -> Option<serde_json::Value> {
        let (status, body) = get(&format!("{base}/api/v1/checks")).ok()?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    };
    let db_web = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v["checks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|c| c["scope"] == "node:db-1" && c["check"] == "web")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let began = Instant::now();
    loop {
        if let Some(v) = checks(&srv.http) {
            if db_web(&v).iter().any(|c| c["state"] == "passing") {
                break;
            }
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the server never saw db-1's own result"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Now the rogue: same grid key, same node id, its own key.
    let _rogue = start("db-1", "127.0.14.3", &rogue_cfg, &data("rogue"));
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(12) {
        if let Some(v) = checks(&srv.http) {
            for c in db_web(&v) {
                assert_eq!(
                    c["state"], "passing",
                    "the rogue's result about db-1 reached the server: {c}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let (_, body) = get(&format!("{}/api/v1/escalations", srv.http)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["escalations"].as_array().unwrap().is_empty(),
        "the server acted: {v}"
    );
    // And it counted why.
    let (_, metrics) = get(&format!("{}/metrics", srv.http)).unwrap();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("gemba_mesh_gossip_refused_total{reason=\"bad_signature\"}")
            && !l.ends_with(" 0")),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("gossip_refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
