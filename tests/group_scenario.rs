//! The scenario users run to learn Kafka consumer groups, with separate
//! consumer processes (kcat, librdkafka's balanced consumer) so that one can
//! be killed with SIGKILL:
//!
//! two consumers in `group1` on a one-partition topic: one gets every
//! message; `kill -9` it and the other takes over from the last committed
//! offset; a consumer in `group0` reads the whole topic from the start; the
//! topic grows to two partitions and the two `group1` consumers share them.

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, Node};

struct Consumer {
    child: Child,
    out: PathBuf,
}

impl Consumer {
    /// `kcat -G group topic`, printing `partition offset value` per record.
    fn start(dir: &Path, bootstrap: &str, group: &str, name: &str, topic: &str) -> Consumer {
        let out = dir.join(format!("{name}.out"));
        let child = Command::new("kcat")
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
            .stdout(Stdio::from(File::create(&out).expect("output file")))
            .stderr(Stdio::null())
            .spawn()
            .expect("kcat must be installed (make deps installs it)");
        step!("consumer {name} in {group}: pid {}", child.id());
        Consumer { child, out }
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

#[test]
fn two_consumers_failover_second_group_and_a_new_partition() {
    // The default initial rebalance delay (3 s) lets both consumers, started
    // together, join the group's first generation: one rebalance, not two.
    let node = Node::start(&[]);
    let bs = node.bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    runnel(
        &bs,
        &["topics", "--create", "--topic", "test", "--partitions", "1"],
    );
    let a = Consumer::start(dir.path(), &bs, "group1", "a", "test");
    let b = Consumer::start(dir.path(), &bs, "group1", "b", "test");
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
    let g0 = Consumer::start(dir.path(), &bs, "group0", "g0", "test");
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
    let a2 = Consumer::start(dir.path(), &bs, "group1", "a2", "test");
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
