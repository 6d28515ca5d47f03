//! Network partitions between the nodes of a three-node cluster (each node
//! a broker and a controller voter, in a network namespace of its own; see
//! `common::netns`). A cut drops packets silently: connections between the
//! two sides stall, connects hang. The test's clients stay outside the
//! partition and reach every node, the isolated one too. What a user of a
//! replication-factor-3 topic with `min.insync.replicas=2` relies on:
//!
//! * A partition leader cut off from the other two nodes is replaced by
//!   the majority within a bounded time, and acks=all writes go on there.
//!   The isolated old leader acknowledges nothing meanwhile, neither a
//!   write that reached it right after the cut nor one long after: alone
//!   it cannot meet `min.insync.replicas`. Once healed it rejoins the ISR,
//!   every acknowledged write is read back at its offset, and nothing that
//!   only the isolated node took survives.
//! * An active controller cut off from the other two loses the quorum: the
//!   majority elects another controller and CreateTopics through it works,
//!   while the isolated one creates nothing. Once healed the old controller
//!   follows again and lists what was created meanwhile; no topic and no
//!   acknowledged write from before or during the partition is lost.
//! * The harness itself: a cut is silent (a connect times out, a sent byte
//!   stalls without an error and arrives after the heal), other links and
//!   the test's own connections are untouched; a node in a namespace is
//!   paused, killed and restarted like any other (its pid is runnel's).
//!
//! Every node runs with the harness's 300 ms heartbeats and 3 s broker
//! sessions, plus `replica.lag.time.max.ms=3000` (as `tests/replication.rs`),
//! so that the isolated leader does try to shrink its ISR while cut off.
//! Needs root (`ip netns`). Run with the step log:
//! `cargo test --release --test partitions -- --nocapture`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{topics_on, Cluster, ClusterView};
use common::netns::Netns;
use common::partition::{
    consume_all, high_watermark, ids, others, partition_state, wait_full_isr, wait_state,
};
use common::producer::{Ack, BgProducer, Spec};
use common::topics::raw_create_topic;
use common::{eventually, RawConn};
use futures::executor::block_on;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use runnel::protocol::build;

/// What every node runs with (on top of the harness's 300 ms heartbeats
/// and 3 s broker sessions).
const OVERRIDES: &[&str] = &[
    "default.replication.factor=3",
    "min.insync.replicas=2",
    "replica.lag.time.max.ms=3000",
];
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long the majority may take to replace a leader or controller it no
/// longer hears from (a 3 s session, then an election).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a healed node may take to be back in the ISR.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The broker-side timeout of the writes and creates sent to an isolated
/// node: it must answer within it (or not at all), and not with success.
const PROBE_TIMEOUT_MS: i32 = 5_000;

// ------------------------------------------------------------ helpers --

/// Waits until every node in `ask` answers Metadata naming the same
/// controller, one that `ok` accepts; returns it.
fn agreed_controller(c: &Cluster, ask: &[i32], what: &str, ok: impl Fn(i32) -> bool) -> i32 {
    eventually(TIMEOUT, what, || {
        let views: Vec<ClusterView> = ask
            .iter()
            .map(|&id| c.view(id).ok())
            .collect::<Option<_>>()?;
        let first = views.first()?.controller_id;
        (first > 0 && ok(first) && views.iter().all(|v| v.controller_id == first)).then_some(first)
    })
}

/// A one-partition topic with replicas `replicas` (the first the preferred
/// leader), `min.insync.replicas=2`; waits for the full ISR.
fn create_with_replicas(c: &Cluster, topic: &str, replicas: &[i32]) {
    step!("create topic {topic}: replicas {replicas:?}, min.insync.replicas 2");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap_all())
        .create()
        .expect("admin client");
    let assignment = [replicas];
    let new = NewTopic::new(topic, 1, TopicReplication::Variable(&assignment))
        .set("min.insync.replicas", "2");
    let opts = AdminOptions::new()
        .request_timeout(Some(TIMEOUT))
        .operation_timeout(Some(TIMEOUT));
    let res = block_on(admin.create_topics(&[new], &opts)).expect("CreateTopics");
    assert!(
        res.iter().all(Result::is_ok),
        "CreateTopics {topic}: {res:?}"
    );
    wait_full_isr(c, topic, 0, TIMEOUT);
}

/// The background producer of these tests: acks=all to `topic`/0 through
/// every node, not idempotent (so a retried write may be in the log twice,
/// below its acknowledged offset).
fn producer(c: &Cluster, topic: &str) -> BgProducer {
    let spec = Spec {
        settings: vec![
            ("retry.backoff.ms", "100"),
            ("queue.buffering.max.messages", "20000"),
        ],
        ..Spec::continuous(topic, "v")
    };
    BgProducer::start(&c.bootstrap_all(), spec)
}

/// One v2 record batch holding `value` (as key and value).
fn record_batch(value: &str) -> Bytes {
    let v = Some(Bytes::from(value.to_string()));
    let record: Record = build::record(0, common::now_ms(), v.clone(), v);
    build::encode(&[record], Compression::None).expect("encode batch")
}

/// A raw acks=-1 Produce of `value` to `topic`/0 on the node at `addr`
/// with the broker's timeout `PROBE_TIMEOUT_MS`: (error code, base offset).
fn probe_produce(addr: &str, topic: &str, value: &str) -> io::Result<(i16, i64)> {
    common::raw_produce(addr, 8, topic, 0, record_batch(value), PROBE_TIMEOUT_MS)
}

/// `probe_produce` on its own thread, started now.
fn probe_produce_in_background(
    addr: String,
    topic: &str,
    value: &str,
) -> std::thread::JoinHandle<io::Result<(i16, i64)>> {
    let (topic, value) = (topic.to_string(), value.to_string());
    std::thread::spawn(move || probe_produce(&addr, &topic, &value))
}

/// CreateTopics v4 of one topic (replication factor 1) over a raw
/// connection to exactly `addr`, with the broker's timeout
/// `PROBE_TIMEOUT_MS`: (error code, error message).
fn probe_create(addr: &str, name: &str) -> io::Result<(i16, Option<String>)> {
    let mut conn = RawConn::connect(addr)?;
    let wait = Duration::from_millis(PROBE_TIMEOUT_MS as u64) + Duration::from_secs(15);
    conn.stream.set_read_timeout(Some(wait))?;
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(1)
            .with_replication_factor(1)])
        .with_timeout_ms(PROBE_TIMEOUT_MS);
    let resp: CreateTopicsResponse = conn.roundtrip(4, 7, &req)?;
    let t = resp
        .topics
        .first()
        .ok_or_else(|| io::Error::other("CreateTopics answered no topic"))?;
    Ok((
        t.error_code,
        t.error_message.as_ref().map(|m| m.to_string()),
    ))
}

/// Stops the producer and reads the partition back up to the high
/// watermark: offsets 0..HW each once; every acknowledged write at its
/// acknowledged offset and nowhere above it (a copy below is a retried
/// write, which at-least-once allows); none of `never` (writes only an
/// isolated node took) anywhere. Returns the HW.
fn finish_and_verify(c: &Cluster, topic: &str, producer: BgProducer, never: &[&str]) -> i64 {
    let report = producer.finish();
    let (leader, hw) = high_watermark(c, &ids(c), topic, 0);
    step!("{topic}/0: leader {leader}, HW {hw}");
    let consumed = consume_all(&c.bootstrap_all(), topic, 0, hw);
    let mut problems = Vec::new();
    if let Some(i) = (0..consumed.len()).find(|&i| consumed[i].0 != i as i64) {
        problems.push(format!(
            "offsets are not 0..{hw}: #{i} is offset {}",
            consumed[i].0
        ));
    }
    let by_offset: HashMap<i64, &str> = consumed.iter().map(|(o, k)| (*o, k.as_str())).collect();
    let mut by_key: HashMap<&str, Vec<i64>> = HashMap::new();
    for (o, k) in &consumed {
        by_key.entry(k.as_str()).or_default().push(*o);
    }
    let lost: Vec<&Ack> = report
        .acked
        .iter()
        .filter(|a| by_offset.get(&a.offset) != Some(&a.key.as_str()))
        .collect();
    if !lost.is_empty() {
        problems.push(format!(
            "{} of {} acknowledged writes are not at their offset, e.g. {:?}",
            lost.len(),
            report.acked.len(),
            lost.iter()
                .take(5)
                .map(|a| (
                    &a.key,
                    a.offset,
                    by_offset.get(&a.offset),
                    by_key.get(a.key.as_str())
                ))
                .collect::<Vec<_>>()
        ));
    }
    let above: Vec<(&str, i64)> = report
        .acked
        .iter()
        .filter(|a| {
            by_key
                .get(a.key.as_str())
                .is_some_and(|os| os.iter().any(|&o| o > a.offset))
        })
        .map(|a| (a.key.as_str(), a.offset))
        .take(5)
        .collect();
    if !above.is_empty() {
        problems.push(format!(
            "acknowledged writes also above their offset: {above:?}"
        ));
    }
    let retried = report
        .acked
        .iter()
        .filter(|a| {
            by_key
                .get(a.key.as_str())
                .is_some_and(|os| os.iter().any(|&o| o < a.offset))
        })
        .count();
    for key in never {
        if let Some(os) = by_key.get(key) {
            problems.push(format!(
                "{key}, which only the isolated node took, is in the log at {os:?}"
            ));
        }
    }
    let strange: Vec<&(i64, String)> = consumed
        .iter()
        .filter(|(_, k)| !k.starts_with("v-") && !never.contains(&k.as_str()))
        .take(5)
        .collect();
    if !strange.is_empty() {
        problems.push(format!("records this test never wrote: {strange:?}"));
    }
    step!(
        "checked {} records below HW {hw} against {} acknowledgements ({retried} also \
         below their offset, retried): {}",
        consumed.len(),
        report.acked.len(),
        if problems.is_empty() { "ok" } else { "FAILED" }
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    hw
}

// --------------------------------------------------------------- tests --

#[test]
fn a_cut_is_silent_and_clients_still_reach_every_node() {
    let ns = Netns::create(3);
    let within = Duration::from_secs(1);
    let listeners: Vec<TcpListener> = (1..=3)
        .map(|i| {
            let addr = format!("{}:0", ns.addr(i));
            ns.run_in(i, || TcpListener::bind(&addr))
                .unwrap_or_else(|e| panic!("bind {addr}: {e}"))
        })
        .collect();
    let at = |i: usize| -> SocketAddr { listeners[i - 1].local_addr().expect("local addr") };
    let mut from_1 = ns.connect_from(1, at(2), within).expect("connect 1 -> 2");
    let (mut at_2, peer) = listeners[1].accept().expect("accept on 2");
    assert_eq!(
        peer.ip().to_string(),
        ns.addr(1),
        "node 2 sees node 1's own address"
    );

    ns.cut(1, 2);
    assert!(ns.is_cut(2, 1) && !ns.is_cut(1, 3), "cuts: {:?}", ns.cuts());
    for (from, to) in [(1, 2), (2, 1)] {
        let started = Instant::now();
        let got = ns.connect_from(from, at(to), within);
        step!(
            "connect {from} -> {to} while cut: {got:?} after {:?}",
            started.elapsed()
        );
        let e = got.expect_err("a connect across the cut");
        assert_eq!(
            e.kind(),
            io::ErrorKind::TimedOut,
            "a connect across the cut hangs, not fails: {e}"
        );
    }
    for (from, to) in [(1, 3), (3, 1), (2, 3), (3, 2)] {
        ns.connect_from(from, at(to), within)
            .unwrap_or_else(|e| panic!("connect {from} -> {to}, not cut: {e}"));
    }
    for i in 1..=3 {
        TcpStream::connect_timeout(&at(i), within)
            .unwrap_or_else(|e| panic!("the test's own connect to node {i} during the cut: {e}"));
    }
    let msg = b"sent during the cut";
    from_1
        .write_all(msg)
        .expect("a write during the cut is buffered, not refused");
    at_2.set_read_timeout(Some(within)).expect("read timeout");
    let mut buf = [0u8; 64];
    match at_2.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            step!("nothing arrives across the cut within {within:?}")
        }
        other => panic!("a read across the cut: {other:?}"),
    }

    ns.heal();
    assert!(ns.cuts().is_empty());
    let healed = Instant::now();
    at_2.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let mut got = vec![0u8; msg.len()];
    at_2.read_exact(&mut got)
        .expect("what was sent during the cut arrives after the heal");
    assert_eq!(&got, msg);
    step!(
        "it arrived {:?} after the heal (TCP retransmission)",
        healed.elapsed()
    );
    ns.connect_from(2, at(1), within)
        .expect("connect 2 -> 1 after the heal");
}

#[test]
fn a_node_in_a_namespace_is_paused_killed_and_restarted_as_any_other() {
    let _serial = common::serial();
    let mut c = Cluster::start_in_netns(3, OVERRIDES);
    let all = ids(&c);
    let state = |c: &Cluster, id: i32| -> Option<char> {
        let pid = c.node(id).pid()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) S ...": the state follows the command name.
        stat.rsplit(") ").next()?.chars().next()
    };
    c.signal(3, "STOP");
    eventually(TIMEOUT, "node 3 to be stopped", || {
        (state(&c, 3) == Some('T')).then_some(())
    });
    c.signal(3, "CONT");
    eventually(TIMEOUT, "node 3 to run again", || {
        (state(&c, 3) != Some('T')).then_some(())
    });
    c.kill9(3);
    eventually(TIMEOUT, "nodes 1 and 2 to fence the killed node 3", || {
        [1, 2]
            .iter()
            .all(|&id| c.view(id).is_ok_and(|v| v.broker_ids == [1, 2]))
            .then_some(())
    });
    c.restart(3);
    let view = eventually(TIMEOUT, "every node to list every broker again", || {
        let views: Vec<ClusterView> = all
            .iter()
            .map(|&id| c.view(id).ok())
            .collect::<Option<_>>()?;
        views
            .iter()
            .all(|v| v.broker_ids == all)
            .then(|| views[0].clone())
    });
    step!("after kill -9 and restart of node 3: {view:?}");
    assert!(
        c.netns()
            .expect("netns")
            .holds_pid(3, c.node(3).pid().expect("pid")),
        "the restarted node 3 runs in its namespace"
    );
}

#[test]
fn an_isolated_leader_is_replaced_and_acknowledges_nothing_after() {
    let _serial = common::serial();
    let topic = "isolated-leader";
    let c = Cluster::start_in_netns(3, OVERRIDES);
    let all = ids(&c);
    // A leader that is not the active controller: isolating it then
    // partitions the partition, not the quorum.
    let controller = agreed_controller(&c, &all, "a controller", |_| true);
    let preferred = *all
        .iter()
        .find(|&&id| id != controller)
        .expect("a non-controller");
    let mut replicas = vec![preferred];
    replicas.extend(all.iter().filter(|&&id| id != preferred));
    create_with_replicas(&c, topic, &replicas);
    let producer = producer(&c, topic);
    producer.wait_acks_since(Instant::now(), 200, TIMEOUT, "before the partition");
    let before = wait_full_isr(&c, topic, 0, TIMEOUT);
    let old = before.leader;
    let controller = agreed_controller(&c, &all, "a controller", |_| true);
    step!(
        "leader {old} (epoch {}), active controller {controller}{}",
        before.leader_epoch,
        if old == controller {
            ": the same node after all"
        } else {
            ""
        }
    );
    let rest = others(&c, &[old]);
    let old_addr = c.node(old).bootstrap();
    let last_before = producer.max_acked_offset();

    c.isolate(old);
    let isolated = Instant::now();
    // A write that reaches the old leader right after the cut, before it
    // can have noticed anything.
    let early = probe_produce_in_background(old_addr.clone(), topic, "probe-early");
    let after = wait_state(
        &c,
        &rest,
        topic,
        0,
        FAILOVER_TIMEOUT,
        "a new leader among the majority",
        |s| s.leader > 0 && s.leader != old,
    );
    step!(
        "nodes {rest:?} elected leader {} (epoch {}) {:?} after the cut; ISR {:?}",
        after.leader,
        after.leader_epoch,
        isolated.elapsed(),
        after.isr
    );
    assert!(
        after.leader_epoch > before.leader_epoch,
        "leader epoch did not grow: {before:?} -> {after:?}"
    );
    producer.wait_acks_since(
        isolated,
        100,
        FAILOVER_TIMEOUT,
        "on the new leader while the old one is isolated",
    );
    if let Some(first) = producer.first_ack_after(isolated, last_before) {
        step!(
            "the producer's first acknowledgement after the cut: offset {} (last before: {last_before}), {:?} after the cut",
            first.offset,
            first.at - isolated
        );
    }
    step!(
        "the isolated node {old} says: {:?}",
        partition_state(&old_addr, topic, 0)
    );
    // And one long after: the majority has moved on for seconds.
    let late = probe_produce(&old_addr, topic, "probe-late");
    let early = early.join().expect("probe thread");
    step!("the isolated old leader {old} answered the probes (error code, base offset): right after the cut {early:?}, later {late:?}");
    assert!(
        c.is_cut(old, rest[0]),
        "still isolated while the probes were answered"
    );
    producer.wait_acks_since(Instant::now(), 50, TIMEOUT, "still on the new leader");

    c.heal();
    let healed = Instant::now();
    let rejoined = wait_full_isr(&c, topic, 0, REJOIN_TIMEOUT);
    step!(
        "node {old} back in the ISR {:?} after the heal (leader {})",
        healed.elapsed(),
        rejoined.leader
    );
    producer.wait_acks_since(healed, 100, TIMEOUT, "after the heal");
    finish_and_verify(&c, topic, producer, &["probe-early", "probe-late"]);
    for (when, answer) in [("right after the cut", &early), ("later", &late)] {
        assert!(
            !matches!(answer, Ok((0, _))),
            "the isolated old leader {old} acknowledged an acks=-1 write {when}: {answer:?}"
        );
    }
}

#[test]
fn an_isolated_active_controller_loses_the_quorum_and_nothing_is_lost() {
    let _serial = common::serial();
    let (before_topic, during_topic, minority_topic) = (
        "before-the-partition",
        "during-the-partition",
        "asked-of-the-minority",
    );
    let c = Cluster::start_in_netns(3, OVERRIDES);
    let all = ids(&c);
    // The controller leads the partition too: the majority has to elect a
    // controller before it can replace the leader.
    let controller = agreed_controller(&c, &all, "a controller", |_| true);
    let mut replicas = vec![controller];
    replicas.extend(all.iter().filter(|&&id| id != controller));
    create_with_replicas(&c, before_topic, &replicas);
    let producer = producer(&c, before_topic);
    producer.wait_acks_since(Instant::now(), 200, TIMEOUT, "before the partition");
    let old = agreed_controller(&c, &all, "a controller", |_| true);
    let rest = others(&c, &[old]);
    let leader = wait_full_isr(&c, before_topic, 0, TIMEOUT).leader;
    step!("active controller {old}, leader of {before_topic}/0 {leader}; majority {rest:?}");
    let last_before = producer.max_acked_offset();

    c.isolate(old);
    let isolated = Instant::now();
    // Asked directly, the isolated controller has no quorum to commit to.
    let old_addr = c.node(old).bootstrap();
    let minority = std::thread::spawn(move || probe_create(&old_addr, minority_topic));
    let new = agreed_controller(&c, &rest, "a new controller among the majority", |id| {
        id != old
    });
    step!(
        "nodes {rest:?} name controller {new} {:?} after the cut",
        isolated.elapsed()
    );

    let (code, msg, took) =
        raw_create_topic(&c.node(rest[0]).bootstrap(), during_topic, 3).expect("CreateTopics");
    step!(
        "CreateTopics {during_topic} through node {}: error {code} {msg:?} after {took:?}",
        rest[0]
    );
    assert_eq!(code, 0, "CreateTopics through the majority: {msg:?}");
    let listed = |id: i32, want: &[(&str, usize)]| {
        let addr = c.node(id).bootstrap();
        eventually(TIMEOUT, &format!("node {id} to list {want:?}"), || {
            let have = topics_on(&addr).ok()?;
            want.iter()
                .all(|(t, n)| have.get(*t) == Some(n))
                .then_some(have)
        })
    };
    for &id in &rest {
        listed(id, &[(before_topic, 1), (during_topic, 3)]);
    }
    let after = wait_state(
        &c,
        &rest,
        before_topic,
        0,
        FAILOVER_TIMEOUT,
        "a leader among the majority",
        |s| s.leader > 0 && s.leader != old,
    );
    step!(
        "{before_topic}/0: leader {} (epoch {}) {:?} after the cut; ISR {:?}",
        after.leader,
        after.leader_epoch,
        isolated.elapsed(),
        after.isr
    );
    producer.wait_acks_since(
        isolated,
        100,
        FAILOVER_TIMEOUT,
        "while the controller is isolated",
    );
    if let Some(first) = producer.first_ack_after(isolated, last_before) {
        step!(
            "the producer's first acknowledgement after the cut: offset {}, {:?} after the cut",
            first.offset,
            first.at - isolated
        );
    }
    let minority = minority.join().expect("create thread");
    step!(
        "the isolated node {old} answered CreateTopics {minority_topic}: {minority:?}; it says {:?}",
        c.view(old)
    );
    assert!(c.is_cut(old, rest[0]));
    assert!(
        !matches!(minority, Ok((0, _))),
        "the isolated controller {old} created {minority_topic} without a quorum: {minority:?}"
    );

    c.heal();
    let healed = Instant::now();
    let controller = eventually(
        REJOIN_TIMEOUT,
        "every node to list every broker and agree on a controller",
        || {
            let views: Vec<ClusterView> = all
                .iter()
                .map(|&id| c.view(id).ok())
                .collect::<Option<_>>()?;
            let first = views.first()?.controller_id;
            (first > 0
                && views
                    .iter()
                    .all(|v| v.controller_id == first && v.broker_ids == all))
            .then_some(first)
        },
    );
    let have: BTreeMap<String, usize> = listed(old, &[(before_topic, 1), (during_topic, 3)]);
    step!(
        "{:?} after the heal node {old} follows controller {controller} and lists {have:?}",
        healed.elapsed()
    );
    if have.contains_key(minority_topic) {
        step!("{minority_topic} exists after all (its CreateTopics was answered {minority:?})");
    }
    wait_full_isr(&c, before_topic, 0, REJOIN_TIMEOUT);
    producer.wait_acks_since(healed, 100, TIMEOUT, "after the heal");
    finish_and_verify(&c, before_topic, producer, &[]);
}
