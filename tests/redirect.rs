//! KIP-951: a Produce (v10+) or Fetch (v12+, endpoints from v16) sent to a
//! broker that does not lead the partition answers NOT_LEADER_OR_FOLLOWER
//! with the leader's id and epoch and its endpoint, so that librdkafka 2.4+
//! and the Java client 3.7+ redirect without a Metadata round trip.

mod common;

use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use runnel::protocol::build;

use common::cluster::Cluster;
use common::partition::partition_state;
use common::{eventually, RawConn};

const NOT_LEADER_OR_FOLLOWER: i16 = 6;

#[test]
fn produce_and_fetch_to_a_follower_name_the_leader_and_its_endpoint() {
    let c = Cluster::start(3);
    let any = c.node(1).bootstrap();
    let (code, msg, _) = common::topics::raw_create_topic(&any, "moved", 1).expect("CreateTopics");
    assert_eq!(code, 0, "{msg:?}");
    let st = eventually(Duration::from_secs(30), "a leader", || {
        partition_state(&any, "moved", 0)
            .ok()
            .filter(|s| s.leader > 0)
    });
    let leader = st.leader;
    let other = (1..=3).find(|id| *id != leader).unwrap();
    let leader_port = c.node(leader).port() as i32;
    step!("moved/0 is led by {leader} (port {leader_port}); asking {other}");

    let mut conn = RawConn::connect(&c.node(other).bootstrap()).expect("connect");
    let req = common::produce_request("moved", 0, build::values_batch(1, &[b"x"]), 5_000);
    let resp: ProduceResponse = conn.roundtrip(10, 1, &req).expect("Produce v10");
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(
        (p.current_leader.leader_id.0, p.current_leader.leader_epoch),
        (leader, st.leader_epoch)
    );
    let ends: Vec<_> = resp
        .node_endpoints
        .iter()
        .map(|e| (e.node_id.0, e.port))
        .collect();
    assert_eq!(ends, [(leader, leader_port)], "Produce node_endpoints");
    step!("Produce v10: NOT_LEADER_OR_FOLLOWER, leader {leader}, its endpoint");

    let md: MetadataResponse = conn
        .roundtrip(
            12,
            2,
            &MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("moved"))))])),
        )
        .expect("Metadata");
    let topic_id = md.topics[0].topic_id;
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(topic_id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let resp: FetchResponse = conn.roundtrip(16, 3, &fetch).expect("Fetch v16");
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(p.current_leader.leader_id.0, leader);
    let ends: Vec<_> = resp
        .node_endpoints
        .iter()
        .map(|e| (e.node_id.0, e.port))
        .collect();
    assert_eq!(ends, [(leader, leader_port)], "Fetch node_endpoints");
    step!("Fetch v16: NOT_LEADER_OR_FOLLOWER, leader {leader}, its endpoint");

    let resp: ProduceResponse = conn.roundtrip(9, 4, &req).expect("Produce v9");
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code,
        NOT_LEADER_OR_FOLLOWER
    );
    step!("Produce v9 (no KIP-951 fields) still answers NOT_LEADER_OR_FOLLOWER");
}
