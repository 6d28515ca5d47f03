//! The scenario users run to learn Kafka consumer groups, with separate
//! consumer processes (kcat, librdkafka's balanced consumer) so that one can
//! be killed with SIGKILL:
//!
//! two consumers in `group1` on a one-partition topic: one gets every
//! message; `kill -9` it and the other takes over from the last committed
//! offset; a consumer in `group0` reads the whole topic from the start; the
//! topic grows to two partitions and the two `group1` consumers share them.
//!
//! It runs twice: with kcat as the consumers, and with consumer processes
//! built on the `rdkafka` crate (this test binary started again as
//! `scenario_consumer_process`, so that it too can be killed with SIGKILL).

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, Node};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message;

/// Which client the consumer processes are.
#[derive(Clone, Copy, Debug)]
enum Client {
    Kcat,
    Rdkafka,
}

/// Set in the environment of a consumer process started by this test
/// binary: `bootstrap`, `group`, `topic` and output file, `|`-separated.
const CONSUMER_ENV: &str = "RUNNEL_SCENARIO_CONSUMER";

struct Consumer {
    child: Child,
    out: PathBuf,
}

impl Consumer {
    /// A consumer process in `group` subscribed to `topic`, printing
    /// `partition offset value` per record to a file.
    fn start(
        client: Client,
        dir: &Path,
        bootstrap: &str,
        group: &str,
        name: &str,
        topic: &str,
    ) -> Consumer {
        let out = dir.join(format!("{name}.out"));
        let child = match client {
            Client::Kcat => Self::kcat(bootstrap, group, topic, &out),
            Client::Rdkafka => Command::new(std::env::current_exe().expect("test binary"))
                .args(["--exact", "scenario_consumer_process", "--ignored"])
                .args(["--nocapture", "--test-threads=1"])
                .env(
                    CONSUMER_ENV,
                    format!("{bootstrap}|{group}|{topic}|{}", out.display()),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the test binary as a consumer"),
        };
        step!("{client:?} consumer {name} in {group}: pid {}", child.id());
        Consumer { child, out }
    }

    /// `kcat -G group topic`.
    fn kcat(bootstrap: &str, group: &str, topic: &str, out: &Path) -> Child {
        Command::new("kcat")
            .args(["-b", bootstrap, "-G", group, "-u", "-q"])
            // Not `-o beginning`: with -G kcat would apply it to every assignment,
            // ignoring committed offsets.
            .args(["-X", "auto.offset.reset=earliest"])
            .args(["-f", "%p %o %s\\n"])
            .args([
                "-X",
                "session.timeout.ms=6000",
                "-X",
                "heartbeat.interval.ms=500",
            ])
            // No `-X auto.commit.interval.ms`: kcat 1.7 sets that name on the
            // legacy topic-level property (`-X dump` shows the global one
            // still at 5000), so the balanced consumer auto-commits every 5 s
            // whatever it says; the test waits for the commit instead.
            .args(["-X", "topic.metadata.refresh.interval.ms=1000"])
            .arg(topic)
            .stdout(Stdio::from(File::create(out).expect("output file")))
            .stderr(Stdio::null())
            .spawn()
            .expect("kcat must be installed (make deps installs it)")
    }

    /// (partition, offset, value) of every record this consumer printed.
    fn records(&self) -> Vec<(i32, i64, String)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, ' ');
                Some((
                    it.next()?.parse().ok()?,
                    it.next()?.parse().ok()?,
                    it.next()?.to_string(),
                ))
            })
            .collect()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn produce(bootstrap: &str, topic: &str, values: &[String], keyed: bool) {
    let mut kcat = Command::new("kcat")
        .args(["-b", bootstrap, "-P", "-t", topic])
        .args(if keyed { vec!["-K", ":"] } else { vec![] })
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat -P");
    {
        let stdin = kcat.stdin.as_mut().expect("stdin");
        for v in values {
            writeln!(stdin, "{v}").expect("write to kcat");
        }
    }
    assert!(kcat.wait().expect("kcat -P").success(), "kcat -P failed");
}

/// `runnel consumer-groups --describe` rows of `group`, split on whitespace:
/// GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID ...
fn describe(bootstrap: &str, group: &str) -> Vec<Vec<String>> {
    let Ok(out) = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["consumer-groups", "--bootstrap-server", bootstrap])
        .args(["--describe", "--group", group])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{group} ")))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn runnel(bootstrap: &str, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(args)
        .args(["--bootstrap-server", bootstrap])
        .output()
        .expect("runnel");
    assert!(
        out.status.success(),
        "runnel {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const WAIT: Duration = Duration::from_secs(40);

/// The consumer process of the rdkafka runs: started by `Consumer::start`
/// with `CONSUMER_ENV` set, it consumes in its group (auto-committing every
/// second, as kcat's consumers auto-commit) until it is killed.
#[test]
#[ignore = "the consumer process that the scenario test starts; not a test of its own"]
fn scenario_consumer_process() {
    let spec = std::env::var(CONSUMER_ENV).expect("started by the scenario test");
    let [bootstrap, group, topic, out]: [&str; 4] = spec
        .split('|')
        .collect::<Vec<_>>()
        .try_into()
        .expect("bootstrap|group|topic|file");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .expect("output file");
    loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            writeln!(file, "{} {} {value}", m.partition(), m.offset()).expect("write");
            file.flush().expect("flush");
        }
    }
}

#[test]
fn the_scenario_with_kcat() {
    two_consumers_failover_second_group_and_a_new_partition(Client::Kcat);
}

#[test]
fn the_scenario_with_the_rdkafka_crate() {
    two_consumers_failover_second_group_and_a_new_partition(Client::Rdkafka);
}

fn two_consumers_failover_second_group_and_a_new_partition(client: Client) {
    // The default initial rebalance delay (3 s) lets both consumers, started
    // together, join the group's first generation: one rebalance, not two.
    let node = Node::start(&[]);
    let bs = node.bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    runnel(
        &bs,
        &["topics", "--create", "--topic", "test", "--partitions", "1"],
    );
    let a = Consumer::start(client, dir.path(), &bs, "group1", "a", "test");
    let b = Consumer::start(client, dir.path(), &bs, "group1", "b", "test");
    eventually(
        WAIT,
        "group1 to be stable with the partition assigned",
        || {
            // A row for partition 0 that names its consumer.
            describe(&bs, "group1")
                .iter()
                .any(|r| r.get(6).is_some_and(|c| c != "-"))
                .then_some(())
        },
    );
    let first: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    produce(&bs, "test", &first, false);
    // One partition: one consumer gets all ten, the other nothing.
    let a_owns = eventually(WAIT, "one group1 consumer to read all 10", || {
        match (a.records().len(), b.records().len()) {
            (10, 0) => Some(true),
            (0, 10) => Some(false),
            _ => None,
        }
    });
    let (mut owner, idle) = if a_owns { (a, b) } else { (b, a) };
    let got: Vec<String> = owner.records().into_iter().map(|r| r.2).collect();
    assert_eq!(got, first);
    // Let the auto-commit of offset 10 land (librdkafka's timer fires every
    // 5 s from the consumer's start), then kill the owner.
    eventually(WAIT, "the owner's auto-commit of offset 10", || {
        describe(&bs, "group1")
            .iter()
            .any(|r| {
                r.get(2).map(String::as_str) == Some("0")
                    && r.get(3).map(String::as_str) == Some("10")
            })
            .then_some(())
    });
    step!("kill -9 the owner (pid {})", owner.child.id());
    owner.child.kill().expect("kill -9");
    let _ = owner.child.wait();

    let second: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    produce(&bs, "test", &second, false);
    eventually(
        WAIT,
        "the other consumer to take over from the committed offset",
        || {
            let vals: Vec<String> = idle.records().into_iter().map(|r| r.2).collect();
            (vals.len() >= 10).then_some(())
        },
    );
    let taken: Vec<(i32, i64, String)> = idle.records();
    assert_eq!(
        taken.iter().map(|r| r.2.clone()).collect::<Vec<_>>(),
        second,
        "the survivor must resume at offset 10, neither re-reading nor skipping"
    );
    assert_eq!(taken[0].1, 10);

    // Another group reads everything from the start.
    let g0 = Consumer::start(client, dir.path(), &bs, "group0", "g0", "test");
    eventually(WAIT, "group0 to read all 20", || {
        (g0.records().len() == 20).then_some(())
    });
    let all: Vec<String> = g0.records().into_iter().map(|r| r.2).collect();
    assert_eq!(
        all,
        first.iter().chain(&second).cloned().collect::<Vec<_>>()
    );
    drop(g0);

    // Two partitions: the two group1 consumers share them.
    runnel(
        &bs,
        &["topics", "--alter", "--topic", "test", "--partitions", "2"],
    );
    let a2 = Consumer::start(client, dir.path(), &bs, "group1", "a2", "test");
    // Each round produces 40 keyed records tagged with the round; a round
    // that lands before the rebalance goes wholly to the old member, so only
    // a round read entirely after it counts.
    let mut round = 0;
    eventually(WAIT, "both group1 consumers to own a partition", || {
        let done = (0..round).rev().find_map(|r| {
            let tag = format!("r{r}-");
            let parts = |c: &Consumer| -> (usize, std::collections::BTreeSet<i32>) {
                let mine: Vec<(i32, i64, String)> = c
                    .records()
                    .into_iter()
                    .filter(|x| x.2.starts_with(&tag))
                    .collect();
                (mine.len(), mine.iter().map(|x| x.0).collect())
            };
            let ((na, pa), (nb, pb)) = (parts(&a2), parts(&idle));
            // Only a round read in full (40 records) tells who owns what.
            (na + nb == 40).then_some(pa.len() == 1 && pb.len() == 1 && pa != pb)
        });
        if done == Some(true) {
            return Some(());
        }
        let keyed: Vec<String> = (0..40).map(|i| format!("k{i}:r{round}-{i}")).collect();
        produce(&bs, "test", &keyed, true);
        round += 1;
        std::thread::sleep(Duration::from_millis(500));
        None
    });
}
