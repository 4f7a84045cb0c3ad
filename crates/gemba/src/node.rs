//! `gemba run`: start one node (mesh + HTTP) and drain it on a signal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gemba_core::Config;
use gemba_mesh::{key, MeshNode, MeshSettings, UdpNet};
use prometheus_client::registry::Registry;

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
            "no --config given: running a single node with every role on built-in defaults"
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
    let http_listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
    let http_addr = http_listener.local_addr()?;
    let mut registry = Registry::default();
    let settings = MeshSettings::from_config(&config, grid_key, Some(http_addr.to_string()));
    let mesh = Arc::new(MeshNode::start(settings, Arc::new(UdpNet), Some(&mut registry)).await?);
    let convergence = crate::converge::start(&config, mesh.clone(), &mut registry).await?;
    let api = gemba_api::ApiState::with_escalator(
        mesh.clone(),
        registry,
        config.http.token.clone(),
        convergence.escalator.clone(),
    );
    println!(
        "gemba node {} (site {}) running: console http://{}/ · mesh {} udp+tcp",
        config.node.id, config.node.site, http_addr, config.mesh.listen
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gemba_api::serve(http_listener, api, async move {
        let _ = stop_rx.await;
    }));
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(());
    // In-flight requests get a grace period; then the process ends anyway.
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    convergence.stop().await;
    if let Ok(mesh) = Arc::try_unwrap(mesh) {
        mesh.shutdown().await;
    }
    Ok(())
}
