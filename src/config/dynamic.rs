//! Dynamic configs and how a key's value is found.
//!
//! `runnel configs --alter` (AlterConfigs, IncrementalAlterConfigs) sets
//! broker configs for one broker or as the cluster-wide default, and topic
//! overrides. Each change is a Raft record, so every broker sees the same
//! value and it survives any restart; [`DynamicConfigs`] is their part of
//! the metadata image.
//!
//! A value is looked up as Kafka does: the topic's override; else the
//! broker keys that supply the topic key's default, in their order
//! (`log.retention.ms`, then `.minutes`, then `.hours`), each at the first
//! level that sets it (this broker's dynamic config, the dynamic default,
//! the broker's file); else Kafka's default. Kafka merges the levels into
//! one map before it reads the synonyms, which gives the same order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::topic::{self, check, ConfigType, Kind, TopicConfigError, TopicKey, TopicSettings};

/// The dynamic configs in the metadata image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicConfigs {
    /// The cluster-wide broker default (`--entity-default`).
    pub default: BTreeMap<String, String>,
    /// Per broker (`--entity-name N`).
    pub brokers: BTreeMap<i32, BTreeMap<String, String>>,
}

/// Where a value comes from: DescribeConfigs' `config_source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i8)]
pub enum Source {
    Topic = 1,
    DynamicBroker = 2,
    DynamicDefault = 3,
    Static = 4,
    Default = 5,
}

/// A broker key that may be changed while the cluster runs, beyond the
/// topic keys' synonyms.
pub struct BrokerKey {
    pub name: &'static str,
    pub kind: Kind,
    pub ty: ConfigType,
    pub default: &'static str,
    pub doc: &'static str,
}

/// The log cleaner's broker-wide keys (dynamic in Kafka too).
#[rustfmt::skip]
pub const CLEANER_KEYS: &[BrokerKey] = &[
    BrokerKey { name: "log.cleaner.threads", kind: Kind::Int(0), ty: ConfigType::Int, default: "1",
        doc: "Log cleaner passes that run at once; 0 stops compaction." },
    BrokerKey { name: "log.cleaner.io.max.bytes.per.second", kind: Kind::Rate, ty: ConfigType::Double,
        default: "1.7976931348623157E308",
        doc: "The most bytes per second the log cleaner reads and writes, in all." },
    BrokerKey { name: "log.cleaner.dedupe.buffer.size", kind: Kind::Int(1 << 16), ty: ConfigType::Long,
        default: "134217728",
        doc: "Memory for the cleaner's offset map (latest offset per key); a pass cleans as much of the log as fits." },
    BrokerKey { name: "log.cleaner.backoff.ms", kind: Kind::Int(0), ty: ConfigType::Long, default: "15000",
        doc: "How long the cleaner sleeps when no log needs cleaning." },
];

/// The kind of a broker key that AlterConfigs may set, or why not.
pub fn dynamic_broker_kind(key: &str) -> Result<Kind, TopicConfigError> {
    if let Some((t, _)) = topic::by_synonym(key) {
        return Ok(t.kind);
    }
    if let Some(k) = CLEANER_KEYS.iter().find(|k| k.name == key) {
        return Ok(k.kind);
    }
    if super::is_known_key(key) {
        return Err(TopicConfigError(format!(
            "broker config {key} cannot be changed while the broker runs; set it in server.properties"
        )));
    }
    Err(TopicConfigError(format!("unknown broker config {key}")))
}

/// Checks a dynamic broker config entry.
pub fn validate_broker_entry(key: &str, value: Option<&str>) -> Result<(), TopicConfigError> {
    let kind = dynamic_broker_kind(key)?;
    let Some(v) = value else {
        return Err(TopicConfigError(format!(
            "null value for broker config {key}"
        )));
    };
    check(key, kind, v)
}

/// One level's value of a key, as DescribeConfigs lists synonyms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synonym {
    pub name: String,
    pub value: String,
    pub source: Source,
}

/// A key's value and where it came from; `synonyms` lists every level
/// that sets it, the one that applies first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub value: String,
    pub source: Source,
    pub synonyms: Vec<Synonym>,
}

/// Looks keys up for one broker.
#[derive(Clone, Copy)]
pub struct Resolver<'a> {
    node_id: i32,
    /// What the broker's file and `--override` set.
    static_raw: &'a BTreeMap<String, String>,
    dynamic: &'a DynamicConfigs,
}

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

impl<'a> Resolver<'a> {
    pub fn new(
        node_id: i32,
        static_raw: &'a BTreeMap<String, String>,
        dynamic: &'a DynamicConfigs,
    ) -> Self {
        Resolver {
            node_id,
            static_raw,
            dynamic,
        }
    }

    /// Only what every node can see: the dynamic default (the controller,
    /// which must decide the same way on every node, reads no file).
    pub fn cluster(dynamic: &'a DynamicConfigs) -> Self {
        Resolver {
            node_id: -1,
            static_raw: &EMPTY,
            dynamic,
        }
    }

    fn levels(&self) -> [(Source, &'a BTreeMap<String, String>); 3] {
        [
            (
                Source::DynamicBroker,
                self.dynamic.brokers.get(&self.node_id).unwrap_or(&EMPTY),
            ),
            (Source::DynamicDefault, &self.dynamic.default),
            (Source::Static, self.static_raw),
        ]
    }

    /// Every level that sets the broker key, highest first.
    fn levels_of(&self, key: &str) -> impl Iterator<Item = Synonym> + '_ {
        let key = key.to_string();
        self.levels().into_iter().filter_map(move |(source, map)| {
            map.get(&key).map(|v| Synonym {
                name: key.clone(),
                value: v.clone(),
                source,
            })
        })
    }

    /// A broker key with this default (`None`: no default value).
    pub fn broker(&self, key: &str, default: Option<&str>) -> Resolved {
        let mut synonyms: Vec<Synonym> = self.levels_of(key).collect();
        if let Some(d) = default {
            synonyms.push(Synonym {
                name: key.to_string(),
                value: d.to_string(),
                source: Source::Default,
            });
        }
        let (value, source) = synonyms
            .first()
            .map_or((String::new(), Source::Default), |s| {
                (s.value.clone(), s.source)
            });
        Resolved {
            value,
            source,
            synonyms,
        }
    }

    /// A topic key for a topic with these overrides.
    pub fn topic(&self, k: &TopicKey, overrides: &BTreeMap<String, String>) -> Resolved {
        let mut synonyms = Vec::new();
        if let Some(v) = overrides.get(k.name) {
            synonyms.push(Synonym {
                name: k.name.to_string(),
                value: v.clone(),
                source: Source::Topic,
            });
        }
        let mut value = None;
        for (name, factor) in k.synonyms {
            for s in self.levels_of(name) {
                if value.is_none() {
                    value = Some((scale(&s.value, *factor), s.source));
                }
                synonyms.push(s);
            }
        }
        let (last, factor) = k.synonyms.last().copied().unwrap_or((k.name, 1));
        synonyms.push(Synonym {
            name: last.to_string(),
            value: unscale(k.default, factor),
            source: Source::Default,
        });
        let (value, source) = match (overrides.get(k.name), value) {
            (Some(v), _) => (v.clone(), Source::Topic),
            (None, Some(found)) => found,
            (None, None) => (k.default.to_string(), Source::Default),
        };
        Resolved {
            value,
            source,
            synonyms,
        }
    }

    /// Every topic config of a topic with these overrides, typed.
    pub fn topic_settings(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> (TopicSettings, Vec<TopicConfigError>) {
        TopicSettings::from_values(|k| self.topic(k, overrides).value)
    }

    /// The log cleaner's settings on this broker.
    pub fn cleaner_settings(&self) -> CleanerSettings {
        let get = |name: &str| {
            let k = CLEANER_KEYS
                .iter()
                .find(|k| k.name == name)
                .expect("a cleaner key");
            let v = self.broker(name, Some(k.default)).value;
            match check(name, k.kind, &v) {
                Ok(()) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a cleaner config; the default applies");
                    k.default.to_string()
                }
            }
        };
        CleanerSettings {
            threads: get("log.cleaner.threads").trim().parse().unwrap_or(1),
            io_max_bytes_per_second: get("log.cleaner.io.max.bytes.per.second")
                .trim()
                .parse()
                .unwrap_or(f64::MAX),
            dedupe_buffer_size: get("log.cleaner.dedupe.buffer.size")
                .trim()
                .parse()
                .unwrap_or(1 << 27),
            backoff_ms: get("log.cleaner.backoff.ms")
                .trim()
                .parse()
                .unwrap_or(15_000),
        }
    }
}

/// The log cleaner's broker-wide settings.
#[derive(Clone, Debug, PartialEq)]
pub struct CleanerSettings {
    pub threads: usize,
    pub io_max_bytes_per_second: f64,
    pub dedupe_buffer_size: u64,
    pub backoff_ms: u64,
}

/// A broker key's value in the topic key's unit (hours to ms); a negative
/// time means forever (-1), as Kafka reads `log.retention.hours=-1`.
fn scale(v: &str, factor: i64) -> String {
    if factor == 1 {
        return v.to_string();
    }
    match v.trim().parse::<i64>() {
        Ok(n) if n < 0 => "-1".to_string(),
        Ok(n) => n.saturating_mul(factor).to_string(),
        Err(_) => v.to_string(),
    }
}

fn unscale(v: &str, factor: i64) -> String {
    match v.parse::<i64>() {
        Ok(n) if factor != 1 && n > 0 => (n / factor).to_string(),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_topic_key_is_found_at_the_highest_level_that_sets_it() {
        let retention = topic::lookup("retention.ms").unwrap();
        let mut dynamic = DynamicConfigs::default();
        let file = map(&[("log.retention.hours", "24")]);
        let r = Resolver::new(2, &file, &dynamic);
        let got = r.topic(retention, &BTreeMap::new());
        assert_eq!(
            (got.value.as_str(), got.source),
            ("86400000", Source::Static)
        );
        assert_eq!(
            got.synonyms
                .last()
                .map(|s| (s.name.as_str(), s.value.as_str(), s.source)),
            Some(("log.retention.hours", "168", Source::Default))
        );

        dynamic.default = map(&[("log.retention.hours", "2")]);
        let r = Resolver::new(2, &file, &dynamic);
        let got = r.topic(retention, &BTreeMap::new());
        assert_eq!(
            (got.value.as_str(), got.source),
            ("7200000", Source::DynamicDefault)
        );

        dynamic
            .brokers
            .insert(2, map(&[("log.retention.ms", "1000")]));
        let r = Resolver::new(2, &file, &dynamic);
        let got = r.topic(retention, &BTreeMap::new());
        assert_eq!(
            (got.value.as_str(), got.source),
            ("1000", Source::DynamicBroker)
        );
        // Another broker does not see broker 2's own config.
        let got = Resolver::new(3, &file, &dynamic).topic(retention, &BTreeMap::new());
        assert_eq!(got.source, Source::DynamicDefault);

        let got = r.topic(retention, &map(&[("retention.ms", "5")]));
        assert_eq!((got.value.as_str(), got.source), ("5", Source::Topic));
        let sources: Vec<Source> = got.synonyms.iter().map(|s| s.source).collect();
        assert_eq!(
            sources,
            [
                Source::Topic,
                Source::DynamicBroker,
                Source::DynamicDefault,
                Source::Static,
                Source::Default
            ]
        );
    }

    #[test]
    fn milliseconds_beat_hours_whatever_their_level_as_in_kafka() {
        let retention = topic::lookup("retention.ms").unwrap();
        let dynamic = DynamicConfigs {
            default: map(&[("log.retention.hours", "1")]),
            ..Default::default()
        };
        let file = map(&[("log.retention.ms", "5000")]);
        let got = Resolver::new(1, &file, &dynamic).topic(retention, &BTreeMap::new());
        assert_eq!((got.value.as_str(), got.source), ("5000", Source::Static));
        let file = map(&[("log.retention.hours", "-1")]);
        let got =
            Resolver::new(1, &file, &DynamicConfigs::default()).topic(retention, &BTreeMap::new());
        assert_eq!(got.value, "-1");
    }

    #[test]
    fn only_dynamic_broker_keys_can_be_altered() {
        assert!(validate_broker_entry("log.retention.ms", Some("1000")).is_ok());
        assert!(validate_broker_entry("min.insync.replicas", Some("2")).is_ok());
        assert!(validate_broker_entry("log.cleaner.threads", Some("2")).is_ok());
        for (key, value) in [
            ("log.retention.ms", Some("soon")),
            ("node.id", Some("4")),
            ("no.such.key", Some("1")),
            ("log.cleanup.policy", None),
        ] {
            let e = validate_broker_entry(key, value).unwrap_err();
            assert!(e.0.contains(key), "{e}");
        }
    }

    #[test]
    fn typed_settings_follow_the_levels() {
        let dynamic = DynamicConfigs {
            default: map(&[
                ("min.insync.replicas", "2"),
                ("log.cleanup.policy", "compact"),
            ]),
            brokers: [(1, map(&[("log.cleaner.threads", "3")]))].into(),
        };
        let file = map(&[("log.segment.bytes", "1048576")]);
        let r = Resolver::new(1, &file, &dynamic);
        let (s, errors) = r.topic_settings(&map(&[("retention.bytes", "10")]));
        assert!(errors.is_empty());
        assert_eq!(s.min_insync_replicas, 2);
        assert!(s.cleanup_policy.compact && !s.cleanup_policy.delete);
        assert_eq!(s.segment_bytes, 1 << 20);
        assert_eq!(s.retention_bytes, 10);
        assert_eq!(r.cleaner_settings().threads, 3);
        let cluster = Resolver::cluster(&dynamic);
        assert_eq!(
            cluster.topic_settings(&BTreeMap::new()).0.segment_bytes,
            1 << 30
        );
    }
}
