//! AlterConfigs (33), v0-2: replaces every override of a topic, of one
//! broker's dynamic configs, or of the cluster-wide broker default (an
//! empty broker name) with the entries given. Also the part of
//! IncrementalAlterConfigs that both share: finding the resource,
//! validating every entry, and proposing one record per resource, so that
//! one bad entry changes nothing for its resource.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsResponse, ResponseKind};

use super::describe_configs::{BROKER, TOPIC};
use crate::config::dynamic::validate_broker_entry;
use crate::config::topic::validate_entry;
use crate::controller::records::{ConfigResource, MetadataCommand};
use crate::protocol::Request;
use crate::server::{Ctx, Reply};

pub type Failure = (ResponseError, String);

/// The resource a request names.
pub fn resource(ctx: &Ctx, resource_type: i8, name: &str) -> Result<ConfigResource, Failure> {
    match resource_type {
        TOPIC => ctx
            .controller
            .image()
            .topic(name)
            .map(|t| ConfigResource::Topic(t.id))
            .ok_or_else(|| {
                (
                    ResponseError::UnknownTopicOrPartition,
                    format!("unknown topic {name}"),
                )
            }),
        BROKER if name.is_empty() => Ok(ConfigResource::BrokerDefault),
        BROKER => name
            .parse::<i32>()
            .ok()
            .filter(|id| *id >= 0)
            .map(ConfigResource::Broker)
            .ok_or_else(|| {
                (
                    ResponseError::InvalidRequest,
                    format!("{name:?} is not a broker id"),
                )
            }),
        other => Err((
            ResponseError::InvalidRequest,
            format!("resource type {other} is not supported; use 2 (topic) or 4 (broker)"),
        )),
    }
}

/// Checks `set` for `resource`, then (unless `validate_only`) proposes the
/// change as one record.
pub async fn apply(
    ctx: &Ctx,
    resource: ConfigResource,
    replace: bool,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
    validate_only: bool,
) -> Result<(), Failure> {
    let validate = match resource {
        ConfigResource::Topic(_) => validate_entry,
        _ => validate_broker_entry,
    };
    for (k, v) in &set {
        validate(k, Some(v)).map_err(|e| (ResponseError::InvalidConfig, e.0))?;
    }
    if validate_only {
        return Ok(());
    }
    let what = format!("{resource:?}");
    super::propose(
        ctx,
        MetadataCommand::AlterConfigs {
            resource,
            replace,
            set: set.clone(),
            delete: delete.clone(),
        },
    )
    .await?;
    tracing::info!(resource = %what, ?set, ?delete, replace, "configs changed");
    Ok(())
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let body = super::body!(req, AlterConfigs);
        let mut responses = Vec::with_capacity(body.resources.len());
        for r in body.resources {
            let name = r.resource_name.to_string();
            let outcome = async {
                let resource = resource(&ctx, r.resource_type, &name)?;
                let mut set = BTreeMap::new();
                for c in &r.configs {
                    let key = c.name.to_string();
                    let Some(v) = &c.value else {
                        return Err((
                            ResponseError::InvalidRequest,
                            format!("null value for config {key}"),
                        ));
                    };
                    if set.insert(key.clone(), v.to_string()).is_some() {
                        return Err((
                            ResponseError::InvalidRequest,
                            format!("config {key} appears twice"),
                        ));
                    }
                }
                apply(&ctx, resource, true, set, Vec::new(), body.validate_only).await
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
        Reply::Now(ResponseKind::AlterConfigs(
            AlterConfigsResponse::default().with_responses(responses),
        ))
    })
}
