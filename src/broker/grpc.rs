//! The node's gRPC server on the CONTROLLER listener: the controller's
//! service (Raft, heartbeats, forwarded proposals, the metadata stream) and
//! replication's (followers' fetches), side by side.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio::net::TcpListener;

use super::Broker;
use crate::controller::Controller;

/// The broker, once it exists: the listener must serve Raft before the
/// broker has registered, and replication only after.
pub type BrokerSlot = Arc<OnceLock<Arc<Broker>>>;

/// Serves the controller's and the replication RPCs on `listener` until
/// `shutdown` completes.
pub async fn serve(
    controller: Controller,
    broker: BrokerSlot,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let replicas = Arc::new(move || broker.get().map(|b| b.replicas().clone()));
    crate::rpc::server()
        .add_service(crate::controller::service::service(controller))
        .add_service(crate::replication::service::service(replicas))
        .serve_with_incoming_shutdown(crate::rpc::incoming(listener), shutdown)
        .await
}
