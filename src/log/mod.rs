//! One partition's log on disk, laid out like Kafka's: a directory of
//! segments named by base offset (`{:020}.log`), each with a sparse offset
//! index (`.index`) and time index (`.timeindex`). Batches are stored exactly
//! as received, with only the base offset and partition leader epoch
//! rewritten, so reads hand out file bytes without re-encoding.
//!
//! This module owns offsets assignment, segment rolling, group-committed
//! fsync, reads by offset and by timestamp, truncation, and recovery of a torn
//! tail after a crash. It never decides what is committed (the high
//! watermark is the caller's `upper_bound`) and it does no async I/O:
//! callers run it on a blocking pool.
//!
//! A failed write (a full disk, an I/O error) is all or nothing: the bytes
//! it wrote are cut off again, and the end offset, the indexes and the
//! epoch cache stay as they were (a roll that cannot create its segment
//! changes nothing either), so no read and no recovery finds a part of it;
//! the next append retries the disk. A failed fsync is different: the
//! kernel may have dropped the pages it could not write, so a later fsync
//! proves nothing; the log then refuses writes and never counts that data
//! durable ([`Error::FsyncFailed`]) until a restart recovers it from disk.
//!
//! Locking: one `RwLock` over the segments (appends and truncation write,
//! reads and flush snapshots read), plus a flush mutex held during fsync so
//! that appends proceed while the disk syncs. Lock order: flush, then
//! segments.

mod checkpoint;
pub mod cleaner;
mod epochs;
mod index;
mod retention;
mod segment;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use crate::protocol::batch::{self, BatchHeader, HEADER_LEN};
use checkpoint::CLEAN_SHUTDOWN_FILE;
use epochs::EpochCache;
pub use retention::{Deleted, RetentionLimits, SegmentSummary};
#[cfg(test)]
pub(crate) use segment::faults;
use segment::{io_err, OpenMode, Segment};

/// Errors of the log. `OffsetOutOfRange` is the only one a client causes;
/// the others mean the disk or the files are in trouble.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// OFFSET_OUT_OF_RANGE (1) for a fetch.
    #[error("offset {offset} is out of range: the log holds offsets {start} to {end} (exclusive)")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes handed to `append` are not whole v2 batches.
    #[error(transparent)]
    Batch(#[from] batch::Error),
    /// Data already on disk does not parse (found outside recovery).
    #[error("corrupt log file {}: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("invalid log configuration: {0}")]
    Config(String),
    #[error("the log in {} is closed", .0.display())]
    Closed(PathBuf),
    /// Replicated batches that do not continue the log where it ends.
    #[error("replicated batches start at offset {got}, but the log ends at {expected}")]
    OffsetMismatch { expected: i64, got: i64 },
    /// A thread panicked while holding the log's lock.
    #[error("the log's lock is poisoned by a panic")]
    Poisoned,
    /// An fsync of a segment failed: what was written since the last good
    /// one may not be on disk even if a later fsync succeeds (the kernel
    /// may have dropped the dirty pages), so the log takes no more writes
    /// and never counts that data durable. A restart recovers it from
    /// what is on disk.
    #[error("an fsync of {} failed; the log takes no writes until the broker restarts", .0.display())]
    FsyncFailed(PathBuf),
}

impl Error {
    /// Whether the disk (or the files) failed, as opposed to the caller's
    /// input or offsets: what a Kafka client sees as KAFKA_STORAGE_ERROR.
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            Error::Io { .. } | Error::Corrupt { .. } | Error::FsyncFailed(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Per-partition settings, with Kafka's property names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `log.segment.bytes` / `segment.bytes`: roll when a segment would exceed it.
    pub segment_bytes: u64,
    /// `log.roll.ms` / `segment.ms`: roll a segment older than this.
    pub segment_ms: i64,
    /// `log.index.interval.bytes`: bytes between offset index entries.
    pub index_interval_bytes: usize,
    /// `message.max.bytes`: the largest batch accepted.
    pub max_batch_bytes: usize,
    /// `segment.index.bytes`: a segment rolls once its offset index holds
    /// this many bytes of entries (8 each), as Kafka's does when full.
    pub segment_index_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            max_batch_bytes: 1_048_588,
            segment_index_bytes: 10 * 1024 * 1024,
        }
    }
}

impl LogConfig {
    fn validate(&self) -> Result<()> {
        // Index positions are u32, and Kafka caps segment.bytes at i32::MAX.
        if self.segment_bytes < HEADER_LEN as u64 || self.segment_bytes > i32::MAX as u64 {
            return Err(Error::Config(format!(
                "segment.bytes must be between {HEADER_LEN} and {}, got {}",
                i32::MAX,
                self.segment_bytes
            )));
        }
        if self.segment_ms < 1 {
            return Err(Error::Config(format!(
                "segment.ms must be positive, got {}",
                self.segment_ms
            )));
        }
        Ok(())
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    /// Largest batch `maxTimestamp` in the append.
    pub max_timestamp: i64,
    /// Last offset of the batch that holds `max_timestamp`.
    pub offset_of_max_timestamp: i64,
    pub log_start_offset: i64,
}

/// Whole batches read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches, the first one holding the requested offset (so it may
    /// start before it); empty when nothing below the bound exists.
    pub records: Bytes,
    /// Base offset of the first batch returned.
    pub first_offset: Option<i64>,
    /// The offset after the last batch returned, or the requested offset if
    /// none: where the next read continues.
    pub next_offset: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// A record found by timestamp (ListOffsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub timestamp: i64,
    pub offset: i64,
}

struct Inner {
    /// Segments before the active one, by base offset.
    closed: BTreeMap<i64, Segment>,
    active: Segment,
    closed_cleanly: bool,
    /// The log start offset where it is above the first segment's base
    /// (DeleteRecords, or the leader's start as a follower learnt it).
    log_start: i64,
}

impl Inner {
    /// The last of `segments` (in offset order) becomes the active one.
    fn from_segments(mut segments: Vec<Segment>) -> Result<Inner> {
        let mut active = segments
            .pop()
            .ok_or_else(|| Error::Config("no segment".into()))?;
        if active.size == 0 {
            active.rolling_base_ms = None;
        }
        let closed: BTreeMap<i64, Segment> = segments.into_iter().map(|s| (s.base, s)).collect();
        Ok(Inner {
            closed,
            active,
            closed_cleanly: false,
            log_start: 0,
        })
    }

    /// The first offset a read may ask for: the first segment's base, or
    /// the log start offset above it (never beyond the log end).
    fn start_offset(&self) -> i64 {
        self.closed
            .first_key_value()
            .map_or(self.active.base, |(base, _)| *base)
            .max(self.log_start.min(self.active.next_offset))
    }

    fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.closed.values().chain(std::iter::once(&self.active))
    }

    /// The segment that would hold `offset`, and every later one.
    fn segments_from(&self, offset: i64) -> impl Iterator<Item = &Segment> {
        let from = if offset >= self.active.base {
            self.active.base
        } else {
            self.closed
                .range(..=offset)
                .next_back()
                .map_or(i64::MIN, |(base, _)| *base)
        };
        self.closed
            .range(from..)
            .map(|(_, s)| s)
            .chain(std::iter::once(&self.active))
    }
}

struct FlushState {
    /// Last recovery point written: every segment below it is fully synced.
    recovery_point: i64,
}

/// One partition's log; see the module docs. Share it as `Arc<Log>`.
pub struct Log {
    dir: PathBuf,
    /// Changes with the topic's config ([`Log::set_config`]).
    config: RwLock<LogConfig>,
    inner: RwLock<Inner>,
    flush_state: Mutex<FlushState>,
    start_offset: AtomicI64,
    end_offset: AtomicI64,
    flushed: AtomicI64,
    /// Segment files were created or removed since the last directory fsync.
    dir_dirty: AtomicBool,
    /// The segment fsynced last failed (see [`Error::FsyncFailed`]).
    fsync_failed: AtomicBool,
    /// Held by whatever replaces or removes closed segments (the cleaner's
    /// swap, retention, truncation), so that none removes a file another
    /// just put in place. Lock order: this, flush, segments.
    maintenance: Mutex<()>,
    /// Where each leader epoch starts. Lock order: segments, then this.
    epochs: Mutex<EpochCache>,
    /// The epoch checkpoint was written without fsync since it was last
    /// made durable (set and cleared with `epochs` locked): the next flush
    /// that makes records durable makes it durable first.
    epochs_dirty: AtomicBool,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("start_offset", &self.start_offset())
            .field("end_offset", &self.end_offset())
            .field("flushed_offset", &self.flushed_offset())
            .finish()
    }
}

impl Log {
    /// Opens the log in `dir`, creating it if missing. Without a clean
    /// shutdown marker, segments from the recovery point on are checked batch
    /// by batch and cut at the first torn or corrupt batch; later segments
    /// are then dropped. Everything returned by a later read was on disk.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log> {
        config.validate()?;
        std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.try_exists().map_err(io_err("stat", &marker))?;
        let stored_recovery_point = checkpoint::read_recovery_point(dir);
        let recovery_point = if clean { None } else { stored_recovery_point };
        let bases = list_segments(dir)?;
        let interval = config.index_interval_bytes;
        let (mut segments, mut recovered, cut) =
            open_segments(dir, &bases, interval, clean, recovery_point)?;
        let created = segments.is_empty();
        if created {
            segments.push(Segment::create(dir, 0, interval)?);
            recovered.push(0);
        }
        // Recovered data may sit in the page cache of a crashed process:
        // make it durable so that the flushed offset can start at the end.
        sync_segments(&mut segments, &recovered)?;
        // A closed segment whose index was rebuilt writes it now (it is
        // never synced again); for the others this does nothing.
        if let Some((_, closed)) = segments.split_last_mut() {
            for seg in closed {
                seg.sync_indexes()?;
            }
        }
        if clean {
            std::fs::remove_file(&marker).map_err(io_err("remove", &marker))?;
        }
        // Makes the marker's removal durable before any append, and a
        // segment created or cut here. Otherwise the directory is as it
        // was, and its fsync (a disk cache flush on some file systems, for
        // each of thousands of partitions at startup) is skipped.
        if clean || created || cut {
            checkpoint::sync_dir(dir)?;
        }

        let mut inner = Inner::from_segments(segments)?;
        let (end, active_base) = (inner.active.next_offset, inner.active.base);
        if stored_recovery_point != Some(active_base) {
            checkpoint::write_recovery_point(dir, active_base)?;
        }
        // (`recovered` indexes the segments as opened: before any goes.)
        let (epochs, epochs_dirty) = load_epochs(dir, &inner, end, &recovered)?;
        inner.log_start = checkpoint::read_log_start(dir).unwrap_or(0);
        // Segments wholly below the start are what a deletion left when it
        // stopped between its checkpoint and the files.
        retention::remove_below_start(dir, &mut inner)?;
        let start = inner.start_offset();
        tracing::debug!(dir = %dir.display(), start, end, clean, "opened log");
        Ok(Log {
            dir: dir.to_path_buf(),
            config: RwLock::new(config),
            inner: RwLock::new(inner),
            flush_state: Mutex::new(FlushState {
                recovery_point: active_base,
            }),
            start_offset: AtomicI64::new(start),
            end_offset: AtomicI64::new(end),
            flushed: AtomicI64::new(end),
            dir_dirty: AtomicBool::new(false),
            fsync_failed: AtomicBool::new(false),
            maintenance: Mutex::new(()),
            epochs: Mutex::new(epochs),
            epochs_dirty: AtomicBool::new(epochs_dirty),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes new settings (a topic config change): the next roll and the
    /// next append use them.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// Appends whole v2 batches (validated by the caller), assigning offsets
    /// from the log end offset and stamping `leader_epoch`. Not fsynced: see
    /// [`Log::flush`].
    pub fn append(&self, batches: &[u8], leader_epoch: i32, now_ms: i64) -> Result<AppendInfo> {
        let mut headers: Vec<(usize, BatchHeader)> = Vec::new();
        let mut offset_count = 0i64;
        for b in batch::batches(batches) {
            let b = b?;
            if b.header.last_offset_delta < 0 {
                return Err(batch::Error::InvalidRecord(format!(
                    "batch at byte {} has last offset delta {}",
                    b.position, b.header.last_offset_delta
                ))
                .into());
            }
            offset_count += b.header.offset_count();
            headers.push((b.position, b.header));
        }
        if headers.is_empty() {
            return Err(batch::Error::InvalidRecord("no record batches".into()).into());
        }
        let mut buf = batches.to_vec();

        let mut g = self.exclusive()?;
        self.check_writable(&g)?;
        let first_offset = g.active.next_offset;
        let mut next = first_offset;
        let mut max = (i64::MIN, first_offset);
        for (at, h) in &mut headers {
            batch::set_base_offset(&mut buf[*at..], next);
            batch::set_partition_leader_epoch(&mut buf[*at..], leader_epoch);
            h.base_offset = next;
            h.partition_leader_epoch = leader_epoch;
            if h.max_timestamp > max.0 {
                max = (h.max_timestamp, h.last_offset());
            }
            next = h.last_offset() + 1;
        }
        let epochs = [(leader_epoch, first_offset)];
        self.write(&mut g, &buf, &headers, &epochs, offset_count, now_ms)?;
        self.end_offset.store(next, Ordering::Release);
        Ok(AppendInfo {
            first_offset,
            last_offset: next - 1,
            max_timestamp: max.0,
            offset_of_max_timestamp: max.1,
            log_start_offset: g.start_offset(),
        })
    }

    fn check_writable(&self, g: &Inner) -> Result<()> {
        if g.closed_cleanly {
            return Err(Error::Closed(self.dir.clone()));
        }
        if self.fsync_failed.load(Ordering::Acquire) {
            return Err(Error::FsyncFailed(self.dir.clone()));
        }
        Ok(())
    }

    /// Writes stamped batches at the log end: assigns their epochs, rolls
    /// if due, appends. All or nothing: on failure the files and the
    /// in-memory state (segments, indexes, epoch cache, end offset) are as
    /// they were, bar an empty new segment a roll may have left active.
    fn write(
        &self,
        g: &mut Inner,
        buf: &[u8],
        headers: &[(usize, BatchHeader)],
        epochs: &[(i32, i64)],
        offsets: i64,
        now_ms: i64,
    ) -> Result<()> {
        let before = self.epochs.lock().map_err(|_| Error::Poisoned)?.clone();
        let written = (|| {
            for &(epoch, offset) in epochs {
                self.assign_epoch(epoch, offset)?;
            }
            if self.should_roll(&g.active, buf.len(), offsets, now_ms) {
                let base = g.active.next_offset;
                self.roll(g, base)?;
            }
            g.active.append(buf, headers, now_ms)
        })();
        if written.is_err() {
            let mut c = self.epochs.lock().map_err(|_| Error::Poisoned)?;
            if *c != before {
                // The file may keep the entry (an open drops entries past
                // the log end); the next flush writes the cache again.
                *c = before;
                if c.write(&self.dir, false).is_err() {
                    tracing::debug!(dir = %self.dir.display(), "cannot rewrite the epoch checkpoint");
                }
                self.epochs_dirty.store(true, Ordering::Release);
            }
        }
        written
    }

    /// Appends batches a leader already placed, as they are: offsets and
    /// leader epochs are the leader's. They must continue the log: each
    /// batch starts after the one before, and the first at the log end or,
    /// where the leader's cleaner removed whole batches, after it.
    pub fn append_replica(&self, batches: &[u8], now_ms: i64) -> Result<Option<AppendInfo>> {
        let mut headers: Vec<(usize, BatchHeader)> = Vec::new();
        for b in batch::batches(batches) {
            let b = b?;
            if let Some((_, prev)) = headers.last() {
                if b.header.base_offset <= prev.last_offset() {
                    return Err(Error::OffsetMismatch {
                        expected: prev.last_offset() + 1,
                        got: b.header.base_offset,
                    });
                }
            }
            headers.push((b.position, b.header));
        }
        let (Some((_, first)), Some((_, last))) = (headers.first(), headers.last()) else {
            return Ok(None);
        };
        let (first, last) = (*first, *last);
        let mut g = self.exclusive()?;
        self.check_writable(&g)?;
        let end = g.active.next_offset;
        if first.base_offset < end {
            return Err(Error::OffsetMismatch {
                expected: end,
                got: first.base_offset,
            });
        }
        let epochs: Vec<(i32, i64)> = headers
            .iter()
            .map(|(_, h)| (h.partition_leader_epoch, h.base_offset))
            .collect();
        let offsets = last.last_offset() + 1 - first.base_offset;
        let mut max = (i64::MIN, end);
        for (_, h) in &headers {
            if h.max_timestamp > max.0 {
                max = (h.max_timestamp, h.last_offset());
            }
        }
        self.write(&mut g, batches, &headers, &epochs, offsets, now_ms)?;
        let next = last.last_offset() + 1;
        self.end_offset.store(next, Ordering::Release);
        Ok(Some(AppendInfo {
            first_offset: first.base_offset,
            last_offset: next - 1,
            max_timestamp: max.0,
            offset_of_max_timestamp: max.1,
            log_start_offset: g.start_offset(),
        }))
    }

    /// Makes `epoch` start at `offset` in the epoch cache if it is new.
    /// Called with the segments locked, before the append. The checkpoint
    /// is written at once but fsynced by the next `flush` that makes
    /// records durable (no record of the epoch is durable before its
    /// entry is), so that a broker taking the lead of thousands of
    /// partitions does not fsync twice for each; and a recovery assigns
    /// epochs from the batches of the segments it checks, as Kafka's does,
    /// for a checkpoint that a machine crash cut short.
    fn assign_epoch(&self, epoch: i32, offset: i64) -> Result<()> {
        let mut c = self.epochs.lock().map_err(|_| Error::Poisoned)?;
        if c.latest_epoch().is_some_and(|e| e >= epoch) || epoch < 0 {
            return Ok(());
        }
        let mut next = c.clone();
        next.assign(epoch, offset);
        next.write(&self.dir, false)?;
        *c = next;
        self.epochs_dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// fsyncs the epoch checkpoint if it was written without since.
    fn sync_epochs(&self) -> Result<()> {
        if !self.epochs_dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        let c = self.epochs.lock().map_err(|_| Error::Poisoned)?;
        if self.epochs_dirty.load(Ordering::Acquire) {
            c.write(&self.dir, true)?;
            self.epochs_dirty.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Records that this replica leads from `offset` in `epoch` (Kafka
    /// assigns the epoch when a replica becomes leader, before it writes).
    pub fn begin_epoch(&self, epoch: i32) -> Result<()> {
        let g = self.exclusive()?;
        self.assign_epoch(epoch, g.active.next_offset)
    }

    /// Base offset of the active segment (it changes when the log rolls).
    pub fn active_base(&self) -> i64 {
        self.shared().map(|g| g.active.base).unwrap_or(-1)
    }

    /// Calls `f` with the header of every batch from the one holding
    /// `offset` to the log end, in order (reads headers only).
    pub fn for_each_header_from(&self, offset: i64, mut f: impl FnMut(&BatchHeader)) -> Result<()> {
        let g = self.shared()?;
        for seg in g.segments_from(offset) {
            let Some((mut pos, _)) = seg.find_batch(offset)? else {
                continue;
            };
            while pos < seg.size {
                let h = seg.read_header(pos)?;
                f(&h);
                pos += h.size() as u64;
            }
        }
        Ok(())
    }

    /// Records the high watermark durably (see `high-watermark-checkpoint`).
    pub fn checkpoint_high_watermark(&self, hw: i64) -> Result<()> {
        checkpoint::write_high_watermark(&self.dir, hw)
    }

    /// The last checkpointed high watermark, at most the log end offset.
    pub fn checkpointed_high_watermark(&self) -> Option<i64> {
        checkpoint::read_high_watermark(&self.dir).map(|hw| hw.min(self.end_offset()))
    }

    /// The latest leader epoch in the log's epoch cache.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.lock().ok().and_then(|c| c.latest_epoch())
    }

    /// OffsetForLeaderEpoch: the largest epoch at most `epoch` this log
    /// knows and the offset where it ends (see [`EpochCache::end_offset_for`]).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Result<(i32, i64)> {
        let g = self.shared()?;
        let c = self.epochs.lock().map_err(|_| Error::Poisoned)?;
        Ok(c.end_offset_for(epoch, g.active.next_offset))
    }

    /// The (epoch, start offset) entries, oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.epochs
            .lock()
            .map(|c| c.entries().to_vec())
            .unwrap_or_default()
    }

    fn should_roll(&self, active: &Segment, len: usize, offsets: i64, now_ms: i64) -> bool {
        if active.size == 0 {
            return false;
        }
        let config = self.config();
        let too_big = active.size + len as u64 > config.segment_bytes;
        let too_old = active
            .rolling_base_ms
            .is_some_and(|t| now_ms.saturating_sub(t) > config.segment_ms);
        let too_many_offsets = active.next_offset + offsets - 1 - active.base > i64::from(u32::MAX);
        let index_full = active.index.len() * 8 >= config.segment_index_bytes.max(8);
        too_big || too_old || too_many_offsets || index_full
    }

    /// Closes the active segment and starts a new one at `base`. On failure
    /// (no room for the new files, say) nothing changes: the new segment's
    /// files are removed and the active one stays as it was.
    fn roll(&self, g: &mut Inner, base: i64) -> Result<()> {
        let mut new = Segment::create(&self.dir, base, self.config().index_interval_bytes)?;
        self.dir_dirty.store(true, Ordering::Release);
        // The indexes of a closed segment never change again: sync them once
        // here (small files) so that flush only has to sync log files.
        let kept = g.active.time_index.len();
        g.active.finalize();
        if let Err(e) = g.active.sync_indexes() {
            let _ = g.active.time_index.truncate(kept);
            if let Err(rm) = new.remove_files() {
                tracing::warn!(dir = %self.dir.display(), error = %rm, "cannot remove a segment a failed roll made");
            }
            return Err(e);
        }
        std::mem::swap(&mut g.active, &mut new);
        let old = new;
        tracing::debug!(dir = %self.dir.display(), old = old.base, new = base, "rolled segment");
        g.closed.insert(old.base, old);
        Ok(())
    }

    /// fsyncs everything appended so far and returns the offset flushed up to
    /// (exclusive). Concurrent callers share fsyncs: a caller whose data a
    /// running flush already covers waits for it and returns without its own.
    pub fn flush(&self) -> Result<i64> {
        let target = self.end_offset.load(Ordering::Acquire);
        let done = self.flushed.load(Ordering::Acquire);
        if done >= target {
            return Ok(done);
        }
        let mut fs = self.lock_flush()?;
        let done = self.flushed.load(Ordering::Acquire);
        if done >= target {
            return Ok(done);
        }
        let (end, files, active_base, dir_dirty) = {
            let g = self.shared()?;
            let files: Vec<(Arc<File>, PathBuf, u64)> = g
                .segments()
                .filter(|s| s.next_offset > done)
                .map(|s| (s.log.clone(), s.log_path().to_path_buf(), s.size))
                .collect();
            let dirty = self.dir_dirty.swap(false, Ordering::AcqRel);
            (g.active.next_offset, files, g.active.base, dirty)
        };
        if self.fsync_failed.load(Ordering::Acquire) {
            return Err(Error::FsyncFailed(self.dir.clone()));
        }
        let started = std::time::Instant::now();
        for (file, path, _) in &files {
            if let Err(e) = segment::sync_data(file, path) {
                // Never retried: a later success would not prove that
                // what this one failed to write reached the disk.
                self.fsync_failed.store(true, Ordering::Release);
                return Err(io_err("fsync", path)(e));
            }
        }
        metrics::histogram!("runnel_log_fsync_duration_seconds").record(started.elapsed());
        sync_ledger::record(files.iter().map(|(_, path, len)| (path.as_path(), *len)));
        if dir_dirty {
            if let Err(e) = checkpoint::sync_dir(&self.dir) {
                self.dir_dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        self.sync_epochs()?;
        self.flushed.store(end, Ordering::Release);
        if active_base > fs.recovery_point {
            checkpoint::write_recovery_point(&self.dir, active_base)?;
            fs.recovery_point = active_base;
        }
        Ok(end)
    }

    /// Offset up to which (exclusive) the log is known to be on disk.
    pub fn flushed_offset(&self) -> i64 {
        self.flushed.load(Ordering::Acquire)
    }

    /// Log start offset: the first offset still stored.
    /// Bytes of whole batches in the log, and its number of segments.
    pub fn size_and_segments(&self) -> Result<(u64, usize)> {
        let g = self.shared()?;
        Ok(g.segments().fold((0, 0), |(b, n), s| (b + s.size, n + 1)))
    }

    pub fn start_offset(&self) -> i64 {
        self.start_offset.load(Ordering::Acquire)
    }

    /// Log end offset: the next offset `append` assigns.
    pub fn end_offset(&self) -> i64 {
        self.end_offset.load(Ordering::Acquire)
    }

    /// Reads whole batches starting with the one that holds `offset`, within
    /// one segment, up to `max_bytes`, and only batches whose last offset is
    /// below `upper_bound` (e.g. the high watermark). The first batch is
    /// returned even if it is larger than `max_bytes` (KIP-74). Callers bound
    /// `max_bytes` (fetch.max.bytes); the read never exceeds a segment.
    pub fn read(&self, offset: i64, max_bytes: usize, upper_bound: i64) -> Result<ReadResult> {
        let g = self.shared()?;
        let (start, end) = (g.start_offset(), g.active.next_offset);
        if offset < start || offset > end {
            return Err(Error::OffsetOutOfRange { offset, start, end });
        }
        let mut result = ReadResult {
            records: Bytes::new(),
            first_offset: None,
            next_offset: offset,
            log_start_offset: start,
            log_end_offset: end,
        };
        if offset >= end.min(upper_bound) {
            return Ok(result);
        }
        let mut found = None;
        for seg in g.segments_from(offset) {
            if let Some((pos, h)) = seg.find_batch(offset)? {
                found = Some((seg, pos, h));
                break;
            }
        }
        let Some((seg, pos, first)) = found else {
            return Ok(result);
        };
        if first.last_offset() >= upper_bound {
            return Ok(result);
        }
        let want = (max_bytes.max(first.size()) as u64).min(seg.size - pos) as usize;
        let mut buf = seg.read_bytes(pos, want)?;
        let mut keep = 0;
        for b in batch::batches(&buf) {
            match b {
                Ok(b) if b.header.last_offset() < upper_bound => {
                    keep = b.position + b.bytes.len();
                    result.next_offset = b.header.last_offset() + 1;
                }
                // A batch cut by `max_bytes`, or at the bound: stop there.
                _ => break,
            }
        }
        buf.truncate(keep);
        result.records = Bytes::from(buf);
        result.first_offset = Some(first.base_offset);
        Ok(result)
    }

    /// ListOffsets by timestamp: the first record (in offset order) whose
    /// timestamp is at least `timestamp`, or `None`. The caller hides
    /// offsets at or above the high watermark.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>> {
        let g = self.shared()?;
        for seg in g.segments() {
            if seg.max_ts.is_none_or(|(max, _)| max < timestamp) {
                continue;
            }
            // Every record up to this offset is older than `timestamp`.
            let from = seg
                .time_index
                .last_before(timestamp)
                .map_or(seg.base, |rel| seg.base + i64::from(rel));
            let Some((mut pos, _)) = seg.find_batch(from)? else {
                continue;
            };
            while pos < seg.size {
                let h = seg.read_header(pos)?;
                if h.max_timestamp >= timestamp {
                    let found = first_record(seg, pos, &h, |ts| ts >= timestamp)?;
                    if found.is_some() {
                        return Ok(found);
                    }
                }
                pos += h.size() as u64;
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP (KIP-734): the largest timestamp and the
    /// first record that has it; `None` for an empty log.
    pub fn max_timestamp(&self) -> Result<Option<TimestampOffset>> {
        let g = self.shared()?;
        let mut best: Option<((i64, i64), &Segment)> = None;
        for seg in g.segments() {
            if let Some(m) = seg.max_ts {
                if best.is_none_or(|(b, _)| m.0 > b.0) {
                    best = Some((m, seg));
                }
            }
        }
        let Some(((ts, offset), seg)) = best else {
            return Ok(None);
        };
        let fallback = TimestampOffset {
            timestamp: ts,
            offset,
        };
        let Some((pos, h)) = seg.find_batch(offset)? else {
            return Ok(Some(fallback));
        };
        // The header's maxTimestamp is the producer's word; fall back to the
        // batch's last offset if no record carries it.
        Ok(Some(
            first_record(seg, pos, &h, |t| t == ts)?.unwrap_or(fallback),
        ))
    }

    /// Drops every batch whose last offset is `offset` or more (a batch that
    /// straddles `offset` goes entirely), durably. The log end offset becomes
    /// the end of what remains; if nothing below `offset` remains, the log
    /// restarts empty at `offset`.
    pub fn truncate_to(&self, offset: i64) -> Result<()> {
        self.cut(offset, false)
    }

    /// Drops everything and restarts the log, empty, at `offset`, which
    /// becomes its start: what a follower does when its leader no longer
    /// holds the offsets it would fetch next (retention or DeleteRecords
    /// moved the leader's start past them).
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<()> {
        self.cut(offset, true)
    }

    fn cut(&self, offset: i64, fully: bool) -> Result<()> {
        let _m = self.maintenance.lock().map_err(|_| Error::Poisoned)?;
        let mut fs = self.lock_flush()?;
        let mut g = self.exclusive()?;
        if g.closed_cleanly {
            return Err(Error::Closed(self.dir.clone()));
        }
        if !fully && offset >= g.active.next_offset {
            // Nothing to cut, but an epoch that starts here wrote nothing
            // this log keeps: forget it too, or a follower would keep
            // naming an epoch its leader never had.
            let mut c = self.epochs.lock().map_err(|_| Error::Poisoned)?;
            if c.truncate_from(offset) {
                c.write(&self.dir, true)?;
                self.epochs_dirty.store(false, Ordering::Release);
            }
            return Ok(());
        }
        let interval = self.config().index_interval_bytes;
        let full = fully || offset <= g.start_offset();
        if full {
            for seg in std::mem::take(&mut g.closed).into_values() {
                seg.remove_files()?;
            }
            g.active.remove_files()?;
            g.active = Segment::create(&self.dir, offset.max(0), interval)?;
            if g.log_start > 0 || fully {
                g.log_start = offset.max(0);
                checkpoint::write_log_start(&self.dir, g.log_start)?;
            }
        } else {
            while g.active.base >= offset {
                let Some((_, prev)) = g.closed.pop_last() else {
                    break;
                };
                std::mem::replace(&mut g.active, prev).remove_files()?;
            }
            g.active.truncate_to(offset)?;
        }
        checkpoint::sync_dir(&self.dir)?;
        let (start, end, active_base) = (g.start_offset(), g.active.next_offset, g.active.base);
        self.start_offset.store(start, Ordering::Release);
        self.end_offset.store(end, Ordering::Release);
        self.flushed.fetch_min(end, Ordering::AcqRel);
        {
            let mut c = self.epochs.lock().map_err(|_| Error::Poisoned)?;
            let cut = if full { i64::MIN } else { end };
            if c.truncate_from(cut) {
                c.write(&self.dir, true)?;
                self.epochs_dirty.store(false, Ordering::Release);
            }
        }
        if fs.recovery_point > active_base {
            checkpoint::write_recovery_point(&self.dir, active_base)?;
            fs.recovery_point = active_base;
        }
        tracing::info!(dir = %self.dir.display(), requested = offset, end, "truncated log");
        Ok(())
    }

    /// Removes the log's directory and everything in it.
    pub fn delete(self) -> Result<()> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(io_err("remove directory", &dir))
    }

    /// Flushes everything, writes the final index entries and the
    /// clean-shutdown marker, and refuses further appends. The next open then
    /// trusts the files instead of checking every batch.
    pub fn close(&self) -> Result<()> {
        self.flush()?;
        let _fs = self.lock_flush()?;
        let mut g = self.exclusive()?;
        if g.closed_cleanly {
            return Ok(());
        }
        // Appends that slipped in after the flush above.
        let done = self.flushed.load(Ordering::Acquire);
        for seg in g.segments().filter(|s| s.next_offset > done) {
            seg.log
                .sync_data()
                .map_err(io_err("fsync", seg.log_path()))?;
        }
        g.active.finalize();
        g.active.sync_indexes()?;
        if self.dir_dirty.swap(false, Ordering::AcqRel) {
            checkpoint::sync_dir(&self.dir)?;
        }
        self.flushed.store(g.active.next_offset, Ordering::Release);
        self.sync_epochs()?;
        checkpoint::write_atomic(&self.dir, CLEAN_SHUTDOWN_FILE, b"")?;
        g.closed_cleanly = true;
        Ok(())
    }

    fn shared(&self) -> Result<RwLockReadGuard<'_, Inner>> {
        self.inner.read().map_err(|_| Error::Poisoned)
    }

    fn exclusive(&self) -> Result<RwLockWriteGuard<'_, Inner>> {
        self.inner.write().map_err(|_| Error::Poisoned)
    }

    fn lock_flush(&self) -> Result<MutexGuard<'_, FlushState>> {
        self.flush_state.lock().map_err(|_| Error::Poisoned)
    }
}

/// Opens the segments at `bases` in order. Without a clean shutdown, those
/// from the recovery point on (and always the last) are recovered; the first
/// one cut at a torn or corrupt batch ends the log, and later segments are
/// removed. Returns the segments, the indexes of the recovered ones, and
/// whether one was cut.
fn open_segments(
    dir: &Path,
    bases: &[i64],
    interval: usize,
    clean: bool,
    recovery_point: Option<i64>,
) -> Result<(Vec<Segment>, Vec<usize>, bool)> {
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    let mut recovered = Vec::new();
    for (i, &base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        let mode = if !clean && (last || recovery_point.is_none_or(|rp| base >= rp)) {
            OpenMode::Recover
        } else {
            OpenMode::Trust
        };
        let (seg, cut) = Segment::open(dir, base, interval, mode)?;
        if let Some(prev) = segments.last() {
            if prev.next_offset > base {
                return Err(Error::Corrupt {
                    path: seg.log_path().to_path_buf(),
                    detail: format!(
                        "segment starts at {base} but the previous one ends at {}",
                        prev.next_offset
                    ),
                });
            }
        }
        if mode == OpenMode::Recover {
            recovered.push(segments.len());
        }
        segments.push(seg);
        if let Some(cut) = cut {
            tracing::warn!(
                segment = %log_path_display(dir, base),
                position = cut.position,
                bytes_dropped = cut.dropped_bytes,
                next_offset = cut.next_offset,
                reason = %cut.reason,
                "truncated torn or corrupt log tail"
            );
            for &later in &bases[i + 1..] {
                tracing::warn!(segment = %log_path_display(dir, later),
                    "removing segment that follows a truncated one");
                segment::remove_segment_files(dir, later)?;
            }
            return Ok((segments, recovered, true));
        }
    }
    Ok((segments, recovered, false))
}

/// Fsyncs the log and index files of `segments[i]` for each `i` in `which`.
fn sync_segments(segments: &mut [Segment], which: &[usize]) -> Result<()> {
    for &i in which {
        let seg = &mut segments[i];
        seg.log
            .sync_all()
            .map_err(io_err("fsync", seg.log_path()))?;
        seg.sync_indexes()?;
    }
    Ok(())
}

/// The epoch cache from `leader-epoch-checkpoint` (rebuilt from the
/// batches if there is none), cut to a log that ends at `end`; and for the
/// `recovered` segments (indexes in log order, a suffix of the log), the
/// epochs their batches carry, which are the truth there: a checkpoint
/// written without fsync may have lost its last change in a machine crash
/// while the batches survived. Returns the cache and whether it differs
/// from the file only by the cut at `end` (the caller then writes it
/// before records beyond `end` are durable; a file that keeps entries at
/// or past `end` is cut the same way by the next open, and corrected from
/// the batches by the next recovery, which always starts at or below
/// `end`).
fn load_epochs(
    dir: &Path,
    inner: &Inner,
    end: i64,
    recovered: &[usize],
) -> Result<(EpochCache, bool)> {
    let Some(mut c) = EpochCache::read(dir) else {
        let c = rebuild_epochs(inner)?;
        c.write(dir, true)?;
        return Ok((c, false));
    };
    let cut = c.truncate_from(end);
    let segments: Vec<&Segment> = inner.segments().collect();
    if let Some(&first) = recovered.first() {
        let mut truth = c.clone();
        truth.truncate_from(segments[first].base);
        for &i in recovered {
            for &(epoch, offset) in &segments[i].epoch_starts {
                truth.assign(epoch, offset);
            }
        }
        if truth != c {
            tracing::warn!(dir = %dir.display(), checkpoint = ?c.entries(), batches = ?truth.entries(),
                "the leader-epoch checkpoint disagrees with the recovered batches; rewriting it from them");
            truth.write(dir, true)?;
            return Ok((truth, false));
        }
    }
    Ok((c, cut))
}

/// The first record of the batch at `pos` whose timestamp satisfies `pred`.
fn first_record(
    seg: &Segment,
    pos: u64,
    h: &BatchHeader,
    pred: impl Fn(i64) -> bool,
) -> Result<Option<TimestampOffset>> {
    let bytes = seg.read_bytes(pos, h.size())?;
    // A stored batch, which may be a cleaned one with offset gaps.
    let r = crate::protocol::rewrite::records(&bytes).map_err(|e| Error::Corrupt {
        path: seg.log_path().to_path_buf(),
        detail: format!("batch at byte {pos}: {e}"),
    })?;
    Ok(r.records
        .iter()
        .find(|r| pred(r.timestamp))
        .map(|r| TimestampOffset {
            timestamp: r.timestamp,
            offset: r.offset,
        }))
}

/// The epoch cache as the batches on disk tell it, for a log that has no
/// `leader-epoch-checkpoint` (one written before there was one).
fn rebuild_epochs(inner: &Inner) -> Result<EpochCache> {
    let mut c = EpochCache::default();
    for seg in inner.segments() {
        let mut pos = 0u64;
        while pos < seg.size {
            let h = seg.read_header(pos)?;
            c.assign(h.partition_leader_epoch, h.base_offset);
            pos += h.size() as u64;
        }
    }
    Ok(c)
}

fn log_path_display(dir: &Path, base: i64) -> String {
    segment::log_path(dir, base).display().to_string()
}

/// Base offsets of the segments in `dir`, sorted; removes leftovers of
/// interrupted writes and index files without a log.
fn list_segments(dir: &Path) -> Result<Vec<i64>> {
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let base_of = |stem: &str| {
            stem.parse::<i64>()
                .ok()
                .filter(|b| *b >= 0 && stem.len() == 20)
        };
        // Leftovers: a checkpoint or a cleaned segment not yet swapped in.
        if name.ends_with(".tmp") || name.ends_with(".cleaned") {
            remove_quietly(&entry.path());
        } else if let Some(base) = name.strip_suffix(".log").and_then(base_of) {
            bases.push(base);
        } else if let Some(base) = name
            .strip_suffix(".index")
            .or_else(|| name.strip_suffix(".timeindex"))
            .and_then(base_of)
        {
            indexes.push((base, entry.path()));
        }
    }
    bases.sort_unstable();
    for (base, path) in indexes {
        if bases.binary_search(&base).is_err() {
            remove_quietly(&path);
        }
    }
    Ok(bases)
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove leftover file");
    }
}

/// A test hook for the fault suite's "lost unsynced writes": with
/// `RUNNEL_TEST_SYNC_LEDGER=<file>` in the environment, every fsync of a
/// segment appends `<segment path>\t<length known synced>` to that file, so
/// that after a kill -9 the suite can cut each segment back to what a power
/// loss would have left (tests/chaos/nemesis.rs). Without the variable it
/// costs one check of a `OnceLock`.
mod sync_ledger {
    use std::fs::File;
    use std::io::Write;
    use std::path::Path;
    use std::sync::{Mutex, OnceLock};

    static LEDGER: OnceLock<Option<Mutex<File>>> = OnceLock::new();

    pub fn record<'a>(synced: impl Iterator<Item = (&'a Path, u64)>) {
        let ledger = LEDGER.get_or_init(|| {
            let path = std::env::var_os("RUNNEL_TEST_SYNC_LEDGER")?;
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                Ok(f) => Some(Mutex::new(f)),
                Err(e) => {
                    tracing::warn!(error = %e, path = ?path, "cannot open the sync ledger");
                    None
                }
            }
        });
        let Some(ledger) = ledger else { return };
        let mut lines = String::new();
        for (path, len) in synced {
            lines.push_str(&format!("{}\t{len}\n", path.display()));
        }
        let mut f = ledger.lock().unwrap_or_else(|p| p.into_inner());
        // Written before the flush is reported done: what the ledger says
        // synced is on disk.
        let _ = f.write_all(lines.as_bytes());
    }
}
