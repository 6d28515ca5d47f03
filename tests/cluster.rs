//! Three `runnel serve` processes, each a broker and a controller voter,
//! formatted with `runnel format` and talking Raft over gRPC on their
//! CONTROLLER listeners. What a user of a cluster relies on:
//!
//! * it forms from freshly formatted dirs, and every node's Metadata lists
//!   all brokers, the same active controller and the cluster id;
//! * `kill -9` of the active controller elects another, and CreateTopics
//!   works again (the time it takes is printed); the killed node catches
//!   up when restarted;
//! * with 2 of 3 voters down, CreateTopics fails with an error within a
//!   bounded time (no split brain), and works again once a majority is
//!   back, with nothing created before lost.
//!
//! Topics have replication factor 1: partition replication comes later.
//! Run one with its step log: `cargo test --release --test cluster -- --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{topics_on, Cluster, ClusterView, CLUSTER_ID};
use common::eventually;
use common::topics::raw_create_topic;
use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Kafka's REQUEST_TIMED_OUT, what a proposal without a quorum answers.
const REQUEST_TIMED_OUT: i16 = 7;

/// Waits until every node in `ids` answers Metadata listing the brokers
/// in `ids`, the cluster id, and one controller they agree on; returns it.
/// (A killed broker leaves Metadata once it is fenced, half a second
/// after its death: `ids` are the live ones.)
fn agreed_controller(c: &Cluster, ids: &[i32]) -> i32 {
    eventually(TIMEOUT, "the nodes to agree on a controller", || {
        let views: Vec<ClusterView> = ids
            .iter()
            .map(|&id| c.view(id).ok())
            .collect::<Option<_>>()?;
        let first = views.first()?.controller_id;
        let agreed = (1..=3).contains(&first)
            && views.iter().all(|v| {
                v.controller_id == first
                    && v.broker_ids == ids
                    && v.cluster_id.as_deref() == Some(CLUSTER_ID)
            });
        agreed.then_some(first)
    })
}

/// Waits until node `id` lists `want` (name -> partitions) among its topics.
fn wait_topics_on(c: &Cluster, id: i32, want: &BTreeMap<String, usize>) {
    let addr = c.node(id).bootstrap();
    eventually(TIMEOUT, &format!("node {id} to list {want:?}"), || {
        let have = topics_on(&addr).ok()?;
        want.iter()
            .all(|(t, n)| have.get(t) == Some(n))
            .then_some(())
    });
}

/// CreateTopics through rdkafka's AdminClient (which sends it to the
/// controller its Metadata names), replication factor 1.
fn create_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<(), String> {
    common::topics::create_topic(bootstrap, name, partitions, 1, &[], timeout)
}

#[test]
fn three_nodes_form_a_cluster_from_formatted_dirs() {
    let c = Cluster::start(3);
    let controller = agreed_controller(&c, &[1, 2, 3]);
    step!("all nodes agree: controller {controller}, cluster id {CLUSTER_ID}");

    // What a librdkafka application sees through each node.
    for n in &c.nodes {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", n.bootstrap())
            .create()
            .expect("create consumer");
        let md = consumer
            .fetch_metadata(None, TIMEOUT)
            .expect("Metadata through rdkafka");
        let mut brokers: Vec<(i32, String, i32)> = md
            .brokers()
            .iter()
            .map(|b| (b.id(), b.host().to_string(), b.port()))
            .collect();
        brokers.sort();
        let want: Vec<(i32, String, i32)> = c
            .nodes
            .iter()
            .map(|m| (m.id, "127.0.0.1".to_string(), i32::from(m.kafka_port)))
            .collect();
        assert_eq!(brokers, want, "brokers in node {}'s Metadata", n.id);
        step!("node {}: rdkafka sees brokers {brokers:?}", n.id);
    }

    // A topic created through one node is in every node's Metadata, with
    // its partitions placed across the brokers.
    create_topic(&c.node(2).bootstrap(), "formed", 3, TIMEOUT).expect("CreateTopics");
    let want = BTreeMap::from([("formed".to_string(), 3)]);
    for id in 1..=3 {
        wait_topics_on(&c, id, &want);
    }
    step!("topic 'formed' is listed by all three nodes");

    // DescribeQuorum answers the same leader and voters through any node
    // (followers ask the leader), as `runnel metadata-quorum` relies on.
    use kafka_protocol::messages::{DescribeQuorumRequest, DescribeQuorumResponse};
    for n in &c.nodes {
        let mut conn = common::RawConn::connect(&n.bootstrap()).expect("connect");
        let resp: DescribeQuorumResponse = conn
            .roundtrip(2, 1, &DescribeQuorumRequest::default())
            .expect("DescribeQuorum");
        let part = &resp.topics[0].partitions[0];
        assert_eq!(
            part.error_code, 0,
            "node {}: {:?}",
            n.id, part.error_message
        );
        assert_eq!(
            part.leader_id.0, controller,
            "node {}'s quorum leader",
            n.id
        );
        let mut voters: Vec<i32> = part.current_voters.iter().map(|v| v.replica_id.0).collect();
        voters.sort_unstable();
        assert_eq!(voters, vec![1, 2, 3], "node {}'s voters", n.id);
        assert_eq!(resp.nodes.len(), 3, "node {}: voter endpoints", n.id);
    }
    step!("DescribeQuorum through every node names leader {controller} and voters 1, 2, 3");
}

#[test]
fn killing_the_active_controller_elects_another_and_create_topics_works() {
    const ROUNDS: usize = 5;
    let mut c = Cluster::start(3);
    let mut times = Vec::new();
    let mut created = BTreeMap::new();
    for round in 1..=ROUNDS {
        let old = agreed_controller(&c, &[1, 2, 3]);
        let survivors: Vec<i32> = (1..=3).filter(|&id| id != old).collect();
        let bootstrap = survivors
            .iter()
            .map(|&id| c.node(id).bootstrap())
            .collect::<Vec<_>>()
            .join(",");
        step!("round {round}: active controller is {old}; killing it");
        c.kill9(old);
        let killed = Instant::now();
        let mut attempt = 0;
        let topic = loop {
            attempt += 1;
            // A new name per attempt: an attempt that timed out may still
            // have created its topic.
            let name = format!("after-kill-{round}-{attempt}");
            match create_topic(&bootstrap, &name, 1, Duration::from_secs(1)) {
                Ok(()) => break name,
                Err(e) => {
                    assert!(
                        killed.elapsed() < Duration::from_secs(60),
                        "CreateTopics still failing 60s after the kill: {e}"
                    );
                    step!("attempt {attempt}: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        let took = killed.elapsed();
        times.push(took);
        step!(
            "round {round}: kill -9 of controller {old} to first successful CreateTopics ({topic}): {:.0} ms",
            took.as_secs_f64() * 1000.0
        );
        let new = agreed_controller(&c, &survivors);
        assert_ne!(new, old, "the killed node cannot be the controller");
        step!("round {round}: controller {new} took over");
        created.insert(topic, 1);
        for &id in &survivors {
            wait_topics_on(&c, id, &created);
        }

        c.restart(old);
        // It was down when the topic was created: it must catch up.
        wait_topics_on(&c, old, &created);
        step!(
            "round {round}: node {old} rejoined and lists every topic created ({})",
            created.len()
        );
    }
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    eprintln!(
        "kill -9 of the active controller -> first successful CreateTopics, {ROUNDS} rounds: \
         {ms:.0?} ms; median {:.0} ms",
        ms[ms.len() / 2]
    );
    // Election timeout is 0.6-1.2 s; a generous bound that still catches a
    // cluster that only recovers by luck.
    assert!(
        ms[ms.len() / 2] < 15_000.0,
        "median recovery {:.0} ms",
        ms[ms.len() / 2]
    );
}

/// Kills two of the three nodes, checks that CreateTopics through the
/// survivor fails with a quorum error in bounded time, restarts one and
/// checks that it works again and that every earlier topic is still there.
fn outage_and_recovery(
    c: &mut Cluster,
    killed: [i32; 2],
    phase: &str,
    created: &mut BTreeMap<String, usize>,
) {
    let survivor = (1..=3).find(|id| !killed.contains(id)).expect("a survivor");
    for id in killed {
        c.kill9(id);
    }
    let addr = c.node(survivor).bootstrap();
    step!("{phase}: only node {survivor} is up; CreateTopics through it must fail");
    let name = format!("during-outage-{phase}");
    let (code, msg, took) = raw_create_topic(&addr, &name, 1).expect("CreateTopics answered");
    step!("{phase}: answered in {took:?}: error {code}, {msg:?}");
    assert_eq!(
        code, REQUEST_TIMED_OUT,
        "CreateTopics without a quorum: {msg:?}"
    );
    let msg = msg.unwrap_or_default();
    assert!(msg.contains("quorum"), "the error should say why: {msg}");
    assert!(took < Duration::from_secs(20), "failing took {took:?}");
    // Still no split brain a little later: the survivor does not commit
    // on its own.
    let have = topics_on(&addr).expect("Metadata from the survivor");
    assert!(!have.contains_key(&name), "{name} created without a quorum");

    c.restart(killed[0]);
    let name = format!("after-restart-{phase}");
    let (code, msg, took) = raw_create_topic(&addr, &name, 2).expect("CreateTopics answered");
    assert_eq!(code, 0, "CreateTopics with a majority back: {msg:?}");
    step!(
        "{phase}: node {} back; CreateTopics {name} succeeded in {took:?}",
        killed[0]
    );
    created.insert(name, 2);
    for id in [survivor, killed[0]] {
        wait_topics_on(c, id, created);
    }
}

#[test]
fn losing_two_of_three_stops_metadata_changes_until_one_returns() {
    let mut c = Cluster::start(3);
    let mut created = BTreeMap::new();
    for (name, partitions) in [("before-a", 3), ("before-b", 1)] {
        create_topic(&c.node(1).bootstrap(), name, partitions, TIMEOUT).expect("CreateTopics");
        created.insert(name.to_string(), partitions as usize);
    }
    for id in 1..=3 {
        wait_topics_on(&c, id, &created);
    }

    // The survivor is the leader: it takes the proposal but cannot commit.
    let leader = agreed_controller(&c, &[1, 2, 3]);
    let followers: Vec<i32> = (1..=3).filter(|&id| id != leader).collect();
    outage_and_recovery(
        &mut c,
        [followers[0], followers[1]],
        "leader-survives",
        &mut created,
    );

    // Now the survivor is a follower: it has no leader to forward to.
    let down: Vec<i32> = (1..=3).filter(|id| !c.running().contains(id)).collect();
    for id in down {
        c.restart(id);
    }
    let leader = agreed_controller(&c, &[1, 2, 3]);
    let others: Vec<i32> = (1..=3)
        .filter(|&id| id != leader)
        .take(1)
        .chain([leader])
        .collect();
    outage_and_recovery(
        &mut c,
        [others[0], others[1]],
        "follower-survives",
        &mut created,
    );

    // Everyone back: every node has every topic created with a quorum.
    let down: Vec<i32> = (1..=3).filter(|id| !c.running().contains(id)).collect();
    for id in down {
        c.restart(id);
    }
    agreed_controller(&c, &[1, 2, 3]);
    for id in 1..=3 {
        wait_topics_on(&c, id, &created);
    }
    step!("all three nodes list {created:?}");
}

/// The broker ids node `id`'s Metadata lists, once it answers.
fn brokers_seen_by(c: &Cluster, id: i32) -> Option<Vec<i32>> {
    c.view(id).ok().map(|v| v.broker_ids)
}

#[test]
fn a_silent_broker_is_fenced_and_comes_back() {
    let mut c = Cluster::start(3);
    let controller = agreed_controller(&c, &[1, 2, 3]);
    // Pause a broker that is not the active controller, so that the quorum
    // keeps its leader while the broker is silent.
    let victim = [1, 2, 3]
        .into_iter()
        .find(|id| *id != controller)
        .expect("a follower");
    let watcher = controller;
    c.signal(victim, "STOP");
    let paused = Instant::now();
    let gone = eventually(TIMEOUT, "the paused broker to leave Metadata", || {
        brokers_seen_by(&c, watcher)
            .filter(|b| !b.contains(&victim))
            .map(|_| paused.elapsed())
    });
    step!("broker {victim} fenced {gone:?} after SIGSTOP (session timeout 3 s)");
    assert!(
        gone >= Duration::from_millis(2500),
        "fenced after only {gone:?}"
    );
    c.signal(victim, "CONT");
    eventually(TIMEOUT, "the resumed broker to return to Metadata", || {
        brokers_seen_by(&c, watcher)
            .filter(|b| b.contains(&victim))
            .map(|_| ())
    });

    // kill -9: fenced, and back once restarted.
    c.kill9(victim);
    eventually(TIMEOUT, "the killed broker to leave Metadata", || {
        brokers_seen_by(&c, watcher)
            .filter(|b| !b.contains(&victim))
            .map(|_| ())
    });
    c.restart(victim);
    for id in [1, 2, 3] {
        eventually(
            TIMEOUT,
            "every node to list all three brokers again",
            || brokers_seen_by(&c, id).filter(|b| b.len() == 3).map(|_| ()),
        );
    }
}

#[test]
fn replication_factor_three_spreads_replicas_and_balances_leaders() {
    let c = Cluster::start(3);
    agreed_controller(&c, &[1, 2, 3]);
    let bootstrap = c.node(2).bootstrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin client");
    let created = block_on(admin.create_topics(
        &[NewTopic::new("spread", 6, TopicReplication::Fixed(3))],
        &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
    ))
    .expect("CreateTopics");
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    // More replicas than live brokers is refused.
    let too_many = block_on(admin.create_topics(
        &[NewTopic::new("too-wide", 1, TopicReplication::Fixed(4))],
        &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
    ))
    .expect("CreateTopics");
    assert!(
        matches!(
            &too_many[0],
            Err((
                _,
                rdkafka::types::RDKafkaErrorCode::InvalidReplicationFactor
            ))
        ),
        "{too_many:?}"
    );

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("client");
    let md = consumer
        .fetch_metadata(Some("spread"), TIMEOUT)
        .expect("metadata");
    let topic = &md.topics()[0];
    assert_eq!(topic.partitions().len(), 6);
    let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
    for p in topic.partitions() {
        let mut replicas = p.replicas().to_vec();
        step!(
            "partition {}: leader {}, replicas {:?}",
            p.id(),
            p.leader(),
            replicas
        );
        replicas.sort_unstable();
        assert_eq!(replicas, vec![1, 2, 3], "partition {} replicas", p.id());
        assert_eq!(p.leader(), p.replicas()[0], "the preferred replica leads");
        *leaders.entry(p.leader()).or_default() += 1;
    }
    assert_eq!(
        leaders,
        BTreeMap::from([(1, 2), (2, 2), (3, 2)]),
        "leaders per broker"
    );
}

#[test]
fn sigterm_is_a_controlled_shutdown() {
    let mut c = Cluster::start(3);
    let controller = agreed_controller(&c, &[1, 2, 3]);
    let victim = [1, 2, 3]
        .into_iter()
        .find(|id| *id != controller)
        .expect("a follower");
    c.signal(victim, "TERM");
    eventually(TIMEOUT, "the stopped node to exit", || {
        (!c.node_mut_running(victim)).then_some(())
    });
    let log = c.node(victim).log_tail(40);
    assert!(
        log.contains("fenced by the controller for shutdown"),
        "{log}"
    );
    assert!(log.contains("shut down cleanly"), "{log}");
    eventually(TIMEOUT, "the stopped broker to leave Metadata", || {
        brokers_seen_by(&c, controller)
            .filter(|b| !b.contains(&victim))
            .map(|_| ())
    });
    c.restart(victim);
    eventually(TIMEOUT, "the restarted broker to return", || {
        brokers_seen_by(&c, controller)
            .filter(|b| b.contains(&victim))
            .map(|_| ())
    });
}

/// A voter that was down while the others snapshotted and purged their
/// logs catches up by InstallSnapshot over gRPC, and serves the same image.
#[test]
fn a_lagging_voter_catches_up_from_a_snapshot() {
    let mut c = Cluster::start_with(
        3,
        &[
            "metadata.snapshot.interval.records=20",
            "metadata.log.retained.records=0",
        ],
    );
    let controller = agreed_controller(&c, &[1, 2, 3]);
    let down = if controller == 3 { 2 } else { 3 };
    let up = controller;
    c.kill9(down);
    let mut want = BTreeMap::new();
    for i in 0..40 {
        let name = format!("snap-{i}");
        create_topic(&c.node(up).bootstrap(), &name, 1, TIMEOUT).expect("CreateTopics");
        want.insert(name, 1);
    }
    step!("created 40 topics while node {down} was down (snapshots every 20 records, none kept)");
    c.restart(down);
    wait_topics_on(&c, down, &want);
    let log = c.node(down).log_tail(100_000);
    assert!(
        log.contains("installed controller snapshot"),
        "node {down} should have caught up from a snapshot:\n{}",
        c.node(down).log_tail(40)
    );
    step!("node {down} installed a snapshot and lists all 40 topics");
}
