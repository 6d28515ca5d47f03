//! IncrementalAlterConfigs (44), v0-1: SET, DELETE, APPEND and SUBTRACT
//! (the last two on list configs) for a topic, one broker, or the
//! cluster-wide broker default; only the keys named change.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsResponse, ResponseKind};

use super::alter_configs::{apply, resource, Failure};
use crate::config::dynamic::Resolver;
use crate::config::topic::{self, ConfigType};
use crate::controller::records::ConfigResource;
use crate::protocol::Request;
use crate::server::{Ctx, Reply};

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let body = super::body!(req, IncrementalAlterConfigs);
        let mut responses = Vec::with_capacity(body.resources.len());
        for r in body.resources {
            let name = r.resource_name.to_string();
            let outcome = async {
                let res = resource(&ctx, r.resource_type, &name)?;
                let mut set = BTreeMap::new();
                let mut delete = Vec::new();
                let mut seen = std::collections::BTreeSet::new();
                for c in &r.configs {
                    let key = c.name.to_string();
                    if !seen.insert(key.clone()) {
                        return Err((
                            ResponseError::InvalidRequest,
                            format!("config {key} appears twice"),
                        ));
                    }
                    let value = c.value.as_ref().map(|v| v.to_string());
                    match c.config_operation {
                        SET => {
                            let v = value.ok_or_else(|| {
                                (
                                    ResponseError::InvalidConfig,
                                    format!("null value for config {key}"),
                                )
                            })?;
                            set.insert(key, v);
                        }
                        DELETE => delete.push(key),
                        op @ (APPEND | SUBTRACT) => {
                            let v = value.unwrap_or_default();
                            let merged = list_op(&ctx, &res, &key, op == APPEND, &v)?;
                            set.insert(key, merged);
                        }
                        other => {
                            return Err((
                                ResponseError::InvalidRequest,
                                format!("unknown config operation {other} for {key}"),
                            ))
                        }
                    }
                }
                apply(&ctx, res, false, set, delete, body.validate_only).await
            }
            .await;
            let mut out = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            if let Err((code, msg)) = outcome {
                out = out
                    .with_error_code(code.code())
                    .with_error_message(Some(super::str(msg)));
            }
            responses.push(out);
        }
        Reply::Now(ResponseKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsResponse::default().with_responses(responses),
        ))
    })
}

/// APPEND or SUBTRACT `items` (comma-separated) on a list config, from
/// its current value: the override, else what applies.
fn list_op(
    ctx: &Ctx,
    res: &ConfigResource,
    key: &str,
    append: bool,
    items: &str,
) -> Result<String, Failure> {
    let topic_key = match res {
        ConfigResource::Topic(_) => topic::lookup(key),
        _ => topic::by_synonym(key).map(|(k, _)| k),
    };
    let Some(k) = topic_key.filter(|k| k.ty == ConfigType::List) else {
        return Err((
            ResponseError::InvalidConfig,
            format!("config {key} is not a list: APPEND and SUBTRACT apply only to lists"),
        ));
    };
    let image = ctx.controller.image();
    let current = match res {
        ConfigResource::Topic(id) => {
            let overrides = image
                .topic_by_id(id)
                .map(|t| t.configs.clone())
                .unwrap_or_default();
            Resolver::new(ctx.config.node_id, &ctx.config.raw, &image.configs)
                .topic(k, &overrides)
                .value
        }
        ConfigResource::Broker(id) => image
            .configs
            .brokers
            .get(id)
            .and_then(|m| m.get(key))
            .or_else(|| image.configs.default.get(key))
            .cloned()
            .unwrap_or_else(|| k.default.to_string()),
        ConfigResource::BrokerDefault => image
            .configs
            .default
            .get(key)
            .cloned()
            .unwrap_or_else(|| k.default.to_string()),
    };
    let mut list: Vec<String> = current
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for item in items.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if append {
            if !list.iter().any(|x| x == item) {
                list.push(item.to_string());
            }
        } else {
            list.retain(|x| x != item);
        }
    }
    Ok(list.join(","))
}
