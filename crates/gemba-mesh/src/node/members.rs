//! Membership as the node reports it: the newest generation of each
//! node, a grace for nodes still joining, and each member's links.

use super::*;

/// Members from chitchat's state; `with_edges` also parses every published
/// link (only the graph needs them).
/// Each node id's newest generation among those that published their key
/// (and so passed the gossip guard's signature checks): a generation that
/// an impostor only named in a digest holds nothing and hides nothing.
pub(super) fn newest_generations(chitchat: &chitchat::Chitchat) -> HashMap<&str, &ChitchatId> {
    let mut newest: HashMap<&str, &ChitchatId> = HashMap::new();
    for (id, state) in chitchat.node_states() {
        if state.get(identity::ID_KEY).is_none() {
            continue;
        }
        let e = newest.entry(&id.node_id).or_insert(id);
        if id.generation_id > e.generation_id {
            *e = id;
        }
    }
    newest
}

/// How long a node just heard of counts as live before chitchat has
/// judged it (see [`Joining`]).
pub(super) const JOIN_GRACE: Duration = Duration::from_secs(10);

/// Nodes heard of that chitchat has not called live yet. chitchat judges a
/// node by the intervals between its heartbeats, so only after two of them
/// and at its next gossip round: for its first seconds a node that just
/// joined would look dead, its links stale and the node down on every
/// console. Such a node counts as live for [`JOIN_GRACE`] after it was
/// first heard of; once chitchat has called it live, chitchat's word holds.
#[derive(Default)]
pub(super) struct Joining(std::sync::Mutex<HashMap<ChitchatId, (Instant, bool)>>);

impl Joining {
    /// Whether `cid` counts as live, given what chitchat says.
    pub(super) fn live(&self, cid: &ChitchatId, chitchat_live: bool, now: Instant) -> bool {
        let Ok(mut seen) = self.0.lock() else {
            return chitchat_live;
        };
        let (first, confirmed) = match seen.get_mut(cid) {
            Some(e) => e,
            None => seen.entry(cid.clone()).or_insert((now, false)),
        };
        if chitchat_live {
            *confirmed = true;
            return true;
        }
        !*confirmed && now.duration_since(*first) < JOIN_GRACE
    }

    /// Forgets the nodes chitchat no longer holds.
    pub(super) fn retain(&self, held: impl Fn(&ChitchatId) -> bool) {
        if let Ok(mut seen) = self.0.lock() {
            seen.retain(|cid, _| held(cid));
        }
    }
}

/// The links a node publishes, decoded from its signed values.
pub(super) fn links_of(
    state: &chitchat::NodeState,
) -> impl Iterator<Item = (String, EdgeValue)> + '_ {
    state
        .key_values()
        .filter_map(|(k, v)| Some((k.strip_prefix(EDGE_PREFIX)?, identity::payload(v)?)))
        .flat_map(|(k, v)| decode_links(k, v))
}

pub(super) fn members_of(
    chitchat: &chitchat::Chitchat,
    joining: &Joining,
    with_edges: bool,
) -> Vec<Member> {
    let chitchat_live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    let now = Instant::now();
    let newest = newest_generations(chitchat);
    let mut out = Vec::with_capacity(newest.len());
    for (_, cid) in newest {
        let Some(state) = chitchat.node_state(cid) else {
            continue;
        };
        let get = |k: &str| state.get(k).and_then(identity::payload);
        let Some(site) = get(KEY_SITE) else {
            continue;
        };
        let edges: BTreeMap<String, EdgeValue> = if with_edges {
            links_of(state).collect()
        } else {
            BTreeMap::new()
        };
        out.push(Member {
            id: cid.node_id.to_string(),
            site: site.to_string(),
            addr: cid.gossip_advertise_addr,
            http: get(KEY_HTTP).map(str::to_string),
            live: joining.live(cid, chitchat_live.contains(cid), now),
            generation: cid.generation_id,
            server: get(KEY_ROLE) == Some("server"),
            tags: get(KEY_TAGS)
                .map(|t| {
                    t.split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            edges,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}
