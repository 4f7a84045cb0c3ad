//! The binary's command line as a user meets it: config errors, the
//! example config, refusing to listen publicly without a token, the HTTP
//! API's answers to bad requests, and `gemba graph`.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn gemba(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("GEMBA_API_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_config_names_file_key_and_reason_and_exits_64() {
    let dir = TempDir::new("badconfig");
    let path = dir.path().join("gemba.toml");
    std::fs::write(
        &path,
        "[node]\nid = \"web 1\"\n[mesh]\nprobe_interval = \"fast\"\nseeds = [\"nohost\"]\n[http]\nlisten = \"0.0.0.0:8777\"\n",
    )
    .unwrap();
    let (code, _, err) = gemba(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    let file = path.display().to_string();
    for needle in [
        format!("{file}: node.id: node id \"web 1\" contains ' '"),
        format!("{file}: mesh.probe_interval: invalid duration \"fast\""),
        format!("{file}: mesh.seeds[0]: \"nohost\" is not a host:port address"),
        format!("{file}: http.listen: 0.0.0.0:8777 is reachable beyond loopback"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }

    std::fs::write(&path, "[mesh]\nprobe_interval = 5\n").unwrap();
    let (code, _, err) = gemba(&["config", "check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(
        err.contains(&format!("{file}: line 2")) && err.contains("invalid type"),
        "{err}"
    );

    // A setting of another kind of check: refused, naming both.
    std::fs::write(
        &path,
        "[[check]]\nname = \"web\"\nkind = \"tcp\"\nport = 80\nurl = \"http://127.0.0.1/\"\n",
    )
    .unwrap();
    let (code, _, err) = gemba(&["config", "check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("check[0].url: a tcp check does not use `url` (it belongs to http checks)"),
        "{err}"
    );

    std::fs::write(&path, "[mesh]\ntopolgy = \"sites\"\n").unwrap();
    let (code, _, err) = gemba(&["config", "check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(err.contains("unknown field `topolgy`"), "{err}");

    let (code, _, err) = gemba(&["run", "--config", "/nonexistent/gemba.toml"]);
    assert_eq!(code, 64);
    assert!(
        err.contains("cannot read config file /nonexistent/gemba.toml"),
        "{err}"
    );
}

#[test]
fn printed_example_config_is_valid_and_matches_the_committed_one() {
    let (code, out, _) = gemba(&["config", "example"]);
    assert_eq!(code, 0);
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../gemba.example.toml"
    ))
    .unwrap();
    assert_eq!(out, committed);
    let dir = TempDir::new("example");
    let path = dir.path().join("gemba.toml");
    std::fs::write(&path, out).unwrap();
    let (code, out, err) = gemba(&[
        "config",
        "check",
        "--config",
        path.to_str().unwrap(),
        "--node-id",
        "x",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration is valid"));
}

#[test]
fn http_api_rejects_bad_paths_and_methods_counts_them_and_keeps_serving() {
    let dir = TempDir::new("http");
    let key = write_key(dir.path());
    let node = NodeProcess::start("h0", "lab", "127.0.4.1", None, &key, dir.path());
    wait_all(&[&node], Duration::from_secs(15), |g| {
        node_state(g, "h0") == Some("up")
    })
    .unwrap();

    let (status, body) = get(&format!("{}/no/such/thing", node.http)).unwrap();
    assert_eq!(status, 404);
    assert!(
        body.contains("no such endpoint: GET /no/such/thing"),
        "{body}"
    );
    let (status, _) = get(&format!("{}/api/v1/graph/%ff%00", node.http)).unwrap();
    assert_eq!(status, 404);

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .delete(&format!("{}/api/v1/graph", node.http))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);

    let (status, metrics) = get(&format!("{}/metrics", node.http)).unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("gemba_http_responses_total{code=\"404\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gemba_http_responses_total{code=\"405\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gemba_mesh_dropped_packets_total{reason=\"bad_signature\"} 0"),
        "{metrics}"
    );

    let (status, body) = get(&format!("{}/healthz", node.http)).unwrap();
    assert_eq!((status, body.contains("\"ok\"")), (200, true));
}

#[test]
fn graph_command_prints_nodes_and_broken_links() {
    let dir = TempDir::new("graphcmd");
    let key = write_key(dir.path());
    let a = NodeProcess::start("g0", "east", "127.0.5.1", None, &key, dir.path());
    let b = NodeProcess::start(
        "g1",
        "west",
        "127.0.5.2",
        Some("127.0.5.1:7946"),
        &key,
        dir.path(),
    );
    wait_all(&[&a, &b], Duration::from_secs(20), |g| edges_all_up(g, 2)).unwrap();
    let (code, out, err) = gemba(&["graph", "--from", &a.http]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("grid as seen by g0: 2 nodes, 2 links"),
        "{out}"
    );
    assert!(
        out.contains("g1") && out.contains("west") && out.contains("no broken links"),
        "{out}"
    );
    drop(b);
    let (code, _, err) = gemba(&["graph", "--from", "http://127.0.5.9:1"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach http://127.0.5.9:1/api/v1/graph"),
        "{err}"
    );
}

#[test]
fn public_http_without_token_is_refused() {
    let (code, _, err) = gemba(&[
        "run",
        "--http",
        "0.0.0.0:18777",
        "--listen",
        "127.0.6.1:7946",
    ]);
    assert_eq!(code, 64);
    assert!(
        err.contains("http.listen: 0.0.0.0:18777 is reachable beyond loopback"),
        "{err}"
    );
}

#[test]
fn a_grid_key_others_can_read_or_a_short_token_is_refused_by_check_and_run() {
    let dir = TempDir::new("cli-secrets");
    let key = write_key(dir.path());
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let key_arg = format!("--grid-key-file={}", key.display());
    for cmd in [&["config", "check"][..], &["run"][..]] {
        let mut args = cmd.to_vec();
        args.extend([key_arg.as_str(), "--listen", "127.0.6.2:7946"]);
        let (code, _, err) = gemba(&args);
        assert_eq!(code, 64, "{cmd:?}: {err}");
        assert!(
            err.contains("mode 0640") && err.contains("chmod 600"),
            "{err}"
        );
    }
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check", &key_arg])
        .env("GEMBA_API_TOKEN", "too-short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("GEMBA_API_TOKEN: the token must be at least 16 characters"));
}

#[test]
fn simulate_replays_a_recorded_history_against_the_policy() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let out = std::process::Command::new(BIN)
        .args([
            "simulate",
            "--config",
            &format!("{fixtures}/policy.toml"),
            "--history",
            &format!("{fixtures}/history.jsonl"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // web-1 drops at +20 s: after the 30 s quiet period the whole chain
    // from the VM level, each step after the previous one's quiescence.
    assert!(
        text.contains("+  50.0s  escalation #1 attempt 1 level 4 (vm)"),
        "{text}"
    );
    assert!(
        text.contains("+ 170.0s  escalation #1 attempt 1 level 5 (converge)"),
        "{text}"
    );
    assert!(
        text.contains("+ 230.0s  escalation #1 attempt 1 level 6 (redeploy)"),
        "{text}"
    );
    assert!(text.contains("3 step(s) would run"), "{text}");
    // web-2's one failed smoke test settles within the quiet period.
    assert!(
        text.lines()
            .any(|l| l.contains("node:web-2") && l.contains("recovered")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("#1") && l.contains("resolved")),
        "{text}"
    );
}

#[test]
fn simulate_names_the_bad_line_of_a_history() {
    let dir = TempDir::new("simulate-bad");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let good = std::fs::read_to_string(format!("{fixtures}/history.jsonl")).unwrap();
    let mut lines: Vec<&str> = good.lines().take(4).collect();
    lines.push("{\"check\": \"ping\"}");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "simulate",
            "--config",
            &format!("{fixtures}/policy.toml"),
            "--history",
            &bad.display().to_string(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad.jsonl: line 5: not a check result"),
        "{err}"
    );
}

#[test]
fn an_invalid_policy_is_refused_with_every_error_and_exit_64() {
    let dir = TempDir::new("policy-bad");
    let cfg = dir.path().join("gemba.toml");
    std::fs::write(
        &cfg,
        "[[level]]\nlevel = 3\nname = \"restart\"\n[[check]]\nname = \"web\"\nkind = \"smtp\"\n[[check]]\nname = \"api\"\nkind = \"tcp\"\nport = 80\nlevel = 7\ncommand = []\n[[check]]\nname = \"x\"\nkind = \"command\"\ncommand = [\"/bin/check\", \"{host}\"]\n",
    )
    .unwrap();
    for cmd in [vec!["config", "check"], vec!["run"], vec!["check"]] {
        let out = std::process::Command::new(BIN)
            .args(&cmd)
            .args(["--config", &cfg.display().to_string(), "--node-id=n1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{cmd:?}: {err}");
        for want in [
            "level[0].run: level 3 (restart) has no action",
            "check[0].kind: unknown check kind \"smtp\"",
            "check[1].level: unknown level 7; defined levels: 3",
            "check[2].command[1]: bad template variable {host}",
        ] {
            assert!(err.contains(want), "{cmd:?}: missing {want:?} in {err}");
        }
    }
}

#[test]
fn check_judges_mesh_checks_on_a_running_nodes_graph_and_exits_like_a_plugin() {
    let dir = TempDir::new("check-from");
    let key = write_key(dir.path());
    let a = NodeProcess::start("c0", "s", "127.0.15.1", None, &key, dir.path());
    let b = NodeProcess::start(
        "c1",
        "s",
        "127.0.15.2",
        Some("127.0.15.1:7946"),
        &key,
        dir.path(),
    );
    wait_all(&[&a, &b], Duration::from_secs(20), |g| edges_all_up(g, 2)).unwrap();
    let cfg = dir.path().join("checks.toml");
    std::fs::write(
        &cfg,
        "[[check]]\nname = \"peer\"\nkind = \"mesh-node\"\nscope = \"global\"\nnode = \"c1\"\n[[check]]\nname = \"link\"\nkind = \"mesh-link\"\nscope = \"global\"\nsource = \"c0\"\ntarget = \"c1\"\n[[check]]\nname = \"nothing-listens\"\nkind = \"tcp\"\nscope = \"global\"\nhost = \"127.0.15.9\"\nport = 9\ntimeout = \"1s\"\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args([
                "check",
                "--config",
                &cfg.display().to_string(),
                "--node-id=c9",
            ])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = run(&["--from", &a.http]);
    assert_eq!(code, Some(2), "the tcp check is CRITICAL: {text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("peer").contains(" OK ") && line("peer").contains("node c1 is up"),
        "{text}"
    );
    assert!(
        line("link").contains(" OK ") && line("link").contains("link c0 -> c1 is up"),
        "{text}"
    );
    assert!(line("nothing-listens").contains("CRITICAL"), "{text}");
    // Without a node to ask, mesh checks cannot be judged.
    let (_, text) = run(&[]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("peer") && l.contains("UNKNOWN")),
        "{text}"
    );
}

/// `gemba … | head` closing the pipe early: the command ends quietly as
/// other tools do (killed by SIGPIPE, 141 in a shell), never with a panic
/// and a backtrace.
#[test]
fn a_pipe_closed_early_ends_a_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = Command::new(BIN)
        .args(["config", "example"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the first line is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.signal() == Some(libc::SIGPIPE) || out.status.success(),
        "{:?}: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Asking for something that does not exist (logs of a process, a chart
/// of a metric, an incident, an escalation, a problem, a post-mortem, an
/// action item, a node to retire) is an error a script can see, with a message naming it.
#[test]
fn asking_for_what_does_not_exist_exits_non_zero() {
    let dir = TempDir::new("logs-nosuch");
    let key = write_key(dir.path());
    let node = NodeProcess::start("logs1", "s", "127.0.41.1", None, &key, dir.path());
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        get(&format!("{}/healthz", node.http)).is_ok_and(|(c, _)| c == 200)
    });
    assert!(up, "the node did not answer");
    let png = dir.path().join("c.png");
    let png = png.to_str().unwrap();
    let cases: [(&[&str], &str); 10] = [
        (
            &["logs", "--process", "nosuch"],
            "no [[process]] named \"nosuch\" with log files",
        ),
        (
            &[
                "chart",
                "--process",
                "nosuch",
                "--metric",
                "rss_bytes",
                "--png",
                png,
            ],
            "no series is stored for process nosuch",
        ),
        (
            &[
                "chart", "--node", "nosuch", "--metric", "load1", "--png", png,
            ],
            "no series is stored for the host on node nosuch",
        ),
        (&["incident", "show", "I-999"], "no incident 999"),
        (&["incident", "close", "999"], "no incident 999"),
        (&["escalations", "999"], "no escalation 999"),
        (&["problem", "show", "999"], "no problem P-999"),
        (&["postmortem", "show", "999"], "I-999 has no post-mortem"),
        (&["actions", "done", "999"], "no action item 999"),
        (
            &["node", "retire", "nosuch"],
            "no node \"nosuch\" has reported to this market",
        ),
    ];
    for (args, says) in cases {
        let mut argv = args.to_vec();
        argv.extend(["--from", node.http.as_str()]);
        let (code, out, err) = gemba(&argv);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            !std::path::Path::new(png).exists(),
            "{args:?} wrote a chart"
        );
    }
}

/// A server's `/metrics` follows Prometheus' naming rules, checked by
/// Prometheus' own `promtool check metrics` (installed by `.ci/run`;
/// skipped with a message where it is missing): counters end in
/// `_total`, TCP states are one metric with a `state` label, and
/// sampled processes are on it.
#[test]
fn metrics_pass_promtool() {
    let Some(promtool) = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("skipped: promtool is not installed (apt-get install prometheus)");
        return;
    };
    let dir = TempDir::new("promtool");
    let key = write_key(dir.path());
    let config = dir.path().join("gemba.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = \"{data}\"\nserver = true\n[mesh]\nlisten = \"127.0.41.2:7946\"\ngrid_key_file = \"{key}\"\n[http]\nlisten = \"127.0.41.2:8777\"\n[metrics]\ninterval = \"1s\"\n[[process]]\nname = \"gemba\"\n",
            data = dir.path().join("data").display(),
            key = key.display()
        ),
    )
    .unwrap();
    let node = NodeProcess::with_args(
        "m1",
        "127.0.41.2",
        vec!["run".into(), format!("--config={}", config.display())],
    );
    let mut metrics = String::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok((200, m)) = get(&format!("{}/metrics", node.http)) {
            if m.contains("gemba_host_tcp_connections{") {
                metrics = m;
                break;
            }
        }
    }
    assert!(
        metrics.contains("gemba_host_tcp_connections{state=\"established\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains("gemba_host_tcp_established"), "{metrics}");
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        check
            .stdin
            .take()
            .unwrap()
            .write_all(metrics.as_bytes())
            .unwrap();
    }
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
