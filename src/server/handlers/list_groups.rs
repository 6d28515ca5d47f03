//! ListGroups (16), v0-5: the groups this broker coordinates, live ones
//! with their state and groups that only have committed offsets as Empty.
//! v4+ filters by state.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsResponse, ResponseKind};

use super::str;
use crate::group::{coordinator_for, GroupState};
use crate::protocol::Request;
use crate::server::{Ctx, Reply};

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let v = req.version;
        let body = super::body!(req, ListGroups);
        let image = ctx.controller.image();
        ctx.groups.load_all(&image, ctx.config.node_id);
        let mut groups = ctx.groups.list();
        for id in image.groups.keys() {
            if !groups.iter().any(|(g, _, _)| g == id)
                && coordinator_for(&image, id) == Some(ctx.config.node_id)
            {
                groups.push((id.clone(), "consumer".into(), GroupState::Empty));
            }
        }
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        let wanted = |s: GroupState| {
            v < 4
                || body.states_filter.is_empty()
                || body
                    .states_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(s.name()))
        };
        let listed = groups
            .into_iter()
            .filter(|(_, _, s)| wanted(*s))
            .map(|(id, ty, state)| {
                let mut g = ListedGroup::default()
                    .with_group_id(GroupId(str(id)))
                    .with_protocol_type(str(ty));
                if v >= 4 {
                    g = g.with_group_state(str(state.name()));
                }
                if v >= 5 {
                    g = g.with_group_type(str("classic"));
                }
                g
            })
            .collect();
        Reply::Now(ResponseKind::ListGroups(
            ListGroupsResponse::default().with_groups(listed),
        ))
    })
}
