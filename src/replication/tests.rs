//! A leader and a follower replica on real files, exchanging fetches by
//! direct calls: the HW waits for the ISR's durable offsets, the ISR grows
//! and shrinks, and a divergent follower truncates by leader epoch.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record};
use tokio::sync::watch;
use uuid::Uuid;

use super::partition::*;
use super::producer_state::SequenceError;
use crate::log::LogConfig;
use crate::protocol::{batch, build};

/// `n` plain records, a batch each (the encoder splits plain records with
/// sequence -1 one per batch).
fn batch_of(n: usize) -> Bytes {
    let records: Vec<Record> = (0..n as i64)
        .map(|i| build::lone_record(i, 1_000 + i, None, Some(Bytes::from(format!("v{i}")))))
        .collect();
    build::encode(&records, Compression::None).expect("encode")
}

/// `n` records of producer `pid` (epoch `epoch`) from sequence `seq`, one
/// batch.
fn idempotent_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let records: Vec<Record> = (0..n as i64)
        .map(|i| {
            let value = Some(Bytes::from(format!("v{i}")));
            build::idempotent_record(pid, epoch, seq, i, 1_000 + i, None, value)
        })
        .collect();
    build::encode(&records, Compression::None).expect("encode")
}

async fn replica(dir: &std::path::Path, me: i32, topic_id: Uuid) -> std::sync::Arc<Partition> {
    Partition::open(
        &dir.join(format!("r{me}")),
        PartitionId {
            topic: "t".into(),
            topic_id,
            index: 0,
        },
        LogConfig::default(),
        me,
        FlushPolicy::BeforeAck,
        Signals {
            progress: std::sync::Arc::new(watch::channel(0).0),
            appended: std::sync::Arc::new(watch::channel(0).0),
        },
    )
    .await
    .expect("open replica")
}

fn assignment(leader: i32, leader_epoch: i32, partition_epoch: i32, isr: &[i32]) -> Assignment {
    Assignment {
        min_insync_replicas: 1,
        leader,
        leader_epoch,
        partition_epoch,
        replicas: vec![1, 2],
        isr: isr.to_vec(),
    }
}

async fn produce(p: &Partition, n: usize) -> (i64, i32) {
    let records = batch_of(n);
    let summary = batch::validate_batches(&records, 1 << 20).expect("valid");
    let (done, epoch) = p
        .append(records, &summary, Acks::Leader)
        .await
        .expect("append");
    (done.last_offset() + 1, epoch)
}

/// One follower fetch round: fetch, append, fsync. Returns the records' size.
async fn fetch_round(leader: &Partition, follower: &Partition, leader_id: i32) -> usize {
    let epoch = follower.leader_epoch();
    let got = leader
        .replica_fetch(
            2,
            follower.log_end_offset(),
            follower.durable_offset(),
            follower.log().latest_epoch().unwrap_or(-1),
            epoch,
            1 << 20,
        )
        .await;
    match got {
        Ok(f) => {
            let n = f.records.len();
            if n > 0 {
                assert!(follower
                    .append_from_leader(leader_id, epoch, f.records)
                    .await
                    .expect("follower append"));
            }
            follower
                .sync_as_follower(f.high_watermark)
                .await
                .expect("sync");
            n
        }
        Err(FetchRefusal::Diverging {
            epoch: e,
            end_offset,
        }) => {
            let local = follower.log().end_offset_for_epoch(e).expect("epochs").1;
            let to = if local >= 0 {
                end_offset.min(local)
            } else {
                end_offset
            };
            assert!(follower
                .truncate_as_follower(leader_id, epoch, to)
                .await
                .expect("truncate"));
            0
        }
        Err(e) => panic!("fetch refused: {e}"),
    }
}

#[tokio::test]
async fn the_high_watermark_waits_for_the_isr_and_acks_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let leader = replica(dir.path(), 1, id).await;
    let follower = replica(dir.path(), 2, id).await;
    leader.apply(&assignment(1, 0, 0, &[1, 2])).await.unwrap();
    follower.apply(&assignment(1, 0, 0, &[1, 2])).await.unwrap();
    assert_eq!(follower.role(), Role::Follower { leader: 1 });

    let (end, epoch) = produce(&leader, 3).await;
    // The leader has fsynced, but the follower has not fetched.
    assert_eq!(
        leader
            .wait_for_hw(end, epoch, Duration::from_millis(200))
            .await,
        HwWait::TimedOut
    );
    assert_eq!(leader.high_watermark(), 0);
    assert!(fetch_round(&leader, &follower, 1).await > 0);
    // The follower's next fetch reports what it fsynced.
    assert_eq!(fetch_round(&leader, &follower, 1).await, 0);
    assert_eq!(
        leader.wait_for_hw(end, epoch, Duration::from_secs(5)).await,
        HwWait::Reached
    );
    assert_eq!(leader.high_watermark(), 3);
    // The follower learns the HW on its next fetch.
    fetch_round(&leader, &follower, 1).await;
    assert_eq!(follower.high_watermark(), 3);

    // A produce waiting when leadership moves is told so.
    let (end, epoch) = produce(&leader, 1).await;
    let waiting = {
        let leader = leader.clone();
        tokio::spawn(async move {
            leader
                .wait_for_hw(end, epoch, Duration::from_secs(10))
                .await
        })
    };
    leader.apply(&assignment(2, 1, 1, &[1, 2])).await.unwrap();
    assert_eq!(waiting.await.unwrap(), HwWait::LostLeadership);
    let records = batch_of(1);
    let summary = batch::validate_batches(&records, 1 << 20).unwrap();
    assert!(matches!(
        leader.append(records, &summary, Acks::Leader).await,
        Err(PartitionError::NotLeader)
    ));
}

#[tokio::test]
async fn a_caught_up_follower_is_proposed_for_the_isr_and_a_lagging_one_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let leader = replica(dir.path(), 1, id).await;
    let follower = replica(dir.path(), 2, id).await;
    leader.apply(&assignment(1, 0, 0, &[1])).await.unwrap();
    follower.apply(&assignment(1, 0, 0, &[1])).await.unwrap();
    produce(&leader, 5).await;
    // Not in the ISR, the follower does not hold the HW back.
    assert!(leader.wait_for_hw(5, 0, Duration::from_secs(5)).await == HwWait::Reached);
    let f = leader
        .replica_fetch(2, 0, 0, -1, 0, 1 << 20)
        .await
        .expect("fetch");
    assert_eq!(f.proposal, None, "behind the HW: not in sync yet");
    follower.append_from_leader(1, 0, f.records).await.unwrap();
    follower.sync_as_follower(f.high_watermark).await.unwrap();
    let f = leader
        .replica_fetch(2, 5, 5, 0, 0, 1 << 20)
        .await
        .expect("fetch");
    let prop = f.proposal.expect("caught up: proposed for the ISR");
    assert_eq!(
        (
            prop.leader,
            prop.leader_epoch,
            prop.partition_epoch,
            prop.isr.clone()
        ),
        (1, 0, 0, vec![1, 2])
    );
    // Committed; then the follower stops fetching and falls behind.
    leader.apply(&assignment(1, 0, 1, &[1, 2])).await.unwrap();
    produce(&leader, 1).await;
    assert_eq!(leader.shrink_isr(Duration::from_secs(60)), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let prop = leader
        .shrink_isr(Duration::from_millis(100))
        .expect("lagging follower dropped");
    assert_eq!(
        (prop.partition_epoch, prop.isr, prop.expands),
        (1, vec![1], false)
    );
}

#[tokio::test]
async fn a_divergent_follower_truncates_to_the_new_leaders_history() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let a = replica(dir.path(), 1, id).await;
    let b = replica(dir.path(), 2, id).await;
    // Epoch 0: a leads; both get 4 records.
    a.apply(&assignment(1, 0, 0, &[1, 2])).await.unwrap();
    b.apply(&assignment(1, 0, 0, &[1, 2])).await.unwrap();
    produce(&a, 4).await;
    fetch_round(&a, &b, 1).await;
    assert_eq!(b.log_end_offset(), 4);
    // a takes 3 more records that b never sees, then b leads in epoch 1
    // and takes 2 records of its own.
    produce(&a, 3).await;
    assert_eq!(a.log_end_offset(), 7);
    b.apply(&assignment(2, 1, 1, &[2])).await.unwrap();
    a.apply(&assignment(2, 1, 1, &[2])).await.unwrap();
    produce(&b, 2).await;
    // a fetches from b: divergence at 4, truncate, then catch up.
    let fetch_from_b = |a: std::sync::Arc<Partition>, b: std::sync::Arc<Partition>| async move {
        let epoch = a.leader_epoch();
        match b
            .replica_fetch(
                1,
                a.log_end_offset(),
                a.durable_offset(),
                a.log().latest_epoch().unwrap_or(-1),
                epoch,
                1 << 20,
            )
            .await
        {
            Ok(f) => {
                if !f.records.is_empty() {
                    a.append_from_leader(2, epoch, f.records).await.unwrap();
                }
                a.sync_as_follower(f.high_watermark).await.unwrap();
            }
            Err(FetchRefusal::Diverging {
                epoch: e,
                end_offset,
            }) => {
                assert_eq!((e, end_offset), (0, 4));
                a.truncate_as_follower(2, epoch, end_offset).await.unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    };
    fetch_from_b(a.clone(), b.clone()).await;
    assert_eq!(a.log_end_offset(), 4);
    fetch_from_b(a.clone(), b.clone()).await;
    assert_eq!(a.log_end_offset(), 6);
    assert_eq!(a.log().epoch_entries(), b.log().epoch_entries());
    assert_eq!(a.log().epoch_entries(), vec![(0, 0), (1, 4)]);
    let read = |p: std::sync::Arc<Partition>| async move {
        let log = p.log().clone();
        tokio::task::spawn_blocking(move || log.read(0, 1 << 20, i64::MAX))
            .await
            .unwrap()
            .unwrap()
            .records
    };
    assert_eq!(read(a.clone()).await, read(b.clone()).await);
}

#[tokio::test]
async fn stale_and_future_epochs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let leader = replica(dir.path(), 1, id).await;
    leader.apply(&assignment(1, 3, 0, &[1, 2])).await.unwrap();
    assert!(matches!(
        leader.replica_fetch(2, 0, 0, -1, 2, 1024).await,
        Err(FetchRefusal::FencedEpoch(2))
    ));
    assert!(matches!(
        leader.replica_fetch(2, 0, 0, -1, 4, 1024).await,
        Err(FetchRefusal::UnknownEpoch(4))
    ));
    assert!(matches!(
        leader.replica_fetch(2, 9, 9, -1, 3, 1024).await,
        Err(FetchRefusal::OutOfRange { .. })
    ));
    assert!(matches!(
        leader.replica_fetch(3, 0, 0, -1, 3, 1024).await,
        Err(FetchRefusal::NotLeader)
    ));
}

#[tokio::test]
async fn producer_state_survives_a_crash_and_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let send = |p: std::sync::Arc<Partition>, seq: i32| async move {
        let records = idempotent_batch(42, 0, seq, 2);
        let summary = batch::validate_batches(&records, 1 << 20).unwrap();
        p.append(records, &summary, Acks::Leader)
            .await
            .map(|(a, _)| a)
    };
    let solo = |p: std::sync::Arc<Partition>| async move {
        p.apply(&Assignment {
            min_insync_replicas: 1,
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: vec![1],
            isr: vec![1],
        })
        .await
        .unwrap();
        p
    };
    let p = solo(replica(dir.path(), 1, id).await).await;
    assert!(matches!(send(p.clone(), 0).await, Ok(Appended::New(_))));
    assert!(matches!(send(p.clone(), 2).await, Ok(Appended::New(_))));
    // A crash: no close, no snapshot beyond the first append's.
    drop(p);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let p = solo(replica(dir.path(), 1, id).await).await;
    match send(p.clone(), 2).await {
        Ok(Appended::Duplicate(m)) => assert_eq!((m.first_offset, m.last_offset), (2, 3)),
        other => panic!("a retry after a crash must be a duplicate: {other:?}"),
    }
    assert!(matches!(
        send(p.clone(), 9).await,
        Err(PartitionError::Sequence(_))
    ));
    assert!(matches!(send(p.clone(), 4).await, Ok(Appended::New(_))));
    p.close().await.unwrap();
    drop(p);
    let p = solo(replica(dir.path(), 1, id).await).await;
    match send(p.clone(), 4).await {
        Ok(Appended::Duplicate(m)) => assert_eq!(m.first_offset, 4),
        other => panic!("a retry after a clean restart must be a duplicate: {other:?}"),
    }
    assert_eq!(p.log_end_offset(), 6);
}

/// Under continuous load the HW, moved by the ISR, is always ahead of a
/// follower whose fsync trails its fetches: once the follower's log end has
/// reached the HW, the HW waits for its fsync so that it can join.
#[tokio::test]
async fn a_follower_rejoins_while_the_leader_keeps_taking_writes() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let leader = replica(dir.path(), 1, id).await;
    leader.apply(&assignment(1, 0, 0, &[1])).await.unwrap();
    produce(&leader, 5).await;
    assert!(leader.wait_for_hw(5, 0, Duration::from_secs(5)).await == HwWait::Reached);
    // The follower has fetched everything up to the HW, but its fsync is
    // still running: not in sync yet.
    let f = leader
        .replica_fetch(2, 5, 0, 0, 0, 1 << 20)
        .await
        .expect("fetch");
    assert_eq!(f.proposal, None, "nothing durable yet: not in sync");
    // More writes arrive; the HW must not run away from the follower.
    let (end, epoch) = produce(&leader, 5).await;
    assert_eq!(
        leader
            .wait_for_hw(end, epoch, Duration::from_millis(100))
            .await,
        HwWait::TimedOut,
        "the HW waits for the catching-up follower's fsync"
    );
    assert_eq!(leader.high_watermark(), 5);
    // Its fsync done, the follower reports it and is proposed.
    let f = leader
        .replica_fetch(2, 5, 5, 0, 0, 1 << 20)
        .await
        .expect("fetch");
    let prop = f
        .proposal
        .expect("durable up to the HW: proposed for the ISR");
    assert_eq!(prop.isr, vec![1, 2]);
}

/// A follower a fetch behind, whose every fetch reads to the leader's end
/// while the HW (moved by the ISR) is already past its fetch offset, is
/// held for too: it joins once its fsync catches up with the frozen HW.
#[tokio::test]
async fn a_follower_one_fetch_behind_the_hw_still_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let leader = replica(dir.path(), 1, id).await;
    leader.apply(&assignment(1, 0, 0, &[1])).await.unwrap();
    produce(&leader, 5).await;
    assert!(leader.wait_for_hw(5, 0, Duration::from_secs(5)).await == HwWait::Reached);
    // The follower reads everything up to the leader's end (5).
    let f = leader
        .replica_fetch(2, 0, 0, -1, 0, 1 << 20)
        .await
        .expect("fetch");
    assert_eq!(f.proposal, None);
    let (end, _) = produce(&leader, 5).await;
    assert!(leader.wait_for_hw(end, 0, Duration::from_secs(5)).await == HwWait::Reached);
    // Its next fetch is behind the HW (10) but has all the leader had at
    // its previous fetch: the HW now waits for it.
    let f = leader
        .replica_fetch(2, 5, 0, 0, 0, 1 << 20)
        .await
        .expect("fetch");
    assert_eq!(f.proposal, None, "nothing durable yet");
    let (end, epoch) = produce(&leader, 5).await;
    assert_eq!(
        leader
            .wait_for_hw(end, epoch, Duration::from_millis(100))
            .await,
        HwWait::TimedOut,
        "the HW waits for the catching-up follower"
    );
    assert_eq!(leader.high_watermark(), 10);
    let f = leader
        .replica_fetch(2, 10, 10, 0, 0, 1 << 20)
        .await
        .expect("fetch");
    let prop = f
        .proposal
        .expect("durable up to the HW: proposed for the ISR");
    assert_eq!(prop.isr, vec![1, 2]);
}

/// The idempotence trap of a full disk: R1 fails with a storage error, and
/// R2 and R3, pipelined behind it, would be a sequence gap. They are
/// refused as R1 was (retriably), and R1, R2, R3 resent in order go in
/// once each; a real gap is still a gap.
#[tokio::test]
async fn batches_behind_one_a_storage_error_refused_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let p = replica(dir.path(), 1, id).await;
    p.apply(&Assignment {
        min_insync_replicas: 1,
        leader: 1,
        leader_epoch: 0,
        partition_epoch: 0,
        replicas: vec![1],
        isr: vec![1],
    })
    .await
    .unwrap();
    let send = |seq: i32| {
        let p = p.clone();
        async move {
            let records = idempotent_batch(42, 0, seq, 2);
            let summary = batch::validate_batches(&records, 1 << 20).unwrap();
            p.append(records, &summary, Acks::Leader)
                .await
                .map(|(a, _)| (a.first_offset(), matches!(a, Appended::New(_))))
        }
    };
    assert_eq!(send(0).await.unwrap(), (0, true));
    crate::log::faults::arm(&dir.path().join("r1"), |a| a.write = Some(10));
    let r1 = send(2).await.expect_err("the disk is full");
    assert!(r1.is_storage(), "{r1}");
    assert!(p.storage_failing());
    for seq in [4, 6] {
        match send(seq).await {
            Err(PartitionError::Sequence(SequenceError::AfterFailedAppend {
                expected: 2,
                got,
            })) => {
                assert_eq!(got, seq)
            }
            other => panic!("a batch behind the failed one: {other:?}"),
        }
    }
    assert_eq!(p.log_end_offset(), 2, "nothing written behind it");
    // Room again: resent in order.
    assert_eq!(send(2).await.unwrap(), (2, true));
    assert!(!p.storage_failing(), "an append succeeded");
    assert_eq!(send(4).await.unwrap(), (4, true));
    assert_eq!(send(6).await.unwrap(), (6, true));
    assert_eq!(send(4).await.unwrap(), (4, false), "a retry is a duplicate");
    assert!(matches!(
        send(20).await,
        Err(PartitionError::Sequence(SequenceError::OutOfOrder { .. }))
    ));
    assert_eq!(p.log_end_offset(), 8);
}

/// A follower whose append fails says so with its next fetch, and the
/// leader proposes it out of the ISR at once (not after the lag time);
/// once its appends succeed again it stops saying so.
#[tokio::test]
async fn a_follower_whose_disk_fails_is_dropped_from_the_isr_at_once() {
    use super::leader::FollowerFetch;
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let leader = replica(dir.path(), 1, id).await;
    let follower = replica(dir.path(), 2, id).await;
    leader.apply(&assignment(1, 1, 1, &[1, 2])).await.unwrap();
    follower.apply(&assignment(1, 1, 1, &[1, 2])).await.unwrap();
    produce(&leader, 3).await;
    while fetch_round(&leader, &follower, 1).await > 0 {}
    fetch_round(&leader, &follower, 1).await;
    assert_eq!(leader.shrink_isr(Duration::from_secs(60)), None);
    produce(&leader, 2).await;
    crate::log::faults::arm(&dir.path().join("r2"), |a| a.write = Some(0));
    let fetch = |storage_error: bool| FollowerFetch {
        follower: 2,
        fetch_offset: follower.log_end_offset(),
        durable_offset: follower.durable_offset(),
        storage_error,
    };
    let got = leader
        .replica_fetch_from(fetch(false), 1, 1, 1 << 20)
        .await
        .expect("fetch");
    let err = follower
        .append_from_leader(1, 1, got.records)
        .await
        .expect_err("the follower's disk is full");
    assert!(err.is_storage());
    assert!(follower.storage_failing());
    leader
        .replica_fetch_from(fetch(follower.storage_failing()), 1, 1, 1 << 20)
        .await
        .expect("fetch");
    let prop = leader
        .shrink_isr(Duration::from_secs(60))
        .expect("out of the ISR well before the lag time");
    assert_eq!(prop.isr, vec![1]);
    // Room again: the next round appends, and it no longer says so.
    fetch_round(&leader, &follower, 1).await;
    assert!(!follower.storage_failing());
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
}
