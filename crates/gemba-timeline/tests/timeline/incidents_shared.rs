//! Incidents from any server: two servers on one store both follow the
//! journal (as every server does) while escalations start; they make the
//! incidents one server would make — each escalation in exactly one
//! incident, escalations started close together in the same one — and
//! when the server that was following stops, the other takes over after
//! the follower's lease and closes them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gemba_core::incidents::{IncidentsConfig, OpenOn};
use gemba_exec::Clock;
use gemba_store::{EscalationRow, JournalRow, Store, Stores, TimelineStore};
use gemba_timeline::incident::{self, FOLLOWER_LEASE};
use gemba_timeline::TimelineHandle;

fn opened(esc: u64, scope: &str, at_ms: u64) -> JournalRow {
    JournalRow {
        seq: 0,
        escalation: Some(esc),
        scope: scope.into(),
        at_ms,
        kind: "decision".into(),
        text: format!("opened: {scope} failing; running levels 5:restart"),
        server: "srv-1".into(),
    }
}

fn record(id: u64, scope: &str, open: bool, at_ms: u64) -> EscalationRow {
    EscalationRow {
        id,
        scope: scope.into(),
        phase: if open { "running" } else { "resolved" }.into(),
        open,
        opened_ms: at_ms,
        updated_ms: at_ms + 1,
        body: "{}".into(),
    }
}

struct Server {
    name: &'static str,
    journal: Arc<dyn Store>,
    timeline: TimelineHandle,
}

impl Server {
    fn on(name: &'static str, store: Arc<dyn Stores>, clock: Clock) -> Server {
        let timeline: Arc<dyn TimelineStore> = store.clone();
        Server {
            name,
            journal: store,
            timeline: TimelineHandle::new(timeline, clock),
        }
    }

    async fn pass(&self) -> usize {
        incident::follow_once(
            &self.timeline,
            &self.journal,
            // Every escalation opens one here, and an incident closes as
            // soon as its escalations end: what is shared is the grouping.
            &IncidentsConfig {
                open_on: OpenOn::Start,
                cool_down: std::time::Duration::ZERO,
                ..IncidentsConfig::default()
            },
            self.name,
        )
        .await
        .unwrap()
    }
}

async fn two_servers_make_the_incidents_one_server_makes(a: Arc<dyn Stores>, b: Arc<dyn Stores>) {
    let now = Clock::new().now_ms();
    let (web1, web2, db) = ("node:web-1", "node:web-2", "tier:db");
    for (id, scope, at) in [
        (1, web1, now),
        (2, web2, now + 60_000),
        (3, db, now + 1_800_000),
    ] {
        a.save_escalation(record(id, scope, true, at), None)
            .await
            .unwrap();
    }
    let servers = [
        Arc::new(Server::on("srv-1", a.clone(), Clock::new())),
        Arc::new(Server::on("srv-2", b.clone(), Clock::new())),
    ];
    // Both follow, pass after pass, while the escalations start.
    let stop = Arc::new(AtomicBool::new(false));
    let mut followers = Vec::new();
    for s in &servers {
        let (s, stop) = (s.clone(), stop.clone());
        followers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                s.pass().await;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    // Escalations 1 and 2 start a minute apart (one incident); 3 half an
    // hour later (its own).
    for (i, (id, scope, at)) in [
        (1, web1, now),
        (2, web2, now + 60_000),
        (3, db, now + 1_800_000),
    ]
    .into_iter()
    .enumerate()
    {
        let store = if i % 2 == 0 { &a } else { &b };
        store.append(opened(id, scope, at)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = true;
        for e in 1..=3 {
            all &= b.incident_of(e).await.unwrap().is_some();
        }
        if all {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "escalations not gathered into incidents within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Passes still under way finish; nothing more comes of them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for f in followers {
        f.await.unwrap();
    }

    let incidents = b.incidents(false, 10).await.unwrap();
    assert_eq!(
        incidents.len(),
        2,
        "one incident for web-1 and web-2, one for db: {incidents:?}"
    );
    let first = b.incident_of(1).await.unwrap().unwrap();
    assert_eq!(b.incident_of(2).await.unwrap(), Some(first));
    let second = b.incident_of(3).await.unwrap().unwrap();
    assert_ne!(first, second);
    let i = incident::get(&servers[1].timeline, first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(i.escalations, vec![1, 2]);
    assert_eq!(i.body.scopes, vec![web1.to_string(), web2.to_string()]);
    assert!(i.is_open());

    // The escalations end. The server that held the follower's lease
    // stops; the other closes nothing while that lease runs...
    for (id, scope, at) in [
        (1, web1, now),
        (2, web2, now + 60_000),
        (3, db, now + 1_800_000),
    ] {
        a.save_escalation(record(id, scope, false, at), None)
            .await
            .unwrap();
    }
    let holder = a
        .lease_holder(FOLLOWER_LEASE, Clock::new().now_ms())
        .await
        .unwrap()
        .expect("a server holds the follower's lease");
    let other = servers.iter().find(|s| s.name != holder).unwrap();
    other.pass().await;
    assert_eq!(b.incidents(true, 10).await.unwrap().len(), 2, "still open");
    // ... and once it has run out (its clock 31 s on), takes over.
    let later = Server::on(
        other.name,
        b.clone(),
        Clock::starting_at(Clock::new().now_ms() + 31_000),
    );
    later.pass().await;
    assert!(
        b.incidents(true, 10).await.unwrap().is_empty(),
        "the other server closed them"
    );
    let closed = b.incident(first).await.unwrap().unwrap();
    assert_eq!(closed.closed_ms, Some(now + 60_000 + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_sqlite_file_make_one_servers_incidents() {
    let dir = std::env::temp_dir().join(format!("gemba-incidents-shared-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let at = gemba_store::StoreLocation::Sqlite(dir.join("gemba.db"));
    let a = gemba_store::open_any(&at).await.unwrap();
    let b = gemba_store::open_any(&at).await.unwrap();
    two_servers_make_the_incidents_one_server_makes(a, b).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgresql_make_one_servers_incidents() {
    let cluster = match gemba_store::throwaway::Cluster::start("incidents") {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    // The test drives time by hand (escalations half an hour apart, a
    // lease run out): leases and journal times follow the callers' clocks.
    let url = cluster.database().await;
    let open = || async {
        Arc::new(
            gemba_store::PgStore::connect(&url, None)
                .await
                .unwrap()
                .judging_leases_by_callers_clock(),
        ) as Arc<dyn Stores>
    };
    let (a, b) = (open().await, open().await);
    two_servers_make_the_incidents_one_server_makes(a, b).await;
}

#[tokio::test]
async fn an_opening_is_known_by_its_kind_not_by_its_words() {
    let dir = std::env::temp_dir().join(format!("gemba-incidents-kind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = gemba_store::open_any(&gemba_store::StoreLocation::Sqlite(dir.join("gemba.db")))
        .await
        .unwrap();
    let now = Clock::new().now_ms();
    store
        .save_escalation(record(7, "node:web-1", true, now), None)
        .await
        .unwrap();
    // The escalator may word its journal lines however it likes.
    let mut row = opened(7, "node:web-1", now);
    row.text = "Eskalation 7 begonnen, Stufe 5".into();
    store.append(row).await.unwrap();
    Server::on("srv-1", store.clone(), Clock::new())
        .pass()
        .await;
    assert!(store.incident_of(7).await.unwrap().is_some());
    let _ = std::fs::remove_dir_all(&dir);
}
