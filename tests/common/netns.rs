//! Network namespaces for a test cluster: node i runs in a namespace of its
//! own with an address of its own, so that a test (or a nemesis) can cut
//! and heal the network between nodes. A cut is a real partition: packets
//! vanish without an error to anyone, established TCP connections stall,
//! new connects hang until their timeout.
//!
//! The partition is only ever between nodes. The test process stays in the
//! root namespace and reaches every node all the time, cut or not: a
//! client on both sides of a partition, as a load balancer or a client in
//! a third zone would be.
//!
//! Topology (k picked per cluster, `tag` = "rn" + pid + a letter):
//!
//! * node i: namespace `<tag>n<i>`, address A_i = 10.77.k.i/32 on
//!   `<tag>e<i>`; the root namespace has C = 10.77.k.100/32 on each
//!   `<tag>r<i>`, the other end of that veth pair. Root and node route to
//!   each other over it.
//! * nodes i < j: a veth pair `<tag>m<i><j>` (in ns i) / `<tag>m<j><i>` (in
//!   ns j), A_j routed over it in ns i and A_i in ns j. Nothing is ever
//!   forwarded or bridged: Docker's iptables FORWARD policy (DROP) on this
//!   kind of machine would eat it.
//! * a sink in each namespace: the veth pair `<tag>s<i>` (NOARP) /
//!   `<tag>t<i>`, both ends in ns i. A cut between i and j routes A_j to
//!   `<tag>s<i>` in ns i, and A_i to `<tag>s<j>` in ns j; frames sent
//!   there carry `<tag>s<i>`'s own MAC, so `<tag>t<i>` drops them as not
//!   its own. A `blackhole` route would drop too, but the kernel answers a
//!   local sender's connect() or send() on it with EINVAL at once: a
//!   refused connection, not a partition.
//!
//! Must never: touch a link or namespace that is not named with this
//! process's tag, except leftovers of test processes that no longer run
//! (swept at creation); route anything through the root namespace between
//! nodes. Everything is deleted when the `Netns` drops (also on a panic);
//! an `ip` command that fails panics with its command line and stderr.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::step;

/// Where `ip netns add` puts a namespace's handle.
const NETNS_DIR: &str = "/run/netns";
/// Where the root namespace lists its links (this process lives there).
const ROOT_LINKS: &str = "/sys/class/net";

/// A cluster's namespaces, veths and routes (see the module doc).
pub struct Netns {
    /// "rn<pid><letter>": every name starts with it.
    tag: String,
    /// The third octet of every address.
    k: u8,
    n: usize,
    /// The cut pairs (i < j).
    cuts: Mutex<BTreeSet<(usize, usize)>>,
}

impl Netns {
    /// Namespaces for nodes 1..=n, wired as in the module doc, and checked:
    /// the root namespace reaches every node and every node every other
    /// over TCP. Panics if not root or an `ip` command fails.
    pub fn create(n: usize) -> Netns {
        assert!(
            (1..=99).contains(&n),
            "{n} nodes: names and addresses allow 1..=99"
        );
        sweep_stale();
        static CLUSTERS: AtomicUsize = AtomicUsize::new(0);
        let seq = CLUSTERS.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("rn{pid}{}", (b'a' + (seq % 26) as u8) as char);
        let start = (pid as usize * 7 + seq * 13) % 250;
        // Another test process may pick the same k at the same moment: the
        // root route to its node 1 then already exists, and we move on.
        for attempt in 0..250 {
            let k = (start + attempt) % 250 + 1;
            if k_in_use(k) {
                continue;
            }
            let ns = Netns {
                tag: tag.clone(),
                k: k as u8,
                n,
                cuts: Mutex::new(BTreeSet::new()),
            };
            if ns.wire() {
                ns.verify();
                step!(
                    "netns {tag}: {n} nodes at {}..{}, clients at {}",
                    ns.addr(1),
                    ns.addr(n),
                    ns.client_addr()
                );
                return ns;
            }
            step!("netns {tag}: 10.77.{k}.0/24 taken meanwhile; trying another");
            // Dropping `ns` deletes what it made.
        }
        panic!("no free 10.77.k.0/24 for netns {tag}");
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Node i's namespace, `<tag>n<i>`.
    pub fn name(&self, i: usize) -> String {
        self.check(i);
        format!("{}n{i}", self.tag)
    }

    /// Node i's address A_i (no port), what it listens on and advertises.
    pub fn addr(&self, i: usize) -> String {
        self.check(i);
        format!("10.77.{}.{i}", self.k)
    }

    /// The root namespace's address C: where node i sees the test's
    /// connections come from.
    pub fn client_addr(&self) -> String {
        format!("10.77.{}.100", self.k)
    }

    /// `ip netns exec <ns i>`: put in front of a command to run it in node
    /// i's namespace. `ip` execs the command, so its pid is the command's.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        ["ip", "netns", "exec"]
            .into_iter()
            .map(String::from)
            .chain([self.name(i)])
            .collect()
    }

    /// Cuts nodes i and j apart, both directions: each one's packets to
    /// the other vanish. Either still reaches the rest and the test.
    pub fn cut(&self, i: usize, j: usize) {
        let pair = self.pair(i, j);
        step!("netns {}: cut {i} <-> {j}", self.tag);
        self.route_to_sink(i, j);
        self.route_to_sink(j, i);
        self.lock_cuts().insert(pair);
    }

    /// Cuts node i from every other node (not from the test).
    pub fn isolate(&self, i: usize) {
        step!(
            "netns {}: isolating node {i} from the other nodes",
            self.tag
        );
        for j in (1..=self.n).filter(|&j| j != i) {
            self.cut(i, j);
        }
    }

    /// Restores the link between i and j (a no-op if it is not cut).
    pub fn heal_between(&self, i: usize, j: usize) {
        let pair = self.pair(i, j);
        if !self.lock_cuts().contains(&pair) {
            return;
        }
        step!("netns {}: heal {i} <-> {j}", self.tag);
        self.route_direct(i, j);
        self.route_direct(j, i);
        self.lock_cuts().remove(&pair);
    }

    /// Restores every link between nodes.
    pub fn heal(&self) {
        let cut: Vec<(usize, usize)> = self.lock_cuts().iter().copied().collect();
        if !cut.is_empty() {
            step!("netns {}: healing {cut:?}", self.tag);
        }
        for (i, j) in cut {
            self.heal_between(i, j);
        }
    }

    /// Whether nodes i and j are cut apart.
    pub fn is_cut(&self, i: usize, j: usize) -> bool {
        let pair = self.pair(i, j);
        self.lock_cuts().contains(&pair)
    }

    /// The cut pairs (i < j).
    pub fn cuts(&self) -> Vec<(usize, usize)> {
        self.lock_cuts().iter().copied().collect()
    }

    /// Runs `f` on a thread in node i's network namespace: the sockets it
    /// makes live there (and keep doing so when handed back).
    pub fn run_in<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new(NETNS_DIR).join(self.name(i));
        std::thread::scope(|s| {
            let entered = s.spawn(|| {
                let handle =
                    File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                // SAFETY: a valid namespace fd; setns moves this thread
                // only (a network namespace is per thread).
                let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns {}: {}",
                    path.display(),
                    io::Error::last_os_error()
                );
                f()
            });
            entered
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// A TCP connection made from node i's namespace (as node i would).
    pub fn connect_from(
        &self,
        i: usize,
        to: SocketAddr,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        self.run_in(i, || TcpStream::connect_timeout(&to, timeout))
    }

    /// Whether `pid` lives in node i's network namespace.
    pub fn holds_pid(&self, i: usize, pid: u32) -> bool {
        let ns = std::fs::metadata(Path::new(NETNS_DIR).join(self.name(i)));
        let of_pid = std::fs::metadata(format!("/proc/{pid}/ns/net"));
        match (ns, of_pid) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        }
    }

    fn check(&self, i: usize) {
        assert!(
            (1..=self.n).contains(&i),
            "no node {i} in netns {} (1..={})",
            self.tag,
            self.n
        );
    }

    fn pair(&self, i: usize, j: usize) -> (usize, usize) {
        self.check(i);
        self.check(j);
        assert_ne!(i, j, "a node is never cut from itself");
        (i.min(j), i.max(j))
    }

    fn lock_cuts(&self) -> std::sync::MutexGuard<'_, BTreeSet<(usize, usize)>> {
        self.cuts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn route_to_sink(&self, i: usize, j: usize) {
        let sink = format!("{}s{i}", self.tag);
        let to = format!("{}/32", self.addr(j));
        ip(&["-n", &self.name(i), "route", "replace", &to, "dev", &sink]);
    }

    fn route_direct(&self, i: usize, j: usize) {
        let mesh = format!("{}m{i}{j}", self.tag);
        let to = format!("{}/32", self.addr(j));
        ip(&["-n", &self.name(i), "route", "replace", &to, "dev", &mesh]);
    }

    /// Builds everything. False (and nothing more made) if the root route
    /// to node 1 exists already: another process has this k.
    fn wire(&self) -> bool {
        let c = self.client_addr();
        let c32 = format!("{c}/32");
        for i in 1..=self.n {
            let ns = self.name(i);
            let (root_end, node_end) = (format!("{}r{i}", self.tag), format!("{}e{i}", self.tag));
            let a32 = format!("{}/32", self.addr(i));
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "link", "add", &root_end, "type", "veth", "peer", "name", &node_end,
            ]);
            ip(&["link", "set", &node_end, "netns", &ns]);
            ip(&["addr", "add", &c32, "dev", &root_end]);
            ip(&["link", "set", &root_end, "up"]);
            let route = ["route", "add", &a32, "dev", &root_end, "src", &c];
            if i == 1 && !ip_unless_exists(&route) {
                return false;
            }
            if i > 1 {
                ip(&route);
            }
            ip(&["-n", &ns, "addr", "add", &a32, "dev", &node_end]);
            ip(&["-n", &ns, "link", "set", &node_end, "up"]);
            ip(&["-n", &ns, "route", "add", &c32, "dev", &node_end]);
            let (sink, sink_peer) = (format!("{}s{i}", self.tag), format!("{}t{i}", self.tag));
            ip(&[
                "-n", &ns, "link", "add", &sink, "type", "veth", "peer", "name", &sink_peer,
            ]);
            ip(&["-n", &ns, "link", "set", &sink, "arp", "off", "up"]);
            ip(&["-n", &ns, "link", "set", &sink_peer, "up"]);
        }
        for i in 1..=self.n {
            for j in i + 1..=self.n {
                let (ij, ji) = (
                    format!("{}m{i}{j}", self.tag),
                    format!("{}m{j}{i}", self.tag),
                );
                ip(&["link", "add", &ij, "type", "veth", "peer", "name", &ji]);
                for (end, node) in [(&ij, i), (&ji, j)] {
                    ip(&["link", "set", end, "netns", &self.name(node)]);
                    ip(&["-n", &self.name(node), "link", "set", end, "up"]);
                }
                self.route_direct(i, j);
                self.route_direct(j, i);
            }
        }
        true
    }

    /// A TCP connect from the root namespace to every node, and from every
    /// node to every other, to a listener on its address.
    fn verify(&self) {
        let within = Duration::from_secs(2);
        let listeners: Vec<(usize, TcpListener)> = (1..=self.n)
            .map(|i| {
                let addr = format!("{}:0", self.addr(i));
                let l = self.run_in(i, || TcpListener::bind(&addr));
                (
                    i,
                    l.unwrap_or_else(|e| panic!("netns {}: bind {addr}: {e}", self.tag)),
                )
            })
            .collect();
        let targets: Vec<(usize, SocketAddr)> = listeners
            .iter()
            .map(|(i, l)| (*i, l.local_addr().expect("listener address")))
            .collect();
        for &(j, to) in &targets {
            if let Err(e) = TcpStream::connect_timeout(&to, within) {
                panic!(
                    "netns {}: the root namespace cannot reach node {j} at {to}: {e}",
                    self.tag
                );
            }
            for i in (1..=self.n).filter(|&i| i != j) {
                if let Err(e) = self.connect_from(i, to, within) {
                    panic!(
                        "netns {}: node {i} cannot reach node {j} at {to}: {e}",
                        self.tag
                    );
                }
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The root ends first: deleting one deletes its peer at once, where
        // a namespace's links go only once the kernel gets round to it.
        for link in links_with_prefix(&self.tag) {
            let _ = ip_quiet(&["link", "del", &link]);
        }
        for i in 1..=self.n {
            let ns = format!("{}n{i}", self.tag);
            if Path::new(NETNS_DIR).join(&ns).exists() {
                let _ = ip_quiet(&["netns", "del", &ns]);
            }
        }
    }
}

/// Runs `ip <args>`; panics with the command line and stderr if it fails.
fn ip(args: &[&str]) {
    if let Err(e) = ip_quiet(args) {
        panic!("{e}");
    }
}

/// `ip <args>`: false if it failed because the thing exists already.
fn ip_unless_exists(args: &[&str]) -> bool {
    match ip_quiet(args) {
        Ok(()) => true,
        Err(e) if e.contains("File exists") => false,
        Err(e) => panic!("{e}"),
    }
}

/// `ip <args>`; the failure (command line, status, stderr) as the error.
fn ip_quiet(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("`ip {}`: cannot run ip: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether the root namespace has an address or route in 10.77.k.0/24.
fn k_in_use(k: usize) -> bool {
    let prefix = format!("10.77.{k}.");
    [
        &["-4", "-o", "addr", "show"][..],
        &["-4", "route", "show"][..],
    ]
    .iter()
    .any(|args| {
        Command::new("ip")
            .args(*args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&prefix))
            .unwrap_or(false)
    })
}

/// The root namespace's links whose names start with `prefix`.
fn links_with_prefix(prefix: &str) -> Vec<String> {
    names_in(ROOT_LINKS)
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn names_in(dir: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The pid in a name this module made ("rn<pid><letter><kind><digits>"),
/// if it is one.
fn pid_of_name(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("rn")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    let (pid, rest) = rest.split_at(digits);
    let mut chars = rest.chars();
    let seq = chars.next()?;
    let kind = chars.next()?;
    let index = chars.as_str();
    let ours = seq.is_ascii_lowercase()
        && "nremst".contains(kind)
        && !index.is_empty()
        && index.chars().all(|c| c.is_ascii_digit());
    if ours {
        pid.parse().ok()
    } else {
        None
    }
}

/// Deletes namespaces and root links left by test processes that no
/// longer run (killed before their `Netns` dropped).
fn sweep_stale() {
    let dead = |name: &str| {
        pid_of_name(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    for link in names_in(ROOT_LINKS).into_iter().filter(|n| dead(n)) {
        if ip_quiet(&["link", "del", &link]).is_ok() {
            step!("netns: removed link {link}, left by a test that no longer runs");
        }
    }
    for ns in names_in(NETNS_DIR).into_iter().filter(|n| dead(n)) {
        if ip_quiet(&["netns", "del", &ns]).is_ok() {
            step!("netns: removed namespace {ns}, left by a test that no longer runs");
        }
    }
}
