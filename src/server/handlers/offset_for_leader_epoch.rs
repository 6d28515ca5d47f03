//! OffsetForLeaderEpoch (23), v2-4 (KIP-320): where a leader epoch ends in
//! the leader's log, so that a consumer that saw records from an epoch can
//! tell whether they were truncated away after a leader change.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochResponse, ResponseKind};

use crate::protocol::Request;
use crate::server::lookup::leader_replica_in_epoch;
use crate::server::{Ctx, Reply};

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let body = super::body!(req, OffsetForLeaderEpoch);
        let image = ctx.controller.image();
        let mut topics = Vec::with_capacity(body.topics.len());
        for t in body.topics {
            let topic = image.topic(t.topic.0.as_str());
            let mut parts = Vec::with_capacity(t.partitions.len());
            for op in t.partitions {
                let resp = EpochEndOffset::default()
                    .with_partition(op.partition)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1);
                let p = match leader_replica_in_epoch(
                    &ctx,
                    topic,
                    op.partition,
                    ResponseError::UnknownTopicOrPartition,
                    op.current_leader_epoch,
                )
                .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        parts.push(resp.with_error_code(e.code()));
                        continue;
                    }
                };
                parts.push(match p.log().end_offset_for_epoch(op.leader_epoch) {
                    Ok((epoch, end)) => resp.with_leader_epoch(epoch).with_end_offset(end),
                    Err(e) => {
                        tracing::error!(partition = ?p, error = %e, "epoch lookup failed");
                        resp.with_error_code(ResponseError::KafkaStorageError.code())
                    }
                });
            }
            topics.push(
                OffsetForLeaderTopicResult::default()
                    .with_topic(t.topic)
                    .with_partitions(parts),
            );
        }
        Reply::Now(ResponseKind::OffsetForLeaderEpoch(
            OffsetForLeaderEpochResponse::default().with_topics(topics),
        ))
    })
}
