//! Creating topics (through rdkafka's AdminClient, or raw to exactly one
//! node) and reading a group's committed offsets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::cluster::Cluster;
use super::partition::{ids, partition_state, sorted, wait_full_isr};
use super::{eventually, Node, RawConn};
use crate::step;

/// How long topic creation and the waits after it may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// CreateTopics through rdkafka's AdminClient (which sends it to the
/// controller its Metadata names): `partitions` partitions of
/// `replication` replicas with the topic `configs`; the request and the
/// operation time out after `timeout`. An error names the topic.
pub fn create_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication: i32,
    configs: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let res = block_on(admin.create_topics(&[topic], &opts)).map_err(|e| e.to_string())?;
    match res.into_iter().next() {
        Some(Ok(_)) => Ok(()),
        Some(Err((t, e))) => Err(format!("{t}: {e:?}")),
        None => Err("no result".into()),
    }
}

/// A replication-factor-3 topic with `min.insync.replicas=2` on the
/// cluster; waits until every partition has its three replicas (on three
/// different brokers of the cluster) in the ISR.
pub fn create_replicated(c: &Cluster, name: &str, partitions: i32) {
    step!(
        "create topic {name}: {partitions} partitions, replication factor 3, min.insync.replicas 2"
    );
    let created = create_topic(
        &c.bootstrap_all(),
        name,
        partitions,
        3,
        &[("min.insync.replicas", "2")],
        TIMEOUT,
    );
    assert_eq!(created, Ok(()), "CreateTopics {name}");
    for p in 0..partitions {
        let st = wait_full_isr(c, name, p, TIMEOUT);
        let replicas = sorted(&st.replicas);
        assert!(
            replicas.windows(2).all(|w| w[0] != w[1])
                && replicas.iter().all(|r| ids(c).contains(r)),
            "{name}/{p} replicas: {st:?}"
        );
    }
}

/// CreateTopics v4 for one topic with replication factor 1, over a raw
/// connection to exactly `addr` (no client-side routing to the
/// controller): (error code, error message, how long the answer took).
pub fn raw_create_topic(
    addr: &str,
    name: &str,
    partitions: i32,
) -> std::io::Result<(i16, Option<String>, Duration)> {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let mut conn = RawConn::connect(addr)?;
    // The broker answers within its proposal timeout; leave it room.
    conn.stream
        .set_read_timeout(Some(Duration::from_secs(60)))?;
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(30_000);
    let started = Instant::now();
    let resp: CreateTopicsResponse = conn.roundtrip(4, 7, &req)?;
    let took = started.elapsed();
    let t = resp.topics.first().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "CreateTopics answered no topic",
        )
    })?;
    Ok((
        t.error_code,
        t.error_message.as_ref().map(|m| m.to_string()),
        took,
    ))
}

/// A one-partition topic on a single node, created over a raw connection
/// (no client library in between); waits until Metadata names the node as
/// its leader, as a client would.
pub fn raw_create_and_wait(node: &Node, name: &str) {
    let (code, msg, _) = raw_create_topic(&node.bootstrap(), name, 1).expect("CreateTopics");
    assert_eq!(code, 0, "CreateTopics {name}: {msg:?}");
    eventually(
        TIMEOUT,
        &format!("node {} to lead {name}/0", node.id),
        || {
            partition_state(&node.bootstrap(), name, 0)
                .ok()
                .filter(|s| s.leader == node.id)
        },
    );
}

/// The committed offsets of `group` for `partitions` of `topic` (`None`:
/// nothing committed), asked through `bootstrap` by a client that never
/// joins the group. A partition the answer leaves out is missing.
pub fn committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<BTreeMap<i32, Option<i64>>, String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, timeout)
        .map_err(|e| format!("OffsetFetch: {e}"))?;
    Ok(got
        .elements_for_topic(topic)
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => (e.partition(), Some(o)),
            _ => (e.partition(), None),
        })
        .collect())
}
