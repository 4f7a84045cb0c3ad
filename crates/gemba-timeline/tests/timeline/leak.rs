//! The case behind the learn stage, end to end on a real process: a
//! release makes a process leak connections and files, a fix stops it.
//! Sampled from /proc, stored as series, drawn with both events as
//! markers, and called out on each event by the trend detector.

use crate::common;

use std::sync::Arc;

use common::{holding_listener, Leaky};
use gemba_core::metrics::{ProcessDef, Selector};
use gemba_exec::Clock;
use gemba_store::SqliteStore;
use gemba_timeline::sample::Sampler;
use gemba_timeline::{event, series, trend, TimelineHandle};

const T0: u64 = 1_795_392_000_000; // ms
const STEP: u64 = 10_000;

#[tokio::test]
async fn growth_after_the_release_and_the_fall_after_the_fix_are_seen() {
    let dir = std::env::temp_dir().join(format!("gemba-leak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("shop.pid");
    let port = holding_listener();
    let mut shop = Leaky::start(port, &pidfile);
    let defs = vec![ProcessDef {
        name: "shop".into(),
        selector: Selector::Pidfile(pidfile.display().to_string()),
        logs: Vec::new(),
    }];
    let mut sampler = Sampler::new(&defs, 64);

    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let now = T0 + 60 * STEP;
    let timeline = TimelineHandle::new(store.clone(), Clock::starting_at(now));
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let writer = tokio::spawn(series::write(
        store.clone(),
        rx,
        1000,
        timeline.latest.clone(),
        timeline.stats.clone(),
    ));

    // Samples every 10 s (on the test's clock): 20 quiet, 20 leaking
    // 3 connections each, then the fix releases them and 20 quiet again.
    for i in 0..60u64 {
        match i {
            20..=39 => shop.command("open 3"),
            40 => shop.command("close"),
            _ => {}
        }
        for s in sampler.sample(T0 + i * STEP) {
            tx.send(("web-1".to_string(), s)).await.unwrap();
        }
    }
    shop.stop();
    drop(tx);
    writer.await.unwrap();

    let add = |what: &str, at_ms: u64| {
        let body = serde_json::json!({
            "what": what, "kind": "deploy", "tags": ["service=shop"], "when": at_ms as f64 / 1000.0,
        });
        event::from_api(body.to_string().as_bytes(), now).unwrap()
    };
    let release = timeline
        .add(add("shop v2.3.1", T0 + 195 * 1000))
        .await
        .unwrap()
        .unwrap();
    let fix = timeline
        .add(add("shop v2.3.2", T0 + 395 * 1000))
        .await
        .unwrap()
        .unwrap();

    // The stored series: flat, +3 a step, back to zero.
    let found = series::select(
        &timeline,
        &["web-1".into()],
        &["shop".into()],
        "tcp_established",
        T0 / 1000,
        now / 1000,
        10,
    )
    .await
    .unwrap();
    let v: Vec<f64> = found[0].points.iter().map(|p| p.v).collect();
    assert_eq!(v.len(), 60);
    assert_eq!(v[19], 0.0);
    assert_eq!(v[39], 60.0);
    assert_eq!(v[45], 0.0);

    // The chart: the climb and both releases as markers.
    let chart = gemba_timeline::chart::build(
        &timeline,
        gemba_timeline::chart::Request {
            nodes: vec!["web-1".into()],
            processes: vec!["shop".into()],
            metric: "tcp_established".into(),
            since_ms: T0,
            until_ms: now,
            width: 900,
            height: 320,
            events: None,
            tags: Vec::new(),
            fit: false,
        },
        found.clone(),
    )
    .await
    .unwrap();
    let svg = chart.svg();
    // A default window five times as long as the data starts where the
    // data does, not with the climb squeezed into the right fifth.
    let first_ms = found
        .iter()
        .filter_map(|s| s.points.first())
        .map(|p| p.t * 1000)
        .min()
        .unwrap();
    let fitted = gemba_timeline::chart::build(
        &timeline,
        gemba_timeline::chart::Request {
            nodes: vec!["web-1".into()],
            processes: vec!["shop".into()],
            metric: "tcp_established".into(),
            since_ms: now - 5 * (now - T0),
            until_ms: now,
            width: 900,
            height: 320,
            events: None,
            tags: Vec::new(),
            fit: true,
        },
        found.clone(),
    )
    .await
    .unwrap();
    assert!(
        fitted.since_ms <= first_ms && fitted.since_ms >= first_ms - (now - first_ms) / 10,
        "{} vs first sample {first_ms}",
        fitted.since_ms
    );
    assert_eq!(svg.matches("class=\"marker\"").count(), 2);
    assert!(svg.contains(">shop v2.3.1<") && svg.contains(">shop v2.3.2<"));
    assert!(
        svg.contains(">60<"),
        "the axis reaches the top of the climb"
    );
    assert_eq!(chart.lines[0].label, "web-1 shop");

    // The trend detector calls both events out.
    let on_release = trend::callouts(&timeline, &timeline.event(release).await.unwrap().unwrap())
        .await
        .unwrap();
    let texts: Vec<&str> = on_release.iter().map(|c| c.text.as_str()).collect();
    let conns = on_release
        .iter()
        .find(|c| c.metric == "tcp_established" && c.process == "shop")
        .unwrap_or_else(|| panic!("no callout on tcp_established: {texts:?}"));
    assert!(conns.started);
    assert_eq!(
        conns.text,
        "tcp_established of shop on web-1 grows ~1.08k/h since deploy shop v2.3.1 (00:03), was flat for 3 min before"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("fds of shop on web-1 grows")),
        "{texts:?}"
    );
    let on_fix = trend::callouts(&timeline, &timeline.event(fix).await.unwrap().unwrap())
        .await
        .unwrap();
    let conns = on_fix
        .iter()
        .find(|c| c.metric == "tcp_established" && c.process == "shop")
        .expect("the fix is called out");
    assert!(!conns.started);
    assert!(
        conns.text.starts_with("tcp_established of shop on web-1 back to flat after deploy shop v2.3.2 (00:06); it grew ~1.08k/h"),
        "{}",
        conns.text
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
