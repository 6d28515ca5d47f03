//! Failover time of a replicated partition, on a three-node loopback
//! cluster (replication factor 3, `min.insync.replicas=2`, 3 s broker
//! sessions): an acks=all producer writes continuously, the partition's
//! leader is killed with `kill -9`, and the figure is the time from the
//! kill to the first acknowledgement of a write past everything
//! acknowledged before it; five runs (the old leader is restarted and
//! rejoins the ISR in between), then the median. At the end every
//! acknowledged write is checked at its offset.
//!
//! `cargo bench --bench failover` (env RUNS, default 5).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::partition::{consume_all, high_watermark, ids, wait_full_isr};
use common::producer::{BgProducer, Spec};
use common::topics::create_replicated;

const REPLICATION: &[&str] = &[
    "replica.lag.time.max.ms=3000",
    "default.replication.factor=3",
    "min.insync.replicas=2",
];
const TIMEOUT: Duration = Duration::from_secs(30);
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let topic = "failover";
    let mut c = Cluster::start_with(3, REPLICATION);
    create_replicated(&c, topic, 1);
    let producer = BgProducer::start(
        &c.bootstrap_all(),
        Spec {
            settings: vec![
                ("retry.backoff.ms", "100"),
                ("queue.buffering.max.messages", "20000"),
            ],
            ..Spec::continuous(topic, "v")
        },
    );
    let mut times = Vec::new();
    for run in 1..=runs {
        producer.wait_acks_since(
            Instant::now(),
            100,
            TIMEOUT,
            &format!("run {run}: before the kill"),
        );
        let st = wait_full_isr(&c, topic, 0, REJOIN_TIMEOUT);
        let acked_before = producer.max_acked_offset();
        c.kill9(st.leader);
        let killed = Instant::now();
        let deadline = killed + Duration::from_secs(60);
        let ack = loop {
            if let Some(a) = producer.first_ack_after(killed, acked_before) {
                break a;
            }
            assert!(
                Instant::now() < deadline,
                "run {run}: no acknowledgement within 60 s of the kill"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = ack.at - killed;
        step!(
            "run {run}: kill -9 of leader {} -> first acknowledged write past offset {acked_before} \
             ({} at {}): {:.0} ms",
            st.leader,
            ack.key,
            ack.offset,
            took.as_secs_f64() * 1000.0
        );
        times.push(took);
        c.restart(st.leader);
    }
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "kill -9 of the partition leader -> first acks=all write acknowledged past what was \
         acknowledged before, {runs} runs: {ms:.0?} ms; median {:.0} ms",
        ms[ms.len() / 2]
    );

    // Nothing acknowledged was lost.
    let report = producer.finish();
    wait_full_isr(&c, topic, 0, REJOIN_TIMEOUT);
    let (_, hw) = high_watermark(&c, &ids(&c), topic, 0);
    let log: HashMap<i64, String> = consume_all(&c.bootstrap_all(), topic, 0, hw)
        .into_iter()
        .collect();
    let lost: Vec<_> = report
        .acked
        .iter()
        .filter(|a| log.get(&a.offset) != Some(&a.key))
        .take(5)
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes not at their offset below HW {hw}: {lost:?}"
    );
    println!(
        "{} acknowledged writes read back at their offsets ({} failed)",
        report.acked.len(),
        report.failed.len()
    );
}
