//! The broker's side of partition replication: serving followers' fetches
//! as leader, running one fetcher per leader as follower (Kafka's replica
//! fetcher: one long-poll at a time carrying every partition between the
//! pair), and sending leaders' ISR changes to the controller.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::error::ResponseError;
use tokio::time::Instant;
use uuid::Uuid;

use super::Broker;
use crate::controller::records::{MetadataCommand, MetadataResponse};
use crate::controller::Controller;
use crate::replication::leader::enough_replicas;
use crate::replication::partition::{FetchRefusal, IsrProposal};
use crate::replication::Partition;
use crate::rpc::pb::{FetchPartition, FetchedPartition, ReplicaFetchRequest, ReplicaFetchResponse};
use crate::rpc::Channels;

/// Finds a broker's node-to-node (CONTROLLER listener) address.
pub type Resolver = Arc<dyn Fn(i32) -> Option<String> + Send + Sync>;

/// The most a leader answers in one fetch, whatever the follower asks.
const MAX_RESPONSE_BYTES: usize = 32 << 20;
/// How often each partition's HW is written down (Kafka's
/// `replica.high.watermark.checkpoint.interval.ms`).
const HW_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// The longest a leader holds a fetch open.
const MAX_WAIT: Duration = Duration::from_secs(10);

fn code(e: ResponseError) -> i32 {
    i32::from(e.code())
}

impl Broker {
    /// Serves a follower's fetch: answers at once when there are records,
    /// an error, or the wait is over; otherwise waits for an append.
    pub async fn serve_replica_fetch(&self, req: ReplicaFetchRequest) -> ReplicaFetchResponse {
        let wait = Duration::from_millis(u64::from(req.max_wait_ms)).min(MAX_WAIT);
        let deadline = Instant::now() + wait;
        let mut appended = self.appended();
        loop {
            appended.borrow_and_update();
            let (partitions, answered) = self.replica_fetch_once(&req).await;
            if answered || Instant::now() >= deadline {
                return ReplicaFetchResponse { partitions };
            }
            if tokio::time::timeout_at(deadline, appended.changed())
                .await
                .is_err()
            {
                return ReplicaFetchResponse { partitions };
            }
        }
    }

    /// One pass over the request's partitions; true when something is
    /// worth answering at once (records or an error).
    async fn replica_fetch_once(&self, req: &ReplicaFetchRequest) -> (Vec<FetchedPartition>, bool) {
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
                Ok(id) => self.partition(id, fp.partition).await,
                Err(_) => None,
            };
            let Some(p) = partition else {
                r.error_code = code(ResponseError::NotLeaderOrFollower);
                answered = true;
                out.push(r);
                continue;
            };
            let limit = (fp.max_bytes as usize)
                .clamp(1, MAX_RESPONSE_BYTES)
                .min(remaining);
            let fetched = p
                .replica_fetch(
                    req.follower_id,
                    fp.fetch_offset,
                    fp.durable_offset,
                    fp.last_fetched_epoch,
                    fp.current_leader_epoch,
                    limit,
                )
                .await;
            match fetched {
                Ok(f) => {
                    if let Some(prop) = f.proposal {
                        let _ = self.isr_proposals.send(prop);
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
                    r.error_code = match refusal {
                        FetchRefusal::NotLeader => code(ResponseError::NotLeaderOrFollower),
                        FetchRefusal::FencedEpoch(_) => code(ResponseError::FencedLeaderEpoch),
                        FetchRefusal::UnknownEpoch(_) => code(ResponseError::UnknownLeaderEpoch),
                        FetchRefusal::Diverging { epoch, end_offset } => {
                            r.diverging = true;
                            r.diverging_epoch = epoch;
                            r.diverging_end_offset = end_offset;
                            0
                        }
                        FetchRefusal::OutOfRange { .. } => code(ResponseError::OffsetOutOfRange),
                        FetchRefusal::Storage(e) => {
                            tracing::error!(partition = ?p, error = %e, "replica read failed");
                            code(ResponseError::KafkaStorageError)
                        }
                    };
                }
            }
            out.push(r);
        }
        (out, answered)
    }

    /// Starts the follower side: one fetcher task per leader this broker
    /// follows partitions of, for as long as the process runs.
    pub fn start_replica_fetchers(self: &Arc<Self>, resolver: Resolver, channels: Channels) {
        let broker = self.clone();
        tokio::spawn(async move {
            let mut followed = broker.followed();
            let mut running: HashSet<i32> = HashSet::new();
            loop {
                let leaders: Vec<i32> = followed.borrow_and_update().keys().copied().collect();
                for leader in leaders {
                    if running.insert(leader) {
                        tokio::spawn(fetcher(
                            broker.clone(),
                            leader,
                            resolver.clone(),
                            channels.clone(),
                        ));
                    }
                }
                if followed.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Sends leaders' ISR changes to the controller, and every second
    /// looks for followers that fell out of sync. Runs until the process ends.
    pub async fn maintain_isr(self: Arc<Self>, controller: Controller) {
        let Some(mut proposals) = self
            .isr_receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let max_lag = Duration::from_millis(self.config.replica_lag_time_max_ms);
        let mut tick = tokio::time::interval(Duration::from_millis(
            (self.config.replica_lag_time_max_ms / 4).clamp(100, 1000),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checkpoints = tokio::time::interval(HW_CHECKPOINT_INTERVAL);
        checkpoints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = checkpoints.tick() => {
                    let idle = Duration::from_millis(self.config.producer_id_expiration_ms);
                    for p in self.all_partitions().await {
                        if let Err(e) = p.checkpoint_high_watermark().await {
                            tracing::warn!(partition = ?p, error = %e, "cannot checkpoint the high watermark");
                        }
                        let expired = p.expire_producers(idle).await;
                        if expired > 0 {
                            tracing::debug!(partition = ?p, expired, "forgot idle producers");
                        }
                    }
                }
                prop = proposals.recv() => {
                    let Some(prop) = prop else { return };
                    tokio::spawn(propose_isr(controller.clone(), prop));
                }
                _ = tick.tick() => {
                    let leaders = self.leader_partitions().await;
                    let (mut under, mut under_min) = (0u64, 0u64);
                    for p in &leaders {
                        if let Some(prop) = p.shrink_isr(max_lag) {
                            tokio::spawn(propose_isr(controller.clone(), prop));
                        }
                        let (replicas, isr) = p.replica_sets();
                        if isr.len() < replicas.len() {
                            under += 1;
                        }
                        if !enough_replicas(&isr, p.min_insync_replicas()) {
                            under_min += 1;
                        }
                        for (follower, lag) in p.follower_lags() {
                            metrics::gauge!("runnel_replica_lag_offsets",
                                "topic" => p.topic.clone(),
                                "partition" => p.index.to_string(),
                                "follower" => follower.to_string())
                            .set(lag as f64);
                        }
                    }
                    metrics::gauge!("runnel_under_replicated_partitions").set(under as f64);
                    metrics::gauge!("runnel_under_min_isr_partitions").set(under_min as f64);
                    metrics::gauge!("runnel_leader_partitions").set(leaders.len() as f64);
                }
            }
        }
    }
}

async fn propose_isr(controller: Controller, prop: IsrProposal) {
    let cmd = MetadataCommand::AlterPartition {
        topic_id: prop.topic_id,
        partition: prop.partition,
        leader: prop.leader,
        leader_epoch: prop.leader_epoch,
        partition_epoch: prop.partition_epoch,
        isr: prop.isr.clone(),
    };
    match controller.propose(cmd).await {
        Ok(MetadataResponse::Ok) => {
            let kind = if prop.expands { "expand" } else { "shrink" };
            metrics::counter!("runnel_isr_changes_total", "kind" => kind).increment(1);
            tracing::info!(topic_id = %prop.topic_id, partition = prop.partition, isr = ?prop.isr, "ISR change committed");
        }
        Ok(other) => {
            tracing::info!(topic_id = %prop.topic_id, partition = prop.partition, isr = ?prop.isr, answer = ?other, "ISR change refused")
        }
        Err(e) => {
            tracing::warn!(topic_id = %prop.topic_id, partition = prop.partition, error = %e, "ISR change not committed")
        }
    }
}

/// Where a follower's log must be cut when the leader reports divergence
/// after `epoch` at `leader_end`: no further than the leader's end of that
/// epoch, nor than this replica's own end of it (KIP-279).
fn divergence_point(p: &Partition, epoch: i32, leader_end: i64) -> i64 {
    if leader_end < 0 {
        // The leader knows no epoch at or below ours: keep nothing of ours
        // past its log start.
        return p.log_start_offset();
    }
    match p.log().end_offset_for_epoch(epoch) {
        Ok((_, local_end)) if local_end >= 0 => leader_end.min(local_end),
        _ => leader_end,
    }
}

/// Fetches from `leader` for every partition this broker follows it in.
async fn fetcher(broker: Arc<Broker>, leader: i32, resolver: Resolver, channels: Channels) {
    let mut followed = broker.followed();
    let me = broker.node_id();
    let wait_ms = broker.config.replica_fetch_wait_max_ms.min(10_000) as u32;
    let per_partition = broker
        .config
        .replica_fetch_max_bytes
        .min(MAX_RESPONSE_BYTES) as u32;
    let total = broker
        .config
        .replica_fetch_response_max_bytes
        .min(MAX_RESPONSE_BYTES) as u32;
    let mut failures = 0u32;
    // The background fsync of the previous round's appends.
    let mut in_flight: Option<tokio::task::JoinHandle<bool>> = None;
    loop {
        let parts: Vec<Arc<Partition>> = followed
            .borrow_and_update()
            .get(&leader)
            .cloned()
            .unwrap_or_default();
        if parts.is_empty() {
            if followed.changed().await.is_err() {
                return;
            }
            continue;
        }
        let Some(addr) = resolver(leader) else {
            tracing::warn!(leader, "no address for the leader; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut sent: HashMap<(Uuid, i32), (Arc<Partition>, i32, i64)> = HashMap::new();
        // While an fsync is still running, the leader should not hold this
        // fetch open for new records: what it is waiting for (to move its
        // HW) is this follower's next durable offset, which comes with the
        // fetch after the fsync.
        let syncing = in_flight.as_ref().is_some_and(|f| !f.is_finished());
        let mut req = ReplicaFetchRequest {
            follower_id: me,
            max_wait_ms: if syncing { 0 } else { wait_ms },
            max_bytes: total,
            partitions: Vec::with_capacity(parts.len()),
        };
        for p in &parts {
            let epoch = p.leader_epoch();
            let offset = p.log_end_offset();
            req.partitions.push(FetchPartition {
                topic_id: p.topic_id.as_bytes().to_vec(),
                partition: p.index,
                durable_offset: p.durable_offset(),
                fetch_offset: offset,
                last_fetched_epoch: p.log().latest_epoch().unwrap_or(-1),
                current_leader_epoch: epoch,
                max_bytes: per_partition,
            });
            sent.insert((p.topic_id, p.index), (p.clone(), epoch, offset));
        }
        let answer = match channels.replication(&addr) {
            Ok(mut client) => {
                let limit = Duration::from_millis(u64::from(wait_ms)) + Duration::from_secs(10);
                match tokio::time::timeout(limit, client.fetch(req)).await {
                    Ok(Ok(resp)) => Ok(resp.into_inner()),
                    Ok(Err(status)) => Err(status.to_string()),
                    Err(_) => Err("timed out".to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let resp = match answer {
            Ok(r) => {
                failures = 0;
                r
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures % 50 == 0 {
                    tracing::warn!(leader, %addr, error = %e, failures, "replica fetch failed");
                }
                // Wakes early when the partitions move to another leader.
                let _ = tokio::time::timeout(Duration::from_millis(200), followed.changed()).await;
                continue;
            }
        };
        let mut backoff = false;
        let mut synced = Vec::new();
        let mut appended_any = Vec::new();
        for fp in resp.partitions {
            let Ok(id) = Uuid::from_slice(&fp.topic_id) else {
                continue;
            };
            let Some((p, epoch, offset)) = sent.remove(&(id, fp.partition)) else {
                continue;
            };
            let outcome = if fp.diverging {
                let to = divergence_point(&p, fp.diverging_epoch, fp.diverging_end_offset);
                tracing::info!(partition = ?p, leader, epoch = fp.diverging_epoch, leader_end = fp.diverging_end_offset, truncate_to = to, "log diverges from the leader's; truncating");
                p.truncate_as_follower(leader, epoch, to).await
            } else if fp.error_code == code(ResponseError::OffsetOutOfRange) {
                let to = if offset > fp.log_end_offset {
                    fp.log_end_offset
                } else {
                    fp.log_start_offset
                };
                tracing::info!(partition = ?p, leader, offset, leader_start = fp.log_start_offset, leader_end = fp.log_end_offset, truncate_to = to, "fetch offset out of the leader's range; truncating");
                p.truncate_as_follower(leader, epoch, to).await
            } else if fp.error_code != 0 {
                tracing::debug!(partition = ?p, leader, error_code = fp.error_code, "replica fetch refused");
                backoff = true;
                continue;
            } else if !fp.records.is_empty() {
                let records: Bytes = fp.records;
                let appended = p.append_from_leader(leader, epoch, records).await;
                synced.push((p.clone(), fp.high_watermark));
                appended_any.push(p.index);
                appended
            } else {
                synced.push((p.clone(), fp.high_watermark));
                Ok(true)
            };
            if let Err(e) = outcome {
                tracing::warn!(partition = ?p, leader, error = %e, "cannot apply the leader's answer");
                backoff = true;
            }
        }
        // fsync in the background and fetch on (the next fetch reports
        // what is durable by then); when nothing new came, wait for the
        // fsync so that the next fetch reports it without a long-poll's
        // delay and the leader's HW moves at once.
        let got_data = !appended_any.is_empty();
        let flush = tokio::spawn(async move {
            let mut failed = false;
            for r in join_all(synced.iter().map(|(p, hw)| p.sync_as_follower(*hw))).await {
                if let Err(e) = r {
                    tracing::error!(error = %e, "fsync of replicated data failed");
                    failed = true;
                }
            }
            failed
        });
        if let Some(prev) = in_flight.take() {
            if prev.await.unwrap_or(true) {
                backoff = true;
            }
        }
        if got_data {
            in_flight = Some(flush);
        } else if flush.await.unwrap_or(true) {
            backoff = true;
        }
        if backoff {
            let _ = tokio::time::timeout(Duration::from_millis(100), followed.changed()).await;
        }
    }
}
