//! Sites and the backbone: what lets a grid grow to thousands of nodes.
//!
//! Under the `sites` topology each site is its own chitchat cluster: its
//! nodes gossip their full state (links, checks) among themselves only. The
//! `k` representatives of each site (the live members with the lowest ids,
//! [`crate::topology::representatives`], so every member of a site names
//! the same ones and a failed one is replaced without an election) also
//! join the backbone, a second chitchat cluster on the same socket, where
//! each publishes one [`SiteSummary`] of its site: node health, its links
//! to other sites (measured by the representatives, over many flows), the
//! site's broken links in short form. Each site's first representative
//! relays every other site's summary into its site under [`RELAY_PREFIX`],
//! so every node knows
//! its own site in full and every other site in short form, and no node
//! holds or verifies the whole grid.
//!
//! This module holds the summary's wire form ([`encode`], [`decode`]:
//! bounded text, every name checked against the one grammar), how a
//! representative computes it ([`summarize`]) and the backbone's rule on
//! who may sign one ([`RepresentativeBook`]).

use std::collections::{BTreeMap, HashMap};

use gemba_core::graph::{
    Graph, LinkState, LossKind, NodeState, SiteBrokenLink, SiteLink, SiteMember, SiteNode,
    SiteSummary, SITE_BROKEN_MAX, SITE_TROUBLED_MAX,
};

use crate::graph::Member;

mod book;

pub use book::RepresentativeBook;

/// The backbone key each representative publishes its site's summary under.
pub const SUMMARY_KEY: &str = "summary";
/// Summaries relayed into a site, one key per site: `bb:<site>`.
pub const RELAY_PREFIX: &str = "bb:";
/// Sites one summary may name links to (the summary must fit one gossip
/// value).
pub const MAX_SITES: usize = 600;

fn state_letter(s: LinkState) -> char {
    match s {
        LinkState::Up => 'u',
        LinkState::Degraded => 'd',
        LinkState::Down => 'x',
        LinkState::Unknown => '?',
        LinkState::Stale => 's',
    }
}

fn letter_state(c: &str) -> Option<LinkState> {
    Some(match c {
        "u" => LinkState::Up,
        "d" => LinkState::Degraded,
        "x" => LinkState::Down,
        "?" => LinkState::Unknown,
        "s" => LinkState::Stale,
        _ => return None,
    })
}

fn kind_letter(k: LossKind) -> char {
    match k {
        LossKind::None => 'n',
        LossKind::Random => 'r',
        LossKind::Path => 'p',
        LossKind::Total => 't',
    }
}

fn letter_kind(c: &str) -> Option<LossKind> {
    Some(match c {
        "n" => LossKind::None,
        "r" => LossKind::Random,
        "p" => LossKind::Path,
        "t" => LossKind::Total,
        _ => return None,
    })
}

fn node_letter(s: NodeState) -> char {
    match s {
        NodeState::Up => 'u',
        NodeState::Degraded => 'd',
        NodeState::Down => 'x',
        NodeState::Isolated => 'i',
        NodeState::Unknown => '?',
    }
}

fn letter_node(c: &str) -> Option<NodeState> {
    Some(match c {
        "u" => NodeState::Up,
        "d" => NodeState::Degraded,
        "x" => NodeState::Down,
        "i" => NodeState::Isolated,
        "?" => NodeState::Unknown,
        _ => return None,
    })
}

/// Separates the facts of a summary: gossip values hold no control
/// characters.
const SEP: char = ';';

/// The summary as it travels: one fact per `;`-separated line. The signer is not in
/// it (it is whoever signed the value) and neither is staleness (the
/// reader's judgement).
pub fn encode(s: &SiteSummary) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(512 + 16 * s.links.len());
    let _ = write!(out, "site {} {}{SEP}", s.site, s.at_ms);
    for r in &s.representatives {
        let _ = write!(
            out,
            "rep {} {} {}{SEP}",
            r.id,
            r.addr,
            r.http
                .as_deref()
                .filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != SEP as u8))
                .unwrap_or("-")
        );
    }
    let _ = write!(out, "nodes {} {}{SEP}", s.nodes, s.up);
    for n in &s.troubled {
        let _ = write!(out, "n {} {}{SEP}", n.id, node_letter(n.state));
    }
    // Links that are up, the common case, on one line.
    let up: Vec<&str> = s
        .links
        .iter()
        .filter(|l| l.state == LinkState::Up)
        .map(|l| l.to.as_str())
        .collect();
    if !up.is_empty() {
        let _ = write!(out, "up {}{SEP}", up.join(" "));
    }
    for l in s.links.iter().filter(|l| l.state != LinkState::Up) {
        let _ = write!(
            out,
            "l {} {} {} {} {}{SEP}",
            l.to,
            state_letter(l.state),
            kind_letter(l.loss_kind),
            l.pairs_troubled,
            l.pairs
        );
    }
    for b in &s.broken {
        let _ = write!(
            out,
            "b {} {} {} {}{SEP}",
            b.source,
            b.target,
            state_letter(b.state),
            kind_letter(b.loss_kind)
        );
    }
    let _ = write!(out, "broken {}", s.broken_total);
    out
}

/// Why a summary could not be read.
pub type DecodeError = &'static str;

fn name(s: Option<&str>) -> Result<String, DecodeError> {
    let s = s.ok_or("a name is missing")?;
    if gemba_core::ids::is_name(s) {
        Ok(s.to_string())
    } else {
        Err("a name does not follow the grammar")
    }
}

fn count(s: Option<&str>) -> Result<usize, DecodeError> {
    s.and_then(|s| s.parse::<u32>().ok())
        .map(|n| n as usize)
        .ok_or("a count is not a number")
}

/// Reads a summary; anything malformed, out of bounds or badly named is
/// refused as a whole. `signer` is the node whose signature it carries.
pub fn decode(text: &str, signer: &str) -> Result<SiteSummary, DecodeError> {
    let mut s = SiteSummary {
        signer: signer.to_string(),
        ..Default::default()
    };
    let mut lines = text.split(SEP);
    let mut head = lines.next().ok_or("empty")?.split(' ');
    if head.next() != Some("site") {
        return Err("no site line");
    }
    s.site = name(head.next())?;
    s.at_ms = head.next().and_then(|t| t.parse().ok()).ok_or("no time")?;
    let mut ended = false;
    for line in lines {
        if ended {
            return Err("text after the end");
        }
        let mut f = line.split(' ');
        match f.next() {
            Some("rep") => {
                if s.representatives.len() >= 16 {
                    return Err("too many representatives");
                }
                let id = name(f.next())?;
                let addr = f.next().ok_or("no address")?;
                addr.parse::<std::net::SocketAddr>()
                    .map_err(|_| "not an address")?;
                let http = match f.next().ok_or("no http")? {
                    "-" => None,
                    h if h.len() <= 256 && h.bytes().all(|b| b.is_ascii_graphic()) => {
                        Some(h.to_string())
                    }
                    _ => return Err("not an http address"),
                };
                s.representatives.push(SiteMember {
                    id,
                    addr: addr.to_string(),
                    http,
                });
            }
            Some("nodes") => {
                s.nodes = count(f.next())?;
                s.up = count(f.next())?;
            }
            Some("n") => {
                if s.troubled.len() >= SITE_TROUBLED_MAX {
                    return Err("too many troubled nodes");
                }
                let id = name(f.next())?;
                let state = f.next().and_then(letter_node).ok_or("no node state")?;
                s.troubled.push(SiteNode { id, state });
            }
            Some("up") => {
                for to in f.by_ref() {
                    if s.links.len() >= MAX_SITES {
                        return Err("too many sites");
                    }
                    s.links.push(SiteLink {
                        to: name(Some(to))?,
                        state: LinkState::Up,
                        loss_kind: LossKind::None,
                        pairs: 0,
                        pairs_troubled: 0,
                    });
                }
            }
            Some("l") => {
                if s.links.len() >= MAX_SITES {
                    return Err("too many sites");
                }
                let to = name(f.next())?;
                let state = f.next().and_then(letter_state).ok_or("no link state")?;
                let loss_kind = f.next().and_then(letter_kind).ok_or("no loss kind")?;
                let pairs_troubled = count(f.next())?;
                let pairs = count(f.next())?;
                s.links.push(SiteLink {
                    to,
                    state,
                    loss_kind,
                    pairs,
                    pairs_troubled,
                });
            }
            Some("b") => {
                if s.broken.len() >= SITE_BROKEN_MAX {
                    return Err("too many broken links");
                }
                let source = name(f.next())?;
                let target = name(f.next())?;
                let state = f.next().and_then(letter_state).ok_or("no link state")?;
                let loss_kind = f.next().and_then(letter_kind).ok_or("no loss kind")?;
                s.broken.push(SiteBrokenLink {
                    source,
                    target,
                    state,
                    loss_kind,
                });
            }
            Some("broken") => {
                s.broken_total = count(f.next())?;
                ended = true;
            }
            _ => return Err("an unknown line"),
        }
        if f.next().is_some() {
            return Err("a line has more fields than it should");
        }
    }
    if !ended {
        return Err("cut short");
    }
    if s.up > s.nodes {
        return Err("more nodes up than nodes");
    }
    Ok(s)
}

/// What `site`'s representatives measure of the other sites, from their
/// published links to the other sites' representatives.
fn site_links(
    members: &[Member],
    reps: &[&str],
    others: &BTreeMap<String, Vec<String>>,
) -> Vec<SiteLink> {
    let reps: Vec<&Member> = members
        .iter()
        .filter(|m| reps.contains(&m.id.as_str()))
        .collect();
    others
        .iter()
        .map(|(site, their_reps)| {
            let mut pairs = 0;
            let mut troubled = 0;
            let mut down = 0;
            let mut kind = LossKind::None;
            for r in &reps {
                for t in their_reps {
                    let Some(e) = r.edges.get(t) else { continue };
                    if !r.live || matches!(e.state, LinkState::Unknown | LinkState::Stale) {
                        continue;
                    }
                    pairs += 1;
                    if e.state != LinkState::Up {
                        troubled += 1;
                        if e.state == LinkState::Down {
                            down += 1;
                        }
                        kind = match (kind, e.kind) {
                            (LossKind::Path, _) | (_, LossKind::Path) => LossKind::Path,
                            (LossKind::Random, _) | (_, LossKind::Random) => LossKind::Random,
                            (_, k) => k,
                        };
                    }
                }
            }
            let state = if pairs == 0 {
                LinkState::Unknown
            } else if down == pairs {
                kind = LossKind::Total;
                LinkState::Down
            } else if troubled > 0 {
                LinkState::Degraded
            } else {
                LinkState::Up
            };
            SiteLink {
                to: site.clone(),
                state,
                loss_kind: kind,
                pairs,
                pairs_troubled: troubled,
            }
        })
        .collect()
}

/// The summary of `site` as its representatives compute it: `graph` is the
/// site's own graph, `members` its members with their links, `reps` its
/// representatives, `others` the other sites' representatives.
pub fn summarize(
    site: &str,
    graph: &Graph,
    members: &[Member],
    reps: &[&str],
    others: &BTreeMap<String, Vec<String>>,
    at_ms: u64,
) -> SiteSummary {
    let by_id: HashMap<&str, &Member> = members.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut troubled: Vec<SiteNode> = graph
        .nodes
        .iter()
        .filter(|n| n.state != NodeState::Up)
        .map(|n| SiteNode {
            id: n.id.clone(),
            state: n.state,
        })
        .collect();
    troubled.sort_by(|a, b| (a.state, &a.id).cmp(&(b.state, &b.id)));
    troubled.truncate(SITE_TROUBLED_MAX);
    let broken_all = graph.broken_links();
    let broken = broken_all
        .iter()
        .take(SITE_BROKEN_MAX)
        .map(|e| SiteBrokenLink {
            source: e.source.clone(),
            target: e.target.clone(),
            state: e.state,
            loss_kind: e.loss_kind,
        })
        .collect();
    let mut s = SiteSummary {
        site: site.to_string(),
        at_ms,
        signer: String::new(),
        representatives: reps
            .iter()
            .filter_map(|r| by_id.get(r))
            .map(|m| SiteMember {
                id: m.id.clone(),
                addr: m.addr.to_string(),
                http: m.http.clone(),
            })
            .collect(),
        nodes: graph.nodes.len(),
        up: graph
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Up)
            .count(),
        troubled,
        links: site_links(members, reps, others),
        broken,
        broken_total: broken_all.len(),
        stale: false,
    };
    fit(&mut s);
    s
}

/// What an encoded summary may take: a gossip value, with room for its
/// signature and the relay's first line.
pub const SUMMARY_BUDGET: usize = 7_800;

/// Shortens the lists of `s` (broken links first, then troubled nodes,
/// last links to other sites) until it encodes within [`SUMMARY_BUDGET`];
/// the counts of nodes, nodes up and broken links stay true.
pub fn fit(s: &mut SiteSummary) {
    while encode(s).len() > SUMMARY_BUDGET {
        if s.broken.pop().is_none() && s.troubled.pop().is_none() && s.links.pop().is_none() {
            break;
        }
    }
}

/// Whether two summaries say the same thing (their times aside): a
/// representative republishes only when something changed.
pub fn same_news(a: &SiteSummary, b: &SiteSummary) -> bool {
    SiteSummary {
        at_ms: 0,
        signer: String::new(),
        stale: false,
        ..a.clone()
    } == SiteSummary {
        at_ms: 0,
        signer: String::new(),
        stale: false,
        ..b.clone()
    }
}

/// How bad a link state is, for telling trouble from good news: a link
/// not measured yet is no trouble.
fn severity(s: LinkState) -> u8 {
    match s {
        LinkState::Up | LinkState::Unknown => 0,
        LinkState::Stale => 1,
        LinkState::Degraded => 2,
        LinkState::Down => 3,
    }
}

/// Whether `new` tells of trouble `old` did not: a link to another site
/// worse than it was (or as bad over more representative pairs), a member
/// not up that was, fewer members or fewer up, a broken link inside not
/// listed before or more of them, other representatives, or a summary
/// gone stale. Trouble is published and relayed at once; anything else is
/// good news, which may wait (see [`GOOD_NEWS_EVERY`]).
pub fn worse_news(old: &SiteSummary, new: &SiteSummary) -> bool {
    if new.stale && !old.stale
        || new.representatives != old.representatives
        || new.nodes < old.nodes
        || new.up < old.up
        || new.broken_total > old.broken_total
    {
        return true;
    }
    let before: HashMap<&str, &SiteLink> = old.links.iter().map(|o| (o.to.as_str(), o)).collect();
    let links_worse = new.links.iter().any(|l| {
        let before = before.get(l.to.as_str());
        let was = before.map_or(0, |o| severity(o.state));
        severity(l.state) > was
            || severity(l.state) > 0
                && before.is_some_and(|o| {
                    l.pairs_troubled > o.pairs_troubled || l.loss_kind != o.loss_kind
                })
    });
    links_worse
        || new.troubled.iter().any(|t| !old.troubled.contains(t))
        || new.broken.iter().any(|b| !old.broken.contains(b))
}

/// Good news in summaries and their relays (links to other sites first
/// measured up, members come up, a broken link mended) is published at
/// most this often: a grid of many sites starting at once would otherwise
/// republish and relay every summary once per site link. Trouble does
/// not wait.
pub const GOOD_NEWS_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A relayed summary: its signer on the first line, then the summary, and
/// `stale` as a last line when no representative of it is heard in the
/// backbone any more.
pub fn encode_relay(s: &SiteSummary) -> String {
    let mut out = format!("{}{SEP}{}", s.signer, encode(s));
    if s.stale {
        out.push_str(STALE_SUFFIX);
    }
    out
}

/// What ends a relay of a summary whose site is no longer heard.
pub const STALE_SUFFIX: &str = ";stale";

/// Reads a relayed summary.
pub fn decode_relay(text: &str) -> Result<SiteSummary, DecodeError> {
    let (signer, rest) = text.split_once(SEP).ok_or("no signer")?;
    let signer = name(Some(signer))?;
    let (body, stale) = match rest.strip_suffix(STALE_SUFFIX) {
        Some(b) => (b, true),
        None => (rest, false),
    };
    let mut s = decode(body, &signer)?;
    s.stale = stale;
    Ok(s)
}

/// A summary of `site` naming `reps`, stamped `at_ms`, as tests need one.
#[cfg(test)]
pub(crate) fn signed_by_test_summary(site: &str, reps: &[&str], at_ms: u64) -> String {
    encode(&SiteSummary {
        site: site.into(),
        at_ms,
        representatives: reps
            .iter()
            .map(|r| SiteMember {
                id: r.to_string(),
                addr: "10.0.0.1:7946".into(),
                http: None,
            })
            .collect(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SiteSummary {
        SiteSummary {
            site: "ams".into(),
            at_ms: 1_700_000_000_000,
            signer: "ams-01".into(),
            representatives: vec![SiteMember {
                id: "ams-01".into(),
                addr: "10.0.0.1:7946".into(),
                http: Some("http://10.0.0.1:8080".into()),
            }],
            nodes: 40,
            up: 39,
            troubled: vec![SiteNode {
                id: "ams-17".into(),
                state: NodeState::Down,
            }],
            links: vec![
                SiteLink {
                    to: "fra".into(),
                    state: LinkState::Up,
                    loss_kind: LossKind::None,
                    pairs: 0,
                    pairs_troubled: 0,
                },
                SiteLink {
                    to: "lon".into(),
                    state: LinkState::Degraded,
                    loss_kind: LossKind::Path,
                    pairs: 9,
                    pairs_troubled: 9,
                },
            ],
            broken: vec![SiteBrokenLink {
                source: "ams-02".into(),
                target: "ams-17".into(),
                state: LinkState::Down,
                loss_kind: LossKind::Total,
            }],
            broken_total: 39,
            stale: false,
        }
    }

    #[test]
    fn a_summary_reads_back_as_it_was_written() {
        let s = sample();
        assert_eq!(decode(&encode(&s), "ams-01").unwrap(), s);
        let mut stale = s.clone();
        stale.stale = true;
        assert_eq!(decode_relay(&encode_relay(&stale)).unwrap(), stale);
    }

    #[test]
    fn a_malformed_summary_is_refused_with_its_reason() {
        let good = encode(&sample());
        let cases = [
            (
                good.replace("site ams", "site a/b"),
                "a name does not follow the grammar",
            ),
            (
                good.replace("nodes 40 39", "nodes 4 39"),
                "more nodes up than nodes",
            ),
            (good.replace(";broken 39", ""), "cut short"),
            (format!("{good};n x u"), "text after the end"),
            (
                good.replace("rep ams-01 10.0.0.1:7946", "rep ams-01 nowhere"),
                "not an address",
            ),
            (
                good.replace("l lon d p 9 9", "l lon d p 9 9 9"),
                "a line has more fields than it should",
            ),
            (good.replace("l lon d p", "l lon q p"), "no link state"),
        ];
        for (text, why) in cases {
            assert_eq!(decode(&text, "ams-01").err(), Some(why), "{text}");
        }
        let many = format!(
            "site ams 1;up {};broken 0",
            (0..MAX_SITES + 1)
                .map(|i| format!("s{i}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert_eq!(decode(&many, "x").err(), Some("too many sites"));
    }

    #[test]
    fn a_healthy_summary_of_a_large_grid_fits_one_gossip_value() {
        let mut s = sample();
        s.links = (0..MAX_SITES)
            .map(|i| SiteLink {
                to: format!("site-{i:03}"),
                state: LinkState::Up,
                loss_kind: LossKind::None,
                pairs: 9,
                pairs_troubled: 0,
            })
            .collect();
        let limit = crate::gossip_guard::GossipLimits::default().max_value_len;
        assert!(encode(&s).len() + 100 < limit, "{}", encode(&s).len());
    }

    #[test]
    fn trouble_is_told_apart_from_good_news() {
        let old = sample();
        let later = |f: &dyn Fn(&mut SiteSummary)| {
            let mut s = old.clone();
            s.at_ms += 1_000;
            f(&mut s);
            s
        };
        // Good news: a link first measured up, a member back up, a broken
        // link mended, a link less degraded.
        let good: [(&str, SiteSummary); 4] = [
            (
                "a new link up",
                later(&|s| {
                    s.links.push(SiteLink {
                        to: "par".into(),
                        state: LinkState::Up,
                        loss_kind: LossKind::None,
                        pairs: 9,
                        pairs_troubled: 0,
                    })
                }),
            ),
            (
                "a member back up",
                later(&|s| {
                    s.up = 40;
                    s.troubled.clear();
                }),
            ),
            (
                "a broken link mended",
                later(&|s| {
                    s.broken.clear();
                    s.broken_total = 38;
                }),
            ),
            (
                "fewer pairs down",
                later(&|s| s.links[1].pairs_troubled = 3),
            ),
        ];
        for (what, new) in &good {
            assert!(!worse_news(&old, new), "{what} is good news");
        }
        let bad: [(&str, SiteSummary); 7] = [
            (
                "a link down",
                later(&|s| s.links[0].state = LinkState::Down),
            ),
            (
                "more pairs of a degraded link",
                later(&|s| {
                    s.links[1].pairs = 12;
                    s.links[1].pairs_troubled = 10;
                }),
            ),
            (
                "a member down",
                later(&|s| {
                    s.up = 38;
                    s.troubled.push(SiteNode {
                        id: "ams-18".into(),
                        state: NodeState::Down,
                    })
                }),
            ),
            ("a member left", later(&|s| s.nodes = 39)),
            (
                "another broken link",
                later(&|s| s.broken[0].target = "ams-19".into()),
            ),
            (
                "another representative",
                later(&|s| s.representatives[0].id = "ams-02".into()),
            ),
            ("gone stale", later(&|s| s.stale = true)),
        ];
        for (what, new) in &bad {
            assert!(worse_news(&old, new), "{what} is trouble");
        }
        // A member from degraded to down: no count moves.
        let mut degraded = old.clone();
        degraded.troubled[0].state = NodeState::Degraded;
        assert!(worse_news(&degraded, &old), "a member down is trouble");
    }
}
