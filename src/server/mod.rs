//! The Kafka listener: accept loop with a connection limit, and per
//! connection an in-order pipeline.
//!
//! Requests on a connection are *started* one at a time, in order (so two
//! pipelined produces to one partition append in the order sent), while the
//! waiting part of a request (an acks=-1 produce waiting for the high
//! watermark, a long-poll fetch) runs in the background; responses are
//! written strictly in request order. A malformed frame closes its
//! connection with a log line and nothing else.

pub mod dispatch;
pub mod error_code;
pub mod handlers;
pub mod lookup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::messages::ResponseKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, Semaphore};

use crate::broker::Broker;
use crate::config::Config;
use crate::controller::Controller;
use crate::protocol::{self, Decoded};

/// What the handlers share.
pub struct Ctx {
    pub config: Arc<Config>,
    pub broker: Arc<Broker>,
    pub controller: Controller,
    pub groups: Arc<crate::group::Coordinator>,
}

/// A handler's answer. `Later` runs in the background after the handler's
/// in-order part is done; its response still goes out in request order.
// One `Reply` per request, moved once: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    Now(ResponseKind),
    Later(BoxFuture<'static, ResponseKind>),
    /// No response at all (acks=0 produce).
    Nothing,
    /// Close the connection, logging why.
    Close(String),
}

/// How many requests of one connection may be waiting at once.
const PIPELINE_DEPTH: usize = 64;

/// Binds the listener now (so a port clash fails startup) and returns the
/// accept loop to run.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener, mut shutdown: broadcast::Receiver<()>) {
    // The first listener to start runs the group coordinator's writer.
    if let Some(records) = ctx.groups.take_records() {
        let writer = crate::group::writer::Writer::new(
            &ctx.config,
            ctx.controller.clone(),
            ctx.broker.clone(),
            ctx.groups.clone(),
        );
        tokio::spawn(writer.run(records));
    }
    let limit = Arc::new(Semaphore::new(ctx.config.max_connections));
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.recv() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.recv() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                let ctx = ctx.clone();
                let stop = shutdown.resubscribe();
                tokio::spawn(async move {
                    metrics::gauge!("runnel_connections").increment(1.0);
                    if let Err(e) = connection(ctx, stream, peer, stop).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an I/O error");
                    }
                    metrics::gauge!("runnel_connections").decrement(1.0);
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep going.
                tracing::warn!(error = %e, "accept failed; backing off {:?}", backoff);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

enum Outgoing {
    Ready(bytes::Bytes),
    Pending {
        api: kafka_protocol::messages::ApiKey,
        version: i16,
        correlation_id: i32,
        fut: tokio::task::JoinHandle<ResponseKind>,
    },
}

async fn connection(
    ctx: Arc<Ctx>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: broadcast::Receiver<()>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Outgoing>(PIPELINE_DEPTH);

    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let bytes = match out {
                Outgoing::Ready(b) => b,
                Outgoing::Pending {
                    api,
                    version,
                    correlation_id,
                    fut,
                } => match fut.await {
                    Ok(body) => {
                        match protocol::encode_response(api, version, correlation_id, &body) {
                            Ok(b) => b,
                            Err(e) => {
                                tracing::error!(%peer, error = %e, "closing connection");
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(%peer, error = %e, "request task failed; closing connection");
                        return;
                    }
                },
            };
            metrics::counter!("runnel_network_bytes_out_total").increment(bytes.len() as u64);
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });

    let max = ctx.config.socket_request_max_bytes;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        let size = match protocol::frame_length(&buf, max) {
            Ok(Some(size)) => size,
            Ok(None) => {
                if let Some(need) = wanted(&buf) {
                    buf.reserve(need);
                }
                let n = tokio::select! {
                    n = rd.read_buf(&mut buf) => n?,
                    _ = shutdown.recv() => 0,
                };
                if n == 0 {
                    break;
                }
                metrics::counter!("runnel_network_bytes_in_total").increment(n as u64);
                continue;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        buf.advance(4);
        let frame = buf.split_to(size).freeze();
        let req = match protocol::decode_request(frame) {
            Ok(Decoded::Request(mut r)) => {
                r.client_host = format!("/{}", peer.ip());
                r
            }
            Ok(Decoded::ApiVersionsFallback { correlation_id }) => {
                let b = protocol::encode_api_versions_fallback(
                    correlation_id,
                    kafka_protocol::error::ResponseError::UnsupportedVersion.code(),
                );
                if tx.send(Outgoing::Ready(b)).await.is_err() {
                    break;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        let (api, version, correlation_id) = (req.api_key, req.version, req.header.correlation_id);
        metrics::counter!("runnel_requests_total", "api" => format!("{api:?}")).increment(1);
        let out = match dispatch::handle(ctx.clone(), req).await {
            Reply::Now(body) => {
                match protocol::encode_response(api, version, correlation_id, &body) {
                    Ok(b) => Outgoing::Ready(b),
                    Err(e) => {
                        tracing::error!(%peer, error = %e, "closing connection");
                        break;
                    }
                }
            }
            Reply::Later(fut) => Outgoing::Pending {
                api,
                version,
                correlation_id,
                fut: tokio::spawn(fut),
            },
            Reply::Nothing => continue,
            Reply::Close(why) => {
                tracing::warn!(%peer, ?api, version, "closing connection: {why}");
                break;
            }
        };
        if tx.send(out).await.is_err() {
            break;
        }
    }
    drop(tx);
    // Let responses already under way go out before the socket closes.
    let _ = writer.await;
    Ok(())
}

/// Once a frame's size is known, reserve room for all of it at once.
fn wanted(buf: &BytesMut) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]).max(0) as usize;
    (4 + size).checked_sub(buf.len())
}
