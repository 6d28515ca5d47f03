//! Idempotent-producer state of one partition: per producer id, its epoch
//! and the metadata of its last few batches, so that a retried batch is
//! answered with its original offsets instead of being written twice.
//!
//! Pure bookkeeping, no I/O. The partition consults it and records into it
//! under one lock together with the append, so that check and append are
//! atomic; followers record the leader's batches the same way, so a new
//! leader deduplicates as the old one did. The partition snapshots it (as
//! JSON) at segment rolls and clean shutdown, and rebuilds it at open from
//! the latest snapshot plus the batches after it. Producers idle for
//! `producer.id.expiration.ms` are forgotten; a producer unknown to the
//! partition is accepted at any sequence, as Kafka does.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Kafka keeps this many batches per producer: the largest
/// `max.in.flight.requests.per.connection` allowed with idempotence.
pub const RETAINED_BATCHES: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    epoch: i16,
    recent: VecDeque<BatchMeta>,
    /// When its last batch was written (ms since the epoch), for expiry.
    #[serde(default)]
    last_write_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// In sequence (or a producer this partition does not know): append.
    Append,
    /// Already written: answer with these offsets, write nothing.
    Duplicate(BatchMeta),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SequenceError {
    #[error("producer epoch {got} is older than the current epoch {current}")]
    InvalidEpoch { current: i16, got: i16 },
    #[error("out of order sequence number: expected {expected}, got {got}")]
    OutOfOrder { expected: i32, got: i32 },
    /// The producer's batch at `expected` failed to be written (a storage
    /// error) and this one follows it: refused the same way, retriably,
    /// rather than as a gap, so that the producer resends both in order
    /// instead of bumping its epoch and writing them again.
    #[error(
        "the producer's batch at sequence {expected} was not written (storage error); got {got}"
    )]
    AfterFailedAppend { expected: i32, got: i32 },
    /// A batch ahead of the next expected one (a gap) within
    /// [`GAP_GRACE_MS`] of this replica taking over as leader: the missing
    /// batch is most likely still on its way (a retry from the leader
    /// before, cut off), so this one is refused retriably, as not
    /// written, rather than as out of order. See [`ProducerStates::hold_gap`].
    #[error("sequence gap: expected {expected}, got {got}; waiting for the missing batch")]
    AheadOfMissing { expected: i32, got: i32 },
}

/// How long after taking over a leader answers a sequence gap as
/// retriable (see [`ProducerStates::hold_gap`]): past librdkafka's socket
/// timeout (60 s), the longest a missing batch can sit in a request to the
/// leader before, cut off, until the client retries it here.
pub const GAP_GRACE_MS: i64 = 60_000;

/// A producer's batch that the log failed to store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Failed {
    epoch: i16,
    first_seq: i32,
    at_ms: i64,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, Entry>,
    /// Per producer, its first batch a storage error kept out of the log
    /// since its last written one (in memory only: a restart forgets it,
    /// and the producer's retry then meets the log as it is).
    #[serde(skip)]
    failed: HashMap<i64, Failed>,
    /// When this replica last took over as leader from another (leader
    /// epoch above 0), in memory only.
    #[serde(skip)]
    took_over_ms: Option<i64>,
}

impl ProducerStates {
    /// Decides what to do with a batch `first_seq..=last_seq` of
    /// (`producer_id`, `epoch`).
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Result<Check, SequenceError> {
        let checked = self.check_sequence(producer_id, epoch, first_seq, last_seq);
        // While the producer's earlier batch failed to be written, anything
        // but that batch again (or a retry of one already written) is a
        // gap it caused, not the producer: refuse it as the failed one was.
        match (checked, self.failed.get(&producer_id)) {
            (Ok(Check::Append) | Err(SequenceError::OutOfOrder { .. }), Some(f))
                if f.epoch == epoch && f.first_seq != first_seq =>
            {
                Err(SequenceError::AfterFailedAppend {
                    expected: f.first_seq,
                    got: first_seq,
                })
            }
            (checked, _) => checked,
        }
    }

    /// Records that a batch of the producer starting at `first_seq`
    /// failed to be written (a storage error). Its first such batch is
    /// kept until one of its batches is written.
    pub fn record_failure(&mut self, producer_id: i64, epoch: i16, first_seq: i32, at_ms: i64) {
        let f = Failed {
            epoch,
            first_seq,
            at_ms,
        };
        self.failed
            .entry(producer_id)
            .and_modify(|old| {
                if old.epoch != epoch {
                    *old = f;
                }
            })
            .or_insert(f);
    }

    /// Whether a failed batch of the producer is still unwritten.
    pub fn has_failure(&self, producer_id: i64) -> bool {
        self.failed.contains_key(&producer_id)
    }

    fn check_sequence(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Result<Check, SequenceError> {
        let Some(e) = self.producers.get(&producer_id) else {
            return Ok(Check::Append);
        };
        if epoch < e.epoch {
            return Err(SequenceError::InvalidEpoch {
                current: e.epoch,
                got: epoch,
            });
        }
        if epoch > e.epoch {
            // A bumped epoch (KIP-360) restarts the sequence at 0.
            return if first_seq == 0 {
                Ok(Check::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    expected: 0,
                    got: first_seq,
                })
            };
        }
        if let Some(dup) = e
            .recent
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(Check::Duplicate(*dup));
        }
        match e.recent.back() {
            Some(last) if first_seq != next_seq(last.last_seq) => Err(SequenceError::OutOfOrder {
                expected: next_seq(last.last_seq),
                got: first_seq,
            }),
            _ => Ok(Check::Append),
        }
    }

    /// Forgets the batches at or after `offset` (the log was cut there), so
    /// that the producer's next batch continues from what the log holds.
    pub fn truncate_from(&mut self, offset: i64) {
        self.failed.clear();
        for e in self.producers.values_mut() {
            e.recent.retain(|b| b.last_offset < offset);
        }
        self.producers.retain(|_, e| !e.recent.is_empty());
    }

    /// Forgets producers that wrote nothing since `before_ms`.
    pub fn expire(&mut self, before_ms: i64) -> usize {
        let n = self.producers.len();
        self.producers.retain(|_, e| e.last_write_ms >= before_ms);
        self.failed.retain(|_, f| f.at_ms >= before_ms);
        n - self.producers.len()
    }

    /// (producer id, epoch, last sequence, last write ms) of every producer.
    pub fn describe(&self) -> Vec<(i64, i16, i32, i64)> {
        let mut out: Vec<_> = self
            .producers
            .iter()
            .map(|(id, e)| {
                let last_seq = e.recent.back().map_or(-1, |b| b.last_seq);
                (*id, e.epoch, last_seq, e.last_write_ms)
            })
            .collect();
        out.sort_unstable();
        out
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Records an appended batch, written at `at_ms`.
    pub fn record_at(&mut self, producer_id: i64, epoch: i16, batch: BatchMeta, at_ms: i64) {
        self.record(producer_id, epoch, batch);
        if let Some(e) = self.producers.get_mut(&producer_id) {
            e.last_write_ms = e.last_write_ms.max(at_ms);
        }
    }

    /// Forgets every failed batch (this replica's role changed: another
    /// leader may have written them since).
    pub fn forget_failures(&mut self) {
        self.failed.clear();
        self.took_over_ms = None;
    }

    /// This replica takes over as leader from another, now.
    pub fn took_over(&mut self, now_ms: i64) {
        self.took_over_ms = Some(now_ms);
    }

    /// Whether a batch at `got`, beyond the `expected` one, is to be held
    /// back as waiting for the missing batch rather than refused as out of
    /// order: for [`GAP_GRACE_MS`] after this replica took over as leader.
    ///
    /// Why: librdkafka (2.12) answers OUT_OF_ORDER_SEQUENCE_NUMBER on a
    /// batch that is not its oldest unacknowledged one by bumping its
    /// epoch and resending everything unacknowledged under new sequence
    /// numbers, including a batch that the leader before, cut off by a
    /// network partition, answered REQUEST_TIMED_OUT but had replicated
    /// here: that batch is then written twice (librdkafka issue #4953).
    /// The next batch can reach the new leader before that retry does.
    /// Refused retriably, as not written (NOT_ENOUGH_REPLICAS), it comes
    /// back after the retry, in order, as Kafka's Java client resends a
    /// batch that meets a gap behind an unresolved one. Outside a
    /// takeover's grace a gap is answered out of order, as Kafka does.
    pub fn hold_gap(&self, expected: i32, got: i32, now_ms: i64) -> bool {
        // Sequences run 0..=i32::MAX and wrap to 0: ahead means less than
        // half way round.
        let ahead = (i64::from(got) - i64::from(expected)).rem_euclid(1 << 31);
        ahead > 0
            && ahead < 1 << 30
            && self
                .took_over_ms
                .is_some_and(|t| now_ms.saturating_sub(t) < GAP_GRACE_MS)
    }

    /// Records an appended batch.
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchMeta) {
        self.failed.remove(&producer_id);
        let e = self.producers.entry(producer_id).or_default();
        if epoch != e.epoch {
            e.epoch = epoch;
            e.recent.clear();
        }
        if e.recent.len() == RETAINED_BATCHES {
            e.recent.pop_front();
        }
        e.recent.push_back(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(first_seq: i32, last_seq: i32, first_offset: i64) -> BatchMeta {
        BatchMeta {
            first_seq,
            last_seq,
            first_offset,
            last_offset: first_offset + (last_seq - first_seq) as i64,
        }
    }

    #[test]
    fn in_order_duplicate_gap_and_fencing() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(7, 0, 0, 4), Ok(Check::Append));
        s.record(7, 0, meta(0, 4, 100));
        assert_eq!(s.check(7, 0, 5, 9), Ok(Check::Append));
        s.record(7, 0, meta(5, 9, 105));
        // A retry of either retained batch gets its original offsets.
        assert_eq!(s.check(7, 0, 0, 4), Ok(Check::Duplicate(meta(0, 4, 100))));
        assert_eq!(s.check(7, 0, 5, 9), Ok(Check::Duplicate(meta(5, 9, 105))));
        assert_eq!(
            s.check(7, 0, 12, 12),
            Err(SequenceError::OutOfOrder {
                expected: 10,
                got: 12
            })
        );
        assert_eq!(
            s.check(7, 1, 3, 3),
            Err(SequenceError::OutOfOrder {
                expected: 0,
                got: 3
            })
        );
        assert_eq!(s.check(7, 1, 0, 0), Ok(Check::Append));
        s.record(7, 1, meta(0, 0, 110));
        assert_eq!(
            s.check(7, 0, 10, 10),
            Err(SequenceError::InvalidEpoch { current: 1, got: 0 })
        );
        // Other producers are independent.
        assert_eq!(s.check(8, 0, 42, 42), Ok(Check::Append));
    }

    #[test]
    fn keeps_only_the_last_five_batches() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(1, 0, meta(i, i, i as i64));
        }
        assert_eq!(
            s.check(1, 0, 1, 1),
            Err(SequenceError::OutOfOrder {
                expected: 7,
                got: 1
            })
        );
        assert_eq!(s.check(1, 0, 2, 2), Ok(Check::Duplicate(meta(2, 2, 2))));
    }

    #[test]
    fn snapshots_round_trip_and_idle_producers_expire() {
        let mut s = ProducerStates::default();
        s.record_at(1, 0, meta(0, 4, 0), 1_000);
        s.record_at(2, 3, meta(0, 0, 5), 5_000);
        let json = serde_json::to_vec(&s).unwrap();
        let back: ProducerStates = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.check(1, 0, 0, 4), Ok(Check::Duplicate(meta(0, 4, 0))));
        assert_eq!(s.expire(2_000), 1);
        assert_eq!(
            s.check(1, 0, 9, 9),
            Ok(Check::Append),
            "forgotten: any sequence"
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_gap_is_held_only_for_a_while_after_a_takeover() {
        let mut s = ProducerStates::default();
        s.record(7, 0, meta(0, 4, 100));
        assert_eq!(
            s.check(7, 0, 10, 14),
            Err(SequenceError::OutOfOrder {
                expected: 5,
                got: 10
            })
        );
        // A leader from the start answers a gap out of order at once.
        assert!(!s.hold_gap(5, 10, 1_000));
        s.took_over(1_000);
        assert!(s.hold_gap(5, 10, 1_000));
        assert!(s.hold_gap(5, 15, 1_000 + GAP_GRACE_MS - 1));
        assert!(!s.hold_gap(5, 10, 1_000 + GAP_GRACE_MS));
        // Behind the expected batch is no gap to wait for.
        assert!(!s.hold_gap(5, 3, 1_000));
        // Across the sequence's wrap, a small step ahead is a gap.
        assert!(s.hold_gap(i32::MAX, 2, 1_000));
        // Leadership lost: nothing held.
        s.forget_failures();
        assert!(!s.hold_gap(5, 10, 1_000));
    }

    #[test]
    fn a_batch_after_one_that_failed_is_refused_until_that_one_is_written() {
        let mut s = ProducerStates::default();
        s.record(7, 0, meta(0, 4, 100));
        // R1 (5..=9) failed with a storage error; R2 and R3 follow it.
        assert_eq!(s.check(7, 0, 5, 9), Ok(Check::Append));
        s.record_failure(7, 0, 5, 1_000);
        s.record_failure(7, 0, 10, 1_001);
        let after = |got| Err(SequenceError::AfterFailedAppend { expected: 5, got });
        assert_eq!(s.check(7, 0, 10, 14), after(10));
        assert_eq!(s.check(7, 0, 15, 19), after(15));
        // Retries of written batches are still duplicates; R1 may go.
        assert_eq!(s.check(7, 0, 0, 4), Ok(Check::Duplicate(meta(0, 4, 100))));
        assert_eq!(s.check(7, 0, 5, 9), Ok(Check::Append));
        // Other producers are not held.
        assert_eq!(s.check(8, 0, 3, 3), Ok(Check::Append));
        s.record(7, 0, meta(5, 9, 105));
        assert!(!s.has_failure(7));
        assert_eq!(s.check(7, 0, 10, 14), Ok(Check::Append));
        // Without a failure, a gap is a gap.
        assert_eq!(
            s.check(7, 0, 15, 19),
            Err(SequenceError::OutOfOrder {
                expected: 10,
                got: 15
            })
        );
    }

    #[test]
    fn a_new_producers_failed_first_batch_holds_its_next_ones() {
        let mut s = ProducerStates::default();
        // Unknown to the partition: any sequence would be taken, so the
        // failure is what keeps its second batch from going first.
        s.record_failure(3, 0, 0, 1_000);
        assert_eq!(
            s.check(3, 0, 5, 9),
            Err(SequenceError::AfterFailedAppend {
                expected: 0,
                got: 5
            })
        );
        assert_eq!(s.check(3, 0, 0, 4), Ok(Check::Append));
        // A bumped epoch starts afresh at 0.
        assert_eq!(s.check(3, 1, 0, 4), Ok(Check::Append));
        s.record(3, 1, meta(0, 4, 0));
        assert_eq!(s.check(3, 1, 5, 9), Ok(Check::Append));
        // Forgotten with the role, and with idle producers.
        s.record_failure(3, 1, 5, 1_000);
        s.forget_failures();
        assert!(!s.has_failure(3));
        s.record_failure(3, 1, 5, 1_000);
        s.expire(2_000);
        assert!(!s.has_failure(3));
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let mut s = ProducerStates::default();
        s.record(1, 0, meta(i32::MAX - 1, i32::MAX, 0));
        assert_eq!(s.check(1, 0, 0, 3), Ok(Check::Append));
    }
}
