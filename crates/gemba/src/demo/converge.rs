//! The demo's converge stories: the toy web service killed every minute
//! (each escalation's journal printed), and the shop that leaks
//! connections after a bad release until a metric check restarts it.

use super::*;

/// Kills the toy service every now and then and prints the escalator's
/// journal as it converges it back.
pub(super) async fn service_kills(
    escalator: Option<gemba_escalator::EscalatorHandle>,
    pidfile: &std::path::Path,
    node: &str,
    start: Instant,
    first_after: Duration,
) {
    let Some(h) = escalator else {
        return std::future::pending().await;
    };
    let mut last_seq = 0;
    let mut next_kill = Instant::now() + first_after + Duration::from_secs(5);
    // The third kill within 10 min is a crash loop and holds the scope;
    // the demo then plays the operator and acknowledges it a little later.
    let mut ack_at: Option<(Instant, String)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Ok(mut rows) = h.store.recent_journal(100).await {
            rows.reverse();
            let seen = last_seq;
            for r in rows.into_iter().filter(|r| r.seq > seen) {
                last_seq = r.seq;
                let esc = r.escalation.map(|i| format!(" #{i}")).unwrap_or_default();
                println!(
                    "{} ESCALATOR {}{esc} {}: {}",
                    elapsed(start),
                    r.scope,
                    r.kind,
                    r.text
                );
                if r.text.contains("is held until acknowledged") {
                    ack_at = Some((Instant::now() + Duration::from_secs(20), r.scope.clone()));
                }
            }
        }
        if let Some((at, scope)) = ack_at.clone() {
            if Instant::now() >= at {
                ack_at = None;
                if let Ok(sc) = scope.parse() {
                    let r = h.ack(sc, "the demo's operator").await;
                    println!(
                        "{} ACK    the demo acknowledges {scope} as an operator would (`gemba ack {scope}`): {}",
                        elapsed(start),
                        match r {
                            Ok(id) => format!("escalation {id} closed; it may escalate again"),
                            Err(e) => e.to_string(),
                        }
                    );
                }
            }
        }
        if Instant::now() >= next_kill {
            next_kill = Instant::now() + Duration::from_secs(60);
            let Ok(text) = std::fs::read_to_string(pidfile) else {
                continue;
            };
            let Ok(pid) = text.trim().parse::<i32>() else {
                continue;
            };
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            println!(
                "{} KILLED the web service on {node} (pid {pid}); the escalator should restart it",
                elapsed(start)
            );
        }
    }
}

/// The leak story: a release makes the shop leak connections; the metric
/// check has the escalator restart it each time they pass the limit; after
/// two restarts the fixed release goes out and the climb stops; the trend
/// detector then says so on both events.
#[allow(clippy::too_many_arguments)]
pub(super) async fn shop_story(
    t: &gemba_timeline::TimelineHandle,
    e: &gemba_escalator::EscalatorHandle,
    node: &str,
    work: &std::path::Path,
    redeploy: impl Fn() -> anyhow::Result<()>,
    http: SocketAddr,
    start: Instant,
    first_after: Duration,
) {
    tokio::time::sleep(first_after + Duration::from_secs(15)).await;
    let flag = work.join(format!("{node}.leak"));
    let _ = std::fs::write(&flag, b"the v2.3.1 connection pool never releases\n");
    let release = record(t, "shop v2.3.1 released", node).await;
    let chart =
        format!("http://{http}/charts?node={node}&process=shop&metric=tcp_established&since=15m");
    println!(
        "{} DEPLOY shop v2.3.1 on {node}: its connections now climb; the shop-connections check restarts it past {SHOP_CRIT} (chart: {chart})",
        elapsed(start)
    );
    let scope = format!("node:{node}");
    let restarts = || async {
        e.store
            .recent_journal(500)
            .await
            .map(|rows| {
                rows.iter()
                    .filter(|r| r.scope == scope && r.kind == "step-end")
                    .count()
            })
            .unwrap_or(0)
    };
    let before = restarts().await;
    let waited = Instant::now();
    while restarts().await < before + 2 && waited.elapsed() < Duration::from_secs(240) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{} LOGS   what the shop wrote before its restarts: gemba logs --from http://{http} --node {node} --process shop (and on the event's and the escalation's pages)",
        elapsed(start)
    );
    let _ = std::fs::remove_file(&flag);
    let outcome = match redeploy() {
        Ok(()) => "redeployed".to_string(),
        Err(e) => format!("redeploy failed: {e}"),
    };
    let fix = record(t, "shop v2.3.2: connection leak fixed", node).await;
    println!(
        "{} DEPLOY shop v2.3.2 on {node} ({outcome}): the leak is fixed, the climb stops (chart: {chart})",
        elapsed(start)
    );
    tokio::time::sleep(Duration::from_secs(45)).await;
    for id in [release, fix].into_iter().flatten() {
        let Ok(Some(ev)) = t.event(id).await else {
            continue;
        };
        let callouts = gemba_timeline::trend::callouts(t, &ev)
            .await
            .unwrap_or_default();
        for c in callouts.iter().filter(|c| c.process == "shop").take(2) {
            println!(
                "{} TREND  {} (http://{http}/events/{id})",
                elapsed(start),
                c.text
            );
        }
    }
    std::future::pending::<()>().await
}
