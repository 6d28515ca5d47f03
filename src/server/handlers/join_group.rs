//! JoinGroup (11), v0-9. The answer waits (in the background, so the
//! connection's later requests are not held up) until the rebalance
//! completes; v4+ new members first get MEMBER_ID_REQUIRED (KIP-394).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupResponse, ResponseKind};

use super::str;
use crate::group::{GroupError, JoinReply, JoinRequest};
use crate::protocol::Request;
use crate::server::error_code;
use crate::server::lookup::not_coordinator;
use crate::server::{Ctx, Reply};

fn error(v: i16, code: ResponseError, member_id: &str) -> ResponseKind {
    ResponseKind::JoinGroup(
        JoinGroupResponse::default()
            .with_error_code(code.code())
            .with_generation_id(-1)
            // Non-nullable before v7.
            .with_protocol_name((v < 7).then(|| str("")))
            .with_member_id(str(member_id)),
    )
}

fn respond(v: i16, reply: JoinReply) -> ResponseKind {
    match reply {
        Ok(r) => ResponseKind::JoinGroup(
            JoinGroupResponse::default()
                .with_generation_id(r.generation)
                .with_protocol_type((v >= 7).then(|| str(r.protocol_type)))
                .with_protocol_name(Some(str(r.protocol_name)))
                .with_leader(str(r.leader))
                .with_member_id(str(r.member_id))
                .with_members(
                    r.members
                        .into_iter()
                        .map(|m| {
                            JoinGroupResponseMember::default()
                                .with_member_id(str(m.member_id))
                                .with_group_instance_id(if v >= 5 {
                                    m.instance_id.map(str)
                                } else {
                                    None
                                })
                                .with_metadata(m.metadata)
                        })
                        .collect(),
                ),
        ),
        Err(GroupError::MemberIdRequired(id)) => error(v, ResponseError::MemberIdRequired, &id),
        Err(e) => error(v, error_code::group(&e), ""),
    }
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let v = req.version;
        let client_id = req
            .header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let client_host = req.client_host.clone();
        let body = super::body!(req, JoinGroup);
        let group = body.group_id.0.to_string();
        if let Some(code) = not_coordinator(&ctx, &group) {
            return Reply::Now(error(v, code, &body.member_id));
        }
        if body.session_timeout_ms <= 0 {
            return Reply::Now(error(
                v,
                ResponseError::InvalidSessionTimeout,
                &body.member_id,
            ));
        }
        let session = Duration::from_millis(body.session_timeout_ms as u64);
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        let rebalance = if v >= 1 && body.rebalance_timeout_ms > 0 {
            Duration::from_millis(body.rebalance_timeout_ms as u64)
        } else {
            session
        };
        let join = JoinRequest {
            member_id: body.member_id.to_string(),
            instance_id: body.group_instance_id.as_ref().map(|s| s.to_string()),
            client_id,
            client_host: client_host.clone(),
            session_timeout: session,
            rebalance_timeout: rebalance,
            protocol_type: body.protocol_type.to_string(),
            protocols: body
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            require_known_member_id: v >= 4,
        };
        let rx = ctx.groups.join(&group, join);
        Reply::Later(Box::pin(async move {
            match rx.await {
                Ok(reply) => respond(v, reply),
                // The group went away (deleted) while this member waited.
                Err(_) => error(v, ResponseError::CoordinatorNotAvailable, ""),
            }
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{JoinResult, MemberInfo};
    use crate::protocol::versions::range;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn encodes_at_every_served_version() {
        let r = range(ApiKey::JoinGroup).expect("served");
        for v in r.min..=r.max {
            let ok = Ok(JoinResult {
                generation: 1,
                protocol_type: "consumer".into(),
                protocol_name: "range".into(),
                leader: "m".into(),
                member_id: "m".into(),
                members: vec![MemberInfo {
                    member_id: "m".into(),
                    instance_id: Some("i".into()),
                    metadata: bytes::Bytes::from_static(b"x"),
                }],
            });
            for reply in [ok, Err(GroupError::MemberIdRequired("m2".into()))] {
                let ResponseKind::JoinGroup(resp) = respond(v, reply) else {
                    panic!("not a JoinGroup response")
                };
                let mut buf = bytes::BytesMut::new();
                resp.encode(&mut buf, v)
                    .unwrap_or_else(|e| panic!("v{v}: {e}"));
            }
        }
    }
}
