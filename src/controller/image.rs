//! The metadata image: everything the cluster knows about itself, rebuilt by
//! applying committed metadata commands in log order.
//!
//! `apply` is a pure function of (image, command): the Raft state machine and
//! every replay of the log must reach the same image. Validation that depends
//! on the current state (a name already taken, a partition count that shrinks)
//! happens here, so that two racing proposals cannot both succeed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::{
    ConfigResource, Endpoint, FenceCause, MetadataCommand, MetadataError, MetadataResponse,
    OffsetCommit, StoredGroup,
};
use crate::config::dynamic::{validate_broker_entry, DynamicConfigs, Resolver};
use crate::config::topic::validate_entry;

/// A registered broker. `epoch` is the Raft log index of its registration,
/// so that a restarted broker (new incarnation) always gets a larger epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: i32,
    pub incarnation_id: Uuid,
    pub epoch: i64,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
    /// Raft index of the record that last fenced it (0: never).
    #[serde(default)]
    pub fenced_at: u64,
    /// Whether it coordinates consumer groups: not from its registration
    /// or its fencing until the controller admits it, once it has caught
    /// up (`AdmitCoordinator`), so that a returning broker takes its
    /// groups back only then, in one step. Images written before this
    /// field existed had every unfenced broker coordinating.
    #[serde(default = "coordinating_by_default")]
    pub coordinator: bool,
    /// Why the fence that took it down from unfenced came (`None`: unknown,
    /// or never fenced in this registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_cause: Option<FenceCause>,
}

fn coordinating_by_default() -> bool {
    true
}

/// One partition's replica set and leadership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    pub replicas: Vec<i32>,
    /// -1 when no replica can lead.
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    /// Bumped on every change to this partition (KIP-497 partition epoch).
    pub partition_epoch: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionImage>,
}

/// Each map sits behind an `Arc`, and so does each topic and group in it,
/// so that applying a command copies only what the command changes: the
/// state machine publishes a new image after every batch of entries while
/// brokers still hold the one before, and an offset commit must not cost a
/// copy of every partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: String,
    /// Raft log index of the last command applied to this image.
    pub last_applied: u64,
    pub brokers: Arc<BTreeMap<i32, BrokerRegistration>>,
    pub topics: Arc<BTreeMap<String, Arc<TopicImage>>>,
    pub topic_ids: Arc<HashMap<Uuid, String>>,
    /// The first producer id not yet handed out.
    #[serde(default)]
    pub next_producer_id: i64,
    /// Committed consumer-group offsets by group id.
    #[serde(default)]
    pub groups: Arc<BTreeMap<String, Arc<GroupOffsets>>>,
    /// Dynamic broker configs (per broker and the cluster default).
    #[serde(default)]
    pub configs: Arc<DynamicConfigs>,
}

/// A group's committed offsets: topic, then partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsets {
    /// The generation of the last commit (-1 for simple commits).
    pub generation: i32,
    pub offsets: BTreeMap<String, BTreeMap<i32, CommittedOffset>>,
    /// The last generation (and members) the coordinator stored, so that a
    /// new coordinator carries on with it. None for groups only committed to.
    #[serde(default)]
    pub stored: Option<StoredGroup>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// Log index of the commit.
    pub committed_at: u64,
    /// The coordinator's wall clock at the commit (ms since the Unix
    /// epoch); 0 when not known (commits written before it was recorded),
    /// which retention treats as never expiring on its own.
    #[serde(default)]
    pub commit_time_ms: i64,
}

impl GroupOffsets {
    pub fn get(&self, topic: &str, partition: i32) -> Option<&CommittedOffset> {
        self.offsets.get(topic).and_then(|p| p.get(&partition))
    }

    /// The offsets that have expired at `now_ms` under a retention of
    /// `retention_ms` (Kafka's KIP-211 rule):
    /// * a group with members (its last stored state) keeps the offsets of
    ///   the topics they subscribe to; those of other topics expire once
    ///   they are that old (all are kept if the subscriptions are unknown);
    /// * a group that became Empty loses all its offsets once it has been
    ///   Empty for the retention period (counted from that record's time);
    /// * a group that never had members (simple, `assign()`-style commits)
    ///   loses each offset once it is that old (unknown times never expire).
    pub fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
        let expired = |since: i64| since > 0 && now_ms.saturating_sub(since) >= retention_ms;
        let mut subscribed = None;
        let all_since = match &self.stored {
            Some(s) if !s.members.is_empty() => match s.subscribed_topics() {
                Some(topics) => {
                    subscribed = Some(topics);
                    None
                }
                None => return Vec::new(),
            },
            Some(s) => Some(s.written_at_ms),
            None => None,
        };
        let mut out = Vec::new();
        for (topic, parts) in &self.offsets {
            if subscribed.as_ref().is_some_and(|t| t.contains(topic)) {
                continue;
            }
            for (p, o) in parts {
                if expired(all_since.unwrap_or(o.commit_time_ms)) {
                    out.push((topic.clone(), *p));
                }
            }
        }
        out
    }

    /// No offsets and no members: nothing left to keep (Kafka's Dead).
    pub fn is_gone(&self) -> bool {
        self.offsets.is_empty() && self.stored.as_ref().is_none_or(|s| s.members.is_empty())
    }
}

/// Kafka's legal topic names: 1..=249 of `[a-zA-Z0-9._-]`, not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let bad = |why: &str| {
        Err(MetadataError::InvalidTopic(format!(
            "topic name {name:?} {why}"
        )))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name == "." || name == ".." {
        return bad("is not allowed");
    }
    if name.len() > 249 {
        return bad("is longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("contains characters other than ASCII alphanumerics, '.', '_' and '-'");
    }
    Ok(())
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name).map(|t| &**t)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.topic_ids
            .get(id)
            .and_then(|name| self.topics.get(name))
            .map(|t| &**t)
    }

    /// The topic `id`, to change (copied first if another image shares it).
    fn topic_by_id_mut(&mut self, id: &Uuid) -> Option<&mut TopicImage> {
        let name = self.topic_ids.get(id)?;
        Arc::make_mut(&mut self.topics)
            .get_mut(name)
            .map(Arc::make_mut)
    }

    /// Applies `change` to each topic that `needs` picks, copying only
    /// those topics (and the map, only if any is picked).
    fn update_topics(
        &mut self,
        needs: impl Fn(&TopicImage) -> bool,
        mut change: impl FnMut(&mut TopicImage),
    ) {
        let picked: Vec<String> = self
            .topics
            .values()
            .filter(|t| needs(t))
            .map(|t| t.name.clone())
            .collect();
        if picked.is_empty() {
            return;
        }
        let topics = Arc::make_mut(&mut self.topics);
        for name in picked {
            if let Some(t) = topics.get_mut(&name) {
                change(Arc::make_mut(t));
            }
        }
    }

    /// The group's offsets, to change; created empty if absent.
    fn group_entry(&mut self, group: &str) -> &mut GroupOffsets {
        Arc::make_mut(
            Arc::make_mut(&mut self.groups)
                .entry(group.to_string())
                .or_default(),
        )
    }

    /// The group's offsets, to change, if it has any.
    fn group_mut(&mut self, group: &str) -> Option<&mut GroupOffsets> {
        if !self.groups.contains_key(group) {
            return None;
        }
        Arc::make_mut(&mut self.groups)
            .get_mut(group)
            .map(Arc::make_mut)
    }

    /// Applies one committed command at Raft log index `index`.
    pub fn apply(&mut self, index: u64, cmd: &MetadataCommand) -> MetadataResponse {
        self.last_applied = index;
        match cmd {
            MetadataCommand::SetClusterId { cluster_id } => self.set_cluster_id(cluster_id),
            MetadataCommand::RegisterBroker {
                id,
                incarnation_id,
                endpoints,
                rack,
            } => self.register_broker(index, *id, *incarnation_id, endpoints, rack.as_deref()),
            MetadataCommand::CreateTopic {
                name,
                topic_id,
                assignments,
                configs,
            } => self.create_topic(name, *topic_id, assignments, configs),
            MetadataCommand::FenceBroker { id, epoch, cause } => {
                self.fence_broker(index, *id, *epoch, *cause)
            }
            MetadataCommand::UnfenceBroker { id, epoch } => self.unfence_broker(*id, *epoch),
            MetadataCommand::AdmitCoordinator { id, epoch } => {
                match self.registration_mut(*id, *epoch) {
                    Ok(b) if !b.fenced => {
                        b.coordinator = true;
                        MetadataResponse::Ok
                    }
                    Ok(_) => MetadataResponse::Rejected(MetadataError::StaleBrokerEpoch(format!(
                        "broker {id} is fenced"
                    ))),
                    Err(e) => MetadataResponse::Rejected(e),
                }
            }
            MetadataCommand::AlterPartition {
                topic_id,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => self.alter_partition(
                *topic_id,
                *partition,
                *leader,
                *leader_epoch,
                *partition_epoch,
                isr,
            ),
            MetadataCommand::ElectPreferredLeaders { partitions } => {
                self.elect_preferred_leaders(partitions)
            }
            MetadataCommand::ElectUncleanLeaders { partitions } => {
                self.elect_unclean_leaders(partitions)
            }
            MetadataCommand::AllocateProducerIds {
                broker_id: _,
                count,
            } => self.allocate_producer_ids(*count),
            MetadataCommand::DeleteTopic { topic_id } => self.delete_topic(topic_id),
            MetadataCommand::CreatePartitions {
                topic_id,
                expected_count,
                new_assignments,
            } => self.create_partitions(topic_id, *expected_count, new_assignments),
            MetadataCommand::CommitOffsets {
                group,
                generation,
                member: _,
                offsets,
                coordinator,
                coordinator_epoch,
                commit_time_ms,
            } => self.commit_offsets(
                index,
                group,
                *generation,
                offsets,
                (*coordinator, *coordinator_epoch),
                *commit_time_ms,
            ),
            MetadataCommand::DeleteGroup { group } => self.delete_group(group),
            MetadataCommand::DeleteOffsets { group, partitions } => {
                self.delete_offsets(group, partitions)
            }
            MetadataCommand::StoreGroup {
                group,
                coordinator,
                coordinator_epoch,
                record,
            } => self.store_group(group, *coordinator, *coordinator_epoch, record),
            MetadataCommand::ExpireOffsets {
                groups,
                coordinator,
                coordinator_epoch,
                now_ms,
                retention_ms,
            } => self.expire_offsets(
                groups,
                *coordinator,
                *coordinator_epoch,
                *now_ms,
                *retention_ms,
            ),
            MetadataCommand::AlterConfigs {
                resource,
                replace,
                set,
                delete,
            } => self.alter_configs(resource, *replace, set, delete),
            MetadataCommand::Batch(cmds) => MetadataResponse::Batch(
                cmds.iter()
                    .map(|c| match c {
                        MetadataCommand::CommitOffsets { .. }
                        | MetadataCommand::AlterPartition { .. } => self.apply(index, c),
                        _ => MetadataResponse::Rejected(MetadataError::NotBatchable(
                            "only offset commits and ISR changes can be applied in a batch".into(),
                        )),
                    })
                    .collect(),
            ),
        }
    }

    /// The first cluster id written stays.
    fn set_cluster_id(&mut self, cluster_id: &str) -> MetadataResponse {
        if self.cluster_id.is_empty() {
            self.cluster_id = cluster_id.to_string();
        }
        MetadataResponse::Ok
    }

    /// A broker (re)registers; its epoch is `index`.
    fn register_broker(
        &mut self,
        index: u64,
        id: i32,
        incarnation_id: Uuid,
        endpoints: &[Endpoint],
        rack: Option<&str>,
    ) -> MetadataResponse {
        let epoch = index as i64;
        // A new incarnation lost whatever the old one had in memory
        // (and maybe unflushed data): its leaderships and ISR places
        // go first, as if the old registration had been fenced.
        if self.brokers.get(&id).is_some_and(|b| !b.fenced) {
            self.move_away_from(id);
        }
        Arc::make_mut(&mut self.brokers).insert(
            id,
            BrokerRegistration {
                id,
                incarnation_id,
                epoch,
                endpoints: endpoints.to_vec(),
                rack: rack.map(str::to_string),
                fenced: false,
                fenced_at: 0,
                coordinator: false,
                fence_cause: None,
            },
        );
        self.elect_offline();
        MetadataResponse::BrokerRegistered {
            broker_epoch: epoch,
        }
    }

    fn create_topic(
        &mut self,
        name: &str,
        topic_id: Uuid,
        assignments: &[Vec<i32>],
        configs: &BTreeMap<String, String>,
    ) -> MetadataResponse {
        if let Err(e) = validate_topic_name(name) {
            return MetadataResponse::Rejected(e);
        }
        if self.topics.contains_key(name) {
            return MetadataResponse::Rejected(MetadataError::TopicAlreadyExists(name.to_string()));
        }
        if assignments.is_empty() {
            return MetadataResponse::Rejected(MetadataError::InvalidPartitions(
                "a topic needs at least one partition".into(),
            ));
        }
        let partitions = assignments.iter().map(|r| new_partition(r)).collect();
        Arc::make_mut(&mut self.topics).insert(
            name.to_string(),
            Arc::new(TopicImage {
                name: name.to_string(),
                id: topic_id,
                configs: configs.clone(),
                partitions,
            }),
        );
        Arc::make_mut(&mut self.topic_ids).insert(topic_id, name.to_string());
        MetadataResponse::TopicCreated { topic_id }
    }

    /// The registration `id` in `epoch`, or why a fence or unfence of it is
    /// refused.
    fn registration_mut(
        &mut self,
        id: i32,
        epoch: i64,
    ) -> Result<&mut BrokerRegistration, MetadataError> {
        match Arc::make_mut(&mut self.brokers).get_mut(&id) {
            Some(b) if b.epoch == epoch => Ok(b),
            _ => Err(MetadataError::StaleBrokerEpoch(format!(
                "broker {id} is not registered with epoch {epoch}"
            ))),
        }
    }

    fn fence_broker(
        &mut self,
        index: u64,
        id: i32,
        epoch: i64,
        cause: Option<FenceCause>,
    ) -> MetadataResponse {
        let b = match self.registration_mut(id, epoch) {
            Ok(b) => b,
            Err(e) => return MetadataResponse::Rejected(e),
        };
        let was_fenced = b.fenced;
        b.fenced = true;
        b.fenced_at = index;
        b.coordinator = false;
        if !was_fenced {
            b.fence_cause = cause;
            self.move_away_from(id);
        }
        MetadataResponse::Ok
    }

    fn unfence_broker(&mut self, id: i32, epoch: i64) -> MetadataResponse {
        match self.registration_mut(id, epoch) {
            Ok(b) => b.fenced = false,
            Err(e) => return MetadataResponse::Rejected(e),
        }
        self.elect_offline();
        MetadataResponse::Ok
    }

    /// `partitions` (every partition when empty) whose preferred leader is
    /// alive, in the ISR and not leading, get it as leader.
    fn elect_preferred_leaders(&mut self, partitions: &[(Uuid, i32)]) -> MetadataResponse {
        let alive = self.alive();
        let wanted = |t: &TopicImage, i: usize, p: &PartitionImage| {
            (partitions.is_empty() || partitions.contains(&(t.id, i as i32)))
                && p.replicas.first().is_some_and(|&preferred| {
                    p.leader != preferred
                        && p.isr.contains(&preferred)
                        && alive.contains(&preferred)
                })
        };
        self.update_topics(
            |t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .any(|(i, p)| wanted(t, i, p))
            },
            |t| {
                for i in 0..t.partitions.len() {
                    if wanted(t, i, &t.partitions[i]) {
                        let p = &mut t.partitions[i];
                        p.leader = p.replicas[0];
                        p.leader_epoch += 1;
                        p.partition_epoch += 1;
                    }
                }
            },
        );
        MetadataResponse::Ok
    }

    /// `partitions` (every partition when empty) without a leader get one:
    /// an ISR member if one is alive, else any live replica.
    fn elect_unclean_leaders(&mut self, partitions: &[(Uuid, i32)]) -> MetadataResponse {
        let alive = self.alive();
        let wanted = |t: &TopicImage, i: usize, p: &PartitionImage| {
            (partitions.is_empty() || partitions.contains(&(t.id, i as i32))) && p.leader < 0
        };
        self.update_topics(
            |t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .any(|(i, p)| wanted(t, i, p))
            },
            |t| {
                for i in 0..t.partitions.len() {
                    if wanted(t, i, &t.partitions[i]) {
                        let p = &mut t.partitions[i];
                        elect(p, &alive, true);
                        if p.leader >= 0 {
                            p.partition_epoch += 1;
                        }
                    }
                }
            },
        );
        MetadataResponse::Ok
    }

    fn allocate_producer_ids(&mut self, count: i64) -> MetadataResponse {
        let count = count.clamp(1, 1 << 20);
        let first = self.next_producer_id;
        self.next_producer_id = first.saturating_add(count);
        MetadataResponse::ProducerIds { first, count }
    }

    fn delete_topic(&mut self, topic_id: &Uuid) -> MetadataResponse {
        match Arc::make_mut(&mut self.topic_ids).remove(topic_id) {
            Some(name) => {
                Arc::make_mut(&mut self.topics).remove(&name);
                MetadataResponse::Ok
            }
            None => MetadataResponse::Rejected(MetadataError::UnknownTopic(topic_id.to_string())),
        }
    }

    fn alter_configs(
        &mut self,
        resource: &ConfigResource,
        replace: bool,
        set: &BTreeMap<String, String>,
        delete: &[String],
    ) -> MetadataResponse {
        let validate = match resource {
            ConfigResource::Topic(_) => validate_entry,
            _ => validate_broker_entry,
        };
        for (k, v) in set {
            if let Err(e) = validate(k, Some(v)) {
                return MetadataResponse::Rejected(MetadataError::InvalidConfig(e.0));
            }
        }
        let change = |configs: &mut BTreeMap<String, String>| {
            if replace {
                configs.clear();
            }
            configs.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            for k in delete {
                configs.remove(k);
            }
        };
        match resource {
            ConfigResource::Topic(id) => match self.topic_by_id_mut(id) {
                Some(t) => change(&mut t.configs),
                None => {
                    return MetadataResponse::Rejected(MetadataError::UnknownTopic(id.to_string()))
                }
            },
            ConfigResource::Broker(id) => {
                let brokers = &mut Arc::make_mut(&mut self.configs).brokers;
                let configs = brokers.entry(*id).or_default();
                change(configs);
                if configs.is_empty() {
                    brokers.remove(id);
                }
            }
            ConfigResource::BrokerDefault => change(&mut Arc::make_mut(&mut self.configs).default),
        }
        // Unclean election may have just been allowed.
        self.elect_offline();
        MetadataResponse::Ok
    }

    fn create_partitions(
        &mut self,
        topic_id: &Uuid,
        expected_count: usize,
        new_assignments: &[Vec<i32>],
    ) -> MetadataResponse {
        let Some(count) = self.topic_by_id(topic_id).map(|t| t.partitions.len()) else {
            return MetadataResponse::Rejected(MetadataError::UnknownTopic(topic_id.to_string()));
        };
        // The proposer computed placement from the count it saw; a
        // concurrent change makes that placement stale.
        let Some(topic) = self.topic_by_id_mut(topic_id) else {
            return MetadataResponse::Rejected(MetadataError::UnknownTopic(topic_id.to_string()));
        };
        if count != expected_count {
            return MetadataResponse::Rejected(MetadataError::InvalidPartitions(format!(
                "topic {} now has {} partitions, not {}",
                topic.name,
                topic.partitions.len(),
                expected_count
            )));
        }
        topic
            .partitions
            .extend(new_assignments.iter().map(|r| new_partition(r)));
        MetadataResponse::Ok
    }

    /// `by` is the (coordinator, coordinator epoch) that validated the
    /// commit; a coordinator of -1 is not checked.
    fn commit_offsets(
        &mut self,
        index: u64,
        group: &str,
        generation: i32,
        offsets: &[OffsetCommit],
        (coordinator, coordinator_epoch): (i32, i64),
        commit_time_ms: i64,
    ) -> MetadataResponse {
        if coordinator >= 0 {
            if let Err(e) = self.check_coordinator(group, coordinator, coordinator_epoch) {
                return MetadataResponse::Rejected(e);
            }
        }
        let g = self.group_entry(group);
        g.generation = generation;
        for OffsetCommit {
            topic,
            partition,
            offset,
            leader_epoch,
            metadata,
        } in offsets
        {
            g.offsets.entry(topic.clone()).or_default().insert(
                *partition,
                CommittedOffset {
                    offset: *offset,
                    leader_epoch: *leader_epoch,
                    metadata: metadata.clone(),
                    committed_at: index,
                    commit_time_ms,
                },
            );
        }
        MetadataResponse::Ok
    }

    fn delete_group(&mut self, group: &str) -> MetadataResponse {
        match Arc::make_mut(&mut self.groups).remove(group) {
            Some(_) => MetadataResponse::Ok,
            None => MetadataResponse::Rejected(MetadataError::UnknownGroup(group.to_string())),
        }
    }

    fn delete_offsets(&mut self, group: &str, partitions: &[(String, i32)]) -> MetadataResponse {
        let Some(g) = self.group_mut(group) else {
            return MetadataResponse::Rejected(MetadataError::UnknownGroup(group.to_string()));
        };
        for (topic, partition) in partitions {
            if let Some(parts) = g.offsets.get_mut(topic) {
                parts.remove(partition);
                if parts.is_empty() {
                    g.offsets.remove(topic);
                }
            }
        }
        MetadataResponse::Ok
    }

    fn store_group(
        &mut self,
        group: &str,
        coordinator: i32,
        coordinator_epoch: i64,
        record: &StoredGroup,
    ) -> MetadataResponse {
        if let Err(e) = self.check_coordinator(group, coordinator, coordinator_epoch) {
            return MetadataResponse::Rejected(e);
        }
        let g = self.group_entry(group);
        if let Some(old) = &g.stored {
            if old.generation > record.generation {
                return MetadataResponse::Rejected(MetadataError::NotCoordinator(format!(
                    "group {group} is at generation {}, not {}",
                    old.generation, record.generation
                )));
            }
        }
        g.stored = Some(record.clone());
        MetadataResponse::Ok
    }

    fn expire_offsets(
        &mut self,
        groups: &[String],
        coordinator: i32,
        coordinator_epoch: i64,
        now_ms: i64,
        retention_ms: i64,
    ) -> MetadataResponse {
        for group in groups {
            if self
                .check_coordinator(group, coordinator, coordinator_epoch)
                .is_err()
            {
                // Moved since the proposer looked: its new
                // coordinator checks it.
                continue;
            }
            let Some(g) = self.group_mut(group) else {
                continue;
            };
            for (topic, partition) in g.expired_offsets(now_ms, retention_ms) {
                if let Some(parts) = g.offsets.get_mut(&topic) {
                    parts.remove(&partition);
                    if parts.is_empty() {
                        g.offsets.remove(&topic);
                    }
                }
            }
            if g.is_gone() {
                Arc::make_mut(&mut self.groups).remove(group);
            }
        }
        MetadataResponse::Ok
    }

    /// Refuses a group write from a broker that does not coordinate the
    /// group in this image, or from an older registration of it.
    fn check_coordinator(
        &self,
        group: &str,
        coordinator: i32,
        coordinator_epoch: i64,
    ) -> Result<(), MetadataError> {
        let current = self.group_coordinator(group);
        let epoch = self.brokers.get(&coordinator).map(|b| b.epoch);
        if current != Some(coordinator) || epoch != Some(coordinator_epoch) {
            return Err(MetadataError::NotCoordinator(format!(
                "broker {coordinator} (epoch {coordinator_epoch}) does not coordinate group {group}; broker {} does",
                current.unwrap_or(-1)
            )));
        }
        Ok(())
    }
}

impl MetadataImage {
    /// The broker that coordinates `group`: rendezvous hashing of the group
    /// id over the unfenced brokers admitted as coordinators, so that losing
    /// a broker moves only its own groups, and one that returns takes them
    /// back only once admitted (`AdmitCoordinator`, when it has caught up).
    pub fn group_coordinator(&self, group: &str) -> Option<i32> {
        self.brokers
            .values()
            .filter(|b| !b.fenced && b.coordinator)
            .max_by_key(|b| (rendezvous_score(group, b.id), b.id))
            .map(|b| b.id)
    }

    /// Whether `broker` is in the ISR of every partition it replicates
    /// that has a leader: it has caught up since it came back.
    pub fn in_every_isr(&self, broker: i32) -> bool {
        self.topics.values().all(|t| {
            t.partitions
                .iter()
                .all(|p| p.leader < 0 || !p.replicas.contains(&broker) || p.isr.contains(&broker))
        })
    }

    /// Registered, unfenced brokers.
    pub fn alive(&self) -> Vec<i32> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect()
    }

    /// `broker` is gone (fenced, shut down, or restarted): it leaves every
    /// ISR it can leave (the last member stays, as in Kafka, since it holds
    /// everything committed), and its leaderships pass to another ISR
    /// member, or to nobody.
    fn move_away_from(&mut self, broker: i32) {
        let dynamic = self.configs.clone();
        let alive: Vec<i32> = self.alive().into_iter().filter(|b| *b != broker).collect();
        let involved =
            |p: &PartitionImage| p.leader == broker || (p.isr.len() > 1 && p.isr.contains(&broker));
        self.update_topics(
            |t| t.partitions.iter().any(involved),
            |t| {
                let unclean = unclean_allowed(t, &dynamic);
                for p in &mut t.partitions {
                    let mut changed = false;
                    if p.isr.len() > 1 && p.isr.contains(&broker) {
                        p.isr.retain(|r| *r != broker);
                        changed = true;
                    }
                    if p.leader == broker {
                        elect(p, &alive, unclean);
                        changed = true;
                    }
                    if changed {
                        p.partition_epoch += 1;
                    }
                }
            },
        );
    }

    /// Gives a leader to every partition without one that has an ISR
    /// member alive (or, where the topic allows unclean election, any
    /// replica alive).
    fn elect_offline(&mut self) {
        let dynamic = self.configs.clone();
        let alive = self.alive();
        self.update_topics(
            |t| t.partitions.iter().any(|p| p.leader < 0),
            |t| {
                let unclean = unclean_allowed(t, &dynamic);
                for p in &mut t.partitions {
                    if p.leader < 0 {
                        elect(p, &alive, unclean);
                        if p.leader >= 0 {
                            p.partition_epoch += 1;
                        }
                    }
                }
            },
        );
    }

    fn alter_partition(
        &mut self,
        topic_id: Uuid,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[i32],
    ) -> MetadataResponse {
        let alive = self.alive();
        let index = usize::try_from(partition).ok();
        let Some(p) = self
            .topic_by_id(&topic_id)
            .and_then(|t| t.partitions.get(index?))
        else {
            return MetadataResponse::Rejected(MetadataError::UnknownTopic(format!(
                "{topic_id} partition {partition}"
            )));
        };
        let reject = |e| MetadataResponse::Rejected(e);
        if p.leader != leader || p.leader_epoch != leader_epoch {
            return reject(MetadataError::FencedLeaderEpoch(format!(
                "broker {leader} in epoch {leader_epoch} does not lead partition {partition}: broker {} does in epoch {}",
                p.leader, p.leader_epoch
            )));
        }
        if p.partition_epoch != partition_epoch {
            return reject(MetadataError::InvalidUpdateVersion(format!(
                "partition epoch is {}, not {partition_epoch}",
                p.partition_epoch
            )));
        }
        let mut sorted = isr.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != isr.len() || !isr.contains(&leader) {
            return reject(MetadataError::IneligibleReplica(format!(
                "ISR {isr:?} must name the leader {leader} once, and each member once"
            )));
        }
        for r in isr {
            if !p.replicas.contains(r) {
                return reject(MetadataError::IneligibleReplica(format!(
                    "broker {r} is not a replica"
                )));
            }
            if !p.isr.contains(r) && !alive.contains(r) {
                return reject(MetadataError::IneligibleReplica(format!(
                    "broker {r} is fenced or not registered"
                )));
            }
        }
        // Checked: copy the topic only now, to change it.
        if let Some(p) = self
            .topic_by_id_mut(&topic_id)
            .and_then(|t| t.partitions.get_mut(index?))
        {
            p.isr = isr.to_vec();
            p.partition_epoch += 1;
        }
        MetadataResponse::Ok
    }
}

/// FNV-1a over the key and broker id, then a 64-bit finaliser (splitmix)
/// so that nearby ids spread. Stable across builds, unlike `DefaultHasher`.
fn rendezvous_score(key: &str, broker: i32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(broker.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The topic's `unclean.leader.election.enable`, else the cluster-wide
/// dynamic default (no node's file: every node must decide alike).
fn unclean_allowed(t: &TopicImage, dynamic: &DynamicConfigs) -> bool {
    Resolver::cluster(dynamic)
        .topic_settings(&t.configs)
        .0
        .unclean_leader_election_enable
}

/// Picks the partition's leader among `alive` brokers: the first replica
/// (in replica order, so the preferred leader first) in the ISR, else with
/// `unclean` any replica (which becomes the whole ISR), else none (-1).
/// Bumps the leader epoch.
fn elect(p: &mut PartitionImage, alive: &[i32], unclean: bool) {
    let clean = p
        .replicas
        .iter()
        .copied()
        .find(|r| p.isr.contains(r) && alive.contains(r));
    p.leader = match clean {
        Some(r) => r,
        None if unclean => match p.replicas.iter().copied().find(|r| alive.contains(r)) {
            Some(r) => {
                p.isr = vec![r];
                r
            }
            None => -1,
        },
        None => -1,
    };
    p.leader_epoch += 1;
}

fn new_partition(replicas: &[i32]) -> PartitionImage {
    PartitionImage {
        replicas: replicas.to_vec(),
        leader: replicas.first().copied().unwrap_or(-1),
        leader_epoch: 0,
        isr: replicas.to_vec(),
        partition_epoch: 0,
    }
}

#[cfg(test)]
mod tests;
