//! The backup endpoints of the daemon's ops listener; the CLI's
//! `--ops ADDR:PORT` path lands here. Same JSON as the offline commands;
//! failures are `{"error", "exit_code"}` with a fitting HTTP status, so the
//! CLI exits with the same code either way.
//!
//! - `POST /backup` — take a backup now
//! - `GET  /backups` — list
//! - `POST /backups/verify`, `POST /backups/{id}/verify` — verify all / one
//! - `POST /backup/prune` — body `{"dry_run": bool}` (optional)
//! - `POST /restore` — body `{"id": "ID"|"latest", "dry_run": bool}`

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

use super::cli::error_json;
use super::restore::{self, Target};
use super::{BackupError, Backups, catalog, retention, snapshot, verify};
use crate::mcp::server::Server;
use crate::store::audit::{self, AuditEntry};
use crate::store::{self, Store};

/// What the endpoints work on.
#[derive(Clone)]
pub struct BackupApi {
    pub backups: Backups,
    pub server: Arc<Server>,
}

type Reply = (StatusCode, Json<Value>);

pub fn router(api: BackupApi) -> Router {
    Router::new()
        .route("/backup", post(create))
        .route("/backups", get(list))
        .route("/backups/verify", post(verify_all))
        .route("/backups/{id}/verify", post(verify_one))
        .route("/backup/prune", post(prune))
        .route("/restore", post(restore))
        .with_state(api)
}

async fn create(State(api): State<BackupApi>) -> Reply {
    let b = api.backups.clone();
    let started = std::time::Instant::now();
    let out = blocking(move || snapshot::create(&b)).await;
    audit_backup(&api.server.store, &out, started.elapsed()).await;
    reply(out)
}

async fn list(State(api): State<BackupApi>) -> Reply {
    let b = api.backups.clone();
    reply(blocking(move || catalog::list(&b)).await)
}

async fn verify_all(State(api): State<BackupApi>) -> Reply {
    let b = api.backups.clone();
    reply(blocking(move || verify::verify(&b, None)).await)
}

async fn verify_one(State(api): State<BackupApi>, Path(id): Path<String>) -> Reply {
    let b = api.backups.clone();
    reply(blocking(move || verify::verify(&b, Some(&id))).await)
}

#[derive(Deserialize, Default)]
struct PruneBody {
    #[serde(default)]
    dry_run: bool,
}

async fn prune(State(api): State<BackupApi>, body: Option<Json<PruneBody>>) -> Reply {
    let dry = body.map(|b| b.0).unwrap_or_default().dry_run;
    let b = api.backups.clone();
    reply(blocking(move || retention::prune(&b, dry)).await)
}

#[derive(Deserialize)]
struct RestoreBody {
    id: String,
    #[serde(default)]
    dry_run: bool,
}

async fn restore(State(api): State<BackupApi>, Json(body): Json<RestoreBody>) -> Reply {
    let sessions = api.server.sessions.clone();
    let out = restore::restore_online(
        &api.backups,
        &api.server.store,
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

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackupError> + Send + 'static,
) -> Result<T, BackupError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(BackupError::Store(store::StoreError::Invalid(
            e.to_string(),
        )))
    })
}

fn reply<T: serde::Serialize>(out: Result<T, BackupError>) -> Reply {
    match out {
        Ok(v) => (
            StatusCode::OK,
            Json(serde_json::to_value(v).unwrap_or_default()),
        ),
        Err(e) => (
            status_of(&e),
            Json(error_json(&e.to_string(), e.exit_code())),
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

/// Records a backup attempt in the audit log (daemon side: the store is ours).
pub async fn audit_backup(
    store: &Store,
    out: &Result<snapshot::Created, BackupError>,
    took: std::time::Duration,
) {
    let (subject, outcome, detail) = match out {
        Ok(c) => (
            c.manifest.id.clone(),
            "ok",
            serde_json::to_string(&c.manifest).ok(),
        ),
        Err(e) => ("backup".to_owned(), "error", Some(e.to_string())),
    };
    let entry = AuditEntry {
        at_ms: store::now_millis(),
        session_id: None,
        kind: "backup".into(),
        subject,
        outcome: outcome.into(),
        duration_us: Some(took.as_micros() as i64),
        detail,
    };
    store
        .write_detached("backup audit", move |tx| audit::record(tx, &entry))
        .await;
}
