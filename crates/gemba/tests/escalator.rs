//! The escalator end to end with real processes: a toy service watched by
//! Debian's Nagios plugins (`check_tcp`, `check_procs`) and a `process`
//! check, killed, and restarted by the escalation; then two servers on one
//! store, where each step runs exactly once.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const PLUGINS: &str = "/usr/lib/nagios/plugins";

fn plugins_present() -> bool {
    let ok = Path::new(PLUGINS).join("check_tcp").exists()
        && Path::new(PLUGINS).join("check_procs").exists();
    if !ok {
        eprintln!("SKIP: {PLUGINS}/check_tcp and check_procs are missing (apt-get install monitoring-plugins-basic)");
    }
    ok
}

/// A restart script (run through /bin/sh: executing a file another test
/// thread may still hold open for writing fails with ETXTBSY): starts `python3 -m http.server` detached, writes its
/// pid, and appends one line per run to `actions.log`.
fn write_service(dir: &Path, ip: &str, port: u16) -> std::path::PathBuf {
    let script = dir.join("restart.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
echo "$GEMBA_ESCALATION_ID $GEMBA_LEVEL $GEMBA_SERVER $GEMBA_NODE" >> {dir}/actions.log
if [ "$GEMBA_LEVEL" = "5" ]; then echo "prepared $GEMBA_NODE"; exit 0; fi
cd {dir}
setsid python3 -m http.server {port} --bind {ip} >/dev/null 2>&1 &
echo $! > {dir}/svc.pid
# Wait until it listens, so the step's success means something.
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  {PLUGINS}/check_tcp -H {ip} -p {port} >/dev/null 2>&1 && break
  sleep 0.1
done
echo "restarted pid $(cat {dir}/svc.pid) for $GEMBA_NODE ($GEMBA_FAILING_CHECKS)"
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn policy(dir: &Path, ip: &str, port: u16, script: &Path, tier: &str) -> String {
    format!(
        r#"
[escalator]
quiet_period = "2s"
backoff = "2s"
lease_ttl = "3s"

[[level]]
level = 5
name = "prepare"
run = ["/bin/sh", "{script}"]
timeout = "10s"
quiesce = "0s"

[[level]]
level = 6
name = "restart"
run = ["/bin/sh", "{script}", "{{node}}"]
timeout = "10s"
quiesce = "1s"

[[check]]
name = "web-port"
kind = "command"
tier = "{tier}"
command = ["{PLUGINS}/check_tcp", "-H", "{ip}", "-p", "{port}"]
interval = "1s"
fall = 2
level = 6

[[check]]
name = "web-procs"
kind = "command"
tier = "{tier}"
command = ["{PLUGINS}/check_procs", "-c", "1:", "-a", "http.server {port}"]
interval = "1s"
fall = 2
level = 6

[[check]]
name = "web-pid"
kind = "process"
tier = "{tier}"
pidfile = "{dir}/svc.pid"
interval = "1s"
fall = 2
level = 5
"#,
        script = script.display(),
        dir = dir.display(),
    )
}

fn json(url: &str) -> Option<serde_json::Value> {
    let (code, body) = get(url).ok()?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            eprintln!("{what}: after {:?}", start.elapsed());
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not within {limit:?}");
}

fn all_passing(base: &str, n: usize) -> bool {
    json(&format!("{base}/api/v1/checks")).is_some_and(|v| {
        let c = v["checks"].as_array().cloned().unwrap_or_default();
        c.len() >= n && c.iter().all(|c| c["state"] == "passing")
    })
}

fn escalations(base: &str) -> Vec<serde_json::Value> {
    json(&format!("{base}/api/v1/escalations"))
        .and_then(|v| v["escalations"].as_array().cloned())
        .unwrap_or_default()
}

fn kill_service(dir: &Path) -> u32 {
    let pid: u32 = std::fs::read_to_string(dir.join("svc.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    pid
}

struct Service<'a>(&'a Path);
impl Drop for Service<'_> {
    fn drop(&mut self) {
        if let Ok(p) = std::fs::read_to_string(self.0.join("svc.pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-9", p.trim()])
                .status();
        }
    }
}

#[test]
fn a_killed_service_is_restarted_by_the_escalation_and_journaled() {
    if !plugins_present() {
        return;
    }
    let dir = TempDir::new("escalator-e2e");
    let (ip, port) = ("127.0.12.1", 18_121);
    let script = write_service(dir.path(), ip, port);
    // First start, by hand.
    assert!(std::process::Command::new("/bin/sh")
        .arg(&script)
        .env("GEMBA_LEVEL", "0")
        .status()
        .unwrap()
        .success());
    let _svc = Service(dir.path());
    std::fs::remove_file(dir.path().join("actions.log")).unwrap();
    let config = dir.path().join("gemba.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ntags = [\"web\"]\n{}",
            policy(dir.path(), ip, port, &script, "web")
        ),
    )
    .unwrap();
    let args = |id: &str| {
        vec![
            "run".to_string(),
            format!("--config={}", config.display()),
            format!("--node-id={id}"),
            format!("--listen={ip}:7946"),
            format!("--http={ip}:8777"),
            format!("--data-dir={}", dir.path().join("data").display()),
        ]
    };
    let mut node = NodeProcess::with_args("web-1", ip, args("web-1"));
    let base = node.http.clone();
    wait_for("all three checks pass", Duration::from_secs(20), || {
        all_passing(&base, 3)
    });
    assert!(
        escalations(&base).is_empty(),
        "a healthy service escalates nothing"
    );

    let old = kill_service(dir.path());
    wait_for(
        "the escalation is resolved",
        Duration::from_secs(30),
        || {
            escalations(&base)
                .first()
                .is_some_and(|e| e["phase"]["phase"] == "resolved")
        },
    );
    let new: u32 = std::fs::read_to_string(dir.path().join("svc.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(old, new, "a new service process runs");
    assert!(all_passing(&base, 3));
    let list = escalations(&base);
    assert_eq!(list.len(), 1, "one escalation: {list:#?}");
    let id = list[0]["id"].as_u64().unwrap();
    let e = json(&format!("{base}/api/v1/escalations/{id}")).expect("the escalation's record");
    // web-pid requires level 5, so the chain is 5 then 6.
    assert_eq!(e["chain"], serde_json::json!([5, 6]));
    let kinds: Vec<&str> = e["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "decision",
            "step-start",
            "step-end",
            "step-start",
            "step-end",
            "verify",
            "resolved"
        ],
        "{e:#}"
    );
    let outputs: Vec<&str> = e["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["output"].as_str().unwrap())
        .collect();
    assert!(outputs[0].contains("prepared web-1"), "{outputs:?}");
    assert!(outputs[1].contains("restarted pid"), "{outputs:?}");
    let log = std::fs::read_to_string(dir.path().join("actions.log")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");

    // The console shows it.
    let (_, page) = get(&format!("{base}/escalations/{id}")).unwrap();
    assert!(
        page.contains("restarted pid") && page.contains("ph-resolved"),
        "{page}"
    );
    let (_, page) = get(&format!("{base}/checks")).unwrap();
    assert_eq!(page.matches(r#"class="check""#).count(), 3);

    // The journal survives a restart of gemba.
    node.restart();
    wait_for(
        "the journal is served after a restart",
        Duration::from_secs(20),
        || {
            escalations(&base)
                .first()
                .is_some_and(|e| e["id"] == 1 && e["phase"]["phase"] == "resolved")
        },
    );
}

#[test]
fn two_servers_on_one_store_run_each_step_exactly_once() {
    if !plugins_present() {
        return;
    }
    let dir = TempDir::new("escalator-two");
    let key = write_key(dir.path());
    let (agent_ip, port) = ("127.0.13.1", 18_131);
    let script = write_service(dir.path(), agent_ip, port);
    assert!(std::process::Command::new("/bin/sh")
        .arg(&script)
        .env("GEMBA_LEVEL", "0")
        .status()
        .unwrap()
        .success());
    let _svc = Service(dir.path());
    std::fs::remove_file(dir.path().join("actions.log")).unwrap();
    let store = dir.path().join("shared.db");
    let config = dir.path().join("gemba.toml");
    let shared = format!(
        "{}[store]\nurl = \"sqlite://{}\"\n",
        policy(dir.path(), agent_ip, port, &script, "web"),
        store.display()
    );
    std::fs::write(&config, shared).unwrap();
    let start = |id: &str, ip: &str, server: bool, tags: &str| {
        let node_cfg = dir.path().join(format!("{id}.toml"));
        let policy_text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &node_cfg,
            format!("[node]\nserver = {server}\ntags = [{tags}]\n{policy_text}"),
        )
        .unwrap();
        let mut args = vec![
            "run".to_string(),
            format!("--config={}", node_cfg.display()),
            format!("--node-id={id}"),
            format!("--listen={ip}:7946"),
            format!("--http={ip}:8777"),
            format!("--grid-key-file={}", key.display()),
            format!("--data-dir={}", dir.path().join(id).display()),
        ];
        if ip != agent_ip {
            args.push(format!("--seed={agent_ip}:7946"));
        }
        NodeProcess::with_args(id, ip, args)
    };
    let _agent = start("web-1", agent_ip, false, "\"web\"");
    let s1 = start("srv-1", "127.0.13.2", true, "");
    let s2 = start("srv-2", "127.0.13.3", true, "");
    for s in [&s1, &s2] {
        let base = s.http.clone();
        wait_for(
            &format!("{} sees the agent's checks pass", s.id),
            Duration::from_secs(30),
            || all_passing(&base, 3),
        );
    }
    kill_service(dir.path());
    let base = s1.http.clone();
    wait_for(
        "the escalation is resolved",
        Duration::from_secs(40),
        || {
            escalations(&base)
                .iter()
                .any(|e| e["phase"]["phase"] == "resolved")
        },
    );
    // Let the other server's deferral run out and show it does not act.
    std::thread::sleep(Duration::from_secs(5));
    let log = std::fs::read_to_string(dir.path().join("actions.log")).unwrap();
    let mut lines: Vec<&str> = log.lines().collect();
    eprintln!("actions:\n{log}");
    lines.sort();
    let steps: Vec<String> = lines
        .iter()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    let mut unique = steps.clone();
    unique.dedup();
    assert_eq!(steps, unique, "a step ran twice: {log}");
    assert_eq!(steps, ["1 5", "1 6"], "{log}");
    // Both servers serve the same record from the shared store.
    let e1 = escalations(&s1.http);
    let e2 = escalations(&s2.http);
    assert_eq!(e1.len(), 1);
    assert_eq!(e1, e2);
}
