//! A background acks=all rdkafka producer: sends numbered records on its own
//! thread while a test kills, pauses and stops brokers, and records every
//! delivery report (key, partition, offset, when) for the test to check
//! against what it reads back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::step;

/// One acknowledged write.
#[derive(Clone, Debug)]
pub struct Ack {
    pub key: String,
    pub partition: i32,
    pub offset: i64,
    /// When the acknowledgement arrived.
    pub at: Instant,
}

/// What a producer did, once it finished.
#[derive(Debug, Default)]
pub struct Report {
    /// Every acknowledged write, in the order the acknowledgements arrived.
    pub acked: Vec<Ack>,
    /// (key, error) of writes that were not acknowledged.
    pub failed: Vec<(String, String)>,
    /// How many records were handed to librdkafka.
    pub sent: u64,
    /// librdkafka's fatal error at the end, if any: (code, reason).
    pub fatal: Option<(String, String)>,
}

/// What a `BgProducer` sends, and how.
#[derive(Clone, Debug)]
pub struct Spec {
    pub topic: String,
    /// Record `i` goes to `partitions[i % partitions.len()]`.
    pub partitions: Vec<i32>,
    /// Keys are `key_of_index(prefix, i)`, i = 0, 1, ...
    pub prefix: String,
    /// The payload is the key, padded to this many bytes.
    pub payload_len: usize,
    /// Pause between sends.
    pub pause: Duration,
    /// Stop after this many (`finish` waits for all of them).
    pub limit: Option<u64>,
    pub idempotence: bool,
    pub message_timeout_ms: u32,
    /// librdkafka settings on top of (or instead of) the base ones.
    pub settings: Vec<(&'static str, &'static str)>,
}

impl Spec {
    /// Keys `<prefix>-0000000`, ... to `topic`/0, 2 ms apart, until stopped;
    /// not idempotent, 30 s message timeout.
    pub fn continuous(topic: &str, prefix: &str) -> Spec {
        Spec {
            topic: topic.to_string(),
            partitions: vec![0],
            prefix: prefix.to_string(),
            payload_len: 0,
            pause: Duration::from_millis(2),
            limit: None,
            idempotence: false,
            message_timeout_ms: 30_000,
            settings: Vec::new(),
        }
    }
}

/// The key of record `i` of producer `prefix`: "<prefix>-<i, 7 digits>".
pub fn key_of_index(prefix: &str, i: u64) -> String {
    format!("{prefix}-{i:07}")
}

/// The index `i` of a key "<prefix>-<i>"; panics on a key no producer
/// wrote.
pub fn index_of(key: &str) -> u64 {
    key.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a key this test never wrote: {key:?}"))
}

/// The key, padded with letters to `len` bytes.
fn payload(key: &str, len: usize) -> Vec<u8> {
    let mut v = key.as_bytes().to_vec();
    let mut i = 0u8;
    while v.len() < len {
        v.push(b'a' + i % 26);
        i = i.wrapping_add(1);
    }
    v
}

/// The key of a record, lossily as text.
pub fn key_of<M: Message>(m: &M) -> String {
    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned()
}

#[derive(Default)]
struct Reports {
    acked: Vec<Ack>,
    failed: Vec<(String, String)>,
}

struct Recorder {
    reports: Arc<Mutex<Reports>>,
}

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let at = Instant::now();
        let mut r = self.reports.lock().expect("reports lock");
        match result {
            Ok(m) => r.acked.push(Ack {
                key: key_of(m),
                partition: m.partition(),
                offset: m.offset(),
                at,
            }),
            Err((e, m)) => r.failed.push((key_of(m), e.to_string())),
        }
    }
}

/// An acks=all producer on its own thread (see `Spec`), recording every
/// delivery report with the time it arrived.
pub struct BgProducer {
    pub name: String,
    stop: Arc<AtomicBool>,
    limited: bool,
    sent: Arc<AtomicU64>,
    reports: Arc<Mutex<Reports>>,
    handle: Option<JoinHandle<Option<(String, String)>>>,
}

impl BgProducer {
    pub fn start(bootstrap: &str, spec: Spec) -> BgProducer {
        assert!(!spec.partitions.is_empty(), "a producer needs a partition");
        let reports = Arc::new(Mutex::new(Reports::default()));
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", spec.idempotence.to_string())
            // Without idempotence, keep librdkafka's retries (and ordering).
            .set("retries", "2147483647")
            .set("retry.backoff.max.ms", "500")
            .set("message.timeout.ms", spec.message_timeout_ms.to_string())
            .set("request.timeout.ms", "5000")
            .set("socket.timeout.ms", "5000")
            .set("topic.metadata.refresh.interval.ms", "2000")
            .set("linger.ms", "5");
        for (k, v) in &spec.settings {
            config.set(*k, *v);
        }
        let producer: ThreadedProducer<Recorder> = config
            .create_with_context(Recorder {
                reports: Arc::clone(&reports),
            })
            .expect("create producer");
        step!(
            "producer {}: acks=all, enable.idempotence={}, to {}/{:?} through {bootstrap}{}",
            spec.prefix,
            spec.idempotence,
            spec.topic,
            spec.partitions,
            if spec.settings.is_empty() {
                String::new()
            } else {
                format!(", {:?}", spec.settings)
            }
        );
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (Arc::clone(&stop), Arc::clone(&sent));
        let name = spec.prefix.clone();
        let limited = spec.limit.is_some();
        let handle = std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop2.load(Ordering::SeqCst) && spec.limit.is_none_or(|l| i < l) {
                let key = key_of_index(&spec.prefix, i);
                let value = payload(&key, spec.payload_len);
                let p = spec.partitions[(i % spec.partitions.len() as u64) as usize];
                let rec = BaseRecord::to(&spec.topic)
                    .partition(p)
                    .key(&key)
                    .payload(&value);
                match producer.send(rec) {
                    Ok(()) => {
                        i += 1;
                        sent2.store(i, Ordering::SeqCst);
                        if !spec.pause.is_zero() {
                            std::thread::sleep(spec.pause);
                        }
                    }
                    // Queue full: let deliveries drain.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            // Everything sent resolves within message.timeout.ms.
            let flush = Duration::from_millis(u64::from(spec.message_timeout_ms) + 30_000);
            if let Err(e) = producer.flush(flush) {
                eprintln!("producer {} flush: {e}", spec.prefix);
            }
            producer
                .client()
                .fatal_error()
                .map(|(code, s)| (format!("{code:?}"), s))
        });
        BgProducer {
            name,
            stop,
            limited,
            sent,
            reports,
            handle: Some(handle),
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    pub fn acked(&self) -> usize {
        self.reports.lock().expect("lock").acked.len()
    }

    pub fn failed(&self) -> usize {
        self.reports.lock().expect("lock").failed.len()
    }

    /// How many acknowledgements arrived after `t`.
    pub fn acks_since(&self, t: Instant) -> usize {
        let r = self.reports.lock().expect("lock");
        r.acked.iter().rev().take_while(|a| a.at > t).count()
    }

    pub fn max_acked_offset(&self) -> i64 {
        let r = self.reports.lock().expect("lock");
        r.acked.iter().map(|a| a.offset).max().unwrap_or(-1)
    }

    /// The first acknowledgement after `t` of an offset above `above`.
    pub fn first_ack_after(&self, t: Instant, above: i64) -> Option<Ack> {
        let r = self.reports.lock().expect("lock");
        r.acked
            .iter()
            .filter(|a| a.at > t && a.offset > above)
            .min_by_key(|a| a.at)
            .cloned()
    }

    /// The last `n` failures, the latest first.
    pub fn last_failures(&self, n: usize) -> Vec<(String, String)> {
        let r = self.reports.lock().expect("lock");
        r.failed.iter().rev().take(n).cloned().collect()
    }

    /// Waits for `n` acknowledgements after `t`.
    pub fn wait_acks_since(&self, t: Instant, n: usize, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.acks_since(t);
            if got >= n {
                step!(
                    "{what}: {got} acks (total {}, {} failed)",
                    self.acked(),
                    self.failed()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: only {got} of {n} acknowledgements within {within:?} \
                 (sent {}, acked {}, failed {}; last failures {:?})",
                self.sent(),
                self.acked(),
                self.failed(),
                self.last_failures(3)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for `more` acknowledgements from now.
    pub fn wait_more_acks(&self, more: usize, within: Duration, what: &str) {
        wait_more_acks(std::slice::from_ref(self), more, within, what);
    }

    /// Stops sending (a limited producer: once all are sent), waits for
    /// every delivery report and returns what it did.
    pub fn finish(mut self) -> Report {
        if !self.limited {
            self.stop.store(true, Ordering::SeqCst);
        }
        let fatal = self
            .handle
            .take()
            .map(|h| h.join().expect("producer thread"))
            .unwrap_or_default();
        let r = std::mem::take(&mut *self.reports.lock().expect("lock"));
        let report = Report {
            acked: r.acked,
            failed: r.failed,
            sent: self.sent(),
            fatal,
        };
        step!(
            "producer {} finished: sent {}, acknowledged {}, failed {}, fatal error {:?}",
            self.name,
            report.sent,
            report.acked.len(),
            report.failed.len(),
            report.fatal
        );
        if let Some((k, e)) = report.failed.first() {
            step!("first failure: {k}: {e}");
        }
        report
    }
}

impl Drop for BgProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Waits until `producers` together have `more` acknowledgements more than
/// now.
pub fn wait_more_acks(producers: &[BgProducer], more: usize, within: Duration, what: &str) {
    let total = || producers.iter().map(BgProducer::acked).sum::<usize>();
    let start = total();
    let deadline = Instant::now() + within;
    loop {
        let now = total();
        if now >= start + more {
            step!("{what}: {now} acknowledgements so far");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: only {} of {more} more acknowledgements within {within:?} \
             (sent {:?}, failed {:?}, last failures {:?})",
            now - start,
            producers.iter().map(BgProducer::sent).collect::<Vec<_>>(),
            producers.iter().map(BgProducer::failed).collect::<Vec<_>>(),
            producers
                .iter()
                .map(|p| p.last_failures(3))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
