//! DescribeGroups (15), v0-5: state, protocol and members (with their
//! metadata and assignment) of live groups; a group known only by its
//! committed offsets is Empty, an unknown one Dead (as Kafka answers).

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsResponse, ResponseKind};

use super::str;
use crate::protocol::Request;
use crate::server::lookup::not_coordinator;
use crate::server::{Ctx, Reply};

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let v = req.version;
        let body = super::body!(req, DescribeGroups);
        let image = ctx.controller.image();
        let mut resp = DescribeGroupsResponse::default();
        for gid in &body.groups {
            let group = gid.0.to_string();
            let mut out = DescribedGroup::default().with_group_id(gid.clone());
            if let Some(code) = not_coordinator(&ctx, &group) {
                out.error_code = code.code();
                resp.groups.push(out);
                continue;
            }
            match ctx.groups.describe(&group) {
                Some(d) => {
                    out = out
                        .with_group_state(str(d.state.name()))
                        .with_protocol_type(str(d.protocol_type))
                        .with_protocol_data(str(d.protocol))
                        .with_members(
                            d.members
                                .into_iter()
                                .map(|m| {
                                    DescribedGroupMember::default()
                                        .with_member_id(str(m.member_id))
                                        .with_group_instance_id(if v >= 4 {
                                            m.instance_id.map(str)
                                        } else {
                                            None
                                        })
                                        .with_client_id(str(m.client_id))
                                        .with_client_host(str(m.client_host))
                                        .with_member_metadata(m.metadata)
                                        .with_member_assignment(m.assignment)
                                })
                                .collect(),
                        );
                }
                None if image.groups.contains_key(&group) => {
                    out = out
                        .with_group_state(str("Empty"))
                        .with_protocol_type(str("consumer"));
                }
                None => out = out.with_group_state(str("Dead")),
            }
            resp.groups.push(out);
        }
        Reply::Now(ResponseKind::DescribeGroups(resp))
    })
}
