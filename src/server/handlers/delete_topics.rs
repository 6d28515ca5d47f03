//! DeleteTopics (20), v1-6: by name, or by name or id from v6.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsResponse, ResponseKind, TopicName};
use uuid::Uuid;

use crate::controller::records::MetadataCommand;
use crate::protocol::Request;
use crate::server::{Ctx, Reply};

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let version = req.version;
        let body = super::body!(req, DeleteTopics);
        let targets: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
            body.topics
                .into_iter()
                .map(|t| (t.name, t.topic_id))
                .collect()
        } else {
            body.topic_names
                .into_iter()
                .map(|n| (Some(n), Uuid::nil()))
                .collect()
        };
        let mut results = Vec::with_capacity(targets.len());
        for (name, id) in targets {
            let image = ctx.controller.image();
            let found = match &name {
                Some(n) => image.topic(n.0.as_str()),
                None => image.topic_by_id(&id),
            };
            let mut r = DeletableTopicResult::default()
                .with_name(name.clone())
                .with_topic_id(id);
            let Some(t) = found else {
                let code = if name.is_some() {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::UnknownTopicId
                };
                results.push(r.with_error_code(code.code()));
                continue;
            };
            if !ctx.config.delete_topic_enable {
                results.push(r.with_error_code(ResponseError::TopicDeletionDisabled.code()));
                continue;
            }
            r = r
                .with_name(Some(TopicName(super::str(t.name.clone()))))
                .with_topic_id(if version >= 6 { t.id } else { Uuid::nil() });
            match super::propose(&ctx, MetadataCommand::DeleteTopic { topic_id: t.id }).await {
                Ok(_) => {
                    tracing::info!(topic = %t.name, "deleted topic");
                    results.push(r)
                }
                Err((code, msg)) => results.push(
                    r.with_error_code(code.code())
                        .with_error_message(Some(super::str(msg))),
                ),
            }
        }
        Reply::Now(ResponseKind::DeleteTopics(
            DeleteTopicsResponse::default().with_responses(results),
        ))
    })
}
