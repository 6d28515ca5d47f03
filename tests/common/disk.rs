//! Reading a partition's log files as they are on disk, from the v2
//! batch headers: what replicas hold, byte for byte, whatever the broker
//! says about them.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One record batch in a partition's log files, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskBatch {
    pub base: i64,
    pub last: i64,
    pub crc: u32,
    pub leader_epoch: i32,
    /// batchLength: the bytes after that field.
    pub len: i32,
}

/// The batches in every `.log` file of a partition directory, in offset
/// order (file names are 20-digit base offsets), read from the v2 batch
/// headers. Each file is read up to its first incomplete or invalid batch
/// (a tail still being written, or preallocated zeroes).
pub fn batches_on_disk(dir: &Path) -> Vec<DiskBatch> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect(),
        Err(_) => return Vec::new(),
    };
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let Ok(f) = File::open(&path) else { continue };
        let Ok(len) = f.metadata().map(|m| m.len()) else {
            continue;
        };
        let mut pos = 0u64;
        // baseOffset 8, batchLength 4, partitionLeaderEpoch 4, magic 1,
        // crc 4, attributes 2, lastOffsetDelta 4.
        let mut h = [0u8; 27];
        while pos + 61 <= len {
            if f.read_exact_at(&mut h, pos).is_err() {
                break;
            }
            let base = i64::from_be_bytes(h[0..8].try_into().expect("8 bytes"));
            let blen = i32::from_be_bytes(h[8..12].try_into().expect("4 bytes"));
            let leader_epoch = i32::from_be_bytes(h[12..16].try_into().expect("4 bytes"));
            let magic = h[16] as i8;
            let crc = u32::from_be_bytes(h[17..21].try_into().expect("4 bytes"));
            let delta = i32::from_be_bytes(h[23..27].try_into().expect("4 bytes"));
            if magic != 2 || blen < 49 || pos + 12 + blen as u64 > len || delta < 0 {
                break;
            }
            out.push(DiskBatch {
                base,
                last: base + i64::from(delta),
                crc,
                leader_epoch,
                len: blen,
            });
            pos += 12 + blen as u64;
        }
    }
    out
}
