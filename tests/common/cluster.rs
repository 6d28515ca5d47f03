//! A cluster of `runnel serve` processes (`Node`s) on loopback ports, each
//! with its own data dir: by default each a broker and a controller voter
//! (`Cluster::start`), or any mix of roles (`Cluster::start_roles`, e.g.
//! three controllers and three broker-only nodes), formatted with
//! `runnel format` as a user would. Nodes can be killed with SIGKILL and
//! restarted on the same dir and ports. Every step is printed; when a test
//! panics, each node's log tail is printed and the directories are kept.
//!
//! `Cluster::start_in_netns` runs each node in a network namespace of its
//! own (see `netns`), so that a test can partition the nodes (`cut`,
//! `isolate`, `heal`) while it still reaches every one of them;
//! `Cluster::start_in_netns_prepared` also lets it set up each node's
//! directory before the node is formatted (e.g. a file system of its own
//! for the log dir).

use std::path::Path;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{MetadataRequest, MetadataResponse};

use super::netns::Netns;
use super::node::Node;
pub use super::node::Role;
use super::{RawConn, STARTUP_TIMEOUT};
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

pub struct Cluster {
    pub nodes: Vec<Node>,
    root: Option<tempfile::TempDir>,
    /// The nodes' namespaces (`start_in_netns`). Last: dropped after the
    /// nodes, whose processes live in them. Boxed to keep `try_start`'s
    /// error (which carries the cluster) small.
    netns: Option<Box<Netns>>,
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
            match Cluster::try_start(roles, extra, per_node, &|_, _| {}, None) {
                Ok(c) => return c,
                Err((c, e)) if attempt < 3 => {
                    step!("cluster did not start ({e}); retrying on other ports");
                    drop(c);
                }
                Err((c, e)) => c.did_not_start(&e),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// As `start_with`, each node (broker and voter) in a network
    /// namespace of its own with its own address (see `netns`): the
    /// listeners, the voter set and `bootstrap()` use that address, and the
    /// test (in the root namespace) reaches every node whatever is cut
    /// between them. Partition with `cut`, `isolate`, `heal`.
    pub fn start_in_netns(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_in_netns_prepared(n, extra, &|_, _| {})
    }

    /// As `start_in_netns`, with `prepare(id, dir)` called for every node
    /// once its directory `dir` exists and before it is formatted: e.g. to
    /// mount a file system at `dir/data` (its log dir) or to put part of
    /// it elsewhere. It runs once, not on restarts.
    pub fn start_in_netns_prepared(
        n: usize,
        extra: &[&str],
        prepare: &dyn Fn(i32, &Path),
    ) -> Cluster {
        for kv in extra {
            assert!(kv.contains('='), "override {kv:?} is not key=value");
        }
        let netns = Netns::create(n);
        // No retry on other ports: nothing else binds in these namespaces.
        let c = match Cluster::try_start(
            &vec![Role::Combined; n],
            extra,
            &|_| Vec::new(),
            prepare,
            Some(netns),
        ) {
            Ok(c) => c,
            Err((c, e)) => c.did_not_start(&e),
        };
        // `ip netns exec` must have exec'd runnel in the namespace: signals
        // (kill -9, SIGSTOP) to the pid reach runnel itself.
        let netns = c.netns().expect("started in netns");
        let runnel = std::fs::canonicalize(env!("CARGO_BIN_EXE_runnel")).expect("runnel binary");
        for node in &c.nodes {
            let pid = node.pid().expect("a started node has a pid");
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| {
                p.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            });
            assert_eq!(
                exe.as_deref().ok(),
                runnel.to_str(),
                "node {} (pid {pid}) runs {exe:?}, not runnel",
                node.id
            );
            assert!(
                netns.holds_pid(node.id as usize, pid),
                "node {} (pid {pid}) is not in namespace {}",
                node.id,
                netns.name(node.id as usize)
            );
        }
        c
    }

    /// Panics with every node's log tail.
    fn did_not_start(mut self, e: &str) -> ! {
        let tails: Vec<String> = self.nodes.iter().map(|n| n.log_tail(40)).collect();
        self.nodes.iter_mut().for_each(Node::tail_shown);
        panic!("cluster did not start: {e}\n{}", tails.join("\n"));
    }

    fn try_start(
        roles: &[Role],
        extra: &[&str],
        per_node: &dyn Fn(i32) -> Vec<String>,
        prepare: &dyn Fn(i32, &Path),
        netns: Option<Netns>,
    ) -> Result<Cluster, (Cluster, String)> {
        let root = tempfile::Builder::new()
            .prefix("runnel-cluster.")
            .tempdir()
            .expect("create temp dir");
        let n = roles.len();
        let mut nodes: Vec<Node> = (1..=n as i32)
            .zip(roles)
            .map(|(id, &role)| {
                // Every node is served with the cluster-wide overrides, then
                // its own.
                let overrides = extra
                    .iter()
                    .map(|s| s.to_string())
                    .chain(per_node(id))
                    .collect();
                let mut node =
                    Node::member(id, role, root.path().join(format!("node{id}")), overrides);
                if let Some(ns) = &netns {
                    node.place_in_netns(ns.addr(id as usize), ns.exec_prefix(id as usize));
                }
                node
            })
            .collect();
        let voters = nodes
            .iter()
            .filter(|n| n.role.is_voter())
            .map(|n| format!("{}@{}", n.id, n.controller_addr()))
            .collect::<Vec<_>>()
            .join(",");
        for node in &mut nodes {
            node.set_voters(&voters);
        }
        let mut c = Cluster {
            nodes,
            root: Some(root),
            netns: netns.map(Box::new),
        };
        step!("formatting {n} nodes ({roles:?}), controller.quorum.voters={voters}");
        if !extra.is_empty() {
            step!("every node is served with {extra:?}");
        }
        for node in &c.nodes {
            prepare(node.id, node.dir());
            node.format(CLUSTER_ID);
        }
        for node in &mut c.nodes {
            node.spawn();
        }
        match c.wait_all_listed() {
            Ok(()) => Ok(c),
            Err(e) => Err((c, e)),
        }
    }

    pub fn node_mut(&mut self, id: i32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn node(&self, id: i32) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// The ids of the nodes whose process is running.
    pub fn running(&mut self) -> Vec<i32> {
        self.nodes
            .iter_mut()
            .filter_map(|n| n.is_alive().then_some(n.id))
            .collect()
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
        for n in &mut self.nodes {
            if n.pid().is_none() || !n.role.is_broker() {
                continue;
            }
            loop {
                if let Some(st) = n.exited() {
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

    /// Whether node `id`'s process is still running.
    pub fn node_mut_running(&mut self, id: i32) -> bool {
        self.node_mut(id).is_alive()
    }

    /// Sends `sig` (e.g. "STOP", "CONT") to node `id`'s process.
    pub fn signal(&mut self, id: i32, sig: &str) {
        self.node_mut(id).signal(sig);
    }

    /// SIGKILL node `id`: no chance to flush or say goodbye.
    pub fn kill9(&mut self, id: i32) {
        self.node_mut(id).kill9();
    }

    /// Starts node `id` again on its dir and ports, and waits until it
    /// serves (see `Node::restart`).
    pub fn restart(&mut self, id: i32) {
        self.node_mut(id).restart();
    }

    /// SIGTERM node `id` and wait for a clean exit; panics if it does not
    /// exit in time or exits with a failure status.
    pub fn stop(&mut self, id: i32) {
        self.node_mut(id).stop();
    }

    /// Starts every node in `ids` again (killing any still running) and
    /// waits until each serves: unlike calling `restart` one by one, this
    /// works when all of them were down (a node only serves once the
    /// controller quorum is back).
    pub fn restart_all(&mut self, ids: &[i32]) {
        for &id in ids {
            self.kill9(id);
        }
        for &id in ids {
            step!("restarting node {id}");
            self.node_mut(id).spawn();
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        for &id in ids {
            self.node_mut(id).wait_ready_or_panic(deadline);
        }
    }

    /// Node `id`'s view of the cluster.
    pub fn view(&self, id: i32) -> std::io::Result<ClusterView> {
        metadata_view(&self.node(id).bootstrap())
    }

    /// SIGKILL every node (e.g. before unmounting what they run on).
    pub fn kill_all(&mut self) {
        for node in &mut self.nodes {
            node.kill9();
        }
    }

    /// Node `id`'s directory (its log, and its data in `data`).
    pub fn dir(&self, id: i32) -> &Path {
        self.node(id).dir()
    }

    /// The nodes' network namespaces, if started with `start_in_netns`.
    pub fn netns(&self) -> Option<&Netns> {
        self.netns.as_deref()
    }

    fn netns_or_panic(&self) -> &Netns {
        self.netns
            .as_ref()
            .expect("a partition needs a cluster from Cluster::start_in_netns")
    }

    /// Cuts nodes `a` and `b` apart (both directions; see `Netns::cut`).
    pub fn cut(&self, a: i32, b: i32) {
        self.netns_or_panic().cut(a as usize, b as usize);
    }

    /// Cuts node `id` from every other node; the test still reaches it.
    pub fn isolate(&self, id: i32) {
        self.netns_or_panic().isolate(id as usize);
    }

    /// Restores every link between nodes.
    pub fn heal(&self) {
        self.netns_or_panic().heal();
    }

    /// Whether nodes `a` and `b` are cut apart.
    pub fn is_cut(&self, a: i32, b: i32) -> bool {
        self.netns_or_panic().is_cut(a as usize, b as usize)
    }

    /// Every broker's Kafka listener, comma-separated, for
    /// `bootstrap.servers`.
    pub fn bootstrap_all(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.role.is_broker())
            .map(Node::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Each node prints its log tail as it drops (on a panic).
        if std::thread::panicking() {
            if let Some(root) = self.root.take() {
                eprintln!("kept the cluster's directory: {}", root.keep().display());
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
