//! OffsetFetch (9), v1-9 (v8+ batches groups). Answers from the metadata
//! image, where committed offsets are Raft records; a partition without a
//! commit answers offset -1.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchResponse, ResponseKind, TopicName};

use super::str;
use crate::controller::image::MetadataImage;
use crate::protocol::Request;
use crate::server::lookup::not_coordinator;
use crate::server::{Ctx, Reply};

/// One partition's answer: (partition, offset, leader epoch, metadata).
type Answer = (i32, i64, i32, String);

/// The requested partitions of a group, or all it committed when `topics`
/// is None (v2+).
fn lookup(
    image: &MetadataImage,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, Vec<Answer>)> {
    let g = image.groups.get(group);
    let topics = match topics {
        Some(t) => t,
        None => g
            .map(|g| {
                g.offsets
                    .iter()
                    .map(|(t, parts)| (t.clone(), parts.keys().copied().collect()))
                    .collect()
            })
            .unwrap_or_default(),
    };
    topics
        .into_iter()
        .map(|(t, parts)| {
            let answers = parts
                .into_iter()
                .map(|p| match g.and_then(|g| g.get(&t, p)) {
                    Some(o) => (
                        p,
                        o.offset,
                        o.leader_epoch,
                        o.metadata.clone().unwrap_or_default(),
                    ),
                    None => (p, -1, -1, String::new()),
                })
                .collect();
            (t, answers)
        })
        .collect()
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let v = req.version;
        let body = super::body!(req, OffsetFetch);
        // Commits sent before this request (on any connection to this
        // broker) are answered first, so that a client reads its own.
        ctx.batcher.barrier().await;
        let image = ctx.controller.image();
        let mut resp = OffsetFetchResponse::default();
        if v >= 8 {
            for g in &body.groups {
                let group = g.group_id.0.to_string();
                let mut out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                if let Some(code) = not_coordinator(&ctx, &group) {
                    out.error_code = code.code();
                } else {
                    let topics = g.topics.as_ref().map(|ts| {
                        ts.iter()
                            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                            .collect()
                    });
                    out.topics = lookup(&image, &group, topics)
                        .into_iter()
                        .map(|(t, parts)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(str(t)))
                                .with_partitions(
                                    parts
                                        .into_iter()
                                        .map(|(p, o, e, m)| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(o)
                                                .with_committed_leader_epoch(e)
                                                .with_metadata(Some(str(m)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                }
                resp.groups.push(out);
            }
            return Reply::Now(ResponseKind::OffsetFetch(resp));
        }
        let group = body.group_id.0.to_string();
        let topics = body.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                .collect::<Vec<_>>()
        });
        if let Some(code) = not_coordinator(&ctx, &group) {
            if v >= 2 {
                resp.error_code = code.code();
            } else {
                // v1 has errors per partition only.
                resp.topics = topics
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(t, parts)| {
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(str(t)))
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|p| {
                                        OffsetFetchResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(-1)
                                            .with_metadata(Some(str("")))
                                            .with_error_code(code.code())
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
            }
            return Reply::Now(ResponseKind::OffsetFetch(resp));
        }
        resp.topics = lookup(&image, &group, topics)
            .into_iter()
            .map(|(t, parts)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(str(t)))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, o, e, m)| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o)
                                    .with_committed_leader_epoch(if v >= 5 { e } else { -1 })
                                    .with_metadata(Some(str(m)))
                            })
                            .collect(),
                    )
            })
            .collect();
        Reply::Now(ResponseKind::OffsetFetch(resp))
    })
}
