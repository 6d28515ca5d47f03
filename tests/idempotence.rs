//! Idempotent producers (issue 6): no duplicates through retries and
//! failover.
//!
//! * rdkafka (`enable.idempotence=true`, acks=all, two producers, two
//!   partitions, RF 3) through TCP proxies that swallow every 10th Produce
//!   response and close the connection (the broker wrote the batch, the
//!   client never heard), while the leader of partition 0 is killed with
//!   `kill -9` twice: every value in the log once, every acknowledged value
//!   at its acknowledged offset, each producer's values in send order.
//!   `RUNNEL_TEST_IDEMPOTENCE=false` runs the same without idempotence: it
//!   must then fail (duplicates), which shows that the checks can fail.
//! * kafka-python (its own protocol code) with `enable_idempotence=True`:
//!   on one node (with DescribeProducers showing its sequences), and through
//!   the dropping proxies while a leader is killed.
//! * Raw Produce requests with producer ids and sequences:
//!   - a resent batch gets its original offset after every broker was
//!     restarted (`kill -9`, then SIGTERM), the log does not grow, a gap is
//!     OUT_OF_ORDER_SEQUENCE_NUMBER (45);
//!   - a duplicate of a batch not yet committed is not acknowledged (acks=all)
//!     before the original is;
//!   - an older epoch is INVALID_PRODUCER_EPOCH (47), a new epoch starts at
//!     sequence 0, also after `kill -9`;
//!   - the last five batches of each producer survive segment rolls, a clean
//!     restart and `kill -9`; an older batch is not written again;
//!   - a follower that truncated a producer's uncommitted batches answers
//!     retries with the offsets of the new log once it leads;
//!   - producer ids are unique across brokers and restarts.
//!
//! Run with the step log: `cargo test --release --test idempotence -- --nocapture`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::cluster::Cluster;
use common::partition::{consume_all, high_watermark, ids, list_latest, wait_full_isr, wait_state};
use common::producer::{key_of_index, wait_more_acks, BgProducer, Report, Spec};
use common::topics::create_replicated;
use common::{eventually, init_producer_id, Node, RawConn};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use runnel::protocol::build;

const TIMEOUT: Duration = Duration::from_secs(30);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const INVALID_PRODUCER_EPOCH: i16 = 47;

/// `enable.idempotence` of the first test's producers: true unless
/// `RUNNEL_TEST_IDEMPOTENCE=false` (a check that the test can fail).
fn idempotence() -> bool {
    std::env::var("RUNNEL_TEST_IDEMPOTENCE").map_or(true, |v| v != "false" && v != "0")
}

// --------------------------------------------------------------- proxy --

/// State shared by every proxy of a test: which Produce responses to swallow.
#[derive(Default)]
struct ProxyShared {
    /// Swallow the response to every Nth Produce request (over all
    /// proxies); 0: forward everything.
    drop_every: AtomicU64,
    produce_seen: AtomicU64,
    dropped: AtomicU64,
}

/// A TCP proxy in front of one broker: a thread per direction per
/// connection, forwarding whole Kafka frames. When the response to a
/// doomed Produce request arrives from the broker (so the broker did the
/// write), it is not forwarded: both sockets are closed instead, as if the
/// network had failed just before the answer got through.
struct Proxy {
    port: u16,
    target: Arc<Mutex<Option<String>>>,
}

impl Proxy {
    fn start(shared: Arc<ProxyShared>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let target: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let t2 = Arc::clone(&target);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let target = Arc::clone(&t2);
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || proxy_conn(client, &target, shared));
            }
        });
        Proxy { port, target }
    }

    fn set_target(&self, addr: String) {
        *self.target.lock().expect("lock") = Some(addr);
    }
}

/// Reads one length-prefixed frame (prefix included).
fn read_frame(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let n = i32::from_be_bytes(len);
    if !(0..=512 * 1024 * 1024).contains(&n) {
        return Err(io::Error::other(format!("frame length {n}")));
    }
    let mut frame = vec![0u8; 4 + n as usize];
    frame[..4].copy_from_slice(&len);
    s.read_exact(&mut frame[4..])?;
    Ok(frame)
}

fn proxy_conn(client: TcpStream, target: &Mutex<Option<String>>, shared: Arc<ProxyShared>) {
    // Brokers may connect (replica fetchers) before the test knows the
    // broker's port: wait for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        if let Some(a) = target.lock().expect("lock").clone() {
            break a;
        }
        if Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let Ok(broker) = TcpStream::connect(&addr) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    let doomed: Arc<Mutex<HashSet<i32>>> = Arc::new(Mutex::new(HashSet::new()));
    let (Ok(mut c_in), Ok(mut c_out), Ok(mut b_in), Ok(mut b_out)) = (
        client.try_clone(),
        client.try_clone(),
        broker.try_clone(),
        broker.try_clone(),
    ) else {
        return;
    };
    let doomed2 = Arc::clone(&doomed);
    let shared2 = Arc::clone(&shared);
    let up = std::thread::spawn(move || {
        while let Ok(frame) = read_frame(&mut c_in) {
            if frame.len() >= 12 {
                let api_key = i16::from_be_bytes([frame[4], frame[5]]);
                let corr = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
                let every = shared2.drop_every.load(Ordering::SeqCst);
                if api_key == 0 {
                    let n = shared2.produce_seen.fetch_add(1, Ordering::SeqCst) + 1;
                    if every > 0 && n % every == 0 {
                        doomed2.lock().expect("lock").insert(corr);
                    }
                }
            }
            if b_out.write_all(&frame).is_err() {
                break;
            }
        }
        let _ = b_out.shutdown(Shutdown::Both);
        let _ = c_in.shutdown(Shutdown::Both);
    });
    while let Ok(frame) = read_frame(&mut b_in) {
        if frame.len() >= 8 {
            let corr = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            if doomed.lock().expect("lock").remove(&corr) {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
        if c_out.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = c_out.shutdown(Shutdown::Both);
    let _ = b_in.shutdown(Shutdown::Both);
    let _ = up.join();
}

// ------------------------------------------------------------ producer --

/// An acks=all producer (idempotent unless `RUNNEL_TEST_IDEMPOTENCE=false`)
/// on its own thread, sending keys = values "<name>-0000000", ...
/// alternately to partitions 0 and 1 (value i goes to partition i % 2).
fn producer(bootstrap: &str, topic: &str, name: &str) -> BgProducer {
    BgProducer::start(
        bootstrap,
        Spec {
            partitions: vec![0, 1],
            idempotence: idempotence(),
            message_timeout_ms: 240_000,
            settings: vec![
                ("max.in.flight.requests.per.connection", "5"),
                ("retry.backoff.ms", "50"),
                ("reconnect.backoff.ms", "20"),
                ("reconnect.backoff.max.ms", "500"),
            ],
            ..Spec::continuous(topic, name)
        },
    )
}

/// How long the producers may take for the acknowledgements a step waits
/// for.
const ACKS_WITHIN: Duration = Duration::from_secs(60);

fn wait_acks(producers: &[BgProducer], more: usize, what: &str) {
    wait_more_acks(producers, more, ACKS_WITHIN, what);
}

/// Kills the leader of `topic`/`p` with `kill -9`, waits for another
/// leader and for acknowledgements through it, restarts the old leader and
/// waits until both partitions have all three replicas in the ISR again.
fn kill_leader_and_rejoin(c: &mut Cluster, topic: &str, p: i32, producers: &[BgProducer]) {
    let st = wait_full_isr(c, topic, p, REJOIN_TIMEOUT);
    let victim = st.leader;
    step!(
        "kill -9 leader {victim} of {topic}/{p} (epoch {})",
        st.leader_epoch
    );
    c.kill9(victim);
    let rest: Vec<i32> = ids(c).into_iter().filter(|&i| i != victim).collect();
    let new = wait_state(c, &rest, topic, p, FAILOVER_TIMEOUT, "a new leader", |s| {
        s.leader > 0 && s.leader != victim
    });
    step!(
        "{topic}/{p}: new leader {} epoch {}",
        new.leader,
        new.leader_epoch
    );
    wait_acks(producers, 1000, "after the failover");
    c.restart(victim);
    for q in 0..2 {
        wait_full_isr(c, topic, q, REJOIN_TIMEOUT);
    }
    wait_acks(producers, 2000, "after the old leader rejoined");
}

#[test]
fn idempotent_producer_through_dropped_responses_and_two_leader_kills() {
    let _serial = common::serial();
    let topic = "idem-failover";
    let (mut c, shared, bootstrap, _proxies) = proxied_cluster(&["replica.lag.time.max.ms=3000"]);
    create_replicated(&c, topic, 2);

    // Swallow every 10th Produce response (over both producers and all
    // connections): the broker wrote the batch, the client never heard.
    shared.drop_every.store(10, Ordering::SeqCst);
    step!("proxies swallow every 10th Produce response and close the connection");
    let producers = vec![
        producer(&bootstrap, topic, "pa"),
        producer(&bootstrap, topic, "pb"),
    ];
    wait_acks(&producers, 3000, "before any kill");
    kill_leader_and_rejoin(&mut c, topic, 0, &producers);
    kill_leader_and_rejoin(&mut c, topic, 0, &producers);
    wait_acks(&producers, 3000, "after the second rejoin");

    let finished: Vec<(String, Report)> = producers
        .into_iter()
        .map(|p| (p.name.clone(), p.finish()))
        .collect();
    shared.drop_every.store(0, Ordering::SeqCst);
    let dropped = shared.dropped.load(Ordering::SeqCst);
    step!(
        "{} Produce requests through the proxies, {dropped} responses swallowed",
        shared.produce_seen.load(Ordering::SeqCst)
    );
    assert!(
        dropped >= 10,
        "only {dropped} Produce responses were swallowed: the test did not exercise retries"
    );

    let mut problems = Vec::new();
    for (name, r) in &finished {
        if let Some(f) = &r.fatal {
            problems.push(format!("producer {name}: librdkafka fatal error {f:?}"));
        }
        if !r.failed.is_empty() {
            problems.push(format!(
                "producer {name}: {} of {} sends failed, first {:?}",
                r.failed.len(),
                r.sent,
                &r.failed[..r.failed.len().min(3)]
            ));
        }
    }

    // Read everything back and check it against what was sent and acked.
    let mut where_found: HashMap<String, Vec<(i32, i64)>> = HashMap::new();
    for p in 0..2 {
        let (leader, hw) = high_watermark(&c, &ids(&c), topic, p);
        step!("{topic}/{p}: leader {leader}, high watermark {hw}");
        let log = consume_all(&bootstrap, topic, p, hw);
        if let Some(i) = (0..log.len()).find(|&i| log[i].0 != i as i64) {
            problems.push(format!(
                "{topic}/{p}: offsets are not 0..{hw}: #{i} is {} (around: {:?})",
                log[i].0,
                &log[i.saturating_sub(2)..(i + 3).min(log.len())]
            ));
        }
        // Per producer, the values in this partition in offset order must
        // be strictly increasing (send order, no repeats).
        let mut last_of: HashMap<&str, (u64, i64)> = HashMap::new();
        let mut disorder = Vec::new();
        for (o, v) in &log {
            where_found.entry(v.clone()).or_default().push((p, *o));
            let Some((name, idx)) = v.rsplit_once('-') else {
                problems.push(format!("{topic}/{p}: value {v:?} at {o} was never sent"));
                continue;
            };
            let Some((_, r)) = finished.iter().find(|f| f.0 == name) else {
                problems.push(format!("{topic}/{p}: value {v:?} at {o} was never sent"));
                continue;
            };
            let idx: u64 = idx.parse().unwrap_or(u64::MAX);
            if idx >= r.sent || idx % 2 != p as u64 {
                problems.push(format!(
                    "{topic}/{p}: value {v:?} at {o} was never sent here"
                ));
                continue;
            }
            if let Some(&(prev, prev_o)) = last_of.get(name) {
                if idx <= prev && disorder.len() < 10 {
                    disorder.push(format!(
                        "{} at {prev_o} then {v} at {o}",
                        key_of_index(name, prev)
                    ));
                }
            }
            last_of.insert(name, (idx, *o));
        }
        if !disorder.is_empty() {
            problems.push(format!(
                "{topic}/{p}: values of one producer out of send order or repeated:\n  {}",
                disorder.join("\n  ")
            ));
        }
    }
    let dups: Vec<String> = where_found
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .take(10)
        .map(|(v, at)| format!("{v} at {at:?}"))
        .collect();
    let n_dups = where_found.values().filter(|at| at.len() > 1).count();
    if n_dups > 0 {
        problems.push(format!(
            "{n_dups} values are in the log more than once, e.g.:\n  {}",
            dups.join("\n  ")
        ));
    }
    let mut acked_total = 0;
    for (name, r) in &finished {
        // value -> (partition, offset)
        let acked: HashMap<String, (i32, i64)> = r
            .acked
            .iter()
            .map(|a| (a.key.clone(), (a.partition, a.offset)))
            .collect();
        acked_total += acked.len();
        let mut wrong: Vec<String> = acked
            .iter()
            .filter(|(v, at)| where_found.get(*v).map(Vec::as_slice) != Some(&[**at]))
            .map(|(v, at)| {
                format!(
                    "{v} acked at {at:?}, in the log at {:?}",
                    where_found.get(v)
                )
            })
            .collect();
        wrong.sort();
        if !wrong.is_empty() {
            problems.push(format!(
                "producer {name}: {} acknowledged values are not exactly once at their \
                 acknowledged offset, e.g.:\n  {}",
                wrong.len(),
                wrong[..wrong.len().min(10)].join("\n  ")
            ));
        }
    }
    step!(
        "{acked_total} acknowledged values checked against {} values in the log: {}",
        where_found.len(),
        if problems.is_empty() {
            "exactly once, in order"
        } else {
            "FAILED"
        }
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(acked_total > 2000, "only {acked_total} writes acknowledged");
}

// ---------------------------------------------------------- raw produce --

/// One v2 batch of `values` from producer `pid`/`epoch`, first sequence `seq`.
fn idempotent_batch(pid: i64, epoch: i16, seq: i32, values: &[&str]) -> Bytes {
    let records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let v = Some(Bytes::from(v.to_string()));
            build::idempotent_record(pid, epoch, seq, i as i64, 1_700_000_000_000, v.clone(), v)
        })
        .collect();
    build::encode(&records, Compression::None).expect("encode batch")
}

/// Produce v8, acks=-1, one batch to `topic`/`p` at `addr`: (error, base offset).
fn raw_produce(addr: &str, topic: &str, p: i32, batch: &Bytes) -> io::Result<(i16, i64)> {
    common::raw_produce(addr, 8, topic, p, batch.clone(), 30_000)
}

/// Sends `batch` to the current leader, retrying only while the answer says
/// nothing was written and a client should retry (3, 5, 6, 19, or no
/// answer at all while leadership settles). Returns the final answer.
fn produce_to_leader(c: &Cluster, topic: &str, p: i32, batch: &Bytes, what: &str) -> (i16, i64) {
    produce_to_leader_of(c, &ids(c), topic, p, batch, what)
}

/// As `produce_to_leader`, with the leader as the nodes `ask` agree on it
/// (the running ones, while one is down).
fn produce_to_leader_of(
    c: &Cluster,
    ask: &[i32],
    topic: &str,
    p: i32,
    batch: &Bytes,
    what: &str,
) -> (i16, i64) {
    let deadline = Instant::now() + FAILOVER_TIMEOUT;
    loop {
        let st = wait_state(c, ask, topic, p, FAILOVER_TIMEOUT, "a leader", |s| {
            s.leader > 0
        });
        let got = raw_produce(&c.node(st.leader).bootstrap(), topic, p, batch);
        match got {
            Ok((code @ (3 | 5 | 6 | 19), _)) if Instant::now() < deadline => {
                step!("{what} to leader {}: error {code}; retrying", st.leader);
            }
            Err(e) if Instant::now() < deadline => {
                step!("{what} to leader {}: {e}; retrying", st.leader);
            }
            Ok(ans) => {
                step!(
                    "{what} to leader {}: error {}, base offset {}",
                    st.leader,
                    ans.0,
                    ans.1
                );
                return ans;
            }
            Err(e) => panic!("{what}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (producer id, epoch, last sequence) as DescribeProducers lists them.
type ProducerRow = (i64, i32, i32);

/// DescribeProducers v0 for `topic`/`p` at `addr`: (error, [(producer id,
/// epoch, last sequence)]).
fn describe_producers(addr: &str, topic: &str, p: i32) -> io::Result<(i16, Vec<ProducerRow>)> {
    let mut conn = RawConn::connect(addr)?;
    let req = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_indexes(vec![p])]);
    let resp: DescribeProducersResponse = conn.roundtrip(0, 11, &req)?;
    let part = resp
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| io::Error::other("DescribeProducers answered no partition"))?;
    Ok((
        part.error_code,
        part.active_producers
            .iter()
            .map(|s| (s.producer_id.0, s.producer_epoch, s.last_sequence))
            .collect(),
    ))
}

#[test]
fn a_retry_after_every_broker_restarted_gets_its_original_offset() {
    let _serial = common::serial();
    let topic = "idem-raw";
    let mut c = Cluster::start_with(3, &["replica.lag.time.max.ms=3000"]);
    create_replicated(&c, topic, 1);

    let (pid, epoch) = init_producer_id(&c.node(1).bootstrap());
    step!("InitProducerId: producer id {pid}, epoch {epoch}");
    assert!(pid >= 0 && epoch >= 0, "InitProducerId gave {pid}/{epoch}");

    let b0 = idempotent_batch(pid, epoch, 0, &["v0"]);
    let b1 = idempotent_batch(pid, epoch, 1, &["v1", "v2", "v3"]);
    let (e, off0) = produce_to_leader(&c, topic, 0, &b0, "sequence 0 (1 record)");
    assert_eq!((e, off0), (0, 0), "first idempotent batch");
    let (e, off1) = produce_to_leader(&c, topic, 0, &b1, "sequence 1..=3 (3 records)");
    assert_eq!((e, off1), (0, 1), "second idempotent batch");
    let (e, o) = produce_to_leader(&c, topic, 0, &b1, "resend of sequence 1..=3");
    assert_eq!(
        (e, o),
        (0, off1),
        "an immediate resend of sequence 1..=3 must answer its original offset"
    );
    let (_, hw) = high_watermark(&c, &ids(&c), topic, 0);
    assert_eq!(hw, 4, "log end after the two batches and a duplicate");
    wait_full_isr(&c, topic, 0, REJOIN_TIMEOUT);

    // Each way of restarting every broker: the producer state must come
    // back from disk (snapshots and/or the log) on whichever node leads.
    for how in ["kill -9", "SIGTERM"] {
        step!("restart every broker ({how})");
        for id in ids(&c) {
            if how == "SIGTERM" {
                c.stop(id);
            } else {
                c.kill9(id);
            }
        }
        c.restart_all(&ids(&c));
        let st = wait_full_isr(&c, topic, 0, REJOIN_TIMEOUT);
        step!("after {how}: leader {}", st.leader);
        let (e, o) = produce_to_leader(&c, topic, 0, &b1, "resend of sequence 1..=3");
        assert_eq!(
            (e, o),
            (0, off1),
            "after {how} of every broker, a resend of sequence 1..=3 must answer error 0 \
             with its original base offset {off1}"
        );
        let (e, o) = produce_to_leader(&c, topic, 0, &b0, "resend of sequence 0");
        assert_eq!(
            (e, o),
            (0, off0),
            "after {how} of every broker, a resend of sequence 0 must answer error 0 \
             with its original base offset {off0}"
        );
        let (leader, hw) = high_watermark(&c, &ids(&c), topic, 0);
        assert_eq!(
            hw, 4,
            "after {how}: the resends made the log grow (leader {leader})"
        );
        let (e, producers) =
            describe_producers(&c.node(leader).bootstrap(), topic, 0).expect("DescribeProducers");
        step!("DescribeProducers on leader {leader}: error {e}, {producers:?}");
        assert_eq!(
            (e, producers),
            (0, vec![(pid, i32::from(epoch), 3)]),
            "after {how}: DescribeProducers on the leader"
        );
    }

    // A gap: sequence 5 when 4 is expected. The leader took over (the
    // restarts moved leadership), so for a minute it takes a gap for a
    // batch still on its way from the leader before and refuses this one
    // retriably, as not written (NOT_ENOUGH_REPLICAS; see
    // `ProducerStates::hold_gap`); a leader from the start answers
    // OUT_OF_ORDER_SEQUENCE_NUMBER (tests/disk_full.rs, and a new epoch's
    // first batch below). Either way nothing is written.
    let gap = idempotent_batch(pid, epoch, 5, &["v5"]);
    let (e, _) = produce_to_leader(&c, topic, 0, &gap, "sequence 5 (gap: 4 expected)");
    assert_eq!(
        e, NOT_ENOUGH_REPLICAS,
        "a batch with sequence 5 after 3, on a leader that just took over, must be refused \
         retriably (NOT_ENOUGH_REPLICAS)"
    );
    let (_, hw) = high_watermark(&c, &ids(&c), topic, 0);
    assert_eq!(hw, 4, "the out-of-order batch was written");
    // The expected one still goes in, once.
    let b4 = idempotent_batch(pid, epoch, 4, &["v4"]);
    let (e, off4) = produce_to_leader(&c, topic, 0, &b4, "sequence 4");
    assert_eq!((e, off4), (0, 4), "sequence 4 after the refused gap");
    let (e, o) = produce_to_leader(&c, topic, 0, &b4, "resend of sequence 4");
    assert_eq!((e, o), (0, 4), "resend of sequence 4");
    let (_, hw) = high_watermark(&c, &ids(&c), topic, 0);
    assert_eq!(hw, 5, "log end after sequence 4 and its resend");

    let log = consume_all(&c.bootstrap_all(), topic, 0, hw);
    let want: Vec<(i64, String)> = ["v0", "v1", "v2", "v3", "v4"]
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v.to_string()))
        .collect();
    assert_eq!(
        log, want,
        "the log as a consumer reads it: each record once"
    );
}

// -------------------------------------------------------- kafka-python --

#[test]
fn kafka_python_idempotent_producer_works() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/idempotent.py");
    let probe = Command::new("python3")
        .args(["-c", "import kafka"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "python3 with kafka-python is needed (the Makefile installs it: pip install kafka-python)"
        ),
    }
    let node = Node::start(&[]);
    let topic = "kpy-idem";
    let per_partition = 500;
    step!(
        "python3 {script} {} {topic} {per_partition}",
        node.bootstrap()
    );
    let mut child = Command::new("python3")
        .arg(script)
        .arg(node.bootstrap())
        .arg(topic)
        .arg(per_partition.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("OK"),
        "kafka-python idempotent produce/read-back failed (output above)"
    );
    // The broker saw one idempotent producer per partition, whose last
    // sequence is the partition's record count - 1: the client really sent
    // producer ids and sequence numbers.
    for p in 0..3 {
        let (e, producers) =
            describe_producers(&node.bootstrap(), topic, p).expect("DescribeProducers");
        step!("DescribeProducers {topic}/{p}: error {e}, {producers:?}");
        assert_eq!(e, 0, "DescribeProducers {topic}/{p}");
        assert_eq!(producers.len(), 1, "{topic}/{p}: producers {producers:?}");
        let (pid, epoch, last_seq) = producers[0];
        assert!(
            pid >= 0 && epoch >= 0,
            "{topic}/{p}: producer {pid}/{epoch}"
        );
        assert_eq!(
            last_seq,
            per_partition - 1,
            "{topic}/{p}: last sequence of the kafka-python producer"
        );
    }
}

/// A 3-node cluster behind response-dropping proxies (every node
/// advertises its proxy): (cluster, shared proxy state, bootstrap list of
/// the proxies). Nothing is dropped until the caller sets `drop_every`.
fn proxied_cluster(extra: &[&str]) -> (Cluster, Arc<ProxyShared>, String, Vec<Proxy>) {
    let shared = Arc::new(ProxyShared::default());
    let proxies: Vec<Proxy> = (0..3).map(|_| Proxy::start(Arc::clone(&shared))).collect();
    let ports: Vec<u16> = proxies.iter().map(|p| p.port).collect();
    step!("proxies on ports {ports:?} (node 1, 2, 3); every node advertises its proxy");
    let ports2 = ports.clone();
    let c = Cluster::start_with_node_overrides(3, extra, &move |id| {
        vec![format!(
            "advertised.listeners=PLAINTEXT://127.0.0.1:{}",
            ports2[(id - 1) as usize]
        )]
    });
    for (i, p) in proxies.iter().enumerate() {
        p.set_target(c.node(i as i32 + 1).bootstrap());
    }
    let bootstrap = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    (c, shared, bootstrap, proxies)
}

/// kafka-python's idempotent producer (its own retry and sequence code)
/// through proxies that swallow every 10th Produce response, while the
/// leader of partition 0 is killed: every record exactly once, in order.
#[test]
fn kafka_python_idempotent_producer_through_dropped_responses_and_a_leader_kill() {
    let _serial = common::serial();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/idempotent.py");
    let topic = "kpy-idem-failover";
    let (mut c, shared, bootstrap, _proxies) = proxied_cluster(&["replica.lag.time.max.ms=3000"]);
    create_replicated(&c, topic, 2);
    shared.drop_every.store(3, Ordering::SeqCst);
    let per_partition = 3000;
    step!("python3 {script} {bootstrap} {topic} {per_partition} 2 20");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(&bootstrap)
        .arg(topic)
        .arg(per_partition.to_string())
        .arg("2")
        .arg("20")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    // Kill the leader once the producer is under way.
    eventually(
        TIMEOUT,
        "the Python producer's first Produce requests",
        || (shared.produce_seen.load(Ordering::SeqCst) >= 20).then_some(()),
    );
    let st = wait_full_isr(&c, topic, 0, REJOIN_TIMEOUT);
    let victim = st.leader;
    c.kill9(victim);
    let rest: Vec<i32> = ids(&c).into_iter().filter(|&i| i != victim).collect();
    let new = wait_state(&c, &rest, topic, 0, FAILOVER_TIMEOUT, "a new leader", |s| {
        s.leader > 0 && s.leader != victim
    });
    step!("{topic}/0: new leader {}", new.leader);
    c.restart(victim);
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
    eprintln!(
        "{stdout}{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    let dropped = shared.dropped.load(Ordering::SeqCst);
    step!(
        "{} Produce requests through the proxies, {dropped} responses swallowed",
        shared.produce_seen.load(Ordering::SeqCst)
    );
    assert!(
        out.status.success() && stdout.contains("OK"),
        "kafka-python idempotent producer through dropped responses and a leader kill \
         failed (output above)"
    );
    assert!(
        dropped >= 5,
        "only {dropped} Produce responses were swallowed: the test did not exercise retries"
    );
}

// ------------------------------------------- commitment and fencing --

/// Produce v8 to `addr` with the broker's own `timeout_ms`: (error, base offset).
fn raw_produce_timeout(
    addr: &str,
    topic: &str,
    p: i32,
    batch: &Bytes,
    timeout_ms: i32,
) -> io::Result<(i16, i64)> {
    common::raw_produce(addr, 8, topic, p, batch.clone(), timeout_ms)
}

/// A retry of a batch that is in the leader's log but not yet on the other
/// ISR members must not be acknowledged (acks=all) before the original is
/// committed: the duplicate answer waits for the high watermark like the
/// original does.
#[test]
fn a_duplicate_is_acknowledged_only_once_the_original_is_committed() {
    let _serial = common::serial();
    let topic = "idem-commit";
    // A long lag limit: the paused followers stay in the ISR during the
    // (short) pause, so acks=all waits for them instead of failing.
    let mut c = Cluster::start_with(3, &["replica.lag.time.max.ms=20000"]);
    create_replicated(&c, topic, 1);
    let st = wait_full_isr(&c, topic, 0, TIMEOUT);
    let leader = st.leader;
    let addr = c.node(leader).bootstrap();
    let (pid, epoch) = init_producer_id(&addr);
    step!("producer id {pid}, epoch {epoch}");
    let b0 = idempotent_batch(pid, epoch, 0, &["w0"]);
    assert_eq!(
        produce_to_leader(&c, topic, 0, &b0, "sequence 0"),
        (0, 0),
        "first batch"
    );

    let followers: Vec<i32> = ids(&c).into_iter().filter(|&i| i != leader).collect();
    for &f in &followers {
        c.signal(f, "STOP");
    }
    let b1 = idempotent_batch(pid, epoch, 1, &["w1"]);
    let first = raw_produce_timeout(&addr, topic, 0, &b1, 500);
    step!("sequence 1 with both followers paused (timeout 500 ms): {first:?}");
    let retry = raw_produce_timeout(&addr, topic, 0, &b1, 500);
    step!("its retry, followers still paused: {retry:?}");
    let hw = list_latest(&addr, topic, 0);
    step!("leader {leader}'s high watermark meanwhile: {hw:?}");
    for &f in &followers {
        c.signal(f, "CONT");
    }
    assert!(
        matches!(hw, Ok((0, 1))),
        "the high watermark moved while both followers were paused: {hw:?}"
    );
    assert!(
        !matches!(first, Ok((0, _))),
        "acks=all sequence 1 was acknowledged while both followers were paused: {first:?}"
    );
    assert!(
        !matches!(retry, Ok((0, _))),
        "the retry of sequence 1 (a duplicate of a batch not yet committed) was acknowledged \
         with acks=all while both followers were paused (HW {hw:?}): {retry:?}"
    );
    // Once the followers are back, the retry is acknowledged with the
    // offset the first attempt got.
    let again = produce_to_leader(&c, topic, 0, &b1, "retry of sequence 1 after resuming");
    assert_eq!(
        again,
        (0, 1),
        "retry of sequence 1 once the followers are back"
    );
    let (_, hw) = high_watermark(&c, &ids(&c), topic, 0);
    assert_eq!(hw, 2, "log end: sequence 0 and 1, once each");
}

/// Epochs: a batch from an older epoch is INVALID_PRODUCER_EPOCH (47); a
/// newer epoch starts at sequence 0 (anything else is 45); and both rules
/// hold after `kill -9` (the state is rebuilt from disk).
#[test]
fn an_older_epoch_is_fenced_and_a_new_epoch_starts_at_sequence_zero() {
    let mut node = Node::start(&[]);
    let addr = node.bootstrap();
    let topic = "idem-epochs";
    let (code, msg, _) = common::topics::raw_create_topic(&addr, topic, 1).expect("CreateTopics");
    assert_eq!(code, 0, "CreateTopics {topic}: {msg:?}");
    let (pid, e0) = init_producer_id(&addr);
    let e1 = e0 + 1;
    let produce = |b: &Bytes, what: &str| -> (i16, i64) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            // 3 or 5 until the new topic has its leader.
            let got = raw_produce(&addr, topic, 0, b).expect("produce");
            if matches!(got.0, 3 | 5) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            step!("{what}: error {}, base offset {}", got.0, got.1);
            return got;
        }
    };
    assert_eq!(
        produce(
            &idempotent_batch(pid, e0, 0, &["a", "b", "c"]),
            "epoch 0 sequence 0..=2"
        ),
        (0, 0)
    );
    assert_eq!(
        produce(&idempotent_batch(pid, e1, 3, &["x"]), "epoch 1 sequence 3").0,
        OUT_OF_ORDER_SEQUENCE_NUMBER,
        "a new epoch must start at sequence 0"
    );
    let b_e1 = idempotent_batch(pid, e1, 0, &["d"]);
    assert_eq!(produce(&b_e1, "epoch 1 sequence 0"), (0, 3));
    let old = idempotent_batch(pid, e0, 3, &["e"]);
    assert_eq!(
        produce(&old, "epoch 0 sequence 3 (fenced)").0,
        INVALID_PRODUCER_EPOCH,
        "a batch of the older epoch after the newer one wrote"
    );
    node.kill9();
    node.restart();
    assert_eq!(
        produce(&old, "after kill -9: epoch 0 sequence 3").0,
        INVALID_PRODUCER_EPOCH,
        "after kill -9: a batch of the older epoch"
    );
    assert_eq!(
        produce(&b_e1, "after kill -9: resend of epoch 1 sequence 0"),
        (0, 3),
        "after kill -9: a resend of epoch 1 sequence 0 must get its original offset"
    );
    assert_eq!(
        produce(&idempotent_batch(pid, e1, 1, &["f"]), "epoch 1 sequence 1"),
        (0, 4)
    );
    let (e, hw) = list_latest(&addr, topic, 0).expect("ListOffsets");
    assert_eq!((e, hw), (0, 5), "log end: a b c d f");
    let (e, producers) = describe_producers(&addr, topic, 0).expect("DescribeProducers");
    assert_eq!(
        (e, producers),
        (0, vec![(pid, i32::from(e1), 1)]),
        "DescribeProducers: the producer at epoch 1, last sequence 1"
    );
}

/// Produce to a single node, retried while the new topic gets its leader.
fn produce_single(addr: &str, topic: &str, b: &Bytes) -> (i16, i64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = raw_produce(addr, topic, 0, b).expect("produce");
        if matches!(got.0, 3 | 5) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        return got;
    }
}

/// Two idempotent producers writing interleaved batches to one partition
/// ('a': two records per batch, 'b': one), each record padded to ~700 bytes.
struct TwoProducers {
    topic: String,
    ids: [(char, i64, i16, usize); 2],
    seq: [i32; 2],
    next: i64,
    /// ((producer, first sequence), batch, base offset), in write order.
    written: Vec<((char, i32), Bytes, i64)>,
}

impl TwoProducers {
    fn round(&mut self, addr: &str, rounds: usize) {
        let pad = "x".repeat(700);
        for _ in 0..rounds {
            for k in 0..2 {
                let (name, pid, epoch, n) = self.ids[k];
                let values: Vec<String> = (0..n)
                    .map(|i| format!("{name}{:04}-{pad}", self.seq[k] + i as i32))
                    .collect();
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                let b = idempotent_batch(pid, epoch, self.seq[k], &refs);
                let got = produce_single(addr, &self.topic, &b);
                assert_eq!(
                    got,
                    (0, self.next),
                    "producer {name} sequence {}: first write",
                    self.seq[k]
                );
                self.written.push(((name, self.seq[k]), b, self.next));
                self.next += n as i64;
                self.seq[k] += n as i32;
            }
        }
    }

    /// Resends each producer's last five batches (original offsets
    /// expected) and its sixth-newest (must not be written again); the log
    /// end must not move.
    fn check_resends(&self, addr: &str, when: &str) {
        for name in ['a', 'b'] {
            let mine: Vec<&((char, i32), Bytes, i64)> =
                self.written.iter().filter(|w| w.0 .0 == name).collect();
            for w in &mine[mine.len() - 5..] {
                let got = produce_single(addr, &self.topic, &w.1);
                assert_eq!(
                    got,
                    (0, w.2),
                    "{when}: resend of producer {name} sequence {} (one of its last five \
                     batches) must answer its original offset",
                    w.0 .1
                );
            }
            // The sixth-newest is no longer remembered: it must not be
            // written again (Kafka answers OUT_OF_ORDER_SEQUENCE_NUMBER).
            let old = mine[mine.len() - 6];
            let got = produce_single(addr, &self.topic, &old.1);
            step!(
                "{when}: resend of producer {name} sequence {} (sixth-newest): {got:?}",
                old.0 .1
            );
            assert_ne!(
                got.0, 0,
                "{when}: the sixth-newest batch of {name} was accepted again: {got:?}"
            );
        }
        let (e, hw) = list_latest(addr, &self.topic, 0).expect("ListOffsets");
        assert_eq!(
            (e, hw),
            (0, self.next),
            "{when}: the resends made the log grow"
        );
        step!("{when}: every resend answered as expected, log end still {hw}");
    }
}

/// Producer state across segment rolls (where snapshots are taken), a clean
/// restart (snapshot at shutdown), more writes, then `kill -9` (state
/// rebuilt from the latest snapshot plus the batches after it): for two
/// interleaved producers, each of its last five batches resent gets its
/// original offset; an older one is not written again; the next sequence
/// goes in.
#[test]
fn producer_state_survives_segment_rolls_clean_restart_and_kill9() {
    let mut node = Node::start(&[("log.segment.bytes", "16384")]);
    let addr = node.bootstrap();
    let topic = "idem-rolls";
    let (code, msg, _) = common::topics::raw_create_topic(&addr, topic, 1).expect("CreateTopics");
    assert_eq!(code, 0, "CreateTopics {topic}: {msg:?}");
    let (pa, ea) = init_producer_id(&addr);
    let (pb, eb) = init_producer_id(&addr);
    assert_ne!(pa, pb, "two InitProducerId calls gave the same producer id");
    let mut w = TwoProducers {
        topic: topic.to_string(),
        ids: [('a', pa, ea, 2), ('b', pb, eb, 1)],
        seq: [0, 0],
        next: 0,
        written: Vec::new(),
    };
    w.round(&addr, 20);
    let n_segments = std::fs::read_dir(node.data_dir().join(format!("{topic}-0")))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .count()
        })
        .unwrap_or(0);
    step!(
        "{} batches, {} records, {n_segments} segments",
        w.written.len(),
        w.next
    );
    assert!(
        n_segments >= 3,
        "only {n_segments} segments: no rolls to test"
    );

    w.check_resends(&addr, "before any restart");
    node.stop();
    node.restart();
    w.check_resends(&addr, "after a clean restart");
    // Writes after the shutdown snapshot, so that the state after kill -9
    // comes from a snapshot plus the log after it.
    w.round(&addr, 3);
    node.kill9();
    node.restart();
    w.check_resends(&addr, "after kill -9");
    w.round(&addr, 1);
    let (e, producers) = describe_producers(&addr, topic, 0).expect("DescribeProducers");
    let mut want = vec![
        (pa, i32::from(ea), w.seq[0] - 1),
        (pb, i32::from(eb), w.seq[1] - 1),
    ];
    want.sort_unstable();
    assert_eq!((e, producers), (0, want), "DescribeProducers at the end");
}

/// A follower that had to cut off uncommitted batches of a producer (its
/// log diverged from the new leader's) must drop them from its producer
/// state too: once it leads again, a retry of those batches answers the
/// offsets the *new* log has them at.
///
/// Leader L writes producer A's sequence 0 (committed); with both followers
/// paused, L also appends A's sequences 1 and 2 (not committed: the produce
/// times out). L is killed; a follower takes over, where producer B writes
/// first, then A's retries of 1 and 2 land at other offsets than on L. L
/// comes back, truncates, and catches up. Then leadership is moved back to
/// L and the retries are resent there.
#[test]
fn a_truncated_follower_forgets_the_cut_batches_of_a_producer() {
    let _serial = common::serial();
    let topic = "idem-truncate";
    let mut c = Cluster::start_with(3, &["replica.lag.time.max.ms=20000"]);
    create_replicated(&c, topic, 1);
    let st = wait_full_isr(&c, topic, 0, TIMEOUT);
    let old_leader = st.leader;
    let old_addr = c.node(old_leader).bootstrap();
    let (pa, ea) = init_producer_id(&old_addr);
    let (pb, eb) = init_producer_id(&old_addr);
    let a0 = idempotent_batch(pa, ea, 0, &["a0"]);
    let a1 = idempotent_batch(pa, ea, 1, &["a1"]);
    let a2 = idempotent_batch(pa, ea, 2, &["a2", "a3", "a4"]);
    let b0 = idempotent_batch(pb, eb, 0, &["b0"]);
    assert_eq!(produce_to_leader(&c, topic, 0, &a0, "A sequence 0"), (0, 0));
    wait_full_isr(&c, topic, 0, TIMEOUT);

    let followers: Vec<i32> = ids(&c).into_iter().filter(|&i| i != old_leader).collect();
    for &f in &followers {
        c.signal(f, "STOP");
    }
    let r1 = raw_produce_timeout(&old_addr, topic, 0, &a1, 300);
    let r2 = raw_produce_timeout(&old_addr, topic, 0, &a2, 300);
    step!("on leader {old_leader} with both followers paused: A seq 1 {r1:?}, A seq 2 {r2:?}");
    let leo = list_latest(&old_addr, topic, 0);
    c.kill9(old_leader);
    for &f in &followers {
        c.signal(f, "CONT");
    }
    assert!(
        matches!(r1, Ok((7, _))) && matches!(r2, Ok((7, _))),
        "acks=all writes with both followers paused must time out (7): {r1:?} {r2:?}"
    );
    assert!(matches!(leo, Ok((0, 1))), "HW on the old leader: {leo:?}");

    let st = wait_state(
        &c,
        &followers,
        topic,
        0,
        FAILOVER_TIMEOUT,
        "a new leader",
        |s| s.leader > 0 && s.leader != old_leader,
    );
    step!("new leader {} epoch {}", st.leader, st.leader_epoch);
    // A follower may have fetched A's sequence 1 (or 2) just before it was
    // paused (the answer to a long-poll fetch already on its way): B's
    // offset says how far the new leader's log goes.
    let (e, nb) = produce_to_leader_of(&c, &followers, topic, 0, &b0, "B sequence 0");
    assert_eq!(e, 0, "B's first batch on the new leader");
    let (had_a1, had_a2) = match nb {
        1 => (false, false),
        2 => (true, false),
        5 => (true, true),
        _ => panic!("B's first batch on the new leader at offset {nb}: expected 1, 2 or 5"),
    };
    step!("the new leader had A's sequence 1: {had_a1}, sequence 2: {had_a2}");
    let off_a1 = if had_a1 { 1 } else { nb + 1 };
    let off_a2 = if had_a2 {
        2
    } else if had_a1 {
        nb + 1
    } else {
        nb + 2
    };
    if had_a2 {
        step!("nothing to cut on the old leader this time: the test checks only resends");
    }
    let got1 = produce_to_leader_of(&c, &followers, topic, 0, &a1, "retry of A sequence 1");
    assert_eq!(
        got1,
        (0, off_a1),
        "A's retry of sequence 1 on the new leader"
    );
    let got2 = produce_to_leader_of(&c, &followers, topic, 0, &a2, "retry of A sequence 2");
    assert_eq!(
        got2,
        (0, off_a2),
        "A's retry of sequence 2 on the new leader"
    );
    let mut want_log: Vec<(i64, &str)> = vec![
        (0, "a0"),
        (nb, "b0"),
        (off_a1, "a1"),
        (off_a2, "a2"),
        (off_a2 + 1, "a3"),
        (off_a2 + 2, "a4"),
    ];
    want_log.sort_unstable();

    c.restart(old_leader);
    wait_full_isr(&c, topic, 0, REJOIN_TIMEOUT);
    // Move leadership back to the old leader: kill whichever node leads
    // until it is the old one (each time after the ISR is full again).
    for attempt in 1..=4 {
        let st = wait_full_isr(&c, topic, 0, REJOIN_TIMEOUT);
        if st.leader == old_leader {
            break;
        }
        assert!(
            attempt < 4,
            "leadership did not come back to node {old_leader}"
        );
        let victim = st.leader;
        c.kill9(victim);
        let rest: Vec<i32> = ids(&c).into_iter().filter(|&i| i != victim).collect();
        wait_state(&c, &rest, topic, 0, FAILOVER_TIMEOUT, "a new leader", |s| {
            s.leader > 0 && s.leader != victim
        });
        c.restart(victim);
    }
    step!("node {old_leader} leads again");
    let (_, hw_before) = high_watermark(&c, &ids(&c), topic, 0);
    assert_eq!(hw_before, 6, "log end: a0 b0 a1 a2 a3 a4");
    for (b, what, want) in [
        (&a2, "A sequence 2", (0, off_a2)),
        (&a1, "A sequence 1", (0, off_a1)),
        (&b0, "B sequence 0", (0, nb)),
        (&a0, "A sequence 0", (0, 0)),
    ] {
        let got = produce_to_leader(
            &c,
            topic,
            0,
            b,
            &format!("resend of {what} to node {old_leader}"),
        );
        assert_eq!(
            got, want,
            "resend of {what} to node {old_leader}, which once had A's sequences 1 and 2 at \
             offsets 1 and 2..=4 and cut them: it must answer the offset of the current log"
        );
    }
    let (_, hw) = high_watermark(&c, &ids(&c), topic, 0);
    assert_eq!(hw, 6, "the resends made the log grow");
    let log: Vec<String> = consume_all(&c.bootstrap_all(), topic, 0, hw)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let want: Vec<&str> = want_log.iter().map(|(_, v)| *v).collect();
    assert_eq!(log, want, "the log");
}

/// Producer ids come from controller-allocated blocks: every broker hands
/// out different ones, and none is handed out again after every broker was
/// killed and restarted.
#[test]
fn producer_ids_are_unique_across_brokers_and_restarts() {
    let _serial = common::serial();
    let mut c = Cluster::start_with(3, &[]);
    let mut seen: BTreeMap<i64, String> = BTreeMap::new();
    for round in ["before", "after kill -9 of every broker"] {
        if round != "before" {
            for id in ids(&c) {
                c.kill9(id);
            }
            c.restart_all(&ids(&c));
        }
        for id in ids(&c) {
            for k in 0..3 {
                let (pid, epoch) = init_producer_id(&c.node(id).bootstrap());
                assert_eq!(epoch, 0, "a new producer id starts at epoch 0");
                let who = format!("node {id}, call {k}, {round}");
                if let Some(prev) = seen.insert(pid, who.clone()) {
                    panic!("producer id {pid} handed out twice: {prev} and {who}");
                }
            }
        }
        step!(
            "{round}: producer ids {:?}",
            seen.keys().collect::<Vec<_>>()
        );
    }
}

/// Produce v3+ allows exactly one record batch per partition (Kafka's
/// `ProduceRequest.validateRecords`: "Produce requests with version 3 or
/// later are only allowed to contain exactly one record batch per
/// partition", INVALID_RECORD). Two batches of one idempotent producer in
/// one partition's data must be refused and nothing written; otherwise the
/// pair is deduplicated as one unit and a lone retry of the second batch is
/// answered OUT_OF_ORDER_SEQUENCE_NUMBER instead of its offset.
#[test]
fn two_batches_in_one_partition_are_invalid_record() {
    const INVALID_RECORD: i16 = 87;
    let node = Node::start(&[]);
    let addr = node.bootstrap();
    let topic = "idem-two";
    let (code, msg, _) = common::topics::raw_create_topic(&addr, topic, 1).expect("CreateTopics");
    assert_eq!(code, 0, "CreateTopics {topic}: {msg:?}");
    let (pid, epoch) = init_producer_id(&addr);
    let mut both = BytesMut::new();
    both.extend_from_slice(&idempotent_batch(pid, epoch, 0, &["x0", "x1"]));
    both.extend_from_slice(&idempotent_batch(pid, epoch, 2, &["x2"]));
    let got = produce_single(&addr, topic, &both.freeze());
    step!("Produce v8 with two batches (sequences 0..=1 and 2) in one partition: {got:?}");
    let hw = list_latest(&addr, topic, 0).expect("ListOffsets");
    assert_eq!(
        got.0, INVALID_RECORD,
        "two record batches in one partition's data (Produce v8): {got:?}, log end then {hw:?}"
    );
    assert_eq!(hw, (0, 0), "the refused request wrote records");
    // The producer starts over with one batch per request.
    let got = produce_single(
        &addr,
        topic,
        &idempotent_batch(pid, epoch, 0, &["x0", "x1"]),
    );
    assert_eq!(got, (0, 0), "sequence 0 on its own");
}

/// InitProducerId (no transactional id) with a producer id and epoch: Kafka
/// ignores them and hands out a fresh id at epoch 0; runnel bumps the epoch
/// (KIP-360) of an id it handed out. Either way, a producer id this cluster never handed out must
/// not come back as the caller's: it would later be handed out to another
/// producer, and the two would fence each other.
#[test]
fn init_producer_id_does_not_adopt_an_id_it_never_handed_out() {
    let node = Node::start(&[]);
    let addr = node.bootstrap();
    let (first, _) = init_producer_id(&addr);
    let mut conn = RawConn::connect(&addr).expect("connect");
    let forged = first + 123_456;
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(forged))
        .with_producer_epoch(0);
    let resp: InitProducerIdResponse = conn.roundtrip(4, 9, &req).expect("InitProducerId");
    let got = (resp.error_code, resp.producer_id.0, resp.producer_epoch);
    step!("InitProducerId v4 with producer id {forged} epoch 0 (never handed out): {got:?}");
    assert!(
        got.0 != 0 || got.1 != forged,
        "InitProducerId adopted producer id {forged}, which no broker handed out: {got:?}"
    );
}
