//! `runnel delete-records`: moves partitions' log start offsets, as
//! kafka-delete-records.sh does, from its JSON file
//! (`{"partitions": [{"topic": "t", "partition": 0, "offset": 10}], "version": 1}`,
//! offset -1 meaning the high watermark). Each request goes to the
//! partition's leader.

use std::collections::BTreeMap;

use clap::Args;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::{DeleteRecordsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde::Deserialize;

use super::client::{Client, ClientConfig};
use super::Error;

/// `kafka-delete-records.sh` options.
#[derive(Debug, Args)]
pub struct DeleteRecordsArgs {
    /// The Kafka server(s) to connect to, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "SERVERS")]
    pub bootstrap_server: String,
    /// The JSON file of partitions and offsets to delete records up to.
    #[arg(long, value_name = "FILE")]
    pub offset_json_file: std::path::PathBuf,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Plan {
    pub partitions: Vec<Target>,
    #[serde(default)]
    pub version: Option<i32>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone)]
pub struct Target {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The plan in the file, with Kafka's checks.
pub fn parse_plan(text: &str) -> Result<Plan, String> {
    let plan: Plan =
        serde_json::from_str(text).map_err(|e| format!("The JSON string is not valid: {e}"))?;
    if let Some(v) = plan.version.filter(|v| *v != 1) {
        return Err(format!("Not supported version field value {v}"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in &plan.partitions {
        if !seen.insert((t.topic.clone(), t.partition)) {
            return Err(format!(
                "Offset json file contains duplicate topic partitions: {}-{}",
                t.topic, t.partition
            ));
        }
    }
    Ok(plan)
}

/// Moves each target's log start; per partition, the new low watermark or
/// the error.
pub async fn delete_records(
    client: &mut Client,
    targets: &[Target],
) -> Vec<(Target, Result<i64, Error>)> {
    let topics: Vec<String> = {
        let mut t: Vec<String> = targets.iter().map(|t| t.topic.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    if let Err(e) = client.metadata(Some(&topics), false).await {
        let msg = e.to_string();
        return targets
            .iter()
            .map(|t| (t.clone(), Err(Error::Metadata(msg.clone()))))
            .collect();
    }
    let mut by_leader: BTreeMap<i32, Vec<Target>> = BTreeMap::new();
    let mut out = Vec::new();
    for t in targets {
        match client.leader_of(&t.topic, t.partition) {
            Some(l) => by_leader.entry(l).or_default().push(t.clone()),
            None => out.push((t.clone(), Err(Error::kafka(3, None)))),
        }
    }
    for (leader, group) in by_leader {
        let mut per_topic: BTreeMap<&str, Vec<DeleteRecordsPartition>> = BTreeMap::new();
        for t in &group {
            per_topic.entry(&t.topic).or_default().push(
                DeleteRecordsPartition::default()
                    .with_partition_index(t.partition)
                    .with_offset(t.offset),
            );
        }
        let req = DeleteRecordsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(
                per_topic
                    .into_iter()
                    .map(|(name, parts)| {
                        DeleteRecordsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(name.to_string())))
                            .with_partitions(parts)
                    })
                    .collect(),
            );
        let resp = match client.broker_connection(leader).await {
            Ok(conn) => conn.send(&req).await,
            Err(e) => Err(e),
        };
        match resp {
            Ok(resp) => {
                for t in group {
                    let r = resp
                        .topics
                        .iter()
                        .filter(|rt| rt.name.0.as_str() == t.topic)
                        .flat_map(|rt| &rt.partitions)
                        .find(|rp| rp.partition_index == t.partition);
                    let result = match r {
                        Some(rp) if rp.error_code == 0 => Ok(rp.low_watermark),
                        Some(rp) => Err(Error::kafka(rp.error_code, None)),
                        None => Err(Error::Metadata("no answer for the partition".into())),
                    };
                    out.push((t, result));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for t in group {
                    out.push((t, Err(Error::Metadata(msg.clone()))));
                }
            }
        }
    }
    out
}

pub async fn run(args: DeleteRecordsArgs) -> i32 {
    let text = match std::fs::read_to_string(&args.offset_json_file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "Error: cannot read {}: {e}",
                args.offset_json_file.display()
            );
            return 1;
        }
    };
    let plan = match parse_plan(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    let config = match ClientConfig::from_bootstrap(&args.bootstrap_server) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    let mut client = match Client::connect(config).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    println!("Executing records delete operation");
    let results = delete_records(&mut client, &plan.partitions).await;
    println!("Records delete operation completed:");
    let mut failed = false;
    for (t, r) in results {
        match r {
            Ok(low) => println!(
                "partition: {}-{}\tlow_watermark: {low}",
                t.topic, t.partition
            ),
            Err(e) => {
                failed = true;
                println!("partition: {}-{}\terror: {e}", t.topic, t.partition)
            }
        }
    }
    i32::from(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_with_kafkas_checks() {
        let p = parse_plan(r#"{"partitions":[{"topic":"t","partition":0,"offset":10},{"topic":"t","partition":1,"offset":-1}],"version":1}"#).unwrap();
        assert_eq!(p.partitions.len(), 2);
        assert_eq!(p.partitions[1].offset, -1);
        assert!(parse_plan(r#"{"partitions":[{"topic":"t","partition":0,"offset":1},{"topic":"t","partition":0,"offset":2}]}"#)
            .unwrap_err()
            .contains("duplicate"));
        assert!(parse_plan(r#"{"partitions":[],"version":2}"#).is_err());
        assert!(parse_plan("nope").unwrap_err().contains("not valid"));
    }
}
