//! The API versions Runnel serves: the single source of truth for
//! ApiVersions, for request validation and for the dispatch table's test
//! that every advertised key is routed.

use kafka_protocol::messages::ApiKey;

/// One served API. `advertised_min` may be below `min` where clients need to
/// see old versions advertised that the broker nevertheless rejects
/// (KAFKA-18659: Produce v0-2 are advertised, not served).
#[derive(Clone, Copy, Debug)]
pub struct ApiRange {
    pub key: ApiKey,
    pub advertised_min: i16,
    pub min: i16,
    pub max: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> ApiRange {
    ApiRange {
        key,
        advertised_min: min,
        min,
        max,
    }
}

/// Ranges from `COMPAT.md` (Kafka 4.x minimums after KIP-896).
pub const SUPPORTED: &[ApiRange] = &[
    ApiRange {
        key: ApiKey::Produce,
        advertised_min: 0,
        min: 3,
        max: 11,
    },
    api(ApiKey::Fetch, 4, 16),
    api(ApiKey::ListOffsets, 1, 8),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    api(ApiKey::ElectLeaders, 0, 2),
    api(ApiKey::DescribeProducers, 0, 0),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DescribeCluster, 0, 1),
    api(ApiKey::InitProducerId, 0, 5),
    api(ApiKey::DescribeQuorum, 0, 2),
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::FindCoordinator, 0, 6),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::OffsetDelete, 0, 0),
    api(ApiKey::DeleteRecords, 0, 2),
    // v0 is coded by hand (`protocol::legacy`).
    api(ApiKey::DescribeConfigs, 0, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
];

pub fn range(key: ApiKey) -> Option<&'static ApiRange> {
    SUPPORTED.iter().find(|r| r.key == key)
}

/// Whether a request of this key and version can be decoded and handled.
pub fn is_served(key: ApiKey, version: i16) -> bool {
    range(key).is_some_and(|r| version >= r.min && version <= r.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_ranges_fit_the_codec() {
        for r in SUPPORTED {
            let codec = r.key.valid_versions();
            assert!(r.advertised_min <= r.min && r.min <= r.max, "{:?}", r.key);
            let min = (r.min..r.max)
                .find(|v| !crate::protocol::legacy::is_hand_coded(r.key, *v))
                .unwrap_or(r.min);
            assert!(
                min >= codec.min && r.max <= codec.max,
                "{:?} {}..{} outside codec {}..{}",
                r.key,
                r.min,
                r.max,
                codec.min,
                codec.max
            );
        }
    }

    #[test]
    fn produce_v0_to_v2_advertised_but_not_served() {
        assert!(!is_served(ApiKey::Produce, 2));
        assert!(is_served(ApiKey::Produce, 3));
        assert_eq!(range(ApiKey::Produce).map(|r| r.advertised_min), Some(0));
        assert!(!is_served(ApiKey::Metadata, 13));
    }
}
