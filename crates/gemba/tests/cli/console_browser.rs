//! The console in a real browser: headless Chromium, driven through
//! chromedriver, opens a running demo node's console, finds the five nodes
//! in the graph and the matrix, and watches the broken-link list change as
//! the demo black-holes a link and heals it. Screenshots are kept under
//! `target/tmp/`.
//!
//! Skips with a message when chromium or chromedriver is not installed
//! (`.ci/run` installs both).

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::browser::{self, count, screenshot, Killed};
use fantoccini::Locator;

fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("the demo did not print {needle:?} within {limit:?}"),
        }
    }
}

async fn wait_count(c: &fantoccini::Client, css: &str, want: usize, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let n = count(c, css).await;
        if n == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{css}: {n} elements, wanted {want} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_the_grid_and_a_broken_link_coming_and_going() {
    if let Some(why) = browser::missing() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let profile = common::TempDir::new("chromium-profile");
    let mut demo = Command::new(common::BIN)
        .args([
            "demo",
            "--first-ip=127.0.7.11",
            "--fault-after=4s",
            "--fault-for=10s",
            "--fault-gap=300s",
            "--duration=90s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let _demo = Killed(demo);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("demo: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_for_line(
        &rx,
        "every node sees all 20 links up",
        Duration::from_secs(30),
    );

    let (_driver, client) = browser::start(19515, profile.path(), "1400,1000").await;

    client.goto("http://127.0.7.11:8777/").await.unwrap();
    assert_eq!(client.title().await.unwrap(), "gemba · ams-1");
    assert_eq!(
        count(&client, "svg#grid-graph g.node").await,
        5,
        "five nodes in the graph"
    );
    assert_eq!(
        count(&client, "svg#grid-graph g.site").await,
        3,
        "three sites in the graph"
    );
    assert_eq!(
        count(&client, "svg#grid-graph line.edge-up").await,
        20,
        "twenty green edges"
    );
    assert_eq!(
        count(&client, "table#matrix tbody tr").await,
        5,
        "five rows in the matrix"
    );
    assert_eq!(count(&client, "table#matrix td.cell-up").await, 20);
    assert_eq!(count(&client, "#no-broken").await, 1);
    screenshot(&client, "console-healthy.png").await;

    let fault = wait_for_line(&rx, "FAULT", Duration::from_secs(20));
    assert!(fault.contains("ams-1 -> nyc-1"), "{fault}");
    let broken = r#"tr.broken-link[data-source="ams-1"][data-target="nyc-1"]"#;
    let took = wait_count(&client, broken, 1, Duration::from_secs(9)).await;
    eprintln!("the console listed the broken link {took:?} after the fault");
    // Losses first make it degraded; consecutive losses make it down.
    let red = r#"line.edge-down[data-source="ams-1"][data-target="nyc-1"]"#;
    let took = wait_count(&client, red, 1, Duration::from_secs(9)).await;
    eprintln!("the graph drew it red {took:?} later");
    let row = client
        .find(Locator::Css(broken))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(row.contains("down") && row.contains("ago"), "{row}");
    screenshot(&client, "console-broken-link.png").await;

    wait_for_line(&rx, "HEALED", Duration::from_secs(20));
    wait_count(&client, "tr.broken-link", 0, Duration::from_secs(9)).await;
    assert_eq!(count(&client, "#no-broken").await, 1);
    screenshot(&client, "console-healed.png").await;

    // The demo kills its web service; the escalator on ams-1 restarts it.
    client
        .goto("http://127.0.7.11:8777/escalations")
        .await
        .unwrap();
    let took = wait_count(
        &client,
        "tr.escalation td.ph-resolved",
        1,
        Duration::from_secs(40),
    )
    .await;
    eprintln!("the escalations page showed a resolved escalation after {took:?}");
    client
        .find(Locator::Css("tr.escalation a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_count(
        &client,
        "table#timeline tr.entry",
        5,
        Duration::from_secs(5),
    )
    .await;
    let steps = client
        .find(Locator::Css("table#steps"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(steps.contains("started the demo service"), "{steps}");
    let timeline = client
        .find(Locator::Css("table#timeline"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for kind in ["decision", "step-start", "step-end", "verify", "resolved"] {
        assert!(timeline.contains(kind), "{kind} missing from {timeline}");
    }
    screenshot(&client, "console-escalation.png").await;
    client.goto("http://127.0.7.11:8777/checks").await.unwrap();
    assert_eq!(
        count(&client, "table#checks tr.check").await,
        4,
        "web-http, web-process, web-reachable, shop-connections"
    );
    client.goto("http://127.0.7.12:8777/checks").await.unwrap();
    assert_eq!(
        count(&client, "#agent-only").await,
        1,
        "an agent's console says where the server is"
    );
    // The charts form offers the processes of the node chosen, without a
    // round trip: web runs on nyc-1, shop on ams-2.
    client
        .goto("http://127.0.7.11:8777/charts?node=nyc-1&process=web&metric=rss_bytes")
        .await
        .unwrap();
    let offered = |c: fantoccini::Client| async move {
        c.execute(
            "return [...document.querySelectorAll('#chart-form select[name=process] option')].map(o=>o.value)",
            vec![],
        )
        .await
        .unwrap()
    };
    let before = offered(client.clone()).await;
    assert!(before.to_string().contains("\"web\""), "{before}");
    client
        .execute(
            "const s=document.querySelector('#chart-form select[name=node]');s.value='ams-2';s.dispatchEvent(new Event('change'))",
            vec![],
        )
        .await
        .unwrap();
    let after = offered(client.clone()).await;
    assert!(
        after.to_string().contains("\"shop\"") && !after.to_string().contains("\"web\""),
        "{after}"
    );
    client.close().await.unwrap();
}
