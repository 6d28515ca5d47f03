//! DescribeQuorum (55), v0-2: the controller quorum's leader, epoch (Raft
//! term), high watermark and each voter's log end offset, read from the
//! local Raft metrics. Only the leader knows its followers' progress; any
//! other node answers NOT_LEADER_OR_FOLLOWER naming the leader it knows, and
//! `runnel metadata-quorum` asks the controller that Metadata names.
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
use crate::replication::partition::now_ms;
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
        let m = ctx.controller.raft().metrics().borrow().clone();
        let leader = m.current_leader.map_or(-1, |l| l as i32);
        let mut part = PartitionData::default()
            .with_partition_index(0)
            .with_leader_id(BrokerId(leader))
            .with_leader_epoch(m.current_term as i32)
            .with_high_watermark(m.last_applied.map_or(0, |l| l.index as i64 + 1));
        match &m.replication {
            Some(matched) => {
                let now = now_ms();
                // Quorum acknowledgement age bounds how stale a follower may be.
                let acked = now - m.millis_since_quorum_ack.unwrap_or(0) as i64;
                let own_leo = m.last_log_index.map_or(0, |i| i as i64 + 1);
                let mut voters = vec![replica(m.id, own_leo, now)];
                for voter in m.membership_config.membership().voter_ids() {
                    if voter == m.id {
                        continue;
                    }
                    let leo = matched
                        .get(&voter)
                        .copied()
                        .flatten()
                        .map_or(0, |l| l.index as i64 + 1);
                    let caught_up = if leo >= own_leo { acked } else { -1 };
                    voters.push(replica(voter, leo, caught_up));
                }
                part = part.with_current_voters(voters);
            }
            None => {
                part = part.with_error_code(ResponseError::NotLeaderOrFollower.code());
                if version >= 2 {
                    part = part.with_error_message(Some(super::str(format!(
                        "node {} is not the quorum leader; the leader is {leader}",
                        m.id
                    ))));
                }
            }
        }
        let mut resp = DescribeQuorumResponse::default().with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(super::str(METADATA_TOPIC)))
            .with_partitions(vec![part])]);
        if version >= 2 {
            let voters: Vec<Node> = m
                .membership_config
                .membership()
                .nodes()
                .map(|(id, node)| {
                    let (host, port) = node
                        .addr
                        .rsplit_once(':')
                        .unwrap_or((node.addr.as_str(), "0"));
                    Node::default()
                        .with_node_id(BrokerId(*id as i32))
                        .with_listeners(vec![Listener::default()
                            .with_name(super::str(
                                ctx.config
                                    .controller_listener_names
                                    .first()
                                    .cloned()
                                    .unwrap_or_else(|| "CONTROLLER".into()),
                            ))
                            .with_host(super::str(host))
                            .with_port(port.parse().unwrap_or(0))])
                })
                .collect();
            resp = resp.with_nodes(voters);
        }
        Reply::Now(ResponseKind::DescribeQuorum(resp))
    })
}
