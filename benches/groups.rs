//! Consumer-group figures against a real `runnel serve`, with librdkafka
//! consumers at their default settings (heartbeat.interval.ms 3000):
//!
//! * rebalance time for a group of 3 consumers on a 6-partition topic when a
//!   4th joins and when one leaves: from the join (subscribe) or the leave
//!   (close) to the moment every remaining member has its new assignment,
//!   median of 5 of each;
//! * offset commit throughput: synchronous commits by one member, and
//!   asynchronous ones awaited at the end.
//!
//! `cargo bench --bench groups` (env HEARTBEAT_MS sets the members'
//! heartbeat.interval.ms: members learn of a rebalance on their next
//! heartbeat, so that interval bounds the figure, as in Kafka's classic
//! protocol).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

mod support;

const TOPIC: &str = "rebalance";
const GROUP: &str = "bench-group";
const PARTITIONS: usize = 6;

/// Each member's latest assignment and when it arrived.
#[derive(Clone, Default)]
struct Assignments(Arc<Mutex<Vec<(usize, Instant, usize)>>>);

struct Ctx {
    id: usize,
    log: Assignments,
}

impl ClientContext for Ctx {}
impl ConsumerContext for Ctx {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            self.log
                .0
                .lock()
                .unwrap()
                .push((self.id, Instant::now(), tpl.count()));
        }
    }
}

struct Member {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

fn start_member(bootstrap: &str, id: usize, log: Assignments) -> Member {
    let stop = Arc::new(AtomicBool::new(false));
    let c: BaseConsumer<Ctx> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set(
            "heartbeat.interval.ms",
            std::env::var("HEARTBEAT_MS").unwrap_or_else(|_| "3000".into()),
        )
        .create_with_context(Ctx { id, log })
        .expect("consumer");
    c.subscribe(&[TOPIC]).expect("subscribe");
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        while !s.load(Ordering::Acquire) {
            let _ = c.poll(Duration::from_millis(50));
        }
        // Dropping the consumer closes it: LeaveGroup.
        drop(c);
    });
    Member { stop, thread }
}

/// Waits until every member in `members` got an assignment after `since`
/// and together they hold every partition; returns when the last arrived.
fn settled(log: &Assignments, members: &[usize], since: Instant) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        {
            let l = log.0.lock().unwrap();
            let mut last = since;
            let mut total = 0;
            let all = members.iter().all(|m| {
                match l.iter().rev().find(|(id, at, _)| id == m && *at >= since) {
                    Some((_, at, n)) => {
                        last = last.max(*at);
                        total += n;
                        true
                    }
                    None => false,
                }
            });
            if all && total == PARTITIONS {
                return last;
            }
        }
        assert!(Instant::now() < deadline, "the group did not settle");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn median(mut v: Vec<u128>) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bootstrap = format!("127.0.0.1:{}", support::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["serve", "--override"])
        .arg(format!("listeners=PLAINTEXT://{bootstrap}"))
        .arg("--override")
        .arg(format!("log.dirs={}", dir.path().display()))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn runnel");
    support::create_topic(&bootstrap, TOPIC, PARTITIONS as i32, 1, &[]);

    let log = Assignments::default();
    let mut members: Vec<(usize, Member)> = (0..3)
        .map(|id| (id, start_member(&bootstrap, id, log.clone())))
        .collect();
    let t = Instant::now() - Duration::from_secs(3600);
    settled(&log, &[0, 1, 2], t);
    let (mut joins, mut leaves) = (Vec::new(), Vec::new());
    for round in 0..5 {
        let t0 = Instant::now();
        let joining = 3 + round;
        members.push((joining, start_member(&bootstrap, joining, log.clone())));
        let ids: Vec<usize> = members.iter().map(|(id, _)| *id).collect();
        let took = settled(&log, &ids, t0) - t0;
        eprintln!("  round {round}: join settled in {} ms", took.as_millis());
        joins.push(took.as_millis());

        let (_, leaving) = members.remove(0);
        let t0 = Instant::now();
        leaving.stop.store(true, Ordering::Release);
        let ids: Vec<usize> = members.iter().map(|(id, _)| *id).collect();
        let took = settled(&log, &ids, t0) - t0;
        let _ = leaving.thread.join();
        eprintln!("  round {round}: leave settled in {} ms", took.as_millis());
        leaves.push(took.as_millis());
    }
    let hb = std::env::var("HEARTBEAT_MS").unwrap_or_else(|_| "3000".into());
    println!("rebalance, group of 3 on {PARTITIONS} partitions, heartbeat.interval.ms={hb}: a 4th joins: median {} ms {joins:?}; one leaves: median {} ms {leaves:?}", median(joins.clone()), median(leaves.clone()));
    for (_, m) in members {
        m.stop.store(true, Ordering::Release);
        let _ = m.thread.join();
    }

    // Commit throughput: one member of its own group, all partitions.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "bench-commits")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS as i32 {
        tpl.add_partition(TOPIC, p);
    }
    c.assign(&tpl).expect("assign");
    let n = 2000;
    let commit = |i: i64, mode: CommitMode| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, (i % PARTITIONS as i64) as i32, Offset::Offset(i))
            .expect("tpl");
        c.commit(&tpl, mode)
    };
    let start = Instant::now();
    for i in 0..n {
        commit(i, CommitMode::Sync).expect("commit");
    }
    let sync_rate = n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for i in 0..n {
        commit(n + i, CommitMode::Async).expect("commit");
    }
    // A final synchronous commit returns after the async ones before it.
    commit(2 * n, CommitMode::Sync).expect("commit");
    let async_rate = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "offset commits (one partition each, one member): sync {sync_rate:.0}/s, async {async_rate:.0}/s"
    );
    let _ = child.kill();
    let _ = child.wait();
}
