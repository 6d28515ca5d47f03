//! The Raft transport between controller voters: one tonic client per
//! peer, over the peer's CONTROLLER listener (`BasicNode::addr`), speaking
//! the `Controller` service of `proto/runnel.proto` (served by
//! `rpc::server`).
//!
//! Error mapping, which decides how openraft retries:
//! * the peer cannot be reached (connection refused or reset, connect
//!   timeout: gRPC `UNAVAILABLE`) is `Unreachable`, and openraft backs off
//!   before calling it again;
//! * any other transport or decoding failure is a `NetworkError`, retried
//!   at once;
//! * an error the peer's Raft returned is a `RemoteError`: the RPC arrived
//!   and was answered.

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::TypeConfig;
use crate::rpc::{self, pb, Channels};

type NodeId = u64;

/// Creates one client per peer voter, on channels shared with proposal
/// forwarding.
#[derive(Clone, Debug, Default)]
pub struct NetworkFactory {
    channels: Channels,
}

impl NetworkFactory {
    pub fn new(channels: Channels) -> NetworkFactory {
        NetworkFactory { channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            target,
            node: node.clone(),
            // A bad address fails every RPC with the reason, rather than
            // failing here where openraft gives no way to report it.
            client: self.channels.client(&node.addr).map_err(|e| e.to_string()),
        }
    }
}

/// The gRPC client for one peer voter.
pub struct PeerClient {
    target: NodeId,
    node: BasicNode,
    client: Result<rpc::Client, String>,
}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl PeerClient {
    fn network_error<E: std::error::Error>(&self, msg: String) -> RPCError<NodeId, BasicNode, E> {
        let err = std::io::Error::other(format!(
            "controller {} at {}: {msg}",
            self.target, self.node.addr
        ));
        RPCError::Network(NetworkError::new(&err))
    }

    /// Sends `req` as `kind` and decodes the peer's `Result<Resp, E>`.
    async fn call<Req, Resp, E>(
        &mut self,
        kind: Rpc,
        req: &Req,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            rpc::encode("Raft request", req).map_err(|e| self.network_error(e.to_string()))?;
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(self.network_error(e.clone())),
        };
        let request = pb::RaftRequest { payload };
        let reply = match kind {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = match reply {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                let err = std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    format!(
                        "controller {} at {} is unreachable: {}",
                        self.target,
                        self.node.addr,
                        status.message()
                    ),
                );
                return Err(RPCError::Unreachable(Unreachable::new(&err)));
            }
            Err(status) => {
                return Err(self.network_error(format!(
                    "{:?}: {}",
                    status.code(),
                    status.message()
                )))
            }
        };
        let answer: Result<Resp, E> = rpc::decode("Raft reply", &reply.payload)
            .map_err(|e| self.network_error(e.to_string()))?;
        answer.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::AppendEntries, &rpc).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc).await
    }
}
