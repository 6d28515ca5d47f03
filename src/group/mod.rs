//! The classic consumer-group coordinator: group membership and rebalances
//! in this broker's memory (`state`), the choice of coordinator for a group
//! (rendezvous hashing over the unfenced brokers the controller admitted as
//! coordinators), and the ticker that drives session and rebalance timers.
//! Committed offsets are not kept here: they are Raft records in the
//! metadata image.

pub mod records;
pub mod state;
pub mod writer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::controller::image::MetadataImage;
use crate::controller::records::StoredGroup;
pub use state::{
    Group, GroupDescription, GroupError, GroupState, JoinReply, JoinRequest, JoinResult,
    MemberInfo, Result, SyncReply, SyncResult,
};

/// How often session and rebalance timers are checked.
const TICK: Duration = Duration::from_millis(100);

/// The broker that coordinates `group`: the admitted, unfenced broker with
/// the highest hash of (group, broker id), so that losing a broker moves
/// only its groups.
pub fn coordinator_for(image: &MetadataImage, group: &str) -> Option<i32> {
    image.group_coordinator(group)
}

/// A group record to propose: (group id, its state).
pub type GroupRecord = (String, StoredGroup);

/// Whether the latest record of a group reached the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stored {
    generation: i32,
    ok: bool,
}

/// All groups this broker coordinates.
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    initial_delay: Duration,
    /// Records for the server's group writer to propose, in order.
    records: mpsc::UnboundedSender<GroupRecord>,
    records_rx: Mutex<Option<mpsc::UnboundedReceiver<GroupRecord>>>,
    /// The outcome of each group's latest proposed record; `stored_seq`
    /// ticks on every change so that waiters look again.
    stored: Mutex<HashMap<String, Stored>>,
    stored_seq: watch::Sender<u64>,
}

impl Coordinator {
    pub fn new(initial_rebalance_delay: Duration) -> Coordinator {
        let (tx, rx) = mpsc::unbounded_channel();
        Coordinator {
            groups: Mutex::new(HashMap::new()),
            initial_delay: initial_rebalance_delay,
            records: tx,
            records_rx: Mutex::new(Some(rx)),
            stored: Mutex::new(HashMap::new()),
            stored_seq: watch::channel(0).0,
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

    /// The stream of group records to propose. The first caller gets it
    /// (the server's group writer); later calls get None.
    pub fn take_records(&self) -> Option<mpsc::UnboundedReceiver<GroupRecord>> {
        self.records_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Queues a record for every group that reached a state worth storing.
    fn queue_unsaved(&self, groups: &mut HashMap<String, Group>) {
        let now_ms = crate::now_ms();
        for (id, g) in groups.iter_mut() {
            if g.take_unsaved() {
                // Nobody listening (a unit test): nothing to store to.
                let _ = self.records.send((id.clone(), g.snapshot(now_ms)));
            }
        }
    }

    /// The group writer reports how a group's record fared.
    pub fn record_stored(&self, group: &str, generation: i32, ok: bool) {
        self.stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group.to_string(), Stored { generation, ok });
        self.stored_seq.send_modify(|n| *n += 1);
    }

    /// Waits until a record of `group` at `generation` or later is in the
    /// image. Err(CoordinatorNotAvailable) if it was refused or is not
    /// there within `timeout`: the members then find the coordinator again
    /// and rejoin, rather than run a generation a successor would not know.
    pub async fn wait_stored(&self, group: &str, generation: i32, timeout: Duration) -> Result<()> {
        let mut seq = self.stored_seq.subscribe();
        let check = || {
            let stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
            match stored.get(group) {
                Some(s) if s.generation >= generation => Some(s.ok),
                _ => None,
            }
        };
        let wait = async {
            loop {
                if let Some(ok) = check() {
                    return ok;
                }
                if seq.changed().await.is_err() {
                    return false;
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(true) => Ok(()),
            _ => Err(GroupError::CoordinatorNotAvailable),
        }
    }

    /// Makes sure this broker holds `group` as its Raft record has it: a
    /// coordinator that just took the group over resumes its generation and
    /// members. A group held here at an older generation than the record
    /// (left from an earlier term as its coordinator) is replaced.
    pub fn load(&self, image: &MetadataImage, group: &str) {
        let Some(stored) = image.groups.get(group).and_then(|g| g.stored.as_ref()) else {
            return;
        };
        let mut groups = self.lock();
        let stale = groups
            .get(group)
            .is_none_or(|g| g.generation() < stored.generation);
        if stale {
            tracing::info!(
                group,
                generation = stored.generation,
                members = stored.members.len(),
                "resuming group from its stored generation"
            );
            groups.insert(
                group.to_string(),
                Group::restore(stored, self.initial_delay, Instant::now()),
            );
            self.stored
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    group.to_string(),
                    Stored {
                        generation: stored.generation,
                        ok: true,
                    },
                );
        }
    }

    /// `load` for every stored group that `me` coordinates in `image`.
    pub fn load_all(&self, image: &MetadataImage, me: i32) {
        for (id, g) in image.groups.iter() {
            if g.stored.is_some() && image.group_coordinator(id) == Some(me) {
                self.load(image, id);
            }
        }
    }

    /// Drops the groups `keep` says this broker no longer coordinates:
    /// their members moved to another coordinator, and if the role comes
    /// back, the group is loaded again from its record.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut dropped = Vec::new();
        self.lock().retain(|id, _| {
            let k = keep(id);
            if !k {
                dropped.push(id.clone());
            }
            k
        });
        if dropped.is_empty() {
            return;
        }
        tracing::info!(groups = ?dropped, "no longer coordinating these groups");
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        for id in &dropped {
            stored.remove(id);
        }
    }

    /// Forgets the Empty groups with nobody about to join that `exists`
    /// says are gone from the image (their offsets expired or were
    /// deleted), so that ListGroups stops listing them.
    pub fn forget_idle(&self, exists: impl Fn(&str) -> bool) {
        let mut groups = self.lock();
        let before = groups.len();
        groups.retain(|id, g| !g.is_idle() || exists(id));
        let gone = before - groups.len();
        if gone > 0 {
            tracing::info!(gone, "forgot empty groups with no offsets left");
        }
    }

    pub fn tick(&self, now: Instant) {
        let mut groups = self.lock();
        for g in groups.values_mut() {
            g.tick(now);
        }
        groups.retain(|_, g| g.state() != GroupState::Dead);
        self.queue_unsaved(&mut groups);
    }

    pub fn join(&self, group: &str, req: JoinRequest) -> oneshot::Receiver<JoinReply> {
        let (tx, rx) = oneshot::channel();
        let mut groups = self.lock();
        let g = groups
            .entry(group.to_string())
            .or_insert_with(|| Group::new(self.initial_delay));
        g.join(req, Instant::now(), tx);
        self.queue_unsaved(&mut groups);
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
        let mut groups = self.lock();
        match groups.get_mut(group) {
            Some(g) => g.sync(member_id, generation, assignments, Instant::now(), tx),
            None => {
                let _ = tx.send(Err(GroupError::UnknownMemberId));
            }
        }
        self.queue_unsaved(&mut groups);
        rx
    }

    pub fn heartbeat(&self, group: &str, member_id: &str, generation: i32) -> Result<()> {
        match self.lock().get_mut(group) {
            Some(g) => g.heartbeat(member_id, generation, Instant::now()),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    pub fn leave(&self, group: &str, members: &[(String, Option<String>)]) -> Vec<Result<String>> {
        let mut groups = self.lock();
        let out = match groups.get_mut(group) {
            Some(g) => g.leave(members, Instant::now()),
            None => members
                .iter()
                .map(|_| Err(GroupError::UnknownMemberId))
                .collect(),
        };
        self.queue_unsaved(&mut groups);
        out
    }

    /// Checks an OffsetCommit against the group's membership. A commit to a
    /// group this broker does not know is a simple commit: fine with
    /// generation -1, ILLEGAL_GENERATION otherwise (as Kafka).
    pub fn validate_commit(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<()> {
        match self.lock().get_mut(group) {
            Some(g) => g.validate_commit(member_id, instance_id, generation, Instant::now()),
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
                self.stored
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(group);
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
