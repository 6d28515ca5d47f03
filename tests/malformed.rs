//! Hostile and malformed input on the Kafka listener, over raw TCP. Each case
//! checks the documented reaction (a closed connection or a Kafka error
//! code) and then that the broker process is still alive and serves
//! ApiVersions and Metadata on a fresh connection: one bad client must never
//! take the broker down.

mod common;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, ProduceRequest,
    ProduceResponse, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{Compression, Record};
use runnel::protocol::build;

use common::topics::raw_create_and_wait as create_topic;
use common::{
    assert_serving, encode_request, frame, produce_request, produce_result, Node, RawConn,
};

const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// Sends bytes the broker may stop reading part-way: a failed write is fine,
/// the broker is allowed to hang up on us.
fn send_lenient(conn: &mut RawConn, bytes: &[u8]) {
    if let Err(e) = conn.send_bytes(bytes) {
        step!("write failed ({e}); the broker hung up early");
    }
}

fn expect_closed(conn: &mut RawConn, what: &str) {
    if let Err(e) = conn.expect_closed(CLOSE_WITHIN) {
        panic!("{what}: expected the broker to close the connection, but {e}");
    }
    step!("{what}: connection closed");
}

/// One v2 batch per value (plain records of their own: see
/// `build::lone_record`), keys "k0", "k1", ...
fn record_batch(values: &[Vec<u8>]) -> BytesMut {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            build::lone_record(
                i as i64,
                1_700_000_000_000,
                Some(Bytes::from(format!("k{i}"))),
                Some(Bytes::from(v.clone())),
            )
        })
        .collect();
    BytesMut::from(&build::encode(&records, Compression::None).expect("encode batch")[..])
}

/// Produce v9 (acks=-1) of `batch` on `conn`: (error code, base offset).
fn produce(conn: &mut RawConn, topic: &'static str, batch: Bytes, cid: i32) -> (i16, i64) {
    let req = produce_request(topic, 0, batch, 30_000);
    let resp: ProduceResponse = conn.roundtrip(9, cid, &req).expect("Produce response");
    produce_result(&resp)
}

// ------------------------------------------------------------------ cases --

#[test]
fn frame_longer_than_socket_request_max_bytes_is_closed() {
    let mut node = Node::start(&[("socket.request.max.bytes", "4096")]);
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    step!("announce a 100000-byte frame (limit 4096)");
    let mut bytes = 100_000i32.to_be_bytes().to_vec();
    bytes.extend(std::iter::repeat_n(0u8, 1000));
    send_lenient(&mut conn, &bytes);
    expect_closed(&mut conn, "oversized frame");
    assert_serving(&mut node, "after an oversized frame");

    step!("a request just under the limit is still served");
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    let req = MetadataRequest::default().with_topics(Some(vec![]));
    conn.roundtrip(1, 5, &req)
        .expect("small Metadata under the limit");
}

#[test]
fn negative_frame_length_is_closed() {
    let mut node = Node::start(&[]);
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    step!("frame length -5");
    let mut bytes = (-5i32).to_be_bytes().to_vec();
    bytes.extend([0u8; 16]);
    send_lenient(&mut conn, &bytes);
    expect_closed(&mut conn, "negative frame length");
    assert_serving(&mut node, "after a negative frame length");
}

#[test]
fn metadata_claiming_2_pow_31_topics_is_closed_without_abort() {
    let mut node = Node::start(&[]);
    // Metadata v1 (non-flexible): header v1 = api key, version, correlation
    // id, client id "ab"; body = topic array count i32::MAX and nothing else.
    let mut body = BytesMut::new();
    body.put_i16(3);
    body.put_i16(1);
    body.put_i32(77);
    body.put_i16(2);
    body.put_slice(b"ab");
    body.put_i32(i32::MAX);
    let bytes = frame(&body);
    assert_eq!(bytes.len(), 20);
    step!("20-byte Metadata v1 claiming {} topics", i32::MAX);
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    send_lenient(&mut conn, &bytes);
    expect_closed(&mut conn, "Metadata with 2^31-1 topics");
    assert_serving(&mut node, "after a hostile array count");

    step!("same with a compact (flexible, v9) array count of 2^31-2 topics");
    let mut body = BytesMut::new();
    body.put_i16(3);
    body.put_i16(9);
    body.put_i32(78);
    body.put_i16(2);
    body.put_slice(b"ab");
    body.put_u8(0); // header tagged fields
                    // Unsigned varint 0x7fffffff (count + 1 for compact arrays).
    body.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]);
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    send_lenient(&mut conn, &frame(&body));
    expect_closed(&mut conn, "Metadata v9 with a huge compact array");
    assert_serving(&mut node, "after a hostile compact array count");
}

#[test]
fn unknown_api_key_is_closed() {
    let mut node = Node::start(&[]);
    let mut body = BytesMut::new();
    body.put_i16(9999);
    body.put_i16(0);
    body.put_i32(5);
    body.put_i16(-1);
    body.put_slice(&[0u8; 8]);
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    step!("request with API key 9999");
    send_lenient(&mut conn, &frame(&body));
    expect_closed(&mut conn, "unknown API key");
    assert_serving(&mut node, "after an unknown API key");
}

#[test]
fn unsupported_metadata_version_is_closed_or_unsupported_version() {
    let mut node = Node::start(&[]);
    let mut body = BytesMut::new();
    body.put_i16(3);
    body.put_i16(99);
    body.put_i32(6);
    body.put_i16(-1);
    body.put_u8(0);
    body.put_slice(&[0u8; 8]);
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    step!("Metadata v99");
    send_lenient(&mut conn, &frame(&body));
    // Kafka closes the connection; answering UNSUPPORTED_VERSION (35) to the
    // right correlation id is also acceptable.
    match conn.read_frame() {
        Ok(None) => step!("connection closed"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => step!("connection reset"),
        Ok(Some(resp)) => {
            assert!(resp.len() >= 6, "short answer {resp:?}");
            let cid = i32::from_be_bytes([resp[0], resp[1], resp[2], resp[3]]);
            assert_eq!(cid, 6, "correlation id of the answer");
            let has_35 = resp[4..].windows(2).any(|w| w == [0, 35]);
            assert!(
                has_35,
                "answered Metadata v99 without UNSUPPORTED_VERSION: {resp:?}"
            );
            step!("answered UNSUPPORTED_VERSION");
        }
        Err(e) => panic!("Metadata v99: neither closed nor answered: {e}"),
    }
    assert_serving(&mut node, "after Metadata v99");
}

#[test]
fn api_versions_from_the_future_gets_v0_answer_with_supported_range() {
    let mut node = Node::start(&[]);
    // ApiVersions v127 with a v2 (flexible) header and a v3-like body: the
    // broker cannot know the layout and must answer per KIP-511.
    let mut body = BytesMut::new();
    body.put_i16(18);
    body.put_i16(127);
    body.put_i32(9);
    body.put_i16(2);
    body.put_slice(b"ab");
    body.put_u8(0);
    body.put_slice(&[2, b'x', 2, b'1', 0]);
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    step!("ApiVersions v127");
    conn.send_bytes(&frame(&body)).expect("send");
    let mut resp = conn
        .read_frame()
        .expect("read")
        .expect("an answer, not a closed connection");
    let header = ResponseHeader::decode(&mut resp, 0).expect("v0 response header");
    assert_eq!(header.correlation_id, 9);
    let av = ApiVersionsResponse::decode(&mut resp, 0).expect("v0 ApiVersions body");
    assert_eq!(av.error_code, 35, "UNSUPPORTED_VERSION");
    let own = av
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
        .expect("the answer lists ApiVersions' own range");
    assert_eq!(own.min_version, 0);
    assert!(own.max_version >= 3, "ApiVersions max {}", own.max_version);
    step!(
        "answered v0 with error 35 and ApiVersions {}..={}",
        own.min_version,
        own.max_version
    );

    step!("the client retries with v3 on the same connection");
    let av = conn
        .roundtrip(
            3,
            10,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("runnel-tests"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        )
        .expect("ApiVersions v3 after the downgrade");
    assert_eq!(av.error_code, 0);
    for (key, min, max) in [(0i16, 3i16, 9i16), (1, 4, 12), (3, 1, 12), (18, 0, 3)] {
        let k = av
            .api_keys
            .iter()
            .find(|k| k.api_key == key)
            .unwrap_or_else(|| panic!("API key {key} not advertised"));
        assert!(
            k.min_version <= min && k.max_version >= max,
            "API key {key}: {}..={} does not cover {min}..={max}",
            k.min_version,
            k.max_version
        );
    }
    assert_serving(&mut node, "after ApiVersions v127");
}

#[test]
fn produce_with_corrupt_crc_is_corrupt_message() {
    let mut node = Node::start(&[]);
    create_topic(&node, "crc");
    // Two batches: "hello" whole, "world" corrupt.
    let mut batch = record_batch(&[b"hello".to_vec(), b"world".to_vec()]);
    let last = batch.len() - 1;
    // The last byte is the last record's header count; the two before it are
    // the end of its value "world". Flip one: the second batch's CRC no
    // longer matches, but every length field still does.
    batch[last - 2] ^= 0x55;
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    step!("Produce v9 with a batch whose CRC does not match");
    let (err, _) = produce(&mut conn, "crc", batch.freeze(), 3);
    assert_eq!(err, 2, "CORRUPT_MESSAGE");

    step!("nothing was appended: the next good batch starts at offset 0");
    let good = record_batch(&[b"good".to_vec()]).freeze();
    assert_eq!(produce(&mut conn, "crc", good, 4), (0, 0));
    assert_serving(&mut node, "after a corrupt batch");
}

#[test]
fn produce_larger_than_message_max_bytes_is_message_too_large() {
    let mut node = Node::start(&[("message.max.bytes", "10000")]);
    create_topic(&node, "big");
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    step!("Produce a 20000-byte batch with message.max.bytes=10000");
    let big = record_batch(&[vec![7u8; 20_000]]).freeze();
    let (err, _) = produce(&mut conn, "big", big, 3);
    assert_eq!(err, 10, "MESSAGE_TOO_LARGE");

    step!("a batch under the limit is accepted at offset 0");
    let small = record_batch(&[vec![7u8; 5_000]]).freeze();
    assert_eq!(produce(&mut conn, "big", small, 4), (0, 0));
    assert_serving(&mut node, "after an oversized batch");
}

#[test]
fn truncated_request_body_is_closed() {
    let mut node = Node::start(&[]);
    step!("Metadata v1 whose body says 3 topics but holds one");
    let mut body = BytesMut::new();
    body.put_i16(3);
    body.put_i16(1);
    body.put_i32(11);
    body.put_i16(-1);
    body.put_i32(3);
    body.put_i16(3);
    body.put_slice(b"abc");
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    send_lenient(&mut conn, &frame(&body));
    expect_closed(&mut conn, "truncated body");
    assert_serving(&mut node, "after a truncated body");

    step!("a frame cut off mid-way, then EOF from the client");
    let full = encode_request(1, 12, &MetadataRequest::default().with_topics(Some(vec![])));
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    send_lenient(&mut conn, &full[..full.len() - 3]);
    conn.shutdown_write().expect("half-close");
    expect_closed(&mut conn, "frame cut off by EOF");
    assert_serving(&mut node, "after a frame cut off by EOF");

    step!("a header too short for its own fields");
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    send_lenient(&mut conn, &frame(&[0, 3, 0]));
    expect_closed(&mut conn, "3-byte request");
    assert_serving(&mut node, "after a 3-byte request");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut node = Node::start(&[]);
    create_topic(&node, "pipe");
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    // Mixed APIs and versions, one write: slow and fast requests must still
    // come back in the order they were sent.
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for i in 0..30i32 {
        let cid = 100 + i;
        match i % 3 {
            0 => bytes.extend(encode_request(
                3,
                cid,
                &ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("t"))
                    .with_client_software_version(StrBytes::from_static_str("1")),
            )),
            1 => bytes.extend(encode_request(
                12,
                cid,
                &MetadataRequest::default().with_topics(None),
            )),
            _ => {
                let batch = record_batch(&[format!("pipelined-{i}").into_bytes()]).freeze();
                let req = produce_request("pipe", 0, batch, 30_000);
                bytes.extend(encode_request(9, cid, &req));
            }
        }
        expected.push(cid);
    }
    step!("30 requests in one write");
    conn.send_bytes(&bytes).expect("send");
    let mut produce_offsets = Vec::new();
    for (i, want) in expected.iter().enumerate() {
        let resp = conn.read_frame().expect("read").expect("response, not EOF");
        let cid = i32::from_be_bytes([resp[0], resp[1], resp[2], resp[3]]);
        assert_eq!(cid, *want, "response #{i} out of order");
        if i % 3 == 2 {
            let (_, r) =
                common::decode_response::<ProduceRequest>(9, resp).expect("produce response");
            let p = &r.responses[0].partition_responses[0];
            assert_eq!(p.error_code, 0);
            produce_offsets.push(p.base_offset);
        }
    }
    assert_eq!(
        produce_offsets,
        (0..10).collect::<Vec<i64>>(),
        "produce order = offset order"
    );
    assert_serving(&mut node, "after pipelined requests");
}
