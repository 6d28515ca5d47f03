//! A single `runnel serve` node against real Kafka clients: librdkafka (via
//! the `rdkafka` crate), kcat, and kafka-python. Each test starts its own
//! node in its own directory and checks what a user of those clients relies
//! on: topics, produce at every acks level, consume byte-for-byte, offsets by
//! time, auto-creation, durability across kill -9 and clean restarts,
//! compression, and long-poll fetch.
//!
//! There are no consumer groups yet, so consumers use `assign` with explicit
//! offsets and never commit.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::executor::block_on;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{DescribeClusterRequest, FetchRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use common::{Node, RawConn};

const TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- helpers --

/// One consumed (or expected) record, compared byte-for-byte.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn rec_of(m: &BorrowedMessage<'_>) -> Rec {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    Rec {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    }
}

fn owned_headers(hs: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
    hs.iter().fold(OwnedHeaders::new(), |acc, (k, v)| {
        acc.insert(Header {
            key: k.as_str(),
            value: v.as_deref(),
        })
    })
}

fn producer(node: &Node, extra: &[(&str, &str)]) -> FutureProducer {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", node.bootstrap())
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    cfg.create().expect("create producer")
}

fn consumer(node: &Node) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // An out-of-range answer must show up as an error, not a silent jump.
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        // librdkafka refuses assign() without a group.id ("Unknown group");
        // nothing is committed, so the group is never used.
        .set("group.id", "runnel-tests-assign")
        .create()
        .expect("create consumer")
}

fn admin(node: &Node) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .create()
        .expect("create admin client")
}

fn admin_opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(TIMEOUT))
}

fn create_topic(node: &Node, name: &str, partitions: i32) {
    step!("create topic {name} with {partitions} partitions");
    let res = common::topics::create_topic(&node.bootstrap(), name, partitions, 1, &[], TIMEOUT);
    assert_eq!(res, Ok(()), "CreateTopics {name}");
    wait_for_topic(node, name, partitions);
}

/// Waits until Metadata shows the topic with that many partitions, each led by node 1.
fn wait_for_topic(node: &Node, name: &str, partitions: i32) {
    let c = consumer(node);
    common::eventually(TIMEOUT, &format!("topic {name} in metadata"), || {
        let md = c.fetch_metadata(Some(name), TIMEOUT).ok()?;
        let t = md.topics().iter().find(|t| t.name() == name)?;
        if t.error().is_some() || t.partitions().len() != partitions as usize {
            return None;
        }
        t.partitions()
            .iter()
            .all(|p| p.leader() == 1 && p.error().is_none())
            .then_some(())
    });
}

/// Topic names in a full Metadata listing.
fn topic_names(node: &Node) -> Vec<String> {
    let md = consumer(node)
        .fetch_metadata(None, TIMEOUT)
        .expect("Metadata for all topics");
    let mut names: Vec<String> = md.topics().iter().map(|t| t.name().to_string()).collect();
    names.sort();
    names
}

fn partition_count(node: &Node, topic: &str) -> usize {
    let md = consumer(node)
        .fetch_metadata(Some(topic), TIMEOUT)
        .expect("Metadata for a topic");
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .unwrap_or_else(|| panic!("{topic} missing from Metadata"));
    assert!(t.error().is_none(), "{topic}: {:?}", t.error());
    t.partitions().len()
}

fn watermarks(node: &Node, topic: &str, partition: i32) -> (i64, i64) {
    consumer(node)
        .fetch_watermarks(topic, partition, TIMEOUT)
        .unwrap_or_else(|e| panic!("watermarks of {topic}/{partition}: {e}"))
}

/// Reads `count` records from one partition starting at `from`.
fn consume(node: &Node, topic: &str, partition: i32, from: Offset, count: usize) -> Vec<Rec> {
    let c = consumer(node);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, from)
        .expect("partition offset");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::with_capacity(count);
    let deadline = Instant::now() + TIMEOUT;
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "read {} of {count} records from {topic}/{partition} within {TIMEOUT:?}",
            out.len()
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(rec_of(&m)),
            Some(Err(e)) => panic!("consuming {topic}/{partition}: {e}"),
            None => {}
        }
    }
    // Nothing may follow what the watermark promised.
    if let Some(Ok(m)) = c.poll(Duration::from_millis(300)) {
        panic!("unexpected extra record {:?}", rec_of(&m));
    }
    out
}

/// Reads a whole partition, from the log start to the high watermark.
fn consume_all(node: &Node, topic: &str, partition: i32) -> Vec<Rec> {
    let (lo, hi) = watermarks(node, topic, partition);
    assert_eq!(lo, 0, "{topic}/{partition} log start");
    consume(
        node,
        topic,
        partition,
        Offset::Beginning,
        usize::try_from(hi - lo).expect("watermarks in order"),
    )
}

/// Sends one record and waits for its delivery report.
fn send_one(
    p: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &[u8],
    value: &[u8],
) -> (i32, i64) {
    let fut = p
        .send_result(
            FutureRecord::to(topic)
                .partition(partition)
                .key(key)
                .payload(value),
        )
        .map_err(|(e, _)| e)
        .expect("enqueue");
    let d = block_on(fut)
        .expect("delivery future")
        .map_err(|(e, _)| e)
        .expect("delivered");
    (d.partition, d.offset)
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("millis fit i64")
}

/// A deterministic, non-UTF-8, varied payload.
fn payload(tag: &str, i: usize, len: usize) -> Vec<u8> {
    let mut v = format!("{tag}-{i}:").into_bytes();
    v.extend((0..len).map(|j| ((i * 31 + j * 7) % 256) as u8));
    v
}

// ------------------------------------------------------------------ tests --

#[test]
fn create_topic_produce_at_every_acks_level_and_consume() {
    let node = Node::start(&[]);
    let topic = "orders";
    create_topic(&node, topic, 3);

    step!("metadata lists broker 1 at our address and 3 partitions led by it");
    let md = consumer(&node)
        .fetch_metadata(Some(topic), TIMEOUT)
        .expect("metadata");
    assert_eq!(md.brokers().len(), 1, "brokers: {}", md.brokers().len());
    let b = &md.brokers()[0];
    assert_eq!(
        (b.id(), b.host(), b.port()),
        (1, "127.0.0.1", i32::from(node.port()))
    );
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .expect("topic listed");
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1, 2]);
    for p in t.partitions() {
        assert_eq!(p.leader(), 1, "leader of partition {}", p.id());
        assert_eq!(p.replicas(), &[1]);
        assert_eq!(p.isr(), &[1]);
    }
    assert!(topic_names(&node).contains(&topic.to_string()));

    // Expected contents per partition, in offset order.
    let mut expected: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
    for acks in ["0", "1", "-1"] {
        step!("produce 3 x 10 records with keys and headers at acks={acks}");
        let p = producer(&node, &[("acks", acks)]);
        let mut futs = Vec::new();
        for partition in 0..3 {
            for i in 0..10usize {
                // A null key, an empty value and a null value (tombstone) are
                // all legal and must survive the round trip.
                let key = match i {
                    3 => None,
                    _ => Some(format!("key-{acks}-{partition}-{i}").into_bytes()),
                };
                let value = match i {
                    4 => Some(Vec::new()),
                    5 => None,
                    _ => Some(payload(&format!("acks{acks}"), i, 40)),
                };
                let headers = vec![
                    ("trace".to_string(), Some(format!("t{i}").into_bytes())),
                    ("bin".to_string(), Some(vec![0, 0xff, i as u8, 0x80])),
                    ("null".to_string(), None),
                ];
                let mut rec = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic)
                    .partition(partition)
                    .headers(owned_headers(&headers));
                if let Some(k) = &key {
                    rec = rec.key(k);
                }
                if let Some(v) = &value {
                    rec = rec.payload(v);
                }
                let fut = p.send_result(rec).map_err(|(e, _)| e).expect("enqueue");
                let exp = expected.entry(partition).or_default();
                let offset = exp.len() as i64;
                exp.push(Rec {
                    partition,
                    offset,
                    key: key.clone(),
                    value: value.clone(),
                    headers,
                });
                futs.push((partition, offset, fut));
            }
        }
        p.flush(TIMEOUT).expect("flush");
        for (partition, offset, fut) in futs {
            let d = block_on(fut)
                .expect("delivery future")
                .unwrap_or_else(|(e, _)| panic!("acks={acks}: delivery failed: {e}"));
            assert_eq!(d.partition, partition);
            if acks != "0" {
                // With acks=0 there is no answer, hence no offset to check.
                assert_eq!(
                    d.offset, offset,
                    "acks={acks}: offset in the delivery report"
                );
            }
        }
    }

    for partition in 0..3 {
        step!("consume partition {partition} from the beginning");
        assert_eq!(watermarks(&node, topic, partition), (0, 30));
        let got = consume(&node, topic, partition, Offset::Beginning, 30);
        let exp = &expected[&partition];
        for (g, e) in got.iter().zip(exp) {
            assert_eq!(g, e, "partition {partition}");
        }
    }

    step!("consume partition 1 from offset 17");
    let got = consume(&node, topic, 1, Offset::Offset(17), 13);
    assert_eq!(got, expected[&1][17..].to_vec());

    step!("consume partition 2 from the end: nothing");
    let got = consume(&node, topic, 2, Offset::End, 0);
    assert!(got.is_empty());
}

#[test]
fn auto_create_on_metadata_and_produce_uses_num_partitions() {
    let node = Node::start(&[
        ("auto.create.topics.enable", "true"),
        ("num.partitions", "5"),
    ]);

    step!("produce to a topic that does not exist yet");
    let p = producer(&node, &[("acks", "-1")]);
    let fut = p
        .send_result(FutureRecord::to("auto-produce").key("k").payload("v"))
        .map_err(|(e, _)| e)
        .expect("enqueue");
    let d = block_on(fut)
        .expect("delivery future")
        .unwrap_or_else(|(e, _)| panic!("produce to an auto-created topic: {e}"));
    assert!((0..5).contains(&d.partition), "partition {}", d.partition);
    assert_eq!(d.offset, 0);
    assert_eq!(partition_count(&node, "auto-produce"), 5);

    step!("Metadata v9 with allow_auto_topic_creation=true creates the topic");
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("auto-meta"))))]))
        .with_allow_auto_topic_creation(true);
    let resp = conn.roundtrip(9, 7, &req).expect("metadata");
    let t = &resp.topics[0];
    // Kafka answers LEADER_NOT_AVAILABLE (5) while the topic is being
    // created, or the topic itself once it is there.
    assert!(
        t.error_code == 0 || t.error_code == 5,
        "auto-create via Metadata: error {}",
        t.error_code
    );
    wait_for_topic(&node, "auto-meta", 5);

    step!("a librdkafka client asking for a topic with allow.auto.create.topics creates it");
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("allow.auto.create.topics", "true")
        .create()
        .expect("consumer");
    common::eventually(TIMEOUT, "auto-meta-2 created", || {
        let md = c.fetch_metadata(Some("auto-meta-2"), TIMEOUT).ok()?;
        let t = md.topics().iter().find(|t| t.name() == "auto-meta-2")?;
        (t.error().is_none() && t.partitions().len() == 5).then_some(())
    });

    let names = topic_names(&node);
    for t in ["auto-produce", "auto-meta", "auto-meta-2"] {
        assert!(names.contains(&t.to_string()), "{t} missing from {names:?}");
    }
}

#[test]
fn unknown_topic_when_auto_create_is_disabled() {
    let node = Node::start(&[("auto.create.topics.enable", "false")]);

    step!("Metadata v9 asking to auto-create is answered UNKNOWN_TOPIC_OR_PARTITION");
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("nope"))))]))
        .with_allow_auto_topic_creation(true);
    let resp = conn.roundtrip(9, 1, &req).expect("metadata");
    assert_eq!(resp.topics.len(), 1);
    assert_eq!(resp.topics[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");

    step!("producing to an unknown topic fails with an unknown-topic error");
    let p = producer(
        &node,
        &[
            ("message.timeout.ms", "10000"),
            ("topic.metadata.propagation.max.ms", "1000"),
        ],
    );
    let fut = p
        .send_result(FutureRecord::to("nope-produce").key("k").payload("v"))
        .map_err(|(e, _)| e)
        .expect("enqueue");
    match block_on(fut).expect("delivery future") {
        Ok(d) => panic!("produce to an unknown topic succeeded: {d:?}"),
        Err((KafkaError::MessageProduction(code), _)) => assert!(
            matches!(
                code,
                RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition
            ),
            "expected an unknown-topic error, got {code:?}"
        ),
        Err((e, _)) => panic!("expected an unknown-topic error, got {e:?}"),
    }

    let names = topic_names(&node);
    assert!(
        !names.iter().any(|n| n.starts_with("nope")),
        "a topic was created although auto-create is off: {names:?}"
    );
}

#[test]
fn list_offsets_by_timestamp_and_watermarks() {
    let node = Node::start(&[]);
    let topic = "times";
    create_topic(&node, topic, 1);
    let base = now_ms() - 3_600_000;

    step!("produce 15 records with explicit timestamps base+i*1000 in several batches");
    for (range, linger) in [(0..10usize, "200"), (10..15usize, "0")] {
        let p = producer(&node, &[("acks", "-1"), ("linger.ms", linger)]);
        let futs: Vec<_> = range
            .map(|i| {
                p.send_result(
                    FutureRecord::to(topic)
                        .partition(0)
                        .key(&format!("k{i}"))
                        .payload(&format!("v{i}"))
                        .timestamp(base + i as i64 * 1000),
                )
                .map_err(|(e, _)| e)
                .expect("enqueue")
            })
            .collect();
        for f in futs {
            block_on(f)
                .expect("future")
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
    }

    step!("earliest and latest offsets");
    assert_eq!(watermarks(&node, topic, 0), (0, 15));

    step!("consumed records carry their CreateTime timestamps");
    let c = consumer(&node);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let mut seen = 0;
    let deadline = Instant::now() + TIMEOUT;
    while seen < 15 {
        assert!(Instant::now() < deadline, "read {seen} of 15");
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("message");
            assert_eq!(
                m.timestamp(),
                rdkafka::Timestamp::CreateTime(base + m.offset() * 1000),
                "timestamp of offset {}",
                m.offset()
            );
            seen += 1;
        }
    }

    // (timestamp asked for, offset expected): the first record whose
    // timestamp is >= the one asked for, or the end (-1) if none is.
    let cases = [
        (base - 50_000, Offset::Offset(0)),
        (base, Offset::Offset(0)),
        (base + 1, Offset::Offset(1)),
        (base + 2500, Offset::Offset(3)),
        (base + 9000, Offset::Offset(9)),
        (base + 9001, Offset::Offset(10)),
        (base + 14_000, Offset::Offset(14)),
        (base + 14_001, Offset::End),
    ];
    for (ts, want) in cases {
        let mut q = TopicPartitionList::new();
        q.add_partition_offset(topic, 0, Offset::Offset(ts))
            .expect("tpl");
        let got = c
            .offsets_for_times(q, TIMEOUT)
            .expect("ListOffsets by time");
        let e = got.find_partition(topic, 0).expect("partition in answer");
        assert!(e.error().is_ok(), "ts {ts}: {:?}", e.error());
        assert_eq!(e.offset(), want, "offset for timestamp base{:+}", ts - base);
    }
}

/// Produces `n` records spread over the topic's 3 partitions with acks=-1 and
/// returns the expected contents per partition (from the delivery reports).
fn produce_acked(node: &Node, topic: &str, tag: &str, n: usize) -> BTreeMap<i32, Vec<Rec>> {
    let p = producer(node, &[("acks", "-1"), ("linger.ms", "2")]);
    let futs: Vec<_> = (0..n)
        .map(|i| {
            let key = format!("{tag}-key-{i}").into_bytes();
            let value = payload(tag, i, 100);
            let partition = (i % 3) as i32;
            let fut = p
                .send_result(
                    FutureRecord::to(topic)
                        .partition(partition)
                        .key(&key)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .expect("enqueue");
            (key, value, fut)
        })
        .collect();
    let mut acked: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
    let mut acks = 0;
    for (key, value, fut) in futs {
        let d = block_on(fut)
            .expect("delivery future")
            .unwrap_or_else(|(e, _)| panic!("acks=-1 produce failed on a healthy broker: {e}"));
        acks += 1;
        acked.entry(d.partition).or_default().push(Rec {
            partition: d.partition,
            offset: d.offset,
            key: Some(key),
            value: Some(value),
            headers: vec![],
        });
    }
    step!("{acks} of {n} records acknowledged (acks=-1)");
    assert_eq!(acks, n);
    for recs in acked.values_mut() {
        recs.sort_by_key(|r| r.offset);
    }
    acked
}

/// Asserts the topic holds exactly `expected` per partition: every record,
/// byte-for-byte, at the offset its delivery report named, none twice.
fn assert_exactly(node: &Node, topic: &str, expected: &BTreeMap<i32, Vec<Rec>>) {
    for (partition, exp) in expected {
        let got = consume_all(node, topic, *partition);
        assert_eq!(
            got.len(),
            exp.len(),
            "{topic}/{partition}: {} records read, {} acknowledged",
            got.len(),
            exp.len()
        );
        let offsets: HashSet<i64> = got.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets.len(),
            got.len(),
            "duplicate offsets in {topic}/{partition}"
        );
        for (i, (g, e)) in got.iter().zip(exp).enumerate() {
            assert_eq!(
                g.offset, i as i64,
                "{topic}/{partition}: offsets must be dense"
            );
            assert_eq!(g, e, "{topic}/{partition} offset {}", e.offset);
        }
    }
}

#[test]
fn acked_records_survive_kill9() {
    let mut node = Node::start(&[]);
    let topic = "durable";
    create_topic(&node, topic, 3);
    let expected = produce_acked(&node, topic, "k9", 3000);

    node.kill9();
    node.restart();

    step!("the topic survived the crash");
    assert!(topic_names(&node).contains(&topic.to_string()));
    assert_eq!(partition_count(&node, topic), 3);

    step!("every acknowledged record is there, once, in order, byte-for-byte");
    assert_exactly(&node, topic, &expected);

    step!("new records continue after the recovered ones (no offset reuse)");
    let p = producer(&node, &[("acks", "-1")]);
    for partition in 0..3 {
        let next = expected[&partition].len() as i64;
        let (_, off) = send_one(&p, topic, partition, b"after", b"crash");
        assert_eq!(
            off, next,
            "first offset after the restart in partition {partition}"
        );
    }
}

/// (partition, offset, key) from one delivery report.
type Acked = (i32, i64, Vec<u8>);

#[test]
fn acked_records_survive_kill9_during_produce() {
    let mut node = Node::start(&[]);
    let topic = "inflight";
    create_topic(&node, topic, 3);

    // A producer keeps sending while the broker is killed and restarted.
    // Every record it got an ack for must be in the log at the acked offset;
    // records in flight at the crash may be lost or (no idempotence) repeated.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let failed = Arc::new(Mutex::new(0usize));
    let bootstrap = node.bootstrap();
    let worker = {
        let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
        std::thread::spawn(move || {
            let p: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("acks", "-1")
                .set("linger.ms", "2")
                .set("message.timeout.ms", "60000")
                .set("reconnect.backoff.max.ms", "200")
                .create()
                .expect("producer");
            let mut i = 0usize;
            let mut pending = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let key = format!("inflight-{i}").into_bytes();
                let partition = (i % 3) as i32;
                if let Ok(f) = p.send_result(
                    FutureRecord::to(topic)
                        .partition(partition)
                        .key(&key)
                        .payload(&key),
                ) {
                    pending.push((key, f));
                    i += 1;
                }
                if pending.len() >= 50 {
                    for (key, f) in pending.drain(..) {
                        match block_on(f).expect("future") {
                            Ok(d) => acked
                                .lock()
                                .expect("lock")
                                .push((d.partition, d.offset, key)),
                            Err(_) => *failed.lock().expect("lock") += 1,
                        }
                    }
                }
            }
            for (key, f) in pending {
                match block_on(f).expect("future") {
                    Ok(d) => acked
                        .lock()
                        .expect("lock")
                        .push((d.partition, d.offset, key)),
                    Err(_) => *failed.lock().expect("lock") += 1,
                }
            }
        })
    };

    common::eventually(TIMEOUT, "1000 acks before the crash", || {
        (acked.lock().expect("lock").len() >= 1000).then_some(())
    });
    node.kill9();
    let before_restart = acked.lock().expect("lock").len();
    std::thread::sleep(Duration::from_millis(500));
    node.restart();
    common::eventually(Duration::from_secs(60), "acks after the restart", || {
        (acked.lock().expect("lock").len() >= before_restart + 1000).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("producer thread");

    let acked = acked.lock().expect("lock").clone();
    step!(
        "{} records acknowledged, {} failed (in flight at the crash)",
        acked.len(),
        failed.lock().expect("lock")
    );
    for partition in 0..3 {
        let got = consume_all(&node, topic, partition);
        for (p, off, key) in acked.iter().filter(|(p, _, _)| *p == partition) {
            let r = got
                .get(usize::try_from(*off).expect("acked offset >= 0"))
                .unwrap_or_else(|| {
                    panic!("acked offset {p}/{off} is beyond the log end {}", got.len())
                });
            assert_eq!(r.offset, *off);
            assert_eq!(
                r.key.as_deref(),
                Some(key.as_slice()),
                "{p}/{off} holds another record than the one acknowledged there"
            );
        }
    }
}

#[test]
fn clean_restart_keeps_records_and_topics() {
    let mut node = Node::start(&[]);
    create_topic(&node, "clean-a", 3);
    create_topic(&node, "clean-b", 3);
    let expected = produce_acked(&node, "clean-a", "clean", 600);
    let before = topic_names(&node);

    node.stop();
    node.restart();

    step!("same topics, same records after SIGTERM and restart");
    assert_eq!(topic_names(&node), before);
    assert_exactly(&node, "clean-a", &expected);
    for partition in 0..3 {
        assert_eq!(watermarks(&node, "clean-b", partition), (0, 0));
    }
}

#[test]
fn deleted_topic_stays_deleted_after_restart() {
    let mut node = Node::start(&[("auto.create.topics.enable", "false")]);
    create_topic(&node, "keep", 3);
    create_topic(&node, "gone", 3);
    produce_acked(&node, "gone", "gone", 30);
    produce_acked(&node, "keep", "keep", 30);

    step!("delete topic gone");
    let res = block_on(admin(&node).delete_topics(&["gone"], &admin_opts())).expect("DeleteTopics");
    for r in res {
        if let Err((t, e)) = r {
            panic!("DeleteTopics {t}: {e:?}");
        }
    }
    common::eventually(TIMEOUT, "gone to leave the metadata", || {
        (!topic_names(&node).contains(&"gone".to_string())).then_some(())
    });

    step!("deleting it again is UNKNOWN_TOPIC_OR_PARTITION");
    let res = block_on(admin(&node).delete_topics(&["gone"], &admin_opts())).expect("DeleteTopics");
    match &res[0] {
        Err((_, code)) => assert_eq!(*code, RDKafkaErrorCode::UnknownTopicOrPartition),
        Ok(t) => panic!("deleting a deleted topic succeeded: {t}"),
    }

    node.stop();
    node.restart();
    let names = topic_names(&node);
    assert!(
        !names.contains(&"gone".to_string()),
        "gone is back: {names:?}"
    );
    assert!(
        names.contains(&"keep".to_string()),
        "keep is missing: {names:?}"
    );
    assert_eq!(watermarks(&node, "keep", 0), (0, 10));

    step!("a topic of the same name starts empty");
    create_topic(&node, "gone", 2);
    for partition in 0..2 {
        assert_eq!(watermarks(&node, "gone", partition), (0, 0));
    }
}

#[test]
fn create_partitions_grows_a_topic() {
    let mut node = Node::start(&[]);
    create_topic(&node, "grow", 1);
    let p = producer(&node, &[("acks", "-1")]);
    send_one(&p, "grow", 0, b"k0", b"before");

    step!("grow grow from 1 to 3 partitions");
    let res =
        block_on(admin(&node).create_partitions(&[NewPartitions::new("grow", 3)], &admin_opts()))
            .expect("CreatePartitions");
    for r in res {
        if let Err((t, e)) = r {
            panic!("CreatePartitions {t}: {e:?}");
        }
    }
    wait_for_topic(&node, "grow", 3);

    step!("shrinking is refused (INVALID_PARTITIONS)");
    let res =
        block_on(admin(&node).create_partitions(&[NewPartitions::new("grow", 2)], &admin_opts()))
            .expect("CreatePartitions");
    match &res[0] {
        Err((_, code)) => assert_eq!(*code, RDKafkaErrorCode::InvalidPartitions),
        Ok(t) => panic!("shrinking {t} succeeded"),
    }

    step!("the new partitions take records; the old one kept its own");
    let p = producer(&node, &[("acks", "-1")]);
    assert_eq!(send_one(&p, "grow", 2, b"k2", b"new"), (2, 0));
    let got = consume(&node, "grow", 2, Offset::Beginning, 1);
    assert_eq!(got[0].value.as_deref(), Some(&b"new"[..]));
    assert_eq!(watermarks(&node, "grow", 0), (0, 1));

    node.stop();
    node.restart();
    assert_eq!(partition_count(&node, "grow"), 3);
    assert_eq!(watermarks(&node, "grow", 2), (0, 1));
}

#[test]
fn every_compression_codec_round_trips() {
    let node = Node::start(&[]);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("comp-{codec}");
        create_topic(&node, &topic, 1);
        step!("produce 300 records with compression.type={codec}");
        // A long linger packs many records into each compressed batch.
        let p = producer(
            &node,
            &[
                ("acks", "-1"),
                ("compression.type", codec),
                ("linger.ms", "50"),
            ],
        );
        let mut expected = Vec::new();
        let futs: Vec<_> = (0..300usize)
            .map(|i| {
                let key = format!("{codec}-{i}").into_bytes();
                // Compressible, and varied enough to catch misplaced bytes.
                let mut value = format!("{codec} record {i} ").repeat(20).into_bytes();
                value.extend(payload(codec, i, 64));
                let headers = vec![("codec".to_string(), Some(codec.as_bytes().to_vec()))];
                expected.push(Rec {
                    partition: 0,
                    offset: i as i64,
                    key: Some(key.clone()),
                    value: Some(value.clone()),
                    headers: headers.clone(),
                });
                p.send_result(
                    FutureRecord::to(&topic)
                        .partition(0)
                        .key(&key)
                        .payload(&value)
                        .headers(owned_headers(&headers)),
                )
                .map_err(|(e, _)| e)
                .expect("enqueue")
            })
            .collect();
        for (i, f) in futs.into_iter().enumerate() {
            let d = block_on(f)
                .expect("future")
                .unwrap_or_else(|(e, _)| panic!("{codec}: delivery failed: {e}"));
            assert_eq!(
                d.offset, i as i64,
                "{codec}: offsets are per record, not per batch"
            );
        }
        assert_eq!(watermarks(&node, &topic, 0), (0, 300));
        let got = consume(&node, &topic, 0, Offset::Beginning, 300);
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g, e, "{codec}");
        }
        step!("{codec}: read back 300 records, and from offset 150 mid-batch");
        let got = consume(&node, &topic, 0, Offset::Offset(150), 150);
        assert_eq!(got, expected[150..].to_vec(), "{codec} from offset 150");
    }
}

#[test]
fn long_poll_fetch_wakes_on_new_data_rdkafka() {
    let node = Node::start(&[]);
    let topic = "long-poll";
    create_topic(&node, topic, 1);

    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        // The broker holds the fetch up to 10 s; new data must cut that short.
        .set("fetch.wait.max.ms", "10000")
        .set("group.id", "runnel-tests-assign")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(0))
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    step!("consumer waits on the empty partition");
    assert!(
        c.poll(Duration::from_secs(2)).is_none(),
        "record on an empty partition"
    );

    let produced_at = {
        let p = producer(&node, &[("acks", "1")]);
        send_one(&p, topic, 0, b"k", b"late");
        Instant::now()
    };
    step!("produced one record while the consumer was waiting");
    match c.poll(Duration::from_secs(20)) {
        Some(Ok(m)) => {
            let waited = produced_at.elapsed();
            step!("consumer got it {waited:?} after the ack");
            assert_eq!(m.payload(), Some(&b"late"[..]));
            assert!(
                waited < Duration::from_secs(4),
                "a waiting fetch took {waited:?} to return new data (fetch.wait.max.ms=10000): \
                 the broker does not wake waiting fetches on produce"
            );
        }
        Some(Err(e)) => panic!("consume: {e}"),
        None => panic!("no record within 20 s"),
    }
}

#[test]
fn long_poll_fetch_wakes_on_new_data_raw() {
    let node = Node::start(&[]);
    let topic = "long-poll-raw";
    create_topic(&node, topic, 1);

    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    let req = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(10_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("long-poll-raw")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    step!("Fetch v12 with max_wait_ms=10000, min_bytes=1 on an empty partition");
    let sent = Instant::now();
    conn.send(12, 42, &req).expect("send fetch");

    std::thread::sleep(Duration::from_millis(1500));
    let p = producer(&node, &[("acks", "1")]);
    send_one(&p, topic, 0, b"k", b"wake-up");
    let produced = sent.elapsed();
    step!("produced after {produced:?}");

    let (cid, resp) = conn.recv::<FetchRequest>(12).expect("fetch response");
    let took = sent.elapsed();
    step!("fetch answered after {took:?}");
    assert_eq!(cid, 42);
    assert!(
        took >= Duration::from_millis(1400),
        "fetch returned after {took:?}, before any data existed: not a long poll"
    );
    assert!(
        took < produced + Duration::from_secs(3),
        "fetch answered {took:?} after sending, data came at {produced:?}"
    );
    let part = &resp.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    assert_eq!(part.high_watermark, 1);
    let mut records: Bytes = part.records.clone().expect("records in the fetch answer");
    let sets = RecordBatchDecoder::decode_all(&mut records).expect("decode record batches");
    let recs: Vec<_> = sets.into_iter().flat_map(|s| s.records).collect();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].offset, 0);
    assert_eq!(recs[0].value.as_deref(), Some(&b"wake-up"[..]));
}

#[test]
fn describe_cluster_and_metadata_agree_and_survive_restart() {
    let mut node = Node::start(&[]);
    let describe = |node: &Node| {
        let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
        let dc = conn
            .roundtrip(0, 1, &DescribeClusterRequest::default())
            .expect("DescribeCluster v0");
        let md = conn
            .roundtrip(12, 2, &MetadataRequest::default().with_topics(None))
            .expect("Metadata v12");
        (dc, md)
    };
    let (dc, md) = describe(&node);
    step!(
        "DescribeCluster: cluster {:?}, controller {}",
        dc.cluster_id,
        dc.controller_id.0
    );
    assert_eq!(dc.error_code, 0);
    assert!(!dc.cluster_id.is_empty(), "empty cluster id");
    assert_eq!(
        md.cluster_id.as_ref(),
        Some(&dc.cluster_id),
        "Metadata and DescribeCluster disagree"
    );
    assert_eq!(dc.controller_id.0, 1);
    assert_eq!(md.controller_id.0, 1);
    assert_eq!(dc.brokers.len(), 1);
    let b = &dc.brokers[0];
    assert_eq!(
        (b.broker_id.0, b.host.as_str(), b.port),
        (1, "127.0.0.1", i32::from(node.port()))
    );

    step!("the cluster id is formatted once and kept across restarts");
    node.stop();
    node.restart();
    let (dc2, _) = describe(&node);
    assert_eq!(dc2.cluster_id, dc.cluster_id);
}

/// Runs a command with a bound on its time; returns (status ok, stdout, stderr).
fn run(cmd: &mut Command, stdin: Option<&str>, timeout: Duration) -> (bool, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kcat_lists_and_round_trips() {
    if Command::new("kcat").arg("-V").output().is_err() {
        panic!("kcat is not installed (the Makefile installs it: apt-get install kcat); this test needs it");
    }
    let node = Node::start(&[]);
    create_topic(&node, "kc", 3);

    step!("kcat -L");
    let (ok, out, err) = run(
        Command::new("kcat").args(["-b", &node.bootstrap(), "-L"]),
        None,
        TIMEOUT,
    );
    assert!(ok, "kcat -L failed:\n{out}\n{err}");
    assert!(
        out.contains(&format!("broker 1 at 127.0.0.1:{}", node.port())),
        "kcat -L does not list broker 1:\n{out}"
    );
    assert!(
        out.contains("topic \"kc\" with 3 partitions"),
        "kcat -L:\n{out}"
    );

    step!("kcat -P three keyed records into partition 1");
    let (ok, out, err) = run(
        Command::new("kcat").args([
            "-b",
            &node.bootstrap(),
            "-P",
            "-t",
            "kc",
            "-p",
            "1",
            "-K",
            ":",
        ]),
        Some("a:alpha\nb:beta\nc:gamma\n"),
        TIMEOUT,
    );
    assert!(ok, "kcat -P failed:\n{out}\n{err}");

    step!("kcat -C -e reads them back");
    let (ok, out, err) = run(
        Command::new("kcat").args([
            "-b",
            &node.bootstrap(),
            "-C",
            "-t",
            "kc",
            "-p",
            "1",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%k=%s@%o\\n",
        ]),
        None,
        TIMEOUT,
    );
    assert!(ok, "kcat -C failed:\n{out}\n{err}");
    assert_eq!(
        out, "a=alpha@0\nb=beta@1\nc=gamma@2\n",
        "kcat -C output; stderr:\n{err}"
    );
}

#[test]
fn kafka_python_round_trips() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/roundtrip.py");
    let probe = Command::new("python3")
        .args(["-c", "import kafka"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => panic!("python3 with kafka-python is needed (the Makefile installs it: pip install kafka-python)"),
    }
    let node = Node::start(&[]);
    step!("python3 {script} {}", node.bootstrap());
    let (ok, out, err) = run(
        Command::new("python3").arg(script).arg(node.bootstrap()),
        None,
        Duration::from_secs(120),
    );
    eprintln!("{out}{err}");
    assert!(ok, "kafka-python round trip failed (output above)");
    assert!(out.contains("OK"), "the script did not report OK");
}

/// A node with two client listeners (as in a container: one name for the
/// compose network, one for the host) answers Metadata and FindCoordinator
/// with the advertised address of the listener the client came in on, as
/// Kafka does; a client on the wrong one would be sent where it cannot go.
#[test]
fn metadata_answers_with_the_clients_own_listener() {
    use kafka_protocol::messages::{
        FindCoordinatorRequest, FindCoordinatorResponse, MetadataResponse,
    };
    let dir = tempfile::tempdir().unwrap();
    let (internal, external) = (common::free_port(), common::free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .arg("serve")
        .args(["--override", &format!("listeners=INTERNAL://127.0.0.1:{internal},EXTERNAL://127.0.0.1:{external}")])
        .args(["--override", &format!("advertised.listeners=INTERNAL://node1.internal:{internal},EXTERNAL://localhost:{external}")])
        .args(["--override", "listener.security.protocol.map=INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"])
        .args(["--override", &format!("log.dirs={}", dir.path().join("data").display())])
        .args(["--override", "metrics.listener="])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.path().join("log")).unwrap()))
        .spawn()
        .expect("spawn runnel serve");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(child);
    let ask = |port: u16| -> Option<(String, i32, String)> {
        let mut conn = RawConn::connect(&format!("127.0.0.1:{port}")).ok()?;
        let m: MetadataResponse = conn
            .roundtrip(9, 1, &MetadataRequest::default().with_topics(Some(vec![])))
            .ok()?;
        let b = m.brokers.first()?;
        let f: FindCoordinatorResponse = conn
            .roundtrip(
                3,
                2,
                &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g")),
            )
            .ok()?;
        Some((b.host.to_string(), b.port, f.host.to_string()))
    };
    let on_internal =
        common::eventually(TIMEOUT, "the node to answer on INTERNAL", || ask(internal));
    assert_eq!(
        on_internal,
        (
            "node1.internal".to_string(),
            internal as i32,
            "node1.internal".to_string()
        )
    );
    let on_external = ask(external).expect("Metadata on EXTERNAL");
    assert_eq!(
        on_external,
        (
            "localhost".to_string(),
            external as i32,
            "localhost".to_string()
        )
    );
}
