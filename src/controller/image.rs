//! The metadata image: everything the cluster knows about itself, rebuilt by
//! applying committed metadata commands in log order.
//!
//! `apply` is a pure function of (image, command): the Raft state machine and
//! every replay of the log must reach the same image. Validation that depends
//! on the current state (a name already taken, a partition count that shrinks)
//! happens here, so that two racing proposals cannot both succeed.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::{
    Endpoint, MetadataCommand, MetadataError, MetadataResponse, OffsetCommit, StoredGroup,
};
use crate::config::topic::TopicConfig;

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

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: String,
    /// Raft log index of the last command applied to this image.
    pub last_applied: u64,
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    pub topics: BTreeMap<String, TopicImage>,
    pub topic_ids: HashMap<Uuid, String>,
    /// The first producer id not yet handed out.
    #[serde(default)]
    pub next_producer_id: i64,
    /// Committed consumer-group offsets by group id.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupOffsets>,
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
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.topic_ids
            .get(id)
            .and_then(|name| self.topics.get(name))
    }

    /// Applies one committed command at Raft log index `index`.
    pub fn apply(&mut self, index: u64, cmd: &MetadataCommand) -> MetadataResponse {
        self.last_applied = index;
        match cmd {
            MetadataCommand::SetClusterId { cluster_id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id.clone();
                }
                MetadataResponse::Ok
            }
            MetadataCommand::RegisterBroker {
                id,
                incarnation_id,
                endpoints,
                rack,
            } => {
                let epoch = index as i64;
                // A new incarnation lost whatever the old one had in memory
                // (and maybe unflushed data): its leaderships and ISR places
                // go first, as if the old registration had been fenced.
                if self.brokers.get(id).is_some_and(|b| !b.fenced) {
                    self.move_away_from(*id);
                }
                self.brokers.insert(
                    *id,
                    BrokerRegistration {
                        id: *id,
                        incarnation_id: *incarnation_id,
                        epoch,
                        endpoints: endpoints.clone(),
                        rack: rack.clone(),
                        fenced: false,
                        fenced_at: 0,
                    },
                );
                self.elect_offline();
                MetadataResponse::BrokerRegistered {
                    broker_epoch: epoch,
                }
            }
            MetadataCommand::CreateTopic {
                name,
                topic_id,
                assignments,
                configs,
            } => {
                if let Err(e) = validate_topic_name(name) {
                    return MetadataResponse::Rejected(e);
                }
                if self.topics.contains_key(name) {
                    return MetadataResponse::Rejected(MetadataError::TopicAlreadyExists(
                        name.clone(),
                    ));
                }
                if assignments.is_empty() {
                    return MetadataResponse::Rejected(MetadataError::InvalidPartitions(
                        "a topic needs at least one partition".into(),
                    ));
                }
                let partitions = assignments.iter().map(|r| new_partition(r)).collect();
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: *topic_id,
                        configs: configs.clone(),
                        partitions,
                    },
                );
                self.topic_ids.insert(*topic_id, name.clone());
                MetadataResponse::TopicCreated {
                    topic_id: *topic_id,
                }
            }
            MetadataCommand::FenceBroker { id, epoch }
            | MetadataCommand::UnfenceBroker { id, epoch } => {
                let fence = matches!(cmd, MetadataCommand::FenceBroker { .. });
                match self.brokers.get_mut(id) {
                    Some(b) if b.epoch == *epoch => {
                        let was_fenced = b.fenced;
                        b.fenced = fence;
                        if fence {
                            b.fenced_at = index;
                            if !was_fenced {
                                self.move_away_from(*id);
                            }
                        } else {
                            self.elect_offline();
                        }
                        MetadataResponse::Ok
                    }
                    _ => MetadataResponse::Rejected(MetadataError::StaleBrokerEpoch(format!(
                        "broker {id} is not registered with epoch {epoch}"
                    ))),
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
                let alive = self.alive();
                for t in self.topics.values_mut() {
                    for (i, p) in t.partitions.iter_mut().enumerate() {
                        if !partitions.is_empty() && !partitions.contains(&(t.id, i as i32)) {
                            continue;
                        }
                        let Some(&preferred) = p.replicas.first() else {
                            continue;
                        };
                        if p.leader != preferred
                            && p.isr.contains(&preferred)
                            && alive.contains(&preferred)
                        {
                            p.leader = preferred;
                            p.leader_epoch += 1;
                            p.partition_epoch += 1;
                        }
                    }
                }
                MetadataResponse::Ok
            }
            MetadataCommand::AllocateProducerIds {
                broker_id: _,
                count,
            } => {
                let count = (*count).clamp(1, 1 << 20);
                let first = self.next_producer_id;
                self.next_producer_id = first.saturating_add(count);
                MetadataResponse::ProducerIds { first, count }
            }
            MetadataCommand::DeleteTopic { topic_id } => match self.topic_ids.remove(topic_id) {
                Some(name) => {
                    self.topics.remove(&name);
                    MetadataResponse::Ok
                }
                None => {
                    MetadataResponse::Rejected(MetadataError::UnknownTopic(topic_id.to_string()))
                }
            },
            MetadataCommand::CreatePartitions {
                topic_id,
                expected_count,
                new_assignments,
            } => {
                let Some(topic) = self
                    .topic_ids
                    .get(topic_id)
                    .and_then(|n| self.topics.get_mut(n))
                else {
                    return MetadataResponse::Rejected(MetadataError::UnknownTopic(
                        topic_id.to_string(),
                    ));
                };
                // The proposer computed placement from the count it saw; a
                // concurrent change makes that placement stale.
                if topic.partitions.len() != *expected_count {
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
            MetadataCommand::CommitOffsets {
                group,
                generation,
                member: _,
                offsets,
                coordinator,
                coordinator_epoch,
                commit_time_ms,
            } => {
                if *coordinator >= 0 {
                    if let Err(e) = self.check_coordinator(group, *coordinator, *coordinator_epoch)
                    {
                        return MetadataResponse::Rejected(e);
                    }
                }
                let g = self.groups.entry(group.clone()).or_default();
                g.generation = *generation;
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
                            commit_time_ms: *commit_time_ms,
                        },
                    );
                }
                MetadataResponse::Ok
            }
            MetadataCommand::DeleteGroup { group } => match self.groups.remove(group) {
                Some(_) => MetadataResponse::Ok,
                None => MetadataResponse::Rejected(MetadataError::UnknownGroup(group.clone())),
            },
            MetadataCommand::DeleteOffsets { group, partitions } => {
                let Some(g) = self.groups.get_mut(group) else {
                    return MetadataResponse::Rejected(MetadataError::UnknownGroup(group.clone()));
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
            MetadataCommand::StoreGroup {
                group,
                coordinator,
                coordinator_epoch,
                record,
            } => {
                if let Err(e) = self.check_coordinator(group, *coordinator, *coordinator_epoch) {
                    return MetadataResponse::Rejected(e);
                }
                let g = self.groups.entry(group.clone()).or_default();
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
            MetadataCommand::ExpireOffsets {
                groups,
                coordinator,
                coordinator_epoch,
                now_ms,
                retention_ms,
            } => {
                for group in groups {
                    if self
                        .check_coordinator(group, *coordinator, *coordinator_epoch)
                        .is_err()
                    {
                        // Moved since the proposer looked: its new
                        // coordinator checks it.
                        continue;
                    }
                    let Some(g) = self.groups.get_mut(group) else {
                        continue;
                    };
                    for (topic, partition) in g.expired_offsets(*now_ms, *retention_ms) {
                        if let Some(parts) = g.offsets.get_mut(&topic) {
                            parts.remove(&partition);
                            if parts.is_empty() {
                                g.offsets.remove(&topic);
                            }
                        }
                    }
                    if g.is_gone() {
                        self.groups.remove(group);
                    }
                }
                MetadataResponse::Ok
            }
        }
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
    /// id over the unfenced brokers, so that losing a broker moves only its
    /// own groups.
    pub fn group_coordinator(&self, group: &str) -> Option<i32> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .max_by_key(|b| (rendezvous_score(group, b.id), b.id))
            .map(|b| b.id)
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
        let alive: Vec<i32> = self.alive().into_iter().filter(|b| *b != broker).collect();
        for t in self.topics.values_mut() {
            let unclean = unclean_allowed(t);
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
        }
    }

    /// Gives a leader to every partition without one that has an ISR
    /// member alive (or, where the topic allows unclean election, any
    /// replica alive).
    fn elect_offline(&mut self) {
        let alive = self.alive();
        for t in self.topics.values_mut() {
            let unclean = unclean_allowed(t);
            for p in &mut t.partitions {
                if p.leader < 0 {
                    elect(p, &alive, unclean);
                    if p.leader >= 0 {
                        p.partition_epoch += 1;
                    }
                }
            }
        }
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
        let Some(p) = self
            .topic_ids
            .get(&topic_id)
            .and_then(|n| self.topics.get_mut(n))
            .and_then(|t| t.partitions.get_mut(usize::try_from(partition).ok()?))
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
        p.isr = isr.to_vec();
        p.partition_epoch += 1;
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

fn unclean_allowed(t: &TopicImage) -> bool {
    TopicConfig::parse(&t.configs)
        .0
        .unclean_leader_election_enable
        .unwrap_or(false)
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
mod tests {
    use super::*;

    fn create(name: &str, n: usize) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.into(),
            topic_id: Uuid::new_v4(),
            assignments: vec![vec![1]; n],
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn create_then_duplicate_is_rejected() {
        let mut img = MetadataImage::default();
        assert!(matches!(
            img.apply(1, &create("a", 3)),
            MetadataResponse::TopicCreated { .. }
        ));
        assert_eq!(img.topics["a"].partitions.len(), 3);
        assert_eq!(
            img.apply(2, &create("a", 1)),
            MetadataResponse::Rejected(MetadataError::TopicAlreadyExists("a".into()))
        );
        assert_eq!(img.last_applied, 2);
    }

    #[test]
    fn delete_removes_both_indexes() {
        let mut img = MetadataImage::default();
        img.apply(1, &create("a", 1));
        let id = img.topics["a"].id;
        assert_eq!(
            img.apply(2, &MetadataCommand::DeleteTopic { topic_id: id }),
            MetadataResponse::Ok
        );
        assert!(img.topics.is_empty() && img.topic_ids.is_empty());
        assert!(matches!(
            img.apply(3, &MetadataCommand::DeleteTopic { topic_id: id }),
            MetadataResponse::Rejected(MetadataError::UnknownTopic(_))
        ));
    }

    #[test]
    fn create_partitions_checks_the_count_it_was_planned_for() {
        let mut img = MetadataImage::default();
        img.apply(1, &create("a", 2));
        let id = img.topics["a"].id;
        let grow = |expected_count| MetadataCommand::CreatePartitions {
            topic_id: id,
            expected_count,
            new_assignments: vec![vec![1]],
        };
        assert_eq!(img.apply(2, &grow(2)), MetadataResponse::Ok);
        assert!(matches!(
            img.apply(3, &grow(2)),
            MetadataResponse::Rejected(_)
        ));
        assert_eq!(img.topics["a"].partitions.len(), 3);
    }

    #[test]
    fn fencing_is_guarded_by_the_broker_epoch() {
        let mut img = MetadataImage::default();
        let reg = MetadataCommand::RegisterBroker {
            id: 1,
            incarnation_id: Uuid::new_v4(),
            endpoints: vec![],
            rack: None,
        };
        img.apply(5, &reg);
        assert_eq!(img.brokers[&1].epoch, 5);
        assert!(matches!(
            img.apply(6, &MetadataCommand::FenceBroker { id: 1, epoch: 4 }),
            MetadataResponse::Rejected(MetadataError::StaleBrokerEpoch(_))
        ));
        assert_eq!(
            img.apply(7, &MetadataCommand::FenceBroker { id: 1, epoch: 5 }),
            MetadataResponse::Ok
        );
        assert!(img.brokers[&1].fenced && img.brokers[&1].fenced_at == 7);
        assert_eq!(
            img.apply(8, &MetadataCommand::UnfenceBroker { id: 1, epoch: 5 }),
            MetadataResponse::Ok
        );
        assert!(!img.brokers[&1].fenced);
        // Registering again (a restart) unfences with a new epoch.
        img.apply(9, &MetadataCommand::FenceBroker { id: 1, epoch: 5 });
        img.apply(10, &reg);
        assert!(!img.brokers[&1].fenced && img.brokers[&1].epoch == 10);
    }

    fn three_brokers_and_topic(configs: &[(&str, &str)]) -> (MetadataImage, Uuid) {
        let mut img = MetadataImage::default();
        for id in 1..=3 {
            img.apply(
                id as u64,
                &MetadataCommand::RegisterBroker {
                    id,
                    incarnation_id: Uuid::new_v4(),
                    endpoints: vec![],
                    rack: None,
                },
            );
        }
        let topic_id = Uuid::new_v4();
        img.apply(
            4,
            &MetadataCommand::CreateTopic {
                name: "t".into(),
                topic_id,
                assignments: vec![vec![1, 2, 3]],
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
        (img, topic_id)
    }

    fn fence(img: &mut MetadataImage, index: u64, id: i32) {
        let epoch = img.brokers[&id].epoch;
        assert_eq!(
            img.apply(index, &MetadataCommand::FenceBroker { id, epoch }),
            MetadataResponse::Ok
        );
    }

    #[test]
    fn fencing_the_leader_elects_from_the_isr_and_bumps_epochs() {
        let (mut img, _) = three_brokers_and_topic(&[]);
        let p = |img: &MetadataImage| img.topics["t"].partitions[0].clone();
        assert_eq!((p(&img).leader, p(&img).leader_epoch), (1, 0));
        fence(&mut img, 5, 1);
        let after = p(&img);
        assert_eq!((after.leader, after.leader_epoch), (2, 1));
        assert_eq!(after.isr, vec![2, 3]);
        assert!(after.partition_epoch > 0);
        // A follower's fencing shrinks the ISR but keeps the leader epoch.
        fence(&mut img, 6, 3);
        assert_eq!(
            (p(&img).leader, p(&img).leader_epoch, p(&img).isr.clone()),
            (2, 1, vec![2])
        );
        // The last ISR member going leaves the partition offline, ISR kept.
        fence(&mut img, 7, 2);
        assert_eq!((p(&img).leader, p(&img).isr.clone()), (-1, vec![2]));
        // Broker 1 comes back: not in the ISR, so no unclean election.
        img.apply(
            8,
            &MetadataCommand::RegisterBroker {
                id: 1,
                incarnation_id: Uuid::new_v4(),
                endpoints: vec![],
                rack: None,
            },
        );
        assert_eq!(p(&img).leader, -1);
        // Broker 2 (the last ISR member) comes back and leads again.
        let epoch = img.brokers[&2].epoch;
        img.apply(9, &MetadataCommand::UnfenceBroker { id: 2, epoch });
        assert_eq!((p(&img).leader, p(&img).isr.clone()), (2, vec![2]));
        // Preferred leader election waits for broker 1 to be in the ISR.
        let elect = MetadataCommand::ElectPreferredLeaders { partitions: vec![] };
        img.apply(10, &elect);
        assert_eq!(p(&img).leader, 2);
    }

    #[test]
    fn unclean_election_only_where_the_topic_allows_it() {
        let (mut img, _) = three_brokers_and_topic(&[("unclean.leader.election.enable", "true")]);
        fence(&mut img, 5, 2);
        fence(&mut img, 6, 3);
        fence(&mut img, 7, 1);
        let p = &img.topics["t"].partitions[0];
        assert_eq!((p.leader, p.isr.clone()), (-1, vec![1]));
        let epoch = img.brokers[&3].epoch;
        img.apply(8, &MetadataCommand::UnfenceBroker { id: 3, epoch });
        let p = &img.topics["t"].partitions[0];
        assert_eq!((p.leader, p.isr.clone()), (3, vec![3]));
    }

    #[test]
    fn alter_partition_is_guarded_by_leader_and_partition_epochs() {
        let (mut img, topic_id) = three_brokers_and_topic(&[]);
        let alter =
            |leader, leader_epoch, partition_epoch, isr: &[i32]| MetadataCommand::AlterPartition {
                topic_id,
                partition: 0,
                leader,
                leader_epoch,
                partition_epoch,
                isr: isr.to_vec(),
            };
        // (command, accepted, ISR after)
        let cases = [
            (alter(1, 0, 0, &[1, 2]), true, vec![1, 2]),
            (alter(1, 0, 0, &[1]), false, vec![1, 2]),
            (alter(2, 0, 1, &[2]), false, vec![1, 2]),
            (alter(1, 0, 1, &[2, 3]), false, vec![1, 2]),
            (alter(1, 0, 1, &[1, 2, 4]), false, vec![1, 2]),
            (alter(1, 0, 1, &[1, 1]), false, vec![1, 2]),
            (alter(1, 0, 1, &[1, 2, 3]), true, vec![1, 2, 3]),
        ];
        for (i, (cmd, ok, isr)) in cases.into_iter().enumerate() {
            let resp = img.apply(10 + i as u64, &cmd);
            assert_eq!(resp == MetadataResponse::Ok, ok, "{cmd:?} -> {resp:?}");
            assert_eq!(img.topics["t"].partitions[0].isr, isr, "after {cmd:?}");
        }
        // A fenced broker cannot join the ISR.
        img.apply(20, &alter(1, 0, 2, &[1]));
        fence(&mut img, 21, 3);
        let pe = img.topics["t"].partitions[0].partition_epoch;
        assert!(matches!(
            img.apply(22, &alter(1, 0, pe, &[1, 3])),
            MetadataResponse::Rejected(MetadataError::IneligibleReplica(_))
        ));
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut img = MetadataImage::default();
        let alloc = |broker_id| MetadataCommand::AllocateProducerIds {
            broker_id,
            count: 1000,
        };
        assert_eq!(
            img.apply(1, &alloc(1)),
            MetadataResponse::ProducerIds {
                first: 0,
                count: 1000
            }
        );
        assert_eq!(
            img.apply(2, &alloc(2)),
            MetadataResponse::ProducerIds {
                first: 1000,
                count: 1000
            }
        );
        assert_eq!(img.next_producer_id, 2000);
    }

    fn commit(group: &str, topic: &str, partition: i32, offset: i64) -> MetadataCommand {
        MetadataCommand::CommitOffsets {
            group: group.into(),
            generation: 3,
            member: "m".into(),
            offsets: vec![OffsetCommit {
                topic: topic.into(),
                partition,
                offset,
                leader_epoch: -1,
                metadata: Some("meta".into()),
            }],
            coordinator: -1,
            coordinator_epoch: 0,
            commit_time_ms: 0,
        }
    }

    #[test]
    fn only_the_current_coordinator_commits() {
        let (mut img, _) = three_brokers_and_topic(&[]);
        let coordinator = img.group_coordinator("g").expect("a coordinator");
        let commit_by = |img: &MetadataImage, by: i32, offset: i64| {
            let mut cmd = commit("g", "t", 0, offset);
            if let MetadataCommand::CommitOffsets {
                coordinator,
                coordinator_epoch,
                ..
            } = &mut cmd
            {
                *coordinator = by;
                *coordinator_epoch = img.brokers[&by].epoch;
            }
            cmd
        };
        let other = (1..=3).find(|b| *b != coordinator).unwrap();
        assert_eq!(
            img.apply(10, &commit_by(&img, coordinator, 5)),
            MetadataResponse::Ok
        );
        assert!(matches!(
            img.apply(11, &commit_by(&img, other, 9)),
            MetadataResponse::Rejected(MetadataError::NotCoordinator(_))
        ));
        // The coordinator is fenced (paused, then silent): its commits,
        // even ones it validated before, no longer land.
        let stale = commit_by(&img, coordinator, 7);
        fence(&mut img, 12, coordinator);
        assert!(matches!(
            img.apply(13, &stale),
            MetadataResponse::Rejected(MetadataError::NotCoordinator(_))
        ));
        let next = img.group_coordinator("g").expect("another coordinator");
        assert_ne!(next, coordinator);
        assert_eq!(
            img.apply(14, &commit_by(&img, next, 8)),
            MetadataResponse::Ok
        );
        assert_eq!(img.groups["g"].get("t", 0).map(|o| o.offset), Some(8));
    }

    #[test]
    fn group_records_come_from_the_coordinator_and_never_go_back() {
        let (mut img, _) = three_brokers_and_topic(&[]);
        let coordinator = img.group_coordinator("g").expect("a coordinator");
        let other = (1..=3).find(|b| *b != coordinator).unwrap();
        let store = |img: &MetadataImage, by: i32, generation: i32, members: usize| {
            MetadataCommand::StoreGroup {
                group: "g".into(),
                coordinator: by,
                coordinator_epoch: img.brokers[&by].epoch,
                record: StoredGroup {
                    generation,
                    protocol_type: "consumer".into(),
                    protocol: "range".into(),
                    leader: "m0".into(),
                    members: (0..members)
                        .map(|i| crate::controller::records::StoredMember {
                            member_id: format!("m{i}"),
                            ..Default::default()
                        })
                        .collect(),
                    written_at_ms: 1_000,
                },
            }
        };
        let stored = |img: &MetadataImage| {
            img.groups
                .get("g")
                .and_then(|g| g.stored.as_ref())
                .map(|s| (s.generation, s.members.len()))
        };
        // (proposer, generation, members, accepted, stored after)
        let cases = [
            (coordinator, 1, 2, true, Some((1, 2))),
            // Only the coordinator writes.
            (other, 2, 1, false, Some((1, 2))),
            (coordinator, 2, 3, true, Some((2, 3))),
            // The same generation again (a static member's new id) is fine,
            // an older one is not.
            (coordinator, 2, 3, true, Some((2, 3))),
            (coordinator, 1, 1, false, Some((2, 3))),
            (coordinator, 3, 0, true, Some((3, 0))),
        ];
        for (i, (by, generation, members, ok, after)) in cases.into_iter().enumerate() {
            let cmd = store(&img, by, generation, members);
            let resp = img.apply(10 + i as u64, &cmd);
            assert_eq!(resp == MetadataResponse::Ok, ok, "case {i}: {resp:?}");
            assert_eq!(stored(&img), after, "case {i}");
        }
        // Commits keep the stored group; DeleteGroup forgets both.
        img.apply(20, &commit("g", "t", 0, 4));
        assert_eq!(stored(&img), Some((3, 0)));
        img.apply(21, &MetadataCommand::DeleteGroup { group: "g".into() });
        assert_eq!(stored(&img), None);
        // A fenced coordinator's record does not land.
        let stale = store(&img, coordinator, 4, 1);
        fence(&mut img, 22, coordinator);
        assert!(matches!(
            img.apply(23, &stale),
            MetadataResponse::Rejected(MetadataError::NotCoordinator(_))
        ));
    }

    #[test]
    fn offsets_expire_by_kip_211_with_the_proposers_clock() {
        const MIN: i64 = 60_000;
        let (mut img, _) = three_brokers_and_topic(&[]);
        let commit_at = |group: &str, partition: i32, at_ms: i64| {
            let mut cmd = commit(group, "t", partition, 10 + partition as i64);
            if let MetadataCommand::CommitOffsets { commit_time_ms, .. } = &mut cmd {
                *commit_time_ms = at_ms;
            }
            cmd
        };
        let store = |img: &MetadataImage, group: &str, members: usize, at_ms: i64| {
            let by = img.group_coordinator(group).expect("a coordinator");
            MetadataCommand::StoreGroup {
                group: group.into(),
                coordinator: by,
                coordinator_epoch: img.brokers[&by].epoch,
                record: StoredGroup {
                    generation: 1,
                    members: (0..members)
                        .map(|i| crate::controller::records::StoredMember {
                            member_id: format!("m{i}"),
                            ..Default::default()
                        })
                        .collect(),
                    written_at_ms: at_ms,
                    ..Default::default()
                },
            }
        };
        // "simple": never had members; commits at 0 min and 5 min.
        img.apply(10, &commit_at("simple", 0, 1_000));
        img.apply(11, &commit_at("simple", 1, 1_000 + 5 * MIN));
        // "left": members committed at 1 min, became Empty at 3 min; a
        // later simple commit (a reset) does not restart the clock.
        img.apply(12, &commit_at("left", 0, 1_000 + MIN));
        img.apply(13, &store(&img, "left", 0, 1_000 + 3 * MIN));
        img.apply(14, &commit_at("left", 1, 1_000 + 4 * MIN));
        // "live": members, last commit long ago: kept.
        img.apply(15, &commit_at("live", 0, 1_000));
        img.apply(16, &store(&img, "live", 2, 1_000));
        // "nothing": Empty, never committed: goes at the first check.
        img.apply(17, &store(&img, "nothing", 0, 1_000 + 9 * MIN));
        // "old": committed before commit times were recorded: kept.
        img.apply(18, &commit("old", "t", 0, 3));
        // "sub": members subscribed to "t" only; an old commit on "u" (a
        // topic they left) expires like a simple commit, "t" is kept.
        img.apply(19, &commit_at("sub", 0, 1_000));
        let mut on_u = commit("sub", "u", 0, 6);
        if let MetadataCommand::CommitOffsets { commit_time_ms, .. } = &mut on_u {
            *commit_time_ms = 1_000;
        }
        img.apply(20, &on_u);
        let subscription = |topics: &[&str]| {
            let mut md = vec![0u8, 1];
            md.extend((topics.len() as i32).to_be_bytes());
            for t in topics {
                md.extend((t.len() as i16).to_be_bytes());
                md.extend(t.as_bytes());
            }
            md.extend([0, 0, 0, 0]);
            md
        };
        let by = img.group_coordinator("sub").expect("a coordinator");
        let sub = MetadataCommand::StoreGroup {
            group: "sub".into(),
            coordinator: by,
            coordinator_epoch: img.brokers[&by].epoch,
            record: StoredGroup {
                generation: 1,
                protocol_type: "consumer".into(),
                protocol: "range".into(),
                leader: "m0".into(),
                members: vec![crate::controller::records::StoredMember {
                    member_id: "m0".into(),
                    protocols: vec![("range".into(), subscription(&["t"]))],
                    ..Default::default()
                }],
                written_at_ms: 1_000,
            },
        };
        assert_eq!(img.apply(21, &sub), MetadataResponse::Ok);
        let topics = |img: &MetadataImage, g: &str| -> Vec<String> {
            img.groups[g].offsets.keys().cloned().collect()
        };

        let offsets = |img: &MetadataImage, g: &str| -> Option<Vec<i32>> {
            img.groups
                .get(g)
                .map(|g| g.offsets.values().flat_map(|p| p.keys().copied()).collect())
        };
        let expire = |img: &mut MetadataImage, index: u64, now_ms: i64| {
            let groups: Vec<String> = img.groups.keys().cloned().collect();
            // The coordinator of each group proposes for its own groups.
            for by in 1..=3 {
                let cmd = MetadataCommand::ExpireOffsets {
                    groups: groups.clone(),
                    coordinator: by,
                    coordinator_epoch: img.brokers[&by].epoch,
                    now_ms,
                    retention_ms: 10 * MIN,
                };
                assert_eq!(img.apply(index, &cmd), MetadataResponse::Ok);
            }
        };
        // (now, simple, left, live, nothing, old) after expiry at `now`.
        type Row = (
            i64,
            Option<Vec<i32>>,
            Option<Vec<i32>>,
            Option<Vec<i32>>,
            Option<Vec<i32>>,
            Option<Vec<i32>>,
        );
        let rows: Vec<Row> = vec![
            (
                1_000 + 9 * MIN,
                Some(vec![0, 1]),
                Some(vec![0, 1]),
                Some(vec![0]),
                None,
                Some(vec![0]),
            ),
            // Partition 0 of "simple" is 10 minutes old; "left" has been
            // Empty for 7.
            (
                1_000 + 10 * MIN,
                Some(vec![1]),
                Some(vec![0, 1]),
                Some(vec![0]),
                None,
                Some(vec![0]),
            ),
            // "left" Empty for 10 minutes: all of it goes, and the group.
            (
                1_000 + 13 * MIN,
                Some(vec![1]),
                None,
                Some(vec![0]),
                None,
                Some(vec![0]),
            ),
            (
                1_000 + 15 * MIN,
                None,
                None,
                Some(vec![0]),
                None,
                Some(vec![0]),
            ),
            (
                1_000 + 1_000 * MIN,
                None,
                None,
                Some(vec![0]),
                None,
                Some(vec![0]),
            ),
        ];
        for (i, (now, simple, left, live, nothing, old)) in rows.into_iter().enumerate() {
            expire(&mut img, 100 + i as u64, now);
            let have = (
                offsets(&img, "simple"),
                offsets(&img, "left"),
                offsets(&img, "live"),
                offsets(&img, "nothing"),
                offsets(&img, "old"),
            );
            assert_eq!(have, (simple, left, live, nothing, old), "at {now}");
            let want: &[&str] = if i == 0 { &["t", "u"] } else { &["t"] };
            assert_eq!(topics(&img, "sub"), want, "at {now}");
        }
        // Only the group's coordinator expires its offsets.
        img.apply(200, &commit_at("simple", 0, 1_000));
        let coordinator = img.group_coordinator("simple").expect("a coordinator");
        let other = (1..=3).find(|b| *b != coordinator).unwrap();
        let by_other = MetadataCommand::ExpireOffsets {
            groups: vec!["simple".into()],
            coordinator: other,
            coordinator_epoch: img.brokers[&other].epoch,
            now_ms: 1_000 + 100 * MIN,
            retention_ms: 10 * MIN,
        };
        img.apply(201, &by_other);
        assert_eq!(offsets(&img, "simple"), Some(vec![0]));
    }

    #[test]
    fn group_offset_commands_table() {
        let mut img = MetadataImage::default();
        let del = |parts: &[(&str, i32)]| MetadataCommand::DeleteOffsets {
            group: "g".into(),
            partitions: parts.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
        };
        // (command, accepted, group g's (topic, partition, offset) after)
        type Case = (MetadataCommand, bool, Vec<(&'static str, i32, i64)>);
        let cases: Vec<Case> = vec![
            (commit("g", "t", 0, 5), true, vec![("t", 0, 5)]),
            (commit("g", "t", 1, 7), true, vec![("t", 0, 5), ("t", 1, 7)]),
            // A later commit replaces, whatever its value.
            (commit("g", "t", 0, 2), true, vec![("t", 0, 2), ("t", 1, 7)]),
            (commit("h", "t", 0, 9), true, vec![("t", 0, 2), ("t", 1, 7)]),
            (del(&[("t", 0), ("u", 3)]), true, vec![("t", 1, 7)]),
            (
                MetadataCommand::DeleteGroup { group: "g".into() },
                true,
                vec![],
            ),
            (
                MetadataCommand::DeleteGroup { group: "g".into() },
                false,
                vec![],
            ),
            (del(&[("t", 1)]), false, vec![]),
        ];
        for (i, (cmd, ok, want)) in cases.into_iter().enumerate() {
            let resp = img.apply(i as u64 + 1, &cmd);
            assert_eq!(resp == MetadataResponse::Ok, ok, "{cmd:?} -> {resp:?}");
            let mut have = Vec::new();
            if let Some(g) = img.groups.get("g") {
                for (t, parts) in &g.offsets {
                    for (p, o) in parts {
                        have.push((t.as_str(), *p, o.offset));
                    }
                }
            }
            assert_eq!(have, want, "after {cmd:?}");
        }
        assert_eq!(img.groups["h"].get("t", 0).map(|o| o.offset), Some(9));
        assert_eq!(
            img.groups["h"].get("t", 0).and_then(|o| o.metadata.clone()),
            Some("meta".into())
        );
    }

    #[test]
    fn old_images_without_groups_still_load() {
        let mut img = MetadataImage::default();
        img.apply(1, &create("a", 1));
        let mut json: serde_json::Value = serde_json::to_value(&img).expect("to json");
        json.as_object_mut().expect("object").remove("groups");
        let back: MetadataImage = serde_json::from_value(json).expect("old layout loads");
        assert!(back.groups.is_empty());
        assert_eq!(back.topics.len(), 1);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "ä", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }
}
