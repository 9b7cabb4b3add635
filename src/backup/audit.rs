//! Backups in the audit log, whoever took them (the scheduler, an operator
//! through the ops listener).

use std::time::Duration;

use super::BackupError;
use super::snapshot::Created;
use crate::store::Store;
use crate::store::audit::{self, AuditEntry};

/// Records a backup attempt; the store is the daemon's own.
pub async fn record(store: &Store, out: &Result<Created, BackupError>, took: Duration) {
    let (subject, outcome, detail) = match out {
        Ok(c) => (
            c.manifest.id.clone(),
            "ok",
            serde_json::to_string(&c.manifest).ok(),
        ),
        Err(e) => ("backup".to_owned(), "error", Some(e.to_string())),
    };
    let entry = AuditEntry {
        at_ms: crate::clock::now_millis(),
        session_id: None,
        kind: "backup".into(),
        subject,
        outcome: outcome.into(),
        duration_us: Some(took.as_micros() as i64),
        detail,
        principal: None,
        scope: None,
    };
    store
        .write_detached("backup audit", move |tx| audit::record(tx, &entry))
        .await;
}
