//! `gemba import` finishes the job: through a PostgreSQL outage in the
//! middle of an import, it waits for the server, sends on, prints its
//! counts and exits 0, and every report is stored once; run again, every
//! report is a duplicate. With no server to take them, it exits non-zero
//! naming what is unsent. (PostgreSQL is a throwaway server the test
//! starts; skipped with the reason when it is not installed.)

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{write_key, NodeProcess, TempDir, BIN};

fn report(n: usize) -> String {
    format!(
        "--- !ruby/object:Puppet::Transaction::Report\nhost: node-{n}\ntime: '2026-11-22T02:{:02}:{:02}.0+00:00'\ntransaction_uuid: 6d1f0000-0000-4000-8000-{n:012}\nreport_format: 12\nstatus: failed\nenvironment: production\nconfiguration_version: 17\nlogs: []\nmetrics: {{}}\nresource_statuses:\n  Service[shop]:\n    title: shop\n    resource_type: Service\n    file: /etc/puppet/code/site.pp\n    line: 3\n    failed: true\n    changed: false\n    events:\n    - property: ensure\n      status: failure\n      message: \"Could not start Service[shop]\"\n",
        n / 60,
        n % 60
    )
}

#[test]
fn an_import_through_a_postgresql_outage_stores_every_report_once() {
    let Some((cluster, url)) = common::postgres("import") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = TempDir::new("import");
    let key = write_key(dir.path());
    let config = dir.path().join("srv.toml");
    std::fs::write(
        &config,
        format!("[node]\nserver = true\n[store]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let ip = "127.0.44.1";
    let node = NodeProcess::with_args(
        "srv",
        ip,
        vec![
            "run".into(),
            format!("--config={}", config.display()),
            "--node-id=srv".into(),
            format!("--listen={ip}:7946"),
            format!("--http={ip}:8777"),
            format!("--grid-key-file={}", key.display()),
            format!("--data-dir={}", dir.path().join("srv").display()),
        ],
    );
    let start = Instant::now();
    while common::get(&format!("{}/healthz", node.http)).map(|r| r.0) != Ok(200) {
        assert!(start.elapsed() < Duration::from_secs(30), "no server");
        std::thread::sleep(Duration::from_millis(100));
    }
    const N: usize = 400;
    let reports = dir.path().join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    for n in 0..N {
        std::fs::write(reports.join(format!("{n:04}.yaml")), report(n)).unwrap();
    }
    let store = rt
        .block_on(gemba_store::open_any(
            &gemba_core::StoreLocation::Postgres {
                url: url.clone(),
                password_file: None,
            },
        ))
        .unwrap();
    let stored = || {
        rt.block_on(store.runs_after(0, 10_000))
            .map(|r| r.len())
            .unwrap_or(0)
    };

    let import = Command::new(BIN)
        .args(["import", reports.to_str().unwrap(), "--to", &node.http])
        .args(["--retry-for", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once a tenth is in, PostgreSQL goes away for 3 s.
    let start = Instant::now();
    while stored() < N / 10 {
        assert!(start.elapsed() < Duration::from_secs(60), "nothing stored");
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.stop().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    cluster.start_again().unwrap();
    let out = import.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("the server is unavailable") && stderr.contains("takes reports again"),
        "the wait is said: {stderr}"
    );
    assert!(
        stdout.contains(&format!("{N} files: ")) && stdout.contains("0 files refused, 0 unsent"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Re-running the same import is safe"),
        "{stdout}"
    );
    // (The test's own pooled connections died with the restart: the first
    // reads may fail.)
    let runs = (0..5)
        .find_map(|_| rt.block_on(store.runs_after(0, 10_000)).ok())
        .expect("the store answers again");
    let mut nodes: Vec<String> = runs.iter().map(|r| r.node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!((runs.len(), nodes.len()), (N, N), "each report stored once");

    // Again: nothing new, every report a duplicate.
    let out = Command::new(BIN)
        .args(["import", reports.to_str().unwrap(), "--to", &node.http])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("0 runs accepted, {N} duplicate")),
        "{stdout}"
    );

    // No server at all, and no time to wait: unsent, exit 1.
    let out = Command::new(BIN)
        .args(["import", reports.to_str().unwrap()])
        .args(["--to", "http://127.0.44.2:8777", "--retry-for", "0s"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("{N} unsent")), "{stdout}");
    assert!(
        stderr.contains(&format!("{N} of {N} files unsent")),
        "{stderr}"
    );
}
