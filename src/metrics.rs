//! Prometheus metrics and the node's HTTP listener (`metrics.listener`):
//! `/metrics` (Prometheus text), `/health` (200 while the process runs) and
//! `/ready` (200 once the node serves: see `Readiness`).
//!
//! Every metric Runnel records, by name (all `runnel_…`, base units in the
//! name, histograms in seconds with the buckets of `BUCKETS`), is in
//! `CATALOGUE`, which the README's metrics list and a test follow.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Histogram buckets, in seconds: 100 µs to 10 s.
pub const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The metric kinds of `CATALOGUE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric: name, kind, labels, meaning.
pub const CATALOGUE: &[(&str, Kind, &str, &str)] = &[
    // Requests and connections.
    (
        "runnel_requests_total",
        Kind::Counter,
        "api, version",
        "Kafka requests decoded",
    ),
    (
        "runnel_request_duration_seconds",
        Kind::Histogram,
        "api, version",
        "time from a request decoded to its answer ready (includes acks=-1 and long-poll waits)",
    ),
    (
        "runnel_connections",
        Kind::Gauge,
        "listener",
        "open client connections",
    ),
    (
        "runnel_connections_accepted_total",
        Kind::Counter,
        "listener",
        "client connections accepted",
    ),
    (
        "runnel_tls_handshake_failures_total",
        Kind::Counter,
        "listener",
        "TLS handshakes on a TLS listener that failed or took longer than 10 s",
    ),
    (
        "runnel_tls_reloads_total",
        Kind::Counter,
        "listener, result",
        "reloads of a TLS listener's certificate files after they changed (result ok or failed)",
    ),
    (
        "runnel_network_bytes_in_total",
        Kind::Counter,
        "",
        "bytes of Kafka requests read",
    ),
    (
        "runnel_network_bytes_out_total",
        Kind::Counter,
        "",
        "bytes of Kafka responses written",
    ),
    // Topics.
    (
        "runnel_topic_bytes_in_total",
        Kind::Counter,
        "topic",
        "record-batch bytes appended by producers",
    ),
    (
        "runnel_topic_messages_in_total",
        Kind::Counter,
        "topic",
        "records appended by producers",
    ),
    (
        "runnel_topic_bytes_out_total",
        Kind::Counter,
        "topic",
        "record bytes returned to consumers",
    ),
    (
        "runnel_produce_records_total",
        Kind::Counter,
        "",
        "records appended by producers, all topics",
    ),
    (
        "runnel_produce_rejected_total",
        Kind::Counter,
        "",
        "produce partitions refused",
    ),
    (
        "runnel_fetch_bytes_total",
        Kind::Counter,
        "",
        "record bytes returned to consumers, all topics",
    ),
    (
        "runnel_produce_waiting",
        Kind::Gauge,
        "",
        "acks=-1 produces waiting for the high watermark",
    ),
    (
        "runnel_fetch_waiting",
        Kind::Gauge,
        "",
        "consumer fetches long-polling for data",
    ),
    // Partitions and replication.
    (
        "runnel_leader_partitions",
        Kind::Gauge,
        "",
        "partitions this broker leads",
    ),
    (
        "runnel_under_replicated_partitions",
        Kind::Gauge,
        "",
        "partitions led here whose ISR is smaller than their replicas",
    ),
    (
        "runnel_under_min_isr_partitions",
        Kind::Gauge,
        "",
        "partitions led here whose ISR is below min.insync.replicas",
    ),
    (
        "runnel_offline_partitions",
        Kind::Gauge,
        "",
        "partitions with no live leader (as this node's image says)",
    ),
    (
        "runnel_isr_changes_total",
        Kind::Counter,
        "kind=shrink|expand",
        "ISR changes this broker's leaders committed",
    ),
    (
        "runnel_replica_lag_offsets",
        Kind::Gauge,
        "topic, partition, follower",
        "how far a follower's log end is behind the leader's",
    ),
    (
        "runnel_log_size_bytes",
        Kind::Gauge,
        "topic, partition",
        "bytes of a replica's log on this broker",
    ),
    (
        "runnel_log_segments",
        Kind::Gauge,
        "topic, partition",
        "segments of a replica's log on this broker",
    ),
    (
        "runnel_log_fsync_duration_seconds",
        Kind::Histogram,
        "",
        "one group-committed fsync of a partition log",
    ),
    (
        "runnel_log_storage_errors_total",
        Kind::Counter,
        "",
        "partition log writes and fsyncs that failed for the disk's sake (full, I/O error)",
    ),
    (
        "runnel_log_segments_deleted_total",
        Kind::Counter,
        "",
        "segments retention deleted",
    ),
    (
        "runnel_log_bytes_deleted_total",
        Kind::Counter,
        "",
        "bytes retention deleted",
    ),
    (
        "runnel_log_cleaner_passes_total",
        Kind::Counter,
        "",
        "compaction passes",
    ),
    (
        "runnel_log_cleaner_bytes_read_total",
        Kind::Counter,
        "",
        "bytes the cleaner read",
    ),
    (
        "runnel_log_cleaner_bytes_written_total",
        Kind::Counter,
        "",
        "bytes the cleaner wrote",
    ),
    (
        "runnel_log_cleaner_records_removed_total",
        Kind::Counter,
        "",
        "records compaction removed",
    ),
    // Controller and metadata.
    (
        "runnel_controller_active",
        Kind::Gauge,
        "",
        "1 on the node that is the active controller (Raft leader), else 0",
    ),
    (
        "runnel_raft_term",
        Kind::Gauge,
        "",
        "this voter's current Raft term",
    ),
    (
        "runnel_raft_commit_index",
        Kind::Gauge,
        "",
        "the last committed Raft log index this voter knows",
    ),
    (
        "runnel_raft_leader_changes_total",
        Kind::Counter,
        "",
        "times this voter saw a new Raft leader",
    ),
    (
        "runnel_metadata_applied_index",
        Kind::Gauge,
        "",
        "the last metadata record this node applied (voter or broker-only)",
    ),
    (
        "runnel_metadata_apply_lag_records",
        Kind::Gauge,
        "",
        "committed metadata records this voter has not applied yet",
    ),
    (
        "runnel_metadata_stream_snapshots_total",
        Kind::Counter,
        "",
        "broker-only: metadata streams that began with the whole image",
    ),
    (
        "runnel_metadata_stream_resumes_total",
        Kind::Counter,
        "",
        "broker-only: metadata streams resumed after the last applied index",
    ),
    (
        "runnel_brokers",
        Kind::Gauge,
        "state=unfenced|fenced",
        "registered brokers, as this node's image says",
    ),
    // Groups.
    (
        "runnel_groups",
        Kind::Gauge,
        "state",
        "groups this broker coordinates, by state",
    ),
    (
        "runnel_group_lag_records",
        Kind::Gauge,
        "group, topic, partition",
        "high watermark minus committed offset, for the groups coordinated here",
    ),
];

/// What `/ready` asks: `Ok` once the node serves, else why not. Set once
/// the node has what the check needs; until then `/ready` is 503
/// ("starting").
#[derive(Default)]
pub struct Readiness {
    check: OnceLock<Box<dyn Fn() -> Result<(), String> + Send + Sync>>,
}

impl Readiness {
    pub fn set(&self, check: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
        let _ = self.check.set(Box::new(check));
    }

    pub fn ready(&self) -> Result<(), String> {
        match self.check.get() {
            Some(check) => check(),
            None => Err("starting".into()),
        }
    }
}

/// Installs the Prometheus recorder (once per process) and returns its
/// handle; runs the recorder's upkeep in the background.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .map_err(|e| anyhow::anyhow!("metric buckets: {e}"))?
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// At most this many HTTP connections at once; more wait to be accepted.
const MAX_HTTP_CONNECTIONS: usize = 64;
/// A client that has not sent its request headers in this long is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` and serves `/metrics`, `/health` and `/ready` on it.
pub async fn serve_http(
    addr: SocketAddr,
    handle: PrometheusHandle,
    readiness: Arc<Readiness>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the metrics listener on {addr}: {e}"))?;
    tracing::info!(%addr, "serving /metrics, /health and /ready");
    tokio::spawn(accept(listener, handle, readiness));
    Ok(())
}

async fn accept(listener: TcpListener, handle: PrometheusHandle, readiness: Arc<Readiness>) {
    let limit = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (handle, readiness) = (handle.clone(), readiness.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let answer = route(&req, &handle, &readiness);
                async move { Ok::<_, Infallible>(answer) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

fn route<B>(
    req: &Request<B>,
    handle: &PrometheusHandle,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(handle.render())));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        "/health" => text(StatusCode::OK, "ok\n".into()),
        "/ready" => match readiness.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /health or /ready\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_follow_prometheus_conventions() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, kind, _, _) in CATALOGUE {
            assert!(name.starts_with("runnel_"), "{name}");
            assert!(seen.insert(*name), "{name} twice");
            match kind {
                Kind::Counter => assert!(name.ends_with("_total"), "{name}"),
                Kind::Histogram => assert!(name.ends_with("_seconds"), "{name}"),
                Kind::Gauge => assert!(!name.ends_with("_total"), "{name}"),
            }
        }
    }

    #[test]
    fn readiness_is_starting_until_set() {
        let r = Readiness::default();
        assert_eq!(r.ready(), Err("starting".to_string()));
        r.set(|| Err("fenced".into()));
        assert_eq!(r.ready(), Err("fenced".to_string()));
    }
}
