//! Log compaction on a real 3-node cluster: an RF=3 topic with
//! `cleanup.policy=compact`, written with many updates per key in batches
//! of every codec (with headers) and with tombstones. After cleaning, a
//! consumer from the beginning sees exactly the latest value per key with
//! increasing offsets, the tombstones go after `delete.retention.ms`, and
//! every replica's files hold the same. Then a follower is killed with
//! SIGKILL in the middle of a cleaning pass (slowed by
//! `log.cleaner.io.max.bytes.per.second`): it restarts, its log opens, and
//! it still gives the latest value per key.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::Cluster;
use common::partition::{reader_config, wait_full_isr};
use common::{eventually, now_ms, runnel_ok};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use runnel::protocol::build;

const TIMEOUT: Duration = Duration::from_secs(60);
const TOPIC: &str = "cdc";
const KEYS: usize = 20;

fn value_of(round: usize, key: usize) -> Vec<u8> {
    let mut v = format!("round-{round}-key-{key}-").into_bytes();
    v.resize(120, b'.');
    v
}

fn key_of(key: usize) -> String {
    format!("k{key:02}")
}

/// One batch, `codec`, of (key, value) records with a `round` header.
fn send(addr: &str, round: usize, records: &[(String, Option<Vec<u8>>)], codec: Compression) {
    let recs: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let mut r = build::record(
                i as i64,
                now_ms(),
                Some(Bytes::from(k.clone())),
                v.clone().map(Bytes::from),
            );
            r.headers.insert(
                StrBytes::from_static_str("round"),
                Some(Bytes::from(round.to_string())),
            );
            r
        })
        .collect();
    let batch = build::encode(&recs, codec).expect("encode");
    let (code, _) = common::raw_produce(addr, 8, TOPIC, 0, batch, 10_000).expect("produce");
    assert_eq!(code, 0, "produce round {round}");
}

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// Writes `rounds` updates of every key, each round one batch.
fn write_rounds(addr: &str, from: usize, rounds: usize, expected: &mut BTreeMap<String, Vec<u8>>) {
    for round in from..from + rounds {
        let recs: Vec<_> = (0..KEYS)
            .map(|k| (key_of(k), Some(value_of(round, k))))
            .collect();
        send(addr, round, &recs, CODECS[round % CODECS.len()]);
        for (k, v) in recs {
            expected.insert(k, v.unwrap());
        }
    }
}

/// Makes the segment written so far a closed one: after segment.ms, an
/// append rolls.
fn roll(addr: &str, expected: &mut BTreeMap<String, Vec<u8>>, n: usize) {
    std::thread::sleep(Duration::from_millis(1200));
    // Its own key: the active segment is never cleaned, so it supersedes
    // nothing before it.
    let (k, v) = (format!("roll-{n}"), b"roll".to_vec());
    send(
        addr,
        9999,
        &[(k.clone(), Some(v.clone()))],
        Compression::None,
    );
    expected.insert(k, v);
}

/// Every record a consumer from offset 0 reads up to the log end:
/// (offset, key, value, round header), in order.
/// (offset, key, value, `round` header) of a consumed record.
type Consumed = (i64, String, Option<Vec<u8>>, Option<String>);

fn consume(bs: &str) -> Vec<Consumed> {
    let consumer: BaseConsumer = reader_config(bs).create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let (_, high) = consumer
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .expect("watermarks");
    let mut out: Vec<Consumed> = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while out.last().is_none_or(|(o, ..)| o + 1 < high) && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let round = m.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == "round")
                        .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                });
                out.push((
                    m.offset(),
                    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    m.payload().map(<[u8]>::to_vec),
                    round,
                ));
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    out
}

/// Whether `records` (in order) hold exactly the latest value of each
/// key of `expected`, once, with increasing offsets and no tombstone.
fn exactly_latest(
    records: &[(i64, String, Option<Vec<u8>>)],
    expected: &BTreeMap<String, Vec<u8>>,
) -> Result<(), String> {
    if records.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err("offsets do not increase".into());
    }
    let mut seen: BTreeMap<&str, &Option<Vec<u8>>> = BTreeMap::new();
    for (_, k, v) in records {
        if seen.insert(k, v).is_some() {
            return Err(format!("key {k} appears more than once"));
        }
    }
    if seen.len() != expected.len() {
        return Err(format!("{} keys, expected {}", seen.len(), expected.len()));
    }
    for (k, v) in expected {
        match seen.get(k.as_str()) {
            Some(Some(got)) if got == v => {}
            other => return Err(format!("key {k}: {other:?}")),
        }
    }
    Ok(())
}

fn replica_dir(c: &Cluster, id: i32) -> PathBuf {
    c.dir(id).join("data").join(format!("{TOPIC}-0"))
}

/// The records in a replica's files, read with a stock decoder, in order.
fn on_disk(dir: &Path) -> Vec<(i64, String, Option<Vec<u8>>)> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    let mut out = Vec::new();
    for path in logs {
        let bytes = std::fs::read(&path).unwrap_or_default();
        for b in runnel::protocol::batch::batches(&bytes) {
            let Ok(b) = b else { break };
            let mut buf = Bytes::copy_from_slice(b.bytes);
            let Ok(set) = RecordBatchDecoder::decode(&mut buf) else {
                break;
            };
            for r in set.records {
                out.push((
                    r.offset,
                    String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                    r.value.map(|v| v.to_vec()),
                ));
            }
        }
    }
    out
}

#[test]
fn compaction_keeps_the_latest_value_per_key_everywhere_and_survives_a_kill_mid_pass() {
    let mut c = Cluster::start_with(3, &["log.cleaner.backoff.ms=200"]);
    let bs = c.bootstrap_all();
    runnel_ok(&[
        "topics",
        "--bootstrap-server",
        &bs,
        "--create",
        "--topic",
        TOPIC,
        "--partitions",
        "1",
        "--replication-factor",
        "3",
        "--config",
        "cleanup.policy=compact",
        "--config",
        "segment.bytes=16384",
        "--config",
        "segment.ms=1000",
        "--config",
        "min.cleanable.dirty.ratio=0.01",
        "--config",
        "delete.retention.ms=3000",
        "--config",
        "min.insync.replicas=2",
    ]);
    let st = wait_full_isr(&c, TOPIC, 0, TIMEOUT);
    let addr = c.node(st.leader).bootstrap();

    step!("30 updates of {KEYS} keys, every codec, then tombstones for 5 keys");
    let mut expected = BTreeMap::new();
    write_rounds(&addr, 0, 30, &mut expected);
    let tombstones: Vec<_> = (0..5).map(|k| (key_of(k), None)).collect();
    send(&addr, 30, &tombstones, Compression::Lz4);
    for (k, _) in &tombstones {
        expected.remove(k);
    }
    // A keyless record is refused by a compacted topic.
    let keyless = build::encode(
        &[build::record(
            0,
            now_ms(),
            None,
            Some(Bytes::from("no key")),
        )],
        Compression::None,
    )
    .unwrap();
    let (code, _) = common::raw_produce(&addr, 8, TOPIC, 0, keyless, 10_000).unwrap();
    assert_eq!(code, 87, "INVALID_RECORD for a keyless record");
    roll(&addr, &mut expected, 1);

    step!("a consumer from the beginning sees exactly the latest value per key");
    let mut last_round_seen = None;
    eventually(TIMEOUT, "cleaned, tombstones gone", || {
        let got = consume(&bs);
        last_round_seen = got
            .iter()
            .rev()
            .find(|r| r.1 == "k10")
            .and_then(|r| r.3.clone());
        let plain: Vec<_> = got.into_iter().map(|(o, k, v, _)| (o, k, v)).collect();
        exactly_latest(&plain, &expected).ok()
    });
    assert_eq!(
        last_round_seen.as_deref(),
        Some("29"),
        "headers survive cleaning"
    );
    for id in 1..=3 {
        let dir = replica_dir(&c, id);
        eventually(
            TIMEOUT,
            "every replica's files hold exactly the latest values",
            || exactly_latest(&on_disk(&dir), &expected).ok(),
        );
    }

    step!("slow the cleaner, write more, and kill a follower mid-pass");
    runnel_ok(&[
        "configs",
        "--bootstrap-server",
        &bs,
        "--entity-type",
        "brokers",
        "--entity-default",
        "--alter",
        "--add-config",
        "log.cleaner.io.max.bytes.per.second=40000",
    ]);
    write_rounds(&addr, 31, 100, &mut expected);
    roll(&addr, &mut expected, 2);
    let follower = (1..=3).find(|id| *id != st.leader).unwrap();
    let fdir = replica_dir(&c, follower);
    eventually(
        TIMEOUT,
        "a cleaning pass in progress on the follower",
        || {
            std::fs::read_dir(&fdir)
                .ok()?
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".cleaned"))
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    c.kill9(follower);
    step!("killed node {follower} mid-pass; restarting it");
    runnel_ok(&[
        "configs",
        "--bootstrap-server",
        &c.node(st.leader).bootstrap(),
        "--entity-type",
        "brokers",
        "--entity-default",
        "--alter",
        "--delete-config",
        "log.cleaner.io.max.bytes.per.second",
    ]);
    c.restart(follower);
    wait_full_isr(&c, TOPIC, 0, TIMEOUT);
    // Whatever the kill left, the latest value of every key is there.
    let after_kill = on_disk(&fdir);
    let mut latest: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (_, k, v) in &after_kill {
        match v {
            Some(v) => latest.insert(k.clone(), v.clone()),
            None => latest.remove(k),
        };
    }
    assert_eq!(latest, expected, "the killed replica's latest values");
    for id in 1..=3 {
        let dir = replica_dir(&c, id);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match exactly_latest(&on_disk(&dir), &expected) {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => {
                    panic!("node {id} after the kill: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }
    let plain: Vec<_> = consume(&bs)
        .into_iter()
        .map(|(o, k, v, _)| (o, k, v))
        .collect();
    exactly_latest(&plain, &expected).expect("a consumer after the kill");
}
