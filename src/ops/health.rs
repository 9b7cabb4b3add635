//! `/healthz` (the process answers) and `/readyz` (it can serve: startup
//! done, not stopping, the database commits a write promptly).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{OpsState, json_response};

pub(super) fn routes() -> Router<Arc<OpsState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "alive" }))
}

/// Ready as far as can be told without a database round trip: started, not
/// stopping, the role able to serve (a standby only while promotable).
pub(crate) fn ready_now(s: &OpsState) -> bool {
    #[cfg(feature = "fault-injection")]
    if crate::upgrade::fault::active("unready") {
        return false;
    }
    let role_ready = s.replication.as_ref().is_none_or(|r| r.ready().0);
    s.ready.load(Ordering::Relaxed) && role_ready
}

async fn readyz(State(s): State<Arc<OpsState>>) -> Response {
    // A writer holding a commit for the standby's ack (sync mode, `block`,
    // the standby gone) waits on purpose, as the store child's heartbeat
    // knows: the primary is still the node to serve, and keepalived must
    // not take the address from it (that demotes it, and a promotion
    // afterwards writes alone).
    let store = &s.server.store;
    let writable = store.writer_waits_in_hook()
        || store.ping_writer(Duration::from_secs(2)).await
        || store.writer_waits_in_hook();
    let started = s.ready.load(Ordering::Relaxed);
    // A standby is ready when it may be promoted: keepalived's check must
    // not let a standby that lacks acknowledged writes take the address.
    let (role_ready, role_says) = match &s.replication {
        Some(r) => r.ready(),
        None => (true, "standalone"),
    };
    let ready = ready_now(&s) && writable && role_ready;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &json!({
            "ready": ready,
            "role": s.role(),
            "replication": role_says,
            "database": if writable { "writable" } else { "not writable" },
            "starting_or_stopping": !started,
        }),
    )
}
