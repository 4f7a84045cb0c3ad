//! Post-mortems through the learn stage's functions: the round, proposals,
//! a vote with one ballot each, the tally only after closing, action items;
//! every refusal a participant could run into; concurrent writers.

use std::sync::Arc;
use std::time::Duration;

use gemba_exec::Clock;
use gemba_store::SqliteStore;
use gemba_timeline::incident;
use gemba_timeline::postmortem::{self, Actor, Change, NewAction, Phase, PmError, Setup, Vote};
use gemba_timeline::TimelineHandle;

const T0: u64 = 1_795_400_000_000;

async fn with_incident() -> (TimelineHandle, i64) {
    let db = Arc::new(SqliteStore::in_memory().unwrap());
    let t = TimelineHandle::new(db, Clock::starting_at(T0));
    let id = incident::open(&t, "shop down", "major", "", "ops", &["web-1".into()])
        .await
        .unwrap();
    (t, id)
}

fn setup(people: &[&str]) -> Setup {
    Setup {
        facilitator: people[0].into(),
        note_keeper: people[1].into(),
        time_keeper: people[2].into(),
        participants: people.iter().map(|p| p.to_string()).collect(),
        open_for: None,
    }
}

fn share(s: &str, f: &str, b: &str) -> Change {
    Change::Share {
        success: Some(s.into()),
        failure: Some(f.into()),
        better: Some(b.into()),
    }
}

fn me(n: &str) -> Actor {
    Actor::Participant(n.into())
}

/// Starts a post-mortem and claims every seat, as each person would:
/// their own links, in the order named.
async fn started(t: &TimelineHandle, id: i64, s: &Setup) -> Vec<(String, String)> {
    let once = postmortem::start(t, id, s, "ops").await.unwrap();
    let mut links = Vec::new();
    for (name, token) in once {
        let (claimed_as, link) = postmortem::claim(t, &token).await.unwrap();
        assert_eq!(claimed_as, name);
        links.push((name, link));
    }
    links
}

#[tokio::test(start_paused = true)]
async fn a_round_a_vote_and_an_action_item() {
    let (t, id) = with_incident().await;
    let links = started(&t, id, &setup(&["ana", "bo", "cy", "dee"])).await;
    assert_eq!(links.len(), 4);
    let link = |n: &str| links.iter().find(|(p, _)| p == n).unwrap().1.clone();
    assert_eq!(
        postmortem::seat(&t, &link("bo")).await.unwrap().name,
        "bo",
        "a link opens its own seat"
    );
    // A second post-mortem for the same incident is refused.
    let again = postmortem::start(&t, id, &setup(&["ana", "bo", "cy"]), "ops").await;
    assert!(matches!(again, Err(PmError::Conflict(_))), "{again:?}");

    for (n, i) in [("ana", 0), ("bo", 1), ("cy", 2)] {
        postmortem::change(&t, id, &me(n), &share(&format!("s{i}"), "f", "b"))
            .await
            .unwrap();
    }
    let pm = postmortem::get(&t, id).await.unwrap().unwrap();
    assert_eq!(pm.missing(), vec!["dee"], "participation is known");
    for (n, text) in [
        ("ana", "alert on pool size"),
        ("dee", "canary deploys"),
        ("bo", "runbook for restarts"),
    ] {
        postmortem::change(&t, id, &me(n), &Change::Propose(text.into()))
            .await
            .unwrap();
    }
    // Voting opens by the facilitator only.
    let refused = postmortem::change(&t, id, &me("bo"), &Change::OpenVoting).await;
    assert!(matches!(refused, Err(PmError::Forbidden(_))), "{refused:?}");
    let pm = postmortem::change(&t, id, &me("ana"), &Change::OpenVoting)
        .await
        .unwrap();
    assert_eq!(pm.phase, Phase::Voting);
    assert_eq!((pm.ballots, pm.ballots_cast), (4, 0));
    let late = postmortem::change(&t, id, &me("cy"), &Change::Propose("more".into())).await;
    assert!(matches!(late, Err(PmError::Conflict(_))), "{late:?}");

    // Each participant's seat holds one ballot, all different.
    let mut ballots = Vec::new();
    for n in ["ana", "bo", "cy", "dee"] {
        let seat = postmortem::seat(&t, &link(n)).await.unwrap();
        assert!(!seat.ballot_cast);
        ballots.push(seat.ballot.expect("a ballot while voting"));
    }
    let mut unique = ballots.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4);
    // No tally while voting.
    let pm = postmortem::get(&t, id).await.unwrap().unwrap();
    assert!(postmortem::tally(&t, &pm).await.unwrap().is_none());

    for (b, approve) in ballots
        .iter()
        .zip([vec![1, 3], vec![3], vec![2, 3], vec![]])
    {
        postmortem::cast(&t, b, &Vote { approve }, None)
            .await
            .unwrap();
    }
    assert!(postmortem::seat(&t, &link("cy")).await.unwrap().ballot_cast);
    let twice = postmortem::cast(&t, &ballots[0], &Vote { approve: vec![2] }, None).await;
    assert!(
        matches!(&twice, Err(PmError::Conflict(m)) if m.contains("cast already")),
        "{twice:?}"
    );
    let wrong = postmortem::cast(&t, &"0".repeat(64), &Vote { approve: vec![1] }, None).await;
    assert!(matches!(wrong, Err(PmError::NotFound(_))), "{wrong:?}");
    let garbage = postmortem::cast(&t, "../x", &Vote { approve: vec![1] }, None).await;
    assert!(matches!(garbage, Err(PmError::NotFound(_))), "{garbage:?}");
    // A link token is not a ballot, a ballot not a link.
    assert!(postmortem::cast(&t, &link("ana"), &Vote::default(), None)
        .await
        .is_err());
    assert!(postmortem::seat(&t, &ballots[0]).await.is_err());

    // Closing opens the sealed ballots: only the facilitator's own link
    // does it, not an operator, not another participant.
    let op = postmortem::change(&t, id, &Actor::Operator("ops".into()), &Change::CloseVoting).await;
    assert!(
        matches!(&op, Err(PmError::Forbidden(m)) if m.contains("facilitator's own link")),
        "{op:?}"
    );
    let other = postmortem::close_with_link(&t, &link("bo")).await;
    assert!(matches!(other, Err(PmError::Forbidden(_))), "{other:?}");
    let pm = postmortem::close_with_link(&t, &link("ana")).await.unwrap();
    assert_eq!(pm.phase, Phase::Closed);
    assert_eq!(pm.ballots_cast, 4);
    // Closing forgets the sealed slots: a link no longer shows a ballot.
    assert!(postmortem::seat(&t, &link("dee"))
        .await
        .unwrap()
        .ballot
        .is_none());

    let tally = postmortem::tally(&t, &pm).await.unwrap().unwrap();
    let counts: Vec<(i64, u64, bool)> = tally
        .iter()
        .map(|c| (c.proposal, c.approvals, c.winner))
        .collect();
    assert_eq!(counts, vec![(3, 3, true), (1, 1, false), (2, 1, false)]);

    let write = postmortem::change(&t, id, &me("dee"), &share("a", "b", "c")).await;
    assert!(
        matches!(&write, Err(PmError::Conflict(m)) if m.contains("closed")),
        "{write:?}"
    );
    let action = NewAction {
        proposal: 3,
        owner: "bo".into(),
        due: Some("2026-12-15".into()),
    };
    let refused = postmortem::add_action(&t, id, &me("bo"), &action).await;
    assert!(matches!(refused, Err(PmError::Forbidden(_))), "{refused:?}");
    let aid = postmortem::add_action(&t, id, &me("ana"), &action)
        .await
        .unwrap();
    let twice = postmortem::add_action(&t, id, &me("ana"), &action).await;
    assert!(matches!(twice, Err(PmError::Conflict(_))), "{twice:?}");
    let open = t.store().actions(true, None).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].text, "runbook for restarts");
    assert_eq!(open[0].owner, "bo");
    postmortem::finish_action(&t, aid, "bo").await.unwrap();
    assert!(t.store().actions(true, None).await.unwrap().is_empty());
    assert!(matches!(
        postmortem::finish_action(&t, aid, "bo").await,
        Err(PmError::Conflict(_))
    ));
    assert!(matches!(
        postmortem::finish_action(&t, 999, "bo").await,
        Err(PmError::NotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn ballots_cast_after_closing_or_expiry_are_refused() {
    let (t, id) = with_incident().await;
    let mut s = setup(&["ana", "bo", "cy"]);
    s.open_for = Some("2h".into());
    let links = started(&t, id, &s).await;
    postmortem::change(&t, id, &me("bo"), &Change::Propose("x".into()))
        .await
        .unwrap();
    // Voting needs something to vote on; it is there now.
    postmortem::change(&t, id, &Actor::Operator("ops".into()), &Change::OpenVoting)
        .await
        .unwrap();
    let ballot = |n: usize| {
        let t = t.clone();
        let l = links[n].1.clone();
        async move { postmortem::seat(&t, &l).await.unwrap().ballot.unwrap() }
    };
    let (b0, b1) = (ballot(0).await, ballot(1).await);
    postmortem::cast(&t, &b0, &Vote { approve: vec![1] }, None)
        .await
        .unwrap();
    let bad = postmortem::cast(&t, &b1, &Vote { approve: vec![7] }, None).await;
    assert!(
        matches!(&bad, Err(PmError::Invalid(m)) if m.contains("no proposal 7")),
        "{bad:?}"
    );
    let dup = postmortem::cast(
        &t,
        &b1,
        &Vote {
            approve: vec![1, 1],
        },
        None,
    )
    .await;
    assert!(matches!(dup, Err(PmError::Invalid(_))), "{dup:?}");
    // A refused ballot was not used up.
    tokio::time::advance(Duration::from_secs(7201)).await;
    let expired = postmortem::cast(&t, &b1, &Vote { approve: vec![1] }, None).await;
    assert!(
        matches!(&expired, Err(PmError::Conflict(m)) if m.contains("expired")),
        "{expired:?}"
    );
    let write = postmortem::change(&t, id, &me("cy"), &share("a", "b", "c")).await;
    assert!(
        matches!(&write, Err(PmError::Conflict(m)) if m.contains("expired")),
        "{write:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_closed_vote_takes_no_late_ballot() {
    let (t, id) = with_incident().await;
    let links = started(&t, id, &setup(&["ana", "bo", "cy"])).await;
    postmortem::change(&t, id, &me("cy"), &Change::Propose("x".into()))
        .await
        .unwrap();
    postmortem::change(&t, id, &me("ana"), &Change::OpenVoting)
        .await
        .unwrap();
    let late = postmortem::seat(&t, &links[2].1)
        .await
        .unwrap()
        .ballot
        .unwrap();
    postmortem::close_with_link(&t, &links[0].1).await.unwrap();
    let r = postmortem::cast(&t, &late, &Vote { approve: vec![1] }, None).await;
    assert!(
        matches!(&r, Err(PmError::Conflict(m)) if m.contains("closed")),
        "{r:?}"
    );
    let pm = postmortem::get(&t, id).await.unwrap().unwrap();
    assert_eq!(pm.ballots_cast, 0);
    let tally = postmortem::tally(&t, &pm).await.unwrap().unwrap();
    assert!(tally.iter().all(|c| c.approvals == 0 && !c.winner));
}

#[tokio::test]
async fn writers_at_once_all_land() {
    let (t, id) = with_incident().await;
    let people: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    postmortem::start(&t, id, &setup(&refs), "ops")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for (i, p) in people.iter().enumerate() {
        let (t, p) = (t.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            postmortem::change(&t, id, &me(&p), &share(&format!("ok {i}"), "f", "b"))
                .await
                .unwrap();
            postmortem::change(&t, id, &me(&p), &Change::Propose(format!("idea {i}")))
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let pm = postmortem::get(&t, id).await.unwrap().unwrap();
    assert!(pm.missing().is_empty(), "lost a share: {:?}", pm.missing());
    assert_eq!(pm.body.proposals.len(), 12, "lost a proposal");
    let mut ids: Vec<i64> = pm.body.proposals.iter().map(|p| p.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 12, "proposal ids are unique");
}

#[tokio::test]
async fn bad_input_is_refused_by_name() {
    let (t, id) = with_incident().await;
    let bad_name = postmortem::start(&t, id, &setup(&["ana", "bo", "<b>"]), "ops").await;
    assert!(
        matches!(&bad_name, Err(PmError::Invalid(m)) if m.contains("time_keeper")),
        "{bad_name:?}"
    );
    let mut s = setup(&["ana", "bo", "cy"]);
    s.open_for = Some("400d".into());
    assert!(matches!(
        postmortem::start(&t, id, &s, "ops").await,
        Err(PmError::Invalid(_))
    ));
    assert!(matches!(
        postmortem::start(&t, 99, &setup(&["ana", "bo", "cy"]), "ops").await,
        Err(PmError::NotFound(_))
    ));
    postmortem::start(&t, id, &setup(&["ana", "bo", "cy"]), "ops")
        .await
        .unwrap();
    let long = postmortem::change(&t, id, &me("ana"), &share(&"x".repeat(2001), "f", "b")).await;
    assert!(
        matches!(&long, Err(PmError::Invalid(m)) if m.contains("success")),
        "{long:?}"
    );
    let esc = postmortem::change(&t, id, &me("ana"), &share("ok\u{1b}[2J", "f", "b")).await;
    assert!(matches!(esc, Err(PmError::Invalid(_))), "{esc:?}");
    let stranger = postmortem::change(&t, id, &me("zed"), &share("a", "b", "c")).await;
    assert!(
        matches!(stranger, Err(PmError::Forbidden(_))),
        "{stranger:?}"
    );
    let notes = postmortem::change(&t, id, &me("ana"), &Change::Notes("n".into())).await;
    assert!(
        matches!(&notes, Err(PmError::Forbidden(m)) if m.contains("note keeper")),
        "{notes:?}"
    );
    postmortem::change(&t, id, &me("bo"), &Change::Notes("we met".into()))
        .await
        .unwrap();
    let timer = Change::Timer {
        section: "round".into(),
        minutes: 0,
    };
    assert!(matches!(
        postmortem::change(&t, id, &me("cy"), &timer).await,
        Err(PmError::Invalid(_))
    ));
    let timer = Change::Timer {
        section: "round".into(),
        minutes: 10,
    };
    assert!(matches!(
        postmortem::change(&t, id, &me("ana"), &timer).await,
        Err(PmError::Forbidden(_))
    ));
    let pm = postmortem::change(&t, id, &me("cy"), &timer).await.unwrap();
    assert_eq!(pm.body.timer.unwrap().minutes, 10);
    // Nothing proposed: the vote is skipped and the post-mortem closes
    // (the notes say so) instead of staying open for ever.
    let closed = postmortem::change(&t, id, &me("ana"), &Change::OpenVoting)
        .await
        .unwrap();
    assert_eq!(closed.phase, postmortem::Phase::Closed);
    assert!(closed.body.vote_skipped);
    let i = gemba_timeline::incident::get(&t, id)
        .await
        .unwrap()
        .unwrap();
    let md = gemba_timeline::postmortem_export::markdown(&i, &closed, &[], &[], None, &[]);
    assert!(
        md.contains("No proposals were made: the vote was skipped."),
        "{md}"
    );
    let bad_link = postmortem::seat(&t, &"f".repeat(64)).await;
    assert!(matches!(bad_link, Err(PmError::NotFound(_))));
}

#[tokio::test(start_paused = true)]
async fn a_one_time_link_claims_its_seat_once_and_a_ballot_follows_the_claim() {
    let (t, id) = with_incident().await;
    let once = postmortem::start(&t, id, &setup(&["ana", "bo", "cy"]), "ops")
        .await
        .unwrap();
    let token = |n: &str| once.iter().find(|(p, _)| p == n).unwrap().1.clone();
    // A one-time link opens no seat: it claims one.
    let r = postmortem::seat(&t, &token("bo")).await;
    assert!(
        matches!(&r, Err(PmError::Unclaimed(n)) if n == "bo"),
        "{r:?}"
    );
    let (_, ana) = postmortem::claim(&t, &token("ana")).await.unwrap();
    let (name, bo) = postmortem::claim(&t, &token("bo")).await.unwrap();
    assert_eq!(name, "bo");
    assert_ne!(bo, token("bo"), "the seat's link is new");
    assert_eq!(postmortem::seat(&t, &bo).await.unwrap().name, "bo");
    // Claimed once: the one-time link is dead, whoever tries.
    let again = postmortem::claim(&t, &token("bo")).await;
    assert!(matches!(again, Err(PmError::NotFound(_))), "{again:?}");
    assert!(postmortem::seat(&t, &token("bo")).await.is_err());
    // cy claims only once voting is open: their ballot follows.
    postmortem::change(&t, id, &me("bo"), &Change::Propose("x".into()))
        .await
        .unwrap();
    postmortem::change(&t, id, &me("ana"), &Change::OpenVoting)
        .await
        .unwrap();
    let (_, cy) = postmortem::claim(&t, &token("cy")).await.unwrap();
    let ballot = postmortem::seat(&t, &cy).await.unwrap().ballot.unwrap();
    postmortem::cast(&t, &ballot, &Vote { approve: vec![1] }, None)
        .await
        .unwrap();
    let pm = postmortem::close_with_link(&t, &ana).await.unwrap();
    let tally = postmortem::tally(&t, &pm).await.unwrap().unwrap();
    assert_eq!((tally[0].approvals, tally[0].winner), (1, true));
}

#[tokio::test(start_paused = true)]
async fn voting_opens_only_once_the_facilitator_has_claimed_their_seat() {
    let (t, id) = with_incident().await;
    let once = postmortem::start(&t, id, &setup(&["ana", "bo", "cy"]), "ops")
        .await
        .unwrap();
    postmortem::change(&t, id, &me("bo"), &Change::Propose("x".into()))
        .await
        .unwrap();
    let r = postmortem::change(&t, id, &Actor::Operator("ops".into()), &Change::OpenVoting).await;
    assert!(
        matches!(&r, Err(PmError::Conflict(m)) if m.contains("has not claimed")),
        "{r:?}"
    );
    postmortem::claim(&t, &once[0].1).await.unwrap();
    let pm = postmortem::change(&t, id, &Actor::Operator("ops".into()), &Change::OpenVoting)
        .await
        .unwrap();
    assert_eq!(pm.phase, Phase::Voting);
}
