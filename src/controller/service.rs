//! The `Controller` gRPC service: decodes a request, hands it to this
//! node's controller, encodes the answer. Nothing else: Raft decisions stay
//! in openraft, forwarding decisions in [`Controller`].

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::observer::FollowRequest;
use super::records::MetadataCommand;
use super::{Controller, TypeConfig};
use crate::rpc::pb::controller_server::{Controller as ControllerRpc, ControllerServer};
use crate::rpc::pb::{Envelope, ProposeReply, ProposeRequest, RaftReply, RaftRequest};
use crate::rpc::{decode, encode, MAX_MESSAGE_BYTES};

/// The gRPC service, with the message limits of every node-to-node call.
pub fn service(controller: Controller) -> ControllerServer<Service> {
    ControllerServer::new(Service { controller })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

pub struct Service {
    controller: Controller,
}

impl Service {
    /// The Raft node, or an error for a peer that mistook this observer
    /// for a voter (its controller.quorum.voters disagrees with ours).
    fn raft(&self) -> Result<&openraft::Raft<TypeConfig>, Status> {
        self.controller.raft().ok_or_else(|| {
            Status::failed_precondition(format!(
                "node {} is not a controller voter (process.roles has no controller)",
                self.controller.node_id()
            ))
        })
    }
}

/// The metadata stream as gRPC sends it.
type MetadataStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Envelope, Status>> + Send>>;

fn raft_reply<T: serde::Serialize>(result: &T) -> Result<Response<RaftReply>, Status> {
    Ok(Response::new(RaftReply {
        payload: encode("Raft reply", result)?,
    }))
}

#[tonic::async_trait]
impl ControllerRpc for Service {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode("AppendEntries request", &request.into_inner().payload)?;
        raft_reply(&self.raft()?.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc: VoteRequest<u64> = decode("Vote request", &request.into_inner().payload)?;
        raft_reply(&self.raft()?.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> =
            decode("InstallSnapshot request", &request.into_inner().payload)?;
        raft_reply(&self.raft()?.install_snapshot(rpc).await)
    }

    async fn broker_heartbeat(
        &self,
        request: Request<Envelope>,
    ) -> Result<Response<Envelope>, Status> {
        let hb: super::liveness::Heartbeat = decode("heartbeat", &request.into_inner().payload)?;
        let reply = self.controller.heartbeat_here(&hb);
        Ok(Response::new(Envelope {
            payload: encode("heartbeat reply", &reply)?,
        }))
    }

    type BrokerSessionStream = MetadataStream;

    async fn broker_session(
        &self,
        request: Request<Envelope>,
    ) -> Result<Response<Self::BrokerSessionStream>, Status> {
        let open: super::liveness::SessionOpen =
            decode("session open", &request.into_inner().payload)?;
        let rx = self.controller.serve_session(open);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| {
            Ok(Envelope {
                payload: encode("session item", &item)?,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn quorum_status(
        &self,
        _request: Request<Envelope>,
    ) -> Result<Response<Envelope>, Status> {
        let status = self.controller.quorum_status_here();
        Ok(Response::new(Envelope {
            payload: encode("quorum status", &status)?,
        }))
    }

    type FollowMetadataStream = MetadataStream;

    async fn follow_metadata(
        &self,
        request: Request<Envelope>,
    ) -> Result<Response<Self::FollowMetadataStream>, Status> {
        let req: FollowRequest = decode("follow request", &request.into_inner().payload)?;
        let rx = self
            .controller
            .follow_stream(req)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| {
            Ok(Envelope {
                payload: encode("metadata stream item", &item)?,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeReply>, Status> {
        let cmd: MetadataCommand = decode("metadata command", &request.into_inner().command)?;
        let answer = self.controller.propose_forwarded(cmd).await;
        Ok(Response::new(ProposeReply {
            response: encode("forwarded proposal reply", &answer)?,
        }))
    }
}
