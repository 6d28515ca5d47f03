//! Topic configs: Kafka's topic-level keys, each with its type, its
//! default and the broker keys (`log.*`, …) that supply the default, as
//! Kafka's `LogConfig` defines them. A topic stores only its overrides;
//! [`TopicSettings`] is what applies once the broker's dynamic and static
//! configs have filled in the rest (see [`super::dynamic`]). The same table
//! validates CreateTopics and AlterConfigs entries, so a bad value is
//! refused up front with the key named.

use std::collections::BTreeMap;

/// What a key's value must be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// An integer no lower than this.
    Int(i64),
    /// A fraction between 0 and 1.
    Ratio,
    /// A number no lower than 0, fractions allowed.
    Rate,
    Bool,
    CleanupPolicy,
    TimestampType,
    Compression,
}

/// DescribeConfigs' `config_type` (v3+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One topic config key.
#[derive(Debug)]
pub struct TopicKey {
    pub name: &'static str,
    pub kind: Kind,
    pub ty: ConfigType,
    /// Kafka's default, where neither the topic nor the broker sets one.
    pub default: &'static str,
    /// The broker keys whose value is this topic key's default, in order
    /// of precedence, each with the factor that turns it into the topic
    /// key's unit (`log.retention.hours` is 3,600,000 ms).
    pub synonyms: &'static [(&'static str, i64)],
    pub doc: &'static str,
}

const MAX: &str = "9223372036854775807";

const fn key(
    name: &'static str,
    kind: Kind,
    ty: ConfigType,
    default: &'static str,
    synonyms: &'static [(&'static str, i64)],
    doc: &'static str,
) -> TopicKey {
    TopicKey {
        name,
        kind,
        ty,
        default,
        synonyms,
        doc,
    }
}

use ConfigType as T;
use Kind::*;

/// Every topic config Runnel knows, by name; anything else is INVALID_CONFIG.
#[rustfmt::skip]
pub const KEYS: &[TopicKey] = &[
    key("cleanup.policy", CleanupPolicy, T::List, "delete", &[("log.cleanup.policy", 1)],
        "delete: old segments go by retention.ms and retention.bytes; compact: only the latest record per key is kept; both: compact, then delete by retention."),
    key("compression.type", Compression, T::String, "producer", &[("compression.type", 1)],
        "producer keeps each batch's codec; none, gzip, snappy, lz4 or zstd recompresses every batch to it."),
    key("delete.retention.ms", Int(0), T::Long, "86400000", &[("log.cleaner.delete.retention.ms", 1)],
        "How long a tombstone stays in a compacted topic after cleaning reached it."),
    key("file.delete.delay.ms", Int(0), T::Long, "60000", &[("log.segment.delete.delay.ms", 1)],
        "Accepted for compatibility; Runnel deletes a segment file once no read holds it."),
    key("flush.messages", Int(1), T::Long, "1", &[("log.flush.interval.messages", 1)],
        "1 (Runnel's default): every write is fsynced before it is acknowledged. N > 1: fsync after N messages, Kafka's flush-later behaviour."),
    key("flush.ms", Int(0), T::Long, MAX, &[("log.flush.interval.ms", 1)],
        "With flush.messages > 1: fsync data older than this even if fewer messages arrived."),
    key("index.interval.bytes", Int(0), T::Int, "4096", &[("log.index.interval.bytes", 1)],
        "Bytes of log between entries of the offset index."),
    key("max.compaction.lag.ms", Int(1), T::Long, MAX, &[("log.cleaner.max.compaction.lag.ms", 1)],
        "The longest a record may stay uncompacted."),
    key("max.message.bytes", Int(0), T::Int, "1048588", &[("message.max.bytes", 1)],
        "The largest record batch the topic accepts."),
    key("message.timestamp.after.max.ms", Int(0), T::Long, MAX, &[("log.message.timestamp.after.max.ms", 1)],
        "With CreateTime: the furthest a batch's timestamp may be ahead of the broker's clock."),
    key("message.timestamp.before.max.ms", Int(0), T::Long, MAX, &[("log.message.timestamp.before.max.ms", 1)],
        "With CreateTime: the furthest a batch's timestamp may be behind the broker's clock."),
    key("message.timestamp.type", TimestampType, T::String, "CreateTime", &[("log.message.timestamp.type", 1)],
        "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's clock."),
    key("min.cleanable.dirty.ratio", Ratio, T::Double, "0.5", &[("log.cleaner.min.cleanable.ratio", 1)],
        "The share of a compacted log not yet cleaned above which it is cleaned."),
    key("min.compaction.lag.ms", Int(0), T::Long, "0", &[("log.cleaner.min.compaction.lag.ms", 1)],
        "The shortest a record stays uncompacted."),
    key("min.insync.replicas", Int(1), T::Int, "1", &[("min.insync.replicas", 1)],
        "With acks=all, the replicas that must have a write before it is acknowledged."),
    key("preallocate", Bool, T::Boolean, "false", &[("log.preallocate", 1)],
        "Accepted for compatibility; segments are not preallocated."),
    key("retention.bytes", Int(-1), T::Long, "-1", &[("log.retention.bytes", 1)],
        "The most bytes a partition keeps before its oldest segments go; -1: no limit."),
    key("retention.ms", Int(-1), T::Long, "604800000",
        &[("log.retention.ms", 1), ("log.retention.minutes", 60_000), ("log.retention.hours", 3_600_000)],
        "How long a closed segment is kept after its newest record; -1: forever."),
    key("segment.bytes", Int(14), T::Int, "1073741824", &[("log.segment.bytes", 1)],
        "The size at which a segment file is closed and a new one started."),
    key("segment.index.bytes", Int(4), T::Int, "10485760", &[("log.index.size.max.bytes", 1)],
        "The most bytes of offset index per segment; a segment rolls when its index is full."),
    key("segment.jitter.ms", Int(0), T::Long, "0", &[("log.roll.jitter.ms", 1)],
        "Accepted for compatibility; segments roll at segment.ms exactly."),
    key("segment.ms", Int(1), T::Long, "604800000", &[("log.roll.ms", 1), ("log.roll.hours", 3_600_000)],
        "The age at which a segment is closed even if not full, so that retention and compaction can act on it."),
    key("unclean.leader.election.enable", Bool, T::Boolean, "false", &[("unclean.leader.election.enable", 1)],
        "Elect a replica outside the ISR (losing data) rather than leave a partition offline."),
];

/// The topic key of this name.
pub fn lookup(name: &str) -> Option<&'static TopicKey> {
    KEYS.iter().find(|k| k.name == name)
}

/// The topic key whose default this broker key supplies, with its factor.
pub fn by_synonym(broker_key: &str) -> Option<(&'static TopicKey, i64)> {
    KEYS.iter().find_map(|k| {
        k.synonyms
            .iter()
            .find(|(s, _)| *s == broker_key)
            .map(|(_, f)| (k, *f))
    })
}

/// A config entry that cannot be taken; the message names the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TopicConfigError(pub String);

/// `cleanup.policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

/// `message.timestamp.type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimestampType {
    #[default]
    CreateTime,
    LogAppendTime,
}

/// `compression.type`: keep the producer's codec, or recompress to one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TopicCompression {
    #[default]
    Producer,
    /// `none` or `uncompressed`.
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// Checks one entry as Kafka would at CreateTopics or AlterConfigs: a
/// known key with a value of the right type and range.
pub fn validate_entry(key: &str, value: Option<&str>) -> Result<(), TopicConfigError> {
    let Some(k) = lookup(key) else {
        return Err(TopicConfigError(format!("unknown topic config {key}")));
    };
    let Some(v) = value else {
        return Err(TopicConfigError(format!(
            "null value for topic config {key}"
        )));
    };
    check(key, k.kind, v)
}

/// Checks a value of `kind` for `key` (a topic key or a broker synonym).
pub fn check(key: &str, kind: Kind, v: &str) -> Result<(), TopicConfigError> {
    let bad = |why: &str| {
        Err(TopicConfigError(format!(
            "invalid value {v:?} for {key}: {why}"
        )))
    };
    match kind {
        Int(min) => match v.trim().parse::<i64>() {
            Ok(n) if n >= min => Ok(()),
            _ => bad(&format!("expected an integer >= {min}")),
        },
        Ratio => match v.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(()),
            _ => bad("expected a number between 0 and 1"),
        },
        Rate => match v.trim().parse::<f64>() {
            Ok(r) if r >= 0.0 && !r.is_nan() => Ok(()),
            _ => bad("expected a number >= 0"),
        },
        Bool => match v.trim() {
            "true" | "false" => Ok(()),
            _ => bad("expected true or false"),
        },
        CleanupPolicy => match parse_cleanup_policy(v) {
            Some(_) => Ok(()),
            None => bad("use delete, compact or compact,delete"),
        },
        TimestampType => match parse_timestamp_type(v) {
            Some(_) => Ok(()),
            None => bad("use CreateTime or LogAppendTime"),
        },
        Compression => match parse_compression(v) {
            Some(_) => Ok(()),
            None => bad("use producer, uncompressed, gzip, snappy, lz4 or zstd"),
        },
    }
}

pub fn parse_cleanup_policy(v: &str) -> Option<CleanupPolicy> {
    let mut p = CleanupPolicy::default();
    for part in v.split(',') {
        match part.trim() {
            "delete" => p.delete = true,
            "compact" => p.compact = true,
            _ => return None,
        }
    }
    Some(p)
}

fn parse_timestamp_type(v: &str) -> Option<TimestampType> {
    match v.trim() {
        "CreateTime" => Some(TimestampType::CreateTime),
        "LogAppendTime" => Some(TimestampType::LogAppendTime),
        _ => None,
    }
}

fn parse_compression(v: &str) -> Option<TopicCompression> {
    Some(match v.trim() {
        "producer" => TopicCompression::Producer,
        "none" | "uncompressed" => TopicCompression::None,
        "gzip" => TopicCompression::Gzip,
        "snappy" => TopicCompression::Snappy,
        "lz4" => TopicCompression::Lz4,
        "zstd" => TopicCompression::Zstd,
        _ => return None,
    })
}

/// Every topic config as it applies to one topic on one broker: the
/// topic's overrides, else the broker's configs, else Kafka's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicSettings {
    pub cleanup_policy: CleanupPolicy,
    pub compression: TopicCompression,
    pub delete_retention_ms: i64,
    /// 1: fsync before every acknowledgement; N > 1: after N messages.
    pub flush_messages: u64,
    pub flush_ms: i64,
    pub index_interval_bytes: usize,
    pub max_compaction_lag_ms: i64,
    pub max_message_bytes: usize,
    pub timestamp_type: TimestampType,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: i64,
    pub min_insync_replicas: i32,
    /// -1: no limit.
    pub retention_bytes: i64,
    /// -1: forever.
    pub retention_ms: i64,
    pub segment_bytes: u64,
    pub segment_index_bytes: usize,
    pub segment_ms: i64,
    pub unclean_leader_election_enable: bool,
}

impl Default for TopicSettings {
    /// Kafka's defaults (with Runnel's fsync before ack).
    fn default() -> Self {
        TopicSettings::from_values(|k| k.default.to_string()).0
    }
}

impl TopicSettings {
    /// Reads every key's value from `value` (already resolved through the
    /// topic, broker and default levels). A value that does not parse
    /// (written by an older version, say) is reported and the key's
    /// default applies, so that one bad key never takes a topic down.
    pub fn from_values(
        mut value: impl FnMut(&TopicKey) -> String,
    ) -> (TopicSettings, Vec<TopicConfigError>) {
        let mut errors = Vec::new();
        let mut get = |name: &str| -> String {
            let k = lookup(name).expect("a key of the table");
            let v = value(k);
            match check(k.name, k.kind, &v) {
                Ok(()) => v.trim().to_string(),
                Err(e) => {
                    errors.push(e);
                    k.default.to_string()
                }
            }
        };
        let mut int = |name: &str| -> i64 { get(name).parse().unwrap_or(0) };
        let s = TopicSettings {
            delete_retention_ms: int("delete.retention.ms"),
            flush_messages: int("flush.messages").max(1) as u64,
            flush_ms: int("flush.ms"),
            index_interval_bytes: int("index.interval.bytes") as usize,
            max_compaction_lag_ms: int("max.compaction.lag.ms"),
            max_message_bytes: int("max.message.bytes") as usize,
            timestamp_before_max_ms: int("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: int("message.timestamp.after.max.ms"),
            min_compaction_lag_ms: int("min.compaction.lag.ms"),
            min_insync_replicas: int("min.insync.replicas").min(i64::from(i32::MAX)) as i32,
            retention_bytes: int("retention.bytes"),
            retention_ms: int("retention.ms"),
            segment_bytes: int("segment.bytes").min(i64::from(i32::MAX)) as u64,
            segment_index_bytes: int("segment.index.bytes").min(i64::from(i32::MAX)) as usize,
            segment_ms: int("segment.ms"),
            cleanup_policy: parse_cleanup_policy(&get("cleanup.policy")).unwrap_or_default(),
            compression: parse_compression(&get("compression.type")).unwrap_or_default(),
            timestamp_type: parse_timestamp_type(&get("message.timestamp.type"))
                .unwrap_or_default(),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio").parse().unwrap_or(0.5),
            unclean_leader_election_enable: get("unclean.leader.election.enable") == "true",
        };
        (s, errors)
    }

    /// The settings of a topic with these overrides and nothing set on
    /// any broker (what the controller, which reads no broker's file, uses).
    pub fn from_overrides(
        configs: &BTreeMap<String, String>,
    ) -> (TopicSettings, Vec<TopicConfigError>) {
        TopicSettings::from_values(|k| {
            configs
                .get(k.name)
                .cloned()
                .unwrap_or_else(|| k.default.to_string())
        })
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
    fn entries_are_validated_with_the_key_named() {
        let table: &[(&str, Option<&str>, bool)] = &[
            ("min.insync.replicas", Some("2"), true),
            ("min.insync.replicas", Some("0"), false),
            ("min.insync.replicas", Some("two"), false),
            ("segment.bytes", Some("14"), true),
            ("segment.bytes", Some("13"), false),
            ("retention.ms", Some("-1"), true),
            ("retention.ms", Some("-2"), false),
            ("cleanup.policy", Some("compact,delete"), true),
            ("cleanup.policy", Some("compact, delete"), true),
            ("cleanup.policy", Some("shred"), false),
            ("message.timestamp.type", Some("LogAppendTime"), true),
            ("message.timestamp.type", Some("Now"), false),
            ("unclean.leader.election.enable", Some("false"), true),
            ("unclean.leader.election.enable", Some("yes"), false),
            ("compression.type", Some("zstd"), true),
            ("compression.type", Some("brotli"), false),
            ("min.cleanable.dirty.ratio", Some("0.1"), true),
            ("min.cleanable.dirty.ratio", Some("1.5"), false),
            ("no.such.key", Some("1"), false),
            ("retention.ms", None, false),
        ];
        for &(key, value, ok) in table {
            let got = validate_entry(key, value);
            assert_eq!(got.is_ok(), ok, "{key}={value:?}: {got:?}");
            if let Err(e) = got {
                assert!(e.0.contains(key), "{e} names {key}");
            }
        }
    }

    #[test]
    fn every_default_is_a_valid_value_and_every_synonym_belongs_to_one_key() {
        for k in KEYS {
            check(k.name, k.kind, k.default).unwrap();
            for (s, _) in k.synonyms {
                assert_eq!(by_synonym(s).map(|(t, _)| t.name), Some(k.name));
            }
        }
        let (_, errors) = TopicSettings::from_values(|k| k.default.to_string());
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn overrides_parse_to_typed_values() {
        let (c, errors) = TopicSettings::from_overrides(&map(&[
            ("min.insync.replicas", "2"),
            ("segment.bytes", "1048576"),
            ("segment.ms", "60000"),
            ("retention.ms", "-1"),
            ("retention.bytes", "1000"),
            ("flush.messages", "10"),
            ("cleanup.policy", "compact"),
            ("unclean.leader.election.enable", "true"),
            ("compression.type", "lz4"),
            ("message.timestamp.type", "LogAppendTime"),
        ]));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.min_insync_replicas, 2);
        assert_eq!(c.segment_bytes, 1 << 20);
        assert_eq!(c.segment_ms, 60_000);
        assert_eq!(c.retention_ms, -1);
        assert_eq!(c.retention_bytes, 1000);
        assert_eq!(c.flush_messages, 10);
        assert_eq!(
            c.cleanup_policy,
            CleanupPolicy {
                delete: false,
                compact: true
            }
        );
        assert!(c.unclean_leader_election_enable);
        assert_eq!(c.compression, TopicCompression::Lz4);
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);
        let d = TopicSettings::default();
        assert_eq!(d.retention_ms, 7 * 24 * 3_600_000);
        assert_eq!(d.flush_messages, 1);
        assert!(d.cleanup_policy.delete && !d.cleanup_policy.compact);
    }

    #[test]
    fn a_bad_stored_value_is_reported_and_left_at_the_default() {
        let (c, errors) = TopicSettings::from_overrides(&map(&[
            ("min.insync.replicas", "lots"),
            ("segment.bytes", "1048576"),
        ]));
        assert_eq!(c.min_insync_replicas, 1);
        assert_eq!(c.segment_bytes, 1 << 20);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].0.contains("min.insync.replicas"));
    }
}
