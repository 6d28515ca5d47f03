//! Node-to-node gRPC on the CONTROLLER listener: the generated tonic code
//! for `proto/runnel.proto`, the one place where domain values become wire
//! payloads and back, and the pool of channels to peers.
//!
//! Payloads are serde_json of openraft's (and our controller's) own types:
//! the proto is an envelope, so nothing here has to track openraft's
//! structs field by field. Decoding a payload never trusts its size beyond
//! the gRPC message limit below.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

/// The generated messages, `controller_client` and `controller_server`.
pub mod pb {
    tonic::include_proto!("runnel.v1");
}

pub type Client = pb::controller_client::ControllerClient<Channel>;
pub type ReplicationClient = pb::replication_client::ReplicationClient<Channel>;

/// HTTP/2 flow-control windows: the 64 KiB default would hold a replica
/// fetch of a few MiB to a trickle per round trip.
pub const STREAM_WINDOW: u32 = 16 << 20;
pub const CONNECTION_WINDOW: u32 = 32 << 20;

/// The largest gRPC message either side sends or accepts. Snapshot chunks
/// are the big ones: JSON spells each byte of a chunk as up to four
/// characters, so this leaves room for `snapshot_max_chunk_size` (see the
/// controller's Raft config) with margin.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A peer that does not accept a TCP connection within this is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 pings notice a peer that vanished without closing the connection
/// (power loss, partition), which TCP alone notices only after minutes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid controller address {addr:?}: {source}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Decode { .. } => tonic::Status::invalid_argument(e.to_string()),
            _ => tonic::Status::internal(e.to_string()),
        }
    }
}

/// A gRPC server with the windows and keepalives of every node-to-node
/// connection; the services are added by their owners, and it serves the
/// connections of [`incoming`].
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
}

/// The connections accepted on `listener`, with Nagle's algorithm off.
///
/// tonic's own `tcp_nodelay` applies only to listeners tonic binds itself,
/// not to an incoming stream. Without it a small answer (a follower's fetch
/// with one record) could wait for the peer's delayed ACK, about 40 ms on
/// Linux, and every acks=-1 produce paid that about three times.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Encodes `value` as a payload; `what` names it in the error.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| Error::Encode { what, source })
}

/// Decodes a payload that `encode` made on the peer.
pub fn decode<T: DeserializeOwned>(what: &'static str, payload: &[u8]) -> Result<T> {
    serde_json::from_slice(payload).map_err(|source| Error::Decode { what, source })
}

/// One lazily connected HTTP/2 channel per peer address, shared by the Raft
/// transport and proposal forwarding. A channel reconnects by itself after
/// the peer comes back, so entries are never evicted. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Channels {
    by_addr: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Channels {
    /// A client for the peer at `addr` (host:port). Must be called inside
    /// the tokio runtime: the channel's worker task is spawned on it.
    pub fn client(&self, addr: &str) -> Result<Client> {
        Ok(
            pb::controller_client::ControllerClient::new(self.channel(addr)?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    /// A replication client for the peer at `addr`.
    pub fn replication(&self, addr: &str) -> Result<ReplicationClient> {
        Ok(
            pb::replication_client::ReplicationClient::new(self.channel(addr)?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    fn channel(&self, addr: &str) -> Result<Channel> {
        let mut map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match map.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|source| Error::Address {
                        addr: addr.to_string(),
                        source,
                    })?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true)
                    .initial_stream_window_size(STREAM_WINDOW)
                    .initial_connection_window_size(CONNECTION_WINDOW)
                    .connect_lazy();
                map.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use openraft::error::{Fatal, RaftError};
    use openraft::raft::VoteResponse;
    use openraft::Vote;

    use super::*;

    #[test]
    fn a_remote_raft_error_survives_the_round_trip() {
        let answer: std::result::Result<VoteResponse<u64>, RaftError<u64>> =
            Err(RaftError::Fatal(Fatal::Stopped));
        let bytes = encode("Raft reply", &answer).unwrap();
        let back: std::result::Result<VoteResponse<u64>, RaftError<u64>> =
            decode("Raft reply", &bytes).unwrap();
        assert!(matches!(back, Err(RaftError::Fatal(Fatal::Stopped))));

        let granted = VoteResponse::new(Vote::new(3, 2), None, true);
        let answer: std::result::Result<VoteResponse<u64>, RaftError<u64>> = Ok(granted.clone());
        let bytes = encode("Raft reply", &answer).unwrap();
        let back: std::result::Result<VoteResponse<u64>, RaftError<u64>> =
            decode("Raft reply", &bytes).unwrap();
        assert_eq!(back.unwrap(), granted);
    }

    #[test]
    fn a_garbage_payload_is_invalid_argument_not_a_panic() {
        for payload in [&b""[..], b"\xff\xfe", b"{\"vote\":", b"[1,2,3]"] {
            let e = decode::<VoteResponse<u64>>("Vote reply", payload).unwrap_err();
            assert!(e.to_string().contains("Vote reply"), "{e}");
            assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
        }
    }

    #[tokio::test]
    async fn channels_are_shared_per_address_and_bad_addresses_are_errors() {
        let pool = Channels::default();
        pool.client("127.0.0.1:1").unwrap();
        pool.client("127.0.0.1:1").unwrap();
        pool.client("127.0.0.1:2").unwrap();
        assert_eq!(pool.by_addr.lock().unwrap().len(), 2);
        assert!(matches!(
            pool.client("bad host:x"),
            Err(Error::Address { .. })
        ));
    }
}
