//! `runnel producer-perf-test` and `consumer-perf-test` against a real
//! node: the flags of Kafka's scripts, and output that scripts parsing
//! Kafka's lines can read. Speed is not asserted here (see benches/).

mod common;

use std::process::{Command, Output};

use common::Node;
use regex::Regex;

const BIN: &str = env!("CARGO_BIN_EXE_runnel");

fn run(args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .arg("120")
        .arg(BIN)
        .args(args)
        .output()
        .expect("run runnel");
    eprintln!(
        "$ runnel {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Kafka's summary line, captured: count, steady-state tag, then the
/// numbers in order.
fn summary() -> Regex {
    Regex::new(
        r"^(\d+)( steady state)? records sent, (\d+\.\d{6}) records/sec \((\d+\.\d{2}) MB/sec\), (\d+\.\d{2}) ms avg latency, (\d+\.\d{2}) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99\.9th\.$",
    )
    .unwrap()
}

/// Runs producer-perf-test for `num` records to `topic` with `rest` of the
/// flags; it must succeed.
fn perf_produce(topic: &str, num: usize, rest: &[&str]) -> Output {
    let num = num.to_string();
    let mut args = vec![
        "producer-perf-test",
        "--topic",
        topic,
        "--num-records",
        &num,
    ];
    args.extend_from_slice(rest);
    let out = run(&args);
    assert!(out.status.success(), "producer-perf-test failed");
    out
}

/// Runs consumer-perf-test for `n` messages and returns its data line's
/// fields.
fn consume(bootstrap: &str, topic: &str, n: usize, extra: &[&str]) -> (Output, Vec<String>) {
    let messages = n.to_string();
    let mut args = vec![
        "consumer-perf-test",
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--messages",
        &messages,
        "--timeout",
        "20000",
    ];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(out.status.success(), "consumer-perf-test failed");
    let text = stdout(&out);
    let last = text.lines().last().unwrap_or_default();
    let fields = last.split(", ").map(str::to_string).collect();
    (out, fields)
}

#[test]
fn producer_perf_test_sends_what_it_says_and_prints_kafkas_summary() {
    let node = Node::start(&[]);
    let bs = format!("bootstrap.servers={}", node.bootstrap());
    let out = perf_produce(
        "perf",
        300,
        &[
            "--record-size",
            "100",
            "--throughput",
            "1000",
            "--producer-props",
            &bs,
            "acks=all",
            "linger.ms=0",
        ],
    );
    let text = stdout(&out);
    let last = text.lines().last().expect("a summary line");
    let c = summary()
        .captures(last)
        .unwrap_or_else(|| panic!("not Kafka's summary line: {last:?}"));
    assert_eq!(&c[1], "300");
    let (p50, p95, p99, p999): (u64, u64, u64, u64) = (
        c[7].parse().unwrap(),
        c[8].parse().unwrap(),
        c[9].parse().unwrap(),
        c[10].parse().unwrap(),
    );
    let max: f64 = c[6].parse().unwrap();
    assert!(
        p50 <= p95 && p95 <= p99 && p99 <= p999 && p999 as f64 <= max,
        "{last}"
    );
    // --throughput 1000 for 300 records: about 0.3 s, so well under 1000/s
    // can't be claimed faster than the throttle.
    let rate: f64 = c[3].parse().unwrap();
    assert!(rate <= 1100.0, "throttled to 1000/s but reported {rate}");

    // What it reported as sent is in the topic: 300 records of 100 bytes.
    let (_, fields) = consume(&node.bootstrap(), "perf", 300, &[]);
    assert_eq!(fields.len(), 10, "{fields:?}");
    assert_eq!(fields[4], "300");
    assert_eq!(
        fields[2],
        format!("{:.4}", 300.0 * 100.0 / (1024.0 * 1024.0))
    );
}

#[test]
fn producer_perf_test_flags() {
    let node = Node::start(&[]);
    let bs = format!("bootstrap.servers={}", node.bootstrap());
    let dir = tempfile::tempdir().unwrap();

    // --producer.config as a file, --warmup-records: a second,
    // steady-state summary covering the records after the warm-up.
    let config = dir.path().join("producer.properties");
    std::fs::write(&config, format!("{bs}\nacks=1\n")).unwrap();
    let out = perf_produce(
        "warm",
        200,
        &[
            "--record-size",
            "10",
            "--throughput",
            "-1",
            "--producer.config",
            config.to_str().unwrap(),
            "--warmup-records",
            "50",
        ],
    );
    let text = stdout(&out);
    assert!(
        text.starts_with("Warmup first 50 records. Steady state results will print after the complete test summary.\n"),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    let total = summary().captures(lines[lines.len() - 2]).expect("total");
    assert_eq!((&total[1], total.get(2)), ("200", None));
    let steady = summary().captures(lines[lines.len() - 1]).expect("steady");
    assert_eq!((&steady[1], &steady[2]), ("150", " steady state"));

    // --payload-file: payloads picked from the file's lines.
    let payloads = dir.path().join("payloads.txt");
    std::fs::write(&payloads, "alpha\nbeta\ngamma\n").unwrap();
    let out = perf_produce(
        "file",
        3000,
        &[
            "--payload-file",
            payloads.to_str().unwrap(),
            "--throughput",
            "-1",
            "--producer-props",
            &bs,
        ],
    );
    assert!(stdout(&out).starts_with("Number of messages read: 3\n"));
    let (_, fields) = consume(&node.bootstrap(), "file", 3000, &["--hide-header"]);
    assert_eq!(fields[4], "3000");
    // Every payload is 4 or 5 bytes: 12,000 to 15,000 bytes in all, and
    // not all of one size.
    let mb: f64 = fields[2].parse().unwrap();
    let bytes = mb * 1024.0 * 1024.0;
    assert!((11_950.0..=15_050.0).contains(&bytes), "{bytes} bytes");
    assert!(
        (12_100.0..=14_900.0).contains(&bytes),
        "payloads not mixed: {bytes} bytes"
    );

    // --print-metrics: the metrics table follows the summary.
    let out = perf_produce(
        "metrics",
        20,
        &[
            "--record-size",
            "10",
            "--throughput",
            "-1",
            "--producer-props",
            &bs,
            "--print-metrics",
        ],
    );
    let text = stdout(&out);
    assert!(text.contains("Metric Name"), "{text}");
    let sent = Regex::new(
        r"(?m)^producer-metrics:record-send-total\{client-id=perf-producer-client\} +: (\d+)\.000$",
    )
    .unwrap()
    .captures(&text)
    .expect("record-send-total row");
    assert_eq!(&sent[1], "20");

    // Refusals, each with the message Kafka's tool gives.
    let refused = |args: &[&str], message: &str| {
        let out = run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            all.contains(message),
            "{args:?}: expected {message:?} in {all:?}"
        );
    };
    let base = ["producer-perf-test", "--topic", "t", "--throughput", "-1"];
    let with =
        |more: &[&'static str]| -> Vec<&'static str> { base.iter().chain(more).copied().collect() };
    refused(
        &with(&[
            "--num-records",
            "0",
            "--record-size",
            "1",
            "--producer-props",
            "acks=1",
        ]),
        "--num-records should be greater than zero",
    );
    refused(
        &with(&[
            "--num-records",
            "5",
            "--record-size",
            "0",
            "--producer-props",
            "acks=1",
        ]),
        "--record-size should be greater than zero",
    );
    refused(
        &with(&[
            "--num-records",
            "5",
            "--record-size",
            "1",
            "--producer-props",
            "acks",
        ]),
        "Invalid property: acks",
    );
    refused(
        &with(&[
            "--num-records",
            "5",
            "--record-size",
            "1",
            "--warmup-records",
            "5",
            "--producer-props",
            "acks=1",
        ]),
        "--warmup-records must be strictly fewer",
    );
    // Neither --producer-props nor --producer.config; neither payload flag.
    refused(
        &with(&["--num-records", "5", "--record-size", "1"]),
        "--producer-props",
    );
    refused(
        &with(&["--num-records", "5", "--producer-props", "acks=1"]),
        "--record-size",
    );
    // A property librdkafka does not know is named.
    let bogus = [
        "producer-perf-test",
        "--topic",
        "t",
        "--throughput",
        "-1",
        "--num-records",
        "5",
        "--record-size",
        "1",
        "--producer-props",
        "no.such.property=1",
    ];
    refused(&bogus, "no.such.property");
}

#[test]
fn consumer_perf_test_prints_kafkas_header_and_fields() {
    let node = Node::start(&[]);
    let bs = format!("bootstrap.servers={}", node.bootstrap());
    perf_produce(
        "backlog",
        500,
        &[
            "--record-size",
            "1000",
            "--throughput",
            "-1",
            "--producer-props",
            &bs,
        ],
    );

    let (out, fields) = consume(&node.bootstrap(), "backlog", 500, &["--group", "g1"]);
    let text = stdout(&out);
    assert_eq!(
        text.lines().next().unwrap(),
        "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec"
    );
    let date = Regex::new(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}:\d{3}$").unwrap();
    assert!(
        date.is_match(&fields[0]) && date.is_match(&fields[1]),
        "{fields:?}"
    );
    assert!(fields[0] <= fields[1]);
    assert_eq!(
        fields[2],
        format!("{:.4}", 500.0 * 1000.0 / (1024.0 * 1024.0))
    );
    assert_eq!(fields[4], "500");
    for (i, f) in fields.iter().enumerate().skip(2) {
        assert!(f.parse::<f64>().is_ok(), "field {i} {f:?} is not a number");
    }

    // The group committed its offsets as it went: the same group now finds
    // nothing left, and says so after --timeout.
    let out = run(&[
        "consumer-perf-test",
        "--bootstrap-server",
        &node.bootstrap(),
        "--topic",
        "backlog",
        "--messages",
        "1",
        "--group",
        "g1",
        "--timeout",
        "3000",
        "--hide-header",
        "--date-format",
        "dd/MM/yyyy",
    ]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.starts_with("WARNING: Exiting before consuming the expected number of messages: timeout (3000 ms) exceeded."),
        "{text}"
    );
    let last: Vec<&str> = text.lines().last().unwrap().split(", ").collect();
    assert_eq!(last[4], "0");
    assert!(
        Regex::new(r"^\d{2}/\d{2}/\d{4}$")
            .unwrap()
            .is_match(last[0]),
        "{last:?}"
    );

    // --show-detailed-stats: its own header, a line per interval.
    let (out, _) = consume(
        &node.bootstrap(),
        "backlog",
        500,
        &[
            "--show-detailed-stats",
            "--reporting-interval",
            "1",
            "--group",
            "g2",
        ],
    );
    let text = stdout(&out);
    assert!(text.starts_with("time, threadId, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms"));
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert!(!rows.is_empty(), "{text}");
    for r in &rows {
        let f: Vec<&str> = r.split(", ").collect();
        assert_eq!((f.len(), f[1]), (10, "0"), "{r}");
    }

    // --messages is required and must be positive; --topic or --include.
    let out = run(&[
        "consumer-perf-test",
        "--bootstrap-server",
        &node.bootstrap(),
        "--topic",
        "x",
        "--messages",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--messages should be greater than zero"));
    let out = run(&[
        "consumer-perf-test",
        "--bootstrap-server",
        &node.bootstrap(),
        "--messages",
        "1",
    ]);
    assert!(!out.status.success());
}
