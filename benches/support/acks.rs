//! Send-to-acknowledgement latency at a fixed rate, the way a web request
//! that publishes one message with acks=all sees it: librdkafka with
//! `linger.ms=0`, 1 KiB records, sends on a fixed schedule (latency counts
//! from when a send was due, so a stall is not hidden by the sender
//! slowing down: no coordinated omission).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

#[derive(Clone, Default)]
struct Latencies(Arc<Mutex<(Vec<Duration>, u64)>>);

impl ClientContext for Latencies {}
impl ProducerContext for Latencies {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, r: &DeliveryResult<'_>, due: Box<Instant>) {
        let mut l = self.0.lock().unwrap();
        match r {
            Ok(_) => l.0.push(due.elapsed()),
            Err(_) => l.1 += 1,
        }
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends at `rate` for `secs` after a warm-up; returns the sorted latencies.
pub fn run(bootstrap: &str, topic: &str, rate: u64, secs: u64) -> Vec<Duration> {
    let ctx = Latencies::default();
    let producer: ThreadedProducer<Latencies> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .create_with_context(ctx.clone())
        .expect("producer");
    let value = vec![b'x'; 1024];
    let send = |due: Instant| {
        let mut rec =
            BaseRecord::<(), [u8], _>::with_opaque_to(topic, Box::new(due)).payload(&value);
        loop {
            match producer.send(rec) {
                Ok(()) => return,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    };
    // Warm-up: connections, metadata, the partition's first appends.
    for _ in 0..100 {
        send(Instant::now());
        producer.flush(Duration::from_secs(30)).expect("flush");
    }
    ctx.0.lock().unwrap().0.clear();
    let n = rate * secs;
    let start = Instant::now();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        send(due);
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let (mut l, failed) = std::mem::take(&mut *ctx.0.lock().unwrap());
    assert_eq!(failed, 0, "deliveries failed");
    l.sort();
    l
}

/// (p50, p99, p99.9, max) in ms of sorted latencies.
pub fn percentiles(l: &[Duration]) -> (f64, f64, f64, f64) {
    let q = |p: f64| ms(l[((p * l.len() as f64) as usize).min(l.len() - 1)]);
    (q(0.5), q(0.99), q(0.999), ms(*l.last().expect("latencies")))
}
