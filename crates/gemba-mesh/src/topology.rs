//! Which peers a node probes.
//!
//! `full`: everyone probes everyone. `sites`: full mesh inside each site,
//! and between sites only `k` representatives per site probe the other
//! sites' representatives (the Pingmesh layout), so probe and gossip cost
//! grow with the size of a site rather than with N².

use std::collections::BTreeMap;

use gemba_core::Topology;

/// The part of a member that target selection needs.
pub trait Placed {
    fn id(&self) -> &str;
    fn site(&self) -> &str;
    fn live(&self) -> bool;
}

impl<T: Placed> Placed for &T {
    fn id(&self) -> &str {
        (**self).id()
    }
    fn site(&self) -> &str {
        (**self).site()
    }
    fn live(&self) -> bool {
        (**self).live()
    }
}

/// Representatives of each site: the `k` live members with the lowest ids
/// (topped up with non-live ones if a site has fewer than `k` live).
pub fn representatives<M: Placed>(members: &[M], k: usize) -> BTreeMap<&str, Vec<&str>> {
    let mut by_site: BTreeMap<&str, Vec<&M>> = BTreeMap::new();
    for m in members {
        by_site.entry(m.site()).or_default().push(m);
    }
    by_site
        .into_iter()
        .map(|(site, mut ms)| {
            ms.sort_by(|a, b| (!a.live(), a.id()).cmp(&(!b.live(), b.id())));
            (site, ms.into_iter().take(k).map(|m| m.id()).collect())
        })
        .collect()
}

/// Indices into `members` of the nodes that `me` probes.
pub fn targets<M: Placed>(me: &str, members: &[M], topology: Topology) -> Vec<usize> {
    match topology {
        Topology::Full => (0..members.len())
            .filter(|&i| members[i].id() != me)
            .collect(),
        Topology::Sites { representatives: k } => {
            let Some(my_site) = members.iter().find(|m| m.id() == me).map(|m| m.site()) else {
                return Vec::new();
            };
            let reps = representatives(members, k as usize);
            let i_am_rep = reps.get(my_site).is_some_and(|r| r.contains(&me));
            (0..members.len())
                .filter(|&i| {
                    let m = &members[i];
                    if m.id() == me {
                        return false;
                    }
                    if m.site() == my_site {
                        return true;
                    }
                    i_am_rep && reps.get(m.site()).is_some_and(|r| r.contains(&m.id()))
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct M(String, String, bool);
    impl Placed for M {
        fn id(&self) -> &str {
            &self.0
        }
        fn site(&self) -> &str {
            &self.1
        }
        fn live(&self) -> bool {
            self.2
        }
    }

    fn grid(sites: usize, per_site: usize) -> Vec<M> {
        (0..sites)
            .flat_map(|s| {
                (0..per_site).map(move |n| M(format!("s{s}-n{n:03}"), format!("site{s}"), true))
            })
            .collect()
    }

    #[test]
    fn full_mesh_probes_everyone_else() {
        let g = grid(2, 3);
        assert_eq!(targets("s0-n000", &g, Topology::Full).len(), 5);
    }

    #[test]
    fn sites_topology_keeps_probes_per_node_near_site_size() {
        let g = grid(20, 100);
        let topo = Topology::Sites { representatives: 3 };
        let plain = targets("s0-n050", &g, topo);
        assert_eq!(plain.len(), 99, "a non-representative probes only its site");
        let rep = targets("s0-n000", &g, topo);
        assert_eq!(rep.len(), 99 + 19 * 3);
        let total: usize = g.iter().map(|m| targets(m.id(), &g, topo).len()).sum();
        assert!(
            total < 2000 * 1999 / 10,
            "{total} probes is not far below N²"
        );
    }

    #[test]
    fn dead_representative_is_replaced() {
        let mut g = grid(2, 4);
        g[0].2 = false; // s0-n000 is not live
        let reps = representatives(&g, 2);
        assert_eq!(reps["site0"], ["s0-n001", "s0-n002"]);
    }
}
