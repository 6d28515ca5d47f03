//! The broker: the local partition replicas and how they follow the
//! committed metadata image (create, open, delete).
//!
//! Partition directories are `<log.dir>/<topic>-<partition>` as in Kafka,
//! each with a `partition.metadata` naming the topic id, so that a topic
//! deleted and re-created under the same name never inherits old data.

pub mod lifecycle;
pub mod meta;
pub mod replica;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{watch, RwLock};
use uuid::Uuid;

use crate::config::Config;
use crate::controller::image::{MetadataImage, TopicImage};
use crate::log::LogConfig;
use crate::replication::partition::{
    Assignment, FlushPolicy, IsrProposal, PartitionId, Role, Signals,
};
use crate::replication::Partition;

const PARTITION_METADATA: &str = "partition.metadata";

pub type PartitionKey = (Uuid, i32);

/// Followed partitions by leader id.
pub type Followed = HashMap<i32, Vec<Arc<Partition>>>;

pub struct Broker {
    config: Arc<Config>,
    partitions: RwLock<HashMap<PartitionKey, Arc<Partition>>>,
    /// Index of the last metadata image applied locally.
    applied: watch::Sender<u64>,
    /// Bumped when any local HW moves (wakes long-poll fetches).
    progress: Arc<watch::Sender<u64>>,
    /// Bumped on every leader append (wakes followers' fetches).
    appended: Arc<watch::Sender<u64>>,
    /// The partitions this broker follows, by leader: what the replica
    /// fetchers fetch. Republished when roles change.
    followed: watch::Sender<Arc<Followed>>,
    /// Set by `stop_following`: `followed` stays empty from then on.
    stopped_following: std::sync::atomic::AtomicBool,
    /// ISR changes leaders want committed (see `replica::maintain_isr`).
    isr_proposals: tokio::sync::mpsc::UnboundedSender<IsrProposal>,
    isr_receiver: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<IsrProposal>>>,
    /// Topic config overrides by topic id, as of the last image applied.
    topic_configs: std::sync::RwLock<HashMap<Uuid, std::collections::BTreeMap<String, String>>>,
    /// This broker's unused producer ids, `next..end`, from the controller.
    producer_ids: std::sync::Mutex<(i64, i64)>,
}

impl Broker {
    pub fn new(config: Arc<Config>) -> Arc<Broker> {
        let (isr_proposals, isr_receiver) = tokio::sync::mpsc::unbounded_channel();
        Arc::new(Broker {
            isr_proposals,
            isr_receiver: std::sync::Mutex::new(Some(isr_receiver)),
            topic_configs: std::sync::RwLock::new(HashMap::new()),
            config,
            partitions: RwLock::new(HashMap::new()),
            applied: watch::channel(0).0,
            progress: Arc::new(watch::channel(0).0),
            appended: Arc::new(watch::channel(0).0),
            followed: watch::channel(Arc::new(Followed::default())).0,
            stopped_following: std::sync::atomic::AtomicBool::new(false),
            producer_ids: std::sync::Mutex::new((0, 0)),
        })
    }

    /// Takes a producer id from this broker's block; `None` when the block
    /// is used up and the caller must get a new one from the controller.
    pub fn take_producer_id(&self) -> Option<i64> {
        let mut ids = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        (ids.0 < ids.1).then(|| {
            ids.0 += 1;
            ids.0 - 1
        })
    }

    pub fn add_producer_ids(&self, first: i64, count: i64) {
        let mut ids = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.0 >= ids.1 {
            *ids = (first, first + count);
        }
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The local replica, if this broker leads the partition.
    pub async fn leader_partition(&self, topic_id: Uuid, index: i32) -> Option<Arc<Partition>> {
        self.partition(topic_id, index)
            .await
            .filter(|p| p.is_leader())
    }

    /// Every local replica.
    pub async fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().await.values().cloned().collect()
    }

    /// Every local replica this broker leads.
    pub async fn leader_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .await
            .values()
            .filter(|p| p.is_leader())
            .cloned()
            .collect()
    }

    /// What the replica fetchers should fetch, by leader.
    pub fn followed(&self) -> watch::Receiver<Arc<Followed>> {
        self.followed.subscribe()
    }

    /// Wakes whenever a leader replica here appends.
    pub fn appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    pub async fn partition(&self, topic_id: Uuid, index: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .await
            .get(&(topic_id, index))
            .cloned()
    }

    /// The metadata log index this broker has applied.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    pub fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// Waits (bounded) until the image at `index` has been applied locally,
    /// so that a topic just created is served by the next request.
    pub async fn wait_applied(&self, index: u64, timeout: std::time::Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|a| *a >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Follows the image: applies every published image until the sender
    /// goes away.
    pub async fn follow(self: Arc<Self>, mut images: watch::Receiver<Arc<MetadataImage>>) {
        loop {
            let image = images.borrow_and_update().clone();
            self.apply_image(&image).await;
            if images.changed().await.is_err() {
                return;
            }
        }
    }

    /// Brings local partitions in line with `image`: opens the replicas this
    /// node holds, gives each its role, deletes those of topics that are
    /// gone.
    pub async fn apply_image(&self, image: &MetadataImage) {
        let me = self.config.node_id;
        *self
            .topic_configs
            .write()
            .unwrap_or_else(|e| e.into_inner()) = image
            .topics
            .values()
            .map(|t| (t.id, t.configs.clone()))
            .collect();
        let offline = image
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader < 0)
            .count();
        metrics::gauge!("runnel_offline_partitions").set(offline as f64);
        let mut wanted: HashMap<PartitionKey, (&TopicImage, Assignment)> = HashMap::new();
        for t in image.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                if p.replicas.contains(&me) {
                    let a = Assignment {
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                    };
                    wanted.insert((t.id, i as i32), (t, a));
                }
            }
        }
        let stale: Vec<Arc<Partition>> = {
            let mut parts = self.partitions.write().await;
            let keys: Vec<PartitionKey> = parts
                .keys()
                .filter(|k| !wanted.contains_key(k))
                .copied()
                .collect();
            keys.iter().filter_map(|k| parts.remove(k)).collect()
        };
        for p in stale {
            tracing::info!(partition = ?p, "deleting partition: its topic is gone or moved");
            delete_partition(p).await;
        }
        for (key, (topic, a)) in wanted {
            let existing = self.partitions.read().await.get(&key).cloned();
            let p = match existing {
                Some(p) => p,
                None => match self.open_partition(topic, key.1).await {
                    Ok(p) => {
                        self.partitions.write().await.insert(key, p.clone());
                        p
                    }
                    Err(e) => {
                        tracing::error!(topic = %topic.name, partition = key.1, error = %e, "cannot open partition");
                        continue;
                    }
                },
            };
            if let Err(e) = p.apply(&a).await {
                tracing::error!(partition = ?p, error = %e, "cannot take the partition's new role");
            }
        }
        self.publish_followed().await;
        self.applied.send_if_modified(|a| {
            let moved = image.last_applied > *a;
            *a = (*a).max(image.last_applied);
            moved
        });
    }

    /// Stops replicating as a follower, for good (a controlled shutdown):
    /// the replica fetchers go idle once the fetch they are in returns. A
    /// broker on its way out must not be seen catching up by a leader,
    /// which would propose it back into the ISR.
    pub async fn stop_following(&self) {
        self.stopped_following
            .store(true, std::sync::atomic::Ordering::Release);
        self.publish_followed().await;
    }

    async fn publish_followed(&self) {
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
            if self
                .stopped_following
                .load(std::sync::atomic::Ordering::Acquire)
            {
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

    fn log_config(&self, topic: &TopicImage) -> LogConfig {
        let d = &self.config.log;
        let num = |key: &str| topic.configs.get(key).and_then(|v| v.parse::<i64>().ok());
        LogConfig {
            segment_bytes: num("segment.bytes")
                .map(|v| v as u64)
                .unwrap_or(d.segment_bytes),
            segment_ms: num("segment.ms").unwrap_or(d.roll_ms),
            index_interval_bytes: num("index.interval.bytes")
                .map(|v| v as usize)
                .unwrap_or(d.index_interval_bytes),
            max_batch_bytes: self.max_message_bytes(topic),
        }
    }

    /// `max.message.bytes` of the topic, else the broker's `message.max.bytes`.
    pub fn max_message_bytes(&self, topic: &TopicImage) -> usize {
        topic
            .configs
            .get("max.message.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.config.message_max_bytes)
    }

    async fn open_partition(
        &self,
        topic: &TopicImage,
        index: i32,
    ) -> anyhow::Result<Arc<Partition>> {
        let dir = self.partition_dir(&topic.name, topic.id, index)?;
        let policy = match self.config.log.flush_interval_messages {
            Some(n) => FlushPolicy::EveryMessages(n),
            None => FlushPolicy::BeforeAck,
        };
        let p = Partition::open(
            &dir,
            PartitionId {
                topic: topic.name.clone(),
                topic_id: topic.id,
                index,
            },
            self.log_config(topic),
            self.config.node_id,
            policy,
            Signals {
                progress: self.progress.clone(),
                appended: self.appended.clone(),
            },
        )
        .await?;
        write_partition_metadata(&dir, topic.id)?;
        Ok(p)
    }

    /// Finds this partition's directory in any log dir, moving aside one
    /// that belongs to an older topic of the same name; new partitions go
    /// to the log dir with the fewest partitions.
    fn partition_dir(&self, topic: &str, id: Uuid, index: i32) -> anyhow::Result<PathBuf> {
        let name = format!("{topic}-{index}");
        for d in &self.config.log_dirs {
            let dir = d.join(&name);
            if dir.exists() {
                match read_partition_metadata(&dir) {
                    Some(found) if found == id => return Ok(dir),
                    found => {
                        tracing::warn!(dir = %dir.display(), ?found, expected = %id, "partition directory belongs to another topic id; removing it");
                        let aside = d.join(format!("{name}.{}-delete", Uuid::new_v4().simple()));
                        std::fs::rename(&dir, &aside)?;
                        std::fs::remove_dir_all(&aside)?;
                    }
                }
            }
        }
        let least = self
            .config
            .log_dirs
            .iter()
            .min_by_key(|d| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0))
            .ok_or_else(|| anyhow::anyhow!("no log.dirs"))?;
        Ok(least.join(name))
    }

    /// Flushes and closes every partition (clean shutdown).
    pub async fn shutdown(&self) {
        let parts: Vec<Arc<Partition>> = self
            .partitions
            .write()
            .await
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in parts {
            if let Err(e) = p.close().await {
                tracing::error!(partition = ?p, error = %e, "closing partition failed");
            }
        }
    }
}

async fn delete_partition(p: Arc<Partition>) {
    let log = p.log().clone();
    drop(p);
    let res = tokio::task::spawn_blocking(move || match Arc::try_unwrap(log) {
        Ok(log) => log.delete().map_err(|e| e.to_string()),
        Err(log) => {
            // Still read by an in-flight request: remove the files anyway;
            // readers holding open descriptors finish their read.
            let dir = log.dir().to_path_buf();
            std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))
        }
    })
    .await;
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "deleting partition failed"),
        Err(e) => tracing::error!(error = %e, "deleting partition panicked"),
    }
}

fn read_partition_metadata(dir: &Path) -> Option<Uuid> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA)).ok()?;
    let props = crate::config::parse_properties(&text);
    props.get("topic_id").and_then(|s| Uuid::parse_str(s).ok())
}

fn write_partition_metadata(dir: &Path, id: Uuid) -> std::io::Result<()> {
    if read_partition_metadata(dir) == Some(id) {
        return Ok(());
    }
    let tmp = dir.join(format!("{PARTITION_METADATA}.tmp"));
    std::fs::write(&tmp, format!("version: 0\ntopic_id: {id}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(PARTITION_METADATA))?;
    std::fs::File::open(dir)?.sync_all()
}
