//! The admin CLI's client side: a small async Kafka client (one TCP connection
//! per broker, ApiVersions negotiation, metadata-driven leader routing) and the
//! subcommands built on it that mirror Kafka's scripts (`kafka-topics.sh`,
//! `kafka-console-producer.sh`, `kafka-console-consumer.sh`,
//! `kafka-get-offsets.sh`, `kafka-broker-api-versions.sh`).
//!
//! It speaks only the public Kafka protocol, exactly as a stock client would,
//! so it never reaches into broker internals and doubles as a wire-level check
//! of the server.

pub mod cli;
pub mod client;
pub mod configs;
pub mod conn;
mod consumer;
pub mod delete_records;
mod error_text;
mod get_offsets;
pub mod groups;
mod groups_cli;
pub mod healthcheck;
pub mod murmur2;
pub mod perf;
mod producer;
mod quorum;
mod topics;

use kafka_protocol::messages::ApiKey;

/// Errors of the admin client. `Kafka` carries an error code returned by a
/// broker; every other variant is a local or transport failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid bootstrap server '{0}': expected host:port")]
    InvalidAddress(String),
    #[error("connection to {addr} failed: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error on the connection to {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {ms} ms waiting for {what} from {addr}")]
    Timeout {
        addr: String,
        what: String,
        ms: u128,
    },
    #[error("{addr} closed the connection after {got} of {expected} bytes of a response")]
    Truncated {
        addr: String,
        got: usize,
        expected: usize,
    },
    #[error("{addr} sent a response of {size} bytes, more than the limit of {limit} bytes")]
    ResponseTooLarge {
        addr: String,
        size: i64,
        limit: usize,
    },
    #[error("{addr} sent an invalid response size {size}")]
    InvalidFrameSize { addr: String, size: i32 },
    #[error("{addr} answered correlation id {got}, expected {expected}")]
    CorrelationMismatch {
        addr: String,
        expected: i32,
        got: i32,
    },
    #[error("cannot encode {api:?} v{version}: {message}")]
    Encode {
        api: ApiKey,
        version: i16,
        message: String,
    },
    #[error("cannot decode {api:?} v{version} response from {addr}: {message}")]
    Decode {
        addr: String,
        api: ApiKey,
        version: i16,
        message: String,
    },
    #[error("the broker at {addr} does not support {api:?} (client supports v{client_min} to v{client_max})")]
    UnsupportedVersion {
        addr: String,
        api: ApiKey,
        client_min: i16,
        client_max: i16,
    },
    #[error("{}", kafka_text(*.code, .message.as_deref()))]
    Kafka { code: i16, message: Option<String> },
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),
    #[error("no broker in {0} is reachable")]
    NoBrokerReachable(String),
    #[error("broker {0} is not in the cluster metadata")]
    UnknownBroker(i32),
    #[error("{0}")]
    Metadata(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error from a broker's error code, keeping the broker's own message
    /// when it sent one (Kafka shows that one rather than the default text).
    pub fn kafka(code: i16, message: Option<&str>) -> Self {
        Error::Kafka {
            code,
            message: message.filter(|m| !m.is_empty()).map(str::to_owned),
        }
    }

    /// The broker error code, if this error came from a broker response.
    pub fn code(&self) -> Option<i16> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether a fresh look at the metadata may fix this: the leader moved,
    /// the topic is still being created, or the connection broke.
    pub fn needs_metadata_refresh(&self) -> bool {
        match self {
            Error::Kafka { code, .. } => is_metadata_error(*code),
            Error::Connect { .. }
            | Error::Io { .. }
            | Error::Timeout { .. }
            | Error::Truncated { .. }
            | Error::NoBrokerReachable(_)
            | Error::UnknownBroker(_) => true,
            _ => false,
        }
    }
}

/// Error codes after which a client refreshes metadata and retries.
pub(crate) fn is_metadata_error(code: i16) -> bool {
    matches!(
        code,
        3   // UNKNOWN_TOPIC_OR_PARTITION
        | 5 // LEADER_NOT_AVAILABLE
        | 6 // NOT_LEADER_OR_FOLLOWER
        | 7 // REQUEST_TIMED_OUT
        | 8 // BROKER_NOT_AVAILABLE
        | 9 // REPLICA_NOT_AVAILABLE
        | 13 // NETWORK_EXCEPTION
        | 74 // FENCED_LEADER_EPOCH
        | 75 // UNKNOWN_LEADER_EPOCH
        | 100 // UNKNOWN_TOPIC_ID
        | 103 // INCONSISTENT_TOPIC_ID
    )
}

/// Kafka's rendering of an error code: the broker's message if any, else the
/// default text Kafka's Java client uses for that code.
pub(crate) fn kafka_text(code: i16, message: Option<&str>) -> String {
    match message {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => match error_text::default_message(code) {
            Some(text) => text.to_owned(),
            None => format!("Unknown error code {code}."),
        },
    }
}

/// Current wall-clock time in milliseconds since the epoch, the unit of
/// Kafka record timestamps.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
