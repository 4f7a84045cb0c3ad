//! What the learn stage reads from outside: change events in gemba's,
//! Graphite's and Grafana's shapes (`POST /api/v1/events`, `/events/`,
//! `/api/annotations`), event queries, metric samples from gossip, and an
//! agent's answer with log lines (what a server fetches from a node).
//! The first byte picks the reader (`L` the log answer). Whatever is accepted must hold what
//! the readers promise: tags in the name grammar, sizes within the caps,
//! an end after the start, a known kind; a sample only known metrics and
//! finite values.
#![no_main]

use gemba_timeline::{event, logs, sample, service};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_795_400_000_000;

fn check(e: &event::NewEvent) {
    assert!(!e.what.is_empty() && e.what.chars().count() <= event::MAX_WHAT);
    assert!(e.text.chars().count() <= event::MAX_TEXT);
    assert!(e.tags.len() <= event::MAX_TAGS);
    for t in &e.tags {
        match t.split_once('=') {
            Some((k, v)) => assert!(gemba_core::ids::is_name(k) && gemba_core::ids::is_name(v)),
            None => assert!(gemba_core::ids::is_name(t)),
        }
    }
    assert!(event::KINDS.contains(&e.kind.as_str()));
    assert!(e.at_ms >= event::EARLIEST_MS && e.at_ms <= NOW + event::FUTURE_MS);
    if let Some(end) = e.end_ms {
        assert!(end >= e.at_ms && end - e.at_ms <= event::LONGEST_MS);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which == b'L' {
        let q = logs::LogQuery {
            process: Some("shop".into()),
            since_ms: 1_000,
            until_ms: 2_000,
            limit: 3,
        };
        if let Ok(list) = logs::checked("web-1", &q, rest) {
            assert!(list.len() <= logs::MAX_EXCERPTS);
            for e in &list {
                assert_eq!((e.node.as_str(), e.process.as_str()), ("web-1", "shop"));
                assert!(e.lines.len() <= 3);
                for l in &e.lines {
                    assert!((1_000..=2_000).contains(&l.at_ms));
                    assert!(l.text.len() <= logs::LINE_BYTES + '…'.len_utf8());
                    assert!(!l.text.chars().any(|c| c.is_control() && c != '\t'));
                }
            }
        }
        return;
    }
    match which % 5 {
        0 => {
            if let Ok(e) = event::from_api(rest, NOW) {
                check(&e);
            }
        }
        1 => {
            if let Ok(e) = event::from_graphite(rest, NOW) {
                check(&e);
            }
        }
        2 => {
            if let Ok(e) = event::from_grafana(rest, NOW) {
                check(&e);
            }
        }
        3 => {
            let text = String::from_utf8_lossy(rest);
            let mut parts = text.splitn(3, '\n');
            let q = service::Query {
                since: parts.next().map(str::to_string),
                until: parts.next().map(str::to_string),
                tags: parts.next().map(|t| vec![t.to_string()]).unwrap_or_default(),
                kind: None,
                limit: None,
            };
            if let Ok(f) = q.filter(NOW) {
                assert!(f.since_ms <= f.until_ms);
            }
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let (name, value) = text.split_once('\n').unwrap_or(("shop", &text));
            if let Ok(s) = sample::decode(name, value) {
                for (m, v) in &s.values {
                    assert!(sample::known_metric(&s.name, m));
                    assert!(v.is_finite());
                }
                // What decodes encodes and decodes to the same.
                let again = sample::decode(name, &sample::encode(&s)).unwrap();
                assert_eq!(again.unavailable, s.unavailable);
                assert_eq!(again.values.len(), s.values.len());
            }
        }
    }
});
