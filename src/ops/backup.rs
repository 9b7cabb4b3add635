//! The backup endpoints; `erlmcp backup|restore --ops ADDR:PORT` lands
//! here. Each answers the same typed value the command computes on the
//! files, or an [`ErrorBody`] with a fitting status.
//!
//! - `POST /backup` — take a backup now
//! - `GET  /backups` — list
//! - `POST /backups/verify`, `POST /backups/{id}/verify` — verify all / one
//! - `POST /backup/prune` — body `{"dry_run": bool}` (optional)
//! - `POST /restore` — body `{"id": "ID"|"latest", "dry_run": bool}`

use axum::Router;
use axum::extract::{Json, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::{ErrorBody, OpsState, json_response};
use crate::backup::restore::{self, Target};
use crate::backup::{BackupError, catalog, retention, snapshot, verify};

pub(super) fn routes() -> Router<Arc<OpsState>> {
    Router::new()
        .route("/backup", post(create))
        .route("/backups", get(list))
        .route("/backups/verify", post(verify_all))
        .route("/backups/{id}/verify", post(verify_one))
        .route("/backup/prune", post(prune))
        .route("/restore", post(restore))
}

/// The body of `POST /backup/prune`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PruneRequest {
    #[serde(default)]
    pub(crate) dry_run: bool,
}

/// The body of `POST /restore`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RestoreRequest {
    /// A backup id, or `latest`.
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) dry_run: bool,
}

async fn create(State(s): State<Arc<OpsState>>) -> Response {
    let b = s.backups.clone();
    let started = std::time::Instant::now();
    let out = blocking(move || snapshot::create(&b)).await;
    crate::backup::audit::record(&s.server.store, &out, started.elapsed()).await;
    reply(out)
}

async fn list(State(s): State<Arc<OpsState>>) -> Response {
    let b = s.backups.clone();
    reply(blocking(move || catalog::list(&b)).await)
}

async fn verify_all(State(s): State<Arc<OpsState>>) -> Response {
    let b = s.backups.clone();
    reply(blocking(move || verify::verify(&b, None)).await)
}

async fn verify_one(State(s): State<Arc<OpsState>>, Path(id): Path<String>) -> Response {
    let b = s.backups.clone();
    reply(blocking(move || verify::verify(&b, Some(&id))).await)
}

async fn prune(State(s): State<Arc<OpsState>>, body: Option<Json<PruneRequest>>) -> Response {
    let dry = body.map(|b| b.0).unwrap_or_default().dry_run;
    let b = s.backups.clone();
    reply(blocking(move || retention::prune(&b, dry)).await)
}

async fn restore(State(s): State<Arc<OpsState>>, Json(body): Json<RestoreRequest>) -> Response {
    let sessions = s.server.sessions.clone();
    let out = restore::restore_online(
        &s.backups,
        &s.server.store,
        Target::parse(&body.id),
        body.dry_run,
        move || {
            let n = sessions.forget_all();
            tracing::info!(sessions = n, "in-memory sessions dropped after the restore");
        },
    )
    .await;
    reply(out)
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackupError> + Send + 'static,
) -> Result<T, BackupError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(out) => out,
        // A panic in backup code: the handler must still answer.
        Err(e) => Err(BackupError::Crashed(e.to_string())),
    }
}

fn reply<T: Serialize>(out: Result<T, BackupError>) -> Response {
    match out {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => json_response(
            status_of(&e),
            &ErrorBody {
                error: e.to_string(),
                exit_code: e.exit_code(),
            },
        ),
    }
}

fn status_of(e: &BackupError) -> StatusCode {
    match e {
        BackupError::NotFound { .. } | BackupError::NoGoodBackup { .. } => StatusCode::NOT_FOUND,
        BackupError::Busy { .. } => StatusCode::CONFLICT,
        BackupError::Corrupt { .. }
        | BackupError::Unusable { .. }
        | BackupError::SchemaTooNew { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        BackupError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
