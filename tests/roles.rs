//! Separate roles: three controller-only voters (`process.roles=controller`)
//! and three broker-only nodes (`process.roles=broker`), the layout of a
//! production cluster. A broker-only node has no Raft and no metadata log;
//! it follows the committed metadata as a stream from the voters. What a
//! user of such a cluster relies on:
//!
//! * every broker's Metadata lists the three brokers (not the controllers)
//!   and an active controller; CreateTopics with replication factor 3 and
//!   min.insync.replicas=2 works, and an acks=all producer's records are
//!   read back by a consumer; `kill -9` of the active controller, and
//!   CreateTopics works again;
//! * `kill -9` (or SIGSTOP) of the voter a broker streams from: the broker goes on
//!   following on another voter, resuming after the last index it applied
//!   (its log says so; it gets no second snapshot);
//! * a restarted broker-only node registers again, catches up, and is back
//!   in Metadata and in the ISR;
//! * with every controller down the brokers still answer; once the
//!   controllers are back each broker resumes its stream (no new image);
//! * a broker-only node also joins a cluster of combined broker+controller
//!   nodes, leading and following partitions with them.
//!
//! The tests run one at a time (a lock): six processes each on a small
//! machine. Run with the step log: `cargo test --release --test roles -- --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, Role, CLUSTER_ID};
use common::partition::{self, partition_state, sorted};
use common::topics;
use common::{eventually, RawConn};
use kafka_protocol::messages::{DescribeQuorumRequest, DescribeQuorumResponse};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);
const CONTROLLERS: [i32; 3] = [1, 2, 3];
const BROKERS: [i32; 3] = [4, 5, 6];

fn start() -> Cluster {
    start_with(&|_| Vec::new())
}

/// As `start`, with per-node overrides.
fn start_with(per_node: &dyn Fn(i32) -> Vec<String>) -> Cluster {
    use Role::{Broker, Controller};
    let c = Cluster::start_roles_with(
        &[Controller, Controller, Controller, Broker, Broker, Broker],
        &[],
        per_node,
    );
    assert_eq!(c.voter_ids(), CONTROLLERS);
    assert_eq!(c.broker_ids(), BROKERS);
    c
}

/// `a,b` of the brokers in `ids`.
fn bootstrap(c: &Cluster, ids: &[i32]) -> String {
    ids.iter()
        .map(|&id| c.node(id).bootstrap())
        .collect::<Vec<_>>()
        .join(",")
}

/// CreateTopics through rdkafka's AdminClient, replication factor 3 and
/// min.insync.replicas=2.
fn create_topic(bootstrap: &str, name: &str, timeout: Duration) -> Result<(), String> {
    create_topic_rf(bootstrap, name, 3, timeout)
}

fn create_topic_rf(bootstrap: &str, name: &str, rf: i32, timeout: Duration) -> Result<(), String> {
    let configs = [("min.insync.replicas", "2")];
    topics::create_topic(bootstrap, name, 1, rf, &configs, timeout)
}

/// Retries CreateTopics (a new name per attempt: a timed-out attempt may
/// still have created its topic) until one succeeds; returns its name and
/// how long it took.
fn create_until_ok(bootstrap: &str, prefix: &str) -> (String, Duration) {
    let started = Instant::now();
    for attempt in 1.. {
        let name = format!("{prefix}-{attempt}");
        match create_topic(bootstrap, &name, Duration::from_secs(5)) {
            Ok(()) => return (name, started.elapsed()),
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "CreateTopics still failing after 60 s: {e}"
                );
                step!("CreateTopics attempt {attempt}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    unreachable!()
}

/// Waits until every broker says `topic`/0 has a leader and its three
/// replicas in the ISR; returns the replicas.
fn wait_full_isr(c: &Cluster, topic: &str) -> Vec<i32> {
    partition::wait_full_isr(c, topic, 0, TIMEOUT).replicas
}

/// The quorum leader, as DescribeQuorum through broker `via` says.
fn quorum_leader(c: &Cluster, via: i32) -> Option<i32> {
    quorum(c, via).map(|(leader, ..)| leader)
}

/// DescribeQuorum through broker `via`: leader, voters and observers
/// (sorted ids).
fn quorum(c: &Cluster, via: i32) -> Option<(i32, Vec<i32>, Vec<i32>)> {
    let mut conn = RawConn::connect(&c.node(via).bootstrap()).ok()?;
    let resp: DescribeQuorumResponse = conn
        .roundtrip(2, 1, &DescribeQuorumRequest::default())
        .ok()?;
    let part = resp.topics.first()?.partitions.first()?;
    let ids = |v: &[kafka_protocol::messages::describe_quorum_response::ReplicaState]| {
        let mut ids: Vec<i32> = v.iter().map(|r| r.replica_id.0).collect();
        ids.sort_unstable();
        ids
    };
    (part.error_code == 0 && part.leader_id.0 > 0).then(|| {
        (
            part.leader_id.0,
            ids(&part.current_voters),
            ids(&part.observers),
        )
    })
}

/// Produces `n` records with acks=all through rdkafka; panics unless every
/// one is acknowledged.
fn produce_acked(c: &Cluster, topic: &str, prefix: &str, n: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap_all())
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("create producer");
    for i in 0..n {
        let value = format!("{prefix}-{i}");
        producer
            .send(BaseRecord::<(), str>::to(topic).payload(&value))
            .map_err(|(e, _)| e)
            .expect("enqueue");
    }
    producer.flush(TIMEOUT).expect("every record acknowledged");
    step!("{n} records produced to {topic} with acks=all and acknowledged");
}

/// Reads `topic`/0 from the beginning until `n` records; returns their values.
fn consume(c: &Cluster, topic: &str, n: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap_all())
        .set("group.id", "runnel-roles-tests")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .create()
        .expect("create consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition offset");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + TIMEOUT;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "read only {} of {n} records of {topic}",
            out.len()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    out
}

/// The log without ANSI colour sequences, so that `key=value` fields can
/// be matched.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// The numeric value of `key=` on `line`.
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The value of the Prometheus sample `name` (no labels) that the node's
/// `metrics.listener` at `addr` serves; None if it has none yet.
fn metric(addr: &str, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(conn, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("GET /metrics");
    let mut body = String::new();
    conn.read_to_string(&mut body).expect("read /metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The voter broker `id` streams from now (its last "following" line).
fn streaming_from(c: &Cluster, id: i32) -> Option<i32> {
    let log = plain(&c.node(id).log_since_start());
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("following the metadata stream"))?;
    field(line, "controller").map(|v| v as i32)
}

#[test]
fn three_controllers_and_three_brokers_serve_clients_and_survive_a_controller_kill() {
    let _serial = common::serial();
    let mut c = start();

    for id in BROKERS {
        let v = c.view(id).expect("Metadata");
        assert_eq!(v.broker_ids, BROKERS, "broker {id} lists the brokers only");
        assert!(
            BROKERS.contains(&v.controller_id),
            "broker {id} names a reachable active controller: {v:?}"
        );
        assert_eq!(v.cluster_id.as_deref(), Some(CLUSTER_ID));
        step!("broker {id}: {v:?}");
    }
    // `runnel format` gave the voters a metadata log and the brokers only
    // meta.properties.
    for id in CONTROLLERS.into_iter().chain(BROKERS) {
        let data = c.dir(id).join("data");
        assert!(
            data.join("meta.properties").is_file(),
            "node {id} formatted"
        );
        assert_eq!(
            data.join("__cluster_metadata-0").exists(),
            CONTROLLERS.contains(&id),
            "node {id}: a metadata log only on voters"
        );
    }
    let leader = eventually(TIMEOUT, "a quorum leader", || quorum_leader(&c, 4));
    assert!(
        CONTROLLERS.contains(&leader),
        "the leader {leader} is a voter"
    );
    for id in BROKERS {
        assert_eq!(
            quorum_leader(&c, id),
            Some(leader),
            "DescribeQuorum via {id}"
        );
    }
    let (_, voters, observers) =
        eventually(TIMEOUT, "DescribeQuorum to list the observers", || {
            quorum(&c, 5).filter(|(_, _, o)| o[..] == BROKERS)
        });
    assert_eq!(voters, CONTROLLERS);
    step!(
        "DescribeQuorum through every broker: leader {leader}, voters {voters:?}, observers {observers:?}"
    );

    create_topic(&c.bootstrap_all(), "orders", TIMEOUT).expect("CreateTopics RF=3");
    let replicas = wait_full_isr(&c, "orders");
    assert_eq!(
        sorted(&replicas),
        BROKERS,
        "the replicas are the three brokers"
    );
    produce_acked(&c, "orders", "v", 200);
    let read = consume(&c, "orders", 200);
    let want: Vec<String> = (0..200).map(|i| format!("v-{i}")).collect();
    assert_eq!(read, want, "every acknowledged record read back in order");
    step!("200 records read back");

    step!("killing the active controller {leader}");
    c.kill9(leader);
    let (topic, took) = create_until_ok(&c.bootstrap_all(), "after-kill");
    step!(
        "kill -9 of controller {leader} -> CreateTopics ({topic}) ok after {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
    let new = eventually(TIMEOUT, "a new quorum leader", || {
        quorum_leader(&c, 5).filter(|&l| l != leader)
    });
    step!("controller {new} took over");
    wait_full_isr(&c, &topic);
    produce_acked(&c, &topic, "w", 20);
    assert_eq!(consume(&c, &topic, 20).len(), 20);
}

#[test]
fn a_broker_resumes_the_metadata_stream_on_another_voter() {
    let _serial = common::serial();
    let broker = 4;
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let m = metrics.clone();
    let mut c = start_with(&move |id| {
        if id == broker {
            vec![format!("metrics.listener={m}")]
        } else {
            Vec::new()
        }
    });
    // Some history, so that the index the broker resumes after is well
    // past its first image.
    create_topic(&c.bootstrap_all(), "before", TIMEOUT).expect("CreateTopics");
    wait_full_isr(&c, "before");

    let voter = eventually(TIMEOUT, "broker 4 to follow a voter", || {
        streaming_from(&c, broker)
    });
    let log = plain(&c.node(broker).log_since_start());
    let snapshots_before = log
        .matches("installed the metadata image from the stream")
        .count();
    assert_eq!(snapshots_before, 1, "one image, at start:\n{log}");
    let mark = log.len();
    step!("broker {broker} streams from controller {voter}; killing it");
    c.kill9(voter);

    // A change the broker can only learn from another voter.
    let survivors: Vec<i32> = BROKERS.iter().copied().filter(|&b| b != broker).collect();
    let (topic, took) = create_until_ok(&bootstrap(&c, &survivors), "after-voter-kill");
    step!(
        "CreateTopics ({topic}) ok {:.0} ms after the kill",
        took.as_secs_f64() * 1000.0
    );
    wait_full_isr(&c, &topic);

    let log = plain(&c.node(broker).log_since_start());
    let since = &log[mark..];
    let resumed = since
        .lines()
        .find(|l| l.contains("resumed the metadata stream"))
        .unwrap_or_else(|| panic!("no resume in broker {broker}'s log since the kill:\n{since}"));
    let from = field(resumed, "controller").expect("controller=") as i32;
    let after = field(resumed, "after").expect("after=");
    let next = field(resumed, "next").expect("next=");
    step!("broker {broker}: {resumed}");
    assert_ne!(from, voter, "resumed on another voter");
    assert!(after > 0, "resumed after a nonzero index: {resumed}");
    assert!(next > after, "the next record follows the resume point");
    assert!(
        !since.contains("installed the metadata image from the stream"),
        "the broker took a new image instead of resuming:\n{since}"
    );
    assert_eq!(streaming_from(&c, broker), Some(from));
    // The same, as Prometheus sees it.
    let snapshots = metric(&metrics, "runnel_metadata_stream_snapshots_total");
    let resumes = metric(&metrics, "runnel_metadata_stream_resumes_total");
    let applied = metric(&metrics, "runnel_metadata_applied_index").unwrap_or(0.0);
    step!("broker {broker}: {snapshots:?} images, {resumes:?} resumes, applied index {applied}");
    assert_eq!(snapshots, Some(1.0), "one image, at start");
    assert_eq!(resumes, Some(1.0), "one resume");
    assert!(applied >= next as f64, "applied index {applied} < {next}");

    // Still following: another change arrives through the new voter.
    let (topic2, _) = create_until_ok(&c.bootstrap_all(), "later");
    wait_full_isr(&c, &topic2);
    step!("broker {broker} follows on controller {from} and sees {topic2}");
}

#[test]
fn a_restarted_broker_registers_catches_up_and_rejoins_the_isr() {
    let _serial = common::serial();
    let mut c = start();
    create_topic(&c.bootstrap_all(), "kept", TIMEOUT).expect("CreateTopics");
    wait_full_isr(&c, "kept");
    produce_acked(&c, "kept", "a", 50);

    let broker = 5;
    c.kill9(broker);
    let others = [4, 6];
    eventually(TIMEOUT, "the dead broker to be fenced", || {
        let v = c.view(4).ok()?;
        (v.broker_ids == others).then_some(())
    });
    step!("broker {broker} fenced: brokers {others:?} remain");
    // While it is down: a new topic (metadata to catch up with; RF=2, the
    // brokers alive) and more records (data to catch up with).
    create_topic_rf(&bootstrap(&c, &others), "while-down", 2, TIMEOUT).expect("CreateTopics");
    produce_acked(&c, "kept", "b", 50);

    c.restart(broker);
    let log = plain(&c.node(broker).log_since_start());
    assert!(
        log.contains("registered with the controller"),
        "registered again:\n{log}"
    );
    for id in BROKERS {
        eventually(TIMEOUT, &format!("broker {id} to list all brokers"), || {
            (c.view(id).ok()?.broker_ids == BROKERS).then_some(())
        });
    }
    step!("broker {broker} back in every broker's Metadata");
    let st = eventually(TIMEOUT, "the restarted broker to list while-down", || {
        partition_state(&c.node(broker).bootstrap(), "while-down", 0).ok()
    });
    assert_eq!(
        sorted(&st.replicas),
        others,
        "while-down was placed on the live brokers"
    );
    wait_full_isr(&c, "kept");
    step!("broker {broker} caught up and is back in the ISR");
    let read = consume(&c, "kept", 100);
    let want: Vec<String> = (0..50)
        .map(|i| format!("a-{i}"))
        .chain((0..50).map(|i| format!("b-{i}")))
        .collect();
    assert_eq!(read, want);

    // A broker-only node stopped with SIGTERM is fenced by the controller
    // before it goes (controlled shutdown), and leaves the ISR.
    c.stop(6);
    let log = plain(&c.node(6).log_since_start());
    assert!(
        log.contains("fenced by the controller for shutdown"),
        "controlled shutdown:\n{log}"
    );
    eventually(TIMEOUT, "broker 6 to leave Metadata", || {
        (c.view(4).ok()?.broker_ids == [4, 5]).then_some(())
    });
    step!("broker 6 stopped with SIGTERM: fenced first, gone from Metadata");
}

#[test]
fn a_broker_only_node_is_not_a_voter_and_needs_the_voters() {
    let dir = tempfile::tempdir().expect("temp dir");
    let serve = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runnel"));
        cmd.arg("serve");
        for kv in [
            "node.id=4",
            "process.roles=broker",
            "listeners=PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:0",
            &format!("log.dirs={}", dir.path().display()),
        ]
        .iter()
        .chain(extra)
        {
            cmd.arg("--override").arg(kv);
        }
        let out = cmd.output().expect("run runnel serve");
        assert!(!out.status.success(), "serve must refuse {extra:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = serve(&["controller.quorum.voters=1@127.0.0.1:1,4@127.0.0.1:2"]);
    assert!(err.contains("controller.quorum.voters"), "{err}");
    assert!(err.contains("not a voter"), "{err}");
    let err = serve(&[]);
    assert!(err.contains("controller.quorum.voters"), "{err}");
    assert!(err.contains("broker-only"), "{err}");
    step!("serve refuses a broker-only node listed as a voter, or without voters");
}

#[test]
fn a_broker_leaves_a_paused_voter_and_resumes_on_another() {
    let _serial = common::serial();
    let mut c = start();
    let broker = 6;
    create_topic(&c.bootstrap_all(), "before", TIMEOUT).expect("CreateTopics");
    wait_full_isr(&c, "before");
    let voter = eventually(TIMEOUT, "broker 6 to follow a voter", || {
        streaming_from(&c, broker)
    });
    let mark = plain(&c.node(broker).log_since_start()).len();
    // A paused voter keeps its connections open but sends nothing: the
    // broker must notice the silence, not wait for TCP.
    c.signal(voter, "STOP");
    let paused = Instant::now();
    let (topic, _) = create_until_ok(&c.bootstrap_all(), "while-paused");
    let addr = c.node(broker).bootstrap();
    eventually(TIMEOUT, "the broker to learn of the new topic", || {
        partition_state(&addr, &topic, 0).ok()
    });
    let took = paused.elapsed();
    step!(
        "broker {broker} lists {topic} {:.0} ms after its voter {voter} was paused",
        took.as_secs_f64() * 1000.0
    );
    let log = plain(&c.node(broker).log_since_start());
    let since = &log[mark..];
    let resumed = since
        .lines()
        .find(|l| l.contains("resumed the metadata stream"))
        .unwrap_or_else(|| panic!("no resume since the pause:\n{since}"));
    assert_ne!(field(resumed, "controller"), Some(voter as u64));
    assert!(field(resumed, "after").unwrap_or(0) > 0, "{resumed}");
    assert!(
        !since.contains("installed the metadata image from the stream"),
        "{since}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    c.signal(voter, "CONT");
    wait_full_isr(&c, &topic);
}

#[test]
fn broker_only_nodes_join_a_cluster_of_combined_nodes() {
    let _serial = common::serial();
    use Role::{Broker, Combined};
    let c = Cluster::start_roles(&[Combined, Combined, Combined, Broker]);
    let all = [1, 2, 3, 4];
    for id in all {
        let v = c.view(id).expect("Metadata");
        assert_eq!(v.broker_ids, all, "node {id} lists every broker");
        assert!(all.contains(&v.controller_id), "node {id}: {v:?}");
    }
    step!("the three combined nodes and the broker-only node 4 all list brokers {all:?}");
    // Four partitions of three replicas: the broker-only node leads some
    // and follows others, fetching from and serving the combined nodes.
    let res = topics::create_topic(&c.bootstrap_all(), "mixed", 4, 3, &[], TIMEOUT);
    assert!(res.is_ok(), "{res:?}");
    let mut with_4 = 0;
    for p in 0..4 {
        let st = partition::wait_full_isr(&c, "mixed", p, TIMEOUT);
        with_4 += usize::from(st.replicas.contains(&4));
    }
    assert!(with_4 >= 2, "the broker-only node holds replicas");
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap_all())
        .set("acks", "all")
        .create()
        .expect("create producer");
    for p in 0..4 {
        let value = format!("to-{p}");
        producer
            .send(
                BaseRecord::<(), str>::to("mixed")
                    .partition(p)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue");
    }
    producer.flush(TIMEOUT).expect("every record acknowledged");
    step!("one acks=all record acknowledged on each partition");
}

#[test]
fn brokers_resume_after_every_controller_was_down() {
    let _serial = common::serial();
    let mut c = start();
    create_topic(&c.bootstrap_all(), "before", TIMEOUT).expect("CreateTopics");
    wait_full_isr(&c, "before");
    let marks: Vec<usize> = BROKERS
        .iter()
        .map(|&b| plain(&c.node(b).log_since_start()).len())
        .collect();
    for id in CONTROLLERS {
        c.kill9(id);
    }
    // Once the brokers have found no controller to stream from, they still
    // serve what they have (Metadata, the topic).
    for (&b, &mark) in BROKERS.iter().zip(&marks) {
        eventually(TIMEOUT, "the brokers to find every controller gone", || {
            plain(&c.node(b).log_since_start())[mark..]
                .contains("no controller serves the metadata stream")
                .then_some(())
        });
    }
    for id in BROKERS {
        assert!(partition_state(&c.node(id).bootstrap(), "before", 0).is_ok());
    }
    step!("every controller down: the brokers still answer Metadata");
    // Restarted voters replay their logs and may be behind the brokers
    // for a moment; the brokers resume from their own index regardless.
    c.restart_all(&CONTROLLERS);
    let (topic, took) = create_until_ok(&c.bootstrap_all(), "after-outage");
    step!(
        "CreateTopics ({topic}) ok {:.0} ms after the controllers restarted",
        took.as_secs_f64() * 1000.0
    );
    wait_full_isr(&c, &topic);
    for (&b, &mark) in BROKERS.iter().zip(&marks) {
        let log = plain(&c.node(b).log_since_start());
        let since = &log[mark..];
        let resumed = since
            .lines()
            .find(|l| l.contains("resumed the metadata stream"))
            .unwrap_or_else(|| panic!("broker {b} did not resume:\n{since}"));
        assert!(field(resumed, "after").unwrap_or(0) > 0, "{resumed}");
        assert!(
            !since.contains("installed the metadata image from the stream"),
            "broker {b} took a new image:\n{since}"
        );
        let warnings = since
            .lines()
            .filter(|l| l.contains("no controller serves the metadata stream"))
            .count();
        assert!(
            warnings <= 2,
            "broker {b} repeats the outage warning:\n{since}"
        );
        step!("broker {b}: {resumed}");
    }
}
