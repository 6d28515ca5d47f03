//! One local partition replica: its log, its leader epoch, and the high
//! watermark (HW) that gates what consumers see and when acks=-1 returns.
//!
//! A replica counts only fsynced data towards the HW, so an acknowledged
//! acks=-1 write survives power loss. Fsyncs are group-committed: a flusher
//! task per partition fsyncs whatever has been appended since its last
//! round, so concurrent producers share one fsync. With
//! `log.flush.interval.messages` set, the operator opts into Kafka's
//! flush-later behaviour: the HW follows the log end offset and fsync runs
//! every that many messages.

use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use super::producer_state::{BatchMeta, Check, ProducerStates, SequenceError};
use crate::log::{AppendInfo, Log, LogConfig, ReadResult};
use crate::protocol::batch::BatchesSummary;

pub type Result<T, E = PartitionError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    #[error(transparent)]
    Log(#[from] crate::log::Error),
    #[error("storage task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Sequence(#[from] SequenceError),
}

/// What an append did.
#[derive(Clone, Copy, Debug)]
pub enum Appended {
    New(AppendInfo),
    /// An idempotent producer's retry of a batch already in the log.
    Duplicate(BatchMeta),
}

impl Appended {
    pub fn first_offset(&self) -> i64 {
        match self {
            Appended::New(i) => i.first_offset,
            Appended::Duplicate(m) => m.first_offset,
        }
    }

    pub fn last_offset(&self) -> i64 {
        match self {
            Appended::New(i) => i.last_offset,
            Appended::Duplicate(m) => m.last_offset,
        }
    }
}

/// Which partition a replica is of.
#[derive(Clone, Debug)]
pub struct PartitionId {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
}

/// How the partition makes appended data durable.
#[derive(Clone, Copy, Debug)]
pub enum FlushPolicy {
    /// fsync before data counts towards the HW (the default).
    BeforeAck,
    /// The HW follows the log end offset; fsync every `n` messages.
    EveryMessages(u64),
}

pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    log: Arc<Log>,
    leader_epoch: AtomicI32,
    hw: watch::Sender<i64>,
    policy: FlushPolicy,
    unflushed_messages: AtomicU64,
    /// Held across check, append and record for idempotent batches.
    producers: tokio::sync::Mutex<ProducerStates>,
    flush_wanted: Arc<Notify>,
    /// Bumped whenever any partition's HW moves: wakes long-poll fetches.
    progress: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.index)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PartitionError::Task(e.to_string()))
}

impl Partition {
    /// Opens (recovering if needed) the log in `dir` and starts its flusher.
    pub async fn open(
        dir: &Path,
        id: PartitionId,
        config: LogConfig,
        leader_epoch: i32,
        policy: FlushPolicy,
        progress: Arc<watch::Sender<u64>>,
    ) -> Result<Arc<Partition>> {
        let PartitionId {
            topic,
            topic_id,
            index,
        } = id;
        let dir = dir.to_path_buf();
        let log = Arc::new(blocking(move || Log::open(&dir, config)).await??);
        // Whatever survived recovery is made durable before it is served.
        let flushed = {
            let log = log.clone();
            blocking(move || log.flush()).await??
        };
        let (hw, _) = watch::channel(flushed);
        let p = Arc::new(Partition {
            topic,
            topic_id,
            index,
            log,
            leader_epoch: AtomicI32::new(leader_epoch),
            hw,
            policy,
            unflushed_messages: AtomicU64::new(0),
            producers: tokio::sync::Mutex::new(ProducerStates::default()),
            flush_wanted: Arc::new(Notify::new()),
            progress,
        });
        tokio::spawn(flusher(Arc::downgrade(&p), p.flush_wanted.clone()));
        Ok(p)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Release);
    }

    pub fn high_watermark(&self) -> i64 {
        *self.hw.borrow()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.end_offset()
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Appends already validated batches as the leader. Batches of an
    /// idempotent producer (producer id >= 0) are checked against its
    /// sequence first: a retry is answered with its original offsets.
    pub async fn append(&self, records: Bytes, summary: &BatchesSummary) -> Result<Appended> {
        let (first, last) = (summary.first, summary.last);
        if first.producer_id < 0 {
            return Ok(Appended::New(
                self.append_raw(records, summary.record_count as u64)
                    .await?,
            ));
        }
        let (pid, epoch) = (first.producer_id, first.producer_epoch);
        let last_seq = last.base_sequence.wrapping_add(last.last_offset_delta);
        let mut producers = self.producers.lock().await;
        match producers.check(pid, epoch, first.base_sequence, last_seq)? {
            Check::Duplicate(meta) => Ok(Appended::Duplicate(meta)),
            Check::Append => {
                let info = self
                    .append_raw(records, summary.record_count as u64)
                    .await?;
                producers.record(
                    pid,
                    epoch,
                    BatchMeta {
                        first_seq: first.base_sequence,
                        last_seq,
                        first_offset: info.first_offset,
                        last_offset: info.last_offset,
                    },
                );
                Ok(Appended::New(info))
            }
        }
    }

    async fn append_raw(&self, records: Bytes, records_count: u64) -> Result<AppendInfo> {
        let log = self.log.clone();
        let epoch = self.leader_epoch();
        let now = now_ms();
        let info = blocking(move || log.append(&records, epoch, now)).await??;
        match self.policy {
            FlushPolicy::BeforeAck => self.flush_wanted.notify_one(),
            FlushPolicy::EveryMessages(n) => {
                self.advance_hw(info.last_offset + 1);
                let pending = self
                    .unflushed_messages
                    .fetch_add(records_count, Ordering::AcqRel)
                    + records_count;
                if pending >= n {
                    self.unflushed_messages.store(0, Ordering::Release);
                    self.flush_wanted.notify_one();
                }
            }
        }
        Ok(info)
    }

    /// Waits until the HW passes `offset` (exclusive end) or `timeout`
    /// expires; true when it did.
    pub async fn wait_for_hw(&self, end_offset: i64, timeout: Duration) -> bool {
        let mut rx = self.hw.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|hw| *hw >= end_offset))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Reads whole batches from `offset`, bounded by the HW.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        let log = self.log.clone();
        let hw = self.high_watermark();
        Ok(blocking(move || log.read(offset, max_bytes, hw)).await??)
    }

    fn advance_hw(&self, to: i64) {
        let moved = self.hw.send_if_modified(|hw| {
            if to > *hw {
                *hw = to;
                true
            } else {
                false
            }
        });
        if moved {
            self.progress.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Flushes and marks the log cleanly shut down.
    pub async fn close(&self) -> Result<()> {
        let log = self.log.clone();
        blocking(move || log.close()).await??;
        Ok(())
    }
}

/// Group commit: each round fsyncs everything appended before it began.
/// Appends that arrive during an fsync leave a permit in `wanted`, which
/// starts the next round at once.
async fn flusher(p: std::sync::Weak<Partition>, wanted: Arc<Notify>) {
    loop {
        wanted.notified().await;
        let Some(part) = p.upgrade() else { return };
        let log = part.log.clone();
        match blocking(move || log.flush()).await {
            Ok(Ok(flushed)) => {
                if matches!(part.policy, FlushPolicy::BeforeAck) {
                    part.advance_hw(flushed);
                }
            }
            Ok(Err(e)) | Err(PartitionError::Log(e)) => {
                // A failed fsync means the data's fate on disk is unknown:
                // never count it towards the HW; retry shortly.
                tracing::error!(partition = ?part, error = %e, "fsync failed; high watermark held");
                tokio::time::sleep(Duration::from_millis(100)).await;
                wanted.notify_one();
            }
            Err(e) => {
                tracing::error!(partition = ?part, error = %e, "flusher task failed");
                return;
            }
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
