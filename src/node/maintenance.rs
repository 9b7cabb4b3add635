//! Periodic housekeeping: expire idle sessions, prune old SSE events, prune
//! expired tasks (and those of ended sessions), take over the tasks of
//! processes that died (another `erlmcp stdio` on this data directory). It
//! reads its settings from a watch channel, so a reload takes effect at
//! once (a pass runs as soon as they change).

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, HttpConfig};
use crate::mcp::server::Server;

/// How often a pass runs when nothing changes.
const EVERY: Duration = Duration::from_secs(30);

/// The settings a pass uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Housekeeping {
    pub(crate) session_idle_secs: i64,
    pub(crate) event_retention_secs: i64,
}

impl Housekeeping {
    pub(crate) fn from_config(c: &Config) -> Housekeeping {
        let h: &HttpConfig = &c.http;
        Housekeeping {
            session_idle_secs: h.session_idle_timeout_secs as i64,
            event_retention_secs: h.event_retention_secs as i64,
        }
    }
}

/// Runs until `stop`.
pub(crate) async fn run(
    server: Arc<Server>,
    mut settings: watch::Receiver<Housekeeping>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            changed = settings.changed() => if changed.is_err() { return },
        }
        let now = *settings.borrow_and_update();
        pass(&server, now).await;
    }
}

async fn pass(server: &Server, h: Housekeeping) {
    if server.store.is_read_only() {
        // A standby: the primary expires and prunes, and the changes arrive.
        return;
    }
    match server.sessions.maintain(h.session_idle_secs).await {
        Ok(n) if n > 0 => tracing::info!(expired = n, "idle sessions ended"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "session maintenance failed"),
    }
    let cutoff = crate::clock::now_secs() - h.event_retention_secs;
    if let Err(e) = server
        .store
        .write(move |tx| crate::store::events::prune(tx, cutoff).map(|_| ()))
        .await
    {
        tracing::warn!(error = %e, "pruning the SSE event log failed");
    }
    tasks(server).await;
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
