//! Retention and DeleteRecords on a real 3-node cluster: a topic with
//! small segments loses its old segments on every replica by
//! `retention.ms` and by `retention.bytes`, its log start offset moves on
//! leader and followers (a new leader after a kill -9 serves the same
//! start), a consumer from offset 0 gets OFFSET_OUT_OF_RANGE and resets as
//! `auto.offset.reset` says, and `runnel delete-records` moves the start
//! on request.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::Cluster;
use common::partition::{partition_state, reader_config, wait_full_isr};
use common::{eventually, now_ms, runnel_ok, RawConn};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, ListOffsetsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use runnel::protocol::build;

const BIN: &str = env!("CARGO_BIN_EXE_runnel");
const TIMEOUT: Duration = Duration::from_secs(30);

/// `n` records of `size` bytes, stamped `ts`, acks=-1 to partition 0 at
/// `addr`; the base offset.
fn produce(addr: &str, topic: &str, n: usize, size: usize, ts: i64) -> i64 {
    let value = Bytes::from(vec![b'r'; size]);
    let records: Vec<_> = (0..n)
        .map(|i| build::record(i as i64, ts, None, Some(value.clone())))
        .collect();
    let batch = build::encode(&records, Compression::None).expect("encode");
    let (code, offset) = common::raw_produce(addr, 8, topic, 0, batch, 10_000).expect("produce");
    assert_eq!(code, 0, "produce to {topic}");
    offset
}

/// ListOffsets earliest (-2) at `addr`: (error code, offset).
fn earliest(addr: &str, topic: &str) -> io::Result<(i16, i64)> {
    let mut conn = RawConn::connect(addr)?;
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-2)])]);
    let resp: ListOffsetsResponse = conn.roundtrip(4, 7, &req)?;
    let p = &resp.topics[0].partitions[0];
    Ok((p.error_code, p.offset))
}

fn replica_dir(c: &Cluster, id: i32, topic: &str) -> PathBuf {
    c.dir(id).join("data").join(format!("{topic}-0"))
}

/// Base offsets of the `.log` files in `dir`, sorted.
fn segment_bases(dir: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".log").and_then(|b| b.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn create(bs: &str, topic: &str, configs: &[&str]) {
    let mut args = vec![
        "topics",
        "--bootstrap-server",
        bs,
        "--create",
        "--topic",
        topic,
        "--partitions",
        "1",
        "--replication-factor",
        "3",
    ];
    for c in configs {
        args.extend_from_slice(&["--config", c]);
    }
    runnel_ok(&args);
}

/// The first offset a consumer assigned at offset 0 receives, with
/// `auto.offset.reset` as given; Err with librdkafka's error if it gets one.
fn first_offset_from_zero(bs: &str, topic: &str, reset: &str) -> Result<i64, String> {
    let mut cfg = reader_config(bs);
    cfg.set("auto.offset.reset", reset);
    let consumer: BaseConsumer = cfg.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(0))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => return Ok(m.offset()),
            Some(Err(e)) => return Err(e.to_string()),
            None => {}
        }
    }
    Err("nothing within the timeout".into())
}

#[test]
fn retention_by_time_and_size_and_delete_records_move_the_start_everywhere() {
    let mut c = Cluster::start_with(3, &["log.retention.check.interval.ms=500"]);
    let bs = c.bootstrap_all();

    step!("by time: retention.ms=3000, segments of 64 KiB");
    create(&bs, "aged", &["segment.bytes=65536", "retention.ms=3000"]);
    let st = wait_full_isr(&c, "aged", 0, TIMEOUT);
    let addr = c.node(st.leader).bootstrap();
    for _ in 0..12 {
        produce(&addr, "aged", 16, 1000, now_ms());
    }
    let end = produce(&addr, "aged", 1, 10, now_ms()) + 1;
    assert_eq!(earliest(&addr, "aged").unwrap(), (0, 0));
    for id in 1..=3 {
        let dir = replica_dir(&c, id, "aged");
        assert!(
            segment_bases(&dir).len() >= 3,
            "node {id} rolled segments: {:?}",
            segment_bases(&dir)
        );
    }
    // Every closed segment ages out; the active one stays.
    for id in 1..=3 {
        let dir = replica_dir(&c, id, "aged");
        let bases = eventually(
            Duration::from_secs(30),
            "old segments deleted on every replica",
            || {
                let b = segment_bases(&dir);
                (b.len() == 1 && b[0] > 0).then_some(b)
            },
        );
        step!("node {id}: segments now {bases:?}");
    }
    let (code, start) = earliest(&addr, "aged").unwrap();
    assert_eq!(code, 0);
    assert!(
        start > 0 && start < end,
        "log start {start} moved (end {end})"
    );

    step!("a consumer from offset 0: OFFSET_OUT_OF_RANGE, reset to earliest or an error");
    assert_eq!(first_offset_from_zero(&bs, "aged", "earliest"), Ok(start));
    let err = first_offset_from_zero(&bs, "aged", "error").unwrap_err();
    // librdkafka's _AUTO_OFFSET_RESET: the fetch got OFFSET_OUT_OF_RANGE and
    // auto.offset.reset=error says not to reset.
    assert!(err.contains("AutoOffsetReset"), "{err}");

    step!("by size: retention.bytes=150000 keeps about that much on every replica");
    create(
        &bs,
        "sized",
        &[
            "segment.bytes=65536",
            "retention.bytes=150000",
            "retention.ms=-1",
        ],
    );
    let st = wait_full_isr(&c, "sized", 0, TIMEOUT);
    let addr = c.node(st.leader).bootstrap();
    for _ in 0..40 {
        produce(&addr, "sized", 16, 1000, now_ms());
    }
    for id in 1..=3 {
        let dir = replica_dir(&c, id, "sized");
        let bytes = eventually(
            Duration::from_secs(30),
            "size retention on every replica",
            || {
                let b = dir_bytes(&dir);
                (b <= 150_000 + 65_536).then_some(b)
            },
        );
        assert!(
            bytes >= 150_000 - 65_536,
            "node {id} kept too little: {bytes}"
        );
        assert!(segment_bases(&dir)[0] > 0);
    }
    assert!(earliest(&addr, "sized").unwrap().1 > 0);

    step!("delete-records moves the start to 100 on the leader and the followers");
    create(&bs, "trimmed", &[]);
    let st = wait_full_isr(&c, "trimmed", 0, TIMEOUT);
    let addr = c.node(st.leader).bootstrap();
    for _ in 0..5 {
        produce(&addr, "trimmed", 50, 100, now_ms());
    }
    let plan = c.dir(1).join("offsets.json");
    std::fs::write(
        &plan,
        r#"{"partitions":[{"topic":"trimmed","partition":0,"offset":100}],"version":1}"#,
    )
    .unwrap();
    let out = runnel_ok(&[
        "delete-records",
        "--bootstrap-server",
        &bs,
        "--offset-json-file",
        plan.to_str().unwrap(),
    ]);
    assert!(
        out.contains("partition: trimmed-0\tlow_watermark: 100"),
        "{out}"
    );
    assert_eq!(earliest(&addr, "trimmed").unwrap(), (0, 100));
    assert_eq!(first_offset_from_zero(&bs, "trimmed", "earliest"), Ok(100));
    for id in 1..=3 {
        let file = replica_dir(&c, id, "trimmed").join("log-start-offset-checkpoint");
        eventually(TIMEOUT, "every replica wrote the new start", || {
            std::fs::read_to_string(&file)
                .ok()
                .filter(|t| t.lines().nth(1) == Some("100"))
        });
    }
    step!("kill -9 the leader: the new leader serves the same start");
    c.kill9(st.leader);
    let others: Vec<i32> = (1..=3).filter(|i| *i != st.leader).collect();
    let new_leader = eventually(TIMEOUT, "a new leader", || {
        partition_state(&c.node(others[0]).bootstrap(), "trimmed", 0)
            .ok()
            .filter(|s| s.leader > 0 && s.leader != st.leader)
            .map(|s| s.leader)
    });
    let got = eventually(TIMEOUT, "the new leader answers ListOffsets", || {
        earliest(&c.node(new_leader).bootstrap(), "trimmed")
            .ok()
            .filter(|(code, _)| *code == 0)
    });
    assert_eq!(got.1, 100, "the new leader's log start");
    // An offset above the high watermark is refused.
    std::fs::write(
        &plan,
        r#"{"partitions":[{"topic":"trimmed","partition":0,"offset":100000}]}"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "delete-records",
            "--bootstrap-server",
            &c.node(new_leader).bootstrap(),
            "--offset-json-file",
            plan.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("error:"),
        "{out:?}"
    );
}
