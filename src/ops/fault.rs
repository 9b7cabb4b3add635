//! Test-only fault injection (the `fault-injection` feature, never in a
//! release build): hang or kill the store writer, to prove the watchdog and
//! the supervisor.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use serde_json::json;
use std::sync::Arc;

use super::{OpsState, json_response};

pub(super) fn routes() -> Router<Arc<OpsState>> {
    Router::new()
        .route("/fault/hang-writer", post(hang_writer))
        .route("/fault/panic-writer", post(panic_writer))
}

async fn hang_writer(State(s): State<Arc<OpsState>>) -> Response {
    tracing::warn!("fault injection: hanging the store writer");
    s.server.store.hang_writer_for_tests();
    json_response(StatusCode::ACCEPTED, &json!({ "fault": "writer hung" }))
}

async fn panic_writer(State(s): State<Arc<OpsState>>) -> Response {
    tracing::warn!("fault injection: the store writer thread will panic");
    s.server.store.panic_writer_for_tests();
    json_response(StatusCode::ACCEPTED, &json!({ "fault": "writer panicked" }))
}
