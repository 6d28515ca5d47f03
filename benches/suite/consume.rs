//! Consuming a backlog with `runnel consumer-perf-test`, one consumer and
//! then a group of three, while a producer keeps writing 20 MiB/s to the
//! same topic.

use std::process::Command;

use crate::produce::{deadline, parse_summary, producer_props, spawn_perf};
use crate::util::{self, Running, MIB};
use crate::{support, Ctx, Figure, Limit, Workload};

const RECORD: u64 = 1024;
/// Background producer rate, MiB/s.
const BACKGROUND_MIB: f64 = 20.0;

pub fn workloads() -> Vec<Workload> {
    vec![Workload {
        name: "consume/backlog",
        nodes: 3,
        run: Box::new(run),
    }]
}

/// One consumer-perf-test's result line.
#[derive(Debug)]
struct Consumed {
    mb: f64,
    messages: u64,
    fetch_ms: f64,
    fetch_mb_per_sec: f64,
}

/// The line after the `start.time, end.time, data.consumed.in.MB, MB.sec,
/// data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms,
/// fetch.MB.sec, fetch.nMsg.sec` header.
fn parse_consumed(out: &str) -> Result<Consumed, String> {
    let mut lines = out
        .lines()
        .skip_while(|l| !l.starts_with("start.time, end.time"));
    lines.next();
    let line = lines
        .find(|l| l.split(", ").count() == 10)
        .ok_or_else(|| format!("no result line in: {}", util::tail(out, 3)))?;
    let f: Vec<&str> = line.split(", ").collect();
    let num = |i: usize| {
        f[i].trim()
            .parse::<f64>()
            .map_err(|e| format!("column {i} of {line:?}: {e}"))
    };
    Ok(Consumed {
        mb: num(2)?,
        messages: num(4)? as u64,
        fetch_ms: num(7)?,
        fetch_mb_per_sec: num(8)?,
    })
}

fn spawn_consumer(bootstrap: &str, topic: &str, group: &str, n: u64) -> Result<Running, String> {
    Running::spawn(
        "consumer-perf-test",
        Command::new(env!("CARGO_BIN_EXE_runnel"))
            .arg("consumer-perf-test")
            .args(["--bootstrap-server", bootstrap])
            .args(["--topic", topic])
            .args(["--group", group])
            .args(["--messages", &n.to_string()]),
    )
}

/// Runs `consumers` consumer-perf-tests in one group, `n` messages between
/// them; the MiB they read and the longest fetch time (ms).
fn consume_group(
    bootstrap: &str,
    topic: &str,
    group: &str,
    consumers: u64,
    n: u64,
) -> Result<Vec<Consumed>, String> {
    let each = n.div_ceil(consumers);
    let running = (0..consumers)
        .map(|_| spawn_consumer(bootstrap, topic, group, each))
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = deadline(n * RECORD);
    let mut out = Vec::new();
    for r in running {
        let c = r.wait(timeout).and_then(|f| parse_consumed(&f.stdout))?;
        if c.messages < each {
            return Err(format!(
                "a consumer of {group} read {} of {each} messages (timed out)",
                c.messages
            ));
        }
        out.push(c);
    }
    Ok(out)
}

/// The mean MB/sec of a perf-test's 5 s progress lines, if it printed any.
fn window_rate(out: &str) -> Option<f64> {
    let re = regex::Regex::new(
        r"^\d+ records sent, [\d.]+ records/sec \(([\d.]+) MB/sec\), [\d.]+ ms avg latency, [\d.]+ ms max latency\.$",
    )
    .expect("regex");
    let rates: Vec<f64> = out
        .lines()
        .filter_map(|l| re.captures(l))
        .filter_map(|c| c[1].parse().ok())
        .collect();
    (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64)
}

fn run(ctx: &Ctx) -> Result<Vec<Figure>, String> {
    let cluster = ctx.cluster()?;
    let topic = ctx.topic("consume-backlog");
    support::create_topic(
        &cluster.bootstrap,
        &topic,
        6,
        3,
        &[("min.insync.replicas", "2")],
    );
    let result = measure(ctx, &cluster.bootstrap, &topic);
    util::delete_topics(&cluster.bootstrap, &[&topic]);
    result
}

fn measure(ctx: &Ctx, bootstrap: &str, topic: &str) -> Result<Vec<Figure>, String> {
    let n = ctx.count(2.0 * 1024.0 * MIB / RECORD as f64, 3000);
    let props = producer_props(bootstrap, "all");
    eprintln!("[suite]     producing a backlog of {n} records");
    let backlog = spawn_perf(topic, n, RECORD, -1.0, &props)?
        .wait(deadline(n * RECORD))
        .and_then(|f| parse_summary(&f.stdout))?;
    let rate = BACKGROUND_MIB * MIB / RECORD as f64;
    // More than it will have time to send; killed once the consumers are done.
    let background = spawn_perf(topic, (rate * 3600.0) as u64, RECORD, rate, &props)?;
    let single = consume_group(bootstrap, topic, &format!("{topic}-single"), 1, n);
    let group = single
        .as_ref()
        .map_err(|e| e.clone())
        .and_then(|_| consume_group(bootstrap, topic, &format!("{topic}-group3"), 3, n));
    let bg = background.kill();
    let (single, group) = (single?, group?);
    let group_mib: f64 = group.iter().map(|c| c.mb).sum();
    let group_ms = group.iter().map(|c| c.fetch_ms).fold(1.0, f64::max);
    let mut figs = vec![
        Figure::new("backlog produce", backlog.mb_per_sec, "MiB/s")
            .against(Limit::DiskSync { rf: 3 }),
        Figure::new("1 consumer", single[0].fetch_mb_per_sec, "MiB/s").against(Limit::Loopback),
        Figure::new("group of 3", group_mib / (group_ms / 1000.0), "MiB/s")
            .against(Limit::Loopback),
    ];
    if let Some(r) = window_rate(&bg.stdout) {
        figs.push(Figure::new("background producer", r, "MiB/s"));
    }
    Ok(figs)
}
