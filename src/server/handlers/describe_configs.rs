//! DescribeConfigs (32), v1-4: a topic's configs (every topic key, with the
//! level each value comes from), this broker's configs, or the cluster-wide
//! dynamic broker default; synonyms and documentation when asked.
//!
//! As in Kafka, a broker describes only itself: a broker resource naming
//! another broker id is INVALID_REQUEST (clients send it to that broker).

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsResponse, ResponseKind};

use crate::config::dynamic::{Resolved, Resolver, Source, CLEANER_KEYS};
use crate::config::topic::{self, ConfigType};
use crate::protocol::Request;
use crate::server::{Ctx, Reply};

pub const TOPIC: i8 = 2;
pub const BROKER: i8 = 4;

/// One entry as the response carries it.
struct Entry<'a> {
    name: &'a str,
    resolved: Resolved,
    read_only: bool,
    ty: Option<ConfigType>,
    doc: &'a str,
}

/// What the request asked to see beyond the values.
#[derive(Clone, Copy)]
struct Detail {
    synonyms: bool,
    documentation: bool,
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let body = super::body!(req, DescribeConfigs);
        let image = ctx.controller.image();
        let resolver = Resolver::new(ctx.config.node_id, &ctx.config.raw, &image.configs);
        let detail = Detail {
            synonyms: body.include_synonyms,
            documentation: body.include_documentation,
        };
        let mut results = Vec::with_capacity(body.resources.len());
        for r in body.resources {
            let name = r.resource_name.to_string();
            let wanted: Option<BTreeSet<String>> = r
                .configuration_keys
                .filter(|k| !k.is_empty())
                .map(|k| k.iter().map(|s| s.to_string()).collect());
            let want = |k: &str| wanted.as_ref().is_none_or(|w| w.contains(k));
            let out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries = match r.resource_type {
                TOPIC => match image.topic(&name) {
                    Some(t) => Ok(topic::KEYS
                        .iter()
                        .filter(|k| want(k.name))
                        .map(|k| Entry {
                            name: k.name,
                            resolved: resolver.topic(k, &t.configs),
                            read_only: false,
                            ty: Some(k.ty),
                            doc: k.doc,
                        })
                        .collect::<Vec<_>>()),
                    None => Err((
                        ResponseError::UnknownTopicOrPartition,
                        format!("unknown topic {name}"),
                    )),
                },
                BROKER if name.is_empty() => Ok(image
                    .configs
                    .default
                    .iter()
                    .filter(|(k, _)| want(k))
                    .map(|(k, v)| Entry {
                        name: k,
                        resolved: Resolved {
                            value: v.clone(),
                            source: Source::DynamicDefault,
                            synonyms: vec![crate::config::dynamic::Synonym {
                                name: k.clone(),
                                value: v.clone(),
                                source: Source::DynamicDefault,
                            }],
                        },
                        read_only: false,
                        ty: broker_key_type(k),
                        doc: "",
                    })
                    .collect()),
                BROKER if name == ctx.config.node_id.to_string() => {
                    Ok(broker_entries(&resolver, &want))
                }
                BROKER => Err((
                    ResponseError::InvalidRequest,
                    format!(
                        "unexpected broker id {name:?}: this is broker {}; send the request to broker {name}, or name no broker for the cluster default",
                        ctx.config.node_id
                    ),
                )),
                other => Err((
                    ResponseError::InvalidRequest,
                    format!("resource type {other} is not supported; use 2 (topic) or 4 (broker)"),
                )),
            };
            results.push(match entries {
                Ok(entries) => {
                    out.with_configs(entries.into_iter().map(|e| encode(e, detail)).collect())
                }
                Err((code, msg)) => out
                    .with_error_code(code.code())
                    .with_error_message(Some(super::str(msg))),
            });
        }
        Reply::Now(ResponseKind::DescribeConfigs(
            DescribeConfigsResponse::default().with_results(results),
        ))
    })
}

fn encode(e: Entry<'_>, detail: Detail) -> DescribeConfigsResourceResult {
    // A password or a private key is never sent, as in Kafka: null value,
    // `is_sensitive` set.
    let sensitive = crate::config::security::is_sensitive(e.name);
    let value =
        (!e.resolved.value.is_empty() && !sensitive).then(|| super::str(e.resolved.value.clone()));
    let synonyms = if detail.synonyms {
        e.resolved
            .synonyms
            .iter()
            .map(|s| {
                DescribeConfigsSynonym::default()
                    .with_name(super::str(s.name.clone()))
                    .with_value((!sensitive).then(|| super::str(s.value.clone())))
                    .with_source(s.source as i8)
            })
            .collect()
    } else {
        Vec::new()
    };
    DescribeConfigsResourceResult::default()
        .with_name(super::str(e.name))
        .with_value(value)
        .with_read_only(e.read_only)
        .with_config_source(e.resolved.source as i8)
        .with_is_sensitive(sensitive)
        .with_synonyms(synonyms)
        .with_config_type(e.ty.map_or(0, |t| t as i8))
        .with_documentation((detail.documentation && !e.doc.is_empty()).then(|| super::str(e.doc)))
}

/// The type of a dynamic broker key, where known.
fn broker_key_type(key: &str) -> Option<ConfigType> {
    if let Some((t, _)) = topic::by_synonym(key) {
        return Some(t.ty);
    }
    CLEANER_KEYS.iter().find(|k| k.name == key).map(|k| k.ty)
}

/// Every broker key: those read from the file (read-only, bar the
/// topic defaults), the topic keys' broker synonyms and the cleaner's.
fn broker_entries<'a>(resolver: &Resolver<'_>, want: &dyn Fn(&str) -> bool) -> Vec<Entry<'a>> {
    let mut out: Vec<Entry<'a>> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut push = |out: &mut Vec<Entry<'a>>, e: Entry<'a>| {
        if seen.insert(e.name) && want(e.name) {
            out.push(e);
        }
    };
    for (name, default) in crate::config::static_keys() {
        let dynamic = broker_key_type(name).is_some();
        let ty = broker_key_type(name).or_else(|| guess_type(default));
        push(
            &mut out,
            Entry {
                name,
                resolved: resolver.broker(name, (!default.is_empty()).then_some(default)),
                read_only: !dynamic,
                ty,
                doc: "",
            },
        );
    }
    for k in topic::KEYS {
        for (i, (name, factor)) in k.synonyms.iter().enumerate() {
            // Only the last synonym carries the default (`log.retention.hours`).
            let default = (i + 1 == k.synonyms.len()).then(|| match k.default.parse::<i64>() {
                Ok(n) if *factor != 1 && n > 0 => (n / factor).to_string(),
                _ => k.default.to_string(),
            });
            push(
                &mut out,
                Entry {
                    name,
                    resolved: resolver.broker(name, default.as_deref()),
                    read_only: false,
                    ty: Some(k.ty),
                    doc: k.doc,
                },
            );
        }
    }
    for k in CLEANER_KEYS {
        push(
            &mut out,
            Entry {
                name: k.name,
                resolved: resolver.broker(k.name, Some(k.default)),
                read_only: false,
                ty: Some(k.ty),
                doc: k.doc,
            },
        );
    }
    out.sort_by_key(|e| e.name);
    out
}

fn guess_type(default: &str) -> Option<ConfigType> {
    if default == "true" || default == "false" {
        Some(ConfigType::Boolean)
    } else if default.parse::<i64>().is_ok() {
        Some(ConfigType::Long)
    } else {
        Some(ConfigType::String)
    }
}
