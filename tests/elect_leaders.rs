//! ElectLeaders (43) as `kafka-leader-election.sh` sends it, on a cluster of
//! three controllers and four brokers, with real kills: preferred election
//! brings leadership back to the first replica; unclean election gives a
//! leaderless partition (every ISR member dead) a leader from the replicas
//! that are alive, and it takes writes again.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, Role};
use common::partition::partition_state;
use common::{eventually, RawConn};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const TOPIC: &str = "elect";
const REPLICAS: [i32; 3] = [4, 5, 6];
/// A broker that holds no replica of the topic: the one that is asked.
const BYSTANDER: i32 = 7;
const WITHIN: Duration = Duration::from_secs(45);

/// ElectLeaders v2 of `TOPIC`/0 through the bystander: (top-level error,
/// the partition's error).
fn elect(c: &Cluster, election_type: i8) -> (i16, i16) {
    let req = ElectLeadersRequest::default()
        .with_election_type(election_type)
        .with_timeout_ms(30_000)
        .with_topic_partitions(Some(vec![TopicPartitions::default()
            .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![0])]));
    let mut conn = RawConn::connect(&c.node(BYSTANDER).bootstrap()).expect("connect");
    let resp: ElectLeadersResponse = conn.roundtrip(2, 1, &req).expect("ElectLeaders");
    let part = &resp.replica_election_results[0].partition_result[0];
    step!(
        "ElectLeaders type {election_type}: error {}, partition error {} {:?}",
        resp.error_code,
        part.error_code,
        part.error_message
    );
    (resp.error_code, part.error_code)
}

fn state(c: &Cluster) -> Option<common::partition::PState> {
    partition_state(&c.node(BYSTANDER).bootstrap(), TOPIC, 0).ok()
}

fn produce(c: &Cluster, value: &str) -> Result<i64, String> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", c.node(BYSTANDER).bootstrap())
        .set("acks", "all")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    let sent = futures::executor::block_on(
        producer.send(
            FutureRecord::<(), str>::to(TOPIC)
                .partition(0)
                .payload(value),
            Duration::from_secs(20),
        ),
    );
    sent.map(|d| d.offset).map_err(|(e, _)| e.to_string())
}

#[test]
fn preferred_and_unclean_elections() {
    use Role::{Broker, Controller};
    let mut c = Cluster::start_roles(&[
        Controller, Controller, Controller, Broker, Broker, Broker, Broker,
    ]);
    step!("create {TOPIC}: replicas {REPLICAS:?}, min.insync.replicas 1");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", c.node(BYSTANDER).bootstrap())
        .create()
        .expect("admin");
    let topic = NewTopic::new(TOPIC, 1, TopicReplication::Variable(&[&REPLICAS]))
        .set("min.insync.replicas", "1");
    let created = futures::executor::block_on(admin.create_topics(&[topic], &AdminOptions::new()))
        .expect("CreateTopics");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let st = eventually(WITHIN, "the full ISR", || {
        state(&c).filter(|s| s.leader == REPLICAS[0] && s.isr == REPLICAS)
    });
    step!("{st:?}");
    assert_eq!(produce(&c, "first"), Ok(0));

    step!("both elections with the preferred leader leading: ELECTION_NOT_NEEDED (84)");
    assert_eq!(elect(&c, 0), (0, 84));
    assert_eq!(elect(&c, 1), (0, 84));

    step!(
        "kill the preferred leader {}: another replica leads",
        REPLICAS[0]
    );
    c.kill9(REPLICAS[0]);
    let st = eventually(WITHIN, "a new leader", || {
        state(&c).filter(|s| s.leader >= 0 && s.leader != REPLICAS[0])
    });
    step!("{st:?}");
    c.restart(REPLICAS[0]);
    eventually(WITHIN, "the preferred leader back in the ISR", || {
        state(&c).filter(|s| s.isr == REPLICAS)
    });
    step!(
        "preferred election moves leadership back to {}",
        REPLICAS[0]
    );
    let (top, part) = elect(&c, 0);
    assert_eq!(top, 0);
    assert!(part == 0 || part == 84, "preferred election: {part}");
    eventually(WITHIN, "the preferred leader leading", || {
        state(&c).filter(|s| s.leader == REPLICAS[0])
    });

    step!("kill the followers, then the leader: no ISR member is left alive");
    c.kill9(REPLICAS[1]);
    c.kill9(REPLICAS[2]);
    eventually(WITHIN, "the ISR down to the leader", || {
        state(&c).filter(|s| s.isr == [REPLICAS[0]])
    });
    assert_eq!(produce(&c, "only on the leader"), Ok(1));
    c.kill9(REPLICAS[0]);
    eventually(WITHIN, "the partition without a leader", || {
        state(&c).filter(|s| s.leader < 0)
    });

    step!(
        "restart {}, which was not in the ISR: still no leader",
        REPLICAS[1]
    );
    c.restart(REPLICAS[1]);
    eventually(WITHIN, "broker {} registered again", || {
        common::cluster::metadata_view(&c.node(BYSTANDER).bootstrap())
            .ok()
            .filter(|v| v.broker_ids.contains(&REPLICAS[1]))
    });
    std::thread::sleep(Duration::from_secs(2));
    let st = state(&c).expect("metadata");
    assert!(st.leader < 0, "a clean election chose {st:?}");

    step!("unclean election: {} leads, alone in the ISR", REPLICAS[1]);
    assert_eq!(elect(&c, 1), (0, 0));
    let st = eventually(WITHIN, "the unclean leader", || {
        state(&c).filter(|s| s.leader == REPLICAS[1])
    });
    assert_eq!(st.isr, [REPLICAS[1]]);
    let offset = produce(&c, "after the unclean election").expect("produce");
    // Offset 1 was only on the dead leader: the unclean leader continues
    // from what it had (offset 1 again), the loss unclean election means.
    step!("produced at offset {offset} after the unclean election");
    assert_eq!(offset, 1);
}
