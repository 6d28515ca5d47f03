//! The broker's part in replication: starting the follower fetchers with
//! this broker's settings, and keeping the ISR (sending leaders' ISR changes
//! to the controller, shrinking it when followers fall behind), the HW
//! checkpoints and the partition gauges.

use std::sync::Arc;
use std::time::Duration;

use super::Broker;
use crate::controller::batcher::Batcher;
use crate::controller::records::{MetadataCommand, MetadataError, MetadataResponse};
use crate::replication::follower::{self, FetcherConfig, Resolver};
use crate::replication::leader::enough_replicas;
use crate::replication::partition::IsrProposal;
use crate::replication::replicas::Replicas;
use crate::rpc::Channels;

/// How often each partition's HW is written down (Kafka's
/// `replica.high.watermark.checkpoint.interval.ms`).
const HW_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

impl Broker {
    /// Starts the follower side (see [`follower::start`]).
    pub fn start_replica_fetchers(self: &Arc<Self>, resolver: Resolver, channels: Channels) {
        let config = FetcherConfig {
            me: self.config.node_id,
            max_wait_ms: self.config.replica_fetch_wait_max_ms,
            partition_max_bytes: self.config.replica_fetch_max_bytes,
            response_max_bytes: self.config.replica_fetch_response_max_bytes,
        };
        follower::start(self.replicas.clone(), config, resolver, channels);
    }

    /// Sends leaders' ISR changes to the controller, and every second
    /// looks for followers that fell out of sync. Runs until the process ends.
    pub async fn maintain_isr(self: Arc<Self>, batcher: Batcher) {
        let Some(mut proposals) = self.replicas.take_isr_proposals() else {
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
                        if let Ok((bytes, segments)) = p.log().size_and_segments() {
                            let labels = [("topic", p.topic.clone()), ("partition", p.index.to_string())];
                            metrics::gauge!("runnel_log_size_bytes", &labels).set(bytes as f64);
                            metrics::gauge!("runnel_log_segments", &labels).set(segments as f64);
                        }
                        let expired = p.expire_producers(idle).await;
                        if expired > 0 {
                            tracing::debug!(partition = ?p, expired, "forgot idle producers");
                        }
                    }
                }
                prop = proposals.recv() => {
                    let Some(prop) = prop else { return };
                    tokio::spawn(propose_isr(batcher.clone(), self.replicas.clone(), prop));
                }
                _ = tick.tick() => {
                    let leaders = self.leader_partitions().await;
                    let (mut under, mut under_min) = (0u64, 0u64);
                    for p in &leaders {
                        let proposals = [p.shrink_isr(max_lag), p.retry_isr_addition()];
                        for prop in proposals.into_iter().flatten() {
                            tokio::spawn(propose_isr(batcher.clone(), self.replicas.clone(), prop));
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

/// Proposes an ISR change, through the batcher: a broker that leads
/// thousands of partitions proposes thousands at once when its followers
/// come back, and one Raft entry (one forwarded call) then carries
/// hundreds of them. A refusal is handed back to the partition,
/// which forgets the change (an addition the controller refused, for a
/// fenced follower say, must not hold the HW). A failed call leaves it
/// pending, the safe side: the outcome is unknown, and
/// `Partition::retry_isr_addition` proposes it again.
async fn propose_isr(batcher: Batcher, replicas: Arc<Replicas>, prop: IsrProposal) {
    let cmd = MetadataCommand::AlterPartition {
        topic_id: prop.topic_id,
        partition: prop.partition,
        leader: prop.leader,
        leader_epoch: prop.leader_epoch,
        partition_epoch: prop.partition_epoch,
        isr: prop.isr.clone(),
    };
    match batcher.propose(cmd).answer().await {
        Ok(MetadataResponse::Ok) => {
            let kind = if prop.expands { "expand" } else { "shrink" };
            metrics::counter!("runnel_isr_changes_total", "kind" => kind).increment(1);
            let topic = replicas
                .get(prop.topic_id, prop.partition)
                .await
                .map(|p| p.topic.clone())
                .unwrap_or_default();
            tracing::info!(
                %topic,
                topic_id = %prop.topic_id,
                partition = prop.partition,
                isr = ?prop.isr,
                kind,
                leader_epoch = prop.leader_epoch,
                partition_epoch = prop.partition_epoch + 1,
                "ISR changed"
            );
        }
        Ok(other) => {
            tracing::info!(topic_id = %prop.topic_id, partition = prop.partition, isr = ?prop.isr, answer = ?other, "ISR change refused");
            // Only this refusal says the change was not made in the
            // partition epoch it named (the epoch is checked first). A
            // stale epoch or leader means the partition moved on, and its
            // new epoch reaches the leader through the metadata.
            if let MetadataResponse::Rejected(MetadataError::IneligibleReplica(_)) = other {
                if let Some(p) = replicas.get(prop.topic_id, prop.partition).await {
                    p.isr_change_refused(&prop);
                }
            }
        }
        Err(e) => {
            tracing::warn!(topic_id = %prop.topic_id, partition = prop.partition, error = %e, "ISR change not committed")
        }
    }
}
