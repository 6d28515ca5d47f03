//! End-to-end load harness: starts a real `runnel serve` on a fresh data
//! directory and drives it with librdkafka (the `rdkafka` crate).
//!
//! Prints: time from spawn to the first answered Metadata request (cold and
//! with data on restart), single-producer throughput with 1 KiB records at
//! acks=1 and acks=-1 on one node, and acks=-1 throughput on a three-node
//! loopback cluster with replication factor 3 and min.insync.replicas=2.
//!
//! `cargo bench --bench load` (env: RECORDS, default 200000;
//! CLUSTER_OVERRIDES, space-separated `key=value`s for the cluster's nodes).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

mod support;
use support::free_port;

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

#[derive(Clone, Default)]
struct Counter(Arc<Counts>);

impl ClientContext for Counter {}
impl ProducerContext for Counter {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

// The child is returned to the caller, which kills and waits for it.
#[allow(clippy::zombie_processes)]
fn spawn(dir: &std::path::Path, port: u16) -> (Child, Duration) {
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .create()
        .expect("client");
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["serve", "--override"])
        .arg(format!("listeners=PLAINTEXT://127.0.0.1:{port}"))
        .arg("--override")
        .arg(format!("log.dirs={}", dir.display()))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn runnel");
    loop {
        use rdkafka::consumer::Consumer;
        if consumer
            .fetch_metadata(None, Duration::from_millis(200))
            .is_ok()
        {
            return (child, start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("runnel did not start within 60 s");
        }
    }
}

fn produce(bootstrap: &str, topic: &str, acks: &str, records: u64) -> (f64, u64) {
    let counter = Counter::default();
    let producer: ThreadedProducer<Counter> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(counter.clone())
        .expect("producer");
    let value = vec![b'x'; 1024];
    let start = Instant::now();
    for i in 0..records {
        let key = i.to_string();
        let mut rec = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        if i % 50_000 == 0 && i > 0 {
            eprintln!("  {acks}: {i} sent");
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let secs = start.elapsed().as_secs_f64();
    let ok = counter.0.ok.load(Ordering::Relaxed);
    assert_eq!(
        counter.0.failed.load(Ordering::Relaxed),
        0,
        "deliveries failed"
    );
    (ok as f64 / secs, ok)
}

fn cluster_throughput(records: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = support::start_cluster(dir.path(), 3, &[]);
    support::create_topic(
        &cluster.bootstrap,
        "load-rf3",
        1,
        3,
        &[("min.insync.replicas", "2")],
    );
    let (rate, n) = produce(&cluster.bootstrap, "load-rf3", "all", records);
    println!(
        "3-node cluster, RF=3, min.insync.replicas=2, single producer, 1 KiB records, acks=all: {rate:.0} records/s, {:.1} MiB/s ({n} records)",
        rate * 1024.0 / (1024.0 * 1024.0)
    );
}

fn main() {
    let records: u64 = std::env::var("RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    if std::env::var_os("CLUSTER_ONLY").is_some() {
        cluster_throughput(records);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let (mut child, cold) = spawn(dir.path(), port);
    println!(
        "start to serving (fresh dir): {:.0} ms",
        cold.as_secs_f64() * 1000.0
    );

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin");
    for t in ["load-acks1", "load-acksall"] {
        let res = rt
            .block_on(admin.create_topics(
                &[NewTopic::new(t, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            ))
            .expect("create topics");
        assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    }
    for (topic, acks) in [("load-acks1", "1"), ("load-acksall", "all")] {
        let (rate, n) = produce(&bootstrap, topic, acks, records);
        println!(
            "single producer, 1 KiB records, acks={acks}: {rate:.0} records/s, {:.1} MiB/s ({n} records)",
            rate * 1024.0 / (1024.0 * 1024.0)
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, warm) = spawn(dir.path(), port);
    println!(
        "start to serving (restart after kill -9, {} MiB of data): {:.0} ms",
        2 * records / 1024,
        warm.as_secs_f64() * 1000.0
    );
    let _ = child.kill();
    let _ = child.wait();
    cluster_throughput(records);
}
