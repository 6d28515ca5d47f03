//! ListOffsets' lookups: the sentinel timestamps Kafka puts in the
//! `timestamp` field, decoded once, for the server and the CLI's client.

/// Which offset ListOffsets should look up. The negative timestamps are
/// Kafka's sentinels; each needs a minimum ListOffsets version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    Latest,
    Earliest,
    MaxTimestamp,
    EarliestLocal,
    LatestTiered,
    /// First offset whose timestamp is >= this many ms since the epoch.
    Timestamp(i64),
}

impl OffsetSpec {
    /// Reads Kafka's numeric form (-1, -2, -3, -4, -5 or a timestamp).
    pub fn from_i64(value: i64) -> Option<Self> {
        Some(match value {
            -1 => OffsetSpec::Latest,
            -2 => OffsetSpec::Earliest,
            -3 => OffsetSpec::MaxTimestamp,
            -4 => OffsetSpec::EarliestLocal,
            -5 => OffsetSpec::LatestTiered,
            t if t >= 0 => OffsetSpec::Timestamp(t),
            _ => return None,
        })
    }

    /// The value of ListOffsets' `timestamp` field.
    pub fn wire(self) -> i64 {
        match self {
            OffsetSpec::Latest => -1,
            OffsetSpec::Earliest => -2,
            OffsetSpec::MaxTimestamp => -3,
            OffsetSpec::EarliestLocal => -4,
            OffsetSpec::LatestTiered => -5,
            OffsetSpec::Timestamp(t) => t,
        }
    }

    /// ListOffsets version that introduced this lookup (KIP-734, KIP-405).
    pub fn min_version(self) -> i16 {
        match self {
            OffsetSpec::MaxTimestamp => 7,
            OffsetSpec::EarliestLocal => 8,
            OffsetSpec::LatestTiered => 9,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OffsetSpec;

    #[test]
    fn sentinels_round_trip() {
        for v in [-1, -2, -3, -4, -5, 0, 1_700_000_000_000] {
            assert_eq!(OffsetSpec::from_i64(v).map(OffsetSpec::wire), Some(v));
        }
        assert_eq!(OffsetSpec::from_i64(-1), Some(OffsetSpec::Latest));
        assert_eq!(OffsetSpec::from_i64(-2), Some(OffsetSpec::Earliest));
        assert_eq!(OffsetSpec::from_i64(0), Some(OffsetSpec::Timestamp(0)));
        assert_eq!(OffsetSpec::from_i64(-7), None);
    }
}
