//! The clients of a chaos run, each on its own thread, recording every
//! operation in the history (see `history.rs`):
//!
//! * producers `p1`..`p3`: idempotent, acks=all, unique values `p<k>-<seq>`
//!   round-robin over all five partitions, 200 a second each;
//! * group consumers `c1`, `c2`: one group on both topics, committing the
//!   next offsets by hand, synchronously, about every 200 ms;
//! * readers `r1` (chaos-a), `r2` (chaos-b): every partition of their
//!   topic assigned from the beginning, no group, no commits.
//!
//! The nemesis never touches a client. A consumer whose poll reports a
//! fatal error is made again (a new session); so is a producer with a
//! fatal error, which would otherwise fail every later send.
//!
//! The drain at the end: the producers stop and wait for every delivery
//! report, then the readers read until they reach every high watermark.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::bindings::{rd_kafka_message_status, rd_kafka_msg_status_t};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::json;

use crate::history::{Event, Persisted};
use crate::step;
use crate::Recorder;

/// The topics and their partition counts.
pub const TOPICS: [(&str, i32); 2] = [("chaos-a", 3), ("chaos-b", 2)];
pub const GROUP: &str = "chaos-g";
const PRODUCERS: usize = 3;
const GROUP_CONSUMERS: usize = 2;
/// Sends per second of each producer.
const RATE: u64 = 200;
const COMMIT_EVERY: Duration = Duration::from_millis(200);
const POLL: Duration = Duration::from_millis(100);
/// How long a stopping producer waits for its last delivery reports.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// How many errors of one client the step log shows; the rest are counted.
const ERRORS_SHOWN: u64 = 5;

/// Every (topic, partition) of the run.
pub fn partitions() -> Vec<(&'static str, i32)> {
    TOPICS
        .iter()
        .flat_map(|&(topic, n)| (0..n).map(move |p| (topic, p)))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The record's value, as the producers wrote it (text).
fn value_of<M: Message>(m: &M) -> String {
    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()
}

/// A client's errors: the first few in the step log, all counted.
#[derive(Default)]
struct Errors {
    count: AtomicU64,
}

impl Errors {
    fn note(&self, client: &str, what: &str, e: &dyn std::fmt::Display) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= ERRORS_SHOWN {
            step!("{client}: {what}: {e}");
        } else if n == ERRORS_SHOWN + 1 {
            step!("{client}: more errors, counted only");
        }
    }

    fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

// ------------------------------------------------------------ producers --

/// What a producer did, for the summary.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ProducerStats {
    pub client: String,
    pub sent: u64,
    /// Delivery reports still missing after the final flush; the producer's
    /// drop then purged them (reported as failed).
    pub unreported_after_flush: u64,
    /// librdkafka's fatal errors, after each of which the producer was made
    /// again.
    pub fatal: Vec<String>,
    pub send_errors: u64,
}

/// Records each delivery report; counts the reports still to come.
struct Deliveries {
    client: String,
    rec: Arc<Recorder>,
    in_flight: Arc<AtomicU64>,
}

/// `CHAOS_RDKAFKA_DEBUG`: librdkafka's `debug` contexts for the producers
/// (e.g. `eos,msg`), whose log then goes to the step log; for a
/// post-mortem of what a producer did around an anomaly (epoch bumps,
/// retries, implicit acks).
fn rdkafka_debug() -> Option<String> {
    std::env::var("CHAOS_RDKAFKA_DEBUG")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if rdkafka_debug().is_some() {
            step!("{} librdkafka {level:?} {fac}: {log_message}", self.client);
        }
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let t = self.rec.t();
        let client = self.client.clone();
        let event = match result {
            Ok(m) => Event::Ack {
                t,
                client,
                topic: m.topic().to_string(),
                partition: m.partition(),
                value: value_of(m),
                offset: m.offset(),
            },
            Err((e, m)) => Event::Fail {
                t,
                client,
                topic: m.topic().to_string(),
                partition: m.partition(),
                value: value_of(m),
                error: e.to_string(),
                persisted: persisted(m),
            },
        };
        self.rec.record(event);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// librdkafka's own verdict on a failed message (`rd_kafka_message_status`,
/// which rdkafka 0.39 does not wrap): `NOT_PERSISTED` only when the message
/// never left the client or the broker refused it, `POSSIBLY_PERSISTED`
/// after a request went out unanswered (a timeout, a broken connection).
/// Guessing it from the error code would call a timed-out message that a
/// broker did write "not persisted", and the checker would call reading it
/// an aborted read.
fn persisted(m: &BorrowedMessage<'_>) -> Persisted {
    // SAFETY: `m` is the message of the delivery report being handled,
    // valid for the whole callback; the call only reads its status field.
    let status = unsafe { rd_kafka_message_status(m.ptr()) };
    match status {
        rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_NOT_PERSISTED => Persisted::Not,
        // PERSISTED with an error does not happen; if it did, the message
        // may be in the log.
        _ => Persisted::Possibly,
    }
}

type Chaotic = ThreadedProducer<Deliveries>;

fn new_producer(bootstrap: &str, deliveries: Deliveries) -> Chaotic {
    let mut config = ClientConfig::new();
    if let Some(debug) = rdkafka_debug() {
        config.set("debug", debug);
        config.set_log_level(RDKafkaLogLevel::Debug);
    }
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", &deliveries.client)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Far above any outage the faults cause (seconds; a fault lasts at
        // most 8 s): a message that times out makes librdkafka bump the
        // producer epoch and renumber every message still queued, also
        // those a broker may already hold (retried after a timeout), which
        // it then writes again (rdkafka_broker.c, "message(s) timed out";
        // Kafka promises no duplicates only while messages do not time
        // out). The run's fails would show such timeouts.
        .set("message.timeout.ms", "30000")
        .set("retry.backoff.ms", "100")
        // A paused leader holds a request until it times out: give up on it
        // (and retry elsewhere) well before the message times out.
        .set("request.timeout.ms", "5000")
        .set("topic.metadata.refresh.interval.ms", "2000")
        .create_with_context(deliveries)
        .expect("create a producer")
}

fn produce(
    k: usize,
    bootstrap: String,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> ProducerStats {
    let client = format!("p{k}");
    let in_flight = Arc::new(AtomicU64::new(0));
    let deliveries = || Deliveries {
        client: client.clone(),
        rec: Arc::clone(&rec),
        in_flight: Arc::clone(&in_flight),
    };
    let mut producer = new_producer(&bootstrap, deliveries());
    let mut stats = ProducerStats {
        client: client.clone(),
        ..ProducerStats::default()
    };
    let errors = Errors::default();
    let targets = partitions();
    let pace = Duration::from_micros(1_000_000 / RATE);
    let mut next = Instant::now();
    step!("{client}: idempotent, acks=all, {RATE}/s over {targets:?}");
    while !stop.load(Ordering::SeqCst) {
        if let Some((code, reason)) = producer.client().fatal_error() {
            step!("{client}: fatal error {code:?} ({reason}); making the producer again");
            stats.fatal.push(format!("{code:?}: {reason}"));
            drop(producer);
            producer = new_producer(&bootstrap, deliveries());
        }
        let (topic, p) = targets[(stats.sent as usize + k) % targets.len()];
        let value = format!("{client}-{}", stats.sent);
        rec.record(Event::Send {
            t: rec.t(),
            client: client.clone(),
            topic: topic.to_string(),
            partition: p,
            value: value.clone(),
        });
        in_flight.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = enqueue(&producer, topic, p, &value, &stop) {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            errors.note(&client, "send", &e);
            // Never handed to librdkafka, so certainly not written.
            rec.record(Event::Fail {
                t: rec.t(),
                client: client.clone(),
                topic: topic.to_string(),
                partition: p,
                value,
                error: e.to_string(),
                persisted: Persisted::Not,
            });
        }
        stats.sent += 1;
        next += pace;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_secs(1) {
            // Far behind (a long stall): do not burst to catch up.
            next = now;
        }
    }
    if let Err(e) = producer.flush(FLUSH_TIMEOUT) {
        step!("{client}: flush: {e}");
    }
    stats.unreported_after_flush = in_flight.load(Ordering::SeqCst);
    // Dropping purges what is left, each with a failed delivery report.
    drop(producer);
    stats.send_errors = errors.get();
    step!(
        "{client}: stopped after {} sends; {} reports missing after the flush",
        stats.sent,
        stats.unreported_after_flush
    );
    stats
}

/// Hands one value to librdkafka, waiting while its queue is full.
fn enqueue(
    producer: &Chaotic,
    topic: &str,
    p: i32,
    value: &str,
    stop: &AtomicBool,
) -> Result<(), KafkaError> {
    loop {
        let record = BaseRecord::<(), str>::to(topic).partition(p).payload(value);
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                if !stop.load(Ordering::SeqCst) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

// ------------------------------------------------------------ consumers --

/// A consumer session counter that outlives each consumer made again.
type Session = Arc<AtomicU64>;

/// What a consumer saw, for the summary.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ConsumerStats {
    pub client: String,
    pub sessions: u64,
    /// Consumers made again after a fatal error.
    pub recreated: u64,
    pub errors: u64,
}

/// A group member's rebalances: each assignment change starts a session,
/// recorded as `assign`; offsets polled but not yet committed are dropped
/// on revocation, as committing them after the partitions moved would
/// overwrite the new owner's commits.
struct Member {
    client: String,
    rec: Arc<Recorder>,
    session: Session,
    pending: Mutex<BTreeMap<(String, i32), i64>>,
}

impl Member {
    fn assigned(&self, partitions: Vec<(String, i32)>) {
        let session = self.session.fetch_add(1, Ordering::SeqCst) + 1;
        step!(
            "{}: session {session}, assigned {partitions:?}",
            self.client
        );
        self.rec.record(Event::Assign {
            t: self.rec.t(),
            client: self.client.clone(),
            session,
            partitions,
        });
    }
}

fn tp_list(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for Member {}

impl ConsumerContext for Member {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(_) => {
                lock(&self.pending).clear();
                self.assigned(Vec::new());
            }
            Rebalance::Error(e) => step!("{}: rebalance error: {e}", self.client),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.assigned(tp_list(tpl));
        }
    }
}

fn new_member(bootstrap: &str, member: Member) -> BaseConsumer<Member> {
    let client = member.client.clone();
    let consumer: BaseConsumer<Member> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", &client)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "2000")
        .create_with_context(member)
        .expect("create a group consumer");
    let topics: Vec<&str> = TOPICS.iter().map(|(t, _)| *t).collect();
    consumer.subscribe(&topics).expect("subscribe");
    consumer
}

/// A fatal error, after which librdkafka's client is of no more use.
fn fatal<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<String> {
    consumer
        .client()
        .fatal_error()
        .map(|(code, reason)| format!("{code:?}: {reason}"))
}

fn consume_group(
    k: usize,
    bootstrap: String,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    group_polls: Arc<AtomicU64>,
) -> ConsumerStats {
    let client = format!("c{k}");
    let session: Session = Arc::default();
    let errors = Errors::default();
    let mut recreated = 0;
    while !stop.load(Ordering::SeqCst) {
        let member = Member {
            client: client.clone(),
            rec: Arc::clone(&rec),
            session: Arc::clone(&session),
            pending: Mutex::default(),
        };
        let consumer = new_member(&bootstrap, member);
        let mut last_commit = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            match consumer.poll(POLL) {
                Some(Ok(m)) => polled(&rec, &client, session.load(Ordering::SeqCst), &m, |o| {
                    lock(&consumer.context().pending)
                        .insert((m.topic().to_string(), m.partition()), o);
                    group_polls.fetch_add(1, Ordering::Relaxed);
                }),
                Some(Err(e)) => errors.note(&client, "poll", &e),
                None => {}
            }
            if last_commit.elapsed() >= COMMIT_EVERY {
                commit(&consumer, &rec, &client);
                last_commit = Instant::now();
            }
            if let Some(why) = fatal(&consumer) {
                step!("{client}: fatal error {why}; making the consumer again");
                recreated += 1;
                // A consumer made again starts a session even before its
                // first assignment.
                session.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
    ConsumerStats {
        client,
        sessions: session.load(Ordering::SeqCst),
        recreated,
        errors: errors.get(),
    }
}

/// Records one polled record and hands `next` (the offset after it) on.
fn polled<M: Message>(rec: &Recorder, client: &str, session: u64, m: &M, next: impl FnOnce(i64)) {
    rec.record(Event::Poll {
        t: rec.t(),
        client: client.to_string(),
        session,
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        value: value_of(m),
    });
    next(m.offset() + 1);
}

/// Commits the next offsets polled since the last commit, synchronously,
/// and records the outcome per partition. librdkafka's synchronous commit
/// answers for the whole list, so each partition gets that answer. Failed
/// offsets stay pending and go with the next commit.
fn commit(consumer: &BaseConsumer<Member>, rec: &Recorder, client: &str) {
    let pending = lock(&consumer.context().pending).clone();
    if pending.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, p), next) in &pending {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*next))
            .expect("a partition offset");
    }
    let result = consumer.commit(&tpl, CommitMode::Sync);
    if result.is_ok() {
        let mut now = lock(&consumer.context().pending);
        // Keep what was polled during the commit (nothing is: this thread
        // polls) and what a rebalance dropped.
        now.retain(|tp, next| pending.get(tp) != Some(next));
    }
    for ((topic, p), next) in pending {
        rec.record(Event::Commit {
            t: rec.t(),
            client: client.to_string(),
            group: GROUP.to_string(),
            topic,
            partition: p,
            offset: next,
            ok: result.is_ok(),
            error: result.as_ref().err().map(ToString::to_string),
        });
    }
}

// -------------------------------------------------------------- readers --

/// How far the readers got: the offset after the last record polled, per
/// partition.
type Reached = Arc<Mutex<HashMap<(&'static str, i32), i64>>>;

fn new_reader(bootstrap: &str, client: &str, topic: &str, partitions: i32) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", client)
        // librdkafka wants a group.id even for assign(); nothing is
        // committed.
        .set("group.id", format!("chaos-reader-{client}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A position the log no longer has sends the reader back to the
        // start within the same session, which the checker reports as a
        // nonmonotonic poll: only a broker that lost acknowledged records
        // says that.
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "2000")
        .create()
        .expect("create a reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("a partition offset");
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

fn read(
    k: usize,
    (topic, partitions): (&'static str, i32),
    bootstrap: String,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    reached: Reached,
) -> ConsumerStats {
    let client = format!("r{k}");
    let errors = Errors::default();
    let (mut session, mut recreated) = (0, 0);
    while !stop.load(Ordering::SeqCst) {
        session += 1;
        let consumer = new_reader(&bootstrap, &client, topic, partitions);
        rec.record(Event::Assign {
            t: rec.t(),
            client: client.clone(),
            session,
            partitions: (0..partitions).map(|p| (topic.to_string(), p)).collect(),
        });
        while !stop.load(Ordering::SeqCst) {
            match consumer.poll(POLL) {
                Some(Ok(m)) => polled(&rec, &client, session, &m, |next| {
                    let mut reached = lock(&reached);
                    let at = reached.entry((topic, m.partition())).or_insert(next);
                    *at = (*at).max(next);
                }),
                Some(Err(e)) => errors.note(&client, "poll", &e),
                None => {}
            }
            if let Some(why) = fatal(&consumer) {
                step!("{client}: fatal error {why}; making the reader again");
                recreated += 1;
                break;
            }
        }
    }
    ConsumerStats {
        client,
        sessions: session,
        recreated,
        errors: errors.get(),
    }
}

// ------------------------------------------------------------- workload --

/// The producers' stats, for the summary.
pub struct ProducersDone(Vec<ProducerStats>);

impl ProducersDone {
    pub fn text(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|s| {
                format!(
                    "{} sent {} (send errors {}, fatal {}, unreported after flush {})",
                    s.client,
                    s.sent,
                    s.send_errors,
                    s.fatal.len(),
                    s.unreported_after_flush
                )
            })
            .collect();
        parts.join("; ")
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!(self.0)
    }
}

/// The consumers' stats, for the summary.
pub struct ConsumersDone(Vec<ConsumerStats>);

impl ConsumersDone {
    pub fn text(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|s| {
                format!(
                    "{} sessions {} (made again {}, poll errors {})",
                    s.client, s.sessions, s.recreated, s.errors
                )
            })
            .collect();
        parts.join("; ")
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!(self.0)
    }
}

pub struct Workload {
    rec: Arc<Recorder>,
    stop_producers: Arc<AtomicBool>,
    stop_consumers: Arc<AtomicBool>,
    producers: Vec<JoinHandle<ProducerStats>>,
    consumers: Vec<JoinHandle<ConsumerStats>>,
    reached: Reached,
    /// Records polled by the group consumers.
    group_polls: Arc<AtomicU64>,
}

impl Workload {
    /// Starts every client against `bootstrap`.
    pub fn start(bootstrap: &str, rec: &Arc<Recorder>) -> Workload {
        let mut w = Workload {
            rec: Arc::clone(rec),
            stop_producers: Arc::default(),
            stop_consumers: Arc::default(),
            producers: Vec::new(),
            consumers: Vec::new(),
            reached: Arc::default(),
            group_polls: Arc::default(),
        };
        for k in 1..=PRODUCERS {
            let (boot, rec, stop) = w.handles(bootstrap, &w.stop_producers);
            w.producers
                .push(std::thread::spawn(move || produce(k, boot, rec, stop)));
        }
        for k in 1..=GROUP_CONSUMERS {
            let (boot, rec, stop) = w.handles(bootstrap, &w.stop_consumers);
            let polls = Arc::clone(&w.group_polls);
            w.consumers.push(std::thread::spawn(move || {
                consume_group(k, boot, rec, stop, polls)
            }));
        }
        for (k, topic) in TOPICS.into_iter().enumerate() {
            let (boot, rec, stop) = w.handles(bootstrap, &w.stop_consumers);
            let reached = Arc::clone(&w.reached);
            w.consumers.push(std::thread::spawn(move || {
                read(k + 1, topic, boot, rec, stop, reached)
            }));
        }
        w
    }

    fn handles(
        &self,
        bootstrap: &str,
        stop: &Arc<AtomicBool>,
    ) -> (String, Arc<Recorder>, Arc<AtomicBool>) {
        (
            bootstrap.to_string(),
            Arc::clone(&self.rec),
            Arc::clone(stop),
        )
    }

    /// Waits until the readers and the group consumers each polled `n`
    /// records, so that the faults start on clients that work (the group
    /// has formed). Panics if they do not within `within`.
    pub fn wait_running(&self, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let read: i64 = lock(&self.reached).values().sum();
            let grouped = self.group_polls.load(Ordering::Relaxed);
            if read >= n as i64 && grouped >= n {
                step!("workload running: the readers polled {read} records, the group {grouped}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "within {within:?} the readers polled only {read} records, the group {grouped}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the producers; each waits up to `FLUSH_TIMEOUT` for its
    /// delivery reports.
    pub fn stop_producers(&mut self) -> ProducersDone {
        self.stop_producers.store(true, Ordering::SeqCst);
        ProducersDone(
            self.producers
                .drain(..)
                .map(|h| h.join().expect("a producer thread panicked"))
                .collect(),
        )
    }

    /// Waits up to `within` until the readers reached every high watermark
    /// (`(topic, partition, hw)`); the partitions they fell short of, with
    /// how far they got.
    pub fn wait_readers(&self, hws: &[(&'static str, i32, i64)], within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let lagging: Vec<String> = {
                let reached = lock(&self.reached);
                hws.iter()
                    .filter_map(|&(topic, p, hw)| {
                        let at = reached.get(&(topic, p)).copied().unwrap_or(0);
                        (at < hw).then(|| format!("{topic}/{p} read to {at} of {hw}"))
                    })
                    .collect()
            };
            if lagging.is_empty() {
                step!("the readers reached every high watermark");
                return lagging;
            }
            if Instant::now() >= deadline {
                step!("the readers did not reach the high watermarks: {lagging:?}");
                return lagging;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn stop_consumers(&mut self) -> ConsumersDone {
        self.stop_consumers.store(true, Ordering::SeqCst);
        ConsumersDone(
            self.consumers
                .drain(..)
                .map(|h| h.join().expect("a consumer thread panicked"))
                .collect(),
        )
    }
}
