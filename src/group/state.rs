//! One classic consumer group's state machine (Empty, PreparingRebalance,
//! CompletingRebalance, Stable, Dead), as in Kafka's `GroupMetadata`.
//!
//! Every transition takes the current time as an argument, so the machine
//! is driven by tests with a fake clock and by the coordinator's ticker with
//! the real one. Requests that must wait (JoinGroup until the rebalance
//! completes, SyncGroup until the leader assigns) leave a oneshot sender in
//! their member; the transition that unblocks them answers through it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::controller::records::{StoredGroup, StoredMember};
pub use crate::protocol::consumer_protocol::parse_subscription;

/// Why a group request failed; the server maps these to Kafka error codes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("rebalance in progress")]
    RebalanceInProgress,
    /// KIP-394: rejoin with this member id.
    #[error("member id required: rejoin as {0}")]
    MemberIdRequired(String),
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    #[error("group is not empty")]
    NonEmptyGroup,
    #[error("group id not found")]
    GroupIdNotFound,
    #[error("static member fenced by a newer instance")]
    FencedInstanceId,
    #[error("group is subscribed to the topic")]
    GroupSubscribedToTopic,
}

pub type Result<T, E = GroupError> = std::result::Result<T, E>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The names Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup request, decoded.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ (KIP-394): a new member first gets its id, then rejoins.
    pub require_known_member_id: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResult {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members (with their metadata) to assign.
    pub members: Vec<MemberInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResult {
    pub protocol_type: String,
    pub protocol_name: String,
    pub assignment: Bytes,
}

pub type JoinReply = Result<JoinResult>;
pub type SyncReply = Result<SyncResult>;

/// One member as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Clone, Debug)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join_waiter: Option<oneshot::Sender<JoinReply>>,
    sync_waiter: Option<oneshot::Sender<SyncReply>>,
}

impl Member {
    fn awaiting_join(&self) -> bool {
        self.join_waiter.as_ref().is_some_and(|w| !w.is_closed())
    }
    fn awaiting_sync(&self) -> bool {
        self.sync_waiter.as_ref().is_some_and(|w| !w.is_closed())
    }
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// KIP-394 ids handed out and not yet used, with their expiry.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// While set, a new group's first rebalance waits for more members.
    initial_delay_until: Option<Instant>,
    initial_delay: Duration,
    /// Set when the group reached a state worth a Raft record (a completed
    /// generation, Empty, a static member's new id); the coordinator takes
    /// it with `take_unsaved`.
    unsaved: bool,
}

impl Group {
    pub fn new(initial_delay: Duration) -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            initial_delay,
            unsaved: false,
        }
    }

    /// The group as a new coordinator resumes it from its Raft record:
    /// Stable with the stored members and their assignments (each with a
    /// fresh session from `now`), or Empty at the stored generation.
    pub fn restore(stored: &StoredGroup, initial_delay: Duration, now: Instant) -> Group {
        let mut g = Group::new(initial_delay);
        g.generation = stored.generation;
        g.protocol_type = (!stored.protocol_type.is_empty()).then(|| stored.protocol_type.clone());
        if stored.members.is_empty() {
            return g;
        }
        for m in &stored.members {
            g.members.insert(
                m.member_id.clone(),
                Member {
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout: Duration::from_millis(m.session_timeout_ms),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(n, md)| (n.clone(), Bytes::from(md.clone())))
                        .collect(),
                    assignment: Bytes::from(m.assignment.clone()),
                    last_seen: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        g.protocol = Some(stored.protocol.clone());
        g.leader = Some(stored.leader.clone());
        g.state = GroupState::Stable;
        g
    }

    /// What to store in the group's Raft record now; `written_at_ms` is the
    /// caller's wall clock.
    pub fn snapshot(&self, written_at_ms: i64) -> StoredGroup {
        StoredGroup {
            generation: self.generation,
            protocol_type: self.protocol_type().to_string(),
            protocol: self.protocol.clone().unwrap_or_default(),
            leader: self.leader.clone().unwrap_or_default(),
            members: self
                .members
                .iter()
                .map(|(id, m)| StoredMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as u64,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(n, md)| (n.clone(), md.to_vec()))
                        .collect(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
            written_at_ms,
        }
    }

    /// Empty, with no member about to join with an id handed out.
    pub fn is_idle(&self) -> bool {
        self.state == GroupState::Empty && self.members.is_empty() && self.pending.is_empty()
    }

    /// True once after the group reached a state worth storing.
    pub fn take_unsaved(&mut self) -> bool {
        std::mem::take(&mut self.unsaved)
    }

    pub fn state(&self) -> GroupState {
        self.state
    }
    pub fn generation(&self) -> i32 {
        self.generation
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
    pub fn protocol_type(&self) -> &str {
        self.protocol_type.as_deref().unwrap_or("")
    }

    /// Protocols every current member except `except` supports.
    fn common_protocols(&self, except: &str) -> Option<Vec<String>> {
        let mut it = self.members.iter().filter(|(id, _)| id.as_str() != except);
        let (_, first) = it.next()?;
        let mut common: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for (_, m) in it {
            common.retain(|p| m.protocols.iter().any(|(n, _)| n == p));
        }
        Some(common)
    }

    /// JoinGroup. The answer goes through `tx`, now or when the rebalance
    /// completes.
    pub fn join(&mut self, req: JoinRequest, now: Instant, tx: oneshot::Sender<JoinReply>) {
        if let Err(e) = self.try_join(req, now, tx) {
            // try_join only fails before it stored the sender.
            let (tx, e) = *e;
            let _ = tx.send(Err(e));
        }
    }

    #[allow(clippy::type_complexity)]
    fn try_join(
        &mut self,
        req: JoinRequest,
        now: Instant,
        tx: oneshot::Sender<JoinReply>,
    ) -> Result<(), Box<(oneshot::Sender<JoinReply>, GroupError)>> {
        let fail = |tx, e| Err(Box::new((tx, e)));
        if let Err(e) = self.check_join_protocol(&req) {
            return fail(tx, e);
        }
        let mut id = req.member_id.clone();
        if id.is_empty() {
            id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if let Some(inst) = &req.instance_id {
                if let Some(m) = self.replace_static_member(inst, &id, &req) {
                    self.rejoin_keeping_assignment(id, m, &req, now, tx);
                    return Ok(());
                }
            } else if req.require_known_member_id {
                self.pending.insert(id.clone(), now + req.session_timeout);
                return fail(tx, GroupError::MemberIdRequired(id));
            }
        } else if let Err(e) = self.accept_known_id(&id, &req) {
            return fail(tx, e);
        }
        self.add_joining_member(id, req, now, tx);
        Ok(())
    }

    /// Refuses a join to a dead group, or one whose protocols the group
    /// cannot use.
    fn check_join_protocol(&self, req: &JoinRequest) -> Result<()> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if !self.members.is_empty() {
            if self.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
                return Err(GroupError::InconsistentGroupProtocol);
            }
            if let Some(common) = self.common_protocols(&req.member_id) {
                if !req.protocols.iter().any(|(n, _)| common.contains(n)) {
                    return Err(GroupError::InconsistentGroupProtocol);
                }
            }
        }
        Ok(())
    }

    /// KIP-345: a static member rejoining under a new id replaces its old
    /// incarnation, which is fenced. Returns the old incarnation if it keeps
    /// its assignment; otherwise a replaced leader's role passes to `new_id`.
    fn replace_static_member(
        &mut self,
        inst: &str,
        new_id: &str,
        req: &JoinRequest,
    ) -> Option<Member> {
        let old = self
            .members
            .iter()
            .find(|(_, m)| m.instance_id.as_deref() == Some(inst))
            .map(|(k, _)| k.clone())?;
        if let Some(mut m) = self.members.remove(&old) {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(Err(GroupError::FencedInstanceId));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(GroupError::FencedInstanceId));
            }
            let is_leader = self.leader.as_deref() == Some(old.as_str());
            if self.state == GroupState::Stable && !is_leader && m.protocols == req.protocols {
                // KIP-345: a static follower back with the same subscription
                // keeps its assignment; nobody rebalances. (A returning
                // leader rebalances, so that it learns the members again.)
                return Some(m);
            }
        }
        if self.leader.as_deref() == Some(old.as_str()) {
            self.leader = Some(new_id.to_string());
        }
        None
    }

    /// Puts a static follower's old incarnation `m` back under its new `id`
    /// and answers its join at once, in the current generation.
    fn rejoin_keeping_assignment(
        &mut self,
        id: String,
        mut m: Member,
        req: &JoinRequest,
        now: Instant,
        tx: oneshot::Sender<JoinReply>,
    ) {
        m.last_seen = now;
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        self.members.insert(id.clone(), m);
        self.unsaved = true;
        let _ = tx.send(Ok(JoinResult {
            generation: self.generation,
            protocol_type: self.protocol_type().to_string(),
            protocol_name: self.protocol.clone().unwrap_or_default(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: id,
            members: Vec::new(),
        }));
    }

    /// A join with a member id: the id must be a member's or one handed out
    /// (which is now used up), and a static member must keep its instance id.
    fn accept_known_id(&mut self, id: &str, req: &JoinRequest) -> Result<()> {
        if !self.members.contains_key(id) && self.pending.remove(id).is_none() {
            return Err(GroupError::UnknownMemberId);
        }
        if let (Some(inst), Some(m)) = (&req.instance_id, self.members.get(id)) {
            if m.instance_id.as_ref() != Some(inst) {
                return Err(GroupError::FencedInstanceId);
            }
        }
        Ok(())
    }

    /// Stores the joining member with its waiting sender, and starts (or
    /// extends) the rebalance that will answer it.
    fn add_joining_member(
        &mut self,
        id: String,
        req: JoinRequest,
        now: Instant,
        tx: oneshot::Sender<JoinReply>,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        let new = !self.members.contains_key(&id);
        let member = Member {
            instance_id: req.instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout: req.session_timeout,
            rebalance_timeout: req.rebalance_timeout,
            protocols: req.protocols,
            assignment: Bytes::new(),
            last_seen: now,
            join_waiter: Some(tx),
            sync_waiter: None,
        };
        self.members.insert(id, member);
        match self.state {
            GroupState::PreparingRebalance => {
                if new {
                    if let (Some(until), Some(deadline)) =
                        (self.initial_delay_until, self.rebalance_deadline)
                    {
                        // Kafka's InitialDelayedJoin: every newcomer extends
                        // the wait, up to the rebalance timeout.
                        self.initial_delay_until =
                            Some((now + self.initial_delay).min(deadline).max(until));
                    }
                }
            }
            _ => self.prepare_rebalance(now),
        }
        self.maybe_complete_join(now);
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(Err(GroupError::RebalanceInProgress));
                }
            }
        }
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        let deadline = now + timeout;
        self.rebalance_deadline = Some(deadline);
        self.initial_delay_until = (was_empty && !self.initial_delay.is_zero())
            .then(|| (now + self.initial_delay).min(deadline));
    }

    /// Ends the join phase once every member rejoined (and a new group's
    /// initial delay passed), or at the rebalance deadline, dropping the
    /// members that did not rejoin.
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(Member::awaiting_join);
        let delay_over = self.initial_delay_until.is_none_or(|t| now >= t);
        let deadline_over = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !(all_joined && delay_over || deadline_over) {
            return;
        }
        self.members.retain(|_, m| m.awaiting_join());
        self.generation += 1;
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        if self
            .leader
            .as_ref()
            .is_some_and(|l| !self.members.contains_key(l))
        {
            self.leader = None;
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            self.unsaved = true;
            return;
        }
        let protocol = self.select_protocol();
        let leader = match &self.leader {
            Some(l) => l.clone(),
            None => self.members.keys().next().cloned().unwrap_or_default(),
        };
        self.leader = Some(leader.clone());
        self.protocol = Some(protocol.clone());
        self.state = GroupState::CompletingRebalance;
        let protocol_type = self.protocol_type().to_string();
        let all: Vec<MemberInfo> = self
            .members
            .iter()
            .map(|(id, m)| MemberInfo {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect();
        for (id, m) in self.members.iter_mut() {
            m.last_seen = now;
            m.assignment = Bytes::new();
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(Ok(JoinResult {
                    generation: self.generation,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                }));
            }
        }
    }

    /// The protocol all members support that most members prefer; ties go
    /// to the first member's order.
    fn select_protocol(&self) -> String {
        let common = self.common_protocols("").unwrap_or_default();
        let mut votes: Vec<(String, usize)> = common.iter().map(|p| (p.clone(), 0)).collect();
        for m in self.members.values() {
            if let Some((first, _)) = m.protocols.iter().find(|(n, _)| common.contains(n)) {
                if let Some(v) = votes.iter_mut().find(|(p, _)| p == first) {
                    v.1 += 1;
                }
            }
        }
        let mut best: Option<(String, usize)> = None;
        for (p, n) in votes {
            if best.as_ref().is_none_or(|(_, b)| n > *b) {
                best = Some((p, n));
            }
        }
        best.map(|(p, _)| p).unwrap_or_default()
    }

    fn check_member(&self, member_id: &str, generation: i32) -> Result<()> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    /// SyncGroup. `assignments` is what the leader sends (others send none).
    pub fn sync(
        &mut self,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
        tx: oneshot::Sender<SyncReply>,
    ) {
        if let Err(e) = self.check_member(member_id, generation) {
            let _ = tx.send(Err(e));
            return;
        }
        let protocol_type = self.protocol_type().to_string();
        let protocol_name = self.protocol.clone().unwrap_or_default();
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                let _ = tx.send(Err(GroupError::UnknownMemberId));
            }
            GroupState::PreparingRebalance => {
                let _ = tx.send(Err(GroupError::RebalanceInProgress));
            }
            GroupState::Stable => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.last_seen = now;
                    let _ = tx.send(Ok(SyncResult {
                        protocol_type,
                        protocol_name,
                        assignment: m.assignment.clone(),
                    }));
                }
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.last_seen = now;
                    m.sync_waiter = Some(tx);
                }
                if self.leader.as_deref() != Some(member_id) {
                    return;
                }
                let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                self.state = GroupState::Stable;
                self.unsaved = true;
                for m in self.members.values_mut() {
                    m.assignment = Bytes::new();
                }
                for (id, m) in self.members.iter_mut() {
                    m.assignment = given.remove(id).unwrap_or_default();
                    if let Some(w) = m.sync_waiter.take() {
                        let _ = w.send(Ok(SyncResult {
                            protocol_type: protocol_type.clone(),
                            protocol_name: protocol_name.clone(),
                            assignment: m.assignment.clone(),
                        }));
                    }
                }
            }
        }
    }

    pub fn heartbeat(&mut self, member_id: &str, generation: i32, now: Instant) -> Result<()> {
        self.check_member(member_id, generation)?;
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen = now;
        }
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// LeaveGroup for each (member id, instance id); an empty member id
    /// with an instance id names a static member (v3+).
    pub fn leave(
        &mut self,
        members: &[(String, Option<String>)],
        now: Instant,
    ) -> Vec<Result<String>> {
        let mut out = Vec::with_capacity(members.len());
        let mut removed = false;
        for (id, inst) in members {
            let found = if id.is_empty() {
                self.members
                    .iter()
                    .find(|(_, m)| inst.is_some() && m.instance_id == *inst)
                    .map(|(k, _)| k.clone())
            } else {
                match (self.members.get(id), inst) {
                    (Some(m), Some(i)) if m.instance_id.as_ref() != Some(i) => {
                        out.push(Err(GroupError::FencedInstanceId));
                        continue;
                    }
                    (Some(_), _) => Some(id.clone()),
                    (None, _) => None,
                }
            };
            match found.and_then(|k| self.members.remove(&k).map(|m| (k, m))) {
                Some((k, _)) => {
                    removed = true;
                    out.push(Ok(k));
                }
                None => out.push(Err(GroupError::UnknownMemberId)),
            }
        }
        if removed {
            self.members_changed(now);
        }
        out
    }

    fn members_changed(&mut self, now: Instant) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now),
            GroupState::Empty if !self.members.is_empty() => self.prepare_rebalance(now),
            _ => {}
        }
        self.maybe_complete_join(now);
    }

    /// Timers: expires silent members and unused KIP-394 ids, and ends a
    /// join phase whose deadline passed. Members blocked in a JoinGroup or
    /// SyncGroup stay alive, as in Kafka.
    pub fn tick(&mut self, now: Instant) {
        self.pending.retain(|_, exp| *exp > now);
        let before = self.members.len();
        self.members.retain(|_, m| {
            m.awaiting_join() || m.awaiting_sync() || now < m.last_seen + m.session_timeout
        });
        if self.members.len() != before {
            tracing::info!(
                expired = before - self.members.len(),
                "group members' sessions expired"
            );
            self.members_changed(now);
        } else {
            self.maybe_complete_join(now);
        }
    }

    /// Checks an OffsetCommit as Kafka's `ClassicGroup.validateOffsetCommit`
    /// does: with no generation (-1) an Empty group takes any commit (admin
    /// tools, `assign()` consumers); otherwise the committer must be a
    /// member (named by its static `group.instance.id` if it gives one) of
    /// the current generation. A non-empty group refuses commits that name
    /// no member.
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<()> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.validate_member(member_id, instance_id)?;
            if generation != self.generation {
                return Err(GroupError::IllegalGeneration);
            }
        } else {
            return Err(GroupError::UnknownMemberId);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen = now;
        }
        Ok(())
    }

    /// Kafka's `validateMember`: a static member's instance id must map to
    /// this member id (else it is an older incarnation: FENCED_INSTANCE_ID);
    /// a dynamic member must be in the group.
    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<()> {
        match instance_id {
            Some(inst) => {
                let owner = self
                    .members
                    .iter()
                    .find(|(_, m)| m.instance_id.as_deref() == Some(inst))
                    .map(|(id, _)| id.as_str());
                match owner {
                    None => Err(GroupError::UnknownMemberId),
                    Some(id) if id != member_id => Err(GroupError::FencedInstanceId),
                    Some(_) => Ok(()),
                }
            }
            None if self.members.contains_key(member_id) => Ok(()),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    /// Topics the members subscribed to, from the consumer protocol's
    /// subscription metadata (version i16, then an array of strings).
    pub fn subscribed_topics(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in self.members.values() {
            let Some(proto) = &self.protocol else {
                continue;
            };
            let md = m.metadata_for(proto);
            out.extend(parse_subscription(&md).unwrap_or_default());
        }
        out
    }

    pub fn describe(&self) -> GroupDescription {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupDescription {
            state: self.state,
            protocol_type: self.protocol_type().to_string(),
            protocol: protocol.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// DeleteGroups: only an empty group can go.
    pub fn kill(&mut self) -> Result<()> {
        if !self.members.is_empty() {
            return Err(GroupError::NonEmptyGroup);
        }
        self.state = GroupState::Dead;
        Ok(())
    }
}
