//! The receivers on the probe path: answering probes on each flow's
//! port, and the mesh socket's loop that sorts datagrams into probes,
//! gossip and samples.

use super::*;

/// Reads one probe flow's socket: replies to its probes, nothing else.
pub(super) struct FlowReceiver {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) flow: usize,
    pub(super) guard: Arc<Mutex<ReplayGuard>>,
    pub(super) reply_tx: mpsc::Sender<ProbeReply>,
}

impl FlowReceiver {
    pub(super) async fn run(self) {
        let socket = self.endpoint.flows[self.flow].clone();
        // A probe reply is a header, the probe id and a MAC; anything
        // longer arrives cut off, fails verification and is dropped.
        let mut buf = [0u8; wire::HEADER_LEN + PROBE_PAYLOAD + wire::MAC_LEN + 1];
        loop {
            let (len, from) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => return,
                Err(e) => {
                    tracing::trace!(flow = self.flow, error = %e, "probe flow recv error");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            };
            if self.reply_tx.is_closed() {
                return;
            }
            let received_at = Instant::now();
            let result = accept(&self.endpoint, &self.guard, &buf[..len]).and_then(|p| {
                // A flow socket only ever sends probe requests, so a reply
                // is all it expects.
                if p.kind != Kind::ProbeReply {
                    return Err(DropReason::Undecodable);
                }
                let id: [u8; PROBE_PAYLOAD] =
                    p.payload.try_into().map_err(|_| DropReason::Undecodable)?;
                self.reply_tx
                    .try_send(ProbeReply {
                        from,
                        flow: self.flow,
                        probe_id: u64::from_be_bytes(id),
                        received_at,
                    })
                    .map_err(|_| DropReason::Overloaded)
            });
            if let Err(reason) = result {
                tracing::debug!(%from, flow = self.flow, reason = reason.as_str(), "dropped datagram");
                self.endpoint.metrics.drop_packet(reason);
            }
        }
    }
}

/// Reads the mesh socket on the probe path: answers probe requests at
/// once and passes gossip on, so that no gossip work ever delays a probe.
pub(super) struct Receiver {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) guard: Arc<Mutex<ReplayGuard>>,
    pub(super) inbound_tx: mpsc::Sender<InboundGossip>,
    pub(super) samples_tx: mpsc::Sender<InboundSamples>,
    /// Where backbone gossip goes while this node is a representative.
    pub(super) backbone_tx: BackboneInbound,
}

impl Receiver {
    pub(super) async fn run(self) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let (len, from) = match self.endpoint.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => return,
                Err(e) => {
                    // ICMP errors surface here on some systems; they are
                    // about one peer, never about this socket.
                    tracing::trace!(error = %e, "mesh recv error");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            };
            if self.inbound_tx.is_closed() {
                return;
            }
            if let Err(reason) = self.handle(&buf[..len], from).await {
                tracing::debug!(%from, reason = reason.as_str(), "dropped datagram");
                self.endpoint.metrics.drop_packet(reason);
            }
        }
    }

    pub(super) async fn handle(&self, datagram: &[u8], from: SocketAddr) -> Result<(), DropReason> {
        let received_at = Instant::now();
        let packet = accept(&self.endpoint, &self.guard, datagram)?;
        match packet.kind {
            Kind::ProbeRequest => {
                if packet.payload.len() != PROBE_PAYLOAD {
                    return Err(DropReason::Undecodable);
                }
                // Back to the port the probe came from, signed for its sender.
                self.endpoint
                    .send_on(
                        &self.endpoint.socket,
                        Kind::ProbeReply,
                        from,
                        packet.sender,
                        packet.payload,
                    )
                    .await;
            }
            // Probes leave from the flow sockets only, so a reply here did
            // not take the path of any flow and measures nothing.
            Kind::ProbeReply => return Err(DropReason::Undecodable),
            Kind::Samples => {
                // One datagram each, never fragmented.
                if packet.frag_count != 1 {
                    return Err(DropReason::Undecodable);
                }
                self.samples_tx
                    .try_send(InboundSamples {
                        sender: packet.sender.to_string(),
                        from,
                        payload: packet.payload.to_vec(),
                    })
                    .map_err(|_| DropReason::Overloaded)?;
            }
            Kind::Gossip | Kind::Backbone => {
                self.endpoint
                    .metrics
                    .gossip_bytes
                    .get_or_create(&DirectionLabel {
                        direction: "received",
                    })
                    .inc_by(datagram.len() as u64);
                let inbound = InboundGossip {
                    from,
                    session: packet.session,
                    counter: packet.counter,
                    frag_index: packet.frag_index,
                    frag_count: packet.frag_count,
                    payload: packet.payload.to_vec(),
                    received_at,
                };
                if packet.kind == Kind::Gossip {
                    self.inbound_tx
                        .try_send(inbound)
                        .map_err(|_| DropReason::Overloaded)?;
                } else {
                    // Not a representative now: nobody listens.
                    let tx = self.backbone_tx.lock().ok().and_then(|t| t.clone());
                    tx.ok_or(DropReason::Misdirected)?
                        .try_send(inbound)
                        .map_err(|_| DropReason::Overloaded)?;
                }
            }
        }
        Ok(())
    }
}
