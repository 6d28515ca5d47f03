//! `runnel consumer-groups` (kafka-consumer-groups.sh): list, describe with
//! lag, reset offsets, delete. Group requests go to the group's coordinator,
//! found with FindCoordinator; offsets are reset with a simple (memberless)
//! OffsetCommit, which the coordinator accepts only while the group has no
//! active members, as Kafka does.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::consumer_protocol_assignment::ConsumerProtocolAssignment;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::client::{Client, OffsetSpec};
use super::{Error, Result};

fn gid(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_owned()))
}

fn kafka(code: i16, message: Option<&StrBytes>) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::Kafka {
            code,
            message: message.map(|m| m.to_string()),
        })
    }
}

/// Any broker's id, for requests any broker answers.
fn any_broker(client: &Client) -> Result<i32> {
    client
        .brokers()
        .keys()
        .next()
        .copied()
        .ok_or_else(|| Error::Metadata("no brokers in metadata".into()))
}

/// The broker coordinating `group`.
pub async fn find_coordinator(client: &mut Client, group: &str) -> Result<i32> {
    let mut last = None;
    for attempt in 0..5u32 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200 * attempt as u64)).await;
        }
        let id = any_broker(client)?;
        let conn = client.broker_connection(id).await?;
        let version = conn.usable_version(ApiKey::FindCoordinator as i16, 0, 3)?;
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_owned()))
            .with_key_type(0);
        let resp = conn.send_version(&req, version).await?;
        match kafka(resp.error_code, resp.error_message.as_ref()) {
            Ok(()) => return Ok(resp.node_id.0),
            // COORDINATOR_NOT_AVAILABLE / LOAD_IN_PROGRESS: retry.
            Err(e) if matches!(resp.error_code, 14 | 15) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Metadata(format!("no coordinator for group {group}"))))
}

/// Every group any broker knows, sorted.
pub async fn list_groups(client: &mut Client) -> Result<Vec<(String, String)>> {
    let mut all = BTreeMap::new();
    let ids: Vec<i32> = client.brokers().keys().copied().collect();
    for id in ids {
        let conn = client.broker_connection(id).await?;
        let version = conn.usable_version(ApiKey::ListGroups as i16, 0, 4)?;
        let resp = conn
            .send_version(&ListGroupsRequest::default(), version)
            .await?;
        kafka(resp.error_code, None)?;
        for g in resp.groups {
            all.insert(g.group_id.0.to_string(), g.group_state.to_string());
        }
    }
    Ok(all.into_iter().collect())
}

pub async fn describe_group(
    client: &mut Client,
    coordinator: i32,
    group: &str,
) -> Result<DescribedGroup> {
    let conn = client.broker_connection(coordinator).await?;
    let version = conn.usable_version(ApiKey::DescribeGroups as i16, 0, 5)?;
    let resp = conn
        .send_version(
            &DescribeGroupsRequest::default().with_groups(vec![gid(group)]),
            version,
        )
        .await?;
    let g = resp
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| Error::Metadata("DescribeGroups answered no group".into()))?;
    kafka(g.error_code, g.error_message.as_ref())?;
    Ok(g)
}

/// Committed offsets of `group`, by (topic, partition).
pub async fn committed_offsets(
    client: &mut Client,
    coordinator: i32,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>> {
    let conn = client.broker_connection(coordinator).await?;
    // v7 is the last version with the single-group layout.
    let version = conn.usable_version(ApiKey::OffsetFetch as i16, 1, 7)?;
    let req = OffsetFetchRequest::default()
        .with_group_id(gid(group))
        .with_topics(if version >= 2 { None } else { Some(Vec::new()) });
    let resp = conn.send_version(&req, version).await?;
    kafka(resp.error_code, None)?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                out.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` for `group` without a membership (generation -1).
pub async fn commit_offsets(
    client: &mut Client,
    coordinator: i32,
    group: &str,
    offsets: &BTreeMap<(String, i32), i64>,
) -> Result<()> {
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((t, p), off) in offsets {
        by_topic.entry(t).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*off),
        );
    }
    let topics = by_topic
        .into_iter()
        .map(|(t, parts)| {
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(t.to_owned())))
                .with_partitions(parts)
        })
        .collect();
    let conn = client.broker_connection(coordinator).await?;
    let version = conn.usable_version(ApiKey::OffsetCommit as i16, 2, 8)?;
    let req = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(-1)
        .with_retention_time_ms(-1)
        .with_topics(topics);
    let resp = conn.send_version(&req, version).await?;
    for t in resp.topics {
        for p in t.partitions {
            kafka(p.error_code, None)?;
        }
    }
    Ok(())
}

pub async fn delete_group(client: &mut Client, coordinator: i32, group: &str) -> Result<()> {
    let conn = client.broker_connection(coordinator).await?;
    let version = conn.usable_version(ApiKey::DeleteGroups as i16, 0, 2)?;
    let resp = conn
        .send_version(
            &DeleteGroupsRequest::default().with_groups_names(vec![gid(group)]),
            version,
        )
        .await?;
    for r in resp.results {
        kafka(r.error_code, None)?;
    }
    Ok(())
}

/// The partitions a member's assignment names (the consumer protocol's
/// ConsumerProtocolAssignment, version-prefixed).
pub fn assigned_partitions(assignment: &[u8]) -> Vec<(String, i32)> {
    let mut buf = bytes::Bytes::copy_from_slice(assignment);
    if buf.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    match ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .flat_map(|tp| {
                let t = tp.topic.0.to_string();
                tp.partitions.into_iter().map(move |p| (t.clone(), p))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// One row of `--describe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribeRow {
    pub topic: String,
    pub partition: i32,
    pub current: Option<i64>,
    pub log_end: Option<i64>,
    pub consumer_id: String,
    pub host: String,
    pub client_id: String,
}

fn opt(v: Option<i64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

pub fn format_describe(group: &str, rows: &[DescribeRow]) -> String {
    let w = |f: &dyn Fn(&DescribeRow) -> usize, min: usize| {
        rows.iter().map(f).max().unwrap_or(0).max(min)
    };
    let (gw, tw) = (group.len().max(5), w(&|r| r.topic.len(), 5));
    let (cw, hw) = (w(&|r| r.consumer_id.len(), 11), w(&|r| r.host.len(), 4));
    let mut out = format!(
        "\n{:<gw$} {:<tw$} {:<10} {:<15} {:<15} {:<15} {:<cw$} {:<hw$} {}\n",
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID"
    );
    for r in rows {
        let lag = match (r.current, r.log_end) {
            (Some(c), Some(e)) => Some((e - c).max(0)),
            _ => None,
        };
        out.push_str(&format!(
            "{:<gw$} {:<tw$} {:<10} {:<15} {:<15} {:<15} {:<cw$} {:<hw$} {}\n",
            group,
            r.topic,
            r.partition,
            opt(r.current),
            opt(r.log_end),
            opt(lag),
            r.consumer_id,
            r.host,
            r.client_id
        ));
    }
    out
}

pub fn format_reset(group: &str, offsets: &BTreeMap<(String, i32), i64>) -> String {
    let tw = offsets
        .keys()
        .map(|(t, _)| t.len())
        .max()
        .unwrap_or(0)
        .max(30);
    let gw = group.len().max(30);
    let mut out = format!(
        "\n{:<gw$} {:<tw$} {:<10} {:<15}\n",
        "GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"
    );
    for ((t, p), o) in offsets {
        out.push_str(&format!("{group:<gw$} {t:<tw$} {p:<10} {o:<15}\n"));
    }
    out
}

/// Builds the describe rows: every partition with a committed offset or an
/// owner, with its log end offset.
pub async fn describe_rows(
    client: &mut Client,
    group: &DescribedGroup,
    committed: &BTreeMap<(String, i32), i64>,
) -> Result<Vec<DescribeRow>> {
    let mut owners: BTreeMap<(String, i32), (String, String, String)> = BTreeMap::new();
    for m in &group.members {
        for tp in assigned_partitions(&m.member_assignment) {
            owners.insert(
                tp,
                (
                    m.member_id.to_string(),
                    m.client_host.to_string(),
                    m.client_id.to_string(),
                ),
            );
        }
    }
    let keys: BTreeSet<(String, i32)> = committed.keys().chain(owners.keys()).cloned().collect();
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in &keys {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    let mut ends = BTreeMap::new();
    for (t, parts) in &by_topic {
        if let Ok(listed) = client.list_offsets(t, parts, OffsetSpec::Latest).await {
            for (p, r) in listed {
                if let Ok(l) = r {
                    ends.insert((t.clone(), p), l.offset);
                }
            }
        }
    }
    Ok(keys
        .into_iter()
        .map(|k| {
            let (consumer_id, host, client_id) = owners
                .get(&k)
                .cloned()
                .unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
            DescribeRow {
                current: committed.get(&k).copied(),
                log_end: ends.get(&k).copied().flatten(),
                topic: k.0,
                partition: k.1,
                consumer_id,
                host,
                client_id,
            }
        })
        .collect())
}

/// Kafka's `--to-datetime` format, `YYYY-MM-DDTHH:mm:SS.sss` with an
/// optional `Z` or `±HH:MM` offset (default UTC), as ms since the epoch.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let (main, offset_min) = if let Some(m) = s.strip_suffix('Z') {
        (m, 0)
    } else if s.len() > 6
        && matches!(s.as_bytes()[s.len() - 6], b'+' | b'-')
        && s.as_bytes()[s.len() - 3] == b':'
    {
        let (m, off) = s.split_at(s.len() - 6);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let h: i64 = off[1..3].parse().ok()?;
        let mi: i64 = off[4..6].parse().ok()?;
        (m, sign * (h * 60 + mi))
    } else {
        (s, 0)
    };
    let (date, time) = main.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next().flatten().unwrap_or(0));
    let ms: i64 = format!("{:0<3}", &ms[..ms.len().min(3)]).parse().ok()?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(((days * 86400 + h * 3600 + mi * 60 + se) - offset_min * 60) * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn datetimes_parse_like_kafka() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00.000"), Some(0));
        assert_eq!(
            parse_datetime("2024-02-29T12:34:56.789Z"),
            Some(1_709_210_096_789)
        );
        assert_eq!(
            parse_datetime("2024-02-29T13:34:56.789+01:00"),
            Some(1_709_210_096_789)
        );
        assert_eq!(
            parse_datetime("2024-02-29T12:34:56"),
            Some(1_709_210_096_000)
        );
        assert_eq!(parse_datetime("yesterday"), None);
        assert_eq!(parse_datetime("2024-13-01T00:00:00"), None);
    }

    #[test]
    fn assignments_decode() {
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![0, 2]),
        ]);
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&1i16.to_be_bytes());
        a.encode(&mut buf, 1).unwrap();
        assert_eq!(
            assigned_partitions(&buf),
            vec![("t".into(), 0), ("t".into(), 2)]
        );
        assert!(assigned_partitions(&[0]).is_empty());
        assert!(assigned_partitions(&[0, 1, 0xff, 0xff, 0xff]).is_empty());
    }

    #[test]
    fn describe_table_has_kafkas_columns() {
        let rows = vec![DescribeRow {
            topic: "test".into(),
            partition: 0,
            current: Some(5),
            log_end: Some(8),
            consumer_id: "c-1".into(),
            host: "/127.0.0.1".into(),
            client_id: "rdkafka".into(),
        }];
        let s = format_describe("group1", &rows);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "");
        let head: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            head,
            [
                "GROUP",
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "CONSUMER-ID",
                "HOST",
                "CLIENT-ID"
            ]
        );
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "group1",
                "test",
                "0",
                "5",
                "8",
                "3",
                "c-1",
                "/127.0.0.1",
                "rdkafka"
            ]
        );
    }
}
