//! The retention task: every `log.retention.check.interval.ms`, each local
//! replica of a topic whose `cleanup.policy` includes `delete` drops its
//! closed segments past `retention.ms` or beyond `retention.bytes` (see
//! `log::retention`). Leaders and followers each do it for themselves, as
//! in Kafka; a follower also takes its leader's start from every fetch.

use std::sync::Arc;
use std::time::Duration;

use super::Broker;
use crate::log::RetentionLimits;

impl Broker {
    /// Runs until the process ends.
    pub async fn enforce_retention(self: Arc<Self>) {
        let every = Duration::from_millis(self.config.log_retention_check_interval_ms.max(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.retention_pass().await;
        }
    }

    /// One look at every local replica.
    pub async fn retention_pass(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for p in self.all_partitions().await {
            let s = self.topic_settings(p.topic_id);
            if !s.cleanup_policy.delete || (s.retention_ms < 0 && s.retention_bytes < 0) {
                continue;
            }
            let limits = RetentionLimits {
                retention_ms: s.retention_ms,
                retention_bytes: s.retention_bytes,
            };
            match p.apply_retention(now, limits).await {
                Ok(d) if d.segments > 0 => {
                    metrics::counter!("runnel_log_segments_deleted_total")
                        .increment(d.segments as u64);
                    metrics::counter!("runnel_log_bytes_deleted_total").increment(d.bytes);
                    tracing::info!(
                        topic = %p.topic,
                        partition = p.index,
                        segments = d.segments,
                        bytes = d.bytes,
                        log_start_offset = p.log_start_offset(),
                        "retention deleted segments"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(partition = ?p, error = %e, "retention failed"),
            }
        }
    }
}
