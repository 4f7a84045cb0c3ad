//! What changed state, as a server saw it: checks (their hard state),
//! nodes and links (their state in the grid). The first look at each thing
//! only learns its state; every later difference is a change, stored for
//! incident timelines. A pass records at most [`MAX_PER_PASS`] changes and
//! says how many it left out, so a grid-wide flap cannot flood the store.

use std::collections::HashMap;

use gemba_store::ChangeRow;

pub const MAX_PER_PASS: usize = 1000;

/// One thing's state now.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// `check`, `node` or `link`.
    pub kind: &'static str,
    pub subject: String,
    pub node: String,
    /// A link's target.
    pub peer: String,
    pub state: String,
    pub at_ms: u64,
    pub detail: String,
}

/// The last state of everything seen.
#[derive(Default)]
pub struct Recorder {
    last: HashMap<(&'static str, String), String>,
}

impl Recorder {
    /// The changes since the last pass. Things not seen in this pass are
    /// forgotten (a departed node, a removed check) without a change.
    pub fn pass(&mut self, seen: Vec<Seen>, now_ms: u64) -> Vec<ChangeRow> {
        let mut out = Vec::new();
        let mut left_out = 0usize;
        let mut next = HashMap::with_capacity(seen.len());
        for s in seen {
            let key = (s.kind, s.subject.clone());
            if let Some(prev) = self.last.get(&key) {
                if *prev != s.state {
                    if out.len() < MAX_PER_PASS {
                        out.push(ChangeRow {
                            at_ms: s.at_ms.min(now_ms),
                            kind: s.kind.to_string(),
                            subject: s.subject.clone(),
                            node: s.node.clone(),
                            peer: s.peer.clone(),
                            state: s.state.clone(),
                            previous: prev.clone(),
                            detail: s.detail.chars().take(300).collect(),
                        });
                    } else {
                        left_out += 1;
                    }
                }
            }
            next.insert(key, s.state);
        }
        if left_out > 0 {
            out.push(ChangeRow {
                at_ms: now_ms,
                kind: "note".into(),
                subject: "changes".into(),
                node: String::new(),
                peer: String::new(),
                state: "left out".into(),
                previous: String::new(),
                detail: format!("{left_out} more state changes in this pass were not recorded"),
            });
        }
        self.last = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(subject: &str, state: &str, at: u64) -> Seen {
        Seen {
            kind: "check",
            subject: subject.into(),
            node: "web-1".into(),
            peer: String::new(),
            state: state.into(),
            at_ms: at,
            detail: "connection refused".into(),
        }
    }

    #[test]
    fn only_differences_after_the_first_look_are_changes() {
        let mut r = Recorder::default();
        assert!(r
            .pass(vec![seen("http@node:web-1", "passing", 1)], 1)
            .is_empty());
        assert!(r
            .pass(vec![seen("http@node:web-1", "passing", 1)], 2)
            .is_empty());
        let c = r.pass(vec![seen("http@node:web-1", "failing", 3)], 4);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].state.as_str(), c[0].previous.as_str(), c[0].at_ms),
            ("failing", "passing", 3)
        );
        // Gone, then back: no change for the gap.
        assert!(r.pass(vec![], 5).is_empty());
        assert!(r
            .pass(vec![seen("http@node:web-1", "passing", 6)], 6)
            .is_empty());
    }

    #[test]
    fn a_flood_is_cut_and_says_so() {
        let mut r = Recorder::default();
        let all = |state: &str| {
            (0..MAX_PER_PASS + 5)
                .map(|i| seen(&format!("c{i}@global"), state, 1))
                .collect::<Vec<_>>()
        };
        r.pass(all("passing"), 1);
        let c = r.pass(all("failing"), 2);
        assert_eq!(c.len(), MAX_PER_PASS + 1);
        assert!(c.last().unwrap().detail.starts_with("5 more state changes"));
    }
}
