//! One file per Kafka API. Each states the versions it serves (the numbers
//! themselves live in `protocol::versions`) and turns domain errors into
//! Kafka error codes; nothing below `server` knows those codes.

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
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

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;

use super::Ctx;
use crate::controller::records::{MetadataCommand, MetadataError, MetadataResponse};
use crate::server::error_code;

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

/// A metadata change: proposes it, then waits (bounded) until this broker
/// has applied the result so that the next request sees it; a refusal is
/// the Kafka error to answer, with its message.
pub async fn propose(
    ctx: &Ctx,
    cmd: MetadataCommand,
) -> Result<MetadataResponse, (ResponseError, String)> {
    ctx.broker
        .propose(&ctx.controller, cmd)
        .await
        .map_err(|e| (error_code::propose(&e), e.to_string()))
}

/// `propose` for a command handed to the batcher (an offset commit).
pub async fn settle(
    ctx: &Ctx,
    proposed: crate::controller::batcher::Proposed,
) -> Result<MetadataResponse, (ResponseError, String)> {
    ctx.broker
        .settle(&ctx.controller, proposed.answer().await)
        .await
        .map_err(|e| (error_code::propose(&e), e.to_string()))
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
