//! The classic consumer-group coordinator: group membership and rebalances
//! in this broker's memory (`state`), the choice of coordinator for a group
//! (rendezvous hashing over the unfenced brokers), and the ticker that drives
//! session and rebalance timers. Committed offsets are not kept here: they
//! are Raft records in the metadata image.

pub mod state;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::controller::image::MetadataImage;
pub use state::{
    Group, GroupDescription, GroupError, GroupState, JoinReply, JoinRequest, JoinResult,
    MemberInfo, Result, SyncReply, SyncResult,
};

/// How often session and rebalance timers are checked.
const TICK: Duration = Duration::from_millis(100);

/// The broker that coordinates `group`: the unfenced broker with the highest
/// hash of (group, broker id), so that losing a broker moves only its groups.
pub fn coordinator_for(image: &MetadataImage, group: &str) -> Option<i32> {
    image.group_coordinator(group)
}

/// All groups this broker coordinates.
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    initial_delay: Duration,
}

impl Coordinator {
    pub fn new(initial_rebalance_delay: Duration) -> Coordinator {
        Coordinator {
            groups: Mutex::new(HashMap::new()),
            initial_delay: initial_rebalance_delay,
        }
    }

    /// A coordinator with its timer task running (needs a tokio runtime).
    pub fn start(initial_rebalance_delay_ms: u64) -> Arc<Coordinator> {
        let c = Arc::new(Coordinator::new(Duration::from_millis(
            initial_rebalance_delay_ms,
        )));
        let weak = Arc::downgrade(&c);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                match weak.upgrade() {
                    Some(c) => c.tick(Instant::now()),
                    None => return,
                }
            }
        });
        c
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        // A panic while holding the lock leaves plain data behind, no
        // half-done I/O: carry on with it.
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn tick(&self, now: Instant) {
        let mut groups = self.lock();
        for g in groups.values_mut() {
            g.tick(now);
        }
        groups.retain(|_, g| g.state() != GroupState::Dead);
    }

    pub fn join(&self, group: &str, req: JoinRequest) -> oneshot::Receiver<JoinReply> {
        let (tx, rx) = oneshot::channel();
        let mut groups = self.lock();
        let g = groups
            .entry(group.to_string())
            .or_insert_with(|| Group::new(self.initial_delay));
        g.join(req, Instant::now(), tx);
        rx
    }

    pub fn sync(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> oneshot::Receiver<SyncReply> {
        let (tx, rx) = oneshot::channel();
        match self.lock().get_mut(group) {
            Some(g) => g.sync(member_id, generation, assignments, Instant::now(), tx),
            None => {
                let _ = tx.send(Err(GroupError::UnknownMemberId));
            }
        }
        rx
    }

    pub fn heartbeat(&self, group: &str, member_id: &str, generation: i32) -> Result<()> {
        match self.lock().get_mut(group) {
            Some(g) => g.heartbeat(member_id, generation, Instant::now()),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    pub fn leave(&self, group: &str, members: &[(String, Option<String>)]) -> Vec<Result<String>> {
        match self.lock().get_mut(group) {
            Some(g) => g.leave(members, Instant::now()),
            None => members
                .iter()
                .map(|_| Err(GroupError::UnknownMemberId))
                .collect(),
        }
    }

    /// Checks an OffsetCommit against the group's membership. A commit to a
    /// group this broker does not know is a simple commit: fine with
    /// generation -1, ILLEGAL_GENERATION otherwise (as Kafka).
    pub fn validate_commit(&self, group: &str, member_id: &str, generation: i32) -> Result<()> {
        match self.lock().get_mut(group) {
            Some(g) => g.validate_commit(member_id, generation, Instant::now()),
            None if generation < 0 => Ok(()),
            None => Err(GroupError::IllegalGeneration),
        }
    }

    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        self.lock().get(group).map(Group::describe)
    }

    /// (group id, protocol type, state) of every live group.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        self.lock()
            .iter()
            .map(|(id, g)| (id.clone(), g.protocol_type().to_string(), g.state()))
            .collect()
    }

    /// Removes an empty group's membership state. Ok(false): not known here.
    pub fn delete(&self, group: &str) -> Result<bool> {
        let mut groups = self.lock();
        match groups.get_mut(group) {
            Some(g) => {
                g.kill()?;
                groups.remove(group);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Topics a live group's members subscribe to (OffsetDelete refuses them).
    pub fn subscribed_topics(&self, group: &str) -> Vec<String> {
        self.lock()
            .get(group)
            .map(Group::subscribed_topics)
            .unwrap_or_default()
    }
}
