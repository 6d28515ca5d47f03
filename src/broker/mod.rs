//! The broker: the local partition replicas and how they follow the
//! committed metadata image (create, open, delete).
//!
//! Partition directories are `<log.dir>/<topic>-<partition>` as in Kafka,
//! each with a `partition.metadata` naming the topic id, so that a topic
//! deleted and re-created under the same name never inherits old data.

mod cleaner;
pub mod grpc;
pub mod isr;
pub mod lifecycle;
pub mod meta;
mod retention;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use uuid::Uuid;

use crate::config::dynamic::{DynamicConfigs, Resolver};
use crate::config::topic::TopicSettings;
use crate::config::Config;
use crate::controller::image::{MetadataImage, TopicImage};
use crate::controller::records::{MetadataCommand, MetadataError, MetadataResponse};
use crate::controller::Controller;
use crate::log::LogConfig;
use crate::replication::partition::{Assignment, FlushPolicy, PartitionId};
use crate::replication::replicas::Replicas;
use crate::replication::Partition;

const PARTITION_METADATA: &str = "partition.metadata";
/// How many partitions an image opens or gives a new role at once (each
/// may fsync a file or two, on the blocking pool).
const OPEN_CONCURRENCY: usize = 32;

/// Why a metadata change this broker proposed did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// The controller refused it.
    #[error(transparent)]
    Rejected(MetadataError),
    /// It did not reach a committed answer.
    #[error(transparent)]
    Controller(#[from] crate::controller::Error),
}

type StoredConfigs = std::collections::BTreeMap<String, String>;
type Topics = Arc<std::collections::BTreeMap<String, Arc<TopicImage>>>;

pub struct Broker {
    config: Arc<Config>,
    replicas: Arc<Replicas>,
    /// Index of the last metadata image applied locally.
    applied: watch::Sender<u64>,
    /// What every topic config is for each topic, by topic id, as of the
    /// last image applied: the topic's stored overrides and what they
    /// resolve to here (resolved again when they or the dynamic broker
    /// configs change).
    topic_settings: std::sync::RwLock<HashMap<Uuid, (StoredConfigs, Arc<TopicSettings>)>>,
    /// The dynamic broker configs `topic_settings` was resolved with.
    dynamic: std::sync::RwLock<Arc<DynamicConfigs>>,
    /// This broker's unused producer ids, `next..end`, from the controller.
    producer_ids: std::sync::Mutex<(i64, i64)>,
    /// The topics of the last image applied in full without an error: an
    /// image with the same topics (one that changed only groups, say) has
    /// nothing for the partitions to do.
    applied_topics: std::sync::Mutex<Option<Topics>>,
}

impl Broker {
    pub fn new(config: Arc<Config>) -> Arc<Broker> {
        Arc::new(Broker {
            topic_settings: std::sync::RwLock::new(HashMap::new()),
            dynamic: std::sync::RwLock::default(),
            config,
            replicas: Arc::default(),
            applied: watch::channel(0).0,
            producer_ids: std::sync::Mutex::new((0, 0)),
            applied_topics: std::sync::Mutex::new(None),
        })
    }

    /// The local replicas, for replication.
    pub fn replicas(&self) -> &Arc<Replicas> {
        &self.replicas
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
        self.replicas.leader(topic_id, index).await
    }

    /// Every local replica.
    pub async fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.replicas.all().await
    }

    /// Every local replica this broker leads.
    pub async fn leader_partitions(&self) -> Vec<Arc<Partition>> {
        self.replicas.leaders().await
    }

    pub async fn partition(&self, topic_id: Uuid, index: i32) -> Option<Arc<Partition>> {
        self.replicas.get(topic_id, index).await
    }

    /// The metadata log index this broker has applied.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Wakes whenever a local HW moves.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.replicas.progress()
    }

    /// Waits (bounded) until the image at `index` has been applied locally,
    /// so that a topic just created is served by the next request.
    pub async fn wait_applied(&self, index: u64, timeout: std::time::Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|a| *a >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Proposes a metadata change, then waits (bounded) until this broker
    /// has applied the result, so that the next request here sees it.
    pub async fn propose(
        &self,
        controller: &Controller,
        cmd: MetadataCommand,
    ) -> Result<MetadataResponse, ProposeError> {
        self.settle(controller, controller.propose(cmd).await).await
    }

    /// What `propose` does once the controller answered: waits (bounded)
    /// until this broker has applied the image the answer came with, and
    /// turns a refusal into an error.
    pub async fn settle(
        &self,
        controller: &Controller,
        answer: crate::controller::Result<MetadataResponse>,
    ) -> Result<MetadataResponse, ProposeError> {
        let resp = answer?;
        let index = controller.image().last_applied;
        self.wait_applied(index, std::time::Duration::from_secs(10))
            .await;
        match resp {
            MetadataResponse::Rejected(e) => Err(ProposeError::Rejected(e)),
            ok => Ok(ok),
        }
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
        let unchanged = self
            .applied_topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, &image.topics));
        let dynamic_changed = self.dynamic_changed(image);
        let clean = if !unchanged || dynamic_changed {
            let clean = self.apply_topics(image, dynamic_changed).await;
            if clean {
                *self
                    .applied_topics
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(image.topics.clone());
            }
            clean
        } else {
            true
        };
        // Held only once every partition has taken settings resolved with
        // them: until then the next image tries again.
        if clean {
            *self.dynamic.write().unwrap_or_else(|e| e.into_inner()) = image.configs.clone();
        }
        self.applied.send_if_modified(|a| {
            let moved = image.last_applied > *a;
            *a = (*a).max(image.last_applied);
            moved
        });
    }

    /// The partition work of `apply_image`; false if a partition could
    /// not be opened or take its role (the next image tries again).
    ///
    /// Only what changed since the last image applied cleanly is visited:
    /// a topic whose `Arc` is the one applied then is skipped whole, and in
    /// a changed topic a partition equal to the one applied then is
    /// skipped too. An ISR change on a 10,000-partition broker so costs one
    /// partition's work, not ten thousand. Partitions that must be opened
    /// (or take a new role, which may write a leader-epoch checkpoint) are
    /// worked on `OPEN_CONCURRENCY` at a time.
    ///
    /// With `dynamic_changed` (the dynamic broker configs changed), every
    /// topic's settings may have changed, and every local partition is
    /// given them again.
    async fn apply_topics(&self, image: &MetadataImage, dynamic_changed: bool) -> bool {
        use futures::stream::StreamExt;
        let me = self.config.node_id;
        let prev: Option<Topics> = self
            .applied_topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let before = |t: &TopicImage| -> Option<Arc<TopicImage>> {
            prev.as_ref()?
                .get(&t.name)
                .filter(|o| o.id == t.id)
                .cloned()
        };
        self.resolve_settings(image, dynamic_changed);
        let offline = image
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader < 0)
            .count();
        metrics::gauge!("runnel_offline_partitions").set(offline as f64);
        let fenced = image.brokers.values().filter(|b| b.fenced).count();
        metrics::gauge!("runnel_brokers", "state" => "fenced").set(fenced as f64);
        metrics::gauge!("runnel_brokers", "state" => "unfenced")
            .set((image.brokers.len() - fenced) as f64);
        // Changed topics, by id, and the partitions of them this broker
        // holds (which may be none now).
        let mut changed: HashMap<Uuid, HashSet<i32>> = HashMap::new();
        let mut work: Vec<(Arc<TopicImage>, i32, Assignment)> = Vec::new();
        for t in image.topics.values() {
            let old = before(t);
            if !dynamic_changed && old.as_ref().is_some_and(|o| Arc::ptr_eq(o, t)) {
                continue;
            }
            let mine = changed.entry(t.id).or_default();
            let same_configs =
                !dynamic_changed && old.as_ref().is_some_and(|o| o.configs == t.configs);
            for (i, p) in t.partitions.iter().enumerate() {
                if !p.replicas.contains(&me) {
                    continue;
                }
                mine.insert(i as i32);
                let unchanged = same_configs
                    && old
                        .as_ref()
                        .and_then(|o| o.partitions.get(i))
                        .is_some_and(|o| o == p);
                if unchanged {
                    continue;
                }
                let a = Assignment {
                    min_insync_replicas: self.min_insync_replicas(t.id),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                };
                work.push((t.clone(), i as i32, a));
            }
        }
        // A replica stays if its topic is unchanged, or changed and still
        // places a replica here.
        let stale = self
            .replicas
            .remove_unless(|(id, index)| match changed.get(id) {
                Some(mine) => mine.contains(index),
                None => image.topic_by_id(id).is_some(),
            })
            .await;
        let mut roles_changed = !stale.is_empty();
        for p in stale {
            tracing::info!(partition = ?p, "deleting partition: its topic is gone or moved");
            delete_partition(p).await;
        }
        let results: Vec<anyhow::Result<bool>> = futures::stream::iter(work)
            .map(|(topic, index, a)| async move { self.take_role(&topic, index, &a).await })
            .buffer_unordered(OPEN_CONCURRENCY)
            .collect()
            .await;
        let mut clean = true;
        for r in results {
            match r {
                Ok(moved) => roles_changed |= moved,
                Err(e) => {
                    tracing::error!(error = %e, "cannot open a partition or give it its new role");
                    clean = false;
                }
            }
        }
        if roles_changed {
            self.replicas.publish_followed().await;
        }
        clean
    }

    /// Opens the replica of `topic`/`index` if it is not open yet and
    /// gives it assignment `a`; true if it is new or its role or epoch
    /// changed.
    async fn take_role(
        &self,
        topic: &TopicImage,
        index: i32,
        a: &Assignment,
    ) -> anyhow::Result<bool> {
        let p = match self.replicas.get(topic.id, index).await {
            Some(p) => p,
            None => {
                let p = self.open_partition(topic, index).await.map_err(|e| {
                    anyhow::anyhow!("cannot open partition {}-{index}: {e:#}", topic.name)
                })?;
                self.replicas.insert(p.clone()).await;
                p
            }
        };
        let settings = self.topic_settings(topic.id);
        p.set_settings(
            self.log_config(&settings),
            flush_policy(&settings),
            settings.flush_ms,
        )
        .map_err(|e| anyhow::anyhow!("partition {p:?}: {e:#}"))?;
        let before = (p.role(), p.leader_epoch());
        p.apply(a)
            .await
            .map_err(|e| anyhow::anyhow!("partition {p:?}: {e:#}"))?;
        Ok((p.role(), p.leader_epoch()) != before)
    }

    /// Stops replicating as a follower, for good (a controlled shutdown):
    /// the replica fetchers go idle once the fetch they are in returns. A
    /// broker on its way out must not be seen catching up by a leader,
    /// which would propose it back into the ISR.
    pub async fn stop_following(&self) {
        self.replicas.stop_following().await;
    }

    /// Whether the image's dynamic broker configs differ from those the
    /// partitions last took.
    fn dynamic_changed(&self, image: &MetadataImage) -> bool {
        let held = self.dynamic.read().unwrap_or_else(|e| e.into_inner());
        let changed = !Arc::ptr_eq(&held, &image.configs) && **held != *image.configs;
        if changed {
            tracing::info!(
                "dynamic broker configs changed; every topic's settings are resolved again"
            );
        }
        changed
    }

    /// Resolves the settings of topics that are new or changed in `image`
    /// (of all with `all`: the dynamic configs changed), and forgets those
    /// of topics gone. Each entry is replaced in place, so that a reader
    /// never sees a topic without its settings.
    fn resolve_settings(&self, image: &MetadataImage, all: bool) {
        let resolver = Resolver::new(self.config.node_id, &self.config.raw, &image.configs);
        let mut cache = self
            .topic_settings
            .write()
            .unwrap_or_else(|e| e.into_inner());
        cache.retain(|id, _| image.topic_by_id(id).is_some());
        for t in image.topics.values() {
            if !all && cache.get(&t.id).is_some_and(|(raw, _)| *raw == t.configs) {
                continue;
            }
            let (settings, errors) = resolver.topic_settings(&t.configs);
            for e in errors {
                tracing::warn!(topic = %t.name, error = %e, "ignoring a config value; the default applies");
            }
            cache.insert(t.id, (t.configs.clone(), Arc::new(settings)));
        }
    }

    /// Every topic config of the topic as it applies here (the broker's
    /// for an unknown topic).
    pub fn topic_settings(&self, topic_id: Uuid) -> Arc<TopicSettings> {
        if let Some((_, s)) = self
            .topic_settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&topic_id)
        {
            return s.clone();
        }
        let dynamic = self
            .dynamic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Arc::new(
            Resolver::new(self.config.node_id, &self.config.raw, &dynamic)
                .topic_settings(&Default::default())
                .0,
        )
    }

    /// The dynamic broker configs as of the last image applied.
    pub fn dynamic_configs(&self) -> Arc<DynamicConfigs> {
        self.dynamic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `min.insync.replicas` of the topic, else the broker's.
    pub fn min_insync_replicas(&self, topic_id: Uuid) -> i32 {
        self.topic_settings(topic_id).min_insync_replicas
    }

    fn log_config(&self, s: &TopicSettings) -> LogConfig {
        LogConfig {
            segment_bytes: s.segment_bytes,
            segment_ms: s.segment_ms,
            index_interval_bytes: s.index_interval_bytes,
            max_batch_bytes: s.max_message_bytes,
            segment_index_bytes: s.segment_index_bytes,
        }
    }

    /// `max.message.bytes` of the topic, else the broker's `message.max.bytes`.
    pub fn max_message_bytes(&self, topic: &TopicImage) -> usize {
        self.topic_settings(topic.id).max_message_bytes
    }

    async fn open_partition(
        &self,
        topic: &TopicImage,
        index: i32,
    ) -> anyhow::Result<Arc<Partition>> {
        let dirs = self.config.log_dirs.clone();
        let (name, id) = (topic.name.clone(), topic.id);
        let dir =
            tokio::task::spawn_blocking(move || partition_dir(&dirs, &name, id, index)).await??;
        let settings = self.topic_settings(topic.id);
        let p = Partition::open(
            &dir,
            PartitionId {
                topic: topic.name.clone(),
                topic_id: topic.id,
                index,
            },
            self.log_config(&settings),
            self.config.node_id,
            flush_policy(&settings),
            self.replicas.signals(),
        )
        .await?;
        tokio::task::spawn_blocking(move || write_partition_metadata(&dir, id)).await??;
        Ok(p)
    }

    /// Flushes and closes every partition (clean shutdown).
    pub async fn shutdown(&self) {
        for p in self.replicas.drain().await {
            if let Err(e) = p.close().await {
                tracing::error!(partition = ?p, error = %e, "closing partition failed");
            }
        }
    }
}

/// `flush.messages` 1 (Runnel's default) is an fsync before every
/// acknowledgement; more is Kafka's flush-later behaviour.
fn flush_policy(s: &TopicSettings) -> FlushPolicy {
    match s.flush_messages {
        0 | 1 => FlushPolicy::BeforeAck,
        n => FlushPolicy::EveryMessages(n),
    }
}

/// Finds a partition's directory in any of `log_dirs`, moving aside one
/// that belongs to an older topic of the same name; a new partition goes
/// to the log dir with the fewest entries (blocking: directory reads).
fn partition_dir(
    log_dirs: &[PathBuf],
    topic: &str,
    id: Uuid,
    index: i32,
) -> anyhow::Result<PathBuf> {
    let name = format!("{topic}-{index}");
    for d in log_dirs {
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
    let least = match log_dirs {
        [] => anyhow::bail!("no log.dirs"),
        // One log dir: nothing to choose, and no directory of thousands of
        // entries to count for every new partition.
        [only] => only,
        many => many
            .iter()
            .min_by_key(|d| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0))
            .expect("not empty"),
    };
    Ok(least.join(name))
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
