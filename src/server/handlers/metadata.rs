//! Metadata (3), v0-12: brokers, controller, topics with partitions, leaders,
//! replicas and ISR; topic ids from v10. Auto-creates requested topics when
//! `auto.create.topics.enable` (and, from v4, the request allows it).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataResponse, ResponseKind, TopicName};
use uuid::Uuid;

use crate::controller::image::{MetadataImage, TopicImage};
use crate::controller::records::MetadataCommand;
use crate::protocol::Request;
use crate::server::error_code;
use crate::server::lookup::{broker_endpoint, controller_id};
use crate::server::{Ctx, Reply};

pub fn topic_response(t: &TopicImage, version: i16) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ids = |v: &[i32]| v.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
            MetadataResponsePartition::default()
                .with_error_code(if p.leader < 0 {
                    ResponseError::LeaderNotAvailable.code()
                } else {
                    0
                })
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(super::str(t.name.clone()))))
        .with_topic_id(if version >= 10 { t.id } else { Uuid::nil() })
        .with_is_internal(false)
        .with_partitions(partitions)
}

fn unknown(name: Option<TopicName>, id: Uuid, code: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(name)
        .with_topic_id(id)
}

/// Creates a topic with the broker defaults, as auto-creation does.
pub async fn auto_create(
    ctx: &Ctx,
    image: &MetadataImage,
    name: &str,
) -> Result<(), (ResponseError, String)> {
    crate::controller::image::validate_topic_name(name)
        .map_err(|e| (ResponseError::InvalidTopicException, e.to_string()))?;
    let assignments = super::place(
        image,
        ctx.config.num_partitions as usize,
        ctx.config.default_replication_factor as usize,
        image.topics.len(),
    )
    .map_err(|e| (error_code::metadata(&e), e.to_string()))?;
    let mut configs = BTreeMap::new();
    super::stamp_broker_defaults(ctx, &mut configs);
    let cmd = MetadataCommand::CreateTopic {
        name: name.to_string(),
        topic_id: Uuid::new_v4(),
        assignments,
        configs,
    };
    match super::propose(ctx, cmd).await {
        Ok(_) => {
            tracing::info!(topic = name, "auto-created topic");
            Ok(())
        }
        // Created concurrently by another request: that is success too.
        Err((ResponseError::TopicAlreadyExists, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let version = req.version;
        let producer = req.producer_connection;
        let body = super::body!(req, Metadata);
        let mut image = ctx.controller.image();
        // v0: an empty list means all topics; v1+: null means all.
        let requested = match body.topics {
            None => None,
            Some(t) if t.is_empty() && version == 0 => None,
            Some(t) => Some(t),
        };
        let allow_auto =
            ctx.config.auto_create_topics_enable && (version < 4 || body.allow_auto_topic_creation);

        let mut topics = Vec::new();
        match requested {
            None => {
                topics.extend(image.topics.values().map(|t| topic_response(t, version)));
            }
            Some(reqs) => {
                // Auto-create first so one image answers all topics.
                let mut created = false;
                if allow_auto {
                    for r in &reqs {
                        if let Some(name) = &r.name {
                            if !image.topics.contains_key(name.0.as_str()) {
                                if let Err((code, msg)) =
                                    auto_create(&ctx, &image, name.0.as_str()).await
                                {
                                    tracing::debug!(topic = %name.0.as_str(), ?code, "auto-create failed: {msg}");
                                }
                                created = true;
                            }
                        }
                    }
                }
                if created {
                    image = ctx.controller.image();
                }
                for r in reqs {
                    let found = match &r.name {
                        Some(name) => image.topic(name.0.as_str()),
                        None => image.topic_by_id(&r.topic_id),
                    };
                    topics.push(match (found, r.name) {
                        (Some(t), _) => topic_response(t, version),
                        (None, Some(name)) => {
                            let code =
                                if crate::controller::image::validate_topic_name(name.0.as_str())
                                    .is_err()
                                {
                                    ResponseError::InvalidTopicException
                                } else {
                                    ResponseError::UnknownTopicOrPartition
                                };
                            unknown(Some(name), Uuid::nil(), code)
                        }
                        (None, None) => unknown(None, r.topic_id, ResponseError::UnknownTopicId),
                    });
                }
            }
        }

        let brokers = ctx
            .listing
            .listed(&image, std::time::Instant::now(), producer)
            .into_iter()
            .filter_map(|b| {
                broker_endpoint(&ctx, b).map(|(host, port)| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(b.id))
                        .with_host(super::str(host))
                        .with_port(port)
                        .with_rack(b.rack.clone().map(super::str))
                })
            })
            .collect();
        Reply::Now(ResponseKind::Metadata(
            MetadataResponse::default()
                .with_brokers(brokers)
                .with_cluster_id(Some(super::str(image.cluster_id.clone())))
                .with_controller_id(BrokerId(controller_id(&ctx)))
                .with_topics(topics),
        ))
    })
}
