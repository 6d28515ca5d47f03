//! Compression bombs in produced batches, against a real `runnel` process.
//!
//! Produce inflates a compressed batch to set its max timestamp from its
//! records, as Kafka does, and that inflation is bounded
//! (`protocol::decompress`, 64 MiB): a batch whose records are ~1 GiB of
//! zeros in 1 MiB of gzip, or a few KiB of zstd, is refused with
//! CORRUPT_MESSAGE. The process stays up with its peak RSS far below the
//! bomb's size, nothing produced around the bombs is lost, and lookups that
//! inflate stored batches (ListOffsets by timestamp, MAX_TIMESTAMP) still
//! answer.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use common::topics::raw_create_and_wait;
use common::{assert_serving, Node, RawConn};
use runnel::protocol::build;

const TOPIC: &str = "bombs";
/// Zeros behind each bomb's records section.
const BOMB_BYTES: u64 = 1 << 30;
/// Fed to the encoders this much at a time, so the test never holds the bomb.
const CHUNK: usize = 1 << 20;
/// The broker's peak resident set must stay below this, bombs included.
const RSS_BOUND_KIB: u64 = 512 * 1024;
/// A gzip stream tops out at ~1032:1, so 1 GiB of zeros is ~1 MiB of gzip:
/// just over the default `message.max.bytes` (1048588).
const MESSAGE_MAX_BYTES: &str = "8388608";
const CORRUPT_MESSAGE: i16 = 2;

/// Peak and current resident set of `pid`, in KiB (`VmHWM`, `VmRSS`).
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A normal batch of `values`, timestamps `ts0`, `ts0 + 1`, …
fn batch(values: &[&str], ts0: i64, compression: Compression) -> Bytes {
    let records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            build::record(
                i as i64,
                ts0 + i as i64,
                None,
                Some(Bytes::from(v.to_string())),
            )
        })
        .collect();
    build::encode(&records, compression).expect("encode batch")
}

/// `BOMB_BYTES` zeros through `encoder`, a chunk at a time.
fn zeros_into<W: Write>(mut encoder: W) -> W {
    let zeros = vec![0u8; CHUNK];
    for _ in 0..BOMB_BYTES / CHUNK as u64 {
        encoder.write_all(&zeros).expect("compress");
    }
    encoder
}

fn gzip_bomb() -> Vec<u8> {
    let e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    zeros_into(e).finish().expect("gzip finish")
}

fn zstd_bomb() -> Vec<u8> {
    let e = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd encoder");
    zeros_into(e).finish().expect("zstd finish")
}

/// A v2 RecordBatch around arbitrary compressed `records`, built field by
/// field: kafka-protocol's encoder compresses records itself and cannot
/// wrap bytes it did not make. One record claimed, at `timestamp`, with a
/// correct CRC-32C, so that Produce accepts it.
fn bomb_batch(codec: Compression, records: &[u8], timestamp: i64) -> Bytes {
    let attributes: i16 = match codec {
        Compression::Gzip => 1,
        Compression::Zstd => 4,
        other => panic!("no bomb for {other:?}"),
    };
    let mut b = Vec::with_capacity(61 + records.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset, the broker assigns it
    let batch_length = i32::try_from(61 - 12 + records.len()).expect("fits");
    b.extend_from_slice(&batch_length.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&[0; 4]); // CRC, below
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    b.extend_from_slice(&timestamp.to_be_bytes()); // base timestamp
    b.extend_from_slice(&timestamp.to_be_bytes()); // max timestamp
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&1i32.to_be_bytes()); // records count
    assert_eq!(b.len(), 61);
    b.extend_from_slice(records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// Produce (v9, acks=-1) of one partition's records: (error code, base
/// offset). acks=-1 rather than 1 so that the high watermark has passed the
/// batch when this returns: ListOffsets hides offsets at or above it.
fn produce(node: &Node, records: Bytes) -> (i16, i64) {
    common::raw_produce(&node.bootstrap(), 9, TOPIC, 0, records, 30_000).expect("Produce response")
}

/// ListOffsets v8 for `timestamp` (or a sentinel): (error code, timestamp,
/// offset), and how long the broker took.
fn list_offsets(node: &Node, timestamp: i64) -> ((i16, i64, i64), Duration) {
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(0)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(TOPIC))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_current_leader_epoch(-1)
                .with_timestamp(timestamp)])]);
    let sent = Instant::now();
    let resp = conn
        .roundtrip(8, 11, &req)
        .unwrap_or_else(|e| panic!("ListOffsets {timestamp}: no answer: {e}"));
    let took = sent.elapsed();
    let p = &resp.topics[0].partitions[0];
    ((p.error_code, p.timestamp, p.offset), took)
}

/// Every batch of the partition from offset 0 up to `end`, raw, via Fetch v12.
fn fetch_all(node: &Node, end: i64) -> Vec<Bytes> {
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    let mut batches = Vec::new();
    let mut next = 0i64;
    while next < end {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(16 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(TOPIC))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(next)
                    .with_partition_max_bytes(16 << 20)])]);
        let resp = conn.roundtrip(12, 21, &req).expect("Fetch");
        let part = &resp.responses[0].partitions[0];
        assert_eq!(part.error_code, 0, "Fetch from {next}");
        let records = part.records.clone().unwrap_or_default();
        let mut pos = 0;
        let before = next;
        while pos + 61 <= records.len() {
            let len = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().unwrap());
            let size = 12 + usize::try_from(len).expect("batch length");
            if pos + size > records.len() {
                break;
            }
            let b = records.slice(pos..pos + size);
            let base = i64::from_be_bytes(b[..8].try_into().unwrap());
            let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
            next = base + i64::from(last_delta) + 1;
            batches.push(b);
            pos += size;
        }
        assert!(next > before, "Fetch from {before} made no progress");
    }
    batches
}

#[test]
fn gzip_and_zstd_bombs_are_refused_within_bounded_memory() {
    let started = Instant::now();
    let mut node = Node::start(&[("message.max.bytes", MESSAGE_MAX_BYTES)]);
    let pid = node.pid().expect("broker pid");
    raw_create_and_wait(&node, TOPIC);
    let (hwm0, rss0) = rss_kib(pid);
    step!(
        "broker pid {pid}: VmHWM {} VmRSS {} at start",
        mib(hwm0),
        mib(rss0)
    );

    // Timestamps near now, in an order that lets each lookup reach one bomb.
    let base = now_ms() - 3_600_000;
    let (t_plain, t_gzip, t_bomb_gz, t_bomb_zstd, t_after) = (
        base,
        base + 10_000,
        base + 20_000,
        base + 30_000,
        base + 5_000,
    );

    step!("produce 5 plain records (offsets 0-4) and 3 gzip records (5-7)");
    let plain = ["p0", "p1", "p2", "p3", "p4"];
    let zipped = ["g0", "g1", "g2"];
    assert_eq!(
        produce(&node, batch(&plain, t_plain, Compression::None)),
        (0, 0)
    );
    assert_eq!(
        produce(&node, batch(&zipped, t_gzip, Compression::Gzip)),
        (0, 5)
    );

    step!("compress {} MiB of zeros with gzip", BOMB_BYTES >> 20);
    let gz = gzip_bomb();
    step!("... {} bytes of gzip", gz.len());
    step!("compress {} MiB of zeros with zstd", BOMB_BYTES >> 20);
    let zs = zstd_bomb();
    step!("... {} bytes of zstd", zs.len());
    let gz_batch = bomb_batch(Compression::Gzip, &gz, t_bomb_gz);
    let zs_batch = bomb_batch(Compression::Zstd, &zs, t_bomb_zstd);

    for (what, bomb) in [("gzip", &gz_batch), ("zstd", &zs_batch)] {
        step!("produce the {what} bomb ({} bytes): refused", bomb.len());
        let (code, _) = produce(&node, bomb.clone());
        assert_eq!(code, CORRUPT_MESSAGE, "{what} bomb produce");
        let (hwm, rss) = rss_kib(pid);
        step!("... broker VmHWM {} VmRSS {}", mib(hwm), mib(rss));
        assert!(
            hwm < RSS_BOUND_KIB,
            "broker peak RSS {} is over {} after the {what} bomb",
            mib(hwm),
            mib(RSS_BOUND_KIB)
        );
        assert_serving(&mut node, &format!("after the {what} bomb"));
    }
    step!("produce one plain record after the bombs (offset 8)");
    assert_eq!(
        produce(&node, batch(&["after"], t_after, Compression::None)),
        (0, 8)
    );

    step!("ListOffsets still finds records, plain and gzip, and the largest timestamp");
    assert_eq!(list_offsets(&node, t_plain + 2).0, (0, t_plain + 2, 2));
    assert_eq!(list_offsets(&node, t_gzip + 1).0, (0, t_gzip + 1, 6));
    assert_eq!(list_offsets(&node, -2).0 .2, 0, "earliest");
    assert_eq!(list_offsets(&node, -1).0 .2, 9, "latest");
    assert_eq!(
        list_offsets(&node, -3).0,
        (0, t_gzip + 2, 7),
        "MAX_TIMESTAMP"
    );

    step!("every record is still there: fetch offsets 0-8");
    let batches = fetch_all(&node, 9);
    let mut values = Vec::new();
    for b in &batches {
        let set = RecordBatchDecoder::decode(&mut b.clone()).expect("decode batch");
        for r in set.records {
            let v = r.value.expect("value");
            values.push(format!("{}:{}", r.offset, String::from_utf8_lossy(&v)));
        }
    }
    assert_eq!(
        values,
        ["0:p0", "1:p1", "2:p2", "3:p3", "4:p4", "5:g0", "6:g1", "7:g2", "8:after"]
    );

    let (hwm, rss) = rss_kib(pid);
    step!(
        "broker peak RSS (VmHWM) {} (bound {}), VmRSS now {}; test took {:?}",
        mib(hwm),
        mib(RSS_BOUND_KIB),
        mib(rss),
        started.elapsed()
    );
    assert!(
        hwm < RSS_BOUND_KIB,
        "broker peak RSS {} is over {}",
        mib(hwm),
        mib(RSS_BOUND_KIB)
    );
    node.stop();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}
