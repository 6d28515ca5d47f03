//! The benchmark suite: the workloads Kafka users compare brokers with, each
//! with a warm-up and `SUITE_REPS` (3) repetitions, reported as the median
//! and the range (min–max) of each figure, next to the machine's own
//! ceilings measured in the same run, so that each throughput reads as a
//! fraction of what the disk or the loopback could do.
//!
//! `cargo bench --bench suite` or `make bench-suite`. Environment:
//! * `SUITE_SCALE` (1.0): scales record counts, byte counts and durations;
//!   `SUITE_SCALE=0.05` is a smoke run of a few minutes.
//! * `SUITE_ONLY`: comma-separated substrings; only the workloads whose name
//!   contains one of them run. The ceilings always run (they are what the
//!   fractions divide by).
//! * `SUITE_REPS` (3): measured repetitions; each workload first runs one
//!   warm-up at a quarter of the scale, which is discarded.
//! * `SUITE_JSON`: where the JSON goes; default `<cargo target dir>/suite.json`
//!   (the target dir the suite was built in, found from the runnel binary's
//!   path), else `bench-suite.json` in the current directory.
//! * `TMPDIR`: where the clusters' data and the ceiling files go (one
//!   filesystem for both); `CLUSTER_OVERRIDES` as for the other benches.
//!
//! Progress goes to stderr, the results table to stdout. A workload that
//! fails is reported with its error, the others still run, and the suite
//! exits non-zero at the end.
//!
//! Ceilings (no broker running; files in the clusters' temp dir):
//! * `ceiling/disk-write`: sequential 1 MiB writes, 1 GiB at scale 1, with no
//!   sync (MiB/s; mostly the page cache) and with an fdatasync after every
//!   MiB (MiB/s; the bound for fsynced appends, which Runnel's acks=-1 is).
//! * `ceiling/fdatasync-1k`: latency of an fdatasync after each 1 KiB append,
//!   100 appends/s for 10 s at scale 1: p50, p99 ms (bounds acks=-1 latency).
//! * `ceiling/loopback-tcp`: one sender thread to one receiver thread over
//!   127.0.0.1, 1 MiB writes for 5 s at scale 1 (MiB/s).
//!
//! Workloads (real `runnel serve` processes on loopback, started with
//! `support::start_cluster`; one 3-node cluster is shared by every 3-node
//! workload and one 1-node cluster by the 1-node one, each started when
//! first needed; every repetition uses fresh topics and deletes them after):
//! * `produce/*`, max throughput with `runnel producer-perf-test
//!   --throughput -1`: records/s, MiB/s, p50/p99 ms (send to
//!   acknowledgement), and broker CPU s/GB (utime+stime of every node from
//!   /proc/<pid>/stat around the run, summed, per 10^9 payload bytes; this is
//!   the "CPU per GB" workload, measured on every produce variant). 1,000,000
//!   records at scale 1. Base: 1 KiB records, 6 partitions, RF=3,
//!   min.insync.replicas=2, acks=all, enable.idempotence=true, linger.ms=5
//!   (librdkafka's default, set explicitly), one producer, unkeyed. Each
//!   variant changes one thing: `1-node-rf1` (a 1-node cluster, RF=1, the
//!   comparison figure), `rf1` (RF=1 on 3 nodes), `acks1` (acks=1, which
//!   librdkafka only allows with idempotence off), `100B` (100-byte records,
//!   5,000,000 of them), `100-partitions`, `8-producers` (8 perf-test
//!   processes in parallel with 1/8 of the records each; records/s and MiB/s
//!   are the sum of the 8, p50 the median of their p50s, p99 the worst of
//!   their p99s), `keyed` (perf-test has no key flag, so a librdkafka
//!   producer in this suite does the same sends with keys cycling over
//!   100,000 distinct values, latency from send() to the delivery report).
//! * `ack/{100,500,2000}rps`, send-to-acknowledgement latency at a fixed
//!   rate, one record at a time (`linger.ms=0`), 1 KiB records, one
//!   partition, RF=3, min.insync.replicas=2, acks=all, idempotence off
//!   (librdkafka's default; `ack/100rps-idempotent` with it on), 30 s at
//!   scale 1: p50/p99/p99.9/max ms from each record's scheduled send time
//!   to its delivery report.
//! * `e2e/{5,20,50}MBps`, end-to-end latency at a fixed rate: 1 KiB records,
//!   6 partitions, RF=3, min.insync.replicas=2, acks=all, idempotent,
//!   linger.ms=1 (OpenMessaging Benchmark's setting), 30 s at scale 1. Each
//!   record's send time is fixed by the schedule and written into its
//!   payload; a consumer thread (assigned all partitions) takes receive time
//!   minus intended send time, so a stall counts in full (no coordinated
//!   omission). p50/p99/p99.9/max ms, the achieved rate (records received
//!   per second between the first receipt and the last, MiB/s) and
//!   achieved/target (%): below 100% the producer did not keep up.
//! * `consume/backlog`: a 2 GiB backlog (at scale 1) of 1 KiB records is
//!   produced to a 6-partition RF=3 topic, then `runnel consumer-perf-test`
//!   reads it, first one consumer, then a group of 3 processes sharing a
//!   `--group` (each asked for a third), while a producer-perf-test writes
//!   20 MiB/s to the same topic. MiB/s is consumer-perf-test's
//!   fetch.MB.sec (time in the group join left out); the group's is the
//!   sum of the MiB the three read over the longest fetch time. The
//!   background producer's rate (mean of its 5 s windows) is reported too.
//!
//! Fractions: produce and e2e MiB/s over the fdatasync ceiling, divided by
//! RF when RF=3 (the three replicas share the one disk); consume MiB/s over
//! the loopback ceiling. MiB is 2^20 bytes throughout (perf-test's "MB").
//! The fdatasync ceiling is a reference, not a hard bound: acks=1 does not
//! wait for an fsync at all, and group commit syncs more than 1 MiB at a
//! time under load, so a row can read above 100%.
//!
//! Timing on a 2-core machine: `SUITE_SCALE=0.1 SUITE_REPS=1` about 2
//! minutes, the full suite (scale 1, 3 repetitions) roughly 45 minutes.

use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

mod support;

#[path = "suite/ack.rs"]
mod ack;
#[path = "suite/ceilings.rs"]
mod ceilings;
#[path = "suite/consume.rs"]
mod consume;
#[path = "suite/e2e.rs"]
mod e2e;
#[path = "suite/produce.rs"]
mod produce;
#[path = "suite/util.rs"]
mod util;

/// What a throughput figure is compared with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// Sequential writes with an fdatasync per MiB, divided by `rf`.
    DiskSync { rf: u32 },
    /// One TCP stream over 127.0.0.1.
    Loopback,
}

/// One named measurement of one run.
#[derive(Clone, Debug)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub limit: Option<Limit>,
}

impl Figure {
    pub fn new(name: impl Into<String>, value: f64, unit: &'static str) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit,
            limit: None,
        }
    }

    pub fn against(mut self, limit: Limit) -> Figure {
        self.limit = Some(limit);
        self
    }
}

/// What one run of a workload gets.
pub struct Ctx<'a> {
    /// `SUITE_SCALE`, or a quarter of it for the warm-up.
    pub scale: f64,
    /// The cluster, for workloads that need one.
    pub cluster: Option<&'a support::Cluster>,
    /// A scratch directory on the clusters' filesystem.
    pub dir: &'a Path,
    /// Unique per run, for topic names.
    pub tag: String,
}

impl Ctx<'_> {
    pub fn cluster(&self) -> Result<&support::Cluster, String> {
        self.cluster.ok_or_else(|| "no cluster".to_string())
    }

    /// `base × scale`, at least `min`.
    pub fn count(&self, base: f64, min: u64) -> u64 {
        ((base * self.scale) as u64).max(min)
    }

    /// A fresh topic name for this run.
    pub fn topic(&self, what: &str) -> String {
        format!("{what}-{}", self.tag)
    }
}

pub type RunFn = Box<dyn Fn(&Ctx) -> Result<Vec<Figure>, String>>;

/// A workload: a name, how many nodes its cluster has (0: none), and the
/// function that runs it once.
pub struct Workload {
    pub name: &'static str,
    pub nodes: usize,
    pub run: RunFn,
}

/// Every workload, in the order they run; the ceilings first.
fn workloads() -> Vec<Workload> {
    let mut w = ceilings::workloads();
    w.extend(produce::workloads());
    w.extend(ack::workloads());
    w.extend(e2e::workloads());
    w.extend(consume::workloads());
    w
}

/// A figure's values over the measured repetitions.
struct Row {
    workload: &'static str,
    figure: String,
    unit: &'static str,
    limit: Option<Limit>,
    values: Vec<f64>,
}

impl Row {
    fn median(&self) -> f64 {
        util::median(&self.values)
    }
    fn min(&self) -> f64 {
        self.values.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.values
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// The ceilings' medians, once measured.
#[derive(Default)]
struct Ceilings {
    disk_sync: Option<f64>,
    loopback: Option<f64>,
}

impl Ceilings {
    fn from_rows(rows: &[Row]) -> Ceilings {
        let find = |w: &str, f: &str| {
            rows.iter()
                .find(|r| r.workload == w && r.figure == f)
                .map(Row::median)
        };
        Ceilings {
            disk_sync: find(ceilings::DISK, ceilings::DISK_SYNC),
            loopback: find(ceilings::LOOPBACK, ceilings::LOOPBACK_FIG),
        }
    }

    /// The ceiling a figure is compared with, and its label.
    fn of(&self, limit: Limit) -> Option<(f64, String)> {
        match limit {
            Limit::DiskSync { rf: 1 } => self.disk_sync.map(|c| (c, "disk fdatasync".into())),
            Limit::DiskSync { rf } => self
                .disk_sync
                .map(|c| (c / f64::from(rf), format!("disk fdatasync/{rf}"))),
            Limit::Loopback => self.loopback.map(|c| (c, "loopback".into())),
        }
    }
}

struct Env {
    scale: f64,
    reps: usize,
    only: Vec<String>,
    json: PathBuf,
    json_default: &'static str,
}

fn env() -> Env {
    let scale = std::env::var("SUITE_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0);
    let reps = std::env::var("SUITE_REPS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|r| *r > 0)
        .unwrap_or(3);
    let only = std::env::var("SUITE_ONLY")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let (json, json_default) = match std::env::var_os("SUITE_JSON") {
        Some(p) => (PathBuf::from(p), "from SUITE_JSON"),
        None => match target_dir() {
            Some(t) => (t.join("suite.json"), "<cargo target dir>/suite.json"),
            None => (PathBuf::from("bench-suite.json"), "./bench-suite.json"),
        },
    };
    Env {
        scale,
        reps,
        only,
        json,
        json_default,
    }
}

/// The cargo target dir: the runnel binary is `<target>/<profile>/runnel`.
fn target_dir() -> Option<PathBuf> {
    let bin = Path::new(env!("CARGO_BIN_EXE_runnel"));
    let dir = bin.parent()?.parent()?;
    dir.is_dir().then(|| dir.to_path_buf())
}

/// What a caught panic said.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

/// Runs one repetition, turning a panic into an error.
fn run_once(w: &Workload, ctx: &Ctx) -> Result<Vec<Figure>, String> {
    catch_unwind(AssertUnwindSafe(|| (w.run)(ctx))).unwrap_or_else(|p| Err(panic_message(&*p)))
}

/// Starts (once) the cluster of `n` nodes.
fn cluster_for<'a>(
    clusters: &'a mut Vec<(usize, Result<support::Cluster, String>)>,
    root: &Path,
    n: usize,
) -> Result<&'a support::Cluster, String> {
    if !clusters.iter().any(|(k, _)| *k == n) {
        eprintln!("[suite] starting a {n}-node cluster");
        let dir = root.join(format!("cluster{n}"));
        let started = std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                catch_unwind(|| support::start_cluster(&dir, n, &[])).map_err(|p| {
                    format!(
                        "could not start the {n}-node cluster: {}",
                        panic_message(&*p)
                    )
                })
            })
            .and_then(|c| util::wait_for_brokers(&c.bootstrap, n).map(|()| c));
        clusters.push((n, started));
    }
    match &clusters
        .iter()
        .find(|(k, _)| *k == n)
        .expect("just added")
        .1
    {
        Ok(c) => Ok(c),
        Err(e) => Err(e.clone()),
    }
}

fn main() {
    let env = env();
    let root = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    eprintln!(
        "[suite] scale {} reps {} in {} ; JSON to {} ({})",
        env.scale,
        env.reps,
        root.path().display(),
        env.json.display(),
        env.json_default
    );
    let all = workloads();
    let selected: Vec<&Workload> = all
        .iter()
        .filter(|w| {
            w.nodes == 0 || env.only.is_empty() || env.only.iter().any(|o| w.name.contains(o))
        })
        .collect();
    let mut clusters: Vec<(usize, Result<support::Cluster, String>)> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut errors: Vec<(&'static str, String)> = Vec::new();
    let mut run_id = 0u32;
    for (wi, w) in selected.iter().enumerate() {
        let t0 = Instant::now();
        let res = (|| -> Result<(), String> {
            let cluster = match w.nodes {
                0 => None,
                n => Some(cluster_for(&mut clusters, root.path(), n)?),
            };
            let mut values: Vec<Vec<Figure>> = Vec::new();
            for rep in 0..=env.reps {
                run_id += 1;
                let (label, scale) = if rep == 0 {
                    ("warm-up".to_string(), env.scale * 0.25)
                } else {
                    (format!("rep {rep}/{}", env.reps), env.scale)
                };
                eprintln!(
                    "[suite] {}/{} {} {label} (t+{:.0}s)",
                    wi + 1,
                    selected.len(),
                    w.name,
                    started.elapsed().as_secs_f64()
                );
                let scratch = root.path().join(format!("scratch{run_id}"));
                std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
                let ctx = Ctx {
                    scale,
                    cluster,
                    dir: &scratch,
                    tag: format!("r{run_id}"),
                };
                let figs = run_once(w, &ctx).map_err(|e| format!("{label}: {e}"));
                let _ = std::fs::remove_dir_all(&scratch);
                let figs = figs?;
                for f in &figs {
                    eprintln!("[suite]     {} = {:.3} {}", f.name, f.value, f.unit);
                }
                if rep > 0 {
                    values.push(figs);
                }
            }
            // One row per figure name, in the order they first appear.
            let mut mine: Vec<Row> = Vec::new();
            for f in values.iter().flatten() {
                match mine.iter_mut().find(|r| r.figure == f.name) {
                    Some(r) => r.values.push(f.value),
                    None => mine.push(Row {
                        workload: w.name,
                        figure: f.name.clone(),
                        unit: f.unit,
                        limit: f.limit,
                        values: vec![f.value],
                    }),
                }
            }
            rows.extend(mine);
            Ok(())
        })();
        if let Err(e) = res {
            eprintln!("[suite] {} FAILED: {e}", w.name);
            errors.push((w.name, e));
        }
        eprintln!(
            "[suite] {} took {:.0} s",
            w.name,
            t0.elapsed().as_secs_f64()
        );
    }
    drop(clusters);
    let ceilings = Ceilings::from_rows(&rows);
    print!("{}", table(&rows, &ceilings, &errors));
    let doc = json_doc(&env, &rows, &ceilings, &errors);
    match std::fs::write(
        &env.json,
        serde_json::to_string_pretty(&doc).expect("json") + "\n",
    ) {
        Ok(()) => eprintln!("[suite] wrote {}", env.json.display()),
        Err(e) => {
            eprintln!("[suite] cannot write {}: {e}", env.json.display());
            errors.push(("json", e.to_string()));
        }
    }
    eprintln!(
        "[suite] done in {:.0} s, {} workload(s) failed",
        started.elapsed().as_secs_f64(),
        errors.len()
    );
    if !errors.is_empty() {
        // exit() runs no destructors: remove the data dir first.
        drop(root);
        std::process::exit(1);
    }
}

/// A figure in a few significant digits.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn fraction(r: &Row, c: &Ceilings) -> Option<(f64, String)> {
    let (ceiling, label) = c.of(r.limit?)?;
    (ceiling > 0.0).then(|| (r.median() / ceiling, label))
}

fn table(rows: &[Row], c: &Ceilings, errors: &[(&str, String)]) -> String {
    let header = [
        "workload",
        "figure",
        "median",
        "min",
        "max",
        "unit",
        "of ceiling",
    ];
    let mut lines: Vec<[String; 7]> = vec![header.map(str::to_string)];
    for r in rows {
        let frac = fraction(r, c)
            .map(|(f, l)| format!("{:.0}% of {l}", f * 100.0))
            .unwrap_or_default();
        lines.push([
            r.workload.to_string(),
            r.figure.clone(),
            num(r.median()),
            num(r.min()),
            num(r.max()),
            r.unit.to_string(),
            frac,
        ]);
    }
    let mut width = [0usize; 7];
    for l in &lines {
        for (w, cell) in width.iter_mut().zip(l) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        out.push('|');
        for (j, (cell, w)) in l.iter().zip(width).enumerate() {
            if (2..=4).contains(&j) {
                let _ = write!(out, " {cell:>w$} |");
            } else {
                let _ = write!(out, " {cell:<w$} |");
            }
        }
        out.push('\n');
        if i == 0 {
            out.push('|');
            for (j, w) in width.iter().enumerate() {
                let dashes = "-".repeat(*w);
                if (2..=4).contains(&j) {
                    let _ = write!(out, " {}: |", &dashes[1..]);
                } else {
                    let _ = write!(out, " {dashes} |");
                }
            }
            out.push('\n');
        }
    }
    for (w, e) in errors {
        let _ = writeln!(out, "FAILED {w}: {e}");
    }
    out
}

fn json_doc(env: &Env, rows: &[Row], c: &Ceilings, errors: &[(&str, String)]) -> Value {
    let results: Vec<Value> = rows
        .iter()
        .map(|r| {
            let frac = fraction(r, c);
            json!({
                "workload": r.workload,
                "figure": r.figure,
                "unit": r.unit,
                "median": r.median(),
                "min": r.min(),
                "max": r.max(),
                "values": r.values,
                "ceiling": frac.as_ref().map(|(_, l)| l.clone()),
                "fraction_of_ceiling": frac.map(|(f, _)| f),
            })
        })
        .collect();
    let ceilings: Vec<Value> = rows
        .iter()
        .filter(|r| r.workload.starts_with("ceiling/"))
        .map(|r| {
            json!({
                "name": format!("{} {}", r.workload, r.figure),
                "unit": r.unit,
                "median": r.median(),
                "min": r.min(),
                "max": r.max(),
            })
        })
        .collect();
    let manifest = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(manifest)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]);
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "suite": "runnel benches/suite.rs",
        "commit": commit,
        "dirty": dirty,
        "date": util::utc_date(secs),
        "scale": env.scale,
        "reps": env.reps,
        "only": env.only,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "ceilings": ceilings,
        "results": results,
        "errors": errors
            .iter()
            .map(|(w, e)| json!({"workload": w, "error": e}))
            .collect::<Vec<_>>(),
    })
}
