//! How this node's links travel in gossip, and when they are published.
//!
//! Every value a node publishes is signed, and every other node verifies
//! it once, so the grid's cost is the number of values published times the
//! number of nodes. Two rules keep that number down:
//!
//! - **Links share values.** A node's links are spread over a few buckets
//!   by a hash of the target's id, at most [`PER_BUCKET`] links a bucket on
//!   average, and each bucket is one signed value under
//!   `e:<bucket>/<buckets>`: `b01=u3,4,0cn0/8@1732240000;b02=…`. A node of
//!   a 50-node grid publishes 4 values for its 49 links, and a grid
//!   starting up verifies a sixteenth of what one value per link would
//!   cost.
//! - **Only news is published.** A link goes out when it is first
//!   measured (never while it is unknown; first measured up, it waits up
//!   to [`INTRO_BATCH`] for the links measured after it), when its state, loss kind,
//!   failing flows or TCP path change (a first TCP result that it connects
//!   counts as figures), and when its figures move across a
//!   bucket boundary by more than the hysteresis of [`EdgeValue`]; a
//!   figures-only change waits at least [`FIGURES_GAP`] per link and
//!   spends from a budget of [`FIGURE_VALUES_PER_S`] values a second per
//!   node. Nothing is published because time passed.
//!
//! Readers take both this form and the one-link-per-key form
//! (`e:<target>`) of earlier versions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::link::{EdgeValue, LinkState, TcpPath};

/// The prefix of link keys.
pub const EDGE_PREFIX: &str = "e:";
/// Links a bucket holds on average, at most.
pub const PER_BUCKET: usize = 16;
/// The least time between two figures-only publications of one link.
pub const FIGURES_GAP: Duration = Duration::from_secs(60);
/// Figures-only values a node may publish a second, on average.
pub const FIGURE_VALUES_PER_S: f64 = 1.0;
/// How long links first measured up wait for others to go out with them:
/// a node that is joining a grid measures its links one after another as
/// it hears of its peers, and each bucket published once beats each
/// published for every link. Links in trouble never wait.
pub const INTRO_BATCH: Duration = Duration::from_millis(250);
/// Figures-only values a node may publish at once.
const FIGURE_BURST: f64 = 8.0;
/// A bucket value longer than this makes the node use more buckets (the
/// gossip guard refuses values over 8 KiB, signature included).
const MAX_BUCKET_BYTES: usize = 6_000;

/// The bucket `target` falls in among `count` (a power of two).
pub fn bucket_of(target: &str, count: usize) -> usize {
    // FNV-1a: the same on every node and every run.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in target.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % count.max(1) as u64) as usize
}

/// The gossip key of bucket `b` of `count`.
pub fn bucket_key(b: usize, count: usize) -> String {
    format!("{EDGE_PREFIX}{b}/{count}")
}

/// A bucket's value: its links, sorted by target.
pub fn encode_bucket<'a>(links: impl IntoIterator<Item = (&'a str, &'a EdgeValue)>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (target, v) in links {
        if !out.is_empty() {
            out.push(';');
        }
        let _ = write!(out, "{target}={v}");
    }
    out
}

/// The links a key (without [`EDGE_PREFIX`]) and its value carry: a
/// bucket, or one link in the older form. A peer's value is hostile:
/// targets must follow the name grammar and values parse exactly, else
/// the entry is left out.
pub fn decode_links(key: &str, value: &str) -> Vec<(String, EdgeValue)> {
    let bucket = key
        .split_once('/')
        .is_some_and(|(b, n)| is_number(b) && is_number(n));
    if !bucket {
        return match value.parse() {
            Ok(v) if gemba_core::ids::is_name(key) => vec![(key.to_string(), v)],
            _ => Vec::new(),
        };
    }
    value
        .split(';')
        .filter_map(|entry| {
            let (target, v) = entry.split_once('=')?;
            if !gemba_core::ids::is_name(target) {
                return None;
            }
            Some((target.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// What one pass decided to publish.
#[derive(Debug, Default, PartialEq)]
pub struct Publication {
    /// Keys to set, with their values.
    pub set: Vec<(String, String)>,
    /// Keys to delete.
    pub delete: Vec<String>,
    /// Whether some link's state changed, or a link was first measured in
    /// trouble, or links first measured up go out (worth pushing).
    pub state_changed: bool,
    /// Whether that news is more than links first measured up: trouble
    /// (or a recovery), pushed at once.
    pub trouble: bool,
}

impl Publication {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.delete.is_empty()
    }
}

#[derive(Clone, Copy, Debug)]
struct Published {
    value: EdgeValue,
    /// When this link's figures last went out.
    figures_at: Instant,
}

/// Decides what of this node's links to publish, pass after pass.
#[derive(Debug)]
pub struct LinkPublisher {
    published: HashMap<String, Published>,
    /// Buckets in use (a power of two).
    count: usize,
    /// Keys currently published.
    live: HashSet<String>,
    tokens: f64,
    refilled: Option<Instant>,
    /// Since when links first measured up have been waiting.
    intro_since: Option<Instant>,
}

impl Default for LinkPublisher {
    fn default() -> Self {
        LinkPublisher {
            published: HashMap::new(),
            count: 1,
            live: HashSet::new(),
            tokens: FIGURE_BURST,
            refilled: None,
            intro_since: None,
        }
    }
}

impl LinkPublisher {
    /// When links first measured up are due to go out, if some wait: the
    /// caller plans again then, so they never wait for its next tick.
    pub fn intro_due(&self) -> Option<Instant> {
        self.intro_since.map(|since| since + INTRO_BATCH)
    }
}

/// Buckets for `links` links, keeping `current` unless it is too few or
/// four times too many (so the count does not flap at a boundary).
fn bucket_count(links: usize, current: usize) -> usize {
    let needed = links.div_ceil(PER_BUCKET).max(1).next_power_of_two();
    if needed > current || links <= current * PER_BUCKET / 4 {
        needed
    } else {
        current
    }
}

impl LinkPublisher {
    /// What was last published for `target`: its buckets are kept while
    /// the figures stay near them (see [`EdgeValue`]'s hysteresis).
    pub fn previous(&self, target: &str) -> Option<&EdgeValue> {
        self.published.get(target).map(|p| &p.value)
    }

    /// Buckets in use.
    pub fn buckets(&self) -> usize {
        self.count
    }

    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.refilled {
            let earned = now.duration_since(at).as_secs_f64() * FIGURE_VALUES_PER_S;
            self.tokens = (self.tokens + earned).min(FIGURE_BURST);
        }
        self.refilled = Some(now);
    }

    /// Plans one pass over the links as measured now (`current`: target
    /// and value; links still unknown are left out by the caller or here).
    pub fn plan(&mut self, now: Instant, current: Vec<(String, EdgeValue)>) -> Publication {
        self.refill(now);
        let current: BTreeMap<String, EdgeValue> = current
            .into_iter()
            .filter(|(_, v)| v.state != LinkState::Unknown)
            .collect();
        let mut count = bucket_count(current.len(), self.count);
        // Long ids: more buckets until each value fits.
        loop {
            let mut sizes = vec![0usize; count];
            for (t, _) in current.iter() {
                sizes[bucket_of(t, count)] += t.len() + 50;
            }
            if count >= 1024 || sizes.iter().all(|s| *s <= MAX_BUCKET_BYTES) {
                break;
            }
            count *= 2;
        }
        // Regrouping republishes what is published under the new count.
        let regrouped = count != self.count && !self.live.is_empty();
        let mut news = HashSet::new();
        let mut intros = HashSet::new();
        let mut figures = HashSet::new();
        let mut state_changed = false;
        let mut trouble = false;
        for (t, v) in &current {
            let b = bucket_of(t, count);
            match self.published.get(t) {
                // First measured up: waits a little for the others.
                None if v.state == LinkState::Up => {
                    intros.insert(b);
                }
                // First measured in trouble: news, pushed at once.
                None => {
                    news.insert(b);
                    state_changed = true;
                    trouble = true;
                }
                Some(p) if p.value.state != v.state => {
                    news.insert(b);
                    state_changed = true;
                    trouble = true;
                }
                // A first TCP result that the link connects confirms what
                // the UDP probes said: it waits with the figures.
                Some(p)
                    if p.value.kind != v.kind
                        || p.value.failing != v.failing
                        || p.value.probed != v.probed
                        || (p.value.tcp != v.tcp
                            && !(p.value.tcp == TcpPath::Unknown
                                && v.tcp == TcpPath::Connects)) =>
                {
                    news.insert(b);
                }
                Some(p) if p.value != *v && now.duration_since(p.figures_at) >= FIGURES_GAP => {
                    figures.insert(b);
                }
                _ => {}
            }
        }
        // Links that are gone change their bucket too.
        for t in self.published.keys() {
            if !current.contains_key(t) {
                news.insert(bucket_of(t, count));
            }
        }
        if intros.is_empty() {
            self.intro_since = None;
        } else {
            let since = *self.intro_since.get_or_insert(now);
            // Out with other news, or after the batch time.
            if !news.is_empty() || now.duration_since(since) >= INTRO_BATCH {
                news.extend(intros.iter().copied());
                self.intro_since = None;
                state_changed = true;
            }
        }
        let mut dirty: HashSet<usize> = if regrouped {
            // Regrouping publishes every link now, those first measured up
            // too: their news goes out with it, pushed, or it would wait
            // for the gossip rounds.
            if !intros.is_empty() {
                self.intro_since = None;
                state_changed = true;
            }
            (0..count).collect()
        } else {
            news
        };
        let mut waiting: Vec<usize> = figures.difference(&dirty).copied().collect();
        waiting.sort_unstable();
        for b in waiting {
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                dirty.insert(b);
            }
        }
        let mut out = Publication {
            state_changed,
            trouble,
            ..Publication::default()
        };
        if dirty.is_empty() {
            return out;
        }
        let mut grouped: BTreeMap<usize, Vec<(&str, &EdgeValue)>> = BTreeMap::new();
        for (t, v) in &current {
            let b = bucket_of(t, count);
            if dirty.contains(&b) {
                grouped.entry(b).or_default().push((t, v));
            }
        }
        let mut wanted = HashSet::new();
        let mut dirty: Vec<usize> = dirty.into_iter().collect();
        dirty.sort_unstable();
        for b in dirty {
            let key = bucket_key(b, count);
            match grouped.get(&b) {
                Some(links) => {
                    out.set
                        .push((key.clone(), encode_bucket(links.iter().copied())));
                    for (t, v) in links {
                        self.published.insert(
                            t.to_string(),
                            Published {
                                value: **v,
                                figures_at: now,
                            },
                        );
                    }
                    wanted.insert(key);
                }
                None => {
                    if self.live.contains(&key) {
                        out.delete.push(key);
                    }
                }
            }
        }
        if regrouped {
            let mut old: Vec<String> = self
                .live
                .iter()
                .filter(|k| !wanted.contains(*k))
                .cloned()
                .collect();
            old.sort();
            out.delete.extend(old);
            self.live.clear();
        }
        for k in &out.delete {
            self.live.remove(k);
        }
        self.live.extend(wanted);
        self.published.retain(|t, _| current.contains_key(t));
        self.count = count;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LossKind;

    fn v(state: LinkState, p50: u8) -> EdgeValue {
        EdgeValue {
            state,
            p50,
            p99: p50,
            loss: 0,
            tcp: TcpPath::Connects,
            kind: LossKind::None,
            failing: 0,
            probed: 8,
            since: 1_800_000_000,
        }
    }

    fn links(n: usize, state: LinkState) -> Vec<(String, EdgeValue)> {
        (0..n).map(|i| (format!("n{i:02}"), v(state, 3))).collect()
    }

    /// Links first measured up go out once their batch time is over.
    fn first_up(
        p: &mut LinkPublisher,
        now: Instant,
        links: Vec<(String, EdgeValue)>,
    ) -> Publication {
        assert!(
            p.plan(now, links.clone()).is_empty(),
            "first-up links waited"
        );
        p.plan(now + INTRO_BATCH, links)
    }

    #[test]
    fn buckets_round_trip_and_hostile_entries_are_left_out() {
        let a = v(LinkState::Up, 3);
        let b = v(LinkState::Down, 0);
        let text = encode_bucket([("web-1", &a), ("db-1", &b)]);
        assert_eq!(
            decode_links("0/2", &text),
            vec![("web-1".to_string(), a), ("db-1".to_string(), b)]
        );
        let hostile = format!("{text};--x=u1,1,0cn0/8@1;ok=garbage;=;;");
        assert_eq!(decode_links("0/2", &hostile).len(), 2);
        // The older form: one link per key.
        assert_eq!(
            decode_links("web-1", &a.to_string()),
            vec![("web-1".to_string(), a)]
        );
        assert!(decode_links("../x", &a.to_string()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_grid_of_fifty_publishes_four_values_per_node_and_then_nothing() {
        let mut p = LinkPublisher::default();
        let now = Instant::now();
        // Unknown links are not published.
        assert!(p.plan(now, links(49, LinkState::Unknown)).is_empty());
        let first = first_up(&mut p, now, links(49, LinkState::Up));
        assert_eq!(first.set.len(), 4, "{first:?}");
        assert!(first.state_changed, "a node's first links are pushed");
        assert!(!first.trouble, "links first up are no trouble");
        let mut seen: Vec<(String, EdgeValue)> = first
            .set
            .iter()
            .flat_map(|(k, val)| decode_links(k.strip_prefix(EDGE_PREFIX).unwrap(), val))
            .collect();
        seen.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(seen, links(49, LinkState::Up));
        // Nothing changed: nothing is published, however long it waits.
        let later = now + Duration::from_secs(3600);
        assert!(p.plan(later, links(49, LinkState::Up)).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn news_goes_out_at_once_and_figures_wait_for_their_gap_and_budget() {
        let mut p = LinkPublisher::default();
        let t0 = Instant::now();
        first_up(&mut p, t0, links(40, LinkState::Up));
        // One link down: only its bucket, at once.
        let mut now = links(40, LinkState::Up);
        now[7].1 = v(LinkState::Down, 0);
        let news = p.plan(t0 + Duration::from_secs(1), now.clone());
        assert_eq!(news.set.len(), 1);
        assert!(news.state_changed && news.trouble);
        assert!(news.set[0].1.contains("n07=d"));
        // Every link's figures move: nothing before the gap.
        let moved: Vec<(String, EdgeValue)> = now
            .iter()
            .map(|(t, e)| {
                (
                    t.clone(),
                    EdgeValue {
                        p99: e.p99 + 3,
                        ..*e
                    },
                )
            })
            .collect();
        assert!(p
            .plan(t0 + Duration::from_secs(30), moved.clone())
            .is_empty());
        // After it, every bucket whose figures moved (4, within the burst).
        let after = t0 + FIGURES_GAP + Duration::from_secs(1);
        assert_eq!(p.plan(after, moved).set.len(), 4);
        // Many buckets whose figures all move: the burst, then one value
        // a second.
        let mut q = LinkPublisher::default();
        first_up(&mut q, t0, links(250, LinkState::Up));
        assert_eq!(q.buckets(), 16);
        let moved: Vec<(String, EdgeValue)> = links(250, LinkState::Up)
            .into_iter()
            .map(|(t, e)| {
                (
                    t,
                    EdgeValue {
                        p99: e.p99 + 3,
                        ..e
                    },
                )
            })
            .collect();
        let start = t0 + FIGURES_GAP + INTRO_BATCH;
        let counts: Vec<usize> = (0..5)
            .map(|s| {
                q.plan(start + Duration::from_secs(s), moved.clone())
                    .set
                    .len()
            })
            .collect();
        assert_eq!(counts, [8, 1, 1, 1, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn links_measured_one_by_one_go_out_together_and_trouble_at_once() {
        let mut p = LinkPublisher::default();
        let t0 = Instant::now();
        // A joining node measures its peers one after another.
        let mut links = links(10, LinkState::Unknown);
        let mut published = 0;
        for k in 0..links.len() {
            links[k].1 = v(LinkState::Up, 3);
            published += p
                .plan(t0 + Duration::from_millis(20 * k as u64), links.clone())
                .set
                .len();
        }
        assert_eq!(published, 0, "none of them waited the batch time yet");
        // The caller is told when to plan again.
        assert_eq!(p.intro_due(), Some(t0 + INTRO_BATCH));
        assert_eq!(p.plan(t0 + INTRO_BATCH, links.clone()).set.len(), 1);
        // More peers heard of: their links wait for the batch time...
        let mut more = links.clone();
        more.extend((10..14).map(|i| (format!("n{i:02}"), v(LinkState::Unknown, 0))));
        more[10].1 = v(LinkState::Up, 3);
        let t1 = t0 + Duration::from_secs(1);
        assert!(p.plan(t1, more.clone()).is_empty());
        // ...unless a link in trouble goes out at once and takes them along.
        more[11].1 = v(LinkState::Down, 0);
        let out = p.plan(t1 + Duration::from_millis(100), more.clone());
        assert!(out.state_changed);
        assert!(out.set.iter().any(|(_, val)| val.contains("n10=u")));
        // Alone, they go out after the batch time.
        more[12].1 = v(LinkState::Up, 3);
        let t2 = t1 + Duration::from_secs(1);
        assert!(p.plan(t2, more.clone()).is_empty());
        let out = p.plan(t2 + INTRO_BATCH, more);
        assert!(out.set.iter().any(|(_, val)| val.contains("n12=u")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_growing_grid_regroups_and_deletes_the_old_buckets() {
        let mut p = LinkPublisher::default();
        let now = Instant::now();
        let first = first_up(&mut p, now, links(10, LinkState::Up));
        assert_eq!(first.set.len(), 1);
        assert_eq!(first.set[0].0, "e:0/1");
        // Regrouping republishes everything at once, the new links along.
        let grown = p.plan(now + Duration::from_secs(1), links(20, LinkState::Up));
        assert_eq!(p.buckets(), 2);
        assert_eq!(grown.delete, vec!["e:0/1".to_string()]);
        assert_eq!(grown.set.len(), 2);
        // The new links were news to the peers: pushed, not left to the
        // gossip rounds, and nothing waits for the batch time any more.
        assert!(grown.state_changed, "regrouped first-up links are pushed");
        assert_eq!(p.intro_due(), None);
        // A link that goes away leaves its bucket, which is republished.
        let fewer = p.plan(now + Duration::from_secs(2), links(19, LinkState::Up));
        assert_eq!(fewer.set.len(), 1);
        assert!(!fewer.set[0].1.contains("n19="));
        // Long ids spread over more buckets so that each value fits.
        let mut q = LinkPublisher::default();
        let long: Vec<(String, EdgeValue)> = (0..100)
            .map(|i| (format!("{i:0>64}"), v(LinkState::Up, 3)))
            .collect();
        let out = first_up(&mut q, now, long);
        assert!(out.set.iter().all(|(_, val)| val.len() <= MAX_BUCKET_BYTES));
    }
}
