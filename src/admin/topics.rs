//! `topics`: what `kafka-topics.sh` does, over CreateTopics, DeleteTopics,
//! CreatePartitions and Metadata, with its output format.

use std::fmt::Write as _;

use uuid::Uuid;

use super::client::{Client, NewTopic, TopicInfo};
use super::Error;

/// A failure of a topics command, split the way `TopicCommand` reports it:
/// argument problems go to stderr as they are, everything else to stdout
/// behind "Error while executing topic command : ".
#[derive(Debug)]
pub(crate) enum TopicsError {
    Argument(String),
    Command(String),
}

impl From<Error> for TopicsError {
    fn from(e: Error) -> Self {
        TopicsError::Command(e.to_string())
    }
}

/// Kafka's `Uuid.toString()`: URL-safe base64 of the 16 bytes, no padding.
pub(crate) fn kafka_uuid_string(id: &Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 0x3f;
            out.push(ALPHABET[idx as usize] as char);
        }
    }
    out
}

/// Kafka's `IncludeList`: commas mean alternation, spaces and surrounding
/// quotes are dropped, and the pattern must match the whole topic name.
pub(crate) fn include_list(pattern: &str) -> Result<regex::Regex, String> {
    let cleaned = pattern
        .trim()
        .replace(',', "|")
        .replace(' ', "")
        .trim_start_matches(['"', '\''])
        .trim_end_matches(['"', '\''])
        .to_owned();
    regex::Regex::new(&format!("^(?:{cleaned})$"))
        .map_err(|e| format!("Invalid topic pattern '{pattern}': {e}"))
}

/// Kafka-style `--config k=v` parsing: exactly one '=' with optional
/// blanks around it.
pub(crate) fn parse_configs(items: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in items {
        let parts: Vec<&str> = item.split('=').collect();
        if parts.len() != 2 {
            return Err("requirement failed: Invalid topic config: all configs to be added must be in the format \"key=val\".".to_owned());
        }
        out.push((parts[0].trim().to_owned(), parts[1].trim().to_owned()));
    }
    Ok(out)
}

/// The `Topic: ...` header line of `--describe` (without newline).
pub(crate) fn describe_topic_line(t: &TopicInfo, configs: &[(String, String)]) -> String {
    let mut s = format!("Topic: {}", t.name);
    if !t.id.is_nil() {
        let _ = write!(s, "\tTopicId: {}", kafka_uuid_string(&t.id));
    }
    // Kafka takes the replication factor from the first partition.
    let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
    let configs = configs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let _ = write!(
        s,
        "\tPartitionCount: {}\tReplicationFactor: {rf}\tConfigs: {configs}",
        t.partitions.len()
    );
    s
}

/// One partition line of `--describe` (without newline).
pub(crate) fn describe_partition_lines(t: &TopicInfo) -> Vec<String> {
    let join = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    t.partitions
        .iter()
        .map(|p| {
            format!(
                "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
                t.name,
                p.partition,
                p.leader
                    .map_or_else(|| "none".to_owned(), |l| l.to_string()),
                join(&p.replicas),
                join(&p.isr)
            )
        })
        .collect()
}

/// All topic names, sorted; internal ones included as Kafka's tool does
/// unless --exclude-internal.
async fn topic_names(client: &mut Client, exclude_internal: bool) -> Result<Vec<TopicInfo>, Error> {
    let mut topics: Vec<TopicInfo> = client
        .metadata(None, false)
        .await?
        .into_iter()
        .filter(|t| t.error_code == 0 && !(exclude_internal && t.is_internal))
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(topics)
}

/// Topics matching `--topic` (all if absent), failing like Kafka's
/// `ensureTopicExists` when a named topic is missing and `require` holds.
async fn matching_topics(
    client: &mut Client,
    topic: Option<&str>,
    exclude_internal: bool,
    require: bool,
) -> Result<Vec<TopicInfo>, TopicsError> {
    let all = topic_names(client, exclude_internal).await?;
    let found: Vec<TopicInfo> = match topic {
        Some(pattern) => {
            let re = include_list(pattern).map_err(TopicsError::Argument)?;
            all.into_iter().filter(|t| re.is_match(&t.name)).collect()
        }
        None => all,
    };
    if let Some(name) = topic.filter(|n| !n.is_empty()) {
        if require && found.is_empty() {
            return Err(TopicsError::Argument(format!(
                "Topic '{name}' does not exist as expected"
            )));
        }
    }
    Ok(found)
}

pub(crate) async fn create(
    client: &mut Client,
    topic: &NewTopic,
    if_not_exists: bool,
    out: &mut String,
) -> Result<(), TopicsError> {
    if topic.name.contains('.') || topic.name.contains('_') {
        out.push_str("WARNING: Due to limitations in metric names, topics with a period ('.') or underscore ('_') could collide. To avoid issues it is best to use either, but not both.\n");
    }
    let results = client.create_topics(std::slice::from_ref(topic)).await?;
    for (name, r) in results {
        match r {
            Ok(()) => {
                let _ = writeln!(out, "Created topic {name}.");
            }
            // TOPIC_ALREADY_EXISTS with --if-not-exists is silent success.
            Err(e) if if_not_exists && e.code() == Some(36) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub(crate) async fn list(
    client: &mut Client,
    topic: Option<&str>,
    exclude_internal: bool,
    out: &mut String,
) -> Result<(), TopicsError> {
    let topics = matching_topics(client, topic, exclude_internal, false).await?;
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    // Kafka prints the names joined by newlines with println, so an empty
    // list still prints one empty line.
    let _ = writeln!(out, "{}", names.join("\n"));
    Ok(())
}

pub(crate) async fn describe(
    client: &mut Client,
    topic: Option<&str>,
    if_exists: bool,
    exclude_internal: bool,
    out: &mut String,
) -> Result<(), TopicsError> {
    let topics = matching_topics(client, topic, exclude_internal, !if_exists).await?;
    for t in &topics {
        // Every config not at Kafka's default (the topic's overrides and
        // what the broker's file sets), as Kafka's tool shows them.
        let configs: Vec<(String, String)> =
            super::configs::describe(client, &super::configs::Entity::Topic(t.name.clone()))
                .await
                .map_err(|e| TopicsError::Command(e.to_string()))?
                .into_iter()
                .filter(|e| e.source != 5)
                .map(|e| (e.name, e.value.unwrap_or_default()))
                .collect();
        let _ = writeln!(out, "{}", describe_topic_line(t, &configs));
        for line in describe_partition_lines(t) {
            let _ = writeln!(out, "{line}");
        }
    }
    Ok(())
}

pub(crate) async fn alter(
    client: &mut Client,
    topic: Option<&str>,
    partitions: i32,
    if_exists: bool,
    exclude_internal: bool,
) -> Result<(), TopicsError> {
    let topics = matching_topics(client, topic, exclude_internal, !if_exists).await?;
    for t in &topics {
        client.create_partitions(&t.name, partitions).await?;
    }
    Ok(())
}

pub(crate) async fn delete(
    client: &mut Client,
    topic: Option<&str>,
    if_exists: bool,
    exclude_internal: bool,
) -> Result<(), TopicsError> {
    let topics = matching_topics(client, topic, exclude_internal, !if_exists).await?;
    if topics.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = topics.into_iter().map(|t| t.name).collect();
    for (_, r) in client.delete_topics(&names).await? {
        r?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::client::PartitionInfo;

    #[test]
    fn uuid_strings_match_kafka() {
        // Uuid.ZERO_UUID and Uuid.METADATA_TOPIC_ID (0, 1) in Kafka.
        assert_eq!(kafka_uuid_string(&Uuid::nil()), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(
            kafka_uuid_string(&Uuid::from_u64_pair(0, 1)),
            "AAAAAAAAAAAAAAAAAAAAAQ"
        );
        // All-ones exercises the two URL-safe characters.
        assert_eq!(
            kafka_uuid_string(&Uuid::from_u128(u128::MAX)),
            "_____________________w"
        );
        assert_eq!(
            kafka_uuid_string(&Uuid::from_u128(0xfbef_be00_0000_0000_0000_0000_0000_0000)),
            "----AAAAAAAAAAAAAAAAAA"
        );
    }

    #[test]
    fn include_list_is_a_full_match_with_commas_as_or() {
        let re = include_list("foo,bar.*").unwrap();
        assert!(re.is_match("foo"));
        assert!(re.is_match("bar-1"));
        assert!(!re.is_match("foo2"));
        assert!(!re.is_match("xbar"));
        let exact = include_list("orders").unwrap();
        assert!(!exact.is_match("orders-dlq"));
        assert!(include_list("(").is_err());
    }

    #[test]
    fn configs_need_key_equals_value() {
        assert_eq!(
            parse_configs(&[
                "retention.ms = 1000".into(),
                "cleanup.policy=compact".into()
            ])
            .unwrap(),
            vec![
                ("retention.ms".into(), "1000".into()),
                ("cleanup.policy".into(), "compact".into())
            ]
        );
        assert!(parse_configs(&["novalue".into()]).is_err());
        assert!(parse_configs(&["a=b=c".into()]).is_err());
    }

    fn sample() -> TopicInfo {
        TopicInfo {
            name: "orders".into(),
            id: Uuid::from_u64_pair(0, 1),
            is_internal: false,
            error_code: 0,
            partitions: vec![
                PartitionInfo {
                    partition: 0,
                    leader: Some(1),
                    leader_epoch: 0,
                    replicas: vec![1, 2, 3],
                    isr: vec![1, 2, 3],
                    error_code: 0,
                },
                PartitionInfo {
                    partition: 1,
                    leader: None,
                    leader_epoch: 0,
                    replicas: vec![2, 3, 1],
                    isr: vec![],
                    error_code: 5,
                },
            ],
        }
    }

    #[test]
    fn describe_format_matches_kafka_topics() {
        let t = sample();
        assert_eq!(
            describe_topic_line(&t, &[("retention.ms".into(), "1000".into())]),
            "Topic: orders\tTopicId: AAAAAAAAAAAAAAAAAAAAAQ\tPartitionCount: 2\tReplicationFactor: 3\tConfigs: retention.ms=1000"
        );
        assert_eq!(
            describe_partition_lines(&t),
            vec![
                "\tTopic: orders\tPartition: 0\tLeader: 1\tReplicas: 1,2,3\tIsr: 1,2,3",
                "\tTopic: orders\tPartition: 1\tLeader: none\tReplicas: 2,3,1\tIsr: ",
            ]
        );
        let mut no_id = t.clone();
        no_id.id = Uuid::nil();
        assert!(describe_topic_line(&no_id, &[]).starts_with("Topic: orders\tPartitionCount: 2"));
        assert!(describe_topic_line(&no_id, &[]).ends_with("Configs: "));
    }
}
