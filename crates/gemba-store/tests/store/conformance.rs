//! The SQLite store passes the store contract, in memory and on a file
//! opened twice (two servers sharing it).

use std::sync::Arc;

use gemba_store::conformance::{run_all, Pair};
use gemba_store::{Backend, SqliteStore, Store, StoreLocation};

#[tokio::test]
async fn sqlite_in_memory_meets_the_store_contract() {
    run_all(Backend::Sqlite, || async {
        let s = SqliteStore::in_memory().unwrap();
        let a: Arc<dyn Store> = Arc::new(s.clone());
        let b: Arc<dyn Store> = Arc::new(s);
        (a, b) as Pair
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_shared_by_two_servers_meets_the_store_contract() {
    let root = std::env::temp_dir().join(format!("gemba-conformance-{}", std::process::id()));
    let counter = std::sync::atomic::AtomicUsize::new(0);
    run_all(Backend::Sqlite, || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = root.join(format!("{n}/gemba.db"));
        async move {
            let at = StoreLocation::Sqlite(path);
            (
                gemba_store::open(&at).await.unwrap(),
                gemba_store::open(&at).await.unwrap(),
            )
        }
    })
    .await;
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn sqlite_meets_the_market_contract() {
    gemba_store::conformance::run_market(|| async {
        let s = SqliteStore::in_memory().unwrap();
        let a: Arc<dyn gemba_store::MarketStore> = Arc::new(s.clone());
        let b: Arc<dyn gemba_store::MarketStore> = Arc::new(s);
        (a, b)
    })
    .await;
}

#[tokio::test]
async fn sqlite_meets_the_timeline_contract() {
    gemba_store::conformance::run_timeline(|| async {
        let s = SqliteStore::in_memory().unwrap();
        let a: Arc<dyn gemba_store::TimelineStore> = Arc::new(s.clone());
        let b: Arc<dyn gemba_store::TimelineStore> = Arc::new(s);
        (a, b)
    })
    .await;
}
