//! Partition replicas: role, leader epoch, high watermark, and the waiting
//! of acks=-1 produces and long-poll fetches on it.
//!
//! With one replica the high watermark is what the local log has fsynced;
//! follower progress and ISR maintenance join here with replication.

pub mod partition;
pub mod producer_state;

pub use partition::{Appended, Partition, PartitionError};
