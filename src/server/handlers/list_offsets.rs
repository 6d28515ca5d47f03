//! ListOffsets (2), v0-8: earliest (-2), latest (-1, the high watermark),
//! max timestamp (-3, v7+), earliest local (-4, v8+), and by timestamp.
//!
//! v0 answers an `offsets` array (`protocol::legacy`) of at most one
//! offset, whatever `max_num_offsets` asks. By timestamp it is v1's answer,
//! the first offset whose record is at or after the time, or the high
//! watermark when none is: where Kafka 0.9 answered the base offsets of the
//! segments last written before the time, which log segments no longer tell.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsResponse, ResponseKind};

use crate::protocol::offset_spec::OffsetSpec;
use crate::protocol::Request;
use crate::replication::Partition;
use crate::server::lookup::leader_replica_in_epoch;
use crate::server::{Ctx, Reply};

async fn lookup(p: &Arc<Partition>, spec: OffsetSpec) -> Result<(i64, i64), ResponseError> {
    let hw = p.high_watermark();
    match spec {
        OffsetSpec::Latest => Ok((-1, hw)),
        // Needs ListOffsets v9, which is not served (no tiered storage).
        OffsetSpec::LatestTiered => Err(ResponseError::UnsupportedVersion),
        OffsetSpec::Earliest | OffsetSpec::EarliestLocal => Ok((-1, p.log_start_offset())),
        OffsetSpec::MaxTimestamp => {
            let log = p.log().clone();
            let found = tokio::task::spawn_blocking(move || log.max_timestamp())
                .await
                .map_err(|_| ResponseError::UnknownServerError)?
                .map_err(|_| ResponseError::KafkaStorageError)?;
            Ok(match found {
                Some(t) if t.offset < hw => (t.timestamp, t.offset),
                _ => (-1, -1),
            })
        }
        OffsetSpec::Timestamp(ts) => {
            let log = p.log().clone();
            let found = tokio::task::spawn_blocking(move || log.offset_for_timestamp(ts))
                .await
                .map_err(|_| ResponseError::UnknownServerError)?
                .map_err(|_| ResponseError::KafkaStorageError)?;
            Ok(match found {
                Some(t) if t.offset < hw => (t.timestamp, t.offset),
                _ => (-1, -1),
            })
        }
    }
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let version = req.version;
        let body = super::body!(req, ListOffsets);
        let image = ctx.controller.image();
        let mut topics = Vec::with_capacity(body.topics.len());
        for t in body.topics {
            let topic = image.topic(t.name.0.as_str());
            let mut parts = Vec::with_capacity(t.partitions.len());
            for lp in t.partitions {
                let resp = ListOffsetsPartitionResponse::default()
                    .with_partition_index(lp.partition_index);
                let p = match leader_replica_in_epoch(
                    &ctx,
                    topic,
                    lp.partition_index,
                    ResponseError::UnknownTopicOrPartition,
                    lp.current_leader_epoch,
                )
                .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        parts.push(resp.with_error_code(e.code()));
                        continue;
                    }
                };
                let Some(spec) = OffsetSpec::from_i64(lp.timestamp) else {
                    parts.push(resp.with_error_code(ResponseError::UnsupportedVersion.code()));
                    continue;
                };
                parts.push(match lookup(&p, spec).await {
                    Ok((_, -1)) if version == 0 && matches!(spec, OffsetSpec::Timestamp(_)) => {
                        resp.with_offset(p.high_watermark())
                    }
                    Ok((ts, off)) => resp
                        .with_timestamp(ts)
                        .with_offset(off)
                        // Only v4+ carries the epoch (KIP-320).
                        .with_leader_epoch(if version >= 4 { p.leader_epoch() } else { -1 }),
                    Err(e) => resp.with_error_code(e.code()),
                });
            }
            topics.push(
                ListOffsetsTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(parts),
            );
        }
        Reply::Now(ResponseKind::ListOffsets(
            ListOffsetsResponse::default().with_topics(topics),
        ))
    })
}
