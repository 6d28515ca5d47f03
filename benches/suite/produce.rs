//! Max produce throughput: `runnel producer-perf-test --throughput -1`, a
//! base case and variations of one dimension each, with the brokers' CPU
//! seconds per GB produced.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::util::{self, percentile, Running, MIB};
use crate::{support, Ctx, Figure, Limit, Workload};

/// One produce setup.
struct Variant {
    name: &'static str,
    nodes: usize,
    partitions: i32,
    rf: i32,
    acks: &'static str,
    record_size: u64,
    /// Records at scale 1.
    records: f64,
    producers: usize,
    keyed: bool,
}

const BASE: Variant = Variant {
    name: "produce/base",
    nodes: 3,
    partitions: 6,
    rf: 3,
    acks: "all",
    record_size: 1024,
    records: 1_000_000.0,
    producers: 1,
    keyed: false,
};

const VARIANTS: &[Variant] = &[
    BASE,
    Variant {
        name: "produce/1-node-rf1",
        nodes: 1,
        rf: 1,
        ..BASE
    },
    Variant {
        name: "produce/rf1",
        rf: 1,
        ..BASE
    },
    Variant {
        name: "produce/acks1",
        acks: "1",
        ..BASE
    },
    Variant {
        name: "produce/100B",
        record_size: 100,
        records: 5_000_000.0,
        ..BASE
    },
    Variant {
        name: "produce/100-partitions",
        partitions: 100,
        ..BASE
    },
    Variant {
        name: "produce/8-producers",
        producers: 8,
        ..BASE
    },
    Variant {
        name: "produce/keyed",
        keyed: true,
        ..BASE
    },
];

pub fn workloads() -> Vec<Workload> {
    VARIANTS
        .iter()
        .map(|v| Workload {
            name: v.name,
            nodes: v.nodes,
            run: Box::new(move |ctx: &Ctx| run(ctx, v)),
        })
        .collect()
}

/// The producer properties every variant shares (idempotence needs
/// acks=all, so acks=1 runs without it).
pub fn producer_props(bootstrap: &str, acks: &str) -> Vec<String> {
    vec![
        format!("bootstrap.servers={bootstrap}"),
        format!("acks={acks}"),
        format!("enable.idempotence={}", acks == "all" || acks == "-1"),
        "linger.ms=5".to_string(),
    ]
}

/// Kafka's producer-perf-test summary line.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub records: u64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50: f64,
    pub p99: f64,
}

/// The summary line of a producer-perf-test's output.
pub fn parse_summary(out: &str) -> Result<Summary, String> {
    let re = regex::Regex::new(
        r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), [\d.]+ ms avg latency, [\d.]+ ms max latency, (\d+) ms 50th, \d+ ms 95th, (\d+) ms 99th, \d+ ms 99.9th\.",
    )
    .expect("regex");
    let line = out
        .lines()
        .find_map(|l| re.captures(l))
        .ok_or_else(|| format!("no summary line in: {}", util::tail(out, 3)))?;
    let f = |i: usize| line[i].parse::<f64>().map_err(|e| e.to_string());
    Ok(Summary {
        records: line[1]
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())?,
        records_per_sec: f(2)?,
        mb_per_sec: f(3)?,
        p50: f(4)?,
        p99: f(5)?,
    })
}

/// Starts `runnel producer-perf-test`; `throughput` in records/s, -1 for
/// as fast as it goes.
pub fn spawn_perf(
    topic: &str,
    records: u64,
    size: u64,
    throughput: f64,
    props: &[String],
) -> Result<Running, String> {
    Running::spawn(
        "producer-perf-test",
        Command::new(env!("CARGO_BIN_EXE_runnel"))
            .arg("producer-perf-test")
            .args(["--topic", topic])
            .args(["--num-records", &records.to_string()])
            .args(["--record-size", &size.to_string()])
            .args(["--throughput", &throughput.to_string()])
            .arg("--producer-props")
            .args(props),
    )
}

/// A generous deadline for sending `bytes` (at least 1 MiB/s, plus 2 min).
pub fn deadline(bytes: u64) -> Duration {
    Duration::from_secs(120 + bytes / (1 << 20))
}

fn run(ctx: &Ctx, v: &Variant) -> Result<Vec<Figure>, String> {
    let cluster = ctx.cluster()?;
    let topic = ctx.topic(&v.name.replace('/', "-"));
    let min_isr = if v.rf >= 3 { "2" } else { "1" };
    support::create_topic(
        &cluster.bootstrap,
        &topic,
        v.partitions,
        v.rf,
        &[("min.insync.replicas", min_isr)],
    );
    let n = ctx.count(v.records, 1000);
    let props = producer_props(&cluster.bootstrap, v.acks);
    let cpu_before = util::cluster_cpu(cluster)?;
    let result = if v.keyed {
        keyed(&topic, n, v.record_size, &cluster.bootstrap)
    } else {
        perf_tests(&topic, n, v, &props)
    };
    let cpu_after = util::cluster_cpu(cluster)?;
    util::delete_topics(&cluster.bootstrap, &[&topic]);
    let s = result?;
    let gb = (s.records * v.record_size) as f64 / 1e9;
    let limit = Limit::DiskSync { rf: v.rf as u32 };
    Ok(vec![
        Figure::new("records/s", s.records_per_sec, "rec/s"),
        Figure::new("throughput", s.mb_per_sec, "MiB/s").against(limit),
        Figure::new("p50 latency", s.p50, "ms"),
        Figure::new("p99 latency", s.p99, "ms"),
        Figure::new(
            match cluster.children.len() {
                1 => "broker CPU (1 node)".to_string(),
                n => format!("broker CPU (sum of {n} nodes)"),
            },
            (cpu_after - cpu_before) / gb,
            "s/GB",
        ),
    ])
}

/// `v.producers` perf-tests in parallel sharing `n` records: throughput
/// summed, p50 the median of theirs, p99 the worst.
fn perf_tests(topic: &str, n: u64, v: &Variant, props: &[String]) -> Result<Summary, String> {
    let each = (n / v.producers as u64).max(1);
    let running = (0..v.producers)
        .map(|_| spawn_perf(topic, each, v.record_size, -1.0, props))
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = deadline(n * v.record_size);
    let mut sums = Vec::new();
    let mut first_err = None;
    for r in running {
        match r.wait(timeout).and_then(|f| parse_summary(&f.stdout)) {
            Ok(s) => sums.push(s),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if sums.len() == 1 {
        return Ok(sums[0]);
    }
    let p50s: Vec<f64> = sums.iter().map(|s| s.p50).collect();
    Ok(Summary {
        records: sums.iter().map(|s| s.records).sum(),
        records_per_sec: sums.iter().map(|s| s.records_per_sec).sum(),
        mb_per_sec: sums.iter().map(|s| s.mb_per_sec).sum(),
        p50: util::median(&p50s),
        p99: sums.iter().map(|s| s.p99).fold(0.0, f64::max),
    })
}

/// Send-to-acknowledgement latencies, and failed sends.
#[derive(Clone, Default)]
struct Acks(Arc<Mutex<(Vec<f64>, u64)>>);

impl ClientContext for Acks {}
impl ProducerContext for Acks {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, r: &DeliveryResult<'_>, sent: Box<Instant>) {
        let mut a = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(_) => a.0.push(sent.elapsed().as_secs_f64() * 1000.0),
            Err(_) => a.1 += 1,
        }
    }
}

/// producer-perf-test's loop with keys: librdkafka with the same
/// properties, keys cycling over 100,000 values, as fast as it goes.
fn keyed(topic: &str, n: u64, size: u64, bootstrap: &str) -> Result<Summary, String> {
    let acks = Acks::default();
    let mut config = ClientConfig::new();
    for p in producer_props(bootstrap, "all") {
        let (k, v) = p.split_once('=').expect("k=v");
        config.set(k, v);
    }
    let producer: ThreadedProducer<Acks> = config
        .create_with_context(acks.clone())
        .map_err(|e| e.to_string())?;
    let payload: Vec<u8> = (0..size)
        .map(|_| b'A' + rand::random::<u8>() % 26)
        .collect();
    let mut key = String::new();
    let start = Instant::now();
    for i in 0..n {
        key.clear();
        key.push_str(&format!("key-{:06}", i % 100_000));
        let mut sent = Box::new(Instant::now());
        loop {
            let rec = BaseRecord::with_opaque_to(topic, sent)
                .key(key.as_bytes())
                .payload(&payload[..]);
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    sent = r.delivery_opaque;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(format!("send: {e}")),
            }
        }
    }
    producer
        .flush(deadline(n * size))
        .map_err(|e| format!("flush: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    let (mut lat, failed) = std::mem::take(&mut *acks.0.lock().unwrap_or_else(|p| p.into_inner()));
    if failed > 0 {
        return Err(format!("{failed} of {n} keyed sends failed"));
    }
    lat.sort_by(f64::total_cmp);
    let ok = lat.len() as u64;
    Ok(Summary {
        records: ok,
        records_per_sec: ok as f64 / secs,
        mb_per_sec: (ok * size) as f64 / MIB / secs,
        p50: percentile(&lat, 0.5).unwrap_or(f64::NAN),
        p99: percentile(&lat, 0.99).unwrap_or(f64::NAN),
    })
}
