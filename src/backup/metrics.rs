//! Backup metrics (Prometheus names, base units) and the one-line summary
//! the supervisor puts in systemd's `STATUS=`. Both are process-wide, like
//! the metrics recorder itself.

use std::sync::Mutex;

use super::manifest::Manifest;

/// What the last backup attempt in this process did.
#[derive(Clone, Debug, PartialEq)]
pub enum Last {
    Ok { id: String, at: i64, bytes: u64 },
    Failed { at: i64, error: String },
}

static LAST: Mutex<Option<Last>> = Mutex::new(None);

pub fn succeeded(m: &Manifest, seconds: f64) {
    metrics::gauge!("erlmcp_backup_last_success_timestamp_seconds").set(m.created_at as f64);
    metrics::gauge!("erlmcp_backup_last_duration_seconds").set(seconds);
    metrics::gauge!("erlmcp_backup_size_bytes").set(m.compressed_bytes as f64);
    set(Last::Ok {
        id: m.id.clone(),
        at: m.created_at,
        bytes: m.compressed_bytes,
    });
}

pub fn failed(error: &str) {
    metrics::counter!("erlmcp_backup_failures_total").increment(1);
    set(Last::Failed {
        at: crate::clock::now_secs(),
        error: error.to_owned(),
    });
}

pub fn verification_failed() {
    metrics::counter!("erlmcp_backup_verification_failures_total").increment(1);
}

fn set(last: Last) {
    *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
}

pub fn last() -> Option<Last> {
    LAST.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// For `STATUS=`: "last backup 20250101T033000Z-1a2b ok (12.3 MiB)" or
/// "last backup FAILED: ...".
pub fn status_line() -> Option<String> {
    Some(match last()? {
        Last::Ok { id, bytes, .. } => {
            format!(
                "last backup {id} ok ({:.1} MiB)",
                bytes as f64 / (1024.0 * 1024.0)
            )
        }
        Last::Failed { at, error } => {
            format!(
                "last backup FAILED at {}: {error}",
                crate::clock::rfc3339(at)
            )
        }
    })
}
