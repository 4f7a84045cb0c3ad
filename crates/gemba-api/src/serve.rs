//! The HTTP server's accept loop, with bounds a flood of connections
//! cannot get past.
//!
//! - At most `max_connections` connections are served at once (by default
//!   half the process's file limit, at most 16384), so that the mesh's
//!   probes and the store always have file descriptors left.
//! - Beyond them a reserve of [`RESERVE`] connections answers `/healthz`
//!   and `/metrics` to anyone and every path to loopback clients (the
//!   local CLI), one request each, with a short deadline for the head.
//! - Beyond the reserve a connection is closed as soon as it is accepted,
//!   and counted.
//! - A connection must send a request's head within `header_timeout`,
//!   and may stay idle between requests no longer: a client that sends
//!   one header line every few seconds is cut off.
//! - HTTP/1.1 only: browsers, the CLI, Puppet and Chef all speak it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::Shared;

/// Connections served beyond the cap, for health checks, metrics and the
/// local CLI.
pub const RESERVE: usize = 32;

/// How long a reserve connection may take to send its one request's head.
const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The most connections served by default.
const MAX_DEFAULT: usize = 16_384;

/// `[http]` limits on connections.
#[derive(Clone, Debug)]
pub struct Limits {
    /// `None`: half the process's file limit, at most 16384.
    pub max_connections: Option<usize>,
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: None,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Marks a request that came on a reserve connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OnReserve;

/// What a reserve connection may ask for from a client not on loopback.
pub(crate) fn reserve_allows(path: &str) -> bool {
    matches!(path, "/healthz" | "/metrics")
}

/// Half the soft limit on open files.
fn default_cap() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if !ok || lim.rlim_cur == libc::RLIM_INFINITY {
        return MAX_DEFAULT;
    }
    ((lim.rlim_cur / 2) as usize).clamp(16, MAX_DEFAULT)
}

/// Serves `app` on `listener` until `shutdown` resolves; requests in
/// flight finish first.
pub(crate) async fn run(
    listener: tokio::net::TcpListener,
    state: Shared,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cap = limits.max_connections.unwrap_or_else(default_cap);
    state.connections.cap.set(cap as i64);
    let main = Arc::new(Semaphore::new(cap));
    let reserve = Arc::new(Semaphore::new(RESERVE));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors or memory: wait for connections
                    // to end rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let (permit, on_reserve) = match main.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match reserve.clone().try_acquire_owned() {
                Ok(p) => (p, true),
                Err(_) => {
                    state.connections.refused.inc();
                    drop(stream);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            if on_reserve {
                req.extensions_mut().insert(OnReserve);
            }
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(if on_reserve {
                RESERVE_HEADER_TIMEOUT.min(limits.header_timeout)
            } else {
                limits.header_timeout
            })
            .keep_alive(!on_reserve);
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let open = state.connections.open.clone();
        open.inc();
        tokio::spawn(async move {
            let _ = conn.await;
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
