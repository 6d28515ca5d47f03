//! The Raft transport between controller voters.
//!
//! Today the quorum has a single voter, so there is never a peer to call:
//! every RPC fails as `Unreachable`, which openraft treats as "back off and
//! retry". The gRPC transport over the CONTROLLER listener replaces
//! `UnreachableClient` behind the same `RaftNetworkFactory`, so the rest of
//! the controller does not change when it arrives.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};

use super::TypeConfig;

type NodeId = u64;

/// Creates one client per peer voter.
#[derive(Clone, Debug, Default)]
pub struct NetworkFactory;

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = UnreachableClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        UnreachableClient {
            target,
            addr: node.addr.clone(),
        }
    }
}

/// A client for a peer that cannot be reached: no transport is wired yet.
#[derive(Debug)]
pub struct UnreachableClient {
    target: NodeId,
    addr: String,
}

impl UnreachableClient {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        let err = std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            format!(
                "no Raft transport to controller {} at {}: this build runs a single-voter quorum",
                self.target, self.addr
            ),
        );
        RPCError::Unreachable(Unreachable::new(&err))
    }
}

impl RaftNetwork<TypeConfig> for UnreachableClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}
