//! DescribeTopicPartitions (75), v0 (KIP-966): what Kafka 3.7+ tools and
//! the Java AdminClient's `describeTopics` ask instead of Metadata. Topics
//! in name order (every topic for an empty list), at most
//! `response_partition_limit` partitions per answer, continued from
//! `cursor`, with `next_cursor` where the answer stopped. Runnel has no
//! eligible leader replicas (ELR): those fields are empty.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsResponse, ResponseKind, TopicName,
};

use crate::protocol::Request;
use crate::server::{Ctx, Reply};

/// Kafka's default and upper bound for `response_partition_limit`.
const PARTITION_LIMIT: usize = 2000;

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let body = super::body!(req, DescribeTopicPartitions);
        let image = ctx.controller.image();
        let mut names: Vec<String> = if body.topics.is_empty() {
            image.topics.keys().cloned().collect()
        } else {
            body.topics.iter().map(|t| t.name.0.to_string()).collect()
        };
        names.sort();
        names.dedup();
        let limit = match usize::try_from(body.response_partition_limit) {
            Ok(n) if n > 0 => n.min(PARTITION_LIMIT),
            _ => PARTITION_LIMIT,
        };
        let (start_topic, start_partition) = match &body.cursor {
            Some(c) => (
                Some(c.topic_name.0.to_string()),
                c.partition_index.max(0) as usize,
            ),
            None => (None, 0),
        };
        let mut left = limit;
        let mut topics = Vec::new();
        let mut next_cursor = None;
        for name in names {
            if start_topic.as_ref().is_some_and(|s| &name < s) {
                continue;
            }
            let first = if start_topic.as_deref() == Some(name.as_str()) {
                start_partition
            } else {
                0
            };
            let Some(t) = image.topic(&name) else {
                topics.push(
                    DescribeTopicPartitionsResponseTopic::default()
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_name(Some(TopicName(super::str(name))))
                        .with_topic_authorized_operations(i32::MIN),
                );
                continue;
            };
            if left == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(TopicName(super::str(name)))
                        .with_partition_index(first as i32),
                );
                break;
            }
            let ids = |v: &[i32]| v.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
            let mut partitions = Vec::new();
            for (i, p) in t.partitions.iter().enumerate().skip(first) {
                if left == 0 {
                    next_cursor = Some(
                        Cursor::default()
                            .with_topic_name(TopicName(super::str(name.clone())))
                            .with_partition_index(i as i32),
                    );
                    break;
                }
                left -= 1;
                let offline: Vec<i32> = p
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| image.brokers.get(r).is_none_or(|b| b.fenced))
                    .collect();
                partitions.push(
                    DescribeTopicPartitionsResponsePartition::default()
                        .with_error_code(if p.leader < 0 {
                            ResponseError::LeaderNotAvailable.code()
                        } else {
                            0
                        })
                        .with_partition_index(i as i32)
                        .with_leader_id(BrokerId(p.leader))
                        .with_leader_epoch(p.leader_epoch)
                        .with_replica_nodes(ids(&p.replicas))
                        .with_isr_nodes(ids(&p.isr))
                        .with_eligible_leader_replicas(Some(Vec::new()))
                        .with_last_known_elr(Some(Vec::new()))
                        .with_offline_replicas(ids(&offline)),
                );
            }
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(TopicName(super::str(name))))
                    .with_topic_id(t.id)
                    .with_is_internal(false)
                    .with_partitions(partitions)
                    .with_topic_authorized_operations(i32::MIN),
            );
            if next_cursor.is_some() {
                break;
            }
        }
        Reply::Now(ResponseKind::DescribeTopicPartitions(
            DescribeTopicPartitionsResponse::default()
                .with_topics(topics)
                .with_next_cursor(next_cursor),
        ))
    })
}
