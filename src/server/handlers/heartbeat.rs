//! Heartbeat (12), v0-4: keeps a member's session alive and tells it when
//! to rejoin (REBALANCE_IN_PROGRESS).

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::{HeartbeatResponse, ResponseKind};

use crate::protocol::Request;
use crate::server::error_code;
use crate::server::lookup::not_coordinator;
use crate::server::{Ctx, Reply};

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let body = super::body!(req, Heartbeat);
        let group = body.group_id.0.to_string();
        let code = match not_coordinator(&ctx, &group) {
            Some(code) => code.code(),
            None => match ctx
                .groups
                .heartbeat(&group, &body.member_id, body.generation_id)
            {
                Ok(()) => 0,
                Err(e) => error_code::group(&e).code(),
            },
        };
        Reply::Now(ResponseKind::Heartbeat(
            HeartbeatResponse::default().with_error_code(code),
        ))
    })
}
