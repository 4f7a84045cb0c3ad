//! Starting a mesh node: the socket, chitchat, the probe path's thread,
//! and the tasks that keep it (maintainer, presence, sample intake).

use super::*;

impl MeshNode {
    /// Binds the mesh socket and TCP probe port, joins the grid through the
    /// seeds and starts probing.
    pub async fn start(
        settings: MeshSettings,
        net: Arc<dyn Net>,
        registry: Option<&mut Registry>,
    ) -> Result<MeshNode, MeshError> {
        let metrics = Arc::new(MeshMetrics::new());
        if let Some(r) = registry {
            metrics.register(r);
        }
        let bind_err = |source| MeshError::Bind {
            addr: settings.listen,
            source,
        };
        // The probe path (sockets, probe answers, the prober) runs apart
        // from everything else the node does.
        let probe = if net.probe_thread() {
            ProbePath::own_thread(&settings.id).map_err(bind_err)?
        } else {
            ProbePath::shared()
        };
        let rt = &probe.handle;
        let n = net.clone();
        let listen = settings.listen;
        let socket = on_probe_path(rt, async move { n.bind(listen).await })
            .await
            .map_err(bind_err)?;
        let stop = tokio_util::sync::CancellationToken::new();
        let (n, owner, s) = (net.clone(), socket.local_addr(), stop.clone());
        on_probe_path(rt, async move { n.listen_tcp(owner, s).await })
            .await
            .map_err(bind_err)?;
        let mut flows = Vec::with_capacity(settings.probe_flows);
        for flow in 0..settings.probe_flows.max(1) {
            let port = settings
                .probe_ports
                .map(|(first, _)| first + flow as u16)
                .unwrap_or(0);
            let n = net.clone();
            let f = on_probe_path(rt, async move { n.bind_flow(owner, port).await })
                .await
                .map_err(|source| MeshError::BindFlow {
                    flow,
                    addr: SocketAddr::new(owner.ip(), port),
                    source,
                })?;
            flows.push(f);
        }
        let flow_ports: Vec<u16> = flows.iter().map(|f| f.local_addr().port()).collect();
        let gossip_guard = Arc::new(std::sync::Mutex::new(GossipGuard::new(
            &settings.id,
            GossipLimits::default(),
            settings.pins.clone(),
        )));
        let endpoint::Opened {
            endpoint,
            inbound,
            samples,
            backbone: backbone_inbound,
            replies,
            receive_task,
            flow_tasks,
        } = endpoint::open(
            &settings.id,
            socket,
            flows,
            settings.key.clone(),
            settings.packet_max_age,
            metrics.clone(),
            &probe.handle,
        );
        let endpoint::GossipPath {
            transport,
            task: gossip_task,
        } = endpoint::gossip_path(
            crate::wire::Kind::Gossip,
            endpoint.clone(),
            inbound,
            gossip_guard.clone(),
            settings.stall_gossip.clone(),
            stop.clone(),
        );

        let generation = next_generation();
        // Under the sites topology each site is a cluster of its own.
        let cluster_id = match settings.topology {
            Topology::Full => settings.cluster.clone(),
            Topology::Sites { .. } => format!("{}/site/{}", settings.cluster, settings.site),
        };
        let config = cluster_config(
            &settings,
            cluster_id,
            generation,
            settings.seeds.clone(),
            settings.gossip_interval,
            Duration::from_secs(3600),
        );
        let mut initial = vec![
            (identity::ID_KEY.to_string(), settings.identity.public()),
            (KEY_SITE.to_string(), settings.site.clone()),
            (
                KEY_VERSION.to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ];
        if let Some(h) = &settings.http {
            initial.push((KEY_HTTP.to_string(), h.clone()));
        }
        if !settings.tags.is_empty() {
            initial.push((KEY_TAGS.to_string(), settings.tags.join(",")));
        }
        if settings.server {
            initial.push((KEY_ROLE.to_string(), "server".to_string()));
        }
        let initial = signed_initial(&settings, generation, initial);
        let chitchat = Arc::new(
            spawn_chitchat(config, initial, &transport)
                .await
                .map_err(|e| MeshError::Gossip(format!("{e:#}")))?,
        );

        // Link changes are pushed at once (rumour spreading) rather than
        // waiting for the next anti-entropy round: a node that learns a
        // changed link state gossips with a few peers right away.
        let (push_tx, push_rx) = mpsc::channel::<Arc<str>>(PUSH_QUEUE);
        // What was last seen of each observer's links, per bucket (its key
        // hashed): a hash of the links that are not up and their states,
        // 16 bytes a bucket (a per-link table took 16 bytes a link: 160 KB
        // on each node of a site of 100). Observers that left the grid are
        // forgotten by the maintainer.
        let seen_states: SeenStates = Default::default();
        let hasher = std::collections::hash_map::RandomState::new();
        let remote_push = push_tx.clone();
        let seen = seen_states.clone();
        // The maintainer: woken by this node's own link changes, by
        // arrivals, and (under sites) by others' link news, which a
        // representative's summary of its site must carry at once.
        let changes = Arc::new(Notify::new());
        let remote_news =
            matches!(settings.topology, Topology::Sites { .. }).then(|| changes.clone());
        let edge_listener =
            chitchat
                .chitchat()
                .lock()
                .await
                .subscribe_event(EDGE_PREFIX, move |event| {
                    use std::hash::BuildHasher;
                    let links = identity::payload(event.value)
                        .map(|v| decode_links(event.key, v))
                        .unwrap_or_default();
                    let changed = seen
                        .lock()
                        .map(|mut seen| {
                            let observer = match seen.get_mut(&*event.node.node_id) {
                                Some(m) => m,
                                None => seen.entry(event.node.node_id.to_string()).or_default(),
                            };
                            // News worth passing on at once: a state that
                            // changed, or a link first seen in trouble. A
                            // link first seen up (a grid starting) travels
                            // with the next rounds. Both show as a change
                            // in the bucket's links that are not up.
                            let trouble = hasher.hash_one(
                                links
                                    .iter()
                                    .filter(|(_, e)| e.state != crate::link::LinkState::Up)
                                    .map(|(t, e)| (t.as_str(), e.state as u8))
                                    .collect::<Vec<_>>(),
                            );
                            let none = hasher.hash_one(Vec::<(&str, u8)>::new());
                            match observer.insert(hasher.hash_one(event.key), trouble) {
                                Some(before) => before != trouble,
                                None => trouble != none,
                            }
                        })
                        .unwrap_or(false);
                    if changed {
                        let _ = remote_push.try_send(event.node.node_id.clone());
                        if let Some(wake) = &remote_news {
                            wake.notify_one();
                        }
                    }
                });
        // A node joining: this node's targets are brought up to date at
        // once, so it is probed as soon as it is heard of. Its arrival
        // travels with the gossip rounds: a grid starting all at once
        // would otherwise push (each push a full exchange) on every one of
        // N² arrivals.
        let joined = changes.clone();
        let join_listener = chitchat
            .chitchat()
            .lock()
            .await
            .subscribe_event(KEY_SITE, move |_| {
                joined.notify_one();
            });
        let span = |task: &'static str| tracing::info_span!("task", node = %settings.id, stage = "mesh", task);
        let joining: Arc<Joining> = Default::default();
        let (targets_tx, targets_rx) = watch::channel(Vec::new());
        let pusher_task = tokio::spawn(
            push_changes(
                chitchat.clone(),
                endpoint.clone(),
                joining.clone(),
                targets_rx.clone(),
                settings.topology,
                push_rx,
            )
            .instrument(span("gossip-push")),
        );

        let links = SharedLinks::default();
        links.lock().expect("link table lock").flow_ports = flow_ports;
        let prober = Prober {
            endpoint: endpoint.clone(),
            net,
            timing: settings.timing.clone(),
            policy: settings.policy.clone(),
            targets: targets_rx,
            replies,
            links: links.clone(),
            metrics: metrics.clone(),
            changes: changes.clone(),
        };
        let prober_task = probe.handle.spawn(prober.run().instrument(span("prober")));
        let k = match settings.topology {
            Topology::Sites { representatives } => representatives as usize,
            Topology::Full => 0,
        };
        let backbone = BackboneState::new(
            Arc::new(crate::sites::RepresentativeBook::new(
                &settings.site,
                k,
                SUMMARY_TTL,
            )),
            backbone_inbound.clone(),
        );
        let backbone_slot = backbone.slot.clone();
        let relayers: Arc<Relayers> = Default::default();
        let maintainer = Maintainer {
            backbone,
            relayers: relayers.clone(),
            chitchat: chitchat.chitchat(),
            joining: joining.clone(),
            settings: settings.clone(),
            links: links.clone(),
            targets: targets_tx,
            changes,
            push: push_tx,
            publisher: LinkPublisher::default(),
            metrics: metrics.clone(),
            seen_states: seen_states.clone(),
            gossip_guard,
            endpoint: endpoint.clone(),
            peers: HashMap::new(),
            pins_read: None,
            intro_pushed: None,
            intro_push_due: None,
        };
        let maintain_task = tokio::spawn(maintainer.run().instrument(span("maintainer")));
        let sample_subscriber: SampleSubscriber = Default::default();
        let proven: Proven = Default::default();
        let intake_task = tokio::spawn(
            SampleIntake {
                own_id: settings.id.to_string(),
                proven: proven.clone(),
                pins: settings.pins.clone(),
                subscriber: sample_subscriber.clone(),
                metrics: metrics.clone(),
                max_age_ms: settings.packet_max_age.as_millis() as u64,
            }
            .run(samples)
            .instrument(span("sample-intake")),
        );
        let presence_task = tokio::spawn(
            Presence {
                chitchat: chitchat.chitchat(),
                joining: joining.clone(),
                settings: settings.clone(),
                endpoint: endpoint.clone(),
            }
            .run()
            .instrument(span("presence")),
        );
        tracing::info!(node = %settings.id, site = %settings.site, listen = %settings.listen, seeds = ?settings.seeds, "mesh node started");
        Ok(MeshNode {
            settings,
            chitchat,
            _listeners: [edge_listener, join_listener],
            links,
            metrics,
            // The gossip check goes first: it stops last.
            tasks: [
                gossip_task,
                receive_task,
                prober_task,
                maintain_task,
                pusher_task,
                intake_task,
                presence_task,
            ]
            .into_iter()
            .chain(flow_tasks)
            .collect::<Vec<_>>()
            .into(),
            seen_states,
            stop,
            probe: tokio::sync::Mutex::new(probe),
            endpoint,
            sample_subscriber,
            proven,
            joining,
            graph_cache: tokio::sync::Mutex::new(None),
            backbone: backbone_slot,
            backbone_inbound,
            relayers,
        })
    }
}
