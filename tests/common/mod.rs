//! Shared harness for the integration tests: runs real `runnel serve`
//! processes on loopback ports and talks raw Kafka wire protocol to them.
//!
//! A `Node` owns one broker process and its data directory. It prints each
//! step (start, kill -9, restart, stop) as it happens and, when the test
//! panics, the tail of the broker's stderr, so that a failing test reads like
//! a script and explains itself. The process is killed when the `Node` drops.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
};
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
/// another process could take it in between; `Node::start` retries on that.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// One `runnel serve` process, single node (broker and controller).
pub struct Node {
    child: Option<Child>,
    port: u16,
    /// Holds the log file and (unless the caller gave one) the data dir.
    root: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    overrides: Vec<(String, String)>,
    tmp: Option<tempfile::TempDir>,
    /// Set once a panic message already carries the log tail.
    tail_shown: bool,
}

impl Node {
    /// Starts a fresh node in a new temporary directory, with extra
    /// `--override key=value` settings on top of the listener, data dir and id.
    pub fn start(overrides: &[(&str, &str)]) -> Node {
        let tmp = tempfile::Builder::new()
            .prefix("runnel-test.")
            .tempdir()
            .expect("create temp dir");
        let root = tmp.path().to_path_buf();
        let mut node = Node::new(root.clone(), root.join("data"), overrides);
        node.tmp = Some(tmp);
        node.spawn_with_port_retry();
        node
    }

    /// Starts a node on an existing data directory (e.g. one left by an
    /// earlier node). The log goes next to it.
    pub fn start_in(data_dir: &Path, overrides: &[(&str, &str)]) -> Node {
        let root = data_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.to_path_buf());
        let mut node = Node::new(root, data_dir.to_path_buf(), overrides);
        node.spawn_with_port_retry();
        node
    }

    fn new(root: PathBuf, data_dir: PathBuf, overrides: &[(&str, &str)]) -> Node {
        Node {
            child: None,
            port: 0,
            log_path: root.join("runnel.log"),
            root,
            data_dir,
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tmp: None,
            tail_shown: false,
        }
    }

    /// "127.0.0.1:port", for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited.
    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Asserts that the process is still running (it did not abort or panic).
    pub fn assert_alive(&mut self, context: &str) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                self.tail_shown = true;
                panic!("runnel exited ({status}) {context}\n{}", self.log_tail(60));
            }
        } else {
            panic!("runnel is not running {context}");
        }
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            step!("kill -9 runnel (pid {})", c.id());
            // Child::kill is SIGKILL on unix.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit. Panics if it does not exit in
    /// time or exits with a failure status: a clean shutdown is a feature.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        step!("SIGTERM runnel (pid {})", c.id());
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", c.id());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match c.try_wait() {
                Ok(Some(st)) => {
                    step!("runnel exited: {st}");
                    assert!(
                        st.success(),
                        "runnel exited with {st} after SIGTERM\n{}",
                        self.log_tail(40)
                    );
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!(
                        "runnel did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                        self.log_tail(40)
                    );
                }
            }
        }
    }

    /// SIGTERM without waiting: the test goes on talking to the broker
    /// while it shuts down. `wait_exit` collects it.
    pub fn sigterm(&mut self) {
        let pid = self.pid().expect("runnel is not running");
        step!("SIGTERM runnel (pid {pid}), not waiting");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits up to `within` for the process to exit and returns its status
    /// and how long the wait took; kills it and panics if it does not exit.
    pub fn wait_exit(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let mut c = self.child.take().expect("runnel is not running");
        let started = Instant::now();
        loop {
            match c.try_wait() {
                Ok(Some(st)) => {
                    step!("runnel exited: {st} after {:?}", started.elapsed());
                    return (st, started.elapsed());
                }
                Ok(None) if started.elapsed() < within => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    self.tail_shown = true;
                    panic!(
                        "runnel did not exit within {within:?}\n{}",
                        self.log_tail(40)
                    );
                }
            }
        }
    }

    /// Everything the broker wrote to stderr (all its runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Starts the process again on the same data dir and port (after
    /// `kill9` or `stop`; kills a still-running process first).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.kill9();
        }
        step!(
            "restarting runnel on the same data dir and port {}",
            self.port
        );
        self.spawn();
        self.wait_ready();
    }

    /// The last `lines` lines of the broker's stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        let all: Vec<&str> = s.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "---- runnel stderr ({}), last {} lines ----\n{}\n---- end of runnel stderr ----",
            self.log_path.display(),
            all.len() - from,
            all[from..].join("\n")
        )
    }

    fn spawn_with_port_retry(&mut self) {
        // The port can be taken between free_port() and the broker's bind by
        // a concurrently starting test; try a few ports before giving up.
        for attempt in 1..=3 {
            self.port = free_port();
            step!(
                "starting runnel on {} (data {}, attempt {attempt})",
                self.bootstrap(),
                self.data_dir.display()
            );
            self.spawn();
            match self.try_wait_ready() {
                Ok(()) => return,
                Err(e) if attempt < 3 && !self.is_alive() => {
                    step!("start failed ({e}); retrying on another port");
                    self.child = None;
                }
                Err(e) => {
                    let tail = self.log_tail(60);
                    self.tail_shown = true;
                    self.kill9();
                    panic!("runnel did not become ready: {e}\n{tail}");
                }
            }
        }
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open runnel log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runnel"));
        cmd.arg("serve")
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://127.0.0.1:{}", self.port))
            .arg("--override")
            .arg(format!("log.dirs={}", self.data_dir.display()))
            .arg("--override")
            .arg("node.id=1");
        for (k, v) in &self.overrides {
            cmd.arg("--override").arg(format!("{k}={v}"));
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = cmd.spawn().expect("spawn runnel");
        step!("runnel pid {}", child.id());
        self.child = Some(child);
    }

    fn wait_ready(&mut self) {
        if let Err(e) = self.try_wait_ready() {
            let tail = self.log_tail(60);
            self.tail_shown = true;
            self.kill9();
            panic!("runnel did not become ready: {e}\n{tail}");
        }
    }

    /// Ready means: the port accepts connections and Metadata lists a broker.
    fn try_wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut last_err = String::from("no attempt yet");
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(format!("runnel exited during startup: {st}"));
                }
            }
            match metadata_probe(&self.bootstrap()) {
                Ok(n) if n > 0 => {
                    step!("runnel ready on {}", self.bootstrap());
                    return Ok(());
                }
                Ok(_) => last_err = "Metadata lists no brokers yet".into(),
                Err(e) => last_err = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "not ready within {STARTUP_TIMEOUT:?}; last error: {last_err}"
        ))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if !self.tail_shown {
                eprintln!("{}", self.log_tail(80));
            }
            // A broker that exited while the test still held it was stopped
            // by something else (a crash, or a signal from outside the test).
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                eprintln!(
                    "runnel had already exited ({status}) although this test did not stop it"
                );
            }
            // Keep the data for a post-mortem.
            if let Some(tmp) = self.tmp.take() {
                let kept = tmp.keep();
                eprintln!("kept the node's directory: {}", kept.display());
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends a Metadata v1 request for no topics and returns the broker count.
fn metadata_probe(addr: &str) -> io::Result<usize> {
    let mut conn = RawConn::connect(addr)?;
    let req = MetadataRequest::default().with_topics(Some(vec![]));
    let resp: MetadataResponse = conn.roundtrip(1, 1, &req)?;
    Ok(resp.brokers.len())
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
