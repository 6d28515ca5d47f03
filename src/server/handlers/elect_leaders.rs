//! ElectLeaders (43), v0-2, as `kafka-leader-election.sh` sends it.
//!
//! * Preferred (election type 0): the controller moves each partition's
//!   leadership to its first replica where that replica is alive and in
//!   the ISR.
//! * Unclean (type 1, v1+): a partition without a leader gets one, any live
//!   replica when no ISR member is alive, whatever the topic's
//!   `unclean.leader.election.enable`; a partition with a leader needs no
//!   election (ELECTION_NOT_NEEDED), as in Kafka.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    ElectLeadersRequest, ElectLeadersResponse, ResponseKind, TopicName,
};
use uuid::Uuid;

use crate::controller::image::MetadataImage;
use crate::controller::records::MetadataCommand;
use crate::protocol::Request;
use crate::server::{Ctx, Reply};

/// One partition's answer: (topic, partition, error code, message).
type Outcome = (String, i32, i16, Option<String>);

/// The error code of an outcome still waiting for the election.
const PENDING: i16 = i16::MIN;

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let version = req.version;
        let body = super::body!(req, ElectLeaders);
        let image = ctx.controller.image();
        let asked = asked_partitions(&body, &image);
        let (mut results, wanted) = triage(&image, body.election_type, asked);
        let mut top_error = 0;
        if !wanted.is_empty() {
            let cmd = if body.election_type == UNCLEAN {
                MetadataCommand::ElectUncleanLeaders { partitions: wanted }
            } else {
                MetadataCommand::ElectPreferredLeaders { partitions: wanted }
            };
            if let Err((code, _msg)) = super::propose(&ctx, cmd).await {
                // v0 has no top-level error; the partitions then say it.
                if version >= 1 {
                    top_error = code.code();
                }
            }
            settle(&ctx.controller.image(), body.election_type, &mut results);
        }
        Reply::Now(ResponseKind::ElectLeaders(
            ElectLeadersResponse::default()
                .with_error_code(top_error)
                .with_replica_election_results(by_topic(results)),
        ))
    })
}

/// (topic, partition) pairs asked for; no list means all of them.
fn asked_partitions(body: &ElectLeadersRequest, image: &MetadataImage) -> Vec<(String, i32)> {
    match &body.topic_partitions {
        Some(tps) => tps
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic.0.to_string(), *p))
            })
            .collect(),
        None => image
            .topics
            .values()
            .flat_map(|t| (0..t.partitions.len() as i32).map(move |p| (t.name.clone(), p)))
            .collect(),
    }
}

/// Answers what can be answered before the election, in the order asked;
/// the rest are `PENDING`, and returned as the partitions to elect.
fn triage(
    image: &MetadataImage,
    election_type: i8,
    asked: Vec<(String, i32)>,
) -> (Vec<Outcome>, Vec<(Uuid, i32)>) {
    let mut results: Vec<Outcome> = Vec::new();
    let mut wanted = Vec::new();
    for (topic, p) in asked {
        let part = image
            .topics
            .get(&topic)
            .and_then(|t| Some((t.id, t.partitions.get(usize::try_from(p).ok()?)?)));
        match part {
            None => results.push((
                topic,
                p,
                ResponseError::UnknownTopicOrPartition.code(),
                None,
            )),
            Some(_) if election_type != PREFERRED && election_type != UNCLEAN => results.push((
                topic,
                p,
                ResponseError::InvalidRequest.code(),
                Some(format!("unknown election type {election_type}")),
            )),
            Some((_, pi)) if election_type == UNCLEAN && pi.leader >= 0 => {
                results.push((topic, p, ResponseError::ElectionNotNeeded.code(), None));
            }
            Some((_, pi))
                if election_type == PREFERRED && pi.replicas.first() == Some(&pi.leader) =>
            {
                results.push((topic, p, ResponseError::ElectionNotNeeded.code(), None));
            }
            Some((id, _)) => {
                wanted.push((id, p));
                results.push((topic, p, PENDING, None));
            }
        }
    }
    (results, wanted)
}

/// Answers the `PENDING` outcomes from the image after the election.
fn settle(after: &MetadataImage, election_type: i8, results: &mut [Outcome]) {
    for (topic, p, code, msg) in results {
        if *code != PENDING {
            continue;
        }
        let pi = after
            .topics
            .get(topic.as_str())
            .and_then(|t| t.partitions.get(*p as usize));
        match pi {
            Some(pi) if election_type == UNCLEAN => {
                if pi.leader >= 0 {
                    *code = 0;
                } else {
                    *code = ResponseError::EligibleLeadersNotAvailable.code();
                    *msg = Some("no replica of the partition is alive".into());
                }
            }
            Some(pi) if pi.replicas.first() == Some(&pi.leader) => {
                *code = 0;
            }
            _ => {
                *code = ResponseError::PreferredLeaderNotAvailable.code();
                *msg = Some("the preferred leader is not alive or not in the ISR".into());
            }
        }
    }
}

/// The outcomes grouped by topic, topics and partitions in the order asked.
fn by_topic(results: Vec<Outcome>) -> Vec<ReplicaElectionResult> {
    let mut by_topic: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, p, code, msg) in results {
        let r = PartitionResult::default()
            .with_partition_id(p)
            .with_error_code(code)
            .with_error_message(msg.map(super::str));
        match by_topic.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partition_result.push(r),
            None => by_topic.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(super::str(topic)))
                    .with_partition_result(vec![r]),
            ),
        }
    }
    by_topic
}
