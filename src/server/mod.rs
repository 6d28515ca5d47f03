//! The Kafka listener: accept loop with a connection limit, and per
//! connection an in-order pipeline.
//!
//! Requests on a connection are *started* one at a time, in order (so two
//! pipelined produces to one partition append in the order sent), while the
//! waiting part of a request (an acks=-1 produce waiting for the high
//! watermark, a long-poll fetch) runs in the background; responses are
//! written strictly in request order. A malformed frame closes its
//! connection with a log line and nothing else.
//!
//! Shutdown drains: once the shutdown signal fires, the listener accepts no
//! more connections, and each connection stops reading, answers every
//! request it has read (in order, as always), closes, and ends. `serve`
//! returns when every connection has ended, or after `SHUTDOWN_GRACE`,
//! when what is left is dropped with a warning.

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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::config::Config;
use crate::controller::Controller;
use crate::protocol::{self, Decoded};

/// What the handlers share.
#[derive(Clone)]
pub struct Ctx {
    pub config: Arc<Config>,
    /// The listener this context serves (`PLAINTEXT`, `INTERNAL`, …):
    /// Metadata answers with each broker's endpoint on the same listener.
    pub listener: String,
    pub broker: Arc<Broker>,
    pub controller: Controller,
    pub groups: Arc<crate::group::Coordinator>,
    /// Offset commits go through it, many to a Raft entry.
    pub batcher: crate::controller::batcher::Batcher,
    /// Which brokers Metadata lists (a fenced one for a short while).
    pub listing: Arc<lookup::Listing>,
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

/// How long a stopping listener waits for its connections to answer what
/// they read. The broker itself makes no request wait longer than 10 s (a
/// controller proposal, applying the image a request needs, storing a
/// group's generation). The other waits are the client's own (an acks=-1
/// produce's `timeout_ms`, a fetch's `max_wait_ms`, a JoinGroup's rebalance
/// timeout), and a controlled shutdown cuts the long ones short: a fenced
/// broker leads nothing, so every acks=-1 wait ends with
/// NOT_LEADER_OR_FOLLOWER, and a fetch returns after its `max_wait_ms`
/// (500 ms by default in librdkafka and the Java client). So the broker's
/// own 10 s and room to write the answers; what still waits after that
/// waits on a client (a rebalance, a socket nobody reads).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(12);

/// After the last answer of a connection closed by shutdown, how long it
/// keeps reading (and discarding) what the client still sends. Closing a
/// socket with unread input sends a reset, which can destroy answers the
/// client has received but not read yet (the "lingering close" of RFC 9112
/// section 9.6); reading on until the client closes, for a bounded time,
/// makes the close a plain end of stream after the answers.
const LINGER: Duration = Duration::from_secs(2);

/// Binds the listener now (so a port clash fails startup) and returns the
/// accept loop to run.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts and serves connections until `shutdown` fires, then drains them
/// (see the module comment): returns once none is left.
/// On a TLS listener (`tls`), each connection's handshake comes first, in
/// the connection's own task, for at most `HANDSHAKE_TIMEOUT`.
pub async fn serve(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    tls: Option<Arc<crate::security::tls::Acceptor>>,
    mut shutdown: broadcast::Receiver<()>,
) {
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
    let mut connections = JoinSet::new();
    // Set when the grace has run out: connections drop their unanswered requests.
    let (abandon, abandoned) = watch::channel(false);
    let mut backoff = Duration::from_millis(10);
    loop {
        // Reap the connections that ended.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            _ = shutdown.recv() => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            biased;
            _ = shutdown.recv() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                // A new receiver sees only what is sent from now on: if the
                // shutdown came just before, this loop's receiver holds it.
                let stop = shutdown.resubscribe();
                if !shutdown.is_empty() {
                    break;
                }
                let (ctx, abandoned, tls) = (ctx.clone(), abandoned.clone(), tls.clone());
                connections.spawn(async move {
                    let listener = ctx.listener.clone();
                    metrics::counter!("runnel_connections_accepted_total", "listener" => listener.clone()).increment(1);
                    let open = metrics::gauge!("runnel_connections", "listener" => listener);
                    open.increment(1.0);
                    // Plain TCP splits without a lock; TLS shares its
                    // session state between the halves.
                    let ended = match tls {
                        None => {
                            let _ = stream.set_nodelay(true);
                            let (rd, wr) = stream.into_split();
                            connection(ctx, rd, wr, peer, stop, abandoned).await
                        }
                        Some(tls) => match handshake(&tls, stream, peer).await {
                            Some(stream) => {
                                let (rd, wr) = tokio::io::split(stream);
                                connection(ctx, rd, wr, peer, stop, abandoned).await
                            }
                            None => Ok(()),
                        },
                    };
                    if let Err(e) = ended {
                        tracing::debug!(%peer, error = %e, "connection ended with an I/O error");
                    }
                    open.decrement(1.0);
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
    // New connections are refused from here on.
    drop(listener);
    drain(connections, abandon).await;
}

/// Waits for every connection to end, for `SHUTDOWN_GRACE`. Then the ones
/// left drop the answers they still owe (their clients see the connection
/// close, as if the broker had gone) and end as soon as the request they are
/// starting, if any, is started: an append or a controller proposal is
/// never cut in the middle, so that no partition is closed under it. Only if
/// even that takes another grace are they aborted.
///
/// The connections are a `JoinSet` rather than mini-redis's
/// drop-to-complete channel: it waits for them the same way, and can also
/// abort what is left, which a channel cannot.
async fn drain(mut connections: JoinSet<()>, abandon: watch::Sender<bool>) {
    if connections.is_empty() {
        return;
    }
    tracing::info!(
        connections = connections.len(),
        "answering the requests already read before closing"
    );
    if all_ended(&mut connections).await.is_ok() {
        return;
    }
    tracing::warn!(
        connections = connections.len(),
        "connections still answering after the {SHUTDOWN_GRACE:?} shutdown grace; dropping their unanswered requests"
    );
    abandon.send_replace(true);
    if all_ended(&mut connections).await.is_err() {
        tracing::error!(
            connections = connections.len(),
            "connections still starting a request {SHUTDOWN_GRACE:?} after being dropped; aborting them"
        );
        connections.shutdown().await;
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

/// Why a connection stopped reading requests.
enum Stopped {
    /// The client closed its side.
    ClientClosed,
    /// The listener is shutting down.
    Shutdown,
    /// A malformed or refused request (closed with a log line), or the
    /// writer is gone (the client stopped reading, or the shutdown grace
    /// ran out).
    BrokerClosed,
}

/// The TLS handshake of a new connection on a TLS listener, and the
/// principal its certificate names: `None` (logged) when the handshake
/// fails or takes too long, or no principal can be made of the
/// certificate, and the connection is closed.
async fn handshake(
    tls: &crate::security::tls::Acceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    use crate::security::{principal, tls::HANDSHAKE_TIMEOUT};
    let _ = stream.set_nodelay(true);
    let listener = &tls.settings().listener;
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            metrics::counter!("runnel_tls_handshake_failures_total", "listener" => listener.clone()).increment(1);
            tracing::debug!(%peer, %listener, error = %e, "TLS handshake failed; closing the connection");
            return None;
        }
        Err(_) => {
            metrics::counter!("runnel_tls_handshake_failures_total", "listener" => listener.clone()).increment(1);
            tracing::debug!(%peer, %listener, "no TLS handshake within {HANDSHAKE_TIMEOUT:?}; closing the connection");
            return None;
        }
    };
    let who = match stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    {
        None => Ok(principal::ANONYMOUS.to_string()),
        Some(cert) => principal::of_certificate(cert, &tls.settings().principal_rules),
    };
    match who {
        Ok(who) => {
            tracing::debug!(%peer, %listener, principal = %who, "TLS connection");
            Some(stream)
        }
        Err(why) => {
            tracing::warn!(%peer, %listener, "refusing a client certificate: {why}");
            None
        }
    }
}

async fn connection<R, W>(
    ctx: Arc<Ctx>,
    mut rd: R,
    wr: W,
    peer: SocketAddr,
    mut shutdown: broadcast::Receiver<()>,
    abandoned: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Outgoing>(PIPELINE_DEPTH);
    let writer = tokio::spawn(write_answers(rx, wr, peer, abandoned));
    let stopped = read_requests(&ctx, &mut rd, peer, &mut shutdown, tx).await;
    // Let the answers already under way go out before the socket closes.
    let _ = writer.await;
    if let Ok(Stopped::Shutdown) = stopped {
        linger(&mut rd).await;
    }
    stopped.map(|_| ())
}

/// Writes the answers in request order, each once it is ready, until the
/// reader has stopped and every answer it queued is out; then ends the
/// stream. Drops the rest at once if `abandoned` becomes true.
async fn write_answers<W: AsyncWrite + Unpin + Send>(
    mut rx: mpsc::Receiver<Outgoing>,
    mut wr: W,
    peer: SocketAddr,
    mut abandoned: watch::Receiver<bool>,
) {
    let write_all = async move {
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
    };
    tokio::select! {
        _ = write_all => {}
        _ = abandoned.wait_for(|a| *a) => {}
    }
}

/// Reads requests and starts each in turn, queueing its answer for the
/// writer, until the client closes, the shutdown signal fires (checked
/// whenever more bytes are needed, so every whole request already read is
/// still started), or a request is refused.
async fn read_requests<R: AsyncRead + Unpin>(
    ctx: &Arc<Ctx>,
    rd: &mut R,
    peer: SocketAddr,
    shutdown: &mut broadcast::Receiver<()>,
    tx: mpsc::Sender<Outgoing>,
) -> std::io::Result<Stopped> {
    let max = ctx.config.socket_request_max_bytes;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut produced = false;
    loop {
        let size = match protocol::frame_length(&buf, max) {
            Ok(Some(size)) => size,
            Ok(None) => {
                if let Some(need) = wanted(&buf) {
                    buf.reserve(need);
                }
                let n = tokio::select! {
                    biased;
                    _ = shutdown.recv() => return Ok(Stopped::Shutdown),
                    n = rd.read_buf(&mut buf) => n?,
                };
                if n == 0 {
                    return Ok(Stopped::ClientClosed);
                }
                metrics::counter!("runnel_network_bytes_in_total").increment(n as u64);
                continue;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                return Ok(Stopped::BrokerClosed);
            }
        };
        buf.advance(4);
        let frame = buf.split_to(size).freeze();
        let req = match protocol::decode_request(frame) {
            Ok(Decoded::Request(mut r)) => {
                r.client_host = format!("/{}", peer.ip());
                produced |= r.api_key == kafka_protocol::messages::ApiKey::Produce;
                r.producer_connection = produced;
                r
            }
            Ok(Decoded::ApiVersionsFallback { correlation_id }) => {
                let b = protocol::encode_api_versions_fallback(
                    correlation_id,
                    kafka_protocol::error::ResponseError::UnsupportedVersion.code(),
                );
                if tx.send(Outgoing::Ready(b)).await.is_err() {
                    return Ok(Stopped::BrokerClosed);
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                return Ok(Stopped::BrokerClosed);
            }
        };
        let (api, version, correlation_id) = (req.api_key, req.version, req.header.correlation_id);
        let started = std::time::Instant::now();
        let duration = request_metrics(api, version);
        let out = match dispatch::handle(ctx.clone(), req).await {
            Reply::Now(body) => {
                duration.record(started.elapsed());
                match protocol::encode_response(api, version, correlation_id, &body) {
                    Ok(b) => Outgoing::Ready(b),
                    Err(e) => {
                        tracing::error!(%peer, error = %e, "closing connection");
                        return Ok(Stopped::BrokerClosed);
                    }
                }
            }
            Reply::Later(fut) => Outgoing::Pending {
                api,
                version,
                correlation_id,
                fut: tokio::spawn(async move {
                    let body = fut.await;
                    duration.record(started.elapsed());
                    body
                }),
            },
            Reply::Nothing => continue,
            Reply::Close(why) => {
                tracing::warn!(%peer, ?api, version, "closing connection: {why}");
                return Ok(Stopped::BrokerClosed);
            }
        };
        if tx.send(out).await.is_err() {
            // The writer is gone: the client went away, or the shutdown
            // grace ran out.
            return Ok(Stopped::BrokerClosed);
        }
    }
}

/// Counts a request of `api` v`version` (`runnel_requests_total`) and
/// returns the histogram of its duration. The handles are cached per
/// thread: a label set is formatted once, not per request.
fn request_metrics(api: kafka_protocol::messages::ApiKey, version: i16) -> metrics::Histogram {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static HANDLES: RefCell<HashMap<(kafka_protocol::messages::ApiKey, i16), (metrics::Counter, metrics::Histogram)>> =
            RefCell::new(HashMap::new());
    }
    HANDLES.with(|h| {
        let mut h = h.borrow_mut();
        let (count, duration) = h.entry((api, version)).or_insert_with(|| {
            let labels = [
                ("api", format!("{api:?}")),
                ("version", version.to_string()),
            ];
            (
                metrics::counter!("runnel_requests_total", &labels),
                metrics::histogram!("runnel_request_duration_seconds", &labels),
            )
        });
        count.increment(1);
        duration.clone()
    })
}

/// Reads and discards what the client still sends, until it closes or
/// `LINGER` has passed.
async fn linger<R: AsyncRead + Unpin>(rd: &mut R) {
    let mut scratch = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = rd.read(&mut scratch).await {
            if n == 0 {
                return;
            }
        }
    })
    .await;
}

/// Waits (for at most `SHUTDOWN_GRACE`) until every connection in `set` has
/// ended.
async fn all_ended(set: &mut JoinSet<()>) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(SHUTDOWN_GRACE, async {
        while set.join_next().await.is_some() {}
    })
    .await
}

/// Once a frame's size is known, reserve room for all of it at once.
fn wanted(buf: &BytesMut) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]).max(0) as usize;
    (4 + size).checked_sub(buf.len())
}
