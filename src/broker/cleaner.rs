//! The log cleaner: compacts the local replicas of topics whose
//! `cleanup.policy` includes `compact` (see `log::cleaner` for a pass).
//! Each round picks the logs whose dirty part is at least
//! `min.cleanable.dirty.ratio` of their closed segments (or holds a record
//! older than `max.compaction.lag.ms`, or a tombstone now due), dirtiest
//! first, and cleans up to `log.cleaner.threads` of them at once, reading
//! and writing no faster than `log.cleaner.io.max.bytes.per.second` in
//! all. With nothing to clean it sleeps `log.cleaner.backoff.ms`. Leaders
//! and followers clean for themselves, as in Kafka.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::StreamExt;
use uuid::Uuid;

use super::Broker;
use crate::config::dynamic::Resolver;
use crate::log::cleaner::CleanOptions;
use crate::replication::Partition;

/// A shared byte budget per second for every pass running at once.
struct Throttle {
    rate: f64,
    start: Instant,
    bytes: u64,
}

impl Throttle {
    /// How long to sleep after `n` more bytes to keep to the rate.
    fn take(&mut self, n: u64) -> Option<Duration> {
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate < 1e15) {
            return None;
        }
        self.bytes += n;
        let due = self.bytes as f64 / self.rate;
        let now = self.start.elapsed().as_secs_f64();
        (due > now).then(|| Duration::from_secs_f64(due - now))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Broker {
    /// Runs until the process ends (not at all without `log.cleaner.enable`).
    pub async fn run_cleaner(self: Arc<Self>) {
        if !self.config.log_cleaner_enable {
            tracing::info!("log.cleaner.enable=false: compacted topics are not cleaned");
            return;
        }
        let mut due: HashMap<(Uuid, i32), i64> = HashMap::new();
        loop {
            let settings = {
                let dynamic = self.dynamic_configs();
                Resolver::new(self.config.node_id, &self.config.raw, &dynamic).cleaner_settings()
            };
            let cleaned = if settings.threads == 0 {
                0
            } else {
                self.cleaning_round(&settings, &mut due).await
            };
            if cleaned == 0 {
                tokio::time::sleep(Duration::from_millis(settings.backoff_ms.max(10))).await;
            }
        }
    }

    /// Cleans the logs that need it; how many passes ran.
    async fn cleaning_round(
        &self,
        cs: &crate::config::dynamic::CleanerSettings,
        due: &mut HashMap<(Uuid, i32), i64>,
    ) -> usize {
        let now = now_ms();
        let mut picked: Vec<(f64, Arc<Partition>, i64, CleanOptions)> = Vec::new();
        for p in self.all_partitions().await {
            let s = self.topic_settings(p.topic_id);
            let key = (p.topic_id, p.index);
            if !s.cleanup_policy.compact {
                due.remove(&key);
                continue;
            }
            let opts = CleanOptions {
                now_ms: now,
                high_watermark: p.high_watermark(),
                min_compaction_lag_ms: s.min_compaction_lag_ms,
                delete_retention_ms: s.delete_retention_ms,
                map_bytes: cs.dedupe_buffer_size,
            };
            let log = p.log().clone();
            let first = log.cleaner_checkpoint();
            let Ok(dirt) = log.dirt(first, &opts) else {
                continue;
            };
            let has_dirt = dirt.end_dirty > dirt.first_dirty;
            let overdue = dirt
                .oldest_dirty_ms
                .is_some_and(|t| now.saturating_sub(t) > s.max_compaction_lag_ms);
            let tombstones = due.get(&key).is_some_and(|d| *d <= now);
            let ratio = dirt.ratio();
            if (has_dirt && (ratio >= s.min_cleanable_dirty_ratio || overdue)) || tombstones {
                picked.push((ratio, p, first, opts));
            }
        }
        if picked.is_empty() {
            return 0;
        }
        picked.sort_by(|a, b| b.0.total_cmp(&a.0));
        let throttle = Arc::new(Mutex::new(Throttle {
            rate: cs.io_max_bytes_per_second,
            start: Instant::now(),
            bytes: 0,
        }));
        let results: Vec<_> = futures::stream::iter(picked)
            .map(|(ratio, p, first, opts)| {
                let throttle = throttle.clone();
                async move {
                    let log = p.log().clone();
                    let r = tokio::task::spawn_blocking(move || {
                        let mut take = |n: u64| {
                            let wait = throttle.lock().unwrap_or_else(|e| e.into_inner()).take(n);
                            if let Some(d) = wait {
                                std::thread::sleep(d);
                            }
                        };
                        log.clean(first, &opts, &mut take)
                    })
                    .await;
                    (p, ratio, r)
                }
            })
            .buffer_unordered(cs.threads.max(1))
            .collect()
            .await;
        let mut passes = 0;
        for (p, ratio, r) in results {
            let key = (p.topic_id, p.index);
            match r {
                Ok(Ok(st)) => {
                    passes += 1;
                    match st.next_tombstone_due_ms {
                        Some(d) => due.insert(key, d),
                        None => due.remove(&key),
                    };
                    metrics::counter!("runnel_log_cleaner_passes_total").increment(1);
                    metrics::counter!("runnel_log_cleaner_bytes_read_total")
                        .increment(st.bytes_read);
                    metrics::counter!("runnel_log_cleaner_bytes_written_total")
                        .increment(st.bytes_written);
                    metrics::counter!("runnel_log_cleaner_records_removed_total")
                        .increment(st.records_removed);
                    tracing::info!(
                        topic = %p.topic,
                        partition = p.index,
                        dirty_ratio = format!("{ratio:.2}"),
                        first_dirty = st.first_dirty,
                        end_dirty = st.end_dirty,
                        keys = st.keys,
                        segments = st.segments_rewritten,
                        read = st.bytes_read,
                        written = st.bytes_written,
                        removed = st.records_removed,
                        tombstones_removed = st.tombstones_removed,
                        "cleaned log"
                    );
                }
                Ok(Err(e)) => {
                    tracing::warn!(partition = ?p, error = %e, "log cleaning failed");
                    due.remove(&key);
                }
                Err(e) => tracing::error!(partition = ?p, error = %e, "log cleaner task failed"),
            }
        }
        passes
    }
}
