//! `gemba run`: start one node (every stage its config asks for) and drain
//! it on a signal.

use std::sync::Arc;

use gemba_core::Config;
use gemba_mesh::{key, UdpNet};
use gemba_node::{Node, ServerRole};

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub async fn run(config: Config, defaults: bool) -> anyhow::Result<()> {
    if defaults {
        tracing::info!(
            http = %config.http.listen,
            data_dir = %config.node.data_dir.display(),
            "no --config given: running on built-in defaults"
        );
    }
    let grid_key = match &config.mesh.grid_key_file {
        Some(path) => key::read(path)?,
        None => {
            let (k, path, created) = key::read_or_create(&config.node.data_dir)?;
            if created {
                tracing::info!(path = %path.display(), "created a new grid key; copy it to every node of this grid");
            }
            k
        }
    };
    let node = Node::start(&config, Arc::new(UdpNet), grid_key).await?;
    let tasks: Vec<String> = node
        .tasks()
        .into_iter()
        .map(|(phase, name)| format!("{}/{name}", phase.as_str()))
        .collect();
    tracing::info!(
        role = if config.node.server { "server" } else { "agent" },
        why = config.node.role_origin.as_str(),
        tasks = %tasks.join(" "),
        "node started"
    );
    let http = node
        .http_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| config.http.listen.to_string());
    println!(
        "gemba node {} (site {}) running as {}: console http://{http}/ · mesh {} udp+tcp{}",
        config.node.id,
        config.node.site,
        if config.node.server {
            "server"
        } else {
            "agent"
        },
        config.mesh.listen,
        match node.server_role() {
            ServerRole::Off(why) => format!(" · SERVER ROLE OFF: {why}"),
            _ => String::new(),
        }
    );
    let failure = tokio::select! {
        _ = shutdown_signal() => None,
        why = node.mesh().gossip_failed() => Some(why),
    };
    match &failure {
        None => tracing::info!("shutting down"),
        // Half alive is worse than down: peers would see probes answered
        // and no news. Stop, and let the supervisor start a fresh node.
        Some(why) => tracing::error!(reason = %why, "gossip ended; stopping the node"),
    }
    let started = std::time::Instant::now();
    let report = node.shutdown().await;
    let tasks: usize = report.finished.iter().map(|(_, n)| n).sum();
    let took_ms = started.elapsed().as_millis() as u64;
    if !report.aborted.is_empty() || !report.panicked.is_empty() {
        tracing::warn!(tasks, took_ms, aborted = ?report.aborted, panicked = ?report.panicked, "stopped, but not cleanly");
    } else {
        tracing::info!(tasks, took_ms, "stopped: every task ended");
    }
    match failure {
        None => Ok(()),
        Some(why) => Err(anyhow::anyhow!("{why}; the node stopped")),
    }
}
