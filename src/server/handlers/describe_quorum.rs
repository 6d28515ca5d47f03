//! DescribeQuorum (55), v0-2: the controller quorum's leader, epoch (Raft
//! term), high watermark and each voter's log end offset; the observers
//! are the broker-only nodes, with the offset their last heartbeat
//! reported. Only the leader
//! knows its followers' progress, so any other node asks the leader over
//! gRPC (as Kafka forwards DescribeQuorum to the active controller).
//!
//! Offsets are Raft log indexes, in Kafka's terms: a log end offset is the
//! index after the last entry, the high watermark the index after the last
//! applied (committed) one.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{BrokerId, DescribeQuorumResponse, ResponseKind, TopicName};

use crate::protocol::Request;
use crate::server::{Ctx, Reply};

pub const METADATA_TOPIC: &str = "__cluster_metadata";

fn replica(id: u64, leo: i64, caught_up: i64) -> ReplicaState {
    ReplicaState::default()
        .with_replica_id(BrokerId(id as i32))
        .with_log_end_offset(leo)
        .with_last_fetch_timestamp(caught_up)
        .with_last_caught_up_timestamp(caught_up)
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let version = req.version;
        let _body = super::body!(req, DescribeQuorum);
        let status = ctx.controller.quorum_status().await;
        let mut part = PartitionData::default().with_partition_index(0);
        let mut nodes = Vec::new();
        match status {
            Ok(st) => {
                part = part
                    .with_leader_id(BrokerId(st.leader as i32))
                    .with_leader_epoch(st.term as i32)
                    .with_high_watermark(st.high_watermark)
                    .with_current_voters(
                        st.voters
                            .iter()
                            .map(|v| replica(v.id, v.log_end_offset, v.caught_up_ms))
                            .collect(),
                    )
                    .with_observers(
                        st.observers
                            .iter()
                            .map(|v| replica(v.id, v.log_end_offset, v.caught_up_ms))
                            .collect(),
                    );
                let listener = ctx
                    .config
                    .controller_listener_names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "CONTROLLER".into());
                nodes = st
                    .addresses
                    .iter()
                    .map(|(id, addr)| {
                        let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "0"));
                        Node::default()
                            .with_node_id(BrokerId(*id as i32))
                            .with_listeners(vec![Listener::default()
                                .with_name(super::str(listener.clone()))
                                .with_host(super::str(host.trim_matches(['[', ']'])))
                                .with_port(port.parse().unwrap_or(0))])
                    })
                    .collect();
            }
            Err(e) => {
                part = part
                    .with_leader_id(BrokerId(-1))
                    .with_error_code(ResponseError::NotLeaderOrFollower.code());
                if version >= 2 {
                    part = part.with_error_message(Some(super::str(e.to_string())));
                }
            }
        }
        let mut resp = DescribeQuorumResponse::default().with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(super::str(METADATA_TOPIC)))
            .with_partitions(vec![part])]);
        if version >= 2 {
            resp = resp.with_nodes(nodes);
        }
        Reply::Now(ResponseKind::DescribeQuorum(resp))
    })
}
