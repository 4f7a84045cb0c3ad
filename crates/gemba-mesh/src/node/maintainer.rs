//! The loop that keeps probe targets in line with membership, publishes
//! this node's links, and pushes news as rumours (a node's own to every
//! peer it probes, others' only to peers their origin did not reach).

use super::*;

/// Keeps probe targets in line with membership and publishes links.
pub(super) struct Maintainer {
    pub(super) chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    pub(super) joining: Arc<Joining>,
    pub(super) settings: MeshSettings,
    pub(super) links: SharedLinks,
    pub(super) targets: watch::Sender<Vec<Target>>,
    pub(super) changes: Arc<Notify>,
    /// Node ids with news to push (this node's own, here).
    pub(super) push: mpsc::Sender<Arc<str>>,
    /// What of this node's links to publish, and when.
    pub(super) publisher: LinkPublisher,
    pub(super) metrics: Arc<MeshMetrics>,
    pub(super) seen_states: SeenStates,
    pub(super) gossip_guard: Arc<std::sync::Mutex<GossipGuard>>,
    /// Datagrams are signed for their recipient: the endpoint learns who
    /// is at which address from here.
    pub(super) endpoint: Arc<endpoint::Endpoint>,
    pub(super) peers: HashMap<SocketAddr, Arc<str>>,
    /// When the pins file was last read, and its modification time then.
    pub(super) pins_read: Option<(Instant, Option<std::time::SystemTime>)>,
    /// When links first measured up were last pushed, and when the next
    /// such push is due if some wait (see [`INTRO_PUSH_GAP`]).
    pub(super) intro_pushed: Option<Instant>,
    pub(super) intro_push_due: Option<Instant>,
    /// The second level, under the `sites` topology.
    pub(super) backbone: BackboneState,
    pub(super) relayers: Arc<Relayers>,
}

/// The least time between two pushes of links first measured up: a grid
/// that starts measures its links batch after batch as it learns of its
/// members, and each push goes to every peer probed. Trouble is pushed at
/// once.
pub(super) const INTRO_PUSH_GAP: Duration = Duration::from_secs(1);

/// What was last seen in gossip of each observer's links, by observer,
/// then by bucket key hash: a hash of the bucket's links that are not up.
pub(super) type SeenStates = Arc<std::sync::Mutex<HashMap<String, HashMap<u64, u64>>>>;

/// How often the pins file is checked for changes (`gemba node enroll`,
/// `revoke`).
pub(super) const PINS_EVERY: Duration = Duration::from_secs(5);

impl Maintainer {
    /// Re-reads the enrolled or first-seen keys when their file changed.
    pub(super) fn refresh_pins(&mut self) {
        let Some(file) = &self.settings.pins_file else {
            return;
        };
        let now = Instant::now();
        if self
            .pins_read
            .is_some_and(|(at, _)| now.duration_since(at) < PINS_EVERY)
        {
            return;
        }
        let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
        let changed = self.pins_read.is_some_and(|(_, m)| m != modified);
        self.pins_read = Some((now, modified));
        if !changed {
            return;
        }
        match identity::read_node_list(file) {
            Ok(list) => {
                tracing::info!(file = %file.display(), nodes = list.keys.len(), "node keys re-read");
                self.settings.pins.reload(list);
            }
            Err(e) => tracing::warn!(error = %e, "node keys not re-read; the previous ones stay"),
        }
    }

    pub(super) async fn run(mut self) {
        // Membership and RTT figures are refreshed on this period; state
        // changes are published as soon as the prober reports them.
        let period = (self.settings.timing.interval
            / self.settings.timing.probes_per_interval.max(1))
        .max(Duration::from_millis(20));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let intro_due = self.publisher.intro_due();
            let push_due = self.intro_push_due;
            let summary_due = self.backbone.summary_due;
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.changes.notified() => {}
                _ = sleep_until_opt(intro_due) => {}
                _ = sleep_until_opt(summary_due) => {}
                _ = sleep_until_opt(push_due) => {
                    self.push_own(false);
                }
            }
            self.refresh_pins();
            let members = {
                let guard = self.chitchat.lock().await;
                // Node ids chitchat has let go of (after their grace
                // period) are forgotten by the gossip guard as well.
                if let Ok(mut g) = self.gossip_guard.lock() {
                    let held = guard.node_states().len();
                    if g.members() > held {
                        let ids: HashSet<&str> =
                            guard.node_states().keys().map(|c| &*c.node_id).collect();
                        g.retain(|id| ids.contains(id));
                    }
                }
                self.joining.retain(|cid| guard.node_state(cid).is_some());
                members_of(&guard, &self.joining, false)
            };
            if let Ok(mut seen) = self.seen_states.lock() {
                if seen.len() > members.len() {
                    let ids: HashSet<&str> = members.iter().map(|m| m.id.as_str()).collect();
                    seen.retain(|observer, _| ids.contains(observer.as_str()));
                }
            }
            // Other sites' representatives, probed by this node while it
            // is one of its own site's.
            let remote = self.backbone_round(&members).await;
            let peers: HashMap<SocketAddr, Arc<str>> = members
                .iter()
                .filter(|m| m.id != self.settings.id)
                .map(|m| (m.addr, Arc::from(m.id.as_str())))
                .chain(remote.iter().map(|t| (t.addr, Arc::from(t.id.as_str()))))
                .collect();
            if peers != self.peers {
                self.endpoint.set_peers(peers.clone());
                self.peers = peers;
            }
            let wanted: Vec<Target> =
                topology::targets(&self.settings.id, &members, self.settings.topology)
                    .into_iter()
                    .map(|i| Target {
                        id: members[i].id.clone(),
                        addr: members[i].addr,
                    })
                    .chain(remote)
                    .collect();
            self.targets.send_if_modified(|current| {
                if *current != wanted {
                    tracing::debug!(targets = wanted.len(), "probe targets changed");
                    *current = wanted;
                    true
                } else {
                    false
                }
            });
            let now = Instant::now();
            let current: Vec<(String, EdgeValue)> = {
                let mut table = self.links.lock().expect("link table lock");
                table
                    .trackers
                    .iter_mut()
                    .map(|(id, t)| {
                        let last = self.publisher.previous(id);
                        (id.clone(), t.edge_value(now, &self.settings.policy, last))
                    })
                    .collect()
            };
            let out = self.publisher.plan(now, current);
            if out.is_empty() {
                continue;
            }
            tracing::debug!(
                set = out.set.len(),
                deleted = out.delete.len(),
                push = out.state_changed,
                "links published"
            );
            let mut published = 0;
            {
                let mut guard = self.chitchat.lock().await;
                let identity = &self.settings.identity;
                for key in &out.delete {
                    published += publish(&mut guard, identity, key, "", true) as u64;
                }
                for (key, value) in &out.set {
                    published += publish(&mut guard, identity, key, value, false) as u64;
                }
            }
            self.metrics
                .values_published
                .get_or_create(&ClassLabel { class: "link" })
                .inc_by(published);
            if out.state_changed {
                self.push_own(out.trouble);
            }
        }
    }

    /// Pushes this node's news: trouble at once, links first measured up
    /// at most once per [`INTRO_PUSH_GAP`] (the rest when it is due).
    pub(super) fn push_own(&mut self, trouble: bool) {
        let now = Instant::now();
        if !trouble {
            if let Some(at) = self.intro_pushed {
                if now < at + INTRO_PUSH_GAP {
                    self.intro_push_due = Some(at + INTRO_PUSH_GAP);
                    return;
                }
            }
            self.intro_pushed = Some(now);
        }
        // Whatever waited goes along: a push carries the whole state.
        self.intro_push_due = None;
        let _ = self.push.try_send(Arc::from(self.settings.id.as_str()));
    }
}

/// Peers a push of other nodes' news goes to.
pub(super) const PUSH_FANOUT: usize = 3;
/// A node's own news goes straight to the peers it probes, at most this
/// many (random ones beyond): every peer hears of a changed link within
/// one hop, at the cost of about one probe round, instead of waiting for
/// the rumour to find it.
pub(super) const PUSH_DIRECT_MAX: usize = 64;
/// The same under the `sites` topology, where a node's cluster is its site
/// (sites are meant to hold about a hundred nodes): every member of a site
/// hears a node's own news, its relays included, in one hop.
pub(super) const PUSH_DIRECT_MAX_SITE: usize = 128;
/// The least time between two pushes of one node.
pub(super) const PUSH_GAP: Duration = Duration::from_millis(100);

/// News a push may carry, at most: a datagram's worth.
pub(super) const PUSH_MAX_BYTES: usize = 60_000;
/// Node ids with news waiting to be pushed, at most (more is news the
/// gossip rounds carry).
pub(super) const PUSH_QUEUE: usize = 1024;

/// Pushes news at once instead of waiting for the gossip rounds: whenever
/// a link state changed here or was learned from a peer, the whole state of
/// each node with news goes to a few random live peers, as a rumour (see
/// [`crate::gossip_guard::rumour`]). This node's own news also goes, alone,
/// to every peer it probes (up to [`PUSH_DIRECT_MAX`]). Bursts are
/// coalesced.
pub(super) async fn push_changes(
    chitchat: Arc<ChitchatHandle>,
    endpoint: Arc<endpoint::Endpoint>,
    joining: Arc<Joining>,
    targets: watch::Receiver<Vec<Target>>,
    topology: Topology,
    mut pushes: mpsc::Receiver<Arc<str>>,
) {
    let mut rng = endpoint::unix_ms() ^ 0x9e37_79b9_7f4a_7c15;
    let mut last: Option<Instant> = None;
    let mut news: Vec<Arc<str>> = Vec::new();
    loop {
        // News that did not fit the last push goes in the next one, without
        // waiting for more news to arrive.
        if news.is_empty() {
            match pushes.recv().await {
                Some(first) => news.push(first),
                None => break,
            }
        }
        // Let the changes of one event (one probe round) arrive together,
        // and never push more often than the gap. A node that pushed
        // nothing lately pushes at once.
        let wait = last
            .map(|at| (at + PUSH_GAP).saturating_duration_since(Instant::now()))
            .unwrap_or_default()
            .max(Duration::from_millis(10));
        tokio::time::sleep(wait).await;
        while let Ok(id) = pushes.try_recv() {
            news.push(id);
        }
        news.sort();
        news.dedup();
        last = Some(Instant::now());
        let (message, peers, own, cluster) = {
            let c = chitchat.chitchat();
            let guard = c.lock().await;
            let me = guard.self_chitchat_id().node_id.clone();
            // This node's own news, on its own: small, and for every peer
            // it probes.
            let own = news
                .iter()
                .any(|id| **id == *me)
                .then(|| guard.node_state(guard.self_chitchat_id()))
                .flatten()
                .map(|state| crate::gossip_guard::rumour(&[rumour_of(state, PUSH_MAX_BYTES)]));
            let newest = newest_generations(&guard);
            let mut nodes = Vec::new();
            let mut origins: Vec<(Arc<str>, HashSet<String>)> = Vec::new();
            let mut bytes = 0;
            // What does not fit waits for the next push.
            while let Some(id) = news.last() {
                let Some(state) = newest.get(&**id).and_then(|cid| guard.node_state(cid)) else {
                    news.pop();
                    continue;
                };
                let rumour = rumour_of(state, PUSH_MAX_BYTES);
                let size: usize = rumour.kvs.iter().map(rumour_size).sum();
                if !nodes.is_empty() && bytes + size > PUSH_MAX_BYTES {
                    break;
                }
                bytes += size;
                nodes.push(rumour);
                // The peers it has trouble reaching may not have got its
                // own push either.
                let troubled: HashSet<String> = links_of(state)
                    .filter(|(_, e)| e.state != crate::link::LinkState::Up)
                    .map(|(t, _)| t)
                    .collect();
                origins.extend(news.pop().map(|id| (id, troubled)));
            }
            let all = members_of(&guard, &joining, false);
            // Every member of this node's cluster, live or not, may take
            // its own news: under `full` every node it probes.
            let cluster: HashSet<SocketAddr> = all.iter().map(|m| m.addr).collect();
            // Live as this node counts it: a grid that is starting has no
            // node chitchat calls live yet, and its news must travel too.
            let members: Vec<Member> = all.into_iter().filter(|m| m.live).collect();
            let peers = relay_peers(&members, &me, &origins, topology);
            (crate::gossip_guard::rumour(&nodes), peers, own, cluster)
        };
        let mut direct: Vec<SocketAddr> = Vec::new();
        if let Some(own) = own {
            // Only the members of this node's cluster can take its state: a
            // representative also probes other sites' representatives.
            let mut probed: Vec<SocketAddr> = targets
                .borrow()
                .iter()
                .map(|t| t.addr)
                .filter(|a| cluster.contains(a))
                .collect();
            let cap = match topology {
                Topology::Sites { .. } => PUSH_DIRECT_MAX_SITE,
                _ => PUSH_DIRECT_MAX,
            };
            direct = pick_random(&mut rng, &mut probed, cap);
            for &addr in &direct {
                endpoint.send_gossip(addr, &own).await;
            }
        }
        let mut peers: Vec<SocketAddr> =
            peers.into_iter().filter(|p| !direct.contains(p)).collect();
        for pick in pick_random(&mut rng, &mut peers, PUSH_FANOUT) {
            endpoint.send_gossip(pick, &message).await;
        }
    }
}

/// Where a rumour about `origins` is passed on: the live peers that some
/// origin does not probe, since each origin pushed its own news straight to
/// the peers it probes (up to [`PUSH_DIRECT_MAX`]; all peers when it probes
/// more), and the peers its links to are not up (its push to them may
/// have been lost on that link). In a healthy full mesh that is nobody,
/// and a grid that loses a node does not relay every survivor's news to
/// everyone; with sites, the news crosses to the other sites.
pub(super) fn relay_peers(
    members: &[Member],
    me: &str,
    origins: &[(Arc<str>, HashSet<String>)],
    topology: Topology,
) -> Vec<SocketAddr> {
    let mut unreached: HashSet<usize> = HashSet::new();
    for (origin, troubled) in origins {
        let probed: HashSet<usize> = topology::targets(origin, members, topology)
            .into_iter()
            .collect();
        let all = probed.len() > PUSH_DIRECT_MAX;
        unreached.extend(
            (0..members.len())
                .filter(|i| all || !probed.contains(i) || troubled.contains(&members[*i].id))
                .filter(|&i| *members[i].id != **origin),
        );
    }
    let mut out: Vec<usize> = unreached
        .into_iter()
        .filter(|&i| members[i].id != me)
        .collect();
    out.sort_unstable();
    out.into_iter().map(|i| members[i].addr).collect()
}

/// Takes up to `k` random elements out of `from`.
pub(super) fn pick_random(rng: &mut u64, from: &mut Vec<SocketAddr>, k: usize) -> Vec<SocketAddr> {
    let mut out = Vec::with_capacity(k.min(from.len()));
    while out.len() < k && !from.is_empty() {
        // xorshift: cheap, and good enough to spread pushes.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        out.push(from.swap_remove((*rng % from.len() as u64) as usize));
    }
    out
}

/// A node's state, as a rumour carries it: the whole of it when it fits
/// `budget` bytes (any peer can apply that), else its newest values that
/// do (peers up to date but for them apply that; a representative's
/// relays make its state larger than a datagram).
pub(super) fn rumour_of(
    state: &chitchat::NodeState,
    budget: usize,
) -> crate::gossip_guard::NodeRumour {
    let mut kvs: Vec<(String, String, u64, u8)> = state
        .key_values_including_deleted()
        .filter_map(|(k, v)| {
            let status = match v.status {
                chitchat::DeletionStatus::Set => 0,
                chitchat::DeletionStatus::DeleteAfterTtl(_) => 2,
                // Never sent by gemba, and refused by the guard.
                chitchat::DeletionStatus::Deleted(_) => return None,
            };
            Some((k.to_string(), v.value.clone(), v.version, status))
        })
        .collect();
    kvs.sort_by_key(|kv| kv.2);
    let mut from_version = 0;
    let mut bytes = 0;
    let mut keep = kvs.len();
    for (i, kv) in kvs.iter().enumerate().rev() {
        bytes += rumour_size(kv);
        if bytes > budget && i + 1 < kvs.len() {
            from_version = kv.2;
            keep = kvs.len() - i - 1;
            break;
        }
    }
    let kvs = kvs.split_off(kvs.len() - keep);
    crate::gossip_guard::NodeRumour {
        id: state.chitchat_id().clone(),
        last_gc_version: state.last_gc_version(),
        from_version,
        kvs,
    }
}

/// What a value takes in a rumour, about.
pub(super) fn rumour_size(kv: &(String, String, u64, u8)) -> usize {
    kv.0.len() + kv.1.len() + 16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize, sites: usize) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                id: format!("n{i:02}"),
                site: format!("s{}", i % sites),
                addr: SocketAddr::from(([127, 0, 9, i as u8 + 1], 7946)),
                http: None,
                live: true,
                generation: 1,
                tags: vec![],
                server: false,
                edges: BTreeMap::new(),
            })
            .collect()
    }

    #[test]
    fn news_is_relayed_only_to_peers_its_origin_did_not_push_to() {
        // A full mesh: every origin pushed its news to everyone, so a node
        // that lost a peer does not have every survivor's news relayed.
        let full = members(20, 1);
        let origin = |id: &str, troubled: &[&str]| {
            (
                Arc::<str>::from(id),
                troubled
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<HashSet<String>>(),
            )
        };
        let origins = vec![origin("n03", &[]), origin("n07", &[])];
        assert!(relay_peers(&full, "n05", &origins, Topology::Full).is_empty());
        // ...except to a peer the origin cannot reach: its push was lost.
        let origins = vec![origin("n03", &["n09"])];
        assert_eq!(
            relay_peers(&full, "n05", &origins, Topology::Full),
            vec![full[9].addr]
        );
        // Sites: the news crosses to the peers the origin does not probe.
        let sites = members(12, 3);
        let topo = Topology::Sites { representatives: 1 };
        let probed: HashSet<SocketAddr> = topology::targets("n04", &sites, topo)
            .into_iter()
            .map(|i| sites[i].addr)
            .collect();
        let relayed = relay_peers(&sites, "n01", &[origin("n04", &[])], topo);
        assert!(!relayed.is_empty());
        for addr in &relayed {
            assert!(!probed.contains(addr), "{addr} heard it from n04 itself");
            assert_ne!(*addr, sites[4].addr, "back to the origin");
            assert_ne!(*addr, sites[1].addr, "to this node itself");
        }
        // An origin that probes more peers than it pushes to leaves nobody
        // out.
        let big = members(PUSH_DIRECT_MAX + 10, 1);
        let relayed = relay_peers(&big, "n00", &[origin("n01", &[])], Topology::Full);
        assert_eq!(relayed.len(), big.len() - 2);
    }
}
