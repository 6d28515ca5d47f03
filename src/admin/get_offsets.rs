//! `get-offsets`: what `kafka-get-offsets.sh` (GetOffsetShell) prints, one
//! `topic:partition:offset` line per matching partition.

use std::collections::BTreeSet;

use super::client::{Client, OffsetSpec};
use super::topics::include_list;

/// Parses `--time`: a name or Kafka's numeric sentinels or a timestamp.
pub(crate) fn parse_time(value: &str) -> Result<OffsetSpec, String> {
    let spec = match value {
        "latest" => Some(OffsetSpec::Latest),
        "earliest" => Some(OffsetSpec::Earliest),
        "max-timestamp" => Some(OffsetSpec::MaxTimestamp),
        "earliest-local" => Some(OffsetSpec::EarliestLocal),
        "latest-tiered" => Some(OffsetSpec::LatestTiered),
        other => other.parse::<i64>().ok().and_then(OffsetSpec::from_i64),
    };
    spec.ok_or_else(|| {
        format!(
            "Malformed time argument {value}. Please use -1 or latest / -2 or earliest / -3 or max-timestamp / -4 or earliest-local / -5 or latest-tiered, or a specified long format timestamp"
        )
    })
}

/// Parses `--partitions`: comma-separated partition ids.
pub(crate) fn parse_partitions(value: &str) -> Result<BTreeSet<i32>, String> {
    if value.is_empty() {
        return Ok(BTreeSet::new());
    }
    value
        .split(',')
        .map(|p| p.parse::<i32>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            format!(
                "--partitions expects a comma separated list of numeric partition ids, but received: {value}"
            )
        })
}

/// Output lines, sorted as Kafka sorts `TopicPartition.toString()`
/// ("topic-partition" as a string).
pub(crate) fn format_lines(mut rows: Vec<(String, i32, Option<i64>)>) -> Vec<String> {
    rows.sort_by_key(|(t, p, _)| format!("{t}-{p}"));
    rows.into_iter()
        .map(|(t, p, o)| match o {
            Some(o) => format!("{t}:{p}:{o}"),
            None => format!("{t}:{p}:"),
        })
        .collect()
}

/// Looks the offsets up. Per-partition failures are reported on stderr and
/// skipped, as GetOffsetShell does.
pub(crate) async fn get_offsets(
    client: &mut Client,
    topic: Option<&str>,
    partitions: &BTreeSet<i32>,
    spec: OffsetSpec,
    exclude_internal: bool,
) -> Result<Vec<String>, String> {
    let re = include_list(topic.unwrap_or(".*"))?;
    let topics = client
        .metadata(None, false)
        .await
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut matched = false;
    for t in topics
        .iter()
        .filter(|t| t.error_code == 0 && re.is_match(&t.name))
        .filter(|t| !(exclude_internal && t.is_internal))
    {
        let ids: Vec<i32> = t
            .partitions
            .iter()
            .map(|p| p.partition)
            .filter(|p| partitions.is_empty() || partitions.contains(p))
            .collect();
        if ids.is_empty() {
            continue;
        }
        matched = true;
        let found = client
            .list_offsets(&t.name, &ids, spec)
            .await
            .map_err(|e| e.to_string())?;
        for (p, r) in found {
            match r {
                Ok(listed) => rows.push((t.name.clone(), p, listed.offset)),
                Err(e) => eprintln!(
                    "Skip getting offsets for topic-partition {}-{p} due to error: {e}",
                    t.name
                ),
            }
        }
    }
    if !matched {
        return Err("Could not match any topic-partitions with the specified filters".to_owned());
    }
    Ok(format_lines(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_values() {
        assert_eq!(parse_time("-1").unwrap(), OffsetSpec::Latest);
        assert_eq!(parse_time("latest").unwrap(), OffsetSpec::Latest);
        assert_eq!(parse_time("-2").unwrap(), OffsetSpec::Earliest);
        assert_eq!(parse_time("earliest").unwrap(), OffsetSpec::Earliest);
        assert_eq!(parse_time("-3").unwrap(), OffsetSpec::MaxTimestamp);
        assert_eq!(
            parse_time("max-timestamp").unwrap(),
            OffsetSpec::MaxTimestamp
        );
        assert_eq!(
            parse_time("1700000000000").unwrap(),
            OffsetSpec::Timestamp(1_700_000_000_000)
        );
        assert!(parse_time("yesterday")
            .unwrap_err()
            .starts_with("Malformed time argument yesterday."));
        assert!(parse_time("-42").is_err());
    }

    #[test]
    fn partition_lists() {
        assert_eq!(parse_partitions("0,2").unwrap(), BTreeSet::from([0, 2]));
        assert!(parse_partitions("").unwrap().is_empty());
        assert!(parse_partitions("0,x").is_err());
    }

    #[test]
    fn lines_sorted_like_kafka_with_empty_offsets() {
        let lines = format_lines(vec![
            ("t".into(), 10, Some(5)),
            ("t".into(), 2, None),
            ("a".into(), 0, Some(0)),
        ]);
        assert_eq!(lines, vec!["a:0:0", "t:10:5", "t:2:"]);
    }
}
