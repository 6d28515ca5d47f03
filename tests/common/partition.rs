//! What the cluster's nodes say about one partition, through raw Kafka
//! requests: Metadata (leader, leader epoch, replicas, ISR) and ListOffsets
//! (the high watermark); and reading a partition back up to it.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

use super::cluster::Cluster;
use super::RawConn;
use crate::step;

/// How long the waits here allow for a leader and its answer.
const WITHIN: Duration = Duration::from_secs(30);

/// One partition as a node's Metadata (v9, raw) describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PState {
    pub leader: i32,
    pub leader_epoch: i32,
    /// In the order Metadata lists them (the first is the preferred leader).
    pub replicas: Vec<i32>,
    /// Sorted.
    pub isr: Vec<i32>,
}

/// Metadata v9 for `topic` from the node at `addr`: (leader, leader epoch,
/// replicas, ISR) of `partition`. An error if the node does not answer
/// within 3 s or does not know the topic or partition.
pub fn partition_state(addr: &str, topic: &str, partition: i32) -> io::Result<PState> {
    let mut conn = RawConn::connect(addr)?;
    // A paused node accepts connections but never answers.
    conn.stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]))
        .with_allow_auto_topic_creation(false);
    let resp: MetadataResponse = conn.roundtrip(9, 1, &req)?;
    let other = |m: String| io::Error::other(m);
    let t = resp
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some(topic))
        .ok_or_else(|| other(format!("{topic} not in Metadata")))?;
    if t.error_code != 0 {
        return Err(other(format!("{topic}: error {}", t.error_code)));
    }
    let p = t
        .partitions
        .iter()
        .find(|p| p.partition_index == partition)
        .ok_or_else(|| other(format!("{topic}/{partition} not in Metadata")))?;
    // LEADER_NOT_AVAILABLE (5) still carries the replicas; report leader -1.
    if p.error_code != 0 && p.error_code != 5 {
        return Err(other(format!(
            "{topic}/{partition}: error {}",
            p.error_code
        )));
    }
    let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
    isr.sort_unstable();
    Ok(PState {
        leader: p.leader_id.0,
        leader_epoch: p.leader_epoch,
        replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
        isr,
    })
}

/// What each of `ask` says about the partition (an error string for a node
/// that did not answer).
pub fn states(
    c: &Cluster,
    ask: &[i32],
    topic: &str,
    p: i32,
) -> BTreeMap<i32, Result<PState, String>> {
    ask.iter()
        .map(|&id| {
            (
                id,
                partition_state(&c.node(id).bootstrap(), topic, p).map_err(|e| e.to_string()),
            )
        })
        .collect()
}

/// Waits until every node in `ask` answers Metadata for the partition, all
/// agree on leader and epoch, and `pred` holds for the answer. Returns it;
/// panics with the last answers on timeout.
pub fn wait_state(
    c: &Cluster,
    ask: &[i32],
    topic: &str,
    p: i32,
    within: Duration,
    what: &str,
    pred: impl Fn(&PState) -> bool,
) -> PState {
    let deadline = Instant::now() + within;
    loop {
        let seen = states(c, ask, topic, p);
        let answers: Vec<&PState> = seen.values().filter_map(|r| r.as_ref().ok()).collect();
        if answers.len() == ask.len() {
            let first = answers[0];
            if answers
                .iter()
                .all(|s| s.leader == first.leader && s.leader_epoch == first.leader_epoch)
                && answers.iter().all(|s| pred(s))
            {
                return first.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what} ({topic}/{p}); nodes {ask:?} say: {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every broker of the cluster (every node, unless it has controller-only
/// nodes, which have no Kafka listener to ask).
pub fn ids(c: &Cluster) -> Vec<i32> {
    c.broker_ids()
}

/// The replicas, sorted.
pub fn sorted(v: &[i32]) -> Vec<i32> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}

/// Waits until every node of the cluster lists all three replicas in the
/// ISR and they agree on a live leader.
pub fn wait_full_isr(c: &Cluster, topic: &str, p: i32, within: Duration) -> PState {
    let st = wait_state(
        c,
        &ids(c),
        topic,
        p,
        within,
        "all three replicas in the ISR",
        |s| s.leader > 0 && s.replicas.len() == 3 && s.isr == sorted(&s.replicas),
    );
    step!(
        "{topic}/{p}: ISR {:?}, leader {} epoch {}",
        st.isr,
        st.leader,
        st.leader_epoch
    );
    st
}

/// The cluster's nodes other than `of`.
pub fn others(c: &Cluster, of: &[i32]) -> Vec<i32> {
    ids(c).into_iter().filter(|id| !of.contains(id)).collect()
}

/// ListOffsets v4 (latest, READ_UNCOMMITTED, as a consumer): the high
/// watermark the node at `addr` reports, with the error code.
pub fn list_latest(addr: &str, topic: &str, p: i32) -> io::Result<(i16, i64)> {
    let mut conn = RawConn::connect(addr)?;
    conn.stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(0)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(p)
                .with_timestamp(-1)])]);
    let resp: ListOffsetsResponse = conn.roundtrip(4, 3, &req)?;
    let part = resp
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| io::Error::other("ListOffsets answered no partition"))?;
    Ok((part.error_code, part.offset))
}

/// The leader (as `ask` agree on it) and the high watermark it reports.
pub fn high_watermark(c: &Cluster, ask: &[i32], topic: &str, p: i32) -> (i32, i64) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let st = wait_state(c, ask, topic, p, WITHIN, "a leader", |s| s.leader > 0);
        let got = list_latest(&c.node(st.leader).bootstrap(), topic, p);
        match got {
            Ok((0, hw)) => return (st.leader, hw),
            _ => assert!(
                Instant::now() < deadline,
                "no high watermark from leader {} of {topic}/{p} within {WITHIN:?}: {got:?}",
                st.leader
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads `topic`/`p` from offset 0 up to `hw` with a consumer made from
/// `config` (assigned, not subscribed): (offset, `label` of the record).
/// Panics with the consumer's errors if that takes over `within`.
pub fn read_below_hw(
    config: &ClientConfig,
    topic: &str,
    p: i32,
    hw: i64,
    within: Duration,
    label: impl Fn(&BorrowedMessage<'_>) -> String,
) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = config.create().expect("create consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Beginning)
        .expect("partition offset");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::with_capacity(hw.max(0) as usize);
    let deadline = Instant::now() + within;
    let mut errors = Vec::new();
    let mut last = -1i64;
    while last < hw - 1 {
        assert!(
            Instant::now() < deadline,
            "read only {} records (up to offset {last}) of {topic}/{p} below HW {hw} within {within:?}; \
             consumer errors: {errors:?}",
            out.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last = rdkafka::Message::offset(&m);
                out.push((last, label(&m)));
            }
            Some(Err(e)) if errors.len() < 20 => errors.push(e.to_string()),
            Some(Err(_)) | None => {}
        }
    }
    step!("consumed {} records of {topic}/{p} (HW {hw})", out.len());
    out
}

/// A consumer's settings for reading partitions by assignment (not as a
/// group member): nothing is committed, and a position the log does not
/// have (any more) is an error, not a silent jump.
pub fn reader_config(bootstrap: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        // librdkafka refuses assign() without a group.id; nothing is committed.
        .set("group.id", "runnel-tests-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false");
    cfg
}

/// Reads `topic`/`p` from offset 0 up to the high watermark `hw` through
/// `bootstrap` (any node): (offset, key) in the order received.
pub fn consume_all(bootstrap: &str, topic: &str, p: i32, hw: i64) -> Vec<(i64, String)> {
    let within = Duration::from_secs(120);
    read_below_hw(&reader_config(bootstrap), topic, p, hw, within, |m| {
        super::producer::key_of(m)
    })
}
