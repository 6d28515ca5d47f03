//! InitProducerId (22), v0-5, for idempotent producers without a
//! transactional id. Ids come from blocks the controller hands out through
//! Raft, so they are unique cluster-wide. A producer that re-initialises with
//! its current id and epoch (KIP-360, v3+) gets the epoch bumped.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdResponse, ProducerId, ResponseKind};

use crate::controller::records::{MetadataCommand, MetadataResponse};
use crate::protocol::Request;
use crate::server::error_code;
use crate::server::{Ctx, Reply};

/// How many ids a broker takes from the controller at once.
const BLOCK: i64 = 1000;

async fn new_producer_id(ctx: &Ctx) -> Result<i64, (ResponseError, String)> {
    for _ in 0..3 {
        if let Some(id) = ctx.broker.take_producer_id() {
            return Ok(id);
        }
        let cmd = MetadataCommand::AllocateProducerIds {
            broker_id: ctx.config.node_id,
            count: BLOCK,
        };
        match ctx.controller.propose(cmd).await {
            Ok(MetadataResponse::ProducerIds { first, count }) => {
                ctx.broker.add_producer_ids(first, count)
            }
            Ok(other) => return Err((ResponseError::UnknownServerError, format!("{other:?}"))),
            Err(e) => return Err((error_code::controller(&e), e.to_string())),
        }
    }
    Err((
        ResponseError::CoordinatorNotAvailable,
        "producer ids exhausted".into(),
    ))
}

fn error(code: ResponseError) -> Reply {
    Reply::Now(ResponseKind::InitProducerId(
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    ))
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let body = super::body!(req, InitProducerId);
        if body.transactional_id.is_some() {
            // Transactions come later: no transaction coordinator yet.
            return error(ResponseError::TransactionalIdAuthorizationFailed);
        }
        // Only an id this cluster handed out may be re-initialised: adopting
        // any id a client names could collide with a later allocation.
        let handed_out = body.producer_id.0 < ctx.controller.image().next_producer_id;
        let (id, epoch) = if body.producer_id.0 >= 0 && body.producer_epoch >= 0 && handed_out {
            if body.producer_epoch < i16::MAX - 1 {
                (body.producer_id.0, body.producer_epoch + 1)
            } else {
                // Epoch exhausted: a fresh id, as Kafka does.
                match new_producer_id(&ctx).await {
                    Ok(id) => (id, 0),
                    Err((code, msg)) => {
                        tracing::warn!("InitProducerId failed: {msg}");
                        return error(code);
                    }
                }
            }
        } else {
            match new_producer_id(&ctx).await {
                Ok(id) => (id, 0),
                Err((code, msg)) => {
                    tracing::warn!("InitProducerId failed: {msg}");
                    return error(code);
                }
            }
        };
        Reply::Now(ResponseKind::InitProducerId(
            InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch),
        ))
    })
}
