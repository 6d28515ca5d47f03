//! Lookups the handlers share: a partition's leader replica here, whether
//! this broker coordinates a group, how clients reach a broker, which node
//! clients see as the controller. Each answers with the Kafka error a
//! client should get, so that no handler imports another.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use super::{error_code, Ctx};
use crate::controller::image::{BrokerRegistration, TopicImage};
use crate::group::coordinator_for;
use crate::replication::Partition;

/// The partition's leader replica on this broker, or the error a client
/// should see: `unknown` for a topic or partition that does not exist,
/// NOT_LEADER_OR_FOLLOWER when another broker leads it.
pub async fn leader_replica(
    ctx: &Ctx,
    topic: Option<&TopicImage>,
    index: i32,
    unknown: ResponseError,
) -> Result<Arc<Partition>, ResponseError> {
    let Some(t) = topic else { return Err(unknown) };
    if index < 0 || index as usize >= t.partitions.len() {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    ctx.broker
        .leader_partition(t.id, index)
        .await
        .ok_or(ResponseError::NotLeaderOrFollower)
}

/// The leader replica, for a client that believes the leader epoch is
/// `current_leader_epoch` (KIP-320; -1: it does not say): FENCED_LEADER_EPOCH
/// when that is older than ours, UNKNOWN_LEADER_EPOCH when newer.
pub async fn leader_replica_in_epoch(
    ctx: &Ctx,
    topic: Option<&TopicImage>,
    index: i32,
    unknown: ResponseError,
    current_leader_epoch: i32,
) -> Result<Arc<Partition>, ResponseError> {
    let p = leader_replica(ctx, topic, index, unknown).await?;
    match error_code::leader_epoch(current_leader_epoch, p.leader_epoch()) {
        Some(e) => Err(e),
        None => Ok(p),
    }
}

/// None when this broker coordinates `group`, which it then holds (loaded
/// from the group's Raft record if it just took the group over); else the
/// error to answer.
pub fn not_coordinator(ctx: &Ctx, group: &str) -> Option<ResponseError> {
    let image = ctx.controller.image();
    match coordinator_for(&image, group) {
        Some(id) if id == ctx.config.node_id => {
            ctx.groups.load(&image, group);
            None
        }
        Some(_) => Some(ResponseError::NotCoordinator),
        None => Some(ResponseError::CoordinatorNotAvailable),
    }
}

/// The host and port a broker advertises on the listener this request came
/// in on (as Kafka answers: a client on `INTERNAL` gets every broker's
/// `INTERNAL` address); falls back to its first endpoint.
pub fn broker_endpoint(ctx: &Ctx, b: &BrokerRegistration) -> Option<(String, i32)> {
    b.endpoints
        .iter()
        .find(|e| e.listener == ctx.listener)
        .or(b.endpoints.first())
        .map(|e| (e.host.clone(), e.port as i32))
}

/// Who leads a partition as the metadata image says (KIP-951): (leader id,
/// leader epoch), for a NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH answer
/// to carry, so that a client redirects without a Metadata round trip.
/// `None` when the partition is unknown or has no leader.
pub fn current_leader(topic: Option<&TopicImage>, index: i32) -> Option<(i32, i32)> {
    let p = topic?.partitions.get(usize::try_from(index).ok()?)?;
    (p.leader >= 0).then_some((p.leader, p.leader_epoch))
}

/// The endpoints of `ids` (deduplicated, in order) on this request's
/// listener, for a response's `node_endpoints` (KIP-951): (id, host, port,
/// rack). Unknown or fenced brokers are left out.
pub fn node_endpoints(
    ctx: &Ctx,
    ids: impl IntoIterator<Item = i32>,
) -> Vec<(i32, String, i32, Option<String>)> {
    let image = ctx.controller.image();
    let mut ids: Vec<i32> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .filter_map(|id| {
            let b = image.brokers.get(&id).filter(|b| !b.fenced)?;
            let (host, port) = broker_endpoint(ctx, b)?;
            Some((id, host, port, b.rack.clone()))
        })
        .collect()
}

/// The active controller as clients see it: the Raft leader's node id when
/// that node is also a live broker; otherwise (a controller-only leader,
/// which clients cannot reach) this broker, which forwards admin requests
/// to the active controller, as KRaft brokers answer.
pub fn controller_id(ctx: &Ctx) -> i32 {
    let Some(leader) = ctx.controller.leader_id().map(|id| id as i32) else {
        return -1;
    };
    let image = ctx.controller.image();
    if image.brokers.get(&leader).is_some_and(|b| !b.fenced) {
        leader
    } else {
        ctx.config.node_id
    }
}
