//! Replica placement for new topics and partitions: Kafka's round-robin
//! assignment (`AdminUtils.assignReplicasToBrokers`), pure and deterministic
//! so that the proposer computes it once and the Raft entry carries the
//! result.
//!
//! * Leaders (first replica) go round robin over the brokers sorted by id,
//!   starting at `start`, so `n` brokers each lead `partitions / n` (±1).
//! * Follower `j` of a partition sits `1 + (shift + j) % (n - 1)` brokers
//!   after the leader, and `shift` grows every `n` partitions: followers are
//!   on distinct brokers and the leader's followers vary from round to round.
//! * When every broker has a rack, the brokers are first interleaved by rack
//!   (a1, b1, c1, a2, b2, ...) and a follower candidate is skipped while its
//!   rack already holds a replica and some rack holds none: no two replicas
//!   of a partition share a rack unless `replication_factor` exceeds the
//!   number of racks. If only some brokers have a rack, racks are ignored
//!   (Kafka refuses that case unless rack awareness is disabled).

use std::collections::{BTreeMap, BTreeSet};

use super::records::MetadataError;

/// Places `partitions` partitions with `replication_factor` replicas each on
/// `brokers` (unfenced broker ids with their racks). `start` rotates the
/// pattern; pass a different value per topic (and the existing partition
/// count when adding partitions) so leaders spread across topics.
///
/// Example, brokers 1,2,3, rf 2, start 0: `[1,2] [2,3] [3,1] [1,3] [2,1] [3,2]`.
pub fn place_replicas(
    brokers: &[(i32, Option<String>)],
    partitions: usize,
    replication_factor: usize,
    start: usize,
) -> Result<Vec<Vec<i32>>, MetadataError> {
    let racks: BTreeMap<i32, Option<&str>> = brokers
        .iter()
        .map(|(id, rack)| (*id, rack.as_deref()))
        .collect();
    let n = racks.len();
    if replication_factor < 1 {
        return Err(MetadataError::InvalidReplicationFactor(
            "replication factor must be larger than 0".into(),
        ));
    }
    if replication_factor > n {
        return Err(MetadataError::InvalidReplicationFactor(format!(
            "replication factor: {replication_factor} larger than available brokers: {n}"
        )));
    }
    let all_racked = racks.values().all(Option::is_some);
    let rack_count = racks.values().flatten().collect::<BTreeSet<_>>().len();
    if all_racked && rack_count > 1 {
        Ok(place_rack_aware(
            &racks,
            partitions,
            replication_factor,
            start,
        ))
    } else {
        let ids: Vec<i32> = racks.keys().copied().collect();
        Ok(place_round_robin(
            &ids,
            partitions,
            replication_factor,
            start,
        ))
    }
}

/// Index of follower `j` of a partition whose leader is at `first`.
/// Never `first` itself: the offset from it is in `1..n`.
fn replica_index(first: usize, shift: usize, j: usize, n: usize) -> usize {
    (first + 1 + (shift + j) % (n - 1)) % n
}

fn place_round_robin(ids: &[i32], partitions: usize, rf: usize, start: usize) -> Vec<Vec<i32>> {
    let n = ids.len();
    let mut shift = start % n;
    (0..partitions)
        .map(|p| {
            if p > 0 && p % n == 0 {
                shift += 1;
            }
            let first = (p + start) % n;
            let mut replicas = Vec::with_capacity(rf);
            replicas.push(ids[first]);
            replicas.extend((0..rf - 1).map(|j| ids[replica_index(first, shift, j, n)]));
            replicas
        })
        .collect()
}

fn place_rack_aware(
    racks: &BTreeMap<i32, Option<&str>>,
    partitions: usize,
    rf: usize,
    start: usize,
) -> Vec<Vec<i32>> {
    let arranged = rack_alternated(racks);
    let n = arranged.len();
    let rack_of = |id: i32| racks.get(&id).copied().flatten();
    let rack_count = racks.values().flatten().collect::<BTreeSet<_>>().len();
    let mut shift = start % n;
    (0..partitions)
        .map(|p| {
            if p > 0 && p % n == 0 {
                shift += 1;
            }
            let first = (p + start) % n;
            let leader = arranged[first];
            let mut replicas = Vec::with_capacity(rf);
            replicas.push(leader);
            let mut used_racks: BTreeSet<Option<&str>> = BTreeSet::from([rack_of(leader)]);
            // Candidates cycle through the n - 1 other brokers. Within one
            // cycle there is always an acceptable one: a broker of a rack
            // without a replica, or once every rack has one, any unused
            // broker (rf <= n). So the loop ends after at most rf * (n - 1)
            // steps.
            let mut k = 0;
            while replicas.len() < rf {
                let candidate = arranged[replica_index(first, shift * rack_count, k, n)];
                k += 1;
                let rack = rack_of(candidate);
                let rack_ok = !used_racks.contains(&rack) || used_racks.len() == rack_count;
                if rack_ok && !replicas.contains(&candidate) {
                    replicas.push(candidate);
                    used_racks.insert(rack);
                }
            }
            replicas
        })
        .collect()
}

/// Brokers interleaved by rack: racks in name order, brokers within a rack
/// by id, one from each rack in turn.
fn rack_alternated(racks: &BTreeMap<i32, Option<&str>>) -> Vec<i32> {
    let mut by_rack: BTreeMap<Option<&str>, std::collections::VecDeque<i32>> = BTreeMap::new();
    for (id, rack) in racks {
        by_rack.entry(*rack).or_default().push_back(*id);
    }
    let mut out = Vec::with_capacity(racks.len());
    while out.len() < racks.len() {
        for queue in by_rack.values_mut() {
            if let Some(id) = queue.pop_front() {
                out.push(id);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn plain(ids: &[i32]) -> Vec<(i32, Option<String>)> {
        ids.iter().map(|id| (*id, None)).collect()
    }

    fn racked(list: &[(i32, &str)]) -> Vec<(i32, Option<String>)> {
        list.iter()
            .map(|(id, r)| (*id, Some(r.to_string())))
            .collect()
    }

    #[test]
    fn round_robin_tables() {
        // Worked by hand from Kafka's assignReplicasToBrokers with a fixed
        // start index (which Kafka also uses as the initial shift).
        // (brokers, partitions, replication factor, start, expected)
        type Case<'a> = (&'a [i32], usize, usize, usize, &'a [&'a [i32]]);
        let cases: &[Case] = &[
            (
                &[1, 2, 3],
                6,
                2,
                0,
                &[&[1, 2], &[2, 3], &[3, 1], &[1, 3], &[2, 1], &[3, 2]],
            ),
            (&[1, 2, 3], 3, 3, 0, &[&[1, 2, 3], &[2, 3, 1], &[3, 1, 2]]),
            (&[1, 2, 3], 3, 1, 1, &[&[2], &[3], &[1]]),
            (&[0, 1, 2, 3, 4], 2, 3, 2, &[&[2, 0, 1], &[3, 1, 2]]),
            // Input order does not matter: brokers are sorted by id.
            (&[3, 1, 2], 2, 2, 0, &[&[1, 2], &[2, 3]]),
            (&[7], 2, 1, 5, &[&[7], &[7]]),
        ];
        for (ids, partitions, rf, start, want) in cases {
            let got = place_replicas(&plain(ids), *partitions, *rf, *start).unwrap();
            let want: Vec<Vec<i32>> = want.iter().map(|r| r.to_vec()).collect();
            assert_eq!(
                got, want,
                "brokers {ids:?} partitions {partitions} rf {rf} start {start}"
            );
        }
    }

    #[test]
    fn replication_factor_is_checked() {
        let brokers = plain(&[1, 2]);
        for rf in [0, 3] {
            assert!(matches!(
                place_replicas(&brokers, 1, rf, 0),
                Err(MetadataError::InvalidReplicationFactor(_))
            ));
        }
        assert!(matches!(
            place_replicas(&[], 1, 1, 0),
            Err(MetadataError::InvalidReplicationFactor(_))
        ));
        // A duplicated broker id counts once.
        assert!(place_replicas(&plain(&[1, 1]), 1, 2, 0).is_err());
    }

    #[test]
    fn leaders_spread_evenly_and_replicas_are_distinct() {
        for n in 1..=7 {
            let ids: Vec<i32> = (100..100 + n).collect();
            for rf in 1..=n as usize {
                for start in [0, 3, 11] {
                    let partitions = 3 * n as usize + 1;
                    let got = place_replicas(&plain(&ids), partitions, rf, start).unwrap();
                    assert_eq!(got.len(), partitions);
                    let mut leaders: HashMap<i32, usize> = HashMap::new();
                    for replicas in &got {
                        assert_eq!(replicas.len(), rf);
                        let distinct: BTreeSet<_> = replicas.iter().collect();
                        assert_eq!(distinct.len(), rf, "{replicas:?}");
                        assert!(replicas.iter().all(|r| ids.contains(r)));
                        *leaders.entry(replicas[0]).or_default() += 1;
                    }
                    let (min, max) = (
                        ids.iter()
                            .map(|i| leaders.get(i).copied().unwrap_or(0))
                            .min(),
                        leaders.values().copied().max(),
                    );
                    assert!(
                        max.unwrap() - min.unwrap() <= 1,
                        "n {n} rf {rf}: {leaders:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn successive_starts_rotate_leaders() {
        let brokers = plain(&[1, 2, 3]);
        let a = place_replicas(&brokers, 1, 1, 0).unwrap();
        let b = place_replicas(&brokers, 1, 1, 1).unwrap();
        let c = place_replicas(&brokers, 1, 1, 2).unwrap();
        assert_eq!((a[0][0], b[0][0], c[0][0]), (1, 2, 3));
    }

    #[test]
    fn rack_aware_table() {
        // Arranged by rack: a:1, b:3, c:5, a:2, b:4, c:6 -> [1, 3, 5, 2, 4, 6].
        let brokers = racked(&[(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]);
        let got = place_replicas(&brokers, 6, 2, 0).unwrap();
        assert_eq!(
            got,
            vec![
                vec![1, 3],
                vec![3, 5],
                vec![5, 2],
                vec![2, 4],
                vec![4, 6],
                vec![6, 1]
            ]
        );
    }

    #[test]
    fn rack_aware_never_doubles_a_rack_when_avoidable() {
        let rack_of: HashMap<i32, &str> =
            [(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b"), (6, "c")].into();
        let brokers = racked(&rack_of.iter().map(|(i, r)| (*i, *r)).collect::<Vec<_>>());
        for rf in 1..=6 {
            for start in 0..6 {
                let got = place_replicas(&brokers, 12, rf, start).unwrap();
                for replicas in &got {
                    let distinct: BTreeSet<_> = replicas.iter().collect();
                    assert_eq!(distinct.len(), rf, "{replicas:?}");
                    let used: BTreeSet<_> = replicas.iter().map(|b| rack_of[b]).collect();
                    assert_eq!(used.len(), rf.min(3), "rf {rf} start {start}: {replicas:?}");
                }
                let mut leaders: HashMap<i32, usize> = HashMap::new();
                for replicas in &got {
                    *leaders.entry(replicas[0]).or_default() += 1;
                }
                assert!(leaders.values().all(|&c| c == 2), "{leaders:?}");
            }
        }
    }

    #[test]
    fn partial_racks_fall_back_to_round_robin() {
        let brokers = vec![(1, Some("a".to_string())), (2, None), (3, Some("a".into()))];
        assert_eq!(
            place_replicas(&brokers, 3, 2, 0).unwrap(),
            place_replicas(&plain(&[1, 2, 3]), 3, 2, 0).unwrap()
        );
    }
}
