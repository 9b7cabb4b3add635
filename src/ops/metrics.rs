//! Prometheus metrics: the recorder every `metrics::` macro in the crate
//! writes to, and the gauges computed at scrape time. Names are
//! `erlmcp_*` with the base unit in the name.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};

use super::OpsState;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Request latency buckets, 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

pub(super) fn routes() -> Router<Arc<OpsState>> {
    Router::new().route("/metrics", get(text))
}

async fn text(State(s): State<Arc<OpsState>>) -> Response {
    let Some(handle) = &s.metrics else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response();
    };
    super::status::update_gauges(&s);
    handle.run_upkeep();
    let mut r = handle.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Installs the global recorder once; later calls return the same handle.
pub(crate) fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Prefix("erlmcp_replication_".into()),
                    LATENCY_BUCKETS,
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => {
                    describe();
                    zero();
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder");
                    None
                }
            }
        })
        .clone()
}

/// The series that only appear on first use (a stream opened, a task run)
/// exist from the first scrape, at 0: the dashboard's panels and a
/// `rate()` over them then start from a value rather than from nothing.
fn zero() {
    metrics::gauge!("erlmcp_sse_streams_open").set(0.0);
    metrics::gauge!("erlmcp_tasks_running").set(0.0);
    metrics::counter!("erlmcp_tasks_created_total").increment(0);
    for status in ["completed", "failed", "cancelled"] {
        metrics::counter!("erlmcp_tasks_finished_total", "status" => status).increment(0);
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "erlmcp_requests_total",
        "MCP requests served, by method and outcome (ok, tool_error, client_error, server_error)"
    );
    describe_histogram!(
        "erlmcp_tool_call_duration_seconds",
        Unit::Seconds,
        "Time to answer a tools/call, by toolset and tool"
    );
    describe_gauge!(
        "erlmcp_ready",
        "1 while /readyz would answer ready (started, not stopping, able to serve its role)"
    );
    describe_gauge!(
        "erlmcp_store_writer_queue_length",
        "Writes waiting for the store's writer"
    );
    describe_gauge!(
        "erlmcp_store_writer_queue_capacity",
        "Writes the writer's queue holds; past it, writers wait"
    );
    describe_gauge!(
        "erlmcp_filesystem_avail_bytes",
        Unit::Bytes,
        "Space left to erlmcp on the file system of a directory (label dir: data, backups)"
    );
    describe_gauge!(
        "erlmcp_filesystem_size_bytes",
        Unit::Bytes,
        "Size of the file system of a directory (label dir: data, backups)"
    );
    describe_histogram!(
        "erlmcp_request_duration_seconds",
        Unit::Seconds,
        "Time to serve an MCP request, by method"
    );
    describe_gauge!(
        "erlmcp_sessions_active",
        "Legacy sessions held in memory (a cache of the stored ones)"
    );
    describe_gauge!(
        "erlmcp_sessions_stored",
        "Legacy sessions that exist (in the database)"
    );
    describe_counter!(
        "erlmcp_sessions_expired_total",
        "Sessions ended by the server, by reason (idle, handshake)"
    );
    describe_counter!(
        "erlmcp_sessions_evicted_total",
        "Sessions memory let go of (they stay in the database)"
    );
    describe_counter!(
        "erlmcp_http_refusals_total",
        "Requests and connections refused by a limit, by limit"
    );
    describe_counter!(
        "erlmcp_oauth_jwks_fetches_total",
        "Fetches of an OAuth issuer's signing keys (auth.mode = oauth), by outcome (ok, failed)"
    );
    describe_counter!(
        "erlmcp_http_timeouts_total",
        "Connections closed (header, idle, write) or requests answered 408 (body) by a timeout"
    );
    describe_gauge!(
        "erlmcp_http_connections_open",
        "Connections open on the MCP listener"
    );
    describe_gauge!(
        "erlmcp_http_listener_accepting",
        "1 while the MCP listener can accept connections, 0 while accept fails"
    );
    describe_counter!(
        "erlmcp_http_tls_handshake_failures_total",
        "TLS handshakes on the MCP listener that failed ([http.tls] on)"
    );
    describe_counter!(
        "erlmcp_http_accept_errors_total",
        "Failed accepts on the MCP listener for want of a resource, by error"
    );
    describe_gauge!(
        "erlmcp_http_clients_tracked",
        "Clients the limits keep state for, by what (rate, requests, sse_streams)"
    );
    describe_counter!(
        "erlmcp_retention_deleted_rows_total",
        "Rows deleted by retention, by table and reason (age, size; replicated: replication log entries the standby and the newest backup hold)"
    );
    describe_gauge!("erlmcp_sse_streams_open", "Server-sent event streams open");
    describe_gauge!("erlmcp_requests_in_flight", "MCP requests being served");
    describe_gauge!(
        "erlmcp_database_size_bytes",
        Unit::Bytes,
        "Size of the SQLite database file"
    );
    describe_gauge!(
        "erlmcp_wal_size_bytes",
        Unit::Bytes,
        "Size of the SQLite write-ahead log"
    );
    describe_counter!(
        "erlmcp_child_restarts_total",
        "Supervised children restarted, by child"
    );
    describe_gauge!("erlmcp_build_info", "Always 1; labels carry the version");
    describe_gauge!(
        "erlmcp_start_time_seconds",
        Unit::Seconds,
        "When this process started (Unix time)"
    );
    describe_counter!(
        "erlmcp_store_commits_total",
        "Commit groups the store writer made durable"
    );
    describe_counter!("erlmcp_store_jobs_total", "Writes carried by those commits");
    describe_counter!(
        "erlmcp_store_failed_commits_total",
        "Commit groups that failed (every write in them failed too)"
    );
    describe_counter!(
        "erlmcp_config_reloads_total",
        "Configuration reloads, by outcome"
    );
    describe_counter!("erlmcp_tasks_created_total", "Tasks created");
    describe_counter!(
        "erlmcp_tasks_finished_total",
        "Tasks ended, by status (completed, failed, cancelled)"
    );
    describe_gauge!("erlmcp_tasks_running", "Tasks running in this process");
    describe_counter!(
        "erlmcp_tasks_taken_over_total",
        "Tasks of ended processes taken over, by action (failed, rerun)"
    );
}
