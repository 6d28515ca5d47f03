//! DescribeCluster (60), v0-1: brokers, controller and cluster id.

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterResponse, ResponseKind};

use crate::protocol::Request;
use crate::server::lookup::{broker_endpoint, controller_id};
use crate::server::{Ctx, Reply};

pub fn handle(ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let body = super::body!(req, DescribeCluster);
        let image = ctx.controller.image();
        let mut brokers = Vec::new();
        for b in image.brokers.values().filter(|b| !b.fenced) {
            if let Some((host, port)) = broker_endpoint(&ctx, b) {
                brokers.push(
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(b.id))
                        .with_host(super::str(host))
                        .with_port(port)
                        .with_rack(b.rack.clone().map(super::str)),
                );
            }
        }
        let _ = body.endpoint_type; // 1 = brokers; controllers are not exposed separately yet
        Reply::Now(ResponseKind::DescribeCluster(
            DescribeClusterResponse::default()
                .with_cluster_id(super::str(image.cluster_id.clone()))
                .with_controller_id(BrokerId(controller_id(&ctx)))
                .with_brokers(brokers)
                .with_cluster_authorized_operations(i32::MIN),
        ))
    })
}
