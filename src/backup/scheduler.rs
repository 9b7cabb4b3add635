//! The daemon's backup loop: sleep until the schedule says a backup is
//! due, take it (verified), record it in the audit log, prune. A failed
//! run is retried with a growing delay (1 min doubling to 1 h), not in a
//! tight loop, and each failure is counted and logged by [`super::snapshot`].

use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::{BackupError, Backups, catalog, retention, snapshot};
use crate::clock::Schedule;
use crate::store::Store;

const FIRST_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// What the scheduler runs with.
#[derive(Clone)]
pub struct Scheduler {
    pub backups: Backups,
    pub schedule: Schedule,
    pub store: Store,
}

impl Scheduler {
    /// The scheduler the configuration asks for (`[backup] enabled`).
    pub fn from_config(config: &crate::config::Config, store: &Store) -> Option<Scheduler> {
        if !config.backup.enabled {
            return None;
        }
        let schedule = Schedule::parse(&config.backup.schedule).ok()?;
        Some(Scheduler {
            backups: Backups::from_config(config),
            schedule,
            store: store.clone(),
        })
    }

    /// Runs until `stop` fires. Never returns an error: a backup failing is
    /// an alert, not a reason to take the server down.
    pub async fn run(self, stop: CancellationToken) {
        let cancel = self.backups.cancel.clone();
        let watcher = stop.clone();
        tokio::spawn(async move {
            watcher.cancelled().await;
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let mut retry = FIRST_RETRY;
        loop {
            let wait = match self.last_good().await {
                Some(Err(())) => retry,
                last => {
                    let last = last.and_then(|r| r.ok());
                    let now = crate::clock::now_secs();
                    let next = self.schedule.next_after(now, last);
                    Duration::from_secs((next - now).max(0) as u64)
                }
            };
            tracing::debug!(secs = wait.as_secs(), "next backup");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if self.run_once().await {
                retry = FIRST_RETRY;
            } else {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }

    /// The newest good backup's time; `Some(Err)` when the directory cannot
    /// be read (retry later), `None` when there is none.
    async fn last_good(&self) -> Option<Result<i64, ()>> {
        let b = self.backups.clone();
        let listed = tokio::task::spawn_blocking(move || catalog::list(&b)).await;
        match listed {
            Ok(Ok(entries)) => catalog::latest_good(&entries)
                .and_then(|e| e.manifest.as_ref())
                .map(|m| Ok(m.created_at)),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot list backups");
                Some(Err(()))
            }
            Err(_) => Some(Err(())),
        }
    }

    /// One scheduled backup plus prune; true when the backup succeeded.
    pub async fn run_once(&self) -> bool {
        let b = self.backups.clone();
        let started = std::time::Instant::now();
        let created = tokio::task::spawn_blocking(move || snapshot::create(&b))
            .await
            .unwrap_or_else(|e| Err(BackupError::Crashed(e.to_string())));
        super::audit::record(&self.store, &created, started.elapsed()).await;
        let ok = created.is_ok();
        if ok {
            let b = self.backups.clone();
            match tokio::task::spawn_blocking(move || retention::prune(&b, false)).await {
                Ok(Ok(plan)) if !plan.delete.is_empty() => {
                    tracing::info!(deleted = plan.delete.len(), "pruned old backups")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "pruning backups failed"),
                Err(e) => tracing::warn!(error = %e, "pruning backups failed"),
            }
        }
        ok
    }
}
