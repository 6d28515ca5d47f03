//! One local partition replica: its log, its role (leader or follower) and
//! leader epoch, and the high watermark (HW) that gates what consumers see
//! and when acks=-1 returns.
//!
//! As leader it tracks each follower's progress (the offset it fetches
//! from, which it has fsynced first), keeps the HW at the lowest such offset
//! in the ISR, and proposes ISR changes (shrink after
//! `replica.lag.time.max.ms`, expand once a follower caught up); the
//! controller commits them with the leader and partition epochs. As
//! follower it appends the leader's batches as they are and truncates a
//! divergent suffix by leader epoch (KIP-101/279/595).
//!
//! A replica counts only fsynced data towards the HW, so an acknowledged
//! acks=-1 write survives power loss. Fsyncs are group-committed: a flusher
//! task per partition fsyncs whatever has been appended since its last
//! round, so concurrent producers share one fsync. With
//! `log.flush.interval.messages` set, the operator opts into Kafka's
//! flush-later behaviour: the HW follows the log end offset and fsync runs
//! every that many messages.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use super::leader::{enough_replicas, FollowerFetch, IsrState, NotAFollower};
use super::producer_state::{BatchMeta, Check, ProducerStates, SequenceError};
use crate::log::{AppendInfo, Log, LogConfig, ReadResult};
use crate::now_ms;
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
    /// This replica does not lead the partition (any more).
    #[error("this broker is not the partition's leader")]
    NotLeader,
    /// acks=-1 and the ISR is smaller than `min.insync.replicas`: nothing
    /// was written.
    #[error("the ISR {isr:?} has fewer than min.insync.replicas={min} replicas")]
    NotEnoughReplicas { isr: Vec<i32>, min: i32 },
}

impl PartitionError {
    /// The disk (or the log's files) failed: KAFKA_STORAGE_ERROR.
    pub fn is_storage(&self) -> bool {
        matches!(self, PartitionError::Log(e) if e.is_storage())
    }
}

/// Why an acks=-1 write, already in the leader's log, is not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The ISR had the batch, but shrank below `min.insync.replicas`.
    #[error("written, but the ISR {isr:?} shrank below min.insync.replicas={min}")]
    NotEnoughReplicasAfterAppend { isr: Vec<i32>, min: i32 },
    #[error("timed out waiting for the in-sync replicas")]
    TimedOut,
    #[error("leadership moved before the in-sync replicas had the batch")]
    LostLeadership,
}

/// What acks a produce asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// acks=0 and acks=1: the leader's write is enough.
    Leader,
    /// acks=-1: the whole ISR, of at least `min.insync.replicas`.
    All,
}

/// This replica's part in the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower {
        leader: i32,
    },
    /// No leader (all of the ISR is down): nobody serves it.
    Offline,
}

/// What the controller says about the partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The topic's `min.insync.replicas` (else the broker's).
    pub min_insync_replicas: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// An ISR change this leader asks the controller to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrProposal {
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
    /// A follower joins (else followers leave).
    pub expands: bool,
}

/// How an acks=-1 wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwWait {
    Reached,
    TimedOut,
    /// The leader epoch changed: what was appended may be truncated.
    LostLeadership,
}

/// Why a follower's fetch is refused.
#[derive(Debug, thiserror::Error)]
pub enum FetchRefusal {
    #[error("not the leader")]
    NotLeader,
    #[error("the follower's leader epoch {0} is older than ours")]
    FencedEpoch(i32),
    #[error("the follower's leader epoch {0} is newer than ours")]
    UnknownEpoch(i32),
    /// The follower's log diverges: it must truncate to at most
    /// `end_offset` (the end of `epoch` here) and fetch again.
    #[error("the follower diverges after epoch {epoch} at offset {end_offset}")]
    Diverging { epoch: i32, end_offset: i64 },
    #[error("offset {offset} is outside {start}..{end}")]
    OutOfRange { offset: i64, start: i64, end: i64 },
    #[error(transparent)]
    Storage(#[from] PartitionError),
}

/// What the leader hands a follower.
#[derive(Debug)]
pub struct ReplicaFetched {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub proposal: Option<IsrProposal>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    hw: i64,
    epoch: i32,
}

/// The leader's view of one follower (Kafka's ReplicaState).
#[derive(Debug)]
struct ReplicaState {
    role: Role,
    partition_epoch: i32,
    min_insync_replicas: i32,
    /// Replica sets and, as leader, the followers' progress.
    sets: IsrState,
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
    /// This broker's id.
    me: i32,
    log: Arc<Log>,
    leader_epoch: AtomicI32,
    /// The HW last written to `high-watermark-checkpoint`.
    checkpointed_hw: AtomicI64,
    mark: watch::Sender<Mark>,
    /// `FlushPolicy` as `flush.messages`: 0 is `BeforeAck` (changes with
    /// the topic's config).
    flush_every: AtomicU64,
    /// `flush.ms` under flush-later: unflushed data is fsynced at least this
    /// often (ms; 0 or very large: never on time alone).
    flush_ms: AtomicU64,
    unflushed_messages: AtomicU64,
    /// The write lock: held across every change to the log (leader
    /// appends with their sequence checks, follower appends, truncation,
    /// role changes), so that a batch is never written in a stale role.
    producers: tokio::sync::Mutex<ProducerStates>,
    /// The active segment's base when producer state was last snapshotted.
    snapshot_base: AtomicI64,
    state: Mutex<ReplicaState>,
    flush_wanted: Arc<Notify>,
    /// Bumped whenever any partition's HW moves: wakes long-poll fetches.
    progress: Arc<watch::Sender<u64>>,
    /// Bumped on every leader append: wakes followers' fetches.
    appended: Arc<watch::Sender<u64>>,
    /// The last append, or an fsync since, failed for the disk's sake:
    /// logged once when it starts and once when an append succeeds again.
    storage_failing: AtomicBool,
}

/// The channels a partition signals through (shared by all partitions).
#[derive(Clone)]
pub struct Signals {
    pub progress: Arc<watch::Sender<u64>>,
    pub appended: Arc<watch::Sender<u64>>,
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
    /// The replica starts without a role: [`Partition::apply`] gives it one.
    pub async fn open(
        dir: &Path,
        id: PartitionId,
        config: LogConfig,
        me: i32,
        policy: FlushPolicy,
        signals: Signals,
    ) -> Result<Arc<Partition>> {
        let PartitionId {
            topic,
            topic_id,
            index,
        } = id;
        let dir = dir.to_path_buf();
        let log = Arc::new(blocking(move || Log::open(&dir, config)).await??);
        // Whatever survived recovery is made durable before it is served.
        // The HW starts at zero and is learnt again: from the ISR as
        // leader, from the leader as follower.
        {
            let log = log.clone();
            blocking(move || log.flush()).await??;
        }
        let producers = {
            let log = log.clone();
            blocking(move || rebuild_producers(&log)).await??
        };
        let hw = log.checkpointed_high_watermark().unwrap_or(0);
        let (mark, _) = watch::channel(Mark { hw, epoch: -1 });
        let p = Arc::new(Partition {
            topic,
            topic_id,
            index,
            me,
            log,
            leader_epoch: AtomicI32::new(-1),
            checkpointed_hw: AtomicI64::new(hw),
            mark,
            flush_every: AtomicU64::new(match policy {
                FlushPolicy::BeforeAck => 0,
                FlushPolicy::EveryMessages(n) => n.max(1),
            }),
            flush_ms: AtomicU64::new(u64::MAX),
            unflushed_messages: AtomicU64::new(0),
            producers: tokio::sync::Mutex::new(producers),
            snapshot_base: AtomicI64::new(-1),
            state: Mutex::new(ReplicaState {
                role: Role::Offline,
                partition_epoch: -1,
                min_insync_replicas: 1,
                sets: IsrState::new(me),
            }),
            flush_wanted: Arc::new(Notify::new()),
            progress: signals.progress,
            appended: signals.appended,
            storage_failing: AtomicBool::new(false),
        });
        tokio::spawn(flusher(Arc::downgrade(&p), p.flush_wanted.clone()));
        Ok(p)
    }

    /// Whether this replica's last append (or an fsync since) failed for
    /// the disk's sake, until an append succeeds again.
    pub fn storage_failing(&self) -> bool {
        self.storage_failing.load(Ordering::Acquire)
    }

    /// Counts a storage failure of `op`, and logs it if it starts an
    /// episode (the partition was healthy).
    fn storage_failed(&self, op: &'static str, e: &PartitionError) {
        // A log that refuses writes since an fsync failed was counted once,
        // when it failed.
        if !matches!(e, PartitionError::Log(crate::log::Error::FsyncFailed(_))) {
            metrics::counter!("runnel_log_storage_errors_total").increment(1);
        }
        if !self.storage_failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(partition = ?self, op, error = %e,
                "storage error: refusing writes to this partition until the disk takes them again");
        } else {
            tracing::debug!(partition = ?self, op, error = %e, "storage error (still failing)");
        }
    }

    /// An append succeeded: ends a storage failure episode.
    fn storage_ok(&self) {
        if self.storage_failing.load(Ordering::Acquire)
            && self.storage_failing.swap(false, Ordering::AcqRel)
        {
            tracing::info!(partition = ?self, end_offset = self.log.end_offset(),
                "storage recovered: appends succeed again");
        }
    }

    /// Feeds the outcome of a log write to the storage episode.
    fn track_storage<T>(&self, op: &'static str, r: &Result<T>) {
        match r {
            Ok(_) => self.storage_ok(),
            Err(e) if e.is_storage() => self.storage_failed(op, e),
            Err(_) => {}
        }
    }

    fn policy(&self) -> FlushPolicy {
        match self.flush_every.load(Ordering::Acquire) {
            0 => FlushPolicy::BeforeAck,
            n => FlushPolicy::EveryMessages(n),
        }
    }

    /// Takes the topic's log settings and flush policy, as they changed
    /// (a config change, which needs no restart). A partition leaving
    /// flush-later fsyncs what it holds before its HW counts only fsynced
    /// data again; the HW never moves back.
    pub fn set_settings(
        &self,
        config: LogConfig,
        policy: FlushPolicy,
        flush_ms: i64,
    ) -> Result<()> {
        self.log.set_config(config)?;
        self.flush_ms.store(
            u64::try_from(flush_ms).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        let every = match policy {
            FlushPolicy::BeforeAck => 0,
            FlushPolicy::EveryMessages(n) => n.max(1),
        };
        if self.flush_every.swap(every, Ordering::AcqRel) != every {
            tracing::info!(partition = ?self, ?policy, "flush policy changed");
            self.flush_wanted.notify_one();
        }
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ReplicaState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub fn role(&self) -> Role {
        self.state().role
    }

    pub fn is_leader(&self) -> bool {
        self.role() == Role::Leader
    }

    /// The ISR as this replica last learnt it from the controller.
    pub fn isr(&self) -> Vec<i32> {
        self.state().sets.isr.clone()
    }

    /// The topic's `min.insync.replicas` as last learnt.
    pub fn min_insync_replicas(&self) -> i32 {
        self.state().min_insync_replicas
    }

    /// The ISR, if it is too small for an acks=-1 write.
    fn too_few_replicas(&self) -> Option<(Vec<i32>, i32)> {
        let st = self.state();
        let min = st.min_insync_replicas;
        (!enough_replicas(&st.sets.isr, min)).then(|| (st.sets.isr.clone(), min))
    }

    /// (replicas, ISR) as last learnt.
    pub fn replica_sets(&self) -> (Vec<i32>, Vec<i32>) {
        let st = self.state();
        (st.sets.replicas.clone(), st.sets.isr.clone())
    }

    /// How many offsets each follower is behind this leader's log end.
    pub fn follower_lags(&self) -> Vec<(i32, i64)> {
        self.state().sets.lags(self.log.end_offset())
    }

    pub fn high_watermark(&self) -> i64 {
        self.mark.borrow().hw
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

    /// Follows the controller's word on this partition: becomes leader or
    /// follower when the leader epoch moves, and takes ISR changes.
    pub async fn apply(&self, a: &Assignment) -> Result<()> {
        let role = if a.leader == self.me {
            Role::Leader
        } else if a.leader >= 0 {
            Role::Follower { leader: a.leader }
        } else {
            Role::Offline
        };
        let new_epoch = {
            let st = self.state();
            if a.leader_epoch < self.leader_epoch() {
                return Ok(());
            }
            a.leader_epoch != self.leader_epoch() || st.role != role
        };
        if new_epoch {
            // No append may run in the old role once the new one starts.
            let mut w = self.producers.lock().await;
            w.forget_failures();
            if role == Role::Leader && a.leader_epoch > 0 {
                w.took_over(now_ms());
            }
            if role == Role::Leader {
                let log = self.log.clone();
                let epoch = a.leader_epoch;
                blocking(move || log.begin_epoch(epoch)).await??;
            }
            let mut st = self.state();
            st.role = role;
            st.sets
                .begin_epoch(&a.replicas, self.log.end_offset(), Instant::now());
            self.leader_epoch.store(a.leader_epoch, Ordering::Release);
            drop(st);
            tracing::info!(
                topic = %self.topic,
                partition = self.index,
                ?role,
                leader = a.leader,
                leader_epoch = a.leader_epoch,
                partition_epoch = a.partition_epoch,
                end_offset = self.log.end_offset(),
                "partition role changed"
            );
            self.mark.send_modify(|m| m.epoch = a.leader_epoch);
            self.appended.send_modify(|n| *n = n.wrapping_add(1));
        }
        let mut st = self.state();
        st.min_insync_replicas = a.min_insync_replicas;
        if a.partition_epoch != st.partition_epoch {
            st.partition_epoch = a.partition_epoch;
            st.sets
                .set_replica_sets(&a.replicas, &a.isr, Instant::now());
        }
        if st.role == Role::Leader {
            let hw = self.leader_hw(&st);
            drop(st);
            if let Some(hw) = hw {
                self.advance_hw(hw);
            }
        }
        Ok(())
    }

    /// The HW the ISR allows (see [`IsrState::high_watermark`]) from what
    /// this replica holds durably.
    fn leader_hw(&self, st: &ReplicaState) -> Option<i64> {
        st.sets
            .high_watermark(self.durable_offset(), Instant::now())
    }

    fn update_leader_hw(&self) {
        let st = self.state();
        if st.role != Role::Leader {
            return;
        }
        let hw = self.leader_hw(&st);
        drop(st);
        if let Some(hw) = hw {
            self.advance_hw(hw);
        }
    }

    /// Appends already validated batches as the leader. Batches of an
    /// idempotent producer (producer id >= 0) are checked against its
    /// sequence first: a retry is answered with its original offsets.
    /// With [`Acks::All`] nothing is written while the ISR is smaller than
    /// `min.insync.replicas`. Returns the leader epoch the batches were
    /// written in.
    pub async fn append(
        &self,
        records: Bytes,
        summary: &BatchesSummary,
        acks: Acks,
    ) -> Result<(Appended, i32)> {
        let (first, last) = (summary.first, summary.last);
        let mut producers = self.producers.lock().await;
        if !self.is_leader() {
            return Err(PartitionError::NotLeader);
        }
        if acks == Acks::All {
            if let Some((isr, min)) = self.too_few_replicas() {
                return Err(PartitionError::NotEnoughReplicas { isr, min });
            }
        }
        let epoch = self.leader_epoch();
        if first.producer_id < 0 {
            let info = self
                .append_raw(records, summary.record_count as u64, epoch)
                .await?;
            self.snapshot_on_roll(&producers).await;
            return Ok((Appended::New(info), epoch));
        }
        let (pid, pepoch) = (first.producer_id, first.producer_epoch);
        let last_seq = last.base_sequence.wrapping_add(last.last_offset_delta);
        let checked = match producers.check(pid, pepoch, first.base_sequence, last_seq) {
            Err(SequenceError::OutOfOrder { expected, got })
                if producers.hold_gap(expected, got, now_ms()) =>
            {
                tracing::debug!(
                    producer_id = pid,
                    expected,
                    got,
                    "sequence gap: refused as not written, waiting for the missing batch"
                );
                return Err(PartitionError::Sequence(SequenceError::AheadOfMissing {
                    expected,
                    got,
                }));
            }
            other => other?,
        };
        match checked {
            Check::Duplicate(meta) => Ok((Appended::Duplicate(meta), epoch)),
            Check::Append => {
                let appended = self
                    .append_raw(records, summary.record_count as u64, epoch)
                    .await;
                let info = match appended {
                    Ok(info) => info,
                    Err(e) => {
                        if e.is_storage() {
                            // Its next batches must wait for this one
                            // rather than be taken for a gap.
                            producers.record_failure(pid, pepoch, first.base_sequence, now_ms());
                        }
                        return Err(e);
                    }
                };
                producers.record_at(
                    pid,
                    pepoch,
                    BatchMeta {
                        first_seq: first.base_sequence,
                        last_seq,
                        first_offset: info.first_offset,
                        last_offset: info.last_offset,
                    },
                    now_ms(),
                );
                self.snapshot_on_roll(&producers).await;
                Ok((Appended::New(info), epoch))
            }
        }
    }

    async fn append_raw(
        &self,
        records: Bytes,
        records_count: u64,
        epoch: i32,
    ) -> Result<AppendInfo> {
        let log = self.log.clone();
        let now = now_ms();
        let appended = blocking(move || log.append(&records, epoch, now))
            .await
            .and_then(|r| r.map_err(PartitionError::from));
        self.track_storage("append", &appended);
        let info = appended?;
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
        match self.policy() {
            FlushPolicy::BeforeAck => self.flush_wanted.notify_one(),
            FlushPolicy::EveryMessages(n) => {
                self.update_leader_hw();
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

    /// Waits until the HW passes `end_offset` (exclusive) in leader epoch
    /// `epoch`, the epoch changes, or `timeout` expires.
    pub async fn wait_for_hw(&self, end_offset: i64, epoch: i32, timeout: Duration) -> HwWait {
        let mut rx = self.mark.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|m| m.epoch != epoch || m.hw >= end_offset),
        )
        .await;
        match waited {
            Ok(Ok(m)) if m.epoch == epoch => HwWait::Reached,
            Ok(_) => HwWait::LostLeadership,
            Err(_) => HwWait::TimedOut,
        }
    }

    /// Waits until an acks=-1 write that ends at `end_offset` (exclusive),
    /// appended in leader epoch `epoch`, may be acknowledged: the HW has
    /// passed it and the ISR still holds `min.insync.replicas`.
    pub async fn wait_acked(
        &self,
        end_offset: i64,
        epoch: i32,
        timeout: Duration,
    ) -> std::result::Result<(), AckError> {
        let waiting = metrics::gauge!("runnel_produce_waiting");
        waiting.increment(1.0);
        let hw = self.wait_for_hw(end_offset, epoch, timeout).await;
        waiting.decrement(1.0);
        match hw {
            HwWait::Reached => match self.too_few_replicas() {
                None => Ok(()),
                Some((isr, min)) => Err(AckError::NotEnoughReplicasAfterAppend { isr, min }),
            },
            HwWait::TimedOut => Err(AckError::TimedOut),
            HwWait::LostLeadership => Err(AckError::LostLeadership),
        }
    }

    /// Reads whole batches from `offset`, bounded by the HW.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        let log = self.log.clone();
        let hw = self.high_watermark();
        Ok(blocking(move || log.read(offset, max_bytes, hw)).await??)
    }

    /// Serves a follower's fetch as leader: checks its epoch and history,
    /// records its progress (which may move the HW or earn it a place in
    /// the ISR), and reads from `fetch_offset` up to the log end.
    pub async fn replica_fetch(
        &self,
        follower: i32,
        fetch_offset: i64,
        durable_offset: i64,
        last_fetched_epoch: i32,
        current_leader_epoch: i32,
        max_bytes: usize,
    ) -> std::result::Result<ReplicaFetched, FetchRefusal> {
        let fetch = FollowerFetch {
            follower,
            fetch_offset,
            durable_offset,
            storage_error: false,
        };
        self.replica_fetch_from(fetch, last_fetched_epoch, current_leader_epoch, max_bytes)
            .await
    }

    /// [`Partition::replica_fetch`] with all the follower said, including
    /// whether its storage fails (it then leaves the ISR at once).
    pub async fn replica_fetch_from(
        &self,
        fetch: FollowerFetch,
        last_fetched_epoch: i32,
        current_leader_epoch: i32,
        max_bytes: usize,
    ) -> std::result::Result<ReplicaFetched, FetchRefusal> {
        let fetch_offset = fetch.fetch_offset;
        let epoch = self.leader_epoch();
        if self.role() != Role::Leader {
            return Err(FetchRefusal::NotLeader);
        }
        if current_leader_epoch < epoch {
            return Err(FetchRefusal::FencedEpoch(current_leader_epoch));
        }
        if current_leader_epoch > epoch {
            return Err(FetchRefusal::UnknownEpoch(current_leader_epoch));
        }
        if last_fetched_epoch >= 0 {
            let (e, end) = self
                .log
                .end_offset_for_epoch(last_fetched_epoch)
                .map_err(PartitionError::from)?;
            if e != last_fetched_epoch || end < fetch_offset {
                return Err(FetchRefusal::Diverging {
                    epoch: e,
                    end_offset: end,
                });
            }
        }
        let (start, end) = (self.log.start_offset(), self.log.end_offset());
        if fetch_offset < start || fetch_offset > end {
            return Err(FetchRefusal::OutOfRange {
                offset: fetch_offset,
                start,
                end,
            });
        }
        let proposal = {
            let mut st = self.state();
            let joins = st
                .sets
                .record_fetch(fetch, end, self.high_watermark(), Instant::now())
                .map_err(|NotAFollower| FetchRefusal::NotLeader)?;
            let proposal = joins.map(|isr| self.proposal(&st, isr));
            let hw = self.leader_hw(&st);
            drop(st);
            if let Some(hw) = hw {
                self.advance_hw(hw);
            }
            proposal
        };
        if fetch_offset == end {
            // Caught up (what an idle follower asks for on every round):
            // nothing to read, so no trip to the blocking pool.
            return Ok(ReplicaFetched {
                records: Bytes::new(),
                high_watermark: self.high_watermark(),
                log_start_offset: start,
                log_end_offset: end,
                proposal,
            });
        }
        let log = self.log.clone();
        let read = blocking(move || log.read(fetch_offset, max_bytes.max(1), i64::MAX))
            .await
            .and_then(|r| r.map_err(PartitionError::from))?;
        Ok(ReplicaFetched {
            records: read.records,
            high_watermark: self.high_watermark(),
            log_start_offset: read.log_start_offset,
            log_end_offset: read.log_end_offset,
            proposal,
        })
    }

    fn proposal(&self, st: &ReplicaState, isr: Vec<i32>) -> IsrProposal {
        IsrProposal {
            expands: isr.len() > st.sets.isr.len(),
            topic_id: self.topic_id,
            partition: self.index,
            leader: self.me,
            leader_epoch: self.leader_epoch(),
            partition_epoch: st.partition_epoch,
            isr,
        }
    }

    /// As leader: the ISR without the followers that have not caught up
    /// within `max_lag`, if any fell behind.
    pub fn shrink_isr(&self, max_lag: Duration) -> Option<IsrProposal> {
        let mut st = self.state();
        if st.role != Role::Leader {
            return None;
        }
        let (lagging, isr) = st.sets.shrink(max_lag, Instant::now())?;
        tracing::info!(partition = ?self, ?lagging, ?isr, "followers fell behind; shrinking the ISR");
        Some(self.proposal(&st, isr))
    }

    /// As leader: the controller refused `prop`. If it is still this
    /// partition's pending change (same leader and partition epoch), it
    /// is forgotten, and the HW no longer waits for a refused addition.
    pub fn isr_change_refused(&self, prop: &IsrProposal) {
        let mut st = self.state();
        if st.role != Role::Leader
            || st.partition_epoch != prop.partition_epoch
            || self.leader_epoch() != prop.leader_epoch
        {
            return;
        }
        if !st.sets.refused(&prop.isr, Instant::now()) {
            return;
        }
        let hw = self.leader_hw(&st);
        drop(st);
        if let Some(hw) = hw {
            self.advance_hw(hw);
        }
    }

    /// As leader: an ISR addition the controller has not answered in a
    /// while, to propose again.
    pub fn retry_isr_addition(&self) -> Option<IsrProposal> {
        let mut st = self.state();
        if st.role != Role::Leader {
            return None;
        }
        let isr = st.sets.unanswered_addition(Instant::now())?;
        tracing::info!(partition = ?self, ?isr, "ISR addition unanswered; proposing it again");
        Some(self.proposal(&st, isr))
    }

    /// As follower: appends the leader's batches (offsets and epochs as
    /// they are) if this replica still follows `leader` in `epoch`.
    /// Returns whether it did.
    pub async fn append_from_leader(
        &self,
        leader: i32,
        epoch: i32,
        records: Bytes,
    ) -> Result<bool> {
        let mut producers = self.producers.lock().await;
        if self.role() != (Role::Follower { leader }) || self.leader_epoch() != epoch {
            return Ok(false);
        }
        let log = self.log.clone();
        let now = now_ms();
        let bytes = records.clone();
        let appended = blocking(move || log.append_replica(&bytes, now))
            .await
            .and_then(|r| r.map_err(PartitionError::from));
        self.track_storage("replica append", &appended);
        appended?;
        // Keep the idempotent producers' state as the leader keeps it, so
        // that this replica deduplicates the same way if it leads.
        for b in crate::protocol::batch::batches(&records).flatten() {
            record_header(&mut producers, &b.header, now);
        }
        self.snapshot_on_roll(&producers).await;
        Ok(true)
    }

    /// As follower: drops the log from `offset` on (a divergent suffix, or
    /// everything when the leader no longer has what this replica would
    /// fetch next, then starting at `offset`).
    pub async fn truncate_as_follower(&self, leader: i32, epoch: i32, offset: i64) -> Result<bool> {
        let mut producers = self.producers.lock().await;
        if self.role() != (Role::Follower { leader }) || self.leader_epoch() != epoch {
            return Ok(false);
        }
        let log = self.log.clone();
        blocking(move || log.truncate_to(offset)).await??;
        producers.truncate_from(offset);
        let (log, end) = (self.log.clone(), self.log.end_offset());
        blocking(move || remove_snapshots(log.dir(), |o| o > end)).await??;
        let end = self.log.end_offset();
        self.mark.send_modify(|m| {
            if m.hw > end {
                tracing::warn!(hw = m.hw, end, "truncation went below the high watermark");
                m.hw = end;
            }
        });
        Ok(true)
    }

    /// As follower: drops the whole log and starts it, empty, at `offset`
    /// (the leader's log start, past everything this replica holds).
    pub async fn restart_as_follower(&self, leader: i32, epoch: i32, offset: i64) -> Result<bool> {
        let mut producers = self.producers.lock().await;
        if self.role() != (Role::Follower { leader }) || self.leader_epoch() != epoch {
            return Ok(false);
        }
        let log = self.log.clone();
        blocking(move || log.truncate_fully_and_start_at(offset)).await??;
        producers.truncate_from(i64::MIN);
        let log = self.log.clone();
        blocking(move || remove_snapshots(log.dir(), |_| true)).await??;
        self.mark.send_modify(|m| m.hw = offset);
        Ok(true)
    }

    /// Moves the log start offset up to `offset` (DeleteRecords on the
    /// leader, or the leader's start on a follower): never past the HW.
    /// The new start.
    pub async fn advance_log_start(&self, offset: i64) -> Result<i64> {
        let offset = offset.min(self.high_watermark().max(self.log.start_offset()));
        let log = self.log.clone();
        let d = blocking(move || log.advance_start(offset)).await??;
        Ok(d.start)
    }

    /// Retention on this replica: deletes the closed segments past the
    /// limits, wholly below the HW.
    pub async fn apply_retention(
        &self,
        now_ms: i64,
        limits: crate::log::RetentionLimits,
    ) -> Result<crate::log::Deleted> {
        let log = self.log.clone();
        let hw = self.high_watermark();
        Ok(blocking(move || log.delete_expired(hw, now_ms, limits)).await??)
    }

    /// What this replica holds durably: the fsynced offset, or the log end
    /// under flush-later.
    pub fn durable_offset(&self) -> i64 {
        match self.policy() {
            FlushPolicy::BeforeAck => self.log.flushed_offset(),
            FlushPolicy::EveryMessages(_) => self.log.end_offset(),
        }
    }

    /// As follower: fsyncs what was appended, then takes the leader's HW
    /// (never beyond what this replica holds durably).
    pub async fn sync_as_follower(&self, leader_hw: i64) -> Result<i64> {
        let flushed = match self.policy() {
            // Nothing appended since the last fsync (an idle round): no
            // trip to the blocking pool.
            FlushPolicy::BeforeAck if self.log.flushed_offset() >= self.log.end_offset() => {
                self.log.flushed_offset()
            }
            FlushPolicy::BeforeAck => {
                let log = self.log.clone();
                let flushed = blocking(move || log.flush())
                    .await
                    .and_then(|r| r.map_err(PartitionError::from));
                if let Err(e) = &flushed {
                    if e.is_storage() {
                        self.storage_failed("fsync", e);
                    }
                }
                flushed?
            }
            FlushPolicy::EveryMessages(_) => self.log.end_offset(),
        };
        self.advance_hw(leader_hw.min(flushed));
        Ok(flushed)
    }

    fn advance_hw(&self, to: i64) {
        let moved = self.mark.send_if_modified(|m| {
            if to > m.hw {
                m.hw = to;
                true
            } else {
                false
            }
        });
        if moved {
            self.progress.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Writes the HW to its checkpoint file if it moved since the last time.
    pub async fn checkpoint_high_watermark(&self) -> Result<()> {
        let hw = self.high_watermark();
        if self.checkpointed_hw.swap(hw, Ordering::AcqRel) == hw {
            return Ok(());
        }
        let log = self.log.clone();
        let written = blocking(move || log.checkpoint_high_watermark(hw)).await;
        if !matches!(written, Ok(Ok(()))) {
            // Not written (a full disk, say): try again next time.
            self.checkpointed_hw.store(-1, Ordering::Release);
        }
        written??;
        Ok(())
    }

    /// Writes a producer-state snapshot when the log has rolled since the
    /// last one, so that a restart replays at most about a segment.
    async fn snapshot_on_roll(&self, producers: &ProducerStates) {
        let base = self.log.active_base();
        if self.snapshot_base.swap(base, Ordering::AcqRel) == base {
            return;
        }
        if let Err(e) = self.write_snapshot(producers).await {
            tracing::warn!(partition = ?self, error = %e, "cannot snapshot producer state");
        }
    }

    async fn write_snapshot(&self, producers: &ProducerStates) -> Result<()> {
        let (log, state) = (self.log.clone(), producers.clone());
        blocking(move || write_snapshot(&log, &state)).await??;
        Ok(())
    }

    /// The idempotent producers this replica knows (DescribeProducers).
    pub async fn producers(&self) -> Vec<(i64, i16, i32, i64)> {
        self.producers.lock().await.describe()
    }

    /// Forgets producers idle for longer than `max_idle`.
    pub async fn expire_producers(&self, max_idle: Duration) -> usize {
        let before = now_ms() - max_idle.as_millis() as i64;
        self.producers.lock().await.expire(before)
    }

    /// Flushes and marks the log cleanly shut down.
    pub async fn close(&self) -> Result<()> {
        {
            let producers = self.producers.lock().await;
            self.write_snapshot(&producers).await?;
        }
        self.checkpoint_high_watermark().await?;
        let log = self.log.clone();
        blocking(move || log.close()).await??;
        Ok(())
    }
}

const SNAPSHOT_SUFFIX: &str = ".snapshot";

fn record_header(
    producers: &mut ProducerStates,
    h: &crate::protocol::batch::BatchHeader,
    at_ms: i64,
) {
    if h.producer_id >= 0 {
        producers.record_at(
            h.producer_id,
            h.producer_epoch,
            BatchMeta {
                first_seq: h.base_sequence,
                last_seq: h.base_sequence.wrapping_add(h.last_offset_delta),
                first_offset: h.base_offset,
                last_offset: h.last_offset(),
            },
            at_ms,
        );
    }
}

/// Producer-state snapshots in `dir`, as (offset, path), oldest first.
fn snapshots(dir: &Path) -> std::io::Result<Vec<(i64, std::path::PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SNAPSHOT_SUFFIX)) else {
            continue;
        };
        if let Ok(offset) = stem.parse::<i64>() {
            out.push((offset, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn remove_snapshots(dir: &Path, which: impl Fn(i64) -> bool) -> Result<()> {
    let io = |e: std::io::Error| PartitionError::Task(format!("{}: {e}", dir.display()));
    for (offset, path) in snapshots(dir).map_err(io)? {
        if which(offset) {
            std::fs::remove_file(&path).map_err(io)?;
        }
    }
    Ok(())
}

/// Writes `<log end offset>.snapshot` (keeping the previous one too).
fn write_snapshot(log: &Log, state: &ProducerStates) -> Result<()> {
    let end = log.end_offset();
    let dir = log.dir();
    let io = |e: std::io::Error| PartitionError::Task(format!("{}: {e}", dir.display()));
    let json = serde_json::to_vec(state).map_err(|e| PartitionError::Task(e.to_string()))?;
    let name = format!("{end:020}{SNAPSHOT_SUFFIX}");
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, &json).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, dir.join(&name)).map_err(io)?;
    let all = snapshots(dir).map_err(io)?;
    let keep_from = all.len().saturating_sub(2);
    for (_, path) in &all[..keep_from] {
        std::fs::remove_file(path).map_err(io)?;
    }
    Ok(())
}

/// The producer state as of the log end: the latest usable snapshot, then
/// every batch after it. Snapshots beyond the log end (data lost in a
/// crash) are removed.
fn rebuild_producers(log: &Log) -> Result<ProducerStates> {
    let end = log.end_offset();
    let dir = log.dir();
    remove_snapshots(dir, |o| o > end)?;
    let io = |e: std::io::Error| PartitionError::Task(format!("{}: {e}", dir.display()));
    let mut from = log.start_offset();
    let mut state = ProducerStates::default();
    for (offset, path) in snapshots(dir).map_err(io)?.into_iter().rev() {
        let loaded = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<ProducerStates>(&b).ok());
        match loaded {
            Some(s) => {
                state = s;
                from = offset;
                break;
            }
            None => {
                tracing::warn!(path = %path.display(), "unreadable producer snapshot; ignoring it")
            }
        }
    }
    let now = now_ms();
    if from < end {
        log.for_each_header_from(from, |h| {
            if h.base_offset >= from {
                record_header(&mut state, h, now);
            }
        })?;
    }
    Ok(state)
}

/// Group commit: each round fsyncs everything appended before it began.
/// Appends that arrive during an fsync leave a permit in `wanted`, which
/// starts the next round at once.
async fn flusher(p: std::sync::Weak<Partition>, wanted: Arc<Notify>) {
    loop {
        // Under flush-later with `flush.ms`, unflushed data is also
        // fsynced on time.
        let timer = p.upgrade().and_then(|part| {
            let ms = part.flush_ms.load(Ordering::Acquire);
            let later = matches!(part.policy(), FlushPolicy::EveryMessages(_));
            (later && ms > 0 && ms < 1 << 40).then(|| Duration::from_millis(ms))
        });
        match timer {
            Some(every) => {
                tokio::select! {
                    _ = wanted.notified() => {}
                    _ = tokio::time::sleep(every) => {}
                }
            }
            None => wanted.notified().await,
        }
        let Some(part) = p.upgrade() else { return };
        if part.log.flushed_offset() >= part.log.end_offset() {
            part.update_leader_hw();
            continue;
        }
        let log = part.log.clone();
        match blocking(move || log.flush()).await {
            Ok(Ok(_)) => part.update_leader_hw(),
            Ok(Err(e)) | Err(PartitionError::Log(e)) => {
                // A failed fsync means the data's fate on disk is unknown:
                // never count it towards the HW (the log refuses writes
                // from then on); retry shortly, for a failure elsewhere
                // (a checkpoint on a full disk).
                let again = matches!(e, crate::log::Error::FsyncFailed(_));
                part.storage_failed("flush", &PartitionError::Log(e));
                let pause = if again { 1_000 } else { 100 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                wanted.notify_one();
            }
            Err(e) => {
                tracing::error!(partition = ?part, error = %e, "flusher task failed");
                return;
            }
        }
    }
}
