//! One `runnel serve` process and its directory: the one process type of
//! the tests, used alone (`Node::start`: a single node, broker and
//! controller) and as a member of a `Cluster` (formatted with `runnel
//! format`, with a role and the cluster's voter set).
//!
//! A `Node` prints each step (start, kill -9, SIGTERM, restart) as it
//! happens and, when the test panics, the tail of the broker's stderr, so
//! that a failing test reads like a script and explains itself. The process
//! is killed when the `Node` drops; on a panic its directory is kept.
//!
//! A cluster member can run in a network namespace of its own
//! (`Cluster::start_in_netns`): it then listens on its own address instead
//! of 127.0.0.1, and its commands run behind `ip netns exec`.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{MetadataRequest, MetadataResponse};

use super::{free_port, RawConn, STARTUP_TIMEOUT, STOP_TIMEOUT};
use crate::step;

/// What a node is (`process.roles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// broker,controller: a broker and a voter (the default).
    Combined,
    /// controller: a voter with no Kafka listener.
    Controller,
    /// broker: a broker that follows the voters' metadata stream.
    Broker,
}

impl Role {
    pub fn is_broker(self) -> bool {
        self != Role::Controller
    }

    pub fn is_voter(self) -> bool {
        self != Role::Broker
    }

    fn process_roles(self) -> &'static str {
        match self {
            Role::Combined => "broker,controller",
            Role::Controller => "controller",
            Role::Broker => "broker",
        }
    }
}

/// One `runnel serve` process, restartable on the same directory and ports.
pub struct Node {
    /// `node.id`.
    pub id: i32,
    pub role: Role,
    /// The Kafka listener's port (chosen but unused on a controller-only node).
    pub kafka_port: u16,
    /// The controller listener's port; 0 for a single node, which has none
    /// of its own in its settings.
    pub controller_port: u16,
    /// `Some(controller.quorum.voters)` for a cluster member; `None` for a
    /// single node.
    voters: Option<String>,
    /// How the step log names the process: "runnel" or "node <id>".
    label: String,
    /// Holds the log file and (unless the caller gave one) the data dir.
    dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// `key=value` overrides `serve` gets after the harness's own.
    overrides: Vec<String>,
    child: Option<Child>,
    /// The length of the log when the current process started.
    log_mark: usize,
    tmp: Option<tempfile::TempDir>,
    /// Set once a panic message already carries the log tail.
    tail_shown: bool,
    /// More `NAME://host:port` listeners of a single node, after its
    /// PLAINTEXT one.
    extra_listeners: Vec<String>,
    /// The address the listeners bind and advertise: 127.0.0.1, or the
    /// node's own in a network namespace (`place_in_netns`).
    host: String,
    /// Put in front of every command (`ip netns exec <ns>`); empty unless
    /// the node runs in a network namespace.
    exec_prefix: Vec<String>,
}

impl Node {
    /// Starts a fresh single node in a new temporary directory, with extra
    /// `--override key=value` settings on top of the listener, data dir and
    /// id.
    pub fn start(overrides: &[(&str, &str)]) -> Node {
        Node::start_with_listeners(&[], overrides)
    }

    /// Starts a fresh single node with more listeners than its PLAINTEXT
    /// one: (name, port) each, on the node's host; their settings (say
    /// `listener.name.ssl.…`) in `overrides`.
    pub fn start_with_listeners(listeners: &[(&str, u16)], overrides: &[(&str, &str)]) -> Node {
        let tmp = tempfile::Builder::new()
            .prefix("runnel-test.")
            .tempdir()
            .expect("create temp dir");
        let root = tmp.path().to_path_buf();
        let mut node = Node::single(root.clone(), root.join("data"), overrides);
        node.extra_listeners = listeners
            .iter()
            .map(|(name, port)| format!("{name}://{}:{port}", node.host))
            .collect();
        node.tmp = Some(tmp);
        node.spawn_with_port_retry();
        node
    }

    /// Starts a single node on an existing data directory (e.g. one left by
    /// an earlier node). The log goes next to it.
    pub fn start_in(data_dir: &Path, overrides: &[(&str, &str)]) -> Node {
        let root = data_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.to_path_buf());
        let mut node = Node::single(root, data_dir.to_path_buf(), overrides);
        node.spawn_with_port_retry();
        node
    }

    fn single(dir: PathBuf, data_dir: PathBuf, overrides: &[(&str, &str)]) -> Node {
        Node::new(
            1,
            Role::Combined,
            None,
            "runnel".to_string(),
            dir,
            data_dir,
            overrides.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )
    }

    /// Cluster member `id` in `dir` (created), on fresh ports; not started.
    /// `voters` is set with `set_voters` once every member has its ports.
    pub(super) fn member(id: i32, role: Role, dir: PathBuf, overrides: Vec<String>) -> Node {
        std::fs::create_dir_all(&dir).expect("create node dir");
        let mut node = Node::new(
            id,
            role,
            Some(String::new()),
            format!("node {id}"),
            dir.clone(),
            dir.join("data"),
            overrides,
        );
        node.kafka_port = free_port();
        node.controller_port = free_port();
        node
    }

    fn new(
        id: i32,
        role: Role,
        voters: Option<String>,
        label: String,
        dir: PathBuf,
        data_dir: PathBuf,
        overrides: Vec<String>,
    ) -> Node {
        Node {
            id,
            role,
            kafka_port: 0,
            controller_port: 0,
            voters,
            label,
            log_path: dir.join("runnel.log"),
            dir,
            data_dir,
            overrides,
            child: None,
            log_mark: 0,
            tmp: None,
            tail_shown: false,
            extra_listeners: Vec::new(),
            host: "127.0.0.1".to_string(),
            exec_prefix: Vec::new(),
        }
    }

    /// Runs the node in a network namespace: its listeners bind and
    /// advertise `host`, and its commands run behind `exec_prefix` (e.g.
    /// `ip netns exec <ns>`, which execs: the pid is still runnel's). Set
    /// before the first command.
    pub(super) fn place_in_netns(&mut self, host: String, exec_prefix: Vec<String>) {
        assert!(self.child.is_none(), "{} is running already", self.label);
        self.host = host;
        self.exec_prefix = exec_prefix;
    }

    /// The address the listeners bind and advertise (no port).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// What every command of the node runs behind (`ip netns exec <ns>`),
    /// empty outside a network namespace.
    pub fn exec_prefix(&self) -> &[String] {
        &self.exec_prefix
    }

    /// "host:port" of the controller listener, as the voter set names it.
    pub fn controller_addr(&self) -> String {
        format!("{}:{}", self.host, self.controller_port)
    }

    /// `controller.quorum.voters` of a cluster member.
    pub(super) fn set_voters(&mut self, voters: &str) {
        assert!(self.voters.is_some(), "a single node has no voter set");
        self.voters = Some(voters.to_string());
    }

    /// "127.0.0.1:port" (in a network namespace: the node's address) of
    /// the Kafka listener, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.kafka_port)
    }

    /// The Kafka listener's port.
    pub fn port(&self) -> u16 {
        self.kafka_port
    }

    /// The node's directory (its log file, and its data dir `data` unless
    /// started with `start_in`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// The exit status of a process that exited by itself (not one this
    /// harness killed or stopped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Asserts that the process is still running (it did not abort or panic).
    pub fn assert_alive(&mut self, context: &str) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                self.tail_shown = true;
                panic!(
                    "{} exited ({status}) {context}\n{}",
                    self.label,
                    self.log_tail(60)
                );
            }
        } else {
            panic!("{} is not running {context}", self.label);
        }
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            step!("kill -9 {} (pid {})", self.label, c.id());
            // Child::kill is SIGKILL on unix.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` (e.g. "STOP", "CONT", "TERM") to the process.
    pub fn signal(&mut self, sig: &str) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.label));
        step!("SIG{sig} {} (pid {pid})", self.label);
        send_signal(sig, pid);
    }

    /// SIGTERM without waiting: the test goes on talking to the broker
    /// while it shuts down. `wait_exit` collects it.
    pub fn sigterm(&mut self) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.label));
        step!("SIGTERM {} (pid {pid}), not waiting", self.label);
        send_signal("TERM", pid);
    }

    /// SIGTERM, then wait for a clean exit. Panics if it does not exit
    /// within `STOP_TIMEOUT` or exits with a failure status: a clean
    /// shutdown is a feature.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid() else {
            return;
        };
        step!("SIGTERM {} (pid {pid})", self.label);
        send_signal("TERM", pid);
        let (st, _) = self.wait_exit(STOP_TIMEOUT);
        assert!(
            st.success(),
            "{} exited with {st} after SIGTERM\n{}",
            self.label,
            self.log_tail(40)
        );
    }

    /// Waits up to `within` for the process to exit and returns its status
    /// and how long the wait took; kills it and panics if it does not exit.
    pub fn wait_exit(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let mut c = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.label));
        let started = Instant::now();
        loop {
            match c.try_wait() {
                Ok(Some(st)) => {
                    step!("{} exited: {st} after {:?}", self.label, started.elapsed());
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
                        "{} did not exit within {within:?}\n{}",
                        self.label,
                        self.log_tail(40)
                    );
                }
            }
        }
    }

    /// Starts the process again on the same directory and ports (after
    /// `kill9` or `stop`; kills a still-running process first) and waits
    /// until it serves: a broker answers Metadata listing a broker (it
    /// serves once registered, which in a cluster needs a quorum), a
    /// controller-only node has logged that it started.
    pub fn restart(&mut self) {
        self.kill9();
        step!("restarting {} on the same directory and ports", self.label);
        self.spawn();
        self.wait_ready_or_panic(Instant::now() + STARTUP_TIMEOUT);
    }

    /// Everything the process wrote to stderr (all its runs).
    ///
    /// Read as bytes: a read that races the node's write can end inside a
    /// multi-byte character, which would make the whole file invalid UTF-8
    /// to `read_to_string` (and look empty).
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// What the current process (the last one started) wrote to stderr.
    pub fn log_since_start(&self) -> String {
        let log = self.log();
        log.get(self.log_mark..).unwrap_or_default().to_string()
    }

    /// The last `lines` lines of the process's stderr (all its runs).
    pub fn log_tail(&self, lines: usize) -> String {
        let s = self.log();
        let all: Vec<&str> = s.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "---- {} stderr ({}), last {} lines ----\n{}\n---- end of {} stderr ----",
            self.label,
            self.log_path.display(),
            all.len() - from,
            all[from..].join("\n"),
            self.label
        )
    }

    /// Marks the log tail as shown (in a panic message a caller built).
    pub(super) fn tail_shown(&mut self) {
        self.tail_shown = true;
    }

    /// The settings every command of this node gets first: listeners, data
    /// dir and id; in a cluster also the roles, the voter set and short
    /// broker sessions.
    fn base_overrides(&self) -> Vec<String> {
        let Some(voters) = &self.voters else {
            let extra: String = self
                .extra_listeners
                .iter()
                .map(|l| format!(",{l}"))
                .collect();
            return vec![
                format!(
                    "listeners=PLAINTEXT://{}:{}{extra}",
                    self.host, self.kafka_port
                ),
                format!("log.dirs={}", self.data_dir.display()),
                format!("node.id={}", self.id),
                // No HTTP listener unless a test asks for one: `serve` with
                // no file would take 127.0.0.1:9644 by default.
                "metrics.listener=".to_string(),
            ];
        };
        let listeners = if self.role.is_broker() {
            format!(
                "listeners=PLAINTEXT://{host}:{},CONTROLLER://{host}:{}",
                self.kafka_port,
                self.controller_port,
                host = self.host
            )
        } else {
            format!("listeners=CONTROLLER://{}", self.controller_addr())
        };
        vec![
            format!("node.id={}", self.id),
            format!("process.roles={}", self.role.process_roles()),
            listeners,
            format!("controller.quorum.voters={voters}"),
            format!("log.dirs={}", self.data_dir.display()),
            // Short sessions so that fencing tests take seconds.
            "broker.heartbeat.interval.ms=300".to_string(),
            "broker.session.timeout.ms=3000".to_string(),
            "metrics.listener=".to_string(),
        ]
    }

    /// `runnel <sub>` with this node's base settings (behind the exec
    /// prefix, if any).
    fn command(&self, sub: &str) -> Command {
        let runnel = env!("CARGO_BIN_EXE_runnel");
        let mut cmd = match self.exec_prefix.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(runnel);
                cmd
            }
            None => Command::new(runnel),
        };
        cmd.arg(sub);
        for kv in self.base_overrides() {
            cmd.arg("--override").arg(kv);
        }
        cmd
    }

    /// `runnel format --cluster-id <id>` of the data dir, as a user would.
    pub(super) fn format(&self, cluster_id: &str) {
        let out = self
            .command("format")
            .arg("--cluster-id")
            .arg(cluster_id)
            .output()
            .expect("run runnel format");
        assert!(
            out.status.success(),
            "runnel format of {} failed: {}",
            self.label,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `runnel serve` (stderr appended to the log); does not wait.
    pub fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open runnel log file");
        self.log_mark = std::fs::metadata(&self.log_path).map_or(0, |m| m.len() as usize);
        let mut cmd = self.command("serve");
        for kv in &self.overrides {
            cmd.arg("--override").arg(kv);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = cmd.spawn().expect("spawn runnel serve");
        step!(
            "{} ({:?}) started: pid {}, kafka {}, controller {}, data {}{}",
            self.label,
            self.role,
            child.id(),
            if self.role.is_broker() {
                self.bootstrap()
            } else {
                "-".into()
            },
            if self.controller_port == 0 {
                "-".into()
            } else {
                self.controller_addr()
            },
            self.data_dir.display(),
            self.exec_prefix
                .last()
                .map(|ns| format!(", netns {ns}"))
                .unwrap_or_default()
        );
        self.child = Some(child);
    }

    /// A single node picks its port just before it binds it, and another
    /// test starting at the same time can take it in between: a start that
    /// fails that way is tried again on another port.
    fn spawn_with_port_retry(&mut self) {
        for attempt in 1..=3 {
            self.kafka_port = free_port();
            step!(
                "starting runnel on {} (attempt {attempt})",
                self.bootstrap()
            );
            self.spawn();
            match self.wait_ready(Instant::now() + STARTUP_TIMEOUT) {
                Ok(()) => return,
                Err(e) if attempt < 3 && !self.is_alive() => {
                    step!("start failed ({e}); retrying on another port");
                    self.child = None;
                }
                Err(e) => self.not_ready(&e),
            }
        }
    }

    /// Whether the process serves: a broker answers Metadata listing a
    /// broker; a controller-only node (no Kafka listener to ask) has logged
    /// that it started.
    fn probe_ready(&self) -> Result<(), String> {
        if !self.role.is_broker() {
            return if self.log_since_start().contains("Runnel controller started") {
                Ok(())
            } else {
                Err("the controller has not logged that it started".into())
            };
        }
        match metadata_probe(&self.bootstrap()) {
            Ok(n) if n > 0 => Ok(()),
            Ok(_) => Err("Metadata lists no brokers yet".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits until the process serves (see `probe_ready`), it exits, or
    /// `deadline` passes.
    pub(super) fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            if let Some(st) = self.exited() {
                return Err(format!("{} exited during startup: {st}", self.label));
            }
            let last_err = match self.probe_ready() {
                Ok(()) => {
                    step!("{} serving", self.label);
                    return Ok(());
                }
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not serving within {STARTUP_TIMEOUT:?}; last error: {last_err}",
                    self.label
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `wait_ready`, panicking (with the log tail) if the node does not
    /// come up.
    pub(super) fn wait_ready_or_panic(&mut self, deadline: Instant) {
        if let Err(e) = self.wait_ready(deadline) {
            self.not_ready(&e);
        }
    }

    fn not_ready(&mut self, e: &str) -> ! {
        let tail = self.log_tail(60);
        self.tail_shown = true;
        self.kill9();
        panic!("{} did not become ready: {e}\n{tail}", self.label);
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
            if let Some(status) = self.exited() {
                eprintln!(
                    "{} had already exited ({status}) although this test did not stop it",
                    self.label
                );
            }
            // Keep the data for a post-mortem.
            if let Some(tmp) = self.tmp.take() {
                let kept = tmp.keep();
                eprintln!("kept {}'s directory: {}", self.label, kept.display());
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `kill -<sig> <pid>`, asserting that it was delivered.
fn send_signal(sig: &str, pid: u32) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// Sends a Metadata v1 request for no topics and returns the broker count.
fn metadata_probe(addr: &str) -> io::Result<usize> {
    let mut conn = RawConn::connect(addr)?;
    let req = MetadataRequest::default().with_topics(Some(vec![]));
    let resp: MetadataResponse = conn.roundtrip(1, 1, &req)?;
    Ok(resp.brokers.len())
}
