//! Offset-commit throughput on a 3-node loopback cluster: 10 groups of 5
//! librdkafka consumers (50 in all) subscribed to one 10-partition topic.
//! Once every group is stable, each member commits its assigned
//! partitions for `COMMIT_SECONDS` (default 10), in rounds of
//! `COMMIT_WINDOW` (default 16) asynchronous commits followed by one
//! synchronous commit, which returns after the asynchronous ones before it
//! (a coordinator answers a connection's requests in order): so each member
//! has up to a window of commits in flight, as a consumer committing
//! asynchronously after every poll does. `COMMIT_WINDOW=0` makes every
//! commit synchronous. Prints the commits per second across all members
//! that were acknowledged, and how many failed. (Rounds, because
//! rust-rdkafka hands the outcome of an asynchronous manual commit to no
//! callback.)
//!
//! `cargo bench --bench commits` (env COMMIT_GROUPS, COMMIT_MEMBERS,
//! COMMIT_SECONDS, COMMIT_WINDOW).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

mod support;

const TOPIC: &str = "commits";
const PARTITIONS: i32 = 10;
/// Longer than two heartbeat intervals at librdkafka's default (3 s).
const SETTLE: Duration = Duration::from_secs(7);

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Acknowledged and failed commits.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

fn consumer(bootstrap: &str, group: usize) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("commit-group-{group}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    c.subscribe(&[TOPIC]).expect("subscribe");
    c
}

/// Polls until the member has an assignment (or a minute passes).
fn wait_assigned(c: &BaseConsumer) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = c.poll(Duration::from_millis(50));
        let a = c.assignment().expect("assignment");
        if a.count() > 0 || Instant::now() > deadline {
            return;
        }
    }
}

/// One member: joins, waits for every member to be assigned and the
/// groups to settle, commits until `stop`.
fn member(
    bootstrap: String,
    group: usize,
    counts: Arc<Counts>,
    ready: Arc<Barrier>,
    stop: Arc<AtomicBool>,
    window: u64,
) {
    let c = consumer(&bootstrap, group);
    wait_assigned(&c);
    ready.wait();
    // The last members to join started rebalances: let them finish (each
    // member learns of one on its next heartbeat), then read the
    // assignment the group settled on.
    let settle = Instant::now() + SETTLE;
    while Instant::now() < settle {
        let _ = c.poll(Duration::from_millis(50));
    }
    let assigned = c.assignment().expect("assignment");
    ready.wait();
    let (mut ok, mut failed) = (0, 0);
    let mut offset = 0i64;
    let mut next = || {
        offset += 1;
        let mut tpl = TopicPartitionList::new();
        for e in assigned.elements() {
            tpl.add_partition_offset(e.topic(), e.partition(), Offset::Offset(offset))
                .expect("tpl");
        }
        tpl
    };
    while !stop.load(Ordering::Acquire) && assigned.count() > 0 {
        let mut queued = 0;
        for _ in 0..window {
            if c.commit(&next(), CommitMode::Async).is_ok() {
                queued += 1;
            }
        }
        // Acknowledged, with all before it, or the round is counted failed.
        match c.commit(&next(), CommitMode::Sync) {
            Ok(()) => ok += queued + 1,
            Err(_) => failed += queued + 1,
        }
        let _ = c.poll(Duration::ZERO);
    }
    counts.ok.fetch_add(ok, Ordering::Relaxed);
    counts.failed.fetch_add(failed, Ordering::Relaxed);
    // Stay in the group until every member has counted, so that no
    // rebalance starts while others are still committing.
    ready.wait();
}

fn main() {
    let groups = env_or("COMMIT_GROUPS", 10) as usize;
    let members = env_or("COMMIT_MEMBERS", 5) as usize;
    let seconds = env_or("COMMIT_SECONDS", 10);
    let window = env_or("COMMIT_WINDOW", 16);
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = support::start_cluster(dir.path(), 3, &[]);
    support::create_topic(&cluster.bootstrap, TOPIC, PARTITIONS, 3, &[]);

    let n = groups * members;
    let counts = Arc::new(Counts::default());
    let ready = Arc::new(Barrier::new(n + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (b, c, r, s) = (
                cluster.bootstrap.clone(),
                counts.clone(),
                ready.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || member(b, i % groups, c, r, s, window))
        })
        .collect();
    eprintln!("waiting for {n} members in {groups} groups to be assigned");
    ready.wait();
    ready.wait();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Release);
    let elapsed = start.elapsed().as_secs_f64();
    ready.wait();
    for t in threads {
        let _ = t.join();
    }
    let ok = counts.ok.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    println!(
        "offset commits, {groups} groups x {members} members on 3 nodes, window {window}: \
         {:.0}/s acknowledged ({ok} in {elapsed:.1} s), {failed} failed",
        ok as f64 / elapsed
    );
}
