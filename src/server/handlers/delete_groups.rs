//! DeleteGroups (42), v0-2: an empty group's membership and committed
//! offsets go; a group with members is NON_EMPTY_GROUP.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsResponse, ResponseKind};

use crate::controller::records::MetadataCommand;
use crate::protocol::Request;
use crate::server::error_code;
use crate::server::lookup::not_coordinator;
use crate::server::{Ctx, Reply};

async fn delete(ctx: &Ctx, group: &str) -> i16 {
    if let Some(code) = not_coordinator(ctx, group) {
        return code.code();
    }
    let live = match ctx.groups.delete(group) {
        Ok(live) => live,
        Err(e) => return error_code::group(&e).code(),
    };
    if !ctx.controller.image().groups.contains_key(group) {
        return if live {
            0
        } else {
            ResponseError::GroupIdNotFound.code()
        };
    }
    let cmd = MetadataCommand::DeleteGroup {
        group: group.to_string(),
    };
    match super::propose(ctx, cmd).await {
        Ok(_) => 0,
        // Raced with another delete: gone either way.
        Err((ResponseError::GroupIdNotFound, _)) if live => 0,
        Err((code, msg)) => {
            tracing::warn!("delete group {group}: {msg}");
            code.code()
        }
    }
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let body = super::body!(req, DeleteGroups);
        let mut resp = DeleteGroupsResponse::default();
        for g in &body.groups_names {
            let code = delete(&ctx, g.0.as_str()).await;
            resp.results.push(
                DeletableGroupResult::default()
                    .with_group_id(g.clone())
                    .with_error_code(code),
            );
        }
        Reply::Now(ResponseKind::DeleteGroups(resp))
    })
}
