//! One file per Kafka API. Each states the versions it serves (the numbers
//! themselves live in `protocol::versions`) and turns domain errors into
//! Kafka error codes; nothing below `server` knows those codes.

pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_groups;
pub mod describe_producers;
pub mod describe_quorum;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;

use super::Ctx;
use crate::controller::records::{MetadataCommand, MetadataError, MetadataResponse};
use crate::controller::Error as ControllerError;

/// Takes the typed body out of a request, or closes the connection.
macro_rules! body {
    ($req:expr, $kind:ident) => {
        match $req.body {
            kafka_protocol::messages::RequestKind::$kind(b) => b,
            _ => {
                return $crate::server::Reply::Close(
                    "request body does not match its API key".into(),
                )
            }
        }
    };
}
pub(crate) use body;

pub fn str(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The partition's leader replica on this broker, or the error a client
/// should see: `unknown` for a topic or partition that does not exist,
/// NOT_LEADER_OR_FOLLOWER when another broker leads it.
pub async fn leader_replica(
    ctx: &crate::server::Ctx,
    topic: Option<&crate::controller::image::TopicImage>,
    index: i32,
    unknown: ResponseError,
) -> Result<std::sync::Arc<crate::replication::Partition>, ResponseError> {
    let Some(t) = topic else { return Err(unknown) };
    if index < 0 || index as usize >= t.partitions.len() {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    ctx.broker
        .leader_partition(t.id, index)
        .await
        .ok_or(ResponseError::NotLeaderOrFollower)
}

/// Broker defaults that the controller must see per topic, because its
/// state machine cannot read this broker's configuration (every node must
/// apply a record the same way): stamped into a new topic's configs.
pub fn stamp_broker_defaults(
    ctx: &crate::server::Ctx,
    configs: &mut std::collections::BTreeMap<String, String>,
) {
    if ctx.config.unclean_leader_election_enable {
        configs
            .entry("unclean.leader.election.enable".to_string())
            .or_insert_with(|| "true".to_string());
    }
}

pub fn metadata_error_code(e: &MetadataError) -> ResponseError {
    match e {
        MetadataError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        MetadataError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        MetadataError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        MetadataError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        MetadataError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        MetadataError::InvalidConfig(_) => ResponseError::InvalidConfig,
        MetadataError::StaleBrokerEpoch(_) => ResponseError::StaleBrokerEpoch,
        MetadataError::UnknownGroup(_) => ResponseError::GroupIdNotFound,
        MetadataError::NotCoordinator(_) => ResponseError::NotCoordinator,
        MetadataError::FencedLeaderEpoch(_) => ResponseError::FencedLeaderEpoch,
        MetadataError::InvalidUpdateVersion(_) => ResponseError::InvalidUpdateVersion,
        MetadataError::IneligibleReplica(_) => ResponseError::IneligibleReplica,
    }
}

pub fn controller_error_code(e: &ControllerError) -> ResponseError {
    match e {
        ControllerError::NotLeader { .. } => ResponseError::NotController,
        ControllerError::Unavailable(_) => ResponseError::RequestTimedOut,
        _ => ResponseError::UnknownServerError,
    }
}

/// A metadata change: proposes it, then waits (bounded) until this broker
/// has applied the result so that the next request sees it.
pub async fn propose(
    ctx: &Ctx,
    cmd: MetadataCommand,
) -> Result<MetadataResponse, (ResponseError, String)> {
    match ctx.controller.propose(cmd).await {
        Ok(resp) => {
            let index = ctx.controller.image().last_applied;
            ctx.broker
                .wait_applied(index, Duration::from_secs(10))
                .await;
            match resp {
                MetadataResponse::Rejected(e) => Err((metadata_error_code(&e), e.to_string())),
                ok => Ok(ok),
            }
        }
        Err(e) => Err((controller_error_code(&e), e.to_string())),
    }
}

/// Topic configs Runnel knows; anything else is INVALID_CONFIG at create.
pub const TOPIC_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
];

/// Validates one topic config entry as Kafka would at CreateTopics.
pub fn validate_topic_config(key: &str, value: Option<&str>) -> Result<(), String> {
    if !TOPIC_CONFIGS.contains(&key) {
        return Err(format!("unknown topic config {key}"));
    }
    let Some(v) = value else {
        return Err(format!("null value for topic config {key}"));
    };
    let numeric = |min: i64| -> Result<(), String> {
        match v.parse::<i64>() {
            Ok(n) if n >= min => Ok(()),
            _ => Err(format!(
                "invalid value {v:?} for topic config {key}: expected an integer >= {min}"
            )),
        }
    };
    match key {
        "segment.bytes" => numeric(14),
        "max.message.bytes" | "index.interval.bytes" | "min.insync.replicas" => {
            numeric(if key == "min.insync.replicas" { 1 } else { 0 })
        }
        "retention.ms" | "retention.bytes" => numeric(-1),
        "segment.ms" | "flush.messages" | "flush.ms" | "delete.retention.ms" => numeric(0),
        "cleanup.policy" => v
            .split(',')
            .all(|p| matches!(p.trim(), "delete" | "compact"))
            .then_some(())
            .ok_or_else(|| {
                format!("invalid value {v:?} for cleanup.policy: use delete, compact or both")
            }),
        "message.timestamp.type" => matches!(v, "CreateTime" | "LogAppendTime")
            .then_some(())
            .ok_or_else(|| format!("invalid value {v:?} for message.timestamp.type")),
        "unclean.leader.election.enable" | "preallocate" => matches!(v, "true" | "false")
            .then_some(())
            .ok_or_else(|| format!("invalid value {v:?} for {key}: expected true or false")),
        _ => Ok(()),
    }
}

/// Replica placement for a new topic or new partitions over the live brokers.
pub fn place(
    image: &crate::controller::image::MetadataImage,
    partitions: usize,
    replication_factor: usize,
    start: usize,
) -> Result<Vec<Vec<i32>>, MetadataError> {
    let brokers: Vec<(i32, Option<String>)> = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| (b.id, b.rack.clone()))
        .collect();
    crate::controller::placement::place_replicas(&brokers, partitions, replication_factor, start)
}
