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

use super::records::{MetadataCommand, MetadataError, MetadataResponse, OffsetCommit};

/// A listener a broker advertises to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
    pub security_protocol: String,
}

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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// Log index of the commit, a stand-in for Kafka's commit timestamp.
    pub committed_at: u64,
}

impl GroupOffsets {
    pub fn get(&self, topic: &str, partition: i32) -> Option<&CommittedOffset> {
        self.offsets.get(topic).and_then(|p| p.get(&partition))
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
                        b.fenced = fence;
                        if fence {
                            b.fenced_at = index;
                        }
                        MetadataResponse::Ok
                    }
                    _ => MetadataResponse::Rejected(MetadataError::StaleBrokerEpoch(format!(
                        "broker {id} is not registered with epoch {epoch}"
                    ))),
                }
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
            } => {
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
        }
    }
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
        }
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
