//! LeaveGroup (13), v0-5 (v3+ batches members, which may be static members
//! named by `group.instance.id` alone).

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupResponse, ResponseKind};

use super::str;
use crate::protocol::Request;
use crate::server::error_code;
use crate::server::lookup::not_coordinator;
use crate::server::{Ctx, Reply};

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let v = req.version;
        let body = super::body!(req, LeaveGroup);
        let group = body.group_id.0.to_string();
        if let Some(code) = not_coordinator(&ctx, &group) {
            return Reply::Now(ResponseKind::LeaveGroup(
                LeaveGroupResponse::default().with_error_code(code.code()),
            ));
        }
        let members: Vec<(String, Option<String>)> = if v >= 3 {
            body.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(body.member_id.to_string(), None)]
        };
        let results = ctx.groups.leave(&group, &members);
        let mut resp = LeaveGroupResponse::default();
        if v >= 3 {
            resp.members = members
                .iter()
                .zip(&results)
                .map(|((id, inst), r)| {
                    MemberResponse::default()
                        .with_member_id(str(id.clone()))
                        .with_group_instance_id(inst.clone().map(str))
                        .with_error_code(
                            r.as_ref().err().map_or(0, |e| error_code::group(e).code()),
                        )
                })
                .collect();
        } else if let Some(Err(e)) = results.first() {
            resp.error_code = error_code::group(e).code();
        }
        Reply::Now(ResponseKind::LeaveGroup(resp))
    })
}
