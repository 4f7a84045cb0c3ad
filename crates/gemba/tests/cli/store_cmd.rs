//! `gemba store migrate` and `gemba store copy` as an operator runs them:
//! an SQLite store a server left, checked, then moved into a PostgreSQL
//! database (a throwaway server the test starts; skipped with the reason
//! when PostgreSQL is not installed).

use crate::common;

use common::{TempDir, BIN};
use gemba_store::JournalRow;

fn gemba(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .output()
        .expect("run gemba");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_sqlite_store_is_migrated_then_copied_into_postgresql() {
    let cluster = match gemba_store::throwaway::Cluster::start("store-cmd") {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIP: {why}");
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = TempDir::new("store-cmd");
    let db = dir.path().join("gemba.db");
    let sqlite = format!("sqlite://{}", db.display());
    rt.block_on(async {
        let s = gemba_store::open(&gemba_core::StoreLocation::Sqlite(db.clone()))
            .await
            .unwrap();
        s.append(JournalRow {
            seq: 0,
            escalation: Some(1),
            scope: "node:web-1".into(),
            at_ms: 1000,
            kind: "decision".into(),
            text: "restarted the shop".into(),
            server: "srv-1".into(),
        })
        .await
        .unwrap();
    });

    let (code, out, err) = gemba(&["store", "migrate", "--url", &sqlite]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("escalator 3, market 2, timeline 6"), "{out}");
    let (code, _, err) = gemba(&["store", "migrate", "--url", "sqlite:///nowhere/gemba.db"]);
    assert_eq!(code, 1);
    assert!(err.contains("no store at /nowhere/gemba.db"), "{err}");

    let url = rt.block_on(cluster.database());
    let (code, out, err) = gemba(&["store", "copy", "--from", &sqlite, "--to", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("copied "), "{out}");
    assert!(out.contains("journal 1"), "{out}");
    // The test server offers no TLS: said, not hidden.
    assert!(
        out.contains(
            "connection: plain, on this machine: the server offers no TLS (sslmode=prefer)"
        ),
        "{out}"
    );
    let (code, out, err) = gemba(&["store", "migrate", "--url", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("escalator 2, market 2, timeline 2"), "{out}");
    assert!(out.contains("connection: plain"), "{out}");
    let (code, _, err) = gemba(&[
        "store",
        "migrate",
        "--url",
        &format!("{url}?sslmode=verify-full"),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("sslmode=verify-full needs sslrootcert=FILE"),
        "{err}"
    );
    let journal = rt.block_on(async {
        let pg = gemba_store::open(&gemba_core::StoreLocation::Postgres {
            url: url.clone(),
            password_file: None,
        })
        .await
        .unwrap();
        pg.recent_journal(10).await.unwrap()
    });
    assert_eq!(journal[0].text, "restarted the shop");

    // Not twice, not backwards, not from nothing: each named.
    let (code, _, err) = gemba(&["store", "copy", "--from", &sqlite, "--to", &url]);
    assert_eq!(code, 1);
    assert!(err.contains("the destination is not empty"), "{err}");
    let (code, _, err) = gemba(&["store", "copy", "--from", &url, "--to", &sqlite]);
    assert_eq!(code, 1);
    assert!(err.contains("--from: give the SQLite store"), "{err}");
    let (code, _, err) = gemba(&["store", "copy", "--from", &sqlite, "--to", "mysql://x"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--to: unknown store scheme \"mysql\""),
        "{err}"
    );
}
