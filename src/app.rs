//! Wiring: configuration in, running server out. Shared by `serve` and
//! `stdio`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::exit;
use crate::mcp::notify::Hub;
use crate::mcp::server::{Server, Settings};
use crate::store::{Store, StoreError, StoreOptions};
use crate::toolsets::registry;
use crate::transport::stdio;

#[derive(Debug, Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Toolsets(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Escalated(String),
    #[error("{0}")]
    Unreachable(String),
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    /// Already reported (on stdout as JSON, or on stderr); carries the code.
    #[error("{message}")]
    Reported { message: String, code: u8 },
}

impl AppError {
    /// The exit code an operator (and systemd) sees.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_) | AppError::Toolsets(_) => exit::CONFIG,
            AppError::Store(StoreError::SchemaTooNew { .. }) => exit::DATA_TOO_NEW,
            AppError::Store(StoreError::DataDir { .. }) => exit::CANT_CREATE,
            AppError::Store(StoreError::Locked { .. }) => exit::TEMP_FAIL,
            AppError::Store(StoreError::Sqlite(_)) => exit::CANT_CREATE,
            AppError::Store(_) => exit::FAILURE,
            AppError::Bind { .. } => exit::UNAVAILABLE,
            AppError::Io(_) | AppError::Escalated(_) => exit::FAILURE,
            AppError::Unreachable(_) => exit::UNAVAILABLE,
            AppError::Backup(e) => e.exit_code(),
            AppError::Reported { code, .. } => *code,
        }
    }
}

/// The MCP settings the dispatcher reads, from configuration.
pub fn mcp_settings(c: &Config) -> Settings {
    Settings {
        page_size: c.mcp.page_size,
        client_request_timeout: Duration::from_secs(c.mcp.client_request_timeout_secs),
        instructions: c.mcp.instructions.clone(),
        audit_tool_calls: c.mcp.audit_tool_calls,
        list_ttl_ms: c.mcp.list_ttl_ms,
    }
}

/// Opens the store and builds the server core.
pub async fn build(config: &Config) -> Result<(Store, Arc<Server>), AppError> {
    let store = Store::open(
        &config.data_dir,
        &StoreOptions {
            synchronous: config.store.synchronous,
            readers: config.store.readers,
        },
    )?;
    let hub = Hub::new();
    let catalog = registry::build(config, &store, &hub).map_err(AppError::Toolsets)?;
    let server = Server::new(store.clone(), catalog, mcp_settings(config), hub).await?;
    Ok((store, server))
}

/// Periodic housekeeping: expire idle sessions, prune old SSE events.
pub async fn maintain(server: Arc<Server>, config: Config, stop: CancellationToken) {
    let idle = config.http.session_idle_timeout_secs as i64;
    let retention = config.http.event_retention_secs as i64;
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match server.sessions.maintain(idle).await {
            Ok(n) if n > 0 => tracing::info!(expired = n, "idle sessions ended"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "session maintenance failed"),
        }
        let cutoff = crate::store::now_secs() - retention;
        if let Err(e) = server
            .store
            .write(move |tx| crate::store::events::prune(tx, cutoff).map(|_| ()))
            .await
        {
            tracing::warn!(error = %e, "pruning the SSE event log failed");
        }
    }
}

/// Serves one client on stdin/stdout until stdin closes, as a small
/// supervision tree: the stdio loop (its end ends the tree), the store
/// writer's keeper and the file watchers.
pub async fn run_stdio(config: &Config) -> Result<(), AppError> {
    use crate::supervisor::{ChildSpec, Intensity, Restart, Strategy, Supervisor};
    use futures::FutureExt;
    let (store, server) = build(config).await?;
    let (files_tx, _) = tokio::sync::watch::channel(config.toolsets.files.clone());
    let max = config.http.max_body_bytes;
    let srv = server.clone();
    let st = store.clone();
    let hub = server.hub.clone();
    let tree = Supervisor::new(
        "stdio",
        Strategy::OneForOne,
        Intensity {
            max_restarts: config.supervisor.max_restarts,
            within: Duration::from_secs(config.supervisor.within_secs),
        },
    )
    .child(ChildSpec::new("store", Restart::Permanent, move |stop| {
        let st = st.clone();
        async move {
            st.restart_writer().map_err(|e| e.to_string())?;
            stop.cancelled().await;
            Ok(())
        }
        .boxed()
    }))
    .child(ChildSpec::new("file-watch", Restart::Permanent, move |stop| {
        crate::toolsets::files::watch_roots(files_tx.subscribe(), hub.clone(), stop).boxed()
    }))
    .child(
        // stdin cannot be read twice: the loop is not restarted.
        ChildSpec::new("stdio", Restart::Temporary, move |stop| {
            let srv = srv.clone();
            async move {
                tokio::select! {
                    r = stdio::serve(srv, tokio::io::stdin(), tokio::io::stdout(), max, Duration::from_secs(5)) => {
                        r.map_err(|e| format!("stdio: {e}"))
                    }
                    _ = stop.cancelled() => Ok(()),
                }
            }
            .boxed()
        })
        .ends_tree(),
    );
    let stop = CancellationToken::new();
    tokio::select! {
        r = tree.run(stop.clone()) => r.map_err(|e| AppError::Escalated(e.to_string()))?,
        _ = crate::daemon::terminated() => stop.cancel(),
    }
    store.checkpoint().await?;
    Ok(())
}

/// Loads and validates a config file, as `check-config` does.
pub fn check_config(path: &Path) -> Result<Config, AppError> {
    let config = Config::load(Some(path))?;
    Ok(config)
}
