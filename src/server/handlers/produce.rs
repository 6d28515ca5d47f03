//! Produce (0), v0-11.
//!
//! In order: resolve; convert a v0-2 request's message set (magic 0 or 1)
//! to a v2 batch; validate each partition's batch (CRC, sizes, magic, no
//! zstd before v7); set its max timestamp from its records, as Kafka does;
//! apply the topic's rules; check leadership and `min.insync.replicas`;
//! append. Then acks=1 answers
//! at once, acks=-1 waits in the background until the high watermark passes
//! the last appended offset (or `timeout_ms`), acks=0 never answers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{join_all, BoxFuture};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceResponse, ResponseKind};

use crate::config::topic::TopicSettings;
use crate::protocol::Request;
use crate::protocol::{batch, message_set};
use crate::replication::partition::Acks;
use crate::replication::{self, Partition, PartitionError};
use crate::server::{error_code, lookup};
use crate::server::{Ctx, Reply};

struct Appended {
    partition: Arc<Partition>,
    end_offset: i64,
    epoch: i32,
}

fn error(index: i32, code: ResponseError, msg: Option<String>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code.code())
        .with_base_offset(-1)
        .with_log_start_offset(-1)
        .with_error_message(msg.map(super::str))
}

async fn produce_one(
    ctx: &Ctx,
    version: i16,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
    acks: i16,
) -> (PartitionProduceResponse, Option<Appended>) {
    let image = ctx.controller.image();
    let Some(t) = image.topic(topic) else {
        return (
            error(index, ResponseError::UnknownTopicOrPartition, None),
            None,
        );
    };
    let Some(meta) = t.partitions.get(index as usize).filter(|_| index >= 0) else {
        return (
            error(index, ResponseError::UnknownTopicOrPartition, None),
            None,
        );
    };
    let _ = meta;
    let not_leader = || {
        let resp = error(index, ResponseError::NotLeaderOrFollower, None);
        match lookup::current_leader(Some(t), index) {
            Some((leader, epoch)) => resp.with_current_leader(
                LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch),
            ),
            None => resp,
        }
    };
    let Some(partition) = ctx.broker.leader_partition(t.id, index).await else {
        return (not_leader(), None);
    };
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return (
            error(
                index,
                ResponseError::InvalidRecord,
                Some("no record batch".into()),
            ),
            None,
        );
    };
    let rejected = |e: batch::Error| {
        tracing::debug!(topic, partition = index, error = %e, "rejected produce");
        metrics::counter!("runnel_produce_rejected_total").increment(1);
        (
            error(index, error_code::batch(&e), Some(e.to_string())),
            None,
        )
    };
    // Produce v0-2 carries a message set of magic 0 or 1 (or, from newer
    // clients, a v2 batch); the log stores v2 batches only.
    let converted = version < 3 && message_set::is_message_set(&records);
    let records = if converted {
        match message_set::up_convert(&records) {
            Ok(up) => up.batch,
            Err(e) => return rejected(e),
        }
    } else {
        records
    };
    let mut summary = match batch::validate_batches(&records, ctx.broker.max_message_bytes(t)) {
        Ok(s) => s,
        Err(e) => return rejected(e),
    };
    if summary.batch_count != 1 {
        // Kafka's ProduceRequest.validateRecords: v3+ carries one batch.
        return (
            error(
                index,
                ResponseError::InvalidRecord,
                Some("a produce request carries exactly one record batch per partition".into()),
            ),
            None,
        );
    }
    if version < 7 && summary.first.compression() == Some(batch::Compression::Zstd) {
        // Kafka's ProduceRequest.validateRecords: zstd needs v7 (KIP-110).
        return rejected(batch::Error::UnsupportedCompression(4));
    }
    // A converted batch was built here from its records: its header is right.
    let records = if converted {
        records
    } else {
        match max_timestamp_from_records(records, &mut summary) {
            Ok(r) => r,
            Err(e) => return rejected(e),
        }
    };
    let settings = ctx.broker.topic_settings(t.id);
    let batch_bytes = records.len();
    let (records, append_time) = match apply_topic_rules(&settings, records, &summary) {
        Ok(r) => r,
        Err(Refusal {
            code,
            message,
            records: failed,
        }) => {
            tracing::debug!(topic, partition = index, error = %message, "rejected produce");
            metrics::counter!("runnel_produce_rejected_total").increment(1);
            // KIP-467: which records of the batch were at fault.
            let record_errors = failed
                .into_iter()
                .map(|i| {
                    BatchIndexAndErrorMessage::default()
                        .with_batch_index(i)
                        .with_batch_index_error_message(Some(super::str(message.clone())))
                })
                .collect();
            return (
                error(index, code, Some(message.clone())).with_record_errors(record_errors),
                None,
            );
        }
    };
    let required = if acks == -1 { Acks::All } else { Acks::Leader };
    match partition.append(records, &summary, required).await {
        Ok((done, epoch)) => {
            if matches!(done, replication::Appended::New(_)) {
                metrics::counter!("runnel_produce_records_total")
                    .increment(summary.record_count as u64);
                let topic = topic.to_string();
                metrics::counter!("runnel_topic_messages_in_total", "topic" => topic.clone())
                    .increment(summary.record_count as u64);
                metrics::counter!("runnel_topic_bytes_in_total", "topic" => topic)
                    .increment(batch_bytes as u64);
            }
            let resp = PartitionProduceResponse::default()
                .with_index(index)
                .with_base_offset(done.first_offset())
                .with_log_append_time_ms(append_time)
                .with_log_start_offset(partition.log_start_offset());
            let end_offset = done.last_offset() + 1;
            (
                resp,
                Some(Appended {
                    partition,
                    end_offset,
                    epoch,
                }),
            )
        }
        Err(PartitionError::NotLeader) => (not_leader(), None),
        Err(e) => {
            let code = error_code::partition(&e);
            if code == ResponseError::KafkaStorageError {
                // The partition logs a storage episode once (warn when it
                // starts, info when it ends) and counts each failure.
                tracing::debug!(topic, partition = index, error = %e, "append failed");
            }
            // A client finds the new leader from Metadata; no message needed.
            let msg = (!matches!(e, PartitionError::NotLeader)).then(|| e.to_string());
            (error(index, code, msg), None)
        }
    }
}

/// Sets a CreateTime batch's max timestamp to the largest its records hold,
/// as Kafka's `LogValidator` does, rather than trusting the producer's
/// header (Sarama leaves it at -1, which hid its records from ListOffsets by
/// timestamp). The batch is copied only when the header was wrong.
fn max_timestamp_from_records(
    records: Bytes,
    summary: &mut batch::BatchesSummary,
) -> Result<Bytes, batch::Error> {
    use std::ops::ControlFlow;
    if summary.first.timestamp_type() == batch::TimestampType::LogAppend {
        return Ok(records);
    }
    let mut max = -1i64;
    batch::for_each_record(&records, |r| {
        max = max.max(r.timestamp);
        ControlFlow::Continue(())
    })?;
    if max == summary.first.max_timestamp {
        return Ok(records);
    }
    let mut b = records.to_vec();
    crate::protocol::rewrite::set_max_timestamp(&mut b, max)?;
    summary.max_timestamp = max;
    summary.first.max_timestamp = max;
    summary.last.max_timestamp = max;
    Ok(Bytes::from(b))
}

/// A batch the topic's rules refuse.
struct Refusal {
    code: ResponseError,
    message: String,
    /// The indexes of the records at fault, if some are and others are not.
    records: Vec<i32>,
}

impl From<(ResponseError, String)> for Refusal {
    fn from((code, message): (ResponseError, String)) -> Self {
        Refusal {
            code,
            message,
            records: Vec::new(),
        }
    }
}

/// The topic's rules for what it stores: a compacted topic refuses
/// records without a key; with CreateTime, timestamps must lie within
/// `message.timestamp.before.max.ms`/`after.max.ms` of the broker's clock;
/// LogAppendTime stamps the batch; a `compression.type` other than
/// `producer` recompresses it. The batch to append, and the append time
/// (-1 unless LogAppendTime) for the response.
fn apply_topic_rules(
    s: &TopicSettings,
    records: Bytes,
    summary: &batch::BatchesSummary,
) -> Result<(Bytes, i64), Refusal> {
    use crate::config::topic::{TimestampType, TopicCompression};
    use crate::protocol::rewrite;
    let h = summary.first;
    let recompress = match s.compression {
        TopicCompression::Producer => None,
        TopicCompression::None => Some(batch::Compression::None),
        TopicCompression::Gzip => Some(batch::Compression::Gzip),
        TopicCompression::Snappy => Some(batch::Compression::Snappy),
        TopicCompression::Lz4 => Some(batch::Compression::Lz4),
        TopicCompression::Zstd => Some(batch::Compression::Zstd),
    }
    .filter(|c| h.compression() != Some(*c));
    let check_times = s.timestamp_type == TimestampType::CreateTime
        && (s.timestamp_before_max_ms < i64::MAX || s.timestamp_after_max_ms < i64::MAX);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut out = records;
    if s.cleanup_policy.compact || check_times || recompress.is_some() {
        let invalid = |e: batch::Error| Refusal::from((error_code::batch(&e), e.to_string()));
        let r = rewrite::records(&out).map_err(invalid)?;
        if s.cleanup_policy.compact {
            let keyless: Vec<i32> = (0..r.records.len() as i32)
                .filter(|i| r.records[*i as usize].key.is_none())
                .collect();
            if !keyless.is_empty() {
                return Err(Refusal {
                    code: ResponseError::InvalidRecord,
                    message: "Compacted topic cannot accept message without key".into(),
                    records: keyless,
                });
            }
        }
        if check_times {
            for x in &r.records {
                let behind = now.saturating_sub(x.timestamp);
                let ahead = x.timestamp.saturating_sub(now);
                if behind > s.timestamp_before_max_ms || ahead > s.timestamp_after_max_ms {
                    return Err(Refusal::from((
                        ResponseError::InvalidTimestamp,
                        format!(
                            "timestamp {} of the record at offset delta {} is out of range (broker time {now}, message.timestamp.before.max.ms {}, after.max.ms {})",
                            x.timestamp,
                            x.offset - h.base_offset,
                            s.timestamp_before_max_ms,
                            s.timestamp_after_max_ms
                        ),
                    )));
                }
            }
        }
        if let Some(codec) = recompress {
            let all: Vec<_> = r.records.iter().map(|x| x.span.clone()).collect();
            out = Bytes::from(rewrite::rebuild(&r.header, &r.plain, &all, codec).map_err(invalid)?);
        }
    }
    if s.timestamp_type == TimestampType::LogAppendTime {
        let mut b = out.to_vec();
        rewrite::stamp_log_append_time(&mut b, now)
            .map_err(|e| Refusal::from((error_code::batch(&e), e.to_string())))?;
        return Ok((Bytes::from(b), now));
    }
    Ok((out, -1))
}

/// The endpoints of the leaders named in NOT_LEADER_OR_FOLLOWER answers
/// (KIP-951; only v10+ carries them).
fn redirects(ctx: &Ctx, topics: &[TopicProduceResponse]) -> Vec<NodeEndpoint> {
    let leaders = topics
        .iter()
        .flat_map(|t| &t.partition_responses)
        .filter(|p| p.error_code == ResponseError::NotLeaderOrFollower.code())
        .map(|p| p.current_leader.leader_id.0)
        .filter(|id| *id >= 0);
    lookup::node_endpoints(ctx, leaders)
        .into_iter()
        .map(|(id, host, port, rack)| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(super::str(host))
                .with_port(port)
                .with_rack(rack.map(super::str))
        })
        .collect()
}

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let version = req.version;
        let body = super::body!(req, Produce);
        let acks = body.acks;
        if !matches!(acks, -1..=1) {
            return Reply::Close(format!("invalid acks {acks}"));
        }
        if body.transactional_id.is_some() {
            // Transactions come later; refuse clearly rather than pretend.
            let topics = body
                .topic_data
                .into_iter()
                .map(|t| {
                    let parts = t
                        .partition_data
                        .iter()
                        .map(|p| {
                            error(
                                p.index,
                                ResponseError::TransactionalIdAuthorizationFailed,
                                Some("transactions are not supported".into()),
                            )
                        })
                        .collect();
                    TopicProduceResponse::default()
                        .with_name(t.name)
                        .with_partition_responses(parts)
                })
                .collect();
            return Reply::Now(ResponseKind::Produce(
                ProduceResponse::default().with_responses(topics),
            ));
        }
        let timeout = Duration::from_millis(body.timeout_ms.max(0) as u64);
        let mut topics = Vec::with_capacity(body.topic_data.len());
        let mut waits = Vec::new();
        for t in body.topic_data {
            let name = t.name.0.to_string();
            let results = join_all(
                t.partition_data
                    .into_iter()
                    .map(|p| produce_one(&ctx, version, &name, p.index, p.records, acks)),
            )
            .await;
            let mut parts = Vec::with_capacity(results.len());
            for (i, (resp, appended)) in results.into_iter().enumerate() {
                if let Some(a) = appended {
                    waits.push((topics.len(), i, a));
                }
                parts.push(resp);
            }
            topics.push(
                TopicProduceResponse::default()
                    .with_name(t.name)
                    .with_partition_responses(parts),
            );
        }
        let endpoints = redirects(&ctx, &topics);
        match acks {
            0 => Reply::Nothing,
            1 => Reply::Now(ResponseKind::Produce(
                ProduceResponse::default()
                    .with_responses(topics)
                    .with_node_endpoints(endpoints),
            )),
            _ => Reply::Later(Box::pin(async move {
                let done = join_all(
                    waits
                        .iter()
                        .map(|(_, _, a)| a.partition.wait_acked(a.end_offset, a.epoch, timeout)),
                )
                .await;
                for ((ti, pi, _), outcome) in waits.iter().zip(done) {
                    let Err(e) = outcome else { continue };
                    let code = error_code::ack(&e);
                    let p = &mut topics[*ti].partition_responses[*pi];
                    p.error_code = code.code();
                    p.error_message = Some(super::str(e.to_string()));
                    p.base_offset = -1;
                }
                ResponseKind::Produce(
                    ProduceResponse::default()
                        .with_responses(topics)
                        .with_node_endpoints(endpoints),
                )
            })),
        }
    })
}
