//! Kafka wire protocol: framing, headers, supported versions, RecordBatch validation.

pub mod batch;
