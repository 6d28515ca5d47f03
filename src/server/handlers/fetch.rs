//! Fetch (1), v0-16 (topic ids from v13). Consumers only: records below
//! the high watermark. Long poll: answers once `min_bytes` are available or
//! `max_wait_ms` has passed, waking whenever a local HW moves. Sessionless
//! (KIP-227 session id 0: every fetch is a full fetch).
//!
//! v0-3 get the records down-converted to the message set of magic 0
//! (v0-1) or 1 (v2-3); a topic with `compression.type=zstd` is refused
//! below v10 (UNSUPPORTED_COMPRESSION_TYPE), as Kafka refuses it. A
//! partition led elsewhere answers NOT_LEADER_OR_FOLLOWER with the leader
//! and, from v16, its endpoint (KIP-951), so that the client redirects at
//! once.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchResponse, ResponseKind, TopicName};
use tokio::time::Instant;

use crate::controller::image::TopicImage;
use crate::protocol::{message_set, Request};
use crate::replication::wait::long_poll;
use crate::server::error_code;
use crate::server::lookup::{current_leader, leader_replica_in_epoch, node_endpoints};
use crate::server::{Ctx, Reply};

/// The most one partition read may return, whatever the client asks for:
/// a read allocates what it returns.
const MAX_PARTITION_READ: usize = 64 << 20;

async fn read_all(
    ctx: &Ctx,
    topics: &[FetchTopic],
    version: i16,
    max_bytes: usize,
) -> (Vec<FetchableTopicResponse>, usize) {
    let image = ctx.controller.image();
    let mut remaining = max_bytes;
    let mut total = 0usize;
    let mut out = Vec::with_capacity(topics.len());
    for ft in topics {
        let topic = if version >= 13 {
            image.topic_by_id(&ft.topic_id)
        } else {
            image.topic(ft.topic.0.as_str())
        };
        let unknown = if version >= 13 {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        let mut parts = Vec::with_capacity(ft.partitions.len());
        for fp in &ft.partitions {
            let mut pd = PartitionData::default()
                .with_partition_index(fp.partition)
                .with_high_watermark(-1);
            let p = match leader_replica_in_epoch(
                ctx,
                topic,
                fp.partition,
                unknown,
                fp.current_leader_epoch,
            )
            .await
            {
                Ok(p) => p,
                Err(e) => {
                    let mut pd = pd.with_error_code(e.code());
                    if matches!(
                        e,
                        ResponseError::NotLeaderOrFollower | ResponseError::FencedLeaderEpoch
                    ) {
                        // KIP-951 (v12+ carries it): where to go instead.
                        if let Some((leader, epoch)) = current_leader(topic, fp.partition) {
                            pd = pd.with_current_leader(
                                LeaderIdAndEpoch::default()
                                    .with_leader_id(BrokerId(leader))
                                    .with_leader_epoch(epoch),
                            );
                        }
                    }
                    parts.push(pd);
                    continue;
                }
            };
            if version < 10 && zstd_topic(ctx, topic) {
                parts.push(pd.with_error_code(ResponseError::UnsupportedCompressionType.code()));
                continue;
            }
            let hw = p.high_watermark();
            pd = pd
                .with_high_watermark(hw)
                .with_last_stable_offset(hw)
                .with_log_start_offset(p.log_start_offset());
            if fp.fetch_offset == hw {
                parts.push(pd);
                continue;
            }
            let limit = (fp.partition_max_bytes.max(0) as usize)
                .min(remaining)
                .min(MAX_PARTITION_READ);
            let first = total == 0;
            if limit == 0 && !first {
                parts.push(pd);
                continue;
            }
            match p.read(fp.fetch_offset, limit.max(1)).await {
                Ok(mut r) => {
                    if version <= 3 {
                        let magic = message_set::fetch_magic(version);
                        match message_set::down_convert(
                            &r.records,
                            magic,
                            fp.fetch_offset,
                            limit.max(1),
                        ) {
                            Ok(set) => r.records = set,
                            Err(e) => {
                                tracing::warn!(partition = ?p, error = %e, "cannot down-convert stored batches");
                                parts.push(pd.with_error_code(error_code::batch(&e).code()));
                                continue;
                            }
                        }
                    }
                    // KIP-74: only the first non-empty partition may exceed
                    // the limits, so that a large batch still makes progress.
                    if !first && r.records.len() > limit {
                        parts.push(pd);
                        continue;
                    }
                    total += r.records.len();
                    remaining = remaining.saturating_sub(r.records.len());
                    parts.push(pd.with_records(Some(r.records)));
                }
                Err(e) => {
                    let code = error_code::partition(&e);
                    if code == ResponseError::KafkaStorageError {
                        tracing::error!(partition = ?p, error = %e, "read failed");
                    }
                    parts.push(pd.with_error_code(code.code()));
                }
            }
        }
        out.push(
            FetchableTopicResponse::default()
                .with_topic(if version >= 13 {
                    TopicName::default()
                } else {
                    ft.topic.clone()
                })
                .with_topic_id(ft.topic_id)
                .with_partitions(parts),
        );
    }
    (out, total)
}

/// Whether the topic is set to `compression.type=zstd`.
fn zstd_topic(ctx: &Ctx, topic: Option<&TopicImage>) -> bool {
    use crate::config::topic::TopicCompression;
    topic.is_some_and(|t| ctx.broker.topic_settings(t.id).compression == TopicCompression::Zstd)
}

/// `runnel_topic_bytes_out_total`, for the answer that goes out.
fn count_bytes_out(ctx: &Ctx, topics: &[FetchableTopicResponse]) {
    let mut image = None;
    for t in topics {
        let bytes: usize = t
            .partitions
            .iter()
            .filter_map(|p| p.records.as_ref().map(|r| r.len()))
            .sum();
        if bytes == 0 {
            continue;
        }
        let name = if t.topic.0.is_empty() {
            let image = image.get_or_insert_with(|| ctx.controller.image());
            match image.topic_by_id(&t.topic_id) {
                Some(topic) => topic.name.clone(),
                None => continue,
            }
        } else {
            t.topic.0.to_string()
        };
        metrics::counter!("runnel_topic_bytes_out_total", "topic" => name).increment(bytes as u64);
    }
}

fn has_error(topics: &[FetchableTopicResponse]) -> bool {
    topics
        .iter()
        .flat_map(|t| &t.partitions)
        .any(|p| p.error_code != 0)
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let version = req.version;
        let body = super::body!(req, Fetch);
        if body.replica_id.0 >= 0 {
            return Reply::Close("follower fetches are not served yet".into());
        }
        let max_bytes = if body.max_bytes <= 0 {
            usize::MAX
        } else {
            body.max_bytes as usize
        };
        let min_bytes = body.min_bytes.max(0) as usize;
        let deadline = Instant::now() + Duration::from_millis(body.max_wait_ms.max(0) as u64);
        let progress = ctx.broker.progress();
        Reply::Later(Box::pin(async move {
            let waiting = metrics::gauge!("runnel_fetch_waiting");
            waiting.increment(1.0);
            let topics = long_poll(deadline, progress, || async {
                let (topics, total) = read_all(&ctx, &body.topics, version, max_bytes).await;
                let done = total >= min_bytes.max(1)
                    || has_error(&topics)
                    || body.topics.is_empty() && min_bytes == 0;
                ((topics, total), done)
            })
            .await;
            waiting.decrement(1.0);
            let (topics, total) = topics;
            metrics::counter!("runnel_fetch_bytes_total").increment(total as u64);
            count_bytes_out(&ctx, &topics);
            let leaders = topics
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| p.current_leader.leader_id.0)
                .filter(|id| *id >= 0);
            let endpoints = node_endpoints(&ctx, leaders)
                .into_iter()
                .map(|(id, host, port, rack)| {
                    NodeEndpoint::default()
                        .with_node_id(BrokerId(id))
                        .with_host(super::str(host))
                        .with_port(port)
                        .with_rack(rack.map(super::str))
                })
                .collect();
            ResponseKind::Fetch(
                FetchResponse::default()
                    .with_session_id(0)
                    .with_responses(topics)
                    .with_node_endpoints(endpoints),
            )
        }))
    })
}
