//! Are the failover timings safe? A three-node cluster with the default
//! settings (Raft election timeout 300 ms, heartbeats every 75 ms, broker
//! sessions 9 s with a 0.25 s grace) runs for a while idle and for a while
//! under an acks=all load that keeps this machine's cores busy, and nobody
//! is killed: every controller election after the first and every broker
//! fencing is spurious. Prints a progress line every minute and a table at
//! the end.
//!
//! `cargo bench --bench stability` (env `STABILITY_MINUTES`, default 30,
//! per phase; `STABILITY_PHASES`, default `idle,loaded`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::producer::{BgProducer, Spec};
use common::topics::create_replicated;

const DEFAULTS: &[&str] = &[
    // The harness's short test sessions, undone.
    "broker.heartbeat.interval.ms=2000",
    "broker.session.timeout.ms=9000",
    "default.replication.factor=3",
    "min.insync.replicas=2",
];

/// Elections (distinct terms won) and fencings in every node's log so far.
/// A restarted voter logs its old term's leadership again before it hears
/// the new one, so terms, not lines, are counted.
fn count(c: &Cluster) -> (usize, usize) {
    let mut terms = std::collections::BTreeSet::new();
    let mut fencings = 0;
    for n in &c.nodes {
        for line in n.log().lines() {
            if line.contains("controller elected") && line.contains("active=true") {
                if let Some(term) = line.split("term=").nth(1).and_then(|t| {
                    t.split_whitespace()
                        .next()
                        .and_then(|v| v.parse::<u64>().ok())
                }) {
                    terms.insert(term);
                }
            }
            if line.contains("broker fenced") {
                fencings += 1;
            }
        }
    }
    (terms.len(), fencings)
}

fn main() {
    let minutes: u64 = std::env::var("STABILITY_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let phases = std::env::var("STABILITY_PHASES").unwrap_or_else(|_| "idle,loaded".into());
    let c = Cluster::start_with(3, DEFAULTS);
    let topic = "stability";
    create_replicated(&c, topic, 6);
    // The first election is the cluster forming.
    std::thread::sleep(Duration::from_secs(5));
    let (base_elections, base_fencings) = count(&c);
    let mut rows = Vec::new();
    for phase in phases.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let producers: Vec<BgProducer> = match phase {
            "idle" => Vec::new(),
            "loaded" => (0..2)
                .map(|i| {
                    BgProducer::start(
                        &c.bootstrap_all(),
                        Spec {
                            partitions: (0..6).collect(),
                            payload_len: 512,
                            pause: Duration::from_micros(500),
                            idempotence: true,
                            ..Spec::continuous(topic, &format!("p{i}"))
                        },
                    )
                })
                .collect(),
            other => panic!("unknown phase {other:?} (idle, loaded)"),
        };
        let (e0, f0) = count(&c);
        let start = Instant::now();
        for minute in 1..=minutes {
            std::thread::sleep(Duration::from_secs(60));
            let (e, f) = count(&c);
            let acked: usize = producers.iter().map(BgProducer::acked).sum();
            step!(
                "{phase}, minute {minute}/{minutes}: {} elections, {} fencings so far in this \
                 phase; {acked} writes acknowledged",
                e - e0,
                f - f0
            );
        }
        let (e, f) = count(&c);
        let acked: usize = producers.iter().map(BgProducer::acked).sum();
        let failed: usize = producers.iter().map(BgProducer::failed).sum();
        for p in producers {
            p.finish();
        }
        rows.push((
            phase.to_string(),
            start.elapsed(),
            e - e0,
            f - f0,
            acked,
            failed,
        ));
    }
    let (e, f) = count(&c);
    println!(
        "\n| phase | duration | spurious elections | spurious fencings | writes acked | failed |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (phase, took, e, f, acked, failed) in &rows {
        println!(
            "| {phase} | {:.0} min | {e} | {f} | {acked} | {failed} |",
            took.as_secs_f64() / 60.0
        );
    }
    println!(
        "\nin all (after the first election): {} elections, {} fencings",
        e - base_elections,
        f - base_fencings
    );
}
