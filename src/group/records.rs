//! The group records this coordinator proposes to the controller, each
//! stamped with this broker as coordinator and its broker epoch, so that
//! the controller refuses a stale coordinator's writes.

use crate::controller::image::MetadataImage;
use crate::controller::records::{MetadataCommand, OffsetCommit, StoredGroup};

/// This broker's epoch as the image knows it (-1 if unregistered).
pub fn coordinator_epoch(image: &MetadataImage, me: i32) -> i64 {
    image.brokers.get(&me).map_or(-1, |b| b.epoch)
}

/// A group's generation (or its going Empty).
pub fn store_group_command(
    image: &MetadataImage,
    me: i32,
    group: &str,
    record: StoredGroup,
) -> MetadataCommand {
    MetadataCommand::StoreGroup {
        group: group.to_string(),
        coordinator: me,
        coordinator_epoch: coordinator_epoch(image, me),
        record,
    }
}

/// Committed offsets of a member of `generation` (-1 with no member: a
/// simple commit), at this broker's wall clock.
pub fn commit_offsets_command(
    image: &MetadataImage,
    me: i32,
    group: String,
    generation: i32,
    member: String,
    offsets: Vec<OffsetCommit>,
) -> MetadataCommand {
    MetadataCommand::CommitOffsets {
        group,
        generation,
        member,
        offsets,
        coordinator: me,
        coordinator_epoch: coordinator_epoch(image, me),
        commit_time_ms: crate::now_ms(),
    }
}

/// The expiry of what has expired in `groups` by this broker's clock.
pub fn expire_offsets_command(
    image: &MetadataImage,
    me: i32,
    groups: Vec<String>,
    now_ms: i64,
    retention_ms: i64,
) -> MetadataCommand {
    MetadataCommand::ExpireOffsets {
        groups,
        coordinator: me,
        coordinator_epoch: coordinator_epoch(image, me),
        now_ms,
        retention_ms,
    }
}
