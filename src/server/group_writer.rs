//! Writes the group coordinator's records through the controller: each
//! group's generation when it completes, and the group going Empty, as
//! `StoreGroup` commands in the order the coordinator produced them. Also
//! drops, once a second, the groups this broker no longer coordinates, and
//! every `offsets.retention.check.interval.ms` proposes the expiry of the
//! offsets of the groups it coordinates (the rule itself is the image's,
//! `GroupOffsets::expired_offsets`). It never decides anything about a
//! group's membership: that is `crate::group`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use tokio::sync::mpsc;

use super::handlers::propose;
use super::Ctx;
use crate::controller::records::MetadataCommand;
use crate::group::{coordinator_for, GroupRecord};

/// How often groups that moved to another coordinator are dropped here.
const SWEEP: Duration = Duration::from_secs(1);

pub async fn run(ctx: Arc<Ctx>, mut records: mpsc::UnboundedReceiver<GroupRecord>) {
    let me = ctx.config.node_id;
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let check_every = Duration::from_millis(ctx.config.offsets_retention_check_interval_ms);
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
                expire_offsets(&ctx).await;
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
            let image = ctx.controller.image();
            let cmd = MetadataCommand::StoreGroup {
                group: group.clone(),
                coordinator: me,
                coordinator_epoch: image.brokers.get(&me).map_or(-1, |b| b.epoch),
                record,
            };
            match propose(&ctx, cmd).await {
                Ok(_) => ctx.groups.record_stored(&group, generation, true),
                Err((code, msg)) => {
                    tracing::warn!(%group, generation, "group record not stored: {msg} ({code:?})");
                    ctx.groups.record_stored(&group, generation, false);
                    if code == ResponseError::NotCoordinator {
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
async fn expire_offsets(ctx: &Ctx) {
    let me = ctx.config.node_id;
    let retention_ms = ctx.config.offsets_retention_ms;
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
        let cmd = MetadataCommand::ExpireOffsets {
            groups,
            coordinator: me,
            coordinator_epoch: image.brokers.get(&me).map_or(-1, |b| b.epoch),
            now_ms,
            retention_ms,
        };
        if let Err((code, msg)) = propose(ctx, cmd).await {
            tracing::warn!("offset expiry not applied: {msg} ({code:?})");
        }
    }
    let image = ctx.controller.image();
    ctx.groups.forget_idle(|g| image.groups.contains_key(g));
}
