//! A crash loop end to end: a real service (python3's http.server) killed
//! again and again under a real `gemba run`, watched by Debian's
//! `check_tcp` and a `process` check, with a webhook receiver that refuses
//! everything for its first 20 s. gemba restarts the service twice, then
//! holds the scope as a crash loop and says so once; the notices the
//! receiver refused arrive later; `gemba ack` frees the scope.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const PLUGINS: &str = "/usr/lib/nagios/plugins";

fn write_restart(dir: &Path, ip: &str, port: u16) -> std::path::PathBuf {
    let script = dir.join("restart.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
echo "$GEMBA_ESCALATION_ID $GEMBA_LEVEL" >> {dir}/actions.log
cd {dir}
setsid python3 -m http.server {port} --bind {ip} >/dev/null 2>&1 &
echo $! > {dir}/svc.pid
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  {PLUGINS}/check_tcp -H {ip} -p {port} >/dev/null 2>&1 && break
  sleep 0.1
done
echo "restarted pid $(cat {dir}/svc.pid)"
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    script
}

/// Collects webhook bodies; answers 503 until `open_at`.
fn receiver(ip: &str, open_at: Instant) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let l = TcpListener::bind(format!("{ip}:0")).unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len.min(1 << 20)];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            if Instant::now() < open_at {
                let _ = c.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            }
            if let Ok(v) = serde_json::from_slice(&body) {
                keep.lock().unwrap().push(v);
            }
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (url, got)
}

fn json(url: &str) -> Option<serde_json::Value> {
    let (code, body) = get(url).ok()?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

fn escalations(base: &str) -> Vec<serde_json::Value> {
    json(&format!("{base}/api/v1/escalations"))
        .and_then(|v| v["escalations"].as_array().cloned())
        .unwrap_or_default()
}

fn held(base: &str) -> Option<serde_json::Value> {
    escalations(base)
        .into_iter()
        .find(|e| e["phase"]["phase"] == "held")
}

fn service_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("svc.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

struct Service<'a>(&'a Path);
impl Drop for Service<'_> {
    fn drop(&mut self) {
        if let Some(p) = service_pid(self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &p.to_string()])
                .status();
        }
    }
}

#[test]
fn a_service_killed_in_a_loop_ends_in_one_crash_loop_notice_and_a_held_scope() {
    if !Path::new(PLUGINS).join("check_tcp").exists() {
        eprintln!(
            "SKIP: {PLUGINS}/check_tcp is missing (apt-get install monitoring-plugins-basic)"
        );
        return;
    }
    let dir = TempDir::new("crash-loop-e2e");
    let (ip, port) = ("127.0.12.9", 18_129);
    let script = write_restart(dir.path(), ip, port);
    assert!(std::process::Command::new("/bin/sh")
        .arg(&script)
        .status()
        .unwrap()
        .success());
    let _svc = Service(dir.path());
    std::fs::remove_file(dir.path().join("actions.log")).unwrap();
    let (hook, got) = receiver(ip, Instant::now() + Duration::from_secs(20));
    let config = dir.path().join("gemba.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[escalator]
quiet_period = "2s"

[[level]]
level = 1
name = "restart"
run = ["/bin/sh", "{script}"]
timeout = "10s"
quiesce = "1s"

[[check]]
name = "web-port"
kind = "command"
command = ["{PLUGINS}/check_tcp", "-H", "{ip}", "-p", "{port}"]
interval = "1s"
fall = 2
level = 1

[[check]]
name = "web-pid"
kind = "process"
pidfile = "{dir}/svc.pid"
interval = "1s"
fall = 2
level = 1

[[notify]]
kind = "webhook"
url = "{hook}"
"#,
            script = script.display(),
            dir = dir.path().display(),
        ),
    )
    .unwrap();
    let node = NodeProcess::with_args(
        "web-1",
        ip,
        vec![
            "run".to_string(),
            format!("--config={}", config.display()),
            "--node-id=web-1".into(),
            format!("--listen={ip}:7946"),
            format!("--http={ip}:8777"),
            format!("--data-dir={}", dir.path().join("data").display()),
        ],
    );
    let base = node.http.clone();
    let start = Instant::now();
    while json(&format!("{base}/api/v1/checks")).is_none_or(|v| {
        let c = v["checks"].as_array().cloned().unwrap_or_default();
        c.len() < 2 || c.iter().any(|c| c["state"] != "passing")
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "checks never passed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Kill the service whenever it runs, at most every 12 s, until gemba
    // holds the scope (bounded: 2 min).
    let start = Instant::now();
    let mut kills = 0;
    let mut last_kill: Option<Instant> = None;
    while held(&base).is_none() {
        assert!(start.elapsed() < Duration::from_secs(120), "never held");
        if let Some(pid) = service_pid(dir.path()) {
            if alive(pid) && last_kill.is_none_or(|t| t.elapsed() > Duration::from_secs(12)) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
                kills += 1;
                last_kill = Some(Instant::now());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("held after {kills} kills in {:?}", start.elapsed());
    assert_eq!(kills, 3);
    let e = held(&base).unwrap();
    let why = e["held_because"].as_str().unwrap();
    assert!(why.starts_with("crash loop: 3 failures in "), "{why}");
    assert!(why.ends_with("1:restart ran 2 times"), "{why}");
    let list = escalations(&base);
    assert_eq!(
        list.iter()
            .filter(|e| e["phase"]["phase"] == "resolved")
            .count(),
        2,
        "{list:#?}"
    );
    let log = std::fs::read_to_string(dir.path().join("actions.log")).unwrap();
    assert_eq!(log.lines().count(), 2, "two restarts: {log}");
    let plan = json(&format!("{base}/api/v1/plan")).unwrap();
    assert!(
        plan.to_string().contains("held (crash loop: 3 failures"),
        "{plan:#}"
    );

    // The receiver refused for 20 s; the notices still arrive, and the
    // crash loop is told exactly once.
    let start = Instant::now();
    let kinds = || -> Vec<String> {
        got.lock()
            .unwrap()
            .iter()
            .map(|v| v["kind"].as_str().unwrap_or("").to_string())
            .collect()
    };
    while kinds().iter().filter(|k| *k == "resolved").count() < 2
        || !kinds().iter().any(|k| k == "crash-loop")
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "notices not delivered: {:?}",
            kinds()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Quiet afterwards: nothing more while the service stays down.
    std::thread::sleep(Duration::from_secs(5));
    let all = got.lock().unwrap().clone();
    let loud: Vec<_> = all.iter().filter(|v| v["kind"] != "resolved").collect();
    assert_eq!(loud.len(), 1, "{all:#?}");
    let n = loud[0];
    assert_eq!(n["kind"], "crash-loop");
    assert_eq!(n["ack"], "gemba ack node:web-1");
    let text = n["text"].as_str().unwrap();
    assert!(text.contains("crash loop: 3 failures in"), "{text}");
    assert!(text.contains("web-port@node:web-1"), "{text}");
    assert!(text.contains("restarted pid"), "{text}");
    assert!(
        text.contains("to acknowledge: gemba ack node:web-1"),
        "{text}"
    );
    let (_, metrics) = get(&format!("{base}/metrics")).unwrap();
    assert!(
        metrics.contains(r#"gemba_escalations_held_total{reason="crash-loop"} 1"#),
        "{metrics}"
    );
    let journal = json(&format!("{base}/api/v1/journal")).unwrap();
    let journal = journal.to_string();
    assert!(journal.contains("notify-failed"), "{journal}");
    assert!(journal.contains("notify-delivered"), "{journal}");

    // A human acknowledges; gemba restarts the service again.
    let out = std::process::Command::new(BIN)
        .args(["ack", "node:web-1", "--from", &base])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    while service_pid(dir.path()).is_none_or(|p| !alive(p)) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not restarted after the ack"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(held(&base).is_none());
}
