//! The leader's rules for the high watermark (HW) and ISR membership, as
//! pure functions over plain values: each follower's progress, the offsets
//! replicas hold durably, and the current time passed in as an argument.
//! Nothing here reads a clock, a log or a lock, so every rule is
//! table-tested (`tests` below); `Partition` feeds it and acts on what it
//! decides.
//!
//! Offsets are "end offsets": a follower that fetches from 7 holds 0..7.
//! A replica counts only what it has fsynced (its *durable* offset).
//!
//! * **HW** = the lowest durable offset among the leader and every ISR
//!   member, counting also a follower whose addition to the ISR is pending
//!   at the controller, and a *candidate* (below) for a moment. Leader
//!   durable 9, ISR followers durable 6 and 7 ⇒ HW 6. A follower of the ISR
//!   that has not fetched in this leader epoch is unknown ⇒ no HW yet.
//! * **Joining the ISR** (Kafka's rule): a follower outside the ISR whose
//!   durable offset reached the HW (and the start of this leader's epoch)
//!   is proposed for the ISR. HW 10, follower durable 10 ⇒ proposed.
//! * **Candidates**: under continuous load the HW, moved by the ISR's
//!   fsyncs, can stay just ahead of a catching-up follower's durable
//!   offset forever. A follower whose fetch offset reached the HW, or that
//!   holds all the leader had at its previous fetch, is a candidate: for
//!   [`CANDIDATE_HOLD`] the HW waits for its durable offset too, so that
//!   its next fsync makes it in sync. HW 10, follower fetches from 10 but
//!   has fsynced 8 ⇒ candidate, HW held at 8 until it reports 10 ⇒ joins.
//! * **Leaving the ISR**: a follower that has not been caught up (fetched
//!   up to the leader's end, or held all the leader had at its previous
//!   fetch) for `replica.lag.time.max.ms` leaves it.
//! * **A failing follower**: one that reports its last append or fsync
//!   failed (its disk is full or broken) is never caught up, a candidate
//!   or proposed, and leaves the ISR at the next check instead of after
//!   `replica.lag.time.max.ms`, as a Kafka replica on a failed log
//!   directory goes offline and leaves it.
//! * One ISR change at a time: a proposal is sent again only after
//!   [`PROPOSAL_RETRY`] without the controller's answer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a catching-up follower may hold the HW back.
pub const CANDIDATE_HOLD: Duration = Duration::from_millis(500);

/// An unanswered ISR proposal is sent again after this.
pub const PROPOSAL_RETRY: Duration = Duration::from_secs(2);

/// The leader's view of one follower (Kafka's ReplicaState).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The offset it fetches from, fsynced below; -1 until it fetched in
    /// this leader epoch.
    pub leo: i64,
    pub last_fetch: Instant,
    /// The leader's log end at its last fetch; -1 before one.
    pub last_fetch_leader_leo: i64,
    pub last_caught_up: Instant,
    /// Its last fetch said its storage fails.
    pub storage_failed: bool,
}

impl Progress {
    /// A follower not heard from yet, counted as caught up at `now` so
    /// that it gets `replica.lag.time.max.ms` to show up.
    pub fn unknown(now: Instant) -> Progress {
        Progress {
            leo: -1,
            last_fetch: now,
            last_fetch_leader_leo: -1,
            last_caught_up: now,
            storage_failed: false,
        }
    }
}

/// One fetch of a follower, as the leader sees it.
#[derive(Clone, Copy, Debug)]
pub struct FollowerFetch {
    pub follower: i32,
    /// Where it reads from: its log end offset.
    pub fetch_offset: i64,
    /// What it has fsynced.
    pub durable_offset: i64,
    /// Its last append or fsync of the partition failed.
    pub storage_error: bool,
}

/// The replica sets of a partition and, as leader, each follower's
/// progress and the ISR change in flight.
#[derive(Clone, Debug)]
pub struct IsrState {
    /// This broker's id.
    pub me: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub followers: HashMap<i32, Progress>,
    /// The log end offset when this replica became leader.
    pub epoch_start_offset: i64,
    /// An ISR change sent to the controller and not yet seen committed.
    pub pending: Option<(Vec<i32>, Instant)>,
    /// When the controller last refused an ISR change: none is proposed
    /// again for [`PROPOSAL_RETRY`], so that a follower it will not take
    /// (fenced, say) is not proposed on every fetch.
    pub refused: Option<Instant>,
    /// A follower outside the ISR that holds the HW for a moment (see the
    /// module comment).
    pub candidate: Option<(i32, Instant)>,
}

/// The fetch came from a broker that is not a follower of this partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotAFollower;

impl IsrState {
    pub fn new(me: i32) -> IsrState {
        IsrState {
            me,
            replicas: Vec::new(),
            isr: Vec::new(),
            followers: HashMap::new(),
            epoch_start_offset: 0,
            pending: None,
            refused: None,
            candidate: None,
        }
    }

    /// A new leader epoch starting at `end_offset`: every follower of
    /// `replicas` is unknown again, nothing is pending.
    pub fn begin_epoch(&mut self, replicas: &[i32], end_offset: i64, now: Instant) {
        self.epoch_start_offset = end_offset;
        self.pending = None;
        self.refused = None;
        self.candidate = None;
        self.followers = replicas
            .iter()
            .filter(|&&r| r != self.me)
            .map(|&r| (r, Progress::unknown(now)))
            .collect();
    }

    /// The controller's replicas and ISR of a new partition epoch: it
    /// answers any pending proposal; new followers start unknown, removed
    /// ones are forgotten.
    pub fn set_replica_sets(&mut self, replicas: &[i32], isr: &[i32], now: Instant) {
        self.replicas = replicas.to_vec();
        self.isr = isr.to_vec();
        self.pending = None;
        self.refused = None;
        for &r in replicas {
            if r != self.me {
                self.followers
                    .entry(r)
                    .or_insert_with(|| Progress::unknown(now));
            }
        }
        self.followers.retain(|r, _| replicas.contains(r));
    }

    /// The HW the ISR allows: the lowest of `leader_durable` and the
    /// durable offsets of the ISR's followers, the pending addition and a
    /// candidate held less than [`CANDIDATE_HOLD`] ago. `None` while one of
    /// them has not fetched in this epoch.
    ///
    /// Leader 9, ISR {leader, 2: 6, 3: 7} ⇒ 6. Leader 9, ISR {leader},
    /// pending {leader, 2} with 2 at 4 ⇒ 4 (the controller must never
    /// commit an ISR member that lacks what was acknowledged).
    pub fn high_watermark(&self, leader_durable: i64, now: Instant) -> Option<i64> {
        let pending = self.pending.as_ref().map_or(&[][..], |(isr, _)| isr);
        let candidate = self
            .candidate
            .filter(|(_, at)| now.saturating_duration_since(*at) < CANDIDATE_HOLD)
            .map(|(id, _)| id);
        let mut hw = leader_durable;
        for r in self.isr.iter().chain(pending).chain(candidate.iter()) {
            if *r == self.me {
                continue;
            }
            let leo = self.followers.get(r).map_or(-1, |f| f.leo);
            if leo < 0 {
                return None;
            }
            hw = hw.min(leo);
        }
        Some(hw)
    }

    /// Records a follower's fetch while the leader's log ends at
    /// `leader_end` and the HW is `hw`. Returns the ISR to propose when the
    /// follower has earned its place in it; may make it a candidate.
    pub fn record_fetch(
        &mut self,
        fetch: FollowerFetch,
        leader_end: i64,
        hw: i64,
        now: Instant,
    ) -> Result<Option<Vec<i32>>, NotAFollower> {
        let FollowerFetch {
            follower,
            fetch_offset,
            durable_offset,
            storage_error,
        } = fetch;
        let f = self.followers.get_mut(&follower).ok_or(NotAFollower)?;
        f.storage_failed = storage_error;
        if storage_error {
            // Its offsets still count towards the HW while it is in the
            // ISR (the shrink must be committed first), but it catches up
            // to nothing and joins nothing.
            f.leo = durable_offset.min(fetch_offset);
            f.last_fetch = now;
            f.last_fetch_leader_leo = -1;
            if self.candidate.is_some_and(|(id, _)| id == follower) {
                self.candidate = None;
            }
            return Ok(None);
        }
        // It holds everything the leader had when it fetched last.
        let caught_up_before =
            f.last_fetch_leader_leo >= 0 && fetch_offset >= f.last_fetch_leader_leo;
        if fetch_offset >= leader_end {
            f.last_caught_up = f.last_caught_up.max(now);
        } else if caught_up_before {
            f.last_caught_up = f.last_caught_up.max(f.last_fetch);
        }
        // Only what the follower has on disk counts, and never more than
        // it fetched from here in this epoch.
        let durable = durable_offset.min(fetch_offset);
        f.leo = durable;
        f.last_fetch = now;
        f.last_fetch_leader_leo = leader_end;
        let in_sync = durable >= hw && durable >= self.epoch_start_offset;
        let wanted = !self.isr.contains(&follower) && self.replicas.contains(&follower);
        let may_propose = self.may_propose(now);
        if in_sync && wanted && may_propose {
            let mut isr = self.isr.clone();
            isr.push(follower);
            self.pending = Some((isr.clone(), now));
            self.candidate = None;
            return Ok(Some(isr));
        }
        // A follower whose log end has reached the HW (Kafka's test for
        // joining), or that holds all the leader had at its previous fetch
        // (so it is a fetch behind at most), has what was acknowledged,
        // but only in its page cache: hold the HW at its durable offset for
        // a moment, so that a fetch or two later, once its fsync is done,
        // it finds itself in sync.
        let free = self.candidate.is_none_or(|(id, at)| {
            id == follower || now.saturating_duration_since(at) >= CANDIDATE_HOLD
        });
        if wanted
            && (fetch_offset >= hw || caught_up_before)
            && fetch_offset >= self.epoch_start_offset
            && free
        {
            self.candidate = Some((follower, now));
        }
        Ok(None)
    }

    /// The ISR without the followers that have not caught up within
    /// `max_lag`, as (lagging, new ISR), if any fell behind and no change
    /// is in flight. Marks the shrink pending: until it is committed the
    /// HW still waits for the old ISR, which is the safe side.
    pub fn shrink(&mut self, max_lag: Duration, now: Instant) -> Option<(Vec<i32>, Vec<i32>)> {
        if !self.may_propose(now) {
            return None;
        }
        let lagging: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| *r != self.me)
            .filter(|r| {
                self.followers.get(r).is_none_or(|f| {
                    f.storage_failed || now.saturating_duration_since(f.last_caught_up) > max_lag
                })
            })
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let isr: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| !lagging.contains(r))
            .collect();
        self.pending = Some((Vec::new(), now));
        Some((lagging, isr))
    }

    /// Whether a new ISR change may be proposed: none is in flight (or
    /// the one in flight went unanswered for [`PROPOSAL_RETRY`]), and none
    /// was refused in the last [`PROPOSAL_RETRY`].
    fn may_propose(&self, now: Instant) -> bool {
        let waited = |at: &Instant| now.saturating_duration_since(*at) > PROPOSAL_RETRY;
        self.pending.as_ref().is_none_or(|(_, at)| waited(at))
            && self.refused.is_none_or(|at| waited(&at))
    }

    /// The controller refused the change to `isr`. If it is the one
    /// pending, it is forgotten: a refused addition no longer holds the HW
    /// (it never will be committed, since the proposal named this
    /// partition epoch), and nothing is proposed for a while. Returns
    /// whether it was the pending change.
    ///
    /// ISR {leader}, pending {leader, 2} with 2 at 4, leader at 9: HW 4;
    /// refused ⇒ HW 9.
    pub fn refused(&mut self, isr: &[i32], now: Instant) -> bool {
        let pending = self.pending.as_ref().map(|(p, _)| p.as_slice());
        let shrink = pending == Some(&[][..]) && isr.len() < self.isr.len();
        if pending != Some(isr) && !shrink {
            return false;
        }
        self.pending = None;
        self.refused = Some(now);
        true
    }

    /// An addition the controller has not answered for [`PROPOSAL_RETRY`]
    /// (the call failed, or was lost with a controller), to propose again
    /// with the same partition epoch: if the first was committed after
    /// all, the controller refuses this one as stale and the new partition
    /// epoch answers it. Its follower need not fetch again for that, so an
    /// addition whose follower died is settled too.
    pub fn unanswered_addition(&mut self, now: Instant) -> Option<Vec<i32>> {
        let (isr, at) = self.pending.as_mut()?;
        if isr.is_empty() || now.saturating_duration_since(*at) <= PROPOSAL_RETRY {
            return None;
        }
        *at = now;
        Some(isr.clone())
    }

    /// How many offsets each follower is behind a leader log end of `end`.
    pub fn lags(&self, end: i64) -> Vec<(i32, i64)> {
        self.followers
            .iter()
            .map(|(id, f)| (*id, if f.leo < 0 { end } else { end - f.leo }))
            .collect()
    }
}

/// Whether an acks=-1 write may go ahead: the ISR must hold at least
/// `min_insync` replicas (else NOT_ENOUGH_REPLICAS before the append, or
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND once it was written).
pub fn enough_replicas(isr: &[i32], min_insync: i32) -> bool {
    isr.len() as i64 >= i64::from(min_insync)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: i32 = 1;

    /// A leader (1) with followers 2 and 3, ISR `isr`, at time `t0`.
    fn leader(isr: &[i32], t0: Instant) -> IsrState {
        let mut s = IsrState::new(ME);
        s.begin_epoch(&[1, 2, 3], 0, t0);
        s.set_replica_sets(&[1, 2, 3], isr, t0);
        s
    }

    fn fetch(follower: i32, fetch_offset: i64, durable_offset: i64) -> FollowerFetch {
        FollowerFetch {
            follower,
            fetch_offset,
            durable_offset,
            storage_error: false,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_hw_is_the_lowest_durable_offset_of_the_isr() {
        // (leader durable, follower 2 durable, follower 3 durable, ISR, HW)
        type Row = (i64, i64, i64, &'static [i32], Option<i64>);
        let table: &[Row] = &[
            (9, 6, 7, &[1, 2, 3], Some(6)),
            (9, 7, 6, &[1, 2, 3], Some(6)),
            (5, 6, 7, &[1, 2, 3], Some(5)),
            (9, 6, 7, &[1, 3], Some(7)),
            (9, 6, 7, &[1], Some(9)),
            (9, -1, 7, &[1, 2, 3], None),
            (9, -1, 7, &[1, 3], Some(7)),
            (0, 0, 0, &[1, 2, 3], Some(0)),
        ];
        let t0 = Instant::now();
        for &(lead, f2, f3, isr, want) in table {
            let mut s = leader(isr, t0);
            if f2 >= 0 {
                s.record_fetch(fetch(2, f2, f2), lead, 0, t0).unwrap();
            }
            if f3 >= 0 {
                s.record_fetch(fetch(3, f3, f3), lead, 0, t0).unwrap();
            }
            s.pending = None;
            s.candidate = None;
            assert_eq!(
                s.high_watermark(lead, t0),
                want,
                "leader {lead}, followers {f2} {f3}, ISR {isr:?}"
            );
        }
    }

    #[test]
    fn only_fsynced_and_fetched_data_counts() {
        let t0 = Instant::now();
        // (fetch offset, durable offset reported, counted leo)
        let table: &[(i64, i64, i64)] = &[(10, 10, 10), (10, 4, 4), (6, 9, 6), (0, 0, 0)];
        for &(fetch_offset, durable, want) in table {
            let mut s = leader(&[1, 2], t0);
            s.record_fetch(fetch(2, fetch_offset, durable), 10, 0, t0)
                .unwrap();
            assert_eq!(
                s.followers[&2].leo, want,
                "fetch {fetch_offset} durable {durable}"
            );
            assert_eq!(s.high_watermark(20, t0), Some(want));
        }
    }

    #[test]
    fn a_pending_addition_holds_the_hw_until_committed() {
        let t0 = Instant::now();
        let mut s = leader(&[1, 3], t0);
        s.record_fetch(fetch(3, 9, 9), 9, 0, t0).unwrap();
        // Follower 2 reaches the HW (4): proposed, and counted from now on.
        assert_eq!(
            s.record_fetch(fetch(2, 4, 4), 9, 4, t0).unwrap(),
            Some(vec![1, 3, 2])
        );
        assert_eq!(s.high_watermark(9, t0), Some(4));
        // The controller commits it: 2 is an ISR member like any other.
        s.set_replica_sets(&[1, 2, 3], &[1, 3, 2], t0);
        assert_eq!(s.pending, None);
        assert_eq!(s.high_watermark(9, t0), Some(4));
        s.record_fetch(fetch(2, 9, 9), 9, 4, t0).unwrap();
        assert_eq!(s.high_watermark(9, t0), Some(9));
    }

    #[test]
    fn a_refused_addition_stops_holding_the_hw() {
        let t0 = Instant::now();
        let mut s = leader(&[1], t0);
        // Follower 2 reaches the HW (4) and is proposed; then it stops
        // fetching (killed, and fenced before the change was committed).
        assert_eq!(
            s.record_fetch(fetch(2, 4, 4), 9, 4, t0).unwrap(),
            Some(vec![1, 2])
        );
        assert_eq!(s.high_watermark(9, t0), Some(4));
        // A refusal of some other ISR changes nothing.
        assert!(!s.refused(&[1, 3], t0));
        assert_eq!(s.high_watermark(9, t0), Some(4));
        // The controller refuses it: the leader's own durable offset rules.
        assert!(s.refused(&[1, 2], t0 + ms(10)));
        assert_eq!(s.pending, None);
        assert_eq!(s.high_watermark(9, t0 + ms(10)), Some(9));
        // Not proposed again at its next fetch, only after PROPOSAL_RETRY.
        let soon = t0 + ms(20);
        assert_eq!(s.record_fetch(fetch(2, 9, 9), 9, 9, soon).unwrap(), None);
        let later = t0 + ms(10) + PROPOSAL_RETRY + ms(1);
        assert_eq!(
            s.record_fetch(fetch(2, 9, 9), 9, 9, later).unwrap(),
            Some(vec![1, 2])
        );
    }

    #[test]
    fn a_refused_shrink_is_forgotten_and_tried_again_later() {
        let t0 = Instant::now();
        let mut s = leader(&[1, 2, 3], t0);
        s.record_fetch(fetch(3, 5, 5), 9, 0, t0).unwrap();
        let late = t0 + ms(30_001);
        // 2 keeps up; 3 has not caught up for 30 s.
        s.record_fetch(fetch(2, 9, 9), 9, 0, late).unwrap();
        let (lagging, isr) = s.shrink(ms(30_000), late).expect("3 lags");
        assert_eq!((lagging, isr.clone()), (vec![3], vec![1, 2]));
        assert!(s.refused(&isr, late));
        assert_eq!(s.pending, None);
        assert_eq!(s.shrink(ms(30_000), late + ms(1)), None);
        assert!(s
            .shrink(ms(30_000), late + PROPOSAL_RETRY + ms(1))
            .is_some());
    }

    #[test]
    fn an_unanswered_addition_is_proposed_again() {
        let t0 = Instant::now();
        let mut s = leader(&[1], t0);
        s.record_fetch(fetch(2, 0, 0), 0, 0, t0).unwrap();
        assert_eq!(s.unanswered_addition(t0 + PROPOSAL_RETRY), None);
        let t1 = t0 + PROPOSAL_RETRY + ms(1);
        assert_eq!(s.unanswered_addition(t1), Some(vec![1, 2]));
        // Once per PROPOSAL_RETRY, and never a shrink (it has its own retry).
        assert_eq!(s.unanswered_addition(t1 + ms(1)), None);
        s.pending = Some((Vec::new(), t0));
        assert_eq!(s.unanswered_addition(t1 + PROPOSAL_RETRY), None);
    }

    #[test]
    fn joining_the_isr() {
        let t0 = Instant::now();
        // (epoch start, HW, fetch offset, durable, pending since (ms before now), proposed)
        type Row = (i64, i64, i64, i64, Option<u64>, bool);
        let table: &[Row] = &[
            (0, 10, 10, 10, None, true),
            (0, 10, 12, 12, None, true),
            (0, 10, 10, 9, None, false),       // not fsynced up to the HW
            (0, 10, 9, 9, None, false),        // behind the HW
            (12, 10, 11, 11, None, false),     // before this leader's epoch began
            (0, 10, 10, 10, Some(100), false), // another change in flight
            (0, 10, 10, 10, Some(2_500), true), // ... unanswered too long: again
        ];
        for &(start, hw, fo, durable, pending, want) in table {
            let now = t0 + ms(10_000);
            let mut s = leader(&[1, 3], t0);
            s.epoch_start_offset = start;
            s.pending = pending.map(|ago| (vec![1, 3, 2], now - ms(ago)));
            let proposed = s.record_fetch(fetch(2, fo, durable), 20, hw, now).unwrap();
            assert_eq!(
                proposed.is_some(),
                want,
                "start {start} hw {hw} fetch {fo} durable {durable} pending {pending:?}"
            );
            if want {
                assert_eq!(proposed, Some(vec![1, 3, 2]));
                assert_eq!(s.pending.as_ref().map(|p| p.1), Some(now));
            }
        }
        // A broker that is not a replica is not proposed; one that is not a
        // follower at all is refused.
        let mut s = leader(&[1, 3], t0);
        s.replicas = vec![1, 3];
        assert_eq!(s.record_fetch(fetch(2, 10, 10), 10, 10, t0), Ok(None));
        assert_eq!(
            s.record_fetch(fetch(7, 10, 10), 10, 10, t0),
            Err(NotAFollower)
        );
        // An ISR member is never proposed again.
        let mut s = leader(&[1, 2, 3], t0);
        assert_eq!(s.record_fetch(fetch(2, 10, 10), 10, 10, t0), Ok(None));
    }

    #[test]
    fn a_candidate_holds_the_hw_for_a_moment_then_joins() {
        let t0 = Instant::now();
        let mut s = leader(&[1, 3], t0);
        s.record_fetch(fetch(3, 10, 10), 10, 0, t0).unwrap();
        assert_eq!(s.high_watermark(10, t0), Some(10));
        // Follower 2 fetches from the HW (10) but has fsynced only 8.
        assert_eq!(s.record_fetch(fetch(2, 10, 8), 12, 10, t0).unwrap(), None);
        assert_eq!(s.candidate, Some((2, t0)));
        // Meanwhile the leader and 3 reach 12: the HW waits for 2 at 8...
        s.record_fetch(fetch(3, 12, 12), 12, 10, t0).unwrap();
        assert_eq!(s.high_watermark(12, t0 + ms(100)), Some(8));
        // ... but never longer than CANDIDATE_HOLD.
        assert_eq!(s.high_watermark(12, t0 + CANDIDATE_HOLD), Some(12));
        // Its fsync done, 2 reports 10 >= the HW it saw: it joins.
        let t1 = t0 + ms(50);
        assert_eq!(
            s.record_fetch(fetch(2, 12, 12), 12, 8, t1).unwrap(),
            Some(vec![1, 3, 2])
        );
        assert_eq!(s.candidate, None);
    }

    #[test]
    fn who_becomes_a_candidate() {
        let t0 = Instant::now();
        let now = t0 + ms(10_000);
        // (fetch offset, durable, previous fetch's leader end, other candidate
        //  since (ms before now), becomes candidate)
        let table: &[(i64, i64, i64, Option<u64>, bool)] = &[
            (10, 8, -1, None, true),       // reached the HW (10)
            (9, 8, 9, None, true),         // holds what the leader had last time
            (9, 8, 10, None, false),       // neither
            (10, 8, -1, Some(100), false), // another one holds the HW
            (10, 8, -1, Some(600), true),  // ... for longer than CANDIDATE_HOLD
        ];
        for &(fo, durable, prev_end, other, want) in table {
            let mut s = leader(&[1], t0);
            s.followers.get_mut(&2).unwrap().last_fetch_leader_leo = prev_end;
            s.candidate = other.map(|ago| (3, now - ms(ago)));
            s.record_fetch(fetch(2, fo, durable), 12, 10, now).unwrap();
            assert_eq!(
                s.candidate == Some((2, now)),
                want,
                "fetch {fo} durable {durable} prev end {prev_end} other {other:?}"
            );
        }
    }

    #[test]
    fn leaving_the_isr() {
        let t0 = Instant::now();
        let lag = ms(30_000);
        // Follower 2 caught up at t0 (fetched to the leader's end); 3 never
        // fetched after t0. At each time: what leaves.
        let table: &[(u64, Option<&[i32]>)] =
            &[(1_000, None), (30_000, None), (30_001, Some(&[2, 3]))];
        for &(at, want) in table {
            let mut s = leader(&[1, 2, 3], t0);
            s.record_fetch(fetch(2, 10, 10), 10, 10, t0).unwrap();
            let got = s.shrink(lag, t0 + ms(at));
            assert_eq!(got.as_ref().map(|(l, _)| l.as_slice()), want, "at {at} ms");
            if let Some((lagging, isr)) = got {
                assert!(isr.iter().all(|r| !lagging.contains(r)));
                assert!(isr.contains(&ME));
                assert!(s.pending.is_some());
            }
        }
        // Fetching steadily keeps a follower in, even one fetch behind: it
        // held all the leader had at its previous fetch.
        let mut s = leader(&[1, 2], t0);
        for i in 1..=40u64 {
            let end = 10 * i as i64 + 10;
            s.record_fetch(fetch(2, end - 10, end - 10), end, 0, t0 + ms(1_000 * i))
                .unwrap();
        }
        assert_eq!(s.shrink(lag, t0 + ms(41_000)), None);
        // One that keeps falling further behind leaves.
        let mut s = leader(&[1, 2], t0);
        for i in 1..=40u64 {
            let end = 100 * i as i64;
            s.record_fetch(fetch(2, 10 * i as i64, 0), end, 0, t0 + ms(1_000 * i))
                .unwrap();
        }
        assert_eq!(
            s.shrink(lag, t0 + ms(41_000)).map(|(l, _)| l),
            Some(vec![2])
        );
    }

    #[test]
    fn one_isr_change_at_a_time() {
        let t0 = Instant::now();
        let mut s = leader(&[1, 2, 3], t0);
        let late = t0 + ms(40_000);
        assert!(s.shrink(ms(30_000), late).is_some());
        // The shrink is in flight: no second one, and no expansion.
        assert_eq!(s.shrink(ms(30_000), late + ms(100)), None);
        assert!(s
            .shrink(ms(30_000), late + PROPOSAL_RETRY + ms(1))
            .is_some());
    }

    #[test]
    fn a_new_epoch_forgets_progress() {
        let t0 = Instant::now();
        let mut s = leader(&[1, 2], t0);
        s.record_fetch(fetch(2, 10, 10), 10, 10, t0).unwrap();
        assert_eq!(s.high_watermark(10, t0), Some(10));
        s.begin_epoch(&[1, 2, 3], 10, t0);
        assert_eq!(
            s.high_watermark(10, t0),
            None,
            "2 must fetch in the new epoch first"
        );
        assert_eq!(s.epoch_start_offset, 10);
        // A replica removed from the assignment is forgotten.
        s.set_replica_sets(&[1, 3], &[1, 3], t0);
        assert!(!s.followers.contains_key(&2));
        assert_eq!(s.lags(10), vec![(3, 10)]);
    }

    #[test]
    fn a_follower_whose_storage_fails_leaves_the_isr_at_once_and_comes_back() {
        let t0 = Instant::now();
        let lag = ms(30_000);
        let mut s = leader(&[1, 2, 3], t0);
        s.record_fetch(fetch(2, 9, 9), 9, 9, t0).unwrap();
        s.record_fetch(fetch(3, 9, 9), 9, 9, t0).unwrap();
        assert_eq!(s.shrink(lag, t0 + ms(10)), None);
        // 3's disk fills: it fetches on, and says so.
        let failing = FollowerFetch {
            storage_error: true,
            ..fetch(3, 9, 9)
        };
        s.record_fetch(failing, 12, 9, t0 + ms(20)).unwrap();
        assert_eq!(
            s.shrink(lag, t0 + ms(30)),
            Some((vec![3], vec![1, 2])),
            "out at the next check, not after {lag:?}"
        );
        // Until the shrink is committed the HW still waits for it.
        assert_eq!(s.high_watermark(12, t0 + ms(30)), Some(9));
        s.set_replica_sets(&[1, 2, 3], &[1, 2], t0 + ms(40));
        s.record_fetch(fetch(2, 12, 12), 12, 9, t0 + ms(40))
            .unwrap();
        assert_eq!(s.high_watermark(12, t0 + ms(40)), Some(12));
        // Caught up while still failing: never proposed, never a candidate.
        let caught_up = FollowerFetch {
            storage_error: true,
            ..fetch(3, 12, 12)
        };
        assert_eq!(
            s.record_fetch(caught_up, 12, 12, t0 + ms(50)).unwrap(),
            None
        );
        assert_eq!(s.candidate, None);
        // Its disk has room again: it joins as any follower does.
        assert_eq!(
            s.record_fetch(fetch(3, 12, 12), 12, 12, t0 + ms(60))
                .unwrap(),
            Some(vec![1, 2, 3])
        );
    }

    #[test]
    fn min_insync_replicas() {
        let table: &[(&[i32], i32, bool)] = &[
            (&[1, 2, 3], 2, true),
            (&[1, 2], 2, true),
            (&[1], 2, false),
            (&[1], 1, true),
            (&[], 1, false),
        ];
        for &(isr, min, want) in table {
            assert_eq!(enough_replicas(isr, min), want, "{isr:?} min {min}");
        }
    }
}
