//! Compaction of one log (`cleanup.policy=compact`), as Kafka's log
//! cleaner does it: keep the latest record of each key.
//!
//! A pass looks at the *dirty* part of the log, the closed segments from
//! the cleaner checkpoint on that are wholly below the high watermark and
//! older than `min.compaction.lag.ms`, and maps each key there to its
//! latest offset ([`OffsetMap`], in a fixed memory budget: if the map fills
//! up, the pass covers only the segments mapped so far). Then it rewrites
//! every closed segment from the log start to the end of the dirty part,
//! keeping a record unless the map holds a later offset for its key:
//!
//! * offsets stay as they were (a cleaned log has gaps); a batch keeps its
//!   header (producer id, sequence, last offset delta) with the records it
//!   keeps, recompressed with its own codec, headers and all; an emptied
//!   batch of an idempotent producer stays as a header with no records,
//!   so that the producer's sequence survives a rebuild from the log;
//! * a tombstone (null value) goes once it was already clean before this
//!   pass and is older than `delete.retention.ms`;
//! * keyless records (written before the topic was compacted) are kept.
//!
//! Each segment is written to `<base>.log.cleaned`, fsynced, and renamed
//! over the old file; its indexes are rebuilt. A crash at any point leaves
//! every segment either whole-old or whole-new, both valid logs with every
//! latest value, and a `.cleaned` leftover that the next open removes.

use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::segment::{io_err, log_path, OpenMode, Segment};
use super::{checkpoint, Error, Log, Result};
use crate::protocol::batch::{self, BatchHeader, HEADER_LEN};
use crate::protocol::rewrite;

/// Where the next pass starts: the end of the last pass's dirty part.
const CLEANER_CHECKPOINT: &str = "cleaner-offset-checkpoint";

/// Bytes one slot of the offset map takes: a 128-bit hash of the key and
/// the offset, as Kafka's (MD5 + offset).
pub const SLOT_BYTES: u64 = 24;

/// The latest offset of each key, in a fixed number of slots (open
/// addressing over 128-bit key hashes), filled to 90% at most.
pub struct OffsetMap {
    /// (hash high, hash low, offset + 1); 0 in the last marks a free slot.
    slots: Vec<[u64; 3]>,
    used: usize,
    limit: usize,
}

impl OffsetMap {
    /// A map of `slots` slots (at least 16).
    pub fn new(slots: usize) -> OffsetMap {
        let slots = slots.max(16);
        OffsetMap {
            slots: vec![[0; 3]; slots],
            used: 0,
            limit: slots * 9 / 10,
        }
    }

    fn hash(key: &[u8]) -> (u64, u64) {
        let mut a = std::hash::DefaultHasher::new();
        0u8.hash(&mut a);
        key.hash(&mut a);
        let mut b = std::hash::DefaultHasher::new();
        1u8.hash(&mut b);
        key.hash(&mut b);
        (a.finish(), b.finish())
    }

    fn find(&self, h: (u64, u64)) -> usize {
        let n = self.slots.len();
        let mut i = (h.0 % n as u64) as usize;
        loop {
            let s = &self.slots[i];
            if s[2] == 0 || (s[0] == h.0 && s[1] == h.1) {
                return i;
            }
            i = (i + 1) % n;
        }
    }

    /// Records `offset` as the latest of `key`; false (and nothing
    /// recorded) when the key is new and the map is full.
    pub fn put(&mut self, key: &[u8], offset: i64) -> bool {
        let h = Self::hash(key);
        let i = self.find(h);
        if self.slots[i][2] == 0 {
            if self.used >= self.limit {
                return false;
            }
            self.used += 1;
        }
        self.slots[i] = [h.0, h.1, offset as u64 + 1];
        true
    }

    pub fn get(&self, key: &[u8]) -> Option<i64> {
        let s = &self.slots[self.find(Self::hash(key))];
        (s[2] != 0).then(|| s[2] as i64 - 1)
    }

    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }
}

/// What a pass may do.
#[derive(Clone, Copy, Debug)]
pub struct CleanOptions {
    pub now_ms: i64,
    /// Only segments wholly below it are cleaned.
    pub high_watermark: i64,
    pub min_compaction_lag_ms: i64,
    pub delete_retention_ms: i64,
    /// Memory for the offset map (`log.cleaner.dedupe.buffer.size`).
    pub map_bytes: u64,
}

/// The dirty part of a log, as a pass would take it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dirt {
    pub first_dirty: i64,
    /// One past the dirty part (`first_dirty` when there is none).
    pub end_dirty: i64,
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    /// The oldest timestamp in the dirty part, for `max.compaction.lag.ms`.
    pub oldest_dirty_ms: Option<i64>,
}

impl Dirt {
    pub fn ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }
}

/// What a pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub first_dirty: i64,
    pub end_dirty: i64,
    pub keys: usize,
    pub segments_rewritten: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// When the next tombstone kept becomes removable, if any.
    pub next_tombstone_due_ms: Option<i64>,
}

/// A closed segment as the pass found it.
struct SegRef {
    base: i64,
    next_offset: i64,
    size: u64,
    file: Arc<File>,
    first_ts: Option<i64>,
    max_ts: Option<i64>,
}

impl Log {
    /// Where the next pass starts (the log start if none ran).
    pub fn cleaner_checkpoint(&self) -> i64 {
        let stored = std::fs::read_to_string(self.dir.join(CLEANER_CHECKPOINT))
            .ok()
            .and_then(|t| t.lines().nth(1).and_then(|l| l.trim().parse().ok()))
            .unwrap_or(0);
        stored.max(self.start_offset())
    }

    fn closed_refs(&self) -> Result<Vec<SegRef>> {
        let g = self.shared()?;
        Ok(g.closed
            .values()
            .map(|s| SegRef {
                base: s.base,
                next_offset: s.next_offset,
                size: s.size,
                file: s.log.clone(),
                first_ts: s.rolling_base_ms,
                max_ts: s.max_ts.map(|(t, _)| t),
            })
            .collect())
    }

    /// The dirty part as a pass starting at `first_dirty` would take it.
    pub fn dirt(&self, first_dirty: i64, opts: &CleanOptions) -> Result<Dirt> {
        let segs = self.closed_refs()?;
        Ok(dirt_of(&segs, first_dirty, opts))
    }

    /// One cleaning pass from `first_dirty` (see the module docs); calls
    /// `throttle` with the bytes it reads or writes, which may sleep. The
    /// cleaner checkpoint moves to the end of the dirty part cleaned.
    pub fn clean(
        &self,
        first_dirty: i64,
        opts: &CleanOptions,
        throttle: &mut dyn FnMut(u64),
    ) -> Result<CleanStats> {
        let segs = self.closed_refs()?;
        let dirt = dirt_of(&segs, first_dirty, opts);
        let mut stats = CleanStats {
            first_dirty: dirt.first_dirty,
            end_dirty: dirt.first_dirty,
            ..CleanStats::default()
        };
        // With no dirty part, a pass only drops the tombstones now due.
        let has_dirt = dirt.end_dirty > dirt.first_dirty;
        // Size the map by the offsets it may see, within the budget.
        let span = (dirt.end_dirty - dirt.first_dirty).max(0) as u64;
        let budget = (opts.map_bytes / SLOT_BYTES).max(16);
        let slots = if has_dirt {
            span.saturating_mul(10) / 9 + 16
        } else {
            16
        };
        let mut map = OffsetMap::new(slots.min(budget) as usize);
        let mut end_dirty = dirt.first_dirty;
        'segments: for s in segs
            .iter()
            .filter(|s| s.next_offset > dirt.first_dirty && s.next_offset <= dirt.end_dirty)
        {
            let mut full = false;
            for_each_batch(s, throttle, &mut stats.bytes_read, |h, bytes, _| {
                if h.is_control() || h.records_count == 0 {
                    return Ok(true);
                }
                let r = rewrite::records(bytes).map_err(|e| corrupt(self, s, e))?;
                // A batch is mapped whole or not at all.
                let before = map.len();
                for rec in &r.records {
                    if let Some(k) = r.key(rec) {
                        if !map.put(k, rec.offset) {
                            full = true;
                            tracing::debug!(keys = before, "offset map full; the pass stops here");
                            return Ok(false);
                        }
                    }
                }
                end_dirty = h.last_offset() + 1;
                Ok(true)
            })?;
            if full {
                break 'segments;
            }
            end_dirty = s.next_offset;
        }
        if has_dirt && end_dirty <= dirt.first_dirty {
            return Err(Error::Config(format!(
                "{}: log.cleaner.dedupe.buffer.size is too small for a single batch's keys",
                self.dir.display()
            )));
        }
        stats.end_dirty = end_dirty;
        stats.keys = map.len();
        let interval = self.config().index_interval_bytes;
        let tombstone_horizon = opts.now_ms.saturating_sub(opts.delete_retention_ms);
        for (i, s) in segs.iter().enumerate().filter(|(_, s)| s.base < end_dirty) {
            let cleaned = self.dir.join(format!("{:020}.log.cleaned", s.base));
            let mut out = BufWriter::new(
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&cleaned)
                    .map_err(io_err("create", &cleaned))?,
            );
            let mut changed = false;
            let mut written = 0u64;
            for_each_batch(s, throttle, &mut stats.bytes_read, |h, bytes, throttle| {
                let keep_whole =
                    h.is_control() || h.records_count == 0 || h.base_offset >= end_dirty;
                let mut emit: Option<Vec<u8>> = None;
                if !keep_whole {
                    let r = rewrite::records(bytes).map_err(|e| corrupt(self, s, e))?;
                    let mut keep = Vec::with_capacity(r.records.len());
                    for rec in &r.records {
                        let latest = rec.offset >= end_dirty
                            || r.key(rec)
                                .and_then(|k| map.get(k))
                                .is_none_or(|m| m <= rec.offset);
                        if !latest {
                            stats.records_removed += 1;
                            continue;
                        }
                        if rec.tombstone && r.key(rec).is_some() {
                            if rec.offset < dirt.first_dirty && rec.timestamp < tombstone_horizon {
                                stats.records_removed += 1;
                                stats.tombstones_removed += 1;
                                continue;
                            }
                            let due = rec.timestamp.saturating_add(opts.delete_retention_ms);
                            stats.next_tombstone_due_ms =
                                Some(stats.next_tombstone_due_ms.map_or(due, |d| d.min(due)));
                        }
                        keep.push(rec.span.clone());
                    }
                    if keep.len() != r.records.len() {
                        changed = true;
                        if !keep.is_empty() || h.producer_id >= 0 {
                            let codec = h.compression().unwrap_or(batch::Compression::None);
                            emit = Some(
                                rewrite::rebuild(&r.header, &r.plain, &keep, codec)
                                    .map_err(|e| corrupt(self, s, e))?,
                            );
                        } else {
                            return Ok(true);
                        }
                    }
                }
                let bytes = emit.as_deref().unwrap_or(bytes);
                out.write_all(bytes).map_err(io_err("write", &cleaned))?;
                written += bytes.len() as u64;
                throttle(bytes.len() as u64);
                Ok(true)
            })?;
            let file = out
                .into_inner()
                .map_err(|e| io_err("write", &cleaned)(e.into_error()))?;
            if !changed {
                drop(file);
                let _ = std::fs::remove_file(&cleaned);
                continue;
            }
            file.sync_all().map_err(io_err("fsync", &cleaned))?;
            drop(file);
            stats.bytes_written += written;
            // An emptied segment other than the first goes: the offsets it
            // held are found in the next one.
            let remove = written == 0 && i > 0;
            if self.swap_in(s, &cleaned, remove, interval)? {
                stats.segments_rewritten += 1;
            }
        }
        checkpoint::replace(
            &self.dir,
            CLEANER_CHECKPOINT,
            format!("0\n{end_dirty}\n").as_bytes(),
        )?;
        Ok(stats)
    }

    /// Replaces segment `s` with the file `cleaned` (or removes it), if it
    /// is still the segment the pass read; false if the log changed under
    /// the pass (retention or a truncation took the segment).
    fn swap_in(
        &self,
        s: &SegRef,
        cleaned: &PathBuf,
        remove: bool,
        interval: usize,
    ) -> Result<bool> {
        let _m = self.maintenance.lock().map_err(|_| Error::Poisoned)?;
        let still = self
            .shared()?
            .closed
            .get(&s.base)
            .is_some_and(|seg| Arc::ptr_eq(&seg.log, &s.file));
        if !still {
            let _ = std::fs::remove_file(cleaned);
            return Ok(false);
        }
        if remove {
            let _ = std::fs::remove_file(cleaned);
            let mut g = self.exclusive()?;
            if let Some(old) = g.closed.remove(&s.base) {
                old.remove_files()?;
            }
            drop(g);
            checkpoint::sync_dir(&self.dir)?;
            return Ok(true);
        }
        // The old indexes go first: whatever a crash leaves, no index
        // describes a file it was not built from.
        super::segment::remove_index_files(&self.dir, s.base)?;
        let dest = log_path(&self.dir, s.base);
        std::fs::rename(cleaned, &dest).map_err(io_err("rename", cleaned))?;
        checkpoint::sync_dir(&self.dir)?;
        let (mut seg, cut) = Segment::open(&self.dir, s.base, interval, OpenMode::Trust)?;
        if let Some(cut) = cut {
            return Err(Error::Corrupt {
                path: dest,
                detail: format!("a cleaned segment does not read back: {}", cut.reason),
            });
        }
        seg.finalize();
        seg.sync_indexes()?;
        let mut g = self.exclusive()?;
        g.closed.insert(s.base, seg);
        self.dir_dirty.store(true, Ordering::Release);
        Ok(true)
    }
}

fn corrupt(log: &Log, s: &SegRef, e: batch::Error) -> Error {
    Error::Corrupt {
        path: log_path(&log.dir, s.base),
        detail: format!("cleaner: {e}"),
    }
}

/// The dirty part of `segs` from `first_dirty`: the closed segments after
/// it, up to the first that is not wholly below the HW or not older than
/// the compaction lag.
fn dirt_of(segs: &[SegRef], first_dirty: i64, opts: &CleanOptions) -> Dirt {
    let lag_horizon = opts.now_ms.saturating_sub(opts.min_compaction_lag_ms);
    let mut d = Dirt {
        first_dirty,
        end_dirty: first_dirty,
        ..Dirt::default()
    };
    let mut open = true;
    for s in segs {
        if s.next_offset <= first_dirty {
            d.clean_bytes += s.size;
            continue;
        }
        if !open {
            continue;
        }
        let ripe =
            s.next_offset <= opts.high_watermark && s.max_ts.is_none_or(|t| t <= lag_horizon);
        if !ripe {
            open = false;
            continue;
        }
        d.dirty_bytes += s.size;
        d.end_dirty = s.next_offset;
        let first = s.first_ts.or(s.max_ts);
        d.oldest_dirty_ms = match (d.oldest_dirty_ms, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    d
}

/// Calls `f` with each whole batch of segment `s`, in order, until it
/// returns false.
fn for_each_batch(
    s: &SegRef,
    throttle: &mut dyn FnMut(u64),
    read: &mut u64,
    mut f: impl FnMut(&BatchHeader, &[u8], &mut dyn FnMut(u64)) -> Result<bool>,
) -> Result<()> {
    let mut pos = 0u64;
    let mut hdr = [0u8; HEADER_LEN];
    let mut buf = Vec::new();
    while pos + HEADER_LEN as u64 <= s.size {
        s.file.read_exact_at(&mut hdr, pos).map_err(|e| Error::Io {
            op: "read",
            path: PathBuf::from(format!("segment {}", s.base)),
            source: e,
        })?;
        let h = batch::parse_header(&hdr).map_err(|e| Error::Corrupt {
            path: PathBuf::from(format!("segment {}", s.base)),
            detail: format!("batch at byte {pos}: {e}"),
        })?;
        let size = h.size() as u64;
        if pos + size > s.size {
            break;
        }
        buf.resize(h.size(), 0);
        s.file.read_exact_at(&mut buf, pos).map_err(|e| Error::Io {
            op: "read",
            path: PathBuf::from(format!("segment {}", s.base)),
            source: e,
        })?;
        *read += size;
        throttle(size);
        if !f(&h, &buf, &mut *throttle)? {
            break;
        }
        pos += size;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_map_keeps_the_latest_offset_within_its_slots() {
        let mut m = OffsetMap::new(100);
        for i in 0..50i64 {
            assert!(m.put(format!("k{}", i % 10).as_bytes(), i));
        }
        assert_eq!(m.len(), 10);
        assert_eq!(m.get(b"k3"), Some(43));
        assert_eq!(m.get(b"nope"), None);
        // 90 of 100 slots at most.
        let mut added = 0;
        while m.put(format!("new{added}").as_bytes(), 1000 + added) {
            added += 1;
        }
        assert_eq!(m.len(), 90);
        // A key already there can still move.
        assert!(m.put(b"k3", 5000));
        assert_eq!(m.get(b"k3"), Some(5000));
    }
}
