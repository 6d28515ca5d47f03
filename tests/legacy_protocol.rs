//! The oldest protocol versions, over raw TCP with hand-built requests as
//! the Kafka 0.9 clients (kafka-swoole, old PHP libraries) write them:
//! Produce v0-2 with message sets of magic 0 and 1, Fetch v0-3 with
//! down-converted message sets, ListOffsets v0; old and new clients on one
//! topic; every advertised (API, version) answered; every other version
//! closed cleanly; the codec and timestamp rules Kafka applies on append.

mod common;

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::Compression;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use runnel::protocol::message_set;
use runnel::protocol::versions::SUPPORTED;

use common::topics::raw_create_and_wait as create_topic;
use common::{assert_serving, frame, Node, RawConn};

/// A request frame: header v1 (key, version, correlation id, client id),
/// or v2 for flexible versions, then `body`.
fn request(api: ApiKey, version: i16, cid: i32, body: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(cid)
        .with_client_id(Some(StrBytes::from_static_str("kafka-swoole")))
        .encode(&mut buf, api.request_header_version(version))
        .expect("header");
    buf.put_slice(body);
    frame(&buf)
}

/// Sends one hand-built request and returns the answer's body (after the
/// v0 response header, whose correlation id is checked).
fn call(conn: &mut RawConn, api: ApiKey, version: i16, cid: i32, body: &[u8]) -> Bytes {
    conn.send_bytes(&request(api, version, cid, body))
        .unwrap_or_else(|e| panic!("{api:?} v{version}: send: {e}"));
    let mut resp = conn
        .read_frame()
        .unwrap_or_else(|e| panic!("{api:?} v{version}: read: {e}"))
        .unwrap_or_else(|| panic!("{api:?} v{version}: the broker closed the connection"));
    assert_eq!(resp.get_i32(), cid, "{api:?} v{version}: correlation id");
    resp
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn get_str(b: &mut Bytes) -> String {
    let n = b.get_i16();
    assert!(n >= 0, "null string");
    String::from_utf8(b.split_to(n as usize).to_vec()).expect("utf-8")
}

/// Produce v0-2 of one message set to `topic`/0 with acks=-1: (error, base offset).
fn produce_old(conn: &mut RawConn, version: i16, topic: &str, set: &[u8], cid: i32) -> (i16, i64) {
    let mut b = BytesMut::new();
    b.put_i16(-1);
    b.put_i32(10_000);
    b.put_i32(1);
    put_str(&mut b, topic);
    b.put_i32(1);
    b.put_i32(0);
    b.put_i32(set.len() as i32);
    b.put_slice(set);
    let mut r = call(conn, ApiKey::Produce, version, cid, &b);
    assert_eq!(r.get_i32(), 1);
    assert_eq!(get_str(&mut r), topic);
    assert_eq!(r.get_i32(), 1);
    assert_eq!(r.get_i32(), 0);
    let (error, base) = (r.get_i16(), r.get_i64());
    if version >= 2 {
        let _log_append_time = r.get_i64();
    }
    if version >= 1 {
        let _throttle = r.get_i32();
    }
    assert!(r.is_empty(), "Produce v{version}: {} bytes left", r.len());
    (error, base)
}

/// One message of a fetched message set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OldMessage {
    offset: i64,
    magic: i8,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

/// Parses an uncompressed message set as an old client does (CRC checked).
fn parse_set(mut set: Bytes) -> Vec<OldMessage> {
    let mut out = Vec::new();
    while set.remaining() >= 12 {
        let offset = set.get_i64();
        let size = set.get_i32() as usize;
        assert!(size <= set.remaining(), "partial message in a fetch answer");
        let mut m = set.split_to(size);
        let crc = m.get_u32();
        let mut h = flate2::Crc::new();
        h.update(&m);
        assert_eq!(crc, h.sum(), "CRC of the message at offset {offset}");
        let magic = m.get_i8();
        let attributes = m.get_i8();
        assert_eq!(
            attributes & 7,
            0,
            "down-converted messages are uncompressed"
        );
        let timestamp = (magic == 1).then(|| m.get_i64());
        let bytes = |m: &mut Bytes| {
            let n = m.get_i32();
            (n >= 0).then(|| m.split_to(n as usize).to_vec())
        };
        let key = bytes(&mut m);
        let value = bytes(&mut m);
        out.push(OldMessage {
            offset,
            magic,
            timestamp,
            key,
            value,
        });
    }
    out
}

/// Fetch v0-3 of `topic`/0 from `offset`: (error, high watermark, messages).
fn fetch_old(
    conn: &mut RawConn,
    version: i16,
    topic: &str,
    offset: i64,
    cid: i32,
) -> (i16, i64, Vec<OldMessage>) {
    let mut b = BytesMut::new();
    b.put_i32(-1);
    b.put_i32(100);
    b.put_i32(1);
    if version >= 3 {
        b.put_i32(1 << 20);
    }
    b.put_i32(1);
    put_str(&mut b, topic);
    b.put_i32(1);
    b.put_i32(0);
    b.put_i64(offset);
    b.put_i32(1 << 20);
    let mut r = call(conn, ApiKey::Fetch, version, cid, &b);
    if version >= 1 {
        let _throttle = r.get_i32();
    }
    assert_eq!(r.get_i32(), 1);
    assert_eq!(get_str(&mut r), topic);
    assert_eq!(r.get_i32(), 1);
    assert_eq!(r.get_i32(), 0);
    let error = r.get_i16();
    let hw = r.get_i64();
    let n = r.get_i32();
    let set = r.split_to(n.max(0) as usize);
    assert!(r.is_empty());
    (error, hw, parse_set(set))
}

/// ListOffsets v0 of `topic`/0 at `timestamp`: (error, offsets).
fn list_offsets_v0(conn: &mut RawConn, topic: &str, timestamp: i64, cid: i32) -> (i16, Vec<i64>) {
    let mut b = BytesMut::new();
    b.put_i32(-1);
    b.put_i32(1);
    put_str(&mut b, topic);
    b.put_i32(1);
    b.put_i32(0);
    b.put_i64(timestamp);
    b.put_i32(1);
    let mut r = call(conn, ApiKey::ListOffsets, 0, cid, &b);
    assert_eq!(r.get_i32(), 1);
    assert_eq!(get_str(&mut r), topic);
    assert_eq!(r.get_i32(), 1);
    assert_eq!(r.get_i32(), 0);
    let error = r.get_i16();
    let n = r.get_i32();
    let offsets = (0..n).map(|_| r.get_i64()).collect();
    (error, offsets)
}

fn kv(i: usize) -> (Vec<u8>, Vec<u8>) {
    (
        format!("key-{i}").into_bytes(),
        format!("value-{i}").into_bytes(),
    )
}

#[test]
fn kafka_0_9_clients_produce_fetch_and_list_offsets_alongside_librdkafka() {
    let mut node = Node::start(&[]);
    create_topic(&node, "legacy");
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    let t0 = 1_700_000_000_000i64;
    let records: Vec<(Vec<u8>, Vec<u8>)> = (0..9).map(kv).collect();
    let plain = |range: std::ops::Range<usize>| -> Vec<message_set::Plain<'_>> {
        range
            .map(|i| {
                (
                    t0 + i as i64,
                    Some(&records[i].0[..]),
                    Some(&records[i].1[..]),
                )
            })
            .collect()
    };

    step!("Produce v0, magic 0, gzip (as kafka-swoole sends it): 3 messages");
    let set = message_set::encode(0, Compression::Gzip, &plain(0..3)).unwrap();
    assert_eq!(produce_old(&mut conn, 0, "legacy", &set, 1), (0, 0));
    step!("Produce v1, magic 0, uncompressed: 2 messages");
    let set = message_set::encode(0, Compression::None, &plain(3..5)).unwrap();
    assert_eq!(produce_old(&mut conn, 1, "legacy", &set, 2), (0, 3));
    step!("Produce v2, magic 1 with timestamps, snappy: 2 messages; lz4: 2 more");
    let set = message_set::encode(1, Compression::Snappy, &plain(5..7)).unwrap();
    assert_eq!(produce_old(&mut conn, 2, "legacy", &set, 3), (0, 5));
    let set = message_set::encode(1, Compression::Lz4, &plain(7..9)).unwrap();
    assert_eq!(produce_old(&mut conn, 2, "legacy", &set, 4), (0, 7));

    step!("ListOffsets v0: latest, earliest, by the time of message 6");
    assert_eq!(list_offsets_v0(&mut conn, "legacy", -1, 5), (0, vec![9]));
    assert_eq!(list_offsets_v0(&mut conn, "legacy", -2, 6), (0, vec![0]));
    assert_eq!(
        list_offsets_v0(&mut conn, "legacy", t0 + 6, 7),
        (0, vec![6])
    );

    step!("Fetch v0 from 0: magic 0 messages, every key and value");
    let (error, hw, got) = fetch_old(&mut conn, 0, "legacy", 0, 8);
    assert_eq!((error, hw), (0, 9));
    let want: Vec<OldMessage> = (0..9)
        .map(|i| OldMessage {
            offset: i as i64,
            magic: 0,
            timestamp: None,
            key: Some(records[i].0.clone()),
            value: Some(records[i].1.clone()),
        })
        .collect();
    assert_eq!(got, want);
    step!("Fetch v2 and v3 from 4: magic 1, with the timestamps magic 1 producers wrote");
    for (version, cid) in [(2, 9), (3, 10)] {
        let (error, _, got) = fetch_old(&mut conn, version, "legacy", 4, cid);
        assert_eq!(error, 0);
        let offsets: Vec<i64> = got.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, (4..9).collect::<Vec<_>>(), "Fetch v{version}");
        for m in &got {
            assert_eq!(m.magic, 1);
            // Magic 0 messages had no timestamp: -1 after conversion.
            let want = if m.offset >= 5 { t0 + m.offset } else { -1 };
            assert_eq!(m.timestamp, Some(want), "offset {}", m.offset);
        }
    }

    step!("a librdkafka consumer reads what the v0-v2 producers wrote");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("group.id", "legacy-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("legacy", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).expect("assign");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 9 && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            seen.push((
                m.offset(),
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
                m.timestamp().to_millis(),
            ));
        }
    }
    assert_eq!(seen.len(), 9, "librdkafka read {seen:?}");
    for (offset, key, value, ts) in &seen {
        let i = *offset as usize;
        assert_eq!(key.as_deref(), Some(&records[i].0[..]));
        assert_eq!(value.as_deref(), Some(&records[i].1[..]));
        if i >= 5 {
            assert_eq!(*ts, Some(t0 + i as i64), "timestamp at {i}");
        }
    }

    step!("a librdkafka producer's records (with headers) are read by Fetch v0 and v2");
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("acks", "all")
        .set("compression.codec", "lz4")
        .create()
        .expect("producer");
    for i in 0..3 {
        producer
            .send(
                BaseRecord::to("legacy")
                    .partition(0)
                    .key(&format!("new-{i}"))
                    .payload(&format!("from librdkafka {i}"))
                    .timestamp(t0 + 100 + i)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "h",
                        value: Some("x"),
                    })),
            )
            .map_err(|(e, _)| e)
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let (error, hw, got) = fetch_old(&mut conn, 0, "legacy", 9, 11);
    assert_eq!((error, hw), (0, 12));
    let keys: Vec<_> = got.iter().map(|m| m.key.clone().unwrap()).collect();
    assert_eq!(
        keys,
        [b"new-0".to_vec(), b"new-1".to_vec(), b"new-2".to_vec()]
    );
    assert_eq!(got[2].value.as_deref(), Some(&b"from librdkafka 2"[..]));
    let (_, _, got) = fetch_old(&mut conn, 2, "legacy", 10, 12);
    assert_eq!(got[0].timestamp, Some(t0 + 101));
    assert_serving(&mut node, "after the old clients");
}

#[test]
fn zstd_needs_produce_v7_and_timestamps_come_from_the_records() {
    use runnel::protocol::{build, rewrite};
    let mut node = Node::start(&[]);
    create_topic(&node, "rules");
    let t0 = 1_700_000_000_000i64;

    step!("Produce v3 with a zstd batch: UNSUPPORTED_COMPRESSION_TYPE (76); v7 accepts it");
    let zstd = build::encode(
        &[build::record(0, t0, None, Some(Bytes::from("z")))],
        Compression::Zstd,
    )
    .unwrap();
    let produce = |version, records: Bytes| {
        common::raw_produce(&node.bootstrap(), version, "rules", 0, records, 10_000)
            .unwrap_or_else(|e| panic!("Produce v{version}: {e}"))
    };
    let (code, _) = produce(3, zstd.clone());
    assert_eq!(code, 76, "zstd at Produce v3");
    let (code, base) = produce(7, zstd);
    assert_eq!((code, base), (0, 0), "zstd at Produce v7");

    step!("a batch whose header says max timestamp -1 (as Sarama writes it) is indexed by its records");
    let records: Vec<_> = (0..3)
        .map(|i| build::record(i, t0 + 1000 * i, None, Some(Bytes::from(format!("s{i}")))))
        .collect();
    let mut b = build::encode(&records, Compression::None).unwrap().to_vec();
    rewrite::set_max_timestamp(&mut b, -1).unwrap();
    let (code, base) = produce(9, Bytes::from(b));
    assert_eq!((code, base), (0, 1));
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    assert_eq!(
        list_offsets_v0(&mut conn, "rules", t0 + 1500, 1),
        (0, vec![3])
    );
    assert_eq!(list_offsets_v0(&mut conn, "rules", t0 + 1, 2), (0, vec![2]));
    let (error, _, got) = fetch_old(&mut conn, 2, "rules", 1, 3);
    assert_eq!(error, 0);
    let ts: Vec<_> = got.iter().map(|m| m.timestamp).collect();
    assert_eq!(ts, [Some(t0), Some(t0 + 1000), Some(t0 + 2000)]);
    assert_serving(&mut node, "after the codec and timestamp rules");
}

#[test]
fn hostile_message_sets_get_errors_and_lose_nothing() {
    let mut node = Node::start(&[]);
    create_topic(&node, "hostile");
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    let good = message_set::encode(1, Compression::None, &[(1, Some(b"k"), Some(b"v"))]).unwrap();
    assert_eq!(produce_old(&mut conn, 2, "hostile", &good, 1), (0, 0));

    step!("bad CRC: CORRUPT_MESSAGE (2)");
    let mut bad = good.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    assert_eq!(produce_old(&mut conn, 2, "hostile", &bad, 2).0, 2);
    step!("truncated message set: CORRUPT_MESSAGE");
    assert_eq!(
        produce_old(&mut conn, 0, "hostile", &good[..good.len() - 2], 3).0,
        2
    );
    step!("a message size of 2^31-1: CORRUPT_MESSAGE");
    let mut huge = good.to_vec();
    huge[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    assert_eq!(produce_old(&mut conn, 1, "hostile", &huge, 4).0, 2);
    step!(
        "a gzip bomb (64 MiB of zeros and more): CORRUPT_MESSAGE, nothing inflated past the bound"
    );
    let zeros = vec![0u8; 65 << 20];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &zeros).unwrap();
    let bomb = gz.finish().unwrap();
    let wrapper = wrapper_message(1, 1, &bomb);
    assert_eq!(produce_old(&mut conn, 2, "hostile", &wrapper, 5).0, 2);
    step!("nested compression: INVALID_RECORD (87)");
    let inner = message_set::encode(1, Compression::Gzip, &[(1, None, Some(b"x"))]).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &inner).unwrap();
    let nested = wrapper_message(1, 1, &gz.finish().unwrap());
    assert_eq!(produce_old(&mut conn, 2, "hostile", &nested, 6).0, 87);

    step!("nothing but the first message was stored");
    let (error, hw, got) = fetch_old(&mut conn, 1, "hostile", 0, 7);
    assert_eq!((error, hw, got.len()), (0, 1, 1));
    assert_serving(&mut node, "after hostile message sets");
}

/// One compressed message of `magic` with codec `attributes` around
/// `payload` (whatever it is), with a correct CRC.
fn wrapper_message(magic: i8, attributes: i8, payload: &[u8]) -> Vec<u8> {
    let mut m = BytesMut::new();
    m.put_i8(magic);
    m.put_i8(attributes);
    if magic == 1 {
        m.put_i64(0);
    }
    m.put_i32(-1);
    m.put_i32(payload.len() as i32);
    m.put_slice(payload);
    let mut crc = flate2::Crc::new();
    crc.update(&m);
    let mut out = BytesMut::new();
    out.put_i64(0);
    out.put_i32(m.len() as i32 + 4);
    out.put_u32(crc.sum());
    out.put_slice(&m);
    out.to_vec()
}

/// A small, valid body for `api` at `version`: the codec's default request
/// where it has the version (made harmless: acks=1, no waiting), otherwise
/// the old layout by hand.
fn minimal_body(api: ApiKey, version: i16) -> Vec<u8> {
    use kafka_protocol::messages::*;
    let mut b = BytesMut::new();
    let min = api.valid_versions().min;
    if version < min {
        // Hand-coded versions, as their clients write an empty request.
        match api {
            ApiKey::Produce => {
                b.put_i16(1);
                b.put_i32(1000);
                b.put_i32(0);
            }
            ApiKey::Fetch => {
                b.put_i32(-1);
                b.put_i32(0);
                b.put_i32(0);
                if version >= 3 {
                    b.put_i32(1 << 20);
                }
                b.put_i32(0);
            }
            ApiKey::ListOffsets => {
                b.put_i32(-1);
                b.put_i32(0);
            }
            ApiKey::OffsetCommit => {
                put_str(&mut b, "g");
                if version >= 1 {
                    b.put_i32(-1);
                    put_str(&mut b, "");
                }
                b.put_i32(0);
            }
            ApiKey::OffsetFetch => {
                put_str(&mut b, "g");
                b.put_i32(0);
            }
            ApiKey::CreateTopics => {
                b.put_i32(0);
                b.put_i32(1000);
                if version >= 1 {
                    b.put_u8(0);
                }
            }
            ApiKey::DeleteTopics => {
                b.put_i32(0);
                b.put_i32(1000);
            }
            ApiKey::OffsetForLeaderEpoch => b.put_i32(0),
            ApiKey::DescribeConfigs => b.put_i32(0),
            other => panic!("{other:?} v{version} has no hand-built body"),
        }
        return b.to_vec();
    }
    macro_rules! enc {
        ($e:expr) => {
            $e.encode(&mut b, version)
                .unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"))
        };
    }
    match api {
        ApiKey::Produce => enc!(ProduceRequest::default().with_acks(1)),
        ApiKey::Fetch => enc!(FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)),
        ApiKey::ListOffsets => enc!(ListOffsetsRequest::default().with_replica_id(BrokerId(-1))),
        ApiKey::OffsetForLeaderEpoch => {
            enc!(OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(-1)))
        }
        ApiKey::ElectLeaders => {
            enc!(ElectLeadersRequest::default().with_topic_partitions(Some(vec![])))
        }
        ApiKey::DescribeProducers => enc!(DescribeProducersRequest::default()),
        ApiKey::Metadata => enc!(MetadataRequest::default().with_topics(Some(vec![]))),
        ApiKey::ApiVersions => enc!(ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("t"))
            .with_client_software_version(StrBytes::from_static_str("1"))),
        ApiKey::CreateTopics => enc!(CreateTopicsRequest::default()),
        ApiKey::DeleteTopics => enc!(DeleteTopicsRequest::default()),
        ApiKey::CreatePartitions => enc!(CreatePartitionsRequest::default()),
        ApiKey::DescribeCluster => enc!(DescribeClusterRequest::default()),
        ApiKey::DescribeLogDirs => enc!(DescribeLogDirsRequest::default()),
        ApiKey::DescribeTopicPartitions => {
            enc!(DescribeTopicPartitionsRequest::default().with_response_partition_limit(100))
        }
        ApiKey::InitProducerId => enc!(InitProducerIdRequest::default()
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)),
        ApiKey::DescribeQuorum => enc!(DescribeQuorumRequest::default()),
        ApiKey::OffsetCommit => enc!(OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(-1)),
        ApiKey::OffsetFetch => enc!(if version >= 8 {
            OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(StrBytes::from_static_str("g"))),
            ])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_topics(Some(vec![]))
        }),
        ApiKey::FindCoordinator => enc!(if version >= 4 {
            FindCoordinatorRequest::default()
                .with_coordinator_keys(vec![StrBytes::from_static_str("g")])
        } else {
            FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"))
        }),
        ApiKey::JoinGroup => enc!(JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))),
        ApiKey::Heartbeat => {
            enc!(HeartbeatRequest::default().with_group_id(GroupId(StrBytes::from_static_str("g"))))
        }
        ApiKey::LeaveGroup => {
            enc!(LeaveGroupRequest::default().with_group_id(GroupId(StrBytes::from_static_str("g"))))
        }
        ApiKey::SyncGroup => {
            enc!(SyncGroupRequest::default().with_group_id(GroupId(StrBytes::from_static_str("g"))))
        }
        ApiKey::DescribeGroups => enc!(DescribeGroupsRequest::default()),
        ApiKey::ListGroups => enc!(ListGroupsRequest::default()),
        ApiKey::DeleteGroups => enc!(DeleteGroupsRequest::default()),
        ApiKey::OffsetDelete => {
            enc!(OffsetDeleteRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g"))))
        }
        ApiKey::DeleteRecords => enc!(DeleteRecordsRequest::default()),
        ApiKey::DescribeConfigs => enc!(DescribeConfigsRequest::default()),
        ApiKey::AlterConfigs => enc!(AlterConfigsRequest::default()),
        ApiKey::IncrementalAlterConfigs => enc!(IncrementalAlterConfigsRequest::default()),
        other => panic!("{other:?} is advertised but has no minimal body here"),
    }
    b.to_vec()
}

#[test]
fn every_advertised_version_is_answered_and_others_are_closed() {
    let mut node = Node::start(&[]);
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    let mut cid = 0;
    let mut answered = 0;
    for r in SUPPORTED {
        for version in r.min..=r.max {
            cid += 1;
            let body = minimal_body(r.key, version);
            conn.send_bytes(&request(r.key, version, cid, &body))
                .unwrap_or_else(|e| panic!("{:?} v{version}: send: {e}", r.key));
            let frame = conn
                .read_frame()
                .unwrap_or_else(|e| panic!("{:?} v{version}: no answer: {e}", r.key))
                .unwrap_or_else(|| panic!("{:?} v{version}: connection closed", r.key));
            let got = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
            assert_eq!(got, cid, "{:?} v{version}: correlation id", r.key);
            answered += 1;
        }
    }
    step!("{answered} advertised (API, version) pairs answered on one connection");

    for r in SUPPORTED {
        let version = r.max + 1;
        let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
        conn.send_bytes(&request(r.key, version, 1, &[0u8; 16]))
            .expect("send");
        if r.key == ApiKey::ApiVersions {
            // KIP-511: an ApiVersions from the future gets the v0 answer.
            let frame = conn.read_frame().expect("answer").expect("answer");
            assert_eq!(&frame[4..6], &35i16.to_be_bytes(), "UNSUPPORTED_VERSION");
            continue;
        }
        if let Err(e) = conn.expect_closed(Duration::from_secs(10)) {
            panic!("{:?} v{version}: expected a clean close, but {e}", r.key);
        }
    }
    step!("every unadvertised version (max + 1) closed at once");
    let log = node.log();
    assert!(
        log.contains("is not supported"),
        "the broker logs why it closed: {}",
        node.log_tail(20)
    );
    assert_serving(&mut node, "after every version");
}
