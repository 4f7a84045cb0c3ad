//! The backbone's rule on who may sign a site's summary.
//!
//! Representatives are the `k` live members of a site with the lowest ids,
//! and `k` comes from this node's own settings, never from a message. A
//! summary is admitted when its signer is named among the representatives
//! it lists, it lists no more than `k`, and:
//! - for this node's own site, the signer is one of the representatives
//!   this node computes from its own site's membership;
//! - for another site, the signer is among the representatives named by
//!   the last summary of that site admitted within the TTL (a new
//!   representative is admitted once a sitting one names it; a site none of
//!   whose representatives was heard for a TTL starts afresh, as a first
//!   sight does).
//!
//! A summary stamped more than [`MAX_AHEAD`] past this node's clock is
//! refused, and one older than the summary the book holds for its site (a
//! genuine one, replayed) is let through to chitchat, which keeps the
//! newer, but does not set the site's representatives back.
//!
//! The backbone carries nothing else: keys other than the node's key, its
//! site and its summary are refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{decode, MAX_SITES, SUMMARY_KEY};
use crate::gossip_guard::ValuePolicy;

/// Who may sign each site's summary, as this node knows it.
pub struct RepresentativeBook {
    k: usize,
    ttl: Duration,
    own_site: String,
    inner: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    /// This node's own site's representatives, from its own membership.
    own: Vec<String>,
    /// Other sites: the representatives the newest admitted summary named.
    sites: HashMap<String, Sitting>,
}

/// What the book holds of another site.
struct Sitting {
    reps: Vec<String>,
    /// When its summary was admitted here, and the summary's own time.
    admitted: Instant,
    at_ms: u64,
}

/// How far past this node's clock a summary's time may lie.
pub const MAX_AHEAD: Duration = Duration::from_secs(600);

impl RepresentativeBook {
    pub fn new(own_site: &str, k: usize, ttl: Duration) -> RepresentativeBook {
        RepresentativeBook {
            k,
            ttl,
            own_site: own_site.to_string(),
            inner: Mutex::default(),
        }
    }

    /// This node's own site's representatives, as its membership names them.
    pub fn set_own(&self, reps: Vec<String>) {
        if let Ok(mut b) = self.inner.lock() {
            b.own = reps;
        }
    }

    /// The representatives of `site` as this node believes them.
    pub fn representatives(&self, site: &str) -> Option<Vec<String>> {
        let b = self.inner.lock().ok()?;
        if site == self.own_site {
            return Some(b.own.clone());
        }
        b.sites.get(site).map(|s| s.reps.clone())
    }
}

impl ValuePolicy for RepresentativeBook {
    fn admit(&self, node: &str, key: &str, payload: &str) -> Result<(), &'static str> {
        match key {
            crate::identity::ID_KEY | "site" => return Ok(()),
            // A representative that stepped down deletes its summary.
            SUMMARY_KEY if payload.is_empty() => return Ok(()),
            SUMMARY_KEY => {}
            _ => return Err("not_backbone_key"),
        }
        let s = decode(payload, node).map_err(|_| "bad_summary")?;
        if s.at_ms > crate::endpoint::unix_ms() + MAX_AHEAD.as_millis() as u64 {
            return Err("future_summary");
        }
        let named: Vec<String> = s.representatives.iter().map(|r| r.id.clone()).collect();
        if named.len() > self.k || !named.iter().any(|r| r == node) {
            return Err("not_representative");
        }
        let mut b = self.inner.lock().map_err(|_| "not_representative")?;
        if s.site == self.own_site {
            if !b.own.is_empty() && !b.own.iter().any(|r| r == node) {
                return Err("not_representative");
            }
            return Ok(());
        }
        let now = Instant::now();
        match b.sites.get(&s.site) {
            Some(sitting) if now.duration_since(sitting.admitted) < self.ttl => {
                if !sitting.reps.iter().any(|r| r == node) {
                    return Err("not_representative");
                }
                if s.at_ms < sitting.at_ms {
                    // Older than what the book holds: no news of who sits.
                    return Ok(());
                }
            }
            Some(_) => {}
            None if b.sites.len() >= 2 * MAX_SITES => return Err("too_many_sites"),
            None => {}
        }
        b.sites.insert(
            s.site,
            Sitting {
                reps: named,
                admitted: now,
                at_ms: s.at_ms,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(site: &str, reps: &[&str]) -> String {
        super::super::signed_by_test_summary(site, reps, 1)
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_sitting_representative_may_sign_a_sites_summary() {
        let book = RepresentativeBook::new("ams", 2, Duration::from_secs(30));
        book.set_own(vec!["ams-1".into(), "ams-2".into()]);
        // Own site: from this node's own membership.
        assert_eq!(
            book.admit("ams-1", SUMMARY_KEY, &summary("ams", &["ams-1", "ams-2"])),
            Ok(())
        );
        assert_eq!(
            book.admit("ams-9", SUMMARY_KEY, &summary("ams", &["ams-9"])),
            Err("not_representative")
        );
        // Another site: the first summary names its representatives...
        assert_eq!(
            book.admit("fra-1", SUMMARY_KEY, &summary("fra", &["fra-1", "fra-2"])),
            Ok(())
        );
        // ...a member that is not one of them is refused, even naming itself...
        assert_eq!(
            book.admit("fra-7", SUMMARY_KEY, &summary("fra", &["fra-1", "fra-7"])),
            Err("not_representative")
        );
        // ...as is one that does not name itself, or names too many.
        assert_eq!(
            book.admit("fra-2", SUMMARY_KEY, &summary("fra", &["fra-1"])),
            Err("not_representative")
        );
        assert_eq!(
            book.admit(
                "fra-2",
                SUMMARY_KEY,
                &summary("fra", &["fra-1", "fra-2", "fra-3"])
            ),
            Err("not_representative")
        );
        // A representative replaced: a sitting one names the new one first.
        assert_eq!(
            book.admit("fra-2", SUMMARY_KEY, &summary("fra", &["fra-2", "fra-3"])),
            Ok(())
        );
        assert_eq!(
            book.admit("fra-3", SUMMARY_KEY, &summary("fra", &["fra-2", "fra-3"])),
            Ok(())
        );
        // A site unheard for a TTL starts afresh.
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(
            book.admit("fra-7", SUMMARY_KEY, &summary("fra", &["fra-7"])),
            Ok(())
        );
        // Nothing but the key, the site and the summary.
        assert_eq!(book.admit("fra-7", "e:0/1", "x"), Err("not_backbone_key"));
        assert_eq!(book.admit("fra-7", SUMMARY_KEY, "junk"), Err("bad_summary"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_summary_replayed_does_not_set_the_representatives_back() {
        use super::super::signed_by_test_summary as at;
        let book = RepresentativeBook::new("ams", 2, Duration::from_secs(30));
        assert_eq!(
            book.admit("fra-1", SUMMARY_KEY, &at("fra", &["fra-1", "fra-2"], 10)),
            Ok(())
        );
        assert_eq!(
            book.admit("fra-2", SUMMARY_KEY, &at("fra", &["fra-2", "fra-3"], 20)),
            Ok(())
        );
        // fra-2's own older summary, genuine, comes again.
        assert_eq!(
            book.admit("fra-2", SUMMARY_KEY, &at("fra", &["fra-1", "fra-2"], 5)),
            Ok(())
        );
        assert_eq!(
            book.representatives("fra"),
            Some(vec!["fra-2".into(), "fra-3".into()])
        );
        assert_eq!(
            book.admit("fra-3", SUMMARY_KEY, &at("fra", &["fra-2", "fra-3"], 21)),
            Ok(())
        );
        // A summary stamped a day ahead is refused.
        let ahead = crate::endpoint::unix_ms() + 86_400_000;
        assert_eq!(
            book.admit("fra-3", SUMMARY_KEY, &at("fra", &["fra-2", "fra-3"], ahead)),
            Err("future_summary")
        );
    }
}
