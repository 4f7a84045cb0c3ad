//! What a vote leaves in the store's files: the database and its
//! write-ahead log are copied after every ballot and after closing, as an
//! administrator could, over several runs with the ballots cast in
//! different orders.
//!
//! - No vote is readable in any copy (ballots are sealed, and after
//!   closing overwritten).
//! - The ballots' rows stay where they were written when voting opened
//!   (all at once, in token-hash order), whatever the order they are cast
//!   in: a cast rewrites its row in place.
//! - After closing the write-ahead log is empty and no sealed ballot seen
//!   during voting is left in the database file.

use std::path::Path;
use std::sync::Arc;

use gemba_exec::Clock;
use gemba_store::SqliteStore;
use gemba_timeline::postmortem::{self, Actor, Change, Setup, Vote};
use gemba_timeline::{incident, TimelineHandle};

const T0: u64 = 1_795_400_000_000;
const PEOPLE: [&str; 8] = ["ana", "bo", "cy", "dee", "eli", "fay", "gus", "hal"];

fn files(path: &Path) -> Vec<u8> {
    let mut all = std::fs::read(path).unwrap();
    if let Ok(wal) = std::fs::read(path.with_extension("db-wal")) {
        all.extend(wal);
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Where each ballot row's hash lies in the database file (after a
/// checkpoint).
fn row_places(path: &Path, hashes: &[String]) -> Vec<(usize, String)> {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(c);
    let db = std::fs::read(path).unwrap();
    let mut at: Vec<(usize, String)> = hashes
        .iter()
        .map(|h| {
            let pos = db
                .windows(h.len())
                .position(|w| w == h.as_bytes())
                .expect("the hash is in the file");
            (pos, h.clone())
        })
        .collect();
    at.sort();
    at
}

fn snapshot(path: &Path) -> Vec<(String, String)> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
        .prepare("SELECT token_hash, content FROM pm_ballots ORDER BY token_hash")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn one_run(run: usize) {
    let dir =
        std::env::temp_dir().join(format!("gemba-ballot-traces-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gemba.db");
    let db = Arc::new(SqliteStore::open(&path).unwrap());
    let t = TimelineHandle::new(db, Clock::starting_at(T0));
    let id = incident::open(&t, "shop down", "major", "", "ops", &["web-1".into()])
        .await
        .unwrap();
    let setup = Setup {
        facilitator: "ana".into(),
        note_keeper: "bo".into(),
        time_keeper: "cy".into(),
        participants: PEOPLE.iter().map(|p| p.to_string()).collect(),
        open_for: None,
    };
    let mut links = Vec::new();
    for (_, once) in postmortem::start(&t, id, &setup, "ops").await.unwrap() {
        links.push(postmortem::claim(&t, &once).await.unwrap().1);
    }
    for text in ["canary deploys", "alert on pool size", "runbook"] {
        postmortem::change(
            &t,
            id,
            &Actor::Participant("bo".into()),
            &Change::Propose(text.into()),
        )
        .await
        .unwrap();
    }
    postmortem::change(
        &t,
        id,
        &Actor::Participant("ana".into()),
        &Change::OpenVoting,
    )
    .await
    .unwrap();
    let mut ballots = Vec::new();
    for l in &links {
        ballots.push(postmortem::seat(&t, l).await.unwrap().ballot.unwrap());
    }
    let hashes: Vec<String> = snapshot(&path).into_iter().map(|(h, _)| h).collect();
    let places = row_places(&path, &hashes);

    // A different cast order each run (a fixed shuffle by run number).
    let mut order: Vec<usize> = (0..PEOPLE.len()).collect();
    order.rotate_left(run % PEOPLE.len());
    if run % 2 == 1 {
        order.reverse();
    }
    let mut sealed_seen = Vec::new();
    let mut before = snapshot(&path);
    for (k, i) in order.iter().enumerate() {
        let approve = vec![1 + (*i as i64 % 3)];
        postmortem::cast(&t, &ballots[*i], &Vote { approve }, None)
            .await
            .unwrap();
        let bytes = files(&path);
        assert!(
            !contains(&bytes, b"approve"),
            "a vote in the clear after ballot {k}"
        );
        let now = snapshot(&path);
        for ((_, a), (_, b)) in before.iter().zip(&now) {
            if a != b {
                assert_eq!(a.len(), b.len(), "a cast keeps its row's length");
                assert!(b.starts_with('s'));
                sealed_seen.push(b.clone());
            }
        }
        before = now;
        assert_eq!(
            row_places(&path, &hashes),
            places,
            "rows stay where voting opened them after ballot {k} (run {run})"
        );
    }
    assert_eq!(sealed_seen.len(), PEOPLE.len());

    let pm = postmortem::close_with_link(&t, &links[0]).await.unwrap();
    let tally = postmortem::tally(&t, &pm).await.unwrap().unwrap();
    assert_eq!(
        tally.iter().map(|c| c.approvals).sum::<u64>(),
        PEOPLE.len() as u64
    );
    let wal = std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the write-ahead log is emptied at close");
    let bytes = files(&path);
    for sealed in &sealed_seen {
        assert!(
            !contains(&bytes, &sealed.as_bytes()[..64]),
            "a sealed ballot outlived the close (run {run})"
        );
    }
    assert!(snapshot(&path)
        .iter()
        .all(|(_, c)| c.chars().skip(1).all(|x| x == '0')));
    assert_eq!(row_places(&path, &hashes), places);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn no_copy_of_the_store_says_what_was_voted_or_in_which_order() {
    for run in 0..6 {
        one_run(run).await;
    }
}
