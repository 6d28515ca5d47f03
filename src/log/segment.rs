//! One segment: a log file of whole batches named by its base offset, plus
//! its offset and time indexes. Knows how to scan itself (headers only, or
//! with full CRC checks when recovering), cut a torn tail, rebuild indexes,
//! locate the batch holding an offset, and truncate.
//!
//! A segment never spans more than `u32::MAX` offsets or bytes of index
//! positions: the log rolls before that.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::{IndexFile, OffsetEntry, TimeEntry};
use super::{Error, Result};
use crate::protocol::batch::{self, BatchHeader, HEADER_LEN};

pub(crate) fn log_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

fn time_index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

/// Removes the files of the segment based at `base` without opening it.
pub(crate) fn remove_segment_files(dir: &Path, base: i64) -> Result<()> {
    remove_files(&[
        &log_path(dir, base),
        &index_path(dir, base),
        &time_index_path(dir, base),
    ])
}

/// Removes the index files of the segment based at `base` (the log file
/// stays; an open rebuilds them).
pub(crate) fn remove_index_files(dir: &Path, base: i64) -> Result<()> {
    remove_files(&[&index_path(dir, base), &time_index_path(dir, base)])
}

fn remove_files(paths: &[&Path]) -> Result<()> {
    for p in paths {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", p)(e)),
        }
    }
    Ok(())
}

pub(crate) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// How much to trust the files when opening a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// Flushed before a clean shutdown or a recovery checkpoint: check the
    /// indexes and the batch headers after the last index entry.
    Trust,
    /// Possibly torn: check every batch (CRC included) and rebuild indexes.
    Recover,
}

/// What recovery cut off the end of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Truncation {
    pub position: u64,
    pub dropped_bytes: u64,
    /// The segment's next offset after the cut.
    pub next_offset: i64,
    pub reason: String,
}

pub(crate) struct Segment {
    pub base: i64,
    log_path: PathBuf,
    /// Shared so that flushes can fsync without holding the log's lock.
    pub log: Arc<File>,
    pub index: IndexFile<OffsetEntry>,
    pub time_index: IndexFile<TimeEntry>,
    /// Bytes of whole batches in the log file.
    pub size: u64,
    /// One past the last offset stored here (`base` when empty).
    pub next_offset: i64,
    /// Largest batch `maxTimestamp` and the last offset of the first batch
    /// that reached it.
    pub max_ts: Option<(i64, i64)>,
    /// Time the segment started, for `segment.ms`: the wall clock of its
    /// first append, or after a restart the first batch's max timestamp (as
    /// Kafka does).
    pub rolling_base_ms: Option<i64>,
    bytes_since_index: usize,
    interval: usize,
    /// (leader epoch, base offset) of each batch that carries a higher
    /// epoch than those before it in this segment: what a recovery gives
    /// the epoch cache.
    pub epoch_starts: Vec<(i32, i64)>,
    /// A failed append could not cut what it wrote: the file may hold
    /// bytes past `size`, which the next append cuts before it writes.
    dirty_tail: bool,
}

/// Writes `buf` at `at` in the segment file at `path` (with the test hook
/// that fails it part way).
fn write_at(file: &File, path: &Path, buf: &[u8], at: u64) -> io::Result<()> {
    #[cfg(test)]
    if let Some(n) = faults::take(path, |a| a.write.take()) {
        file.write_all_at(&buf[..n.min(buf.len())], at)?;
        return Err(faults::enospc());
    }
    let _ = path;
    file.write_all_at(buf, at)
}

fn cut_at(file: &File, path: &Path, len: u64) -> io::Result<()> {
    #[cfg(test)]
    if faults::take(path, |a| std::mem::take(&mut a.cut)) {
        return Err(faults::eio());
    }
    let _ = path;
    file.set_len(len)
}

/// fsyncs the data of the segment file at `path` (with the test hook that
/// fails it).
pub(crate) fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    #[cfg(test)]
    if faults::take(path, |a| std::mem::take(&mut a.fsync)) {
        return Err(faults::eio());
    }
    let _ = path;
    file.sync_data()
}

impl Segment {
    /// Creates an empty segment, replacing any leftover files of that name.
    pub fn create(dir: &Path, base: i64, interval: usize) -> Result<Segment> {
        let log_path = log_path(dir, base);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .map_err(io_err("create", &log_path))?;
        let made = (|| {
            #[cfg(test)]
            if faults::take(&log_path, |a| std::mem::take(&mut a.create)) {
                return Err(io_err("create", &log_path)(faults::enospc()));
            }
            let mut seg = Segment::from_parts(dir, base, interval, log_path.clone(), log, 0)?.0;
            seg.reset_indexes()?;
            Ok(seg)
        })();
        if made.is_err() {
            // Leave no half-made segment behind for a restart to find.
            let _ = remove_segment_files(dir, base);
        }
        made
    }

    fn from_parts(
        dir: &Path,
        base: i64,
        interval: usize,
        log_path: PathBuf,
        log: File,
        log_len: u64,
    ) -> Result<(Segment, bool)> {
        let max_entries = usize::try_from(log_len / HEADER_LEN as u64 + 1).unwrap_or(usize::MAX);
        let ip = index_path(dir, base);
        let (index, index_ok) =
            IndexFile::<OffsetEntry>::open(&ip, max_entries).map_err(io_err("open", &ip))?;
        let tp = time_index_path(dir, base);
        let (time_index, time_ok) =
            IndexFile::<TimeEntry>::open(&tp, max_entries).map_err(io_err("open", &tp))?;
        Ok((
            Segment {
                base,
                log_path,
                log: Arc::new(log),
                index,
                time_index,
                size: 0,
                next_offset: base,
                max_ts: None,
                rolling_base_ms: None,
                bytes_since_index: 0,
                interval,
                epoch_starts: Vec::new(),
                dirty_tail: false,
            },
            index_ok && time_ok,
        ))
    }

    /// Opens an existing segment, cutting any torn or corrupt tail.
    pub fn open(
        dir: &Path,
        base: i64,
        interval: usize,
        mode: OpenMode,
    ) -> Result<(Segment, Option<Truncation>)> {
        let log_path = log_path(dir, base);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(io_err("open", &log_path))?;
        let log_len = log.metadata().map_err(io_err("stat", &log_path))?.len();
        let (mut seg, loaded) = Segment::from_parts(dir, base, interval, log_path, log, log_len)?;
        let mut cut = None;
        let mut trusted = false;
        if mode == OpenMode::Trust && loaded && seg.indexes_look_valid(log_len)? {
            let from = seg.index.last().map_or(0, |e| u64::from(e.position));
            seg.next_offset = base + seg.index.last().map_or(0, |e| i64::from(e.rel_offset));
            seg.max_ts = seg
                .time_index
                .last()
                .map(|e| (e.timestamp, base + i64::from(e.rel_offset)));
            cut = seg.scan(from, false)?;
            let time_ok = seg.max_ts.is_none_or(|(_, off)| off < seg.next_offset);
            trusted = cut.is_none() && time_ok;
        }
        if !trusted {
            seg.reset_indexes()?;
            let verify = mode == OpenMode::Recover;
            let again = seg.scan(0, verify)?;
            cut = cut.or(again);
        }
        if seg.size > 0 {
            seg.rolling_base_ms = Some(seg.read_header(0)?.max_timestamp);
        }
        Ok((seg, cut))
    }

    /// Cheap checks that the loaded index files belong to this log file.
    fn indexes_look_valid(&self, log_len: u64) -> Result<bool> {
        if !self.index.is_consistent(log_len) || !self.time_index.is_consistent() {
            return Ok(false);
        }
        let Some(last) = self.index.last() else {
            return Ok(true);
        };
        let pos = u64::from(last.position);
        if pos + HEADER_LEN as u64 > log_len {
            return Ok(false);
        }
        let mut hdr = [0u8; HEADER_LEN];
        self.log
            .read_exact_at(&mut hdr, pos)
            .map_err(io_err("read", &self.log_path))?;
        Ok(batch::parse_header(&hdr)
            .is_ok_and(|h| h.base_offset == self.base + i64::from(last.rel_offset)))
    }

    fn reset_indexes(&mut self) -> Result<()> {
        self.index
            .clear()
            .map_err(io_err("truncate", &self.log_path))?;
        self.time_index
            .clear()
            .map_err(io_err("truncate", &self.log_path))?;
        self.size = 0;
        self.next_offset = self.base;
        self.max_ts = None;
        self.bytes_since_index = 0;
        self.epoch_starts.clear();
        Ok(())
    }

    /// Reads batches from `from` to the end of the file, indexing them; cuts
    /// the file at the first batch that is incomplete or fails the checks
    /// (`verify` adds CRC and record checks). Leaves `size` at the end of
    /// the last good batch.
    fn scan(&mut self, from: u64, verify: bool) -> Result<Option<Truncation>> {
        let path = self.log_path.clone();
        let file_len = self.log.metadata().map_err(io_err("stat", &path))?.len();
        let file = Arc::clone(&self.log);
        let mut reader = BufReader::with_capacity(1 << 18, &*file);
        reader
            .seek(SeekFrom::Start(from))
            .map_err(io_err("seek", &path))?;
        let mut pos = from;
        let mut hdr = [0u8; HEADER_LEN];
        let mut body = Vec::new();
        let problem = loop {
            if pos >= file_len {
                break None;
            }
            let remaining = file_len - pos;
            if remaining < HEADER_LEN as u64 {
                break Some(format!(
                    "{remaining} trailing bytes, less than a batch header"
                ));
            }
            reader.read_exact(&mut hdr).map_err(io_err("read", &path))?;
            let h = match batch::parse_header(&hdr) {
                Ok(h) => h,
                Err(e) => break Some(e.to_string()),
            };
            let size = h.size() as u64;
            if size > remaining {
                break Some(format!(
                    "batch of {size} bytes but only {remaining} bytes left in the file"
                ));
            }
            if h.base_offset < self.next_offset
                || h.last_offset_delta < 0
                || h.last_offset() - self.base > i64::from(u32::MAX)
            {
                break Some(format!(
                    "batch offsets {}..={} do not follow {} in a segment based at {}",
                    h.base_offset,
                    h.last_offset(),
                    self.next_offset,
                    self.base
                ));
            }
            if verify {
                body.clear();
                body.extend_from_slice(&hdr);
                // `size <= remaining`: bounded by the file, not by the header.
                body.resize(h.size(), 0);
                reader
                    .read_exact(&mut body[HEADER_LEN..])
                    .map_err(io_err("read", &path))?;
                // A stored batch: a cleaned one may have offset gaps or
                // no record left.
                if let Err(e) = crate::protocol::rewrite::validate_stored(&body) {
                    break Some(e.to_string());
                }
            } else {
                reader
                    .seek_relative((size - HEADER_LEN as u64) as i64)
                    .map_err(io_err("seek", &path))?;
            }
            self.on_batch(&h, pos);
            pos += size;
        };
        drop(reader);
        self.size = pos;
        let Some(reason) = problem else {
            return Ok(None);
        };
        self.log.set_len(pos).map_err(io_err("truncate", &path))?;
        self.log.sync_all().map_err(io_err("fsync", &path))?;
        Ok(Some(Truncation {
            position: pos,
            dropped_bytes: file_len - pos,
            next_offset: self.next_offset,
            reason,
        }))
    }

    /// Index bookkeeping for a batch stored at `pos`, in append order.
    fn on_batch(&mut self, h: &BatchHeader, pos: u64) {
        if self
            .epoch_starts
            .last()
            .is_none_or(|&(e, _)| h.partition_leader_epoch > e)
        {
            self.epoch_starts
                .push((h.partition_leader_epoch, h.base_offset));
        }
        if self.max_ts.is_none_or(|(t, _)| h.max_timestamp > t) {
            self.max_ts = Some((h.max_timestamp, h.last_offset()));
        }
        if self.bytes_since_index >= self.interval {
            let rel = u32::try_from(h.base_offset - self.base);
            if let (Ok(rel_offset), Ok(position)) = (rel, u32::try_from(pos)) {
                self.index.push(OffsetEntry {
                    rel_offset,
                    position,
                });
                self.push_time_entry();
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.size();
        self.next_offset = h.last_offset() + 1;
    }

    fn push_time_entry(&mut self) {
        let Some((timestamp, offset)) = self.max_ts else {
            return;
        };
        if self
            .time_index
            .last()
            .is_some_and(|e| e.timestamp >= timestamp)
        {
            return;
        }
        if let Ok(rel_offset) = u32::try_from(offset - self.base) {
            self.time_index.push(TimeEntry {
                timestamp,
                rel_offset,
            });
        }
    }

    /// Records the final max timestamp in the time index, so that a reopen
    /// finds it without scanning (Kafka does this when a segment rolls).
    pub fn finalize(&mut self) {
        self.push_time_entry();
    }

    /// Appends batches already stamped with their offsets; `headers` gives
    /// each batch's position in `buf` and its header. On failure nothing
    /// changes: the bytes written are cut off again (or, if even that
    /// fails, before the next append writes), and neither the size nor the
    /// indexes moved, so no read, and no recovery after a restart, finds a
    /// part of the failed write.
    pub fn append(
        &mut self,
        buf: &[u8],
        headers: &[(usize, BatchHeader)],
        now_ms: i64,
    ) -> Result<()> {
        let start = self.size;
        if self.dirty_tail {
            cut_at(&self.log, &self.log_path, start).map_err(io_err("truncate", &self.log_path))?;
            self.dirty_tail = false;
        }
        if let Err(e) = write_at(&self.log, &self.log_path, buf, start) {
            // Leave no partial batch behind for the next append to follow.
            if let Err(cut) = cut_at(&self.log, &self.log_path, start) {
                tracing::warn!(segment = %self.log_path.display(), position = start, error = %cut,
                    "cannot cut a failed write; the next append cuts it first");
                self.dirty_tail = true;
            }
            return Err(io_err("write", &self.log_path)(e));
        }
        if self.size == 0 {
            self.rolling_base_ms = Some(now_ms);
        }
        for (at, h) in headers {
            self.on_batch(h, start + *at as u64);
        }
        self.size += buf.len() as u64;
        Ok(())
    }

    /// The file's length, which may exceed `size` after a failed write.
    #[cfg(test)]
    pub fn file_len(&self) -> u64 {
        self.log.metadata().map_or(0, |m| m.len())
    }

    pub fn read_header(&self, pos: u64) -> Result<BatchHeader> {
        if pos + HEADER_LEN as u64 > self.size {
            return Err(self.corrupt(format!("no batch header at byte {pos}")));
        }
        let mut hdr = [0u8; HEADER_LEN];
        self.log
            .read_exact_at(&mut hdr, pos)
            .map_err(io_err("read", &self.log_path))?;
        let h = batch::parse_header(&hdr)
            .map_err(|e| self.corrupt(format!("batch at byte {pos}: {e}")))?;
        if pos + h.size() as u64 > self.size {
            return Err(self.corrupt(format!(
                "batch at byte {pos} of {} bytes runs past the end",
                h.size()
            )));
        }
        Ok(h)
    }

    /// Reads `len` bytes at `pos`, which the caller took from batch headers.
    pub fn read_bytes(&self, pos: u64, len: usize) -> Result<Vec<u8>> {
        if pos + len as u64 > self.size {
            return Err(self.corrupt(format!("read of {len} bytes at {pos} past the end")));
        }
        let mut buf = vec![0u8; len];
        self.log
            .read_exact_at(&mut buf, pos)
            .map_err(io_err("read", &self.log_path))?;
        Ok(buf)
    }

    /// The first batch whose last offset is at least `offset`, with its
    /// position, starting the scan from the offset index.
    pub fn find_batch(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>> {
        self.find_batch_from(self.position_hint(offset), offset)
    }

    fn position_hint(&self, offset: i64) -> u64 {
        let rel = (offset - self.base).clamp(0, i64::from(u32::MAX)) as u32;
        u64::from(self.index.lookup(rel))
    }

    /// Like [`Segment::find_batch`], scanning from `pos` (a batch boundary).
    pub fn find_batch_from(&self, mut pos: u64, offset: i64) -> Result<Option<(u64, BatchHeader)>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        while pos < self.size {
            let h = self.read_header(pos)?;
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.size() as u64;
        }
        Ok(None)
    }

    /// Drops every batch whose last offset is `offset` or more, durably.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        let Some((pos, _)) = self.find_batch(offset)? else {
            return Ok(());
        };
        self.log
            .set_len(pos)
            .map_err(io_err("truncate", &self.log_path))?;
        self.log
            .sync_all()
            .map_err(io_err("fsync", &self.log_path))?;
        self.reset_indexes()?;
        if let Some(t) = self.scan(0, false)? {
            tracing::warn!(segment = %self.log_path.display(), position = t.position,
                reason = %t.reason, "unexpected bad batch while re-indexing after truncation");
        }
        if self.size == 0 {
            self.rolling_base_ms = None;
        }
        Ok(())
    }

    /// fsyncs the index files (the log file is synced by `Log::flush`).
    pub fn sync_indexes(&mut self) -> Result<()> {
        let path = self.index.path().to_path_buf();
        self.index.sync().map_err(io_err("fsync", &path))?;
        let path = self.time_index.path().to_path_buf();
        self.time_index.sync().map_err(io_err("fsync", &path))
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Removes the segment's files; missing files are fine.
    pub fn remove_files(&self) -> Result<()> {
        remove_files(&[&self.log_path, self.index.path(), self.time_index.path()])
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::Corrupt {
            path: self.log_path.clone(),
            detail,
        }
    }
}

/// Test hooks that make the next segment write, creation or fsync in a
/// log directory fail as a full or broken disk would (armed per directory,
/// so that they reach the blocking pool's threads and no other test's log).
#[cfg(test)]
pub(crate) mod faults {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    #[derive(Clone, Copy, Debug, Default)]
    pub struct Armed {
        /// The next segment write stores this many bytes, then fails with
        /// ENOSPC.
        pub write: Option<usize>,
        /// The next cut of a failed write's bytes fails.
        pub cut: bool,
        /// The next segment creation fails after creating its log file.
        pub create: bool,
        /// The next fsync of a segment's log file fails with EIO.
        pub fsync: bool,
    }

    static ARMED: Mutex<Option<HashMap<PathBuf, Armed>>> = Mutex::new(None);

    /// Arms faults for the log in `dir`.
    pub fn arm(dir: &Path, f: impl FnOnce(&mut Armed)) {
        let mut g = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        f(g.get_or_insert_with(HashMap::new)
            .entry(dir.to_path_buf())
            .or_default());
    }

    /// Takes the armed fault `pick` chooses for the segment file at `path`.
    pub fn take<T>(path: &Path, pick: impl FnOnce(&mut Armed) -> T) -> T {
        let mut g = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        let dir = path.parent().unwrap_or(path).to_path_buf();
        let mut none = Armed::default();
        let a = g
            .as_mut()
            .and_then(|m| m.get_mut(&dir))
            .unwrap_or(&mut none);
        pick(a)
    }

    pub fn enospc() -> std::io::Error {
        std::io::Error::from_raw_os_error(28)
    }

    pub fn eio() -> std::io::Error {
        std::io::Error::from_raw_os_error(5)
    }
}
