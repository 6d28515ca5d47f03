//! `runnel metadata-quorum` (kafka-metadata-quorum.sh): the controller
//! quorum's status and each voter's replication progress.

use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState};

/// `describe --status`, as kafka-metadata-quorum.sh prints it.
pub fn format_status(cluster_id: &str, p: &PartitionData, now_ms: i64) -> String {
    let leader_leo = leader_state(p).map_or(p.high_watermark, |l| l.log_end_offset);
    let followers: Vec<&ReplicaState> = p
        .current_voters
        .iter()
        .filter(|v| v.replica_id != p.leader_id)
        .collect();
    let max_lag = followers
        .iter()
        .map(|v| (leader_leo - v.log_end_offset).max(0))
        .max()
        .unwrap_or(0);
    let max_lag_ms = followers
        .iter()
        .map(|v| {
            if v.last_caught_up_timestamp < 0 {
                -1
            } else {
                (now_ms - v.last_caught_up_timestamp).max(0)
            }
        })
        .max()
        .unwrap_or(0);
    let ids = |v: &[ReplicaState]| {
        v.iter()
            .map(|r| r.replica_id.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "ClusterId:              {cluster_id}\n\
         LeaderId:               {}\n\
         LeaderEpoch:            {}\n\
         HighWatermark:          {}\n\
         MaxFollowerLag:         {max_lag}\n\
         MaxFollowerLagTimeMs:   {max_lag_ms}\n\
         CurrentVoters:          [{}]\n\
         CurrentObservers:       [{}]\n",
        p.leader_id.0,
        p.leader_epoch,
        p.high_watermark,
        ids(&p.current_voters),
        ids(&p.observers),
    )
}

fn leader_state(p: &PartitionData) -> Option<&ReplicaState> {
    p.current_voters
        .iter()
        .find(|v| v.replica_id == p.leader_id)
}

/// `describe --replication`: one row per voter and observer.
pub fn format_replication(p: &PartitionData) -> String {
    let leader_leo = leader_state(p).map_or(p.high_watermark, |l| l.log_end_offset);
    let mut out = String::from(
        "NodeId\tLogEndOffset\tLag\tLastFetchTimestamp\tLastCaughtUpTimestamp\tStatus\n",
    );
    let rows = p
        .current_voters
        .iter()
        .map(|v| {
            (
                v,
                if v.replica_id == p.leader_id {
                    "Leader"
                } else {
                    "Follower"
                },
            )
        })
        .chain(p.observers.iter().map(|v| (v, "Observer")));
    for (v, status) in rows {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{status}\n",
            v.replica_id.0,
            v.log_end_offset,
            (leader_leo - v.log_end_offset).max(0),
            v.last_fetch_timestamp,
            v.last_caught_up_timestamp,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::BrokerId;

    fn voter(id: i32, leo: i64, caught_up: i64) -> ReplicaState {
        ReplicaState::default()
            .with_replica_id(BrokerId(id))
            .with_log_end_offset(leo)
            .with_last_fetch_timestamp(caught_up)
            .with_last_caught_up_timestamp(caught_up)
    }

    #[test]
    fn status_reports_the_worst_follower() {
        let p = PartitionData::default()
            .with_leader_id(BrokerId(2))
            .with_leader_epoch(7)
            .with_high_watermark(100)
            .with_current_voters(vec![
                voter(2, 101, 1000),
                voter(1, 95, 400),
                voter(3, 101, 1000),
            ]);
        let s = format_status("abc", &p, 1000);
        assert!(s.contains("LeaderId:               2\n"), "{s}");
        assert!(s.contains("LeaderEpoch:            7\n"), "{s}");
        assert!(s.contains("HighWatermark:          100\n"), "{s}");
        assert!(s.contains("MaxFollowerLag:         6\n"), "{s}");
        assert!(s.contains("MaxFollowerLagTimeMs:   600\n"), "{s}");
        assert!(s.contains("CurrentVoters:          [2,1,3]\n"), "{s}");
        let r = format_replication(&p);
        assert!(
            r.lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("2\t101\t0\t") && l.ends_with("Leader")),
            "{r}"
        );
        assert!(
            r.lines()
                .nth(2)
                .is_some_and(|l| l.starts_with("1\t95\t6\t") && l.ends_with("Follower")),
            "{r}"
        );
    }
}
