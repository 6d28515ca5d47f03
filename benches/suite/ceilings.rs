//! The machine's ceilings, measured with no broker running: sequential
//! writes with and without fdatasync, fdatasync latency of small appends,
//! and one loopback TCP stream.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{percentile, MIB};
use crate::{Ctx, Figure, Workload};

pub const DISK: &str = "ceiling/disk-write";
pub const DISK_SYNC: &str = "1 MiB writes, fdatasync each";
pub const LOOPBACK: &str = "ceiling/loopback-tcp";
pub const LOOPBACK_FIG: &str = "1 stream";

pub fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            name: DISK,
            nodes: 0,
            run: Box::new(disk_write),
        },
        Workload {
            name: "ceiling/fdatasync-1k",
            nodes: 0,
            run: Box::new(fdatasync_latency),
        },
        Workload {
            name: LOOPBACK,
            nodes: 0,
            run: Box::new(loopback),
        },
    ]
}

fn io(what: &'static str, p: &Path) -> impl Fn(std::io::Error) -> String {
    let p = p.display().to_string();
    move |e| format!("{what} {p}: {e}")
}

/// Writes `mib` MiB in 1 MiB chunks; with `sync`, fdatasync after each.
/// MiB/s of the timed part; the file is synced (untimed) and removed after,
/// so that its write-back does not slow the next measurement.
fn write_file(path: &Path, mib: u64, sync: bool) -> Result<f64, String> {
    let mut f = File::create(path).map_err(io("create", path))?;
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i * 7 + 13) as u8).collect();
    let start = Instant::now();
    for _ in 0..mib {
        f.write_all(&chunk).map_err(io("write", path))?;
        if sync {
            f.sync_data().map_err(io("fdatasync", path))?;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    f.sync_all().map_err(io("fsync", path))?;
    drop(f);
    std::fs::remove_file(path).map_err(io("remove", path))?;
    Ok(mib as f64 / secs)
}

fn disk_write(ctx: &Ctx) -> Result<Vec<Figure>, String> {
    let mib = ctx.count(1024.0, 16);
    let path = ctx.dir.join("ceiling.dat");
    let plain = write_file(&path, mib, false)?;
    let synced = write_file(&path, mib, true)?;
    Ok(vec![
        Figure::new("1 MiB writes, no sync", plain, "MiB/s"),
        Figure::new(DISK_SYNC, synced, "MiB/s"),
    ])
}

/// 1 KiB appends, each followed by an fdatasync, 100 a second.
fn fdatasync_latency(ctx: &Ctx) -> Result<Vec<Figure>, String> {
    let n = ctx.count(1000.0, 20);
    let path = ctx.dir.join("appends.dat");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io("open", &path))?;
    let rec = [b'r'; 1024];
    let mut lat = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 0..n {
        let due = start + Duration::from_millis(10 * i);
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        let t = Instant::now();
        f.write_all(&rec).map_err(io("write", &path))?;
        f.sync_data().map_err(io("fdatasync", &path))?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    lat.sort_by(f64::total_cmp);
    Ok(vec![
        Figure::new("p50", percentile(&lat, 0.5).unwrap_or(f64::NAN), "ms"),
        Figure::new("p99", percentile(&lat, 0.99).unwrap_or(f64::NAN), "ms"),
    ])
}

/// One sender thread writing 1 MiB buffers for a while, one receiver
/// thread reading; MiB/s as the receiver saw it.
fn loopback(ctx: &Ctx) -> Result<Vec<Figure>, String> {
    let secs = (5.0 * ctx.scale).max(0.25);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let receiver = std::thread::spawn(move || -> Result<(u64, f64), String> {
        let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let mut first: Option<Instant> = None;
        loop {
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += n as u64;
        }
        Ok((total, first.map_or(0.0, |t| t.elapsed().as_secs_f64())))
    });
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let buf = vec![b'x'; 1 << 20];
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        s.write_all(&buf).map_err(|e| e.to_string())?;
    }
    drop(s);
    let (bytes, secs) = receiver
        .join()
        .map_err(|_| "receiver panicked".to_string())??;
    Ok(vec![Figure::new(
        LOOPBACK_FIG,
        bytes as f64 / MIB / secs.max(1e-6),
        "MiB/s",
    )])
}
