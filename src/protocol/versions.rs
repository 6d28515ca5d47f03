//! The API versions Runnel serves: the single source of truth for
//! ApiVersions, for request validation and for the dispatch table's test
//! that every advertised key is routed.

use kafka_protocol::messages::ApiKey;

/// One served API: every version from `min` to `max` is decoded, routed
/// and answered.
#[derive(Clone, Copy, Debug)]
pub struct ApiRange {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> ApiRange {
    ApiRange { key, min, max }
}

/// The versions Kafka 3.9 served for these APIs, from its oldest (which
/// Kafka 4 dropped, KIP-896, and `protocol::legacy` codes by hand) up. See
/// `COMPAT.md`.
pub const SUPPORTED: &[ApiRange] = &[
    api(ApiKey::Produce, 0, 11),
    api(ApiKey::Fetch, 0, 16),
    api(ApiKey::ListOffsets, 0, 8),
    api(ApiKey::OffsetForLeaderEpoch, 0, 4),
    api(ApiKey::ElectLeaders, 0, 2),
    api(ApiKey::DescribeProducers, 0, 0),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 0, 7),
    api(ApiKey::DeleteTopics, 0, 6),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DescribeCluster, 0, 1),
    api(ApiKey::DescribeLogDirs, 1, 4),
    api(ApiKey::DescribeTopicPartitions, 0, 0),
    api(ApiKey::InitProducerId, 0, 5),
    api(ApiKey::DescribeQuorum, 0, 2),
    api(ApiKey::OffsetCommit, 0, 9),
    api(ApiKey::OffsetFetch, 0, 9),
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
    fn served_ranges_fit_the_codec_or_are_hand_coded() {
        use crate::protocol::legacy::is_hand_coded;
        for r in SUPPORTED {
            let codec = r.key.valid_versions();
            assert!(r.min <= r.max && r.max <= codec.max, "{:?}", r.key);
            for v in r.min..=r.max {
                assert!(
                    v >= codec.min || is_hand_coded(r.key, v),
                    "{:?} v{v} is neither in the codec ({}..{}) nor hand-coded",
                    r.key,
                    codec.min,
                    codec.max
                );
                assert!(
                    !(v >= codec.min && is_hand_coded(r.key, v)),
                    "{:?} v{v} is hand-coded though the codec has it",
                    r.key
                );
            }
        }
    }

    #[test]
    fn kafka_3_9_minimums_are_served() {
        for key in [
            ApiKey::Produce,
            ApiKey::Fetch,
            ApiKey::ListOffsets,
            ApiKey::OffsetCommit,
            ApiKey::OffsetFetch,
            ApiKey::CreateTopics,
            ApiKey::DeleteTopics,
            ApiKey::OffsetForLeaderEpoch,
        ] {
            assert!(is_served(key, 0), "{key:?} v0");
        }
        assert!(!is_served(ApiKey::Metadata, 13));
    }
}
