//! The demo's learn stories: the incidents its escalations opened, and a
//! post-mortem of one with every participant's link.

use super::*;

/// Says when an escalation opens an incident and when it closes, with
/// the incident's page.
pub(super) async fn tell_incidents(
    timeline: Option<gemba_timeline::TimelineHandle>,
    http: SocketAddr,
    start: Instant,
) {
    let Some(t) = timeline else {
        return std::future::pending().await;
    };
    let mut told: std::collections::HashMap<i64, bool> = std::collections::HashMap::new();
    let mut looked_back = false;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(all) = gemba_timeline::incident::list(&t, false, 50).await else {
            continue;
        };
        for i in all.iter().rev() {
            let was = told.insert(i.id, i.is_open());
            match (was, i.is_open()) {
                (None, true) => println!(
                    "{} INCIDENT I-{} opened by {}: {} (timeline: http://{http}/incidents/{})",
                    elapsed(start),
                    i.id,
                    i.body.opened_by,
                    i.body.title,
                    i.id
                ),
                (Some(false), true) => println!(
                    "{} INCIDENT I-{} reopened: the same problem is back: {}",
                    elapsed(start),
                    i.id,
                    i.body.title
                ),
                (Some(true), false) | (None, false) => {
                    println!(
                        "{} INCIDENT I-{} closed: {}",
                        elapsed(start),
                        i.id,
                        i.body.closed_by.as_deref().unwrap_or("")
                    );
                    if !looked_back {
                        looked_back = true;
                        post_mortem(&t, i.id, http, start).await;
                    }
                }
                _ => {}
            }
        }
    }
}

/// Starts the post-mortem of the first incident that closes, with a team
/// of four, and prints their personal links to fill in in a browser.
pub(super) async fn post_mortem(
    t: &gemba_timeline::TimelineHandle,
    id: i64,
    http: SocketAddr,
    start: Instant,
) {
    let setup = gemba_timeline::postmortem::Setup {
        facilitator: "ana".into(),
        note_keeper: "bo".into(),
        time_keeper: "cy".into(),
        participants: vec!["dee".into()],
        open_for: None,
    };
    match gemba_timeline::postmortem::start(t, id, &setup, "demo").await {
        Ok(links) => {
            println!(
                "{} POSTMORTEM of I-{id} started: each link claims one person's seat, once, and leads to their own form (ana facilitates and opens the vote, bo keeps notes, cy keeps time):",
                elapsed(start)
            );
            for (name, token) in links {
                println!("      {name:<4} http://{http}/pm/{token}");
            }
            println!(
                "      notes as Markdown: http://{http}/api/v1/incidents/{id}/postmortem.md (after the vote, or: gemba postmortem export {id} --from http://{http})"
            );
        }
        Err(e) => println!("{} POSTMORTEM of I-{id} not started: {e}", elapsed(start)),
    }
}

/// A change event the demo records, as `gemba event add` would.
pub(super) async fn record(
    t: &gemba_timeline::TimelineHandle,
    what: &str,
    host: &str,
) -> Option<i64> {
    let body = serde_json::json!({
        "what": what,
        "kind": "deploy",
        "tags": {"service": "shop", "host": host},
        "author": "demo",
    });
    let e = gemba_timeline::event::from_api(body.to_string().as_bytes(), t.now_ms()).ok()?;
    t.add(e).await.ok().flatten()
}
