//! Partition replicas: role, leader epoch, high watermark, and the waiting
//! of acks=-1 produces and long-poll fetches on it.
//!
//! The high watermark is the lowest offset every ISR member has fsynced;
//! with one replica, what the local log has fsynced.

pub mod follower;
pub mod leader;
pub mod partition;
pub mod producer_state;
pub mod replicas;
pub mod service;
#[cfg(test)]
mod tests;
pub mod wait;

pub use partition::{Appended, Partition, PartitionError};
