//! Micro benchmark of `Log::append`: 1 KiB records in batches of 16, with and
//! without an fsync per batch, plus group commit from several threads.
//! Run with `cargo bench --bench log_append`; set RUNNEL_BENCH_DIR to choose
//! the disk (default: the system temp dir). Each case runs about a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use kafka_protocol::records::Compression;
use runnel::log::{Log, LogConfig};
use runnel::protocol::build;

const RECORDS_PER_BATCH: usize = 16;
const RECORD_BYTES: usize = 1024;
const RUN_FOR: Duration = Duration::from_secs(1);

fn batch() -> Result<Vec<u8>> {
    let records: Vec<_> = (0..RECORDS_PER_BATCH as i64)
        .map(|i| {
            let value = Some(Bytes::from(vec![b'x'; RECORD_BYTES]));
            build::record(i, 1_700_000_000_000 + i, None, value)
        })
        .collect();
    Ok(build::encode(&records, Compression::None)?.to_vec())
}

/// Appends from `threads` threads for about `RUN_FOR`; returns batches written.
fn run(
    log: &Arc<Log>,
    batch: &Arc<Vec<u8>>,
    threads: usize,
    flush: bool,
) -> Result<(u64, Duration)> {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (log, batch) = (log.clone(), batch.clone());
            std::thread::spawn(move || -> Result<u64> {
                let mut n = 0u64;
                while start.elapsed() < RUN_FOR {
                    log.append(&batch, 0, 0)?;
                    if flush {
                        log.flush()?;
                    }
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
    }
    log.flush()?;
    Ok((total, start.elapsed()))
}

fn main() -> Result<()> {
    let base = std::env::var_os("RUNNEL_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let batch = Arc::new(batch()?);
    println!(
        "log_append: {RECORDS_PER_BATCH} x {RECORD_BYTES} B records per batch ({} B), dir {}",
        batch.len(),
        base.display()
    );
    for (name, threads, flush) in [
        ("no flush, 1 thread", 1, false),
        ("flush per batch, 1 thread", 1, true),
        ("flush per batch, 4 threads (group commit)", 4, true),
    ] {
        let dir = tempfile::tempdir_in(&base)?;
        let log = Arc::new(Log::open(dir.path(), LogConfig::default())?);
        let (batches, took) = run(&log, &batch, threads, flush)?;
        let secs = took.as_secs_f64();
        println!(
            "{name:<44} {:>9.1} MB/s {:>11.0} records/s {:>9.0} batches/s",
            batches as f64 * batch.len() as f64 / secs / 1e6,
            batches as f64 * RECORDS_PER_BATCH as f64 / secs,
            batches as f64 / secs,
        );
        log.close()?;
    }
    Ok(())
}
