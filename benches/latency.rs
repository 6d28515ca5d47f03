//! Send-to-acknowledgement latency at fixed rates, the way a web request
//! that publishes one message with acks=all sees it: librdkafka with
//! `linger.ms=0`, 1 KiB records, one partition, sends on a fixed schedule
//! (latency counts from when a send was due, so a stall is not hidden by
//! the sender slowing down: no coordinated omission).
//!
//! `cargo bench --bench latency` (env: LATENCY_SECONDS per rate, default 10; RATES,
//! comma-separated records/s, default 100,500,2000; CLUSTER_OVERRIDES).
//! Prints p50, p99, p99.9 and max for RF=3 with min.insync.replicas=2 and
//! for RF=1, on a three-node loopback cluster.

mod support;

use support::acks::{percentiles, run};

fn main() {
    let secs: u64 = std::env::var("LATENCY_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rates: Vec<u64> = std::env::var("RATES")
        .unwrap_or_else(|_| "100,500,2000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = support::start_cluster(dir.path(), 3, &[]);
    support::create_topic(
        &cluster.bootstrap,
        "lat-rf3",
        1,
        3,
        &[("min.insync.replicas", "2")],
    );
    support::create_topic(&cluster.bootstrap, "lat-rf1", 1, 1, &[]);
    println!("| setup | rate | p50 | p99 | p99.9 | max |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (topic, setup) in [
        ("lat-rf3", "RF=3, acks=all, min.insync=2"),
        ("lat-rf1", "RF=1, acks=all"),
    ] {
        for &rate in &rates {
            let l = run(&cluster.bootstrap, topic, rate, secs);
            let (p50, p99, p999, max) = percentiles(&l);
            println!(
                "| {setup} | {rate}/s | {p50:.2} ms | {p99:.2} ms | {p999:.2} ms | {max:.2} ms |"
            );
        }
    }
}
