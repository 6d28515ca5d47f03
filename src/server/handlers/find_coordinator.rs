//! FindCoordinator (10), v0-6 (v4+ batches `coordinator_keys`). Group keys
//! map to the broker chosen by rendezvous hashing over the unfenced brokers
//! admitted as coordinators (see `MetadataImage::group_coordinator`).
//! There is no transaction coordinator yet: a transaction key gets a
//! non-retriable error with a message saying so, so that a transactional
//! producer fails at once (the Java client's `initTransactions` throws
//! "Could not find a coordinator with type TRANSACTION ... due to unexpected
//! error: <message>") instead of retrying until `max.block.ms`.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorResponse, ResponseKind};

use super::str;
use crate::group::coordinator_for;
use crate::protocol::Request;
use crate::server::lookup::broker_endpoint;
use crate::server::{Ctx, Reply};

/// Kafka's `CoordinatorType`: 0 group, 1 transaction.
const KEY_TYPE_GROUP: i8 = 0;

const KEY_TYPE_TRANSACTION: i8 = 1;

/// What a transactional client is told.
pub const NO_TRANSACTIONS: &str =
    "transactions are not supported by this cluster (Runnel has no transaction coordinator yet)";

/// (error, node id, host, port) for one key.
fn find(ctx: &Ctx, key_type: i8, key: &str) -> (ResponseError, i32, String, i32) {
    let none = |e| (e, -1, String::new(), -1);
    if key_type != KEY_TYPE_GROUP {
        return none(if key_type == KEY_TYPE_TRANSACTION {
            ResponseError::UnsupportedVersion
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

fn message(ok: bool, key_type: i8) -> Option<kafka_protocol::protocol::StrBytes> {
    (!ok && key_type == KEY_TYPE_TRANSACTION).then(|| str(NO_TRANSACTIONS.to_string()))
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
                        .with_error_code(if ok { 0 } else { e.code() })
                        .with_error_message(message(ok, body.key_type)),
                );
            }
        } else {
            let (e, id, host, port) = find(&ctx, body.key_type, &body.key);
            let ok = id >= 0;
            resp = resp
                .with_error_code(if ok { 0 } else { e.code() })
                .with_error_message(message(ok, body.key_type))
                .with_node_id(BrokerId(id))
                .with_host(str(host))
                .with_port(port);
        }
        Reply::Now(ResponseKind::FindCoordinator(resp))
    })
}
