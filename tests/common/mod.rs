//! Shared harness for the integration tests (and the benchmarks that run
//! real brokers): runs real `runnel serve` processes on loopback ports and
//! talks raw Kafka wire protocol to them.
//!
//! * `node`: one process type, `Node`, for a single node and for each member
//!   of a `cluster::Cluster`: start, kill -9, SIGTERM, stop, restart, logs.
//! * `partition`: what the nodes say about a partition (leader, ISR, high
//!   watermark), and reading it back.
//! * `topics`: creating topics, committed offsets.
//! * `disk`: the batches in a partition's log files, read from disk.
//! * `netns`: a network namespace per node, for partitions between nodes
//!   (`Cluster::start_in_netns`).
//! * `producer`: a background rdkafka producer recording every delivery.
//! * `pki`: test certificates made with `openssl`.
//! * here: the step log, raw connections and frames, `eventually`.
//!
//! A test binary uses it as `mod common;`; a benchmark as
//! `#[path = "../tests/common/mod.rs"] mod common;`.

#![allow(dead_code)] // Each test binary uses a different subset.

pub mod cluster;
pub mod disk;
pub mod netns;
pub mod node;
pub mod partition;
pub mod pki;
pub mod producer;
pub mod topics;

pub use node::Node;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

/// How long a broker may take from spawn to answering Metadata.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM may take before we call the shutdown hung.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Prints one step of a test, tagged so that interleaved output stays readable.
#[macro_export]
macro_rules! step {
    ($($arg:tt)*) => {
        eprintln!("[{}] {}", $crate::common::elapsed(), format!($($arg)*))
    };
}

/// Seconds since the first call, for the step log.
pub fn elapsed() -> String {
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    format!("{:7.3}s", start.elapsed().as_secs_f64())
}

/// A free loopback port. The listener is dropped before the broker binds, so
/// another process could take it in between; `Node::start` and
/// `Cluster::start` retry on that. Within this test process no port is handed
/// out twice: the kernel readily returns a just-released ephemeral port to
/// the next `bind(0)`, and two nodes of one cluster given the same Kafka port
/// both look ready through whichever of them bound it.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// A blocking Kafka connection that sends hand-built frames, for tests that
/// need control over every byte.
pub struct RawConn {
    pub stream: TcpStream,
}

/// How long a raw read may block before the test treats it as a hang.
pub const RAW_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl RawConn {
    pub fn connect(addr: &str) -> io::Result<RawConn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(RAW_READ_TIMEOUT))?;
        stream.set_write_timeout(Some(RAW_READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(RawConn { stream })
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Writes a request (header + body, length-prefixed).
    pub fn send<R: Request>(
        &mut self,
        version: i16,
        correlation_id: i32,
        req: &R,
    ) -> io::Result<()> {
        let frame = encode_request(version, correlation_id, req);
        self.send_bytes(&frame)
    }

    /// Reads one length-prefixed frame; `Ok(None)` if the peer closed.
    pub fn read_frame(&mut self) -> io::Result<Option<Bytes>> {
        let mut len = [0u8; 4];
        match read_full(&mut self.stream, &mut len)? {
            0 => return Ok(None),
            4 => {}
            n => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("closed after {n} bytes of a length prefix"),
                ))
            }
        }
        let len = i32::from_be_bytes(len);
        if !(0..=256 * 1024 * 1024).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response frame length {len}"),
            ));
        }
        let mut body = vec![0u8; len as usize];
        if read_full(&mut self.stream, &mut body)? != body.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed in the middle of a response",
            ));
        }
        Ok(Some(Bytes::from(body)))
    }

    /// Reads one response to an `R` request of `version`: (correlation id, body).
    pub fn recv<R: Request>(&mut self, version: i16) -> io::Result<(i32, R::Response)> {
        let frame = self.read_frame()?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by broker")
        })?;
        decode_response::<R>(version, frame)
    }

    /// Sends one request and reads its response, checking the correlation id.
    pub fn roundtrip<R: Request>(
        &mut self,
        version: i16,
        correlation_id: i32,
        req: &R,
    ) -> io::Result<R::Response> {
        self.send(version, correlation_id, req)?;
        let (cid, resp) = self.recv::<R>(version)?;
        if cid != correlation_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("correlation id {cid}, expected {correlation_id}"),
            ));
        }
        Ok(resp)
    }

    /// Waits (bounded) for the broker to close the connection. Returns what
    /// happened instead if it does not: a frame, or a timeout.
    pub fn expect_closed(&mut self, within: Duration) -> Result<(), String> {
        self.stream
            .set_read_timeout(Some(within))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        let mut got = 0usize;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return if got == 0 {
                        Ok(())
                    } else {
                        Err(format!("closed, but only after sending {got} bytes"))
                    }
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(format!(
                        "connection still open after {within:?} ({got} bytes received)"
                    ))
                }
                Err(e) => return Err(format!("read error {e}")),
            }
        }
    }

    /// Half-closes our side (the broker sees EOF after what was sent).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }
}

fn read_full(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match s.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && n == 0 => return Ok(0),
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Encodes a framed request: 4-byte length, header at the version the API
/// key calls for, body.
pub fn encode_request<R: Request>(version: i16, correlation_id: i32, req: &R) -> Vec<u8> {
    let api_key = ApiKey::try_from(R::KEY).expect("known api key");
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("runnel-tests")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, api_key.request_header_version(version))
        .expect("encode request header");
    req.encode(&mut body, version).expect("encode request body");
    frame(&body)
}

/// Prefixes `body` with its length.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.put_i32(i32::try_from(body.len()).expect("frame fits i32"));
    out.extend_from_slice(body);
    out
}

/// Decodes a response frame for an `R` request of `version`. ApiVersions
/// always answers with a v0 header (KIP-511).
pub fn decode_response<R: Request>(
    version: i16,
    mut frame: Bytes,
) -> io::Result<(i32, R::Response)> {
    let api_key = ApiKey::try_from(R::KEY).expect("known api key");
    let header_version = api_key.response_header_version(version);
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        header_version
    };
    let header = ResponseHeader::decode(&mut frame, header_version).map_err(invalid)?;
    let body = R::Response::decode(&mut frame, version).map_err(invalid)?;
    if frame.has_remaining() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes left after the response body", frame.remaining()),
        ));
    }
    Ok((header.correlation_id, body))
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("decode: {e}"))
}

/// The broker still runs and answers ApiVersions and Metadata (listing one
/// broker) on a new connection: what a test of hostile input checks after
/// each case.
pub fn assert_serving(node: &mut Node, after: &str) {
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};

    node.assert_alive(after);
    let mut conn =
        RawConn::connect(&node.bootstrap()).unwrap_or_else(|e| panic!("connect {after}: {e}"));
    let av = conn
        .roundtrip(
            3,
            1001,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("runnel-tests"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        )
        .unwrap_or_else(|e| panic!("ApiVersions {after}: {e}"));
    assert_eq!(av.error_code, 0, "ApiVersions error {after}");
    let md = conn
        .roundtrip(12, 1002, &MetadataRequest::default().with_topics(None))
        .unwrap_or_else(|e| panic!("Metadata {after}: {e}"));
    assert_eq!(md.brokers.len(), 1, "Metadata brokers {after}");
    step!("broker alive and serving {after}");
}

/// Produce, acks=-1, of `records` (v2 batches) to `topic`/`partition`; the
/// broker answers within `timeout_ms`.
pub fn produce_request(
    topic: &str,
    partition: i32,
    records: Bytes,
    timeout_ms: i32,
) -> kafka_protocol::messages::ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};

    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// (error code, base offset) of the one partition a Produce answer is about.
pub fn produce_result(resp: &kafka_protocol::messages::ProduceResponse) -> (i16, i64) {
    let part = &resp.responses[0].partition_responses[0];
    (part.error_code, part.base_offset)
}

/// `produce_request` at `version` over a new connection to `addr`, waiting
/// for the answer up to 15 s longer than the broker's `timeout_ms`:
/// (error code, base offset).
pub fn raw_produce(
    addr: &str,
    version: i16,
    topic: &str,
    partition: i32,
    records: Bytes,
    timeout_ms: i32,
) -> io::Result<(i16, i64)> {
    let mut conn = RawConn::connect(addr)?;
    let wait = Duration::from_millis(timeout_ms.max(0) as u64) + Duration::from_secs(15);
    conn.stream.set_read_timeout(Some(wait))?;
    let req = produce_request(topic, partition, records, timeout_ms);
    let resp = conn.roundtrip(version, 5, &req)?;
    Ok(produce_result(&resp))
}

/// InitProducerId v4 (no transactional id) at `addr`, retried for up to
/// 30 s while the broker is not ready: (producer id, epoch).
pub fn init_producer_id(addr: &str) -> (i64, i16) {
    use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = RawConn::connect(addr).expect("connect");
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let resp: InitProducerIdResponse = conn.roundtrip(4, 9, &req).expect("InitProducerId");
        if resp.error_code == 0 {
            return (resp.producer_id.0, resp.producer_epoch);
        }
        assert!(
            Instant::now() < deadline,
            "InitProducerId: error {}",
            resp.error_code
        );
        step!("InitProducerId: error {}; retrying", resp.error_code);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One cluster test of a test binary at a time, held for the whole test:
/// each runs clusters with 3 s sessions and ISR lag limits, and two at once
/// on a small machine make the timings (not the assertions) unreliable.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` until it returns `Some` or the deadline passes.
pub fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The wall clock in ms since the Unix epoch, as record timestamps are.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `runnel <args>` (the binary under test) as a user's script runs it,
/// bounded by coreutils `timeout` so that a hung command fails the test.
pub fn runnel(args: &[&str]) -> std::process::Output {
    std::process::Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_runnel"))
        .args(args)
        .output()
        .expect("spawn runnel")
}

/// Status, stdout and stderr of a command, for assertion messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `runnel <args>`, which must succeed; its stdout.
pub fn runnel_ok(args: &[&str]) -> String {
    let out = runnel(args);
    assert!(
        out.status.success(),
        "runnel {args:?}: {}",
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
