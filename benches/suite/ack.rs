//! Send-to-acknowledgement latency at a fixed rate, one record at a time:
//! what an application that produces one message per web request and
//! waits for it (Symfony Messenger, Laravel) sees. 1 KiB records,
//! `linger.ms=0`, one partition, RF=3, min.insync.replicas=2, acks=all.
//! Each record's latency runs from its scheduled send time to its
//! delivery report, so a stalled broker counts in full.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::util;
use crate::{support, Ctx, Figure, Workload};

/// (name, records/s, idempotent).
const RATES: &[(&str, u32, bool)] = &[
    ("ack/100rps", 100, false),
    ("ack/500rps", 500, false),
    ("ack/2000rps", 2000, false),
    ("ack/100rps-idempotent", 100, true),
];
const RECORD: usize = 1024;

pub fn workloads() -> Vec<Workload> {
    RATES
        .iter()
        .map(|&(name, rate, idempotent)| Workload {
            name,
            nodes: 3,
            run: Box::new(move |ctx: &Ctx| run(ctx, rate, idempotent)),
        })
        .collect()
}

/// Latencies (ns) from each record's scheduled send to its delivery
/// report, and the count of failed deliveries.
#[derive(Clone, Default)]
struct Acks(Arc<Mutex<(Vec<u64>, u64)>>);

impl ClientContext for Acks {}
impl ProducerContext for Acks {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, r: &DeliveryResult<'_>, due: Box<Instant>) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_ok() {
            g.0.push(due.elapsed().as_nanos() as u64);
        } else {
            g.1 += 1;
        }
    }
}

fn run(ctx: &Ctx, rate: u32, idempotent: bool) -> Result<Vec<Figure>, String> {
    let cluster = ctx.cluster()?;
    let bootstrap = cluster.bootstrap.clone();
    let topic = ctx.topic(&format!("ack-{rate}"));
    support::create_topic(&bootstrap, &topic, 1, 3, &[("min.insync.replicas", "2")]);
    let result = measure(ctx, &bootstrap, &topic, rate, idempotent);
    util::delete_topics(&bootstrap, &[&topic]);
    result
}

fn measure(
    ctx: &Ctx,
    bootstrap: &str,
    topic: &str,
    rate: u32,
    idempotent: bool,
) -> Result<Vec<Figure>, String> {
    let acks = Acks::default();
    let producer: ThreadedProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", idempotent.to_string())
        .set("linger.ms", "0")
        .create_with_context(acks.clone())
        .map_err(|e| e.to_string())?;
    let payload = vec![b'x'; RECORD];
    // One record through before the clock starts: connections, metadata
    // and (idempotent) the producer id are in place.
    producer
        .send(
            BaseRecord::<(), [u8], Box<Instant>>::with_opaque_to(topic, Box::new(Instant::now()))
                .payload(&payload[..]),
        )
        .map_err(|(e, _)| format!("send: {e}"))?;
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| format!("flush: {e}"))?;
    acks.0.lock().unwrap_or_else(|p| p.into_inner()).0.clear();

    let secs = (30.0 * ctx.scale).max(2.0);
    let n = (f64::from(rate) * secs) as u64;
    let start = Instant::now();
    for i in 0..n {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / u64::from(rate));
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        let rec = BaseRecord::<(), [u8], Box<Instant>>::with_opaque_to(topic, Box::new(due))
            .payload(&payload[..]);
        producer.send(rec).map_err(|(e, _)| format!("send: {e}"))?;
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| format!("flush: {e}"))?;
    let (mut lat, failed) = std::mem::take(&mut *acks.0.lock().unwrap_or_else(|p| p.into_inner()));
    if failed > 0 {
        return Err(format!("{failed} of {n} deliveries failed"));
    }
    if (lat.len() as u64) < n {
        return Err(format!(
            "{} of {n} records got no delivery report",
            n - lat.len() as u64
        ));
    }
    Ok(util::latency_figures(&mut lat, "send-to-ack"))
}
