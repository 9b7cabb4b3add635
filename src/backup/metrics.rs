//! Backup metrics (Prometheus names, base units) and the one-line summary
//! the supervisor puts in systemd's `STATUS=`. Both are process-wide, like
//! the metrics recorder itself.

use std::sync::Mutex;

use super::manifest::Manifest;
use super::{Backups, catalog};
use crate::clock::Schedule;

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

/// At the daemon's start: the newest good backup in the catalogue (0 when
/// there is none), so freshness is known before this process takes one;
/// the failure counters at zero, so a first failure shows as an increase;
/// and, when the scheduler runs, the longest gap its schedule allows.
pub fn init(b: &Backups, schedule: Option<&Schedule>) {
    describe();
    let newest = catalog::list(b)
        .ok()
        .and_then(|entries| {
            catalog::latest_good(&entries)
                .and_then(|e| e.manifest.as_ref())
                .map(|m| m.created_at)
        })
        .unwrap_or(0);
    metrics::gauge!("erlmcp_backup_last_success_timestamp_seconds").set(newest as f64);
    metrics::gauge!("erlmcp_backup_last_failure_timestamp_seconds").set(0.0);
    metrics::counter!("erlmcp_backup_failures_total").increment(0);
    metrics::counter!("erlmcp_backup_verification_failures_total").increment(0);
    if let Some(s) = schedule {
        metrics::gauge!("erlmcp_backup_schedule_interval_seconds")
            .set(s.longest_gap().as_secs_f64());
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_gauge!(
        "erlmcp_backup_last_success_timestamp_seconds",
        Unit::Seconds,
        "Creation time of the newest good backup (0: none)"
    );
    describe_gauge!(
        "erlmcp_backup_last_failure_timestamp_seconds",
        Unit::Seconds,
        "When this process last failed to take a backup (0: never)"
    );
    describe_gauge!(
        "erlmcp_backup_last_duration_seconds",
        Unit::Seconds,
        "How long the last backup took (copy, compress, verify)"
    );
    describe_gauge!(
        "erlmcp_backup_size_bytes",
        Unit::Bytes,
        "Compressed size of the last backup"
    );
    describe_gauge!(
        "erlmcp_backup_schedule_interval_seconds",
        Unit::Seconds,
        "The longest time the backup schedule leaves between two backups"
    );
    describe_counter!(
        "erlmcp_backup_failures_total",
        "Backups that failed, any reason"
    );
    describe_counter!(
        "erlmcp_backup_verification_failures_total",
        "Backups that failed verification (at creation, verify or restore)"
    );
}

pub fn failed(error: &str) {
    metrics::counter!("erlmcp_backup_failures_total").increment(1);
    metrics::gauge!("erlmcp_backup_last_failure_timestamp_seconds")
        .set(crate::clock::now_secs() as f64);
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
