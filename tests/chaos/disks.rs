//! The nodes' log dirs on small file systems of their own, so that the
//! nemesis can fill one up (`disk_full`).
//!
//! Each node's log dir (`<node dir>/data`, `log.dirs`) is a tmpfs of
//! [`SIZE_MB`], mounted by the suite before the node is formatted (the
//! cluster's `prepare` hook; the suite runs as root). The controller's
//! Raft log and state machine (RocksDB, `__cluster_metadata-0` in the
//! metadata log dir, which defaults to the first log dir) stay on the real
//! disk: `<node dir>/data/__cluster_metadata-0` is a symlink to
//! `<node dir>/meta/__cluster_metadata-0`. A full disk is about the
//! partition logs; a controller that cannot write its Raft log is another
//! fault. (`metadata.log.dir` would say the same, but the harness formats
//! a node with its base settings only, and `runnel format` must create the
//! store where `serve` looks for it.)
//!
//! * `fill`: remounts the node's tmpfs with `size=` what it uses now, so
//!   that its next write that needs a new page fails with ENOSPC (a write
//!   into the last, partly used page of a file still succeeds, as on a
//!   real disk with a partly used block).
//! * `restore`: remounts it at its full size.
//!
//! A remount changes the file system itself (its superblock), so it reaches
//! the node although `ip netns exec` runs it in a mount namespace of its
//! own.
//!
//! fsync on tmpfs returns at once and a kill -9 loses nothing there: the
//! power-loss fault (`lost_unsynced`, `power.rs`) does not rely on the
//! kernel but on the sync ledger, in which the broker records each fsync
//! it made, and cuts the files to that; it works the same on tmpfs. What
//! the suite does not test any more is the real disk's own behaviour under
//! the broker's fsyncs (a kernel or file system that reorders or loses
//! writes): tests/replication.rs and the log's unit tests run on the real
//! disk.
//!
//! When the run ends the nodes are killed and the file systems unmounted;
//! with `CHAOS_KEEP_DATA=1` each node's log dir and metadata dir are first
//! copied to `CHAOS_OUT/node<id>-data` and `node<id>-meta`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use crate::step;

/// Each node's tmpfs: far more than a 30 minute run writes (600 small
/// records a second), so that only `fill` makes it full. tmpfs takes
/// memory only for what is written.
pub const SIZE_MB: u64 = 2048;

/// The controller's store, under the metadata log dir.
const METADATA_DIR: &str = "__cluster_metadata-0";

struct Mount {
    /// The tmpfs: the node's log dir.
    data: PathBuf,
    /// The real-disk directory holding the controller's store.
    meta: PathBuf,
    /// The size it is mounted with now, if `fill` shrank it.
    full: Option<u64>,
}

/// Every node's tmpfs; unmounted on drop.
#[derive(Default)]
pub struct Disks {
    mounts: Mutex<BTreeMap<i32, Mount>>,
}

impl Disks {
    pub fn new() -> Disks {
        Disks::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, Mount>> {
        self.mounts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cluster's `prepare` hook for node `id` in `dir`: mounts the
    /// tmpfs at `dir/data` and links the controller's store to the real
    /// disk. Panics if it cannot (not root, no tmpfs).
    pub fn prepare(&self, id: i32, dir: &Path) {
        let data = dir.join("data");
        let meta = dir.join("meta");
        std::fs::create_dir_all(&data).expect("create the log dir");
        std::fs::create_dir_all(meta.join(METADATA_DIR)).expect("create the metadata dir");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={SIZE_MB}m,mode=0755"),
                "runnel-chaos",
                path_str(&data),
            ],
        )
        .unwrap_or_else(|e| panic!("node {id}: {e}"));
        std::os::unix::fs::symlink(meta.join(METADATA_DIR), data.join(METADATA_DIR))
            .unwrap_or_else(|e| panic!("node {id}: link the metadata dir: {e}"));
        step!(
            "node {id}: log dir {} on a {SIZE_MB} MiB tmpfs, metadata in {}",
            data.display(),
            meta.display()
        );
        self.lock().insert(
            id,
            Mount {
                data,
                meta,
                full: None,
            },
        );
    }

    /// Makes node `id`'s log dir full: remounts it with the size it uses.
    /// Returns that size in bytes.
    pub fn fill(&self, id: i32) -> io::Result<u64> {
        let mut mounts = self.lock();
        let mount = mounts
            .get_mut(&id)
            .unwrap_or_else(|| panic!("node {id} has no tmpfs"));
        // The node writes meanwhile: a size below what it uses by then is
        // refused (EINVAL), so measure again and retry.
        let mut last = None;
        for _ in 0..20 {
            let used = used_bytes(&mount.data)?;
            match run(
                "mount",
                &["-o", &format!("remount,size={used}"), path_str(&mount.data)],
            ) {
                Ok(()) => {
                    mount.full = Some(used);
                    return Ok(used);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(io::Error::other(last.unwrap_or_default()))
    }

    /// Gives node `id`'s log dir its full size back (a no-op if it is not
    /// full).
    pub fn restore(&self, id: i32) -> io::Result<()> {
        let mut mounts = self.lock();
        let Some(mount) = mounts.get_mut(&id) else {
            return Ok(());
        };
        if mount.full.is_none() {
            return Ok(());
        }
        run(
            "mount",
            &[
                "-o",
                &format!("remount,size={SIZE_MB}m"),
                path_str(&mount.data),
            ],
        )
        .map_err(io::Error::other)?;
        mount.full = None;
        Ok(())
    }

    /// Restores every full disk; the nodes whose disk was full.
    pub fn restore_all(&self) -> Vec<i32> {
        let full: Vec<i32> = self
            .lock()
            .iter()
            .filter(|(_, m)| m.full.is_some())
            .map(|(&id, _)| id)
            .collect();
        for &id in &full {
            if let Err(e) = self.restore(id) {
                step!("node {id}: could not restore its disk: {e}");
            }
        }
        full
    }

    /// Copies each node's log dir and metadata dir to `out` (if given),
    /// then unmounts the file systems. The nodes must be down.
    pub fn release(&self, keep_in: Option<&Path>) {
        let mut mounts = self.lock();
        for (id, mount) in mounts.iter() {
            if let Some(out) = keep_in {
                for (from, name) in [(&mount.data, "data"), (&mount.meta, "meta")] {
                    let to = out.join(format!("node{id}-{name}"));
                    let _ = std::fs::create_dir_all(&to);
                    // -L: the metadata link in the log dir is copied as
                    // what it points to.
                    let from = format!("{}/.", from.display());
                    match run("cp", &["-a", "-L", &from, path_str(&to)]) {
                        Ok(()) => step!("node {id}'s {name} dir kept in {}", to.display()),
                        Err(e) => step!("node {id}'s {name} dir not kept: {e}"),
                    }
                }
            }
            if let Err(e) = run("umount", &[path_str(&mount.data)]) {
                step!("node {id}: {e}; unmounting lazily");
                let _ = run("umount", &["-l", path_str(&mount.data)]);
            }
        }
        mounts.clear();
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        // Whatever `release` did not get to (a panic): lazily, since a node
        // may still hold files open.
        for mount in self.lock().values() {
            let _ = run("umount", &["-l", path_str(&mount.data)]);
        }
    }
}

/// Bytes in use on the file system holding `dir`.
fn used_bytes(dir: &Path) -> io::Result<u64> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a zeroed statvfs is a valid out-parameter, `c` a valid
    // NUL-terminated path for the duration of the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.f_blocks - st.f_bfree) * st.f_frsize)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Runs `cmd args`; the failure (command line, stderr) as the error.
fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("`{cmd} {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{cmd} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
