//! Faults on a killed node's files, applied while it is down: what a power
//! loss or a torn write leaves on disk.
//!
//! * `cut_to_synced`: every partition segment is cut back to the length the
//!   broker last fsynced, from the sync ledger it keeps when run with
//!   `RUNNEL_TEST_SYNC_LEDGER` (src/log/mod.rs, `sync_ledger`); a segment
//!   never synced goes, with its indexes, as a file whose creation was never
//!   made durable would. The ledger records segment fsyncs of appends only:
//!   what it says is a lower bound of what a real power loss would keep only
//!   for appends, so compacted topics are out of its reach (the fault suite
//!   has none). The metadata store (RocksDB, which syncs its own writes) is
//!   left alone.
//! * `tear_last_write`: appends half a batch to the newest segment of one
//!   partition, as a write cut short by a crash; the broker must cut it off
//!   when it recovers.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The sync ledger every node of the run appends to: the nodes inherit
/// `RUNNEL_TEST_SYNC_LEDGER` from the suite, which sets it before starting
/// them (`main.rs`), and each line names a segment by its full path.
pub fn ledger() -> PathBuf {
    std::env::var_os("RUNNEL_TEST_SYNC_LEDGER")
        .map(PathBuf::from)
        .expect("RUNNEL_TEST_SYNC_LEDGER is set by the suite")
}

/// What `cut_to_synced` did.
#[derive(Debug, Default)]
pub struct Cut {
    /// Segments cut shorter, and the bytes they lost.
    pub truncated: usize,
    pub bytes: u64,
    /// Segments removed as never synced.
    pub removed: usize,
}

/// The last synced length of every segment the ledger names.
fn read_ledger(ledger: &Path) -> io::Result<HashMap<PathBuf, u64>> {
    let text = match std::fs::read_to_string(ledger) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut synced = HashMap::new();
    for line in text.lines() {
        // The last line about a segment is the latest fsync of it.
        if let Some((path, len)) = line.rsplit_once('\t') {
            if let Ok(len) = len.parse::<u64>() {
                synced.insert(PathBuf::from(path), len);
            }
        }
    }
    Ok(synced)
}

/// The partition segments (`<dir>/<topic>-<p>/<base>.log`) under
/// `log_dir`, not the metadata log.
fn segments(log_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for partition in std::fs::read_dir(log_dir)? {
        let partition = partition?.path();
        let name = partition.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !partition.is_dir() || name.starts_with("__cluster_metadata") {
            continue;
        }
        for f in std::fs::read_dir(&partition)? {
            let f = f?.path();
            if f.extension().and_then(|e| e.to_str()) == Some("log") {
                out.push(f);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Cuts every segment under `log_dir` back to what `ledger` says was synced
/// (see the module doc). The node must be down.
pub fn cut_to_synced(log_dir: &Path, ledger: &Path) -> io::Result<Cut> {
    let synced = read_ledger(ledger)?;
    let mut cut = Cut::default();
    for seg in segments(log_dir)? {
        let len = std::fs::metadata(&seg)?.len();
        match synced.get(&seg) {
            Some(&kept) if kept < len => {
                OpenOptions::new().write(true).open(&seg)?.set_len(kept)?;
                cut.truncated += 1;
                cut.bytes += len - kept;
            }
            Some(_) => {}
            None => {
                for ext in ["log", "index", "timeindex"] {
                    let _ = std::fs::remove_file(seg.with_extension(ext));
                }
                cut.removed += 1;
                cut.bytes += len;
            }
        }
    }
    Ok(cut)
}

/// Appends a torn batch to the newest segment of the `pick`-th partition
/// (modulo their number) under `log_dir`: a batch header announcing more
/// bytes than follow. Returns the segment, or None if there is none.
pub fn tear_last_write(log_dir: &Path, pick: usize) -> io::Result<Option<PathBuf>> {
    let mut by_partition: HashMap<PathBuf, PathBuf> = HashMap::new();
    for seg in segments(log_dir)? {
        let Some(dir) = seg.parent().map(Path::to_path_buf) else {
            continue;
        };
        // Names are zero-padded base offsets: the greatest is the newest.
        let newer = by_partition.get(&dir).is_none_or(|cur| seg > *cur);
        if newer {
            by_partition.insert(dir, seg);
        }
    }
    let mut newest: Vec<PathBuf> = by_partition.into_values().collect();
    newest.sort();
    if newest.is_empty() {
        return Ok(None);
    }
    let seg = newest[pick % newest.len()].clone();
    // base offset 8 bytes, batch length 4 bytes (1 MiB: far past the end),
    // partition leader epoch, magic 2, then a few bytes of a CRC.
    let mut torn = Vec::new();
    torn.extend_from_slice(&i64::MAX.to_be_bytes());
    torn.extend_from_slice(&(1i32 << 20).to_be_bytes());
    torn.extend_from_slice(&0i32.to_be_bytes());
    torn.push(2);
    torn.extend_from_slice(&[0xde, 0xad]);
    OpenOptions::new()
        .append(true)
        .open(&seg)?
        .write_all(&torn)?;
    Ok(Some(seg))
}
