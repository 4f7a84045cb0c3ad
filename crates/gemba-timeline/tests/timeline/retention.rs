//! Downsampling and retention with injected time: raw points become
//! 1-minute and 1-hour buckets with the right average, min and max; each
//! tier loses what is past its retention, so the store stops growing;
//! rolling again after a restart changes nothing.

use std::sync::Arc;
use std::time::Duration;

use gemba_store::{SeriesKey, SeriesStore, SqliteStore, Tier};
use gemba_timeline::series::{roll_once, Retention};

const DAY: u64 = 86_400;
const T0: u64 = 1_795_392_000; // a whole day in unix seconds

fn retention() -> Retention {
    Retention {
        raw: Duration::from_secs(2 * DAY),
        minute: Duration::from_secs(30 * DAY),
        hour: Duration::from_secs(365 * DAY),
    }
}

#[tokio::test]
async fn points_roll_up_and_every_tier_is_pruned_at_its_retention() {
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let key = |m: &str| SeriesKey {
        node: "web-1".into(),
        process: "shop".into(),
        metric: m.into(),
    };
    let ids = store
        .series_ids(vec![key("tcp_established"), key("fds")], 100)
        .await
        .unwrap();
    let (conns, fds) = (ids[0].unwrap(), ids[1].unwrap());
    // Series past the cap are refused, known ones still found.
    let capped = store
        .series_ids(vec![key("threads"), key("fds")], 2)
        .await
        .unwrap();
    assert_eq!(capped, vec![None, Some(fds)]);

    let mut now = T0;
    let mut sizes = Vec::new();
    // 40 days of samples every 10 s, a roll-up pass every simulated hour
    // (the service runs one a minute; fewer passes cover the same spans).
    for day in 0..40u64 {
        let mut points = Vec::new();
        for i in 0..(DAY / 10) {
            let t = T0 + day * DAY + i * 10;
            // Connections climb 1 per minute within each hour: 0..=59.
            points.push((conns, t, ((t % 3600) / 60) as f64));
            points.push((fds, t, 100.0));
        }
        store.write_points(points).await.unwrap();
        for _ in 0..24 {
            now += 3600;
            roll_once(&*store, retention(), now).await.unwrap();
        }
        sizes.push(store.point_counts().await.unwrap());
    }
    let last = *sizes.last().unwrap();
    // Raw: at most 2 days (+ what arrived ahead of the clock); minutes: 30 days.
    assert!(last.raw <= 2 * 2 * DAY / 10 + 2 * 8640, "{last:?}");
    assert!(last.minute <= 2 * 30 * 1440 + 2 * 60, "{last:?}");
    assert_eq!(
        sizes[35].minute, last.minute,
        "the minute tier stopped growing"
    );
    assert!(
        last.hour >= 2 * 38 * 24,
        "hours are kept for a year: {last:?}"
    );

    // A minute bucket: the average of its six raw points, with min and max.
    let minute = store
        .points(conns, Tier::Minute, now - 3 * DAY, now)
        .await
        .unwrap();
    let b = minute.iter().find(|p| p.t % 3600 == 600).unwrap();
    assert_eq!((b.v, b.min, b.max), (10.0, 10.0, 10.0));
    // An hour bucket: the average of 0..=59, min 0, max 59.
    let hour = store.points(conns, Tier::Hour, T0, now).await.unwrap();
    let h = &hour[5];
    assert!((h.v - 29.5).abs() < 1e-9, "{h:?}");
    assert_eq!((h.min, h.max), (0.0, 59.0));
    assert_eq!(retention().tier_for(now - DAY, now), Tier::Raw);
    assert_eq!(retention().tier_for(now - 7 * DAY, now), Tier::Minute);
    assert_eq!(retention().tier_for(now - 90 * DAY, now), Tier::Hour);

    // A restart rolls from the stored cursors: nothing changes.
    let before = store.point_counts().await.unwrap();
    let hour_before = store.points(conns, Tier::Hour, T0, now).await.unwrap();
    roll_once(&*store, retention(), now).await.unwrap();
    assert_eq!(store.point_counts().await.unwrap(), before);
    assert_eq!(
        store.points(conns, Tier::Hour, T0, now).await.unwrap(),
        hour_before
    );
}
