//! A post-mortem run live by four people, each in a browser of their own
//! (four headless Chromium sessions through chromedriver, one per seat).
//! The facilitator starts it from the incident's page; each claims their
//! seat with its one-time link. Shares, the clock, the opening of the vote
//! and the ballots cast show on the others' open pages without a reload;
//! an incomplete share is flagged to everyone; nobody sees the others'
//! shares before sharing; closing the vote warns, by seat, about the one
//! who has not voted; the note keeper writes on after the vote; the
//! winner becomes an action item with no due date, which the morning
//! market shows; the incident's page then shows the round, the tally, the
//! notes and the actions. Screenshots are kept under `target/tmp/`.
//!
//! Skips with a message when chromium or chromedriver is not installed
//! (`.ci/run` installs both).

use crate::common;

use std::time::{Duration, Instant};

use common::browser::{self, count, screenshot};
use fantoccini::{Client, Locator};

const BASE: &str = "http://127.0.7.41:8777";

/// Waits until some element matching `css` holds `words`.
async fn wait_text(c: &Client, css: &str, words: &str) {
    let start = Instant::now();
    loop {
        let mut seen = String::new();
        for e in c.find_all(Locator::Css(css)).await.unwrap_or_default() {
            seen.push_str(&e.text().await.unwrap_or_default());
            seen.push('|');
        }
        if seen.contains(words) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{css}: wanted {words:?}, saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Marks the page a browser shows, so that a later [`same_page`] tells
/// whether it was reloaded since.
async fn mark(c: &Client) {
    c.execute("window.gembaMark = 1", vec![]).await.unwrap();
}

async fn same_page(c: &Client) -> bool {
    c.execute("return window.gembaMark === 1", vec![])
        .await
        .unwrap()
        == serde_json::json!(true)
}

async fn wait_count(c: &Client, css: &str, want: usize) {
    let start = Instant::now();
    loop {
        let n = count(c, css).await;
        if n == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{css}: {n} elements, wanted {want}; page: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn type_into(c: &Client, css: &str, words: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .send_keys(words)
        .await
        .unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_people_run_a_post_mortem_live_each_in_their_own_browser() {
    if let Some(why) = browser::missing() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let data = common::TempDir::new("pm-browser");
    let key = common::write_key(data.path());
    let _node = common::NodeProcess::start("pm-1", "lab", "127.0.7.41", None, &key, data.path());
    let start = Instant::now();
    while common::get(&format!("{BASE}/healthz")).map(|r| r.0) != Ok(200) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the node did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // An incident to look back on (on loopback a node takes writes without
    // a token).
    let answer = ureq::post(&format!("{BASE}/api/v1/incidents"))
        .header("content-type", "application/json")
        .send(r#"{"title": "checkout down", "severity": "major"}"#)
        .expect("incident opened")
        .body_mut()
        .read_to_string()
        .unwrap();
    let incident: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let id = incident["id"].as_i64().unwrap();

    // One browser per seat, each with a profile of its own.
    let names = ["ana", "bo", "cy", "dee"];
    let mut profiles = Vec::new();
    let mut drivers = Vec::new();
    let mut browsers = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let profile = common::TempDir::new(&format!("pm-browser-{n}"));
        let (driver, c) = browser::start(19516 + i as u16, profile.path(), "1200,1500").await;
        profiles.push(profile);
        drivers.push(driver);
        browsers.push(c);
    }
    let [ana, bo, cy, dee] = [&browsers[0], &browsers[1], &browsers[2], &browsers[3]];

    // The facilitator starts the post-mortem from the incident's page; the
    // links are shown once.
    ana.goto(&format!("{BASE}/incidents/{id}")).await.unwrap();
    type_into(ana, "#start input[name=facilitator]", "ana").await;
    type_into(ana, "#start input[name=note_keeper]", "bo").await;
    type_into(ana, "#start input[name=time_keeper]", "cy").await;
    type_into(ana, "#start input[name=participants]", "ana, bo, cy dee").await;
    click(ana, "#start button").await;
    wait_count(ana, "#links li", 4).await;
    let mut links = Vec::new();
    for li in ana.find_all(Locator::Css("#links li")).await.unwrap() {
        let who = li.text().await.unwrap();
        let a = li.find(Locator::Css("a")).await.unwrap();
        let href = a.attr("href").await.unwrap().unwrap();
        links.push((who.split(':').next().unwrap().trim().to_string(), href));
    }
    screenshot(ana, "postmortem-started.png").await;
    // Each claims their seat in their own browser and lands on a link of
    // their own, which the starter never saw.
    let mut own = Vec::new();
    for (n, c) in names.iter().zip(&browsers) {
        let (_, href) = links.iter().find(|(who, _)| who == n).unwrap();
        c.goto(&format!("{BASE}{href}")).await.unwrap();
        assert_eq!(text(c, "#claim-for").await, *n);
        click(c, "#claim button").await;
        wait_count(c, "#you", 1).await;
        let url = c.current_url().await.unwrap();
        assert!(
            url.path().starts_with("/pm/") && url.path() != href,
            "{url}"
        );
        own.push(format!("{BASE}{}", url.path()));
    }
    ana.goto(&format!("{BASE}{}", links[0].1)).await.unwrap();
    assert!(
        text(ana, "body").await.contains("not valid"),
        "a one-time link is spent"
    );
    ana.goto(&own[0]).await.unwrap();
    for c in &browsers {
        mark(c).await;
    }

    // dee shares a success only: everyone's open page flags it incomplete.
    type_into(dee, "#share textarea[name=success]", "dee: paged at once").await;
    click(dee, "#share button").await;
    for c in [ana, bo, cy] {
        wait_text(
            c,
            "#participation td.incomplete",
            "incomplete: no failure, no do-better",
        )
        .await;
        assert!(same_page(c).await, "flagged without a reload");
        // Nobody who has not shared sees what the others wrote.
        assert_eq!(count(c, "#shares-hidden").await, 1);
        assert!(!text(c, "body").await.contains("paged at once"));
    }
    // dee, whose share is incomplete, does not see the others' either.
    wait_count(dee, "#shares-hidden", 1).await;

    // ana and bo share in full; cy, who has not shared, still sees no
    // share, while ana's open page shows bo's as it arrives.
    for (c, n) in [(ana, "ana"), (bo, "bo")] {
        type_into(
            c,
            "#share textarea[name=success]",
            &format!("{n}: the page came fast"),
        )
        .await;
        type_into(c, "#share textarea[name=failure]", "the <pool> filled up").await;
        type_into(c, "#share textarea[name=better]", "watch the pool").await;
        click(c, "#share button").await;
        wait_count(c, "#shares-hidden", 0).await;
        mark(c).await;
    }
    wait_text(ana, "[data-live=shares]", "bo: the page came fast").await;
    assert!(same_page(ana).await, "bo's share arrived without a reload");
    assert!(
        text(ana, "[data-live=shares]")
            .await
            .contains("the <pool> filled up"),
        "shared text is shown as text"
    );
    wait_count(cy, "#participation td.yes", 2).await;
    assert!(same_page(cy).await);
    assert!(!text(cy, "body").await.contains("the page came fast"));
    type_into(
        cy,
        "#share textarea[name=success]",
        "cy: the rollback worked",
    )
    .await;
    type_into(cy, "#share textarea[name=failure]", "nobody saw the pool").await;
    type_into(cy, "#share textarea[name=better]", "graph the pool").await;
    click(cy, "#share button").await;
    wait_text(cy, "[data-live=shares]", "bo: the page came fast").await;
    screenshot(cy, "postmortem-round.png").await;

    // Proposals, and the time keeper's clock: ana's page shows the
    // others' as they come.
    type_into(ana, "#propose input[name=proposal]", "alert on pool size").await;
    click(ana, "#propose button").await;
    wait_count(ana, "#proposals li", 1).await;
    mark(ana).await;
    for (c, idea, total) in [
        (bo, "canary deploys", 2),
        (dee, "a runbook for restarts", 3),
    ] {
        type_into(c, "#propose input[name=proposal]", idea).await;
        click(c, "#propose button").await;
        wait_count(c, "#proposals li", total).await;
    }
    wait_count(ana, "#proposals li", 3).await;
    assert!(same_page(ana).await, "proposals arrived without a reload");
    cy.goto(&own[2]).await.unwrap();
    click(cy, "#timer button").await;
    wait_count(ana, "[data-ends]", 1).await;
    assert!(same_page(ana).await, "the clock appeared without a reload");
    assert_eq!(
        count(cy, "#open-voting").await,
        0,
        "only the facilitator opens voting"
    );

    // The facilitator opens the vote: the others' pages follow by
    // themselves, the round locked and a ballot offered.
    bo.goto(&own[1]).await.unwrap();
    click(ana, "#open-voting button").await;
    wait_count(ana, "#your-ballot a", 1).await;
    wait_count(bo, "#your-ballot a", 1).await;
    wait_count(bo, "#round-locked", 1).await;
    assert_eq!(count(bo, "#share").await, 0, "the round is locked");

    // Three vote on the ballot their seat's page links; dee does not.
    let choices: [(usize, &[usize]); 3] = [(0, &[1, 3]), (1, &[3]), (2, &[2, 3])];
    for (n, approve) in choices {
        let c = &browsers[n];
        c.goto(&own[n]).await.unwrap();
        wait_count(c, "#your-ballot a", 1).await;
        click(c, "#your-ballot a").await;
        wait_count(c, "#vote", 1).await;
        let url = c.current_url().await.unwrap();
        assert!(url.path().starts_with("/ballots/"), "{url}");
        // The ballot page numbers the proposals as `--proposal N` does.
        assert!(text(c, "#vote").await.contains("3."));
        for p in approve {
            click(c, &format!("#vote input[value=\"{p}\"]")).await;
        }
        click(c, "#vote button").await;
        wait_count(c, "#cast", 1).await;
    }
    screenshot(cy, "postmortem-ballot-cast.png").await;

    ana.goto(&own[0]).await.unwrap();
    wait_text(ana, "#ballots", "3 of 4 ballots cast").await;
    assert_eq!(text(ana, "#not-voted").await, "Not voted yet: dee.");
    assert_eq!(count(ana, "#tally").await, 0, "no tally before closing");
    // Closing asks first, naming the seat that has not voted; saying no
    // leaves the vote open.
    click(ana, "#close-voting button").await;
    let ask = ana.get_alert_text().await.unwrap();
    assert!(
        ask.contains("1 of 4 ballots is not cast yet") && ask.contains("Not voted: dee."),
        "{ask}"
    );
    ana.dismiss_alert().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(text(ana, "#phase").await, "voting");
    click(ana, "#close-voting button").await;
    ana.accept_alert().await.unwrap();
    wait_count(ana, "#tally", 1).await;
    let winner = text(ana, "#tally tr.winner").await;
    assert!(
        winner.contains("a runbook for restarts") && winner.ends_with('3'),
        "{winner}"
    );

    // The note keeper writes on after the vote; ana's page shows the
    // notes as they are saved.
    mark(ana).await;
    bo.goto(&own[1]).await.unwrap();
    wait_count(bo, "#notes textarea", 1).await;
    type_into(bo, "#notes textarea", "Agreed: a runbook for restarts.").await;
    click(bo, "#notes button").await;
    wait_text(ana, "[data-live=notes]", "Agreed: a runbook for restarts.").await;
    assert!(same_page(ana).await, "the notes arrived without a reload");

    // The winner is the first choice of the action form; the owner is one
    // of the participants, and the due date is left out.
    type_into(ana, "#action input[name=owner]", "dee").await;
    click(ana, "#action button").await;
    wait_count(ana, "#actions tr.action", 1).await;
    let action = text(ana, "#actions tr.action").await;
    assert!(
        action.contains("a runbook for restarts") && action.contains("dee") && action.contains('—'),
        "{action}"
    );
    screenshot(ana, "postmortem-closed.png").await;

    ana.goto(&format!("{BASE}/market")).await.unwrap();
    let market = text(ana, "#action-items").await;
    assert!(market.contains("a runbook for restarts"), "{market}");
    // The incident's page, public: the round, the tally, the notes and
    // the actions.
    ana.goto(&format!("{BASE}/incidents/{id}")).await.unwrap();
    let page = text(ana, "body").await;
    for words in [
        "cy: the rollback worked",
        "dee: paged at once",
        "Agreed: a runbook for restarts.",
        "3 of 4 ballots cast",
    ] {
        assert!(page.contains(words), "{words:?} missing: {page}");
    }
    assert!(text(ana, "#tally").await.contains("a runbook for restarts"));
    assert!(text(ana, "#actions").await.contains("dee"));
    screenshot(ana, "postmortem-incident.png").await;
    for c in browsers {
        c.close().await.unwrap();
    }
}
