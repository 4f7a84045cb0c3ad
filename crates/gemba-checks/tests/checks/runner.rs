//! The runner in paused time: results arrive on the check's interval, fall
//! and rise hold back state changes, a slow check does not delay others,
//! and mesh checks from an isolated observer are marked untrusted.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use gemba_checks::placement::{self, NodeEntry};
use gemba_checks::{Clock, HardState, MeshSource, MeshView, Runner, Status};
use gemba_core::graph::{Graph, GraphNode, NodeState};
use tokio::sync::{mpsc, watch};

/// A grid whose node "web-1" is up or down as the test says.
struct FakeMesh {
    web: AtomicU8,
    self_isolated: AtomicU8,
}

fn node(id: &str, state: NodeState) -> GraphNode {
    GraphNode {
        id: id.into(),
        site: "s".into(),
        state,
        addr: "127.0.0.1:7946".into(),
        http: None,
        live: true,
        observers: 3,
        down_votes: if state == NodeState::Down { 3 } else { 0 },
    }
}

#[async_trait::async_trait]
impl MeshSource for FakeMesh {
    async fn view(&self) -> MeshView {
        let web = if self.web.load(Ordering::SeqCst) == 1 {
            NodeState::Up
        } else {
            NodeState::Down
        };
        let me = if self.self_isolated.load(Ordering::SeqCst) == 1 {
            NodeState::Isolated
        } else {
            NodeState::Up
        };
        MeshView {
            graph: Arc::new(Graph {
                nodes: vec![node("srv", me), node("web-1", web)],
                edges: vec![],
            }),
            self_id: "srv".into(),
        }
    }
}

fn policy() -> gemba_core::Policy {
    let text = r#"
[[level]]
level = 1
run = ["/bin/true"]
[[check]]
name = "ping"
kind = "mesh-node"
interval = "1s"
fall = 3
rise = 2
level = 1
"#;
    gemba_testkit::policy("srv", text)
}

#[tokio::test(start_paused = true)]
async fn fall_and_rise_play_out_on_the_interval_and_isolation_is_untrusted() {
    let p = policy();
    let nodes = vec![NodeEntry {
        id: "web-1".into(),
        addr: "127.0.0.2".into(),
        tiers: vec![],
    }];
    let instances = placement::server_instances(&p, &nodes);
    assert_eq!(instances.len(), 1);
    let (_tx, rx) = watch::channel(instances);
    let (rtx, mut results) = mpsc::channel(64);
    let mesh = Arc::new(FakeMesh {
        web: AtomicU8::new(1),
        self_isolated: AtomicU8::new(0),
    });
    tokio::spawn(
        Runner {
            instances: rx,
            reports: rtx,
            mesh: Some(mesh.clone()),
            samples: None,
            observer: "srv".into(),
            max_concurrent: 4,
            clock: Clock::starting_at(0),
        }
        .run(),
    );
    let (r, _) = results.recv().await.unwrap();
    assert_eq!(
        (r.status, r.state),
        (Status::Ok, HardState::Pending),
        "rise = 2"
    );
    assert_eq!(r.scope.to_string(), "node:web-1");
    let (r, _) = results.recv().await.unwrap();
    assert_eq!((r.status, r.state), (Status::Ok, HardState::Passing));
    let first = r.at_ms;

    mesh.web.store(0, Ordering::SeqCst);
    let mut states = Vec::new();
    for _ in 0..4 {
        let (r, _) = results.recv().await.unwrap();
        states.push((r.at_ms - first, r.status, r.state));
    }
    // One result a second; failing only at the third CRITICAL in a row.
    assert_eq!(
        states,
        [
            (1000, Status::Critical, HardState::Passing),
            (2000, Status::Critical, HardState::Passing),
            (3000, Status::Critical, HardState::Failing),
            (4000, Status::Critical, HardState::Failing),
        ]
    );
    mesh.web.store(1, Ordering::SeqCst);
    let (r, _) = results.recv().await.unwrap();
    assert_eq!(r.state, HardState::Failing, "rise = 2");
    let (r, _) = results.recv().await.unwrap();
    assert_eq!(r.state, HardState::Passing);
    assert_eq!(r.since_ms - first, 6000);

    mesh.self_isolated.store(1, Ordering::SeqCst);
    let (r, _) = results.recv().await.unwrap();
    assert!(
        !r.trusted,
        "an isolated observer's mesh verdict is not trusted"
    );
    assert!(r.output.contains("not trusted"), "{}", r.output);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_plugin_is_cut_at_its_timeout_without_delaying_other_checks() {
    let text = r#"
[[check]]
name = "hangs"
kind = "command"
command = ["/bin/sleep", "60"]
interval = "10s"
timeout = "2s"
[[check]]
name = "quick"
kind = "mesh-node"
node = "web-1"
scope = "global"
interval = "1s"
"#;
    let p = gemba_testkit::policy("srv", text);
    let me = NodeEntry {
        id: "srv".into(),
        addr: "127.0.0.1".into(),
        tiers: vec![],
    };
    let mut instances = placement::agent_instances(&p, &me);
    instances.extend(placement::server_instances(&p, std::slice::from_ref(&me)));
    assert_eq!(instances.len(), 2);
    let (_tx, rx) = watch::channel(instances);
    let (rtx, mut results) = mpsc::channel(64);
    tokio::spawn(
        Runner {
            instances: rx,
            reports: rtx,
            mesh: Some(Arc::new(FakeMesh {
                web: AtomicU8::new(1),
                self_isolated: AtomicU8::new(0),
            })),
            samples: None,
            observer: "srv".into(),
            max_concurrent: 4,
            clock: Clock::starting_at(0),
        }
        .run(),
    );
    let mut quick = 0;
    let hung = loop {
        let (r, _) = results.recv().await.unwrap();
        if r.check == "hangs" {
            break r;
        }
        quick += 1;
    };
    assert!(quick >= 1, "the quick check reported while the plugin hung");
    assert_eq!(hung.status, Status::Unknown);
    assert!(
        hung.output.contains("timed out after 2.0 s"),
        "{}",
        hung.output
    );
}
