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
        img.apply(
            6,
            &MetadataCommand::FenceBroker {
                id: 1,
                epoch: 4,
                cause: None
            }
        ),
        MetadataResponse::Rejected(MetadataError::StaleBrokerEpoch(_))
    ));
    assert_eq!(
        img.apply(
            7,
            &MetadataCommand::FenceBroker {
                id: 1,
                epoch: 5,
                cause: None
            }
        ),
        MetadataResponse::Ok
    );
    assert!(img.brokers[&1].fenced && img.brokers[&1].fenced_at == 7);
    assert_eq!(
        img.apply(8, &MetadataCommand::UnfenceBroker { id: 1, epoch: 5 }),
        MetadataResponse::Ok
    );
    assert!(!img.brokers[&1].fenced);
    // Registering again (a restart) unfences with a new epoch.
    img.apply(
        9,
        &MetadataCommand::FenceBroker {
            id: 1,
            epoch: 5,
            cause: None,
        },
    );
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
    // Caught up (no partitions yet): each coordinates its share of groups.
    for id in 1..=3 {
        let epoch = img.brokers[&id].epoch;
        assert_eq!(
            img.apply(3, &MetadataCommand::AdmitCoordinator { id, epoch }),
            MetadataResponse::Ok
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
        img.apply(
            index,
            &MetadataCommand::FenceBroker {
                id,
                epoch,
                cause: None
            }
        ),
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
fn a_batch_applies_as_its_commands_would_one_by_one() {
    let (mut batched, _) = three_brokers_and_topic(&[]);
    let mut one_by_one = batched.clone();
    let cmds = vec![
        commit("g", "t", 0, 5),
        commit("h", "t", 1, 7),
        // A later commit of the same partition in the same batch wins.
        commit("g", "t", 0, 6),
    ];
    let answers = batched.apply(20, &MetadataCommand::Batch(cmds.clone()));
    assert_eq!(
        answers,
        MetadataResponse::Batch(vec![MetadataResponse::Ok; 3])
    );
    for cmd in &cmds {
        assert_eq!(one_by_one.apply(20, cmd), MetadataResponse::Ok);
    }
    assert_eq!(batched, one_by_one);
    assert_eq!(batched.groups["g"].get("t", 0).map(|o| o.offset), Some(6));
}

#[test]
fn a_batch_refuses_what_is_not_an_offset_commit_or_isr_change_and_applies_the_rest() {
    let (mut img, _) = three_brokers_and_topic(&[]);
    let answers = img.apply(
        20,
        &MetadataCommand::Batch(vec![
            commit("g", "t", 0, 5),
            create("sneaked-in", 1),
            commit("g", "t", 1, 3),
        ]),
    );
    let MetadataResponse::Batch(answers) = answers else {
        panic!("a batch answers with a batch: {answers:?}");
    };
    assert_eq!(answers[0], MetadataResponse::Ok);
    assert!(matches!(
        answers[1],
        MetadataResponse::Rejected(MetadataError::NotBatchable(_))
    ));
    assert_eq!(answers[2], MetadataResponse::Ok);
    assert!(!img.topics.contains_key("sneaked-in"));
    assert_eq!(img.groups["g"].offsets["t"].len(), 2);
}

#[test]
fn a_commit_copies_no_topic_and_an_isr_change_only_its_own() {
    let (mut img, id) = three_brokers_and_topic(&[]);
    img.apply(15, &create("other", 2));
    let before = img.clone();
    img.apply(16, &commit("g", "t", 0, 5));
    assert!(Arc::ptr_eq(&before.topics, &img.topics));
    assert!(Arc::ptr_eq(&before.brokers, &img.brokers));
    // An ISR shrink copies the map and its own topic, not the other.
    let p = img.topics["t"].partitions[0].clone();
    let shrink = MetadataCommand::AlterPartition {
        topic_id: id,
        partition: 0,
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        isr: vec![p.leader],
    };
    let before = img.clone();
    assert_eq!(img.apply(17, &shrink), MetadataResponse::Ok);
    assert!(!Arc::ptr_eq(&before.topics["t"], &img.topics["t"]));
    assert!(Arc::ptr_eq(&before.topics["other"], &img.topics["other"]));
    assert_eq!(before.topics["t"].partitions[0].isr.len(), 3);
    // A refused change copies nothing.
    let before = img.clone();
    assert!(matches!(
        img.apply(18, &shrink),
        MetadataResponse::Rejected(_)
    ));
    assert!(Arc::ptr_eq(&before.topics, &img.topics));
}

#[test]
fn isr_changes_in_a_batch_apply_each_against_the_partition_epoch_before_it() {
    let (mut batched, id) = three_brokers_and_topic(&[]);
    let mut one_by_one = batched.clone();
    let p = batched.topics["t"].partitions[0].clone();
    let alter = |isr: Vec<i32>, partition_epoch: i32| MetadataCommand::AlterPartition {
        topic_id: id,
        partition: 0,
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch,
        isr,
    };
    let cmds = vec![
        alter(vec![p.leader], p.partition_epoch),
        commit("g", "t", 0, 5),
        // Named the epoch the first change replaced: stale.
        alter(p.replicas.clone(), p.partition_epoch),
        alter(p.replicas.clone(), p.partition_epoch + 1),
    ];
    let MetadataResponse::Batch(answers) = batched.apply(20, &MetadataCommand::Batch(cmds.clone()))
    else {
        panic!("a batch answers with a batch");
    };
    let singly: Vec<MetadataResponse> = cmds.iter().map(|c| one_by_one.apply(20, c)).collect();
    assert_eq!(answers, singly);
    assert_eq!(answers[0], MetadataResponse::Ok);
    assert!(matches!(answers[2], MetadataResponse::Rejected(_)));
    assert_eq!(answers[3], MetadataResponse::Ok);
    assert_eq!(batched, one_by_one);
    assert_eq!(batched.topics["t"].partitions[0].isr.len(), 3);
    assert_eq!(
        batched.topics["t"].partitions[0].partition_epoch,
        p.partition_epoch + 2
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

#[test]
fn a_returning_broker_takes_its_groups_back_only_when_admitted() {
    let (mut img, _) = three_brokers_and_topic(&[]);
    let groups: Vec<String> = (0..60).map(|i| format!("g{i}")).collect();
    let before: Vec<_> = groups.iter().map(|g| img.group_coordinator(g)).collect();
    let gone = before[0].expect("a coordinator");
    fence(&mut img, 10, gone);
    // It restarts: a new registration, unfenced but not coordinating.
    img.apply(
        11,
        &MetadataCommand::RegisterBroker {
            id: gone,
            incarnation_id: Uuid::new_v4(),
            endpoints: vec![],
            rack: None,
        },
    );
    assert!(!img.brokers[&gone].fenced);
    for g in &groups {
        assert_ne!(img.group_coordinator(g), Some(gone), "{g} went back early");
    }
    assert!(!img.in_every_isr(gone), "it was taken out of the ISR");
    let epoch = img.brokers[&gone].epoch;
    assert_eq!(
        img.apply(12, &MetadataCommand::AdmitCoordinator { id: gone, epoch }),
        MetadataResponse::Ok
    );
    let after: Vec<_> = groups.iter().map(|g| img.group_coordinator(g)).collect();
    assert_eq!(after, before, "every group is back where it was");
    // A stale or fenced registration is not admitted.
    fence(&mut img, 13, gone);
    assert!(matches!(
        img.apply(14, &MetadataCommand::AdmitCoordinator { id: gone, epoch }),
        MetadataResponse::Rejected(_)
    ));
    assert!(!img.brokers[&gone].coordinator);
}
