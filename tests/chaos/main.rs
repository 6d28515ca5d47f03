//! The fault suite, Jepsen style: real Kafka clients (rdkafka) run a
//! workload against a real 3-node cluster while a seeded random nemesis
//! kills, pauses and restarts nodes; every client operation goes into a
//! history file, and the checker judges that file at the end.
//!
//! * `workload.rs`: the producers, group consumers and readers, and the
//!   final drain.
//! * `nemesis.rs`: the faults, one node at a time; `power.rs` (a killed
//!   node's files) and `disks.rs` (each node's log dir on a tmpfs that the
//!   nemesis fills) for some of them.
//! * `history.rs`, `checker.rs`: the event format and the anomalies.
//!
//! The nodes run in network namespaces of their own (`common::netns`), so
//! that the nemesis can cut links between them; the clients run in the
//! root namespace and reach every node whatever is cut. It needs root.
//!
//! `cargo test --release --test chaos` (what CI runs) injects faults for
//! 240 s; `make chaos` for 30 minutes. Environment: `CHAOS_DURATION`
//! (seconds of faults), `CHAOS_SEED` (u64; random and printed when unset),
//! `CHAOS_NEMESES` (comma list of fault kinds, or `all`; all when unset),
//! `CHAOS_OUT`
//! (where `history.jsonl`, `summary.json` and the nodes' logs go; a fresh
//! directory under the temp dir when unset, printed and kept),
//! `CHAOS_KEEP_DATA=1` (copy every node's log dir and metadata dir there
//! too, for a post-mortem; they are on tmpfs and go at the end otherwise),
//! `CHAOS_RDKAFKA_DEBUG` (librdkafka `debug` contexts for the producers,
//! e.g. `eos`, logged to the step log; see `workload.rs`).
//!
//! The run fails (panics, with the table) on any anomaly, if a selected
//! fault kind never fired, if a node exited on its own, or if the replicas
//! of a partition differ below the high watermark.

#[path = "../common/mod.rs"]
mod common;

// Shared with tests/chaos_checker.rs, which uses the parts this binary
// does not.
#[allow(dead_code)]
mod checker;
mod disks;
#[allow(dead_code)]
mod history;
mod nemesis;
mod power;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::disk::{batches_on_disk, DiskBatch};
use common::partition::{high_watermark, ids, states};
use common::topics::create_replicated;
use serde_json::json;

use disks::Disks;
use history::{Event, Writer};
use nemesis::{Kind, Rng};
use workload::Workload;

/// Three combined nodes that must stay available with one of them down,
/// and must never elect a replica that is out of the ISR. The harness adds
/// its 3 s broker sessions.
const SETTINGS: &[&str] = &[
    "default.replication.factor=3",
    "min.insync.replicas=2",
    "unclean.leader.election.enable=false",
];

/// Seconds of faults when `CHAOS_DURATION` is unset: what CI runs.
const DEFAULT_DURATION_S: u64 = 240;

/// How long the cluster may take to heal after the last fault.
const HEAL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the readers may take to reach the high watermarks at the end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the followers may take to hold every batch below the high
/// watermark once the producers stopped.
const REPLICAS_TIMEOUT: Duration = Duration::from_secs(30);

/// The one clock and history file of a run, shared by every client and the
/// nemesis.
pub struct Recorder {
    writer: Writer,
    start: Instant,
}

impl Recorder {
    /// Milliseconds since the run started: every event's `t`.
    pub fn t(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A history that cannot be written cannot be checked: the writing
    /// thread panics, and joining it fails the run.
    pub fn record(&self, event: Event) {
        self.writer.write(&event).expect("write the history");
    }
}

/// The run's settings, from the environment.
struct Config {
    duration: Duration,
    seed: u64,
    kinds: Vec<Kind>,
    out: PathBuf,
    /// `CHAOS_KEEP_DATA=1`: copy the nodes' data dirs to `out` at the end.
    keep_data: bool,
}

impl Config {
    fn from_env() -> Config {
        let duration = env("CHAOS_DURATION").map_or(DEFAULT_DURATION_S, |v| {
            v.parse()
                .unwrap_or_else(|e| panic!("CHAOS_DURATION={v:?}: {e}"))
        });
        let seed = env("CHAOS_SEED").map_or_else(random_seed, |v| {
            v.parse()
                .unwrap_or_else(|e| panic!("CHAOS_SEED={v:?}: {e}"))
        });
        let kinds = env("CHAOS_NEMESES").map_or_else(|| Kind::ALL.to_vec(), |v| parse_kinds(&v));
        let out = env("CHAOS_OUT").map_or_else(|| fresh_dir(seed), PathBuf::from);
        let keep_data = env("CHAOS_KEEP_DATA").is_some_and(|v| v != "0");
        Config {
            duration: Duration::from_secs(duration),
            seed,
            kinds,
            out,
            keep_data,
        }
    }

    fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }
}

/// An environment variable, unset when empty (as the Makefile passes an
/// unset one).
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_kinds(list: &str) -> Vec<Kind> {
    if list.trim() == "all" {
        return Kind::ALL.to_vec();
    }
    let mut kinds = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind = Kind::parse(name).unwrap_or_else(|| {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            panic!("CHAOS_NEMESES: unknown fault {name:?}; known: {known:?}")
        });
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    assert!(!kinds.is_empty(), "CHAOS_NEMESES={list:?} selects no fault");
    kinds
}

/// Different on every run; printed, so that a run can be repeated.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// `runnel-chaos-<seed>` under the temp dir, with a suffix if a run with
/// the same seed left one there.
fn fresh_dir(seed: u64) -> PathBuf {
    let base = std::env::temp_dir().join(format!("runnel-chaos-{seed}"));
    let mut dir = base.clone();
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = PathBuf::from(format!("{}-{n}", base.display()));
    }
    dir
}

/// Whether the command line, as cargo test passes it on, leaves this run
/// out: `--list` (test runners asking every binary for its tests), or a
/// test name filter that `chaos` does not match (`cargo test --release
/// some_test` runs every test binary with that filter).
fn skipped() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return true;
    }
    const WITH_VALUE: [&str; 5] = [
        "--test-threads",
        "--skip",
        "--color",
        "--format",
        "--logfile",
    ];
    let filters: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with('-') && (*i == 0 || !WITH_VALUE.contains(&args[i - 1].as_str()))
        })
        .map(|(_, a)| a)
        .collect();
    !filters.is_empty() && !filters.iter().any(|f| "chaos".contains(f.as_str()))
}

fn main() {
    if skipped() {
        return;
    }
    let config = Config::from_env();
    std::fs::create_dir_all(&config.out)
        .unwrap_or_else(|e| panic!("create {}: {e}", config.out.display()));
    step!(
        "chaos: seed {} (CHAOS_SEED={} repeats the faults), {} s of faults, nemeses {:?}, \
         output in {}",
        config.seed,
        config.seed,
        config.duration.as_secs(),
        config.names(),
        config.out.display()
    );
    let history_path = config.out.join("history.jsonl");
    let outcome = run(&config, &history_path);
    // The file, not what the clients meant to write, is what is checked.
    let events = history::read(&history_path)
        .unwrap_or_else(|e| panic!("read back {}: {e}", history_path.display()));
    let report = checker::check(&events);
    let problems = outcome.problems(&config, &report);
    let table = outcome.table(&config, &report, events.len());
    println!("{table}");
    let summary_path = config.out.join("summary.json");
    let summary = outcome.summary(&config, &report, &problems);
    let text = serde_json::to_string_pretty(&summary).expect("encode the summary");
    std::fs::write(&summary_path, text)
        .unwrap_or_else(|e| panic!("write {}: {e}", summary_path.display()));
    step!(
        "history {} and summary {} kept",
        history_path.display(),
        summary_path.display()
    );
    assert!(
        problems.is_empty(),
        "chaos run failed (seed {}): {}\n{table}",
        config.seed,
        problems.join("; ")
    );
    step!("chaos run passed (seed {})", config.seed);
}

/// What a run did besides its history.
struct Outcome {
    faults: nemesis::Faults,
    healed: bool,
    producers: workload::ProducersDone,
    consumers: workload::ConsumersDone,
    hws: Vec<(&'static str, i32, i64)>,
    /// Partitions whose high watermark the readers did not reach.
    lagging: Vec<String>,
    replica_problems: Vec<String>,
    logs: LogCounts,
}

/// The cluster, the workload and the nemesis, then the drain; the history
/// is complete on disk when this returns.
fn run(config: &Config, history_path: &Path) -> Outcome {
    let rec = Arc::new(Recorder {
        writer: Writer::create(history_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", history_path.display())),
        start: Instant::now(),
    });
    // Every node appends its segment fsyncs here (see power.rs); set before
    // any node starts, and inherited by each.
    std::env::set_var("RUNNEL_TEST_SYNC_LEDGER", config.out.join("sync-ledger"));
    // Declared before the cluster, so dropped after it (on a panic: the
    // nodes die first, then the file systems go).
    let disks = Disks::new();
    let mut c = Cluster::start_in_netns_prepared(3, SETTINGS, &|id, dir| disks.prepare(id, dir));
    for (topic, partitions) in workload::TOPICS {
        create_replicated(&c, topic, partitions);
    }
    let mut load = Workload::start(&c.bootstrap_all(), &rec);
    load.wait_running(500, Duration::from_secs(60));

    let mut rng = Rng::new(config.seed);
    let mut faults = nemesis::run(
        &mut c,
        &disks,
        &rec,
        &config.kinds,
        config.duration,
        &mut rng,
    );
    let healed = nemesis::heal(&mut c, &disks, &mut faults, HEAL_TIMEOUT);

    let producers = load.stop_producers();
    let hws = high_watermarks(&c);
    let lagging = load.wait_readers(&hws, DRAIN_TIMEOUT);
    let consumers = load.stop_consumers();
    rec.writer.flush().expect("flush the history");
    let replica_problems = replicas_identical(&c, REPLICAS_TIMEOUT);
    nemesis::note_crashes(&mut c, &mut faults);
    keep_logs(&c, &config.out);
    let logs = LogCounts::of(&c);
    c.kill_all();
    disks.release(config.keep_data.then_some(config.out.as_path()));
    Outcome {
        faults,
        healed,
        producers,
        consumers,
        hws,
        lagging,
        replica_problems,
        logs,
    }
}

/// Copies every node's log next to the history: the cluster's directory
/// goes when the run passes, and a passing run's spurious elections are
/// still worth a look.
fn keep_logs(c: &Cluster, out: &Path) {
    for node in &c.nodes {
        let path = out.join(format!("node{}.log", node.id));
        if let Err(e) = std::fs::write(&path, node.log()) {
            step!(
                "could not keep node {}'s log in {}: {e}",
                node.id,
                path.display()
            );
        }
    }
}

impl Outcome {
    /// Why the run fails; empty if it passes.
    fn problems(&self, config: &Config, report: &checker::Report) -> Vec<String> {
        let mut problems = Vec::new();
        if !report.is_valid() {
            problems.push(format!("{} anomalies", report.anomalies_total()));
        }
        let never_fired: Vec<&str> = config
            .names()
            .into_iter()
            .filter(|n| self.faults.fired.get(n).is_none_or(|&f| f == 0))
            .collect();
        if !never_fired.is_empty() {
            problems.push(format!("faults that never fired: {never_fired:?}"));
        }
        for crash in &self.faults.crashes {
            // The first line; the log tail went to the step log.
            problems.push(crash.lines().next().unwrap_or_default().to_string());
        }
        for p in &self.replica_problems {
            problems.push(format!("replicas differ: {p}"));
        }
        problems
    }

    /// The checker's table, then what the nemesis, the clients, the drain,
    /// the replicas and the node logs say.
    fn table(&self, config: &Config, report: &checker::Report, events: usize) -> String {
        let f = &self.faults;
        let rows = [
            report.table(),
            row("faults fired", &f.fired_text()),
            row(
                "health",
                &format!(
                    "waits for a healthy cluster before a fault: {} of {} timed out; \
                     healed at the end: {}",
                    f.health_timeouts, f.health_waits, self.healed
                ),
            ),
            row("clients", &self.producers.text()),
            row("", &self.consumers.text()),
            row("drain", &drain_text(&self.hws, &self.lagging)),
            row("replicas", &replicas_text(&self.replica_problems)),
            row("node logs", &self.logs.text()),
            row("run", &format!("seed {} ({events} events)", config.seed)),
        ];
        rows.join("\n")
    }

    /// summary.json: the checker's report and everything in the table.
    fn summary(
        &self,
        config: &Config,
        report: &checker::Report,
        problems: &[String],
    ) -> serde_json::Value {
        let f = &self.faults;
        json!({
            "report": report.to_json(),
            "seed": config.seed,
            "duration_s": config.duration.as_secs(),
            "nemeses": config.names(),
            "faults_fired": f.fired,
            "health_waits": f.health_waits,
            "health_timeouts": f.health_timeouts,
            "healed_at_end": self.healed,
            "crashes": f.crashes,
            "producers": self.producers.to_json(),
            "consumers": self.consumers.to_json(),
            "drain_lagging": self.lagging,
            "replica_mismatches": self.replica_problems,
            "node_logs": self.logs.to_json(),
            "problems": problems,
        })
    }
}

/// A row of the table, aligned with the checker's.
fn row(label: &str, text: &str) -> String {
    format!("{label:<13}{text}")
}

/// Every partition's high watermark, from its leader: where the readers
/// must get to.
fn high_watermarks(c: &Cluster) -> Vec<(&'static str, i32, i64)> {
    workload::partitions()
        .into_iter()
        .map(|(topic, p)| {
            let (leader, hw) = high_watermark(c, &ids(c), topic, p);
            step!("{topic}/{p}: high watermark {hw} (leader {leader})");
            (topic, p, hw)
        })
        .collect()
}

fn drain_text(hws: &[(&str, i32, i64)], lagging: &[String]) -> String {
    let marks: Vec<String> = hws
        .iter()
        .map(|(topic, p, hw)| format!("{topic}/{p} {hw}"))
        .collect();
    let reached = if lagging.is_empty() {
        "readers reached all of them".to_string()
    } else {
        format!("readers fell short: {}", lagging.join("; "))
    };
    format!("high watermarks {}; {reached}", marks.join("  "))
}

fn replica_dir(c: &Cluster, id: i32, topic: &str, p: i32) -> PathBuf {
    c.dir(id).join("data").join(format!("{topic}-{p}"))
}

/// Whether every replica of every partition holds, byte for byte (offsets,
/// CRC, leader epoch, length of each batch), what its leader holds below
/// the high watermark, and the leader's batches cover 0..HW. A follower may
/// still be fetching the last batches when this starts, so a difference
/// counts only if it lasts `within`. One line per partition that differs.
fn replicas_identical(c: &Cluster, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let problems: Vec<String> = workload::partitions()
            .into_iter()
            .filter_map(|(topic, p)| partition_differs(c, topic, p).err())
            .collect();
        if problems.is_empty() {
            step!("every replica holds the same batches below the high watermark");
            return problems;
        }
        if Instant::now() >= deadline {
            for problem in &problems {
                step!("replicas differ: {problem}");
            }
            return problems;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn partition_differs(c: &Cluster, topic: &str, p: i32) -> Result<(), String> {
    let (leader, hw) = high_watermark(c, &ids(c), topic, p);
    let replicas = states(c, &[leader], topic, p)
        .remove(&leader)
        .and_then(Result::ok)
        .map_or_else(|| ids(c), |s| s.replicas);
    let lists: BTreeMap<i32, Vec<DiskBatch>> = replicas
        .iter()
        .map(|&id| {
            let all = batches_on_disk(&replica_dir(c, id, topic, p));
            (id, all.into_iter().filter(|b| b.last < hw).collect())
        })
        .collect();
    let lead = &lists[&leader];
    let covered = lead.iter().try_fold(0i64, |next, b| {
        (b.base == next).then_some(b.last + 1).ok_or((next, *b))
    });
    match covered {
        Err((next, b)) => {
            return Err(format!(
                "{topic}/{p}: leader {leader} has {b:?} where offset {next} was expected (HW {hw})"
            ))
        }
        Ok(end) if end != hw => {
            return Err(format!(
                "{topic}/{p}: leader {leader}'s batches below the HW end at {end}, HW is {hw}"
            ))
        }
        Ok(_) => {}
    }
    for (&id, list) in &lists {
        if list == lead {
            continue;
        }
        let i = lead
            .iter()
            .zip(list)
            .position(|(a, b)| a != b)
            .unwrap_or(lead.len().min(list.len()));
        return Err(format!(
            "{topic}/{p} (HW {hw}): replica {id} differs from leader {leader} at batch {i}: \
             {:?} against the leader's {:?} ({} batches against {}); dir {}",
            list.get(i),
            lead.get(i),
            list.len(),
            lead.len(),
            replica_dir(c, id, topic, p).display()
        ));
    }
    Ok(())
}

fn replicas_text(problems: &[String]) -> String {
    if problems.is_empty() {
        return "identical below the high watermark on every partition".to_string();
    }
    format!("MISMATCH: {}", problems.join("; "))
}

/// Lines of the nodes' logs worth counting against the faults: fencings
/// and controller elections, of which those no fault explains are
/// spurious.
///
/// "broker fenced" is logged once the fence is committed; a controller that
/// was paused and no longer leads drops its decisions ("the liveness
/// decision is dropped"), counted apart. A restarted voter whose stored
/// vote is its own logs "controller elected ... active=true" for its old
/// term before it learns the new one, so elections are counted once per
/// term, re-claims apart.
#[derive(Default)]
struct LogCounts {
    /// "broker fenced" lines by fenced broker.
    fenced: BTreeMap<i32, usize>,
    /// Liveness decisions a controller that no longer led dropped.
    dropped: usize,
    /// Winner of each term with an election.
    elected: BTreeMap<i32, i32>,
    /// "active=true" lines for a term already counted.
    reclaimed: usize,
}

impl LogCounts {
    fn of(c: &Cluster) -> LogCounts {
        let mut counts = LogCounts::default();
        for node in &c.nodes {
            for line in node.log().lines() {
                counts.add(line);
            }
        }
        counts
    }

    fn add(&mut self, line: &str) {
        if line.contains("broker fenced") {
            let broker = field(line, "broker").unwrap_or(-1);
            *self.fenced.entry(broker).or_default() += 1;
        } else if line.contains("the liveness decision is dropped") {
            self.dropped += 1;
        } else if line.contains("controller elected") && line.contains("active=true") {
            let (Some(term), Some(leader)) = (field(line, "term"), field(line, "leader")) else {
                return;
            };
            if self.elected.insert(term, leader).is_some() {
                self.reclaimed += 1;
            }
        }
    }

    fn text(&self) -> String {
        let mut wins: BTreeMap<i32, usize> = BTreeMap::new();
        for leader in self.elected.values() {
            *wins.entry(*leader).or_default() += 1;
        }
        format!(
            "\"broker fenced\" {} by broker, liveness decisions dropped {}; elections {} by \
             winner, old terms re-claimed on restart {}",
            by_node(&self.fenced),
            self.dropped,
            by_node(&wins),
            self.reclaimed
        )
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "broker_fenced": self.fenced,
            "liveness_decisions_dropped": self.dropped,
            "elections_by_term": self.elected,
            "terms_reclaimed": self.reclaimed,
        })
    }
}

/// "total (node: count, ...)".
fn by_node(counts: &BTreeMap<i32, usize>) -> String {
    let parts: Vec<String> = counts.iter().map(|(id, n)| format!("{id}: {n}")).collect();
    format!("{} ({})", counts.values().sum::<usize>(), parts.join(", "))
}

/// The integer value of `name=` in a tracing line (`broker=2`).
fn field(line: &str, name: &str) -> Option<i32> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let digits: String = line[at..]
        .chars()
        .take_while(|ch| ch.is_ascii_digit() || *ch == '-')
        .collect();
    digits.parse().ok()
}
