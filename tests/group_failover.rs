//! Consumer-group offsets through the death of the group's coordinator
//! (issue 5, acceptance 3): a consumer commits after processing while the
//! coordinating broker is killed with kill -9; no committed offset ever goes
//! backwards, and the group resumes from the last commit.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::topics::create_topic;
use common::{eventually, RawConn};
use futures::executor::block_on;
use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "commits";
const GROUP: &str = "g-failover";
const RECORDS: i64 = 3000;

fn coordinator_of(addr: &str, group: &str) -> Option<i32> {
    let mut conn = RawConn::connect(addr).ok()?;
    let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.into()));
    let resp: FindCoordinatorResponse = conn.roundtrip(3, 1, &req).ok()?;
    (resp.error_code == 0).then_some(resp.node_id.0)
}

/// The group's committed offset of partition 0, asked through `bootstrap`
/// by a client that never joins the group; None when not answered.
fn committed(bootstrap: &str) -> Option<i64> {
    let got = common::topics::committed(bootstrap, GROUP, TOPIC, &[0], Duration::from_secs(3));
    Some(got.ok()?.get(&0).copied()?.unwrap_or(-1))
}

#[test]
fn commits_survive_killing_the_coordinator_and_never_go_backwards() {
    let mut c = Cluster::start(3);
    let boot = c.bootstrap_all();
    let res = create_topic(&boot, TOPIC, 1, 3, &[], Duration::from_secs(30));
    assert!(res.is_ok(), "{res:?}");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &boot)
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let values: Vec<String> = (0..RECORDS).map(|i| format!("r{i}")).collect();
    let sends: Vec<_> = values
        .iter()
        .map(|v| {
            producer.send(
                FutureRecord::<(), _>::to(TOPIC).partition(0).payload(v),
                Duration::from_secs(30),
            )
        })
        .collect();
    for r in block_on(futures::future::join_all(sends)) {
        r.expect("produce");
    }
    step!("produced {RECORDS} records");

    // The consumer processes each record, then commits synchronously
    // every 20 records; `acked` is the last commit the broker accepted.
    let acked = Arc::new(AtomicI64::new(-1));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (acked, stop, boot) = (acked.clone(), stop.clone(), boot.clone());
        std::thread::spawn(move || {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &boot)
                .set("group.id", GROUP)
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "300")
                .create()
                .expect("consumer");
            c.subscribe(&[TOPIC]).expect("subscribe");
            let mut next = -1i64;
            let mut failures = 0;
            while !stop.load(Ordering::Acquire) && acked.load(Ordering::Acquire) < RECORDS {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                    next = m.offset() + 1;
                    // Throttle so that the kill lands mid-stream.
                    std::thread::sleep(Duration::from_millis(2));
                }
                if next > acked.load(Ordering::Acquire) && (next % 20 == 0 || next == RECORDS) {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(next))
                        .expect("tpl");
                    match c.commit(&tpl, CommitMode::Sync) {
                        Ok(()) => acked.store(next, Ordering::Release),
                        Err(_) => failures += 1,
                    }
                }
            }
            failures
        })
    };
    // A watcher reads the committed offset through every live node and
    // records what it saw, in order.
    let seen = Arc::new(Mutex::new(Vec::<(i32, i64)>::new()));
    let watcher = {
        let (seen, stop) = (seen.clone(), stop.clone());
        let nodes: Vec<(i32, String)> = c.nodes.iter().map(|n| (n.id, n.bootstrap())).collect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                for (id, addr) in &nodes {
                    if let Some(o) = committed(addr) {
                        seen.lock().unwrap().push((*id, o));
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::Acquire) < RECORDS / 3 {
        assert!(
            Instant::now() < deadline,
            "the consumer did not commit a third of the records"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let coordinator = coordinator_of(&c.node(1).bootstrap(), GROUP).expect("FindCoordinator");
    let before = acked.load(Ordering::Acquire);
    c.kill9(coordinator);
    step!("killed coordinator {coordinator} with commits at {before}");
    let deadline = Instant::now() + Duration::from_secs(90);
    while acked.load(Ordering::Acquire) < RECORDS {
        assert!(
            Instant::now() < deadline,
            "the group did not finish after the coordinator died: committed {}",
            acked.load(Ordering::Acquire)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let failures = consumer.join().expect("consumer thread");
    let new_coordinator = coordinator_of(
        &c.node(if coordinator == 1 { 2 } else { 1 }).bootstrap(),
        GROUP,
    );
    step!("all {RECORDS} committed ({failures} commits refused during the failover); coordinator now {new_coordinator:?}");
    c.restart(coordinator);
    // Until the watcher has read the offset through the restarted node too.
    let mark = seen.lock().unwrap().len();
    eventually(
        Duration::from_secs(30),
        "the committed offset through the restarted coordinator",
        || {
            let seen = seen.lock().unwrap();
            seen[mark..]
                .iter()
                .any(|(id, _)| *id == coordinator)
                .then_some(())
        },
    );
    stop.store(true, Ordering::Release);
    watcher.join().expect("watcher");

    // Offsets never went backwards, whichever node answered.
    let seen = seen.lock().unwrap().clone();
    let mut high = -1;
    for (id, o) in &seen {
        assert!(
            *o >= high,
            "committed offset went backwards: node {id} answered {o} after {high} was seen"
        );
        high = high.max(*o);
    }
    assert!(seen.len() > 10, "the watcher saw too little: {seen:?}");
    assert_eq!(high, RECORDS, "the last commit is visible");
    for n in &c.nodes {
        assert_eq!(committed(&n.bootstrap()), Some(RECORDS), "node {}", n.id);
    }

    // The group resumes from the last commit: a new member reads only what
    // is produced now.
    block_on(
        producer.send(
            FutureRecord::<(), _>::to(TOPIC)
                .partition(0)
                .payload("after"),
            Duration::from_secs(30),
        ),
    )
    .expect("produce after");
    let c2: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &boot)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    c2.subscribe(&[TOPIC]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        assert!(Instant::now() < deadline, "the resumed member read nothing");
        if let Some(Ok(m)) = c2.poll(Duration::from_millis(200)) {
            break (m.offset(), m.payload().map(|p| p.to_vec()));
        }
    };
    assert_eq!(
        first,
        (RECORDS, Some(b"after".to_vec())),
        "resumed from the last commit"
    );
    step!("a new member resumed at offset {RECORDS}");
}
