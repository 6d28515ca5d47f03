//! The leader side of replication over gRPC: the `Replication` service
//! (a thin adapter) and the serving of a follower's fetch, which records
//! the follower's progress on each partition (moving the HW, earning it a
//! place in the ISR) and long-polls for new records.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::leader::FollowerFetch;
use super::partition::FetchRefusal;
use super::replicas::Replicas;
use super::wait::long_poll;
use crate::rpc::pb::replication_server::{Replication as ReplicationRpc, ReplicationServer};
use crate::rpc::pb::{FetchError, FetchedPartition, ReplicaFetchRequest, ReplicaFetchResponse};
use crate::rpc::MAX_MESSAGE_BYTES;

/// The most a leader answers in one fetch, whatever the follower asks.
pub const MAX_RESPONSE_BYTES: usize = 32 << 20;
/// The longest a leader holds a fetch open.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Finds this broker's replicas once it has started (the listener serves
/// Raft before that): `None` until then.
pub type ReplicasSource = Arc<dyn Fn() -> Option<Arc<Replicas>> + Send + Sync>;

/// The gRPC service, with the message limits of every node-to-node call.
pub fn service(replicas: ReplicasSource) -> ReplicationServer<Replication> {
    ReplicationServer::new(Replication { replicas })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

pub struct Replication {
    replicas: ReplicasSource,
}

#[tonic::async_trait]
impl ReplicationRpc for Replication {
    async fn fetch(
        &self,
        request: Request<ReplicaFetchRequest>,
    ) -> Result<Response<ReplicaFetchResponse>, Status> {
        let Some(replicas) = (self.replicas)() else {
            return Err(Status::unavailable("this broker has not started yet"));
        };
        Ok(Response::new(
            serve_fetch(&replicas, request.into_inner()).await,
        ))
    }
}

/// Serves a follower's fetch: answers at once when there are records or
/// an error, otherwise when a leader append brings some or the wait is
/// over.
pub async fn serve_fetch(replicas: &Replicas, req: ReplicaFetchRequest) -> ReplicaFetchResponse {
    let wait = Duration::from_millis(u64::from(req.max_wait_ms)).min(MAX_WAIT);
    let partitions = long_poll(Instant::now() + wait, replicas.appended(), || {
        fetch_once(replicas, &req)
    })
    .await;
    ReplicaFetchResponse { partitions }
}

/// One pass over the request's partitions; true when something is
/// worth answering at once (records or an error).
async fn fetch_once(
    replicas: &Replicas,
    req: &ReplicaFetchRequest,
) -> (Vec<FetchedPartition>, bool) {
    let mut remaining = (req.max_bytes as usize).clamp(1, MAX_RESPONSE_BYTES);
    let mut answered = false;
    let mut out = Vec::with_capacity(req.partitions.len());
    for fp in &req.partitions {
        let mut r = FetchedPartition {
            topic_id: fp.topic_id.clone(),
            partition: fp.partition,
            high_watermark: -1,
            log_start_offset: -1,
            log_end_offset: -1,
            ..Default::default()
        };
        let partition = match Uuid::from_slice(&fp.topic_id) {
            Ok(id) => replicas.get(id, fp.partition).await,
            Err(_) => None,
        };
        let Some(p) = partition else {
            r.set_error_code(FetchError::NotLeaderOrFollower);
            answered = true;
            out.push(r);
            continue;
        };
        let limit = (fp.max_bytes as usize)
            .clamp(1, MAX_RESPONSE_BYTES)
            .min(remaining);
        let fetch = FollowerFetch {
            follower: req.follower_id,
            fetch_offset: fp.fetch_offset,
            durable_offset: fp.durable_offset,
            storage_error: fp.storage_error,
        };
        let fetched = p
            .replica_fetch_from(fetch, fp.last_fetched_epoch, fp.current_leader_epoch, limit)
            .await;
        match fetched {
            Ok(f) => {
                if let Some(prop) = f.proposal {
                    replicas.propose_isr(prop);
                }
                if !f.records.is_empty() {
                    answered = true;
                    remaining = remaining.saturating_sub(f.records.len()).max(1);
                }
                r.high_watermark = f.high_watermark;
                r.log_start_offset = f.log_start_offset;
                r.log_end_offset = f.log_end_offset;
                r.records = f.records;
            }
            Err(refusal) => {
                answered = true;
                r.log_start_offset = p.log_start_offset();
                r.log_end_offset = p.log_end_offset();
                let error = match refusal {
                    FetchRefusal::NotLeader => FetchError::NotLeaderOrFollower,
                    FetchRefusal::FencedEpoch(_) => FetchError::FencedLeaderEpoch,
                    FetchRefusal::UnknownEpoch(_) => FetchError::UnknownLeaderEpoch,
                    FetchRefusal::Diverging { epoch, end_offset } => {
                        r.diverging = true;
                        r.diverging_epoch = epoch;
                        r.diverging_end_offset = end_offset;
                        FetchError::None
                    }
                    FetchRefusal::OutOfRange { .. } => FetchError::OffsetOutOfRange,
                    FetchRefusal::Storage(e) => {
                        tracing::error!(partition = ?p, error = %e, "replica read failed");
                        FetchError::KafkaStorageError
                    }
                };
                r.set_error_code(error);
            }
        }
        out.push(r);
    }
    (out, answered)
}
