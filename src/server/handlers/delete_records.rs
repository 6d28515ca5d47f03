//! DeleteRecords (21), v0-2: moves a partition's log start offset up to
//! the offset given (-1: the high watermark), on its leader. Records below
//! it are no longer served (OFFSET_OUT_OF_RANGE) and the closed segments
//! wholly below it are deleted; followers take the new start from their
//! next fetch. An offset above the high watermark is OFFSET_OUT_OF_RANGE.
//!
//! The answer's low watermark is the leader's new start. Kafka waits until
//! every replica reports it; Runnel answers once the leader has it on disk
//! (fsynced), and the followers follow within a fetch round.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsResponse, ResponseKind};

use crate::protocol::Request;
use crate::server::lookup::leader_replica;
use crate::server::{Ctx, Reply};

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let body = super::body!(req, DeleteRecords);
        let image = ctx.controller.image();
        let mut topics = Vec::with_capacity(body.topics.len());
        for t in body.topics {
            let topic = image.topic(t.name.0.as_str());
            let mut parts = Vec::with_capacity(t.partitions.len());
            for dp in t.partitions {
                let out = DeleteRecordsPartitionResult::default()
                    .with_partition_index(dp.partition_index)
                    .with_low_watermark(-1);
                let p = match leader_replica(
                    &ctx,
                    topic,
                    dp.partition_index,
                    ResponseError::UnknownTopicOrPartition,
                )
                .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        parts.push(out.with_error_code(e.code()));
                        continue;
                    }
                };
                let hw = p.high_watermark();
                let offset = if dp.offset == -1 { hw } else { dp.offset };
                if offset < 0 || offset > hw {
                    parts.push(out.with_error_code(ResponseError::OffsetOutOfRange.code()));
                    continue;
                }
                parts.push(match p.advance_log_start(offset).await {
                    Ok(start) => {
                        tracing::info!(partition = ?p, requested = offset, start, "deleted records");
                        out.with_low_watermark(start)
                    }
                    Err(e) => out.with_error_code(crate::server::error_code::partition(&e).code()),
                });
            }
            topics.push(
                DeleteRecordsTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(parts),
            );
        }
        Reply::Now(ResponseKind::DeleteRecords(
            DeleteRecordsResponse::default().with_topics(topics),
        ))
    })
}
