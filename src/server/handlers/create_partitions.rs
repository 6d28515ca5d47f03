//! CreatePartitions (37), v0-3: grow a topic to `count` partitions, with
//! explicit assignments or placed like new topics.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsResponse, ResponseKind};

use crate::controller::records::MetadataCommand;
use crate::protocol::Request;
use crate::server::error_code;
use crate::server::{Ctx, Reply};

async fn grow(
    ctx: &Ctx,
    t: &CreatePartitionsTopic,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let image = ctx.controller.image();
    let name = t.name.0.as_str();
    let topic = image.topic(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("Topic '{name}' does not exist."),
        )
    })?;
    let current = topic.partitions.len();
    if t.count < 0 || (t.count as usize) < current {
        return Err((
            ResponseError::InvalidPartitions,
            format!(
                "Topic currently has {current} partitions, which is higher than the requested {}.",
                t.count
            ),
        ));
    }
    if t.count as usize == current {
        return Err((
            ResponseError::InvalidPartitions,
            format!("Topic already has {current} partitions."),
        ));
    }
    let new = t.count as usize - current;
    if new > 100_000 {
        return Err((
            ResponseError::InvalidPartitions,
            format!("{new} new partitions is more than 100000"),
        ));
    }
    let assignments = match &t.assignments {
        Some(a) => {
            if a.len() != new {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    format!("{} assignments for {new} new partitions", a.len()),
                ));
            }
            let mut out = Vec::with_capacity(new);
            for x in a {
                let ids: Vec<i32> = x.broker_ids.iter().map(|b| b.0).collect();
                if ids.is_empty() || ids.iter().any(|b| !image.brokers.contains_key(b)) {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!("bad replicas {ids:?}"),
                    ));
                }
                out.push(ids);
            }
            out
        }
        None => {
            let rf = topic.partitions[0].replicas.len();
            super::place(&image, new, rf, current)
                .map_err(|e| (error_code::metadata(&e), e.to_string()))?
        }
    };
    if validate_only {
        return Ok(());
    }
    super::propose(
        ctx,
        MetadataCommand::CreatePartitions {
            topic_id: topic.id,
            expected_count: current,
            new_assignments: assignments,
        },
    )
    .await
    .map(|_| ())
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let body = super::body!(req, CreatePartitions);
        let mut results = Vec::with_capacity(body.topics.len());
        for t in &body.topics {
            let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            results.push(match grow(&ctx, t, body.validate_only).await {
                Ok(()) => r,
                Err((code, msg)) => r
                    .with_error_code(code.code())
                    .with_error_message(Some(super::str(msg))),
            });
        }
        Reply::Now(ResponseKind::CreatePartitions(
            CreatePartitionsResponse::default().with_results(results),
        ))
    })
}
