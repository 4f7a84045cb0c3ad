//! The probe path's own thread: the mesh socket, probe answers, flow
//! receivers and the prober run there, so nothing else delays them.

/// Runs `f` on the probe path's runtime: sockets bound there are driven by
/// it.
pub(super) async fn on_probe_path<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    f: impl std::future::Future<Output = std::io::Result<T>> + Send + 'static,
) -> std::io::Result<T> {
    rt.spawn(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

/// Where a node's probe path runs: a thread of its own with a one-thread
/// runtime, or the caller's runtime (see [`Net::probe_thread`]).
pub(super) struct ProbePath {
    pub(super) handle: tokio::runtime::Handle,
    /// Ends the thread; its runtime stops with every task on it.
    pub(super) stop: tokio_util::sync::CancellationToken,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

impl ProbePath {
    pub(super) fn own_thread(node: &str) -> std::io::Result<ProbePath> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let stop = tokio_util::sync::CancellationToken::new();
        let ended = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!(
                "probe-{}",
                node.chars().take(9).collect::<String>()
            ))
            .spawn(move || {
                // Ahead of the node's batch work (see sched).
                if let Err(e) = crate::sched::interactive_thread() {
                    tracing::debug!(error = %e, "the probe thread keeps its scheduling class");
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(ended.cancelled());
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("the probe thread did not start"))??;
        Ok(ProbePath {
            handle,
            stop,
            thread: Some(thread),
        })
    }

    pub(super) fn shared() -> ProbePath {
        ProbePath {
            handle: tokio::runtime::Handle::current(),
            stop: Default::default(),
            thread: None,
        }
    }

    /// Stops the thread, if the path has one, and waits for it.
    pub(super) async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}
