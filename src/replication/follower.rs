//! The follower side of replication: one fetcher per leader this broker
//! follows partitions of (Kafka's replica fetcher: one long-poll at a time
//! carrying every partition between the pair). Each round appends what the
//! leader sent as it is, fsyncs it in the background while the next fetch
//! goes out, and cuts a divergent suffix by leader epoch (KIP-279).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::watch;
use uuid::Uuid;

use super::replicas::{Followed, Replicas};
use super::service::MAX_RESPONSE_BYTES;
use super::Partition;
use crate::rpc::pb::{FetchError, FetchPartition, ReplicaFetchRequest, ReplicaFetchResponse};
use crate::rpc::Channels;

/// Finds a broker's node-to-node (CONTROLLER listener) address.
pub type Resolver = Arc<dyn Fn(i32) -> Option<String> + Send + Sync>;

/// The follower's fetch settings (Kafka's `replica.fetch.*` keys).
#[derive(Clone, Copy, Debug)]
pub struct FetcherConfig {
    /// This broker's id.
    pub me: i32,
    /// `replica.fetch.wait.max.ms`.
    pub max_wait_ms: u64,
    /// `replica.fetch.max.bytes`, per partition.
    pub partition_max_bytes: usize,
    /// `replica.fetch.response.max.bytes`.
    pub response_max_bytes: usize,
}

/// Starts the follower side: one fetcher task per leader this broker
/// follows partitions of, for as long as the process runs.
pub fn start(
    replicas: Arc<Replicas>,
    config: FetcherConfig,
    resolver: Resolver,
    channels: Channels,
) {
    tokio::spawn(async move {
        let mut followed = replicas.followed();
        let mut running: HashSet<i32> = HashSet::new();
        loop {
            let leaders: Vec<i32> = followed.borrow_and_update().keys().copied().collect();
            for leader in leaders {
                if running.insert(leader) {
                    tokio::spawn(fetcher(
                        replicas.clone(),
                        leader,
                        config,
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

/// What one fetch asked for, per partition: the replica, its leader epoch
/// and the offset it fetched from.
type Sent = HashMap<(Uuid, i32), (Arc<Partition>, i32, i64)>;

/// Fetches from `leader` for every partition this broker follows it in.
async fn fetcher(
    replicas: Arc<Replicas>,
    leader: i32,
    config: FetcherConfig,
    resolver: Resolver,
    channels: Channels,
) {
    Fetcher {
        leader,
        me: config.me,
        wait_ms: config.max_wait_ms.min(10_000) as u32,
        per_partition: config.partition_max_bytes.min(MAX_RESPONSE_BYTES) as u32,
        total: config.response_max_bytes.min(MAX_RESPONSE_BYTES) as u32,
        followed: replicas.followed(),
        channels,
        failures: 0,
        in_flight: None,
    }
    .run(resolver)
    .await
}

/// One leader's fetcher and what it carries from round to round.
struct Fetcher {
    leader: i32,
    me: i32,
    wait_ms: u32,
    per_partition: u32,
    total: u32,
    followed: watch::Receiver<Arc<Followed>>,
    channels: Channels,
    /// Fetches failed in a row (logged at the first and every 50th).
    failures: u32,
    /// The background fsync of the previous round's appends; true if it
    /// failed.
    in_flight: Option<tokio::task::JoinHandle<bool>>,
}

impl Fetcher {
    async fn run(mut self, resolver: Resolver) {
        let leader = self.leader;
        loop {
            let parts: Vec<Arc<Partition>> = self
                .followed
                .borrow_and_update()
                .get(&leader)
                .cloned()
                .unwrap_or_default();
            if parts.is_empty() {
                if self.followed.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let Some(addr) = resolver(leader) else {
                tracing::warn!(leader, "no address for the leader; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let (req, sent) = self.request(&parts);
            let Some(resp) = self.send(&addr, req).await else {
                // Wakes early when the partitions move to another leader.
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), self.followed.changed()).await;
                continue;
            };
            let (synced, got_data, mut backoff) = self.apply(resp, sent).await;
            backoff |= self.sync(synced, got_data).await;
            if backoff {
                let _ =
                    tokio::time::timeout(Duration::from_millis(100), self.followed.changed()).await;
            }
        }
    }

    /// The fetch for `parts`, each from its log end.
    fn request(&self, parts: &[Arc<Partition>]) -> (ReplicaFetchRequest, Sent) {
        let mut sent = Sent::new();
        // While an fsync is still running, the leader should not hold this
        // fetch open for new records: what it is waiting for (to move its
        // HW) is this follower's next durable offset, which comes with the
        // fetch after the fsync.
        let syncing = self.in_flight.as_ref().is_some_and(|f| !f.is_finished());
        let mut req = ReplicaFetchRequest {
            follower_id: self.me,
            max_wait_ms: if syncing { 0 } else { self.wait_ms },
            max_bytes: self.total,
            partitions: Vec::with_capacity(parts.len()),
        };
        for p in parts {
            let epoch = p.leader_epoch();
            let offset = p.log_end_offset();
            req.partitions.push(FetchPartition {
                topic_id: p.topic_id.as_bytes().to_vec(),
                partition: p.index,
                durable_offset: p.durable_offset(),
                // Its disk fails: the leader takes it out of the ISR now
                // rather than after replica.lag.time.max.ms.
                storage_error: p.storage_failing(),
                fetch_offset: offset,
                last_fetched_epoch: p.log().latest_epoch().unwrap_or(-1),
                current_leader_epoch: epoch,
                max_bytes: self.per_partition,
            });
            sent.insert((p.topic_id, p.index), (p.clone(), epoch, offset));
        }
        (req, sent)
    }

    /// Sends the fetch; `None` (logged) when it failed.
    async fn send(&mut self, addr: &str, req: ReplicaFetchRequest) -> Option<ReplicaFetchResponse> {
        let answer = match self.channels.replication(addr) {
            Ok(mut client) => {
                let limit =
                    Duration::from_millis(u64::from(self.wait_ms)) + Duration::from_secs(10);
                match tokio::time::timeout(limit, client.fetch(req)).await {
                    Ok(Ok(resp)) => Ok(resp.into_inner()),
                    Ok(Err(status)) => Err(status.to_string()),
                    Err(_) => Err("timed out".to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(r) => {
                self.failures = 0;
                Some(r)
            }
            Err(e) => {
                self.failures += 1;
                let failures = self.failures;
                if failures == 1 || failures % 50 == 0 {
                    tracing::warn!(leader = self.leader, %addr, error = %e, failures, "replica fetch failed");
                }
                None
            }
        }
    }

    /// Applies the leader's answer to each partition: appends records,
    /// truncates on divergence or an out-of-range offset. Returns the
    /// partitions to fsync with the leader's HW, whether any got records,
    /// and whether to back off (a refusal or a failure).
    async fn apply(
        &self,
        resp: ReplicaFetchResponse,
        mut sent: Sent,
    ) -> (Vec<(Arc<Partition>, i64)>, bool, bool) {
        let leader = self.leader;
        let mut backoff = false;
        let mut synced = Vec::new();
        let mut got_data = false;
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
            } else if fp.error_code() == FetchError::OffsetOutOfRange {
                if offset > fp.log_end_offset {
                    let to = fp.log_end_offset;
                    tracing::info!(partition = ?p, leader, offset, leader_end = fp.log_end_offset, truncate_to = to, "fetch offset beyond the leader's log end; truncating");
                    p.truncate_as_follower(leader, epoch, to).await
                } else {
                    // Below the leader's start: what this replica would
                    // fetch next is gone there (retention, DeleteRecords).
                    let to = fp.log_start_offset;
                    tracing::info!(partition = ?p, leader, offset, leader_start = to, "fetch offset below the leader's log start; starting over there");
                    p.restart_as_follower(leader, epoch, to).await
                }
            } else if fp.error_code() != FetchError::None {
                tracing::debug!(partition = ?p, leader, error_code = fp.error_code, "replica fetch refused");
                backoff = true;
                continue;
            } else {
                if fp.log_start_offset > p.log_start_offset() {
                    // The leader's retention or DeleteRecords moved its
                    // start: follow it (up to this replica's HW).
                    if let Err(e) = p.advance_log_start(fp.log_start_offset).await {
                        tracing::warn!(partition = ?p, leader, error = %e, "cannot move the log start");
                    }
                }
                synced.push((p.clone(), fp.high_watermark));
                if fp.records.is_empty() {
                    Ok(true)
                } else {
                    got_data = true;
                    p.append_from_leader(leader, epoch, fp.records).await
                }
            };
            if let Err(e) = outcome {
                if e.is_storage() {
                    // The partition logs the episode once; the leader
                    // hears of it with the next fetch.
                    tracing::debug!(partition = ?p, leader, error = %e, "cannot append the leader's batches");
                } else {
                    tracing::warn!(partition = ?p, leader, error = %e, "cannot apply the leader's answer");
                }
                backoff = true;
            }
        }
        (synced, got_data, backoff)
    }

    /// fsyncs in the background and fetches on (the next fetch reports
    /// what is durable by then); when nothing new came, waits for the fsync
    /// so that the next fetch reports it without a long-poll's delay and
    /// the leader's HW moves at once. True when an fsync failed.
    async fn sync(&mut self, synced: Vec<(Arc<Partition>, i64)>, got_data: bool) -> bool {
        let mut failed = false;
        let flush = tokio::spawn(async move {
            let mut failed = false;
            for r in join_all(synced.iter().map(|(p, hw)| p.sync_as_follower(*hw))).await {
                if let Err(e) = r {
                    if e.is_storage() {
                        // Counted and logged by the partition.
                        tracing::debug!(error = %e, "fsync of replicated data failed");
                    } else {
                        tracing::error!(error = %e, "fsync of replicated data failed");
                    }
                    failed = true;
                }
            }
            failed
        });
        if let Some(prev) = self.in_flight.take() {
            if prev.await.unwrap_or(true) {
                failed = true;
            }
        }
        if got_data {
            self.in_flight = Some(flush);
        } else if flush.await.unwrap_or(true) {
            failed = true;
        }
        failed
    }
}
