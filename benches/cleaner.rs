//! The log cleaner and retention, measured.
//!
//! 1. One compaction pass over a log of `CLEANER_MB` MiB (256) of 1 KiB
//!    updates to 10,000 keys, uncompressed and lz4, on the log alone: MB/s
//!    of log compacted (the closed segments the pass covered, over its
//!    wall time).
//! 2. acks=-1 send-to-ack latency at 500 records/s (RF=3, min.insync=2) on
//!    a 3-node cluster: idle; with background writes of 2 MiB/s to each of
//!    two other topics that neither compact nor delete; and with the same
//!    writes to a compacted topic and a topic with `retention.ms=5000`, so
//!    that the cleaner and retention run all along; then idle again (the
//!    first idle run can catch the new cluster still settling).
//!
//! `cargo bench --bench cleaner` (env CLEANER_MB, LATENCY_SECONDS (20)).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::records::Compression;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use runnel::log::cleaner::CleanOptions;
use runnel::log::{Log, LogConfig};
use runnel::protocol::build;

mod support;

use support::acks::{percentiles, run};

const KEYS: u64 = 10_000;
const PER_BATCH: u64 = 100;

/// A value that compresses about as well as JSON does (not to nothing).
fn value(seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let v: Vec<u8> = (0..1024)
        .map(|i| {
            if i % 4 == 0 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                b'a' + (x >> 59) as u8
            } else {
                b"{\"k\":"[i % 5]
            }
        })
        .collect();
    Bytes::from(v)
}

fn compaction_pass(mb: u64, codec: Compression) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 64 << 20,
        segment_ms: 1 << 40,
        index_interval_bytes: 4096,
        max_batch_bytes: 1 << 20,
        segment_index_bytes: 10 << 20,
    };
    let log = Log::open(dir.path(), config.clone()).expect("open");
    let batches = (mb << 20) / (PER_BATCH * 1024);
    let mut n = 0u64;
    for _ in 0..batches {
        let records: Vec<_> = (0..PER_BATCH)
            .map(|i| {
                n += 1;
                build::record(
                    i as i64,
                    1_000,
                    Some(Bytes::from(format!("key-{}", n % KEYS))),
                    Some(value(n)),
                )
            })
            .collect();
        let b = build::encode(&records, codec).expect("encode");
        log.append(&b, 0, 1_000).expect("append");
    }
    // Close the last segment, so that the whole log is cleanable.
    log.set_config(LogConfig {
        segment_bytes: 61,
        ..config
    })
    .expect("config");
    let tail = build::encode(
        &[build::record(0, 1_000, Some(Bytes::from("tail")), None)],
        codec,
    )
    .expect("encode");
    log.append(&tail, 0, 1_000).expect("append");
    log.flush().expect("flush");
    let before = log.size_bytes();
    let opts = CleanOptions {
        now_ms: 2_000,
        high_watermark: log.end_offset(),
        min_compaction_lag_ms: 0,
        delete_retention_ms: 1 << 40,
        map_bytes: 128 << 20,
    };
    let t = Instant::now();
    let stats = log.clean(0, &opts, &mut |_| {}).expect("clean");
    let el = t.elapsed().as_secs_f64();
    let after = log.size_bytes();
    println!(
        "| compaction pass, {mb} MiB, {codec:?} | {:.0} MB/s | {:.2} s | {:.1} MB -> {:.1} MB | {} keys, {} records removed |",
        before as f64 / 1e6 / el,
        el,
        before as f64 / 1e6,
        after as f64 / 1e6,
        stats.keys,
        stats.records_removed
    );
}

/// Writes 1 KiB keyed records at `per_topic` records/s to each of `topics`
/// until `stop`.
fn background(bootstrap: String, topics: Vec<String>, per_topic: u64, stop: Arc<AtomicBool>) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let start = Instant::now();
    let mut i = 0u64;
    let v = value(7);
    while !stop.load(Ordering::Relaxed) {
        let due = start + Duration::from_secs_f64(i as f64 / per_topic as f64);
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        let key = format!("key-{}", i % 1000);
        for t in &topics {
            let mut rec = BaseRecord::to(t).key(&key).payload(&v[..]);
            while let Err((_, r)) = p.send(rec) {
                rec = r;
                p.poll(Duration::from_millis(1));
            }
        }
        p.poll(Duration::ZERO);
        i += 1;
    }
    let _ = p.flush(Duration::from_secs(30));
}

fn main() {
    let mb: u64 = std::env::var("CLEANER_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let secs: u64 = std::env::var("LATENCY_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!("| pass | log compacted | time | size | |");
    println!("| --- | --- | --- | --- | --- |");
    compaction_pass(mb, Compression::None);
    compaction_pass(mb, Compression::Lz4);

    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = support::start_cluster(
        dir.path(),
        3,
        &[
            "log.retention.check.interval.ms=1000",
            "log.cleaner.backoff.ms=500",
        ],
    );
    let b = cluster.bootstrap.clone();
    support::create_topic(&b, "lat", 1, 3, &[("min.insync.replicas", "2")]);
    let small = [("segment.bytes", "1048576")];
    support::create_topic(&b, "plain-a", 1, 3, &[small[0], ("retention.ms", "-1")]);
    support::create_topic(&b, "plain-b", 1, 3, &[small[0], ("retention.ms", "-1")]);
    support::create_topic(
        &b,
        "churn",
        1,
        3,
        &[
            small[0],
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    );
    support::create_topic(&b, "aging", 1, 3, &[small[0], ("retention.ms", "5000")]);
    println!();
    println!("| acks=-1 RF=3 at 500/s | p50 | p99 | p99.9 | max |");
    println!("| --- | --- | --- | --- | --- |");
    let report = |what: &str, l: Vec<Duration>| {
        let (p50, p99, p999, max) = percentiles(&l);
        println!("| {what} | {p50:.2} ms | {p99:.2} ms | {p999:.2} ms | {max:.2} ms |");
    };
    report("idle", run(&b, "lat", 500, secs));
    for (what, topics) in [
        (
            "2 x 2 MiB/s to topics that keep everything",
            ["plain-a", "plain-b"],
        ),
        (
            "2 x 2 MiB/s, compacted + retention.ms=5000 (cleaner and retention busy)",
            ["churn", "aging"],
        ),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let bg = {
            let (b, stop) = (b.clone(), stop.clone());
            let topics = topics.iter().map(|t| t.to_string()).collect();
            std::thread::spawn(move || background(b, topics, 2048, stop))
        };
        // Let the background load reach the cleaner and retention first.
        std::thread::sleep(Duration::from_secs(8));
        report(what, run(&b, "lat", 500, secs));
        stop.store(true, Ordering::Relaxed);
        bg.join().expect("background producer");
    }
    report("idle again", run(&b, "lat", 500, secs));
}
