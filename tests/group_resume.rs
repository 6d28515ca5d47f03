//! A stable group outlives its coordinator (ARCHITECTURE.md, "Consumer
//! groups": the generation and assignment are Raft records). Two rdkafka
//! consumers share a topic; the group's coordinator is killed with kill -9.
//! The broker that takes the group over resumes the same generation with the
//! same members and assignments, nobody rebalances, and consumption and
//! commits carry on. When the old coordinator comes back and gets the group
//! back, it resumes the same generation too.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::Cluster;
use common::topics::create_topic;
use common::{eventually, RawConn};
use futures::executor::block_on;
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const TOPIC: &str = "resume";
const GROUP: &str = "g-resume";
const PARTITIONS: i32 = 4;

/// Counts the assignments a consumer received: one per rebalance.
struct Counting(Arc<AtomicUsize>);
impl ClientContext for Counting {}
impl ConsumerContext for Counting {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn coordinator_of(addr: &str) -> Option<i32> {
    let mut conn = RawConn::connect(addr).ok()?;
    let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(GROUP.into()));
    let resp: FindCoordinatorResponse = conn.roundtrip(3, 1, &req).ok()?;
    (resp.error_code == 0).then_some(resp.node_id.0)
}

/// (state, member id → (client id, assignment)) as `addr` describes the group.
type Described = (String, BTreeMap<String, (String, Vec<u8>)>);

fn describe(addr: &str) -> Option<Described> {
    let mut conn = RawConn::connect(addr).ok()?;
    let req = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(GROUP.into()))]);
    let resp: DescribeGroupsResponse = conn.roundtrip(5, 1, &req).ok()?;
    let g = resp.groups.into_iter().next()?;
    if g.error_code != 0 {
        return None;
    }
    let members = g
        .members
        .into_iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                (m.client_id.to_string(), m.member_assignment.to_vec()),
            )
        })
        .collect();
    Some((g.group_state.to_string(), members))
}

/// The generation `member` is in on the coordinator at `addr`: the one
/// generation for which its Heartbeat is accepted (any other is
/// ILLEGAL_GENERATION).
fn generation_of(addr: &str, member: &str) -> Option<i32> {
    let mut conn = RawConn::connect(addr).ok()?;
    (1..=50).find(|g| {
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(GROUP.into())))
            .with_member_id(StrBytes::from_string(member.into()))
            .with_generation_id(*g);
        let resp: Option<HeartbeatResponse> = conn.roundtrip(4, *g, &req).ok();
        resp.is_some_and(|r| r.error_code == 0)
    })
}

/// The group's committed offsets per partition, read through `addr` by a
/// client that never joins the group.
fn committed(addr: &str) -> Option<Vec<i64>> {
    let partitions: Vec<i32> = (0..PARTITIONS).collect();
    let got = common::topics::committed(addr, GROUP, TOPIC, &partitions, Duration::from_secs(3));
    let got = got.ok()?;
    partitions
        .iter()
        .map(|p| Some(got.get(p).copied()?.unwrap_or(-1)))
        .collect()
}

#[test]
fn a_stable_group_keeps_its_generation_through_a_coordinator_kill() {
    let mut c = Cluster::start(3);
    let boot = c.bootstrap_all();
    let res = create_topic(&boot, TOPIC, PARTITIONS, 3, &[], Duration::from_secs(30));
    assert!(res.is_ok(), "{res:?}");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &boot)
        .set("acks", "all")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let produce = |from: usize, n: usize| {
        let values: Vec<String> = (from..from + n).map(|i| format!("r{i}")).collect();
        let sends: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                producer.send(
                    FutureRecord::<(), _>::to(TOPIC)
                        .partition((i as i32) % PARTITIONS)
                        .payload(v),
                    Duration::from_secs(60),
                )
            })
            .collect();
        for r in block_on(futures::future::join_all(sends)) {
            r.expect("produce");
        }
    };
    produce(0, 400);
    step!("produced 400 records over {PARTITIONS} partitions");

    // Two consumers; each commits synchronously after every record it
    // processes. `seen` collects every record value consumed.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut rebalances = Vec::new();
    let mut consumers = Vec::new();
    for i in 0..2 {
        let count = Arc::new(AtomicUsize::new(0));
        rebalances.push(count.clone());
        let (stop, seen, boot) = (stop.clone(), seen.clone(), boot.clone());
        consumers.push(std::thread::spawn(move || {
            let cons: BaseConsumer<Counting> = ClientConfig::new()
                .set("bootstrap.servers", &boot)
                .set("group.id", GROUP)
                .set("client.id", format!("consumer-{i}"))
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                // Longer than fencing the dead coordinator (3 s here) and
                // finding the next one, so that sessions survive it.
                .set("session.timeout.ms", "15000")
                .set("heartbeat.interval.ms", "500")
                .create_with_context(Counting(count))
                .expect("consumer");
            cons.subscribe(&[TOPIC]).expect("subscribe");
            let (mut ok, mut refused) = (0usize, 0usize);
            while !stop.load(Ordering::Acquire) {
                let Some(Ok(m)) = cons.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(TOPIC, m.partition(), Offset::Offset(m.offset() + 1))
                    .expect("tpl");
                seen.lock().unwrap().push(value);
                match cons.commit(&tpl, CommitMode::Sync) {
                    Ok(()) => ok += 1,
                    Err(_) => refused += 1,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (ok, refused)
        }));
    }

    // Both members in, the group Stable, and everything so far consumed.
    let coordinator = eventually(Duration::from_secs(30), "a coordinator", || {
        coordinator_of(&c.node(1).bootstrap())
    });
    let caddr = c.node(coordinator).bootstrap();
    let before = eventually(
        Duration::from_secs(60),
        "a Stable group of 2 members",
        || describe(&caddr).filter(|(s, m)| s == "Stable" && m.len() == 2),
    );
    eventually(
        Duration::from_secs(60),
        "the first 400 records consumed",
        || (seen.lock().unwrap().len() >= 400).then_some(()),
    );
    let member = before.1.keys().next().cloned().expect("a member");
    let generation = generation_of(&caddr, &member).expect("the member's generation");
    let assigned: Vec<usize> = rebalances
        .iter()
        .map(|r| r.load(Ordering::SeqCst))
        .collect();
    step!(
        "group Stable on coordinator {coordinator} at generation {generation}, members {:?}, assignments so far {assigned:?}",
        before.1.iter().map(|(m, (cl, _))| format!("{cl}={m}")).collect::<Vec<_>>()
    );

    c.kill9(coordinator);
    let other = c
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != coordinator)
        .expect("a survivor");
    let next = eventually(Duration::from_secs(30), "a new coordinator", || {
        coordinator_of(&c.node(other).bootstrap()).filter(|n| *n != coordinator)
    });
    let naddr = c.node(next).bootstrap();
    step!("coordinator {coordinator} killed; broker {next} coordinates the group now");

    let after = describe(&naddr).expect("DescribeGroups on the new coordinator");
    step!(
        "new coordinator describes the group as {} with {} members",
        after.0,
        after.1.len()
    );
    assert_eq!(
        after.0, "Stable",
        "the group is Stable on the new coordinator"
    );
    assert_eq!(
        after.1, before.1,
        "the same members (ids, client ids, assignments) on the new coordinator"
    );
    assert_eq!(
        generation_of(&naddr, &member),
        Some(generation),
        "the new coordinator carries on with generation {generation}"
    );

    // Consumption and commits carry on in that generation.
    produce(400, 400);
    step!("produced 400 more records");
    eventually(Duration::from_secs(90), "all 800 records consumed", || {
        (seen.lock().unwrap().len() >= 800).then_some(())
    });
    let want: Vec<i64> = vec![200; PARTITIONS as usize];
    let got = eventually(
        Duration::from_secs(30),
        "every partition committed at its end",
        || committed(&naddr).filter(|o| *o == want),
    );
    step!("committed offsets on the new coordinator: {got:?}");
    let assigned_after: Vec<usize> = rebalances
        .iter()
        .map(|r| r.load(Ordering::SeqCst))
        .collect();
    assert_eq!(
        assigned_after, assigned,
        "nobody rebalanced through the failover"
    );
    let described = describe(&naddr).expect("DescribeGroups");
    assert_eq!(described, before, "still the same Stable group");

    // The old coordinator comes back and, once unfenced, gets the group
    // back by rendezvous hashing: it resumes the stored generation too.
    c.restart(coordinator);
    let back = eventually(
        Duration::from_secs(60),
        "the group back on its first coordinator",
        || coordinator_of(&c.node(other).bootstrap()).filter(|n| *n == coordinator),
    );
    let baddr = c.node(back).bootstrap();
    let described = eventually(
        Duration::from_secs(10),
        "DescribeGroups on the restarted coordinator",
        || describe(&baddr),
    );
    step!(
        "restarted broker {back} coordinates again: {} with {} members",
        described.0,
        described.1.len()
    );
    assert_eq!(described, before, "the same Stable group after moving back");
    assert_eq!(generation_of(&baddr, &member), Some(generation));
    produce(800, 40);
    let want: Vec<i64> = vec![210; PARTITIONS as usize];
    eventually(
        Duration::from_secs(60),
        "the last 40 records committed",
        || committed(&baddr).filter(|o| *o == want),
    );
    let assigned_end: Vec<usize> = rebalances
        .iter()
        .map(|r| r.load(Ordering::SeqCst))
        .collect();
    assert_eq!(
        assigned_end, assigned,
        "nobody rebalanced when the group moved back"
    );

    stop.store(true, Ordering::Release);
    let mut refused_total = 0;
    for t in consumers {
        let (ok, refused) = t.join().expect("consumer thread");
        step!("consumer: {ok} commits accepted, {refused} refused");
        refused_total += refused;
    }
    let seen = seen.lock().unwrap();
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), 840, "every record consumed");
    step!(
        "{} records consumed ({} twice), {refused_total} commits refused during the moves",
        seen.len(),
        seen.len() - distinct.len()
    );
}
