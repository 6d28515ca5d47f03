//! `offsets.retention.minutes` (KIP-211) against a real `runnel serve` with
//! a one-minute retention checked every second: the offsets of a group
//! that became Empty expire a minute after it did, and so do simple
//! (`assign()`-style) commits a minute after they were made; afterwards
//! OffsetFetch answers -1 and ListGroups no longer lists those groups. A
//! group with a live member keeps its offsets however old they are.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::topics::create_topic;
use common::{Node, RawConn};
use kafka_protocol::messages::{ListGroupsRequest, ListGroupsResponse};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "kept";

fn consumer(node: &Node, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .create()
        .expect("consumer")
}

fn commit(c: &BaseConsumer, offset: i64) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(offset))
        .expect("tpl");
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

/// The group's committed offset of partition 0 (-1: none), asked by a
/// client that never joins the group.
fn committed(node: &Node, group: &str) -> i64 {
    let got = common::topics::committed(
        &node.bootstrap(),
        group,
        TOPIC,
        &[0],
        Duration::from_secs(10),
    )
    .expect("OffsetFetch");
    got.get(&0).copied().expect("partition").unwrap_or(-1)
}

/// ListGroups v4: group id → state.
fn listed(node: &Node) -> BTreeMap<String, String> {
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    let resp: ListGroupsResponse = conn
        .roundtrip(4, 1, &ListGroupsRequest::default())
        .expect("ListGroups");
    assert_eq!(resp.error_code, 0);
    resp.groups
        .into_iter()
        .map(|g| (g.group_id.0.to_string(), g.group_state.to_string()))
        .collect()
}

#[test]
fn offsets_of_empty_and_simple_groups_expire_after_the_retention() {
    let node = Node::start(&[
        ("offsets.retention.minutes", "1"),
        ("offsets.retention.check.interval.ms", "1000"),
        ("group.initial.rebalance.delay.ms", "0"),
    ]);
    let res = create_topic(&node.bootstrap(), TOPIC, 1, 1, &[], Duration::from_secs(30));
    assert!(res.is_ok(), "{res:?}");

    // A simple commit: assign(), never a member.
    let simple = consumer(&node, "g-simple");
    commit(&simple, 5);
    drop(simple);
    let t_simple = Instant::now();
    // A member commits and leaves: the group becomes Empty.
    let left = consumer(&node, "g-left");
    left.subscribe(&[TOPIC]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    while left.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "g-left got no assignment");
        let _ = left.poll(Duration::from_millis(100));
    }
    commit(&left, 7);
    drop(left); // closes: LeaveGroup
    let t_left = Instant::now();
    // A member that stays.
    let live = consumer(&node, "g-live");
    live.subscribe(&[TOPIC]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    while live.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "g-live got no assignment");
        let _ = live.poll(Duration::from_millis(100));
    }
    commit(&live, 9);
    step!("committed: g-simple 5 (simple), g-left 7 (then left), g-live 9 (stays)");

    let groups = listed(&node);
    step!("ListGroups: {groups:?}");
    assert_eq!(groups.get("g-left").map(String::as_str), Some("Empty"));
    assert_eq!(groups.get("g-simple").map(String::as_str), Some("Empty"));
    assert_eq!(groups.get("g-live").map(String::as_str), Some("Stable"));
    assert_eq!(committed(&node, "g-simple"), 5);
    assert_eq!(committed(&node, "g-left"), 7);

    // Nothing expires well before the minute is up.
    let poll_for = |d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until {
            let _ = live.poll(Duration::from_millis(100));
        }
    };
    poll_for(Duration::from_secs(40));
    assert_eq!(committed(&node, "g-simple"), 5, "kept at 40 s");
    assert_eq!(committed(&node, "g-left"), 7, "kept at 40 s");

    // Then both go, within the check interval (and a little slack) of
    // their minute.
    let deadline = Instant::now() + Duration::from_secs(40);
    let (mut simple_gone, mut left_gone) = (None, None);
    while simple_gone.is_none() || left_gone.is_none() {
        assert!(
            Instant::now() < deadline,
            "offsets did not expire: g-simple {}, g-left {}",
            committed(&node, "g-simple"),
            committed(&node, "g-left")
        );
        poll_for(Duration::from_millis(500));
        if simple_gone.is_none() && committed(&node, "g-simple") == -1 {
            simple_gone = Some(t_simple.elapsed());
        }
        if left_gone.is_none() && committed(&node, "g-left") == -1 {
            left_gone = Some(t_left.elapsed());
        }
    }
    step!("expired: g-simple after {simple_gone:?} from its commit, g-left after {left_gone:?} from leaving");
    for gone in [simple_gone, left_gone].into_iter().flatten() {
        assert!(gone >= Duration::from_secs(60), "expired early: {gone:?}");
    }
    let groups = listed(&node);
    step!("ListGroups: {groups:?}");
    assert!(!groups.contains_key("g-simple"), "{groups:?}");
    assert!(!groups.contains_key("g-left"), "{groups:?}");
    assert_eq!(groups.get("g-live").map(String::as_str), Some("Stable"));
    assert_eq!(
        committed(&node, "g-live"),
        9,
        "a live group keeps its offsets"
    );
}
