//! Kafka wire protocol: framing, request and response headers, the table of
//! supported API versions, RecordBatch validation, and bounded decompression
//! of a batch's records.
//!
//! Message bodies are the `kafka-protocol` crate's types (vendored with
//! allocation guards, see `vendor/README.md`). Nothing here knows about
//! sockets or tokio: the server feeds bytes in and writes bytes out.

pub mod batch;
pub mod build;
pub mod codec;
pub mod consumer_protocol;
pub mod decompress;
pub mod legacy;
pub mod message_set;
pub mod offset_spec;
pub mod rewrite;
pub mod versions;

pub use codec::{
    decode_request, encode_api_versions_fallback, encode_response, frame_length, Decoded,
    ProtocolError, Request,
};
