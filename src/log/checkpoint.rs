//! Small files in a partition directory that must be replaced atomically:
//! the recovery point and the clean-shutdown marker. Written to a temporary
//! name, fsynced, renamed, and the directory fsynced, so a crash leaves either
//! the old or the new content.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::segment::io_err;
use super::Result;

/// Segments at or above this offset may hold unflushed data after a crash.
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
/// Present only between a clean close and the next open.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = ".runnel_cleanshutdown";
const VERSION: &str = "0";

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Replaces `dir/name` with `contents` by a rename, without fsync: after a
/// crash of the machine the file may hold the old content or none (its
/// readers rebuild it then).
pub(crate) fn replace(dir: &Path, name: &str, contents: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    if let Err(e) = fs::write(&tmp, contents) {
        // A full disk: leave no partial file taking room.
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write", &tmp)(e));
    }
    fs::rename(&tmp, dir.join(name)).map_err(io_err("rename", &tmp))
}

pub(crate) fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dest = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    if let Err(e) = f.write_all(contents).and_then(|()| f.sync_all()) {
        // A full disk: leave no partial file taking room.
        drop(f);
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write", &tmp)(e));
    }
    drop(f);
    fs::rename(&tmp, &dest).map_err(io_err("rename", &tmp))?;
    sync_dir(dir)
}

/// The last high watermark this replica knew, so that a restarted leader
/// does not hide committed records until its followers report again.
pub(crate) const HIGH_WATERMARK_FILE: &str = "high-watermark-checkpoint";

pub(crate) fn write_high_watermark(dir: &Path, hw: i64) -> Result<()> {
    write_atomic(
        dir,
        HIGH_WATERMARK_FILE,
        format!("{VERSION}\n{hw}\n").as_bytes(),
    )
}

pub(crate) fn read_high_watermark(dir: &Path) -> Option<i64> {
    let text = fs::read_to_string(dir.join(HIGH_WATERMARK_FILE)).ok()?;
    let mut lines = text.lines();
    (lines.next()? == VERSION).then_some(())?;
    lines
        .next()?
        .trim()
        .parse()
        .ok()
        .filter(|hw: &i64| *hw >= 0)
}

pub(crate) fn write_recovery_point(dir: &Path, offset: i64) -> Result<()> {
    write_atomic(
        dir,
        RECOVERY_POINT_FILE,
        format!("{VERSION}\n{offset}\n").as_bytes(),
    )
}

/// The stored recovery point; `None` if absent or unreadable (then every
/// segment is recovered, which is always safe).
pub(crate) fn read_recovery_point(dir: &Path) -> Option<i64> {
    let path = dir.join(RECOVERY_POINT_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the recovery point; recovering every segment");
            return None;
        }
    };
    let mut lines = text.lines();
    match (lines.next(), lines.next().map(str::parse::<i64>)) {
        (Some(VERSION), Some(Ok(offset))) => Some(offset),
        _ => {
            tracing::warn!(path = %path.display(), "malformed recovery point; recovering every segment");
            None
        }
    }
}

/// The log start offset when it is above the first segment's base
/// (DeleteRecords, or a leader's start a follower took), so that records
/// deleted stay deleted across a restart.
pub(crate) const LOG_START_FILE: &str = "log-start-offset-checkpoint";

pub(crate) fn write_log_start(dir: &Path, offset: i64) -> Result<()> {
    write_atomic(
        dir,
        LOG_START_FILE,
        format!("{VERSION}\n{offset}\n").as_bytes(),
    )
}

/// The stored log start offset; `None` if absent or unreadable (then the
/// first segment's base is the start, which loses nothing).
pub(crate) fn read_log_start(dir: &Path) -> Option<i64> {
    let text = fs::read_to_string(dir.join(LOG_START_FILE)).ok()?;
    let mut lines = text.lines();
    (lines.next()? == VERSION).then_some(())?;
    lines.next()?.trim().parse().ok().filter(|o: &i64| *o >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_point_round_trips_and_tolerates_garbage() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(read_recovery_point(dir.path()), None);
        write_recovery_point(dir.path(), 1234)?;
        assert_eq!(read_recovery_point(dir.path()), Some(1234));
        write_recovery_point(dir.path(), 99)?;
        assert_eq!(read_recovery_point(dir.path()), Some(99));
        assert!(!dir
            .path()
            .join(format!("{RECOVERY_POINT_FILE}.tmp"))
            .exists());
        fs::write(dir.path().join(RECOVERY_POINT_FILE), "7\nabc")?;
        assert_eq!(read_recovery_point(dir.path()), None);
        Ok(())
    }
}
