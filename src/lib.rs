//! Runnel: a replicated, Kafka-wire-compatible message broker.
//!
//! The module layout follows `ARCHITECTURE.md`: `protocol` (wire format) and
//! `log` (partition storage) at the bottom, `controller` (Raft metadata) and
//! `broker` (local partitions) in the middle, `server` (the Kafka listener)
//! and `admin` (the CLI's client) on top.

pub mod admin;
pub mod broker;
pub mod config;
pub mod controller;
pub mod group;
pub mod log;
pub mod metrics;
pub mod protocol;
pub mod replication;
pub mod rpc;
pub mod security;
pub mod server;
pub mod telemetry;

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
