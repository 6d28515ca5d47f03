//! SyncGroup (14), v0-5. Followers wait (in the background) until the
//! leader's SyncGroup brings the assignments.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ResponseKind, SyncGroupResponse};

use super::str;
use crate::group::SyncReply;
use crate::protocol::Request;
use crate::server::error_code;
use crate::server::lookup::not_coordinator;
use crate::server::{Ctx, Reply};

/// How long a SyncGroup answer waits for its generation's Raft record.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

fn error(code: ResponseError) -> ResponseKind {
    ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(code.code()))
}

fn respond(v: i16, reply: SyncReply) -> ResponseKind {
    match reply {
        Ok(r) => {
            let mut resp = SyncGroupResponse::default().with_assignment(r.assignment);
            if v >= 5 {
                resp = resp
                    .with_protocol_type(Some(str(r.protocol_type)))
                    .with_protocol_name(Some(str(r.protocol_name)));
            }
            ResponseKind::SyncGroup(resp)
        }
        Err(e) => error(error_code::group(&e)),
    }
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let v = req.version;
        let body = super::body!(req, SyncGroup);
        let group = body.group_id.0.to_string();
        if let Some(code) = not_coordinator(&ctx, &group) {
            return Reply::Now(error(code));
        }
        let assignments = body
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect();
        let rx = ctx
            .groups
            .sync(&group, &body.member_id, body.generation_id, assignments);
        let generation = body.generation_id;
        Reply::Later(Box::pin(async move {
            match rx.await {
                // The generation is a Raft record before anyone runs it, so
                // that a new coordinator knows it (Kafka's storeGroup).
                Ok(Ok(r)) => match ctx
                    .groups
                    .wait_stored(&group, generation, STORE_TIMEOUT)
                    .await
                {
                    Ok(()) => respond(v, Ok(r)),
                    Err(e) => {
                        tracing::info!(%group, generation, "group generation not stored; members rejoin");
                        respond(v, Err(e))
                    }
                },
                Ok(reply) => respond(v, reply),
                Err(_) => error(ResponseError::RebalanceInProgress),
            }
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{GroupError, SyncResult};
    use crate::protocol::versions::range;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn encodes_at_every_served_version() {
        let r = range(ApiKey::SyncGroup).expect("served");
        for v in r.min..=r.max {
            let ok = Ok(SyncResult {
                protocol_type: "consumer".into(),
                protocol_name: "range".into(),
                assignment: bytes::Bytes::from_static(b"a"),
            });
            for reply in [ok, Err(GroupError::IllegalGeneration)] {
                let ResponseKind::SyncGroup(resp) = respond(v, reply) else {
                    panic!("not a SyncGroup response")
                };
                let mut buf = bytes::BytesMut::new();
                resp.encode(&mut buf, v)
                    .unwrap_or_else(|e| panic!("v{v}: {e}"));
            }
        }
    }
}
