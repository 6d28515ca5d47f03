//! The dispatch table: one handler per API key. `ROUTES` and
//! `protocol::versions::SUPPORTED` must name the same keys (tested), so that
//! nothing unrouted is ever advertised.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::ApiKey;

use super::handlers;
use super::{Ctx, Reply};
use crate::protocol::Request;

pub type Handler = fn(Arc<Ctx>, Request) -> BoxFuture<'static, Reply>;

pub const ROUTES: &[(ApiKey, Handler)] = &[
    (ApiKey::ApiVersions, handlers::api_versions::handle),
    (ApiKey::Metadata, handlers::metadata::handle),
    (ApiKey::Produce, handlers::produce::handle),
    (ApiKey::Fetch, handlers::fetch::handle),
    (ApiKey::ListOffsets, handlers::list_offsets::handle),
    (ApiKey::ElectLeaders, handlers::elect_leaders::handle),
    (
        ApiKey::DescribeProducers,
        handlers::describe_producers::handle,
    ),
    (
        ApiKey::OffsetForLeaderEpoch,
        handlers::offset_for_leader_epoch::handle,
    ),
    (ApiKey::CreateTopics, handlers::create_topics::handle),
    (ApiKey::DeleteTopics, handlers::delete_topics::handle),
    (
        ApiKey::CreatePartitions,
        handlers::create_partitions::handle,
    ),
    (ApiKey::DescribeCluster, handlers::describe_cluster::handle),
    (ApiKey::DescribeLogDirs, handlers::describe_log_dirs::handle),
    (
        ApiKey::DescribeTopicPartitions,
        handlers::describe_topic_partitions::handle,
    ),
    (ApiKey::InitProducerId, handlers::init_producer_id::handle),
    (ApiKey::DescribeQuorum, handlers::describe_quorum::handle),
    (ApiKey::FindCoordinator, handlers::find_coordinator::handle),
    (ApiKey::JoinGroup, handlers::join_group::handle),
    (ApiKey::SyncGroup, handlers::sync_group::handle),
    (ApiKey::Heartbeat, handlers::heartbeat::handle),
    (ApiKey::LeaveGroup, handlers::leave_group::handle),
    (ApiKey::OffsetCommit, handlers::offset_commit::handle),
    (ApiKey::OffsetFetch, handlers::offset_fetch::handle),
    (ApiKey::ListGroups, handlers::list_groups::handle),
    (ApiKey::DescribeGroups, handlers::describe_groups::handle),
    (ApiKey::DeleteGroups, handlers::delete_groups::handle),
    (ApiKey::OffsetDelete, handlers::offset_delete::handle),
    (ApiKey::DeleteRecords, handlers::delete_records::handle),
    (ApiKey::DescribeConfigs, handlers::describe_configs::handle),
    (ApiKey::AlterConfigs, handlers::alter_configs::handle),
    (
        ApiKey::IncrementalAlterConfigs,
        handlers::incremental_alter_configs::handle,
    ),
];

pub async fn handle(ctx: Arc<Ctx>, req: Request) -> Reply {
    match ROUTES.iter().find(|(k, _)| *k == req.api_key) {
        Some((_, h)) => h(ctx, req).await,
        None => Reply::Close(format!("{:?} is not routed", req.api_key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::versions::SUPPORTED;

    #[test]
    fn every_advertised_api_is_routed_and_vice_versa() {
        for r in SUPPORTED {
            assert!(
                ROUTES.iter().any(|(k, _)| *k == r.key),
                "{:?} advertised, not routed",
                r.key
            );
        }
        for (k, _) in ROUTES {
            assert!(
                SUPPORTED.iter().any(|r| r.key == *k),
                "{k:?} routed, not advertised"
            );
        }
    }
}
