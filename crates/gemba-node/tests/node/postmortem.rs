//! A post-mortem end to end through the API of a real server: four
//! participants share through their own links (no API token), three
//! proposals, four ballots, the tally hidden until voting closes, an action
//! item on the morning market, the notes exported and sent. Then the
//! anonymity property, checked on the database itself: nothing stored ties
//! a ballot to a participant, and no token is stored at all.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use gemba_mesh::UdpNet;
use gemba_node::Node;
use serde_json::{json, Value};

/// Every row of every table, each rendered as one line of text.
fn dump(db: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = BTreeMap::new();
    for t in tables {
        let mut st = c.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = st.column_count();
        let rows: Vec<String> = st
            .query_map([], |r| {
                let mut line = Vec::new();
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    line.push(format!("{v:?}"));
                }
                Ok(line.join(" | "))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        out.insert(t, rows);
    }
    out
}

fn columns(db: &std::path::Path, table: &str) -> Vec<String> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let st = c.prepare(&format!("SELECT * FROM {table}")).unwrap();
    st.column_names().iter().map(|s| s.to_string()).collect()
}

/// The bytes of the database and its write-ahead log.
fn raw_bytes(db: &std::path::Path) -> Vec<u8> {
    let mut all = std::fs::read(db).unwrap();
    if let Ok(wal) = std::fs::read(db.with_extension("db-wal")) {
        all.extend(wal);
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// What a person who can read the database tries: any row that names a
/// participant (or their link's hash) and also a ballot's hash.
fn linking_rows(
    d: &BTreeMap<String, Vec<String>>,
    people: &[String],
    ballot_hashes: &[String],
) -> Vec<String> {
    let mut found = Vec::new();
    for (table, rows) in d {
        for row in rows {
            let names_person = people.iter().any(|p| row.contains(p.as_str()));
            let names_ballot = ballot_hashes.iter().any(|b| row.contains(b.as_str()));
            if names_person && names_ballot {
                found.push(format!("{table}: {row}"));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_people_look_back_vote_and_leave_an_action_item() {
    let dir = temp_dir("postmortem");
    let sent = dir.join("sent.md");
    let sent_images = dir.join("sent-images");
    let pidfile = dir.join("self.pid");
    std::fs::write(&pidfile, std::process::id().to_string()).unwrap();
    let policy = format!(
        r#"
[[process]]
name = "self"
pidfile = "{pidfile}"

[[notify]]
kind = "command"
run = ["/bin/sh", "-c", "cat > {sent}; for f in $GEMBA_IMAGES; do basename $f; done > {sent_images}"]
"#,
        pidfile = pidfile.display(),
        sent = sent.display(),
        sent_images = sent_images.display(),
    );
    let c = config("srv", "127.0.95.1", None, &dir, &policy);
    let node = Node::start(&c, Arc::new(UdpNet), key()).await.unwrap();
    let addr = node.http_addr().unwrap();
    let call = |method: &'static str, path: String, token: bool, body: Value| async move {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (code, answer) = http(addr, method, &path, token, &body).await;
        let v = serde_json::from_str::<Value>(&answer).unwrap_or(json!({"raw": answer}));
        (code, v)
    };
    // The node samples its process, so the notes carry a chart.
    wait_for(
        "a sample of the process",
        Duration::from_secs(30),
        || async {
            call("GET", "/api/v1/processes".into(), true, Value::Null)
                .await
                .1
                .to_string()
                .contains("self")
        },
    )
    .await;

    let (code, inc) = call(
        "POST",
        "/api/v1/incidents".into(),
        true,
        json!({"title": "checkout <b>down</b>", "severity": "major", "nodes": ["srv"]}),
    )
    .await;
    assert_eq!(code, 201, "{inc}");
    let id = inc["id"].as_i64().unwrap();
    let pm_path = format!("/api/v1/incidents/{id}/postmortem");
    let setup = json!({
        "facilitator": "ana", "note_keeper": "bo", "time_keeper": "cy",
        "participants": ["ana", "bo", "cy", "dee"],
    });
    // Starting one needs the API token.
    let (code, _) = call("POST", pm_path.clone(), false, setup.clone()).await;
    assert_eq!(code, 401);
    let (code, started) = call("POST", pm_path.clone(), true, setup.clone()).await;
    assert_eq!(code, 201, "{started}");
    let once: BTreeMap<String, String> = started["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["token"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(once.len(), 4);
    // Notes nobody has written anything for are not sent.
    let (code, v) = call(
        "POST",
        format!("{pm_path}/send"),
        true,
        json!({"to": "all"}),
    )
    .await;
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("nobody has shared"),
        "{v}"
    );
    // The starter was shown one-time links: they open no seat, and each
    // claims its seat once, giving a link the starter never saw.
    let (code, v) = call(
        "GET",
        format!("/api/v1/pm/{}", once["dee"]),
        false,
        Value::Null,
    )
    .await;
    assert_eq!(code, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("one-time link"),
        "{v}"
    );
    let page = http(addr, "GET", &format!("/pm/{}", once["dee"]), false, "")
        .await
        .1;
    assert!(page.contains(r#"<form id="claim""#), "{page}");
    let mut links = BTreeMap::new();
    for (name, token) in &once {
        let (code, v) = call(
            "POST",
            format!("/api/v1/pm/{token}/claim"),
            false,
            Value::Null,
        )
        .await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["you"], name.as_str());
        let link = v["token"].as_str().unwrap().to_string();
        assert_ne!(&link, token);
        assert!(
            !started.to_string().contains(&link),
            "the starter never saw it"
        );
        links.insert(name.clone(), link);
    }
    let (code, _) = call(
        "POST",
        format!("/api/v1/pm/{}/claim", once["dee"]),
        false,
        Value::Null,
    )
    .await;
    assert_eq!(code, 404, "a one-time link works once");
    let (code, _) = call(
        "GET",
        format!("/api/v1/pm/{}", once["dee"]),
        false,
        Value::Null,
    )
    .await;
    assert_eq!(code, 404);
    let me = |n: &str| format!("/api/v1/pm/{}", links[n]);

    // Each shares through their own link, without the API token.
    for (i, n) in ["ana", "bo", "cy"].iter().enumerate() {
        let (code, v) = call(
            "POST",
            me(n),
            false,
            json!({"success": format!("paged fast {i}"), "failure": "<script>alert(1)</script>", "better": "test the rollback"}),
        )
        .await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["you"], *n);
    }
    // The public view shows who shared, not what.
    let (_, public) = call("GET", pm_path.clone(), false, Value::Null).await;
    assert_eq!(public["missing"], json!(["dee"]), "{public}");
    assert!(
        public["participants"][0].get("success").is_none(),
        "{public}"
    );
    let page = http(addr, "GET", &format!("/incidents/{id}"), false, "")
        .await
        .1;
    assert!(page.contains("participation"), "{page}");
    assert!(
        !page.contains("paged fast"),
        "content leaked before closing"
    );
    // Until they have shared, a participant does not see the others'
    // shares (nobody writes to match them); half a share is flagged to
    // everyone with what it lacks.
    let seat_page = || async {
        http(addr, "GET", &format!("/pm/{}", links["dee"]), false, "")
            .await
            .1
    };
    let before = seat_page().await;
    assert!(
        before.contains("shares-hidden") && !before.contains("paged fast 0"),
        "{before}"
    );
    let (code, v) = call(
        "POST",
        me("dee"),
        false,
        json!({"success": "the timeline was there"}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let half = seat_page().await;
    assert!(
        half.contains("incomplete: no failure, no do-better"),
        "{half}"
    );
    assert!(half.contains("shares-hidden"), "{half}");
    let (code, v) = call(
        "POST",
        me("dee"),
        false,
        json!({"success": "the timeline was there", "failure": "alert came late\n# Forged heading\n[x](javascript:alert(1)) ![](https://tracker.example/p.png)", "better": "alert on the pool"}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["missing"], json!([]));
    // Shared: everyone's shares, escaped, and the page follows the
    // post-mortem live.
    let after = seat_page().await;
    assert!(after.contains("paged fast 0"), "{after}");
    assert!(after.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!after.contains("<script>alert(1)"));
    assert!(after.contains(r#"data-live="shares""#), "{after}");

    // Roles: the time keeper's clock, the note keeper's notes.
    let (code, v) = call(
        "POST",
        me("cy"),
        false,
        json!({"section": "round", "minutes": 10}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["timer"]["section"], "round");
    let (code, v) = call(
        "POST",
        me("dee"),
        false,
        json!({"section": "round", "minutes": 10}),
    )
    .await;
    assert_eq!(code, 403, "{v}");
    let (code, _) = call("POST", me("bo"), false, json!({"notes": "we met at 10:00"})).await;
    assert_eq!(code, 200);

    for (n, text) in [
        ("ana", "alert on connection pool size"),
        ("dee", "canary deploys for the shop"),
        ("bo", "a runbook for shop restarts"),
    ] {
        let (code, v) = call("POST", me(n), false, json!({"proposal": text})).await;
        assert_eq!(code, 200, "{v}");
    }
    // Only the facilitator opens voting.
    let (code, v) = call("POST", me("bo"), false, json!({"phase": "voting"})).await;
    assert_eq!(code, 403, "{v}");
    let (code, v) = call("POST", me("ana"), false, json!({"phase": "voting"})).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["ballots"], 4);
    // The round is locked now.
    let (code, v) = call("POST", me("dee"), false, json!({"better": "rewritten"})).await;
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("round was locked"),
        "{v}"
    );

    let mut ballots = BTreeMap::new();
    for n in links.keys() {
        let (_, v) = call("GET", me(n), false, Value::Null).await;
        ballots.insert(
            n.clone(),
            v["ballot"]["token"].as_str().unwrap().to_string(),
        );
    }
    // The ballot numbers the proposals as --proposal does, and asks
    // before a blank one; closing the vote asks, naming what is missing.
    let ballot_page = http(
        addr,
        "GET",
        &format!("/ballots/{}", ballots["bo"]),
        false,
        "",
    )
    .await
    .1;
    assert!(
        ballot_page.contains("<b>3.</b> a runbook for shop restarts"),
        "{ballot_page}"
    );
    assert!(ballot_page.contains("data-confirm-blank="), "{ballot_page}");
    let facilitator_page = http(addr, "GET", &format!("/pm/{}", links["ana"]), false, "")
        .await
        .1;
    assert!(
        facilitator_page.contains("4 of 4 ballots are not cast yet"),
        "{facilitator_page}"
    );
    let votes = [
        ("ana", json!([1, 3])),
        ("bo", json!([3])),
        ("cy", json!([2, 3])),
        ("dee", json!([1])),
    ];
    assert!(
        facilitator_page.contains("Not voted yet: ana, bo, cy, dee."),
        "{facilitator_page}"
    );
    // A ballot sent with a seat's link that was not handed it is refused,
    // and counts nothing.
    let (code, v) = call(
        "POST",
        format!("/api/v1/ballots/{}", ballots["ana"]),
        false,
        json!({"approve": [1], "seat": links["bo"]}),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not handed to that seat"),
        "{v}"
    );
    // ana and bo vote as the console does, with their seat's link: the
    // roll names them. cy votes with the ballot alone.
    for (n, approve) in &votes[..3] {
        let body = if *n == "cy" {
            json!({"approve": approve})
        } else {
            json!({"approve": approve, "seat": links[*n]})
        };
        let (code, v) = call(
            "POST",
            format!("/api/v1/ballots/{}", ballots[*n]),
            false,
            body,
        )
        .await;
        assert_eq!(code, 200, "{v}");
    }
    // No tally while voting, only the count, and who has not voted.
    let (_, v) = call("GET", pm_path.clone(), true, Value::Null).await;
    assert_eq!(v["tally"], Value::Null, "{v}");
    assert_eq!(v["ballots_cast"], 3);
    assert_eq!(v["not_voted"], json!(["cy", "dee"]), "{v}");
    let facilitator_page = http(addr, "GET", &format!("/pm/{}", links["ana"]), false, "")
        .await
        .1;
    assert!(
        facilitator_page.contains("Not seen voting: cy, dee"),
        "the roll cannot name cy yet: {facilitator_page}"
    );
    // cy's own page knows their ballot was cast: reading it puts cy on
    // the roll.
    let (_, v) = call("GET", me("cy"), false, Value::Null).await;
    assert_eq!(v["ballot"]["cast"], true, "{v}");
    let (_, v) = call("GET", pm_path.clone(), true, Value::Null).await;
    assert_eq!(v["not_voted"], json!(["dee"]), "{v}");
    let facilitator_page = http(addr, "GET", &format!("/pm/{}", links["ana"]), false, "")
        .await
        .1;
    assert!(
        facilitator_page
            .contains("1 of 4 ballots is not cast yet; it will not count. Not voted: dee."),
        "{facilitator_page}"
    );
    // Double vote, a wrong token, a link used as a ballot: refused.
    let (code, v) = call(
        "POST",
        format!("/api/v1/ballots/{}", ballots["ana"]),
        false,
        json!({"approve": [2]}),
    )
    .await;
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("cast already"));
    let (code, _) = call(
        "POST",
        format!("/api/v1/ballots/{}", "ab".repeat(32)),
        false,
        json!({"approve": [1]}),
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = call(
        "POST",
        format!("/api/v1/ballots/{}", links["dee"]),
        false,
        json!({"approve": [1]}),
    )
    .await;
    assert_eq!(code, 404);

    // The database while voting: the slots are there, sealed; nothing
    // ties a ballot to a person, and no token is stored.
    let db = dir.join("srv").join("gemba.db");
    let ballot_hash = |b: &str| {
        use sha2::{Digest, Sha256};
        let raw: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&b[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let mut h = Sha256::new();
        h.update(b"gemba post-mortem ballot");
        h.update(32u64.to_be_bytes());
        h.update(&raw);
        h.finalize()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    let hashes: Vec<String> = ballots.values().map(|b| ballot_hash(b)).collect();
    let d = dump(&db);
    assert_eq!(
        d["pm_ballots"].len(),
        4,
        "the ballots are stored by their hash: {:?}",
        d["pm_ballots"]
    );
    assert!(
        hashes
            .iter()
            .all(|h| d["pm_ballots"].iter().any(|r| r.contains(h.as_str()))),
        "the test computes the hashes the store keeps"
    );
    // A participant is their name or the hash their row is keyed by.
    let people: Vec<String> = d["pm_participants"]
        .iter()
        .filter_map(|r| r.split('"').nth(1).map(str::to_string))
        .chain(links.keys().map(|n| format!("\"{n}\"")))
        .collect();
    assert_eq!(people.len(), 8);
    assert_eq!(linking_rows(&d, &people, &hashes), Vec::<String>::new());
    let raw = raw_bytes(&db);
    for t in ballots.values().chain(links.values()) {
        assert!(!contains(&raw, t), "a token is stored in the clear");
    }
    assert_eq!(
        columns(&db, "pm_ballots"),
        vec!["token_hash", "incident", "content"],
        "a ballot carries no time, sequence or person"
    );

    // The facilitator closes; the last ballot is now late.
    let (code, v) = call("POST", me("ana"), false, json!({"phase": "closed"})).await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = call(
        "POST",
        format!("/api/v1/ballots/{}", ballots["dee"]),
        false,
        json!({"approve": votes[3].1}),
    )
    .await;
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("closed"), "{v}");
    let (_, v) = call("GET", pm_path.clone(), false, Value::Null).await;
    let tally: Vec<(String, u64, bool)> = v["tally"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_string(),
                c["approvals"].as_u64().unwrap(),
                c["winner"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tally,
        vec![
            ("a runbook for shop restarts".to_string(), 3, true),
            ("alert on connection pool size".to_string(), 1, false),
            ("canary deploys for the shop".to_string(), 1, false),
        ]
    );
    // Closed: no more writes, said plainly.
    let (code, v) = call("POST", me("dee"), false, json!({"better": "late"})).await;
    assert_eq!(code, 409);
    assert!(v["error"].as_str().unwrap().contains("closed"), "{v}");
    // The note keeper writes on after the vote, until the notes are sent.
    let (code, v) = call(
        "POST",
        me("bo"),
        false,
        json!({"notes": "we met at 10:00; the runbook won"}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    // Closed, the incident's public page shows the round and the notes.
    let page = http(addr, "GET", &format!("/incidents/{id}"), false, "")
        .await
        .1;
    assert!(
        page.contains("paged fast 0") && page.contains("we met at 10:00"),
        "{page}"
    );

    // The winning proposal becomes an action item, by the facilitator.
    let action = json!({"proposal": 3, "owner": "bo", "due": "2026-12-15"});
    let (code, _) = call(
        "POST",
        format!("{}/actions", me("cy")),
        false,
        action.clone(),
    )
    .await;
    assert_eq!(code, 403);
    let (code, v) = call("POST", format!("{}/actions", me("ana")), false, action).await;
    assert_eq!(code, 201, "{v}");
    let aid = v["id"].as_i64().unwrap();
    let (_, market) = call("GET", "/api/v1/market".into(), false, Value::Null).await;
    assert_eq!(
        market["actions"][0]["text"], "a runbook for shop restarts",
        "{market}"
    );
    assert_eq!(market["actions"][0]["owner"], "bo");
    let market_page = http(addr, "GET", "/market", false, "").await.1;
    assert!(market_page.contains("a runbook for shop restarts"));
    // The Markdown answer lists it as the published edition does (the
    // same function writes both).
    let md = http(addr, "GET", "/api/v1/market?format=md", false, "")
        .await
        .1;
    assert!(
        md.contains("## Action items from post-mortems\n\n- A-")
            && md.contains(" a runbook for shop restarts (owner bo, due 2026-12-15, from I-"),
        "{md}"
    );

    // After closing, the database holds no slot at all.
    let d = dump(&db);
    assert!(
        d["pm_participants"]
            .iter()
            .all(|r| r.split(" | ").nth(4) == Some("Null")),
        "slots forgotten: {:?}",
        d["pm_participants"]
    );
    assert_eq!(linking_rows(&d, &people, &hashes), Vec::<String>::new());
    let raw = raw_bytes(&db);
    for t in ballots.values().chain(links.values()) {
        assert!(!contains(&raw, t), "a token is stored in the clear");
    }

    // The notes: public now, Markdown, with a chart beside them.
    let md = http(addr, "GET", &format!("{pm_path}.md"), false, "").await;
    assert_eq!(md.0, 200, "{}", md.1);
    let md = md.1;
    for part in [
        "# Post-mortem: I-",
        "checkout \\<b>down\\</b>",
        "## Timeline",
        "## The round",
        "### ana (facilitator)",
        "- **Success:** paged fast 0",
        "\\<script>alert(1)\\</script>",
        // A share is read as typed: no heading, link or remote image.
        "- **Failure:** alert came late\n  \\# Forged heading\n  \\[x\\](javascript:alert(1)) \\![\\](https://tracker.example/p.png)",
        "## The vote",
        "3 of 4 ballots cast",
        "| **a runbook for shop restarts** (chosen) | 3 |",
        "## Action items",
        "- [ ] a runbook for shop restarts: owner bo, due 2026-12-15",
        "## Notes",
        "we met at 10:00",
        &format!("](I-{id}-chart-1.png)"),
    ] {
        assert!(md.contains(part), "{part:?} missing from\n{md}");
    }
    let (code, v) = call(
        "POST",
        format!("{}/send", me("ana")),
        false,
        json!({"to": "all"}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let mail = std::fs::read_to_string(&sent).unwrap();
    assert!(mail.contains("## The vote"), "{mail}");
    // Every chart the notes link went along, under the name they link.
    let sent_names: std::collections::BTreeSet<String> = std::fs::read_to_string(&sent_images)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let linked: std::collections::BTreeSet<String> = md
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(name, _)| name.to_string()))
        .filter(|name| name.starts_with("I-") && name.ends_with(".png"))
        .collect();
    assert!(!linked.is_empty(), "{md}");
    assert_eq!(sent_names, linked, "the charts travel with the notes");
    // Sent: the notes are final.
    let (code, v) = call("POST", me("bo"), false, json!({"notes": "an afterthought"})).await;
    assert_eq!(code, 409, "{v}");

    // The console offers "done" to those who may change state only.
    let button = format!(r#"data-post="/api/v1/actions/{aid}""#);
    assert!(http(addr, "GET", "/market", true, "")
        .await
        .1
        .contains(&button));
    assert!(!http(addr, "GET", "/market", false, "")
        .await
        .1
        .contains(&button));

    let (code, _) = call(
        "POST",
        format!("/api/v1/actions/{aid}"),
        true,
        json!({"done": true}),
    )
    .await;
    assert_eq!(code, 200);
    let (_, market) = call("GET", "/api/v1/market".into(), false, Value::Null).await;
    assert_eq!(market["actions"], json!([]), "done items leave the market");
    // Reopened, it is back; reopening an open item is refused.
    let reopen = || {
        call(
            "POST",
            format!("/api/v1/actions/{aid}"),
            true,
            json!({"done": false}),
        )
    };
    assert_eq!(reopen().await.0, 200);
    let (_, market) = call("GET", "/api/v1/market".into(), false, Value::Null).await;
    assert_eq!(market["actions"][0]["id"], aid, "{market}");
    let (code, v) = reopen().await;
    assert_eq!(code, 409, "{v}");

    // An item without a due date: none shown, never overdue.
    let (code, v) = call(
        "POST",
        format!("{}/actions", me("ana")),
        false,
        json!({"proposal": 1, "owner": "dee"}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let (_, market) = call("GET", "/api/v1/market".into(), false, Value::Null).await;
    let undated = market["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["owner"] == "dee")
        .cloned()
        .unwrap();
    assert_eq!(undated["due"], Value::Null, "{undated}");
    let md = http(addr, "GET", "/api/v1/market?format=md", false, "")
        .await
        .1;
    assert!(md.contains("(owner dee, from I-"), "{md}");
    node.shutdown().await;
}
