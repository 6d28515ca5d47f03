//! Partition replication across `runnel serve` nodes (three, or five where
//! two replicas go down at once): what a user of a replication-factor-3
//! topic with `min.insync.replicas=2` relies on.
//!
//! * An acks=all write that was acknowledged survives `kill -9` of the
//!   leader (five times in a row, twice within a second, or a leader that
//!   is paused past its session and comes back): it is read back exactly
//!   at the offset it was acknowledged with, offsets have no gaps, and the
//!   three replicas' logs on disk are identical up to the high watermark
//!   (batch by batch: offsets, CRC, partition leader epoch, length).
//! * A paused, fenced leader acknowledges nothing after it resumes.
//! * With two replicas down, acks=all is refused with NOT_ENOUGH_REPLICAS
//!   (19) or NOT_ENOUGH_REPLICAS_AFTER_APPEND (20) and the high watermark
//!   does not move; once they are back, acks=all works again.
//! * A follower that missed 100 MB catches up and rejoins the ISR.
//! * A consumer reading throughout the failovers is only ever shown records
//!   that are in the final log at the same offsets, and keeps going.
//!
//! Tests that need two replicas down at once run five nodes, so that the
//! controller quorum (every node is a voter) survives. The tests run one at
//! a time (a lock), since two clusters with 3 s timeouts on a small machine
//! make the timings unreliable.
//!
//! Duplicates: the producer runs with `enable.idempotence=false` (set
//! `RUNNEL_TEST_IDEMPOTENT=1` to turn it on). Without idempotence Kafka is
//! at-least-once: a write whose answer was lost in a failover may be in the
//! log and is retried, so an acknowledged value may also appear at an
//! offset *below* its acknowledged one. That, and only that, is tolerated
//! (and counted) without idempotence; a copy above the acknowledged
//! offset, a different value at the acknowledged offset, a gap or a
//! repeated offset always fails.
//!
//! Run with the step log: `cargo test --release --test replication -- --nocapture`;
//! failover timings: `cargo bench --bench failover`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::Cluster;
use common::disk::{batches_on_disk, DiskBatch};
use common::partition::{
    consume_all, high_watermark, ids, list_latest, others, reader_config, states, wait_full_isr,
    wait_state,
};
use common::producer::{key_of, Ack, BgProducer, Spec};
use common::topics::create_replicated;
use common::RawConn;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::records::{Compression, Record};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use runnel::protocol::build;

/// Overrides every node of a replication test runs with (on top of the
/// harness's 300 ms heartbeats and 3 s broker sessions).
const REPLICATION: &[&str] = &[
    "replica.lag.time.max.ms=3000",
    "default.replication.factor=3",
    "min.insync.replicas=2",
];
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a failover (fencing after the 3 s session, election) may take.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a restarted replica may take to be back in the ISR.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);

const NOT_ENOUGH_REPLICAS: i16 = 19;
const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;

fn idempotent() -> bool {
    std::env::var("RUNNEL_TEST_IDEMPOTENT").is_ok_and(|v| v == "1" || v == "true")
}

// ------------------------------------------------------- raw requests --

/// One v2 record batch holding `values` (value = key), no producer id.
fn record_batch(values: &[String]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let v = Some(Bytes::from(v.clone()));
            build::record(i as i64, 1_700_000_000_000, v.clone(), v)
        })
        .collect();
    build::encode(&records, Compression::None).expect("encode batch")
}

/// Produce v8, acks=-1, one batch of `values` to `topic`/`p`; the broker
/// answers within `timeout_ms`.
fn produce_request(topic: &str, p: i32, values: &[String], timeout_ms: i32) -> ProduceRequest {
    common::produce_request(topic, p, record_batch(values), timeout_ms)
}

/// A raw acks=-1 Produce of `values` to the node at `addr`, with the
/// broker's `timeout_ms`.
fn raw_produce(
    addr: &str,
    topic: &str,
    p: i32,
    values: &[String],
    timeout_ms: i32,
) -> io::Result<(i16, i64)> {
    common::raw_produce(addr, 8, topic, p, record_batch(values), timeout_ms)
}

/// A raw acks=-1 Produce of one record to the partition's current leader
/// (as every node in `ask` agrees on it), retried while the answer says
/// that nothing was written and a client should retry: UNKNOWN_TOPIC_OR_PARTITION
/// (3), LEADER_NOT_AVAILABLE (5), NOT_LEADER_OR_FOLLOWER (6), as right after
/// a topic is created or leadership moves. Any other error fails. Returns
/// the acknowledgement.
fn raw_produce_acked(c: &Cluster, ask: &[i32], topic: &str, p: i32, value: &str) -> Ack {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let st = wait_state(c, ask, topic, p, TIMEOUT, "a leader", |s| s.leader > 0);
        let got = raw_produce(
            &c.node(st.leader).bootstrap(),
            topic,
            p,
            &[value.to_string()],
            // Generous: this is not where the test times anything.
            30_000,
        );
        match got {
            Ok((0, offset)) => {
                return Ack {
                    key: value.to_string(),
                    partition: p,
                    offset,
                    at: Instant::now(),
                }
            }
            Ok((code @ (3 | 5 | 6), _)) if Instant::now() < deadline => {
                step!(
                    "produce of {value} to leader {}: error {code}; retrying",
                    st.leader
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            other => panic!(
                "acks=-1 produce of {value} to leader {} of {topic}/{p} ({st:?}): {other:?}",
                st.leader
            ),
        }
    }
}

// --------------------------------------------------------------- disk --

/// `<node dir>/data/<topic>-<partition>`.
fn replica_dir(c: &Cluster, id: i32, topic: &str, p: i32) -> PathBuf {
    c.dir(id).join("data").join(format!("{topic}-{p}"))
}

/// Waits (up to `within`) until the high watermark is stable and every
/// replica's batches below it are identical to the leader's (offsets, CRC,
/// leader epoch, length), and the leader's cover 0..HW without a gap.
/// Returns the HW. Panics with the first differences otherwise.
fn assert_replicas_identical(c: &Cluster, topic: &str, p: i32, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let st = wait_state(c, &ids(c), topic, p, TIMEOUT, "a leader", |s| s.leader > 0);
        let (leader, hw) = high_watermark(c, &ids(c), topic, p);
        let lists: BTreeMap<i32, Vec<DiskBatch>> = st
            .replicas
            .iter()
            .map(|&id| {
                let all = batches_on_disk(&replica_dir(c, id, topic, p));
                (id, all.into_iter().filter(|b| b.last < hw).collect())
            })
            .collect();
        let mut problems = Vec::new();
        let lead = &lists[&leader];
        // The leader's batches below the HW cover 0..HW exactly.
        let mut next = 0i64;
        for b in lead {
            if b.base != next {
                problems.push(format!(
                    "leader {leader}: batch {b:?} where offset {next} was expected"
                ));
                break;
            }
            next = b.last + 1;
        }
        if next != hw && problems.is_empty() {
            problems.push(format!(
                "leader {leader}: batches below the HW end at {next}, HW is {hw}"
            ));
        }
        for (&id, list) in &lists {
            if id == leader || list == lead {
                continue;
            }
            let i = lead
                .iter()
                .zip(list)
                .position(|(a, b)| a != b)
                .unwrap_or(lead.len().min(list.len()));
            problems.push(format!(
                "node {id}: {} batches below HW vs leader {leader}'s {}; first difference at #{i}: \
                 leader {:?}, node {id} {:?}",
                list.len(),
                lead.len(),
                lead.get(i),
                list.get(i)
            ));
        }
        if problems.is_empty() {
            step!(
                "{topic}/{p}: all three replicas hold the same {} batches below HW {hw} (leader {leader})",
                lead.len()
            );
            return hw;
        }
        if Instant::now() >= deadline {
            let st = states(c, &ids(c), topic, p);
            panic!(
                "replicas of {topic}/{p} not identical below HW {hw} after {within:?}:\n{}\nMetadata: {st:#?}",
                problems.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ------------------------------------------------------------ producer --

/// An acks=all producer sending keys "<prefix>-0000000", ... to `topic`/0,
/// 2 ms apart, until stopped; idempotent if `RUNNEL_TEST_IDEMPOTENT=1`.
fn continuous(topic: &str, prefix: &str) -> Spec {
    Spec {
        idempotence: idempotent(),
        settings: vec![
            ("retry.backoff.ms", "100"),
            ("queue.buffering.max.messages", "20000"),
        ],
        ..Spec::continuous(topic, prefix)
    }
}

// ------------------------------------------------------------ consumer --

/// A consumer error: librdkafka's code, if any, and the message.
type ConsumerError = (Option<RDKafkaErrorCode>, String);

/// A consumer reading the partition from offset 0 while the test kills
/// leaders, recording what it was shown: everything a consumer sees must
/// be in the final log at the same offset (reads stop at the high
/// watermark, so nothing read is ever lost or replaced).
struct BgConsumer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(i64, String)>>>,
    errors: Arc<Mutex<Vec<ConsumerError>>>,
    handle: Option<JoinHandle<()>>,
}

impl BgConsumer {
    fn start(c: &Cluster, topic: &str, p: i32) -> BgConsumer {
        let consumer: BaseConsumer = reader_config(&c.bootstrap_all())
            .create()
            .expect("create consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition offset");
        consumer.assign(&tpl).expect("assign");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (stop2, seen2, errors2) = (Arc::clone(&stop), Arc::clone(&seen), Arc::clone(&errors));
        let handle = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => seen2.lock().expect("lock").push((m.offset(), key_of(&m))),
                    Some(Err(e)) => {
                        let mut errs = errors2.lock().expect("lock");
                        if errs.len() < 100 {
                            errs.push((e.rdkafka_error_code(), e.to_string()));
                        }
                    }
                    None => {}
                }
            }
        });
        step!("consumer reading {topic}/{p} from offset 0 throughout");
        BgConsumer {
            stop,
            seen,
            errors,
            handle: Some(handle),
        }
    }

    /// Gives it up to 30 s to read up to the end of `final_log` (the log as
    /// read back after the test: a consumer keeps working across
    /// failovers), stops it and checks what it read against the final log.
    fn finish_and_check(mut self, final_log: &[(i64, String)]) {
        let end = final_log.last().map_or(-1, |(o, _)| *o);
        let within = Duration::from_secs(30);
        let deadline = Instant::now() + within;
        let mut caught_up = false;
        while Instant::now() < deadline {
            let last = self
                .seen
                .lock()
                .expect("lock")
                .last()
                .map_or(-1, |(o, _)| *o);
            if last >= end {
                caught_up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("consumer thread");
        }
        let seen = std::mem::take(&mut *self.seen.lock().expect("lock"));
        let errors = std::mem::take(&mut *self.errors.lock().expect("lock"));
        let by_offset: HashMap<i64, &str> =
            final_log.iter().map(|(o, k)| (*o, k.as_str())).collect();
        let mut problems = Vec::new();
        if !caught_up {
            problems.push(format!(
                "the consumer did not reach the end of the log (offset {end}) within {within:?} \
                 of the test's end: it is at {:?}; errors: {:?}",
                seen.last(),
                &errors[errors.len().saturating_sub(5)..]
            ));
        }
        let wrong: Vec<String> = seen
            .iter()
            .filter(|(o, k)| by_offset.get(o) != Some(&k.as_str()))
            .take(10)
            .map(|(o, k)| format!("read {k} at {o}; the final log has {:?}", by_offset.get(o)))
            .collect();
        if !wrong.is_empty() {
            problems.push(format!(
                "a consumer was shown records that are not in the final log:\n  {}",
                wrong.join("\n  ")
            ));
        }
        if let Some(i) = (0..seen.len()).find(|&i| seen[i].0 != i as i64) {
            problems.push(format!(
                "the consumer's offsets are not 0, 1, 2, ...: #{i} is {} (around it {:?})",
                seen[i].0,
                &seen[i.saturating_sub(2)..(i + 3).min(seen.len())]
            ));
        }
        // Its position was always at most the HW it was shown, which every
        // later leader's log reaches: no reset, no truncation.
        let fatal: Vec<&ConsumerError> = errors
            .iter()
            .filter(|(code, _)| {
                matches!(
                    code,
                    Some(
                        RDKafkaErrorCode::OffsetOutOfRange
                            | RDKafkaErrorCode::AutoOffsetReset
                            | RDKafkaErrorCode::LogTruncation
                    )
                )
            })
            .collect();
        if !fatal.is_empty() {
            problems.push(format!(
                "the consumer's position fell outside the log: {:?}",
                &fatal[..fatal.len().min(5)]
            ));
        }
        step!(
            "consumer read {} records during the test ({} errors{}): {}",
            seen.len(),
            errors.len(),
            errors
                .first()
                .map(|e| format!(", first: {}", e.1))
                .unwrap_or_default(),
            if problems.is_empty() {
                "all in the final log"
            } else {
                "FAILED"
            }
        );
        assert!(
            !seen.is_empty(),
            "the consumer read nothing during the test"
        );
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

impl Drop for BgConsumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What users rely on after failovers: offsets 0..HW each exactly once; every
/// acknowledged key at its acknowledged offset; no copy of an acknowledged
/// key above that offset (and, with idempotence, none anywhere else).
/// Every key read is one this test wrote (one of `prefixes`).
fn check_log(consumed: &[(i64, String)], hw: i64, acked: &[Ack], prefixes: &[&str]) {
    let mut problems = Vec::new();
    // Offsets: 0, 1, ..., hw-1.
    if let Some(i) = (0..consumed.len()).find(|&i| consumed[i].0 != i as i64) {
        problems.push(format!(
            "offsets are not 0..{hw} in order: #{i} is offset {} (around it: {:?})",
            consumed[i].0,
            &consumed[i.saturating_sub(2)..(i + 3).min(consumed.len())]
        ));
    } else if consumed.len() as i64 != hw {
        problems.push(format!("read {} records below HW {hw}", consumed.len()));
    }
    let by_offset: HashMap<i64, &str> = consumed.iter().map(|(o, k)| (*o, k.as_str())).collect();
    let mut by_key: HashMap<&str, Vec<i64>> = HashMap::new();
    for (o, k) in consumed {
        by_key.entry(k.as_str()).or_default().push(*o);
    }
    let strange: Vec<&(i64, String)> = consumed
        .iter()
        .filter(|(_, k)| !prefixes.iter().any(|p| k.starts_with(&format!("{p}-"))))
        .take(5)
        .collect();
    if !strange.is_empty() {
        problems.push(format!("records this test never wrote: {strange:?}"));
    }
    let mut lost = Vec::new();
    let mut lost_n = 0;
    let mut above = Vec::new();
    let mut below = Vec::new();
    let mut below_n = 0;
    for a in acked {
        if by_offset.get(&a.offset) != Some(&a.key.as_str()) {
            lost_n += 1;
            if lost.len() < 10 {
                lost.push(format!(
                    "{} acked at {}, log has {:?} there, {} at {:?}",
                    a.key,
                    a.offset,
                    by_offset.get(&a.offset),
                    a.key,
                    by_key.get(a.key.as_str())
                ));
            }
        }
        let copies = by_key.get(a.key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        if copies.iter().any(|&o| o > a.offset) {
            above.push(format!(
                "{} acked at {}, copies at {copies:?}",
                a.key, a.offset
            ));
        }
        if copies.iter().any(|&o| o < a.offset) {
            below_n += 1;
            if below.len() < 10 {
                below.push(format!(
                    "{} acked at {}, copies at {copies:?}",
                    a.key, a.offset
                ));
            }
        }
    }
    let mut ack_offsets: Vec<i64> = acked.iter().map(|a| a.offset).collect();
    ack_offsets.sort_unstable();
    if let Some(w) = ack_offsets.windows(2).find(|w| w[0] == w[1]) {
        problems.push(format!("two writes acknowledged with offset {}", w[0]));
    }
    if lost_n > 0 {
        problems.push(format!(
            "{lost_n} of {} acknowledged writes are not at their acknowledged offset, e.g.:\n  {}",
            acked.len(),
            lost.join("\n  ")
        ));
    }
    if !above.is_empty() {
        problems.push(format!(
            "{} acknowledged writes also appear above their acknowledged offset:\n  {}",
            above.len(),
            above
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        ));
    }
    if below_n > 0 {
        let msg = format!(
            "{below_n} acknowledged writes also appear below their acknowledged offset \
             (an earlier unacknowledged attempt kept across a failover), e.g.:\n  {}",
            below.join("\n  ")
        );
        if idempotent() {
            problems.push(format!("with enable.idempotence=true: {msg}"));
        } else {
            step!("tolerated without idempotence (at-least-once): {msg}");
        }
    }
    step!(
        "checked {} records below HW {hw} against {} acknowledgements: {}",
        consumed.len(),
        acked.len(),
        if problems.is_empty() { "ok" } else { "FAILED" }
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Stops the producer, waits for the replicas to converge, reads the
/// partition back and checks it against the acknowledgements (plus
/// `extra_acks`, e.g. raw produces) and against what `reader` was shown
/// along the way. Returns the HW.
fn finish_and_verify(
    c: &Cluster,
    topic: &str,
    producer: BgProducer,
    reader: Option<BgConsumer>,
    extra_acks: &[Ack],
    prefixes: &[&str],
) -> i64 {
    let reports = producer.finish();
    wait_full_isr(c, topic, 0, REJOIN_TIMEOUT);
    let hw = assert_replicas_identical(c, topic, 0, TIMEOUT);
    let consumed = consume_all(&c.bootstrap_all(), topic, 0, hw);
    let mut acked = reports.acked;
    acked.extend_from_slice(extra_acks);
    check_log(&consumed, hw, &acked, prefixes);
    if let Some(r) = reader {
        r.finish_and_check(&consumed);
    }
    hw
}

// --------------------------------------------------------------- tests --

#[test]
fn acks_all_survives_five_leader_kills() {
    let _serial = common::serial();
    let topic = "five-kills";
    let mut c = Cluster::start_with(3, REPLICATION);
    create_replicated(&c, topic, 1);
    let producer = BgProducer::start(&c.bootstrap_all(), continuous(topic, "v"));
    let reader = BgConsumer::start(&c, topic, 0);
    let t0 = Instant::now();
    producer.wait_acks_since(t0, 200, TIMEOUT, "before the first kill");
    for round in 1..=5 {
        let before = wait_full_isr(&c, topic, 0, REJOIN_TIMEOUT);
        let old = before.leader;
        step!(
            "round {round}: leader {old} (epoch {}), {} acks so far, max offset {}",
            before.leader_epoch,
            producer.acked(),
            producer.max_acked_offset()
        );
        c.kill9(old);
        let killed = Instant::now();
        let after = wait_state(
            &c,
            &others(&c, &[old]),
            topic,
            0,
            FAILOVER_TIMEOUT,
            "a new leader",
            |s| s.leader > 0 && s.leader != old,
        );
        step!(
            "round {round}: new leader {} epoch {} after {:?}, ISR {:?}",
            after.leader,
            after.leader_epoch,
            killed.elapsed(),
            after.isr
        );
        assert!(
            after.leader_epoch > before.leader_epoch,
            "leader epoch did not grow: {before:?} -> {after:?}"
        );
        producer.wait_acks_since(
            killed,
            100,
            FAILOVER_TIMEOUT,
            &format!("round {round}: on the new leader"),
        );
        c.restart(old);
        wait_full_isr(&c, topic, 0, REJOIN_TIMEOUT);
    }
    producer.wait_acks_since(Instant::now(), 100, TIMEOUT, "after the last round");
    finish_and_verify(&c, topic, producer, Some(reader), &[], &["v"]);
}

#[test]
fn paused_leader_is_fenced_and_acknowledges_nothing_after() {
    let _serial = common::serial();
    let topic = "paused";
    let mut c = Cluster::start_with(3, REPLICATION);
    create_replicated(&c, topic, 1);
    let producer = BgProducer::start(&c.bootstrap_all(), continuous(topic, "v"));
    let reader = BgConsumer::start(&c, topic, 0);
    producer.wait_acks_since(Instant::now(), 200, TIMEOUT, "before the pause");
    let before = wait_full_isr(&c, topic, 0, TIMEOUT);
    let old = before.leader;
    let old_epoch = before.leader_epoch;
    let rest = others(&c, &[old]);

    c.signal(old, "STOP");
    let paused = Instant::now();
    let after = wait_state(&c, &rest, topic, 0, FAILOVER_TIMEOUT, "a new leader", |s| {
        s.leader > 0 && s.leader != old
    });
    let new = after.leader;
    let new_epoch = after.leader_epoch;
    step!(
        "leader {new} epoch {new_epoch} elected {:?} after SIGSTOP of {old} (epoch {old_epoch}); ISR {:?}",
        paused.elapsed(),
        after.isr
    );
    assert!(
        new_epoch > old_epoch,
        "epoch did not grow: {before:?} -> {after:?}"
    );
    producer.wait_acks_since(
        paused,
        100,
        FAILOVER_TIMEOUT,
        "from the new leader while the old one is paused",
    );
    // Paused for well over the 3 s session.
    let min_pause = Duration::from_secs(6);
    if paused.elapsed() < min_pause {
        std::thread::sleep(min_pause - paused.elapsed());
    }

    // A write waiting in the old leader's socket when it resumes: the first
    // thing it handles, before it can have heard of the new epoch.
    let probe = "probe-000001".to_string();
    let mut conn = RawConn::connect(&c.node(old).bootstrap()).expect("connect to the paused node");
    conn.stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    conn.send(
        8,
        9,
        &produce_request(topic, 0, std::slice::from_ref(&probe), 5_000),
    )
    .expect("send produce to the paused node");
    c.signal(old, "CONT");
    let resumed = Instant::now();
    let probe_answer = conn
        .recv::<ProduceRequest>(8)
        .map(|(_, r)| common::produce_result(&r));
    step!(
        "old leader {old} answered the produce waiting for it after {:?}: {probe_answer:?} \
         (error code, base offset)",
        resumed.elapsed()
    );
    let mut extra = Vec::new();
    if let Ok((0, offset)) = probe_answer {
        // Checked against the log below as well, to say whether it was lost.
        extra.push(Ack {
            key: probe.clone(),
            partition: 0,
            offset,
            at: Instant::now(),
        });
    }

    producer.wait_acks_since(resumed, 100, TIMEOUT, "after SIGCONT");
    wait_full_isr(&c, topic, 0, REJOIN_TIMEOUT);
    let hw = finish_and_verify(&c, topic, producer, Some(reader), &extra, &["v", "probe"]);
    assert!(
        !matches!(probe_answer, Ok((0, _))),
        "the fenced old leader {old} acknowledged an acks=-1 write after SIGCONT: {probe_answer:?}"
    );

    // Nothing the old leader wrote in its old epoch, at or above where the
    // new epoch starts, survives unless the new leader has the same batch.
    // Compared with the replica elected while the old leader was paused
    // (leadership may since have moved back to the old one).
    let lead = batches_on_disk(&replica_dir(&c, new, topic, 0));
    let new_start = lead
        .iter()
        .find(|b| b.leader_epoch >= new_epoch)
        .map(|b| b.base)
        .expect("the new leader has batches of its epoch");
    let stale: Vec<DiskBatch> = batches_on_disk(&replica_dir(&c, old, topic, 0))
        .into_iter()
        .filter(|b| b.leader_epoch < new_epoch && b.last >= new_start && !lead.contains(b))
        .collect();
    step!("epoch {new_epoch} starts at offset {new_start}; HW {hw}");
    assert!(
        stale.is_empty(),
        "old leader {old} keeps {} batches of an older epoch at/after offset {new_start} that \
         node {new} (leader of epoch {new_epoch}) does not have, e.g. {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
}

#[test]
fn min_insync_refuses_when_two_replicas_are_down() {
    let _serial = common::serial();
    let topic = "min-isr";
    // Five nodes: with two of three down the controller quorum would be
    // gone too, and nothing (no ISR change) could be decided. Here the
    // topic's three replicas are on three of the five.
    let mut c = Cluster::start_with(5, REPLICATION);
    create_replicated(&c, topic, 1);
    let mut acked = Vec::new();
    for i in 1..=10 {
        let v = format!("raw-{i:06}");
        acked.push(raw_produce_acked(&c, &ids(&c), topic, 0, &v));
    }
    let st = wait_full_isr(&c, topic, 0, TIMEOUT);
    let leader = st.leader;
    let addr = c.node(leader).bootstrap();
    let (_, hw_before) = high_watermark(&c, &[leader], topic, 0);
    assert_eq!(
        hw_before, 10,
        "HW after ten acknowledged one-record batches"
    );

    let followers: Vec<i32> = st
        .replicas
        .iter()
        .copied()
        .filter(|&r| r != leader)
        .collect();
    step!("leader {leader}; killing followers {followers:?}");
    for &f in &followers {
        c.kill9(f);
    }
    let down = Instant::now();
    let shrunk = wait_state(
        &c,
        &[leader],
        topic,
        0,
        FAILOVER_TIMEOUT,
        "ISR == [leader]",
        |s| s.leader == leader && s.isr == [leader],
    );
    step!("ISR shrank to {:?} after {:?}", shrunk.isr, down.elapsed());

    let refused = "refused-000001".to_string();
    let (code, _) = raw_produce(&addr, topic, 0, std::slice::from_ref(&refused), 5_000)
        .expect("produce answered");
    step!("acks=-1 produce with ISR [{leader}]: error {code}");
    assert!(
        code == NOT_ENOUGH_REPLICAS || code == NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        "acks=-1 produce with ISR [{leader}] < min.insync.replicas 2 answered {code}, \
         want {NOT_ENOUGH_REPLICAS} or {NOT_ENOUGH_REPLICAS_AFTER_APPEND}"
    );
    for wait in [Duration::ZERO, Duration::from_secs(2)] {
        std::thread::sleep(wait);
        let (code, hw) = list_latest(&addr, topic, 0).expect("ListOffsets");
        assert_eq!(
            (code, hw),
            (0, hw_before),
            "HW on leader {leader} with both followers down"
        );
    }

    for &f in &followers {
        c.restart(f);
    }
    wait_full_isr(&c, topic, 0, REJOIN_TIMEOUT);
    // acks=-1 works again (leadership may move back to the preferred
    // replica meanwhile: NOT_LEADER_OR_FOLLOWER is retried).
    acked.push(raw_produce_acked(&c, &ids(&c), topic, 0, "raw-000011"));
    // And through rdkafka, as an application would.
    let producer = BgProducer::start(
        &c.bootstrap_all(),
        Spec {
            limit: Some(5),
            ..continuous(topic, "v")
        },
    );
    let reports = producer.finish();
    assert!(
        reports.acked.len() == 5 && reports.failed.is_empty(),
        "rdkafka acks=all after recovery: acked {:?}, failed {:?}",
        reports.acked,
        reports.failed
    );
    acked.extend(reports.acked);
    let hw = assert_replicas_identical(&c, topic, 0, TIMEOUT);
    assert!(hw >= 16, "HW {hw} after 16 acknowledged writes");
    let consumed = consume_all(&c.bootstrap_all(), topic, 0, hw);
    check_log(&consumed, hw, &acked, &["raw", "refused", "v"]);
}

#[test]
fn two_leader_changes_within_a_second() {
    let _serial = common::serial();
    let topic = "double-kill";
    // Five nodes, so that the controller quorum survives two kills and the
    // third replica can be elected while the other two are down.
    let mut c = Cluster::start_with(5, REPLICATION);
    create_replicated(&c, topic, 1);
    let producer = BgProducer::start(&c.bootstrap_all(), continuous(topic, "v"));
    let reader = BgConsumer::start(&c, topic, 0);
    producer.wait_acks_since(Instant::now(), 200, TIMEOUT, "before the kills");
    let st = wait_full_isr(&c, topic, 0, TIMEOUT);
    let first = st.leader;
    c.kill9(first);
    let killed_first = Instant::now();
    let second_st = wait_state(
        &c,
        &others(&c, &[first]),
        topic,
        0,
        FAILOVER_TIMEOUT,
        "a second leader",
        |s| s.leader > 0 && s.leader != first,
    );
    let second = second_st.leader;
    let elected = Instant::now();
    c.kill9(second);
    step!(
        "leader {second} (epoch {}) killed {:?} after it was seen elected ({:?} after the first kill); \
         ISR was {:?}",
        second_st.leader_epoch,
        elected.elapsed(),
        killed_first.elapsed(),
        second_st.isr
    );
    assert!(
        elected.elapsed() < Duration::from_secs(1),
        "second kill too late"
    );
    let third = st
        .replicas
        .iter()
        .copied()
        .find(|r| *r != first && *r != second)
        .expect("a third replica");
    let third_st = wait_state(
        &c,
        &others(&c, &[first, second]),
        topic,
        0,
        FAILOVER_TIMEOUT,
        "the third replica to lead",
        |s| s.leader == third,
    );
    step!(
        "node {third} leads (epoch {}), ISR {:?}",
        third_st.leader_epoch,
        third_st.isr
    );
    assert!(
        third_st.leader_epoch > second_st.leader_epoch,
        "{second_st:?} -> {third_st:?}"
    );
    c.restart(first);
    c.restart(second);
    let back = Instant::now();
    wait_full_isr(&c, topic, 0, REJOIN_TIMEOUT);
    producer.wait_acks_since(back, 100, TIMEOUT, "after both restarts");
    finish_and_verify(&c, topic, producer, Some(reader), &[], &["v"]);
}

#[test]
fn lagging_follower_catches_up_after_100mb() {
    let _serial = common::serial();
    const RECORDS: u64 = 100_000;
    let topic = "catch-up";
    let mut c = Cluster::start_with(3, REPLICATION);
    create_replicated(&c, topic, 1);
    let st = wait_full_isr(&c, topic, 0, TIMEOUT);
    let leader = st.leader;
    let follower = others(&c, &[leader])[0];
    c.kill9(follower);
    // acks=all waits for the whole ISR: let the leader drop the dead one.
    wait_state(
        &c,
        &[leader],
        topic,
        0,
        FAILOVER_TIMEOUT,
        "the ISR without the killed follower",
        |s| s.leader == leader && !s.isr.contains(&follower) && s.isr.len() == 2,
    );
    let started = Instant::now();
    let producer = BgProducer::start(
        &c.bootstrap_all(),
        Spec {
            payload_len: 1024,
            pause: Duration::ZERO,
            limit: Some(RECORDS),
            message_timeout_ms: 120_000,
            ..continuous(topic, "big")
        },
    );
    let reports = producer.finish();
    step!(
        "produced {} x 1 KiB with acks=all in {:?}",
        reports.sent,
        started.elapsed()
    );
    assert!(
        reports.acked.len() as u64 == RECORDS && reports.failed.is_empty(),
        "{} of {RECORDS} acknowledged with two of three replicas up; first failures {:?}",
        reports.acked.len(),
        &reports.failed[..reports.failed.len().min(5)]
    );

    c.restart(follower);
    let restarted = Instant::now();
    let back = wait_full_isr(&c, topic, 0, Duration::from_secs(120));
    step!(
        "follower {follower} back in the ISR {:?} after restart: {back:?}",
        restarted.elapsed()
    );
    let hw = assert_replicas_identical(&c, topic, 0, Duration::from_secs(60));
    step!(
        "follower {follower}'s log matches up to HW {hw} {:?} after restart",
        restarted.elapsed()
    );
    assert_eq!(
        hw, RECORDS as i64,
        "HW after {RECORDS} acknowledged records"
    );
    let consumed = consume_all(&c.bootstrap_all(), topic, 0, hw);
    check_log(&consumed, hw, &reports.acked, &["big"]);
}
