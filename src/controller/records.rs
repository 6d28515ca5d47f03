//! Metadata commands: the payload of every controller Raft entry, and what
//! applying one answers. Commands carry everything `apply` needs (ids,
//! placements) so that applying them is deterministic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::consumer_protocol::parse_subscription;

/// A listener a broker advertises to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
    pub security_protocol: String,
}

/// Why a broker was fenced. Metadata answers differ a little by cause (see
/// `server::lookup::Listing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FenceCause {
    /// Its session with the active controller ended (the connection closed:
    /// a killed process's kernel closes its sockets) and none opened within
    /// `broker.session.grace.ms`.
    SessionLost,
    /// No heartbeat within `broker.session.timeout.ms` (a paused process, a
    /// network cut: nothing closed).
    Silent,
    /// The broker's own controlled shutdown.
    Shutdown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// Written once, by the node that bootstraps the quorum.
    SetClusterId {
        cluster_id: String,
    },
    RegisterBroker {
        id: i32,
        incarnation_id: Uuid,
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
    },
    CreateTopic {
        name: String,
        topic_id: Uuid,
        /// Replica list per partition, preferred leader first.
        assignments: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        topic_id: Uuid,
    },
    CreatePartitions {
        topic_id: Uuid,
        /// The partition count the placement was computed against.
        expected_count: usize,
        new_assignments: Vec<Vec<i32>>,
    },
    /// The active controller stopped hearing from this registration, or
    /// the broker asked for it (a controlled shutdown).
    FenceBroker {
        id: i32,
        epoch: i64,
        /// Why; `None` in records written before it was kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<FenceCause>,
    },
    /// The fenced registration heartbeats again and has caught up.
    UnfenceBroker {
        id: i32,
        epoch: i64,
    },
    /// The registration is in the ISR of every partition it replicates, so
    /// it coordinates its share of the consumer groups from now on (a
    /// broker that registered or was unfenced coordinates none before).
    AdmitCoordinator {
        id: i32,
        epoch: i64,
    },
    /// A leader's ISR change (KIP-497 AlterPartition): accepted only from
    /// the current leader in its current leader epoch, against the
    /// partition epoch it last saw, so that a stale leader's word is lost.
    AlterPartition {
        topic_id: Uuid,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// Moves leadership to the first replica in the replica list (the
    /// preferred leader) where that replica is alive and in the ISR.
    ElectPreferredLeaders {
        /// (topic id, partition); empty means every partition.
        partitions: Vec<(Uuid, i32)>,
    },
    /// Gives a leader to each of `partitions` that has none, choosing any
    /// live replica when no ISR member is alive (which then becomes the
    /// whole ISR): unclean election on demand, which may lose acknowledged
    /// records, as `kafka-leader-election.sh --election-type UNCLEAN` asks.
    ElectUncleanLeaders {
        /// (topic id, partition); empty means every partition.
        partitions: Vec<(Uuid, i32)>,
    },
    /// Hands a broker the next block of producer ids, so that ids are
    /// unique cluster-wide without a Raft round trip per producer.
    AllocateProducerIds {
        broker_id: i32,
        count: i64,
    },
    /// Committed consumer offsets of one group, as validated by its
    /// coordinator (member and generation are kept for the record; a
    /// generation of -1 with no member is a simple, `assign()`-style commit).
    CommitOffsets {
        group: String,
        generation: i32,
        member: String,
        offsets: Vec<OffsetCommit>,
        /// The broker that validated the commit as the group's coordinator,
        /// and its registration epoch: the commit is refused unless that
        /// broker still coordinates the group in the committed image, so a
        /// coordinator that lost its role (paused, fenced, restarted)
        /// cannot commit. -1: not checked (entries written before this).
        #[serde(default = "unchecked")]
        coordinator: i32,
        #[serde(default)]
        coordinator_epoch: i64,
        /// The coordinator's wall clock (ms since the Unix epoch) at the
        /// commit, for offset retention. 0: not known (older entries).
        #[serde(default)]
        commit_time_ms: i64,
    },
    /// Forgets a group's committed offsets (DeleteGroups).
    DeleteGroup {
        group: String,
    },
    /// Forgets some of a group's committed offsets (OffsetDelete).
    DeleteOffsets {
        group: String,
        partitions: Vec<(String, i32)>,
    },
    /// A group's generation as its coordinator completed it (SyncGroup
    /// made it Stable), or the group became Empty: what a new coordinator
    /// loads to carry on with the same generation and members. Checked
    /// against `coordinator` and `coordinator_epoch` as `CommitOffsets` is,
    /// and refused if older than the generation stored.
    StoreGroup {
        group: String,
        coordinator: i32,
        coordinator_epoch: i64,
        record: StoredGroup,
    },
    /// Offset retention (`offsets.retention.minutes`, KIP-211): in each of
    /// `groups` that `coordinator` coordinates, the offsets that have
    /// expired as of the proposer's clock `now_ms` go, and a group left
    /// with no offsets and no members goes too. `apply` decides with these
    /// values, never with its own clock, so that every replica agrees.
    ExpireOffsets {
        groups: Vec<String>,
        coordinator: i32,
        coordinator_epoch: i64,
        now_ms: i64,
        retention_ms: i64,
    },
    /// A config change (AlterConfigs, IncrementalAlterConfigs): a topic's
    /// overrides, one broker's dynamic configs, or the cluster-wide broker
    /// default. Every entry is validated again at apply; one bad entry
    /// refuses the whole command, so nothing of it changes.
    AlterConfigs {
        resource: ConfigResource,
        /// AlterConfigs (the legacy API): `set` becomes the whole set of
        /// overrides. Otherwise only the keys in `set` and `delete` change.
        replace: bool,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    /// Several commands in one entry, applied in order as if each were an
    /// entry of its own at this entry's index, each with its own answer
    /// (`MetadataResponse::Batch`): how a broker group-commits offset
    /// commits and its leaders' ISR changes (`controller::batcher`, as
    /// Kafka's AlterPartition request carries many partitions). Only
    /// `CommitOffsets` and `AlterPartition` may be in a batch; anything
    /// else in one is refused.
    Batch(Vec<MetadataCommand>),
}

/// What a config change applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigResource {
    Topic(Uuid),
    Broker(i32),
    BrokerDefault,
}

/// A consumer group's membership at the end of a rebalance (or once it
/// became Empty), as its coordinator held it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGroup {
    pub generation: i32,
    pub protocol_type: String,
    /// The selected protocol (assignor); empty while the group is Empty.
    pub protocol: String,
    /// Member id of the leader; empty while the group is Empty.
    pub leader: String,
    pub members: Vec<StoredMember>,
    /// The proposer's wall clock (ms since the Unix epoch) when it wrote the
    /// record. With no members this is when the group became Empty, which
    /// offset retention counts from; `apply` never reads a clock itself.
    pub written_at_ms: i64,
}

impl StoredGroup {
    /// The topics the members subscribe to, from the consumer protocol's
    /// subscription metadata; None when that is not known (not the
    /// consumer protocol, no members, or metadata that does not parse).
    pub fn subscribed_topics(&self) -> Option<std::collections::BTreeSet<String>> {
        if self.protocol_type != "consumer" || self.members.is_empty() {
            return None;
        }
        let mut out = std::collections::BTreeSet::new();
        for m in &self.members {
            let (_, md) = m.protocols.iter().find(|(n, _)| *n == self.protocol)?;
            out.extend(parse_subscription(md)?);
        }
        Some(out)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMember {
    pub member_id: String,
    /// KIP-345 `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// (protocol name, subscription metadata) in the member's order.
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
}

fn unchecked() -> i32 {
    -1
}

/// One partition's committed position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// -1 when the client did not say.
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataResponse {
    Ok,
    BrokerRegistered {
        broker_epoch: i64,
    },
    TopicCreated {
        topic_id: Uuid,
    },
    /// Producer ids `first..first + count` now belong to the asking broker.
    ProducerIds {
        first: i64,
        count: i64,
    },
    Rejected(MetadataError),
    /// The answers to a `MetadataCommand::Batch`, in its order.
    Batch(Vec<MetadataResponse>),
}

/// Why the state machine refused a command. The server maps these to Kafka
/// error codes; the message is for the client's error_message field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    StaleBrokerEpoch(String),
    #[error("group {0} does not exist")]
    UnknownGroup(String),
    /// NOT_COORDINATOR: the committing broker does not coordinate the group.
    #[error("{0}")]
    NotCoordinator(String),
    /// FENCED_LEADER_EPOCH: the proposer no longer leads in that epoch.
    #[error("{0}")]
    FencedLeaderEpoch(String),
    /// INVALID_UPDATE_VERSION: the partition changed since the proposer looked.
    #[error("{0}")]
    InvalidUpdateVersion(String),
    /// INELIGIBLE_REPLICA: an ISR member that is fenced or not a replica.
    #[error("{0}")]
    IneligibleReplica(String),
    /// A command that cannot be batched was in a `Batch`.
    #[error("{0}")]
    NotBatchable(String),
}
