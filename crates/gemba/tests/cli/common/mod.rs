//! Helpers for tests that run the real `gemba` binary as separate
//! processes on loopback addresses. Every loop here is bounded in time.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_gemba");

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("gemba-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `gemba run` process.
pub struct NodeProcess {
    pub id: String,
    pub ip: String,
    pub http: String,
    args: Vec<String>,
    child: Option<Child>,
}

impl NodeProcess {
    /// Starts node `id` on `ip` (mesh port 7946, HTTP port 8777), seeded
    /// with `seed`, using the grid key at `key`.
    pub fn start(
        id: &str,
        site: &str,
        ip: &str,
        seed: Option<&str>,
        key: &Path,
        data: &Path,
    ) -> NodeProcess {
        let mut args = vec![
            "run".to_string(),
            format!("--node-id={id}"),
            format!("--site={site}"),
            format!("--listen={ip}:7946"),
            format!("--http={ip}:8777"),
            format!("--grid-key-file={}", key.display()),
            format!("--data-dir={}", data.join(id).display()),
        ];
        if let Some(s) = seed {
            args.push(format!("--seed={s}"));
        }
        let mut n = NodeProcess {
            id: id.to_string(),
            ip: ip.to_string(),
            http: format!("http://{ip}:8777"),
            args,
            child: None,
        };
        n.spawn();
        n
    }

    /// Starts `gemba` with `args` as node `id` serving HTTP on `ip:8777`.
    pub fn with_args(id: &str, ip: &str, args: Vec<String>) -> NodeProcess {
        let mut n = NodeProcess {
            id: id.to_string(),
            ip: ip.to_string(),
            http: format!("http://{ip}:8777"),
            args,
            child: None,
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let child = Command::new(BIN)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("GEMBA_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start gemba");
        self.child = Some(child);
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes a grid key file.
pub fn write_key(dir: &Path) -> PathBuf {
    let p = dir.join("grid.key");
    std::fs::write(&p, "process-test-grid-key-0123456789\n").unwrap();
    // gemba refuses a key file its group or others can read.
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    p
}

pub fn get(url: &str) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
    Ok((status, body))
}

pub fn graph(base: &str) -> Option<serde_json::Value> {
    let (status, body) = get(&format!("{base}/api/v1/graph")).ok()?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// Polls until `ok` holds for every node's graph or `limit` passes;
/// returns the time it took.
pub fn wait_all(
    nodes: &[&NodeProcess],
    limit: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let mut last = None;
        let all = nodes.iter().all(|n| match graph(&n.http) {
            Some(g) => {
                let good = ok(&g);
                if !good {
                    last = Some((n.id.clone(), g));
                }
                good
            }
            None => {
                last = Some((n.id.clone(), serde_json::Value::Null));
                false
            }
        });
        if all {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            let (id, g) = last.unwrap_or_default();
            return Err(format!("not reached within {limit:?}; {id} serves {g}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn edges_all_up(g: &serde_json::Value, n: usize) -> bool {
    let edges = g["edges"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    edges.len() == n * (n - 1) && edges.iter().all(|e| e["state"] == "up")
}

pub fn node_state<'a>(g: &'a serde_json::Value, id: &str) -> Option<&'a str> {
    g["nodes"].as_array()?.iter().find(|n| n["id"] == id)?["state"].as_str()
}

pub fn edge_state<'a>(g: &'a serde_json::Value, s: &str, t: &str) -> Option<&'a str> {
    g["edges"]
        .as_array()?
        .iter()
        .find(|e| e["source"] == s && e["target"] == t)?["state"]
        .as_str()
}

/// Whether this process runs as root (network namespaces, nftables).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The edge `s` -> `t` in a served graph.
pub fn edge<'a>(g: &'a serde_json::Value, s: &str, t: &str) -> Option<&'a serde_json::Value> {
    g["edges"]
        .as_array()?
        .iter()
        .find(|e| e["source"] == s && e["target"] == t)
}

pub mod browser;

/// A throwaway PostgreSQL and a new database in it, or None (skipped,
/// said why) where PostgreSQL is not installed.
pub fn postgres(name: &str) -> Option<(gemba_store::throwaway::Cluster, String)> {
    let cluster = match gemba_store::throwaway::Cluster::start(name) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIP: {why}");
            return None;
        }
    };
    let url = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(cluster.database());
    Some((cluster, url))
}
