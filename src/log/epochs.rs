//! The leader epoch cache (KIP-101): for each leader epoch that wrote to
//! this log, the offset of its first batch. Followers compare their
//! history with the leader's through it and truncate a divergent suffix by
//! epoch, never by a stale high watermark.
//!
//! Kept as Kafka keeps it, in `leader-epoch-checkpoint` (version, count,
//! then `epoch start_offset` lines), replaced atomically. An entry is made
//! durable before the first batch of its epoch is appended, so that after
//! a crash the file never lacks an epoch the log holds; entries the log no
//! longer holds are dropped when the log is opened or truncated.

use std::path::Path;

use super::checkpoint;
use super::Result;

pub(crate) const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EpochCache {
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    /// The stored cache, or `None` when the file is absent or unreadable
    /// (then the caller rebuilds it from the batches).
    pub fn read(dir: &Path) -> Option<EpochCache> {
        let text = std::fs::read_to_string(dir.join(LEADER_EPOCH_FILE)).ok()?;
        let mut lines = text.lines();
        if lines.next()?.trim() != "0" {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut entries = Vec::with_capacity(count.min(1 << 16));
        for line in lines.take(count) {
            let mut f = line.split_whitespace();
            let epoch: i32 = f.next()?.parse().ok()?;
            let offset: i64 = f.next()?.parse().ok()?;
            if entries
                .last()
                .is_some_and(|&(e, o)| epoch <= e || offset < o)
            {
                return None;
            }
            entries.push((epoch, offset));
        }
        (entries.len() == count).then_some(EpochCache { entries })
    }

    /// Writes the checkpoint; fsynced (with its directory) if `durable`.
    pub fn write(&self, dir: &Path, durable: bool) -> Result<()> {
        let mut s = format!("0\n{}\n", self.entries.len());
        for (e, o) in &self.entries {
            s.push_str(&format!("{e} {o}\n"));
        }
        if durable {
            checkpoint::write_atomic(dir, LEADER_EPOCH_FILE, s.as_bytes())
        } else {
            checkpoint::replace(dir, LEADER_EPOCH_FILE, s.as_bytes())
        }
    }

    #[cfg(test)]
    pub fn from_entries(entries: Vec<(i32, i64)>) -> EpochCache {
        EpochCache { entries }
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// Records that `epoch` starts at `offset`; true when the cache changed
    /// (and must be written). Older epochs never go in after newer ones.
    pub fn assign(&mut self, epoch: i32, offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        if self.latest_epoch().is_some_and(|e| e >= epoch) {
            return false;
        }
        // An epoch that wrote nothing gives way to the next one.
        self.entries.retain(|&(_, o)| o < offset);
        self.entries.push((epoch, offset));
        true
    }

    /// Drops the epochs that start at or after `end` (the log was cut there).
    pub fn truncate_from(&mut self, end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, o)| o < end);
        self.entries.len() != before
    }

    /// Kafka's `endOffsetFor`: the largest epoch at most `requested` and the
    /// offset where the next epoch starts (`log_end` for the latest epoch).
    /// (-1, -1) when `requested` is above every epoch known or undefined;
    /// (`requested`, first start) when it is below all of them.
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        if requested < 0 {
            return (-1, -1);
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end);
        }
        let higher = self.entries.iter().find(|&&(e, _)| e > requested);
        let Some(&(_, higher_start)) = higher else {
            return (-1, -1);
        };
        match self.entries.iter().rev().find(|&&(e, _)| e <= requested) {
            Some(&(e, _)) => (e, higher_start),
            None => (requested, higher_start),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kafka() {
        let c = EpochCache::from_entries(vec![(1, 0), (3, 10), (4, 25)]);
        // (requested, log end) -> answer
        let cases = [
            ((4, 40), (4, 40)),
            ((3, 40), (3, 25)),
            ((2, 40), (1, 10)),
            ((1, 40), (1, 10)),
            ((0, 40), (0, 0)),
            ((5, 40), (-1, -1)),
            ((-1, 40), (-1, -1)),
        ];
        for ((req, end), want) in cases {
            assert_eq!(c.end_offset_for(req, end), want, "epoch {req}");
        }
    }

    #[test]
    fn assign_keeps_epochs_and_offsets_increasing() {
        let mut c = EpochCache::default();
        assert!(c.assign(1, 0));
        assert!(!c.assign(1, 5));
        assert!(!c.assign(0, 7));
        assert!(c.assign(2, 5));
        // Epoch 3 became leader at 9 but wrote nothing; epoch 4 starts there.
        assert!(c.assign(3, 9));
        assert!(c.assign(4, 9));
        assert_eq!(c.entries(), &[(1, 0), (2, 5), (4, 9)]);
        assert!(c.truncate_from(5));
        assert_eq!(c.entries(), &[(1, 0)]);
        assert!(!c.truncate_from(5));
    }

    #[test]
    fn the_file_round_trips_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let c = EpochCache::from_entries(vec![(0, 0), (2, 100)]);
        c.write(dir.path(), true).unwrap();
        assert_eq!(EpochCache::read(dir.path()), Some(c));
        for bad in ["", "0\n2\n0 0\n", "1\n0\n", "0\n2\n3 0\n2 5\n", "0\nx\n"] {
            std::fs::write(dir.path().join(LEADER_EPOCH_FILE), bad).unwrap();
            assert_eq!(EpochCache::read(dir.path()), None, "{bad:?}");
        }
    }
}
