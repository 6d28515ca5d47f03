//! Graceful shutdown (SIGTERM): what a client of a broker being stopped
//! relies on.
//!
//! * One node, one connection with many acks=-1 Produce requests in flight
//!   when SIGTERM arrives. On one node an acks=-1 wait is only an fsync,
//!   so one long-poll Fetch in the pipeline stands in for a request that
//!   waits in the background (as an acks=-1 produce waits for followers in
//!   a cluster): the SIGTERM comes while it waits, with produces read and
//!   appended behind it. The client cannot know which requests the broker
//!   had read, so the checks are what it can observe: the long poll and
//!   the answers behind it come, in request order, each a whole frame, then
//!   the connection closes; every record acknowledged is read back after a
//!   restart; and no record in the log belongs to a request that got no
//!   answer (one the broker read and wrote, then dropped without a word).
//!   The process exits 0 and logs "shut down cleanly".
//! * Three nodes (RF 3, `min.insync.replicas=2`): the partition's leader is
//!   stopped with SIGTERM under a continuous idempotent acks=all producer,
//!   the producer keeps going, the node is restarted. The node exits 0
//!   promptly, the producer loses nothing, and every acknowledged record is
//!   read back exactly once, in order.
//!
//! Run with the step log: `cargo test --release --test shutdown -- --nocapture`.

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/partition.rs"]
mod partition;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cluster::Cluster;
use common::{Node, RawConn};
use futures::executor::block_on;
use indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use partition::{high_watermark, list_latest, others, read_below_hw, wait_full_isr, wait_state};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped leader may take to exit: the fence is one Raft
/// commit and moves its leaderships at once, so the drain has nothing long
/// to wait for. Well under the broker's shutdown grace (12 s): a shutdown
/// that needed the grace fails here.
const EXIT_WITHIN: Duration = Duration::from_secs(10);
/// NOT_LEADER_OR_FOLLOWER: a produce that arrives (or waits) while the
/// stopping broker gives up its leaderships.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        // librdkafka refuses assign() without a group.id; nothing is committed.
        .set("group.id", "runnel-shutdown-tests")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false");
    cfg
}

fn key_of<M: Message>(m: &M) -> String {
    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned()
}

/// The index `i` of a key "<prefix>-<i>".
fn index_of(key: &str) -> u64 {
    key.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a key this test never wrote: {key:?}"))
}

// ------------------------------------------------------------ one node --

/// Produce v9, acks=-1: one batch of one record, key "drain-<i>", the key
/// padded to `len` bytes as value.
fn produce_frame(topic: &str, i: usize, len: usize) -> Vec<u8> {
    let key = format!("drain-{i:06}");
    let mut value = key.clone().into_bytes();
    value.resize(len, b'.');
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from(key)),
        value: Some(Bytes::from(value)),
        headers: IndexMap::new(),
    };
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        std::iter::once(&record),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.freeze()))])]);
    common::encode_request(9, i as i32, &req)
}

/// The request of the pipeline that is a long poll.
const LONG_POLL: usize = 199;
const LONG_POLL_MS: i32 = 3000;

/// Fetch v12 for no partitions with `min_bytes` 1: the broker answers
/// after `LONG_POLL_MS`, whatever happens meanwhile.
fn long_poll_frame(i: usize) -> Vec<u8> {
    let req = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(LONG_POLL_MS)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1);
    common::encode_request(12, i as i32, &req)
}

/// Request `i` of the pipeline.
fn pipeline_frame(topic: &str, i: usize, len: usize) -> Vec<u8> {
    if i == LONG_POLL {
        long_poll_frame(i)
    } else {
        produce_frame(topic, i, len)
    }
}

/// Waits until the node's Metadata names a leader for `topic`/0.
fn wait_leader(node: &Node, topic: &str) {
    common::eventually(TIMEOUT, "a leader for the partition", || {
        partition::partition_state(&node.bootstrap(), topic, 0)
            .ok()
            .filter(|s| s.leader > 0)
    });
}

#[test]
fn sigterm_answers_every_request_it_read() {
    let _serial = serial();
    const REQUESTS: usize = 20_000;
    const VALUE_LEN: usize = 2048;
    /// After the answer before the long poll, how long the broker is given
    /// to read the long poll and the produces behind it (microseconds of
    /// work) before the SIGTERM.
    const SETTLE: Duration = Duration::from_millis(200);
    let topic = "drain";
    let mut node = Node::start(&[]);
    let (code, msg, _) =
        cluster::raw_create_topic(&node.bootstrap(), topic, 1).expect("CreateTopics");
    assert_eq!(code, 0, "CreateTopics: {msg:?}");
    wait_leader(&node, topic);

    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    conn.stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let mut out = conn.stream.try_clone().expect("clone the socket");
        let written = Arc::clone(&written);
        std::thread::spawn(move || {
            for i in 0..REQUESTS {
                // The broker stops reading once it shuts down: a write
                // that fails then is expected.
                if out.write_all(&pipeline_frame(topic, i, VALUE_LEN)).is_err() {
                    break;
                }
                written.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    step!(
        "writing {REQUESTS} requests on one connection: acks=-1 produces of {VALUE_LEN} bytes, \
         request {LONG_POLL} a {LONG_POLL_MS} ms long-poll fetch"
    );

    // By correlation id (= request index): a produce's (error code, base
    // offset); None for a long poll.
    let mut answers: Vec<Option<(i16, i64)>> = Vec::new();
    let mut signalled = false;
    loop {
        if answers.len() == LONG_POLL && !signalled {
            std::thread::sleep(SETTLE);
            step!(
                "{} answers read, {} requests written; the long poll waits",
                answers.len(),
                written.load(Ordering::SeqCst)
            );
            node.sigterm();
            signalled = true;
        }
        let frame = match conn.read_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => panic!(
                "after {} answers in order ({} requests written): {e}; \
                 a response was cut off or never came",
                answers.len(),
                written.load(Ordering::SeqCst)
            ),
        };
        let i = answers.len();
        let cid = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        assert_eq!(cid, i as i32, "answer #{i} out of order");
        if i == LONG_POLL {
            let (_, resp) =
                common::decode_response::<FetchRequest>(12, frame).expect("a Fetch response");
            assert_eq!(resp.error_code, 0, "long poll #{i}");
            answers.push(None);
            continue;
        }
        let (_, resp) =
            common::decode_response::<ProduceRequest>(9, frame).expect("a Produce response");
        let p = &resp.responses[0].partition_responses[0];
        answers.push(Some((p.error_code, p.base_offset)));
    }
    let _ = conn.stream.shutdown(Shutdown::Both);
    writer.join().expect("writer thread");
    let mut by_code: BTreeMap<i16, usize> = BTreeMap::new();
    for (code, _) in answers.iter().flatten() {
        *by_code.entry(*code).or_default() += 1;
    }
    step!(
        "the broker closed the connection after {} answers (error code: count {by_code:?}); \
         {} of {REQUESTS} requests written",
        answers.len(),
        written.load(Ordering::SeqCst)
    );
    assert!(
        answers.len() > LONG_POLL,
        "the broker closed the connection after {} answers, without answering the long poll \
         (request {LONG_POLL}) it was serving when SIGTERM came",
        answers.len()
    );
    assert!(
        by_code
            .keys()
            .all(|c| *c == 0 || *c == NOT_LEADER_OR_FOLLOWER),
        "answers other than success and NOT_LEADER_OR_FOLLOWER: {by_code:?}"
    );

    let (status, took) = node.wait_exit(common::STOP_TIMEOUT);
    assert!(
        status.success(),
        "runnel exited with {status} after SIGTERM\n{}",
        node.log_tail(40)
    );
    assert!(
        node.log().contains("shut down cleanly"),
        "no \"shut down cleanly\" in the log\n{}",
        node.log_tail(40)
    );
    step!("runnel exited 0 {took:?} after the connection closed");

    node.restart();
    wait_leader(&node, topic);
    // Metadata can name the leader a moment before it serves as one.
    let hw = common::eventually(TIMEOUT, "the high watermark", || {
        match list_latest(&node.bootstrap(), topic, 0) {
            Ok((0, hw)) => Some(hw),
            _ => None,
        }
    });
    let log = read_below_hw(
        &consumer_config(&node.bootstrap()),
        topic,
        0,
        hw,
        TIMEOUT,
        |m| key_of(m),
    );
    let answered = answers.len() as u64;
    let mut problems = Vec::new();
    let unanswered: Vec<&(i64, String)> = log
        .iter()
        .filter(|(_, k)| index_of(k) >= answered)
        .collect();
    if !unanswered.is_empty() {
        problems.push(format!(
            "{} records in the log belong to requests that were never answered \
             (only the first {answered} were), e.g. {:?}",
            unanswered.len(),
            &unanswered[..unanswered.len().min(5)]
        ));
    }
    if let Some(w) = log
        .windows(2)
        .find(|w| index_of(&w[0].1) >= index_of(&w[1].1))
    {
        problems.push(format!("the log is not in request order: {w:?}"));
    }
    let by_offset: HashMap<i64, &str> = log.iter().map(|(o, k)| (*o, k.as_str())).collect();
    let lost: Vec<String> = answers
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.filter(|(code, _)| *code == 0).map(|(_, off)| (i, off)))
        .filter(|(i, off)| by_offset.get(off).copied() != Some(format!("drain-{i:06}").as_str()))
        .take(5)
        .map(|(i, off)| {
            format!(
                "request {i} acknowledged at {off}, the log has {:?}",
                by_offset.get(&off)
            )
        })
        .collect();
    if !lost.is_empty() {
        problems.push(format!("acknowledged records missing: {lost:?}"));
    }
    step!(
        "read back {} records (HW {hw}) against {} acknowledgements: {}",
        log.len(),
        by_code.get(&0).copied().unwrap_or(0),
        if problems.is_empty() { "ok" } else { "FAILED" }
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    node.stop();
}

// ---------------------------------------------------------- three nodes --

#[derive(Default)]
struct Reports {
    /// (key, offset), in the order acknowledged.
    acked: Vec<(String, i64)>,
    /// (key, error) of writes that were not acknowledged.
    failed: Vec<(String, String)>,
}

struct Recorder {
    reports: Arc<Mutex<Reports>>,
}

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut r = self.reports.lock().expect("reports lock");
        match result {
            Ok(m) => r.acked.push((key_of(m), m.offset())),
            Err((e, m)) => r.failed.push((key_of(m), e.to_string())),
        }
    }
}

/// An idempotent acks=all producer on its own thread, sending keys
/// "v-0000001", ... to partition 0, as fast as it is acknowledged (2 ms
/// apart at most).
struct BgProducer {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    reports: Arc<Mutex<Reports>>,
    handle: Option<JoinHandle<Option<String>>>,
}

impl BgProducer {
    fn start(bootstrap: &str, topic: &str) -> BgProducer {
        let reports = Arc::new(Mutex::new(Reports::default()));
        let producer: ThreadedProducer<Recorder> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("retries", "2147483647")
            .set("message.timeout.ms", "120000")
            .set("request.timeout.ms", "5000")
            .set("socket.timeout.ms", "5000")
            .set("retry.backoff.ms", "50")
            .set("retry.backoff.max.ms", "500")
            .set("reconnect.backoff.ms", "20")
            .set("reconnect.backoff.max.ms", "500")
            .set("topic.metadata.refresh.interval.ms", "2000")
            .set("linger.ms", "5")
            .create_with_context(Recorder {
                reports: Arc::clone(&reports),
            })
            .expect("create producer");
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2, topic2) = (Arc::clone(&stop), Arc::clone(&sent), topic.to_string());
        let handle = std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop2.load(Ordering::SeqCst) {
                let key = format!("v-{:07}", i + 1);
                match producer.send(
                    BaseRecord::<str, str>::to(&topic2)
                        .partition(0)
                        .key(&key)
                        .payload(&key),
                ) {
                    Ok(()) => {
                        i += 1;
                        sent2.store(i, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            if let Err(e) = producer.flush(Duration::from_secs(150)) {
                eprintln!("producer flush: {e}");
            }
            producer
                .client()
                .fatal_error()
                .map(|(code, s)| format!("{code:?}: {s}"))
        });
        step!("producer: enable.idempotence=true, acks=all, to {topic}/0");
        BgProducer {
            stop,
            sent,
            reports,
            handle: Some(handle),
        }
    }

    fn acked(&self) -> usize {
        self.reports.lock().expect("lock").acked.len()
    }

    fn wait_more_acks(&self, more: usize, what: &str) {
        let start = self.acked();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.acked();
            if now >= start + more {
                step!("{what}: {now} acknowledgements so far");
                return;
            }
            let r = self.reports.lock().expect("lock");
            assert!(
                Instant::now() < deadline,
                "{what}: only {} of {more} more acknowledgements within 60 s \
                 (sent {}, failed {}, last failures {:?})",
                now - start,
                self.sent.load(Ordering::SeqCst),
                r.failed.len(),
                &r.failed[r.failed.len().saturating_sub(3)..]
            );
            drop(r);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops sending and waits for every delivery report: (reports, sent,
    /// librdkafka's fatal error if any).
    fn finish(mut self) -> (Reports, u64, Option<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let fatal = self
            .handle
            .take()
            .map(|h| h.join().expect("producer thread"))
            .unwrap_or_default();
        let sent = self.sent.load(Ordering::SeqCst);
        let r = std::mem::take(&mut *self.reports.lock().expect("lock"));
        step!(
            "producer finished: sent {sent}, acknowledged {}, failed {}, fatal error {fatal:?}",
            r.acked.len(),
            r.failed.len()
        );
        (r, sent, fatal)
    }
}

impl Drop for BgProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn admin_create(c: &Cluster, name: &str) {
    step!("create topic {name}: 1 partition, replication factor 3, min.insync.replicas 2");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap_all())
        .create()
        .expect("admin client");
    let res = block_on(
        admin.create_topics(
            &[NewTopic::new(name, 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "2")],
            &AdminOptions::new()
                .request_timeout(Some(TIMEOUT))
                .operation_timeout(Some(TIMEOUT)),
        ),
    )
    .expect("CreateTopics request");
    for r in res {
        if let Err((t, e)) = r {
            panic!("CreateTopics {t}: {e:?}");
        }
    }
    wait_full_isr(c, name, 0, TIMEOUT);
}

#[test]
fn sigterm_of_the_leader_under_acks_all_loses_nothing() {
    let _serial = serial();
    let topic = "stop-leader";
    let mut c = Cluster::start_with(
        3,
        &[
            "replica.lag.time.max.ms=3000",
            "default.replication.factor=3",
            "min.insync.replicas=2",
        ],
    );
    admin_create(&c, topic);
    let producer = BgProducer::start(&c.bootstrap_all(), topic);
    producer.wait_more_acks(300, "before the SIGTERM");

    let before = wait_full_isr(&c, topic, 0, TIMEOUT);
    let leader = before.leader;
    step!(
        "leader {leader} (epoch {}), ISR {:?}",
        before.leader_epoch,
        before.isr
    );
    let t = Instant::now();
    // Asserts a clean exit (status 0) within 30 s.
    c.stop(leader);
    let took = t.elapsed();
    let log = c.node(leader).log_since_start();
    assert!(
        log.contains("shut down cleanly"),
        "node {leader}: no \"shut down cleanly\" in its log\n{}",
        c.node(leader).log_tail(40)
    );
    assert!(
        took < EXIT_WITHIN,
        "node {leader} took {took:?} to exit after SIGTERM (bound {EXIT_WITHIN:?})\n{}",
        c.node(leader).log_tail(40)
    );
    step!("node {leader} exited 0 after {took:?}");

    let after = wait_state(
        &c,
        &others(&c, &[leader]),
        topic,
        0,
        TIMEOUT,
        "a new leader",
        |s| s.leader > 0 && s.leader != leader,
    );
    step!(
        "new leader {} epoch {}, ISR {:?}",
        after.leader,
        after.leader_epoch,
        after.isr
    );
    producer.wait_more_acks(300, "with the old leader down");
    c.restart(leader);
    wait_full_isr(&c, topic, 0, Duration::from_secs(60));
    producer.wait_more_acks(300, "after the restart");
    let (reports, _sent, fatal) = producer.finish();
    assert_eq!(fatal, None, "the idempotent producer hit a fatal error");
    assert!(
        reports.failed.is_empty(),
        "{} writes failed (a graceful shutdown should cost none), e.g. {:?}",
        reports.failed.len(),
        &reports.failed[..reports.failed.len().min(5)]
    );

    let (_, hw) = high_watermark(&c, &partition::ids(&c), topic, 0);
    let consumed = read_below_hw(
        &consumer_config(&c.bootstrap_all()),
        topic,
        0,
        hw,
        Duration::from_secs(90),
        |m| key_of(m),
    );
    let mut problems = Vec::new();
    if let Some(i) = (0..consumed.len()).find(|&i| consumed[i].0 != i as i64) {
        problems.push(format!(
            "offsets are not 0..{hw}: #{i} is {}",
            consumed[i].0
        ));
    }
    if let Some(w) = consumed
        .windows(2)
        .find(|w| index_of(&w[0].1) >= index_of(&w[1].1))
    {
        problems.push(format!("a duplicate or a record out of order: {w:?}"));
    }
    let by_offset: HashMap<i64, &str> = consumed.iter().map(|(o, k)| (*o, k.as_str())).collect();
    let lost: Vec<String> = reports
        .acked
        .iter()
        .filter(|(k, o)| by_offset.get(o) != Some(&k.as_str()))
        .take(5)
        .map(|(k, o)| {
            format!(
                "{k} acknowledged at {o}, the log has {:?}",
                by_offset.get(o)
            )
        })
        .collect();
    if !lost.is_empty() {
        problems.push(format!(
            "acknowledged records not at their offset: {lost:?}"
        ));
    }
    step!(
        "read back {} records (HW {hw}) against {} acknowledgements: {}",
        consumed.len(),
        reports.acked.len(),
        if problems.is_empty() { "ok" } else { "FAILED" }
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
