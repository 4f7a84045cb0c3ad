//! Presence: each node's signed proof of the address it sends from, and
//! the samples agents send to servers (checked, capped, handed on).

use super::*;

/// An agent's sample as a server receives it, its signature checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSample {
    pub node: String,
    pub name: String,
    pub value: String,
}

pub(super) type SampleSubscriber = Arc<std::sync::Mutex<Option<mpsc::Sender<AgentSample>>>>;

/// How often a node proves its address to each server it knows.
pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(15);
/// How long a proof holds: a node that stops sending them has no proven
/// address after this.
pub const PRESENCE_VALID: Duration = Duration::from_secs(60);
/// The body of a presence, followed by the recipient server's id.
pub(super) const PRESENCE: &str = "presence ";
/// Nodes whose proven address a server keeps at most.
pub(super) const MAX_PROVEN: usize = 100_000;

/// Where each node has proved it sends from, and when.
pub(super) type Proven = Arc<std::sync::Mutex<HashMap<String, (std::net::IpAddr, Instant)>>>;

/// Proves this node's address to every live server: a signed presence
/// (this node's key, the time, the server's id) sent straight to each, so
/// the server learns the address the node's packets come from. What a
/// node advertises in gossip is only a claim; a server acts on proven
/// addresses only (remediation steps, log fetches, tier checks).
pub(super) struct Presence {
    pub(super) chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    pub(super) joining: Arc<Joining>,
    pub(super) settings: MeshSettings,
    pub(super) endpoint: Arc<endpoint::Endpoint>,
}

impl Presence {
    pub(super) async fn run(self) {
        let mut sent: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let servers: Vec<(String, SocketAddr)> = {
                let guard = self.chitchat.lock().await;
                members_of(&guard, &self.joining, false)
                    .into_iter()
                    .filter(|m| m.server && m.live && m.id != self.settings.id)
                    .map(|m| (m.id, m.addr))
                    .collect()
            };
            let now = Instant::now();
            sent.retain(|id, _| servers.iter().any(|(s, _)| s == id));
            for (id, addr) in servers {
                if sent
                    .get(&id)
                    .is_some_and(|at| now.duration_since(*at) < PRESENCE_INTERVAL)
                {
                    continue;
                }
                let signed = self.settings.identity.sign_samples(
                    &self.settings.id,
                    endpoint::unix_ms(),
                    format!("{PRESENCE}{id}").as_bytes(),
                );
                self.endpoint
                    .send_to(crate::wire::Kind::Samples, addr, &id, &signed)
                    .await;
                sent.insert(id, now);
            }
        }
    }
}

/// Checks agents' samples (the sender's own key, the time it signed them)
/// and hands them to the server stage.
pub(super) struct SampleIntake {
    pub(super) own_id: String,
    pub(super) proven: Proven,
    pub(super) pins: Arc<Pins>,
    pub(super) subscriber: SampleSubscriber,
    pub(super) metrics: Arc<MeshMetrics>,
    pub(super) max_age_ms: u64,
}

impl SampleIntake {
    pub(super) async fn run(self, mut samples: mpsc::Receiver<endpoint::InboundSamples>) {
        while let Some(s) = samples.recv().await {
            if let Err(reason) = self.take(s) {
                self.metrics
                    .samples_refused
                    .get_or_create(&crate::metrics::ReasonLabel { reason })
                    .inc();
            }
        }
    }

    pub(super) fn take(&self, s: endpoint::InboundSamples) -> Result<(), &'static str> {
        let to = self
            .subscriber
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .ok_or("not_a_server")?;
        let key = self.pins.get(&s.sender).ok_or("unknown_identity")?;
        let (at, body) =
            identity::open_samples(&key, &s.sender, &s.payload).ok_or("bad_signature")?;
        if endpoint::unix_ms().abs_diff(at) > self.max_age_ms {
            return Err("expired");
        }
        let body = std::str::from_utf8(body).map_err(|_| "malformed")?;
        if let Some(recipient) = body.strip_prefix(PRESENCE) {
            // Signed for this server only: another server that heard it
            // cannot pass it on from its own address.
            if recipient != self.own_id {
                return Err("not_for_this_node");
            }
            let mut proven = self.proven.lock().map_err(|_| "overloaded")?;
            if proven.len() >= MAX_PROVEN && !proven.contains_key(&s.sender) {
                let now = Instant::now();
                proven.retain(|_, (_, at)| now.duration_since(*at) < PRESENCE_VALID);
                if proven.len() >= MAX_PROVEN {
                    return Err("overloaded");
                }
            }
            proven.insert(s.sender, (s.from.ip(), Instant::now()));
            self.metrics.presences.inc();
            return Ok(());
        }
        let (name, value) = body.split_once(' ').ok_or("malformed")?;
        to.try_send(AgentSample {
            node: s.sender,
            name: name.to_string(),
            value: value.to_string(),
        })
        .map_err(|_| "overloaded")
    }
}
