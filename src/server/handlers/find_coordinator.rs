//! FindCoordinator (10), v0-6 (v4+ batches `coordinator_keys`). Group keys
//! map to the broker chosen by rendezvous hashing over the unfenced brokers;
//! there is no transaction coordinator yet. Also holds the helpers the other
//! group handlers share.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorResponse, ResponseKind};

use super::metadata::broker_endpoint;
use super::str;
use crate::group::{coordinator_for, GroupError};
use crate::protocol::Request;
use crate::server::{Ctx, Reply};

/// Kafka's error code for a coordinator error.
pub fn group_error_code(e: &GroupError) -> ResponseError {
    match e {
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
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

/// Kafka's `CoordinatorType`: 0 group, 1 transaction.
const KEY_TYPE_GROUP: i8 = 0;

/// (error, node id, host, port) for one key.
fn find(ctx: &Ctx, key_type: i8, key: &str) -> (ResponseError, i32, String, i32) {
    let none = |e| (e, -1, String::new(), -1);
    if key_type != KEY_TYPE_GROUP {
        return none(if key_type == 1 {
            ResponseError::CoordinatorNotAvailable
        } else {
            ResponseError::InvalidRequest
        });
    }
    let image = ctx.controller.image();
    let found = coordinator_for(&image, key)
        .and_then(|id| image.brokers.get(&id))
        .and_then(|b| broker_endpoint(ctx, b).map(|(h, p)| (b.id, h, p)));
    match found {
        // The error is unused when a node is found.
        Some((id, host, port)) => (ResponseError::UnknownServerError, id, host, port),
        None => none(ResponseError::CoordinatorNotAvailable),
    }
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let v = req.version;
        let body = super::body!(req, FindCoordinator);
        let mut resp = FindCoordinatorResponse::default();
        if v >= 4 {
            for key in &body.coordinator_keys {
                let (e, id, host, port) = find(&ctx, body.key_type, key);
                let ok = id >= 0;
                resp.coordinators.push(
                    Coordinator::default()
                        .with_key(key.clone())
                        .with_node_id(BrokerId(id))
                        .with_host(str(host))
                        .with_port(port)
                        .with_error_code(if ok { 0 } else { e.code() }),
                );
            }
        } else {
            let (e, id, host, port) = find(&ctx, body.key_type, &body.key);
            let ok = id >= 0;
            resp = resp
                .with_error_code(if ok { 0 } else { e.code() })
                .with_node_id(BrokerId(id))
                .with_host(str(host))
                .with_port(port);
        }
        Reply::Now(ResponseKind::FindCoordinator(resp))
    })
}
