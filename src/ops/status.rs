//! `/status`: a JSON snapshot of the daemon (what `erlmcp status` prints,
//! and systemd's `STATUS=` line), and the gauges computed at scrape time.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::OpsState;
use crate::supervisor::tree::ChildState;

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub node: String,
    pub role: String,
    pub ready: bool,
    pub uptime_secs: u64,
    pub mcp_listen: String,
    pub sessions: usize,
    /// Sessions that exist (memory holds `sessions` of them).
    #[serde(default)]
    pub sessions_stored: usize,
    /// The MCP listener serves TLS (`[http.tls]`).
    #[serde(default)]
    pub mcp_tls: bool,
    /// Connections open on the MCP listener.
    #[serde(default)]
    pub connections: usize,
    pub sse_streams: usize,
    pub requests_in_flight: usize,
    pub database_bytes: u64,
    pub wal_bytes: u64,
    pub data_dir: String,
    pub config: Option<String>,
    pub last_reload: Option<String>,
    /// The last backup this process took, or its failure.
    #[serde(default)]
    pub last_backup: Option<String>,
    pub children: BTreeMap<String, ChildStatus>,
    #[serde(default)]
    pub replication: Option<crate::replication::Status>,
    #[serde(default)]
    pub upgrade: Option<crate::upgrade::Status>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChildStatus {
    pub running: bool,
    pub restarts: u64,
    pub last_exit: Option<String>,
}

impl From<ChildState> for ChildStatus {
    fn from(c: ChildState) -> Self {
        ChildStatus {
            running: c.running,
            restarts: c.restarts,
            last_exit: c.last_exit,
        }
    }
}

fn file_size(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// (database, WAL) sizes in bytes.
fn db_sizes(s: &OpsState) -> (u64, u64) {
    let db = s.server.store.path();
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    (file_size(db), file_size(std::path::Path::new(&wal)))
}

pub fn snapshot(s: &OpsState) -> Status {
    let (database_bytes, wal_bytes) = db_sizes(s);
    Status {
        version: crate::mcp::server::SERVER_VERSION.into(),
        node: s.node.clone(),
        role: s.role().into(),
        ready: s.ready.load(Ordering::Relaxed),
        uptime_secs: s.started.elapsed().as_secs(),
        mcp_listen: s.mcp_addr.to_string(),
        mcp_tls: s.http.tls_enabled(),
        sessions: s.server.sessions.live_count(),
        sessions_stored: s.server.sessions.stored_count(),
        connections: s.http.open_connections(),
        sse_streams: s.http.open_streams(),
        requests_in_flight: s.server.in_flight(),
        database_bytes,
        wal_bytes,
        data_dir: s
            .server
            .store
            .path()
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        config: s.config_path.as_ref().map(|p| p.display().to_string()),
        last_reload: s
            .last_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        last_backup: crate::backup::metrics::status_line(),
        children: s
            .tree
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect(),
        replication: s.replication.as_ref().map(|r| r.status()),
        upgrade: s.upgrade.as_ref().map(|u| u.status()),
    }
}

pub(super) fn routes() -> Router<Arc<OpsState>> {
    Router::new().route("/status", get(handler))
}

async fn handler(State(s): State<Arc<OpsState>>) -> Response {
    super::json_response(StatusCode::OK, &snapshot(&s))
}

/// Gauges whose value is read at scrape time.
pub fn update_gauges(s: &OpsState) {
    let (db, wal) = db_sizes(s);
    metrics::gauge!("erlmcp_database_size_bytes").set(db as f64);
    metrics::gauge!("erlmcp_wal_size_bytes").set(wal as f64);
    metrics::gauge!("erlmcp_sessions_active").set(s.server.sessions.live_count() as f64);
    metrics::gauge!("erlmcp_sessions_stored").set(s.server.sessions.stored_count() as f64);
    let (buckets, requesting, streaming) = s.http.limits.tracked();
    metrics::gauge!("erlmcp_http_clients_tracked", "by" => "rate").set(buckets as f64);
    metrics::gauge!("erlmcp_http_clients_tracked", "by" => "requests").set(requesting as f64);
    metrics::gauge!("erlmcp_http_clients_tracked", "by" => "sse_streams").set(streaming as f64);
    metrics::gauge!("erlmcp_requests_in_flight").set(s.server.in_flight() as f64);
    metrics::gauge!("erlmcp_build_info", "version" => crate::mcp::server::SERVER_VERSION).set(1.0);
    metrics::gauge!("erlmcp_start_time_seconds").set(s.started_unix as f64);
    let w = s.server.store.writer_stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    metrics::counter!("erlmcp_store_commits_total").absolute(load(&w.commits));
    metrics::counter!("erlmcp_store_jobs_total").absolute(load(&w.jobs));
    metrics::counter!("erlmcp_store_failed_commits_total").absolute(load(&w.failed_commits));
    metrics::gauge!("erlmcp_store_writer_queue_length")
        .set(s.server.store.writer_queue_len() as f64);
    metrics::gauge!("erlmcp_store_writer_queue_capacity").set(crate::store::WRITER_QUEUE as f64);
    metrics::gauge!("erlmcp_ready").set(if super::health::ready_now(s) {
        1.0
    } else {
        0.0
    });
    let data_dir = s
        .server
        .store
        .path()
        .parent()
        .map(std::path::Path::to_path_buf);
    let backup_dir = Some(s.backups.dir.clone());
    for (dir, path) in [("data", data_dir), ("backups", backup_dir)] {
        // A backup directory not made yet is measured where it will be.
        let Some(space) = path
            .iter()
            .flat_map(|p| p.ancestors())
            .find_map(|p| crate::fsx::space(p).ok())
        else {
            continue;
        };
        metrics::gauge!("erlmcp_filesystem_avail_bytes", "dir" => dir)
            .set(space.avail_bytes as f64);
        metrics::gauge!("erlmcp_filesystem_size_bytes", "dir" => dir).set(space.size_bytes as f64);
    }
    if let Some(r) = &s.replication {
        // Computing the status refreshes the replication gauges.
        let _ = r.status();
    }
}

/// One line for systemd's STATUS= and a log line.
pub fn one_line(s: &Status) -> String {
    let role = match &s.replication {
        None => s.role.clone(),
        Some(r) => format!(
            "{} (epoch {}, {}, lag {})",
            r.role,
            r.epoch,
            if r.in_sync { "in sync" } else { "NOT in sync" },
            r.lag_sequences
        ),
    };
    let mut line = format!(
        "{role} on {}; {} sessions, {} SSE streams, {} in flight; db {}",
        s.mcp_listen,
        s.sessions,
        s.sse_streams,
        s.requests_in_flight,
        human_bytes(s.database_bytes)
    );
    if let Some(b) = &s.last_backup {
        line.push_str("; ");
        line.push_str(b);
    }
    if let Some(p) = s.replication.as_ref().and_then(|r| r.problem.as_ref()) {
        line.push_str("; REPLICATION: ");
        line.push_str(p);
    }
    line
}

/// `12.3 MiB`.
pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
