//! Topic configs (Kafka's topic-level keys) as a typed value, parsed once
//! from the strings the metadata image stores. A topic stores only its
//! overrides; each `Option` here is `None` where the broker default
//! applies. The same table validates CreateTopics' entries, so a bad value
//! is refused up front with the key named.

use std::collections::BTreeMap;

/// What a key's value must be.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// An integer no lower than this.
    Int(i64),
    Bool,
    CleanupPolicy,
    TimestampType,
    /// Accepted as stored; Runnel does not act on it (yet).
    Any,
}

/// Every topic config Runnel knows; anything else is INVALID_CONFIG.
const KEYS: &[(&str, Kind)] = &[
    ("cleanup.policy", Kind::CleanupPolicy),
    ("compression.type", Kind::Any),
    ("delete.retention.ms", Kind::Int(0)),
    ("file.delete.delay.ms", Kind::Any),
    ("flush.messages", Kind::Int(0)),
    ("flush.ms", Kind::Int(0)),
    ("index.interval.bytes", Kind::Int(0)),
    ("max.compaction.lag.ms", Kind::Any),
    ("max.message.bytes", Kind::Int(0)),
    ("message.timestamp.type", Kind::TimestampType),
    ("min.cleanable.dirty.ratio", Kind::Any),
    ("min.compaction.lag.ms", Kind::Any),
    ("min.insync.replicas", Kind::Int(1)),
    ("preallocate", Kind::Bool),
    ("retention.bytes", Kind::Int(-1)),
    ("retention.ms", Kind::Int(-1)),
    ("segment.bytes", Kind::Int(14)),
    ("segment.index.bytes", Kind::Any),
    ("segment.jitter.ms", Kind::Any),
    ("segment.ms", Kind::Int(0)),
    ("unclean.leader.election.enable", Kind::Bool),
    ("message.timestamp.before.max.ms", Kind::Any),
    ("message.timestamp.after.max.ms", Kind::Any),
];

/// A topic config entry that cannot be taken; the message names the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TopicConfigError(pub String);

/// `cleanup.policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

/// A topic's overrides, typed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicConfig {
    pub cleanup_policy: Option<CleanupPolicy>,
    pub segment_bytes: Option<u64>,
    pub segment_ms: Option<i64>,
    pub index_interval_bytes: Option<usize>,
    pub max_message_bytes: Option<usize>,
    pub min_insync_replicas: Option<i32>,
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<i64>,
    pub flush_messages: Option<u64>,
    pub unclean_leader_election_enable: Option<bool>,
}

/// Checks one entry as Kafka would at CreateTopics: a known key with a
/// value of the right type and range.
pub fn validate_entry(key: &str, value: Option<&str>) -> Result<(), TopicConfigError> {
    let Some((_, kind)) = KEYS.iter().find(|(k, _)| *k == key) else {
        return Err(TopicConfigError(format!("unknown topic config {key}")));
    };
    let Some(v) = value else {
        return Err(TopicConfigError(format!(
            "null value for topic config {key}"
        )));
    };
    check(key, *kind, v)
}

fn check(key: &str, kind: Kind, v: &str) -> Result<(), TopicConfigError> {
    let ok = match kind {
        Kind::Int(min) => {
            return match v.parse::<i64>() {
                Ok(n) if n >= min => Ok(()),
                _ => Err(TopicConfigError(format!(
                    "invalid value {v:?} for topic config {key}: expected an integer >= {min}"
                ))),
            }
        }
        Kind::Bool => {
            return matches!(v, "true" | "false").then_some(()).ok_or_else(|| {
                TopicConfigError(format!(
                    "invalid value {v:?} for {key}: expected true or false"
                ))
            })
        }
        Kind::CleanupPolicy => {
            return parse_cleanup_policy(v).map(|_| ()).ok_or_else(|| {
                TopicConfigError(format!(
                    "invalid value {v:?} for cleanup.policy: use delete, compact or both"
                ))
            })
        }
        Kind::TimestampType => matches!(v, "CreateTime" | "LogAppendTime"),
        Kind::Any => true,
    };
    ok.then_some(())
        .ok_or_else(|| TopicConfigError(format!("invalid value {v:?} for {key}")))
}

fn parse_cleanup_policy(v: &str) -> Option<CleanupPolicy> {
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

impl TopicConfig {
    /// Parses a topic's stored configs. Entries were validated when they
    /// were written; one that does not parse anyway (written by an older
    /// version, say) is reported in the second value and left at the
    /// broker default, so that one bad key never takes a topic down.
    pub fn parse(configs: &BTreeMap<String, String>) -> (TopicConfig, Vec<TopicConfigError>) {
        let mut c = TopicConfig::default();
        let mut errors = Vec::new();
        for (key, v) in configs {
            let Some((_, kind)) = KEYS.iter().find(|(k, _)| k == key) else {
                errors.push(TopicConfigError(format!("unknown topic config {key}")));
                continue;
            };
            if let Err(e) = check(key, *kind, v) {
                errors.push(e);
                continue;
            }
            let int = || v.parse::<i64>().ok();
            match key.as_str() {
                "cleanup.policy" => c.cleanup_policy = parse_cleanup_policy(v),
                "segment.bytes" => c.segment_bytes = int().map(|n| n as u64),
                "segment.ms" => c.segment_ms = int(),
                "index.interval.bytes" => c.index_interval_bytes = int().map(|n| n as usize),
                "max.message.bytes" => c.max_message_bytes = int().map(|n| n as usize),
                "min.insync.replicas" => {
                    c.min_insync_replicas = int().map(|n| n.min(i64::from(i32::MAX)) as i32)
                }
                "retention.ms" => c.retention_ms = int(),
                "retention.bytes" => c.retention_bytes = int(),
                "flush.messages" => c.flush_messages = int().map(|n| n as u64),
                "unclean.leader.election.enable" => {
                    c.unclean_leader_election_enable = Some(v == "true")
                }
                _ => {}
            }
        }
        (c, errors)
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
    fn stored_configs_parse_to_typed_values() {
        let (c, errors) = TopicConfig::parse(&map(&[
            ("min.insync.replicas", "2"),
            ("segment.bytes", "1048576"),
            ("segment.ms", "60000"),
            ("index.interval.bytes", "4096"),
            ("max.message.bytes", "2000000"),
            ("retention.ms", "-1"),
            ("retention.bytes", "1000"),
            ("flush.messages", "10"),
            ("cleanup.policy", "compact"),
            ("unclean.leader.election.enable", "true"),
            ("compression.type", "lz4"),
        ]));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            c,
            TopicConfig {
                cleanup_policy: Some(CleanupPolicy {
                    delete: false,
                    compact: true
                }),
                segment_bytes: Some(1 << 20),
                segment_ms: Some(60_000),
                index_interval_bytes: Some(4096),
                max_message_bytes: Some(2_000_000),
                min_insync_replicas: Some(2),
                retention_ms: Some(-1),
                retention_bytes: Some(1000),
                flush_messages: Some(10),
                unclean_leader_election_enable: Some(true),
            }
        );
        assert_eq!(
            TopicConfig::parse(&BTreeMap::new()).0,
            TopicConfig::default()
        );
    }

    #[test]
    fn a_bad_stored_value_is_reported_and_left_at_the_default() {
        let (c, errors) = TopicConfig::parse(&map(&[
            ("min.insync.replicas", "lots"),
            ("segment.bytes", "1048576"),
            ("mystery", "1"),
        ]));
        assert_eq!(c.min_insync_replicas, None);
        assert_eq!(c.segment_bytes, Some(1 << 20));
        assert_eq!(errors.len(), 2);
        assert!(
            errors[0].0.contains("min.insync.replicas")
                || errors[1].0.contains("min.insync.replicas")
        );
    }
}
