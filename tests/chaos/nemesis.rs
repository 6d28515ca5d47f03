//! The nemesis: seeded random faults on the cluster's nodes, each logged
//! with `step!` and recorded as a `fault` start and end in the history.
//!
//! A three-node cluster with replication factor 3 and min.insync.replicas 2
//! need only stay available with one node down, so there is never more than
//! one node down or paused: every fault heals (restart, SIGCONT) before it
//! ends, and before the next one the nemesis waits (bounded) until every
//! node answers Metadata and every partition has its full ISR, so that
//! faults do not pile up on a cluster still recovering from the last.
//!
//! The kinds run in rounds, each a fresh shuffle of the selected kinds, until
//! the time is up; the first round always completes, so every selected kind
//! fires at least once however short the run.
//!
//! `lost_unsynced` and `torn_write` change a killed node's files before it
//! restarts (see `power.rs`): the first cuts every segment back to what the
//! node fsynced, as a power loss would; the second leaves half a batch at
//! the end of one segment.
//!
//! The network partitions (`partition_*`) cut links between nodes (the
//! cluster runs in network namespaces, `common::netns`; the clients, in the
//! root namespace, reach every node all along) for 2-8 s, then heal them;
//! `disk_full` fills one node's log dir (a tmpfs, see `disks.rs`) for 3-8
//! s, then gives it its room back. A partition never leaves the cluster
//! without a majority that can reach one another: an isolated node, or a
//! bridge (A and C cut apart, both still with B).
//!
//! Every fault is healed before it ends; `heal` heals all of them again
//! (links, disks, crashed nodes) after the last one, before the drain.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::cluster::{metadata_view, Cluster};
use crate::common::partition::{ids, sorted, states};
use crate::disks::Disks;
use crate::history::{Event, Phase};
use crate::step;
use crate::workload;
use crate::Recorder;

/// One kind of fault; the names are `CHAOS_NEMESES`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// kill -9 a random node, restart it 3-8 s later.
    KillRandom,
    /// kill -9 the leader of a random partition, restart it 3-8 s later.
    KillLeader,
    /// kill -9 the active controller, restart it 3-8 s later.
    KillController,
    /// SIGSTOP a random node for 2-6 s (past the 3 s broker session
    /// sometimes), then SIGCONT.
    Pause,
    /// SIGTERM (a controlled shutdown) a random node, restart it.
    RestartClean,
    /// A clean restart of every node in turn, each back in every ISR before
    /// the next goes.
    RollingRestart,
    /// kill -9 a random node and cut its segments back to what it fsynced
    /// (a power loss), restart it 3-8 s later.
    LostUnsynced,
    /// kill -9 a random node and leave a torn batch at the end of one of its
    /// segments, restart it 3-8 s later.
    TornWrite,
    /// Cut a random node off from the two others for 2-8 s.
    PartitionIsolate,
    /// Cut the leader of a random partition, or the active controller (a
    /// coin toss), off from the two others for 2-8 s.
    PartitionLeader,
    /// A bridge: two random nodes cut apart for 2-8 s, both still talking
    /// to the third.
    PartitionBridge,
    /// Fill a random node's log dir (no more room for a new page) for 3-8
    /// s, then give it its room back.
    DiskFull,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::KillRandom,
        Kind::KillLeader,
        Kind::KillController,
        Kind::Pause,
        Kind::RestartClean,
        Kind::RollingRestart,
        Kind::LostUnsynced,
        Kind::TornWrite,
        Kind::PartitionIsolate,
        Kind::PartitionLeader,
        Kind::PartitionBridge,
        Kind::DiskFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::KillRandom => "kill_random",
            Kind::KillLeader => "kill_leader",
            Kind::KillController => "kill_controller",
            Kind::Pause => "pause",
            Kind::RestartClean => "restart_clean",
            Kind::RollingRestart => "rolling_restart",
            Kind::LostUnsynced => "lost_unsynced",
            Kind::TornWrite => "torn_write",
            Kind::PartitionIsolate => "partition_isolate",
            Kind::PartitionLeader => "partition_leader",
            Kind::PartitionBridge => "partition_bridge",
            Kind::DiskFull => "disk_full",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// SplitMix64: a seed must replay the same faults on any machine and with
/// any version of the `rand` crate, whose generators promise neither.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (the modulo bias is far below what matters here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in lo..=hi, to the millisecond.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        Duration::from_millis(lo + self.next_u64() % (hi - lo + 1))
    }

    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// What the nemesis did, for the summary.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fault name to how many times it fired.
    pub fired: BTreeMap<&'static str, u64>,
    /// Waits for a healthy cluster before a fault, and how many gave up.
    pub health_waits: u64,
    pub health_timeouts: u64,
    /// Nodes found exited without the nemesis stopping them, with the end
    /// of their log.
    pub crashes: Vec<String>,
}

impl Faults {
    pub fn fired_text(&self) -> String {
        let fired: Vec<String> = self.fired.iter().map(|(n, c)| format!("{n} {c}")).collect();
        if fired.is_empty() {
            "none".to_string()
        } else {
            fired.join("  ")
        }
    }
}

/// How long the cluster may take to be healthy again before a fault.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node stays dead after kill -9.
const DOWN: (Duration, Duration) = (Duration::from_secs(3), Duration::from_secs(8));
/// How long a node stays down after a clean shutdown.
const DOWN_CLEAN: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(2));
const PAUSED: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(6));
const BETWEEN: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(5));
/// How long a network partition lasts.
const CUT: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(8));
/// How long a log dir stays full.
const FULL: (Duration, Duration) = (Duration::from_secs(3), Duration::from_secs(8));
/// How long a rolling restart waits for a node to be back in every ISR.
const ROLLING_ISR_TIMEOUT: Duration = Duration::from_secs(60);

struct Nemesis<'a> {
    c: &'a mut Cluster,
    disks: &'a Disks,
    rec: &'a Recorder,
    rng: &'a mut Rng,
    faults: Faults,
}

/// Runs rounds of the `kinds`, shuffled, until `duration` has passed (and
/// at least one whole round).
pub fn run(
    c: &mut Cluster,
    disks: &Disks,
    rec: &Recorder,
    kinds: &[Kind],
    duration: Duration,
    rng: &mut Rng,
) -> Faults {
    let deadline = Instant::now() + duration;
    let mut n = Nemesis {
        c,
        disks,
        rec,
        rng,
        faults: Faults::default(),
    };
    for round in 1.. {
        let mut order = kinds.to_vec();
        n.rng.shuffle(&mut order);
        let names: Vec<&str> = order.iter().map(|k| k.name()).collect();
        step!("nemesis round {round}: {names:?}");
        for kind in order {
            if round > 1 && Instant::now() >= deadline {
                return n.faults;
            }
            n.wait_healthy(HEALTH_TIMEOUT);
            n.fire(kind);
            std::thread::sleep(n.rng.between(BETWEEN.0, BETWEEN.1));
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    n.faults
}

/// After the last fault: every link between nodes healed, every disk with
/// its room, every node running (a crashed one restarted) and every
/// partition with its full ISR. Whether that happened within `within`.
pub fn heal(c: &mut Cluster, disks: &Disks, faults: &mut Faults, within: Duration) -> bool {
    // Each fault heals itself before it ends: anything still cut or full
    // here is a nemesis that did not get to its end.
    if let Some(netns) = c.netns() {
        let cuts = netns.cuts();
        if !cuts.is_empty() {
            step!("nemesis: links still cut at the end: {cuts:?}; healing");
        }
        netns.heal();
    }
    let full = disks.restore_all();
    if !full.is_empty() {
        step!("nemesis: disks still full at the end: nodes {full:?}; restored");
    }
    note_crashes(c, faults);
    step!("nemesis done; waiting up to {within:?} for a healthy cluster");
    let healed = wait_until_healthy(c, within);
    if !healed {
        step!(
            "the cluster is not healthy after {within:?}: {:?}",
            health(c)
        );
    }
    healed
}

/// Records and restarts every node that exited without the nemesis
/// stopping it: a broker must survive all of this.
pub fn note_crashes(c: &mut Cluster, faults: &mut Faults) {
    for id in ids(c) {
        let node = c.node_mut(id);
        let Some(status) = node.exited() else {
            continue;
        };
        let crash = format!("node {id} exited ({status})\n{}", node.log_tail(30));
        step!("{crash}");
        faults.crashes.push(crash);
        c.restart(id);
    }
}

impl Nemesis<'_> {
    fn fire(&mut self, kind: Kind) {
        let fired = match kind {
            Kind::KillRandom => {
                let id = self.random_node();
                self.kill(kind, id, format!("node {id}"))
            }
            Kind::KillLeader => self.kill_leader(kind),
            Kind::KillController => self.kill_controller(kind),
            Kind::Pause => self.pause(kind),
            Kind::RestartClean => self.restart_clean(kind),
            Kind::RollingRestart => self.rolling_restart(kind),
            Kind::LostUnsynced | Kind::TornWrite => self.damage(kind),
            Kind::PartitionIsolate => {
                let id = self.random_node();
                self.isolate(kind, id, format!("node {id}"))
            }
            Kind::PartitionLeader => self.partition_leader(kind),
            Kind::PartitionBridge => self.bridge(kind),
            Kind::DiskFull => self.disk_full(kind),
        };
        if fired {
            *self.faults.fired.entry(kind.name()).or_default() += 1;
        }
    }

    fn random_node(&mut self) -> i32 {
        let nodes = ids(self.c);
        self.rng.pick(&nodes)
    }

    fn record(&self, kind: Kind, detail: &str, phase: Phase) {
        self.rec.record(Event::Fault {
            t: self.rec.t(),
            client: "nemesis".to_string(),
            name: kind.name().to_string(),
            detail: detail.to_string(),
            phase,
        });
    }

    /// kill -9 `id`, restart it after a while.
    fn kill(&mut self, kind: Kind, id: i32, detail: String) -> bool {
        let down = self.rng.between(DOWN.0, DOWN.1);
        let detail = format!("{detail}, down {:.1} s", down.as_secs_f64());
        step!("nemesis {}: {detail}", kind.name());
        self.record(kind, &detail, Phase::Start);
        self.c.kill9(id);
        std::thread::sleep(down);
        self.c.restart(id);
        self.record(kind, &detail, Phase::End);
        true
    }

    /// kill -9 a random node, change its files while it is down, restart.
    fn damage(&mut self, kind: Kind) -> bool {
        let id = self.random_node();
        let down = self.rng.between(DOWN.0, DOWN.1);
        self.c.kill9(id);
        let dir = self.c.node(id).data_dir().to_path_buf();
        let what = match kind {
            // The log dir is a tmpfs (disks.rs), where fsync is instant
            // and a kill loses nothing: the cut follows the broker's sync
            // ledger, not the kernel, so it still drops exactly what the
            // broker had not fsynced. What it cannot show is a real disk
            // losing or reordering writes the broker did fsync.
            Kind::LostUnsynced => {
                match crate::power::cut_to_synced(&dir, &crate::power::ledger()) {
                    Ok(cut) => format!(
                        "{} segments cut, {} removed, {} bytes lost",
                        cut.truncated, cut.removed, cut.bytes
                    ),
                    Err(e) => panic!("cut node {id}'s segments to what it synced: {e}"),
                }
            }
            _ => {
                let pick = self.rng.next_u64() as usize;
                match crate::power::tear_last_write(&dir, pick) {
                    Ok(Some(seg)) => format!("torn batch at the end of {}", seg.display()),
                    Ok(None) => "no segment to tear".to_string(),
                    Err(e) => panic!("tear node {id}'s last write: {e}"),
                }
            }
        };
        let detail = format!("node {id}: {what}, down {:.1} s", down.as_secs_f64());
        step!("nemesis {}: {detail}", kind.name());
        self.record(kind, &detail, Phase::Start);
        std::thread::sleep(down);
        self.c.restart(id);
        self.record(kind, &detail, Phase::End);
        true
    }

    /// The leader of a random workload partition, as some node names it,
    /// with a description; None (logged) if no node names one.
    fn random_leader(&mut self, kind: Kind) -> Option<(i32, String)> {
        let partitions = workload::partitions();
        let (topic, p) = self.rng.pick(&partitions);
        let nodes = ids(self.c);
        let leader = states(self.c, &nodes, topic, p)
            .into_values()
            .filter_map(Result::ok)
            .map(|s| s.leader)
            .find(|&l| l > 0);
        if leader.is_none() {
            step!(
                "nemesis {}: no node names a leader of {topic}/{p}; skipped",
                kind.name()
            );
        }
        leader.map(|id| (id, format!("node {id}, leader of {topic}/{p}")))
    }

    /// The active controller, as a random node names it, with a
    /// description; None (logged) if it names none.
    fn controller(&mut self, kind: Kind) -> Option<(i32, String)> {
        let asked = self.random_node();
        match metadata_view(&self.c.node(asked).bootstrap()) {
            Ok(view) if view.controller_id > 0 => {
                let id = view.controller_id;
                Some((id, format!("node {id}, the controller (says node {asked})")))
            }
            other => {
                step!(
                    "nemesis {}: node {asked} names no controller ({other:?}); skipped",
                    kind.name()
                );
                None
            }
        }
    }

    fn kill_leader(&mut self, kind: Kind) -> bool {
        match self.random_leader(kind) {
            Some((id, detail)) => self.kill(kind, id, detail),
            None => false,
        }
    }

    fn kill_controller(&mut self, kind: Kind) -> bool {
        match self.controller(kind) {
            Some((id, detail)) => self.kill(kind, id, detail),
            None => false,
        }
    }

    /// Cuts `id` off from the other nodes for a while, then heals.
    fn isolate(&mut self, kind: Kind, id: i32, detail: String) -> bool {
        let held = self.rng.between(CUT.0, CUT.1);
        let detail = format!("{detail} isolated for {:.1} s", held.as_secs_f64());
        step!("nemesis {}: {detail}", kind.name());
        self.record(kind, &detail, Phase::Start);
        self.c.isolate(id);
        std::thread::sleep(held);
        self.c.heal();
        self.record(kind, &detail, Phase::End);
        true
    }

    fn partition_leader(&mut self, kind: Kind) -> bool {
        let target = if self.rng.below(2) == 0 {
            self.random_leader(kind)
        } else {
            self.controller(kind)
        };
        match target {
            Some((id, detail)) => self.isolate(kind, id, detail),
            None => false,
        }
    }

    /// Nodes A and C cut apart, both still reaching B, for a while.
    fn bridge(&mut self, kind: Kind) -> bool {
        let mut order = ids(self.c);
        self.rng.shuffle(&mut order);
        let (a, b, c) = (order[0], order[1], order[2]);
        let held = self.rng.between(CUT.0, CUT.1);
        let detail = format!(
            "nodes {a} and {c} cut apart, node {b} the bridge, for {:.1} s",
            held.as_secs_f64()
        );
        step!("nemesis {}: {detail}", kind.name());
        self.record(kind, &detail, Phase::Start);
        self.c.cut(a, c);
        std::thread::sleep(held);
        self.c.heal();
        self.record(kind, &detail, Phase::End);
        true
    }

    /// A random node's log dir full for a while, then its room back.
    fn disk_full(&mut self, kind: Kind) -> bool {
        let id = self.random_node();
        let held = self.rng.between(FULL.0, FULL.1);
        let used = match self.disks.fill(id) {
            Ok(used) => used,
            Err(e) => panic!("fill node {id}'s log dir: {e}"),
        };
        let detail = format!(
            "node {id}'s log dir full at {:.1} MiB for {:.1} s",
            used as f64 / (1 << 20) as f64,
            held.as_secs_f64()
        );
        step!("nemesis {}: {detail}", kind.name());
        self.record(kind, &detail, Phase::Start);
        std::thread::sleep(held);
        if let Err(e) = self.disks.restore(id) {
            panic!("give node {id}'s log dir its room back: {e}");
        }
        self.record(kind, &detail, Phase::End);
        true
    }

    fn pause(&mut self, kind: Kind) -> bool {
        let id = self.random_node();
        let paused = self.rng.between(PAUSED.0, PAUSED.1);
        let detail = format!("node {id} for {:.1} s", paused.as_secs_f64());
        step!("nemesis {}: {detail}", kind.name());
        self.record(kind, &detail, Phase::Start);
        self.c.signal(id, "STOP");
        std::thread::sleep(paused);
        self.c.signal(id, "CONT");
        self.record(kind, &detail, Phase::End);
        true
    }

    fn restart_clean(&mut self, kind: Kind) -> bool {
        let id = self.random_node();
        let down = self.rng.between(DOWN_CLEAN.0, DOWN_CLEAN.1);
        let detail = format!("node {id}, down {:.1} s", down.as_secs_f64());
        step!("nemesis {}: {detail}", kind.name());
        self.record(kind, &detail, Phase::Start);
        self.c.stop(id);
        std::thread::sleep(down);
        self.c.restart(id);
        self.record(kind, &detail, Phase::End);
        true
    }

    fn rolling_restart(&mut self, kind: Kind) -> bool {
        let mut order = ids(self.c);
        self.rng.shuffle(&mut order);
        let detail = format!("nodes {order:?}");
        step!("nemesis {}: {detail}", kind.name());
        self.record(kind, &detail, Phase::Start);
        for id in order {
            self.c.stop(id);
            self.c.restart(id);
            self.wait_healthy(ROLLING_ISR_TIMEOUT);
        }
        self.record(kind, &detail, Phase::End);
        true
    }

    /// Waits for a healthy cluster, counting the waits that give up; the
    /// fault goes ahead either way (it only costs availability).
    fn wait_healthy(&mut self, within: Duration) {
        note_crashes(self.c, &mut self.faults);
        self.faults.health_waits += 1;
        if !wait_until_healthy(self.c, within) {
            self.faults.health_timeouts += 1;
            step!(
                "nemesis: the cluster is not healthy after {within:?}, going on: {:?}",
                health(self.c)
            );
        }
    }
}

fn wait_until_healthy(c: &Cluster, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if health(c).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Healthy: every node answers Metadata listing all the brokers, and all
/// agree on a leader of every partition with every replica in its ISR.
/// Otherwise the first thing that is not so.
fn health(c: &Cluster) -> Result<(), String> {
    let nodes = ids(c);
    for &id in &nodes {
        match metadata_view(&c.node(id).bootstrap()) {
            Ok(view) if view.broker_ids == nodes => {}
            other => return Err(format!("node {id}: {other:?}")),
        }
    }
    for (topic, p) in workload::partitions() {
        let seen = states(c, &nodes, topic, p);
        let answers: Vec<_> = seen.values().filter_map(|r| r.as_ref().ok()).collect();
        let first = answers.first().copied();
        let agreed = answers.len() == nodes.len()
            && first.is_some_and(|f| {
                f.leader > 0
                    && f.replicas.len() == nodes.len()
                    && answers.iter().all(|s| {
                        s.leader == f.leader
                            && s.leader_epoch == f.leader_epoch
                            && s.isr == sorted(&s.replicas)
                    })
            });
        if !agreed {
            return Err(format!("{topic}/{p}: {seen:?}"));
        }
    }
    Ok(())
}
