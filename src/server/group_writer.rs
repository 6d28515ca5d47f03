//! Writes the group coordinator's records through the controller: each
//! group's generation when it completes, and the group going Empty, as
//! `StoreGroup` commands in the order the coordinator produced them. Also
//! drops, once a second, the groups this broker no longer coordinates.
//! It never decides anything about a group: that is `crate::group`.

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
