//! Topic and broker configs on a real 3-node cluster, changed the way
//! users change them: `runnel topics --create --config`, `runnel configs
//! --alter` for a topic, one broker and the broker default. Each change
//! must act without a restart (a produce refused for min.insync.replicas,
//! segment files rolled at the new segment.bytes on every replica), show
//! the right source in DescribeConfigs, survive a full cluster kill -9 and
//! restart, and a bad value must be refused with the key named and change
//! nothing. Then two independent admin clients, kafka-python and
//! confluent-kafka, round-trip configs (`tests/python/configs.py`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use bytes::Bytes;
use common::cluster::Cluster;
use common::partition::wait_full_isr;
use common::{eventually, Node};
use kafka_protocol::records::Compression;
use runnel::protocol::build;

const TIMEOUT: Duration = Duration::from_secs(30);

use common::{output_text as text, runnel as cli, runnel_ok as ok};

fn configs(bs: &str, rest: &[&str]) -> Output {
    let mut args = vec!["configs", "--bootstrap-server", bs];
    args.extend_from_slice(rest);
    cli(&args)
}

/// The `--describe` line of `key`, if listed.
fn line_of<'a>(described: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("  {key}=");
    described.lines().find(|l| l.starts_with(&prefix))
}

/// One acks=-1 Produce of `n` records of `size` bytes to partition 0 of
/// `topic` at the node `addr`: the error code.
fn produce(addr: &str, topic: &str, n: usize, size: usize) -> i16 {
    let value = Bytes::from(vec![b'x'; size]);
    let records: Vec<_> = (0..n)
        .map(|i| {
            // Keyed: the broker default below makes the topic compacted too,
            // and a compacted topic refuses records without a key.
            let key = Some(Bytes::from(format!("key-{i}")));
            build::record(i as i64, 1_700_000_000_000, key, Some(value.clone()))
        })
        .collect();
    let batch = build::encode(&records, Compression::None).expect("encode");
    common::raw_produce(addr, 8, topic, 0, batch, 10_000)
        .map(|(code, _)| code)
        .unwrap_or(-1)
}

/// The leader's address for partition 0 of `topic`.
fn leader_addr(c: &Cluster, topic: &str) -> String {
    let st = wait_full_isr(c, topic, 0, TIMEOUT);
    c.node(st.leader).bootstrap()
}

fn replica_dir(c: &Cluster, id: i32, topic: &str) -> PathBuf {
    c.dir(id).join("data").join(format!("{topic}-0"))
}

fn log_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn configs_act_at_once_survive_a_full_restart_and_refuse_bad_values() {
    let mut c = Cluster::start(3);
    let bs = c.bootstrap_all();
    let bs = bs.as_str();

    step!("create orders with --config overrides");
    ok(&[
        "topics",
        "--bootstrap-server",
        bs,
        "--create",
        "--topic",
        "orders",
        "--partitions",
        "1",
        "--replication-factor",
        "3",
        "--config",
        "min.insync.replicas=2",
        "--config",
        "retention.ms=86400000",
    ]);
    let addr = leader_addr(&c, "orders");
    let described = ok(&[
        "topics",
        "--bootstrap-server",
        bs,
        "--describe",
        "--topic",
        "orders",
    ]);
    assert!(
        described.contains("min.insync.replicas=2") && described.contains("retention.ms=86400000"),
        "topics --describe shows the overrides: {described}"
    );
    let d = ok(&[
        "configs",
        "--bootstrap-server",
        bs,
        "--entity-type",
        "topics",
        "--entity-name",
        "orders",
        "--describe",
    ]);
    assert!(
        d.starts_with("Dynamic configs for topic orders are:\n"),
        "{d}"
    );
    assert!(
        line_of(&d, "min.insync.replicas")
            .is_some_and(|l| l.contains("DYNAMIC_TOPIC_CONFIG:min.insync.replicas=2")),
        "{d}"
    );
    assert!(
        line_of(&d, "cleanup.policy").is_none(),
        "only overrides without --all: {d}"
    );
    let all = ok(&[
        "configs",
        "--bootstrap-server",
        bs,
        "--entity-type",
        "topics",
        "--entity-name",
        "orders",
        "--describe",
        "--all",
    ]);
    assert!(
        line_of(&all, "cleanup.policy").is_some_and(
            |l| l.starts_with("  cleanup.policy=delete") && l.contains("DEFAULT_CONFIG")
        ),
        "{all}"
    );

    step!("min.insync.replicas=4 on RF 3 refuses acks=-1 at once; deleting it lets it through");
    assert_eq!(produce(&addr, "orders", 1, 100), 0);
    ok(&[
        "configs",
        "--bootstrap-server",
        bs,
        "--entity-type",
        "topics",
        "--entity-name",
        "orders",
        "--alter",
        "--add-config",
        "min.insync.replicas=4",
    ]);
    eventually(TIMEOUT, "NOT_ENOUGH_REPLICAS (19)", || {
        (produce(&addr, "orders", 1, 100) == 19).then_some(())
    });
    let out = configs(
        bs,
        &[
            "--entity-type",
            "topics",
            "--entity-name",
            "orders",
            "--alter",
            "--delete-config",
            "min.insync.replicas",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("Completed updating config for topic orders."));
    eventually(TIMEOUT, "produce accepted again", || {
        (produce(&addr, "orders", 1, 100) == 0).then_some(())
    });

    step!("a bad value is refused with the key named, and nothing of the request changes");
    let out = configs(
        bs,
        &[
            "--entity-type",
            "topics",
            "--entity-name",
            "orders",
            "--alter",
            "--add-config",
            "retention.ms=1000,segment.bytes=tiny",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("segment.bytes"),
        "{}",
        text(&out)
    );
    for bad in [
        &[
            "--entity-type",
            "topics",
            "--entity-name",
            "orders",
            "--alter",
            "--add-config",
            "no.such.config=1",
        ][..],
        &[
            "--entity-type",
            "brokers",
            "--entity-name",
            "1",
            "--alter",
            "--add-config",
            "node.id=7",
        ][..],
        &[
            "--entity-type",
            "brokers",
            "--entity-default",
            "--alter",
            "--add-config",
            "log.retention.ms=-5",
        ][..],
    ] {
        let out = configs(bs, bad);
        let key = bad.last().unwrap().split('=').next().unwrap();
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(key),
            "{bad:?}: {}",
            text(&out)
        );
    }
    let d = ok(&[
        "configs",
        "--bootstrap-server",
        bs,
        "--topic",
        "orders",
        "--describe",
    ]);
    assert!(
        line_of(&d, "retention.ms").is_some_and(|l| l.starts_with("  retention.ms=86400000 ")),
        "{d}"
    );
    assert!(line_of(&d, "segment.bytes").is_none(), "{d}");

    step!("segment.bytes=65536 rolls segments at once, on every replica");
    ok(&[
        "configs",
        "--bootstrap-server",
        bs,
        "--entity-type",
        "topics",
        "--entity-name",
        "orders",
        "--alter",
        "--add-config",
        "segment.bytes=65536",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..20 {
        assert_eq!(produce(&addr, "orders", 16, 1000), 0);
    }
    for id in 1..=3 {
        let dir = replica_dir(&c, id, "orders");
        eventually(TIMEOUT, "segments rolled on every replica", || {
            (log_files(&dir) >= 4).then_some(())
        });
    }

    step!("the broker default and one broker's own config");
    ok(&[
        "configs",
        "--bootstrap-server",
        bs,
        "--entity-type",
        "brokers",
        "--entity-default",
        "--alter",
        "--add-config",
        "log.retention.ms=172800000,log.cleanup.policy=[compact,delete]",
    ]);
    ok(&[
        "configs",
        "--bootstrap-server",
        bs,
        "--entity-type",
        "brokers",
        "--entity-name",
        "2",
        "--alter",
        "--add-config",
        "log.segment.bytes=2097152",
    ]);
    let check = |c: &Cluster| {
        let bs = c.bootstrap_all();
        let bs = bs.as_str();
        let d = ok(&[
            "configs",
            "--bootstrap-server",
            bs,
            "--entity-type",
            "brokers",
            "--entity-default",
            "--describe",
        ]);
        assert!(
            d.starts_with("Default configs for brokers in the cluster are:\n"),
            "{d}"
        );
        assert!(
            line_of(&d, "log.retention.ms").is_some_and(|l| l.contains("=172800000 ")),
            "{d}"
        );
        let b2 = ok(&[
            "configs",
            "--bootstrap-server",
            bs,
            "--entity-type",
            "brokers",
            "--entity-name",
            "2",
            "--describe",
        ]);
        assert!(
            line_of(&b2, "log.segment.bytes")
                .is_some_and(|l| l.contains("DYNAMIC_BROKER_CONFIG:log.segment.bytes=2097152")),
            "{b2}"
        );
        let b1 = ok(&[
            "configs",
            "--bootstrap-server",
            bs,
            "--entity-type",
            "brokers",
            "--entity-name",
            "1",
            "--describe",
            "--all",
        ]);
        assert!(
            line_of(&b1, "log.segment.bytes").is_some_and(|l| !l.contains("2097152")),
            "broker 1 does not take broker 2's config: {b1}"
        );
        assert!(
            line_of(&b1, "node.id").is_some_and(|l| l.starts_with("  node.id=1 ")),
            "{b1}"
        );
        // A topic without its own retention.ms now takes the default's.
        let t = ok(&[
            "configs",
            "--bootstrap-server",
            bs,
            "--topic",
            "orders",
            "--describe",
            "--all",
        ]);
        assert!(
            line_of(&t, "cleanup.policy")
                .is_some_and(|l| l
                    .contains("DYNAMIC_DEFAULT_BROKER_CONFIG:log.cleanup.policy=compact,delete")),
            "{t}"
        );
        assert!(
            line_of(&t, "segment.bytes").is_some_and(|l| l.starts_with("  segment.bytes=65536 ")),
            "{t}"
        );
    };
    check(&c);
    // The default acts at once: orders is now compacted (and deletes), so
    // a record without a key is refused.
    let keyless = build::encode(
        &[build::record(
            0,
            1_700_000_000_000,
            None,
            Some(Bytes::from("v")),
        )],
        Compression::None,
    )
    .unwrap();
    let addr = leader_addr(&c, "orders");
    eventually(TIMEOUT, "INVALID_RECORD (87) for a keyless record", || {
        let code = common::raw_produce(&addr, 8, "orders", 0, keyless.clone(), 10_000)
            .map(|(code, _)| code)
            .ok()?;
        (code == 87).then_some(())
    });

    step!("kill -9 every node and restart: every config is still there");
    c.restart_all(&[1, 2, 3]);
    eventually(
        Duration::from_secs(60),
        "the configs answer after the restart",
        || {
            configs(&c.bootstrap_all(), &["--topic", "orders", "--describe"])
                .status
                .success()
                .then_some(())
        },
    );
    check(&c);
    let d = ok(&[
        "configs",
        "--bootstrap-server",
        &c.bootstrap_all(),
        "--topic",
        "orders",
        "--describe",
    ]);
    assert!(
        line_of(&d, "retention.ms").is_some_and(|l| l.starts_with("  retention.ms=86400000 ")),
        "{d}"
    );
    // On the leader: a follower that has just restarted may still cut its
    // tail (and a segment with it) after the count is taken.
    let st = wait_full_isr(&c, "orders", 0, TIMEOUT);
    let addr = c.node(st.leader).bootstrap();
    let dir = replica_dir(&c, st.leader, "orders");
    let before = log_files(&dir);
    for _ in 0..10 {
        assert_eq!(produce(&addr, "orders", 16, 1000), 0);
    }
    eventually(
        TIMEOUT,
        "segment.bytes still acts after the restart",
        || (log_files(&dir) >= before + 2).then_some(()),
    );
}

#[test]
fn kafka_python_and_confluent_kafka_round_trip_configs() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/configs.py");
    let probe = Command::new("python3")
        .args(["-c", "import kafka, confluent_kafka"])
        .status()
        .expect("run python3");
    assert!(
        probe.success(),
        "python3 with kafka-python and confluent-kafka is needed (make deps installs them)"
    );
    let node = Node::start(&[]);
    eventually(
        Duration::from_secs(60),
        "the node answers a topic listing",
        || {
            cli(&["topics", "--bootstrap-server", &node.bootstrap(), "--list"])
                .status
                .success()
                .then_some(())
        },
    );
    let out = Command::new("timeout")
        .args([
            "120",
            "python3",
            script,
            &node.bootstrap(),
            "py-configs",
            "1",
        ])
        .output()
        .expect("spawn python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{}",
        text(&out)
    );
}
