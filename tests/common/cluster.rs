//! A cluster of `runnel serve` processes on loopback ports, each with its
//! own data dir: by default each a broker and a controller voter
//! (`Cluster::start`), or any mix of roles (`Cluster::start_roles`, e.g.
//! three controllers and three broker-only nodes), formatted with
//! `runnel format` as a user would. Nodes can be killed with SIGKILL and
//! restarted on the same dir and ports. Every step is printed; when a test
//! panics, each node's log tail is printed and the directories are kept.
//!
//! Used as `#[path = "common/cluster.rs"] mod cluster;` next to `mod common;`.

#![allow(dead_code)] // Not every test uses every helper.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{MetadataRequest, MetadataResponse};

use crate::common::{free_port, RawConn, STARTUP_TIMEOUT};
use crate::step;

/// The cluster id every test cluster is formatted with.
pub const CLUSTER_ID: &str = "runnel-test-cluster";

/// What one node's Metadata (v2, raw) says about the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    pub broker_ids: Vec<i32>,
    pub controller_id: i32,
    pub cluster_id: Option<String>,
}

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

/// One node `id`: a broker, a controller voter, or both (`role`).
pub struct ClusterNode {
    pub id: i32,
    pub role: Role,
    pub kafka_port: u16,
    pub controller_port: u16,
    dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// The length of the log when the current process started.
    log_mark: usize,
    /// `key=value` overrides for this node only (after the cluster-wide
    /// ones); empty unless started with `start_with_node_overrides`.
    node_extra: Vec<String>,
}

impl ClusterNode {
    /// "127.0.0.1:port" of the Kafka listener.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// A broker answers Metadata; a controller-only node has logged that
    /// it started (it has no Kafka listener to ask).
    fn ready(&self) -> bool {
        if self.role.is_broker() {
            metadata_view(&self.bootstrap()).is_ok()
        } else {
            self.log_since_start().contains("Runnel controller started")
        }
    }

    /// What the current process (the last one started) wrote to stderr.
    pub fn log_since_start(&self) -> String {
        let log = self.log();
        log.get(self.log_mark..).unwrap_or_default().to_string()
    }

    /// Everything the node wrote to stderr so far (all its runs).
    ///
    /// Read as bytes: a read that races the node's write can end inside a
    /// multi-byte character, which would make the whole file invalid UTF-8
    /// to `read_to_string` (and look empty).
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        let all: Vec<&str> = s.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "---- node {} stderr ({}), last {} lines ----\n{}\n---- end of node {} ----",
            self.id,
            self.log_path.display(),
            all.len() - from,
            all[from..].join("\n"),
            self.id
        )
    }
}

pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    voters: String,
    /// Extra `key=value` overrides every node is served with (start and
    /// restart), after the harness's own.
    extra: Vec<String>,
    root: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Formats and starts `n` nodes (ids 1..=n) and waits until every node's
    /// Metadata lists all `n` brokers. Retries on fresh ports if a port was
    /// taken between choosing and binding it.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// As `start`, with extra `key=value` overrides (e.g.
    /// "min.insync.replicas=2") given to every node's `serve`, on start and
    /// on every restart.
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with_node_overrides(n, extra, &|_| Vec::new())
    }

    /// As `start_with`, plus per-node `key=value` overrides: `per_node(id)`
    /// for node `id` (e.g. its own `advertised.listeners`), on start and on
    /// every restart.
    pub fn start_with_node_overrides(
        n: usize,
        extra: &[&str],
        per_node: &dyn Fn(i32) -> Vec<String>,
    ) -> Cluster {
        Cluster::start_roles_with(&vec![Role::Combined; n], extra, per_node)
    }

    /// Nodes 1..=roles.len() with the given roles (the voters are the nodes
    /// with the controller role); waits until every broker's Metadata lists
    /// all brokers.
    pub fn start_roles(roles: &[Role]) -> Cluster {
        Cluster::start_roles_with(roles, &[], &|_| Vec::new())
    }

    /// As `start_roles`, with the overrides of `start_with_node_overrides`.
    pub fn start_roles_with(
        roles: &[Role],
        extra: &[&str],
        per_node: &dyn Fn(i32) -> Vec<String>,
    ) -> Cluster {
        assert!(
            roles.iter().any(|r| r.is_voter()) && roles.iter().any(|r| r.is_broker()),
            "a cluster needs a voter and a broker: {roles:?}"
        );
        for kv in extra {
            assert!(kv.contains('='), "override {kv:?} is not key=value");
        }
        for attempt in 1..=3 {
            match Cluster::try_start(roles, extra, per_node) {
                Ok(c) => return c,
                Err((c, e)) if attempt < 3 => {
                    step!("cluster did not start ({e}); retrying on other ports");
                    drop(c);
                }
                Err((c, e)) => {
                    let tails: Vec<String> = c.nodes.iter().map(|n| n.log_tail(40)).collect();
                    panic!("cluster did not start: {e}\n{}", tails.join("\n"));
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn try_start(
        roles: &[Role],
        extra: &[&str],
        per_node: &dyn Fn(i32) -> Vec<String>,
    ) -> Result<Cluster, (Cluster, String)> {
        let root = tempfile::Builder::new()
            .prefix("runnel-cluster.")
            .tempdir()
            .expect("create temp dir");
        let n = roles.len();
        let nodes: Vec<ClusterNode> = (1..=n as i32)
            .zip(roles)
            .map(|(id, &role)| {
                let dir = root.path().join(format!("node{id}"));
                std::fs::create_dir_all(&dir).expect("create node dir");
                ClusterNode {
                    id,
                    role,
                    kafka_port: free_port(),
                    controller_port: free_port(),
                    log_path: dir.join("runnel.log"),
                    dir,
                    child: None,
                    log_mark: 0,
                    node_extra: per_node(id),
                }
            })
            .collect();
        let voters = nodes
            .iter()
            .filter(|n| n.role.is_voter())
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            nodes,
            voters,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            root: Some(root),
        };
        step!(
            "formatting {n} nodes ({:?}), controller.quorum.voters={}",
            roles,
            c.voters
        );
        if !c.extra.is_empty() {
            step!("every node is served with {:?}", c.extra);
        }
        for i in 0..n {
            let out = c
                .command(i, "format")
                .arg("--cluster-id")
                .arg(CLUSTER_ID)
                .output()
                .expect("run runnel format");
            assert!(
                out.status.success(),
                "runnel format of node {} failed: {}",
                i + 1,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for i in 0..n {
            c.spawn(i);
        }
        match c.wait_all_listed() {
            Ok(()) => Ok(c),
            Err(e) => Err((c, e)),
        }
    }

    fn node_mut(&mut self, id: i32) -> &mut ClusterNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn node(&self, id: i32) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// The ids of the nodes whose process is running.
    pub fn running(&mut self) -> Vec<i32> {
        self.nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then_some(n.id))
            .collect()
    }

    /// `runnel <sub> --override …` for node index `i`, with its listeners,
    /// dir and the voter set.
    fn command(&self, i: usize, sub: &str) -> Command {
        let n = &self.nodes[i];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runnel"));
        cmd.arg(sub);
        let listeners = if n.role.is_broker() {
            format!(
                "listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                n.kafka_port, n.controller_port
            )
        } else {
            format!("listeners=CONTROLLER://127.0.0.1:{}", n.controller_port)
        };
        for kv in [
            format!("node.id={}", n.id),
            format!("process.roles={}", n.role.process_roles()),
            listeners,
            format!("controller.quorum.voters={}", self.voters),
            format!("log.dirs={}", n.dir.join("data").display()),
            // Short sessions so that fencing tests take seconds.
            "broker.heartbeat.interval.ms=300".to_string(),
            "broker.session.timeout.ms=3000".to_string(),
        ] {
            cmd.arg("--override").arg(kv);
        }
        cmd
    }

    fn spawn(&mut self, i: usize) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.nodes[i].log_path)
            .expect("open node log");
        let mark = std::fs::metadata(&self.nodes[i].log_path).map_or(0, |m| m.len() as usize);
        self.nodes[i].log_mark = mark;
        let mut cmd = self.command(i, "serve");
        for kv in self.extra.iter().chain(&self.nodes[i].node_extra) {
            cmd.arg("--override").arg(kv);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = cmd.spawn().expect("spawn runnel serve");
        let n = &mut self.nodes[i];
        step!(
            "node {} ({:?}) started: pid {}, kafka {}, controller 127.0.0.1:{}",
            n.id,
            n.role,
            child.id(),
            if n.role.is_broker() {
                n.bootstrap()
            } else {
                "-".into()
            },
            n.controller_port
        );
        n.child = Some(child);
    }

    /// The ids of the nodes with the broker role.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.nodes
            .iter()
            .filter(|n| n.role.is_broker())
            .map(|n| n.id)
            .collect()
    }

    /// The ids of the controller voters.
    pub fn voter_ids(&self) -> Vec<i32> {
        self.nodes
            .iter()
            .filter(|n| n.role.is_voter())
            .map(|n| n.id)
            .collect()
    }

    /// Waits until every running broker answers Metadata listing every
    /// broker (a controller-only node has no Kafka listener).
    fn wait_all_listed(&mut self) -> Result<(), String> {
        let want = self.broker_ids();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() || !self.nodes[i].role.is_broker() {
                continue;
            }
            loop {
                let n = &mut self.nodes[i];
                if let Some(Ok(Some(st))) = n.child.as_mut().map(Child::try_wait) {
                    return Err(format!("node {} exited during startup: {st}", n.id));
                }
                match metadata_view(&n.bootstrap()) {
                    Ok(v) if v.broker_ids == want => {
                        step!("node {} ready: {v:?}", n.id);
                        break;
                    }
                    _ if Instant::now() > deadline => {
                        return Err(format!(
                            "node {} did not list brokers {want:?} within {STARTUP_TIMEOUT:?}",
                            n.id
                        ))
                    }
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        Ok(())
    }

    /// SIGKILL node `id`: no chance to flush or say goodbye.
    /// Whether node `id`'s process is still running.
    pub fn node_mut_running(&mut self, id: i32) -> bool {
        self.node_mut(id).is_running()
    }

    /// Sends `sig` (e.g. "STOP", "CONT") to node `id`'s process.
    pub fn signal(&mut self, id: i32, sig: &str) {
        let pid = self
            .node_mut(id)
            .child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("node {id} is not running"));
        step!("SIG{sig} node {id} (pid {pid})");
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {pid} failed");
    }

    pub fn kill9(&mut self, id: i32) {
        let n = self.node_mut(id);
        if let Some(mut c) = n.child.take() {
            step!("kill -9 node {id} (pid {})", c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `id` again on its dir and ports, and waits until its
    /// Kafka listener answers Metadata (it serves once registered, which
    /// needs a quorum).
    pub fn restart(&mut self, id: i32) {
        self.kill9(id);
        let i = self
            .nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"));
        step!("restarting node {id}");
        self.spawn(i);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let n = &mut self.nodes[i];
            if let Some(Ok(Some(st))) = n.child.as_mut().map(Child::try_wait) {
                panic!("node {id} exited after restart: {st}\n{}", n.log_tail(40));
            }
            if n.ready() {
                step!("node {id} serving again");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} not serving within {STARTUP_TIMEOUT:?} of restart\n{}",
                n.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM node `id` and wait (up to 30 s) for a clean exit; panics if
    /// it does not exit in time or exits with a failure status.
    pub fn stop(&mut self, id: i32) {
        let n = self.node_mut(id);
        let Some(mut c) = n.child.take() else {
            return;
        };
        step!("SIGTERM node {id} (pid {})", c.id());
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", c.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match c.try_wait() {
                Ok(Some(st)) => {
                    step!("node {id} exited: {st}");
                    assert!(
                        st.success(),
                        "node {id} exited with {st} after SIGTERM\n{}",
                        n.log_tail(40)
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
                        "node {id} did not exit within 30 s of SIGTERM\n{}",
                        n.log_tail(40)
                    );
                }
            }
        }
    }

    /// Starts every node in `ids` again (killing any still running) and
    /// waits until each answers Metadata: unlike calling `restart` one by
    /// one, this works when all of them were down (a node only serves once
    /// the controller quorum is back).
    pub fn restart_all(&mut self, ids: &[i32]) {
        for &id in ids {
            self.kill9(id);
        }
        for &id in ids {
            let i = self
                .nodes
                .iter()
                .position(|n| n.id == id)
                .unwrap_or_else(|| panic!("no node {id}"));
            step!("restarting node {id}");
            self.spawn(i);
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        for &id in ids {
            loop {
                let n = self.node_mut(id);
                if let Some(Ok(Some(st))) = n.child.as_mut().map(Child::try_wait) {
                    panic!("node {id} exited after restart: {st}\n{}", n.log_tail(40));
                }
                if n.ready() {
                    step!("node {id} serving again");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {id} not serving within {STARTUP_TIMEOUT:?} of restart\n{}",
                    n.log_tail(40)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Node `id`'s view of the cluster.
    pub fn view(&self, id: i32) -> std::io::Result<ClusterView> {
        metadata_view(&self.node(id).bootstrap())
    }

    pub fn dir(&self, id: i32) -> &Path {
        &self.node(id).dir
    }

    /// Every broker's Kafka listener, comma-separated, for
    /// `bootstrap.servers`.
    pub fn bootstrap_all(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.role.is_broker())
            .map(ClusterNode::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!("{}", n.log_tail(60));
            }
            if let Some(root) = self.root.take() {
                eprintln!("kept the cluster's directory: {}", root.keep().display());
            }
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Metadata v2 for no topics, over a raw connection: the brokers (sorted),
/// the controller id and the cluster id, which rdkafka does not expose.
pub fn metadata_view(addr: &str) -> std::io::Result<ClusterView> {
    let mut conn = RawConn::connect(addr)?;
    let req = MetadataRequest::default().with_topics(Some(vec![]));
    let resp: MetadataResponse = conn.roundtrip(2, 1, &req)?;
    let mut broker_ids: Vec<i32> = resp.brokers.iter().map(|b| b.node_id.0).collect();
    broker_ids.sort_unstable();
    Ok(ClusterView {
        broker_ids,
        controller_id: resp.controller_id.0,
        cluster_id: resp.cluster_id.map(|s| s.to_string()),
    })
}

/// The topics node `addr` lists (Metadata v2 for all topics, raw, so that
/// the answer is that node's own image): name -> partition count.
pub fn topics_on(addr: &str) -> std::io::Result<std::collections::BTreeMap<String, usize>> {
    let mut conn = RawConn::connect(addr)?;
    let req = MetadataRequest::default().with_topics(None);
    let resp: MetadataResponse = conn.roundtrip(2, 1, &req)?;
    Ok(resp
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .filter_map(|t| Some((t.name.as_ref()?.to_string(), t.partitions.len())))
        .collect())
}

/// CreateTopics v4 for one topic with replication factor 1, over a raw
/// connection to exactly `addr` (no client-side routing to the
/// controller): (error code, error message, how long the answer took).
pub fn raw_create_topic(
    addr: &str,
    name: &str,
    partitions: i32,
) -> std::io::Result<(i16, Option<String>, Duration)> {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let mut conn = RawConn::connect(addr)?;
    // The broker answers within its proposal timeout; leave it room.
    conn.stream
        .set_read_timeout(Some(Duration::from_secs(60)))?;
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(30_000);
    let started = Instant::now();
    let resp: CreateTopicsResponse = conn.roundtrip(4, 7, &req)?;
    let took = started.elapsed();
    let t = resp.topics.first().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "CreateTopics answered no topic",
        )
    })?;
    Ok((
        t.error_code,
        t.error_message.as_ref().map(|m| m.to_string()),
        took,
    ))
}
