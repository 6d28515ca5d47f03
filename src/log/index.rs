//! The two sparse indexes of a segment, kept in memory and written to an
//! append-only file when the segment is synced (`.index`: relative offset
//! u32, position u32; `.timeindex`: timestamp i64, relative offset u32;
//! big-endian like Kafka's).
//!
//! The files are a cache: a segment can always rebuild them by scanning its
//! log file, so a failed index write is logged and the file abandoned rather
//! than failing the sync that wrote it.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A fixed-size index entry.
pub(crate) trait Entry: Copy {
    const SIZE: usize;
    fn encode(&self, out: &mut [u8]);
    fn decode(b: &[u8]) -> Self;
}

/// `.index`: the batch whose base offset is `segment base + rel_offset`
/// starts at byte `position` of the log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

/// `.timeindex`: no record at or before `segment base + rel_offset` has a
/// timestamp above `timestamp`, and the record(s) of that batch reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

impl Entry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.rel_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            rel_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

impl Entry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.rel_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(ts),
            rel_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

/// An index held in memory, with no file descriptor kept open (a broker
/// with 10,000 partitions would otherwise hold two more per partition than
/// the one of its log file, 30,000 in all, past common `ulimit -n`
/// settings). Entries are
/// appended to the file when the segment is synced ([`IndexFile::sync`],
/// at a roll or a clean close), and a file short of its tail is fine: an
/// open scans the log from the last entry the file has.
pub(crate) struct IndexFile<E: Entry> {
    path: PathBuf,
    entries: Vec<E>,
    /// Entries the file holds, all equal to the first ones of `entries`.
    written: usize,
    /// Bytes in the file (more than `written` entries when it held a torn
    /// or foreign tail that was not loaded).
    file_len: u64,
    /// Set after a failed write: the file no longer mirrors `entries` and is
    /// left for the next open to detect and rebuild.
    broken: bool,
}

impl<E: Entry> IndexFile<E> {
    /// Loads the file, creating it if missing. Returns `None` for the
    /// entries when the file cannot be an index of a log of `log_size` bytes
    /// (torn entry, or more entries than the log has batches); the caller
    /// then rebuilds it.
    pub fn open(path: &Path, max_entries: usize) -> io::Result<(Self, bool)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        let mut index = IndexFile {
            path: path.to_path_buf(),
            entries: Vec::new(),
            written: 0,
            file_len: len,
            broken: false,
        };
        if len % E::SIZE as u64 != 0 || len / E::SIZE as u64 > max_entries as u64 {
            return Ok((index, false));
        }
        // Bounded just above by the log size, so this allocation is sane.
        let mut raw = vec![0u8; len as usize];
        file.read_exact_at(&mut raw, 0)?;
        index.entries = raw.chunks_exact(E::SIZE).map(E::decode).collect();
        index.written = index.entries.len();
        Ok((index, true))
    }

    #[cfg(test)]
    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn last(&self) -> Option<E> {
        self.entries.last().copied()
    }

    /// Adds an entry (in memory: the file gets it at the next `sync`).
    pub fn push(&mut self, entry: E) {
        self.entries.push(entry);
    }

    /// Keeps the first `keep` entries.
    pub fn truncate(&mut self, keep: usize) -> io::Result<()> {
        self.entries.truncate(keep);
        self.written = self.written.min(self.entries.len());
        let len = (self.written * E::SIZE) as u64;
        if self.file_len > len {
            OpenOptions::new()
                .write(true)
                .open(&self.path)?
                .set_len(len)?;
            self.file_len = len;
        }
        self.broken = false;
        Ok(())
    }

    /// Drops every entry and empties the file.
    pub fn clear(&mut self) -> io::Result<()> {
        self.truncate(0)
    }

    /// Appends the entries the file lacks and fsyncs it. A failed write is
    /// logged and leaves the file for the next open to rebuild; a failed
    /// fsync is an error.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.broken || self.written == self.entries.len() {
            return Ok(());
        }
        let file = OpenOptions::new().write(true).open(&self.path)?;
        let mut buf = Vec::with_capacity((self.entries.len() - self.written) * E::SIZE);
        let mut one = [0u8; 16];
        for e in &self.entries[self.written..] {
            e.encode(&mut one[..E::SIZE]);
            buf.extend_from_slice(&one[..E::SIZE]);
        }
        let at = (self.written * E::SIZE) as u64;
        if let Err(e) = file.write_all_at(&buf, at) {
            tracing::warn!(path = %self.path.display(), error = %e,
                "cannot write index entries; the index will be rebuilt on the next open");
            self.broken = true;
            return Ok(());
        }
        self.written = self.entries.len();
        self.file_len = self.file_len.max(at + buf.len() as u64);
        file.sync_all()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl IndexFile<OffsetEntry> {
    /// Position of the last indexed batch whose base offset is at most
    /// `rel_offset`, or 0.
    pub fn lookup(&self, rel_offset: u32) -> u32 {
        let n = self.entries.partition_point(|e| e.rel_offset <= rel_offset);
        if n == 0 {
            0
        } else {
            self.entries[n - 1].position
        }
    }

    /// Entries strictly increasing in both offset and position, all inside
    /// the log.
    pub fn is_consistent(&self, log_size: u64) -> bool {
        self.entries
            .windows(2)
            .all(|w| w[0].rel_offset < w[1].rel_offset && w[0].position < w[1].position)
            && self
                .entries
                .last()
                .is_none_or(|e| u64::from(e.position) < log_size)
    }
}

impl IndexFile<TimeEntry> {
    /// Relative offset of the last entry with a timestamp strictly below
    /// `timestamp`: every record up to that offset is older than `timestamp`.
    pub fn last_before(&self, timestamp: i64) -> Option<u32> {
        let n = self.entries.partition_point(|e| e.timestamp < timestamp);
        n.checked_sub(1).map(|i| self.entries[i].rel_offset)
    }

    pub fn is_consistent(&self) -> bool {
        self.entries
            .windows(2)
            .all(|w| w[0].timestamp < w[1].timestamp && w[0].rel_offset <= w[1].rel_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_persist_and_lookups_pick_the_floor() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("x.index");
        {
            let (mut idx, ok) = IndexFile::<OffsetEntry>::open(&path, 100)?;
            assert!(ok);
            for (o, p) in [(10, 4096), (20, 8192), (35, 12288)] {
                idx.push(OffsetEntry {
                    rel_offset: o,
                    position: p,
                });
            }
            idx.sync()?;
        }
        let (idx, ok) = IndexFile::<OffsetEntry>::open(&path, 100)?;
        assert!(ok);
        assert_eq!(idx.entries().len(), 3);
        assert!(idx.is_consistent(20_000));
        assert!(!idx.is_consistent(12_288));
        assert_eq!(idx.lookup(0), 0);
        assert_eq!(idx.lookup(9), 0);
        assert_eq!(idx.lookup(10), 4096);
        assert_eq!(idx.lookup(34), 8192);
        assert_eq!(idx.lookup(u32::MAX), 12288);
        // More entries than the log could hold, or a torn entry: refused.
        assert!(!IndexFile::<OffsetEntry>::open(&path, 2)?.1);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &[1, 2, 3]))?;
        assert!(!IndexFile::<OffsetEntry>::open(&path, 100)?.1);
        Ok(())
    }

    #[test]
    fn time_index_finds_the_last_entry_strictly_before() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (mut idx, _) = IndexFile::<TimeEntry>::open(&dir.path().join("t"), 10)?;
        for (t, o) in [(100, 3), (200, 9), (300, 9)] {
            idx.push(TimeEntry {
                timestamp: t,
                rel_offset: o,
            });
        }
        assert!(idx.is_consistent());
        assert_eq!(idx.last_before(100), None);
        assert_eq!(idx.last_before(101), Some(3));
        assert_eq!(idx.last_before(300), Some(9));
        idx.sync()?;
        idx.truncate(1)?;
        let (again, ok) = IndexFile::<TimeEntry>::open(&dir.path().join("t"), 10)?;
        assert!(ok);
        assert_eq!(
            again.entries(),
            &[TimeEntry {
                timestamp: 100,
                rel_offset: 3
            }]
        );
        Ok(())
    }
}
