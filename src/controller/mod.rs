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
//! * `network`: the Raft transport between voters.
//! * `placement`: replica placement for new topics and partitions.

pub mod image;
pub mod network;
pub mod placement;
pub mod records;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;
// The default `SnapshotData` of `declare_raft_types!` names `Cursor`.
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::metrics::WaitError;
use openraft::{BasicNode, Config, Raft, SnapshotPolicy, StorageError};
use tokio::sync::watch;
use tokio::time::Instant;

use self::image::MetadataImage;
use self::network::NetworkFactory;
use self::records::{MetadataCommand, MetadataResponse};

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
/// How long `bootstrap` waits for the first leader.
const LEADER_WAIT: Duration = Duration::from_secs(10);
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

fn from_wait(e: WaitError, what: &str) -> Error {
    match e {
        WaitError::Timeout(after, _) => Error::Unavailable(format!(
            "no {what} after {after:?}: is a quorum of voters up?"
        )),
        WaitError::ShuttingDown => Error::Shutdown,
    }
}

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub node_id: u64,
    /// RocksDB lives here.
    pub dir: PathBuf,
    /// Voter id -> host:port of its CONTROLLER listener. Must contain
    /// `node_id`.
    pub voters: BTreeMap<u64, String>,
}

/// A running controller quorum member. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    voters: BTreeMap<u64, BasicNode>,
    raft: Raft<TypeConfig>,
    image: watch::Receiver<Arc<MetadataImage>>,
    /// Reports closed once openraft's tasks have dropped the stores.
    closed: watch::Receiver<()>,
}

fn raft_config() -> Result<Config> {
    Config {
        cluster_name: "runnel-controller".into(),
        heartbeat_interval: 150,
        election_timeout_min: 600,
        election_timeout_max: 1200,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
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
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(raft_config()?),
            NetworkFactory,
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
        Ok(Controller {
            inner: Arc::new(Inner {
                node_id: cfg.node_id,
                voters,
                raft,
                image,
                closed,
            }),
        })
    }

    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// Whether the quorum has a membership: bootstrapped here, or joined.
    pub async fn is_initialized(&self) -> Result<bool> {
        self.inner.raft.is_initialized().await.map_err(from_fatal)
    }

    /// Initializes the quorum with the configured voters and writes the
    /// cluster id. Idempotent: on an initialized store it only checks that
    /// the cluster id is `cluster_id` (and writes it if a crash came between
    /// initializing and writing it). Returns once this node leads and the
    /// cluster id is applied, so that `propose` works right after.
    ///
    /// Fails with `ClusterIdMismatch` if the store has another cluster id,
    /// and `NotLeader` if another voter won the election (that voter's own
    /// bootstrap writes the id).
    pub async fn bootstrap(&self, cluster_id: &str) -> Result<()> {
        if cluster_id.is_empty() {
            return Err(Error::Config("the cluster id is empty".into()));
        }
        if !self.is_initialized().await? {
            match self.inner.raft.initialize(self.inner.voters.clone()).await {
                Ok(()) => {
                    tracing::info!(cluster_id, voters = ?self.inner.voters.keys(), "initialized controller quorum")
                }
                // Another call (or a vote from a peer) got there first.
                Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                    tracing::debug!(%e, "controller quorum already initialized");
                }
                Err(RaftError::APIError(InitializeError::NotInMembers(e))) => {
                    return Err(Error::Config(e.to_string()));
                }
                Err(RaftError::Fatal(f)) => return Err(from_fatal(f)),
            }
        }
        let leader = self.wait_for_leader(Instant::now() + LEADER_WAIT).await?;
        if leader != self.inner.node_id {
            return Err(Error::NotLeader {
                leader: Some(leader),
            });
        }
        // Always proposed: applying it is a no-op when the id is set, and
        // reading the image before it would race with entries of the previous
        // term that the new leader has not applied yet.
        self.propose(MetadataCommand::SetClusterId {
            cluster_id: cluster_id.to_string(),
        })
        .await?;
        let existing = self.image().cluster_id.clone();
        if existing != cluster_id {
            return Err(Error::ClusterIdMismatch {
                existing,
                requested: cluster_id.to_string(),
            });
        }
        Ok(())
    }

    /// Replicates `cmd` and returns what applying it answered (which may be
    /// `MetadataResponse::Rejected`). Waits out an election in progress, up
    /// to the proposal timeout.
    pub async fn propose(&self, cmd: MetadataCommand) -> Result<MetadataResponse> {
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        loop {
            let write = self.inner.raft.client_write(cmd.clone());
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
                Ok(resp) => return Ok(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
                    match fwd.leader_id {
                        Some(id) if id != self.inner.node_id => {
                            return Err(Error::NotLeader { leader: Some(id) })
                        }
                        // An election is under way, or this node was just
                        // elected and has not taken over yet.
                        _ => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            let leader = self.wait_for_leader(deadline).await?;
                            if leader != self.inner.node_id {
                                return Err(Error::NotLeader {
                                    leader: Some(leader),
                                });
                            }
                        }
                    }
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                    // Only membership changes report this; a command never does.
                    return Err(Error::Unavailable(e.to_string()));
                }
                Err(RaftError::Fatal(f)) => return Err(from_fatal(f)),
            }
        }
    }

    async fn wait_for_leader(&self, deadline: Instant) -> Result<u64> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let metrics = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "controller leader elected")
            .await
            .map_err(|e| from_wait(e, "controller leader elected"))?;
        metrics
            .current_leader
            .ok_or_else(|| Error::Unavailable("no controller leader elected".into()))
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

    /// The current leader as this node knows it.
    pub fn leader_id(&self) -> Option<u64> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// The Raft node, for metrics (term, last log index, per-voter matched
    /// index) and for the transport to deliver RPCs.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// Stops Raft and waits (bounded) until RocksDB is closed, so the same
    /// directory can be opened again. Calling it twice is harmless.
    pub async fn shutdown(&self) -> Result<()> {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::error!(%e, "controller Raft core ended abnormally");
        }
        // openraft's state machine task ends on its own after the core;
        // wait for it so that the directory can be opened again.
        let mut closed = self.inner.closed.clone();
        let wait_closed = async { while closed.changed().await.is_ok() {} };
        if tokio::time::timeout(CLOSE_WAIT, wait_closed).await.is_err() {
            tracing::warn!("controller store still open {CLOSE_WAIT:?} after shutdown");
        }
        tracing::info!(node_id = self.inner.node_id, "controller stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
