//! OffsetCommit (8), v2-9. The coordinator checks membership and
//! generation; the offsets then go to the controller, many commits to a
//! Raft entry (`controller::batcher`), so that any broker serves them after
//! this one dies. Simple commits (generation -1, no
//! member) are accepted while the group has no members.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, ResponseKind};

use crate::controller::records::OffsetCommit;
use crate::group::records::commit_offsets_command;
use crate::protocol::Request;
use crate::server::error_code;
use crate::server::lookup::not_coordinator;
use crate::server::{Ctx, Reply};

/// Kafka's `offset.metadata.max.bytes` default.
const MAX_METADATA_BYTES: usize = 4096;

/// The same error for every partition of the request.
fn all(body: &OffsetCommitRequest, code: ResponseError) -> OffsetCommitResponse {
    per_partition(body, |_, _| code.code())
}

fn per_partition(
    body: &OffsetCommitRequest,
    mut code: impl FnMut(&str, i32) -> i16,
) -> OffsetCommitResponse {
    OffsetCommitResponse::default().with_topics(
        body.topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code(&t.name, p.partition_index))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let v = req.version;
        let body = super::body!(req, OffsetCommit);
        let group = body.group_id.0.to_string();
        let now = |r| Reply::Now(ResponseKind::OffsetCommit(r));
        if let Some(code) = not_coordinator(&ctx, &group) {
            return now(all(&body, code));
        }
        // group.instance.id is v7+; older versions decode it as None.
        if let Err(e) = ctx.groups.validate_commit(
            &group,
            &body.member_id,
            body.group_instance_id.as_deref(),
            body.generation_id_or_member_epoch,
        ) {
            tracing::debug!(%group, member = %body.member_id, generation = body.generation_id_or_member_epoch, error = ?e, "offset commit refused");
            return now(all(&body, error_code::group(&e)));
        }
        let image = ctx.controller.image();
        let mut offsets = Vec::new();
        let mut rejected = std::collections::HashMap::new();
        for t in &body.topics {
            let parts = image
                .topics
                .get(t.name.as_str())
                .map(|x| x.partitions.len());
            for p in &t.partitions {
                let exists = parts
                    .is_some_and(|n| p.partition_index >= 0 && (p.partition_index as usize) < n);
                let md_len = p.committed_metadata.as_ref().map_or(0, |m| m.len());
                let err = if !exists {
                    Some(ResponseError::UnknownTopicOrPartition)
                } else if md_len > MAX_METADATA_BYTES {
                    Some(ResponseError::OffsetMetadataTooLarge)
                } else {
                    None
                };
                match err {
                    Some(e) => {
                        rejected.insert((t.name.to_string(), p.partition_index), e.code());
                    }
                    None => offsets.push(OffsetCommit {
                        topic: t.name.to_string(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: if v >= 6 { p.committed_leader_epoch } else { -1 },
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    }),
                }
            }
        }
        if offsets.is_empty() {
            return now(per_partition(&body, |t, p| {
                rejected.get(&(t.to_string(), p)).copied().unwrap_or(0)
            }));
        }
        let cmd = commit_offsets_command(
            &image,
            ctx.config.node_id,
            group,
            body.generation_id_or_member_epoch,
            body.member_id.to_string(),
            offsets,
        );
        // Queued now, in request order; answered once its batch commits,
        // while the connection's next requests go on.
        let proposed = ctx.batcher.propose(cmd);
        Reply::Later(Box::pin(async move {
            let failed = match super::settle(&ctx, proposed).await {
                Ok(_) => 0,
                Err((code, msg)) => {
                    tracing::warn!("offset commit failed: {msg} ({code:?})");
                    // Retriable for the client: find the coordinator again.
                    if code == ResponseError::NotCoordinator {
                        code.code()
                    } else {
                        ResponseError::CoordinatorNotAvailable.code()
                    }
                }
            };
            ResponseKind::OffsetCommit(per_partition(&body, |t, p| {
                rejected.get(&(t.to_string(), p)).copied().unwrap_or(failed)
            }))
        }))
    })
}
