//! A full disk (issue 16, the fault suite's "disk full"): a broker whose
//! log directory runs out of space refuses produces with
//! KAFKA_STORAGE_ERROR (56), stays up, keeps serving reads of what it
//! acknowledged, and takes writes again once there is room, with offsets
//! carrying on where they stopped. An idempotent producer's pipelined
//! batches behind a refused one are refused the same way (not as a
//! sequence gap), so that once there is room they go in once each, in
//! order; and a follower whose disk is full leaves the ISR at once instead
//! of holding the high watermark for `replica.lag.time.max.ms`.
//!
//! The log directory is a small tmpfs mounted for the test (it needs root,
//! as the fault suite does); the metadata log lives elsewhere, as Kafka
//! users often keep it. "Full" is the tmpfs shrunk to what it holds.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{init_producer_id, produce_request, produce_result, Node, RawConn};
use kafka_protocol::records::{Compression, Record};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use runnel::protocol::build;

const TOPIC: &str = "full";
/// KAFKA_STORAGE_ERROR.
const STORAGE_ERROR: i16 = 56;

/// A tmpfs of `mb` MiB at a new directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mb: u64) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("runnel-tmpfs.")
            .tempdir()
            .expect("temp dir");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mb}m"),
                "tmpfs",
                path(&dir),
            ],
        );
        Tmpfs { dir }
    }

    fn resize(&self, mb: u64) {
        run(
            "mount",
            &["-o", &format!("remount,size={mb}m"), path(&self.dir)],
        );
    }

    /// Bytes in use (whole pages).
    fn used(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", "%b %f %S", path(&self.dir)])
            .output()
            .expect("run stat");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Vec<u64> = text
            .split_whitespace()
            .map(|x| x.parse().expect("stat -f numbers"))
            .collect();
        (v[0] - v[1]) * v[2]
    }

    /// Shrinks it to what it holds: no new page can be written. (The
    /// broker may write between the measure and the remount: retried.)
    fn fill(&self) {
        for _ in 0..20 {
            let used = self.used();
            let ok = Command::new("mount")
                .args(["-o", &format!("remount,size={used}"), path(&self.dir)])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                step!("log dir full: tmpfs shrunk to {used} bytes");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("could not shrink the tmpfs to its use");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn path(dir: &tempfile::TempDir) -> &str {
    dir.path().to_str().expect("utf-8 temp path")
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect("run {cmd}");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One uncompressed batch of 64 records of 4 KiB.
fn batch(n: u64) -> Bytes {
    let records: Vec<Record> = (0..64)
        .map(|i| {
            let key = format!("{n:08}-{i:02}");
            let value = "x".repeat(4096);
            // Now: records from 2023 would fall to 7-day time retention.
            build::record(
                i,
                runnel::now_ms(),
                Some(Bytes::from(key)),
                Some(Bytes::from(value)),
            )
        })
        .collect();
    build::encode(&records, Compression::None).expect("encode batch")
}

fn produce(conn: &mut RawConn, n: u64) -> (i16, i64) {
    let req = produce_request(TOPIC, 0, batch(n), 5_000);
    let resp = conn.roundtrip(8, 5, &req).expect("produce answered");
    produce_result(&resp)
}

#[test]
fn a_full_log_dir_refuses_writes_keeps_what_it_has_and_recovers() {
    let _serial = common::serial();
    let logs = Tmpfs::mount(8);
    let meta = tempfile::tempdir().expect("metadata dir");
    let mut node = Node::start(&[
        ("log.dirs", path(&logs.dir)),
        ("metadata.log.dir", path(&meta)),
        ("log.segment.bytes", "1048576"),
    ]);
    common::topics::raw_create_and_wait(&node, TOPIC);
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    conn.stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");

    // Fill it: 256 KiB per batch into 8 MiB.
    let mut acked = Vec::new();
    let mut n = 0;
    let refused = loop {
        n += 1;
        assert!(n < 100, "8 MiB never filled up: {acked:?}");
        match produce(&mut conn, n) {
            (0, offset) => acked.push((n, offset)),
            (code, _) => break code,
        }
    };
    step!(
        "{} batches acknowledged, then error {refused} (batch {n})",
        acked.len()
    );
    assert_eq!(refused, STORAGE_ERROR, "a full disk is KAFKA_STORAGE_ERROR");
    // Refused again, and the node is still up and answering.
    assert_eq!(produce(&mut conn, n).0, STORAGE_ERROR);
    node.assert_alive("after the disk filled up");

    // Everything acknowledged reads back.
    let last = acked.last().expect("something was acknowledged").1 + 63;
    let read = common::partition::consume_all(&node.bootstrap(), TOPIC, 0, last + 1);
    assert_eq!(read.len() as i64, last + 1, "records below {last}");
    for (batch_no, offset) in &acked {
        let (at, key) = &read[*offset as usize];
        assert_eq!(*at, *offset);
        assert_eq!(*key, format!("{batch_no:08}-00"), "offset {offset}");
    }

    // Room again: writes resume, at the next offset.
    logs.resize(32);
    let started = Instant::now();
    let resumed = loop {
        match produce(&mut conn, n) {
            (0, offset) => break offset,
            (code, _) => {
                assert_eq!(code, STORAGE_ERROR);
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "writes did not resume with room on the disk"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    step!("with room again, batch {n} acknowledged at offset {resumed}");
    assert_eq!(resumed, last + 1, "offsets carry on where they stopped");

    // And it all survives a restart.
    node.restart();
    let read = common::partition::consume_all(&node.bootstrap(), TOPIC, 0, resumed + 64);
    assert_eq!(read.len() as i64, resumed + 64);
}

// ------------------------------------------------- idempotent producers --

/// OUT_OF_ORDER_SEQUENCE_NUMBER.
const OUT_OF_ORDER: i16 = 45;

/// One batch of producer `pid`/`epoch` from sequence `seq`: `n` records of
/// `len` bytes, keyed `<name>-<i>`.
fn idempotent_batch(pid: i64, epoch: i16, seq: i32, name: &str, n: usize, len: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| {
            build::idempotent_record(
                pid,
                epoch,
                seq,
                i as i64,
                runnel::now_ms(),
                Some(Bytes::from(format!("{name}-{i}"))),
                Some(Bytes::from("v".repeat(len))),
            )
        })
        .collect();
    build::encode(&records, Compression::None).expect("encode batch")
}

fn produce_batch(conn: &mut RawConn, topic: &str, batch: &Bytes) -> (i16, i64) {
    let req = produce_request(topic, 0, batch.clone(), 5_000);
    let resp = conn.roundtrip(8, 5, &req).expect("produce answered");
    produce_result(&resp)
}

/// The batches R1 (too big for the full disk) and R2 (small enough for the
/// slack of a page) of an idempotent producer, pipelined: R2 is refused as
/// R1 was, with KAFKA_STORAGE_ERROR, never as a sequence gap, and with room
/// again R1 then R2 go in once each, in order.
#[test]
fn a_batch_behind_one_the_full_disk_refused_is_refused_alike_not_as_a_gap() {
    let _serial = common::serial();
    let topic = "idem-raw";
    let logs = Tmpfs::mount(8);
    let meta = tempfile::tempdir().expect("metadata dir");
    let mut node = Node::start(&[
        ("log.dirs", path(&logs.dir)),
        ("metadata.log.dir", path(&meta)),
    ]);
    common::topics::raw_create_and_wait(&node, topic);
    let (pid, epoch) = init_producer_id(&node.bootstrap());
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    conn.stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    // R0 makes the producer known to the partition.
    let r0 = idempotent_batch(pid, epoch, 0, "r0", 1, 10);
    assert_eq!(produce_batch(&mut conn, topic, &r0), (0, 0));
    logs.fill();
    let r1 = idempotent_batch(pid, epoch, 1, "r1", 2, 6_000);
    let r2 = idempotent_batch(pid, epoch, 3, "r2", 1, 10);
    for round in 0..3 {
        let (c1, _) = produce_batch(&mut conn, topic, &r1);
        let (c2, _) = produce_batch(&mut conn, topic, &r2);
        step!("full, round {round}: R1 error {c1}, R2 error {c2}");
        assert_eq!(c1, STORAGE_ERROR, "R1 on a full disk");
        assert_ne!(c2, OUT_OF_ORDER, "R2 behind a refused R1 is no gap");
        assert_eq!(c2, STORAGE_ERROR, "R2 behind a refused R1");
    }
    node.assert_alive("after refusing writes on a full disk");
    logs.resize(32);
    // librdkafka's order: R1 again, then R2.
    let started = Instant::now();
    let at1 = loop {
        match produce_batch(&mut conn, topic, &r1) {
            (0, offset) => break offset,
            (code, _) => {
                assert_eq!(code, STORAGE_ERROR);
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "R1 never written"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    assert_eq!(at1, 1, "R1 right after R0");
    assert_eq!(produce_batch(&mut conn, topic, &r2), (0, 3), "R2 after R1");
    // A retry of either is a duplicate, not a second copy; a real gap is
    // a gap again.
    assert_eq!(produce_batch(&mut conn, topic, &r1), (0, 1));
    let gap = idempotent_batch(pid, epoch, 9, "gap", 1, 10);
    assert_eq!(produce_batch(&mut conn, topic, &gap).0, OUT_OF_ORDER);
    let read = common::partition::consume_all(&node.bootstrap(), topic, 0, 4);
    let keys: Vec<&str> = read.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(keys, ["r0-0", "r1-0", "r1-1", "r2-0"]);
    let log = node.log_since_start();
    assert!(
        log.matches("storage error: refusing writes").count() == 1,
        "one warning for the episode:\n{log}"
    );
    assert!(log.contains("storage recovered"), "recovery logged");
}

/// What a librdkafka producer reported: deliveries, errors, its log.
#[derive(Default)]
struct Seen {
    acked: Vec<(String, i64)>,
    failed: Vec<(String, String)>,
    log: Vec<String>,
}

struct Watch(Arc<Mutex<Seen>>);

impl ClientContext for Watch {
    fn log(&self, _: RDKafkaLogLevel, fac: &str, line: &str) {
        self.0.lock().unwrap().log.push(format!("{fac}: {line}"));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0
            .lock()
            .unwrap()
            .log
            .push(format!("ERROR: {error}: {reason}"));
    }
}

impl ProducerContext for Watch {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let key = |m: &BorrowedMessage<'_>| {
            String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned()
        };
        let mut s = self.0.lock().unwrap();
        match result {
            Ok(m) => s.acked.push((key(m), m.offset())),
            Err((e, m)) => s.failed.push((key(m), e.to_string())),
        }
    }
}

/// An idempotent acks=all librdkafka producer with five requests in flight
/// and a batch of two 5 KiB records each.
fn idempotent_producer(bootstrap: &str) -> (ThreadedProducer<Watch>, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let producer: ThreadedProducer<Watch> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "5")
        .set("batch.num.messages", "2")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "120000")
        .set("retry.backoff.ms", "100")
        .set("retry.backoff.max.ms", "500")
        .set("debug", "msg,eos")
        .set_log_level(RDKafkaLogLevel::Debug)
        .create_with_context(Watch(Arc::clone(&seen)))
        .expect("create producer");
    (producer, seen)
}

fn send(producer: &ThreadedProducer<Watch>, topic: &str, from: usize, to: usize) {
    for i in from..to {
        let key = format!("m-{i:04}");
        let value = format!("{key}:{}", "p".repeat(5_000));
        let mut rec = BaseRecord::to(topic).partition(0).key(&key).payload(&value);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// librdkafka with five requests in flight against a full disk: nothing
/// is acknowledged while it is full, the broker stays up, and with room
/// again every record is written once, in order, with no sequence error
/// (which would make librdkafka reset its sequence and write them twice).
#[test]
fn an_idempotent_librdkafka_producer_writes_everything_once_after_a_full_disk() {
    let _serial = common::serial();
    let topic = "idem-rdkafka";
    let logs = Tmpfs::mount(8);
    let meta = tempfile::tempdir().expect("metadata dir");
    let mut node = Node::start(&[
        ("log.dirs", path(&logs.dir)),
        ("metadata.log.dir", path(&meta)),
    ]);
    common::topics::raw_create_and_wait(&node, topic);
    let (producer, seen) = idempotent_producer(&node.bootstrap());
    // Known to the partition before the disk fills.
    send(&producer, topic, 0, 4);
    producer
        .flush(Duration::from_secs(30))
        .expect("first records delivered");
    assert_eq!(seen.lock().unwrap().acked.len(), 4);
    logs.fill();
    const N: usize = 40;
    send(&producer, topic, 4, N);
    std::thread::sleep(Duration::from_secs(5));
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.acked.len(), 4, "nothing acknowledged while full");
        assert!(s.failed.is_empty(), "nothing given up: {:?}", s.failed);
    }
    node.assert_alive("with the disk full");
    logs.resize(32);
    producer
        .flush(Duration::from_secs(90))
        .expect("everything delivered once there is room");
    let s = seen.lock().unwrap();
    let fatal = producer.client().fatal_error();
    let sequence_errors: Vec<&String> = s
        .log
        .iter()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("out of order sequence") || l.contains("out_of_order_sequence")
        })
        .collect();
    step!(
        "acked {}, failed {}, fatal {fatal:?}, {} sequence errors",
        s.acked.len(),
        s.failed.len(),
        sequence_errors.len()
    );
    assert!(
        sequence_errors.is_empty(),
        "sequence errors: {sequence_errors:#?}"
    );
    assert_eq!(fatal, None, "no fatal producer error");
    assert!(s.failed.is_empty(), "failed: {:?}", s.failed);
    // The delivery reports in offset order: rust-rdkafka's `flush` polls
    // on this thread while the producer's own thread polls too, so two
    // reports can reach the callback in either order; the offsets are
    // what the broker decided.
    let mut acked = s.acked.clone();
    acked.sort_by_key(|(_, offset)| *offset);
    let want_acks: Vec<(String, i64)> = (0..N).map(|i| (format!("m-{i:04}"), i as i64)).collect();
    if acked != want_acks {
        // What librdkafka said about its batches, to tell a broker that
        // wrote out of order from a client that reported out of order.
        for line in s.log.iter().filter(|l| {
            l.contains("MessageSet")
                || l.contains("Produce")
                || l.contains("seq")
                || l.contains("ERROR")
        }) {
            eprintln!("librdkafka: {line}");
        }
        panic!(
            "every record acknowledged once, in order, at its own offset; acked (key, offset), \
             as reported: {:?}",
            s.acked
        );
    }
    let read = common::partition::consume_all(&node.bootstrap(), topic, 0, N as i64);
    let keys: Vec<String> = read.iter().map(|(_, k)| k.clone()).collect();
    let want: Vec<String> = (0..N).map(|i| format!("m-{i:04}")).collect();
    assert_eq!(keys, want, "the log holds every record once, in order");
}

// ------------------------------------------------------------ followers --

/// A 3-node cluster (min.insync.replicas 2, replica.lag.time.max.ms 30 s)
/// where one follower's copy of the partition lives on a tmpfs that fills
/// up: the leader drops it from the ISR within seconds, not 30 s, so
/// acks=all writes go on; with room again it catches up and rejoins, with
/// the leader's batches byte for byte.
#[test]
fn a_follower_with_a_full_disk_leaves_the_isr_at_once_and_rejoins_with_room() {
    use common::cluster::Cluster;
    use common::partition::{wait_full_isr, wait_state};
    let _serial = common::serial();
    let topic = "follower-full";
    let mut c = Cluster::start_with(3, &["replica.lag.time.max.ms=30000"]);
    common::topics::create_replicated(&c, topic, 1);
    let st = wait_full_isr(&c, topic, 0, Duration::from_secs(30));
    let leader = st.leader;
    let follower = *st
        .replicas
        .iter()
        .find(|r| **r != leader)
        .expect("a follower");
    step!("leader {leader}; follower {follower}'s copy goes on a tmpfs");
    // Move the follower's partition directory to the tmpfs (its metadata
    // log stays on the real disk).
    c.stop(follower);
    let part_dir = c.node(follower).data_dir().join(format!("{topic}-0"));
    assert!(part_dir.is_dir(), "no {}", part_dir.display());
    let logs = Tmpfs::mount(8);
    let on_tmpfs = logs.dir.path().join(format!("{topic}-0"));
    run(
        "cp",
        &["-a", part_dir.to_str().unwrap(), on_tmpfs.to_str().unwrap()],
    );
    std::fs::remove_dir_all(&part_dir).expect("remove the partition dir");
    std::os::unix::fs::symlink(&on_tmpfs, &part_dir).expect("symlink");
    c.restart(follower);
    wait_full_isr(&c, topic, 0, Duration::from_secs(30));
    let lead = c.node(leader).bootstrap();
    let mut conn = RawConn::connect(&lead).expect("connect");
    conn.stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .expect("read timeout");
    let produce = |conn: &mut RawConn, n: u64| {
        let req = produce_request(topic, 0, batch(n), 30_000);
        produce_result(&conn.roundtrip(8, 5, &req).expect("produce answered"))
    };
    assert_eq!(produce(&mut conn, 0).0, 0);
    logs.fill();
    let full = Instant::now();
    // The next writes need the ISR without the follower.
    for n in 1..=3 {
        let (code, offset) = produce(&mut conn, n);
        step!(
            "batch {n}: error {code}, offset {offset}, {:?} after the fill",
            full.elapsed()
        );
        assert_eq!(code, 0, "acks=all goes on with 2 of 3 in sync");
    }
    let shrunk = wait_state(
        &c,
        &[leader],
        topic,
        0,
        Duration::from_secs(15),
        "the ISR without the full follower",
        |s| !s.isr.contains(&follower),
    );
    step!("ISR {:?} {:?} after the fill", shrunk.isr, full.elapsed());
    assert!(
        full.elapsed() < Duration::from_secs(20),
        "the follower left the ISR only after {:?}",
        full.elapsed()
    );
    c.node_mut(follower).assert_alive("with its disk full");
    logs.resize(64);
    for n in 4..=6 {
        assert_eq!(produce(&mut conn, n).0, 0);
    }
    wait_full_isr(&c, topic, 0, Duration::from_secs(60));
    step!("follower {follower} back in the ISR");
    let want = common::disk::batches_on_disk(&c.node(leader).data_dir().join(format!("{topic}-0")));
    let got = common::disk::batches_on_disk(&on_tmpfs);
    assert_eq!(got, want, "the follower holds the leader's batches");
    c.kill_all();
}
