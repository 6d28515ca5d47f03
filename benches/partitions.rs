//! Many partitions on a 3-node loopback cluster, RF=3, in topics of 100
//! partitions. For each count in `PARTITION_COUNTS` (default
//! "1000,10000"), on a fresh cluster:
//!
//! * create: from the first CreateTopics to every partition led with its
//!   full ISR, as Metadata shows it;
//! * resident memory of each node (VmRSS) once settled;
//! * idle CPU: the three nodes' CPU time over `IDLE_SECONDS` (default 10)
//!   with no client connected, as a percentage of one core, per node;
//! * restart: every node killed with SIGKILL and started again; the time
//!   until Metadata shows every partition led with its full ISR.
//!
//! `cargo bench --bench partitions`.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

mod support;

const PER_TOPIC: usize = 100;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// Creates `count` partitions as topics of `PER_TOPIC`, a batch of topics
/// per request, retrying while the cluster forms.
fn create(bootstrap: &str, count: usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let names: Vec<String> = (0..count.div_ceil(PER_TOPIC))
        .map(|i| format!("many-{i:03}"))
        .collect();
    let opts = || AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    for chunk in names.chunks(10) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut pending: Vec<&String> = chunk.iter().collect();
        while !pending.is_empty() {
            let topics: Vec<NewTopic> = pending
                .iter()
                .map(|n| NewTopic::new(n, PER_TOPIC as i32, TopicReplication::Fixed(3)))
                .collect();
            let res = rt.block_on(admin.create_topics(&topics, &opts()));
            if let Ok(results) = res {
                for r in results {
                    match r {
                        Ok(name) => pending.retain(|n| **n != name),
                        Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                            pending.retain(|n| **n != name)
                        }
                        Err(_) => {}
                    }
                }
            }
            assert!(Instant::now() < deadline, "cannot create {pending:?}");
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        eprint!(".");
    }
    eprintln!();
}

/// Waits until Metadata shows `count` partitions, each with a leader and
/// an ISR of 3; returns when it did.
fn settled(bootstrap: &str, count: usize) -> Instant {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(md) = c.fetch_metadata(None, Duration::from_secs(10)) {
            let ok = md
                .topics()
                .iter()
                .filter(|t| t.name().starts_with("many-"))
                .flat_map(|t| t.partitions())
                .filter(|p| p.leader() >= 0 && p.isr().len() == 3)
                .count();
            if ok >= count {
                return Instant::now();
            }
        }
        assert!(Instant::now() < deadline, "partitions did not settle");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let at = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after it.
    at(11) + at(12)
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn run(count: usize, idle: Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = support::start_cluster(dir.path(), 3, &[]);
    let start = Instant::now();
    create(&cluster.bootstrap, count);
    let created = settled(&cluster.bootstrap, count) - start;
    // Let the first checkpoints and ISR ticks pass before measuring.
    std::thread::sleep(Duration::from_secs(3));
    let pids: Vec<u32> = cluster.children.iter().map(|c| c.id()).collect();
    let rss: Vec<String> = pids.iter().map(|p| format!("{:.0}", rss_mib(*p))).collect();
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let t0 = Instant::now();
    std::thread::sleep(idle);
    let secs = t0.elapsed().as_secs_f64();
    let hz = clock_ticks_per_second();
    let cpu: Vec<String> = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| format!("{:.1}", (cpu_ticks(*p) - b) as f64 / hz / secs * 100.0))
        .collect();
    cluster.kill_and_restart();
    let t0 = Instant::now();
    let restarted = settled(&cluster.bootstrap, count) - t0;
    let pids: Vec<u32> = cluster.children.iter().map(|c| c.id()).collect();
    let rss_after: Vec<String> = pids.iter().map(|p| format!("{:.0}", rss_mib(*p))).collect();
    println!(
        "{count} partitions, RF=3, 3 nodes: created and led in {:.1} s; resident MiB per node \
         {}; idle CPU % of a core per node over {:.0} s: {}; after kill -9 of all nodes, all \
         led again in {:.1} s (resident MiB then {})",
        created.as_secs_f64(),
        rss.join("/"),
        secs,
        cpu.join("/"),
        restarted.as_secs_f64(),
        rss_after.join("/"),
    );
}

fn main() {
    let idle = Duration::from_secs(env_or("IDLE_SECONDS", "10").parse().expect("IDLE_SECONDS"));
    for count in env_or("PARTITION_COUNTS", "1000,10000").split(',') {
        run(count.trim().parse().expect("PARTITION_COUNTS"), idle);
    }
}
