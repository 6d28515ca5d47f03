//! CreateTopics (19), v2-7: defaults for -1 partitions / replication factor
//! (v4+), manual assignments, configs validated by name and value,
//! validate_only. Each topic is one Raft entry.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsResponse, ResponseKind};
use uuid::Uuid;

use crate::config::topic::validate_entry;
use crate::controller::image::validate_topic_name;
use crate::controller::records::{MetadataCommand, MetadataResponse};
use crate::protocol::Request;
use crate::server::error_code;
use crate::server::{Ctx, Reply};

type Planned = (Vec<Vec<i32>>, BTreeMap<String, String>);

fn plan(ctx: &Ctx, t: &CreatableTopic) -> Result<Planned, (ResponseError, String)> {
    let image = ctx.controller.image();
    let name = t.name.0.as_str();
    validate_topic_name(name).map_err(|e| (ResponseError::InvalidTopicException, e.to_string()))?;
    if image.topics.contains_key(name) {
        return Err((
            ResponseError::TopicAlreadyExists,
            format!("Topic '{name}' already exists."),
        ));
    }
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        let key = c.name.as_str();
        validate_entry(key, c.value.as_deref()).map_err(|e| (ResponseError::InvalidConfig, e.0))?;
        configs.insert(
            key.to_string(),
            c.value.as_deref().unwrap_or_default().to_string(),
        );
    }
    let assignments = if !t.assignments.is_empty() {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "both assignments and partitions/replication factor were given".into(),
            ));
        }
        let mut out = vec![Vec::new(); t.assignments.len()];
        for a in &t.assignments {
            let i = a.partition_index;
            if i < 0 || i as usize >= out.len() || !out[i as usize].is_empty() {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    format!("bad partition index {i} in assignments"),
                ));
            }
            let ids: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
            let mut dedup = ids.clone();
            dedup.sort_unstable();
            dedup.dedup();
            if ids.is_empty()
                || dedup.len() != ids.len()
                || ids.iter().any(|b| !image.brokers.contains_key(b))
            {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    format!("bad replicas {ids:?} for partition {i}"),
                ));
            }
            out[i as usize] = ids;
        }
        out
    } else {
        let partitions = if t.num_partitions == -1 {
            ctx.config.num_partitions
        } else {
            t.num_partitions
        };
        let rf = if t.replication_factor == -1 {
            ctx.config.default_replication_factor
        } else {
            t.replication_factor
        };
        if partitions < 1 {
            return Err((
                ResponseError::InvalidPartitions,
                "Number of partitions must be larger than 0.".into(),
            ));
        }
        if partitions > 100_000 {
            return Err((
                ResponseError::InvalidPartitions,
                format!("{partitions} partitions is more than 100000"),
            ));
        }
        if rf < 1 {
            return Err((
                ResponseError::InvalidReplicationFactor,
                "Replication factor must be larger than 0.".into(),
            ));
        }
        super::place(&image, partitions as usize, rf as usize, image.topics.len())
            .map_err(|e| (error_code::metadata(&e), e.to_string()))?
    };
    super::stamp_broker_defaults(ctx, &mut configs);
    Ok((assignments, configs))
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let version = req.version;
        let body = super::body!(req, CreateTopics);
        let mut results = Vec::with_capacity(body.topics.len());
        let mut seen = std::collections::HashSet::new();
        for t in &body.topics {
            let mut r = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            if !seen.insert(t.name.0.to_string()) {
                results.push(
                    r.with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(super::str("duplicate topic in request"))),
                );
                continue;
            }
            let outcome = match plan(&ctx, t) {
                Err(e) => Err(e),
                Ok((assignments, configs)) if body.validate_only => {
                    Ok((Uuid::nil(), assignments, configs))
                }
                Ok((assignments, configs)) => {
                    let topic_id = Uuid::new_v4();
                    let cmd = MetadataCommand::CreateTopic {
                        name: t.name.0.to_string(),
                        topic_id,
                        assignments: assignments.clone(),
                        configs: configs.clone(),
                    };
                    match super::propose(&ctx, cmd).await {
                        Ok(MetadataResponse::TopicCreated { topic_id }) => {
                            Ok((topic_id, assignments, configs))
                        }
                        Ok(_) => Ok((topic_id, assignments, configs)),
                        Err(e) => Err(e),
                    }
                }
            };
            match outcome {
                Ok((id, assignments, configs)) => {
                    if !body.validate_only {
                        tracing::info!(topic = %t.name.0.as_str(), partitions = assignments.len(), "created topic");
                    }
                    r = r
                        .with_topic_id(id)
                        .with_num_partitions(assignments.len() as i32)
                        .with_replication_factor(assignments.first().map_or(0, |a| a.len() as i16));
                    if version >= 5 {
                        // Every topic config as it now applies, as Kafka
                        // answers (KIP-525).
                        let image = ctx.controller.image();
                        let resolver = crate::config::dynamic::Resolver::new(
                            ctx.config.node_id,
                            &ctx.config.raw,
                            &image.configs,
                        );
                        r = r.with_configs(Some(
                            crate::config::topic::KEYS
                                .iter()
                                .map(|k| {
                                    let v = resolver.topic(k, &configs);
                                    CreatableTopicConfigs::default()
                                        .with_name(super::str(k.name))
                                        .with_value(Some(super::str(v.value)))
                                        .with_config_source(v.source as i8)
                                })
                                .collect(),
                        ));
                    }
                    results.push(r);
                }
                Err((code, msg)) => results.push(
                    r.with_error_code(code.code())
                        .with_error_message(Some(super::str(msg))),
                ),
            }
        }
        Reply::Now(ResponseKind::CreateTopics(
            CreateTopicsResponse::default().with_topics(results),
        ))
    })
}
