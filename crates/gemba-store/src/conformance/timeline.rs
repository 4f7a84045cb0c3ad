//! The contract of [`crate::TimelineStore`], as executable checks:
//! events, series points and roll-ups, state changes, incidents, ballots
//! and action items.

use std::future::Future;
use std::sync::Arc;

/// The contract of [`crate::TimelineStore`]: two handles on one new,
/// empty store.
pub type TimelinePair = (Arc<dyn crate::TimelineStore>, Arc<dyn crate::TimelineStore>);

/// Runs every timeline check on a fresh store each.
pub async fn run_timeline<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = TimelinePair>,
{
    timeline_events_are_found_by_window_tag_and_kind_once_per_origin(fresh().await).await;
    timeline_points_move_roll_up_and_expire(fresh().await).await;
    timeline_series_stop_at_the_cap(fresh().await).await;
    timeline_changes_are_read_by_window_and_node(fresh().await).await;
    timeline_incident_updates_name_the_version_they_read(fresh().await).await;
    timeline_a_ballot_counts_once_and_only_while_voting(fresh().await).await;
    timeline_action_items_are_done_once(fresh().await).await;
}

fn event(at_ms: u64, kind: &str, tags: &[&str], origin: Option<&str>) -> crate::EventRow {
    crate::EventRow {
        id: 0,
        at_ms,
        end_ms: None,
        kind: kind.into(),
        what: format!("{kind} at {at_ms}"),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        text: "step output\u{0}with a NUL".into(),
        author: "ci".into(),
        link: String::new(),
        source: "api".into(),
        origin: origin.map(str::to_string),
    }
}

pub async fn timeline_events_are_found_by_window_tag_and_kind_once_per_origin(
    (a, b): TimelinePair,
) {
    let ids = a
        .add_events(vec![
            event(1000, "deploy", &["service=shop", "host=web-1"], None),
            event(2000, "escalation", &["host=web-1"], Some("journal:1")),
            event(3000, "deploy", &["service=cart"], None),
        ])
        .await
        .unwrap();
    assert!(ids.iter().all(Option::is_some));
    // A follower replaying after a restart adds nothing.
    let again = b
        .add_events(vec![event(2000, "escalation", &[], Some("journal:1"))])
        .await
        .unwrap();
    assert_eq!(again, vec![None]);
    let all = |f: crate::EventFilter| {
        let b = b.clone();
        async move {
            b.events(f)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.at_ms)
                .collect::<Vec<_>>()
        }
    };
    let base = crate::EventFilter {
        since_ms: 0,
        until_ms: 10_000,
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        all(base.clone()).await,
        vec![3000, 2000, 1000],
        "newest first"
    );
    assert_eq!(
        all(crate::EventFilter {
            tags: vec!["host=web-1".into()],
            ..base.clone()
        })
        .await,
        vec![2000, 1000]
    );
    assert_eq!(
        all(crate::EventFilter {
            kind: Some("deploy".into()),
            since_ms: 1500,
            ..base.clone()
        })
        .await,
        vec![3000]
    );
    let one = b.event(ids[0].unwrap()).await.unwrap().unwrap();
    assert_eq!(one.text, "step output\u{0}with a NUL");
    assert_eq!(one.tags, vec!["service=shop", "host=web-1"]);
    a.set_timeline_value("cursor", "17").await.unwrap();
    assert_eq!(
        b.timeline_value("cursor").await.unwrap().as_deref(),
        Some("17")
    );
    assert_eq!(b.prune_events(2500).await.unwrap(), 2);
    assert_eq!(all(base).await, vec![3000]);
}

pub async fn timeline_points_move_roll_up_and_expire((a, b): TimelinePair) {
    let key = |m: &str| crate::SeriesKey {
        node: "web-1".into(),
        process: "shop".into(),
        metric: m.into(),
    };
    let ids = a
        .series_ids(vec![key("rss"), key("fds")], 100)
        .await
        .unwrap();
    let (rss, fds) = (ids[0].unwrap(), ids[1].unwrap());
    assert_eq!(
        b.series_ids(vec![key("rss")], 100).await.unwrap(),
        vec![Some(rss)]
    );
    // Two minutes of points; a second value for a second replaces it.
    let mut points: Vec<(i64, u64, f64)> = (0..120).map(|s| (rss, 6000 + s, s as f64)).collect();
    points.push((fds, 6000, 5.0));
    a.write_points(points).await.unwrap();
    b.write_points(vec![(fds, 6000, 7.0)]).await.unwrap();
    let raw = b.points(fds, crate::Tier::Raw, 0, 10_000).await.unwrap();
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].v, 7.0);
    // Compaction moves old points out of the head; reads see both.
    assert_eq!(b.compact(6060).await.unwrap(), 61);
    assert_eq!(
        a.points(rss, crate::Tier::Raw, 6000, 6119)
            .await
            .unwrap()
            .len(),
        120
    );
    assert_eq!(
        a.roll_up(crate::Tier::Raw, crate::Tier::Minute, 6000, 6120)
            .await
            .unwrap(),
        3
    );
    // Rolling up again gives the same buckets.
    a.roll_up(crate::Tier::Raw, crate::Tier::Minute, 6000, 6120)
        .await
        .unwrap();
    let minutes = b.points(rss, crate::Tier::Minute, 0, 10_000).await.unwrap();
    let got: Vec<(u64, f64, f64, f64)> = minutes.iter().map(|p| (p.t, p.v, p.min, p.max)).collect();
    assert_eq!(
        got,
        vec![(6000, 29.5, 0.0, 59.0), (6060, 89.5, 60.0, 119.0)]
    );
    a.roll_up(crate::Tier::Minute, crate::Tier::Hour, 3600, 7200)
        .await
        .unwrap();
    let hour = b.points(rss, crate::Tier::Hour, 0, 10_000).await.unwrap();
    assert_eq!((hour[0].t, hour[0].v, hour[0].max), (3600, 59.5, 119.0));
    let counts = b.point_counts().await.unwrap();
    assert_eq!(
        (counts.raw, counts.minute, counts.hour, counts.series),
        (121, 3, 2, 2)
    );
    assert_eq!(a.prune_points(crate::Tier::Raw, 6100).await.unwrap(), 101);
    assert_eq!(
        b.points(rss, crate::Tier::Raw, 0, 10_000)
            .await
            .unwrap()
            .len(),
        20
    );
    assert_eq!(a.prune_points(crate::Tier::Minute, 6060).await.unwrap(), 2);
}

pub async fn timeline_series_stop_at_the_cap((a, b): TimelinePair) {
    let key = |n: usize| crate::SeriesKey {
        node: format!("n{n}"),
        process: "host".into(),
        metric: "load1".into(),
    };
    let got = a.series_ids((0..3).map(key).collect(), 2).await.unwrap();
    assert!(
        got[0].is_some() && got[1].is_some() && got[2].is_none(),
        "{got:?}"
    );
    // Known ones still answer at the cap.
    assert_eq!(b.series_ids(vec![key(1)], 2).await.unwrap(), vec![got[1]]);
    assert_eq!(b.series().await.unwrap().len(), 2);
}

pub async fn timeline_changes_are_read_by_window_and_node((a, b): TimelinePair) {
    let change = |at_ms: u64, node: &str, peer: &str| crate::ChangeRow {
        at_ms,
        kind: if peer.is_empty() { "check" } else { "link" }.into(),
        subject: format!("{node}>{peer}"),
        node: node.into(),
        peer: peer.into(),
        state: "down".into(),
        previous: "up".into(),
        detail: "output \u{0} with a NUL".into(),
    };
    a.add_changes(vec![
        change(100, "web-1", ""),
        change(200, "db-1", "web-1"),
        change(300, "db-1", ""),
        change(400, "", ""),
        change(900, "web-1", ""),
    ])
    .await
    .unwrap();
    let got: Vec<u64> = b
        .changes(0, 500, vec!["web-1".into()], 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.at_ms)
        .collect();
    assert_eq!(
        got,
        vec![100, 200, 400],
        "its node, as observer or target, and none"
    );
    assert_eq!(b.changes(0, 500, vec![], 100).await.unwrap().len(), 1);
    assert_eq!(
        b.changes(0, 1000, vec!["web-1".into()], 2)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        b.changes(0, 100, vec!["web-1".into()], 9).await.unwrap()[0].detail,
        "output \u{0} with a NUL"
    );
    assert_eq!(a.prune_changes(300).await.unwrap(), 2);
}

pub async fn timeline_incident_updates_name_the_version_they_read((a, b): TimelinePair) {
    let (id, new) = a.add_incident(5, "{}".into(), vec![7]).await.unwrap();
    assert!(new);
    assert_eq!(b.incident_of(7).await.unwrap(), Some(id));
    let read = b.incident(id).await.unwrap().unwrap();
    assert_eq!((read.version, read.escalations.clone()), (1, vec![7]));
    assert!(b
        .update_incident(id, 1, None, "{\"a\":1}".into(), vec![8])
        .await
        .unwrap());
    assert!(
        !a.update_incident(id, 1, Some(9), "{\"b\":1}".into(), vec![])
            .await
            .unwrap(),
        "a write from a stale read is refused"
    );
    let now = a.incident(id).await.unwrap().unwrap();
    assert_eq!(
        (now.version, now.body.as_str(), now.escalations.clone()),
        (2, "{\"a\":1}", vec![7, 8])
    );
    // An escalation belongs to one incident: opening another for it (a
    // second server following the same journal) writes nothing and
    // answers with the incident that holds it.
    assert_eq!(
        b.add_incident(6, "{}".into(), vec![9, 8]).await.unwrap(),
        (id, false)
    );
    assert_eq!(a.incident_of(9).await.unwrap(), None);
    let (other, new) = b.add_incident(6, "{}".into(), vec![9]).await.unwrap();
    assert!(new);
    assert_eq!(a.incident_of(8).await.unwrap(), Some(id));
    assert_eq!(a.incident_of(9).await.unwrap(), Some(other));
    // Both servers at once, for one escalation: one incident.
    let (x, y) = tokio::join!(
        a.add_incident(7, "{}".into(), vec![20]),
        b.add_incident(7, "{}".into(), vec![20])
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.0, y.0, "one incident for escalation 20");
    assert!(x.1 != y.1, "exactly one of them opened it");
    let third = x.0;
    assert!(a
        .update_incident(third, 1, Some(11), "{}".into(), vec![])
        .await
        .unwrap());
    assert!(a
        .update_incident(other, 1, Some(10), "{}".into(), vec![])
        .await
        .unwrap());
    let open: Vec<i64> = b
        .incidents(true, 10)
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(open, vec![id]);
    let all: Vec<i64> = b
        .incidents(false, 10)
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(all, vec![third, other, id], "newest first");
    assert!(a.incident(999).await.unwrap().is_none());
}

pub async fn timeline_a_ballot_counts_once_and_only_while_voting((a, b): TimelinePair) {
    let person = |hash: &str, name: &str, claimed: bool| crate::ParticipantRow {
        token_hash: hash.into(),
        incident: 1,
        name: name.into(),
        seal_key: "k".into(),
        slot: None,
        claimed,
    };
    let people = vec![person("h-a", "ana", true), person("c-b", "bo", false)];
    assert!(a
        .add_postmortem(1, 1000, "{}".into(), people.clone())
        .await
        .unwrap());
    assert!(!b
        .add_postmortem(1, 1000, "{}".into(), people)
        .await
        .unwrap());
    // bo claims the seat once: the claim token stops working.
    assert!(b
        .claim_seat("c-b".into(), None, "h-b".into(), "k2".into(), None)
        .await
        .unwrap());
    assert!(!a
        .claim_seat("c-b".into(), None, "h-x".into(), "k3".into(), None)
        .await
        .unwrap());
    assert!(
        !a.claim_seat("h-a".into(), None, "h-y".into(), "k3".into(), None)
            .await
            .unwrap(),
        "a claimed seat is not claimed again"
    );
    let bo = a.participant("h-b".into()).await.unwrap().unwrap();
    assert_eq!(
        (bo.name.as_str(), bo.seal_key.as_str(), bo.claimed),
        ("bo", "k2", true)
    );
    assert!(a.participant("c-b".into()).await.unwrap().is_none());
    assert_eq!(
        a.cast_ballot("b1".into(), "s1111".into(), 5).await.unwrap(),
        crate::BallotOutcome::Unknown
    );
    let slots = vec![
        ("h-a".to_string(), "s-a".to_string()),
        ("h-b".into(), "s-b".into()),
    ];
    let fill = |h: &str| (h.to_string(), "u0000".to_string());
    assert!(!a
        .open_voting(1, 7, "{}".into(), vec![fill("b1")], slots.clone())
        .await
        .unwrap());
    assert!(b
        .open_voting(1, 1, "{}".into(), vec![fill("b2"), fill("b1")], slots)
        .await
        .unwrap());
    assert_eq!(
        a.participant("h-a".into())
            .await
            .unwrap()
            .unwrap()
            .slot
            .as_deref(),
        Some("s-a")
    );
    assert_eq!(a.participants(1).await.unwrap().len(), 2);
    assert_eq!(a.ballot("b1".into()).await.unwrap(), Some((1, false)));
    assert_eq!(
        a.cast_ballot("b1".into(), "s1111".into(), 5).await.unwrap(),
        crate::BallotOutcome::Cast(1)
    );
    assert_eq!(
        b.cast_ballot("b1".into(), "s2222".into(), 5).await.unwrap(),
        crate::BallotOutcome::Repeated
    );
    assert_eq!(
        b.cast_ballot("b2".into(), "s2222".into(), 1000)
            .await
            .unwrap(),
        crate::BallotOutcome::NotOpen,
        "expired"
    );
    let pm = b.postmortem(1).await.unwrap().unwrap();
    assert_eq!(
        (pm.phase.as_str(), pm.ballots, pm.ballots_cast),
        ("voting", 2, 1)
    );
    assert_eq!(
        b.ballot_contents(1).await.unwrap(),
        vec!["s1111".to_string()]
    );
    // Closing counts on the ballots it read: one more cast, read again.
    assert!(!a
        .close_voting(
            1,
            pm.version,
            "{}".into(),
            0,
            "u----".into(),
            "x----".into()
        )
        .await
        .unwrap());
    assert!(a
        .close_voting(
            1,
            pm.version,
            "{}".into(),
            1,
            "u----".into(),
            "x----".into()
        )
        .await
        .unwrap());
    assert!(b
        .participants(1)
        .await
        .unwrap()
        .iter()
        .all(|p| p.slot.is_none()));
    assert_eq!(
        b.cast_ballot("b2".into(), "s2222".into(), 5).await.unwrap(),
        crate::BallotOutcome::NotOpen
    );
    // Every content is overwritten; the count of cast ballots stays.
    assert_eq!(
        b.ballot_contents(1).await.unwrap(),
        vec!["x----".to_string()]
    );
    let pm = b.postmortem(1).await.unwrap().unwrap();
    assert_eq!((pm.phase.as_str(), pm.ballots_cast), ("closed", 1));
    assert_eq!(a.ballot("b2".into()).await.unwrap(), Some((1, false)));
}

pub async fn timeline_action_items_are_done_once((a, b): TimelinePair) {
    let action = |incident: i64| crate::ActionRow {
        id: 0,
        incident,
        proposal: 1,
        text: "a runbook".into(),
        owner: "bo".into(),
        due_ms: 9000,
        created_ms: 1000,
        done_ms: None,
        done_by: None,
    };
    let x = a.add_action(action(1)).await.unwrap();
    let y = b.add_action(action(2)).await.unwrap();
    assert_eq!(a.actions(true, None).await.unwrap().len(), 2);
    assert_eq!(a.actions(false, Some(2)).await.unwrap()[0].id, y);
    assert!(b.finish_action(x, 5000, "bo".into()).await.unwrap());
    assert!(
        !a.finish_action(x, 6000, "cy".into()).await.unwrap(),
        "done once"
    );
    let open: Vec<i64> = a
        .actions(true, None)
        .await
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(open, vec![y]);
    let done = &a.actions(false, Some(1)).await.unwrap()[0];
    assert_eq!(
        (done.done_ms, done.done_by.as_deref()),
        (Some(5000), Some("bo"))
    );
    // Reopened (by another server too), it is open again, once.
    assert!(b.reopen_action(x).await.unwrap());
    assert!(!a.reopen_action(x).await.unwrap(), "open already");
    assert!(!a.reopen_action(999_999).await.unwrap(), "no such item");
    let again = &a.actions(true, Some(1)).await.unwrap()[0];
    assert_eq!(
        (again.id, again.done_ms, again.done_by.clone()),
        (x, None, None)
    );
}
