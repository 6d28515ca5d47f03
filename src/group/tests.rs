//! State-machine tests with a fake clock.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::state::*;
use super::*;

fn req(member_id: &str, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(30),
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(p.to_string())))
            .collect(),
        require_known_member_id: true,
    }
}

fn join(g: &mut Group, r: JoinRequest, now: Instant) -> oneshot::Receiver<JoinReply> {
    let (tx, rx) = oneshot::channel();
    g.join(r, now, tx);
    rx
}

fn sync(
    g: &mut Group,
    id: &str,
    generation: i32,
    a: Vec<(String, Bytes)>,
    now: Instant,
) -> oneshot::Receiver<SyncReply> {
    let (tx, rx) = oneshot::channel();
    g.sync(id, generation, a, now, tx);
    rx
}

/// KIP-394 first round trip: returns the id the broker handed out.
fn new_id(g: &mut Group, now: Instant) -> String {
    match join(g, req("", &["range"]), now).try_recv() {
        Ok(Err(GroupError::MemberIdRequired(id))) => id,
        other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
    }
}

#[test]
fn two_members_join_sync_and_leave() {
    let t0 = Instant::now();
    let mut g = Group::new(Duration::ZERO);
    let a = new_id(&mut g, t0);
    let mut ja = join(&mut g, req(&a, &["range", "roundrobin"]), t0);
    // Alone and no initial delay: a's join completes at once.
    let ra = ja.try_recv().expect("answered").expect("ok");
    assert_eq!((ra.generation, ra.leader.as_str()), (1, a.as_str()));
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    let mut sa = sync(&mut g, &a, 1, vec![(a.clone(), Bytes::from("A1"))], t0);
    assert_eq!(sa.try_recv().expect("sync").expect("ok").assignment, "A1");
    assert_eq!(g.state(), GroupState::Stable);

    // b joins: a must rejoin; heartbeats say so.
    let b = new_id(&mut g, t0);
    let mut jb = join(&mut g, req(&b, &["roundrobin", "range"]), t0);
    assert!(jb.try_recv().is_err(), "b waits for a");
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(g.heartbeat(&a, 1, t0), Err(GroupError::RebalanceInProgress));
    let mut ja = join(&mut g, req(&a, &["range", "roundrobin"]), t0);
    let ra = ja.try_recv().expect("a answered").expect("ok");
    let rb = jb.try_recv().expect("b answered").expect("ok");
    assert_eq!((ra.generation, rb.generation), (2, 2));
    assert_eq!(ra.leader, a, "the leader stays");
    assert_eq!(ra.members.len(), 2, "leader sees the members");
    assert!(rb.members.is_empty(), "followers do not");
    // One vote each: either is right, but all members get the same one.
    assert!(["range", "roundrobin"].contains(&ra.protocol_name.as_str()));
    assert_eq!(ra.protocol_name, rb.protocol_name);

    // A follower's sync waits for the leader's.
    let mut sb = sync(&mut g, &b, 2, vec![], t0);
    assert!(sb.try_recv().is_err());
    assert_eq!(
        sync(&mut g, &b, 1, vec![], t0).try_recv().expect("now"),
        Err(GroupError::IllegalGeneration)
    );
    let mut sa = sync(
        &mut g,
        &a,
        2,
        vec![(a.clone(), "A".into()), (b.clone(), "B".into())],
        t0,
    );
    assert_eq!(sa.try_recv().expect("a").expect("ok").assignment, "A");
    assert_eq!(sb.try_recv().expect("b").expect("ok").assignment, "B");
    assert_eq!(g.heartbeat(&b, 2, t0), Ok(()));

    // b leaves: a rebalances alone into generation 3.
    let out = g.leave(&[(b.clone(), None), ("nobody".into(), None)], t0);
    assert_eq!(out[0], Ok(b.clone()));
    assert_eq!(out[1], Err(GroupError::UnknownMemberId));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    let mut ja = join(&mut g, req(&a, &["range"]), t0);
    assert_eq!(ja.try_recv().expect("a").expect("ok").generation, 3);
    g.leave(&[(a.clone(), None)], t0);
    assert_eq!(g.state(), GroupState::Empty);
    assert!(g.is_empty());
}

#[test]
fn error_table() {
    let t0 = Instant::now();
    let mut g = Group::new(Duration::ZERO);
    let a = new_id(&mut g, t0);
    join(&mut g, req(&a, &["range"]), t0);
    sync(&mut g, &a, 1, vec![], t0);
    // (what, result, expected)
    let cases: Vec<(&str, Result<()>, Result<()>)> = vec![
        ("heartbeat ok", g.heartbeat(&a, 1, t0), Ok(())),
        (
            "heartbeat unknown member",
            g.heartbeat("x", 1, t0),
            Err(GroupError::UnknownMemberId),
        ),
        (
            "heartbeat old generation",
            g.heartbeat(&a, 0, t0),
            Err(GroupError::IllegalGeneration),
        ),
        ("commit ok", g.validate_commit(&a, None, 1, t0), Ok(())),
        (
            "simple commit to a group with members",
            g.validate_commit("", None, -1, t0),
            Err(GroupError::UnknownMemberId),
        ),
        (
            "a generation but no member id",
            g.validate_commit("", None, 1, t0),
            Err(GroupError::UnknownMemberId),
        ),
        (
            "commit unknown member",
            g.validate_commit("x", None, 1, t0),
            Err(GroupError::UnknownMemberId),
        ),
        ("delete non-empty", g.kill(), Err(GroupError::NonEmptyGroup)),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, want, "{what}");
    }
    assert_eq!(
        join(&mut g, req("stranger", &["range"]), t0)
            .try_recv()
            .expect("now"),
        Err(GroupError::UnknownMemberId)
    );
    let mut other = req("", &["range"]);
    other.protocol_type = "connect".into();
    assert_eq!(
        join(&mut g, other, t0).try_recv().expect("now"),
        Err(GroupError::InconsistentGroupProtocol)
    );
    let empty = Group::new(Duration::ZERO);
    let mut empty = empty;
    assert_eq!(
        empty.validate_commit("", None, -1, t0),
        Ok(()),
        "simple commit"
    );
}

#[test]
fn silent_member_expires_and_the_group_rebalances() {
    let t0 = Instant::now();
    let mut g = Group::new(Duration::ZERO);
    let a = new_id(&mut g, t0);
    let mut ja = join(&mut g, req(&a, &["range"]), t0);
    ja.try_recv().expect("a").expect("ok");
    let b = new_id(&mut g, t0);
    let _jb = join(&mut g, req(&b, &["range"]), t0);
    let mut ja = join(&mut g, req(&a, &["range"]), t0);
    ja.try_recv().expect("a").expect("ok");
    let mut sa = sync(&mut g, &a, 2, vec![], t0);
    sa.try_recv().expect("a").expect("ok");
    // b got its join answer but never syncs nor heartbeats; a heartbeats.
    let t9 = t0 + Duration::from_secs(9);
    assert_eq!(g.heartbeat(&a, 2, t9), Ok(()));
    g.tick(t0 + Duration::from_secs(11));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&b, 2, t0 + Duration::from_secs(11)),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn rebalance_deadline_drops_members_that_did_not_rejoin() {
    let t0 = Instant::now();
    let mut g = Group::new(Duration::ZERO);
    let a = new_id(&mut g, t0);
    join(&mut g, req(&a, &["range"]), t0);
    sync(&mut g, &a, 1, vec![], t0);
    let b = new_id(&mut g, t0);
    let mut jb = join(&mut g, req(&b, &["range"]), t0);
    // a keeps heartbeating (REBALANCE_IN_PROGRESS) but never rejoins.
    for s in [8, 16, 24] {
        let t = t0 + Duration::from_secs(s);
        assert_eq!(g.heartbeat(&a, 1, t), Err(GroupError::RebalanceInProgress));
        g.tick(t);
    }
    g.tick(t0 + Duration::from_secs(29));
    assert!(jb.try_recv().is_err());
    g.tick(t0 + Duration::from_secs(30));
    let rb = jb.try_recv().expect("b").expect("ok");
    assert_eq!((rb.generation, rb.leader.as_str()), (2, b.as_str()));
    assert_eq!(rb.members.len(), 1);
}

#[test]
fn initial_delay_waits_for_more_members() {
    let t0 = Instant::now();
    let mut g = Group::new(Duration::from_secs(3));
    let a = new_id(&mut g, t0);
    let mut ja = join(&mut g, req(&a, &["range"]), t0);
    g.tick(t0 + Duration::from_secs(2));
    assert!(ja.try_recv().is_err(), "still in the initial delay");
    let b = new_id(&mut g, t0 + Duration::from_secs(2));
    let mut jb = join(&mut g, req(&b, &["range"]), t0 + Duration::from_secs(2));
    // The newcomer extends the delay to t0+5s.
    g.tick(t0 + Duration::from_secs(4));
    assert!(ja.try_recv().is_err());
    g.tick(t0 + Duration::from_secs(5));
    assert_eq!(ja.try_recv().expect("a").expect("ok").generation, 1);
    assert_eq!(jb.try_recv().expect("b").expect("ok").generation, 1);
}

/// Issue 5's sequence, as two librdkafka 2.0 balanced consumers (kcat -G)
/// drive it (from their `debug=cgrp,protocol` trace): both join a new group
/// together through KIP-394, the leader assigns the one partition to one
/// member, the assignee commits, then dies silently (kill -9) and the
/// survivor rebalances alone and commits in the next generation. Every
/// commit of the current generation's members must be accepted, also while
/// the group prepares the next rebalance (as Kafka).
#[test]
fn two_new_members_assignee_commits_then_dies_and_the_survivor_takes_over() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    let mut g = Group::new(s(3));
    let a = new_id(&mut g, t0);
    let b = new_id(&mut g, t0);
    let mut ja = join(&mut g, req(&a, &["range", "roundrobin"]), t0);
    let mut jb = join(&mut g, req(&b, &["range", "roundrobin"]), t0 + ms(5));
    g.tick(t0 + s(2));
    assert!(
        ja.try_recv().is_err() && jb.try_recv().is_err(),
        "initial delay"
    );
    g.tick(t0 + s(3) + ms(5));
    let ra = ja.try_recv().expect("a").expect("ok");
    let rb = jb.try_recv().expect("b").expect("ok");
    assert_eq!((ra.generation, rb.generation), (1, 1), "one generation");
    assert_eq!(ra.leader, rb.leader);
    let (owner, survivor) = if ra.leader == a { (a, b) } else { (b, a) };
    let t = t0 + s(3) + ms(10);
    // The leader gives the partition to itself, nothing to the other.
    let mut sf = sync(&mut g, &survivor, 1, vec![], t);
    let mut so = sync(
        &mut g,
        &owner,
        1,
        vec![(owner.clone(), "P0".into()), (survivor.clone(), "".into())],
        t,
    );
    assert_eq!(so.try_recv().expect("owner").expect("ok").assignment, "P0");
    assert_eq!(sf.try_recv().expect("other").expect("ok").assignment, "");
    assert_eq!(g.state(), GroupState::Stable);
    for (who, at) in [(&owner, 500), (&survivor, 500), (&owner, 1000)] {
        assert_eq!(g.heartbeat(who, 1, t + ms(at)), Ok(()));
    }
    // Auto-commits: the assignee's, and an (empty) one from the other.
    assert_eq!(g.validate_commit(&owner, None, 1, t + s(1)), Ok(()));
    assert_eq!(g.validate_commit(&survivor, None, 1, t + s(1)), Ok(()));

    // kill -9 the owner: only the survivor heartbeats from now on.
    for i in 1..=12 {
        g.tick(t + s(1) + ms(500 * i));
        assert_eq!(g.heartbeat(&survivor, 1, t + s(1) + ms(500 * i)), Ok(()));
    }
    let t = t + s(1) + s(10) + ms(100);
    g.tick(t);
    assert_eq!(g.state(), GroupState::PreparingRebalance, "owner expired");
    assert_eq!(
        g.heartbeat(&survivor, 1, t),
        Err(GroupError::RebalanceInProgress)
    );
    // Kafka accepts the current generation's commits while preparing.
    assert_eq!(g.validate_commit(&survivor, None, 1, t), Ok(()));
    assert_eq!(
        g.validate_commit(&owner, None, 1, t),
        Err(GroupError::UnknownMemberId)
    );
    let mut js = join(&mut g, req(&survivor, &["range", "roundrobin"]), t);
    let rs = js.try_recv().expect("survivor").expect("ok");
    assert_eq!((rs.generation, rs.leader.as_str()), (2, survivor.as_str()));
    assert_eq!(rs.members.len(), 1);
    assert_eq!(
        g.validate_commit(&survivor, None, 2, t),
        Err(GroupError::RebalanceInProgress),
        "no commits between join and sync"
    );
    let mut ss = sync(
        &mut g,
        &survivor,
        2,
        vec![(survivor.clone(), "P0".into())],
        t,
    );
    assert_eq!(ss.try_recv().expect("s").expect("ok").assignment, "P0");
    assert_eq!(g.validate_commit(&survivor, None, 2, t), Ok(()));
    assert_eq!(
        g.validate_commit(&survivor, None, 1, t),
        Err(GroupError::IllegalGeneration)
    );
}

#[test]
fn static_member_rejoining_fences_its_old_id() {
    let t0 = Instant::now();
    let mut g = Group::new(Duration::ZERO);
    let mut r = req("", &["range"]);
    r.instance_id = Some("i1".into());
    let mut j1 = join(&mut g, r.clone(), t0);
    let first = j1.try_recv().expect("j1").expect("ok").member_id;
    sync(&mut g, &first, 1, vec![], t0);
    let mut j2 = join(&mut g, r, t0);
    let second = j2.try_recv().expect("j2").expect("ok").member_id;
    assert_ne!(first, second);
    assert_eq!(g.heartbeat(&first, 2, t0), Err(GroupError::UnknownMemberId));
    assert_eq!(
        g.leave(&[(String::new(), Some("i1".into()))], t0),
        vec![Ok(second)]
    );
}

#[test]
fn static_follower_restart_keeps_its_assignment_without_rebalance() {
    let t0 = Instant::now();
    let mut g = Group::new(Duration::ZERO);
    fn stat_as(member: &str, inst: &str) -> JoinRequest {
        let mut r = req(member, &["range"]);
        r.instance_id = Some(inst.into());
        r
    }
    let stat = |inst: &str| stat_as("", inst);
    let a = join(&mut g, stat("ia"), t0)
        .try_recv()
        .expect("a")
        .expect("ok")
        .member_id;
    sync(&mut g, &a, 1, vec![], t0);
    let mut jb = join(&mut g, stat("ib"), t0);
    let mut ja = join(&mut g, stat_as(&a, "ia"), t0);
    ja.try_recv().expect("a").expect("ok");
    let b = jb.try_recv().expect("b").expect("ok").member_id;
    let mut sb = sync(&mut g, &b, 2, vec![], t0);
    sync(
        &mut g,
        &a,
        2,
        vec![(a.clone(), "A".into()), (b.clone(), "B".into())],
        t0,
    );
    sb.try_recv().expect("b").expect("ok");
    assert_eq!(g.state(), GroupState::Stable);

    // b restarts: new member id, same generation, its old assignment.
    let rb = join(&mut g, stat("ib"), t0)
        .try_recv()
        .expect("b again")
        .expect("ok");
    assert_ne!(rb.member_id, b);
    assert_eq!((rb.generation, rb.leader.as_str()), (2, a.as_str()));
    assert_eq!(g.state(), GroupState::Stable, "no rebalance");
    let got = sync(&mut g, &rb.member_id, 2, vec![], t0)
        .try_recv()
        .expect("sync")
        .expect("ok");
    assert_eq!(got.assignment, "B");
    assert_eq!(g.heartbeat(&a, 2, t0), Ok(()), "the leader saw nothing");
    assert_eq!(g.heartbeat(&b, 2, t0), Err(GroupError::UnknownMemberId));
}

#[test]
fn subscription_metadata_parses() {
    let md = [0u8, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c', 0xff];
    assert_eq!(
        parse_subscription(&md),
        Some(vec!["a".to_string(), "bc".to_string()])
    );
    assert_eq!(parse_subscription(&[0, 1, 0x7f, 0xff, 0xff, 0xff]), None);
}

#[test]
fn rendezvous_moves_only_the_lost_brokers_groups() {
    use crate::controller::image::BrokerRegistration;
    let mut img = MetadataImage::default();
    for id in 1..=3 {
        std::sync::Arc::make_mut(&mut img.brokers).insert(
            id,
            BrokerRegistration {
                id,
                incarnation_id: uuid::Uuid::nil(),
                epoch: 1,
                endpoints: vec![],
                rack: None,
                fenced: false,
                fenced_at: 0,
                coordinator: true,
                fence_cause: None,
            },
        );
    }
    let groups: Vec<String> = (0..300).map(|i| format!("g{i}")).collect();
    let before: Vec<i32> = groups
        .iter()
        .map(|g| coordinator_for(&img, g).expect("some broker"))
        .collect();
    for id in 1..=3 {
        let n = before.iter().filter(|b| **b == id).count();
        assert!(n > 50, "broker {id} coordinates only {n} of 300 groups");
    }
    if let Some(b) = std::sync::Arc::make_mut(&mut img.brokers).get_mut(&2) {
        b.fenced = true;
    }
    for (g, was) in groups.iter().zip(&before) {
        let now = coordinator_for(&img, g).expect("some broker");
        assert_ne!(now, 2);
        if *was != 2 {
            assert_eq!(now, *was, "{g} moved though its broker lives");
        }
    }
    assert_eq!(coordinator_for(&MetadataImage::default(), "g"), None);
}

#[test]
fn a_stored_generation_resumes_on_another_coordinator() {
    let t0 = Instant::now();
    let mut g = Group::new(Duration::ZERO);
    assert!(!g.take_unsaved(), "nothing to store yet");
    let a = new_id(&mut g, t0);
    let mut ja = join(&mut g, req(&a, &["range"]), t0);
    ja.try_recv().expect("a alone").expect("ok");
    let b = new_id(&mut g, t0);
    let mut jb = join(&mut g, req(&b, &["range"]), t0);
    let mut ja = join(&mut g, req(&a, &["range"]), t0);
    let ra = ja.try_recv().expect("a").expect("ok");
    let rb = jb.try_recv().expect("b").expect("ok");
    let (leader, follower) = if ra.leader == a { (&a, &b) } else { (&b, &a) };
    assert_eq!(ra.generation, rb.generation);
    let generation = ra.generation;
    assert!(
        !g.take_unsaved(),
        "a generation is stored once it completes"
    );
    let mut sf = sync(&mut g, follower, generation, vec![], t0);
    let assignments = vec![
        (leader.clone(), Bytes::from("L")),
        (follower.clone(), Bytes::from("F")),
    ];
    let mut sl = sync(&mut g, leader, generation, assignments, t0);
    sl.try_recv().expect("leader").expect("ok");
    sf.try_recv().expect("follower").expect("ok");
    assert!(g.take_unsaved(), "Stable: store it");
    assert!(!g.take_unsaved(), "once");

    let stored = g.snapshot(42);
    assert_eq!(stored.generation, generation);
    assert_eq!(stored.written_at_ms, 42);
    assert_eq!(stored.members.len(), 2);

    // Another coordinator, later: same generation, members and
    // assignments; heartbeats and commits of that generation work.
    let t1 = t0 + Duration::from_secs(60);
    let mut h = Group::restore(&stored, Duration::ZERO, t1);
    assert_eq!(h.state(), GroupState::Stable);
    assert_eq!(h.generation(), generation);
    assert_eq!(h.heartbeat(follower, generation, t1), Ok(()));
    assert_eq!(h.validate_commit(leader, None, generation, t1), Ok(()));
    assert_eq!(
        h.heartbeat(follower, generation - 1, t1),
        Err(GroupError::IllegalGeneration)
    );
    let d = h.describe();
    assert_eq!(d.protocol, "range");
    let mut got: Vec<(String, Bytes)> = d
        .members
        .iter()
        .map(|m| (m.member_id.clone(), m.assignment.clone()))
        .collect();
    got.sort();
    let mut want = vec![
        (leader.clone(), Bytes::from("L")),
        (follower.clone(), Bytes::from("F")),
    ];
    want.sort();
    assert_eq!(got, want);
    // Sessions start afresh at the restore: one that stays silent expires.
    h.tick(t1 + Duration::from_secs(5));
    assert_eq!(h.state(), GroupState::Stable);
    h.tick(t1 + Duration::from_secs(11));
    assert_eq!(h.state(), GroupState::Empty, "both sessions expired");
    assert!(h.take_unsaved(), "Empty: store it");
    let empty = h.snapshot(43);
    assert!(empty.members.is_empty());
    assert!(empty.generation > generation);
    let e = Group::restore(&empty, Duration::ZERO, t1);
    assert_eq!(
        (e.state(), e.generation()),
        (GroupState::Empty, empty.generation)
    );
}

#[test]
fn offset_commit_checks_members_like_kafka() {
    let t0 = Instant::now();
    let mut g = Group::new(Duration::ZERO);
    let mut r = req("", &["range"]);
    r.instance_id = Some("i1".into());
    r.require_known_member_id = false;
    let a = join(&mut g, r, t0)
        .try_recv()
        .expect("answered")
        .expect("ok")
        .member_id;
    sync(&mut g, &a, 1, vec![], t0);
    let d = new_id(&mut g, t0);
    // d joined: a rejoins too, generation 2.
    let mut jd = join(&mut g, req(&d, &["range"]), t0);
    let mut ra = req(&a, &["range"]);
    ra.instance_id = Some("i1".into());
    join(&mut g, ra, t0);
    jd.try_recv().expect("d").expect("ok");
    sync(&mut g, &d, 2, vec![], t0);
    sync(&mut g, &a, 2, vec![], t0);
    assert_eq!(g.state(), GroupState::Stable);
    // (what, member id, group.instance.id, generation, expected)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, i32, Result<()>);
    let cases: Vec<Case> = vec![
        ("static member", &a, Some("i1"), 2, Ok(())),
        ("dynamic member", &d, None, 2, Ok(())),
        ("static member without its instance id", &a, None, 2, Ok(())),
        (
            "an older incarnation of i1",
            "old-id",
            Some("i1"),
            2,
            Err(GroupError::FencedInstanceId),
        ),
        (
            "a member claiming another's instance id",
            &d,
            Some("i1"),
            2,
            Err(GroupError::FencedInstanceId),
        ),
        (
            "an unknown instance id",
            &a,
            Some("i9"),
            2,
            Err(GroupError::UnknownMemberId),
        ),
        (
            "generation, no member id",
            "",
            None,
            2,
            Err(GroupError::UnknownMemberId),
        ),
        (
            "generation, unknown member id",
            "nobody",
            None,
            2,
            Err(GroupError::UnknownMemberId),
        ),
        (
            "simple commit to a group with members",
            "",
            None,
            -1,
            Err(GroupError::UnknownMemberId),
        ),
        (
            "a member with no generation",
            &d,
            None,
            -1,
            Err(GroupError::IllegalGeneration),
        ),
        (
            "the previous generation",
            &d,
            None,
            1,
            Err(GroupError::IllegalGeneration),
        ),
    ];
    for (what, member, inst, generation, want) in cases {
        assert_eq!(
            g.validate_commit(member, inst, generation, t0),
            want,
            "{what}"
        );
    }
    // Once Empty, a commit with no generation is fine whoever sends it.
    g.leave(&[(a.clone(), None), (d.clone(), None)], t0);
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.validate_commit("", None, -1, t0), Ok(()));
    assert_eq!(
        g.validate_commit(&a, None, 2, t0),
        Err(GroupError::UnknownMemberId)
    );
}
