//! A real client: Puppet 7 (Debian's `puppet`, installed by .ci/run)
//! runs `puppet apply --reports=http` against a `gemba run` server, with
//! the token in the reporturl as Puppet's http processor sends it. The
//! manifests make every kind of problem the morning market must name: a
//! non-idempotent exec, an SCM fetch failing on several nodes at once, a
//! service that fails only on a fresh node, and a flaky deploy.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{get, TempDir, BIN};

const TOKEN: &str = "puppet-real-token-0123456789";
const HTTP: &str = "127.0.16.1:8777";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const MANIFEST: &str = r#"
$role = $trusted['certname'] ? {
  /^web/ => 'web',
  /^app-9/ => 'deploy',
  default => 'app',
}
if $role == 'web' {
  # Runs every time: nothing tells Puppet it is already done.
  exec { 'always-restart-app': command => '/bin/true' }
  $svc = $trusted['certname'] ? { 'web-new' => '/bin/false', default => '/bin/true' }
  service { 'app':
    ensure   => running,
    provider => base,
    start    => $svc,
    status   => $svc,
  }
}
if $role == 'app' {
  exec { 'fetch-from-scm': command => '/bin/sh -c "echo fatal: unable to access https://git.example.net/app.git/: Could not resolve host: git.example.net; exit 128"', logoutput => true }
}
if $role == 'deploy' {
  exec { 'deploy-app': command => "/usr/bin/test -f ${facts['deploy_flag']}" }
}
"#;

fn apply(dir: &Path, certname: &str, flag: &Path) {
    let d = |s: &str| dir.join(certname).join(s).display().to_string();
    let out = Command::new("puppet")
        .args([
            "apply",
            "--confdir",
            &d("conf"),
            "--vardir",
            &d("var"),
            "--codedir",
            &d("code"),
            "--logdir",
            &d("log"),
            "--rundir",
            &d("run"),
            "--certname",
            certname,
            "--reports=http",
            &format!("--reporturl=http://puppet:{TOKEN}@{HTTP}/api/v1/reports/puppet"),
        ])
        .arg(dir.join("site.pp"))
        .env("FACTER_deploy_flag", flag)
        .stdin(Stdio::null())
        .output()
        .expect("run puppet");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("Unable to submit report"),
        "puppet could not send its report: {err}"
    );
}

fn problems() -> serde_json::Value {
    let (code, body) = get(&format!("http://{HTTP}/api/v1/problems")).unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn kind_of(p: &serde_json::Value, resource: &str) -> Option<String> {
    p["problems"]
        .as_array()?
        .iter()
        .find(|x| x["sample"]["resource"] == resource)
        .map(|x| x["kind"].as_str().unwrap_or("").to_string())
}

#[test]
fn a_real_puppet_apply_fills_the_morning_market() {
    if Command::new("puppet").arg("--version").output().is_err() {
        eprintln!("SKIPPED: puppet is not installed (apt-get install puppet; .ci/run does)");
        return;
    }
    let dir = TempDir::new("puppet-real");
    std::fs::write(dir.path().join("site.pp"), MANIFEST).unwrap();
    let server = Server(
        Command::new(BIN)
            .args([
                "run",
                &format!("--http={HTTP}"),
                "--listen=127.0.16.1:7946",
                &format!("--data-dir={}", dir.path().join("data").display()),
                "--node-id=srv",
            ])
            .env("GEMBA_API_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start gemba"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&format!("http://{HTTP}/healthz")).is_err() {
        assert!(Instant::now() < deadline, "gemba did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let flag = dir.path().join("deploy.flag");
    // An established web node, three runs.
    for _ in 0..3 {
        apply(dir.path(), "web-1", &flag);
    }
    // Three app nodes fetch from a source that is down, at the same time,
    // twice: six failed runs in a row, nothing fine between them.
    for _ in 0..2 {
        std::thread::scope(|s| {
            for n in ["app-1", "app-2", "app-3"] {
                let flag = &flag;
                let dir = dir.path();
                s.spawn(move || apply(dir, n, flag));
            }
        });
    }
    // A freshly bootstrapped web node whose service will not start.
    apply(dir.path(), "web-new", &flag);
    // A deploy that fails, works, fails again.
    apply(dir.path(), "app-9", &flag);
    std::fs::write(&flag, "").unwrap();
    apply(dir.path(), "app-9", &flag);
    std::fs::remove_file(&flag).unwrap();
    apply(dir.path(), "app-9", &flag);

    let p = problems();
    assert_eq!(
        kind_of(&p, "Exec[always-restart-app]").as_deref(),
        Some("not-idempotent"),
        "{p:#}"
    );
    assert_eq!(
        kind_of(&p, "Exec[fetch-from-scm]").as_deref(),
        Some("external-outage"),
        "{p:#}"
    );
    assert_eq!(
        kind_of(&p, "Service[app]").as_deref(),
        Some("bootstrap-failure"),
        "{p:#}"
    );
    assert_eq!(
        kind_of(&p, "Exec[deploy-app]").as_deref(),
        Some("intermittent"),
        "{p:#}"
    );

    // The market names them, and an owner can be assigned from the CLI.
    let market = Command::new(BIN)
        .args(["market", &format!("--from=http://{HTTP}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&market.stdout);
    assert!(market.status.success(), "{text}");
    for want in [
        "not-idempotent",
        "external-outage",
        "bootstrap-failure",
        "intermittent",
        "Exec[always-restart-app]",
    ] {
        assert!(
            text.contains(want),
            "{want} missing from the market:\n{text}"
        );
    }
    let id = p["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kind"] == "external-outage")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = Command::new(BIN)
        .args([
            "problem",
            "assign",
            &id,
            "alice",
            &format!("--from=http://{HTTP}"),
        ])
        .env("GEMBA_API_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(BIN)
        .args([
            "problem",
            "assign",
            &id,
            "bob",
            &format!("--from=http://{HTTP}"),
        ])
        .env_remove("GEMBA_API_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success(), "assigned without the token");
    let (_, body) = get(&format!("http://{HTTP}/api/v1/problems/{id}")).unwrap();
    assert!(body.contains("\"owner\":\"alice\""), "{body}");
    drop(server);
}
