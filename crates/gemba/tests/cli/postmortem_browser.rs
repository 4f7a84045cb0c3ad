//! A post-mortem in a real browser: headless Chromium, driven through
//! chromedriver, starts the post-mortem of an incident from its page, then
//! four participants each claim their seat with its one-time link, open
//! their own link and fill in the round, three
//! propose, the time keeper starts the clock, the facilitator opens voting,
//! four ballots are cast on their own pages, the facilitator closes voting
//! (the tally appears) and makes the winner an action item, which the
//! morning market then shows. Screenshots are kept under `target/tmp/`.
//!
//! Skips with a message when chromium or chromedriver is not installed
//! (`.ci/run` installs both).

use crate::common;

use std::time::{Duration, Instant};

use common::browser::{self, count, screenshot};
use fantoccini::{Client, Locator};

const BASE: &str = "http://127.0.7.41:8777";

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
async fn four_people_fill_in_a_post_mortem_and_vote_in_the_browser() {
    if let Some(why) = browser::missing() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let data = common::TempDir::new("pm-browser");
    let profile = common::TempDir::new("pm-browser-profile");
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

    let (_driver, c) = browser::start(19516, profile.path(), "1300,1600").await;

    // The incident's page starts the post-mortem and shows the links once.
    c.goto(&format!("{BASE}/incidents/{id}")).await.unwrap();
    type_into(&c, "#start input[name=facilitator]", "ana").await;
    type_into(&c, "#start input[name=note_keeper]", "bo").await;
    type_into(&c, "#start input[name=time_keeper]", "cy").await;
    type_into(&c, "#start input[name=participants]", "ana, bo, cy dee").await;
    click(&c, "#start button").await;
    wait_count(&c, "#links li", 4).await;
    let mut links = Vec::new();
    for li in c.find_all(Locator::Css("#links li")).await.unwrap() {
        let who = li.text().await.unwrap();
        let a = li.find(Locator::Css("a")).await.unwrap();
        let href = a.attr("href").await.unwrap().unwrap();
        links.push((who.split(':').next().unwrap().trim().to_string(), href));
    }
    screenshot(&c, "postmortem-started.png").await;
    // Each link works once: its holder claims the seat and lands on a link
    // of their own, which the starter never saw.
    let mut own = Vec::new();
    for (n, href) in &links {
        c.goto(&format!("{BASE}{href}")).await.unwrap();
        assert_eq!(text(&c, "#claim-for").await, *n);
        click(&c, "#claim button").await;
        wait_count(&c, "#you", 1).await;
        let url = c.current_url().await.unwrap();
        assert!(
            url.path().starts_with("/pm/") && url.path() != href,
            "{url}"
        );
        own.push((n.clone(), url.path().to_string()));
    }
    screenshot(&c, "postmortem-claimed.png").await;
    c.goto(&format!("{BASE}{}", links[0].1)).await.unwrap();
    assert!(
        text(&c, "body").await.contains("not valid"),
        "a one-time link is spent"
    );
    let link = |n: &str| {
        let (_, href) = own.iter().find(|(who, _)| who == n).unwrap();
        format!("{BASE}{href}")
    };

    // The round: three in turn, on their own page.
    for (i, n) in ["ana", "bo", "cy"].iter().enumerate() {
        c.goto(&link(n)).await.unwrap();
        assert_eq!(text(&c, "#you").await, *n);
        assert_eq!(count(&c, "#participation td.yes").await, i);
        type_into(
            &c,
            "#share textarea[name=success]",
            &format!("{n}: the page came fast"),
        )
        .await;
        type_into(&c, "#share textarea[name=failure]", "the <pool> filled up").await;
        type_into(&c, "#share textarea[name=better]", "watch the pool").await;
        click(&c, "#share button").await;
        wait_count(&c, "#participation td.yes", i + 1).await;
    }
    // dee shares from elsewhere while cy's page stays open: it shows
    // without a reload (the page follows the post-mortem live).
    c.execute("window.gembaMark = 1", vec![]).await.unwrap();
    let dee_api = link("dee").replace(&format!("{BASE}/pm/"), &format!("{BASE}/api/v1/pm/"));
    ureq::post(&dee_api)
        .header("content-type", "application/json")
        .send(r#"{"success": "dee: paged at once", "failure": "the <pool> filled up", "better": "watch the pool"}"#)
        .expect("dee's share");
    wait_count(&c, "#participation td.yes", 4).await;
    assert!(text(&c, "[data-live=shares]")
        .await
        .contains("dee: paged at once"));
    let same_page = c
        .execute("return window.gembaMark === 1", vec![])
        .await
        .unwrap();
    assert_eq!(
        same_page,
        serde_json::json!(true),
        "updated without a reload"
    );
    assert!(
        text(&c, "body").await.contains("the <pool> filled up"),
        "shared text is shown as text"
    );
    for (n, idea) in [
        ("ana", "alert on pool size"),
        ("bo", "canary deploys"),
        ("dee", "a runbook for restarts"),
    ] {
        c.goto(&link(n)).await.unwrap();
        let before = count(&c, "#proposals li").await;
        type_into(&c, "#propose input[name=proposal]", idea).await;
        click(&c, "#propose button").await;
        wait_count(&c, "#proposals li", before + 1).await;
    }
    // The time keeper's clock.
    c.goto(&link("cy")).await.unwrap();
    click(&c, "#timer button").await;
    wait_count(&c, "[data-ends]", 1).await;
    assert!(text(&c, "[data-ends]").await.contains("left"));
    assert_eq!(
        count(&c, "#open-voting").await,
        0,
        "only the facilitator opens voting"
    );
    screenshot(&c, "postmortem-time-keeper.png").await;

    c.goto(&link("ana")).await.unwrap();
    click(&c, "#open-voting button").await;
    wait_count(&c, "#your-ballot a", 1).await;

    // Four ballots, each on its own page.
    let choices: [(&str, &[usize]); 4] = [
        ("ana", &[1, 3]),
        ("bo", &[3]),
        ("cy", &[2, 3]),
        ("dee", &[3]),
    ];
    for (n, approve) in choices {
        c.goto(&link(n)).await.unwrap();
        click(&c, "#your-ballot a").await;
        wait_count(&c, "#vote", 1).await;
        assert!(c
            .current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/ballots/"));
        for p in approve {
            click(&c, &format!("#vote input[value=\"{p}\"]")).await;
        }
        click(&c, "#vote button").await;
        wait_count(&c, "#cast", 1).await;
    }
    screenshot(&c, "postmortem-ballot-cast.png").await;
    c.goto(&link("bo")).await.unwrap();
    assert!(text(&c, "#ballots")
        .await
        .starts_with("4 of 4 ballots cast"));
    assert_eq!(count(&c, "#tally").await, 0, "no tally before closing");

    c.goto(&link("ana")).await.unwrap();
    click(&c, "#close-voting button").await;
    // Closing asks first.
    let ask = c.get_alert_text().await.unwrap();
    assert!(ask.contains("Every ballot is cast"), "{ask}");
    c.accept_alert().await.unwrap();
    wait_count(&c, "#tally", 1).await;
    let winner = text(&c, "#tally tr.winner").await;
    assert!(
        winner.contains("a runbook for restarts") && winner.ends_with('4'),
        "{winner}"
    );
    // The winner is the first choice of the action form.
    type_into(&c, "#action input[name=owner]", "bo").await;
    c.execute(
        "document.querySelector('#action input[name=due]').value='2026-12-15'",
        vec![],
    )
    .await
    .unwrap();
    click(&c, "#action button").await;
    wait_count(&c, "#actions tr.action", 1).await;
    let action = text(&c, "#actions tr.action").await;
    assert!(
        action.contains("a runbook for restarts") && action.contains("bo"),
        "{action}"
    );
    screenshot(&c, "postmortem-closed.png").await;

    c.goto(&format!("{BASE}/market")).await.unwrap();
    let market = text(&c, "#action-items").await;
    assert!(market.contains("a runbook for restarts"), "{market}");
    c.goto(&format!("{BASE}/incidents/{id}")).await.unwrap();
    assert!(text(&c, "#tally").await.contains("a runbook for restarts"));
    screenshot(&c, "postmortem-incident.png").await;
    c.close().await.unwrap();
}
