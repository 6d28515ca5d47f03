//! Writes the group coordinator's records through the controller: each
//! group's generation when it completes, and the group going Empty, as
//! `StoreGroup` commands in the order the coordinator produced them. Also
//! drops, once a second, the groups this broker no longer coordinates, and
//! every `offsets.retention.check.interval.ms` proposes the expiry of the
//! offsets of the groups it coordinates (the rule itself is the image's,
//! `GroupOffsets::expired_offsets`). It never decides anything about a
//! group's membership: that is this module's parent.

use std::collections::VecDeque;
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
