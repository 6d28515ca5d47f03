//! OffsetDelete (47), v0: forgets committed offsets of topics the group's
//! members do not subscribe to (GROUP_SUBSCRIBED_TO_TOPIC otherwise).

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteResponse, ResponseKind};

use crate::controller::records::MetadataCommand;
use crate::protocol::Request;
use crate::server::lookup::not_coordinator;
use crate::server::{Ctx, Reply};

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let body = super::body!(req, OffsetDelete);
        let group = body.group_id.0.to_string();
        let top = |code: ResponseError| {
            Reply::Now(ResponseKind::OffsetDelete(
                OffsetDeleteResponse::default().with_error_code(code.code()),
            ))
        };
        if let Some(code) = not_coordinator(&ctx, &group) {
            return top(code);
        }
        let image = ctx.controller.image();
        let live = ctx.groups.describe(&group).is_some();
        if !live && !image.groups.contains_key(&group) {
            return top(ResponseError::GroupIdNotFound);
        }
        let subscribed = ctx.groups.subscribed_topics(&group);
        let mut codes: HashMap<(String, i32), i16> = HashMap::new();
        let mut delete = Vec::new();
        for t in &body.topics {
            let parts = image
                .topics
                .get(t.name.as_str())
                .map(|x| x.partitions.len());
            for p in &t.partitions {
                let key = (t.name.to_string(), p.partition_index);
                let exists = parts
                    .is_some_and(|n| p.partition_index >= 0 && (p.partition_index as usize) < n);
                let code = if !exists {
                    ResponseError::UnknownTopicOrPartition.code()
                } else if subscribed.iter().any(|s| s == t.name.as_str()) {
                    ResponseError::GroupSubscribedToTopic.code()
                } else {
                    delete.push(key.clone());
                    0
                };
                codes.insert(key, code);
            }
        }
        if !delete.is_empty() && image.groups.contains_key(&group) {
            let cmd = MetadataCommand::DeleteOffsets {
                group: group.clone(),
                partitions: delete,
            };
            if let Err((code, msg)) = super::propose(&ctx, cmd).await {
                tracing::warn!("offset delete for {group}: {msg}");
                return top(code);
            }
        }
        let topics = body
            .topics
            .iter()
            .map(|t| {
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let key = (t.name.to_string(), p.partition_index);
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(codes.get(&key).copied().unwrap_or(0))
                            })
                            .collect(),
                    )
            })
            .collect();
        Reply::Now(ResponseKind::OffsetDelete(
            OffsetDeleteResponse::default().with_topics(topics),
        ))
    })
}
