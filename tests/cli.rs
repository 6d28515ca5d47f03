//! The admin subcommands against a real `runnel serve` process: each test
//! starts a single-node server on a free port with its own data directory,
//! runs the CLI as a child process the way a user's script would, and checks
//! what it prints and how it exits.
//!
//! Run with `flock /var/tmp/runnel-bin.lock cargo test --release --test cli`
//! so that no other build replaces the binary mid-run.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{free_port, Node};
use runnel::admin::murmur2::partition_for_key;

const BIN: &str = env!("CARGO_BIN_EXE_runnel");
/// Upper bound for any single CLI invocation.
const CLI_TIMEOUT_SECS: u32 = 60;

/// A single `runnel serve` node (killed, and its log shown on failure, on
/// drop), once it answers a topic listing: the controller may need a
/// moment to elect itself after the listener answers.
fn start_server() -> Node {
    let node = Node::start(&[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cli(
            &["topics", "--bootstrap-server", &node.bootstrap(), "--list"],
            None,
        );
        if out.status.success() {
            step("server is ready");
            return node;
        }
        assert!(
            Instant::now() < deadline,
            "server never answered --list: {}",
            describe_output(&out)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn step(what: &str) {
    eprintln!("[cli test] {what}");
}

/// Runs `runnel <args>` with `stdin`, bounded by coreutils `timeout` so a
/// hung command fails the test instead of hanging it.
fn cli(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("timeout")
        .arg(CLI_TIMEOUT_SECS.to_string())
        .arg(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runnel");
    // Feed stdin from another thread so that a child busy writing its own
    // output cannot deadlock against us; a child that exits early (an
    // expected failure) just makes the write fail, which the caller's
    // assertions on the output judge.
    let feeder = stdin.map(|input| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let input = input.to_owned();
        // Dropping the pipe at the end closes it: end of input.
        std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        })
    });
    let out = child.wait_with_output().expect("wait runnel");
    if let Some(f) = feeder {
        let _ = f.join();
    }
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn describe_output(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

/// Runs the CLI and requires success.
fn ok(args: &[&str], stdin: Option<&str>) -> Output {
    step(&format!("runnel {}", args.join(" ")));
    let out = cli(args, stdin);
    assert!(
        out.status.success(),
        "runnel {args:?} failed: {}",
        describe_output(&out)
    );
    out
}

/// Runs the CLI and requires a non-zero exit.
fn fails(args: &[&str]) -> Output {
    step(&format!("runnel {} (must fail)", args.join(" ")));
    let out = cli(args, None);
    assert!(
        !out.status.success(),
        "runnel {args:?} should have failed: {}",
        describe_output(&out)
    );
    out
}

fn create_topic(bs: &str, topic: &str, partitions: u32) {
    let p = partitions.to_string();
    let out = ok(
        &[
            "topics",
            "--bootstrap-server",
            bs,
            "--create",
            "--topic",
            topic,
            "--partitions",
            &p,
            "--replication-factor",
            "1",
        ],
        None,
    );
    assert_eq!(stdout(&out), format!("Created topic {topic}.\n"));
}

/// `topic:partition:offset` lines of get-offsets, parsed.
fn offsets(bs: &str, topic: &str, time: &str) -> Vec<(String, i32, Option<i64>)> {
    let out = ok(
        &[
            "get-offsets",
            "--bootstrap-server",
            bs,
            "--topic",
            topic,
            "--time",
            time,
        ],
        None,
    );
    stdout(&out)
        .lines()
        .map(|l| {
            let mut parts = l.rsplitn(3, ':');
            let offset = parts.next().expect("offset field");
            let partition = parts.next().expect("partition field");
            let t = parts.next().expect("topic field");
            (
                t.to_owned(),
                partition.parse().expect("partition number"),
                if offset.is_empty() {
                    None
                } else {
                    Some(offset.parse().expect("offset number"))
                },
            )
        })
        .collect()
}

/// Polls `f` until it returns Some, for at most 15 seconds.
fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    common::eventually(Duration::from_secs(15), what, f)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[test]
fn topics_create_list_describe_alter_delete() {
    let server = start_server();
    let bs = server.bootstrap();
    let bs = bs.as_str();

    create_topic(bs, "orders", 3);
    create_topic(bs, "audit", 1);

    step("creating an existing topic fails the way kafka-topics does");
    let out = fails(&[
        "topics",
        "--bootstrap-server",
        bs,
        "--create",
        "--topic",
        "orders",
        "--partitions",
        "1",
    ]);
    assert!(
        stdout(&out).starts_with("Error while executing topic command : "),
        "{}",
        describe_output(&out)
    );
    let out = ok(
        &[
            "topics",
            "--bootstrap-server",
            bs,
            "--create",
            "--topic",
            "orders",
            "--if-not-exists",
        ],
        None,
    );
    assert_eq!(stdout(&out), "", "--if-not-exists is silent");

    let out = ok(&["topics", "--bootstrap-server", bs, "--list"], None);
    let listed: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    let mine: Vec<&String> = listed
        .iter()
        .filter(|t| *t == "orders" || *t == "audit")
        .collect();
    assert_eq!(mine, vec!["audit", "orders"], "sorted: {listed:?}");

    // Leadership reaches the brokers' metadata shortly after the create
    // returns (as in Kafka); wait for it, then check the exact format.
    let text = eventually("every partition of orders has a leader", || {
        let out = ok(
            &[
                "topics",
                "--bootstrap-server",
                bs,
                "--describe",
                "--topic",
                "orders",
            ],
            None,
        );
        let text = stdout(&out);
        (!text.contains("Leader: none")).then_some(text)
    });
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let header: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(header[0], "Topic: orders");
    let id = header[1].strip_prefix("TopicId: ").expect("TopicId field");
    assert_eq!(id.len(), 22, "Kafka-style base64 id: {id}");
    assert!(id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert_ne!(id, "AAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(
        &header[2..],
        &["PartitionCount: 3", "ReplicationFactor: 1", "Configs: "]
    );
    for (i, line) in lines[1..].iter().enumerate() {
        assert_eq!(
            *line,
            format!("\tTopic: orders\tPartition: {i}\tLeader: 1\tReplicas: 1\tIsr: 1")
        );
    }

    step("--alter --partitions grows the topic");
    ok(
        &[
            "topics",
            "--bootstrap-server",
            bs,
            "--alter",
            "--topic",
            "orders",
            "--partitions",
            "5",
        ],
        None,
    );
    eventually("orders has 5 partitions with leaders", || {
        let out = ok(
            &[
                "topics",
                "--bootstrap-server",
                bs,
                "--describe",
                "--topic",
                "orders",
            ],
            None,
        );
        let text = stdout(&out);
        (text.contains("\tPartitionCount: 5\t")
            && text.contains("\tTopic: orders\tPartition: 4\tLeader: 1\t"))
        .then_some(())
    });
    let out = fails(&[
        "topics",
        "--bootstrap-server",
        bs,
        "--alter",
        "--topic",
        "orders",
        "--partitions",
        "2",
    ]);
    assert!(
        stdout(&out).starts_with("Error while executing topic command : "),
        "shrinking is refused: {}",
        describe_output(&out)
    );

    step("--delete removes the topic");
    ok(
        &[
            "topics",
            "--bootstrap-server",
            bs,
            "--delete",
            "--topic",
            "orders",
        ],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ok(&["topics", "--bootstrap-server", bs, "--list"], None);
        if !stdout(&out).lines().any(|t| t == "orders") {
            assert!(stdout(&out).lines().any(|t| t == "audit"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orders still listed after delete"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = fails(&[
        "topics",
        "--bootstrap-server",
        bs,
        "--describe",
        "--topic",
        "orders",
    ]);
    assert!(
        stderr(&out).contains("Topic 'orders' does not exist as expected"),
        "{}",
        describe_output(&out)
    );
    ok(
        &[
            "topics",
            "--bootstrap-server",
            bs,
            "--delete",
            "--topic",
            "orders",
            "--if-exists",
        ],
        None,
    );
}

#[test]
fn keyed_records_round_trip_and_land_where_java_would_put_them() {
    let server = start_server();
    let bs = server.bootstrap();
    let bs = bs.as_str();
    create_topic(bs, "keyed", 3);

    let keys: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
    let input: String = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k}:value {i}\n"))
        .collect();
    ok(
        &[
            "console-producer",
            "--bootstrap-server",
            bs,
            "--topic",
            "keyed",
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
        ],
        Some(&input),
    );

    let out = ok(
        &[
            "console-consumer",
            "--bootstrap-server",
            bs,
            "--topic",
            "keyed",
            "--from-beginning",
            "--max-messages",
            "30",
            "--timeout-ms",
            "20000",
            "--property",
            "print.key=true",
            "--property",
            "key.separator=:",
            "--property",
            "print.partition=true",
        ],
        None,
    );
    assert!(
        stderr(&out).contains("Processed a total of 30 messages"),
        "{}",
        describe_output(&out)
    );
    let mut seen = Vec::new();
    for line in stdout(&out).lines() {
        // Partition:P<sep>key<sep>value, the separator being ':' here.
        let rest = line.strip_prefix("Partition:").expect("partition field");
        let (partition, rest) = rest.split_once(':').expect("partition sep");
        let (key, value) = rest.split_once(':').expect("key sep");
        let partition: i32 = partition.parse().expect("partition number");
        assert_eq!(
            partition,
            partition_for_key(key.as_bytes(), 3),
            "key {key} must land where Kafka's default partitioner puts it"
        );
        seen.push(format!("{key}:{value}"));
    }
    let mut expected: Vec<String> = input.lines().map(str::to_owned).collect();
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);

    step("per-partition end offsets add up to the record count");
    let latest = offsets(bs, "keyed", "-1");
    assert_eq!(latest.len(), 3, "{latest:?}");
    let per_partition: Vec<i64> = latest.iter().map(|(_, _, o)| o.unwrap_or(-1)).collect();
    for p in 0..3 {
        let expected = keys
            .iter()
            .filter(|k| partition_for_key(k.as_bytes(), 3) == p)
            .count() as i64;
        assert_eq!(per_partition[p as usize], expected, "partition {p}");
    }
    assert!(offsets(bs, "keyed", "-2")
        .iter()
        .all(|(t, _, o)| t == "keyed" && *o == Some(0)));

    step("--partition with --offset starts mid-partition");
    let p0_count = per_partition[0];
    assert!(p0_count >= 2, "need two records in partition 0");
    let out = ok(
        &[
            "console-consumer",
            "--bootstrap-server",
            bs,
            "--topic",
            "keyed",
            "--partition",
            "0",
            "--offset",
            "1",
            "--property",
            "print.offset=true",
            "--timeout-ms",
            "3000",
        ],
        None,
    );
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(
        lines.len() as i64,
        p0_count - 1,
        "{}",
        describe_output(&out)
    );
    assert!(lines[0].starts_with("Offset:1\tvalue "), "{lines:?}");
    assert!(stderr(&out).contains(&format!("Processed a total of {} messages", p0_count - 1)));
}

#[test]
fn offsets_by_time_latest_start_and_round_robin() {
    let server = start_server();
    let bs = server.bootstrap();
    let bs = bs.as_str();
    create_topic(bs, "timed", 1);
    create_topic(bs, "spread", 3);

    let produce = |topic: &str, lines: &str| {
        ok(
            &[
                "console-producer",
                "--bootstrap-server",
                bs,
                "--topic",
                topic,
            ],
            Some(lines),
        )
    };
    produce("timed", "a\nb\nc\n");
    std::thread::sleep(Duration::from_millis(50));
    let between = now_ms();
    std::thread::sleep(Duration::from_millis(50));
    produce("timed", "d\ne\n");

    step("get-offsets by timestamp finds the first record at or after it");
    assert_eq!(
        offsets(bs, "timed", &between.to_string()),
        vec![("timed".to_owned(), 0, Some(3))]
    );
    assert_eq!(
        offsets(bs, "timed", "0"),
        vec![("timed".to_owned(), 0, Some(0))]
    );
    assert_eq!(
        offsets(bs, "timed", &(now_ms() + 3_600_000).to_string()),
        vec![("timed".to_owned(), 0, None)],
        "no record that late: empty offset"
    );
    assert_eq!(
        offsets(bs, "timed", "latest"),
        vec![("timed".to_owned(), 0, Some(5))]
    );
    assert_eq!(
        offsets(bs, "timed", "earliest"),
        vec![("timed".to_owned(), 0, Some(0))]
    );
    let out = fails(&[
        "get-offsets",
        "--bootstrap-server",
        bs,
        "--topic",
        "no-such-topic",
    ]);
    assert!(stderr(&out).contains("Error occurred: Could not match any topic-partitions"));

    step("without --from-beginning the consumer starts at the end");
    let out = ok(
        &[
            "console-consumer",
            "--bootstrap-server",
            bs,
            "--topic",
            "timed",
            "--timeout-ms",
            "1500",
        ],
        None,
    );
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("Processed a total of 0 messages"));

    step("unkeyed records go round robin over the partitions");
    ok(
        &[
            "console-producer",
            "--bootstrap-server",
            bs,
            "--topic",
            "spread",
            "--sync",
        ],
        Some("1\n2\n3\n4\n5\n6\n"),
    );
    let counts: Vec<Option<i64>> = offsets(bs, "spread", "-1")
        .into_iter()
        .map(|(_, _, o)| o)
        .collect();
    assert_eq!(counts, vec![Some(2), Some(2), Some(2)]);

    step("acks=0 records are readable too");
    ok(
        &[
            "console-producer",
            "--bootstrap-server",
            bs,
            "--topic",
            "timed",
            "--producer-property",
            "acks=0",
        ],
        Some("f\n"),
    );
    let out = ok(
        &[
            "console-consumer",
            "--bootstrap-server",
            bs,
            "--topic",
            "timed",
            "--from-beginning",
            "--max-messages",
            "6",
            "--timeout-ms",
            "10000",
        ],
        None,
    );
    assert_eq!(stdout(&out), "a\nb\nc\nd\ne\nf\n");

    step("headers and keys survive the round trip");
    create_topic(bs, "headers", 1);
    ok(
        &[
            "console-producer",
            "--bootstrap-server",
            bs,
            "--topic",
            "headers",
            "--property",
            "parse.headers=true",
            "--property",
            "parse.key=true",
        ],
        Some("h1:x,h2:y\tk1\tv1\n"),
    );
    let out = ok(
        &[
            "console-consumer",
            "--bootstrap-server",
            bs,
            "--topic",
            "headers",
            "--from-beginning",
            "--max-messages",
            "1",
            "--timeout-ms",
            "10000",
            "--property",
            "print.headers=true",
            "--property",
            "print.key=true",
        ],
        None,
    );
    assert_eq!(stdout(&out), "h1:x,h2:y\tk1\tv1\n");

    step("a record the broker refuses fails the producer");
    let huge = format!("{}\n", "x".repeat(3 * 1024 * 1024));
    step("runnel console-producer --topic timed < 3 MiB line (must fail)");
    let out = cli(
        &[
            "console-producer",
            "--bootstrap-server",
            bs,
            "--topic",
            "timed",
        ],
        Some(&huge),
    );
    assert!(!out.status.success(), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains("Error when sending message to topic timed"),
        "{}",
        describe_output(&out)
    );
}

#[test]
fn broker_api_versions_lists_produce_and_fetch() {
    let server = start_server();
    let bs = server.bootstrap();
    let out = ok(&["broker-api-versions", "--bootstrap-server", &bs], None);
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("{bs} (id: 1 rack: null) -> (\n\t")),
        "{text}"
    );
    let produce = text
        .lines()
        .find(|l| l.starts_with("\tProduce(0): "))
        .expect("Produce line");
    assert!(produce.contains("[usable: "), "{produce}");
    assert!(text
        .lines()
        .any(|l| l.starts_with("\tFetch(1): ") && l.contains("[usable: ")));
    assert!(text.lines().any(|l| l.starts_with("\tApiVersions(18): ")));
    assert!(text.ends_with("\n)\n"), "{text}");
}

#[test]
fn metadata_quorum_describes_the_one_voter_quorum() {
    let server = start_server();
    let bs = server.bootstrap();
    let status = stdout(&ok(
        &[
            "metadata-quorum",
            "--bootstrap-server",
            &bs,
            "describe",
            "--status",
        ],
        None,
    ));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    assert_eq!(field("LeaderId"), "1");
    assert_eq!(field("CurrentVoters"), "[1]");
    assert_eq!(field("MaxFollowerLag"), "0");
    assert!(field("ClusterId").len() >= 20, "{status}");
    let hw: i64 = field("HighWatermark")
        .parse()
        .expect("numeric high watermark");
    // Creating a topic is a Raft entry: the high watermark moves.
    create_topic(&bs, "quorum-moves", 1);
    let after = stdout(&ok(
        &[
            "metadata-quorum",
            "--bootstrap-server",
            &bs,
            "describe",
            "--status",
        ],
        None,
    ));
    let hw2: i64 = after
        .lines()
        .find_map(|l| {
            l.strip_prefix("HighWatermark:")
                .map(|v| v.trim().parse().expect("numeric"))
        })
        .expect("HighWatermark");
    assert!(hw2 > hw, "high watermark {hw} -> {hw2}");
    let repl = stdout(&ok(
        &[
            "metadata-quorum",
            "--bootstrap-server",
            &bs,
            "describe",
            "--replication",
        ],
        None,
    ));
    let rows: Vec<&str> = repl.lines().collect();
    assert_eq!(
        rows[0],
        "NodeId\tLogEndOffset\tLag\tLastFetchTimestamp\tLastCaughtUpTimestamp\tStatus"
    );
    assert!(
        rows[1].starts_with("1\t") && rows[1].ends_with("\tLeader"),
        "{repl}"
    );
    fails(&["metadata-quorum", "--bootstrap-server", &bs, "describe"]);
}

/// Where a new consumer of `group` starts reading: the offset of the first
/// record it gets (librdkafka, subscribe(), committed offsets).
fn first_offset_read(bs: &str, topic: &str, group: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bs)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let offset = loop {
        assert!(
            Instant::now() < deadline,
            "group {group} read nothing from {topic}"
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => break m.offset(),
            Some(Err(e)) => step(&format!("consumer error (retrying): {e}")),
            None => {}
        }
    };
    consumer.unsubscribe();
    drop(consumer);
    offset
}

fn describe_current_offset(bs: &str, group: &str) -> Option<String> {
    let out = ok(
        &[
            "consumer-groups",
            "--bootstrap-server",
            bs,
            "--describe",
            "--group",
            group,
        ],
        None,
    );
    let text = stdout(&out);
    text.lines()
        .find(|l| l.starts_with(&format!("{group} ")))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
}

#[test]
fn consumer_groups_reset_offsets_change_what_the_next_consumer_reads() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let server = start_server();
    let bs = server.bootstrap();
    let topic = "resettable";
    create_topic(&bs, topic, 1);
    // Ten records one second apart, starting at a fixed time.
    let base = 1_700_000_000_000i64;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .create()
        .expect("producer");
    for i in 0..10i64 {
        let payload = format!("v{i}");
        let rec = FutureRecord::<(), _>::to(topic)
            .payload(&payload)
            .timestamp(base + i * 1000);
        rt.block_on(producer.send(rec, Duration::from_secs(10)))
            .expect("produce");
    }
    let group = "g-reset";
    let reset = |how: &[&str]| {
        let mut args = vec![
            "consumer-groups",
            "--bootstrap-server",
            &bs,
            "--group",
            group,
            "--reset-offsets",
            "--topic",
            topic,
        ];
        args.extend_from_slice(how);
        stdout(&ok(&args, None))
    };
    // A brand-new group: commit offset 4 without any member.
    let out = reset(&["--to-offset", "4", "--execute"]);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == [group, topic, "0", "4"]),
        "{out}"
    );
    assert_eq!(describe_current_offset(&bs, group).as_deref(), Some("4"));
    assert_eq!(first_offset_read(&bs, topic, group), 4);

    let listed = stdout(&ok(
        &["consumer-groups", "--bootstrap-server", &bs, "--list"],
        None,
    ));
    assert!(listed.lines().any(|l| l == group), "{listed}");

    // Once the consumer has left, each form moves where the next one starts.
    let cases: [(&[&str], i64); 5] = [
        (&["--to-earliest", "--execute"], 0),
        (&["--shift-by", "3", "--execute"], 3),
        (
            &["--to-datetime", "2023-11-14T22:13:24.500Z", "--execute"],
            5,
        ),
        (&["--to-latest", "--execute"], 10),
        (&["--to-offset", "99", "--execute"], 10),
    ];
    for (how, expected) in cases {
        eventually("the group is empty again", || {
            let out = cli(
                &[
                    "consumer-groups",
                    "--bootstrap-server",
                    &bs,
                    "--group",
                    group,
                    "--reset-offsets",
                    "--topic",
                    topic,
                    "--to-earliest",
                    "--dry-run",
                ],
                None,
            );
            out.status.success().then_some(())
        });
        reset(how);
        assert_eq!(
            describe_current_offset(&bs, group),
            Some(expected.to_string()),
            "after {how:?}"
        );
        // Below the log end (10), the next consumer starts there.
        if expected < 10 {
            assert_eq!(
                first_offset_read(&bs, topic, group),
                expected,
                "after {how:?}"
            );
        }
    }
    // A dry run shows the offset but commits nothing.
    let dry = reset(&["--to-earliest", "--dry-run"]);
    assert!(
        dry.lines()
            .any(|l| l.ends_with(" 0") || l.split_whitespace().last() == Some("0")),
        "{dry}"
    );
    assert_eq!(describe_current_offset(&bs, group).as_deref(), Some("10"));
    // The topic:partition form.
    let partition = format!("{topic}:0");
    eventually("the group is empty again", || {
        let out = cli(
            &[
                "consumer-groups",
                "--bootstrap-server",
                &bs,
                "--group",
                group,
                "--reset-offsets",
                "--topic",
                &partition,
                "--to-offset",
                "7",
                "--execute",
            ],
            None,
        );
        out.status.success().then_some(())
    });
    assert_eq!(describe_current_offset(&bs, group).as_deref(), Some("7"));
    assert_eq!(first_offset_read(&bs, topic, group), 7);

    let deleted = eventually("the group can be deleted", || {
        let out = cli(
            &[
                "consumer-groups",
                "--bootstrap-server",
                &bs,
                "--delete",
                "--group",
                group,
            ],
            None,
        );
        out.status.success().then(|| stdout(&out))
    });
    assert!(
        deleted.contains(&format!(
            "Deletion of requested consumer groups ('{group}') was successful."
        )),
        "{deleted}"
    );
    let listed = stdout(&ok(
        &["consumer-groups", "--bootstrap-server", &bs, "--list"],
        None,
    ));
    assert!(!listed.lines().any(|l| l == group), "{listed}");
}

#[test]
fn unreachable_bootstrap_is_an_error_not_a_hang() {
    let port = free_port(); // nothing listens here
    let bs = format!("127.0.0.1:{port}");
    let out = fails(&["topics", "--bootstrap-server", &bs, "--list"]);
    assert!(
        stdout(&out).starts_with("Error while executing topic command : "),
        "{}",
        describe_output(&out)
    );
    let out = fails(&["get-offsets", "--bootstrap-server", &bs, "--topic", "t"]);
    assert!(stderr(&out).starts_with("Error occurred: "));
}

// ---------------------------------------------------------------------------
// The client library against an independent Kafka implementation:
// librdkafka's mock cluster (three brokers, leaders spread over them). This
// runs without `runnel serve`, so it checks our side of the wire alone.
// ---------------------------------------------------------------------------

mod against_librdkafka_mock {
    use std::collections::{BTreeMap, BTreeSet};

    use bytes::Bytes;
    use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use runnel::admin::client::{Client, ClientConfig, FetchLimits, OffsetSpec};
    use runnel::admin::murmur2::partition_for_key;
    use runnel::protocol::build;

    fn keyed_batches(keys: &[String], partitions: i32) -> BTreeMap<i32, Vec<Record>> {
        let mut batches: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for k in keys {
            let p = partition_for_key(k.as_bytes(), partitions);
            let list = batches.entry(p).or_default();
            list.push(build::record(
                list.len() as i64,
                1_000,
                Some(Bytes::from(k.clone())),
                Some(Bytes::from(format!("value of {k}"))),
            ));
        }
        batches
    }

    async fn read_all(client: &mut Client, topic: &str, partitions: i32) -> Vec<(i32, Bytes)> {
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for p in 0..partitions {
            let leader = client.leader_of(topic, p).expect("leader");
            by_leader.entry(leader).or_default().push((p, 0));
        }
        let mut keys = Vec::new();
        for (leader, result) in client
            .fetch(topic, &by_leader, FetchLimits::default())
            .await
        {
            let parts = result.unwrap_or_else(|e| panic!("fetch from {leader}: {e}"));
            for fp in parts {
                assert_eq!(fp.error_code, 0, "partition {}", fp.partition);
                let mut data = fp.records.unwrap_or_default();
                for set in RecordBatchDecoder::decode_all(&mut data).expect("decode") {
                    for r in set.records {
                        keys.push((fp.partition, r.key.expect("key")));
                    }
                }
            }
        }
        keys
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn produce_list_offsets_and_fetch_follow_the_leaders() {
        let mock = MockCluster::new(3).expect("mock cluster");
        mock.create_topic("spread", 6, 3).expect("create topic");
        let config = ClientConfig::from_bootstrap(&mock.bootstrap_servers()).expect("config");
        let mut client = Client::connect(config).await.expect("connect");
        assert_eq!(client.brokers().len(), 3);
        let info = client.topic_info("spread", false).await.expect("topic");
        assert_eq!(info.partitions.len(), 6);
        let leaders: BTreeSet<i32> = info.partitions.iter().filter_map(|p| p.leader).collect();
        assert!(
            leaders.len() > 1,
            "leaders spread over brokers: {leaders:?}"
        );

        let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
        let batches = keyed_batches(&keys, 6);
        let results = client
            .produce("spread", &batches, -1, Compression::Lz4)
            .await
            .expect("produce");
        for (p, r) in &results {
            assert_eq!(
                r.as_ref().expect("produced").unwrap_or(-1),
                0,
                "partition {p}"
            );
        }

        let latest = client
            .list_offsets("spread", &(0..6).collect::<Vec<_>>(), OffsetSpec::Latest)
            .await
            .expect("list offsets");
        for p in 0..6 {
            let expected = batches.get(&p).map_or(0, Vec::len) as i64;
            let got = latest[&p].as_ref().expect("offset").offset;
            assert_eq!(got, Some(expected), "partition {p}");
        }

        let mut read = read_all(&mut client, "spread", 6).await;
        read.sort();
        let mut expected: Vec<(i32, Bytes)> = keys
            .iter()
            .map(|k| (partition_for_key(k.as_bytes(), 6), Bytes::from(k.clone())))
            .collect();
        expected.sort();
        assert_eq!(read, expected);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_moved_leader_or_a_not_leader_error_is_retried() {
        let mock = MockCluster::new(3).expect("mock cluster");
        mock.create_topic("moving", 1, 3).expect("create topic");
        let config = ClientConfig::from_bootstrap(&mock.bootstrap_servers()).expect("config");
        let mut client = Client::connect(config).await.expect("connect");
        let old = client
            .topic_info("moving", false)
            .await
            .expect("topic")
            .partitions[0]
            .leader
            .expect("leader");
        let new = (1..=3).find(|b| *b != old).expect("another broker");
        // The client's cache still names the old leader.
        mock.partition_leader("moving", 0, Some(new))
            .expect("move leader");
        let one =
            |i: i64| BTreeMap::from([(0, vec![build::record(0, i, None, Some(Bytes::from("x")))])]);
        let r = client
            .produce("moving", &one(1), 1, Compression::None)
            .await
            .expect("produce");
        assert_eq!(r[&0].as_ref().expect("produce after move"), &Some(0));
        assert_eq!(client.leader_of("moving", 0), Some(new));

        mock.request_errors(
            RDKafkaApiKey::Produce,
            &[
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
            ],
        );
        let r = client
            .produce("moving", &one(2), 1, Compression::None)
            .await
            .expect("produce");
        assert_eq!(r[&0].as_ref().expect("produce after errors"), &Some(1));

        mock.request_errors(
            RDKafkaApiKey::ListOffsets,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION],
        );
        let latest = client
            .list_offsets("moving", &[0], OffsetSpec::Latest)
            .await
            .expect("list offsets");
        assert_eq!(latest[&0].as_ref().expect("offset").offset, Some(2));
    }
}
