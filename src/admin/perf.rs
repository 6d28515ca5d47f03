//! `producer-perf-test` and `consumer-perf-test`, with the flags and the
//! output of Kafka's `kafka-producer-perf-test.sh` and
//! `kafka-consumer-perf-test.sh`, so that figures read the same as the
//! field's.
//!
//! Both drive librdkafka (the `rdkafka` crate) rather than the CLI's own
//! client: librdkafka is what most of our users run (php-rdkafka,
//! confluent-kafka, kcat), and it batches, pipelines and compresses as a
//! production client does, where the CLI's client sends one request at a
//! time. Java producer property names that librdkafka lacks (serializers,
//! `buffer.memory`, `max.block.ms`…) are dropped with a note on stderr;
//! any other unknown name is refused by librdkafka, which names it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{ArgGroup, Args};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Statistics};

/// Java client properties with no librdkafka counterpart.
const JAVA_ONLY: &[&str] = &[
    "key.serializer",
    "value.serializer",
    "key.deserializer",
    "value.deserializer",
    "buffer.memory",
    "max.block.ms",
    "interceptor.classes",
    "partitioner.class",
    "metric.reporters",
];

/// The most latencies kept for the percentiles (Kafka samples down to 500,000).
const MAX_SAMPLES: u64 = 500_000;
/// Kafka prints a progress line every 5 s.
const REPORTING_INTERVAL: Duration = Duration::from_secs(5);

/// `kafka-producer-perf-test.sh` options.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("payload").required(true).args(["record_size", "payload_file", "payload_monotonic"])))]
#[command(group(ArgGroup::new("props").required(true).multiple(true).args(["producer_props", "producer_config"])))]
pub struct ProducerPerfArgs {
    /// Produce messages to this topic.
    #[arg(long)]
    pub topic: String,
    /// Number of messages to produce.
    #[arg(long, allow_negative_numbers = true)]
    pub num_records: i64,
    /// Message size in bytes.
    #[arg(long, allow_negative_numbers = true)]
    pub record_size: Option<i64>,
    /// File to read the message payloads from (UTF-8 text, split at
    /// --payload-delimiter); a payload is picked at random for each send.
    #[arg(long)]
    pub payload_file: Option<String>,
    /// Delimiter of --payload-file.
    #[arg(long, default_value = "\\n")]
    pub payload_delimiter: String,
    /// The payload is a monotonically increasing integer.
    #[arg(long)]
    pub payload_monotonic: bool,
    /// Throttle to about this many messages/s; -1 disables throttling.
    #[arg(long, allow_negative_numbers = true)]
    pub throughput: f64,
    /// Producer properties such as bootstrap.servers, acks, linger.ms;
    /// they take precedence over --producer.config.
    #[arg(long, num_args = 1.., value_name = "PROP-NAME=PROP-VALUE")]
    pub producer_props: Vec<String>,
    /// Producer config properties file.
    #[arg(long = "producer.config", value_name = "CONFIG-FILE")]
    pub producer_config: Option<String>,
    /// Print the client's metrics at the end of the test.
    #[arg(long)]
    pub print_metrics: bool,
    /// Records to treat as warm-up: a second summary line covers the rest.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub warmup_records: i64,
    /// Transactions are not supported by Runnel yet; refused.
    #[arg(long)]
    pub transactional_id: Option<String>,
    /// Transactions are not supported by Runnel yet; refused.
    #[arg(long)]
    pub transaction_duration_ms: Option<i64>,
}

/// `kafka-consumer-perf-test.sh` options.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["topic", "include"])))]
pub struct ConsumerPerfArgs {
    /// The server(s) to connect to.
    #[arg(long, value_name = "SERVERS")]
    pub bootstrap_server: String,
    /// The topic to consume from.
    #[arg(long)]
    pub topic: Option<String>,
    /// Regular expression of the topics to consume from.
    #[arg(long)]
    pub include: Option<String>,
    /// The group id to consume on (default perf-consumer-<random>).
    #[arg(long)]
    pub group: Option<String>,
    /// The number of messages to consume.
    #[arg(long, allow_negative_numbers = true)]
    pub messages: i64,
    /// The amount of data to fetch from one partition in a request.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub fetch_size: i64,
    /// Without a committed offset, start at the log end rather than the start.
    #[arg(long)]
    pub from_latest: bool,
    /// The TCP receive buffer size.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub socket_buffer_size: i64,
    /// Consumer config properties file.
    #[arg(long = "consumer.config", value_name = "CONFIG-FILE")]
    pub consumer_config: Option<String>,
    /// Print the client's metrics at the end.
    #[arg(long)]
    pub print_metrics: bool,
    /// Print a stats line every --reporting-interval.
    #[arg(long)]
    pub show_detailed_stats: bool,
    /// The longest wait between records, in ms, before giving up.
    #[arg(long, default_value_t = 10_000)]
    pub timeout: u64,
    /// Interval in ms at which to print progress info.
    #[arg(long, default_value_t = 5_000)]
    pub reporting_interval: u64,
    /// The format of the time fields, in SimpleDateFormat letters
    /// (yyyy MM dd HH mm ss SSS; UTC).
    #[arg(long, default_value = "yyyy-MM-dd HH:mm:ss:SSS")]
    pub date_format: String,
    /// Do not print the header line.
    #[arg(long)]
    pub hide_header: bool,
}

/// Kafka's `Stats`: counts and latencies (ms) of acknowledged sends, a
/// progress line every 5 s, the percentiles of a sample at the end.
#[derive(Debug)]
pub(crate) struct Stats {
    start: Instant,
    sampling: u64,
    latencies: Vec<u32>,
    iteration: u64,
    count: u64,
    bytes: u64,
    max_latency: u32,
    total_latency: u64,
    window: Window,
    steady_state: bool,
    print_windows: bool,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    count: u64,
    bytes: u64,
    max_latency: u32,
    total_latency: u64,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            start: now,
            count: 0,
            bytes: 0,
            max_latency: 0,
            total_latency: 0,
        }
    }
}

impl Stats {
    pub(crate) fn new(num_records: u64, steady_state: bool, now: Instant) -> Stats {
        let sampling = (num_records / num_records.clamp(1, MAX_SAMPLES)).max(1);
        Stats {
            start: now,
            sampling,
            latencies: Vec::with_capacity((num_records / sampling + 1) as usize),
            iteration: 0,
            count: 0,
            bytes: 0,
            max_latency: 0,
            total_latency: 0,
            window: Window::new(now),
            steady_state,
            print_windows: true,
        }
    }

    /// Records one acknowledged send; returns the progress line when a
    /// window is over.
    pub(crate) fn record(&mut self, latency_ms: u32, bytes: u64, now: Instant) -> Option<String> {
        self.count += 1;
        self.bytes += bytes;
        self.total_latency += u64::from(latency_ms);
        self.max_latency = self.max_latency.max(latency_ms);
        let w = &mut self.window;
        w.count += 1;
        w.bytes += bytes;
        w.total_latency += u64::from(latency_ms);
        w.max_latency = w.max_latency.max(latency_ms);
        if self.iteration % self.sampling == 0 {
            self.latencies.push(latency_ms);
        }
        self.iteration += 1;
        if now.duration_since(self.window.start) < REPORTING_INTERVAL {
            return None;
        }
        let line = self.print_windows.then(|| self.window_line(now));
        self.window = Window::new(now);
        line
    }

    fn window_line(&self, now: Instant) -> String {
        let w = &self.window;
        let secs = now.duration_since(w.start).as_secs_f64().max(1e-3);
        format!(
            "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency.",
            w.count,
            w.count as f64 / secs,
            w.bytes as f64 / secs / (1024.0 * 1024.0),
            w.total_latency as f64 / w.count.max(1) as f64,
            f64::from(w.max_latency),
        )
    }

    /// Kafka's summary line.
    pub(crate) fn total_line(&mut self, now: Instant) -> String {
        let secs = now.duration_since(self.start).as_secs_f64().max(1e-3);
        let p = percentiles(&mut self.latencies, &[0.5, 0.95, 0.99, 0.999]);
        format!(
            "{}{} records sent, {:.6} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, {} ms 50th, {} ms 95th, {} ms 99th, {} ms 99.9th.",
            self.count,
            if self.steady_state { " steady state" } else { "" },
            self.count as f64 / secs,
            self.bytes as f64 / secs / (1024.0 * 1024.0),
            self.total_latency as f64 / self.count.max(1) as f64,
            f64::from(self.max_latency),
            p[0],
            p[1],
            p[2],
            p[3],
        )
    }
}

/// Kafka's percentiles: the sorted sample at `floor(p × n)`.
fn percentiles(sample: &mut [u32], ps: &[f64]) -> Vec<u32> {
    sample.sort_unstable();
    ps.iter()
        .map(|p| {
            if sample.is_empty() {
                0
            } else {
                sample[((p * sample.len() as f64) as usize).min(sample.len() - 1)]
            }
        })
        .collect()
}

/// Reads a Java properties file, then applies `k=v` overrides on top.
fn properties(
    file: Option<&str>,
    overrides: &[String],
) -> Result<BTreeMap<String, String>, String> {
    let mut props = BTreeMap::new();
    if let Some(f) = file {
        let text = std::fs::read_to_string(Path::new(f)).map_err(|e| format!("{f}: {e}"))?;
        props.extend(crate::config::parse_properties(&text));
    }
    for p in overrides {
        match p.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.contains('=') => {
                props.insert(k.to_string(), v.to_string());
            }
            _ => return Err(format!("Invalid property: {p}")),
        }
    }
    Ok(props)
}

/// librdkafka's config from Java-style properties.
fn client_config(props: &BTreeMap<String, String>, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("client.id", client_id);
    for (k, v) in props {
        if JAVA_ONLY.contains(&k.as_str()) {
            eprintln!(
                "note: {k} is a Java client property with no librdkafka counterpart; ignored"
            );
            continue;
        }
        c.set(k, v);
    }
    c
}

fn millis_since(t: Instant) -> u32 {
    t.elapsed().as_millis().min(u128::from(u32::MAX)) as u32
}

/// What the delivery callback needs of each send.
struct Sent {
    at: Instant,
    bytes: u64,
    counted_steady: bool,
}

/// Both the whole run and, with warm-up, the steady state.
struct Recorder {
    all: Stats,
    steady: Option<Stats>,
    failed: u64,
}

#[derive(Clone)]
struct PerfContext {
    rec: Arc<Mutex<Recorder>>,
    statistics: Arc<Mutex<Option<Statistics>>>,
}

impl ClientContext for PerfContext {
    fn stats(&self, s: Statistics) {
        *self.statistics.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }
}

impl ProducerContext for PerfContext {
    type DeliveryOpaque = Box<Sent>;

    fn delivery(&self, r: &DeliveryResult<'_>, sent: Box<Sent>) {
        let mut rec = self.rec.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(_) => {
                let (latency, now) = (millis_since(sent.at), Instant::now());
                if let Some(line) = rec.all.record(latency, sent.bytes, now) {
                    println!("{line}");
                }
                if sent.counted_steady {
                    if let Some(steady) = rec.steady.as_mut() {
                        if let Some(line) = steady.record(latency, sent.bytes, now) {
                            println!("{line}");
                        }
                    }
                }
            }
            Err((e, _)) => {
                rec.failed += 1;
                if rec.failed == 1 || rec.failed % 10_000 == 0 {
                    eprintln!("ERROR send failed ({} so far): {e}", rec.failed);
                }
            }
        }
    }
}

/// How each record's payload is made.
enum Payloads {
    Sized(Vec<u8>),
    File(Vec<Vec<u8>>),
    Monotonic,
}

impl Payloads {
    fn from_args(args: &ProducerPerfArgs) -> Result<Payloads, String> {
        if let Some(size) = args.record_size {
            if size <= 0 {
                return Err("--record-size should be greater than zero".into());
            }
            // Kafka fills the payload with random upper-case letters.
            let mut rng = rand::thread_rng();
            let payload = (0..size)
                .map(|_| b'A' + rand::Rng::gen_range(&mut rng, 0..26u8))
                .collect();
            return Ok(Payloads::Sized(payload));
        }
        if let Some(f) = &args.payload_file {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
            let delim = match args.payload_delimiter.as_str() {
                "\\n" => "\n",
                d => d,
            };
            let list: Vec<Vec<u8>> = text
                .split(delim)
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec())
                .collect();
            if list.is_empty() {
                return Err("File does not exist or empty file provided.".into());
            }
            println!("Number of messages read: {}", list.len());
            return Ok(Payloads::File(list));
        }
        Ok(Payloads::Monotonic)
    }

    fn get(&self, i: u64, scratch: &mut Vec<u8>) -> usize {
        match self {
            Payloads::Sized(p) => {
                scratch.clear();
                scratch.extend_from_slice(p);
            }
            Payloads::File(list) => {
                scratch.clear();
                scratch.extend_from_slice(&list[rand::random::<usize>() % list.len()]);
            }
            Payloads::Monotonic => {
                scratch.clear();
                scratch.extend_from_slice(i.to_string().as_bytes());
            }
        }
        scratch.len()
    }
}

/// Checks the options as Kafka's `ConfigPostProcessor` does.
fn check_producer(args: &ProducerPerfArgs) -> Result<(), String> {
    if args.num_records <= 0 {
        return Err("--num-records should be greater than zero".into());
    }
    if args.warmup_records >= args.num_records {
        return Err("The value for --warmup-records must be strictly fewer than the number of records in the test, --num-records.".into());
    }
    if args.transactional_id.is_some() || args.transaction_duration_ms.is_some() {
        return Err("transactions are not supported by Runnel yet".into());
    }
    Ok(())
}

/// Runs `producer-perf-test`; the exit status.
pub fn run_producer(args: ProducerPerfArgs) -> i32 {
    if let Err(e) = check_producer(&args) {
        eprintln!("{e}");
        return 1;
    }
    let props = match properties(args.producer_config.as_deref(), &args.producer_props) {
        Ok(p) if p.contains_key("transactional.id") => {
            eprintln!("transactions are not supported by Runnel yet");
            return 1;
        }
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let payloads = match Payloads::from_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let mut config = client_config(&props, "perf-producer-client");
    if args.print_metrics {
        config.set("statistics.interval.ms", "1000");
    }
    let num = args.num_records as u64;
    let warmup = args.warmup_records.max(0) as u64;
    let now = Instant::now();
    let ctx = PerfContext {
        rec: Arc::new(Mutex::new(Recorder {
            all: Stats::new(num, false, now),
            steady: None,
            failed: 0,
        })),
        statistics: Arc::default(),
    };
    let producer: ThreadedProducer<PerfContext> = match config.create_with_context(ctx.clone()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ERROR {e}");
            return 1;
        }
    };
    if warmup > 0 {
        println!("Warmup first {warmup} records. Steady state results will print after the complete test summary.");
    }
    if let Err(e) = send_all(&producer, &ctx, &args, &payloads) {
        eprintln!("ERROR {e}");
        return 1;
    }
    if let Err(e) = producer.flush(Duration::from_secs(300)) {
        eprintln!("ERROR flush: {e}");
    }
    let now = Instant::now();
    let mut rec = ctx.rec.lock().unwrap_or_else(|p| p.into_inner());
    println!("{}", rec.all.total_line(now));
    if let Some(steady) = rec.steady.as_mut() {
        println!("{}", steady.total_line(now));
    }
    let failed = rec.failed;
    drop(rec);
    if args.print_metrics {
        std::thread::sleep(Duration::from_millis(1100));
        print_metrics(&ctx.statistics, "producer");
    }
    i32::from(failed > 0)
}

/// Sends `--num-records` records, throttled to `--throughput`, and starts
/// the steady-state stats once the warm-up is sent.
fn send_all(
    producer: &ThreadedProducer<PerfContext>,
    ctx: &PerfContext,
    args: &ProducerPerfArgs,
    payloads: &Payloads,
) -> Result<(), KafkaError> {
    let num = args.num_records as u64;
    let warmup = args.warmup_records.max(0) as u64;
    let start = Instant::now();
    let mut scratch = Vec::new();
    for i in 0..num {
        if i == warmup && warmup > 0 {
            let mut rec = ctx.rec.lock().unwrap_or_else(|p| p.into_inner());
            rec.steady = Some(Stats::new(num - warmup, true, Instant::now()));
            rec.all.print_windows = false;
        }
        if args.throughput > 0.0 {
            let due = start + Duration::from_secs_f64(i as f64 / args.throughput);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let len = payloads.get(i, &mut scratch);
        let mut sent = Box::new(Sent {
            at: Instant::now(),
            bytes: len as u64,
            counted_steady: warmup > 0 && i >= warmup,
        });
        loop {
            let record =
                BaseRecord::<(), [u8], _>::with_opaque_to(&args.topic, sent).payload(&scratch[..]);
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // The Java producer blocks in send() when its buffer is
                    // full; wait for deliveries to make room.
                    sent = r.delivery_opaque;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Prints librdkafka's statistics in the `Metric Name  Value` layout of
/// Kafka's `ToolsUtils.printMetrics`.
fn print_metrics(stats: &Mutex<Option<Statistics>>, kind: &str) {
    let guard = stats.lock().unwrap_or_else(|p| p.into_inner());
    let Some(s) = guard.as_ref() else {
        println!("no metrics: the client reported no statistics");
        return;
    };
    let tag = format!("{{client-id={}}}", s.client_id);
    let mut rows: Vec<(String, f64)> = vec![
        (format!("{kind}-metrics:msg-count{tag}"), s.msg_cnt as f64),
        (format!("{kind}-metrics:request-total{tag}"), s.tx as f64),
        (
            format!("{kind}-metrics:outgoing-byte-total{tag}"),
            s.tx_bytes as f64,
        ),
        (format!("{kind}-metrics:response-total{tag}"), s.rx as f64),
        (
            format!("{kind}-metrics:incoming-byte-total{tag}"),
            s.rx_bytes as f64,
        ),
        (
            format!("{kind}-metrics:record-send-total{tag}"),
            s.txmsgs as f64,
        ),
        (
            format!("{kind}-metrics:record-send-bytes-total{tag}"),
            s.txmsg_bytes as f64,
        ),
        (
            format!("{kind}-metrics:records-consumed-total{tag}"),
            s.rxmsgs as f64,
        ),
        (
            format!("{kind}-metrics:bytes-consumed-total{tag}"),
            s.rxmsg_bytes as f64,
        ),
    ];
    for (name, b) in &s.brokers {
        let node = format!("{{client-id={},node-id={name}}}", s.client_id);
        if let Some(rtt) = &b.rtt {
            rows.push((
                format!("{kind}-node-metrics:request-latency-avg{node}"),
                rtt.avg as f64 / 1000.0,
            ));
            rows.push((
                format!("{kind}-node-metrics:request-latency-p99{node}"),
                rtt.p99 as f64 / 1000.0,
            ));
        }
        rows.push((
            format!("{kind}-node-metrics:request-total{node}"),
            b.tx as f64,
        ));
    }
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    println!("\n{:<width$}   Value", "Metric Name");
    for (n, v) in rows {
        println!("{n:<width$} : {v:.3}");
    }
}

/// Times a consumer group's (re)joins, as Kafka's `ConsumerPerfRebListener`.
#[derive(Clone, Default)]
struct JoinClock {
    inner: Arc<Mutex<JoinTimes>>,
}

#[derive(Default)]
struct JoinTimes {
    since: Option<Instant>,
    total_ms: u64,
    round_ms: u64,
}

struct ConsumerCtx {
    joins: JoinClock,
    statistics: Arc<Mutex<Option<Statistics>>>,
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, s: Statistics) {
        *self.statistics.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if matches!(r, Rebalance::Revoke(_)) {
            self.joins
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .since = Some(Instant::now());
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if matches!(r, Rebalance::Assign(_)) {
            let mut j = self.joins.inner.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(since) = j.since.take() {
                let ms = since.elapsed().as_millis() as u64;
                j.total_ms += ms;
                j.round_ms += ms;
            }
        }
    }
}

/// Formats `at` (ms since the epoch, UTC) with SimpleDateFormat's letters
/// yyyy, MM, dd, HH, mm, ss and SSS; other characters are kept.
pub(crate) fn format_date(pattern: &str, at_ms: u64) -> String {
    let (secs, ms) = (at_ms / 1000, at_ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let fields = [
        ("yyyy", format!("{y:04}")),
        ("MM", format!("{m:02}")),
        ("dd", format!("{d:02}")),
        ("HH", format!("{:02}", rem / 3600)),
        ("mm", format!("{:02}", rem % 3600 / 60)),
        ("ss", format!("{:02}", rem % 60)),
        ("SSS", format!("{ms:03}")),
    ];
    let mut out = String::new();
    let mut rest = pattern;
    'outer: while !rest.is_empty() {
        for (token, value) in &fields {
            if let Some(after) = rest.strip_prefix(token) {
                out.push_str(value);
                rest = after;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Howard Hinnant's days-to-civil: (year, month, day) of a day number
/// counted from 1970-01-01. (Public for the benchmark suite's dates.)
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The consumer's config: `--consumer.config`, then the flags, as Kafka's
/// `ConsumerPerfOptions.props` sets them.
fn consumer_config(args: &ConsumerPerfArgs) -> Result<ClientConfig, String> {
    let mut props = properties(args.consumer_config.as_deref(), &[])?;
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("perf-consumer-{}", rand::random::<u32>() % 100_000));
    props.insert("bootstrap.servers".into(), args.bootstrap_server.clone());
    props.insert("group.id".into(), group);
    props.insert(
        "socket.receive.buffer.bytes".into(),
        args.socket_buffer_size.to_string(),
    );
    props.insert(
        "max.partition.fetch.bytes".into(),
        args.fetch_size.to_string(),
    );
    let reset = if args.from_latest {
        "latest"
    } else {
        "earliest"
    };
    props.insert("auto.offset.reset".into(), reset.into());
    props.insert("check.crcs".into(), "false".into());
    let mut config = client_config(&props, "perf-consumer-client");
    if args.print_metrics {
        config.set("statistics.interval.ms", "1000");
    }
    Ok(config)
}

/// Runs `consumer-perf-test`; the exit status.
pub fn run_consumer(args: ConsumerPerfArgs) -> i32 {
    if args.messages <= 0 {
        eprintln!("--messages should be greater than zero");
        return 1;
    }
    if args.reporting_interval == 0 {
        eprintln!("Reporting interval must be greater than 0.");
        return 1;
    }
    let config = match consumer_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let joins = JoinClock::default();
    let statistics = Arc::new(Mutex::new(None));
    let ctx = ConsumerCtx {
        joins: joins.clone(),
        statistics: statistics.clone(),
    };
    if !args.hide_header {
        let extra = ", rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec";
        if args.show_detailed_stats {
            println!("time, threadId, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec{extra}");
        } else {
            println!("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec{extra}");
        }
    }
    let consumer: BaseConsumer<ConsumerCtx> = match config.create_with_context(ctx) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ERROR {e}");
            return 1;
        }
    };
    joins.inner.lock().unwrap_or_else(|p| p.into_inner()).since = Some(Instant::now());
    let subscribed = match (&args.topic, &args.include) {
        (Some(t), _) => consumer.subscribe(&[t.as_str()]),
        // librdkafka subscribes by regular expression when a name starts with ^.
        (None, Some(re)) => {
            let re = if re.starts_with('^') {
                re.clone()
            } else {
                format!("^{re}")
            };
            consumer.subscribe(&[re.as_str()])
        }
        (None, None) => unreachable!("clap requires --topic or --include"),
    };
    if let Err(e) = subscribed {
        eprintln!("ERROR {e}");
        return 1;
    }
    let out = consume(&consumer, &args, &joins);
    let total_join = joins
        .inner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .total_ms;
    let elapsed_ms = out.end_ms.saturating_sub(out.start_ms).max(1);
    let fetch_ms = elapsed_ms.saturating_sub(total_join).max(1);
    if !args.show_detailed_stats {
        let mb = out.bytes as f64 / (1024.0 * 1024.0);
        let secs = elapsed_ms as f64 / 1000.0;
        let fetch_secs = fetch_ms as f64 / 1000.0;
        println!(
            "{}, {}, {:.4}, {:.4}, {}, {:.4}, {}, {}, {:.4}, {:.4}",
            format_date(&args.date_format, out.start_ms),
            format_date(&args.date_format, out.end_ms),
            mb,
            mb / secs,
            out.messages,
            out.messages as f64 / secs,
            total_join,
            fetch_ms,
            mb / fetch_secs,
            out.messages as f64 / fetch_secs,
        );
    }
    if args.print_metrics {
        print_metrics(&statistics, "consumer");
    }
    0
}

struct Consumed {
    messages: u64,
    bytes: u64,
    start_ms: u64,
    end_ms: u64,
}

fn consume(
    consumer: &BaseConsumer<ConsumerCtx>,
    args: &ConsumerPerfArgs,
    joins: &JoinClock,
) -> Consumed {
    let want = args.messages as u64;
    let timeout = Duration::from_millis(args.timeout);
    let interval = Duration::from_millis(args.reporting_interval);
    let start_ms = epoch_ms();
    let (mut messages, mut bytes) = (0u64, 0u64);
    let (mut last_messages, mut last_bytes) = (0u64, 0u64);
    let mut last_report = Instant::now();
    let mut last_consumed = Instant::now();
    while messages < want && last_consumed.elapsed() <= timeout {
        let Some(r) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = match r {
            Ok(m) => m,
            Err(e) => {
                eprintln!("WARN {e}");
                continue;
            }
        };
        last_consumed = Instant::now();
        messages += 1;
        bytes += m.key().map_or(0, <[u8]>::len) as u64 + m.payload().map_or(0, <[u8]>::len) as u64;
        if last_report.elapsed() >= interval {
            if args.show_detailed_stats {
                let round = std::mem::take(
                    &mut joins
                        .inner
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .round_ms,
                );
                let elapsed = last_report.elapsed().as_millis().max(1) as f64;
                let fetch = (elapsed - round as f64).max(0.0);
                let mb = bytes as f64 / (1024.0 * 1024.0);
                let interval_mb = (bytes - last_bytes) as f64 / (1024.0 * 1024.0);
                let interval_n = (messages - last_messages) as f64;
                let per = |x: f64, ms: f64| if ms <= 0.0 { 0.0 } else { 1000.0 * x / ms };
                println!(
                    "{}, 0, {:.4}, {:.4}, {}, {:.4}, {}, {}, {:.4}, {:.4}",
                    format_date(&args.date_format, epoch_ms()),
                    mb,
                    per(interval_mb, elapsed),
                    messages,
                    per(interval_n, elapsed),
                    round,
                    fetch as u64,
                    per(interval_mb, fetch),
                    per(interval_n, fetch),
                );
            }
            last_report = Instant::now();
            last_messages = messages;
            last_bytes = bytes;
        }
    }
    if messages < want {
        println!("WARNING: Exiting before consuming the expected number of messages: timeout ({} ms) exceeded. You can use the --timeout option to increase the timeout.", args.timeout);
    }
    Consumed {
        messages,
        bytes,
        start_ms,
        end_ms: epoch_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_has_kafkas_shape_and_percentiles() {
        let t0 = Instant::now();
        let mut s = Stats::new(100, false, t0);
        for ms in 1..=100 {
            s.record(ms, 1024, t0);
        }
        let line = s.total_line(t0 + Duration::from_secs(1));
        assert!(
            line.starts_with("100 records sent, 100.000000 records/sec (0.10 MB/sec), 50.50 ms avg latency, 100.00 ms max latency, 51 ms 50th, 96 ms 95th, 100 ms 99th, 100 ms 99.9th."),
            "{line}"
        );
    }

    #[test]
    fn a_window_line_every_five_seconds() {
        let t0 = Instant::now();
        let mut s = Stats::new(10, false, t0);
        assert_eq!(s.record(3, 100, t0 + Duration::from_secs(1)), None);
        let line = s
            .record(5, 100, t0 + Duration::from_secs(5))
            .expect("a window line");
        assert_eq!(
            line,
            "2 records sent, 0.4 records/sec (0.00 MB/sec), 4.0 ms avg latency, 5.0 ms max latency."
        );
        assert_eq!(s.record(1, 100, t0 + Duration::from_secs(6)), None);
    }

    #[test]
    fn samples_at_most_half_a_million_latencies() {
        let s = Stats::new(2_000_000, false, Instant::now());
        assert_eq!(s.sampling, 4);
        let s = Stats::new(3, false, Instant::now());
        assert_eq!(s.sampling, 1);
    }

    #[test]
    fn dates_in_simple_date_format_letters() {
        // 2026-12-01 13:14:15.067 UTC
        let at = 1_796_130_855_067;
        assert_eq!(
            format_date("yyyy-MM-dd HH:mm:ss:SSS", at),
            "2026-12-01 13:14:15:067"
        );
        assert_eq!(format_date("dd/MM/yyyy", 0), "01/01/1970");
    }

    #[test]
    fn producer_props_override_the_file_and_need_one_equals_sign() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.properties");
        std::fs::write(&f, "acks=1\nlinger.ms=7\n").unwrap();
        let p = properties(Some(f.to_str().unwrap()), &["acks=all".into()]).unwrap();
        assert_eq!(p["acks"], "all");
        assert_eq!(p["linger.ms"], "7");
        assert_eq!(
            properties(None, &["acks".into()]).unwrap_err(),
            "Invalid property: acks"
        );
        assert!(properties(None, &["a=b=c".into()]).is_err());
    }
}
