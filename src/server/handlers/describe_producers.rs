//! DescribeProducers (61), v0 (KIP-664): the idempotent producers a
//! partition's leader knows, with epoch and last sequence, for operators
//! (`kafka-transactions.sh describe-producers`).

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersResponse, ProducerId, ResponseKind};

use crate::protocol::Request;
use crate::server::lookup::leader_replica;
use crate::server::{Ctx, Reply};

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let body = super::body!(req, DescribeProducers);
        let image = ctx.controller.image();
        let mut topics = Vec::with_capacity(body.topics.len());
        for t in body.topics {
            let topic = image.topic(t.name.0.as_str());
            let mut parts = Vec::with_capacity(t.partition_indexes.len());
            for index in t.partition_indexes {
                let resp = PartitionResponse::default().with_partition_index(index);
                let p = match leader_replica(
                    &ctx,
                    topic,
                    index,
                    ResponseError::UnknownTopicOrPartition,
                )
                .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        parts.push(resp.with_error_code(e.code()));
                        continue;
                    }
                };
                let producers = p
                    .producers()
                    .await
                    .into_iter()
                    .map(|(id, epoch, last_seq, last_ms)| {
                        ProducerState::default()
                            .with_producer_id(ProducerId(id))
                            .with_producer_epoch(i32::from(epoch))
                            .with_last_sequence(last_seq)
                            .with_last_timestamp(last_ms)
                            .with_coordinator_epoch(-1)
                            .with_current_txn_start_offset(-1)
                    })
                    .collect();
                parts.push(resp.with_active_producers(producers));
            }
            topics.push(
                TopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(parts),
            );
        }
        Reply::Now(ResponseKind::DescribeProducers(
            DescribeProducersResponse::default().with_topics(topics),
        ))
    })
}
