//! The second level of a `sites` grid, as a node takes part in it: a
//! representative of its site runs a backbone chitchat (the same engine,
//! guard and signatures as its site's, on the same socket, as
//! [`Kind::Backbone`](crate::wire::Kind) datagrams), publishes its site's
//! summary there and probes the other sites' representatives; the site's
//! first representative also relays every other site's summary into the
//! site and passes news of broken links between sites to the sites they
//! name. A node that stops being a representative leaves the backbone and
//! withdraws its relays. Every node reads the other sites from its own
//! site's representatives' relays ([`site_view`]). See [`crate::sites`].

use super::*;
use crate::sites::{self, RepresentativeBook, RELAY_PREFIX, SUMMARY_KEY};
use gemba_core::graph::SiteSummary;

/// A summary not heard of for this long (no representative of its site
/// live in the backbone) is relayed as stale, and another signer may take
/// its site over (see [`RepresentativeBook`]).
pub const SUMMARY_TTL: Duration = Duration::from_secs(30);

/// A representative gone from the backbone (dead, or no longer one) is
/// left out of its digests after half of this and forgotten after it: a
/// site's summary is read from live signers only, and the relays keep a
/// silent site's last summary (stale), so nothing needs it longer.
pub const BACKBONE_GRACE: Duration = Duration::from_secs(60);

/// How often a representative recomputes its site's summary, at most (it
/// is woken by its site's link news, so a site link going down waits for
/// no more than this).
pub const SUMMARY_EVERY: Duration = Duration::from_millis(100);

/// The backbone chitchat of a representative, while it is one.
pub(super) struct RunningBackbone {
    pub(super) chitchat: Arc<ChitchatHandle>,
    guard_task: JoinHandle<()>,
    stop: tokio_util::sync::CancellationToken,
    /// Wakes the maintainer when a summary arrives, to relay it at once.
    _summaries: chitchat::ListenerHandle,
    /// Set when a summary arrived since the backbone was last read: only
    /// the first of a burst wakes the maintainer.
    news: Arc<std::sync::atomic::AtomicBool>,
}

impl RunningBackbone {
    pub(super) async fn stop(self, slot: &endpoint::BackboneInbound) {
        if let Ok(mut s) = slot.lock() {
            *s = None;
        }
        self.stop.cancel();
        let _ = self.chitchat.initiate_shutdown();
        if tokio::time::timeout(Duration::from_secs(2), self.chitchat.termination_watcher())
            .await
            .is_err()
        {
            self.chitchat.abort();
        }
        self.guard_task.abort();
        let _ = self.guard_task.await;
    }
}

pub(super) type BackboneSlot = Arc<tokio::sync::Mutex<Option<RunningBackbone>>>;

/// What the maintainer keeps of the backbone between its rounds.
pub(super) struct BackboneState {
    pub(super) slot: BackboneSlot,
    pub(super) inbound: endpoint::BackboneInbound,
    pub(super) book: Arc<RepresentativeBook>,
    /// The summary last published, when it was, and when a summary was
    /// last computed.
    pub(super) published: Option<SiteSummary>,
    pub(super) published_at: Option<Instant>,
    pub(super) summarized_at: Option<Instant>,
    /// Relays published into the site, by site (stale when relayed as
    /// such), and when good news was last relayed.
    pub(super) relayed: HashMap<String, SiteSummary>,
    pub(super) relayed_at: Option<Instant>,
    /// Summaries read from the backbone, and the other sites as last read
    /// (at most every [`SUMMARY_EVERY`]).
    pub(super) decoded: DecodedSummaries,
    pub(super) view: BTreeMap<String, SiteSummary>,
    pub(super) view_at: Option<Instant>,
    /// When a site's signers were last heard live in the backbone.
    pub(super) heard: HashMap<String, Instant>,
    /// Since when this node has been one of its site's representatives,
    /// with the same representatives beside it, and who they were.
    pub(super) rep_since: Option<Instant>,
    pub(super) reps_seen: Vec<String>,
    /// When the maintainer must come back for a summary or relays that
    /// wait: news within [`SUMMARY_EVERY`] of the last summary, or good
    /// news within [`sites::GOOD_NEWS_EVERY`] of the last published.
    pub(super) summary_due: Option<Instant>,
    /// The summary of each site last looked at for forwarding (its time).
    pub(super) forwarded: HashMap<String, u64>,
}

impl BackboneState {
    pub(super) fn new(book: Arc<RepresentativeBook>, inbound: endpoint::BackboneInbound) -> Self {
        BackboneState {
            slot: Default::default(),
            inbound,
            book,
            published: None,
            published_at: None,
            summarized_at: None,
            relayed: HashMap::new(),
            relayed_at: None,
            decoded: HashMap::new(),
            view: BTreeMap::new(),
            view_at: None,
            heard: HashMap::new(),
            rep_since: None,
            reps_seen: Vec::new(),
            summary_due: None,
            forwarded: HashMap::new(),
        }
    }
}

/// Summaries read from the backbone, by signer: the generation and
/// version each was read at, and what it said (`None`: it did not decode).
/// A summary is decoded once, not on every round.
pub(super) type DecodedSummaries = HashMap<Arc<str>, (u64, u64, Option<SiteSummary>)>;

/// The other sites as the backbone shows them now: for each site, the
/// summary of its lowest-id live signer (the same one on every
/// representative, so relays change only when that signer does).
fn backbone_view(
    chitchat: &chitchat::Chitchat,
    own_site: &str,
    decoded: &mut DecodedSummaries,
) -> BTreeMap<String, SiteSummary> {
    let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    let newest = newest_generations(chitchat);
    decoded.retain(|id, _| newest.contains_key(&**id));
    let mut out: BTreeMap<String, SiteSummary> = BTreeMap::new();
    for cid in newest.into_values() {
        if !live.contains(cid) {
            continue;
        }
        let Some(v) = chitchat
            .node_state(cid)
            .and_then(|s| s.get_versioned(SUMMARY_KEY))
            .filter(|v| !v.is_deleted())
        else {
            continue;
        };
        let fresh =
            |e: &(u64, u64, Option<SiteSummary>)| e.0 == cid.generation_id && e.1 == v.version;
        let entry = match decoded.get(&*cid.node_id) {
            Some(e) if fresh(e) => e,
            _ => {
                let s = identity::payload(&v.value)
                    .and_then(|text| sites::decode(text, &cid.node_id).ok());
                decoded.insert(cid.node_id.clone(), (cid.generation_id, v.version, s));
                &decoded[&*cid.node_id]
            }
        };
        let Some(s) = &entry.2 else {
            continue;
        };
        if s.site == own_site {
            continue;
        }
        match out.get(&s.site) {
            Some(have) if have.signer < s.signer => {}
            _ => {
                out.insert(s.site.clone(), s.clone());
            }
        }
    }
    out
}

/// Who this node reads relays from: its site's representatives now, and
/// those that were within [`SUMMARY_TTL`] (while one that died is being
/// replaced, its relays stand until its successor's arrive).
#[derive(Default)]
pub(super) struct Relayers(std::sync::Mutex<HashMap<String, Instant>>);

impl Relayers {
    /// Notes the representatives of this round; forgets those past the TTL.
    pub(super) fn note(&self, reps: &[String], now: Instant) {
        if let Ok(mut r) = self.0.lock() {
            for id in reps {
                r.insert(id.clone(), now);
            }
            r.retain(|_, at| now.duration_since(*at) < SUMMARY_TTL);
        }
    }

    /// The current representatives and the recent ones.
    pub(super) fn with(&self, current: &[&str]) -> HashSet<String> {
        let mut out: HashSet<String> = current.iter().map(|s| s.to_string()).collect();
        if let Ok(r) = self.0.lock() {
            out.extend(r.keys().cloned());
        }
        out
    }
}

/// The representatives of this node's own site, by its own membership.
pub(super) fn own_representatives<'a>(
    members: &'a [Member],
    topology: Topology,
    site: &str,
) -> Vec<&'a str> {
    let Topology::Sites { representatives: k } = topology else {
        return Vec::new();
    };
    topology::representatives(members, k as usize)
        .remove(site)
        .unwrap_or_default()
}

/// The other sites as this node reads them from its site's relayers: per
/// site, the newest summary (a current one before a stale one).
pub(super) fn site_view(
    chitchat: &chitchat::Chitchat,
    relayers: &HashSet<String>,
    own_site: &str,
) -> BTreeMap<String, SiteSummary> {
    let mut out: BTreeMap<String, SiteSummary> = BTreeMap::new();
    for cid in newest_generations(chitchat).into_values() {
        if !relayers.contains(&*cid.node_id) {
            continue;
        }
        let Some(state) = chitchat.node_state(cid) else {
            continue;
        };
        for (k, v) in state.key_values() {
            let Some(site) = k.strip_prefix(RELAY_PREFIX) else {
                continue;
            };
            let Some(s) = identity::payload(v).and_then(|v| sites::decode_relay(v).ok()) else {
                continue;
            };
            if s.site != site || site == own_site {
                continue;
            }
            let better = match out.get(site) {
                None => true,
                Some(have) => (!s.stale, s.at_ms) > (!have.stale, have.at_ms),
            };
            if better {
                out.insert(site.to_string(), s);
            }
        }
    }
    out
}

/// Each other site's representatives, by site.
pub(super) fn representatives_of(
    view: &BTreeMap<String, SiteSummary>,
) -> BTreeMap<String, Vec<String>> {
    view.iter()
        .map(|(site, s)| {
            (
                site.clone(),
                s.representatives.iter().map(|r| r.id.clone()).collect(),
            )
        })
        .collect()
}

impl Maintainer {
    /// One round of the second level: joins or leaves the backbone as this
    /// node becomes or stops being a representative, publishes the site's
    /// summary and relays the others'. Returns the other sites'
    /// representatives this node probes (none unless it is one).
    pub(super) async fn backbone_round(&mut self, members: &[Member]) -> Vec<Target> {
        if !matches!(self.settings.topology, Topology::Sites { .. }) {
            return Vec::new();
        }
        // Set again below if a summary must wait; a node that is no longer
        // a representative has none due.
        self.backbone.summary_due = None;
        let own: Vec<String> =
            own_representatives(members, self.settings.topology, &self.settings.site)
                .into_iter()
                .map(str::to_string)
                .collect();
        self.backbone.book.set_own(own.clone());
        let now = Instant::now();
        self.relayers.note(&own, now);
        let i_am = own.contains(&self.settings.id);
        let held = own == self.backbone.reps_seen;
        if !held {
            self.backbone.reps_seen = own.clone();
        }
        if !i_am {
            self.backbone.rep_since = None;
        } else if self.backbone.rep_since.is_none() || !held {
            // A node still learning its site sees lower ids appear: it
            // counts as a representative only from when the list held.
            self.backbone.rep_since = Some(now);
        }
        let slot = self.backbone.slot.clone();
        let mut running = slot.lock().await;
        if !i_am {
            if let Some(b) = running.take() {
                tracing::info!(node = %self.settings.id, "no longer a representative of its site: leaving the backbone");
                b.stop(&self.backbone.inbound).await;
                self.backbone.published = None;
                self.backbone.published_at = None;
                self.backbone.summarized_at = None;
                self.backbone.view.clear();
                self.backbone.view_at = None;
                self.backbone.decoded.clear();
                self.withdraw_relays().await;
            }
            return Vec::new();
        }
        if running.is_none() {
            // A node that just started, or just heard of its site, may
            // find lower ids yet: it joins once it has stayed a
            // representative, with the same representatives beside it, for
            // a gossip round (at least a second), so a grid starting all at
            // once makes no storm of joins and leaves (each would stay in
            // every representative's backbone digest until forgotten).
            let settle = self.settings.gossip_interval.max(Duration::from_secs(1));
            if self
                .backbone
                .rep_since
                .is_some_and(|since| now.duration_since(since) < settle)
            {
                return Vec::new();
            }
            let seeds = self.backbone_seeds().await;
            if seeds.is_empty() {
                // One site, and no other site to reach: no backbone.
                return Vec::new();
            }
            match self.start_backbone(seeds).await {
                Ok(b) => {
                    tracing::info!(node = %self.settings.id, site = %self.settings.site, "a representative of its site: joined the backbone");
                    *running = Some(b);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot join the backbone");
                    return Vec::new();
                }
            }
        }
        let Some(b) = running.as_ref() else {
            return Vec::new();
        };
        let backbone = b.chitchat.chitchat();
        let news = b.news.clone();
        drop(running);
        // Every summary that changes in the backbone wakes the maintainer:
        // the backbone is read, and its news passed on, at most every
        // SUMMARY_EVERY (hundreds of representatives publish at a start).
        let read_due = self
            .backbone
            .view_at
            .map(|at| at + SUMMARY_EVERY)
            .filter(|due| now < *due);
        if let Some(due) = read_due {
            self.due(due);
        } else {
            self.backbone.view_at = Some(now);
            // Summaries arriving from here on wake the maintainer again.
            news.store(false, std::sync::atomic::Ordering::Release);
            let view = {
                let guard = backbone.lock().await;
                backbone_view(&guard, &self.settings.site, &mut self.backbone.decoded)
            };
            for site in view.keys() {
                self.backbone.heard.insert(site.clone(), now);
            }
            self.backbone.view = view;
        }
        let view = std::mem::take(&mut self.backbone.view);
        let others = representatives_of(&view);
        self.publish_summary(&backbone, &own, &others, now).await;
        // One relayer per site, its first representative: every node of
        // the site holds one copy of each other site's summary.
        if read_due.is_none() {
            if own.first() == Some(&self.settings.id) {
                self.forward_trouble(&backbone, &view).await;
                self.relay(&view, now).await;
            } else if !self.backbone.relayed.is_empty() {
                self.withdraw_relays().await;
            }
        }
        let targets = view
            .values()
            .flat_map(|s| s.representatives.iter())
            .filter_map(|r| {
                Some(Target {
                    id: r.id.clone(),
                    addr: r.addr.parse().ok()?,
                })
            })
            .collect();
        self.backbone.view = view;
        targets
    }

    /// Where the backbone is first reached: the configured seeds, and the
    /// representatives the relays of this site name.
    async fn backbone_seeds(&self) -> Vec<String> {
        let s = &self.settings;
        let mut seeds = s.backbone_seeds.clone();
        {
            let guard = self.chitchat.lock().await;
            let members = members_of(&guard, &self.joining, false);
            let own = own_representatives(&members, s.topology, &s.site);
            let view = site_view(&guard, &self.relayers.with(&own), &s.site);
            seeds.extend(
                view.values()
                    .flat_map(|v| v.representatives.iter())
                    .map(|r| r.addr.clone()),
            );
        }
        let own = s.advertise.to_string();
        seeds.retain(|a| *a != own);
        seeds.sort();
        seeds.dedup();
        seeds
    }

    async fn start_backbone(&self, seeds: Vec<String>) -> Result<RunningBackbone, MeshError> {
        let s = &self.settings;
        let (tx, rx) = endpoint::backbone_channel();
        let guard = Arc::new(std::sync::Mutex::new(
            GossipGuard::new(&s.id, GossipLimits::default(), s.pins.clone())
                .with_policy(self.backbone.book.clone()),
        ));
        let stop = tokio_util::sync::CancellationToken::new();
        let path = endpoint::gossip_path(
            crate::wire::Kind::Backbone,
            self.endpoint.clone(),
            rx,
            guard,
            s.stall_gossip.clone(),
            stop.clone(),
        );
        if let Ok(mut slot) = self.backbone.inbound.lock() {
            *slot = Some(tx);
        }
        let generation = next_generation();
        let config = cluster_config(
            s,
            format!("{}/backbone", s.cluster),
            generation,
            seeds,
            s.backbone_gossip_interval,
            BACKBONE_GRACE,
        );
        let initial = signed_initial(
            s,
            generation,
            vec![
                (identity::ID_KEY.to_string(), s.identity.public()),
                (KEY_SITE.to_string(), s.site.clone()),
            ],
        );
        let chitchat = spawn_chitchat(config, initial, &path.transport)
            .await
            .map_err(|e| MeshError::Gossip(format!("backbone: {e:#}")))?;
        let wake = self.changes.clone();
        let news = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = news.clone();
        let summaries = chitchat
            .chitchat()
            .lock()
            .await
            .subscribe_event(SUMMARY_KEY, move |_| {
                if !flag.swap(true, std::sync::atomic::Ordering::AcqRel) {
                    wake.notify_one();
                }
            });
        Ok(RunningBackbone {
            chitchat: Arc::new(chitchat),
            guard_task: path.task,
            stop,
            _summaries: summaries,
            news,
        })
    }

    /// Recomputes this site's summary (at most every [`SUMMARY_EVERY`]) and
    /// publishes it in the backbone when it says something new.
    async fn publish_summary(
        &mut self,
        backbone: &Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
        own: &[String],
        others: &BTreeMap<String, Vec<String>>,
        now: Instant,
    ) {
        if let Some(at) = self.backbone.summarized_at {
            if now.duration_since(at) < SUMMARY_EVERY {
                // The maintainer comes back for it.
                self.due(at + SUMMARY_EVERY);
                return;
            }
        }
        self.backbone.summarized_at = Some(now);
        let with_edges = {
            let guard = self.chitchat.lock().await;
            members_of(&guard, &self.joining, true)
        };
        let site: Vec<Member> = with_edges
            .into_iter()
            .filter(|m| m.site == self.settings.site)
            .collect();
        let graph = graph::build(
            &site,
            self.settings.topology,
            self.settings.isolated_fraction,
        );
        let reps: Vec<&str> = own.iter().map(String::as_str).collect();
        let mut summary = sites::summarize(
            &self.settings.site,
            &graph,
            &site,
            &reps,
            others,
            endpoint::unix_ms(),
        );
        summary.signer = self.settings.id.clone();
        if let Some(p) = &self.backbone.published {
            if sites::same_news(p, &summary) {
                return;
            }
            // Good news waits for the next batch; trouble goes now.
            if let Some(at) = self.backbone.published_at {
                let next = at + sites::GOOD_NEWS_EVERY;
                if now < next && !sites::worse_news(p, &summary) {
                    self.due(next);
                    return;
                }
            }
        }
        let text = sites::encode(&summary);
        // News goes to every representative at once, as a rumour, instead
        // of waiting for the backbone's gossip rounds to spread it.
        let (rumour, peers) = {
            let mut guard = backbone.lock().await;
            publish(
                &mut guard,
                &self.settings.identity,
                SUMMARY_KEY,
                &text,
                false,
            );
            let me = guard.self_chitchat_id().clone();
            let peers: Vec<SocketAddr> = guard
                .live_nodes()
                .filter(|c| **c != me)
                .map(|c| c.gossip_advertise_addr)
                .collect();
            let rumour = guard
                .node_state(&me)
                .map(|s| crate::gossip_guard::rumour(&[rumour_of(s, PUSH_MAX_BYTES)]));
            (rumour, peers)
        };
        if let Some(rumour) = rumour {
            for addr in peers {
                self.endpoint
                    .send_level(crate::wire::Kind::Backbone, addr, &rumour)
                    .await;
            }
        }
        self.metrics
            .values_published
            .get_or_create(&ClassLabel { class: "summary" })
            .inc();
        self.backbone.published = Some(summary);
        self.backbone.published_at = Some(now);
    }

    /// Asks the maintainer to come back for a summary or relays by `at`.
    fn due(&mut self, at: Instant) {
        let d = &mut self.backbone.summary_due;
        *d = Some(d.map_or(at, |was| was.min(at)));
    }

    /// A summary that says a site's link to another site is down or
    /// degraded was pushed to every representative, but not through that
    /// link: the sites it names may not have it. Each site's first
    /// representative passes it on to their representatives at once,
    /// instead of leaving it to the backbone's gossip rounds.
    async fn forward_trouble(
        &mut self,
        backbone: &Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
        view: &BTreeMap<String, SiteSummary>,
    ) {
        use gemba_core::graph::LinkState;
        let mut sends: Vec<(SocketAddr, Arc<Vec<u8>>)> = Vec::new();
        {
            let guard = backbone.lock().await;
            let newest = newest_generations(&guard);
            for (site, s) in view {
                if self.backbone.forwarded.insert(site.clone(), s.at_ms) == Some(s.at_ms) {
                    continue;
                }
                let cut: Vec<&str> = s
                    .links
                    .iter()
                    .filter(|l| matches!(l.state, LinkState::Down | LinkState::Degraded))
                    .filter(|l| l.to != self.settings.site)
                    .map(|l| l.to.as_str())
                    .collect();
                if cut.is_empty() {
                    continue;
                }
                let Some(state) = newest
                    .get(s.signer.as_str())
                    .and_then(|cid| guard.node_state(cid))
                else {
                    continue;
                };
                let rumour = Arc::new(crate::gossip_guard::rumour(&[rumour_of(
                    state,
                    PUSH_MAX_BYTES,
                )]));
                for to in cut {
                    for r in view
                        .get(to)
                        .map(|t| t.representatives.as_slice())
                        .unwrap_or(&[])
                    {
                        if let Ok(addr) = r.addr.parse() {
                            sends.push((addr, rumour.clone()));
                        }
                    }
                }
            }
        }
        for (addr, m) in sends {
            self.endpoint
                .send_level(crate::wire::Kind::Backbone, addr, &m)
                .await;
        }
    }

    /// Relays the other sites' summaries into this site: a site whose
    /// signers are not heard for [`SUMMARY_TTL`] is relayed as stale.
    async fn relay(&mut self, view: &BTreeMap<String, SiteSummary>, now: Instant) {
        let relayed = &self.backbone.relayed;
        let mut changed: Vec<(String, SiteSummary)> = view
            .iter()
            .filter(|(site, s)| relayed.get(*site) != Some(*s))
            .map(|(site, s)| (site.clone(), s.clone()))
            .collect();
        for (site, s) in relayed {
            if view.contains_key(site) || s.stale {
                continue;
            }
            let quiet = self
                .backbone
                .heard
                .get(site)
                .is_none_or(|at| now.duration_since(*at) >= SUMMARY_TTL);
            if quiet {
                changed.push((
                    site.clone(),
                    SiteSummary {
                        stale: true,
                        ..s.clone()
                    },
                ));
            }
        }
        if changed.is_empty() {
            return;
        }
        // Good news waits for the next batch; trouble goes now, with
        // whatever good news waited.
        let trouble = changed.iter().any(|(site, new)| {
            relayed
                .get(site)
                .is_some_and(|old| sites::worse_news(old, new))
        });
        if let Some(at) = self.backbone.relayed_at {
            let next = at + sites::GOOD_NEWS_EVERY;
            if now < next && !trouble {
                self.due(next);
                return;
            }
        }
        self.backbone.relayed_at = Some(now);
        let mut published = 0u64;
        {
            let mut guard = self.chitchat.lock().await;
            for (site, s) in changed {
                let key = format!("{RELAY_PREFIX}{site}");
                let text = sites::encode_relay(&s);
                published +=
                    publish(&mut guard, &self.settings.identity, &key, &text, false) as u64;
                self.backbone.relayed.insert(site, s);
            }
        }
        self.metrics
            .values_published
            .get_or_create(&ClassLabel { class: "relay" })
            .inc_by(published);
        if published > 0 {
            // Pushed to the site at once, like a link's news.
            self.push_own(true);
        }
    }

    /// Deletes this node's relays: it no longer relays for its site.
    async fn withdraw_relays(&mut self) {
        let sites: Vec<String> = self.backbone.relayed.drain().map(|(s, _)| s).collect();
        let mut guard = self.chitchat.lock().await;
        for site in sites {
            let key = format!("{RELAY_PREFIX}{site}");
            publish(&mut guard, &self.settings.identity, &key, "", true);
        }
    }
}
