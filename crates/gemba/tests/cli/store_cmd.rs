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

/// A store with garbage written in the middle: `gemba store check` finds
/// it, names the table and the way to recover, and exits non-zero;
/// `store migrate` refuses it instead of saying it is at the schema. A
/// sound store passes both.
#[test]
fn garbage_in_the_middle_of_a_store_is_found_and_named() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = TempDir::new("store-check");
    let db = dir.path().join("gemba.db");
    let url = format!("sqlite://{}", db.display());
    rt.block_on(async {
        let s = gemba_store::open(&gemba_core::StoreLocation::Sqlite(db.clone()))
            .await
            .unwrap();
        for i in 0..3000 {
            s.append(JournalRow {
                seq: 0,
                escalation: Some(1),
                scope: "node:web-1".into(),
                at_ms: 1_000 + i,
                kind: "step-end".into(),
                text: format!(
                    "restart {i} of web on web-1 finished: exit 0, output enough to fill pages"
                ),
                server: "srv-1".into(),
            })
            .await
            .unwrap();
        }
    });
    let (code, out, err) = gemba(&["store", "check", "--url", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no damage found (quick_check)"), "{out}");
    let (code, out, err) = gemba(&["store", "check", "--full", "--url", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("integrity_check"), "{out}");

    // A page of the journal overwritten, as a bad disk or a stray write
    // would.
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096 * (bytes.len() / 4096 / 2);
    for (i, b) in bytes[page..page + 4096].iter_mut().enumerate() {
        *b = (i * 31 + 7) as u8;
    }
    std::fs::write(&db, &bytes).unwrap();
    let (code, out, err) = gemba(&["store", "check", "--url", &url]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("damaged table journal"), "{err}");
    assert!(err.contains("To recover: restore"), "{err}");
    let (code, out, err) = gemba(&["store", "migrate", "--url", &url]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("is damaged") && !out.contains("is at this gemba's schema"),
        "{out}{err}"
    );
}
