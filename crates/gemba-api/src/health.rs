//! `/healthz`: whether each role this node is configured for can work now.
//! The server role needs its store: a cheap query with a short deadline
//! (cached a few seconds, one probe at a time however many ask), the room
//! left on an SQLite file's disk, and this host's clock against
//! PostgreSQL's. A role that cannot work makes the answer 503 with the
//! reason, so that systemd, a load balancer or Kubernetes acts on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long one probe's answer is reused.
pub const CACHE: Duration = Duration::from_secs(3);
/// How long the store has to answer a probe.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// Less room than this on an SQLite file's disk is a full disk: SQLite
/// needs room for its write-ahead log before a write can succeed.
pub const MIN_FREE_BYTES: u64 = 4 * 1024 * 1024;

/// What one probe of the store saw.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreState {
    /// Why the store cannot take work now; `None` when it can.
    pub problem: Option<String>,
    /// How long the probe took.
    pub latency_ms: u64,
    /// This host's clock minus the store's (PostgreSQL), in ms.
    pub skew_ms: Option<i64>,
    pub free_bytes: Option<u64>,
}

/// The store as `/healthz` sees it, probed at most every [`CACHE`].
pub struct StoreHealth {
    store: Arc<dyn gemba_store::Store>,
    /// The clock the node's stages decide by.
    clock: gemba_exec::Clock,
    seen: tokio::sync::Mutex<Option<(Instant, StoreState)>>,
}

impl StoreHealth {
    pub fn new(store: Arc<dyn gemba_store::Store>, clock: gemba_exec::Clock) -> StoreHealth {
        StoreHealth {
            store,
            clock,
            seen: tokio::sync::Mutex::new(None),
        }
    }

    /// The store's state, probing it if the last answer is older than
    /// [`CACHE`].
    pub async fn state(&self) -> StoreState {
        let mut seen = self.seen.lock().await;
        if let Some((at, state)) = &*seen {
            if at.elapsed() < CACHE {
                return state.clone();
            }
        }
        let state = self.probe().await;
        *seen = Some((Instant::now(), state.clone()));
        state
    }

    async fn probe(&self) -> StoreState {
        let started = Instant::now();
        let clock = self.clock;
        let answer = tokio::time::timeout(
            DEADLINE,
            gemba_store::clock_skew(&*self.store, || clock.now_ms()),
        )
        .await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let (skew_ms, probe) = match answer {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                return StoreState {
                    problem: Some(format!("the store cannot be reached: {e}")),
                    latency_ms,
                    skew_ms: None,
                    free_bytes: None,
                }
            }
            Err(_) => {
                return StoreState {
                    problem: Some(format!(
                        "the store did not answer within {} s",
                        DEADLINE.as_secs()
                    )),
                    latency_ms,
                    skew_ms: None,
                    free_bytes: None,
                }
            }
        };
        let problem = match (skew_ms, probe.free_bytes) {
            (Some(s), _) if s.abs() > gemba_store::MAX_CLOCK_SKEW_MS => {
                Some(gemba_store::clock_skew_words(s))
            }
            (_, Some(free)) if free < MIN_FREE_BYTES => Some(format!(
                "the store's disk is full ({} KiB left)",
                free / 1024
            )),
            _ => None,
        };
        StoreState {
            problem,
            latency_ms,
            skew_ms,
            free_bytes: probe.free_bytes,
        }
    }
}

/// How the server role stands.
pub enum ServerRole<'a> {
    /// Not configured on this node.
    None,
    /// Configured, but it did not start (why).
    Off(&'a str),
    /// Running, with its store.
    On(Option<&'a StoreHealth>),
}

/// The `/healthz` answer: healthy or not, and the body.
pub async fn report(node: &str, server: ServerRole<'_>) -> (bool, Value) {
    let mut reasons: Vec<String> = Vec::new();
    let server_json = match server {
        ServerRole::None => json!({"state": "none"}),
        ServerRole::Off(why) => {
            reasons.push(format!("the server role is off: {why}"));
            json!({"state": "off", "reason": why})
        }
        ServerRole::On(None) => json!({"state": "ok"}),
        ServerRole::On(Some(h)) => {
            let s = h.state().await;
            let store = json!({
                "state": if s.problem.is_some() { "failing" } else { "ok" },
                "reason": s.problem,
                "latency_ms": s.latency_ms,
                "clock_skew_ms": s.skew_ms,
                "free_bytes": s.free_bytes,
            });
            match &s.problem {
                Some(p) => {
                    reasons.push(format!("the server role cannot work: {p}"));
                    json!({"state": "failing", "reason": p, "store": store})
                }
                None => json!({"state": "ok", "store": store}),
            }
        }
    };
    let healthy = reasons.is_empty();
    let server_role = match server_json["state"].as_str() {
        Some("none") => "none",
        Some("off") => "off",
        _ => "on",
    };
    (
        healthy,
        json!({
            "status": if healthy { "ok" } else { "failing" },
            "node": node,
            "roles": {"agent": {"state": "ok"}, "server": server_json},
            "server_role": server_role,
            "reasons": reasons,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_role_that_is_off_or_a_store_that_is_full_is_unhealthy() {
        let (ok, v) = report("n1", ServerRole::None).await;
        assert!(ok, "{v}");
        assert_eq!(v["roles"]["server"]["state"], "none");
        let (ok, v) = report("n1", ServerRole::Off("cannot open the store")).await;
        assert!(!ok);
        assert_eq!(v["status"], "failing");
        assert!(v["reasons"][0]
            .as_str()
            .unwrap()
            .contains("cannot open the store"));
        let store: Arc<dyn gemba_store::Store> =
            Arc::new(gemba_store::SqliteStore::in_memory().unwrap());
        let h = StoreHealth::new(store, gemba_exec::Clock::new());
        let (ok, v) = report("n1", ServerRole::On(Some(&h))).await;
        assert!(ok, "{v}");
        assert_eq!(v["roles"]["server"]["store"]["state"], "ok");
    }
}
