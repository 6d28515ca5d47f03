//! The old message formats, measured against the v2 path on one node.
//!
//! Produce: `LEGACY_MB` MiB (64) of 1 KiB records, 100 per request, acks=1,
//! one request at a time on one connection: as v2 batches at Produce v9,
//! and as magic 1 message sets at Produce v2 (converted up to v2 batches on
//! append); uncompressed and lz4. Fetch: the same log read back from 0 with
//! 1 MiB per request, at Fetch v11 (stored batches as they are) and Fetch v2
//! (down-converted to magic 1). MB/s of record payload, over wall time.
//!
//! `cargo bench --bench legacy_formats` (env LEGACY_MB).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::Compression;
use runnel::protocol::{build, message_set};

mod support;

const RECORD: usize = 1024;
const PER_REQUEST: usize = 100;

struct Conn(TcpStream, i32);

impl Conn {
    fn call(&mut self, api: ApiKey, version: i16, body: &[u8]) -> Bytes {
        self.1 += 1;
        let mut b = BytesMut::new();
        b.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.1)
            .with_client_id(Some(StrBytes::from_static_str("bench")))
            .encode(&mut b, api.request_header_version(version))
            .expect("header");
        b.put_slice(body);
        let n = (b.len() - 4) as i32;
        b[..4].copy_from_slice(&n.to_be_bytes());
        self.0.write_all(&b).expect("send");
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).expect("answer");
        let mut out = vec![0u8; i32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut out).expect("answer");
        let mut out = Bytes::from(out);
        assert_eq!(out.get_i32(), self.1);
        if api.response_header_version(version) >= 1 {
            out.advance(1);
        }
        out
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

/// Produce v2 or v9 (non-flexible up to v8; v9 is flexible, so v8 is used
/// for the v2 path: the same layout with a transactional id).
fn produce_body(version: i16, topic: &str, records: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    if version >= 3 {
        b.put_i16(-1);
    }
    b.put_i16(1);
    b.put_i32(30_000);
    b.put_i32(1);
    put_str(&mut b, topic);
    b.put_i32(1);
    b.put_i32(0);
    b.put_i32(records.len() as i32);
    b.put_slice(records);
    b.to_vec()
}

/// Fetch v2 or v11 (non-flexible), from `offset`, 1 MiB.
fn fetch_body(version: i16, topic: &str, offset: i64) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i32(-1);
    b.put_i32(0);
    b.put_i32(1);
    if version >= 3 {
        b.put_i32(1 << 20);
    }
    if version >= 4 {
        b.put_i8(0);
    }
    if version >= 7 {
        b.put_i32(0); // session id
        b.put_i32(-1); // session epoch
    }
    b.put_i32(1);
    put_str(&mut b, topic);
    b.put_i32(1);
    b.put_i32(0);
    if version >= 9 {
        b.put_i32(-1); // current leader epoch
    }
    b.put_i64(offset);
    if version >= 5 {
        b.put_i64(-1); // log start offset
    }
    b.put_i32(1 << 20);
    if version >= 7 {
        b.put_i32(0); // forgotten topics
    }
    if version >= 11 {
        b.put_i16(0); // rack id ""
    }
    b.to_vec()
}

/// The error code of a one-partition Produce answer.
fn produce_error(mut r: Bytes) -> i16 {
    r.get_i32();
    let n = r.get_i16() as usize;
    r.advance(n);
    r.get_i32();
    r.get_i32();
    r.get_i16()
}

/// The next offset after a one-partition Fetch answer's records, and the
/// high watermark, parsing just enough of v2 or v11.
fn fetch_next(version: i16, mut r: Bytes, from: i64) -> (i64, i64, usize) {
    r.get_i32(); // throttle
    if version >= 7 {
        r.get_i16();
        r.get_i32();
    }
    r.get_i32();
    let n = r.get_i16() as usize;
    r.advance(n);
    r.get_i32();
    r.get_i32();
    assert_eq!(r.get_i16(), 0, "fetch error");
    let hw = r.get_i64();
    if version >= 4 {
        r.get_i64();
        if version >= 5 {
            r.get_i64();
        }
        let aborted = r.get_i32();
        assert!(aborted <= 0);
    }
    if version >= 11 {
        r.get_i32();
    }
    let len = r.get_i32().max(0) as usize;
    let records = r.split_to(len);
    let mut next = from;
    let mut pos = 0;
    while pos + 12 <= records.len() {
        let base = i64::from_be_bytes(records[pos..pos + 8].try_into().unwrap());
        let size = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().unwrap()) as usize;
        if pos + 12 + size > records.len() {
            break;
        }
        next = if version >= 4 {
            let last_delta =
                i32::from_be_bytes(records[pos + 23..pos + 27].try_into().unwrap()) as i64;
            base + last_delta + 1
        } else {
            base + 1
        };
        pos += 12 + size;
    }
    (next, hw, len)
}

fn main() {
    let mb: usize = std::env::var("LEGACY_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let requests = mb * 1024 * 1024 / (RECORD * PER_REQUEST);
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = support::start_cluster(dir.path(), 1, &[]);
    // One value per record of a request, of letters from a 16-symbol
    // alphabet in pseudo-random order: lz4 finds no long matches in it, so
    // it compresses little, as with varied JSON, rather than to nothing.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let values: Vec<Vec<u8>> = (0..PER_REQUEST)
        .map(|_| {
            (0..RECORD)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"abcdefghijklmnop"[(x % 16) as usize]
                })
                .collect()
        })
        .collect();
    println!("{mb} MiB of {RECORD}-byte records, {PER_REQUEST} per request, one node, acks=1");
    println!("{:<36} {:>12} {:>12}", "path", "produce MB/s", "fetch MB/s");
    for codec in [Compression::None, Compression::Lz4] {
        for legacy in [false, true] {
            let topic = format!("bench-{codec:?}-{legacy}").to_lowercase();
            support::create_topic(&cluster.bootstrap, &topic, 1, 1, &[]);
            let addr = cluster.bootstrap.split(',').next().unwrap().to_string();
            let mut conn = Conn(TcpStream::connect(&addr).expect("connect"), 0);
            conn.0.set_nodelay(true).unwrap();
            let payload: Vec<u8> = if legacy {
                let msgs: Vec<message_set::Plain<'_>> = (0..PER_REQUEST)
                    .map(|i| (1_700_000_000_000 + i as i64, None, Some(&values[i][..])))
                    .collect();
                message_set::encode(1, codec, &msgs).unwrap().to_vec()
            } else {
                let recs: Vec<_> = (0..PER_REQUEST)
                    .map(|i| {
                        build::record(
                            i as i64,
                            1_700_000_000_000 + i as i64,
                            None,
                            Some(Bytes::from(values[i].clone())),
                        )
                    })
                    .collect();
                build::encode(&recs, codec).unwrap().to_vec()
            };
            let (pv, fv) = if legacy { (2, 2) } else { (8, 11) };
            let body = produce_body(pv, &topic, &payload);
            let start = Instant::now();
            for _ in 0..requests {
                let r = conn.call(ApiKey::Produce, pv, &body);
                assert_eq!(produce_error(r), 0, "produce v{pv}");
            }
            let produce = start.elapsed();
            let total = (requests * PER_REQUEST) as i64;
            let start = Instant::now();
            let mut offset = 0;
            let mut got = 0usize;
            while offset < total {
                let r = conn.call(ApiKey::Fetch, fv, &fetch_body(fv, &topic, offset));
                let (next, _, len) = fetch_next(fv, r, offset);
                assert!(next > offset || len == 0, "fetch v{fv} made no progress");
                got += len;
                offset = next;
            }
            let fetch = start.elapsed();
            let payload_mb = (requests * PER_REQUEST * RECORD) as f64 / 1e6;
            let rate = |d: Duration| payload_mb / d.as_secs_f64();
            let name = format!(
                "{} {}",
                if legacy {
                    "Produce v2 / Fetch v2 (magic 1)"
                } else {
                    "Produce v8 / Fetch v11"
                },
                if codec == Compression::None {
                    "none"
                } else {
                    "lz4"
                }
            );
            println!(
                "{name:<36} {:>12.1} {:>12.1}   ({} MB on the wire)",
                rate(produce),
                rate(fetch),
                got / 1_000_000
            );
        }
    }
    drop(cluster);
}
