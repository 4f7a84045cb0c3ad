//! An address is where packets come from. A node holding the grid key
//! sends from 127.0.62.10 but advertises 127.0.62.9 (its mesh address and
//! its HTTP address) and declares the tiers `web,db,prod`, while the
//! nodes file puts it in `web` only. The server acts on what the node
//! proved and on its directory:
//! - the remediation step gets the address the node's signed presence
//!   came from, never the advertised one;
//! - no log fetch, and so no token, goes to the advertised HTTP address;
//! - the node's result for a `db` check is not believed.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use gemba_core::{Config, Overrides};
use gemba_mesh::identity::NodeIdentity;
use gemba_mesh::UdpNet;
use gemba_node::Node;

fn node_config(
    id: &str,
    listen: &str,
    advertise: Option<&str>,
    http: &str,
    seed: Option<&str>,
    dir: &Path,
    toml: &str,
) -> Config {
    let o = Overrides {
        node_id: Some(id.into()),
        mesh_listen: Some(listen.into()),
        mesh_advertise: advertise.map(str::to_string),
        http_listen: Some(http.into()),
        seeds: seed.map(|s| vec![s.to_string()]).unwrap_or_default(),
        data_dir: Some(dir.join(id)),
        token: Some(TOKEN.into()),
        ..Default::default()
    };
    gemba_testkit::config_with(toml, &o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_acts_on_the_address_a_node_proved_and_the_tiers_its_directory_gives() {
    let dir = temp_dir("address-proof");
    let steps = dir.join("steps");
    let notices = dir.join("notices");
    // The administrator's directory: both nodes' keys, `imp` in tier web.
    let key_of = |id: &str| {
        NodeIdentity::load_or_create(&dir.join(id))
            .unwrap()
            .0
            .public()
    };
    let nodes_file = dir.join("nodes");
    std::fs::write(
        &nodes_file,
        format!("srv {}\nimp {} web\n", key_of("srv"), key_of("imp")),
    )
    .unwrap();
    let policy = format!(
        r#"
[mesh]
gossip_interval = "100ms"
probe_interval = "200ms"
probe_timeout = "100ms"
nodes_file = "{nodes}"

[escalator]
# Longer than the few seconds a new member takes to prove its address.
quiet_period = "5s"

[[level]]
level = 1
name = "restart"
# Records its argument and fails: the failed step's notice fetches logs.
run = ["/bin/sh", "-c", "echo \"$0\" >> {steps}; exit 1", "{{node_addr}}"]
timeout = "5s"
quiesce = "30s"

[[check]]
name = "web-port"
kind = "tcp"
tier = "web"
host = "127.0.0.1"
port = 1
interval = "1s"
fall = 1
level = 1

[[check]]
name = "db-port"
kind = "tcp"
tier = "db"
host = "127.0.0.1"
port = 1
interval = "1s"
fall = 1
level = 1

[[notify]]
kind = "command"
run = ["/bin/sh", "-c", "cat >> {notices}"]
"#,
        nodes = nodes_file.display(),
        steps = steps.display(),
        notices = notices.display(),
    );
    let srv = Node::start(
        &node_config(
            "srv",
            "127.0.62.1:7946",
            None,
            "127.0.62.1:0",
            None,
            &dir,
            &policy,
        ),
        Arc::new(UdpNet),
        key(),
    )
    .await
    .unwrap();
    // The impostor: sends from .10, says it is at .9 and serves HTTP there.
    let imp = Node::start(
        &node_config(
            "imp",
            "127.0.62.10:7946",
            Some("127.0.62.9:7946"),
            "127.0.62.9:0",
            Some("127.0.62.1:7946"),
            &dir,
            &format!("[node]\nserver = false\ntags = [\"web\", \"db\", \"prod\"]\n{policy}"),
        ),
        Arc::new(UdpNet),
        key(),
    )
    .await
    .unwrap();
    let srv_http = srv.http_addr().unwrap();
    let imp_http = imp.http_addr().unwrap();
    assert_eq!(imp_http.ip().to_string(), "127.0.62.9");

    wait_for("the step for node:imp", Duration::from_secs(40), || async {
        std::fs::read_to_string(&steps).is_ok_and(|s| !s.is_empty())
    })
    .await;
    let ran = std::fs::read_to_string(&steps).unwrap();
    assert_eq!(
        ran.lines().collect::<Vec<_>>(),
        ["127.0.62.10"],
        "the step's {{node_addr}} is where imp's packets come from"
    );

    // Its tiers are the directory's: the db check's result is not believed,
    // so the escalation names the web check only.
    let (_, body) = http(srv_http, "GET", "/api/v1/escalations", true, "").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let esc = v["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["scope"] == "node:imp")
        .unwrap_or_else(|| panic!("no escalation for imp: {v}"));
    assert_eq!(
        esc["checks"],
        serde_json::json!(["web-port@node:imp"]),
        "{esc}"
    );
    let (_, metrics) = http(srv_http, "GET", "/metrics", false, "").await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with(r#"gemba_checks_results_unbelieved_total{reason="not_in_tier"}"#)
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gemba_mesh_presences_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // The logs of imp are not fetched from the HTTP address it advertises.
    let (code, body) = http(srv_http, "GET", "/api/v1/logs?node=imp", true, "").await;
    assert_ne!(code, 200, "{body}");
    assert!(body.contains("not on the address it proved"), "{body}");
    wait_for("the notice", Duration::from_secs(20), || async {
        std::fs::read_to_string(&notices).is_ok_and(|n| n.contains("step-failed"))
    })
    .await;
    let sent = std::fs::read_to_string(&notices).unwrap();
    assert!(sent.contains("node:imp"), "{sent}");
    // Nothing reached imp's HTTP listener: this request is the first it
    // answers (its own counter is updated after the answer is built).
    let (_, imp_metrics) = http(imp_http, "GET", "/metrics", false, "").await;
    let answered: Vec<&str> = imp_metrics
        .lines()
        .filter(|l| l.starts_with("gemba_http_responses_total"))
        .collect();
    assert!(answered.is_empty(), "imp was asked: {answered:?}");
    // The counter the check reads does count requests: the one just made.
    let (_, imp_metrics) = http(imp_http, "GET", "/metrics", false, "").await;
    assert!(
        imp_metrics.contains(r#"gemba_http_responses_total{code="200"} 1"#),
        "{imp_metrics}"
    );

    imp.shutdown().await;
    srv.shutdown().await;
}
