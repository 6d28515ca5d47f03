//! Controller: the Raft metadata quorum (openraft over RocksDB) and the
//! metadata image it replicates.
//!
//! `Controller` is the handle the rest of the program uses: propose a
//! `MetadataCommand`, read or follow the applied `MetadataImage`. Every
//! change to cluster metadata goes through `propose`; nothing outside the
//! state machine mutates the image.
//!
//! * `records`, `image`: the commands and the pure state transition.
//! * `store`: the RocksDB log store and state machine.
//! * `network`: the Raft transport between voters (gRPC, served by
//!   `rpc::server`).
//!
//! Any voter accepts proposals: a follower forwards them to the leader over
//! the same gRPC channels and returns once the entry is applied locally too.
//! * `placement`: replica placement for new topics and partitions.
//! * `observer`: the metadata stream that nodes which are not voters
//!   (`process.roles=broker`) follow; a `Controller` made by `observe` is
//!   such an observer: no Raft, no RocksDB, every write forwarded.

pub mod batcher;
pub mod image;
pub mod liveness;
pub mod network;
pub mod observer;
pub mod placement;
pub mod records;
pub mod service;
pub mod session;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;
// The default `SnapshotData` of `declare_raft_types!` names `Cursor`.
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy, StorageError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use self::image::MetadataImage;
use self::network::NetworkFactory;
use self::records::{MetadataCommand, MetadataResponse};
use crate::rpc::{self, Channels};

/// The controller quorum as its leader sees it (Raft log indexes as Kafka
/// offsets: a log end offset is the index after the last entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumStatus {
    pub leader: u64,
    pub term: u64,
    pub high_watermark: i64,
    pub voters: Vec<VoterStatus>,
    /// Brokers that are not voters (they follow the metadata stream), with
    /// the log end offset their last heartbeat reported.
    #[serde(default)]
    pub observers: Vec<VoterStatus>,
    /// Voter id -> CONTROLLER address.
    pub addresses: BTreeMap<u64, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterStatus {
    pub id: u64,
    pub log_end_offset: i64,
    /// When it last matched the leader's log (ms since the epoch; -1: lagging).
    pub caught_up_ms: i64,
}

openraft::declare_raft_types!(
    /// Raft types of the controller quorum. `Node::addr` is the host:port of
    /// the voter's CONTROLLER listener.
    pub TypeConfig:
        D = MetadataCommand,
        R = MetadataResponse,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// How long `propose` waits for its entry to be committed and applied,
/// including waiting out an election.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between attempts while the leader is unknown, moving or
/// unreachable; short against the election timeout so that a new leader is
/// used as soon as this node hears of it.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a forwarded proposal that committed on the leader may take to
/// be applied here before `propose` returns anyway.
const LOCAL_APPLY_WAIT: Duration = Duration::from_secs(5);
/// Snapshot chunk size: one InstallSnapshot message. JSON makes a chunk up
/// to four times bigger, which must stay under `rpc::MAX_MESSAGE_BYTES`.
const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// How often the active controller looks at broker liveness: a fence
/// follows a lost session within the grace period plus this.
const FENCING_TICK: Duration = Duration::from_millis(50);
/// How long `shutdown` waits for the storage tasks to release RocksDB.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This node cannot accept writes; send them to `leader` if known.
    #[error("this controller is not the leader (leader: {})", OptLeader(leader))]
    NotLeader { leader: Option<u64> },
    /// No quorum answered in time. For a proposal the outcome is unknown:
    /// the entry may still commit later.
    #[error("controller quorum unavailable: {0}")]
    Unavailable(String),
    /// The Raft log or state machine failed; the node has stopped.
    #[error("controller storage failed: {0}")]
    Storage(#[source] Box<StorageError<u64>>),
    #[error("controller is shut down")]
    Shutdown,
    #[error("invalid controller configuration: {0}")]
    Config(String),
    #[error("cannot create controller directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store was formatted for another cluster.
    #[error("controller store belongs to cluster {existing:?}, not {requested:?}")]
    ClusterIdMismatch { existing: String, requested: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<StorageError<u64>> for Error {
    fn from(e: StorageError<u64>) -> Self {
        Error::Storage(Box::new(e))
    }
}

struct OptLeader<'a>(&'a Option<u64>);

impl fmt::Display for OptLeader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, "{id}"),
            None => f.write_str("unknown"),
        }
    }
}

fn from_fatal(fatal: Fatal<u64>) -> Error {
    match fatal {
        Fatal::StorageError(e) => Error::Storage(Box::new(e)),
        Fatal::Panicked => {
            tracing::error!("controller Raft core panicked");
            Error::Shutdown
        }
        Fatal::Stopped => Error::Shutdown,
    }
}

/// What the leader answers a proposal another voter forwarded to it
/// (the payload of the Propose RPC's reply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Forwarded {
    /// Committed and applied on the leader at Raft log `index`.
    Applied {
        index: u64,
        response: MetadataResponse,
    },
    /// Not written: the receiver does not lead (`leader` if it knows who
    /// does). Safe to retry.
    NotLeader { leader: Option<u64> },
    /// The leader could not commit in time or failed; the outcome is
    /// unknown, so this must not be retried elsewhere.
    Unavailable(String),
}

/// One local write attempt.
enum Written {
    Applied {
        index: u64,
        response: MetadataResponse,
    },
    NotLeader {
        leader: Option<u64>,
    },
}

/// Why a forward did not get an answer.
enum ForwardFailure {
    /// The request cannot have reached the leader: retry.
    Unreachable(String),
    /// It may have: do not retry.
    Unknown(String),
}

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub node_id: u64,
    /// RocksDB lives here.
    pub dir: PathBuf,
    /// Voter id -> host:port of its CONTROLLER listener. Must contain
    /// `node_id`.
    pub voters: BTreeMap<u64, String>,
    /// Committed entries between snapshots.
    pub snapshot_interval: u64,
    /// Entries kept in the log behind the latest snapshot, so that a voter
    /// a little behind catches up from the log rather than a snapshot.
    pub retained_after_snapshot: u64,
    /// `controller.quorum.election.timeout.ms`: a follower that hears no
    /// leader for between 1.5 and 2 times this stands for election; the
    /// leader heartbeats every quarter of it (see `raft_config`).
    pub election_timeout_ms: u64,
}

impl ControllerConfig {
    pub fn new(node_id: u64, dir: PathBuf, voters: BTreeMap<u64, String>) -> ControllerConfig {
        ControllerConfig {
            node_id,
            dir,
            voters,
            snapshot_interval: 10_000,
            retained_after_snapshot: 1_000,
            election_timeout_ms: DEFAULT_ELECTION_TIMEOUT_MS,
        }
    }
}

/// A running controller quorum member (`start`), or an observer of the
/// quorum (`observe`). Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    voters: BTreeMap<u64, BasicNode>,
    /// gRPC channels to the voters, shared with the Raft transport.
    channels: Channels,
    image: watch::Receiver<Arc<MetadataImage>>,
    role: Role,
}

enum Role {
    Voter(Voter),
    Observer(Observer),
}

struct Voter {
    raft: Raft<TypeConfig>,
    /// Reports closed once openraft's tasks have dropped the stores.
    closed: watch::Receiver<()>,
    /// When the leader last heard from each broker.
    liveness: liveness::Liveness,
    /// The committed log, for the metadata stream.
    log: store::CommittedLog,
}

struct Observer {
    /// The active controller as the streaming voter last reported it.
    leader: watch::Receiver<Option<u64>>,
    stop: watch::Sender<bool>,
}

/// The default of `controller.quorum.election.timeout.ms` (Kafka's is
/// 1000). openraft stands a follower for election once it has heard no
/// leader for the leader lease (`election_timeout_max`) plus its own random
/// timeout (between `election_timeout_min` and `election_timeout_max`,
/// drawn at start). With this as the maximum and half of it as the minimum,
/// a dead leader is replaced after 0.45 to 0.6 s of silence, while the
/// leader heartbeats every 75 ms: six missed heartbeats in a row before
/// anyone stands, which a loaded 2-core machine does not do by accident
/// (benches/stability.rs counts elections).
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 300;

fn raft_config(cfg: &ControllerConfig) -> Result<Config> {
    let election = cfg.election_timeout_ms.max(40);
    Config {
        cluster_name: "runnel-controller".into(),
        heartbeat_interval: election / 4,
        election_timeout_min: election / 2,
        election_timeout_max: election,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_interval.max(1)),
        max_in_snapshot_log_to_keep: cfg.retained_after_snapshot,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        enable_tick: true,
        ..Default::default()
    }
    .validate()
    .map_err(|e| Error::Config(e.to_string()))
}

impl Controller {
    /// Opens the store in `cfg.dir` (creating it if needed) and starts the
    /// Raft node. The image is the persisted one, with every committed entry
    /// re-applied, by the time this returns.
    pub async fn start(cfg: ControllerConfig) -> Result<Controller> {
        if !cfg.voters.contains_key(&cfg.node_id) {
            return Err(Error::Config(format!(
                "node {} is not among the controller voters {:?}",
                cfg.node_id,
                cfg.voters.keys().collect::<Vec<_>>()
            )));
        }
        std::fs::create_dir_all(&cfg.dir).map_err(|source| Error::Io {
            path: cfg.dir.clone(),
            source,
        })?;
        let (publish, image) = watch::channel(Arc::new(MetadataImage::default()));
        let dir = cfg.dir.clone();
        let (log_store, state_machine) =
            tokio::task::spawn_blocking(move || store::open(&dir, publish).map_err(Error::from))
                .await
                .map_err(|e| Error::Unavailable(format!("opening the controller store: {e}")))??;
        let closed = log_store.closed();
        let log = log_store.committed_log();
        let channels = Channels::default();
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(raft_config(&cfg)?),
            NetworkFactory::new(channels.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(from_fatal)?;
        let voters = cfg
            .voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        tracing::info!(node_id = cfg.node_id, dir = %cfg.dir.display(), "controller started");
        publish_applied_index(image.clone());
        publish_raft_metrics(raft.metrics(), cfg.node_id, cfg.voters.len());
        Ok(Controller {
            inner: Arc::new(Inner {
                node_id: cfg.node_id,
                voters,
                channels,
                image,
                role: Role::Voter(Voter {
                    raft,
                    closed,
                    liveness: liveness::Liveness::default(),
                    log,
                }),
            }),
        })
    }

    /// An observer of the quorum in `voters` (id -> CONTROLLER host:port),
    /// for a node that is not a voter: its image follows the metadata
    /// stream of one voter after another (see `observer`); proposals,
    /// heartbeats and quorum status go to the active controller. It starts
    /// with an empty image; `wait_applied` waits for the stream.
    pub fn observe(node_id: u64, voters: BTreeMap<u64, String>) -> Result<Controller> {
        if voters.is_empty() {
            return Err(Error::Config(
                "an observer needs the controller voters (controller.quorum.voters)".into(),
            ));
        }
        if voters.contains_key(&node_id) {
            return Err(Error::Config(format!(
                "node {node_id} is a controller voter, not an observer"
            )));
        }
        let voters: BTreeMap<u64, BasicNode> = voters
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        let channels = Channels::default();
        let (publish, image) = watch::channel(Arc::new(MetadataImage::default()));
        let (leader_tx, leader) = watch::channel(None);
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(observer::follow(
            node_id,
            voters.clone(),
            channels.clone(),
            publish,
            leader_tx,
            stopped,
        ));
        tracing::info!(node_id, voters = ?voters.keys(), "observing the controller quorum");
        Ok(Controller {
            inner: Arc::new(Inner {
                node_id,
                voters,
                channels,
                image,
                role: Role::Observer(Observer { leader, stop }),
            }),
        })
    }

    /// Whether this node is a voter (else an observer).
    pub fn is_voter(&self) -> bool {
        matches!(self.inner.role, Role::Voter(_))
    }

    fn voter(&self) -> Option<&Voter> {
        match &self.inner.role {
            Role::Voter(v) => Some(v),
            Role::Observer(_) => None,
        }
    }

    /// Waits until the image has applied `index` (for an observer: until
    /// the stream has delivered it), up to `timeout`; whether it has.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut image = self.inner.image.clone();
        let applied =
            tokio::time::timeout(timeout, image.wait_for(|img| img.last_applied >= index)).await;
        matches!(applied, Ok(Ok(_)))
    }

    /// Serves an observer's FollowMetadata request: the stream of
    /// `observer::StreamItem`s it applies. Only a voter can.
    pub fn follow_stream(
        &self,
        req: observer::FollowRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<observer::StreamItem>> {
        let Some(voter) = self.voter() else {
            return Err(Error::Config(format!(
                "node {} is not a controller voter; it serves no metadata stream",
                self.inner.node_id
            )));
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tracing::info!(
            observer = req.observer,
            after = req.after,
            "an observer follows the metadata stream"
        );
        tokio::spawn(observer::feed(
            self.clone(),
            voter.raft.clone(),
            voter.log.clone(),
            req,
            tx,
        ));
        Ok(rx)
    }

    /// Whether this node is the quorum leader right now.
    pub fn is_leader(&self) -> bool {
        self.leader_id() == Some(self.inner.node_id)
    }

    /// A broker's heartbeat: recorded on the leader, forwarded from any
    /// other voter.
    pub async fn heartbeat(&self, hb: liveness::Heartbeat) -> Result<liveness::HeartbeatReply> {
        match self.heartbeat_here(&hb) {
            liveness::HeartbeatReply::NotLeader {
                leader: Some(leader),
            } => {
                if !self.inner.voters.contains_key(&leader) {
                    return Ok(liveness::HeartbeatReply::NotLeader { leader: None });
                }
                let mut client = self.controller_client(leader)?;
                let payload =
                    rpc::encode("heartbeat", &hb).map_err(|e| Error::Unavailable(e.to_string()))?;
                let reply = tokio::time::timeout(
                    Duration::from_secs(2),
                    client.broker_heartbeat(rpc::pb::Envelope { payload }),
                )
                .await
                .map_err(|_| {
                    Error::Unavailable(format!("controller {leader} did not answer a heartbeat"))
                })?
                .map_err(|s| {
                    Error::Unavailable(format!("heartbeat to controller {leader}: {}", s.message()))
                })?;
                rpc::decode("heartbeat reply", &reply.into_inner().payload)
                    .map_err(|e| Error::Unavailable(e.to_string()))
            }
            other => Ok(other),
        }
    }

    /// The quorum as its leader sees it (DescribeQuorum): asked of the
    /// leader from any voter, so that a client may ask any broker.
    pub async fn quorum_status(&self) -> Result<QuorumStatus> {
        if let Some(st) = self.quorum_status_here() {
            return Ok(st);
        }
        let leader = self
            .leader_id()
            .ok_or_else(|| Error::Unavailable("the controller quorum has no leader".into()))?;
        let mut client = self.controller_client(leader)?;
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            client.quorum_status(rpc::pb::Envelope { payload: vec![] }),
        )
        .await
        .map_err(|_| Error::Unavailable(format!("controller {leader} did not answer")))?
        .map_err(|s| Error::Unavailable(format!("controller {leader}: {}", s.message())))?;
        let st: Option<QuorumStatus> = rpc::decode("quorum status", &reply.into_inner().payload)
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        st.ok_or_else(|| Error::Unavailable(format!("controller {leader} no longer leads")))
    }

    /// A gRPC client for voter `id` (the active controller, to the callers),
    /// over the channels the Raft transport shares.
    pub(crate) fn controller_client(&self, id: u64) -> Result<rpc::Client> {
        let node = self
            .inner
            .voters
            .get(&id)
            .ok_or_else(|| Error::Unavailable(format!("no address for controller {id}")))?;
        self.inner
            .channels
            .client(&node.addr)
            .map_err(|e| Error::Unavailable(e.to_string()))
    }

    /// The quorum status if this node leads, from its Raft metrics.
    pub fn quorum_status_here(&self) -> Option<QuorumStatus> {
        let voter = self.voter()?;
        let m = voter.raft.metrics().borrow().clone();
        let matched = m.replication.as_ref()?;
        let now = crate::now_ms();
        let acked = now - m.millis_since_quorum_ack.unwrap_or(0) as i64;
        let own_leo = m.last_log_index.map_or(0, |i| i as i64 + 1);
        let mut voters = vec![VoterStatus {
            id: m.id,
            log_end_offset: own_leo,
            caught_up_ms: now,
        }];
        for voter in m.membership_config.membership().voter_ids() {
            if voter == m.id {
                continue;
            }
            let leo = matched
                .get(&voter)
                .copied()
                .flatten()
                .map_or(0, |l| l.index as i64 + 1);
            voters.push(VoterStatus {
                id: voter,
                log_end_offset: leo,
                caught_up_ms: if leo >= own_leo { acked } else { -1 },
            });
        }
        let image = self.image();
        let now_instant = std::time::Instant::now();
        let observers = voter
            .liveness
            .seen()
            .into_iter()
            .filter(|(id, ..)| {
                !self.inner.voters.contains_key(&(*id as u64)) && image.brokers.contains_key(id)
            })
            .map(|(id, applied, at)| VoterStatus {
                id: id as u64,
                log_end_offset: applied as i64 + 1,
                caught_up_ms: now - now_instant.saturating_duration_since(at).as_millis() as i64,
            })
            .collect();
        Some(QuorumStatus {
            leader: m.id,
            term: m.current_term,
            high_watermark: m.last_applied.map_or(0, |l| l.index as i64 + 1),
            voters,
            observers,
            addresses: m
                .membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect(),
        })
    }

    /// Records a heartbeat if this node leads; never forwards.
    pub fn heartbeat_here(&self, hb: &liveness::Heartbeat) -> liveness::HeartbeatReply {
        if !self.is_leader() {
            return liveness::HeartbeatReply::NotLeader {
                leader: self.leader_id(),
            };
        }
        let Some(voter) = self.voter() else {
            return liveness::HeartbeatReply::NotLeader { leader: None };
        };
        let image = self.image();
        match image.brokers.get(&hb.broker_id) {
            Some(b) if b.epoch == hb.broker_epoch => {
                voter.liveness.record(hb, std::time::Instant::now());
                liveness::HeartbeatReply::Ok { fenced: b.fenced }
            }
            _ => liveness::HeartbeatReply::StaleEpoch,
        }
    }

    /// Runs the leader's fencing loop: brokers silent for longer than
    /// `session`, or whose session ended and did not open again within
    /// `grace`, are fenced, and unfenced when they are back and caught up
    /// (see `liveness`). A no-op on an observer, which never leads.
    pub fn start_fencing(&self, session: Duration, grace: Duration) {
        if !self.is_voter() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let Some(voter) = this.voter() else { return };
            let mut was_leader = false;
            let mut tick = tokio::time::interval(FENCING_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if voter.raft.metrics().borrow().running_state.is_err() {
                    return;
                }
                let leader = this.is_leader();
                if leader && !was_leader {
                    voter
                        .liveness
                        .reset(&this.image(), std::time::Instant::now());
                }
                was_leader = leader;
                if !leader {
                    continue;
                }
                let now = std::time::Instant::now();
                for decision in voter.liveness.decide(&this.image(), session, grace, now) {
                    let cmd = decision.command.clone();
                    // Logged (and counted) once committed: a deposed leader
                    // that wakes from a pause decides on stale silence, and
                    // its decision is dropped.
                    match this.propose_as_leader(cmd).await {
                        Ok(Some(MetadataResponse::Ok)) => log_liveness(&decision),
                        Ok(Some(other)) => tracing::info!(
                            cmd = ?decision.command,
                            answer = ?other,
                            "liveness decision refused"
                        ),
                        Ok(None) => tracing::info!(
                            cmd = ?decision.command,
                            "no longer the active controller: the liveness decision is dropped"
                        ),
                        Err(e) => tracing::warn!(error = %e, "cannot record broker liveness"),
                    }
                }
            }
        });
    }

    /// `auto.leader.rebalance.enable`: every `interval`, the active
    /// controller moves leadership back to preferred leaders (first
    /// replicas) that are alive and in the ISR, so that a broker that came
    /// back takes its share of leaders again. A no-op on an observer.
    pub fn start_leader_rebalance(&self, interval: Duration) {
        if !self.is_voter() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let Some(voter) = this.voter() else { return };
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                if voter.raft.metrics().borrow().running_state.is_err() {
                    return;
                }
                if !this.is_leader() {
                    continue;
                }
                let image = this.image();
                let alive = image.alive();
                let imbalanced = image.topics.values().any(|t| {
                    t.partitions.iter().any(|p| {
                        p.replicas.first().is_some_and(|&pref| {
                            p.leader != pref && p.isr.contains(&pref) && alive.contains(&pref)
                        })
                    })
                });
                if imbalanced {
                    tracing::info!("moving leadership back to preferred leaders");
                    let cmd = MetadataCommand::ElectPreferredLeaders { partitions: vec![] };
                    if let Err(e) = this.propose_as_leader(cmd).await {
                        tracing::warn!(error = %e, "preferred leader election failed");
                    }
                }
            }
        });
    }

    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// Whether the quorum has a membership: bootstrapped here, or joined.
    pub async fn is_initialized(&self) -> Result<bool> {
        self.raft_or_err()?
            .is_initialized()
            .await
            .map_err(from_fatal)
    }

    fn raft_or_err(&self) -> Result<&Raft<TypeConfig>> {
        self.raft().ok_or_else(|| {
            Error::Config(format!(
                "node {} is not a controller voter",
                self.inner.node_id
            ))
        })
    }

    /// Gives a pristine store the configured voter set as its first
    /// membership; a no-op on an initialized store. Every voter may do this
    /// with the same voter set (openraft documents it as safe: the entries
    /// are identical, log id 0), so `runnel format` runs it on each node
    /// without the peers being up. Different voter sets would split the
    /// cluster, which is why the set comes from `controller.quorum.voters`
    /// and nowhere else.
    pub async fn initialize(&self) -> Result<()> {
        if self.is_initialized().await? {
            return Ok(());
        }
        match self
            .raft_or_err()?
            .initialize(self.inner.voters.clone())
            .await
        {
            Ok(()) => {
                tracing::info!(voters = ?self.inner.voters.keys(), "initialized controller quorum");
                Ok(())
            }
            // Another call (or a vote from a peer) got there first.
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                tracing::debug!(%e, "controller quorum already initialized");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotInMembers(e))) => {
                Err(Error::Config(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(from_fatal(f)),
        }
    }

    /// Initializes the quorum (see `initialize`) and, for a one-voter
    /// quorum, also writes the cluster id (see `ensure_cluster_id`), so that
    /// `propose` works right after. With several voters the peers are
    /// usually not running yet (this is what `runnel format` calls), so the
    /// cluster id is left to `ensure_cluster_id` when the nodes serve.
    pub async fn bootstrap(&self, cluster_id: &str) -> Result<()> {
        if cluster_id.is_empty() {
            return Err(Error::Config("the cluster id is empty".into()));
        }
        self.initialize().await?;
        if self.inner.voters.len() > 1 {
            return Ok(());
        }
        self.ensure_cluster_id(cluster_id).await
    }

    /// Writes the cluster id if the image has none, and checks that the
    /// image's cluster id is `cluster_id`; fails with `ClusterIdMismatch`
    /// otherwise. Works on any voter (the proposal is forwarded to the
    /// leader), and returns once the id is applied on this node. Fails with
    /// `Unavailable` when no quorum answers within the proposal timeout.
    pub async fn ensure_cluster_id(&self, cluster_id: &str) -> Result<()> {
        if cluster_id.is_empty() {
            return Err(Error::Config("the cluster id is empty".into()));
        }
        // Always proposed: applying it is a no-op when the id is set, and
        // reading the image before it would race with entries of the previous
        // term that the new leader has not applied yet.
        self.propose(MetadataCommand::SetClusterId {
            cluster_id: cluster_id.to_string(),
        })
        .await?;
        let existing = self.image().cluster_id.clone();
        if existing.is_empty() {
            // Committed, but not applied here yet (an observer whose stream
            // is slow or moving to another voter): ask again.
            return Err(Error::Unavailable(
                "the cluster id is committed but not yet applied on this node".into(),
            ));
        }
        if existing != cluster_id {
            return Err(Error::ClusterIdMismatch {
                existing,
                requested: cluster_id.to_string(),
            });
        }
        Ok(())
    }

    /// Replicates `cmd` and returns what applying it answered (which may be
    /// `MetadataResponse::Rejected`). On a follower the command is
    /// forwarded to the leader, and this returns once the entry is applied
    /// on this node as well, so that the caller's next read of `image()`
    /// sees it. Waits out an election in progress and follows a leader
    /// change, up to the proposal timeout; then fails with `Unavailable`.
    ///
    /// A forward that may have reached the leader is not retried (the
    /// entry could commit twice); only "not the leader" answers and
    /// connections that could not be made are.
    pub async fn propose(&self, cmd: MetadataCommand) -> Result<MetadataResponse> {
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        let mut why: String;
        loop {
            match self.write_here(cmd.clone(), deadline).await? {
                Written::Applied { response, .. } => return Ok(response),
                Written::NotLeader { leader: None } => {
                    why = "no controller leader is elected".into();
                }
                Written::NotLeader {
                    leader: Some(leader),
                } => match self.forward(leader, &cmd, deadline).await {
                    Ok(Forwarded::Applied { index, response }) => {
                        self.wait_applied_here(index).await;
                        return Ok(response);
                    }
                    Ok(Forwarded::NotLeader { .. }) => {
                        why = format!("controller {leader} is no longer the leader");
                    }
                    Ok(Forwarded::Unavailable(msg)) => {
                        return Err(Error::Unavailable(format!(
                            "the leader, controller {leader}: {msg}"
                        )))
                    }
                    Err(ForwardFailure::Unreachable(msg)) => why = msg,
                    Err(ForwardFailure::Unknown(msg)) => {
                        return Err(Error::Unavailable(format!(
                            "{msg}; the proposal may still commit"
                        )))
                    }
                },
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(Error::Unavailable(format!(
                    "no controller leader took the proposal within {PROPOSE_TIMEOUT:?} \
                     (last: {why}); is a quorum of the {} voters up?",
                    self.inner.voters.len()
                )));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Serves a proposal another voter forwarded: writes it if this node
    /// leads, and otherwise says who does (without forwarding again, so
    /// that a proposal never travels in circles during a leader change).
    pub async fn propose_forwarded(&self, cmd: MetadataCommand) -> Forwarded {
        match self.write_here(cmd, Instant::now() + PROPOSE_TIMEOUT).await {
            Ok(Written::Applied { index, response }) => Forwarded::Applied { index, response },
            Ok(Written::NotLeader { leader }) => Forwarded::NotLeader { leader },
            // The entry may have been appended: the outcome is unknown, so
            // the forwarder must not retry elsewhere.
            Err(e) => Forwarded::Unavailable(e.to_string()),
        }
    }

    /// One attempt to write `cmd` through this node's Raft.
    /// An observer never writes itself: it names the leader to forward to.
    /// Proposes a decision this node made as the active controller (fence
    /// a silent broker, move leaders): written to its own Raft log only,
    /// never forwarded. None if it is no longer the leader, and so the
    /// decision is dropped: a leader cut off from the quorum still believes
    /// it leads and decides on what it no longer sees (every broker is
    /// silent to it), and once it is back, forwarding those decisions to
    /// the new leader would fence brokers that were healthy all along. An
    /// entry it wrote while cut off never commits: the new leader's log
    /// overwrites it.
    pub async fn propose_as_leader(
        &self,
        cmd: MetadataCommand,
    ) -> Result<Option<MetadataResponse>> {
        match self
            .write_here(cmd, Instant::now() + PROPOSE_TIMEOUT)
            .await?
        {
            Written::Applied { response, .. } => Ok(Some(response)),
            Written::NotLeader { .. } => Ok(None),
        }
    }

    async fn write_here(&self, cmd: MetadataCommand, deadline: Instant) -> Result<Written> {
        let Some(voter) = self.voter() else {
            return Ok(Written::NotLeader {
                leader: self.leader_id(),
            });
        };
        let write = voter.raft.client_write(cmd);
        let res = match tokio::time::timeout_at(deadline, write).await {
            Ok(res) => res,
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "proposal not committed within {PROPOSE_TIMEOUT:?} (a quorum of the {} \
                     voters may be unreachable); it may still commit later",
                    self.inner.voters.len()
                )))
            }
        };
        match res {
            Ok(resp) => Ok(Written::Applied {
                index: resp.log_id.index,
                response: resp.data,
            }),
            // This node itself as the leader: just elected, not yet
            // taken over; the caller retries shortly.
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
                Ok(Written::NotLeader {
                    leader: fwd.leader_id.filter(|id| *id != self.inner.node_id),
                })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                // Only membership changes report this; a command never does.
                Err(Error::Unavailable(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(from_fatal(f)),
        }
    }

    /// Sends `cmd` to `leader` over gRPC.
    async fn forward(
        &self,
        leader: u64,
        cmd: &MetadataCommand,
        deadline: Instant,
    ) -> Result<Forwarded, ForwardFailure> {
        let Some(node) = self.inner.voters.get(&leader) else {
            return Err(ForwardFailure::Unreachable(format!(
                "the leader, controller {leader}, is not in controller.quorum.voters"
            )));
        };
        let addr = &node.addr;
        let mut client = self
            .inner
            .channels
            .client(addr)
            .map_err(|e| ForwardFailure::Unreachable(e.to_string()))?;
        let command = rpc::encode("metadata command", cmd)
            .map_err(|e| ForwardFailure::Unreachable(e.to_string()))?;
        let call = client.propose(rpc::pb::ProposeRequest { command });
        match tokio::time::timeout_at(deadline, call).await {
            Err(_) => Err(ForwardFailure::Unknown(format!(
                "controller {leader} at {addr} did not answer a forwarded proposal within \
                 {PROPOSE_TIMEOUT:?}"
            ))),
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                Err(ForwardFailure::Unreachable(format!(
                    "cannot reach controller {leader} at {addr}: {}",
                    status.message()
                )))
            }
            Ok(Err(status)) => Err(ForwardFailure::Unknown(format!(
                "forwarding to controller {leader} at {addr} failed: {:?}: {}",
                status.code(),
                status.message()
            ))),
            Ok(Ok(reply)) => rpc::decode("forwarded proposal reply", &reply.into_inner().response)
                .map_err(|e| {
                    ForwardFailure::Unknown(format!("controller {leader} at {addr}: {e}"))
                }),
        }
    }

    /// Waits (bounded) until the entry at `index` is applied to this node's
    /// image. It is committed already, so only a slow apply delays it.
    async fn wait_applied_here(&self, index: u64) {
        let mut image = self.inner.image.clone();
        let applied = tokio::time::timeout(
            LOCAL_APPLY_WAIT,
            image.wait_for(|img| img.last_applied >= index),
        )
        .await;
        if !matches!(applied, Ok(Ok(_))) {
            tracing::warn!(
                index,
                "committed proposal not applied locally within {LOCAL_APPLY_WAIT:?}"
            );
        }
    }

    /// The latest applied image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.inner.image.borrow().clone()
    }

    /// Follows the image: the receiver is notified after every apply batch
    /// that changed it, and after a snapshot is installed.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.inner.image.clone()
    }

    /// The current leader as this node knows it (an observer: as the voter
    /// it streams from last said).
    pub fn leader_id(&self) -> Option<u64> {
        match &self.inner.role {
            Role::Voter(v) => v.raft.metrics().borrow().current_leader,
            Role::Observer(o) => *o.leader.borrow(),
        }
    }

    /// The Raft node, for metrics (term, last log index, per-voter matched
    /// index) and for the transport to deliver RPCs. None on an observer,
    /// which has no Raft.
    pub fn raft(&self) -> Option<&Raft<TypeConfig>> {
        self.voter().map(|v| &v.raft)
    }

    /// Stops Raft and waits (bounded) until RocksDB is closed, so the same
    /// directory can be opened again; an observer stops following the
    /// stream. Calling it twice is harmless.
    pub async fn shutdown(&self) -> Result<()> {
        let voter = match &self.inner.role {
            Role::Voter(v) => v,
            Role::Observer(o) => {
                let _ = o.stop.send(true);
                tracing::info!(
                    node_id = self.inner.node_id,
                    "stopped observing the controller quorum"
                );
                return Ok(());
            }
        };
        if let Err(e) = voter.raft.shutdown().await {
            tracing::error!(%e, "controller Raft core ended abnormally");
        }
        // openraft's state machine task ends on its own after the core;
        // wait for it so that the directory can be opened again.
        let mut closed = voter.closed.clone();
        let wait_closed = async { while closed.changed().await.is_ok() {} };
        if tokio::time::timeout(CLOSE_WAIT, wait_closed).await.is_err() {
            tracing::warn!("controller store still open {CLOSE_WAIT:?} after shutdown");
        }
        tracing::info!(node_id = self.inner.node_id, "controller stopped");
        Ok(())
    }
}

/// The log line (and, for a fence, the metric) of a committed liveness
/// decision.
fn log_liveness(decision: &liveness::Decision) {
    match &decision.command {
        MetadataCommand::FenceBroker {
            id,
            epoch,
            cause: Some(cause),
        } => {
            let (why, label) = match cause {
                liveness::FenceCause::SessionLost => (
                    "it has held no session with the active controller for broker.session.grace.ms",
                    "session_lost",
                ),
                liveness::FenceCause::Silent => {
                    ("no heartbeat within broker.session.timeout.ms", "silent")
                }
                liveness::FenceCause::Shutdown => ("its controlled shutdown", "shutdown"),
            };
            metrics::counter!("runnel_broker_fencings_total", "cause" => label).increment(1);
            tracing::info!(broker = id, broker_epoch = epoch, "broker fenced: {why}")
        }
        MetadataCommand::UnfenceBroker { id, epoch } => tracing::info!(
            broker = id,
            broker_epoch = epoch,
            "broker unfenced: heartbeating and caught up"
        ),
        MetadataCommand::AdmitCoordinator { id, epoch } => tracing::info!(
            broker = id,
            broker_epoch = epoch,
            "broker coordinates consumer groups again: in the ISR of all its partitions"
        ),
        other => tracing::info!(cmd = ?other, "broker liveness changed"),
    }
}

/// Keeps the Raft gauges (`runnel_controller_active`, `runnel_raft_term`,
/// `runnel_raft_commit_index`, `runnel_metadata_apply_lag_records`) at what
/// openraft reports, and logs each change of leader (the active
/// controller) this voter sees.
fn publish_raft_metrics(
    mut m: watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>,
    me: u64,
    voters: usize,
) {
    tokio::spawn(async move {
        let mut leader: Option<u64> = None;
        loop {
            {
                let m = m.borrow_and_update();
                let applied = m.last_applied.map_or(0, |l| l.index);
                let last = m.last_log_index.unwrap_or(0);
                // The leader knows the commit index: what a majority of
                // the voters has matched. A follower applies what it learns
                // is committed at once, so its applied index stands in.
                let commit = match &m.replication {
                    Some(r) => {
                        let mut matched: Vec<u64> = r
                            .iter()
                            .filter(|(id, _)| **id != me)
                            .map(|(_, l)| l.map_or(0, |l| l.index))
                            .collect();
                        matched.push(last);
                        matched.sort_unstable_by(|a, b| b.cmp(a));
                        matched.get(voters / 2).copied().unwrap_or(applied)
                    }
                    None => applied,
                };
                metrics::gauge!("runnel_controller_active").set(if m.current_leader == Some(me) {
                    1.0
                } else {
                    0.0
                });
                metrics::gauge!("runnel_raft_term").set(m.current_term as f64);
                metrics::gauge!("runnel_raft_commit_index").set(commit as f64);
                metrics::gauge!("runnel_metadata_apply_lag_records")
                    .set(commit.saturating_sub(applied) as f64);
                if m.current_leader != leader {
                    leader = m.current_leader;
                    if let Some(l) = leader {
                        metrics::counter!("runnel_raft_leader_changes_total").increment(1);
                        tracing::info!(
                            node_id = me,
                            leader = l,
                            term = m.current_term,
                            active = l == me,
                            "controller elected"
                        );
                    } else {
                        tracing::info!(node_id = me, term = m.current_term, "no active controller");
                    }
                }
            }
            if m.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Keeps the `runnel_metadata_applied_index` gauge at the image's index.
fn publish_applied_index(mut image: watch::Receiver<Arc<MetadataImage>>) {
    tokio::spawn(async move {
        loop {
            let index = image.borrow_and_update().last_applied;
            metrics::gauge!("runnel_metadata_applied_index").set(index as f64);
            if image.changed().await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests;
