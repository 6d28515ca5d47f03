//! Prometheus metrics. Names (all prefixed `runnel_`):
//!
//! * `runnel_connections` (gauge): open client connections
//! * `runnel_requests_total{api}`: requests decoded, by API
//! * `runnel_network_bytes_in_total`, `runnel_network_bytes_out_total`
//! * `runnel_produce_records_total`, `runnel_produce_rejected_total`
//! * `runnel_fetch_bytes_total`: record bytes returned to consumers
//! * `runnel_metadata_applied_index` (gauge): Raft log index of the last
//!   metadata record this node applied (voter or broker-only)
//! * `runnel_metadata_stream_snapshots_total`,
//!   `runnel_metadata_stream_resumes_total`: on a broker-only node, how
//!   often the metadata stream started with the whole image, and how often
//!   it resumed after the last applied index on a (new) voter
//! * `runnel_log_segments_deleted_total`, `runnel_log_bytes_deleted_total`:
//!   what retention deleted
//!
//! The exporter serves `/metrics` on `metrics.listener` when it is set.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;

pub fn install(listener: Option<SocketAddr>) -> anyhow::Result<()> {
    if let Some(addr) = listener {
        PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| anyhow::anyhow!("cannot start the metrics listener on {addr}: {e}"))?;
        tracing::info!(%addr, "serving Prometheus metrics on /metrics");
    }
    Ok(())
}
