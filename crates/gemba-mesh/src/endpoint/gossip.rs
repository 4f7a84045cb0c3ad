//! Gossip's path through the endpoint: what chitchat sends and receives
//! goes through the guard (checked, capped) on the shared socket.

use super::*;

/// What [`gossip_path`] returns.
pub struct GossipPath {
    /// chitchat's view of the mesh socket.
    pub transport: GossipTransport,
    /// The task that checks gossip (stop it last: chitchat reads a closed
    /// receive channel as a broken socket).
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts, on the current runtime, the task that reassembles gossip,
/// checks every message with the guard (signatures included) and hands
/// what passed to chitchat. `stall_ms` holds the thread for that long per
/// message, as slow verification would (tests only). `kind` is the level:
/// the site's gossip or the backbone's.
pub fn gossip_path(
    kind: Kind,
    endpoint: Arc<Endpoint>,
    inbound: mpsc::Receiver<InboundGossip>,
    gossip_guard: Arc<Mutex<GossipGuard>>,
    stall_ms: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
) -> GossipPath {
    let (gossip_tx, gossip_rx) = mpsc::channel(1024);
    let checker = GossipChecker {
        endpoint: endpoint.clone(),
        gossip_guard,
        grid_full_logged_ms: 0,
        reassembly: Reassembly::default(),
        gossip_tx,
        stall_ms,
        verify_seen: Default::default(),
    };
    let task = tokio::spawn(checker.run(inbound, stop).instrument(tracing::info_span!(
        "task",
        stage = "mesh",
        task = "gossip-check"
    )));
    GossipPath {
        transport: GossipTransport {
            socket: Mutex::new(Some(GossipSocket {
                endpoint,
                kind,
                rx: gossip_rx,
                buf: Vec::new(),
            })),
        },
        task,
    }
}

pub(super) struct GossipChecker {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) gossip_guard: Arc<Mutex<GossipGuard>>,
    pub(super) grid_full_logged_ms: u64,
    pub(super) reassembly: Reassembly,
    pub(super) gossip_tx: mpsc::Sender<(SocketAddr, ChitchatMessage)>,
    pub(super) stall_ms: Arc<AtomicU64>,
    /// The guard's verification figures already counted in the metrics.
    pub(super) verify_seen: VerifyStats,
}

impl GossipChecker {
    pub(super) async fn run(
        mut self,
        mut inbound: mpsc::Receiver<InboundGossip>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        while let Some(g) = inbound.recv().await {
            if self.gossip_tx.is_closed() {
                return;
            }
            if let Err(reason) = self.handle(g) {
                self.endpoint.metrics.drop_packet(reason);
            }
            // Let chitchat and the rest of the node run between messages.
            tokio::task::yield_now().await;
        }
        // The probe thread stops first when the node stops. chitchat reads
        // a closed channel as a broken socket (and says so in the log), so
        // then its channel stays open until the node's shutdown has stopped
        // chitchat and ends this task. A socket lost while the node runs
        // closes it: that is reported.
        if stop.is_cancelled() {
            std::future::pending::<()>().await;
        }
    }

    pub(super) fn handle(&mut self, g: InboundGossip) -> Result<(), DropReason> {
        let from = g.from;
        let Some(message) = self.reassembly.add(from, &g.packet(), g.received_at) else {
            return Ok(());
        };
        let stall = self.stall_ms.load(Ordering::Relaxed);
        if stall > 0 {
            // Blocks the thread, as CPU-bound verification does.
            std::thread::sleep(Duration::from_millis(stall));
        }
        let m = &self.endpoint.metrics;
        let (checked, unverified, stats) = {
            let mut g = self
                .gossip_guard
                .lock()
                .map_err(|_| DropReason::Overloaded)?;
            let checked = g.check(&message, unix_ms());
            (checked, g.take_unverified(), g.verify_stats())
        };
        let seen = std::mem::replace(&mut self.verify_seen, stats);
        m.signatures_verified
            .inc_by(stats.verified.saturating_sub(seen.verified));
        m.signature_cache_hits
            .inc_by(stats.cache_hits.saturating_sub(seen.cache_hits));
        m.signature_cpu_seconds
            .inc_by(stats.cpu_ns.saturating_sub(seen.cpu_ns) as f64 / 1e9);
        for (node, reason) in unverified {
            // A node whose values do not verify may be an impostor
            // or a reinstalled node with a new key.
            tracing::debug!(%from, node, reason, "left out a node's values that do not verify");
            m.gossip_refused
                .get_or_create(&ReasonLabel { reason })
                .inc();
        }
        let checked = match checked {
            Ok(c) => c,
            Err(refusal) => {
                tracing::warn!(%from, reason = %refusal, "refused gossip message");
                m.gossip_refused
                    .get_or_create(&ReasonLabel {
                        reason: refusal.label(),
                    })
                    .inc();
                return Err(DropReason::Undecodable);
            }
        };
        if !checked.grid_full.is_empty() {
            // Said once a minute; the counter has every case.
            let now = unix_ms();
            let last = self.grid_full_logged_ms;
            if now.saturating_sub(last) >= 60_000 {
                self.grid_full_logged_ms = now;
                tracing::warn!(
                %from,
                left_out = ?checked.grid_full,
                "the grid is full (1,000 nodes, or a digest that would outgrow one datagram): nodes it does not know yet are left out"
                );
            }
            m.gossip_refused
                .get_or_create(&ReasonLabel {
                    reason: "grid_full",
                })
                .inc_by(checked.grid_full.len() as u64);
        }
        if checked.dropped_self > 0 {
            tracing::debug!(%from, deltas = checked.dropped_self, "left out deltas about this node");
            m.gossip_self_deltas.inc_by(checked.dropped_self as u64);
        }
        self.gossip_tx
            .try_send((from, checked.message))
            .map_err(|_| DropReason::Overloaded)
    }
}

/// chitchat's view of the mesh socket.
pub struct GossipTransport {
    socket: Mutex<Option<GossipSocket>>,
}

#[async_trait]
impl Transport for GossipTransport {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self
            .socket
            .lock()
            .map_err(|_| anyhow::anyhow!("gossip transport lock poisoned"))?
            .take()
            .ok_or_else(|| anyhow::anyhow!("the mesh socket is already open"))?;
        Ok(Box::new(socket))
    }
}

pub(super) struct GossipSocket {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) kind: Kind,
    pub(super) rx: mpsc::Receiver<(SocketAddr, ChitchatMessage)>,
    pub(super) buf: Vec<u8>,
}

#[async_trait]
impl Socket for GossipSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        self.buf.clear();
        msg.serialize(&mut self.buf);
        self.endpoint.send(self.kind, to, &self.buf).await;
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        self.rx
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("mesh receive task stopped"))
    }
}
