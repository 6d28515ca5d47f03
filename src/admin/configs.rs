//! `runnel configs`: describe and change topic and broker configs, with
//! kafka-configs.sh's flags, output and messages. Changes go through
//! IncrementalAlterConfigs; a broker's own configs are described by that
//! broker, as Kafka's admin client does.

use std::fmt::Write as _;

use clap::{ArgGroup, Args};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;

use super::client::{Client, ClientConfig};
use super::{Error, Result};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const SET: i8 = 0;
const DELETE: i8 = 1;

/// `kafka-configs.sh` options.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("action").required(true).args(["describe", "alter"])))]
pub struct ConfigsArgs {
    /// The Kafka server(s) to connect to, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "SERVERS")]
    pub bootstrap_server: String,
    /// topics or brokers.
    #[arg(long, value_name = "TYPE")]
    pub entity_type: Option<String>,
    /// The topic name or broker id; without it, every topic or broker.
    #[arg(long, value_name = "NAME")]
    pub entity_name: Option<String>,
    /// The cluster-wide default for brokers (with --entity-type brokers).
    #[arg(long)]
    pub entity_default: bool,
    /// Shorthand for --entity-type topics --entity-name TOPIC.
    #[arg(long)]
    pub topic: Option<String>,
    /// Shorthand for --entity-type brokers --entity-name ID.
    #[arg(long, value_name = "ID")]
    pub broker: Option<String>,
    /// Shorthand for --entity-type brokers --entity-default.
    #[arg(long)]
    pub broker_defaults: bool,
    /// List the configs of the entity.
    #[arg(long)]
    pub describe: bool,
    /// Change the configs of the entity.
    #[arg(long)]
    pub alter: bool,
    /// With --describe: every config, not only the overrides.
    #[arg(long)]
    pub all: bool,
    /// Configs to set: k1=v1,k2=[v1,v2,v2],k3=v3.
    #[arg(long, value_name = "CONFIGS", allow_hyphen_values = true)]
    pub add_config: Option<String>,
    /// A properties file of configs to set.
    #[arg(long, value_name = "FILE")]
    pub add_config_file: Option<std::path::PathBuf>,
    /// Configs to remove: k1,k2.
    #[arg(long, value_name = "NAMES")]
    pub delete_config: Option<String>,
}

/// What a command is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    Topic(String),
    Broker(i32),
    BrokerDefault,
}

impl Entity {
    fn resource(&self) -> (i8, String) {
        match self {
            Entity::Topic(t) => (TOPIC, t.clone()),
            Entity::Broker(id) => (BROKER, id.to_string()),
            Entity::BrokerDefault => (BROKER, String::new()),
        }
    }
}

/// One config of a DescribeConfigs answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub sensitive: bool,
    pub read_only: bool,
    /// (source, name, value), the one that applies first.
    pub synonyms: Vec<(i8, String, Option<String>)>,
}

/// Kafka's names for DescribeConfigs sources.
pub fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        _ => "UNKNOWN",
    }
}

/// DescribeConfigs of one entity, with synonyms. A broker's own configs
/// are asked of that broker.
pub async fn describe(client: &mut Client, entity: &Entity) -> Result<Vec<ConfigEntry>> {
    let (ty, name) = entity.resource();
    let req = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(ty)
            .with_resource_name(StrBytes::from_string(name))
            .with_configuration_keys(None)]);
    let resp = match entity {
        Entity::Broker(id) => client.broker_connection(*id).await?.send(&req).await?,
        _ => client.send_any(&req).await?,
    };
    let r = resp
        .results
        .into_iter()
        .next()
        .ok_or_else(|| Error::Metadata("DescribeConfigs answered no resource".into()))?;
    if r.error_code != 0 {
        return Err(Error::kafka(r.error_code, r.error_message.as_deref()));
    }
    Ok(r.configs
        .into_iter()
        .map(|c| ConfigEntry {
            name: c.name.to_string(),
            value: c.value.map(|v| v.to_string()),
            source: c.config_source,
            sensitive: c.is_sensitive,
            read_only: c.read_only,
            synonyms: c
                .synonyms
                .into_iter()
                .map(|s| (s.source, s.name.to_string(), s.value.map(|v| v.to_string())))
                .collect(),
        })
        .collect())
}

/// IncrementalAlterConfigs of one entity: `set`, then `delete`.
pub async fn alter(
    client: &mut Client,
    entity: &Entity,
    set: &[(String, String)],
    delete: &[String],
) -> Result<()> {
    let (ty, name) = entity.resource();
    let mut configs: Vec<AlterableConfig> = set
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(SET)
                .with_value(Some(StrBytes::from_string(v.clone())))
        })
        .collect();
    configs.extend(delete.iter().map(|k| {
        AlterableConfig::default()
            .with_name(StrBytes::from_string(k.clone()))
            .with_config_operation(DELETE)
            .with_value(None)
    }));
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(ty)
            .with_resource_name(StrBytes::from_string(name))
            .with_configs(configs),
    ]);
    let resp = match entity {
        Entity::Broker(id) => client.broker_connection(*id).await?.send(&req).await?,
        _ => client.send_any(&req).await?,
    };
    let r =
        resp.responses.into_iter().next().ok_or_else(|| {
            Error::Metadata("IncrementalAlterConfigs answered no resource".into())
        })?;
    if r.error_code != 0 {
        return Err(Error::kafka(r.error_code, r.error_message.as_deref()));
    }
    Ok(())
}

/// `--add-config`: `k=v` pairs split at commas outside square brackets;
/// brackets hold a list value (`cleanup.policy=[compact,delete]`).
pub fn parse_add_config(s: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut items = Vec::new();
    let (mut depth, mut cur) = (0i32, String::new());
    for ch in s.chars() {
        match ch {
            '[' => {
                depth += 1;
                cur.push(ch);
            }
            ']' => {
                depth -= 1;
                cur.push(ch);
            }
            ',' if depth <= 0 => items.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    items.push(cur);
    let bad = || {
        "requirement failed: Invalid entity config: all configs to be added must be in the format \"key=val\" or \"key=[val1,val2]\".".to_string()
    };
    let mut out = Vec::new();
    for item in items.iter().filter(|i| !i.trim().is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(bad)?;
        if k.trim().is_empty() {
            return Err(bad());
        }
        let v: String = v.chars().filter(|c| *c != '[' && *c != ']').collect();
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// The entity (or entities, for all topics or brokers) the flags name.
fn entity_of(args: &ConfigsArgs) -> std::result::Result<Option<Entity>, String> {
    let (ty, name, default) = if let Some(t) = &args.topic {
        ("topics".to_string(), Some(t.clone()), false)
    } else if let Some(b) = &args.broker {
        ("brokers".to_string(), Some(b.clone()), false)
    } else if args.broker_defaults {
        ("brokers".to_string(), None, true)
    } else {
        let ty = args
            .entity_type
            .clone()
            .ok_or("At least one of --entity-type, --topic, --broker or --broker-defaults must be specified")?;
        (ty, args.entity_name.clone(), args.entity_default)
    };
    match ty.as_str() {
        "topics" | "topic" => {
            if default {
                return Err("--entity-default is not valid for topics".into());
            }
            Ok(name.map(Entity::Topic))
        }
        "brokers" | "broker" => match (name, default) {
            (Some(_), true) => Err("--entity-name and --entity-default cannot both be given".into()),
            (Some(n), false) => n
                .trim()
                .parse::<i32>()
                .map(|id| Some(Entity::Broker(id)))
                .map_err(|_| format!("The entity name for brokers must be a valid integer broker id, but it is: {n}")),
            (None, true) => Ok(Some(Entity::BrokerDefault)),
            (None, false) => Ok(None),
        },
        other => Err(format!(
            "Invalid entity type {other}, the entity type must be one of topics, brokers (users, clients, ips and broker-loggers are not supported)"
        )),
    }
}

/// One entry line of `--describe`.
pub fn entry_line(e: &ConfigEntry) -> String {
    let value = |v: &Option<String>, sensitive: bool| {
        if sensitive {
            "null".to_string()
        } else {
            v.clone().unwrap_or_else(|| "null".to_string())
        }
    };
    let synonyms = e
        .synonyms
        .iter()
        .map(|(s, n, v)| format!("{}:{n}={}", source_name(*s), value(v, e.sensitive)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "  {}={} sensitive={} synonyms={{{synonyms}}}",
        e.name,
        value(&e.value, e.sensitive),
        e.sensitive
    )
}

fn describe_header(entity: &Entity, all: bool) -> String {
    let kind = if all { "All" } else { "Dynamic" };
    match entity {
        Entity::Topic(t) => format!("{kind} configs for topic {t} are:"),
        Entity::Broker(id) => format!("{kind} configs for broker {id} are:"),
        Entity::BrokerDefault => "Default configs for brokers in the cluster are:".into(),
    }
}

/// The entries `--describe` shows: all with `--all`, else the overrides
/// at the entity's own level.
pub fn shown(entity: &Entity, entries: Vec<ConfigEntry>, all: bool) -> Vec<ConfigEntry> {
    let own = match entity {
        Entity::Topic(_) => 1,
        Entity::Broker(_) => 2,
        Entity::BrokerDefault => 3,
    };
    entries
        .into_iter()
        .filter(|e| all || e.source == own)
        .collect()
}

fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("Error while executing config command : {msg}");
    1
}

pub async fn run(args: ConfigsArgs) -> i32 {
    let entity = match entity_of(&args) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let config = match ClientConfig::from_bootstrap(&args.bootstrap_server) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut client = match Client::connect(config).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if args.describe {
        let entities = match entity {
            Some(e) => vec![e],
            None if args.topic.is_none()
                && matches!(args.entity_type.as_deref(), Some("topics" | "topic")) =>
            {
                match client.metadata(None, false).await {
                    Ok(mut topics) => {
                        topics.sort_by(|a, b| a.name.cmp(&b.name));
                        topics.into_iter().map(|t| Entity::Topic(t.name)).collect()
                    }
                    Err(e) => return fail(e),
                }
            }
            None => {
                let mut v: Vec<Entity> = client
                    .brokers()
                    .keys()
                    .map(|id| Entity::Broker(*id))
                    .collect();
                v.push(Entity::BrokerDefault);
                v
            }
        };
        let mut out = String::new();
        for e in &entities {
            match describe(&mut client, e).await {
                Ok(entries) => {
                    let _ = writeln!(out, "{}", describe_header(e, args.all));
                    for c in shown(e, entries, args.all) {
                        let _ = writeln!(out, "{}", entry_line(&c));
                    }
                }
                Err(err) => {
                    print!("{out}");
                    return fail(err);
                }
            }
        }
        print!("{out}");
        return 0;
    }
    // --alter
    let Some(entity) = entity else {
        eprintln!("An entity name must be specified with --alter of topics or brokers (or --entity-default for brokers)");
        return 1;
    };
    let mut set = match args.add_config.as_deref().map(parse_add_config).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if let Some(path) = &args.add_config_file {
        match std::fs::read_to_string(path) {
            Ok(text) => set.extend(crate::config::parse_properties(&text)),
            Err(e) => return fail(format!("cannot read {}: {e}", path.display())),
        }
    }
    let delete: Vec<String> = args
        .delete_config
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if set.is_empty() && delete.is_empty() {
        eprintln!("At least one of --add-config, --add-config-file or --delete-config must be specified with --alter");
        return 1;
    }
    if let Some((k, _)) = set.iter().find(|(k, _)| delete.contains(k)) {
        eprintln!("Config {k} appears in both --add-config and --delete-config");
        return 1;
    }
    // As Kafka's tool: only overrides that exist can be deleted.
    if !delete.is_empty() {
        let existing = match describe(&mut client, &entity).await {
            Ok(e) => shown(&entity, e, false),
            Err(e) => return fail(e),
        };
        let missing: Vec<&str> = delete
            .iter()
            .filter(|k| !existing.iter().any(|e| &e.name == *k))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return fail(format!("Invalid config(s): {}", missing.join(",")));
        }
    }
    match alter(&mut client, &entity, &set, &delete).await {
        Ok(()) => {
            match &entity {
                Entity::Topic(t) => println!("Completed updating config for topic {t}."),
                Entity::Broker(id) => println!("Completed updating config for broker {id}."),
                Entity::BrokerDefault => {
                    println!("Completed updating default config for brokers in the cluster.")
                }
            }
            0
        }
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_config_splits_outside_brackets() {
        assert_eq!(
            parse_add_config(
                "retention.ms=1000,cleanup.policy=[compact,delete], segment.bytes = 2048"
            )
            .unwrap(),
            vec![
                ("retention.ms".to_string(), "1000".to_string()),
                ("cleanup.policy".to_string(), "compact,delete".to_string()),
                ("segment.bytes".to_string(), "2048".to_string()),
            ]
        );
        assert!(parse_add_config("retention.ms")
            .unwrap_err()
            .contains("key=val"));
        assert!(parse_add_config("=5").is_err());
    }

    #[test]
    fn describe_lines_are_kafkas() {
        let e = ConfigEntry {
            name: "retention.ms".into(),
            value: Some("1000".into()),
            source: 1,
            sensitive: false,
            read_only: false,
            synonyms: vec![
                (1, "retention.ms".into(), Some("1000".into())),
                (5, "log.retention.hours".into(), Some("168".into())),
            ],
        };
        assert_eq!(
            entry_line(&e),
            "  retention.ms=1000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=1000, DEFAULT_CONFIG:log.retention.hours=168}"
        );
        let t = Entity::Topic("orders".into());
        assert_eq!(
            describe_header(&t, false),
            "Dynamic configs for topic orders are:"
        );
        assert_eq!(
            describe_header(&Entity::Broker(2), true),
            "All configs for broker 2 are:"
        );
        let default = ConfigEntry {
            source: 5,
            ..e.clone()
        };
        assert_eq!(
            shown(&t, vec![e.clone(), default.clone()], false),
            vec![e.clone()]
        );
        assert_eq!(shown(&t, vec![e.clone(), default.clone()], true).len(), 2);
    }

    fn args(list: &[&str]) -> ConfigsArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            a: ConfigsArgs,
        }
        let mut v = vec!["configs", "--bootstrap-server", "x:1"];
        v.extend_from_slice(list);
        P::try_parse_from(v).unwrap().a
    }

    #[test]
    fn entities_from_flags() {
        let e = |l: &[&str]| entity_of(&args(l));
        assert_eq!(
            e(&[
                "--entity-type",
                "topics",
                "--entity-name",
                "t",
                "--describe"
            ]),
            Ok(Some(Entity::Topic("t".into())))
        );
        assert_eq!(
            e(&["--entity-type", "brokers", "--entity-default", "--describe"]),
            Ok(Some(Entity::BrokerDefault))
        );
        assert_eq!(
            e(&[
                "--entity-type",
                "brokers",
                "--entity-name",
                "2",
                "--describe"
            ]),
            Ok(Some(Entity::Broker(2)))
        );
        assert_eq!(
            e(&["--topic", "t", "--describe"]),
            Ok(Some(Entity::Topic("t".into())))
        );
        assert_eq!(e(&["--entity-type", "brokers", "--describe"]), Ok(None));
        assert!(e(&[
            "--entity-type",
            "brokers",
            "--entity-name",
            "x",
            "--describe"
        ])
        .is_err());
        assert!(e(&["--entity-type", "users", "--describe"]).is_err());
        assert!(e(&["--describe"]).is_err());
    }
}
