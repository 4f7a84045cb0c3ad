//! The escalator end to end with real processes: a toy service watched by
//! Debian's Nagios plugins (`check_tcp`, `check_procs`) and a `process`
//! check, killed, and restarted by the escalation; then two servers on one
//! store (a SQLite file, a PostgreSQL database), where each step runs
//! exactly once; and a server killed during a step on PostgreSQL, whose
//! escalation the other server takes over, verifies and does not repeat.

use crate::common;

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
/// pid, and appends one line per run to `actions.log`. With a file `slow`
/// beside it, level 6 waits 3 s before restarting (a window to kill its
/// server in).
fn write_service(dir: &Path, ip: &str, port: u16) -> std::path::PathBuf {
    let script = dir.join("restart.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
echo "$GEMBA_ESCALATION_ID $GEMBA_LEVEL $GEMBA_SERVER $GEMBA_NODE" >> {dir}/actions.log
if [ "$GEMBA_LEVEL" = "5" ]; then echo "prepared $GEMBA_NODE"; exit 0; fi
if [ -f {dir}/slow ]; then sleep 3; fi
cd {dir}
# A restart stops what is left of the old service first.
pkill -9 -f "http.server {port} --bind {ip}"
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

/// An agent running the toy service and two servers sharing `store` (a
/// `[store]` section), all checks passing.
struct Grid {
    dir: TempDir,
    _svc: ServiceGuard,
    _agent: NodeProcess,
    servers: Vec<NodeProcess>,
}

/// Kills the toy service when the test ends, whichever step started it.
struct ServiceGuard(String);
impl Drop for ServiceGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill")
            .args(["-9", "-f", &self.0])
            .status();
    }
}

fn grid(name: &str, net: u8, store: impl Fn(&Path) -> String) -> Grid {
    let dir = TempDir::new(name);
    let key = write_key(dir.path());
    let agent_ip = format!("127.0.{net}.1");
    let port = 18_000 + u16::from(net) * 10 + 1;
    let script = write_service(dir.path(), &agent_ip, port);
    assert!(std::process::Command::new("/bin/sh")
        .arg(&script)
        .env("GEMBA_LEVEL", "0")
        .status()
        .unwrap()
        .success());
    let svc = ServiceGuard(format!("http.server {port} --bind {agent_ip}"));
    std::fs::remove_file(dir.path().join("actions.log")).unwrap();
    let config = dir.path().join("gemba.toml");
    let shared = format!(
        "{}{}",
        policy(dir.path(), &agent_ip, port, &script, "web"),
        store(dir.path())
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
    let agent = start("web-1", &agent_ip, false, "\"web\"");
    let servers = vec![
        start("srv-1", &format!("127.0.{net}.2"), true, ""),
        start("srv-2", &format!("127.0.{net}.3"), true, ""),
    ];
    for s in &servers {
        let base = s.http.clone();
        wait_for(
            &format!("{} sees the agent's checks pass", s.id),
            Duration::from_secs(30),
            || all_passing(&base, 3),
        );
    }
    Grid {
        dir,
        _svc: svc,
        _agent: agent,
        servers,
    }
}

/// The steps that ran, as "escalation level server" lines, sorted; fails
/// when one (escalation, level) ran twice.
fn steps_ran_once(dir: &Path) -> Vec<String> {
    let log = std::fs::read_to_string(dir.join("actions.log")).unwrap();
    eprintln!("actions:\n{log}");
    let mut lines: Vec<String> = log
        .lines()
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .collect();
    lines.sort();
    let steps: Vec<String> = lines
        .iter()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    let mut unique = steps.clone();
    unique.dedup();
    assert_eq!(steps, unique, "a step ran twice: {log}");
    lines
}

fn two_servers_run_each_step_exactly_once(name: &str, net: u8, store: impl Fn(&Path) -> String) {
    if !plugins_present() {
        return;
    }
    let g = grid(name, net, store);
    kill_service(g.dir.path());
    let base = g.servers[0].http.clone();
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
    let steps: Vec<String> = steps_ran_once(g.dir.path())
        .iter()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(steps, ["1 5", "1 6"]);
    // Both servers serve the same record from the shared store.
    let e1 = escalations(&g.servers[0].http);
    let e2 = escalations(&g.servers[1].http);
    assert_eq!(e1.len(), 1);
    assert_eq!(e1, e2);
}

#[test]
fn two_servers_on_one_sqlite_file_run_each_step_exactly_once() {
    two_servers_run_each_step_exactly_once("escalator-two", 13, |dir| {
        format!(
            "[store]\nurl = \"sqlite://{}\"\n",
            dir.join("shared.db").display()
        )
    });
}

#[test]
fn two_servers_on_one_postgresql_run_each_step_exactly_once() {
    let Some((_pg, url)) = postgres("escalator-two") else {
        return;
    };
    two_servers_run_each_step_exactly_once("escalator-two-pg", 14, |_| {
        format!("[store]\nurl = \"{url}\"\n")
    });
}

#[test]
fn a_server_killed_during_a_step_is_taken_over_verified_and_not_repeated() {
    if !plugins_present() {
        return;
    }
    let Some((_pg, url)) = postgres("escalator-kill") else {
        return;
    };
    let mut g = grid("escalator-kill", 15, |_| {
        format!("[store]\nurl = \"{url}\"\n")
    });
    std::fs::write(g.dir.path().join("slow"), "").unwrap();
    kill_service(g.dir.path());
    // Level 6 (restart) starts on one server and sleeps 3 s before acting:
    // kill that server then. Its step goes on as an orphan and restarts the
    // service; no server hears how it ended.
    let log = g.dir.path().join("actions.log");
    let mut runner = String::new();
    wait_for("level 6 starts", Duration::from_secs(40), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        match text.lines().find(|l| l.starts_with("1 6 ")) {
            Some(l) => {
                runner = l.split(' ').nth(2).unwrap_or_default().to_string();
                true
            }
            None => false,
        }
    });
    let (dead, alive) = if runner == "srv-1" { (0, 1) } else { (1, 0) };
    assert_eq!(g.servers[dead].id, runner, "{runner}");
    g.servers[dead].kill();
    let base = g.servers[alive].http.clone();
    let start = Instant::now();
    while !escalations(&base)
        .first()
        .is_some_and(|e| e["phase"]["phase"] == "resolved")
    {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "the other server did not take over and resolve it: {:#}",
            json(&format!("{base}/api/v1/escalations/1")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("taken over and resolved after {:?}", start.elapsed());
    let e = json(&format!("{base}/api/v1/escalations/1")).expect("the record");
    let journal = e["journal"].as_array().unwrap();
    let adopted = journal
        .iter()
        .find(|j| j["kind"] == "adopted")
        .unwrap_or_else(|| panic!("no take-over in the journal: {e:#}"));
    assert_eq!(adopted["server"], g.servers[alive].id.as_str(), "{e:#}");
    assert!(
        adopted["text"]
            .as_str()
            .unwrap()
            .contains("level 6 was running; its outcome is unknown, so it is not re-run"),
        "{e:#}"
    );
    let kinds: Vec<&str> = journal.iter().filter_map(|j| j["kind"].as_str()).collect();
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["adopted", "resolved"],
        "resolved by the checks after the take-over: {e:#}"
    );
    // Give the survivor time to do anything it wrongly would.
    std::thread::sleep(Duration::from_secs(3));
    let lines = steps_ran_once(g.dir.path());
    assert_eq!(
        lines,
        [format!("1 5 {runner}"), format!("1 6 {runner}")],
        "the completed level 5 and the interrupted level 6 ran once, both on the killed server"
    );
}
