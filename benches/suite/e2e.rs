//! End-to-end latency at a fixed rate: each record's send time is set by a
//! schedule and carried in its payload, and a consumer in another thread
//! takes receive time minus intended send time. A sender that falls behind
//! (a stalled broker, a full queue) therefore shows up in the latencies
//! rather than hiding them (no coordinated omission).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::util::{self, MIB};
use crate::{support, Ctx, Figure, Limit, Workload};

const RATES: &[(&str, u32)] = &[("e2e/5MBps", 5), ("e2e/20MBps", 20), ("e2e/50MBps", 50)];
const PARTITIONS: i32 = 6;
const RECORD: usize = 1024;
/// Marks the records that only check both ends are connected.
const PRIME: u8 = 1;

pub fn workloads() -> Vec<Workload> {
    RATES
        .iter()
        .map(|&(name, mib)| Workload {
            name,
            nodes: 3,
            run: Box::new(move |ctx: &Ctx| run(ctx, mib)),
        })
        .collect()
}

#[derive(Clone, Default)]
struct Failures(Arc<AtomicU64>);

impl ClientContext for Failures {}
impl ProducerContext for Failures {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if r.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the consumer thread shares with the sender.
#[derive(Default)]
struct Shared {
    primed: AtomicU64,
    /// How many scheduled records to wait for (lowered if the sender gives up).
    expected: AtomicU64,
    stop: AtomicBool,
}

/// Receive-minus-intended latencies (ns), and the first and last receipts
/// (ns since `base`).
fn consume(
    bootstrap: String,
    topic: String,
    base: Instant,
    shared: Arc<Shared>,
) -> Result<(Vec<u64>, u64, u64), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("{topic}-e2e"))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut lat = Vec::new();
    let (mut first, mut last) = (0u64, 0u64);
    while !shared.stop.load(Ordering::Relaxed)
        && (lat.len() as u64) < shared.expected.load(Ordering::Relaxed)
    {
        let Some(r) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let now = base.elapsed().as_nanos() as u64;
        let m = match r {
            Ok(m) => m,
            Err(e) => {
                eprintln!("[suite]     consumer: {e}");
                continue;
            }
        };
        let Some(p) = m.payload().filter(|p| p.len() >= 9) else {
            continue;
        };
        if p[8] == PRIME {
            shared.primed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let intended = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
        if lat.is_empty() {
            first = now;
        }
        lat.push(now.saturating_sub(intended));
        last = now;
    }
    Ok((lat, first, last))
}

fn send(
    producer: &ThreadedProducer<Failures>,
    topic: &str,
    payload: &[u8],
    partition: Option<i32>,
) -> Result<(), String> {
    loop {
        let mut rec = BaseRecord::<(), [u8], ()>::to(topic).payload(payload);
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err((e, _)) => return Err(format!("send: {e}")),
        }
    }
}

fn run(ctx: &Ctx, mib_per_sec: u32) -> Result<Vec<Figure>, String> {
    let cluster = ctx.cluster()?;
    let bootstrap = cluster.bootstrap.clone();
    let topic = ctx.topic(&format!("e2e-{mib_per_sec}"));
    support::create_topic(
        &bootstrap,
        &topic,
        PARTITIONS,
        3,
        &[("min.insync.replicas", "2")],
    );
    let result = measure(ctx, &bootstrap, &topic, mib_per_sec);
    util::delete_topics(&bootstrap, &[&topic]);
    result
}

fn measure(
    ctx: &Ctx,
    bootstrap: &str,
    topic: &str,
    mib_per_sec: u32,
) -> Result<Vec<Figure>, String> {
    let rate = f64::from(mib_per_sec) * MIB / RECORD as f64;
    let secs = (30.0 * ctx.scale).max(1.0);
    let n = (rate * secs) as u64;
    let base = Instant::now();
    let shared = Arc::new(Shared {
        expected: AtomicU64::new(n),
        ..Shared::default()
    });
    let consumer = {
        let (b, t, s) = (bootstrap.to_string(), topic.to_string(), shared.clone());
        std::thread::spawn(move || consume(b, t, base, s))
    };
    let failures = Failures::default();
    let producer: ThreadedProducer<Failures> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create_with_context(failures.clone())
        .map_err(|e| e.to_string())?;
    let stop = || shared.stop.store(true, Ordering::Relaxed);
    let mut payload: Vec<u8> = (0..RECORD).map(|i| b'a' + (i % 26) as u8).collect();

    // One record per partition through both ends before the clock starts.
    payload[8] = PRIME;
    for p in 0..PARTITIONS {
        send(&producer, topic, &payload, Some(p)).inspect_err(|_| stop())?;
    }
    let primed_by = Instant::now() + Duration::from_secs(60);
    while shared.primed.load(Ordering::Relaxed) < PARTITIONS as u64 {
        if consumer.is_finished() {
            return Err(match consumer.join() {
                Ok(Err(e)) => format!("consumer: {e}"),
                _ => "the consumer stopped before the priming records".into(),
            });
        }
        if Instant::now() > primed_by {
            stop();
            return Err("the consumer did not see the priming records in 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    payload[8] = 0;

    let start = Instant::now();
    let give_up = start + Duration::from_secs_f64(secs * 3.0 + 30.0);
    let mut sent = 0u64;
    for i in 0..n {
        let due = start + Duration::from_nanos((i as f64 * 1e9 / rate) as u64);
        let now = Instant::now();
        if let Some(w) = due.checked_duration_since(now) {
            std::thread::sleep(w);
        } else if now > give_up {
            break;
        }
        payload[..8].copy_from_slice(&(due.duration_since(base).as_nanos() as u64).to_le_bytes());
        send(&producer, topic, &payload, None).inspect_err(|_| stop())?;
        sent += 1;
    }
    shared.expected.store(sent, Ordering::Relaxed);
    let flushed = producer.flush(Duration::from_secs(120));
    let watchdog = Instant::now() + Duration::from_secs(30);
    while !consumer.is_finished() && Instant::now() < watchdog {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop();
    let (mut lat, first, last) = consumer
        .join()
        .map_err(|_| "consumer panicked".to_string())??;
    flushed.map_err(|e| format!("flush: {e}"))?;
    let failed = failures.0.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} sends failed"));
    }
    if (lat.len() as u64) < sent {
        return Err(format!(
            "{} of {sent} records not received 30 s after the flush",
            sent - lat.len() as u64
        ));
    }
    // Receipts per second between the first and the last: the schedule's
    // rate if the pipeline kept up, whatever the latency.
    let window = last.saturating_sub(first) as f64 / 1e9;
    let achieved = ((lat.len() - 1) * RECORD) as f64 / MIB / window.max(1e-3);
    let mut figs = util::latency_figures(&mut lat, "latency");
    figs.extend([
        Figure::new("achieved rate", achieved, "MiB/s").against(Limit::DiskSync { rf: 3 }),
        Figure::new(
            "achieved/target",
            100.0 * achieved / f64::from(mib_per_sec),
            "%",
        ),
    ]);
    if sent < n {
        figs.push(Figure::new("sends given up", (n - sent) as f64, "records"));
    }
    Ok(figs)
}
