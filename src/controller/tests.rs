//! Controller tests against real RocksDB stores in temporary directories:
//! openraft's storage conformance suite, persistence across restarts of the
//! store and of a single-voter `Controller`, and snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    AnyError, BasicNode, CommittedLeaderId, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId,
    Membership, RaftLogReader, RaftSnapshotBuilder, StorageError, StorageIOError, Vote,
};
use tempfile::TempDir;
use tokio::sync::watch;
use uuid::Uuid;

use super::image::MetadataImage;
use super::observer::{FollowRequest, StreamItem};
use super::placement::place_replicas;
use super::records::{MetadataCommand, MetadataError, MetadataResponse};
use super::store::{self, LogStore, StateMachineStore};
use super::{Controller, ControllerConfig, Error, TypeConfig};

struct TempStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| {
            StorageError::from(StorageIOError::new(
                ErrorSubject::Store,
                ErrorVerb::Write,
                AnyError::new(&e),
            ))
        })?;
        let (publish, _) = watch::channel(Arc::default());
        let (log, sm) = store::open(dir.path(), publish)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> anyhow::Result<()> {
    Suite::test_all(TempStoreBuilder)?;
    Ok(())
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload,
    }
}

fn create_topic(name: &str, partitions: usize) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.into(),
        topic_id: Uuid::new_v4(),
        assignments: vec![vec![1]; partitions],
        configs: BTreeMap::from([("cleanup.policy".to_string(), "delete".to_string())]),
    }
}

fn one_voter_membership() -> Membership<u64, BasicNode> {
    Membership::new(
        vec![BTreeSet::from([1])],
        BTreeMap::from([(1, BasicNode::new("127.0.0.1:9093"))]),
    )
}

#[tokio::test]
async fn log_store_survives_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let entries = vec![
        entry(1, 1, EntryPayload::Blank),
        entry(1, 2, EntryPayload::Normal(create_topic("a", 1))),
        entry(2, 3, EntryPayload::Normal(create_topic("b", 2))),
    ];
    let vote = Vote::new_committed(2, 1);
    {
        let (mut log, _sm) = store::open(dir.path(), watch::channel(Arc::default()).0)?;
        log.blocking_append(entries.clone()).await?;
        log.save_vote(&vote).await?;
        log.save_committed(Some(log_id(2, 3))).await?;
        log.purge(log_id(1, 1)).await?;
    }
    let (mut log, _sm) = store::open(dir.path(), watch::channel(Arc::default()).0)?;
    assert_eq!(log.read_vote().await?, Some(vote));
    assert_eq!(log.read_committed().await?, Some(log_id(2, 3)));
    let state = log.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1)));
    assert_eq!(state.last_log_id, Some(log_id(2, 3)));
    let read = log.try_get_log_entries(0..).await?;
    assert_eq!(read, entries[1..].to_vec());
    assert_eq!(log.try_get_log_entries(3..=3).await?, entries[2..].to_vec());
    Ok(())
}

#[tokio::test]
async fn log_keys_sort_numerically() -> anyhow::Result<()> {
    // Little-endian or decimal keys would put 256 before 2 in a RocksDB scan.
    let dir = tempfile::tempdir()?;
    let (mut log, _sm) = store::open(dir.path(), watch::channel(Arc::default()).0)?;
    let entries: Vec<_> = (1..=300)
        .map(|i| entry(1, i, EntryPayload::Blank))
        .collect();
    log.blocking_append(entries).await?;
    let read = log.try_get_log_entries(250..260).await?;
    let indexes: Vec<u64> = read.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, (250..260).collect::<Vec<_>>());
    log.truncate(log_id(1, 256)).await?;
    assert_eq!(log.get_log_state().await?.last_log_id, Some(log_id(1, 255)));
    Ok(())
}

#[tokio::test]
async fn state_machine_persists_and_snapshot_installs_elsewhere() -> anyhow::Result<()> {
    let dir_a = tempfile::tempdir()?;
    let (publish, mut follow) = watch::channel(Arc::default());
    let (_log, mut sm) = store::open(dir_a.path(), publish)?;
    let mut entries = vec![
        entry(1, 1, EntryPayload::Membership(one_voter_membership())),
        entry(
            1,
            2,
            EntryPayload::Normal(MetadataCommand::SetClusterId {
                cluster_id: "snap".into(),
            }),
        ),
    ];
    entries.extend((3..40).map(|i| {
        entry(
            1,
            i,
            EntryPayload::Normal(create_topic(&format!("t{i}"), 2)),
        )
    }));
    entries.push(entry(1, 40, EntryPayload::Blank));
    let responses = sm.apply(entries).await?;
    assert_eq!(responses.len(), 40);
    assert!(matches!(
        responses[2],
        MetadataResponse::TopicCreated { .. }
    ));
    ensure!(follow.has_changed()?, "apply did not publish the image");
    let image = follow.borrow_and_update().clone();
    assert_eq!(image.topics.len(), 37);
    assert_eq!(image.cluster_id, "snap");
    // The blank entry advances the applied log id, not the image.
    let (applied, membership) = sm.applied_state().await?;
    assert_eq!(applied, Some(log_id(1, 40)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1)));

    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 40)));
    let current = sm
        .get_current_snapshot()
        .await?
        .context("snapshot not stored")?;
    assert_eq!(current.meta, snapshot.meta);
    drop((_log, sm));

    // A fresh store takes the snapshot as a follower would.
    let dir_b = tempfile::tempdir()?;
    {
        let (publish, follow_b) = watch::channel(Arc::default());
        let (_log, mut sm_b) = store::open(dir_b.path(), publish)?;
        let mut data = sm_b.begin_receiving_snapshot().await?;
        data.get_mut()
            .extend_from_slice(snapshot.snapshot.get_ref());
        sm_b.install_snapshot(&snapshot.meta, data).await?;
        assert_eq!(**follow_b.borrow(), *image);
        assert_eq!(
            sm_b.applied_state().await?,
            (Some(log_id(1, 40)), membership.clone())
        );
    }
    // Both stores come back from disk with the same state.
    for dir in [&dir_a, &dir_b] {
        let (publish, follow) = watch::channel(Arc::default());
        let (_log, mut sm) = store::open(dir.path(), publish)?;
        assert_eq!(**follow.borrow(), *image);
        assert_eq!(
            sm.applied_state().await?,
            (Some(log_id(1, 40)), membership.clone())
        );
        let stored = sm.get_current_snapshot().await?.context("snapshot lost")?;
        assert_eq!(stored.meta, snapshot.meta);
    }
    Ok(())
}

#[tokio::test]
async fn corrupt_entry_is_a_storage_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let (mut log, _sm) = store::open(dir.path(), watch::channel(Arc::default()).0)?;
        log.blocking_append([entry(1, 1, EntryPayload::Blank)])
            .await?;
    }
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(false);
        let db = rocksdb::DB::open_cf(&opts, dir.path(), ["logs", "meta", "sm"])?;
        let logs = db.cf_handle("logs").context("logs cf")?;
        db.put_cf(logs, 2u64.to_be_bytes(), b"{not json")?;
    }
    let (mut log, _sm) = store::open(dir.path(), watch::channel(Arc::default()).0)?;
    assert!(log.get_log_state().await.is_err());
    assert!(log.try_get_log_entries(1..3).await.is_err());
    assert_eq!(log.try_get_log_entries(1..2).await?.len(), 1);
    Ok(())
}

fn config(dir: &TempDir) -> ControllerConfig {
    ControllerConfig::new(
        1,
        dir.path().join("controller"),
        BTreeMap::from([(1, "127.0.0.1:9093".to_string())]),
    )
}

async fn register(c: &Controller, id: i32, rack: &str) -> anyhow::Result<i64> {
    let resp = c
        .propose(MetadataCommand::RegisterBroker {
            id,
            incarnation_id: Uuid::new_v4(),
            endpoints: vec![],
            rack: Some(rack.into()),
        })
        .await?;
    match resp {
        MetadataResponse::BrokerRegistered { broker_epoch } => Ok(broker_epoch),
        other => anyhow::bail!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_controller_survives_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Controller::start(config(&dir)).await?;
    assert!(!c.is_initialized().await?);
    c.bootstrap("cluster-A").await?;
    assert!(c.is_initialized().await?);
    assert_eq!(c.leader_id(), Some(1));
    assert_eq!(c.image().cluster_id, "cluster-A");

    let mut follow = c.subscribe();
    let e1 = register(&c, 1, "r1").await?;
    let e2 = register(&c, 2, "r2").await?;
    assert!(e2 > e1, "broker epochs must grow: {e1} then {e2}");
    ensure!(follow.has_changed()?, "subscriber not notified");

    let brokers: Vec<(i32, Option<String>)> = c
        .image()
        .brokers
        .values()
        .map(|b| (b.id, b.rack.clone()))
        .collect();
    let assignments = place_replicas(&brokers, 4, 2, 0)?;
    let topic_id = Uuid::new_v4();
    let created = c
        .propose(MetadataCommand::CreateTopic {
            name: "orders".into(),
            topic_id,
            assignments: assignments.clone(),
            configs: BTreeMap::new(),
        })
        .await?;
    assert_eq!(created, MetadataResponse::TopicCreated { topic_id });
    let dup = c.propose(create_topic("orders", 1)).await?;
    assert_eq!(
        dup,
        MetadataResponse::Rejected(MetadataError::TopicAlreadyExists("orders".into()))
    );
    let before = c.image();
    assert_eq!(**follow.borrow_and_update(), *before);
    let replicas: Vec<Vec<i32>> = before.topics["orders"]
        .partitions
        .iter()
        .map(|p| p.replicas.clone())
        .collect();
    assert_eq!(replicas, assignments);

    c.shutdown().await?;
    assert!(matches!(
        c.propose(create_topic("late", 1)).await,
        Err(Error::Shutdown)
    ));

    let c = Controller::start(config(&dir)).await?;
    assert!(c.is_initialized().await?);
    assert_eq!(*c.image(), *before, "image changed across restart");
    // Bootstrapping again is harmless; another cluster id is refused.
    c.bootstrap("cluster-A").await?;
    assert!(matches!(
        c.bootstrap("cluster-B").await,
        Err(Error::ClusterIdMismatch { .. })
    ));
    assert_eq!(c.leader_id(), Some(1));
    let e3 = register(&c, 1, "r1").await?;
    assert!(e3 > e2);
    assert!(c.image().topics.contains_key("orders"));
    c.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_purge_and_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Controller::start(config(&dir)).await?;
    c.bootstrap("cluster-S").await?;
    for i in 0..60 {
        let resp = c.propose(create_topic(&format!("topic-{i}"), 1)).await?;
        assert!(matches!(resp, MetadataResponse::TopicCreated { .. }));
    }
    let applied = c
        .raft()
        .expect("a voter")
        .metrics()
        .borrow()
        .last_applied
        .context("nothing applied")?;
    c.raft().expect("a voter").trigger().snapshot().await?;
    let metrics = c
        .raft()
        .expect("a voter")
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= applied.index),
            "snapshot built",
        )
        .await?;
    let snapshotted = metrics.snapshot.context("no snapshot log id")?;
    c.raft()
        .expect("a voter")
        .trigger()
        .purge_log(snapshotted.index)
        .await?;
    c.raft()
        .expect("a voter")
        .wait(Some(Duration::from_secs(10)))
        .purged(Some(snapshotted), "log purged")
        .await?;
    let snapshot = c
        .raft()
        .expect("a voter")
        .get_snapshot()
        .await?
        .context("no snapshot")?;
    assert_eq!(snapshot.meta.last_log_id, Some(snapshotted));
    let image = c.image();

    // A fresh store installs the snapshot and has the same image.
    let other = tempfile::tempdir()?;
    let (publish, follow) = watch::channel(Arc::default());
    let (_log, mut sm) = store::open(other.path(), publish)?;
    sm.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await?;
    assert_eq!(**follow.borrow(), *image);

    // With the log purged up to the snapshot, a restart still has it all,
    // and the log continues after it.
    c.propose(create_topic("after-snapshot", 1)).await?;
    let image = c.image();
    c.shutdown().await?;
    let c = Controller::start(config(&dir)).await?;
    assert_eq!(*c.image(), *image);
    c.bootstrap("cluster-S").await?;
    assert_eq!(c.image().topics.len(), 61);
    c.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn config_must_list_this_node_as_voter() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(&dir);
    cfg.node_id = 2;
    assert!(matches!(
        Controller::start(cfg).await,
        Err(Error::Config(_))
    ));
    Ok(())
}

#[test]
fn default_image_is_what_an_empty_store_publishes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (publish, follow) = watch::channel(Arc::new(MetadataImage {
        cluster_id: "stale".into(),
        ..Default::default()
    }));
    let _stores = store::open(dir.path(), publish)?;
    assert_eq!(**follow.borrow(), MetadataImage::default());
    Ok(())
}

/// The next stream item, or a failure after a few seconds.
async fn next_item(rx: &mut tokio::sync::mpsc::Receiver<StreamItem>) -> anyhow::Result<StreamItem> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .context("no stream item within 5 s")?
        .context("the stream ended")
}

/// Applies stream items to `image` until it reaches `index`.
async fn follow_until(
    rx: &mut tokio::sync::mpsc::Receiver<StreamItem>,
    image: &mut MetadataImage,
    index: u64,
) -> anyhow::Result<()> {
    while image.last_applied < index {
        match next_item(rx).await? {
            StreamItem::Commands(cmds) => {
                for (i, cmd) in cmds {
                    ensure!(
                        i > image.last_applied,
                        "command {i} not after {}",
                        image.last_applied
                    );
                    image.apply(i, &cmd);
                }
            }
            StreamItem::Leader(_) => {}
            StreamItem::Snapshot(_) => anyhow::bail!("an image instead of the commands"),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_stream_sends_the_image_then_resumes_from_the_log() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Controller::start(config(&dir)).await?;
    c.bootstrap("cluster-M").await?;
    for i in 0..5 {
        c.propose(create_topic(&format!("early-{i}"), 1)).await?;
    }
    let early = c.image();

    // A new observer gets the leader and the whole image.
    let mut rx = c.follow_stream(FollowRequest {
        observer: 7,
        after: 0,
    })?;
    assert_eq!(next_item(&mut rx).await?, StreamItem::Leader(Some(1)));
    match next_item(&mut rx).await? {
        StreamItem::Snapshot(img) => assert_eq!(*img, *early),
        other => anyhow::bail!("expected the image, got {other:?}"),
    }

    // One that has applied up to `early` resumes: the commands after it,
    // from the log, then live ones; applied the way the state machine
    // applies them, they give the voter's image.
    for i in 0..5 {
        c.propose(create_topic(&format!("middle-{i}"), 1)).await?;
    }
    let mut resumed = c.follow_stream(FollowRequest {
        observer: 8,
        after: early.last_applied,
    })?;
    let mut image = (*early).clone();
    follow_until(&mut resumed, &mut image, c.image().last_applied).await?;
    assert_eq!(image, *c.image());
    c.propose(create_topic("live", 1)).await?;
    follow_until(&mut resumed, &mut image, c.image().last_applied).await?;
    assert_eq!(image, *c.image());
    // The first observer was following live too.
    let mut first = (*early).clone();
    follow_until(&mut rx, &mut first, c.image().last_applied).await?;
    assert_eq!(first, *c.image());

    // Once the log behind a snapshot is purged, an observer that far
    // behind gets the image again.
    let raft = c.raft().expect("a voter");
    raft.trigger().snapshot().await?;
    let m = raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some(), "snapshot built")
        .await?;
    let snapshotted = m.snapshot.context("no snapshot")?;
    raft.trigger().purge_log(snapshotted.index).await?;
    raft.wait(Some(Duration::from_secs(10)))
        .purged(Some(snapshotted), "log purged")
        .await?;
    let mut behind = c.follow_stream(FollowRequest {
        observer: 9,
        after: early.last_applied,
    })?;
    assert_eq!(next_item(&mut behind).await?, StreamItem::Leader(Some(1)));
    match next_item(&mut behind).await? {
        StreamItem::Snapshot(img) => assert_eq!(*img, *c.image()),
        other => anyhow::bail!("expected the image, got {other:?}"),
    }
    c.shutdown().await?;
    Ok(())
}
