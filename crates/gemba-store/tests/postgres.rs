//! The PostgreSQL store passes the store contract, with two pools on one
//! database standing for two servers sharing it. Runs against a throwaway
//! server the test starts (skips with the reason when PostgreSQL is not
//! installed; `.ci/run` installs it).

use std::sync::Arc;

use gemba_store::conformance::{run_all, Pair};
use gemba_store::{Backend, PgStore, Store, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shared_by_two_servers_meets_the_store_contract() {
    let cluster = match gemba_store::throwaway::Cluster::start("conformance") {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    run_all(Backend::Postgres, || async {
        let url = cluster.database().await;
        let a: Arc<dyn Store> = Arc::new(PgStore::connect(&url, None).await.unwrap());
        let b: Arc<dyn Store> = Arc::new(PgStore::connect(&url, None).await.unwrap());
        (a, b) as Pair
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shared_by_two_servers_meets_the_market_contract() {
    let cluster = match gemba_store::throwaway::Cluster::start("market") {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    gemba_store::conformance::run_market(|| async {
        let url = cluster.database().await;
        let a: Arc<dyn gemba_store::MarketStore> =
            Arc::new(PgStore::connect(&url, None).await.unwrap());
        let b: Arc<dyn gemba_store::MarketStore> =
            Arc::new(PgStore::connect(&url, None).await.unwrap());
        (a, b)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shared_by_two_servers_meets_the_timeline_contract() {
    let cluster = match gemba_store::throwaway::Cluster::start("timeline") {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    gemba_store::conformance::run_timeline(|| async {
        let url = cluster.database().await;
        let a: Arc<dyn gemba_store::TimelineStore> =
            Arc::new(PgStore::connect(&url, None).await.unwrap());
        let b: Arc<dyn gemba_store::TimelineStore> =
            Arc::new(PgStore::connect(&url, None).await.unwrap());
        (a, b)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_starting_together_migrate_once_and_a_bad_location_is_named() {
    let cluster = match gemba_store::throwaway::Cluster::start("migrate") {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let url = cluster.database().await;
    let (a, b, c) = tokio::join!(
        PgStore::connect(&url, None),
        PgStore::connect(&url, None),
        PgStore::connect(&url, None)
    );
    let (a, _b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(
        a.schema().await.unwrap(),
        vec![
            ("escalator".to_string(), 2),
            ("market".to_string(), 1),
            ("timeline".to_string(), 1)
        ]
    );
    // Nobody listens there: a clear error that names where, not the
    // password.
    let err = PgStore::connect("postgres://gemba:secret@127.0.0.1:1/x", None)
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{msg}");
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert!(!msg.contains("secret"), "{msg}");
    let err = PgStore::connect("postgres://gemba@127.0.0.1:1/x?sslmode=nonsense", None)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("connection string"), "{err}");
}
