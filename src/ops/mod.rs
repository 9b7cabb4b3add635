//! The operations listener, never the public one (default
//! `127.0.0.1:9718`): `/healthz` (alive), `/readyz` (ready to serve),
//! `/metrics` (Prometheus text), `/status` (what `erlmcp status` prints).

pub mod client;
pub mod metrics;
pub mod status;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::mcp::server::Server;
use crate::supervisor::{Heartbeats, TreeStatus};
use crate::transport::http::HttpState;

/// Everything the ops endpoints report on.
pub struct OpsState {
    pub server: Arc<Server>,
    pub http: Arc<HttpState>,
    pub heartbeats: Heartbeats,
    pub tree: TreeStatus,
    pub started: Instant,
    pub started_unix: i64,
    /// Set once startup finished; cleared when stopping.
    pub ready: AtomicBool,
    pub metrics: Option<PrometheusHandle>,
    pub mcp_addr: SocketAddr,
    pub node: String,
    pub config_path: Option<std::path::PathBuf>,
    pub last_reload: std::sync::Mutex<Option<String>>,
}

impl OpsState {
    /// This node's role; `standalone` until replication exists.
    pub fn role(&self) -> &'static str {
        "standalone"
    }
}

pub fn router(state: Arc<OpsState>) -> Router {
    let r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status::handler));
    #[cfg(feature = "fault-injection")]
    let r = r
        .route("/fault/hang-writer", axum::routing::post(hang_writer))
        .route("/fault/panic-writer", axum::routing::post(panic_writer));
    r.with_state(state)
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, json!({ "status": "alive" }))
}

/// Ready when startup is done and the database commits a write promptly.
async fn readyz(State(s): State<Arc<OpsState>>) -> Response {
    let writable = s.server.store.ping_writer(Duration::from_secs(2)).await;
    let ready = s.ready.load(Ordering::Relaxed) && writable;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        json!({
            "ready": ready,
            "role": s.role(),
            "database": if writable { "writable" } else { "not writable" },
            "starting_or_stopping": !s.ready.load(Ordering::Relaxed),
        }),
    )
}

async fn metrics_text(State(s): State<Arc<OpsState>>) -> Response {
    let Some(handle) = &s.metrics else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response();
    };
    status::update_gauges(&s);
    handle.run_upkeep();
    let mut r = handle.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[cfg(feature = "fault-injection")]
async fn hang_writer(State(s): State<Arc<OpsState>>) -> Response {
    tracing::warn!("fault injection: hanging the store writer");
    s.server.store.hang_writer_for_tests();
    json_response(StatusCode::ACCEPTED, json!({ "fault": "writer hung" }))
}

#[cfg(feature = "fault-injection")]
async fn panic_writer(State(s): State<Arc<OpsState>>) -> Response {
    tracing::warn!("fault injection: the store writer thread will panic");
    s.server.store.panic_writer_for_tests();
    json_response(StatusCode::ACCEPTED, json!({ "fault": "writer panicked" }))
}

pub fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
