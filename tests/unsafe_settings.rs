//! The fault suite's checker (`tests/chaos/checker.rs`) on a real run that
//! is unsafe on purpose: it must report the writes that run loses, or its
//! "zero anomalies" in the chaos run would mean nothing.
//!
//! The setting: `unclean.leader.election.enable=true` with
//! `min.insync.replicas=1`, Jepsen's classic Kafka loss. Three brokers
//! (and one controller-only node, so that pausing brokers leaves the
//! quorum alone) hold a replication-factor-3 partition that an acks=all
//! producer writes to. Both followers are paused (SIGSTOP) until the
//! controller fences them and the leader is alone in the ISR: min.insync 1
//! lets it go on acknowledging alone. Then the leader is killed (kill -9)
//! and the followers resumed: with no ISR member alive, the unclean
//! election makes a follower that never saw those writes the leader, the
//! producer goes on at the same offsets, and the old leader, restarted,
//! truncates its log to the new leader's. Every write acknowledged while
//! the leader was alone is gone, and later offsets are read: lost writes.

mod common;

#[allow(dead_code)]
#[path = "chaos/checker.rs"]
mod checker;
#[allow(dead_code)]
#[path = "chaos/history.rs"]
mod history;

use std::time::{Duration, Instant};

use checker::AnomalyKind;
use common::cluster::Cluster;
use common::node::Role;
use common::partition::{consume_all, high_watermark, ids, wait_full_isr, wait_state};
use common::producer::{index_of, key_of_index, BgProducer, Spec};
use common::topics::create_topic;
use history::{Event, Persisted};

const TOPIC: &str = "unsafe";
const WITHIN: Duration = Duration::from_secs(60);

#[test]
fn an_unclean_election_after_the_followers_fell_behind_loses_acknowledged_writes() {
    let mut c = Cluster::start_roles(&[Role::Controller, Role::Broker, Role::Broker, Role::Broker]);
    let bootstrap = c.bootstrap_all();
    create_topic(
        &bootstrap,
        TOPIC,
        1,
        3,
        &[
            ("min.insync.replicas", "1"),
            ("unclean.leader.election.enable", "true"),
        ],
        WITHIN,
    )
    .expect("create the topic");
    let st = wait_full_isr(&c, TOPIC, 0, WITHIN);
    let leader = st.leader;
    let followers: Vec<i32> = st
        .replicas
        .iter()
        .copied()
        .filter(|&r| r != leader)
        .collect();

    let start = Instant::now();
    let producer = BgProducer::start(&bootstrap, Spec::continuous(TOPIC, "u"));
    producer.wait_more_acks(200, WITHIN, "acks with the full ISR");

    step!("pause followers {followers:?} until leader {leader} is alone in the ISR");
    for &f in &followers {
        c.signal(f, "STOP");
    }
    wait_state(
        &c,
        &[leader],
        TOPIC,
        0,
        WITHIN,
        "the leader alone in the ISR",
        |s| s.isr == [leader],
    );
    let alone = Instant::now();
    producer.wait_acks_since(alone, 300, WITHIN, "acks from the leader alone");

    step!("kill -9 leader {leader}, resume the followers: an unclean election");
    c.kill9(leader);
    for &f in &followers {
        c.signal(f, "CONT");
    }
    let new = wait_state(&c, &followers, TOPIC, 0, WITHIN, "a new leader", |s| {
        s.leader > 0 && s.leader != leader
    });
    step!("new leader {} (epoch {})", new.leader, new.leader_epoch);
    // The new leader reuses the lost offsets: wait until it acknowledges
    // past every offset the old one did, so that each lost write has a
    // later offset read (a lost write, not an unseen one).
    let elected = Instant::now();
    let above = producer.max_acked_offset();
    let deadline = elected + WITHIN;
    while producer.first_ack_after(elected, above).is_none() {
        assert!(
            Instant::now() < deadline,
            "the new leader acknowledged no offset above {above} within {WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    step!("restart node {leader}: it follows, and truncates to the new leader's log");
    c.restart(leader);
    wait_state(
        &c,
        &ids(&c),
        TOPIC,
        0,
        WITHIN,
        "all three in the ISR",
        |s| s.isr.len() == 3,
    );
    let report = producer.finish();
    let (_, hw) = high_watermark(&c, &ids(&c), TOPIC, 0);
    let read = consume_all(&bootstrap, TOPIC, 0, hw);
    step!("read {} records below the high watermark {hw}", read.len());

    // The history, as the chaos suite writes it.
    let t = |at: Instant| at.saturating_duration_since(start).as_millis() as u64;
    let mut events = Vec::new();
    for i in 0..report.sent {
        events.push(Event::Send {
            t: 0,
            client: "p".into(),
            topic: TOPIC.into(),
            partition: 0,
            value: key_of_index("u", i),
        });
    }
    for a in &report.acked {
        events.push(Event::Ack {
            t: t(a.at),
            client: "p".into(),
            topic: TOPIC.into(),
            partition: a.partition,
            value: a.key.clone(),
            offset: a.offset,
        });
    }
    for (key, error) in &report.failed {
        events.push(Event::Fail {
            t: t(Instant::now()),
            client: "p".into(),
            topic: TOPIC.into(),
            partition: 0,
            value: key.clone(),
            error: error.clone(),
            persisted: Persisted::Possibly,
        });
    }
    for (offset, key) in &read {
        events.push(Event::Poll {
            t: t(Instant::now()),
            client: "reader".into(),
            session: 1,
            topic: TOPIC.into(),
            partition: 0,
            offset: *offset,
            value: key.clone(),
        });
    }
    let found = checker::check(&events);
    eprintln!("{}", found.table());

    // What the run lost, counted without the checker: acked keys absent
    // from the final log.
    let present: std::collections::HashSet<u64> = read.iter().map(|(_, k)| index_of(k)).collect();
    let lost_by_hand = report
        .acked
        .iter()
        .filter(|a| !present.contains(&index_of(&a.key)))
        .count();
    step!("acknowledged but absent from the log: {lost_by_hand}");
    assert!(
        lost_by_hand > 0,
        "the unsafe run lost nothing: the scenario did not do what it claims"
    );
    let lost = found.anomalies(AnomalyKind::LostWrite).count;
    assert_eq!(
        lost as usize, lost_by_hand,
        "the checker's lost writes against the acked keys missing from the log"
    );
    assert_eq!(
        found.anomalies(AnomalyKind::Unseen).count,
        0,
        "every missing write has later offsets read, so each is lost, not unseen"
    );
}
