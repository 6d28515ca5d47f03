//! Consumer groups against a real `runnel serve`, with librdkafka consumers
//! (the `rdkafka` crate): partitions shared out in a group, takeover from the
//! committed offsets when a member leaves, committed offsets surviving
//! kill -9 of the broker, and a second group reading from the start.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::topics::create_topic;
use common::Node;
use futures::executor::block_on;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);
const TOPIC: &str = "orders";

fn producer(node: &Node) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("message.timeout.ms", "30000")
        .create()
        .expect("create producer")
}

fn member(node: &Node, group: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .set("enable.partition.eof", "false")
        .create()
        .expect("create consumer");
    c.subscribe(&[TOPIC]).expect("subscribe");
    c
}

/// Produces `n` records to `partition`, values "p<partition>-<i>" from `first`.
fn produce(p: &FutureProducer, partition: i32, first: usize, n: usize) {
    for i in first..first + n {
        let v = format!("p{partition}-{i}");
        let fut = p
            .send_result(
                FutureRecord::<(), _>::to(TOPIC)
                    .partition(partition)
                    .payload(&v),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue");
        block_on(fut)
            .expect("delivery future")
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

fn assigned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .expect("assignment")
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// (partition, offset, value) of one consumed record.
type Got = (i32, i64, String);

/// Polls every consumer round robin until `done` holds for what each has
/// consumed so far (and their assignments), or panics after `within`.
fn poll_until(
    consumers: &[&BaseConsumer],
    got: &mut [Vec<Got>],
    within: Duration,
    what: &str,
    mut done: impl FnMut(&[Vec<Got>], &[BTreeSet<i32>]) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        for (i, c) in consumers.iter().enumerate() {
            if let Some(r) = c.poll(Duration::from_millis(50)) {
                let m = r.unwrap_or_else(|e| panic!("consumer {i}: {e}"));
                let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                got[i].push((m.partition(), m.offset(), v));
            }
        }
        let a: Vec<_> = consumers.iter().map(|c| assigned(c)).collect();
        if done(got, &a) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; assignments {a:?}, consumed {got:?}"
        );
    }
}

fn commit(c: &BaseConsumer, partition: i32, offset: i64) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, partition, Offset::Offset(offset))
        .expect("tpl");
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

/// OffsetFetch through a fresh group member that never joins.
fn committed(node: &Node, group: &str) -> BTreeMap<i32, i64> {
    common::topics::committed(&node.bootstrap(), group, TOPIC, &[0, 1], TIMEOUT)
        .expect("OffsetFetch")
        .into_iter()
        .filter_map(|(p, o)| Some((p, o?)))
        .collect()
}

#[test]
fn group_shares_partitions_takes_over_and_offsets_survive_kill9() {
    let mut node = Node::start(&[
        ("num.partitions", "2"),
        ("group.initial.rebalance.delay.ms", "500"),
    ]);
    step!("create topic {TOPIC} with 2 partitions");
    let res = create_topic(&node.bootstrap(), TOPIC, 2, 1, &[], TIMEOUT);
    assert!(res.is_ok(), "{res:?}");
    let p = producer(&node);

    step!("two consumers join group g1: each must own one partition");
    let c1 = member(&node, "g1");
    let c2 = member(&node, "g1");
    let mut got = vec![Vec::new(), Vec::new()];
    poll_until(
        &[&c1, &c2],
        &mut got,
        Duration::from_secs(60),
        "a 1+1 split",
        |_, a| a[0].len() == 1 && a[1].len() == 1 && a[0] != a[1],
    );
    let (p1, p2) = (
        *assigned(&c1).first().expect("c1 owns one"),
        *assigned(&c2).first().expect("c2 owns one"),
    );
    step!("c1 owns partition {p1}, c2 owns partition {p2}");

    let groups = c1
        .fetch_group_list(Some("g1"), TIMEOUT)
        .expect("DescribeGroups");
    let g = groups.groups().first().expect("g1 described");
    assert_eq!(g.state(), "Stable");
    assert_eq!(g.members().len(), 2);
    assert_eq!(g.protocol_type(), "consumer");

    step!("produce 10 records per partition: consumed once across the two");
    produce(&p, 0, 0, 10);
    produce(&p, 1, 0, 10);
    poll_until(&[&c1, &c2], &mut got, TIMEOUT, "20 records", |g, _| {
        g[0].len() + g[1].len() >= 20
    });
    assert_eq!(got[0].len() + got[1].len(), 20, "{got:?}");
    for (i, own) in [(0, p1), (1, p2)] {
        let offsets: Vec<i64> = got[i].iter().map(|(_, o, _)| *o).collect();
        assert!(
            got[i].iter().all(|(p, _, _)| *p == own),
            "consumer {i}: {got:?}"
        );
        assert_eq!(offsets, (0..10).collect::<Vec<i64>>(), "consumer {i}");
    }
    commit(&c1, p1, 10);
    commit(&c2, p2, 10);
    assert_eq!(committed(&node, "g1"), BTreeMap::from([(0, 10), (1, 10)]));

    step!("5 more each; c1 commits only up to offset 12, then leaves");
    produce(&p, 0, 10, 5);
    produce(&p, 1, 10, 5);
    got = vec![Vec::new(), Vec::new()];
    poll_until(&[&c1, &c2], &mut got, TIMEOUT, "10 more records", |g, _| {
        g[0].len() + g[1].len() >= 10
    });
    commit(&c1, p1, 12);
    commit(&c2, p2, 15);
    drop(c1);

    step!("c2 takes both partitions and resumes {p1} from 12");
    got = vec![Vec::new()];
    poll_until(
        &[&c2],
        &mut got,
        Duration::from_secs(60),
        "takeover",
        |g, a| a[0].len() == 2 && g[0].len() >= 3,
    );
    // Give a re-read of anything already committed a chance to show up.
    let extra = Instant::now() + Duration::from_secs(2);
    while Instant::now() < extra {
        if let Some(r) = c2.poll(Duration::from_millis(100)) {
            let m = r.expect("record");
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            got[0].push((m.partition(), m.offset(), v));
        }
    }
    let want: Vec<Got> = (12..15).map(|o| (p1, o, format!("p{p1}-{o}"))).collect();
    assert_eq!(got[0], want, "exactly the uncommitted tail of {p1}");
    commit(&c2, p1, 15);
    drop(c2);

    step!("kill -9 the broker and restart: committed offsets survive");
    node.kill9();
    node.restart();
    assert_eq!(committed(&node, "g1"), BTreeMap::from([(0, 15), (1, 15)]));

    step!("a consumer in group g0 reads everything from the start");
    let c0 = member(&node, "g0");
    let mut got = vec![Vec::new()];
    poll_until(
        &[&c0],
        &mut got,
        Duration::from_secs(60),
        "30 records",
        |g, _| g[0].len() >= 30,
    );
    let per: BTreeMap<i32, Vec<i64>> = got[0].iter().fold(BTreeMap::new(), |mut m, (p, o, _)| {
        m.entry(*p).or_insert_with(Vec::new).push(*o);
        m
    });
    let all: Vec<i64> = (0..15).collect();
    assert_eq!(per, BTreeMap::from([(0, all.clone()), (1, all)]));
    assert_eq!(
        committed(&node, "g0"),
        BTreeMap::new(),
        "g0 committed nothing"
    );
    assert_eq!(committed(&node, "g1"), BTreeMap::from([(0, 15), (1, 15)]));
}

/// One member through every group API over the raw wire protocol, at the
/// lowest and at the highest version served, so that both the request
/// decoding and the version-strict response encoding are exercised.
#[test]
fn every_group_api_at_its_lowest_and_highest_version() {
    use common::RawConn;
    use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;

    let s = |x: &str| StrBytes::from_string(x.to_string());
    let node = Node::start(&[
        ("num.partitions", "2"),
        ("group.initial.rebalance.delay.ms", "0"),
    ]);
    let res = create_topic(&node.bootstrap(), TOPIC, 2, 1, &[], TIMEOUT);
    assert!(res.is_ok(), "{res:?}");
    let mut c = RawConn::connect(&node.bootstrap()).expect("connect");
    let mut cid = 0;
    let mut next = || {
        cid += 1;
        cid
    };
    // (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, OffsetCommit,
    //  OffsetFetch, DescribeGroups, ListGroups, LeaveGroup, DeleteGroups)
    for (lo, v) in [
        (true, [0, 0, 0, 0, 2, 1, 0, 0, 0, 0]),
        (false, [6, 9, 5, 4, 9, 9, 5, 5, 5, 2]),
    ] {
        let group = if lo { "raw-lo" } else { "raw-hi" };
        step!("{group}: versions {v:?}");

        let mut fc = FindCoordinatorRequest::default();
        if v[0] >= 4 {
            fc.coordinator_keys = vec![s(group)];
        } else {
            fc.key = s(group);
        }
        let r = c.roundtrip(v[0], next(), &fc).expect("FindCoordinator");
        let (node_id, port) = match r.coordinators.first() {
            Some(k) => (k.node_id.0, k.port),
            None => (r.node_id.0, r.port),
        };
        assert_eq!((node_id, port), (1, i32::from(node.port())));

        let mut join = JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(10_000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(bytes::Bytes::from_static(b"sub"))]);
        if v[1] >= 1 {
            join.rebalance_timeout_ms = 10_000;
        }
        let mut r = c.roundtrip(v[1], next(), &join).expect("JoinGroup");
        if v[1] >= 4 {
            assert_eq!(r.error_code, 79, "MEMBER_ID_REQUIRED");
            join.member_id = r.member_id.clone();
            r = c.roundtrip(v[1], next(), &join).expect("JoinGroup again");
        }
        assert_eq!(r.error_code, 0);
        let member = r.member_id.clone();
        assert_eq!((r.generation_id, &r.leader), (1, &member));
        assert_eq!(r.members.len(), 1);
        assert_eq!(r.members[0].metadata.as_ref(), b"sub");

        let mut sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id(1)
            .with_member_id(member.clone())
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(member.clone())
                .with_assignment(bytes::Bytes::from_static(b"A"))]);
        if v[2] >= 5 {
            sync.protocol_type = Some(s("consumer"));
            sync.protocol_name = Some(s("range"));
        }
        let r = c.roundtrip(v[2], next(), &sync).expect("SyncGroup");
        assert_eq!((r.error_code, r.assignment.as_ref()), (0, &b"A"[..]));

        let hb = |generation| {
            HeartbeatRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id(generation)
                .with_member_id(member.clone())
        };
        let r = c.roundtrip(v[3], next(), &hb(1)).expect("Heartbeat");
        assert_eq!(r.error_code, 0);
        let r = c.roundtrip(v[3], next(), &hb(0)).expect("Heartbeat");
        assert_eq!(r.error_code, 22, "ILLEGAL_GENERATION");

        let commit = |topic: &str, generation: i32| {
            OffsetCommitRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id_or_member_epoch(generation)
                .with_member_id(member.clone())
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(
                        (0..2)
                            .map(|p| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(7 + i64::from(p))
                                    .with_committed_metadata(Some(s("m")))
                            })
                            .collect(),
                    )])
        };
        let codes = |r: &OffsetCommitResponse| -> Vec<i16> {
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .collect()
        };
        let r = c
            .roundtrip(v[4], next(), &commit(TOPIC, 1))
            .expect("OffsetCommit");
        assert_eq!(codes(&r), vec![0, 0]);
        let r = c
            .roundtrip(v[4], next(), &commit(TOPIC, 5))
            .expect("OffsetCommit");
        assert_eq!(codes(&r), vec![22, 22], "ILLEGAL_GENERATION");
        let r = c
            .roundtrip(v[4], next(), &commit("nope", 1))
            .expect("OffsetCommit");
        assert_eq!(codes(&r), vec![3, 3], "UNKNOWN_TOPIC_OR_PARTITION");

        let fetch = if v[5] >= 8 {
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s(TOPIC)))
                    .with_partition_indexes(vec![0, 1])]))])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s(TOPIC)))
                    .with_partition_indexes(vec![0, 1])]))
        };
        let fetched = |c: &mut RawConn, cid| -> Vec<(i64, String)> {
            let r = c.roundtrip(v[5], cid, &fetch).expect("OffsetFetch");
            let parts: Vec<(i64, String)> = if v[5] >= 8 {
                r.groups[0].topics[0]
                    .partitions
                    .iter()
                    .map(|p| {
                        (
                            p.committed_offset,
                            p.metadata.as_deref().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            } else {
                r.topics[0]
                    .partitions
                    .iter()
                    .map(|p| {
                        (
                            p.committed_offset,
                            p.metadata.as_deref().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            };
            parts
        };
        assert_eq!(
            fetched(&mut c, next()),
            vec![(7, "m".to_string()), (8, "m".to_string())]
        );

        let r = c
            .roundtrip(
                v[6],
                next(),
                &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]),
            )
            .expect("DescribeGroups");
        let d = &r.groups[0];
        assert_eq!((d.error_code, d.group_state.as_str()), (0, "Stable"));
        assert_eq!(
            (d.protocol_type.as_str(), d.protocol_data.as_str()),
            ("consumer", "range")
        );
        assert_eq!(d.members[0].member_assignment.as_ref(), b"A");

        let r = c
            .roundtrip(v[7], next(), &ListGroupsRequest::default())
            .expect("ListGroups");
        assert!(
            r.groups.iter().any(|g| g.group_id.0.as_str() == group),
            "{r:?}"
        );

        let mut leave = LeaveGroupRequest::default().with_group_id(GroupId(s(group)));
        if v[8] >= 3 {
            leave.members = vec![MemberIdentity::default().with_member_id(member.clone())];
        } else {
            leave.member_id = member.clone();
        }
        let r = c.roundtrip(v[8], next(), &leave).expect("LeaveGroup");
        assert_eq!(r.error_code, 0);
        assert!(r.members.iter().all(|m| m.error_code == 0));

        let r = c
            .roundtrip(
                0,
                next(),
                &OffsetDeleteRequest::default()
                    .with_group_id(GroupId(s(group)))
                    .with_topics(vec![OffsetDeleteRequestTopic::default()
                        .with_name(TopicName(s(TOPIC)))
                        .with_partitions(vec![
                            OffsetDeleteRequestPartition::default().with_partition_index(1)
                        ])]),
            )
            .expect("OffsetDelete");
        assert_eq!(r.error_code, 0);
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
        assert_eq!(
            fetched(&mut c, next()),
            vec![(7, "m".to_string()), (-1, String::new())]
        );

        let del = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]);
        let r = c.roundtrip(v[9], next(), &del).expect("DeleteGroups");
        assert_eq!(r.results[0].error_code, 0);
        let r = c.roundtrip(v[9], next(), &del).expect("DeleteGroups");
        assert_eq!(r.results[0].error_code, 69, "GROUP_ID_NOT_FOUND");
        assert_eq!(
            fetched(&mut c, next()),
            vec![(-1, String::new()), (-1, String::new())]
        );
    }
}

/// OffsetCommit's member checks, as Kafka's classic group coordinator makes
/// them: a commit that carries a generation must name a member of it, and a
/// static member's `group.instance.id` must map to the member id it sends
/// (an older incarnation is FENCED_INSTANCE_ID).
#[test]
fn offset_commit_refuses_unknown_members_and_fenced_static_ones() {
    use common::RawConn;
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;

    let s = |x: &str| StrBytes::from_string(x.to_string());
    let node = Node::start(&[("group.initial.rebalance.delay.ms", "0")]);
    let res = create_topic(&node.bootstrap(), TOPIC, 1, 1, &[], TIMEOUT);
    assert!(res.is_ok(), "{res:?}");
    let mut c = RawConn::connect(&node.bootstrap()).expect("connect");
    let mut cid = 0;
    let mut next = || {
        cid += 1;
        cid
    };
    let group = "static-commits";
    let join = |member: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_group_instance_id(Some(s("instance-1")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(bytes::Bytes::from_static(b"sub"))])
    };
    let joined = |c: &mut RawConn, cid: i32, member: &str| {
        let r = c.roundtrip(9, cid, &join(member)).expect("JoinGroup");
        assert_eq!(r.error_code, 0, "JoinGroup");
        (r.member_id.to_string(), r.generation_id)
    };
    let (first, generation) = joined(&mut c, next(), "");
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(&first))
        .with_group_instance_id(Some(s("instance-1")))
        .with_generation_id(generation)
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(&first))
            .with_assignment(bytes::Bytes::from_static(b"a"))]);
    let r = c.roundtrip(5, next(), &sync).expect("SyncGroup");
    assert_eq!(r.error_code, 0, "SyncGroup");
    step!("static member {first} in generation {generation}");

    let commit = |member: &str, instance: Option<&str>, generation: i32| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_group_instance_id(instance.map(s))
            .with_generation_id_or_member_epoch(generation)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(1)])])
    };
    let code = |c: &mut RawConn, cid: i32, req: OffsetCommitRequest| -> i16 {
        let r = c.roundtrip(9, cid, &req).expect("OffsetCommit");
        r.topics[0].partitions[0].error_code
    };
    let unknown = ResponseError::UnknownMemberId.code();
    let fenced = ResponseError::FencedInstanceId.code();
    let illegal = ResponseError::IllegalGeneration.code();
    // (what, request, expected error code)
    let cases = [
        (
            "the member",
            commit(&first, Some("instance-1"), generation),
            0,
        ),
        (
            "generation, no member id",
            commit("", None, generation),
            unknown,
        ),
        (
            "generation, unknown member",
            commit("someone", None, generation),
            unknown,
        ),
        (
            "no generation, group not empty",
            commit("", None, -1),
            unknown,
        ),
        (
            "another id for instance-1",
            commit("other", Some("instance-1"), generation),
            fenced,
        ),
        (
            "an instance id nobody has",
            commit(&first, Some("instance-2"), generation),
            unknown,
        ),
        (
            "the previous generation",
            commit(&first, Some("instance-1"), generation - 1),
            illegal,
        ),
    ];
    for (what, req, want) in cases {
        assert_eq!(code(&mut c, next(), req), want, "{what}");
    }

    // A new incarnation of instance-1 joins: the old one is fenced.
    let (second, generation2) = joined(&mut c, next(), "");
    assert_ne!(second, first);
    step!("instance-1 rejoined as {second} (generation {generation2})");
    assert_eq!(
        code(
            &mut c,
            next(),
            commit(&first, Some("instance-1"), generation2)
        ),
        fenced,
        "the old incarnation's commit"
    );
}

/// Commits are group-committed, many to a Raft entry, and answered while
/// the connection's next requests go on: a member's commits must still
/// land in the order it sent them (the last one wins, never an earlier
/// one), and its own OffsetFetch right behind them must see the last.
#[test]
fn pipelined_commits_apply_in_order_and_are_read_back_at_once() {
    let node = Node::start(&[]);
    create_topic(&node.bootstrap(), TOPIC, 2, 1, &[], TIMEOUT).expect("create topic");
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("group.id", "pipelined")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut both = TopicPartitionList::new();
    both.add_partition(TOPIC, 0);
    both.add_partition(TOPIC, 1);
    c.assign(&both).expect("assign");
    // One synchronous commit first: the client then knows its coordinator,
    // so the asynchronous commits below go out at once, in order, ahead of
    // the OffsetFetch (before that, librdkafka may hold them back while it
    // looks the coordinator up, and send the fetch first).
    commit(&c, 0, 0);
    // Several rounds, so that some commits queue behind a batch in flight.
    for round in 0..5i64 {
        for i in 1..=200i64 {
            let offset = round * 1000 + i;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(TOPIC, (i % 2) as i32, Offset::Offset(offset))
                .expect("tpl");
            c.commit(&tpl, CommitMode::Async).expect("async commit");
        }
        // OffsetFetch from the same client, sent behind the commits.
        let got = c.committed(TIMEOUT).expect("committed");
        let at = |p: i32| got.find_partition(TOPIC, p).map(|e| e.offset());
        assert_eq!(
            at(0),
            Some(Offset::Offset(round * 1000 + 200)),
            "round {round}"
        );
        assert_eq!(
            at(1),
            Some(Offset::Offset(round * 1000 + 199)),
            "round {round}"
        );
    }
    // And what a fresh client reads, after all of it.
    assert_eq!(
        committed(&node, "pipelined"),
        BTreeMap::from([(0, 4200), (1, 4199)])
    );
}
