//! Writes the group coordinator's records through the controller: each
//! group's generation when it completes, and the group going Empty, as
//! `StoreGroup` commands in the order the coordinator produced them. Also
//! drops, once a second, the groups this broker no longer coordinates, and
//! every `offsets.retention.check.interval.ms` proposes the expiry of the
//! offsets of the groups it coordinates (the rule itself is the image's,
//! `GroupOffsets::expired_offsets`). It never decides anything about a
//! group's membership: that is this module's parent.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::records::{expire_offsets_command, store_group_command};
use super::{coordinator_for, Coordinator, GroupRecord};
use crate::broker::{Broker, ProposeError};
use crate::config::Config;
use crate::controller::records::MetadataError;
use crate::controller::Controller;

/// How often groups that moved to another coordinator are dropped here.
const SWEEP: Duration = Duration::from_secs(1);

/// What the writer needs of the node.
pub struct Writer {
    me: i32,
    retention_ms: i64,
    check_every: Duration,
    controller: Controller,
    broker: Arc<Broker>,
    groups: Arc<Coordinator>,
}

impl Writer {
    pub fn new(
        config: &Config,
        controller: Controller,
        broker: Arc<Broker>,
        groups: Arc<Coordinator>,
    ) -> Writer {
        Writer {
            me: config.node_id,
            retention_ms: config.offsets_retention_ms,
            check_every: Duration::from_millis(config.offsets_retention_check_interval_ms),
            controller,
            broker,
            groups,
        }
    }

    /// Writes `records` as they come, for as long as the coordinator lives.
    pub async fn run(self, records: mpsc::UnboundedReceiver<GroupRecord>) {
        run(&self, records).await
    }
}

async fn run(ctx: &Writer, mut records: mpsc::UnboundedReceiver<GroupRecord>) {
    let me = ctx.me;
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let check_every = ctx.check_every;
    let mut retention =
        tokio::time::interval_at(tokio::time::Instant::now() + check_every, check_every);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gauges = tokio::time::interval(GAUGES);
    gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lag_series = HashSet::new();
    loop {
        let first = tokio::select! {
            r = records.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = sweep.tick() => {
                let image = ctx.controller.image();
                ctx.groups.retain(|g| coordinator_for(&image, g) == Some(me));
                continue;
            }
            _ = retention.tick() => {
                expire_offsets(ctx).await;
                continue;
            }
            _ = gauges.tick() => {
                publish_gauges(ctx, &mut lag_series).await;
                continue;
            }
        };
        // Only a group's latest state matters: of a burst, store the last
        // record of each group.
        let mut batch: VecDeque<GroupRecord> = VecDeque::from([first]);
        while let Ok(r) = records.try_recv() {
            batch.retain(|(g, _)| *g != r.0);
            batch.push_back(r);
        }
        for (group, record) in batch {
            let generation = record.generation;
            let cmd = store_group_command(&ctx.controller.image(), me, &group, record);
            match ctx.broker.propose(&ctx.controller, cmd).await {
                Ok(_) => ctx.groups.record_stored(&group, generation, true),
                Err(e) => {
                    tracing::warn!(%group, generation, error = %e, "group record not stored");
                    ctx.groups.record_stored(&group, generation, false);
                    if matches!(e, ProposeError::Rejected(MetadataError::NotCoordinator(_))) {
                        // Not ours any more, or behind the stored
                        // generation: forget it, and load it again if the
                        // role comes back.
                        ctx.groups.retain(|g| g != group);
                    }
                }
            }
        }
    }
}

/// How often the group gauges are refreshed.
const GAUGES: Duration = Duration::from_secs(5);

/// `runnel_groups{state}` for the groups coordinated here, and
/// `runnel_group_lag_records{group,topic,partition}` for the partitions
/// this broker leads: their high watermark minus each group's committed
/// offset. A series this broker no longer reports (it stopped leading the
/// partition, the offsets went) drops to 0, so that summing by group over
/// the brokers stays right.
async fn publish_gauges(ctx: &Writer, published: &mut HashSet<(String, String, i32)>) {
    let mut by_state: BTreeMap<&'static str, u64> = [
        "Empty",
        "PreparingRebalance",
        "CompletingRebalance",
        "Stable",
        "Dead",
    ]
    .into_iter()
    .map(|s| (s, 0))
    .collect();
    for (_, _, state) in ctx.groups.list() {
        *by_state.entry(state.name()).or_default() += 1;
    }
    for (state, n) in by_state {
        metrics::gauge!("runnel_groups", "state" => state).set(n as f64);
    }

    let leaders: HashMap<(String, i32), i64> = ctx
        .broker
        .leader_partitions()
        .await
        .iter()
        .map(|p| ((p.topic.clone(), p.index), p.high_watermark()))
        .collect();
    let image = ctx.controller.image();
    let mut now = HashSet::new();
    for (group, offsets) in image.groups.iter() {
        for (topic, parts) in &offsets.offsets {
            for (partition, committed) in parts {
                let Some(hw) = leaders.get(&(topic.clone(), *partition)) else {
                    continue;
                };
                let lag = (hw - committed.offset).max(0);
                let key = (group.clone(), topic.clone(), *partition);
                lag_gauge(&key).set(lag as f64);
                now.insert(key);
            }
        }
    }
    for gone in published.difference(&now) {
        lag_gauge(gone).set(0.0);
    }
    *published = now;
}

fn lag_gauge((group, topic, partition): &(String, String, i32)) -> metrics::Gauge {
    metrics::gauge!("runnel_group_lag_records",
        "group" => group.clone(),
        "topic" => topic.clone(),
        "partition" => partition.to_string())
}

/// Proposes the expiry of what has expired in the groups this broker
/// coordinates, then forgets the idle groups that no longer exist.
async fn expire_offsets(ctx: &Writer) {
    let me = ctx.me;
    let retention_ms = ctx.retention_ms;
    let now_ms = crate::now_ms();
    let image = ctx.controller.image();
    // Hold every stored group this broker coordinates, so that members of a
    // stored generation that nobody asks about (all gone while the cluster
    // was down, say) time out, the group becomes Empty and can expire.
    ctx.groups.load_all(&image, me);
    let groups: Vec<String> = image
        .groups
        .iter()
        .filter(|(id, g)| {
            coordinator_for(&image, id) == Some(me)
                && (g.is_gone() || !g.expired_offsets(now_ms, retention_ms).is_empty())
        })
        .map(|(id, _)| id.clone())
        .collect();
    if !groups.is_empty() {
        tracing::info!(?groups, retention_ms, "expiring committed offsets");
        let cmd = expire_offsets_command(&image, me, groups, now_ms, retention_ms);
        if let Err(e) = ctx.broker.propose(&ctx.controller, cmd).await {
            tracing::warn!(error = %e, "offset expiry not applied");
        }
    }
    let image = ctx.controller.image();
    ctx.groups.forget_idle(|g| image.groups.contains_key(g));
}
