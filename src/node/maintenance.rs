//! Periodic housekeeping: expire idle sessions and sessions that never
//! completed the handshake, keep the tables traffic writes to within their
//! retention, let memory forget what ended, prune expired tasks (and those
//! of ended sessions), take over the tasks of processes that died (another
//! `erlmcp stdio` on this data directory). It reads its settings from a
//! watch channel, so a reload takes effect at once (a pass runs as soon as
//! they change). A standby only forgets: the primary expires and prunes,
//! and the changes arrive.
//!
//! Every table that grows with traffic has its bound here:
//!
//! | table | bounded by |
//! |---|---|
//! | `sessions` | `limits.max_sessions`, idle and handshake expiry |
//! | `sse_events` | `http.event_retention_secs`, `retention.events_max_rows`, `retention.events_max_bytes`; rows of ended sessions go with them (foreign key) |
//! | `audit_log` | `retention.audit_max_age_secs`, `retention.audit_max_rows` |
//! | `tasks` | their time to live (`tasks.max_ttl_secs`), those of ended sessions; unfinished ones per owner (`tasks.max_live_per_owner`), result size (`tasks.max_result_bytes`) |
//!
//!
//! The replication log (`repl_log`) has its own pass in `replication`
//! (`replication.max_log_entries`, and what the standby and the newest
//! backup hold). A new table that grows with traffic gets its bound in
//! [`pass`], a row here and one in `docs/operations/limits.md`.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::mcp::server::Server;
use crate::store::{StoreError, audit, events};
use crate::transport::http::HttpState;

/// How often a pass runs at most, when nothing changes ...
const EVERY: Duration = Duration::from_secs(15);
/// ... and at least (a short handshake timeout makes passes more frequent).
const AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// How long a finished request stream stays in memory for a fast resume;
/// after that a resume reads its events from the log.
const FINISHED_STREAMS_KEPT: Duration = Duration::from_secs(60);

/// The settings a pass uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Housekeeping {
    pub(crate) session_idle_secs: i64,
    pub(crate) handshake_secs: i64,
    pub(crate) event_retention_secs: i64,
    pub(crate) events_max_rows: u64,
    pub(crate) events_max_bytes: u64,
    pub(crate) audit_max_age_secs: i64,
    pub(crate) audit_max_rows: u64,
}

impl Housekeeping {
    pub(crate) fn from_config(c: &Config) -> Housekeeping {
        Housekeeping {
            session_idle_secs: c.http.session_idle_timeout_secs as i64,
            handshake_secs: c.http.handshake_timeout_secs as i64,
            event_retention_secs: c.http.event_retention_secs as i64,
            events_max_rows: c.retention.events_max_rows,
            events_max_bytes: c.retention.events_max_bytes,
            audit_max_age_secs: c.retention.audit_max_age_secs.min(i64::MAX as u64 / 1000) as i64,
            audit_max_rows: c.retention.audit_max_rows,
        }
    }

    /// Half the handshake timeout, so an unfinished session goes within
    /// one and a half timeouts.
    fn every(&self) -> Duration {
        Duration::from_secs((self.handshake_secs / 2).max(0) as u64).clamp(AT_LEAST_EVERY, EVERY)
    }
}

/// Runs until `stop`.
pub(crate) async fn run(
    server: Arc<Server>,
    http: Arc<HttpState>,
    mut settings: watch::Receiver<Housekeeping>,
    stop: CancellationToken,
) {
    let mut every = settings.borrow().every();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            changed = settings.changed() => if changed.is_err() { return },
        }
        let now = *settings.borrow_and_update();
        if now.every() != every {
            every = now.every();
            tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        }
        pass(&server, &http, now).await;
    }
}

async fn pass(server: &Server, http: &HttpState, h: Housekeeping) {
    // What only memory holds is forgotten on every node.
    http.prune_streams(FINISHED_STREAMS_KEPT);
    http.limits.prune();
    if server.store.is_read_only() {
        // A standby: the primary expires and prunes, and the changes arrive.
        return;
    }
    match server
        .sessions
        .maintain(h.session_idle_secs, h.handshake_secs)
        .await
    {
        Ok(ended) => {
            if ended.idle > 0 || ended.unfinished > 0 {
                tracing::info!(
                    idle = ended.idle,
                    unfinished = ended.unfinished,
                    "sessions ended"
                );
            }
            let count = |reason, n: usize| {
                metrics::counter!("erlmcp_sessions_expired_total", "reason" => reason)
                    .increment(n as u64);
            };
            count("idle", ended.idle);
            count("handshake", ended.unfinished);
            http.forget_sessions(&ended.ids);
        }
        Err(e) => tracing::warn!(error = %e, "session maintenance failed"),
    }
    let now = crate::clock::now_secs();
    let event_cutoff = now - h.event_retention_secs;
    prune(server, "sse_events", "age", move |tx| {
        events::prune(tx, event_cutoff, audit::PRUNE_CHUNK)
    })
    .await;
    if h.events_max_rows > 0 || h.events_max_bytes > 0 {
        prune_events_to_budget(server, h.events_max_rows, h.events_max_bytes).await;
    }
    let audit_cutoff_ms = crate::clock::now_millis() - h.audit_max_age_secs * 1000;
    prune(server, "audit_log", "age", move |tx| {
        audit::prune_older_than(tx, audit_cutoff_ms)
    })
    .await;
    if h.audit_max_rows > 0 {
        let keep = h.audit_max_rows;
        prune(server, "audit_log", "size", move |tx| {
            audit::prune_to_rows(tx, keep)
        })
        .await;
    }
    tasks(server).await;
}

/// Deletes the oldest SSE events beyond the row and byte budgets: chosen
/// on a reader (the choice reads the whole, small, log), deleted on the
/// writer a chunk at a time.
async fn prune_events_to_budget(server: &Server, max_rows: u64, max_bytes: u64) {
    let mut total = 0u64;
    loop {
        let victims = match server
            .store
            .read(move |c| events::over_budget(c, max_rows, max_bytes, audit::PRUNE_CHUNK))
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "reading the SSE event log's size failed");
                break;
            }
        };
        let chosen = victims.len() as i64;
        if chosen == 0 {
            break;
        }
        match server
            .store
            .write(move |tx| events::delete(tx, &victims))
            .await
        {
            Ok(n) => total += n as u64,
            Err(e) => {
                tracing::warn!(error = %e, "pruning the SSE event log failed");
                break;
            }
        }
        if chosen < audit::PRUNE_CHUNK {
            break;
        }
    }
    metrics::counter!("erlmcp_retention_deleted_rows_total", "table" => "sse_events", "reason" => "size")
        .increment(total);
    if total > 0 {
        tracing::info!(
            table = "sse_events",
            rows = total,
            "retention: events beyond the budget deleted"
        );
    }
}

/// Runs `step` (which deletes at most one chunk) until it deletes less
/// than a chunk: each chunk is its own commit, so a large backlog never
/// holds the writer for long, and other writes go between chunks.
async fn prune<F>(server: &Server, table: &'static str, reason: &'static str, step: F)
where
    F: Fn(&rusqlite::Transaction<'_>) -> Result<usize, StoreError> + Send + Sync + Clone + 'static,
{
    let mut total = 0u64;
    loop {
        let s = step.clone();
        match server.store.write(move |tx| s(tx)).await {
            Ok(n) => {
                total += n as u64;
                if (n as i64) < audit::PRUNE_CHUNK {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(table, error = %e, "retention pruning failed");
                break;
            }
        }
    }
    metrics::counter!("erlmcp_retention_deleted_rows_total", "table" => table, "reason" => reason)
        .increment(total);
    if total > 0 {
        tracing::info!(table, reason, rows = total, "retention: old rows deleted");
    }
}

async fn tasks(server: &Server) {
    match server.tasks.prune().await {
        Ok(n) if n > 0 => tracing::info!(pruned = n, "expired tasks deleted"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "pruning tasks failed"),
    }
    if let Err(e) = crate::mcp::tasks::recovery::take_over(server).await {
        tracing::warn!(error = %e, "taking over the tasks of ended processes failed");
    }
}
