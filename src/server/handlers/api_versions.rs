//! ApiVersions (18), v0-4. Unknown future versions never reach here: the
//! codec answers them in the v0 layout with UNSUPPORTED_VERSION (KIP-511).

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::{ApiVersionsResponse, ResponseKind};

use crate::protocol::codec::advertised_api_versions;
use crate::protocol::Request;
use crate::server::{Ctx, Reply};

pub fn handle(_ctx: Arc<Ctx>, req: Request) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let _body = super::body!(req, ApiVersions);
        Reply::Now(ResponseKind::ApiVersions(
            ApiVersionsResponse::default()
                .with_api_keys(advertised_api_versions())
                .with_finalized_features_epoch(-1),
        ))
    })
}
