//! Kafka error codes for domain errors: the one place where what went
//! wrong below `server` becomes the code a client sees.

use kafka_protocol::error::ResponseError;

use crate::broker::ProposeError;
use crate::controller::records::MetadataError;
use crate::controller::Error as ControllerError;
use crate::group::GroupError;
use crate::log::Error as LogError;
use crate::protocol::batch::Error as BatchError;
use crate::replication::partition::AckError;
use crate::replication::producer_state::SequenceError;
use crate::replication::PartitionError;

/// Kafka's error code for a coordinator error.
pub fn group(e: &GroupError) -> ResponseError {
    match e {
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
    }
}

pub fn metadata(e: &MetadataError) -> ResponseError {
    match e {
        MetadataError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        MetadataError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        MetadataError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        MetadataError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        MetadataError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        MetadataError::InvalidConfig(_) => ResponseError::InvalidConfig,
        MetadataError::StaleBrokerEpoch(_) => ResponseError::StaleBrokerEpoch,
        MetadataError::UnknownGroup(_) => ResponseError::GroupIdNotFound,
        MetadataError::NotCoordinator(_) => ResponseError::NotCoordinator,
        MetadataError::FencedLeaderEpoch(_) => ResponseError::FencedLeaderEpoch,
        MetadataError::InvalidUpdateVersion(_) => ResponseError::InvalidUpdateVersion,
        MetadataError::IneligibleReplica(_) => ResponseError::IneligibleReplica,
        MetadataError::NotBatchable(_) => ResponseError::UnknownServerError,
    }
}

pub fn controller(e: &ControllerError) -> ResponseError {
    match e {
        ControllerError::NotLeader { .. } => ResponseError::NotController,
        ControllerError::Unavailable(_) => ResponseError::RequestTimedOut,
        _ => ResponseError::UnknownServerError,
    }
}

pub fn batch(e: &BatchError) -> ResponseError {
    match e {
        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::InvalidRecord(_) => ResponseError::InvalidRecord,
        BatchError::UnsupportedCompression(_) => ResponseError::UnsupportedCompressionType,
        _ => ResponseError::CorruptMessage,
    }
}

/// A refused or failed metadata change.
pub fn propose(e: &ProposeError) -> ResponseError {
    match e {
        ProposeError::Rejected(e) => metadata(e),
        ProposeError::Controller(e) => controller(e),
    }
}

/// A partition's refusal of an append or a read.
pub fn partition(e: &PartitionError) -> ResponseError {
    match e {
        PartitionError::NotLeader => ResponseError::NotLeaderOrFollower,
        PartitionError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        PartitionError::Sequence(SequenceError::InvalidEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
        // Retriable: the producer resends the failed batch and this one,
        // in order, instead of resetting its sequence (see
        // `ProducerStates::check`).
        PartitionError::Sequence(SequenceError::AfterFailedAppend { .. }) => {
            ResponseError::KafkaStorageError
        }
        // Retriable and not written: the batch comes back after the one
        // missing before it (see `ProducerStates::hold_gap`).
        PartitionError::Sequence(SequenceError::AheadOfMissing { .. }) => {
            ResponseError::NotEnoughReplicas
        }
        PartitionError::Sequence(_) => ResponseError::OutOfOrderSequenceNumber,
        PartitionError::Log(LogError::OffsetOutOfRange { .. }) => ResponseError::OffsetOutOfRange,
        _ => ResponseError::KafkaStorageError,
    }
}

/// Why an acks=-1 write was not acknowledged.
pub fn ack(e: &AckError) -> ResponseError {
    match e {
        AckError::NotEnoughReplicasAfterAppend { .. } => {
            ResponseError::NotEnoughReplicasAfterAppend
        }
        AckError::TimedOut => ResponseError::RequestTimedOut,
        AckError::LostLeadership => ResponseError::NotLeaderOrFollower,
    }
}

/// Checks a client's `current_leader_epoch` against ours (KIP-320).
pub fn leader_epoch(requested: i32, ours: i32) -> Option<ResponseError> {
    if requested < 0 || requested == ours {
        None
    } else if requested < ours {
        Some(ResponseError::FencedLeaderEpoch)
    } else {
        Some(ResponseError::UnknownLeaderEpoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_behind_a_failed_one_is_a_storage_error_not_a_gap() {
        let behind = PartitionError::Sequence(SequenceError::AfterFailedAppend {
            expected: 5,
            got: 10,
        });
        assert_eq!(partition(&behind), ResponseError::KafkaStorageError);
        let gap = PartitionError::Sequence(SequenceError::OutOfOrder {
            expected: 5,
            got: 10,
        });
        assert_eq!(partition(&gap), ResponseError::OutOfOrderSequenceNumber);
        let io = PartitionError::Log(LogError::Io {
            op: "write",
            path: "x".into(),
            source: std::io::Error::from_raw_os_error(28),
        });
        assert_eq!(partition(&io), ResponseError::KafkaStorageError);
        assert!(ResponseError::KafkaStorageError.is_retriable());
    }

    #[test]
    fn leader_epoch_fencing() {
        assert_eq!(leader_epoch(-1, 5), None);
        assert_eq!(leader_epoch(5, 5), None);
        assert_eq!(leader_epoch(4, 5), Some(ResponseError::FencedLeaderEpoch));
        assert_eq!(leader_epoch(6, 5), Some(ResponseError::UnknownLeaderEpoch));
    }
}
