//! The PostgreSQL store passes the store contract, with two pools on one
//! database standing for two servers sharing it. Runs against a throwaway
//! server the test starts (skips with the reason when PostgreSQL is not
//! installed; `.ci/run` installs it).

use std::sync::Arc;

use gemba_store::conformance::{run_all, Pair};
use gemba_store::{
    Backend, Claim, EventStore, IncidentStore, MarketStore, PgStore, SeriesStore, Store, StoreError,
};

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
        // The contract drives time by hand; PostgreSQL's own clock is
        // checked below.
        let a: Arc<dyn Store> = Arc::new(
            PgStore::connect(&url, None)
                .await
                .unwrap()
                .judging_leases_by_callers_clock(),
        );
        let b: Arc<dyn Store> = Arc::new(
            PgStore::connect(&url, None)
                .await
                .unwrap()
                .judging_leases_by_callers_clock(),
        );
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
            ("market".to_string(), 2),
            ("timeline".to_string(), 2)
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
    assert!(
        err.to_string()
            .contains("connection string: sslmode=nonsense is not one of"),
        "{err}"
    );
}

/// An SQLite store with something in every stage, as a server leaves it.
async fn filled_sqlite(path: &std::path::Path) -> Arc<dyn gemba_store::Stores> {
    use gemba_store::*;
    let s = open_any(&StoreLocation::Sqlite(path.to_path_buf()))
        .await
        .unwrap();
    for text in ["opened", "ran level 5 \u{0} with a NUL", "resolved"] {
        s.append(JournalRow {
            seq: 0,
            escalation: Some(1),
            scope: "node:web-1".into(),
            at_ms: 1000,
            kind: "decision".into(),
            text: text.into(),
            server: "srv-1".into(),
        })
        .await
        .unwrap();
    }
    for _ in 0..3 {
        s.next_escalation_id().await.unwrap();
    }
    s.save_escalation(
        EscalationRow {
            id: 1,
            scope: "node:web-1".into(),
            phase: "resolved".into(),
            open: false,
            opened_ms: 1000,
            updated_ms: 2000,
            body: "{\"id\":1}".into(),
        },
        None,
    )
    .await
    .unwrap();
    s.acquire_lease("node:web-1", "srv-1", 1000, 60_000)
        .await
        .unwrap();
    s.enqueue_notice("hook", "{\"n\":1}", 1000).await.unwrap();
    // A delivered notice is deleted; its id is not handed out again.
    let sent = s.enqueue_notice("mail", "{\"n\":2}", 1001).await.unwrap();
    s.notice_done(sent).await.unwrap();
    s.commit(MarketBatch {
        runs: vec![RunRow {
            id: 0,
            key: "puppet:web-1@1".into(),
            node: "web-1".into(),
            tool: "puppet".into(),
            started_ms: 1000,
            duration_ms: Some(30_000),
            status: "failed".into(),
            environment: "production".into(),
            code_version: "17".into(),
            total: 10,
            changed: 0,
            failed: 1,
            digest: "{}".into(),
            body: "{\"key\":\"puppet:web-1@1\"}".into(),
        }],
        problems: vec![ProblemRow {
            id: 1,
            signature: "failure|Service[shop]".into(),
            status: "new".into(),
            last_seen_ms: 1000,
            body: "{\"id\":1}".into(),
            nodes: vec![("web-1".into(), "{\"count\":1}".into())],
            replace_nodes: true,
        }],
        nodes: vec![NodeRow {
            node: "web-1".into(),
            body: "{}".into(),
        }],
        fine: vec![("Service[shop]".into(), "{}".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    s.add_events(vec![EventRow {
        id: 0,
        at_ms: 1500,
        end_ms: None,
        kind: "deploy".into(),
        what: "shop v2".into(),
        tags: vec!["host:web-1".into()],
        text: String::new(),
        author: "ana".into(),
        link: String::new(),
        source: "api".into(),
        origin: None,
    }])
    .await
    .unwrap();
    let ids = s
        .series_ids(
            vec![SeriesKey {
                node: "web-1".into(),
                process: "host".into(),
                metric: "load1".into(),
            }],
            100,
        )
        .await
        .unwrap();
    s.write_points(vec![
        (ids[0].unwrap(), 100, 0.5),
        (ids[0].unwrap(), 110, 0.75),
    ])
    .await
    .unwrap();
    s.add_incident(1000, "{\"title\":\"shop down\"}".into(), vec![1])
        .await
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_store_is_copied_into_postgresql_whole() {
    use gemba_store::{EventFilter, Tier};
    let cluster = match gemba_store::throwaway::Cluster::start("copy") {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("gemba-copy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gemba.db");
    let from = filled_sqlite(&path).await;
    let url = cluster.database().await;
    // The copied lease's times are the test's own.
    let to = PgStore::connect(&url, None)
        .await
        .unwrap()
        .judging_leases_by_callers_clock();
    let mut seen = Vec::new();
    let copied = gemba_store::copy::sqlite_to_postgres(&path, &to, |t, done, total| {
        seen.push((t.to_string(), done, total))
    })
    .await
    .unwrap();
    assert!(copied.rows() >= 15, "{copied:?}");
    let last = seen.last().unwrap();
    assert_eq!(
        (last.1, last.2),
        (copied.rows(), copied.rows()),
        "progress ends at the total"
    );
    // Every stage reads the same from both.
    assert_eq!(from.journal(1).await.unwrap(), to.journal(1).await.unwrap());
    assert_eq!(
        from.escalations(10).await.unwrap(),
        to.escalations(10).await.unwrap()
    );
    assert_eq!(
        to.lease_holder("node:web-1", 2000)
            .await
            .unwrap()
            .as_deref(),
        Some("srv-1")
    );
    assert_eq!(
        from.pending_notices().await.unwrap(),
        to.pending_notices().await.unwrap()
    );
    assert_eq!(
        to.next_escalation_id().await.unwrap(),
        4,
        "escalation ids go on after the copied ones"
    );
    assert_eq!(
        to.enqueue_notice("hook", "{}", 3000).await.unwrap(),
        3,
        "ids go on after the deleted ones too (the SQLite counter, not the largest row)"
    );
    assert_eq!(
        from.runs_after(0, 10).await.unwrap(),
        to.runs_after(0, 10).await.unwrap()
    );
    assert_eq!(from.problems().await.unwrap(), to.problems().await.unwrap());
    assert_eq!(from.fine().await.unwrap(), to.fine().await.unwrap());
    assert_eq!(
        from.generation().await.unwrap(),
        to.generation().await.unwrap()
    );
    let all = || EventFilter {
        since_ms: 0,
        until_ms: u64::MAX / 2,
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        from.events(all()).await.unwrap(),
        to.events(all()).await.unwrap()
    );
    assert_eq!(from.series().await.unwrap(), to.series().await.unwrap());
    assert_eq!(
        from.points(1, Tier::Raw, 0, 1000).await.unwrap(),
        to.points(1, Tier::Raw, 0, 1000).await.unwrap()
    );
    assert_eq!(
        from.incidents(false, 10).await.unwrap(),
        to.incidents(false, 10).await.unwrap()
    );
    // New rows get new ids after the copied ones.
    to.append(gemba_store::JournalRow {
        seq: 0,
        escalation: Some(4),
        scope: "node:web-2".into(),
        at_ms: 3000,
        kind: "decision".into(),
        text: "after the copy".into(),
        server: "srv-1".into(),
    })
    .await
    .unwrap();
    let lines = to.recent_journal(10).await.unwrap();
    assert_eq!(
        (lines[0].seq, lines[0].text.as_str()),
        (4, "after the copy")
    );

    // A second copy into the same database is refused, naming why; the
    // rows stay as they were.
    let err = gemba_store::copy::sqlite_to_postgres(&path, &to, |_, _, _| {})
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("the destination is not empty"),
        "{err}"
    );
    assert_eq!(to.recent_journal(10).await.unwrap().len(), 4);
    // A missing source is named.
    let err = gemba_store::copy::sqlite_to_postgres(&dir.join("nope.db"), &to, |_, _, _| {})
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("nope.db: no such file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn openssl(dir: &std::path::Path, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| format!("openssl: {e} (apt-get install openssl)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A CA (`{ca}.pem`, `{ca}.key`), made once per name.
fn make_ca(dir: &std::path::Path, ca: &str) -> Result<(), String> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
        ],
    )
}

/// A server certificate `{name}.pem`/`{name}.key` signed by `ca`, for
/// the subject alternative name `san` (e.g. "IP:127.0.0.1").
fn make_leaf(dir: &std::path::Path, ca: &str, name: &str, san: &str) -> Result<(), String> {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"),
    )
    .map_err(|e| e.to_string())?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    )
}

/// TLS as libpq users know it: `sslmode` and `sslrootcert` in the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_used_when_the_server_offers_it_and_certificates_are_checked_as_asked() {
    let cluster = match gemba_store::throwaway::Cluster::start("tls") {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let certs = cluster.dir().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let made = make_ca(&certs, "ca")
        .and_then(|_| make_ca(&certs, "stranger"))
        .and_then(|_| make_leaf(&certs, "ca", "by-ip", "IP:127.0.0.1"))
        .and_then(|_| make_leaf(&certs, "ca", "by-name", "DNS:db.internal"));
    if let Err(why) = made {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let url = cluster.database().await;
    let ca = certs.join("ca.pem").display().to_string();
    let stranger = certs.join("stranger.pem").display().to_string();
    let open = |params: String| {
        let url = if params.is_empty() {
            url.clone()
        } else {
            format!("{url}?{params}")
        };
        async move { PgStore::connect(&url, None).await }
    };
    let refused = |r: Result<PgStore, StoreError>| match r {
        Ok(s) => panic!("connected: {}", s.connection().text),
        Err(e) => e.to_string(),
    };

    // A server without TLS: the default (prefer) connects in the clear
    // and says so; require refuses.
    let c = open(String::new()).await.unwrap().connection();
    assert!(!c.encrypted && c.local && !c.exposed());
    assert_eq!(
        c.text,
        "plain, on this machine: the server offers no TLS (sslmode=prefer)"
    );
    let e = refused(open("sslmode=require".into()).await);
    assert!(e.contains("TLS") || e.contains("SSL"), "{e}");

    // The server now takes TLS only. The default encrypts without
    // checking the certificate; disable is turned away by the server.
    cluster
        .enable_tls(&certs.join("by-ip.pem"), &certs.join("by-ip.key"), true)
        .unwrap();
    let c = open(String::new()).await.unwrap().connection();
    assert!(c.encrypted);
    assert_eq!(c.text, "TLSv1.3, certificate not checked (sslmode=prefer)");
    let e = refused(open("sslmode=disable".into()).await);
    assert!(e.contains("no encryption"), "{e}");

    // verify-full: the right CA and a certificate for the address used.
    let s = open(format!("sslmode=verify-full&sslrootcert={ca}"))
        .await
        .unwrap();
    assert_eq!(
        s.connection().text,
        "TLSv1.3, certificate and host name checked (sslmode=verify-full)"
    );
    // Everything works through it.
    s.append(gemba_store::JournalRow {
        seq: 0,
        escalation: Some(1),
        scope: "web".into(),
        at_ms: 1,
        kind: "note".into(),
        text: "over TLS".into(),
        server: "srv-1".into(),
    })
    .await
    .unwrap();
    drop(s);
    // Another CA's trust: refused, naming why; a root file makes require
    // check the chain too (as in libpq).
    for mode in ["verify-full", "require"] {
        let e = refused(open(format!("sslmode={mode}&sslrootcert={stranger}")).await);
        assert!(
            e.contains("certificate") && e.contains("UnknownIssuer"),
            "{mode}: {e}"
        );
    }

    // A certificate for another name: verify-full refuses, verify-ca
    // (chain only) accepts, and still refuses a stranger's chain.
    cluster
        .enable_tls(&certs.join("by-name.pem"), &certs.join("by-name.key"), true)
        .unwrap();
    let e = refused(open(format!("sslmode=verify-full&sslrootcert={ca}")).await);
    assert!(
        e.contains("certificate not valid for name \"127.0.0.1\""),
        "{e}"
    );
    let s = open(format!("sslmode=verify-ca&sslrootcert={ca}"))
        .await
        .unwrap();
    assert_eq!(
        s.connection().text,
        "TLSv1.3, certificate chain checked (sslmode=verify-ca)"
    );
    assert_eq!(s.journal(1).await.unwrap()[0].text, "over TLS");
    let e = refused(open(format!("sslmode=verify-ca&sslrootcert={stranger}")).await);
    assert!(e.contains("UnknownIssuer"), "{e}");
}

/// Leases and step claims are judged on PostgreSQL's clock, not the
/// calling server's: a server whose clock runs 5 minutes ahead neither
/// takes over a live lease nor sees it expired, and one 5 minutes behind
/// cannot start a step on a lease about to lapse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_judged_on_the_databases_clock_not_the_servers() {
    let cluster = match gemba_store::throwaway::Cluster::start("clock") {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let url = cluster.database().await;
    let a = PgStore::connect(&url, None).await.unwrap();
    let b = PgStore::connect(&url, None).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    const FIVE_MIN: u64 = 5 * 60 * 1000;
    let fa = a
        .acquire_lease("node:web-1", "srv-a", now, 30_000)
        .await
        .unwrap()
        .expect("a takes the lease");
    // b's clock is 5 minutes ahead: by its clock a's lease lapsed long
    // ago, by the database's it holds.
    assert_eq!(
        b.acquire_lease("node:web-1", "srv-b", now + FIVE_MIN, 30_000)
            .await
            .unwrap(),
        None,
        "a fast clock does not take over a live lease"
    );
    assert_eq!(
        b.lease_holder("node:web-1", now + FIVE_MIN)
            .await
            .unwrap()
            .as_deref(),
        Some("srv-a")
    );
    // a's clock 5 minutes behind changes nothing either: the lease holds
    // for about 30 s on the database's clock, so a step with a 20 s grace
    // may start, one asking for 40 s may not.
    assert_eq!(
        a.claim_step(&fa, 1, 1, 2, now - FIVE_MIN, 20_000)
            .await
            .unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        a.claim_step(&fa, 1, 1, 3, now - FIVE_MIN, 40_000)
            .await
            .unwrap(),
        Claim::Short,
        "no step starts on a lease that lapses within its grace"
    );
    // Released, the lease passes at once, whatever b's clock says.
    a.release_lease("node:web-1", "srv-a").await.unwrap();
    let fb = b
        .acquire_lease("node:web-1", "srv-b", now - FIVE_MIN, 30_000)
        .await
        .unwrap()
        .expect("b takes the released lease");
    assert!(fb.token > fa.token);
    assert_eq!(
        a.claim_step(&fa, 1, 1, 4, now, 0).await.unwrap(),
        Claim::Fenced
    );
}
