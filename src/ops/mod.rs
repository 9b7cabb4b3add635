//! The operations listener, never the public one (default
//! `127.0.0.1:9718`). One module per endpoint group: [`health`]
//! (`/healthz`, `/readyz`), [`metrics`] (`/metrics`), [`status`]
//! (`/status`), [`backup`] (backups and restore), [`fault`] (test-only
//! fault injection); and [`client`], the command line's side of it.
//!
//! Failures are answered as [`ErrorBody`] with a fitting HTTP status, so a
//! command run through the daemon exits with the code it would have had
//! run on the files.

pub(crate) mod auth;
pub(crate) mod backup;
pub(crate) mod client;
#[cfg(feature = "fault-injection")]
mod fault;
pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod replication;
pub(crate) mod status;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::backup::Backups;
use crate::mcp::server::Server;
use crate::replication::Replication;
use crate::supervisor::{Heartbeats, TreeStatus};
use crate::transport::http::HttpState;
use crate::upgrade::Upgrade;

/// Everything the ops endpoints report on and act on.
pub(crate) struct OpsState {
    pub(crate) server: Arc<Server>,
    pub(crate) http: Arc<HttpState>,
    pub(crate) backups: Backups,
    pub(crate) heartbeats: Heartbeats,
    pub(crate) tree: TreeStatus,
    pub(crate) started: Instant,
    pub(crate) started_unix: i64,
    /// Set once startup finished; cleared when stopping.
    pub(crate) ready: AtomicBool,
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) mcp_addr: SocketAddr,
    pub(crate) node: String,
    pub(crate) config_path: Option<std::path::PathBuf>,
    pub(crate) last_reload: std::sync::Mutex<Option<String>>,
    pub(crate) replication: Option<Arc<Replication>>,
    /// The replication secret (links from the peer present it).
    pub(crate) secret: Option<replication::Secret>,
    pub(crate) upgrade: Option<Arc<Upgrade>>,
    /// Who may change state through the listener.
    pub(crate) auth: auth::OpsAuth,
}

impl OpsState {
    /// This node's role: `standalone`, or its replication role.
    pub(crate) fn role(&self) -> &'static str {
        match &self.replication {
            None => "standalone",
            Some(r) => r.role().as_str(),
        }
    }
}

/// The body of every failed ops call.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: String,
    /// The exit code the command line exits with.
    pub(crate) exit_code: u8,
}

pub(crate) fn router(state: Arc<OpsState>) -> Router {
    let r = Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(status::routes())
        .merge(backup::routes())
        .merge(replication::routes());
    #[cfg(feature = "fault-injection")]
    let r = r.merge(fault::routes());
    r.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::guard,
    ))
    .with_state(state)
}

/// Serves the ops listener until `stop`: TCP_NODELAY on every socket (a
/// replication link's round trip is on every sync write's path), the
/// client's address known to the handlers.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<OpsState>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let body = serde_json::to_vec(body).expect("ops answers are plain data and serialize");
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
