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

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::Cluster;
use common::partition::{
    self, consume_all, high_watermark, list_latest, others, wait_full_isr, wait_state,
};
use common::producer::{index_of, BgProducer, Spec};
use common::topics::{create_replicated, raw_create_and_wait};
use common::{Node, RawConn};
use kafka_protocol::messages::{FetchRequest, ProduceRequest};
use kafka_protocol::records::Compression;
use runnel::protocol::build;

const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped leader may take to exit: the fence is one Raft
/// commit and moves its leaderships at once, so the drain has nothing long
/// to wait for. Well under the broker's shutdown grace (12 s): a shutdown
/// that needed the grace fails here.
const EXIT_WITHIN: Duration = Duration::from_secs(10);
/// NOT_LEADER_OR_FOLLOWER: a produce that arrives (or waits) while the
/// stopping broker gives up its leaderships.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

// ------------------------------------------------------------ one node --

/// Produce v9, acks=-1: one batch of one record, key "drain-<i>", the key
/// padded to `len` bytes as value.
fn produce_frame(topic: &str, i: usize, len: usize) -> Vec<u8> {
    let key = format!("drain-{i:06}");
    let mut value = key.clone().into_bytes();
    value.resize(len, b'.');
    let record = build::record(
        0,
        1_700_000_000_000,
        Some(Bytes::from(key)),
        Some(Bytes::from(value)),
    );
    let batch = build::encode(&[record], Compression::None).expect("encode batch");
    let req = common::produce_request(topic, 0, batch, 30_000);
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
    let _serial = common::serial();
    const REQUESTS: usize = 20_000;
    const VALUE_LEN: usize = 2048;
    /// After the answer before the long poll, how long the broker is given
    /// to read the long poll and the produces behind it (microseconds of
    /// work) before the SIGTERM.
    const SETTLE: Duration = Duration::from_millis(200);
    let topic = "drain";
    let mut node = Node::start(&[]);
    raw_create_and_wait(&node, topic);

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
    let log = consume_all(&node.bootstrap(), topic, 0, hw);
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

/// An idempotent acks=all producer sending keys "v-0000000", ... to
/// `topic`/0, 2 ms apart.
fn producer(c: &Cluster, topic: &str) -> BgProducer {
    BgProducer::start(
        &c.bootstrap_all(),
        Spec {
            idempotence: true,
            message_timeout_ms: 120_000,
            settings: vec![
                ("retry.backoff.ms", "50"),
                ("reconnect.backoff.ms", "20"),
                ("reconnect.backoff.max.ms", "500"),
            ],
            ..Spec::continuous(topic, "v")
        },
    )
}

/// How long the producer may take for the acknowledgements a step waits for.
const ACKS_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn sigterm_of_the_leader_under_acks_all_loses_nothing() {
    let _serial = common::serial();
    let topic = "stop-leader";
    let mut c = Cluster::start_with(
        3,
        &[
            "replica.lag.time.max.ms=3000",
            "default.replication.factor=3",
            "min.insync.replicas=2",
        ],
    );
    create_replicated(&c, topic, 1);
    let producer = producer(&c, topic);
    producer.wait_more_acks(300, ACKS_WITHIN, "before the SIGTERM");

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
    producer.wait_more_acks(300, ACKS_WITHIN, "with the old leader down");
    c.restart(leader);
    wait_full_isr(&c, topic, 0, Duration::from_secs(60));
    producer.wait_more_acks(300, ACKS_WITHIN, "after the restart");
    let reports = producer.finish();
    assert_eq!(
        reports.fatal, None,
        "the idempotent producer hit a fatal error"
    );
    assert!(
        reports.failed.is_empty(),
        "{} writes failed (a graceful shutdown should cost none), e.g. {:?}",
        reports.failed.len(),
        &reports.failed[..reports.failed.len().min(5)]
    );

    let (_, hw) = high_watermark(&c, &partition::ids(&c), topic, 0);
    let consumed = consume_all(&c.bootstrap_all(), topic, 0, hw);
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
        .filter(|a| by_offset.get(&a.offset) != Some(&a.key.as_str()))
        .take(5)
        .map(|a| {
            format!(
                "{} acknowledged at {}, the log has {:?}",
                a.key,
                a.offset,
                by_offset.get(&a.offset)
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
