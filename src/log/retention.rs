//! Retention: which closed segments are past `retention.ms` or beyond
//! `retention.bytes` (a pure function, table-tested), deleting them, and
//! moving the log start offset (DeleteRecords, or a follower taking its
//! leader's start).
//!
//! As in Kafka, only whole closed segments go, never the active one, and
//! only segments wholly below the high watermark; a segment's age is its
//! largest timestamp. The start offset is written (fsynced) before any file
//! goes, so a crash in between leaves segments below the start, which the
//! next open removes.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::{checkpoint, Inner, Log, Result};

/// A closed segment as retention sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base: i64,
    /// One past its last offset.
    pub next_offset: i64,
    pub size: u64,
    /// Its largest record timestamp, if it holds any batch.
    pub max_timestamp: Option<i64>,
}

/// The limits a topic sets (`-1`: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionLimits {
    pub retention_ms: i64,
    pub retention_bytes: i64,
}

/// Why segments go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Time,
    Size,
}

/// How many of the oldest `closed` segments (oldest first) retention
/// deletes, and why: each must end at or below `hw`; then it goes if its
/// newest record is older than `retention_ms` at `now_ms`, or while the
/// whole log (`total` bytes, the active segment included) stays at or
/// above `retention_bytes` without it.
pub fn expired(
    closed: &[SegmentSummary],
    total: u64,
    hw: i64,
    now_ms: i64,
    limits: RetentionLimits,
) -> (usize, Option<Reason>) {
    let mut count = 0;
    let mut reason = None;
    let mut left = total;
    for s in closed {
        if s.next_offset > hw {
            break;
        }
        let by_time = limits.retention_ms >= 0
            && s.max_timestamp
                .is_some_and(|ts| now_ms.saturating_sub(ts) > limits.retention_ms);
        let by_size = limits.retention_bytes >= 0
            && left.saturating_sub(s.size) >= limits.retention_bytes as u64;
        if !(by_time || by_size) {
            break;
        }
        reason.get_or_insert(if by_time { Reason::Time } else { Reason::Size });
        left -= s.size;
        count += 1;
    }
    (count, reason)
}

/// Removes, at open, the segments wholly below the stored start offset.
pub(super) fn remove_below_start(dir: &Path, inner: &mut Inner) -> Result<()> {
    let start = inner.log_start;
    let gone: Vec<i64> = inner
        .closed
        .iter()
        // An empty first segment (all its records cleaned away) at the
        // start is not below it.
        .take_while(|(_, s)| s.next_offset <= start && s.base < start)
        .map(|(b, _)| *b)
        .collect();
    for base in &gone {
        if let Some(seg) = inner.closed.remove(base) {
            seg.remove_files()?;
        }
    }
    if !gone.is_empty() {
        tracing::info!(dir = %dir.display(), segments = gone.len(), start, "removed segments below the log start offset");
        checkpoint::sync_dir(dir)?;
    }
    Ok(())
}

/// What `Log::delete_expired` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    pub segments: usize,
    pub bytes: u64,
    pub start: i64,
}

impl Log {
    /// The closed segments, oldest first, and the size of every segment.
    pub fn segment_summaries(&self) -> Result<(Vec<SegmentSummary>, u64)> {
        let g = self.shared()?;
        let closed = g
            .closed
            .values()
            .map(|s| SegmentSummary {
                base: s.base,
                next_offset: s.next_offset,
                size: s.size,
                max_timestamp: s.max_ts.map(|(ts, _)| ts),
            })
            .collect();
        let total = g.segments().map(|s| s.size).sum();
        Ok((closed, total))
    }

    /// Bytes in every segment.
    pub fn size_bytes(&self) -> u64 {
        self.shared()
            .map(|g| g.segments().map(|s| s.size).sum())
            .unwrap_or(0)
    }

    /// Deletes the closed segments `expired` picks (see there).
    pub fn delete_expired(&self, hw: i64, now_ms: i64, limits: RetentionLimits) -> Result<Deleted> {
        let (closed, total) = self.segment_summaries()?;
        let (count, reason) = expired(&closed, total, hw, now_ms, limits);
        if count == 0 {
            return Ok(Deleted::default());
        }
        let new_start = closed[count - 1].next_offset;
        let d = self.delete_below(new_start)?;
        tracing::info!(dir = %self.dir.display(), segments = d.segments, bytes = d.bytes, start = d.start, ?reason, "retention deleted old segments");
        Ok(d)
    }

    /// Moves the log start offset up to `offset` (never down, never past
    /// the log end): reads below it are refused from now on, and the closed
    /// segments wholly below it go.
    pub fn advance_start(&self, offset: i64) -> Result<Deleted> {
        self.delete_below(offset)
    }

    fn delete_below(&self, offset: i64) -> Result<Deleted> {
        let _m = self
            .maintenance
            .lock()
            .map_err(|_| super::Error::Poisoned)?;
        let mut g = self.exclusive()?;
        let offset = offset.min(g.active.next_offset);
        if offset <= g.start_offset() {
            return Ok(Deleted {
                start: g.start_offset(),
                ..Deleted::default()
            });
        }
        g.log_start = offset;
        checkpoint::write_log_start(&self.dir, offset)?;
        let gone: Vec<i64> = g
            .closed
            .iter()
            .take_while(|(_, s)| s.next_offset <= offset && s.base < offset)
            .map(|(b, _)| *b)
            .collect();
        let mut d = Deleted::default();
        for base in gone {
            if let Some(seg) = g.closed.remove(&base) {
                d.segments += 1;
                d.bytes += seg.size;
                seg.remove_files()?;
            }
        }
        if d.segments > 0 {
            self.dir_dirty.store(true, Ordering::Release);
        }
        d.start = g.start_offset();
        self.start_offset.store(d.start, Ordering::Release);
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, next: i64, size: u64, ts: i64) -> SegmentSummary {
        SegmentSummary {
            base,
            next_offset: next,
            size,
            max_timestamp: Some(ts),
        }
    }

    #[test]
    fn expiry_by_time_size_and_high_watermark() {
        let closed = [
            seg(0, 10, 100, 1_000),
            seg(10, 20, 100, 2_000),
            seg(20, 30, 100, 3_000),
        ];
        // total includes a 50-byte active segment.
        let total = 350;
        let limits = |ms, bytes| RetentionLimits {
            retention_ms: ms,
            retention_bytes: bytes,
        };
        type Row = (i64, i64, i64, i64, usize, Option<Reason>);
        let table: &[Row] = &[
            // hw, now, retention.ms, retention.bytes -> count, reason
            (30, 2_500, 1_000, -1, 1, Some(Reason::Time)),
            (30, 10_000, 1_000, -1, 3, Some(Reason::Time)),
            // Not below the HW: stays, however old.
            (15, 10_000, 1_000, -1, 1, Some(Reason::Time)),
            (30, 10_000, -1, -1, 0, None),
            // Size: go while what is left stays at or above the limit.
            (30, 0, -1, 250, 1, Some(Reason::Size)),
            (30, 0, -1, 150, 2, Some(Reason::Size)),
            (30, 0, -1, 0, 3, Some(Reason::Size)),
            (30, 0, -1, 351, 0, None),
            // Either limit.
            (30, 2_500, 1_000, 150, 2, Some(Reason::Time)),
        ];
        for &(hw, now, ms, bytes, count, reason) in table {
            assert_eq!(
                expired(&closed, total, hw, now, limits(ms, bytes)),
                (count, reason),
                "hw {hw} now {now} ms {ms} bytes {bytes}"
            );
        }
        // A segment with no timestamp is not old.
        let empty = [SegmentSummary {
            max_timestamp: None,
            ..closed[0]
        }];
        assert_eq!(expired(&empty, 150, 30, 10_000, limits(1, -1)), (0, None));
    }
}
