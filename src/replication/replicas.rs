//! The local partition replicas of this broker, by (topic id, partition),
//! with the signals they share: an HW moved (wakes consumers' long-polls),
//! a leader appended (wakes followers' fetches), the partitions followed
//! per leader (what the fetchers fetch), and the ISR changes leaders want
//! the controller to commit. `broker` decides which replicas exist; this
//! is where replication finds them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch, RwLock};
use uuid::Uuid;

use super::partition::{IsrProposal, Role, Signals};
use super::Partition;

pub type PartitionKey = (Uuid, i32);

/// Followed partitions by leader id.
pub type Followed = HashMap<i32, Vec<Arc<Partition>>>;

pub struct Replicas {
    partitions: RwLock<HashMap<PartitionKey, Arc<Partition>>>,
    /// Bumped when any local HW moves.
    progress: Arc<watch::Sender<u64>>,
    /// Bumped on every leader append.
    appended: Arc<watch::Sender<u64>>,
    /// Republished when roles change.
    followed: watch::Sender<Arc<Followed>>,
    /// Set by `stop_following`: `followed` stays empty from then on.
    stopped_following: AtomicBool,
    isr_proposals: mpsc::UnboundedSender<IsrProposal>,
    isr_receiver: Mutex<Option<mpsc::UnboundedReceiver<IsrProposal>>>,
}

impl Default for Replicas {
    fn default() -> Self {
        let (isr_proposals, isr_receiver) = mpsc::unbounded_channel();
        Replicas {
            partitions: RwLock::new(HashMap::new()),
            progress: Arc::new(watch::channel(0).0),
            appended: Arc::new(watch::channel(0).0),
            followed: watch::channel(Arc::new(Followed::default())).0,
            stopped_following: AtomicBool::new(false),
            isr_proposals,
            isr_receiver: Mutex::new(Some(isr_receiver)),
        }
    }
}

impl Replicas {
    /// What a new partition signals through.
    pub fn signals(&self) -> Signals {
        Signals {
            progress: self.progress.clone(),
            appended: self.appended.clone(),
        }
    }

    pub async fn get(&self, topic_id: Uuid, index: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .await
            .get(&(topic_id, index))
            .cloned()
    }

    /// The local replica, if this broker leads the partition.
    pub async fn leader(&self, topic_id: Uuid, index: i32) -> Option<Arc<Partition>> {
        self.get(topic_id, index).await.filter(|p| p.is_leader())
    }

    pub async fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().await.values().cloned().collect()
    }

    pub async fn leaders(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .await
            .values()
            .filter(|p| p.is_leader())
            .cloned()
            .collect()
    }

    pub async fn insert(&self, p: Arc<Partition>) {
        self.partitions
            .write()
            .await
            .insert((p.topic_id, p.index), p);
    }

    /// Takes out the replicas `keep` says no to.
    pub async fn remove_unless(&self, keep: impl Fn(&PartitionKey) -> bool) -> Vec<Arc<Partition>> {
        let mut parts = self.partitions.write().await;
        let gone: Vec<PartitionKey> = parts.keys().filter(|k| !keep(k)).copied().collect();
        gone.iter().filter_map(|k| parts.remove(k)).collect()
    }

    /// Takes out every replica (shutdown).
    pub async fn drain(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .write()
            .await
            .drain()
            .map(|(_, p)| p)
            .collect()
    }

    /// Wakes whenever a local HW moves.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// Wakes whenever a leader replica here appends.
    pub fn appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// What the replica fetchers should fetch, by leader.
    pub fn followed(&self) -> watch::Receiver<Arc<Followed>> {
        self.followed.subscribe()
    }

    /// Stops following for good (a controlled shutdown): `followed` is
    /// empty from now on, so the fetchers go idle.
    pub async fn stop_following(&self) {
        self.stopped_following.store(true, Ordering::Release);
        self.publish_followed().await;
    }

    /// Publishes the followed partitions again if roles changed.
    pub async fn publish_followed(&self) {
        let mut by_leader: Followed = HashMap::new();
        for p in self.partitions.read().await.values() {
            if let Role::Follower { leader } = p.role() {
                by_leader.entry(leader).or_default().push(p.clone());
            }
        }
        for ps in by_leader.values_mut() {
            ps.sort_by_key(|p| (p.topic_id, p.index));
        }
        self.followed.send_if_modified(|old| {
            // Read under the channel's lock, so that no image applied at the
            // same time republishes what `stop_following` emptied.
            if self.stopped_following.load(Ordering::Acquire) {
                by_leader.clear();
            }
            let same = old.len() == by_leader.len()
                && by_leader.iter().all(|(l, ps)| {
                    old.get(l).is_some_and(|o| {
                        o.len() == ps.len()
                            && o.iter().zip(ps).all(|(a, b)| {
                                Arc::ptr_eq(a, b) && a.leader_epoch() == b.leader_epoch()
                            })
                    })
                });
            if !same {
                *old = Arc::new(by_leader);
            }
            !same
        });
    }

    /// Queues an ISR change for the controller.
    pub fn propose_isr(&self, prop: IsrProposal) {
        let _ = self.isr_proposals.send(prop);
    }

    /// The queue of ISR changes; only the first caller gets it.
    pub fn take_isr_proposals(&self) -> Option<mpsc::UnboundedReceiver<IsrProposal>> {
        self.isr_receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}
